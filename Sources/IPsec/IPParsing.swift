// Small, bounds-checked IP header parsing shared by the ESP paths and the
// traffic selectors: the datagram length an IP header claims, the IPv6
// extension-header walk, and a flat address value for SA lookups. Nothing
// here allocates or traps; malformed input gives nil.

import Packet

/// An IPv4 or IPv6 address as plain integers, for lookups on the fast path
/// (`IPAddress` is the control plane's form). IPv4 sits in the low 32 bits of
/// `low` with `high` zero.
public struct RawIPAddress: Hashable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var high: UInt64
    public var low: UInt64
    public var isIPv6: Bool

    @inlinable public init(ipv4 value: UInt32) { high = 0; low = UInt64(value); isIPv6 = false }
    @inlinable public init(ipv6High high: UInt64, low: UInt64) { self.high = high; self.low = low; isIPv6 = true }

    public init(_ address: IPAddress) {
        switch address {
        case .v4(let a): self.init(ipv4: a.value)
        case .v6(let a): self.init(ipv6High: a.high, low: a.low)
        }
    }
    public init(_ address: IPv4Address) { self.init(ipv4: address.value) }
    public init(_ address: IPv6Address) { self.init(ipv6High: address.high, low: address.low) }

    /// The control plane's form.
    public var ipAddress: IPAddress {
        isIPv6 ? .v6(IPv6Address(high: high, low: low)) : .v4(IPv4Address(UInt32(truncatingIfNeeded: low)))
    }

    public var description: String { ipAddress.description }

    /// Written out (the derived one is an opaque call from other modules:
    /// the inbound SA lookup compares two addresses per packet).
    @inlinable @inline(__always)
    public static func == (a: RawIPAddress, b: RawIPAddress) -> Bool {
        a.low == b.low && a.high == b.high && a.isIPv6 == b.isIPv6
    }

    /// The IPv4 source (`at` 12) or destination (16) of the header at `p`.
    @inlinable @inline(__always)
    static func loadIPv4(_ p: UnsafeRawPointer, at offset: Int) -> RawIPAddress {
        RawIPAddress(ipv4: p.loadBE32(at: offset))
    }

    /// The IPv6 source (`at` 8) or destination (24) of the header at `p`.
    @inlinable @inline(__always)
    static func loadIPv6(_ p: UnsafeRawPointer, at offset: Int) -> RawIPAddress {
        RawIPAddress(ipv6High: p.loadBE64(at: offset), low: p.loadBE64(at: offset &+ 8))
    }
}

/// Where the upper-layer header of an IPv6 packet starts.
@usableFromInline
struct IPv6UpperLayer: BitwiseCopyable {
    /// Offset of the byte that names `proto` (6 for the fixed header, else
    /// the Next Header byte of the last extension header walked).
    @usableFromInline var protocolFieldOffset: Int
    /// The protocol that follows; 44 when a fragment header stops the walk.
    @usableFromInline var proto: UInt8
    /// Offset of that header.
    @usableFromInline var offset: Int
    /// A Routing header (43) with Segments Left > 0 was among those walked:
    /// the packet has not reached its final destination, and what follows
    /// the header is not for the node its Destination names now (RFC 8200
    /// §4.4). With none, that Destination is the final one.
    @usableFromInline var enRoute: Bool

    @inlinable init(protocolFieldOffset: Int, proto: UInt8, offset: Int, enRoute: Bool) {
        self.protocolFieldOffset = protocolFieldOffset
        self.proto = proto
        self.offset = offset
        self.enRoute = enRoute
    }
}

/// The protocol after the IPv6 header at `p` and its extension headers, and
/// its offset, past a first fragment's Fragment header
/// (`IPParse.ipv6UpperLayerPastFirstFragment`; a later fragment gives 44,
/// its Fragment header). nil when a header runs past `length` or the chain
/// is too long.
@inlinable
public func ipv6UpperLayerProtocol(_ p: UnsafeRawPointer, length: Int) -> (proto: UInt8, offset: Int)? {
    IPParse.ipv6UpperLayerPastFirstFragment(p, length: length).map { ($0.upper.proto, $0.upper.offset) }
}

/// IP header helpers.
@usableFromInline
enum IPParse {
    /// Extension headers walked before the upper layer: Hop-by-Hop (0, first
    /// only), Routing (43), Destination Options (60). A Fragment header (44)
    /// stops the walk (the caller decides); anything else is the upper layer.
    /// At most this many are walked; more is treated as malformed.
    @inlinable static var maximumExtensionHeaders: Int { 8 }

    /// Walks the extension headers of the IPv6 packet at `p`, whose first
    /// `length` bytes (≥ 40) are readable. nil when a header runs past `length`.
    @inlinable
    static func ipv6UpperLayer(_ p: UnsafeRawPointer, length: Int) -> IPv6UpperLayer? {
        walkExtensionHeaders(p, length: length, from: IPv6Field.nextHeader, at: HeaderSize.ipv6, walked: 0, enRoute: false)
    }

    /// As `ipv6UpperLayer`, and on past the Fragment header of a first (or
    /// atomic) fragment, offset 0: extension headers may follow it (the
    /// final Destination Options, RFC 8200 §4.1), and the first fragment
    /// holds the whole chain (RFC 7112), so the upper layer, its ports and
    /// ESP lie beyond them (RFC 4301 §4.4.1.1: extension headers are skipped
    /// to find the next layer protocol). `fragment` is the offset of that
    /// Fragment header, 0 when none. A later fragment's walk stops at its
    /// Fragment header (44), as does a second one. nil when a header,
    /// the Fragment header included, runs past `length`.
    @inlinable @inline(__always)
    static func ipv6UpperLayerPastFirstFragment(_ p: UnsafeRawPointer,
                                                length: Int) -> (upper: IPv6UpperLayer, fragment: Int)? {
        guard let upper = ipv6UpperLayer(p, length: length) else { return nil }
        guard upper.proto == 44 else { return (upper, 0) }
        guard length &- upper.offset >= 8 else { return nil }
        guard p.loadBE16(at: upper.offset &+ 2) & 0xFFF8 == 0 else { return (upper, upper.offset) }
        // The Fragment header counts as one walked (no Hop-by-Hop after it).
        guard let past = walkExtensionHeaders(p, length: length, from: upper.offset, at: upper.offset &+ 8, walked: 1,
                                              enRoute: upper.enRoute) else { return nil }
        return (past, upper.offset)
    }

    /// The walk of `ipv6UpperLayer` from the Next Header byte at `fieldOffset`
    /// naming the header at `offset`, `walked` headers walked before it.
    @inlinable @inline(__always)
    static func walkExtensionHeaders(_ p: UnsafeRawPointer, length: Int, from fieldOffset: Int, at offset: Int,
                                     walked: Int, enRoute: Bool) -> IPv6UpperLayer? {
        var fieldOffset = fieldOffset
        var proto = p.loadByte(at: fieldOffset)
        var offset = offset
        var walked = walked
        var enRoute = enRoute
        while proto == 0 && walked == 0 || proto == 43 || proto == 60 {
            guard walked < maximumExtensionHeaders, length &- offset >= 8 else { return nil }
            // Segments Left: byte 3 of a Routing header.
            enRoute = enRoute || proto == 43 && p.loadByte(at: offset &+ 3) != 0
            // (Hdr Ext Len + 1) · 8 bytes, ≤ 2048: offset stays far from overflow.
            let headerLength = (Int(p.loadByte(at: offset &+ 1)) &+ 1) &* 8
            guard length &- offset >= headerLength else { return nil }
            fieldOffset = offset
            proto = p.loadByte(at: offset)
            offset &+= headerLength
            walked &+= 1
        }
        return IPv6UpperLayer(protocolFieldOffset: fieldOffset, proto: proto, offset: offset, enRoute: enRoute)
    }

    /// The offset of the address the IPv6 packet at `p` is finally for, which
    /// the upper layer's pseudo-header takes (RFC 8200 §8.1): its Destination
    /// field, unless a Routing header still has segments left; then, at the
    /// originating node, the last of that header's addresses (types 0 and 2)
    /// or the first of a Segment Routing Header's list, which lists them in
    /// reverse (type 4, RFC 8754 §2). nil for a Routing header of another type
    /// with segments left (its addresses are compressed: not known here).
    /// Walks the extension headers within the first `headersLength` bytes.
    @inlinable
    static func finalDestinationOffset(_ p: UnsafeRawPointer, headersLength: Int) -> Int? {
        var proto = p.loadByte(at: IPv6Field.nextHeader)
        var offset = HeaderSize.ipv6
        var walked = 0
        var final = IPv6Field.destination
        while (proto == 0 && walked == 0 || proto == 43 || proto == 60) && walked < maximumExtensionHeaders
            && headersLength &- offset >= 8 {
            let headerLength = (Int(p.loadByte(at: offset &+ 1)) &+ 1) &* 8
            guard headersLength &- offset >= headerLength else { break }
            if proto == 43 && p.loadByte(at: offset &+ 3) != 0 {
                let addresses = (headerLength &- 8) / 16
                guard addresses >= 1 else { return nil }
                switch p.loadByte(at: offset &+ 2) {
                case 0, 2: final = offset &+ 8 &+ (addresses &- 1) &* 16
                case 4: final = offset &+ 8
                default: return nil
                }
            }
            proto = p.loadByte(at: offset)
            offset &+= headerLength
            walked &+= 1
        }
        return final
    }

    /// Stores the checksum of the `length`-byte TCP, UDP or ICMPv6 segment at
    /// `segment` (its checksum field at `field`) over the pseudo-header of the
    /// IPv4 or IPv6 header at `ipHeader`: its source and destination (IPv6:
    /// the address at `destinationAt`, the final one), the segment length and
    /// `proto` (RFC 768, RFC 9293 §3.1, RFC 8200 §8.1). A UDP checksum that
    /// computes to 0 is sent as 0xFFFF.
    @inlinable
    static func storeTransportChecksum(ipHeader: UnsafeRawPointer, ipv6: Bool, segment: UnsafeMutableRawPointer,
                                       length: Int, protocol proto: UInt8, field: Int,
                                       destinationAt: Int = IPv6Field.destination) {
        segment.storeBE16(0, at: field)
        let checksum = transportChecksum(ipHeader: ipHeader, ipv6: ipv6, segment: segment, length: length, protocol: proto,
                                         destinationAt: destinationAt)
        segment.storeBE16(proto == IPProtocol.udp.rawValue ? InternetChecksum.udpFieldValue(checksum) : checksum,
                          at: field)
    }

    /// The checksum of the `length` bytes at `segment` under the
    /// pseudo-header of the IP header at `ipHeader` (as `storeTransportChecksum`
    /// takes it), with the segment's checksum field as it stands: 0 when
    /// that field holds a correct checksum.
    @inlinable
    static func transportChecksum(ipHeader: UnsafeRawPointer, ipv6: Bool, segment: UnsafeRawPointer, length: Int,
                                  protocol proto: UInt8, destinationAt: Int = IPv6Field.destination) -> UInt16 {
        let bytes = UnsafeRawBufferPointer(start: segment, count: length)
        if ipv6 {
            let source = IPv6Address(high: ipHeader.loadBE64(at: IPv6Field.source),
                                     low: ipHeader.loadBE64(at: IPv6Field.source &+ 8))
            let destination = IPv6Address(high: ipHeader.loadBE64(at: destinationAt),
                                          low: ipHeader.loadBE64(at: destinationAt &+ 8))
            return InternetChecksum.transport(bytes, source: source, destination: destination, protocol: IPProtocol(proto))
        }
        return InternetChecksum.transport(bytes, source: IPv4Address(ipHeader.loadBE32(at: IPv4Field.source)),
                                          destination: IPv4Address(ipHeader.loadBE32(at: IPv4Field.destination)),
                                          protocol: IPProtocol(proto))
    }

    /// The length an IPv4 header at `p` claims for its datagram, when it is
    /// consistent with `available` readable bytes (≥ 20 checked by the caller):
    /// IHL ≥ 5, total length ≥ the header and ≤ `available`. nil otherwise.
    @inlinable @inline(__always)
    static func ipv4DatagramLength(_ p: UnsafeRawPointer, available: Int) -> (headerLength: Int, length: Int)? {
        let versionIHL = p.loadByte(at: IPv4Field.versionIHL)
        let headerLength = Int(versionIHL & 0x0F) &<< 2
        let total = Int(p.loadBE16(at: IPv4Field.totalLength))
        guard versionIHL >> 4 == 4, headerLength >= HeaderSize.ipv4, total >= headerLength, total <= available else {
            return nil
        }
        return (headerLength, total)
    }

    /// The length an IPv6 header at `p` claims (40 + payload length), when
    /// it is ≤ `available` (≥ 40 checked by the caller). Jumbograms (payload
    /// length 0 with a jumbo option) are not supported: a zero payload length
    /// means a bare header.
    @inlinable @inline(__always)
    static func ipv6DatagramLength(_ p: UnsafeRawPointer, available: Int) -> Int? {
        guard p.loadByte(at: 0) >> 4 == 6 else { return nil }
        let total = HeaderSize.ipv6 &+ Int(p.loadBE16(at: IPv6Field.payloadLength))
        return total <= available ? total : nil
    }

    /// The checksum field value for an IPv4 header of `headerLength` bytes
    /// (20…60) at `p`; the current field is ignored.
    @inlinable @inline(__always)
    static func ipv4HeaderChecksum(_ p: UnsafeMutableRawPointer, headerLength: Int) -> UInt16 {
        if headerLength == HeaderSize.ipv4 { return InternetChecksum.ipv4Header(p) }
        p.storeBE16(0, at: IPv4Field.checksum)
        return InternetChecksum.checksum(UnsafeRawBufferPointer(start: p, count: headerLength))
    }
}
