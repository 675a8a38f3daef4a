// Traffic selectors and the linear reference SPD: targeted cases (ports,
// ICMP type/code, fragments, IPv6 extension headers, priority ties) and a
// differential test against a naive model built on `IPPrefix.contains`.

import Foundation
@testable import IPsec
import Packet
import Testing

private func selector(_ src: String, _ dst: String, proto: IPProtocol? = nil, sport: ClosedRange<UInt16>? = nil,
                      dport: ClosedRange<UInt16>? = nil) -> TrafficSelector {
    TrafficSelector(source: IPPrefix(src)!, destination: IPPrefix(dst)!, proto: proto, sourcePorts: sport,
                    destinationPorts: dport)!
}

private func matches(_ s: TrafficSelector, _ bytes: [UInt8]) -> Bool {
    let buffer = PacketBuffer(bytes)
    return s.matches(buffer.view)
}

/// IPv4 / raw protocol with `payload`.
private func ipv4Raw(_ proto: UInt8, _ payload: [UInt8], src: IPv4Address = Inner.v4Source,
                     dst: IPv4Address = Inner.v4Destination, flags: UInt16 = 0) -> [UInt8] {
    let total = 20 + payload.count
    var h: [UInt8] = [0x45, 0, UInt8(total >> 8), UInt8(total & 0xFF), 0, 0, UInt8(flags >> 8), UInt8(flags & 0xFF),
                      64, proto, 0, 0] + src.bytes + dst.bytes
    let sum = internetChecksum(h)
    h[10] = UInt8(sum >> 8); h[11] = UInt8(sum & 0xFF)
    return h + payload
}

@Suite struct PolicyTests {
    @Test func prefixesProtocolsAndPorts() {
        let udp53 = Inner.ipv4UDP(payload: 10, sourcePort: 1111, destinationPort: 53)
        #expect(matches(selector("10.0.0.0/8", "10.1.0.0/16"), udp53))
        #expect(matches(selector("10.0.0.1/32", "10.1.0.7/32", proto: .udp, sport: 1111...1111, dport: 53...53), udp53))
        #expect(!matches(selector("10.0.0.2/32", "10.1.0.0/16"), udp53))
        #expect(!matches(selector("10.0.0.0/8", "10.2.0.0/16"), udp53))
        #expect(!matches(selector("10.0.0.0/8", "10.1.0.0/16", proto: .tcp), udp53))
        #expect(!matches(selector("10.0.0.0/8", "10.1.0.0/16", dport: 54...100), udp53))
        #expect(!matches(selector("10.0.0.0/8", "10.1.0.0/16", sport: 1...1110), udp53))
        #expect(matches(selector("0.0.0.0/0", "0.0.0.0/0"), udp53))
        #expect(!matches(selector("::/0", "::/0"), udp53), "families never mix")
        // Host bits in a selector's prefix are ignored.
        #expect(matches(selector("10.0.0.99/24", "10.1.2.3/16"), udp53))

        let v6 = Inner.ipv6UDP(payload: 10, sourcePort: 2222, destinationPort: 443)
        #expect(matches(selector("2001:db8:10::/48", "2001:db8:20::7/128", proto: .udp, dport: 443...443), v6))
        #expect(matches(selector("2001:db8::/32", "2001:db8:20::/64"), v6))
        #expect(!matches(selector("2001:db8:10::/48", "2001:db8:20::8/128"), v6))
        #expect(!matches(selector("2001:db8:10:0:1::/80", "::/0"), v6))
        #expect(!matches(selector("0.0.0.0/0", "0.0.0.0/0"), v6))

        // ICMP type in the source port, code in the destination port.
        let echo = ipv4Raw(1, [8, 0, 0, 0, 0, 1, 0, 1])
        #expect(matches(selector("10.0.0.0/8", "10.0.0.0/8", proto: .icmp, sport: 8...8, dport: 0...0), echo))
        #expect(!matches(selector("10.0.0.0/8", "10.0.0.0/8", proto: .icmp, sport: 0...0), echo))
        // Ports named, protocol without ports: no match; ANY ports: match.
        let gre = ipv4Raw(47, [0, 0, 8, 0])
        #expect(!matches(selector("10.0.0.0/8", "10.0.0.0/8", dport: 0...65535), gre))
        #expect(matches(selector("10.0.0.0/8", "10.0.0.0/8", proto: IPProtocol(47)), gre))
        // Too short to hold ports.
        #expect(!matches(selector("10.0.0.0/8", "10.0.0.0/8", sport: 0...65535), ipv4Raw(17, [0, 53])))
        // Malformed packets match nothing.
        #expect(!matches(selector("0.0.0.0/0", "0.0.0.0/0"), [0x45, 0, 0]))
        #expect(!matches(selector("0.0.0.0/0", "0.0.0.0/0"), [UInt8](repeating: 0x65, count: 60)))
    }

    /// RFC 4301 §7: a non-initial fragment has no ports and matches only
    /// selectors with ANY ports; the first fragment has them.
    @Test func fragments() {
        let first = ipv4Raw(17, [0x04, 0x57, 0, 53, 0, 20, 0, 0], flags: 0x2000)
        let later = ipv4Raw(17, [1, 2, 3, 4, 5, 6, 7, 8], flags: 0x0003)
        let withPorts = selector("10.0.0.0/8", "10.0.0.0/8", proto: .udp, dport: 53...53)
        let anyPorts = selector("10.0.0.0/8", "10.0.0.0/8", proto: .udp)
        #expect(matches(withPorts, first))
        #expect(!matches(withPorts, later))
        #expect(matches(anyPorts, later))
        // IPv6 Fragment header, first and later fragment.
        var v6 = Inner.ipv6UDP(payload: 10, destinationPort: 53)
        let udp = Array(v6[40...])
        v6 = Array(v6[0..<40])
        v6[6] = 44
        v6[5] &+= 8
        let v6first = v6 + [17, 0, 0, 1, 0, 0, 0, 9] + udp
        let v6later = v6 + [17, 0, 0, 0x11, 0, 0, 0, 9] + udp
        let v6withPorts = selector("2001:db8::/32", "2001:db8::/32", proto: .udp, dport: 53...53)
        #expect(matches(v6withPorts, v6first))
        #expect(!matches(v6withPorts, v6later))
        #expect(matches(selector("2001:db8::/32", "2001:db8::/32", proto: .udp), v6later))

        // Destination Options after the Fragment header (RFC 8200 §4.1):
        // a first or atomic fragment is walked on to its UDP header and
        // ports; a later one has neither (its next header is 60).
        func behindOptions(_ offsetAndFlags: UInt16) -> [UInt8] {
            var h = v6
            h[5] &+= 8
            return h + [60, 0, UInt8(offsetAndFlags >> 8), UInt8(offsetAndFlags & 0xFF), 0, 0, 0, 9]
                + [17, 0, 1, 4, 0, 0, 0, 0] + udp
        }
        for (flags, what) in [(UInt16(1), "first"), (0, "atomic")] {
            let packet = behindOptions(flags)
            #expect(matches(v6withPorts, packet), "\(what) fragment, Destination Options, UDP")
            #expect(!matches(selector("2001:db8::/32", "2001:db8::/32", proto: IPProtocol(60)), packet))
            let fields = SelectorFields(PacketBuffer(packet).view)
            #expect(fields?.proto == 17 && fields?.destinationPort == 53 && fields?.hasPorts == true)
        }
        let optionsLater = behindOptions(0x11)
        #expect(!matches(v6withPorts, optionsLater))
        #expect(matches(selector("2001:db8::/32", "2001:db8::/32", proto: IPProtocol(60)), optionsLater))
        // Options cut short by the end of a first fragment: malformed.
        var cut = behindOptions(1)
        cut[48 + 1] = 200
        #expect(SelectorFields(PacketBuffer(cut).view) == nil)
    }

    @Test func ipv6ExtensionHeadersAreSkipped() {
        var v6 = Inner.ipv6UDP(payload: 10, destinationPort: 4789)
        let udp = Array(v6[40...])
        v6 = Array(v6[0..<40])
        v6[6] = 0
        v6 += [43, 0, 1, 4, 0, 0, 0, 0]  // Hop-by-Hop → Routing
        v6 += [60, 0, 0, 0, 0, 0, 0, 0]  // Routing (type 0, segments left 0) → Destination Options
        v6 += [17, 1] + [UInt8](repeating: 1, count: 14)  // 16-byte Destination Options → UDP
        v6 += udp
        let plen = v6.count - 40
        v6[4] = UInt8(plen >> 8); v6[5] = UInt8(plen & 0xFF)
        #expect(matches(selector("::/0", "::/0", proto: .udp, dport: 4789...4789), v6))
        let buffer = PacketBuffer(v6)
        let fields = SelectorFields(buffer.view)
        #expect(fields?.proto == 17 && fields?.destinationPort == 4789 && fields?.hasPorts == true)
        // An extension header running past the packet makes it malformed.
        var broken = v6
        broken[41] = 100
        #expect(SelectorFields(PacketBuffer(broken).view) == nil)
    }

    @Test func selectorRoundTripsItsDescription() {
        let s = selector("10.0.0.0/24", "10.1.0.0/16", proto: .tcp, sport: 1...2,
                         dport: 80...80)
        #expect(s.source == IPPrefix("10.0.0.0/24")! && s.destination == IPPrefix("10.1.0.0/16")!)
        #expect(s.proto == .tcp && s.sourcePorts == 1...2 && s.destinationPorts == 80...80 && s.isIPv4)
        #expect(s.description == "src 10.0.0.0/24 dst 10.1.0.0/16 proto tcp sport 1-2 dport 80-80")
        #expect(TrafficSelector(source: IPPrefix("10.0.0.0/8")!, destination: IPPrefix("::/0")!) == nil)
        #expect(TrafficSelector.any(ipv6: true).source == IPPrefix("::/0")!)
    }

    @Test func priorityOrderAndTies() {
        let everything = selector("0.0.0.0/0", "0.0.0.0/0")
        let dns = selector("0.0.0.0/0", "0.0.0.0/0", proto: .udp, dport: 53...53)
        let policies = [
            SecurityPolicy(id: 1, direction: .outbound, selector: everything, priority: 100, action: .discard),
            SecurityPolicy(id: 2, direction: .outbound, selector: dns, priority: 10, action: .protect(SPI(0x1000))),
            SecurityPolicy(id: 3, direction: .outbound, selector: dns, priority: 10, action: .bypass),
            SecurityPolicy(id: 4, direction: .inbound, selector: everything, priority: 1, action: .bypass),
        ]
        let spd = LinearSPD(policies: policies)
        #expect(spd.policies.map(\.id) == [4, 2, 3, 1])
        let query = PacketBuffer(Inner.ipv4UDP(payload: 5, destinationPort: 53))
        #expect(spd.lookup(query.view) == PolicyMatch(index: 0, id: 4, action: .bypass))
        #expect(spd.lookup(query.view, direction: .outbound) == PolicyMatch(index: 1, id: 2, action: .protect(SPI(0x1000))))
        let other = PacketBuffer(Inner.ipv4UDP(payload: 5, destinationPort: 80))
        #expect(spd.lookup(other.view, direction: .outbound)?.id == 1)
        #expect(spd.lookup(other.view, direction: .forward) == nil)
        #expect(spd.lookup(PacketBuffer(Inner.ipv6UDP(payload: 5)).view) == nil)
        #expect(LinearSPD(policies: []).lookup(query.view) == nil)
    }

    /// Random rule sets and packets against a model that uses only
    /// `IPPrefix.contains` and the fields the packets were built from.
    @Test func differentialAgainstNaiveModel() throws {
        var rng = SplitMix64(seed: 2024)
        func pick<T>(_ options: [T]) -> T { options[Int(rng.next() % UInt64(options.count))] }
        let v4Pool = ["10.0.0.0", "10.1.2.3", "192.0.2.77", "10.1.0.0", "172.16.9.1"].map { IPv4Address($0)! }
        let v6Pool = ["2001:db8::1", "2001:db8:1::5", "fe80::9", "2001:db8::ffff"].map { IPv6Address($0)! }
        struct Packet { var ipv6: Bool; var src: IPAddress; var dst: IPAddress; var proto: UInt8; var sport: UInt16; var dport: UInt16; var bytes: [UInt8] }
        var matched = 0, unmatched = 0
        for round in 0..<40 {
            var policies: [SecurityPolicy] = []
            for i in 0..<Int(rng.next() % 30 + 1) {
                let ipv6 = rng.next() % 3 == 0
                let src: IPPrefix, dst: IPPrefix
                if ipv6 {
                    src = IPPrefix(address: .v6(pick(v6Pool)), length: pick([0, 16, 32, 48, 64, 100, 128]))!
                    dst = IPPrefix(address: .v6(pick(v6Pool)), length: pick([0, 16, 32, 64, 127, 128]))!
                } else {
                    src = IPPrefix(address: .v4(pick(v4Pool)), length: pick([0, 8, 16, 24, 31, 32]))!
                    dst = IPPrefix(address: .v4(pick(v4Pool)), length: pick([0, 8, 16, 24, 32]))!
                }
                let proto = pick([IPProtocol?.none, .udp, .tcp])
                let lo = UInt16(rng.next() % 2000), hi = lo + UInt16(rng.next() % 500)
                let ports: ClosedRange<UInt16>? = rng.next() % 2 == 0 ? nil : lo...hi
                let sports: ClosedRange<UInt16>? = rng.next() % 4 == 0 ? lo...hi : nil
                policies.append(SecurityPolicy(
                    id: UInt32(i + 1), direction: pick([.inbound, .outbound]),
                    selector: TrafficSelector(source: src, destination: dst, proto: proto, sourcePorts: sports,
                                              destinationPorts: ports)!,
                    priority: UInt32(rng.next() % 5), action: pick([.bypass, .discard, .protect(SPI(UInt32(300 + i)))])))
            }
            let spd = LinearSPD(policies: policies)
            for _ in 0..<50 {
                let ipv6 = rng.next() % 3 == 0
                let sport = UInt16(rng.next() % 2600), dport = UInt16(rng.next() % 2600)
                let tcp = rng.next() % 2 == 0
                let transport: TransportSpec = tcp ? .tcp(TCPSpec(sourcePort: sport, destinationPort: dport))
                    : .udp(sourcePort: sport, destinationPort: dport)
                let network: NetworkSpec
                let src: IPAddress, dst: IPAddress
                if ipv6 {
                    let (s, d) = (pick(v6Pool), pick(v6Pool))
                    network = .ipv6(IPv6Spec(source: s, destination: d)); src = .v6(s); dst = .v6(d)
                } else {
                    let (s, d) = (pick(v4Pool), pick(v4Pool))
                    network = .ipv4(IPv4Spec(source: s, destination: d)); src = .v4(s); dst = .v4(d)
                }
                let builder = PacketBuilder(network: network, transport: transport)
                let bytes = Array(try builder.build(payloadLength: 12)[builder.networkOffset...])
                let packet = Packet(ipv6: ipv6, src: src, dst: dst, proto: tcp ? 6 : 17, sport: sport, dport: dport,
                                    bytes: bytes)
                for direction in [PolicyDirection?.none, .inbound, .outbound] {
                    // The model: stable sort by priority, first match.
                    let ordered = policies.enumerated().sorted { ($0.element.priority, $0.offset) < ($1.element.priority, $1.offset) }
                    let expected = ordered.first { entry in
                        let p = entry.element, s = p.selector
                        if let direction, p.direction != direction { return false }
                        guard s.source.contains(packet.src), s.destination.contains(packet.dst) else { return false }
                        if let proto = s.proto, proto.rawValue != packet.proto { return false }
                        if let r = s.sourcePorts, !r.contains(packet.sport) { return false }
                        if let r = s.destinationPorts, !r.contains(packet.dport) { return false }
                        return true
                    }?.element.id
                    let buffer = PacketBuffer(packet.bytes)
                    let got = direction.map { spd.lookup(buffer.view, direction: $0) } ?? spd.lookup(buffer.view)
                    #expect(got?.id == expected, "round \(round)")
                    if expected == nil { unmatched += 1 } else { matched += 1 }
                    if let got { #expect(spd.policies[got.index].id == got.id) }
                }
            }
        }
        #expect(matched > 500 && unmatched > 500, "both outcomes exercised: \(matched) / \(unmatched)")
    }
}
