// SA lifetimes through the real binary: packet and byte limits exact per
// packet (outbound across the atomic reservation, inbound on the receiving
// worker), one EXPIRE(soft) and one EXPIRE(hard) each, time limits within a
// second, and a hard-expired SA out of the data path.

import Foundation
import Packet
import Testing

private struct LifetimeTraffic: Decodable {
    var config: String
    var inputs: Int
}

extension EndToEnd {
    @Suite struct Lifetimes {
        @Test func limitsAreExactAndExpireOnce() async throws {
            let dir = try E2E.scratchDirectory("lifetime")
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.run("lifetime_e2e.py", ["make", "--dir", dir.path], as: LifetimeTraffic.self)
            let vdevs = ["net_pcap0,rx_pcap=\(dir.path)/in0.pcap,tx_pcap=\(dir.path)/out0.pcap",
                         "net_pcap1,rx_pcap=\(dir.path)/in1.pcap,tx_pcap=\(dir.path)/out1.pcap"]
            let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: traffic.config)
            let ready = ContinuousClock.now
            // When each event line first appeared, seen by polling the output.
            var seenAt: [String: Duration] = [:]
            let deadline = ready + .seconds(6)
            while ContinuousClock.now < deadline && seenAt.count < 7 {
                for line in run.child.stdout.lines where line.hasPrefix("event: ") && seenAt[line] == nil {
                    seenAt[line] = ContinuousClock.now - ready
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            let status = await run.stop()
            #expect(status == 0, "\(run.child.transcript())")
            let events = run.child.stdout.lines.filter { $0.hasPrefix("event: ") }
            func count(_ prefix: String) -> Int { events.filter { $0.hasPrefix(prefix) }.count }
            #expect(count("event: expire soft dir=out spi=0x00006001 reason=packets") == 1, "\(events)")
            #expect(count("event: expire hard dir=out spi=0x00006001 reason=packets") == 1, "\(events)")
            #expect(count("event: expire soft dir=out spi=0x00006002") == 0, "\(events)")
            #expect(count("event: expire hard dir=out spi=0x00006002 reason=bytes") == 1, "\(events)")
            #expect(count("event: expire soft dir=in spi=0x00006003 reason=packets") == 1, "\(events)")
            #expect(count("event: expire hard dir=in spi=0x00006003 reason=packets") == 1, "\(events)")
            let soft = seenAt["event: expire soft dir=out spi=0x00006004 reason=seconds"]
            let hard = seenAt["event: expire hard dir=out spi=0x00006004 reason=seconds"]
            #expect(soft.map { $0 >= .milliseconds(500) && $0 <= .milliseconds(2000) } == true, "soft after \(String(describing: soft))")
            #expect(hard.map { $0 >= .milliseconds(1500) && $0 <= .milliseconds(3000) } == true, "hard after \(String(describing: hard))")
            #expect(run.child.stdout.text.contains("SAs past a hard lifetime removed:")
                    && run.child.stdout.text.contains("spi 0x00006004"), "\(run.child.transcript())")

            let total = try #require(run.report.total, "\(run.child.transcript())")
            #expect(total.int("lifetime_expired") == 4 + 3 + 4, "\(total)")
            // Which SPIs left, and how often: scapy is not needed to count ESP headers.
            let out = try PcapFile.read(dir.appendingPathComponent("out1.pcap").path)
            var perSPI: [UInt32: Int] = [:]
            for f in out where f.count > 14 + 24 && f[14 + 9] == 50 {
                let spi = f[34..<38].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                perSPI[spi, default: 0] += 1
            }
            #expect(perSPI == [0x6001: 8, 0x6002: 3], "ESP out of port 1 per SPI: \(perSPI)")
            #expect(try PcapFile.read(dir.appendingPathComponent("out0.pcap").path).count == 6, "inbound: 6 of 10 forwarded")
        }
    }
}
