// Per-CPU SAs (RFC 9611) on the real `sluice` binary with two workers: each
// worker encrypts a reqid's traffic with its own SA (its own sequence
// counter), falls back to the reqid's SA without `cpu`, and with neither
// drops the packet (`no_outbound_sa`) and raises one ACQUIRE naming the
// policy, the packet's selectors and its CPU. scapy decrypts the output.

import Foundation
import Testing

private struct PerCPUTraffic: Decodable {
    var config: String
    var inputs: Int
    var dropped: Int
    var acquirePolicy: Int
}

private struct PerCPUCheck: Decodable {
    var ok: Bool
    var problems: [String]
    var spis: [String]
    /// The TX queues (of port 1) each SA's packets left by.
    var queues: [String: [Int]]
}

extension EndToEnd {
    @Suite struct PerCPUSAs {
        /// With `shared-sa atomic` both workers seal the fallback both use
        /// (0xa000), with `handoff` only its owner (lcore 1, queue 0) does.
        @Test(arguments: ["atomic", "handoff"])
        func eachWorkerUsesItsOwnSAOrTheFallbackOrRaisesAcquire(sharedSA: String) async throws {
            let dir = try E2E.scratchDirectory("percpu-" + sharedSA)
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.run("percpu_e2e.py", ["make", "--dir", dir.path, "--shared-sa", sharedSA],
                                                as: PerCPUTraffic.self)
            let empty = dir.appendingPathComponent("empty.pcap")
            try E2E.writeEmptyPcap(empty)
            func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
            let vdevs = [
                "net_pcap0,rx_pcap=\(path("in0_q0.pcap")),rx_pcap=\(path("in0_q1.pcap")),tx_pcap=\(path("out0_0.pcap")),tx_pcap=\(path("out0_1.pcap"))",
                "net_pcap1,rx_pcap=\(empty.path),rx_pcap=\(empty.path),tx_pcap=\(path("out1_0.pcap")),tx_pcap=\(path("out1_1.pcap"))",
            ]
            // Workers on lcores 1 and 2: queue 0 of every port is lcore 1's, queue 1 lcore 2's.
            let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@0,2@1", vdevs: vdevs), config: traffic.config)
            await run.finish(inputs: traffic.inputs)
            let total = try #require(run.report.total, "no 'final: total' line\n\(run.child.transcript())")
            #expect(total.int("no_outbound_sa") == traffic.dropped, "\(total)")
            #expect(run.report.cores[1]?.int("no_outbound_sa") == nil, "worker 1 has an SA for every reqid")

            // ACQUIRE: from cpu 2 only, for the policy without a fallback, rate-limited (one per second).
            let events = run.child.stdout.lines.filter { $0.hasPrefix("event: acquire") }
            #expect(!events.isEmpty && events.count <= 3, "ACQUIRE events: \(events)")
            for e in events {
                #expect(e.contains("policy=\(traffic.acquirePolicy) cpu=2 ") && e.contains("src=172.16.0.2")
                        && e.contains("proto=17") && e.contains("dport=53"), "\(e)")
            }

            let check = try await Scripts.run("percpu_e2e.py", ["check", "--dir", dir.path], as: PerCPUCheck.self)
            #expect(check.ok, "\(check.problems.joined(separator: "\n"))")
            #expect(check.spis == ["0x7001", "0x7002", "0x8001", "0x9000", "0x9001", "0xa000"])
            #expect(check.queues["0x7001"] == [0] && check.queues["0x7002"] == [1], "per-CPU SAs leave by their worker's queue")
            #expect(check.queues["0xa000"] == (sharedSA == "handoff" ? [0] : [0, 1]), "\(check.queues)")
        }
    }
}
