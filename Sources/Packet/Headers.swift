// Wire constants (EtherTypes, IP protocol numbers, header sizes and field
// offsets) and big-endian load/store helpers on raw pointers. Nothing here
// allocates; the helpers use unaligned loads because packet headers sit at
// arbitrary offsets (a VLAN tag moves the IP header by 4 bytes, IPv4 options
// move the transport header by any multiple of 4).

/// The 16-bit type field of an Ethernet header or VLAN tag, in host order.
public struct EtherType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt16
    @inlinable public init(rawValue: UInt16) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt16) { self.rawValue = rawValue }

    @inlinable public static var ipv4: EtherType { EtherType(0x0800) }
    @inlinable public static var arp: EtherType { EtherType(0x0806) }
    @inlinable public static var ipv6: EtherType { EtherType(0x86DD) }
    /// IEEE 802.1Q customer VLAN tag.
    @inlinable public static var vlan: EtherType { EtherType(0x8100) }
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    @inlinable public static var qinq: EtherType { EtherType(0x88A8) }

    /// True for the two tag protocol identifiers that introduce a VLAN tag.
    @inlinable public var isVLANTag: Bool { rawValue == 0x8100 || rawValue == 0x88A8 }

    public var description: String {
        let hex = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: 4 - hex.count) + hex
    }
}

/// An IP protocol number (IPv4 `protocol`, IPv6 `next header`).
public struct IPProtocol: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    @inlinable public init(rawValue: UInt8) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var icmp: IPProtocol { IPProtocol(1) }
    @inlinable public static var tcp: IPProtocol { IPProtocol(6) }
    @inlinable public static var udp: IPProtocol { IPProtocol(17) }
    /// IPv4-in-IP / IPv6-in-IP next-header values used by tunnel mode.
    @inlinable public static var ipInIP: IPProtocol { IPProtocol(4) }
    @inlinable public static var ipv6InIP: IPProtocol { IPProtocol(41) }
    @inlinable public static var esp: IPProtocol { IPProtocol(50) }
    @inlinable public static var ah: IPProtocol { IPProtocol(51) }
    @inlinable public static var icmpv6: IPProtocol { IPProtocol(58) }
    /// The IPv6 Fragment header (RFC 8200 §4.5).
    @inlinable public static var ipv6Fragment: IPProtocol { IPProtocol(44) }
    /// IPv6 "no next header".
    @inlinable public static var none: IPProtocol { IPProtocol(59) }

    public var description: String {
        switch rawValue {
        case 1: "icmp"
        case 6: "tcp"
        case 17: "udp"
        case 50: "esp"
        case 51: "ah"
        case 58: "icmpv6"
        default: String(rawValue)
        }
    }
}

/// The IP MTU of a port: the largest IP packet it sends.
public enum PortMTU {
    /// Ethernet's (RFC 894): a port no `mtu` was given for.
    public static let ethernet = 1500
    /// IPv4's minimum (RFC 791) to a common jumbo frame's payload.
    public static let accepted = 68...9216
    /// The least a link that carries IPv6 may have (RFC 8200 §5).
    public static let ipv6Minimum = 1280
}

/// The unicast reverse-path check of a port (`port N rpf M`; RFC 3704 §2.2
/// and §2.4): what the source of a packet arriving on the port must be.
public enum ReversePathFilter: String, Sendable, Hashable, CaseIterable {
    /// No check (the default).
    case off
    /// Routed somewhere (any port), and not one of the gateway's own addresses.
    case loose
    /// Routed out of the port the packet arrived on.
    case strict

    /// The code the data plane reads (`sl_fib.port_rpf`).
    public var code: UInt8 {
        switch self {
        case .off: 0
        case .loose: 1
        case .strict: 2
        }
    }
}

/// Fixed header sizes in bytes.
public enum HeaderSize {
    @inlinable public static var ethernet: Int { 14 }
    @inlinable public static var vlanTag: Int { 4 }
    @inlinable public static var ipv4: Int { 20 }
    /// IPv4 header with the largest options area (IHL 15).
    @inlinable public static var ipv4Maximum: Int { 60 }
    @inlinable public static var ipv6: Int { 40 }
    @inlinable public static var udp: Int { 8 }
    @inlinable public static var tcp: Int { 20 }
    /// ESP header: SPI and sequence number.
    @inlinable public static var esp: Int { 8 }
    /// The frame check sequence that the NIC appends; never part of an mbuf.
    @inlinable public static var ethernetFCS: Int { 4 }
}

/// Byte offsets of the fields the data path touches, from the start of the
/// header they belong to.
public enum IPv4Field {
    @inlinable public static var versionIHL: Int { 0 }
    @inlinable public static var tos: Int { 1 }
    @inlinable public static var totalLength: Int { 2 }
    @inlinable public static var identification: Int { 4 }
    @inlinable public static var flagsFragment: Int { 6 }
    @inlinable public static var ttl: Int { 8 }
    @inlinable public static var `protocol`: Int { 9 }
    @inlinable public static var checksum: Int { 10 }
    @inlinable public static var source: Int { 12 }
    @inlinable public static var destination: Int { 16 }
    /// The "don't fragment" bit in the flags/fragment-offset word.
    @inlinable public static var dontFragment: UInt16 { 0x4000 }
    @inlinable public static var moreFragments: UInt16 { 0x2000 }
    @inlinable public static var fragmentOffsetMask: UInt16 { 0x1FFF }
}

public enum IPv6Field {
    @inlinable public static var versionClassFlow: Int { 0 }
    @inlinable public static var payloadLength: Int { 4 }
    @inlinable public static var nextHeader: Int { 6 }
    @inlinable public static var hopLimit: Int { 7 }
    @inlinable public static var source: Int { 8 }
    @inlinable public static var destination: Int { 24 }
}

public enum UDPField {
    @inlinable public static var sourcePort: Int { 0 }
    @inlinable public static var destinationPort: Int { 2 }
    @inlinable public static var length: Int { 4 }
    @inlinable public static var checksum: Int { 6 }
}

public enum TCPField {
    @inlinable public static var sourcePort: Int { 0 }
    @inlinable public static var destinationPort: Int { 2 }
    @inlinable public static var sequence: Int { 4 }
    @inlinable public static var acknowledgment: Int { 8 }
    @inlinable public static var dataOffsetFlags: Int { 12 }
    @inlinable public static var window: Int { 14 }
    @inlinable public static var checksum: Int { 16 }
    @inlinable public static var urgentPointer: Int { 18 }
}

// MARK: - Big-endian access

extension UnsafeRawPointer {
    @inlinable @inline(__always)
    public func loadBE16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inlinable @inline(__always)
    public func loadBE32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inlinable @inline(__always)
    public func loadBE64(at offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
    @inlinable @inline(__always)
    public func loadByte(at offset: Int) -> UInt8 {
        load(fromByteOffset: offset, as: UInt8.self)
    }
}

extension UnsafeMutableRawPointer {
    @inlinable @inline(__always)
    public func loadBE16(at offset: Int) -> UInt16 {
        UInt16(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt16.self))
    }
    @inlinable @inline(__always)
    public func loadBE32(at offset: Int) -> UInt32 {
        UInt32(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt32.self))
    }
    @inlinable @inline(__always)
    public func loadBE64(at offset: Int) -> UInt64 {
        UInt64(bigEndian: loadUnaligned(fromByteOffset: offset, as: UInt64.self))
    }
    @inlinable @inline(__always)
    public func loadByte(at offset: Int) -> UInt8 {
        load(fromByteOffset: offset, as: UInt8.self)
    }

    // `storeBytes(of:toByteOffset:as:)` has had no alignment requirement
    // since Swift 5.7 (SE-0349), so these are unaligned stores.
    @inlinable @inline(__always)
    public func storeBE16(_ value: UInt16, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt16.self)
    }
    @inlinable @inline(__always)
    public func storeBE32(_ value: UInt32, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt32.self)
    }
    @inlinable @inline(__always)
    public func storeBE64(_ value: UInt64, at offset: Int) {
        storeBytes(of: value.bigEndian, toByteOffset: offset, as: UInt64.self)
    }
    @inlinable @inline(__always)
    public func storeByte(_ value: UInt8, at offset: Int) {
        storeBytes(of: value, toByteOffset: offset, as: UInt8.self)
    }
}
