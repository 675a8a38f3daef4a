// Applying the IPsec commands: what state they build, which SAs may coexist,
// the effective order and ids of policies, that a failing command changes
// nothing, and that configText gives the same state back.

import Command
import Packet
import Testing

@Suite struct IPsecConfigTests {
    static let sample = """
        port 0 role protected address 10.0.0.1/24
        port 1 role unprotected address 192.0.2.1/24
        route add 0.0.0.0/0 via 192.0.2.254
        crypto-engine sodium
        sa add spi 0x1000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(key128) crypto-engine ipsec-mb
        sa add spi 0x2000 dir in src 198.51.100.1 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key128) replay-window 256 esn
        sa add spi 0x3000 dir in mode transport aead chacha20-poly1305 key \(key256)
        sp add dir out src 10.0.0.0/24 dst 10.9.0.0/16 priority 100 action protect spi 0x1000
        sp add dir out src 10.0.0.0/24 dst 10.9.9.0/24 proto udp dport 53 priority 10 action bypass
        sp add dir in src 10.9.0.0/16 dst 10.0.0.0/24 priority 100 action protect spi 0x2000
        sp add dir out src 0.0.0.0/0 dst 0.0.0.0/0 priority 1000 action discard
        """

    static func load(_ text: String) throws -> GatewayConfig { try GatewayConfig.load(text: text, name: "t") }

    @Test func buildsSAsAndPolicies() throws {
        let config = try Self.load(Self.sample)
        #expect(config.cryptoEngine == .sodium)
        #expect(config.sas.count == 3)
        let out = try #require(config.sas[SAIdentifier(spi: spi(0x1000), destination: ip("198.51.100.1"))])
        #expect(out == SAConfig(spi: spi(0x1000), direction: .outbound, source: ip("192.0.2.1"),
                                destination: ip("198.51.100.1"), mode: .tunnel, aead: .aesGCM128,
                                keyMaterial: keyBytes(20), cryptoEngine: .ipsecMB))
        #expect(config.effectiveCryptoEngine(of: out) == .ipsecMB)
        let inbound = try #require(config.sas[SAIdentifier(spi: spi(0x2000), destination: ip("192.0.2.1"))])
        #expect(inbound.replayWindow == 256 && inbound.esn && inbound.sequence == 0)
        #expect(config.effectiveCryptoEngine(of: inbound) == .sodium)
        #expect(config.sas[SAIdentifier(spi: spi(0x3000))]?.mode == .transport)

        // Effective order by priority; ids in the order the lines came.
        #expect(config.policies.map(\.id) == [PolicyID(2), PolicyID(1), PolicyID(3), PolicyID(4)])
        #expect(config.policies.map(\.priority) == [10, 100, 100, 1000])
        #expect(config.policy(id: PolicyID(2))?.selector == PolicySelector(
            direction: .outbound, source: prefix("10.0.0.0/24"), destination: prefix("10.9.9.0/24"), proto: .udp,
            destinationPorts: 53...53))
        #expect(config.policy(id: PolicyID(3))?.action == .protect(spi(0x2000)))
        #expect(config.policy(id: PolicyID(9)) == nil)
    }

    @Test func equalPrioritiesKeepInsertionOrder() throws {
        let priorities = [10, 5, 10, 0, 5, 10, 0]
        let text = priorities.enumerated().map { index, priority in
            "sp add dir out src 10.\(index).0.0/16 dst 0.0.0.0/0 priority \(priority) action bypass"
        }.joined(separator: "\n")
        let config = try Self.load(text)
        #expect(config.policies.map(\.id.rawValue) == [4, 7, 2, 5, 1, 3, 6])
    }

    /// `sp add` and `sp del` in random order against a model that keeps the
    /// list the plain way (a stable sort by priority, a scan for the same
    /// selector and priority): the same effective order, ids and refusals.
    /// The configuration finds a priority's policies by binary search.
    @Test func policyOrderMatchesAPlainModel() throws {
        var rng = SeededGenerator(seed: 0x5bd)
        var config = GatewayConfig()
        var model: [(id: UInt32, selector: String, priority: UInt32)] = []
        var nextID: UInt32 = 1
        let at = SourceLocation(file: "t", line: 1, column: 1)
        for step in 0..<3000 {
            let priority = UInt32(rng.next() % 12) * 10
            let selector = "src 10.\(rng.next() % 6).0.0/16 dst 0.0.0.0/0"
            if rng.next() % 4 == 0, !model.isEmpty {
                let victim = model[Int(rng.next() % UInt64(model.count))]
                try config.apply(#require(try CommandParser.parseLine("sp del id \(victim.id)", location: at)))
                model.removeAll { $0.id == victim.id }
                continue
            }
            let line = "sp add dir out \(selector) priority \(priority) action bypass"
            let command = try #require(try CommandParser.parseLine(Substring(line), location: at))
            let duplicate = model.contains { $0.selector == selector && $0.priority == priority }
            do {
                let id = try config.apply(command)
                #expect(!duplicate && id?.rawValue == nextID, "step \(step): \(line) added as \(String(describing: id))")
                let index = model.firstIndex { $0.priority > priority } ?? model.count
                model.insert((nextID, selector, priority), at: index)
                nextID += 1
            } catch {
                #expect(duplicate && error.message.contains("already has this selector and priority"),
                        "step \(step): \(line): \(error.message)")
            }
        }
        #expect(config.policies.map(\.id.rawValue) == model.map(\.id))
        #expect(config.policies.map(\.priority) == model.map(\.priority))
        #expect(model.count > 20)
    }

    /// `sa update` is checked as an add among the other SAs: an SA may keep
    /// its own reqid slot and SPI, but not take another SA's.
    @Test func anUpdateIsCheckedAgainstTheOtherSAs() throws {
        func sa(_ spi: String, _ extra: String) -> String {
            "sa \(extra.hasPrefix("update") ? "update" : "add") spi \(spi) dir out src 192.0.2.1 dst 192.0.2.9 mode tunnel "
                + "aead aes-gcm-128 key \(key128) \(extra.replacingOccurrences(of: "update", with: ""))"
        }
        var config = try Self.load([sa("0x1000", "reqid 5"), sa("0x1001", "reqid 6 cpu 1"),
                                    "sa add spi 0x1002 dir in mode transport aead aes-gcm-128 key \(key128)"].joined(separator: "\n"))
        let at = SourceLocation(file: "t", line: 1, column: 1)
        func apply(_ line: String) throws -> String? {
            do { try config.apply(#require(try CommandParser.parseLine(Substring(line), location: at))); return nil }
            catch let error as CommandError { return error.message }
        }
        #expect(try apply(sa("0x1000", "update reqid 5 ttl 9")) == nil)
        #expect(config.sas[SAIdentifier(spi: spi(0x1000), destination: ip("192.0.2.9"))]?.ttl == 9)
        #expect(try apply(sa("0x1000", "update reqid 6 cpu 1"))?.contains("already cpu 1 of reqid 6") == true)
        #expect(try apply(sa("0x1000", "update reqid 6 cpu 2")) == nil)
        #expect(try apply("sa update spi 0x1002 dir in mode transport aead aes-gcm-128 key \(key128) replay-window 128") == nil)
        let before = config
        #expect(try apply(sa("0x1001", "update reqid 6 cpu 2"))?.contains("already cpu 2 of reqid 6") == true)
        #expect(config == before)
    }

    @Test func idsAreStableAndNotReused() throws {
        var config = try Self.load("""
            sp add dir out src 10.1.0.0/16 dst 0.0.0.0/0 priority 5 action bypass
            sp add dir out src 10.2.0.0/16 dst 0.0.0.0/0 priority 1 action bypass
            sp add dir out src 10.3.0.0/16 dst 0.0.0.0/0 priority 9 action bypass
            sp del id 3
            sp add dir out src 10.4.0.0/16 dst 0.0.0.0/0 priority 0 action bypass
            sp add id 10 dir out src 10.5.0.0/16 dst 0.0.0.0/0 priority 0 action bypass
            sp add dir out src 10.6.0.0/16 dst 0.0.0.0/0 priority 0 action bypass
            sp del id 1
            sp add id 1 dir out src 10.7.0.0/16 dst 0.0.0.0/0 priority 7 action bypass
            """)
        #expect(config.policies.map(\.id.rawValue) == [4, 10, 11, 2, 1])
        #expect(config.policy(id: PolicyID(1))?.selector.source == prefix("10.7.0.0/16"))
        // Deleting by selector and priority.
        try config.apply(#require(try CommandParser.parseLine(
            "sp del dir out src 10.5.0.0/16 dst 0.0.0.0/0 priority 0", location: SourceLocation(file: "t", line: 1, column: 1))))
        #expect(config.policies.map(\.id.rawValue) == [4, 11, 2, 1])
        // The same selector with a different priority is a different policy.
        try config.apply(#require(try CommandParser.parseLine(
            "sp add dir out src 10.4.0.0/16 dst 0.0.0.0/0 priority 3 action discard",
            location: SourceLocation(file: "t", line: 2, column: 1))))
        #expect(config.policies.map(\.id.rawValue) == [4, 11, 2, 12, 1])
    }

    /// A policy named with the last id does not use up the automatic ones:
    /// past it, `sp add` without `id` takes the lowest free id.
    @Test func theLastIdDoesNotExhaustTheAutomaticOnes() throws {
        let config = try Self.load("""
            sp add dir out src 10.1.0.0/16 dst 0.0.0.0/0 priority 5 action bypass
            sp add id 4294967295 dir out src 10.2.0.0/16 dst 0.0.0.0/0 priority 5 action bypass
            sp add dir out src 10.3.0.0/16 dst 0.0.0.0/0 priority 5 action bypass
            sp add id 3 dir out src 10.4.0.0/16 dst 0.0.0.0/0 priority 5 action bypass
            sp add dir out src 10.5.0.0/16 dst 0.0.0.0/0 priority 5 action bypass
            """)
        #expect(config.policies.map(\.id.rawValue) == [1, 4_294_967_295, 2, 3, 4])
    }

    @Test func whichSAsMayCoexist() throws {
        let k = key128
        var config = try Self.load("""
            sa add spi 0x2000 dir in src 198.51.100.1 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(k)
            sa add spi 0x2000 dir in src 198.51.100.2 dst 192.0.2.2 mode tunnel aead aes-gcm-128 key \(k)
            sa add spi 0x2000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(k)
            sa add spi 0x3000 dir out mode transport aead aes-gcm-128 key \(k)
            sp add dir in src 10.9.0.0/16 dst 10.0.0.0/24 priority 1 action protect spi 0x2000
            sp add dir out src 10.0.0.0/24 dst 10.9.0.0/16 priority 1 action protect spi 0x2000
            """)
        #expect(config.sas.count == 4)
        func apply(_ line: String) throws(CommandError) {
            guard let command = try CommandParser.parseLine(Substring(line),
                                                            location: SourceLocation(file: "t", line: 9, column: 1))
            else { return }
            try config.apply(command)
        }
        // Another inbound SA with 0x2000 still covers the inbound policy.
        try apply("sa del spi 0x2000 dst 192.0.2.2")
        #expect(config.sas.count == 3)
        // Now the last inbound 0x2000 is needed.
        #expect(throws: CommandError.self) { try apply("sa del spi 0x2000 dst 192.0.2.1") }
        // By SPI alone once there is one SA with it.
        try apply("sa del spi 0x3000")
        #expect(config.sas[SAIdentifier(spi: spi(0x3000))] == nil)
        try apply("sp del dir in src 10.9.0.0/16 dst 10.0.0.0/24 priority 1")
        try apply("sa del spi 0x2000 dst 192.0.2.1")
        try apply("sp del id 2")
        try apply("sa del spi 0x2000")
        #expect(config.sas.isEmpty && config.policies.isEmpty)
    }

    @Test func failedApplyLeavesStateUnchanged() throws {
        var config = try Self.load(Self.sample)
        let before = config
        let failing = [
            "sa add spi 0x1000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(key128)",
            "sa add spi 0x3000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(key128)",
            "sa add spi 0x4000 dir in mode transport aead aes-gcm-256 key \(key128)",
            "sa add spi 0x4000 dir out mode transport aead aes-gcm-128 key \(key128) seq 0",
            "sa del spi 0x1000",
            "sa del spi 0x2000 dst 192.0.2.9",
            "sp add dir out src 10.0.0.0/24 dst 10.9.0.0/16 priority 100 action bypass",
            "sp add id 1 dir out src 10.0.0.0/24 dst 10.8.0.0/16 priority 100 action bypass",
            "sp add dir in src 10.0.0.0/24 dst 10.8.0.0/16 priority 1 action protect spi 0x1000",
            "sp add dir in src 10.0.0.0/24 dst 10.8.0.0/16 sport 1 priority 1 action bypass",
            "sp del id 7",
            "sp del dir out src 10.0.0.0/24 dst 10.9.0.0/16 priority 101",
        ]
        for (number, line) in failing.enumerated() {
            let command = try #require(try CommandParser.parseLine(
                Substring(line), location: SourceLocation(file: "t", line: number + 1, column: 1)))
            #expect(throws: CommandError.self, "\(line)") { try config.apply(command) }
            #expect(config == before, "\(line)")
        }
        // The id a failed `sp add` would have had is not used up.
        try config.apply(#require(try CommandParser.parseLine(
            "sp add dir out src 10.0.0.0/24 dst 10.8.0.0/16 priority 100 action bypass",
            location: SourceLocation(file: "t", line: 99, column: 1))))
        #expect(config.policies.last(where: { $0.priority == 100 })?.id == PolicyID(5))
    }

    @Test func commandsBuiltInCodeAreCheckedToo() {
        var config = GatewayConfig()
        let at = SourceLocation(file: "api", line: 1, column: 1)
        func sa(_ direction: IPsecDirection = .inbound, mode: SAMode = .transport, spi raw: UInt32 = 0x1000,
                replayWindow: Int = 64, df: OuterDF = .copy, ttl: UInt8 = 64,
                encapsulation: UDPEncapsulation? = nil) -> Command {
            .saAdd(SAConfig(spi: spi(raw), direction: direction, mode: mode, aead: .aesGCM128,
                            keyMaterial: keyBytes(20), replayWindow: replayWindow, encapsulation: encapsulation,
                            df: df, ttl: ttl))
        }
        let selector = PolicySelector(direction: .outbound, source: prefix("10.0.0.0/8"), destination: prefix("0.0.0.0/0"))
        let cases: [(Command, String)] = [
            (sa(spi: 255), "bad SPI '0x000000ff': 0…255 are reserved (RFC 4303)"),
            (sa(replayWindow: 31), "bad replay window '31': expected a number 32…65536"),
            (sa(.outbound, replayWindow: 128), "replay-window applies only to inbound SAs (dir in)"),
            (sa(ttl: 0), "bad TTL '0': expected a number 1…255"),
            (sa(encapsulation: UDPEncapsulation(sourcePort: 4500, destinationPort: 0)), "bad UDP port '0'"),
            (sa(df: .set), "df applies only to tunnel mode"),
            (sa(ttl: 3), "ttl applies only to tunnel mode"),
            (.spAdd(id: PolicyID(0), selector: selector, priority: 1, action: .bypass), "bad policy id '0'"),
            (.spAdd(id: nil, selector: PolicySelector(direction: .outbound, source: prefix("10.0.0.1/8"),
                                                     destination: prefix("0.0.0.0/0")), priority: 1, action: .bypass),
             "bad prefix '10.0.0.1/8': host bits set (did you mean 10.0.0.0/8?)"),
            (.spAdd(id: nil, selector: selector, priority: 1, action: .protect(spi(7))), "bad SPI '0x00000007'"),
        ]
        for (command, message) in cases {
            do {
                try config.apply(LocatedCommand(command, at: at))
                Issue.record("applied \(command.redactedDescription)")
            } catch {
                #expect(error.location == at)
                #expect(error.message.hasPrefix(message), "\(error.message)")
            }
        }
        #expect(config == GatewayConfig())
    }

    @Test func configTextIsCanonicalAndDeterministic() throws {
        let config = try Self.load(Self.sample)
        #expect(config.configText == """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            route add 0.0.0.0/0 via 192.0.2.254
            crypto-engine sodium
            sa add spi 0x00001000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(key128) crypto-engine ipsec-mb
            sa add spi 0x00002000 dir in src 198.51.100.1 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key128) esn replay-window 256
            sa add spi 0x00003000 dir in mode transport aead chacha20-poly1305 key \(key256)
            sp add id 2 dir out src 10.0.0.0/24 dst 10.9.9.0/24 proto udp dport 53 priority 10 action bypass
            sp add id 1 dir out src 10.0.0.0/24 dst 10.9.0.0/16 priority 100 action protect spi 0x00001000
            sp add id 3 dir in src 10.9.0.0/16 dst 10.0.0.0/24 priority 100 action protect spi 0x00002000
            sp add id 4 dir out src 0.0.0.0/0 dst 0.0.0.0/0 priority 1000 action discard

            """)
        // `auto` is the default and not written; setting it back removes the line.
        #expect(try Self.load("crypto-engine auto").configText == "")
        #expect(try Self.load("crypto-engine sodium\ncrypto-engine auto").configText == "")
    }

    /// Many SAs and policies, with deletions and explicit ids, round-trip exactly.
    @Test func bigConfigRoundTrips() throws {
        var rng = SeededGenerator(seed: 0x5a)
        var lines: [String] = []
        let aeads: [(String, Int)] = [("aes-gcm-128", 20), ("aes-gcm-256", 36), ("chacha20-poly1305", 36)]
        for index in 0..<60 {
            let (aead, length) = aeads[index % 3]
            let outbound = index % 2 == 0
            let v6 = index % 5 == 0
            let local = v6 ? "2001:db8::\(index + 1)" : "192.0.2.\(index + 1)"
            let peer = v6 ? "2001:db8:1::\(index + 1)" : "198.51.100.\(index + 1)"
            var line = "sa add spi \(0x1000 + index) dir \(outbound ? "out" : "in")"
            if index % 7 == 3 {
                line += " mode transport"
            } else {
                line += " src \(outbound ? local : peer) dst \(outbound ? peer : local) mode tunnel"
                if rng.next() % 2 == 0 { line += " df \(["copy", "set", "clear"][Int(rng.next() % 3)]) ttl \(1 + rng.next() % 255)" }
            }
            line += " aead \(aead) key \(hexKey(length, from: UInt8(index)))"
            if rng.next() % 3 == 0 { line += " esn seq \(rng.next())" } else { line += " seq \(1 + rng.next() % 1000)" }
            if !outbound && rng.next() % 2 == 0 { line += " replay-window \(32 + rng.next() % 4000)" }
            if rng.next() % 4 == 0 { line += " encap udp" + (rng.next() % 2 == 0 ? "" : " \(1 + rng.next() % 65535) 4500") }
            if rng.next() % 4 == 0 { line += " crypto-engine \(["auto", "ipsec-mb", "sodium"][Int(rng.next() % 3)])" }
            lines.append(line)
        }
        for index in 0..<120 {
            let sa = Int(rng.next() % 60)
            let outbound = sa % 2 == 0
            let v6 = rng.next() % 4 == 0
            let src = v6 ? "2001:db8:\(index)::/48" : "10.\(index).0.0/16"
            let dst = v6 ? "::/0" : "10.200.\(index % 256).0/24"
            var line = "sp add" + (index % 10 == 9 ? " id \(1000 - index)" : "")
            line += " dir \(outbound ? "out" : "in") src \(src) dst \(dst)"
            switch rng.next() % 4 {
            case 0: line += " proto tcp sport 1024-65535 dport \(rng.next() % 1024)"
            case 1: line += " proto \(v6 ? "icmpv6" : "icmp")"
            case 2: line += " proto \(rng.next() % 256)"
            default: break
            }
            line += " priority \(rng.next() % 8)"
            switch rng.next() % 3 {
            case 0: line += " action protect spi \(0x1000 + sa)"
            case 1: line += " action bypass"
            default: line += " action discard"
            }
            if line.contains("proto 1 ") && v6 || line.contains("proto 58 ") && !v6 { continue }
            lines.append(line)
            if index % 13 == 5 {
                // The same policy by selector and priority.
                let selector = line.split(separator: " action ")[0].split(separator: " dir ")[1]
                lines.append("sp del dir \(selector)")
            }
            if index % 20 == 19 { lines.append("sp del id \(1000 - index)") }
        }
        lines.append("crypto-engine ipsec-mb")
        let config = try GatewayConfig.load(text: lines.joined(separator: "\n"), name: "big")
        #expect(config.sas.count == 60)
        #expect(config.policies.count > 90)
        #expect(config.policies.contains { $0.id == PolicyID(991) } && !config.policies.contains { $0.id == PolicyID(981) })
        let text = config.configText
        let reloaded = try GatewayConfig.load(text: text, name: "config text")
        #expect(reloaded == config)
        #expect(reloaded.policies.map(\.id) == config.policies.map(\.id))
        #expect(reloaded.configText == text)
        // Effective order: priorities never decrease along the list.
        #expect(zip(config.policies, config.policies.dropFirst()).allSatisfy { $0.priority <= $1.priority })
        // Each line of the text is the description of the command it parses to.
        for line in text.split(separator: "\n") {
            #expect(try parse(String(line))?.description == String(line))
        }
    }
}
