import CShims
import Packet

// The data plane's side of the neighbour agent (`port N resolve on`). The
// agent runs on the control thread (Control's NeighborAgent): it resolves
// next hops with ARP and IPv6 Neighbor Discovery and answers both for the
// gateway's addresses. Workers only move mbufs: each hands it, through its
// own SP/SC ring, the ARP and Neighbor Solicitation/Advertisement frames of
// resolving ports (a copy where the port also has a local stack, which
// keeps the original), and the packets whose on-link next hop has no
// neighbour entry yet (held by the agent until the neighbour answers, then
// sent by it). What the agent sends comes back through one ring that the
// worker with queue 0 drains once per poll. Ports without `resolve on` never
// reach any of this.

/// Whether the frame in `m` is, untagged, ARP or an ICMPv6 Neighbor
/// Solicitation or Advertisement with hop limit 255 (RFC 4861 §7.1): the
/// agent's. VLAN-tagged frames are not (the agent's answers carry no tag).
@inline(never)
func isNeighborFrame(_ m: OpaquePointer) -> Bool {
    let data = UnsafeRawPointer(sl_mbuf_data(m)!)
    let len = Int(sl_mbuf_data_len(m))
    guard len >= HeaderSize.ethernet else { return false }
    let etherType = data.loadBE16(at: etherTypeOffset)
    if etherType == EtherType.arp.rawValue { return true }
    guard etherType == EtherType.ipv6.rawValue, len >= HeaderSize.ethernet &+ HeaderSize.ipv6 &+ 1 else { return false }
    return neighborDiscovery(data + HeaderSize.ethernet)
}

/// Gives `m` to the neighbour agent; false when this worker has no agent
/// ring or it is full (the caller still owns `m`).
@inline(__always)
func toAgent(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer) -> Bool {
    guard let ring = w.pointee.agent_rx else { return false }
    return sl_ring_enqueue_one_sp(ring, UnsafeMutableRawPointer(m))
}

/// For `puntToStack`: a neighbour frame of a resolving port goes to the
/// agent. Returns true when `m` itself went (the port has no local stack);
/// with a stack, the agent gets a copy and the stack the frame (false).
@inline(never)
func offerToAgent(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, stack: Bool) -> Bool {
    guard isNeighborFrame(m) else { return false }
    if !stack {
        guard toAgent(w, m) else { return false }
        w.pointee.counters.to_agent &+= 1
        return true
    }
    if let copy = sl_mbuf_copy(m), !toAgent(w, copy) { sl_mbuf_free(copy) }
    return false
}

/// A packet whose next hop is on the link of a resolving port and has no
/// neighbour entry yet: handed to the agent with its data window on the IP
/// packet at `ip` (its datagram length) and `m.port` the port it leaves by, marked
/// held; its TTL or hop limit is taken down first where `decrement` (the
/// caller checked it is above 1). false, `m` untouched, when the port does
/// not resolve or the agent's ring is full: the caller drops it (`no_neighbor`).
@inline(never)
func holdForNeighbor(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, ip: UnsafeMutableRawPointer, ipv4: Bool,
                     hop: UnsafeMutablePointer<sl_nexthop>, decrement: Bool, fib: UnsafeMutablePointer<sl_fib>) -> Bool {
    let port = hop.pointee.port
    guard Int(hop.pointee.flags) & Int(SL_NH_ON_LINK) != 0, sl_fib_port_resolve(fib, port) != 0,
          sl_mbuf_nb_segs(m) == 1, let ring = w.pointee.agent_rx,
          sl_ring_free_count(ring) > UInt32(agentFrameHeadroom), takeHoldToken(w) else { return false }
    if decrement { decrementNonzeroTTL(ip.assumingMemoryBound(to: UInt8.self), ipv4: ipv4) }
    let base = UnsafeMutableRawPointer(sl_mbuf_buf_addr(m)!)
    sl_mbuf_set_window(m, UInt16(truncatingIfNeeded: ip - base), UInt16(truncatingIfNeeded: datagramLength(ip, ipv4: ipv4)))
    sl_mbuf_set_port(m, port | UInt16(SL_AGENT_HELD))
    guard sl_ring_enqueue_one_sp(ring, UnsafeMutableRawPointer(m)) else { return false }
    w.pointee.counters.to_agent &+= 1
    return true
}

/// Ring slots kept for ARP and ND frames: held packets never take them, so a
/// flood towards an unresolved neighbour cannot crowd out its answer.
let agentFrameHeadroom = 64

/// Held packets a worker hands the agent at most: `agentHoldBurst` at once,
/// then one per `agentHoldPeriod` of the TSC (~10,000 a second).
let agentHoldBurst: UInt32 = 64
let agentHoldRate: UInt64 = 10_000

/// A token of the worker's held-packet bucket, or false when it is empty
/// (the packet is dropped `no_neighbor`, as without the agent).
@inline(__always)
func takeHoldToken(_ w: UnsafeMutablePointer<sl_worker>) -> Bool {
    if w.pointee.agent_tokens == 0 {
        let now = sl_tsc()
        let period = max(sl_tsc_hz() / agentHoldRate, 1)
        let earned = (now &- w.pointee.agent_refill_tsc) / period
        guard earned > 0 else { return false }
        w.pointee.agent_tokens = UInt32(min(earned, UInt64(agentHoldBurst)))
        w.pointee.agent_refill_tsc = now
    }
    w.pointee.agent_tokens &-= 1
    return true
}

/// The frames the agent sent (worker with queue 0): each leaves by the port
/// in its `m.port`.
@inline(never)
func sendAgentFrames(_ w: UnsafeMutablePointer<sl_worker>, ring: OpaquePointer, drops: UnsafeMutablePointer<UInt64>) {
    let rx = sl_worker_rx(w)!
    let n = Int(sl_ring_dequeue_burst(ring, UnsafeMutablePointer<UnsafeMutableRawPointer?>(OpaquePointer(rx)), UInt32(SL_BURST)))
    guard n > 0 else { return }
    w.pointee.counters.from_agent &+= UInt64(n)
    var tx = TxCursor()
    defer { tx.close() }
    var i = 0
    while i < n {
        let m = rx[i]!
        tx.push(w, m, port: sl_mbuf_port(m), drops: drops)
        i &+= 1
    }
}
