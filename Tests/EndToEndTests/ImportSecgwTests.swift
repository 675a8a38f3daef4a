// `sluicectl import-secgw` as an operator runs it: the built binary on an
// ipsec-secgw file, then `sluicectl check` on what it wrote.

import Foundation
import Testing

@Suite struct ImportSecgwTests {
    /// A small site in ipsec-secgw's format that Sluice can take whole.
    static let secgwFile = """
        # ipsec-secgw: one AES-GCM tunnel to 203.0.113.9 (Sluice end-to-end fixture)
        sp ipv4 out esp protect 3001 pri 5 src 172.20.0.0/16 dst 172.21.0.0/16 sport 0:65535 dport 0:65535
        sp ipv4 out esp discard pri 1 sport 0:65535 dport 0:65535
        sp ipv4 in esp protect 3002 pri 5 src 172.21.0.0/16 dst 172.20.0.0/16 sport 0:65535 dport 0:65535
        sa out 3001 aead_algo aes-128-gcm \\
        aead_key 9e:21:04:77:c3:5d:10:88:ab:42:6f:e1:09:3b:d4:7a:11:22:33:44 \\
        mode ipv4-tunnel src 203.0.113.1 dst 203.0.113.9
        sa in 3002 aead_algo aes-128-gcm \\
        aead_key 47:8c:d2:1e:60:f5:3a:99:0b:7d:e4:25:c8:61:af:13:55:66:77:88 \\
        mode ipv4-tunnel src 203.0.113.9 dst 203.0.113.1
        rt ipv4 dst 172.20.0.0/16 port 0
        rt ipv4 dst 203.0.113.0/24 port 1
        neigh port 0 02:00:00:aa:00:01
        neigh port 1 02:00:00:bb:00:01

        """

    /// `sluicectl`: $SLUICECTL_BIN, else next to this test executable (where
    /// `swift test` builds every product), else next to the sluice binary.
    static func sluicectl() throws -> String {
        let fm = FileManager.default
        if let path = E2E.environment["SLUICECTL_BIN"], !path.isEmpty { return path }
        if let me = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let sibling = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("sluicectl").path
            if fm.isExecutableFile(atPath: sibling) { return sibling }
        }
        let sibling = URL(fileURLWithPath: try E2E.sluiceBinary()).deletingLastPathComponent()
            .appendingPathComponent("sluicectl").path
        guard fm.isExecutableFile(atPath: sibling) else {
            throw HarnessError("sluicectl not found next to sluice (\(sibling)); build it with "
                               + "`swift build --product sluicectl` or set SLUICECTL_BIN")
        }
        return sibling
    }

    static func run(_ arguments: [String]) async throws -> (status: Int32, child: Child) {
        let child = try Child(try sluicectl(), arguments)
        guard let status = await child.waitForExit(timeout: .seconds(20)) else {
            throw HarnessError("sluicectl did not finish within 20 s\n\(child.transcript())")
        }
        return (status, child)
    }

    @Test func importedFilePassesCheck() async throws {
        let dir = try E2E.scratchDirectory("import-secgw")
        defer { E2E.removeScratch(dir) }
        let input = dir.appendingPathComponent("site.cfg")
        let output = dir.appendingPathComponent("site.conf")
        try Self.secgwFile.write(to: input, atomically: true, encoding: .utf8)
        // An older copy readable by all is replaced by one only its owner reads (it holds keys).
        try "old\n".write(to: output, atomically: true, encoding: .utf8)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: output.path)

        let (status, child) = try await Self.run(["import-secgw", input.path, "--unprotected-ports", "1",
                                                  "--output", output.path])
        #expect(status == 0, "\(child.transcript())")
        #expect(child.stdout.text.isEmpty)
        #expect(child.stderr.lines.allSatisfy { $0.hasPrefix("sluicectl: note: \(input.path)") },
                "\(child.transcript())")
        let written = try String(contentsOf: output, encoding: .utf8)
        let mode = try FileManager.default.attributesOfItem(atPath: output.path)[.posixPermissions] as? Int
        #expect(mode == 0o600, "mode \(String(mode ?? 0, radix: 8))")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted() == ["site.cfg", "site.conf"])
        #expect(written.contains("sa add spi 0x00000bb9 dir out src 203.0.113.1 dst 203.0.113.9 mode tunnel"))
        #expect(written.contains("route add 203.0.113.0/24 via 169.254.0.2\n"))

        let (checkStatus, check) = try await Self.run(["check", output.path])
        #expect(checkStatus == 0, "\(check.transcript())")
        #expect(check.stdout.text == "\(output.path): ok (2 ports, 2 neighbors, 2 routes, 2 SAs, 3 policies)\n")

        // A word with terminal escapes (clear screen) and a bidi override is
        // quoted in the error with them written out, never sent raw.
        let hostile = dir.appendingPathComponent("hostile.conf")
        try "route add 10.0.0.0/8 via \u{1B}[2J\u{202E}x\n".write(to: hostile, atomically: true, encoding: .utf8)
        let (hostileStatus, refused) = try await Self.run(["check", hostile.path])
        #expect(hostileStatus == 1, "\(refused.transcript())")
        #expect(refused.stderr.text.contains("\\u{1B}[2J\\u{202E}x"), "\(refused.transcript())")
        #expect(!refused.stderr.text.unicodeScalars.contains { $0 == "\u{1B}" || $0 == "\u{202E}" })
    }

    @Test func exitStatusSaysWhatWasLeftOut() async throws {
        let dir = try E2E.scratchDirectory("import-secgw-partial")
        defer { E2E.removeScratch(dir) }
        let input = dir.appendingPathComponent("cbc.cfg")
        try """
            sa out 3001 cipher_algo aes-128-cbc cipher_key 00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff \\
            auth_algo sha1-hmac auth_key 00:11:22:33:44:55:66:77:88:99:aa:bb:cc:dd:ee:ff:00:11:22:33 \\
            mode ipv4-tunnel src 203.0.113.1 dst 203.0.113.9
            rt ipv4 dst 203.0.113.0/24 port 1

            """.write(to: input, atomically: true, encoding: .utf8)
        let (status, child) = try await Self.run(["import-secgw", input.path])
        #expect(status == 1, "\(child.transcript())")
        #expect(child.stdout.text.contains("route add 203.0.113.0/24 port 1\n"))
        #expect(child.stderr.text.contains("sluicectl: note: \(input.path):1: left out: SA out 3001 uses cipher_algo"))

        let (missing, _) = try await Self.run(["import-secgw", dir.appendingPathComponent("absent.cfg").path])
        #expect(missing == 2)
    }
}
