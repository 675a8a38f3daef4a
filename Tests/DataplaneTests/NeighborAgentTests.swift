// The neighbour agent (`port N resolve on`) in-process, on ring ports: the
// gateways of `via` routes are asked for (ARP, Neighbor Solicitation),
// packets for them are held until an answer comes and then leave with the
// answer's MAC, later ones are forwarded by the workers; the gateway's own
// addresses are answered; unsolicited answers teach nothing; a neighbour
// that stops answering is forgotten. Without `resolve` the same frames are
// dropped as before (negative control).

import Command
@testable import Control
import Dataplane
import Glibc
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// The base configuration without the unprotected side's static neighbours.
    var unresolvedConfigText: String {
        h.baseConfigText.split(separator: "\n")
            .filter { !$0.hasPrefix("neighbor 192.0.2.254") && !$0.hasPrefix("neighbor 2001:db8:b::fe") }
            .joined(separator: "\n")
    }

    /// The agent's turn at `now`, then what the ports sent once the worker
    /// passed two polls (the agent's frames leave at the first).
    func agentTurn(_ session: ControlSession, now: Double) -> [UInt16: [[UInt8]]] {
        session.serviceNeighbors(now: now)
        let polls = h.gateway.coreCounters().reduce(0) { $0 + $1.polls }
        let deadline = monotonicSeconds() + 5
        while h.gateway.coreCounters().reduce(0, { $0 + $1.polls }) < polls + 2 && monotonicSeconds() < deadline { usleep(50) }
        var sent: [UInt16: [[UInt8]]] = [:]
        for rp in [h.protected, h.unprotected, h.stack] { sent[rp.port] = h.dequeueAll(rp) }
        return sent
    }

    func arpFrame(_ op: UInt16, from mac: MACAddress, _ ip: String, to dstMAC: MACAddress, target: String,
                  targetMAC: MACAddress = MACAddress((0, 0, 0, 0, 0, 0))) -> [UInt8] {
        ARPMessage(operation: op, senderMAC: mac, senderIP: ipv4(ip), targetMAC: targetMAC,
                   targetIP: ipv4(target)).frame(from: mac, to: dstMAC)
    }

    @Test func neighborAgentResolvesHoldsAndAnswers() throws {
        defer { try? h.publish(h.baseConfigText) }
        let u = h.portMAC(h.u)
        let router4 = mac("02:bb:00:00:00:aa"), router6 = mac("02:bb:00:00:06:aa")
        let toRemote4 = h.frame4("10.0.0.9", "198.51.100.7", ttl: 20)
        let toRemote6 = h.frame6("2001:db8:a::9", "2001:db8:100::7", hopLimit: 20)
        let reply4 = arpFrame(ARPMessage.reply, from: router4, "192.0.2.254", to: u, target: "192.0.2.1", targetMAC: u)
        let advert6 = NDMessage(type: NeighborDiscovery.advertisement, ethernetSource: router6, source: ipv6("2001:db8:b::fe"),
                                destination: ipv6("2001:db8:b::1"),
                                flags: NeighborDiscovery.router | NeighborDiscovery.solicited | NeighborDiscovery.override,
                                target: ipv6("2001:db8:b::fe"), linkLayer: router6).frame(to: u)

        // Negative control: no resolve, no static neighbour: dropped as before.
        try h.publish(unresolvedConfigText)
        try expectDropped([toRemote4, toRemote6], reason: .noNeighbor, on: h.protected)
        try expectDropped([reply4], reason: .unsupportedEthertype, on: h.unprotected)

        // 192.0.2.128/25 is routed through the router, though on u's link.
        let text = unresolvedConfigText + "\nport \(h.u) resolve on\nroute add 192.0.2.128/25 via 192.0.2.254\n"
        try h.publish(text)
        _ = h.gateway.agentReceive()  // what an earlier test left
        let session = try h.installSession(text, name: "resolve")
        // At once: the `via` gateways on u's link are asked for, by broadcast
        // and by the solicited-node group; u's own addresses are announced.
        var now = monotonicSeconds()
        let asked = agentTurn(session, now: now)[h.u] ?? []
        let arps = asked.compactMap(ARPMessage.init(frame:)).filter { $0.senderIP != $0.targetIP }
        let solicitations = asked.compactMap(NDMessage.init(frame:)).filter { $0.type == NeighborDiscovery.solicitation }
        let gratuitous = asked.filter { ARPMessage(frame: $0).map { $0.senderIP == $0.targetIP } ?? false }
        #expect(gratuitous.map { ARPMessage(frame: $0)! } == [
            ARPMessage(operation: ARPMessage.request, senderMAC: u, senderIP: ipv4("192.0.2.1"),
                       targetMAC: MACAddress((0, 0, 0, 0, 0, 0)), targetIP: ipv4("192.0.2.1"))])
        #expect(gratuitous.allSatisfy { Array($0.prefix(6)) == MACAddress.broadcast.array })
        let unsolicited = asked.filter { NDMessage(frame: $0)?.type == NeighborDiscovery.advertisement }
        #expect(unsolicited.map { NDMessage(frame: $0)! } == [
            NDMessage(type: NeighborDiscovery.advertisement, ethernetSource: u, source: ipv6("2001:db8:b::1"),
                      destination: IPv6Address.allNodes, flags: NeighborDiscovery.router | NeighborDiscovery.override,
                      target: ipv6("2001:db8:b::1"), linkLayer: u)])
        #expect(unsolicited.allSatisfy { Array($0.prefix(6)) == MACAddress(multicast: IPv6Address.allNodes).array })
        #expect(asked.count == 6, "\(asked.count) frames: two ARP requests, two solicitations, two announcements")
        #expect(Set(arps.map(\.targetIP.description)) == ["192.0.2.254", "192.0.2.77"], "\(arps)")
        for a in arps {
            #expect(a.operation == ARPMessage.request && a.senderMAC == u && a.senderIP.description == "192.0.2.1")
            #expect(Array(asked.first { ARPMessage(frame: $0) == a }!.prefix(6)) == MACAddress.broadcast.array)
        }
        #expect(Set(solicitations.map(\.target.description)) == ["2001:db8:b::fe", "2001:db8:b::77"], "\(solicitations)")
        for s in solicitations {
            #expect(s.type == NeighborDiscovery.solicitation && s.linkLayer == u && s.source == ipv6("2001:db8:b::1")
                    && s.destination == s.target.solicitedNode)
            #expect(Array(asked.first { NDMessage(frame: $0) == s }!.prefix(6)) == MACAddress(multicast: s.target.solicitedNode).array)
        }

        // Packets for them wait with the agent: nothing leaves, nothing is dropped.
        let held = try h.inject([toRemote4, toRemote6], on: h.protected)
        #expect(held.delta.toAgent == 2 && held.delta.totalDrops == 0 && held.allSent == 0, "\(held.delta)")
        // The answers: the held packets leave with the answers' MACs, TTL − 1.
        let answers = try h.inject([reply4, advert6], on: h.unprotected)
        #expect(answers.delta.toAgent == 2 && answers.delta.totalDrops == 0, "\(answers.delta)")
        now += 0.01
        let released = agentTurn(session, now: now)[h.u] ?? []
        var expected4 = toRemote4, expected6 = toRemote6
        expected4.replaceSubrange(0..<12, with: router4.array + u.array)
        expected4[14 + 8] = 19
        let sum = (UInt16(expected4[24]) << 8 | UInt16(expected4[25]))
        let patched = InternetChecksum.afterTTLDecrement(sum)
        expected4[24] = UInt8(patched >> 8); expected4[25] = UInt8(truncatingIfNeeded: patched)
        expected6.replaceSubrange(0..<12, with: router6.array + u.array)
        expected6[14 + 7] = 19
        #expect(released.contains(expected4), "the held IPv4 packet, as the gateway forwards it")
        #expect(released.contains(expected6), "the held IPv6 packet, as the gateway forwards it")
        #expect(session.neighbors.counters.heldSent == 2 && session.neighbors.counters.learned == 2)
        // From now on the workers forward themselves.
        let direct = try h.inject([toRemote4, toRemote6], on: h.protected)
        #expect(direct.delta.toAgent == 0 && direct.sent[h.u] == [expected4, expected6], "\(direct.delta)")

        // The gateway's own addresses are answered.
        let host = GatewayHarness.hostMAC
        let who = arpFrame(ARPMessage.request, from: host, "192.0.2.5", to: .broadcast, target: "192.0.2.1")
        let ns = NDMessage(type: NeighborDiscovery.solicitation, ethernetSource: host, source: ipv6("2001:db8:b::5"),
                           destination: ipv6("2001:db8:b::1").solicitedNode, target: ipv6("2001:db8:b::1"),
                           linkLayer: host).frame(to: MACAddress(multicast: ipv6("2001:db8:b::1").solicitedNode))
        _ = try h.inject([who, ns], on: h.unprotected)
        let answered = agentTurn(session, now: now + 0.01)[h.u] ?? []
        let arpAnswer = answered.compactMap(ARPMessage.init(frame:)).first
        #expect(arpAnswer == ARPMessage(operation: ARPMessage.reply, senderMAC: u, senderIP: ipv4("192.0.2.1"),
                                        targetMAC: host, targetIP: ipv4("192.0.2.5")), "\(answered)")
        let na = answered.compactMap(NDMessage.init(frame:)).first
        #expect(na?.type == NeighborDiscovery.advertisement && na?.target == ipv6("2001:db8:b::1") && na?.linkLayer == u
                && na?.destination == ipv6("2001:db8:b::5") && na?.flags == 0xE0, "\(String(describing: na))")
        #expect(answered.allSatisfy { Array($0.prefix(6)) == host.array })

        #expect(session.neighbors.learned[.v4(ipv4("192.0.2.5"))]?.mac == host, "the asker is learned")
        // A question from an address the routes send elsewhere (inside the
        // more specific 192.0.2.128/25) is answered but teaches nothing: a
        // learned entry is a host route and would take that address's traffic.
        let spoofed = arpFrame(ARPMessage.request, from: mac("02:ee:00:00:00:02"), "192.0.2.200", to: .broadcast,
                               target: "192.0.2.1")
        _ = try h.inject([spoofed], on: h.unprotected)
        let toSpoofer = agentTurn(session, now: now + 0.015)[h.u] ?? []
        #expect(toSpoofer.count == 1 && session.neighbors.entries[.v4(ipv4("192.0.2.200"))] == nil)
        // Nor does one from the subnet's broadcast or network address, which
        // no host has (GatewayConfig.notAHostAddress).
        for address in ["192.0.2.255", "192.0.2.0"] {
            let fromNoHost = arpFrame(ARPMessage.request, from: mac("02:ee:00:00:00:03"), address, to: .broadcast,
                                      target: "192.0.2.1")
            _ = try h.inject([fromNoHost], on: h.unprotected)
            _ = agentTurn(session, now: now + 0.016)
            #expect(session.neighbors.entries[.v4(ipv4(address))] == nil, "\(address) is not learned")
        }
        // An advertisement without the override flag does not replace a known MAC (RFC 4861 §7.2.5).
        let noOverride = NDMessage(type: NeighborDiscovery.advertisement, ethernetSource: mac("02:ee:00:00:06:01"),
                                   source: ipv6("2001:db8:b::fe"), destination: ipv6("2001:db8:b::1"),
                                   flags: NeighborDiscovery.router | NeighborDiscovery.solicited,
                                   target: ipv6("2001:db8:b::fe"), linkLayer: mac("02:ee:00:00:06:01")).frame(to: u)
        _ = try h.inject([noOverride], on: h.unprotected)
        _ = agentTurn(session, now: now + 0.016)
        #expect(session.neighbors.learned[.v6(ipv6("2001:db8:b::fe"))]?.mac == router6)
        // An answer nobody asked for teaches nothing.
        let stranger = arpFrame(ARPMessage.reply, from: mac("02:ee:00:00:00:01"), "192.0.2.99", to: u, target: "192.0.2.1",
                                targetMAC: u)
        _ = try h.inject([stranger], on: h.unprotected)
        _ = agentTurn(session, now: now + 0.02)
        #expect(session.neighbors.entries[.v4(ipv4("192.0.2.99"))] == nil)
        #expect(session.neighbors.learned[.v4(ipv4("192.0.2.254"))]?.mac == router4)

        // Silence: after the reachable time the neighbour is probed by
        // unicast, three times, then forgotten; its packets wait again.
        now += NeighborAgent.reachableTime + 1
        var probes: [[UInt8]] = []
        for i in 0..<4 { probes += agentTurn(session, now: now + Double(i) * (NeighborAgent.retransmitTime + 0.01))[h.u] ?? [] }
        let unicast = probes.filter { ARPMessage(frame: $0)?.targetIP == ipv4("192.0.2.254") }
        #expect(unicast.count == 3 && unicast.allSatisfy { Array($0.prefix(6)) == router4.array }, "\(unicast.count) probes")
        #expect(session.neighbors.learned[.v4(ipv4("192.0.2.254"))] == nil && session.neighbors.counters.expired >= 1)
        let again = try h.inject([toRemote4], on: h.protected)
        #expect(again.delta.toAgent == 1 && again.allSent == 0, "\(again.delta)")
    }

    @Test func neighborAgentGivesUpOnSilentHosts() throws {
        defer { try? h.publish(h.baseConfigText) }
        let text = unresolvedConfigText + "\nport \(h.u) resolve on\n"
        try h.publish(text)
        _ = h.gateway.agentReceive()  // what an earlier test left
        let session = try h.installSession(text, name: "resolve-silent")
        var now = monotonicSeconds()
        _ = agentTurn(session, now: now)
        // An on-link host (u's connected prefix) that never answers.
        let toHost = h.frame4("10.0.0.9", "192.0.2.50", ttl: 20)
        let held = try h.inject(Array(repeating: toHost, count: 10), on: h.protected)
        #expect(held.delta.toAgent == 10, "\(held.delta)")
        var asked = 0
        for _ in 0..<4 {
            asked += (agentTurn(session, now: now)[h.u] ?? []).filter { ARPMessage(frame: $0)?.targetIP == ipv4("192.0.2.50") }.count
            now += NeighborAgent.retransmitTime + 0.01
        }
        #expect(asked == 3, "asked \(asked) times")
        let c = session.neighbors.counters
        // Eight held (the queue's bound), two dropped at once, eight when it gave up.
        #expect(c.held == 8 && c.heldDropped == 10 && c.heldSent == 0, "\(c)")
        #expect(session.neighbors.entries[.v4(ipv4("192.0.2.50"))] == nil)
    }
}

/// The address the agent waits for follows the routes' precedence
/// (`RouteCompiler`): the most specific prefix wins, and a route naming a
/// port's own prefix wins over the port's prefix.
@Test func neighborAgentWaitsForTheRoutedNextHop() throws {
    let base = "port 0 role unprotected address 192.0.2.1/24\nport 0 address 2001:db8:b::1/64 resolve on\n"
    let agent = NeighborAgent(portMACs: [:]) { _, _ in true }
    func next(_ text: String, _ destination: String) throws -> IPAddress {
        agent.nextHopAddress(IPAddress(destination)!, config: try GatewayConfig.load(text: base + text, name: "t"))
    }
    #expect(try next("", "192.0.2.50") == IPAddress("192.0.2.50")!)
    #expect(try next("route add 192.0.2.0/24 via 192.0.2.254\n", "192.0.2.50") == IPAddress("192.0.2.254")!)
    #expect(try next("route add 192.0.2.128/25 via 192.0.2.254\n", "192.0.2.200") == IPAddress("192.0.2.254")!)
    #expect(try next("route add 192.0.2.128/25 via 192.0.2.254\n", "192.0.2.50") == IPAddress("192.0.2.50")!)
    #expect(try next("route add 0.0.0.0/0 via 192.0.2.254\n", "198.51.100.7") == IPAddress("192.0.2.254")!)
    #expect(try next("route add 2001:db8:b::/64 via 2001:db8:b::fe\n", "2001:db8:b::9") == IPAddress("2001:db8:b::fe")!)
    #expect(try next("route add 2001:db8:b::/64 port 0\n", "2001:db8:b::9") == IPAddress("2001:db8:b::9")!)
}

/// A scan of an on-link prefix (packets for ever new addresses of a /64):
/// the agent asks for at most `unresolvedLimit` new addresses at a time and
/// refuses packets for more (counted), keeps sending to the neighbour it had
/// resolved, still holds packets for a `via` gateway and asks for hosts on
/// another port, and asks for new addresses again once the unanswered ones gave up.
@Test func neighborAgentBoundsAScan() throws {
    let config = try GatewayConfig.load(text: """
        port 0 role protected address 2001:db8:a::1/64 resolve on
        port 1 role unprotected address 192.0.2.1/24 resolve on
        route add 2001:db8:100::/48 via 2001:db8:a::fe
        """, name: "t")
    let own = mac("02:11:00:00:00:01"), known = mac("02:aa:00:00:06:02")
    final class Wire { var frames: [[UInt8]] = [] }
    let wire = Wire()
    let agent = NeighborAgent(portMACs: [0: own, 1: mac("02:22:00:00:00:02")]) { frame, _ in wire.frames.append(frame); return true }
    func packet(to destination: String) -> AgentFrame {
        var ip: [UInt8] = [0x60, 0, 0, 0, 0, 8, 17, 64]
        ipv6("2001:db8:1::5").append(to: &ip)
        ipv6(destination).append(to: &ip)
        return AgentFrame(port: 0, held: true, bytes: ip + [0x0F, 0xA0, 0x13, 0x88, 0, 8, 0, 0])
    }
    func questions(_ frames: [[UInt8]]) -> [IPv6Address] {
        frames.compactMap { NDMessage(frame: $0) }.filter { $0.type == NeighborDiscovery.solicitation }.map(\.target)
    }
    var now = 100.0
    _ = agent.tick(config: config, now: now)  // asks for the gateway
    // One neighbour resolved before the scan.
    _ = agent.handle([packet(to: "2001:db8:a::2")], config: config, now: now)
    let answer = NDMessage(type: NeighborDiscovery.advertisement, ethernetSource: known, source: ipv6("2001:db8:a::2"),
                           destination: ipv6("2001:db8:a::1"), flags: NeighborDiscovery.solicited | NeighborDiscovery.override,
                           target: ipv6("2001:db8:a::2"), linkLayer: known).frame(to: own)
    #expect(agent.handle([AgentFrame(port: 0, held: false, bytes: answer)], config: config, now: now))
    #expect(agent.counters.heldSent == 1)
    wire.frames = []

    let scan = (0..<300).map { packet(to: "2001:db8:a::" + String(0x1000 + $0, radix: 16)) }
    _ = agent.handle(Array(scan[..<100]), config: config, now: now)
    _ = agent.handle(Array(scan[100...]), config: config, now: now)
    #expect(Set(questions(wire.frames)).count == NeighborAgent.unresolvedLimit)
    #expect(agent.counters.unresolvedLimited == 300 - NeighborAgent.unresolvedLimit
            && agent.counters.heldDropped == 300 - NeighborAgent.unresolvedLimit, "\(agent.counters)")
    // The resolved neighbour is served all the while.
    wire.frames = []
    _ = agent.handle([packet(to: "2001:db8:a::2")], config: config, now: now)
    #expect(wire.frames.count == 1 && Array(wire.frames[0].prefix(6)) == known.array)
    // The gateway's packets still wait for it; port 1's hosts are still asked for.
    wire.frames = []
    let held = agent.counters.held
    var toHost: [UInt8] = [0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 0, 0, 5, 192, 0, 2, 50]
    toHost += [0x0F, 0xA0, 0x13, 0x88, 0, 8, 0, 0]
    _ = agent.handle([packet(to: "2001:db8:100::7"), AgentFrame(port: 1, held: true, bytes: toHost)], config: config, now: now)
    #expect(agent.counters.held == held + 2 && agent.counters.unresolvedLimited == 300 - NeighborAgent.unresolvedLimit)
    #expect(wire.frames.compactMap { ARPMessage(frame: $0) }.map(\.targetIP) == [ipv4("192.0.2.50")])

    // Three questions a second apart, then the unanswered addresses give
    // their places up: a new address is asked for again.
    for _ in 0..<4 {
        now += NeighborAgent.retransmitTime + 0.01
        _ = agent.tick(config: config, now: now)
    }
    // Left: the resolved neighbour and the gateway (failed, asked again later).
    #expect(agent.entries.count == 2, "\(agent.entries.count) entries left")
    wire.frames = []
    _ = agent.handle([packet(to: "2001:db8:a::9999")], config: config, now: now)
    #expect(questions(wire.frames) == [ipv6("2001:db8:a::9999")])
    #expect(agent.counters.unresolvedLimited == 300 - NeighborAgent.unresolvedLimit)
}
