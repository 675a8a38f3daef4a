// Building the `cut-tree` driver's trees (control plane only).
//
// A tree node cuts one dimension of its region into 2^b equal parts by the
// next b bits of that dimension (regions stay aligned power-of-two blocks, so
// a lookup finds the child with a shift and a mask: HiCuts with power-of-two
// cuts). The builder picks, per node, the dimension and bit count that leave
// the smallest largest child, taking as many bits as a space budget allows
// (total child rule count + child slots ≤ spaceFactor × rules + slack).
// Nodes with ≤ `leafSize` rules, or that no cut can split, become leaves.
//
// Replication is bounded the EffiCuts/CutSplit way: rules are first split by
// whether their destination prefix is wide (shorter than /16, /48 for IPv6),
// each group its own tree, so the tree of specific destinations never cuts
// through destination wildcards. (Splitting by source width as well, four
// trees, used less memory but was 25% slower on generated 10k-rule sets:
// every tree costs a descent; one tree was 10% faster but five times larger.)
// Rules of different interface ids never share a tree: a packet only walks
// the trees of its own id.
//
// In a region, a rule covering the whole region hides every worse-ranked rule
// there, so those are dropped. Siblings with the same rules, all of which
// span both siblings in the cut dimension, share one subtree; leaves with the
// same rule list share one record run.
//
// Entries (UInt64) encode nodes and leaves:
//   internal: childBase << 32 | dim << 16 | shift << 8 | bits   (bits ≥ 1)
//   leaf:     firstRecord << 32 | count << 8 (24 bits)         (low byte 0)
// The all-zero entry is the empty leaf.

struct CutTreeBuilder {
    let dims: Int
    let cutWidth: [Int]
    /// Boxes of the family's rules (in rank order), [rule * dims + d].
    let lo: [UInt32]
    let hi: [UInt32]
    var children: [UInt64] = []
    /// Rule index per record slot, leaves one after the other.
    var leafRules: [Int32] = []
    private var leafIndex: [[Int32]: UInt64] = [:]
    /// Rules that hid worse-ranked ones somewhere (their removal needs a rebuild).
    var hiders: Set<Int32> = []

    // Measured on generated 10k-rule IPv4 sets: leaves of 4-16 rules and a
    // space factor of 4-8 differ by a few per cent in speed; 8 and 4 keep
    // memory lowest.
    static let leafSize = 8
    static let spaceFactor = 4
    static let slack = 32
    static let maxBits = 16
    static let maxDepth = 32

    init(boxes: [[(UInt32, UInt32)]], cutWidth: [Int]) {
        dims = cutWidth.count
        self.cutWidth = cutWidth
        var lo: [UInt32] = [], hi: [UInt32] = []
        lo.reserveCapacity(boxes.count * dims)
        hi.reserveCapacity(boxes.count * dims)
        for b in boxes {
            for (l, h) in b { lo.append(l); hi.append(h) }
        }
        self.lo = lo
        self.hi = hi
    }

    @inline(__always) private static func ones(_ bits: Int) -> UInt32 {
        bits >= 32 ? ~0 : (UInt32(1) << UInt32(bits)) &- 1
    }

    /// The root entry of a tree over `rules` (indices in rank order).
    /// All of `rules` have interface `interface`, and so do the packets that
    /// walk the tree: its region is that one id in the interface dimension.
    mutating func tree(_ rules: [Int32], interface: UInt32) -> UInt64 {
        var base = [UInt32](repeating: 0, count: dims)
        base[dims - 1] = interface
        var free = cutWidth
        return node(rules, base: &base, free: &free, depth: 0)
    }

    private mutating func leaf(_ list: [Int32]) -> UInt64 {
        if list.isEmpty { return 0 }
        if let e = leafIndex[list] { return e }
        let e = UInt64(leafRules.count) << 32 | UInt64(list.count) << 8
        leafRules.append(contentsOf: list)
        leafIndex[list] = e
        return e
    }

    private mutating func node(_ input: [Int32], base: inout [UInt32], free: inout [Int], depth: Int) -> UInt64 {
        // Drop what a covering rule hides.
        var list = input
        for (i, r) in list.enumerated() {
            var covers = true
            let o = Int(r) * dims
            for d in 0..<dims where lo[o + d] > base[d] || hi[o + d] < base[d] | Self.ones(free[d]) {
                covers = false
                break
            }
            if covers {
                if i + 1 < list.count {
                    hiders.insert(r)
                    list.removeSubrange((i + 1)...)
                }
                break
            }
        }
        let n = list.count
        if n <= Self.leafSize || depth >= Self.maxDepth { return leaf(list) }

        // Choose the cut.
        var bestDim = -1, bestBits = 0, bestMax = n, bestSum = Int.max
        var rel = [(UInt32, UInt32)](repeating: (0, 0), count: n)
        var hist = [Int32]()
        let budget = Self.spaceFactor * n + Self.slack
        for d in 0..<dims where free[d] > 0 && cutWidth[d] > 0 {
            let regionHigh = base[d] | Self.ones(free[d])
            for (i, r) in list.enumerated() {
                let o = Int(r) * dims + d
                rel[i] = (max(lo[o], base[d]) - base[d], min(hi[o], regionHigh) - base[d])
            }
            var accepted: (bits: Int, max: Int, sum: Int)?
            for bits in 1...min(free[d], Self.maxBits) {
                let shift = UInt32(free[d] - bits)
                let count = 1 << bits
                hist.removeAll(keepingCapacity: true)
                hist.append(contentsOf: repeatElement(0, count: count + 1))
                var sum = 0
                for (a, b) in rel {
                    let ca = Int(a >> shift), cb = Int(b >> shift)
                    hist[ca] += 1
                    hist[cb + 1] -= 1
                    sum += cb - ca + 1
                }
                if sum + count > budget && accepted != nil { break }
                var running: Int32 = 0, largest: Int32 = 0
                for c in 0..<count {
                    running += hist[c]
                    if running > largest { largest = running }
                }
                accepted = (bits, Int(largest), sum)
                if largest <= 1 { break }
            }
            if let a = accepted, a.max < bestMax || (a.max == bestMax && bestDim >= 0 && a.sum < bestSum) {
                bestDim = d; bestBits = a.bits; bestMax = a.max; bestSum = a.sum
            }
        }
        if bestDim < 0 || bestMax >= n { return leaf(list) }

        // Cut.
        let d = bestDim, bits = bestBits
        let shift = free[d] - bits
        let count = 1 << bits
        let oldBase = base[d], oldFree = free[d]
        let regionHigh = oldBase | Self.ones(oldFree)
        var lists = [[Int32]](repeating: [], count: count)
        for r in list {
            let o = Int(r) * dims + d
            let ca = Int((max(lo[o], oldBase) - oldBase) >> UInt32(shift))
            let cb = Int((min(hi[o], regionHigh) - oldBase) >> UInt32(shift))
            for c in ca...cb { lists[c].append(r) }
        }
        let block = children.count
        children.append(contentsOf: repeatElement(0, count: count))
        free[d] = shift
        var previous = -1
        for c in 0..<count where !lists[c].isEmpty {
            let childLow = oldBase | UInt32(c) << UInt32(shift)
            let childHigh = childLow | Self.ones(shift)
            if previous >= 0 && lists[previous] == lists[c] {
                // Same rules; shareable when every one spans both children in `d`.
                let prevLow = oldBase | UInt32(previous) << UInt32(shift)
                let prevHigh = prevLow | Self.ones(shift)
                let spans = lists[c].allSatisfy { r in
                    let o = Int(r) * dims + d
                    return lo[o] <= min(childLow, prevLow) && hi[o] >= max(childHigh, prevHigh)
                }
                if spans {
                    children[block + c] = children[block + previous]
                    previous = c
                    continue
                }
            }
            base[d] = childLow
            let e = node(lists[c], base: &base, free: &free, depth: depth + 1)
            children[block + c] = e
            previous = c
        }
        base[d] = oldBase
        free[d] = oldFree
        return UInt64(block) << 32 | UInt64(d) << 16 | UInt64(shift) << 8 | UInt64(bits)
    }
}

// MARK: Tables as arrays, and patching them

/// One family's tables as ordinary arrays (control plane): what the builder
/// produces and what `inserting`/`removing` edit in a copy before
/// `tables()` moves them into the raw memory lookups read.
struct CutTreeArrays {
    let lanes: Int
    var roots: [CutTreeRoot] = []
    var groups: [UInt8] = []
    var interfaces: [UInt32] = []
    var interfaceTrees: [UInt64] = []
    var entries: [UInt64] = []
    /// 2 × lanes words per record (see `CutTreeLayout`).
    var records: [UInt32] = []
    var values: [UInt32] = []
    var deadRecords = 0

    /// Leaves `inserting` may grow to; a larger one makes it decline (the rebuild re-cuts).
    static let maxPatchedLeaf = 2 * CutTreeBuilder.leafSize

    init(lanes: Int) { self.lanes = lanes }

    init(_ t: CutTreeTables) {
        lanes = t.recordBytes / 8
        roots = Array(UnsafeBufferPointer(start: t.roots, count: t.treeCount))
        groups = Array(UnsafeBufferPointer(start: t.groups, count: t.treeCount))
        interfaces = Array(UnsafeBufferPointer(start: t.interfaces, count: t.interfaceCount))
        interfaceTrees = Array(UnsafeBufferPointer(start: t.interfaceTrees, count: t.interfaceCount))
        entries = Array(UnsafeBufferPointer(start: t.entries, count: t.entryCount))
        records = Array(UnsafeBufferPointer(start: t.records, count: t.recordCount * 2 * lanes))
        values = Array(UnsafeBufferPointer(start: t.values, count: t.recordCount))
        deadRecords = t.deadRecords
    }

    /// The tables in freshly allocated raw memory (the caller's classifier owns it).
    func tables() -> CutTreeTables {
        func copy<T>(_ a: [T]) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(a.count, 1))
            p.initialize(from: a, count: a.count)
            return p
        }
        let recordCount = values.count
        let records = UnsafeMutableRawPointer.allocate(byteCount: max(recordCount, 1) * 8 * lanes, alignment: 64)
            .bindMemory(to: UInt32.self, capacity: max(recordCount, 1) * 2 * lanes)
        records.initialize(from: self.records, count: self.records.count)
        return CutTreeTables(roots: copy(roots), treeCount: roots.count, interfaces: copy(interfaces),
                             interfaceTrees: copy(interfaceTrees), interfaceCount: interfaces.count,
                             entries: copy(entries), entryCount: entries.count, records: records,
                             values: copy(values), recordCount: recordCount, recordBytes: 8 * lanes,
                             groups: copy(groups), deadRecords: deadRecords)
    }

    private mutating func appendRecord(from slot: Int) {
        let w = 2 * lanes
        for k in slot * w ..< (slot + 1) * w { records.append(records[k]) }
        values.append(values[slot])
    }

    private func rank(ofRecord slot: Int) -> UInt64 {
        let o = slot * 2 * lanes
        return UInt64(records[o + 2 * lanes - 2]) | UInt64(records[o + 2 * lanes - 1]) << 32
    }

    // MARK: Insert

    /// Adds `rule` (of this family) to every leaf its box reaches in one
    /// tree of its interface id. False when it cannot: no tree for that id,
    /// or a leaf would outgrow `maxPatchedLeaf`; `self` is then unusable.
    ///
    /// Correct whatever region a leaf stands for: a leaf's records are
    /// checked against the whole box of their rule, so a record in a leaf
    /// its box misses (a subtree or record run shared with a region the rule
    /// does not reach) only costs a compare, and leaves keep rank order.
    mutating func insert(_ rule: SPDRule, ipv6: Bool) -> Bool {
        guard let i = interfaces.firstIndex(of: rule.ifID) else { return false }
        let first = Int(interfaceTrees[i] >> 32), count = Int(interfaceTrees[i] & 0xFFFF_FFFF)
        guard count > 0 else { return false }
        // Its group's tree, or the other one when its group has none.
        let wanted = UInt8(CutTreeClassifier.group(rule, ipv6: ipv6))
        let tree = (first..<first + count).first { groups[$0] == wanted } ?? first
        let box = CutTreeLayout.box(rule)
        var record = [UInt32](repeating: 0, count: 2 * lanes)
        record.withUnsafeMutableBufferPointer { CutTreeLayout.writeRecord(rule, at: $0.baseAddress!, lanes: lanes) }
        var walk = InsertWalk(box: box, base: [UInt32](repeating: 0, count: box.count), record: record,
                              rank: rule.rank, value: rule.value)
        walk.base[box.count - 1] = rule.ifID
        var rootEntry = roots[tree].entry
        guard insert(&walk, at: &rootEntry) else { return false }
        roots[tree].entry = rootEntry
        if rule.rank < roots[tree].minRank {
            roots[tree].minRank = rule.rank
            // Keep the id's trees sorted by best rank (lookups stop at the first they cannot improve on).
            var set = (first..<first + count).map { (roots[$0], groups[$0]) }
            set.sort { $0.0.minRank < $1.0.minRank }
            for (k, (r, g)) in set.enumerated() { roots[first + k] = r; groups[first + k] = g }
        }
        return true
    }

    private struct InsertWalk {
        let box: [(UInt32, UInt32)]
        /// The low corner of the current region (per dimension).
        var base: [UInt32]
        let record: [UInt32]
        let rank: UInt64
        let value: UInt32
        /// Leaf entry before → after, so leaves sharing a record run keep sharing one.
        var replaced: [UInt64: UInt64] = [:]
        /// Entry slots already patched (a shared subtree is reached once per sibling).
        var patched: Set<Int> = []
    }

    /// Patches the subtree of `entry` (stored at `entries[slot]`, or a root when slot < 0).
    private mutating func insert(_ walk: inout InsertWalk, at entry: inout UInt64, slot: Int = -1) -> Bool {
        let e = entry
        if e & 0xFF == 0 {
            if slot >= 0 && !walk.patched.insert(slot).inserted { return true }
            if let done = walk.replaced[e] { entry = done; return true }
            let start = Int(e >> 32), n = Int((e >> 8) & 0xFF_FFFF)
            guard n + 1 <= Self.maxPatchedLeaf else { return false }
            // A new run at the end: the old one's better records, the rule, the rest (the empty leaf 0 has none).
            let at = (0..<n).first { rank(ofRecord: start + $0) > walk.rank } ?? n
            let newStart = values.count
            // Index loops, not slices: a slice of `records` appended to itself would copy the whole array.
            for k in 0..<at { appendRecord(from: start + k) }
            records.append(contentsOf: walk.record)
            values.append(walk.value)
            for k in at..<n { appendRecord(from: start + k) }
            deadRecords += n
            let next = UInt64(newStart) << 32 | UInt64(n + 1) << 8
            walk.replaced[e] = next
            entry = next
            return true
        }
        let bits = Int(e & 0xFF), shift = Int((e >> 8) & 0xFF), d = Int((e >> 16) & 0xFF)
        let childBase = Int(e >> 32)
        let oldBase = walk.base[d]
        let regionHigh = oldBase | (shift + bits >= 32 ? ~0 : (UInt32(1) << UInt32(shift + bits)) &- 1)
        let (lo, hi) = walk.box[d]
        guard lo <= regionHigh && hi >= oldBase else { return true }
        let ca = Int((max(lo, oldBase) - oldBase) >> UInt32(shift))
        let cb = Int((min(hi, regionHigh) - oldBase) >> UInt32(shift))
        for c in ca...cb {
            walk.base[d] = oldBase | UInt32(c) << UInt32(shift)
            var child = entries[childBase + c]
            guard insert(&walk, at: &child, slot: childBase + c) else { return false }
            entries[childBase + c] = child
        }
        walk.base[d] = oldBase
        return true
    }

    // MARK: Remove

    /// Drops the records of the rule of rank `rank` from every leaf. Runs
    /// shrink in place, so every leaf entry naming a run is rewritten.
    mutating func remove(rank gone: UInt64) {
        var shrunk: [UInt64: UInt64] = [:]
        func patch(_ e: UInt64) -> UInt64 {
            guard e != 0 && e & 0xFF == 0 else { return e }
            if let done = shrunk[e] { return done }
            let start = Int(e >> 32), n = Int((e >> 8) & 0xFF_FFFF)
            guard let at = (0..<n).first(where: { rank(ofRecord: start + $0) == gone }) else {
                shrunk[e] = e
                return e
            }
            let w = 2 * lanes
            for k in (start + at) * w ..< (start + n - 1) * w { records[k] = records[k + w] }
            for k in start + at ..< start + n - 1 { values[k] = values[k + 1] }
            deadRecords += 1
            let next = n == 1 ? 0 : UInt64(start) << 32 | UInt64(n - 1) << 8
            shrunk[e] = next
            return next
        }
        for i in entries.indices { entries[i] = patch(entries[i]) }
        for i in roots.indices { roots[i].entry = patch(roots[i].entry) }
    }
}
