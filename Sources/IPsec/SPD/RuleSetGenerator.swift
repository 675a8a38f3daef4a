// A seeded generator of ClassBench-like SPD rule sets and of packets aimed at
// them, for the differential tests and the benchmarks (which also write the
// same rules as dpdk-test-acl input). The same seed gives the same rules and
// packets on every machine: all randomness comes from one SplitMix64 and is
// reduced to ranges by multiplication, never by the standard library's
// `random(in:)` (whose algorithm is not promised to stay the same).
//
// Shape of the rules, loosely after the ClassBench "acl" seeds:
//   * addresses are nested prefixes under a small pool of seed networks, and a
//     good share extend a prefix drawn earlier, so rules overlap like real ACLs;
//   * destination prefixes are mostly hosts, sources more often ranges or ANY;
//   * protocols tcp, udp, icmp, sctp, other and ANY; port fields ANY, a
//     well-known port, the ephemeral range, an exact random port or an
//     arbitrary range; ICMP rules name a type and sometimes a code;
//   * some rules are exact 5-tuples, a few belong to an interface id;
//   * priorities are drawn from a small range so ties are common, and
//     rank = priority << 32 | index keeps ties in generation order.

import Packet

public struct SPDRuleSetGenerator {
    @usableFromInline var rng: SplitMix64
    public let ipv6: Bool
    /// The family of the address being drawn: `ipv6` for rules; each rule's
    /// own family for packets (a caller may pass rules of both families).
    private var drawingIPv6: Bool
    /// Seed networks (address, length) the prefixes descend from.
    private var seeds: [(high: UInt64, low: UInt64, length: Int)] = []
    /// Prefixes drawn so far, for nesting.
    private var drawn: [(high: UInt64, low: UInt64, length: Int)] = []

    private static let wellKnownPorts: [UInt16] = [20, 21, 22, 23, 25, 53, 67, 68, 80, 110, 123, 137, 143, 161, 179,
                                                    389, 443, 445, 500, 514, 636, 993, 995, 1433, 1701, 1723, 3306,
                                                    3389, 4500, 5060, 5432, 8080, 8443]
    private static let icmpTypes: [UInt16] = [0, 3, 4, 5, 8, 11, 12, 13, 14]
    private static let icmpv6Types: [UInt16] = [1, 2, 3, 4, 128, 129, 133, 134, 135, 136]

    public init(seed: UInt64, ipv6: Bool) {
        rng = SplitMix64(seed: seed ^ (ipv6 ? 0x6666_0000_0000_0006 : 0x4444_0000_0000_0004))
        self.ipv6 = ipv6
        drawingIPv6 = ipv6
    }

    private var width: Int { drawingIPv6 ? 128 : 32 }

    /// Uniform in 0..<n (n > 0).
    private mutating func below(_ n: Int) -> Int {
        Int(truncatingIfNeeded: rng.next().multipliedFullWidth(by: UInt64(n)).high)
    }
    private mutating func chance(_ percent: Int) -> Bool { below(100) < percent }
    private mutating func pick<T>(_ options: [T]) -> T { options[below(options.count)] }

    // MARK: Address arithmetic on (high, low) as one 128-bit value; IPv4 uses the low 32 bits.

    private func mask(_ length: Int) -> (UInt64, UInt64) {
        if !drawingIPv6 {
            return (0, length == 0 ? 0 : UInt64(~UInt32(0) << UInt32(32 - length)))
        }
        let h: UInt64 = length >= 64 ? ~0 : (length == 0 ? 0 : ~UInt64(0) << UInt64(64 - length))
        let l: UInt64 = length <= 64 ? 0 : (length == 128 ? ~0 : ~UInt64(0) << UInt64(128 - length))
        return (h, l)
    }

    private mutating func randomAddress() -> (UInt64, UInt64) {
        drawingIPv6 ? (rng.next(), rng.next()) : (0, rng.next() & 0xFFFF_FFFF)
    }

    /// `base`'s first `keep` bits, random bits after them.
    private mutating func extend(_ base: (high: UInt64, low: UInt64), keep: Int) -> (UInt64, UInt64) {
        let (mh, ml) = mask(keep)
        let (rh, rl) = randomAddress()
        return (base.high & mh | rh & ~mh, base.low & ml | rl & ~ml & (drawingIPv6 ? ~0 : 0xFFFF_FFFF))
    }

    private func prefix(_ a: (UInt64, UInt64), _ length: Int) -> IPPrefix {
        let (mh, ml) = mask(length)
        let address: IPAddress = drawingIPv6 ? .v6(IPv6Address(high: a.0 & mh, low: a.1 & ml))
            : .v4(IPv4Address(UInt32(truncatingIfNeeded: a.1 & ml)))
        return IPPrefix(address: address, length: length)!
    }

    /// A prefix length drawn from per-tier weights; tiers are in IPv4 terms
    /// and scaled for IPv6.
    private mutating func prefixLength(source: Bool) -> Int {
        // Tiers: 0, short, /16, /17-23, /24, /25-31, host.
        let weights = source ? [14, 3, 10, 6, 24, 11, 32] : [5, 2, 7, 6, 20, 13, 47]
        var r = below(weights.reduce(0, +))
        var tier = 0
        while r >= weights[tier] { r -= weights[tier]; tier += 1 }
        if ipv6 {
            switch tier {
            case 0: return 0
            case 1: return 16 + below(17)
            case 2: return 48
            case 3: return 49 + below(15)
            case 4: return 64
            case 5: return 65 + below(63)
            default: return 128
            }
        }
        switch tier {
        case 0: return 0
        case 1: return 8 + below(8)
        case 2: return 16
        case 3: return 17 + below(7)
        case 4: return 24
        case 5: return 25 + below(7)
        default: return 32
        }
    }

    private mutating func address(length: Int) -> IPPrefix {
        if length == 0 { return prefix((0, 0), 0) }
        // Nest under an earlier prefix no longer than `length` when one is at hand.
        if !drawn.isEmpty && chance(45) {
            let p = drawn[below(drawn.count)]
            if p.length <= length {
                let a = extend((p.high, p.low), keep: p.length)
                if length < width { drawn.append((a.0, a.1, length)) }
                return prefix(a, length)
            }
        }
        let s = seeds[below(seeds.count)]
        let a = extend((s.high, s.low), keep: min(s.length, length))
        if length < width && length > 8 && drawn.count < 4096 { drawn.append((a.0, a.1, length)) }
        return prefix(a, length)
    }

    private mutating func ensureSeeds(count: Int) {
        let wanted = 6 + count / 400
        while seeds.count < min(wanted, 64) {
            let length = ipv6 ? 24 + below(25) : 8 + below(9)
            let (h, l) = randomAddress()
            seeds.append((h, l, length))
        }
    }

    private mutating func portRange(destination: Bool) -> ClosedRange<UInt16>? {
        let r = below(100)
        if destination {
            switch r {
            case 0..<22: return nil
            case 22..<62: let p = pick(Self.wellKnownPorts); return p...p
            case 62..<72: return 1024...65535
            case 72..<82: let p = UInt16(truncatingIfNeeded: below(65536)); return p...p
            default: return arbitraryRange()
            }
        }
        switch r {
        case 0..<74: return nil
        case 74..<86: return 1024...65535
        case 86..<93: let p = UInt16(truncatingIfNeeded: below(65536)); return p...p
        default: return arbitraryRange()
        }
    }

    private mutating func arbitraryRange() -> ClosedRange<UInt16> {
        let a = UInt16(truncatingIfNeeded: below(65536))
        let span = chance(50) ? below(64) : below(8192)
        let b = UInt16(min(65535, Int(a) + span))
        return a...b
    }

    /// `count` rules with ranks `priority << 32 | index` and values `index`.
    public mutating func rules(count: Int) -> [SPDRule] {
        ensureSeeds(count: count)
        var out: [SPDRule] = []
        out.reserveCapacity(count)
        let priorities = max(4, count / 8)
        for index in 0..<count {
            var srcLength = prefixLength(source: true)
            var dstLength = prefixLength(source: false)
            var proto: IPProtocol?
            var sports: ClosedRange<UInt16>?
            var dports: ClosedRange<UInt16>?
            let kind = below(100)
            if kind < 8 {
                // Exact 5-tuple.
                srcLength = width; dstLength = width
                proto = chance(60) ? .tcp : .udp
                let s = UInt16(truncatingIfNeeded: 1024 + below(64512))
                let d = pick(Self.wellKnownPorts)
                sports = s...s; dports = d...d
            } else if kind < 10 {
                // Host pair, any protocol.
                srcLength = width; dstLength = width
            } else {
                let p = below(100)
                switch p {
                case 0..<53: proto = .tcp
                case 53..<75: proto = .udp
                case 75..<82: proto = ipv6 ? .icmpv6 : .icmp
                case 82..<85: proto = IPProtocol(132)
                case 85..<89: proto = pick([IPProtocol(47), .esp, IPProtocol(89)])
                default: proto = nil
                }
                switch proto?.rawValue {
                case 6, 17, 132:
                    sports = portRange(destination: false)
                    dports = portRange(destination: true)
                case 1, 58:
                    if chance(70) {
                        let t = pick(ipv6 ? Self.icmpv6Types : Self.icmpTypes)
                        sports = t...t
                        if chance(40) { let c = UInt16(below(16)); dports = c...c }
                    }
                case nil:
                    // ANY protocol naming ports: legal, matches only packets with ports.
                    if chance(8) { dports = portRange(destination: true) }
                default:
                    break
                }
            }
            let src = address(length: srcLength)
            let dst = address(length: dstLength)
            let ifID: UInt32 = chance(88) ? 0 : UInt32(1 + below(3))
            let priority = UInt64(below(priorities))
            let selector = TrafficSelector(source: src, destination: dst, proto: proto, sourcePorts: sports,
                                           destinationPorts: dports)!
            out.append(SPDRule(selector: selector, ifID: ifID, rank: priority << 32 | UInt64(index),
                               value: UInt32(truncatingIfNeeded: index)))
        }
        return out
    }

    // MARK: Packets

    private static func carriesPorts(_ proto: UInt8) -> Bool {
        switch proto {
        case 6, 17, 33, 132, 136, 1, 58: true
        default: false
        }
    }

    /// A random address inside `p` (in the generator's family).
    private mutating func point(in p: IPPrefix) -> RawIPAddress {
        let base = RawIPAddress(p.network.address)
        let a = extend((base.high, base.low), keep: p.length)
        return RawIPAddress(high: a.0, low: a.1, isIPv6: drawingIPv6)
    }

    private mutating func port(in range: ClosedRange<UInt16>?, icmp: Bool) -> UInt16 {
        if let range { return UInt16(Int(range.lowerBound) + below(Int(range.upperBound) - Int(range.lowerBound) + 1)) }
        return icmp ? UInt16(below(256)) : UInt16(truncatingIfNeeded: below(65536))
    }

    /// A packet drawn at a random point of `rule`.
    private mutating func packet(inside rule: SPDRule) -> SelectorFields {
        let s = rule.selector
        let namesPorts = s.sourcePorts != nil || s.destinationPorts != nil
        var proto: UInt8
        if let p = s.proto {
            proto = p.rawValue
        } else {
            proto = namesPorts ? pick([6, 17, 132]) : pick([6, 17, 1, 58, 132, 47, 50])
        }
        let icmp = proto == 1 || proto == 58
        let hasPorts = Self.carriesPorts(proto)
        return SelectorFields(source: point(in: s.source), destination: point(in: s.destination), proto: proto,
                              sourcePort: hasPorts ? port(in: s.sourcePorts, icmp: icmp) : 0,
                              destinationPort: hasPorts ? port(in: s.destinationPorts, icmp: icmp) : 0,
                              hasPorts: hasPorts, ifID: rule.ifID)
    }

    /// Moves `address` to an edge of `p`: its first or last address or just outside.
    private mutating func edge(of p: IPPrefix) -> RawIPAddress {
        let first = RawIPAddress(p.network.address)
        let (mh, ml) = mask(p.length)
        let lowMask: UInt64 = drawingIPv6 ? ~0 : 0xFFFF_FFFF
        var h = first.high, l = first.low
        switch below(4) {
        case 0: break
        case 1: h |= ~mh & (drawingIPv6 ? ~0 : 0); l |= ~ml & lowMask
        case 2:  // one below the first address
            if l == 0 { h &-= 1; l = lowMask } else { l &-= 1 }
        default:  // one above the last address
            h |= ~mh & (drawingIPv6 ? ~0 : 0); l |= ~ml & lowMask
            if l == lowMask { l = 0; h &+= 1 } else { l &+= 1 }
        }
        if !drawingIPv6 { h = 0 }
        return RawIPAddress(high: h, low: l, isIPv6: drawingIPv6)
    }

    private mutating func nearEnd(of range: ClosedRange<UInt16>?, current: UInt16) -> UInt16 {
        guard let range else { return pick([0, 65535, current]) }
        switch below(4) {
        case 0: return range.lowerBound
        case 1: return range.upperBound
        case 2: return range.lowerBound &- 1
        default: return range.upperBound &+ 1
        }
    }

    /// `count` packets for `rules`: most at a random point of a random rule,
    /// the `adversarial` fraction (0...1) at boundaries and other traps:
    /// range ends ± 1, prefix edges, no ports, the other family, another
    /// interface, another protocol or entirely random fields.
    public mutating func packets(count: Int, for rules: [SPDRule], adversarial: Double) -> [SelectorFields] {
        var out: [SelectorFields] = []
        out.reserveCapacity(count)
        let threshold = UInt64(max(0, min(1, adversarial)) * 1_000_000)
        for _ in 0..<count {
            if rules.isEmpty {
                out.append(randomPacket(ipv6: ipv6))
                continue
            }
            let rule = rules[below(rules.count)]
            drawingIPv6 = !rule.selector.isIPv4
            var f = packet(inside: rule)
            guard UInt64(below(1_000_000)) < threshold else { out.append(f); continue }
            let s = rule.selector
            switch below(10) {
            case 0, 1:
                let icmp = f.proto == 1 || f.proto == 58
                if below(2) == 0 {
                    f.sourcePort = nearEnd(of: s.sourcePorts, current: f.sourcePort)
                } else {
                    f.destinationPort = nearEnd(of: s.destinationPorts, current: f.destinationPort)
                }
                if icmp && chance(50) { f.sourcePort &= 0xFF; f.destinationPort &= 0xFF }
                f.hasPorts = true
            case 2, 3:
                if below(2) == 0 { f.source = edge(of: s.source) } else { f.destination = edge(of: s.destination) }
            case 4:
                f.hasPorts = false
                if chance(50) { f.sourcePort = 0; f.destinationPort = 0 }
            case 5:
                let other = randomPacket(ipv6: !drawingIPv6)
                f.source = other.source
                f.destination = other.destination
            case 6:
                f.ifID = chance(50) ? 0 : UInt32(below(5))
            case 7:
                f.proto = pick([6, 17, 1, 58, 132, 47, 50, 0, 255])
                f.hasPorts = Self.carriesPorts(f.proto) && chance(80)
            case 8:
                f = randomPacket(ipv6: drawingIPv6)
            default:
                // Another rule's source with this one's destination: overlaps of unrelated rules.
                let other = rules[below(rules.count)]
                if other.selector.isIPv4 != rule.selector.isIPv4 { break }
                f.source = packet(inside: other).source
            }
            out.append(f)
        }
        drawingIPv6 = ipv6
        return out
    }

    private mutating func randomPacket(ipv6 v6: Bool) -> SelectorFields {
        let s = v6 ? RawIPAddress(high: rng.next(), low: rng.next(), isIPv6: true)
            : RawIPAddress(high: 0, low: rng.next() & 0xFFFF_FFFF, isIPv6: false)
        let d = v6 ? RawIPAddress(high: rng.next(), low: rng.next(), isIPv6: true)
            : RawIPAddress(high: 0, low: rng.next() & 0xFFFF_FFFF, isIPv6: false)
        let proto: UInt8 = pick([6, 17, 1, 58, 132, 47])
        let hasPorts = Self.carriesPorts(proto)
        return SelectorFields(source: s, destination: d, proto: proto,
                              sourcePort: hasPorts ? UInt16(truncatingIfNeeded: below(65536)) : 0,
                              destinationPort: hasPorts ? UInt16(truncatingIfNeeded: below(65536)) : 0,
                              hasPorts: hasPorts, ifID: chance(90) ? 0 : UInt32(below(4)))
    }
}
