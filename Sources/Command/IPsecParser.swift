// The grammar of the IPsec verbs: `sa`, `sp` and `crypto-engine`. Fixed words
// first (`sa add spi S dir D`, `sp add [id N] dir D`), then options in any
// order. Checks that need only the line (a value's range, an option that the
// direction or mode makes meaningless) are made here; checks between fields
// and against the state are `GatewayConfig.apply`'s, so that commands built in
// code get them too.

import Packet

extension CommandParser {
    /// `spd driver auto|linear|hash-list|cut-tree`
    static func parseSPD(_ c: inout WordCursor) throws(CommandError) -> Command {
        _ = try c.keyword(["driver"])
        return .spdDriver(try c.readChoice(SPDDriverChoice.self, field: .spdDriver))
    }

    /// `shared-sa atomic|handoff`
    static func parseSharedSA(_ c: inout WordCursor) throws(CommandError) -> Command {
        .sharedSA(try c.readChoice(SharedSAChoice.self, field: .sharedSA))
    }

    /// `crypto-engine auto|ipsec-mb|sodium`
    static func parseCryptoEngine(_ c: inout WordCursor) throws(CommandError) -> Command {
        .cryptoEngine(try c.readChoice(CryptoEngineChoice.self, field: .cryptoEngine))
    }

    /// `sa add spi S dir in|out …`, `sa update spi S dir in|out …` (the same
    /// options, replacing the SA of that identifier) or `sa del spi S [dst B]`.
    static func parseSA(_ c: inout WordCursor) throws(CommandError) -> Command {
        let action = try c.keyword(["add", "update", "del"])
        _ = try c.keyword(["spi"])
        let spi = try c.readSPI()
        if action.text == "del" {
            var destination: IPAddress? = nil
            try c.options(["dst"]) { (_, c) throws(CommandError) in
                destination = try c.readAddress(field: .destination)
            }
            return .saDel(spi: spi, destination: destination)
        }
        _ = try c.keyword(["dir"])
        let direction = try c.readChoice(IPsecDirection.self, field: .direction)
        let sa = try parseSAOptions(&c, spi: spi, direction: direction)
        return action.text == "update" ? .saUpdate(sa) : .saAdd(sa)
    }

    /// The options of `sa add` after `dir D`:
    /// `[src A dst B] mode M aead X key K [esn] [seq N] [replay-window W]
    /// [encap udp [SPORT DPORT]] [df copy|set|clear] [ttl T] [crypto-engine E]`.
    private static func parseSAOptions(_ c: inout WordCursor, spi: SecurityParameterIndex,
                                       direction: IPsecDirection) throws(CommandError) -> SAConfig {
        var source: IPAddress? = nil
        var destination: IPAddress? = nil
        var mode: SAMode? = nil
        var aead: AEADTransform? = nil
        var key: SAKeyMaterial? = nil
        var esn = false
        var sequence: UInt64? = nil
        var replayWindow = SAConfig.defaultReplayWindow
        var encapsulation: UDPEncapsulation? = nil
        var df = OuterDF.copy
        var ttl = SAConfig.defaultTTL
        var engine: CryptoEngineChoice? = nil
        var reqid: UInt32? = nil
        var cpu: UInt32? = nil
        var lifetime = SALifetime()
        var tunnelOnly: Word? = nil  // the first `df` or `ttl`, refused in transport mode

        let keywords = ["src", "dst", "mode", "aead", "key", "esn", "seq", "replay-window", "encap", "df", "ttl",
                        "crypto-engine", "reqid", "cpu", "lifetime"]
        try c.options(keywords, required: ["mode", "aead", "key"]) { (option, c) throws(CommandError) in
            switch option.text {
            case "src": source = try c.readAddress(field: .source)
            case "dst": destination = try c.readAddress(field: .destination)
            case "mode": mode = try c.readChoice(SAMode.self, field: .mode)
            case "aead": aead = try c.readChoice(AEADTransform.self, field: .aead)
            case "key": key = try c.readKeyMaterial()
            case "esn":
                esn = true
                c.mark(.esn, option)
            case "seq": sequence = try c.readNumber("sequence number", in: 0...UInt64.max, hex: true, field: .sequence)
            case "replay-window":
                guard direction == .inbound else {
                    throw c.error("replay-window applies only to inbound SAs (dir in)", at: option)
                }
                replayWindow = try c.readNumber("replay window", in: 0...SAConfig.replayWindows.upperBound, field: .replayWindow)
            case "encap":
                encapsulation = try c.readEncapsulation()
            case "df":
                tunnelOnly = tunnelOnly ?? option
                df = try c.readChoice(OuterDF.self, field: .df)
            case "ttl":
                tunnelOnly = tunnelOnly ?? option
                ttl = try c.readNumber("TTL", in: SAConfig.ttls, field: .ttl)
            case "reqid": reqid = try c.readNumber("reqid", in: SAConfig.reqids, field: .reqid)
            case "cpu": cpu = try c.readNumber("lcore id", in: 0...UInt32(Int32.max), field: .cpu)
            case "lifetime": lifetime = try c.readLifetime()
            default:
                engine = try c.readChoice(CryptoEngineChoice.self, field: .cryptoEngine)
            }
        }
        guard let mode, let aead, let key else {
            // options() has already insisted on all three.
            throw CommandError("expected 'mode', 'aead' and 'key'", at: c.endLocation)
        }
        if mode == .transport, let word = tunnelOnly {
            throw c.error("\(word.text) applies only to tunnel mode (the outer header)", at: word)
        }
        var sa = SAConfig(spi: spi, direction: direction, source: source, destination: destination, mode: mode,
                          aead: aead, keyMaterial: key, esn: esn, sequence: sequence, replayWindow: replayWindow,
                          encapsulation: encapsulation, df: df, ttl: ttl, cryptoEngine: engine,
                          reqid: reqid, cpu: cpu)
        sa.lifetime = lifetime
        return sa
    }

    /// `sp add [id N] dir D src P dst P [proto X] [sport R] [dport R] priority N action A`,
    /// `sp del id N` or `sp del dir D src P dst P [proto X] [sport R] [dport R] priority N`.
    static func parseSP(_ c: inout WordCursor) throws(CommandError) -> Command {
        let verb = try c.keyword(["add", "del"])
        var id: PolicyID? = nil
        if try c.keyword(["id", "dir"]).text == "id" {
            id = try c.readPolicyID()
            if verb.text == "del", let id { return .spDel(.id(id)) }
            _ = try c.keyword(["dir"])
        }
        let direction = try c.readChoice(PolicyDirection.self, field: .direction)
        let isAdd = verb.text == "add"

        var source: IPPrefix? = nil
        var destination: IPPrefix? = nil
        var proto: IPProtocol? = nil
        var sourcePorts: ClosedRange<UInt16>? = nil
        var destinationPorts: ClosedRange<UInt16>? = nil
        var ifID: UInt32 = 0
        var priority: UInt32? = nil
        var action: PolicyAction? = nil
        var portWords: [Word] = []  // sport, dport, type, code as given
        let keywords = ["src", "dst", "proto", "sport", "dport", "type", "code", "if-id", "priority"]
            + (isAdd ? ["action"] : [])
        let required = ["src", "dst", "priority"] + (isAdd ? ["action"] : [])
        try c.options(keywords, required: required) { (option, c) throws(CommandError) in
            switch option.text {
            case "src": source = try c.readRoutePrefix(field: .source)
            case "dst": destination = try c.readRoutePrefix(field: .destination)
            case "proto": proto = try c.readProtocol()
            case "sport", "type":
                guard sourcePorts == nil else { throw c.error("give either sport or type, once", at: option) }
                portWords.append(option)
                sourcePorts = try c.readPortRange(field: .sourcePorts, icmp: option.text == "type")
            case "dport", "code":
                guard destinationPorts == nil else { throw c.error("give either dport or code, once", at: option) }
                portWords.append(option)
                destinationPorts = try c.readPortRange(field: .destinationPorts, icmp: option.text == "code")
            case "if-id": ifID = try c.readNumber("interface id", in: 0...UInt32.max, field: .ifID)
            case "priority": priority = try c.readNumber("priority", in: 0...UInt32.max, field: .priority)
            default: action = try c.readPolicyAction()
            }
        }
        guard let source, let destination, let priority else {
            // options() has already insisted on them.
            throw CommandError("expected 'src', 'dst' and 'priority'", at: c.endLocation)
        }
        // ICMP's fields are type and code, the port protocols' sport and dport.
        let icmp = proto == .icmp || proto == .icmpv6
        for word in portWords {
            let icmpWord = word.text == "type" || word.text == "code"
            if icmpWord && !icmp {
                throw c.error("'\(word.text)' is ICMP's (proto icmp or icmpv6); ports are sport and dport", at: word)
            }
            if !icmpWord && icmp {
                throw c.error("ICMP has no ports: use type and code, not '\(word.text)'", at: word)
            }
        }
        let selector = PolicySelector(direction: direction, source: source, destination: destination, proto: proto,
                                      sourcePorts: sourcePorts, destinationPorts: destinationPorts, ifID: ifID)
        guard isAdd else { return .spDel(.match(selector, priority: priority)) }
        guard let action else { throw CommandError("expected 'action'", at: c.endLocation) }
        if action.acquiresPerCPU && direction != .outbound {
            throw CommandError("'per-cpu' asks for a worker's own outbound SA: 'dir out' policies only", at: c.endLocation)
        }
        return .spAdd(id: id, selector: selector, priority: priority, action: action)
    }
}

extension WordCursor {
    /// After `encap`: `udp`, optionally followed by the source and destination ports.
    mutating func readEncapsulation() throws(CommandError) -> UDPEncapsulation {
        _ = try keyword(["udp"])
        guard let next = peek(), next.text.first.map({ $0.isASCII && $0.isNumber }) == true else {
            return .rfc3948
        }
        let sourcePort = try readNumber("UDP port", in: UDPEncapsulation.ports, field: .encapSourcePort)
        let destinationPort = try readNumber("UDP port", in: UDPEncapsulation.ports, field: .encapDestinationPort)
        return UDPEncapsulation(sourcePort: sourcePort, destinationPort: destinationPort)
    }

    /// After `lifetime`: one or more of `bytes|packets|seconds|use-seconds`,
    /// each followed by `soft N`, `hard N` or both.
    mutating func readLifetime() throws(CommandError) -> SALifetime {
        var lifetime = SALifetime()
        let kinds = SALifetime.Kind.allCases.map(\.rawValue)
        var first: Word? = nil
        repeat {
            let word = try keyword(kinds)
            first = first ?? word
            // keyword() accepted one of `kinds`.
            let kind = SALifetime.Kind(rawValue: String(word.text))!
            if lifetime[kind] != nil { throw error("lifetime \(kind.rawValue) given twice", at: word) }
            var limits = SALifetime.Limits()
            while let bound = peek(), bound.text == "soft" || bound.text == "hard" {
                _ = next()
                let value = try readNumber("\(kind.rawValue) limit", in: 1...UInt64.max, field: .lifetime)
                if bound.text == "soft" {
                    guard limits.soft == nil else { throw error("soft given twice", at: bound) }
                    limits.soft = value
                } else {
                    guard limits.hard == nil else { throw error("hard given twice", at: bound) }
                    limits.hard = value
                }
            }
            if limits.soft == nil && limits.hard == nil {
                throw error("expected 'soft N' or 'hard N' after '\(word.text)'", at: word)
            }
            if let soft = limits.soft, let hard = limits.hard, soft >= hard {
                throw error("\(kind.rawValue) soft \(soft) must be below hard \(hard)", at: word)
            }
            lifetime[kind] = limits
        } while peek().map { kinds.contains(String($0.text)) } == true
        if let first { mark(.lifetime, first) }
        return lifetime
    }

    /// After `action`: `protect spi S`, `protect reqid N [per-cpu]`, `bypass` or `discard`.
    mutating func readPolicyAction() throws(CommandError) -> PolicyAction {
        let word = try keyword(["protect", "bypass", "discard"])
        mark(.action, word)
        switch word.text {
        case "bypass": return .bypass
        case "discard": return .discard
        default:
            if try keyword(["spi", "reqid"]).text == "reqid" {
                let reqid: UInt32 = try readNumber("reqid", in: SAConfig.reqids, field: .reqid)
                guard peek()?.text == "per-cpu" else { return .protectReqID(reqid) }
                _ = next()
                return .protectReqID(reqid, perCPU: true)
            }
            return .protect(try readSPI())
        }
    }
}
