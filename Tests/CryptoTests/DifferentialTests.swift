// Both engines against each other: byte-identical ciphertext and ICV for
// random keys, IVs, AADs (8 and 12 bytes) and every length 0...2000.

@testable import Crypto
import Testing

@Suite struct DifferentialTests {
    static var shared: [AEADAlgorithm] {
        AEADAlgorithm.allCases.filter { engines(for: $0).count == 2 }
    }

    @Test func bothEnginesServeChaChaAndAES256GCMHere() {
        #expect(Self.shared.contains(.chacha20Poly1305))
        #expect(Self.shared.contains(.aes256GCM) == CryptoEngines.sodiumAES256GCMAvailable)
    }

    @Test(arguments: shared)
    func enginesAgreeOnEveryLength(aead: AEADAlgorithm) throws {
        let core = try CryptoCore()
        var rng = SeededRandom(seed: 0x5111CE &+ UInt64(aead.rawValue))
        for length in 0...2000 {
            let material = rng.bytes(aead.keyMaterialLength)
            let mb = try AEADKey(aead, keyMaterial: material, engine: .ipsecMB)
            let na = try AEADKey(aead, keyMaterial: material, engine: .sodium)
            let engines = (mb.engine, na.engine)
            #expect(engines == (.ipsecMB, .sodium))
            let esn = rng.next() & 1 == 1
            let plain = Packet(payload: rng.bytes(length), iv: rng.bytes(8), aad: rng.bytes(esn ? 12 : 8))
            var a = plain, b = plain
            mb.seal(core, &a)
            na.seal(core, &b)
            if a.payload != b.payload || a.icv != b.icv {
                Issue.record("\(aead) length \(length) esn \(esn): engines differ")
                continue
            }
            if length > 0 && a.payload == plain.payload { Issue.record("\(aead) length \(length): not encrypted") }
            // Each engine opens the other's packet.
            let openedA = na.open(core, &a)
            #expect(openedA && a.payload == plain.payload, "sodium opens ipsec-mb, length \(length)")
            let openedB = mb.open(core, &b)
            #expect(openedB && b.payload == plain.payload, "ipsec-mb opens sodium, length \(length)")
        }
    }
}
