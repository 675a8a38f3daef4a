// The worker opens a burst's ESP in three passes (admit every packet, open
// them all with one call, finish each): one RX burst that mixes every
// inbound fate must still give each packet its own, with the right inner
// packet forwarded and the right counter for each drop.

import CShims
import Command
@testable import Control
import Dataplane
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// One burst of 17 frames to the gateway's unprotected port: two SAs'
    /// packets interleaved, a copy of one packet, a forgery of a number that
    /// a genuine packet later in the burst carries, an SA whose hard packet
    /// limit (3) falls inside the burst, an unknown SPI and plaintext that a
    /// protect policy covers. Each genuine packet within its SA's limit leaves
    /// as its exact inner packet, in order; each other frame is one drop
    /// under its own reason.
    @Test func oneBurstMixesEveryInboundFate() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let key = "0x" + String(repeating: "6d", count: 20)
        let text = h.baseConfigText + """

        sa add spi 0x7501 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7502 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) lifetime packets hard 3
        sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 1 action protect spi 0x7501
        sp add dir in src 198.51.101.0/24 dst 10.1.0.0/16 priority 2 action protect spi 0x7502
        """
        let session = try h.installSession(text, name: "staged")
        _ = h.gateway.drainEvents()
        let peer = try TunnelPeer()
        func inner(_ source: String, _ n: Int) -> [UInt8] {
            h.frame4(source, "10.1.0.\(n)", payload: 40 + 60 * n, pattern: .incrementing(from: UInt8(n)),
                     ethDst: h.portMAC(h.u))
        }
        let a = (1...4).map { inner("198.51.100.7", $0) }
        let b = (1...5).map { inner("198.51.101.7", 10 + $0) }
        let a1 = peer.frame(spi: 0x7501, inner: a[0]), a2 = peer.frame(spi: 0x7501, inner: a[1])
        var forged = peer.frame(spi: 0x7501, inner: a[2])
        forged[forged.count - 1] ^= 0x01  // the ICV's last byte, under number 3
        peer.next[0x7501] = 3
        let a3 = peer.frame(spi: 0x7501, inner: a[2]), a4 = peer.frame(spi: 0x7501, inner: a[3])
        let bs = b.map { peer.frame(spi: 0x7502, inner: $0) }
        let unknown = peer.frame(spi: 0x7599, inner: a[0])
        let plaintext = inner("198.51.100.8", 9)

        let burst = [a1, bs[0], a2, a2, bs[1], forged, bs[2], a3, bs[3], unknown, bs[4], plaintext, a4]
        #expect(burst.count <= 32, "one RX burst")
        let out = try h.inject(burst, on: h.unprotected)

        #expect(out.delta.rxPackets == UInt64(burst.count), "\(out.delta)")
        #expect(out.delta.dropsByReason == [.esp(.replayed): 1, .esp(.authenticationFailed): 1, .lifetimeExpired: 2,
                                            .esp(.noSA): 1, .plaintextProtected: 1], "\(out.delta)")
        let expected = [a[0], b[0], a[1], b[1], b[2], a[2], a[3]]
        let sent = out.sent[h.p] ?? []
        #expect(sent.count == expected.count, "forwarded \(sent.count): \(out.delta)")
        #expect(out.sent[h.u]?.isEmpty ?? true, "nothing back out of the unprotected port")
        // The hard limit's EXPIRE names the installed record: retires that SA.
        let expiries = h.gateway.drainEvents().filter { $0.kind == UInt8(SL_EVENT_EXPIRE_HARD) }
        #expect(expiries.count == 1 && expiries.first?.policy_id == 0x7502, "\(expiries.map(\.policy_id))")
        if let e = expiries.first {
            let retired = session.ipsec.expire(spi: e.policy_id, token: e.sa_token, direction: .inbound)
            #expect(retired.map(\.spi.rawValue) == [0x7502], "\(retired)")
        }
        let egress = Egress(port: h.p, destination: GatewayHarness.protectedNeighbor4.1, source: h.portMAC(h.p))
        for (i, (frame, input)) in zip(sent, expected).enumerated() {
            checkForwarded(frame, input: input, egress: egress, "forwarded packet \(i)")
        }
    }
}

extension EALSuites.GatewayTests {
    /// RFC 4301 §5.2 after decapsulation: the inbound SPD's first match for
    /// the inner packet must protect with the SA it came on. Checking only the
    /// selectors of the SA's own policies would let through traffic that an
    /// earlier discard or bypass policy covers, or that the SPD assigns to
    /// another SA, when it also falls inside one of the SA's policies.
    @Test func decapsulatedTrafficMustBeTheSPDsForThatSA() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let key = "0x" + String(repeating: "6d", count: 20)  // TunnelPeer's
        let text = h.baseConfigText + """

        sa add spi 0x7601 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7602 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir in src 198.51.100.9/32 dst 10.1.0.0/16 priority 1 action discard
        sp add dir in src 198.51.100.10/32 dst 10.1.0.0/16 priority 2 action bypass
        sp add dir in src 198.51.100.64/26 dst 10.1.0.0/16 priority 3 action protect spi 0x7602
        sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 5 action protect spi 0x7601
        """
        _ = try h.installSession(text, name: "decorrelated")
        let peer = try TunnelPeer()
        func inner(_ host: Int, _ n: Int) -> [UInt8] {
            h.frame4("198.51.100.\(host)", "10.1.0.\(n)", payload: 50 + n, pattern: .incrementing(from: UInt8(n)),
                     ethDst: h.portMAC(h.u))
        }
        let ok1 = inner(7, 1), ok2 = inner(70, 2)
        let burst = [
            peer.frame(spi: 0x7601, inner: ok1),        // the SPD's first match: 0x7601's policy
            peer.frame(spi: 0x7601, inner: inner(9, 3)),   // first match: discard
            peer.frame(spi: 0x7601, inner: inner(10, 4)),  // first match: bypass
            peer.frame(spi: 0x7601, inner: inner(70, 5)),  // first match: 0x7602's policy
            peer.frame(spi: 0x7602, inner: ok2),        // and on 0x7602 it belongs
        ]
        let out = try h.inject(burst, on: h.unprotected)
        #expect(out.delta.rxPackets == UInt64(burst.count), "\(out.delta)")
        #expect(out.delta.dropsByReason == [.esp(.selectorMismatch): 3], "\(out.delta)")
        let sent = out.sent[h.p] ?? []
        #expect(sent.count == 2, "forwarded \(sent.count): \(out.delta)")
        let egress = Egress(port: h.p, destination: GatewayHarness.protectedNeighbor4.1, source: h.portMAC(h.p))
        for (i, (frame, input)) in zip(sent, [ok1, ok2]).enumerated() {
            checkForwarded(frame, input: input, egress: egress, "forwarded packet \(i)")
        }
    }

    /// An inbound SA serves any number of protect policies, naming its SPI
    /// or its reqid: a CHILD_SA with three traffic-selector pairs installs
    /// three `in` and three `fwd` policies (Linux-style). Before, an SA
    /// held at most four policies and such a configuration did not load.
    /// Traffic whose first match names another SA's SPI or reqid is refused.
    @Test func anInboundSAServesAnyNumberOfPolicies() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let key = "0x" + String(repeating: "6d", count: 20)  // TunnelPeer's
        var text = h.baseConfigText + """

        sa add spi 0x7611 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) reqid 11
        sa add spi 0x7612 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) reqid 12
        sp add dir in src 198.51.100.128/27 dst 10.1.5.0/24 priority 1 action protect spi 0x7612
        sp add dir in src 198.51.100.96/27 dst 10.1.4.0/24 priority 1 action protect reqid 12
        """
        for (n, target) in [(1, "spi 0x7611"), (2, "reqid 11"), (3, "spi 0x7611")] {
            for dir in ["in", "fwd"] {
                text += "\nsp add dir \(dir) src 198.51.100.\((n - 1) * 32)/27 dst 10.1.\(n).0/24 priority 2 action protect \(target)"
            }
        }
        _ = try h.installSession(text, name: "many-policies")
        let peer = try TunnelPeer()
        func inner(_ n: Int) -> [UInt8] {
            h.frame4("198.51.100.\((n - 1) * 32 + 7)", "10.1.\(n).9", payload: 40 + n, pattern: .incrementing(from: UInt8(n)),
                     ethDst: h.portMAC(h.u))
        }
        let out = try h.inject((1...5).map { peer.frame(spi: 0x7611, inner: inner($0)) }, on: h.unprotected)
        #expect(out.delta.dropsByReason == [.esp(.selectorMismatch): 2], "\(out.delta)")
        let sent = out.sent[h.p] ?? []
        #expect(sent.count == 3, "forwarded \(sent.count): \(out.delta)")
        let egress = Egress(port: h.p, destination: GatewayHarness.protectedNeighbor4.1, source: h.portMAC(h.p))
        for (i, (frame, input)) in zip(sent, [inner(1), inner(2), inner(3)]).enumerated() {
            checkForwarded(frame, input: input, egress: egress, "forwarded packet \(i)")
        }
        // And on the SAs they name, the other two are taken.
        let others = try h.inject([peer.frame(spi: 0x7612, inner: inner(4)), peer.frame(spi: 0x7612, inner: inner(5))],
                                  on: h.unprotected)
        #expect(others.delta.totalDrops == 0 && others.sent[h.p]?.count == 2, "\(others.delta)")
    }
}
