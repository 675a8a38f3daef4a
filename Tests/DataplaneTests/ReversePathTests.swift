// Unicast reverse-path checks (`port N rpf loose|strict`, RFC 3704 §2.2 and
// §2.4): a packet whose source fails the check of the port it arrived on is
// dropped as `reverse_path`, on the plain forwarding path (its fast path and
// its general path) and on both IPsec paths. The same packets are forwarded
// with the check off, so it is the check that drops them.
//
// The harness's routes: 10.1.0.0/16 and 2001:db8:1::/48 via the protected
// neighbour (port p); 198.51.100.0/24 and 2001:db8:100::/48 via the
// unprotected one (port u); 203.0.113.0/24 via 192.0.2.77, which has no
// neighbour entry; the ports' own addresses and connected prefixes.

import Command
import Control
import Dataplane
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// `port p rpf strict`, `port u rpf loose`.
    var reversePathConfig: String { h.baseConfigText + "\nport \(h.p) rpf strict\nport \(h.u) rpf loose\n" }

    @Test func reversePathChecksDropSpoofedSources() throws {
        defer { try? h.publish(h.baseConfigText) }
        let toU4 = "198.51.100.4", toU6 = "2001:db8:100::4", toP4 = "10.1.2.3", toP6 = "2001:db8:1::3"
        let routerAlert: [UInt8] = [0x94, 0x04, 0x00, 0x00]  // options: the general path
        // Sources that fail: strict on p, loose on u.
        let spoofedOnP = [
            h.frame4("198.51.100.7", toU4),                       // routed out of u
            h.frame4("198.51.100.7", toU4, options: routerAlert),
            h.frame4("203.0.113.5", toU4),                        // routed via a gateway with no neighbour entry
            h.frame4("100.64.1.1", toU4),                         // no route
            h.frame6("2001:db8:100::7", toU6), h.frame6("2001:db8:ffff::1", toU6),
        ]
        let spoofedOnU = [
            h.frame4("100.64.1.1", toP4, options: routerAlert, ethDst: h.portMAC(h.u)),  // no route
            h.frame6("2001:db8:ffff::1", toP6, ethDst: h.portMAC(h.u)),
        ]
        // Negative control: with the checks off, these are forwarded.
        let off = try h.inject(spoofedOnP, on: h.protected)
        #expect(off.delta.txPackets == UInt64(spoofedOnP.count) && off.delta.totalDrops == 0, "checks off: \(off.delta)")
        let offU = try h.inject(spoofedOnU, on: h.unprotected)
        #expect(offU.delta.txPackets == UInt64(spoofedOnU.count) && offU.delta.totalDrops == 0, "checks off: \(offU.delta)")

        try h.publish(reversePathConfig)
        try expectDropped(spoofedOnP, reason: .reversePath, on: h.protected)
        try expectDropped(spoofedOnU, reason: .reversePath, on: h.unprotected)
        // Sources that pass: strict, routed out of p (through the neighbour,
        // or on p's link with no neighbour entry).
        try expectForwarded([
            (h.frame4("10.1.2.3", toU4), toUnprotected4, "routed via p"),
            (h.frame4("10.1.2.3", toU4, options: routerAlert), toUnprotected4, "routed via p, options"),
            (h.frame4("10.0.0.9", toU4), toUnprotected4, "on p's link"),
            (h.frame6("2001:db8:1::3", toU6), toUnprotected6, "routed via p"),
            (h.frame6("2001:db8:a::99", toU6), toUnprotected6, "on p's link"),
        ], on: h.protected)
        // Loose: routed out of any port, a gateway without neighbour entry included.
        try expectForwarded([
            (h.frame4("198.51.100.7", toP4, ethDst: h.portMAC(h.u)), toProtected4, "routed via u"),
            (h.frame4("10.1.9.9", toP4, ethDst: h.portMAC(h.u)), toProtected4, "routed via p"),
            (h.frame4("203.0.113.5", toP4, ethDst: h.portMAC(h.u)), toProtected4, "no neighbour entry"),
            (h.frame6("2001:db8:100::7", toP6, ethDst: h.portMAC(h.u)), toProtected6, "routed via u"),
        ], on: h.unprotected)
        // The config text says it back.
        let config = try GatewayConfig.load(text: reversePathConfig, name: "rpf")
        #expect(config.ports[h.p]?.rpf == .strict && config.ports[h.u]?.rpf == .loose)
        let again = try GatewayConfig.load(text: config.commands.map(\.description).joined(separator: "\n"), name: "again")
        #expect(again.ports == config.ports)
    }

    @Test func reversePathChecksOnTheIPsecPaths() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let key = "0x" + String(repeating: "6d", count: 20)
        let text = reversePathConfig + """

        sa add spi 0x7005 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir in src 0.0.0.0/0 dst 10.1.0.0/16 priority 3 action protect spi 0x7005
        sp add dir in src 0.0.0.0/0 dst 10.1.128.0/17 priority 2 action bypass
        sp add dir out src 0.0.0.0/0 dst 198.51.100.0/24 priority 4 action bypass
        """
        try h.publish(text)
        _ = try h.installSession(text, name: "rpf")
        let peer = try TunnelPeer()
        let esp = peer.frame(spi: 0x7005, inner: h.frame4("198.51.100.9", "10.1.2.3", ethDst: h.portMAC(h.u)))
        var spoofedESP = esp
        spoofedESP.replaceSubrange(26..<30, with: [100, 64, 1, 1])  // outer source with no route
        Self.fixChecksum(&spoofedESP)
        try expectDropped([spoofedESP, h.frame4("100.64.1.1", "10.1.200.1", ethDst: h.portMAC(h.u))],
                          reason: .reversePath, on: h.unprotected)
        try expectDropped([h.frame4("198.51.100.7", "198.51.100.4")], reason: .reversePath, on: h.protected)
        // Positive controls on the same paths: the ESP packet from the peer is
        // opened, the bypassed packets pass.
        let opened = try h.inject([esp, h.frame4("203.0.113.9", "10.1.200.1", ethDst: h.portMAC(h.u))], on: h.unprotected)
        #expect(opened.delta.txPackets == 2 && opened.delta.totalDrops == 0, "\(opened.delta)")
        try expectForwarded([(h.frame4("10.1.0.4", "198.51.100.4"), toUnprotected4, "outbound bypass")], on: h.protected)
    }
}
