// ESP that reaches the gateway in fragments (RFC 4303 §3.4.1: reassembled
// before IPsec processing): a peer fragments its ESP packets when a
// plaintext packet without DF does not fit its path, and a smaller MTU on a
// NAT-T path fragments ESP in UDP. The fragments here are cut by the test's
// own fragmenter (RFC 791 / RFC 8200 §4.5), from ESP sealed by the test's
// peer; the reference is the same inner packet sent unfragmented.

import Command
import Control
import Dataplane
import Glibc
import IPsec
import Packet
import Testing

/// The pieces a payload of `length` bytes is cut into: `sizes` bytes each
/// (multiples of 8 but the last), then the rest if any; each with its
/// offset and whether more follow.
func fragmentPieces(_ sizes: [Int], length: Int) -> [(offset: Int, size: Int, more: Bool)] {
    var all = sizes
    if sizes.reduce(0, +) < length { all.append(length - sizes.reduce(0, +)) }
    var offset = 0
    return all.enumerated().map { k, size in
        defer { offset += size }
        return (offset, size, k < all.count - 1)
    }
}

/// The IPv4 datagram in `frame` (untagged, 20-byte header) cut into
/// `fragmentPieces(pieces, …)`, with identification `id`. DF is cleared,
/// as on any fragment.
func fragments4(_ frame: [UInt8], pieces: [Int], id: UInt16) -> [[UInt8]] {
    let payload = Array(frame[34...])
    return fragmentPieces(pieces, length: payload.count).map { piece in
        var ip = Array(frame[14..<34])
        let total = 20 + piece.size
        let field = (piece.more ? 0x2000 : 0) | UInt16(piece.offset / 8)
        ip.replaceSubrange(2..<8, with: [UInt8(total >> 8), UInt8(total & 0xFF), UInt8(id >> 8), UInt8(id & 0xFF),
                                         UInt8(field >> 8), UInt8(field & 0xFF)])
        ip[10] = 0; ip[11] = 0
        let sum = InternetChecksum.checksum(ip)
        ip[10] = UInt8(sum >> 8); ip[11] = UInt8(sum & 0xFF)
        return Array(frame[0..<14]) + ip + Array(payload[piece.offset..<(piece.offset + piece.size)])
    }
}

/// The IPv6 datagram in `frame` (no extension headers) cut the same way,
/// each piece behind a Fragment header with identification `id`.
/// `destinationOptions` puts an empty Destination Options header in front
/// of the Fragment header (which Sluice's reassembly refuses).
func fragments6(_ frame: [UInt8], pieces: [Int], id: UInt32, destinationOptions: Bool = false) -> [[UInt8]] {
    let nextHeader = frame[14 + 6]
    let payload = Array(frame[54...])
    let options: [UInt8] = destinationOptions ? [44, 0, 1, 4, 0, 0, 0, 0] : []
    return fragmentPieces(pieces, length: payload.count).map { piece in
        var ip = Array(frame[14..<54])
        let length = options.count + 8 + piece.size
        ip[4] = UInt8(length >> 8); ip[5] = UInt8(length & 0xFF)
        ip[6] = destinationOptions ? 60 : 44
        let field = UInt16(piece.offset) | (piece.more ? 1 : 0)
        let fragment: [UInt8] = [nextHeader, 0, UInt8(field >> 8), UInt8(field & 0xFF),
                                 UInt8(id >> 24), UInt8(id >> 16 & 0xFF), UInt8(id >> 8 & 0xFF), UInt8(id & 0xFF)]
        return Array(frame[0..<14]) + ip + options + fragment + Array(payload[piece.offset..<(piece.offset + piece.size)])
    }
}

extension EALSuites.GatewayTests {
    /// Three inbound SAs to the gateway: ESP over IPv4, ESP over IPv6, ESP
    /// in UDP 4500 over IPv4, each for its own protected /24.
    func reassemblySession() throws -> ControlSession {
        let key = "0x" + String(repeating: "6d", count: 20)
        let text = h.baseConfigText + """

        sa add spi 0x7101 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7102 dir in src 2001:db8:b::fe dst 2001:db8:b::1 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7103 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) encap udp 4500 4500
        sp add dir in src 198.51.100.0/24 dst 10.1.1.0/24 priority 1 action protect spi 0x7101
        sp add dir in src 198.51.100.0/24 dst 10.1.2.0/24 priority 2 action protect spi 0x7102
        sp add dir in src 198.51.100.0/24 dst 10.1.3.0/24 priority 3 action protect spi 0x7103
        """
        return try h.installSession(text, name: "reassembly")
    }

    /// The inner packet for SA `spi`'s network, `payload` UDP bytes.
    func reassemblyInner(spi: UInt32, payload: Int) -> [UInt8] {
        h.frame4("198.51.100.7", "10.1.\(spi - 0x7100).9", payload: payload, pattern: .incrementing(from: UInt8(spi & 0xFF)),
                 ethDst: h.portMAC(h.u), dontFragment: false)
    }

    /// Waits until the worker has given up fragments held longer than the
    /// harness's reassembly timeout (it sweeps between bursts).
    func waitForReassemblyTimeout() {
        usleep(UInt32((GatewayHarness.reassemblyTimeout * 2.5) * 1_000_000))
    }

    @Test func espInFragmentsIsReassembled() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try reassemblySession()
        let peer = try TunnelPeer()
        struct Case { var name: String; var spi: UInt32; var outer6: Bool; var udp: Bool }
        let cases = [Case(name: "ESP over IPv4", spi: 0x7101, outer6: false, udp: false),
                     Case(name: "ESP over IPv6", spi: 0x7102, outer6: true, udp: false),
                     Case(name: "ESP in UDP over IPv4", spi: 0x7103, outer6: false, udp: true)]
        var id: UInt16 = 0x4000
        for c in cases {
            let inner = reassemblyInner(spi: c.spi, payload: 1200)
            func sealed() -> [UInt8] {
                peer.frame(spi: c.spi, inner: inner, outer6: c.outer6, udp: c.udp ? (4500, 4500) : nil)
            }
            func cut(_ frame: [UInt8], _ pieces: [Int]) -> [[UInt8]] {
                id &+= 1
                return c.outer6 ? fragments6(frame, pieces: pieces, id: 0x10000 + UInt32(id)) : fragments4(frame, pieces: pieces, id: id)
            }
            // The reference: the same inner packet, sealed whole.
            let whole = try h.inject([sealed()], on: h.unprotected)
            let reference = try #require(whole.sent[h.p]?.first, "\(c.name): the whole ESP packet was not delivered: \(whole.delta)")
            #expect(reference.count == inner.count, "\(c.name)")

            // A last piece of 1–8 bytes: an IPv4 fragment shorter than an
            // IPv6 header, unpadded here as on virtual ports.
            let cipherLength = sealed().count - (c.outer6 ? 54 : 34)
            for (order, frames) in [("in order", cut(sealed(), [512, 512])),
                                    ("tiny last piece", cut(sealed(), [(cipherLength - 1) / 8 * 8])),
                                    ("reversed", Array(cut(sealed(), [400, 400]).reversed())),
                                    ("first piece last", { let f = cut(sealed(), [256, 600]); return [f[1], f[2], f[0]] }())] {
                let out = try h.inject(frames, on: h.unprotected)
                #expect(out.delta.rxPackets == UInt64(frames.count), "\(c.name), \(order): \(out.delta)")
                #expect(out.delta.fragments == UInt64(frames.count), "\(c.name), \(order): \(out.delta)")
                #expect(out.delta.reassembled == 1, "\(c.name), \(order): \(out.delta)")
                #expect(out.delta.txPackets == 1 && out.delta.totalDrops == 0, "\(c.name), \(order): \(out.delta)")
                let same = out.sent[h.p] == [reference]
                #expect(same, "\(c.name), \(order): the inner packet differs from the unfragmented one's")
            }

            // Two datagrams' fragments interleaved: each is made whole.
            let a = cut(sealed(), [512, 512]), b = cut(sealed(), [504, 504])
            let mixed = try h.inject([a[0], b[2], a[2], b[0], a[1], b[1]], on: h.unprotected)
            #expect(mixed.delta.reassembled == 2 && mixed.delta.txPackets == 2 && mixed.delta.totalDrops == 0,
                    "\(c.name), interleaved: \(mixed.delta)")
            let both = mixed.sent[h.p] == [reference, reference]
            #expect(both, "\(c.name), interleaved: not the unfragmented one's inner packet twice")

            // A forged byte in a later fragment: reassembled, then refused by the ICV.
            var forged = cut(sealed(), [512, 512])
            forged[1][forged[1].count - 100] ^= 0x01
            let refused = try h.inject(forged, on: h.unprotected)
            #expect(refused.delta.reassembled == 1 && refused.delta.txPackets == 0, "\(c.name), forged: \(refused.delta)")
            #expect(refused.delta.dropsByReason == [.esp(.authenticationFailed): 1], "\(c.name), forged: \(refused.delta)")
        }
    }

    /// Fragments that never make a datagram are given up after the timeout,
    /// each counted once; broken fragments are refused on arrival; a
    /// datagram larger than a packet buffer is made whole in a large one.
    @Test func incompleteAndBrokenFragmentsAreCounted() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try reassemblySession()
        let peer = try TunnelPeer()
        let inner = reassemblyInner(spi: 0x7101, payload: 1200)
        let failed = DropReason.reassemblyFailed

        // A lone fragment: held, then given up.
        let lone = fragments4(peer.frame(spi: 0x7101, inner: inner), pieces: [512, 512], id: 0x5001)
        let held = try h.inject([lone[1]], on: h.unprotected)
        #expect(held.delta.fragments == 1 && held.delta.totalDrops == 0 && held.delta.txPackets == 0, "\(held.delta)")
        let before = h.totals()
        waitForReassemblyTimeout()
        #expect((h.totals() - before).dropsByReason == [failed: 1], "\((h.totals() - before))")

        // A duplicated first fragment spoils its datagram at once (both
        // copies); the two pieces that follow start a new one that never completes.
        let dup = fragments4(peer.frame(spi: 0x7101, inner: inner), pieces: [512, 512], id: 0x5002)
        let spoiled = try h.inject([dup[0], dup[0], dup[1], dup[2]], on: h.unprotected)
        #expect(spoiled.delta.txPackets == 0 && spoiled.delta.dropsByReason == [failed: 2], "\(spoiled.delta)")
        let afterDup = h.totals()
        waitForReassemblyTimeout()
        #expect((h.totals() - afterDup).dropsByReason == [failed: 2], "\((h.totals() - afterDup))")

        // Broken fragments: a middle piece not a multiple of 8 bytes; an
        // IPv6 Destination Options header before the Fragment header.
        let odd = fragments4(peer.frame(spi: 0x7101, inner: inner), pieces: [500, 500], id: 0x5003)
        let v6inner = reassemblyInner(spi: 0x7102, payload: 600)
        let optioned = fragments6(peer.frame(spi: 0x7102, inner: v6inner, outer6: true), pieces: [256], id: 0x5004,
                                  destinationOptions: true)
        try expectDropped([odd[0], odd[1], optioned[0]], reason: .badFragment, on: h.unprotected)
        let oddRest = try h.inject([odd[2]], on: h.unprotected)  // held alone: given up later
        #expect(oddRest.delta.fragments == 1, "\(oddRest.delta)")

        // 3,000 bytes of datagram, more than one packet buffer holds: made
        // whole in a large buffer and opened (a forged one: it fails).
        var bigESP = h.frame4("192.0.2.254", "192.0.2.1", transport: .raw(.esp), payload: 3000 - 20,
                              ethDst: h.portMAC(h.u), dontFragment: false)
        bigESP.replaceSubrange(34..<38, with: [0, 0, 0x71, 0x01])
        let big = try h.inject(fragments4(bigESP, pieces: [1000, 1000], id: 0x5005), on: h.unprotected)
        #expect(big.delta.fragments == 3 && big.delta.reassembled == 1, "\(big.delta)")
        #expect(big.delta.dropsByReason == [.esp(.authenticationFailed): 1] && big.delta.txPackets == 0, "\(big.delta)")
        waitForReassemblyTimeout()
    }

    /// Inner packets of 3,000 bytes without DF, their ESP in fragments: each
    /// is made whole in one of reassembly's few large buffers, opened, and
    /// cut for the protected port's MTU of 1500. The pieces come from the
    /// worker's own pool: from the packet's, three such datagrams in one
    /// burst needed 3 + 6 of the 7 large buffers (fragmentation_failed).
    @Test func largeReassembledInnerPacketsAreCutFromTheWorkersPool() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try reassemblySession()
        let peer = try TunnelPeer()
        let inner = reassemblyInner(spi: 0x7101, payload: 3000)
        var frames: [[UInt8]] = []
        for k in 0..<3 {
            frames += fragments4(peer.frame(spi: 0x7101, inner: inner), pieces: [1400, 1400], id: UInt16(0x5100 + k))
        }
        let out = try h.inject(frames, on: h.unprotected)
        #expect(out.delta.reassembled == 3 && out.delta.totalDrops == 0, "\(out.delta)")
        #expect(out.delta.fragmented == 3 && out.sent[h.p]?.count == 9, "\(out.delta)")
    }
}

extension EALSuites.GatewayTests {
    /// Transport-mode ESP from a remote host to a protected host (the
    /// gateway a bump in the wire, its SA found by SPI alone), arriving in
    /// fragments: the fragments in transit that a protect policy covers are
    /// reassembled, and the whole ESP packet is opened like one that came
    /// whole: plain ESP over IPv4 and IPv6, and in UDP 4500.
    @Test func transitTransportESPInFragmentsIsReassembled() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let key = "0x" + String(repeating: "6d", count: 20)
        _ = try h.installSession(h.baseConfigText + """

        sa add spi 0x7301 dir in mode transport aead aes-gcm-128 key \(key)
        sa add spi 0x7302 dir in mode transport aead aes-gcm-128 key \(key)
        sa add spi 0x7303 dir in mode transport aead aes-gcm-128 key \(key) encap udp 4500 4500
        sp add dir in src 198.51.100.0/24 dst 10.1.1.0/24 priority 1 action protect spi 0x7301
        sp add dir in src 2001:db8:100::/48 dst 2001:db8:1::/48 priority 2 action protect spi 0x7302
        sp add dir in src 198.51.100.0/24 dst 10.1.3.0/24 priority 3 action protect spi 0x7303
        """, name: "transport-fragments")
        let peer = try TunnelPeer()
        struct Case { var name: String; var spi: UInt32; var v6: Bool; var udp: Bool }
        var id: UInt16 = 0x6100
        for c in [Case(name: "transport ESP over IPv4", spi: 0x7301, v6: false, udp: false),
                  Case(name: "transport ESP over IPv6", spi: 0x7302, v6: true, udp: false),
                  Case(name: "transport ESP in UDP over IPv4", spi: 0x7303, v6: false, udp: true)] {
            let inner = c.v6 ? h.frame6("2001:db8:100::7", "2001:db8:1::9", payload: 1200, ethDst: h.portMAC(h.u))
                : h.frame4("198.51.100.7", "10.1.\(c.spi - 0x7300).9", payload: 1200, ethDst: h.portMAC(h.u), dontFragment: false)
            func sealed() -> [UInt8] { peer.frame(spi: c.spi, inner: inner, udp: c.udp ? (4500, 4500) : nil, transport: true) }
            let whole = try h.inject([sealed()], on: h.unprotected)
            let reference = try #require(whole.sent[h.p]?.first, "\(c.name): not opened whole: \(whole.delta)")
            id &+= 1
            // Transport mode keeps the packet's own header: the IPv4 pieces
            // carry its identification (0x1234), as its sender's would.
            let frames = c.v6 ? fragments6(sealed(), pieces: [512, 400], id: 0x61000 + UInt32(id))
                : Array(fragments4(sealed(), pieces: [512, 400], id: 0x1234).reversed())
            let out = try h.inject(frames, on: h.unprotected)
            #expect(out.delta.fragments == 3 && out.delta.reassembled == 1 && out.delta.txPackets == 1
                    && out.delta.totalDrops == 0, "\(c.name): \(out.delta)")
            let same = out.sent[h.p] == [reference]
            #expect(same, "\(c.name): the inner packet differs from the one opened whole")
        }
        // Transit ESP fragments no protect policy covers still pass as they are
        // (here: none covers 10.1.9.0/24, and nothing else does: discarded).
        let stray = fragments4(peer.frame(spi: 0x7301, inner: h.frame4("198.51.100.7", "10.1.9.9", payload: 1200,
                                                                          ethDst: h.portMAC(h.u), dontFragment: false),
                                          transport: true), pieces: [512, 400], id: 0x6200)
        try expectDropped(stray, reason: .policyDiscard, on: h.unprotected)
        // Without a transport-mode SA, nothing in transit can be the
        // gateway's: such fragments are dropped at once, as before.
        _ = try h.installSession(h.baseConfigText + """

        sa add spi 0x7304 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir in src 198.51.100.0/24 dst 10.1.1.0/24 priority 1 action protect spi 0x7304
        """, name: "tunnel-only")
        let tunnelOnly = fragments4(peer.frame(spi: 0x7301, inner: h.frame4("198.51.100.7", "10.1.1.9", payload: 1200,
                                                                              ethDst: h.portMAC(h.u), dontFragment: false),
                                              transport: true), pieces: [512, 400], id: 0x6201)
        try expectDropped(tunnelOnly, reason: .esp(.fragmented), on: h.unprotected)
    }
}
