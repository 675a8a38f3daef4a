// Commands and configuration printed back as command text. The one place that
// decides how a command is spelled: `configText` is the state as commands, each
// printed by `Command.description`, and parsing it gives the same state back.
//
// Config text carries SA keys in full: it is the config file format, and what
// recreates the state. Anything meant for logs uses `redactedDescription`.

import Packet

extension Command: CustomStringConvertible {
    /// The command as one canonical line, without a newline. Options at their
    /// defaults are left out. An `sa add` line includes its key.
    public var description: String { text(redactingKey: false) }

    /// `description` with an `sa add` key shown as `<redacted>`: for logs and
    /// messages. It does not parse back.
    public var redactedDescription: String { text(redactingKey: true) }

    private func text(redactingKey: Bool) -> String {
        switch self {
        case let .port(id, role, addresses, mtu, rpf, punt, resolve):
            var words = ["port", String(id)]
            if let role { words += ["role", role.rawValue] }
            for address in addresses { words += ["address", address.description] }
            if let mtu { words += ["mtu", String(mtu)] }
            if let rpf { words += ["rpf", rpf.rawValue] }
            switch punt {
            case .off?: words += ["punt", "off"]
            case .port(let target)?: words += ["punt", String(target)]
            case nil: break
            }
            if let resolve { words += ["resolve", resolve.rawValue] }
            return words.joined(separator: " ")
        case let .neighbor(address, mac, port):
            return "neighbor \(address) lladdr \(mac) port \(port)"
        case let .routeAdd(prefix, .via(nexthop)):
            return "route add \(prefix) via \(nexthop)"
        case let .routeAdd(prefix, .port(port)):
            return "route add \(prefix) port \(port)"
        case let .routeDel(prefix):
            return "route del \(prefix)"
        case let .cryptoEngine(engine):
            return "crypto-engine \(engine.rawValue)"
        case let .spdDriver(driver):
            return "spd driver \(driver.rawValue)"
        case let .sharedSA(mode):
            return "shared-sa \(mode.rawValue)"
        case let .saAdd(sa):
            return sa.commandText(redactingKey: redactingKey)
        case let .saUpdate(sa):
            return "sa update" + sa.commandText(redactingKey: redactingKey).dropFirst("sa add".count)
        case let .saDel(spi, destination):
            return "sa del \(SAIdentifier(spi: spi, destination: destination))"
        case let .spAdd(id, selector, priority, action):
            var words = ["sp", "add"]
            if let id { words += ["id", id.description] }
            words += [selector.commandText, "priority", String(priority), "action"]
            switch action {
            case .protect(let spi): words += ["protect", "spi", spi.description]
            case .protectReqID(let reqid, let perCPU):
                words += ["protect", "reqid", String(reqid)] + (perCPU ? ["per-cpu"] : [])
            case .bypass: words.append("bypass")
            case .discard: words.append("discard")
            }
            return words.joined(separator: " ")
        case let .spDel(.id(id)):
            return "sp del id \(id)"
        case let .spDel(.match(selector, priority)):
            return "sp del \(selector.commandText) priority \(priority)"
        }
    }
}

extension SAConfig {
    /// `sa add spi S dir D [src A dst B] mode M aead X key K …`, options at
    /// their defaults left out.
    func commandText(redactingKey: Bool) -> String {
        var words = ["sa", "add", "spi", spi.description, "dir", direction.rawValue]
        if let source { words += ["src", source.description] }
        if let destination { words += ["dst", destination.description] }
        words += ["mode", mode.rawValue, "aead", aead.rawValue, "key"]
        words.append(redactingKey ? "<redacted>" : "0x" + keyMaterial.hex)
        if esn { words.append("esn") }
        if sequence != Self.defaultSequence(direction) { words += ["seq", String(sequence)] }
        if replayWindow != Self.defaultReplayWindow { words += ["replay-window", String(replayWindow)] }
        if let encapsulation {
            words += ["encap", "udp", String(encapsulation.sourcePort), String(encapsulation.destinationPort)]
        }
        if df != .copy { words += ["df", df.rawValue] }
        if ttl != Self.defaultTTL { words += ["ttl", String(ttl)] }
        if let cryptoEngine { words += ["crypto-engine", cryptoEngine.rawValue] }
        if let reqid { words += ["reqid", String(reqid)] }
        if let cpu { words += ["cpu", String(cpu)] }
        if !lifetime.isEmpty {
            words.append("lifetime")
            for kind in SALifetime.Kind.allCases {
                guard let l = lifetime[kind] else { continue }
                words.append(kind.rawValue)
                if let soft = l.soft { words += ["soft", String(soft)] }
                if let hard = l.hard { words += ["hard", String(hard)] }
            }
        }
        return words.joined(separator: " ")
    }
}

extension PolicySelector {
    /// `dir D src P dst P [proto X] [sport R | type R] [dport R | code R] [if-id N]`.
    var commandText: String {
        var words = ["dir", direction.rawValue, "src", source.description, "dst", destination.description]
        if let proto { words += ["proto", proto.commandName] }
        if let sourcePorts { words += [isICMP ? "type" : "sport", Self.text(sourcePorts)] }
        if let destinationPorts { words += [isICMP ? "code" : "dport", Self.text(destinationPorts)] }
        if ifID != 0 { words += ["if-id", String(ifID)] }
        return words.joined(separator: " ")
    }

    private static func text(_ ports: ClosedRange<UInt16>) -> String {
        ports.lowerBound == ports.upperBound ? String(ports.lowerBound) : "\(ports.lowerBound)-\(ports.upperBound)"
    }
}

extension GatewayConfig {
    /// The state as commands that rebuild it: ports by id (each `punt` on a
    /// line of its own after them), then neighbors by
    /// address, then routes by prefix (IPv4 before IPv6 throughout), then the
    /// crypto engine and SPD driver unless `auto`, then SAs by SPI and dst, then
    /// policies in effective order with their ids, so that loading the text
    /// gives the same policies in the same order with the same ids.
    public var commands: [Command] {
        let sortedPorts = ports.values.sorted { $0.id < $1.id }
        let portLines = sortedPorts.map {
            Command.port(id: $0.id, role: $0.declaredRole, addresses: $0.addresses, mtu: $0.declaredMTU, rpf: $0.declaredRPF,
                         resolve: $0.resolve ? .on : nil)
        } + sortedPorts.compactMap { port in
            // After every port line: a punt names a port declared before it.
            port.punt.map { Command.port(id: port.id, role: nil, addresses: [], punt: .port($0)) }
        }
        let neighborLines = neighbors.values.sorted { IPAddress.precedes($0.address, $1.address) }.map {
            Command.neighbor(address: $0.address, mac: $0.mac, port: $0.port)
        }
        let routeLines = routes.sorted { Self.precedes($0.key, $1.key) }.map {
            Command.routeAdd(prefix: $0.key, target: $0.value)
        }
        let engineLines = (cryptoEngine == .auto ? [] : [Command.cryptoEngine(cryptoEngine)])
            + (spdDriver == .auto ? [] : [Command.spdDriver(spdDriver)])
            + (sharedSA == .atomic ? [] : [Command.sharedSA(sharedSA)])
        let saLines = sas.sorted { $0.key < $1.key }.map { Command.saAdd($0.value) }
        let policyLines = policies.map {
            Command.spAdd(id: $0.id, selector: $0.selector, priority: $0.priority, action: $0.action)
        }
        return portLines + neighborLines + routeLines + engineLines + saLines + policyLines
    }

    /// `commands` as text, one line each, each ending in a newline. Includes
    /// SA keys in full.
    public var configText: String {
        commands.map { "\($0)\n" }.joined()
    }

    private static func precedes(_ a: IPPrefix, _ b: IPPrefix) -> Bool {
        a.address == b.address ? a.length < b.length : IPAddress.precedes(a.address, b.address)
    }
}
