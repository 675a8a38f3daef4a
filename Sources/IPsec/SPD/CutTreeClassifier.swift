// The `cut-tree` SPD driver: compiled decision trees for large rule sets
// (1k-100k rules). See CutTreeBuilder.swift for how the trees are cut and
// CutTreeLayout.swift for the rule boxes and packet keys.
//
// Per family and interface id, one tree, or when that would cost too much to
// build, two (rules with specific and with wide destinations) or four (the
// same by source too), sorted by their best rank. A lookup walks each tree from
// its root entry down to a leaf (one 8-byte load per level: the entry says
// which bits of which dimension pick the next entry), then checks the leaf's
// rules in rank order against their records, stopping at the first match or
// at a rule worse than the best found so far; a tree whose best rule is
// already beaten is skipped. Each rule has one record, in a table in rank
// order, so a rule's index in that table is its rank for comparisons and a
// leaf is a short run of indices (or, for one rule, the index in the entry).
// Bursts walk eight packets in lockstep so their cache misses overlap.
//
// `inserting` and `removing` patch a copy of one family's tables instead of
// re-cutting (CutTreeArrays in CutTreeBuilder.swift): an inserted rule's
// record joins the table and its index every leaf its box reaches (indices
// after it move up by one); a removed rule leaves both. They decline (the
// caller rebuilds) when a leaf would outgrow twice the build's leaf size,
// when the rule's interface id has no trees, when half the leaf slots are
// dead, or when the removed rule hid others.

/// One tree: its root entry and the index of its best rule (or a lower bound).
@usableFromInline
struct CutTreeRoot: BitwiseCopyable {
    @usableFromInline var entry: UInt64
    @usableFromInline var firstRule: UInt32
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
    /// Runs of rule indices, one per leaf of two or more rules.
    @usableFromInline var leafRules: UnsafeMutablePointer<UInt32>
    @usableFromInline var leafSlotCount: Int
    /// One record per rule in rank order (see `CutTreeLayout`), 64-byte aligned.
    @usableFromInline var records: UnsafeMutablePointer<UInt32>
    /// The value of each rule.
    @usableFromInline var values: UnsafeMutablePointer<UInt32>
    @usableFromInline var ruleCount: Int
    @usableFromInline var recordBytes: Int
    /// Control plane only: per tree, its group (`CutTreeClassifier.group`),
    /// and an upper bound on the leaf slots no leaf uses any more (left
    /// behind by `inserting` and `removing`).
    var groups: UnsafeMutablePointer<UInt8>
    var deadSlots: Int

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
        leafRules.deallocate()
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

    /// `firstSplit`: the first of `splits` to try (tests force the two- and four-way splits).
    init(sorted: [SPDRule], firstSplit: Int = 0) {
        rules = sorted
        let (t4, h4) = Self.build(sorted.filter { $0.selector.isIPv4 }, ipv6: false, firstSplit: firstSplit)
        let (t6, h6) = Self.build(sorted.filter { !$0.selector.isIPv4 }, ipv6: true, firstSplit: firstSplit)
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

    /// Patched tables may carry this many unused leaf slots (as a share of
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
        // Its place in the family's rule table: the family's rules before it.
        let index = rules[..<at].reduce(0) { $1.selector.isIPv4 == !ipv6 ? $0 + 1 : $0 }
        guard edit.insert(rule, at: index, ipv6: ipv6),
              Double(edit.deadSlots) <= Self.maxDeadShare * Double(edit.leafRules.count) else { return nil }
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
        edit.remove(at: rules[..<i].reduce(0) { $1.selector.isIPv4 == !ipv6 ? $0 + 1 : $0 })
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
                + t.leafSlotCount * 4 + t.ruleCount * (4 + t.recordBytes)
        }
        return total
    }

    /// The ways an interface's rules are split into trees, tried in turn:
    /// (trees, build work per rule, the most rules a node may have that
    /// runs out of work before the next split is tried instead). Work is
    /// list slots and entries (see CutTreeBuilder.swift); a split's trees
    /// get the work of their own rules, plus `workSlack` each. The last
    /// split never moves on: its starved nodes become big leaves, so any
    /// rule set builds in time and memory linear in its size.
    ///
    /// On the dpdk-test-acl sets of `sluicebench --mode acl-gen` (most
    /// specific rules first), one unbounded tree for 10k IPv4 rules took 18M
    /// work (2.3 s; 10k IPv6 23 s; 100k did not finish). Bounded, 1k and 10k
    /// IPv4 and IPv6 take the two-way split (largest starved leaf 60) and
    /// look up faster than that tree did; 100k IPv4 takes the four-way split
    /// (a leaf of 312 rules among wide-source, wide-destination rules) and
    /// builds in 0.6 s, every attempt included.
    static let splits: [(trees: Int, work: Int, abandonPast: Int)] = [(1, 256, 16), (2, 256, 128), (4, 256, .max)]
    static let workSlack = 4096

    /// The group of `rule` in split `split` (an index into `splits`), kept
    /// per tree as `CutTreeTables.groups`: 0 for the single tree; 0 or 1 for
    /// a specific or wide destination (shorter than /16, /48 for IPv6); 2 +
    /// that + 2 for a wide source.
    static func group(_ rule: SPDRule, ipv6: Bool, split: Int) -> UInt8 {
        let wide = ipv6 ? 48 : 16
        let destination: UInt8 = Int(rule.selector.destinationPrefixLength) < wide ? 1 : 0
        switch split {
        case 0: return 0
        case 1: return destination
        default: return 2 + destination + (Int(rule.selector.sourcePrefixLength) < wide ? 2 : 0)
        }
    }

    /// Builds the trees of one family from its rules in rank order.
    static func build(_ rules: [SPDRule], ipv6: Bool, firstSplit: Int) -> (CutTreeTables, Set<UInt64>) {
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
            let all = byInterface[id]!
            let before = builder
            var set: [(CutTreeRoot, UInt8)] = []
            for split in min(firstSplit, splits.count - 1)..<splits.count {
                let (trees, work, abandonPast) = splits[split]
                // Group numbers of split 2 start at 2 (see `group`).
                let offset = split == 2 ? 2 : 0
                var groups = [[Int32]](repeating: [], count: trees)
                for i in all { groups[Int(group(rules[Int(i)], ipv6: ipv6, split: split)) - offset].append(i) }
                builder = before
                set = []
                for (g, list) in groups.enumerated() where !list.isEmpty {
                    guard let root = builder.tree(list, interface: id, budget: work * list.count + workSlack,
                                                  abandonPast: abandonPast) else { break }
                    set.append((CutTreeRoot(entry: root, firstRule: UInt32(list[0])), UInt8(g + offset)))
                }
                if builder.largestStarved <= abandonPast { break }
            }
            set.sort { $0.0.firstRule < $1.0.firstRule }
            out.interfaceTrees.append(UInt64(out.roots.count) << 32 | UInt64(set.count))
            out.roots += set.map(\.0)
            out.groups += set.map(\.1)
        }
        out.entries = builder.children
        out.leafRules = builder.leafRules
        out.records = [UInt32](repeating: 0, count: rules.count * 2 * lanes)
        out.records.withUnsafeMutableBufferPointer { b in
            for (i, r) in rules.enumerated() {
                CutTreeLayout.writeRecord(r, at: b.baseAddress! + i * 2 * lanes, lanes: lanes)
            }
        }
        out.values = rules.map(\.value)
        return (out.tables(), Set(builder.hiders.map { rules[Int($0)].rank }))
    }

    // MARK: Lookup

    /// One level of a walk: the child of entry `e` for the key at `k` (a
    /// 16-word slot), or `e` itself when it is a leaf. Branch-free, so the
    /// walks of several trees or packets interleave with no mispredictions
    /// and their cache misses overlap.
    @inlinable @inline(__always)
    static func step(_ e: UInt64, _ k: UnsafeRawPointer, entries: UnsafePointer<UInt64>) -> UInt64 {
        let bits = e & 0xFF
        let shift = (e &>> 8) & 0xFF
        // Internal entries have dim < 12; the mask keeps a leaf's count bits inside the key slot.
        let dim = Int(truncatingIfNeeded: (e &>> 16) & 0xF)
        let word = UInt64(k.load(fromByteOffset: dim &* 4, as: UInt32.self))
        // bits (1...16) and shift (< 32) keep the index inside the 2^bits
        // children the builder allocated at childBase; a leaf reads the spare entry 0.
        let index = (word &>> shift) & ((1 &<< bits) &- 1)
        // All ones for an internal entry, else zero (masks, not a select: the compiler branched on that).
        let inner = 0 &- ((bits &+ 0xFF) &>> 8)
        let next = entries[Int(truncatingIfNeeded: ((e &>> 32) &+ index) & inner)]
        return (next & inner) | (e & ~inner)
    }

    /// Whether `key` lies in the box of rule `rule` of `t`. `V` is the
    /// family's key vector (SIMD8 for IPv4, SIMD16 for IPv6).
    @inlinable @inline(__always)
    static func matches<V: CutTreeKeyVector>(_ key: V, rule: UInt32, _ t: CutTreeTables) -> Bool {
        // rule < ruleCount (leaves and entries hold indices into the table);
        // records are 64-byte aligned and 2 × V wide.
        key.isInside(record: UnsafeRawPointer(t.records) + Int(truncatingIfNeeded: rule) &* (2 &* MemoryLayout<V>.size))
    }

    /// Checks the rules of leaf `e` for `key`, improving `best` (a rule index).
    @inlinable @inline(__always)
    static func scan<V: CutTreeKeyVector>(_ e: UInt64, _ key: V, _ t: CutTreeTables, best: inout UInt32) {
        let count = Int(truncatingIfNeeded: (e &>> 8) & 0xFF_FFFF)
        let head = UInt32(truncatingIfNeeded: e &>> 32)
        if count == 1 {
            if head < best && matches(key, rule: head, t) { best = head }
            return
        }
        // The builder wrote `count` indices from slot `head` (none read when count is 0).
        var p = UnsafePointer(t.leafRules) + Int(truncatingIfNeeded: head)
        let end = p + count
        while p < end {
            let rule = p.pointee
            // Ascending: no later rule can beat `best`.
            if rule >= best { return }
            if matches(key, rule: rule, t) {
                best = rule
                return
            }
            p += 1
        }
    }

    /// The value of rule `best`, or `SPDNoMatch` for none.
    @inlinable @inline(__always)
    static func value(_ best: UInt32, _ t: CutTreeTables) -> UInt32 {
        best == .max ? SPDNoMatch : t.values[Int(truncatingIfNeeded: best)]
    }

    @inlinable @inline(__always)
    func search<V: CutTreeKeyVector>(_ k: UnsafePointer<UInt32>, _ t: CutTreeTables, as _: V.Type) -> UInt32 {
        var best = UInt32.max
        let key = UnsafeRawPointer(k).load(as: V.self)
        let span = t.trees(interface: k[V.scalarCount == 8 ? CutTreeLayout.dims4 &- 1 : CutTreeLayout.dims6 &- 1])
        var i = Int(truncatingIfNeeded: span &>> 32)
        let end = i &+ Int(truncatingIfNeeded: span & 0xFFFF_FFFF)
        while i < end {
            // i < end ≤ treeCount.
            let root = t.roots[i]
            // Trees are sorted by best rule: none after this one can win.
            if root.firstRule >= best { break }
            var a = root.entry
            if i &+ 1 < end {
                // Two trees at once (the second's best rule is checked by its scan).
                var b = t.roots[i &+ 1].entry
                while (a | b) & 0xFF != 0 {
                    a = Self.step(a, k, entries: t.entries)
                    b = Self.step(b, k, entries: t.entries)
                }
                Self.scan(a, key, t, best: &best)
                Self.scan(b, key, t, best: &best)
                i &+= 2
            } else {
                while a & 0xFF != 0 { a = Self.step(a, k, entries: t.entries) }
                Self.scan(a, key, t, best: &best)
                i &+= 1
            }
        }
        return Self.value(best, t)
    }

    @inlinable
    public func lookup(_ fields: SelectorFields) -> UInt32 {
        withUnsafeTemporaryAllocation(of: SIMD16<UInt32>.self, capacity: 1) { buffer in
            // One vector of the widest family's lanes.
            let v = buffer.baseAddress.unsafelyUnwrapped
            let k = UnsafeMutableRawPointer(v).assumingMemoryBound(to: UInt32.self)
            CutTreeLayout.key(fields, into: k)
            if fields.source.isIPv6 {
                return search(k, v6, as: SIMD16<UInt32>.self)
            }
            return search(k, v4, as: SIMD8<UInt32>.self)
        }
    }

    /// Packets per lockstep group (the literal capacities below say 8 too:
    /// a computed capacity made the temporaries heap allocations).
    @usableFromInline static var lanes: Int { 8 }

    @inlinable
    public func lookup(burst fields: UnsafePointer<SelectorFields>, count: Int,
                       into values: UnsafeMutablePointer<UInt32>) {
        withUnsafeTemporaryAllocation(of: SIMD16<UInt32>.self, capacity: 8) { keyBuffer in
            withUnsafeTemporaryAllocation(of: UInt64.self, capacity: 40) { stateBuffer in
                withUnsafeTemporaryAllocation(of: UInt32.self, capacity: 8) { bestBuffer in
                    // All sized for `lanes` packets of the widest family.
                    let keys = UnsafeMutableRawPointer(keyBuffer.baseAddress.unsafelyUnwrapped)
                    let entry = stateBuffer.baseAddress.unsafelyUnwrapped
                    let best = bestBuffer.baseAddress.unsafelyUnwrapped
                    var start = 0
                    while start < count {
                        let n = min(Self.lanes, count &- start)
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
                                group(fields + start, n, keys, entry, best, values + start, v6, as: SIMD16<UInt32>.self)
                            } else {
                                group(fields + start, n, keys, entry, best, values + start, v4, as: SIMD8<UInt32>.self)
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
    }

    /// `n` (≤ lanes) packets of one family: each round takes two trees of
    /// every packet's set and walks all 2n in lockstep, then scans.
    @inlinable @inline(__always)
    func group<V: CutTreeKeyVector>(_ f: UnsafePointer<SelectorFields>, _ n: Int, _ keyBytes: UnsafeMutableRawPointer,
                                    _ entry: UnsafeMutablePointer<UInt64>, _ best: UnsafeMutablePointer<UInt32>,
                                    _ values: UnsafeMutablePointer<UInt32>, _ t: CutTreeTables, as _: V.Type) {
        // Keys are 64 bytes apart (the buffer holds 16-word slots, enough for either family).
        let keyStride = MemoryLayout<SIMD16<UInt32>>.stride
        let ifDimension = V.scalarCount == 8 ? CutTreeLayout.dims4 &- 1 : CutTreeLayout.dims6 &- 1
        // entry[w] (w < 2 × lanes): walk w, of packet owner[w]; span[j]: packet j's trees.
        let span = entry + 2 &* Self.lanes
        let owner = span + Self.lanes
        var rounds = 0
        var j = 0
        while j < n {
            let k = (keyBytes + j &* keyStride).assumingMemoryBound(to: UInt32.self)
            CutTreeLayout.key(f[j], into: k)
            best[j] = .max
            span[j] = t.trees(interface: k[ifDimension])
            rounds = max(rounds, Int(truncatingIfNeeded: span[j] & 0xFFFF_FFFF))
            j &+= 1
        }
        var i = 0
        while i < rounds {
            // Up to two trees per packet, packets in order, trees in order within one.
            var walks = 0
            var pending: UInt64 = 0
            j = 0
            while j < n {
                let first = Int(truncatingIfNeeded: span[j] &>> 32)
                let count = Int(truncatingIfNeeded: span[j] & 0xFFFF_FFFF)
                // Indices below first + count are inside `roots`; walks ≤ 2 × lanes.
                if i < count {
                    let root = t.roots[first &+ i]
                    // Sorted by best rule: this tree and the rest cannot win.
                    if root.firstRule < best[j] {
                        entry[walks] = root.entry
                        owner[walks] = UInt64(j)
                        pending |= root.entry
                        walks &+= 1
                        if i &+ 1 < count {
                            let second = t.roots[first &+ i &+ 1].entry
                            entry[walks] = second
                            owner[walks] = UInt64(j)
                            pending |= second
                            walks &+= 1
                        }
                    }
                }
                j &+= 1
            }
            while pending & 0xFF != 0 {
                pending = 0
                var w = 0
                while w < walks {
                    let next = Self.step(entry[w], keyBytes + Int(truncatingIfNeeded: owner[w]) &* keyStride,
                                         entries: t.entries)
                    entry[w] = next
                    pending |= next
                    w &+= 1
                }
            }
            var w = 0
            while w < walks {
                let o = Int(truncatingIfNeeded: owner[w])
                let key = keyBytes.load(fromByteOffset: o &* keyStride, as: V.self)
                Self.scan(entry[w], key, t, best: &best[o])
                w &+= 1
            }
            i &+= 2
        }
        j = 0
        while j < n {
            values[j] = Self.value(best[j], t)
            j &+= 1
        }
    }
}

extension CutTreeClassifier {
    /// Shape of the trees, for benchmarks and tuning: per family, trees,
    /// entries, rules, leaf slots, and for each tree its deepest level and largest leaf.
    public var statistics: String {
        var text = ""
        for (name, t) in [("v4", v4), ("v6", v6)] where t.treeCount > 0 {
            text += "\(name): \(t.treeCount) trees, \(t.entryCount) entries, \(t.ruleCount) rules, \(t.leafSlotCount) leaf slots"
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
