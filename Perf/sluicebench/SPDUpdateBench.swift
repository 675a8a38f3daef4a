// `sluicebench --mode spd-update`: how long a single policy change takes to
// reach every worker on a running gateway with a large SPD — compile
// (patched from the previous classifier where the driver allows, else
// rebuilt), publish with one atomic store, and wait for the RCU grace period
// after which every worker classifies with the new snapshot. Also the full
// rebuild the patch avoids, and the snapshot's build time and memory.

import Command
import Control
import Dataplane
import Foundation
import IPsec
import Packet

enum SPDUpdateBench {
    /// `sp add id N dir out …` lines for generated ClassBench-like rules
    /// (IPv4, no interface ids), as an operator would type them.
    static func policyLines(count: Int, seed: UInt64, firstID: Int) -> [String] {
        var generator = SPDRuleSetGenerator(seed: seed, ipv6: false)
        var lines: [String] = []
        var id = firstID
        while lines.count < count {
            for rule in generator.rules(count: count) where rule.ifID == 0 && lines.count < count {
                let s = rule.selector
                // The language gives ports only to TCP, UDP and SCTP, type and code only to ICMP.
                if s.sourcePorts != nil || s.destinationPorts != nil {
                    guard let proto = s.proto, [6, 17, 132, 1].contains(proto.rawValue) else { continue }
                }
                let selector = PolicySelector(direction: .outbound, source: s.source, destination: s.destination, proto: s.proto,
                                              sourcePorts: s.sourcePorts, destinationPorts: s.destinationPorts)
                lines.append(Command.spAdd(id: PolicyID(UInt32(id)), selector: selector, priority: UInt32(rule.rank >> 32) % 1_000_000,
                                           action: id % 3 == 0 ? .discard : .bypass).description)
                id += 1
            }
        }
        return lines
    }

    static func run(rules: Int, changes: Int, driver: String, say: (String) -> Void) throws -> [String: Any] {
        _ = try EAL.initialize(arguments: ["sluicebench", "--no-huge", "-m", "1024", "--no-pci", "--no-shconf", "--no-telemetry",
                                           "--log-level", "lib.eal:warning", "--lcores", "0@0,1@1"])
        let p = try RingPort.create(name: "spdu_p", queues: 1, size: 1024, socket: 0)
        let u = try RingPort.create(name: "spdu_u", queues: 1, size: 1024, socket: 0)
        let gateway = try Gateway(portIDs: [p.port, u.port], roles: [p.port: .protected, u.port: .unprotected], workerLcores: [1])
        defer { gateway.stop() }
        let base = """
        port \(p.port) role protected address 10.0.0.1/16
        port \(u.port) role unprotected address 192.0.2.1/24
        spd driver \(driver)

        """
        let lines = policyLines(count: rules, seed: 0x5bd1, firstID: 1)
        var config = try GatewayConfig.load(text: base + lines.joined(separator: "\n") + "\n", name: "spd-update")
        let ipsec = IPsecCompiler()
        try gateway.publish(routes: RouteCompiler.compile(config, portMACs: [:]))
        var start = monotonicSeconds()
        guard let first = try ipsec.compile(config, workerLcores: gateway.workerLcores) else { throw DataplaneError("no SPD") }
        let buildSeconds = monotonicSeconds() - start
        try gateway.publish(ipsec: first)
        ipsec.commit()
        try gateway.start()
        let memory = first.outSPD.classifier.memoryBytes
        let chosen = first.outSPD.driver
        say("sluicebench: \(rules) rules, driver \(chosen) (\(ipsec.notes.first ?? "")); built in \(String(format: "%.1f", buildSeconds * 1e3)) ms, \(memory) bytes")

        // Single adds and deletes, each compiled, published and waited for.
        let extra = policyLines(count: changes, seed: 0x5bd2, firstID: 1_000_000)
        var add: [Double] = [], del: [Double] = [], patched = 0
        for line in extra {
            for text in [line, "sp del id " + line.split(separator: " ")[3]] {
                try config.apply(CommandParser.parseLine(Substring(text), location: SourceLocation(file: "bench", line: 1, column: 1))!)
                start = monotonicSeconds()
                let tables = try ipsec.compile(config, workerLcores: gateway.workerLcores)
                try gateway.publish(ipsec: tables)  // returns after the grace period: every worker sees it
                ipsec.commit()
                let seconds = monotonicSeconds() - start
                if ipsec.notes.first?.contains("patched") == true { patched += 1 }
                if text.hasPrefix("sp add") { add.append(seconds) } else { del.append(seconds) }
            }
        }
        // The same change without the previous classifier: a full rebuild.
        var rebuild: [Double] = []
        for _ in 0..<min(changes, 10) {
            let fresh = IPsecCompiler()
            start = monotonicSeconds()
            let tables = try fresh.compile(config, workerLcores: gateway.workerLcores)
            try gateway.publish(ipsec: tables)
            rebuild.append(monotonicSeconds() - start)
        }
        func ms(_ xs: [Double], _ q: Double) -> Double {
            let s = xs.sorted()
            return s.isEmpty ? 0 : s[min(s.count - 1, Int(Double(s.count) * q))] * 1e3
        }
        let report: [String: Any] = [
            "mode": "spd-update", "rules": rules, "driver": chosen.rawValue, "changes": 2 * changes, "patched": patched,
            "build_ms": buildSeconds * 1e3, "memory_bytes": memory,
            "add_visible_ms_median": ms(add, 0.5), "add_visible_ms_p99": ms(add, 0.99),
            "del_visible_ms_median": ms(del, 0.5), "del_visible_ms_p99": ms(del, 0.99),
            "rebuild_visible_ms_median": ms(rebuild, 0.5),
        ]
        say(String(format: "sluicebench: sp add visible to all workers: median %.3f ms (p99 %.3f); sp del: median %.3f ms; "
                   + "full rebuild + publish: median %.3f ms; %d of %d changes patched",
                   ms(add, 0.5), ms(add, 0.99), ms(del, 0.5), ms(rebuild, 0.5), patched, 2 * changes))
        return report
    }
}
