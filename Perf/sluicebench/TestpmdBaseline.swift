// The reference sluicebench divides by: dpdk-testpmd io forwarding between
// net_ring loopback ports, run as a subprocess in the same invocation.
//
// How the figure is taken (each choice was checked by experiment on DPDK
// 22.11 here, see the comments at each step):
// * Ports: `--vdev net_ring0 --vdev net_ring1`. A net_ring port is a
//   loopback with one queue pair: what it transmits comes back on its RX.
//   io forwarding pairs them, P0 RX → P1 TX and P1 RX → P0 TX.
// * Seeding: interactive `start tx_first` sends one burst per port, so
//   `burst` packets circulate per port (2 × burst in all). More seed bursts
//   (`start tx_first N`) do not change the rate.
// * Mbufs: io forwarding never allocates after seeding, so the pool size does
//   not matter for the rate; it matters for memory. testpmd's default pool
//   (155456 mbufs, ~340 MB) does not fit `--no-huge -m 256`, hence
//   `--total-num-mbufs=8192` (testpmd requires more than 1024).
// * Measurement: `show port stats all` before and after the interval; each
//   reports "Rx-pps (since last show)" computed by testpmd on its own clock
//   over exactly that interval. Start-up and warm-up fall before the first
//   show. The rate is the sum over ports of RX packets per second, i.e.
//   every packet the forwarding cores forwarded.
// * testpmd's stdout is a pipe, hence fully buffered by stdio, while the
//   prompt and the echo of our commands are written straight to the fd: they
//   can land in the middle of a buffered line. The echo lines end in "\r\n"
//   and are cut out before parsing.

import Foundation
import Synchronization

struct TestpmdBaseline {
    struct Result {
        /// Packets forwarded per second, in millions, summed over all ports
        /// (each forwarded packet counted once, at its RX).
        var mpps: Double
        /// The command line run, and the commands fed on its stdin.
        var command: String
    }

    enum Failure: Error, CustomStringConvertible {
        case notInstalled(searched: [String])
        case badArgument(String)
        case launchFailed(command: String, reason: String)
        case failed(command: String, status: Int32, stderrTail: String)
        case noPrompt(command: String, seconds: Double, stderrTail: String)
        case unparsable(command: String, reason: String, stdoutTail: String)

        var description: String {
            switch self {
            case .notInstalled(let searched):
                return "dpdk-testpmd not found (looked at $DPDK_TESTPMD, $PATH and \(searched.joined(separator: ", "))); "
                    + "install it with `apt-get install dpdk-dev` or set DPDK_TESTPMD to its path"
            case .badArgument(let what):
                return "testpmd baseline: \(what)"
            case .launchFailed(let command, let reason):
                return "could not start testpmd (\(reason)): \(command)"
            case .failed(let command, let status, let tail):
                return "testpmd failed (exit status \(status)): \(command)\n--- stderr tail ---\n\(tail)"
            case .noPrompt(let command, let seconds, let tail):
                return "testpmd showed no prompt within \(seconds) s: \(command)\n--- stderr tail ---\n\(tail)"
            case .unparsable(let command, let reason, let tail):
                return "could not read testpmd's port statistics (\(reason)): \(command)\n--- stdout tail ---\n\(tail)"
            }
        }
    }

    /// Runs io forwarding for `seconds` (after a short warm-up) and returns
    /// the forwarding rate. `cpus` are the CPUs the lcores are pinned to,
    /// lcore i on `cpus[i % cpus.count]`; lcore 0 is testpmd's main lcore,
    /// lcores 1…forwardingCores forward. Two net_ring ports give two streams,
    /// so beyond two forwarding cores more port pairs are added.
    ///
    /// `vdevs` replaces the net_ring loopback pair with other virtual devices
    /// (e.g. a pcap replay port and a null sink): then traffic comes from the
    /// devices, forwarding starts with plain `start`, and each port gets one
    /// queue pair per forwarding core.
    ///
    /// `memoryArguments` are the EAL's (default 4 KiB pages, `--no-huge`).
    /// `forwardMode` `mac` instead of `io` makes testpmd also write each
    /// packet (its Ethernet source and destination addresses), the least any
    /// forwarder that routes must do to a packet. `testpmdArguments` go after
    /// testpmd's own (e.g. `--mp-alloc=xbuf`).
    static func run(seconds: Double, frameSize: Int, burst: Int, forwardingCores: Int, cpus: [Int],
                    filePrefix: String, vdevs: [String]? = nil, memoryMB: Int = 256,
                    forwardMode: String = "io", memoryArguments: [String] = ["--no-huge"],
                    testpmdArguments: [String] = []) throws -> Result {
        guard seconds > 0, seconds.isFinite else { throw Failure.badArgument("seconds must be positive, got \(seconds)") }
        // testpmd ignores --txpkts below 42 (Ethernet + IPv4 + UDP) and uses
        // a single segment, so the frame must fit the 2048-byte data room.
        guard (42...2048).contains(frameSize) else {
            throw Failure.badArgument("frame size must be 42…2048 bytes, got \(frameSize)")
        }
        guard (1...512).contains(burst) else { throw Failure.badArgument("burst must be 1…512, got \(burst)") }
        guard forwardingCores >= 1 else { throw Failure.badArgument("need at least one forwarding core") }
        guard !cpus.isEmpty, cpus.allSatisfy({ $0 >= 0 }) else {
            throw Failure.badArgument("need at least one CPU to pin lcores to")
        }
        guard !filePrefix.isEmpty, !filePrefix.contains("/") else {
            throw Failure.badArgument("file prefix must be a non-empty name, got '\(filePrefix)'")
        }

        let executable = try locateTestpmd()
        let ports = vdevs?.count ?? max(2, (forwardingCores + 1) / 2 * 2)
        let lcores = (0...forwardingCores).map { "\($0)@\(cpus[$0 % cpus.count])" }.joined(separator: ",")
        var arguments = memoryArguments + ["-m", "\(memoryMB)", "--no-pci", "--no-telemetry", "--file-prefix", filePrefix,
                         "--lcores", lcores]
        for v in vdevs ?? (0..<ports).map({ "net_ring\($0)" }) { arguments += ["--vdev", v] }
        arguments += ["--", "-i", "--forward-mode=\(forwardMode)", "--nb-cores=\(forwardingCores)", "--burst=\(burst)",
                      "--txpkts=\(frameSize)", "--total-num-mbufs=\(vdevs == nil ? 8192 : 16384)"]
        if vdevs != nil && forwardingCores > 1 { arguments += ["--rxq=\(forwardingCores)", "--txq=\(forwardingCores)"] }
        arguments += testpmdArguments
        let startCommand = vdevs == nil ? "start tx_first" : "start"

        let warmUp = min(1.0, max(0.2, seconds / 5))
        let commandLine = ([executable] + arguments).map(shellQuoted).joined(separator: " ")
        let command = commandLine + "   # stdin: \(startCommand); (\(warmUp) s) show port stats all; "
            + "(\(seconds) s) show port stats all; stop; quit"

        // A write to a pipe whose reader died must come back as EPIPE, not kill us.
        signal(SIGPIPE, SIG_IGN)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        let out = OutputSink(stdout.fileHandleForReading)
        let err = OutputSink(stderr.fileHandleForReading)
        do {
            try launchWithSignalsUnblocked(process)
        } catch {
            throw Failure.launchFailed(command: command, reason: "\(error)")
        }
        out.start()
        err.start()
        defer { stopIfRunning(process) }

        func failure() -> Failure {
            stopIfRunning(process)
            out.waitForEOF(timeout: 5)
            err.waitForEOF(timeout: 5)
            if !process.isRunning && process.terminationStatus != 0 {
                return .failed(command: command, status: process.terminationStatus, stderrTail: err.tail())
            }
            return .failed(command: command, status: process.isRunning ? -1 : process.terminationStatus,
                           stderrTail: err.tail() + "\n--- stdout tail ---\n" + out.tail())
        }
        func send(_ line: String) throws {
            guard process.isRunning else { throw failure() }
            do {
                try stdin.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
            } catch {
                throw failure()
            }
        }

        // The prompt appears once EAL, the pool and the ports are up; it is
        // written unbuffered, so it is visible at once.
        let promptTimeout = 60.0
        guard out.wait(for: "testpmd> ", timeout: promptTimeout, while: { process.isRunning }) else {
            if !process.isRunning { throw failure() }
            stopIfRunning(process)
            err.waitForEOF(timeout: 5)
            throw Failure.noPrompt(command: command, seconds: promptTimeout, stderrTail: err.tail())
        }

        try send(startCommand)
        Thread.sleep(forTimeInterval: warmUp)
        try send("show port stats all")
        let start = ContinuousClock.now
        Thread.sleep(forTimeInterval: seconds)
        try send("show port stats all")
        let elapsed = ContinuousClock.now - start
        try send("stop")
        try send("quit")
        try? stdin.fileHandleForWriting.close()

        // `stop` prints the forward statistics and `quit` closes the ports;
        // both take well under a second.
        let deadline = ContinuousClock.now + .seconds(30)
        while process.isRunning && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning { throw failure() }
        out.waitForEOF(timeout: 5)
        err.waitForEOF(timeout: 5)
        guard process.terminationReason == .exit, process.terminationStatus == 0 else { throw failure() }

        let interval = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        let mpps = try parseRate(out.text(), ports: ports, wallSeconds: interval, command: command, tail: out.tail())
        return Result(mpps: mpps, command: command)
    }

    // MARK: - Parsing

    /// One `NIC statistics for port N` block.
    struct PortSnapshot: Equatable {
        var port: Int
        var rxPackets: UInt64
        var rxPPS: UInt64?
    }

    /// Removes what the interactive prompt wrote unbuffered: "testpmd> "
    /// followed by the echo of a command, which ends in "\r\n" (printf
    /// output ends in "\n" alone), plus any bare prompt left.
    static func removingPrompts(_ text: String) -> String {
        var result = ""
        result.reserveCapacity(text.utf8.count)
        var rest = Substring(text)
        while let r = rest.range(of: "testpmd> ") {
            result += rest[..<r.lowerBound]
            rest = rest[r.upperBound...]
            if let crlf = rest.range(of: "\r\n"), !rest[..<crlf.lowerBound].contains("\n") {
                rest = rest[crlf.upperBound...]
            }
        }
        result += rest
        return result
    }

    /// The port-statistics blocks in the order printed.
    static func snapshots(in text: String) -> [PortSnapshot] {
        var blocks: [PortSnapshot] = []
        for line in removingPrompts(text).split(separator: "\n", omittingEmptySubsequences: true) {
            let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            if line.contains("NIC statistics for port"), let i = fields.firstIndex(of: "port"),
               fields.index(after: i) < fields.endIndex, let port = Int(fields[fields.index(after: i)]) {
                blocks.append(PortSnapshot(port: port, rxPackets: 0, rxPPS: nil))
            } else if fields.first == "RX-packets:", fields.contains("RX-missed:"), fields.count >= 2,
                      let n = UInt64(fields[1]), !blocks.isEmpty {
                blocks[blocks.count - 1].rxPackets = n
            } else if fields.first == "Rx-pps:", fields.count >= 2, let n = UInt64(fields[1]), !blocks.isEmpty {
                blocks[blocks.count - 1].rxPPS = n
            }
        }
        return blocks
    }

    /// The rate over the interval between the last two snapshots of every
    /// port: testpmd's own Rx-pps when present, otherwise the RX-packet
    /// difference over our wall-clock interval.
    static func parseRate(_ text: String, ports: Int, wallSeconds: Double, command: String, tail: String) throws -> Double {
        let blocks = snapshots(in: text)
        var total = 0.0
        var received = false
        for port in 0..<ports {
            let mine = blocks.filter { $0.port == port }
            guard mine.count >= 2 else {
                throw Failure.unparsable(command: command, reason: "port \(port) has \(mine.count) statistics blocks, expected 2",
                                         stdoutTail: tail)
            }
            let before = mine[mine.count - 2], after = mine[mine.count - 1]
            // A sink port (net_null no-rx) receives nothing; some port must.
            guard after.rxPackets > before.rxPackets else { continue }
            received = true
            if let pps = after.rxPPS, pps > 0 {
                total += Double(pps)
            } else {
                total += Double(after.rxPackets - before.rxPackets) / wallSeconds
            }
        }
        guard received else {
            throw Failure.unparsable(command: command, reason: "no port received anything during the interval", stdoutTail: tail)
        }
        return total / 1e6
    }

    // MARK: - Process plumbing

    static func locateTestpmd() throws -> String {
        let fm = FileManager.default
        let env = ProcessInfo.processInfo.environment
        if let path = env["DPDK_TESTPMD"], !path.isEmpty {
            guard fm.isExecutableFile(atPath: path) else {
                throw Failure.badArgument("DPDK_TESTPMD=\(path) is not an executable file")
            }
            return path
        }
        let fixed = ["/usr/bin/dpdk-testpmd", "/usr/local/bin/dpdk-testpmd"]
        let fromPath = (env["PATH"] ?? "").split(separator: ":").map { "\($0)/dpdk-testpmd" }
        for candidate in fromPath + fixed where fm.isExecutableFile(atPath: candidate) { return candidate }
        throw Failure.notInstalled(searched: fixed)
    }

    /// `Process.run` spawns with the calling thread's signal mask; threads
    /// of Dispatch and of the concurrency pool block SIGTERM, which testpmd
    /// would then never see. Spawn from a fresh thread with an empty mask.
    static func launchWithSignalsUnblocked(_ process: Process) throws {
        struct Box: @unchecked Sendable { let process: Process }  // joined below before reuse
        let box = Box(process: process)
        let failure = Mutex<(any Error)?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            var none = sigset_t()
            sigemptyset(&none)
            pthread_sigmask(SIG_SETMASK, &none, nil)
            do { try box.process.run() } catch { failure.withLock { $0 = error } }
            done.signal()
        }
        thread.start()
        done.wait()
        if let error = failure.withLock({ $0 }) { throw error }
    }

    static func stopIfRunning(_ process: Process) {
        guard process.isRunning else { return }
        process.terminate()  // SIGTERM: testpmd stops forwarding and closes its ports.
        let deadline = ContinuousClock.now + .seconds(5)
        while process.isRunning && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// A child run to completion: its exit status (128 + signal after a
    /// signal), both streams, and its shell-quoted command line.
    struct Completed {
        var status: Int32
        var stdout: String
        var stderr: String
        var command: String
    }

    /// Spawns `executable` (signals unblocked, stdin from /dev/null), collects
    /// both streams and waits at most `limit` seconds; nil when it ran past
    /// that (it is stopped). The baselines that run a tool to its end
    /// (dpdk-test-acl, dpdk-test-sad) share it.
    static func runToCompletion(_ executable: String, _ arguments: [String], limit: Double) throws -> Completed? {
        let (process, sinks, command) = try spawn(executable, arguments)
        defer { stopIfRunning(process) }
        let deadline = ContinuousClock.now.advanced(by: .milliseconds(Int(limit * 1000)))
        while process.isRunning && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.005) }
        if process.isRunning { return nil }
        sinks.forEach { $0.waitForEOF(timeout: 5) }
        let status = process.terminationReason == .exit ? process.terminationStatus : 128 + process.terminationStatus
        return Completed(status: status, stdout: sinks[0].text(), stderr: sinks[1].text(), command: command)
    }

    /// Starts `executable` (signals unblocked, stdin from /dev/null) with
    /// its stdout and stderr collected, in that order; and its shell-quoted
    /// command line.
    static func spawn(_ executable: String, _ arguments: [String]) throws -> (Process, [OutputSink], String) {
        let command = ([executable] + arguments).map(shellQuoted).joined(separator: " ")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardInput = FileHandle.nullDevice
        let stdout = Pipe(), stderr = Pipe()
        process.standardOutput = stdout
        process.standardError = stderr
        let sinks = [OutputSink(stdout.fileHandleForReading), OutputSink(stderr.fileHandleForReading)]
        try launchWithSignalsUnblocked(process)
        sinks.forEach { $0.start() }
        return (process, sinks, command)
    }

    static func shellQuoted(_ word: String) -> String {
        let plain = word.allSatisfy { $0.isLetter || $0.isNumber || "-_=./,:@".contains($0) }
        return plain && !word.isEmpty ? word : "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    /// Collects everything a pipe delivers, on a thread of its own.
    final class OutputSink: Sendable {
        private let handle: FileHandle
        private let state = Mutex<(data: Data, eof: Bool)>((Data(), false))

        init(_ handle: FileHandle) { self.handle = handle }

        func start() {
            let thread = Thread { [self] in
                while true {
                    let chunk = handle.availableData
                    if chunk.isEmpty { break }
                    state.withLock { $0.data.append(chunk) }
                }
                state.withLock { $0.eof = true }
            }
            thread.start()
        }

        func text() -> String { String(decoding: state.withLock { $0.data }, as: UTF8.self) }

        func tail(lines: Int = 20) -> String {
            text().split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
        }

        /// Waits until the output contains `marker`; false on timeout, at EOF
        /// or once `alive` turns false.
        func wait(for marker: String, timeout: Double, while alive: () -> Bool) -> Bool {
            let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
            while ContinuousClock.now < deadline {
                let (found, eof) = state.withLock { s in
                    (String(decoding: s.data, as: UTF8.self).contains(marker), s.eof)
                }
                if found { return true }
                if eof || !alive() { return false }
                Thread.sleep(forTimeInterval: 0.01)
            }
            return false
        }

        func waitForEOF(timeout: Double) {
            let deadline = ContinuousClock.now + .milliseconds(Int(timeout * 1000))
            while !state.withLock({ $0.eof }) && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        }
    }
}
