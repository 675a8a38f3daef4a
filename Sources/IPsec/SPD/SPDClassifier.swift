// The interface every SPD classifier ("SPD driver") implements. A classifier
// is built once, off the data path, from a set of rules and is immutable
// afterwards: the control thread publishes it inside a snapshot and workers
// only read it. Lookups take parsed packets (`SelectorFields`) and return the
// `value` of the best rule that matches: the one with the lowest `rank`.
//
// Matching a rule means exactly `rule.selector.matches(fields) &&
// rule.ifID == fields.ifID`; `LinearClassifier` states that literally and is
// the oracle every other driver is tested against.

/// One policy rule as a classifier sees it.
public struct SPDRule: Hashable, Sendable, BitwiseCopyable {
    public var selector: TrafficSelector
    /// The interface the packet must belong to; 0 matches only packets of no interface.
    public var ifID: UInt32
    /// Lower wins. Unique within one classifier: (priority << 32) | insertion
    /// sequence gives "lower priority value first, ties in insertion order".
    public var rank: UInt64
    /// What a lookup decided by this rule returns (an index into the
    /// snapshot's action table, a policy id in tests). Never `SPDNoMatch`.
    public var value: UInt32

    @inlinable
    public init(selector: TrafficSelector, ifID: UInt32 = 0, rank: UInt64, value: UInt32) {
        self.selector = selector
        self.ifID = ifID
        self.rank = rank
        self.value = value
    }

    /// Whether `fields` is traffic of this rule (the definition every driver implements).
    @inlinable @inline(__always)
    public func matches(_ fields: SelectorFields) -> Bool {
        fields.ifID == ifID && selector.matches(fields)
    }
}

/// The lookup result when no rule matches.
public let SPDNoMatch: UInt32 = .max

/// The classifier drivers. `auto` is not one: `SPDDriver.choose` resolves it.
public enum SPDDriver: String, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    case linear = "linear"
    case hashList = "hash-list"
    case cutTree = "cut-tree"

    public var description: String { rawValue }
}

/// An immutable classifier over a rule set. Implementations are final classes
/// holding their tables in raw memory, so a lookup allocates nothing and
/// touches no reference counts.
public protocol SPDClassifier: AnyObject, Sendable {
    static var driver: SPDDriver { get }

    /// Builds the classifier. `rules` may be in any order and may mix IPv4 and
    /// IPv6; ranks are unique.
    init(rules: [SPDRule])

    /// The rules, in rank order (control plane: listing, rebuilding, tests).
    var rules: [SPDRule] { get }

    /// Bytes of memory the lookup tables occupy (reported by benchmarks).
    var memoryBytes: Int { get }

    /// The value of the lowest-ranked rule matching `fields`, or `SPDNoMatch`.
    func lookup(_ fields: SelectorFields) -> UInt32

    /// `values[i] = lookup(fields[i])` for `i < count`; drivers may
    /// interleave the packets of a burst.
    func lookup(burst fields: UnsafePointer<SelectorFields>, count: Int, into values: UnsafeMutablePointer<UInt32>)

    /// A new classifier equal to this one plus `rule`, built by copying and
    /// patching instead of rebuilding; nil when the driver cannot (the caller
    /// then rebuilds with `init(rules:)`). `self` is never modified.
    func inserting(_ rule: SPDRule) -> Self?

    /// A new classifier without the rule of rank `rank`, or nil as above.
    func removing(rank: UInt64) -> Self?
}

extension SPDClassifier {
    public func lookup(burst fields: UnsafePointer<SelectorFields>, count: Int, into values: UnsafeMutablePointer<UInt32>) {
        var i = 0
        while i < count {
            values[i] = lookup(fields[i])
            i &+= 1
        }
    }
    public func inserting(_ rule: SPDRule) -> Self? { nil }
    public func removing(rank: UInt64) -> Self? { nil }
}
