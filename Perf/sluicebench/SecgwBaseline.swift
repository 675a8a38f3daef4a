// The gateway sluicebench's ESP modes compare with: DPDK's own IPsec gateway
// example, ipsec-secgw (22.11, built from Debian's dpdk-doc sources by
// scripts/build-secgw.sh), run as a subprocess in the same invocation on the
// same virtual devices, the same CPU, the same SA and the same traffic.
//
// How the figure is taken:
// * Ports: the vdev strings sluicebench gave its own EAL (pcap replay into
//   the side the traffic enters, net_null sink on the other), in the same
//   order, so port 0 is protected and port 1 unprotected (`-u 0x2`).
// * One lcore, pinned to the worker's CPU, is both ipsec-secgw's main lcore
//   and its only forwarding core (`--lcores 0@CPU`, `--config
//   "(0,0,0),(1,0,0)"`): the example wants a TX queue per lcore on every port,
//   which net_pcap only has once per `rx_pcap` argument.
// * Crypto: the SA's `type cpu-crypto` on the `crypto_aesni_gcm` PMD
//   (intel-ipsec-mb, synchronous, no crypto queue), with the librte_ipsec
//   path (`-l`); the fastest software path the example has (checked against
//   lookaside-none and the aesni_mb PMD). No replay window (`-w` unset), as
//   sluicebench's own inbound SA.
// * Rate: the example prints its counters every second (`-t 1`, an EAL
//   alarm); the rate is the growth of "Total packets sent" (packets the core
//   transmitted) between the sample after the warm-up and the one `seconds`
//   later, divided by the number of one-second periods between them. Output
//   is line-buffered (`stdbuf -oL`) so samples arrive as printed.

import Foundation

struct SecgwBaseline {
    struct Result {
        var mpps: Double
        var command: String
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func locate() throws -> String {
        let env = ProcessInfo.processInfo.environment
        if let path = env["SLUICE_SECGW"], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw Failure(description: "SLUICE_SECGW=\(path) is not an executable file")
            }
            return path
        }
        let candidates = [".build/secgw/ipsec-secgw",
                          URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
                              .appendingPathComponent("../secgw/ipsec-secgw").standardized.path]
        for c in candidates where FileManager.default.isExecutableFile(atPath: c) { return c }
        throw Failure(description: "ipsec-secgw not found (looked at \(candidates.joined(separator: ", ")); set SLUICE_SECGW or "
                      + "build it with scripts/build-secgw.sh")
    }

    /// The ipsec-secgw configuration equivalent to sluicebench's: one SA
    /// and one policy in the measured direction (the example refuses an
    /// unprotected port without an inbound SA, so outbound gets an unused one).
    static func configuration(inbound: Bool, aead: String, keyHex: String) throws -> String {
        guard aead == "aes-gcm-128" || aead == "aes-gcm-256" else {
            throw Failure(description: "the secgw baseline runs AES-GCM SAs (--aead aes-gcm-128 or aes-gcm-256)")
        }
        let algo = aead == "aes-gcm-128" ? "aes-128-gcm" : "aes-256-gcm"
        var bytes: [String] = []
        var i = keyHex.startIndex
        while i < keyHex.endIndex {
            let j = keyHex.index(i, offsetBy: 2)
            bytes.append(String(keyHex[i..<j]))
            i = j
        }
        let key = bytes.joined(separator: ":")
        let inSA = "sa in 8193 aead_algo \(algo) aead_key \(key) mode ipv4-tunnel src 203.0.113.2 dst 192.0.2.1 type cpu-crypto"
        if inbound {
            return """
            sp ipv4 in esp protect 8193 pri 1 dst 10.0.0.0/16 sport 0:65535 dport 0:65535
            \(inSA)
            rt ipv4 dst 10.0.0.0/16 port 0
            neigh port 0 02:00:00:00:00:0a

            """
        }
        return """
        sp ipv4 out esp protect 4097 pri 1 src 10.0.0.0/16 dst 198.51.100.0/24 sport 0:65535 dport 0:65535
        sa out 4097 aead_algo \(algo) aead_key \(key) mode ipv4-tunnel src 192.0.2.1 dst 203.0.113.2 type cpu-crypto
        rt ipv4 dst 203.0.113.2/32 port 1
        neigh port 1 02:00:00:00:00:fe
        sp ipv4 in esp protect 8193 pri 1 dst 10.0.0.0/16 sport 0:65535 dport 0:65535
        \(inSA)

        """
    }

    /// Runs ipsec-secgw on `vdevs` (port 0 protected, port 1 unprotected)
    /// pinned to `cpu` for `warmup` + `seconds` and returns its rate.
    static func run(vdevs: [String], inbound: Bool, aead: String, keyHex: String, cpu: Int, seconds: Double,
                    warmup: Double, scratch: String, memoryArguments: [String] = ["--no-huge"]) throws -> Result {
        let executable = try locate()
        let config = scratch + "/secgw.cfg"
        try configuration(inbound: inbound, aead: aead, keyHex: keyHex).write(toFile: config, atomically: true, encoding: .utf8)
        let periods = max(1, Int(seconds.rounded()))
        let skip = max(1, Int(warmup.rounded(.up)))
        var arguments = ["-oL", executable] + memoryArguments + ["-m", "1024", "--no-pci", "--no-telemetry",
                         "--file-prefix", "sluicebench-secgw-\(getpid())", "--lcores", "0@\(cpu)"]
        for v in vdevs { arguments += ["--vdev", v] }
        arguments += ["--vdev", "crypto_aesni_gcm0", "--", "-p", "0x3", "-P", "-u", "0x2",
                      "--config", "(0,0,0),(1,0,0)", "-f", config, "-l", "-t", "1"]
        // Samples 0…skip-1 cover start-up and warm-up; then `periods` more.
        let limit = Double(skip + periods) + 30
        let (process, sinks, command) = try TestpmdBaseline.spawn("/usr/bin/stdbuf", arguments)
        defer { TestpmdBaseline.stopIfRunning(process) }

        let deadline = ContinuousClock.now + .seconds(limit)
        var samples: [UInt64] = []
        while process.isRunning && ContinuousClock.now < deadline {
            samples = totals(in: sinks[0].text())
            if samples.count > skip + periods { break }
            Thread.sleep(forTimeInterval: 0.05)
        }
        TestpmdBaseline.stopIfRunning(process)
        sinks.forEach { $0.waitForEOF(timeout: 5) }
        samples = totals(in: sinks[0].text())
        guard samples.count > skip + periods else {
            throw Failure(description: "ipsec-secgw printed \(samples.count) statistics samples, expected \(skip + periods + 1): "
                          + command + "\n--- stderr tail ---\n" + sinks[1].tail() + "\n--- stdout tail ---\n" + sinks[0].tail())
        }
        let sent = samples[skip + periods] &- samples[skip]
        guard sent > 0 else { throw Failure(description: "ipsec-secgw sent nothing: " + command + "\n" + sinks[0].tail()) }
        return Result(mpps: Double(sent) / Double(periods) / 1e6, command: command)
    }

    /// Every "Total packets sent: N" the statistics screen printed, in order.
    static func totals(in text: String) -> [UInt64] {
        text.split(separator: "\n").compactMap { line in
            guard let r = line.range(of: "Total packets sent:") else { return nil }
            return UInt64(line[r.upperBound...].trimmingCharacters(in: .whitespaces))
        }
    }
}
