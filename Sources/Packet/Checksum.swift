// The Internet checksum (RFC 1071), its incremental update (RFC 1624) and the
// UDP/TCP pseudo-header sums for IPv4 (RFC 768/793) and IPv6 (RFC 8200 §8.1).
//
// All checksum values here are host-order numbers of the big-endian field:
// store them with `storeBE16`. Buffers are summed with native-order 64-bit
// loads; the one's-complement sum is byte-order independent (RFC 1071 §2(B)),
// so the folded native sum only needs one byte swap at the end.

/// A running one's-complement sum over a byte stream, in the big-endian
/// domain. Chunks may have any length: after an odd-length chunk the next one
/// is shifted by a byte, as if the chunks had been concatenated.
public struct OnesComplementSum: Sendable, Hashable {
    /// Sum of big-endian 16-bit words with end-around carry; fold before use.
    @usableFromInline var accumulator: UInt64
    /// True when an odd number of bytes has been added so far.
    @usableFromInline var odd: Bool

    @inlinable public init() { accumulator = 0; odd = false }

    /// Appends a 16-bit big-endian field (two bytes).
    @inlinable public mutating func add(_ word: UInt16) {
        accumulator = Self.addCarrying(accumulator, UInt64(odd ? word.byteSwapped : word))
    }

    /// Appends a 32-bit big-endian field (four bytes).
    @inlinable public mutating func add(_ value: UInt32) {
        add(UInt16(truncatingIfNeeded: value >> 16))
        add(UInt16(truncatingIfNeeded: value))
    }

    /// Appends a 64-bit big-endian field (eight bytes).
    @inlinable public mutating func add(_ value: UInt64) {
        add(UInt32(truncatingIfNeeded: value >> 32))
        add(UInt32(truncatingIfNeeded: value))
    }

    /// Appends bytes.
    @inlinable public mutating func add(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, bytes.count > 0 else { return }
        var sum = UInt16(bigEndian: Self.fold(Self.nativeSum(base, count: bytes.count)))
        if odd { sum = sum.byteSwapped }
        accumulator = Self.addCarrying(accumulator, UInt64(sum))
        if bytes.count & 1 == 1 { odd.toggle() }
    }

    /// Appends bytes.
    @inlinable public mutating func add(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { add($0) }
    }

    /// The sum folded to 16 bits (not complemented).
    @inlinable public var folded: UInt16 { Self.fold(accumulator) }

    /// The checksum: the complement of the folded sum. Over data that
    /// includes a correct checksum field this is zero.
    @inlinable public var checksum: UInt16 { ~folded }

    // MARK: arithmetic

    /// 64-bit one's-complement addition. When the add overflows, the wrapped
    /// sum is at most 2^64 - 2, so adding the carry back cannot overflow.
    @inlinable @inline(__always)
    static func addCarrying(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (s, overflow) = a.addingReportingOverflow(b)
        return s &+ (overflow ? 1 : 0)
    }

    /// Folds a 64-bit one's-complement sum to 16 bits. Bounds after each
    /// step: < 2^33, < 2^18, <= 0x10002, <= 0xFFFF, so `&+` never wraps and
    /// the final truncation loses nothing.
    @inlinable @inline(__always)
    static func fold(_ value: UInt64) -> UInt16 {
        var s = (value >> 32) &+ (value & 0xFFFF_FFFF)
        s = (s >> 16) &+ (s & 0xFFFF)
        s = (s >> 16) &+ (s & 0xFFFF)
        s = (s >> 16) &+ (s & 0xFFFF)
        return UInt16(truncatingIfNeeded: s)
    }

    /// One's-complement sum of `count` bytes as native-order words (not
    /// folded). A trailing odd byte counts as the high byte of a zero-padded
    /// big-endian word. Reads exactly `count` bytes.
    @inlinable
    static func nativeSum(_ p: UnsafeRawPointer, count: Int) -> UInt64 {
        var acc: UInt64 = 0
        var i = 0
        // Two independent accumulators let the adds overlap; `i &+ 16 <= count`
        // cannot wrap because count is a buffer length (< Int.max - 16).
        var acc2: UInt64 = 0
        while count &- i >= 16 {
            acc = addCarrying(acc, p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            acc2 = addCarrying(acc2, p.loadUnaligned(fromByteOffset: i &+ 8, as: UInt64.self))
            i &+= 16
        }
        acc = addCarrying(acc, acc2)
        if count &- i >= 8 {
            acc = addCarrying(acc, p.loadUnaligned(fromByteOffset: i, as: UInt64.self))
            i &+= 8
        }
        if count &- i >= 4 {
            acc = addCarrying(acc, UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt32.self)))
            i &+= 4
        }
        if count &- i >= 2 {
            acc = addCarrying(acc, UInt64(p.loadUnaligned(fromByteOffset: i, as: UInt16.self)))
            i &+= 2
        }
        if count &- i == 1 {
            // The word [b, 0] as a native-order load would read it.
            let b = p.load(fromByteOffset: i, as: UInt8.self)
            acc = addCarrying(acc, UInt64((UInt16(b) << 8).bigEndian))
        }
        return acc
    }
}

/// RFC 1071 checksums and RFC 1624 incremental updates.
public enum InternetChecksum {
    /// The checksum of a buffer. Over a header that includes its (correct)
    /// checksum field the result is zero.
    @inlinable
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt16 {
        var s = OnesComplementSum()
        s.add(bytes)
        return s.checksum
    }

    public static func checksum(_ bytes: [UInt8]) -> UInt16 {
        bytes.withUnsafeBytes { checksum($0) }
    }

    /// The value the checksum field of a 20-byte IPv4 header (no options)
    /// must hold; the current contents of the field are ignored. The caller
    /// guarantees 20 readable bytes.
    @inlinable
    public static func ipv4Header(_ header: UnsafeRawPointer) -> UInt16 {
        // Bytes 0-7, 8-9 (TTL, protocol) and 12-19, skipping the checksum at 10-11.
        var acc = UInt64(header.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        acc = OnesComplementSum.addCarrying(acc, UInt64(header.loadUnaligned(fromByteOffset: 8, as: UInt16.self)))
        acc = OnesComplementSum.addCarrying(acc, header.loadUnaligned(fromByteOffset: 12, as: UInt64.self))
        return ~UInt16(bigEndian: OnesComplementSum.fold(acc))
    }

    /// Whether an IPv4 header of `length` bytes (20…60, a multiple of 4, the
    /// caller guarantees them readable) carries a correct checksum: its
    /// one's-complement sum is 0xFFFF.
    ///
    /// That holds exactly when the plain integer sum of its 16-bit words is a
    /// nonzero multiple of 0xFFFF: 2^16 ≡ 1 (mod 0xFFFF), so the end-around
    /// carries of the one's-complement sum change nothing modulo 0xFFFF, and
    /// that sum is 0 only for an all-zero header. A 32-bit word is likewise
    /// its two 16-bit halves modulo 0xFFFF, and reading the words in the
    /// other byte order multiplies the sum by 2^8, which is prime to 0xFFFF.
    /// So the header is summed as 32-bit words as they load and tested with
    /// one divisibility check (a multiply and a compare), no folds.
    /// (0xFFFE_FFFE_FFFE_FFFF × 0xFFFF ≡ 1 mod 2^64.)
    @inlinable @inline(__always)
    public static func ipv4HeaderIsValid(_ header: UnsafeRawPointer, length: Int) -> Bool {
        var acc: UInt64
        var i: Int
        if length >= 20 {
            // Straight-line for the fixed part.
            acc = UInt64(header.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
                &+ UInt64(header.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
                &+ UInt64(header.loadUnaligned(fromByteOffset: 8, as: UInt32.self))
                &+ UInt64(header.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
                &+ UInt64(header.loadUnaligned(fromByteOffset: 16, as: UInt32.self))
            i = 20
        } else {
            acc = 0
            i = 0
        }
        // At most fifteen 32-bit words: the sum stays below 2^36, no overflow.
        while i < length {
            acc &+= UInt64(header.loadUnaligned(fromByteOffset: i, as: UInt32.self))
            i &+= 4
        }
        // acc is a multiple of the odd 0xFFFF exactly when acc × 0xFFFF⁻¹
        // (mod 2^64) is at most (2^64 − 1) / 0xFFFF (Granlund and Montgomery).
        return acc != 0 && acc &* 0xFFFE_FFFE_FFFE_FFFF <= 0x0001_0001_0001_0001
    }

    /// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered
    /// data changed from `old` to `new`: HC' = ~(~HC + ~m + m').
    /// Unlike eqn. 2 (RFC 1141) it never yields 0xFFFF, so the result equals
    /// a full recomputation whenever the input checksum was correct.
    @inlinable
    public static func update(_ checksum: UInt16, old: UInt16, new: UInt16) -> UInt16 {
        // Three 16-bit terms: at most 3 * 0xFFFF, no wrap in 32 bits.
        var s = UInt32(~checksum) &+ UInt32(~old) &+ UInt32(new)
        s = (s >> 16) &+ (s & 0xFFFF)  // <= 2 + 0xFFFF
        s = (s >> 16) &+ (s & 0xFFFF)  // <= 0xFFFF
        return ~UInt16(truncatingIfNeeded: s)
    }

    /// RFC 1624 eqn. 3 for a 32-bit field (an IPv4 address, a sequence number).
    @inlinable
    public static func update(_ checksum: UInt16, old: UInt32, new: UInt32) -> UInt16 {
        // Five 16-bit terms: at most 5 * 0xFFFF, no wrap in 32 bits.
        var s = UInt32(~checksum)
            &+ UInt32(~UInt16(truncatingIfNeeded: old >> 16)) &+ UInt32(~UInt16(truncatingIfNeeded: old))
            &+ (new >> 16) &+ (new & 0xFFFF)
        s = (s >> 16) &+ (s & 0xFFFF)  // <= 4 + 0xFFFF
        s = (s >> 16) &+ (s & 0xFFFF)  // <= 0xFFFF
        return ~UInt16(truncatingIfNeeded: s)
    }

    /// The IPv4 header checksum after the TTL dropped by exactly one.
    ///
    /// TTL is the high byte of the word at offset 8, so m' = m - 0x0100 and
    /// eqn. 3 reduces to HC' = HC + 0x0100 with end-around carry, where a sum
    /// of 0xFFFF (negative zero) becomes 0x0000 — the same value a full
    /// recomputation gives, which never produces 0xFFFF (Linux's
    /// `ip_decrease_ttl` does the same). Independent of the TTL value.
    @inlinable @inline(__always)
    public static func afterTTLDecrement(_ checksum: UInt16) -> UInt16 {
        let s = UInt32(checksum) &+ 0x0100               // <= 0x100FF
        let folded = (s & 0xFFFF) &+ (s >> 16)           // <= 0xFFFF
        return folded == 0xFFFF ? 0 : UInt16(truncatingIfNeeded: folded)
    }

    /// Decrements the TTL of the IPv4 header at `header` and patches its
    /// checksum in place. Returns the new TTL. A header whose TTL is already
    /// 0 is left untouched and 0 is returned; a router drops the packet in
    /// either case (and should have checked TTL <= 1 before forwarding).
    /// The caller guarantees 12 writable bytes.
    @inlinable @inline(__always)
    public static func decrementTTL(ipv4Header header: UnsafeMutableRawPointer) -> UInt8 {
        let ttl = header.load(fromByteOffset: IPv4Field.ttl, as: UInt8.self)
        guard ttl != 0 else { return 0 }
        decrementNonzeroTTL(ipv4Header: header)
        return ttl &- 1
    }

    /// `decrementTTL` for a header whose TTL the caller has checked to be
    /// at least 1 (a router forwarding only TTL > 1): no test. A TTL of 0
    /// would wrap to 255 with a wrong checksum.
    @inlinable @inline(__always)
    public static func decrementNonzeroTTL(ipv4Header header: UnsafeMutableRawPointer) {
        // Bytes 8…11 as one little-endian word: TTL, protocol, then the
        // checksum as it lies in memory in the high half. One's-complement
        // sums do not depend on byte order (RFC 1071 §2(B)), so adding 0x0100
        // to the big-endian checksum is adding 1 to that half. The result
        // must follow afterTTLDecrement: raw + 1, except that 0xFFFE gives
        // 0x0000 (not negative zero) and 0xFFFF gives 0x0001 (end-around
        // carry), both raw − 0xFFFE, i.e. + 2 with the carry out of the
        // word dropped. The TTL byte drops by one without a borrow (it is
        // not 0), so the whole update is one add to the word.
        let word = UInt32(littleEndian: header.loadUnaligned(fromByteOffset: IPv4Field.ttl, as: UInt32.self))
        let checksumStep: UInt32 = word >= 0xFFFE_0000 ? 0x2_0000 : 0x1_0000
        header.storeBytes(of: (word &+ checksumStep &- 1).littleEndian, toByteOffset: IPv4Field.ttl, as: UInt32.self)
    }

    // MARK: pseudo-headers

    /// Sum of the IPv4 pseudo-header: source, destination, zero, protocol,
    /// and the transport length (header plus payload).
    @inlinable
    public static func pseudoHeaderSum(source: IPv4Address, destination: IPv4Address,
                                       protocol proto: IPProtocol, length: UInt16) -> OnesComplementSum {
        var s = OnesComplementSum()
        s.add(source.value)
        s.add(destination.value)
        s.add(UInt16(proto.rawValue))
        s.add(length)
        return s
    }

    /// Sum of the IPv6 pseudo-header: source, destination, 32-bit
    /// upper-layer length, three zero bytes and the next header.
    @inlinable
    public static func pseudoHeaderSum(source: IPv6Address, destination: IPv6Address,
                                       protocol proto: IPProtocol, length: UInt32) -> OnesComplementSum {
        var s = OnesComplementSum()
        s.add(source.high)
        s.add(source.low)
        s.add(destination.high)
        s.add(destination.low)
        s.add(length)
        s.add(UInt16(proto.rawValue))
        return s
    }

    /// The UDP/TCP checksum of `segment` (transport header and payload, as
    /// stored: zero the checksum field first to compute one, leave it to
    /// verify one — a correct segment gives 0). The pseudo-header length is
    /// `segment.count`. A UDP sender must transmit 0xFFFF when this returns 0
    /// (`udpFieldValue`).
    @inlinable
    public static func transport(_ segment: UnsafeRawBufferPointer, source: IPv4Address,
                                 destination: IPv4Address, protocol proto: IPProtocol) -> UInt16 {
        // An IPv4 segment longer than 65535 bytes cannot exist; truncation only
        // gives a wrong (never a trapping) answer for such input.
        var s = pseudoHeaderSum(source: source, destination: destination, protocol: proto,
                                length: UInt16(truncatingIfNeeded: segment.count))
        s.add(segment)
        return s.checksum
    }

    /// IPv6 form of `transport(_:source:destination:protocol:)`.
    @inlinable
    public static func transport(_ segment: UnsafeRawBufferPointer, source: IPv6Address,
                                 destination: IPv6Address, protocol proto: IPProtocol) -> UInt16 {
        var s = pseudoHeaderSum(source: source, destination: destination, protocol: proto,
                                length: UInt32(truncatingIfNeeded: segment.count))
        s.add(segment)
        return s.checksum
    }

    /// The value a UDP sender stores: a computed 0 goes on the wire as 0xFFFF
    /// because 0 means "no checksum" (RFC 768; mandatory over IPv6).
    @inlinable
    public static func udpFieldValue(_ checksum: UInt16) -> UInt16 {
        checksum == 0 ? 0xFFFF : checksum
    }
}
