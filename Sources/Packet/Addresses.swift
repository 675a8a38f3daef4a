// Address value types shared by the command language, the control plane and
// the packet builders. Plain values, no DPDK; parsing is strict (no leading
// zeros in IPv4 octets, one `::` at most in IPv6) and never traps.

/// An IPv4 address in host byte order.
public struct IPv4Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var value: UInt32
    @inlinable public init(_ value: UInt32) { self.value = value }
    public init(_ a: UInt8, _ b: UInt8, _ c: UInt8, _ d: UInt8) {
        value = UInt32(a) << 24 | UInt32(b) << 16 | UInt32(c) << 8 | UInt32(d)
    }
    /// Parses dotted-quad text; nil when the text is not exactly four decimal octets.
    public init?(_ text: Substring) {
        var result: UInt32 = 0
        var octets = 0
        for part in text.split(separator: ".", omittingEmptySubsequences: false) {
            guard octets < 4, !part.isEmpty, part.count <= 3, part.allSatisfy({ $0.isASCII && $0.isNumber }),
                  !(part.count > 1 && part.first == "0"), let v = UInt32(part), v <= 255 else { return nil }
            result = result << 8 | v
            octets += 1
        }
        guard octets == 4 else { return nil }
        value = result
    }
    public init?(_ text: String) { self.init(Substring(text)) }
    public var bytes: [UInt8] { [UInt8(value >> 24), UInt8(truncatingIfNeeded: value >> 16), UInt8(truncatingIfNeeded: value >> 8), UInt8(truncatingIfNeeded: value)] }
    public var description: String { bytes.map(String.init).joined(separator: ".") }
    public static func < (a: Self, b: Self) -> Bool { a.value < b.value }
}

/// An IPv6 address as two host-order 64-bit halves (`high` holds bytes 0…7).
public struct IPv6Address: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    @inlinable public init(high: UInt64, low: UInt64) { self.high = high; self.low = low }
    public init(bytes: [UInt8]) {
        precondition(bytes.count == 16, "an IPv6 address has 16 bytes")
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<8 { h = h << 8 | UInt64(bytes[i]) }
        for i in 8..<16 { l = l << 8 | UInt64(bytes[i]) }
        high = h; low = l
    }
    /// Parses RFC 4291 text (with `::` and an optional dotted-quad tail); nil when malformed.
    public init?(_ text: Substring) {
        guard !text.isEmpty, text.count <= 45 else { return nil }
        var groups: [UInt16] = []
        var tailGroups: [UInt16] = []
        var sawDoubleColon = false
        guard let parts = Self.splitDoubleColon(text) else { return nil }
        func parseGroups(_ s: Substring, allowV4Tail: Bool) -> [UInt16]? {
            if s.isEmpty { return [] }
            var out: [UInt16] = []
            let fields = s.split(separator: ":", omittingEmptySubsequences: false)
            for (i, f) in fields.enumerated() {
                if allowV4Tail && i == fields.count - 1 && f.contains(".") {
                    guard let v4 = IPv4Address(f) else { return nil }
                    out.append(UInt16(v4.value >> 16)); out.append(UInt16(truncatingIfNeeded: v4.value))
                    continue
                }
                guard !f.isEmpty, f.count <= 4, f.allSatisfy({ $0.isHexDigit && $0.isASCII }), let v = UInt16(f, radix: 16) else { return nil }
                out.append(v)
            }
            return out
        }
        if parts.count == 2 {
            sawDoubleColon = true
            guard let a = parseGroups(parts[0], allowV4Tail: false), let b = parseGroups(parts[1], allowV4Tail: true) else { return nil }
            groups = a; tailGroups = b
            guard groups.count + tailGroups.count <= 7 else { return nil }
        } else {
            guard let a = parseGroups(parts[0], allowV4Tail: true), a.count == 8 else { return nil }
            groups = a
        }
        var all = groups
        if sawDoubleColon { all += Array(repeating: 0, count: 8 - groups.count - tailGroups.count) + tailGroups }
        guard all.count == 8 else { return nil }
        var h: UInt64 = 0, l: UInt64 = 0
        for i in 0..<4 { h = h << 16 | UInt64(all[i]) }
        for i in 4..<8 { l = l << 16 | UInt64(all[i]) }
        high = h; low = l
    }
    public init?(_ text: String) { self.init(Substring(text)) }

    private static func splitDoubleColon(_ s: Substring) -> [Substring]? {
        guard let r = s.firstRange(of: "::") else { return [s] }
        let rest = s[r.upperBound...]
        if rest.firstRange(of: "::") != nil { return nil }
        return [s[..<r.lowerBound], rest]
    }

    public var bytes: [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: high >> (56 - 8 * UInt64($0))) } +
        (0..<8).map { UInt8(truncatingIfNeeded: low >> (56 - 8 * UInt64($0))) }
    }
    public var groups: [UInt16] {
        (0..<4).map { UInt16(truncatingIfNeeded: high >> (48 - 16 * UInt64($0))) } +
        (0..<4).map { UInt16(truncatingIfNeeded: low >> (48 - 16 * UInt64($0))) }
    }
    /// RFC 5952 canonical text: lower case, longest run (≥ 2) of zero groups as `::`.
    public var description: String {
        let g = groups
        var bestStart = -1, bestLen = 0, i = 0
        while i < 8 {
            if g[i] == 0 {
                var j = i
                while j < 8 && g[j] == 0 { j += 1 }
                if j - i > bestLen && j - i >= 2 { bestStart = i; bestLen = j - i }
                i = j
            } else { i += 1 }
        }
        func hex(_ r: Range<Int>) -> String { r.map { String(g[$0], radix: 16) }.joined(separator: ":") }
        if bestStart < 0 { return hex(0..<8) }
        return hex(0..<bestStart) + "::" + hex((bestStart + bestLen)..<8)
    }
    public static func < (a: Self, b: Self) -> Bool { (a.high, a.low) < (b.high, b.low) }
}

/// Either family.
public enum IPAddress: Hashable, Sendable, CustomStringConvertible {
    case v4(IPv4Address)
    case v6(IPv6Address)
    public init?(_ text: Substring) {
        if text.contains(":") {
            guard let a = IPv6Address(text) else { return nil }
            self = .v6(a)
        } else {
            guard let a = IPv4Address(text) else { return nil }
            self = .v4(a)
        }
    }
    public init?(_ text: String) { self.init(Substring(text)) }
    public var description: String {
        switch self { case .v4(let a): a.description; case .v6(let a): a.description }
    }
    public var isIPv4: Bool { if case .v4 = self { true } else { false } }
    /// Address width in bits: 32 or 128.
    public var bitWidth: Int { isIPv4 ? 32 : 128 }
}

/// An address with a prefix length, e.g. `10.0.0.0/8` or `2001:db8::/32`.
/// `address` may have host bits set (an interface address such as 10.0.0.1/24);
/// `network` clears them.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var length: Int
    public init?(address: IPAddress, length: Int) {
        guard length >= 0, length <= address.bitWidth else { return nil }
        self.address = address; self.length = length
    }
    /// Parses `ADDR/LEN`; a bare address is a host prefix (/32 or /128).
    public init?(_ text: Substring) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let addr = IPAddress(parts[0]) else { return nil }
        var len = addr.bitWidth
        if parts.count == 2 {
            guard !parts[1].isEmpty, parts[1].count <= 3, parts[1].allSatisfy({ $0.isASCII && $0.isNumber }),
                  let l = Int(parts[1]) else { return nil }
            len = l
        }
        self.init(address: addr, length: len)
    }
    public init?(_ text: String) { self.init(Substring(text)) }

    /// The prefix with host bits cleared.
    public var network: IPPrefix {
        var p = self
        p.address = Self.mask(address, length)
        return p
    }
    public var hasHostBits: Bool { network.address != address }
    public func contains(_ a: IPAddress) -> Bool {
        switch (address, a) {
        case (.v4, .v4), (.v6, .v6): return Self.mask(a, length) == network.address
        default: return false
        }
    }
    static func mask(_ a: IPAddress, _ length: Int) -> IPAddress {
        switch a {
        case .v4(let v):
            let m: UInt32 = length == 0 ? 0 : ~UInt32(0) << UInt32(32 - length)
            return .v4(IPv4Address(v.value & m))
        case .v6(let v):
            let mh: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << UInt64(64 - length))
            let ml: UInt64 = length <= 64 ? 0 : (length == 128 ? ~0 : ~UInt64(0) << UInt64(128 - length))
            return .v6(IPv6Address(high: v.high & mh, low: v.low & ml))
        }
    }
    public var description: String { "\(address)/\(length)" }
}

/// A 48-bit Ethernet address.
public struct MACAddress: Hashable, Sendable, CustomStringConvertible {
    public var bytes: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)
    public init(_ b: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8)) { bytes = b }
    /// Parses `aa:bb:cc:dd:ee:ff` (either case; `-` also accepted as separator).
    public init?(_ text: Substring) {
        let parts = text.split(separator: text.contains("-") ? "-" : ":", omittingEmptySubsequences: false)
        guard parts.count == 6 else { return nil }
        var out = [UInt8]()
        for p in parts {
            guard p.count == 2, p.allSatisfy({ $0.isHexDigit && $0.isASCII }), let v = UInt8(p, radix: 16) else { return nil }
            out.append(v)
        }
        bytes = (out[0], out[1], out[2], out[3], out[4], out[5])
    }
    public init?(_ text: String) { self.init(Substring(text)) }
    public var array: [UInt8] { [bytes.0, bytes.1, bytes.2, bytes.3, bytes.4, bytes.5] }
    public var description: String {
        array.map { let s = String($0, radix: 16); return s.count == 1 ? "0" + s : s }.joined(separator: ":")
    }
    public var isMulticast: Bool { bytes.0 & 1 == 1 }
    public var isZero: Bool { array.allSatisfy { $0 == 0 } }
    public static func == (a: Self, b: Self) -> Bool { a.array == b.array }
    public func hash(into h: inout Hasher) { h.combine(array) }
}
