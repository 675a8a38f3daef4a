import Foundation
import Testing

/// The ESP fuzz harness (Tests/Fuzz, `sluicefuzz`) in its ordinary build:
/// 72 seeds (every SA shape × check) and 60,000 seeded mutations of them go
/// through ESPOutbound / ESPInbound, each outcome checked against the
/// harness's own reading of RFC 4303 and RFC 6040 (round trips exact, the
/// verdict on every authentic payload predicted, nothing written outside the
/// buffer). scripts/fuzz.sh runs the same checks under libFuzzer with
/// AddressSanitizer.
@Suite struct ESPFuzzReplay {
    static func binary() throws -> String {
        let fm = FileManager.default
        var candidates = [E2E.packageRoot.appendingPathComponent(".build/debug/sluicefuzz").path]
        if let me = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            candidates.insert(URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("sluicefuzz").path, at: 0)
        }
        guard let found = candidates.first(where: { fm.isExecutableFile(atPath: $0) }) else {
            throw HarnessError("sluicefuzz not built (looked at \(candidates.joined(separator: ", ")))")
        }
        return found
    }

    @Test func seededMutationsBreakNoRule() async throws {
        let child = try Child(try Self.binary(), ["--runs", "60000", "--seed", "11", "--json"])
        guard let (tally, line) = await child.jsonReport(timeout: .seconds(300)) else { return }
        func count(_ key: String) -> Int { tally[key] as? Int ?? 0 }
        // Not vacuous: each check delivers, and reaches the drops that matter.
        #expect(count("roundTrip.delivered") > 5_000, "\(line)")
        #expect(count("authenticated.delivered") > 3_000, "\(line)")
        #expect(count("received.delivered") > 500, "\(line)")
        for outcome in ["roundTrip.refused.malformed", "roundTrip.refused.sequence_exhausted",
                        "authenticated.dropped.bad_length", "authenticated.dropped.bad_padding",
                        "authenticated.dropped.malformed", "authenticated.dropped.ecn_drop",
                        "authenticated.dropped.unsupported_next_header",
                        "received.dropped.authentication_failed", "received.dropped.replayed",
                        "received.dropped.too_old", "received.dropped.no_sa", "received.dropped.malformed"] {
            #expect(count(outcome) > 0, "never reached \(outcome): \(line)")
        }
    }

    /// Control: with the expected bytes of a round trip deliberately wrong,
    /// the harness must report the difference and fail.
    @Test func aWrongExpectationIsCaught() async throws {
        let child = try Child(try Self.binary(), ["--control", "--runs", "200"])
        let status = await child.waitForExit(timeout: .seconds(60))
        #expect(status == 1, "\(child.transcript())")
        #expect(child.stdout.lines.contains { $0.contains("round trip differs at byte") }, "\(child.transcript())")
    }

    /// A saved input is replayed from its file, and its verdict explained.
    @Test func replaysAnInputFile() async throws {
        let dir = try E2E.scratchDirectory("fuzz-replay")
        defer { E2E.removeScratch(dir) }
        // authenticated, tunnel 4in4: a 33-byte inner IPv4 packet, one pad byte
        // that should be 1 but is 9: RFC 4303 §2.4 makes the receiver drop it.
        let inner: [UInt8] = [0x45, 0, 0, 33, 0, 0, 0x40, 0, 64, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 7] + [UInt8](repeating: 0, count: 13)
        let file = dir.appendingPathComponent("bad-pad")
        try Data([2, 0] + inner + [9, 1, 4]).write(to: file)
        let child = try Child(try Self.binary(), ["--json", file.path])
        guard let (tally, line) = await child.jsonReport(timeout: .seconds(60)) else { return }
        #expect(tally["authenticated.dropped.bad_padding"] as? Int == 1, "\(line)")
    }
}
