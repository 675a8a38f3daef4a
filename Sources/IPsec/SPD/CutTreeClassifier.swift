// The `cut-tree` SPD driver: compiled decision trees for large rule sets
// (1k-100k rules). See CutTreeBuilder.swift for how the trees are cut and
// CutTreeLayout.swift for the rule boxes and packet keys.
//
// Per family and interface id, up to two trees (rules with specific and with
// wide destinations), sorted by their best rank. A lookup walks each tree from
// its root entry down to a leaf (one 8-byte load per level: the entry says
// which bits of which dimension pick the next entry), then scans the leaf's
// records in rank order, stopping at the first match or at a rank worse than
// the best found so far; a tree whose best rank is already beaten is skipped.
// Bursts walk eight packets in lockstep so their cache misses overlap.
//
// `inserting` and `removing` patch a copy of one family's tables instead of
// re-cutting (CutTreeArrays in CutTreeBuilder.swift): an inserted rule's
// record joins every leaf its box reaches; a removed rule's records leave
// every leaf. They decline (the caller rebuilds) when a leaf would outgrow
// twice the build's leaf size, when the rule's interface id has no trees,
// when half the records are dead, or when the removed rule hid others.

/// One tree: its root entry and the best rank of its rules.
@usableFromInline
struct CutTreeRoot: BitwiseCopyable {
    @usableFromInline var entry: UInt64
    @usableFromInline var minRank: UInt64
}

/// The tables of one family, in raw memory owned by the classifier.
@usableFromInline
struct CutTreeTables {
    /// Trees, grouped by interface id, each group sorted by best rank.
    @usableFromInline var roots: UnsafeMutablePointer<CutTreeRoot>
    @usableFromInline var treeCount: Int
    /// The interface ids that have rules, ascending, and per id its trees:
    /// first tree << 32 | tree count.
    @usableFromInline var interfaces: UnsafeMutablePointer<UInt32>
    @usableFromInline var interfaceTrees: UnsafeMutablePointer<UInt64>
    @usableFromInline var interfaceCount: Int
    @usableFromInline var entries: UnsafeMutablePointer<UInt64>
    @usableFromInline var entryCount: Int
    /// Leaf records (see `CutTreeLayout`), 64-byte aligned.
    @usableFromInline var records: UnsafeMutablePointer<UInt32>
    /// The value of each record.
    @usableFromInline var values: UnsafeMutablePointer<UInt32>
    @usableFromInline var recordCount: Int
    @usableFromInline var recordBytes: Int
    /// Control plane only: per tree, its group (`CutTreeClassifier.group`),
    /// and an upper bound on the records no leaf uses any more (left behind
    /// by `inserting`).
    var groups: UnsafeMutablePointer<UInt8>
    var deadRecords: Int

    /// The trees of interface `id`: first << 32 | count (count 0 when no rule has it).
    @inlinable @inline(__always)
    func trees(interface id: UInt32) -> UInt64 {
        // Binary search over the ascending ids; usually there is one (0).
        var low = 0
        var high = interfaceCount
        while low < high {
            let mid = (low &+ high) &>> 1
            // low ≤ mid < high ≤ interfaceCount.
            if interfaces[mid] < id { low = mid &+ 1 } else { high = mid }
        }
        return low < interfaceCount && interfaces[low] == id ? interfaceTrees[low] : 0
    }

    func deallocate() {
        roots.deallocate()
        interfaces.deallocate()
        interfaceTrees.deallocate()
        entries.deallocate()
        UnsafeMutableRawPointer(records).deallocate()
        values.deallocate()
        groups.deallocate()
    }
}

public final class CutTreeClassifier: SPDClassifier, @unchecked Sendable {
    public static var driver: SPDDriver { .cutTree }

    @usableFromInline let v4: CutTreeTables
    @usableFromInline let v6: CutTreeTables
    public let rules: [SPDRule]
    /// Ranks of rules whose removal needs a rebuild (they hid other rules somewhere).
    let hiders: Set<UInt64>

    public convenience init(rules: [SPDRule]) {
        self.init(sorted: rules.sorted { $0.rank < $1.rank })
    }

    init(sorted: [SPDRule]) {
        rules = sorted
        let (t4, h4) = Self.build(sorted.filter { $0.selector.isIPv4 }, ipv6: false)
        let (t6, h6) = Self.build(sorted.filter { !$0.selector.isIPv4 }, ipv6: true)
        v4 = t4
        v6 = t6
        hiders = h4.union(h6)
    }

    /// Takes ownership of `v4` and `v6`.
    private init(rules: [SPDRule], v4: CutTreeTables, v6: CutTreeTables, hiders: Set<UInt64>) {
        self.rules = rules
        self.v4 = v4
        self.v6 = v6
        self.hiders = hiders
    }

    // MARK: Incremental updates

    /// Patched tables may carry this many unused records (as a share of
    /// all) before `inserting` declines so that a rebuild compacts them.
    static let maxDeadShare = 0.5

    /// The index of the first rule of rank ≥ `rank` in `rules`.
    private func index(ofRank rank: UInt64) -> Int {
        var low = 0, high = rules.count
        while low < high {
            let mid = (low + high) / 2
            if rules[mid].rank < rank { low = mid + 1 } else { high = mid }
        }
        return low
    }

    public func inserting(_ rule: SPDRule) -> CutTreeClassifier? {
        let at = index(ofRank: rule.rank)
        guard at == rules.count || rules[at].rank != rule.rank else { return nil }
        let ipv6 = !rule.selector.isIPv4
        var edit = CutTreeArrays(ipv6 ? v6 : v4)
        guard edit.insert(rule, ipv6: ipv6),
              Double(edit.deadRecords) <= Self.maxDeadShare * Double(edit.values.count) else { return nil }
        var next = rules
        next.insert(rule, at: at)
        let tables = edit.tables()
        return CutTreeClassifier(rules: next, v4: ipv6 ? CutTreeArrays(v4).tables() : tables,
                                 v6: ipv6 ? tables : CutTreeArrays(v6).tables(), hiders: hiders)
    }

    public func removing(rank: UInt64) -> CutTreeClassifier? {
        // A rule that hid others in some region took their records with it there.
        guard !hiders.contains(rank) else { return nil }
        let i = index(ofRank: rank)
        guard i < rules.count && rules[i].rank == rank else { return nil }
        let ipv6 = !rules[i].selector.isIPv4
        var edit = CutTreeArrays(ipv6 ? v6 : v4)
        edit.remove(rank: rank)
        var next = rules
        next.remove(at: i)
        let tables = edit.tables()
        return CutTreeClassifier(rules: next, v4: ipv6 ? CutTreeArrays(v4).tables() : tables,
                                 v6: ipv6 ? tables : CutTreeArrays(v6).tables(), hiders: hiders)
    }

    deinit {
        v4.deallocate()
        v6.deallocate()
    }

    public var memoryBytes: Int {
        var total = 0
        for t in [v4, v6] {
            total += t.treeCount * MemoryLayout<CutTreeRoot>.stride + t.interfaceCount * 12 + t.entryCount * 8
                + t.recordCount * 4
                + t.recordCount * t.recordBytes
        }
        return total
    }

    /// Which tree a rule belongs to: 1 for a wide destination, else 0.
    static func group(_ rule: SPDRule, ipv6: Bool) -> Int {
        Int(rule.selector.destinationPrefixLength) < (ipv6 ? 48 : 16) ? 1 : 0
    }

    /// Builds the trees of one family from its rules in rank order.
    static func build(_ rules: [SPDRule], ipv6: Bool) -> (CutTreeTables, Set<UInt64>) {
        let cutWidth = ipv6 ? CutTreeLayout.cutWidth6 : CutTreeLayout.cutWidth4
        var builder = CutTreeBuilder(boxes: rules.map(CutTreeLayout.box), cutWidth: cutWidth)
        let lanes = ipv6 ? CutTreeLayout.lanes6 : CutTreeLayout.lanes4
        var out = CutTreeArrays(lanes: lanes)
        // A packet can only match rules of its own interface id: one set of
        // trees per id, no rule in two sets.
        var byInterface: [UInt32: [Int32]] = [:]
        for (i, r) in rules.enumerated() { byInterface[r.ifID, default: []].append(Int32(i)) }
        out.interfaces = byInterface.keys.sorted()
        for id in out.interfaces {
            var groups = [[Int32]](repeating: [], count: 2)
            for i in byInterface[id]! { groups[group(rules[Int(i)], ipv6: ipv6)].append(i) }
            var set: [(CutTreeRoot, UInt8)] = []
            for (g, list) in groups.enumerated() where !list.isEmpty {
                set.append((CutTreeRoot(entry: builder.tree(list, interface: id), minRank: rules[Int(list[0])].rank),
                            UInt8(g)))
            }
            set.sort { $0.0.minRank < $1.0.minRank }
            out.interfaceTrees.append(UInt64(out.roots.count) << 32 | UInt64(set.count))
            out.roots += set.map(\.0)
            out.groups += set.map(\.1)
        }
        out.entries = builder.children
        out.records = [UInt32](repeating: 0, count: builder.leafRules.count * 2 * lanes)
        out.records.withUnsafeMutableBufferPointer { b in
            for (slot, r) in builder.leafRules.enumerated() {
                CutTreeLayout.writeRecord(rules[Int(r)], at: b.baseAddress! + slot * 2 * lanes, lanes: lanes)
            }
        }
        out.values = builder.leafRules.map { rules[Int($0)].value }
        return (out.tables(), Set(builder.hiders.map { rules[Int($0)].rank }))
    }

    // MARK: Lookup

    /// The leaf entry `t`'s tree `tree` holds for key `k`.
    @inlinable @inline(__always)
    static func descend(_ entry: UInt64, _ k: UnsafePointer<UInt32>, entries: UnsafePointer<UInt64>) -> UInt64 {
        var e = entry
        while e & 0xFF != 0 {
            // Internal entry: bits (1...16) and shift (< 32) keep the index
            // inside the 2^bits children the builder allocated at childBase.
            let bits = e & 0xFF
            let shift = (e &>> 8) & 0xFF
            let dim = Int(truncatingIfNeeded: (e &>> 16) & 0xFF)
            let index = (UInt64(k[dim]) &>> shift) & ((1 &<< bits) &- 1)
            e = entries[Int(truncatingIfNeeded: (e &>> 32) &+ index)]
        }
        return e
    }

    /// Scans the leaf `e` for the key `k` (`lanes` words), improving
    /// (bestRank, bestValue). `lanes` is a constant at every call site.
    @inlinable @inline(__always)
    static func scan(_ e: UInt64, _ k: UnsafePointer<UInt32>, _ t: CutTreeTables, lanes: Int,
                     bestRank: inout UInt64, bestValue: inout UInt32) {
        var count = Int(truncatingIfNeeded: (e &>> 8) & 0xFF_FFFF)
        var slot = Int(truncatingIfNeeded: e &>> 32)
        // The builder wrote `count` records of 2 × lanes words from `slot`.
        var r = UnsafePointer(t.records) + slot &* lanes &* 2
        while count > 0 {
            let rank = UInt64(r[2 &* lanes &- 2]) | UInt64(r[2 &* lanes &- 1]) &<< 32
            if rank > bestRank { return }
            // Wrapping distance from each low end: inside iff ≤ width in every
            // lane (the rank lanes have low 0 and key 0). No early exit: a
            // fixed run of compares beats a branch per dimension.
            var miss: UInt32 = 0
            var d = 0
            while d < lanes &- 2 {
                // Width minus distance borrows (top bit of the 64-bit difference) iff outside.
                miss |= UInt32(truncatingIfNeeded: (UInt64(r[lanes &+ d]) &- UInt64(k[d] &- r[d])) &>> 63)
                d &+= 1
            }
            if miss == 0 {
                bestRank = rank
                bestValue = t.values[slot]
                return
            }
            r += lanes &* 2
            slot &+= 1
            count &-= 1
        }
    }

    @inlinable @inline(__always)
    func search(_ k: UnsafePointer<UInt32>, _ t: CutTreeTables, lanes: Int) -> UInt32 {
        var bestRank = UInt64.max
        var bestValue = SPDNoMatch
        let span = t.trees(interface: k[CutTreeLayout.interfaceDimension(lanes: lanes)])
        var i = Int(truncatingIfNeeded: span &>> 32)
        let end = i &+ Int(truncatingIfNeeded: span & 0xFFFF_FFFF)
        while i < end {
            // i < end ≤ treeCount.
            let root = t.roots[i]
            // Trees are sorted by best rank: none after this one can win.
            if root.minRank > bestRank { break }
            let leaf = Self.descend(root.entry, k, entries: t.entries)
            Self.scan(leaf, k, t, lanes: lanes, bestRank: &bestRank, bestValue: &bestValue)
            i &+= 1
        }
        return bestValue
    }

    @inlinable
    public func lookup(_ fields: SelectorFields) -> UInt32 {
        withUnsafeTemporaryAllocation(of: SIMD16<UInt32>.self, capacity: 1) { buffer in
            // One vector of the widest family's lanes.
            let v = buffer.baseAddress.unsafelyUnwrapped
            let k = UnsafeMutableRawPointer(v).assumingMemoryBound(to: UInt32.self)
            CutTreeLayout.key(fields, into: k)
            if fields.source.isIPv6 {
                return search(k, v6, lanes: CutTreeLayout.lanes6)
            }
            return search(k, v4, lanes: CutTreeLayout.lanes4)
        }
    }

    /// Packets per lockstep group.
    @usableFromInline static var lanes: Int { 8 }

    @inlinable
    public func lookup(burst fields: UnsafePointer<SelectorFields>, count: Int,
                       into values: UnsafeMutablePointer<UInt32>) {
        let lanes = Self.lanes
        withUnsafeTemporaryAllocation(of: SIMD16<UInt32>.self, capacity: lanes) { keyBuffer in
            withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 3 * lanes) { stateBuffer in
                // Both buffers are sized for `lanes` packets of the widest family.
                let keys = UnsafeMutableRawPointer(keyBuffer.baseAddress.unsafelyUnwrapped)
                let entry = stateBuffer.baseAddress.unsafelyUnwrapped
                let bestRank = entry + lanes
                var start = 0
                while start < count {
                    let n = min(lanes, count &- start)
                    // A group is walked in lockstep only when all its packets are of one family.
                    let ipv6 = fields[start].source.isIPv6
                    var same = true
                    var j = 0
                    while j < n {
                        same = same && fields[start &+ j].source.isIPv6 == ipv6
                        j &+= 1
                    }
                    if same {
                        if ipv6 {
                            group(fields + start, n, keys, entry, bestRank, values + start, v6, lanes: CutTreeLayout.lanes6)
                        } else {
                            group(fields + start, n, keys, entry, bestRank, values + start, v4, lanes: CutTreeLayout.lanes4)
                        }
                    } else {
                        j = 0
                        while j < n {
                            values[start &+ j] = lookup(fields[start &+ j])
                            j &+= 1
                        }
                    }
                    start &+= n
                }
            }
        }
    }

    /// `n` (≤ lanes) packets of one family: per tree, all descend one level
    /// at a time, then all scan.
    @inlinable @inline(__always)
    func group(_ f: UnsafePointer<SelectorFields>, _ n: Int, _ keyBytes: UnsafeMutableRawPointer,
               _ entry: UnsafeMutablePointer<UInt64>, _ bestRank: UnsafeMutablePointer<UInt64>,
               _ values: UnsafeMutablePointer<UInt32>, _ t: CutTreeTables, lanes: Int) {
        // Keys are 64 bytes apart (the buffer holds 16-word slots, enough for either family).
        let keyStride = MemoryLayout<SIMD16<UInt32>>.stride
        var j = 0
        while j < n {
            CutTreeLayout.key(f[j], into: (keyBytes + j &* keyStride).assumingMemoryBound(to: UInt32.self))
            bestRank[j] = .max
            values[j] = SPDNoMatch
            j &+= 1
        }
        // Lanes walk their own interface's trees; a lane whose set has fewer
        // trees idles (entry 0, the empty leaf) in later rounds.
        let span = bestRank + Self.lanes
        var rounds = 0
        j = 0
        while j < n {
            let ifID = keyBytes.load(fromByteOffset: j &* keyStride &+ CutTreeLayout.interfaceDimension(lanes: lanes) &* 4,
                                    as: UInt32.self)
            span[j] = t.trees(interface: ifID)
            rounds = max(rounds, Int(truncatingIfNeeded: span[j] & 0xFFFF_FFFF))
            j &+= 1
        }
        var i = 0
        while i < rounds {
            var active = 0
            j = 0
            while j < n {
                var e: UInt64 = 0
                if i < Int(truncatingIfNeeded: span[j] & 0xFFFF_FFFF) {
                    // i < count of this lane's set, so the index is inside `roots`.
                    let root = t.roots[Int(truncatingIfNeeded: span[j] &>> 32) &+ i]
                    if root.minRank <= bestRank[j] { e = root.entry }
                }
                entry[j] = e
                if e & 0xFF != 0 { active &+= 1 }
                j &+= 1
            }
            while active > 0 {
                active = 0
                j = 0
                while j < n {
                    let e = entry[j]
                    if e & 0xFF != 0 {
                        // As in `descend`.
                        let bits = e & 0xFF
                        let shift = (e &>> 8) & 0xFF
                        let dim = Int(truncatingIfNeeded: (e &>> 16) & 0xFF)
                        let word = keyBytes.load(fromByteOffset: j &* keyStride &+ dim &* 4, as: UInt32.self)
                        let index = (UInt64(word) &>> shift) & ((1 &<< bits) &- 1)
                        let next = t.entries[Int(truncatingIfNeeded: (e &>> 32) &+ index)]
                        entry[j] = next
                        if next & 0xFF != 0 { active &+= 1 }
                    }
                    j &+= 1
                }
            }
            j = 0
            while j < n {
                let key = UnsafePointer((keyBytes + j &* keyStride).assumingMemoryBound(to: UInt32.self))
                Self.scan(entry[j], key, t, lanes: lanes, bestRank: &bestRank[j], bestValue: &values[j])
                j &+= 1
            }
            i &+= 1
        }
    }
}

extension CutTreeClassifier {
    /// Shape of the trees, for benchmarks and tuning: per family, trees,
    /// entries, record slots, and for each tree its deepest level and largest leaf.
    public var statistics: String {
        var text = ""
        for (name, t) in [("v4", v4), ("v6", v6)] where t.treeCount > 0 {
            text += "\(name): \(t.treeCount) trees, \(t.entryCount) entries, \(t.recordCount) records"
            for i in 0..<t.treeCount {
                var maxDepth = 0, maxLeaf = 0, leaves = 0, leafRules = 0
                var stack: [(UInt64, Int)] = [(t.roots[i].entry, 0)]
                var seen = Set<UInt64>()
                while let (e, depth) = stack.popLast() {
                    if e & 0xFF == 0 {
                        let n = Int((e >> 8) & 0xFF_FFFF)
                        maxLeaf = max(maxLeaf, n); leaves += 1; leafRules += n
                        maxDepth = max(maxDepth, depth)
                        continue
                    }
                    guard seen.insert(e).inserted else { continue }
                    let base = Int(e >> 32)
                    for c in 0..<(1 << Int(e & 0xFF)) { stack.append((t.entries[base + c], depth + 1)) }
                }
                text += "\n  tree \(i): depth \(maxDepth), leaves \(leaves), avg leaf \(leaves == 0 ? 0 : leafRules / leaves), max leaf \(maxLeaf)"
            }
            text += "\n"
        }
        return text
    }
}
