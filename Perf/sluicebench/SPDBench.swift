// `sluicebench --mode spd`: Sluice's SPD classifiers ("drivers") against
// DPDK's rte_acl on the same dpdk-test-acl rule and trace files and the same
// CPU (see ACLFiles.swift for the formats and how rules map onto SPD rules,
// ACLBaseline.swift for how rte_acl is measured).
//
// Per driver, on one pinned CPU:
//   * build: `init(rules:)` over the whole file, timed; `memoryBytes`;
//   * check: one pass over every trace, each verdict compared with the linear
//     driver's (the oracle), and the linear verdicts with rte_acl's when the
//     baseline runs: every mismatch is counted and must be 0;
//   * rate: burst lookups (`lookup(burst:count:into:)`, `--burst` packets per
//     call) over the trace array, repeated until `--seconds` have passed, the
//     clock read once per chunk of bursts;
//   * incremental update (the proxy for "`sp add` to visible"): the time of
//     `inserting` one held-out rule into a classifier built without it, and of
//     `removing` one rule from the full classifier, beside a full rebuild; an
//     update the driver declines (nil: it would rebuild) is charged a full
//     build. The last incremental result of each kind is checked against the
//     linear oracle over the same rules.
// Every driver runs through one generic function specialised for its
// concrete type: no existential per lookup.

import ArgumentParser
import Dataplane
import Foundation
import IPsec
import Packet

struct SPDBench {
    let o: SluiceBench

    func say(_ s: String) { o.shared.say(s) }

    struct DriverResult {
        var driver: SPDDriver
        var buildSeconds: Double
        var memoryBytes: Int
        var mismatches: Int
        var lookups: Int
        var seconds: Double
        var lookupsPerSecond: Double { Double(lookups) / seconds }
        var insert: UpdateTimes
        var remove: UpdateTimes
        var incrementalMismatches: Int
    }

    /// Single-rule updates of one kind.
    struct UpdateTimes {
        var samples = 0
        /// Updates the driver did by patching a copy (the rest fell back to a rebuild).
        var incremental = 0
        /// Seconds of the incremental updates, and of all updates with each
        /// fallback charged its attempt plus a full build.
        var incrementalSeconds = 0.0
        var effectiveSeconds = 0.0
        var maxEffectiveSeconds = 0.0

        mutating func add(_ seconds: Double, incremental patched: Bool, rebuild: Double) {
            samples += 1
            let effective = patched ? seconds : seconds + rebuild
            if patched { incremental += 1; incrementalSeconds += seconds }
            effectiveSeconds += effective
            maxEffectiveSeconds = max(maxEffectiveSeconds, effective)
        }

        /// Mean microseconds to an updated classifier, fallbacks included.
        var meanMicroseconds: Double? { samples == 0 ? nil : effectiveSeconds / Double(samples) * 1e6 }
        /// Mean microseconds of the incremental updates alone.
        var incrementalMicroseconds: Double? { incremental == 0 ? nil : incrementalSeconds / Double(incremental) * 1e6 }

        func report(_ prefix: String) -> [String: Any] {
            func us(_ x: Double?) -> Any { x.map { ($0 * 10).rounded() / 10 } ?? NSNull() }
            return ["\(prefix)_us": us(meanMicroseconds), "\(prefix)_us_max": us(samples == 0 ? nil : maxEffectiveSeconds * 1e6),
                    "\(prefix)_incremental_us": us(incrementalMicroseconds), "\(prefix)_incremental": incremental,
                    "\(prefix)_samples": samples]
        }

        var summary: String {
            guard let mean = meanMicroseconds else { return "-" }
            return String(format: "%.1f us (%d/%d incremental)", mean, incremental, samples)
        }
    }

    /// The drivers `--drivers` names, in `SPDDriver` order.
    func selectedDrivers() throws -> [SPDDriver] {
        if o.drivers == "all" { return SPDDriver.allCases }
        var out: [SPDDriver] = []
        for name in o.drivers.split(separator: ",") {
            guard let d = SPDDriver(rawValue: String(name)) else {
                throw ValidationError("unknown driver '\(name)' in --drivers (\(SPDDriver.allCases.map(\.rawValue).joined(separator: ", ")) or all)")
            }
            out.append(d)
        }
        return SPDDriver.allCases.filter(out.contains)
    }

    func run() throws -> [String: Any] {
        guard let rulesPath = o.aclRules, let tracesPath = o.aclTraces else {
            throw ValidationError("--mode spd needs --acl-rules FILE and --acl-traces FILE (make them with --mode acl-gen)")
        }
        let drivers = try selectedDrivers()
        let t0 = monotonicSeconds()
        let rules = try ACLFiles.readRules(path: rulesPath, ipv6: o.ipv6)
        let traceArray = try ACLFiles.readTraces(path: tracesPath, ipv6: o.ipv6)
        guard !traceArray.isEmpty else { throw ValidationError("\(tracesPath) holds no traces") }
        let family = o.ipv6 ? "ipv6" : "ipv4"
        say("sluicebench spd: \(rules.count) \(family) rules, \(traceArray.count) traces (read in \(String(format: "%.2f", monotonicSeconds() - t0)) s)")

        // The CPU both we and dpdk-test-acl run on: the last one we may use.
        let cpus = o.shared.cpuList()
        let cpu = cpus.last!
        try pinCallingThread(to: cpu)

        let traces = UnsafeMutableBufferPointer<SelectorFields>.allocate(capacity: traceArray.count)
        _ = traces.initialize(from: traceArray)
        defer { traces.deallocate() }
        let input = UnsafeBufferPointer(traces)

        // The oracle's verdicts: the linear driver, one packet at a time.
        let tr = monotonicSeconds()
        let linear = LinearClassifier(rules: rules)
        let reference = input.map { linear.lookup($0) }
        let matched = reference.reduce(0) { $0 + ($1 == SPDNoMatch ? 0 : 1) }
        say(String(format: "  reference (linear): %d of %d traces match a rule (%.1f s)", matched, input.count, monotonicSeconds() - tr))

        var results: [DriverResult] = []
        for d in drivers {
            let r: DriverResult
            switch d {
            case .linear: r = measure(LinearClassifier.self, rules: rules, traces: input, reference: reference)
            case .hashList: r = measure(HashListClassifier.self, rules: rules, traces: input, reference: reference)
            case .cutTree: r = measure(CutTreeClassifier.self, rules: rules, traces: input, reference: reference)
            }
            let name = d.rawValue + String(repeating: " ", count: max(0, 10 - d.rawValue.count))
            say(String(format: "  %@ %8.2f M lookups/s  %7.1f ns/lookup  build %.3f s  memory %@  mismatches %d  insert %@  remove %@",
                       name, r.lookupsPerSecond / 1e6, 1e9 / r.lookupsPerSecond, r.buildSeconds,
                       Self.bytes(r.memoryBytes), r.mismatches + r.incrementalMismatches,
                       r.insert.summary, r.remove.summary))
            results.append(r)
        }
        let chosen = SPDDriver.choose(for: rules)
        let best = results.max { $0.lookupsPerSecond < $1.lookupsPerSecond }

        var baseline: ACLBaseline.Result? = nil
        var baselineMismatches: Int? = nil
        if o.baseline == "test-acl" {
            say("  baseline: dpdk-test-acl on cpu \(cpu), best of \(ACLBaseline.algorithms.joined(separator: ", "))")
            let runner = ACLBaseline(rulesPath: rulesPath, tracesPath: tracesPath, ipv6: o.ipv6, ruleCount: rules.count,
                                     traceCount: input.count, cpu: cpu, memoryMB: o.aclMemory,
                                     minimumSeconds: min(max(o.seconds / 2, 0.5), 2))
            let b = try runner.run(verdicts: true, expectedRate: best?.lookupsPerSecond ?? 1e7, say: say)
            baseline = b
            if let v = b.verdicts {
                baselineMismatches = zip(v, reference).reduce(0) { $0 + ($1.0 == $1.1 ? 0 : 1) }
            }
        }

        func driverReport(_ r: DriverResult) -> [String: Any] {
            var d: [String: Any] = [
                "driver": r.driver.rawValue, "lookups_per_s": r.lookupsPerSecond.rounded(),
                "ns_per_lookup": round3(1e9 / r.lookupsPerSecond), "lookups": r.lookups, "seconds": round3(r.seconds),
                "mismatches": r.mismatches, "build_seconds": (r.buildSeconds * 1e6).rounded() / 1e6,
                "memory_bytes": r.memoryBytes, "rebuild_us": (r.buildSeconds * 1e7).rounded() / 10,
                "incremental_mismatches": r.incrementalMismatches,
            ]
            d.merge(r.insert.report("insert")) { $1 }
            d.merge(r.remove.report("remove")) { $1 }
            if let b = baseline { d["ratio"] = round3(r.lookupsPerSecond / b.best.lookupsPerSecond) }
            return d
        }

        var report: [String: Any] = [
            "mode": "spd", "family": family, "rules": rules.count, "traces": input.count, "traces_matching": matched,
            "rules_file": rulesPath, "traces_file": tracesPath, "cpu": cpu, "burst": o.burst,
            "mismatches": results.reduce(0) { $0 + $1.mismatches + $1.incrementalMismatches },
            "drivers": results.map(driverReport),
            "auto_driver": chosen.driver.rawValue, "auto_reason": chosen.reason,
        ]
        if let best {
            for (k, v) in driverReport(best) where k != "mismatches" { report[k] = v }
        }
        if let b = baseline {
            let top = b.best
            report["baseline"] = "dpdk-test-acl (rte_acl)"
            report["baseline_alg"] = top.algorithm
            report["baseline_lookups_per_s"] = top.lookupsPerSecond.rounded()
            report["baseline_cycles_per_lookup"] = top.cyclesPerLookup
            report["baseline_command"] = top.command
            report["baseline_runs"] = Dictionary(uniqueKeysWithValues: b.runs.map { ($0.algorithm, $0.lookupsPerSecond.rounded()) })
            report["baseline_skipped"] = Dictionary(uniqueKeysWithValues: b.skipped.map { ($0.algorithm, $0.reason) })
            report["baseline_memory_bytes"] = b.memoryBytes ?? NSNull()
            report["baseline_mismatches"] = baselineMismatches ?? NSNull()
            if let best { report["ratio"] = round3(best.lookupsPerSecond / top.lookupsPerSecond) }
        }
        return report
    }

    // MARK: - One driver

    func measure<C: SPDClassifier>(_ type: C.Type, rules: [SPDRule], traces: UnsafeBufferPointer<SelectorFields>,
                                   reference: [UInt32]) -> DriverResult {
        let count = traces.count
        let out = UnsafeMutablePointer<UInt32>.allocate(capacity: count)
        defer { out.deallocate() }

        let tb = monotonicSeconds()
        let classifier = C(rules: rules)
        let buildSeconds = monotonicSeconds() - tb

        // First pass: every verdict against the oracle's.
        Self.pass(classifier, traces: traces, burst: o.burst, into: out)
        var mismatches = 0
        for i in 0..<count where out[i] != reference[i] { mismatches += 1 }

        let (lookups, seconds) = Self.timedLookups(classifier, traces: traces, burst: o.burst, into: out, seconds: o.seconds)

        // Incremental updates: held-out rules inserted into a classifier
        // built without them, and rules removed from the full one. A nil
        // answer means the driver would rebuild: counted as a fallback, and
        // charged the full build time in `insert_us`/`remove_us`.
        var insert = UpdateTimes(), remove = UpdateTimes()
        var incrementalMismatches = 0
        let samples = min(o.updateSamples, rules.count / 2)
        if samples > 0 {
            var rng = SplitMix64(seed: 0x5350_4442)
            var held = Set<Int>()
            while held.count < samples { held.insert(Int(rng.next() % UInt64(rules.count))) }
            let heldOut = held.sorted().map { rules[$0] }
            let baseRules = rules.indices.filter { !held.contains($0) }.map { rules[$0] }
            let base = C(rules: baseRules)
            var lastInserted: (C, SPDRule)? = nil
            for r in heldOut {
                let t = monotonicSeconds()
                let updated = base.inserting(r)
                insert.add(monotonicSeconds() - t, incremental: updated != nil, rebuild: buildSeconds)
                if let updated { lastInserted = (updated, r) }
            }
            var lastRemoved: (C, UInt64)? = nil
            for r in heldOut {
                let t = monotonicSeconds()
                let updated = classifier.removing(rank: r.rank)
                remove.add(monotonicSeconds() - t, incremental: updated != nil, rebuild: buildSeconds)
                if let updated { lastRemoved = (updated, r.rank) }
            }
            // The last incremental result of each kind against the oracle
            // over the same rules (on up to 20k traces: linear is slow).
            let checked = UnsafeBufferPointer(rebasing: traces[0..<min(traces.count, 20_000)])
            if let (c, r) = lastInserted {
                incrementalMismatches += Self.differences(c, LinearClassifier(rules: baseRules + [r]), traces: checked,
                                                          burst: o.burst, scratch: out)
            }
            if let (c, rank) = lastRemoved {
                incrementalMismatches += Self.differences(c, LinearClassifier(rules: rules.filter { $0.rank != rank }),
                                                          traces: checked, burst: o.burst, scratch: out)
            }
        }
        return DriverResult(driver: C.driver, buildSeconds: buildSeconds, memoryBytes: classifier.memoryBytes,
                            mismatches: mismatches, lookups: lookups, seconds: seconds,
                            insert: insert, remove: remove, incrementalMismatches: incrementalMismatches)
    }

    /// One pass over all traces in bursts.
    @inline(never)
    static func pass<C: SPDClassifier>(_ c: C, traces: UnsafeBufferPointer<SelectorFields>, burst: Int,
                                       into out: UnsafeMutablePointer<UInt32>) {
        let base = traces.baseAddress!
        var i = 0
        while i < traces.count {
            let n = min(burst, traces.count &- i)
            c.lookup(burst: base + i, count: n, into: out + i)
            i &+= n
        }
    }

    /// Burst lookups round the trace array until `seconds` have passed;
    /// (lookups, seconds). The clock is read once per chunk of bursts, the
    /// chunk growing until it lasts about a millisecond.
    @inline(never)
    static func timedLookups<C: SPDClassifier>(_ c: C, traces: UnsafeBufferPointer<SelectorFields>, burst: Int,
                                               into out: UnsafeMutablePointer<UInt32>, seconds: Double) -> (Int, Double) {
        let base = traces.baseAddress!
        let count = traces.count
        var position = 0
        var done = 0
        var chunk = burst
        let start = monotonicSeconds()
        var last = start
        while true {
            var k = 0
            while k < chunk {
                let n = min(burst, count &- position)
                c.lookup(burst: base + position, count: n, into: out + position)
                position &+= n
                k &+= n
                if position == count { position = 0 }
            }
            done &+= k
            let now = monotonicSeconds()
            if now - start >= seconds { return (done, now - start) }
            if now - last < 1e-3 && chunk < 1 << 20 { chunk &*= 2 }
            last = now
        }
    }

    /// Traces on which two classifiers disagree (`scratch` holds `traces.count`).
    static func differences<A: SPDClassifier, B: SPDClassifier>(_ a: A, _ b: B, traces: UnsafeBufferPointer<SelectorFields>, burst: Int,
                                              scratch: UnsafeMutablePointer<UInt32>) -> Int {
        pass(a, traces: traces, burst: burst, into: scratch)
        let first = Array(UnsafeBufferPointer(start: scratch, count: traces.count))
        pass(b, traces: traces, burst: burst, into: scratch)
        var n = 0
        for i in 0..<traces.count where first[i] != scratch[i] { n += 1 }
        return n
    }

    // MARK: - Helpers

    static func bytes(_ n: Int) -> String {
        n >= 1 << 20 ? String(format: "%.1f MiB", Double(n) / 1048576) : String(format: "%.1f KiB", Double(n) / 1024)
    }
}
