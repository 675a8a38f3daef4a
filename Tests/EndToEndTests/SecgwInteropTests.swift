// ESP interop with a second independent implementation: DPDK's own IPsec
// gateway, ipsec-secgw (22.11 example: librte_ipsec, intel-ipsec-mb through
// the crypto_aesni_gcm PMD), built from Debian's dpdk-doc sources by
// scripts/build-secgw.sh (scripts/test.sh builds it). The real `sluice` and
// the real ipsec-secgw, each on net_pcap ports, one AES-256-GCM SA each way
// (scripts/secgw_interop.py):
//   A: sluice seals plaintext, ipsec-secgw must open it to the same packets;
//   B: ipsec-secgw seals plaintext, sluice must open it to the same packets;
// for IPv4 tunnel mode, the same with ESN (12-byte AAD on both sides; one
// side without ESN fails every packet both ways), and transport mode.

import Foundation
import Testing

extension EndToEnd {
    @Suite(.serialized) struct SecgwInterop {
        struct Made: Decodable { var inputs: Int }
        struct SecgwRun: Decodable {
            var sent: Int
            var status: Int?
            var command: String
            var tail: String
        }
        struct Direction: Decodable {
            var expected: Int
            var got: Int
            var matched: Int
            var problems: [String]
        }
        struct Checked: Decodable {
            var a: Direction
            var b: Direction
        }

        @Test(arguments: ["tunnel", "esn", "transport"])
        func espBothWaysWithDPDKsIPsecSecgw(case name: String) async throws {
            let secgw = E2E.packageRoot.appendingPathComponent(".build/secgw/ipsec-secgw").path
            guard FileManager.default.isExecutableFile(atPath: secgw) else {
                Issue.record("\(secgw) is missing: run scripts/build-secgw.sh (scripts/test.sh does)")
                return
            }
            let dir = try E2E.scratchDirectory("secgw-interop-\(name)")
            defer { E2E.removeScratch(dir) }
            let path = { (name: String) in dir.appendingPathComponent(name).path }
            let made = try await Scripts.run("secgw_interop.py", ["make", "--dir", dir.path, "--case", name], as: Made.self)
            func runSecgw(rx0: String, rx1: String, tx0: String, tx1: String) async throws -> SecgwRun {
                try await Scripts.run("secgw_interop.py",
                                      ["secgw", "--dir", dir.path, "--secgw", secgw, "--rx0", rx0, "--rx1", rx1,
                                       "--tx0", tx0, "--tx1", tx1, "--expect", "\(made.inputs)"], as: SecgwRun.self)
            }

            // B, first half: ipsec-secgw seals B's plaintext (its port 0 → ESP on port 1).
            let sealed = try await runSecgw(rx0: "plain_b.pcap", rx1: "empty.pcap", tx0: "secgw_unused_0.pcap",
                                            tx1: "secgw_esp_b.pcap")
            #expect(sealed.sent == made.inputs, "ipsec-secgw sealed \(sealed.sent) of \(made.inputs)\n\(sealed.command)\n\(sealed.tail)")

            // sluice: A's plaintext on port 0 (sealed out of port 1), B's ESP on port 1 (opened out of port 0).
            let run = try await SluiceRun(
                eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: [
                    "net_pcap0,rx_pcap=\(path("plain_a.pcap")),tx_pcap=\(path("sluice_out_b.pcap"))",
                    "net_pcap1,rx_pcap=\(path("secgw_esp_b.pcap")),tx_pcap=\(path("sluice_esp_a.pcap"))",
                ]),
                config: path("sluice.conf"))
            let n = UInt64(2 * made.inputs)
            let settled = await run.waitForStats(timeout: .seconds(20)) { s in
                s["rx"] == n && (s["tx"] ?? 0) + (s["drop"] ?? 0) == n
            }
            let status = await run.stop()
            #expect(settled && status == 0, "sluice did not settle or exit cleanly\n\(run.child.transcript(lines: 40))")

            // A, second half: ipsec-secgw opens what sluice sealed (ESP on its port 1 → port 0).
            let opened = try await runSecgw(rx0: "empty.pcap", rx1: "sluice_esp_a.pcap", tx0: "secgw_out_a.pcap",
                                            tx1: "secgw_unused_1.pcap")
            #expect(opened.sent == made.inputs, "ipsec-secgw delivered \(opened.sent) of \(made.inputs)\n\(opened.command)\n\(opened.tail)")

            let check = try await Scripts.run("secgw_interop.py", ["check", "--dir", dir.path], as: Checked.self)
            #expect(check.a.matched == made.inputs && check.a.got == made.inputs && check.a.problems.isEmpty, """
                sluice → ipsec-secgw: \(check.a.matched) of \(check.a.expected) delivered intact (\(check.a.got) out)
                \(check.a.problems.joined(separator: "\n"))
                """)
            #expect(check.b.matched == made.inputs && check.b.got == made.inputs && check.b.problems.isEmpty, """
                ipsec-secgw → sluice: \(check.b.matched) of \(check.b.expected) delivered intact (\(check.b.got) out)
                \(check.b.problems.joined(separator: "\n"))
                \(run.child.transcript(lines: 20))
                """)
        }
    }
}
