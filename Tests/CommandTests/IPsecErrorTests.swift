// Every error class of the IPsec verbs, syntax and semantic, with the exact
// position it points at and the start of its message; and keys are never
// echoed by any message.

import Command
import Testing

extension ErrorCase {
    /// The error points at the `occurrence`-th word of `text` (across lines) that is exactly `word`.
    init(_ text: String, at word: String, _ message: String) {
        self.init(text, at: word, 1, message)
    }

    init(_ text: String, at word: String, _ occurrence: Int, _ message: String) {
        var seen = 0
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            var column = 1
            for piece in line.split(separator: " ", omittingEmptySubsequences: false) {
                if piece == word {
                    seen += 1
                    if seen == occurrence {
                        self.init(text: text, line: index + 1, column: column, message: message)
                        return
                    }
                }
                column += piece.count + 1
            }
        }
        preconditionFailure("no '\(word)' in \(text)")
    }

    /// The error points just past the last word of the last line.
    init(_ text: String, atEnd message: String) {
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        self.init(text: text, line: lines.count, column: lines.last!.count + 1, message: message)
    }
}

/// Lines that parse and apply on their own, to build the failing cases on.
enum Lines {
    static let saOut = "sa add spi 0x1000 dir out src 192.0.2.1 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(key128)"
    static let saIn = "sa add spi 0x2000 dir in src 198.51.100.1 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key128)"
    static let saInTransport = "sa add spi 0x1000 dir in mode transport aead aes-gcm-128 key \(key128)"
    static let spOut = "sp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 1"
}

@Suite struct IPsecErrorTests {
    static let saOut = Lines.saOut, saIn = Lines.saIn, spOut = Lines.spOut
    static let saHead = "sa add spi 0x1000 dir in src 198.51.100.1 dst 192.0.2.1 mode tunnel"

    static let syntaxErrors: [ErrorCase] = [
        .init("foo 1", at: "foo", "unknown command 'foo'; expected one of: port, neighbor, route, sa, sp, crypto-engine"),
        // crypto-engine
        .init("crypto-engine", atEnd: "expected 'auto', 'ipsec-mb' or 'sodium' after 'crypto-engine', found end of line"),
        .init("crypto-engine fast", at: "fast", "expected 'auto', 'ipsec-mb' or 'sodium' after 'crypto-engine', found 'fast'"),
        .init("crypto-engine sodium x", at: "x", "unexpected 'x' after 'sodium'; expected end of line"),
        // sa: fixed words
        .init("sa", atEnd: "expected 'add', 'update' or 'del' after 'sa', found end of line"),
        .init("sa add 0x1000", at: "0x1000", "expected 'spi' after 'add', found '0x1000'"),
        .init("sa add spi", atEnd: "expected an SPI after 'spi', found end of line"),
        .init("sa add spi 0xff dir in", at: "0xff",
              "bad SPI '0xff': 0…255 are reserved (RFC 4303); expected 256…4294967295 or 0x100…0xffffffff"),
        .init("sa del spi 255", at: "255", "bad SPI '255': 0…255 are reserved (RFC 4303)"),
        .init("sa add spi 0 dir in", at: "0", "bad SPI '0': 0…255 are reserved"),
        .init("sa add spi 0x100000000 dir in", at: "0x100000000",
              "bad SPI '0x100000000': expected a number 256…4294967295 or 0x100…0xffffffff"),
        .init("sa add spi 4294967296 dir in", at: "4294967296", "bad SPI '4294967296': expected a number"),
        .init("sa add spi -300 dir in", at: "-300", "bad SPI '-300'"),
        .init("sa add spi +300 dir in", at: "+300", "bad SPI '+300'"),
        .init("sa add spi 0x dir in", at: "0x", "bad SPI '0x'"),
        .init("sa add spi 0x1g00 dir in", at: "0x1g00", "bad SPI '0x1g00'"),
        .init("sa add spi 0x1000 out", at: "out", "expected 'dir' after '0x1000', found 'out'"),
        .init("sa add spi 0x1000 dir both", at: "both", "expected 'in' or 'out' after 'dir', found 'both'"),
        // sa add: options
        .init("sa add spi 0x1000 dir in", atEnd: "expected 'mode' after 'in', found end of line"),
        .init("sa add spi 0x1000 dir in mode tunnel aead aes-gcm-128", atEnd:
              "expected 'key' after 'aes-gcm-128', found end of line"),
        .init("sa add spi 0x1000 dir in key \(key128) mode tunnel", atEnd: "expected 'aead' after 'tunnel', found end of line"),
        .init(saHead + " aead aes-gcm-128 key", atEnd: "expected a key after 'key', found end of line"),
        .init(saHead + " aead aes-gcm-128 key 0x0011zz", at: "0x0011zz",
              "bad key: expected 0x followed by an even number of hex digits"),
        .init(saHead + " aead aes-gcm-128 key 0x001", at: "0x001", "bad key: expected 0x followed by an even"),
        .init(saHead + " aead aes-gcm-128 key 0x", at: "0x", "bad key"),
        // Key material is kept in secret memory, 60 bytes a slot (36 is the most an AEAD takes).
        .init(saHead + " aead aes-gcm-128 key 0x\(String(repeating: "ab", count: 61))",
              at: "0x\(String(repeating: "ab", count: 61))", "bad key: key material is at most 60 bytes, got 61"),
        .init(saHead + " aead aes-gcm-128 key \(key128.dropFirst(2))", at: String(key128.dropFirst(2)), "bad key"),
        .init("sa add spi 0x1000 dir in mode bogus", at: "bogus", "expected 'tunnel' or 'transport' after 'mode', found 'bogus'"),
        .init("sa add spi 0x1000 dir in aead aes-128-gcm", at: "aes-128-gcm",
              "expected 'aes-gcm-128', 'aes-gcm-256' or 'chacha20-poly1305' after 'aead', found 'aes-128-gcm'"),
        .init(saOut + " replay-window 128", at: "replay-window", "replay-window applies only to inbound SAs (dir in)"),
        .init("sa add spi 0x1000 dir out replay-window 64", at: "replay-window", "replay-window applies only to inbound"),
        .init(saIn + " replay-window 65537", at: "65537", "bad replay window '65537'"),
        .init(saIn + " replay-window 0x40", at: "0x40", "bad replay window '0x40'"),
        .init(saIn + " replay-window", atEnd: "expected a number after 'replay-window', found end of line"),
        .init(saIn + " ttl 0", at: "0", "bad TTL '0': expected a number 1…255"),
        .init(saIn + " ttl 256", at: "256", "bad TTL '256'"),
        .init(saIn + " encap udp 0 4500", at: "0", "bad UDP port '0': expected a number 1…65535"),
        .init(saIn + " encap udp 4500 65536", at: "65536", "bad UDP port '65536'"),
        .init(saIn + " encap udp 4500", atEnd: "expected a number after '4500', found end of line"),
        .init(saIn + " encap udp 4500 ttl 3", at: "ttl", "bad UDP port 'ttl'"),
        .init(saIn + " encap tcp", at: "tcp", "expected 'udp' after 'encap', found 'tcp'"),
        .init(saIn + " encap", atEnd: "expected 'udp' after 'encap', found end of line"),
        .init(saIn + " df maybe", at: "maybe", "expected 'copy', 'set' or 'clear' after 'df', found 'maybe'"),
        .init(Lines.saInTransport + " ttl 3", at: "ttl", "ttl applies only to tunnel mode (the outer header)"),
        .init("sa add spi 0x1000 dir in df copy ttl 64 mode transport aead aes-gcm-128 key \(key128)", at: "df",
              "df applies only to tunnel mode (the outer header)"),
        .init(saIn + " seq x", at: "x",
              "bad sequence number 'x': expected a number 0…18446744073709551615, in decimal or 0x hex"),
        .init(saIn + " seq 18446744073709551616", at: "18446744073709551616", "bad sequence number"),
        .init(saIn + " seq 0x10000000000000000", at: "0x10000000000000000", "bad sequence number"),
        .init(saIn + " crypto-engine fast", at: "fast",
              "expected 'auto', 'ipsec-mb' or 'sodium' after 'crypto-engine', found 'fast'"),
        .init(saIn + " esn esn", at: "esn", 2, "unexpected 'esn' after 'esn'; 'esn' may appear only once"),
        .init(saIn + " mode transport", at: "mode", 2, "unexpected 'mode' after <redacted>; 'mode' may appear only once"),
        .init(saIn + " bogus", at: "bogus", "unexpected 'bogus' after <redacted>; expected 'esn', 'seq', "
              + "'replay-window', 'encap', 'df', 'ttl', 'crypto-engine', 'reqid', 'cpu', 'lifetime' or end of line"),
        // A key without its `key` is not echoed either.
        .init(saHead + " aead aes-gcm-128 \(key128)", at: key128, "unexpected <redacted> after 'aes-gcm-128'; expected "),
        .init("sa add spi 0x1000 dir in mode transport aead aes-gcm-128 key \(key128)9", at: "\(key128)9", "bad key"),
        // Nor a piece of a key split by spaces, however short (before: the
        // piece in front of the error was quoted).
        .init("sa add spi 0x1000 dir in mode transport aead aes-gcm-128 key 0xdeadbeefcafebabe 0102030405060708090a0b0c",
              at: "0102030405060708090a0b0c", "unexpected <redacted> after <redacted>;"),
        .init("sa add spi 0x1000 dir in mode transport aead aes-gcm-128 key 0xdead beef", at: "beef",
              "unexpected <redacted> after <redacted>;"),
        // sa del
        .init("sa del 0x1000", at: "0x1000", "expected 'spi' after 'del', found '0x1000'"),
        .init("sa del spi 0x1000 dst", atEnd: "expected an address after 'dst', found end of line"),
        .init("sa del spi 0x1000 dst 10.0.0.300", at: "10.0.0.300", "bad address '10.0.0.300'"),
        .init("sa del spi 0x1000 src 10.0.0.1", at: "src", "unexpected 'src' after '0x1000'; expected 'dst' or end of line"),
        .init("sa del spi 0x1000 dir in", at: "dir", "unexpected 'dir' after '0x1000'; expected 'dst' or end of line"),
        // sp: fixed words
        .init("sp", atEnd: "expected 'add' or 'del' after 'sp', found end of line"),
        .init("sp add src 10.0.0.0/8", at: "src", "expected 'id' or 'dir' after 'add', found 'src'"),
        .init("sp add id 0 dir out", at: "0", "bad policy id '0': expected a number 1…4294967295"),
        .init("sp add id 4294967296 dir out", at: "4294967296", "bad policy id '4294967296'"),
        .init("sp add id 7 src 10.0.0.0/8", at: "src", "expected 'dir' after '7', found 'src'"),
        .init("sp add id 7 id 8", at: "id", 2, "expected 'dir' after '7', found 'id'"),
        .init("sp add dir sideways", at: "sideways", "expected 'in', 'out' or 'fwd' after 'dir', found 'sideways'"),
        // sp add: options
        .init(spOut, atEnd: "expected 'action' after '1', found end of line"),
        .init("sp add dir out src 10.0.0.0/8 priority 1 action bypass", atEnd:
              "expected 'dst' after 'bypass', found end of line"),
        .init(spOut + " action protect", atEnd: "expected 'spi' or 'reqid' after 'protect', found end of line"),
        .init(spOut + " action protect 0x1000", at: "0x1000", "expected 'spi' or 'reqid' after 'protect', found '0x1000'"),
        .init(spOut + " action protect spi 0x10", at: "0x10", "bad SPI '0x10': 0…255 are reserved (RFC 4303)"),
        .init(spOut + " action allow", at: "allow", "expected 'protect', 'bypass' or 'discard' after 'action', found 'allow'"),
        .init(spOut + " action bypass action discard", at: "action", 2,
              "unexpected 'action' after 'bypass'; 'action' may appear only once"),
        .init(spOut + " action bypass proto icmp type 1 sport 2", at: "sport", "give either sport or type, once"),
        .init(spOut + " action bypass proto tcp type 8", at: "type",
              "'type' is ICMP's (proto icmp or icmpv6); ports are sport and dport"),
        .init(spOut + " action bypass code 0 proto udp", at: "code",
              "'code' is ICMP's (proto icmp or icmpv6); ports are sport and dport"),
        .init(spOut + " action bypass proto icmp sport 8", at: "sport", "ICMP has no ports: use type and code, not 'sport'"),
        .init("sp add dir in src ::/0 dst 2001:db8::/32 dport 1 proto icmpv6 priority 1 action bypass", at: "dport",
              "ICMP has no ports: use type and code, not 'dport'"),
        .init(spOut + " action bypass esn", at: "esn",
              "unexpected 'esn' after 'bypass'; expected 'proto', 'sport', 'dport', 'type', 'code', 'if-id' or end of line"),
        .init("sp add dir out src 10.0.0.1/8 dst 10.1.0.0/16 priority 1 action bypass", at: "10.0.0.1/8",
              "bad prefix '10.0.0.1/8': host bits set (did you mean 10.0.0.0/8?)"),
        .init("sp add dir out src 10.0.0.0/8 dst 10.1.0.0/99 priority 1 action bypass", at: "10.1.0.0/99",
              "bad prefix '10.1.0.0/99'"),
        .init("sp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority -1 action bypass", at: "-1",
              "bad priority '-1': expected a number 0…4294967295"),
        .init("sp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 4294967296 action bypass", at: "4294967296",
              "bad priority '4294967296'"),
        .init("sp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 0x10 action bypass", at: "0x10",
              "bad priority '0x10'"),
        .init(spOut + " action bypass proto foo", at: "foo",
              "bad protocol 'foo': expected a number 0…255 or tcp, udp, icmp, icmpv6 or sctp"),
        .init(spOut + " action bypass proto 256", at: "256", "bad protocol '256'"),
        .init(spOut + " action bypass proto TCP", at: "TCP", "bad protocol 'TCP'"),
        .init(spOut + " action bypass proto tcp sport 20-10", at: "20-10",
              "bad port range '20-10': expected N or LO-HI with LO ≤ HI, each 0…65535"),
        .init(spOut + " action bypass proto tcp dport 65536", at: "65536", "bad port range '65536'"),
        .init(spOut + " action bypass proto tcp dport 1-", at: "1-", "bad port range '1-'"),
        .init(spOut + " action bypass proto tcp dport -5", at: "-5", "bad port range '-5'"),
        .init(spOut + " action bypass proto tcp dport 1-2-3", at: "1-2-3", "bad port range '1-2-3'"),
        .init(spOut + " action bypass proto tcp sport", atEnd:
              "expected a port or port range after 'sport', found end of line"),
        // sp del
        .init("sp del", atEnd: "expected 'id' or 'dir' after 'del', found end of line"),
        .init("sp del id", atEnd: "expected a number after 'id', found end of line"),
        .init("sp del id 3 x", at: "x", "unexpected 'x' after '3'; expected end of line"),
        .init("sp del id 3 dir out", at: "dir", "unexpected 'dir' after '3'; expected end of line"),
        .init("sp del dir out src 10.0.0.0/8 priority 1", atEnd: "expected 'dst' after '1', found end of line"),
        .init("sp del dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 1 action bypass", at: "action",
              "unexpected 'action' after '1'; expected 'proto', 'sport', 'dport', 'type', 'code', 'if-id' or end of line"),
        // Later lines report their own line number.
        .init(saOut + "\n\n# c\nsp add dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 1 action protect spi 0x1",
              at: "0x1", "bad SPI '0x1': 0…255 are reserved"),
    ]

    static let semanticErrors: [ErrorCase] = [
        // Anti-replay: 0 (off) or 32…65536; off needs 32-bit sequence numbers.
        .init(saIn + " replay-window 16", at: "16", "bad replay window '16': expected a number 32…65536"),
        .init(saIn + " esn replay-window 0", at: "0", "replay-window 0 turns anti-replay off, which needs 32-bit sequence numbers"),
        // SA consistency.
        .init("sa add spi 0x1000 dir out src 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key128)", at: "192.0.2.1",
              "src needs dst: give both outer addresses or neither"),
        .init("sa add spi 0x1000 dir in dst 192.0.2.1 mode transport aead aes-gcm-128 key \(key128)", at: "192.0.2.1",
              "dst needs src: give both outer addresses or neither"),
        .init("sa add spi 0x1000 dir out src 192.0.2.1 dst 2001:db8::1 mode tunnel aead aes-gcm-128 key \(key128)",
              at: "2001:db8::1", "dst 2001:db8::1 is IPv6 but src 192.0.2.1 is IPv4"),
        .init("sa add spi 0x1000 dir out src 2001:db8::1 dst 192.0.2.1 mode transport aead aes-gcm-128 key \(key128)",
              at: "192.0.2.1", "dst 192.0.2.1 is IPv4 but src 2001:db8::1 is IPv6"),
        .init("sa add spi 0x1000 dir out mode tunnel aead aes-gcm-128 key \(key128)", at: "tunnel",
              "tunnel mode needs src and dst (the outer header)"),
        .init("sa add spi 0x1000 dir in mode transport aead aes-gcm-128 key \(key256)", at: key256,
              "key for aes-gcm-128 must be 20 bytes (16-byte key and 4-byte salt), found 36"),
        .init("sa add spi 0x1000 dir in mode transport aead aes-gcm-256 key \(key128)", at: key128,
              "key for aes-gcm-256 must be 36 bytes (32-byte key and 4-byte salt), found 20"),
        .init("sa add spi 0x1000 dir in mode transport aead chacha20-poly1305 key \(hexKey(32))", at: hexKey(32),
              "key for chacha20-poly1305 must be 36 bytes (32-byte key and 4-byte salt), found 32"),
        .init(saOut + " seq 0", at: "0", "seq 0: an outbound SA's seq is the next number sent, at least 1"),
        .init(saOut + " seq 4294967296", at: "4294967296",
              "seq 4294967296 needs esn (32-bit sequence numbers end at 4294967295)"),
        .init(saIn + " seq 0x100000000", at: "0x100000000", "seq 4294967296 needs esn"),
        // SA identity.
        .init(saOut + "\n" + saOut, at: "0x1000", 2, "SA spi 0x00001000 dst 198.51.100.1 already exists; delete it first"),
        .init(saOut + "\n" + "sa add spi 4096 dir in src 198.51.100.9 dst 198.51.100.1 mode tunnel aead aes-gcm-128 key \(key128)",
              at: "4096", "SA spi 0x00001000 dst 198.51.100.1 already exists"),
        .init(saOut + "\nsa add spi 0x1000 dir out src 192.0.2.1 dst 198.51.100.9 mode tunnel aead aes-gcm-128 key \(key128)",
              at: "0x1000", 2, "outbound SA spi 0x00001000 dst 198.51.100.1 already exists; an outbound SPI names one SA"),
        .init(Lines.saInTransport + "\n" + saOut, at: "0x1000", 2,
              "SA spi 0x00001000 without dst exists and matches every dst; it must be the only SA with its SPI"),
        .init(saOut + "\n" + Lines.saInTransport, at: "0x1000", 2,
              "SA spi 0x00001000 without dst would also match SA spi 0x00001000 dst 198.51.100.1; "
              + "an SA without dst must be the only one with its SPI"),
        .init(Lines.saInTransport + "\n" + Lines.saInTransport, at: "0x1000", 2, "SA spi 0x00001000 already exists"),
        // sa del.
        .init("sa del spi 0x1000", at: "0x1000", "no SA spi 0x00001000"),
        .init(saOut + "\nsa del spi 0x1000 dst 192.0.2.1", at: "0x1000", 2, "no SA spi 0x00001000 dst 192.0.2.1"),
        .init(saIn + "\n" + saIn.replacingOccurrences("192.0.2.1", "192.0.2.2") + "\nsa del spi 8192", at: "8192",
              "several SAs have spi 0x00002000 (dst 192.0.2.1, dst 192.0.2.2); name one with 'dst'"),
        .init(saOut + "\n" + spOut + " action protect spi 0x1000\nsa del spi 0x1000", at: "0x1000", 3,
              "SA spi 0x00001000 dst 198.51.100.1 is used by policy id 1; delete it first"),
        .init(saOut + "\n" + spOut + " action protect spi 0x1000\n" + spOut.replacingOccurrences("priority 1", "priority 2")
              + " action protect spi 0x1000\nsa del spi 0x1000 dst 198.51.100.1", at: "0x1000", 4,
              "SA spi 0x00001000 dst 198.51.100.1 is used by policies id 1, 2; delete them first"),
        // Policies.
        .init(spOut + " action protect spi 0x1000", at: "0x1000", "no SA spi 0x00001000 for dir out"),
        .init(saIn + "\n" + spOut + " action protect spi 0x2000", at: "0x2000", 2, "no SA spi 0x00002000 for dir out"),
        .init("sp add dir out src 10.0.0.0/8 dst 2001:db8::/32 priority 1 action bypass", at: "2001:db8::/32",
              "dst 2001:db8::/32 is IPv6 but src 10.0.0.0/8 is IPv4"),
        .init(spOut + " action bypass sport 80", at: "80", "sport/type needs proto tcp, udp or sctp (ports) or icmp"),
        .init(spOut + " action bypass proto icmp code 300", at: "300", "ICMP type and code are 0-255, found 300"),
        .init(spOut + " action bypass proto 50 dport 1-2", at: "1-2", "dport/code needs proto tcp, udp or sctp (ports) or icmp"),
        .init("sp add dir in src ::/0 dst 2001:db8::/32 proto icmp priority 1 action bypass", at: "icmp",
              "proto icmp is IPv4's; use icmpv6 with IPv6 prefixes"),
        .init(spOut + " proto icmpv6 action bypass", at: "icmpv6", "proto icmpv6 is IPv6's; use icmp with IPv4 prefixes"),
        .init("sp add id 3 dir out src 10.0.0.0/8 dst 10.1.0.0/16 priority 1 action bypass\n"
              + "sp add id 3 dir in src 10.0.0.0/8 dst 10.1.0.0/16 priority 1 action bypass", at: "3", 2,
              "policy id 3 already exists; delete it first"),
        .init(spOut + " action bypass\n" + spOut + " action discard", at: "out", 2,
              "policy id 1 already has this selector and priority"),
        .init("sp del id 9", at: "9", "no policy id 9"),
        .init(spOut + " action bypass\nsp del dir out src 10.0.0.0/8 dst 10.1.0.0/16 proto udp priority 1", at: "out", 2,
              "no policy dir out src 10.0.0.0/8 dst 10.1.0.0/16 proto udp priority 1"),
    ]

    @Test(arguments: syntaxErrors + semanticErrors)
    func reportsErrorAtTheOffendingWord(_ expected: ErrorCase) throws {
        let error = try #require(loadError(expected.text))
        #expect(error.location == SourceLocation(file: "t.conf", line: expected.line, column: expected.column))
        #expect(error.message.hasPrefix(expected.message), "\(error.message)")
    }

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

    @Test(arguments: semanticErrors)
    func semanticErrorsParse(_ expected: ErrorCase) throws {
        _ = try CommandParser.parseFile(expected.text, name: "t.conf")
    }

    /// No message, syntax or semantic, contains key digits.
    @Test(arguments: syntaxErrors + semanticErrors)
    func messagesNeverEchoKeys(_ expected: ErrorCase) throws {
        let error = try #require(loadError(expected.text))
        let digits = [key128, key256, hexKey(32)].map { String($0.dropFirst(2).prefix(24)) }
        for key in digits {
            #expect(!error.message.lowercased().contains(key), "\(error.message)")
        }
    }
}

extension String {
    /// `replacingOccurrences(of:with:)` without Foundation.
    func replacingOccurrences(_ target: String, _ replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
