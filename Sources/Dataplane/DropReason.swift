/// Every reason the data plane drops a packet, declared once. The raw value
/// indexes the per-core `drops` counter array (`SL_DROP_REASON_MAX` slots).
public enum DropReason: Int, CaseIterable, Sendable {
    /// Frame or IP header truncated or inconsistent (lengths, version, IHL).
    case malformed = 0
    /// IPv4 header checksum wrong (verified in software when the port does not).
    case badChecksum
    /// Neither IPv4 nor IPv6 (ARP, LLDP, double VLAN …): the data plane does not handle it.
    case unsupportedEthertype
    /// No route for the destination.
    case noRoute
    /// A route exists but its next hop has no neighbour (MAC) entry.
    case noNeighbor
    /// TTL or hop limit would reach zero.
    case ttlExceeded
    /// Addressed to the gateway itself; Sluice has no local stack.
    case local
    /// The TX queue did not take the packet.
    case txFull

    /// The name printed in counters and used by tests and the control socket.
    public var name: String {
        switch self {
        case .malformed: "malformed"
        case .badChecksum: "bad_checksum"
        case .unsupportedEthertype: "unsupported_ethertype"
        case .noRoute: "no_route"
        case .noNeighbor: "no_neighbor"
        case .ttlExceeded: "ttl_exceeded"
        case .local: "local"
        case .txFull: "tx_full"
        }
    }
}
