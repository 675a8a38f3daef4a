import CShims
import Glibc
import Packet
import Synchronization
import Crypto

/// Counters of one worker core, copied out of its context.
public struct CoreCounters: Sendable {
    public var lcore: UInt32
    public var queue: UInt16
    public var socket: Int32
    public var rxPackets: UInt64
    public var rxBytes: UInt64
    public var txPackets: UInt64
    public var rxBursts: UInt64
    public var polls: UInt64
    /// TSC cycles spent in loop iterations that received packets.
    public var busyCycles: UInt64
    /// Fragments addressed to the gateway taken for reassembly, and the
    /// datagrams they made whole. A datagram of k fragments counts k
    /// received packets, k fragments and one reassembled; it leaves (or is
    /// dropped) as one packet.
    public var fragments: UInt64
    public var reassembled: UInt64
    /// Datagrams this core sent in fragments, and the fragments it made of
    /// them (each also counts as a transmitted packet).
    public var fragmented: UInt64
    public var fragmentsOut: UInt64
    /// Frames handed to a port's local stack (`port … punt M`), and frames a
    /// local stack sent, relayed out of the port it serves (each counted in
    /// rx and tx as well).
    public var punted: UInt64
    public var fromStack: UInt64
    /// Frames and packets handed to the neighbour agent, and frames it sent.
    public var toAgent: UInt64
    public var fromAgent: UInt64
    /// ICMP errors this core queued for TX (each then a transmitted packet,
    /// or a `tx_full` drop; its cause a drop), and errors it did not send
    /// because of its rate limit.
    public var icmpErrors: UInt64
    public var icmpLimited: UInt64
    /// ACQUIRE and EXPIRE events this core could not queue (its event ring was full).
    public var eventsLost: UInt64
    /// Indexed by `DropReason.rawValue`.
    public var drops: [UInt64]
    public var totalDrops: UInt64 { drops.reduce(0, &+) }
    /// Busy cycles per received packet: the core's cost, independent of how fast it was fed.
    public var cyclesPerPacket: Double { rxPackets == 0 ? 0 : Double(busyCycles) / Double(rxPackets) }

    public init(lcore: UInt32, queue: UInt16, socket: Int32) {
        self.lcore = lcore; self.queue = queue; self.socket = socket
        rxPackets = 0; rxBytes = 0; txPackets = 0; rxBursts = 0; polls = 0; busyCycles = 0
        fragments = 0; reassembled = 0; fragmented = 0; fragmentsOut = 0; punted = 0; fromStack = 0; toAgent = 0; fromAgent = 0
        icmpErrors = 0; icmpLimited = 0; eventsLost = 0
        drops = Array(repeating: 0, count: DropReason.allCases.count)
    }

    /// The field-wise sum of `cores` (all zero for none).
    public static func total(_ cores: [CoreCounters]) -> CoreCounters {
        cores.dropFirst().reduce(cores.first ?? CoreCounters(lcore: 0, queue: 0, socket: 0), +)
    }

    /// Field-wise sum, for totals.
    public static func + (a: CoreCounters, b: CoreCounters) -> CoreCounters { a.combined(with: b, by: (&+)) }

    /// Field-wise difference: what was counted between reading `b` and reading `a`.
    public static func - (a: CoreCounters, b: CoreCounters) -> CoreCounters { a.combined(with: b, by: (&-)) }

    /// Every counter of `self` and `b`'s combined by `op` (one list of the
    /// counters for every field-wise operation); lcore, queue and socket are `self`'s.
    private func combined(with b: CoreCounters, by op: (UInt64, UInt64) -> UInt64) -> CoreCounters {
        var r = self
        r.rxPackets = op(rxPackets, b.rxPackets); r.rxBytes = op(rxBytes, b.rxBytes); r.txPackets = op(txPackets, b.txPackets)
        r.rxBursts = op(rxBursts, b.rxBursts); r.polls = op(polls, b.polls); r.busyCycles = op(busyCycles, b.busyCycles)
        r.fragments = op(fragments, b.fragments); r.reassembled = op(reassembled, b.reassembled)
        r.fragmented = op(fragmented, b.fragmented); r.fragmentsOut = op(fragmentsOut, b.fragmentsOut)
        r.punted = op(punted, b.punted); r.fromStack = op(fromStack, b.fromStack)
        r.toAgent = op(toAgent, b.toAgent); r.fromAgent = op(fromAgent, b.fromAgent)
        r.icmpErrors = op(icmpErrors, b.icmpErrors); r.icmpLimited = op(icmpLimited, b.icmpLimited)
        r.eventsLost = op(eventsLost, b.eventsLost)
        for i in r.drops.indices { r.drops[i] = op(drops[i], b.drops[i]) }
        return r
    }
}

/// A frame or held packet the workers handed the neighbour agent (`Gateway.agentReceive`).
public struct AgentFrame: Sendable {
    public var port: UInt16
    public var held: Bool
    public var bytes: [UInt8]

    public init(port: UInt16, held: Bool, bytes: [UInt8]) {
        self.port = port
        self.held = held
        self.bytes = bytes
    }
}

/// The running data plane: ports configured with one queue pair per worker,
/// NUMA-local per-core contexts, the forwarding snapshot and its RCU.
/// Owned and driven by the control thread (the EAL main lcore); workers never
/// call into it.
public final class Gateway {
    public let ports: [PortSetup]
    public let workerLcores: [UInt32]
    /// Placement problems found at set-up (a worker polling a port on another NUMA node).
    public let topologyWarnings: [String]
    /// Every mempool, by NUMA socket.
    public let mempools: [Int32: OpaquePointer]
    private let workers: [UnsafeMutablePointer<sl_worker>]
    private let shared: UnsafeMutablePointer<sl_shared>
    private let qsbr: OpaquePointer
    /// The RCU reader slot after the workers' (see `withExtraReader`).
    private let extraReader: UInt32
    private var generation: UInt64 = 0
    /// Snapshots unpublished but not yet provably unused (a worker missed the grace period).
    private var retired: [(token: UInt64, free: () -> Void)] = []
    /// One crypto context per worker (nil where intel-ipsec-mb could not be set up).
    private var cryptos: [WorkerIPsec] = []
    /// Why crypto is unavailable, when it is.
    public private(set) var cryptoUnavailable: String? = nil
    private var running = false
    /// The last `stopWorkers(timeout:)` returned with a worker still running.
    private var stopTimedOut = false
    private var started = false
    private var portsClosed = false
    /// How long `publish` waits for every worker to pass a quiescent state.
    public var gracePeriodTimeout: Double = 1.0
    /// Where warnings go (a worker missing a grace period, …).
    public var log: @Sendable (String) -> Void = { writeStandardError("sluice: \($0)\n") }

    /// Sets up `portIDs` (every probed port when nil) for the EAL's worker lcores.
    /// `extraMbufs` reserves mempool room for an in-process traffic source.
    /// `workerLcores` defaults to every EAL worker lcore. `reassemblyTimeout`:
    /// seconds a datagram addressed to the gateway may take to arrive whole
    /// from its first fragment (Reassembly.swift).
    public init(portIDs: [UInt16]? = nil, roles: [UInt16: PortRoleCode] = [:], workerLcores: [UInt32]? = nil, extraMbufs: Int = 0,
                reassemblyTimeout: Double = Reassembly.defaultTimeout,
                rxDescriptors: Int = PortControl.defaultRxDescriptors,
                txDescriptors: Int = PortControl.defaultTxDescriptors) throws(DataplaneError) {
        let lcores = workerLcores ?? EAL.workerLcores
        guard !lcores.isEmpty else {
            throw DataplaneError("no worker lcores: give the EAL at least two lcores (e.g. -l 0-1 or --lcores '0@0,1@1'); the main lcore runs the control thread")
        }
        let available = try PortInfo.available()
        var infos: [PortInfo] = []
        for id in portIDs ?? available.map(\.id) {
            guard let p = available.first(where: { $0.id == id }) else {
                throw DataplaneError("port \(id) does not exist (the EAL found \(available.count) ports\(available.isEmpty ? "" : ": " + available.map { "\($0.id) (\($0.name))" }.joined(separator: ", ")))")
            }
            guard Int(id) < Int(SL_MAX_PORTS) else { throw DataplaneError("port \(id): port ids above \(SL_MAX_PORTS - 1) are not supported") }
            try PortControl.checkQueues(p, workers: lcores.count)
            infos.append(p)
        }
        guard !infos.isEmpty else { throw DataplaneError("no ports: pass NIC ports (-a <PCI>) or virtual devices (--vdev) to the EAL") }

        // What a throw before every stored property is set must give back
        // itself (deinit runs only after that: `workers = ctxs` below), in
        // reverse order: ports closed before the pools their queues use.
        var undo: [() -> Void] = []
        var deinitOwnsAll = false
        defer { if !deinitOwnsAll { for u in undo.reversed() { u() } } }

        // One mempool per NUMA socket that has workers or ports, sized from the
        // descriptors and buffers that can hold mbufs at once.
        let workerSockets = lcores.map { EAL.socket(ofLcore: $0) }
        let sockets = Set(workerSockets + infos.map(\.socket))
        let cache = 256
        var pools: [Int32: OpaquePointer] = [:]
        for s in sockets.sorted() {
            let queuesHere = workerSockets.filter { $0 == s }.count
            let perQueue = rxDescriptors + txDescriptors + Int(SL_TX_BUFFER)
            // Each worker's reassembly table may hold up to Reassembly.mbufsHeld fragments.
            var n = infos.count * max(queuesHere, 1) * perQueue
                + max(queuesHere, 1) * (Int(SL_BURST) + cache + Reassembly.mbufsHeld + Gateway.agentRingSize)
                + Gateway.agentRingSize + extraMbufs + 1024
            n = (1 << (Int.bitWidth - (n - 1).leadingZeroBitCount)) - 1  // 2^k − 1 suits the mempool ring
            guard let mp = sl_pktmbuf_pool_create("sl_mbuf\(Gateway.instanceSerial.add(1, ordering: .relaxed).newValue)_s\(s)", UInt32(n), UInt32(cache), s) else {
                throw .dpdkErrno("cannot create a mempool of \(n) mbufs on socket \(s) (give the EAL more memory, e.g. -m 512)")
            }
            pools[s] = mp
            undo.append { rte_mempool_free(mp) }
        }
        mempools = pools

        var setups: [PortSetup] = []
        for p in infos {
            setups.append(try PortControl.configure(p, rxPools: workerSockets.map { pools[$0]! }, rxSockets: workerSockets,
                                                    rxDescriptors: rxDescriptors, txDescriptors: txDescriptors))
            // Not one that failed: it may be another gateway's, running (busy).
            undo.append { PortControl.stopAndClose(p.id) }
        }
        ports = setups
        self.workerLcores = lcores
        var warnings: [String] = []
        for p in infos where p.socketKnown {
            for (q, lcore) in lcores.enumerated() where workerSockets[q] != p.socket {
                warnings.append("worker lcore \(lcore) (NUMA node \(workerSockets[q])) polls port \(p.id) (\(p.name)) on node \(p.socket): every packet crosses the interconnect; map workers onto the port's node")
            }
        }
        topologyWarnings = warnings

        guard let sharedMem = rte_zmalloc("sl_shared", MemoryLayout<sl_shared>.size, UInt32(SL_CACHE_LINE)) else {
            throw DataplaneError("out of DPDK memory (shared state)")
        }
        shared = sharedMem.assumingMemoryBound(to: sl_shared.self)
        undo.append { rte_free(sharedMem) }
        // One reader slot per worker, plus one for readers outside the
        // workers (`withExtraReader`).
        let qsbrSize = rte_rcu_qsbr_get_memsize(UInt32(lcores.count + 1))
        guard let q = rte_zmalloc("sl_qsbr", qsbrSize, UInt32(SL_CACHE_LINE)) else {
            throw DataplaneError("out of DPDK memory (RCU)")
        }
        qsbr = OpaquePointer(q)
        undo.append { rte_free(q) }
        _ = rte_rcu_qsbr_init(qsbr, UInt32(lcores.count + 1))
        extraReader = UInt32(lcores.count)

        var ctxs: [UnsafeMutablePointer<sl_worker>] = []
        for (q, lcore) in lcores.enumerated() {
            let socket = workerSockets[q]
            guard let mem = rte_zmalloc_socket("sl_worker", MemoryLayout<sl_worker>.size, UInt32(SL_CACHE_LINE), socket) else {
                throw DataplaneError("out of DPDK memory on socket \(socket) (worker context)")
            }
            undo.append { rte_free(mem) }
            let w = mem.assumingMemoryBound(to: sl_worker.self)
            w.pointee.lcore_id = lcore
            w.pointee.qsbr_thread_id = UInt32(q)
            w.pointee.queue_id = UInt16(q)
            w.pointee.socket_id = socket
            w.pointee.qsbr = qsbr
            w.pointee.shared = shared
            w.pointee.nb_ports = UInt16(setups.count)
            w.pointee.pool = pools[socket]
            sl_worker_frag_init(w)
            let ids = sl_worker_port_ids(w)!
            let prefetch = sl_worker_port_prefetch(w)!
            let roleCodes = sl_worker_port_roles(w)!
            for (i, p) in setups.enumerated() {
                ids[i] = p.info.id
                roleCodes[i] = (roles[p.info.id] ?? .unprotected).rawValue
                prefetch[i] = PortInfo.prefetchPolicy(driver: p.info.driver)
                let txq = sl_worker_txq(w, p.info.id)!
                txq.pointee.port = p.info.id
                txq.pointee.queue = UInt16(q)
                txq.pointee.enabled = 1
            }
            ctxs.append(w)
        }
        workers = ctxs
        deinitOwnsAll = true
        // The neighbour agent's rings (NeighborHandoff.swift).
        let agentSerial = Gateway.instanceSerial.add(1, ordering: .relaxed).newValue
        var toAgent: [OpaquePointer] = []
        for (i, w) in ctxs.enumerated() {
            guard let r = rte_ring_create("sl_ag\(agentSerial)_\(i)", UInt32(Gateway.agentRingSize), w.pointee.socket_id,
                                          UInt32(RING_F_SP_ENQ | RING_F_SC_DEQ)) else {
                for r in toAgent { rte_ring_free(r) }
                throw .dpdkErrno("cannot create the neighbour agent's ring for worker \(i)")
            }
            w.pointee.agent_rx = r
            toAgent.append(r)
        }
        guard let fromAgent = rte_ring_create("sl_agt\(agentSerial)", UInt32(Gateway.agentRingSize), ctxs[0].pointee.socket_id,
                                              UInt32(RING_F_SP_ENQ | RING_F_SC_DEQ)) else {
            for r in toAgent { rte_ring_free(r) }
            throw .dpdkErrno("cannot create the neighbour agent's send ring")
        }
        ctxs[0].pointee.agent_tx = fromAgent
        agentRings = toAgent
        agentSendRing = fromAgent
        precondition(DropReason.allCases.count <= Int(SL_DROP_REASON_MAX), "more drop reasons than counter slots")
        do {
            let serial = Gateway.instanceSerial.add(1, ordering: .relaxed).newValue
            for (i, w) in ctxs.enumerated() {
                let c = try WorkerIPsec(index: i, lcore: w.pointee.lcore_id, socket: w.pointee.socket_id,
                                        name: "sl_ev\(serial)_\(i)", counters: w.pointer(to: \.counters)!,
                                        reassemblyTimeout: reassemblyTimeout)
                cryptos.append(c)
                w.pointee.crypto = Unmanaged.passUnretained(c).toOpaque()
            }
            // Every worker can hand inbound packets to any other's ring.
            let rings = UnsafeMutablePointer<OpaquePointer?>.allocate(capacity: max(cryptos.count, 1))
            for (i, c) in cryptos.enumerated() { rings[i] = c.handoff }
            for c in cryptos { c.peers = rings }
            handoffRings = rings
            let sealRings = UnsafeMutablePointer<OpaquePointer?>.allocate(capacity: max(cryptos.count, 1))
            for (i, c) in cryptos.enumerated() { sealRings[i] = c.sealHandoff }
            for c in cryptos { c.sealPeers = sealRings }
            sealHandoffRings = sealRings
        } catch {
            cryptoUnavailable = error.description
            for w in ctxs { w.pointee.crypto = nil }
            cryptos = []
        }
        // Workers always find a snapshot: start with an empty one (everything "no route").
        try publish(routes: [])
    }

    /// Mbufs each neighbour agent ring holds at most.
    static let agentRingSize = 512
    /// Each worker's ring to the neighbour agent, and the agent's ring to the first worker.
    private var agentRings: [OpaquePointer] = []
    private var agentSendRing: OpaquePointer? = nil

    /// Each worker's handoff ring, by worker index (shared by the workers' contexts).
    private var handoffRings: UnsafeMutablePointer<OpaquePointer?>? = nil
    private var sealHandoffRings: UnsafeMutablePointer<OpaquePointer?>? = nil

    /// Whether this gateway's workers feed DPDK telemetry (`publishTelemetry`).
    private var telemetry = false

    /// Registers the `/sluice/…` telemetry commands (once per process) and
    /// points `/sluice/stats` and `/sluice/cores` at these workers' counters.
    /// false when DPDK telemetry is off (`--no-telemetry`) or refused them.
    @discardableResult
    public func publishTelemetry() -> Bool {
        if !Self.telemetryRegistered.exchange(true, ordering: .relaxed) {
            _ = sl_telemetry_register()
            let names = DropReason.allCases.map(\.name)
            var pointers = names.map { strdup($0) }
            pointers.withUnsafeBufferPointer { b in
                b.withMemoryRebound(to: UnsafePointer<CChar>?.self) { sl_telemetry_set_drop_names($0.baseAddress, UInt32($0.count)) }
            }
            for p in pointers { free(p) }
            pointers.removeAll()
        }
        workers.withUnsafeBufferPointer { b in
            b.withMemoryRebound(to: UnsafeMutablePointer<sl_worker>?.self) {
                sl_telemetry_set_workers($0.baseAddress, UInt32($0.count))
            }
        }
        telemetry = true
        return true
    }
    static let telemetryRegistered = Atomic<Bool>(false)

    /// Makes DPDK object names unique when a process builds several gateways (tests).
    static let instanceSerial = Atomic<Int>(0)

    deinit {
        // A worker that did not return from a timed stop may still read
        // any of it: all is left as it is (the process is about to exit).
        if running && stopTimedOut { return }
        stop()
        if telemetry { sl_telemetry_set_workers(nil, 0) }
        defer { handoffRings?.deallocate(); sealHandoffRings?.deallocate() }
        for r in agentRings + (agentSendRing.map { [$0] } ?? []) {
            var m: UnsafeMutableRawPointer? = nil
            while sl_ring_dequeue_burst(r, &m, 1) == 1 { sl_mbuf_free(OpaquePointer(m!)) }
            rte_ring_free(r)
        }
        // The worker contexts hold mbufs (handoff rings, reassembly) until
        // they go: before the pools. A stopped gateway has none left; one
        // whose start failed midway may.
        cryptos.removeAll()
        for mp in mempools.values { rte_mempool_free(mp) }
        if let f = sl_shared_fib(shared) { ForwardingTable.free(f) }
        if let t = sl_shared_ipsec(shared) { Unmanaged<IPsecTables>.fromOpaque(t).release() }
        for r in retired { r.free() }
        for p in sadPending { for b in p.batches { b.pointee.commands.deallocate(); b.deallocate() } }
        for w in workers { rte_free(w) }
        rte_free(UnsafeMutableRawPointer(qsbr))
        rte_free(shared)
    }

    public var currentGeneration: UInt64 { sl_shared_generation(shared) }

    /// Builds a forwarding snapshot from `routes`, publishes it with one atomic
    /// store, waits (bounded) for every worker to pass a quiescent state and
    /// frees the previous one. A worker that misses the deadline delays only the
    /// free, never the publish: the old snapshot is kept and retried later.
    public func publish(routes: [RouteEntry], ports portSettings: [PortForwarding] = []) throws(DataplaneError) {
        publish(try prepareForwarding(routes: routes, ports: portSettings))
    }

    /// Builds a forwarding snapshot and publishes nothing: everything that can
    /// fail about a route change fails here, so a change that publishes other
    /// tables too can build this first and publish it last, when nothing can
    /// fail any more (`publish(_:)`).
    public func prepareForwarding(routes: [RouteEntry], ports portSettings: [PortForwarding] = []) throws(DataplaneError) -> PreparedForwarding {
        // Workers index their TX buffers by port: only ports they drive may appear.
        let driven = Set(ports.map(\.info.id))
        for r in routes {
            if case .forward(let port, _, _) = r.nextHop, !driven.contains(port) {
                throw DataplaneError("route \(r.prefix) leaves by port \(port), which this gateway does not drive (ports: \(driven.sorted().map(String.init).joined(separator: ", ")))")
            }
        }
        generation &+= 1
        let socket = workers.first.map { $0.pointee.socket_id } ?? 0
        return PreparedForwarding(try ForwardingTable.build(routes: routes, ports: portSettings, socket: socket, generation: generation))
    }

    /// Publishes a prepared snapshot (which cannot fail); the snapshot is the
    /// gateway's from here on.
    public func publish(_ prepared: PreparedForwarding) {
        guard let fib = prepared.take() else { return }
        let old = sl_shared_fib(shared)
        sl_shared_publish_fib(shared, fib)
        let token = rte_rcu_qsbr_start(qsbr)
        if let old { retired.append((token, { ForwardingTable.free(old) })) }
        reclaim(after: token, wait: gracePeriodTimeout)
    }

    /// Publishes IPsec tables (nil: no SPD, plain routing) the same way as a
    /// forwarding snapshot: one atomic store, then the old tables are released
    /// after every worker passed a quiescent state.
    public func publish(ipsec tables: IPsecTables?) throws(DataplaneError) {
        if tables != nil, let why = cryptoUnavailable {
            throw DataplaneError("IPsec needs a crypto context on every worker: \(why)")
        }
        if let tables, tables.workerCount != workers.count {
            // Workers index the per-CPU SA table by their position.
            throw DataplaneError("IPsec tables compiled for \(tables.workerCount) workers, the gateway has \(workers.count)")
        }
        // The replicas first: the snapshot's verdicts may name targets only they resolve.
        var change = tables?.sad ?? SADChange()
        if tables == nil && (!installedRecords.isEmpty || sl_shared_ipsec(shared) != nil) {
            change.clearFirst = true  // IPsec off: the replicas forget every SA and target
        }
        let released = change.released
        let second = !released.isEmpty || !released.removed.isEmpty
        // Room for both changes on every ring before the first (which may be
        // empty): the second must not fail once the snapshot is published.
        if second { try awaitCommandRoom(2) }
        try commitSAD(change)
        let firstAcknowledged = sadCommitWarning == nil
        tables?.forgetSAD()
        let old = sl_shared_ipsec(shared)
        sl_shared_publish_ipsec(shared, tables.map { Unmanaged.passRetained($0).toOpaque() })
        let token = rte_rcu_qsbr_start(qsbr)
        if let old { retired.append((token, { Unmanaged<IPsecTables>.fromOpaque(old).release() })) }
        // Targets only the old snapshot named: a worker applies changes at the
        // start of an iteration and reads the snapshot after, so once it takes
        // this one it no longer looks them up. Not waited for when a worker
        // did not take the first in time (the control thread waits once); its
        // records are freed once it is taken.
        if second {
            do {
                try commitSAD(released, awaitAcknowledgement: firstAcknowledged)
            } catch {
                log("warning: cannot release protect targets the old policies used: \(error)")
            }
        }
        reclaim(after: token, wait: gracePeriodTimeout)
    }

    // MARK: SAD replicas

    /// Every record some replica may hold (the gateway keeps them alive).
    private var installedRecords: [ObjectIdentifier: SARecordBox] = [:]
    private var sadGeneration: UInt64 = 0
    /// Posted batches and removed records, freed once every worker acknowledged `generation`.
    private var sadPending: [(generation: UInt64, batches: [UnsafeMutablePointer<SADBatch>], records: [SARecordBox])] = []
    /// How long a commit waits for every worker's acknowledgement.
    public var sadCommitTimeout: Double = 2.0
    /// The outcome of the last SAD commit that some worker did not acknowledge in time (nil: all did).
    public private(set) var sadCommitWarning: String? = nil

    /// The last generation every worker acknowledged.
    private var sadAcknowledged: UInt64 {
        cryptos.map { sl_ack_load($0.acked) }.min() ?? sadGeneration
    }

    /// Waits (up to `sadCommitTimeout`) until every running worker's command
    /// ring has `slots` free: the control thread is the rings' only producer,
    /// so the room stays. A worker that lets its batches pile up (255) is
    /// stalled, and nothing is posted.
    private func awaitCommandRoom(_ slots: Int) throws(DataplaneError) {
        guard running else { return }
        let deadline = monotonicSeconds() + sadCommitTimeout
        while let full = cryptos.first(where: { Int(sl_ring_free_count($0.commands)) < slots }) {
            if monotonicSeconds() > deadline {
                throw DataplaneError("worker lcore \(full.lcore) has not taken SA changes for \(sadCommitTimeout) s (its command ring is full); nothing of this change was applied")
            }
            usleep(20)
        }
    }

    /// Commits a change to every worker's SAD replica: posts one batch per
    /// worker on its command ring and waits (up to `sadCommitTimeout`) until
    /// every worker applied it between two bursts. Records the change removes
    /// are freed only after that. With the workers stopped the control thread
    /// applies the batches itself. A worker that does not answer in time gets
    /// the batch when it runs again (the change is never half-applied: each
    /// worker applies it whole); the wait ends with a warning in
    /// `sadCommitWarning`, logged, and the removed records are kept until it does.
    /// `awaitAcknowledgement` false: posted, not waited for (nor warned about).
    public func commitSAD(_ change: SADChange, awaitAcknowledgement: Bool = true) throws(DataplaneError) {
        releaseAcknowledgedSAD()
        if change.isEmpty && change.added.isEmpty && change.removed.isEmpty {
            sadCommitWarning = nil  // nothing to acknowledge
            return
        }
        if !change.isEmpty && cryptos.isEmpty {
            throw DataplaneError("IPsec needs a crypto context on every worker: \(cryptoUnavailable ?? "none")")
        }
        if !change.targets.isEmpty && change.targets.count != cryptos.count {
            throw DataplaneError("SA change compiled for \(change.targets.count) workers, the gateway has \(cryptos.count)")
        }
        try awaitCommandRoom(1)
        for box in change.added { installedRecords[ObjectIdentifier(box)] = box }
        var removed = change.removed
        if change.clearFirst {
            let kept = Set(change.added.map(ObjectIdentifier.init))
            removed = Array(installedRecords.values.filter { !kept.contains(ObjectIdentifier($0)) })
            installedRecords = Dictionary(uniqueKeysWithValues: change.added.map { (ObjectIdentifier($0), $0) })
        } else {
            for box in removed { installedRecords[ObjectIdentifier(box)] = nil }
        }
        sadGeneration &+= 1
        let generation = sadGeneration
        var batches: [UnsafeMutablePointer<SADBatch>] = []
        for (i, c) in cryptos.enumerated() {
            let own = change.targets.isEmpty ? [] : change.targets[i]
            let all = (change.clearFirst ? [SADCommand.clear] : []) + change.common + own
            let commands = UnsafeMutablePointer<SADCommand>.allocate(capacity: max(all.count, 1))
            commands.initialize(from: all, count: all.count)
            let batch = UnsafeMutablePointer<SADBatch>.allocate(capacity: 1)
            batch.initialize(to: SADBatch(generation: generation, count: all.count, commands: commands))
            batches.append(batch)
            if running {
                let posted = sl_ring_enqueue_one_sp(c.commands, UnsafeMutableRawPointer(batch))
                precondition(posted, "a worker's SA command ring lost the room checked above")
            } else {
                c.applyCommands(honouringHold: false)  // anything a stalled worker left, in order
                c.replica.apply(UnsafePointer(batch))
                sl_ack_store(c.acked, generation)
            }
        }
        sadPending.append((generation, batches, removed))
        guard awaitAcknowledgement else { return }
        let start = monotonicSeconds()
        let deadline = start + sadCommitTimeout
        sadCommitWarning = nil
        while sadAcknowledged < generation {
            // A polling worker answers within a loop iteration (microseconds):
            // spin for the first 200 µs, then sleep between looks.
            if monotonicSeconds() - start < 200e-6 {
                sl_pause()
                continue
            }
            if monotonicSeconds() > deadline {
                let late = cryptos.filter { sl_ack_load($0.acked) < generation }.map { String($0.lcore) }
                let warning = "SA change \(generation) not acknowledged by worker lcore \(late.joined(separator: ",")) within \(sadCommitTimeout) s: the other workers use it; the late ones apply it when they run again (the records it removed are kept until then)"
                sadCommitWarning = warning
                log("warning: " + warning)
                return
            }
            usleep(20)
        }
        releaseAcknowledgedSAD()
    }

    /// Frees the batches and removed records of every change all workers acknowledged.
    private func releaseAcknowledgedSAD() {
        let acked = sadAcknowledged
        sadPending.removeAll { p in
            guard p.generation <= acked else { return false }
            for b in p.batches { b.pointee.commands.deallocate(); b.deallocate() }
            return true
        }
    }

    /// Makes the worker on `lcore` leave SA changes on its command ring, as
    /// a stalled worker would (tests), or take them again. Holding a running
    /// worker returns once it has seen the hold (5 s at most), so no change
    /// posted after the call is taken by an iteration that read the flag
    /// before it was set (a worker preempted between the flag and its ring,
    /// on a busy machine).
    func holdSADCommands(lcore: UInt32, _ held: Bool) {
        guard let c = cryptos.first(where: { $0.lcore == lcore }) else { return }
        c.holdSeen.store(false, ordering: .relaxed)
        c.commandsHeld.store(held, ordering: .sequentiallyConsistent)
        guard held, running else { return }
        let deadline = monotonicSeconds() + 5
        while !c.holdSeen.load(ordering: .acquiring) && monotonicSeconds() < deadline { usleep(100) }
    }

    /// SA records the replicas may hold (for tests and reports).
    public var installedSARecords: Int { installedRecords.count }

    /// Events the workers reported since the last call (ACQUIRE), in worker
    /// order. The control thread only: each ring has one consumer.
    public func drainEvents() -> [sl_event] {
        var out: [sl_event] = []
        var e = sl_event()
        for c in cryptos {
            while sl_event_pop(c.events, &e) == 0 { out.append(e) }
        }
        return out
    }

    /// What the workers handed the neighbour agent since the last call: ARP
    /// and Neighbor Discovery frames (`held` false, `port` the arrival port)
    /// and IP packets waiting for a neighbour (`held`, `port` the port they
    /// leave by, `bytes` the IP packet). At most `limit` per worker per
    /// call, so that a flood cannot hold the control thread. The control
    /// thread only.
    public func agentReceive(limit: Int = 256) -> [AgentFrame] {
        var out: [AgentFrame] = []
        var burst = [UnsafeMutableRawPointer?](repeating: nil, count: Int(SL_BURST))
        for r in agentRings {
            var taken = 0
            while taken < limit {
                let n = Int(burst.withUnsafeMutableBufferPointer {
                    sl_ring_dequeue_burst(r, $0.baseAddress, UInt32(min(Int(SL_BURST), limit - taken)))
                })
                if n == 0 { break }
                taken += n
                for m in burst[0..<n] {
                    let mbuf = OpaquePointer(m!)
                    let tag = sl_mbuf_port(mbuf)
                    let data = sl_mbuf_data(mbuf)!
                    out.append(AgentFrame(port: tag & ~UInt16(SL_AGENT_HELD), held: tag & UInt16(SL_AGENT_HELD) != 0,
                                          bytes: Array(UnsafeBufferPointer(start: data, count: Int(sl_mbuf_data_len(mbuf))))))
                    sl_mbuf_free(mbuf)
                }
            }
        }
        return out
    }

    /// Queues `frame` (a whole Ethernet frame, padded to Ethernet's 60-byte
    /// minimum) to leave by `port`, sent by the first worker at its next
    /// poll. false when no mbuf or ring room is left (the agent retries
    /// later). The control thread only.
    @discardableResult
    public func agentSend(_ frame: [UInt8], port: UInt16) -> Bool {
        guard let ring = agentSendRing, frame.count <= Int(sl_mbuf_default_buf_size()) - 128,
              let pool = mempools[workers[0].pointee.socket_id], let m = sl_mbuf_alloc(pool) else { return false }
        let padded = frame.count < 60 ? frame + [UInt8](repeating: 0, count: 60 - frame.count) : frame
        sl_mbuf_set_len(m, UInt16(padded.count))
        padded.withUnsafeBytes { sl_mbuf_data(m)!.update(from: $0.bindMemory(to: UInt8.self).baseAddress!, count: padded.count) }
        sl_mbuf_set_port(m, port)
        guard sl_ring_enqueue_one_sp(ring, UnsafeMutableRawPointer(m)) else { sl_mbuf_free(m); return false }
        return true
    }

    /// Snapshots retired but not yet freed (a reader has not passed a
    /// quiescent state since they were replaced).
    public var retiredSnapshots: Int { retired.count }

    /// Runs `body` with one more RCU reader registered and online that reports
    /// no quiescent state until `body` returns — a reader outside the workers
    /// (a diagnostic walking a snapshot), and how the tests make a reader
    /// stall. Snapshots replaced meanwhile are kept, not freed.
    public func withExtraReader<T>(_ body: () throws -> T) rethrows -> T {
        _ = rte_rcu_qsbr_thread_register(qsbr, extraReader)
        rte_rcu_qsbr_thread_online(qsbr, extraReader)
        defer {
            rte_rcu_qsbr_thread_offline(qsbr, extraReader)
            _ = rte_rcu_qsbr_thread_unregister(qsbr, extraReader)
        }
        return try body()
    }

    /// Waits (up to `wait` seconds) until every reader passed a quiescent state
    /// after `token` — so no burst that started before the publish is still
    /// running, and the next one sees the new snapshot, even when there was no
    /// old snapshot to free — and frees retired snapshots whose grace period
    /// has passed.
    private func reclaim(after token: UInt64, wait: Double) {
        let deadline = monotonicSeconds() + wait
        while true {
            retired.removeAll { r in
                if rte_rcu_qsbr_check(qsbr, r.token, false) == 1 { r.free(); return true }
                return false
            }
            if retired.isEmpty && rte_rcu_qsbr_check(qsbr, token, false) == 1 { return }
            if monotonicSeconds() > deadline {
                log("warning: a worker (or other RCU reader) has not reported quiescence for \(wait) s; \(retired.count) old snapshot(s) (forwarding or IPsec) kept until it does")
                return
            }
            usleep(50)
        }
    }

    /// Starts the ports and launches one worker per worker lcore.
    /// Once: a stopped gateway's stop request stays set and its ports may
    /// be closed, so it does not start again (build a new one).
    public func start() throws(DataplaneError) {
        guard !started else { throw DataplaneError("this gateway has been started before; a gateway starts once") }
        started = true
        for p in ports { try PortControl.start(p.info.id) }
        for (i, w) in workers.enumerated() {
            let rc = rte_eal_remote_launch(workerEntry, UnsafeMutableRawPointer(w), w.pointee.lcore_id)
            if rc != 0 {
                // Stop the workers already running before anything is freed.
                sl_shared_request_stop(shared)
                for launched in workers[..<i] { _ = rte_eal_wait_lcore(launched.pointee.lcore_id) }
                drainStoppedWorkers()
                throw .dpdk("cannot launch the worker on lcore \(w.pointee.lcore_id)", code: rc)
            }
        }
        running = true
    }

    /// Stops the workers (they flush their TX buffers), waits for them, then
    /// stops and closes every port.
    public func stop() {
        stopWorkers()
        closePorts()
    }

    /// Asks every worker to stop and waits until each has flushed and
    /// returned, `timeout` seconds at most. Returns the lcores of the workers
    /// still running at the deadline (one stuck in a driver, say), empty once
    /// all have returned. While one runs, nothing is drained or freed: a
    /// later call waits again, and a gateway released with a worker still
    /// running leaves its memory to that worker (see `deinit`).
    @discardableResult
    public func stopWorkers(timeout: Double = .infinity) -> [UInt32] {
        guard running else { return [] }
        sl_shared_request_stop(shared)
        let deadline = monotonicSeconds() + timeout
        var waiting = workers.map { $0.pointee.lcore_id }
        while true {
            waiting.removeAll { rte_eal_get_lcore_state($0) == WAIT }
            if waiting.isEmpty { break }
            if monotonicSeconds() >= deadline {
                stopTimedOut = true
                return waiting
            }
            usleep(1000)
        }
        for w in workers { _ = rte_eal_wait_lcore(w.pointee.lcore_id) }
        running = false
        stopTimedOut = false
        drainStoppedWorkers()
        return []
    }

    /// After the workers returned: the SA changes a worker had not taken
    /// yet (one stalled, or stopped before its next look) are applied as it
    /// would have, so no handover stays pending and no batch stays behind;
    /// packets handed between workers and not processed yet, and fragments
    /// waiting for the rest of their datagram, go back to their pools.
    private func drainStoppedWorkers() {
        for (c, w) in zip(cryptos, workers) {
            c.applyCommands(honouringHold: false)
            c.freeHandedOver()
            c.freeReassembly(drops: sl_worker_drops(w)!)
        }
        releaseAcknowledgedSAD()
    }

    /// Stops and closes every port (net_pcap writes out its capture here).
    public func closePorts() {
        guard !portsClosed else { return }
        portsClosed = true
        for p in ports { PortControl.stopAndClose(p.info.id) }
    }

    /// Current per-core counters (racy reads of single-writer 64-bit words: fine for statistics).
    public func coreCounters() -> [CoreCounters] {
        workers.map { w in
            var c = CoreCounters(lcore: w.pointee.lcore_id, queue: w.pointee.queue_id, socket: w.pointee.socket_id)
            c.rxPackets = w.pointee.counters.rx_packets
            c.rxBytes = w.pointee.counters.rx_bytes
            c.txPackets = w.pointee.counters.tx_packets
            c.rxBursts = w.pointee.counters.rx_bursts
            c.polls = w.pointee.counters.polls
            c.busyCycles = w.pointee.counters.busy_cycles
            c.fragments = w.pointee.counters.fragments
            c.reassembled = w.pointee.counters.reassembled
            c.fragmented = w.pointee.counters.fragmented
            c.fragmentsOut = w.pointee.counters.fragments_out
            c.punted = w.pointee.counters.punted
            c.fromStack = w.pointee.counters.from_stack
            c.toAgent = w.pointee.counters.to_agent
            c.fromAgent = w.pointee.counters.from_agent
            c.icmpErrors = w.pointee.counters.icmp_errors
            c.icmpLimited = w.pointee.counters.icmp_limited
            c.eventsLost = w.pointee.counters.events_lost
            let d = sl_worker_drops(w)!
            for r in DropReason.allCases { c.drops[r.rawValue] = d[r.rawValue] }
            return c
        }
    }

    public func portStats() -> [(PortSetup, PortStats)] {
        ports.map { ($0, PortStats.read(port: $0.info.id)) }
    }
}

/// Seconds on a monotonic clock.
public func monotonicSeconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

/// Writes text to standard error unbuffered (no Foundation, safe from any thread).
public func writeStandardError(_ text: String) {
    var t = text
    t.withUTF8 { b in _ = write(2, b.baseAddress, b.count) }
}

/// A forwarding snapshot built by `Gateway.prepareForwarding` and not
/// published yet; one that is never published is freed with it.
public final class PreparedForwarding {
    private var fib: UnsafeMutablePointer<sl_fib>?
    init(_ fib: UnsafeMutablePointer<sl_fib>) { self.fib = fib }
    /// The snapshot, once: whoever takes it owns it.
    func take() -> UnsafeMutablePointer<sl_fib>? {
        defer { fib = nil }
        return fib
    }
    deinit { if let fib { ForwardingTable.free(fib) } }
}
