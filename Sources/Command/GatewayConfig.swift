// The validated configuration state that commands build up: ports, neighbors,
// routes, the crypto engine, SAs and policies. `apply` checks one command
// against the state and either applies all of it or none of it; the data plane
// tables are built from this state elsewhere. The IPsec checks are in
// GatewayConfig+IPsec.swift; every change to the state is made here.

import Packet
import Synchronization

/// A declared port.
public struct PortConfig: Sendable, Hashable {
    public var id: UInt16
    /// The role a `port` line gave, or nil when none did yet.
    public var declaredRole: PortRole?
    /// Interface addresses (host bits kept), in the order they were added.
    public var addresses: [IPPrefix]
    /// The MTU the last `port … mtu M` gave, or nil when none did.
    public var declaredMTU: Int?
    /// The check the last `port … rpf M` gave, or nil when none did.
    public var declaredRPF: ReversePathFilter?
    /// The port whose far end is the local network stack for this port's
    /// frames (`port … punt M`), or nil.
    public var punt: UInt16?
    /// Whether Sluice resolves the port's neighbours itself (ARP, Neighbor
    /// Discovery) and answers for its addresses (`port … resolve on`).
    public var resolve: Bool

    public init(id: UInt16, declaredRole: PortRole? = nil, addresses: [IPPrefix] = [], declaredMTU: Int? = nil,
                declaredRPF: ReversePathFilter? = nil, punt: UInt16? = nil, resolve: Bool = false) {
        self.id = id
        self.declaredRole = declaredRole
        self.addresses = addresses
        self.declaredMTU = declaredMTU
        self.declaredRPF = declaredRPF
        self.punt = punt
        self.resolve = resolve
    }

    /// The port's role; `.unprotected` until a `port` line says otherwise.
    public var role: PortRole { declaredRole ?? .unprotected }

    /// The largest IP packet the port sends: Ethernet's 1500 (RFC 894)
    /// unless `mtu` said otherwise.
    public var mtu: Int { declaredMTU ?? PortMTU.ethernet }

    /// The reverse-path check of the port's arrivals: `off` unless `rpf` said otherwise.
    public var rpf: ReversePathFilter { declaredRPF ?? .off }
}

/// A static neighbor entry.
public struct Neighbor: Sendable, Hashable {
    public var address: IPAddress
    public var mac: MACAddress
    public var port: UInt16

    public init(address: IPAddress, mac: MACAddress, port: UInt16) {
        self.address = address
        self.mac = mac
        self.port = port
    }
}

public struct GatewayConfig: Sendable, Equatable {
    public private(set) var ports: [UInt16: PortConfig] = [:]
    public private(set) var neighbors: [IPAddress: Neighbor] = [:]
    /// Keyed by network prefix (route prefixes never have host bits set).
    public private(set) var routes: [IPPrefix: RouteTarget] = [:]
    /// The engine of SAs that do not name their own.
    public private(set) var cryptoEngine: CryptoEngineChoice = .auto
    /// The SPD classifier.
    public private(set) var spdDriver: SPDDriverChoice = .auto
    public private(set) var sharedSA: SharedSAChoice = .atomic
    /// Both directions in one table; `SAIdentifier` says which SAs may coexist.
    public private(set) var sas: [SAIdentifier: SAConfig] = [:]
    /// Derived from `sas` (kept by `setSA`): the SAs of each SPI, and the
    /// outbound SA of each (reqid, cpu), so that checking one `sa add` or
    /// `sa del` does not scan every SA.
    private var sasBySPI: [SecurityParameterIndex: [SAIdentifier]] = [:]
    private var outboundByReqid: [ReqidSlot: SAIdentifier] = [:]
    struct ReqidSlot: Hashable, Sendable {
        var reqid: UInt32
        var cpu: UInt32?
    }
    /// In effective order: by priority, lower first; equal priorities in the
    /// order they were added. Every `protect` policy names an SA of its
    /// direction that exists.
    public private(set) var policies: [PolicyConfig] = []
    /// Derived from `policies`: their ids, so that an `sp add` does not scan
    /// every policy to find its id free.
    private(set) var policyIDs: Set<PolicyID> = []
    /// Which port each interface address is on; derived from `ports`.
    private var addressOwners: [IPAddress: UInt16] = [:]
    /// The id the next `sp add` without `id` gets: above every id used so far,
    /// so that within one run an id is never given to a second policy. A
    /// config loaded from `configText` goes on from its largest id.
    private var nextPolicyID: UInt64 = 1
    /// Every SA change since the journal (re)started, with a serial unique in
    /// the process: a compiler that compiled an earlier state of this same
    /// configuration looks at only the SAs changed since (see `IPsecCompiler`).
    public private(set) var saJournal: [(id: SAIdentifier, serial: UInt64)] = []
    /// Changed (to a new process-unique serial) by every change that can
    /// affect IPsec other than an SA's: policies, engine, SPD driver, shared-sa.
    public private(set) var ipsecRevision: UInt64 = GatewayConfig.nextSerial()
    static let serials = Atomic<UInt64>(0)
    static func nextSerial() -> UInt64 { serials.add(1, ordering: .relaxed).newValue }

    /// Starts the SA journal afresh (it grows by one entry per SA change).
    public mutating func restartJournal() {
        saJournal = []
        ipsecRevision = Self.nextSerial()
    }

    public init() {}

    /// Parses `text` and applies every command in line order, stopping at the
    /// first syntax or semantic error.
    public static func load(text: String, name: String) throws(CommandError) -> GatewayConfig {
        var config = GatewayConfig()
        for (index, line) in Lexer.lines(text).enumerated() {
            let location = SourceLocation(file: name, line: index + 1, column: 1)
            if let command = try CommandParser.parseLine(line, location: location) {
                try config.apply(command)
            }
        }
        return config
    }

    /// Applies one command. All or nothing: every check runs before the first
    /// change, so on error `self` is unchanged. Returns the id an `sp add`
    /// gave its policy (nil for every other command).
    @discardableResult
    public mutating func apply(_ c: LocatedCommand) throws(CommandError) -> PolicyID? {
        switch c.command {
        case let .port(id, role, addresses, mtu, rpf, punt, resolve):
            try applyPort(id: id, role: role, addresses: addresses, mtu: mtu, rpf: rpf, punt: punt, resolve: resolve, c)
        case let .neighbor(address, mac, port):
            try applyNeighbor(Neighbor(address: address, mac: mac, port: port), c)
        case let .routeAdd(prefix, target):
            try applyRouteAdd(prefix: prefix, target: target, c)
        case let .routeDel(prefix):
            try checkRoutePrefix(prefix, c)
            guard routes[prefix] != nil else {
                throw CommandError("no route \(prefix)", at: c.location(of: .prefix))
            }
            routes[prefix] = nil
        case let .cryptoEngine(engine):
            cryptoEngine = engine
            ipsecRevision = Self.nextSerial()
        case let .spdDriver(driver):
            spdDriver = driver
            ipsecRevision = Self.nextSerial()
        case let .sharedSA(mode):
            sharedSA = mode
            ipsecRevision = Self.nextSerial()
        case let .saAdd(sa):
            try checkSAAdd(sa, c)
            setSA(sa.identifier, sa)
        case let .saUpdate(sa):
            guard let old = sas[sa.identifier] else {
                throw CommandError("no SA \(sa.identifier) to update (sa add creates one)", at: c.location(of: .spi))
            }
            guard old.direction == sa.direction else {
                throw CommandError("SA \(sa.identifier) is dir \(old.direction.rawValue); update cannot change the direction",
                                   at: c.location(of: .direction))
            }
            // Checked as an add among the other SAs, so every rule still
            // holds (in place: no copy of the configuration per update).
            try checkSAAdd(sa, c, replacing: sa.identifier)
            setSA(sa.identifier, sa)
        case let .saDel(spi, destination):
            setSA(try saToDelete(spi: spi, destination: destination, c), nil)
        case let .spAdd(id, selector, priority, action):
            let (policy, index) = try checkPolicyAdd(id: id, selector: selector, priority: priority, action: action,
                                                     nextID: nextPolicyID, c)
            policies.insert(policy, at: index)
            policyIDs.insert(policy.id)
            ipsecRevision = Self.nextSerial()
            nextPolicyID = max(nextPolicyID, UInt64(policy.id.rawValue) + 1)
            return policy.id
        case let .spDel(reference):
            policyIDs.remove(policies.remove(at: try policyToDelete(reference, c)).id)
            ipsecRevision = Self.nextSerial()
        }
        return nil
    }

    /// What an SA command changed, for `revert`: the SA and how it was.
    public struct SAUndo: Sendable {
        fileprivate let id: SAIdentifier
        fileprivate let old: SAConfig?
        fileprivate let journalCount: Int
    }

    /// Applies `c` when it is `sa add`, `sa update` or `sa del` (all or
    /// nothing, as `apply`) and returns what `revert` needs to put the SA
    /// back; nil, with nothing applied, for any other command. Such a
    /// command changes one SA (and the indexes and journal), so a caller can
    /// change a configuration in place instead of a copy of it, whose SA
    /// tables a change would copy whole.
    public mutating func applySA(_ c: LocatedCommand) throws(CommandError) -> SAUndo? {
        let id: SAIdentifier
        switch c.command {
        case let .saAdd(sa), let .saUpdate(sa): id = sa.identifier
        case let .saDel(spi, destination): id = try saToDelete(spi: spi, destination: destination, c)
        default: return nil
        }
        let undo = SAUndo(id: id, old: sas[id], journalCount: saJournal.count)
        try apply(c)
        return undo
    }

    /// Puts the configuration back as it was before `applySA`: the SA, its
    /// indexes, and the journal (its entry taken out again: a compiler that
    /// compiled the change without committing it starts from its committed
    /// state anyway, and sees nothing changed).
    public mutating func revert(_ undo: SAUndo) {
        setSA(undo.id, undo.old, journal: false)
        if saJournal.count > undo.journalCount { saJournal.removeLast(saJournal.count - undo.journalCount) }
    }

    /// Removes every policy `remove` picks in one pass (`flush`; deleting
    /// them one by one shifts the list once per policy). Returns how many.
    public mutating func removePolicies(where remove: (PolicyConfig) -> Bool) -> Int {
        let before = policies.count
        policies.removeAll(where: remove)
        guard policies.count != before else { return 0 }
        policyIDs = Set(policies.map(\.id))
        ipsecRevision = Self.nextSerial()
        return before - policies.count
    }

    /// Sets or removes an SA, keeping the indexes (and the journal, unless
    /// `journal` is false).
    private mutating func setSA(_ id: SAIdentifier, _ sa: SAConfig?, journal: Bool = true) {
        if let old = sas[id] {
            sasBySPI[id.spi]?.removeAll { $0 == id }
            if sasBySPI[id.spi]?.isEmpty == true { sasBySPI[id.spi] = nil }
            if old.direction == .outbound, let reqid = old.reqid { outboundByReqid[ReqidSlot(reqid: reqid, cpu: old.cpu)] = nil }
        }
        sas[id] = sa
        if journal { saJournal.append((id, Self.nextSerial())) }
        if let sa {
            sasBySPI[id.spi, default: []].append(id)
            if sa.direction == .outbound, let reqid = sa.reqid { outboundByReqid[ReqidSlot(reqid: reqid, cpu: sa.cpu)] = id }
        }
    }

    /// The SAs with `spi`.
    public func sas(spi: SecurityParameterIndex) -> [SAConfig] { (sasBySPI[spi] ?? []).compactMap { sas[$0] } }

    /// The outbound SA of `reqid` for `cpu` (nil: the fallback).
    public func outboundSA(reqid: UInt32, cpu: UInt32?) -> SAConfig? {
        outboundByReqid[ReqidSlot(reqid: reqid, cpu: cpu)].flatMap { sas[$0] }
    }

    /// Equal configurations hold the same ports, neighbors, routes, engine, SAs
    /// and policies (ids and order included). Which id the next `sp add`
    /// would assign is not compared: it is not part of the state that
    /// `configText` writes.
    public static func == (a: GatewayConfig, b: GatewayConfig) -> Bool {
        a.ports == b.ports && a.neighbors == b.neighbors && a.routes == b.routes && a.cryptoEngine == b.cryptoEngine
            && a.spdDriver == b.spdDriver && a.sharedSA == b.sharedSA
            && a.sas == b.sas && a.policies == b.policies
    }

    /// The engine `sa` uses: its own, or the global one.
    public func effectiveCryptoEngine(of sa: SAConfig) -> CryptoEngineChoice {
        sa.cryptoEngine ?? cryptoEngine
    }

    /// The policy with this id, if any.
    public func policy(id: PolicyID) -> PolicyConfig? {
        policyIDs.contains(id) ? policies.first { $0.id == id } : nil
    }

    private mutating func applyPort(id: UInt16, role: PortRole?, addresses: [IPPrefix], mtu: Int?,
                                    rpf: ReversePathFilter?, punt: PuntSetting?, resolve: ResolveSetting?,
                                    _ c: LocatedCommand) throws(CommandError) {
        guard CommandParser.portIDs.contains(id) else {
            throw CommandError(ValueText.badPort(String(id)), at: c.location(of: .port))
        }
        if let owner = puntOwner(of: id), role != nil || !addresses.isEmpty || resolve == .on {
            throw CommandError("port \(id) leads to the local stack for port \(owner) (port \(owner) punt \(id)): "
                               + "it takes no role, address or resolve",
                               at: c.location(of: role != nil ? .role : (addresses.isEmpty ? .resolve : .address(0))))
        }
        if case .port(let target) = punt { try checkPuntTarget(target, of: id, c) }
        if let role, let declared = ports[id]?.declaredRole, declared != role {
            throw CommandError("port \(id) already has role \(declared)", at: c.location(of: .role))
        }
        var added: Set<IPAddress> = []
        for (index, prefix) in addresses.enumerated() {
            let owner = addressOwners[prefix.address] ?? (added.contains(prefix.address) ? id : nil)
            if let owner {
                throw CommandError("duplicate address \(prefix.address): already assigned to port \(owner)",
                                   at: c.location(of: .address(index)))
            }
            if let why = Self.notAHostAddress(prefix.address) ?? Self.notAHostAddress(prefix) {
                throw CommandError("port \(id) cannot have address \(prefix): \(prefix.address) is \(why)",
                                   at: c.location(of: .address(index)))
            }
            if let neighbor = neighbors[prefix.address] {
                throw CommandError("port \(id) cannot have address \(prefix.address): it is a neighbor's "
                                   + "(on port \(neighbor.port) with lladdr \(neighbor.mac))",
                                   at: c.location(of: .address(index)))
            }
            if let route = routes.first(where: { $0.value == .via(prefix.address) }) {
                throw CommandError("port \(id) cannot have address \(prefix.address): route \(route.key) goes via it",
                                   at: c.location(of: .address(index)))
            }
            // Nor a subnet whose network or broadcast address is already a
            // neighbor on this port, or a next hop this port would then be
            // the link of (the other order is refused at those).
            var trial = ports
            trial[id, default: PortConfig(id: id)].addresses.append(prefix)
            let others = neighbors.values.filter { $0.port == id }.map { ($0.address, "neighbor \($0.address)") }
                + routes.compactMap { route in
                    if case .via(let nexthop) = route.value, Self.connectedPort(of: nexthop, in: trial.values) == id {
                        (nexthop, "the next hop of route \(route.key)")
                    } else { nil }
                }
            for (address, what) in others.sorted(by: { $0.1 < $1.1 }) where prefix.contains(address) {
                if let why = Self.notAHostAddress(IPPrefix(address: address, length: prefix.length)!) {
                    throw CommandError("port \(id) cannot have address \(prefix): \(what) would be \(why)",
                                       at: c.location(of: .address(index)))
                }
            }
            added.insert(prefix.address)
        }

        var port = ports[id] ?? PortConfig(id: id)
        if let role { port.declaredRole = role }
        port.addresses += addresses
        if let mtu {
            guard PortMTU.accepted.contains(mtu) else {
                throw CommandError("bad MTU \(mtu): expected \(PortMTU.accepted.lowerBound)…\(PortMTU.accepted.upperBound)",
                                   at: c.location(of: .mtu))
            }
            port.declaredMTU = mtu
        }
        if let rpf { port.declaredRPF = rpf }
        switch punt {
        case .off?: port.punt = nil
        case .port(let target)?: port.punt = target
        case nil: break
        }
        if let resolve { port.resolve = resolve == .on }
        // RFC 8200 §5: every link that carries IPv6 has an MTU of 1280 or more.
        if port.mtu < PortMTU.ipv6Minimum, let v6 = ipv6Use(of: port) {
            throw CommandError("port \(id) has \(v6), which needs an MTU of at least \(PortMTU.ipv6Minimum) (RFC 8200), not \(port.mtu)",
                               at: c.location(of: mtu != nil ? .mtu : .port))
        }
        ports[id] = port
        for prefix in addresses { addressOwners[prefix.address] = id }
    }

    /// What makes `port` carry IPv6, for the RFC 8200 MTU check: an IPv6
    /// address, neighbor or route out of it; nil when nothing does. (Packets
    /// too big for a link below 1280 could never be sent on it: a Packet Too
    /// Big may not ask the sender for less than 1280.)
    private func ipv6Use(of port: PortConfig) -> String? {
        if let a = port.addresses.first(where: { !$0.address.isIPv4 }) { return "IPv6 address \(a.address)" }
        if let n = neighbors.values.filter({ $0.port == port.id && !$0.address.isIPv4 }).map(\.address.description).min() {
            return "IPv6 neighbor \(n)"
        }
        if let r = routes.filter({ $0.value == .port(port.id) && !$0.key.address.isIPv4 }).map(\.key.description).min() {
            return "IPv6 route \(r)"
        }
        return nil
    }

    /// Refuses IPv6 `what` on `port` when its MTU is below IPv6's minimum.
    private func checkIPv6MTU(port id: UInt16, _ what: String, _ c: LocatedCommand, at field: CommandField) throws(CommandError) {
        guard let port = ports[id], port.mtu < PortMTU.ipv6Minimum else { return }
        throw CommandError("\(what) needs port \(id) to have an MTU of at least \(PortMTU.ipv6Minimum) (RFC 8200), not \(port.mtu)",
                           at: c.location(of: field))
    }

    private mutating func applyNeighbor(_ neighbor: Neighbor, _ c: LocatedCommand) throws(CommandError) {
        try checkPortDeclared(neighbor.port, c)
        if !neighbor.address.isIPv4 {
            try checkIPv6MTU(port: neighbor.port, "IPv6 neighbor \(neighbor.address)", c, at: .address(0))
        }
        if neighbor.mac.isMulticast {
            throw CommandError("bad MAC address '\(neighbor.mac)': a neighbor needs a unicast address, not multicast",
                               at: c.location(of: .mac))
        }
        if neighbor.mac.isZero {
            throw CommandError("bad MAC address '\(neighbor.mac)': a neighbor cannot have the all-zero address",
                               at: c.location(of: .mac))
        }
        if let why = otherHostRefusal(neighbor.address, onPort: neighbor.port) {
            throw CommandError("bad neighbor \(neighbor.address): it is \(why)", at: c.location(of: .address(0)))
        }
        if let existing = neighbors[neighbor.address] {
            throw CommandError("duplicate neighbor \(neighbor.address): already on port \(existing.port) "
                               + "with lladdr \(existing.mac)", at: c.location(of: .address(0)))
        }
        neighbors[neighbor.address] = neighbor
    }

    private mutating func applyRouteAdd(prefix: IPPrefix, target: RouteTarget,
                                        _ c: LocatedCommand) throws(CommandError) {
        try checkRoutePrefix(prefix, c)
        switch target {
        case .via(let nexthop):
            if nexthop.isIPv4 != prefix.address.isIPv4 {
                throw CommandError("nexthop \(nexthop) is \(Self.family(nexthop)) but prefix \(prefix) is "
                                   + Self.family(prefix.address), at: c.location(of: .nexthop))
            }
            if let why = otherHostRefusal(nexthop, onPort: Self.connectedPort(of: nexthop, in: ports.values)) {
                throw CommandError("bad nexthop \(nexthop): it is \(why)", at: c.location(of: .nexthop))
            }
        case .port(let port):
            try checkPortDeclared(port, c)
            if !prefix.address.isIPv4 { try checkIPv6MTU(port: port, "IPv6 route \(prefix)", c, at: .prefix) }
        }
        if routes[prefix] != nil {
            throw CommandError("route \(prefix) already exists; delete it first", at: c.location(of: .prefix))
        }
        routes[prefix] = target
    }

    private func checkPortDeclared(_ port: UInt16, _ c: LocatedCommand) throws(CommandError) {
        guard ports[port] != nil else {
            throw CommandError("unknown port \(port): declare it with 'port \(port) ...' first",
                               at: c.location(of: .port))
        }
        if let owner = puntOwner(of: port) {
            throw CommandError("port \(port) leads to the local stack for port \(owner) (port \(owner) punt \(port)): "
                               + "nothing is routed to it", at: c.location(of: .port))
        }
    }

    /// The port whose frames for the local stack go to `port` (`port N punt
    /// port`), if any.
    public func puntOwner(of port: UInt16) -> UInt16? {
        ports.values.first { $0.punt == port }?.id
    }

    /// `port id punt target`: the target is another declared port with no
    /// role, address, routes or neighbors of its own, serving no other port,
    /// and not punting itself; `id` is not such a port.
    private func checkPuntTarget(_ target: UInt16, of id: UInt16, _ c: LocatedCommand) throws(CommandError) {
        func refuse(_ why: String) -> CommandError {
            CommandError("cannot punt port \(id) to port \(target): \(why)", at: c.location(of: .punt))
        }
        if target == id { throw refuse("a port cannot be its own local stack") }
        guard let port = ports[target] else { throw refuse("unknown port \(target): declare it with 'port \(target)' first") }
        if let owner = puntOwner(of: target), owner != id { throw refuse("port \(target) serves port \(owner) already") }
        if let owner = puntOwner(of: id) { throw refuse("port \(id) is the local stack's port for port \(owner)") }
        if port.punt != nil { throw refuse("port \(target) punts to port \(port.punt!) itself") }
        if port.declaredRole != nil || !port.addresses.isEmpty || port.resolve {
            throw refuse("port \(target) has a role, an address or resolve on")
        }
        if neighbors.values.contains(where: { $0.port == target }) || routes.values.contains(.port(target)) {
            throw refuse("port \(target) has neighbors or routes")
        }
    }

    /// The parser already refuses host bits; this covers commands built in code.
    private func checkRoutePrefix(_ prefix: IPPrefix, _ c: LocatedCommand) throws(CommandError) {
        if prefix.hasHostBits {
            throw CommandError(ValueText.hostBitsSet(prefix, text: prefix.description), at: c.location(of: .prefix))
        }
    }

    static func family(_ address: IPAddress) -> String { address.isIPv4 ? "IPv4" : "IPv6" }

    /// The prefixes no host on a link has an address in, and what each is
    /// (RFC 1812 §5.3.7, RFC 6890, RFC 4291 §2.5–2.7): with IPv6
    /// link-local, which is every link's own, the destinations no router
    /// forwards (`RouteCompiler.martianDestinations`).
    public static let noHostPrefixes: [(prefix: IPPrefix, what: String)] = [
        ("0.0.0.0/8", "in 0.0.0.0/8 (this host on this network)"), ("127.0.0.0/8", "a loopback address"),
        ("224.0.0.0/4", "a multicast address"), ("255.255.255.255/32", "the limited broadcast address"),
        ("::/128", "the unspecified address"), ("::1/128", "the loopback address"), ("ff00::/8", "a multicast address"),
    ].map { (IPPrefix($0.0)!, $0.1) }

    /// Why `address` cannot be a host's address on a link (a port's own, a
    /// neighbor, a next hop), or nil (`noHostPrefixes`).
    public static func notAHostAddress(_ address: IPAddress) -> String? {
        noHostPrefixes.first { $0.prefix.contains(address) }?.what
    }

    /// Why an interface address cannot be `prefix.address` within `prefix`:
    /// an IPv4 subnet's network or broadcast address (subnets of /30 and
    /// wider; /31 links have neither, RFC 3021).
    public static func notAHostAddress(_ prefix: IPPrefix) -> String? {
        guard case .v4(let a) = prefix.address, prefix.length <= 30 else { return nil }
        let host = prefix.length == 0 ? UInt32.max : ~(UInt32.max << UInt32(32 - prefix.length))
        if a.value & host == 0 { return "the network address of \(prefix.network)" }
        if a.value & host == host { return "the broadcast address of \(prefix.network)" }
        return nil
    }

    /// Why `address` cannot be another host's on the link of port `link` (a
    /// neighbor there, or a next hop `link` is the connected port of), or
    /// nil: a martian, one of the ports' own addresses, or the network or
    /// broadcast address of one of `link`'s subnets. Another port's subnets
    /// do not matter: a peer on a /31 may lie inside a wider prefix elsewhere.
    public func otherHostRefusal(_ address: IPAddress, onPort link: UInt16?) -> String? {
        if let why = Self.notAHostAddress(address) { return why }
        if let owner = addressOwners[address] { return "port \(owner)'s own address" }
        guard let link, let port = ports[link] else { return nil }
        for prefix in port.addresses where prefix.contains(address) {
            if let why = Self.notAHostAddress(IPPrefix(address: address, length: prefix.length)!) {
                return why + " (port \(port.id))"
            }
        }
        return nil
    }

    /// The port whose link a next hop `address` is on: the one with the
    /// longest address prefix that holds it (the lowest port id of equals),
    /// as longest-prefix match finds its connected route; nil when none does.
    public static func connectedPort(of address: IPAddress, in ports: some Sequence<PortConfig>) -> UInt16? {
        var best: (length: Int, id: UInt16)?
        for port in ports {
            for prefix in port.addresses where prefix.contains(address) {
                if let b = best, prefix.length < b.length || prefix.length == b.length && port.id > b.id { continue }
                best = (prefix.length, port.id)
            }
        }
        return best?.id
    }
}
