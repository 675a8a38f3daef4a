// Random input, seeded so failures repeat: every line gives a command or a
// CommandError (never a trap), errors point inside the line, a failed apply
// changes nothing, and whatever loads round-trips through configText.

import Command
import Packet
import Testing

@Suite struct RobustnessTests {
    /// Words that reach deep into the grammar, valid and invalid.
    static let vocabulary = [
        "port", "neighbor", "route", "add", "del", "via", "lladdr", "role", "address",
        "protected", "unprotected", "0", "1", "2", "31", "32", "-1", "65536", "#", "#x", "",
        "10.0.0.1/24", "10.0.0.0/8", "10.0.0.1", "0.0.0.0/0", "::/0", "2001:db8::1/64", "2001:db8::/32",
        "fe80::1", "::", ":::", "1.2.3.4/33", "1.2.3", "2001:db8::/129", "/", "/8", "10.0.0.0/",
        "02:00:00:00:00:01", "01:00:5e:00:00:01", "00:00:00:00:00:00", "02-00-00-00-00-02", "zz:zz",
        "é", "\u{301}", "🦆", "\t", "\r", "port0", "ROUTE",
        "sa", "sp", "crypto-engine", "spi", "dir", "in", "out", "src", "dst", "mode", "tunnel", "transport", "aead",
        "aes-gcm-128", "aes-gcm-256", "chacha20-poly1305", "key", "esn", "seq", "replay-window", "encap", "udp", "df",
        "copy", "ttl", "sodium", "ipsec-mb", "proto", "tcp", "icmpv6", "sport", "dport", "1-2", "2-1", "priority",
        "action", "protect", "bypass", "discard", "id", "0x1000", "0x2000", "0xff", "0x", "0x0", "4294967296",
        "18446744073709551616", "0xffffffffffffffff", key128, key256, "0x0011",
    ]

    /// Keys the random lines use, right and wrong lengths; none may appear in a message.
    static let keys = [key128, key256, hexKey(32, from: 0x40), hexKey(20, from: 0x80)]

    static func pick<T>(_ items: [T], _ rng: inout SeededGenerator) -> T {
        items[Int(rng.next() % UInt64(items.count))]
    }

    /// A well-formed line over small value pools, so that lines often refer to
    /// the same ports, addresses and prefixes.
    static func validLine(_ rng: inout SeededGenerator) -> [String] {
        let port = pick(["0", "1", "2", "3"], &rng)
        let v4 = ["10.0.0.1", "10.0.0.2", "192.0.2.1", "192.0.2.9"]
        let v6 = ["2001:db8::1", "2001:db8::2", "fe80::1"]
        let prefixes = ["10.0.0.0/8", "10.0.0.0/16", "0.0.0.0/0", "192.0.2.0/24", "::/0", "2001:db8::/32"]
        let spis = ["0x1000", "0x1001", "4096", "0x2000"]
        switch rng.next() % 10 {
        case 0:
            var words = ["port", port]
            for _ in 0..<Int(rng.next() % 3) {
                if rng.next() % 3 == 0 {
                    words += ["role", pick(["protected", "unprotected"], &rng)]
                } else {
                    words += ["address", pick(v4 + v6, &rng) + pick(["/24", "/64", "/32", "/8"], &rng)]
                }
            }
            return words
        case 1:
            let lladdr = pick(["02:00:00:00:00:01", "02:00:00:00:00:02", "01:00:5e:00:00:01", "00:00:00:00:00:00"], &rng)
            return ["neighbor", pick(v4 + v6, &rng), "lladdr", lladdr, "port", port]
        case 2: return ["route", "add", pick(prefixes, &rng), "via", pick(v4 + v6, &rng)]
        case 3: return ["route", "add", pick(prefixes, &rng), "port", port]
        case 4: return ["route", "del", pick(prefixes, &rng)]
        case 5: return ["crypto-engine", pick(["auto", "ipsec-mb", "sodium"], &rng)]
        case 6, 7: return saAddLine(spi: pick(spis, &rng), v4: v4, v6: v6, &rng)
        case 8:
            let dst = rng.next() % 2 == 0 ? [] : ["dst", pick(v4 + v6, &rng)]
            return ["sa", "del", "spi", pick(spis, &rng)] + dst
        default: return spLine(spi: pick(spis, &rng), prefixes: prefixes, &rng)
        }
    }

    /// `sa add` with each option present or not, in shuffled order.
    static func saAddLine(spi: String, v4: [String], v6: [String], _ rng: inout SeededGenerator) -> [String] {
        let family = rng.next() % 3 == 0 ? v6 : v4
        let aead = pick(["aes-gcm-128", "aes-gcm-256", "chacha20-poly1305"], &rng)
        let key = rng.next() % 5 == 0 ? pick(keys, &rng) : aead == "aes-gcm-128" ? key128 : key256
        let mode = pick(["tunnel", "tunnel", "transport"], &rng)
        var options: [[String]] = [["mode", mode], ["aead", aead], ["key", key]]
        if rng.next() % 5 != 0 { options += [["src", pick(family, &rng)], ["dst", pick(family, &rng)]] }
        if rng.next() % 3 == 0 { options.append(["esn"]) }
        if rng.next() % 4 == 0 { options.append(["seq", pick(["0", "1", "4294967295", "4294967296", "0x10"], &rng)]) }
        let direction = pick(["in", "out"], &rng)
        if rng.next() % 4 == 0 && (direction == "in" || rng.next() % 4 == 0) {
            options.append(["replay-window", pick(["32", "64", "1000", "65536"], &rng)])
        }
        if rng.next() % 4 == 0 { options.append(["encap", "udp"] + (rng.next() % 2 == 0 ? [] : ["4500", "4501"])) }
        if rng.next() % (mode == "tunnel" ? 4 : 20) == 0 { options.append(["df", pick(["copy", "set", "clear"], &rng)]) }
        if rng.next() % (mode == "tunnel" ? 4 : 20) == 0 { options.append(["ttl", pick(["1", "64", "255"], &rng)]) }
        if rng.next() % 4 == 0 { options.append(["crypto-engine", pick(["auto", "ipsec-mb", "sodium"], &rng)]) }
        options.shuffle(using: &rng)
        return ["sa", "add", "spi", spi, "dir", direction] + options.flatMap { $0 }
    }

    /// `sp add` or `sp del` over small pools, options shuffled.
    static func spLine(spi: String, prefixes: [String], _ rng: inout SeededGenerator) -> [String] {
        // Mostly one family, so that most lines are consistent.
        let v6 = prefixes.filter { $0.contains(":") }, v4 = prefixes.filter { !$0.contains(":") }
        let family = rng.next() % 10 == 0 ? prefixes : rng.next() % 3 == 0 ? v6 : v4
        var options: [[String]] = [["src", pick(family, &rng)], ["dst", pick(family, &rng)],
                                   ["priority", pick(["0", "1", "10", "4294967295"], &rng)]]
        let proto = rng.next() % 2 == 0 ? nil : pick(["tcp", "udp", "icmp", "icmpv6", "50"], &rng)
        if let proto { options.append(["proto", proto]) }
        let ports = proto == "tcp" || proto == "udp" || rng.next() % 10 == 0
        if ports && rng.next() % 2 == 0 { options.append(["sport", pick(["80", "1-1023", "0-65535"], &rng)]) }
        if ports && rng.next() % 2 == 0 { options.append(["dport", pick(["443", "1024-65535"], &rng)]) }
        let isAdd = rng.next() % 4 != 0
        if isAdd {
            options.append(["action"] + pick([["protect", "spi", spi], ["bypass"], ["discard"]], &rng))
        }
        options.shuffle(using: &rng)
        let dir = ["dir", pick(["in", "out"], &rng)]
        if !isAdd {
            return ["sp", "del"] + (rng.next() % 3 == 0 ? ["id", pick(["1", "2", "3"], &rng)] : dir + options.flatMap { $0 })
        }
        let id = rng.next() % 5 == 0 ? ["id", pick(["1", "2", "7"], &rng)] : []
        return ["sp", "add"] + id + dir + options.flatMap { $0 }
    }

    static func randomLine(_ rng: inout SeededGenerator) -> String {
        switch rng.next() % 4 {
        case 0:
            // Raw bytes, decoded leniently as UTF-8.
            let bytes = (0..<Int(rng.next() % 40)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            return String(decoding: bytes.filter { $0 != 10 && $0 != 13 }, as: UTF8.self)
        case 1:
            // Vocabulary soup, usually starting with a verb.
            var words = (0..<Int(rng.next() % 8)).map { _ in pick(vocabulary, &rng) }
            if rng.next() % 4 != 0 {
                words.insert(pick(["port", "neighbor", "route", "sa", "sp", "crypto-engine"], &rng), at: 0)
            }
            return words.joined(separator: rng.next() % 5 == 0 ? "\t " : " ")
        default:
            // A valid line, sometimes with one word replaced, dropped or added.
            var words = validLine(&rng)
            let at = Int(rng.next() % UInt64(words.count))
            switch rng.next() % 6 {
            case 0: words[at] = pick(vocabulary, &rng)
            case 1: words.remove(at: at)
            case 2: words.insert(pick(vocabulary, &rng), at: at)
            default: break
            }
            return words.joined(separator: " ")
        }
    }

    @Test func randomLinesParseOrFailWithAPosition() {
        var rng = SeededGenerator(seed: 0x51_01ce)
        var parsed = 0
        for number in 1...20_000 {
            let line = Self.randomLine(&rng)
            do {
                let located = try CommandParser.parseLine(
                    Substring(line), location: SourceLocation(file: "fuzz", line: number, column: 1))
                if let command = located?.command {
                    parsed += 1
                    // A command that parses prints as a line that parses to it.
                    #expect((try? parse(command.description)) == command, "\(line)")
                }
            } catch {
                #expect(error.location.file == "fuzz" && error.location.line == number)
                #expect(error.location.column >= 1 && error.location.column <= line.count + 1, "\(line)")
                #expect(!error.message.isEmpty)
                for key in Self.keys {
                    #expect(!error.message.contains(key.dropFirst(2).prefix(24)), "\(error.message)")
                }
            }
        }
        #expect(parsed > 3_000)   // the soup does reach valid commands
    }

    @Test func randomFilesLoadAllOrNothingAndRoundTrip() throws {
        var rng = SeededGenerator(seed: 42)
        var loaded = 0, loadedSAs = 0, loadedPolicies = 0
        for _ in 0..<300 {
            var config = GatewayConfig()
            for number in 1...40 {
                let line = Self.randomLine(&rng)
                guard let command = try? CommandParser.parseLine(
                    Substring(line), location: SourceLocation(file: "fuzz", line: number, column: 1)) else { continue }
                let before = config
                do {
                    try config.apply(command)
                    loaded += 1
                    switch command.command {
                    case .saAdd: loadedSAs += 1
                    case .spAdd: loadedPolicies += 1
                    default: break
                    }
                } catch {
                    #expect(config == before, "\(line)")
                    #expect(error.location.line == number)
                    for key in Self.keys {
                        #expect(!error.message.contains(key.dropFirst(2).prefix(24)), "\(error.message)")
                    }
                }
            }
            let reloaded = try GatewayConfig.load(text: config.configText, name: "round trip")
            #expect(reloaded == config)
            #expect(reloaded.configText == config.configText)
        }
        #expect(loaded > 1_000)
        #expect(loadedSAs > 200 && loadedPolicies > 100, "\(loadedSAs) SAs, \(loadedPolicies) policies, \(loaded) in all")
    }

    @Test func randomWholeFilesNeverTrap() {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<500 {
            let bytes = (0..<Int(rng.next() % 300)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let text = String(decoding: bytes, as: UTF8.self)
            do {
                _ = try GatewayConfig.load(text: text, name: "bytes")
            } catch {
                #expect(error.location.line >= 1 && error.location.column >= 1)
            }
        }
    }
}
