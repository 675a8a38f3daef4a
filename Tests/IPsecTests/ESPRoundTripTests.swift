// Encapsulate then classify + decapsulate gives back the exact inner packet,
// for every AEAD × mode and family mix × ESN (off, and crossing 2^32) × plain
// or UDP-encapsulated ESP, with the outer headers checked field by field.

import Crypto
import Foundation
@testable import IPsec
import Packet
import Testing

/// A mode and family mix of the matrix.
enum ESPCell: String, CaseIterable, CustomTestStringConvertible {
    case tunnel4in4, tunnel6in6, tunnel4in6, tunnel6in4, transport4, transport6

    var innerIPv6: Bool { self == .tunnel6in6 || self == .tunnel6in4 || self == .transport6 }
    var isTunnel: Bool { self != .transport4 && self != .transport6 }
    /// The IPv6-ness of the header in front of ESP.
    var outerIPv6: Bool {
        switch self {
        case .tunnel6in6, .tunnel4in6, .transport6: true
        default: false
        }
    }
    var testDescription: String { rawValue }

    func outboundSA(spi: SPI, key: AEADKeyHandle, esn: Bool, udp: Bool, df: DFPolicy = .copy,
                    ttl: UInt8 = 64) -> OutboundSA {
        OutboundSA(spi: spi, mode: isTunnel ? .tunnel(Gateways.outbound(ipv6: outerIPv6, ttl: ttl)) : .transport,
                   key: key, esn: esn, udpEncapsulation: udp ? (4500, 4500) : nil, df: df)
    }

    func inboundSA(spi: SPI, key: AEADKeyHandle, esn: Bool, udp: Bool) throws -> InboundSA {
        // The receiving side: outer source is our peer's "local", destination its "peer".
        let source: IPAddress? = isTunnel ? (outerIPv6 ? .v6(Gateways.v6Local) : .v4(Gateways.v4Local)) : nil
        let destination: IPAddress? = isTunnel ? (outerIPv6 ? .v6(Gateways.v6Peer) : .v4(Gateways.v4Peer)) : nil
        return try InboundSA(spi: spi, mode: isTunnel ? .tunnel : .transport, key: key, esn: esn, source: source,
                             destination: destination, udpEncapsulation: udp ? (4500, 4500) : nil,
                             selectors: [Inner.selector(ipv6: innerIPv6)])
    }
}

/// Checks the headers `encapsulate` wrote in front of ESP.
func checkOuter(_ out: [UInt8], inner: [UInt8], cell: ESPCell, sa: OutboundSA, sequence: UInt64, udp: Bool,
                ttl: UInt8 = 64, sourceLocation: SourceLocation = #_sourceLocation) {
    let ipHeaderLength: Int
    let innerTOS: UInt8 = cell.innerIPv6 ? UInt8(truncatingIfNeeded: be32(inner, 0) >> 20) : inner[1]
    if cell.outerIPv6 {
        #expect(out[0] >> 4 == 6, sourceLocation: sourceLocation)
        #expect(Int(be16(out, 4)) + 40 == out.count, sourceLocation: sourceLocation)
        if cell.isTunnel {
            #expect(UInt8(truncatingIfNeeded: be32(out, 0) >> 20) == innerTOS, "DSCP and ECN copied",
                    sourceLocation: sourceLocation)
            let innerFlow: UInt32 = cell.innerIPv6 ? be32(inner, 0) & 0xFFFFF : 0
            #expect(be32(out, 0) & 0xFFFFF == innerFlow, sourceLocation: sourceLocation)
            #expect(out[7] == ttl, sourceLocation: sourceLocation)
            #expect(Array(out[8..<24]) == Gateways.v6Local.bytes, sourceLocation: sourceLocation)
            #expect(Array(out[24..<40]) == Gateways.v6Peer.bytes, sourceLocation: sourceLocation)
        } else {
            #expect(Array(out[0..<4]) == Array(inner[0..<4]), sourceLocation: sourceLocation)
            #expect(Array(out[7..<40]) == Array(inner[7..<40]), sourceLocation: sourceLocation)
        }
        #expect(out[6] == (udp ? 17 : 50), sourceLocation: sourceLocation)
        ipHeaderLength = 40
    } else {
        #expect(out[0] == 0x45, sourceLocation: sourceLocation)
        #expect(Int(be16(out, 2)) == out.count, sourceLocation: sourceLocation)
        #expect(internetChecksum(Array(out[0..<20])) == 0, "outer IPv4 checksum", sourceLocation: sourceLocation)
        #expect(out[9] == (udp ? 17 : 50), sourceLocation: sourceLocation)
        if cell.isTunnel {
            #expect(out[1] == innerTOS, "DSCP and ECN copied", sourceLocation: sourceLocation)
            #expect(out[8] == ttl, sourceLocation: sourceLocation)
            #expect(be16(out, 6) & 0x3FFF == 0, "not a fragment", sourceLocation: sourceLocation)
            let innerDF = !cell.innerIPv6 && be16(inner, 6) & 0x4000 != 0
            let expectDF = sa.df == .set || (sa.df == .copy && innerDF)
            #expect((be16(out, 6) & 0x4000 != 0) == expectDF, "DF \(sa.df)", sourceLocation: sourceLocation)
            #expect(be16(out, 4) == UInt16(truncatingIfNeeded: sequence) &+ sa.identificationOffset,
                    sourceLocation: sourceLocation)
            #expect(Array(out[12..<16]) == Gateways.v4Local.bytes, sourceLocation: sourceLocation)
            #expect(Array(out[16..<20]) == Gateways.v4Peer.bytes, sourceLocation: sourceLocation)
        } else {
            #expect(out[1] == inner[1] && Array(out[4..<9]) == Array(inner[4..<9]), sourceLocation: sourceLocation)
            #expect(Array(out[12..<20]) == Array(inner[12..<20]), sourceLocation: sourceLocation)
        }
        ipHeaderLength = 20
    }
    var esp = ipHeaderLength
    if udp {
        #expect(be16(out, esp) == 4500 && be16(out, esp + 2) == 4500, sourceLocation: sourceLocation)
        #expect(Int(be16(out, esp + 4)) == out.count - ipHeaderLength, sourceLocation: sourceLocation)
        if cell.outerIPv6 {
            // Pseudo-header + UDP datagram sums to zero.
            var pseudo = Array(out[8..<40])
            let length = UInt32(out.count - 40)
            pseudo += [UInt8(length >> 24), UInt8((length >> 16) & 0xFF), UInt8((length >> 8) & 0xFF),
                       UInt8(length & 0xFF), 0, 0, 0, 17]
            #expect(be16(out, esp + 6) != 0, sourceLocation: sourceLocation)
            #expect(internetChecksum(pseudo + Array(out[40...])) == 0, "UDP checksum over IPv6",
                    sourceLocation: sourceLocation)
        } else {
            #expect(be16(out, esp + 6) == 0, "UDP checksum 0 over IPv4", sourceLocation: sourceLocation)
        }
        esp += 8
    }
    #expect(be32(out, esp) == sa.spi.rawValue, sourceLocation: sourceLocation)
    #expect(be32(out, esp + 4) == UInt32(truncatingIfNeeded: sequence), sourceLocation: sourceLocation)
    #expect(Array(out[(esp + 8)..<(esp + 16)]) == (0..<8).map { UInt8(truncatingIfNeeded: sequence >> (56 - 8 * $0)) },
            "IV = sequence number", sourceLocation: sourceLocation)
    let cipherLength = out.count - esp - 16 - 16
    #expect(cipherLength % 4 == 0 && cipherLength >= 4, sourceLocation: sourceLocation)
    let payload = cell.isTunnel ? inner.count : inner.count - (cell.innerIPv6 ? 40 : 20)
    #expect(cipherLength - payload - 2 >= 0 && cipherLength - payload - 2 <= 3, "minimal padding",
            sourceLocation: sourceLocation)
}

@Suite struct ESPRoundTripTests {
    static let aeads = AEADAlgorithm.allCases
    static let payloadSizes = [0, 1, 2, 3, 17, 64, 255, 1400]

    @Test(arguments: AEADAlgorithm.allCases, ESPCell.allCases)
    func roundTrip(_ aead: AEADAlgorithm, _ cell: ESPCell) throws {
        let key = try TestKey(aead, seed: UInt64(aead.rawValue) &* 977)
        let core = try makeCore()
        let spi = SPI(0x1000_0000 | UInt32(aead.rawValue))
        for esn in [false, true] {
            for udp in [false, true] {
                let outbound = cell.outboundSA(spi: spi, key: key.handle, esn: esn, udp: udp)
                let inbound = try cell.inboundSA(spi: spi, key: key.handle, esn: esn, udp: udp)
                // Without ESN: the first numbers and the last one; with ESN: across 2^32.
                let first: UInt64 = esn ? (1 << 32) - 3 : 1
                let window = try TestWindow(esn: esn, highest: first - 1)
                var sequence = try OutboundSequence(esn: esn, next: SequenceNumber(first))
                var sizes = Self.payloadSizes
                if !esn { sizes.append(99) }  // sent with the last number, 2^32 − 1
                for (i, size) in sizes.enumerated() {
                    if !esn && i == sizes.count - 1 {
                        sequence = try OutboundSequence(esn: false, next: SequenceNumber(UInt64(UInt32.max)))
                    }
                    let inner = Inner.udp(ipv6: cell.innerIPv6, payload: size, seed: UInt64(i))
                    let buffer = PacketBuffer(inner)
                    let number = sequence.next!.rawValue
                    let drop = ESPOutbound.encapsulate(&buffer.view, sa: outbound, sequence: &sequence, core: core)
                    let label = "\(aead) \(cell) esn \(esn) udp \(udp) size \(size) seq \(number)"
                    try #require(drop == nil, "\(label): \(String(describing: drop))")
                    #expect(buffer.guardsIntact, "\(label)")
                    let out = buffer.bytes
                    checkOuter(out, inner: inner, cell: cell, sa: outbound, sequence: number, udp: udp)

                    guard case .esp(let header) = ESPInbound.classify(buffer.view) else {
                        Issue.record("\(label): not classified as ESP")
                        continue
                    }
                    #expect(header.spi == spi && header.sequenceLow == UInt32(truncatingIfNeeded: number))
                    #expect(header.udpEncapsulated == udp)
                    #expect(inbound.matches(header), "\(label)")
                    let back = ESPInbound.decapsulate(&buffer.view, header: header, sa: inbound,
                                                      window: &window.window, core: core)
                    #expect(back == nil, "\(label): \(String(describing: back))")
                    #expect(buffer.bytes == inner, "\(label)")
                    #expect(buffer.guardsIntact, "\(label)")
                    #expect(window.window.highestReceived.rawValue == number, "\(label)")
                }
                if !esn {
                    // 2^32 − 1 was the last: the SA refuses from now on.
                    let buffer = PacketBuffer(Inner.udp(ipv6: cell.innerIPv6, payload: 10))
                    #expect(ESPOutbound.encapsulate(&buffer.view, sa: outbound, sequence: &sequence, core: core)
                            == .sequenceExhausted)
                    #expect(buffer.bytes == Inner.udp(ipv6: cell.innerIPv6, payload: 10))
                } else {
                    #expect(window.window.highestReceived.rawValue > 1 << 32, "crossed 2^32")
                }
            }
        }
    }

    /// Every engine that can serve an AEAD produces the same ESP packet.
    @Test(arguments: AEADAlgorithm.allCases)
    func enginesAgree(_ aead: AEADAlgorithm) throws {
        let engines = [CryptoEngineKind.ipsecMB, .sodium].filter { (try? TestKey(aead, material: [UInt8](
            repeating: 7, count: aead.keyMaterialLength), engine: $0)) != nil }
        guard engines.count == 2 else { return }
        let material = (0..<aead.keyMaterialLength).map { UInt8($0 * 3 + 1) }
        let core = try makeCore()
        var outputs: [[UInt8]] = []
        for engine in engines {
            let key = try TestKey(aead, material: material, engine: engine)
            let sa = ESPCell.tunnel6in4.outboundSA(spi: SPI(0x4242), key: key.handle, esn: true, udp: true)
            let buffer = PacketBuffer(Inner.ipv6UDP(payload: 333))
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: SequenceNumber(0x1_0000_0007),
                                            core: core) == nil)
            outputs.append(buffer.bytes)
        }
        #expect(outputs[0] == outputs[1])
    }

    /// DF copy | set | clear, DSCP and every ECN value copied (RFC 6040
    /// normal mode), and a non-default TTL / hop limit.
    @Test(arguments: [DFPolicy.copy, .set, .clear])
    func outerHeaderPolicy(_ df: DFPolicy) throws {
        let key = try TestKey(.aes128GCM, seed: 5)
        let core = try makeCore()
        for cell in [ESPCell.tunnel4in4, .tunnel6in4, .tunnel4in6, .tunnel6in6] {
            for tos: UInt8 in [0x00, 0xB8, 0xB9, 0xBA, 0xBB, 0x03, 0x29] {
                for innerDF in [false, true] {
                    let sa = cell.outboundSA(spi: SPI(0x777), key: key.handle, esn: false, udp: false, df: df,
                                             ttl: 200)
                    let inner = cell.innerIPv6 ? Inner.ipv6UDP(payload: 20, trafficClass: tos)
                        : Inner.ipv4UDP(payload: 20, tos: tos, df: innerDF)
                    let buffer = PacketBuffer(inner)
                    #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 77, core: core) == nil)
                    checkOuter(buffer.bytes, inner: inner, cell: cell, sa: sa, sequence: 77, udp: false, ttl: 200)
                }
            }
        }
    }

    /// Transport mode keeps IPv4 options and IPv6 extension headers in front
    /// of ESP, and the inbound path restores them.
    @Test func transportKeepsOptionsAndExtensionHeaders() throws {
        let key = try TestKey(.chacha20Poly1305, seed: 9)
        let core = try makeCore()
        // IPv4 with 8 bytes of options (NOP NOP NOP NOP, then EOL).
        let spec = IPv4Spec(source: Inner.v4Source, destination: Inner.v4Destination, options: [1, 1, 1, 1, 0, 0, 0, 0])
        let builder = PacketBuilder(network: .ipv4(spec), transport: .udp(sourcePort: 7, destinationPort: 9))
        let v4 = Array(try builder.build(payloadLength: 45)[builder.networkOffset...])
        // IPv6 with a Hop-by-Hop header (8 bytes: PadN) and a Destination Options header before UDP.
        var v6 = Inner.ipv6UDP(payload: 30)
        let udpPart = Array(v6[40...])
        v6 = Array(v6[0..<40])
        v6[6] = 0  // Hop-by-Hop
        let hopByHop: [UInt8] = [60, 0, 1, 4, 0, 0, 0, 0]
        let destinationOptions: [UInt8] = [17, 0, 1, 4, 0, 0, 0, 0]
        v6 += hopByHop + destinationOptions + udpPart
        let plen = v6.count - 40
        v6[4] = UInt8(plen >> 8); v6[5] = UInt8(plen & 0xFF)

        for (inner, isIPv6) in [(v4, false), (v6, true)] {
            for udp in [false, true] {
                let cell: ESPCell = isIPv6 ? .transport6 : .transport4
                let out = cell.outboundSA(spi: SPI(0x900), key: key.handle, esn: false, udp: udp)
                let buffer = PacketBuffer(inner)
                #expect(ESPOutbound.encapsulate(&buffer.view, sa: out, sequence: 3, core: core) == nil)
                let bytes = buffer.bytes
                let headerLength = isIPv6 ? 56 : 28
                let protocolField = isIPv6 ? 40 + 8 : 9  // the Destination Options header's Next Header
                #expect(bytes[protocolField] == (udp ? 17 : 50))
                if isIPv6 {
                    #expect(Array(bytes[0..<6]) == Array(inner[0..<4]) + [UInt8((bytes.count - 40) >> 8),
                                                                           UInt8((bytes.count - 40) & 0xFF)])
                    #expect(Array(bytes[40..<48]) == hopByHop)
                } else {
                    #expect(Array(bytes[20..<28]) == Array(inner[20..<28]))
                    #expect(internetChecksum(Array(bytes[0..<28])) == 0)
                    #expect(Int(be16(bytes, 2)) == bytes.count)
                }
                #expect(be32(bytes, headerLength + (udp ? 8 : 0)) == 0x900)
                let window = try TestWindow(esn: false)
                let sa = try cell.inboundSA(spi: SPI(0x900), key: key.handle, esn: false, udp: udp)
                #expect(receive(buffer, sa: sa, window: window, core: core) == nil)
                #expect(buffer.bytes == inner)
                #expect(buffer.guardsIntact)
            }
        }
    }

    /// Headroom and tailroom exactly enough work; one byte less is refused
    /// before anything is written.
    @Test(arguments: ESPCell.allCases)
    func exactRoom(_ cell: ESPCell) throws {
        let key = try TestKey(.aes256GCM, seed: 11)
        let core = try makeCore()
        for udp in [false, true] {
            let sa = cell.outboundSA(spi: SPI(0x1234), key: key.handle, esn: false, udp: udp)
            for size in [0, 1, 2, 3] {
                let inner = Inner.udp(ipv6: cell.innerIPv6, payload: size)
                let payload = cell.isTunnel ? inner.count : inner.count - (cell.innerIPv6 ? 40 : 20)
                let tail = ESPTrailer.trailerLength(payloadLength: payload) + 16
                let head = sa.headerOverhead
                let exact = PacketBuffer(inner, headroom: head, tailroom: tail)
                #expect(ESPOutbound.encapsulate(&exact.view, sa: sa, sequence: 1, core: core) == nil)
                #expect(exact.view.headroom == 0 && exact.view.tailroom == 0)
                #expect(exact.guardsIntact)
                let short = PacketBuffer(inner, headroom: head - 1, tailroom: tail)
                #expect(ESPOutbound.encapsulate(&short.view, sa: sa, sequence: 1, core: core) == .noHeadroom)
                #expect(short.bytes == inner && short.guardsIntact)
                let narrow = PacketBuffer(inner, headroom: head, tailroom: tail - 1)
                #expect(ESPOutbound.encapsulate(&narrow.view, sa: sa, sequence: 1, core: core) == .noTailroom)
                #expect(narrow.bytes == inner && narrow.guardsIntact)
            }
        }
    }

    /// Trailing bytes after the IP datagram (Ethernet padding of a short
    /// frame) are not encrypted, and may be used as tailroom.
    @Test func trailingPaddingIsNotEncrypted() throws {
        let key = try TestKey(.aes128GCM, seed: 12)
        let core = try makeCore()
        let inner = Inner.ipv4UDP(payload: 2)  // 30 bytes, padded to 46 by Ethernet
        let sa = ESPCell.tunnel4in4.outboundSA(spi: SPI(0x999), key: key.handle, esn: false, udp: false)
        let buffer = PacketBuffer(inner + [UInt8](repeating: 0, count: 16), tailroom: 4)
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 1, core: core) == nil)
        #expect(buffer.view.length == 20 + 16 + 32 + 16)
        let inbound = try ESPCell.tunnel4in4.inboundSA(spi: SPI(0x999), key: key.handle, esn: false, udp: false)
        let window = try TestWindow(esn: false)
        #expect(receive(buffer, sa: inbound, window: window, core: core) == nil)
        #expect(buffer.bytes == inner)
        #expect(buffer.guardsIntact)
    }
}
