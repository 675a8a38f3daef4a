import Packet
import Testing

/// Microsoft, "Verifying the RSS Hash Calculation" (default key): source,
/// destination, ports, hash of the addresses only, hash with TCP ports.
struct RSSVector: Sendable, CustomTestStringConvertible {
    var source: String, sourcePort: UInt16
    var destination: String, destinationPort: UInt16
    var addressesOnly: UInt32, withPorts: UInt32
    var testDescription: String { "\(source):\(sourcePort) -> \(destination):\(destinationPort)" }
}

@Suite struct ToeplitzTests {
    static let ipv4Vectors: [RSSVector] = [
        .init(source: "66.9.149.187", sourcePort: 2794, destination: "161.142.100.80", destinationPort: 1766,
              addressesOnly: 0x323e_8fc2, withPorts: 0x51cc_c178),
        .init(source: "199.92.111.2", sourcePort: 14230, destination: "65.69.140.83", destinationPort: 4739,
              addressesOnly: 0xd718_262a, withPorts: 0xc626_b0ea),
        .init(source: "24.19.198.95", sourcePort: 12898, destination: "12.22.207.184", destinationPort: 38024,
              addressesOnly: 0xd2d0_a5de, withPorts: 0x5c2b_394a),
        .init(source: "38.27.205.30", sourcePort: 48228, destination: "209.142.163.6", destinationPort: 2217,
              addressesOnly: 0x8298_9176, withPorts: 0xafc7_327f),
        .init(source: "153.39.163.191", sourcePort: 44251, destination: "202.188.127.2", destinationPort: 1303,
              addressesOnly: 0x5d18_09c5, withPorts: 0x10e8_28a2),
    ]

    static let ipv6Vectors: [RSSVector] = [
        .init(source: "3ffe:2501:200:1fff::7", sourcePort: 2794, destination: "3ffe:2501:200:3::1", destinationPort: 1766,
              addressesOnly: 0x2cc1_8cd5, withPorts: 0x4020_7d3d),
        .init(source: "3ffe:501:8::260:97ff:fe40:efab", sourcePort: 14230, destination: "ff02::1", destinationPort: 4739,
              addressesOnly: 0x0f0c_461c, withPorts: 0xdde5_1bbf),
        .init(source: "3ffe:1900:4545:3:200:f8ff:fe21:67cf", sourcePort: 44251,
              destination: "fe80::200:f8ff:fe21:67cf", destinationPort: 38024,
              addressesOnly: 0x4b61_e985, withPorts: 0x02d1_feef),
    ]

    static func portBytes(_ s: UInt16, _ d: UInt16) -> [UInt8] {
        [UInt8(s >> 8), UInt8(s & 0xFF), UInt8(d >> 8), UInt8(d & 0xFF)]
    }

    @Test(arguments: ipv4Vectors)
    func microsoftIPv4(_ v: RSSVector) throws {
        let key = ToeplitzKey.microsoft
        let s = try #require(IPv4Address(v.source)), d = try #require(IPv4Address(v.destination))
        #expect(key.hash(source: s, destination: d) == v.addressesOnly)
        #expect(key.hash(source: s, destination: d, sourcePort: v.sourcePort, destinationPort: v.destinationPort) == v.withPorts)
        #expect(key.hash(s.bytes + d.bytes) == v.addressesOnly)
        #expect(key.hash(s.bytes + d.bytes + Self.portBytes(v.sourcePort, v.destinationPort)) == v.withPorts)
        #expect(key.referenceHash(s.bytes + d.bytes) == v.addressesOnly)
        #expect(key.referenceHash(s.bytes + d.bytes + Self.portBytes(v.sourcePort, v.destinationPort)) == v.withPorts)
    }

    @Test(arguments: ipv6Vectors)
    func microsoftIPv6(_ v: RSSVector) throws {
        let key = ToeplitzKey.microsoft
        let s = try #require(IPv6Address(v.source)), d = try #require(IPv6Address(v.destination))
        #expect(key.hash(source: s, destination: d) == v.addressesOnly)
        #expect(key.hash(source: s, destination: d, sourcePort: v.sourcePort, destinationPort: v.destinationPort) == v.withPorts)
        #expect(key.hash(s.bytes + d.bytes) == v.addressesOnly)
        #expect(key.hash(s.bytes + d.bytes + Self.portBytes(v.sourcePort, v.destinationPort)) == v.withPorts)
        #expect(key.referenceHash(s.bytes + d.bytes + Self.portBytes(v.sourcePort, v.destinationPort)) == v.withPorts)
    }

    @Test func keyParsingAndAliases() throws {
        let hex = "6d5a56da255b0ec24167253d43a38fb0d0ca2bcbae7b30b477cb2da38030f20c6a42b73bbeac01fa"
        #expect(ToeplitzKey(hex: hex) == .microsoft)
        #expect(ToeplitzKey(hex: "0x" + hex.uppercased()) == .microsoft)
        #expect(ToeplitzKey.microsoft.description == hex)
        #expect(ToeplitzKey.dpdkDefault == .microsoft)
        #expect(ToeplitzKey.microsoft.maxInputLength == 36)
        #expect(ToeplitzKey(hex: String(hex.dropLast(2))) == nil)  // 39 bytes
        #expect(ToeplitzKey(hex: hex + "0") == nil)                // odd digit count
        #expect(ToeplitzKey(hex: hex.replacingFirstCharacter(with: "g")) == nil)
        #expect(ToeplitzKey(bytes: []) == nil)
    }

    @Test func tableMatchesBitSerialReference() throws {
        var rng = SplitMix64(seed: 99)
        let key52 = try #require(ToeplitzKey(bytes: (0..<52).map { _ in UInt8(truncatingIfNeeded: rng.next()) }))
        #expect(key52.maxInputLength == 48)
        for key in [ToeplitzKey.microsoft, key52] {
            for _ in 0..<500 {
                let n = Int(rng.next() % UInt64(key.maxInputLength + 8))  // also longer than the key covers
                let input = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                #expect(key.hash(input) == key.referenceHash(input))
            }
        }
    }

    @Test func tupleConveniencesMatchByteInput() {
        var rng = SplitMix64(seed: 5)
        let key = ToeplitzKey.microsoft
        for _ in 0..<200 {
            let s4 = IPv4Address(UInt32(truncatingIfNeeded: rng.next())), d4 = IPv4Address(UInt32(truncatingIfNeeded: rng.next()))
            let s6 = IPv6Address(high: rng.next(), low: rng.next()), d6 = IPv6Address(high: rng.next(), low: rng.next())
            let sp = UInt16(truncatingIfNeeded: rng.next()), dp = UInt16(truncatingIfNeeded: rng.next())
            #expect(key.hash(source: s4, destination: d4, sourcePort: sp, destinationPort: dp)
                    == key.hash(s4.bytes + d4.bytes + Self.portBytes(sp, dp)))
            #expect(key.hash(source: s6, destination: d6) == key.hash(s6.bytes + d6.bytes))
            #expect(key.hash(source: s6, destination: d6, sourcePort: sp, destinationPort: dp)
                    == key.hash(s6.bytes + d6.bytes + Self.portBytes(sp, dp)))
        }
    }

    @Test func redirectionTableDefaultsAndLookup() throws {
        let reta = try #require(RedirectionTable(size: 128, queueCount: 3))
        #expect(reta.size == 128)
        #expect(reta.entries.prefix(7) == [0, 1, 2, 0, 1, 2, 0])
        #expect(reta.queueCount == 3)
        for h: UInt32 in [0, 1, 2, 3, 127, 128, 129, 0xFFFF_FFFF, 0x51cc_c178] {
            #expect(reta.queue(forHash: h) == reta.entries[Int(h % 128)])
        }
        // A size that is not a power of two uses the remainder.
        let odd = try #require(RedirectionTable(size: 100, queueCount: 4))
        for h: UInt32 in [0, 99, 100, 12345, 0xFFFF_FFFF] {
            #expect(odd.queue(forHash: h) == UInt16(h % 100 % 4))
        }
        var custom = try #require(RedirectionTable(entries: [3, 3, 7, 7]))
        #expect(custom.queue(forHash: 6) == 7)
        let setInRange = custom.set(2, to: 9)
        let setOutOfRange = custom.set(4, to: 9)
        #expect(setInRange && !setOutOfRange)
        #expect(custom.queue(forHash: 6) == 9)
        #expect(RedirectionTable(size: 0, queueCount: 1) == nil)
        #expect(RedirectionTable(size: 128, queueCount: 0) == nil)
        #expect(RedirectionTable(entries: []) == nil)
    }

    /// Not a benchmark (this build is unoptimised); catches a pathological
    /// slowdown and prints the rate.
    @Test func hashRate() {
        let key = ToeplitzKey.microsoft
        let n = 200_000
        var acc: UInt32 = 0
        let start = monotonicNanoseconds()
        for i in 0..<n {
            acc &+= key.hash(source: IPv4Address(UInt32(truncatingIfNeeded: i)), destination: IPv4Address(0x0A00_0001),
                            sourcePort: UInt16(truncatingIfNeeded: i), destinationPort: 4500)
        }
        let seconds = Double(monotonicNanoseconds() - start) / 1e9
        print("Toeplitz IPv4 4-tuple: \(Int(Double(n) / seconds)) hashes/s (acc \(acc))")
        #expect(seconds < 20)
    }
}

extension String {
    func replacingFirstCharacter(with c: Character) -> String { String(c) + dropFirst() }
}
