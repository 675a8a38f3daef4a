// The per-SA record the inbound ESP path reads, and what identifies an
// inbound SA (RFC 4301 §4.1, §4.4.2: SPI, plus the destination and source
// address where the SA names them).
//
// The SA's traffic selectors (what IKE negotiated; RFC 4301 §5.2 step 4
// checks every decrypted packet against them) are kept inline, up to
// `InboundSA.maximumSelectors`, so the record has no references and reading
// it per packet costs no ARC traffic. An SA with no selectors accepts any
// inner packet (the control plane decides whether to install such an SA).

import Crypto
import Packet

/// Up to four traffic selectors, inline.
public struct SelectorList: Hashable, Sendable, BitwiseCopyable {
    /// How many selectors fit.
    public static let capacity = 4

    @usableFromInline let storage: (TrafficSelector, TrafficSelector, TrafficSelector, TrafficSelector)
    @usableFromInline let _count: UInt8

    /// nil when there are more than `capacity`.
    public init?(_ selectors: [TrafficSelector]) {
        guard selectors.count <= Self.capacity else { return nil }
        let filler = TrafficSelector.any(ipv6: false)
        func at(_ i: Int) -> TrafficSelector { i < selectors.count ? selectors[i] : filler }
        storage = (at(0), at(1), at(2), at(3))
        _count = UInt8(selectors.count)
    }

    @inlinable public var count: Int { Int(_count) }
    @inlinable public var isEmpty: Bool { _count == 0 }

    /// The selectors, in order (control plane).
    public var selectors: [TrafficSelector] {
        Array([storage.0, storage.1, storage.2, storage.3].prefix(count))
    }

    public static func == (a: Self, b: Self) -> Bool { a.selectors == b.selectors }
    public func hash(into hasher: inout Hasher) { hasher.combine(selectors) }

    /// True when `fields` matches any selector of the list at `list`, or
    /// when it is empty. The list is read in place: a selector's fields are
    /// loaded only when it is tried. Always inlined (`@_transparent`): a list
    /// passed by value, even inlined, has all four selectors loaded (~50
    /// loads per packet) before the first is tried.
    @_transparent
    public static func matches(_ list: UnsafePointer<SelectorList>, _ fields: SelectorFields) -> Bool {
        let n = list.pointee._count
        if n == 0 { return true }
        if list.pointee.storage.0.matches(fields) { return true }
        if n > 1 && list.pointee.storage.1.matches(fields) { return true }
        if n > 2 && list.pointee.storage.2.matches(fields) { return true }
        if n > 3 && list.pointee.storage.3.matches(fields) { return true }
        return false
    }
}

/// What an inbound `protect` policy names: an SPI or a reqid, as one word
/// (the kind in the high half; 0 for none). The inbound SPD's verdicts carry
/// it, and the traffic an SA is assigned is that whose first match names
/// its SPI or its reqid (RFC 4301 §5.2: `InboundSA.isAssigned`), however
/// many policies do.
public struct ProtectTarget: Hashable, Sendable, BitwiseCopyable {
    public let raw: UInt64
    @inlinable init(raw: UInt64) { self.raw = raw }
    public static let none = ProtectTarget(raw: 0)
    public static func spi(_ spi: UInt32) -> Self { Self(raw: 1 << 32 | UInt64(spi)) }
    public static func reqid(_ reqid: UInt32) -> Self { Self(raw: 2 << 32 | UInt64(reqid)) }
}

/// Set-up errors of an inbound SA.
public enum InboundSAError: Error, Hashable, Sendable, CustomStringConvertible {
    case tooManySelectors(Int)
    case addressFamiliesDiffer

    public var description: String {
        switch self {
        case .tooManySelectors(let n):
            "an inbound SA holds at most \(SelectorList.capacity) traffic selectors, not \(n)"
        case .addressFamiliesDiffer:
            "an SA's source and destination addresses must be of one family"
        }
    }
}

/// The inbound ESP parameters of one SA, precomputed at install time.
/// Trivially copyable (no references); the key handle must outlive it. Its
/// mutable state, the replay window, is kept beside it by the owning core.
public struct InboundSA {
    /// What the decrypted payload is.
    public enum Mode: UInt8, Hashable, Sendable, BitwiseCopyable {
        /// A whole inner IP packet; the outer header is removed.
        case tunnel
        /// The payload of the packet's own IP header, which is restored.
        case transport
    }

    public let spi: SPI
    public let mode: Mode
    public let key: AEADKeyHandle
    public let esn: Bool
    /// The outer source (the peer) and destination (this gateway) the SA is
    /// bound to; nil: any (an SA found by SPI alone).
    public let source: RawIPAddress?
    public let destination: RawIPAddress?
    @usableFromInline let udp: Bool
    @usableFromInline let udpSourcePort: UInt16
    @usableFromInline let udpDestinationPort: UInt16
    public let selectors: SelectorList
    /// What the inbound SPD's policies that protect with this SA name: its
    /// SPI, and its reqid where it has one (a gateway's SA, installed from
    /// its SPD; `.none` both for an SA without one). RFC 4301 §5.2 asks that
    /// what arrives on an SA be traffic the SPD assigns to it: the SPD's
    /// first match for the decapsulated packet must be a protect policy that
    /// names one of these. An earlier bypass, discard or other SA's policy
    /// that overlaps one of them takes precedence, which checking the
    /// policies' selectors alone would miss. The worker checks it against
    /// its SPD snapshot, since the SPD is not the SA's to hold; `ESPInbound`
    /// checks only `selectors`.
    public let spiTarget: ProtectTarget
    public let reqidTarget: ProtectTarget

    /// Whether the inbound SPD decides this SA's traffic (`spiTarget`).
    @inlinable public var checkedBySPD: Bool { spiTarget != .none }

    /// Whether a protect verdict naming `target` assigns the packet to this SA.
    @inlinable @inline(__always)
    public func isAssigned(_ target: ProtectTarget) -> Bool {
        target != .none && (target == spiTarget || target == reqidTarget)
    }

    /// `udpEncapsulation`: the ports of RFC 3948 UDP encapsulation (the peer's
    /// source port, this gateway's destination port), nil for plain ESP. Only
    /// the destination port is enforced: a NAT may change the source port
    /// (the IKE daemon follows such changes; the data path does not refuse them).
    public init(spi: SPI, mode: Mode, key: AEADKeyHandle, esn: Bool, source: IPAddress? = nil,
                destination: IPAddress? = nil, udpEncapsulation: (source: UInt16, destination: UInt16)? = nil,
                selectors: [TrafficSelector] = [], checkedBySPD: Bool = false, reqid: UInt32? = nil) throws(InboundSAError) {
        guard let list = SelectorList(selectors) else { throw .tooManySelectors(selectors.count) }
        spiTarget = checkedBySPD ? .spi(spi.rawValue) : .none
        reqidTarget = checkedBySPD ? reqid.map(ProtectTarget.reqid) ?? .none : .none
        if let source, let destination, source.isIPv4 != destination.isIPv4 { throw .addressFamiliesDiffer }
        self.spi = spi
        self.mode = mode
        self.key = key
        self.esn = esn
        self.source = source.map(RawIPAddress.init)
        self.destination = destination.map(RawIPAddress.init)
        udp = udpEncapsulation != nil
        udpSourcePort = udpEncapsulation?.source ?? 0
        udpDestinationPort = udpEncapsulation?.destination ?? 0
        self.selectors = list
    }

    public var udpEncapsulation: (source: UInt16, destination: UInt16)? {
        udp ? (udpSourcePort, udpDestinationPort) : nil
    }

    /// Whether this SA is the one for `header`: same SPI, and the outer
    /// destination and source equal to the SA's where it names them. An SAD
    /// prefers the SA that names the most (RFC 4301 §4.4.2: SPI + destination
    /// + source, then SPI + destination, then SPI alone).
    @inlinable @inline(__always)
    public func matches(_ header: ESPInboundHeader) -> Bool {
        guard header.spi == spi else { return false }
        if let destination, destination != header.destination { return false }
        if let source, source != header.source { return false }
        return true
    }
}
