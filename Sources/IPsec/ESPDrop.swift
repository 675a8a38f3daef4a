// Every reason the ESP paths drop a packet, declared once with its counter
// name (VPP's drop-reason habit). The fast path returns one of these instead
// of throwing; the caller counts it per core and frees the packet.

/// Why an ESP encapsulation, classification or decapsulation refused a packet.
public enum ESPDrop: UInt8, CaseIterable, Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    /// Headers that do not parse: wrong IP version, a length field that
    /// disagrees with the bytes present, an inner packet that is not what the
    /// next header says, an inner IPv4 header whose checksum is wrong.
    case malformed
    /// Outbound: the SA has sent its last sequence number (2^32 − 1 without
    /// ESN, 2^64 − 1 with); it refuses every packet until it is rekeyed.
    case sequenceExhausted
    /// Outbound: not enough room in front of the packet for the new headers.
    case noHeadroom
    /// Outbound: not enough room after the packet for the trailer and ICV.
    case noTailroom
    /// Outbound: the ESP packet would be longer than an IP length field allows.
    case tooBig
    /// UDP-encapsulated: the non-ESP marker (four zero bytes: IKE on port 4500,
    /// RFC 3948 §2.2). Not for the data path.
    case notESP
    /// UDP-encapsulated: a NAT keepalive (one byte 0xFF, RFC 3948 §2.3); ignored.
    case natKeepalive
    /// An ESP packet that arrived in fragments (outer reassembly is not done
    /// here), or, outbound in transport mode, a fragment to protect (transport
    /// mode protects whole datagrams only, RFC 4303 §3.3.4).
    case fragmented
    /// No inbound SA for this SPI and these addresses.
    case noSA
    /// UDP-encapsulated ESP for an SA that expects plain ESP, plain ESP for an
    /// SA that expects UDP, or the wrong destination port.
    case encapsulationMismatch
    /// Anti-replay: this sequence number was received already.
    case replayed
    /// Anti-replay: left of the window (or, with ESN, a number whose inferred
    /// high half leaves the 64-bit space).
    case tooOld
    /// The ICV did not verify (RFC 4303 §3.4.4).
    case authenticationFailed
    /// Padding bytes are not 1, 2, 3, …, or Pad Length is longer than the payload.
    case badPadding
    /// The ESP packet is too short for header, IV, trailer and ICV, or its
    /// ciphertext does not end on a 4-byte boundary (RFC 4303 §2.4).
    case badLength
    /// Next Header 59: a dummy packet for traffic-flow confidentiality (RFC
    /// 4303 §2.6), dropped silently after it verified.
    case dummyPacket
    /// RFC 6040's decapsulation table says drop (outer CE over a Not-ECT inner).
    case ecnDrop
    /// The decrypted packet is not traffic this SA may carry (RFC 4301 §5.2).
    case selectorMismatch
    /// Tunnel mode: Next Header is not IPv4 (4) or IPv6 (41).
    case unsupportedNextHeader

    /// The counter name: snake_case.
    public var name: String {
        switch self {
        case .malformed: "malformed"
        case .sequenceExhausted: "sequence_exhausted"
        case .noHeadroom: "no_headroom"
        case .noTailroom: "no_tailroom"
        case .tooBig: "too_big"
        case .notESP: "not_esp"
        case .natKeepalive: "nat_keepalive"
        case .fragmented: "fragmented"
        case .noSA: "no_sa"
        case .encapsulationMismatch: "encapsulation_mismatch"
        case .replayed: "replayed"
        case .tooOld: "too_old"
        case .authenticationFailed: "authentication_failed"
        case .badPadding: "bad_padding"
        case .badLength: "bad_length"
        case .dummyPacket: "dummy_packet"
        case .ecnDrop: "ecn_drop"
        case .selectorMismatch: "selector_mismatch"
        case .unsupportedNextHeader: "unsupported_next_header"
        }
    }

    public var description: String { name }
}
