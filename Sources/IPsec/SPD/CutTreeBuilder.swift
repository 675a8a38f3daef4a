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
