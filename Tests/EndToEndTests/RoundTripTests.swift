import Foundation
import Testing

/// `sluicebench --mode round-trip`: one worker seals what its protected
/// loopback port receives, opens it again when its unprotected loopback port
/// receives it, and routes it back to the protected side. Each round trip must
/// really be one seal and one authenticated open by the gateway's SAs, with
/// nothing dropped, and be compared with the raw engine doing the same.
@Suite(.serialized) struct RoundTrip {
    static let bench = E2E.packageRoot.path + "/.build/release/sluicebench"

    @Test func everyRoundTripIsOneSealAndOneOpen() async throws {
        guard FileManager.default.fileExists(atPath: Self.bench) else {
            Issue.record("\(Self.bench) is missing: run scripts/test.sh (it builds the release sluicebench)")
            return
        }
        let inflight = 128
        let child = try Child(Self.bench, ["--mode", "round-trip", "--payload", "512", "--seconds", "1", "--warmup", "0.5",
                                           "--inflight", "\(inflight)", "--stats-period", "0", "--json"], environment: [:])
        guard let (r, line) = await child.jsonReport(timeout: .seconds(90)) else { return }
        #expect(r["ports"] as? String == "loopback-ring", "\(line)")
        #expect(r["drops"] as? Int == 0, "\(line)")
        let packets = r["packets"] as? Int ?? 0
        #expect(packets > 10_000, "\(line)")
        // The SAs' own counters (warm-up included): sealed ≥ opened, and what
        // was sealed but not yet opened when the worker stopped is in flight.
        let sealed = r["sa_out_packets"] as? Int ?? 0
        let opened = r["sa_in_packets"] as? Int ?? 0
        #expect(opened >= packets, "\(line)")
        #expect(sealed >= opened && sealed - opened <= inflight, "\(line)")
        #expect((r["baseline"] as? String ?? "").hasSuffix("seal+open"), "\(line)")
        #expect(r["aead_payload_bytes"] as? Int == 20 + 8 + 512 + 4, "inner IPv4/UDP + payload + trailer: \(line)")
        let ratio = r["ratio"] as? Double ?? 0
        let raw = r["baseline_mpps"] as? Double ?? 0
        let mpps = r["mpps"] as? Double ?? 0
        #expect(raw > 0 && abs(ratio - mpps / raw) < 0.002, "\(line)")
        #expect((r["baseline_separate_mpps"] as? Double ?? 0) > 0, "\(line)")
    }

    @Test func refusesMoreThanOneWorker() async throws {
        guard FileManager.default.fileExists(atPath: Self.bench) else {
            Issue.record("\(Self.bench) is missing: run scripts/test.sh (it builds the release sluicebench)")
            return
        }
        let child = try Child(Self.bench, ["--mode", "round-trip", "--workers", "2", "--json"], environment: [:])
        let status = await child.waitForExit(timeout: .seconds(30))
        #expect(status != 0)
        #expect(child.stderr.text.contains("--mode round-trip runs one worker"), "\(child.transcript())")
    }
}
