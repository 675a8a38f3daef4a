// Running the real `sluice` binary and the scapy helper scripts as
// subprocesses, and reading what they print.
//
// The binary: $SLUICE_BIN, else the `sluice` next to this test executable
// (what `swift test` built in the same scratch path), else the newer of
// `.build/debug/sluice` and `.build/release/sluice` under the package root.
// Python: $SLUICE_PYTHON, else /usr/bin/python3 (the one with scapy).

import Foundation
import Synchronization
import Testing

/// A failure in the test harness itself (binary missing, tool failed), with
/// the text a reader needs to act on it.
struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

enum E2E {
    /// The package root, from this file's path (Tests/EndToEndTests/Support.swift).
    static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let scripts: URL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("scripts")

    static var environment: [String: String] { ProcessInfo.processInfo.environment }

    /// The gateway binary to test, or an error saying where we looked.
    static func sluiceBinary() throws -> String {
        let fm = FileManager.default
        if let path = environment["SLUICE_BIN"], !path.isEmpty {
            guard fm.isExecutableFile(atPath: path) else {
                throw HarnessError("SLUICE_BIN=\(path) is not an executable file")
            }
            return path
        }
        var looked: [String] = []
        // `swift test` builds every product into the directory its test executable runs from.
        if let me = try? fm.destinationOfSymbolicLink(atPath: "/proc/self/exe") {
            let sibling = URL(fileURLWithPath: me).deletingLastPathComponent().appendingPathComponent("sluice").path
            if fm.isExecutableFile(atPath: sibling) { return sibling }
            looked.append(sibling)
        }
        let candidates = ["debug", "release"].map { packageRoot.appendingPathComponent(".build/\($0)/sluice").path }
        looked += candidates
        let found = candidates.filter { fm.isExecutableFile(atPath: $0) }
        func modified(_ path: String) -> Date {
            ((try? fm.attributesOfItem(atPath: path))?[.modificationDate] as? Date) ?? .distantPast
        }
        if let newest = found.max(by: { modified($0) < modified($1) }) { return newest }
        throw HarnessError("the sluice binary was not found (looked at \(looked.joined(separator: ", "))); "
            + "build it with `swift build --product sluice` or point SLUICE_BIN at it")
    }

    static var python: String { environment["SLUICE_PYTHON"] ?? "/usr/bin/python3" }

    /// A fresh directory under /tmp, removed by `removeScratch` unless
    /// SLUICE_E2E_KEEP is set (then its path is printed for inspection).
    static func scratchDirectory(_ name: String) throws -> URL {
        let url = URL(fileURLWithPath: NSTemporaryDirectory())
            .appendingPathComponent("sluice-e2e-\(name)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// Whether another user (nobody) can reach files in a scratch
    /// directory: every directory above it searchable by others.
    static let scratchReachableByOthers: Bool = {
        var path = URL(fileURLWithPath: NSTemporaryDirectory()).standardizedFileURL
        while path.path != "/" {
            var info = stat()
            guard stat(path.path, &info) == 0, info.st_mode & 0o001 != 0 else { return false }
            path.deleteLastPathComponent()
        }
        return true
    }()

    static func removeScratch(_ url: URL) {
        if environment["SLUICE_E2E_KEEP"] != nil {
            print("sluice-e2e: kept \(url.path)")
        } else {
            try? FileManager.default.removeItem(at: url)
        }
    }

    /// EAL arguments shared by every run: no hugepages, no PCI, no shared
    /// files (several DPDK processes may run at once), no telemetry socket.
    static func ealArguments(lcores: String, vdevs: [String], memoryMB: Int = 256) -> [String] {
        ["--no-huge", "-m", "\(memoryMB)", "--no-pci", "--no-shconf", "--no-telemetry", "--lcores", lcores]
            + vdevs.flatMap { ["--vdev", $0] }
    }

    /// A pcap with a header and no packets.
    static func writeEmptyPcap(_ url: URL) throws {
        let header: [UInt8] = [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                               0xFF, 0xFF, 0, 0, 1, 0, 0, 0]
        try Data(header).write(to: url)
    }
}

// MARK: - Subprocesses

/// Collects everything a pipe delivers, on a thread of its own (not the
/// cooperative pool, which blocking reads would starve).
final class OutputSink: Sendable {
    private let handle: FileHandle
    private let state = Mutex<(data: Data, eof: Bool)>((Data(), false))

    init(_ handle: FileHandle) {
        self.handle = handle
        let thread = Thread { [self] in
            while true {
                let chunk = self.handle.availableData
                if chunk.isEmpty { break }
                state.withLock { $0.data.append(chunk) }
            }
            state.withLock { $0.eof = true }
        }
        thread.start()
    }

    var text: String { String(decoding: state.withLock { $0.data }, as: UTF8.self) }
    var atEOF: Bool { state.withLock { $0.eof } }
    var lines: [String] { text.split(separator: "\n").map(String.init) }

    func waitForEOF(timeout: Duration) async {
        let deadline = ContinuousClock.now + timeout
        while !atEOF && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
    }
}

/// A running child process with its stdout and stderr collected.
final class Child: Sendable {
    let process: Process
    let stdout: OutputSink
    let stderr: OutputSink
    let commandLine: String

    init(_ executable: String, _ arguments: [String], directory: URL? = nil, environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        }
        if let directory { process.currentDirectoryURL = directory }
        let out = Pipe(), err = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = FileHandle.nullDevice
        commandLine = ([executable] + arguments).map(Child.quoted).joined(separator: " ")
        do {
            try Child.launchWithSignalsUnblocked(process)
        } catch {
            throw HarnessError("cannot start \(commandLine): \(error)")
        }
        self.process = process
        stdout = OutputSink(out.fileHandleForReading)
        stderr = OutputSink(err.fileHandleForReading)
    }

    /// `Process.run` spawns with the calling thread's signal mask, and the
    /// threads tests run on block SIGINT/SIGTERM: a child started from one
    /// would never see our SIGTERM. Spawn from a fresh thread with an empty
    /// mask, as a shell would.
    static func launchWithSignalsUnblocked(_ process: Process) throws {
        let result = Mutex<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
        let box = UncheckedBox(process)
        let thread = Thread {
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            do { try box.value.run() } catch { result.withLock { $0 = error } }
            done.signal()
        }
        thread.start()
        done.wait()
        if let error = result.withLock({ $0 }) { throw error }
    }

    static func quoted(_ word: String) -> String {
        let plain = !word.isEmpty && word.allSatisfy { $0.isLetter || $0.isNumber || "-_=./,:@".contains($0) }
        return plain ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    var isRunning: Bool { process.isRunning }

    /// Waits for the exit; on timeout SIGKILLs and returns nil.
    func waitForExit(timeout: Duration) async -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(10)) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            await stdout.waitForEOF(timeout: .seconds(2))
            await stderr.waitForEOF(timeout: .seconds(2))
            return nil
        }
        process.waitUntilExit()
        await stdout.waitForEOF(timeout: .seconds(5))
        await stderr.waitForEOF(timeout: .seconds(5))
        // A signal death reads as 128 + signal, like a shell.
        return process.terminationReason == .uncaughtSignal ? 128 + process.terminationStatus : process.terminationStatus
    }

    /// Waits for a command that prints one JSON report (sluicebench
    /// `--json`) and returns that report and its line; records an issue and
    /// returns nil when it failed or printed none.
    func jsonReport(timeout: Duration, sourceLocation: SourceLocation = #_sourceLocation) async -> (object: [String: Any], line: String)? {
        let status = await waitForExit(timeout: timeout)
        #expect(status == 0, "\(transcript())", sourceLocation: sourceLocation)
        guard let line = stdout.lines.last(where: { $0.hasPrefix("{") }),
              let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else {
            Issue.record("no JSON report\n\(transcript())", sourceLocation: sourceLocation)
            return nil
        }
        return (object, line)
    }

    /// The last lines of both streams, for failure messages.
    func transcript(lines: Int = 25) -> String {
        "$ \(commandLine)\n--- stdout ---\n" + stdout.lines.suffix(lines).joined(separator: "\n")
            + "\n--- stderr ---\n" + stderr.lines.suffix(lines).joined(separator: "\n")
    }
}

/// Hands a non-Sendable reference to the spawning thread, which is joined
/// (through a semaphore) before the caller touches it again.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}

// MARK: - The scapy scripts

struct PortFiles: Decodable, Sendable {
    var rx: [String]
    var tx: [String]
}

/// What make_traffic.py wrote and expects.
struct TrafficSummary: Decodable, Sendable {
    var scenario: String
    var config: String
    var ports: [String: PortFiles]
    var inputs: Int
    var inputsPerPort: [String: Int]
    var inputsPerQueue: [String: Int]
    var forwarded: Int
    var forwardedPerPort: [String: Int]
    var drops: [String: Int]

    /// `--vdev` values: one net_pcap port per entry, in port order, its
    /// queues in the order of the files.
    func vdevs(in dir: URL) -> [String] {
        ports.keys.compactMap(Int.init).sorted().map { port in
            let files = ports[String(port)]!
            return (["net_pcap\(port)"] + files.rx.map { "rx_pcap=" + dir.appendingPathComponent($0).path }
                + files.tx.map { "tx_pcap=" + dir.appendingPathComponent($0).path }).joined(separator: ",")
        }
    }
}

/// What check_output.py found.
struct CheckSummary: Decodable, Sendable {
    var ok: Bool
    var matched: Int
    var expectedForwarded: Int
    var missing: Int
    var duplicates: Int
    var unexpected: Int
    var shouldHaveDropped: Int
    var wrongPort: Int
    var wrongDstMac: Int
    var wrongSrcMac: Int
    var badTtl: Int
    var badIpv4Checksum: Int
    var payloadChanged: Int
    var otherBytesChanged: Int
    var missingFiles: Int
    var outputsPerPort: [String: Int]
    var outputsPerFile: [String: Int]
    var problems: [String]
}

enum Scripts {
    /// Runs scripts/NAME with the scapy Python and decodes the JSON line it prints.
    static func run<T: Decodable>(_ name: String, _ arguments: [String], as: T.Type) async throws -> T {
        let python = E2E.python
        guard FileManager.default.isExecutableFile(atPath: python) else {
            throw HarnessError("\(python) not found: the end-to-end tests need Python 3 with scapy (set SLUICE_PYTHON)")
        }
        let child = try Child(python, ["-B", E2E.scripts.appendingPathComponent(name).path] + arguments)
        guard let status = await child.waitForExit(timeout: .seconds(60)) else {
            throw HarnessError("\(name) did not finish within 60 s\n\(child.transcript())")
        }
        guard status == 0 else { throw HarnessError("\(name) failed (exit status \(status))\n\(child.transcript())") }
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        guard let line = child.stdout.lines.last(where: { $0.hasPrefix("{") }) else {
            throw HarnessError("\(name) printed no JSON summary\n\(child.transcript())")
        }
        do {
            return try decoder.decode(T.self, from: Data(line.utf8))
        } catch {
            throw HarnessError("\(name) printed JSON this test cannot read (\(error)):\n\(line)")
        }
    }

    static func makeTraffic(scenario: String, dir: URL, count: Int? = nil, seed: Int = 1) async throws -> TrafficSummary {
        var args = ["--scenario", scenario, "--dir", dir.path, "--seed", "\(seed)"]
        if let count { args += ["--count", "\(count)"] }
        return try await run("make_traffic.py", args, as: TrafficSummary.self)
    }

    static func checkOutput(dir: URL, portMACs: [Int: String]) async throws -> CheckSummary {
        let macs = portMACs.sorted { $0.key < $1.key }.flatMap { ["--port-mac", "\($0.key)=\($0.value)"] }
        return try await run("check_output.py", ["--dir", dir.path] + macs, as: CheckSummary.self)
    }
}

// MARK: - sluice's output

/// `key=value` fields of one line; words without `=` are skipped.
func fields(_ line: Substring) -> [String: String] {
    var result: [String: String] = [:]
    for word in line.split(separator: " ") {
        guard let eq = word.firstIndex(of: "=") else { continue }
        result[String(word[..<eq])] = String(word[word.index(after: eq)...])
    }
    return result
}

/// The counters `sluice` prints: periodic `stats:` lines and the `final:` block.
struct SluiceReport {
    var ready = false
    var readyWorkers: Int?
    /// The newest `stats:` line's fields.
    var lastStats: [String: UInt64]?
    var lastStatsLine: String?
    var ports: [Int: [String: String]] = [:]
    var cores: [Int: [String: String]] = [:]
    var total: [String: String]?
    /// Port MACs from `final: port … mac=` or `sluice: port N … mac=` lines.
    var portMACs: [Int: String] = [:]

    /// The keys of a stats line that are not drop reasons (`CounterReport`).
    static let counterKeys: Set<String> = ["rx", "tx", "drop", "fragments", "reassembled", "fragmented", "fragments_out",
                                           "punted", "from_stack", "to_agent", "from_agent", "icmp_errors", "icmp_limited",
                                           "events_lost"]

    init(_ text: String) {
        for line in text.split(separator: "\n") {
            let words = line.split(separator: " ")
            if line.hasPrefix("sluice: ready") {
                ready = true
                if let open = line.firstIndex(of: "(") {
                    readyWorkers = Int(line[line.index(after: open)...].prefix(while: \.isNumber))
                }
            } else if line.hasPrefix("stats: ") {
                lastStats = fields(line).compactMapValues { UInt64($0) }
                lastStatsLine = String(line)
            } else if words.count >= 3, words[0] == "final:", words[1] == "port", let id = Int(words[2]) {
                ports[id] = fields(line)
                if let mac = ports[id]?["mac"] { portMACs[id] = mac.lowercased() }
            } else if words.count >= 3, words[0] == "final:", words[1] == "core", let id = Int(words[2]) {
                cores[id] = fields(line)
            } else if words.count >= 2, words[0] == "final:", words[1] == "total" {
                total = fields(line)
            } else if words.count >= 3, words[0] == "sluice:", words[1] == "port", let id = Int(words[2]),
                      let mac = fields(line)["mac"], portMACs[id] == nil {
                portMACs[id] = mac.lowercased()
            }
        }
    }

    /// Nonzero drop reasons of the total line.
    var totalReasons: [String: Int] {
        (total ?? [:]).filter { !Self.counterKeys.contains($0.key) }.compactMapValues { Int($0) }
    }
}

/// One gateway run on virtual ports.
final class SluiceRun: Sendable {
    let child: Child
    let binary: String

    /// Starts `sluice` and waits for `sluice: ready`.
    init(eal: [String], config: String, statsInterval: Double? = 0.1, control: String = "none",
         options: [String] = []) async throws {
        binary = try E2E.sluiceBinary()
        var app = ["--config", config, "--control", control] + options
        if let statsInterval { app += ["--stats-interval", "\(statsInterval)"] }
        child = try Child(binary, eal + ["--"] + app)
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            if child.stdout.text.contains("sluice: ready") { return }
            if !child.isRunning {
                let status = await child.waitForExit(timeout: .seconds(5))
                throw HarnessError("sluice exited (status \(status.map(String.init) ?? "?")) before printing "
                    + "'sluice: ready' — is \(binary) the gateway, and does it start?\n\(child.transcript())")
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        _ = await stop()
        throw HarnessError("sluice printed no 'sluice: ready' within 30 s\n\(child.transcript())")
    }

    var report: SluiceReport { SluiceReport(child.stdout.text) }

    /// Waits until the newest stats line satisfies `condition`; false on timeout or exit.
    func waitForStats(timeout: Duration, _ condition: ([String: UInt64]) -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline && child.isRunning {
            if let stats = report.lastStats, condition(stats) { return true }
            try? await Task.sleep(for: .milliseconds(20))
        }
        return false
    }

    /// Waits until all `inputs` packets were received and each was sent or
    /// dropped, then stops the gateway; records an issue unless both the wait
    /// and a clean exit happened. The final counters are in `report`.
    func finish(inputs: Int, timeout: Duration = .seconds(20),
                sourceLocation: Testing.SourceLocation = #_sourceLocation) async {
        let n = UInt64(inputs)
        let settled = await waitForStats(timeout: timeout) { s in s["rx"] == n && (s["tx"] ?? 0) + (s["drop"] ?? 0) == n }
        let status = await stop()
        #expect(settled, "stats never showed rx=\(n) with tx+drop=\(n)\n\(child.transcript())", sourceLocation: sourceLocation)
        #expect(status == 0, "sluice did not exit 0 after SIGTERM\n\(child.transcript())", sourceLocation: sourceLocation)
    }

    /// SIGTERM, then the exit status (nil when it had to be killed).
    func stop(timeout: Duration = .seconds(15)) async -> Int32? {
        if child.isRunning { child.process.terminate() }
        return await child.waitForExit(timeout: timeout)
    }
}

// MARK: - Small helpers

extension Dictionary where Key == String, Value == String {
    func int(_ key: String) -> Int? { self[key].flatMap { Int($0) } }
}

extension String {
    /// 1-based column of the last occurrence of `token` in this line.
    func column(of token: String) -> Int {
        guard let range = range(of: token, options: .backwards) else { return 0 }
        return distance(from: startIndex, to: range.lowerBound) + 1
    }
}
