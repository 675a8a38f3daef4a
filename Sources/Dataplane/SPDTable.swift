import IPsec

/// What a policy decides, as the workers read it: the value an SPD rule
/// carries indexes an array of these.
public struct PolicyVerdict: Sendable, BitwiseCopyable {
    public enum Action: UInt8, Sendable, BitwiseCopyable {
        case discard = 0
        case bypass = 1
        case protect = 2
    }
    public var action: Action
    /// Outbound protect: index of the SA in the tables' outbound SAs, −1 when
    /// the SA is missing (counted as `no_outbound_sa`). Otherwise −1.
    public var sa: Int32
    /// The policy's id (reports).
    public var policyID: UInt32

    public init(action: Action, sa: Int32 = -1, policyID: UInt32) {
        self.action = action
        self.sa = sa
        self.policyID = policyID
    }

    /// The verdict of a slot no policy uses any more (never returned by a
    /// classifier that no longer holds the rule; discard if it were).
    public static let unused = PolicyVerdict(action: .discard, policyID: 0)
}

/// One direction's SPD in a published snapshot: a classifier (any driver)
/// whose rule values index `verdicts`. Immutable; shared by every worker.
public final class SPDTable: @unchecked Sendable {
    public let classifier: any SPDClassifier
    let verdicts: UnsafeMutableBufferPointer<PolicyVerdict>

    public init(classifier: any SPDClassifier, verdicts: [PolicyVerdict]) {
        self.classifier = classifier
        let b = UnsafeMutableBufferPointer<PolicyVerdict>.allocate(capacity: max(verdicts.count, 1))
        _ = b.initialize(from: verdicts)
        self.verdicts = UnsafeMutableBufferPointer(rebasing: b[0..<verdicts.count])
    }

    deinit { verdicts.baseAddress?.deallocate() }

    public var driver: SPDDriver { type(of: classifier).driver }
    public var ruleCount: Int { classifier.rules.count }

    /// The verdict for one parsed packet; nil when no policy matches.
    @inline(__always)
    func verdict(_ fields: SelectorFields) -> PolicyVerdict? {
        let value = classifier.lookup(fields)
        // A value is always a slot of `verdicts` (the compiler builds both together).
        return value == SPDNoMatch ? nil : verdicts[Int(value)]
    }

    /// Classifies a burst: `values[i]` for `fields[i]`, `SPDNoMatch` when none.
    @inline(__always)
    func classify(_ fields: UnsafePointer<SelectorFields>, count: Int, into values: UnsafeMutablePointer<UInt32>) {
        classifier.lookup(burst: fields, count: count, into: values)
    }
}
