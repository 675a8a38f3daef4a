import ArgumentParser
import Crypto
import Foundation

/// `--mode overlap`: does the work a gateway does between AEAD calls hide
/// behind the cipher, or add to it? No gateway and no ports: intel-ipsec-mb's
/// direct AES-256-GCM API seals 32 in-place payloads and opens them again (the
/// round-trip mode's raw baseline), with a block of scalar work after each
/// call, beside the same loop with the calls only and with the blocks only
/// (`slc_bench_overlap`). Issue-bound blocks (independent ALU work, as a
/// packet path's parsing and bookkeeping are) and latency-bound ones (one
/// dependent chain) of several sizes. A fourth loop runs the blocks batched:
/// a burst's blocks all before its calls, as the worker frames a burst's
/// packets before sealing them all. Figures are TSC cycles per round trip,
/// each the best of five runs taking turns.
enum OverlapBench {
    /// Steps of the issue-bound block (two blocks per round trip): ~140 to
    /// ~2,200 instructions per round trip, around the gateway's own ~1,400.
    static let issueSteps = [2, 4, 8, 16, 32]
    /// Steps of the latency-bound block (a multiply-add each).
    static let latencySteps = [10, 20, 40, 80]
    /// Instructions per step as clang -O3 compiles overlap.c for x86-64
    /// (objdump of the release build): eight chains of mov, rol, add, xor,
    /// plus the loop's two; mov, imul, shr, add, plus the loop's two.
    static let issueInstructionsPerStep = 34
    static let latencyInstructionsPerStep = 6

    static func run(payload: Int, cpu: Int, say: (String) -> Void) throws -> [String: Any] {
        try pinCallingThread(to: cpu)
        var report: [String: Any] = ["mode": "overlap", "payload": payload, "aead": "aes-gcm-256", "engine": "ipsec-mb",
                                     "cpu": cpu, "unit": "TSC cycles per round trip (one seal, one open)"]
        for (name, latency, steps) in [("issue_bound", false, issueSteps), ("latency_bound", true, latencySteps)] {
            guard let rows = CryptoBench.overlap(payloadSize: payload, latencyBound: latency, steps: steps) else {
                throw ValidationError("intel-ipsec-mb is not usable on this machine")
            }
            say("\(name) blocks, \(payload)-byte payloads: steps, cipher alone, blocks alone, "
                + "between calls (hidden), batched (hidden)")
            report[name] = rows.map { r -> [String: Any] in
                say("  \(r.steps)\t\(Int(r.cipherCycles.rounded()))\t\(Int(r.workCycles.rounded()))\t"
                    + "\(Int(r.togetherCycles.rounded())) (\(String(format: "%.2f", r.hidden)))\t"
                    + "\(Int(r.batchedCycles.rounded())) (\(String(format: "%.2f", r.hiddenBatched)))")
                var row: [String: Any] = ["steps": r.steps, "cipher_cycles": round3(r.cipherCycles),
                                          "work_cycles": round3(r.workCycles), "together_cycles": round3(r.togetherCycles),
                                          "hidden": round3(r.hidden), "batched_cycles": round3(r.batchedCycles),
                                          "hidden_batched": round3(r.hiddenBatched)]
                row["instructions"] = 2 * r.steps * (latency ? latencyInstructionsPerStep : issueInstructionsPerStep)
                return row
            }
        }
        return report
    }
}
