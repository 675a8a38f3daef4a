// ForwardingTable.build against a naive longest-prefix-match oracle: random
// IPv4 and IPv6 prefix sets (nested prefixes, /0, host routes, lengths around
// 24 and 64), looked up with the same bulk calls the worker uses
// (sl_fib4_next_hop / sl_fib6_lookup_bulk), the returned index mapped
// through the snapshot's next-hop array.

import CShims
import Dataplane
import Packet
import Testing

// MARK: - The oracle

/// Longest-prefix match the obvious way: one exact-match table per prefix
/// length, tried from the longest length down.
struct LPMOracle {
    var v4: [Int: [UInt32: NextHop]] = [:]
    var v6: [Int: [IPv6Address: NextHop]] = [:]
    var v4Lengths: [Int] = []
    var v6Lengths: [Int] = []

    init(_ routes: [RouteEntry]) {
        for r in routes {
            switch r.prefix.address {
            case .v4(let a): v4[r.prefix.length, default: [:]][a.value] = r.nextHop
            case .v6(let a): v6[r.prefix.length, default: [:]][a] = r.nextHop
            }
        }
        v4Lengths = v4.keys.sorted(by: >)
        v6Lengths = v6.keys.sorted(by: >)
    }

    static func mask4(_ length: Int) -> UInt32 { length == 0 ? 0 : ~UInt32(0) << UInt32(32 - length) }
    static func mask6(_ length: Int) -> (UInt64, UInt64) {
        let h: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << UInt64(64 - length))
        let l: UInt64 = length <= 64 ? 0 : (length == 128 ? ~0 : ~UInt64(0) << UInt64(128 - length))
        return (h, l)
    }

    func lookup(_ a: UInt32) -> NextHop? {
        for len in v4Lengths { if let h = v4[len]![a & Self.mask4(len)] { return h } }
        return nil
    }

    func lookup(_ a: IPv6Address) -> NextHop? {
        for len in v6Lengths {
            let (mh, ml) = Self.mask6(len)
            if let h = v6[len]![IPv6Address(high: a.high & mh, low: a.low & ml)] { return h }
        }
        return nil
    }
}

// MARK: - Random route sets

enum RouteSets {
    /// `count` distinct next hops: "no neighbour", "local", then forwards
    /// that differ in destination MAC (and port and source MAC).
    static func distinctHops(_ count: Int) -> [NextHop] {
        var out: [NextHop] = [.noNeighbor, .local]
        var i = 0
        while out.count < count {
            out.append(.forward(port: UInt16(i % 32), destination: .numbered(i), source: .numbered(i &* 7919, tag: 0x06)))
            i += 1
        }
        return Array(out.prefix(count))
    }

    /// `longLimit` caps the prefixes longer than /24 (each may need a tbl8 group).
    static func ipv4Prefixes(count: Int, longLimit: Int = .max, _ rng: inout SplitMix64) -> [IPPrefix] {
        var set = Set<IPPrefix>()
        var list: [IPPrefix] = []
        var long = 0
        func add(_ value: UInt32, _ len: Int) {
            if len > 24 && long >= longLimit { return }
            let p = IPPrefix(address: .v4(IPv4Address(value)), length: len)!.network
            if set.insert(p).inserted {
                list.append(p)
                if len > 24 { long += 1 }
            }
        }
        add(0, 0)
        while list.count < count {
            let roll = Int.random(in: 0..<100, using: &rng)
            let r = UInt32.random(in: 0...UInt32.max, using: &rng)
            if roll < 30 {
                add(r, Int.random(in: 20...28, using: &rng))
            } else if roll < 45 {
                add(r, 32)
            } else if roll < 75, let parent = list.randomElement(using: &rng) {
                // Nested: a longer prefix inside an existing one (or the same one).
                guard case .v4(let a) = parent.address else { continue }
                let len = min(32, parent.length + Int.random(in: 1...9, using: &rng))
                add(a.value | (r & ~LPMOracle.mask4(parent.length)), len)
            } else {
                add(r, Int.random(in: 1...(longLimit == .max ? 32 : 24), using: &rng))
            }
        }
        return list
    }

    static func ipv6Prefixes(count: Int, _ rng: inout SplitMix64) -> [IPPrefix] {
        var set = Set<IPPrefix>()
        var list: [IPPrefix] = []
        func add(_ a: IPv6Address, _ len: Int) {
            let p = IPPrefix(address: .v6(a), length: len)!.network
            if set.insert(p).inserted { list.append(p) }
        }
        add(IPv6Address(high: 0, low: 0), 0)
        // A common /32 so that many prefixes share upper trie levels.
        let site = UInt64(0x2001_0db8) << 32
        while list.count < count {
            let roll = Int.random(in: 0..<100, using: &rng)
            let r = IPv6Address(high: rng.next(), low: rng.next())
            let inSite = IPv6Address(high: site | (r.high & 0xFFFF_FFFF), low: r.low)
            if roll < 30 {
                add(Bool.random(using: &rng) ? inSite : r, Int.random(in: 56...72, using: &rng))
            } else if roll < 42 {
                add(inSite, 128)
            } else if roll < 50 {
                add(r, Int.random(in: 16...48, using: &rng))
            } else if roll < 80, let parent = list.randomElement(using: &rng) {
                guard case .v6(let a) = parent.address else { continue }
                let len = min(128, parent.length + Int.random(in: 1...20, using: &rng))
                let (mh, ml) = LPMOracle.mask6(parent.length)
                add(IPv6Address(high: a.high | (r.high & ~mh), low: a.low | (r.low & ~ml)), len)
            } else {
                add(inSite, Int.random(in: 33...128, using: &rng))
            }
        }
        return list
    }

    /// The first and last address of each prefix, their outside neighbours,
    /// an address inside each, and random addresses.
    static func ipv4Probes(_ prefixes: [IPPrefix], random: Int, _ rng: inout SplitMix64) -> [UInt32] {
        var out: [UInt32] = [0, .max, 1, .max - 1]
        for p in prefixes {
            guard case .v4(let a) = p.address else { continue }
            let first = a.value, last = a.value | ~LPMOracle.mask4(p.length)
            out += [first, last, first &- 1, last &+ 1,
                    first | (UInt32.random(in: 0...UInt32.max, using: &rng) & ~LPMOracle.mask4(p.length))]
        }
        for _ in 0..<random { out.append(UInt32.random(in: 0...UInt32.max, using: &rng)) }
        return out
    }

    static func ipv6Probes(_ prefixes: [IPPrefix], random: Int, _ rng: inout SplitMix64) -> [IPv6Address] {
        func plusOne(_ a: IPv6Address) -> IPv6Address { IPv6Address(high: a.low == .max ? a.high &+ 1 : a.high, low: a.low &+ 1) }
        func minusOne(_ a: IPv6Address) -> IPv6Address { IPv6Address(high: a.low == 0 ? a.high &- 1 : a.high, low: a.low &- 1) }
        var out: [IPv6Address] = [IPv6Address(high: 0, low: 0), IPv6Address(high: .max, low: .max)]
        for p in prefixes {
            guard case .v6(let a) = p.address else { continue }
            let (mh, ml) = LPMOracle.mask6(p.length)
            let last = IPv6Address(high: a.high | ~mh, low: a.low | ~ml)
            let inside = IPv6Address(high: a.high | (rng.next() & ~mh), low: a.low | (rng.next() & ~ml))
            out += [a, last, minusOne(a), plusOne(last), inside]
        }
        for _ in 0..<random { out.append(IPv6Address(high: rng.next(), low: rng.next())) }
        return out
    }
}

/// The next hop a snapshot entry stands for; nil for the "no route" entry.
func decode(_ h: sl_nexthop) -> NextHop? {
    switch Int(h.kind) {
    case Int(SL_NH_FORWARD): return .forward(port: h.port, destination: MACAddress(h.dst.addr_bytes), source: MACAddress(h.src.addr_bytes))
    case Int(SL_NH_NO_ROUTE): return nil
    case Int(SL_NH_NO_NEIGHBOR): return .noNeighbor
    case Int(SL_NH_LOCAL): return .local
    default: return .forward(port: 0xDEAD, destination: MACAddress((0, 0, 0, 0, 0, 0)), source: MACAddress((0, 0, 0, 0, 0, 0)))
    }
}

/// Looks every address up in bulk and compares with the oracle; records at
/// most a few issues, returns the number of mismatches.
func checkLookups(_ fib: UnsafeMutablePointer<sl_fib>, oracle: LPMOracle, v4: [UInt32], v6: [IPv6Address],
                  context: String) -> Int {
    var mismatches = 0
    let hops = fib.pointee.nexthops!
    let count = Int(fib.pointee.nb_nexthops)
    func check(_ idx: UInt64, expected: NextHop?, _ what: () -> String) {
        let got: NextHop?? = Int(idx) < count ? .some(decode(hops[Int(idx)])) : .none
        if got != .some(expected) {
            mismatches += 1
            if mismatches <= 3 {
                Issue.record("\(context): \(what()): FIB index \(idx) -> \(got.map { $0.map { "\($0)" } ?? "no route" } ?? "out of range (\(count) hops)"), oracle \(expected.map { "\($0)" } ?? "no route")")
            }
        }
    }
    if !v4.isEmpty {
        // The worker's own lookup: a missing table or a miss is next hop 0.
        let nh = v4.map { UInt64(sl_fib4_next_hop(fib, $0)) }
        for (i, a) in v4.enumerated() { check(nh[i], expected: oracle.lookup(a)) { "\(IPv4Address(a))" } }
    }
    if !v6.isEmpty {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(v6.count * 16)
        for a in v6 { a.append(to: &bytes) }
        var nh = [UInt64](repeating: .max, count: v6.count)
        if let f6 = fib.pointee.fib6 {
            sl_fib6_lookup_bulk(f6, &bytes, &nh, Int32(v6.count))
        } else {
            nh = [UInt64](repeating: 0, count: v6.count)
        }
        for (i, a) in v6.enumerated() { check(nh[i], expected: oracle.lookup(a)) { "\(a)" } }
    }
    return mismatches
}

/// The order `RouteCompiler.compile` hands routes to the data plane: IPv4
/// before IPv6, shorter prefixes first.
func compilerOrder(_ routes: [RouteEntry]) -> [RouteEntry] {
    routes.enumerated().sorted { a, b in
        (a.element.prefix.address.bitWidth, a.element.prefix.length, a.offset)
            < (b.element.prefix.address.bitWidth, b.element.prefix.length, b.offset)
    }.map(\.element)
}

extension EALSuites {
    @Suite struct ForwardingTableTests {
        init() throws { try TestEAL.ensure() }

        /// Builds, checks the snapshot header, runs the lookups, frees.
        func differential(routes: [RouteEntry], v4: [UInt32], v6: [IPv6Address], context: String) throws {
            let generation = UInt64.random(in: 1...1_000_000)
            let fib = try ForwardingTable.build(routes: routes, socket: 0, generation: generation)
            defer { ForwardingTable.free(fib) }
            let distinct = Set(routes.map(\.nextHop)).count
            #expect(fib.pointee.generation == generation, "\(context)")
            #expect(Int(fib.pointee.nb_nexthops) == distinct + 1, "\(context)")
            #expect(fib.pointee.nexthops![0].kind == UInt8(SL_NH_NO_ROUTE), "\(context): entry 0 is the no-route entry")
            #expect((fib.pointee.lpm4 != nil) == routes.contains { $0.prefix.address.isIPv4 && $0.prefix.length > 0 }, "\(context)")
            #expect((fib.pointee.fib6 != nil) == routes.contains { !$0.prefix.address.isIPv4 }, "\(context)")
            let mismatches = checkLookups(fib, oracle: LPMOracle(routes), v4: v4, v6: v6, context: context)
            #expect(mismatches == 0, "\(context): \(mismatches) of \(v4.count + v6.count) lookups differ from the oracle")
        }

        /// Hundreds of IPv4 and IPv6 routes, every one with its own next hop
        /// (2-byte entries), nested, with /0 and host routes, in the order the
        /// route compiler produces.
        @Test(arguments: TestSeeds.list(fixed: [1, 0x5107_CE11]))
        func distinctNextHops(seed: UInt64) throws {
            var rng = SplitMix64(seed: seed)
            let p4 = RouteSets.ipv4Prefixes(count: 400, &rng)
            let p6 = RouteSets.ipv6Prefixes(count: 400, &rng)
            let hops = RouteSets.distinctHops(p4.count + p6.count).shuffled(using: &rng)
            let routes = compilerOrder(zip(p4 + p6, hops).map { RouteEntry(prefix: $0, nextHop: $1) }.shuffled(using: &rng))
            try differential(routes: routes, v4: RouteSets.ipv4Probes(p4, random: 4000, &rng),
                             v6: RouteSets.ipv6Probes(p6, random: 4000, &rng), context: "seed \(TestSeeds.hex(seed))")
        }

        /// Few next hops shared by many routes: 1-byte IPv4 entries up to 126
        /// table entries (125 next hops plus "no route"), 2-byte from 127 on.
        /// At most 100 IPv4 prefixes longer than /24, which 1-byte entries can
        /// hold (see `longPrefixesWithFewNextHops`).
        @Test(arguments: [(UInt64(7), 5), (8, 125), (9, 126), (10, 127)])
        func sharedNextHops(seed: UInt64, hopCount: Int) throws {
            var rng = SplitMix64(seed: seed)
            let p4 = RouteSets.ipv4Prefixes(count: 600, longLimit: 100, &rng)
            let p6 = RouteSets.ipv6Prefixes(count: 300, &rng)
            let pool = RouteSets.distinctHops(hopCount)
            // Every hop of the pool appears at least once.
            let routes = (p4 + p6).enumerated().map { i, p in
                RouteEntry(prefix: p, nextHop: i < pool.count ? pool[i] : pool.randomElement(using: &rng)!)
            }
            try differential(routes: compilerOrder(routes), v4: RouteSets.ipv4Probes(p4, random: 3000, &rng),
                             v6: RouteSets.ipv6Probes(p6, random: 3000, &rng), context: "seed \(seed), \(hopCount) next hops")
        }

        /// More than 32767 next hops: 4-byte entries in both tables; the IPv6
        /// routes come last, so their indices are above 32767.
        @Test func fourByteNextHops() throws {
            var rng = SplitMix64(seed: 0x4B17E)
            var set = Set<IPPrefix>()
            var p4: [IPPrefix] = []
            while p4.count < 32_800 {
                let len = Int.random(in: 0..<10, using: &rng) == 0 ? Int.random(in: 25...32, using: &rng) : Int.random(in: 18...24, using: &rng)
                let p = IPPrefix(address: .v4(IPv4Address(UInt32.random(in: 0...UInt32.max, using: &rng))), length: len)!.network
                if set.insert(p).inserted { p4.append(p) }
            }
            let p6 = RouteSets.ipv6Prefixes(count: 100, &rng)
            let hops = RouteSets.distinctHops(p4.count + p6.count)
            let routes = compilerOrder(zip(p4 + p6, hops).map { RouteEntry(prefix: $0, nextHop: $1) })
            try differential(routes: routes, v4: RouteSets.ipv4Probes(Array(p4.prefix(3000)), random: 5000, &rng),
                             v6: RouteSets.ipv6Probes(p6, random: 1000, &rng), context: "32900 next hops")
        }

        /// One family only, and no routes at all: the missing table means
        /// "no route" for every address of that family.
        @Test func singleFamilyAndEmpty() throws {
            var rng = SplitMix64(seed: 0xE3)
            let p4 = RouteSets.ipv4Prefixes(count: 50, &rng)
            let p6 = RouteSets.ipv6Prefixes(count: 50, &rng)
            let hops = RouteSets.distinctHops(100)
            let only4 = compilerOrder(zip(p4, hops).map { RouteEntry(prefix: $0, nextHop: $1) })
            let only6 = compilerOrder(zip(p6, hops).map { RouteEntry(prefix: $0, nextHop: $1) })
            let v4 = RouteSets.ipv4Probes(p4, random: 500, &rng), v6 = RouteSets.ipv6Probes(p6, random: 500, &rng)
            try differential(routes: only4, v4: v4, v6: v6, context: "IPv4 only")
            try differential(routes: only6, v4: v4, v6: v6, context: "IPv6 only")
            try differential(routes: [], v4: v4, v6: v6, context: "no routes")
        }

        /// Deep nesting: a chain of prefixes of every length along one
        /// address and its complement, each with its own next hop.
        @Test func everyLengthNested() throws {
            var rng = SplitMix64(seed: 0x0128)
            let a6 = IPv6Address(high: rng.next(), low: rng.next())
            let b6 = IPv6Address(high: ~a6.high, low: ~a6.low)
            let a4 = UInt32.random(in: 0...UInt32.max, using: &rng)
            var list: [IPPrefix] = []
            for len in 0...128 { list.append(IPPrefix(address: .v6(len % 2 == 0 ? a6 : b6), length: len)!.network) }
            for len in 0...32 { list.append(IPPrefix(address: .v4(IPv4Address(len % 3 == 0 ? a4 : ~a4)), length: len)!.network) }
            let routes = compilerOrder(zip(list, RouteSets.distinctHops(list.count).shuffled(using: &rng)).map { RouteEntry(prefix: $0, nextHop: $1) })
            try differential(routes: routes, v4: RouteSets.ipv4Probes(list, random: 500, &rng),
                             v6: RouteSets.ipv6Probes(list, random: 500, &rng), context: "every length")
        }

        /// `build` takes routes in any order (`publish(routes:)` is public), so
        /// the order must not change what a lookup returns. DPDK 22.11's
        /// rte_fib (DIR-24-8) and rte_fib6 (trie) get a covering prefix wrong
        /// when it is added after more specific routes that reach the end of
        /// the address space: the whole table then returns the covering
        /// prefix's next hop. Adding shorter prefixes first avoids it.
        @Test(arguments: [
            ["0.0.0.0/1", "128.0.0.0/1", "0.0.0.0/0"],
            ["10.0.0.0/8", "0.0.0.0/2", "64.0.0.0/2", "128.0.0.0/1", "0.0.0.0/0"],
            ["8000::/1", "4000::/2", "::/0"],
            // Covering prefixes other than /0 after routes reaching the end of the space.
            ["128.0.0.0/2", "192.0.0.0/2", "128.0.0.0/1"],
            ["255.255.255.0/24", "255.0.0.0/8"],
            ["c000::/2", "8000::/1"],
            ["ffff:ffff::/32", "ff00::/8"],
        ])
        func insertionOrderDoesNotMatter(prefixes: [String]) throws {
            let hops = RouteSets.distinctHops(prefixes.count + 2).suffix(prefixes.count)
            let routes = zip(prefixes, hops).map { RouteEntry(prefix: IPPrefix($0)!, nextHop: $1) }
            var rng = SplitMix64(seed: 0x0D0E)
            let p = routes.map(\.prefix)
            try differential(routes: routes, v4: RouteSets.ipv4Probes(p, random: 200, &rng),
                             v6: RouteSets.ipv6Probes(p, random: 200, &rng), context: "routes added in the order \(prefixes)")
        }

        /// A random route set in random order: the same as in compiler order.
        @Test func randomInsertionOrder() throws {
            let seed: UInt64 = 1
            var rng = SplitMix64(seed: seed)
            let p4 = RouteSets.ipv4Prefixes(count: 400, &rng)
            let p6 = RouteSets.ipv6Prefixes(count: 400, &rng)
            let hops = RouteSets.distinctHops(p4.count + p6.count)
            let routes = zip(p4 + p6, hops).map { RouteEntry(prefix: $0, nextHop: $1) }.shuffled(using: &rng)
            try differential(routes: routes, v4: RouteSets.ipv4Probes(p4, random: 2000, &rng),
                             v6: RouteSets.ipv6Probes(p6, random: 2000, &rng), context: "seed \(seed), shuffled")
        }

        /// DPDK stores a tbl8 group index in a next-hop entry, so an entry
        /// width must hold the number of tbl8 groups too (rte_fib_create and
        /// rte_fib6_create refuse `num_tbl8` above the largest next hop:
        /// 127 for 1-byte, 32767 for 2-byte entries). Many long prefixes
        /// sharing few next hops are an ordinary configuration (host routes
        /// via one router) and must build.
        @Test(arguments: [
            ("IPv4: 150 /28 routes, 5 next hops (1-byte entries)", 4, 150, 28, 5),
            ("IPv4: 32760 /32 routes, 200 next hops (2-byte entries)", 4, 32_760, 32, 200),
            ("IPv6: 2600 /128 routes, 200 next hops (2-byte entries)", 6, 2_600, 128, 200),
        ])
        func longPrefixesWithFewNextHops(_ name: String, family: Int, count: Int, length: Int, hopCount: Int) throws {
            var rng = SplitMix64(seed: UInt64(count))
            var seen = Set<IPPrefix>()
            var prefixes: [IPPrefix] = []
            while prefixes.count < count {
                let address: IPAddress = family == 4
                    ? .v4(IPv4Address(UInt32(prefixes.count) << 8 | UInt32.random(in: 0...255, using: &rng)))  // one per /24
                    : .v6(IPv6Address(high: rng.next(), low: rng.next()))
                let p = IPPrefix(address: address, length: length)!.network
                if seen.insert(p).inserted { prefixes.append(p) }
            }
            let pool = RouteSets.distinctHops(hopCount)
            let routes = prefixes.enumerated().map { RouteEntry(prefix: $1, nextHop: pool[$0 % pool.count]) }
            let v4 = family == 4 ? RouteSets.ipv4Probes(Array(prefixes.prefix(500)), random: 500, &rng) : []
            let v6 = family == 6 ? RouteSets.ipv6Probes(Array(prefixes.prefix(500)), random: 500, &rng) : []
            try differential(routes: routes, v4: v4, v6: v6, context: name)
        }
    }
}
