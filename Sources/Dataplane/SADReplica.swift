import CShims
import Crypto
import IPsec
import Synchronization

// Per-core SAD replicas. Every worker owns one: the inbound SAs by SPI (and
// destination, source where an SA names them) and the outbound SA each
// protect target resolves to on this core. Only the worker writes its
// replica; the control thread changes it by posting command batches on the
// worker's single-producer/single-consumer ring. The worker applies whole
// batches between bursts (so a burst sees one replica state) and then
// acknowledges the batch's generation; a change is committed once every
// worker acknowledged it, and only then are the records it removed freed.
// The per-packet path reads its own replica: no lock, no atomic, no shared
// writes (the SA's mutable state — sequence number, replay window, counters —
// is written by the core that owns it, see `OutboundRecord.owner`).

/// One inbound SA as the replicas hold it: built by the control thread,
/// immutable, read by every worker's replica; freed after the commit that
/// removed it from all of them.
public struct InboundRecord {
    public internal(set) var sa: InboundSA
    var window: UnsafeMutablePointer<ReplayWindow>
    var life: InboundLife
    /// The worker (index) that keeps the replay window and counters.
    public internal(set) var owner: Int32
    /// 3: SPI + destination + source, 2: SPI + destination, 0: SPI alone (most specific wins).
    var specificity: Int32
    /// 1 once `owner` may use the window (read and raised atomically:
    /// `windowReady`). A record that takes over an installed SA's window
    /// under another owner, or a window rebuilt from the installed one
    /// (same key, new size, engine or ESN setting), starts at 0: the
    /// installed record's owner raises it when it applies the change
    /// (`SADCommand.handover`), after its last use of the old record and
    /// after carrying its highest number over. Until then the new owner
    /// drops the SA's packets (`sa_moving`): two workers never write one
    /// window, and nothing the old one accepted is accepted again.
    var ready: UInt32 = 1
}

/// Whether `record`'s owner may use its replay window (see `InboundRecord.ready`).
@inline(__always)
func windowReady(_ record: UnsafeMutablePointer<InboundRecord>) -> Bool {
    sl_flag_load(record.pointer(to: \.ready)!) != 0
}

extension SARecordBox {
    /// Whether the inbound record's owner may use its window yet (tests, and
    /// the compiler's check that no handover is pending).
    public var inboundReady: Bool { inbound.map(windowReady) ?? true }
}

/// One outbound SA as the replicas hold it (immutable, like `InboundRecord`).
public struct OutboundRecord {
    var sa: OutboundSA
    var next: UnsafeMutablePointer<UInt64>
    /// The last sequence number the SA may send: the sequence space or its packet lifetime.
    var limit: UInt64
    var life: OutboundLife
    /// The worker that seals the SA's packets when several workers use it
    /// and the gateway hands packets to the owner (`SharedSAMode.handoff`);
    /// −1: every worker seals, taking sequence numbers with an atomic reservation.
    var owner: Int32
    /// Tells this record from a later one at the same address (`SARecordBox`
    /// sets it): a packet handed over for a record since freed must not be
    /// sealed by the SA that reuses its memory.
    var serial: UInt32 = 0
    /// The fallback SA of a reqid (no cpu): a worker sealing with it under a
    /// `per-cpu` policy raises ACQUIRE for an SA of its own.
    var fallback = false
}

/// The memory of one SA record and what keeps its mutable state alive. The
/// gateway keeps every box whose record a replica may hold.
public final class SARecordBox {
    let inbound: UnsafeMutablePointer<InboundRecord>?
    let outbound: UnsafeMutablePointer<OutboundRecord>?
    /// The SA state object (key, counters) the record points into.
    private let state: AnyObject

    init(_ record: InboundRecord, state: InboundSAState) {
        inbound = .allocate(capacity: 1)
        inbound!.initialize(to: record)
        outbound = nil
        self.state = state
    }
    init(_ record: OutboundRecord, state: OutboundSAState) {
        outbound = .allocate(capacity: 1)
        outbound!.initialize(to: record)
        outbound!.pointee.serial = Self.serials.add(1, ordering: .relaxed).newValue
        inbound = nil
        self.state = state
    }
    /// Outbound records made so far (`OutboundRecord.serial`).
    static let serials = Atomic<UInt32>(0)
    deinit {
        inbound?.deinitialize(count: 1).deallocate()
        outbound?.deinitialize(count: 1).deallocate()
    }
}

/// One change to a replica.
public struct SADCommand {
    enum Kind: UInt8 {
        /// Forget every SA and target (a new compiler takes over, or IPsec is switched off).
        case clear
        case addInbound
        case removeInbound
        /// The outbound SA may be sealed on this core (packets handed over with it are checked against this set).
        case addOutbound
        case removeOutbound
        /// `targets[target] = outbound` (nil: no SA on this core).
        case setTarget
        /// The owner of `inbound` (an installed record the change removes)
        /// hands its replay window to `successor`: carries its highest
        /// number over when the successor has a window of its own, then
        /// marks the successor ready. Other replicas ignore it.
        case handoverInbound
    }
    var kind: Kind
    var target: Int32 = -1
    var inbound: UnsafeMutablePointer<InboundRecord>? = nil
    var outbound: UnsafeMutablePointer<OutboundRecord>? = nil
    var successor: UnsafeMutablePointer<InboundRecord>? = nil

    public static var clear: SADCommand { SADCommand(kind: .clear) }
    public static func add(_ box: SARecordBox) -> SADCommand { SADCommand(kind: .addInbound, inbound: box.inbound) }
    public static func remove(_ box: SARecordBox) -> SADCommand { SADCommand(kind: .removeInbound, inbound: box.inbound) }
    public static func addOutbound(_ box: SARecordBox) -> SADCommand { SADCommand(kind: .addOutbound, outbound: box.outbound) }
    public static func removeOutbound(_ box: SARecordBox) -> SADCommand { SADCommand(kind: .removeOutbound, outbound: box.outbound) }
    public static func handover(_ from: SARecordBox, to: SARecordBox) -> SADCommand {
        SADCommand(kind: .handoverInbound, inbound: from.inbound, successor: to.inbound)
    }
    public static func setTarget(_ target: Int32, _ box: SARecordBox?) -> SADCommand {
        SADCommand(kind: .setTarget, target: target, outbound: box?.outbound)
    }
}

/// One worker's part of a change: what the ring carries (one pointer per batch).
struct SADBatch {
    var generation: UInt64
    var count: Int
    var commands: UnsafeMutablePointer<SADCommand>
}

/// One slot of a replica's inbound table (16 bytes, four to a cache line):
/// the SPI, how specific the SA is and whether it is the only SA with its
/// SPI, so that the common case — the sole SA of an SPI, found by SPI alone —
/// is decided without reading the record.
struct InboundSlot {
    /// spi << 32 | specificity << 8 | sole (bit 0).
    var key: UInt64 = 0
    /// nil: empty.
    var record: UnsafeMutablePointer<InboundRecord>? = nil

    var spi: UInt32 { UInt32(truncatingIfNeeded: key >> 32) }
    var specificity: Int32 { Int32(truncatingIfNeeded: (key >> 8) & 0xFF) }
    var sole: Bool { key & 1 != 0 }
    static let soleBit: UInt64 = 1
}

/// A worker's SAD replica. Fixed capacity, allocated at set-up (applying a
/// command never allocates).
public final class SADReplica {
    /// Inbound SAs: open addressing with linear probing over a power of two
    /// of slots, at most half full; one slot per SA (several SAs may share
    /// an SPI, and then lie in one run from their common home slot).
    let slots: UnsafeMutablePointer<InboundSlot>
    let slotMask: Int
    let slotShift: UInt64
    /// Outbound: the SA each protect target (an SPD verdict's `sa`) resolves to on this core.
    let targets: UnsafeMutablePointer<UnsafeMutablePointer<OutboundRecord>?>
    /// The outbound records installed (a set of pointers, open addressing
    /// like the inbound table): a packet another worker handed over is sealed
    /// only with a record this replica still holds.
    let outSlots: UnsafeMutablePointer<UnsafeMutablePointer<OutboundRecord>?>
    public let inboundCapacity: Int
    public let targetCapacity: Int
    /// The index of the worker that owns this replica (−1: none, a
    /// benchmark's or a test's): it performs the handovers of the inbound
    /// records it owns (`SADCommand.handover`).
    public var worker = -1
    public private(set) var inboundCount = 0
    /// Of those, transport mode: while there is one, ESP fragments in transit
    /// under a protect policy may be its packets (they are reassembled).
    public private(set) var transportInboundCount = 0

    public init(inboundCapacity: Int, targetCapacity: Int) {
        self.inboundCapacity = inboundCapacity
        self.targetCapacity = targetCapacity
        var bits = 4
        while (1 << bits) < 2 * inboundCapacity { bits += 1 }
        slots = .allocate(capacity: 1 << bits)
        slots.initialize(repeating: InboundSlot(), count: 1 << bits)
        slotMask = (1 << bits) - 1
        slotShift = UInt64(64 - bits)
        targets = .allocate(capacity: max(targetCapacity, 1))
        targets.initialize(repeating: nil, count: max(targetCapacity, 1))
        outSlots = .allocate(capacity: 1 << bits)
        outSlots.initialize(repeating: nil, count: 1 << bits)
    }

    deinit {
        slots.deallocate()
        targets.deallocate()
        outSlots.deallocate()
    }

    @inline(__always)
    func outHome(_ r: UnsafeMutablePointer<OutboundRecord>) -> Int {
        Int(truncatingIfNeeded: Self.spiHash(UInt32(truncatingIfNeeded: UInt(bitPattern: r) >> 4)) >> slotShift)
    }

    /// Whether this replica holds outbound record `r` (a handed-over packet's SA).
    @inline(__always)
    func holdsOutbound(_ r: UnsafeMutablePointer<OutboundRecord>) -> Bool {
        var slot = outHome(r)
        while let found = outSlots[slot] {
            if found == r { return true }
            slot = (slot &+ 1) & slotMask
        }
        return false
    }
    public private(set) var outboundCount = 0

    /// Fibonacci hashing of an SPI (the top bits index the table).
    @inline(__always)
    static func spiHash(_ spi: UInt32) -> UInt64 { UInt64(spi) &* 0x9E37_79B9_7F4A_7C15 }

    /// The inbound SA for an ESP header: the most specific SA with its SPI
    /// whose addresses match the packet's, or nil.
    @inline(__always)
    func inbound(_ header: ESPInboundHeader) -> UnsafeMutablePointer<InboundRecord>? {
        let spi = header.spi.rawValue
        var slot = Int(truncatingIfNeeded: Self.spiHash(spi) >> slotShift)
        var best: UnsafeMutablePointer<InboundRecord>? = nil
        var bestSpecificity: Int32 = -1
        // At most half full: an empty slot ends every probe.
        while let r = slots[slot].record {
            let s = slots[slot]
            if s.spi == spi {
                // The sole SA of its SPI, by SPI alone: no address to compare.
                if s.key & 0xFFFF_FFFF == InboundSlot.soleBit { return r }
                if s.specificity > bestSpecificity && r.pointee.sa.matches(header) {
                    best = r
                    bestSpecificity = s.specificity
                }
                if s.sole { return best }
            }
            slot = (slot &+ 1) & slotMask
        }
        return best
    }

    /// Looks up a burst of headers (as a worker would, one after the other):
    /// `into[i]` is the record for `headers[i]`, or nil. For benchmarks and
    /// tests (the worker calls `inbound` inline).
    public func lookup(_ headers: UnsafePointer<ESPInboundHeader>, count: Int,
                       into out: UnsafeMutablePointer<UnsafeMutablePointer<InboundRecord>?>) {
        var i = 0
        while i < count { out[i] = inbound(headers[i]); i &+= 1 }
    }

    /// Applies one command (the owning worker between bursts, or the control
    /// thread while the workers are stopped, or a benchmark's own replica).
    /// Never allocates.
    public func apply(_ c: SADCommand) {
        switch c.kind {
        case .clear:
            slots.update(repeating: InboundSlot(), count: slotMask + 1)
            outSlots.update(repeating: nil, count: slotMask + 1)
            targets.update(repeating: nil, count: max(targetCapacity, 1))
            inboundCount = 0
            transportInboundCount = 0
            outboundCount = 0
        case .addOutbound:
            guard let r = c.outbound, outboundCount < inboundCapacity else { return }
            var slot = outHome(r)
            while let found = outSlots[slot] {
                if found == r { return }
                slot = (slot &+ 1) & slotMask
            }
            outSlots[slot] = r
            outboundCount &+= 1
        case .removeOutbound:
            guard let r = c.outbound else { return }
            var slot = outHome(r)
            while let found = outSlots[slot], found != r { slot = (slot &+ 1) & slotMask }
            guard outSlots[slot] != nil else { return }
            outSlots[slot] = nil
            outboundCount &-= 1
            closeHole(at: slot, home: { i in outSlots[i].map(outHome) }, move: { from, to in
                outSlots[to] = outSlots[from]
                outSlots[from] = nil
            })
        case .addInbound:
            guard let r = c.inbound, inboundCount < inboundCapacity else { return }
            let spi = r.pointee.sa.spi.rawValue
            var slot = Int(truncatingIfNeeded: Self.spiHash(spi) >> slotShift)
            var sameSPI = 0
            while let found = slots[slot].record {
                if found == r { return }  // already there
                if slots[slot].spi == spi { sameSPI &+= 1 }
                slot = (slot &+ 1) & slotMask
            }
            slots[slot] = InboundSlot(key: UInt64(spi) << 32 | UInt64(UInt8(truncatingIfNeeded: r.pointee.specificity)) << 8,
                                      record: r)
            inboundCount &+= 1
            if r.pointee.sa.mode == .transport { transportInboundCount &+= 1 }
            markSole(spi)
        case .removeInbound:
            guard let r = c.inbound else { return }
            let spi = r.pointee.sa.spi.rawValue
            var slot = Int(truncatingIfNeeded: Self.spiHash(spi) >> slotShift)
            while let found = slots[slot].record, found != r { slot = (slot &+ 1) & slotMask }
            guard slots[slot].record != nil else { return }
            slots[slot] = InboundSlot()
            inboundCount &-= 1
            if r.pointee.sa.mode == .transport { transportInboundCount &-= 1 }
            closeHole(at: slot, home: { i in
                slots[i].record == nil ? nil : Int(truncatingIfNeeded: Self.spiHash(slots[i].spi) >> slotShift)
            }, move: { from, to in
                slots[to] = slots[from]
                slots[from] = InboundSlot()
            })
            markSole(spi)
        case .setTarget:
            guard c.target >= 0 && Int(c.target) < targetCapacity else { return }
            targets[Int(c.target)] = c.outbound
        case .handoverInbound:
            guard let old = c.inbound, let new = c.successor, Int(old.pointee.owner) == worker else { return }
            Self.handOver(old, to: new)
        }
    }

    /// The window handover (`SADCommand.handover`), on the old record's
    /// owner between bursts: nothing else writes either window now (the
    /// new owner waits for `ready`). A rebuilt window takes the old one's
    /// highest number when that is higher than what the compiler read: what
    /// was accepted since counts as received (everything at or below it
    /// does). Past 2^32 − 1 for a window without ESN (switched off
    /// meanwhile), every number counts as received: the SA accepts nothing.
    static func handOver(_ old: UnsafeMutablePointer<InboundRecord>, to new: UnsafeMutablePointer<InboundRecord>) {
        let window = new.pointee.window
        if window != old.pointee.window {
            let highest = old.pointee.window.pointee.highestReceived
            if highest.rawValue > window.pointee.highestReceived.rawValue {
                do {
                    try window.pointee.reset(highestReceived: highest)
                } catch {
                    try? window.pointee.reset(highestReceived: SequenceNumber(UInt64(UInt32.max)))
                }
            }
        }
        sl_flag_store(new.pointer(to: \.ready)!, 1)
    }

    /// Sets the sole bit of `spi`'s slots: on when one SA has the SPI, off
    /// when several do (they all lie in the run from the SPI's home slot).
    private func markSole(_ spi: UInt32) {
        var slot = Int(truncatingIfNeeded: Self.spiHash(spi) >> slotShift)
        var count = 0
        var start = slot
        while slots[slot].record != nil {
            if slots[slot].spi == spi { count &+= 1 }
            slot = (slot &+ 1) & slotMask
        }
        while slots[start].record != nil {
            if slots[start].spi == spi {
                slots[start].key = count == 1 ? slots[start].key | InboundSlot.soleBit : slots[start].key & ~InboundSlot.soleBit
            }
            start = (start &+ 1) & slotMask
        }
    }

    /// Backward-shift deletion after emptying `slot` (linear probing): moves
    /// each later entry of the run into the hole unless its home slot lies
    /// cyclically in (hole, entry], so every probe still finds every entry.
    /// `home(i)`: slot i's home, nil when empty.
    @inline(__always)
    private func closeHole(at slot: Int, home: (Int) -> Int?, move: (_ from: Int, _ to: Int) -> Void) {
        var hole = slot
        var next = (slot &+ 1) & slotMask
        while let h = home(next) {
            let stays = hole <= next ? (hole < h && h <= next) : (hole < h || h <= next)
            if !stays {
                move(next, hole)
                hole = next
            }
            next = (next &+ 1) & slotMask
        }
    }

    /// Applies a batch (see `apply`).
    func apply(_ batch: UnsafePointer<SADBatch>) {
        var i = 0
        while i < batch.pointee.count { apply(batch.pointee.commands[i]); i &+= 1 }
    }
}
