// SA keys live in slabs of sodium_malloc memory (guard pages, read-only) and
// are zeroed before their slot is given back; a slab goes with its last key.

@testable import Crypto
import Foundation
import TestSupport
import Testing

@Suite struct KeyLifetimeTests {
    /// The /proc/self/maps line covering `address`, and the one right after it.
    static func mappings(around address: UInt) -> (String, String?)? {
        let maps = readProcFile("/proc/self/maps")
        let lines = maps.split(separator: "\n").map(String.init)
        for (i, line) in lines.enumerated() {
            let range = line.prefix { $0 != " " }.split(separator: "-")
            guard range.count == 2, let lo = UInt(range[0], radix: 16), let hi = UInt(range[1], radix: 16) else {
                continue
            }
            if address >= lo && address < hi { return (line, i + 1 < lines.count ? lines[i + 1] : nil) }
        }
        return nil
    }

    static func permissions(_ line: String) -> Substring { line.split(separator: " ")[1] }

    @Test(arguments: BurstTests.combinations)
    func keyLivesInGuardedReadOnlyMemoryAndIsZeroedOnDestroy(aead: AEADAlgorithm, engine: CryptoEngineKind) throws {
        var rng = SeededRandom(seed: 77)
        let material = rng.bytes(aead.keyMaterialLength)
        let key = try AEADKey(aead, keyMaterial: material, engine: engine)

        // The schedule starts with the key itself (AES round key 0/1, the ChaCha20
        // key), and the salt is kept: the live state holds key material.
        let hasKey = key.stateContains(Array(material.prefix(aead.keyLength)))
        #expect(hasKey, "key bytes present while live")
        let hasSalt = key.stateContains(Array(material.suffix(4)))
        #expect(hasSalt, "salt present while live")

        // A slab of sodium_malloc memory: the key lies in a read-only mapping
        // (set-up left it so) that ends at a PROT_NONE guard page. Tests
        // running beside this one may be writing another key of the same slab
        // right now (writable for that moment), so the mapping must be
        // read-only again within 2 s, not at this very instant.
        let region = key.stateRegion
        #expect(region.address % 64 == 0)
        var maps = try #require(Self.mappings(around: region.address))
        var waited = 0
        while !Self.permissions(maps.0).hasPrefix("r--") && waited < 2000 {
            usleep(1000)
            waited += 1
            maps = try #require(Self.mappings(around: region.address))
        }
        #expect(Self.permissions(maps.0).hasPrefix("r--"), "read-only: \(maps.0)")
        let end = try #require(UInt(maps.0.prefix { $0 != " " }.split(separator: "-")[1], radix: 16))
        #expect(region.address + UInt(region.bytes) <= end, "the key lies inside the mapping")
        let after = try #require(Self.mappings(around: end))
        #expect(Self.permissions(after.0).hasPrefix("---"), "guard page after the slab: \(after.0)")

        // The destroy path deinit uses: zeroed (read back) before sodium_free.
        let zeroed = key.destroyReportingZeroization()
        #expect(zeroed)
    }

    /// Key material as configured (`SecretBytes`, what an SA config keeps)
    /// lives in the same guarded, read-only slabs as expanded keys and is
    /// zeroed when its last holder goes; the array it came from is wiped.
    @Test func keyMaterialLivesInSecretMemoryAndIsZeroedWhenDropped() throws {
        var system = SystemRandomNumberGenerator()
        let material = (0..<36).map { _ in UInt8.random(in: 0...255, using: &system) }
        var moved = material
        var secret: SecretBytes? = try SecretBytes(wiping: &moved)
        #expect(moved == [UInt8](repeating: 0, count: 36), "the source array is zeroed")
        #expect(secret?.count == 36)
        #expect(secret?.withUnsafeBytes { Array($0) } == material)
        #expect(SecretBytes.memoryContains(material))

        let address = try #require(secret?.address)
        var maps = try #require(Self.mappings(around: address))
        var waited = 0
        while !Self.permissions(maps.0).hasPrefix("r--") && waited < 2000 { // see above: a neighbour may be writing
            usleep(1000)
            waited += 1
            maps = try #require(Self.mappings(around: address))
        }
        #expect(Self.permissions(maps.0).hasPrefix("r--"), "read-only: \(maps.0)")
        let end = try #require(UInt(maps.0.prefix { $0 != " " }.split(separator: "-")[1], radix: 16))
        let after = try #require(Self.mappings(around: end))
        #expect(Self.permissions(after.0).hasPrefix("---"), "guard page after the slab: \(after.0)")

        // Equality: same bytes, not a prefix, not one bit off. (The prefix's
        // slot, zero-padded, would hold the whole key when its last byte is
        // 0: both go before the search below.)
        var same: SecretBytes? = try material.withUnsafeBytes { try SecretBytes(copying: $0) }
        do {
            let prefix = try material.dropLast().withUnsafeBytes { try SecretBytes(copying: $0) }
            var flipped = material
            flipped[35] ^= 1
            let other = try SecretBytes(wiping: &flipped)
            #expect(secret?.isEqual(to: same!) == true)
            #expect(secret?.isEqual(to: prefix) == false && secret?.isEqual(to: other) == false)
        }

        // Zeroed when the last holder goes, not before.
        secret = nil
        #expect(SecretBytes.memoryContains(material), "a copy made from it is still held")
        same = nil
        #expect(!SecretBytes.memoryContains(material), "no holder left: zeroed")
    }

    @Test func keyMaterialHasALengthLimit() throws {
        for count in [0, 1, SecretBytes.maximumCount] {
            let made = try [UInt8](repeating: 7, count: count).withUnsafeBytes { try SecretBytes(copying: $0) }
            #expect(made.count == count)
        }
        var long = [UInt8](repeating: 9, count: SecretBytes.maximumCount + 1)
        #expect(throws: CryptoError.secretTooLong(got: SecretBytes.maximumCount + 1)) {
            try SecretBytes(wiping: &long)
        }
        #expect(long.allSatisfy { $0 == 0 }, "wiped even when refused")
    }

    static let mappingsChildMarker = "SLUICE_KEY_MAPPINGS_CHILD"

    /// Counted in a child run of this test binary: /proc/self/maps is the
    /// whole process's, and suites running beside it (DPDK, threads) add
    /// mappings of their own.
    @Test func deinitFreesTheKey() throws {
        let child = try rerunTestBinary(filter: "childCountsKeyMappings", marker: Self.mappingsChildMarker)
        #expect(child.status == 0, "\(child.output)")
        #expect(child.output.contains("key-mappings-child: measured"), "\(child.output)")
    }

    /// Runs only in the child started above (a no-op in a normal run).
    @Test func childCountsKeyMappings() throws {
        guard ProcessInfo.processInfo.environment[Self.mappingsChildMarker] == "1" else { return }
        // Each live key adds mappings (guard pages, the read-only block); 2000
        // keys created and dropped one by one must leave the count where it was.
        func mappingCount() -> Int {
            readProcFile("/proc/self/maps").split(separator: "\n").count
        }
        let before = mappingCount()
        #expect(before > 10, "read /proc/self/maps")
        for i in 0..<2000 {
            let key = try AEADKey(.chacha20Poly1305, keyMaterial: [UInt8](repeating: UInt8(i & 0xFF), count: 36),
                                  engine: .sodium)
            let engine = key.engine
            #expect(engine == .sodium)
        }
        let growth = mappingCount() - before
        #expect(growth < 200)
        // 20,000 keys alive at once (an SAD of that size) share slabs: far
        // fewer mappings than keys (one guarded allocation each would pass
        // vm.max_map_count, 65,530, at about 15,000 keys), and none left after.
        final class Held {
            let key: AEADKey
            init(_ key: consuming AEADKey) { self.key = key }
        }
        var live: [Held] = []
        for i in 0..<20_000 {
            live.append(Held(try AEADKey(.chacha20Poly1305, keyMaterial: [UInt8](repeating: UInt8(i & 0xFF), count: 36),
                                         engine: .sodium)))
        }
        let held = mappingCount() - before
        #expect(held < 1000, "\(held) mappings for 20,000 live keys")
        live.removeAll()
        let after = mappingCount() - before
        #expect(after < 200, "\(after) mappings left after the 20,000 keys went")
        print("key-mappings-child: measured \(growth) new mappings after 2000 keys, \(held) with 20,000 live")
    }
}
