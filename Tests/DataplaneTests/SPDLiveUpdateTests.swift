// Policy changes while traffic flows: a control thread applies 1,000 single
// policy adds and deletes (each compiled — patched or rebuilt — and published
// with RCU) while the test thread keeps pushing bursts through the running
// worker. Every packet's fate must be the verdict of one of the snapshots
// that could have been current while it was in flight: never a torn state,
// never a drop that every candidate snapshot would have passed.

import CShims
import Command
import Foundation
import Control
import Dataplane
import Glibc
import IPsec
import Packet
import Synchronization
import Testing

/// The policy changes and, for each snapshot, what it decides for each flow.
private final class ChangeLog: @unchecked Sendable {
    /// Snapshots whose publish has begun (an upper bound on what a worker may see).
    let announced = Atomic<Int>(0)
    /// Snapshots whose publish returned (every worker has passed a quiescent state).
    let completed = Atomic<Int>(0)
    var latencies: [Double] = []
    var methods: [String: Int] = [:]
    var failure: String? = nil
}

/// Hands the gateway and compiler to the control thread; the test thread only
/// injects and reads counters meanwhile (what a control thread and the traffic
/// share in production too).
struct Unchecked<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

extension EALSuites.GatewayTests {
    @Test(arguments: ["linear", "hash-list", "cut-tree"])
    func policyChangesUnderTraffic(driver: String) throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        var rng = SplitMix64(seed: 0x5bd_0001 &+ UInt64(driver.utf8.count))
        // Flows from the protected side to 198.51.100.0/24 (routed out of the unprotected port).
        struct Flow { var src: String; var dst: String; var sport: UInt16; var dport: UInt16 }
        let flows = (0..<64).map { (i: Int) -> Flow in
            let sport = UInt16(1000 + i % 5)
            let dport = UInt16(53 + (i % 8) * 10)
            return Flow(src: "10.1.\(i % 4).\(1 + i % 7)", dst: "198.51.100.\(i % 16)", sport: sport, dport: dport)
        }
        let fields = flows.map { f -> SelectorFields in
            SelectorFields(source: RawIPAddress(ipv4(f.src)), destination: RawIPAddress(ipv4(f.dst)), proto: 17,
                           sourcePort: f.sport, destinationPort: f.dport, hasPorts: true)
        }
        func randomPolicy(_ rng: inout SplitMix64) -> String {
            let src = rng.next() % 3 == 0 ? "10.1.0.0/16" : "10.1.\(rng.next() % 4).0/\(rng.next() % 2 == 0 ? 24 : 30)"
            let dst = rng.next() % 2 == 0 ? "198.51.100.\(rng.next() % 16)/32" : "198.51.100.\(rng.next() % 4 * 4)/30"
            var words = "src \(src) dst \(dst)"
            if rng.next() % 2 == 0 {
                let low = 53 + (rng.next() % 8) * 10
                words += " proto udp dport \(low)-\(low + (rng.next() % 3) * 10)"
            }
            let action = rng.next() % 2 == 0 ? "bypass" : "discard"
            return "sp add dir out \(words) priority \(rng.next() % 100_000) action \(action)"
        }
        var config = try GatewayConfig.load(text: h.baseConfigText + "\nspd driver \(driver)\n"
            + "sp add id 1 dir out src 0.0.0.0/0 dst 0.0.0.0/0 priority 1000 action bypass\n", name: "live.conf")
        for _ in 0..<200 {
            try config.apply(CommandParser.parseLine(Substring(randomPolicy(&rng)), location: .init(file: "live", line: 1, column: 1))!)
        }
        // What a snapshot decides: the first policy, in effective order, whose selector matches.
        func forwards(_ c: GatewayConfig) -> [Bool] {
            let selectors = c.policies.map { p in
                (TrafficSelector(source: p.selector.source, destination: p.selector.destination, proto: p.selector.proto,
                                 sourcePorts: p.selector.sourcePorts, destinationPorts: p.selector.destinationPorts)!, p.action)
            }
            return fields.map { f in selectors.first { $0.0.matches(f) }.map { $0.1 == .bypass } ?? false }
        }

        let compiler = IPsecCompiler()
        try h.gateway.publish(ipsec: compiler.compile(config))
        compiler.commit()
        let log = ChangeLog()

        // The 1,000 changes, prepared up front: adds and deletes of random policies.
        var commands: [String] = []
        var live = config.policies.map(\.id.rawValue).filter { $0 != 1 }
        var nextID: UInt32 = 10_000
        for _ in 0..<1000 {
            if live.count > 150 && rng.next() % 2 == 0 {
                let i = Int(rng.next() % UInt64(live.count))
                commands.append("sp del id \(live.remove(at: i))")
            } else {
                nextID += 1
                live.append(nextID)
                commands.append(randomPolicy(&rng).replacingOccurrences("sp add ", "sp add id \(nextID) "))
            }
        }
        // Every snapshot's configuration and verdicts, computed before the
        // traffic starts (verdicts[k][f]: snapshot k, 0 = before any change,
        // forwards flow f).
        var configs = [config]
        for (n, line) in commands.enumerated() {
            try config.apply(CommandParser.parseLine(Substring(line), location: .init(file: "live", line: n + 1, column: 1))!)
            configs.append(config)
        }
        let verdicts = configs.map(forwards)
        let changes = commands
        let work = Unchecked((gateway: h.gateway, compiler: compiler, configs: configs))
        let changer = Thread {
            let (gateway, compiler, configs) = work.value
            for n in 1..<configs.count {
                do {
                    let start = monotonicSeconds()
                    let tables = try compiler.compile(configs[n])
                    log.announced.store(n, ordering: .sequentiallyConsistent)
                    try gateway.publish(ipsec: tables)
                    log.completed.store(n, ordering: .sequentiallyConsistent)
                    compiler.commit()
                    log.latencies.append(monotonicSeconds() - start)
                    let method = compiler.notes.first ?? "?"
                    log.methods[method.contains("patched") ? "patched" : (method.contains("unchanged") ? "unchanged" : "rebuilt"), default: 0] += 1
                } catch {
                    log.failure = "change \(n) '\(changes[n - 1])': \(error)"
                    log.completed.store(changes.count, ordering: .sequentiallyConsistent)
                    return
                }
            }
        }

        // Traffic: bursts of every flow, IP id = packet number within the burst.
        let burst = (0..<256).map { i in
            let f = flows[i % flows.count]
            return h.frame4(f.src, f.dst, id: UInt16(i), transport: .udp(sourcePort: f.sport, destinationPort: f.dport))
        }
        changer.start()
        var bursts = 0, spanning = 0, wrong: [String] = [], forwarded = 0, packets = 0
        while log.completed.load(ordering: .sequentiallyConsistent) < commands.count || bursts < 4 {
            let low = log.completed.load(ordering: .sequentiallyConsistent)
            let out = try h.inject(burst, on: h.protected)
            let high = log.announced.load(ordering: .sequentiallyConsistent)
            bursts += 1
            if high > low { spanning += 1 }
            var seen = [Int](repeating: 0, count: burst.count)
            for frame in out.sent[h.u] ?? [] {
                let id = Int(frame[14 + 4]) << 8 | Int(frame[14 + 5])
                if id < seen.count { seen[id] += 1 }
            }
            #expect((out.sent[h.p] ?? []).isEmpty)
            for i in 0..<burst.count {
                packets += 1
                let f = i % flows.count
                #expect(seen[i] <= 1, "packet \(i) sent \(seen[i]) times")
                let fate = seen[i] == 1
                if fate { forwarded += 1 }
                // The snapshots that may have classified it: low ... high.
                let candidates = verdicts[low...high].map { $0[f] }
                if !candidates.contains(fate) && wrong.count < 10 {
                    wrong.append("burst \(bursts), packet \(i) (flow \(f)): \(fate ? "forwarded" : "dropped"), "
                                 + "but snapshots \(low)...\(high) say \(candidates)")
                }
            }
        }
        while !changer.isFinished { usleep(1000) }
        #expect(log.failure == nil, "\(log.failure ?? "")")
        #expect(wrong.isEmpty, "fates no snapshot explains:\n\(wrong.joined(separator: "\n"))")
        #expect(spanning > 0, "no burst was in flight during a change (\(bursts) bursts)")
        // The workload has both fates (a property of the seeded policies, not of
        // which snapshots the bursts happened to meet), and traffic flowed.
        #expect(verdicts.joined().contains(true) && verdicts.joined().contains(false), "the snapshots forward some flows and drop others")
        #expect(forwarded > 0, "\(forwarded) of \(packets) forwarded")
        let sorted = log.latencies.sorted()
        if !sorted.isEmpty {
            print(String(format: "spd live update (%@): %d changes (%@) under %d bursts, %d in flight during a change; "
                         + "change visible to all workers: median %.0f us, p99 %.0f us",
                         driver, sorted.count, log.methods.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
                            .joined(separator: ", "), bursts, spanning,
                         sorted[sorted.count / 2] * 1e6, sorted[sorted.count * 99 / 100] * 1e6))
        }
    }
}

extension EALSuites.GatewayTests {
    /// A reader that stops reporting quiescence delays only the free of the
    /// snapshots it might still hold, never the publish: the control thread
    /// waits at most `gracePeriodTimeout`, traffic moves to the new snapshot
    /// at once, and the old ones are freed once the reader goes quiet.
    @Test func stalledReaderDelaysOnlyTheFree() throws {
        let timeout = h.gateway.gracePeriodTimeout
        h.gateway.gracePeriodTimeout = 0.05
        defer { h.gateway.gracePeriodTimeout = timeout; try? h.publish(h.baseConfigText) }
        let toDoc = h.frame4("10.1.2.3", "198.51.100.7")
        try h.gateway.withExtraReader {
            for round in 1...2 {  // each IPv4 FIB snapshot holds a 64 MB DIR-24-8 table
                let start = monotonicSeconds()
                try h.publish(h.baseConfigText.replacingOccurrences("route add 198.51.100.0/24 via 192.0.2.254",
                                                                   round % 2 == 1 ? "route add 198.51.100.0/24 via 10.0.0.2"
                                                                                  : "route add 198.51.100.0/24 via 192.0.2.254"))
                #expect(monotonicSeconds() - start < 2, "publish waited \(monotonicSeconds() - start) s for a stalled reader")
                #expect(h.gateway.retiredSnapshots == round, "round \(round): the replaced snapshots are kept")
                // The worker already uses the new snapshot.
                let out = try h.inject([toDoc], on: h.protected)
                let port = round % 2 == 1 ? h.p : h.u
                #expect(out.sent[port]?.count == 1, "round \(round): the new route is in use")
            }
        }
        try h.publish(h.baseConfigText)
        #expect(h.gateway.retiredSnapshots == 0, "freed once the reader went offline")
    }
}

/// IPsec configurations compiled with one compiler and published on the
/// running test gateway (as the control thread does), and what leaves the
/// unprotected port for packets 10.1.2.3 → 198.51.100.9.
private struct LiveIPsec {
    let h: GatewayHarness
    let compiler = IPsecCompiler()

    /// Publishes the harness's base configuration plus `text`; returns how
    /// many records wait for the publish to leave the replicas (`SADChange.released`).
    @discardableResult
    func install(_ text: String) throws -> Int {
        let config = try GatewayConfig.load(text: h.baseConfigText + "\n" + text + "\n", name: "live.conf")
        let tables = try #require(try compiler.compile(config, workerLcores: h.gateway.workerLcores))
        let waiting = tables.sad.released.removed.count
        try h.gateway.publish(ipsec: tables)
        compiler.commit()
        return waiting
    }

    /// Outbound SAs of `reqid`: its fallback (`spi`) and lcore 1's own
    /// (`spi + 1`), and policy `id` protecting 10.1/16 → 198.51.100/24 with it.
    static func reqid(_ reqid: Int, spi: UInt32, policy id: Int, keyByte: String) -> (fallback: String, own: String, policy: String) {
        let key = "0x" + String(repeating: keyByte, count: 20)
        func sa(_ spi: UInt32, _ cpu: String) -> String {
            "sa add spi 0x\(String(spi, radix: 16)) dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key) reqid \(reqid)\(cpu)\n"
        }
        return (sa(spi, ""), sa(spi + 1, " cpu 1"),
                "sp add id \(id) dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 1 action protect reqid \(reqid)")
    }

    /// SPI and sequence number of each ESP frame sent out of the unprotected port for `n` packets.
    func send(_ n: Int) throws -> [(spi: UInt32, seq: UInt32)] {
        let frames = (0..<n).map { h.frame4("10.1.2.3", "198.51.100.9", id: UInt16($0)) }
        let out = try h.inject(frames, on: h.protected)
        return (out.sent[h.u] ?? []).map { f in
            (f[34..<38].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }, f[38..<42].reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        }
    }
}

extension EALSuites.GatewayTests {
    /// RFC 9611 on the running worker (lcore 1): with only the fallback SA of
    /// a reqid, traffic leaves under the fallback; once the worker's own SA is
    /// published, the next burst leaves under it (numbered from 1); with no SA
    /// at all the packets are dropped and one ACQUIRE names the policy and cpu 1.
    @Test func perCPUSAReplacesTheFallbackAtThePublish() throws {
        defer { try? h.gateway.publish(ipsec: nil); _ = h.gateway.drainEvents() }
        let (fallback, own, policy) = LiveIPsec.reqid(5, spi: 0x7100, policy: 42, keyByte: "77")
        let live = LiveIPsec(h: h)
        #expect(h.gateway.workerLcores == [1])
        try live.install(fallback + policy)
        var sent = try live.send(3)
        #expect(sent.map(\.spi) == [0x7100, 0x7100, 0x7100] && sent.map(\.seq) == [1, 2, 3], "\(sent)")
        try live.install(fallback + own + policy)
        sent = try live.send(3)
        #expect(sent.map(\.spi) == [0x7101, 0x7101, 0x7101] && sent.map(\.seq) == [1, 2, 3], "\(sent)")
        // The fallback's numbers went on where they were when it is used again.
        try live.install(fallback + policy)
        sent = try live.send(1)
        #expect(sent.map(\.spi) == [0x7100] && sent.map(\.seq) == [4], "\(sent)")

        _ = h.gateway.drainEvents()
        try live.install(policy)
        let before = h.totals()
        sent = try live.send(5)
        #expect(sent.isEmpty)
        #expect((h.totals() - before).dropsByReason == [.noOutboundSA: 5])
        let events = h.gateway.drainEvents()
        #expect(events.count == 1, "ACQUIRE is rate-limited per policy and core: \(events.count) events")
        if let e = events.first {
            #expect(e.kind == UInt8(SL_EVENT_ACQUIRE) && e.policy_id == 42 && e.lcore == 1 && e.proto == 17 && e.dport == 5000)
        }
    }
}

extension EALSuites.GatewayTests {
    /// `protect reqid N per-cpu` (RFC 9611, Linux's XFRM_POLICY_CPU_ACQUIRE):
    /// a worker that seals with the reqid's fallback still sends the packets
    /// and raises one ACQUIRE (per second) naming the policy and its cpu, so
    /// an IKE daemon can negotiate the worker's own SA; once it has one, no
    /// more. Without `per-cpu` the fallback raises none.
    @Test func aWorkerOnTheFallbackOfAPerCPUPolicyAsksForItsOwnSA() throws {
        defer { try? h.gateway.publish(ipsec: nil); _ = h.gateway.drainEvents() }
        let (fallback, own, policy) = LiveIPsec.reqid(6, spi: 0x7200, policy: 43, keyByte: "78")
        let live = LiveIPsec(h: h)
        #expect(h.gateway.workerLcores == [1])
        _ = h.gateway.drainEvents()
        try live.install(fallback + policy)
        #expect(try live.send(4).map(\.spi) == [0x7200, 0x7200, 0x7200, 0x7200])
        #expect(h.gateway.drainEvents().isEmpty, "no per-cpu: the fallback is enough")

        try live.install(fallback + policy + " per-cpu")
        #expect(try live.send(4).map(\.spi) == [0x7200, 0x7200, 0x7200, 0x7200], "the fallback still carries the packets")
        let events = h.gateway.drainEvents()
        #expect(events.count == 1, "one ACQUIRE per policy and core per second: \(events.count)")
        if let e = events.first {
            #expect(e.kind == UInt8(SL_EVENT_ACQUIRE) && e.policy_id == 43 && e.lcore == 1 && e.proto == 17 && e.dport == 5000)
        }

        try live.install(fallback + own + policy + " per-cpu")
        #expect(try live.send(4).map(\.spi) == [0x7201, 0x7201, 0x7201, 0x7201])
        #expect(h.gateway.drainEvents().isEmpty, "its own SA: nothing to ask for")
    }
}

extension EALSuites.GatewayTests {
    /// A policy moved to a new SA while the old one is deleted, in one change
    /// on the running gateway: traffic leaves under the new SA at once, and
    /// the old SA's record, kept in the replicas until the new snapshot is
    /// published (`SADChange.released`), is released by the same publish.
    @Test func aPolicyMovedToANewSAReleasesTheOldRecordInTheSamePublish() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let key = "0x" + String(repeating: "79", count: 20)
        func sa(_ spi: String) -> String {
            "sa add spi \(spi) dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key)\n"
        }
        func policy(_ spi: String) -> String {
            "sp add id 44 dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 1 action protect spi \(spi)\n"
        }
        let live = LiveIPsec(h: h)
        _ = try live.install(sa("0x7301") + policy("0x7301"))
        #expect(try live.send(2).map(\.spi) == [0x7301, 0x7301])
        let records = h.gateway.installedSARecords
        #expect(try live.install(sa("0x7302") + policy("0x7302")) == 1, "0x7301's record waited for the publish")
        #expect(h.gateway.installedSARecords == records, "and left with it: one SA out, one in")
        #expect(try live.send(2).map(\.spi) == [0x7302, 0x7302])
        // An SA without a byte limit still counts its bytes (inner packets, 46 bytes each).
        let usage = live.compiler.usage(of: SAIdentifier(spi: SecurityParameterIndex(0x7302), destination: IPAddress("192.0.2.254")))
        #expect(usage?.packets == 2 && usage?.bytes == 2 * 46, "\(String(describing: usage))")
    }
}

extension EALSuites.GatewayTests {
    /// SA churn under traffic: among 2,000 installed SAs, the SA serving a
    /// reqid is replaced 200 times (delete + add in one change) while bursts
    /// flow. Every ESP packet leaves under an SA that was installed while the
    /// packet was in flight — never under one whose delete had committed.
    @Test func saChurnNeverUsesADeletedSA() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let key = "0x" + String(repeating: "5e", count: 20)
        func sa(_ spi: UInt32, reqid: UInt32) -> String {
            "sa add spi 0x\(String(spi, radix: 16)) dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key) reqid \(reqid)\n"
        }
        var text = h.baseConfigText + "\n"
        for i in 0..<2000 { text += sa(0x10_0000 + UInt32(i), reqid: 1000 + UInt32(i)) }
        text += "sp add id 9 dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 1 action protect reqid 5\n"
        let spis = (0...200).map { 0x20_0000 + UInt32($0) }
        // Each change from the previous state: delete the reqid's SA, add the next.
        var configs = [try GatewayConfig.load(text: text + sa(spis[0], reqid: 5), name: "churn")]
        for k in 1..<spis.count {
            var c = configs[k - 1]
            for line in ["sa del spi 0x\(String(spis[k - 1], radix: 16))", sa(spis[k], reqid: 5)] {
                try c.apply(CommandParser.parseLine(Substring(line.trimmingCharacters(in: .newlines)),
                                                    location: .init(file: "churn", line: k, column: 1))!)
            }
            configs.append(c)
        }
        let compiler = IPsecCompiler()
        try h.gateway.publish(ipsec: compiler.compile(configs[0], workerLcores: h.gateway.workerLcores))
        compiler.commit()
        final class Progress: @unchecked Sendable {
            let announced = Atomic<Int>(0), completed = Atomic<Int>(0)
            var failure: String? = nil
        }
        let progress = Progress()
        let work = Unchecked((gateway: h.gateway, compiler: compiler, configs: configs))
        let changer = Thread {
            let (gateway, compiler, configs) = work.value
            for k in 1..<configs.count {
                do {
                    let tables = try compiler.compile(configs[k], workerLcores: gateway.workerLcores)
                    progress.announced.store(k, ordering: .sequentiallyConsistent)
                    try gateway.publish(ipsec: tables)
                    compiler.commit()
                    progress.completed.store(k, ordering: .sequentiallyConsistent)
                } catch {
                    progress.failure = "change \(k): \(error)"
                    progress.completed.store(configs.count, ordering: .sequentiallyConsistent)
                    return
                }
            }
        }
        let burst = (0..<64).map { h.frame4("10.1.2.3", "198.51.100.9", id: UInt16($0)) }
        changer.start()
        var bursts = 0, wrong: [String] = [], sent = 0
        while progress.completed.load(ordering: .sequentiallyConsistent) < configs.count - 1 || bursts < 3 {
            let low = progress.completed.load(ordering: .sequentiallyConsistent)
            let out = try h.inject(burst, on: h.protected)
            let high = progress.announced.load(ordering: .sequentiallyConsistent)
            bursts += 1
            let allowed = Set(spis[low...max(low, high)])
            for f in out.sent[h.u] ?? [] {
                sent += 1
                let spi = f[34..<38].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                if !allowed.contains(spi) && wrong.count < 10 {
                    wrong.append("burst \(bursts): SPI 0x\(String(spi, radix: 16)) outside the SAs of changes \(low)...\(high)")
                }
            }
        }
        while !changer.isFinished { usleep(1000) }
        #expect(progress.failure == nil, "\(progress.failure ?? "")")
        #expect(wrong.isEmpty, "\(wrong.joined(separator: "\n"))")
        #expect(sent > 0 && bursts > 3)
    }
}
