import CShims
import IPsec
import Packet

// Packets too big for the port they leave by (its IP MTU, `port N mtu M`).
// A router does not send them anyway: the next link would lose them without a
// word. Path MTU discovery (RFC 1191, RFC 8201) needs the sender told:
//
// * IPv4 with DF set: ICMP Destination Unreachable, "fragmentation needed and
//   DF set" (type 3 code 4, RFC 792), with the next-hop MTU (RFC 1191 §4);
// * IPv6: ICMPv6 Packet Too Big (type 2, RFC 4443 §3.2) with the MTU;
// * IPv4 without DF is fragmented instead (Fragmentation.swift), except a
//   packet an SA with `df set` would seal: its ESP packet may not be cut,
//   and its sender did not ask for an error. Dropped as `mtu_exceeded`.
//
// For a packet about to be sealed, the MTU reported is the largest inner
// packet whose ESP packet fits (the tunnel's own overhead taken off), so the
// sender's next try goes through.
//
// The error is built in place over the offending packet's buffer: its IP
// header and as much of it as fits (RFC 1812 §4.3.2.3: up to 576 bytes in
// all; RFC 4443 §2.4: up to 1280), behind a new IP and ICMP header, from the
// address of the port the error leaves by, to the packet's source. It is
// rate-limited per core (a token bucket, `icmpErrorsPerSecond`, bursts of
// `icmpErrorBurst`), never sent about an ICMP error or a fragment other than
// the first (RFC 1812 §4.3.2.7, RFC 4443 §2.4), and, on the IPsec paths,
// only back out of a protected port: an error for a host on the unprotected
// side would have to be sent through the tunnel it came from. Plaintext that
// an inbound bypass policy let in came from a host on that side, not through
// a tunnel: the error about it goes back there where the outbound SPD
// bypasses the error itself (RFC 4301 §6.2).
//
// Every such packet is counted once, as `packet_too_big` (an error was sent
// or not) or `mtu_exceeded`. Off the fast path: one compare per packet there.
//
// A packet that arrives with TTL or hop limit 1 or 0 is answered the same
// way, with Time Exceeded (`timeExceeded`, counted as `ttl_exceeded`).

let icmpErrorsPerSecond: UInt64 = 1000
let icmpErrorBurst: UInt32 = 50

/// Handles an IP packet (header at `ip`) that is `length` bytes (its
/// datagram length, per its header) and too big for `mtu`: drops it, and
/// turns it into the ICMP error described above where one is due. `report`
/// is the MTU the error announces. `protectedOnly`: send the error only out
/// of a protected port; `bypassed` as for `sendICMPError`. Always takes the
/// packet.
@inline(never)
func packetTooBig(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, ip: UnsafeMutablePointer<UInt8>, length: Int,
                  report: Int, fib: UnsafeMutablePointer<sl_fib>, hops: UnsafeMutablePointer<sl_nexthop>,
                  protectedOnly: Bool, bypassed: IPsecTables? = nil, tx: inout TxCursor,
                  drops: UnsafeMutablePointer<UInt64>) {
    let ipv4 = ip[0] >> 4 == 4
    if ipv4 && UnsafeRawPointer(ip).loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.dontFragment == 0 {
        drop(m, .mtuExceeded, drops)
        return
    }
    drops[DropReason.packetTooBig.rawValue] &+= 1
    sendICMPError(w, m, ip: ip, length: length, ICMPError(tooBig: report, ipv4: ipv4), fib: fib, hops: hops,
                  protectedOnly: protectedOnly, bypassed: bypassed, tx: &tx, drops: drops)
}

/// Handles an IP packet (header at `ip`, `length` bytes) that arrived with
/// a TTL or hop limit of 1 or 0: drops it as `ttl_exceeded`, and, when its
/// destination is routed through a neighbour (it would have been
/// forwarded), answers with ICMP Time Exceeded (RFC 792, type 11 code 0;
/// RFC 4443 §3.3, type 3 code 0), what traceroute relies on (RFC 1812
/// §5.3.1), under the same rules as the errors above. Always takes the
/// packet.
@inline(never)
func timeExceeded(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, ip: UnsafeMutablePointer<UInt8>, length: Int,
                  fib: UnsafeMutablePointer<sl_fib>, hops: UnsafeMutablePointer<sl_nexthop>, protectedOnly: Bool,
                  bypassed: IPsecTables? = nil, tx: inout TxCursor, drops: UnsafeMutablePointer<UInt64>) {
    let ipv4 = ip[0] >> 4 == 4
    let kind = Int(hops[routeIndex(ip, ipv4: ipv4, fib: fib)].kind)
    // For the gateway itself (traceroute's last probe), or link-scoped (OSPF
    // sends TTL 1): delivered to the port's local stack where it has one.
    if kind != SL_NH_FORWARD && puntLocal(w, m, ip: ip, ipv4: ipv4, hopKind: kind, decremented: false, fib: fib, drops: drops) {
        return
    }
    drops[DropReason.ttlExceeded.rawValue] &+= 1
    // Only about a packet that would have been forwarded (RFC 1812 §5.3.1):
    // not one to the gateway itself, to a multicast or broadcast address
    // (martian routes, RFC 4443 §2.4), or to a subnet-directed broadcast.
    guard kind == SL_NH_FORWARD else { sl_mbuf_free(m); return }
    sendICMPError(w, m, ip: ip, length: length, ICMPError(timeExceededIPv4: ipv4), fib: fib, hops: hops,
                  protectedOnly: protectedOnly, bypassed: bypassed, tx: &tx, drops: drops)
}

/// The first 8 bytes of an ICMP or ICMPv6 error: type, code, and the rest
/// of the header (the checksum is added when the error is built).
struct ICMPError {
    var typeCode: UInt16
    var rest: UInt32

    /// Fragmentation needed and DF set (IPv4, the MTU in the low 16 bits,
    /// RFC 1191 §4), or Packet Too Big (IPv6, at least 1280).
    init(tooBig mtu: Int, ipv4: Bool) {
        typeCode = ipv4 ? 0x0304 : 0x0200
        rest = ipv4 ? UInt32(truncatingIfNeeded: min(mtu, 0xFFFF)) : UInt32(truncatingIfNeeded: max(mtu, PortMTU.ipv6Minimum))
    }

    /// Time Exceeded in transit.
    init(timeExceededIPv4 ipv4: Bool) {
        typeCode = ipv4 ? 0x0B00 : 0x0300
        rest = 0
    }
}

/// Turns the packet at `ip` (`length` bytes, already counted by the caller)
/// into `error` back to its source, where one may be sent (`mayAnswer`, a
/// forwarding route back, `protectedOnly`, the rate limit); otherwise frees
/// it. Never about a frame sent to a link-layer broadcast or multicast
/// address (RFC 1812 §4.3.2.7; the mbuf's data still starts at the frame
/// as received), nor about a packet in chained buffers (the error is built
/// in the first one). `bypassed`: the packet is plaintext that an inbound
/// bypass policy let in from the unprotected side, so its sender is there,
/// not behind a tunnel: the error may go back out of an unprotected port
/// as well, where the outbound SPD (`bypassed.outSPD`) bypasses the error
/// itself (RFC 4301 §6.2), even when `protectedOnly` is set.
@inline(never)
func sendICMPError(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, ip: UnsafeMutablePointer<UInt8>, length: Int,
                   _ error: ICMPError, fib: UnsafeMutablePointer<sl_fib>, hops: UnsafeMutablePointer<sl_nexthop>,
                   protectedOnly: Bool, bypassed: IPsecTables? = nil, tx: inout TxCursor,
                   drops: UnsafeMutablePointer<UInt64>) {
    let p = UnsafeMutableRawPointer(ip)
    let ipv4 = ip[0] >> 4 == 4
    guard sl_mbuf_nb_segs(m) == 1, sl_mbuf_data(m)![0] & 1 == 0, mayAnswer(p, length: length, ipv4: ipv4) else {
        sl_mbuf_free(m)
        return
    }
    // Back to the packet's source.
    let hop = hops + routeIndex(p, ipv4: ipv4, source: true, fib: fib)
    let port = hop.pointee.port
    guard Int(hop.pointee.kind) == SL_NH_FORWARD, Int(port) < Int(SL_MAX_PORTS) else { sl_mbuf_free(m); return }
    let toProtected = portRole(w, port) == PortRoleCode.protected.rawValue
    guard !protectedOnly || toProtected || bypassed != nil else { sl_mbuf_free(m); return }
    let egressMTU = Int(sl_fib_port_mtu(fib, port))
    let base = UnsafeMutableRawPointer(sl_mbuf_buf_addr(m)!)
    let view: PacketView
    if ipv4 {
        let source = sl_fib_port_addr4(fib, port)
        let header = HeaderSize.ipv4 &+ 8
        let quote = min(length, min(576, egressMTU) &- header)
        guard source != 0, p - base >= header &+ HeaderSize.ethernet else { sl_mbuf_free(m); return }
        let h = p - header
        let icmp = h + HeaderSize.ipv4
        icmp.storeBE32(UInt32(error.typeCode) << 16, at: 0)  // checksum 0
        icmp.storeBE32(error.rest, at: 4)
        icmp.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(start: icmp, count: 8 &+ quote)), at: 2)
        let destination = p.loadBE32(at: IPv4Field.source)
        h.storeBE32(0x45C0_0000 | UInt32(header &+ quote), at: 0)  // precedence "internetwork control"
        h.storeBE32(0, at: 4)                                       // id 0, no DF, offset 0
        h.storeBE32(0x4001_0000, at: 8)                             // TTL 64, ICMP, checksum 0
        h.storeBE32(source, at: IPv4Field.source)
        h.storeBE32(destination, at: IPv4Field.destination)
        h.storeBE16(InternetChecksum.ipv4Header(h), at: IPv4Field.checksum)
        view = ipView(m, ip: h, length: header &+ quote)
    } else {
        let a6 = sl_fib_port_addr6(fib, port)!
        let source = IPv6Address(high: UnsafeRawPointer(a6).loadBE64(at: 0), low: UnsafeRawPointer(a6).loadBE64(at: 8))
        let header = HeaderSize.ipv6 &+ 8
        let quote = min(length, min(PortMTU.ipv6Minimum, egressMTU) &- header)
        guard source.high | source.low != 0, p - base >= header &+ HeaderSize.ethernet else { sl_mbuf_free(m); return }
        let h = p - header
        let icmp = h + HeaderSize.ipv6
        let destination = IPv6Address(high: p.loadBE64(at: IPv6Field.source), low: p.loadBE64(at: IPv6Field.source &+ 8))
        icmp.storeBE32(UInt32(error.typeCode) << 16, at: 0)  // checksum 0
        icmp.storeBE32(error.rest, at: 4)
        let sum = InternetChecksum.transport(UnsafeRawBufferPointer(start: icmp, count: 8 &+ quote), source: source,
                                             destination: destination, protocol: .icmpv6)
        icmp.storeBE16(sum, at: 2)
        h.storeBE32(0x6000_0000, at: 0)
        h.storeBE16(UInt16(truncatingIfNeeded: 8 &+ quote), at: IPv6Field.payloadLength)
        h.storeByte(IPProtocol.icmpv6.rawValue, at: 6)
        h.storeByte(64, at: IPv6Field.hopLimit)
        h.storeBE64(source.high, at: IPv6Field.source)
        h.storeBE64(source.low, at: IPv6Field.source &+ 8)
        h.storeBE64(destination.high, at: IPv6Field.destination)
        h.storeBE64(destination.low, at: IPv6Field.destination &+ 8)
        view = ipView(m, ip: h, length: header &+ quote)
    }
    if let bypassed, !toProtected {
        guard let fields = SelectorFields(view), bypassed.outSPD.verdict(fields)?.action == .bypass else {
            sl_mbuf_free(m); return
        }
    }
    guard takeICMPToken(w) else { sl_mbuf_free(m); return }
    w.pointee.counters.icmp_errors &+= 1
    sendRebuilt(w, m, view, ipv4: ipv4, hop: hop, fib: fib, hops: hops, tx: &tx, drops: drops)
}

/// Whether an ICMP error may be sent about the packet at `p` (RFC 1812
/// §4.3.2.7, RFC 4443 §2.4): not about an ICMP error, nor about a fragment
/// other than the first. Its source was checked on arrival (never martian).
@inline(__always)
func mayAnswer(_ p: UnsafeMutableRawPointer, length: Int, ipv4: Bool) -> Bool {
    if ipv4 {
        guard p.loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.fragmentOffsetMask == 0 else { return false }
        let headerLength = Int(p.loadByte(at: IPv4Field.versionIHL) & 0x0F) &<< 2
        if p.loadByte(at: IPv4Field.protocol) == IPProtocol.icmp.rawValue {
            guard length > headerLength else { return false }
            // Only echo request and reply, router advertisement and
            // solicitation, timestamp, information and address mask messages
            // are queries; anything else is (or may be) an error.
            switch p.loadByte(at: headerLength) {
            case 0, 8, 9, 10, 13, 14, 15, 16, 17, 18: return true
            default: return false
            }
        }
        return true
    }
    // IPv6: past the extension headers (RFC 4443 §2.4 e), a first (or
    // atomic) fragment's too, and Destination Options after it. An error
    // whose chain cannot be read is not answered.
    // A later fragment stops the walk at its Fragment header (44): not answered.
    let q = UnsafeRawPointer(p)
    guard let (proto, offset) = ipv6UpperLayerProtocol(q, length: length), proto != 44 else { return false }
    // ICMPv6 types below 128 are errors.
    return proto != IPProtocol.icmpv6.rawValue || length > offset && q.loadByte(at: offset) >= 128
}

/// The role of `port` for this worker (`sl_worker.port_roles`).
@inline(__always)
func portRole(_ w: UnsafeMutablePointer<sl_worker>, _ port: UInt16) -> UInt8 {
    sl_worker_port_roles(w)![Int(port) & (Int(SL_MAX_PORTS) &- 1)]
}

/// Takes one token from this core's ICMP error bucket, refilled at
/// `icmpErrorsPerSecond` up to `icmpErrorBurst`; false, counted as
/// `icmp_limited`, when it is empty.
@inline(__always)
func takeICMPToken(_ w: UnsafeMutablePointer<sl_worker>) -> Bool {
    let now = sl_tsc()
    let interval = max(sl_tsc_hz() / icmpErrorsPerSecond, 1)
    let gained = (now &- w.pointee.icmp_refill_tsc) / interval
    if gained > 0 {
        w.pointee.icmp_tokens = UInt32(min(UInt64(w.pointee.icmp_tokens) &+ gained, UInt64(icmpErrorBurst)))
        w.pointee.icmp_refill_tsc = now
    }
    guard w.pointee.icmp_tokens > 0 else { w.pointee.counters.icmp_limited &+= 1; return false }
    w.pointee.icmp_tokens &-= 1
    return true
}
