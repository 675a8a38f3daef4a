// The reference `--mode spd` divides by: DPDK's rte_acl, measured by
// dpdk-test-acl (app/test-acl) as a subprocess on the same rule and trace
// files and the same CPU, in the same invocation.
//
// How the figure is taken:
// * One run per classify method (scalar, sse, avx2, avx512x16; avx512x32
//   fails to set up on DPDK 22.11 here), each with `--iter` chosen so the
//   timed search lasts at least `minimumSeconds`; a run that was shorter is
//   repeated with more iterations. A method the build or the CPU lacks fails
//   to set up and is reported as skipped. The best rate is the baseline.
// * dpdk-test-acl times all iterations with the TSC and prints one line,
//   `search_ip5tuples @lcore N: I iterations, P pkts, C categories, T cycles
//   (S sec), X cycles/pkt, Y pkt/sec`: Y is its lookups per second (one
//   category, `--tracestep` traces per rte_acl_classify call, default 256).
// * `--log-level lib.acl:debug` makes rte_acl log its generated tables'
//   "runtime memory footprint … total: N bytes": the baseline's memory.
// * With `verdicts: true`, one more run (`--verbose 2 --iter 1`) prints the
//   result of every trace, `ipv4_5tuple: K, category: 0, result: R` with R
//   the 0-based index of the winning rule line (UINT32_MAX for none), which
//   the benchmark compares with its own verdicts.
// * dpdk-test-acl reads at most `--tracenum` traces (default 65536) and
//   takes at most `--rulenum` rules (default 65536): both are passed as the
//   exact counts read from the files.

import Foundation

struct ACLBaseline {
    static let algorithms = ["scalar", "sse", "avx2", "avx512x16"]

    struct Measurement {
        var algorithm: String
        var lookupsPerSecond: Double
        var cyclesPerLookup: Double
        var seconds: Double
        var iterations: Int
        var command: String
    }

    struct Result {
        /// Successful runs, in `algorithms` order.
        var runs: [Measurement]
        /// Methods that could not run, with dpdk-test-acl's reason.
        var skipped: [(algorithm: String, reason: String)]
        /// rte_acl's runtime tables, when its debug log said.
        var memoryBytes: Int?
        /// The winning rule index of each trace, from the verdict run.
        var verdicts: [UInt32]?
        var best: Measurement { runs.max { $0.lookupsPerSecond < $1.lookupsPerSecond }! }
    }

    enum Failure: Error, CustomStringConvertible {
        case notInstalled(searched: [String])
        case failed(command: String, status: Int32, tail: String)
        case timedOut(command: String, seconds: Double)
        case unparsable(command: String, reason: String, tail: String)
        case noAlgorithm(skipped: [(String, String)])

        var description: String {
            switch self {
            case .notInstalled(let searched):
                return "dpdk-test-acl not found (looked at $DPDK_TEST_ACL, $PATH and \(searched.joined(separator: ", "))); "
                    + "install it with `apt-get install dpdk` or set DPDK_TEST_ACL to its path"
            case .failed(let command, let status, let tail):
                return "dpdk-test-acl failed (exit status \(status)): \(command)\n--- output tail ---\n\(tail)"
            case .timedOut(let command, let seconds):
                return "dpdk-test-acl did not finish within \(Int(seconds)) s: \(command)"
            case .unparsable(let command, let reason, let tail):
                return "could not read dpdk-test-acl's output (\(reason)): \(command)\n--- output tail ---\n\(tail)"
            case .noAlgorithm(let skipped):
                return "no rte_acl classify method ran:\n" + skipped.map { "  \($0.0): \($0.1)" }.joined(separator: "\n")
            }
        }
    }

    var rulesPath: String
    var tracesPath: String
    var ipv6: Bool
    var ruleCount: Int
    var traceCount: Int
    /// The CPU dpdk-test-acl's only lcore runs on (`-l cpu`).
    var cpu: Int
    var memoryMB: Int = 2048
    var minimumSeconds: Double = 0.5

    static func locate() throws -> String {
        let fm = FileManager.default
        let env = ProcessInfo.processInfo.environment
        if let path = env["DPDK_TEST_ACL"], !path.isEmpty, fm.isExecutableFile(atPath: path) { return path }
        let fixed = ["/usr/bin/dpdk-test-acl", "/usr/local/bin/dpdk-test-acl"]
        let fromPath = (env["PATH"] ?? "").split(separator: ":").map { "\($0)/dpdk-test-acl" }
        for candidate in fromPath + fixed where fm.isExecutableFile(atPath: candidate) { return candidate }
        throw Failure.notInstalled(searched: fixed)
    }

    static var isInstalled: Bool { (try? locate()) != nil }

    func arguments(algorithm: String, iterations: Int, verbose: Int) -> [String] {
        var a = ["--no-huge", "--no-pci", "--no-shconf", "--no-telemetry", "-m", "\(memoryMB)", "-l", "\(cpu)",
                 "--log-level", "lib.acl:debug", "--",
                 "--rulesf", rulesPath, "--tracef", tracesPath,
                 "--rulenum", "\(max(ruleCount, 1))", "--tracenum", "\(max(traceCount, 1))",
                 "--alg", algorithm, "--iter", "\(iterations)", "--verbose", "\(verbose)"]
        if ipv6 { a.append("--ipv6") }
        return a
    }

    /// Every method, then the verdict run if asked; `say` gets one line per
    /// run. `expectedRate` (lookups per second, e.g. Sluice's own) sizes the
    /// first run's iterations.
    func run(verdicts wantVerdicts: Bool, expectedRate: Double, say: (String) -> Void) throws -> Result {
        let executable = try Self.locate()
        var runs: [Measurement] = []
        var skipped: [(String, String)] = []
        var memory: Int? = nil
        // Each method's iterations are sized from 1.5 × the best rate seen so
        // far (SIMD methods are faster than scalar); a run that still ends too
        // soon is repeated.
        var rateGuess = max(expectedRate, 1e5)
        for algorithm in Self.algorithms {
            var iterations = iterationsFor(rate: rateGuess * (runs.isEmpty ? 1 : 1.5))
            var attempt = 0
            while true {
                let (status, output, command) = try execute(executable, arguments(algorithm: algorithm,
                                                                                 iterations: iterations, verbose: 0))
                if status != 0 {
                    let reason = output.split(separator: "\n").last { $0.contains("failed") || $0.contains("EAL") }
                        .map(String.init) ?? "exit status \(status)"
                    // A method that cannot be set up is skipped; anything else is an error.
                    if output.contains("failed to setup") {
                        skipped.append((algorithm, reason))
                        say("  rte_acl \(algorithm): skipped (\(reason))")
                        break
                    }
                    throw Failure.failed(command: command, status: status, tail: Self.tail(output))
                }
                var m = try Self.parseSearch(output, command: command)
                m.algorithm = algorithm
                memory = memory ?? Self.parseMemory(output)
                if m.seconds >= minimumSeconds || attempt >= 3 {
                    runs.append(m)
                    rateGuess = max(rateGuess, m.lookupsPerSecond)
                    say(String(format: "  rte_acl %@: %.2f M lookups/s, %.1f cycles/lookup (%d iterations, %.2f s)",
                               algorithm, m.lookupsPerSecond / 1e6, m.cyclesPerLookup, m.iterations, m.seconds))
                    break
                }
                iterations = max(iterations + 1, Int((Double(iterations) * minimumSeconds * 1.3 / max(m.seconds, 1e-6)).rounded(.up)))
                attempt += 1
            }
        }
        guard !runs.isEmpty else { throw Failure.noAlgorithm(skipped: skipped) }
        var verdicts: [UInt32]? = nil
        if wantVerdicts {
            let best = runs.max { $0.lookupsPerSecond < $1.lookupsPerSecond }!.algorithm
            let (status, output, command) = try execute(executable, arguments(algorithm: best, iterations: 1, verbose: 2))
            guard status == 0 else { throw Failure.failed(command: command, status: status, tail: Self.tail(output)) }
            verdicts = try Self.parseVerdicts(output, count: traceCount, ipv6: ipv6, command: command)
        }
        return Result(runs: runs, skipped: skipped, memoryBytes: memory, verdicts: verdicts)
    }

    private func iterationsFor(rate: Double) -> Int {
        max(1, Int((minimumSeconds * 1.3 * rate / Double(max(traceCount, 1))).rounded(.up)))
    }

    /// Runs to completion; (status, stdout + stderr, command line).
    private func execute(_ executable: String, _ arguments: [String]) throws -> (Int32, String, String) {
        // Building rte_acl over 100k rules takes a while; the search itself is short.
        let limit = 600.0
        guard let done = try TestpmdBaseline.runToCompletion(executable, arguments, limit: limit) else {
            let command = ([executable] + arguments).map(TestpmdBaseline.shellQuoted).joined(separator: " ")
            throw Failure.timedOut(command: command, seconds: limit)
        }
        return (done.status, done.stdout + "\n" + done.stderr, done.command)
    }

    static func tail(_ text: String, lines: Int = 20) -> String {
        text.split(separator: "\n").suffix(lines).joined(separator: "\n")
    }

    // MARK: - Parsing

    /// The `search_ip5tuples @lcore …` line.
    static func parseSearch(_ text: String, command: String) throws -> Measurement {
        guard let line = text.split(separator: "\n").last(where: { $0.contains("search_ip5tuples") && $0.contains("pkt/sec") })
        else { throw Failure.unparsable(command: command, reason: "no search_ip5tuples result line", tail: tail(text)) }
        // "... I iterations, P pkts, C categories, T cycles (S sec), X cycles/pkt, Y pkt/sec"
        let words = line.split(whereSeparator: { $0 == " " || $0 == "," || $0 == "(" || $0 == ")" || $0 == ":" })
        func value(before unit: String) -> Double? {
            guard let i = words.firstIndex(where: { $0 == unit }), i > words.startIndex else { return nil }
            return Double(words[words.index(before: i)])
        }
        guard let iterations = value(before: "iterations"), let rate = value(before: "pkt/sec"),
              let cycles = value(before: "cycles/pkt"), let seconds = value(before: "sec") else {
            throw Failure.unparsable(command: command, reason: "unexpected result line '\(line)'", tail: tail(text))
        }
        return Measurement(algorithm: "", lookupsPerSecond: rate, cyclesPerLookup: cycles, seconds: seconds,
                           iterations: Int(iterations), command: command)
    }

    /// "total: N bytes" of rte_acl's "runtime memory footprint" debug log.
    static func parseMemory(_ text: String) -> Int? {
        guard let r = text.range(of: "runtime memory footprint") else { return nil }
        for line in text[r.upperBound...].split(separator: "\n").prefix(8) {
            let w = line.split(separator: " ")
            if w.count >= 3, w[0] == "total:", w[2] == "bytes", let n = Int(w[1]) { return n }
        }
        return nil
    }

    /// Per trace, the 0-based index of the winning rule line (UINT32_MAX: none).
    static func parseVerdicts(_ text: String, count: Int, ipv6: Bool, command: String) throws -> [UInt32] {
        var verdicts = [UInt32](repeating: 0, count: count)
        var seen = 0
        let key = ipv6 ? "ipv6_5tuple:" : "ipv4_5tuple:"
        for line in text.split(separator: "\n") where line.hasPrefix(key) {
            // "ipv4_5tuple: K, category: 0, result: R"
            let w = line.split(whereSeparator: { $0 == " " || $0 == "," })
            guard w.count >= 6, let k = Int(w[1]), w[2] == "category:", w[3] == "0", w[4] == "result:",
                  let r = UInt32(w[5]), (1...count).contains(k) else { continue }
            verdicts[k - 1] = r
            seen += 1
        }
        guard seen == count else {
            throw Failure.unparsable(command: command, reason: "\(seen) verdicts for \(count) traces", tail: tail(text))
        }
        return verdicts
    }
}
