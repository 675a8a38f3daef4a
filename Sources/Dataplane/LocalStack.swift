import CShims
import Packet

// The local network stack (`port N punt M`). Sluice answers nothing itself:
// ARP, Neighbor Discovery, IKE, ping or SSH to the gateway's own addresses
// belong to a stack beside it, typically the kernel's behind a TAP device
// (`--vdev net_tap0,iface=…,mac=<port N's MAC>`), which is DPDK port M.
// What would be dropped because it is the gateway's own goes there instead,
// as it arrived (the frame untouched): frames that are not IPv4 or IPv6;
// link-scoped IP (an IPv6 link-local source or ff02::/16 destination, IPv4
// to 255.255.255.255 or 224.0.0.0/24), which is never forwarded; IP
// addressed to one of the gateway's addresses (a `local` route) once the
// path's own rules let it through (the inbound SPD, for instance, must
// bypass IKE to it); IKE on the NAT-traversal port (the non-ESP marker).
// What the stack sends on port M leaves by port N as it is, past the SPD: it
// is the gateway's own traffic. Decapsulated packets for the gateway stay
// `local` drops (their frame is gone). All of this costs the ports without a
// stack nothing per packet, and the others one load and branch per burst.

/// Stamps a burst's mbufs with the port they arrived on (`m.port`, which the
/// punt decisions read: not every PMD sets it, net_ring does not).
@inline(never)
func stampArrivalPort(_ rx: UnsafeMutablePointer<OpaquePointer?>, count n: Int, port: UInt16) {
    var i = 0
    while i < n { sl_mbuf_set_port(rx[i]!, port); i &+= 1 }
}

/// Whether the IP packet at `ip` is link-scoped: an IPv6 link-local source
/// (fe80::/10) or link-local multicast destination (ff02::/16: Neighbor
/// Discovery, MLD); IPv4 to the limited broadcast or 224.0.0.0/24 (DHCP,
/// VRRP, OSPF). Such a packet is for the stack of the link it came on.
@inline(__always)
func linkScoped(_ ip: UnsafePointer<UInt8>, ipv4: Bool) -> Bool {
    let p = UnsafeRawPointer(ip)
    if ipv4 {
        let d = p.loadBE32(at: IPv4Field.destination)
        return d == 0xFFFF_FFFF || d & 0xFFFF_FF00 == 0xE000_0000
    }
    return p.loadBE16(at: IPv6Field.source) & 0xFFC0 == 0xFE80 || p.loadBE16(at: IPv6Field.destination) == 0xFF02
        || neighborDiscovery(p)
}

/// Whether the IPv6 packet at `p` is Neighbor Discovery's solicitation or
/// advertisement (ICMPv6 right after the header, hop limit 255, RFC 4861
/// §7.1): link-scoped whatever its addresses, as only a sender on the link
/// can give that hop limit. Reads the ICMPv6 type only when the payload
/// length leaves room for one.
@inline(__always)
func neighborDiscovery(_ p: UnsafeRawPointer) -> Bool {
    guard p.loadBE16(at: IPv6Field.nextHeader) == UInt16(IPProtocol.icmpv6.rawValue) << 8 | 255,
          p.loadBE16(at: IPv6Field.payloadLength) >= 24 else { return false }
    let type = p.load(fromByteOffset: HeaderSize.ipv6, as: UInt8.self)
    return type == NeighborDiscovery.solicitation || type == NeighborDiscovery.advertisement
}

/// Hands `m`, as it arrived, to the local stack of its arrival port (true),
/// or does nothing when that port has none (false: the caller drops it).
/// On a port with `resolve on`, ARP and Neighbor Discovery go to the
/// neighbour agent (a copy, where the port also has a stack).
@inline(never)
func puntToStack(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, fib: UnsafeMutablePointer<sl_fib>,
                 drops: UnsafeMutablePointer<UInt64>) -> Bool {
    let arrival = sl_mbuf_port(m)
    let target = sl_fib_port_punt(fib, arrival)
    // ARP and Neighbor Discovery of a resolving port: the neighbour agent's
    // (NeighborHandoff.swift), and also the stack's where there is one.
    if _slowPath(sl_fib_port_resolve(fib, arrival) != 0) && offerToAgent(w, m, stack: target != 0) { return true }
    guard target != 0 else { return false }
    // Straight into the worker's buffer for the stack's port: no TxCursor is
    // ever open on it (nothing is routed to a stack's port).
    let port = UInt16(target &- 1)
    let q = sl_worker_txq(w, port)!
    sl_txq_pkts(q)![Int(q.pointee.count)] = m
    q.pointee.count &+= 1
    w.pointee.counters.punted &+= 1
    if Int(q.pointee.count) >= Int(SL_BURST) { flushTx(w, port: port, drops: drops) }
    return true
}

/// `puntToStack` for an IP packet (header at `ip`) that would be dropped as
/// `local` or `martian`, or answered as TTL-exceeded: taken when it is
/// addressed to the gateway (`hopKind` local) or link-scoped, and its frame
/// is the one that arrived (the IP header 14 bytes, or 18 with a VLAN tag,
/// into the mbuf's data). `decremented`: the caller took one off its TTL or
/// hop limit (given back first: the stack receives what arrived).
@inline(never)
func puntLocal(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, ip: UnsafeMutablePointer<UInt8>, ipv4: Bool,
               hopKind: Int, decremented: Bool, fib: UnsafeMutablePointer<sl_fib>,
               drops: UnsafeMutablePointer<UInt64>) -> Bool {
    let arrival = sl_mbuf_port(m)
    guard sl_fib_port_local(fib, arrival), hopKind == SL_NH_LOCAL || linkScoped(ip, ipv4: ipv4) else {
        return false
    }
    // A port with the neighbour agent but no stack takes only ARP and ND:
    // anything else stays the caller's, its TTL as the caller left it.
    guard sl_fib_port_punt(fib, arrival) != 0 || isNeighborFrame(m) else { return false }
    let offset = UnsafeMutableRawPointer(ip) - UnsafeMutableRawPointer(sl_mbuf_data(m)!)
    guard offset == HeaderSize.ethernet || offset == HeaderSize.ethernet &+ HeaderSize.vlanTag else { return false }
    if decremented {
        if ipv4 {
            let old = UnsafeRawPointer(ip).loadBE16(at: IPv4Field.ttl)  // TTL and protocol
            let new = old &+ 0x100
            let header = UnsafeMutableRawPointer(ip)
            header.storeBE16(InternetChecksum.update(header.loadBE16(at: IPv4Field.checksum), old: old, new: new),
                             at: IPv4Field.checksum)
            header.storeBE16(new, at: IPv4Field.ttl)
        } else {
            ip[IPv6Field.hopLimit] &+= 1
        }
    }
    return puntToStack(w, m, fib: fib, drops: drops)
}

/// A burst the local stack sent on its port: every frame leaves by the port
/// it serves (`uplink`), as it is.
@inline(never)
func relayFromStack(_ w: UnsafeMutablePointer<sl_worker>, count n: Int, uplink: UInt16,
                    drops: UnsafeMutablePointer<UInt64>) {
    let rx = sl_worker_rx(w)!
    var tx = TxCursor()
    defer { tx.close() }
    countBurst(w, n)
    var bytes: UInt64 = 0
    var i = 0
    while i < n {
        let m = rx[i]!
        bytes &+= UInt64(sl_mbuf_pkt_len(m))
        tx.push(w, m, port: uplink, drops: drops)
        i &+= 1
    }
    w.pointee.counters.rx_bytes &+= bytes
    w.pointee.counters.from_stack &+= UInt64(n)
}
