// The neighbour agent (`port N resolve on`) against the Linux kernel's ARP
// and Neighbor Discovery: the real sluice on two net_tap ports in a network
// namespace of its own, the kernel as the upstream router on wire0, scapy
// as a LAN host on lan0 (scripts/neighbor_kernel.py). No `neighbor` lines:
// sluice learns the kernel's MAC from its answers, the kernel learns
// sluice's from sluice's, both ways traffic flows. Negative control: the
// same run without `resolve` gets nothing through.
// Needs root, /dev/net/tun and `unshare` (what scripts/test.sh runs with).

import Foundation
import Testing

@Suite(.enabled(if: FileManager.default.fileExists(atPath: "/dev/net/tun")
                && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") && getuid() == 0,
                "needs root, /dev/net/tun and unshare"))
struct NeighborKernelTests {
    func run(_ extra: [String]) async throws -> [String: Any] {
        let dir = try E2E.scratchDirectory("neigh")
        defer { E2E.removeScratch(dir) }
        let script = E2E.scripts.appendingPathComponent("neighbor_kernel.py").path
        let child = try Child("/usr/bin/unshare", ["-n", E2E.python, script, try E2E.sluiceBinary(), dir.path] + extra)
        let status = await child.waitForExit(timeout: .seconds(90))
        #expect(status == 0, "\(child.transcript())")
        guard let line = child.stdout.lines.last(where: { $0.hasPrefix("{") }),
              let report = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
            Issue.record("no report\n\(child.transcript())")
            return [:]
        }
        #expect(report["started"] as? Bool == true, "\(line)")
        return report
    }

    static let checks = ["sluice_resolved_kernel_v4", "sluice_resolved_kernel_v6", "kernel_learned_sluice_v4",
                         "kernel_learned_sluice_v6", "kernel_reached_lan_v4", "kernel_reached_lan_v6"]

    @Test func sluiceAndTheKernelResolveEachOther() async throws {
        let report = try await run([])
        for check in Self.checks {
            #expect(report[check] as? Bool == true, "\(check): \(report)")
        }
        // Everything it learned, it learned from answers: the kernel's two
        // addresses and the LAN host's two, each with its own MAC.
        let learned = (report["neighbor_list"] as? [[String: Any]] ?? []).map {
            "\($0["address"] ?? "") \($0["lladdr"] ?? "") \($0["state"] ?? "")"
        }
        #expect(Set(learned) == ["192.0.2.254 02:bb:00:00:00:fe reachable", "2001:db8:b::fe 02:bb:00:00:00:fe reachable",
                                 "10.0.0.5 02:cc:00:00:00:05 reachable", "2001:db8:a::5 02:cc:00:00:00:05 reachable"],
                "\(learned)")
        let agent = report["agent"] as? [String: Int] ?? [:]
        #expect((agent["held_sent"] ?? 0) >= 2 && agent["held_dropped"] == 0, "\(agent)")
    }

    @Test func withoutResolveNothingGetsThrough() async throws {
        let report = try await run(["--no-resolve"])
        for check in Self.checks {
            #expect(report[check] as? Bool == false, "\(check): \(report)")
        }
    }
}
