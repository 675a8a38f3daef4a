// The `cut-tree` driver's view of rules and packets: every field becomes one
// or more 32-bit "dimensions" and a rule becomes a box, one closed range per
// dimension; a packet is a point and matches a rule when it lies in the box.
//
//   IPv4: src, dst, sport, dport, proto, ifID                      (6 dims)
//   IPv6: src words 0-3, dst words 0-3, sport, dport, proto, ifID  (12 dims)
//
// A prefix is a box over 32-bit words (words inside the prefix exact, the word
// holding the prefix end a range, later words ANY). Ports are 17-bit: a
// packet without ports has port 0x10000, which a rule's ANY (0...0x10000)
// contains and a named range (within 0...0xFFFF) does not (ANY is stored as
// 0...0x1FFFF, the whole 17-bit dimension): exactly the
// "a selector naming ports matches only packets with ports" rule of
// `TrafficSelector.matches`, including a selector naming one port and ANY for
// the other. IPv4 uses only the low 32 bits of each address, as the
// selector's masks do.

/// Dimension numbering and the bit width the tree may cut in each.
@usableFromInline
enum CutTreeLayout {
    @usableFromInline static var dims4: Int { 6 }
    @usableFromInline static var dims6: Int { 12 }
    /// Bits the tree cuts per dimension (0: never cut, only checked at leaves;
    /// interface ids are a handful of small values, useless to cut top-down).
    static let cutWidth4 = [32, 32, 17, 17, 8, 0]
    static let cutWidth6 = [32, 32, 32, 32, 32, 32, 32, 32, 17, 17, 8, 0]

    /// The port a packet without ports has.
    @usableFromInline static var noPorts: UInt32 { 0x1_0000 }
    static var portDimensionMax: UInt32 { 0x1_FFFF }

    /// Rule record: the box as two vectors of `lanes` words, lows then
    /// widths (high - low), so a match is one vector subtract and compare.
    /// Lanes after the dimensions hold low 0 and width 0, which key 0
    /// always passes. IPv4 records are 64 bytes (8 lanes), IPv6 128 (16
    /// lanes): one check reads whole cache lines. Each rule has one record,
    /// in a table in rank order, so leaves hold rule indices and a smaller
    /// index is a better rank. The rule's value sits in a parallel array,
    /// read once per lookup.
    @usableFromInline static var lanes4: Int { 8 }
    @usableFromInline static var lanes6: Int { 16 }
    /// The interface id's dimension (the last one) for a family's lanes.
    @inlinable @inline(__always)
    static func interfaceDimension(lanes: Int) -> Int { lanes == 8 ? dims4 &- 1 : dims6 &- 1 }
    /// Writes the key of `f` for its family into `k` (lanes4 or lanes6
    /// words; the lanes after the dimensions are zero).
    @inlinable @inline(__always)
    static func key(_ f: SelectorFields, into k: UnsafeMutablePointer<UInt32>) {
        let sport = f.hasPorts ? UInt32(f.sourcePort) : noPorts
        let dport = f.hasPorts ? UInt32(f.destinationPort) : noPorts
        if f.source.isIPv6 {
            k[0] = UInt32(truncatingIfNeeded: f.source.high &>> 32)
            k[1] = UInt32(truncatingIfNeeded: f.source.high)
            k[2] = UInt32(truncatingIfNeeded: f.source.low &>> 32)
            k[3] = UInt32(truncatingIfNeeded: f.source.low)
            k[4] = UInt32(truncatingIfNeeded: f.destination.high &>> 32)
            k[5] = UInt32(truncatingIfNeeded: f.destination.high)
            k[6] = UInt32(truncatingIfNeeded: f.destination.low &>> 32)
            k[7] = UInt32(truncatingIfNeeded: f.destination.low)
            k[8] = sport
            k[9] = dport
            k[10] = UInt32(f.proto)
            k[11] = f.ifID
            k[12] = 0
            k[13] = 0
            k[14] = 0
            k[15] = 0
        } else {
            k[0] = UInt32(truncatingIfNeeded: f.source.low)
            k[1] = UInt32(truncatingIfNeeded: f.destination.low)
            k[2] = sport
            k[3] = dport
            k[4] = UInt32(f.proto)
            k[5] = f.ifID
            k[6] = 0
            k[7] = 0
        }
    }

    /// The box of `rule`: (low, high) per dimension of its family.
    static func box(_ rule: SPDRule) -> [(UInt32, UInt32)] {
        let s = rule.selector
        var out: [(UInt32, UInt32)] = []
        func prefixWords(_ high: UInt64, _ low: UInt64, length: Int, words: Int) {
            // Word i covers bits 32i..32i+31 counted from the top of the address.
            let all: [UInt32] = words == 1 ? [UInt32(truncatingIfNeeded: low)]
                : [UInt32(truncatingIfNeeded: high >> 32), UInt32(truncatingIfNeeded: high),
                   UInt32(truncatingIfNeeded: low >> 32), UInt32(truncatingIfNeeded: low)]
            for i in 0..<words {
                let bits = min(32, max(0, length - 32 * i))
                let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) << UInt32(32 - bits)
                out.append((all[i] & mask, all[i] | ~mask))
            }
        }
        let words = s.isIPv6 ? 4 : 1
        prefixWords(s.sourceHigh, s.sourceLow, length: Int(s.sourcePrefixLength), words: words)
        prefixWords(s.destinationHigh, s.destinationLow, length: Int(s.destinationPrefixLength), words: words)
        // ANY is the whole 17-bit dimension, so that it covers every region the tree cuts.
        out.append(s.anySourcePort ? (0, portDimensionMax) : (UInt32(s.sourcePortLow), UInt32(s.sourcePortHigh)))
        out.append(s.anyDestinationPort ? (0, portDimensionMax)
                   : (UInt32(s.destinationPortLow), UInt32(s.destinationPortHigh)))
        out.append(s.anyProtocol ? (0, 255) : (UInt32(s.protocolValue), UInt32(s.protocolValue)))
        out.append((rule.ifID, rule.ifID))
        return out
    }

    /// Writes the record of `rule` at `r` (2 × lanes words).
    static func writeRecord(_ rule: SPDRule, at r: UnsafeMutablePointer<UInt32>, lanes: Int) {
        r.update(repeating: 0, count: 2 * lanes)
        for (d, (lo, hi)) in box(rule).enumerated() {
            r[d] = lo
            r[lanes + d] = hi &- lo
        }
    }
}

/// A family's key vector (SIMD8 for IPv4, SIMD16 for IPv6). The lookup is
/// generic over it; the compare lives in concrete extensions because
/// operators called on a generic SIMD type use the element-by-element
/// fallbacks, not the vector instructions.
@usableFromInline
protocol CutTreeKeyVector: SIMD where Scalar == UInt32 {
    /// Whether `self` lies in the box of the record at `record` (64-byte aligned).
    func isInside(record: UnsafeRawPointer) -> Bool
}

extension SIMD8: CutTreeKeyVector where Scalar == UInt32 {
    @inlinable @inline(__always)
    func isInside(record r: UnsafeRawPointer) -> Bool {
        // Inside iff the wrapping distance from the low end is ≤ the width in every lane.
        !any((self &- r.load(as: Self.self)) .> r.load(fromByteOffset: 32, as: Self.self))
    }
}

extension SIMD16: CutTreeKeyVector where Scalar == UInt32 {
    @inlinable @inline(__always)
    func isInside(record r: UnsafeRawPointer) -> Bool {
        !any((self &- r.load(as: Self.self)) .> r.load(fromByteOffset: 64, as: Self.self))
    }
}
