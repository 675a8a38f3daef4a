import Packet

/// What an ICMP "fragmentation needed and DF set" (IPv4 type 3 code 4,
/// RFC 1191) or an ICMPv6 Packet Too Big (type 2, RFC 4443) says about an
/// ESP packet, plain or in UDP, that it quotes: the router's MTU and the
/// quoted packet's outer addresses, SPI and sequence number (its low 32
/// bits). RFC 4301 §8.2.1: the gateway maps such a message to the outbound
/// SA that sent the packet and records the path MTU there.
public struct PathMTUReport: Equatable, Sendable {
    /// The MTU of the link the quoted packet did not fit (the router's).
    public var mtu: UInt32
    public var spi: UInt32
    public var sequence: UInt32
    /// The quoted packet's source (the gateway's) and destination (the peer's).
    public var source: RawIPAddress
    public var destination: RawIPAddress
    /// The quoted packet is ESP in UDP (RFC 3948).
    public var udp: Bool

    public init(mtu: UInt32, spi: UInt32, sequence: UInt32, source: RawIPAddress, destination: RawIPAddress, udp: Bool) {
        self.mtu = mtu
        self.spi = spi
        self.sequence = sequence
        self.source = source
        self.destination = destination
        self.udp = udp
    }

    /// Reads the IP packet in `packet` (its header at `start`). nil for
    /// anything but a whole, correctly checksummed ICMP message of that kind
    /// quoting the ESP header (SPI and sequence number) of an unfragmented
    /// packet or a first fragment of the same IP version as the message.
    public init?(_ packet: PacketView) {
        let p = UnsafeRawPointer(packet.start)
        guard packet.length >= HeaderSize.ipv4 else { return nil }
        let ipv4 = p.loadByte(at: 0) >> 4 == 4
        let m: UnsafeRawPointer  // the ICMP message
        let length: Int
        if ipv4 {
            guard let (headerLength, total) = IPParse.ipv4DatagramLength(p, available: packet.length),
                  p.loadByte(at: IPv4Field.protocol) == IPProtocol.icmp.rawValue,
                  p.loadBE16(at: IPv4Field.flagsFragment) & (IPv4Field.moreFragments | IPv4Field.fragmentOffsetMask) == 0
            else { return nil }
            m = p + headerLength
            length = total &- headerLength
            guard length >= 8, m.loadByte(at: 0) == 3, m.loadByte(at: 1) == 4,
                  InternetChecksum.checksum(UnsafeRawBufferPointer(start: m, count: length)) == 0 else { return nil }
            mtu = UInt32(m.loadBE16(at: 6))
        } else {
            guard packet.length >= HeaderSize.ipv6, let total = IPParse.ipv6DatagramLength(p, available: packet.length),
                  let (upper, fragment) = IPParse.ipv6UpperLayerPastFirstFragment(p, length: total),
                  fragment == 0, upper.proto == IPProtocol.icmpv6.rawValue else { return nil }
            m = p + upper.offset
            length = total &- upper.offset
            guard length >= 8, m.loadByte(at: 0) == 2, m.loadByte(at: 1) == 0,
                  IPParse.transportChecksum(ipHeader: p, ipv6: true, segment: m, length: length,
                                            protocol: IPProtocol.icmpv6.rawValue) == 0 else { return nil }
            mtu = m.loadBE32(at: 4)
        }
        guard let quoted = Self.quotedESP(m + 8, length: length &- 8, ipv4: ipv4) else { return nil }
        (spi, sequence, source, destination, udp) = quoted
    }

    /// The ESP header of the packet an ICMP error quotes (at `q`, from its IP
    /// header on, as much of it as the error carries: `length` bytes).
    private static func quotedESP(_ q: UnsafeRawPointer, length: Int, ipv4: Bool)
        -> (spi: UInt32, sequence: UInt32, source: RawIPAddress, destination: RawIPAddress, udp: Bool)? {
        var proto: UInt8
        var offset: Int
        let source: RawIPAddress, destination: RawIPAddress
        if ipv4 {
            let versionIHL = length >= HeaderSize.ipv4 ? q.loadByte(at: 0) : 0
            guard versionIHL >> 4 == 4, versionIHL & 0x0F >= 5,
                  q.loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.fragmentOffsetMask == 0 else { return nil }
            offset = Int(versionIHL & 0x0F) &<< 2
            proto = q.loadByte(at: IPv4Field.protocol)
            source = RawIPAddress.loadIPv4(q, at: IPv4Field.source)
            destination = RawIPAddress.loadIPv4(q, at: IPv4Field.destination)
        } else {
            guard length >= HeaderSize.ipv6, q.loadByte(at: 0) >> 4 == 6 else { return nil }
            offset = HeaderSize.ipv6
            proto = q.loadByte(at: IPv6Field.nextHeader)
            source = RawIPAddress.loadIPv6(q, at: IPv6Field.source)
            destination = RawIPAddress.loadIPv6(q, at: IPv6Field.destination)
            // A first fragment's Fragment header (the gateway cuts some ESP packets).
            if proto == 44 {
                guard length >= offset &+ 8, q.loadBE16(at: offset &+ 2) & 0xFFF8 == 0 else { return nil }
                proto = q.loadByte(at: offset)
                offset &+= 8
            }
        }
        let udp = proto == IPProtocol.udp.rawValue
        guard proto == IPProtocol.esp.rawValue || udp else { return nil }
        if udp { offset &+= HeaderSize.udp }
        guard length >= offset &+ 8 else { return nil }
        let spi = q.loadBE32(at: offset)
        guard spi != 0 else { return nil }  // ESP in UDP: the non-ESP marker (IKE)
        return (spi, q.loadBE32(at: offset &+ 4), source, destination, udp)
    }
}
