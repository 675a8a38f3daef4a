import ArgumentParser
import CShims
import Crypto
import Dataplane
import Foundation

/// The options and the output both sluicebench command lines share
/// (`SluiceBench` and `SADBenchCommand`, which `main.swift` picks by --mode).
struct SharedOptions: ParsableArguments {
    @Option(help: "EAL memory in MB.")
    var memory: Int = 1024
    @Option(help: "Comma-separated CPU ids to use (default: this process's affinity).")
    var cpus: String?
    @Flag(help: "Print one JSON object on stdout (progress and periodic stats go to stderr).")
    var json = false
    @Flag(help: """
        Run the EAL, and the testpmd or ipsec-secgw baseline, on hugepages instead of --no-huge's 4 KiB \
        pages (modes bypass, outbound, inbound). Each process takes --memory MB; reserve and mount them first, \
        e.g. `echo 1536 > /proc/sys/vm/nr_hugepages; mount -t hugetlbfs nodev /dev/hugepages`.
        """)
    var hugepages = false
    @Option(name: .customLong("ipsec-mb-arch"), help: """
        intel-ipsec-mb's code path for the gateway and the raw baseline alike: auto (the best this CPU has), \
        sse, avx, avx2 or avx512 (ipsec-secgw keeps its own choice).
        """)
    var ipsecMBArch = "auto"

    /// Pins `--ipsec-mb-arch` before anything uses an engine.
    func pinCryptoPath() throws {
        guard ipsecMBArch != "auto" else { return }
        guard let arch = IPsecMBArchitecture(name: ipsecMBArch) else {
            throw ValidationError("--ipsec-mb-arch: '\(ipsecMBArch)' is not auto, sse, avx, avx2 or avx512")
        }
        try CryptoEngines.pin(arch)
    }

    /// The EAL's memory arguments for the gateway and its baselines: 4 KiB
    /// pages, or hugepages with no files left behind (`--in-memory`).
    var ealMemoryArguments: [String] { hugepages ? ["--in-memory"] : ["--no-huge"] }

    /// A progress line: stdout, or stderr when stdout carries the JSON report.
    func say(_ s: String) {
        if json { writeStandardError(s + "\n") } else { print(s) }
    }

    /// CPUs this process may run on.
    func cpuList() -> [Int] {
        if let c = cpus { return c.split(separator: ",").compactMap { Int($0) } }
        var buf = [Int32](repeating: 0, count: 1024)
        let n = Int(sl_affinity_cpus(&buf, Int32(buf.count)))
        return n > 0 ? buf[0..<n].map(Int.init) : [0]
    }

    /// The final report: one sorted JSON object, or `key: value` lines.
    func printReport(_ report: [String: Any]) throws {
        if json {
            let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            for k in report.keys.sorted() { print("\(k): \(report[k]!)") }
        }
    }
}

/// Pins the calling thread to `cpu`. sched_setaffinity is declared only
/// under _GNU_SOURCE, which Swift's Glibc module lacks: found with dlsym.
func pinCallingThread(to cpu: Int) throws {
    typealias SetAffinity = @convention(c) (Int32, Int, UnsafeRawPointer) -> Int32
    var mask = [UInt64](repeating: 0, count: 16)  // a cpu_set_t: 1024 bits
    guard cpu >= 0, cpu < mask.count * 64 else { throw ValidationError("cpu \(cpu) out of range") }
    mask[cpu / 64] |= 1 << UInt64(cpu % 64)
    guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sched_setaffinity") else {
        throw ValidationError("sched_setaffinity not found")
    }
    let setAffinity = unsafeBitCast(symbol, to: SetAffinity.self)
    // pid 0: the calling thread.
    guard mask.withUnsafeBytes({ setAffinity(0, $0.count, $0.baseAddress!) }) == 0 else {
        throw ValidationError("cannot pin the benchmark thread to cpu \(cpu)")
    }
}
