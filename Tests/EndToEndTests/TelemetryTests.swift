// DPDK telemetry: DPDK's own client, dpdk-telemetry.py (from dpdk-dev),
// reads Sluice's /sluice/… commands from a running gateway.

import Foundation
import Testing

extension EndToEnd {
    @Suite struct Telemetry {
        @Test func dpdkTelemetryReadsSluiceStats() async throws {
            let tool = "/usr/bin/dpdk-telemetry.py"
            try #require(FileManager.default.isExecutableFile(atPath: tool), "\(tool) missing (apt-get install dpdk-dev)")
            let dir = try E2E.scratchDirectory("telemetry")
            defer { E2E.removeScratch(dir) }
            let config = ControlledGateway.config
            let conf = dir.appendingPathComponent("sluice.conf")
            try config.write(to: conf, atomically: true, encoding: .utf8)
            let frames = protectedFrames(6)
            try PcapWriter.write(frames, to: dir.appendingPathComponent("in0.pcap"))
            try E2E.writeEmptyPcap(dir.appendingPathComponent("in1.pcap"))
            // Telemetry needs the runtime directory: a file prefix of our own instead of --no-shconf/--no-telemetry.
            let prefix = "sluicetel\(getpid())"
            let eal = ["--no-huge", "-m", "256", "--no-pci", "--file-prefix", prefix, "--lcores", "0@0,1@1",
                       "--vdev", "net_pcap0,rx_pcap=\(dir.path)/in0.pcap,tx_pcap=\(dir.path)/out0.pcap",
                       "--vdev", "net_pcap1,rx_pcap=\(dir.path)/in1.pcap,tx_pcap=\(dir.path)/out1.pcap"]
            let run = try await SluiceRun(eal: eal, config: conf.path)
            defer { try? FileManager.default.removeItem(atPath: "/var/run/dpdk/\(prefix)") }
            let settled = await run.waitForStats(timeout: .seconds(20)) { s in s["rx"] == UInt64(frames.count) && s["tx"] == UInt64(frames.count) }
            #expect(settled, "\(run.child.transcript())")

            let query = try Child("/bin/sh", ["-c", "printf '/sluice/stats\\n/sluice/cores\\n/sluice/sa/list\\n/sluice/sp/list\\n' | \(E2E.python) \(tool) -f \(prefix)"])
            let status = await query.waitForExit(timeout: .seconds(20))
            let status2 = await run.stop()
            #expect(status == 0 && status2 == 0, "\(query.transcript())")
            var replies: [String: Any] = [:]
            for line in query.stdout.lines where line.hasPrefix("{") {
                if let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] {
                    replies.merge(object) { a, _ in a }
                }
            }
            let stats = try #require(replies["/sluice/stats"] as? [String: Any], "\(query.transcript())")
            #expect(stats["rx"] as? Int == frames.count && stats["tx"] as? Int == frames.count && stats["drop"] as? Int == 0, "\(stats)")
            #expect((replies["/sluice/cores"] as? [String])?.first?.hasPrefix("lcore=1 queue=0 rx=\(frames.count) ") == true, "\(replies)")
            let sas = replies["/sluice/sa/list"] as? [String] ?? []
            #expect(sas.count == 2 && sas.allSatisfy { $0.contains("<redacted>") && !$0.contains("3c3c") }, "\(sas)")
            #expect((replies["/sluice/sp/list"] as? [String])?.count == 2, "\(replies)")
        }
    }
}
