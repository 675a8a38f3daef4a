import CShims
import Crypto
import IPsec
import Packet
import Synchronization

/// Mutable state of one outbound SA, shared by the workers that use it: the
/// next sequence number (taken with an atomic reservation, `sl_seq_reserve`).
/// Owned by the control plane, which keeps it across republishes (so a route
/// or policy change never resets a sequence number) and frees it after the
/// last table that refers to it.
public final class OutboundSAState {
    public let key: AEADKey
    /// The SA's counters, shared with every earlier state under the same key.
    let counters: OutboundCounters
    public var next: UnsafeMutablePointer<UInt64> { counters.next }
    /// The last number the sequence space allows (2^32 − 1, or 2^64 − 1 with ESN).
    public let limit: UInt64
    /// The first number sent under this key: packets sent = next − first.
    public var first: UInt64 { counters.first }
    /// Bytes sent (inner packets), added to by every worker using the SA.
    public var bytes: UnsafeMutablePointer<UInt64> { counters.bytes }
    public init(key: consuming AEADKey, next: UInt64, esn: Bool) {
        self.key = key
        counters = OutboundCounters(next: next)
        limit = esn ? UInt64.max : UInt64(UInt32.max)
    }
    /// The state of an SA whose key stays while its engine or ESN setting
    /// changes (`key`: the same key expanded for the new engine). Its
    /// numbers go on from `previous`'s, through the very same counter: the
    /// workers still sealing with the old state until the change reaches
    /// them take from it too, so no number (a GCM nonce) is handed out twice.
    public init(key: consuming AEADKey, continuing previous: OutboundSAState, esn: Bool) {
        self.key = key
        counters = previous.counters
        limit = esn ? UInt64.max : UInt64(UInt32.max)
    }
    /// The next sequence number the SA will send (0 once exhausted past 2^64−1).
    public var nextSequence: UInt64 { sl_seq_load(next) }
    /// Packets sent so far (sequence numbers taken).
    public var packetsSent: UInt64 {
        let n = nextSequence
        return n == 0 ? limit &- first &+ 1 : n &- first
    }
    public var bytesSent: UInt64 { sl_counter_load(bytes) }
    /// The path MTU learnt for the SA's packets from ICMP (RFC 4301 §8.2.1;
    /// `IPsecCompiler.learnPathMTU`), 0 when none: its ESP packets are
    /// held to it as to their port's MTU. Read by the workers once per burst.
    public var pathMTU: UInt64 {
        get { sl_counter_load(counters.pathMTU) }
        set { sl_counter_store(counters.pathMTU, newValue) }
    }
    /// When (monotonic seconds) the control thread last set or confirmed
    /// `pathMTU`; read and written by it alone.
    public var pathMTUSince: Double {
        get { counters.pathMTUSince }
        set { counters.pathMTUSince = newValue }
    }
    /// What the SA's lifetime is kept under: the same for every state of one key.
    public var lifetimeIdentity: UInt64 { counters.serial }
}

/// Serials of SA counters: what the control thread keeps an SA's lifetime
/// under. A freed object's address may come back at once for a new SA's.
let lifetimeSerials = Atomic<UInt64>(0)

/// An outbound SA's sequence counter and byte count (`OutboundSAState`).
final class OutboundCounters {
    let next: UnsafeMutablePointer<UInt64>
    let first: UInt64
    let bytes: UnsafeMutablePointer<UInt64>
    let pathMTU: UnsafeMutablePointer<UInt64>
    var pathMTUSince = 0.0
    /// Never reused, unlike an address (`lifetimeIdentity`).
    let serial = lifetimeSerials.add(1, ordering: .relaxed).newValue
    init(next: UInt64) {
        self.next = .allocate(capacity: 1)
        self.next.initialize(to: next)
        first = next
        bytes = .allocate(capacity: 1)
        bytes.initialize(to: 0)
        pathMTU = .allocate(capacity: 1)
        pathMTU.initialize(to: 0)
    }
    deinit { next.deallocate(); bytes.deallocate(); pathMTU.deallocate() }
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
    /// `OutboundSAState.pathMTU`.
    var pathMTU: UnsafeMutablePointer<UInt64>
    var spi: UInt32
    /// Which record this is (`SARecordBox.lifeToken`), named by its EXPIRE events.
    var token: UInt32
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
    /// Which record this is (`SARecordBox.lifeToken`), named by its EXPIRE events.
    var token: UInt32
}

/// Mutable state of one inbound SA: its replay window (written by the worker
/// that receives the SA's packets; RSS on the SPI keeps an SA on one queue).
public final class InboundSAState {
    public let key: AEADKey
    public let window: UnsafeMutablePointer<ReplayWindow>
    /// The SA's counters, shared with every earlier state under the same key.
    let cell: InboundCounterCell
    public var counters: UnsafeMutablePointer<InboundCounters> { cell.counters }
    /// `previous`: the state of the SA when its key stays while its window
    /// size, engine or ESN setting changes. What it accepted so far goes on
    /// counting in the very same counters (lifetime limits see one SA). Only
    /// one worker writes them at a time: the old record's owner until it
    /// hands the window over (`SADCommand.handover`), the new one after.
    public init(key: consuming AEADKey, window: ReplayWindow, continuing previous: InboundSAState? = nil) {
        self.key = key
        self.window = .allocate(capacity: 1)
        self.window.initialize(to: window)
        cell = previous?.cell ?? InboundCounterCell()
    }
    deinit { window.pointee.deallocate(); window.deallocate() }
    public var packetsReceived: UInt64 { withUnsafePointer(to: &counters.pointee.packets) { sl_counter_load($0) } }
    public var bytesReceived: UInt64 { withUnsafePointer(to: &counters.pointee.bytes) { sl_counter_load($0) } }
    /// What the SA's lifetime is kept under: the same for every state of one key.
    public var lifetimeIdentity: UInt64 { cell.serial }
}

/// An inbound SA's counters (`InboundSAState`).
final class InboundCounterCell {
    let counters: UnsafeMutablePointer<InboundCounters>
    /// Never reused, unlike an address (`lifetimeIdentity`).
    let serial = lifetimeSerials.add(1, ordering: .relaxed).newValue
    init() {
        counters = .allocate(capacity: 1)
        counters.initialize(to: InboundCounters())
    }
    deinit { counters.deallocate() }
}

/// The IPsec snapshot the workers read: the outbound SPD and the inbound one
/// (`in` and `fwd` policies), each a classifier of the driver the compiler
/// chose. What the workers read is immutable once built (`sad`, which only
/// the control thread touches, is emptied once committed); published with
/// one atomic store plus a generation beside the FIB and freed after an RCU
/// grace period. The SAs are not in it: they live in each worker's SAD
/// replica, and `sad` is the change to the replicas that goes with this
/// snapshot (committed to every replica before the snapshot is published,
/// so a policy never names a protect target the replicas do not know yet).
public final class IPsecTables {
    public let outSPD: SPDTable
    public let inSPD: SPDTable
    public let workerCount: Int
    let natPorts: NATTraversalPorts
    /// The replica change that goes with this snapshot, until the gateway
    /// has committed it (`forgetSAD`).
    public private(set) var sad: SADChange
    /// Inbound SAs the replicas hold once `sad` is committed.
    public let inboundSACount: Int

    public init(outSPD: SPDTable, inSPD: SPDTable, workerCount: Int, natPorts: NATTraversalPorts, sad: SADChange,
                inboundSACount: Int) {
        precondition(workerCount > 0 && (sad.targets.isEmpty || sad.targets.count == workerCount),
                     "target commands come per worker")
        self.outSPD = outSPD
        self.inSPD = inSPD
        self.workerCount = workerCount
        self.natPorts = natPorts
        self.sad = sad
        self.inboundSACount = inboundSACount
    }

    /// Empties the replica change once committed: the published snapshot
    /// lives until the next publish, and must not keep the records (and
    /// keys) the change removed alive until then. The gateway keeps what it
    /// still needs.
    func forgetSAD() { sad = SADChange() }
}

/// An outbound packet handed to the worker that seals its SA (24 bytes, one ring element).
struct HandedPacket {
    var m: OpaquePointer
    var record: UnsafeMutablePointer<OutboundRecord>
    /// Where its IP packet starts in the mbuf's buffer, and its length.
    var ipOffset: UInt16
    var length: UInt16
    /// `record.serial` when it was handed over: the owner seals it only if
    /// its replica still holds that very record (not another at its address).
    var serial: UInt32
}

/// A change to every worker's SAD replica: commands common to all (inbound
/// SAs), then each worker's own (what each protect target resolves to on
/// that core), and the records the change adds and removes (the gateway
/// keeps the added ones alive and frees the removed ones once committed).
public struct SADChange {
    /// Start from empty replicas (the first change of a compiler).
    public var clearFirst = false
    public var common: [SADCommand] = []
    /// `targets[worker]`; empty: none.
    public var targets: [[SADCommand]] = []
    public var added: [SARecordBox] = []
    public var removed: [SARecordBox] = []
    /// Protect targets no policy of the new snapshot names, and the outbound
    /// records only they still resolved to: they leave the replicas in a
    /// second change once the snapshot is published (`Gateway.publish`), so
    /// that a worker still on the old snapshot seals with them meanwhile
    /// (make-before-break: no `no_outbound_sa` drop, no spurious ACQUIRE).
    /// `releasedTargets[worker]`; empty: none.
    public var releasedTargets: [[SADCommand]] = []
    public var releasedCommon: [SADCommand] = []
    public var releasedRecords: [SARecordBox] = []
    public init() {}
    public var isEmpty: Bool { !clearFirst && common.isEmpty && targets.allSatisfy(\.isEmpty) }

    /// The second change (see `releasedTargets`); empty when nothing waits.
    public var released: SADChange {
        var r = SADChange()
        r.common = releasedCommon
        r.targets = releasedTargets
        r.removed = releasedRecords
        return r
    }
}

/// Inbound SA parameters for a record, with the SA's mutable state.
extension SARecordBox {
    /// Tokens of the records made so far: each record's EXPIRE events name
    /// its token, so the control thread retires the SA of that record only
    /// (not another SA with the same SPI, nor the record a later change put
    /// in its place).
    private static let lifeTokens = Atomic<UInt32>(0)
    static func newLifeToken() -> UInt32 { lifeTokens.add(1, ordering: .relaxed).newValue }

    /// This record's token (`newLifeToken`).
    public var lifeToken: UInt32 { inbound?.pointee.life.token ?? outbound?.pointee.life.token ?? 0 }

    /// `ready` false: the window is handed over by the installed record's
    /// owner (`SADCommand.handover`, `InboundRecord.ready`).
    public convenience init(inbound sa: InboundSA, state: InboundSAState, limits: SALimits, owner: Int, ready: Bool = true) {
        let specificity: Int32 = (sa.destination != nil ? 2 : 0) + (sa.source != nil ? 1 : 0)
        self.init(InboundRecord(sa: sa, window: state.window,
                                life: InboundLife(limits: limits, counters: state.counters, spi: sa.spi.rawValue,
                                                  token: SARecordBox.newLifeToken()),
                                owner: Int32(owner), specificity: specificity, ready: ready ? 1 : 0), state: state)
    }

    /// `owner`: the worker that seals the SA's packets in handoff mode, −1: any.
    public convenience init(outbound sa: OutboundSA, state: OutboundSAState, limits: SALimits, fallback: Bool = false,
                            owner: Int = -1) {
        // hardPackets packets: numbers first … first + hardPackets − 1; a
        // limit past 2^64 − 1 is no limit (it must not wrap to a small one).
        func last(_ packets: UInt64) -> UInt64? {
            guard packets != 0 else { return nil }
            let (end, over) = state.first.addingReportingOverflow(packets &- 1)
            return over ? nil : end
        }
        let hardEnd = last(limits.hardPackets)
        let limit = hardEnd.map { min(state.limit, $0) } ?? state.limit
        let life = OutboundLife(softSequence: last(limits.softPackets) ?? 0,
                                packetLimited: hardEnd.map { $0 <= state.limit } ?? false,
                                softBytes: limits.softBytes, hardBytes: limits.hardBytes, bytes: state.bytes,
                                pathMTU: state.counters.pathMTU, spi: sa.spi.rawValue, token: SARecordBox.newLifeToken())
        self.init(OutboundRecord(sa: sa, next: state.next, limit: limit, life: life, owner: Int32(owner), fallback: fallback),
                  state: state)
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
    /// ACQUIRE rate limit: the policies that raised one from this core in
    /// the last second and when, in an open-addressing table (a policy's
    /// entry is among the `acquireProbe` slots from its hash; a stale
    /// entry's slot is taken again). With every slot of a policy's run held
    /// by others this second, it raises none: policies never push each
    /// other out of the table to pass the limit again.
    let acquirePolicy: UnsafeMutablePointer<UInt32>
    let acquireTSC: UnsafeMutablePointer<UInt64>
    static let acquireSlots = 256
    static let acquireProbe = 4
    /// And at most `acquiresPerSecond` ACQUIREs from this core per
    /// one-second window (`acquireBudget` left in the window opened at
    /// `acquireSecond`), whatever the policies, so that they cannot fill the
    /// event ring an EXPIRE needs.
    var acquireBudget = 0
    var acquireSecond: UInt64 = 0
    static let acquiresPerSecond = 64
    /// Path MTU reports from this core: `pathMTUBudget` left in the
    /// one-second window opened at `pathMTUSecond` (`reportPathMTU`).
    var pathMTUBudget = 0
    var pathMTUSecond: UInt64 = 0
    public static let pathMTUReportsPerSecond = 32
    /// Leaves SA changes on the command ring (tests: a worker that stalls).
    let commandsHeld = Atomic<Bool>(false)
    /// Set by the worker when it found `commandsHeld` set: from then on it
    /// takes no change posted later (`Gateway.holdSADCommands` waits for it).
    let holdSeen = Atomic<Bool>(false)
    /// The worker's counters: events that did not fit in the ring are
    /// counted there (`events_lost`), not retried.
    let counters: UnsafeMutablePointer<sl_counters>
    /// Packets other workers hand over (their SA's replay window is ours):
    /// a lock-free multi-producer, single-consumer ring of mbufs.
    let handoff: OpaquePointer
    /// Every worker's `handoff` ring, by worker index (set by the gateway).
    var peers: UnsafeMutablePointer<OpaquePointer?>? = nil
    /// Outbound packets other workers hand over to be sealed here (shared-sa
    /// handoff): MP/SC ring of `HandedPacket`.
    let sealHandoff: OpaquePointer
    /// Every worker's `sealHandoff` ring, by worker index (set by the gateway).
    var sealPeers: UnsafeMutablePointer<OpaquePointer?>? = nil
    /// Per burst: the SA each pending packet is sealed with.
    let sealRecord: UnsafeMutablePointer<UnsafeMutablePointer<OutboundRecord>?>
    /// Per burst: the AEAD work of its ESP packets (sealed or opened with
    /// one call), and the sealed packets waiting to be sent.
    let aead: AEADBurst
    let staged: UnsafeMutablePointer<StagedSeal>
    let opened: UnsafeMutablePointer<StagedOpen>
    /// One burst of handed-over packets.
    let handed: UnsafeMutablePointer<HandedPacket>
    /// This worker's SAD replica, changed only through `commands`.
    public let replica: SADReplica
    /// SP/SC ring of `SADBatch` pointers (the control thread produces).
    let commands: OpaquePointer
    /// The generation of the last batch applied (written by the worker, release).
    let acked: UnsafeMutablePointer<UInt64>
    /// This worker's reassembly table (fragments addressed to the gateway).
    let reassembly: OpaquePointer
    /// Its timeout, in TSC cycles.
    let reassemblyTimeout: UInt64
    /// Until when (TSC) the table may hold fragments: the worker sweeps out
    /// expired datagrams until then (0: nothing held).
    var reassemblySweepUntil: UInt64 = 0

    /// Capacities of the replicas (the compiler refuses more: `IPsecCompiler.saCapacity`, `targetCapacity`).
    public static let saCapacity = 1 << 17
    public static let targetCapacity = 1 << 16

    public init(index: Int, lcore: UInt32, socket: Int32, name: String, counters: UnsafeMutablePointer<sl_counters>,
                inboundSACapacity: Int = WorkerIPsec.saCapacity,
                targetCapacity: Int = WorkerIPsec.targetCapacity,
                reassemblyTimeout seconds: Double = Reassembly.defaultTimeout) throws(CryptoError) {
        core = try CryptoCore()
        aead = try AEADBurst()
        self.index = index
        self.lcore = lcore
        self.counters = counters
        guard let ring = sl_event_ring_create(name, 1024, socket) else {
            throw .outOfMemory  // DPDK memory for the ring
        }
        events = ring
        guard let handoffRing = rte_ring_create(name + "h", 2048, socket, UInt32(RING_F_SC_DEQ)) else {
            rte_ring_free(ring)
            throw .outOfMemory
        }
        handoff = handoffRing
        guard let commandRing = rte_ring_create(name + "c", 256, socket, UInt32(RING_F_SP_ENQ | RING_F_SC_DEQ)) else {
            rte_ring_free(ring)
            rte_ring_free(handoffRing)
            throw .outOfMemory
        }
        commands = commandRing
        guard let sealRing = rte_ring_create_elem(name + "o", 24, 2048, socket, UInt32(RING_F_SC_DEQ)) else {
            rte_ring_free(ring)
            rte_ring_free(handoffRing)
            rte_ring_free(commandRing)
            throw .outOfMemory
        }
        sealHandoff = sealRing
        let timeoutCycles = UInt64(max(seconds, 0.001) * Double(sl_tsc_hz()))
        guard let table = sl_reasm_create(UInt32(Reassembly.maxDatagrams), timeoutCycles, socket, name + "j") else {
            rte_ring_free(ring)
            rte_ring_free(handoffRing)
            rte_ring_free(commandRing)
            rte_ring_free(sealRing)
            throw .outOfMemory
        }
        reassembly = table
        reassemblyTimeout = timeoutCycles
        sealRecord = .allocate(capacity: Int(SL_BURST))
        sealRecord.initialize(repeating: nil, count: Int(SL_BURST))
        handed = .allocate(capacity: Int(SL_BURST))
        staged = .allocate(capacity: Int(SL_BURST))
        opened = .allocate(capacity: Int(SL_BURST))
        acked = .allocate(capacity: 1)
        acked.initialize(to: 0)
        replica = SADReplica(inboundCapacity: inboundSACapacity, targetCapacity: targetCapacity)
        replica.worker = index
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
        rte_ring_free(commands)  // batches still queued belong to the gateway
        rte_ring_free(sealHandoff)
        sl_reasm_destroy(reassembly)
        acked.deallocate()
        sealRecord.deallocate()
        handed.deallocate()
        staged.deallocate()
        opened.deallocate()
        fields.deallocate()
        values.deallocate()
        acquirePolicy.deallocate()
        acquireTSC.deallocate()
    }

    /// Applies the SAD batches the control thread posted, in order, and
    /// acknowledges the last one's generation. Between bursts only (the
    /// worker, or the control thread while the worker is stopped: that one
    /// does not honour `commandsHeld`, a stalled worker's stand-in, which
    /// must not leave batches behind a newer one it applies).
    @inline(__always)
    func applyCommands(honouringHold: Bool = true) {
        if honouringHold && commandsHeld.load(ordering: .relaxed) {
            holdSeen.store(true, ordering: .releasing)
            return
        }
        var batch: UnsafeMutableRawPointer? = nil
        var last: UInt64 = 0
        while sl_ring_dequeue_burst(commands, &batch, 1) == 1, let b = batch {
            let p = UnsafePointer<SADBatch>(b.assumingMemoryBound(to: SADBatch.self))
            replica.apply(p)
            last = p.pointee.generation
        }
        if last != 0 { sl_ack_store(acked, last) }
    }

    /// Frees the packets other workers handed over that this one has not
    /// processed (received, never sent). Only while the worker is stopped.
    func freeHandedOver() {
        var m: UnsafeMutableRawPointer? = nil
        while sl_ring_dequeue_burst(handoff, &m, 1) == 1 { if let m { sl_mbuf_free(OpaquePointer(m)) } }
        while sl_ring_dequeue_burst_elem24(sealHandoff, handed, 1) == 1 { sl_mbuf_free(handed.pointee.m) }
    }

    /// The first slot of `policyID`'s run: Fibonacci hashing, the top 8 bits
    /// (ids come 1, 2, 3…).
    @inline(__always)
    static func acquireHome(_ policyID: UInt32) -> Int {
        Int(truncatingIfNeeded: (policyID &* 0x9E37_79B1) >> 24) & (acquireSlots - 1)
    }

    /// Reports that policy `policyID` has no SA of this core's own (`fields`'
    /// packet was dropped, or sealed with a `per-cpu` policy's fallback): at
    /// most one ACQUIRE per policy and core per second, and
    /// `acquiresPerSecond` per core. Never allocates.
    @inline(never)
    func acquire(policyID: UInt32, _ fields: SelectorFields) {
        let now = sl_tsc()
        let second = sl_tsc_hz()
        let home = Self.acquireHome(policyID)
        var free = -1
        var i = 0
        while i < Self.acquireProbe {
            let slot = (home &+ i) & (Self.acquireSlots - 1)
            i &+= 1
            let recent = now &- acquireTSC[slot] < second
            if acquirePolicy[slot] == policyID {
                if recent { return }
                free = slot
                break
            }
            if free < 0 && !recent { free = slot }
        }
        guard free >= 0 else { return }
        if now &- acquireSecond >= second {
            acquireSecond = now
            acquireBudget = Self.acquiresPerSecond
        }
        guard acquireBudget > 0 else { return }
        acquireBudget &-= 1
        acquirePolicy[free] = policyID
        acquireTSC[free] = now
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
        if sl_event_push(events, &e) != 0 { counters.pointee.events_lost &+= 1 }
    }

    /// Reports that SA `spi` (its record's `token`) reached a soft or hard
    /// lifetime limit. Each limit is crossed by exactly one packet, so each
    /// event is raised once.
    @inline(never)
    func expire(hard: Bool, outbound: Bool, spi: UInt32, token: UInt32, reason: Int32) {
        var e = sl_event()
        e.kind = UInt8(hard ? SL_EVENT_EXPIRE_HARD : SL_EVENT_EXPIRE_SOFT)
        e.family = outbound ? 0 : 1
        e.proto = UInt8(reason)
        e.policy_id = spi
        e.lcore = lcore
        e.sa_token = token
        if sl_event_push(events, &e) != 0 { counters.pointee.events_lost &+= 1 }
    }

    /// Reports an ICMP "too big" message about one of the gateway's ESP
    /// packets (`PathMTUReport`) to the control thread, which maps it to the
    /// outbound SA (`IPsecCompiler.learnPathMTU`). At most
    /// `pathMTUReportsPerSecond` from this core per one-second window: a
    /// flood of forged messages costs the control thread little and leaves
    /// the event ring to ACQUIRE and EXPIRE.
    @inline(never)
    func reportPathMTU(_ report: PathMTUReport) {
        let now = sl_tsc()
        if now &- pathMTUSecond >= sl_tsc_hz() {
            pathMTUSecond = now
            pathMTUBudget = Self.pathMTUReportsPerSecond
        }
        guard pathMTUBudget > 0 else { return }
        pathMTUBudget &-= 1
        var e = sl_event()
        e.kind = UInt8(SL_EVENT_PATH_MTU)
        e.family = report.destination.isIPv6 ? 6 : 4
        e.proto = report.udp ? IPProtocol.udp.rawValue : IPProtocol.esp.rawValue
        e.policy_id = report.spi
        e.lcore = lcore
        e.sport = UInt16(clamping: report.mtu)
        e.sa_token = report.sequence
        withUnsafeMutableBytes(of: &e.src) { Self.store(report.source, $0) }
        withUnsafeMutableBytes(of: &e.dst) { Self.store(report.destination, $0) }
        if sl_event_push(events, &e) != 0 { counters.pointee.events_lost &+= 1 }
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
