// The inbound path's refusals, one by one: classification (ESP, ESP in UDP,
// keepalives, the non-ESP marker, fragments), tampering, crafted trailers,
// RFC 6040 ECN, selectors, encapsulation mismatches, replay interplay, and
// truncated or mutated input that must never trap.

import Crypto
import Foundation
@testable import IPsec
import Packet
import Testing

/// An outer IPv4 header from the peer to this gateway around `payload`.
func outerIPv4(proto: UInt8, payload: [UInt8], tos: UInt8 = 0, flags: UInt16 = 0x4000) -> [UInt8] {
    let total = 20 + payload.count
    var h: [UInt8] = [0x45, tos, UInt8(total >> 8), UInt8(total & 0xFF), 0, 1, UInt8(flags >> 8), UInt8(flags & 0xFF),
                      64, proto, 0, 0] + Gateways.v4Peer.bytes + Gateways.v4Local.bytes
    let sum = internetChecksum(h)
    h[10] = UInt8(sum >> 8); h[11] = UInt8(sum & 0xFF)
    return h + payload
}

/// An outer IPv6 header from the peer to this gateway around `payload`.
func outerIPv6(nextHeader: UInt8, payload: [UInt8], hopLimit: UInt8 = 64) -> [UInt8] {
    [0x60, 0, 0, 0, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF), nextHeader, hopLimit]
        + Gateways.v6Peer.bytes + Gateways.v6Local.bytes + payload
}

func udpHeader(source: UInt16 = 4500, destination: UInt16 = 4500, payloadLength: Int) -> [UInt8] {
    let n = payloadLength + 8
    return [UInt8(source >> 8), UInt8(source & 0xFF), UInt8(destination >> 8), UInt8(destination & 0xFF),
            UInt8(n >> 8), UInt8(n & 0xFF), 0, 0]
}

/// SPI .. ICV whose encrypted part is exactly `plaintext` (payload, padding,
/// pad length, next header as the caller wrote them), IV = sequence number.
func craftESP(key: TestKey, spi: UInt32, sequence: UInt64, esn: Bool, plaintext: [UInt8],
              core: borrowing CryptoCore) -> [UInt8] {
    let count = 16 + plaintext.count + 16
    let p = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 16)
    defer { p.deallocate() }
    p.storeBE32(spi, at: 0)
    p.storeBE32(UInt32(truncatingIfNeeded: sequence), at: 4)
    p.storeBE64(sequence, at: 8)
    for (i, b) in plaintext.enumerated() { p.storeByte(b, at: 16 + i) }
    let aad = UnsafeMutableRawPointer.allocate(byteCount: 16, alignment: 16)
    defer { aad.deallocate() }
    let aadLength = ESPAssociatedData.store(spi: spi, sequence: sequence, extendedSequenceNumbers: esn, to: aad)
    key.handle.seal(core, payload: p + 16, length: plaintext.count, iv: p + 8, aad: aad, aadLength: aadLength,
                    icv: p + 16 + plaintext.count)
    return [UInt8](UnsafeRawBufferPointer(start: p, count: count))
}

/// `payload`, then 1, 2, … padding to a 4-byte boundary, pad length, next header.
func withTrailer(_ payload: [UInt8], nextHeader: UInt8) -> [UInt8] {
    let pad = ESPTrailer.padLength(payloadLength: payload.count)
    return payload + (0..<pad).map { UInt8($0 + 1) } + [UInt8(pad), nextHeader]
}

@Suite struct ESPInboundTests {
    static let spi: UInt32 = 0x0A0B_0C0D

    static func tunnelSA(_ key: TestKey, esn: Bool = false, udp: Bool = false,
                         selectors: [TrafficSelector] = [Inner.selector(ipv6: false), Inner.selector(ipv6: true)])
        throws -> InboundSA {
        try InboundSA(spi: SPI(spi), mode: .tunnel, key: key.handle, esn: esn, source: .v4(Gateways.v4Peer),
                      destination: .v4(Gateways.v4Local), udpEncapsulation: udp ? (4500, 4500) : nil,
                      selectors: selectors)
    }

    // MARK: classification

    @Test func classifiesESPAndESPInUDP() throws {
        let esp: [UInt8] = [0, 0, 0x12, 0x34, 0, 0, 0, 9] + [UInt8](repeating: 0xEE, count: 40)
        // Plain ESP over IPv4.
        guard case .esp(let h4) = ESPInbound.classify(PacketBuffer(outerIPv4(proto: 50, payload: esp)).view) else {
            Issue.record("IPv4 ESP not classified"); return
        }
        #expect(h4.spi == SPI(0x1234) && h4.sequenceLow == 9 && h4.espOffset == 20 && !h4.udpEncapsulated)
        #expect(h4.source == RawIPAddress(Gateways.v4Peer) && h4.destination == RawIPAddress(Gateways.v4Local))
        #expect(h4.protocolFieldOffset == 9 && h4.ipLength == 68)
        // ESP in UDP over IPv6, with a Hop-by-Hop header, hop limit 0 accepted.
        let udp = udpHeader(source: 31000, payloadLength: esp.count) + esp
        let v6 = outerIPv6(nextHeader: 0, payload: [17, 0, 1, 4, 0, 0, 0, 0] + udp, hopLimit: 0)
        guard case .esp(let h6) = ESPInbound.classify(PacketBuffer(v6).view) else {
            Issue.record("IPv6 ESP-in-UDP not classified"); return
        }
        #expect(h6.espOffset == 56 && h6.udpEncapsulated && h6.udpSourcePort == 31000 && h6.udpDestinationPort == 4500)
        #expect(h6.protocolFieldOffset == 40 && h6.isIPv6)
        #expect(h6.source == RawIPAddress(Gateways.v6Peer) && h6.destination == RawIPAddress(Gateways.v6Local))
        // Another NAT-T port, when configured.
        let other = outerIPv4(proto: 17, payload: udpHeader(destination: 4501, payloadLength: esp.count) + esp)
        #expect(ESPInbound.classify(PacketBuffer(other).view) == .notESP)
        let ports = try #require(NATTraversalPorts([4500, 4501]))
        if case .esp(let h) = ESPInbound.classify(PacketBuffer(other).view, natPorts: ports) {
            #expect(h.udpDestinationPort == 4501)
        } else {
            Issue.record("port 4501 not taken")
        }
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 17, payload: udpHeader(payloadLength: esp.count) + esp)).view,
                                    natPorts: .none) == .notESP)
        #expect(NATTraversalPorts([1, 2, 3, 4, 5]) == nil && NATTraversalPorts([0]) == nil)
    }

    @Test func classifiesWhatIsNotESP() {
        let marker = outerIPv4(proto: 17, payload: udpHeader(payloadLength: 12) + [0, 0, 0, 0] + [UInt8](repeating: 1, count: 8))
        #expect(ESPInbound.classify(PacketBuffer(marker).view) == .drop(.notESP))
        let keepalive = outerIPv4(proto: 17, payload: udpHeader(payloadLength: 1) + [0xFF])
        #expect(ESPInbound.classify(PacketBuffer(keepalive).view) == .drop(.natKeepalive))
        let oddByte = outerIPv4(proto: 17, payload: udpHeader(payloadLength: 1) + [0x00])
        #expect(ESPInbound.classify(PacketBuffer(oddByte).view) == .drop(.malformed))
        let short = outerIPv4(proto: 17, payload: udpHeader(payloadLength: 6) + [0, 0, 1, 0, 0, 0])
        #expect(ESPInbound.classify(PacketBuffer(short).view) == .drop(.malformed))
        let badUDPLength = outerIPv4(proto: 17, payload: udpHeader(payloadLength: 20) + [UInt8](repeating: 1, count: 16))
        #expect(ESPInbound.classify(PacketBuffer(badUDPLength).view) == .drop(.malformed))
        let dns = outerIPv4(proto: 17, payload: udpHeader(source: 53, destination: 53, payloadLength: 10) + [UInt8](repeating: 0, count: 10))
        #expect(ESPInbound.classify(PacketBuffer(dns).view) == .notESP)
        #expect(ESPInbound.classify(PacketBuffer(Inner.ipv4UDP(payload: 30)).view) == .notESP)
        #expect(ESPInbound.classify(PacketBuffer(Inner.ipv6UDP(payload: 30)).view) == .notESP)
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 6, payload: [UInt8](repeating: 0, count: 20))).view) == .notESP)
        // SPI 0 never travels; a truncated ESP header is malformed.
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 50, payload: [0, 0, 0, 0, 0, 0, 0, 1])).view)
                == .drop(.malformed))
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 50, payload: [0, 0, 1, 0, 0, 0, 0])).view)
                == .drop(.malformed))
        // Not IP at all.
        #expect(ESPInbound.classify(PacketBuffer([UInt8](repeating: 0x55, count: 60)).view) == .drop(.malformed))
        #expect(ESPInbound.classify(PacketBuffer([0x45, 0, 0]).view) == .drop(.malformed))
    }

    /// RFC 8200 §4.4: behind a Routing header with Segments Left > 0 the
    /// packet is still en route, and its ESP is not for the node its
    /// Destination names now: ordinary traffic. With Segments Left 0 the
    /// Destination is the final one and the ESP is taken.
    @Test func espStillEnRouteIsNotTaken() {
        for segmentsLeft: UInt8 in [0, 1, 2] {
            var esp: [UInt8] = [0x00, 0x00, 0x10, 0x01, 0, 0, 0, 9] + [UInt8](repeating: 0xA5, count: 8 + 16 + 16)
            // Routing header: next header ESP, 2 × 8 bytes after the first 8, type 4, one address.
            let routing: [UInt8] = [50, 2, 4, segmentsLeft, 0, 0, 0, 0] + [UInt8](repeating: 0x20, count: 16)
            esp = routing + esp
            var ip: [UInt8] = [0x60, 0, 0, 0, UInt8(esp.count >> 8), UInt8(esp.count & 0xFF), 43, 64]
            ip += [UInt8](repeating: 0x20, count: 15) + [1] + [UInt8](repeating: 0x20, count: 15) + [2]
            let verdict = ESPInbound.classify(PacketBuffer(ip + esp).view)
            if segmentsLeft == 0 {
                guard case .esp(let header) = verdict else {
                    Issue.record("segments left 0: \(verdict)"); continue
                }
                #expect(header.spi == SPI(0x1001) && header.espOffset == 40 + 24)
            } else {
                #expect(verdict == .notESP, "segments left \(segmentsLeft): \(verdict)")
            }
        }
    }

    @Test func fragmentedESPIsDropped() {
        let esp: [UInt8] = [0, 0, 0x12, 0x34, 0, 0, 0, 9] + [UInt8](repeating: 0xEE, count: 40)
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 50, payload: esp, flags: 0x2000)).view)
                == .drop(.fragmented))
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 50, payload: esp, flags: 0x0010)).view)
                == .drop(.fragmented))
        let udp = udpHeader(payloadLength: esp.count) + esp
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 17, payload: udp, flags: 0x2000)).view)
                == .drop(.fragmented))
        // A later UDP fragment has no UDP header: not recognisable, handed on.
        #expect(ESPInbound.classify(PacketBuffer(outerIPv4(proto: 17, payload: udp, flags: 0x0010)).view) == .notESP)
        // IPv6 Fragment header in front of ESP.
        let fragment: [UInt8] = [50, 0, 0, 1, 0, 0, 0, 7]
        #expect(ESPInbound.classify(PacketBuffer(outerIPv6(nextHeader: 44, payload: fragment + esp)).view)
                == .drop(.fragmented))
        let later: [UInt8] = [50, 0, 0x05, 0x00, 0, 0, 0, 7]  // offset 160, no M: the last piece
        #expect(ESPInbound.classify(PacketBuffer(outerIPv6(nextHeader: 44, payload: later + esp)).view)
                == .drop(.fragmented))
        // Destination Options after a first fragment's Fragment header
        // (RFC 8200 §4.1): ESP behind them is found, and is a fragment; a
        // later piece's next header is the options', not ESP.
        let options: [UInt8] = [50, 0, 1, 4, 0, 0, 0, 0]
        #expect(ESPInbound.classify(PacketBuffer(outerIPv6(nextHeader: 44, payload: [60, 0, 0, 1, 0, 0, 0, 7] + options + esp)).view)
                == .drop(.fragmented))
        #expect(ESPInbound.classify(PacketBuffer(outerIPv6(nextHeader: 44, payload: [60, 0, 0x05, 0, 0, 0, 0, 7] + options + esp)).view)
                == .notESP)
        guard case .esp(let h) = ESPInbound.classify(PacketBuffer(outerIPv6(nextHeader: 44, payload: [60, 0, 0, 0, 0, 0, 0, 7] + options + esp)).view)
        else { Issue.record("ESP behind an atomic fragment's Destination Options not recognised"); return }
        #expect(h.espOffset == 56 && h.protocolFieldOffset == 48 && h.spi == SPI(0x1234))
        // A first fragment (M set) with a second, atomic Fragment header
        // behind it: still a fragment (before, the second header alone
        // decided, and the truncated ESP went to the AEAD).
        #expect(ESPInbound.classify(PacketBuffer(outerIPv6(nextHeader: 44, payload: [44, 0, 0, 1, 0, 0, 0, 7] + [50, 0, 0, 0, 0, 0, 0, 8] + esp)).view)
                == .drop(.fragmented))
    }

    /// An IPv6 atomic fragment (a Fragment header with offset 0 and no M
    /// flag, which some stacks add) is a whole datagram: RFC 6946 §4 says
    /// process it, not reassemble it. Tunnel: opened to the exact inner
    /// packet. Transport: the Fragment header stays, its Next Header
    /// restored. ESP in UDP too.
    @Test func atomicFragmentsAreOpened() throws {
        let key = try TestKey(.aes256GCM, seed: 44)
        let core = try makeCore()
        let atomic = { (next: UInt8) -> [UInt8] in [next, 0, 0, 0, 0x12, 0x34, 0x56, 0x78] }
        // Tunnel, IPv6 in IPv6 and IPv4 in IPv6; the reserved bits set must not matter.
        for (inner, next) in [(Inner.ipv6UDP(payload: 100), UInt8(41)), (Inner.ipv4UDP(payload: 77), 4)] {
            for reserved: UInt8 in [0, 6] {
                let sa = try InboundSA(spi: SPI(Self.spi), mode: .tunnel, key: key.handle, esn: false)
                let esp = craftESP(key: key, spi: Self.spi, sequence: 3, esn: false,
                                   plaintext: withTrailer(inner, nextHeader: next), core: core)
                var header = atomic(50)
                header[3] = reserved
                let buffer = PacketBuffer(outerIPv6(nextHeader: 44, payload: header + esp))
                let window = try TestWindow(esn: false)
                #expect(receive(buffer, sa: sa, window: window, core: core) == nil)
                #expect(buffer.bytes == inner)
                #expect(window.window.highestReceived == 3)
            }
        }
        // ESP in UDP behind an atomic fragment.
        let inner = Inner.ipv6UDP(payload: 64)
        let esp = craftESP(key: key, spi: Self.spi, sequence: 4, esn: false,
                           plaintext: withTrailer(inner, nextHeader: 41), core: core)
        let udp = udpHeader(payloadLength: esp.count) + esp
        let inUDP = PacketBuffer(outerIPv6(nextHeader: 44, payload: atomic(17) + udp))
        guard case .esp(let header) = ESPInbound.classify(inUDP.view) else {
            Issue.record("ESP in UDP behind an atomic fragment not recognised"); return
        }
        #expect(header.udpEncapsulated && header.espOffset == 40 + 8 + 8)
        // Transport: the datagram keeps its Fragment header, whose Next Header is UDP again.
        let datagram = Inner.ipv6UDP(payload: 50)
        let espTransport = craftESP(key: key, spi: Self.spi, sequence: 5, esn: false,
                                    plaintext: withTrailer(Array(datagram[40...]), nextHeader: 17), core: core)
        var sealed = Array(datagram[..<40]) + atomic(50) + espTransport
        sealed[6] = 44
        let length = sealed.count - 40
        sealed[4] = UInt8(length >> 8); sealed[5] = UInt8(length & 0xFF)
        let transport = PacketBuffer(sealed)
        let sa = try InboundSA(spi: SPI(Self.spi), mode: .transport, key: key.handle, esn: false)
        #expect(receive(transport, sa: sa, window: try TestWindow(esn: false), core: core) == nil)
        var expected = Array(datagram[..<40]) + atomic(17) + Array(datagram[40...])
        expected[6] = 44
        let expectedLength = expected.count - 40
        expected[4] = UInt8(expectedLength >> 8); expected[5] = UInt8(expectedLength & 0xFF)
        #expect(transport.bytes == expected)
    }

    // MARK: tampering

    /// One bit flipped in SPI, sequence number, IV, ciphertext or ICV: the
    /// right drop, never success, and the window stays where it was.
    @Test(arguments: AEADAlgorithm.allCases)
    func tampering(_ aead: AEADAlgorithm) throws {
        let key = try TestKey(aead, seed: 21)
        let core = try makeCore()
        for esn in [false, true] {
            let out = ESPCell.tunnel4in4.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: esn, udp: false)
            let sa = try InboundSA(spi: SPI(Self.spi), mode: .tunnel, key: key.handle, esn: esn,
                                   selectors: [Inner.selector(ipv6: false)])
            let sequence: UInt64 = esn ? (5 << 32) | 100 : 100
            let buffer = PacketBuffer(Inner.ipv4UDP(payload: 50))
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: SequenceNumber(sequence), core: core) == nil)
            let packet = buffer.bytes
            let window = try TestWindow(esn: esn, highest: sequence - 10)
            let esp = 20
            for bit in 0..<((packet.count - esp) * 8) {
                var bytes = packet
                bytes[esp + bit / 8] ^= UInt8(1 << (bit % 8))
                let tampered = PacketBuffer(bytes)
                guard case .esp(let header) = ESPInbound.classify(tampered.view) else {
                    if bit < 32 && bytes[esp..<(esp + 4)] == [0, 0, 0, 0] { continue }
                    Issue.record("bit \(bit): not ESP"); continue
                }
                let drop = ESPInbound.decapsulate(&tampered.view, header: header, sa: sa, window: &window.window,
                                                  core: core)
                let field = bit < 32 ? "SPI" : bit < 64 ? "seq" : bit < 128 ? "IV" : "ciphertext/ICV"
                switch field {
                case "SPI": #expect(drop == .noSA, "\(field) bit \(bit)")
                case "seq":
                    // Below the window's left edge (no ESN) it never gets to the ICV.
                    // Into the window's marked part, below it (no ESN), or on to the ICV.
                    #expect(drop == .authenticationFailed || drop == .tooOld || drop == .replayed,
                            "\(field) bit \(bit): \(String(describing: drop))")
                default: #expect(drop == .authenticationFailed, "\(field) bit \(bit): \(String(describing: drop))")
                }
                #expect(tampered.guardsIntact)
            }
            #expect(window.window.highestReceived.rawValue == sequence - 10, "no forged packet moved the window")
            // The genuine packet still goes through afterwards.
            let genuine = PacketBuffer(packet)
            #expect(receive(genuine, sa: sa, window: window, core: core) == nil)
            #expect(genuine.bytes == Inner.ipv4UDP(payload: 50))
        }
    }

    /// Every prefix of valid ESP packets, and thousands of random mutations:
    /// no trap, no write outside the buffer, and success only when the change
    /// was in a field the ICV does not cover (outer IP or UDP header).
    @Test func truncatedAndMutatedInputNeverTraps() throws {
        let key = try TestKey(.aes128GCM, seed: 31)
        let core = try makeCore()
        var rng = SplitMix64(seed: 99)
        for cell in ESPCell.allCases {
            for udp in [false, true] {
                let out = cell.outboundSA(spi: SPI(0x3131), key: key.handle, esn: false, udp: udp)
                let inner = Inner.udp(ipv6: cell.innerIPv6, payload: 37)
                let buffer = PacketBuffer(inner)
                #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: 1000, core: core) == nil)
                let packet = buffer.bytes
                let sa = try cell.inboundSA(spi: SPI(0x3131), key: key.handle, esn: false, udp: udp)
                let espOffset = (cell.outerIPv6 ? 40 : 20) + (udp ? 8 : 0)
                for length in 0..<packet.count {
                    let window = try TestWindow(esn: false, highest: 900)
                    let cut = PacketBuffer(Array(packet.prefix(length)), headroom: 0, tailroom: 0)
                    #expect(receive(cut, sa: sa, window: window, core: core) != nil, "\(cell) cut at \(length)")
                    #expect(cut.guardsIntact)
                }
                for _ in 0..<300 {
                    var bytes = packet
                    let flips = Int(rng.next() % 3) + 1
                    var lowest = bytes.count
                    for _ in 0..<flips {
                        let at = Int(rng.next() % UInt64(bytes.count))
                        bytes[at] ^= UInt8(truncatingIfNeeded: rng.next() | 1)
                        lowest = min(lowest, at)
                    }
                    let window = try TestWindow(esn: false, highest: 900)
                    let mutated = PacketBuffer(bytes, headroom: Int(rng.next() % 8), tailroom: Int(rng.next() % 8))
                    let drop = receive(mutated, sa: sa, window: window, core: core)
                    #expect(mutated.guardsIntact)
                    if drop == nil {
                        #expect(lowest < espOffset, "\(cell) udp \(udp): a change at \(lowest) went through")
                    }
                }
                // A header that does not belong to the packet cannot make decapsulate read past it.
                let window = try TestWindow(esn: false, highest: 900)
                let victim = PacketBuffer(packet, headroom: 0, tailroom: 0)
                guard case .esp(var header) = ESPInbound.classify(victim.view) else { continue }
                header.ipLength = packet.count + 100
                #expect(ESPInbound.decapsulate(&victim.view, header: header, sa: sa, window: &window.window,
                                               core: core) == .malformed)
                header.ipLength = packet.count
                header.espOffset = packet.count + 1
                #expect(ESPInbound.decapsulate(&victim.view, header: header, sa: sa, window: &window.window,
                                               core: core) == .malformed)
                #expect(victim.guardsIntact)
            }
        }
    }

    // MARK: crafted trailers

    @Test func craftedTrailers() throws {
        let key = try TestKey(.chacha20Poly1305, seed: 41)
        let core = try makeCore()
        let sa = try Self.tunnelSA(key)
        let inner = Inner.ipv4UDP(payload: 23)  // 51 bytes: 3 bytes of padding
        var sequence: UInt64 = 1
        func run(_ plaintext: [UInt8], _ expected: ESPDrop?, _ label: String,
                 sourceLocation: SourceLocation = #_sourceLocation) throws -> [UInt8] {
            let window = try TestWindow(esn: false)
            let esp = craftESP(key: key, spi: Self.spi, sequence: sequence, esn: false, plaintext: plaintext, core: core)
            sequence += 1
            let buffer = PacketBuffer(outerIPv4(proto: 50, payload: esp))
            let drop = receive(buffer, sa: sa, window: window, core: core)
            #expect(drop == expected, "\(label)", sourceLocation: sourceLocation)
            #expect(buffer.guardsIntact, sourceLocation: sourceLocation)
            return buffer.bytes
        }
        #expect(try run(withTrailer(inner, nextHeader: 4), nil, "well-formed") == inner)
        // Padding 1, 2, 3 — any other byte is refused.
        var bad = withTrailer(inner, nextHeader: 4)
        let pad = ESPTrailer.padLength(payloadLength: inner.count)
        try #require(pad == 3)
        bad[inner.count + 1] = 7
        _ = try run(bad, .badPadding, "padding 1, 7, 3")
        // Pad Length longer than what precedes it.
        _ = try run([1, 2, 200, 4], .badPadding, "pad length 200")
        // Longer padding than needed (traffic-flow confidentiality) is fine.
        let long = inner + (1...7).map { UInt8($0) } + [7, 4]
        try #require(long.count % 4 == 0)
        #expect(try run(long, nil, "7 bytes of padding") == inner)
        // TFC padding after the inner packet (RFC 4303 §2.7) is dropped by the inner length.
        #expect(try run(withTrailer(inner + [9, 9, 9, 9, 9], nextHeader: 4), nil, "TFC") == inner)
        // Dummy packet.
        _ = try run(withTrailer([1, 2, 3, 4, 5], nextHeader: 59), .dummyPacket, "next header 59")
        // Tunnel mode carries IP only.
        _ = try run(withTrailer(inner, nextHeader: 6), .unsupportedNextHeader, "next header 6")
        // Next header and inner version disagree; inner longer than the payload.
        _ = try run(withTrailer(inner, nextHeader: 41), .malformed, "IPv4 packet as 41")
        var longer = inner
        longer[3] &+= 8
        _ = try run(withTrailer(longer, nextHeader: 4), .malformed, "inner length beyond payload")
        // Ciphertext not a multiple of 4, or too short.
        _ = try run(inner + [0, 4], .badLength, "unaligned")
        _ = try run([0, 4], .badLength, "2 bytes")
    }

    /// Transport mode with a Next Header 59 packet: dropped as a dummy packet.
    @Test func dummyPacketThroughTransport() throws {
        let key = try TestKey(.aes256GCM, seed: 42)
        let core = try makeCore()
        var packet = Inner.ipv4UDP(payload: 10)
        packet[9] = 59  // the checksum is recomputed by the transport encapsulation
        let out = OutboundSA(spi: SPI(Self.spi), mode: .transport, key: key.handle, esn: false)
        let buffer = PacketBuffer(packet)
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: 1, core: core) == nil)
        let sa = try InboundSA(spi: SPI(Self.spi), mode: .transport, key: key.handle, esn: false)
        let window = try TestWindow(esn: false)
        #expect(receive(buffer, sa: sa, window: window, core: core) == .dummyPacket)
        #expect(window.window.highestReceived == 1, "a dummy packet is authentic: the window moves")
    }

    // MARK: ECN

    /// Every outer × inner ECN combination against RFC 6040 Figure 4.
    @Test func ecnDecapsulationTable() throws {
        let key = try TestKey(.aes128GCM, seed: 51)
        let core = try makeCore()
        for cell in [ESPCell.tunnel4in4, .tunnel6in4, .tunnel4in6, .tunnel6in6] {
            let out = cell.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: false, udp: false)
            let sa = try cell.inboundSA(spi: SPI(Self.spi), key: key.handle, esn: false, udp: false)
            for innerECN in ECN.allCases {
                for outerECN in ECN.allCases {
                    let dscp: UInt8 = 0x28 << 2
                    let inner = cell.innerIPv6 ? Inner.ipv6UDP(payload: 20, trafficClass: dscp | innerECN.rawValue)
                        : Inner.ipv4UDP(payload: 20, tos: dscp | innerECN.rawValue)
                    let buffer = PacketBuffer(inner)
                    #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: 1, core: core) == nil)
                    // A router on the path marks the outer header (not covered by the ICV).
                    var bytes = buffer.bytes
                    if cell.outerIPv6 {
                        bytes[1] = bytes[1] & 0xCF | outerECN.rawValue << 4
                    } else {
                        bytes[1] = bytes[1] & 0xFC | outerECN.rawValue
                        bytes[10] = 0; bytes[11] = 0
                        let sum = internetChecksum(Array(bytes[0..<20]))
                        bytes[10] = UInt8(sum >> 8); bytes[11] = UInt8(sum & 0xFF)
                    }
                    let marked = PacketBuffer(bytes)
                    let window = try TestWindow(esn: false)
                    let drop = receive(marked, sa: sa, window: window, core: core)
                    let cellResult = ECNTunnel.decapsulate(outer: outerECN, inner: innerECN)
                    let label = "\(cell) inner \(innerECN) outer \(outerECN)"
                    guard let outgoing = cellResult.outgoing else {
                        #expect(drop == .ecnDrop, "\(label)")
                        continue
                    }
                    #expect(drop == nil, "\(label)")
                    var expected = inner
                    if cell.innerIPv6 {
                        expected[1] = expected[1] & 0xCF | outgoing.rawValue << 4
                    } else {
                        expected[1] = expected[1] & 0xFC | outgoing.rawValue
                        expected[10] = 0; expected[11] = 0
                        let sum = internetChecksum(Array(expected[0..<20]))
                        expected[10] = UInt8(sum >> 8); expected[11] = UInt8(sum & 0xFF)
                    }
                    #expect(marked.bytes == expected, "\(label)")
                    if !cell.innerIPv6 { #expect(internetChecksum(Array(marked.bytes[0..<20])) == 0, "\(label)") }
                }
            }
        }
    }

    // MARK: selectors, encapsulation, lookup

    /// Each selector in use is tried, in order, and no slot beyond them
    /// (unused slots hold an any-IPv4 filler, which would match everything).
    @Test func selectorListTriesEverySlotInUse() throws {
        let key = try TestKey(.aes128GCM, seed: 62)
        let core = try makeCore()
        let out = ESPCell.tunnel4in4.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: false, udp: false)
        func udp(_ port: UInt16) -> TrafficSelector {
            TrafficSelector(source: IPPrefix("10.0.0.0/24")!, destination: IPPrefix("10.1.0.0/16")!,
                            proto: .udp, destinationPorts: port...port)!
        }
        let list = [TrafficSelector(source: IPPrefix("::/0")!, destination: IPPrefix("::/0")!)!, udp(50), udp(51), udp(52)]
        var sequence: UInt64 = 1
        for count in 1...SelectorList.capacity {
            let sa = try InboundSA(spi: SPI(Self.spi), mode: .tunnel, key: key.handle, esn: false,
                                   selectors: Array(list.prefix(count)))
            let window = try TestWindow(esn: false)
            for port in UInt16(50)...53 {
                let buffer = PacketBuffer(Inner.ipv4UDP(payload: 10, destinationPort: port))
                #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: SequenceNumber(sequence), core: core) == nil)
                sequence += 1
                // Port 50 + k is selector k + 1's, in use when count > k + 1.
                let expected: ESPDrop? = Int(port) - 50 + 1 < count ? nil : .selectorMismatch
                #expect(receive(buffer, sa: sa, window: window, core: core) == expected, "\(count) selectors, port \(port)")
            }
        }
    }

    @Test func selectorMismatch() throws {
        let key = try TestKey(.aes128GCM, seed: 61)
        let core = try makeCore()
        let out = ESPCell.tunnel4in4.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: false, udp: false)
        let narrow = TrafficSelector(source: IPPrefix("10.0.0.0/24")!, destination: IPPrefix("10.1.0.0/16")!,
                                     proto: .udp, destinationPorts: 53...53)!
        let sa = try InboundSA(spi: SPI(Self.spi), mode: .tunnel, key: key.handle, esn: false, selectors: [narrow])
        let window = try TestWindow(esn: false)
        for (port, expected) in [(UInt16(53), ESPDrop?.none), (54, .selectorMismatch)] {
            let inner = Inner.ipv4UDP(payload: 10, destinationPort: port)
            let buffer = PacketBuffer(inner)
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: SequenceNumber(UInt64(port)), core: core) == nil)
            #expect(receive(buffer, sa: sa, window: window, core: core) == expected, "port \(port)")
        }
        // IPv6 inner through an SA that only carries IPv4.
        let buffer = PacketBuffer(Inner.ipv6UDP(payload: 10))
        let out6 = ESPCell.tunnel6in4.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: false, udp: false)
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: out6, sequence: 100, core: core) == nil)
        #expect(receive(buffer, sa: sa, window: window, core: core) == .selectorMismatch)
        #expect(InboundSA.Mode.tunnel != .transport)
        #expect(throws: InboundSAError.tooManySelectors(5)) {
            try InboundSA(spi: SPI(1000), mode: .tunnel, key: key.handle, esn: false,
                          selectors: [TrafficSelector](repeating: narrow, count: 5))
        }
        #expect(throws: InboundSAError.addressFamiliesDiffer) {
            try InboundSA(spi: SPI(1000), mode: .tunnel, key: key.handle, esn: false, source: .v4(Gateways.v4Peer),
                          destination: .v6(Gateways.v6Local))
        }
    }

    /// RFC 1812 §5.2.2: a tunnel's inner IPv4 packet whose header checksum
    /// is wrong is not forwarded, authenticated or not. The header bytes that
    /// the sum covers are flipped one at a time (the checksum field included).
    @Test func innerIPv4HeaderChecksumIsVerified() throws {
        let key = try TestKey(.aes128GCM, seed: 62)
        let core = try makeCore()
        let out = ESPCell.tunnel4in4.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: false, udp: false)
        let sa = try InboundSA(spi: SPI(Self.spi), mode: .tunnel, key: key.handle, esn: false)
        let window = try TestWindow(esn: false)
        var sequence: UInt64 = 1
        for byte in [nil] + [1, 8, 10, 11, 12, 19] {
            var inner = Inner.ipv4UDP(payload: 10)
            if let byte { inner[byte] ^= 0x04 }
            let buffer = PacketBuffer(inner)
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: SequenceNumber(sequence), core: core) == nil)
            sequence += 1
            #expect(receive(buffer, sa: sa, window: window, core: core) == (byte == nil ? nil : .malformed),
                    "inner header byte \(byte.map(String.init) ?? "none") flipped")
        }
    }

    @Test func encapsulationMismatch() throws {
        let key = try TestKey(.aes128GCM, seed: 62)
        let core = try makeCore()
        let plainSA = try Self.tunnelSA(key, udp: false)
        let udpSA = try Self.tunnelSA(key, udp: true)
        let window = try TestWindow(esn: false)
        let inner = Inner.ipv4UDP(payload: 12)
        let esp = craftESP(key: key, spi: Self.spi, sequence: 5, esn: false, plaintext: withTrailer(inner, nextHeader: 4),
                           core: core)
        let plain = outerIPv4(proto: 50, payload: esp)
        let inUDP = outerIPv4(proto: 17, payload: udpHeader(source: 999, payloadLength: esp.count) + esp)
        #expect(receive(PacketBuffer(inUDP), sa: plainSA, window: window, core: core) == .encapsulationMismatch)
        #expect(receive(PacketBuffer(plain), sa: udpSA, window: window, core: core) == .encapsulationMismatch)
        // The wrong local port.
        let ports = NATTraversalPorts([4500, 4501])!
        let otherPort = outerIPv4(proto: 17, payload: udpHeader(destination: 4501, payloadLength: esp.count) + esp)
        #expect(receive(PacketBuffer(otherPort), sa: udpSA, window: window, core: core, natPorts: ports)
                == .encapsulationMismatch)
        // A NAT changed the source port (999 instead of 4500): accepted.
        let moved = PacketBuffer(inUDP)
        #expect(receive(moved, sa: udpSA, window: window, core: core) == nil)
        #expect(moved.bytes == inner)
    }

    @Test func lookupByAddresses() throws {
        let key = try TestKey(.aes128GCM, seed: 63)
        let header = ESPInboundHeader(spi: SPI(Self.spi), sequenceLow: 1, espOffset: 20, ipLength: 100,
                                      protocolFieldOffset: 9, udpEncapsulated: false, udpSourcePort: 0,
                                      udpDestinationPort: 0, source: RawIPAddress(Gateways.v4Peer),
                                      destination: RawIPAddress(Gateways.v4Local))
        let full = try Self.tunnelSA(key)
        #expect(full.matches(header))
        var elsewhere = header
        elsewhere.source = RawIPAddress(IPv4Address(203, 0, 113, 1))
        #expect(!full.matches(elsewhere))
        elsewhere = header
        elsewhere.destination = RawIPAddress(IPv4Address(192, 0, 2, 99))
        #expect(!full.matches(elsewhere))
        let destinationOnly = try InboundSA(spi: SPI(Self.spi), mode: .tunnel, key: key.handle, esn: false,
                                           destination: .v4(Gateways.v4Local))
        var fromAnywhere = header
        fromAnywhere.source = RawIPAddress(IPv4Address(203, 0, 113, 1))
        #expect(destinationOnly.matches(fromAnywhere))
        let spiOnly = try InboundSA(spi: SPI(Self.spi), mode: .transport, key: key.handle, esn: false)
        #expect(spiOnly.matches(elsewhere))
        var otherSPI = header
        otherSPI.spi = SPI(Self.spi + 1)
        #expect(!spiOnly.matches(otherSPI))
        #expect(RawIPAddress(.v6(Gateways.v6Peer)).ipAddress == .v6(Gateways.v6Peer))
        #expect(RawIPAddress(Gateways.v4Peer).description == "198.51.100.9")
    }

    // MARK: replay

    /// Out-of-order delivery inside the window, duplicates, stragglers, a
    /// forged packet far ahead, and ESN across 2^32 with reordering.
    @Test(arguments: [false, true])
    func replayInterplay(_ esn: Bool) throws {
        let key = try TestKey(.aes256GCM, seed: 71)
        let core = try makeCore()
        let out = ESPCell.tunnel4in4.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: esn, udp: false)
        let sa = try ESPCell.tunnel4in4.inboundSA(spi: SPI(Self.spi), key: key.handle, esn: esn, udp: false)
        let base: UInt64 = esn ? (1 << 32) - 40 : 1
        let window = try TestWindow(esn: esn, size: 64, highest: base - 1)
        var packets: [(UInt64, [UInt8])] = []
        for i in 0..<100 {
            let buffer = PacketBuffer(Inner.ipv4UDP(payload: i, seed: UInt64(i)))
            let number = base + UInt64(i)
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: SequenceNumber(number), core: core) == nil)
            packets.append((number, buffer.bytes))
        }
        func deliver(_ index: Int) -> ESPDrop? {
            receive(PacketBuffer(packets[index].1), sa: sa, window: window, core: core)
        }
        // 0...39 in reverse (all inside the 64-packet window once 39 arrives first).
        for i in (0..<40).reversed() { #expect(deliver(i) == nil, "packet \(i)") }
        for i in [0, 17, 39] { #expect(deliver(i) == .replayed, "duplicate \(i)") }
        // Jump ahead to 99: 35 and below are now left of the window.
        // Jump ahead to 99: the window is now 36...99.
        #expect(deliver(99) == nil)
        #expect(deliver(40) == nil, "40 is 59 behind 99: inside, not seen yet")
        #expect(deliver(36) == .replayed, "63 behind: inside, seen")
        // 35 is 64 behind: too old; with ESN its low half is taken as the next
        // subspace (RFC 4303 A2.2) and the ICV fails instead.
        #expect(deliver(35) == (esn ? .authenticationFailed : .tooOld))
        // A forged packet far ahead does not move the window.
        var forged = packets[98].1
        forged[24] = 0x7F  // sequence number far ahead
        #expect(receive(PacketBuffer(forged), sa: sa, window: window, core: core) == .authenticationFailed)
        #expect(window.window.highestReceived.rawValue == base + 99)
        #expect(deliver(98) == nil)
        if esn { #expect(window.window.highestReceived.rawValue > 1 << 32, "crossed 2^32") }
    }

    /// Without ESN a number left of the window is `.tooOld`; with ESN the
    /// same low half is taken as the next subspace and fails the ICV.
    @Test func wrapInferenceFailsTheICVNotTheWindow() throws {
        let key = try TestKey(.aes128GCM, seed: 72)
        let core = try makeCore()
        let out = ESPCell.tunnel4in4.outboundSA(spi: SPI(Self.spi), key: key.handle, esn: true, udp: false)
        let sa = try ESPCell.tunnel4in4.inboundSA(spi: SPI(Self.spi), key: key.handle, esn: true, udp: false)
        let window = try TestWindow(esn: true, highest: (7 << 32) | 1000)
        let buffer = PacketBuffer(Inner.ipv4UDP(payload: 8))
        // Sent in subspace 7 long ago (low half 10, far left of the window).
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: SequenceNumber((7 << 32) | 10), core: core) == nil)
        #expect(receive(buffer, sa: sa, window: window, core: core) == .authenticationFailed)
        #expect(window.window.highestReceived.rawValue == (7 << 32) | 1000)
    }
}
