// Applying commands: what state they build, that a failing command changes
// nothing, and that configText gives the same state back.

import Command
import Packet
import Testing

@Suite struct GatewayConfigTests {
    static let sample = """
        # A two-port gateway.
        port 0 role protected address 10.0.0.1/24
        port 1 role unprotected address 192.0.2.1/24   # public side
        port 1 address 2001:db8::1/64
        port 0
        neighbor 192.0.2.254 lladdr 02:00:00:00:01:fe port 1
        neighbor 2001:db8::fe port 1 lladdr 02:00:00:00:02:fe
        route add 0.0.0.0/0 via 192.0.2.254
        route add ::/0 via 2001:db8::fe
        route add 10.1.0.0/16 port 0
        route add 198.51.100.0/24 port 1
        route del 198.51.100.0/24
        """

    @Test func buildsPortsNeighborsAndRoutes() throws {
        let config = try GatewayConfig.load(text: Self.sample, name: "sample.conf")
        #expect(config.ports.count == 2)
        #expect(config.ports[0] == PortConfig(id: 0, declaredRole: .protected, addresses: [prefix("10.0.0.1/24")]))
        #expect(config.ports[1]?.role == .unprotected)
        #expect(config.ports[1]?.addresses == [prefix("192.0.2.1/24"), prefix("2001:db8::1/64")])
        #expect(config.neighbors == [
            ip("192.0.2.254"): Neighbor(address: ip("192.0.2.254"), mac: mac("02:00:00:00:01:fe"), port: 1),
            ip("2001:db8::fe"): Neighbor(address: ip("2001:db8::fe"), mac: mac("02:00:00:00:02:fe"), port: 1),
        ])
        #expect(config.routes == [
            prefix("0.0.0.0/0"): .via(ip("192.0.2.254")),
            prefix("::/0"): .via(ip("2001:db8::fe")),
            prefix("10.1.0.0/16"): .port(0),
        ])
    }

    /// The address checks (ErrorTests) leave ordinary links alone: /31 and
    /// /32 IPv4 addresses, IPv6 link-local ones, link-local neighbors and
    /// next hops, a next hop beyond every port's subnet, a default route.
    @Test func addressChecksLeaveOrdinaryLinksAlone() throws {
        let config = try GatewayConfig.load(text: """
            port 0 address 10.0.0.0/31 address 198.51.100.255/32 address fe80::1/64 address 2001:db8::/127
            port 1 address 192.0.2.1/24
            neighbor 10.0.0.1 lladdr 02:00:00:00:00:01 port 0
            neighbor fe80::2 lladdr 02:00:00:00:00:02 port 0
            route add 0.0.0.0/0 via 10.0.0.1
            route add ::/0 via fe80::2
            route add 203.0.113.0/24 via 192.0.2.254
            route add 198.18.0.0/15 via 100.64.0.1
            """, name: "t.conf")
        #expect(config.ports[0]?.addresses.count == 4 && config.neighbors.count == 2 && config.routes.count == 4)
    }

    /// A subnet's network and broadcast addresses are refused on its own
    /// link only: a /31 peer inside another port's wider prefix is a host
    /// (a neighbor on the /31's port, a next hop whose longest connected
    /// prefix is the /31), in either order, and the saved text loads again.
    @Test func anotherPortsOverlappingSubnetDoesNotRefuseAPeer() throws {
        let peers = """
            neighbor 192.0.2.255 lladdr 02:00:00:00:00:01 port 2
            route add 10.0.0.0/8 via 192.0.2.255
            route add 10.1.0.0/16 via 198.51.100.0
            """
        let ports = """
            port 1 address 192.0.2.1/24 address 198.51.100.7/24
            port 2 address 192.0.2.254/31 address 198.51.100.1/31
            """
        // (Peers first, the /31s must come before the /24s: at each command,
        // the next hop's link is the port with the longest prefix so far.)
        let reversed = ports.split(separator: "\n").reversed().joined(separator: "\n")
        for text in [ports + "\n" + peers, "port 1\nport 2\n" + peers + "\n" + reversed] {
            let config = try GatewayConfig.load(text: text, name: "t.conf")
            #expect(config.neighbors.count == 1 && config.routes.count == 2, "\(text)")
            #expect(GatewayConfig.connectedPort(of: ip("198.51.100.0"), in: config.ports.values) == 2)
            #expect(GatewayConfig.connectedPort(of: ip("192.0.2.7"), in: config.ports.values) == 1)
            let again = try GatewayConfig.load(text: config.configText, name: "saved")
            #expect(again.neighbors == config.neighbors && again.routes == config.routes)
        }
    }

    @Test func roleDefaultsToUnprotectedAndCanBeGivenLater() throws {
        var config = try GatewayConfig.load(text: "port 3", name: "t")
        #expect(config.ports[3]?.role == .unprotected)
        #expect(config.ports[3]?.declaredRole == nil)
        try config.apply(#require(try CommandParser.parseLine("port 3 role protected",
                                                          location: SourceLocation(file: "t", line: 2, column: 1))))
        #expect(config.ports[3]?.role == .protected)
        // Repeating the same role is fine.
        try config.apply(#require(try CommandParser.parseLine("port 3 role protected",
                                                          location: SourceLocation(file: "t", line: 3, column: 1))))
        #expect(config.ports[3]?.role == .protected)
    }

    @Test func routeDelThenAddAgain() throws {
        let config = try GatewayConfig.load(text: """
            port 0
            route add 10.0.0.0/8 port 0
            route del 10.0.0.0/8
            route add 10.0.0.0/8 via 10.9.9.9
            """, name: "t")
        #expect(config.routes == [prefix("10.0.0.0/8"): .via(ip("10.9.9.9"))])
    }

    @Test func sameNetworkDifferentLengthsAreDifferentRoutes() throws {
        let config = try GatewayConfig.load(text: """
            route add 10.0.0.0/8 via 192.0.2.1
            route add 10.0.0.0/16 via 192.0.2.2
            route add 10.0.0.0/32 via 192.0.2.3
            """, name: "t")
        #expect(config.routes.count == 3)
    }

    @Test func failedApplyLeavesStateUnchanged() throws {
        var config = try GatewayConfig.load(text: Self.sample, name: "sample.conf")
        let before = config
        let failing = [
            // The first address is new, the second a duplicate: neither is added.
            "port 0 address 10.0.5.1/24 address 192.0.2.1/24",
            // A role conflict on a line that also adds an address.
            "port 0 address 10.0.6.1/24 role unprotected",
            // The same new address twice on one line.
            "port 4 address 10.0.7.1/24 address 10.0.7.1/24",
            "neighbor 10.0.0.9 lladdr 02:00:00:00:00:09 port 9",
            "neighbor 192.0.2.254 lladdr 02:00:00:00:00:09 port 0",
            "neighbor 10.0.0.9 lladdr 03:00:00:00:00:09 port 0",
            "route add 0.0.0.0/0 port 0",
            "route add 10.2.0.0/16 via 2001:db8::fe",
            "route add 10.2.0.0/16 port 9",
            "route del 10.2.0.0/16",
        ]
        for (index, line) in failing.enumerated() {
            let command = try #require(try CommandParser.parseLine(
                Substring(line), location: SourceLocation(file: "t", line: index + 1, column: 1)))
            #expect(throws: CommandError.self, "\(line)") { try config.apply(command) }
            #expect(config == before, "\(line)")
        }
        #expect(config.ports[4] == nil)
    }

    @Test func portMTU() throws {
        var config = try GatewayConfig.load(text: "port 1 address 192.0.2.1/24\n", name: "t")
        #expect(config.ports[1]?.mtu == 1500)
        try config.apply(try #require(try CommandParser.parseLine("port 1 mtu 1280", location: SourceLocation(file: "t", line: 2, column: 1))))
        #expect(config.ports[1]?.mtu == 1280)
        // IPv6 needs 1280 (RFC 8200): refused either way round, nothing applied.
        let before = config
        for line in ["port 1 mtu 1279 address 2001:db8::1/64", "port 1 address 2001:db8::1/64 mtu 1000"] {
            let command = try #require(try CommandParser.parseLine(Substring(line), location: SourceLocation(file: "t", line: 3, column: 1)))
            #expect(throws: CommandError.self, "\(line)") { try config.apply(command) }
            #expect(config == before, "\(line)")
        }
        var small = try GatewayConfig.load(text: "port 2 mtu 576\n", name: "t")
        let v6 = try #require(try CommandParser.parseLine("port 2 address 2001:db8::1/64", location: SourceLocation(file: "t", line: 2, column: 1)))
        #expect(throws: CommandError.self) { try small.apply(v6) }
        // Nor an IPv6 neighbor or route out of such a port, either way round.
        func line(_ text: String) throws -> LocatedCommand {
            try #require(try CommandParser.parseLine(Substring(text), location: SourceLocation(file: "t", line: 9, column: 1)))
        }
        let smallBefore = small
        for text in ["neighbor 2001:db8:b::fe lladdr 02:00:00:00:00:fe port 2", "route add 2001:db8:100::/48 port 2"] {
            #expect(throws: CommandError.self, "\(text)") { try small.apply(try line(text)) }
            #expect(small == smallBefore, "\(text)")
            var wide = try GatewayConfig.load(text: "port 2\n\(text)\n", name: "t")
            let wideBefore = wide
            let lower = try line("port 2 mtu 1000")
            do {
                try wide.apply(lower)
                Issue.record("\(text), then mtu 1000: accepted")
            } catch {
                #expect(error.message.contains("IPv6"), "\(text): \(error.message)")
            }
            #expect(wide == wideBefore)
        }
        // IPv4 ones are fine.
        try small.apply(try line("neighbor 192.0.2.9 lladdr 02:00:00:00:00:09 port 2"))
        try small.apply(try line("route add 198.51.100.0/24 port 2"))
        // The configuration text keeps the MTU.
        #expect(try GatewayConfig.load(text: config.configText, name: "again") == config)
        #expect(config.configText.contains("port 1 address 192.0.2.1/24 mtu 1280"))
    }

    @Test func puntPorts() throws {
        let base = "port 1 role unprotected address 192.0.2.1/24\nport 2 role protected address 10.0.0.1/24\nport 5\n"
        var config = try GatewayConfig.load(text: base + "port 1 punt 5\n", name: "t")
        #expect(config.ports[1]?.punt == 5 && config.puntOwner(of: 5) == 1)
        // Printed after every port line, so that it reloads.
        #expect(config.configText.contains("port 5\nport 1 punt 5\n"))
        #expect(try GatewayConfig.load(text: config.configText, name: "again") == config)
        // Refused, nothing applied: itself, an undeclared port, a port with a
        // role or address, one already serving, the stack's port punting or
        // taking an address, a role, a neighbor or a route.
        let before = config
        for line in ["port 1 punt 1", "port 1 punt 6", "port 1 punt 2", "port 2 punt 5", "port 5 punt 2",
                     "port 5 address 198.51.100.1/24", "port 5 role protected",
                     "neighbor 198.51.100.2 lladdr 02:00:00:00:00:09 port 5", "route add 198.51.100.0/24 port 5"] {
            let command = try #require(try CommandParser.parseLine(Substring(line), location: SourceLocation(file: "t", line: 9, column: 1)))
            #expect(throws: CommandError.self, "\(line)") { try config.apply(command) }
            #expect(config == before, "\(line)")
        }
        // A port with routes cannot become a stack's port.
        let routed = try GatewayConfig.load(text: base + "route add 198.51.100.0/24 port 5\n", name: "t")
        var r = routed
        let onRouted = try #require(try CommandParser.parseLine("port 1 punt 5", location: SourceLocation(file: "t", line: 9, column: 1)))
        #expect(throws: CommandError.self) { try r.apply(onRouted) }
        // `punt off` removes it; the port is free again.
        try config.apply(try #require(try CommandParser.parseLine("port 1 punt off", location: SourceLocation(file: "t", line: 10, column: 1))))
        #expect(config.ports[1]?.punt == nil && config.puntOwner(of: 5) == nil)
        try config.apply(try #require(try CommandParser.parseLine("route add 198.51.100.0/24 port 5", location: SourceLocation(file: "t", line: 11, column: 1))))
    }

    @Test func resolvingPorts() throws {
        let base = "port 1 role unprotected address 192.0.2.1/24\nport 2 role protected address 10.0.0.1/24\nport 5\n"
        var config = try GatewayConfig.load(text: base + "port 1 resolve on\n", name: "t")
        #expect(config.ports[1]?.resolve == true && config.ports[2]?.resolve == false)
        // Printed on the port's line; reloads to the same state.
        #expect(config.configText.contains("port 1 role unprotected address 192.0.2.1/24 resolve on\n"))
        #expect(try GatewayConfig.load(text: config.configText, name: "again") == config)
        // A local stack's port resolves nothing (it has no address), nor can a
        // resolving port become one: refused, nothing applied.
        var stack = try GatewayConfig.load(text: base + "port 2 punt 5\n", name: "t")
        let before = stack
        let onStack = try #require(try CommandParser.parseLine("port 5 resolve on", location: SourceLocation(file: "t", line: 9, column: 1)))
        #expect(throws: CommandError.self) { try stack.apply(onStack) }
        #expect(stack == before)
        var resolving = try GatewayConfig.load(text: base + "port 5 resolve on\n", name: "t")
        let punt = try #require(try CommandParser.parseLine("port 2 punt 5", location: SourceLocation(file: "t", line: 9, column: 1)))
        #expect(throws: CommandError.self) { try resolving.apply(punt) }
        // `resolve off` turns it off.
        try config.apply(try #require(try CommandParser.parseLine("port 1 resolve off", location: SourceLocation(file: "t", line: 10, column: 1))))
        #expect(config.ports[1]?.resolve == false && !config.configText.contains("resolve"))
    }

    @Test func commandsBuiltInCodeAreCheckedToo() {
        var config = GatewayConfig()
        let at = SourceLocation(file: "api", line: 1, column: 1)
        let cases: [(Command, String)] = [
            (.port(id: 40, role: nil, addresses: []), "bad port '40': expected a number 0…31"),
            (.routeAdd(prefix: prefix("10.0.0.1/8"), target: .via(ip("10.0.0.2"))),
             "bad prefix '10.0.0.1/8': host bits set (did you mean 10.0.0.0/8?)"),
            (.routeDel(prefix: prefix("10.0.0.1/8")), "bad prefix '10.0.0.1/8': host bits set"),
        ]
        for (command, message) in cases {
            do {
                try config.apply(LocatedCommand(command, at: at))
                Issue.record("applied \(command)")
            } catch {
                #expect(error.location == at)
                #expect(error.message.hasPrefix(message))
            }
        }
        #expect(config == GatewayConfig())
    }

    @Test func configTextIsCanonicalAndDeterministic() throws {
        let config = try GatewayConfig.load(text: Self.sample, name: "sample.conf")
        #expect(config.configText == """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24 address 2001:db8::1/64
            neighbor 192.0.2.254 lladdr 02:00:00:00:01:fe port 1
            neighbor 2001:db8::fe lladdr 02:00:00:00:02:fe port 1
            route add 0.0.0.0/0 via 192.0.2.254
            route add 10.1.0.0/16 port 0
            route add ::/0 via 2001:db8::fe

            """)
        #expect(GatewayConfig().configText == "")
        #expect(try GatewayConfig.load(text: "port 7", name: "t").configText == "port 7\n")
    }

    @Test func configTextRoundTrips() throws {
        let config = try GatewayConfig.load(text: Self.sample, name: "sample.conf")
        let reloaded = try GatewayConfig.load(text: config.configText, name: "config text")
        #expect(reloaded == config)
        #expect(reloaded.configText == config.configText)
    }

    @Test func configTextOrdersRoutesByFamilyAddressThenLength() throws {
        let config = try GatewayConfig.load(text: """
            route add 2001:db8::/32 via fe80::1
            route add 10.0.0.0/16 via 9.9.9.9
            route add 9.0.0.0/8 via 9.9.9.9
            route add 10.0.0.0/8 via 9.9.9.9
            route add ::/0 via fe80::1
            """, name: "t")
        let prefixes = config.commands.map { command -> String in
            guard case .routeAdd(let prefix, _) = command else { return "?" }
            return prefix.description
        }
        #expect(prefixes == ["9.0.0.0/8", "10.0.0.0/8", "10.0.0.0/16", "::/0", "2001:db8::/32"])
    }
}
