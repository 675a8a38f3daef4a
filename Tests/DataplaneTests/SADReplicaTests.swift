import Crypto
@testable import Dataplane
import IPsec
import Packet
import Testing

/// The per-worker SAD replica against a reference model: the inbound
/// open-addressing table (linear probing, backward-shift deletion, several
/// SAs per SPI, most specific match wins), the protect targets and `clear`.
/// No EAL needed.
@Suite struct SADReplicaTests {
    /// One candidate inbound SA and what the model knows about it.
    struct Entry {
        let spi: UInt32
        let source: RawIPAddress?
        let destination: RawIPAddress?
        let box: SARecordBox
        /// 3: SPI + destination + source, 2: SPI + destination, 1: SPI + source, 0: SPI alone.
        var specificity: Int { (destination != nil ? 2 : 0) + (source != nil ? 1 : 0) }
        var pointer: UnsafeMutablePointer<InboundRecord> { box.inbound! }

        func matches(_ h: ESPInboundHeader) -> Bool {
            h.spi.rawValue == spi && (destination == nil || destination == h.destination)
                && (source == nil || source == h.source)
        }
    }

    /// One key and one replay window shared by every record (the replica only
    /// looks at SPIs, addresses and record identity).
    final class Fixture {
        let state: InboundSAState
        let outboundState: OutboundSAState

        init() throws {
            let key = try AEADKey(.aes256GCM, keyMaterial: [UInt8](repeating: 0x42, count: 36))
            state = InboundSAState(key: key, window: try ReplayWindow.allocate(configuration: .disabled))
            let outKey = try AEADKey(.aes256GCM, keyMaterial: [UInt8](repeating: 0x43, count: 36))
            outboundState = OutboundSAState(key: outKey, next: 1, esn: false)
        }

        func entry(spi: UInt32, source: IPAddress? = nil, destination: IPAddress? = nil) throws -> Entry {
            let sa = try InboundSA(spi: SPI(spi), mode: .tunnel, key: state.key.unsafeHandle, esn: false,
                                   source: source, destination: destination)
            return Entry(spi: spi, source: source.map(RawIPAddress.init), destination: destination.map(RawIPAddress.init),
                         box: SARecordBox(inbound: sa, state: state, limits: SALimits(), owner: 0))
        }

        func outbound(spi: UInt32) -> SARecordBox {
            let sa = OutboundSA(spi: SPI(spi), mode: .transport, key: outboundState.key.unsafeHandle, esn: false)
            return SARecordBox(outbound: sa, state: outboundState, limits: SALimits())
        }
    }

    // Addresses the SAs name, and others that only headers carry.
    static let sources: [IPAddress] = [.v4(IPv4Address(10, 0, 0, 1)), .v4(IPv4Address(10, 0, 0, 2)),
                                       .v6(IPv6Address(high: 0x2001_0db8_0000_0000, low: 1))]
    static let destinations: [IPAddress] = [.v4(IPv4Address(192, 0, 2, 1)), .v4(IPv4Address(192, 0, 2, 2)),
                                            .v6(IPv6Address(high: 0x2001_0db8_0000_00ff, low: 1))]
    static let headerSources: [RawIPAddress] = sources.map(RawIPAddress.init)
        + [RawIPAddress(ipv4: 0x0A00_0009), RawIPAddress(ipv6High: 0x2001_0db8_0000_0000, low: 9)]
    static let headerDestinations: [RawIPAddress] = destinations.map(RawIPAddress.init)
        + [RawIPAddress(ipv4: 0xC000_0209), RawIPAddress(ipv6High: 0x2001_0db8_0000_00ff, low: 9)]

    static func header(spi: UInt32, source: RawIPAddress, destination: RawIPAddress) -> ESPInboundHeader {
        ESPInboundHeader(spi: SPI(spi), sequenceLow: 1, espOffset: source.isIPv6 ? 40 : 20, ipLength: 120,
                         protocolFieldOffset: source.isIPv6 ? 6 : 9, udpEncapsulated: false, udpSourcePort: 0,
                         udpDestinationPort: 0, source: source, destination: destination)
    }

    /// Every header combination for `spi`: hits at each specificity, and misses
    /// with the same SPI and other addresses.
    static func headers(spi: UInt32) -> [ESPInboundHeader] {
        headerSources.flatMap { s in headerDestinations.map { d in header(spi: spi, source: s, destination: d) } }
    }

    /// Every SA shape for one SPI: SPI alone, + source, + destination, + both
    /// (same family only). No two share SPI and addresses, so the most
    /// specific match is unique.
    static func entries(spi: UInt32, _ f: Fixture) throws -> [Entry] {
        var out = [try f.entry(spi: spi)]
        for s in sources { out.append(try f.entry(spi: spi, source: s)) }
        for d in destinations { out.append(try f.entry(spi: spi, destination: d)) }
        for s in sources { for d in destinations where s.isIPv4 == d.isIPv4 {
            out.append(try f.entry(spi: spi, source: s, destination: d))
        } }
        return out
    }

    /// The slot an SPI hashes to in `replica`.
    static func home(_ spi: UInt32, _ replica: SADReplica) -> Int {
        Int(truncatingIfNeeded: SADReplica.spiHash(spi) >> replica.slotShift)
    }

    /// SPIs whose home slots cluster at the end of the table and at its start
    /// (probe runs wrap around and collide), and a couple elsewhere.
    static func clusteredSPIs(_ replica: SADReplica, count: Int) -> [UInt32] {
        let slots = replica.slotMask + 1
        let wanted: [Int] = [slots - 1, slots - 1, slots - 2, slots - 2, slots - 3, 0, 0, 1, slots / 2, slots / 2]
        var used = Set<UInt32>()
        var out: [UInt32] = []
        for w in wanted.prefix(count) {
            var spi: UInt32 = 256
            while home(spi, replica) != w || used.contains(spi) { spi += 1 }
            used.insert(spi)
            out.append(spi)
        }
        return out
    }

    /// The reference: the most specific live entry matching `h`, or nil.
    static func modelLookup(_ h: ESPInboundHeader, _ live: [UInt32: Set<Int>], _ pool: [Entry]) -> Int? {
        var best: Int? = nil
        var bestSpecificity = -1
        for i in live[h.spi.rawValue] ?? [] where pool[i].matches(h) && pool[i].specificity > bestSpecificity {
            best = i
            bestSpecificity = pool[i].specificity
        }
        return best
    }

    /// The table's own invariants: the occupied slots are exactly the live
    /// records, each once, under its own SPI, and reachable from its home slot
    /// without crossing an empty slot. Returns a description of the first
    /// violation, or nil.
    static func invariantViolation(_ replica: SADReplica, live: Set<Int>, pool: [Entry],
                                   index: [UnsafeMutablePointer<InboundRecord>: Int]) -> String? {
        let slots = replica.slotMask + 1
        var seen = Set<Int>()
        for slot in 0..<slots {
            guard let r = replica.slots[slot].record else { continue }
            guard let i = index[r] else { return "slot \(slot) holds a record not from the pool" }
            guard live.contains(i) else { return "slot \(slot) holds removed record #\(i) (spi \(pool[i].spi))" }
            guard seen.insert(i).inserted else { return "record #\(i) is in two slots" }
            guard replica.slots[slot].spi == pool[i].spi else {
                return "slot \(slot) has SPI \(replica.slots[slot].spi) for a record of SPI \(pool[i].spi)"
            }
            var s = home(pool[i].spi, replica)
            while s != slot {
                if replica.slots[s].record == nil {
                    return "record #\(i) (spi \(pool[i].spi), home \(home(pool[i].spi, replica))) in slot \(slot) is cut off by empty slot \(s)"
                }
                s = (s + 1) & replica.slotMask
            }
        }
        if seen.count != live.count { return "\(live.count - seen.count) live records are missing from the table" }
        // The sole bit: set exactly on the slots of SPIs that one live record has.
        var perSPI: [UInt32: Int] = [:]
        for i in live { perSPI[pool[i].spi, default: 0] += 1 }
        for slot in 0..<slots where replica.slots[slot].record != nil {
            let s = replica.slots[slot]
            if s.sole != (perSPI[s.spi] == 1) {
                return "slot \(slot) (spi \(s.spi)): sole bit \(s.sole) but \(perSPI[s.spi] ?? 0) live records have the SPI"
            }
        }
        if replica.inboundCount != live.count { return "inboundCount \(replica.inboundCount), model \(live.count)" }
        return nil
    }

    // MARK: - Differential test

    enum Op: CustomStringConvertible {
        case add(Int), remove(Int), clear
        var description: String {
            switch self {
            case .add(let i): "add #\(i)"
            case .remove(let i): "remove #\(i)"
            case .clear: "clear"
            }
        }
    }

    /// Thousands of random adds, removes (of present and absent records),
    /// re-adds and the odd clear on a small replica (64 SAs, 128 slots) whose
    /// SPIs all hash to a few slots around the table's end; after every step
    /// the lookups equal the model's and the table's invariants hold.
    @Test(arguments: TestSeeds.list(fixed: [1, 0x5AD_0001, 0xDEAD_BEEF_CAFE]))
    func matchesTheModel(seed: UInt64) throws {
        let f = try Fixture()
        let capacity = 64
        let replica = SADReplica(inboundCapacity: capacity, targetCapacity: 4)
        #expect(replica.slotMask + 1 == 128)
        let spis = Self.clusteredSPIs(replica, count: 10)
        var pool: [Entry] = []
        for spi in spis { pool += try Self.entries(spi: spi, f) }  // 12 per SPI: 120 > capacity
        let index = Dictionary(uniqueKeysWithValues: pool.enumerated().map { ($1.pointer, $0) })
        // A missing SPI whose probe walks through the cluster at the table's end.
        var missSPI: UInt32 = 256
        while Self.home(missSPI, replica) != replica.slotMask || spis.contains(missSPI) { missSPI += 1 }
        let headersBySPI = Dictionary(uniqueKeysWithValues: (spis + [missSPI]).map { ($0, Self.headers(spi: $0)) })
        let allSPIs = spis + [missSPI]

        var rng = SplitMix64(seed: seed)
        var live = Set<Int>()
        var liveBySPI: [UInt32: Set<Int>] = [:]
        let tag = "seed \(TestSeeds.hex(seed))"

        func check(_ spisToCheck: [UInt32], step: Int, op: Op) -> Bool {
            if let v = Self.invariantViolation(replica, live: live, pool: pool, index: index) {
                Issue.record("\(tag) step \(step) (\(op)): \(v)")
                return false
            }
            for spi in spisToCheck {
                for h in headersBySPI[spi]! {
                    let want = Self.modelLookup(h, liveBySPI, pool)
                    let got = replica.inbound(h)
                    if got != want.map({ pool[$0].pointer }) {
                        let gotText = got.map { p in
                            index[p].map { i in "#\(i) (specificity \(pool[i].specificity))" } ?? "?"
                        } ?? "nil"
                        let wantText = want.map { "#\($0) (specificity \(pool[$0].specificity))" } ?? "nil"
                        Issue.record("\(tag) step \(step) (\(op)): spi \(spi) \(h.source) → \(h.destination): got \(gotText), model \(wantText)")
                        return false
                    }
                }
            }
            return true
        }

        let steps = 3000
        var fullAfterCapacity = 0
        for step in 0..<steps {
            // Phases of 250 steps alternate between filling (to capacity, where
            // adds are refused) and draining.
            let filling = (step / 250) % 2 == 0
            let r = rng.next() % 1000
            let op: Op
            if r < 2 {
                op = .clear
            } else if r < (filling ? 850 : 250) {
                op = .add(Int(rng.next() % UInt64(pool.count)))
            } else if !live.isEmpty && rng.next() % 4 != 0 {
                op = .remove(live.sorted()[Int(rng.next() % UInt64(live.count))])
            } else {
                op = .remove(Int(rng.next() % UInt64(pool.count)))  // often absent
            }
            switch op {
            case .add(let i):
                replica.apply(.add(pool[i].box))
                if !live.contains(i) && live.count < capacity {
                    live.insert(i)
                    liveBySPI[pool[i].spi, default: []].insert(i)
                }
                if live.count == capacity { fullAfterCapacity += 1 }
            case .remove(let i):
                replica.apply(.remove(pool[i].box))
                live.remove(i)
                liveBySPI[pool[i].spi]?.remove(i)
            case .clear:
                replica.apply(.clear)
                live.removeAll()
                liveBySPI.removeAll()
            }
            // Every step: the touched SPI, the missing one and two at random;
            // every 25 steps and at the end: all of them.
            var toCheck: [UInt32]
            if step % 25 == 24 || step == steps - 1 {
                toCheck = allSPIs
            } else {
                toCheck = [missSPI, spis[Int(rng.next() % UInt64(spis.count))], spis[Int(rng.next() % UInt64(spis.count))]]
                switch op {
                case .add(let i), .remove(let i): toCheck.append(pool[i].spi)
                case .clear: break
                }
            }
            if !check(toCheck, step: step, op: op) { return }
        }
        #expect(fullAfterCapacity > 0, "\(tag): the replica never filled up")
    }

    // MARK: - Idempotence and capacity

    @Test func duplicateAddAndAbsentRemoveChangeNothing() throws {
        let f = try Fixture()
        let replica = SADReplica(inboundCapacity: 8, targetCapacity: 1)
        let spi = Self.clusteredSPIs(replica, count: 1)[0]
        let entries = try Self.entries(spi: spi, f)
        let other = try f.entry(spi: spi &+ 1)
        let headers = Self.headers(spi: spi) + Self.headers(spi: spi &+ 1)
        func snapshot() -> [UnsafeMutablePointer<InboundRecord>?] { headers.map { replica.inbound($0) } }

        for e in entries.prefix(5) { replica.apply(.add(e.box)) }
        #expect(replica.inboundCount == 5)
        let before = snapshot()
        #expect(before.contains { $0 != nil })

        for e in entries.prefix(5) { replica.apply(.add(e.box)) }  // again
        #expect(replica.inboundCount == 5)
        #expect(snapshot() == before)

        replica.apply(.remove(entries[7].box))  // same SPI, never added
        replica.apply(.remove(other.box))  // another SPI, never added
        #expect(replica.inboundCount == 5)
        #expect(snapshot() == before)

        replica.apply(.remove(entries[2].box))
        #expect(replica.inboundCount == 4)
        let afterRemove = snapshot()
        #expect(!afterRemove.contains(entries[2].pointer))
        replica.apply(.remove(entries[2].box))  // already removed
        #expect(replica.inboundCount == 4)
        #expect(snapshot() == afterRemove)

        // Full: further adds are refused (and a duplicate add still changes nothing).
        for e in entries[5..<9] { replica.apply(.add(e.box)) }
        #expect(replica.inboundCount == 8)
        replica.apply(.add(entries[9].box))
        replica.apply(.add(entries[0].box))
        #expect(replica.inboundCount == 8)
        #expect(!headers.contains { replica.inbound($0) == entries[9].pointer })
        // Removing makes room again.
        replica.apply(.remove(entries[0].box))
        replica.apply(.add(entries[9].box))
        #expect(replica.inboundCount == 8)
        let full = Self.header(spi: spi, source: entries[9].source ?? Self.headerSources[4],
                               destination: entries[9].destination ?? Self.headerDestinations[4])
        #expect(replica.inbound(full) == entries[9].pointer)
    }

    @Test func mostSpecificWinsWhateverTheOrder() throws {
        let f = try Fixture()
        let spi: UInt32 = 0x1234
        let any = try f.entry(spi: spi)
        let bySource = try f.entry(spi: spi, source: Self.sources[0])
        let byDestination = try f.entry(spi: spi, destination: Self.destinations[0])
        let byBoth = try f.entry(spi: spi, source: Self.sources[0], destination: Self.destinations[0])
        let s0 = Self.headerSources[0], s1 = Self.headerSources[1]
        let d0 = Self.headerDestinations[0], d1 = Self.headerDestinations[1]
        for order in [[any, bySource, byDestination, byBoth], [byBoth, byDestination, bySource, any],
                      [bySource, byBoth, any, byDestination]] {
            let replica = SADReplica(inboundCapacity: 16, targetCapacity: 1)
            for e in order { replica.apply(.add(e.box)) }
            #expect(replica.inbound(Self.header(spi: spi, source: s0, destination: d0)) == byBoth.pointer)
            #expect(replica.inbound(Self.header(spi: spi, source: s1, destination: d0)) == byDestination.pointer)
            #expect(replica.inbound(Self.header(spi: spi, source: s0, destination: d1)) == bySource.pointer)
            #expect(replica.inbound(Self.header(spi: spi, source: s1, destination: d1)) == any.pointer)
            #expect(replica.inbound(Self.header(spi: spi &+ 1, source: s0, destination: d0)) == nil)
            replica.apply(.remove(any.box))
            #expect(replica.inbound(Self.header(spi: spi, source: s1, destination: d1)) == nil)
            #expect(replica.inbound(Self.header(spi: spi, source: s0, destination: d0)) == byBoth.pointer)
        }
    }

    // MARK: - Targets and clear

    @Test func targetsAndClear() throws {
        let f = try Fixture()
        let replica = SADReplica(inboundCapacity: 16, targetCapacity: 4)
        let a = f.outbound(spi: 0x2001), b = f.outbound(spi: 0x2002)
        func targets() -> [UnsafeMutablePointer<OutboundRecord>?] { (0..<4).map { replica.targets[$0] } }
        #expect(targets() == [nil, nil, nil, nil])

        replica.apply(.setTarget(0, a))
        replica.apply(.setTarget(3, b))
        #expect(targets() == [a.outbound, nil, nil, b.outbound])
        replica.apply(.setTarget(0, b))  // moved
        #expect(targets() == [b.outbound, nil, nil, b.outbound])
        replica.apply(.setTarget(3, nil))  // no SA on this core
        #expect(targets() == [b.outbound, nil, nil, nil])

        // Out of range: ignored, nothing else changes.
        for t: Int32 in [-1, 4, 5, Int32.max, Int32.min] { replica.apply(.setTarget(t, a)) }
        #expect(targets() == [b.outbound, nil, nil, nil])

        // Target commands leave the inbound SAs alone, and the other way round.
        let entries = try Self.entries(spi: 0x3001, f)
        for e in entries { replica.apply(.add(e.box)) }
        replica.apply(.setTarget(1, a))
        #expect(replica.inboundCount == entries.count)
        #expect(targets() == [b.outbound, a.outbound, nil, nil])

        replica.apply(.clear)
        #expect(replica.inboundCount == 0)
        #expect(targets() == [nil, nil, nil, nil])
        #expect(Self.headers(spi: 0x3001).allSatisfy { replica.inbound($0) == nil })
        #expect((0...replica.slotMask).allSatisfy { replica.slots[$0].record == nil })

        // Usable again after a clear.
        replica.apply(.add(entries[0].box))
        replica.apply(.setTarget(2, a))
        #expect(replica.inboundCount == 1)
        #expect(replica.inbound(Self.header(spi: 0x3001, source: Self.headerSources[4],
                                            destination: Self.headerDestinations[4])) == entries[0].pointer)
        #expect(targets() == [nil, nil, a.outbound, nil])

        // No targets at all: every setTarget is ignored.
        let none = SADReplica(inboundCapacity: 1, targetCapacity: 0)
        none.apply(.setTarget(0, a))
        #expect(none.targets[0] == nil)
    }

    // MARK: - Burst lookup

    @Test func burstLookupEqualsPerHeaderLookup() throws {
        let f = try Fixture()
        let replica = SADReplica(inboundCapacity: 64, targetCapacity: 1)
        let spis = Self.clusteredSPIs(replica, count: 6)
        var pool: [Entry] = []
        for spi in spis { pool += try Self.entries(spi: spi, f) }
        var rng = SplitMix64(seed: 0xB0B5)
        for e in pool where rng.next() % 2 == 0 { replica.apply(.add(e.box)) }
        var headers = (spis + [0xFFFF_FFFF]).flatMap { Self.headers(spi: $0) }
        headers.shuffle(using: &rng)
        #expect(headers.contains { replica.inbound($0) != nil } && headers.contains { replica.inbound($0) == nil })

        let sentinel = pool[0].pointer
        let count = headers.count
        var out = [UnsafeMutablePointer<InboundRecord>?](repeating: sentinel, count: count + 1)
        headers.withUnsafeBufferPointer { h in
            out.withUnsafeMutableBufferPointer { o in
                replica.lookup(h.baseAddress!, count: count, into: o.baseAddress!)
            }
        }
        for (i, h) in headers.enumerated() {
            #expect(out[i] == replica.inbound(h), "header \(i): spi \(h.spi.rawValue) \(h.source) → \(h.destination)")
        }
        #expect(out[count] == sentinel, "wrote past count")

        // count 0 writes nothing.
        var untouched = [UnsafeMutablePointer<InboundRecord>?](repeating: sentinel, count: 1)
        headers.withUnsafeBufferPointer { h in
            untouched.withUnsafeMutableBufferPointer { o in replica.lookup(h.baseAddress!, count: 0, into: o.baseAddress!) }
        }
        #expect(untouched[0] == sentinel)
    }
}
