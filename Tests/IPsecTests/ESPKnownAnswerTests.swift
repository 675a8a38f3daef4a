// Published ESP packets: RFC 7634 Appendix A (ChaCha20-Poly1305, tunnel mode,
// a whole IPv4 packet) through both directions, and the AES-GCM ESP cases of
// draft-mcgrew-gcm-test-01 through the inbound path.

import Crypto
import Foundation
import TestSupport
@testable import IPsec
import Packet
import Testing

@Suite struct ESPKnownAnswerTests {
    static func rfc7634() throws -> Vectors.Case {
        try #require(try Vectors.load().first { $0.name == "rfc7634-appendix-a" })
    }

    /// The outbound path reproduces the RFC's packet byte for byte when given
    /// the RFC's IV and IPv4 identification (the only two fields Sluice
    /// chooses differently: IV = sequence number, ID from the sequence number).
    @Test func rfc7634OutboundExact() throws {
        let v = try Self.rfc7634()
        let key = try TestKey(.chacha20Poly1305, material: hexBytes(v.key_and_salt))
        let core = try makeCore()
        let outer = OuterHeader.ipv4(source: IPv4Address(v.tunnel_src!)!, destination: IPv4Address(v.tunnel_dst!)!,
                                     ttl: UInt8(v.outer_ttl!))
        let sa = OutboundSA(spi: SPI(UInt32(v.spi, radix: 16)!), mode: .tunnel(outer), key: key.handle, esn: false,
                            udpEncapsulation: nil, df: .copy)
        let buffer = PacketBuffer(hexBytes(v.inner_packet!))
        let iv = UInt64(v.iv, radix: 16)!
        let drop = withUnsafePointer(to: sa) {
            ESPOutbound.encapsulate(&buffer.view, saAt: $0, sequence: SequenceNumber(UInt64(v.seq, radix: 16)!),
                                    iv: iv, identification: UInt16(v.outer_ipv4_id!, radix: 16)!, core: core)
        }
        #expect(drop == nil)
        #expect(hexString(buffer.bytes) == v.esp_packet_with_outer_ipv4!)
        #expect(buffer.guardsIntact)
    }

    /// Through the public API (IV = sequence number): everything but the IV,
    /// the identification, the checksum, the ciphertext and the ICV is the
    /// RFC's, and the inbound path gets the inner packet back.
    @Test func rfc7634OutboundPublicAPI() throws {
        let v = try Self.rfc7634()
        let key = try TestKey(.chacha20Poly1305, material: hexBytes(v.key_and_salt))
        let core = try makeCore()
        let outer = OuterHeader.ipv4(source: IPv4Address(v.tunnel_src!)!, destination: IPv4Address(v.tunnel_dst!)!)
        let spi = SPI(UInt32(v.spi, radix: 16)!)
        let sa = OutboundSA(spi: spi, mode: .tunnel(outer), key: key.handle, esn: false)
        let inner = hexBytes(v.inner_packet!)
        let buffer = PacketBuffer(inner)
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 5, core: core) == nil)
        let ours = buffer.bytes
        let theirs = hexBytes(v.esp_packet_with_outer_ipv4!)
        #expect(ours.count == theirs.count)
        #expect(ours[0..<4] == theirs[0..<4])       // version, TOS, length
        #expect(ours[6..<10] == theirs[6..<10])     // flags, TTL, protocol
        #expect(ours[12..<28] == theirs[12..<28])   // addresses, SPI, sequence number
        #expect(Array(ours[28..<36]) == [0, 0, 0, 0, 0, 0, 0, 5])  // IV = the sequence number
        #expect(internetChecksum(Array(ours[0..<20])) == 0)

        let inbound = try InboundSA(spi: spi, mode: .tunnel, key: key.handle, esn: false)
        let window = try TestWindow(esn: false)
        #expect(receive(buffer, sa: inbound, window: window, core: core) == nil)
        #expect(buffer.bytes == inner)
    }

    /// Every engine that has the algorithm: intel-ipsec-mb and libsodium.
    @Test(arguments: [CryptoEngineKind.ipsecMB, .sodium]) func rfc7634Inbound(engine: CryptoEngineKind) throws {
        let v = try Self.rfc7634()
        let key = try TestKey(.chacha20Poly1305, material: hexBytes(v.key_and_salt), engine: engine)
        let core = try makeCore()
        let sa = try InboundSA(spi: SPI(UInt32(v.spi, radix: 16)!), mode: .tunnel, key: key.handle, esn: false,
                               source: IPAddress(v.tunnel_src!), destination: IPAddress(v.tunnel_dst!),
                               selectors: [TrafficSelector(source: IPPrefix("198.51.100.0/24")!,
                                                           destination: IPPrefix("192.0.2.0/24")!, proto: .icmp)!])
        let window = try TestWindow(esn: false)
        let buffer = PacketBuffer(hexBytes(v.esp_packet_with_outer_ipv4!))
        #expect(receive(buffer, sa: sa, window: window, core: core) == nil)
        #expect(hexString(buffer.bytes) == v.inner_packet!)
        #expect(window.window.highestReceived == 5)
        #expect(buffer.guardsIntact)

        // The same packet again is a replay.
        let again = PacketBuffer(hexBytes(v.esp_packet_with_outer_ipv4!))
        #expect(receive(again, sa: sa, window: window, core: core) == .replayed)
    }

    /// McGrew's cases are ESP header .. ICV. Wrapped in an outer IPv4 header
    /// (protocol 50) and taken in transport mode: the result is that header
    /// (protocol = the case's Next Header) followed by the decrypted payload.
    /// On every engine that has the algorithm (libsodium has no AES-128-GCM).
    @Test(arguments: 0...6, [CryptoEngineKind.ipsecMB, .sodium]) func mcgrewGCMInbound(_ index: Int, engine: CryptoEngineKind) throws {
        let v = try #require(try Vectors.load().first { $0.name == "mcgrew-gcm-test-\(index)" })
        let algorithm = try #require(Vectors.algorithm(v.aead))
        if engine == .sodium && (algorithm == .aes128GCM || !CryptoEngines.sodiumAES256GCMAvailable) { return }
        let key = try TestKey(algorithm, material: hexBytes(v.key_and_salt), engine: engine)
        let core = try makeCore()
        let esn = v.esn ?? false
        let sequence = UInt64(v.seq, radix: 16)!
        let esp = hexBytes(v.esp!)
        let plaintext = hexBytes(v.plaintext!)
        let padLength = Int(plaintext[plaintext.count - 2])
        let nextHeader = plaintext[plaintext.count - 1]
        let payload = Array(plaintext[0..<(plaintext.count - 2 - padLength)])

        var outer: [UInt8] = [0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 50, 0, 0, 192, 0, 2, 9, 192, 0, 2, 1]
        let total = outer.count + esp.count
        outer[2] = UInt8(total >> 8); outer[3] = UInt8(total & 0xFF)
        let sum = internetChecksum(outer)
        outer[10] = UInt8(sum >> 8); outer[11] = UInt8(sum & 0xFF)

        let sa = try InboundSA(spi: SPI(UInt32(v.spi, radix: 16)!), mode: .transport, key: key.handle, esn: esn)
        let window = try TestWindow(esn: esn, highest: sequence - 1)
        let buffer = PacketBuffer(outer + esp)
        #expect(receive(buffer, sa: sa, window: window, core: core) == nil, "\(v.name)")
        let result = buffer.bytes
        #expect(result.count == 20 + payload.count)
        #expect(Array(result.dropFirst(20)) == payload, "\(v.name)")
        #expect(result[9] == nextHeader)
        #expect(Int(be16(result, 2)) == result.count)
        #expect(internetChecksum(Array(result[0..<20])) == 0)
        #expect(window.window.highestReceived.rawValue == sequence)
        #expect(buffer.guardsIntact)
    }

    /// The McGrew cases with one bit flipped anywhere in the ESP part fail
    /// (and leave the window alone).
    @Test func mcgrewGCMEveryBitFlipFails() throws {
        for v in try Vectors.load() where v.name.hasPrefix("mcgrew") {
            let key = try TestKey(Vectors.algorithm(v.aead)!, material: hexBytes(v.key_and_salt))
            let core = try makeCore()
            let esn = v.esn ?? false
            let sequence = UInt64(v.seq, radix: 16)!
            let esp = hexBytes(v.esp!)
            var outer: [UInt8] = [0x45, 0, 0, UInt8(20 + esp.count), 0, 0, 0, 0, 64, 50, 0, 0, 192, 0, 2, 9, 192, 0, 2, 1]
            let sum = internetChecksum(outer)
            outer[10] = UInt8(sum >> 8); outer[11] = UInt8(sum & 0xFF)
            let spi = SPI(UInt32(v.spi, radix: 16)!)
            let sa = try InboundSA(spi: spi, mode: .transport, key: key.handle, esn: esn)
            let window = try TestWindow(esn: esn, highest: sequence - 1)
            for bit in stride(from: 0, to: esp.count * 8, by: 3) {
                var packet = outer + esp
                packet[20 + bit / 8] ^= UInt8(1 << (bit % 8))
                let buffer = PacketBuffer(packet)
                let drop = receive(buffer, sa: sa, window: window, core: core)
                let expected: Set<ESPDrop> = bit < 32 ? [.noSA] : [.authenticationFailed, .tooOld, .replayed]
                #expect(drop.map { expected.contains($0) } == true, "\(v.name) bit \(bit): \(String(describing: drop))")
                #expect(buffer.guardsIntact)
            }
            #expect(window.window.highestReceived.rawValue == sequence - 1, "\(v.name)")
        }
    }
}
