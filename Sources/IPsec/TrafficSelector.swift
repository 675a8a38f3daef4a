// Traffic selectors (RFC 4301 §4.4.1.1): source and destination prefix of
// one family, an optional upper-layer protocol and optional port ranges.
// Stored as masks and integers so that matching is a handful of compares;
// the packet is parsed once (`SelectorFields`) and can then be matched
// against any number of selectors.
//
// Matching rules:
//   * A selector matches only packets of its own address family.
//   * Ports: TCP, UDP, SCTP, UDP-Lite and DCCP carry ports. For ICMP and
//     ICMPv6 the type stands in the source port and the code in the
//     destination port (the Linux xfrm convention). A selector that names a
//     port range matches only packets whose ports are known: not a non-initial
//     fragment (RFC 4301 §7: those match only selectors with ANY ports), not a
//     protocol without ports, not a packet too short to hold them.
//   * IPv6: Hop-by-Hop, Routing and Destination Options headers are skipped to
//     find the upper layer; after a Fragment header the fragment's protocol is
//     the upper layer, with ports only in the first fragment.

import Packet

/// The fields of a packet that selectors look at, parsed once.
public struct SelectorFields: Hashable, Sendable, BitwiseCopyable {
    public var source: RawIPAddress
    public var destination: RawIPAddress
    /// The upper-layer protocol.
    public var proto: UInt8
    /// Source and destination port (ICMP: type and code); meaningful only
    /// when `hasPorts`.
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var hasPorts: Bool
    /// The interface the packet belongs to (an xfrm-style interface id); 0
    /// for none. Policies match it exactly.
    public var ifID: UInt32

    @inlinable
    public init(source: RawIPAddress, destination: RawIPAddress, proto: UInt8, sourcePort: UInt16 = 0,
                destinationPort: UInt16 = 0, hasPorts: Bool = false, ifID: UInt32 = 0) {
        self.source = source
        self.destination = destination
        self.proto = proto
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
        self.hasPorts = hasPorts
        self.ifID = ifID
    }

    /// Parses the IP packet in `packet`; nil when its IP header is malformed.
    /// Always inlined: returned through memory, its narrow fields would be
    /// read back with wide loads (a store-forwarding stall per packet).
    @inlinable @inline(__always)
    public init?(_ packet: PacketView) {
        let p = UnsafeRawPointer(packet.start)
        let available = packet.length
        guard available >= HeaderSize.ipv4 else { return nil }
        let version = p.loadByte(at: 0) >> 4
        let datagramLength: Int
        let l4: Int
        var portsPossible: Bool
        if version == 4 {
            guard let (headerLength, total) = IPParse.ipv4DatagramLength(p, available: available) else { return nil }
            datagramLength = total
            l4 = headerLength
            source = RawIPAddress.loadIPv4(p, at: IPv4Field.source)
            destination = RawIPAddress.loadIPv4(p, at: IPv4Field.destination)
            proto = p.loadByte(at: IPv4Field.protocol)
            portsPossible = p.loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.fragmentOffsetMask == 0
        } else if version == 6 {
            guard available >= HeaderSize.ipv6, let total = IPParse.ipv6DatagramLength(p, available: available),
                  let (upper, _) = IPParse.ipv6UpperLayerPastFirstFragment(p, length: total) else { return nil }
            datagramLength = total
            source = RawIPAddress.loadIPv6(p, at: IPv6Field.source)
            destination = RawIPAddress.loadIPv6(p, at: IPv6Field.destination)
            if upper.proto == 44 {
                // The Fragment header of a later fragment (or a second one):
                // next header, reserved, offset (13 bits) | flags. No ports.
                guard total &- upper.offset >= 8 else { return nil }
                proto = p.loadByte(at: upper.offset)
                portsPossible = p.loadBE16(at: upper.offset &+ 2) & 0xFFF8 == 0
                l4 = upper.offset &+ 8
            } else {
                proto = upper.proto
                portsPossible = true
                l4 = upper.offset
            }
        } else {
            return nil
        }
        sourcePort = 0
        destinationPort = 0
        hasPorts = false
        ifID = 0
        guard portsPossible else { return }
        let room = datagramLength &- l4
        switch proto {
        case 6, 17, 33, 132, 136:  // TCP, UDP, DCCP, SCTP, UDP-Lite
            guard room >= 4 else { return }
            sourcePort = p.loadBE16(at: l4)
            destinationPort = p.loadBE16(at: l4 &+ 2)
            hasPorts = true
        case 1, 58:  // ICMP, ICMPv6: type, code
            guard room >= 2 else { return }
            sourcePort = UInt16(p.loadByte(at: l4))
            destinationPort = UInt16(p.loadByte(at: l4 &+ 1))
            hasPorts = true
        default:
            return
        }
    }
}

/// A traffic selector of one address family.
public struct TrafficSelector: Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    @usableFromInline let isIPv6: Bool
    @usableFromInline let sourceHigh: UInt64
    @usableFromInline let sourceLow: UInt64
    @usableFromInline let sourceMaskHigh: UInt64
    @usableFromInline let sourceMaskLow: UInt64
    @usableFromInline let destinationHigh: UInt64
    @usableFromInline let destinationLow: UInt64
    @usableFromInline let destinationMaskHigh: UInt64
    @usableFromInline let destinationMaskLow: UInt64
    @usableFromInline let sourcePrefixLength: UInt8
    @usableFromInline let destinationPrefixLength: UInt8
    @usableFromInline let protocolValue: UInt8
    @usableFromInline let anyProtocol: Bool
    @usableFromInline let anySourcePort: Bool
    @usableFromInline let anyDestinationPort: Bool
    @usableFromInline let sourcePortLow: UInt16
    @usableFromInline let sourcePortHigh: UInt16
    @usableFromInline let destinationPortLow: UInt16
    @usableFromInline let destinationPortHigh: UInt16

    /// nil when the prefixes are of different families. Host bits in the
    /// prefixes are ignored. Port ranges: nil is ANY.
    public init?(source: IPPrefix, destination: IPPrefix, proto: IPProtocol? = nil,
                 sourcePorts: ClosedRange<UInt16>? = nil, destinationPorts: ClosedRange<UInt16>? = nil) {
        guard source.address.isIPv4 == destination.address.isIPv4 else { return nil }
        isIPv6 = !source.address.isIPv4
        (sourceHigh, sourceLow, sourceMaskHigh, sourceMaskLow) = Self.masked(source)
        (destinationHigh, destinationLow, destinationMaskHigh, destinationMaskLow) = Self.masked(destination)
        sourcePrefixLength = UInt8(source.length)
        destinationPrefixLength = UInt8(destination.length)
        protocolValue = proto?.rawValue ?? 0
        anyProtocol = proto == nil
        anySourcePort = sourcePorts == nil
        anyDestinationPort = destinationPorts == nil
        sourcePortLow = sourcePorts?.lowerBound ?? 0
        sourcePortHigh = sourcePorts?.upperBound ?? UInt16.max
        destinationPortLow = destinationPorts?.lowerBound ?? 0
        destinationPortHigh = destinationPorts?.upperBound ?? UInt16.max
    }

    /// Every packet of one family.
    public static func any(ipv6: Bool) -> TrafficSelector { ipv6 ? anyIPv6 : anyIPv4 }
    private static let anyIPv4 = TrafficSelector(source: IPPrefix("0.0.0.0/0")!, destination: IPPrefix("0.0.0.0/0")!)!
    private static let anyIPv6 = TrafficSelector(source: IPPrefix("::/0")!, destination: IPPrefix("::/0")!)!

    private static func masked(_ prefix: IPPrefix) -> (UInt64, UInt64, UInt64, UInt64) {
        let length = prefix.length
        switch prefix.address {
        case .v4(let a):
            let mask: UInt64 = length == 0 ? 0 : UInt64(~UInt32(0) << UInt32(32 - length))
            return (0, UInt64(a.value) & mask, 0, mask)
        case .v6(let a):
            let maskHigh: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << UInt64(64 - length))
            let maskLow: UInt64 = length <= 64 ? 0 : (length == 128 ? ~0 : ~UInt64(0) << UInt64(128 - length))
            return (a.high & maskHigh, a.low & maskLow, maskHigh, maskLow)
        }
    }

    public var source: IPPrefix {
        IPPrefix(address: RawIPAddress(high: sourceHigh, low: sourceLow, isIPv6: isIPv6).ipAddress,
                 length: Int(sourcePrefixLength))!
    }
    public var destination: IPPrefix {
        IPPrefix(address: RawIPAddress(high: destinationHigh, low: destinationLow, isIPv6: isIPv6).ipAddress,
                 length: Int(destinationPrefixLength))!
    }
    public var proto: IPProtocol? { anyProtocol ? nil : IPProtocol(protocolValue) }
    public var sourcePorts: ClosedRange<UInt16>? { anySourcePort ? nil : sourcePortLow...sourcePortHigh }
    public var destinationPorts: ClosedRange<UInt16>? {
        anyDestinationPort ? nil : destinationPortLow...destinationPortHigh
    }
    public var isIPv4: Bool { !isIPv6 }

    public var description: String {
        var text = "src \(source) dst \(destination)"
        if let proto { text += " proto \(proto)" }
        if let ports = sourcePorts { text += " sport \(ports.lowerBound)-\(ports.upperBound)" }
        if let ports = destinationPorts { text += " dport \(ports.lowerBound)-\(ports.upperBound)" }
        return text
    }

    /// Whether the parsed packet `fields` is traffic of this selector.
    @inlinable @inline(__always)
    public func matches(_ fields: SelectorFields) -> Bool {
        guard fields.source.isIPv6 == isIPv6,
              fields.source.high & sourceMaskHigh == sourceHigh, fields.source.low & sourceMaskLow == sourceLow,
              fields.destination.high & destinationMaskHigh == destinationHigh,
              fields.destination.low & destinationMaskLow == destinationLow,
              anyProtocol || fields.proto == protocolValue
        else { return false }
        if anySourcePort && anyDestinationPort { return true }
        guard fields.hasPorts else { return false }
        return (anySourcePort || (fields.sourcePort >= sourcePortLow && fields.sourcePort <= sourcePortHigh))
            && (anyDestinationPort
                || (fields.destinationPort >= destinationPortLow && fields.destinationPort <= destinationPortHigh))
    }

    /// Whether the selector names a port (or ICMP type or code) range.
    @inlinable public var namesPorts: Bool { !(anySourcePort && anyDestinationPort) }

    /// Parses the IP packet in `packet` and matches it; a malformed packet matches nothing.
    @inlinable
    public func matches(_ packet: PacketView) -> Bool {
        guard let fields = SelectorFields(packet) else { return false }
        return matches(fields)
    }
}

extension RawIPAddress {
    @inlinable public init(high: UInt64, low: UInt64, isIPv6: Bool) {
        self.high = high
        self.low = low
        self.isIPv6 = isIPv6
    }
}
