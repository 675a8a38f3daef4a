import Foundation
import Testing

/// `sluicebench --port-floor` splits an ESP run's cycles per packet into the
/// ports' share (a child `--mode bypass` run with frames of the size the ESP
/// mode receives), the raw engine's and the ESP work left over. The child
/// must really run on the same ports: its frames have the ESP mode's input
/// size, it forwards them, and plain forwarding costs less than ESP does.
@Suite(.serialized) struct PortFloor {
    @Test(arguments: [("outbound", 512 + 42), ("inbound", 14 + 20 + 16 + (20 + 8 + 512 + 2 + 2) + 16)])
    func splitsTheWorkersCyclesPerPacket(mode: String, frameSize: Int) async throws {
        let bench = E2E.packageRoot.path + "/.build/release/sluicebench"
        guard FileManager.default.fileExists(atPath: bench) else {
            Issue.record("\(bench) is missing: run scripts/test.sh (it builds the release sluicebench)")
            return
        }
        let child = try Child(bench, ["--mode", mode, "--payload", "512", "--seconds", "1", "--warmup", "0.5",
                                      "--port-floor", "--json"], environment: [:])
        guard let (r, line) = await child.jsonReport(timeout: .seconds(90)) else { return }
        #expect(r["port_floor_frame_size"] as? Int == frameSize, "\(line)")
        #expect((r["port_floor_command"] as? String ?? "").contains("--mode bypass --size \(frameSize) --ports pcap"), "\(line)")
        let worker = r["worker_cycles_per_packet"] as? Double ?? 0
        let floor = r["port_floor_cycles_per_packet"] as? Double ?? 0
        let raw = r["baseline_cycles_per_packet"] as? Double ?? 0
        #expect((r["port_floor_mpps"] as? Double ?? 0) > 0.1, "\(line)")
        #expect(floor > 0 && floor < worker, "forwarding must cost less than ESP: \(line)")
        #expect(raw > 0 && raw < worker, "\(line)")
        let ceiling = r["ceiling_ratio"] as? Double ?? 0
        #expect(abs(ceiling - raw / (raw + floor)) < 0.002, "\(line)")
        #expect(abs((r["esp_cycles_per_packet"] as? Double ?? 0) - (worker - floor - raw)) < 0.01, "\(line)")
    }

    @Test func refusesRingPorts() async throws {
        let bench = E2E.packageRoot.path + "/.build/release/sluicebench"
        guard FileManager.default.fileExists(atPath: bench) else {
            Issue.record("\(bench) is missing: run scripts/test.sh (it builds the release sluicebench)")
            return
        }
        let child = try Child(bench, ["--mode", "outbound", "--ports", "ring", "--port-floor", "--json"], environment: [:])
        let status = await child.waitForExit(timeout: .seconds(30))
        #expect(status != 0)
        #expect(child.stderr.text.contains("--port-floor measures"), "\(child.transcript())")
    }
}
