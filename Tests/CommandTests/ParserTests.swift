// Each command form parses to the right typed command, wherever its words sit.

import Command
import Packet
import Testing

@Suite struct ParserTests {
    @Test func portForms() throws {
        #expect(try parse("port 0") == .port(id: 0, role: nil, addresses: []))
        #expect(try parse("port 31 role protected") == .port(id: 31, role: .protected, addresses: []))
        #expect(try parse("port 1 role unprotected address 192.0.2.1/24")
                == .port(id: 1, role: .unprotected, addresses: [prefix("192.0.2.1/24")]))
        // Options in any order; several addresses, host bits kept.
        #expect(try parse("port 2 address 10.0.0.1/24 role protected address 2001:db8::1/64")
                == .port(id: 2, role: .protected, addresses: [prefix("10.0.0.1/24"), prefix("2001:db8::1/64")]))
        #expect(try parse("port 3 mtu 9000 role protected")
                == .port(id: 3, role: .protected, addresses: [], mtu: 9000))
        #expect(try parse("port 3 mtu 68") == .port(id: 3, role: nil, addresses: [], mtu: 68))
        #expect(try parse("port 3 rpf strict mtu 68") == .port(id: 3, role: nil, addresses: [], mtu: 68, rpf: .strict))
        #expect(try parse("port 3 rpf off") == .port(id: 3, role: nil, addresses: [], rpf: .off))
        #expect(try parse("port 1 punt 4") == .port(id: 1, role: nil, addresses: [], punt: .port(4)))
        #expect(try parse("port 1 punt off rpf loose") == .port(id: 1, role: nil, addresses: [], rpf: .loose, punt: .off))
        #expect(try parse("port 1 resolve on") == .port(id: 1, role: nil, addresses: [], resolve: .on))
        #expect(try parse("port 1 resolve off mtu 1400") == .port(id: 1, role: nil, addresses: [], mtu: 1400, resolve: .off))
        #expect(try parse("port 1 resolve on")?.description == "port 1 resolve on")
        for bad in ["port 3 mtu 67", "port 3 mtu 9217", "port 3 mtu 1500x", "port 3 mtu", "port 3 mtu 1500 mtu 1400",
                    "port 3 rpf", "port 3 rpf on", "port 3 rpf loose rpf strict",
                    "port 3 punt", "port 3 punt 32", "port 3 punt on", "port 3 punt 1 punt 2",
                    "port 3 resolve", "port 3 resolve yes", "port 3 resolve on resolve off"] {
            #expect(throws: CommandError.self, "\(bad)") { try parse(bad) }
        }
        // Printed back as it parses.
        let line = Command.port(id: 3, role: .unprotected, addresses: [prefix("192.0.2.1/24")], mtu: 1400, rpf: .loose)
        #expect(line.description == "port 3 role unprotected address 192.0.2.1/24 mtu 1400 rpf loose")
        #expect(try parse(line.description) == line)
        for punt in [Command.port(id: 3, role: nil, addresses: [], punt: .port(7)), .port(id: 3, role: nil, addresses: [], punt: .off)] {
            #expect(try parse(punt.description) == punt, "\(punt)")
        }
    }

    @Test func neighborForms() throws {
        let expected = Command.neighbor(address: ip("10.0.0.2"), mac: mac("02:00:00:00:00:01"), port: 1)
        #expect(try parse("neighbor 10.0.0.2 lladdr 02:00:00:00:00:01 port 1") == expected)
        #expect(try parse("neighbor 10.0.0.2 port 1 lladdr 02:00:00:00:00:01") == expected)
        #expect(try parse("neighbor 2001:db8::2 lladdr 02:AA:bb:cc:dd:ee port 0")
                == .neighbor(address: ip("2001:db8::2"), mac: mac("02:aa:bb:cc:dd:ee"), port: 0))
    }

    @Test func routeForms() throws {
        #expect(try parse("route add 10.0.0.0/8 via 192.0.2.2")
                == .routeAdd(prefix: prefix("10.0.0.0/8"), target: .via(ip("192.0.2.2"))))
        #expect(try parse("route add 0.0.0.0/0 port 3")
                == .routeAdd(prefix: prefix("0.0.0.0/0"), target: .port(3)))
        #expect(try parse("route add 2001:db8::/32 via fe80::1")
                == .routeAdd(prefix: prefix("2001:db8::/32"), target: .via(ip("fe80::1"))))
        #expect(try parse("route add ::/0 port 0") == .routeAdd(prefix: prefix("::/0"), target: .port(0)))
        #expect(try parse("route del 10.0.0.0/8") == .routeDel(prefix: prefix("10.0.0.0/8")))
        #expect(try parse("route del 2001:db8::/32") == .routeDel(prefix: prefix("2001:db8::/32")))
        // A bare address is a host route.
        #expect(try parse("route add 10.1.2.3 port 0") == .routeAdd(prefix: prefix("10.1.2.3/32"), target: .port(0)))
    }

    @Test func blankAndCommentLines() throws {
        #expect(try parse("") == nil)
        #expect(try parse("   \t ") == nil)
        #expect(try parse("# port 0") == nil)
        #expect(try parse("   # just a comment") == nil)
        #expect(try parse("port 0 # role protected") == .port(id: 0, role: nil, addresses: []))
        #expect(try parse("port 0#comment") == .port(id: 0, role: nil, addresses: []))
        #expect(try parse("\tport\t0  role   protected\t") == .port(id: 0, role: .protected, addresses: []))
    }

    @Test func locationsOfCommandAndFields() throws {
        let line = "  neighbor\t10.0.0.2 port 4 lladdr 02:00:00:00:00:01"
        let located = try #require(try CommandParser.parseLine(
            Substring(line), location: SourceLocation(file: "x", line: 7, column: 1)))
        #expect(located.location == SourceLocation(file: "x", line: 7, column: 3))
        #expect(located.location(of: .address(0)).column == 12)
        #expect(located.location(of: .port).column == 26)
        #expect(located.location(of: .mac).column == 35)
        // A field the command has no word for falls back to the verb.
        #expect(located.location(of: .nexthop) == located.location)
    }

    @Test func lineStartingMidwayCountsFromItsColumn() throws {
        let text = "xxxx route del 10.0.0.0/8"
        let line = text.dropFirst(5)
        let located = try #require(try CommandParser.parseLine(
            line, location: SourceLocation(file: "sock", line: 1, column: 6)))
        #expect(located.location.column == 6)
        #expect(located.location(of: .prefix).column == 16)
    }

    @Test func parseFileNumbersLinesAcrossLineEndings() throws {
        let text = "port 0\r\n\r\n# c\nport 1\rroute add 10.0.0.0/8 port 1\n"
        let commands = try CommandParser.parseFile(text, name: "f.conf")
        #expect(commands.map(\.command) == [
            .port(id: 0, role: nil, addresses: []),
            .port(id: 1, role: nil, addresses: []),
            .routeAdd(prefix: prefix("10.0.0.0/8"), target: .port(1)),
        ])
        #expect(commands.map(\.location.line) == [1, 4, 5])
        #expect(commands.allSatisfy { $0.location.file == "f.conf" && $0.location.column == 1 })
    }

    @Test func commandsPrintAsTheLinesThatParseToThem() throws {
        let commands: [Command] = [
            .port(id: 0, role: nil, addresses: []),
            .port(id: 5, role: .protected, addresses: [prefix("10.0.0.1/24"), prefix("2001:db8::1/64")]),
            .neighbor(address: ip("fe80::2"), mac: mac("02:00:00:00:00:0a"), port: 5),
            .routeAdd(prefix: prefix("10.0.0.0/8"), target: .via(ip("192.0.2.1"))),
            .routeAdd(prefix: prefix("::/0"), target: .port(5)),
            .routeDel(prefix: prefix("10.0.0.0/8")),
        ]
        for command in commands {
            #expect(try parse(command.description) == command)
        }
        #expect(commands[1].description == "port 5 role protected address 10.0.0.1/24 address 2001:db8::1/64")
        #expect(commands[2].description == "neighbor fe80::2 lladdr 02:00:00:00:00:0a port 5")
    }
}
