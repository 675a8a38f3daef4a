// ESP interop: the real `sluice` on net_pcap ports against an independent
// ESP implementation, scapy's `scapy.layers.ipsec` (scripts/esp_interop.py,
// esp_cells.py). For every cell of the matrix
//   {aes-gcm-128, aes-gcm-256, chacha20-poly1305}
//   × {tunnel 4in4, 6in6, 4in6, 6in4; transport 4, 6}
//   × {no ESN, ESN crossing 2^32} × {plain ESP, UDP 4500}
// scapy must decrypt every ESP packet sluice sends to exactly the plaintext
// that went in (TTL − 1, outer header as configured, sequence numbers in
// order from the SA's `seq`, IV = sequence number), and sluice must turn
// every packet scapy encrypted back into exactly its plaintext (TTL − 1, L2
// rewritten). The tamper test sends broken, replayed and unprotected traffic
// and compares sluice's drop counters with what each packet must cause.
// A second peer, Wireshark's ESP dissector (scripts/esp_wireshark.py, tshark
// with libgcrypt), decrypts and ICV-checks what sluice encrypted in every
// cell it can read (AES-GCM without ESN on Wireshark 4.0).
//
// Environment (all optional):
//   SLUICE_ESP_INTEROP=0               skip this suite (it runs by default)
//   SLUICE_ESP_INTEROP_CELLS=a,b       only these cells (names as in the test list)
//   SLUICE_ESP_INTEROP_ENGINE=E        per-cell (default) | none | auto | ipsec-mb | sodium
//   SLUICE_ESP_INTEROP_COUNT=N         packets per cell and direction (default 24)
//   SLUICE_E2E_KEEP=1                  keep the scratch folders (pcaps, config, expect.json)
//
// To test this harness itself before the data path lands, point SLUICE_BIN at
// scripts/esp_fake_sluice.py (a Python model of the gateway): the suite must pass.
//
// One sluice process serves the six mode/family cells of one AEAD × ESN ×
// encapsulation combination (each cell has its own SPIs and prefixes), so the
// 72 cells cost 12 start-ups; each cell is still its own test case.

import Foundation
import Synchronization
import Testing

/// See the top of this file: the suite waits for the ESP data path.
let espInteropEnabled = ProcessInfo.processInfo.environment["SLUICE_ESP_INTEROP"] != "0"

extension EndToEnd {
    @Suite(.serialized, .enabled(if: espInteropEnabled, "SLUICE_ESP_INTEROP=0 skips the ESP interop suite"))
    struct ESPInterop {
        /// One matrix cell against scapy, both directions.
        @Test(arguments: ESPCell.all)
        func cell(_ cell: ESPCell) async throws {
            guard ESPCell.selected(cell) else { return }
            let run = try await ESPGroupRuns.shared.result(for: cell.group)
            run.expectHealthy()
            guard let check = run.check else { return }
            let result = try #require(check.cells[cell.name],
                                      "esp_interop.py check has no result for \(cell.name)\n\(run.finalBlock)")
            let details = result.problems.joined(separator: "\n") + "\n" + run.finalBlock
            #expect(result.espMatched == result.espExpected, """
                \(cell.name): scapy decrypted \(result.espMatched) of the \(result.espExpected) packets \
                sluice should have encrypted
                \(details)
                """)
            #expect(result.plainMatched == result.plainExpected, """
                \(cell.name): \(result.plainMatched) of the \(result.plainExpected) packets scapy encrypted \
                came out in clear
                \(details)
                """)
            let first = result.seqFirst, last = result.seqLast
            let range = "\(first.map(String.init) ?? "none")…\(last.map(String.init) ?? "none")"
            if cell.esn {
                // Outbound `esn seq 4294967290`: the seventh packet crosses 2^32.
                let crossed = first == 4_294_967_290 && (result.espExpected < 7 || (last ?? 0) >= 1 << 32)
                #expect(crossed, "\(cell.name): ESN sequence numbers \(range) should start at 4294967290 and cross 2^32")
            } else if result.espExpected > 0 {
                let fromOne = first == 1
                #expect(fromOne, "\(cell.name): sequence numbers \(range) should start at 1")
            }
            let ok = result.ok
            #expect(ok, "\(cell.name):\n\(details)")
            run.expectWiresharkAgrees(on: cell)
        }

        /// intel-ipsec-mb pinned to each of its other code paths
        /// (`--ipsec-mb-arch`; the matrix runs the best this CPU has): its
        /// AES-GCM and ChaCha20-Poly1305 are separate code for SSE, AVX, AVX2
        /// and AVX-512, with keys expanded differently for each. Every AEAD,
        /// tunnel and transport, with and without ESN and UDP: scapy decrypts
        /// what sluice sealed and sluice delivers what scapy sealed, exactly.
        @Test(arguments: ["sse", "avx", "avx2"])
        func pinnedCodePath(_ arch: String) async throws {
            let cells = ESPCell.aeads.flatMap { aead in
                [ESPCell(aead: aead, mode: "tunnel-4in4", esn: false, udp: false),
                 ESPCell(aead: aead, mode: "transport-6", esn: true, udp: true)]
            }
            let run = try await ESPGroupRun.perform("pinned-\(arch)", cells: cells, engine: "ipsec-mb",
                                                    options: ["--ipsec-mb-arch", arch])
            run.expectHealthy()
            let banner = run.outcome.stdout.split(separator: "\n").first { $0.hasPrefix("sluice: IPsec:") } ?? ""
            #expect(banner.contains(", \(arch.uppercased()) (") && banner.contains(", pinned;"),
                    "sluice should announce intel-ipsec-mb's pinned \(arch) path: '\(banner)'")
            let check = try #require(run.check, "esp_interop.py check: \(run.checkError ?? "no result")")
            for cell in cells {
                let result = try #require(check.cells[cell.name], "no result for \(cell.name)\n\(run.finalBlock)")
                #expect(result.ok && result.espExpected > 0 && result.espMatched == result.espExpected
                        && result.plainExpected > 0 && result.plainMatched == result.plainExpected,
                        "\(arch) \(cell.name):\n\(result.problems.joined(separator: "\n"))\n\(run.finalBlock)")
            }
        }

        /// ESP that scapy encrypted and then cut with its own fragmenter
        /// (`fragment`, `fragment6`; 2 to 4 pieces, in order or reversed,
        /// six cells' fragments interleaved, two of them transport mode to
        /// protected hosts): sluice reassembles every datagram and delivers
        /// exactly its inner packet.
        @Test func fragmentedESPFromScapyIsReassembled() async throws {
            let dir = try E2E.scratchDirectory("esp-fragments")
            defer { E2E.removeScratch(dir) }
            let cells = ["aes-gcm-128/tunnel-4in4/noesn/esp", "aes-gcm-256/tunnel-6in6/esn/esp",
                         "chacha20-poly1305/tunnel-4in6/noesn/udp", "aes-gcm-256/tunnel-6in4/esn/udp",
                         "aes-gcm-256/transport-4/esn/esp", "chacha20-poly1305/transport-6/noesn/udp"]
            let traffic = try await Scripts.run("esp_interop.py",
                                                ["make-fragments", "--dir", dir.path, "--count", "8"]
                                                    + cells.flatMap { ["--cell", $0] },
                                                as: ESPTraffic.self)
            let outcome = try await ESPSluice.run(traffic, in: dir)
            outcome.expectSettled(traffic)
            let total = try #require(outcome.report.total, "no 'final: total' line\n\(outcome.transcript)")
            #expect(traffic.inputs > traffic.forwarded * 2, "scapy cut \(traffic.inputs) fragments for \(traffic.forwarded) packets")
            #expect(total.int("rx") == traffic.inputs, "final total rx\n\(outcome.finalBlock)")
            #expect(total.int("fragments") == traffic.inputs, "final total fragments\n\(outcome.finalBlock)")
            #expect(total.int("reassembled") == traffic.forwarded, "final total reassembled\n\(outcome.finalBlock)")
            #expect(total.int("tx") == traffic.forwarded, "final total tx\n\(outcome.finalBlock)")
            #expect(total.int("drop") == 0, "final total drop\n\(outcome.finalBlock)")
            let check = try await ESPSluice.check(dir, outcome.report)
            #expect(check.ok && check.matched == traffic.forwarded, """
                scapy's fragmented ESP: \(check.matched) of \(traffic.forwarded) inner packets delivered intact
                \(check.problems.joined(separator: "\n"))
                \(outcome.finalBlock)
                """)
        }

        /// ESP that sluice seals too big for its port (`port 1 mtu 1280`) and
        /// sends in fragments, since the inner packet may be cut (IPv4
        /// without DF; IPv6 of at most 1,280 bytes): scapy's own reassembly
        /// (`defragment`, `defragment6`) puts each together, scapy decrypts
        /// it, and every inner packet must be the one sent, every fragment
        /// no larger than the MTU.
        @Test func sealedESPInFragmentsIsReassembledByScapy() async throws {
            let dir = try E2E.scratchDirectory("esp-outbound-fragments")
            defer { E2E.removeScratch(dir) }
            let cells = ["aes-gcm-128/tunnel-4in4/noesn/esp", "aes-gcm-256/tunnel-6in6/esn/esp",
                         "chacha20-poly1305/tunnel-4in6/noesn/udp", "aes-gcm-256/tunnel-6in4/esn/udp",
                         "aes-gcm-128/transport-4/noesn/esp"]
            let traffic = try await Scripts.run("esp_interop.py",
                                                ["make-outbound-fragments", "--dir", dir.path, "--count", "8"]
                                                    + cells.flatMap { ["--cell", $0] },
                                                as: ESPTraffic.self)
            let outcome = try await ESPSluice.run(traffic, in: dir)
            outcome.expectSettled(traffic)
            let total = try #require(outcome.report.total, "no 'final: total' line\n\(outcome.transcript)")
            #expect(total.int("rx") == traffic.inputs, "final total rx\n\(outcome.finalBlock)")
            #expect(total.int("fragmented") == traffic.forwarded, "final total fragmented\n\(outcome.finalBlock)")
            #expect(total.int("tx") == total.int("fragments_out") && (total.int("tx") ?? 0) >= 2 * traffic.forwarded,
                    "final total tx, fragments_out\n\(outcome.finalBlock)")
            #expect(total.int("drop") == 0, "final total drop\n\(outcome.finalBlock)")
            let check = try await ESPSluice.check(dir, outcome.report)
            #expect(check.fragmented == traffic.forwarded && check.fragmentFrames == total.int("tx"),
                    "scapy put together \(check.fragmented) datagrams from \(check.fragmentFrames) fragments")
            #expect(check.ok && check.matched == traffic.forwarded, """
                sluice's fragmented ESP: \(check.matched) of \(traffic.forwarded) inner packets decrypted intact by scapy
                \(check.problems.joined(separator: "\n"))
                \(outcome.finalBlock)
                """)
        }

        /// Broken, replayed, mis-addressed and unprotected packets: each must
        /// be dropped under its counter, and everything valid around them
        /// must still pass both ways. The protected senders of packets with
        /// TTL 1 get an ICMP Time Exceeded back.
        @Test func tamperedAndReplayedPacketsAreDroppedUnderTheirCounters() async throws {
            let dir = try E2E.scratchDirectory("esp-tamper")
            defer { E2E.removeScratch(dir) }
            let traffic = try await Scripts.run("esp_interop.py",
                                                ["make-tamper", "--dir", dir.path] + ESPCell.engineArguments,
                                                as: ESPTraffic.self)
            let outcome = try await ESPSluice.run(traffic, in: dir)
            outcome.expectSettled(traffic)
            let total = try #require(outcome.report.total, "no 'final: total' line\n\(outcome.transcript)")
            let expectedDrops = traffic.drops.map(\.count).reduce(0, +)
            #expect(total.int("rx") == traffic.inputs, "final total rx\n\(outcome.finalBlock)")
            #expect(total.int("tx") == traffic.forwarded + traffic.answered, "final total tx\n\(outcome.finalBlock)")
            #expect(total.int("icmp_errors") == traffic.answered, "final total icmp_errors\n\(outcome.finalBlock)")
            #expect(total.int("drop") == expectedDrops, "final total drop\n\(outcome.finalBlock)")

            // Each nonzero counter belongs to the first group one of whose
            // strings its name contains (the data path's names are its own).
            var sums: [String: Int] = [:]
            var unmatched: [String: Int] = [:]
            for (name, value) in outcome.report.totalReasons where value > 0 {
                if let group = traffic.drops.first(where: { g in g.match.contains { name.contains($0) } }) {
                    sums[group.reason, default: 0] += value
                } else {
                    unmatched[name] = value
                }
            }
            #expect(unmatched.isEmpty, """
                drop counters no expected reason accounts for: \(unmatched.sorted { $0.key < $1.key })
                \(outcome.finalBlock)
                """)
            for group in traffic.drops {
                let got = sums[group.reason, default: 0]
                #expect(got == group.count, """
                    \(group.reason) (counters whose name contains \(group.match)): sluice \(got), \
                    expected \(group.count) for:
                      \(group.packets.joined(separator: "\n  "))
                    \(outcome.finalBlock)
                    """)
            }

            let check = try await ESPSluice.check(dir, outcome.report)
            #expect(check.ok, """
                the packets around the tampered ones:
                \(check.problems.joined(separator: "\n"))
                \(outcome.finalBlock)
                """)
            #expect(check.matched == traffic.forwarded, "valid packets that went through")
            #expect(traffic.answered > 0 && check.answered == traffic.answered,
                    "Time Exceeded answers: \(check.answered) of \(traffic.answered)")
        }

        /// The Python side on its own: scapy against the known-answer vectors,
        /// scapy sealing and opening its own packets for every cell, and
        /// `check` and the tamper expectations against a model gateway
        /// (scripts/esp_reference.py), clean and with corruptions it must catch.
        @Test func scapyPeerSelfTest() async throws {
            let report = try await Scripts.run("esp_interop.py", ["selftest"], as: ESPSelfTest.self)
            #expect(report.ok, "esp_interop.py selftest:\n\(report.failures.joined(separator: "\n"))")
        }
    }
}

// MARK: - The matrix

struct ESPCell: Sendable, Hashable, CustomTestStringConvertible {
    static let aeads = ["aes-gcm-128", "aes-gcm-256", "chacha20-poly1305"]
    static let modes = ["tunnel-4in4", "tunnel-6in6", "tunnel-4in6", "tunnel-6in4", "transport-4", "transport-6"]

    var aead: String
    var mode: String
    var esn: Bool
    var udp: Bool

    /// `AEAD/MODE/ESN/ENCAP`, as esp_cells.py names it.
    var name: String { "\(aead)/\(mode)/\(esn ? "esn" : "noesn")/\(udp ? "udp" : "esp")" }
    var testDescription: String { name }

    /// The cells one sluice process serves: same AEAD, ESN and encapsulation.
    var group: String { "\(aead)/\(esn ? "esn" : "noesn")/\(udp ? "udp" : "esp")" }

    /// In esp_cells.py's order (its cell numbers, hence SPIs and prefixes, follow it).
    static let all: [ESPCell] = aeads.flatMap { aead in
        modes.flatMap { mode in
            [false, true].flatMap { esn in [false, true].map { udp in ESPCell(aead: aead, mode: mode, esn: esn, udp: udp) } }
        }
    }

    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// SLUICE_ESP_INTEROP_CELLS, when set: a comma-separated list of names.
    static func selected(_ cell: ESPCell) -> Bool {
        guard let list = environment["SLUICE_ESP_INTEROP_CELLS"], !list.isEmpty else { return true }
        return list.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces) == cell.name }
    }

    static var engineArguments: [String] {
        environment["SLUICE_ESP_INTEROP_ENGINE"].map { ["--engine", $0] } ?? []
    }

    static var countArguments: [String] {
        environment["SLUICE_ESP_INTEROP_COUNT"].map { ["--count", $0] } ?? []
    }
}

/// What esp_interop.py make / make-tamper wrote.
struct ESPTraffic: Decodable, Sendable {
    var config: String
    var ports: [String: PortFiles]
    var cells: [String]
    var inputs: Int
    var inputsPerPort: [String: Int]
    var forwarded: Int
    var forwardedPerPort: [String: Int]
    var drops: [ESPDropGroup]
    /// Dropped packets whose sender gets an ICMP error back (make-tamper).
    var answered: Int

    enum CodingKeys: String, CodingKey {
        case config, ports, cells, inputs, inputsPerPort, forwarded, forwardedPerPort, drops, answered
    }

    init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        config = try c.decode(String.self, forKey: .config)
        ports = try c.decode([String: PortFiles].self, forKey: .ports)
        cells = try c.decode([String].self, forKey: .cells)
        inputs = try c.decode(Int.self, forKey: .inputs)
        inputsPerPort = try c.decode([String: Int].self, forKey: .inputsPerPort)
        forwarded = try c.decode(Int.self, forKey: .forwarded)
        forwardedPerPort = try c.decode([String: Int].self, forKey: .forwardedPerPort)
        drops = try c.decode([ESPDropGroup].self, forKey: .drops)
        answered = try c.decodeIfPresent(Int.self, forKey: .answered) ?? 0
    }
}

/// Packets that must be dropped for one reason; `match` are the strings
/// sluice's counter name may contain.
struct ESPDropGroup: Decodable, Sendable {
    var reason: String
    var match: [String]
    var count: Int
    var packets: [String]
}

/// What esp_interop.py check found.
struct ESPCheck: Decodable, Sendable {
    var ok: Bool
    var matched: Int
    var expectedForwarded: Int
    var counts: [String: Int]
    var problems: [String]
    var outputsPerPort: [String: Int]
    /// Port 1's datagrams that scapy put together from fragments, and the fragment frames.
    var fragmented: Int
    var fragmentFrames: Int
    /// ICMP Time Exceeded frames on port 0 answering packets sent with TTL 1.
    var answered: Int
    var cells: [String: ESPCellCheck]
}

struct ESPCellCheck: Decodable, Sendable {
    var ok: Bool
    var espExpected: Int
    var espMatched: Int
    var plainExpected: Int
    var plainMatched: Int
    var seqFirst: UInt64?
    var seqLast: UInt64?
    var problems: [String]
}

/// What esp_wireshark.py check found (tshark null: not installed).
struct ESPWiresharkCheck: Decodable, Sendable {
    var tshark: String?
    var ok: Bool
    var problems: [String]
    var cells: [String: Cell]
    var unsupported: [String]

    struct Cell: Decodable, Sendable {
        var frames: Int
        var authentic: Int
        var matched: Int
        var controlRejected: Bool
        var problems: [String]
    }
}

struct ESPSelfTest: Decodable, Sendable {
    var ok: Bool
    var failures: [String]
}

// MARK: - Running sluice

/// One finished gateway run: its counters and output.
struct ESPSluiceOutcome: Sendable {
    var settled: Bool
    var status: Int32?
    var stdout: String
    var transcript: String
    var report: SluiceReport { SluiceReport(stdout) }

    /// Every `final:` line, for failure messages.
    var finalBlock: String {
        "--- sluice final counters ---\n"
            + stdout.split(separator: "\n").filter { $0.hasPrefix("final:") }.joined(separator: "\n")
    }

    func expectSettled(_ traffic: ESPTraffic) {
        #expect(settled, """
            stats never showed rx=\(traffic.inputs) with tx+drop=\(traffic.inputs); \
            last: \(report.lastStatsLine ?? "none")
            \(transcript)
            """)
        #expect(status == 0, "sluice did not exit 0 after SIGTERM\n\(transcript)")
    }
}

enum ESPSluice {
    /// Starts sluice on the traffic's pcaps (one worker), waits until every
    /// input was received and either sent or dropped, and stops it.
    static func run(_ traffic: ESPTraffic, in dir: URL, options: [String] = []) async throws -> ESPSluiceOutcome {
        let vdevs = traffic.ports.keys.compactMap(Int.init).sorted().map { port in
            let files = traffic.ports[String(port)]!
            return (["net_pcap\(port)"] + files.rx.map { "rx_pcap=" + dir.appendingPathComponent($0).path }
                + files.tx.map { "tx_pcap=" + dir.appendingPathComponent($0).path }).joined(separator: ",")
        }
        let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: traffic.config,
                                      options: options)
        let n = UInt64(traffic.inputs)
        // A fragment taken for reassembly is done with once taken: its
        // datagram counts as one packet sent or dropped. A datagram sent in
        // k fragments counts k packets sent; an ICMP error about a dropped
        // packet is sent besides.
        let settled = await run.waitForStats(timeout: .seconds(20)) { s in
            let sent = Int(s["tx"] ?? 0) - Int(s["fragments_out"] ?? 0) + Int(s["fragmented"] ?? 0) - traffic.answered
            return s["rx"] == n && sent + Int(s["drop"] ?? 0) + Int(s["fragments"] ?? 0) - Int(s["reassembled"] ?? 0) == Int(n)
        }
        let status = await run.stop()
        return ESPSluiceOutcome(settled: settled, status: status, stdout: run.child.stdout.text,
                                transcript: run.child.transcript(lines: 40))
    }

    /// esp_interop.py check with the port MACs sluice printed (net_pcap's
    /// defaults for a port it did not print).
    static func check(_ dir: URL, _ report: SluiceReport) async throws -> ESPCheck {
        var macs = report.portMACs
        for port in 0..<2 where macs[port] == nil { macs[port] = String(format: "02:70:63:61:70:%02x", port) }
        let macArguments = macs.sorted { $0.key < $1.key }.flatMap { ["--port-mac", "\($0.key)=\($0.value)"] }
        let args = ["check", "--dir", dir.path] + macArguments
        return try await Scripts.run("esp_interop.py", args, as: ESPCheck.self)
    }
}

/// One gateway run for the cells of one group, shared by their test cases.
struct ESPGroupRun: Sendable {
    var group: String
    var traffic: ESPTraffic
    var outcome: ESPSluiceOutcome
    var check: ESPCheck?
    var checkError: String?
    var wireshark: ESPWiresharkCheck?
    var wiresharkError: String?

    var finalBlock: String { outcome.finalBlock }

    /// What every cell of the group depends on: the run settled, sluice
    /// exited 0, forwarded everything, dropped nothing, and check ran.
    func expectHealthy() {
        outcome.expectSettled(traffic)
        let total = outcome.report.total
        #expect(total?.int("tx") == traffic.forwarded && total?.int("drop") == 0,
                "group \(group): sluice should forward all \(traffic.forwarded) packets and drop none\n\(finalBlock)")
        if let checkError { Issue.record("group \(group): esp_interop.py check failed: \(checkError)") }
        if let check, !check.ok, check.cells.values.allSatisfy(\.ok) {
            // Problems no cell owns (unknown SPIs, plaintext leaks, missing pcaps).
            let counts = check.counts.filter { $0.value > 0 }.sorted { $0.key < $1.key }
            Issue.record("group \(group): \(counts)\n\(check.problems.joined(separator: "\n"))\n\(finalBlock)")
        }
    }

    /// `engine`: esp_interop.py's `--engine` (default: SLUICE_ESP_INTEROP_ENGINE's);
    /// `options`: sluice's own options beside `--config`.
    static func perform(_ group: String, cells: [ESPCell], engine: String? = nil,
                        options: [String] = []) async throws -> ESPGroupRun {
        let dir = try E2E.scratchDirectory("esp-" + group.replacingOccurrences(of: "/", with: "-"))
        defer { E2E.removeScratch(dir) }
        let traffic = try await Scripts.run("esp_interop.py",
                                            ["make", "--dir", dir.path] + cells.flatMap { ["--cell", $0.name] }
                                                + (engine.map { ["--engine", $0] } ?? ESPCell.engineArguments)
                                                + ESPCell.countArguments,
                                            as: ESPTraffic.self)
        let outcome = try await ESPSluice.run(traffic, in: dir, options: options)
        var run = ESPGroupRun(group: group, traffic: traffic, outcome: outcome)
        do {
            run.check = try await ESPSluice.check(dir, outcome.report)
        } catch {
            run.checkError = "\(error)"
        }
        do {
            run.wireshark = try await Scripts.run("esp_wireshark.py", ["check", "--dir", dir.path],
                                                  as: ESPWiresharkCheck.self)
        } catch {
            run.wiresharkError = "\(error)"
        }
        return run
    }

    /// Wireshark's verdict on the ESP sluice sent for `cell`: every frame
    /// authentic and decrypted to exactly the packet that went in, and the
    /// one-bit-flipped control rejected. Cells Wireshark cannot read (its
    /// version lacks the AEAD or ESN) are left to scapy.
    func expectWiresharkAgrees(on cell: ESPCell) {
        if let wiresharkError {
            Issue.record("group \(group): esp_wireshark.py check failed: \(wiresharkError)")
            return
        }
        guard let wireshark else { return }
        // tshark is one of the packages scripts/install-deps.sh installs.
        #expect(wireshark.tshark != nil, "\(cell.name): \(wireshark.problems.joined(separator: "; "))")
        if wireshark.unsupported.contains(cell.name) { return }
        guard let result = wireshark.cells[cell.name] else {
            Issue.record("\(cell.name): esp_wireshark.py reported neither a result nor 'unsupported'")
            return
        }
        let details = "\(wireshark.tshark ?? "tshark"):\n" + result.problems.joined(separator: "\n")
        #expect(result.frames > 0, "\(cell.name): Wireshark found no ESP frame of this cell\n\(details)")
        if let expected = check?.cells[cell.name]?.espExpected {
            #expect(result.frames == expected, "\(cell.name): Wireshark saw \(result.frames) ESP frames, expected \(expected)\n\(details)")
        }
        #expect(result.authentic == result.frames, "\(cell.name): Wireshark's ICV check passed \(result.authentic) of \(result.frames)\n\(details)")
        #expect(result.matched == result.frames, "\(cell.name): Wireshark decrypted \(result.matched) of \(result.frames) to the input\n\(details)")
        #expect(result.controlRejected, "\(cell.name): a flipped ciphertext bit passed Wireshark's ICV check\n\(details)")
    }
}

/// Runs each group once, on the first request for one of its cells.
final class ESPGroupRuns: Sendable {
    static let shared = ESPGroupRuns()
    private let runs = Mutex<[String: Task<ESPGroupRun, any Error>]>([:])

    func result(for group: String) async throws -> ESPGroupRun {
        let task = runs.withLock { runs in
            if let task = runs[group] { return task }
            let cells = ESPCell.all.filter { $0.group == group && ESPCell.selected($0) }
            let task = Task { try await ESPGroupRun.perform(group, cells: cells) }
            runs[group] = task
            return task
        }
        return try await task.value
    }
}
