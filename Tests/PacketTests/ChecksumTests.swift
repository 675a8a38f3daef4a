import Packet
import Testing

@Suite struct ChecksumTests {
    @Test func rfc1071Example() {
        // RFC 1071 §3: the words 0001 f203 f4f5 f6f7 sum to 0xddf2.
        let bytes: [UInt8] = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]
        var s = OnesComplementSum()
        s.add(bytes)
        #expect(s.folded == 0xDDF2)
        #expect(InternetChecksum.checksum(bytes) == 0x220D)
    }

    @Test func emptyAndSingleByte() {
        #expect(InternetChecksum.checksum([]) == 0xFFFF)
        #expect(InternetChecksum.checksum([0xAB]) == ~UInt16(0xAB00))
    }

    @Test func knownIPv4Header() {
        // A commonly quoted example header whose checksum is 0xb861.
        var h: [UInt8] = [0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11,
                          0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0xc7]
        #expect(InternetChecksum.checksum(h) == 0)
        #expect(h.withUnsafeBytes { InternetChecksum.ipv4Header($0.baseAddress!) } == 0xB861)
        // The fast path ignores whatever the field holds.
        h[10] = 0x12; h[11] = 0x34
        #expect(h.withUnsafeBytes { InternetChecksum.ipv4Header($0.baseAddress!) } == 0xB861)
    }

    @Test func matchesReferenceOnRandomBuffersAndChunking() {
        var rng = SplitMix64(seed: 42)
        for _ in 0..<2000 {
            let n = Int(rng.next() % 300)
            let bytes = (0..<n).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let expected = referenceChecksum(bytes)
            #expect(InternetChecksum.checksum(bytes) == expected)
            // The same bytes in random chunks, odd lengths included, at odd
            // buffer addresses too.
            var s = OnesComplementSum()
            var i = 0
            while i < n {
                let len = min(n - i, Int(rng.next() % 13))
                let chunk = Array(bytes[i ..< i + len])
                if rng.next() & 1 == 0 {
                    s.add(chunk)
                } else {
                    let shifted = [0xEE] + chunk
                    shifted.withUnsafeBytes { s.add(UnsafeRawBufferPointer(rebasing: $0[1...])) }
                }
                i += len
            }
            #expect(s.checksum == expected)
        }
    }

    @Test func fieldAddsEqualByteAdds() {
        var a = OnesComplementSum()
        a.add([0x12])
        a.add(UInt16(0x3456))
        a.add(UInt32(0x789A_BCDE))
        a.add(UInt64(0x0102_0304_0506_0708))
        let b = InternetChecksum.checksum([0x12, 0x34, 0x56, 0x78, 0x9A, 0xBC, 0xDE, 1, 2, 3, 4, 5, 6, 7, 8])
        #expect(a.checksum == b)
    }

    @Test func rfc1624Example() {
        // RFC 1624 §4: m = 0x5555 -> 0x3285, other octets sum to 0xCD7A.
        // Recomputation gives 0x0000; eqn. 2 would give 0xFFFF.
        #expect(InternetChecksum.update(0xDD2F, old: UInt16(0x5555), new: UInt16(0x3285)) == 0x0000)
    }

    @Test func incrementalUpdateMatchesRecomputation() {
        var rng = SplitMix64(seed: 7)
        var mismatches = 0
        for _ in 0..<20000 {
            var h = (0..<20).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            h[0] = 0x45; h[10] = 0; h[11] = 0
            let hc = referenceChecksum(h)
            h[10] = UInt8(hc >> 8); h[11] = UInt8(hc & 0xFF)
            // Change one 16-bit word (not the checksum) or one 32-bit word.
            let word = [0, 1, 2, 3, 4, 6, 7, 8, 9][Int(rng.next() % 9)] * 2
            let old = be16(h, word)
            let new = UInt16(truncatingIfNeeded: rng.next())
            h[word] = UInt8(new >> 8); h[word + 1] = UInt8(new & 0xFF)
            var check = h; check[10] = 0; check[11] = 0
            if InternetChecksum.update(hc, old: old, new: new) != referenceChecksum(check) { mismatches += 1 }

            let addr = [12, 16][Int(rng.next() % 2)]
            let old32 = be32(h, addr)
            let new32 = UInt32(truncatingIfNeeded: rng.next())
            let hc2 = referenceChecksum(check)
            for k in 0..<4 { h[addr + k] = UInt8(truncatingIfNeeded: new32 >> UInt32(24 - 8 * k)) }
            check = h; check[10] = 0; check[11] = 0
            if InternetChecksum.update(hc2, old: old32, new: new32) != referenceChecksum(check) { mismatches += 1 }
        }
        #expect(mismatches == 0)
    }

    /// Every stored checksum value 0x0000...0xFFFF (0xFFFF being the other
    /// representation of a header whose correct checksum is 0x0000) × a sample
    /// of TTLs: the incremental TTL update equals a full recomputation, for
    /// the value helper, the in-place helper and the general RFC 1624 update.
    @Test func ttlDecrementExhaustive() {
        let ttls: [UInt8] = [1, 2, 3, 17, 64, 65, 128, 200, 254, 255]
        var mismatches: [String] = []
        var header: [UInt8] = [0x45, 0x00, 0x05, 0xDC, 0x00, 0x00, 0x40, 0x00, 0x00, 0x11,
                               0x00, 0x00, 0x0A, 0x01, 0x02, 0x03, 0xC0, 0xA8, 0x64, 0x07]
        for ttl in ttls {
            for stored in 0...0xFFFF {
                let hc = UInt16(stored)
                header[8] = ttl
                header[10] = UInt8(hc >> 8); header[11] = UInt8(hc & 0xFF)
                // Choose the identification so the header verifies with this checksum.
                header[4] = 0; header[5] = 0
                var s = OnesComplementSum()
                s.add(header)
                let id = ~s.folded
                header[4] = UInt8(id >> 8); header[5] = UInt8(id & 0xFF)
                guard InternetChecksum.checksum(header) == 0 else { mismatches.append("setup \(hc)"); continue }

                var after = header
                let newTTL = after.withUnsafeMutableBytes { InternetChecksum.decrementTTL(ipv4Header: $0.baseAddress!) }
                let full = after.withUnsafeBytes { InternetChecksum.ipv4Header($0.baseAddress!) }
                let inPlace = be16(after, 10)
                let valueHelper = InternetChecksum.afterTTLDecrement(hc)
                let general = InternetChecksum.update(hc, old: UInt16(ttl) << 8 | 0x11, new: UInt16(ttl - 1) << 8 | 0x11)
                if newTTL != ttl - 1 || after[8] != ttl - 1 || inPlace != full || valueHelper != full || general != full
                    || InternetChecksum.checksum(after) != 0 || full == 0xFFFF {
                    mismatches.append("ttl \(ttl) hc \(hc): full \(full) inPlace \(inPlace) value \(valueHelper) general \(general)")
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(5))")
    }

    /// `ipv4HeaderIsValid` (one divisibility test) against RFC 1071 folding,
    /// for every header length 20…60: random headers with every one of the
    /// 65536 checksum values, so the valid ones (both representations of
    /// zero included) and all invalid ones are met; plus the all-zero and
    /// all-ones headers.
    @Test func ipv4HeaderValidityMatchesFolding() {
        var rng = SplitMix64(seed: 0x1071)
        var mismatches: [String] = []
        var valid = 0
        for length in stride(from: 20, through: 60, by: 4) {
            for _ in 0..<(length == 20 ? 3 : 1) {
                var header = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                for stored in 0...0xFFFF {
                    header[10] = UInt8(stored >> 8); header[11] = UInt8(stored & 0xFF)
                    let expected = referenceChecksum(header) == 0
                    let got = header.withUnsafeBytes { InternetChecksum.ipv4HeaderIsValid($0.baseAddress!, length: length) }
                    if got != expected { mismatches.append("length \(length) checksum \(stored): \(got)") }
                    if expected { valid += 1 }
                }
            }
        }
        #expect(mismatches.isEmpty, "\(mismatches.count) mismatches: \(mismatches.prefix(5))")
        #expect(valid >= 13, "each header has one valid checksum at least")
        let zeros = [UInt8](repeating: 0, count: 20), ones = [UInt8](repeating: 0xFF, count: 20)
        #expect(!zeros.withUnsafeBytes { InternetChecksum.ipv4HeaderIsValid($0.baseAddress!, length: 20) })
        #expect(ones.withUnsafeBytes { InternetChecksum.ipv4HeaderIsValid($0.baseAddress!, length: 20) })
        #expect(referenceChecksum(zeros) != 0 && referenceChecksum(ones) == 0)
    }

    @Test func decrementTTLAtZeroLeavesHeaderAlone() {
        var h: [UInt8] = [0x45, 0, 0, 20, 0, 0, 0, 0, 0, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]
        let c = referenceChecksum(h)
        h[10] = UInt8(c >> 8); h[11] = UInt8(c & 0xFF)
        let before = h
        #expect(h.withUnsafeMutableBytes { InternetChecksum.decrementTTL(ipv4Header: $0.baseAddress!) } == 0)
        #expect(h == before)
    }

    @Test func pseudoHeaderSumsMatchReference() {
        let s4 = IPv4Address(192, 0, 2, 1), d4 = IPv4Address(198, 51, 100, 7)
        var p4 = InternetChecksum.pseudoHeaderSum(source: s4, destination: d4, protocol: .udp, length: 0x1234)
        #expect(p4.checksum == referenceChecksum(s4.bytes + d4.bytes + [0, 17, 0x12, 0x34]))
        let s6 = IPv6Address("2001:db8::1")!, d6 = IPv6Address("fe80::aa:bb:cc:dd")!
        let p6 = InternetChecksum.pseudoHeaderSum(source: s6, destination: d6, protocol: .tcp, length: 0x0102_0304)
        #expect(p6.checksum == referenceChecksum(s6.bytes + d6.bytes + [1, 2, 3, 4, 0, 0, 0, 6]))
        // Continuing a pseudo-header sum with an odd-length segment.
        let seg: [UInt8] = [1, 2, 3, 4, 5, 6, 7, 8, 9]
        p4.add(seg)
        #expect(p4.checksum == referenceChecksum(s4.bytes + d4.bytes + [0, 17, 0x12, 0x34] + seg))
        let direct = seg.withUnsafeBytes { InternetChecksum.transport($0, source: s6, destination: d6, protocol: .udp) }
        #expect(direct == referenceChecksum(s6.bytes + d6.bytes + [0, 0, 0, 9, 0, 0, 0, 17] + seg))
    }

    @Test func udpZeroIsSentAsAllOnes() {
        #expect(InternetChecksum.udpFieldValue(0) == 0xFFFF)
        #expect(InternetChecksum.udpFieldValue(0x1234) == 0x1234)
    }
}
