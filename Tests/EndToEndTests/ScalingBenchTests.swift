import Foundation
import Testing

/// `sluicebench --mode inbound --workers N`: with `--sa-mode per-cpu` each
/// worker's queue carries ESP of its own SA (one per worker, owned by it, as
/// RFC 9611 peers send and RSS on the SPI delivers), so every worker opens
/// what it receives and nothing crosses cores; with one SA the owner opens
/// everything and the other workers hand their packets over. Several workers
/// also measure the raw engine on all their CPUs at once, the baseline the
/// scaling figures divide by.
@Suite(.serialized) struct ScalingBench {
    static let bench = E2E.packageRoot.path + "/.build/release/sluicebench"

    /// Per worker, from the report's stderr lines `core L queue=Q … rx=A tx=B drop=D…`.
    struct Core { let rx: Int, tx: Int, drop: Int }
    static func cores(_ text: String) -> [Core] {
        text.split(separator: "\n").compactMap { line -> Core? in
            guard line.trimmingCharacters(in: .whitespaces).hasPrefix("core ") else { return nil }
            var fields: [String: Int] = [:]
            for word in line.split(separator: " ") {
                let pair = word.split(separator: "=", maxSplits: 1)
                if pair.count == 2, let v = Int(pair[1]) { fields[String(pair[0])] = v }
            }
            guard let rx = fields["rx"], let tx = fields["tx"], let drop = fields["drop"] else { return nil }
            return Core(rx: rx, tx: tx, drop: drop)
        }
    }

    func run(saMode: String) async throws -> (report: [String: Any], line: String, cores: [Core])? {
        guard FileManager.default.fileExists(atPath: Self.bench) else {
            Issue.record("\(Self.bench) is missing: run scripts/test.sh (it builds the release sluicebench)")
            return nil
        }
        let child = try Child(Self.bench, ["--mode", "inbound", "--workers", "2", "--sa-mode", saMode, "--seconds", "0.5",
                                           "--warmup", "0.3", "--stats-period", "0", "--json"], environment: [:])
        guard let (r, line) = await child.jsonReport(timeout: .seconds(120)) else { return nil }
        return (r, line, Self.cores(child.stderr.text))
    }

    @Test func perCPUInboundSAsKeepEachWorkersPacketsOnItsCore() async throws {
        guard let (r, line, cores) = try await run(saMode: "per-cpu") else { return }
        #expect(cores.count == 2, "\(line)")
        for c in cores {
            #expect(c.rx > 10_000 && c.tx == c.rx && c.drop == 0, "each worker opens and sends what it received: \(c) \(line)")
        }
        #expect(r["drops"] as? Int == 0, "\(line)")
        let all = r["baseline_all_workers_mpps"] as? Double ?? 0
        let mpps = r["mpps"] as? Double ?? 0
        #expect(all > 0 && abs((r["ratio_all_workers"] as? Double ?? 0) - mpps / all) < 0.002, "\(line)")
        #expect((r["baseline_all_workers_runs_mpps"] as? [Double])?.count == 5, "\(line)")
    }

    @Test func oneInboundSAIsOpenedByItsOwnerAlone() async throws {
        guard let (_, line, cores) = try await run(saMode: "atomic") else { return }
        #expect(cores.count == 2, "\(line)")
        // The worker that does not own the SA sends nothing itself: it hands
        // every packet over (or drops it when the owner's ring is full).
        #expect(cores.contains { $0.rx > 0 && $0.tx == 0 }, "\(cores) \(line)")
        #expect(cores.contains { $0.tx > $0.rx }, "the owner sends what it was handed too: \(cores) \(line)")
    }
}
