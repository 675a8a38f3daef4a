// What the control socket's commands do: the whole configuration language
// (applied to the live state, compiled and published while traffic flows),
// plus the runtime verbs. A change is all or nothing: it is applied to a
// copy, compiled and published, and only then does the copy become the
// state; on any error the state is exactly what it was.

import CShims
import Command
import Dataplane
import Glibc
import Packet

public final class ControlSession {
    public private(set) var config: GatewayConfig
    let gateway: Gateway
    let ipsec: IPsecCompiler
    let portMACs: [UInt16: MACAddress]
    /// ARP and Neighbor Discovery for `resolve on` ports.
    public let neighbors: NeighborAgent
    public static let version = "sluice 0.4 (control protocol 1)"

    /// A client's `begin` … `commit`: the configuration the batch builds and
    /// whether a line of it failed.
    final class Batch: ControlServer.Batch {
        var config: GatewayConfig
        /// `changes` when the batch began.
        let base: UInt64
        var lines = 0
        var failed: String? = nil
        /// Another change was installed since `begin`: `commit` can only
        /// fail (`conflict`), so the copy (with every key it held) is let go
        /// and further lines are refused at once.
        var stale = false
        init(_ config: GatewayConfig, base: UInt64) { self.config = config; self.base = base }
        /// The first failure is the one reported.
        func fail(_ reason: String) { failed = failed ?? reason }
    }

    /// The batches clients hold open (weakly: a client that leaves frees its own).
    private var openBatches: [WeakBatch] = []
    private struct WeakBatch { weak var batch: Batch? }

    /// After a change: every open batch begun before it is stale.
    private func staleOpenBatches() {
        openBatches.removeAll { $0.batch == nil }
        for entry in openBatches {
            guard let batch = entry.batch, !batch.stale, batch.base != changes else { continue }
            batch.stale = true
            batch.config = config
        }
        openBatches.removeAll { $0.batch?.stale ?? true }
    }

    /// The reply to a line for a stale batch.
    private func conflict(_ batch: Batch) -> ControlError {
        ControlError("conflict", "the configuration changed since begin (\(changes &- batch.base) change(s) by other commands); nothing applied: begin again")
    }

    /// The error for `what`, which a batch may not hold; it fails the
    /// client's batch, so that `commit` applies nothing.
    private func refusedInBatch(_ client: ControlServer.Client, _ what: String, _ message: String) -> ControlError {
        (client.batch as? Batch)?.fail("\(what) inside a batch")
        return ControlError("batch", message)
    }

    /// `portMACs`: the ports' MACs, as the PMDs report them unless given.
    public init(config: GatewayConfig, gateway: Gateway, ipsec: IPsecCompiler, portMACs: [UInt16: MACAddress]? = nil) {
        self.config = config
        self.gateway = gateway
        self.ipsec = ipsec
        self.portMACs = portMACs ?? Dictionary(uniqueKeysWithValues: gateway.ports.map { ($0.info.id, $0.info.mac) })
        neighbors = NeighborAgent(portMACs: self.portMACs) { [gateway] frame, port in gateway.agentSend(frame, port: port) }
        publishLists()
    }

    /// The neighbour agent's turn (the control loop calls it every
    /// iteration): what the workers handed it, then its timers; the routes
    /// are rebuilt when the neighbours it learned changed.
    public func serviceNeighbors(now: Double) {
        let frames = gateway.agentReceive()
        guard !frames.isEmpty || config.ports.values.contains(where: \.resolve) || !neighbors.entries.isEmpty else { return }
        let handled = neighbors.handle(frames, config: config, now: now)
        let ticked = neighbors.tick(config: config, now: now)
        guard handled || ticked else { return }
        do {
            try gateway.publish(routes: RouteCompiler.compile(config, portMACs: portMACs, learned: neighbors.learned),
                                ports: RouteCompiler.ports(config))
        } catch {
            gateway.log("cannot publish the routes of learned neighbours: \(error.message)")
        }
    }

    /// `neighbor list`: static entries and what the agent learned or is asking for.
    private func neighborList() -> String {
        let configured = config.neighbors.values.sorted { IPAddress.precedes($0.address, $1.address) }.map {
            "{\"address\":\"\($0.address)\",\"lladdr\":\"\($0.mac)\",\"port\":\($0.port),\"state\":\"static\"}"
        }
        let dynamic = neighbors.entries.sorted { IPAddress.precedes($0.key, $1.key) }.map { address, e in
            "{\"address\":\"\(address)\",\"lladdr\":\(e.mac.map { "\"\($0)\"" } ?? "null"),\"port\":\(e.port),"
                + "\"state\":\"\(e.state.rawValue)\",\"held\":\(e.held.count)}"
        }
        return ControlReply.ok([("neighbors", "[" + (configured + dynamic).joined(separator: ",") + "]")])
    }

    /// When the lists were last handed to telemetry, what that cost, and
    /// whether they changed since.
    private var listsPublishedAt = -Double.infinity
    private var listsCost = 0.0
    private var listsStale = false

    /// Hands the lists to telemetry when they changed: at most twice a second,
    /// and never more than 5% of the control thread's time (writing 100,000
    /// SA lines takes half a second; an SA change must not wait for it). The
    /// control loop calls it every iteration; `install` only marks them stale.
    public func refreshLists(now: Double) {
        guard listsStale, now - listsPublishedAt >= max(0.5, 20 * listsCost) else { return }
        publishLists()
    }

    /// Hands the SA and policy lists to DPDK telemetry (`/sluice/sa/list`,
    /// `/sluice/sp/list`), keys redacted.
    public func publishLists() {
        let start = monotonicSeconds()
        defer { listsCost = monotonicSeconds() - start }
        listsPublishedAt = start
        listsStale = false
        let sas = config.sas.keys.sorted().map { Command.saAdd(config.sas[$0]!).redactedDescription }.joined(separator: "\n")
        let policies = config.policies.map {
            Command.spAdd(id: $0.id, selector: $0.selector, priority: $0.priority, action: $0.action).description
        }.joined(separator: "\n")
        sl_telemetry_set_lists(sas, policies)
    }

    public static let help = [
        "any line of the configuration language (port, neighbor, route, sa, sp, crypto-engine, spd driver, shared-sa)",
        "begin | commit | abort", "show config", "reload FILE",
        "sa list | sa get spi 0xN [dst B] | sa allocspi [cpu K] [src A dst B]", "sp list | sp get id N", "flush sa | flush sp",
        "neighbor list",
        "stats [port N | core N | sa 0xSPI [dst B]]", "monitor", "version", "help",
    ]

    /// Takes the SAs a hard lifetime retired (`IPsecCompiler.expire`,
    /// `checkTimes`) out of the data path: installs the configuration again,
    /// which the compiler now compiles without them. nil when no removal is
    /// pending; else the SAs taken out, or why the install failed (a stalled
    /// worker's full command ring), in which case the removal stays pending
    /// and the control loop calls again at its next lifetime check: an
    /// expired SA must not go on carrying traffic (time limits have no other
    /// enforcement; packet and byte limits are enforced by the workers too).
    public func removeExpiredSAs() -> Result<[SAIdentifier], ControlError>? {
        guard ipsec.removalPending else { return nil }
        do throws(ControlError) {
            try install(config)
            return .success(ipsec.expiredSAs)
        } catch {
            return .failure(error)
        }
    }

    /// Installs `next` as the running configuration: routes (when they or
    /// what they are built from changed) and IPsec tables compiled, then
    /// published. Nothing is published unless everything compiled, and the
    /// forwarding snapshot is built before and published after the IPsec
    /// tables (whose publish is all or nothing), so a refused change leaves
    /// the routes as they were too.
    public func install(_ next: GatewayConfig) throws(ControlError) {
        let routesChanged = next.ports != config.ports || next.neighbors != config.neighbors || next.routes != config.routes
        if routesChanged { try Self.checkPortsKept(from: config, to: next) }
        try publish(next, routesChanged: routesChanged)
        config = next
        installed()
    }

    /// Compiles `next`'s IPsec tables (and its routes when `routesChanged`)
    /// and publishes them, the IPsec tables first; the compiler adopts them
    /// only once published.
    private func publish(_ next: GatewayConfig, routesChanged: Bool) throws(ControlError) {
        do {
            let routes = routesChanged
                ? try gateway.prepareForwarding(routes: RouteCompiler.compile(next, portMACs: portMACs, learned: neighbors.learned),
                                                ports: RouteCompiler.ports(next))
                : nil
            let tables = try ipsec.compile(next, workerLcores: gateway.workerLcores)
            try gateway.publish(ipsec: tables)
            if let routes { gateway.publish(routes) }
            ipsec.commit()
        } catch let e as IPsecConfigError {
            throw ControlError("install", e.message)
        } catch let e as DataplaneError {
            throw ControlError("install", e.message)
        } catch {
            throw ControlError("install", "\(error)")
        }
    }

    /// After the running configuration changed.
    private func installed() {
        // The SA journal lets the compiler look at only what changed; keep it short.
        if config.saJournal.count > 4096 {
            config.restartJournal()
            ipsec.adoptJournal(of: config)
        }
        listsStale = true
    }

    /// The ports and their roles are the data plane's from start-up (each
    /// worker's queues and how it treats a port's packets); a change may
    /// not add or remove a port or change a role.
    static func checkPortsKept(from running: GatewayConfig, to next: GatewayConfig) throws(ControlError) {
        if next.ports.keys.sorted() != running.ports.keys.sorted() {
            throw ControlError("install", "the ports would be \(next.ports.keys.sorted()), the running ones are \(running.ports.keys.sorted()); ports change only at start-up")
        }
        for (id, port) in running.ports.sorted(by: { $0.key < $1.key }) where next.ports[id]?.role != port.role {
            throw ControlError("install", "port \(id) runs as \(port.role.rawValue); a port's role changes only at start-up")
        }
    }

    /// Changes clients made to the configuration (commands, batches,
    /// flushes, reloads): a batch whose `begin` saw another number would
    /// undo what came between, so its `commit` is refused.
    private var changes: UInt64 = 0

    /// Installs a client's change; the reply's fields for what the compiler
    /// warned about (an SA it left out of the data plane, say), if anything.
    private func change(to next: GatewayConfig) throws(ControlError) -> [(String, String)] {
        try install(next)
        return changed()
    }

    /// Installs an SA command applied to the running configuration in
    /// place (`GatewayConfig.applySA`); a refused install puts the SA back.
    /// A copy of the configuration would copy its SA tables whole: tens of
    /// milliseconds per `sa add` or `sa del` on top of 100,000 SAs.
    private func changeInPlace(_ undo: GatewayConfig.SAUndo) throws(ControlError) -> [(String, String)] {
        do {
            try publish(config, routesChanged: false)
        } catch {
            config.revert(undo)
            throw error
        }
        installed()
        return changed()
    }

    /// After a client's change was installed: the reply's warnings.
    private func changed() -> [(String, String)] {
        changes &+= 1
        staleOpenBatches()
        return Self.warningFields(ipsec.warnings)
    }

    /// At most this many warnings in one reply (a change to 100,000 SAs
    /// could warn about each); the rest are counted.
    static let warningsPerReply = 16

    /// `("warnings", [...])` when there are warnings: the first
    /// `warningsPerReply`, then how many more.
    static func warningFields(_ warnings: [String]) -> [(String, String)] {
        guard !warnings.isEmpty else { return [] }
        var shown = warnings.prefix(warningsPerReply).map(ControlReply.quote)
        if warnings.count > warningsPerReply {
            shown.append(ControlReply.quote("… and \(warnings.count - warningsPerReply) more"))
        }
        return [("warnings", "[" + shown.joined(separator: ",") + "]")]
    }

    /// One line from `client`; the reply lines.
    public func handle(_ client: ControlServer.Client, _ line: String) -> [String] {
        // As in the command language: `#` starts a comment, even inside a
        // word, and any whitespace separates words.
        let words = CommandText.words(Substring(line)).map(String.init)
        guard let verb = words.first else { return [ControlReply.ok()] }
        do {
            switch (verb, words.dropFirst().first) {
            case ("begin", nil):
                guard client.batch == nil else { throw refusedInBatch(client, "begin", "already inside begin … commit") }
                let batch = Batch(config, base: changes)
                client.batch = batch
                openBatches.removeAll { $0.batch == nil }
                openBatches.append(WeakBatch(batch: batch))
                return [ControlReply.ok([("batch", "true")])]
            case ("abort", nil):
                guard client.batch != nil else { throw ControlError("batch", "no batch to abort") }
                client.batch = nil
                return [ControlReply.ok()]
            case ("commit", nil):
                guard let batch = client.batch as? Batch else { throw ControlError("batch", "no batch to commit (begin first)") }
                client.batch = nil
                guard batch.base == changes else { throw conflict(batch) }
                if let failed = batch.failed {
                    throw ControlError("batch_failed", "nothing applied: \(failed)")
                }
                let warnings = try change(to: batch.config)
                return [ControlReply.ok([("applied", String(batch.lines))] + warnings)]
            case ("show", "config"):
                return [ControlReply.ok([("config", ControlReply.quote(config.configText))])]
            case ("version", nil):
                return [ControlReply.ok([("version", ControlReply.quote(Self.version))])]
            case ("help", nil):
                return [ControlReply.ok([("commands", "[" + Self.help.map(ControlReply.quote).joined(separator: ",") + "]")])]
            case ("monitor", nil):
                guard client.startMonitoring() else {
                    throw ControlError("too_many_monitors", "\(client.server.limits.monitors) clients are monitoring already")
                }
                return [ControlReply.ok([("monitor", "true")])]
            case ("stats", _):
                return [try stats(Array(words.dropFirst()))]
            case ("neighbor", "list") where words.count == 2:
                return [neighborList()]
            case ("sa", "list"), ("sp", "list"), ("sa", "get"), ("sp", "get"):
                return [try query(words)]
            case ("flush", let what?) where words.count == 2:
                return [try flush(what, client)]
            case ("sa", "allocspi"):
                return [try allocateSPI(Array(words.dropFirst(2)))]
            case ("reload", let file?) where words.count == 2:
                return [try reload(file, client)]
            default:
                return [try apply(line, client)]
            }
        } catch let error as ControlError {
            return [ControlReply.error(error.code, error.message)]
        } catch {
            return [ControlReply.error("internal", "\(error)")]
        }
    }

    /// A configuration-language line: into the client's batch, or applied now.
    private func apply(_ line: String, _ client: ControlServer.Client) throws(ControlError) -> String {
        if let batch = client.batch as? Batch, batch.stale { throw conflict(batch) }
        let located: LocatedCommand
        do {
            guard let c = try Self.parse(line) else { return ControlReply.ok() }
            located = c
        } catch {
            if let batch = client.batch as? Batch { batch.failed = batch.failed ?? error.message }
            throw ControlError("syntax", error.message)
        }
        if let batch = client.batch as? Batch {
            // A bound on what one client's batch may hold in memory; past it
            // the batch is failed and what it built is let go.
            guard batch.lines < Self.batchLineLimit else {
                batch.config = config
                throw refusedInBatch(client, "more than \(Self.batchLineLimit) lines", "a batch holds at most \(Self.batchLineLimit) lines (reload a file for more)")
            }
            // In place (apply is all or nothing): a line costs the same in a
            // batch of 10 or 100,000, with no copy of the batch's configuration.
            let added: PolicyID?
            do {
                added = try batch.config.apply(located)
            } catch {
                batch.failed = batch.failed ?? error.message
                throw ControlError("invalid", error.message)
            }
            batch.lines += 1
            return ControlReply.ok(Self.fields(added) + [("batched", "true")])
        }
        return try applyNow(located)
    }

    /// A line as the control socket reads it: nil for a blank or comment line.
    static func parse(_ line: String) throws(CommandError) -> LocatedCommand? {
        try CommandParser.parseLine(Substring(line), location: SourceLocation(file: "socket", line: 1, column: 1))
    }

    /// The reply's fields for the id an `sp add` gave its policy.
    static func fields(_ added: PolicyID?) -> [(String, String)] { added.map { [("id", String($0.rawValue))] } ?? [] }

    /// A configuration-language line applied to the running configuration
    /// and installed, as a client outside a batch sends it (in-process
    /// drivers: the benchmark). The reply, or the error reply.
    public func execute(_ line: String) -> String {
        let located: LocatedCommand?
        do {
            located = try Self.parse(line)
        } catch {
            return ControlReply.error("syntax", error.message)
        }
        guard let located else { return ControlReply.ok() }
        do {
            return try applyNow(located)
        } catch {
            return ControlReply.error(error.code, error.message)
        }
    }

    /// Applies `located` to the running configuration and installs it: an SA
    /// command in place, anything else on a copy (which copies only what
    /// the command changes: the policy list, the routes, …).
    private func applyNow(_ located: LocatedCommand) throws(ControlError) -> String {
        let undo: GatewayConfig.SAUndo?
        do {
            undo = try config.applySA(located)
        } catch {
            throw ControlError("invalid", error.message)
        }
        if let undo { return ControlReply.ok(try changeInPlace(undo)) }
        var next = config
        let added: PolicyID?
        do {
            added = try next.apply(located)
        } catch {
            throw ControlError("invalid", error.message)
        }
        let warnings = try change(to: next)
        return ControlReply.ok(Self.fields(added) + warnings)
    }

    private func flush(_ what: String, _ client: ControlServer.Client) throws(ControlError) -> String {
        guard client.batch == nil else { throw refusedInBatch(client, "flush", "flush is not allowed inside a batch") }
        var next = config
        var removed: Int
        switch what {
        case "sp":
            removed = next.removePolicies { _ in true }
        case "sa":
            // Policies that protect with an SA go first (an SA in use cannot
            // be deleted); all of them in one pass.
            removed = next.removePolicies { if case .protect = $0.action { true } else { false } }
            for id in next.sas.keys.sorted() {
                do {
                    try next.apply(LocatedCommand(.saDel(spi: id.spi, destination: id.destination),
                                                  at: SourceLocation(file: "flush", line: 1, column: 1)))
                } catch {
                    throw ControlError("invalid", error.message)
                }
                removed += 1
            }
        default:
            throw ControlError("syntax", "expected 'flush sa' or 'flush sp'")
        }
        let warnings = try change(to: next)
        return ControlReply.ok([("removed", String(removed))] + warnings)
    }

    private func reload(_ file: String, _ client: ControlServer.Client) throws(ControlError) -> String {
        guard client.batch == nil else { throw refusedInBatch(client, "reload", "reload is not allowed inside a batch") }
        let text = try Self.readFile(file, for: client.peer)
        let next: GatewayConfig
        do { next = try GatewayConfig.load(text: text, name: file) } catch { throw ControlError("invalid", error.description) }
        guard next.ports.keys.sorted() == config.ports.keys.sorted() else {
            throw ControlError("reload", "the ports of \(file) (\(next.ports.keys.sorted())) are not the running ones (\(config.ports.keys.sorted())); ports change only at start-up")
        }
        let warnings = try change(to: next)
        return ControlReply.ok([("sas", String(next.sas.count)), ("policies", String(next.policies.count))] + warnings)
    }

    /// The most configuration lines one batch holds.
    static let batchLineLimit = 1 << 20

    /// The largest file `reload` reads (a million SAs fit).
    static let reloadLimit = 256 << 20

    /// A file a client named (`reload FILE`), read with that client's own
    /// access rights (its user, group and supplementary groups as of its
    /// connect; no capability), not the gateway's: the reply (a parse error
    /// quotes the file) must not show a client what it could not read
    /// itself. Only a regular file of at most `reloadLimit` bytes: not a FIFO
    /// (which would hold the control thread), not a device (/dev/zero never ends).
    static func readFile(_ path: String, for peer: ControlServer.Peer?) throws(ControlError) -> String {
        guard let peer else { throw ControlError("reload", "cannot tell which user this client is (SO_PEERCRED), so no file is read for it") }
        let fd = sl_open_as(path, peer.uid, peer.gid, peer.groups, UInt32(peer.groups.count))
        guard fd >= 0 else {
            throw ControlError("reload", "cannot read \(path) as uid \(peer.uid): \(String(cString: strerror(-fd)))")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw ControlError("reload", "cannot read \(path): \(String(cString: strerror(errno)))") }
        guard info.st_mode & S_IFMT == S_IFREG else { throw ControlError("reload", "\(path) is not a regular file") }
        guard sl_is_kernel_filesystem(fd) == 0 else {
            throw ControlError("reload", "\(path) is on a kernel filesystem (proc, sys, …), not a configuration file")
        }
        guard info.st_size <= reloadLimit else {
            throw ControlError("reload", "\(path) has \(info.st_size) bytes; reload reads at most \(reloadLimit)")
        }
        switch GatewayMain.readAll(fd, limit: reloadLimit) {
        case .failure(let e): throw ControlError("reload", "cannot read \(path): \(e.text)")
        case .success(nil): throw ControlError("reload", "\(path) grew past \(reloadLimit) bytes while it was read")
        case .success(let bytes?): return String(decoding: bytes, as: UTF8.self)
        }
    }

    /// `sa allocspi [cpu K] [src A dst B]`: an SPI no SA uses; with `cpu K`
    /// one whose inbound ESP (from src to dst) the unprotected port's RSS
    /// sends to worker K's queue, so a per-CPU inbound SA needs no handoff.
    private func allocateSPI(_ args: [String]) throws(ControlError) -> String {
        var cpu: UInt32? = nil
        var source: IPAddress? = nil, destination: IPAddress? = nil
        var i = 0
        while i + 1 < args.count {
            let value = args[i + 1]
            switch args[i] {
            case "cpu":
                guard let n = UInt32(value) else { throw ControlError("syntax", "'cpu' needs an lcore number, found '\(value)'") }
                cpu = n
            case "src", "dst":
                guard let a = IPAddress(value) else { throw ControlError("syntax", "'\(args[i])' needs an IP address, found '\(value)'") }
                if args[i] == "src" { source = a } else { destination = a }
            default: throw ControlError("syntax", "expected 'sa allocspi [cpu K] [src A dst B]', found '\(args[i])'")
            }
            i += 2
        }
        guard i == args.count else { throw ControlError("syntax", "expected 'sa allocspi [cpu K] [src A dst B]'") }
        let taken = Set(config.sas.values.map(\.spi.rawValue))
        var rng = SystemRandomNumberGenerator()
        func unused() -> UInt32 {
            while true {
                let spi = UInt32.random(in: 256...UInt32.max, using: &rng)
                if !taken.contains(spi) { return spi }
            }
        }
        func reply(_ spi: UInt32, _ extra: [(String, String)]) -> String {
            ControlReply.ok([("spi", ControlReply.quote(SecurityParameterIndex(spi).description))] + extra)
        }
        guard let cpu else { return reply(unused(), []) }
        guard let queue = gateway.workerLcores.firstIndex(of: cpu) else {
            throw ControlError("not_found", "no worker on lcore \(cpu) (workers: \(gateway.workerLcores.map(String.init).joined(separator: ",")))")
        }
        let unprotected = gateway.ports.filter { config.ports[$0.info.id]?.role == .unprotected }
        guard let port = unprotected.first(where: { $0.hashesESP }), let steering = port.rssSteering() else {
            let note = "no unprotected port spreads ESP by SPI (RSS with ESP hashing): every SPI lands where the addresses send it"
            return reply(unused(), [("steered", "false"), ("note", ControlReply.quote(note))])
        }
        let fields = port.espHashFields
        let any4 = IPAddress("0.0.0.0")!
        if fields == .addressesAndSPI && (source == nil || destination == nil) {
            throw ControlError("syntax", "port \(port.info.id) hashes addresses with the SPI: give 'src A dst B' (the SA's outer addresses)")
        }
        guard let spi = steering.spi(toQueue: UInt16(queue), source: source ?? any4, destination: destination ?? any4,
                                     fields: fields, taken: taken, using: &rng) else {
            throw ControlError("not_found", "port \(port.info.id)'s redirection table sends nothing to queue \(queue)")
        }
        return reply(spi, [("steered", "true"), ("port", String(port.info.id)), ("queue", String(queue))])
    }

    private func query(_ words: [String]) throws(ControlError) -> String {
        switch (words[0], words[1]) {
        case ("sp", "list"):
            return ControlReply.ok([("policies", "[" + config.policies.map(policyJSON).joined(separator: ",") + "]")])
        case ("sa", "list"):
            return ControlReply.ok([("sas", "[" + config.sas.keys.sorted().map { saJSON(config.sas[$0]!) }.joined(separator: ",") + "]")])
        case ("sp", "get"):
            guard words.count == 4, words[2] == "id", let n = UInt32(words[3]) else { throw ControlError("syntax", "expected 'sp get id N'") }
            guard let p = config.policy(id: PolicyID(n)) else { throw ControlError("not_found", "no policy id \(n)") }
            return ControlReply.ok([("policy", policyJSON(p))])
        default:
            guard words.count >= 3, words[2] == "spi" else { throw ControlError("syntax", "expected 'sa get spi 0xN [dst B]'") }
            return ControlReply.ok([("sa", saJSON(try sa(Array(words.dropFirst(3)), usage: "sa get spi 0xN [dst B]")))])
        }
    }

    /// The SA `0xN [dst B]` names (`sa get spi …`, `stats sa …`). Where
    /// several SAs share the SPI (different destinations) and no `dst`
    /// says which, the one whose destination sorts first.
    private func sa(_ args: [String], usage: String) throws(ControlError) -> SAConfig {
        guard args.count == 1 || args.count == 3, let spi = Self.number(args[0]) else { throw ControlError("syntax", "expected '\(usage)'") }
        var destination: IPAddress? = nil
        if args.count == 3 {
            guard args[1] == "dst" else { throw ControlError("syntax", "expected '\(usage)'") }
            guard let a = IPAddress(args[2]) else { throw ControlError("syntax", "'dst' needs an IP address, found '\(args[2])'") }
            destination = a
        }
        guard let sa = config.sas.values.sorted(by: { $0.identifier < $1.identifier })
            .first(where: { $0.spi.rawValue == spi && (destination == nil || $0.destination == destination) }) else {
            throw ControlError("not_found", "no SA spi \(SecurityParameterIndex(spi))" + (destination.map { " dst \($0)" } ?? ""))
        }
        return sa
    }

    private func policyJSON(_ p: PolicyConfig) -> String {
        let line = Command.spAdd(id: p.id, selector: p.selector, priority: p.priority, action: p.action).description
        return "{\"id\":\(p.id.rawValue),\"priority\":\(p.priority),\"command\":\(ControlReply.quote(line))}"
    }

    private func saJSON(_ sa: SAConfig) -> String {
        var fields = "{\"spi\":\(ControlReply.quote(sa.spi.description)),\"dir\":\(ControlReply.quote(sa.direction.rawValue))"
        if let u = ipsec.usage(of: sa.identifier) {
            fields += ",\"packets\":\(u.packets),\"bytes\":\(u.bytes)"
            if let next = u.nextSequence { fields += ",\"next_seq\":\(next)" }
            if u.expired { fields += ",\"expired\":true" }
            if let mtu = ipsec.pathMTU(of: sa.identifier) { fields += ",\"path_mtu\":\(mtu)" }
        }
        return fields + ",\"command\":\(ControlReply.quote(Command.saAdd(sa).redactedDescription))}"
    }

    private func stats(_ args: [String]) throws(ControlError) -> String {
        let cores = gateway.coreCounters()
        func counters(_ cs: [CoreCounters]) -> [(String, String)] {
            let t = CoreCounters.total(cs)
            let detail = DropReason.allCases.filter { t.drops[$0.rawValue] != 0 }
                .map { "\(ControlReply.quote($0.name)):\(t.drops[$0.rawValue])" }.joined(separator: ",")
            return [("rx", String(t.rxPackets)), ("rx_bytes", String(t.rxBytes)), ("tx", String(t.txPackets)),
                    ("fragments", String(t.fragments)), ("reassembled", String(t.reassembled)),
                    ("fragmented", String(t.fragmented)), ("fragments_out", String(t.fragmentsOut)),
                    ("punted", String(t.punted)), ("from_stack", String(t.fromStack)),
                    ("to_agent", String(t.toAgent)), ("from_agent", String(t.fromAgent)),
                    ("icmp_errors", String(t.icmpErrors)), ("icmp_limited", String(t.icmpLimited)),
                    ("events_lost", String(t.eventsLost)),
                    ("drop", String(t.totalDrops)), ("drops", "{" + detail + "}")]
        }
        switch (args.first, args.count) {
        case (nil, _):
            let n = neighbors.counters
            let agent = "{\"requests_sent\":\(n.requestsSent),\"answers_sent\":\(n.answersSent),\"learned\":\(n.learned),"
                + "\"expired\":\(n.expired),\"held\":\(n.held),\"held_sent\":\(n.heldSent),\"held_dropped\":\(n.heldDropped),"
                + "\"unresolved_limited\":\(n.unresolvedLimited),\"announcements\":\(n.announcements),\"ignored\":\(n.ignored)}"
            return ControlReply.ok(counters(cores) + [("cores", String(cores.count)), ("neighbor_agent", agent)])
        case ("core", 2):
            guard let n = UInt32(args[1]), let c = cores.first(where: { $0.lcore == n }) else {
                throw ControlError("not_found", "no worker on lcore \(args[1]) (workers: \(cores.map { String($0.lcore) }.joined(separator: ",")))")
            }
            return ControlReply.ok([("core", String(n))] + counters([c]))
        case ("port", 2):
            guard let n = UInt16(args[1]), let s = gateway.portStats().first(where: { $0.0.info.id == n })?.1 else {
                throw ControlError("not_found", "no port \(args[1])")
            }
            return ControlReply.ok([("port", String(n)), ("rx", String(s.rxPackets)), ("tx", String(s.txPackets)),
                                    ("missed", String(s.rxMissed)), ("rx_errors", String(s.rxErrors)), ("tx_errors", String(s.txErrors))])
        case ("sa", 2), ("sa", 4):
            return ControlReply.ok([("sa", saJSON(try sa(Array(args.dropFirst()), usage: "stats sa 0xSPI [dst B]")))])
        default:
            throw ControlError("syntax", "expected 'stats', 'stats port N', 'stats core N' or 'stats sa 0xSPI [dst B]'")
        }
    }

    static func number(_ text: String) -> UInt32? {
        text.hasPrefix("0x") ? UInt32(text.dropFirst(2), radix: 16) : UInt32(text)
    }
}

/// A refused control command: a stable code and a message for people.
public struct ControlError: Error, CustomStringConvertible {
    public var code: String
    public var message: String
    public init(_ code: String, _ message: String) { self.code = code; self.message = message }
    public var description: String { "\(code): \(message)" }
}
