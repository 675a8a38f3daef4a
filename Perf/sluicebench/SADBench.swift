// `sluicebench --mode sad` and `--mode sad-install`: Sluice's SAD (issue 5).
//
// --mode sad: inbound SA lookups per core in one worker's SAD replica
// (`SADReplica`), beside DPDK's rte_ipsec_sad measured by dpdk-test-sad in
// the same invocation on the same CPU (SADBaseline.swift). Sluice's side
// builds dpdk-test-sad's workload (see the comment at the top of
// SADBaseline.swift), drawn with its own generator (so not the same random
// values, the same distribution):
//   * N SAs; SA i's SPI is random in [i·s, (i+1)·s), s = UINT32_MAX / N
//     (never below 256: 0…255 are reserved); each SA independently SPI-only
//     (90 %), SPI + destination (9 %) or SPI + destination + source (1 %);
//     random IPv4 or IPv6 addresses;
//   * key i is the full (SPI, destination, source) of SA i mod N, in order:
//     every lookup hits; 64 keys per `lookup` call, each call bracketed by the
//     TSC and only the calls summed; at least 8M lookups per run, best of 3.
//     The keys are kept once per SA (N + 64 headers, walked round) rather
//     than once per lookup as dpdk-test-sad does: the same key sequence.
//   * every lookup's result is checked outside the timed calls (the record
//     found must carry the key's SPI; SPIs are distinct): `mismatches`, 0.
//   * per run the replica is filled (`apply(.add)`, timed as a whole, as
//     dpdk-test-sad times its adds in chunks), looked up, and emptied
//     (`apply(.remove)`, timed): cycles per add and per remove.
// The replica is sized as dpdk-test-sad sizes rte_ipsec_sad (capacity
// N × 5/4); its inbound table is a power of two of 16-byte slots (SPI,
// specificity, sole-SA bit, record pointer), at least twice the capacity
// (`memory_bytes`; the replica's outbound record set adds 8 bytes per slot:
// `replica_bytes`). Sluice reads the record behind a slot only when the SPI
// has several SAs or its SA names addresses (10% here); rte_ipsec_sad returns
// a stored pointer without reading what it points to.
//
// --mode sad-install: SA changes committed to every worker's replica on a
// running gateway (ring ports, workers polling):
//   (a) `Gateway.commitSAD` of N prebuilt inbound records in batches of
//       --batch (and of one, over at most 10k SAs), then the same deletes;
//       each commit returns once every worker applied it between bursts;
//   (b) the command language: N `sa add … reqid 1` lines and one
//       `sp add dir in … action protect reqid 1`, parsed, applied to a copy
//       of the running configuration and installed with
//       `ControlSession.install` (what `commit` of a `begin … commit` batch
//       does: compile, commit to the replicas, publish); then single
//       `sa add` / `sa del` on top of the N, each installed alone.

import ArgumentParser
import CShims
import Command
import Control
import Crypto
import Dataplane
import Foundation
import IPsec
import Packet

/// dpdk-test-sad's workload (see above), for Sluice's side.
struct SADWorkload {
    enum Kind { case spi, spiDestination, spiDestinationSource }

    var spi: [UInt32] = []
    var destination: [RawIPAddress] = []
    var source: [RawIPAddress] = []
    var kind: [Kind] = []

    init(count: Int, ipv6: Bool, seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        let slice = UInt64(UInt32.max) / UInt64(count)
        func address() -> RawIPAddress {
            ipv6 ? RawIPAddress(ipv6High: rng.next(), low: rng.next()) : RawIPAddress(ipv4: UInt32(truncatingIfNeeded: rng.next()))
        }
        for i in 0..<count {
            let low = max(UInt64(i) * slice, 256)
            let high = UInt64(i + 1) * slice  // exclusive
            spi.append(UInt32(low + rng.next() % max(high - low, 1)))
            destination.append(address())
            source.append(address())
            let draw = rng.next() % 100
            kind.append(draw < 90 ? .spi : draw < 99 ? .spiDestination : .spiDestinationSource)
        }
    }

    var count: Int { spi.count }
    var mix: (spiOnly: Int, spiDIP: Int, spiDIPSIP: Int) {
        (kind.filter { $0 == .spi }.count, kind.filter { $0 == .spiDestination }.count,
         kind.filter { $0 == .spiDestinationSource }.count)
    }

    /// SA i: the addresses its kind names.
    func sa(_ i: Int, key: AEADKeyHandle) throws -> InboundSA {
        let named = kind[i]
        return try InboundSA(spi: SPI(spi[i]), mode: .tunnel, key: key, esn: false,
                             source: named == .spiDestinationSource ? source[i].ipAddress : nil,
                             destination: named == .spi ? nil : destination[i].ipAddress)
    }

    /// Key i: SA i's full (SPI, destination, source).
    func header(_ i: Int) -> ESPInboundHeader {
        ESPInboundHeader(spi: SPI(spi[i]), sequenceLow: 1, espOffset: 20, ipLength: 100, protocolFieldOffset: 9,
                         udpEncapsulated: false, udpSourcePort: 0, udpDestinationPort: 0,
                         source: source[i], destination: destination[i])
    }

    /// One key and (disabled) replay window for every record: lookups never
    /// touch them, and one state keeps N = 100k SAs cheap to set up.
    static func sharedState() throws -> InboundSAState {
        let key = try AEADKey(.aes128GCM, keyMaterial: [UInt8](repeating: 0x5a, count: AEADAlgorithm.aes128GCM.keyMaterialLength),
                              engine: .auto)
        return InboundSAState(key: key, window: try ReplayWindow.allocate(configuration: .disabled))
    }

    /// Every SA as a record for the replicas, `owner` spread over `workers`.
    func records(state: InboundSAState, workers: Int = 1) throws -> [SARecordBox] {
        let handle = state.key.unsafeHandle
        return try (0..<count).map { i in
            SARecordBox(inbound: try sa(i, key: handle), state: state, limits: SALimits(), owner: i % workers)
        }
    }
}

/// The command line of the two modes. Bench.swift's `SluiceBench` holds the
/// other modes' options; main.swift hands `--mode sad|sad-install` here.
struct SADBenchCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluicebench",
        abstract: "Sluice's SAD: inbound SA lookups beside rte_ipsec_sad (--mode sad), SA install rates (--mode sad-install).",
        discussion: """
        --mode sad: dpdk-test-sad's workload (--sas SAs with distinct SPIs, 90/9/1 % SPI / SPI+dst / SPI+dst+src, \
        random addresses; every lookup hits) in one SAD replica on one CPU, 64 keys per call, best of 3, beside \
        dpdk-test-sad on the same CPU with --baseline test-sad. --mode sad-install: on a running gateway with \
        --workers workers, SAs committed to every replica per second (--batch per commit, and one per commit), and \
        the same through the configuration language and ControlSession.install.
        """)
    static let modes = ["sad", "sad-install"]

    /// Whether `arguments` (without the program name) ask for one of these modes.
    static func handles(_ arguments: [String]) -> Bool {
        for (i, a) in arguments.enumerated() {
            if a == "--mode", i + 1 < arguments.count { return modes.contains(arguments[i + 1]) }
            if a.hasPrefix("--mode=") { return modes.contains(String(a.dropFirst("--mode=".count))) }
        }
        return false
    }

    @Option(help: "sad: inbound SA lookups beside rte_ipsec_sad (on the last of --cpus); sad-install: SA install rates on a running gateway.")
    var mode: String
    @Option(help: "Number of SAs.")
    var sas: Int = 65_536
    @Flag(help: "sad: IPv6 SA addresses and keys (dpdk-test-sad -6).")
    var ipv6 = false
    @Option(help: "sad: baseline to compare with: test-sad (dpdk-test-sad, rte_ipsec_sad) or none.")
    var baseline: String = "none"
    @Option(help: "sad: keys looked up per run (a multiple of 64).")
    var lookups: Int = 1 << 23
    @Option(help: "sad-install: gateway worker lcores.")
    var workers: Int = 1
    @Option(help: "sad-install: SAs per commit.")
    var batch: Int = 1000
    @Option(help: "Workload generator seed.")
    var seed: UInt64 = 1
    @OptionGroup var shared: SharedOptions

    func validate() throws {
        guard Self.modes.contains(mode) else { throw ValidationError("--mode must be sad or sad-install here") }
        guard !shared.hugepages else { throw ValidationError("--hugepages applies to --mode bypass, outbound and inbound") }
        guard sas >= 1 else { throw ValidationError("need --sas ≥ 1") }
        if mode == "sad" {
            guard ["test-sad", "none"].contains(baseline) else { throw ValidationError("--mode sad takes --baseline test-sad or none") }
            guard lookups >= SADBench.burst, lookups % SADBench.burst == 0, lookups <= Int(UInt32.max) else {
                throw ValidationError("--lookups must be a positive multiple of \(SADBench.burst)")
            }
        } else {
            guard workers >= 1, batch >= 1 else { throw ValidationError("need --workers ≥ 1 and --batch ≥ 1") }
            guard sas <= SADBench.workerReplicaCapacity else {
                throw ValidationError("--sas \(sas) exceeds a worker replica's capacity (\(SADBench.workerReplicaCapacity) inbound SAs)")
            }
        }
    }

    func run() throws {
        try shared.pinCryptoPath()
        let bench = SADBench(o: self)
        let report = mode == "sad" ? try bench.runLookup() : try bench.runInstall()
        try shared.printReport(report)
    }
}

struct SADBench {
    let o: SADBenchCommand
    static let burst = 64
    /// `WorkerIPsec`'s default inbound capacity, which the gateway uses.
    static let workerReplicaCapacity = 1 << 17

    static let repeats = 3

    func say(_ s: String) { o.shared.say(s) }

    /// One run on a fresh replica: fill, look up, empty.
    struct Run {
        var addCycles: Double
        var removeCycles: Double
        var lookupCycles: UInt64
        var lookups: Int
        var mismatches: Int
        var cyclesPerLookup: Double { Double(lookupCycles) / Double(lookups) }
    }

    // MARK: - --mode sad

    func runLookup() throws -> [String: Any] {
        let n = o.sas
        let family = o.ipv6 ? "ipv6" : "ipv4"
        // The CPU both we and dpdk-test-sad run on: the last one we may use.
        guard let cpu = o.shared.cpuList().last else { throw ValidationError("no CPU to run on") }
        _ = try EAL.initialize(arguments: ["sluicebench", "--no-huge", "-m", "64", "--no-pci", "--no-shconf", "--no-telemetry",
                                           "--log-level", "lib.eal:warning", "--lcores", "0@\(cpu)"])
        // The EAL pins the main lcore (this thread) to that CPU: check.
        var affinity = [Int32](repeating: 0, count: 1024)
        let pinnedCount = Int(sl_affinity_cpus(&affinity, Int32(affinity.count)))
        let pinned = affinity.prefix(pinnedCount)
        guard Array(pinned) == [Int32(cpu)] else { throw DataplaneError("the main lcore runs on cpus \(Array(pinned)), not only \(cpu)") }
        let hz = Double(sl_tsc_hz())
        guard hz > 0 else { throw DataplaneError("the EAL reports no TSC rate") }

        let workload = SADWorkload(count: n, ipv6: o.ipv6, seed: o.seed)
        let state = try SADWorkload.sharedState()
        let boxes = try workload.records(state: state)
        let mix = workload.mix
        let capacity = n + n / 4
        // SADReplica's table: a power of two of slots (at least 16), at least twice the capacity.
        var slots = 16
        while slots < 2 * capacity { slots *= 2 }
        say("sluicebench sad: \(n) \(family) SAs (\(mix.spiOnly) SPI, \(mix.spiDIP) SPI+dst, \(mix.spiDIPSIP) SPI+dst+src), "
            + "\(o.lookups) lookups × \(Self.repeats), \(Self.burst) per call, cpu \(cpu)")

        // Keys 0…N−1, then the first 64 again: a call never wraps.
        let keys = UnsafeMutablePointer<ESPInboundHeader>.allocate(capacity: n + Self.burst)
        for j in 0..<(n + Self.burst) { (keys + j).initialize(to: workload.header(j % n)) }
        defer { keys.deinitialize(count: n + Self.burst); keys.deallocate() }
        let out = UnsafeMutablePointer<UnsafeMutablePointer<InboundRecord>?>.allocate(capacity: Self.burst)
        out.initialize(repeating: nil, count: Self.burst)
        defer { out.deallocate() }
        let adds = boxes.map { SADCommand.add($0) }
        let removes = boxes.map { SADCommand.remove($0) }

        var runs: [Run] = []
        for r in 0..<Self.repeats {
            let replica = SADReplica(inboundCapacity: capacity, targetCapacity: 1)
            let addCycles = Self.applyAll(replica, adds)
            guard replica.inboundCount == n else {
                throw DataplaneError("the replica holds \(replica.inboundCount) SAs after \(n) adds")
            }
            let (cycles, mismatches) = Self.lookups(replica, keys: keys, count: n, lookups: o.lookups, out: out)
            let removeCycles = Self.applyAll(replica, removes)
            guard replica.inboundCount == 0 else {
                throw DataplaneError("the replica holds \(replica.inboundCount) SAs after removing all \(n)")
            }
            let run = Run(addCycles: Double(addCycles) / Double(n), removeCycles: Double(removeCycles) / Double(n),
                          lookupCycles: cycles, lookups: o.lookups, mismatches: mismatches)
            say(String(format: "  sluice run %d/%d: %.2f M lookups/s, %.1f cycles/lookup, add %.0f cycles/SA, remove %.0f cycles/SA, mismatches %d",
                       r + 1, Self.repeats, hz / run.cyclesPerLookup / 1e6, run.cyclesPerLookup, run.addCycles, run.removeCycles,
                       mismatches))
            runs.append(run)
        }
        withExtendedLifetime(boxes) {}
        let best = runs.min { $0.cyclesPerLookup < $1.cyclesPerLookup }!
        let rate = hz / best.cyclesPerLookup
        var report: [String: Any] = [
            "mode": "sad", "family": family, "sas": n, "cpu": cpu, "burst": Self.burst, "lookups": o.lookups,
            "repeats": Self.repeats, "tsc_hz": hz,
            "rule_mix": ["spi": mix.spiOnly, "spi_dst": mix.spiDIP, "spi_dst_src": mix.spiDIPSIP],
            "lookups_per_s": rate.rounded(), "cycles_per_lookup": round3(best.cyclesPerLookup),
            "ns_per_lookup": round3(1e9 / rate),
            "mismatches": runs.reduce(0) { $0 + $1.mismatches },
            // The inbound table (SPI + record pointer per slot); the whole replica
            // adds the outbound record set (a pointer per slot) and one target.
            "capacity": capacity, "slots": slots, "memory_bytes": slots * 16, "replica_bytes": slots * 24 + 8,
            "add_cycles_per_sa": round3(best.addCycles), "remove_cycles_per_sa": round3(best.removeCycles),
            "runs_lookups_per_s": runs.map { (hz / $0.cyclesPerLookup).rounded() },
        ]
        if o.baseline == "test-sad" {
            say("  baseline: dpdk-test-sad (rte_ipsec_sad) on cpu \(cpu)")
            let b = try runTestSAD(rules: n, ipv6: o.ipv6, lcore: cpu, lookups: o.lookups, burst: Self.burst,
                                   repeats: Self.repeats, say: say)
            report["baseline"] = "dpdk-test-sad (rte_ipsec_sad)"
            report["baseline_lookups_per_s"] = b.lookupsPerSecond.rounded()
            report["baseline_cycles_per_lookup"] = b.cyclesPerLookup ?? NSNull()
            report["baseline_add_cycles_per_sa"] = b.addCyclesPerRule.map(round3) ?? NSNull()
            report["baseline_del_cycles_per_sa"] = Self.deleteCycles(b.rawOutput).map(round3) ?? NSNull()
            report["baseline_rule_mix"] = ["spi": b.ruleMix.spiOnly, "spi_dst": b.ruleMix.spiDIP, "spi_dst_src": b.ruleMix.spiDIPSIP]
            report["baseline_runs_lookups_per_s"] = b.samples.map { $0.lookupsPerSecond.rounded() }
            report["baseline_command"] = b.command
            report["ratio"] = round3(rate / b.lookupsPerSecond)
            say(String(format: "  sluice %.2f M lookups/s (%.1f cycles) vs rte_ipsec_sad %.2f M lookups/s (%.1f cycles): ratio %.3f",
                       rate / 1e6, best.cyclesPerLookup, b.lookupsPerSecond / 1e6, b.cyclesPerLookup ?? 0,
                       rate / b.lookupsPerSecond))
        }
        return report
    }

    /// TSC cycles to apply every command, in order (one clock pair around all).
    @inline(never)
    static func applyAll(_ replica: SADReplica, _ commands: [SADCommand]) -> UInt64 {
        commands.withUnsafeBufferPointer { c in
            let t0 = sl_tsc()
            for command in c { replica.apply(command) }
            return sl_tsc() &- t0
        }
    }

    /// `lookups` keys, `burst` per call, round the N keys in order; the TSC
    /// cycles inside the calls, and how many results were not the key's SA
    /// (checked between calls, outside the clock).
    @inline(never)
    static func lookups(_ replica: SADReplica, keys: UnsafePointer<ESPInboundHeader>, count n: Int, lookups: Int,
                        out: UnsafeMutablePointer<UnsafeMutablePointer<InboundRecord>?>) -> (UInt64, Int) {
        var position = 0
        var done = 0
        var cycles: UInt64 = 0
        var mismatches = 0
        while done < lookups {
            let t0 = sl_tsc()
            replica.lookup(keys + position, count: burst, into: out)
            cycles &+= sl_tsc() &- t0
            for k in 0..<burst where out[k]?.pointee.sa.spi != keys[position &+ k].spi { mismatches += 1 }
            position = (position &+ burst) % n
            done &+= burst
        }
        return (cycles, mismatches)
    }

    /// dpdk-test-sad's mean delete cost: its `DEL n rules, c cycles/rule, …` lines.
    static func deleteCycles(_ output: String) -> Double? {
        var rules = 0, cycles = 0.0
        for line in output.split(separator: "\n") where line.hasPrefix("DEL ") {
            let w = line.split(whereSeparator: { $0 == " " || $0 == "," })
            guard w.count >= 5, w[4] == "cycles/rule", let n = Int(w[1]), let c = Double(w[3]) else { continue }
            rules += n
            cycles += Double(n) * c
        }
        return rules > 0 ? cycles / Double(rules) : nil
    }

    // MARK: - --mode sad-install

    func runInstall() throws -> [String: Any] {
        let n = o.sas, w = o.workers
        let cpus = o.shared.cpuList()
        let workerCPUs = (0..<w).map { cpus[(cpus.count - 1 - $0 % cpus.count + cpus.count) % cpus.count] }
        if w + 1 > cpus.count { say("warning: \(w) workers and the control thread on \(cpus.count) CPUs share CPUs") }
        let lcores = ["0@\(cpus[0])"] + workerCPUs.enumerated().map { "\($0.offset + 1)@\($0.element)" }
        _ = try EAL.initialize(arguments: ["sluicebench", "--no-huge", "-m", "\(o.shared.memory)", "--no-pci", "--no-shconf",
                                           "--no-telemetry", "--log-level", "lib.eal:warning", "--lcores", lcores.joined(separator: ",")])
        let p = try RingPort.create(name: "sadi_p", queues: w, size: 1024, socket: 0)
        let u = try RingPort.create(name: "sadi_u", queues: w, size: 1024, socket: 0)
        let gateway = try Gateway(portIDs: [p.port, u.port], roles: [p.port: .protected, u.port: .unprotected],
                                  workerLcores: (1...w).map(UInt32.init))
        defer { gateway.stop() }
        let base = try GatewayConfig.load(text: """
            port \(p.port) role protected address 10.0.0.1/16
            port \(u.port) role unprotected address 192.0.2.1/24
            """, name: "sad-install")
        let ipsec = IPsecCompiler()
        try gateway.publish(routes: RouteCompiler.compile(base, portMACs: [:]))
        try gateway.start()
        let workers = gateway.workerLcores.count
        say("sluicebench sad-install: \(n) SAs, \(workers) worker(s) on lcores \(gateway.workerLcores) (cpu \(workerCPUs)), running")

        // (a) Prebuilt records committed to every replica.
        let workload = SADWorkload(count: n, ipv6: false, seed: o.seed)
        let state = try SADWorkload.sharedState()
        let boxes = try workload.records(state: state, workers: workers)
        var report: [String: Any] = ["mode": "sad-install", "sas": n, "workers": workers,
                                     "worker_lcores": gateway.workerLcores.map(Int.init), "batch": o.batch]
        let main = try commitRates(gateway, boxes, batch: o.batch)
        report.merge(main.report("")) { $1 }
        say(main.summary(n: n, batch: o.batch))
        if o.batch != 1 {
            let small = Array(boxes.prefix(10_000))
            let single = try commitRates(gateway, small, batch: 1)
            report.merge(single.report("single_")) { $1 }
            report["single_sas"] = small.count
            say(single.summary(n: small.count, batch: 1))
        }

        // (b) The command language, through the control session.
        let session = ControlSession(config: base, gateway: gateway, ipsec: ipsec)
        // A key per SA (its SPI in the first four bytes), as IKE gives each
        // SA its own: SAs sharing a key repeat nonces, and are warned about.
        let rest = String(repeating: "5a", count: AEADAlgorithm.aes128GCM.keyMaterialLength - 4)
        func saLine(_ spi: UInt32, _ source: RawIPAddress) -> String {
            let hex = String(spi, radix: 16)
            let key = String(repeating: "0", count: 8 - hex.count) + hex + rest
            return "sa add spi 0x\(hex) dir in src \(source) dst 192.0.2.1 mode tunnel aead aes-gcm-128 key 0x\(key) reqid 1"
        }
        let lines = ["sp add dir in src 198.51.0.0/16 dst 10.0.0.0/16 priority 10 action protect reqid 1"]
            + (0..<n).map { saLine(workload.spi[$0], workload.source[$0]) }
        do {
            try languageInstall(gateway, session, lines: lines, n: n, workers: workers, taken: Set(workload.spi), saLine: saLine,
                                into: &report)
        } catch {
            // E.g. one sodium_malloc'd key per SA: guard pages cost VMAs (vm.max_map_count).
            let maps = (try? String(contentsOfFile: "/proc/sys/vm/max_map_count", encoding: .utf8))?
                .trimmingCharacters(in: .whitespacesAndNewlines) ?? "?"
            say("  language: install of \(n) SAs failed: \(error) (vm.max_map_count \(maps))")
            report["language_error"] = "\(error)"
            report["vm_max_map_count"] = Int(maps) ?? NSNull()
        }

        withExtendedLifetime(boxes) {}
        return report
    }

    /// (b): the lines applied to a copy of the running configuration and
    /// installed at once, then single `sa add` / `sa del` on top.
    func languageInstall(_ gateway: Gateway, _ session: ControlSession, lines: [String], n: Int, workers: Int, taken: Set<UInt32>,
                         saLine: (UInt32, RawIPAddress) -> String, into report: inout [String: Any]) throws {
        var t = monotonicSeconds()
        var next = session.config
        for line in lines { try next.apply(Self.parse(line)) }
        let applySeconds = monotonicSeconds() - t
        report["language_apply_s"] = round6(applySeconds)
        say(String(format: "  language: %d sa add + 1 sp add parsed and applied to the configuration in %.3f s", n, applySeconds))
        t = monotonicSeconds()
        try session.install(next)
        let installSeconds = monotonicSeconds() - t
        guard gateway.installedSARecords == n else {
            throw DataplaneError("\(gateway.installedSARecords) SA records installed, expected \(n)")
        }
        let total = applySeconds + installSeconds
        say(String(format: "  language: installed (compile, commit to %d replica(s), publish) in %.3f s: %.0f SAs/s with the apply",
                   workers, installSeconds, Double(n) / total))
        report["language_install_s"] = round6(installSeconds)
        report["language_total_s"] = round6(total)
        report["language_sas_per_s"] = (Double(n) / total).rounded()

        // One sa add (and its sa del) on top of the N, each installed alone.
        var rng = SplitMix64(seed: o.seed ^ 0x5AD)
        var single: [(add: Double, del: Double)] = []
        while single.count < 20 {
            let spi = UInt32(truncatingIfNeeded: rng.next())
            guard spi >= 256, !taken.contains(spi) else { continue }
            // As a client's line outside a batch: applied in place, installed.
            func run(_ line: String) throws {
                let reply = session.execute(line)
                guard reply.hasPrefix("{\"ok\":true") else { throw DataplaneError("\(line): \(reply)") }
            }
            t = monotonicSeconds()
            try run(saLine(spi, RawIPAddress(ipv4: 0xCB00_7102)))
            let add = monotonicSeconds() - t
            t = monotonicSeconds()
            try run("sa del spi 0x\(String(spi, radix: 16))")
            single.append((add, monotonicSeconds() - t))
        }
        let addMedian = median(single.map(\.add)), delMedian = median(single.map(\.del))
        say(String(format: "  one sa add on top of %d: median %.3f ms; its sa del: median %.3f ms (%d samples)",
                   n, addMedian * 1e3, delMedian * 1e3, single.count))
        report["one_sa_add_ms_median"] = round3(addMedian * 1e3)
        report["one_sa_del_ms_median"] = round3(delMedian * 1e3)
    }

    static func parse(_ line: String) throws -> LocatedCommand {
        guard let c = try CommandParser.parseLine(Substring(line), location: SourceLocation(file: "sad-install", line: 1, column: 1)) else {
            throw ValidationError("empty command line: \(line)")
        }
        return c
    }

    /// Commit rates of adds then deletes of `boxes`, `batch` per commit.
    struct CommitRates {
        var addSeconds: Double
        var deleteSeconds: Double
        var commitLatency: (add: Double, del: Double)
        var unacknowledged: Int
        var count: Int

        func report(_ prefix: String) -> [String: Any] {
            ["\(prefix)add_sas_per_s": (Double(count) / addSeconds).rounded(),
             "\(prefix)del_sas_per_s": (Double(count) / deleteSeconds).rounded(),
             "\(prefix)add_s": round6(addSeconds), "\(prefix)del_s": round6(deleteSeconds),
             "\(prefix)commit_add_us_median": round3(commitLatency.add * 1e6),
             "\(prefix)commit_del_us_median": round3(commitLatency.del * 1e6),
             "\(prefix)unacknowledged_commits": unacknowledged]
        }

        func summary(n: Int, batch: Int) -> String {
            String(format: "  commitSAD, %d SAs in batches of %d: add %.0f SAs/s (%.3f s, median commit %.1f us), delete %.0f SAs/s (%.3f s, median commit %.1f us), unacknowledged %d",
                   n, batch, Double(count) / addSeconds, addSeconds, commitLatency.add * 1e6,
                   Double(count) / deleteSeconds, deleteSeconds, commitLatency.del * 1e6, unacknowledged)
        }
    }

    func commitRates(_ gateway: Gateway, _ boxes: [SARecordBox], batch: Int) throws -> CommitRates {
        let before = gateway.installedSARecords
        var unacknowledged = 0
        func commitAll(add: Bool) throws -> (Double, [Double]) {
            var latencies: [Double] = []
            let start = monotonicSeconds()
            var i = 0
            while i < boxes.count {
                let t = monotonicSeconds()
                let slice = Array(boxes[i..<min(i + batch, boxes.count)])
                var change = SADChange()
                if add {
                    change.common = slice.map { .add($0) }
                    change.added = slice
                } else {
                    change.common = slice.map { .remove($0) }
                    change.removed = slice
                }
                try gateway.commitSAD(change)
                if gateway.sadCommitWarning != nil { unacknowledged += 1 }
                latencies.append(monotonicSeconds() - t)
                i += batch
            }
            return (monotonicSeconds() - start, latencies)
        }
        let (addSeconds, addLatencies) = try commitAll(add: true)
        guard gateway.installedSARecords == before + boxes.count else {
            throw DataplaneError("\(gateway.installedSARecords) SA records installed after adding \(boxes.count) to \(before)")
        }
        let (deleteSeconds, deleteLatencies) = try commitAll(add: false)
        guard gateway.installedSARecords == before else {
            throw DataplaneError("\(gateway.installedSARecords) SA records installed after deleting back to \(before)")
        }
        return CommitRates(addSeconds: addSeconds, deleteSeconds: deleteSeconds,
                           commitLatency: (median(addLatencies), median(deleteLatencies)),
                           unacknowledged: unacknowledged, count: boxes.count)
    }
}

func round6(_ x: Double) -> Double { (x * 1e6).rounded() / 1e6 }

func median(_ xs: [Double]) -> Double {
    let s = xs.sorted()
    return s.isEmpty ? 0 : s[s.count / 2]
}
