// Every SPD driver against the linear oracle: seeded random rule sets from 1
// to 10,000 rules (IPv4, IPv6, mixed) and packets aimed at them (random
// points inside rules plus boundary cases); single and burst lookups;
// incremental insert and remove against a rebuild. On a mismatch the seed
// and a greedily shrunk rule set are printed. Plus small targeted cases per
// driver for the tricky semantics.

@testable import IPsec
import Packet
import Testing

private let compiledDrivers: [SPDDriver] = [.hashList, .cutTree]

/// Re-ranks `rules` by position, keeping each rule's priority (rank >> 32).
private func reranked(_ rules: [SPDRule]) -> [SPDRule] {
    rules.enumerated().map { i, r in
        var r = r
        r.rank = r.rank & ~0xFFFF_FFFF | UInt64(i)
        r.value = UInt32(i)
        return r
    }
}

/// The smallest subset of `rules` (greedy) on which `driver` still disagrees with linear for `packet`.
private func shrink(_ rules: [SPDRule], _ packet: SelectorFields, _ driver: SPDDriver) -> [SPDRule] {
    var current = rules
    var i = 0
    while i < current.count {
        var candidate = current
        candidate.remove(at: i)
        if SPDDriver.build(driver, rules: candidate).lookup(packet) != LinearClassifier(rules: candidate).lookup(packet) {
            current = candidate
        } else {
            i += 1
        }
    }
    return current
}

private func report(seed: UInt64, driver: SPDDriver, what: String, rules: [SPDRule], packet: SelectorFields,
                    expected: UInt32, got: UInt32) -> String {
    let minimal = shrink(rules, packet, driver)
    var text = "seed \(seed) driver \(driver) \(what): expected \(expected) got \(got)\n"
    text += "packet src \(packet.source) dst \(packet.destination) proto \(packet.proto) "
        + "sport \(packet.sourcePort) dport \(packet.destinationPort) hasPorts \(packet.hasPorts) if \(packet.ifID)\n"
    text += "minimal rule set (\(minimal.count) rules):\n"
    for r in minimal {
        text += "  \(r.selector) if \(r.ifID) priority \(r.rank >> 32) seq \(r.rank & 0xFFFF_FFFF) value \(r.value)\n"
    }
    print(text)
    return text
}

/// Compares every compiled driver (single and burst) with linear on `packets`;
/// returns the number of driver lookups compared.
@discardableResult
private func compare(seed: UInt64, rules: [SPDRule], packets: [SelectorFields]) -> Int {
    let oracle = LinearClassifier(rules: rules)
    let expected = packets.map { oracle.lookup($0) }
    var compared = 0
    for driver in compiledDrivers {
        let c = SPDDriver.build(driver, rules: rules)
        var single = [UInt32](repeating: 0, count: packets.count)
        for (i, p) in packets.enumerated() { single[i] = c.lookup(p) }
        var burst = [UInt32](repeating: 0, count: packets.count)
        packets.withUnsafeBufferPointer { pb in
            burst.withUnsafeMutableBufferPointer { ob in
                // Bursts of varying size, as a worker would pass them.
                var start = 0, size = 1
                while start < packets.count {
                    let n = min(size, packets.count - start)
                    c.lookup(burst: pb.baseAddress! + start, count: n, into: ob.baseAddress! + start)
                    start += n
                    size = size % 37 + 3
                }
            }
        }
        compared += 2 * packets.count
        if let i = single.indices.first(where: { single[$0] != expected[$0] }) {
            Issue.record(Comment(rawValue: report(seed: seed, driver: driver, what: "lookup", rules: rules,
                                                  packet: packets[i], expected: expected[i], got: single[i])))
            return compared
        }
        if let i = burst.indices.first(where: { burst[$0] != expected[$0] }) {
            Issue.record(Comment(rawValue: "seed \(seed) driver \(driver): burst lookup \(burst[i]) != single \(single[i]) at packet \(i)"))
            return compared
        }
        #expect(c.rules.map(\.rank) == rules.map(\.rank).sorted(), "rules come back in rank order")
    }
    return compared
}

@Suite struct SPDDifferentialTests {
    /// Many small and medium sets: most of the lookups.
    @Test(arguments: [UInt64(1), 2, 3, 4])
    func smallAndMediumSets(base: UInt64) {
        var total = 0
        for round in 0..<60 {
            let seed = base << 32 | UInt64(round)
            var gen = SPDRuleSetGenerator(seed: seed, ipv6: round % 3 == 1)
            let size = [1, 2, 3, 5, 8, 13, 40, 100, 300][round % 9] + Int(seed % 7)
            var rules = gen.rules(count: size)
            if round % 3 == 2 {
                // Mixed families.
                var other = SPDRuleSetGenerator(seed: seed ^ 0xABCD, ipv6: true)
                rules = reranked(rules + other.rules(count: size / 2 + 1))
            }
            let packets = gen.packets(count: 2200, for: rules, adversarial: 0.3)
            total += compare(seed: seed, rules: rules, packets: packets)
        }
        #expect(total >= 250_000)
    }

    /// 1,000 and 10,000 rules, both families: fewer packets (the oracle is slow in debug builds).
    @Test(arguments: [(1_000, false), (1_000, true), (10_000, false), (10_000, true)])
    func largeSets(count: Int, ipv6: Bool) {
        let seed = UInt64(count) << 8 | (ipv6 ? 6 : 4)
        var gen = SPDRuleSetGenerator(seed: seed, ipv6: ipv6)
        let rules = gen.rules(count: count)
        let packets = gen.packets(count: count >= 10_000 ? 1_500 : 8_000, for: rules, adversarial: 0.2)
        compare(seed: seed, rules: rules, packets: packets)
    }

    /// `inserting` and `removing` equal a rebuild (or decline with nil).
    @Test func incrementalEqualsRebuild() {
        for round in 0..<12 {
            let seed = 0x1C0 ^ UInt64(round)
            var gen = SPDRuleSetGenerator(seed: seed, ipv6: round % 2 == 1)
            let all = gen.rules(count: [20, 200, 1_000][round % 3])
            let packets = gen.packets(count: 1_500, for: all, adversarial: 0.3)
            let rules = Array(all.dropLast(5))
            for driver in SPDDriver.allCases {
                var c = SPDDriver.build(driver, rules: rules)
                var current = rules
                // Insert the held-back rules, then remove some, checking after each step.
                var steps: [(insert: SPDRule?, remove: UInt64?)] = all.suffix(5).map { ($0, nil) }
                steps += [current[0].rank, current[current.count / 2].rank, all.last!.rank].map { (nil, $0) }
                for step in steps {
                    let next: (any SPDClassifier)?
                    if let r = step.insert {
                        next = c.inserting(r)
                        current.append(r)
                    } else {
                        next = c.removing(rank: step.remove!)
                        current.removeAll { $0.rank == step.remove! }
                    }
                    let rebuilt = LinearClassifier(rules: current)
                    c = next ?? SPDDriver.build(driver, rules: current)
                    #expect(c.rules.map(\.rank) == current.map(\.rank).sorted())
                    if let i = packets.indices.first(where: { c.lookup(packets[$0]) != rebuilt.lookup(packets[$0]) }) {
                        Issue.record(Comment(rawValue: report(
                            seed: seed, driver: driver, what: "after incremental step", rules: current,
                            packet: packets[i], expected: rebuilt.lookup(packets[i]), got: c.lookup(packets[i]))))
                        break
                    }
                }
            }
        }
    }

    /// Long random runs of inserts and removes, each applied through
    /// `inserting`/`removing` to the previous step's classifier (rebuilding
    /// only when a driver declines), equal the oracle after every step, single
    /// and burst. The cut tree must patch most steps itself.
    @Test(arguments: [(UInt64(0x5EC0), 0), (0x5EC1, 1), (0x5EC2, 2)])
    func randomUpdateSequences(seed: UInt64, family: Int) {
        var gen = SPDRuleSetGenerator(seed: seed, ipv6: family == 1)
        var pool = gen.rules(count: 400)
        if family == 2 {
            var other = SPDRuleSetGenerator(seed: seed ^ 0x66, ipv6: true)
            pool = reranked(pool + other.rules(count: 150))
        }
        let packets = gen.packets(count: 300, for: pool, adversarial: 0.3)
        var state = seed
        func next(_ n: Int) -> Int {
            // SplitMix64.
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return Int((z ^ (z >> 31)) % UInt64(n))
        }
        var current = Array(pool.prefix(pool.count * 2 / 3))
        var waiting = Array(pool.dropFirst(current.count))
        var classifiers = compiledDrivers.map { SPDDriver.build($0, rules: current) }
        var patched = [Int](repeating: 0, count: compiledDrivers.count)
        let steps = 120
        for step in 0..<steps {
            let insert = !waiting.isEmpty && (current.isEmpty || next(2) == 0)
            let rule = insert ? waiting.remove(at: next(waiting.count)) : current.remove(at: next(current.count))
            if insert { current.append(rule) } else { waiting.append(rule) }
            let oracle = LinearClassifier(rules: current)
            let expected = packets.map { oracle.lookup($0) }
            for (k, driver) in compiledDrivers.enumerated() {
                let c = classifiers[k]
                let updated = insert ? c.inserting(rule) : c.removing(rank: rule.rank)
                if updated != nil { patched[k] += 1 }
                classifiers[k] = updated ?? SPDDriver.build(driver, rules: current)
                let u = classifiers[k]
                var burst = [UInt32](repeating: 0, count: packets.count)
                packets.withUnsafeBufferPointer { pb in
                    burst.withUnsafeMutableBufferPointer { ob in
                        u.lookup(burst: pb.baseAddress!, count: pb.count, into: ob.baseAddress!)
                    }
                }
                if let i = packets.indices.first(where: { u.lookup(packets[$0]) != expected[$0] || burst[$0] != expected[$0] }) {
                    Issue.record(Comment(rawValue: "step \(step) (\(insert ? "insert" : "remove") rank \(rule.rank), "
                        + "patched \(updated != nil)) " + report(
                        seed: seed, driver: driver, what: "random update sequence", rules: current,
                        packet: packets[i], expected: expected[i], got: u.lookup(packets[i]))))
                    return
                }
                #expect(u.rules.map(\.rank) == current.map(\.rank).sorted())
            }
        }
        let cutTree = compiledDrivers.firstIndex(of: .cutTree)!
        #expect(patched[cutTree] * 2 >= steps, "cut-tree patched \(patched[cutTree]) of \(steps) steps")
    }

    /// The cut tree split into two trees per interface id (which generated
    /// sets rarely need), walked at once: single, burst and updates.
    @Test func cutTreeSplitByDestination() {
        for round in 0..<6 {
            let seed = 0x5B17 ^ UInt64(round)
            var gen = SPDRuleSetGenerator(seed: seed, ipv6: round % 2 == 1)
            let all = gen.rules(count: [50, 400, 2_000][round % 3])
            let packets = gen.packets(count: 2_000, for: all, adversarial: 0.3)
            var current = Array(all.dropLast(3))
            let oracle = LinearClassifier(rules: all)
            var c = CutTreeClassifier(sorted: all.sorted { $0.rank < $1.rank }, firstSplit: round % 2 + 1)
            #expect(c.v4.treeCount + c.v6.treeCount > Set(all.map(\.ifID)).count, "some id has two trees")
            var burst = [UInt32](repeating: 0, count: packets.count)
            packets.withUnsafeBufferPointer { pb in
                burst.withUnsafeMutableBufferPointer { c.lookup(burst: pb.baseAddress!, count: pb.count, into: $0.baseAddress!) }
            }
            if let i = packets.indices.first(where: { c.lookup(packets[$0]) != oracle.lookup(packets[$0]) || burst[$0] != oracle.lookup(packets[$0]) }) {
                Issue.record(Comment(rawValue: "seed \(seed): split cut-tree \(c.lookup(packets[i])) burst \(burst[i]) != linear \(oracle.lookup(packets[i]))"))
                continue
            }
            // Updates on the split tables: remove three, then insert them back.
            c = CutTreeClassifier(sorted: current.sorted { $0.rank < $1.rank }, firstSplit: round % 2 + 1)
            let held = all.suffix(3)
            let removed = [current[0], current[current.count / 2], current[current.count - 1]]
            for r in removed {
                current.removeAll { $0.rank == r.rank }
                c = c.removing(rank: r.rank) ?? CutTreeClassifier(sorted: current.sorted { $0.rank < $1.rank }, firstSplit: round % 2 + 1)
            }
            for r in held + removed {
                current.append(r)
                c = c.inserting(r) ?? CutTreeClassifier(sorted: current.sorted { $0.rank < $1.rank }, firstSplit: round % 2 + 1)
            }
            let expected = LinearClassifier(rules: current)
            if let i = packets.indices.first(where: { c.lookup(packets[$0]) != expected.lookup(packets[$0]) }) {
                Issue.record(Comment(rawValue: "seed \(seed): split cut-tree after updates \(c.lookup(packets[i])) != linear \(expected.lookup(packets[i]))"))
            }
        }
    }

    @Test func generatorIsReproducible() {
        var a = SPDRuleSetGenerator(seed: 7, ipv6: false), b = SPDRuleSetGenerator(seed: 7, ipv6: false)
        let ra = a.rules(count: 500), rb = b.rules(count: 500)
        #expect(ra == rb)
        #expect(a.packets(count: 100, for: ra, adversarial: 0.5) == b.packets(count: 100, for: rb, adversarial: 0.5))
        #expect(Set(ra.map(\.rank)).count == 500, "ranks are unique")
        #expect(ra.contains { HashListKey.variant(of: $0) != nil }, "some exact rules")
        #expect(ra.contains { $0.ifID != 0 }, "some interface ids")
        #expect(Set(ra.map { $0.rank >> 32 }).count < 500, "priority ties")
        var c = SPDRuleSetGenerator(seed: 7, ipv6: true)
        #expect(c.rules(count: 50).allSatisfy { !$0.selector.isIPv4 })
    }
}

// MARK: Targeted semantics, every driver

private func rule(_ src: String, _ dst: String, proto: IPProtocol? = nil, sport: ClosedRange<UInt16>? = nil,
                  dport: ClosedRange<UInt16>? = nil, ifID: UInt32 = 0, priority: UInt64 = 0, seq: UInt64,
                  value: UInt32) -> SPDRule {
    SPDRule(selector: TrafficSelector(source: IPPrefix(src)!, destination: IPPrefix(dst)!, proto: proto,
                                      sourcePorts: sport, destinationPorts: dport)!,
            ifID: ifID, rank: priority << 32 | seq, value: value)
}

private func packet(_ src: String, _ dst: String, proto: UInt8, sport: UInt16 = 0, dport: UInt16 = 0,
                    hasPorts: Bool = true, ifID: UInt32 = 0) -> SelectorFields {
    SelectorFields(source: RawIPAddress(IPAddress(src)!), destination: RawIPAddress(IPAddress(dst)!), proto: proto,
                   sourcePort: sport, destinationPort: dport, hasPorts: hasPorts, ifID: ifID)
}

@Suite struct SPDDriverSemanticsTests {
    /// Each case: rules, packet, expected value; checked on every driver, burst too.
    private func check(_ rules: [SPDRule], _ cases: [(SelectorFields, UInt32)], sourceLocation: SourceLocation = #_sourceLocation) {
        for driver in SPDDriver.allCases {
            let c = SPDDriver.build(driver, rules: rules)
            for (p, want) in cases {
                #expect(c.lookup(p) == want, "\(driver)", sourceLocation: sourceLocation)
                var out: UInt32 = 0
                withUnsafePointer(to: p) { c.lookup(burst: $0, count: 1, into: &out) }
                #expect(out == want, "\(driver) burst", sourceLocation: sourceLocation)
            }
        }
    }

    @Test func tiesKeepInsertionOrder() {
        let rules = [
            rule("10.0.0.0/8", "0.0.0.0/0", priority: 5, seq: 2, value: 3),
            rule("10.0.0.0/8", "0.0.0.0/0", priority: 5, seq: 1, value: 2),
            rule("10.1.0.0/16", "0.0.0.0/0", priority: 6, seq: 0, value: 1),
        ]
        check(rules, [(packet("10.1.2.3", "1.2.3.4", proto: 6, sport: 1, dport: 2), 2),
                      (packet("11.1.2.3", "1.2.3.4", proto: 6), SPDNoMatch)])
    }

    @Test func betterInexactBeatsExact() {
        let rules = [
            rule("10.0.0.1/32", "10.0.0.2/32", proto: .udp, sport: 500...500, dport: 500...500, priority: 9, seq: 0, value: 1),
            rule("10.0.0.0/24", "10.0.0.0/24", proto: .udp, priority: 3, seq: 1, value: 2),
            rule("10.0.0.1/32", "10.0.0.3/32", proto: .udp, sport: 500...500, dport: 500...500, priority: 1, seq: 2, value: 3),
            rule("10.0.0.1/32", "10.0.0.3/32", priority: 0, seq: 3, value: 4),
        ]
        check(rules, [
            (packet("10.0.0.1", "10.0.0.2", proto: 17, sport: 500, dport: 500), 2),
            (packet("10.0.0.1", "10.0.0.3", proto: 17, sport: 500, dport: 500), 4),
            (packet("10.0.0.1", "10.0.0.3", proto: 6, sport: 500, dport: 500), 4),
            (packet("10.0.0.1", "10.0.0.4", proto: 17, sport: 500, dport: 500), 2),
        ])
        let exactFirst = [
            rule("10.0.0.1/32", "10.0.0.2/32", proto: .udp, sport: 500...500, dport: 500...500, priority: 1, seq: 0, value: 1),
            rule("10.0.0.0/24", "10.0.0.0/24", proto: .udp, priority: 3, seq: 1, value: 2),
        ]
        check(exactFirst, [(packet("10.0.0.1", "10.0.0.2", proto: 17, sport: 500, dport: 500), 1),
                           (packet("10.0.0.1", "10.0.0.2", proto: 17, sport: 500, dport: 501), 2)])
    }

    @Test func portsNeedHasPorts() {
        let rules = [
            rule("0.0.0.0/0", "0.0.0.0/0", proto: .udp, dport: 53...53, seq: 0, value: 1),
            rule("0.0.0.0/0", "0.0.0.0/0", sport: 0...65535, seq: 1, value: 2),
            rule("10.0.0.1/32", "10.0.0.2/32", proto: .udp, sport: 7...7, dport: 9...9, seq: 2, value: 3),
            rule("0.0.0.0/0", "0.0.0.0/0", proto: .udp, seq: 3, value: 4),
        ]
        check(rules, [
            (packet("1.1.1.1", "2.2.2.2", proto: 17, sport: 9, dport: 53), 1),
            (packet("1.1.1.1", "2.2.2.2", proto: 17, sport: 9, dport: 53, hasPorts: false), 4),
            (packet("1.1.1.1", "2.2.2.2", proto: 47, hasPorts: false), SPDNoMatch),
            (packet("1.1.1.1", "2.2.2.2", proto: 47, sport: 1, dport: 1, hasPorts: true), 2),
            (packet("10.0.0.1", "10.0.0.2", proto: 17, sport: 7, dport: 9, hasPorts: false), 4),
            (packet("10.0.0.1", "10.0.0.2", proto: 17, sport: 7, dport: 9), 2),
        ])
    }

    @Test func icmpTypeAndCode() {
        let rules = [
            rule("0.0.0.0/0", "0.0.0.0/0", proto: .icmp, sport: 8...8, dport: 0...0, seq: 0, value: 1),
            rule("0.0.0.0/0", "0.0.0.0/0", proto: .icmp, sport: 3...3, seq: 1, value: 2),
            rule("::/0", "::/0", proto: .icmpv6, sport: 135...136, seq: 2, value: 3),
            rule("10.0.0.1/32", "10.0.0.2/32", proto: .icmp, sport: 0...0, dport: 0...0, seq: 3, value: 4),
        ]
        check(rules, [
            (packet("1.1.1.1", "2.2.2.2", proto: 1, sport: 8, dport: 0), 1),
            (packet("1.1.1.1", "2.2.2.2", proto: 1, sport: 8, dport: 1), SPDNoMatch),
            (packet("1.1.1.1", "2.2.2.2", proto: 1, sport: 3, dport: 13), 2),
            (packet("2001:db8::1", "2001:db8::2", proto: 58, sport: 136, dport: 0), 3),
            (packet("2001:db8::1", "2001:db8::2", proto: 58, sport: 137, dport: 0), SPDNoMatch),
            (packet("10.0.0.1", "10.0.0.2", proto: 1, sport: 0, dport: 0), 4),
            (packet("10.0.0.1", "10.0.0.2", proto: 1, sport: 0, dport: 0, hasPorts: false), SPDNoMatch),
        ])
    }

    @Test func interfaceIDs() {
        let rules = [
            rule("10.0.0.0/8", "0.0.0.0/0", ifID: 7, seq: 0, value: 1),
            rule("10.0.0.1/32", "10.0.0.2/32", ifID: 3, seq: 1, value: 2),
            rule("0.0.0.0/0", "0.0.0.0/0", seq: 2, value: 3),
        ]
        check(rules, [
            (packet("10.0.0.1", "10.0.0.2", proto: 6, ifID: 7), 1),
            (packet("10.0.0.1", "10.0.0.2", proto: 6, ifID: 3), 2),
            (packet("10.0.0.1", "10.0.0.2", proto: 6, ifID: 0), 3),
            (packet("10.0.0.1", "10.0.0.2", proto: 6, ifID: 9), SPDNoMatch),
        ])
    }

    @Test func familiesNeverMix() {
        let rules = [
            rule("0.0.0.0/0", "0.0.0.0/0", seq: 0, value: 1),
            rule("::/0", "::/0", proto: .tcp, seq: 1, value: 2),
            rule("2001:db8::/32", "2001:db8:1::/48", priority: 0, seq: 2, value: 3),
            rule("::1/128", "::2/128", seq: 3, value: 4),
        ]
        check(rules, [
            (packet("10.0.0.1", "10.0.0.2", proto: 6), 1),
            (packet("2001:db8::1", "2001:db8:1::5", proto: 6), 2),
            (packet("2001:db8::1", "2001:db8:1::5", proto: 17), 3),
            (packet("::1", "::2", proto: 17), 4),
            (packet("2001:db9::1", "::2", proto: 17), SPDNoMatch),
        ])
        #expect(LinearClassifier(rules: [rule("0.0.0.1/32", "0.0.0.2/32", seq: 0, value: 1)])
            .lookup(packet("::1", "::2", proto: 6)) == SPDNoMatch)
        check([rule("0.0.0.1/32", "0.0.0.2/32", seq: 0, value: 1)], [(packet("::1", "::2", proto: 6), SPDNoMatch)])
    }

    @Test func emptyAndChoice() {
        check([], [(packet("10.0.0.1", "10.0.0.2", proto: 6), SPDNoMatch), (packet("::1", "::2", proto: 6), SPDNoMatch)])
        var gen = SPDRuleSetGenerator(seed: 1, ipv6: false)
        #expect(SPDDriver.choose(for: gen.rules(count: 10)).driver == .linear)
        #expect(SPDDriver.choose(for: gen.rules(count: 2_000)).driver == .cutTree)
        let exact = (0..<500).map { i in
            rule("10.0.\(i / 256).\(i % 256)/32", "10.1.0.1/32", proto: .udp, sport: 500...500, dport: 500...500,
                 seq: UInt64(i), value: UInt32(i))
        }
        #expect(SPDDriver.choose(for: exact).driver == .hashList)
    }
}
