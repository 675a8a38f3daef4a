// Security policies, as `sp add` describes them: a traffic selector, a
// priority and what to do with matching traffic. `GatewayConfig.policies`
// keeps them in effective order; the classifier the data path reads is built
// from that list elsewhere.

import Packet

/// A policy's stable number: given at `sp add` (`id N`) or assigned there, and
/// never changed while the policy exists.
public struct PolicyID: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Ids a policy may have; 0 is never one.
    public static let valid: ClosedRange<UInt32> = 1...UInt32.max

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }
    public var description: String { String(rawValue) }
}

/// Which traffic a policy governs (`dir in|out|fwd`).
public enum PolicyDirection: String, Sendable, Hashable, CaseIterable {
    /// Traffic arriving on unprotected ports (decrypted, or in clear).
    case inbound = "in"
    /// Traffic leaving towards unprotected ports (encrypted here, or in clear).
    case outbound = "out"
    /// Forwarded traffic arriving on unprotected ports, as Linux's `fwd`.
    /// Sluice forwards everything it accepts, so `fwd` and `in` policies are
    /// consulted together for that traffic (the better rank wins): an IKE
    /// daemon's in/fwd/out triples load unchanged.
    case forward = "fwd"

    /// The direction of the SAs a `protect` policy of this direction names.
    public var saDirection: IPsecDirection { self == .outbound ? .outbound : .inbound }
}

/// The traffic a policy applies to.
public struct PolicySelector: Sendable, Hashable {
    public var direction: PolicyDirection
    /// Source and destination networks (no host bits), one family.
    public var source: IPPrefix
    public var destination: IPPrefix
    /// The upper-layer protocol, or nil for any.
    public var proto: IPProtocol?
    /// Port ranges, only with `portProtocols`; nil for any port. With proto
    /// icmp or icmpv6 they hold the ICMP type (`type`, source) and code
    /// (`code`, destination) ranges, 0–255, as Linux's xfrm selectors do.
    public var sourcePorts: ClosedRange<UInt16>?
    public var destinationPorts: ClosedRange<UInt16>?
    /// The interface id (`if-id N`) packets must belong to; 0: no interface.
    public var ifID: UInt32

    public init(direction: PolicyDirection, source: IPPrefix, destination: IPPrefix, proto: IPProtocol? = nil,
                sourcePorts: ClosedRange<UInt16>? = nil, destinationPorts: ClosedRange<UInt16>? = nil,
                ifID: UInt32 = 0) {
        self.direction = direction
        self.source = source
        self.destination = destination
        self.proto = proto
        self.sourcePorts = sourcePorts
        self.destinationPorts = destinationPorts
        self.ifID = ifID
    }

    /// Whether the port fields hold ICMP type and code.
    public var isICMP: Bool { proto == .icmp || proto == .icmpv6 }

    /// Protocols whose selectors may name ports: TCP, UDP and SCTP (132).
    public static let portProtocols: [IPProtocol] = [.tcp, .udp, IPProtocol(132)]
    /// ICMP types and codes are bytes.
    public static let icmpValues: ClosedRange<UInt16> = 0...255
}

/// `spd driver auto|linear|hash-list|cut-tree`: which classifier serves the
/// SPD snapshots. `auto` picks by the rule set's size and shape.
public enum SPDDriverChoice: String, Sendable, Hashable, CaseIterable {
    case auto
    case linear
    case hashList = "hash-list"
    case cutTree = "cut-tree"
}

/// `shared-sa atomic|handoff`: how the workers that resolve a protect policy
/// to the same outbound SA (a fallback, or `protect spi`) share its sequence
/// counter. `atomic`: every worker seals, taking numbers with one atomic
/// reservation per SA per burst. `handoff`: the SA's owner worker (its `cpu`,
/// else SPI mod workers) seals every packet; the others hand packets to it
/// over a ring (VPP's way: one writer, but one core's crypto for the SA).
public enum SharedSAChoice: String, Sendable, Hashable, CaseIterable {
    case atomic
    case handoff
}

extension IPProtocol {
    /// The protocol names the language reads and writes; other protocols are numbers.
    static let commandNames: [(name: String, proto: IPProtocol)] = [
        ("tcp", .tcp), ("udp", .udp), ("icmp", .icmp), ("icmpv6", .icmpv6), ("sctp", IPProtocol(132)),
    ]

    /// `tcp`, `udp`, `icmp`, `icmpv6`, `sctp` or the number.
    var commandName: String {
        Self.commandNames.first(where: { $0.proto == self })?.name ?? String(rawValue)
    }
}

/// What happens to traffic a policy selects.
public enum PolicyAction: Sendable, Hashable {
    /// Outbound: encrypt with the outbound SA of this SPI. Inbound: accept only
    /// if it arrived through an inbound SA of this SPI.
    case protect(SecurityParameterIndex)
    /// Outbound: encrypt with this worker's SA of the reqid (RFC 9611 per-CPU
    /// SA), else the reqid's fallback SA, else drop and raise ACQUIRE.
    /// `perCPU` (`protect reqid N per-cpu`, outbound only): a worker that
    /// seals with the fallback raises ACQUIRE too, asking for its own SA (as
    /// Linux's `XFRM_POLICY_CPU_ACQUIRE`).
    /// Inbound: accept only if it arrived through an inbound SA of the reqid.
    case protectReqID(UInt32, perCPU: Bool = false)
    /// Forward in clear.
    case bypass
    /// Drop.
    case discard
}

extension PolicyAction {
    /// `protect reqid N per-cpu`.
    public var acquiresPerCPU: Bool {
        if case .protectReqID(_, perCPU: true) = self { return true }
        return false
    }
}

/// One security policy.
public struct PolicyConfig: Sendable, Hashable {
    public var id: PolicyID
    public var selector: PolicySelector
    /// Lower wins; equal priorities keep the order the policies were added in.
    public var priority: UInt32
    public var action: PolicyAction

    public init(id: PolicyID, selector: PolicySelector, priority: UInt32, action: PolicyAction) {
        self.id = id
        self.selector = selector
        self.priority = priority
        self.action = action
    }
}

/// How `sp del` names a policy.
public enum PolicyReference: Sendable, Hashable {
    /// `sp del id N`.
    case id(PolicyID)
    /// `sp del dir … src … dst … [proto …] [sport …] [dport …] priority N`:
    /// the exact selector and priority.
    case match(PolicySelector, priority: UInt32)
}
