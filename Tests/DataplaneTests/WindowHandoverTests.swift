// An inbound SA whose replay window is being handed to its worker
// (`InboundRecord.ready`, `SADCommand.handover`): the worker drops the SA's
// packets as `sa_moving` until the previous owner's handover marks the
// record ready, then opens them. IPsecCompilerTests checks when the
// compiler asks for a handover and what it carries over.

@testable import Control
@testable import Dataplane
import Testing

extension EALSuites.GatewayTests {
    @Test func aWindowStillBeingHandedOverDropsItsPackets() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let key = "0x" + String(repeating: "6d", count: 20)
        let text = h.baseConfigText + """

        sa add spi 0x7008 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir in src 0.0.0.0/0 dst 10.1.0.0/16 priority 3 action protect spi 0x7008
        """
        let session = try h.installSession(text, name: "handover")
        let peer = try TunnelPeer()
        let sealed = { peer.frame(spi: 0x7008, inner: self.h.frame4("203.0.113.9", "10.1.2.3", ethDst: self.h.portMAC(self.h.u))) }
        let (installed, state) = try #require(session.ipsec.installedInbound(spi: 0x7008))
        // The record replaced by one whose window is not handed over yet.
        let waiting = SARecordBox(inbound: installed.inbound!.pointee.sa, state: state, limits: SALimits(), owner: 0, ready: false)
        var swap = SADChange()
        swap.common = [.remove(installed), .add(waiting)]
        swap.added = [waiting]
        try h.gateway.commitSAD(swap)
        try expectDropped([sealed(), sealed()], reason: .saMoving, on: h.unprotected)
        // The previous owner (worker 0) hands it over: opened from then on.
        var handover = SADChange()
        handover.common = [.handover(installed, to: waiting)]
        try h.gateway.commitSAD(handover)
        #expect(waiting.inboundReady)
        let opened = try h.inject([sealed()], on: h.unprotected)
        #expect(opened.delta.totalDrops == 0 && opened.sent[h.p]?.count == 1, "\(opened.delta)")
    }
}
