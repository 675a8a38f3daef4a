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
// Each tree has a work budget: the rule slots of every node's list plus the
// entries it allocates (what building costs in time and memory, and bounds
// the tables). A node spends its cut's cost and passes what is left to its
// children in proportion to their rule counts, one after the other, each
// handing back what its subtree did not use. A node whose cheapest cut no
// longer fits becomes a leaf however many rules it has ("starved"): rule
// sets that replicate badly get bigger leaves instead of an unbounded
// build. A tree can instead be abandoned at its first starved node of more
// than a given number of rules, so the caller can try a split into more trees.
//
// Leaves hold 4-byte rule indices (records live once, in the rule table), so
// replication is cheap and each interface id gets one tree: one walk per
// packet. When that tree runs out of budget, its rules are split the
// EffiCuts/CutSplit way by whether their destination prefix is wide (shorter
// than /16, /48 for IPv6), each group its own tree, so the tree of specific
// destinations never cuts through destination wildcards; when one of those
// runs out too, by source width as well, four trees
// (`CutTreeClassifier.splits`). Lookups walk two trees at once.
// Rules of different interface ids never share a tree: a packet only walks
// the trees of its own id.
//
// In a region, a rule covering the whole region hides every worse-ranked rule
// there, so those are dropped. Siblings with the same rules, all of which
// span both siblings in the cut dimension, share one subtree; leaves with the
// same rule list share one run of rule indices.
//
// Entries (UInt64) encode nodes and leaves:
//   internal: childBase << 32 | dim << 16 | shift << 8 | bits   (bits ≥ 1)
//   leaf:     head << 32 | count << 8 (24 bits)                (low byte 0)
// where a leaf's head is its first slot in the leaf runs, or for a one-rule
// leaf the rule's index itself (no run, one miss less). The all-zero entry
// is the empty leaf. Rule indices are positions in the family's rule table,
// in rank order, so leaves list them ascending.

struct CutTreeBuilder {
    let dims: Int
    let cutWidth: [Int]
    /// Boxes of the family's rules (in rank order), [rule * dims + d].
    let lo: [UInt32]
    let hi: [UInt32]
    /// Entry 0 is a spare empty leaf: the branch-free walk reads it for leaves.
    var children: [UInt64] = [0]
    /// Rule indices of the leaves of two or more rules, one run after the other.
    var leafRules: [UInt32] = []
    private var leafIndex: [[Int32]: UInt64] = [:]
    /// Rules that hid worse-ranked ones somewhere (their removal needs a rebuild).
    var hiders: Set<Int32> = []
    /// The most rules a node of the tree being built has that became a leaf for want of budget (0: none).
    private(set) var largestStarved = 0
    /// Stop cutting the current tree at its first starved node of more rules.
    private var abandonPast = Int.max

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

    /// The root entry of a tree over `rules` (indices in rank order), whose
    /// build may cost `budget` list slots and entries (see the top of the
    /// file); nil when a node of more than `abandonPast` rules ran out of
    /// budget (what it added to `self` is then garbage: build from a copy
    /// taken before).
    /// All of `rules` have interface `interface`, and so do the packets that
    /// walk the tree: its region is that one id in the interface dimension.
    mutating func tree(_ rules: [Int32], interface: UInt32, budget: Int, abandonPast: Int = .max) -> UInt64? {
        var base = [UInt32](repeating: 0, count: dims)
        base[dims - 1] = interface
        var free = cutWidth
        largestStarved = 0
        self.abandonPast = abandonPast
        var left = budget - rules.count
        let root = node(rules, base: &base, free: &free, depth: 0, budget: &left)
        return largestStarved > abandonPast ? nil : root
    }

    private mutating func leaf(_ list: [Int32]) -> UInt64 {
        if list.isEmpty { return 0 }
        if list.count == 1 { return UInt64(UInt32(list[0])) << 32 | 1 << 8 }
        if let e = leafIndex[list] { return e }
        let e = UInt64(leafRules.count) << 32 | UInt64(list.count) << 8
        leafRules.append(contentsOf: list.lazy.map { UInt32($0) })
        leafIndex[list] = e
        return e
    }

    /// The entry of a node over `input`; `budget` is what its subtree may
    /// spend (its own list is paid for), less what it spent on return.
    private mutating func node(_ input: [Int32], base: inout [UInt32], free: inout [Int], depth: Int,
                               budget: inout Int) -> UInt64 {
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
        if n <= Self.leafSize || depth >= Self.maxDepth || largestStarved > abandonPast { return leaf(list) }

        // Choose the cut.
        var bestDim = -1, bestBits = 0, bestMax = n, bestSum = Int.max
        var rel = [(UInt32, UInt32)](repeating: (0, 0), count: n)
        var hist = [Int32]()
        // Per node, cuts may replicate up to the space factor (a 1-bit cut always may), within the tree's budget.
        let perNode = Self.spaceFactor * n + Self.slack
        var blocked = false
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
                if sum + count > budget {
                    if accepted == nil { blocked = true }
                    break
                }
                if sum + count > perNode && accepted != nil { break }
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
        if bestDim < 0 || bestMax >= n {
            if bestDim < 0 && blocked { largestStarved = max(largestStarved, n) }
            return leaf(list)
        }

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
        // Children get the rest in proportion to their rule counts, in turn,
        // each giving back what it did not use.
        var pool = budget - bestSum - count
        var unpaid = bestSum
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
                    unpaid -= lists[c].count
                    continue
                }
            }
            base[d] = childLow
            // unpaid ≥ lists[c].count > 0; the product fits (both below 2^40 for any sane budget).
            let share = pool * lists[c].count / unpaid
            var left = share
            unpaid -= lists[c].count
            let e = node(lists[c], base: &base, free: &free, depth: depth + 1, budget: &left)
            pool -= share - left
            children[block + c] = e
            previous = c
        }
        base[d] = oldBase
        free[d] = oldFree
        budget = pool
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
    /// Runs of rule indices of the leaves of two or more rules.
    var leafRules: [UInt32] = []
    /// One record of 2 × lanes words per rule, in rank order (see `CutTreeLayout`).
    var records: [UInt32] = []
    var values: [UInt32] = []
    /// An upper bound on the `leafRules` slots no leaf uses any more.
    var deadSlots = 0

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
        leafRules = Array(UnsafeBufferPointer(start: t.leafRules, count: t.leafSlotCount))
        records = Array(UnsafeBufferPointer(start: t.records, count: t.ruleCount * 2 * lanes))
        values = Array(UnsafeBufferPointer(start: t.values, count: t.ruleCount))
        deadSlots = t.deadSlots
    }

    /// The tables in freshly allocated raw memory (the caller's classifier owns it).
    func tables() -> CutTreeTables {
        func copy<T>(_ a: [T]) -> UnsafeMutablePointer<T> {
            let p = UnsafeMutablePointer<T>.allocate(capacity: max(a.count, 1))
            p.initialize(from: a, count: a.count)
            return p
        }
        let ruleCount = values.count
        let records = UnsafeMutableRawPointer.allocate(byteCount: max(ruleCount, 1) * 8 * lanes, alignment: 64)
            .bindMemory(to: UInt32.self, capacity: max(ruleCount, 1) * 2 * lanes)
        records.initialize(from: self.records, count: self.records.count)
        return CutTreeTables(roots: copy(roots), treeCount: roots.count, interfaces: copy(interfaces),
                             interfaceTrees: copy(interfaceTrees), interfaceCount: interfaces.count,
                             entries: copy(entries), entryCount: entries.count,
                             leafRules: copy(leafRules), leafSlotCount: leafRules.count, records: records,
                             values: copy(values), ruleCount: ruleCount, recordBytes: 8 * lanes,
                             groups: copy(groups), deadSlots: deadSlots)
    }

    @inline(__always) private static func isLeaf(_ e: UInt64) -> Bool { e & 0xFF == 0 }
    @inline(__always) private static func count(_ e: UInt64) -> Int { Int((e >> 8) & 0xFF_FFFF) }

    /// The rule indices of leaf `e`.
    private func rules(ofLeaf e: UInt64) -> [UInt32] {
        let head = Int(e >> 32), n = Self.count(e)
        return n == 1 ? [UInt32(head)] : Array(leafRules[head ..< head + n])
    }

    /// The entry of a leaf holding `list` (ascending), appending a run when it needs one.
    private mutating func leaf(_ list: [UInt32]) -> UInt64 {
        switch list.count {
        case 0: return 0
        case 1: return UInt64(list[0]) << 32 | 1 << 8
        default:
            let e = UInt64(leafRules.count) << 32 | UInt64(list.count) << 8
            leafRules += list
            return e
        }
    }

    /// Applies `f` (monotonic) to every rule index the tables hold: runs,
    /// one-rule leaves, trees' best rules.
    private mutating func renumber(_ f: (UInt32) -> UInt32) {
        func entry(_ e: UInt64) -> UInt64 {
            guard Self.isLeaf(e) && Self.count(e) == 1 else { return e }
            return UInt64(f(UInt32(e >> 32))) << 32 | (e & 0xFFFF_FFFF)
        }
        for i in leafRules.indices { leafRules[i] = f(leafRules[i]) }
        for i in entries.indices { entries[i] = entry(entries[i]) }
        for i in roots.indices {
            roots[i].entry = entry(roots[i].entry)
            roots[i].firstRule = f(roots[i].firstRule)
        }
    }

    // MARK: Insert

    /// Adds `rule` (of this family), which goes at `index` of the rule
    /// table, to every leaf its box reaches in one tree of its interface id.
    /// False when it cannot: no tree for that id, or a leaf would outgrow
    /// `maxPatchedLeaf`; `self` is then unusable.
    ///
    /// Correct whatever region a leaf stands for: a leaf's rules are
    /// checked against their whole box, so a rule in a leaf its box misses
    /// (a subtree or run shared with a region the rule does not reach) only
    /// costs a compare, and leaves keep rank order.
    mutating func insert(_ rule: SPDRule, at index: Int, ipv6: Bool) -> Bool {
        guard let i = interfaces.firstIndex(of: rule.ifID) else { return false }
        let first = Int(interfaceTrees[i] >> 32), count = Int(interfaceTrees[i] & 0xFFFF_FFFF)
        guard count > 0 else { return false }
        let index = UInt32(index)
        renumber { $0 >= index ? $0 + 1 : $0 }
        var record = [UInt32](repeating: 0, count: 2 * lanes)
        record.withUnsafeMutableBufferPointer { CutTreeLayout.writeRecord(rule, at: $0.baseAddress!, lanes: lanes) }
        records.insert(contentsOf: record, at: Int(index) * 2 * lanes)
        values.insert(rule.value, at: Int(index))
        // Its group's tree (the split is known from the groups' numbers), or the first when its group has none.
        let split = groups[first] >= 2 ? 2 : count > 1 ? 1 : 0
        let wanted = CutTreeClassifier.group(rule, ipv6: ipv6, split: split)
        let tree = (first..<first + count).first { groups[$0] == wanted } ?? first
        let box = CutTreeLayout.box(rule)
        var walk = InsertWalk(box: box, base: [UInt32](repeating: 0, count: box.count), index: index)
        walk.base[box.count - 1] = rule.ifID
        var rootEntry = roots[tree].entry
        guard insert(&walk, at: &rootEntry) else { return false }
        roots[tree].entry = rootEntry
        if index < roots[tree].firstRule {
            roots[tree].firstRule = index
            // Keep the id's trees sorted by best rule (lookups stop at the first they cannot improve on).
            var set = (first..<first + count).map { (roots[$0], groups[$0]) }
            set.sort { $0.0.firstRule < $1.0.firstRule }
            for (k, (r, g)) in set.enumerated() { roots[first + k] = r; groups[first + k] = g }
        }
        return true
    }

    private struct InsertWalk {
        let box: [(UInt32, UInt32)]
        /// The low corner of the current region (per dimension).
        var base: [UInt32]
        let index: UInt32
        /// Leaf entry before → after, so leaves sharing a run keep sharing one.
        var replaced: [UInt64: UInt64] = [:]
        /// Entry slots already patched (a shared subtree is reached once per sibling).
        var patched: Set<Int> = []
    }

    /// Patches the subtree of `entry` (stored at `entries[slot]`, or a root when slot < 0).
    private mutating func insert(_ walk: inout InsertWalk, at entry: inout UInt64, slot: Int = -1) -> Bool {
        let e = entry
        if Self.isLeaf(e) {
            if slot >= 0 && !walk.patched.insert(slot).inserted { return true }
            if let done = walk.replaced[e] { entry = done; return true }
            let n = Self.count(e)
            guard n + 1 <= Self.maxPatchedLeaf else { return false }
            // A new run at the end: the old list with the rule in rank place.
            var list = n == 0 ? [] : rules(ofLeaf: e)
            list.insert(walk.index, at: list.firstIndex { $0 > walk.index } ?? n)
            if n >= 2 { deadSlots += n }
            let next = leaf(list)
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

    /// Drops the rule at `index` of the rule table from every leaf and the
    /// table. Runs shrink in place, so every leaf entry naming a run is
    /// rewritten; a tree's best rule stays a lower bound.
    mutating func remove(at index: Int) {
        let gone = UInt32(index)
        var shrunk: [UInt64: UInt64] = [:]
        func patch(_ e: UInt64) -> UInt64 {
            guard e != 0 && Self.isLeaf(e) else { return e }
            let head = Int(e >> 32), n = Self.count(e)
            if n == 1 { return UInt32(head) == gone ? 0 : e }
            if let done = shrunk[e] { return done }
            var next = e
            if let at = (head ..< head + n).first(where: { leafRules[$0] == gone }) {
                if n == 2 {
                    next = UInt64(leafRules[at == head ? head + 1 : head]) << 32 | 1 << 8
                    deadSlots += 2
                } else {
                    for k in at ..< head + n - 1 { leafRules[k] = leafRules[k + 1] }
                    next = UInt64(head) << 32 | UInt64(n - 1) << 8
                    deadSlots += 1
                }
            }
            shrunk[e] = next
            return next
        }
        for i in entries.indices { entries[i] = patch(entries[i]) }
        for i in roots.indices { roots[i].entry = patch(roots[i].entry) }
        renumber { $0 > gone ? $0 - 1 : $0 }
        records.removeSubrange(index * 2 * lanes ..< (index + 1) * 2 * lanes)
        values.remove(at: index)
    }
}
