import Foundation
import Testing

/// `sluicebench --mode acl-gen` writes dpdk-test-acl rule and trace files,
/// and `--mode spd` classifies them with every SPD driver: each driver's
/// verdicts must equal the linear oracle's on every trace, and, when
/// dpdk-test-acl is installed, the oracle's must equal rte_acl's (which also
/// checks the file formats and the priority mapping end to end).
@Suite(.serialized) struct SPDBench {
    /// $SLUICEBENCH_BIN, else the release build scripts/test.sh makes, else
    /// the one `swift test` built beside this test executable.
    static func benchBinary() throws -> String {
        let fm = FileManager.default
        if let path = E2E.environment["SLUICEBENCH_BIN"], !path.isEmpty {
            guard fm.isExecutableFile(atPath: path) else { throw HarnessError("SLUICEBENCH_BIN=\(path) is not an executable file") }
            return path
        }
        var looked = [E2E.packageRoot.appendingPathComponent(".build/release/sluicebench").path]
        if let me = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            looked.append(URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("sluicebench").path)
        }
        if let found = looked.first(where: fm.isExecutableFile(atPath:)) { return found }
        throw HarnessError("sluicebench not found (looked at \(looked.joined(separator: ", "))); "
            + "build it with `swift build -c release --product sluicebench` or point SLUICEBENCH_BIN at it")
    }

    static var testACLInstalled: Bool {
        let fm = FileManager.default
        let path = E2E.environment["DPDK_TEST_ACL"] ?? "/usr/bin/dpdk-test-acl"
        return fm.isExecutableFile(atPath: path) || fm.isExecutableFile(atPath: "/usr/local/bin/dpdk-test-acl")
    }

    @Test(arguments: [false, true])
    func generatedFilesClassifyAlikeInEveryDriver(ipv6: Bool) async throws {
        let bench = try Self.benchBinary()
        let dir = try E2E.scratchDirectory("spdbench")
        defer { E2E.removeScratch(dir) }
        let rules = dir.appendingPathComponent("rules.txt").path
        let traces = dir.appendingPathComponent("traces.txt").path
        let family = ipv6 ? ["--ipv6"] : []

        let gen = try Child(bench, ["--mode", "acl-gen", "--rules", "400", "--traces", "3000", "--seed", "7",
                                    "--acl-rules", rules, "--acl-traces", traces] + family)
        let genStatus = await gen.waitForExit(timeout: .seconds(30))
        #expect(genStatus == 0, "\(gen.transcript())")
        guard genStatus == 0 else { return }
        let ruleLines = try String(contentsOfFile: rules, encoding: .utf8).split(separator: "\n").filter { $0.hasPrefix("@") }
        #expect(ruleLines.count == 400)

        let baseline = Self.testACLInstalled
        let child = try Child(bench, ["--mode", "spd", "--acl-rules", rules, "--acl-traces", traces, "--seconds", "0.05",
                                      "--update-samples", "5", "--json"]
                                     + family + (baseline ? ["--baseline", "test-acl"] : []))
        guard let (report, line) = await child.jsonReport(timeout: .seconds(60)) else { return }
        #expect(report["rules"] as? Int == 400, "\(line)")
        #expect(report["traces"] as? Int == 3000, "\(line)")
        #expect(report["mismatches"] as? Int == 0, "\(line)")
        #expect((report["lookups_per_s"] as? Double ?? 0) > 0, "\(line)")
        // Most traces are aimed at a rule: a parser that lost the rules would match none.
        #expect((report["traces_matching"] as? Int ?? 0) > 1500, "\(line)")
        let drivers = report["drivers"] as? [[String: Any]] ?? []
        #expect(drivers.count >= 3, "\(line)")
        for d in drivers {
            #expect(d["mismatches"] as? Int == 0, "\(d)")
            #expect(d["incremental_mismatches"] as? Int == 0, "\(d)")
            #expect((d["lookups_per_s"] as? Double ?? 0) > 0, "\(d)")
        }
        if baseline {
            #expect((report["baseline_lookups_per_s"] as? Double ?? 0) > 0, "\(line)")
            #expect(report["baseline_alg"] is String, "\(line)")
            #expect(report["baseline_mismatches"] as? Int == 0, "rte_acl disagrees with the linear oracle: \(line)")
        }
    }
}
