import CShims
import Crypto
import IPsec
import Packet

// The worker's path when an SPD is configured (RFC 4301 processing):
// protected ports: outbound SPD → discard / bypass (route) / protect (ESP with
// the policy's SA, then route on the outer destination); unprotected ports:
// ESP or UDP-encapsulated ESP → SA → decrypt → route the inner packet;
// anything else → inbound SPD (bypass routes it, protect or discard drop it).
// Same rules as the plain path: no allocation, no ARC, no throws per packet;
// every failure is one named counter.

/// Which way a port faces (`sl_worker.port_roles`).
public enum PortRoleCode: UInt8 {
    case unprotected = 0
    case protected = 1
}

/// Routes a packet whose IP header is at `view.start` (the result of
/// encapsulation or decapsulation): writes a fresh Ethernet header in front of
/// it (next hop's MACs, EtherType of the IP version), sets the mbuf's data
/// window to frame it, and queues it. `decrementTTL`: the packet is being
/// forwarded (an inner packet), not originated (a new outer header).
/// `bypassed`: plaintext an inbound bypass policy let in (`sendICMPError`).
@inline(__always)
func routeRebuilt(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, _ view: PacketView, fib: UnsafeMutablePointer<sl_fib>,
                  hops: UnsafeMutablePointer<sl_nexthop>, decrementTTL: Bool, bypassed: IPsecTables? = nil,
                  tx: inout TxCursor, drops: UnsafeMutablePointer<UInt64>) {
    let ip = view.start.assumingMemoryBound(to: UInt8.self)
    let ipv4 = ip[0] >> 4 == 4
    if decrementTTL {
        guard decrementForwardedTTL(ip, ipv4: ipv4) else {
            timeExceeded(w, m, ip: ip, length: view.length, fib: fib, hops: hops, protectedOnly: true, bypassed: bypassed,
                         tx: &tx, drops: drops)
            return
        }
    }
    let hop = nextHop(view, ipv4: ipv4, fib: fib, hops: hops)
    let kind = Int(hop.pointee.kind)
    // For the gateway itself, or link-scoped: its local stack's, where the
    // frame is still the one that arrived (a bypassed packet).
    if _slowPath(kind != SL_NH_FORWARD)
        && puntLocal(w, m, ip: ip, ipv4: ipv4, hopKind: kind, decremented: decrementTTL, fib: fib, drops: drops) {
        return
    }
    sendRebuilt(w, m, view, ipv4: ipv4, hop: hop, fib: fib, hops: hops, decremented: decrementTTL, bypassed: bypassed,
                tx: &tx, drops: drops)
}

/// TTL (IPv4, checksum updated) or hop limit (IPv6) −1 for a packet being
/// forwarded; false, and nothing changed, when it is 1 or 0 (the packet
/// must be dropped as `.ttlExceeded`: `timeExceeded`).
@inline(__always)
func decrementForwardedTTL(_ ip: UnsafeMutablePointer<UInt8>, ipv4: Bool) -> Bool {
    guard ip[ipv4 ? IPv4Field.ttl : IPv6Field.hopLimit] > 1 else { return false }
    decrementNonzeroTTL(ip, ipv4: ipv4)
    return true
}

/// TTL (IPv4, checksum updated) or hop limit (IPv6) −1; the caller checked
/// it is above 0.
@inline(__always)
func decrementNonzeroTTL(_ ip: UnsafeMutablePointer<UInt8>, ipv4: Bool) {
    if ipv4 { InternetChecksum.decrementNonzeroTTL(ipv4Header: UnsafeMutableRawPointer(ip)) } else { ip[IPv6Field.hopLimit] &-= 1 }
}

/// Undoes `decrementNonzeroTTL` (IPv4: checksum updated, RFC 1624), so an
/// ICMP error quotes the packet as it arrived.
@inline(never)
func restoreTTL(_ ip: UnsafeMutablePointer<UInt8>, ipv4: Bool) {
    guard ipv4 else { ip[IPv6Field.hopLimit] &+= 1; return }
    let h = UnsafeMutableRawPointer(ip)
    let old = h.loadBE16(at: IPv4Field.ttl)  // TTL, protocol
    h.storeBE16(old &+ 0x100, at: IPv4Field.ttl)
    h.storeBE16(InternetChecksum.update(h.loadBE16(at: IPv4Field.checksum), old: old, new: old &+ 0x100),
                at: IPv4Field.checksum)
}

/// The datagram length the IP header at `ip` gives (IPv4 total length,
/// IPv6 40 + payload length), read as it stands: the caller parsed it.
@inline(__always)
func datagramLength(_ ip: UnsafeRawPointer, ipv4: Bool) -> Int {
    ipv4 ? Int(ip.loadBE16(at: IPv4Field.totalLength)) : HeaderSize.ipv6 &+ Int(ip.loadBE16(at: IPv6Field.payloadLength))
}

/// The index in `fib`'s next-hop array of the destination address (or, with
/// `source`, the source address) of the IP header at `ip`.
@inline(__always)
func routeIndex(_ ip: UnsafeRawPointer, ipv4: Bool, source: Bool = false, fib: UnsafeMutablePointer<sl_fib>) -> Int {
    ipv4 ? Int(sl_fib4_next_hop(fib, ip.loadBE32(at: source ? IPv4Field.source : IPv4Field.destination)))
        : Int(sl_fib6_next_hop(fib, ip.assumingMemoryBound(to: UInt8.self) + (source ? IPv6Field.source : IPv6Field.destination)))
}

/// The next hop of the IP packet at `view.start` (its destination looked up).
@inline(__always)
func nextHop(_ view: PacketView, ipv4: Bool, fib: UnsafeMutablePointer<sl_fib>,
             hops: UnsafeMutablePointer<sl_nexthop>) -> UnsafeMutablePointer<sl_nexthop> {
    hops + routeIndex(view.start, ipv4: ipv4, fib: fib)
}

/// The next hop of a tunnel-mode SA's packets: its outer destination's.
@inline(__always)
func outerHop(_ sa: UnsafePointer<OutboundSA>, fib: UnsafeMutablePointer<sl_fib>,
              hops: UnsafeMutablePointer<sl_nexthop>) -> UnsafeMutablePointer<sl_nexthop> {
    sa.pointee.withOuterHeader { h in hops + routeIndex(h, ipv4: h.load(as: UInt8.self) >> 4 == 4, fib: fib) }
}

/// Sends the IP packet at `view.start` to `hop` (see `routeRebuilt`), or
/// drops it under the reason the hop gives. One too big for the hop's port
/// leaves in fragments when it is IPv4 without DF, or IPv6 and `sealed` (an
/// ESP packet this gateway made, and chose to cut: `sealPending`)
/// (`sendFragmented`), and is otherwise dropped (`packetTooBig`: an ICMP
/// error back out of a protected port, or as `bypassed` allows). `pathMTU`:
/// a smaller MTU than the port's that the packet is held to (an ESP packet
/// whose SA learnt its path MTU).
@inline(__always)
func sendRebuilt(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, _ view: PacketView, ipv4: Bool,
                 hop: UnsafeMutablePointer<sl_nexthop>, fib: UnsafeMutablePointer<sl_fib>,
                 hops: UnsafeMutablePointer<sl_nexthop>, sealed: Bool = false, decremented: Bool = false,
                 pathMTU: Int = .max, bypassed: IPsecTables? = nil, tx: inout TxCursor,
                 drops: UnsafeMutablePointer<UInt64>) {
    let kind = Int(hop.pointee.kind)
    guard kind == SL_NH_FORWARD else {
        if kind == SL_NH_NO_NEIGHBOR {
            // Its port is known while its neighbour is resolved: one too big
            // for it is refused now, as it would be once resolved (not cut).
            let mtu = min(Int(sl_fib_port_mtu(fib, hop.pointee.port)), pathMTU)
            if hopHasPort(hop, fib: fib), _slowPath(view.length > mtu) {
                tooBigToSend(w, m, view, ipv4: ipv4, sealed: sealed, hop: hop, mtu: mtu, fib: fib, hops: hops, mayCut: false,
                             decremented: decremented, bypassed: bypassed, tx: &tx, drops: drops)
                return
            }
            if holdForNeighbor(w, m, ip: view.start, ipv4: ipv4, hop: hop, decrement: false, fib: fib) {
                return  // the neighbour agent sends it once the neighbour answers
            }
        }
        drop(m, kind == SL_NH_NO_ROUTE ? .noRoute : (kind == SL_NH_NO_NEIGHBOR ? .noNeighbor
                : (kind == SL_NH_LOCAL ? .local : .martian)), drops)
        return
    }
    let mtu = min(Int(sl_fib_port_mtu(fib, hop.pointee.port)), pathMTU)
    if _slowPath(view.length > mtu) {
        tooBigToSend(w, m, view, ipv4: ipv4, sealed: sealed, hop: hop, mtu: mtu, fib: fib, hops: hops,
                     decremented: decremented, bypassed: bypassed, tx: &tx, drops: drops)
        return
    }
    // The caller left HeaderSize.ethernet bytes of headroom (views are made that way).
    let frame = view.start - HeaderSize.ethernet
    writeMACs(frame, from: hop)
    frame.storeBE16(ipv4 ? EtherType.ipv4.rawValue : EtherType.ipv6.rawValue, at: etherTypeOffset)
    let base = UnsafeMutableRawPointer(sl_mbuf_buf_addr(m)!)
    sl_mbuf_set_window(m, UInt16(truncatingIfNeeded: frame - base), UInt16(truncatingIfNeeded: view.length &+ HeaderSize.ethernet))
    tx.push(w, m, port: hop.pointee.port, drops: drops)
}

/// `sendRebuilt`'s packet too big for `mtu`: out of line, so the inlined
/// sender keeps one call on its slow path. `mayCut` as for `tooBigToForward`;
/// `decremented`: its TTL was taken down for forwarding, and is put back
/// for the error's quote.
@inline(never)
func tooBigToSend(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, _ view: PacketView, ipv4: Bool, sealed: Bool,
                  hop: UnsafeMutablePointer<sl_nexthop>, mtu: Int, fib: UnsafeMutablePointer<sl_fib>,
                  hops: UnsafeMutablePointer<sl_nexthop>, mayCut: Bool = true, decremented: Bool = false,
                  bypassed: IPsecTables? = nil, tx: inout TxCursor, drops: UnsafeMutablePointer<UInt64>) {
    if ipv4 ? view.start.loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.dontFragment == 0 : sealed {
        guard mayCut else { drop(m, .noNeighbor, drops); return }
        sendFragmented(w, m, view, ipv4: ipv4, hop: hop, mtu: mtu, fib: fib, hops: hops, tx: &tx, drops: drops)
    } else {
        if decremented { restoreTTL(view.start.assumingMemoryBound(to: UInt8.self), ipv4: ipv4) }
        packetTooBig(w, m, ip: view.start.assumingMemoryBound(to: UInt8.self), length: view.length, report: mtu,
                     fib: fib, hops: hops, protectedOnly: true, bypassed: bypassed, tx: &tx, drops: drops)
    }
}

/// The view of the IP packet at `ip` (of `length` bytes) inside `m`, keeping
/// room for the Ethernet header written in front of the result.
@inline(__always)
func ipView(_ m: OpaquePointer, ip: UnsafeMutableRawPointer, length: Int) -> PacketView {
    let base = UnsafeMutableRawPointer(sl_mbuf_buf_addr(m)!)
    let before = ip - base
    return PacketView(start: ip, length: length, headroom: before &- HeaderSize.ethernet,
                      tailroom: Int(sl_mbuf_buf_len(m)) &- before &- length)
}

/// A received frame's IP packet and its view, or nil once it is dropped
/// (malformed, or in several segments: ESP rewrites packets in place).
/// Counts its bytes.
@_transparent
func ipsecReceive(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, bytes: inout UInt64, rpf: UInt8, punt: Bool,
                  port: UInt16, fib: UnsafeMutablePointer<sl_fib>, drops: UnsafeMutablePointer<UInt64>) -> (L3, PacketView)? {
    let data = sl_mbuf_data(m)!
    let pktLen = Int(sl_mbuf_pkt_len(m))
    let len = Int(sl_mbuf_data_len(m))
    bytes &+= UInt64(pktLen)
    let total = plainIPv4Length(m, data: data, length: len, packetLength: pktLen)
    if total >= 0 && sl_mbuf_nb_segs(m) == 1 && ordinarySource4(data + HeaderSize.ethernet) {
        let ip = data + HeaderSize.ethernet
        if reversePathDrops(m, ip: ip, ipv4: true, port: port, rpf: rpf, fib: fib, drops: drops) { return nil }
        if _slowPath(punt) && linkScoped(ip, ipv4: true) && puntToStack(w, m, fib: fib, drops: drops) { return nil }
        return (L3(ip: ip, total: total, ipv4: true), ipView(m, ip: UnsafeMutableRawPointer(ip), length: total))
    }
    guard let l = parseL3(w, m, data: data, length: len, packetLength: pktLen, fib: fib, drops: drops) else { return nil }
    // Link-scoped packets (Neighbor Discovery, DHCP, VRRP…) are the local
    // stack's, before the SPD: they never cross the gateway.
    if punt && linkScoped(l.ip, ipv4: l.ipv4) && puntToStack(w, m, fib: fib, drops: drops) { return nil }
    guard sl_mbuf_nb_segs(m) == 1 else { drop(m, .segmented, drops); return nil }
    guard !martianSource(l.ip, ipv4: l.ipv4) else { drop(m, .martianSource, drops); return nil }
    if reversePathDrops(m, ip: l.ip, ipv4: l.ipv4, port: port, rpf: rpf, fib: fib, drops: drops) { return nil }
    return (l, ipView(m, ip: UnsafeMutableRawPointer(l.ip), length: l.total))
}

/// Whether the IP packet in `view` is addressed to this gateway: its
/// destination is one of the ports' own addresses (a `local` route). RFC 4301
/// §5.2: only IPsec traffic addressed to the gateway is looked up in the SAD.
/// ESP or NAT-T traffic between other hosts (a VPN client behind the gateway
/// and its server, say) is ordinary traffic for the inbound SPD. Asked only
/// when no SA took the packet, or `classify` refused it: never on the fast path.
@inline(never)
func addressedToGateway(_ view: PacketView, fib: UnsafeMutablePointer<sl_fib>, hops: UnsafeMutablePointer<sl_nexthop>) -> Bool {
    let ipv4 = view.start.load(as: UInt8.self) >> 4 == 4
    return Int(nextHop(view, ipv4: ipv4, fib: fib, hops: hops).pointee.kind) == SL_NH_LOCAL
}

/// A packet from the unprotected side that no SA of this gateway took: the
/// inbound SPD decides. bypass routes it; discard (or no policy) drops it as
/// `policyDiscard`; a protect policy means it should have arrived protected
/// by one of the gateway's SAs, so it is dropped as `unprotected`: plaintext
/// as `plaintextProtected`; ESP that no SA matched (transport mode takes ESP
/// addressed to protected hosts, so this is not only transit) as `esp_no_sa`;
/// a packet `classify` refused under its ESP reason. An ICMP "too big"
/// about one of the gateway's ESP packets that a bypass policy lets in is
/// reported for its SA's path MTU (`notePathMTU`), then handled as any
/// packet addressed to the gateway.
@inline(__always)
func inboundPolicy(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, _ view: PacketView, tables: IPsecTables,
                   context: WorkerIPsec, fib: UnsafeMutablePointer<sl_fib>, hops: UnsafeMutablePointer<sl_nexthop>,
                   unprotected: DropReason, tx: inout TxCursor, drops: UnsafeMutablePointer<UInt64>) {
    guard let fields = SelectorFields(view) else { drop(m, .malformed, drops); return }
    let slot = tables.inSPD.slot(fields)
    guard slot != SPDNoMatch else { drop(m, .policyDiscard, drops); return }
    // A value is always a slot of `verdicts` (the compiler builds both together).
    let verdict = tables.inSPD.verdicts[Int(slot)]
    switch verdict.action {
    case .bypass:
        if tables.inSPD.stopsOpaqueBypass(fields, slot: slot) { drop(m, .fragmentPortsUnknown, drops); return }
        // ICMP type 3 code 4, ICMPv6 type 2 (code 0: checked by the report).
        if _slowPath(fields.hasPorts && (fields.proto == 1 && fields.sourcePort == 3 && fields.destinationPort == 4
                                         || fields.proto == 58 && fields.sourcePort == 2)) {
            notePathMTU(view, context: context, fib: fib, hops: hops)
        }
        routeRebuilt(w, m, view, fib: fib, hops: hops, decrementTTL: true, bypassed: tables, tx: &tx, drops: drops)
    case .protect: drop(m, unprotected, drops)
    case .discard: drop(m, .policyDiscard, drops)
    }
}

/// `inboundPolicy`'s ICMP "too big": reported to the control thread
/// (`WorkerIPsec.reportPathMTU`) when it is addressed to the gateway and
/// quotes an ESP packet (`PathMTUReport`). Out of line: never on the fast path.
@inline(never)
func notePathMTU(_ view: PacketView, context: WorkerIPsec, fib: UnsafeMutablePointer<sl_fib>,
                 hops: UnsafeMutablePointer<sl_nexthop>) {
    guard addressedToGateway(view, fib: fib, hops: hops), let report = PathMTUReport(view) else { return }
    context.reportPathMTU(report)
}

/// RFC 4301 §5.2's check of a decapsulated packet (`view`): the inbound
/// SPD's first match for it must be a policy that protects with the SA `sa`
/// it came on, naming its SPI or its reqid (not checked for an SA installed
/// without an SPD, which `ESPInbound` checked against its own selectors).
/// So traffic that an earlier bypass or discard policy covers, or that the
/// SPD assigns to another SA, is refused even inside one of this SA's policies.
@inline(__always)
func assignedBySPD(_ view: PacketView, sa: UnsafePointer<InboundSA>, tables: IPsecTables) -> Bool {
    guard sa.pointee.checkedBySPD else { return true }
    guard let fields = SelectorFields(view), let verdict = tables.inSPD.verdict(fields) else { return false }
    return verdict.action == .protect && sa.pointee.isAssigned(verdict.target)
}

/// Whether a fragment in transit (`view`) may be part of transport-mode ESP
/// for one of this worker's SAs: there is such an SA (bump in the wire), and
/// the inbound SPD's verdict for the fragment is protect (it may not pass in
/// the clear). Off the fast path: fragments in transit.
@inline(never)
func mayBeTransportESP(_ view: PacketView, tables: IPsecTables, context: WorkerIPsec) -> Bool {
    guard context.replica.transportInboundCount > 0, let fields = SelectorFields(view),
          let verdict = tables.inSPD.verdict(fields) else { return false }
    return verdict.action == .protect
}

/// Whether a counter going from `before` to `after` reached `limit` (0: no
/// limit). Counters only grow, so each limit is crossed exactly once.
@inline(__always)
func crosses(_ limit: UInt64, from before: UInt64, to after: UInt64) -> Bool {
    limit != 0 && before < limit && after >= limit
}

/// Processes one RX burst with IPsec.
@inline(__always)
func ipsecBurst(_ w: UnsafeMutablePointer<sl_worker>, fib: UnsafeMutablePointer<sl_fib>, tables: IPsecTables,
                context: WorkerIPsec, count n: Int, role: UInt8, port: UInt16 = 0, prefetch: Int32,
                drops: UnsafeMutablePointer<UInt64>, handedOver: Bool = false) {
    let rx = sl_worker_rx(w)!
    let hops = fib.pointee.nexthops!
    var tx = TxCursor()
    defer { tx.close() }
    var bytes: UInt64 = 0
    // Packets another worker handed over were counted where they arrived.
    if !handedOver { countBurst(w, n) }
    // Their sources were checked where they arrived.
    let rpf = handedOver ? 0 : sl_fib_port_rpf(fib, port)
    // Whether the port has a local stack (`port … punt M`).
    let punt = !handedOver && sl_fib_port_local(fib, port)
    let sealM = sl_worker_seal_m(w)!
    let sealIP = sl_worker_seal_ip(w)!
    let sealLen = sl_worker_seal_len(w)!
    var pending = 0
    let prefetchData = startPrefetch(rx, count: n, prefetch: prefetch)

    if role == PortRoleCode.protected.rawValue {
        // Outbound, in three passes: parse the burst, classify it with one
        // burst lookup of one SPD snapshot, then act on each verdict.
        let fields = context.fields
        let values = context.values
        var candidates = 0
        var i = 0
        while i < n {
            let m = rx[i]!
            if prefetchData && i &+ prefetchDistance < n { sl_prefetch_mbuf_data(rx[i &+ prefetchDistance]) }
            i &+= 1
            guard let (l, view) = ipsecReceive(w, m, bytes: &bytes, rpf: rpf, punt: punt, port: port, fib: fib, drops: drops)
            else { continue }
            guard let f = SelectorFields(view) else { drop(m, .malformed, drops); continue }
            // candidates < i <= n <= SL_BURST: every scratch array has room.
            sealM[candidates] = m
            sealIP[candidates] = l.ip
            sealLen[candidates] = UInt32(truncatingIfNeeded: l.total)
            fields[candidates] = f
            candidates &+= 1
        }
        if !handedOver { w.pointee.counters.rx_bytes &+= bytes }
        if candidates == 0 { return }
        tables.outSPD.classify(fields, count: candidates, into: values)
        let verdicts = tables.outSPD.verdicts
        var k = 0
        while k < candidates {
            let m = sealM[k]!
            let ip = sealIP[k]!
            let length = Int(sealLen[k])
            let value = values[k]
            k &+= 1
            // Values are slots of `verdicts` (built together with the classifier).
            guard value != SPDNoMatch else { drop(m, .policyDiscard, drops); continue }
            let verdict = verdicts[Int(value)]
            switch verdict.action {
            case .discard:
                drop(m, .policyDiscard, drops)
            case .bypass:
                if tables.outSPD.stopsOpaqueBypass(fields[k &- 1], slot: value) {
                    drop(m, .fragmentPortsUnknown, drops); continue
                }
                routeRebuilt(w, m, ipView(m, ip: UnsafeMutableRawPointer(ip), length: length), fib: fib, hops: hops,
                             decrementTTL: true, tx: &tx, drops: drops)
            case .protect:
                // What the verdict's protect target resolves to on this core
                // (its per-CPU SA, the fallback, or none), from this worker's replica.
                let t = Int(verdict.sa)
                guard t >= 0 && t < context.replica.targetCapacity, let record = context.replica.targets[t] else {
                    drop(m, .noOutboundSA, drops)
                    context.acquire(policyID: verdict.policyID, fields[k &- 1])
                    continue
                }
                // RFC 9611: a worker on the reqid's fallback asks for its own
                // SA (rate-limited like every ACQUIRE); the packet goes on.
                if verdict.acquiresPerCPU && record.pointee.fallback {
                    context.acquire(policyID: verdict.policyID, fields[k &- 1])
                }
                // The inner packet is forwarded: TTL −1 before it is sealed.
                guard decrementForwardedTTL(ip, ipv4: ip[0] >> 4 == 4) else {
                    timeExceeded(w, m, ip: ip, length: length, fib: fib, hops: hops, protectedOnly: true, tx: &tx, drops: drops)
                    continue
                }
                // shared-sa handoff: another worker seals this SA's packets.
                let owner = Int(record.pointee.owner)
                if owner >= 0 && owner != context.index {
                    let base = UnsafeMutableRawPointer(sl_mbuf_buf_addr(m)!)
                    // Both fit 16 bits: an IP packet is at most 65,535 bytes, in one buffer.
                    var h = HandedPacket(m: m, record: record, ipOffset: UInt16(truncatingIfNeeded: UnsafeMutableRawPointer(ip) - base),
                                         length: UInt16(truncatingIfNeeded: length), serial: record.pointee.serial)
                    // owner < workerCount (the compiler's), and sealPeers has one ring per worker.
                    guard let ring = context.sealPeers?[owner], sl_ring_enqueue_elem24(ring, &h) else {
                        drop(m, .handoffFull, drops); continue
                    }
                    continue
                }
                // Sealed after the burst, once its sequence numbers are
                // reserved. pending < k: compacting in place overwrites only
                // entries already read.
                sealM[pending] = m
                sealIP[pending] = ip
                sealLen[pending] = UInt32(truncatingIfNeeded: length)
                context.sealRecord[pending] = record
                pending &+= 1
            }
        }
        if pending > 0 {
            sealPending(w, count: pending, fib: fib, context: context, hops: hops, prefetch: prefetchData, tx: &tx, drops: drops)
        }
        return
    }

    // Inbound, in two passes: each packet up to its AEAD (ESP admitted to
    // the worker's AEAD burst; everything else decided at once), then the
    // burst opened with one call and its packets finished (`openStaged`).
    let opened = context.opened
    var toOpen = 0
    var i = 0
    while i < n {
        let m = rx[i]!
        if prefetchData && i &+ prefetchDistance < n { sl_prefetch_mbuf_data(rx[i &+ prefetchDistance]) }
        i &+= 1
        guard let (_, view) = ipsecReceive(w, m, bytes: &bytes, rpf: rpf, punt: punt, port: port, fib: fib, drops: drops)
        else { continue }
        switch ESPInbound.classify(view, natPorts: tables.natPorts) {
        case .drop(let d):
            // A fragment is reassembled when it is addressed to the gateway,
            // or is ESP in transit that a protect policy covers while a
            // transport-mode SA is installed (made whole, it may be that
            // SA's: bump in the wire). Anything else addressed to the gateway
            // keeps its ESP counter; someone else's IPsec (a fragment, a
            // keepalive, IKE, a short packet) is transit traffic: the inbound
            // SPD decides.
            let toGateway = addressedToGateway(view, fib: fib, hops: hops)
            if d == .fragmented && (toGateway || mayBeTransportESP(view, tables: tables, context: context)) {
                // A reassembled datagram takes the place of the fragment that
                // completed it and goes through this loop next (its bytes
                // were counted as fragments).
                if let whole = reassemble(w, m, view, context: context, drops: drops) {
                    bytes &-= UInt64(sl_mbuf_pkt_len(whole)); i &-= 1; rx[i] = whole
                }
            } else if toGateway {
                // IKE (the non-ESP marker, RFC 3948) goes to the local stack, where the port has one.
                if !(d == .notESP && puntToStack(w, m, fib: fib, drops: drops)) { drop(m, .esp(d), drops) }
            } else {
                inboundPolicy(w, m, view, tables: tables, context: context, fib: fib, hops: hops, unprotected: .esp(d), tx: &tx, drops: drops)
            }
        case .esp(let header):
            guard let record = context.replica.inbound(header) else {
                if addressedToGateway(view, fib: fib, hops: hops) {
                    drop(m, .esp(.noSA), drops)
                } else {
                    inboundPolicy(w, m, view, tables: tables, context: context, fib: fib, hops: hops, unprotected: .esp(.noSA), tx: &tx, drops: drops)
                }
                continue
            }
            // Only the owner touches the SA's replay window and counters.
            let owner = Int(record.pointee.owner)
            if owner != context.index {
                guard !handedOver else { drop(m, .handoffStale, drops); continue }
                // owner < workerCount: the compiler checked it, and `peers` has one ring per worker.
                guard let ring = context.peers?[owner], sl_ring_enqueue_one(ring, UnsafeMutableRawPointer(m)) else {
                    drop(m, .handoffFull, drops); continue
                }
                continue
            }
            // Its window still being handed to this worker (`InboundRecord.ready`).
            if _slowPath(!windowReady(record)) { drop(m, .saMoving, drops); continue }
            // Expired already: not worth opening (checked again once opened).
            if lifetimeOver(record) { drop(m, .lifetimeExpired, drops); continue }
            switch ESPInbound.stage(view, header: header, saAt: record.pointer(to: \.sa)!,
                                    window: record.pointee.window.pointee, burst: context.aead) {
            case .dropped(let d):
                drop(m, .esp(d), drops)
            case .admitted(let o):
                opened[toOpen] = StagedOpen(m: m, record: record, view: view, opening: o)
                toOpen &+= 1
            }
        case .notESP:
            // A later piece of a fragmented ESP-in-UDP packet has no UDP header,
            // so every UDP fragment is reassembled where ESP in UDP may be
            // (`udpFragment`; in transit: the same rule as above).
            if udpFragment(view)
                && (addressedToGateway(view, fib: fib, hops: hops) || mayBeTransportESP(view, tables: tables, context: context)) {
                if let whole = reassemble(w, m, view, context: context, drops: drops) {
                    bytes &-= UInt64(sl_mbuf_pkt_len(whole)); i &-= 1; rx[i] = whole
                }
                continue
            }
            inboundPolicy(w, m, view, tables: tables, context: context, fib: fib, hops: hops, unprotected: .plaintextProtected, tx: &tx, drops: drops)
        }
    }
    if !handedOver { w.pointee.counters.rx_bytes &+= bytes }
    if toOpen > 0 {
        openStaged(w, count: toOpen, fib: fib, hops: hops, tables: tables, context: context, prefetch: prefetchData,
                   tx: &tx, drops: drops)
    }
}

/// An ESP packet `ipsecBurst` admitted and added to the worker's AEAD burst,
/// finished once the burst is opened: its mbuf, SA, view and what `admit`
/// found (its sequence number among it).
struct StagedOpen {
    var m: OpaquePointer
    var record: UnsafeMutablePointer<InboundRecord>
    var view: PacketView
    var opening: ESPOpening
}

/// Whether an inbound SA has reached a hard lifetime (packets or bytes).
@inline(__always)
func lifetimeOver(_ record: UnsafeMutablePointer<InboundRecord>) -> Bool {
    let limits = record.pointee.life.limits
    let counters = record.pointee.life.counters
    return (limits.hardPackets != 0 && counters.pointee.packets >= limits.hardPackets)
        || (limits.hardBytes != 0 && counters.pointee.bytes >= limits.hardBytes)
}

/// Opens the ESP packets a burst staged, with one call, then finishes each
/// in arrival order: lifetime (this burst's earlier packets count), the
/// window update and the rest of `ESPInbound.complete`, the SA's counters
/// and lifetime events, and the route of the inner packet.
@inline(__always)
func openStaged(_ w: UnsafeMutablePointer<sl_worker>, count: Int, fib: UnsafeMutablePointer<sl_fib>,
                hops: UnsafeMutablePointer<sl_nexthop>, tables: IPsecTables, context: WorkerIPsec, prefetch: Bool, tx: inout TxCursor,
                drops: UnsafeMutablePointer<UInt64>) {
    let opened = context.opened
    _ = context.aead.openEach(context.core, prefetch: prefetch)
    var k = 0
    while k < count {
        let s = opened[k]
        let authentic = context.aead.isAuthentic(at: k)
        k &+= 1
        let m = s.m
        let record = s.record
        if lifetimeOver(record) { drop(m, .lifetimeExpired, drops); continue }
        var view = s.view
        if let d = ESPInbound.complete(&view, saAt: record.pointer(to: \.sa)!,
                                       window: &record.pointee.window.pointee, opening: s.opening, authentic: authentic) {
            drop(m, .esp(d), drops); continue
        }
        guard assignedBySPD(view, sa: record.pointer(to: \.sa)!, tables: tables) else {
            drop(m, .esp(.selectorMismatch), drops); continue
        }
        // Counted once authenticated; this worker is the only writer.
        let life = record.pointee.life
        let limits = life.limits
        let counters = life.counters
        let packets = counters.pointee.packets &+ 1
        let bytesBefore = counters.pointee.bytes
        let bytes = bytesBefore &+ UInt64(view.length)
        withUnsafeMutablePointer(to: &counters.pointee.packets) { sl_counter_store($0, packets) }
        withUnsafeMutablePointer(to: &counters.pointee.bytes) { sl_counter_store($0, bytes) }
        if limits.softPackets == packets {
            context.expire(hard: false, outbound: false, spi: life.spi, token: life.token, reason: Int32(SL_EXPIRE_PACKETS))
        }
        if limits.hardPackets == packets {
            context.expire(hard: true, outbound: false, spi: life.spi, token: life.token, reason: Int32(SL_EXPIRE_PACKETS))
        }
        if crosses(limits.softBytes, from: bytesBefore, to: bytes) {
            context.expire(hard: false, outbound: false, spi: life.spi, token: life.token, reason: Int32(SL_EXPIRE_BYTES))
        }
        if crosses(limits.hardBytes, from: bytesBefore, to: bytes) {
            context.expire(hard: true, outbound: false, spi: life.spi, token: life.token, reason: Int32(SL_EXPIRE_BYTES))
        }
        // The inner source is the peer's to choose (within the SA's selectors).
        let inner = view.start.assumingMemoryBound(to: UInt8.self)
        let innerV4 = inner[0] >> 4 == 4
        guard !martianSource(inner, ipv4: innerV4) else { drop(m, .martianSource, drops); continue }
        guard !ownSource(inner, ipv4: innerV4, fib: fib) else { drop(m, .ownSource, drops); continue }
        routeRebuilt(w, m, view, fib: fib, hops: hops, decrementTTL: true, tx: &tx, drops: drops)
    }
    context.aead.removeAll()
}

/// Seals the outbound packets a burst collected. Sequence numbers are taken
/// with one atomic reservation per SA per burst (not one per packet), in
/// arrival order, so one SA's packets leave numbered 1, 2, 3… in order. A
/// packet refused after its number was taken (Packet Too Big, or a drop in
/// `stage`) leaves a gap, which RFC 4303 allows; a number is never reused.
/// In three passes: frame every packet (headers, trailer, the seal added to
/// the worker's AEAD burst), seal the burst with one call, send.
@inline(__always)
func sealPending(_ w: UnsafeMutablePointer<sl_worker>, count: Int, fib: UnsafeMutablePointer<sl_fib>,
                 context: WorkerIPsec, hops: UnsafeMutablePointer<sl_nexthop>, prefetch: Bool, tx: inout TxCursor,
                 drops: UnsafeMutablePointer<UInt64>) {
    let sealM = sl_worker_seal_m(w)!
    let sealIP = sl_worker_seal_ip(w)!
    let sealLen = sl_worker_seal_len(w)!
    let sealRecord = context.sealRecord
    let staged = context.staged
    var framed = 0
    var first = 0
    while first < count {
        // The next SA not handled yet, and how many of its packets the burst
        // holds. Records come from this worker's replica, unchanged within the burst.
        guard let record = sealRecord[first] else { first &+= 1; continue }
        var n: UInt64 = 0
        var total: UInt64 = 0
        var j = first
        while j < count {
            if sealRecord[j] == record { n &+= 1; total &+= UInt64(sealLen[j]) }
            j &+= 1
        }
        // Numbers and bytes are taken with atomic read-modify-writes even by
        // an SA's owner (shared-sa handoff): while a change that moves the
        // owner reaches the workers one by one, the old owner and the new
        // one both seal with the same counter, and a plain store would hand
        // out a number twice (a GCM nonce reused). One per SA per burst.
        let life = record.pointee.life
        // Byte lifetime: one atomic add per SA per burst; a packet is sent
        // while the bytes before it are below the hard limit (the packet
        // that reaches it is the last), so `allowed` is a prefix.
        var allowed = n
        if life.softBytes != 0 || life.hardBytes != 0 {
            let before = sl_counter_fetch_add(life.bytes, total)
            if crosses(life.softBytes, from: before, to: before &+ total) {
                context.expire(hard: false, outbound: true, spi: life.spi, token: life.token, reason: Int32(SL_EXPIRE_BYTES))
            }
            if life.hardBytes != 0 {
                if crosses(life.hardBytes, from: before, to: before &+ total) {
                    context.expire(hard: true, outbound: true, spi: life.spi, token: life.token, reason: Int32(SL_EXPIRE_BYTES))
                }
                var sum = before
                allowed = 0
                j = first
                while j < count && sum < life.hardBytes {
                    if sealRecord[j] == record { sum &+= UInt64(sealLen[j]); allowed &+= 1 }
                    j &+= 1
                }
            }
        }
        // Packet lifetime and sequence space: the reservation stops at the
        // SA's last number; the burst that takes it raises EXPIRE(hard).
        let limit = record.pointee.limit
        var granted: UInt64 = 0
        var seq = sl_seq_reserve(record.pointee.next, allowed, limit, &granted)
        if granted > 0 {
            let last = seq &+ (granted &- 1)
            if life.softSequence != 0 && seq <= life.softSequence && life.softSequence <= last {
                context.expire(hard: false, outbound: true, spi: life.spi, token: life.token, reason: Int32(SL_EXPIRE_PACKETS))
            }
            if last == limit {
                context.expire(hard: true, outbound: true, spi: life.spi, token: life.token,
                               reason: Int32(life.packetLimited ? SL_EXPIRE_PACKETS : SL_EXPIRE_SEQUENCE))
            }
        }
        var refused = allowed &- granted  // past the last number: out of packets or of sequence space
        // Tunnel mode: every packet of the SA leaves for its outer destination,
        // looked up once per burst (this burst's FIB snapshot).
        let tunnel = record.pointee.sa.isTunnel
        var tunnelHop: UnsafeMutablePointer<sl_nexthop>? = nil
        // Without a byte limit the SA's bytes are counted as they are sealed
        // (one atomic add after the burst's packets of the SA), for reports.
        let countBytes = life.softBytes == 0 && life.hardBytes == 0
        var sealedBytes: UInt64 = 0
        // The SA's path MTU learnt from ICMP (RFC 4301 §8.2); none: no limit but the port's.
        let learnt = Int(truncatingIfNeeded: sl_counter_load(life.pathMTU))
        let pathMTU = learnt == 0 ? Int.max : learnt
        j = first
        while j < count {
            if sealRecord[j] == record {
                sealRecord[j] = nil
                let m = sealM[j]!
                guard granted > 0 else {
                    if refused > 0 {
                        refused &-= 1
                        drop(m, life.packetLimited ? .lifetimeExpired : .esp(.sequenceExhausted), drops)
                    } else {
                        drop(m, .lifetimeExpired, drops)  // over the byte limit
                    }
                    j &+= 1
                    continue
                }
                granted &-= 1
                var view = ipView(m, ip: UnsafeMutableRawPointer(sealIP[j]!), length: Int(sealLen[j]))
                let sa = record.pointer(to: \.sa)!
                // Where the ESP packet goes: known before it is made, so that
                // one too big for the port is refused unsealed (ICMP quotes it).
                let hop: UnsafeMutablePointer<sl_nexthop>
                if tunnel, let h = tunnelHop {
                    hop = h
                } else if tunnel {
                    hop = outerHop(sa, fib: fib, hops: hops)
                    tunnelHop = hop
                } else {
                    hop = nextHop(view, ipv4: view.start.load(as: UInt8.self) >> 4 == 4, fib: fib, hops: hops)
                }
                // One that may be fragmented is sealed, then cut by sendRebuilt
                // (Fragmentation.swift: only such a packet is still too big there).
                let mtu = min(Int(sl_fib_port_mtu(fib, hop.pointee.port)), pathMTU)
                let tooBig = _slowPath(ESPOutbound.encapsulatedLength(datagramLength: view.length, sa: sa) > mtu) && hopHasPort(hop, fib: fib)
                if tooBig && !ESPOutbound.mayFragment(view, saAt: sa) {
                    packetTooBig(w, m, ip: sealIP[j]!, length: view.length, report: ESPOutbound.largestDatagram(mtu: mtu, sa: sa),
                                 fib: fib, hops: hops, protectedOnly: true, tx: &tx, drops: drops)
                } else {
                    switch ESPOutbound.stage(&view, saAt: sa, sequence: SequenceNumber(seq), burst: context.aead) {
                    case .dropped(let d):
                        drop(m, .esp(d), drops)
                    case .framed(let f):
                        staged[framed] = StagedSeal(m: m, hop: hop, view: view, frame: f, fragment: tooBig, pathMTU: pathMTU)
                        framed &+= 1
                        sealedBytes &+= UInt64(sealLen[j])
                    }
                }
                seq &+= 1
            }
            j &+= 1
        }
        if countBytes && sealedBytes != 0 { _ = sl_counter_fetch_add(life.bytes, sealedBytes) }
        first &+= 1
    }
    if framed == 0 { return }
    // The burst's ciphers, back to back; then each packet is finished and sent.
    context.aead.sealEach(context.core, prefetch: prefetch)
    context.aead.removeAll()
    var k = 0
    while k < framed {
        let s = staged[k]
        k &+= 1
        ESPOutbound.finish(s.view, s.frame)
        if _slowPath(s.fragment) { ESPOutbound.clearDF(s.view) }  // to be cut though `df set`: see `mayFragment`
        sendRebuilt(w, s.m, s.view, ipv4: s.view.start.load(as: UInt8.self) >> 4 == 4, hop: s.hop, fib: fib, hops: hops,
                    sealed: true, pathMTU: s.pathMTU, tx: &tx, drops: drops)
    }
}

/// A packet `sealPending` framed and added to the worker's AEAD burst, sent
/// once the burst is sealed: its mbuf, next hop, ESP packet and frame,
/// whether it is too big for the hop's port (or its SA's path MTU) and
/// leaves in fragments, and its SA's path MTU (`Int.max`: none).
struct StagedSeal {
    var m: OpaquePointer
    var hop: UnsafeMutablePointer<sl_nexthop>
    var view: PacketView
    var frame: ESPFrame
    var fragment: Bool
    var pathMTU: Int
}

/// Seals the outbound packets other workers handed over (this worker owns
/// their SA under shared-sa handoff). A packet whose SA this replica no
/// longer holds (deleted since it was handed over) is dropped, never sealed.
@inline(__always)
func sealHandedOver(_ w: UnsafeMutablePointer<sl_worker>, fib: UnsafeMutablePointer<sl_fib>, context: WorkerIPsec,
                    count n: Int, drops: UnsafeMutablePointer<UInt64>) {
    let sealM = sl_worker_seal_m(w)!
    let sealIP = sl_worker_seal_ip(w)!
    let sealLen = sl_worker_seal_len(w)!
    var tx = TxCursor()
    defer { tx.close() }
    var pending = 0
    var i = 0
    while i < n {
        let h = context.handed[i]
        i &+= 1
        // The record is dereferenced only once the replica holds it (then it is live).
        guard context.replica.holdsOutbound(h.record), h.record.pointee.serial == h.serial else {
            drop(h.m, .handoffStale, drops); continue
        }
        let base = UnsafeMutableRawPointer(sl_mbuf_buf_addr(h.m)!)
        sealM[pending] = h.m
        sealIP[pending] = (base + Int(h.ipOffset)).assumingMemoryBound(to: UInt8.self)
        sealLen[pending] = UInt32(h.length)
        context.sealRecord[pending] = h.record
        pending &+= 1
    }
    if pending > 0 {
        sealPending(w, count: pending, fib: fib, context: context, hops: fib.pointee.nexthops!, prefetch: true, tx: &tx, drops: drops)
    }
}
