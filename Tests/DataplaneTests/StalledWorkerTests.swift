// A worker that stops taking SA changes between bursts (stuck in a burst,
// descheduled): each change is posted to its command ring, and once the
// ring is full the next change must be refused whole — no SA record kept
// for it, no route of it published, the configuration as it was — and go
// through once the worker takes its changes again.

import Command
import Control
@testable import Dataplane
import Glibc
import Packet
import Synchronization
import Testing

extension EALSuites.GatewayTests {
    /// What the stall tests change (the first worker's hold, the commit
    /// timeout, the log) put back, and the IPsec and route state cleared.
    func stallRestorer() -> () -> Void {
        let (lcore, timeout, log) = (h.gateway.workerLcores[0], h.gateway.sadCommitTimeout, h.gateway.log)
        return { [h] in
            h.gateway.holdSADCommands(lcore: lcore, false)
            h.gateway.sadCommitTimeout = timeout
            h.gateway.log = log
            try? h.gateway.publish(ipsec: nil)
            try? h.publish(h.baseConfigText)
        }
    }

    /// An inbound tunnel SA from 192.0.2.254 with reqid 77.
    func reqid77SA(_ spi: Int) -> String {
        "sa add spi 0x\(String(spi, radix: 16)) dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key 0x"
            + String(repeating: "6d", count: 20) + " reqid 77"
    }

    @Test func aChangeAStalledWorkerCannotTakeIsRefusedWhole() throws {
        let (lcore, timeout) = (h.gateway.workerLcores[0], h.gateway.sadCommitTimeout)
        let restore = stallRestorer()
        defer { restore() }
        func inboundSA(_ spi: Int) -> String { reqid77SA(spi) }
        var text = h.baseConfigText + "\nsp add dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 1 action bypass\n"
            + "sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 1 action protect reqid 77\n" + inboundSA(0x7700)
        let session = try h.installSession(text, name: "stall")
        // Plaintext to 198.51.100.5 leaves by its route: the unprotected port.
        let probe = h.frame4("10.1.0.5", "198.51.100.5", payload: 40)
        func leavesUnprotected() throws -> Bool {
            let out = try h.inject([probe], on: h.protected)
            return out.sent[h.u]?.count == 1 && (out.sent[h.p] ?? []).isEmpty
        }
        #expect(try leavesUnprotected())

        let warnings = Mutex(0)
        h.gateway.log = { _ in warnings.withLock { $0 += 1 } }
        h.gateway.sadCommitTimeout = 0.002
        h.gateway.holdSADCommands(lcore: lcore, true)
        // One SA more per change: each is posted and not acknowledged.
        var posted = 0
        var refusal: ControlError? = nil
        let reroute = "\nroute del 198.51.100.0/24\nroute add 198.51.100.0/24 via 10.0.0.2\n"
        while refusal == nil && posted < 300 {
            let records = h.gateway.installedSARecords
            let before = session.config
            let next = try GatewayConfig.load(text: text + "\n" + inboundSA(0x7800 + posted) + reroute, name: "stall")
            do {
                try session.install(next)
            } catch {
                refusal = error
                #expect(h.gateway.installedSARecords == records, "the refused change's SA record is not kept")
                #expect(session.config == before, "the configuration is as it was")
                break
            }
            posted += 1
            text += "\n" + inboundSA(0x7800 + posted - 1)
            // The route back (no SA change: nothing posted to the workers).
            try session.install(GatewayConfig.load(text: text, name: "stall"))
        }
        let error = try #require(refusal, "a worker that takes no SA changes never fills its ring (\(posted) changes, \(warnings.withLock { $0 }) warnings)")
        #expect(error.message.contains("command ring is full") && error.message.contains("nothing of this change was applied"), "\(error)")
        #expect(posted > 100, "the ring held \(posted) pairs of changes")
        #expect(warnings.withLock { $0 } > 0, "unacknowledged changes are logged")
        #expect(try leavesUnprotected(), "the refused change's route is not published")

        // The worker takes its changes again: the same change now goes through.
        h.gateway.holdSADCommands(lcore: lcore, false)
        h.gateway.sadCommitTimeout = timeout
        let records = h.gateway.installedSARecords
        try session.install(GatewayConfig.load(text: text + "\n" + inboundSA(0x7fff) + reroute, name: "stall"))
        #expect(h.gateway.installedSARecords == records + 1)
        let out = try h.inject([probe], on: h.protected)
        #expect(out.sent[h.p]?.count == 1 && (out.sent[h.u] ?? []).isEmpty, "rerouted by the protected port: \(out.delta)")
    }

    /// An SA past its hard time limit is taken out of the data path by
    /// installing the configuration again; while a stalled worker's full
    /// command ring refuses that install, the removal stays pending and the
    /// next lifetime check (`ControlSession.removeExpiredSAs`) tries again,
    /// so the SA does not go on carrying traffic. Before, one failed try was
    /// the only one: the SA stayed in use until some other change went through.
    @Test func anExpiredSAIsRemovedOnceAStalledWorkerTakesChangesAgain() throws {
        let (lcore, timeout) = (h.gateway.workerLcores[0], h.gateway.sadCommitTimeout)
        let restore = stallRestorer()
        defer { restore() }
        func inboundSA(_ spi: Int, _ extra: String = "") -> String { reqid77SA(spi) + extra }
        var text = h.baseConfigText + "\nsp add dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 1 action bypass\n"
            + "sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 1 action protect reqid 77\n"
            + inboundSA(0x7a01, " lifetime seconds hard 1")
        let ipsec = IPsecCompiler()
        let session = ControlSession(config: try GatewayConfig.load(text: text, name: "expiry"), gateway: h.gateway,
                                     ipsec: ipsec, portMACs: h.routeMACs)
        try session.install(session.config)
        let installedAt = 1000.0
        #expect(ipsec.checkTimes(now: installedAt).isEmpty && session.removeExpiredSAs() == nil)
        let peer = try TunnelPeer()
        func opened() throws -> Outcome {
            let inner = h.frame4("198.51.100.9", "10.1.2.3", ethDst: h.portMAC(h.u))
            return try h.inject([peer.frame(spi: 0x7a01, inner: inner)], on: h.unprotected)
        }
        #expect(try opened().sent[h.p]?.count == 1)

        // The worker stops taking SA changes; changes fill its ring.
        h.gateway.log = { _ in }
        h.gateway.sadCommitTimeout = 0.002
        h.gateway.holdSADCommands(lcore: lcore, true)
        var full = false
        for k in 0..<300 where !full {
            text += "\n" + inboundSA(0x7800 + k)
            do { try session.install(GatewayConfig.load(text: text, name: "expiry")) } catch { full = true }
        }
        try #require(full, "a worker that takes no SA changes never fills its ring")

        // Its hard limit passes: the removal cannot be installed yet.
        let expiries = ipsec.checkTimes(now: installedAt + 2)
        #expect(expiries.map(\.hard) == [true])
        guard case .failure(let error)? = session.removeExpiredSAs() else {
            Issue.record("the removal went through a full command ring"); return
        }
        #expect(error.message.contains("command ring is full"), "\(error)")
        #expect(ipsec.removalPending && ipsec.checkTimes(now: installedAt + 2.25).isEmpty)
        #expect(session.removeExpiredSAs() != nil, "still pending at the next check")
        #expect(try opened().sent[h.p]?.count == 1, "in use until the removal goes through")

        // The worker takes its changes again: the next check removes the SA.
        h.gateway.holdSADCommands(lcore: lcore, false)
        h.gateway.sadCommitTimeout = timeout
        guard case .success(let removed)? = session.removeExpiredSAs() else {
            Issue.record("the removal still failed"); return
        }
        #expect(removed.map(\.spi.rawValue) == [0x7a01])
        #expect(!ipsec.removalPending && session.removeExpiredSAs() == nil)
        let after = try opened()
        #expect((after.sent[h.p] ?? []).isEmpty && after.delta.dropsByReason == [.esp(.noSA): 1], "\(after.delta)")
    }

    /// A single `sa add`, `sa update` or `sa del` is applied to the running
    /// configuration in place (no copy of its SA tables). When its install
    /// is refused (a stalled worker's full command ring), the SA is put back
    /// as it was: the configuration equals the one before, no record is
    /// kept, and the same line goes through once the worker takes changes.
    @Test func aRefusedSACommandIsUndoneInPlace() throws {
        let (lcore, timeout) = (h.gateway.workerLcores[0], h.gateway.sadCommitTimeout)
        let restore = stallRestorer()
        defer { restore() }
        let outbound = "sa add spi 0x7d00 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key 0x"
            + String(repeating: "7d", count: 20) + " reqid 9"
        let text = h.baseConfigText + "\nsp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 1 action protect reqid 77\n"
            + reqid77SA(0x7b00) + "\n" + outbound
        let session = try h.installSession(text, name: "inplace")
        func ok(_ reply: String) -> Bool { reply.hasPrefix("{\"ok\":true") }
        #expect(ok(session.execute(reqid77SA(0x7b01))), "an SA command outside a stall goes through")
        #expect(session.config.sas.count == 3)
        func isRefusal(_ reply: String) -> Bool { reply.contains("\"install\"") && reply.contains("command ring is full") }

        h.gateway.log = { _ in }
        h.gateway.sadCommitTimeout = 0.002
        h.gateway.holdSADCommands(lcore: lcore, true)
        var refused: String? = nil
        var before = session.config
        var records = h.gateway.installedSARecords
        for k in 0..<300 where refused == nil {
            before = session.config
            records = h.gateway.installedSARecords
            let reply = session.execute(reqid77SA(0x7c00 + k))
            if !ok(reply) { refused = reply }
        }
        let reply = try #require(refused, "a worker that takes no SA changes never fills its ring")
        #expect(isRefusal(reply), "\(reply)")
        let journal = session.config.saJournal.count
        #expect(session.config == before && h.gateway.installedSARecords == records, "the refused sa add is undone")
        let added = before.sas.count
        // A refused delete and refused updates put the SA back too, its
        // indexes (the reqid slot of an outbound SA) and the journal included.
        let del = session.execute("sa del spi 0x7b01")
        #expect(isRefusal(del) && session.config == before, "\(del)")
        let update = session.execute(reqid77SA(0x7b01).replacingOccurrences(of: "sa add", with: "sa update") + " replay-window 128")
        #expect(isRefusal(update) && session.config == before, "\(update)")
        let moved = session.execute(outbound.replacingOccurrences(of: "sa add", with: "sa update").replacingOccurrences(of: "reqid 9", with: "reqid 10"))
        #expect(isRefusal(moved) && session.config == before, "\(moved)")
        #expect(session.config.outboundSA(reqid: 9, cpu: nil)?.spi == SecurityParameterIndex(0x7d00)
                && session.config.outboundSA(reqid: 10, cpu: nil) == nil)
        #expect(session.config.saJournal.count == journal, "a refused change leaves no journal entry behind")

        // The worker takes its changes again: the same lines go through.
        h.gateway.holdSADCommands(lcore: lcore, false)
        h.gateway.sadCommitTimeout = timeout
        #expect(ok(session.execute("sa del spi 0x7b01")) && session.config.sas.count == added - 1)
        #expect(ok(session.execute(reqid77SA(0x7b01))) && session.config.sas.count == added)
    }
}
