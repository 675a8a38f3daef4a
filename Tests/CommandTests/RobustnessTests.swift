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
    ]

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
        switch rng.next() % 5 {
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
        default: return ["route", "del", pick(prefixes, &rng)]
        }
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
            if rng.next() % 4 != 0 { words.insert(pick(["port", "neighbor", "route"], &rng), at: 0) }
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
            }
        }
        #expect(parsed > 3_000)   // the soup does reach valid commands
    }

    @Test func randomFilesLoadAllOrNothingAndRoundTrip() throws {
        var rng = SeededGenerator(seed: 42)
        var loaded = 0
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
                } catch {
                    #expect(config == before, "\(line)")
                    #expect(error.location.line == number)
                }
            }
            let reloaded = try GatewayConfig.load(text: config.configText, name: "round trip")
            #expect(reloaded == config)
        }
        #expect(loaded > 1_000)
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
