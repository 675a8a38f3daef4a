// Migration from DPDK's ipsec-secgw sample application: its configuration
// file's `sp`, `sa`, `rt` and `neigh` lines, translated into Sluice commands.
//
// Reading and translating are separate steps. `SecgwFile` reads the file the
// way ipsec-secgw's parser does (`#` comments, `\` joining lines, one rule
// per logical line) into plain records; `SecgwTranslator` turns the records
// into commands and applies each to a `GatewayConfig`, so the lines it emits
// are exactly the ones that load, in an order that loads. Whatever it cannot
// carry over, or carries over changed, becomes a note naming the file and line.
//
// The decisions that are not one-to-one:
// * Priority: rte_acl returns the matching rule with the highest priority;
//   Sluice the lowest. A policy gets `priority M − pri`, M the highest `pri` in
//   the file, so the same policy wins.
// * Neighbours: secgw has one destination MAC per port (`neigh port N MAC`);
//   Sluice resolves next hops by address. Each port with a `neigh` line gets a
//   placeholder next hop (169.254.0.N+1, fe80::N+1; never on the wire, Sluice
//   sends no ARP or ND) with that MAC, and the port's routes go via it.
// * Ports: secgw's port roles are command-line options (`-u`); the caller
//   gives the unprotected ports, or they are inferred from where the SAs'
//   peers are routed, with a note.

import Packet

/// What `SecgwImport.translate` made of a file.
public struct SecgwTranslation: Sendable, Equatable {
    /// Sluice commands in an order that loads: ports, neighbors, routes, SAs,
    /// policies.
    public var lines: [String]
    /// `FILE:LINE: …` (or `FILE: …` for the file as a whole) for each rule or
    /// option left out or carried over changed, saying what and why.
    public var notes: [String]
    /// `FILE:LINE: …` for each line that could not be read at all (secgw
    /// itself would refuse to start on it); such a line is left out.
    public var errors: [String]
    /// True when nothing was left out: every note is about a change, and
    /// there are no errors.
    public var isComplete: Bool

    /// `lines`, each ending in a newline.
    public var text: String { lines.map { $0 + "\n" }.joined() }
}

public enum SecgwImport {
    /// Translates ipsec-secgw configuration `text`; `name` is the file name
    /// notes and errors report. `unprotectedPorts` is secgw's `-u` port mask as
    /// a set; nil infers the roles (and says so in a note).
    public static func translate(_ text: String, name: String,
                                 unprotectedPorts: Set<UInt16>? = nil) -> SecgwTranslation {
        var file = SecgwFile(name: name)
        file.read(text)
        var translator = SecgwTranslator(file: file)
        return translator.translate(unprotectedPorts: unprotectedPorts)
    }

    /// The first host address of the placeholder next hop standing for
    /// `neigh port N` (N + 1 is added): link-local, so it never clashes with a
    /// routed address.
    public static let placeholderIPv4 = IPv4Address(169, 254, 0, 0)
    public static let placeholderIPv6 = IPv6Address(high: 0xfe80_0000_0000_0000, low: 0)

    /// The placeholder next hop of `port` in one address family.
    public static func placeholder(port: UInt16, ipv4: Bool) -> IPAddress {
        ipv4 ? .v4(IPv4Address(placeholderIPv4.value + UInt32(port) + 1))
            : .v6(IPv6Address(high: placeholderIPv6.high, low: UInt64(port) + 1))
    }
}

// MARK: - The file, read as ipsec-secgw reads it

/// A note about one line (or, with `line` nil, the whole file).
struct SecgwNote {
    var line: Int?
    var text: String
    /// Something of the input is not in the output.
    var leftOut: Bool
}

/// What an `sp` line does with the traffic it selects.
enum SecgwPolicyAction: Equatable {
    case protect(UInt32)
    case bypass
    case discard
}

/// `sp ipv4|ipv6 in|out esp ACTION [pri N] [src P] [dst P] [proto V:M] [sport L:H] [dport L:H]`.
struct SecgwPolicy {
    var line: Int
    var ipv4: Bool
    var direction: PolicyDirection
    var action: SecgwPolicyAction
    /// rte_acl priority: higher wins.
    var priority: UInt32
    var source: IPPrefix
    var destination: IPPrefix
    /// rte_acl bitmask field: value and mask; mask 0 matches every protocol.
    var proto: (value: UInt8, mask: UInt8)
    /// `LOW:HIGH` as given (LOW > HIGH matches nothing); nil when the line
    /// gives none (rte_acl then has 0:0).
    var sourcePorts: (low: UInt16, high: UInt16)?
    var destinationPorts: (low: UInt16, high: UInt16)?
}

/// The algorithms an `sa` line names.
enum SecgwAlgorithm {
    /// `aead_algo X aead_key K`: Sluice's transform if it has one.
    case aead(name: String, transform: AEADTransform?)
    /// `cipher_algo X … auth_algo Y …`: Sluice has no such SAs.
    case cipherAuth(cipher: String, auth: String)
}

/// `sa in|out SPI ALGORITHMS mode M [src A dst B] [options…]`.
struct SecgwSA {
    var line: Int
    var direction: IPsecDirection
    var spi: UInt32
    var algorithm: SecgwAlgorithm
    /// Key and salt, as `aead_key` gives them (AEAD only).
    var key: [UInt8]
    var mode: SAMode
    /// For tunnel mode: true for `ipv4-tunnel`.
    var tunnelIPv4: Bool
    var source: IPAddress?
    var destination: IPAddress?
    /// `esn N`: the initial ESN value; 0 (the default) leaves ESN off.
    var esn: UInt64
    var udpEncapsulation: Bool
}

/// `rt ipv4|ipv6 dst P port N`.
struct SecgwRoute {
    var line: Int
    var prefix: IPPrefix
    var port: UInt32
}

/// `neigh port N MAC`.
struct SecgwNeighbor {
    var line: Int
    var port: UInt32
    var mac: MACAddress
}

/// A reason a line cannot be read; becomes an error.
struct SecgwSyntaxError: Error {
    var message: String
    init(_ message: String) { self.message = message }
}

struct SecgwFile {
    let name: String
    var policies: [SecgwPolicy] = []
    var sas: [SecgwSA] = []
    var routes: [SecgwRoute] = []
    var neighbors: [SecgwNeighbor] = []
    var notes: [SecgwNote] = []
    var errors: [(line: Int, message: String)] = []

    init(name: String) { self.name = name }

    // Key lengths in bytes, salt included for the AEADs (ipsec-secgw's tables).
    static let aeads: [(name: String, keyLength: Int, transform: AEADTransform?)] = [
        ("aes-128-gcm", 20, .aesGCM128), ("aes-192-gcm", 28, nil), ("aes-256-gcm", 36, .aesGCM256),
        ("aes-128-ccm", 20, nil), ("aes-192-ccm", 28, nil), ("aes-256-ccm", 36, nil),
        ("chacha20-poly1305", 36, .chacha20Poly1305),
    ]
    static let ciphers = ["null", "aes-128-cbc", "aes-192-cbc", "aes-256-cbc", "aes-128-ctr", "aes-192-ctr",
                          "aes-256-ctr", "3des-cbc", "des-cbc", "sm4-cbc"]
    static let auths = ["null", "sha1-hmac", "sha256-hmac", "sha384-hmac", "sha512-hmac", "aes-gmac",
                        "aes-xcbc-mac-96", "sm3-hmac"]
    /// rte_acl's highest rule priority.
    static let maxPriority: UInt32 = 0x1FFF_FFFF

    mutating func read(_ text: String) {
        for (line, words) in Self.logicalLines(text, errors: &errors) {
            do throws(SecgwSyntaxError) {
                switch words[0] {
                case "sp": try readPolicy(words, line: line)
                case "sa": try readSA(words, line: line)
                case "rt": try readRoute(words, line: line)
                case "neigh": try readNeighbor(words, line: line)
                case "flow":
                    notes.append(SecgwNote(line: line, text: "flow rule ignored: it steers traffic to NIC queues with "
                                           + "rte_flow; Sluice spreads it by RSS", leftOut: false))
                default:
                    throw SecgwSyntaxError("unknown rule \(Self.shown(words[0])): expected sp, sa, rt, neigh or flow")
                }
            } catch {
                errors.append((line, error.message))
            }
        }
    }

    /// The logical lines of `text` as secgw's parser makes them: a line
    /// starting with `#` is skipped, `#` elsewhere ends the line, and a line
    /// ending in `\` continues on the next (joined with nothing between).
    /// Each comes with the number of its first physical line, as words.
    static func logicalLines(_ text: String, errors: inout [(line: Int, message: String)])
        -> [(line: Int, words: [Substring])] {
        var result: [(line: Int, words: [Substring])] = []
        var pending = ""
        var start: Int? = nil
        func finish() {
            let words = pending.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if let start, !words.isEmpty { result.append((start, words)) }
            pending = ""
            start = nil
        }
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var line = raw.hasSuffix("\r") ? raw.dropLast() : raw
            if line.first == "#" { continue }
            if let hash = line.firstIndex(of: "#") { line = line[..<hash] }
            start = start ?? index + 1
            if let slash = line.firstIndex(of: "\\") {
                let rest = line[line.index(after: slash)...]
                guard rest.allSatisfy({ $0 == " " || $0 == "\t" }) else {
                    errors.append((start ?? index + 1, "nothing may follow '\\' on a line"))
                    pending = ""
                    start = nil
                    continue
                }
                pending += line[..<slash]
                continue
            }
            pending += line
            finish()
        }
        finish()
        return result
    }

    // MARK: sp

    private mutating func readPolicy(_ words: [Substring], line: Int) throws(SecgwSyntaxError) {
        guard words.count >= 3 else { throw SecgwSyntaxError("expected 'sp ipv4|ipv6 in|out esp ACTION …'") }
        let ipv4: Bool
        switch words[1] {
        case "ipv4": ipv4 = true
        case "ipv6": ipv4 = false
        default: throw SecgwSyntaxError("unrecognized input \(Self.shown(words[1])): expected ipv4 or ipv6")
        }
        let direction: PolicyDirection
        switch words[2] {
        case "in": direction = .inbound
        case "out": direction = .outbound
        default: throw SecgwSyntaxError("unrecognized input \(Self.shown(words[2])): expected in or out")
        }
        let any = IPPrefix(address: ipv4 ? .v4(IPv4Address(0)) : .v6(IPv6Address(high: 0, low: 0)), length: 0)!
        var policy = SecgwPolicy(line: line, ipv4: ipv4, direction: direction, action: .discard, priority: 0,
                                 source: any, destination: any, proto: (0, 0))
        var seen: Set<Substring> = []
        var action: SecgwPolicyAction? = nil
        var i = 3
        func value() throws(SecgwSyntaxError) -> Substring {
            i += 1
            guard i < words.count else { throw SecgwSyntaxError("\(Self.shown(words[i - 1])) needs a value") }
            return words[i]
        }
        while i < words.count {
            let word = words[i]
            let group = ["protect", "bypass", "discard"].contains(word) ? "action" : word
            if seen.contains(group) {
                throw SecgwSyntaxError(group == "action" ? "more than one of protect, bypass and discard"
                                       : "\(Self.shown(word)) given twice")
            }
            seen.insert(group)
            switch word {
            case "esp": break
            case "protect":
                let text = try value()
                guard let spi = Self.decimal(text).flatMap(UInt32.init(exactly:)), spi != 0 else {
                    throw SecgwSyntaxError("bad SPI \(Self.shown(text)): expected a decimal number 1…4294967295")
                }
                action = .protect(spi)
            case "bypass": action = .bypass
            case "discard": action = .discard
            case "pri":
                let text = try value()
                guard let pri = Self.decimal(text).flatMap(UInt32.init(exactly:)), pri <= Self.maxPriority else {
                    throw SecgwSyntaxError("bad priority \(Self.shown(text)): expected 0…\(Self.maxPriority) "
                                           + "(rte_acl's range)")
                }
                policy.priority = pri
            case "src", "dst":
                let prefix = try readSelectorPrefix(try value(), ipv4: ipv4, option: String(word), line: line)
                if word == "src" { policy.source = prefix } else { policy.destination = prefix }
            case "proto":
                let text = try value()
                guard let (low, high) = Self.range(text), low <= 255, high <= 255 else {
                    throw SecgwSyntaxError("bad proto \(Self.shown(text)): expected VALUE:MASK, each 0…255")
                }
                policy.proto = (UInt8(low), UInt8(high))
            case "sport", "dport":
                let text = try value()
                guard let (low, high) = Self.range(text) else {
                    throw SecgwSyntaxError("bad \(word) \(Self.shown(text)): expected LOW:HIGH, each 0…65535")
                }
                if word == "sport" { policy.sourcePorts = (low, high) } else { policy.destinationPorts = (low, high) }
            default:
                throw SecgwSyntaxError("unrecognized input \(Self.shown(word)) in an sp rule")
            }
            i += 1
        }
        guard seen.contains("esp") else { throw SecgwSyntaxError("missing argument 'esp'") }
        guard let action else { throw SecgwSyntaxError("missing argument 'protect', 'bypass' or 'discard'") }
        policy.action = action
        policies.append(policy)
    }

    /// `A/LEN`, or a bare address, which secgw reads with length 0 (any).
    private mutating func readSelectorPrefix(_ text: Substring, ipv4: Bool, option: String,
                                             line: Int) throws(SecgwSyntaxError) -> IPPrefix {
        let family = ipv4 ? "IPv4" : "IPv6"
        guard var prefix = IPPrefix(text), prefix.address.isIPv4 == ipv4 else {
            throw SecgwSyntaxError("bad \(option) \(Self.shown(text)): expected an \(family) address with /LEN")
        }
        if !text.contains("/") {
            prefix.length = 0
            notes.append(SecgwNote(line: line, text: "\(option) \(text) has no /LEN: secgw reads it as length 0, "
                                   + "matching every address, and so does the translation", leftOut: false))
        }
        if prefix.hasHostBits {
            notes.append(SecgwNote(line: line, text: "\(option) \(text) has host bits set: rte_acl ignores them; "
                                   + "translated as \(prefix.network)", leftOut: false))
            prefix = prefix.network
        }
        return prefix
    }

    // MARK: sa

    private mutating func readSA(_ words: [Substring], line: Int) throws(SecgwSyntaxError) {
        guard words.count >= 3 else { throw SecgwSyntaxError("expected 'sa in|out SPI …'") }
        let direction: IPsecDirection
        switch words[1] {
        case "in": direction = .inbound
        case "out": direction = .outbound
        default: throw SecgwSyntaxError("unrecognized input \(Self.shown(words[1])): expected in or out")
        }
        guard let spi = Self.decimal(words[2]).flatMap(UInt32.init(exactly:)), spi != 0 else {
            throw SecgwSyntaxError("bad SPI \(Self.shown(words[2])): expected a decimal number 1…4294967295")
        }
        var mode: SAMode? = nil
        var tunnelIPv4 = true
        var cipher: String? = nil
        var auth: String? = nil
        var aead: (name: String, transform: AEADTransform?)? = nil
        var key: [UInt8] = []
        var source: IPAddress? = nil
        var destination: IPAddress? = nil
        var esn: UInt64 = 0
        var udpEncapsulation = false
        var type = "no-offload"
        var seen: Set<Substring> = []
        var changes: [String] = []
        var i = 3
        func value() throws(SecgwSyntaxError) -> Substring {
            i += 1
            guard i < words.count else { throw SecgwSyntaxError("\(Self.shown(words[i - 1])) needs a value") }
            return words[i]
        }
        /// The key after `algorithm`'s name: `KEYWORD K` unless the algorithm is null.
        func keyAfter(_ keyword: String, length: Int?) throws(SecgwSyntaxError) -> [UInt8] {
            let word = try value()
            guard word == keyword else { throw SecgwSyntaxError("expected '\(keyword)' after the algorithm") }
            let text = try value()
            guard let bytes = Self.keyBytes(text) else {
                throw SecgwSyntaxError("bad \(keyword): expected hex bytes separated by ':'")
            }
            if let length, bytes.count != length {
                throw SecgwSyntaxError("\(keyword) must be \(length) bytes, found \(bytes.count)")
            }
            return bytes
        }
        while i < words.count {
            let word = words[i]
            let repeatable: Set<Substring> = ["telemetry", "reassembly_en", "mss", "esn", "flow-direction", "udp-encap"]
            if seen.contains(word) && !repeatable.contains(word) {
                throw SecgwSyntaxError("\(Self.shown(word)) given twice")
            }
            seen.insert(word)
            switch word {
            case "mode":
                switch try value() {
                case "ipv4-tunnel": mode = .tunnel; tunnelIPv4 = true
                case "ipv6-tunnel": mode = .tunnel; tunnelIPv4 = false
                case "transport": mode = .transport
                case let other:
                    throw SecgwSyntaxError("bad mode \(Self.shown(other)): expected ipv4-tunnel, ipv6-tunnel or transport")
                }
            case "cipher_algo":
                let name = String(try value())
                guard Self.ciphers.contains(name) else { throw SecgwSyntaxError("unknown cipher_algo \(Self.shown(Substring(name)))") }
                cipher = name
                if name != "null" { _ = try keyAfter("cipher_key", length: nil) }
            case "auth_algo":
                let name = String(try value())
                guard Self.auths.contains(name) else { throw SecgwSyntaxError("unknown auth_algo \(Self.shown(Substring(name)))") }
                auth = name
                if name != "null" { _ = try keyAfter("auth_key", length: nil) }
            case "aead_algo":
                let name = String(try value())
                guard let entry = Self.aeads.first(where: { $0.name == name }) else {
                    throw SecgwSyntaxError("unknown aead_algo \(Self.shown(Substring(name)))")
                }
                aead = (name, entry.transform)
                key = try keyAfter("aead_key", length: entry.keyLength)
            case "src", "dst":
                let text = try value()
                guard let address = IPAddress(text) else {
                    throw SecgwSyntaxError("bad \(word) \(Self.shown(text)): expected an IPv4 or IPv6 address")
                }
                if word == "src" { source = address } else { destination = address }
            case "type":
                let text = try value()
                type = String(text)
                let types = ["no-offload", "cpu-crypto", "inline-crypto-offload", "inline-protocol-offload",
                             "lookaside-protocol-offload"]
                guard types.contains(type) else { throw SecgwSyntaxError("bad type \(Self.shown(text))") }
                if type != "no-offload" {
                    changes.append("type \(type) dropped: Sluice does the ESP processing itself, with its own "
                                   + "crypto engines (crypto-engine auto|ipsec-mb|sodium)")
                }
            case "port_id":
                let text = try value()
                guard Self.decimal(text) != nil else { throw SecgwSyntaxError("bad port_id \(Self.shown(text))") }
                changes.append("port_id \(text) dropped: Sluice routes ESP by the outer destination, so an rt "
                               + "line must cover the SA's dst")
            case "fallback":
                changes.append("fallback \(Self.shown(try value())) dropped: there is no inline offload to fall back from")
            case "flow-direction":
                let port = try value()
                let queue = try value()
                changes.append("flow-direction \(Self.shown(port)) \(Self.shown(queue)) dropped: Sluice spreads "
                               + "ESP over queues by RSS")
            case "mss":
                changes.append("mss \(Self.shown(try value())) dropped: Sluice does no TSO")
            case "reassembly_en":
                changes.append("reassembly_en dropped: Sluice does no hardware reassembly")
            case "telemetry":
                changes.append("telemetry dropped: Sluice counts per SA and drop reason itself")
            case "esn":
                let text = try value()
                guard let value = Self.decimal(text) else { throw SecgwSyntaxError("bad esn \(Self.shown(text))") }
                esn = value
                if value > 1 {
                    changes.append("esn \(value): ESN is on, but the initial value is not carried over (Sluice "
                                   + "starts at seq 1 outbound, 0 inbound; add 'seq N' by hand if the peer needs it)")
                }
            case "udp-encap":
                udpEncapsulation = true
                changes.append("udp-encap: translated as 'encap udp', ports 4500 to 4500 (RFC 3948)")
            default:
                throw SecgwSyntaxError("unrecognized input \(Self.shown(word)) in an sa rule")
            }
            i += 1
        }
        guard let mode else { throw SecgwSyntaxError("missing argument 'mode'") }
        if mode == .transport, source != nil || destination != nil {
            throw SecgwSyntaxError("transport mode takes no src or dst")
        }
        if mode == .tunnel {
            for address in [source, destination].compactMap({ $0 }) where address.isIPv4 != tunnelIPv4 {
                throw SecgwSyntaxError("\(address) is not an \(tunnelIPv4 ? "IPv4" : "IPv6") address "
                                       + "(mode \(tunnelIPv4 ? "ipv4" : "ipv6")-tunnel)")
            }
        }
        let algorithm: SecgwAlgorithm
        if let aead {
            guard cipher == nil && auth == nil else {
                throw SecgwSyntaxError("aead_algo cannot go with cipher_algo or auth_algo")
            }
            algorithm = .aead(name: aead.name, transform: aead.transform)
        } else if let cipher, let auth {
            algorithm = .cipherAuth(cipher: cipher, auth: auth)
        } else {
            throw SecgwSyntaxError("missing algorithm: give aead_algo, or cipher_algo and auth_algo")
        }
        if udpEncapsulation && !type.hasPrefix("inline") && !type.hasPrefix("lookaside") {
            throw SecgwSyntaxError("udp-encap needs an inline or lookaside offload type (secgw refuses it with \(type))")
        }
        for change in changes { notes.append(SecgwNote(line: line, text: change, leftOut: false)) }
        sas.append(SecgwSA(line: line, direction: direction, spi: spi, algorithm: algorithm, key: key, mode: mode,
                           tunnelIPv4: tunnelIPv4, source: source, destination: destination, esn: esn,
                           udpEncapsulation: udpEncapsulation))
    }

    // MARK: rt, neigh

    private mutating func readRoute(_ words: [Substring], line: Int) throws(SecgwSyntaxError) {
        guard words.count >= 2, words[1] == "ipv4" || words[1] == "ipv6" else {
            throw SecgwSyntaxError("expected 'rt ipv4|ipv6 dst P port N'")
        }
        let ipv4 = words[1] == "ipv4"
        var prefix = IPPrefix(address: ipv4 ? .v4(IPv4Address(0)) : .v6(IPv6Address(high: 0, low: 0)), length: 0)!
        var port: UInt32 = 0
        var i = 2
        while i < words.count {
            let word = words[i]
            switch word {
            case "dst", "port":
                guard i + 1 < words.count else { throw SecgwSyntaxError("\(Self.shown(word)) needs a value") }
                let text = words[i + 1]
                i += 1
                if word == "port" {
                    guard let value = Self.decimal(text).flatMap(UInt32.init(exactly:)) else {
                        throw SecgwSyntaxError("bad port \(Self.shown(text)): expected a number")
                    }
                    port = value
                } else {
                    prefix = try readSelectorPrefix(text, ipv4: ipv4, option: "dst", line: line)
                }
            default:
                notes.append(SecgwNote(line: line, text: "\(Self.shown(word)) ignored, as secgw ignores it in rt rules",
                                       leftOut: false))
            }
            i += 1
        }
        if !words.contains("port") {
            notes.append(SecgwNote(line: line, text: "no port: secgw's default, port 0", leftOut: false))
        }
        routes.append(SecgwRoute(line: line, prefix: prefix, port: port))
    }

    private mutating func readNeighbor(_ words: [Substring], line: Int) throws(SecgwSyntaxError) {
        guard words.count == 4, words[1] == "port" else { throw SecgwSyntaxError("expected 'neigh port N MAC'") }
        guard let port = Self.decimal(words[2]).flatMap(UInt32.init(exactly:)) else {
            throw SecgwSyntaxError("bad port \(Self.shown(words[2])): expected a number")
        }
        guard let mac = MACAddress(words[3]) else {
            throw SecgwSyntaxError("bad MAC address \(Self.shown(words[3])): expected six hex bytes "
                                   + "such as 02:00:00:00:00:01")
        }
        neighbors.append(SecgwNeighbor(line: line, port: port, mac: mac))
    }

    // MARK: Values

    /// `'word'`, or `<redacted>` for a word that may be a key (hex bytes
    /// joined by more colons than an IPv6 address has): a misplaced key is
    /// never echoed.
    static func shown(_ word: Substring) -> String {
        let colons = word.filter { $0 == ":" }.count
        return colons > 7 && word.allSatisfy({ $0 == ":" || ($0.isHexDigit && $0.isASCII) }) ? "<redacted>" : "'\(word)'"
    }

    /// Decimal digits only.
    static func decimal(_ text: Substring) -> UInt64? {
        guard !text.isEmpty, text.count <= 20, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt64(text)
    }

    /// `LOW:HIGH`, each 0…65535.
    static func range(_ text: Substring) -> (UInt16, UInt16)? {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 2, let low = decimal(parts[0]).flatMap(UInt16.init(exactly:)),
              let high = decimal(parts[1]).flatMap(UInt16.init(exactly:)) else { return nil }
        return (low, high)
    }

    /// Hex bytes of one or two digits separated by `:`, as secgw writes keys.
    static func keyBytes(_ text: Substring) -> [UInt8]? {
        var bytes: [UInt8] = []
        for part in text.split(separator: ":", omittingEmptySubsequences: false) {
            guard (1...2).contains(part.count), part.allSatisfy({ $0.isHexDigit && $0.isASCII }),
                  let byte = UInt8(part, radix: 16) else { return nil }
            bytes.append(byte)
        }
        return bytes
    }
}

// MARK: - Translation

struct SecgwTranslator {
    let file: SecgwFile
    var config = GatewayConfig()
    var lines: [String] = []
    var notes: [SecgwNote]

    init(file: SecgwFile) {
        self.file = file
        notes = file.notes
    }

    mutating func translate(unprotectedPorts: Set<UInt16>?) -> SecgwTranslation {
        let routes = effectiveRoutes()
        let neighbors = effectiveNeighbors()
        addPorts(routes: routes, neighbors: neighbors, unprotected: unprotectedPorts)
        let via = addNeighbors(routes: routes, neighbors: neighbors)
        addRoutes(routes, via: via)
        let translatedSAs = addSAs()
        addPolicies(translatedSAs: translatedSAs)

        let ordered = notes.enumerated().sorted { a, b in
            (a.element.line ?? 0, a.offset) < (b.element.line ?? 0, b.offset)
        }.map(\.element)
        let name = file.name
        return SecgwTranslation(
            lines: lines,
            notes: ordered.map { ($0.line.map { "\(name):\($0): " } ?? "\(name): ") + $0.text },
            errors: file.errors.enumerated().sorted { ($0.element.line, $0.offset) < ($1.element.line, $1.offset) }
                .map { "\(name):\($0.element.line): \($0.element.message)" },
            isComplete: file.errors.isEmpty && !notes.contains(where: \.leftOut))
    }

    private mutating func note(_ line: Int?, _ text: String, leftOut: Bool) {
        notes.append(SecgwNote(line: line, text: text, leftOut: leftOut))
    }

    /// Applies `command` and emits it; if Sluice refuses it, a note instead.
    @discardableResult
    private mutating func add(_ command: Command, line: Int?) -> Bool {
        let located = LocatedCommand(command, at: SourceLocation(file: file.name, line: line ?? 0, column: 1))
        do {
            try config.apply(located)
            lines.append(command.description)
            return true
        } catch {
            note(line, "left out: Sluice refuses '\(command.redactedDescription)': \(error.message)", leftOut: true)
            return false
        }
    }

    // MARK: Ports, neighbors, routes

    /// Routes Sluice can take: ports in range, one per prefix (rte_lpm keeps
    /// the later of two equal prefixes).
    private mutating func effectiveRoutes() -> [(route: SecgwRoute, port: UInt16)] {
        var result: [(route: SecgwRoute, port: UInt16)] = []
        for route in file.routes {
            guard let port = UInt16(exactly: route.port), CommandParser.portIDs.contains(port) else {
                note(route.line, "left out: port \(route.port) is beyond Sluice's ports "
                     + "\(CommandParser.portIDs.lowerBound)…\(CommandParser.portIDs.upperBound)", leftOut: true)
                continue
            }
            if let index = result.firstIndex(where: { $0.route.prefix == route.prefix }) {
                note(result[index].route.line, "replaced by line \(route.line), the later route to \(route.prefix), "
                     + "as secgw replaces it", leftOut: false)
                result.remove(at: index)
            }
            result.append((route, port))
        }
        return result
    }

    /// One `neigh` per port, the last (secgw overwrites the port's MAC).
    private mutating func effectiveNeighbors() -> [UInt16: SecgwNeighbor] {
        var result: [UInt16: SecgwNeighbor] = [:]
        for neighbor in file.neighbors {
            guard let port = UInt16(exactly: neighbor.port), CommandParser.portIDs.contains(port) else {
                note(neighbor.line, "left out: port \(neighbor.port) is beyond Sluice's ports "
                     + "\(CommandParser.portIDs.lowerBound)…\(CommandParser.portIDs.upperBound)", leftOut: true)
                continue
            }
            if let earlier = result[port] {
                note(earlier.line, "replaced by line \(neighbor.line), the later neigh for port \(port), "
                     + "as secgw replaces it", leftOut: false)
            }
            result[port] = neighbor
        }
        return result
    }

    /// `port N role R` for every port the file uses and every unprotected
    /// port given. Without `unprotected`, a port is unprotected when a tunnel
    /// SA's peer is routed through it.
    private mutating func addPorts(routes: [(route: SecgwRoute, port: UInt16)], neighbors: [UInt16: SecgwNeighbor],
                                   unprotected: Set<UInt16>?) {
        var used = Set(routes.map(\.port)).union(neighbors.keys)
        let unprotectedPorts: Set<UInt16>
        if let unprotected {
            used.formUnion(unprotected.filter { CommandParser.portIDs.contains($0) })
            unprotectedPorts = unprotected
        } else {
            var inferred: Set<UInt16> = []
            for sa in file.sas where sa.mode == .tunnel {
                guard let peer = sa.direction == .outbound ? sa.destination : sa.source else { continue }
                let best = routes.filter { $0.route.prefix.contains(peer) }
                    .max { $0.route.prefix.length < $1.route.prefix.length }
                if let best { inferred.insert(best.port) }
            }
            unprotectedPorts = inferred
            if !used.isEmpty {
                let list = { (ports: [UInt16]) in
                    ports.isEmpty ? "none" : ports.map(String.init).joined(separator: ", ")
                }
                note(nil, "port roles come from secgw's -u option, not the file: guessed unprotected "
                     + "\(list(used.filter { inferred.contains($0) }.sorted())) (the SAs' peers are routed there), "
                     + "protected \(list(used.filter { !inferred.contains($0) }.sorted())); "
                     + "give --unprotected-ports to set them", leftOut: false)
            }
        }
        for port in used.sorted() {
            add(.port(id: port, role: unprotectedPorts.contains(port) ? .unprotected : .protected, addresses: []),
                line: nil)
        }
        if !used.isEmpty {
            note(nil, "secgw ports have no addresses: add 'port N address A/LEN' by hand where the gateway "
                 + "should own one", leftOut: false)
        }
    }

    /// A placeholder neighbor for each port with a `neigh` line, per address
    /// family its routes use. Returns the next hop of each (port, family).
    private mutating func addNeighbors(routes: [(route: SecgwRoute, port: UInt16)],
                                       neighbors: [UInt16: SecgwNeighbor]) -> [PortFamily: IPAddress] {
        var via: [PortFamily: IPAddress] = [:]
        for (port, neighbor) in neighbors.sorted(by: { $0.key < $1.key }) {
            let families = [true, false].filter { ipv4 in
                routes.contains { $0.port == port && $0.route.prefix.address.isIPv4 == ipv4 }
            }
            if families.isEmpty {
                note(neighbor.line, "not needed: no rt rule sends traffic out of port \(port)", leftOut: false)
                continue
            }
            var added: [String] = []
            for ipv4 in families {
                let nexthop = SecgwImport.placeholder(port: port, ipv4: ipv4)
                if add(.neighbor(address: nexthop, mac: neighbor.mac, port: port), line: neighbor.line) {
                    via[PortFamily(port: port, ipv4: ipv4)] = nexthop
                    added.append(nexthop.description)
                }
            }
            if !added.isEmpty {
                let one = added.count == 1
                note(neighbor.line, "secgw's per-port MAC became neighbor\(one ? "" : "s") "
                     + added.joined(separator: " and ") + " (placeholder next hop\(one ? "" : "s"), never on the wire) "
                     + "and port \(port)'s routes go via \(one ? "it" : "them"); use the peer's real address "
                     + "instead if you like", leftOut: false)
            }
        }
        return via
    }

    private mutating func addRoutes(_ routes: [(route: SecgwRoute, port: UInt16)], via: [PortFamily: IPAddress]) {
        var warned: Set<UInt16> = []
        for (route, port) in routes {
            let key = PortFamily(port: port, ipv4: route.prefix.address.isIPv4)
            if let nexthop = via[key] {
                add(.routeAdd(prefix: route.prefix, target: .via(nexthop)), line: route.line)
                continue
            }
            add(.routeAdd(prefix: route.prefix, target: .port(port)), line: route.line)
            if !warned.contains(port) {
                warned.insert(port)
                note(route.line, "no neigh rule for port \(port): secgw would use its built-in MAC for the port; "
                     + "translated as 'route add … port \(port)', whose destinations each need a Sluice "
                     + "neighbor (else no_neighbor drops)", leftOut: true)
            }
        }
    }

    // MARK: SAs and policies

    /// Emits the SAs Sluice supports; returns the (direction, SPI) pairs emitted.
    private mutating func addSAs() -> Set<SASlot> {
        var translated: Set<SASlot> = []
        for sa in file.sas {
            guard case .aead(_, let transform) = sa.algorithm, let transform else {
                let what: String
                switch sa.algorithm {
                case .aead(let name, _): what = "aead_algo \(name)"
                case .cipherAuth(let cipher, let auth): what = "cipher_algo \(cipher) with auth_algo \(auth)"
                }
                note(sa.line, "left out: SA \(sa.direction.rawValue) \(sa.spi) uses \(what); Sluice has AEAD "
                     + "SAs only (aes-gcm-128, aes-gcm-256, chacha20-poly1305)", leftOut: true)
                continue
            }
            if sa.mode == .tunnel && (sa.source == nil || sa.destination == nil) {
                note(sa.line, "left out: a tunnel SA needs src and dst (secgw would use 0.0.0.0)", leftOut: true)
                continue
            }
            let material: SAKeyMaterial
            do {
                material = try SAKeyMaterial(sa.key)  // not wiped: the import writes keys out as text anyway
            } catch {
                note(sa.line, "left out: SA \(sa.direction.rawValue) \(sa.spi): \(error)", leftOut: true)
                continue
            }
            let config = SAConfig(spi: SecurityParameterIndex(sa.spi), direction: sa.direction,
                                  source: sa.source, destination: sa.destination, mode: sa.mode, aead: transform,
                                  keyMaterial: material, esn: sa.esn > 0,
                                  encapsulation: sa.udpEncapsulation ? .rfc3948 : nil)
            if add(.saAdd(config), line: sa.line) {
                translated.insert(SASlot(direction: sa.direction, spi: sa.spi))
            }
        }
        return translated
    }

    private mutating func addPolicies(translatedSAs: Set<SASlot>) {
        guard let highest = file.policies.map(\.priority).max() else { return }
        note(nil, "sp priorities: rte_acl picks the highest pri, Sluice the lowest priority; each became "
             + "priority \(highest) − pri, so the same policy wins", leftOut: false)
        var emitted: [PolicyKey: (line: Int, action: PolicyAction)] = [:]
        for policy in file.policies {
            let action: PolicyAction
            switch policy.action {
            case .bypass: action = .bypass
            case .discard: action = .discard
            case .protect(let spi):
                guard translatedSAs.contains(SASlot(direction: policy.direction.saDirection, spi: spi)) else {
                    let sa = file.sas.first { $0.direction == policy.direction.saDirection && $0.spi == spi }
                    note(policy.line, "left out: it protects with SA \(policy.direction.rawValue) \(spi), "
                         + (sa.map { "which was left out (line \($0.line))" }
                            ?? "which the file does not define (secgw would refuse to start)"), leftOut: true)
                    continue
                }
                action = .protect(SecurityParameterIndex(spi))
            }
            guard let selector = selector(of: policy) else { continue }
            let key = PolicyKey(selector: selector, priority: highest - policy.priority)
            if let earlier = emitted[key] {
                if earlier.action == action {
                    note(policy.line, "repeats line \(earlier.line): carried over once", leftOut: false)
                } else {
                    note(policy.line, "left out: same selector and pri as line \(earlier.line) with another action: "
                         + "rte_acl picks either, Sluice keeps line \(earlier.line)'s", leftOut: true)
                }
                continue
            }
            if add(.spAdd(id: nil, selector: selector, priority: key.priority, action: action), line: policy.line) {
                emitted[key] = (policy.line, action)
            }
        }
        noteTies()
    }

    /// The Sluice selector of `policy`, or nil (with a note) when it has none.
    private mutating func selector(of policy: SecgwPolicy) -> PolicySelector? {
        var proto: IPProtocol? = nil
        switch policy.proto {
        case (_, 0): proto = nil
        case (let value, 0xff): proto = IPProtocol(value)
        case (let value, let mask) where value == mask:
            proto = IPProtocol(value)
            note(policy.line, "proto \(value):\(mask): rte_acl reads it as value:mask and also matches the other "
                 + "protocols with those bits set; translated as proto \(value) alone", leftOut: false)
        case (let value, let mask):
            note(policy.line, "left out: proto \(value):\(mask) is a value:mask pair (rte_acl bitmask) matching "
                 + "several protocols; a Sluice selector names one", leftOut: true)
            return nil
        }
        var ports: [ClosedRange<UInt16>?] = []
        for (given, name) in [(policy.sourcePorts, "sport"), (policy.destinationPorts, "dport")] {
            guard let (low, high) = given else {
                note(policy.line, "no \(name): rte_acl's default is 0:0 (port 0 only); translated as any port, "
                     + "what such a rule usually means", leftOut: false)
                ports.append(nil)
                continue
            }
            let text = "\(low):\(high)"
            guard low <= high else {
                note(policy.line, "left out: \(name) \(text) is an empty range: the rule matches nothing", leftOut: true)
                return nil
            }
            if low == 0 && high == UInt16.max { ports.append(nil); continue }
            guard let proto, PolicySelector.portProtocols.contains(proto) else {
                note(policy.line, "left out: \(name) \(text) without proto tcp, udp or sctp: rte_acl compares the "
                     + "bytes after the IP header whatever the protocol; Sluice selectors have ports only for "
                     + "tcp, udp and sctp", leftOut: true)
                return nil
            }
            ports.append(low...high)
        }
        return PolicySelector(direction: policy.direction, source: policy.source, destination: policy.destination,
                              proto: proto, sourcePorts: ports[0], destinationPorts: ports[1])
    }

    /// Notes pairs of overlapping policies with one pri and different
    /// actions: rte_acl returns either, Sluice the earlier line's.
    private mutating func noteTies() {
        let policies = file.policies
        for (j, later) in policies.enumerated() {
            for earlier in policies[..<j] where earlier.priority == later.priority
                && earlier.direction == later.direction && earlier.ipv4 == later.ipv4
                && earlier.action != later.action && Self.overlap(earlier, later) && !Self.identical(earlier, later) {
                note(later.line, "overlaps line \(earlier.line) with the same pri \(later.priority) and another "
                     + "action: rte_acl picks either, Sluice line \(earlier.line)'s (the earlier)", leftOut: false)
                break
            }
        }
    }

    /// Same selector: `addPolicies` notes those itself.
    static func identical(_ a: SecgwPolicy, _ b: SecgwPolicy) -> Bool {
        a.source == b.source && a.destination == b.destination && a.proto == b.proto
            && a.sourcePorts.map { [$0.low, $0.high] } == b.sourcePorts.map { [$0.low, $0.high] }
            && a.destinationPorts.map { [$0.low, $0.high] } == b.destinationPorts.map { [$0.low, $0.high] }
    }

    static func overlap(_ a: SecgwPolicy, _ b: SecgwPolicy) -> Bool {
        func prefixes(_ x: IPPrefix, _ y: IPPrefix) -> Bool {
            x.length <= y.length ? x.contains(y.address) : y.contains(x.address)
        }
        // A missing range counts as any port, as the translation has it.
        func ranges(_ x: (low: UInt16, high: UInt16)?, _ y: (low: UInt16, high: UInt16)?) -> Bool {
            let x = x ?? (0, .max), y = y ?? (0, .max)
            return x.low <= x.high && y.low <= y.high && x.low <= y.high && y.low <= x.high
        }
        let mask = a.proto.mask & b.proto.mask
        return prefixes(a.source, b.source) && prefixes(a.destination, b.destination)
            && a.proto.value & mask == b.proto.value & mask
            && ranges(a.sourcePorts, b.sourcePorts) && ranges(a.destinationPorts, b.destinationPorts)
    }
}

/// A port and an address family: the key of a placeholder next hop.
struct PortFamily: Hashable {
    var port: UInt16
    var ipv4: Bool
}

/// What makes two Sluice policies the same one.
struct PolicyKey: Hashable {
    var selector: PolicySelector
    var priority: UInt32
}

/// An SA as secgw's policies name it: direction and SPI.
struct SASlot: Hashable {
    var direction: IPsecDirection
    var spi: UInt32
}
