// Path MTU of an SA through the real binary: the worker reads a router's
// ICMP "fragmentation needed" about the gateway's ESP packet (port 1 replays
// it), the control loop maps it to the SA, prints the change once, and from
// then on the SA's 1400-byte packets (port 0 replays one) are refused with
// ICMP errors back to their sender instead of sealed.

import Foundation
import Packet
import Testing

extension EndToEnd {
    @Suite struct PathMTU {
        static let config = ControlledGateway.network + """
        sa add spi 0x6101 dir out src 10.2.0.1 dst 10.2.0.2 mode tunnel aead aes-gcm-128 key 0x\(String(repeating: "a1", count: 16))5a5a5a5a
        sp add dir out src 172.16.0.0/12 dst 192.168.61.0/24 priority 1 action protect spi 0x6101
        sp add dir in src 0.0.0.0/0 dst 10.2.0.1/32 proto icmp priority 1 action bypass

        """

        /// An IPv4 frame from `src` to `dst` entering port `port` (0 or 1),
        /// carrying `body` after its IP header under `proto`.
        static func frame(port: Int, _ src: String, _ dst: String, proto: IPProtocol, body: [UInt8]) -> [UInt8] {
            let b = PacketBuilder(ethernet: EthernetSpec(destination: MACAddress("02:00:00:00:bb:0\(port + 1)")!,
                                                         source: MACAddress("02:00:00:00:0\(port + 1):02")!),
                                  network: .ipv4(IPv4Spec(source: IPv4Address(src)!, destination: IPv4Address(dst)!)),
                                  transport: .raw(proto))
            var f = try! b.build(payloadLength: body.count)
            f.replaceSubrange(34..., with: body)
            return f
        }

        @Test func aRoutersTooBigHoldsTheSAToItsPath() async throws {
            let dir = try E2E.scratchDirectory("pmtu")
            defer { E2E.removeScratch(dir) }
            let conf = dir.appendingPathComponent("sluice.conf")
            try Self.config.write(to: conf, atomically: true, encoding: .utf8)
            // 1400 bytes inside: an ESP packet of 1456, within port 1's 1500.
            let plain = Self.frame(port: 0, "172.16.0.5", "192.168.61.9", proto: .udp,
                                   body: [0x1F, 0x40, 0, 53, 0x05, 0x64, 0, 0] + [UInt8](repeating: 0x33, count: 1400 - 28))
            // What a router answers about its first ESP packet: the outer header and ESP header (SPI, sequence 1).
            let quote = [UInt8](Self.frame(port: 1, "10.2.0.1", "10.2.0.2", proto: .esp,
                                           body: [0, 0, 0x61, 0x01, 0, 0, 0, 1] + [UInt8](repeating: 0x5c, count: 1428))
                                    .dropFirst(14).prefix(548))
            var icmp: [UInt8] = [3, 4, 0, 0, 0, 0, 0x05, 0x14] + quote  // MTU 1300
            let sum = InternetChecksum.checksum(icmp)
            icmp[2] = UInt8(sum >> 8); icmp[3] = UInt8(sum & 0xFF)
            let tooBig = Self.frame(port: 1, "192.168.99.1", "10.2.0.1", proto: .icmp, body: icmp)
            try PcapWriter.write([plain], to: dir.appendingPathComponent("in0.pcap"))
            try PcapWriter.write([tooBig], to: dir.appendingPathComponent("in1.pcap"))
            let vdevs = ["net_pcap0,rx_pcap=\(dir.path)/in0.pcap,infinite_rx=1,tx_pcap=/dev/null",
                         "net_pcap1,rx_pcap=\(dir.path)/in1.pcap,infinite_rx=1,tx_pcap=/dev/null"]
            let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: conf.path)
            let learnt = "sluice: path MTU of SA spi 0x00006101 dst 10.2.0.2: 1300"
            let deadline = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < deadline && !run.child.stdout.text.contains(learnt) {
                try await Task.sleep(for: .milliseconds(20))
            }
            try await Task.sleep(for: .milliseconds(200))
            let status = await run.stop()
            #expect(status == 0, "\(run.child.transcript())")
            // Printed once: the same report again only confirms it.
            #expect(run.child.stdout.lines.filter { $0.hasPrefix("sluice: path MTU of SA") } == [learnt],
                    "\(run.child.transcript())")
            let total = try #require(run.report.total, "\(run.child.transcript())")
            #expect((total.int("packet_too_big") ?? 0) > 0 && (total.int("icmp_errors") ?? 0) > 0, "\(total)")
        }
    }
}
