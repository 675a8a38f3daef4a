// RFC 7634 Appendix A and draft-mcgrew-gcm-test-01, from
// ../shared/vectors/esp-known-answers.json, on every engine that serves each case.

import CCrypto
import TestSupport
@testable import Crypto
import Testing

@Suite struct KnownAnswerTests {
    /// One case reduced to the AEAD inputs and the expected output.
    struct Expected {
        let name: String
        let aead: AEADAlgorithm
        let keyMaterial: [UInt8]
        let packet: Packet          // plaintext payload, IV, AAD
        let ciphertext: [UInt8]
        let icv: [UInt8]
    }

    static func cases() throws -> [Expected] {
        try Vectors.load().map { c in
            let aead = try #require(Vectors.algorithm(c.aead), "unknown AEAD \(c.aead)")
            let seqBytes = hex(c.seq)
            let seq = seqBytes.reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
            let esn = c.esn ?? false
            #expect(esn == (seqBytes.count == 8), "\(c.name): 16 hex digits of seq mean ESN")
            let spi = hex(c.spi).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            let aad = espAAD(spi: spi, seq: seq, esn: esn)
            // The single-store AAD writer agrees with the byte-by-byte construction.
            var stored = [UInt8](repeating: 0xEE, count: ESPAssociatedData.storageSize)
            let storedLength = stored.withUnsafeMutableBytes {
                ESPAssociatedData.store(spi: spi, sequence: seq, extendedSequenceNumbers: esn, to: $0.baseAddress!)
            }
            #expect(Array(stored.prefix(storedLength)) == aad, "\(c.name): ESPAssociatedData.store")

            let esp: [UInt8]
            let plaintext: [UInt8]
            if let whole = c.esp_packet_with_outer_ipv4, let inner = c.inner_packet {
                // RFC 7634 A: strip the outer IPv4 header; the payload is the inner
                // packet, self-describing padding 1, 2, ..., pad length, next header 4.
                let packet = hex(whole)
                let ihl = Int(packet[0] & 0x0F) * 4
                esp = Array(packet[ihl...])
                let innerBytes = hex(inner)
                let ctLength = esp.count - 8 - 8 - 16
                let padLength = ctLength - innerBytes.count - 2
                #expect(padLength >= 0 && padLength < 256)
                plaintext = innerBytes + (0..<padLength).map { UInt8($0 + 1) } + [UInt8(padLength), 4]
            } else {
                esp = hex(try #require(c.esp))
                plaintext = hex(try #require(c.plaintext))
            }
            // SPI, low 32 bits of seq and IV on the wire.
            #expect(Array(esp[0..<4]) == hex(c.spi), "\(c.name): SPI")
            #expect(Array(esp[4..<8]) == Array(seqBytes.suffix(4)), "\(c.name): sequence number on the wire")
            #expect(Array(esp[8..<16]) == hex(c.iv), "\(c.name): IV")
            #expect(esp.count == 16 + plaintext.count + 16, "\(c.name): ESP length")
            return Expected(name: c.name, aead: aead, keyMaterial: hex(c.key_and_salt),
                            packet: Packet(payload: plaintext, iv: hex(c.iv), aad: aad),
                            ciphertext: Array(esp[16..<(esp.count - 16)]), icv: Array(esp.suffix(16)))
        }
    }

    @Test func vectorFileCoversEveryAlgorithmAndESN() throws {
        let all = try Self.cases()
        #expect(all.count == 8)
        for aead in AEADAlgorithm.allCases { #expect(all.contains { $0.aead == aead }, "\(aead) has a vector") }
        #expect(all.contains { $0.aead == .aes128GCM && $0.packet.aad.count == 12 })
        #expect(all.contains { $0.aead == .aes256GCM && $0.packet.aad.count == 12 })
        #expect(all.contains { $0.packet.aad.count == 8 })
    }

    @Test(arguments: [CryptoEngineKind.ipsecMB, .sodium])
    func sealAndOpenMatchVectors(engine: CryptoEngineKind) throws {
        let core = try CryptoCore()
        var served = 0
        for v in try Self.cases() {
            guard (try? CryptoEngines.resolve(engine, for: v.aead)) != nil else { continue }
            served += 1
            let key = try AEADKey(v.aead, keyMaterial: v.keyMaterial, engine: engine)

            var p = v.packet
            key.seal(core, &p)
            #expect(hexString(p.payload) == hexString(v.ciphertext), "\(engine) \(v.name): ciphertext")
            #expect(hexString(p.icv) == hexString(v.icv), "\(engine) \(v.name): ICV")

            var q = Packet(payload: v.ciphertext, iv: v.packet.iv, aad: v.packet.aad, icv: v.icv)
            let opened = key.open(core, &q)
            #expect(opened, "\(engine) \(v.name): authentic")
            #expect(q.payload == v.packet.payload, "\(engine) \(v.name): decrypts to the plaintext")
        }
        #expect(served >= (engine == .ipsecMB ? 8 : 1), "\(engine) served \(served) cases")
    }

    /// Any single flipped bit in ciphertext, ICV, AAD or IV fails verification,
    /// and the failed payload is zeroed.
    @Test(arguments: [CryptoEngineKind.ipsecMB, .sodium])
    func tamperingFailsVerification(engine: CryptoEngineKind) throws {
        let core = try CryptoCore()
        for v in try Self.cases() {
            guard (try? CryptoEngines.resolve(engine, for: v.aead)) != nil else { continue }
            let key = try AEADKey(v.aead, keyMaterial: v.keyMaterial, engine: engine)
            let good = Packet(payload: v.ciphertext, iv: v.packet.iv, aad: v.packet.aad, icv: v.icv)
            var attempts: [(String, Packet)] = []
            for i in good.payload.indices {
                var t = good; t.payload[i] ^= 0x01 << UInt8(i % 8); attempts.append(("ciphertext[\(i)]", t))
            }
            for i in good.icv.indices { var t = good; t.icv[i] ^= 0x80; attempts.append(("icv[\(i)]", t)) }
            for i in good.aad.indices { var t = good; t.aad[i] ^= 0x01; attempts.append(("aad[\(i)]", t)) }
            for i in good.iv.indices { var t = good; t.iv[i] ^= 0x40; attempts.append(("iv[\(i)]", t)) }
            // Dropping the high half of an ESN (or adding one) changes the AAD too.
            if good.aad.count == 12 {
                var t = good; t.aad = Array(good.aad[0..<4] + good.aad[8..<12]); attempts.append(("aad without ESN", t))
            }
            var failures = 0
            for (what, var t) in attempts {
                let ok = key.open(core, &t)
                if ok { Issue.record("\(engine) \(v.name): tampered \(what) verified") }
                if !ok && t.payload.contains(where: { $0 != 0 }) {
                    Issue.record("\(engine) \(v.name): tampered \(what) left payload bytes behind")
                }
                failures += ok ? 0 : 1
            }
            #expect(failures == attempts.count)
            var intact = good
            let intactOK = key.open(core, &intact)
            #expect(intactOK, "\(engine) \(v.name): the untampered packet still verifies")
        }
    }
}
