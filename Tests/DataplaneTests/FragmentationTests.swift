// What the gateway sends in fragments (Fragmentation.swift): forwarded IPv4
// without DF, an inner IPv4 packet an SA opened, and the ESP packets it seals
// whose outer header may be cut (IPv4 with DF clear, or IPv6 with a Fragment
// header). Each case sends the same packet twice: once through a port whose
// MTU lets it pass whole (the reference), once through a smaller MTU. The
// pieces must each obey the rules checked below and, put together by the
// reassembler written here (RFC 791 §3.2, RFC 8200 §4.5), give back the
// reference byte for byte. The SAs are installed afresh before each send,
// so both ESP packets carry the same sequence number and are the same bytes.
// scapy's own reassembly and ESP checks the sealed fragments independently
// (ESPInteropTests).

import CShims
import Command
import Control
import Dataplane
import IPsec
import Packet
import Testing

private func be16(_ b: [UInt8], _ at: Int) -> Int { Int(b[at]) << 8 | Int(b[at + 1]) }

private func ipv4HeaderSumIsValid(_ h: ArraySlice<UInt8>) -> Bool {
    var sum: UInt32 = 0
    var i = h.startIndex
    while i + 1 < h.endIndex { sum += UInt32(h[i]) << 8 | UInt32(h[i + 1]); i += 2 }
    while sum > 0xFFFF { sum = (sum >> 16) + (sum & 0xFFFF) }
    return sum == 0xFFFF
}

private func ipv4HeaderChecksum(_ h: [UInt8]) -> [UInt8] {
    var h = h
    h[10] = 0; h[11] = 0
    var sum: UInt32 = 0
    for i in stride(from: 0, to: h.count, by: 2) { sum += UInt32(h[i]) << 8 | UInt32(h[i + 1]) }
    while sum > 0xFFFF { sum = (sum >> 16) + (sum & 0xFFFF) }
    h[10] = UInt8(~sum >> 8 & 0xFF); h[11] = UInt8(~sum & 0xFF)
    return h
}

/// One fragment as read from its frame.
private struct Piece {
    var frame: [UInt8]
    var header: [UInt8]       // IPv4: its header; IPv6: the 40-byte base header
    var offset: Int           // bytes
    var more: Bool
    var id: UInt32
    var nextHeader: UInt8     // IPv6: from the Fragment header
    var data: ArraySlice<UInt8>
}

/// Puts the fragments `frames` (Ethernet frames, any order) of one datagram
/// together and returns its frame: the first piece's Ethernet header, the
/// datagram's header, its data. Records an issue for every rule a piece
/// breaks: larger than `mtu`, DF set, a bad IPv4 header checksum, data not a
/// multiple of 8 bytes in a piece other than the last, less data than the MTU
/// allowed in a piece other than the last, pieces of different datagrams, a
/// gap or an overlap.
func reassembledForTest(_ frames: [[UInt8]], mtu: Int, sourceLocation: Testing.SourceLocation = #_sourceLocation) -> [UInt8]? {
    guard let firstFrame = frames.first else { return nil }
    let ipv4 = be16(firstFrame, 12) == 0x0800
    var pieces: [Piece] = []
    for f in frames {
        let ip = Array(f.dropFirst(14))
        if ipv4 {
            let hl = Int(ip[0] & 0x0F) * 4
            let field = be16(ip, 6)
            #expect(be16(ip, 2) == ip.count && ip.count <= mtu, "IPv4 piece of \(ip.count) bytes, MTU \(mtu)",
                    sourceLocation: sourceLocation)
            #expect(field & 0x4000 == 0, "DF set on a fragment", sourceLocation: sourceLocation)
            #expect(ipv4HeaderSumIsValid(ip[0..<hl]), "IPv4 header checksum of a piece", sourceLocation: sourceLocation)
            pieces.append(Piece(frame: f, header: Array(ip[0..<hl]), offset: (field & 0x1FFF) * 8, more: field & 0x2000 != 0,
                                id: UInt32(be16(ip, 4)), nextHeader: ip[9], data: ip[hl...]))
        } else {
            #expect(ip[6] == 44, "no Fragment header", sourceLocation: sourceLocation)
            #expect(be16(ip, 4) + 40 == ip.count && ip.count <= mtu, "IPv6 piece of \(ip.count) bytes, MTU \(mtu)",
                    sourceLocation: sourceLocation)
            let field = be16(ip, 42)
            let id = UInt32(ip[44]) << 24 | UInt32(ip[45]) << 16 | UInt32(ip[46]) << 8 | UInt32(ip[47])
            pieces.append(Piece(frame: f, header: Array(ip[0..<40]), offset: field & 0xFFF8, more: field & 1 != 0,
                                id: id, nextHeader: ip[40], data: ip[48...]))
        }
    }
    pieces.sort { $0.offset < $1.offset }
    let first = pieces[0]
    var data: [UInt8] = []
    for (k, piece) in pieces.enumerated() {
        #expect(piece.id == first.id, "identification \(piece.id) against \(first.id)", sourceLocation: sourceLocation)
        #expect(piece.frame.prefix(14) == first.frame.prefix(14), "Ethernet header", sourceLocation: sourceLocation)
        if ipv4 {
            #expect(piece.header[12..<20] == first.header[12..<20] && piece.header[9] == first.header[9],
                    "addresses and protocol", sourceLocation: sourceLocation)
        } else {
            #expect(piece.header[8..<40] == first.header[8..<40] && piece.nextHeader == first.nextHeader,
                    "addresses and next header", sourceLocation: sourceLocation)
        }
        #expect(piece.offset == first.offset + data.count, "piece at \(piece.offset), \(data.count) bytes before it",
                sourceLocation: sourceLocation)
        if k < pieces.count - 1 {
            let header = ipv4 ? piece.header.count : 48
            #expect(piece.more, "MF clear before the last piece", sourceLocation: sourceLocation)
            #expect(piece.data.count == (mtu - header) & ~7, "a piece of \(piece.data.count) bytes, MTU \(mtu)",
                    sourceLocation: sourceLocation)
        }
        data += piece.data
    }
    let last = pieces[pieces.count - 1]
    var header = first.header
    if ipv4 {
        header[2] = UInt8((header.count + data.count) >> 8); header[3] = UInt8((header.count + data.count) & 0xFF)
        let field = first.offset / 8 | (last.more ? 0x2000 : 0)
        header[6] = UInt8(field >> 8); header[7] = UInt8(field & 0xFF)
        header = ipv4HeaderChecksum(header)
    } else {
        #expect(!last.more, "M set on the last piece", sourceLocation: sourceLocation)
        header[4] = UInt8(data.count >> 8); header[5] = UInt8(data.count & 0xFF)
        header[6] = first.nextHeader
    }
    return Array(first.frame.prefix(14)) + header + data
}

extension EALSuites.GatewayTests {
    /// Sends `frame` on `port` under `text` with `port egress mtu M` added,
    /// with the IPsec configuration installed afresh (SAs from sequence
    /// number 1), and returns what left `egress` and the counters.
    /// (Below 1,280 the port's IPv6 address is taken off: RFC 8200 §5.)
    func sentAfresh(_ frame: [UInt8], on port: RingPort, text: String, egress: UInt16, mtu: Int) throws -> Outcome {
        try h.gateway.publish(ipsec: nil)
        // Below 1280 the port carries no IPv6 (RFC 8200): its link's
        // address, neighbors and routes go.
        let link6 = egress == h.p ? "2001:db8:a::" : "2001:db8:b::"
        let config = mtu < PortMTU.ipv6Minimum
            ? text.split(separator: "\n", omittingEmptySubsequences: false).filter { line in
                !(line.contains(link6) && ["port", "neighbor", "route"].contains { line.hasPrefix($0) })
            }.joined(separator: "\n")
            : text
        try h.publish(config + "\nport \(egress) mtu \(mtu)\n")
        _ = try h.installSession(config + "\nport \(egress) mtu \(mtu)\n", name: "fragmentation")
        return try h.inject([frame], on: port)
    }

    /// `frame` sent whole at MTU `whole` and in fragments at `mtu`: checks
    /// the fragments (`reassembledForTest`), that they give back the whole
    /// packet, and that they count as one datagram of `pieces` fragments.
    func expectFragmented(_ frame: [UInt8], on port: RingPort, text: String, egress: UInt16, whole: Int = 9000, mtu: Int,
                          pieces: Int, _ name: String, sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
        let reference = try sentAfresh(frame, on: port, text: text, egress: egress, mtu: whole)
        let one = try #require(reference.sent[egress]?.first, "\(name): nothing sent whole: \(reference.delta)",
                               sourceLocation: sourceLocation)
        #expect(reference.allSent == 1 && reference.delta.fragmented == 0, "\(name): \(reference.delta)",
                sourceLocation: sourceLocation)
        let cut = try sentAfresh(frame, on: port, text: text, egress: egress, mtu: mtu)
        let frames = cut.sent[egress] ?? []
        #expect(frames.count == pieces && cut.allSent == pieces, "\(name): \(cut.sent.mapValues { $0.map(\.count) })",
                sourceLocation: sourceLocation)
        #expect(cut.delta.fragmented == 1 && cut.delta.fragmentsOut == UInt64(pieces)
                && cut.delta.txPackets == UInt64(pieces) && cut.delta.totalDrops == 0, "\(name): \(cut.delta)",
                sourceLocation: sourceLocation)
        let whole = reassembledForTest(frames, mtu: mtu, sourceLocation: sourceLocation) ?? []
        let same = whole == one
        #expect(same, "\(name): the fragments do not make the packet sent whole: \(firstDifference(whole, one))",
                sourceLocation: sourceLocation)
    }

    @Test func forwardedIPv4WithoutDFLeavesInFragments() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let text = h.baseConfigText
        let dst = "198.51.100.4"
        let plain = h.frame4("10.1.2.3", dst, payload: 1400, dontFragment: false)
        // 1428 bytes: 556 + 552 + 300 of data through 576.
        try expectFragmented(plain, on: h.protected, text: text, egress: h.u, mtu: 576, pieces: 3, "IPv4 through 576")
        try expectFragmented(plain, on: h.protected, text: text, egress: h.u, mtu: 1280, pieces: 2, "IPv4 through 1280")
        // The smallest MTU IPv4 allows: 48 bytes of data a piece.
        try expectFragmented(h.frame4("10.1.2.3", dst, payload: 200, dontFragment: false), on: h.protected, text: text,
                             egress: h.u, mtu: 68, pieces: 5, "IPv4 through 68")
        // Options: Record Route (copy flag clear) only in the first piece,
        // Router Alert (copy flag set) in every one.
        let options: [UInt8] = [0x07, 0x07, 0x04, 0, 0, 0, 0, 0x01, 0x94, 0x04, 0x00, 0x00]
        let withOptions = h.frame4("10.1.2.3", dst, options: options, payload: 1400, dontFragment: false)
        try expectFragmented(withOptions, on: h.protected, text: text, egress: h.u, mtu: 576, pieces: 3, "IPv4 with options")
        let out = try sentAfresh(withOptions, on: h.protected, text: text, egress: h.u, mtu: 576)
        let headers = (out.sent[h.u] ?? []).map { Array($0[14..<(14 + Int($0[14] & 0x0F) * 4)]) }
        #expect(headers.first.map { Array($0[20...]) } == options, "the first piece keeps every option")
        #expect(headers.dropFirst().allSatisfy { Array($0[20...]) == [0x94, 0x04, 0x00, 0x00] },
                "later pieces repeat only the copied option: \(headers.dropFirst().map { Array($0[20...]) })")
        // A fragment is cut again: its pieces keep its offset, and its MF on the last.
        var fragment = h.frame4("10.1.2.3", dst, payload: 1200, dontFragment: false)
        fragment[14 + 6] = 0x20 | 0x01; fragment[14 + 7] = 0x90   // MF, offset 400 × 8
        Self.fixChecksum(&fragment)
        try expectFragmented(fragment, on: h.protected, text: text, egress: h.u, mtu: 576, pieces: 3, "a fragment cut again")
        // A fragment whose data would end past 65,535 bytes: no offsets for its pieces.
        var pastTheEnd = h.frame4("10.1.2.3", dst, payload: 1200, dontFragment: false)
        pastTheEnd[14 + 6] = 0x1F; pastTheEnd[14 + 7] = 0xA0   // offset 8096 × 8 = 64768
        Self.fixChecksum(&pastTheEnd)
        let past = try sentAfresh(pastTheEnd, on: h.protected, text: text, egress: h.u, mtu: 576)
        #expect(past.delta.dropsByReason == [.fragmentationFailed: 1] && past.allSent == 0, "\(past.delta)")
        // With DF the sender is told instead (PortMTUTests); IPv6 likewise.
        let refused = try sentAfresh(h.frame4("10.1.2.3", dst, payload: 1400), on: h.protected, text: text, egress: h.u, mtu: 576)
        #expect(refused.delta.dropsByReason == [.packetTooBig: 1] && refused.delta.fragmented == 0, "\(refused.delta)")
    }

    /// Random sizes, MTUs and option sets (seeded): every packet's pieces
    /// obey the rules and give it back whole, in as many pieces as the
    /// arithmetic of RFC 791 says.
    @Test func randomIPv4PacketsLeaveInFragments() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        var rng = SplitMix64(seed: 0x5EED_F4A6)
        // (options, bytes of them every later piece repeats)
        let optionSets: [([UInt8], Int)] = [([], 0), ([0x94, 0x04, 0x00, 0x00], 4),
                                            ([0x07, 0x07, 0x04, 0, 0, 0, 0, 0x01], 0),
                                            ([0x01, 0x94, 0x04, 0x00, 0x00, 0x07, 0x07, 0x04, 0, 0, 0, 0], 4),
                                            ([0x83, 0x07, 0x04, 10, 0, 0, 9, 0x00], 8)]  // loose source route: copied
        for round in 0..<24 {
            let (options, copied) = optionSets[Int(rng.next() % UInt64(optionSets.count))]
            let mtu = 68 + Int(rng.next() % 1433)            // 68…1500
            let header = 20 + options.count
            let total = max(mtu + 1, 100) + Int(rng.next() % UInt64(1900 - max(mtu + 1, 100)))
            let frame = h.frame4("10.1.2.3", "198.51.100.4", options: options, payload: total - header - 8, dontFragment: false)
            let firstData = (mtu - header) & ~7, laterData = (mtu - 20 - copied) & ~7
            let pieces = 1 + (total - header - firstData + laterData - 1) / laterData
            try expectFragmented(frame, on: h.protected, text: h.baseConfigText, egress: h.u, mtu: mtu, pieces: pieces,
                                 "round \(round): \(total) bytes, options \(options.count), MTU \(mtu)")
        }
    }

    @Test func openedInnerIPv4WithoutDFLeavesInFragments() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let key = "0x" + String(repeating: "6d", count: 20)
        let text = h.baseConfigText + """

        sa add spi 0x7101 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) replay-window 0
        sp add dir in src 198.51.100.0/24 dst 10.1.1.0/24 priority 1 action protect spi 0x7101
        """
        let peer = try TunnelPeer()
        let inner = h.frame4("198.51.100.7", "10.1.1.9", payload: 1300, ethDst: h.portMAC(h.u), dontFragment: false)
        try expectFragmented(peer.frame(spi: 0x7101, inner: inner), on: h.unprotected, text: text, egress: h.p, mtu: 576,
                             pieces: 3, "inner IPv4 to a protected host")
    }

    @Test func sealedESPLeavesInFragments() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let key = "0x" + String(repeating: "5a", count: 20)
        let text = h.baseConfigText + """

        sa add spi 0x7201 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7202 dir out src 2001:db8:b::1 dst 2001:db8:b::fe mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7203 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-256 key 0x\(String(repeating: "5b", count: 36)) encap udp 4500 4500
        sa add spi 0x7204 dir out src 2001:db8:b::1 dst 2001:db8:b::fe mode tunnel aead chacha20-poly1305 key 0x\(String(repeating: "5c", count: 36)) encap udp 4500 4500
        sa add spi 0x7205 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key) df set
        sp add dir out src 10.1.1.0/24 dst 198.51.100.0/24 priority 1 action protect spi 0x7201
        sp add dir out src 10.1.2.0/24 dst 198.51.100.0/24 priority 1 action protect spi 0x7202
        sp add dir out src 10.1.3.0/24 dst 198.51.100.0/24 priority 1 action protect spi 0x7203
        sp add dir out src 10.1.4.0/24 dst 198.51.100.0/24 priority 1 action protect spi 0x7204
        sp add dir out src 10.1.5.0/24 dst 198.51.100.0/24 priority 1 action protect spi 0x7205
        sp add dir out src 2001:db8:1:1::/64 dst 2001:db8:100::/48 priority 1 action protect spi 0x7201
        sp add dir out src 2001:db8:1:2::/64 dst 2001:db8:100::/48 priority 1 action protect spi 0x7202
        sp add dir out src 2001:db8:1:5::/64 dst 2001:db8:100::/48 priority 1 action protect spi 0x7205
        """
        func inner4(_ net: Int, df: Bool = false) -> [UInt8] {
            h.frame4("10.1.\(net).3", "198.51.100.4", payload: 1400, dontFragment: df)
        }
        // ESP over IPv4, DF clear (`df copy` of an inner packet without DF).
        try expectFragmented(inner4(1), on: h.protected, text: text, egress: h.u, mtu: 576, pieces: 3, "4 in 4")
        // ESP over IPv6: the gateway is the outer packet's source.
        try expectFragmented(inner4(2), on: h.protected, text: text, egress: h.u, mtu: 1280, pieces: 2, "4 in 6")
        // In UDP, both families.
        try expectFragmented(inner4(3), on: h.protected, text: text, egress: h.u, mtu: 1000, pieces: 2, "4 in UDP in 4")
        try expectFragmented(inner4(4), on: h.protected, text: text, egress: h.u, mtu: 1280, pieces: 2, "4 in UDP in 6")
        // An inner IPv6 packet of 1,280 bytes cannot be made smaller by its
        // sender: its ESP packet is cut, over either outer family.
        let inner6 = { (net: Int) in h.frame6("2001:db8:1:\(net)::3", "2001:db8:100::4", payload: 1280 - 48) }
        try expectFragmented(inner6(1), on: h.protected, text: text, egress: h.u, mtu: 1280, pieces: 2, "6 (1280) in 4")
        try expectFragmented(inner6(2), on: h.protected, text: text, egress: h.u, mtu: 1280, pieces: 2, "6 (1280) in 6")

        // Not to be cut: the sender is told (inner DF, or IPv6 over 1,280),
        // or, under `df set` with no DF inside, the packet is dropped.
        for (frame, reason, name) in [(inner4(1, df: true), DropReason.packetTooBig, "inner DF"),
                                      (h.frame6("2001:db8:1:1::3", "2001:db8:100::4", payload: 1300), .packetTooBig, "inner IPv6 over 1280"),
                                      (inner4(5), .mtuExceeded, "df set")] {
            let out = try sentAfresh(frame, on: h.protected, text: text, egress: h.u, mtu: 1280)
            #expect(out.delta.dropsByReason == [reason: 1] && out.delta.fragmented == 0 && (out.sent[h.u] ?? []).isEmpty,
                    "\(name): \(out.delta)")
        }

        // `df set`, an inner IPv6 packet of 1,280 bytes: its sender cannot be
        // asked for less, so the ESP packet leaves in fragments, DF clear
        // (RFC 4213 §3.2), instead of a Packet Too Big nobody can act on.
        // The pieces make the packet sent whole but for DF and the checksum.
        let reference = try sentAfresh(inner6(5), on: h.protected, text: text, egress: h.u, mtu: 9000)
        let whole = try #require(reference.sent[h.u]?.first, "\(reference.delta)")
        #expect(whole[14 + 6] & 0x40 != 0, "df set: DF on the ESP packet that fits")
        let cut = try sentAfresh(inner6(5), on: h.protected, text: text, egress: h.u, mtu: 1280)
        let pieces = cut.sent[h.u] ?? []
        #expect(pieces.count == 2 && cut.delta.fragmented == 1 && cut.delta.totalDrops == 0, "df set, 6 (1280) in 4: \(cut.delta)")
        #expect(pieces.allSatisfy { $0[14 + 6] & 0x40 == 0 }, "DF clear on every piece")
        var expected = whole
        expected[14 + 6] &= ~0x40
        Self.fixChecksum(&expected)
        let rebuilt = reassembledForTest(pieces, mtu: 1280) ?? []
        #expect(rebuilt == expected, "\(firstDifference(rebuilt, expected))")
        // Over 1,280 bytes inside, the sender is told, as without `df set`.
        let told = try sentAfresh(h.frame6("2001:db8:1:5::3", "2001:db8:100::4", payload: 1300), on: h.protected, text: text,
                                  egress: h.u, mtu: 1280)
        #expect(told.delta.dropsByReason == [.packetTooBig: 1] && (told.sent[h.u] ?? []).isEmpty, "\(told.delta)")

        // Two datagrams over IPv6 carry different identifications.
        _ = try sentAfresh(inner4(2), on: h.protected, text: text, egress: h.u, mtu: 1280)
        let two = try h.inject([inner4(2), inner4(2)], on: h.protected)
        let ids = Set((two.sent[h.u] ?? []).map { Array($0[(14 + 44)..<(14 + 48)]) })
        #expect(two.sent[h.u]?.count == 4 && ids.count == 2, "\(two.delta)")
    }
}

/// IPv6 Fragment header identifications (`sl_frag_id`): a permutation (no
/// value repeats within 65,536 consecutive counters, through the wrap), keyed
/// (another key, other values), and not predictable as a public mixing of
/// counter + key was: undo the mixing on an identification seen, add one,
/// mix again, and the next one came out every time.
@Test func fragmentIdentificationsAreAKeyedPermutation() {
    let key: [UInt8] = (0..<16).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
    let counters = (0..<65_536).map { UInt32(0xFFFF_8000) &+ UInt32($0) }
    let ids = counters.map { sl_frag_id(key, $0) }
    #expect(Set(ids).count == ids.count, "a value repeats")
    var otherKey = key
    otherKey[15] ^= 0x80
    let same = zip(ids, counters.map { sl_frag_id(otherKey, $0) }).filter { $0 == $1 }.count
    #expect(same < 8, "\(same) identifications equal under another key")

    // The former scheme and its inverse.
    func inverse(_ a: UInt32) -> UInt32 {
        var x = a  // Newton's iteration for a multiplicative inverse mod 2^32
        for _ in 0..<5 { x &*= 2 &- a &* x }
        return x
    }
    func mix(_ v: UInt32) -> UInt32 {
        var x = v
        x ^= x >> 16; x &*= 0x7FEB_352D; x ^= x >> 15; x &*= 0x846C_A68B; x ^= x >> 16
        return x
    }
    func unmix(_ v: UInt32) -> UInt32 {
        var x = v
        x ^= x >> 16; x &*= inverse(0x846C_A68B); x ^= x >> 15 ^ x >> 30; x &*= inverse(0x7FEB_352D); x ^= x >> 16
        return x
    }
    #expect(unmix(mix(0x1234_5678)) == 0x1234_5678 && unmix(mix(0xFFFF_FFFF)) == 0xFFFF_FFFF)
    let predicted = zip(ids, ids.dropFirst()).filter { mix(unmix($0) &+ 1) == $1 }.count
    #expect(predicted < 8, "\(predicted) of \(ids.count - 1) predicted from the one before")
}
