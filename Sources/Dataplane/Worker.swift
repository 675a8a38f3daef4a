import CShims
import Packet

// The worker lcore: poll every port's queue of this core, forward, report
// quiescence. Per packet there is no allocation, no ARC traffic, no lock and
// no throw: a packet is either enqueued for TX or freed with one named drop
// counter incremented. Raw pointers here all come from the per-core context
// (`sl_worker`, allocated NUMA-local) and the mbufs the PMD handed us.

/// The function `rte_eal_remote_launch` runs on each worker lcore; `arg` is
/// the core's `sl_worker`.
let workerEntry: @convention(c) (UnsafeMutableRawPointer?) -> Int32 = { arg in
    guard let arg else { return -1 }
    runWorker(arg.assumingMemoryBound(to: sl_worker.self))
    return 0
}

/// Where the EtherType sits in an Ethernet header (after two MACs).
@usableFromInline let etherTypeOffset = 12

@inline(__always) func drop(_ m: OpaquePointer, _ reason: DropReason, _ drops: UnsafeMutablePointer<UInt64>) {
    drops[reason.rawValue] &+= 1
    sl_mbuf_free(m)
}

/// Sends what is buffered for `port` and frees what the queue refused.
@inline(__always) func flushTx(_ w: UnsafeMutablePointer<sl_worker>, port: UInt16, drops: UnsafeMutablePointer<UInt64>) {
    let q = sl_worker_txq(w, port)!
    let count = q.pointee.count
    if count == 0 { return }
    let pkts = sl_txq_pkts(q)!
    let sent = sl_tx_burst(port, q.pointee.queue, pkts, count)
    if sent < count {
        var i = Int(sent)
        while i < Int(count) { sl_mbuf_free(pkts[i]); i &+= 1 }
        drops[DropReason.txFull.rawValue] &+= UInt64(count &- sent)
    }
    w.pointee.counters.tx_packets &+= UInt64(sent)
    q.pointee.count = 0
}

/// Appends to the TX buffers of one burst. The current port's buffer and
/// fill count live in registers while consecutive packets leave by the same
/// port (the common case), instead of a load-modify-store of the count per packet.
struct TxCursor {
    var port: UInt16 = UInt16.max
    var queue: UnsafeMutablePointer<sl_txq>? = nil
    var pkts: UnsafeMutablePointer<OpaquePointer?>? = nil
    var count = 0

    @inline(__always)
    mutating func push(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, port p: UInt16,
                       drops: UnsafeMutablePointer<UInt64>) {
        if _slowPath(p != port) { switchPort(w, to: p) }
        pkts.unsafelyUnwrapped[count] = m  // set by switchPort: p == port implies a queue was opened
        count &+= 1
        if count == Int(SL_BURST) {  // capacity SL_TX_BUFFER > SL_BURST
            queue.unsafelyUnwrapped.pointee.count = UInt16(truncatingIfNeeded: count)
            flushTx(w, port: port, drops: drops)
            count = 0
        }
    }

    @inline(never)
    mutating func switchPort(_ w: UnsafeMutablePointer<sl_worker>, to p: UInt16) {
        close()
        port = p
        let q = sl_worker_txq(w, p)!
        queue = q
        pkts = sl_txq_pkts(q)
        count = Int(q.pointee.count)
    }

    /// Writes the count back; the buffer is flushed at the end of the iteration.
    @inline(__always)
    mutating func close() {
        if let q = queue { q.pointee.count = UInt16(truncatingIfNeeded: count) }
    }
}

/// Busy iterations between two TSC reads while a worker is under load.
let busyReadEvery = 16

func runWorker(_ w: UnsafeMutablePointer<sl_worker>) {
    let shared = w.pointee.shared!
    let qsbr = w.pointee.qsbr!
    let tid = w.pointee.qsbr_thread_id
    _ = rte_rcu_qsbr_thread_register(qsbr, tid)
    rte_rcu_qsbr_thread_online(qsbr, tid)
    let nports = Int(w.pointee.nb_ports)
    let ports = sl_worker_port_ids(w)!
    let queue = w.pointee.queue_id
    let drops = sl_worker_drops(w)!
    let rx = sl_worker_rx(w)!
    let prefetch = sl_worker_port_prefetch(w)!
    let roles = sl_worker_port_roles(w)!
    let crypto = w.pointee.crypto

    var lastEnd = sl_tsc()
    var busyRun = 0  // busy iterations since lastEnd (all since then were busy)
    while !sl_shared_stopping(shared) {
        // SAD changes first, between bursts: every burst below sees one replica state.
        if let c = crypto {
            Unmanaged<WorkerIPsec>.fromOpaque(c)._withUnsafeGuaranteedRef { $0.applyCommands() }
        }
        // One snapshot per iteration: every burst below sees exactly this one.
        let fib = sl_shared_fib(shared)!
        let tables = sl_shared_ipsec(shared)
        var received = 0
        var p = 0
        while p < nports {
            let port = ports[p]
            let n = Int(sl_rx_burst(port, queue, rx, UInt16(SL_BURST)))
            if n > 0 {
                let uplink = sl_fib_port_uplink(fib, port)
                if _slowPath(sl_fib_port_local(fib, port)) {
                    stampArrivalPort(rx, count: n, port: port)
                }
                if _slowPath(uplink != 0) {
                    // A local stack's port: what it sends leaves by the port it serves.
                    relayFromStack(w, count: n, uplink: UInt16(uplink &- 1), drops: drops)
                } else if let t = tables, let c = crypto {
                    // Borrowed, not retained: the control thread keeps both alive (RCU).
                    Unmanaged<IPsecTables>.fromOpaque(t)._withUnsafeGuaranteedRef { tables in
                        Unmanaged<WorkerIPsec>.fromOpaque(c)._withUnsafeGuaranteedRef { wc in
                            ipsecBurst(w, fib: fib, tables: tables, context: wc, count: n, role: roles[p], port: port,
                                       prefetch: Int32(prefetch[p]), drops: drops)
                        }
                    }
                } else {
                    forwardBurst(w, fib: fib, count: n, port: port, prefetch: Int32(prefetch[p]), drops: drops)
                }
                received &+= n
            }
            p &+= 1
        }
        // Inbound packets other workers handed over (this worker keeps their SA).
        if let t = tables, let c = crypto {
            Unmanaged<IPsecTables>.fromOpaque(t)._withUnsafeGuaranteedRef { tables in
                Unmanaged<WorkerIPsec>.fromOpaque(c)._withUnsafeGuaranteedRef { wc in
                    let n = Int(sl_ring_dequeue_burst(wc.handoff, UnsafeMutablePointer<UnsafeMutableRawPointer?>(OpaquePointer(rx)), UInt32(SL_BURST)))
                    if n > 0 {
                        ipsecBurst(w, fib: fib, tables: tables, context: wc, count: n, role: PortRoleCode.unprotected.rawValue,
                                   prefetch: Int32(SL_PREFETCH_MBUF | SL_PREFETCH_DATA), drops: drops, handedOver: true)
                        received &+= n
                    }
                    // Outbound packets to seal with an SA this worker owns (shared-sa handoff).
                    let sealed = Int(sl_ring_dequeue_burst_elem24(wc.sealHandoff, wc.handed, UInt32(SL_BURST)))
                    if sealed > 0 {
                        sealHandedOver(w, fib: fib, context: wc, count: sealed, drops: drops)
                        received &+= sealed
                    }
                }
            }
        }
        // What the neighbour agent sends (this worker's queue 0 only).
        if let agent = w.pointee.agent_tx { sendAgentFrames(w, ring: agent, drops: drops) }
        p = 0
        while p < nports { flushTx(w, port: ports[p], drops: drops); p &+= 1 }
        w.pointee.counters.polls &+= 1
        // Busy time: an iteration that received packets is charged from the
        // end of the previous iteration to its own end. Under load the TSC
        // (~25 cycles here, a VM) is read once per `busyReadEvery` busy
        // iterations, not each; an idle iteration reads it, and when it ends
        // a run of busy ones it is charged with them (one empty poll).
        if received > 0 {
            busyRun &+= 1
            if busyRun == busyReadEvery {
                let now = sl_tsc()
                w.pointee.counters.busy_cycles &+= now &- lastEnd
                lastEnd = now
                busyRun = 0
                sweepReassembly(crypto, now: now, drops: drops)
            }
        } else {
            let now = sl_tsc()
            if busyRun > 0 { w.pointee.counters.busy_cycles &+= now &- lastEnd; busyRun = 0 }
            lastEnd = now
            sweepReassembly(crypto, now: now, drops: drops)
        }
        sl_qsbr_quiescent(qsbr, tid)
    }
    var p = 0
    while p < nports { flushTx(w, port: ports[p], drops: drops); p &+= 1 }
    rte_rcu_qsbr_thread_offline(qsbr, tid)
    _ = rte_rcu_qsbr_thread_unregister(qsbr, tid)
}

/// An IP packet found in a frame: its header, its length by the IP header
/// (Ethernet padding excluded), its family.
struct L3 {
    var ip: UnsafeMutablePointer<UInt8>
    var total: Int
    var ipv4: Bool
}

/// The fast path's parse: the total length of an untagged IPv4 packet
/// without options whose header is sound (lengths, and the checksum unless
/// the port checked it), or −1 for anything else, which `parseL3` then
/// parses or drops with its reason. One 4-byte load checks EtherType,
/// version and IHL (little-endian: 08 00 45 xx).
@inline(__always)
func plainIPv4Length(_ m: OpaquePointer, data: UnsafeMutablePointer<UInt8>, length len: Int, packetLength pktLen: Int) -> Int {
    guard _fastPath(len >= HeaderSize.ethernet &+ HeaderSize.ipv4) else { return -1 }
    guard UnsafeRawPointer(data).loadUnaligned(fromByteOffset: etherTypeOffset, as: UInt32.self) & 0x00FF_FFFF == 0x0045_0008
    else { return -1 }
    let ip = data + HeaderSize.ethernet
    let total = Int(UnsafeRawPointer(ip).loadBE16(at: IPv4Field.totalLength))
    // 20 ≤ total ≤ pktLen − 14 in one unsigned compare (pktLen ≥ len ≥ 34).
    guard UInt(bitPattern: total &- HeaderSize.ipv4)
            <= UInt(bitPattern: pktLen &- (HeaderSize.ethernet &+ HeaderSize.ipv4)) else { return -1 }
    // Unchecked by the port (virtual ports, most NICs without the offload
    // enabled) first: one test, then the sum.
    let checked = sl_mbuf_ip_cksum_flags(m)
    if _fastPath(checked == UInt32(SL_IP_CKSUM_UNCHECKED)) {
        return InternetChecksum.ipv4HeaderIsValid(ip, length: HeaderSize.ipv4) ? total : -1
    }
    return checked == UInt32(SL_IP_CKSUM_GOOD) ? total : -1
}

/// Parses Ethernet (+ one 802.1Q/802.1ad tag) and validates the IPv4 header
/// (version, IHL, lengths, checksum unless the port checked it) or the IPv6
/// one (version, payload length). TTL is the caller's business (a packet for
/// the gateway itself, such as ESP, may arrive with TTL 1). On failure the
/// packet is dropped and counted, and nil returned; a frame that is neither
/// IPv4 nor IPv6 goes to the port's local stack instead, where it has one.
@inline(__always)
func parseL3(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, data: UnsafeMutablePointer<UInt8>, length len: Int,
             packetLength pktLen: Int, fib: UnsafeMutablePointer<sl_fib>, drops: UnsafeMutablePointer<UInt64>) -> L3? {
    guard len >= HeaderSize.ethernet else { drop(m, .malformed, drops); return nil }
    var l3 = HeaderSize.ethernet
    var etherType = EtherType(UnsafeRawPointer(data).loadBE16(at: etherTypeOffset))
    if etherType.isVLANTag {
        guard len >= HeaderSize.ethernet &+ HeaderSize.vlanTag else { drop(m, .malformed, drops); return nil }
        etherType = EtherType(UnsafeRawPointer(data).loadBE16(at: etherTypeOffset &+ HeaderSize.vlanTag))
        l3 = HeaderSize.ethernet &+ HeaderSize.vlanTag
    }
    let ip = data + l3
    if etherType == .ipv4 {
        guard len >= l3 &+ HeaderSize.ipv4 else { drop(m, .malformed, drops); return nil }
        let vihl = ip[IPv4Field.versionIHL]
        let hlen = Int(vihl & 0x0F) &<< 2
        let total = Int(UnsafeRawPointer(ip).loadBE16(at: IPv4Field.totalLength))
        // Options included; the header must sit in the first segment.
        guard vihl >> 4 == 4, hlen >= HeaderSize.ipv4, len >= l3 &+ hlen, total >= hlen, total <= pktLen &- l3 else {
            drop(m, .malformed, drops); return nil
        }
        let verdict = sl_mbuf_ip_cksum_state(m)
        if verdict < 0 || (verdict == 0 && !InternetChecksum.ipv4HeaderIsValid(ip, length: hlen)) {
            drop(m, .badChecksum, drops); return nil
        }
        return L3(ip: ip, total: total, ipv4: true)
    } else if etherType == .ipv6 {
        guard len >= l3 &+ HeaderSize.ipv6 else { drop(m, .malformed, drops); return nil }
        let total = Int(UnsafeRawPointer(ip).loadBE16(at: IPv6Field.payloadLength)) &+ HeaderSize.ipv6
        guard ip[IPv6Field.versionClassFlow] >> 4 == 6, total <= pktLen &- l3 else { drop(m, .malformed, drops); return nil }
        return L3(ip: ip, total: total, ipv4: false)
    }
    // ARP, LLDP, …: the local stack's, where the port has one.
    if !puntToStack(w, m, fib: fib, drops: drops) { drop(m, .unsupportedEthertype, drops) }
    return nil
}

/// Forwards one RX burst: parse every packet once; IPv4 is looked up, rewritten
/// and enqueued in the same pass; IPv6 destinations are collected and looked
/// up in one bulk call (rte_fib6 has no inline lookup), then rewritten.
@inline(__always)
func forwardBurst(_ w: UnsafeMutablePointer<sl_worker>, fib: UnsafeMutablePointer<sl_fib>, count n: Int,
                  port: UInt16, prefetch: Int32, drops: UnsafeMutablePointer<UInt64>) {
    let rx = sl_worker_rx(w)!
    let dst6 = sl_worker_dst6(w)!
    let pkt6 = sl_worker_pkt6(w)!
    let l3v6 = sl_worker_l3_6(w)!
    var n6 = 0
    let hops = fib.pointee.nexthops!
    var tx = TxCursor()
    defer { tx.close() }
    var bytes: UInt64 = 0
    countBurst(w, n)
    let rpf = sl_fib_port_rpf(fib, port)

    let prefetchData = startPrefetch(rx, count: n, prefetch: prefetch)
    var i = 0
    while i < n {
        let m = rx[i]!
        if prefetchData && i &+ prefetchDistance < n { sl_prefetch_mbuf_data(rx[i &+ prefetchDistance]) }
        let data = sl_mbuf_data(m)!
        let len = Int(sl_mbuf_data_len(m))
        let pktLen = Int(sl_mbuf_pkt_len(m))
        bytes &+= UInt64(pktLen)
        i &+= 1
        // Fast path, nearly every packet (see `plainIPv4Length`), TTL above 1.
        // Any packet it would drop takes the general path, which counts the reason.
        if plainIPv4Length(m, data: data, length: len, packetLength: pktLen) >= 0 {
            let ip = data + HeaderSize.ethernet
            if ip[IPv4Field.ttl] > 1 && ordinarySource4(ip) {
                if reversePathDrops(m, ip: ip, ipv4: true, port: port, rpf: rpf, fib: fib, drops: drops) { continue }
                let hop = hops + Int(sl_fib4_next_hop(fib, UnsafeRawPointer(ip).loadBE32(at: IPv4Field.destination)))
                emit(w, m, frame: UnsafeMutableRawPointer(data), ip: ip, hop: hop, ipv4: true, fib: fib, tx: &tx, drops: drops)
                continue
            }
        }
        guard let l = parseL3(w, m, data: data, length: len, packetLength: pktLen, fib: fib, drops: drops) else { continue }
        let ip = l.ip
        if martianSource(ip, ipv4: l.ipv4) {
            // Neighbor Discovery from a link-local source, DHCP from 0.0.0.0: the local stack's.
            if !(linkScoped(ip, ipv4: l.ipv4) && puntToStack(w, m, fib: fib, drops: drops)) { drop(m, .martianSource, drops) }
            continue
        }
        if reversePathDrops(m, ip: ip, ipv4: l.ipv4, port: port, rpf: rpf, fib: fib, drops: drops) { continue }
        if l.ipv4 {
            guard ip[IPv4Field.ttl] > 1 else {
                timeExceeded(w, m, ip: ip, length: l.total, fib: fib, hops: hops, protectedOnly: false, tx: &tx, drops: drops)
                continue
            }
            // IPv4 is looked up and sent in this pass (inline DIR-24-8).
            let hop = hops + Int(sl_fib4_next_hop(fib, UnsafeRawPointer(ip).loadBE32(at: IPv4Field.destination)))
            emit(w, m, frame: UnsafeMutableRawPointer(data), ip: ip, hop: hop, ipv4: true, fib: fib, tx: &tx, drops: drops)
        } else {
            guard ip[IPv6Field.hopLimit] > 1 else {
                timeExceeded(w, m, ip: ip, length: l.total, fib: fib, hops: hops, protectedOnly: false, tx: &tx, drops: drops)
                continue
            }
            // 16-byte destination into the bulk-lookup array (two unaligned 8-byte moves).
            let d = UnsafeMutableRawPointer(dst6 + n6 &* 16)
            d.storeBytes(of: UnsafeRawPointer(ip + IPv6Field.destination).loadUnaligned(as: UInt64.self), as: UInt64.self)
            d.storeBytes(of: UnsafeRawPointer(ip + (IPv6Field.destination &+ 8)).loadUnaligned(as: UInt64.self), toByteOffset: 8, as: UInt64.self)
            pkt6[n6] = m
            l3v6[n6] = ip
            n6 &+= 1
        }
    }
    w.pointee.counters.rx_bytes &+= bytes

    if n6 > 0 {
        let nh = sl_worker_nh6(w)!
        if let f6 = fib.pointee.fib6 {
            sl_fib6_lookup_bulk(f6, dst6, nh, Int32(n6))
        } else {
            var j = 0
            while j < n6 { nh[j] = 0; j &+= 1 }
        }
        var j = 0
        while j < n6 {
            let m = pkt6[j]!
            emit(w, m, frame: UnsafeMutableRawPointer(sl_mbuf_data(m)!), ip: l3v6[j]!, hop: hops + Int(nh[j]), ipv4: false, fib: fib,
                 tx: &tx, drops: drops)
            j &+= 1
        }
    }
}

/// Drops the packet `m` (IP header at `ip`, received on `port`) when its
/// source is one of the gateway's own addresses (`ownSource`), or its port
/// has a reverse-path check (`rpf`, `ReversePathFilter.code`) and its source
/// fails it (true); false otherwise, the packet untouched.
@inline(__always)
func reversePathDrops(_ m: OpaquePointer, ip: UnsafePointer<UInt8>, ipv4: Bool, port: UInt16, rpf: UInt8,
                      fib: UnsafeMutablePointer<sl_fib>, drops: UnsafeMutablePointer<UInt64>) -> Bool {
    if ownSource(ip, ipv4: ipv4, fib: fib) { drop(m, .ownSource, drops); return true }
    guard _slowPath(rpf != 0), failsReversePath(ip, ipv4: ipv4, port: port, mode: rpf, fib: fib) else { return false }
    drop(m, .reversePath, drops)
    return true
}

/// Whether the source of the IP packet at `ip` is one of the gateway's own
/// addresses. The filter in the snapshot answers nearly every packet (one
/// multiply, one load); where it cannot, the route table does.
@inline(__always)
func ownSource(_ ip: UnsafePointer<UInt8>, ipv4: Bool, fib: UnsafeMutablePointer<sl_fib>) -> Bool {
    let may = ipv4 ? sl_fib_may_be_own4(fib, UnsafeRawPointer(ip).loadBE32(at: IPv4Field.source))
                   : sl_fib_may_be_own6(fib, ip + IPv6Field.source)
    return _slowPath(may) && sourceRoutedLocal(ip, ipv4: ipv4, fib: fib)
}

/// Whether the source of the packet at `ip` has a `local` route.
@inline(never)
func sourceRoutedLocal(_ ip: UnsafePointer<UInt8>, ipv4: Bool, fib: UnsafeMutablePointer<sl_fib>) -> Bool {
    Int(fib.pointee.nexthops![routeIndex(ip, ipv4: ipv4, source: true, fib: fib)].kind) == SL_NH_LOCAL
}

/// Whether the packet at `ip`, received on `port` whose reverse-path check
/// is `mode` (`ReversePathFilter.code`, not off), fails it (RFC 3704): its
/// source must be routed, not be one of the gateway's own addresses, and,
/// strict, be routed out of `port` (through a neighbour, or on the port's
/// link). A route whose next hop has no neighbour entry counts for loose.
/// Only ports with a check come here: one lookup of the source.
@inline(never)
func failsReversePath(_ ip: UnsafePointer<UInt8>, ipv4: Bool, port: UInt16, mode: UInt8,
                      fib: UnsafeMutablePointer<sl_fib>) -> Bool {
    let hop = fib.pointee.nexthops! + routeIndex(ip, ipv4: ipv4, source: true, fib: fib)
    let kind = Int(hop.pointee.kind)
    if kind == SL_NH_FORWARD { return mode == ReversePathFilter.strict.code && hop.pointee.port != port }
    if kind == SL_NH_NO_NEIGHBOR {
        // `.onLink` carries its port; a bare `.noNeighbor` (a gateway with no
        // neighbour entry) says nothing about where the source lives.
        return mode == ReversePathFilter.strict.code
            && (Int(hop.pointee.flags) & Int(SL_NH_ON_LINK) == 0 || hop.pointee.port != port)
    }
    return true  // no route, our own address, a martian prefix
}

/// Whether the IP packet at `ip` comes from an address no router forwards
/// from (`DropReason.martianSource`): IPv4 0/8, 127/8, 224/4, 255.255.255.255;
/// IPv6 ::, ::1, fe80::/10, ff00::/8, the set `RouteCompiler.martianDestinations`
/// lists as prefixes (change both together). The exact test, on the general
/// paths; the fast paths ask `ordinarySource4` first.
@inline(__always)
func martianSource(_ ip: UnsafePointer<UInt8>, ipv4: Bool) -> Bool {
    let p = UnsafeRawPointer(ip)
    if ipv4 {
        let s = p.loadBE32(at: IPv4Field.source)
        let first = s >> 24
        return first == 0 || first == 127 || first & 0xF0 == 0xE0 || s == 0xFFFF_FFFF
    }
    let high = p.loadBE64(at: IPv6Field.source)
    return high >> 56 == 0xFF || high >> 54 == 0x3FA || (high == 0 && p.loadBE64(at: IPv6Field.source &+ 8) <= 1)
}

/// The fast paths' test of an IPv4 source: its first octet is 1…126 or
/// 128…223 (ordinary unicast, never martian). Anything else (0, 127,
/// multicast, class E, broadcast) takes the general path, where
/// `martianSource` decides. One subtraction and two compares.
@inline(__always)
func ordinarySource4(_ ip: UnsafePointer<UInt8>) -> Bool {
    let x = ip[IPv4Field.source] &- 1
    return x < 223 && x != 126
}

/// How many packets ahead of the one being parsed its data is prefetched.
let prefetchDistance = 8

/// Overlaps the misses the port leaves us (see SL_PREFETCH_*): every mbuf
/// header of the burst first, then the data of the first packets. Returns
/// whether the caller should go on prefetching data `prefetchDistance`
/// packets ahead.
@inline(__always)
func startPrefetch(_ rx: UnsafeMutablePointer<OpaquePointer?>, count n: Int, prefetch: Int32) -> Bool {
    var k = 0
    if prefetch & Int32(SL_PREFETCH_MBUF) != 0 { while k < n { sl_prefetch0(UnsafeRawPointer(rx[k]!)); k &+= 1 } }
    let data = prefetch & Int32(SL_PREFETCH_DATA) != 0
    k = 0
    if data { while k < n && k < prefetchDistance { sl_prefetch_mbuf_data(rx[k]); k &+= 1 } }
    return data
}

/// Counts a received burst on this core.
@inline(__always) func countBurst(_ w: UnsafeMutablePointer<sl_worker>, _ n: Int) {
    w.pointee.counters.rx_packets &+= UInt64(n)
    w.pointee.counters.rx_bursts &+= 1
}

/// Writes the next hop's destination and source MACs (its first 12 bytes, in
/// frame order) at the start of an Ethernet frame.
@inline(__always) func writeMACs(_ frame: UnsafeMutableRawPointer, from hop: UnsafeMutablePointer<sl_nexthop>) {
    let src = UnsafeRawPointer(hop)
    frame.storeBytes(of: src.load(as: UInt64.self), as: UInt64.self)
    frame.storeBytes(of: src.load(fromByteOffset: 8, as: UInt32.self), toByteOffset: 8, as: UInt32.self)
}

/// `emit`'s packet whose frame is longer than the MTU of `hop`'s port: when
/// its datagram is too, it is taken (true): IPv4 without DF leaves in
/// fragments (`sendFragmented`, its TTL taken down first), anything else goes
/// to `packetTooBig`. Otherwise false. `mayCut` false (its neighbour still
/// being resolved): one that would be cut is dropped `no_neighbor` instead,
/// as the agent would drop it whole (its pieces could not all be sure of a
/// place in the hold).
@inline(never)
func tooBigToForward(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, ip: UnsafeMutablePointer<UInt8>, ipv4: Bool,
                     hop: UnsafeMutablePointer<sl_nexthop>, fib: UnsafeMutablePointer<sl_fib>, mayCut: Bool = true,
                     tx: inout TxCursor, drops: UnsafeMutablePointer<UInt64>) -> Bool {
    let header = UnsafeMutableRawPointer(ip)
    let length = datagramLength(header, ipv4: ipv4)
    let mtu = Int(sl_fib_port_mtu(fib, hop.pointee.port))
    guard length > mtu else { return false }
    if ipv4 && header.loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.dontFragment == 0 {
        guard mayCut else { drop(m, .noNeighbor, drops); return true }
        InternetChecksum.decrementNonzeroTTL(ipv4Header: header)
        sendFragmented(w, m, ipView(m, ip: header, length: length), ipv4: true, hop: hop, mtu: mtu, fib: fib,
                       hops: fib.pointee.nexthops!, tx: &tx, drops: drops)
    } else {
        packetTooBig(w, m, ip: ip, length: length, report: mtu, fib: fib, hops: fib.pointee.nexthops!,
                     protectedOnly: false, tx: &tx, drops: drops)
    }
    return true
}

/// Whether a packet for `hop` has a port to leave by: a resolved neighbour's,
/// or a `resolve on` port on whose link its neighbour is being resolved
/// (`.onLink`; the packet is held for the neighbour agent).
@inline(__always)
func hopHasPort(_ hop: UnsafeMutablePointer<sl_nexthop>, fib: UnsafeMutablePointer<sl_fib>) -> Bool {
    let kind = Int(hop.pointee.kind)
    return kind == SL_NH_FORWARD || kind == SL_NH_NO_NEIGHBOR && Int(hop.pointee.flags) & Int(SL_NH_ON_LINK) != 0
        && sl_fib_port_resolve(fib, hop.pointee.port) != 0
}

/// Applies a next hop to a parsed packet whose frame starts at `frame` (the
/// mbuf's data) and whose TTL/hop limit the caller checked to be above 1:
/// TTL/hop limit −1, Ethernet rewrite, TX.
@inline(__always)
func emit(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, frame start: UnsafeMutableRawPointer, ip: UnsafeMutablePointer<UInt8>,
          hop: UnsafeMutablePointer<sl_nexthop>, ipv4: Bool, fib: UnsafeMutablePointer<sl_fib>, tx: inout TxCursor,
          drops: UnsafeMutablePointer<UInt64>) {
    let kind = Int(hop.pointee.kind)
    if _fastPath(kind == SL_NH_FORWARD) {
        // The frame's IP bytes against the port's MTU (a frame with bytes
        // after its datagram may pass this test and fit nonetheless).
        if _slowPath(Int(sl_mbuf_pkt_len(m)) &- (UnsafeMutableRawPointer(ip) - start) > Int(sl_fib_port_mtu(fib, hop.pointee.port))),
           tooBigToForward(w, m, ip: ip, ipv4: ipv4, hop: hop, fib: fib, tx: &tx, drops: drops) {
            return
        }
        decrementNonzeroTTL(ip, ipv4: ipv4)
        var frame = start
        if _slowPath(UnsafeMutableRawPointer(ip) - frame != HeaderSize.ethernet) {
            // A VLAN tag is not carried across (no VLAN interfaces: letting the
            // sender pick the egress VLAN would be VLAN hopping). The frame
            // starts 4 bytes later; its inner EtherType is already in place.
            sl_mbuf_adj(m, UInt16(HeaderSize.vlanTag))
            frame += HeaderSize.vlanTag
        }
        writeMACs(frame, from: hop)
        tx.push(w, m, port: hop.pointee.port, drops: drops)
    } else if kind == SL_NH_NO_ROUTE {
        drop(m, .noRoute, drops)
    } else if kind == SL_NH_NO_NEIGHBOR {
        // Resolving port: the neighbour agent holds it until the neighbour
        // answers; one too big for the port is refused first (not cut).
        if hopHasPort(hop, fib: fib),
           _slowPath(Int(sl_mbuf_pkt_len(m)) &- (UnsafeMutableRawPointer(ip) - start) > Int(sl_fib_port_mtu(fib, hop.pointee.port))),
           tooBigToForward(w, m, ip: ip, ipv4: ipv4, hop: hop, fib: fib, mayCut: false, tx: &tx, drops: drops) {
            return
        }
        if !holdForNeighbor(w, m, ip: UnsafeMutableRawPointer(ip), ipv4: ipv4, hop: hop, decrement: true, fib: fib) {
            drop(m, .noNeighbor, drops)
        }
    } else if !puntLocal(w, m, ip: ip, ipv4: ipv4, hopKind: kind, decremented: false, fib: fib, drops: drops) {
        drop(m, kind == SL_NH_LOCAL ? .local : .martian, drops)
    }
}
