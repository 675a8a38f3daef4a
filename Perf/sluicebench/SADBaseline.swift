// The reference for inbound SA lookup: DPDK's rte_ipsec_sad (lib/ipsec),
// measured by dpdk-test-sad (app/test-sad) as a subprocess in the same
// invocation, on one pinned CPU. Read from the 22.11 source (identical in
// 22.11.11; later releases change only the IPv6 address type) and checked by
// running the Debian 22.11.11 binary.
//
// The workload dpdk-test-sad generates (no rule or tuple files given):
// * Rules: `-n N` rules (default 65536). Rule i gets a random SPI from its
//   own slice [i·s, (i+1)·s) with s = UINT32_MAX / N, so SPIs are distinct
//   and ascending in rule order; DIP and SIP are uniformly random (4 or 16
//   random bytes each). Each rule draws its kind independently: SPI-only with
//   probability 90 %, SPI+DIP 9 %, SPI+DIP+SIP 1 % (`-d a/b/c` changes the
//   split); the actual counts are printed and parsed into `ruleMix`.
//   Every rule is a distinct key; no two rules share an SPI. The SAD is
//   created with max_sa[kind] = count[kind] × 5/4.
// * Lookups: `-l L` tuples (default 1048576). Tuple i is the full key
//   (SPI, DIP, SIP) of rule i mod N: a round-robin walk over the rules in
//   rule order (not random draws), so every rule is looked up L/N times and
//   every lookup hits the rule it came from (an SPI+DIP rule matches on SPI
//   and DIP; its SIP is carried but ignored). With `-r P` (1…99) about P % of
//   the tuples are random keys instead, which miss; this runner does not pass
//   `-r` unless asked in `extraArgs`.
// * Timing: the tuples are fed in order, `-b B` keys per rte_ipsec_sad_lookup
//   call (default and maximum 64); each call is bracketed by
//   rte_rdtsc_precise() and only the calls are summed, then one line
//   `Average lookup cycles X, lookups/sec: Y` with X = cycles / L and
//   Y = L × rte_get_tsc_hz() / cycles. The fences of rte_rdtsc_precise cost
//   well under one cycle per lookup at B = 64. Before the lookups it adds the
//   rules in ten timed chunks (`ADD n rules, c cycles/rule, r ADD/sec`), and
//   deletes them afterwards (`DEL …`). L must be a multiple of B (the tool
//   reads past its tuple table otherwise), so the runner enforces it.
// * One lcore looks up (the main one; `-p` would run every lcore at once and
//   is refused here since the figure is per core).
//
// The runner passes L = 8M tuples by default: with 1M (the tool's default)
// the timed part lasts ~20 ms and varies by ±20 % from run to run; with 8M
// it lasts ~0.2 s and varies by a few %. It runs `repeats` times and keeps
// the fastest run, as ACLBaseline does. Memory: under --no-huge, EAL's -m
// must hold the tuple and rule tables (40 bytes per entry, IPv4 or IPv6)
// plus the SAD's hash tables; 1M tuples over 100k IPv6 rules need more than
// 48 MB and run in 64 MB, 8M tuples run in 384 MB. `memoryMB(...)` sizes it.

import Foundation
import Synchronization

struct SADBaselineResult {
    struct Sample {
        var lookupsPerSecond: Double
        var cyclesPerLookup: Double
        var wallSeconds: Double
    }

    /// Rules in the SAD ("Rules total" as printed).
    var rules: Int
    var ipv6: Bool
    /// The rule kinds drawn, as printed: SPI only, SPI+DIP, SPI+DIP+SIP.
    var ruleMix: (spiOnly: Int, spiDIP: Int, spiDIPSIP: Int)
    /// Keys looked up per run, keys per rte_ipsec_sad_lookup call, and how
    /// many of the keys were random (missing) ones.
    var lookups: Int
    var burst: Int
    var randomLookups: Int
    /// The fastest run: dpdk-test-sad's own `lookups/sec`, i.e. lookups ×
    /// TSC Hz / TSC cycles spent inside rte_ipsec_sad_lookup.
    var lookupsPerSecond: Double
    /// TSC cycles per lookup of the fastest run (always printed; optional
    /// only so that callers need not assume it).
    var cyclesPerLookup: Double?
    /// Mean TSC cycles per rte_ipsec_sad_add over all rules, fastest run.
    var addCyclesPerRule: Double?
    /// Every run, in order.
    var samples: [Sample]
    /// EAL memory given to each run (`-m`), in MB.
    var memoryMB: Int
    /// The command line of the fastest run, and its stdout then stderr.
    var command: String
    var rawOutput: String
}

enum SADBaselineError: Error, CustomStringConvertible {
    case notInstalled(searched: [String])
    case badArgument(String)
    case failed(command: String, status: Int32, tail: String)
    case timedOut(command: String, seconds: Double)
    case unparsable(command: String, reason: String, tail: String)

    var description: String {
        switch self {
        case .notInstalled(let searched):
            return "dpdk-test-sad not found (looked at $DPDK_TEST_SAD, $PATH and \(searched.joined(separator: ", "))); "
                + "install it with `apt-get install dpdk` or set DPDK_TEST_SAD to its path"
        case .badArgument(let what):
            return "dpdk-test-sad baseline: \(what)"
        case .failed(let command, let status, let tail):
            return "dpdk-test-sad failed (exit status \(status)): \(command)\n--- output tail ---\n\(tail)"
        case .timedOut(let command, let seconds):
            return "dpdk-test-sad did not finish within \(Int(seconds)) s: \(command)"
        case .unparsable(let command, let reason, let tail):
            return "could not read dpdk-test-sad's output (\(reason)): \(command)\n--- output tail ---\n\(tail)"
        }
    }
}

/// Measures rte_ipsec_sad lookups with dpdk-test-sad over `rules` generated
/// SAs (see the workload above), its only lcore on CPU `lcore`. `extraArgs`
/// go to the application after `--` (e.g. `["-d", "80/15/5"]`, `["-r",
/// "10"]`); `-p` is refused. Each run gets its own `--file-prefix`, so it
/// never meets sluicebench's EAL. Throws `SADBaselineError`.
func runTestSAD(rules: Int, ipv6: Bool, lcore: Int, lookups: Int = 1 << 23, burst: Int = 64, repeats: Int = 3,
                memoryMB: Int? = nil, extraArgs: [String] = [],
                say: (String) -> Void = { _ in }) throws -> SADBaselineResult {
    guard rules >= 1 else { throw SADBaselineError.badArgument("need at least one rule, got \(rules)") }
    guard (1...64).contains(burst) else { throw SADBaselineError.badArgument("burst must be 1…64, got \(burst)") }
    guard lookups >= burst, lookups % burst == 0, lookups <= Int(UInt32.max) else {
        throw SADBaselineError.badArgument("lookups must be a positive multiple of the burst (\(burst)), got \(lookups)")
    }
    guard lcore >= 0 else { throw SADBaselineError.badArgument("lcore must be a CPU number, got \(lcore)") }
    guard repeats >= 1 else { throw SADBaselineError.badArgument("repeats must be at least 1, got \(repeats)") }
    guard !extraArgs.contains("-p") else {
        throw SADBaselineError.badArgument("-p (lookups on every lcore at once) gives no per-core figure")
    }
    let executable = try locateTestSAD()
    let memory = memoryMB ?? sadBaselineMemoryMB(rules: rules, lookups: lookups)

    var best: (sample: SADBaselineResult.Sample, parsed: TestSADOutput, command: String, output: String)? = nil
    var samples: [SADBaselineResult.Sample] = []
    for run in 0..<repeats {
        let prefix = "sluicebench-sad-\(getpid())-\(sadPrefixCounter.wrappingAdd(1, ordering: .relaxed).oldValue)"
        var arguments = ["--no-huge", "--no-pci", "--no-shconf", "--no-telemetry", "--file-prefix", prefix, "-m", "\(memory)",
                         "-l", "\(lcore)", "--", "-n", "\(rules)", "-l", "\(lookups)", "-b", "\(burst)"]
        if ipv6 { arguments.append("-6") }
        arguments += extraArgs

        let started = ContinuousClock.now
        defer { removeEALRuntimeDirectory(prefix: prefix) }
        let (status, stdout, stderr, command) = try runToCompletion(executable, arguments, limit: 300)
        let wall = started.duration(to: .now)
        let wallSeconds = Double(wall.components.seconds) + Double(wall.components.attoseconds) / 1e18
        let output = stdout + (stderr.isEmpty ? "" : "\n" + stderr)
        guard status == 0 else {
            throw SADBaselineError.failed(command: command, status: status,
                                          tail: ACLBaseline.tail(stderr) + "\n--- stdout tail ---\n" + ACLBaseline.tail(stdout))
        }
        let parsed = try TestSADOutput(stdout, command: command)
        let sample = SADBaselineResult.Sample(lookupsPerSecond: parsed.lookupsPerSecond,
                                              cyclesPerLookup: parsed.cyclesPerLookup, wallSeconds: wallSeconds)
        samples.append(sample)
        say(String(format: "  rte_ipsec_sad run %d/%d: %.2f M lookups/s, %.1f cycles/lookup (%.2f s)",
                   run + 1, repeats, sample.lookupsPerSecond / 1e6, sample.cyclesPerLookup, wallSeconds))
        if best == nil || sample.lookupsPerSecond > best!.sample.lookupsPerSecond {
            best = (sample, parsed, command, output)
        }
    }
    let b = best!
    return SADBaselineResult(rules: b.parsed.rules, ipv6: ipv6, ruleMix: b.parsed.ruleMix, lookups: b.parsed.lookups,
                             burst: b.parsed.burst, randomLookups: b.parsed.randomLookups,
                             lookupsPerSecond: b.sample.lookupsPerSecond, cyclesPerLookup: b.sample.cyclesPerLookup,
                             addCyclesPerRule: b.parsed.addCyclesPerRule, samples: samples, memoryMB: memory,
                             command: b.command, rawOutput: b.output)
}

/// EAL memory (MB) for one run: the tool's two tables of 40-byte entries,
/// ~200 bytes per rule for the SAD's three hash tables (with the tool's 5/4
/// headroom), and 48 MB for EAL itself; rounded up to 16 MB.
func sadBaselineMemoryMB(rules: Int, lookups: Int) -> Int {
    let bytes = (rules + lookups) * 40 + rules * 200
    let mb = 48 + (bytes + (1 << 20) - 1) >> 20
    return (mb + 15) / 16 * 16
}

var isTestSADInstalled: Bool { (try? locateTestSAD()) != nil }

func locateTestSAD() throws -> String {
    let env = ProcessInfo.processInfo.environment
    let fixed = ["/usr/bin/dpdk-test-sad", "/usr/local/bin/dpdk-test-sad"]
    if let path = env["DPDK_TEST_SAD"], !path.isEmpty {
        guard FileManager.default.isExecutableFile(atPath: path) else {
            throw SADBaselineError.badArgument("DPDK_TEST_SAD=\(path) is not an executable file")
        }
        return path
    }
    let searchPath = (env["PATH"] ?? "").split(separator: ":").map { "\($0)/dpdk-test-sad" } + fixed
    guard let found = searchPath.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) else {
        throw SADBaselineError.notInstalled(searched: fixed)
    }
    return found
}

private let sadPrefixCounter = Atomic<Int>(0)

/// With --no-shconf EAL still creates its runtime directory (empty), and
/// dpdk-test-sad never calls rte_eal_cleanup: remove ours. EAL puts it under
/// /var/run/dpdk for root, else $XDG_RUNTIME_DIR/dpdk or /tmp/dpdk.
private func removeEALRuntimeDirectory(prefix: String) {
    let env = ProcessInfo.processInfo.environment
    let bases = ["/var/run/dpdk", (env["XDG_RUNTIME_DIR"] ?? "/tmp") + "/dpdk", "/tmp/dpdk"]
    for base in bases { try? FileManager.default.removeItem(atPath: base + "/" + prefix) }
}

/// Runs dpdk-test-sad to its end within `limit` seconds (the shared runner).
private func runToCompletion(_ executable: String, _ arguments: [String],
                             limit: Double) throws -> (Int32, String, String, String) {
    guard let done = try TestpmdBaseline.runToCompletion(executable, arguments, limit: limit) else {
        let command = ([executable] + arguments).map(TestpmdBaseline.shellQuoted).joined(separator: " ")
        throw SADBaselineError.timedOut(command: command, seconds: limit)
    }
    return (done.status, done.stdout, done.stderr, done.command)
}

/// What one dpdk-test-sad run printed on stdout.
struct TestSADOutput {
    var rules: Int
    var ruleMix: (spiOnly: Int, spiDIP: Int, spiDIPSIP: Int)
    var lookups: Int
    var burst: Int
    var randomLookups: Int
    var cyclesPerLookup: Double
    var lookupsPerSecond: Double
    var addCyclesPerRule: Double?

    init(_ text: String, command: String) throws {
        let lines = text.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
        func failure(_ reason: String) -> SADBaselineError {
            .unparsable(command: command, reason: reason, tail: ACLBaseline.tail(text))
        }
        // "Label: N" / "Lookup burst size N": the integer after the label.
        func count(_ label: String) throws -> Int {
            guard let line = lines.last(where: { $0.hasPrefix(label) }),
                  let n = Int(line.dropFirst(label.count).trimmingCharacters(in: .whitespaces)) else {
                throw failure("no '\(label)' line")
            }
            return n
        }
        rules = try count("Rules total:")
        ruleMix = try (count("SPI only rules:"), count("SPI_DIP  rules:"), count("SPI_DIP_SIP rules:"))
        lookups = try count("Lookup tuples:")
        burst = try count("Lookup burst size")
        randomLookups = try count("Random lookup tuples:")

        // "Average lookup cycles X, lookups/sec: Y"
        guard let result = lines.last(where: { $0.hasPrefix("Average lookup cycles") }) else {
            throw failure("no 'Average lookup cycles' result line")
        }
        let words = result.split(whereSeparator: { $0 == " " || $0 == "," })
        guard words.count == 6, words[4] == "lookups/sec:", let cycles = Double(words[3]), let rate = Double(words[5]),
              cycles > 0, rate > 0, rate.isFinite else {
            throw failure("unexpected result line '\(result)'")
        }
        cyclesPerLookup = cycles
        lookupsPerSecond = rate

        // "ADD n rules, c cycles/rule, r ADD/sec", one per tenth of the rules.
        var added = 0, cyclesSum = 0.0
        for line in lines where line.hasPrefix("ADD ") {
            let w = line.split(whereSeparator: { $0 == " " || $0 == "," })
            // ["ADD", n, "rules", c, "cycles/rule", r, "ADD/sec"]
            guard w.count >= 5, w[4] == "cycles/rule", let n = Int(w[1]), let c = Double(w[3]) else { continue }
            added += n
            cyclesSum += Double(n) * c
        }
        addCyclesPerRule = added > 0 ? cyclesSum / Double(added) : nil
    }
}
