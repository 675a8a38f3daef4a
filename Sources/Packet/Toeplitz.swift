// The Toeplitz RSS hash as NICs compute it (Microsoft "RSS hashing
// functions"; DPDK `rte_softrss`), and the redirection table (RETA) that maps
// a hash to an RX queue. Traffic sources use these to steer flows to the queue
// a NIC would pick on ports that have no RSS of their own (net_ring,
// net_pcap, net_null).
//
// Definition: for each set bit i of the input (bit 0 = most significant bit
// of byte 0) the result XORs the 32-bit window of the key starting at key bit
// i. The key therefore covers inputs up to `key.count - 4` bytes (36 for the
// usual 40-byte key: an IPv6 4-tuple).
//
// Speed: the windows for each (input byte position, byte value) are
// precomputed, so a hash is one table load and XOR per input byte
// (table[pos][byte], 1 KiB per position, 36 KiB for a 40-byte key).

/// An RSS key with its precomputed lookup table. Keys are at least 40 bytes.
public struct ToeplitzKey: Sendable, Hashable, CustomStringConvertible {
    /// The key bytes, as programmed into a NIC.
    public let bytes: [UInt8]
    /// `table[pos &* 256 &+ byte]`: XOR of the key windows selected by the set
    /// bits of `byte` at input position `pos`. Has `maxInputLength * 256` entries.
    @usableFromInline let table: [UInt32]

    /// The smallest key length NICs use (and the length of the default key).
    public static let minimumLength = 40

    /// The longest input the key covers: key length minus 4 bytes.
    @inlinable public var maxInputLength: Int { bytes.count &- 4 }

    /// Nil when the key is shorter than 40 bytes.
    public init?(bytes: [UInt8]) {
        guard bytes.count >= Self.minimumLength else { return nil }
        self.bytes = bytes
        self.table = Self.buildTable(bytes)
    }

    /// Parses hex text (optionally with `:` or whitespace between bytes, and an
    /// optional `0x` prefix); nil when malformed or shorter than 40 bytes.
    public init?(hex text: String) {
        var digits = Substring(text)
        if digits.hasPrefix("0x") || digits.hasPrefix("0X") { digits = digits.dropFirst(2) }
        let clean = digits.filter { $0 != ":" && $0 != " " && $0 != "\n" && $0 != "\t" }
        guard clean.count % 2 == 0, clean.allSatisfy({ $0.isASCII && $0.isHexDigit }) else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(clean.count / 2)
        var i = clean.startIndex
        while i < clean.endIndex {
            let j = clean.index(i, offsetBy: 2)
            guard let b = UInt8(clean[i..<j], radix: 16) else { return nil }
            out.append(b)
            i = j
        }
        self.init(bytes: out)
    }

    /// The Microsoft default key from "Verifying the RSS Hash Calculation";
    /// DPDK testpmd's default `rss_intel_key` is the same 40 bytes.
    public static let microsoft = ToeplitzKey(bytes: [
        0x6d, 0x5a, 0x56, 0xda, 0x25, 0x5b, 0x0e, 0xc2,
        0x41, 0x67, 0x25, 0x3d, 0x43, 0xa3, 0x8f, 0xb0,
        0xd0, 0xca, 0x2b, 0xcb, 0xae, 0x7b, 0x30, 0xb4,
        0x77, 0xcb, 0x2d, 0xa3, 0x80, 0x30, 0xf2, 0x0c,
        0x6a, 0x42, 0xb7, 0x3b, 0xbe, 0xac, 0x01, 0xfa,
    ])!  // a 40-byte literal: the initializer cannot fail

    /// DPDK testpmd's default key (`rss_intel_key`), identical to `microsoft`.
    public static var dpdkDefault: ToeplitzKey { microsoft }

    public static func == (a: Self, b: Self) -> Bool { a.bytes == b.bytes }
    public func hash(into h: inout Hasher) { h.combine(bytes) }

    public var description: String {
        bytes.map { $0 < 16 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    // MARK: hashing

    /// The hash of `input`. Only the first `maxInputLength` bytes are covered
    /// by the key; any further bytes are ignored.
    @inlinable
    public func hash(_ input: UnsafeRawBufferPointer) -> UInt32 {
        let n = Swift.min(input.count, maxInputLength)
        guard n > 0, let base = input.baseAddress else { return 0 }
        return table.withUnsafeBufferPointer { t in
            var h: UInt32 = 0
            var pos = 0
            // pos < n <= maxInputLength, so pos * 256 + byte < table.count.
            while pos < n {
                h ^= t[pos &* 256 &+ Int(base.load(fromByteOffset: pos, as: UInt8.self))]
                pos &+= 1
            }
            return h
        }
    }

    public func hash(_ input: [UInt8]) -> UInt32 {
        input.withUnsafeBytes { hash($0) }
    }

    /// IPv4 2-tuple: source address, destination address.
    @inlinable
    public func hash(source: IPv4Address, destination: IPv4Address) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            Self.mix(t, source.value, at: 0) ^ Self.mix(t, destination.value, at: 4)
        }
    }

    /// IPv4 4-tuple: source address, destination address, source port,
    /// destination port (TCP or UDP).
    @inlinable
    public func hash(source: IPv4Address, destination: IPv4Address,
                     sourcePort: UInt16, destinationPort: UInt16) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            Self.mix(t, source.value, at: 0) ^ Self.mix(t, destination.value, at: 4)
                ^ Self.mix(t, UInt32(sourcePort) << 16 | UInt32(destinationPort), at: 8)
        }
    }

    /// IPv6 2-tuple: source address, destination address (32 bytes).
    @inlinable
    public func hash(source: IPv6Address, destination: IPv6Address) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            Self.mix(t, source.high, at: 0) ^ Self.mix(t, source.low, at: 8)
                ^ Self.mix(t, destination.high, at: 16) ^ Self.mix(t, destination.low, at: 24)
        }
    }

    /// IPv6 4-tuple: source address, destination address, source port,
    /// destination port (36 bytes).
    @inlinable
    public func hash(source: IPv6Address, destination: IPv6Address,
                     sourcePort: UInt16, destinationPort: UInt16) -> UInt32 {
        table.withUnsafeBufferPointer { t in
            Self.mix(t, source.high, at: 0) ^ Self.mix(t, source.low, at: 8)
                ^ Self.mix(t, destination.high, at: 16) ^ Self.mix(t, destination.low, at: 24)
                ^ Self.mix(t, UInt32(sourcePort) << 16 | UInt32(destinationPort), at: 32)
        }
    }

    /// The bit-serial algorithm exactly as Microsoft's pseudocode states it;
    /// slow, kept as the oracle for the table-driven `hash`.
    public func referenceHash(_ input: [UInt8]) -> UInt32 {
        var result: UInt32 = 0
        for (i, byte) in input.prefix(maxInputLength).enumerated() {
            for bit in 0..<8 where byte & (0x80 >> UInt8(bit)) != 0 {
                result ^= Self.window(bytes, bit: i * 8 + bit)
            }
        }
        return result
    }

    // MARK: internals

    /// XOR of the table entries for the four big-endian bytes of `v` at
    /// input positions `pos ..< pos + 4`. Callers pass pos + 4 <= 36, and
    /// every key has at least 36 positions.
    @inlinable @inline(__always)
    static func mix(_ t: UnsafeBufferPointer<UInt32>, _ v: UInt32, at pos: Int) -> UInt32 {
        let base = pos &* 256
        return t[base &+ Int(v >> 24)]
            ^ t[base &+ 256 &+ Int((v >> 16) & 0xFF)]
            ^ t[base &+ 512 &+ Int((v >> 8) & 0xFF)]
            ^ t[base &+ 768 &+ Int(v & 0xFF)]
    }

    /// Eight big-endian bytes of `v` at positions `pos ..< pos + 8`.
    @inlinable @inline(__always)
    static func mix(_ t: UnsafeBufferPointer<UInt32>, _ v: UInt64, at pos: Int) -> UInt32 {
        mix(t, UInt32(truncatingIfNeeded: v >> 32), at: pos) ^ mix(t, UInt32(truncatingIfNeeded: v), at: pos &+ 4)
    }

    /// The 32 key bits starting at bit `bit` (bit 0 = MSB of byte 0); bits
    /// past the end of the key read as zero.
    static func window(_ key: [UInt8], bit: Int) -> UInt32 {
        let first = bit / 8
        var v: UInt64 = 0
        for k in 0..<5 {
            let idx = first + k
            v = v << 8 | UInt64(idx < key.count ? key[idx] : 0)
        }
        return UInt32(truncatingIfNeeded: v >> UInt64(8 - bit % 8))
    }

    static func buildTable(_ key: [UInt8]) -> [UInt32] {
        let positions = key.count - 4
        var table = [UInt32](repeating: 0, count: positions * 256)
        for pos in 0..<positions {
            // windows[k]: the window for bit k of this byte (k = 0 is the MSB).
            let windows = (0..<8).map { window(key, bit: pos * 8 + $0) }
            let row = pos * 256
            for byte in 1..<256 {
                // Build from the byte with its lowest set bit cleared.
                let low = byte & -byte
                let k = 7 - low.trailingZeroBitCount
                table[row + byte] = table[row + (byte & (byte - 1))] ^ windows[k]
            }
        }
        return table
    }
}

/// The RSS redirection table (RETA): `queue(forHash:)` is
/// `entries[hash % size]`, as a NIC indexes its table with the hash's low bits.
/// Queue numbers are plain `UInt16` port queue indices.
public struct RedirectionTable: Sendable, Hashable {
    /// One queue number per entry.
    public private(set) var entries: [UInt16]
    /// `size - 1` when the size is a power of two (then `%` is a mask), else nil.
    @usableFromInline var mask: UInt32?

    /// The table DPDK ports start with: entry i holds queue `i % queueCount`.
    /// Nil when `size` is not in 1...65536 or `queueCount` not in 1...65536.
    public init?(size: Int = 128, queueCount: Int) {
        guard (1...65536).contains(size), (1...65536).contains(queueCount) else { return nil }
        self.init(validEntries: (0..<size).map { UInt16(truncatingIfNeeded: $0 % queueCount) })
    }

    /// An explicit table; nil when empty or longer than 65536 entries.
    public init?(entries: [UInt16]) {
        guard (1...65536).contains(entries.count) else { return nil }
        self.init(validEntries: entries)
    }

    private init(validEntries: [UInt16]) {
        entries = validEntries
        let n = validEntries.count
        mask = n & (n - 1) == 0 ? UInt32(n - 1) : nil
    }

    @inlinable public var size: Int { entries.count }

    /// The number of distinct queues the table points at.
    public var queueCount: Int { Set(entries).count }

    /// Sets entry `index` to `queue`; false (and no change) when `index` is out of range.
    @discardableResult
    public mutating func set(_ index: Int, to queue: UInt16) -> Bool {
        guard entries.indices.contains(index) else { return false }
        entries[index] = queue
        return true
    }

    /// The queue a NIC with this table delivers a packet with `hash` to.
    @inlinable
    public func queue(forHash hash: UInt32) -> UInt16 {
        entries.withUnsafeBufferPointer { e in
            // entries.count >= 1 (every initializer checks), and the index is
            // below it either by the mask or by the remainder.
            if let mask { return e[Int(hash & mask)] }
            return e[Int(hash % UInt32(truncatingIfNeeded: e.count))]
        }
    }
}
