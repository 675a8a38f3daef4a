// dpdk-test-acl's rule and trace files (the ClassBench text formats), read
// into SPD rules and parsed packets and written from them, so that
// `--mode spd` and dpdk-test-acl classify exactly the same input.
//
// Rules, one per line (blank lines and lines starting with '#' are skipped;
// fields after the ninth are ignored, as ClassBench files carry flags there):
//
//     @SRC/LEN DST/LEN SPORT_LO : SPORT_HI DPORT_LO : DPORT_HI PROTO/MASK
//
// Addresses are dotted IPv4, or IPv6 text with `--ipv6`. Numbers follow C's
// strtoul with base 0: decimal, 0x… hexadecimal, 0… octal.
//
// Traces, one packet per line (same skipping; extra fields ignored):
//
//     SRC DST SPORT DPORT PROTO
//
// with IPv4 addresses as numbers (0xc0a80001) and IPv6 addresses as text.
//
// Mapping onto Sluice's classifiers:
//   * Priority: dpdk-test-acl gives the n-th rule line (n from 1) priority
//     RTE_ACL_MAX_PRIORITY - n and userdata n, so the earliest matching line
//     wins, and prints `result: n - 1`. Here the rule of line index i (from 0)
//     gets rank i and value i: the same winner and the same number, and no
//     match is UINT32_MAX on both sides.
//   * Protocol: mask 0x00 is ANY; 0xff is exact. rte_acl also accepts partial
//     masks, which a traffic selector cannot express: such lines are refused.
//   * Ports: 0 : 65535 is ANY. rte_acl compares the port fields of every
//     packet, whatever its protocol, so every trace is read with
//     `hasPorts = true`: then a selector's port ranges apply to each trace
//     exactly as rte_acl's do (Sluice's own parser sets `hasPorts` only for
//     protocols that carry ports; the files have no such notion).
//   * Interface ids do not exist in the format: rules and traces get ifID 0.

import Foundation
import IPsec
import Packet

enum ACLFiles {
    struct ParseError: Error, CustomStringConvertible {
        var path: String
        var line: Int
        var reason: String
        var description: String { "\(path):\(line): \(reason)" }
    }

    /// A file's lines that hold records: (1-based line number, text).
    static func records(ofFile path: String) throws -> [(Int, Substring)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ParseError(path: path, line: 0, reason: "cannot read the file")
        }
        let text = String(decoding: data, as: UTF8.self)
        var out: [(Int, Substring)] = []
        for (i, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let body = line.drop { $0 == " " || $0 == "\t" || $0 == "\r" }
            if body.isEmpty || body.first == "#" { continue }
            out.append((i + 1, line))
        }
        return out
    }

    static func fields(_ line: Substring) -> [Substring] {
        line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
    }

    /// C's strtoul(text, base 0), bounded by `limit`.
    static func number(_ text: Substring, limit: UInt64) -> UInt64? {
        var digits = text
        var radix = 10
        if digits.hasPrefix("0x") || digits.hasPrefix("0X") {
            digits = digits.dropFirst(2)
            radix = 16
        } else if digits.count > 1 && digits.hasPrefix("0") {
            digits = digits.dropFirst()
            radix = 8
        }
        guard !digits.isEmpty, let value = UInt64(digits, radix: radix), value <= limit else { return nil }
        return value
    }

    // MARK: - Rules

    /// The rules of a dpdk-test-acl rule file, rank and value = line index from 0.
    static func readRules(path: String, ipv6: Bool) throws -> [SPDRule] {
        var rules: [SPDRule] = []
        for (lineNumber, line) in try records(ofFile: path) {
            func fail(_ reason: String) -> ParseError { ParseError(path: path, line: lineNumber, reason: reason) }
            guard line.first == "@" else { throw fail("a rule line starts with '@'") }
            let f = fields(line.dropFirst())
            guard f.count >= 9 else { throw fail("expected 9 fields, found \(f.count)") }
            guard f[3] == ":", f[6] == ":" else { throw fail("port ranges are written LOW : HIGH") }
            guard let source = prefix(f[0], ipv6: ipv6) else { throw fail("bad source prefix '\(f[0])'") }
            guard let destination = prefix(f[1], ipv6: ipv6) else { throw fail("bad destination prefix '\(f[1])'") }
            guard let sl = number(f[2], limit: 65535), let sh = number(f[4], limit: 65535),
                  let dl = number(f[5], limit: 65535), let dh = number(f[7], limit: 65535) else {
                throw fail("bad port number")
            }
            guard sl <= sh, dl <= dh else { throw fail("empty port range") }
            let protoParts = f[8].split(separator: "/", omittingEmptySubsequences: false)
            guard protoParts.count == 2, let value = number(protoParts[0], limit: 255),
                  let mask = number(protoParts[1], limit: 255) else {
                throw fail("bad protocol '\(f[8])' (PROTO/MASK)")
            }
            let proto: IPProtocol?
            switch mask {
            case 0: proto = nil
            case 0xFF: proto = IPProtocol(UInt8(value))
            default: throw fail("protocol mask \(protoParts[1]) is neither 0x00 (any) nor 0xff (exact)")
            }
            func range(_ low: UInt64, _ high: UInt64) -> ClosedRange<UInt16>? {
                low == 0 && high == 65535 ? nil : UInt16(low)...UInt16(high)
            }
            guard let selector = TrafficSelector(source: source, destination: destination, proto: proto,
                                                 sourcePorts: range(sl, sh), destinationPorts: range(dl, dh)) else {
                throw fail("the prefixes are of different families")
            }
            let index = rules.count
            rules.append(SPDRule(selector: selector, ifID: 0, rank: UInt64(index), value: UInt32(index)))
        }
        return rules
    }

    private static func prefix(_ text: Substring, ipv6: Bool) -> IPPrefix? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let length = number(parts[1], limit: ipv6 ? 128 : 32) else { return nil }
        let address: IPAddress
        if ipv6 {
            guard let a = IPv6Address(parts[0]) else { return nil }
            address = .v6(a)
        } else {
            guard let a = IPv4Address(parts[0]) else { return nil }
            address = .v4(a)
        }
        return IPPrefix(address: address, length: Int(length))
    }

    /// The rule as a line of the format; nil when it names an interface (the
    /// format has none). The line order must be the rank order.
    static func line(for rule: SPDRule) -> String? {
        guard rule.ifID == 0 else { return nil }
        let s = rule.selector
        let sp = s.sourcePorts ?? 0...65535
        let dp = s.destinationPorts ?? 0...65535
        let proto = s.proto.map { "\($0.rawValue)/0xff" } ?? "0/0x00"
        return "@\(s.source.network) \(s.destination.network) \(sp.lowerBound) : \(sp.upperBound) "
            + "\(dp.lowerBound) : \(dp.upperBound) \(proto)"
    }

    // MARK: - Traces

    /// The packets of a trace file, each with `hasPorts` (see the top of the file).
    static func readTraces(path: String, ipv6: Bool) throws -> [SelectorFields] {
        var traces: [SelectorFields] = []
        for (lineNumber, line) in try records(ofFile: path) {
            func fail(_ reason: String) -> ParseError { ParseError(path: path, line: lineNumber, reason: reason) }
            let f = fields(line)
            guard f.count >= 5 else { throw fail("expected 5 fields (SRC DST SPORT DPORT PROTO), found \(f.count)") }
            let source: RawIPAddress, destination: RawIPAddress
            if ipv6 {
                guard let s = IPv6Address(f[0]), let d = IPv6Address(f[1]) else { throw fail("bad IPv6 address") }
                source = RawIPAddress(s)
                destination = RawIPAddress(d)
            } else {
                guard let s = number(f[0], limit: UInt64(UInt32.max)), let d = number(f[1], limit: UInt64(UInt32.max)) else {
                    throw fail("bad IPv4 address (a number, e.g. 0xc0a80001)")
                }
                source = RawIPAddress(ipv4: UInt32(s))
                destination = RawIPAddress(ipv4: UInt32(d))
            }
            guard let sp = number(f[2], limit: 65535), let dp = number(f[3], limit: 65535),
                  let proto = number(f[4], limit: 255) else { throw fail("bad port or protocol number") }
            traces.append(SelectorFields(source: source, destination: destination, proto: UInt8(proto),
                                         sourcePort: UInt16(sp), destinationPort: UInt16(dp), hasPorts: true))
        }
        return traces
    }

    /// The packet as a trace line, or nil when it is not of the family.
    static func line(for packet: SelectorFields, ipv6: Bool) -> String? {
        guard packet.source.isIPv6 == ipv6, packet.destination.isIPv6 == ipv6 else { return nil }
        let addresses: String
        if ipv6 {
            addresses = "\(IPv6Address(high: packet.source.high, low: packet.source.low)) "
                + "\(IPv6Address(high: packet.destination.high, low: packet.destination.low))"
        } else {
            addresses = hex32(packet.source.low) + " " + hex32(packet.destination.low)
        }
        return "\(addresses) \(packet.sourcePort) \(packet.destinationPort) \(packet.proto)"
    }

    private static func hex32(_ v: UInt64) -> String {
        let digits = String(UInt32(truncatingIfNeeded: v), radix: 16)
        return "0x" + String(repeating: "0", count: 8 - digits.count) + digits
    }

    // MARK: - Generating

    /// Writes `ruleCount` rules and `traceCount` packets from Sluice's
    /// ClassBench-like generator (`SPDRuleSetGenerator`) in the formats above.
    ///
    /// * Order: the lines run from the most specific rule to the widest
    ///   (longer source + destination prefixes first, then an exact protocol
    ///   before ANY, then narrower port ranges), as in a firewall's rule list
    ///   and in ClassBench files. In the generator's own order (random
    ///   priorities, for the tests' tie-breaking) one of its few ANY → ANY
    ///   rules lands near the top and shadows nearly every packet, which would
    ///   make any classifier look fast.
    /// * The format has no interface ids, so they are dropped (the packets
    ///   aimed at a rule still hit it); packets of the other family (one of
    ///   the generator's traps) are drawn again.
    static func generate(rules ruleCount: Int, traces traceCount: Int, ipv6: Bool, seed: UInt64, adversarial: Double,
                         rulesPath: String, tracesPath: String) throws {
        var generator = SPDRuleSetGenerator(seed: seed, ipv6: ipv6)
        func key(_ r: SPDRule) -> (Int, Int, Int, UInt64) {
            let s = r.selector
            func span(_ p: ClosedRange<UInt16>?) -> Int { p.map { Int($0.upperBound) - Int($0.lowerBound) + 1 } ?? 65536 }
            return (-(s.source.length + s.destination.length), s.proto == nil ? 1 : 0,
                    span(s.sourcePorts) * span(s.destinationPorts), r.rank)
        }
        let rules = generator.rules(count: ruleCount).sorted { key($0) < key($1) }.enumerated().map { i, r -> SPDRule in
            var r = r
            r.ifID = 0
            r.rank = UInt64(i)
            return r
        }
        let family = ipv6 ? "IPv6" : "IPv4"
        var ruleText = "# \(ruleCount) \(family) rules from sluicebench --mode acl-gen (SPDRuleSetGenerator, seed \(seed)).\n"
            + "# dpdk-test-acl format; earlier lines win; most specific first.\n"
        for r in rules { ruleText += line(for: r)! + "\n" }
        var traceText = "# \(traceCount) \(family) packets for \(rulesPath) (seed \(seed), adversarial \(adversarial)).\n"
        var written = 0
        while written < traceCount {
            for p in generator.packets(count: traceCount - written, for: rules, adversarial: adversarial) {
                guard let l = line(for: p, ipv6: ipv6) else { continue }
                traceText += l + "\n"
                written += 1
            }
        }
        try write(ruleText, to: rulesPath)
        try write(traceText, to: tracesPath)
    }

    private static func write(_ text: String, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8)) else {
            throw ParseError(path: path, line: 0, reason: "cannot write the file")
        }
    }
}
