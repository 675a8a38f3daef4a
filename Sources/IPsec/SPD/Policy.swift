// Security policies and the linear reference classifier (the SPD "driver"
// every compiled classifier is tested against). Policies are ordered by
// priority, lower first, ties in insertion order; the first whose selector
// matches decides. The packet is parsed once per lookup; nothing allocates.

import Packet

/// Which traffic a policy is for.
public enum PolicyDirection: UInt8, Hashable, Sendable, CaseIterable, BitwiseCopyable, CustomStringConvertible {
    /// Arriving from the unprotected side (after ESP was removed, or in clear).
    case inbound
    /// Leaving towards the unprotected side.
    case outbound
    /// Forwarded through the gateway (Linux `fwd`).
    case forward

    public var description: String {
        switch self {
        case .inbound: "in"
        case .outbound: "out"
        case .forward: "fwd"
        }
    }
}

/// What happens to traffic a policy selects.
public enum PolicyAction: Hashable, Sendable, BitwiseCopyable {
    /// Outbound: encrypt with the SA of this SPI. Inbound: accept only when it
    /// arrived through that SA (plaintext that matches is dropped).
    case protect(SPI)
    /// Forward in clear.
    case bypass
    /// Drop.
    case discard
}

/// One security policy.
public struct SecurityPolicy: Hashable, Sendable, BitwiseCopyable {
    public var id: UInt32
    public var direction: PolicyDirection
    public var selector: TrafficSelector
    /// Lower wins; equal priorities keep insertion order.
    public var priority: UInt32
    public var action: PolicyAction

    public init(id: UInt32, direction: PolicyDirection, selector: TrafficSelector, priority: UInt32,
                action: PolicyAction) {
        self.id = id
        self.direction = direction
        self.selector = selector
        self.priority = priority
        self.action = action
    }
}

/// The policy a lookup found.
public struct PolicyMatch: Hashable, Sendable, BitwiseCopyable {
    /// Position in `LinearSPD.policies` (effective order).
    public var index: Int
    public var id: UInt32
    public var action: PolicyAction

    @inlinable public init(index: Int, id: UInt32, action: PolicyAction) {
        self.index = index
        self.id = id
        self.action = action
    }
}

/// The reference SPD: a priority-ordered list searched front to back.
public struct LinearSPD: Sendable {
    /// In effective order: by priority, then insertion order.
    public let policies: ContiguousArray<SecurityPolicy>

    public init(policies: [SecurityPolicy]) {
        // Stable: sort by (priority, original position).
        let ordered = policies.enumerated().sorted {
            ($0.element.priority, $0.offset) < ($1.element.priority, $1.offset)
        }
        self.policies = ContiguousArray(ordered.map(\.element))
    }

    public var count: Int { policies.count }

    /// The first policy (of any direction) whose selector matches `packet`;
    /// nil when none does or the packet's IP header is malformed.
    @inlinable
    public func lookup(_ packet: PacketView) -> PolicyMatch? {
        guard let fields = SelectorFields(packet) else { return nil }
        return lookup(fields, direction: nil)
    }

    /// The first policy of `direction` whose selector matches `packet`.
    @inlinable
    public func lookup(_ packet: PacketView, direction: PolicyDirection) -> PolicyMatch? {
        guard let fields = SelectorFields(packet) else { return nil }
        return lookup(fields, direction: direction)
    }

    /// The first policy (of `direction`, or any when nil) matching `fields`.
    @inlinable
    public func lookup(_ fields: SelectorFields, direction: PolicyDirection?) -> PolicyMatch? {
        var i = 0
        let count = policies.count
        while i < count {
            let policy = policies[i]  // i < count
            if (direction == nil || policy.direction == direction) && policy.selector.matches(fields) {
                return PolicyMatch(index: i, id: policy.id, action: policy.action)
            }
            i &+= 1
        }
        return nil
    }
}
