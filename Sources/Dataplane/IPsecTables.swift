import CShims
import Crypto
import IPsec

/// Mutable state of one outbound SA, shared by the workers that use it: the
/// next sequence number (taken with an atomic reservation, `sl_seq_reserve`).
/// Owned by the control plane, which keeps it across republishes (so a route
/// or policy change never resets a sequence number) and frees it after the
/// last table that refers to it.
public final class OutboundSAState {
    public let key: AEADKey
    public let next: UnsafeMutablePointer<UInt64>
    /// The last number the sequence space allows (2^32 − 1, or 2^64 − 1 with ESN).
    public let limit: UInt64
    /// The first number this state sent: packets sent = next − first.
    public let first: UInt64
    /// Bytes sent (inner packets), added to by every worker using the SA.
    public let bytes: UnsafeMutablePointer<UInt64>
    public init(key: consuming AEADKey, next: UInt64, esn: Bool) {
        self.key = key
        self.next = .allocate(capacity: 1)
        self.next.initialize(to: next)
        first = next
        bytes = .allocate(capacity: 1)
        bytes.initialize(to: 0)
        limit = esn ? UInt64.max : UInt64(UInt32.max)
    }
    deinit { next.deallocate(); bytes.deallocate() }
    /// The next sequence number the SA will send (0 once exhausted past 2^64−1).
    public var nextSequence: UInt64 { sl_seq_load(next) }
    /// Packets sent so far (sequence numbers taken).
    public var packetsSent: UInt64 {
        let n = nextSequence
        return n == 0 ? limit &- first &+ 1 : n &- first
    }
    public var bytesSent: UInt64 { sl_counter_load(bytes) }
}

/// Byte and packet limits of an SA's lifetime as the workers enforce them
/// (0: no limit). Seconds are the control thread's.
public struct SALimits: Sendable, BitwiseCopyable, Equatable {
    public var softPackets: UInt64 = 0
    public var hardPackets: UInt64 = 0
    public var softBytes: UInt64 = 0
    public var hardBytes: UInt64 = 0
    public init(softPackets: UInt64 = 0, hardPackets: UInt64 = 0, softBytes: UInt64 = 0, hardBytes: UInt64 = 0) {
        self.softPackets = softPackets
        self.hardPackets = hardPackets
        self.softBytes = softBytes
        self.hardBytes = hardBytes
    }
}

/// What a worker needs to enforce an outbound SA's lifetime.
struct OutboundLife: BitwiseCopyable {
    /// The sequence number whose packet reaches the soft packet limit (0: none).
    var softSequence: UInt64
    /// Whether the SA's last sequence number comes from a packet limit (else the sequence space).
    var packetLimited: Bool
    var softBytes: UInt64
    var hardBytes: UInt64
    var bytes: UnsafeMutablePointer<UInt64>
    var spi: UInt32
}

/// Packets and bytes an inbound SA accepted: written by the worker that
/// receives the SA, read by the control thread.
public struct InboundCounters {
    public var packets: UInt64 = 0
    public var bytes: UInt64 = 0
}

/// What a worker needs to enforce an inbound SA's lifetime.
struct InboundLife: BitwiseCopyable {
    var limits: SALimits
    var counters: UnsafeMutablePointer<InboundCounters>
    var spi: UInt32
}

/// Mutable state of one inbound SA: its replay window (written by the worker
/// that receives the SA's packets; RSS on the SPI keeps an SA on one queue).
public final class InboundSAState {
    public let key: AEADKey
    public let window: UnsafeMutablePointer<ReplayWindow>
    public let counters: UnsafeMutablePointer<InboundCounters>
    public init(key: consuming AEADKey, window: ReplayWindow) {
        self.key = key
        self.window = .allocate(capacity: 1)
        self.window.initialize(to: window)
        counters = .allocate(capacity: 1)
        counters.initialize(to: InboundCounters())
    }
    deinit { window.pointee.deallocate(); window.deallocate(); counters.deallocate() }
    public var packetsReceived: UInt64 { withUnsafePointer(to: &counters.pointee.packets) { sl_counter_load($0) } }
    public var bytesReceived: UInt64 { withUnsafePointer(to: &counters.pointee.bytes) { sl_counter_load($0) } }
}

/// The IPsec snapshot the workers read: the outbound SPD and the inbound one
/// (`in` and `fwd` policies), each a classifier of the driver the compiler
/// chose, and the SAs with their precomputed parameters. Immutable once
/// built; published with one atomic store plus a generation beside the FIB and
/// freed after an RCU grace period. Everything the fast path touches is in
/// raw buffers (no Swift arrays, no ARC per packet).
public final class IPsecTables {
    public let outSPD: SPDTable
    public let inSPD: SPDTable
    /// Outbound protect targets: `outGroupSA[group * workerCount + worker]` is
    /// the SA (index in `outSAs`) worker `worker` uses for the verdicts of
    /// `group`, or −1: none (drop, ACQUIRE). An `spi` target gives every
    /// worker the same SA; a `reqid` target each worker its per-CPU SA or the
    /// fallback (RFC 9611).
    let outGroupSA: UnsafeMutableBufferPointer<Int32>
    public let workerCount: Int
    let outSAs: UnsafeMutableBufferPointer<OutboundSA>
    let outNext: UnsafeMutableBufferPointer<UnsafeMutablePointer<UInt64>>
    /// The last sequence number each SA may send: the sequence space or its packet lifetime.
    let outLimit: UnsafeMutableBufferPointer<UInt64>
    let outLife: UnsafeMutableBufferPointer<OutboundLife>
    /// Inbound SAs, most specific first for equal SPIs (SPI+dst+src, SPI+dst, SPI).
    let inSAs: UnsafeMutableBufferPointer<InboundSA>
    let inWindows: UnsafeMutableBufferPointer<UnsafeMutablePointer<ReplayWindow>>
    let inLife: UnsafeMutableBufferPointer<InboundLife>
    let inOwner: UnsafeMutableBufferPointer<Int32>
    /// SPI → the first of `inSAs` with that SPI: open addressing over a
    /// power of two of slots, at most half full; a slot holds
    /// `spi << 32 | (index + 1)`, 0 when empty.
    let inIndex: UnsafeMutableBufferPointer<UInt64>
    let inIndexShift: UInt64
    let natPorts: NATTraversalPorts
    /// Keeps keys and mutable state alive as long as these tables.
    private let owners: [AnyObject]

    public struct Outbound {
        public var sa: OutboundSA
        public var state: OutboundSAState
        public var limits: SALimits
        public init(sa: OutboundSA, state: OutboundSAState, limits: SALimits = SALimits()) {
            self.sa = sa; self.state = state; self.limits = limits
        }
    }
    public struct Inbound {
        public var sa: InboundSA
        public var state: InboundSAState
        public var limits: SALimits
        /// The worker (index among the gateway's workers) that keeps the
        /// SA's replay window; packets other workers receive are handed to it.
        public var owner: Int
        public init(sa: InboundSA, state: InboundSAState, limits: SALimits = SALimits(), owner: Int = 0) {
            self.sa = sa; self.state = state; self.limits = limits; self.owner = owner
        }
    }

    /// Outbound protect verdicts name a group of `outGroupSA` (`workerCount`
    /// entries per group, each an index in `outbound` or −1).
    public init(outSPD: SPDTable, inSPD: SPDTable, outGroupSA: [Int32], workerCount: Int, outbound: [Outbound],
                inbound: [Inbound], natPorts: NATTraversalPorts) {
        func buffer<T>(_ xs: [T]) -> UnsafeMutableBufferPointer<T> {
            let b = UnsafeMutableBufferPointer<T>.allocate(capacity: max(xs.count, 1))
            _ = b.initialize(from: xs)
            return UnsafeMutableBufferPointer(rebasing: b[0..<xs.count])
        }
        self.outSPD = outSPD
        self.inSPD = inSPD
        precondition(workerCount > 0 && outGroupSA.count % workerCount == 0, "a group has one entry per worker")
        self.outGroupSA = buffer(outGroupSA)
        self.workerCount = workerCount
        outSAs = buffer(outbound.map(\.sa))
        outNext = buffer(outbound.map(\.state.next))
        outLimit = buffer(outbound.map { o in
            // hardPackets packets: numbers first … first + hardPackets − 1.
            o.limits.hardPackets == 0 ? o.state.limit
                : min(o.state.limit, o.state.first &+ (o.limits.hardPackets &- 1))
        })
        outLife = buffer(outbound.map { o in
            OutboundLife(softSequence: o.limits.softPackets == 0 ? 0 : o.state.first &+ (o.limits.softPackets &- 1),
                         packetLimited: o.limits.hardPackets != 0
                            && o.state.first &+ (o.limits.hardPackets &- 1) <= o.state.limit,
                         softBytes: o.limits.softBytes, hardBytes: o.limits.hardBytes, bytes: o.state.bytes,
                         spi: o.sa.spi.rawValue)
        })
        func specificity(_ s: InboundSA) -> Int { (s.destination != nil ? 2 : 0) + (s.source != nil ? 1 : 0) }
        let inOrdered = inbound.sorted { ($0.sa.spi.rawValue, -specificity($0.sa)) < ($1.sa.spi.rawValue, -specificity($1.sa)) }
        inSAs = buffer(inOrdered.map(\.sa))
        inWindows = buffer(inOrdered.map(\.state.window))
        inLife = buffer(inOrdered.map { InboundLife(limits: $0.limits, counters: $0.state.counters, spi: $0.sa.spi.rawValue) })
        precondition(inOrdered.allSatisfy { $0.owner >= 0 && $0.owner < workerCount }, "an inbound SA's owner is a worker")
        inOwner = buffer(inOrdered.map { Int32($0.owner) })
        var bits = 4
        while (1 << bits) < 2 * inOrdered.count { bits += 1 }
        var slots = [UInt64](repeating: 0, count: 1 << bits)
        let shift = UInt64(64 - bits)
        for (i, entry) in inOrdered.enumerated() where i == 0 || inOrdered[i - 1].sa.spi != entry.sa.spi {
            let spi = entry.sa.spi.rawValue
            var slot = Int(truncatingIfNeeded: Self.spiHash(spi) >> shift)
            while slots[slot] != 0 { slot = (slot + 1) & (slots.count - 1) }
            slots[slot] = UInt64(spi) << 32 | UInt64(i + 1)
        }
        inIndex = buffer(slots)
        inIndexShift = shift
        self.natPorts = natPorts
        owners = outbound.map(\.state) + inbound.map(\.state)
    }

    deinit {
        for b in [UnsafeMutableRawBufferPointer(outGroupSA), UnsafeMutableRawBufferPointer(outSAs),
                  UnsafeMutableRawBufferPointer(outNext), UnsafeMutableRawBufferPointer(outLimit),
                  UnsafeMutableRawBufferPointer(outLife), UnsafeMutableRawBufferPointer(inLife),
                  UnsafeMutableRawBufferPointer(inIndex), UnsafeMutableRawBufferPointer(inOwner),
                  UnsafeMutableRawBufferPointer(inSAs), UnsafeMutableRawBufferPointer(inWindows)] {
            b.baseAddress?.deallocate()
        }
    }

    /// Fibonacci hashing of an SPI (the top bits index the table).
    @inline(__always)
    static func spiHash(_ spi: UInt32) -> UInt64 { UInt64(spi) &* 0x9E37_79B9_7F4A_7C15 }

    /// The inbound SA for an ESP header: the most specific SA with its SPI whose addresses match, or −1.
    @inline(__always)
    func inboundSA(for header: ESPInboundHeader) -> Int {
        // The first SA with the SPI from the hash index, then the first whose addresses match.
        let spi = header.spi.rawValue
        let mask = inIndex.count &- 1
        var slot = Int(truncatingIfNeeded: Self.spiHash(spi) >> inIndexShift)
        var lo = -1
        while true {
            // slot <= mask < inIndex.count; the table is at most half full, so an empty slot ends the probe.
            let entry = inIndex[slot]
            if entry == 0 { return -1 }
            if UInt32(truncatingIfNeeded: entry >> 32) == spi { lo = Int(truncatingIfNeeded: entry & 0xFFFF_FFFF) &- 1; break }
            slot = (slot &+ 1) & mask
        }
        while lo < inSAs.count && inSAs[lo].spi.rawValue == spi {
            if inSAs[lo].matches(header) { return lo }
            lo &+= 1
        }
        return -1
    }
}

/// A worker's IPsec context, created at set-up: its crypto context
/// (intel-ipsec-mb manager), the per-burst classifier scratch, and its event
/// ring to the control thread with the ACQUIRE rate limiter. Written only by
/// its worker (the control thread only dequeues events).
public final class WorkerIPsec {
    public let core: CryptoCore
    /// One burst of parsed selector fields and their classifier results.
    let fields: UnsafeMutablePointer<SelectorFields>
    let values: UnsafeMutablePointer<UInt32>
    /// The worker's position among the gateway's workers, and its lcore.
    let index: Int
    let lcore: UInt32
    /// SP/SC ring of `sl_event` (the worker produces, the control thread consumes).
    let events: OpaquePointer
    /// ACQUIRE rate limit: per slot (policy id mod `acquireSlots`), the
    /// policy and the TSC of its last ACQUIRE from this core.
    let acquirePolicy: UnsafeMutablePointer<UInt32>
    let acquireTSC: UnsafeMutablePointer<UInt64>
    static let acquireSlots = 64
    /// Events that did not fit in the ring (counted, not retried).
    var eventsLost: UInt64 = 0
    /// Packets other workers hand over (their SA's replay window is ours):
    /// a lock-free multi-producer, single-consumer ring of mbufs.
    let handoff: OpaquePointer
    /// Every worker's `handoff` ring, by worker index (set by the gateway).
    var peers: UnsafeMutablePointer<OpaquePointer?>? = nil

    public init(index: Int, lcore: UInt32, socket: Int32, name: String) throws(CryptoError) {
        core = try CryptoCore()
        self.index = index
        self.lcore = lcore
        guard let ring = sl_event_ring_create(name, 1024, socket) else {
            throw .outOfMemory  // DPDK memory for the ring
        }
        events = ring
        guard let handoffRing = rte_ring_create(name + "h", 2048, socket, UInt32(RING_F_SC_DEQ)) else {
            rte_ring_free(ring)
            throw .outOfMemory
        }
        handoff = handoffRing
        fields = .allocate(capacity: Int(SL_BURST))
        values = .allocate(capacity: Int(SL_BURST))
        values.initialize(repeating: SPDNoMatch, count: Int(SL_BURST))
        acquirePolicy = .allocate(capacity: Self.acquireSlots)
        acquirePolicy.initialize(repeating: 0, count: Self.acquireSlots)
        acquireTSC = .allocate(capacity: Self.acquireSlots)
        acquireTSC.initialize(repeating: 0, count: Self.acquireSlots)
    }

    deinit {
        rte_ring_free(events)
        freeHandedOver()
        rte_ring_free(handoff)
        fields.deallocate()
        values.deallocate()
        acquirePolicy.deallocate()
        acquireTSC.deallocate()
    }

    /// Frees the packets other workers handed over that this one has not
    /// processed (received, never sent). Only while the worker is stopped.
    func freeHandedOver() {
        var m: UnsafeMutableRawPointer? = nil
        while sl_ring_dequeue_burst(handoff, &m, 1) == 1 { if let m { sl_mbuf_free(OpaquePointer(m)) } }
    }

    /// Reports that policy `policyID` had no SA for this core and `fields`'
    /// packet was dropped: at most one ACQUIRE per policy and core per second.
    /// The drop path only; never allocates.
    @inline(never)
    func acquire(policyID: UInt32, _ fields: SelectorFields) {
        let slot = Int(policyID) & (Self.acquireSlots - 1)
        let now = sl_tsc()
        if acquirePolicy[slot] == policyID && now &- acquireTSC[slot] < sl_tsc_hz() { return }
        acquirePolicy[slot] = policyID
        acquireTSC[slot] = now
        var e = sl_event()
        e.kind = UInt8(SL_EVENT_ACQUIRE)
        e.family = fields.source.isIPv6 ? 6 : 4
        e.proto = fields.proto
        e.has_ports = fields.hasPorts ? 1 : 0
        e.policy_id = policyID
        e.lcore = lcore
        e.sport = fields.sourcePort
        e.dport = fields.destinationPort
        withUnsafeMutableBytes(of: &e.src) { Self.store(fields.source, $0) }
        withUnsafeMutableBytes(of: &e.dst) { Self.store(fields.destination, $0) }
        if sl_event_push(events, &e) != 0 { eventsLost &+= 1 }
    }

    /// Reports that SA `spi` reached a soft or hard lifetime limit. Each limit
    /// is crossed by exactly one packet, so each event is raised once.
    @inline(never)
    func expire(hard: Bool, outbound: Bool, spi: UInt32, reason: Int32) {
        var e = sl_event()
        e.kind = UInt8(hard ? SL_EVENT_EXPIRE_HARD : SL_EVENT_EXPIRE_SOFT)
        e.family = outbound ? 0 : 1
        e.proto = UInt8(reason)
        e.policy_id = spi
        e.lcore = lcore
        if sl_event_push(events, &e) != 0 { eventsLost &+= 1 }
    }

    /// The address in network byte order (IPv4: the first 4 bytes).
    private static func store(_ a: RawIPAddress, _ to: UnsafeMutableRawBufferPointer) {
        if a.isIPv6 {
            to.storeBytes(of: a.high.bigEndian, toByteOffset: 0, as: UInt64.self)
            to.storeBytes(of: a.low.bigEndian, toByteOffset: 8, as: UInt64.self)
        } else {
            to.storeBytes(of: UInt32(truncatingIfNeeded: a.low).bigEndian, toByteOffset: 0, as: UInt32.self)
        }
    }
}
