// Packet's table-driven Toeplitz hash against DPDK's own software RSS
// (`rte_softrss`, `rte_softrss_be`; static inline in rte_thash.h, no EAL
// needed). The DPDK side is fed exactly as its header prescribes: IPv4 tuples
// as `struct rte_ipv4_tuple` in CPU byte order, IPv6 addresses loaded with
// `rte_thash_load_v6_addrs` from a `struct rte_ipv6_hdr`, ports in CPU order,
// and the tuple passed as host-order 32-bit words.

import CShims
import Packet
import Testing

@Suite struct ToeplitzPeerTests {
    static let samplesPerCase = 1500

    /// The default key and random keys (40 bytes, and one longer than NICs need).
    static func keys(_ rng: inout SplitMix64) -> [(String, ToeplitzKey)] {
        var out: [(String, ToeplitzKey)] = [("default", .microsoft)]
        for length in [40, 40, 52] {
            let bytes = (0..<length).map { _ in UInt8.random(in: 0...255, using: &rng) }
            out.append(("random \(length)-byte key \(ToeplitzKey(bytes: bytes)!)", ToeplitzKey(bytes: bytes)!))
        }
        // Degenerate keys: all ones and a single bit.
        out.append(("all-ones key", ToeplitzKey(bytes: [UInt8](repeating: 0xFF, count: 40))!))
        var single = [UInt8](repeating: 0, count: 40)
        single[17] = 0x10
        out.append(("single-bit key", ToeplitzKey(bytes: single)!))
        return out
    }

    /// `rte_softrss` over `words` host-order tuple words, and `rte_softrss_be`
    /// with the key converted by `rte_convert_rss_key`; both must agree.
    static func dpdk(_ words: [UInt32], key: ToeplitzKey) -> (UInt32, UInt32) {
        var tuple = words
        let plain = key.bytes.withUnsafeBufferPointer { k in
            rte_softrss(&tuple, UInt32(tuple.count), k.baseAddress)
        }
        // rte_convert_rss_key works on whole 32-bit words.
        let keyWords = key.bytes.count / 4
        var original = (0..<keyWords).map { i in
            key.bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self) }
        }
        var converted = [UInt32](repeating: 0, count: keyWords)
        rte_convert_rss_key(&original, &converted, Int32(keyWords * 4))
        let be = converted.withUnsafeBytes { k in
            rte_softrss_be(&tuple, UInt32(tuple.count), k.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        return (plain, be)
    }

    static func randomV4(_ rng: inout SplitMix64) -> IPv4Address { IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng)) }
    static func randomV6(_ rng: inout SplitMix64) -> IPv6Address {
        IPv6Address(high: rng.next(), low: rng.next())
    }

    static func v4Words(_ s: IPv4Address, _ d: IPv4Address, ports: (UInt16, UInt16)?) -> [UInt32] {
        var t = rte_ipv4_tuple()
        t.src_addr = s.value
        t.dst_addr = d.value
        if let ports { t.sport = ports.0; t.dport = ports.1 }
        let words = ports == nil ? 2 : 3
        return withUnsafeBytes(of: &t) { raw in (0..<words).map { raw.load(fromByteOffset: $0 * 4, as: UInt32.self) } }
    }

    static func v6Words(_ s: IPv6Address, _ d: IPv6Address, ports: (UInt16, UInt16)?) -> [UInt32] {
        var hdr = rte_ipv6_hdr()
        var sb: [UInt8] = [], db: [UInt8] = []
        s.append(to: &sb)
        d.append(to: &db)
        withUnsafeMutableBytes(of: &hdr.src_addr) { $0.copyBytes(from: sb) }
        withUnsafeMutableBytes(of: &hdr.dst_addr) { $0.copyBytes(from: db) }
        var t = rte_thash_tuple()
        rte_thash_load_v6_addrs(&hdr, &t)
        if let ports { t.v6.sport = ports.0; t.v6.dport = ports.1 }
        let words = ports == nil ? 8 : 9
        return withUnsafeBytes(of: &t) { raw in (0..<words).map { raw.load(fromByteOffset: $0 * 4, as: UInt32.self) } }
    }

    @Test(arguments: [UInt64(0x5EED_0001), 0xC0FF_EE00_DEAD_BEEF])
    func tuplesMatchRteSoftrss(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        for (name, key) in Self.keys(&rng) {
            var mismatches = 0
            for i in 0..<Self.samplesPerCase {
                let ports = (UInt16.random(in: 0...UInt16.max, using: &rng), UInt16.random(in: 0...UInt16.max, using: &rng))
                // Fixed corner inputs first: all zero, all ones.
                let s4 = i == 0 ? IPv4Address(0) : (i == 1 ? IPv4Address(.max) : Self.randomV4(&rng))
                let d4 = i == 0 ? IPv4Address(0) : (i == 1 ? IPv4Address(.max) : Self.randomV4(&rng))
                let s6 = i == 0 ? IPv6Address(high: 0, low: 0) : (i == 1 ? IPv6Address(high: .max, low: .max) : Self.randomV6(&rng))
                let d6 = i == 0 ? IPv6Address(high: 0, low: 0) : (i == 1 ? IPv6Address(high: .max, low: .max) : Self.randomV6(&rng))

                let cases: [(String, UInt32, [UInt32])] = [
                    ("IPv4 2-tuple \(s4) \(d4)", key.hash(source: s4, destination: d4), Self.v4Words(s4, d4, ports: nil)),
                    ("IPv4 4-tuple \(s4):\(ports.0) \(d4):\(ports.1)",
                     key.hash(source: s4, destination: d4, sourcePort: ports.0, destinationPort: ports.1),
                     Self.v4Words(s4, d4, ports: ports)),
                    ("IPv6 2-tuple \(s6) \(d6)", key.hash(source: s6, destination: d6), Self.v6Words(s6, d6, ports: nil)),
                    ("IPv6 4-tuple [\(s6)]:\(ports.0) [\(d6)]:\(ports.1)",
                     key.hash(source: s6, destination: d6, sourcePort: ports.0, destinationPort: ports.1),
                     Self.v6Words(s6, d6, ports: ports)),
                ]
                for (what, ours, words) in cases {
                    let (plain, be) = Self.dpdk(words, key: key)
                    if ours != plain || ours != be {
                        mismatches += 1
                        if mismatches <= 5 {
                            Issue.record("seed \(TestSeeds.hex(seed)), \(name), \(what): ToeplitzKey.hash \(String(ours, radix: 16)) vs rte_softrss \(String(plain, radix: 16)) / rte_softrss_be \(String(be, radix: 16))")
                        }
                    }
                }
            }
            #expect(mismatches == 0, "seed \(TestSeeds.hex(seed)), \(name)")
        }
    }

    /// The byte-buffer entry point over whole 32-bit words of any length the
    /// key covers (1…9 words), checked against rte_softrss on the same words.
    @Test func byteInputsMatchRteSoftrss() {
        var rng = SplitMix64(seed: 0xB17E_5EED)
        for (name, key) in Self.keys(&rng) {
            for words in 1...9 {
                for _ in 0..<200 {
                    let tuple = (0..<words).map { _ in UInt32.random(in: 0...UInt32.max, using: &rng) }
                    let bytes = tuple.flatMap { w in [UInt8(w >> 24), UInt8(truncatingIfNeeded: w >> 16), UInt8(truncatingIfNeeded: w >> 8), UInt8(truncatingIfNeeded: w)] }
                    let (plain, _) = Self.dpdk(tuple, key: key)
                    let ours = key.hash(bytes)
                    #expect(ours == plain, "\(name), \(words) words \(bytes)")
                    if ours != plain { return }
                }
            }
        }
    }

    /// Guards the tuple conventions themselves: with the default key, the
    /// DPDK side reproduces Microsoft's published verification values, so a
    /// convention mistake cannot make both sides agree on a wrong answer.
    @Test func dpdkSideReproducesMicrosoftVectors() {
        let key = ToeplitzKey.microsoft
        let v4 = Self.v4Words(ipv4("66.9.149.187"), ipv4("161.142.100.80"), ports: (2794, 1766))
        #expect(Self.dpdk(Array(v4.prefix(2)), key: key).0 == 0x323e_8fc2)
        #expect(Self.dpdk(v4, key: key).0 == 0x51cc_c178)
        let v6 = Self.v6Words(ipv6("3ffe:2501:200:1fff::7"), ipv6("3ffe:2501:200:3::1"), ports: (2794, 1766))
        #expect(Self.dpdk(Array(v6.prefix(8)), key: key).0 == 0x2cc1_8cd5)
        #expect(Self.dpdk(v6, key: key).0 == 0x4020_7d3d)
    }
}

/// SPIs chosen so that a NIC's RSS sends their ESP to a given queue, checked
/// with DPDK's own software RSS (`rte_softrss`) over the fields the NIC hashes.
@Suite struct RSSSteeringPeerTests {
    @Test(arguments: [ESPHashFields.addressesAndSPI, .spiOnly])
    func allocatedSPIsLandOnTheirQueue(fields: ESPHashFields) throws {
        var rng = SplitMix64(seed: fields == .spiOnly ? 91 : 92)
        for (name, key) in ToeplitzPeerTests.keys(&rng).prefix(4) {
            for (size, queues) in [(128, 2), (512, 4), (64, 3)] {
                let reta = (0..<size).map { _ in UInt16.random(in: 0..<UInt16(queues), using: &rng) }
                let steering = try #require(RSSSteering(key: key, reta: reta))
                let src = ToeplitzPeerTests.randomV4(&rng), dst = ToeplitzPeerTests.randomV4(&rng)
                var taken: Set<UInt32> = []
                for queue in 0..<UInt16(queues) where reta.contains(queue) {
                    for _ in 0..<20 {
                        let spi = try #require(steering.spi(toQueue: queue, source: .v4(src), destination: .v4(dst), fields: fields,
                                                            taken: taken, using: &rng), "\(name): no SPI for queue \(queue)")
                        #expect(spi >= 256 && !taken.contains(spi))
                        taken.insert(spi)
                        let words = fields == .spiOnly ? [spi] : [src.value, dst.value, spi]
                        let (hash, hashBE) = ToeplitzPeerTests.dpdk(words, key: key)
                        #expect(hash == hashBE)
                        #expect(reta[Int(hash % UInt32(size))] == queue, "\(name), RETA \(size): SPI \(spi) hashes to \(hash)")
                    }
                }
                // A queue the table never names gets no SPI.
                #expect(steering.spi(toQueue: UInt16(queues), source: .v4(src), destination: .v4(dst), fields: fields,
                                     taken: [], using: &rng) == nil)
            }
        }
    }
}
