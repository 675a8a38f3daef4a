// A packet from one of the gateway's own addresses (a `local` route: the
// ports' addresses) is dropped as `own_source` on every port, with or
// without a reverse-path check: spoofed, or the gateway's own packet come
// back. On the plain forwarding path (fast and general), on both IPsec
// paths, and for the inner packet an SA opened. A filter in the snapshot
// answers most sources; an address that shares its bit with an own one
// is asked of the route table and forwarded.

import CShims
import Command
import Control
import Dataplane
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// The harness's own addresses: 10.0.0.1 and 2001:db8:a::1 on p,
    /// 192.0.2.1 and 2001:db8:b::1 on u.
    @Test func ownSourcesAreDroppedWithoutARouteCheck() throws {
        let toU4 = "198.51.100.4", toU6 = "2001:db8:100::4", toP4 = "10.1.2.3", toP6 = "2001:db8:1::3"
        let routerAlert: [UInt8] = [0x94, 0x04, 0x00, 0x00]  // options: the general path
        try expectDropped([
            h.frame4("10.0.0.1", toU4), h.frame4("192.0.2.1", toU4),
            h.frame4("10.0.0.1", toU4, options: routerAlert),
            h.frame6("2001:db8:a::1", toU6), h.frame6("2001:db8:b::1", toU6),
        ], reason: .ownSource, on: h.protected)
        try expectDropped([
            h.frame4("192.0.2.1", toP4, ethDst: h.portMAC(h.u)),
            h.frame6("2001:db8:b::1", toP6, ethDst: h.portMAC(h.u)),
        ], reason: .ownSource, on: h.unprotected)
        // Positive controls: the neighbours of the own addresses, and a
        // source whose filter bit is an own address's (the route table
        // says it is not).
        let bit = sl_own_bit4(IPv4Address("10.0.0.1")!.value)
        let twin = try #require((UInt32(0x0A01_0000)...0x0A01_FFFF).first { sl_own_bit4($0) == bit && $0 & 0xFF != 0 })
        let twinText = IPv4Address(twin).description
        try expectForwarded([
            (h.frame4("10.0.0.9", toU4), toUnprotected4, "10.0.0.9"),
            (h.frame4(twinText, toU4), toUnprotected4, "\(twinText), the filter's twin of 10.0.0.1"),
            (h.frame4("10.0.0.9", toU4, options: routerAlert), toUnprotected4, "10.0.0.9, options"),
            (h.frame6("2001:db8:a::9", toU6), toUnprotected6, "2001:db8:a::9"),
        ], on: h.protected)
    }

    @Test func ownSourcesOnTheIPsecPaths() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let sealed = try installSourceCheckSA(spi: 0x7006, name: "own")
        // The inner source of an authenticated packet, within the SA's
        // selectors; the outer source of ESP; a bypassed packet either way.
        var outerOwn = sealed("10.9.9.9")
        outerOwn.replaceSubrange(26..<30, with: [192, 0, 2, 1])
        Self.fixChecksum(&outerOwn)
        try expectDropped([sealed("10.0.0.1"), sealed("192.0.2.1"), outerOwn,
                           h.frame4("192.0.2.1", "10.1.200.1", ethDst: h.portMAC(h.u))],
                          reason: .ownSource, on: h.unprotected)
        try expectDropped([h.frame4("10.0.0.1", "198.51.100.4")], reason: .ownSource, on: h.protected)
        // Positive controls on the same paths.
        let opened = try h.inject([sealed("10.9.9.9"), h.frame4("203.0.113.9", "10.1.200.1", ethDst: h.portMAC(h.u))],
                                  on: h.unprotected)
        #expect(opened.delta.txPackets == 2 && opened.delta.totalDrops == 0, "\(opened.delta)")
        try expectForwarded([(h.frame4("10.0.0.4", "198.51.100.4"), toUnprotected4, "outbound bypass")], on: h.protected)
    }
}

/// The IPv6 filter keys on the whole address: ::1 on 4,096 other /64s
/// (routers' usual address) shares the bit of the gateway's own
/// 2001:db8:a::1 about as often as any address would (1 in 256), not always.
@Test func theIPv6OwnAddressFilterKeysOnTheWholeAddress() {
    func bit(_ text: String) -> UInt32 {
        let a = IPv6Address(text)!
        return withUnsafeBytes(of: (a.high.bigEndian, a.low.bigEndian)) {
            UInt32(sl_own_bit6($0.baseAddress!.assumingMemoryBound(to: UInt8.self)))
        }
    }
    let own = bit("2001:db8:a::1")
    let others = (0..<4096).map { String(format: "2001:db8:%x:%x::1", 0x100 + $0 / 256, $0 % 256) }
    let sharing = others.filter { bit($0) == own }.count
    #expect(sharing < 64, "\(sharing) of 4,096 ::1 addresses share the own address's bit")
    #expect(Set(others.map(bit)).count > 200, "they spread over the filter's 256 bits")
}
