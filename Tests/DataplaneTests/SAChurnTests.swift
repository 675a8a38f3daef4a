// SA churn at the issue's scale, through the control path an operator's
// commands take (ControlSession.install: compile the difference, commit it to
// every worker's SAD replica, publish the SPD snapshot), while the test
// thread keeps pushing bursts through the running worker.

import CShims
import Command
import Control
import Crypto
import Dataplane
import IPsec
import Packet
import Foundation
import Glibc
import Synchronization
import Testing

extension EALSuites.GatewayTests {
    /// 10,000 SAs installed (5,000 outbound under their own reqids, 5,000
    /// inbound under one inbound policy), then SAs are replaced at up to
    /// 1,000 adds and 1,000 deletes per second, 100 of each per commit, for
    /// `SLUICE_CHURN_SECONDS` (default 30) seconds' worth of commits. The reqid the traffic uses gets a
    /// new SA in every commit: every ESP packet must leave under an SA that
    /// was installed while it was in flight, never one whose delete had
    /// committed. Afterwards the SA records and the heap are back where they
    /// were after the initial install.
    @Test func saChurnAtScale() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let seconds = Double(ProcessInfo.processInfo.environment["SLUICE_CHURN_SECONDS"] ?? "") ?? 30
        // The number of commits is fixed (10 a second for `seconds`); how fast
        // they go through is printed, not asserted (a loaded machine is slower:
        // the rate is a benchmark figure, see the README).
        let commits = Int(seconds * 10)
        let key = "0x" + String(repeating: "6d", count: 20)
        func hex(_ v: UInt32) -> String { "0x" + String(v, radix: 16) }
        func outSA(_ spi: UInt32, reqid: UInt32) -> String {
            "sa add spi \(hex(spi)) dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key) reqid \(reqid)"
        }
        func inSA(_ spi: UInt32) -> String {
            "sa add spi \(hex(spi)) dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) reqid 77"
        }
        var text = h.baseConfigText + "\n"
        var outbound: [(spi: UInt32, reqid: UInt32)] = (0..<5000).map { (0x10_0000 + UInt32($0), 1000 + UInt32($0)) }
        var inbound: [UInt32] = (0..<5000).map { 0x30_0000 + UInt32($0) }
        for o in outbound { text += outSA(o.spi, reqid: o.reqid) + "\n" }
        for spi in inbound { text += inSA(spi) + "\n" }
        text += "sp add id 9 dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 1 action protect reqid 5\n"
        text += "sp add id 8 dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 1 action protect reqid 77\n"
        var trafficSPI: UInt32 = 0x50_0000
        text += outSA(trafficSPI, reqid: 5) + "\n"
        // The inbound SA the test's own ESP traffic uses after commit k: 0x600000 + k.
        let inboundTraffic: UInt32 = 0x60_0000
        text += inSA(inboundTraffic) + "\n"

        let session = try h.installSession(text, name: "churn")
        let installed = h.gateway.installedSARecords
        #expect(installed == 10_002)

        // One commit: 100 SAs out (the traffic's, 49 outbound, 50 inbound), 100 new ones in.
        var nextOut: UInt32 = 0x20_0000, nextIn: UInt32 = 0x40_0000
        var commitNumber = 0
        func lines() -> (lines: [String], newTrafficSPI: UInt32) {
            commitNumber += 1
            var l = ["sa del spi \(hex(trafficSPI))", outSA(trafficSPI + 1, reqid: 5),
                     "sa del spi \(hex(inboundTraffic + UInt32(commitNumber - 1)))", inSA(inboundTraffic + UInt32(commitNumber))]
            for _ in 0..<49 {
                let old = outbound.removeFirst()
                l += ["sa del spi \(hex(old.spi))", outSA(nextOut, reqid: old.reqid)]
                outbound.append((nextOut, old.reqid))
                nextOut += 1
            }
            for _ in 0..<50 {
                let old = inbound.removeFirst()
                l += ["sa del spi \(hex(old))", inSA(nextIn)]
                inbound.append(nextIn)
                nextIn += 1
            }
            return (l, trafficSPI + 1)
        }
        func commit() throws {
            let (l, spi) = lines()
            var next = session.config
            for (i, line) in l.enumerated() {
                try next.apply(CommandParser.parseLine(Substring(line), location: .init(file: "churn", line: i + 1, column: 1))!)
            }
            try session.install(next)
            trafficSPI = spi
        }
        // Warm-up commits (tables reach their working size), then the heap baseline.
        for _ in 0..<10 { try commit() }
        let heapBefore = sl_heap_in_use()

        final class Progress: @unchecked Sendable {
            /// The traffic SA of the commit being installed / of the last one installed.
            let announced = Atomic<UInt32>(0), completed = Atomic<UInt32>(0)
            let done = Atomic<Bool>(false)
            var failure: String? = nil
            var commits = 0
            var elapsed = 0.0
        }
        let progress = Progress()
        progress.completed.store(trafficSPI, ordering: .sequentiallyConsistent)
        progress.announced.store(trafficSPI, ordering: .sequentiallyConsistent)
        let work = Unchecked(commit)
        let changer = Thread {
            let start = monotonicSeconds()
            var k = 0
            while k < commits {
                // 10 commits a second: 1,000 adds and 1,000 deletes.
                let due = start + Double(k) * 0.1
                let now = monotonicSeconds()
                if now < due { usleep(UInt32((due - now) * 1e6)) }
                let before = progress.completed.load(ordering: .sequentiallyConsistent)
                progress.announced.store(before + 1, ordering: .sequentiallyConsistent)
                do {
                    try work.value()
                } catch {
                    progress.failure = "commit \(k): \(error)"
                    break
                }
                progress.completed.store(before + 1, ordering: .sequentiallyConsistent)
                k += 1
            }
            progress.commits = k
            progress.elapsed = monotonicSeconds() - start
            progress.done.store(true, ordering: .sequentiallyConsistent)
        }
        let burst = (0..<32).map { h.frame4("10.1.2.3", "198.51.100.9", id: UInt16($0)) }
        // Inbound ESP, sealed here as the peer would: per burst 4 packets
        // under the SA the last completed commit deleted (never accepted) and
        // 4 under the one it installed (accepted unless deleted meanwhile).
        let peer = try TunnelPeer()
        var acceptedDeleted = 0, acceptedCurrent = 0
        let countersBefore = h.totals()
        changer.start()
        var bursts = 0, sent = 0, wrong: [String] = []
        while !progress.done.load(ordering: .sequentiallyConsistent) {
            let low = progress.completed.load(ordering: .sequentiallyConsistent)
            let commit = low - 0x50_0000
            var esp: [[UInt8]] = []
            for (group, k) in [(UInt16(1), commit - 1), (UInt16(2), commit)] {
                for i in 0..<4 {
                    let inner = h.frame4("198.51.100.9", "10.1.2.3", id: group << 8 | UInt16(i), ethDst: h.portMAC(h.u))
                    esp.append(peer.frame(spi: inboundTraffic + k, inner: inner))
                }
            }
            let inbound = try h.inject(esp, on: h.unprotected)
            for f in inbound.sent[h.p] ?? [] where f.count > 19 {
                let group = f[18]
                if group == 1 { acceptedDeleted += 1 }
                if group == 2 { acceptedCurrent += 1 }
            }
            let out = try h.inject(burst, on: h.protected)
            let high = progress.announced.load(ordering: .sequentiallyConsistent)
            bursts += 1
            for f in out.sent[h.u] ?? [] {
                sent += 1
                let spi = f[34..<38].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                if !(low...max(low, high)).contains(spi) && wrong.count < 10 {
                    wrong.append("burst \(bursts): SPI \(hex(spi)) outside the SAs installed while it was in flight (\(hex(low))...\(hex(high)))")
                }
            }
        }
        while !changer.isFinished { usleep(1000) }
        #expect(progress.failure == nil, "\(progress.failure ?? "")")
        #expect(wrong.isEmpty, "\(wrong.joined(separator: "\n"))")
        #expect(sent > 0 && bursts > 10, "\(sent) packets in \(bursts) bursts")
        // Inbound: nothing accepted under an SA whose delete had committed;
        // the current SA's packets arrive.
        #expect(acceptedDeleted == 0, "\(acceptedDeleted) packets accepted under a deleted SA")
        #expect(acceptedCurrent > bursts * 2, "\(acceptedCurrent) of \(bursts * 4) packets under the current inbound SA accepted")
        // Rekey without loss: every outbound packet left, none waited for an SA;
        // inbound drops only for the deleted SA (no SA) or the one deleted meanwhile.
        let delta = (h.totals() - countersBefore)
        #expect(sent == bursts * burst.count && delta.dropsByReason[.noOutboundSA] == nil,
                "\(sent) of \(bursts * burst.count) sent, drops \(delta.dropsByReason)")
        #expect(Set(delta.dropsByReason.keys).isSubset(of: [.esp(.noSA)]), "drops \(delta.dropsByReason)")
        let rate = Double(progress.commits * 100) / progress.elapsed
        print(String(format: "SA churn: %d commits in %.1f s: %.0f adds + %.0f deletes per second with %d SAs, %d bursts, %d ESP packets",
                     progress.commits, progress.elapsed, rate, rate, installed, bursts, sent))
        #expect(h.gateway.installedSARecords == installed, "SA records back to the installed count")
        let heapAfter = sl_heap_in_use()
        #expect(heapAfter <= heapBefore + (2 << 20), "heap in use grew from \(heapBefore) to \(heapAfter) bytes")
    }
}
