import Command
@testable import Control
@testable import Dataplane
import Testing

/// Config → IPsec tables: what is installed, and which SA state survives a
/// recompilation (no EAL needed).
@Suite struct IPsecCompilerTests {
    static let key = "0x" + String(repeating: "42", count: 36)
    static let otherKey = "0x" + String(repeating: "43", count: 36)

    static func config(ttl: Int = 64, key: String = key, inboundPolicy: Bool = true) throws -> GatewayConfig {
        let text = """
        port 0 role protected address 10.0.0.1/24
        port 1 role unprotected address 192.0.2.1/24
        sa add spi 0x1001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(key) ttl \(ttl) seq 100
        sa add spi 0x2001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(key)
        sp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect spi 0x1001
        """ + (inboundPolicy ? "\nsp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001\n" : "\n")
        return try GatewayConfig.load(text: text, name: "t.conf")
    }

    @Test func outboundSequenceSurvivesANonCryptoChangeButNotANewKey() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 100)
        first.outNext[0].pointee = 500  // as if 400 packets had been sent

        // A new outer TTL: same key, so the sequence numbers (the GCM IVs) go on.
        _ = try compiler.compile(Self.config(ttl: 32))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 500)

        // A new key starts from the configured seq.
        _ = try compiler.compile(Self.config(ttl: 32, key: Self.otherKey))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 100)
    }

    @Test func uncommittedCompilationLeavesTheStateInUse() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        first.outNext[0].pointee = 700
        _ = try compiler.compile(Self.config(key: Self.otherKey))  // never published
        #expect(compiler.nextSequence(spi: 0x1001) == 700)
    }

    @Test func inboundSAWithoutAPolicyIsNotInstalled() throws {
        let compiler = IPsecCompiler()
        let tables = try #require(try compiler.compile(Self.config(inboundPolicy: false)))
        #expect(tables.inSAs.count == 0)
        #expect(compiler.warnings.count == 1)
        #expect(compiler.warnings.first?.contains("0x00002001") == true, "\(compiler.warnings)")
        let withPolicy = try #require(try compiler.compile(Self.config()))
        #expect(withPolicy.inSAs.count == 1)
        #expect(compiler.warnings.isEmpty)
    }

    @Test func udpPortsAreESPOnlyWhereAnSAUsesThem() throws {
        let compiler = IPsecCompiler()
        let plain = try #require(try compiler.compile(Self.config()))
        #expect(!plain.natPorts.contains(4500))
    }

    /// `spd driver auto` follows a rule set that grows one policy at a time
    /// (each change small enough to patch): past the linear driver's size
    /// it rebuilds with the driver `auto` now picks, instead of patching the
    /// linear classifier forever.
    @Test func autoDriverFollowsARuleSetGrowingByPatches() throws {
        let compiler = IPsecCompiler()
        var config = try Self.config()
        var drivers: [String] = []
        for i in 0..<40 {
            let line = "sp add dir out src 10.\(i).0.0/16 dst 10.1.\(i).0/24 proto udp dport \(1000 + i) priority \(i + 20) action bypass"
            try config.apply(CommandParser.parseLine(Substring(line), location: SourceLocation(file: "t", line: i + 1, column: 1))!)
            _ = try compiler.compile(config)
            compiler.commit()
            drivers.append(compiler.notes.first ?? "")
        }
        #expect(drivers.first?.contains("driver linear") == true, "\(drivers.first ?? "")")
        #expect(drivers.last?.contains("driver cut-tree") == true, "\(drivers.last ?? "")")
        #expect(drivers.dropLast(10).contains { $0.contains("driver linear, 1 change patched in") }, "patched while linear fits")
    }
}
