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
    /// Outbound protect with `per-cpu`: a worker whose target resolves to
    /// the reqid's fallback SA raises ACQUIRE for its own.
    public var acquiresPerCPU: Bool
    /// Outbound protect: the protect target (an `spi` or `reqid`) that each
    /// worker's SAD replica resolves to its SA (`SADReplica.targets`). Otherwise −1.
    public var sa: Int32
    /// The policy's id (reports).
    public var policyID: UInt32
    /// Inbound protect: the SPI or reqid the policy names, which the SA a
    /// packet was opened with must have (`InboundSA.isAssigned`). Otherwise `.none`.
    public var target: ProtectTarget

    public init(action: Action, sa: Int32 = -1, policyID: UInt32, target: ProtectTarget = .none,
                acquiresPerCPU: Bool = false) {
        self.action = action
        self.acquiresPerCPU = acquiresPerCPU
        self.sa = sa
        self.policyID = policyID
        self.target = target
    }

    /// The verdict of a slot no policy uses any more (never returned by a
    /// classifier that no longer holds the rule; discard if it were).
    public static let unused = PolicyVerdict(action: .discard, policyID: 0)
}

/// One direction's SPD in a published snapshot: a classifier (any driver)
/// whose rule values index `verdicts`. Immutable; shared by every worker.
/// The fast path switches on the driver once per lookup call and calls the
/// concrete class (no existential, no reference counting: `classifier` keeps
/// it alive and the typed references are unmanaged views of it, used through
/// `_withUnsafeGuaranteedRef`; an `unowned(unsafe)` view was retained and
/// released around every call).
public final class SPDTable: @unchecked Sendable {
    public let classifier: any SPDClassifier
    let verdicts: UnsafeMutableBufferPointer<PolicyVerdict>
    let kind: SPDDriver
    let linear: Unmanaged<LinearClassifier>
    let hashList: Unmanaged<HashListClassifier>
    let cutTree: Unmanaged<CutTreeClassifier>
    /// The protect and discard policies that name ports, with their ports
    /// taken out (values: their index here), lowest rank first; a
    /// classifier over them when they are many; the rank of each verdict
    /// slot's rule (empty when there are none): `portsMayBeProtected`.
    let portGuards: [SPDRule]
    let portGuardIndex: (any SPDClassifier)?
    let slotRanks: [UInt64]
    /// Stands in for the drivers this table does not use.
    private static let empty = (LinearClassifier(rules: []), HashListClassifier(rules: []), CutTreeClassifier(rules: []))

    /// `portGuards`: the rules of protect and discard policies that name
    /// ports, with their ports taken out, each rule's value its index in
    /// the array, in rank order; `portGuardIndex`: a classifier over them
    /// (nil: scanned); `slotRanks` the rank of each slot's rule (only when
    /// there are guards).
    public init(classifier: any SPDClassifier, verdicts: [PolicyVerdict], portGuards: [SPDRule] = [],
                portGuardIndex: (any SPDClassifier)? = nil, slotRanks: [UInt64] = []) {
        precondition(portGuards.isEmpty || slotRanks.count == verdicts.count, "a rank for every slot")
        precondition(portGuards.indices.allSatisfy { portGuards[$0].value == UInt32($0) }
                     && zip(portGuards, portGuards.dropFirst()).allSatisfy { $0.rank < $1.rank }, "guards in rank order, valued by index")
        self.classifier = classifier
        self.portGuards = portGuards
        self.portGuardIndex = portGuardIndex
        self.slotRanks = portGuards.isEmpty ? [] : slotRanks
        kind = type(of: classifier).driver
        linear = .passUnretained(classifier as? LinearClassifier ?? Self.empty.0)
        hashList = .passUnretained(classifier as? HashListClassifier ?? Self.empty.1)
        cutTree = .passUnretained(classifier as? CutTreeClassifier ?? Self.empty.2)
        let b = UnsafeMutableBufferPointer<PolicyVerdict>.allocate(capacity: max(verdicts.count, 1))
        _ = b.initialize(from: verdicts)
        self.verdicts = UnsafeMutableBufferPointer(rebasing: b[0..<verdicts.count])
    }

    deinit { verdicts.baseAddress?.deallocate() }

    public var driver: SPDDriver { kind }
    public var ruleCount: Int { classifier.rules.count }

    /// The verdict for one parsed packet; nil when no policy matches.
    @inline(__always)
    func verdict(_ fields: SelectorFields) -> PolicyVerdict? {
        let value = slot(fields)
        // A value is always a slot of `verdicts` (the compiler builds both together).
        return value == SPDNoMatch ? nil : verdicts[Int(value)]
    }

    /// The verdict slot for one parsed packet; `SPDNoMatch` when no policy matches.
    @inline(__always)
    func slot(_ fields: SelectorFields) -> UInt32 {
        switch kind {
        case .linear: linear._withUnsafeGuaranteedRef { $0.lookup(fields) }
        case .hashList: hashList._withUnsafeGuaranteedRef { $0.lookup(fields) }
        case .cutTree: cutTree._withUnsafeGuaranteedRef { $0.lookup(fields) }
        }
    }

    /// RFC 4301 §7: a packet whose ports are unknown (`fields.hasPorts`
    /// false: a later fragment, whose ports are in its first) matches only
    /// policies with any ports, so it can fall past a protect (or discard)
    /// policy that names ports to a bypass policy ranked after it. Whether
    /// such a policy, ranked before the rule of `slot`, matches its
    /// addresses and protocol: its datagram may be traffic that policy
    /// protects (or drops), and it must not pass in the clear. Off the fast
    /// path; one classifier lookup when the guards are many.
    @inline(never)
    func portsMayBeProtected(_ fields: SelectorFields, slot: UInt32) -> Bool {
        guard !portGuards.isEmpty, Int(slot) < slotRanks.count else { return false }
        let rank = slotRanks[Int(slot)]
        if let index = portGuardIndex {
            // The lowest-ranked guard that matches, whatever the ports.
            let v = index.lookup(fields)
            return v != SPDNoMatch && Int(v) < portGuards.count && portGuards[Int(v)].rank < rank
        }
        for rule in portGuards {
            if rule.rank >= rank { break }
            if rule.ifID == fields.ifID && rule.selector.matches(fields) { return true }
        }
        return false
    }

    /// Whether a packet that `slot`'s bypass verdict would let through with
    /// its ports unknown must be stopped (`portsMayBeProtected`). One
    /// predicted branch for a packet with ports.
    @inline(__always)
    func stopsOpaqueBypass(_ fields: SelectorFields, slot: UInt32) -> Bool {
        _slowPath(!fields.hasPorts) && portsMayBeProtected(fields, slot: slot)
    }

    /// Classifies a burst: `values[i]` for `fields[i]`, `SPDNoMatch` when none.
    @inline(__always)
    func classify(_ fields: UnsafePointer<SelectorFields>, count: Int, into values: UnsafeMutablePointer<UInt32>) {
        switch kind {
        case .linear: linear._withUnsafeGuaranteedRef { $0.lookup(burst: fields, count: count, into: values) }
        case .hashList: hashList._withUnsafeGuaranteedRef { $0.lookup(burst: fields, count: count, into: values) }
        case .cutTree: cutTree._withUnsafeGuaranteedRef { $0.lookup(burst: fields, count: count, into: values) }
        }
    }
}
