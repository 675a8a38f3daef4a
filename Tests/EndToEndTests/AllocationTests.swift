import Foundation
import Testing

/// The data path allocates nothing and retains nothing per packet: the
/// release sluicebench runs the gateway engine under an LD_PRELOAD library
/// that counts malloc-family calls and Swift allocations/retains
/// (Perf/alloc-counter), and the counts over a measured window of millions of
/// forwarded packets, taken after warm-up, must be exactly zero: plaintext
/// forwarding, ESP outbound (SPD burst classification, SA replica, seal) and
/// ESP inbound (SA lookup, open). The outbound run caught a retain and a
/// release per burst around the SPD classifier call.
@Suite(.serialized) struct Allocation {
    @Test(arguments: ["bypass", "outbound", "inbound"])
    func zeroMallocsAndRetainsPerPacketAfterWarmUp(mode: String) async throws {
        let root = E2E.packageRoot.path
        let bench = root + "/.build/release/sluicebench"
        let preload = root + "/.build/alloc_counter.so"
        for path in [bench, preload] {
            guard FileManager.default.fileExists(atPath: path) else {
                Issue.record("\(path) is missing: run scripts/test.sh (it builds the release sluicebench and the preload)")
                return
            }
        }
        let child = try Child(bench, ["--mode", mode, "--size", "64", "--payload", "64", "--seconds", "2", "--warmup", "1",
                                      "--count-allocs", "--json"],
                              environment: ["LD_PRELOAD": preload])
        guard let (object, line) = await child.jsonReport(timeout: .seconds(60)) else { return }
        let packets = object["packets"] as? Int ?? 0
        #expect(packets > 100_000, "too few packets to mean anything: \(line)")
        // The counter works: it saw the allocation the benchmark makes on purpose.
        #expect((object["probe_mallocs"] as? Int ?? 0) >= 1, "\(line)")
        #expect((object["probe_swift_allocs"] as? Int ?? 0) >= 1, "\(line)")
        // The keys exist only when the preload was active.
        #expect(object["mallocs"] as? Int == 0, "\(line)")
        #expect(object["swift_allocs"] as? Int == 0, "\(line)")
        #expect(object["retains"] as? Int == 0, "\(line)")
        // A release without a retain cannot be per packet; allow the odd one from runtime threads.
        #expect((object["releases"] as? Int ?? Int.max) <= 2, "\(line)")
    }
}
