// The outbound path's refusals and limits: sequence exhaustion (2^32 − 1
// without ESN, 2^64 − 1 with), malformed inner packets, fragments in
// transport mode, packets that would outgrow the IP length field, and the
// SA record's reconstruction of its mode.

import Crypto
import Foundation
@testable import IPsec
import Packet
import Testing

@Suite struct ESPOutboundTests {
    @Test func sequenceExhaustionWithAndWithoutESN() throws {
        let key = try TestKey(.aes128GCM, seed: 81)
        let core = try makeCore()
        for esn in [false, true] {
            let sa = ESPCell.tunnel4in4.outboundSA(spi: SPI(0x8181), key: key.handle, esn: esn, udp: false)
            let last = SequenceNumber.limit(esn: esn)
            var sequence = try OutboundSequence(esn: esn, next: last)
            let inner = Inner.ipv4UDP(payload: 9)
            let buffer = PacketBuffer(inner)
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: &sequence, core: core) == nil)
            #expect(be32(buffer.bytes, 24) == UInt32.max, "the last number goes out")
            // The peer takes it (its window was just below).
            let inbound = try ESPCell.tunnel4in4.inboundSA(spi: SPI(0x8181), key: key.handle, esn: esn, udp: false)
            let window = try TestWindow(esn: esn, highest: last.rawValue - 1)
            #expect(receive(buffer, sa: inbound, window: window, core: core) == nil)
            #expect(buffer.bytes == inner)
            // Then the SA refuses, every time, without touching the packet.
            for _ in 0..<3 {
                let refused = PacketBuffer(inner)
                #expect(ESPOutbound.encapsulate(&refused.view, sa: sa, sequence: &sequence, core: core)
                        == .sequenceExhausted)
                #expect(refused.bytes == inner && refused.guardsIntact)
            }
            #expect(sequence.isExhausted)
        }
        // A number beyond the SA's space given directly is refused too.
        let sa = ESPCell.tunnel4in4.outboundSA(spi: SPI(0x8181), key: key.handle, esn: false, udp: false)
        let buffer = PacketBuffer(Inner.ipv4UDP(payload: 9))
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: SequenceNumber(1 << 32), core: core)
                == .sequenceExhausted)
    }

    @Test func malformedInnerPackets() throws {
        let key = try TestKey(.aes128GCM, seed: 82)
        let core = try makeCore()
        let good4 = Inner.ipv4UDP(payload: 20)
        let good6 = Inner.ipv6UDP(payload: 20)
        var cases: [(String, [UInt8])] = [
            ("empty", []), ("short", Array(good4.prefix(19))), ("IPv6 short", Array(good6.prefix(39))),
            ("version 5", [0x55] + good4.dropFirst()), ("version 0", [UInt8](repeating: 0, count: 40)),
        ]
        var ihl4 = good4; ihl4[0] = 0x44; cases.append(("IHL 4", ihl4))
        var ihlLong = good4; ihlLong[0] = 0x4F; cases.append(("IHL 15 beyond length", ihlLong))
        var longer4 = good4; longer4[3] &+= 1; cases.append(("IPv4 length beyond bytes", longer4))
        var shorter4 = good4; shorter4[2] = 0; shorter4[3] = 19; cases.append(("IPv4 length below header", shorter4))
        var longer6 = good6; longer6[5] &+= 1; cases.append(("IPv6 length beyond bytes", longer6))
        for cell in ESPCell.allCases {
            let sa = cell.outboundSA(spi: SPI(0x8282), key: key.handle, esn: false, udp: true)
            for (label, bytes) in cases {
                let buffer = PacketBuffer(bytes)
                #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 1, core: core) == .malformed,
                        "\(cell) \(label)")
                #expect(buffer.bytes == bytes && buffer.guardsIntact, "\(cell) \(label)")
            }
        }
        // An IPv6 extension header that runs past the packet (transport mode walks them).
        var badExtension = good6
        badExtension[6] = 0
        badExtension[41] = 200
        let buffer = PacketBuffer(badExtension)
        let sa = ESPCell.transport6.outboundSA(spi: SPI(0x8282), key: key.handle, esn: false, udp: false)
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 1, core: core) == .malformed)
    }

    @Test func transportRefusesFragments() throws {
        let key = try TestKey(.aes128GCM, seed: 83)
        let core = try makeCore()
        let sa4 = ESPCell.transport4.outboundSA(spi: SPI(0x8383), key: key.handle, esn: false, udp: false)
        for flags: (UInt8, UInt8) in [(0x20, 0), (0x00, 0x10), (0x20, 0x10)] {
            var packet = Inner.ipv4UDP(payload: 16, df: false)
            packet[6] = flags.0; packet[7] = flags.1
            let buffer = PacketBuffer(packet)
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa4, sequence: 1, core: core) == .fragmented)
        }
        // IPv6 with a Fragment header: M set, an offset, or both. (An atomic
        // one, neither, is a whole datagram: ESPScapyPeerTests.)
        let sa6 = ESPCell.transport6.outboundSA(spi: SPI(0x8383), key: key.handle, esn: false, udp: false)
        for offsetAndFlags: (UInt8, UInt8) in [(0, 1), (0, 8), (1, 1), (0x80, 0)] {
            let buffer = PacketBuffer(Inner.ipv6UDPFragment(payload: 16, offsetAndFlags: offsetAndFlags))
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa6, sequence: 1, core: core) == .fragmented)
        }
        // A Fragment header cut short by the datagram's end.
        var short = Inner.ipv6UDPFragment(payload: 16, offsetAndFlags: (0, 0))
        short = Array(short.prefix(44))
        short[4] = 0; short[5] = 4
        let cut = PacketBuffer(short)
        #expect(ESPOutbound.encapsulate(&cut.view, sa: sa6, sequence: 1, core: core) == .malformed)
        // Tunnel mode takes fragments as they are.
        var fragment = Inner.ipv4UDP(payload: 16, df: false)
        fragment[6] = 0x20
        let tunnel = ESPCell.tunnel4in4.outboundSA(spi: SPI(0x8383), key: key.handle, esn: false, udp: false)
        let carried = PacketBuffer(fragment)
        #expect(ESPOutbound.encapsulate(&carried.view, sa: tunnel, sequence: 1, core: core) == nil)
    }

    @Test func refusesPacketsBeyondTheLengthField() throws {
        let key = try TestKey(.chacha20Poly1305, seed: 84)
        let core = try makeCore()
        // Inner packets that fit alone but not with what ESP adds (tunnel: 20 +
        // 8 + 16 + trailer + 16; transport: 8 + 16 + trailer + 16).
        let inner = Inner.ipv4UDP(payload: 65475 - 28)
        for (cell, bytes) in [(ESPCell.tunnel4in4, inner), (.transport4, Inner.ipv4UDP(payload: 65515 - 28))] {
            let sa = cell.outboundSA(spi: SPI(0x8484), key: key.handle, esn: false, udp: true)
            let buffer = PacketBuffer(bytes, headroom: 128, tailroom: 128)
            #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 1, core: core) == .tooBig, "\(cell)")
            #expect(buffer.bytes == bytes)
        }
        // Over IPv6 the payload length excludes the 40-byte header: the same packet fits.
        let sa = ESPCell.tunnel4in6.outboundSA(spi: SPI(0x8484), key: key.handle, esn: false, udp: false)
        let buffer = PacketBuffer(inner, headroom: 128, tailroom: 128)
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 1, core: core) == nil)
        let inbound = try ESPCell.tunnel4in6.inboundSA(spi: SPI(0x8484), key: key.handle, esn: false, udp: false)
        let window = try TestWindow(esn: false)
        #expect(receive(buffer, sa: inbound, window: window, core: core) == nil)
        #expect(buffer.bytes == inner)
    }

    @Test func saRecordKeepsItsConfiguration() throws {
        let key = try TestKey(.aes128GCM, seed: 85)
        let v4 = OuterHeader.ipv4(source: Gateways.v4Local, destination: Gateways.v4Peer, ttl: 17)
        let v6 = OuterHeader.ipv6(source: Gateways.v6Local, destination: Gateways.v6Peer, hopLimit: 3)
        for mode in [ESPMode.tunnel(v4), .tunnel(v6), .transport] {
            for encap in [(UInt16, UInt16)?.none, (4500, 4501)] {
                let sa = OutboundSA(spi: SPI(0x8585), mode: mode, key: key.handle, esn: true,
                                    udpEncapsulation: encap, df: .set)
                #expect(sa.mode == mode)
                #expect(sa.udpEncapsulation?.source == encap?.0 && sa.udpEncapsulation?.destination == encap?.1)
                #expect(sa.esn && sa.df == .set && sa.spi == SPI(0x8585))
                let ip = mode == .transport ? 0 : (mode == .tunnel(v6) ? 40 : 20)
                #expect(sa.headerOverhead == ip + (encap == nil ? 0 : 8) + 16)
            }
        }
        #expect(OuterHeader.ipv4(source: Gateways.v4Local, destination: Gateways.v4Peer)
                == .ipv4(source: Gateways.v4Local, destination: Gateways.v4Peer, ttl: OuterHeader.defaultTTL))
        #expect(_isPOD(OutboundSA.self) && _isPOD(InboundSA.self) && _isPOD(PacketView.self))
        #expect(_isPOD(ESPInboundHeader.self) && _isPOD(ESPClassification.self) && _isPOD(TrafficSelector.self))
        #expect(Set(ESPDrop.allCases.map(\.name)).count == ESPDrop.allCases.count)
        #expect(ESPDrop.allCases.allSatisfy { $0.name.allSatisfy { $0.isLowercase || $0 == "_" } })
    }
}
