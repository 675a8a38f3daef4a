import CShims
import Command
import Crypto
import Dataplane
import Glibc
import Packet

/// `sluice [EAL args] -- --config FILE [--stats-interval SECONDS]`
public enum GatewayMain {
    public static let usage = """
    usage: sluice [EAL options] -- --config FILE [--control PATH] [--stats-interval SECONDS] [--ipsec-mb-arch ARCH]

      --config FILE             configuration in the Sluice command language (required)
      --control PATH            the control socket (default /run/sluice/sluice.sock; 'none': no socket)
      --stats-interval SECONDS  print a stats line every SECONDS (fractions allowed; 0 = never)
      --ipsec-mb-arch ARCH      intel-ipsec-mb's code path: auto (default: the best this CPU has),
                                sse, avx, avx2 or avx512, e.g. to keep the cores off AVX-512
      --help                    this text

    EAL options select ports and lcores, e.g. for virtual ports:
      sluice --no-huge -m 512 --no-pci --lcores '0@0,1@1' \\
             --vdev net_pcap0,rx_pcap=in.pcap,tx_pcap=out.pcap --vdev net_null0 -- --config sluice.conf
    and for NIC ports: sluice -l 0-4 -a 0000:3b:00.0 -a 0000:3b:00.1 -- --config sluice.conf
    The main lcore runs the control thread; every other lcore is a worker with
    one RX and one TX queue on every configured port.
    """

    struct Options {
        var configPath: String?
        var statsInterval: Double = 0
        var controlPath = "/run/sluice/sluice.sock"
        var ipsecMBArch: IPsecMBArchitecture?
    }

    static func fail(_ message: String, code: Int32 = 1) -> Int32 {
        writeStandardError("sluice: error: \(message)\n")
        return code
    }

    /// How long shutdown waits for the workers to return once asked to stop
    /// (they flush and return within microseconds unless stuck).
    static let workerStopTimeout = 5.0

    /// Stops the workers; nil once all have returned, else the error to
    /// exit with. Nothing a stuck worker may touch is closed or freed.
    static func stopWorkers(_ gateway: Gateway) -> String? {
        let stuck = gateway.stopWorkers(timeout: workerStopTimeout)
        if stuck.isEmpty { return nil }
        return "the workers on lcore(s) \(stuck.map(String.init).joined(separator: ",")) did not return within \(Int(workerStopTimeout)) s of the stop request (stuck in a driver?); exiting without closing the ports"
    }

    static func parseOptions(_ args: ArraySlice<String>) -> Result<Options, DataplaneError> {
        var o = Options()
        var it = args.makeIterator()
        while let a = it.next() {
            switch a {
            case "--config":
                guard let v = it.next() else { return .failure(DataplaneError("--config needs a file name")) }
                o.configPath = v
            case "--stats-interval":
                guard let v = it.next(), let s = Double(v), s >= 0, s.isFinite else {
                    return .failure(DataplaneError("--stats-interval needs a number of seconds ≥ 0"))
                }
                o.statsInterval = s
            case "--control":
                guard let v = it.next(), !v.isEmpty else { return .failure(DataplaneError("--control needs a socket path (or 'none')")) }
                o.controlPath = v
            case "--ipsec-mb-arch":
                guard let v = it.next(), v == "auto" || IPsecMBArchitecture(name: v) != nil else {
                    return .failure(DataplaneError("--ipsec-mb-arch needs auto, sse, avx, avx2 or avx512"))
                }
                o.ipsecMBArch = IPsecMBArchitecture(name: v)
            case "--help", "-h":
                return .failure(DataplaneError(usage))
            default:
                return .failure(DataplaneError("unknown option '\(a)'\n\(usage)"))
            }
        }
        return .success(o)
    }

    /// Reads a whole file (a FIFO too: `--config <(…)`), or says why it cannot.
    static func readFile(_ path: String) -> Result<String, DataplaneError> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            return .failure(DataplaneError("cannot read \(path): \(String(cString: strerror(errno)))"))
        }
        defer { close(fd) }
        switch readAll(fd) {
        case .failure(let e): return .failure(DataplaneError("cannot read \(path): \(e.text)"))
        case .success(let bytes): return .success(String(decoding: bytes ?? [], as: UTF8.self))
        }
    }

    /// A read(2) that failed, with its errno.
    struct ReadFailure: Error {
        var code: Int32
        var text: String { String(cString: strerror(code)) }
    }

    /// Everything left to read on `fd`, at most `limit` bytes: nil when
    /// there is more than that.
    static func readAll(_ fd: Int32, limit: Int = .max) -> Result<[UInt8]?, ReadFailure> {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                return .failure(ReadFailure(code: errno))
            }
            if n == 0 { return .success(bytes) }
            if n > limit - bytes.count { return .success(nil) }
            bytes += chunk[..<n]
        }
    }

    public static func run(arguments: [String]) -> Int32 {
        sl_stdout_line_buffered()
        let split = arguments.firstIndex(of: "--") ?? arguments.endIndex
        let eal = Array(arguments[..<split])
        let app = split < arguments.endIndex ? arguments[(split + 1)...] : []
        let options: Options
        switch parseOptions(app) {
        case .success(let o): options = o
        case .failure(let e): return fail(e.message, code: 2)
        }
        guard let path = options.configPath else { return fail("--config FILE is required\n\(usage)", code: 2) }
        // Before anything expands a key (the configuration's SAs are checked next).
        do { try CryptoEngines.pin(options.ipsecMBArch) } catch { return fail(error.description) }

        // The configuration is checked before the EAL starts: a typo costs no start-up.
        let config: GatewayConfig
        switch readFile(path) {
        case .failure(let e): return fail(e.message)
        case .success(let text):
            do { config = try GatewayConfig.load(text: text, name: path) } catch { return fail(error.description) }
        }
        guard !config.ports.isEmpty else { return fail("\(path): no ports configured; add a line such as 'port 0 role protected address 10.0.0.1/24'") }

        do {
            _ = try EAL.initialize(arguments: eal)
        } catch {
            return fail(error.message)
        }
        defer { EAL.cleanup() }
        sl_install_stop_signals()

        let gateway: Gateway
        do {
            let roles = config.ports.mapValues { $0.role == .protected ? PortRoleCode.protected : .unprotected }
            gateway = try Gateway(portIDs: config.ports.keys.sorted(), roles: roles)
            let macs = Dictionary(uniqueKeysWithValues: gateway.ports.map { ($0.info.id, $0.info.mac) })
            try gateway.publish(routes: RouteCompiler.compile(config, portMACs: macs), ports: RouteCompiler.ports(config))
        } catch {
            return fail("\(path): \(error.message)")
        }
        let ipsec = IPsecCompiler()
        do {
            let tables = try ipsec.compile(config, workerLcores: gateway.workerLcores)
            try gateway.publish(ipsec: tables)
            ipsec.commit()
            for w in ipsec.warnings { writeStandardError("sluice: warning: \(w)\n") }
            if tables != nil {
                print("sluice: IPsec: \(config.sas.count) SAs, \(config.policies.count) policies; \(CryptoEngines.summary)")
                for note in ipsec.notes { print("sluice: \(note)") }
            }
            try gateway.start()
        } catch let error as IPsecConfigError {
            return fail("\(path): \(error.message)")
        } catch let error as DataplaneError {
            return fail("\(path): \(error.message)")
        } catch {
            return fail("\(path): \(error)")
        }
        for p in gateway.ports {
            let role = config.ports[p.info.id]?.role.rawValue ?? "?"
            print("sluice: port \(p.info.id) \(p.info.name) driver=\(p.info.driver) mac=\(p.info.mac) role=\(role) queues=\(p.queues) rss=\(p.rssHashFunctions != 0 ? "on" : "off") socket=\(p.info.socket)")
        }
        print("sluice: workers on lcores \(gateway.workerLcores.map(String.init).joined(separator: ",")), control on lcore \(EAL.mainLcore)")
        for w in gateway.topologyWarnings { writeStandardError("sluice: warning: \(w)\n") }
        var server: ControlServer? = nil
        if options.controlPath != "none" {
            do {
                server = try ControlServer(path: options.controlPath)
                print("sluice: control socket \(options.controlPath)")
            } catch {
                if let stuck = stopWorkers(gateway) { return fail("\(error.message); \(stuck)") }
                gateway.closePorts()
                return fail(error.message)
            }
        }
        gateway.publishTelemetry()
        let session = ControlSession(config: config, gateway: gateway, ipsec: ipsec)
        print("sluice: ready (\(gateway.workerLcores.count) workers)")

        var meter = RateMeter()
        var nextStats = monotonicSeconds() + options.statsInterval
        var nextLifetimeCheck = 0.0
        var removalFailed = false
        var nextIgnoredReport = 0.0
        while sl_stop_signal() == 0 {
            if let server {
                server.serve(timeoutMs: 10, now: monotonicSeconds()) { client, line in session.handle(client, line) }
            } else {
                usleep(10_000)
            }
            session.refreshLists(now: monotonicSeconds())
            session.serviceNeighbors(now: monotonicSeconds())
            // Events from the workers; a hard EXPIRE takes its SA out of
            // the data path, as do time limits (checked four times a second).
            var expiredSAs = false
            for e in gateway.drainEvents() {
                // A path MTU report is not authenticated: only what it changed is
                // shown, and reports ignored at most once a second.
                if e.kind == UInt8(SL_EVENT_PATH_MTU) {
                    let now = monotonicSeconds()
                    let outcome = ipsec.learnPathMTU(e, now: now)
                    if case .learnt(_, _, let changed) = outcome {
                        if changed {
                            print(outcome)
                            server?.broadcast(CounterReport.eventJSON(e))
                        }
                    } else if now >= nextIgnoredReport {
                        print(outcome)
                        nextIgnoredReport = now + 1
                    }
                    continue
                }
                print(CounterReport.eventLine(e))
                server?.broadcast(CounterReport.eventJSON(e))
                let direction: IPsecDirection = e.family == 0 ? .outbound : .inbound
                if e.kind == UInt8(SL_EVENT_EXPIRE_HARD) {
                    let removed = ipsec.expire(spi: e.policy_id, token: e.sa_token, direction: direction)
                    expiredSAs = expiredSAs || !removed.isEmpty
                } else if e.kind == UInt8(SL_EVENT_EXPIRE_SOFT) {
                    ipsec.noteSoftExpiry(token: e.sa_token, reason: Int32(e.proto))
                }
            }
            let now = monotonicSeconds()
            let checkedLifetimes = now >= nextLifetimeCheck
            if checkedLifetimes {
                nextLifetimeCheck = now + 0.25
                for expiry in ipsec.checkTimes(now: now) {
                    print(expiry.description)
                    server?.broadcast(expiry.json)
                    expiredSAs = expiredSAs || expiry.hard
                }
                for id in ipsec.agePathMTUs(now: now) {
                    print("sluice: path MTU of SA \(id) aged out")
                }
            }
            // Tried again at each lifetime check while it fails (reported once).
            if expiredSAs || checkedLifetimes, let removal = session.removeExpiredSAs() {
                switch removal {
                case .success(let removed):
                    print("sluice: SAs past a hard lifetime removed: \(removed.map(\.description).joined(separator: ", "))")
                    removalFailed = false
                case .failure(let error):
                    if !removalFailed {
                        writeStandardError("sluice: error: cannot remove expired SAs yet (tried again every 0.25 s): \(error)\n")
                    }
                    removalFailed = true
                }
            }
            if options.statsInterval > 0 && monotonicSeconds() >= nextStats {
                print(meter.line(gateway.coreCounters()))
                nextStats += options.statsInterval
            }
        }
        server = nil  // closes the clients, removes the socket
        // Read the port counters before the ports close; the PMDs reset them on close.
        if let stuck = stopWorkers(gateway) { return fail(stuck) }
        let stats = gateway.portStats()
        gateway.closePorts()
        for line in CounterReport.final(gateway, portStats: stats) { print(line) }
        return 0
    }
}
