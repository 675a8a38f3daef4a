import IPsec

/// Every reason the data plane drops a packet, declared once. The raw value
/// indexes the per-core `drops` counter array (`SL_DROP_REASON_MAX` slots):
/// the forwarding and policy reasons first, then one per `ESPDrop`.
public struct DropReason: RawRepresentable, Hashable, Sendable, CaseIterable, CustomStringConvertible {
    public let rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// Frame or IP header truncated or inconsistent (lengths, version, IHL).
    public static let malformed = DropReason(rawValue: 0)
    /// IPv4 header checksum wrong (verified in software when the port does not).
    public static let badChecksum = DropReason(rawValue: 1)
    /// Neither IPv4 nor IPv6 (ARP, LLDP, double VLAN …): the data plane does not handle it.
    public static let unsupportedEthertype = DropReason(rawValue: 2)
    /// No route for the destination.
    public static let noRoute = DropReason(rawValue: 3)
    /// A route exists but its next hop has no neighbour (MAC) entry.
    public static let noNeighbor = DropReason(rawValue: 4)
    /// TTL or hop limit would reach zero: an ICMP Time Exceeded went back to
    /// its source where one is due (ICMPErrors.swift).
    public static let ttlExceeded = DropReason(rawValue: 5)
    /// Addressed to the gateway itself; Sluice has no local stack.
    public static let local = DropReason(rawValue: 6)
    /// The TX queue did not take the packet.
    public static let txFull = DropReason(rawValue: 7)
    /// The SPD said discard, or no policy matched (RFC 4301: discard).
    public static let policyDiscard = DropReason(rawValue: 8)
    /// A plaintext packet on the unprotected side matched a PROTECT policy.
    public static let plaintextProtected = DropReason(rawValue: 9)
    /// A PROTECT policy whose SA is not installed (yet).
    public static let noOutboundSA = DropReason(rawValue: 10)
    /// A packet spread over several mbufs where IPsec needs one.
    public static let segmented = DropReason(rawValue: 11)
    /// To an address no router forwards: IPv4 0/8, 127/8, multicast, limited
    /// broadcast; IPv6 unspecified, loopback, link-local, multicast.
    public static let martian = DropReason(rawValue: 12)
    /// The SA reached a hard lifetime (bytes or packets); it is being removed.
    public static let lifetimeExpired = DropReason(rawValue: 13)
    /// An inbound SA's owner worker had no room for a packet handed to it.
    public static let handoffFull = DropReason(rawValue: 14)
    /// A handed-over packet whose SA has moved to another owner meanwhile
    /// (a new snapshot): dropped rather than handed on again.
    public static let handoffStale = DropReason(rawValue: 15)
    /// From an address no router forwards from (RFC 1812 §5.3.7, RFC 4291
    /// §2.5.6): the martian destinations as sources (IPv4 0/8, 127/8,
    /// multicast, limited broadcast; IPv6 unspecified, loopback, link-local,
    /// multicast). Checked on every packet received, and on every inner
    /// packet an SA opened.
    public static let martianSource = DropReason(rawValue: 16)
    /// Larger than the MTU of the port it would leave by, and IPv6 or IPv4
    /// with DF set: an ICMP error went back to its source where one is due
    /// (ICMPErrors.swift).
    public static let packetTooBig = DropReason(rawValue: 17)
    /// Larger than the MTU of the port it would leave by, without DF, and
    /// not to be fragmented: an IPv4 packet an SA with `df set` would seal
    /// (its ESP packet may not be fragmented, and its sender, not asking
    /// for DF, does not expect an error). Other IPv4 packets without DF
    /// leave in fragments (Fragmentation.swift).
    public static let mtuExceeded = DropReason(rawValue: 18)
    /// Fragments addressed to the gateway that reassembly gave up: their
    /// datagram timed out, overlapped or repeated itself, had more than
    /// `SL_REASM_MAX_FRAGS` pieces, or found the worker's table full
    /// (Reassembly.swift). Counted when freed, one per fragment.
    public static let reassemblyFailed = DropReason(rawValue: 19)
    /// A reassembled datagram larger than one packet buffer (one per datagram).
    public static let reassemblyTooBig = DropReason(rawValue: 20)
    /// A fragment addressed to the gateway that cannot be part of a datagram:
    /// no data, a piece other than the last not a multiple of 8 bytes, an end
    /// past 65,535 bytes, or (IPv6) a header in front of the Fragment header.
    public static let badFragment = DropReason(rawValue: 21)
    /// A datagram to be sent in fragments that could not be: no packet
    /// buffer left for a piece, more than `maxFragmentsOut` pieces, a piece
    /// larger than a buffer, or a fragment whose data would end past 65,535
    /// bytes (Fragmentation.swift). One per datagram.
    public static let fragmentationFailed = DropReason(rawValue: 22)
    /// Arrived on a port with a reverse-path check (`port N rpf loose|strict`,
    /// RFC 3704) from a source that fails it: one with no route, or
    /// (strict) one not routed out of the port it came in by. (One of the
    /// gateway's own addresses is `ownSource`, checked first.)
    public static let reversePath = DropReason(rawValue: 23)
    /// From one of the gateway's own addresses (a `local` route), whether
    /// it arrived on a port or came out of an SA: spoofed, or the gateway's
    /// own packet come back (a loop). Checked on every port, with or
    /// without a reverse-path check, as a host drops a "martian" source
    /// that is its own.
    public static let ownSource = DropReason(rawValue: 24)
    /// An inbound ESP packet for an SA whose replay window is being handed
    /// to this worker by its previous owner (an SA change moved the owner,
    /// `sa update … cpu N`, or rebuilt the window under the same key): for
    /// about one loop of the previous owner, longer only if it is stalled.
    /// Two workers never use one window at once.
    public static let saMoving = DropReason(rawValue: 25)
    /// A packet whose ports are unknown (a later fragment: its ports are in
    /// the first, RFC 4301 §7) whose first matching policy is bypass, while
    /// a protect or discard policy ranked before it names ports and matches
    /// its addresses and protocol: its datagram may be traffic that policy
    /// protects (or drops), so it does not pass in the clear, either way.
    public static let fragmentPortsUnknown = DropReason(rawValue: 26)

    static let baseNames = ["malformed", "bad_checksum", "unsupported_ethertype", "no_route", "no_neighbor",
                            "ttl_exceeded", "local", "tx_full", "policy_discard", "plaintext_protected",
                            "no_outbound_sa", "segmented", "martian", "lifetime_expired",
                            "handoff_full", "handoff_stale", "martian_source", "packet_too_big", "mtu_exceeded",
                            "reassembly_failed", "reassembly_too_big", "bad_fragment", "fragmentation_failed", "reverse_path",
                            "own_source", "sa_moving", "fragment_ports_unknown"]
    @usableFromInline static let espBase = 27

    /// The counter of an ESP failure.
    @inlinable public static func esp(_ d: ESPDrop) -> DropReason { DropReason(rawValue: espBase &+ Int(d.rawValue)) }

    public static let allCases: [DropReason] =
        (0..<baseNames.count).map { DropReason(rawValue: $0) } + ESPDrop.allCases.map { esp($0) }

    /// The name printed in counters and used by tests and the control socket.
    public var name: String {
        if rawValue < Self.espBase { return Self.baseNames[rawValue] }
        return ESPDrop(rawValue: UInt8(rawValue - Self.espBase)).map { "esp_" + $0.name } ?? "reason_\(rawValue)"
    }
    public var description: String { name }
}
