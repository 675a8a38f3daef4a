// A 1,000-rule SPD on the real `sluice` binary (net_pcap ports): every
// packet's fate — protected with the right SA, bypassed exactly, or
// discarded — checked against an oracle written independently in Python
// (scripts/spd_e2e.py), once per classifier driver.

import Foundation
import Testing

/// What spd_e2e.py make wrote.
private struct SPDTraffic: Decodable {
    var config: String
    var inputs: Int
    var fates: [String: Int]
    var rules: Int
}

/// What spd_e2e.py check found.
private struct SPDCheck: Decodable {
    var ok: Bool
    var checked: Int
    var problems: [String]
    var problemCount: Int
}

extension EndToEnd {
    @Suite struct PolicyDatabase {
        @Test(arguments: ["linear", "hash-list", "cut-tree"])
        func thousandRulesEveryFate(driver: String) async throws {
            let dir = try E2E.scratchDirectory("spd-\(driver)")
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.run("spd_e2e.py", ["make", "--dir", dir.path, "--rules", "1000",
                                                               "--packets", "3000", "--seed", "11", "--driver", driver],
                                                as: SPDTraffic.self)
            #expect(traffic.rules == 1000)
            // Every fate is exercised.
            #expect((traffic.fates["protect"] ?? 0) > 100 && (traffic.fates["bypass"] ?? 0) > 100
                    && (traffic.fates["discard"] ?? 0) > 100, "fates \(traffic.fates)")
            let empty = dir.appendingPathComponent("empty.pcap")
            try E2E.writeEmptyPcap(empty)
            func path(_ name: String) -> String { dir.appendingPathComponent(name).path }
            let vdevs = ["net_pcap0,rx_pcap=\(path("in0.pcap")),tx_pcap=\(path("out0.pcap"))",
                         "net_pcap1,rx_pcap=\(empty.path),tx_pcap=\(path("out1.pcap"))"]
            let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: traffic.config)
            let n = UInt64(traffic.inputs)
            let settled = await run.waitForStats(timeout: .seconds(30)) { s in
                s["rx"] == n && (s["tx"] ?? 0) + (s["drop"] ?? 0) == n
            }
            let status = await run.stop()
            #expect(settled, "stats never showed rx=\(n) with tx+drop=\(n)\n\(run.child.transcript())")
            #expect(status == 0, "sluice did not exit 0 after SIGTERM\n\(run.child.transcript())")
            #expect(run.child.stdout.text.contains("spd out: ") && run.child.stdout.text.contains("driver \(driver) (configured)"),
                    "sluice did not report the \(driver) driver\n\(run.child.transcript())")
            let report = run.report
            let total = try #require(report.total, "no 'final: total' line\n\(run.child.transcript())")
            #expect(total.int("policy_discard") == traffic.fates["discard"], "policy_discard counter: \(total)")
            #expect(total.int("tx") == (traffic.fates["protect"] ?? 0) + (traffic.fates["bypass"] ?? 0))

            let mac = report.portMACs[1] ?? "02:70:63:61:70:01"
            let check = try await Scripts.run("spd_e2e.py", ["check", "--dir", dir.path, "--port-mac", "1=\(mac)"],
                                              as: SPDCheck.self)
            let problems = check.problems.joined(separator: "\n")
            #expect(check.ok, "\(check.problemCount) packets met another fate than the oracle's:\n\(problems)")
            #expect(check.checked == Int(total.int("tx") ?? -1))
        }
    }
}
