// Every error class, syntax and semantic, with the exact position it points at
// and the start of its message.

import Command
import Testing

struct ErrorCase: Sendable, CustomTestStringConvertible {
    var text: String
    var line: Int
    var column: Int
    var message: String
    var testDescription: String { text.replacingNewlines }
}

extension String {
    var replacingNewlines: String { split(separator: "\n").joined(separator: " ⏎ ") }
}

@Suite struct ErrorTests {
    static let syntaxErrors: [ErrorCase] = [
        .init(text: "foo 1", line: 1, column: 1,
              message: "unknown command 'foo'; expected one of: port, neighbor, route"),
        .init(text: "  Port 1", line: 1, column: 3, message: "unknown command 'Port'"),
        .init(text: "route ad 10.0.0.0/8", line: 1, column: 7,
              message: "expected 'add' or 'del' after 'route', found 'ad'"),
        .init(text: "route", line: 1, column: 6,
              message: "expected 'add' or 'del' after 'route', found end of line"),
        .init(text: "route add", line: 1, column: 10, message: "expected a prefix after 'add', found end of line"),
        .init(text: "route add 10.0.0.0/8   # x", line: 1, column: 21,
              message: "expected 'via' or 'port' after '10.0.0.0/8', found end of line"),
        .init(text: "route add 10.0.0.0/8 dev 1", line: 1, column: 22,
              message: "expected 'via' or 'port' after '10.0.0.0/8', found 'dev'"),
        .init(text: "route add 10.0.0.0/8 via", line: 1, column: 25,
              message: "expected an address after 'via', found end of line"),
        .init(text: "route add 10.0.0.0/8 port 1 xyz", line: 1, column: 29,
              message: "unexpected 'xyz' after '1'; expected end of line"),
        .init(text: "route del 10.0.0.0/8 xyz", line: 1, column: 22,
              message: "unexpected 'xyz' after '10.0.0.0/8'; expected end of line"),
        .init(text: "neighbor 10.0.0.2 lladdr", line: 1, column: 25,
              message: "expected a MAC address after 'lladdr', found end of line"),
        .init(text: "neighbor", line: 1, column: 9, message: "expected an address after 'neighbor', found end of line"),
        .init(text: "neighbor 10.0.0.2 lladdr 02:00:00:00:00:01", line: 1, column: 43,
              message: "expected 'port' after '02:00:00:00:00:01', found end of line"),
        .init(text: "neighbor 10.0.0.2 port 1", line: 1, column: 25,
              message: "expected 'lladdr' after '1', found end of line"),
        .init(text: "neighbor 10.0.0.2 lladdr 02:00:00:00:00:01 dev 1", line: 1, column: 44,
              message: "unexpected 'dev' after '02:00:00:00:00:01'; expected 'port'"),
        .init(text: "neighbor 10.0.0.2 port 1 lladdr 02:00:00:00:00:01 port 1", line: 1, column: 51,
              message: "unexpected 'port' after '02:00:00:00:00:01'; 'port' may appear only once"),
        .init(text: "port", line: 1, column: 5, message: "expected a port number after 'port', found end of line"),
        .init(text: "port 0 xyz", line: 1, column: 8,
              message: "unexpected 'xyz' after '0'; expected 'role', 'address', 'mtu', 'rpf', 'punt', 'resolve' or end of line"),
        .init(text: "port 0 role protected role protected", line: 1, column: 23,
              message: "unexpected 'role' after 'protected'; 'role' may appear only once"),
        .init(text: "port 0 role private", line: 1, column: 13,
              message: "expected 'protected' or 'unprotected' after 'role', found 'private'"),
        .init(text: "port 0 address", line: 1, column: 15,
              message: "expected an address with prefix length after 'address', found end of line"),
        // Bad values.
        .init(text: "route add 10.0.0.300/24 port 0", line: 1, column: 11,
              message: "bad prefix '10.0.0.300/24': expected an IPv4 or IPv6 prefix such as 192.0.2.0/24 or 2001:db8::/32"),
        .init(text: "route del 10.0.0.0/33", line: 1, column: 11, message: "bad prefix '10.0.0.0/33'"),
        .init(text: "route add 2001:db8::/129 port 0", line: 1, column: 11, message: "bad prefix '2001:db8::/129'"),
        .init(text: "route add 10.0.0.1/8 port 0", line: 1, column: 11,
              message: "bad prefix '10.0.0.1/8': host bits set (did you mean 10.0.0.0/8?)"),
        .init(text: "route del 2001:db8::1/32", line: 1, column: 11,
              message: "bad prefix '2001:db8::1/32': host bits set (did you mean 2001:db8::/32?)"),
        .init(text: "route add 10.0.0.0/8 via 10.0.0", line: 1, column: 26, message: "bad address '10.0.0': expected"),
        .init(text: "neighbor 10.0.0.256 lladdr 02:00:00:00:00:01 port 0", line: 1, column: 10,
              message: "bad address '10.0.0.256'"),
        .init(text: "neighbor 10.0.0.2 lladdr 02:00:00:00:01 port 0", line: 1, column: 26,
              message: "bad MAC address '02:00:00:00:01': expected six hex bytes"),
        .init(text: "neighbor 10.0.0.2 lladdr 02:00:00:00:00:0g port 0", line: 1, column: 26,
              message: "bad MAC address '02:00:00:00:00:0g'"),
        .init(text: "port 32", line: 1, column: 6, message: "bad port '32': expected a number 0…31"),
        .init(text: "port -1", line: 1, column: 6, message: "bad port '-1': expected a number 0…31"),
        .init(text: "port 99999999999999999999", line: 1, column: 6, message: "bad port '99999999999999999999'"),
        .init(text: "route add 10.0.0.0/8 port x", line: 1, column: 27, message: "bad port 'x'"),
        .init(text: "port 0 address 10.0.0.300/24", line: 1, column: 16, message: "bad address '10.0.0.300/24'"),
        .init(text: "port 0 address 10.0.0.1", line: 1, column: 16,
              message: "bad address '10.0.0.1': missing prefix length"),
        // Later lines report their own line number.
        .init(text: "port 0\n\n# c\nport 0 role bogus", line: 4, column: 13,
              message: "expected 'protected' or 'unprotected'"),
    ]

    static let semanticErrors: [ErrorCase] = [
        .init(text: "neighbor 10.0.0.2 lladdr 02:00:00:00:00:01 port 7", line: 1, column: 49,
              message: "unknown port 7: declare it with 'port 7 ...' first"),
        .init(text: "port 0\nneighbor 10.0.0.2 port 7 lladdr 02:00:00:00:00:01", line: 2, column: 24,
              message: "unknown port 7: declare it with 'port 7 ...' first"),
        .init(text: "route add 10.0.0.0/8 port 3", line: 1, column: 27,
              message: "unknown port 3: declare it with 'port 3 ...' first"),
        .init(text: "port 0 address 10.0.0.1/24\nport 1 address 10.0.0.1/16", line: 2, column: 16,
              message: "duplicate address 10.0.0.1: already assigned to port 0"),
        .init(text: "port 0 address 10.0.0.1/24 address 10.0.0.1/24", line: 1, column: 36,
              message: "duplicate address 10.0.0.1: already assigned to port 0"),
        .init(text: "port 2 address 2001:db8::1/64\nport 2 address 2001:DB8:0::1/48", line: 2, column: 16,
              message: "duplicate address 2001:db8::1: already assigned to port 2"),
        .init(text: "port 0 role protected\nport 0 role unprotected", line: 2, column: 13,
              message: "port 0 already has role protected"),
        .init(text: "port 0 role unprotected\nport 0 address 10.0.0.1/24 role protected", line: 2, column: 33,
              message: "port 0 already has role unprotected"),
        .init(text: "port 1\nneighbor 10.0.0.2 lladdr 01:00:5e:00:00:01 port 1", line: 2, column: 26,
              message: "bad MAC address '01:00:5e:00:00:01': a neighbor needs a unicast address"),
        .init(text: "port 1\nneighbor 10.0.0.2 lladdr ff:ff:ff:ff:ff:ff port 1", line: 2, column: 26,
              message: "bad MAC address 'ff:ff:ff:ff:ff:ff'"),
        .init(text: "port 1\nneighbor 10.0.0.2 lladdr 00:00:00:00:00:00 port 1", line: 2, column: 26,
              message: "bad MAC address '00:00:00:00:00:00': a neighbor cannot have the all-zero address"),
        .init(text: "port 1\nneighbor 10.0.0.2 lladdr 02:00:00:00:00:01 port 1\n"
              + "neighbor 10.0.0.2 lladdr 02:00:00:00:00:01 port 1", line: 3, column: 10,
              message: "duplicate neighbor 10.0.0.2: already on port 1 with lladdr 02:00:00:00:00:01"),
        .init(text: "route add 10.0.0.0/8 via 192.0.2.1\nroute add 10.0.0.0/8 via 192.0.2.9", line: 2, column: 11,
              message: "route 10.0.0.0/8 already exists; delete it first"),
        .init(text: "route del 10.0.0.0/8", line: 1, column: 11, message: "no route 10.0.0.0/8"),
        .init(text: "route add 10.0.0.0/8 via 192.0.2.1\nroute del 10.0.0.0/9", line: 2, column: 11,
              message: "no route 10.0.0.0/9"),
        .init(text: "route add 10.0.0.0/8 via 2001:db8::1", line: 1, column: 26,
              message: "nexthop 2001:db8::1 is IPv6 but prefix 10.0.0.0/8 is IPv4"),
        .init(text: "route add 2001:db8::/32 via 192.0.2.1", line: 1, column: 29,
              message: "nexthop 192.0.2.1 is IPv4 but prefix 2001:db8::/32 is IPv6"),
        // Addresses no host on a link has: a port's own, a neighbor, a next hop.
        .init(text: "port 0 address 10.0.0.1/24 address 127.0.0.1/8", line: 1, column: 36,
              message: "port 0 cannot have address 127.0.0.1/8: 127.0.0.1 is a loopback address"),
        .init(text: "port 0 address 0.0.0.0/0", line: 1, column: 16,
              message: "port 0 cannot have address 0.0.0.0/0: 0.0.0.0 is in 0.0.0.0/8"),
        .init(text: "port 0 address 224.0.0.5/24", line: 1, column: 16,
              message: "port 0 cannot have address 224.0.0.5/24: 224.0.0.5 is a multicast address"),
        .init(text: "port 0 address 255.255.255.255/32", line: 1, column: 16,
              message: "port 0 cannot have address 255.255.255.255/32: 255.255.255.255 is the limited broadcast address"),
        .init(text: "port 0 address 10.0.0.255/24", line: 1, column: 16,
              message: "port 0 cannot have address 10.0.0.255/24: 10.0.0.255 is the broadcast address of 10.0.0.0/24"),
        .init(text: "port 0 address 10.0.0.0/30", line: 1, column: 16,
              message: "port 0 cannot have address 10.0.0.0/30: 10.0.0.0 is the network address of 10.0.0.0/30"),
        .init(text: "port 2 address ::/64", line: 1, column: 16,
              message: "port 2 cannot have address ::/64: :: is the unspecified address"),
        .init(text: "port 2 address ::1/128", line: 1, column: 16, message: "port 2 cannot have address ::1/128: ::1 is the loopback"),
        .init(text: "port 2 address ff02::1/64", line: 1, column: 16,
              message: "port 2 cannot have address ff02::1/64: ff02::1 is a multicast address"),
        .init(text: "port 1 address 10.0.0.1/24\nneighbor 10.0.0.1 lladdr 02:00:00:00:00:01 port 1", line: 2, column: 10,
              message: "bad neighbor 10.0.0.1: it is port 1's own address"),
        .init(text: "port 1 address 10.0.0.1/24\nneighbor 10.0.0.255 lladdr 02:00:00:00:00:01 port 1", line: 2, column: 10,
              message: "bad neighbor 10.0.0.255: it is the broadcast address of 10.0.0.0/24 (port 1)"),
        .init(text: "port 1\nneighbor 0.0.0.0 lladdr 02:00:00:00:00:01 port 1", line: 2, column: 10,
              message: "bad neighbor 0.0.0.0: it is in 0.0.0.0/8"),
        .init(text: "port 1\nneighbor ff02::2 lladdr 02:00:00:00:00:01 port 1", line: 2, column: 10,
              message: "bad neighbor ff02::2: it is a multicast address"),
        .init(text: "port 1 address 2001:db8::1/64\nroute add 2001:db8:1::/48 via 2001:db8::1", line: 2, column: 31,
              message: "bad nexthop 2001:db8::1: it is port 1's own address"),
        .init(text: "route add 0.0.0.0/0 via 0.0.0.0", line: 1, column: 25, message: "bad nexthop 0.0.0.0: it is in 0.0.0.0/8"),
        .init(text: "route add 10.0.0.0/8 via 255.255.255.255", line: 1, column: 26,
              message: "bad nexthop 255.255.255.255: it is the limited broadcast address"),
        .init(text: "port 1 address 192.0.2.1/24\nroute add 10.0.0.0/8 via 192.0.2.0", line: 2, column: 26,
              message: "bad nexthop 192.0.2.0: it is the network address of 192.0.2.0/24 (port 1)"),
        // … on its own link, whatever another port's overlapping subnet makes of it.
        .init(text: "port 1 address 192.0.2.1/24\nport 2 address 192.0.2.254/31\n"
                  + "neighbor 192.0.2.255 lladdr 02:00:00:00:00:01 port 1", line: 3, column: 10,
              message: "bad neighbor 192.0.2.255: it is the broadcast address of 192.0.2.0/24 (port 1)"),
        .init(text: "port 1 address 192.0.2.1/24\nport 2 address 192.0.3.1/23\nroute add 10.0.0.0/8 via 192.0.2.255",
              line: 3, column: 26, message: "bad nexthop 192.0.2.255: it is the broadcast address of 192.0.2.0/24 (port 1)"),
        // … and a port address that is already a neighbor's or a next hop's.
        .init(text: "port 1\nneighbor 10.0.0.2 lladdr 02:00:00:00:00:01 port 1\nport 1 address 10.0.0.2/24", line: 3, column: 16,
              message: "port 1 cannot have address 10.0.0.2: it is a neighbor's (on port 1 with lladdr 02:00:00:00:00:01)"),
        .init(text: "route add 10.0.0.0/8 via 192.0.2.7\nport 1 address 192.0.2.7/24", line: 2, column: 16,
              message: "port 1 cannot have address 192.0.2.7: route 10.0.0.0/8 goes via it"),
        // … or whose subnet makes one of those its network or broadcast address
        // (the order `configText` writes them in would not load again).
        .init(text: "port 0\nneighbor 10.0.0.255 lladdr 02:00:00:00:00:01 port 0\nport 0 address 10.0.0.1/24", line: 3,
              column: 16, message: "port 0 cannot have address 10.0.0.1/24: neighbor 10.0.0.255 would be the broadcast address of 10.0.0.0/24"),
        .init(text: "route add 10.9.0.0/16 via 10.0.0.0\nport 0 address 10.0.0.1/24", line: 2, column: 16,
              message: "port 0 cannot have address 10.0.0.1/24: the next hop of route 10.9.0.0/16 would be the network address of 10.0.0.0/24"),
    ]

    @Test(arguments: syntaxErrors + semanticErrors)
    func reportsErrorAtTheOffendingWord(_ expected: ErrorCase) throws {
        let error = try #require(loadError(expected.text))
        #expect(error.location == SourceLocation(file: "t.conf", line: expected.line, column: expected.column))
        #expect(error.message.hasPrefix(expected.message), "\(error.message)")
        #expect(error.description == "t.conf:\(expected.line):\(expected.column): \(error.message)")
    }

    /// Syntax errors come from the parser alone, without any state.
    @Test(arguments: syntaxErrors.filter { !$0.text.contains("\n") })
    func syntaxErrorsNeedNoState(_ expected: ErrorCase) {
        do {
            _ = try CommandParser.parseLine(Substring(expected.text),
                                            location: SourceLocation(file: "t.conf", line: 1, column: 1))
            Issue.record("parsed without error")
        } catch {
            #expect(error.location.column == expected.column)
            #expect(error.message.hasPrefix(expected.message))
        }
    }

    /// Semantic errors are not the parser's business: each line parses.
    @Test(arguments: semanticErrors)
    func semanticErrorsParse(_ expected: ErrorCase) throws {
        _ = try CommandParser.parseFile(expected.text, name: "t.conf")
    }

    @Test func loadReportsTheFirstErrorInLineOrder() {
        // A semantic error on line 1 wins over a syntax error on line 2.
        let error = loadError("route del 10.0.0.0/8\nroute ad")
        #expect(error?.location.line == 1)
        #expect(error?.message == "no route 10.0.0.0/8")
    }

    @Test func parseFileStopsAtTheFirstSyntaxError() {
        do {
            _ = try CommandParser.parseFile("port 0\nport 1 foo\nbar", name: "a.conf")
            Issue.record("parsed without error")
        } catch {
            #expect(error.description == "a.conf:2:8: unexpected 'foo' after '1'; expected 'role', 'address', 'mtu', 'rpf', 'punt', 'resolve' or end of line")
        }
    }
}
