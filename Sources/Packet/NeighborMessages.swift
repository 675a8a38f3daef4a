// ARP (RFC 826) over Ethernet for IPv4, and IPv6 Neighbor Discovery's
// solicitation and advertisement (RFC 4861 §4.3, §4.4): parsed from and
// built into whole Ethernet frames, for the neighbour agent and its tests.

/// ICMPv6 types and option numbers of Neighbor Discovery (RFC 4861).
public enum NeighborDiscovery {
    public static let solicitation: UInt8 = 135
    public static let advertisement: UInt8 = 136
    /// Option types: the sender's and the target's link-layer address.
    public static let sourceLinkLayer: UInt8 = 1
    public static let targetLinkLayer: UInt8 = 2
    /// The advertisement's flags (first byte after the checksum): router, solicited, override.
    public static let router: UInt8 = 0x80
    public static let solicited: UInt8 = 0x40
    public static let override: UInt8 = 0x20
}

extension MACAddress {
    public static let broadcast = MACAddress((0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF))
    public init(array a: ArraySlice<UInt8>) {
        let i = a.startIndex
        self.init((a[i], a[i + 1], a[i + 2], a[i + 3], a[i + 4], a[i + 5]))
    }
    /// 33:33 and the low 32 bits of an IPv6 multicast group (RFC 2464 §7).
    public init(multicast group: IPv6Address) {
        let g = group.low
        self.init((0x33, 0x33, UInt8(truncatingIfNeeded: g >> 24), UInt8(truncatingIfNeeded: g >> 16),
                   UInt8(truncatingIfNeeded: g >> 8), UInt8(truncatingIfNeeded: g)))
    }
}

extension IPv6Address {
    /// ff02::1:ffXX:XXXX, the solicited-node group of this address (RFC 4291 §2.7.1).
    public var solicitedNode: IPv6Address {
        IPv6Address(high: 0xFF02_0000_0000_0000, low: 0x0000_0001_FF00_0000 | (low & 0x00FF_FFFF))
    }
    public static let allNodes = IPv6Address(high: 0xFF02_0000_0000_0000, low: 1)
    public var isMulticast: Bool { high >> 56 == 0xFF }
    public var isUnspecified: Bool { high == 0 && low == 0 }
}

/// An ARP packet for IPv4 over Ethernet.
public struct ARPMessage: Hashable, Sendable {
    public static let request: UInt16 = 1
    public static let reply: UInt16 = 2
    public var operation: UInt16
    public var senderMAC: MACAddress
    public var senderIP: IPv4Address
    public var targetMAC: MACAddress
    public var targetIP: IPv4Address

    public init(operation: UInt16, senderMAC: MACAddress, senderIP: IPv4Address, targetMAC: MACAddress, targetIP: IPv4Address) {
        self.operation = operation
        self.senderMAC = senderMAC
        self.senderIP = senderIP
        self.targetMAC = targetMAC
        self.targetIP = targetIP
    }

    /// The ARP packet of an untagged Ethernet frame: Ethernet hardware
    /// (1, length 6), IPv4 protocol (0x0800, length 4), request or reply.
    /// nil for anything else.
    public init?(frame: [UInt8]) {
        guard frame.count >= 14 + 28, frame.be16(12) == 0x0806, frame.be16(14) == 1, frame.be16(16) == 0x0800,
              frame[18] == 6, frame[19] == 4 else { return nil }
        let op = frame.be16(20)
        guard op == Self.request || op == Self.reply else { return nil }
        operation = op
        senderMAC = MACAddress(array: frame[22..<28])
        senderIP = IPv4Address(frame.be32(28))
        targetMAC = MACAddress(array: frame[32..<38])
        targetIP = IPv4Address(frame.be32(38))
    }

    /// The Ethernet frame carrying this packet from `source` to `destination`.
    public func frame(from source: MACAddress, to destination: MACAddress) -> [UInt8] {
        var f = destination.array + source.array + [0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4]
        f += [UInt8(operation >> 8), UInt8(truncatingIfNeeded: operation)]
        f += senderMAC.array + senderIP.bytes + targetMAC.array + targetIP.bytes
        return f
    }
}

/// A Neighbor Solicitation or Advertisement in an untagged Ethernet frame.
public struct NDMessage: Hashable, Sendable {
    /// `NeighborDiscovery.solicitation` or `.advertisement`.
    public var type: UInt8
    public var ethernetSource: MACAddress
    public var source: IPv6Address
    public var destination: IPv6Address
    /// The advertisement's R/S/O flags (`NeighborDiscovery.router`…); 0 in a solicitation.
    public var flags: UInt8
    public var target: IPv6Address
    /// The source (solicitation) or target (advertisement) link-layer address option.
    public var linkLayer: MACAddress?

    public init(type: UInt8, ethernetSource: MACAddress, source: IPv6Address, destination: IPv6Address, flags: UInt8 = 0,
                target: IPv6Address, linkLayer: MACAddress?) {
        self.type = type
        self.ethernetSource = ethernetSource
        self.source = source
        self.destination = destination
        self.flags = flags
        self.target = target
        self.linkLayer = linkLayer
    }

    /// Parses and validates (RFC 4861 §7.1.1, §7.1.2): IPv6 with ICMPv6 right
    /// after the fixed header, hop limit 255, code 0, a correct checksum, at
    /// least 24 bytes, a target that is not multicast, options of nonzero
    /// length within the message; a solicitation from `::` goes to a
    /// solicited-node group and has no source link-layer option; an
    /// advertisement to a multicast group is not solicited. nil otherwise.
    public init?(frame: [UInt8]) {
        guard frame.count >= 14 + 40 + 24, frame.be16(12) == 0x86DD, frame[14] >> 4 == 6, frame[20] == 58, frame[21] == 255
        else { return nil }
        let length = Int(frame.be16(18))
        guard length >= 24, 14 + 40 + length <= frame.count else { return nil }
        let icmp = Array(frame[54..<(54 + length)])
        let type = icmp[0]
        guard type == NeighborDiscovery.solicitation || type == NeighborDiscovery.advertisement, icmp[1] == 0 else { return nil }
        let source = IPv6Address(bytes: Array(frame[22..<38]))
        let destination = IPv6Address(bytes: Array(frame[38..<54]))
        let sum = icmp.withUnsafeBytes {
            InternetChecksum.transport($0, source: source, destination: destination, protocol: .icmpv6)
        }
        guard sum == 0 else { return nil }
        let target = IPv6Address(bytes: Array(icmp[8..<24]))
        guard !target.isMulticast else { return nil }
        var linkLayer: MACAddress? = nil
        var at = 24
        let wanted = type == NeighborDiscovery.solicitation ? NeighborDiscovery.sourceLinkLayer : NeighborDiscovery.targetLinkLayer
        while at < icmp.count {
            guard at + 2 <= icmp.count, icmp[at + 1] != 0, at + Int(icmp[at + 1]) * 8 <= icmp.count else { return nil }
            if icmp[at] == wanted && icmp[at + 1] == 1 { linkLayer = MACAddress(array: icmp[(at + 2)..<(at + 8)]) }
            at += Int(icmp[at + 1]) * 8
        }
        if type == NeighborDiscovery.solicitation && source.isUnspecified {
            guard destination.isMulticast && destination == target.solicitedNode && linkLayer == nil else { return nil }
        }
        if type == NeighborDiscovery.advertisement && destination.isMulticast && icmp[4] & NeighborDiscovery.solicited != 0 {
            return nil
        }
        self.type = type
        ethernetSource = MACAddress(array: frame[6..<12])
        self.source = source
        self.destination = destination
        flags = type == NeighborDiscovery.advertisement ? icmp[4] & 0xE0 : 0
        self.target = target
        self.linkLayer = linkLayer
    }

    /// The Ethernet frame to `destinationMAC` (hop limit 255, checksum set).
    public func frame(to destinationMAC: MACAddress) -> [UInt8] {
        var icmp: [UInt8] = [type, 0, 0, 0, flags, 0, 0, 0] + target.bytes
        if let linkLayer {
            let option = type == NeighborDiscovery.solicitation ? NeighborDiscovery.sourceLinkLayer : NeighborDiscovery.targetLinkLayer
            icmp += [option, 1] + linkLayer.array
        }
        let sum = icmp.withUnsafeBytes {
            InternetChecksum.transport($0, source: source, destination: destination, protocol: .icmpv6)
        }
        icmp[2] = UInt8(sum >> 8)
        icmp[3] = UInt8(truncatingIfNeeded: sum)
        var f = destinationMAC.array + ethernetSource.array + [0x86, 0xDD, 0x60, 0, 0, 0]
        f += [UInt8(icmp.count >> 8), UInt8(truncatingIfNeeded: icmp.count), 58, 255]
        return f + source.bytes + destination.bytes + icmp
    }
}

extension Array where Element == UInt8 {
    @inlinable func be16(_ at: Int) -> UInt16 { UInt16(self[at]) << 8 | UInt16(self[at + 1]) }
    @inlinable func be32(_ at: Int) -> UInt32 { UInt32(be16(at)) << 16 | UInt32(be16(at + 2)) }
}
