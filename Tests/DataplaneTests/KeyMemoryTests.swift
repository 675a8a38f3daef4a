// An SA's key, as configured and as expanded, lives only in the slabs of
// secret memory (`SecretBytes`, `AEADKey`), and leaves them when the SA is
// deleted: nothing in the control session, the compiler or the published
// tables keeps an SA config or a key alive after the change that removed it.

import Command
import Control
import Crypto
import Glibc
import Testing

extension EALSuites.GatewayTests {
    @Test func aDeletedSALeavesNoKeyBehind() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        var system = SystemRandomNumberGenerator()
        func material() -> [UInt8] { (0..<36).map { _ in UInt8.random(in: 0...255, using: &system) } }
        let inbound = material(), outbound = material()
        func hex(_ bytes: [UInt8]) -> String {
            "0x" + bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
        }
        let policies = """

        sp add dir in src 0.0.0.0/0 dst 10.1.0.0/16 priority 3 action protect spi 0x7a01
        sp add dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 3 action protect spi 0x7a02
        """
        let text = h.baseConfigText + """

        sa add spi 0x7a01 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(hex(inbound))
        sa add spi 0x7a02 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead chacha20-poly1305 key \(hex(outbound))
        """ + policies
        let session = try h.installSession(text, name: "keys")
        // Installed: the config's copy (key and salt) and the expanded key
        // (whose schedule starts with the key itself).
        for (name, m) in [("inbound", inbound), ("outbound", outbound)] {
            #expect(SecretBytes.memoryContains(m), "\(name) key material held while installed")
        }

        // The inbound SA deleted (its policy with it), then the outbound one.
        let withoutInbound = text.split(separator: "\n").filter { !$0.contains("0x7a01") }.joined(separator: "\n")
        try session.install(GatewayConfig.load(text: withoutInbound, name: "keys"))
        #expect(try eventuallyGone(inbound), "inbound key zeroed after its SA was deleted")
        #expect(SecretBytes.memoryContains(outbound), "the other SA's key is still held")
        try session.install(GatewayConfig.load(text: h.baseConfigText, name: "keys"))
        #expect(try eventuallyGone(outbound), "outbound key zeroed after its SA was deleted")
    }

    /// Whether `material` (whole, or its cipher key alone) is found nowhere
    /// in secret memory within 2 s: the expanded key goes once every worker
    /// has passed a quiescent point after the change.
    private func eventuallyGone(_ material: [UInt8]) throws -> Bool {
        let key = Array(material.prefix(32))
        for _ in 0..<200 {
            if !SecretBytes.memoryContains(material) && !SecretBytes.memoryContains(key) { return true }
            usleep(10_000)
        }
        return false
    }
}
