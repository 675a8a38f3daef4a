// Turning single words into values: port numbers, addresses, prefixes, MAC
// addresses. Each reader takes the next word, says what it expected when the
// word is missing or malformed, and records which field the word fills.

import Packet

enum ValueText {
    static let addressExample = "such as 192.0.2.1 or 2001:db8::1"
    static let interfaceExample = "such as 192.0.2.1/24 or 2001:db8::1/64"
    static let prefixExample = "such as 192.0.2.0/24 or 2001:db8::/32"
    static let macExample = "such as 02:00:00:00:00:01"

    static func badPort(_ text: some StringProtocol) -> String {
        let range = CommandParser.portIDs
        return "bad port \(quoted(text)): expected a number \(range.lowerBound)…\(range.upperBound)"
    }

    /// `'text'`, or `<redacted>` for text that may be key material.
    static func quoted(_ text: some StringProtocol) -> String {
        Word(text: Substring(text), column: 0).quoted
    }

    static func hostBitsSet(_ prefix: IPPrefix, text: some StringProtocol) -> String {
        "bad prefix '\(text)': host bits set (did you mean \(prefix.network)?)"
    }
}

extension WordCursor {
    /// A DPDK port id, `CommandParser.portIDs`.
    mutating func readPort(field: CommandField = .port) throws(CommandError) -> UInt16 {
        let word = try next(expecting: "a port number")
        guard word.text.count <= 5, word.text.allSatisfy({ $0.isASCII && $0.isNumber }),
              let value = UInt16(word.text), CommandParser.portIDs.contains(value) else {
            throw error(ValueText.badPort(word.text), at: word)
        }
        mark(field, word)
        return value
    }

    /// A bare IPv4 or IPv6 address.
    mutating func readAddress(field: CommandField) throws(CommandError) -> IPAddress {
        let word = try next(expecting: "an address")
        guard let address = IPAddress(word.text) else {
            throw error("bad address \(word.quoted): expected an IPv4 or IPv6 address \(ValueText.addressExample)",
                        at: word)
        }
        mark(field, word)
        return address
    }

    /// An interface address with its prefix length, `A/LEN`; host bits are the point.
    mutating func readInterfaceAddress(field: CommandField) throws(CommandError) -> IPPrefix {
        let word = try next(expecting: "an address with prefix length")
        guard word.text.contains("/"), let prefix = IPPrefix(word.text) else {
            let missingLength = !word.text.contains("/") && IPAddress(word.text) != nil
            let problem = missingLength ? "missing prefix length; expected" : "expected"
            throw error("bad address \(word.quoted): \(problem) an IPv4 or IPv6 address with prefix length "
                        + ValueText.interfaceExample, at: word)
        }
        mark(field, word)
        return prefix
    }

    /// A route prefix `A/LEN` (or a bare address, a host route) with no host bits set.
    mutating func readRoutePrefix(field: CommandField = .prefix) throws(CommandError) -> IPPrefix {
        let word = try next(expecting: "a prefix")
        guard let prefix = IPPrefix(word.text) else {
            throw error("bad prefix \(word.quoted): expected an IPv4 or IPv6 prefix \(ValueText.prefixExample)",
                        at: word)
        }
        guard !prefix.hasHostBits else {
            throw error(ValueText.hostBitsSet(prefix, text: word.text), at: word)
        }
        mark(field, word)
        return prefix
    }

    /// An Ethernet address, `aa:bb:cc:dd:ee:ff`.
    mutating func readMAC(field: CommandField = .mac) throws(CommandError) -> MACAddress {
        let word = try next(expecting: "a MAC address")
        guard let mac = MACAddress(word.text) else {
            throw error("bad MAC address \(word.quoted): expected six hex bytes \(ValueText.macExample)", at: word)
        }
        mark(field, word)
        return mac
    }

    /// A port number, or `off`.
    mutating func readPunt() throws(CommandError) -> PuntSetting {
        if peek()?.text == "off" {
            let word = try next(expecting: "a port number or 'off'")
            mark(.punt, word)
            return .off
        }
        return .port(try readPort(field: .punt))
    }

    /// `off`, `loose` or `strict`.
    mutating func readReversePathFilter() throws(CommandError) -> ReversePathFilter {
        let word = try keyword(ReversePathFilter.allCases.map(\.rawValue))
        guard let mode = ReversePathFilter(rawValue: String(word.text)) else {
            throw error("bad rpf mode \(word.quoted)", at: word)  // keyword() only returns raw values
        }
        mark(.rpf, word)
        return mode
    }

    mutating func readRole(field: CommandField = .role) throws(CommandError) -> PortRole {
        let word = try keyword(PortRole.allCases.map(\.rawValue))
        guard let role = PortRole(rawValue: String(word.text)) else {
            throw error("bad role \(word.quoted)", at: word)  // keyword() only returns raw values
        }
        mark(field, word)
        return role
    }
}
