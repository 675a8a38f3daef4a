// The real `sluice` binary on net_pcap ports: pcaps in, pcaps out, checked
// frame by frame by scapy (scripts/check_output.py), counters checked
// against what scripts/make_traffic.py generated.

import Foundation
import Testing

/// Every end-to-end test runs a subprocess that busy-polls the CPUs; one at a time.
@Suite(.serialized) struct EndToEnd {}

extension EndToEnd {
    @Suite struct Forwarding {
        /// One worker, everything enters on port 0: routed IPv4/IPv6 (UDP,
        /// TCP, options, 802.1Q, padding) leave by the right port, rewritten
        /// exactly; every other frame is dropped under its reason.
        @Test func packetByPacket() async throws {
            let dir = try E2E.scratchDirectory("forwarding")
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.makeTraffic(scenario: "forwarding", dir: dir)
            let eal = E2E.ealArguments(lcores: "0@0,1@1", vdevs: traffic.vdevs(in: dir))
            let run = try await SluiceRun(eal: eal, config: traffic.config)

            let n = UInt64(traffic.inputs)
            let settled = await run.waitForStats(timeout: .seconds(20)) { s in
                s["rx"] == n && (s["tx"] ?? 0) + (s["drop"] ?? 0) == n
            }
            let status = await run.stop()
            let report = run.report
            #expect(settled, "stats never showed rx=\(n) with tx+drop=\(n); last: \(report.lastStatsLine ?? "none")\n\(run.child.transcript())")
            #expect(status == 0, "sluice did not exit 0 after SIGTERM\n\(run.child.transcript())")
            #expect(report.readyWorkers == 1)

            try checkCounters(report, traffic, run)
            let check = try await Scripts.checkOutput(dir: dir, portMACs: portMACs(report, ports: traffic.ports.count))
            expectClean(check, traffic)
        }

        /// Two workers, both ports with two RX and two TX queues: every frame
        /// leaves exactly once, each worker served its own queues.
        @Test func twoWorkers() async throws {
            let dir = try E2E.scratchDirectory("two-workers")
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.makeTraffic(scenario: "two-workers", dir: dir, count: 300, seed: 2)
            let eal = E2E.ealArguments(lcores: "0@0,1@0,2@1", vdevs: traffic.vdevs(in: dir))
            let run = try await SluiceRun(eal: eal, config: traffic.config)

            let n = UInt64(traffic.inputs)
            let settled = await run.waitForStats(timeout: .seconds(20)) { s in s["rx"] == n && s["tx"] == n }
            let status = await run.stop()
            let report = run.report
            #expect(settled, "stats never showed rx=tx=\(n); last: \(report.lastStatsLine ?? "none")\n\(run.child.transcript())")
            #expect(status == 0, "sluice did not exit 0 after SIGTERM\n\(run.child.transcript())")
            #expect(report.readyWorkers == 2)

            try checkCounters(report, traffic, run)
            #expect(report.cores.count == 2, "expected two worker cores\n\(run.child.transcript())")
            for (lcore, core) in report.cores.sorted(by: { $0.key < $1.key }) {
                let rx = core.int("rx") ?? 0
                #expect(rx > 0, "worker lcore \(lcore) received nothing")
                // Queue q of every port belongs to the q-th worker.
                if let queue = core["queue"], let expected = traffic.inputsPerQueue[queue] {
                    #expect(rx == expected, "worker lcore \(lcore) (queue \(queue)) rx=\(rx), its queues held \(expected)")
                }
            }
            let check = try await Scripts.checkOutput(dir: dir, portMACs: portMACs(report, ports: traffic.ports.count))
            expectClean(check, traffic)
        }
    }
}

/// The final counters against the generated traffic: total, per reason, per port.
private func checkCounters(_ report: SluiceReport, _ traffic: TrafficSummary, _ run: SluiceRun) throws {
    let total = try #require(report.total, "no 'final: total' line\n\(run.child.transcript())")
    let dropped = traffic.drops.values.reduce(0, +)
    #expect(total.int("rx") == traffic.inputs, "final total rx")
    #expect(total.int("tx") == traffic.forwarded, "final total tx")
    #expect(total.int("drop") == dropped, "final total drop")
    #expect(report.totalReasons == traffic.drops, "drop reasons in '\(report.total.map { $0.description } ?? "")'")

    let coreRx = report.cores.values.compactMap { $0.int("rx") }.reduce(0, +)
    let coreDrop = report.cores.values.compactMap { $0.int("drop") }.reduce(0, +)
    #expect(coreRx == traffic.inputs, "sum of the core rx counters")
    #expect(coreDrop == dropped, "sum of the core drop counters")

    for (portText, expectedRx) in traffic.inputsPerPort {
        let port = try #require(report.ports[Int(portText)!], "no 'final: port \(portText)' line\n\(run.child.transcript())")
        #expect(port.int("rx") == expectedRx, "port \(portText) rx")
        #expect(port.int("tx") == traffic.forwardedPerPort[portText], "port \(portText) tx")
        #expect(port.int("missed") == 0 && port.int("rx_errors") == 0 && port.int("tx_errors") == 0,
                "port \(portText) errors: \(port)")
    }
}

/// Port MACs as sluice printed them; net_pcap's own default
/// (02:70:63:61:70:<index>) for a port it did not print.
private func portMACs(_ report: SluiceReport, ports: Int) -> [Int: String] {
    var macs = report.portMACs
    for p in 0..<ports where macs[p] == nil { macs[p] = String(format: "02:70:63:61:70:%02x", p) }
    return macs
}

private func expectClean(_ check: CheckSummary, _ traffic: TrafficSummary) {
    let problems = check.problems.joined(separator: "\n")
    #expect(check.missingFiles == 0, "TX pcaps not written:\n\(problems)")
    #expect(check.matched == traffic.forwarded, "forwarded frames found in the TX pcaps")
    #expect(check.missing == 0, "frames never sent:\n\(problems)")
    #expect(check.duplicates == 0, "frames sent twice:\n\(problems)")
    #expect(check.unexpected == 0 && check.shouldHaveDropped == 0, "frames that should not have left:\n\(problems)")
    #expect(check.wrongPort == 0, "frames out of the wrong port:\n\(problems)")
    #expect(check.wrongDstMac == 0, "wrong next-hop MAC:\n\(problems)")
    #expect(check.wrongSrcMac == 0, "wrong source MAC:\n\(problems)")
    #expect(check.badTtl == 0, "TTL / hop limit not decremented by one:\n\(problems)")
    #expect(check.badIpv4Checksum == 0, "IPv4 header checksums wrong:\n\(problems)")
    #expect(check.payloadChanged == 0 && check.otherBytesChanged == 0, "bytes changed that must not:\n\(problems)")
    #expect(check.outputsPerPort == traffic.forwardedPerPort, "frames per output port")
    #expect(check.ok, "check_output.py: \(problems)")
}
