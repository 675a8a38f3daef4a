// The `hash-list` SPD driver: exact rules in a hash table, the rest in a
// rank-ordered list. Meant for policy sets made mostly of host-to-host
// rules (one tunnel per peer pair), where a lookup is a few probes.
//
// A rule is exact when both prefixes are full-length, and its protocol and
// ports have one of four shapes, each its own "variant" of key:
//   proto one value, both ports one value   (needs packet ports)
//   proto one value, both ports ANY
//   proto ANY,       both ports one value   (needs packet ports)
//   proto ANY,       both ports ANY
// The key of a variant holds the fields the rule pins and zero where it says
// ANY, so one packet probes each present variant once, with its own fields
// zeroed the same way. A rule with one port pinned and the other ANY, or a
// port range, is not exact and goes to the list. Of several rules with the
// same key only the best-ranked can ever decide, so the table keeps that one.
//
// Lookup: probe the variants present, keep the best rank, then scan the list
// in rank order and stop at the first match or once ranks pass the exact hit.

/// One slot of the exact table (64 bytes).
@usableFromInline
struct HashListEntry: BitwiseCopyable {
    @usableFromInline var sourceHigh: UInt64
    @usableFromInline var sourceLow: UInt64
    @usableFromInline var destinationHigh: UInt64
    @usableFromInline var destinationLow: UInt64
    @usableFromInline var rank: UInt64
    @usableFromInline var ifID: UInt32
    @usableFromInline var value: UInt32
    @usableFromInline var sourcePort: UInt16
    @usableFromInline var destinationPort: UInt16
    @usableFromInline var proto: UInt8
    /// Variant bits (`HashListKey`), plus `occupiedBit`; 0 for an empty slot.
    @usableFromInline var tag: UInt8

    @usableFromInline static var occupiedBit: UInt8 { 0x80 }
}

/// Variant bits of a key.
@usableFromInline
enum HashListKey {
    @usableFromInline static var anyProtocol: UInt8 { 1 }
    @usableFromInline static var anyPorts: UInt8 { 2 }
    @usableFromInline static var ipv6: UInt8 { 4 }

    /// The variant of `rule`, or nil when it is not exact.
    static func variant(of rule: SPDRule) -> UInt8? {
        let s = rule.selector
        let full: UInt8 = s.isIPv6 ? 128 : 32
        guard s.sourcePrefixLength == full, s.destinationPrefixLength == full else { return nil }
        var v: UInt8 = s.isIPv6 ? ipv6 : 0
        if s.anyProtocol { v |= anyProtocol }
        if s.anySourcePort && s.anyDestinationPort {
            v |= anyPorts
        } else {
            guard !s.anySourcePort, !s.anyDestinationPort, s.sourcePortLow == s.sourcePortHigh,
                  s.destinationPortLow == s.destinationPortHigh else { return nil }
        }
        return v
    }

    @inlinable @inline(__always)
    static func hash(_ sh: UInt64, _ sl: UInt64, _ dh: UInt64, _ dl: UInt64, _ rest: UInt64) -> UInt64 {
        // Multiply-xorshift mixing; wrapping arithmetic is the point of a hash.
        var h = sh &* 0x9E37_79B9_7F4A_7C15
        h = (h ^ sl) &* 0xC2B2_AE3D_27D4_EB4F
        h = (h ^ dh ^ (h >> 29)) &* 0x1656_67B1_9E37_79F9
        h = (h ^ dl ^ (h >> 32)) &* 0x9E37_79B9_7F4A_7C15
        h = (h ^ rest ^ (h >> 31)) &* 0xC2B2_AE3D_27D4_EB4F
        return h ^ (h >> 33)
    }

    /// proto | sport | dport | variant | ifID packed for hashing.
    @inlinable @inline(__always)
    static func rest(proto: UInt8, sport: UInt16, dport: UInt16, tag: UInt8, ifID: UInt32) -> UInt64 {
        UInt64(proto) | UInt64(sport) << 8 | UInt64(dport) << 24 | UInt64(tag & 0x7F) << 40 ^ UInt64(ifID) << 32
    }
}

/// Open-addressed exact table (linear probing, power-of-two size, load ≤ 1/2)
/// plus the rank-ordered inexact list, both in raw memory.
public final class HashListClassifier: SPDClassifier, @unchecked Sendable {
    public static var driver: SPDDriver { .hashList }

    @usableFromInline let slots: UnsafeMutablePointer<HashListEntry>
    /// slot count - 1 (slot count is a power of two).
    @usableFromInline let slotMask: Int
    @usableFromInline let list: UnsafeMutableBufferPointer<SPDRule>
    /// Bit v set when some rule has variant v (so lookups skip absent variants).
    @usableFromInline let variants: UInt16
    /// Every rule in rank order (control plane).
    public let rules: [SPDRule]

    public convenience init(rules: [SPDRule]) {
        self.init(sorted: rules.sorted { $0.rank < $1.rank })
    }

    private init(sorted: [SPDRule]) {
        rules = sorted
        var exact: [(SPDRule, UInt8)] = []
        var inexact: [SPDRule] = []
        for r in sorted {
            if let v = HashListKey.variant(of: r) { exact.append((r, v)) } else { inexact.append(r) }
        }
        var size = 8
        while size < exact.count * 2 { size <<= 1 }
        slots = .allocate(capacity: size)
        slots.initialize(repeating: HashListEntry(sourceHigh: 0, sourceLow: 0, destinationHigh: 0, destinationLow: 0,
                                                  rank: 0, ifID: 0, value: 0, sourcePort: 0, destinationPort: 0,
                                                  proto: 0, tag: 0), count: size)
        slotMask = size - 1
        var present: UInt16 = 0
        // Rank order: the first rule of a key is the one that stays.
        for (r, v) in exact {
            present |= 1 << UInt16(v)
            Self.insert(Self.entry(r, variant: v), slots: slots, mask: size - 1, replace: false)
        }
        variants = present
        let b = UnsafeMutableBufferPointer<SPDRule>.allocate(capacity: max(inexact.count, 1))
        _ = b.initialize(from: inexact)
        list = UnsafeMutableBufferPointer(rebasing: b[0..<inexact.count])
    }

    deinit {
        slots.deallocate()
        list.baseAddress?.deallocate()
    }

    public var memoryBytes: Int {
        (slotMask + 1) * MemoryLayout<HashListEntry>.stride + list.count * MemoryLayout<SPDRule>.stride
    }

    private static func entry(_ r: SPDRule, variant v: UInt8) -> HashListEntry {
        let s = r.selector
        let anyProto = v & HashListKey.anyProtocol != 0, anyPorts = v & HashListKey.anyPorts != 0
        return HashListEntry(sourceHigh: s.sourceHigh, sourceLow: s.sourceLow, destinationHigh: s.destinationHigh,
                             destinationLow: s.destinationLow, rank: r.rank, ifID: r.ifID, value: r.value,
                             sourcePort: anyPorts ? 0 : s.sourcePortLow,
                             destinationPort: anyPorts ? 0 : s.destinationPortLow,
                             proto: anyProto ? 0 : s.protocolValue, tag: v | HashListEntry.occupiedBit)
    }

    @inline(__always)
    private static func sameKey(_ a: HashListEntry, _ b: HashListEntry) -> Bool {
        a.tag == b.tag && a.sourceHigh == b.sourceHigh && a.sourceLow == b.sourceLow
            && a.destinationHigh == b.destinationHigh && a.destinationLow == b.destinationLow && a.ifID == b.ifID
            && a.proto == b.proto && a.sourcePort == b.sourcePort && a.destinationPort == b.destinationPort
    }

    private static func home(_ e: HashListEntry, mask: Int) -> Int {
        let rest = HashListKey.rest(proto: e.proto, sport: e.sourcePort, dport: e.destinationPort, tag: e.tag,
                                    ifID: e.ifID)
        return Int(truncatingIfNeeded: HashListKey.hash(e.sourceHigh, e.sourceLow, e.destinationHigh,
                                                        e.destinationLow, rest)) & mask
    }

    /// Puts `e` in its slot; an existing entry of the same key stays unless
    /// `replace` or `e` ranks better.
    private static func insert(_ e: HashListEntry, slots: UnsafeMutablePointer<HashListEntry>, mask: Int,
                               replace: Bool) {
        var i = home(e, mask: mask)
        while slots[i].tag != 0 {
            if sameKey(slots[i], e) {
                if replace || e.rank < slots[i].rank { slots[i] = e }
                return
            }
            i = (i + 1) & mask
        }
        slots[i] = e
    }

    /// Deletes the entry of `e`'s key (backward-shift deletion keeps probe chains whole).
    private static func delete(_ e: HashListEntry, slots: UnsafeMutablePointer<HashListEntry>, mask: Int) {
        var i = home(e, mask: mask)
        while slots[i].tag != 0 && !sameKey(slots[i], e) { i = (i + 1) & mask }
        guard slots[i].tag != 0 else { return }
        var hole = i
        var j = (i + 1) & mask
        while slots[j].tag != 0 {
            let h = home(slots[j], mask: mask)
            // Move j into the hole when its home is not cyclically in (hole, j].
            let distanceHome = (j - h) & mask, distanceHole = (j - hole) & mask
            if distanceHome >= distanceHole {
                slots[hole] = slots[j]
                hole = j
            }
            j = (j + 1) & mask
        }
        slots[hole].tag = 0
    }

    /// The exact table's best hit for `fields`: (rank, value), rank `.max` for none.
    @inlinable @inline(__always)
    func exactHit(_ f: SelectorFields) -> (UInt64, UInt32) {
        var bestRank = UInt64.max
        var bestValue = SPDNoMatch
        let v6 = f.source.isIPv6
        let family: UInt8 = v6 ? HashListKey.ipv6 : 0
        // An IPv4 selector looks at the low 32 bits of each address only.
        let sh = v6 ? f.source.high : 0, sl = v6 ? f.source.low : f.source.low & 0xFFFF_FFFF
        let dh = v6 ? f.destination.high : 0, dl = v6 ? f.destination.low : f.destination.low & 0xFFFF_FFFF
        var v: UInt8 = 0
        while v < 4 {
            let tag = v | family
            let needsPorts = v & HashListKey.anyPorts == 0
            if variants & (1 << UInt16(tag)) != 0 && (!needsPorts || f.hasPorts) {
                let proto: UInt8 = v & HashListKey.anyProtocol != 0 ? 0 : f.proto
                let sport: UInt16 = needsPorts ? f.sourcePort : 0
                let dport: UInt16 = needsPorts ? f.destinationPort : 0
                let rest = HashListKey.rest(proto: proto, sport: sport, dport: dport, tag: tag, ifID: f.ifID)
                var i = Int(truncatingIfNeeded: HashListKey.hash(sh, sl, dh, dl, rest)) & slotMask
                let full = tag | HashListEntry.occupiedBit
                while true {
                    // i ≤ slotMask: masked every step; the table is never full (load ≤ 1/2).
                    let e = slots[i]
                    if e.tag == 0 { break }
                    if e.tag == full && e.sourceLow == sl && e.destinationLow == dl
                        && e.sourceHigh == sh && e.destinationHigh == dh
                        && e.proto == proto && e.sourcePort == sport && e.destinationPort == dport && e.ifID == f.ifID {
                        if e.rank < bestRank { bestRank = e.rank; bestValue = e.value }
                        break
                    }
                    i = (i &+ 1) & slotMask
                }
            }
            v &+= 1
        }
        return (bestRank, bestValue)
    }

    @inlinable
    public func lookup(_ fields: SelectorFields) -> UInt32 {
        var (bestRank, bestValue) = variants == 0 ? (UInt64.max, SPDNoMatch) : exactHit(fields)
        var i = 0
        let n = list.count
        while i < n {
            // i < n = list.count.
            let r = list[i]
            if r.rank > bestRank { break }
            if r.matches(fields) { bestValue = r.value; bestRank = r.rank; break }
            i &+= 1
        }
        _ = bestRank
        return bestValue
    }

    public func inserting(_ rule: SPDRule) -> HashListClassifier? {
        guard !rules.contains(where: { $0.rank == rule.rank }) else { return nil }
        var all = rules
        let at = all.firstIndex { $0.rank > rule.rank } ?? all.count
        all.insert(rule, at: at)
        guard let v = HashListKey.variant(of: rule), (rules.count - list.count + 1) * 2 <= slotMask + 1 else {
            // The list changes (or the table must grow): copy the table, rebuild the small rest.
            return HashListClassifier(copying: self, rules: all, exactChange: nil)
        }
        return HashListClassifier(copying: self, rules: all, exactChange: { slots, mask in
            Self.insert(Self.entry(rule, variant: v), slots: slots, mask: mask, replace: false)
            return v
        })
    }

    public func removing(rank: UInt64) -> HashListClassifier? {
        guard let gone = rules.first(where: { $0.rank == rank }) else { return nil }
        let all = rules.filter { $0.rank != rank }
        guard let v = HashListKey.variant(of: gone) else {
            return HashListClassifier(copying: self, rules: all, exactChange: nil)
        }
        let e = Self.entry(gone, variant: v)
        // The best remaining rule of the same key, if any, takes the slot.
        let successor = all.first { r in HashListKey.variant(of: r) == v && Self.sameKey(Self.entry(r, variant: v), e) }
        return HashListClassifier(copying: self, rules: all, exactChange: { slots, mask in
            if let successor {
                Self.insert(Self.entry(successor, variant: v), slots: slots, mask: mask, replace: true)
            } else {
                Self.delete(e, slots: slots, mask: mask)
            }
            return nil
        })
    }

    /// Copies `other`'s exact table and applies `exactChange` to it; when that
    /// is nil the list changed instead and is rebuilt from `rules`, whose exact
    /// part is then what the copied table already holds.
    private init(copying other: HashListClassifier, rules sorted: [SPDRule],
                 exactChange: ((UnsafeMutablePointer<HashListEntry>, Int) -> UInt8?)?) {
        rules = sorted
        let exactCount = sorted.reduce(0) { $0 + (HashListKey.variant(of: $1) == nil ? 0 : 1) }
        var size = other.slotMask + 1
        var present = other.variants
        if exactCount * 2 > size {
            // Grow: rebuild the table from the rules.
            while size < exactCount * 2 { size <<= 1 }
            slots = .allocate(capacity: size)
            slots.initialize(repeating: HashListEntry(sourceHigh: 0, sourceLow: 0, destinationHigh: 0,
                                                      destinationLow: 0, rank: 0, ifID: 0, value: 0, sourcePort: 0,
                                                      destinationPort: 0, proto: 0, tag: 0), count: size)
            present = 0
            for r in sorted {
                if let v = HashListKey.variant(of: r) {
                    present |= 1 << UInt16(v)
                    Self.insert(Self.entry(r, variant: v), slots: slots, mask: size - 1, replace: false)
                }
            }
        } else {
            slots = .allocate(capacity: size)
            slots.initialize(from: other.slots, count: size)
            if let change = exactChange, let v = change(slots, size - 1) { present |= 1 << UInt16(v) }
        }
        slotMask = size - 1
        variants = present
        let inexact = sorted.filter { HashListKey.variant(of: $0) == nil }
        let b = UnsafeMutableBufferPointer<SPDRule>.allocate(capacity: max(inexact.count, 1))
        _ = b.initialize(from: inexact)
        list = UnsafeMutableBufferPointer(rebasing: b[0..<inexact.count])
    }
}
