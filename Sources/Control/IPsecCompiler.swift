import CShims
import Command
import Crypto
import Dataplane
import IPsec
import Packet

/// Why the IPsec part of a configuration cannot be installed.
public struct IPsecConfigError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Turns the validated configuration's SAs and policies into the tables the
/// workers read. Keeps each SA's keys and mutable state (next sequence number,
/// replay window) across recompilations while the SA's configuration is
/// unchanged, so a route or policy change never resets an SA.
public final class IPsecCompiler {
    /// An installed outbound SA: its configuration, state, and the record the replicas hold.
    struct Outbound {
        var config: SAConfig
        var state: OutboundSAState
        var box: SARecordBox
        /// The worker that seals its packets (shared-sa handoff), −1: any.
        var owner: Int
    }
    /// An installed inbound SA; `selectors` and `owner` are part of its record.
    struct Inbound {
        var config: SAConfig
        var state: InboundSAState
        var box: SARecordBox
        var owner: Int
    }
    /// A protect target: what a policy names.
    enum Target: Hashable {
        case spi(UInt32), reqid(UInt32)

        /// What `p` protects with; nil for bypass and discard.
        init?(_ p: PolicyConfig) {
            switch p.action {
            case .protect(let spi): self = .spi(spi.rawValue)
            case .protectReqID(let reqid, _): self = .reqid(reqid)
            case .bypass, .discard: return nil
            }
        }

        /// The targets that name `sa`: its SPI, and its reqid where it has one.
        static func naming(_ sa: SAConfig) -> [Target] {
            [.spi(sa.spi.rawValue)] + (sa.reqid.map { [.reqid($0)] } ?? [])
        }

        /// As the inbound SPD's verdicts carry it (`PolicyVerdict.target`).
        var word: ProtectTarget {
            switch self {
            case .spi(let spi): .spi(spi)
            case .reqid(let reqid): .reqid(reqid)
            }
        }
    }

    private var outbound: [SAIdentifier: Outbound] = [:]
    private var inbound: [SAIdentifier: Inbound] = [:]
    /// Protect targets by id (an SPD verdict's `sa`), and what each resolves to on each worker.
    private var targetIDs: [Target: Int32] = [:]
    private var targetSAs: [Int32: [SARecordBox?]] = [:]
    /// Ids of targets no policy names any more, free for reuse.
    private var freeTargetIDs: [Int32] = []
    /// Whether a change of this compiler was committed (the replicas hold its records only after that).
    private var committedOnce = false
    /// What the last `compile` built, adopted by `commit()` once published.
    private var pendingOutbound = SAMap<Outbound>(base: [:], full: true)
    private var pendingInbound = SAMap<Inbound>(base: [:], full: true)
    private var pendingTargetIDs: [Target: Int32] = [:]
    private var pendingTargetSAs: [Int32: [SARecordBox?]] = [:]
    private var pendingFreeTargetIDs: [Int32] = []
    /// The installed SAs (both directions) by the digest of their key
    /// material (committed, and of the last compile), for `keyReuseWarnings`.
    private var sasByKey: [UInt64: Set<SAIdentifier>] = [:]
    private var pendingSAsByKey = Overlay<UInt64, Set<SAIdentifier>>(base: [:], full: true)
    /// States of SAs whose path (source or encapsulation) the last compile
    /// changed: their learnt path MTU is forgotten by `commit`.
    private var pendingPathMTUResets: [OutboundSAState] = []
    /// Target capacity of the replicas (ids are below it).
    public var targetCapacity = WorkerIPsec.targetCapacity
    /// SA capacity of the replicas: inbound SAs, and outbound SAs (each table its own).
    public var saCapacity = WorkerIPsec.saCapacity
    /// Things the last `compile` left out, for the operator.
    public private(set) var warnings: [String] = []
    /// How the last `compile` built each SPD, for the operator.
    public private(set) var notes: [String] = []
    private let outSPD = SPDCompiler()
    private let inSPD = SPDCompiler()

    public init() {}

    /// The committed index of installed SAs by key digest (tests).
    var committedSAsByKey: [UInt64: Set<SAIdentifier>] { sasByKey }

    /// The installed inbound SA `spi`'s record and state (tests).
    func installedInbound(spi: UInt32) -> (box: SARecordBox, state: InboundSAState)? {
        inbound.values.first { $0.config.spi.rawValue == spi }.map { ($0.box, $0.state) }
    }

    /// Adopts the SA state of the last successful `compile`: call it once the
    /// tables are published, so a failed publish keeps the state in use.
    public func commit() {
        // The lifetime each record now installed counts in (events name records).
        for id in pendingOutbound.changedKeys {
            if let o = pendingOutbound[id] ?? nil { lifeOfToken[o.box.lifeToken] = o.state.lifetimeIdentity }
        }
        for id in pendingInbound.changedKeys {
            if let i = pendingInbound[id] ?? nil { lifeOfToken[i.box.lifeToken] = i.state.lifetimeIdentity }
        }
        // In place: a change of one SA among 100,000 costs one entry, not a copy.
        pendingOutbound.apply(to: &outbound)
        pendingInbound.apply(to: &inbound)
        pendingSAsByKey.apply(to: &sasByKey)
        pendingSAsByKey = Overlay(base: [:], full: false)
        // Nothing pending: committing again changes nothing.
        pendingOutbound = SAMap(base: [:], full: false)
        pendingInbound = SAMap(base: [:], full: false)
        natPortList = pendingNatPorts
        targetIDs = pendingTargetIDs
        targetSAs = pendingTargetSAs
        freeTargetIDs = pendingFreeTargetIDs
        mark = pendingMark
        spdTables = pendingSPDTables
        forceFull = false
        committedOnce = true
        outSPD.commit()
        inSPD.commit()
        for id in pendingUnexpired { expired[id] = nil }
        for (id, parked) in pendingParked { retiredInbound[id] = parked }
        // Put back (its handover, if any, is in this change): the state
        // installed now is the one to go on from, not the retired one.
        for id in pendingReinstalled { retiredInbound[id] = nil; retiredOutbound[id] = nil }
        pendingParked = [:]; pendingReinstalled = []
        for id in pendingRetiredGone { retiredOutbound[id] = nil; retiredInbound[id] = nil }
        pendingUnexpired = []; pendingRetiredGone = []
        for state in pendingPathMTUResets { state.pathMTU = 0 }
        pendingPathMTUResets = []
    }

    /// Whether kept SA state may serve `new`: the same key under the same
    /// algorithm and sequence-number space. Anything else (ttl, df, outer
    /// addresses, encapsulation) may change without restarting the sequence
    /// numbers: restarting them under an unchanged key would reuse GCM nonces.
    /// `key`: the one `a` was installed with; `engine`: what `b`'s engine
    /// setting (its own, else the global one) asks for now. The engine
    /// compared is the one each resolves to, so a global `crypto-engine`
    /// change re-keys the SAs that follow it, and `auto` against the engine
    /// it picks changes nothing.
    static func sameCryptoIdentity(_ a: SAConfig, key: borrowing AEADKey, _ b: SAConfig, engine: CryptoEngineKind) -> Bool {
        sameKey(a, b) && a.esn == b.esn && (try? CryptoEngines.resolve(engine, for: key.algorithm)) == key.engine
    }

    /// Whether `a` and `b` seal under the same key (GCM nonces are unique
    /// per key): then the sequence numbers go on, and so does the highest
    /// number received, even where the engine or ESN setting changes.
    static func sameKey(_ a: SAConfig, _ b: SAConfig) -> Bool {
        a.spi == b.spi && a.direction == b.direction && a.aead == b.aead && a.keyMaterial == b.keyMaterial
    }

    /// nil when the configuration has no policy: the gateway is a plain router.
    /// `workerLcores`: the gateway's workers in order (per-CPU SAs are
    /// assigned by lcore); empty: one worker whose lcore no SA names.
    ///
    /// When `config` is a later state of the configuration last committed
    /// (same SA journal, no policy or global change since), only the SAs its
    /// journal lists as changed are looked at, and the SPD tables are reused:
    /// the cost is the change's, not the number of SAs installed.
    public func compile(_ config: GatewayConfig, workerLcores: [UInt32] = []) throws(IPsecConfigError) -> IPsecTables? {
        if config.policies.isEmpty && config.sas.isEmpty {
            // Publishing nil clears the replicas: nothing of this compiler stays installed.
            pendingOutbound = SAMap(base: [:], full: true); pendingInbound = SAMap(base: [:], full: true)
            pendingSAsByKey = Overlay(base: [:], full: true)
            pendingTargetIDs = [:]; pendingTargetSAs = [:]; pendingNatPorts = []
            pendingFreeTargetIDs = []
            pendingMark = nil
            // No SA left: none stays expired, and no retired state (key
            // included) outlives the configuration that held it.
            pendingUnexpired = Set(expired.keys)
            pendingRetiredGone = Set(retiredOutbound.keys).union(retiredInbound.keys)
            pendingParked = [:]; pendingReinstalled = []
            warnings = []; notes = []
            pendingPathMTUResets = []
            return nil
        }
        let changed = changedSAs(config, workerLcores: workerLcores)
        lastCompileWasIncremental = changed != nil
        // The committed SAs plus this compile's changes (nothing carried over for a full compile).
        var nextOutbound = SAMap<Outbound>(base: outbound, full: changed == nil)
        var nextInbound = SAMap<Inbound>(base: inbound, full: changed == nil)
        warnings = []
        pendingPathMTUResets = []

        let inboundPolicies = config.policies.filter { $0.selector.direction != .outbound }
        let outboundPolicies = config.policies.filter { $0.selector.direction == .outbound }
        // No packet carries an interface id yet (every packet's is 0): a
        // policy with `if-id` matches nothing, and names no SA.
        if changed == nil {
            for p in config.policies where p.selector.ifID != 0 {
                warnings.append("policy id \(p.id) has if-id \(p.selector.ifID): no packet carries an interface id yet, so it matches nothing")
            }
        }
        // The SPIs and reqids inbound policies protect with.
        let inboundProtecting = Set(inboundPolicies.filter { $0.selector.ifID == 0 }.compactMap(Target.init))
        // A hard-expired SA stays out of the data path until the configuration
        // replaces it (deleted, or added again with other keys or limits);
        // adopted by `commit`, so a failed change leaves it expired.
        let stillExpired = expired.filter { config.sas[$0.key] == $0.value }
        pendingUnexpired = Set(expired.keys).subtracting(stillExpired.keys)
        // The state of an expired SA whose key the configuration no longer
        // holds is forgotten with it.
        pendingRetiredGone = Set(retiredOutbound.keys).union(retiredInbound.keys).filter { id in
            guard let sa = config.sas[id],
                  let was = retiredOutbound[id]?.config ?? retiredInbound[id]?.config else { return true }
            return !Self.sameKey(was, sa)
        }
        /// Builds (or keeps) the installed form of one SA into nextOutbound / nextInbound.
        func process(_ id: SAIdentifier, _ sa: SAConfig) throws(IPsecConfigError) {
            let algorithm = Self.algorithm(sa.aead)
            let engine = Self.engine(config.effectiveCryptoEngine(of: sa))
            switch sa.direction {
            case .outbound:
                let state: OutboundSAState
                // The installed SA, else one a hard expiry took out (back under
                // the same key): under the same key its sequence numbers (the
                // GCM IVs) go on, never reused. The very state where nothing
                // of the crypto changed; another engine or ESN setting expands
                // the key again and continues its counter.
                if let previous = outbound[id].map({ ($0.config, $0.state) }) ?? retiredOutbound[id],
                   Self.sameKey(previous.config, sa) {
                    state = Self.sameCryptoIdentity(previous.config, key: previous.state.key, sa, engine: engine) ? previous.state
                        : OutboundSAState(key: try Self.key(algorithm, sa, engine), continuing: previous.state, esn: sa.esn)
                    // Another path (source or encapsulation): its learnt MTU
                    // does not hold. Forgotten when the change is committed: a
                    // refused change leaves the SA in use as it was.
                    if previous.config.source != sa.source || previous.config.encapsulation != sa.encapsulation {
                        pendingPathMTUResets.append(state)
                    }
                } else {
                    let key = try Self.key(algorithm, sa, engine)
                    state = OutboundSAState(key: key, next: sa.sequence, esn: sa.esn)
                }
                // shared-sa handoff: the SA's packets are sealed by one worker, its
                // cpu's or else by SPI; the others hand them over.
                var owner = -1
                if config.sharedSA == .handoff {
                    owner = Int(sa.spi.rawValue % UInt32(max(workerLcores.count, 1)))
                    if let cpu = sa.cpu, let index = workerLcores.firstIndex(of: cpu) { owner = index }
                }
                if let kept = outbound[id], kept.config == sa, kept.state === state, kept.owner == owner {
                    nextOutbound[id] = kept  // the same record
                    return
                }
                let mode: ESPMode
                switch (sa.mode, sa.source, sa.destination) {
                case (.tunnel, .v4(let s)?, .v4(let d)?): mode = .tunnel(.ipv4(source: s, destination: d, ttl: sa.ttl))
                case (.tunnel, .v6(let s)?, .v6(let d)?): mode = .tunnel(.ipv6(source: s, destination: d, hopLimit: sa.ttl))
                case (.tunnel, _, _): throw IPsecConfigError(message: "SA spi \(sa.spi): tunnel mode needs src and dst of one family")
                case (.transport, _, _): mode = .transport
                }
                let parameters = OutboundSA(spi: SPI(sa.spi.rawValue), mode: mode, key: state.key.unsafeHandle, esn: sa.esn,
                                            udpEncapsulation: sa.encapsulation.map { ($0.sourcePort, $0.destinationPort) },
                                            df: Self.df(sa.df))
                nextOutbound[id] = Outbound(config: sa, state: state,
                                            box: SARecordBox(outbound: parameters, state: state, limits: Self.limits(sa.lifetime),
                                                             fallback: sa.reqid != nil && sa.cpu == nil,
                                                             owner: owner),
                                            owner: owner)
            case .inbound:
                // RFC 4301 §5.2: what arrives on this SA must be traffic the
                // inbound SPD assigns to it, i.e. its first match must be a
                // policy that protects with it, naming its SPI or reqid
                // (checked per packet by the worker: `InboundSA.isAssigned`).
                // An SA no inbound policy names would accept any inner
                // packet: it is not installed (fail closed).
                if !Target.naming(sa).contains(where: inboundProtecting.contains) {
                    warnings.append("inbound SA spi \(sa.spi) is not installed: no 'sp add dir in … action protect spi \(sa.spi)' policy (or one of its reqid) without if-id names it")
                    return
                }
                let state: InboundSAState
                // The installed SA, else one a hard expiry took out (back under
                // the same key): its replay window goes on where nothing of it
                // or the crypto changed (nothing received is accepted again).
                // (Installed, or retired: taken out while the configuration keeps it.)
                let kept = inbound[id] ?? retiredInbound[id]
                let previous = kept.map { (config: $0.config, state: $0.state) }
                if let previous, Self.sameCryptoIdentity(previous.config, key: previous.state.key, sa, engine: engine),
                   previous.config.replayWindow == sa.replayWindow {
                    state = previous.state
                } else {
                    let key = try Self.key(algorithm, sa, engine)
                    do {
                        // Same key, new window size, engine or ESN setting: carry
                        // the highest number seen over (all below it count as
                        // received), so nothing already received is accepted again.
                        // Its packet and byte counts go on too (one SA's lifetime).
                        var highest = sa.sequence
                        let continued = previous.flatMap { Self.sameKey($0.config, sa) ? $0.state : nil }
                        if let continued {
                            highest = max(highest, continued.window.pointee.highestReceived.rawValue)
                        }
                        let window = try ReplayWindow.allocate(
                            configuration: sa.replayWindow == 0 ? .disabled : ReplayWindowConfiguration(size: sa.replayWindow, esn: sa.esn),
                            highestReceived: SequenceNumber(highest))
                        state = InboundSAState(key: key, window: window, continuing: continued)
                    } catch {
                        throw IPsecConfigError(message: "SA spi \(sa.spi): \(error)")
                    }
                }
                // The worker keeping the replay window: the SA's cpu, else by SPI.
                var owner = Int(sa.spi.rawValue % UInt32(max(workerLcores.count, 1)))
                if let cpu = sa.cpu {
                    if let index = workerLcores.firstIndex(of: cpu) {
                        owner = index
                    } else if !workerLcores.isEmpty {
                        warnings.append("inbound SA spi \(sa.spi) is for cpu \(cpu), which runs no worker; worker \(workerLcores[owner]) keeps it")
                    }
                }
                if let kept = inbound[id], kept.config == sa, kept.state === state, kept.owner == owner {
                    nextInbound[id] = kept  // the same record
                    return
                }
                // A new owner of the window, or a window rebuilt from the
                // installed one (same key): the installed record's owner hands
                // it over when it applies the change (`InboundRecord.ready`).
                // A new key has a window of its own, ready at once. An SA a
                // hard expiry took out and put back under its key counts as
                // installed: its removal may not have reached its owner yet.
                let installed = committedOnce ? kept : nil
                let handover = installed.map {
                    $0.state === state ? $0.owner != owner : Self.sameKey($0.config, sa)
                } ?? false
                if let installed, !installed.box.inboundReady {
                    // Its owner has not taken the last change yet: a second
                    // handover could not know what the first one carries.
                    throw IPsecConfigError(message: "SA spi \(sa.spi): its replay window is still being handed to the worker on lcore \(installed.owner < workerLcores.count ? String(workerLcores[installed.owner]) : String(installed.owner)) (an earlier SA change not yet applied by every worker); nothing was changed, try again")
                }
                do {
                    let parameters = try InboundSA(spi: SPI(sa.spi.rawValue), mode: sa.mode == .tunnel ? .tunnel : .transport,
                                                   key: state.key.unsafeHandle, esn: sa.esn, source: sa.source,
                                                   destination: sa.destination,
                                                   udpEncapsulation: sa.encapsulation.map { ($0.sourcePort, $0.destinationPort) },
                                                   checkedBySPD: true, reqid: sa.reqid)
                    nextInbound[id] = Inbound(config: sa, state: state,
                                              box: SARecordBox(inbound: parameters, state: state,
                                                               limits: Self.limits(sa.lifetime), owner: owner,
                                                               ready: !handover),
                                              owner: owner)
                } catch {
                    throw IPsecConfigError(message: "SA spi \(sa.spi): \(error)")
                }
            }
        }
        if let changed {
            for id in changed {
                nextOutbound[id] = nil
                nextInbound[id] = nil
                if let sa = config.sas[id], stillExpired[id] == nil { try process(id, sa) }
            }
        } else {
            for (id, sa) in config.sas where stillExpired[id] == nil { try process(id, sa) }
        }
        if nextInbound.count > saCapacity || nextOutbound.count > saCapacity {
            throw IPsecConfigError(message: "\(nextInbound.count) inbound and \(nextOutbound.count) outbound SAs: the SAD replicas hold at most \(saCapacity) of each")
        }
        // UDP ports taken as ESP: only those an inbound SA uses (other UDP,
        // IKE's NAT-T of hosts behind or beyond us included, stays plaintext).
        var natPorts = natPortList
        let encapsulationChanged = changed?.contains { id in
            inbound[id]?.config.encapsulation != nil || nextInbound[id]?.config.encapsulation != nil
        } ?? true
        if encapsulationChanged {
            natPorts = []
            nextInbound.forEach { _, entry in
                if let port = entry.config.encapsulation?.destinationPort, !natPorts.contains(port) { natPorts.append(port) }
            }
        }
        guard let nat = natPorts.isEmpty ? NATTraversalPorts.none : NATTraversalPorts(natPorts) else {
            throw IPsecConfigError(message: "at most \(NATTraversalPorts.capacity) distinct UDP encapsulation ports, found \(natPorts.count)")
        }
        // Protect targets: one per distinct `spi S` or `reqid N`, resolved
        // per worker (a `reqid` to the worker's per-CPU SA or the fallback).
        let lcores = workerLcores.isEmpty ? [UInt32.max] : workerLcores
        func resolve(_ t: Target) -> [SARecordBox?] {
            func installed(_ sa: SAConfig?) -> SARecordBox? { sa.flatMap { nextOutbound[$0.identifier]?.box } }
            switch t {
            case .spi(let spi):
                let sa = config.sas(spi: SecurityParameterIndex(spi)).first { $0.direction == .outbound }
                return Array(repeating: installed(sa), count: lcores.count)
            case .reqid(let reqid):
                let fallback = installed(config.outboundSA(reqid: reqid, cpu: nil))
                return lcores.map { installed(config.outboundSA(reqid: reqid, cpu: $0)) ?? fallback }
            }
        }
        var nextTargetIDs: [Target: Int32] = [:]
        var nextTargetSAs: [Int32: [SARecordBox?]] = [:]
        var free = freeTargetIDs
        var freedIDs: [Int32] = []
        /// Targets whose resolution may have changed (all of them after a policy change).
        var affected: [Int32] = []
        /// Ids freed by an earlier change and named again: set on every worker
        /// (nothing may be assumed about what a replica holds for them).
        var reused = Set<Int32>()
        if let changed {
            // Policies unchanged: the same targets; only those of the changed SAs move.
            nextTargetIDs = targetIDs
            nextTargetSAs = targetSAs
            var seen = Set<Int32>()
            for id in changed {
                for sa in [outbound[id]?.config, config.sas[id]].compactMap({ $0 }) where sa.direction == .outbound {
                    for t in Target.naming(sa) {
                        if let tid = nextTargetIDs[t], seen.insert(tid).inserted {
                            nextTargetSAs[tid] = resolve(t)
                            affected.append(tid)
                        }
                    }
                }
            }
        } else {
            // Past every id in use and every free one: a free id is handed
            // out only from the free list, never again as a new one.
            var nextID = Int32(max(targetIDs.values.max() ?? -1, free.max() ?? -1) + 1)
            for p in outboundPolicies {
                guard let t = Target(p), nextTargetIDs[t] == nil else { continue }
                let id: Int32
                if let kept = targetIDs[t] {
                    id = kept
                } else if let again = free.popLast() {
                    id = again
                    reused.insert(again)
                } else {
                    id = nextID
                    nextID += 1
                }
                guard Int(id) < targetCapacity else {
                    throw IPsecConfigError(message: "more than \(targetCapacity) distinct protect targets (spi or reqid) in outbound policies")
                }
                nextTargetIDs[t] = id
                nextTargetSAs[id] = resolve(t)
                affected.append(id)
            }
            // Ids no policy names any more are freed after this change commits.
            for (t, id) in targetIDs where nextTargetIDs[t] == nil { freedIDs.append(id) }
        }
        var change = SADChange()
        change.clearFirst = !committedOnce
        let previousOut = committedOnce ? outbound : [:]
        let previousIn = committedOnce ? inbound : [:]
        let previousTargets = committedOnce ? targetSAs : [:]
        // Inbound: remove what changed or went, then add what is new; the
        // same for the set of outbound records. Only the changed SAs when
        // the journal says which.
        let candidates: [SAIdentifier] = changed.map(Array.init)
            ?? Array(Set(previousIn.keys).union(nextInbound.changedKeys).union(previousOut.keys).union(nextOutbound.changedKeys))
        var removes: [SADCommand] = [], adds: [SADCommand] = [], handovers: [SADCommand] = []
        // Records a target this change frees resolved to: removed with the
        // target, after the publish (`SADChange.releasedTargets`).
        let lingering = Set(freedIDs.flatMap { previousTargets[$0] ?? [] }.compactMap { $0.map(ObjectIdentifier.init) })
        pendingParked = [:]; pendingReinstalled = []
        for id in candidates {
            let (oldIn, newIn) = (previousIn[id]?.box, nextInbound[id]?.box)
            // Still configured under its key but taken out of the data path
            // for want of an inbound policy (say `flush sp`, then the policies
            // again): its window waits, or a reinstall would accept again
            // what it had received.
            if let old = previousIn[id], newIn == nil, expired[id] == nil, let sa = config.sas[id],
               Self.sameKey(old.config, sa) {
                pendingParked[id] = old
            }
            if (newIn != nil && oldIn == nil && retiredInbound[id] != nil)
                || (nextOutbound[id] != nil && previousOut[id] == nil && retiredOutbound[id] != nil) {
                pendingReinstalled.append(id)
            }
            if let o = oldIn, o !== newIn { removes.append(.remove(o)); change.removed.append(o) }
            if let n = newIn, n !== oldIn { adds.append(.add(n)); change.added.append(n) }
            if let n = newIn, n !== oldIn, !n.inboundReady {
                if let o = oldIn {
                    handovers.append(.handover(o, to: n))
                } else if let retired = retiredInbound[id]?.box {
                    // Put back after a hard expiry: the gateway keeps the
                    // removed record until every worker took this change.
                    handovers.append(.handover(retired, to: n))
                    change.removed.append(retired)
                }
            }
            let (oldOut, newOut) = (previousOut[id]?.box, nextOutbound[id]?.box)
            if let o = oldOut, o !== newOut {
                if lingering.contains(ObjectIdentifier(o)) {
                    change.releasedCommon.append(.removeOutbound(o))
                    change.releasedRecords.append(o)
                } else {
                    removes.append(.removeOutbound(o))
                    change.removed.append(o)
                }
            }
            if let n = newOut, n !== oldOut { adds.append(.addOutbound(n)); change.added.append(n) }
        }
        // The replicas hold the records waiting for the second batch too.
        if nextOutbound.count + change.releasedRecords.count > saCapacity {
            throw IPsecConfigError(message: "\(nextOutbound.count) outbound SAs and \(change.releasedRecords.count) still in use until the new policies are published: the SAD replicas hold at most \(saCapacity)")
        }
        change.common = removes + adds + handovers
        change.targets = Array(repeating: [], count: lcores.count)
        for id in affected {
            let before = previousTargets[id]
            let perWorker = nextTargetSAs[id]!
            for w in 0..<lcores.count where before?[w] !== perWorker[w] || reused.contains(id) {
                change.targets[w].append(.setTarget(id, perWorker[w]))
            }
        }
        change.releasedTargets = Array(repeating: [], count: lcores.count)
        for id in freedIDs {
            for w in 0..<lcores.count where previousTargets[id]?[w] != nil {
                change.releasedTargets[w].append(.setTarget(id, nil))
            }
        }
        pendingOutbound = nextOutbound
        pendingInbound = nextInbound
        pendingNatPorts = natPorts
        pendingTargetIDs = nextTargetIDs
        pendingTargetSAs = nextTargetSAs
        pendingFreeTargetIDs = free + freedIDs
        for id in changed.map(Array.init) ?? Array(config.sas.keys) {
            if let sa = config.sas[id], sa.direction == .outbound, let cpu = sa.cpu, !workerLcores.isEmpty,
               !workerLcores.contains(cpu) {
                warnings.append("outbound SA spi \(sa.spi) is for cpu \(cpu), which runs no worker (workers: "
                                + workerLcores.map(String.init).joined(separator: ",") + ")")
            }
        }
        warnings += keyReuseWarnings(changed: changed, nextOutbound: nextOutbound, nextInbound: nextInbound)
        let outTable: SPDTable, inTable: SPDTable
        if changed != nil, let kept = spdTables {
            // Policies unchanged: the same SPD snapshots (verdicts name target ids, which did not move).
            (outTable, inTable) = kept
        } else {
            let (o, outMethod) = outSPD.compile(outboundPolicies, choice: config.spdDriver) { p in
                switch p.action {
                case .protect, .protectReqID:
                    PolicyVerdict(action: .protect, sa: Target(p).flatMap { nextTargetIDs[$0] } ?? -1, policyID: p.id.rawValue,
                                  acquiresPerCPU: p.action.acquiresPerCPU)
                case .bypass: PolicyVerdict(action: .bypass, policyID: p.id.rawValue)
                case .discard: PolicyVerdict(action: .discard, policyID: p.id.rawValue)
                }
            }
            let (i, inMethod) = inSPD.compile(inboundPolicies, choice: config.spdDriver) { p in
                switch p.action {
                case .protect, .protectReqID:
                    PolicyVerdict(action: .protect, policyID: p.id.rawValue, target: Target(p)?.word ?? .none)
                case .bypass: PolicyVerdict(action: .bypass, policyID: p.id.rawValue)
                case .discard: PolicyVerdict(action: .discard, policyID: p.id.rawValue)
                }
            }
            (outTable, inTable) = (o, i)
            notes = ["spd out: \(outboundPolicies.count) policies, \(outMethod)",
                     "spd in: \(inboundPolicies.count) policies (in and fwd), \(inMethod)"]
        }
        pendingSPDTables = (outTable, inTable)
        pendingMark = JournalMark(config, workerLcores: workerLcores)
        return IPsecTables(outSPD: outTable, inSPD: inTable, workerCount: lcores.count, natPorts: nat, sad: change,
                           inboundSACount: nextInbound.count)
    }

    /// AES-GCM and ChaCha20-Poly1305 nonces are the key's salt and the
    /// sequence number (RFC 4106 §3.1, RFC 7634 §2), and every sender counts
    /// from its own sequence state: two outbound SAs under one key, an
    /// inbound SA whose key the peer seals with beside our outbound SA under
    /// the same key, or two inbound SAs under one key all put the same nonces
    /// on the wire, which gives away the key's authentication subkey and the
    /// XOR of the plaintexts (RFC 4106 §8.1). IKE derives a key per SA and
    /// direction, so any two installed SAs sharing key material are a
    /// mistake (a configuration copied from one SA to the next, per-CPU SAs
    /// given one key): installed as configured, and named in a warning, one
    /// for each key, while the change names one of them. Indexed by digest
    /// (each group loaded and changed once per compile), so a change looks
    /// at the groups of the SAs it changes only; sets the index `commit`
    /// adopts.
    private func keyReuseWarnings(changed: Set<SAIdentifier>?, nextOutbound: SAMap<Outbound>,
                                  nextInbound: SAMap<Inbound>) -> [String] {
        func next(_ id: SAIdentifier) -> SAConfig? { nextOutbound[id]?.config ?? nextInbound[id]?.config }
        var byKey = Overlay<UInt64, Set<SAIdentifier>>(base: sasByKey, full: changed == nil)
        // The groups this compile changes, each loaded from the index once.
        var groups: [UInt64: Set<SAIdentifier>] = [:]
        var touched = Set<UInt64>()
        if let changed {
            for id in changed {
                if let old = outbound[id]?.config ?? inbound[id]?.config {
                    let d = old.keyMaterial.digest
                    if groups[d] == nil { groups[d] = byKey[d] ?? [] }
                    groups[d]!.remove(id)
                }
                if let new = next(id) {
                    let d = new.keyMaterial.digest
                    if groups[d] == nil { groups[d] = byKey[d] ?? [] }
                    groups[d]!.insert(id)
                    touched.insert(d)
                }
            }
        } else {
            nextOutbound.forEach { id, o in groups[o.config.keyMaterial.digest, default: []].insert(id) }
            nextInbound.forEach { id, i in groups[i.config.keyMaterial.digest, default: []].insert(id) }
            touched = Set(groups.keys)
        }
        for (d, ids) in groups { byKey[d] = ids.isEmpty ? nil : ids }
        pendingSAsByKey = byKey
        var found: [String] = []
        for d in touched {
            guard let ids = groups[d], ids.count > 1 else { continue }
            // Equal digests of unequal keys (2⁻⁶⁴) are not a reuse: group by
            // the keys themselves. One pass, each group keeping the 8 SAs it
            // names (the lowest identifiers) and its size: a change within a
            // group of 100,000 costs that group's pass, no sort of it.
            var sharing: [(key: SAKeyMaterial, named: [SAConfig], count: Int)] = []
            for id in ids {
                guard let sa = next(id) else { continue }
                let g: Int
                if let i = sharing.firstIndex(where: { $0.key == sa.keyMaterial }) {
                    g = i
                } else {
                    sharing.append((sa.keyMaterial, [], 0))
                    g = sharing.count - 1
                }
                sharing[g].count += 1
                let at = sharing[g].named.firstIndex { $0.identifier > id } ?? sharing[g].named.count
                if at < 8 {
                    sharing[g].named.insert(sa, at: at)
                    if sharing[g].named.count > 8 { sharing[g].named.removeLast() }
                }
            }
            for g in sharing where g.count > 1 {
                let named = g.named.map { "spi \($0.spi) (\($0.direction == .outbound ? "out" : "in"))" }
                    .joined(separator: ", ") + (g.count > 8 ? " and \(g.count - 8) more" : "")
                found.append("SAs \(named) have the same key: each sender numbers its packets from its own "
                             + "sequence counter, so nonces repeat under that key (RFC 4106 §8.1); give every SA a key of its own")
            }
        }
        return found.sorted()
    }

    // MARK: Incremental compilation

    /// The UDP ports inbound SAs use for encapsulation (committed, and of the last compile).
    private var natPortList: [UInt16] = []
    private var pendingNatPorts: [UInt16] = []

    /// A compile's view of the installed SAs: the committed map (never
    /// mutated here, so never copied) overlaid with this compile's changes;
    /// for a full compile, only the changes.
    typealias SAMap<V> = Overlay<SAIdentifier, V>

    /// A committed map overlaid with one compile's changes.
    struct Overlay<K: Hashable, V> {
        private(set) var base: [K: V]
        let full: Bool
        private var changes: [K: V?] = [:]
        private(set) var count: Int

        init(base: [K: V], full: Bool) {
            self.base = full ? [:] : base
            self.full = full
            count = full ? 0 : base.count
        }

        subscript(id: K) -> V? {
            get {
                if let change = changes[id] { return change }
                return base[id]
            }
            set {
                let had = self[id] != nil
                changes[id] = .some(newValue)
                count += (newValue != nil ? 1 : 0) - (had ? 1 : 0)
            }
        }

        /// The identifiers this compile set (all of them for a full compile).
        var changedKeys: Dictionary<K, V?>.Keys { changes.keys }

        /// Every SA in the map.
        func forEach(_ body: (K, V) -> Void) {
            for (id, v) in changes { if let v { body(id, v) } }
            for (id, v) in base where changes[id] == nil { body(id, v) }
        }

        /// Makes `map` (the committed map this one was built on) equal to this
        /// one, in place: drops the reference to it first, so it is not copied.
        mutating func apply(to map: inout [K: V]) {
            base = [:]
            if full { map = [:] }
            for (id, v) in changes { map[id] = v }
            changes = [:]
        }
    }

    /// Where the committed compilation stood in its configuration's history.
    struct JournalMark {
        var count: Int
        var lastSerial: UInt64
        var ipsecRevision: UInt64
        var workerLcores: [UInt32]
        init(_ config: GatewayConfig, workerLcores: [UInt32]) {
            count = config.saJournal.count
            lastSerial = config.saJournal.last?.serial ?? 0
            ipsecRevision = config.ipsecRevision
            self.workerLcores = workerLcores
        }
    }
    private var mark: JournalMark? = nil
    /// Whether the last `compile` looked at only the changed SAs.
    public private(set) var lastCompileWasIncremental = false
    private var pendingMark: JournalMark? = nil
    private var spdTables: (SPDTable, SPDTable)? = nil
    private var pendingSPDTables: (SPDTable, SPDTable)? = nil
    /// Set when something outside the configuration (a hard expiry) changed what is installed.
    private var forceFull = false

    /// The SAs `config` changed since the committed compilation, or nil when
    /// it is not a later state of the same configuration (compile everything).
    func changedSAs(_ config: GatewayConfig, workerLcores: [UInt32]) -> Set<SAIdentifier>? {
        guard committedOnce, !forceFull, let mark, mark.ipsecRevision == config.ipsecRevision,
              mark.workerLcores == workerLcores, config.saJournal.count >= mark.count,
              mark.count == 0 || config.saJournal[mark.count - 1].serial == mark.lastSerial else { return nil }
        return Set(config.saJournal[mark.count...].map(\.id))
    }

    /// After `config.restartJournal()` on the configuration just committed:
    /// keeps compiling incrementally from its new (empty) journal.
    public func adoptJournal(of config: GatewayConfig) {
        guard mark != nil else { return }
        mark = JournalMark(config, workerLcores: mark!.workerLcores)
    }

    // MARK: Lifetimes

    /// SAs taken out of the data path by a hard lifetime, with the
    /// configuration that expired.
    private var expired: [SAIdentifier: SAConfig] = [:]
    /// The state of each SA a hard lifetime took out (and, inbound, each the
    /// configuration keeps but no inbound policy names), kept while the
    /// configuration holds its key: an SA put back under the same key (new
    /// limits, say) goes on from it instead of restarting its sequence
    /// numbers, which would reuse GCM nonces, or its replay window.
    private var retiredOutbound: [SAIdentifier: (config: SAConfig, state: OutboundSAState)] = [:]
    private var retiredInbound: [SAIdentifier: Inbound] = [:]
    private var pendingUnexpired: Set<SAIdentifier> = []
    /// Inbound SAs the last compile took out while the configuration keeps
    /// them (no inbound policy names them), and retired SAs it put back.
    private var pendingParked: [SAIdentifier: Inbound] = [:]
    private var pendingReinstalled: [SAIdentifier] = []
    private var pendingRetiredGone: Set<SAIdentifier> = []

    /// Marks `id` expired, keeping its state.
    private func retire(_ id: SAIdentifier, _ config: SAConfig) {
        expired[id] = config
        if let o = outbound[id] { retiredOutbound[id] = (o.config, o.state) }
        if let i = inbound[id] { retiredInbound[id] = i }
    }
    /// Per SA lifetime (`lifetimeIdentity`: one per key, kept while the
    /// window size, engine or ESN setting changes): when it was first seen
    /// installed and in use, and which soft time limits were reported.
    private var installedAt: [UInt64: Double] = [:]
    private var firstUsedAt: [UInt64: Double] = [:]
    private var softReported: [UInt64: Set<SALifetime.Kind>] = [:]
    /// Since when a state's packets or bytes have been at or past its hard
    /// limit while it is still installed (`checkTimes`).
    private var usedUpSince: [UInt64: Double] = [:]
    /// The lifetime of each record committed (by `SARecordBox.lifeToken`),
    /// while that lifetime lives: an event names a record a later change
    /// may have replaced by then.
    private var lifeOfToken: [UInt32: UInt64] = [:]
    /// Since when a lifetime's packets or bytes have been at or past its soft
    /// limit without a worker's EXPIRE(soft) (`checkTimes`).
    private var softUsedUpSince: [SoftLimit: Double] = [:]
    private struct SoftLimit: Hashable {
        var life: UInt64
        var kind: SALifetime.Kind
    }
    /// How long an SA may stay at or past a hard packet or byte limit before
    /// the control thread retires it itself: longer than a worker's EXPIRE
    /// takes to arrive (one control-loop turn), so a crossing is reported once.
    static let usedUpGrace = 0.5

    /// An EXPIRE the control thread decided (time limits).
    public struct Expiry: Sendable, CustomStringConvertible {
        public var identifier: SAIdentifier
        public var direction: IPsecDirection
        public var hard: Bool
        public var reason: String
        public var description: String {
            "event: expire \(hard ? "hard" : "soft") dir=\(direction.rawValue) spi=\(identifier.spi) reason=\(reason)"
        }
        /// The event as the control socket streams it.
        public var json: String {
            "{\"event\":\"expire\",\"hard\":\(hard),\"dir\":\"\(direction.rawValue)\",\"spi\":\"\(identifier.spi)\",\"reason\":\"\(reason)\"}"
        }
    }

    /// What an installed SA has carried: packets and bytes (outbound: sent,
    /// inbound: accepted), the next outbound sequence number, whether a hard
    /// lifetime took it out. nil when it is not installed.
    public func usage(of id: SAIdentifier) -> (packets: UInt64, bytes: UInt64, nextSequence: UInt64?, expired: Bool)? {
        if let o = outbound[id] {
            return (o.state.packetsSent, o.state.bytesSent, o.state.nextSequence, expired[id] != nil)
        }
        if let i = inbound[id] {
            return (i.state.packetsReceived, i.state.bytesReceived, nil, expired[id] != nil)
        }
        return nil
    }

    /// The SAs a hard lifetime took out of the data path, sorted.
    public var expiredSAs: [SAIdentifier] { expired.keys.sorted() }

    /// Whether a hard lifetime took SAs out (`expire`, `checkTimes`) and no
    /// compilation without them has been committed since: the data path may
    /// still use them until one is (`ControlSession.removeExpiredSAs`).
    public var removalPending: Bool { forceFull }

    static func limits(_ l: SALifetime) -> SALimits {
        SALimits(softPackets: l[.packets]?.soft ?? 0, hardPackets: l[.packets]?.hard ?? 0,
                 softBytes: l[.bytes]?.soft ?? 0, hardBytes: l[.bytes]?.hard ?? 0)
    }

    /// Takes the SAs of `spi` and `direction` out of the data path (their hard
    /// lifetime was reached; the next `compile` leaves them out). Returns them.
    @discardableResult
    public func expire(spi: UInt32, token: UInt32? = nil, direction: IPsecDirection) -> [SAIdentifier] {
        var matches = installed(spi: spi, token: token, direction: direction)
        // A record a later change replaced (the event waited in the ring
        // while the change was committed): its SA if the new record counts
        // in the same lifetime (same key) and stands at or past its hard
        // limit now; not one whose limit the change raised.
        if matches.isEmpty, let token, let life = lifeOfToken[token] {
            matches = installed(spi: spi, token: nil, direction: direction).filter { id, sa, l in
                guard l == life, let used = usage(of: id) else { return false }
                return Self.hardLimitReached(sa, packets: used.packets, bytes: used.bytes) != nil
            }
        }
        for (id, config, _) in matches { retire(id, config) }
        if !matches.isEmpty { forceFull = true }
        return matches.map(\.0)
    }

    /// A worker's EXPIRE(soft) for a packet or byte limit (`reason`:
    /// `SL_EXPIRE_*`) of the SA of record `token`: reported, so the control
    /// thread's own check (`checkTimes`) does not report it again.
    public func noteSoftExpiry(token: UInt32, reason: Int32) {
        let kind: SALifetime.Kind
        switch reason {
        case Int32(SL_EXPIRE_PACKETS): kind = .packets
        case Int32(SL_EXPIRE_BYTES): kind = .bytes
        default: return
        }
        // By its lifetime: the record may have been replaced since (the
        // event waited in the ring while a change was committed).
        if let life = lifeOfToken[token] { softReported[life, default: []].insert(kind) }
    }

    /// The hard packet or byte limit of `sa` that `packets` and `bytes` are
    /// at or past (packets first); nil when neither.
    static func hardLimitReached(_ sa: SAConfig, packets: UInt64, bytes: UInt64) -> SALifetime.Kind? {
        [(SALifetime.Kind.packets, packets), (.bytes, bytes)].first { kind, used in
            sa.lifetime[kind]?.hard.map { used >= $0 } ?? false
        }?.0
    }

    /// The installed SAs of `spi` and `direction`. With the token of a record
    /// (a worker's EXPIRE event), only the SA that record still serves: not
    /// another SA with the SPI (inbound SAs may share one, told apart by
    /// destination), and none when a later change replaced the record.
    private func installed(spi: UInt32, token: UInt32?, direction: IPsecDirection)
        -> [(SAIdentifier, SAConfig, life: UInt64)] {
        func hit(_ key: SAIdentifier, _ box: SARecordBox) -> Bool {
            key.spi.rawValue == spi && (token.map { box.lifeToken == $0 } ?? true)
        }
        return direction == .outbound
            ? outbound.filter { hit($0.key, $0.value.box) }.map { ($0.key, $0.value.config, $0.value.state.lifetimeIdentity) }
            : inbound.filter { hit($0.key, $0.value.box) }.map { ($0.key, $0.value.config, $0.value.state.lifetimeIdentity) }
    }

    /// The time limits (`seconds`, `use-seconds`) reached at `now`
    /// (monotonic seconds): soft ones once, hard ones also taken out of the
    /// data path (recompile and publish after). Also hard packet and byte
    /// limits an SA has stood at or past for `usedUpGrace` seconds, which no
    /// worker will report: one lowered by `sa update` to what the SA already
    /// carried (the workers report a crossing, and none is left to cross; its
    /// packets were dropped as `lifetime_expired` without an EXPIRE), or an
    /// EXPIRE lost to a full event ring. Soft packet and byte limits the
    /// same way, once per SA and limit (`noteSoftExpiry` records the
    /// workers' own).
    public func checkTimes(now: Double) -> [Expiry] {
        var out: [Expiry] = []
        // Each SA with what it has carried (packets, bytes).
        let sas: [(SAIdentifier, SAConfig, UInt64, UInt64, UInt64)] =
            outbound.map { ($0.key, $0.value.config, $0.value.state.lifetimeIdentity, $0.value.state.packetsSent,
                            $0.value.state.bytesSent) }
            + inbound.map { ($0.key, $0.value.config, $0.value.state.lifetimeIdentity, $0.value.state.packetsReceived,
                             $0.value.state.bytesReceived) }
        // Also the lifetimes of SAs a hard limit took out: put back under
        // the same key (another configuration), they go on from there.
        let live = Set(sas.map(\.2)).union(retiredOutbound.values.map(\.state.lifetimeIdentity))
            .union(retiredInbound.values.map(\.state.lifetimeIdentity))
        installedAt = installedAt.filter { live.contains($0.key) }
        firstUsedAt = firstUsedAt.filter { live.contains($0.key) }
        // Pruned with the lifetimes (serials are never reused).
        softReported = softReported.filter { live.contains($0.key) }
        usedUpSince = usedUpSince.filter { live.contains($0.key) }
        softUsedUpSince = softUsedUpSince.filter { live.contains($0.key.life) }
        lifeOfToken = lifeOfToken.filter { live.contains($0.value) }
        for (id, sa, life, packets, bytes) in sas where expired[id] == nil {
            let installed = installedAt[life] ?? now
            installedAt[life] = installed
            if packets > 0 && firstUsedAt[life] == nil { firstUsedAt[life] = now }
            // A soft packet or byte limit stood at for `usedUpGrace` with no
            // worker's EXPIRE(soft): lowered below what the SA carried (no
            // packet crosses it), or the event lost to a full ring.
            for (kind, used) in [(SALifetime.Kind.packets, packets), (.bytes, bytes)] {
                let limit = SoftLimit(life: life, kind: kind)
                guard let soft = sa.lifetime[kind]?.soft, used >= soft, softReported[life]?.contains(kind) != true else {
                    softUsedUpSince[limit] = nil
                    continue
                }
                let since = softUsedUpSince[limit] ?? now
                softUsedUpSince[limit] = since
                if now - since >= Self.usedUpGrace {
                    softReported[life, default: []].insert(kind)
                    out.append(Expiry(identifier: id, direction: sa.direction, hard: false, reason: kind.rawValue))
                }
            }
            var hardReason: String? = nil
            for (kind, start) in [(SALifetime.Kind.seconds, Optional(installed)), (.useSeconds, firstUsedAt[life])] {
                guard let limits = sa.lifetime[kind], let start else { continue }
                let age = now - start
                if let soft = limits.soft, age >= Double(soft), softReported[life, default: []].insert(kind).inserted {
                    out.append(Expiry(identifier: id, direction: sa.direction, hard: false, reason: kind.rawValue))
                }
                if let hard = limits.hard, age >= Double(hard) {
                    hardReason = kind.rawValue
                    break
                }
            }
            if hardReason == nil, let kind = Self.hardLimitReached(sa, packets: packets, bytes: bytes) {
                let since = usedUpSince[life] ?? now
                usedUpSince[life] = since
                if now - since >= Self.usedUpGrace { hardReason = kind.rawValue }
            } else {
                usedUpSince[life] = nil
            }
            if let hardReason {
                retire(id, sa)
                forceFull = true
                out.append(Expiry(identifier: id, direction: sa.direction, hard: true, reason: hardReason))
            }
        }
        return out
    }

    /// The next sequence number of an outbound SA (for reports and tests).
    public func nextSequence(spi: UInt32) -> UInt64? {
        outbound.first { $0.key.spi.rawValue == spi }?.value.state.nextSequence
    }

    static func algorithm(_ t: AEADTransform) -> AEADAlgorithm {
        switch t {
        case .aesGCM128: .aes128GCM
        case .aesGCM256: .aes256GCM
        case .chacha20Poly1305: .chacha20Poly1305
        }
    }

    static func engine(_ c: CryptoEngineChoice) -> CryptoEngineKind {
        switch c {
        case .auto: .auto
        case .ipsecMB: .ipsecMB
        case .sodium: .sodium
        }
    }

    static func df(_ d: OuterDF) -> DFPolicy {
        switch d {
        case .copy: .copy
        case .set: .set
        case .clear: .clear
        }
    }

    static func key(_ a: AEADAlgorithm, _ sa: SAConfig, _ engine: CryptoEngineKind) throws(IPsecConfigError) -> AEADKey {
        do {
            return try sa.keyMaterial.withUnsafeBytes { raw throws(CryptoError) in
                try AEADKey(a, keyMaterial: raw, engine: engine)
            }
        } catch {
            throw IPsecConfigError(message: "SA spi \(sa.spi): \(error)")
        }
    }
}

// MARK: - Path MTU (RFC 4301 §8.2)

extension IPsecCompiler {
    /// How long a path MTU learnt from ICMP stands before the SA's packets
    /// may be as large as their port allows again (RFC 4301 §8.2.2 asks for
    /// aging; RFC 1191 §6.3 suggests 10 minutes).
    public static let pathMTUAge = 600.0

    /// The smallest path MTU taken from ICMP: 576 for an IPv4 path (every
    /// host takes datagrams of that size, RFC 791), 1280 for IPv6 (RFC 8200
    /// §5; RFC 8021: a smaller one is never acted on). A forged message
    /// cannot shrink an SA's packets below those.
    public static func pathMTUFloor(ipv6: Bool) -> Int { ipv6 ? 1280 : 576 }

    /// What became of an ICMP "too big" report (`learnPathMTU`).
    public enum PathMTUOutcome: Equatable, Sendable, CustomStringConvertible {
        /// The SA now held to `mtu` (a smaller value than it had, or the same one confirmed).
        case learnt(SAIdentifier, mtu: Int, changed: Bool)
        /// Not acted on, and why.
        case ignored(String)

        public var description: String {
            switch self {
            case .learnt(let id, let mtu, let changed):
                return "sluice: path MTU of SA \(id): \(mtu)" + (changed ? "" : " (confirmed)")
            case .ignored(let why):
                return "sluice: ICMP too big ignored: \(why)"
            }
        }
    }

    /// RFC 4301 §8.2.1: maps an ICMP "too big" message about one of the
    /// gateway's ESP packets (a worker's `SL_EVENT_PATH_MTU`: the quoted
    /// packet's SPI, low 32 bits of its sequence number, outer addresses,
    /// whether it was in UDP) to the outbound tunnel-mode SA that sent it,
    /// and holds that SA's ESP packets to `mtu` on every worker
    /// (`OutboundSAState.pathMTU`, read once per burst). The message is not
    /// authenticated, so it is taken only when it names an installed SA by
    /// SPI, destination, source and encapsulation, and a sequence number the
    /// SA has sent; and only to lower the SA's path MTU (or confirm it),
    /// never below `pathMTUFloor` (IPv6: one below is taken as 1280, RFC
    /// 8201 §4; IPv4: ignored). It stands for `pathMTUAge` seconds from the
    /// last message (`agePathMTUs`). Transport-mode SAs are never matched:
    /// their packets carry a protected host's source, so a router's message
    /// goes to that host, and one sent to the gateway is forged. One lookup
    /// by key (a tunnel-mode SA names its destination), whatever the number of SAs.
    public func learnPathMTU(spi: UInt32, source: IPAddress, destination: IPAddress, udp: Bool, sequence: UInt32,
                             mtu reported: Int, now: Double) -> PathMTUOutcome {
        let key = SAIdentifier(spi: SecurityParameterIndex(spi), destination: destination)
        let name = key.description
        guard let o = outbound[key], o.config.mode == .tunnel, o.config.source == source,
              (o.config.encapsulation != nil) == udp else {
            return .ignored("no outbound tunnel-mode SA \(name) from \(source)\(udp ? " in UDP" : "")")
        }
        let ipv6 = !destination.isIPv4
        let floor = Self.pathMTUFloor(ipv6: ipv6)
        guard reported >= floor || ipv6 else { return .ignored("MTU \(reported) for SA \(name) is below \(floor)") }
        let mtu = max(reported, floor)
        guard Self.hasSent(sequence, first: o.state.first, next: o.state.nextSequence) else {
            return .ignored("SA \(name) has not sent sequence number \(sequence)")
        }
        let current = Int(o.state.pathMTU)
        guard current == 0 || mtu <= current else {
            return .ignored("MTU \(mtu) for SA \(name) is above its path MTU \(current)")
        }
        o.state.pathMTU = UInt64(mtu)
        o.state.pathMTUSince = now
        return .learnt(key, mtu: mtu, changed: mtu != current)
    }

    /// `learnPathMTU` for a worker's `SL_EVENT_PATH_MTU`.
    public func learnPathMTU(_ e: sl_event, now: Double) -> PathMTUOutcome {
        learnPathMTU(spi: e.policy_id, source: e.sourceAddress, destination: e.destinationAddress,
                     udp: e.proto == IPProtocol.udp.rawValue, sequence: e.sa_token, mtu: Int(e.sport), now: now)
    }

    /// Whether an SA whose numbers run from `first` and whose next is `next`
    /// (0: every number up to 2^64 − 1 taken) has taken one whose low 32
    /// bits are `low`: the latest such number below `next` is not before `first`.
    static func hasSent(_ low: UInt32, first: UInt64, next: UInt64) -> Bool {
        guard next == 0 || next > first else { return false }
        let last = next &- 1
        var candidate = (last & ~0xFFFF_FFFF) | UInt64(low)
        if candidate > last {
            guard candidate >= 1 << 32 else { return false }
            candidate -= 1 << 32
        }
        return candidate >= first
    }

    /// The path MTU an installed outbound SA's packets are held to, nil when none was learnt.
    public func pathMTU(of id: SAIdentifier) -> Int? {
        guard let o = outbound[id], o.state.pathMTU != 0 else { return nil }
        return Int(o.state.pathMTU)
    }

    /// Path MTUs learnt `pathMTUAge` seconds or more before `now` are
    /// forgotten (RFC 4301 §8.2.2): the SA's packets may again be as large as
    /// their port allows, until a router says otherwise. The SAs, sorted.
    public func agePathMTUs(now: Double) -> [SAIdentifier] {
        var aged: [SAIdentifier] = []
        for (id, o) in outbound where o.state.pathMTU != 0 && now - o.state.pathMTUSince >= Self.pathMTUAge {
            o.state.pathMTU = 0
            aged.append(id)
        }
        return aged.sorted()
    }
}

