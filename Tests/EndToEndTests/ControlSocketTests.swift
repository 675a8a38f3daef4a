// The control socket of the real `sluice` binary: commands and their errors,
// atomic batches, `show config` round trips, `reload` keeping SA state,
// `monitor` streaming events from live traffic, hostile clients.

import Foundation
import Glibc
import TestSupport
import Testing

/// A client of the control socket: one line out, one JSON line back.
final class ControlClient: @unchecked Sendable {
    let fd: Int32
    private var buffer: [UInt8] = []

    init(_ path: String) throws {
        do { fd = try connectUnixStream(path).get() } catch { throw HarnessError(error.description) }
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func write(_ bytes: [UInt8]) {
        var rest = bytes[...]
        while !rest.isEmpty {
            let n = rest.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            rest = rest.dropFirst(n)
        }
    }

    func readLine() -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n <= 0 { return nil }
            buffer += chunk[0..<n]
        }
    }

    /// Sends one command; its reply decoded.
    func call(_ line: String) throws -> [String: Any] {
        write(Array((line + "\n").utf8))
        guard let reply = readLine() else { throw HarnessError("no reply to '\(line)'") }
        guard let object = try JSONSerialization.jsonObject(with: Data(reply.utf8)) as? [String: Any] else {
            throw HarnessError("reply to '\(line)' is not a JSON object: \(reply)")
        }
        return object
    }
}

extension Dictionary where Key == String, Value == Any {
    var ok: Bool { self["ok"] as? Bool == true }
    var errorCode: String? { (self["error"] as? [String: Any])?["code"] as? String }
    var errorMessage: String { (self["error"] as? [String: Any])?["message"] as? String ?? "" }
}

/// A gateway on two pcap ports with an IPsec config, its control socket, and its directory.
struct ControlledGateway {
    let run: SluiceRun
    let dir: URL
    let socket: String

    static let key = "0x" + String(repeating: "3c", count: 20)
    /// The inbound SA's: one key both ways would repeat nonces (and be warned about).
    static let inboundKey = "0x" + String(repeating: "3d", count: 20)
    /// Two ports, their neighbours, and routes to each side.
    static let network = """
    port 0 role protected address 10.1.0.1/24
    port 1 role unprotected address 10.2.0.1/24
    neighbor 10.1.0.2 lladdr 02:00:00:00:01:02 port 0
    neighbor 10.2.0.2 lladdr 02:00:00:00:02:02 port 1
    route add 172.16.0.0/12 via 10.1.0.2
    route add 192.168.0.0/16 via 10.2.0.2

    """
    static let config = network + """
    sa add spi 0x1001 dir out src 10.2.0.1 dst 10.2.0.2 mode tunnel aead aes-gcm-128 key \(key) seq 100
    sa add spi 0x2001 dir in src 10.2.0.2 dst 10.2.0.1 mode tunnel aead aes-gcm-128 key \(inboundKey)
    sp add id 1 dir out src 172.16.0.0/12 dst 192.168.0.0/16 priority 10 action protect spi 0x1001
    sp add id 2 dir in src 192.168.0.0/16 dst 172.16.0.0/12 priority 10 action protect spi 0x2001

    """

    /// `input`: frames for port 0, replayed forever (live traffic) when `loop`.
    static func start(_ name: String, config: String = ControlledGateway.config, input: [[UInt8]] = [],
                      loop: Bool = false) async throws -> ControlledGateway {
        let dir = try E2E.scratchDirectory(name)
        let conf = dir.appendingPathComponent("sluice.conf")
        try config.write(to: conf, atomically: true, encoding: .utf8)
        let in0 = dir.appendingPathComponent("in0.pcap")
        if input.isEmpty { try E2E.writeEmptyPcap(in0) } else { try PcapWriter.write(input, to: in0) }
        try E2E.writeEmptyPcap(dir.appendingPathComponent("in1.pcap"))
        let socket = dir.appendingPathComponent("ctl/sluice.sock").path
        // Live traffic: port 0 replays its pcap forever, port 1 is a sink.
        let vdevs = loop
            ? ["net_pcap0,rx_pcap=\(in0.path),infinite_rx=1,tx_pcap=/dev/null", "net_null1,no-rx=1"]
            : ["net_pcap0,rx_pcap=\(in0.path),tx_pcap=\(dir.path)/out0.pcap",
               "net_pcap1,rx_pcap=\(dir.path)/in1.pcap,tx_pcap=\(dir.path)/out1.pcap"]
        let run = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: conf.path,
                                      statsInterval: 0.2, control: socket)
        return ControlledGateway(run: run, dir: dir, socket: socket)
    }

    func client() throws -> ControlClient { try ControlClient(socket) }

    func stop() async -> Int32? {
        let status = await run.stop()
        E2E.removeScratch(dir)
        return status
    }
}

/// Classic pcap writing for frames built in Swift.
enum PcapWriter {
    static func write(_ frames: [[UInt8]], to url: URL) throws {
        var data: [UInt8] = [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 1, 0, 0, 0]
        func le32(_ v: Int) -> [UInt8] { (0..<4).map { UInt8((v >> ($0 * 8)) & 0xFF) } }
        for (i, f) in frames.enumerated() {
            data += le32(1_700_000_000) + le32(i) + le32(f.count) + le32(f.count) + f
        }
        try Data(data).write(to: url)
    }
}

/// Plaintext UDP frames from the protected side (172.16.0.5 → 192.168.1.9).
func protectedFrames(_ n: Int, dst: String = "192.168.1.9") -> [[UInt8]] {
    (0..<n).map { i in
        let ip = 20 + 8 + 16
        var f: [UInt8] = [0x02, 0, 0, 0, 0xbb, 0x01, 0x02, 0, 0, 0, 0x01, 0x02, 0x08, 0x00]
        let d = dst.split(separator: ".").map { UInt8($0)! }
        var h: [UInt8] = [0x45, 0, UInt8(ip >> 8), UInt8(ip & 0xFF), 0, UInt8(i & 0xFF), 0, 0, 64, 17, 0, 0, 172, 16, 0, 5] + d
        var sum = 0
        for k in stride(from: 0, to: 20, by: 2) { sum += Int(h[k]) << 8 | Int(h[k + 1]) }
        while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
        h[10] = UInt8((~sum >> 8) & 0xFF); h[11] = UInt8(~sum & 0xFF)
        f += h + [0x13, 0x88, 0, 53, 0, 24, 0, 0] + Array(repeating: UInt8(i & 0xFF), count: 16)
        return f
    }
}

extension EndToEnd {
    @Suite struct ControlSocket {
        @Test func commandsAndTheirErrors() async throws {
            let g = try await ControlledGateway.start("ctl-commands")
            do {
                let c = try g.client()
                #expect(try c.call("version")["version"] as? String == "sluice 0.4 (control protocol 1)")
                #expect(try c.call("help").ok)
                // sp add reports the id it gave; get, list and del use it.
                let added = try c.call("sp add dir out src 172.16.1.0/24 dst 192.168.2.0/24 priority 5 action discard")
                let id = try #require(added["id"] as? Int, "\(added)")
                #expect(try c.call("sp get id \(id)").ok)
                #expect(((try c.call("sp list"))["policies"] as? [Any])?.count == 3)
                #expect(try c.call("sp del id \(id)").ok)
                #expect(try c.call("sp get id \(id)").errorCode == "not_found")
                #expect(try c.call("sp del id \(id)").errorCode == "invalid")
                // SAs: add, get (key never shown), del; errors name the problem.
                let sa = "sa add spi 0x3001 dir out src 10.2.0.1 dst 10.2.0.2 mode tunnel aead aes-gcm-128 key \(ControlledGateway.key)"
                #expect(try c.call(sa).ok)
                let got = try c.call("sa get spi 0x3001")
                let command = ((got["sa"] as? [String: Any])?["command"] as? String) ?? ""
                #expect(command.contains("key <redacted>") && !command.contains("3c3c"), "\(got)")
                #expect(try c.call(sa).errorMessage.contains("already exists"))
                // sa update replaces an SA's options; the key and ESN staying, its numbers carry on.
                #expect(try c.call(sa.replacingOccurrences(of: "sa add", with: "sa update") + " ttl 9").ok)
                #expect((((try c.call("sa get spi 0x3001"))["sa"] as? [String: Any])?["command"] as? String)?.hasSuffix(" ttl 9") == true)
                #expect(try c.call("sa update spi 0x3999 dir out src 10.2.0.1 dst 10.2.0.2 mode tunnel aead aes-gcm-128 key \(ControlledGateway.key)").errorMessage.contains("no SA"))
                #expect(try c.call(sa.replacingOccurrences(of: "sa add", with: "sa update").replacingOccurrences(of: "dir out", with: "dir in")).errorMessage.contains("cannot change the direction"))
                #expect(try c.call("sa del spi 0x3001").ok)
                // allocspi: an unused SPI; pcap ports have no RSS, so a cpu cannot be steered to (and says so).
                let spi = try #require(try c.call("sa allocspi")["spi"] as? String)
                #expect(spi.hasPrefix("0x") && UInt32(spi.dropFirst(2), radix: 16).map { $0 >= 256 && $0 != 0x1001 && $0 != 0x2001 } == true)
                let pinned = try c.call("sa allocspi cpu 1")
                #expect(pinned.ok && pinned["steered"] as? Bool == false && (pinned["note"] as? String)?.contains("RSS") == true, "\(pinned)")
                #expect(try c.call("sa allocspi cpu 9").errorCode == "not_found")
                #expect(try c.call("sa del spi 0x1001").errorMessage.contains("used by policy id 1"))
                #expect(try c.call("route add 10.9.0.0/16 via 10.2.0.2").ok)
                #expect(try c.call("route add 10.9.0.0/33 via 10.2.0.2").errorCode == "syntax")
                #expect(try c.call("route del 10.9.0.0/16").ok)
                #expect(try c.call("frobnicate").errorCode == "syntax")
                // Ports and their roles are the data plane's from start-up.
                #expect(try c.call("port 0 role protected").ok)
                #expect(try c.call("port 0 mtu 1400").ok)
                #expect(try c.call("port 0 role unprotected").errorMessage.contains("already has role protected"))
                #expect(try c.call("port 7 role protected").errorMessage.contains("ports change only at start-up"))
                // Arguments that do not parse are errors, not ignored.
                #expect(try c.call("sa get spi 0x1001 dst nonsense").errorCode == "syntax")
                #expect(try c.call("sa allocspi cpu abc").errorCode == "syntax")
                #expect(try c.call("sa allocspi src 10.2.0.1 dst bogus").errorCode == "syntax")
                #expect(try c.call("stats sa 0x1001 dst 10.2.0.9").errorCode == "not_found")
                #expect(((try c.call("stats sa 0x1001 dst 10.2.0.2"))["sa"] as? [String: Any])?["next_seq"] as? Int == 100)
                // Counters.
                #expect(try c.call("stats")["rx"] as? Int == 0)
                #expect(try c.call("stats core 1")["core"] as? Int == 1)
                #expect(try c.call("stats core 7").errorCode == "not_found")
                // Comments as in the command language: after `#`, even inside a word.
                #expect(try c.call("stats core 1 # the first worker")["core"] as? Int == 1)
                #expect(try c.call("stats core 1#1")["core"] as? Int == 1)
                #expect(try c.call("version\t# which build")["version"] as? String == "sluice 0.4 (control protocol 1)")
                #expect(try c.call("   # nothing but a comment").ok)
                #expect(try c.call("stats port 1")["port"] as? Int == 1)
                #expect(((try c.call("stats sa 0x1001"))["sa"] as? [String: Any])?["next_seq"] as? Int == 100)

                // A batch with one bad line changes nothing, byte for byte.
                let before = try c.call("show config")["config"] as? String
                #expect(try c.call("begin").ok)
                #expect((try c.call("route add 10.8.0.0/16 via 10.2.0.2"))["batched"] as? Bool == true)
                #expect(try c.call("sp add dir out src 10.0.0.0/8 dst nowhere priority 1 action bypass").errorCode == "syntax")
                #expect(try c.call("sp add dir out src 172.16.0.0/12 dst 10.8.0.0/16 priority 1 action bypass").ok)
                #expect(try c.call("commit").errorCode == "batch_failed")
                #expect(try c.call("show config")["config"] as? String == before)
                // So does a line the server refuses itself (too long), and a
                // flush, reload or begin inside the batch.
                for refused in [String(repeating: "a", count: 70_000), "flush sp", "reload /nonexistent.conf", "begin"] {
                    #expect(try c.call("begin").ok)
                    #expect(try c.call("route add 10.8.0.0/16 via 10.2.0.2").ok)
                    #expect(try c.call(refused).ok == false, "\(refused.prefix(20))")
                    #expect(try c.call("commit").errorCode == "batch_failed", "\(refused.prefix(20))")
                    #expect(try c.call("show config")["config"] as? String == before, "\(refused.prefix(20))")
                }
                // A good batch applies as one; abort drops one.
                #expect(try c.call("begin").ok)
                #expect(try c.call("route add 10.8.0.0/16 via 10.2.0.2").ok)
                #expect(try c.call("sp add id 77 dir out src 172.16.0.0/12 dst 10.8.0.0/16 priority 1 action bypass").ok)
                #expect((try c.call("commit"))["applied"] as? Int == 2)
                let after = try #require(try c.call("show config")["config"] as? String)
                #expect(after.contains("route add 10.8.0.0/16 via 10.2.0.2\n") && after.contains("sp add id 77 "))
                #expect(try c.call("begin").ok)
                #expect(try c.call("sp del id 77").ok)
                #expect(try c.call("abort").ok)
                #expect(try c.call("sp get id 77").ok)
                #expect(try c.call("commit").errorCode == "batch")
                #expect(added["warnings"] == nil, "\(added)")
                // What the compiler warns about is in the reply: a policy
                // that can match nothing, an inbound SA left out of the data
                // plane once no policy names it.
                let ifID = try c.call("sp add id 78 dir in src 192.168.0.0/16 dst 172.16.0.0/12 if-id 7 priority 1 action discard")
                #expect(ifID.ok && (ifID["warnings"] as? [String]) == ["policy id 78 has if-id 7: no packet carries an interface id yet, so it matches nothing"], "\(ifID)")
                let flushed = try c.call("flush sp")
                #expect(flushed.ok && (flushed["warnings"] as? [String])?.count == 1
                        && (flushed["warnings"] as? [String])?.first?.hasPrefix("inbound SA spi 0x00002001 is not installed") == true, "\(flushed)")
                #expect(((try c.call("sp list"))["policies"] as? [Any])?.isEmpty == true)
            }
            #expect(await g.stop() == 0)
        }

        /// A batch is built on the configuration as it was at `begin`: when
        /// another client changed it since, `commit` would undo that change,
        /// so it is refused (nothing applied) and the batch can be redone.
        @Test func aBatchNeverRevertsAnotherClientsChange() async throws {
            let g = try await ControlledGateway.start("ctl-conflict")
            do {
                let a = try g.client(), b = try g.client()
                #expect(try a.call("begin").ok)
                #expect(try a.call("route add 10.8.0.0/16 via 10.2.0.2").ok)
                #expect(try b.call("route add 10.9.0.0/16 via 10.2.0.2").ok)
                // From then on the batch can only fail: its lines are refused at once.
                #expect(try a.call("route add 10.7.0.0/16 via 10.2.0.2").errorCode == "conflict")
                let refused = try a.call("commit")
                #expect(refused.errorCode == "conflict" && refused.errorMessage.contains("nothing applied"), "\(refused)")
                var config = try #require(try b.call("show config")["config"] as? String)
                #expect(config.contains("route add 10.9.0.0/16") && !config.contains("route add 10.8.0.0/16"))
                // Begun again, on the new configuration: both changes stand.
                #expect(try a.call("begin").ok)
                #expect(try a.call("route add 10.8.0.0/16 via 10.2.0.2").ok)
                #expect(try a.call("commit")["applied"] as? Int == 1)
                config = try #require(try b.call("show config")["config"] as? String)
                #expect(config.contains("route add 10.9.0.0/16") && config.contains("route add 10.8.0.0/16"))
            }
            #expect(await g.stop() == 0)
        }

        /// `reload FILE` reads the file with the rights of the client that
        /// asked, not the gateway's (root): a member of the socket's group
        /// cannot make the gateway read, and quote back, a file it could not
        /// read itself. Only regular files, of a bounded size: a FIFO or a
        /// device is refused at once (neither may hold the control thread).
        @Test(.enabled(if: getuid() == 0 && E2E.scratchReachableByOthers, "needs root, and a scratch directory others can reach"))
        func reloadReadsAFileWithTheClientsRights() async throws {
            let g = try await ControlledGateway.start("ctl-reload-rights")
            do {
                // The socket's group is nobody's, as an operators' group would be.
                let nogroup: gid_t = 65534, nobody: uid_t = 65534
                let socketDirectory = (g.socket as NSString).deletingLastPathComponent
                #expect(chown(socketDirectory, 0, nogroup) == 0 && chown(g.socket, 0, nogroup) == 0)
                // Searchable by others whatever the umask.
                #expect(chmod(g.dir.path, 0o755) == 0)
                func file(_ name: String, _ text: String, mode: mode_t) throws -> String {
                    let path = g.dir.appendingPathComponent(name).path
                    try text.write(toFile: path, atomically: false, encoding: .utf8)
                    chmod(path, mode)
                    return path
                }
                let secret = try file("secret.conf", "topsecretword is not a command\n", mode: 0o600)
                let groupRoot = try file("group.conf", "groupsecretword is not a command\n", mode: 0o640)
                let readable = try file("open.conf", ControlledGateway.config + "route add 10.4.0.0/16 via 10.2.0.2\n", mode: 0o644)
                let fifo = g.dir.appendingPathComponent("fifo").path
                #expect(mkfifo(fifo, 0o666) == 0 && chmod(fifo, 0o666) == 0)
                // A client as nobody: one reply line per command.
                let script = """
                import os, socket, sys
                os.setgroups([]); os.setgid(\(nogroup)); os.setuid(\(nobody))
                s = socket.socket(socket.AF_UNIX); s.settimeout(20); s.connect(sys.argv[1])
                f = s.makefile('rw')
                for command in sys.argv[2:]:
                    f.write(command + '\\n'); f.flush(); print(f.readline().strip(), flush=True)
                """
                // The gateway's memory map: readable by the gateway itself, never by a client.
                let maps = "/proc/\(g.run.child.process.processIdentifier)/maps"
                let child = try Child(E2E.python, ["-c", script, g.socket, "reload \(secret)", "reload \(groupRoot)",
                                                   "reload \(fifo)", "reload /dev/zero", "reload \(readable)", "reload \(maps)"])
                let status = await child.waitForExit(timeout: .seconds(60))
                #expect(status == 0, "\(child.transcript())")
                let replies = child.stdout.text.split(separator: "\n").map { (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any] ?? [:] }
                #expect(replies.count == 6, "\(child.transcript())")
                if replies.count == 6 {
                    // (The gateway's own /proc files pass the kernel's ptrace check
                    // whatever its ids: only the filesystem check keeps them out.)
                    #expect(replies[5].errorCode == "reload" && replies[5].errorMessage.contains("kernel filesystem"), "\(replies[5])")
                    for (i, what) in ["root's own file", "a file of root's group"].enumerated() {
                        #expect(replies[i].errorCode == "reload" && replies[i].errorMessage.contains("Permission denied"), "\(what): \(replies[i])")
                    }
                    #expect(!child.stdout.text.contains("secretword"), "a reply quotes a file the client cannot read: \(child.stdout.text)")
                    #expect(replies[2].errorMessage.contains("not a regular file"), "\(replies[2])")
                    #expect(replies[3].errorMessage.contains("not a regular file"), "\(replies[3])")
                    #expect(replies[4].ok, "a file the client can read: \(replies[4])")
                }
                let c = try g.client()
                #expect((try c.call("show config")["config"] as? String)?.contains("route add 10.4.0.0/16") == true)
                // Root reads root's file (and the parse error may quote it: root could read it anyway).
                #expect(try c.call("reload \(secret)").errorMessage.contains("topsecretword"))
                // Nothing on a kernel filesystem is a configuration file, whoever asks.
                #expect(try c.call("reload \(maps)").errorMessage.contains("kernel filesystem"))
                // A file past the size limit (sparse: no disk used) is refused before it is read.
                let huge = g.dir.appendingPathComponent("huge.conf").path
                #expect(FileManager.default.createFile(atPath: huge, contents: nil) && truncate(huge, off_t((256 << 20) + 1)) == 0)
                #expect(try c.call("reload \(huge)").errorMessage.contains("reload reads at most"))
            }
            #expect(await g.stop() == 0)
        }

        /// `show config` is the state as commands: loaded into a fresh
        /// gateway it prints itself again, byte for byte.
        @Test func showConfigRecreatesTheState() async throws {
            let g = try await ControlledGateway.start("ctl-show")
            var text = ""
            do {
                let c = try g.client()
                #expect(try c.call("sp add id 9 dir fwd src 192.168.0.0/16 dst 172.16.5.0/24 proto icmp type 8 priority 3 action bypass").ok)
                #expect(try c.call("crypto-engine ipsec-mb").ok)
                text = try #require(try c.call("show config")["config"] as? String)
            }
            #expect(await g.stop() == 0)
            let fresh = try await ControlledGateway.start("ctl-show2", config: text)
            do {
                #expect(try fresh.client().call("show config")["config"] as? String == text)
            }
            #expect(await fresh.stop() == 0)
        }

        /// `reload` replaces the configuration as a diff: an SA that stays
        /// keeps its sequence number; one whose key changed starts again.
        @Test func reloadKeepsTheSequenceOfSAsThatStay() async throws {
            let g = try await ControlledGateway.start("ctl-reload", input: protectedFrames(8), loop: true)
            do {
                let c = try g.client()
                var next = 0
                for _ in 0..<200 where next <= 100 {
                    next = ((try c.call("sa get spi 0x1001"))["sa"] as? [String: Any])?["next_seq"] as? Int ?? 0
                    try await Task.sleep(for: .milliseconds(10))
                }
                #expect(next > 100, "traffic moved the sequence number")
                let kept = g.dir.appendingPathComponent("kept.conf")
                try (ControlledGateway.config + "route add 10.7.0.0/16 via 10.2.0.2\n").write(to: kept, atomically: true, encoding: .utf8)
                #expect(try c.call("reload \(kept.path)").ok)
                let afterReload = ((try c.call("sa get spi 0x1001"))["sa"] as? [String: Any])?["next_seq"] as? Int ?? 0
                #expect(afterReload >= next, "reload restarted the sequence: \(afterReload) < \(next)")
                #expect((try c.call("show config")["config"] as? String)?.contains("route add 10.7.0.0/16") == true)
                let rekeyed = g.dir.appendingPathComponent("rekeyed.conf")
                // (A configured seq far above what the live traffic reaches in
                // the test, so the restart shows however fast it runs.)
                try ControlledGateway.config.replacingOccurrences(of: "3c3c3c3c3c", with: "4d4d4d4d4d")
                    .replacingOccurrences(of: "seq 100", with: "seq 3000000000")
                    .write(to: rekeyed, atomically: true, encoding: .utf8)
                #expect(try c.call("reload \(rekeyed.path)").ok)
                let fresh = ((try c.call("sa get spi 0x1001"))["sa"] as? [String: Any])?["next_seq"] as? Int ?? 0
                #expect(fresh >= 3_000_000_000, "a new key starts from its configured seq (\(fresh), before \(afterReload))")
                #expect(try c.call("reload /nonexistent.conf").errorCode == "reload")
                // A file that swaps the ports' roles: they are the data plane's from start-up.
                let swapped = g.dir.appendingPathComponent("swapped.conf")
                try ControlledGateway.config.replacingOccurrences(of: "role protected", with: "role PROT")
                    .replacingOccurrences(of: "role unprotected", with: "role protected").replacingOccurrences(of: "role PROT", with: "role unprotected")
                    .write(to: swapped, atomically: true, encoding: .utf8)
                let running = try c.call("show config")["config"] as? String
                let refused = try c.call("reload \(swapped.path)")
                #expect(refused.errorCode == "install" && refused.errorMessage.contains("port 0 runs as protected"), "\(refused)")
                #expect(try c.call("show config")["config"] as? String == running, "nothing of it applied")
            }
            #expect(await g.stop() == 0)
        }

        /// `monitor` streams ACQUIRE (a reqid policy without SA) and EXPIRE
        /// (an SA with a packet lifetime) raised by live traffic.
        @Test func monitorStreamsEventsFromTraffic() async throws {
            let config = ControlledGateway.config
                .replacingOccurrences(of: "seq 100", with: "seq 100 lifetime packets soft 200000 hard 400000")
                + "sp add id 3 dir out src 172.16.0.0/12 dst 192.168.9.0/24 priority 1 action protect reqid 4\n"
            let g = try await ControlledGateway.start("ctl-monitor", config: config,
                                                      input: protectedFrames(4) + protectedFrames(4, dst: "192.168.9.9"), loop: true)
            do {
                let m = try g.client()
                #expect(try m.call("monitor").ok)
                var events: [[String: Any]] = []
                // Until both expiries arrived (the limits are high enough to
                // be reached after the monitor connected).
                // ACQUIRE repeats once a second while the traffic lasts.
                while events.count < 50,
                      !(events.contains { $0["event"] as? String == "expire" && $0["hard"] != nil }
                        && events.contains { $0["event"] as? String == "acquire" && $0["policy"] as? Int == 3 }),
                      let line = m.readLine() {
                    if let e = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] { events.append(e) }
                }
                let kinds = events.map { ($0["event"] as? String ?? "") + "/" + ($0["soft"] != nil ? "soft" : ($0["hard"] != nil ? "hard" : "")) }
                #expect(events.contains { $0["event"] as? String == "acquire" && $0["policy"] as? Int == 3 && $0["cpu"] as? Int == 1 }, "\(events)")
                #expect(kinds.contains("expire/soft") && kinds.contains("expire/hard"), "\(kinds) \(events)")
            }
            #expect(await g.stop() == 0)
        }

        /// Garbage, an endless line, hundreds of idle connections and a client
        /// that never reads: the gateway keeps forwarding, answers a new
        /// client, and its state is unchanged.
        @Test func hostileClientsChangeNothing() async throws {
            let g = try await ControlledGateway.start("ctl-hostile", input: protectedFrames(8), loop: true)
            do {
                let before = try g.client().call("show config")["config"] as? String
                var rng = SystemRandomNumberGenerator()
                let garbage = try g.client()
                garbage.write((0..<65536).map { _ in UInt8.random(in: 0...255, using: &rng) })
                let endless = try g.client()
                endless.write(Array(repeating: UInt8(ascii: "a"), count: 4 << 20))
                #expect(endless.readLine().map { $0.contains("line_too_long") } == true)
                var idle: [ControlClient] = []
                for _ in 0..<300 { idle.append(try g.client()) }
                let deaf = try g.client()
                let flood = Array(String(repeating: "help\n", count: 200_000).utf8)
                let writer = Thread { deaf.write(flood) }
                writer.start()
                try await Task.sleep(for: .seconds(1))
                let rx1 = try g.client().call("stats")["rx"] as? Int ?? 0
                try await Task.sleep(for: .milliseconds(300))
                let fresh = try g.client()
                #expect(try fresh.call("version").ok)
                let rx2 = try fresh.call("stats")["rx"] as? Int ?? 0
                #expect(rx2 > rx1, "the gateway kept forwarding (\(rx1) → \(rx2))")
                #expect(try fresh.call("show config")["config"] as? String == before)
                _ = idle
            }
            #expect(g.run.child.isRunning)
            #expect(await g.stop() == 0)
        }
    }
}

extension EndToEnd.ControlSocket {
    /// The socket file: mode 0660, a second gateway on a live socket refuses
    /// to start with a clear message, a stale file (nobody listening) is
    /// replaced, and the socket is removed on exit.
    @Test func socketFileLifecycle() async throws {
        let g = try await ControlledGateway.start("ctl-socket")
        var info = stat()
        #expect(stat(g.socket, &info) == 0 && info.st_mode & 0o777 == 0o660 && (info.st_mode & S_IFMT) == S_IFSOCK,
                "mode \(String(info.st_mode & 0o777, radix: 8))")
        // A second gateway on the same socket path.
        let dir2 = try E2E.scratchDirectory("ctl-socket2")
        defer { E2E.removeScratch(dir2) }
        let conf = dir2.appendingPathComponent("sluice.conf")
        try ControlledGateway.config.write(to: conf, atomically: true, encoding: .utf8)
        try E2E.writeEmptyPcap(dir2.appendingPathComponent("in.pcap"))
        let vdevs = ["net_pcap0,rx_pcap=\(dir2.path)/in.pcap,tx_pcap=\(dir2.path)/o0.pcap",
                     "net_pcap1,rx_pcap=\(dir2.path)/in.pcap,tx_pcap=\(dir2.path)/o1.pcap"]
        let second = try Child(try E2E.sluiceBinary(), E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs)
                               + ["--", "--config", conf.path, "--control", g.socket])
        let status = await second.waitForExit(timeout: .seconds(30))
        #expect(status == 1 && second.stderr.text.contains("already listening on \(g.socket)"), "\(second.transcript())")
        #expect(try g.client().call("version").ok, "the first gateway still answers")
        #expect(await g.run.stop() == 0)
        #expect(access(g.socket, F_OK) != 0, "the socket is removed on exit")

        // A stale socket file: bound once, nobody listening now.
        let stale = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { b in for (i, c) in g.socket.utf8.enumerated() { b[i] = c } }
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(stale)
        #expect(access(g.socket, F_OK) == 0)
        let third = try await SluiceRun(eal: E2E.ealArguments(lcores: "0@0,1@1", vdevs: vdevs), config: conf.path, control: g.socket)
        #expect(try ControlClient(g.socket).call("version").ok, "the stale socket was replaced")
        #expect(await third.stop() == 0)
        E2E.removeScratch(g.dir)
    }
}

extension EndToEnd.ControlSocket {
    /// The sluicectl binary against a running gateway: one command, JSON
    /// output, a file as one batch (all or nothing), exit statuses.
    @Test func sluicectlSendsCommandsAndBatches() async throws {
        let g = try await ControlledGateway.start("ctl-sluicectl")
        let ctl = URL(fileURLWithPath: try E2E.sluiceBinary()).deletingLastPathComponent().appendingPathComponent("sluicectl").path
        func sluicectl(_ args: [String]) async throws -> (Int32?, Child) {
            let c = try Child(ctl, ["--socket", g.socket] + args)
            return (await c.waitForExit(timeout: .seconds(20)), c)
        }
        var (status, c) = try await sluicectl(["version"])
        #expect(status == 0 && c.stdout.text.contains("sluice 0.4"), "\(c.transcript())")
        (status, c) = try await sluicectl(["--json", "sp", "list"])
        #expect(status == 0 && c.stdout.text.hasPrefix("{\"ok\":true,\"policies\":["), "\(c.transcript())")
        (status, c) = try await sluicectl(["sp", "get", "id", "999"])
        #expect(status == 1 && c.stderr.text.contains("no policy id 999"), "\(c.transcript())")
        let before = try g.client().call("show config")["config"] as? String
        let bad = g.dir.appendingPathComponent("bad.conf")
        // Line 3 repeats line 2's SA: refused, named by file and line, its key not printed.
        let key = String(repeating: "ab", count: 20)
        let sa = "sa add spi 0x7777 dir out src 192.0.2.1 dst 192.0.2.9 mode tunnel aead aes-gcm-128 key 0x\(key)\n"
        try ("route add 10.6.0.0/16 via 10.2.0.2\n" + sa + sa + "sp add dir out src nonsense\n")
            .write(to: bad, atomically: true, encoding: .utf8)
        (status, c) = try await sluicectl(["-f", bad.path])
        #expect(status == 1 && c.stderr.text.contains("nothing applied"), "\(c.transcript())")
        #expect(c.stderr.text.contains("bad.conf:3: ") && c.stderr.text.contains("bad.conf:4: ")
                && !c.stderr.text.contains(key.prefix(8)), "\(c.transcript())")
        #expect(try g.client().call("show config")["config"] as? String == before)
        // The file is the batch: a commit (or begin, abort) in it would end
        // the batch early and apply the rest line by line. Nothing is sent.
        let early = g.dir.appendingPathComponent("early.conf")
        for newline in ["\n", "\r\n", "\r"] {
            try ["route add 10.6.0.0/16 via 10.2.0.2", "commit", "route add 10.5.0.0/16 via 10.2.0.2", ""].joined(separator: newline)
                .write(to: early, atomically: true, encoding: .utf8)
            (status, c) = try await sluicectl(["-f", early.path])
            #expect(status == 1 && c.stderr.text.contains("early.conf:2: 'commit' cannot be in a file"), "\(c.transcript())")
            #expect(try g.client().call("show config")["config"] as? String == before)
        }
        let good = g.dir.appendingPathComponent("good.conf")
        try "# two changes, one batch\nroute add 10.6.0.0/16 via 10.2.0.2\nsp add id 50 dir out src 172.16.0.0/12 dst 10.6.0.0/16 priority 2 action bypass\n"
            .write(to: good, atomically: true, encoding: .utf8)
        (status, c) = try await sluicectl(["-f", good.path])
        #expect(status == 0 && c.stdout.text.contains("applied: 2"), "\(c.transcript())")
        #expect(try g.client().call("sp get id 50").ok)
        // Lines ended by a lone "\r" (old Mac files) are lines too.
        let cr = g.dir.appendingPathComponent("cr.conf")
        try "  # comment\rroute add 10.7.0.0/16 via 10.2.0.2\rsp add id 51 dir out src 172.16.0.0/12 dst 10.7.0.0/16 priority 2 action bypass\r"
            .write(to: cr, atomically: true, encoding: .utf8)
        (status, c) = try await sluicectl(["-f", cr.path])
        #expect(status == 0 && c.stdout.text.contains("applied: 2"), "\(c.transcript())")
        #expect(try g.client().call("sp get id 51").ok)
        let missing = try Child(ctl, ["--socket", g.dir.appendingPathComponent("nope.sock").path, "version"])
        #expect(await missing.waitForExit(timeout: .seconds(10)) == 2 && missing.stderr.text.contains("cannot connect"))
        #expect(await g.stop() == 0)
    }
}
