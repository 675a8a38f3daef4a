// The local stack (`port N punt M`) with the Linux kernel as the stack: the
// real sluice on net_tap ports in a network namespace of its own, scapy as
// the outside neighbour (scripts/local_stack_kernel.py). The kernel answers
// ARP, ping, Neighbor Discovery and IKE on UDP 500 through sluice: frames
// punted to its TAP as they arrived, its answers relayed out as it sent them.
// Needs root, /dev/net/tun and `unshare` (what scripts/test.sh runs with).

import Foundation
import Testing

@Suite(.enabled(if: FileManager.default.fileExists(atPath: "/dev/net/tun")
                && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare") && getuid() == 0,
                "needs root, /dev/net/tun and unshare"))
struct LocalStackKernelTests {
    @Test func kernelAnswersThroughTheLocalStack() async throws {
        let dir = try E2E.scratchDirectory("stack")
        defer { E2E.removeScratch(dir) }
        let script = E2E.scripts.appendingPathComponent("local_stack_kernel.py").path
        let child = try Child("/usr/bin/unshare", ["-n", E2E.python, script, try E2E.sluiceBinary(), dir.path])
        let status = await child.waitForExit(timeout: .seconds(90))
        #expect(status == 0, "\(child.transcript())")
        guard let line = child.stdout.lines.last(where: { $0.hasPrefix("{") }),
              let report = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
            Issue.record("no report\n\(child.transcript())")
            return
        }
        #expect(report["started"] as? Bool == true, "\(line)")
        for answer in ["arp", "ping", "neighbor_discovery", "ike"] {
            #expect(report[answer] as? Bool == true, "the kernel's \(answer) answer did not come back: \(line)")
        }
        // Each of the four questions went to the kernel, each answer came out.
        let final = (report["final"] as? [String])?.first ?? ""
        func counter(_ name: String) -> Int {
            guard let r = final.range(of: " \(name)=") else { return -1 }
            return Int(final[r.upperBound...].prefix { $0.isNumber }) ?? -1
        }
        #expect(counter("punted") >= 4 && counter("from_stack") >= 4, "\(final)")
    }
}
