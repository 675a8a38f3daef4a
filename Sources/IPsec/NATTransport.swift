// NAT traversal in transport mode (RFC 3948 §3.1.2): the checksum of the
// TCP or UDP segment inside the ESP payload was computed by the peer over a
// pseudo-header with the addresses it knew. A NAT between the peers rewrote
// the IP header (that header is the ESP packet's own in transport mode) but
// could not reach the encrypted checksum, so after decapsulation the segment's
// checksum no longer matches its header and the host it is forwarded to would
// drop it.
//
// The RFC's first way needs the original addresses from IKE (NAT-OA) for an
// incremental update; its second zeroes a UDP checksum. This gateway does
// neither: it recomputes the checksum over the segment as decapsulated. That
// needs no NAT-OA in the configuration, is right whichever side (or both)
// was translated and for IPv6 (where a zero UDP checksum is not allowed),
// and costs nothing on an SA that is not UDP-encapsulated transport mode.
// The ICV has already authenticated every byte of the segment, so nothing the
// peer sent is lost by replacing the checksum; only the addresses change.
//
// What is fixed: TCP (RFC 9293), UDP (RFC 768; over IPv4 a zero checksum,
// "none", stays zero) and ICMPv6 (RFC 4443, which has a pseudo-header too).
// Not touched: ICMP over IPv4 and other protocols (no pseudo-header; DCCP
// and UDP-Lite have one, and are not fixed: a NAT breaks them), and
// so also an upper layer behind IPv6 Destination Options that travelled
// inside the ESP payload; a segment too short for its header (left for the
// receiver to reject). An IPv6 packet with a Routing header is decapsulated
// only once its Segments Left is 0 (`ESPInbound.classify`), when its
// Destination is the final one that the pseudo-header takes (RFC 8200 §8.1).

import Packet

@usableFromInline
enum NATTransport {
    /// Recomputes the upper-layer checksum of the transport-mode packet in
    /// `packet` (IP header of `headerLength` bytes, then the `nextHeader`
    /// segment), after decapsulation of UDP-encapsulated ESP. Out of line: it
    /// runs only for such SAs.
    @usableFromInline @inline(never)
    static func fixChecksum(_ packet: PacketView, headerLength: Int, nextHeader: UInt8) {
        let ip = packet.start
        let segment = ip + headerLength
        let length = packet.length &- headerLength
        let ipv6 = ip.loadByte(at: 0) >> 4 == 6
        let field: Int
        var covered = length
        switch nextHeader {
        case IPProtocol.tcp.rawValue:
            guard length >= HeaderSize.tcp else { return }
            field = TCPField.checksum
        case IPProtocol.udp.rawValue:
            guard length >= HeaderSize.udp else { return }
            if !ipv6 && segment.loadBE16(at: UDPField.checksum) == 0 { return }  // sent without a checksum
            field = UDPField.checksum
            // Over the datagram its UDP Length gives, as the host checks it:
            // TFC padding may follow it (RFC 4303 §2.7), and stays.
            let udpLength = Int(segment.loadBE16(at: UDPField.length))
            if udpLength >= HeaderSize.udp && udpLength < length { covered = udpLength }
        case IPProtocol.icmpv6.rawValue where ipv6:
            guard length >= 4 else { return }
            field = 2
        default:
            return
        }
        IPParse.storeTransportChecksum(ipHeader: ip, ipv6: ipv6, segment: segment, length: covered, protocol: nextHeader,
                                       field: field)
    }
}
