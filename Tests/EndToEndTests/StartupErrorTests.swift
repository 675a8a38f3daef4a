// `sluice` refuses to start, with `sluice: error: …` on stderr and a non-zero
// exit: one test per configuration error class, plus a port the EAL does not
// have and more workers than a port has queues.

import Foundation
import Testing

extension EndToEnd {
    @Suite struct StartupErrors {
        /// Two null ports, one worker: enough EAL for everything but the error under test.
        static let nullPorts = E2E.ealArguments(lcores: "0@0,1@1", vdevs: ["net_null0", "net_null1"])

        /// A config whose line `line` (1-based) is wrong at `token`.
        struct BadConfig: Sendable, CustomTestStringConvertible {
            var name: String
            var text: String
            var line: Int
            var token: String
            var message: String
            var testDescription: String { name }

            var column: Int {
                let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
                return String(lines[line - 1]).column(of: token)
            }
        }

        static let badConfigs: [BadConfig] = [
            BadConfig(name: "unknown verb", text: """
                # a comment line, then a blank one

                port 0 address 10.0.0.1/24
                foo bar
                """, line: 4, token: "foo", message: "unknown command 'foo'"),
            BadConfig(name: "bad prefix", text: """
                port 0 address 10.0.0.1/24
                # LPM prefixes need a valid address
                route add 10.0.0.300/24 port 0
                """, line: 3, token: "10.0.0.300/24", message: "bad prefix '10.0.0.300/24'"),
            BadConfig(name: "unknown port", text: """
                port 0 address 10.0.0.1/24
                port 1 address 10.1.0.1/24
                route add 10.9.0.0/16 port 7
                """, line: 3, token: "7", message: "unknown port 7"),
            BadConfig(name: "duplicate address", text: """
                port 0 address 10.0.0.1/24
                port 1 address 10.1.0.1/24 address 10.0.0.1/16
                """, line: 2, token: "10.0.0.1/16", message: "duplicate address 10.0.0.1"),
        ]

        @Test(arguments: badConfigs)
        func badConfig(_ bad: BadConfig) async throws {
            let dir = try E2E.scratchDirectory("config")
            defer { E2E.removeScratch(dir) }
            let path = dir.appendingPathComponent("bad.conf").path
            try bad.text.write(toFile: path, atomically: true, encoding: .utf8)
            try await expectRefusal(eal: Self.nullPorts, config: path,
                                    contains: "\(path):\(bad.line):\(bad.column): \(bad.message)")
        }

        @Test func portTheEALDoesNotHave() async throws {
            let dir = try E2E.scratchDirectory("missing-port")
            defer { E2E.removeScratch(dir) }
            let path = dir.appendingPathComponent("sluice.conf").path
            try """
                port 0 role protected address 10.0.0.1/24
                port 5 role unprotected address 10.5.0.1/24
                """.write(toFile: path, atomically: true, encoding: .utf8)
            try await expectRefusal(eal: Self.nullPorts, config: path, contains: "port 5 does not exist")
        }

        /// An intel-ipsec-mb code path that does not exist is refused before
        /// the EAL starts.
        @Test func unknownIPsecMBPath() async throws {
            let dir = try E2E.scratchDirectory("mb-arch")
            defer { E2E.removeScratch(dir) }
            let path = dir.appendingPathComponent("sluice.conf").path
            try "port 0 role protected address 10.0.0.1/24\n".write(toFile: path, atomically: true, encoding: .utf8)
            try await expectRefusal(eal: Self.nullPorts, config: path, options: ["--ipsec-mb-arch", "avx3"],
                                    contains: "--ipsec-mb-arch needs auto, sse, avx, avx2 or avx512")
        }

        @Test func moreWorkersThanQueues() async throws {
            let dir = try E2E.scratchDirectory("queues")
            defer { E2E.removeScratch(dir) }
            let empty = dir.appendingPathComponent("empty.pcap")
            try E2E.writeEmptyPcap(empty)
            // net_pcap: one rx_pcap and one tx_pcap = one queue pair; two workers need two.
            let vdevs = (0..<2).map { "net_pcap\($0),rx_pcap=\(empty.path),tx_pcap=\(dir.appendingPathComponent("out\($0).pcap").path)" }
            let path = dir.appendingPathComponent("sluice.conf").path
            try """
                port 0 role protected address 10.0.0.1/24
                port 1 role unprotected address 10.1.0.1/24
                """.write(toFile: path, atomically: true, encoding: .utf8)
            try await expectRefusal(eal: E2E.ealArguments(lcores: "0@0,1@0,2@1", vdevs: vdevs), config: path,
                                    contains: "allows at most")
        }
    }
}

/// Runs sluice and expects it to exit non-zero without becoming ready, with
/// a message on stderr that starts a line with `sluice: error: ` and
/// contains `expected` (EAL log lines may come before it).
private func expectRefusal(eal: [String], config: String, options: [String] = [],
                           contains expected: String) async throws {
    let binary = try E2E.sluiceBinary()
    let child = try Child(binary, eal + ["--", "--config", config] + options)
    let exited = await child.waitForExit(timeout: .seconds(20))
    let status = try #require(exited, "sluice was still running after 20 s\n\(child.transcript())")
    #expect(status != 0, "sluice exited 0\n\(child.transcript())")
    #expect(!child.stdout.text.contains("sluice: ready"), "sluice became ready\n\(child.transcript())")
    let stderr = child.stderr.text
    let start = stderr.range(of: "\nsluice: error: ").map { stderr.index(after: $0.lowerBound) }
        ?? (stderr.hasPrefix("sluice: error: ") ? stderr.startIndex : nil)
    let message = try #require(start.map { stderr[$0...] },
                               "no line starting 'sluice: error: ' on stderr\n\(child.transcript())")
    #expect(message.contains(expected), "the error message lacks '\(expected)'\n\(child.transcript())")
}
