import Foundation
import Packet
import Testing

extension EndToEnd {
    /// An outbound SA without ESN installed at `seq 4294967294` sends exactly
    /// two packets (…94 and 2^32 − 1) and refuses the rest under
    /// `esp_sequence_exhausted`: the 32-bit counter never wraps (RFC 4303 §3.3.3).
    @Suite struct SequenceExhaustion {
        @Test func outboundSARefusesPastTwoToThe32Minus1() async throws {
            let dir = try E2E.scratchDirectory("seq-exhaustion")
            defer { E2E.removeScratch(dir) }
            let frames = try (0..<5).map { i in
                try PacketBuilder.udp(IPv4Address(10, 0, 0, 5), UInt16(1000 + i), IPv4Address(10, 1, 0, 9), 53)
                    .build(payloadLength: 32)
            }
            try PcapFile.write(frames, to: dir.appendingPathComponent("in0.pcap").path)
            try E2E.writeEmptyPcap(dir.appendingPathComponent("in1.pcap"))
            let key = "0x" + String(repeating: "11", count: 36)
            let config = """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            neighbor 192.0.2.2 lladdr 02:00:00:00:00:02 port 1
            route add 10.1.0.0/16 via 192.0.2.2
            sa add spi 0x1001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(key) seq 4294967294
            sp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect spi 0x1001
            """
            let configURL = dir.appendingPathComponent("sluice.conf")
            try config.write(to: configURL, atomically: true, encoding: .utf8)
            let vdevs = ["net_pcap0,rx_pcap=\(dir.path)/in0.pcap,tx_pcap=\(dir.path)/out0.pcap",
                         "net_pcap1,rx_pcap=\(dir.path)/in1.pcap,tx_pcap=\(dir.path)/out1.pcap"]
            let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: configURL.path)
            let settled = await run.waitForStats(timeout: .seconds(20)) { s in
                s["rx"] == 5 && (s["tx"] ?? 0) + (s["drop"] ?? 0) == 5
            }
            let status = await run.stop()
            #expect(settled, "\(run.child.transcript())")
            #expect(status == 0)
            let total = try #require(run.report.total, "\(run.child.transcript())")
            #expect(total.int("tx") == 2)
            #expect(run.report.totalReasons == ["esp_sequence_exhausted": 3], "\(run.child.transcript())")

            // On the wire: ESP sequence numbers 4294967294 and 4294967295, in order.
            let sent = try PcapFile.read(dir.appendingPathComponent("out1.pcap").path)
            let sequences = sent.map { f -> UInt32 in
                // Ethernet (14) + IPv4 (20) + SPI (4): the 32-bit sequence number.
                UInt32(f[38]) << 24 | UInt32(f[39]) << 16 | UInt32(f[40]) << 8 | UInt32(f[41])
            }
            #expect(sequences == [4_294_967_294, 4_294_967_295])
        }
    }
}
