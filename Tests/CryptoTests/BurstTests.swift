// The burst entry point against the per-packet one, on every engine and AEAD.

@testable import Crypto
import Testing

@Suite struct BurstTests {
    static var combinations: [(AEADAlgorithm, CryptoEngineKind)] {
        AEADAlgorithm.allCases.flatMap { aead in engines(for: aead).map { (aead, $0) } }
    }

    /// Packets laid out like ESP in one contiguous buffer each:
    /// IV(8) | payload | ICV(16), with the AAD kept alongside.
    final class Wire {
        let count: Int
        let stride = 2048 + 64
        let base: UnsafeMutableRawPointer
        let aads: UnsafeMutableRawPointer
        var lengths: [Int]

        init(_ packets: [Packet]) {
            count = packets.count
            base = .allocate(byteCount: stride * count, alignment: 64)
            aads = .allocate(byteCount: 16 * count, alignment: 16)
            lengths = packets.map(\.payload.count)
            for (i, p) in packets.enumerated() {
                (base + stride * i).copyMemory(from: p.iv, byteCount: 8)
                (base + stride * i + 8).copyMemory(from: p.payload, byteCount: p.payload.count)
                (aads + 16 * i).copyMemory(from: p.aad, byteCount: p.aad.count)
            }
        }
        deinit { base.deallocate(); aads.deallocate() }

        func iv(_ i: Int) -> UnsafeMutableRawPointer { base + stride * i }
        func payload(_ i: Int) -> UnsafeMutableRawPointer { base + stride * i + 8 }
        func icv(_ i: Int) -> UnsafeMutableRawPointer { payload(i) + lengths[i] }
        func aad(_ i: Int) -> UnsafeMutableRawPointer { aads + 16 * i }
        func bytes(_ i: Int) -> [UInt8] {
            Array(UnsafeRawBufferPointer(start: payload(i), count: lengths[i] + 16))
        }
        func fill(_ burst: borrowing AEADBurst) {
            burst.removeAll()
            for i in 0..<count {
                burst.append(payload: payload(i), length: lengths[i], iv: iv(i), aad: aad(i), icv: icv(i))
            }
        }
    }

    static func packets(_ n: Int, aadLength: Int, seed: UInt64) -> [Packet] {
        var rng = SeededRandom(seed: seed)
        return (0..<n).map { i in
            let length = i % 7 == 0 ? Int.random(in: 0...16, using: &rng) : Int.random(in: 17...2000, using: &rng)
            return Packet(payload: rng.bytes(length), iv: rng.bytes(8), aad: rng.bytes(aadLength))
        }
    }

    @Test(arguments: combinations)
    func burstMatchesPerPacketAndFlagsForgeries(aead: AEADAlgorithm, engine: CryptoEngineKind) throws {
        let core = try CryptoCore()
        let burst = try AEADBurst()
        for (n, aadLength) in [(1, 8), (7, 12), (32, 8), (AEADBurst.capacity, 12)] {
            var rng = SeededRandom(seed: UInt64(n * 131 + aadLength))
            let key = try AEADKey(aead, keyMaterial: rng.bytes(aead.keyMaterialLength), engine: engine)
            let plain = Self.packets(n, aadLength: aadLength, seed: UInt64(n))
            let viaBurst = Wire(plain), viaLoop = Wire(plain)

            viaBurst.fill(burst)
            let shape = burst.count == n && burst.isFull == (n == AEADBurst.capacity)
            #expect(shape)
            let sealed = key.seal(core, burst: burst, aadLength: aadLength)
            #expect(sealed == n)
            for i in 0..<n {
                key.seal(core, payload: viaLoop.payload(i), length: viaLoop.lengths[i], iv: viaLoop.iv(i),
                         aad: viaLoop.aad(i), aadLength: aadLength, icv: viaLoop.icv(i))
            }
            for i in 0..<n where viaBurst.bytes(i) != viaLoop.bytes(i) {
                Issue.record("\(engine) \(aead) n=\(n): packet \(i) differs between burst and per-packet")
            }

            // Forge every third packet (ciphertext, ICV or AAD in turn), open the burst.
            var forged = Set<Int>()
            for i in Swift.stride(from: 1, to: n, by: 3) {
                switch i % 9 {
                case 1 where viaBurst.lengths[i] > 0: viaBurst.payload(i).storeBytes(
                    of: viaBurst.payload(i).load(as: UInt8.self) ^ 1, as: UInt8.self)
                case 4: viaBurst.aad(i).storeBytes(of: viaBurst.aad(i).load(as: UInt8.self) ^ 1, as: UInt8.self)
                default: viaBurst.icv(i).storeBytes(of: viaBurst.icv(i).load(as: UInt8.self) ^ 1, as: UInt8.self)
                }
                forged.insert(i)
            }
            viaBurst.fill(burst)
            let opened = key.open(core, burst: burst, aadLength: aadLength)
            #expect(opened == n - forged.count)
            for i in 0..<n {
                let payload = Array(viaBurst.bytes(i).prefix(viaBurst.lengths[i]))
                if forged.contains(i) {
                    let authentic = burst.isAuthentic(at: i)
                    #expect(!authentic, "\(engine) \(aead): forged packet \(i) passed")
                    #expect(payload.allSatisfy { $0 == 0 }, "\(engine) \(aead): forged packet \(i) not wiped")
                } else {
                    let authentic = burst.isAuthentic(at: i)
                    #expect(authentic, "\(engine) \(aead): packet \(i) rejected")
                    #expect(payload == plain[i].payload, "\(engine) \(aead): packet \(i) decrypts")
                }
            }
        }
    }

    /// A worker's burst: packets of several keys (every AEAD on every
    /// engine), each with its own AAD length, some AADs in the burst's own
    /// scratch, sealed and opened with one call each: byte-identical to
    /// sealing each packet alone with its key, and forgeries flagged and
    /// wiped whatever their neighbours' keys.
    @Test(arguments: [false, true])
    func keyedBurstOfManyKeysMatchesPerPacket(prefetch: Bool) throws {
        let core = try CryptoCore()
        let burst = try AEADBurst()
        var rng = SeededRandom(seed: prefetch ? 71 : 17)
        final class Box { let key: AEADKey; init(_ key: consuming AEADKey) { self.key = key } }
        let keys = try Self.combinations.map { aead, engine in
            Box(try AEADKey(aead, keyMaterial: rng.bytes(aead.keyMaterialLength), engine: engine))
        }
        let n = 40
        let aadLengths = (0..<n).map { $0 % 3 == 0 ? 12 : 8 }
        let plain = (0..<n).map { i in
            Packet(payload: rng.bytes(i % 5 == 0 ? i : 17 + 37 * i), iv: rng.bytes(8), aad: rng.bytes(aadLengths[i]))
        }
        let keyOf = (0..<n).map { ($0 * 7) % keys.count }
        let viaBurst = Wire(plain), viaLoop = Wire(plain)

        // Fill: every other 12-byte AAD is built in the burst's scratch.
        func fill(_ wire: Wire) -> [UnsafeRawPointer] {
            burst.removeAll()
            var aads: [UnsafeRawPointer] = []
            for i in 0..<n {
                var aad = UnsafeRawPointer(wire.aad(i))
                if aadLengths[i] == 12 && i % 2 == 0 {
                    let slot = burst.nextAAD
                    slot.copyMemory(from: wire.aad(i), byteCount: 12)
                    aad = UnsafeRawPointer(slot)
                }
                aads.append(aad)
                burst.append(key: keys[keyOf[i]].key.unsafeHandle, payload: wire.payload(i), length: wire.lengths[i],
                             iv: wire.iv(i), aad: aad, aadLength: aadLengths[i], icv: wire.icv(i))
            }
            return aads
        }
        _ = fill(viaBurst)
        let count = burst.count
        #expect(count == n)
        let sealed = burst.sealEach(core, prefetch: prefetch)
        #expect(sealed == n)
        for i in 0..<n {
            keys[keyOf[i]].key.seal(core, payload: viaLoop.payload(i), length: viaLoop.lengths[i], iv: viaLoop.iv(i),
                                aad: viaLoop.aad(i), aadLength: aadLengths[i], icv: viaLoop.icv(i))
            #expect(viaBurst.bytes(i) == viaLoop.bytes(i), "packet \(i) (\(Self.combinations[keyOf[i]]))")
        }

        // Forge every fourth packet's ICV; open the burst with one call.
        let forged = Set(Swift.stride(from: 2, to: n, by: 4))
        for i in forged { viaBurst.icv(i).storeBytes(of: viaBurst.icv(i).load(as: UInt8.self) ^ 0x80, as: UInt8.self) }
        _ = fill(viaBurst)
        let opened = burst.openEach(core, prefetch: prefetch)
        #expect(opened == n - forged.count)
        for i in 0..<n {
            let authentic = burst.isAuthentic(at: i)
            let payload = Array(viaBurst.bytes(i).prefix(viaBurst.lengths[i]))
            if forged.contains(i) {
                #expect(!authentic, "forged packet \(i) passed")
                #expect(payload.allSatisfy { $0 == 0 }, "forged packet \(i) not wiped")
            } else {
                #expect(authentic, "packet \(i) rejected")
                #expect(payload == plain[i].payload, "packet \(i) decrypts")
            }
        }
        burst.removeAll()
    }

    @Test func burstCapacityIsEnforced() throws {
        let burst = try AEADBurst()
        let p = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 16)
        defer { p.deallocate() }
        for _ in 0..<AEADBurst.capacity { burst.append(payload: p, length: 0, iv: p, aad: p, icv: p) }
        let full = burst.isFull && burst.count == 128
        #expect(full)
        burst.removeAll()
        let empty = burst.isEmpty
        #expect(empty)
    }
}
