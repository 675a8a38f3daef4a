// The neighbour agent (`port N resolve on`): Sluice's own ARP (RFC 826) and
// IPv6 Neighbor Discovery (RFC 4861), on the control thread. It
// * resolves next hops: the gateways of `via` routes on a resolving port's
//   link as soon as they are configured, and on-link destinations when the
//   workers hand it a packet for one (the packet is held, up to
//   `heldPerNeighbor` per address, and sent once the neighbour answers);
// * answers ARP requests and Neighbor Solicitations for the port's own
//   addresses, and announces each once when it starts resolving (a
//   gratuitous ARP, an unsolicited Neighbor Advertisement to all nodes), so
//   that neighbours' caches follow a gateway restarted with new MACs;
//   unless the port has a local stack (`punt`), which does both;
// * keeps what it learned fresh: an entry confirmed more than
//   `reachableTime` ago is probed by unicast, three times a second apart,
//   and removed when none is answered.
// Learned neighbours become host routes like static `neighbor` lines; a
// static line for the same address wins, and its address is never learned.
// It learns only addresses inside a prefix of the port they came on, never
// the gateway's own, and only from an answer to its own question or from a
// question for one of the port's addresses (as RFC 826 and RFC 4861 §7.2.3
// do), within `capacity` entries: unsolicited answers for other addresses
// change nothing.

import Command
import Dataplane
import Packet

public final class NeighborAgent {
    public enum State: String, Sendable {
        /// Asked, no answer yet.
        case incomplete
        /// Answered within `reachableTime`.
        case reachable
        /// Being asked again by unicast (an answer makes it reachable).
        case probe
        /// Asked `attempts` times without an answer: packets for it are
        /// dropped until `retryAt`, then it is asked again.
        case failed
    }

    public struct Entry: Sendable {
        public var port: UInt16
        public var mac: MACAddress?
        public var state: State
        /// When an answer last confirmed it.
        public var confirmed: Double
        /// When to ask (again).
        public var retryAt: Double
        /// Questions asked in the current state.
        public var asked: Int
        /// IP packets waiting for it (their TTL already taken down).
        public var held: [[UInt8]]
        /// Asked for because a packet came for it (not a `via` gateway, not an asker).
        public var forTraffic = false

        /// The neighbour entry it stands for once resolved (reachable or being probed).
        func resolved(_ address: IPAddress) -> Neighbor? {
            guard state == .reachable || state == .probe, let mac else { return nil }
            return Neighbor(address: address, mac: mac, port: port)
        }
    }

    /// What the agent did, for `stats`.
    public struct Counters: Sendable, Equatable {
        public var requestsSent = 0
        public var answersSent = 0
        public var learned = 0
        public var expired = 0
        public var held = 0
        public var heldSent = 0
        /// Held packets dropped: the queue for the address was full, it did
        /// not answer, or the packet no longer fits its port.
        public var heldDropped = 0
        /// Gratuitous ARPs and unsolicited advertisements of own addresses.
        public var announcements = 0
        /// Frames that were not for the agent (another address, unsolicited,
        /// malformed): nothing changed.
        public var ignored = 0
        /// Packets for a new address not asked for because `unresolvedLimit`
        /// addresses were already waiting for an answer (also in `heldDropped`).
        public var unresolvedLimited = 0
    }

    public static let reachableTime = 30.0
    public static let retransmitTime = 1.0
    public static let attempts = 3
    /// How long an address that never answered is left alone.
    public static let failedBackoff = 5.0
    public static let heldPerNeighbor = 8
    public static let capacity = 4096
    /// At most this many addresses per port asked for because packets came
    /// for them may be waiting for an answer at once: a scan of an on-link
    /// prefix (a /64 has 2^64 addresses) can neither fill the table nor make
    /// the agent ask for every address (RFC 6583 §6.3, §7.1); neighbours
    /// already resolved, `via` gateways, askers and other ports are not
    /// affected. An unanswered address gives its place up after `attempts`
    /// questions (~3 s), so questions for new addresses stay under ~256 a
    /// second per port. (A scan kept above ~85 new addresses a second keeps
    /// the places full: a genuinely new host on that port waits until it
    /// speaks first, e.g. asks for the gateway, which makes it an asker.)
    public static let unresolvedLimit = 256
    public static let tickInterval = 0.1
    private var lastTick = -Double.infinity
    /// The gateways of `via` routes, as of the last tick.
    private var configuredGateways: Set<IPAddress> = []

    public private(set) var entries: [IPAddress: Entry] = [:]
    /// The own addresses announced, by port.
    private var announced: Set<PortAddress> = []
    private struct PortAddress: Hashable {
        var port: UInt16
        var address: IPAddress
    }
    public private(set) var counters = Counters()
    /// Sends a whole Ethernet frame out of a port (`Gateway.agentSend`).
    let send: ([UInt8], UInt16) -> Bool
    let portMACs: [UInt16: MACAddress]

    public init(portMACs: [UInt16: MACAddress], send: @escaping ([UInt8], UInt16) -> Bool) {
        self.portMACs = portMACs
        self.send = send
    }

    /// Resolved neighbours (reachable or being probed), as neighbour entries for `RouteCompiler`.
    public var learned: [IPAddress: Neighbor] {
        var out: [IPAddress: Neighbor] = [:]
        for (address, e) in entries {
            if let n = e.resolved(address) { out[address] = n }
        }
        return out
    }

    /// Whether `learned` changed since the last call (set where an entry
    /// becomes, stops being or changes as a resolved one).
    private var learnedChanged = false
    private func takeLearnedChanged() -> Bool {
        defer { learnedChanged = false }
        return learnedChanged
    }

    // MARK: Input

    /// Takes what the workers handed over; true when the learned neighbours changed (routes must be rebuilt).
    public func handle(_ frames: [AgentFrame], config: GatewayConfig, now: Double) -> Bool {
        var unresolved: [UInt16: Int] = [:]
        if frames.contains(where: \.held) {
            for e in entries.values where e.forTraffic && e.state == .incomplete { unresolved[e.port, default: 0] += 1 }
        }
        for f in frames {
            guard let port = config.ports[f.port], port.resolve else {
                if f.held { counters.heldDropped += 1 } else { counters.ignored += 1 }
                continue
            }
            if f.held {
                hold(f.bytes, port: port, config: config, now: now, unresolved: &unresolved)
            } else if let arp = ARPMessage(frame: f.bytes) {
                receive(arp, port: port, config: config, now: now)
            } else if let nd = NDMessage(frame: f.bytes) {
                receive(nd, port: port, config: config, now: now)
            } else {
                counters.ignored += 1
            }
        }
        return takeLearnedChanged()
    }

    /// Timers: asks for unresolved `via` gateways, retransmits, probes,
    /// expires; true when the learned neighbours changed.
    public func tick(config: GatewayConfig, now: Double) -> Bool {
        // Ten times a second is enough for timers of a second and more; the
        // routes are scanned no more often than that.
        guard now >= lastTick + Self.tickInterval else { return false }
        lastTick = now
        // Entries of ports that stopped resolving, or now static, go.
        for (address, e) in entries where config.ports[e.port]?.resolve != true || config.neighbors[address] != nil {
            drop(address, e)
        }
        announce(config)
        configuredGateways = []
        for (_, target) in config.routes {
            guard case .via(let gw) = target else { continue }
            configuredGateways.insert(gw)
            guard config.neighbors[gw] == nil, entries[gw] == nil,
                  let id = GatewayConfig.connectedPort(of: gw, in: config.ports.values),
                  let port = config.ports[id], port.resolve,
                  !isOwn(gw, port) else { continue }  // configured gateways are never refused for capacity
            entries[gw] = Entry(port: id, mac: nil, state: .incomplete, confirmed: -.infinity, retryAt: now, asked: 0, held: [])
        }
        for address in Array(entries.keys) {
            guard var e = entries[address], now >= e.retryAt, let port = config.ports[e.port] else { continue }
            switch e.state {
            case .reachable:
                e.state = .probe
                e.asked = 0
                fallthrough
            case .probe, .incomplete:
                if e.asked >= Self.attempts {
                    if e.state == .probe || !configuredGateways.contains(address) {
                        // Gone quiet, or never there: forget it (packets for
                        // it come back here and ask anew).
                        if e.state == .probe { counters.expired += 1 }
                        drop(address, e)
                        continue
                    }
                    // A configured gateway: asked again after a pause.
                    e.state = .failed
                    counters.heldDropped += e.held.count
                    e.held = []
                    e.retryAt = now + Self.failedBackoff
                } else {
                    ask(address, entry: e, port: port)
                    e.asked += 1
                    e.retryAt = now + Self.retransmitTime
                }
            case .failed:
                e.state = .incomplete
                e.asked = 1
                ask(address, entry: e, port: port)
                e.retryAt = now + Self.retransmitTime
            }
            entries[address] = e
        }
        return takeLearnedChanged()
    }

    /// A gratuitous ARP (a request from and for the address, broadcast) or
    /// an unsolicited advertisement (router, override; to all nodes) for each
    /// own address of a resolving port without a stack not yet announced.
    private func announce(_ config: GatewayConfig) {
        var current: Set<PortAddress> = []
        for port in config.ports.values where port.resolve && port.punt == nil {
            for a in port.addresses { current.insert(PortAddress(port: port.id, address: a.address)) }
        }
        announced.formIntersection(current)
        for key in current.subtracting(announced) {
            guard let own = portMACs[key.port] else { continue }
            let frame: [UInt8]
            switch key.address {
            case .v4(let a):
                frame = ARPMessage(operation: ARPMessage.request, senderMAC: own, senderIP: a,
                                   targetMAC: MACAddress((0, 0, 0, 0, 0, 0)), targetIP: a).frame(from: own, to: .broadcast)
            case .v6(let a):
                frame = NDMessage(type: NeighborDiscovery.advertisement, ethernetSource: own, source: a,
                                  destination: IPv6Address.allNodes,
                                  flags: NeighborDiscovery.router | NeighborDiscovery.override, target: a,
                                  linkLayer: own).frame(to: MACAddress(multicast: IPv6Address.allNodes))
            }
            if send(frame, key.port) {
                counters.announcements += 1
                announced.insert(key)
            }
        }
    }

    private func drop(_ address: IPAddress, _ e: Entry) {
        if e.resolved(address) != nil { learnedChanged = true }
        counters.heldDropped += e.held.count
        entries[address] = nil
    }

    private func isOwn(_ address: IPAddress, _ port: PortConfig) -> Bool {
        port.addresses.contains { $0.address == address }
    }

    /// Whether `address` may be a host on `port`'s link: inside one of its
    /// subnets, and nothing the configuration refuses as a neighbor there
    /// (`GatewayConfig.otherHostRefusal`: martians, the gateway's own
    /// addresses, a subnet's network or broadcast address).
    private func onLink(_ address: IPAddress, _ port: PortConfig, _ config: GatewayConfig) -> Bool {
        port.addresses.contains { $0.contains(address) } && config.otherHostRefusal(address, onPort: port.id) == nil
    }

    // MARK: Held packets

    /// The address a packet for `destination` leaving by `port` waits for:
    /// the gateway of the most specific `via` route covering it, unless a
    /// prefix of a port is more specific (then the destination itself). As
    /// in `RouteCompiler`, a route names the same prefix as a port's wins.
    func nextHopAddress(_ destination: IPAddress, config: GatewayConfig) -> IPAddress {
        var best: (length: Int, address: IPAddress) = (-1, destination)
        for (prefix, target) in config.routes where prefix.contains(destination) && prefix.length > best.length {
            if case .via(let gw) = target { best = (prefix.length, gw) } else { best = (prefix.length, destination) }
        }
        for port in config.ports.values {
            for a in port.addresses where a.contains(destination) && a.length > best.length {
                best = (a.length, destination)
            }
        }
        return best.address
    }

    /// `unresolved`: how many addresses asked for for traffic wait for an answer, by port.
    private func hold(_ packet: [UInt8], port: PortConfig, config: GatewayConfig, now: Double, unresolved: inout [UInt16: Int]) {
        guard let destination = Self.destination(of: packet) else { counters.ignored += 1; return }
        let address = nextHopAddress(destination, config: config)
        guard onLink(address, port, config), config.neighbors[address] == nil else { counters.heldDropped += 1; return }
        if var e = entries[address] {
            if let mac = e.mac, e.state == .reachable || e.state == .probe {
                // Resolved since the worker looked (the new routes are on their way).
                transmit(packet, to: mac, port: port)
                return
            }
            guard e.state != .failed, e.held.count < Self.heldPerNeighbor else { counters.heldDropped += 1; return }
            e.held.append(packet)
            counters.held += 1
            entries[address] = e
            return
        }
        // A `via` gateway (its entry not made yet by the tick, or dropped
        // after failed probes) is never refused.
        let gateway = configuredGateways.contains(address)
        guard gateway || entries.count < Self.capacity else { counters.heldDropped += 1; return }
        if !gateway {
            guard unresolved[port.id, default: 0] < Self.unresolvedLimit else {
                counters.heldDropped += 1
                counters.unresolvedLimited += 1
                return
            }
            unresolved[port.id, default: 0] += 1
        }
        let e = Entry(port: port.id, mac: nil, state: .incomplete, confirmed: -.infinity, retryAt: now + Self.retransmitTime,
                      asked: 1, held: [packet], forTraffic: !gateway)
        counters.held += 1
        ask(address, entry: e, port: port)
        entries[address] = e
    }

    /// An IP packet's destination address, or nil when it is not one.
    static func destination(of packet: [UInt8]) -> IPAddress? {
        guard let first = packet.first else { return nil }
        if first >> 4 == 4 && packet.count >= 20 {
            return .v4(IPv4Address(packet[16], packet[17], packet[18], packet[19]))
        }
        if first >> 4 == 6 && packet.count >= 40 { return .v6(IPv6Address(bytes: Array(packet[24..<40]))) }
        return nil
    }

    private func transmit(_ packet: [UInt8], to mac: MACAddress, port: PortConfig) {
        guard packet.count <= port.mtu, let own = portMACs[port.id] else { counters.heldDropped += 1; return }
        let etherType: [UInt8] = packet[0] >> 4 == 4 ? [0x08, 0x00] : [0x86, 0xDD]
        if send(mac.array + own.array + etherType + packet, port.id) { counters.heldSent += 1 } else { counters.heldDropped += 1 }
    }

    /// `address` answered with `mac` on `port`: entry reachable, held packets out.
    private func confirm(_ address: IPAddress, mac: MACAddress, port: PortConfig, now: Double) {
        guard var e = entries[address] else { return }
        let before = e.resolved(address)
        if e.mac != mac || e.state == .incomplete || e.state == .failed { counters.learned += 1 }
        e.port = port.id
        e.mac = mac
        e.state = .reachable
        e.confirmed = now
        e.retryAt = now + Self.reachableTime
        e.asked = 0
        let held = e.held
        e.held = []
        entries[address] = e
        if e.resolved(address) != before { learnedChanged = true }
        for packet in held { transmit(packet, to: mac, port: port) }
    }

    /// A question for one of our addresses also tells us the asker's: an
    /// entry is made for it (as RFC 826 merges), within capacity.
    /// Only where the routes send that address on the link: a learned entry
    /// is a host route, and must not take an address a more specific `via`
    /// route sends elsewhere.
    private func learnAsker(_ address: IPAddress, mac: MACAddress, port: PortConfig, config: GatewayConfig, now: Double) {
        guard onLink(address, port, config), config.neighbors[address] == nil, !mac.isMulticast, !mac.isZero,
              nextHopAddress(address, config: config) == address else { return }
        if entries[address] == nil {
            guard entries.count < Self.capacity else { return }
            entries[address] = Entry(port: port.id, mac: nil, state: .incomplete, confirmed: -.infinity, retryAt: now,
                                     asked: 0, held: [])
        }
        confirm(address, mac: mac, port: port, now: now)
    }

    // MARK: ARP

    private func receive(_ arp: ARPMessage, port: PortConfig, config: GatewayConfig, now: Double) {
        let sender = IPAddress.v4(arp.senderIP)
        let forUs = port.addresses.contains { $0.address == .v4(arp.targetIP) }
        guard !arp.senderMAC.isMulticast, !arp.senderMAC.isZero, !isOwn(sender, port) else { counters.ignored += 1; return }
        if arp.operation == ARPMessage.request && forUs {
            learnAsker(sender, mac: arp.senderMAC, port: port, config: config, now: now)
            if port.punt == nil, let own = portMACs[port.id] {
                let reply = ARPMessage(operation: ARPMessage.reply, senderMAC: own, senderIP: arp.targetIP,
                                       targetMAC: arp.senderMAC, targetIP: arp.senderIP)
                if send(reply.frame(from: own, to: arp.senderMAC), port.id) { counters.answersSent += 1 }
            }
        } else if entries[sender] != nil && config.neighbors[sender] == nil && onLink(sender, port, config) {
            // An answer to our question (or the neighbour speaking again): merge.
            confirm(sender, mac: arp.senderMAC, port: port, now: now)
        } else {
            counters.ignored += 1
        }
    }

    // MARK: Neighbor Discovery

    private func receive(_ nd: NDMessage, port: PortConfig, config: GatewayConfig, now: Double) {
        let target = IPAddress.v6(nd.target)
        if nd.type == NeighborDiscovery.solicitation {
            guard port.addresses.contains(where: { $0.address == target }) else { counters.ignored += 1; return }
            let asker = nd.source.isUnspecified ? nil : nd.linkLayer
            if let mac = asker { learnAsker(.v6(nd.source), mac: mac, port: port, config: config, now: now) }
            guard port.punt == nil, let own = portMACs[port.id] else { return }
            // RFC 4861 §7.2.4: to the asker, solicited; to all nodes when it has
            // no address yet (duplicate address detection), not solicited.
            let toAll = nd.source.isUnspecified
            let answer = NDMessage(type: NeighborDiscovery.advertisement, ethernetSource: own, source: nd.target,
                                   destination: toAll ? IPv6Address.allNodes : nd.source,
                                   flags: NeighborDiscovery.router | NeighborDiscovery.override
                                       | (toAll ? 0 : NeighborDiscovery.solicited),
                                   target: nd.target, linkLayer: own)
            let mac = toAll ? MACAddress(multicast: IPv6Address.allNodes) : (nd.linkLayer ?? nd.ethernetSource)
            if send(answer.frame(to: mac), port.id) { counters.answersSent += 1 }
        } else {
            guard let e = entries[target], config.neighbors[target] == nil, let mac = nd.linkLayer ?? e.mac,
                  !mac.isMulticast, !mac.isZero, onLink(target, port, config) else { counters.ignored += 1; return }
            // RFC 4861 §7.2.5: without the override flag an advertisement does
            // not replace a link-layer address we have.
            if let known = e.mac, known != mac, nd.flags & NeighborDiscovery.override == 0,
               e.state == .reachable || e.state == .probe {
                counters.ignored += 1
                return
            }
            confirm(target, mac: mac, port: port, now: now)
        }
    }

    // MARK: Questions

    /// Asks for `address` on its entry's port: broadcast (solicited-node
    /// multicast) while unresolved, unicast to the known MAC when probing.
    private func ask(_ address: IPAddress, entry e: Entry, port: PortConfig) {
        guard let own = portMACs[port.id] else { return }
        let unicast = e.state == .probe ? e.mac : nil
        switch address {
        case .v4(let target):
            guard let source = Self.source(for: address, port: port), case .v4(let from) = source else { return }
            let question = ARPMessage(operation: ARPMessage.request, senderMAC: own, senderIP: from,
                                      targetMAC: MACAddress((0, 0, 0, 0, 0, 0)), targetIP: target)
            if send(question.frame(from: own, to: unicast ?? .broadcast), port.id) { counters.requestsSent += 1 }
        case .v6(let target):
            guard let source = Self.source(for: address, port: port), case .v6(let from) = source else { return }
            let destination = unicast == nil ? target.solicitedNode : target
            let question = NDMessage(type: NeighborDiscovery.solicitation, ethernetSource: own, source: from,
                                     destination: destination, target: target, linkLayer: own)
            if send(question.frame(to: unicast ?? MACAddress(multicast: destination)), port.id) { counters.requestsSent += 1 }
        }
    }

    /// The port's address to ask from: one whose prefix holds `address`,
    /// else the port's first of the family (IPv6: a link-local one first
    /// when `address` is link-local).
    static func source(for address: IPAddress, port: PortConfig) -> IPAddress? {
        let family = port.addresses.filter { $0.address.isIPv4 == address.isIPv4 }
        return (family.first { $0.contains(address) } ?? family.first)?.address
    }
}
