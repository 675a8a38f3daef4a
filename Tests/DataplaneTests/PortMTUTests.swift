// Port MTUs (`port N mtu M`, 1500 by default): a packet too big for the port
// it would leave by is not sent. IPv4 with DF and IPv6 get an ICMP error back
// (fragmentation needed, RFC 1191; Packet Too Big, RFC 4443) from the address
// of the port the error leaves by; IPv4 without DF leaves in fragments
// (FragmentationTests checks the pieces). On the outbound ESP path the size checked is the ESP
// packet's and the MTU reported the largest inner packet that fits. The
// checksums of the errors are checked with a plain RFC 1071 sum written here.

import CShims
import Command
import Control
import Dataplane
import Glibc
import IPsec
import Packet
import Testing

/// RFC 1071: the one's-complement sum of 16-bit big-endian words, folded.
private func onesComplementSum(_ bytes: [UInt8], initial: UInt32 = 0) -> UInt16 {
    var sum = initial
    var i = 0
    while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    while sum > 0xFFFF { sum = (sum >> 16) + (sum & 0xFFFF) }
    return UInt16(sum)
}

private func be16(_ b: [UInt8], _ at: Int) -> Int { Int(b[at]) << 8 | Int(b[at + 1]) }

/// The ICMP error a test expects.
enum ExpectedICMPError {
    /// "Fragmentation needed and DF set" (ICMPv4 3/4, the MTU in the low 16
    /// bits of the rest of the header) or Packet Too Big (ICMPv6 2/0, the MTU).
    case tooBig(mtu: Int)
    /// Time Exceeded in transit (ICMPv4 11/0, ICMPv6 3/0), rest of the header 0.
    case timeExceeded

    /// Type, code and the 32-bit rest of the header.
    func fields(ipv6: Bool) -> (type: UInt8, code: UInt8, rest: Int) {
        switch self {
        case .tooBig(let mtu): ipv6 ? (2, 0, mtu) : (3, 4, mtu)
        case .timeExceeded: ipv6 ? (3, 0, 0) : (11, 0, 0)
        }
    }
}

extension EALSuites.GatewayTests {
    /// Checks an ICMPv4 error frame (`error`) answering `original` (a frame).
    func expectICMPv4Error(_ frame: [UInt8], _ error: ExpectedICMPError, answering original: [UInt8], from source: [UInt8],
                           sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let want = error.fields(ipv6: false)
        let ip = Array(frame.dropFirst(14))
        let quoted = Array(original.dropFirst(14))
        #expect(be16(frame, 12) == 0x0800, sourceLocation: sourceLocation)
        #expect(ip[0] == 0x45 && ip[9] == 1 && ip[8] == 64, "header \(ip.prefix(20))", sourceLocation: sourceLocation)
        #expect(onesComplementSum(Array(ip.prefix(20))) == 0xFFFF, "IPv4 header checksum", sourceLocation: sourceLocation)
        #expect(be16(ip, 2) == ip.count, "total length", sourceLocation: sourceLocation)
        #expect(Array(ip[12..<16]) == source, "source", sourceLocation: sourceLocation)
        #expect(Array(ip[16..<20]) == Array(quoted[12..<16]), "back to the packet's source", sourceLocation: sourceLocation)
        let icmp = Array(ip.dropFirst(20))
        #expect(icmp[0] == want.type && icmp[1] == want.code, "type \(icmp[0]) code \(icmp[1])", sourceLocation: sourceLocation)
        #expect(be16(icmp, 4) << 16 | be16(icmp, 6) == want.rest, "rest of the header (next-hop MTU \(be16(icmp, 6)))",
                sourceLocation: sourceLocation)
        #expect(onesComplementSum(icmp) == 0xFFFF, "ICMP checksum", sourceLocation: sourceLocation)
        // RFC 1812 §4.3.2.3: as much of the packet as fits in 576 bytes.
        #expect(ip.count == min(576, 28 + quoted.count), sourceLocation: sourceLocation)
        #expect(Array(icmp.dropFirst(8)) == Array(quoted.prefix(ip.count - 28)), "quote", sourceLocation: sourceLocation)
    }

    /// Checks an ICMPv6 error frame (`error`) answering `original` (a frame).
    func expectICMPv6Error(_ frame: [UInt8], _ error: ExpectedICMPError, answering original: [UInt8], from source: [UInt8],
                           sourceLocation: Testing.SourceLocation = #_sourceLocation) {
        let want = error.fields(ipv6: true)
        let ip = Array(frame.dropFirst(14))
        let quoted = Array(original.dropFirst(14))
        #expect(be16(frame, 12) == 0x86DD, sourceLocation: sourceLocation)
        #expect(ip[0] >> 4 == 6 && ip[6] == 58, sourceLocation: sourceLocation)
        #expect(be16(ip, 4) == ip.count - 40, "payload length", sourceLocation: sourceLocation)
        #expect(Array(ip[8..<24]) == source, "source", sourceLocation: sourceLocation)
        #expect(Array(ip[24..<40]) == Array(quoted[8..<24]), "back to the packet's source", sourceLocation: sourceLocation)
        let icmp = Array(ip.dropFirst(40))
        #expect(icmp[0] == want.type && icmp[1] == want.code, "type \(icmp[0]) code \(icmp[1])", sourceLocation: sourceLocation)
        #expect(be16(icmp, 4) << 16 | be16(icmp, 6) == want.rest, "rest of the header (MTU)", sourceLocation: sourceLocation)
        // Pseudo-header: addresses, upper-layer length, next header 58.
        var pseudo = Array(ip[8..<40])
        pseudo += [0, 0, UInt8(icmp.count >> 8), UInt8(icmp.count & 0xFF), 0, 0, 0, 58]
        #expect(onesComplementSum(pseudo + icmp) == 0xFFFF, "ICMPv6 checksum", sourceLocation: sourceLocation)
        #expect(ip.count == min(1280, 48 + quoted.count), sourceLocation: sourceLocation)
        #expect(Array(icmp.dropFirst(8)) == Array(quoted.prefix(ip.count - 48)), "quote", sourceLocation: sourceLocation)
    }

    /// Sends a too-big IPv4 (DF) and IPv6 packet from the protected side and
    /// checks that neither leaves, both count as `packet_too_big`, and the
    /// errors come back from the protected port's addresses announcing `mtu`,
    /// quoting `quoted4` and `quoted6` (the packets as they were when refused).
    func expectAnswered(_ big4: [UInt8], _ big6: [UInt8], quoting quoted4: [UInt8], _ quoted6: [UInt8], mtu: Int,
                        sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        let out = try h.inject([big4, big6], on: h.protected)
        #expect(out.delta.dropsByReason == [.packetTooBig: 2], "\(out.delta)", sourceLocation: sourceLocation)
        #expect(out.sent[h.u, default: []].isEmpty, "nothing too big leaves", sourceLocation: sourceLocation)
        let back = out.sent[h.p] ?? []
        #expect(back.count == 2, "\(out.sent.mapValues(\.count))", sourceLocation: sourceLocation)
        guard back.count == 2 else { return }
        // To the neighbour 10.1.0.0/16 and 2001:db8:1::/48 are routed through.
        #expect(Array(back[0].prefix(6)) == GatewayHarness.protectedNeighbor4.1.description.split(separator: ":").map { UInt8($0, radix: 16)! },
                sourceLocation: sourceLocation)
        expectICMPv4Error(back[0], .tooBig(mtu: mtu), answering: quoted4, from: [10, 0, 0, 1], sourceLocation: sourceLocation)
        expectICMPv6Error(back[1], .tooBig(mtu: mtu), answering: quoted6, from: ipv6("2001:db8:a::1").bytes,
                          sourceLocation: sourceLocation)
    }

    /// An outbound tunnel SA `spi` (AES-128-GCM, to 192.0.2.254) protecting
    /// 10.1.0.0/16 → 198.51.100.0/24 and 2001:db8:1::/48 → 2001:db8:100::/48.
    func tunnelSAText(spi: UInt32) -> String {
        let key = "0x" + String(repeating: "5a", count: 20)
        let hex = "0x" + String(spi, radix: 16)
        return """

        sa add spi \(hex) dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 1 action protect spi \(hex)
        sp add dir out src 2001:db8:1::/48 dst 2001:db8:100::/48 priority 1 action protect spi \(hex)
        """
    }

    /// Under `tunnelSAText`'s SA on a port of MTU 1500: IPv4 (DF) and IPv6
    /// packets whose ESP packets would be 1501 bytes are answered with 1446,
    /// the largest that fits, quoting them as they were about to be sealed
    /// (TTL already −1). Returns the IPv4 one.
    @discardableResult
    func expectSealedTooBigAnswered(sourceLocation: Testing.SourceLocation = #_sourceLocation) throws -> [UInt8] {
        let big4 = h.frame4("10.1.2.3", "198.51.100.4", payload: 1447 - 28)
        let big6 = h.frame6("2001:db8:1::3", "2001:db8:100::4", payload: 1447 - 48)
        var quoted4 = big4
        quoted4[14 + 8] -= 1
        Self.fixChecksum(&quoted4)
        var quoted6 = big6
        quoted6[14 + 7] -= 1
        try expectAnswered(big4, big6, quoting: quoted4, quoted6, mtu: 1446, sourceLocation: sourceLocation)
        return big4
    }

    /// The ICMP error budget refills at 1000 a second: give it time to be full.
    func refillICMPBudget() { usleep(80_000) }

    @Test func plainForwardingHonoursThePortMTU() throws {
        defer { try? h.publish(h.baseConfigText) }
        try h.publish(h.baseConfigText + "\nport \(h.u) mtu 1280\n")
        refillICMPBudget()
        let dst4 = "198.51.100.4", dst6 = "2001:db8:100::4"
        // Exactly the MTU goes through; one byte more does not.
        try expectForwarded([
            (h.frame4("10.1.2.3", dst4, payload: 1280 - 28), toUnprotected4, "IPv4 of 1280"),
            (h.frame4("10.1.2.3", dst4, payload: 1280 - 28, dontFragment: false), toUnprotected4, "IPv4 of 1280, no DF"),
            (h.frame6("2001:db8:1::3", dst6, payload: 1280 - 48), toUnprotected6, "IPv6 of 1280"),
        ], on: h.protected)
        let big4 = h.frame4("10.1.2.3", dst4, payload: 1281 - 28)
        let big6 = h.frame6("2001:db8:1::3", dst6, payload: 1400)
        try expectAnswered(big4, big6, quoting: big4, big6, mtu: 1280)
        // Without DF an IPv4 packet is fragmented: pieces of 1276 and 25 bytes.
        let cut = try h.inject([h.frame4("10.1.2.3", dst4, payload: 1281 - 28, dontFragment: false)], on: h.protected)
        #expect(cut.sent[h.u]?.map(\.count) == [14 + 1276, 14 + 25] && cut.delta.fragmented == 1, "\(cut.delta)")
        // No error about an ICMP error (here "port unreachable"), nor about a later fragment.
        var icmpError = h.frame4("10.1.2.3", dst4, transport: .raw(.icmp), payload: 1300)
        icmpError[34] = 3; icmpError[35] = 3
        var laterFragment = big4
        laterFragment[14 + 6] = 0x40; laterFragment[14 + 7] = 0x10  // DF, offset 16 × 8
        Self.fixChecksum(&laterFragment)
        try expectDropped([icmpError, laterFragment], reason: .packetTooBig)
        // IPv6 (RFC 4443 §2.4 e): no error about an ICMPv6 error (here
        // Destination Unreachable) behind a Destination Options header, a
        // first or atomic Fragment header, or both; nor about a later fragment.
        var error6 = h.frame6("2001:db8:1::3", dst6, transport: .raw(.icmpv6), payload: 1400)
        error6[54] = 1; error6[55] = 4
        let options: [UInt8] = [60, 0, 1, 4, 0, 0, 0, 0]     // Destination Options: PadN
        let first: [UInt8] = [44, 0, 0, 1, 0, 0, 0, 9]        // Fragment: offset 0, M
        let atomic: [UInt8] = [44, 0, 0, 0, 0, 0, 0, 9]       // Fragment: offset 0, no M
        let later: [UInt8] = [44, 0, 0x05, 0x00, 0, 0, 0, 9]  // Fragment: offset 160
        /// `frame` with `headers` (8 bytes each) after its IPv6 header, in that
        /// order. A header's first byte says what it is (60 or 44) until chained.
        func chained(_ headers: [[UInt8]], _ frame: [UInt8]) -> [UInt8] {
            var out = Array(frame[..<54])
            var kinds = headers.map { $0[0] }
            kinds.append(frame[14 + 6])
            out[14 + 6] = kinds[0]
            for (i, h) in headers.enumerated() { out += [kinds[i + 1]] + h.dropFirst() }
            out += frame[54...]
            let length = out.count - 54
            out[18] = UInt8(length >> 8); out[19] = UInt8(length & 0xFF)
            return out
        }
        var echo6 = h.frame6("2001:db8:1::3", dst6, transport: .raw(.icmpv6), payload: 1400)
        echo6[54] = 128; echo6[55] = 0
        try expectDropped([chained([options], error6), chained([first], error6), chained([atomic], error6),
                           chained([options, first], error6), chained([first, options], error6),
                           chained([later], echo6)], reason: .packetTooBig)
        // An echo request behind the same headers is a query: answered.
        refillICMPBudget()
        let queries = try h.inject([chained([options], echo6), chained([atomic], echo6), chained([options, first], echo6)],
                                   on: h.protected)
        #expect(queries.sent[h.p]?.count == 3 && queries.delta.dropsByReason == [.packetTooBig: 3], "\(queries.delta)")
        // An echo request is a query: it is answered.
        var echo = h.frame4("10.1.2.3", dst4, transport: .raw(.icmp), payload: 1300)
        echo[34] = 8; echo[35] = 0
        let answered = try h.inject([echo], on: h.protected)
        #expect(answered.sent[h.p]?.count == 1, "\(answered.delta)")
    }

    @Test func outboundESPChecksTheSealedSize() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let text = h.baseConfigText + tunnelSAText(spi: 0x7101)
        let session = try h.installSession(text, name: "mtu")
        refillICMPBudget()
        // IPv4 tunnel, AES-GCM: 20 + 16 + padding + 2 + 16. An inner packet of
        // 1446 bytes makes an ESP packet of exactly 1500.
        let fits = h.frame4("10.1.2.3", "198.51.100.4", payload: 1446 - 28)
        let sealed = try h.inject([fits], on: h.protected)
        #expect(sealed.delta.totalDrops == 0, "\(sealed.delta)")
        #expect(sealed.sent[h.u]?.first.map { $0.count - 14 } == 1500, "\(sealed.sent.mapValues { $0.map(\.count) })")
        if let esp = sealed.sent[h.u]?.first {
            #expect(esp[14 + 9] == 50 && Array(esp[34..<38]) == [0, 0, 0x71, 0x01], "ESP with SPI 0x7101")
        }
        let big4 = try expectSealedTooBigAnswered()
        // Without DF inside (`df copy`: none outside), the ESP packet is cut in two.
        let cut = try h.inject([h.frame4("10.1.2.3", "198.51.100.4", payload: 1447 - 28, dontFragment: false)], on: h.protected)
        #expect(cut.sent[h.u]?.count == 2 && cut.delta.fragmented == 1 && cut.delta.totalDrops == 0, "\(cut.delta)")
        // A larger MTU on the unprotected port lets the same packet through.
        try session.install(try GatewayConfig.load(text: text + "\nport \(h.u) mtu 1504\n", name: "mtu"))
        let after = try h.inject([big4], on: h.protected)
        #expect(after.sent[h.u]?.first.map { $0.count - 14 } == 1504, "\(after.delta)")
    }

    /// While the next hop's neighbour is still being resolved (`resolve on`,
    /// no neighbour entry yet) the port is known, and so is its MTU: a packet
    /// too big for it is answered at once, plain or to be sealed, instead of
    /// being held for the neighbour and dropped when it answers. One that
    /// fits is held (positive control).
    @Test func tooBigIsAnsweredWhileTheNeighborIsResolved() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let unresolved = unresolvedConfigText + "\nport \(h.u) resolve on\n"
        // Sealed: the ESP packet's size against the port's MTU (1500).
        let dst4 = "198.51.100.4", dst6 = "2001:db8:100::4"
        let text = unresolved + tunnelSAText(spi: 0x7102)
        try h.publish(unresolved)
        _ = h.gateway.agentReceive()  // what an earlier test left
        _ = try h.installSession(text, name: "mtu-resolving")
        refillICMPBudget()
        let sealed = try h.inject([h.frame4("10.1.2.3", dst4, payload: 1446 - 28)], on: h.protected)
        #expect(sealed.delta.toAgent == 1 && sealed.delta.totalDrops == 0, "\(sealed.delta)")
        try expectSealedTooBigAnswered()
        // Plain forwarding (no SAs), the port's MTU 1280.
        try h.gateway.publish(ipsec: nil)
        try h.publish(unresolved + "port \(h.u) mtu 1280\n")
        refillICMPBudget()
        let held = try h.inject([h.frame4("10.1.2.3", dst4, payload: 1280 - 28)], on: h.protected)
        #expect(held.delta.toAgent == 1 && held.delta.totalDrops == 0, "\(held.delta)")
        let big4 = h.frame4("10.1.2.3", dst4, payload: 1281 - 28)
        let big6 = h.frame6("2001:db8:1::3", dst6, payload: 1400)
        try expectAnswered(big4, big6, quoting: big4, big6, mtu: 1280)
        // One that would be cut is dropped whole: its pieces could not all
        // be sure of a place in the hold.
        try expectDropped([h.frame4("10.1.2.3", dst4, payload: 1281 - 28, dontFragment: false)], reason: .noNeighbor)
        // On a port that does not resolve nothing is held: no answer either.
        try h.publish(unresolved.replacingOccurrences(of: "port \(h.u) resolve on", with: "") + "port \(h.u) mtu 1280\n")
        try expectDropped([big4, big6], reason: .noNeighbor)
        _ = h.gateway.agentReceive()
    }

    @Test func icmpErrorsAreRateLimited() throws {
        defer { try? h.publish(h.baseConfigText) }
        try h.publish(h.baseConfigText + "\nport \(h.u) mtu 1280\n")
        refillICMPBudget()
        let frames = (0..<300).map { i in h.frame4("10.1.2.3", "198.51.100.4", id: UInt16(i), payload: 1300) }
        let start = monotonicSeconds()
        let out = try h.inject(frames, on: h.protected)
        let elapsedMs = (monotonicSeconds() - start) * 1000
        let errors = out.sent[h.p]?.count ?? 0
        #expect(out.delta.dropsByReason == [.packetTooBig: 300], "\(out.delta)")
        // A burst of 50, then 1000 a second.
        #expect(errors >= 50 && Double(errors) <= 51 + elapsedMs, "\(errors) errors in \(elapsedMs) ms")
        // The counters say the same: the errors sent, and the rest held back.
        #expect(out.delta.icmpErrors == UInt64(errors) && out.delta.icmpLimited == UInt64(300 - errors), "\(out.delta)")
    }
}

// Time Exceeded (RFC 1812 §5.3.1, RFC 4443 §3.3): a packet that arrives with
// TTL or hop limit 1 or 0 is not forwarded, and its source is told, under
// the same rules as the errors above (traceroute through the gateway).
extension EALSuites.GatewayTests {
    @Test func ttlExceededIsAnswered() throws {
        refillICMPBudget()
        let big4 = h.frame4("10.1.2.3", "198.51.100.4", ttl: 1, payload: 700)
        let big6 = h.frame6("2001:db8:1::3", "2001:db8:100::4", hopLimit: 1, payload: 1400)
        let out = try h.inject([big4, big6, h.frame4("10.1.2.3", "198.51.100.4", ttl: 0)], on: h.protected)
        #expect(out.delta.dropsByReason == [.ttlExceeded: 3], "\(out.delta)")
        #expect((out.sent[h.u] ?? []).isEmpty, "nothing leaves towards the destination")
        let back = out.sent[h.p] ?? []
        #expect(back.count == 3, "\(out.sent.mapValues(\.count))")
        if back.count == 3 {
            expectICMPv4Error(back[0], .timeExceeded, answering: big4, from: [10, 0, 0, 1])
            expectICMPv6Error(back[1], .timeExceeded, answering: big6, from: ipv6("2001:db8:a::1").bytes)
        }
        // From the other side, the error leaves by that side's port, from its address.
        let inbound = h.frame4("198.51.100.7", "10.1.2.3", ttl: 1, ethDst: h.portMAC(h.u))
        let answered = try h.inject([inbound], on: h.unprotected)
        #expect(answered.sent[h.u]?.count == 1 && answered.delta.dropsByReason == [.ttlExceeded: 1], "\(answered.delta)")
        if let e = answered.sent[h.u]?.first {
            expectICMPv4Error(e, .timeExceeded, answering: inbound, from: [192, 0, 2, 1])
        }
        // Never about an ICMP error, nor about a packet that would not have
        // been forwarded: to a multicast group, to the gateway itself, or in
        // a link-layer broadcast frame (RFC 1812 §4.3.2.7, §5.3.1).
        var icmpError = h.frame4("10.1.2.3", "198.51.100.4", ttl: 1, transport: .raw(.icmp), payload: 100)
        icmpError[34] = 11; icmpError[35] = 0
        var broadcastFrame = h.frame4("10.1.2.3", "198.51.100.4", ttl: 1)
        broadcastFrame.replaceSubrange(0..<6, with: [0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF])
        let unanswered = [icmpError, h.frame4("10.1.2.3", "224.0.0.22", ttl: 1), h.frame4("10.1.2.3", "10.0.0.1", ttl: 1),
                          h.frame6("2001:db8:1::3", "ff05::2", hopLimit: 1), broadcastFrame]
        let quiet = try h.inject(unanswered, on: h.protected)
        #expect(quiet.allSent == 0 && quiet.delta.dropsByReason == [.ttlExceeded: UInt64(unanswered.count)], "\(quiet.delta)")
    }

    @Test func ttlExceededOnTheIPsecPaths() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let key = "0x" + String(repeating: "6d", count: 20)
        _ = try h.installSession(h.baseConfigText + """

        sa add spi 0x7005 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7006 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 3 action protect spi 0x7005
        sp add dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 3 action protect spi 0x7006
        """, name: "ttl")
        refillICMPBudget()
        // To be sealed: the protected sender is told, in the clear, on its side.
        let outbound = h.frame4("10.1.2.3", "198.51.100.4", ttl: 1)
        let sealed = try h.inject([outbound], on: h.protected)
        #expect(sealed.delta.dropsByReason == [.ttlExceeded: 1] && (sealed.sent[h.u] ?? []).isEmpty, "\(sealed.delta)")
        #expect(sealed.sent[h.p]?.count == 1, "\(sealed.sent.mapValues(\.count))")
        if let e = sealed.sent[h.p]?.first {
            expectICMPv4Error(e, .timeExceeded, answering: outbound, from: [10, 0, 0, 1])
        }
        // Opened from the tunnel: its sender is behind the peer, and an error
        // in the clear on the unprotected side would leak; none is sent.
        let peer = try TunnelPeer()
        let opened = try h.inject([peer.frame(spi: 0x7005, inner: h.frame4("198.51.100.9", "10.1.2.3", ttl: 1,
                                                                             ethDst: h.portMAC(h.u)))], on: h.unprotected)
        #expect(opened.delta.dropsByReason == [.ttlExceeded: 1] && opened.allSent == 0, "\(opened.delta)")
    }

    /// Plaintext an inbound bypass policy lets in comes from a host on the
    /// unprotected side: Time Exceeded and Fragmentation Needed go back to
    /// it there, from that port's address, where the outbound SPD bypasses
    /// the error (RFC 4301 §6.2); where it does not, none is sent.
    @Test func errorsAboutBypassedPlaintextGoBackInTheClear() throws {
        defer { try? h.publish(h.baseConfigText); try? h.gateway.publish(ipsec: nil) }
        try h.publish(h.baseConfigText + "\nport \(h.p) mtu 1280\n")
        _ = try h.installSession(h.baseConfigText + """

        sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 1 action bypass
        sp add dir out src 192.0.2.1/32 dst 198.51.100.0/25 proto icmp priority 1 action bypass
        """, name: "bypass-errors")
        refillICMPBudget()
        let expired = h.frame4("198.51.100.7", "10.1.2.3", ttl: 1, ethDst: h.portMAC(h.u))
        let big = h.frame4("198.51.100.7", "10.1.2.3", payload: 1400, ethDst: h.portMAC(h.u))
        let out = try h.inject([expired, big], on: h.unprotected)
        #expect(out.delta.dropsByReason == [.ttlExceeded: 1, .packetTooBig: 1], "\(out.delta)")
        let back = out.sent[h.u] ?? []
        #expect(back.count == 2 && (out.sent[h.p] ?? []).isEmpty, "\(out.sent.mapValues(\.count))")
        if back.count == 2 {
            expectICMPv4Error(back[0], .timeExceeded, answering: expired, from: [192, 0, 2, 1])
            expectICMPv4Error(back[1], .tooBig(mtu: 1280), answering: big, from: [192, 0, 2, 1])
        }
        // Bypassed in, but the outbound SPD has no bypass for the error: none.
        let unanswered = [h.frame4("198.51.100.200", "10.1.2.3", ttl: 1, ethDst: h.portMAC(h.u)),
                          h.frame4("198.51.100.200", "10.1.2.3", payload: 1400, ethDst: h.portMAC(h.u))]
        let quiet = try h.inject(unanswered, on: h.unprotected)
        #expect(quiet.delta.dropsByReason == [.ttlExceeded: 1, .packetTooBig: 1] && quiet.allSent == 0, "\(quiet.delta)")
    }
}
