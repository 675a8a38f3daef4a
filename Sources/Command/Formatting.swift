// Commands and configuration printed back as command text. The one place that
// decides how a command is spelled: `configText` is the state as commands, each
// printed by `Command.description`, and parsing it gives the same state back.

import Packet

extension Command: CustomStringConvertible {
    /// The command as one canonical line, without a newline.
    public var description: String {
        switch self {
        case let .port(id, role, addresses):
            var words = ["port", String(id)]
            if let role { words += ["role", role.rawValue] }
            for address in addresses { words += ["address", address.description] }
            return words.joined(separator: " ")
        case let .neighbor(address, mac, port):
            return "neighbor \(address) lladdr \(mac) port \(port)"
        case let .routeAdd(prefix, .via(nexthop)):
            return "route add \(prefix) via \(nexthop)"
        case let .routeAdd(prefix, .port(port)):
            return "route add \(prefix) port \(port)"
        case let .routeDel(prefix):
            return "route del \(prefix)"
        }
    }
}

extension GatewayConfig {
    /// The state as commands that rebuild it: ports by id, then neighbors by
    /// address, then routes by prefix (IPv4 before IPv6 throughout).
    public var commands: [Command] {
        let portLines = ports.values.sorted { $0.id < $1.id }.map {
            Command.port(id: $0.id, role: $0.declaredRole, addresses: $0.addresses)
        }
        let neighborLines = neighbors.values.sorted { Self.precedes($0.address, $1.address) }.map {
            Command.neighbor(address: $0.address, mac: $0.mac, port: $0.port)
        }
        let routeLines = routes.sorted { Self.precedes($0.key, $1.key) }.map {
            Command.routeAdd(prefix: $0.key, target: $0.value)
        }
        return portLines + neighborLines + routeLines
    }

    /// `commands` as text, one line each, each ending in a newline.
    public var configText: String {
        commands.map { "\($0)\n" }.joined()
    }

    private static func precedes(_ a: IPAddress, _ b: IPAddress) -> Bool {
        switch (a, b) {
        case let (.v4(x), .v4(y)): x < y
        case let (.v6(x), .v6(y)): x < y
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }

    private static func precedes(_ a: IPPrefix, _ b: IPPrefix) -> Bool {
        a.address == b.address ? a.length < b.length : precedes(a.address, b.address)
    }
}
