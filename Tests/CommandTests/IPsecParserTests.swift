// Each form of the IPsec verbs parses to the right typed command, with defaults
// filled in, options in any order, and prints as a line that parses back.

import Command
import Packet
import Testing

@Suite struct IPsecParserTests {
    @Test func cryptoEngineForms() throws {
        #expect(try parse("crypto-engine auto") == .cryptoEngine(.auto))
        #expect(try parse("crypto-engine ipsec-mb") == .cryptoEngine(.ipsecMB))
        #expect(try parse("crypto-engine sodium") == .cryptoEngine(.sodium))
    }

    @Test func saAddMinimalFormsFillDefaults() throws {
        let tunnel = try parse("sa add spi 0x1000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel "
                               + "aead aes-gcm-128 key \(key128)")
        #expect(tunnel == .saAdd(SAConfig(
            spi: spi(0x1000), direction: .outbound, source: ip("192.0.2.1"), destination: ip("198.51.100.1"),
            mode: .tunnel, aead: .aesGCM128, keyMaterial: keyBytes(20))))
        guard case .saAdd(let sa)? = tunnel else { return }
        #expect(sa.sequence == 1 && sa.replayWindow == 64 && sa.ttl == 64 && sa.df == .copy)
        #expect(!sa.esn && sa.encapsulation == nil && sa.cryptoEngine == nil)
        #expect(sa.keyMaterial.withUnsafeBytes { Array($0) } == Array(0..<20))
        #expect(sa.keyMaterial != keyBytes(20, from: 1) && sa.keyMaterial != keyBytes(16))

        // Transport mode without addresses; decimal SPI; inbound seq defaults to 0.
        let transport = try parse("sa add spi 4096 dir in mode transport aead chacha20-poly1305 key \(key256)")
        #expect(transport == .saAdd(SAConfig(spi: spi(4096), direction: .inbound, mode: .transport,
                                             aead: .chacha20Poly1305, keyMaterial: keyBytes(36))))
        if case .saAdd(let sa)? = transport { #expect(sa.sequence == 0) }
    }

    @Test func saAddEveryOptionInAnyOrder() throws {
        let expected = Command.saAdd(SAConfig(
            spi: spi(0xffff_ffff), direction: .inbound, source: ip("2001:db8::1"), destination: ip("2001:db8::2"),
            mode: .tunnel, aead: .aesGCM256, keyMaterial: keyBytes(36, from: 0xa0), esn: true,
            sequence: 0x1_0000_0000, replayWindow: 1024, encapsulation: UDPEncapsulation(sourcePort: 4501, destinationPort: 4502),
            df: .set, ttl: 255, cryptoEngine: .sodium))
        let key = hexKey(36, from: 0xa0)
        #expect(try parse("sa add spi 0xffffffff dir in src 2001:db8::1 dst 2001:db8::2 mode tunnel aead aes-gcm-256 "
                          + "key \(key) esn seq 4294967296 replay-window 1024 encap udp 4501 4502 df set ttl 255 "
                          + "crypto-engine sodium") == expected)
        #expect(try parse("sa add spi 4294967295 dir in crypto-engine sodium ttl 255 df set encap udp 4501 4502 "
                          + "replay-window 1024 seq 0x100000000 esn key \(key) "
                          + "aead aes-gcm-256 mode tunnel dst 2001:db8::2 src 2001:db8::1") == expected)
        // `0X` and upper-case hex are fine too.
        #expect(try parse("sa add spi 0XFFFFFFFF dir in src 2001:db8::1 dst 2001:db8::2 mode tunnel aead aes-gcm-256 "
                          + "key \(key.uppercased()) esn seq 4294967296 replay-window 1024 encap udp 4501 4502 df set "
                          + "ttl 255 crypto-engine sodium") == expected)
    }

    @Test func encapUDPAloneMeansRFC3948Ports() throws {
        let line = "sa add spi 0x2000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 "
            + "key \(key128) encap udp"
        guard case .saAdd(let sa)? = try parse(line) else { Issue.record("not sa add"); return }
        #expect(sa.encapsulation == UDPEncapsulation(sourcePort: 4500, destinationPort: 4500))
        // Followed by another option rather than ports.
        guard case .saAdd(let sa2)? = try parse(line + " ttl 9") else { Issue.record("not sa add"); return }
        #expect(sa2.encapsulation == .rfc3948 && sa2.ttl == 9)
    }

    @Test func saDelForms() throws {
        #expect(try parse("sa del spi 0x1000") == .saDel(spi: spi(0x1000), destination: nil))
        #expect(try parse("sa del spi 256 dst 198.51.100.1") == .saDel(spi: spi(256), destination: ip("198.51.100.1")))
        #expect(try parse("sa del spi 0x1000 dst 2001:db8::2") == .saDel(spi: spi(0x1000), destination: ip("2001:db8::2")))
    }

    @Test func spAddForms() throws {
        let selector = PolicySelector(direction: .outbound, source: prefix("10.0.0.0/8"),
                                      destination: prefix("10.1.0.0/16"))
        #expect(try parse("sp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 10 action protect spi 0x1000")
                == .spAdd(id: nil, selector: selector, priority: 10, action: .protect(spi(0x1000))))
        // Options in any order; explicit id.
        #expect(try parse("sp add id 7 dir out action bypass priority 0 dst 10.1.0.0/16 src 10.0.0.0/8")
                == .spAdd(id: PolicyID(7), selector: selector, priority: 0, action: .bypass))
        #expect(try parse("sp add dir in src 2001:db8::/32 dst ::/0 priority 4294967295 action discard")
                == .spAdd(id: nil, selector: PolicySelector(direction: .inbound, source: prefix("2001:db8::/32"),
                                                            destination: prefix("::/0")),
                          priority: UInt32.max, action: .discard))
        // Protocols by name and number, single ports and ranges; a bare address is a host prefix.
        let withPorts = PolicySelector(direction: .outbound, source: prefix("10.0.0.1/32"),
                                       destination: prefix("0.0.0.0/0"), proto: .tcp,
                                       sourcePorts: 1024...65535, destinationPorts: 443...443)
        #expect(try parse("sp add dir out src 10.0.0.1 dst 0.0.0.0/0 proto tcp sport 1024-65535 dport 443 "
                          + "priority 5 action bypass")
                == .spAdd(id: nil, selector: withPorts, priority: 5, action: .bypass))
        #expect(try parse("sp add dir out src 10.0.0.1 dst 0.0.0.0/0 proto 6 dport 443-443 sport 1024-65535 "
                          + "priority 5 action bypass")
                == .spAdd(id: nil, selector: withPorts, priority: 5, action: .bypass))
        for (name, number) in [("udp", 17), ("icmp", 1), ("icmpv6", 58), ("sctp", 132), ("50", 50), ("0", 0),
                               ("255", 255)] as [(String, UInt8)] {
            guard case .spAdd(_, let s, _, _)? = try parse(
                "sp add dir in src 10.0.0.0/8 dst 10.0.0.0/8 proto \(name) priority 1 action discard") else {
                Issue.record("proto \(name)"); continue
            }
            #expect(s.proto == IPProtocol(number))
        }
    }

    @Test func spDelForms() throws {
        #expect(try parse("sp del id 3") == .spDel(.id(PolicyID(3))))
        let selector = PolicySelector(direction: .inbound, source: prefix("10.1.0.0/16"),
                                      destination: prefix("10.0.0.0/8"), proto: .udp, destinationPorts: 53...53)
        #expect(try parse("sp del dir in src 10.1.0.0/16 dst 10.0.0.0/8 proto udp dport 53 priority 10")
                == .spDel(.match(selector, priority: 10)))
        #expect(try parse("sp del dir in priority 10 dport 53 proto udp dst 10.0.0.0/8 src 10.1.0.0/16")
                == .spDel(.match(selector, priority: 10)))
    }

    @Test func locationsOfIPsecFields() throws {
        let line = "sa add spi 0x1000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(key128) seq 5"
        let located = try #require(try CommandParser.parseLine(Substring(line),
                                                               location: SourceLocation(file: "x", line: 2, column: 1)))
        func column(of word: String) -> Int { line.distance(from: line.startIndex, to: line.firstRange(of: word)!.lowerBound) + 1 }
        #expect(located.location(of: .spi).column == column(of: "0x1000"))
        #expect(located.location(of: .direction).column == column(of: "out"))
        #expect(located.location(of: .source).column == column(of: "192.0.2.1"))
        #expect(located.location(of: .destination).column == column(of: "198.51"))
        #expect(located.location(of: .mode).column == column(of: "tunnel"))
        #expect(located.location(of: .aead).column == column(of: "aes-gcm-128"))
        #expect(located.location(of: .key).column == column(of: key128))
        #expect(located.location(of: .sequence).column == column(of: " 5") + 1)

        let sp = "sp add id 4 dir out src 10.0.0.0/8 dst 10.1.0.0/16 proto tcp sport 1-2 dport 3 priority 9 action protect spi 0x1000"
        let policy = try #require(try CommandParser.parseLine(Substring(sp),
                                                              location: SourceLocation(file: "x", line: 1, column: 1)))
        func spColumn(_ word: String) -> Int { sp.distance(from: sp.startIndex, to: sp.firstRange(of: word)!.lowerBound) + 1 }
        #expect(policy.location(of: .policyID).column == spColumn(" 4 ") + 1)
        #expect(policy.location(of: .proto).column == spColumn("tcp"))
        #expect(policy.location(of: .sourcePorts).column == spColumn("1-2"))
        #expect(policy.location(of: .destinationPorts).column == spColumn(" 3 ") + 1)
        #expect(policy.location(of: .priority).column == spColumn("9"))
        #expect(policy.location(of: .action).column == spColumn("protect"))
        #expect(policy.location(of: .spi).column == spColumn("0x1000"))
    }

    /// Issue 4's selectors: `fwd`, ICMP type and code, `if-id`; the SPD driver verb.
    @Test func fullSelectorsAndDriver() throws {
        let icmp = PolicySelector(direction: .forward, source: prefix("10.0.0.0/8"), destination: prefix("10.1.0.0/16"),
                                  proto: .icmp, sourcePorts: 8...8, destinationPorts: 0...3, ifID: 42)
        let line = "sp add dir fwd src 10.0.0.0/8 dst 10.1.0.0/16 proto icmp type 8 code 0-3 if-id 42 priority 2 action bypass"
        #expect(try parse(line) == .spAdd(id: nil, selector: icmp, priority: 2, action: .bypass))
        // Prints back with the ICMP words, and parses to itself.
        #expect(try parse(line)?.description == line)
        // if-id 0 is the default and is not printed.
        guard case .spAdd(_, let plain, _, _)? = try parse("sp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 if-id 0 priority 1 action discard") else {
            Issue.record("if-id 0"); return
        }
        #expect(plain.ifID == 0 && !Command.spAdd(id: nil, selector: plain, priority: 1, action: .discard).description.contains("if-id"))
        for driver in SPDDriverChoice.allCases {
            #expect(try parse("spd driver \(driver.rawValue)") == .spdDriver(driver))
            #expect(Command.spdDriver(driver).description == "spd driver \(driver.rawValue)")
        }
        // The driver survives configText, and `auto` is the default, not written.
        let config = try GatewayConfig.load(text: "spd driver cut-tree\n", name: "t")
        #expect(config.spdDriver == .cutTree && config.configText == "spd driver cut-tree\n")
        #expect(try GatewayConfig.load(text: config.configText, name: "t2") == config)
        #expect(GatewayConfig().configText.isEmpty)
        // shared-sa: atomic is the default, handoff is written.
        #expect(try parse("shared-sa handoff") == .sharedSA(.handoff))
        #expect(throws: CommandError.self) { try parse("shared-sa locked") }
        let handoff = try GatewayConfig.load(text: "shared-sa handoff\n", name: "t")
        #expect(handoff.sharedSA == .handoff && handoff.configText == "shared-sa handoff\n")
        #expect(try GatewayConfig.load(text: "shared-sa atomic\n", name: "t").configText.isEmpty)
    }

    /// Issue 5's templates: `reqid` and `cpu` on SAs, `protect reqid` on policies.
    @Test func reqidAndPerCPUSAs() throws {
        let line = "sa add spi 0x00002001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-128 key \(key128) reqid 7 cpu 3"
        guard case .saAdd(let sa)? = try parse(line) else { Issue.record("sa add"); return }
        #expect(sa.reqid == 7 && sa.cpu == 3)
        #expect(Command.saAdd(sa).description == line)
        let update = line.replacingOccurrences("sa add", "sa update")
        #expect(try parse(update) == .saUpdate(sa) && Command.saUpdate(sa).description == update)
        let sp = "sp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 1 action protect reqid 7"
        #expect(try parse(sp)?.description == sp)
        guard case .spAdd(_, _, _, .protectReqID(7, perCPU: false))? = try parse(sp) else { Issue.record("protect reqid"); return }
        // `per-cpu`: a worker on the fallback asks for its own SA; outbound only.
        let perCPU = sp + " per-cpu"
        #expect(try parse(perCPU)?.description == perCPU)
        guard case .spAdd(_, _, _, .protectReqID(7, perCPU: true))? = try parse(perCPU) else { Issue.record("per-cpu"); return }
        for text in [perCPU.replacingOccurrences("dir out", "dir in"), perCPU.replacingOccurrences("dir out", "dir fwd")] {
            #expect(throws: CommandError.self, "\(text)") { _ = try parse(text) }
        }
        #expect(throws: CommandError.self) { _ = try parse(sp.replacingOccurrences("reqid 7", "spi 0x7 per-cpu")) }
        // A policy may name a reqid no SA has yet: traffic raises ACQUIRE.
        let config = try GatewayConfig.load(text: sp + "\n" + line + "\n", name: "t")
        #expect(try GatewayConfig.load(text: config.configText, name: "t2") == config)
        let sa2 = line.replacingOccurrences("0x00002001", "0x00002002")
        for (text, message) in [
            (line + "\n" + sa2, "outbound SA spi 0x00002001 dst 192.0.2.2 is already cpu 3 of reqid 7; delete it first"),
            (line.replacingOccurrences(" reqid 7", ""), "cpu 3 needs reqid"),
            (line.replacingOccurrences("reqid 7", "reqid 0"), "bad reqid '0': expected a number 1…4294967295"),
        ] {
            do {
                _ = try GatewayConfig.load(text: text, name: "t")
                Issue.record("accepted: \(text)")
            } catch {
                #expect(error.message.contains(message), "\(error.message) (expected: \(message))")
            }
        }
        // Inbound, cpu names the worker that keeps the replay window; no reqid needed.
        #expect(throws: Never.self) {
            _ = try GatewayConfig.load(text: line.replacingOccurrences("dir out", "dir in").replacingOccurrences(" reqid 7", ""), name: "t")
        }
        // A second SA of the reqid without cpu is the fallback, and one per cpu is fine.
        #expect(throws: Never.self) {
            _ = try GatewayConfig.load(text: line + "\n" + sa2.replacingOccurrences(" cpu 3", "") + "\n"
                                       + sa2.replacingOccurrences("0x00002002", "0x00002003").replacingOccurrences("cpu 3", "cpu 4"), name: "t")
        }
    }

    @Test func lifetimes() throws {
        let base = "sa add spi 0x00002001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-128 key \(key128)"
        let line = base + " lifetime bytes hard 1000000 packets soft 5 hard 8 seconds soft 30 use-seconds hard 60"
        guard case .saAdd(let sa)? = try parse(line) else { Issue.record("sa add"); return }
        #expect(sa.lifetime[.packets] == SALifetime.Limits(soft: 5, hard: 8))
        #expect(sa.lifetime[.bytes] == SALifetime.Limits(hard: 1_000_000))
        #expect(sa.lifetime[.seconds] == SALifetime.Limits(soft: 30))
        #expect(sa.lifetime[.useSeconds] == SALifetime.Limits(hard: 60))
        #expect(Command.saAdd(sa).description == line)
        // In any order, printed in one.
        let shuffled = base + " lifetime use-seconds hard 60 seconds soft 30 packets hard 8 soft 5 bytes hard 1000000"
        #expect(try parse(shuffled) == .saAdd(sa))
        for (tail, message) in [
            (" lifetime packets soft 8 hard 8", "packets soft 8 must be below hard 8"),
            (" lifetime packets", "expected 'soft N' or 'hard N' after 'packets'"),
            (" lifetime packets hard 1 packets hard 2", "lifetime packets given twice"),
            (" lifetime packets hard 0", "bad packets limit '0'"),
            (" lifetime minutes hard 3", "expected 'bytes', 'packets', 'seconds' or 'use-seconds'"),
        ] {
            #expect(throws: CommandError.self, "\(tail)") { _ = try parse(base + tail) }
            do { _ = try parse(base + tail) } catch { #expect(error.message.contains(message), "\(error.message)") }
        }
    }

    @Test func commandsPrintAsTheLinesThatParseToThem() throws {
        let selector = PolicySelector(direction: .outbound, source: prefix("10.0.0.0/8"), destination: prefix("::/0"),
                                      proto: IPProtocol(47), sourcePorts: 0...65535, destinationPorts: 8...9)
        let commands: [Command] = [
            .cryptoEngine(.ipsecMB),
            .saAdd(SAConfig(spi: spi(0x1234), direction: .outbound, source: ip("192.0.2.1"),
                            destination: ip("192.0.2.2"), mode: .tunnel, aead: .aesGCM128, keyMaterial: keyBytes(20))),
            .saAdd(SAConfig(spi: spi(256), direction: .inbound, mode: .transport, aead: .aesGCM256,
                            keyMaterial: keyBytes(36, from: 0xf0), esn: true, sequence: UInt64.max, replayWindow: 65536,
                            encapsulation: .rfc3948, cryptoEngine: .auto)),
            .saAdd(SAConfig(spi: spi(0x1234), direction: .outbound, source: ip("2001:db8::1"),
                            destination: ip("2001:db8::2"), mode: .tunnel, aead: .chacha20Poly1305,
                            keyMaterial: keyBytes(36), sequence: 0, df: .clear, ttl: 1)),
            .saDel(spi: spi(0x1234), destination: nil),
            .saDel(spi: spi(0x1234), destination: ip("2001:db8::2")),
            .spAdd(id: nil, selector: selector, priority: 3, action: .protect(spi(0x1234))),
            .spAdd(id: PolicyID(UInt32.max), selector: selector, priority: 0, action: .bypass),
            .spDel(.id(PolicyID(1))),
            .spDel(.match(selector, priority: 3)),
        ]
        for command in commands {
            #expect(try parse(command.description) == command, "\(command.description)")
        }
        #expect(commands[0].description == "crypto-engine ipsec-mb")
        #expect(commands[1].description == "sa add spi 0x00001234 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel "
                + "aead aes-gcm-128 key \(key128)")
        #expect(commands[2].description == "sa add spi 0x00000100 dir in mode transport aead aes-gcm-256 "
                + "key \(hexKey(36, from: 0xf0)) esn seq 18446744073709551615 replay-window 65536 "
                + "encap udp 4500 4500 crypto-engine auto")
        #expect(commands[3].description.hasSuffix("seq 0 df clear ttl 1"))
        #expect(commands[5].description == "sa del spi 0x00001234 dst 2001:db8::2")
        #expect(commands[6].description == "sp add dir out src 10.0.0.0/8 dst ::/0 proto 47 sport 0-65535 dport 8-9 "
                + "priority 3 action protect spi 0x00001234")
        #expect(commands[7].description.hasPrefix("sp add id 4294967295 dir out"))
        #expect(commands[9].description == "sp del dir out src 10.0.0.0/8 dst ::/0 proto 47 sport 0-65535 dport 8-9 "
                + "priority 3")
    }

    @Test func redactedDescriptionHidesTheKey() throws {
        let command = try #require(try parse("sa add spi 0x1000 dir in mode transport aead aes-gcm-128 key \(key128)"))
        #expect(command.description.contains(key128))
        #expect(!command.redactedDescription.contains(key128.dropFirst(2)))
        #expect(command.redactedDescription.contains("key <redacted>"))
        // Printing the model types does not print keys either.
        guard case .saAdd(let sa) = command else { return }
        let keyHex = String(key128.dropFirst(2))
        #expect(String(describing: sa.keyMaterial) == "<20 bytes of key material>")
        #expect(!String(describing: sa).contains("0, 1, 2, 3"))
        #expect(!String(reflecting: sa).contains("0, 1, 2, 3"))
        var dumped = ""
        dump(sa, to: &dumped)
        #expect(!dumped.contains("0, 1, 2, 3") && !dumped.contains(keyHex))
    }
}

@Suite struct AntiReplayOffTests {
    @Test func replayWindowZeroTurnsAntiReplayOff() throws {
        let text = "port 0 role unprotected address 192.0.2.1/24\n" + Lines.saIn + " replay-window 0\n"
        let config = try GatewayConfig.load(text: text, name: "t.conf")
        #expect(config.sas.values.first?.replayWindow == 0)
        // The setting survives the round trip through configText.
        #expect(try GatewayConfig.load(text: config.configText, name: "again") == config)
    }
}
