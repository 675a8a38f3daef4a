// The `linear` SPD driver: rules in rank order, tried one after the other.
// Obviously correct, and the oracle of the differential tests; fast enough
// for a handful of policies, where it also wins on memory and build time.

/// Immutable after init; the table is only read, so sharing across threads is safe.
public final class LinearClassifier: SPDClassifier, @unchecked Sendable {
    public static var driver: SPDDriver { .linear }

    @usableFromInline let table: UnsafeMutableBufferPointer<SPDRule>

    public init(rules: [SPDRule]) {
        let sorted = rules.sorted { $0.rank < $1.rank }
        let b = UnsafeMutableBufferPointer<SPDRule>.allocate(capacity: max(sorted.count, 1))
        _ = b.initialize(from: sorted)
        table = UnsafeMutableBufferPointer(rebasing: b[0..<sorted.count])
    }

    deinit { table.baseAddress?.deallocate() }

    public var rules: [SPDRule] { Array(table) }
    public var memoryBytes: Int { table.count * MemoryLayout<SPDRule>.stride }

    @inlinable
    public func lookup(_ fields: SelectorFields) -> UInt32 {
        var i = 0
        let n = table.count
        while i < n {
            // i < n = table.count.
            if table[i].matches(fields) { return table[i].value }
            i &+= 1
        }
        return SPDNoMatch
    }

    public func inserting(_ rule: SPDRule) -> LinearClassifier? {
        var all = Array(table)
        let at = all.firstIndex { $0.rank > rule.rank } ?? all.count
        all.insert(rule, at: at)
        return LinearClassifier(sortedRules: all)
    }

    public func removing(rank: UInt64) -> LinearClassifier? {
        LinearClassifier(sortedRules: table.filter { $0.rank != rank })
    }

    private convenience init(sortedRules: [SPDRule]) {
        self.init(rules: sortedRules)
    }
}
