// Anti-replay through the real binary: scapy's ESP of 20 packets, sent
// twice, gives exactly 20 forwarded inner packets and 20 `esp_replayed`.

import Foundation
import Packet
import Testing

private struct ReplayTraffic: Decodable {
    var config: String
    var inputs: Int
    var unique: Int
}

extension EndToEnd {
    @Suite struct Replay {
        @Test func everyPacketSentTwiceIsForwardedOnce() async throws {
            let dir = try E2E.scratchDirectory("replay")
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.run("replay_e2e.py", ["make", "--dir", dir.path], as: ReplayTraffic.self)
            try E2E.writeEmptyPcap(dir.appendingPathComponent("in0.pcap"))
            let vdevs = ["net_pcap0,rx_pcap=\(dir.path)/in0.pcap,tx_pcap=\(dir.path)/out0.pcap",
                         "net_pcap1,rx_pcap=\(dir.path)/in1.pcap,tx_pcap=\(dir.path)/out1.pcap"]
            let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: traffic.config)
            await run.finish(inputs: traffic.inputs)
            let total = try #require(run.report.total, "\(run.child.transcript())")
            #expect(total.int("tx") == traffic.unique, "\(total)")
            #expect(total.int("esp_replayed") == traffic.unique, "\(total)")
            #expect(run.report.ports[0]?.int("tx") == traffic.unique)
            // Each inner packet once: its tag appears in exactly one frame sent.
            let sent = try PcapFile.read(dir.appendingPathComponent("out0.pcap").path)
            let tags = sent.compactMap { frame -> Int? in
                guard let r = frame.firstRange(of: Array("SLUICE-SPD#".utf8)) else { return nil }
                return Int(String(decoding: frame[r.upperBound..<(r.upperBound + 6)], as: UTF8.self))
            }
            #expect(tags.sorted() == Array(0..<traffic.unique), "inner packets out of port 0: \(tags)")
        }

        /// Two workers receive every ESP packet of one inbound SA (both
        /// queues of the unprotected port replay all of them): the worker
        /// that does not keep the SA hands its packets to the one that does
        /// (over a ring, no lock), so the replay window sees them all and each
        /// is forwarded once.
        @Test func anSAsPacketsOnTwoWorkersGoThroughItsOwner() async throws {
            let dir = try E2E.scratchDirectory("replay-handoff")
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.run("replay_e2e.py", ["make", "--dir", dir.path, "--queues", "2", "--owner", "1"],
                                                as: ReplayTraffic.self)
            try E2E.writeEmptyPcap(dir.appendingPathComponent("in0.pcap"))
            let vdevs = ["net_pcap0,rx_pcap=\(dir.path)/in0.pcap,rx_pcap=\(dir.path)/in0.pcap,tx_pcap=\(dir.path)/out0_0.pcap,tx_pcap=\(dir.path)/out0_1.pcap",
                         "net_pcap1,rx_pcap=\(dir.path)/in1_q0.pcap,rx_pcap=\(dir.path)/in1_q1.pcap,tx_pcap=\(dir.path)/out1_0.pcap,tx_pcap=\(dir.path)/out1_1.pcap"]
            let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@0,2@1", vdevs: vdevs), config: traffic.config)
            await run.finish(inputs: traffic.inputs)
            let total = try #require(run.report.total, "\(run.child.transcript())")
            #expect(total.int("tx") == traffic.unique && total.int("esp_replayed") == traffic.unique, "\(total)")
            #expect(total.int("handoff_full") == nil && total.int("handoff_stale") == nil, "\(total)")
            // Worker 2 received half and forwarded none itself: the owner (lcore 1) sent everything.
            #expect(run.report.cores[2]?.int("rx") == traffic.unique && run.report.cores[2]?.int("tx") == 0, "\(run.report.cores)")
            #expect(run.report.cores[1]?.int("tx") == traffic.unique, "\(run.report.cores)")
            var tags: [Int] = []
            for q in 0..<2 {
                for frame in try PcapFile.read(dir.appendingPathComponent("out0_\(q).pcap").path) {
                    guard let r = frame.firstRange(of: Array("SLUICE-SPD#".utf8)) else { continue }
                    tags.append(Int(String(decoding: frame[r.upperBound..<(r.upperBound + 6)], as: UTF8.self)) ?? -1)
                }
            }
            #expect(tags.sorted() == Array(0..<traffic.unique), "inner packets out of port 0: \(tags.sorted())")
        }
    }
}
