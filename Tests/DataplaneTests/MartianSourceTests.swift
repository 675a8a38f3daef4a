// Sources no router forwards from (RFC 1812 §5.3.7, RFC 4291 §2.5.6): IPv4
// 0/8, 127/8, 224/4 and 255.255.255.255; IPv6 ::, ::1, fe80::/10, ff00::/8.
// Dropped as `martian_source` on the plain forwarding path and on both IPsec
// paths, including the inner packet an SA opened; the neighbours of each
// range are forwarded.

import Command
import Control
import Dataplane
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    @Test func martianSourcesAreDropped() throws {
        let dst4 = "198.51.100.4", dst6 = "2001:db8:100::4"
        try expectDropped([
            h.frame4("0.1.2.3", dst4), h.frame4("0.0.0.0", dst4), h.frame4("127.0.0.1", dst4),
            h.frame4("224.0.0.5", dst4), h.frame4("239.255.255.255", dst4), h.frame4("255.255.255.255", dst4),
            h.frame4("127.1.2.3", dst4, ttl: 1), h.frame4("224.1.1.1", dst4, options: [1, 1, 1, 1], vlan: VLANTag(id: 7)),
            h.frame6("::", dst6), h.frame6("::1", dst6), h.frame6("fe80::1", dst6), h.frame6("febf:ffff::1", dst6),
            h.frame6("ff02::1", dst6), h.frame6("ff0e::1", dst6, hopLimit: 1),
        ], reason: .martianSource)
        try expectForwarded([
            "1.0.0.0", "126.255.255.255", "128.0.0.1", "223.255.255.255", "240.0.0.1", "255.255.255.254",
        ].map { (h.frame4($0, dst4), toUnprotected4, "from \($0)") } + [
            "::2", "fe7f::1", "fec0::1", "fe00::1", "2001:db8:a::4",
        ].map { (h.frame6($0, dst6), toUnprotected6, "from \($0)") }, on: h.protected)
    }

    /// The source checks' IPsec set-up: an inbound tunnel SA `spi` from
    /// 192.0.2.254 protecting 10.1.0.0/16 (10.1.128.0/17 bypassed), outbound
    /// bypass to 198.51.100.0/24. Returns a sealer of inner IPv4 packets
    /// from a source to 10.1.2.3, as the peer sends them.
    func installSourceCheckSA(spi: UInt32, name: String) throws -> (String) -> [UInt8] {
        let key = "0x" + String(repeating: "6d", count: 20)
        let hex = "0x" + String(spi, radix: 16)
        let text = h.baseConfigText + """

        sa add spi \(hex) dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir in src 0.0.0.0/0 dst 10.1.0.0/16 priority 3 action protect spi \(hex)
        sp add dir in src 0.0.0.0/0 dst 10.1.128.0/17 priority 2 action bypass
        sp add dir out src 0.0.0.0/0 dst 198.51.100.0/24 priority 4 action bypass
        """
        _ = try h.installSession(text, name: name)
        let peer = try TunnelPeer()
        let h = self.h
        return { src in peer.frame(spi: spi, inner: h.frame4(src, "10.1.2.3", ethDst: h.portMAC(h.u))) }
    }

    @Test func martianSourcesOnTheIPsecPaths() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let sealed = try installSourceCheckSA(spi: 0x7005, name: "martian")
        // The inner source of an authenticated packet, within the SA's selectors.
        try expectDropped([sealed("127.0.0.1"), sealed("224.0.0.1")], reason: .martianSource, on: h.unprotected)
        var outerMartian = sealed("10.9.9.9")
        outerMartian.replaceSubrange(26..<30, with: [0, 0, 0, 1])  // outer source 0.0.0.1
        Self.fixChecksum(&outerMartian)
        try expectDropped([outerMartian, h.frame4("224.0.0.9", "10.1.200.1", ethDst: h.portMAC(h.u))],
                          reason: .martianSource, on: h.unprotected)
        try expectDropped([h.frame4("127.0.0.1", "198.51.100.4")], reason: .martianSource, on: h.protected)
        // Positive controls on the same paths.
        let opened = try h.inject([sealed("10.9.9.9"), h.frame4("203.0.113.9", "10.1.200.1", ethDst: h.portMAC(h.u))],
                                  on: h.unprotected)
        #expect(opened.delta.txPackets == 2, "\(opened.delta)")
        #expect(opened.delta.totalDrops == 0, "\(opened.delta)")
        #expect(opened.sent[h.p]?.count == 2, "\(opened.sent.mapValues(\.count))")
        try expectForwarded([(h.frame4("10.0.0.4", "198.51.100.4"), toUnprotected4, "outbound bypass")], on: h.protected)
    }
}
