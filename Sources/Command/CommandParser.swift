// The grammar: one verb per line, each verb with its own small parser. To add a
// verb, add a `Command` case, a `parse…` function here and a row in `verbs`;
// the "unknown command" message lists the table, so it stays accurate.

import Packet

public enum CommandParser {
    /// DPDK port ids the language accepts.
    public static let portIDs: ClosedRange<UInt16> = 0...31

    struct Verb: Sendable {
        let name: String
        let parse: @Sendable (inout WordCursor) throws(CommandError) -> Command
    }

    static let verbs: [Verb] = [
        Verb(name: "port", parse: parsePort),
        Verb(name: "neighbor", parse: parseNeighbor),
        Verb(name: "route", parse: parseRoute),
        Verb(name: "sa", parse: parseSA),
        Verb(name: "sp", parse: parseSP),
        Verb(name: "crypto-engine", parse: parseCryptoEngine),
        Verb(name: "spd", parse: parseSPD),
        Verb(name: "shared-sa", parse: parseSharedSA),
    ]

    /// The verbs the language knows, in the order help text lists them.
    public static var verbNames: [String] { verbs.map(\.name) }

    /// Parses one line. `location` is where `line` starts (its column is
    /// usually 1). Returns nil for a blank or comment-only line.
    public static func parseLine(_ line: Substring, location: SourceLocation) throws(CommandError) -> LocatedCommand? {
        let (words, endColumn) = Lexer.words(line, firstColumn: location.column)
        var cursor = WordCursor(file: location.file, line: location.line, words: words, endColumn: endColumn)
        guard let verbWord = cursor.next() else { return nil }
        guard let verb = verbs.first(where: { $0.name == verbWord.text }) else {
            throw cursor.error("unknown command \(verbWord.quoted); expected one of: "
                               + verbNames.joined(separator: ", "), at: verbWord)
        }
        let command = try verb.parse(&cursor)
        try cursor.expectEnd()
        return LocatedCommand(command, at: cursor.location(of: verbWord), fieldLocations: cursor.fieldLocations)
    }

    /// Parses every line of `text`, stopping at the first error. `name` is the
    /// file name errors report.
    public static func parseFile(_ text: String, name: String) throws(CommandError) -> [LocatedCommand] {
        var commands: [LocatedCommand] = []
        for (index, line) in Lexer.lines(text).enumerated() {
            let location = SourceLocation(file: name, line: index + 1, column: 1)
            if let command = try parseLine(line, location: location) { commands.append(command) }
        }
        return commands
    }

    // MARK: Verbs

    /// `port N [role protected|unprotected] [address A/LEN]… [mtu M] [rpf off|loose|strict] [punt M|off] [resolve on|off]`
    static func parsePort(_ c: inout WordCursor) throws(CommandError) -> Command {
        let id = try c.readPort()
        var role: PortRole? = nil
        var addresses: [IPPrefix] = []
        var mtu: Int? = nil
        var rpf: ReversePathFilter? = nil
        var punt: PuntSetting? = nil
        var resolve: ResolveSetting? = nil
        try c.options(["role", "address", "mtu", "rpf", "punt", "resolve"], repeatable: ["address"]) { (option, c) throws(CommandError) in
            switch option.text {
            case "role": role = try c.readRole()
            case "mtu": mtu = try c.readNumber("MTU", in: PortMTU.accepted, field: .mtu)
            case "rpf": rpf = try c.readReversePathFilter()
            case "punt": punt = try c.readPunt()
            case "resolve": resolve = try c.readChoice(ResolveSetting.self, field: .resolve)
            default: addresses.append(try c.readInterfaceAddress(field: .address(addresses.count)))
            }
        }
        return .port(id: id, role: role, addresses: addresses, mtu: mtu, rpf: rpf, punt: punt, resolve: resolve)
    }

    /// `neighbor IP lladdr MAC port N` (the two options in either order).
    static func parseNeighbor(_ c: inout WordCursor) throws(CommandError) -> Command {
        let address = try c.readAddress(field: .address(0))
        var mac: MACAddress? = nil
        var port: UInt16? = nil
        try c.options(["lladdr", "port"], required: ["lladdr", "port"]) { (option, c) throws(CommandError) in
            if option.text == "lladdr" {
                mac = try c.readMAC()
            } else {
                port = try c.readPort()
            }
        }
        guard let mac, let port else {
            // options() has already insisted on both.
            throw CommandError("expected 'lladdr' and 'port'", at: c.endLocation)
        }
        return .neighbor(address: address, mac: mac, port: port)
    }

    /// `route add PREFIX via NEXTHOP`, `route add PREFIX port N`, `route del PREFIX`.
    static func parseRoute(_ c: inout WordCursor) throws(CommandError) -> Command {
        let action = try c.keyword(["add", "del"])
        let prefix = try c.readRoutePrefix()
        guard action.text == "add" else { return .routeDel(prefix: prefix) }
        let kind = try c.keyword(["via", "port"])
        if kind.text == "via" {
            return .routeAdd(prefix: prefix, target: .via(try c.readAddress(field: .nexthop)))
        }
        return .routeAdd(prefix: prefix, target: .port(try c.readPort()))
    }
}
