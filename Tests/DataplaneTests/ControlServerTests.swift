// The control socket's server on its own (no gateway): the test plays the
// control loop, calling `serve` with its own clock, and the clients, on
// non-blocking sockets. What a client that floods, does not read, asks for
// more than the output limit, or crowds the client table can do to the
// others: nothing.

@testable import Control
import Foundation
import Glibc
import TestSupport
import Testing

/// A non-blocking client socket of the test.
private final class RawClient {
    let fd: Int32
    var received: [UInt8] = []
    var ended = false
    /// Complete lines received so far.
    var lineCount = 0

    init(_ path: String) throws {
        fd = try connectUnixStream(path).get()
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    }
    deinit { close(fd) }

    /// Sends what the socket takes now; the bytes it did not take.
    @discardableResult
    func send(_ text: String) -> Int {
        let bytes = Array(text.utf8)
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { break }
            sent += n
        }
        return bytes.count - sent
    }

    /// Takes what has arrived.
    func receive() {
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { ended = true; return }
            if n < 0 { return }
            received += chunk[0..<n]
            lineCount += chunk[0..<n].count(where: { $0 == 0x0A })
        }
    }

    var lines: [String] { received.split(separator: 0x0A, omittingEmptySubsequences: false).dropLast().map { String(decoding: $0, as: UTF8.self) } }
}

@Suite struct ControlServerTests {
    /// A server on a fresh socket path; `handle` echoes `reply:N` as N bytes.
    private static func server(_ name: String) throws -> ControlServer {
        let path = "/tmp/sluice-cs-\(getpid())-\(name).sock"
        return try ControlServer(path: path)
    }

    /// The reply the test's handler gives a line: `big N` → N bytes, anything else → `{"echo":"line"}`.
    private static func reply(_ line: String) -> [String] {
        if line.hasPrefix("big "), let n = Int(line.dropFirst(4)) { return [String(repeating: "b", count: n)] }
        return ["{\"echo\":\(ControlReply.quote(line))}"]
    }

    /// The test's handler: `monitor` makes the client a monitor (refused
    /// as `too_many_monitors` past the limit); any other line gets `reply`.
    private static func handle(_ client: ControlServer.Client, _ line: String) -> [String] {
        guard line == "monitor" else { return reply(line) }
        return [client.startMonitoring() ? "{\"ok\":true}" : "{\"ok\":false,\"error\":{\"code\":\"too_many_monitors\"}}"]
    }

    /// One turn of the control loop as the tests play it: the clock moves
    /// by `step`, the server serves (`handler`), then `clients` read.
    private static func turn(_ server: ControlServer, now: inout Double, step: Double = 0.001, timeoutMs: Int32 = 0,
                             reading clients: [RawClient] = [],
                             handler: (ControlServer.Client, String) -> [String] = ControlServerTests.handle) {
        now += step
        server.serve(timeoutMs: timeoutMs, now: now, handle: handler)
        for c in clients { c.receive() }
    }

    /// What is at the control path decides: a stale socket (nobody listens)
    /// is replaced; a live one, a file or a directory is an error and stays
    /// as it was (a mistyped `--control` never deletes the operator's file).
    @Test func onlyAStaleSocketIsReplaced() throws {
        let base = "/tmp/sluice-cs-\(getpid())-path"
        // A stale socket: bound, never listened on, its descriptor closed.
        let stale = base + "-stale.sock"
        unlink(stale)
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { b in for (i, c) in stale.utf8.enumerated() { b[i] = c } }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        close(fd)
        try #require(bound == 0)
        let replaced = try ControlServer(path: stale)
        _ = try RawClient(stale)  // the new server accepts
        // A live one: refused.
        #expect(throws: ControlSocketError.self) { try ControlServer(path: stale) }
        withExtendedLifetime(replaced) {}
        // A file and a directory: refused, left as they are.
        let file = base + "-file.conf"
        try "port 0\n".write(toFile: file, atomically: false, encoding: .utf8)
        defer { unlink(file) }
        let error = try #require(throws: ControlSocketError.self) { try ControlServer(path: file) }
        #expect(error.message.contains("is not a socket"), "\(error.message)")
        #expect((try? String(contentsOfFile: file, encoding: .utf8)) == "port 0\n")
        let directory = base + "-dir"
        mkdir(directory, 0o700)
        defer { rmdir(directory) }
        #expect(throws: ControlSocketError.self) { try ControlServer(path: directory) }
        var st = stat()
        #expect(lstat(directory, &st) == 0 && st.st_mode & S_IFMT == S_IFDIR)
    }

    /// A reply larger than the output limit is sent whole, and the client
    /// is answered after it (before: the connection was dropped).
    @Test func aReplyLargerThanTheQueueLimitIsSentWhole() throws {
        let server = try Self.server("large")
        server.limits.queuedBytes = 64 << 10
        let c = try RawClient(server.path)
        c.send("big 3000000\nversion\n")
        var now = 0.0
        for _ in 0..<2000 where c.lineCount < 2 { Self.turn(server, now: &now, timeoutMs: 1, reading: [c]) }
        #expect(c.lines.count == 2 && c.lines.first?.count == 3_000_000, "\(c.lines.map(\.count))")
        #expect(c.lines.last == "{\"echo\":\"version\"}")
        #expect(!c.ended && server.clients.count == 1)
    }

    /// A client that pipelines lines and never reads what comes back: the
    /// server stops reading it once its queue is full (its memory stays
    /// bounded), and keeps answering another client.
    @Test func aClientThatDoesNotReadOnlyStopsItself() throws {
        let server = try Self.server("deaf")
        server.limits.queuedBytes = 256 << 10
        let deaf = try RawClient(server.path)
        let other = try RawClient(server.path)
        var now = 0.0
        var handled = 0
        var unsent = 0
        for round in 0..<400 {
            unsent = deaf.send(String(repeating: "big 4096\n", count: 512))
            if round % 40 == 0 { other.send("ping \(round)\n") }
            Self.turn(server, now: &now, reading: [other]) { _, line in handled += 1; return Self.reply(line) }
        }
        let d = try #require(server.clients.first { $0.fd != server.clients.last?.fd })
        #expect(d.queued <= server.limits.queuedBytes + 4097, "queued \(d.queued)")
        #expect(d.input.count - d.inputStart <= server.limits.lineBytes + 65536, "input held \(d.input.count - d.inputStart)")
        #expect(unsent > 0, "the deaf client's socket filled: the server stopped reading it")
        #expect(other.lines == (0..<10).map { "{\"echo\":\"ping \($0 * 40)\"}" }, "\(other.lines)")
        #expect(server.clients.count == 2 && !d.closing)
    }

    /// A client that asks for large replies and reads them as they come:
    /// what it has been sent is let go, so the server holds about the
    /// output limit for it, not everything it was ever sent.
    @Test func aClientThatReadsAsItAsksCostsABoundedAmount() throws {
        let server = try Self.server("steady")
        server.limits.queuedBytes = 256 << 10
        let c = try RawClient(server.path)
        var now = 0.0
        var held = 0
        var asked = 0
        for _ in 0..<3000 where c.lineCount < 60 {
            if asked < 60 && c.send("big 300000\n") == 0 { asked += 1 }
            now += 0.001
            server.serve(timeoutMs: 0, now: now) { _, line in Self.reply(line) }
            held = max(held, server.clients.first?.output.count ?? 0)
            c.receive()
            c.received.removeAll(keepingCapacity: true)
        }
        #expect(c.lineCount == 60, "\(c.lineCount) replies")
        #expect(held <= 4 << 20, "the server held \(held) bytes of output for a client sent 18 MB")
    }

    /// A client that sends its lines and hangs up at once (no reply can
    /// reach it): every line it sent is still handled, then it is gone.
    @Test func aClientThatHangsUpHasEveryLineHandled() throws {
        let server = try Self.server("hangup")
        var c: RawClient? = try RawClient(server.path)
        var now = 0.0
        server.serve(timeoutMs: 0, now: now) { _, line in Self.reply(line) }  // accepts it
        c!.send((0..<300).map { "line \($0)\n" }.joined())
        c = nil  // closed both ways
        var handled: [String] = []
        for _ in 0..<100 where !(handled.count == 300 && server.clients.isEmpty) {
            now += 0.001
            server.serve(timeoutMs: 1, now: now) { _, line in handled.append(line); return Self.reply(line) }
        }
        #expect(handled == (0..<300).map { "line \($0)" })
        #expect(server.clients.isEmpty)
    }

    /// Lines are handled in turns: one client's thousand lines do not keep
    /// another client's one waiting until they are all done.
    @Test func linesAreHandledInTurns() throws {
        let server = try Self.server("turns")
        let busy = try RawClient(server.path)
        let other = try RawClient(server.path)
        var now = 0.0
        server.serve(timeoutMs: 0, now: now) { _, line in Self.reply(line) }  // accepts both
        busy.send(String(repeating: "x\n", count: 1000))
        other.send("y\n")
        var order: [String] = []
        for _ in 0..<100 where order.count < 1001 {
            now += 0.001
            server.serve(timeoutMs: 1, now: now) { _, line in order.append(line); return Self.reply(line) }
        }
        let y = try #require(order.firstIndex(of: "y"), "\(order.count) lines handled")
        #expect(y <= server.limits.linesPerTurn, "the other client's line came after \(y) of the busy one's")
        #expect(order.count == 1001)
    }

    /// At most `monitors` clients stream events, so a full table always has
    /// a client to close for a new one: a crowd of monitors and idle
    /// connections cannot lock the operator out.
    @Test func aCrowdCannotLockTheOperatorOut() throws {
        let server = try Self.server("crowd")
        server.limits.clients = 6
        server.limits.monitors = 3
        var now = 0.0
        func turn(_ clients: [RawClient]) { Self.turn(server, now: &now, step: 0.01, timeoutMs: 1, reading: clients) }
        var crowd: [RawClient] = []
        for _ in 0..<5 {
            let c = try RawClient(server.path)
            c.send("monitor\n")
            crowd.append(c)
            turn(crowd)
        }
        turn(crowd)
        #expect(crowd.map { $0.lines.first ?? "" }.filter { $0 == "{\"ok\":true}" }.count == 3)
        #expect(crowd.map { $0.lines.first ?? "" }.filter { $0.contains("too_many_monitors") }.count == 2)
        for _ in 0..<20 {
            crowd.append(try RawClient(server.path))
            turn(crowd)
        }
        let operatorClient = try RawClient(server.path)
        operatorClient.send("version\n")
        for _ in 0..<5 { turn(crowd + [operatorClient]) }
        #expect(operatorClient.lines == ["{\"echo\":\"version\"}"])
        #expect(server.clients.filter { !$0.closing }.count <= 6)
        #expect(server.clients.filter { $0.monitoring && !$0.closing }.count == 3, "the monitors are kept")
    }

    /// A closed client with output it does not take: not polled for input
    /// (its bytes must not wake the loop), and gone after `closingSeconds`.
    @Test func aClosedClientThatDoesNotReadNeitherSpinsNorStays() throws {
        let server = try Self.server("closing")
        server.limits.queuedBytes = 64 << 10
        let c = try RawClient(server.path)
        var now = 0.0
        // Replies it never reads: its socket buffer fills, the rest stays queued.
        c.send(String(repeating: "big 200000\n", count: 40))
        for _ in 0..<50 {
            now += 0.001
            server.serve(timeoutMs: 0, now: now) { _, line in Self.reply(line) }
        }
        let client = try #require(server.clients.first)
        #expect(client.queued > 0)
        // Idle: closed with its output kept.
        now += server.limits.idleSeconds + 1
        server.serve(timeoutMs: 0, now: now) { _, line in Self.reply(line) }
        #expect(client.closing && server.clients.count == 1)
        // Whatever the queue limit, a closed client's input is not read.
        server.limits.queuedBytes = 1 << 30
        c.send("more input\n")
        let woke = server.serve(timeoutMs: 30, now: now) { _, line in Issue.record("handled '\(line)' after close"); return [] }
        #expect(woke == 0, "poll reported the closed client's input")
        now += server.limits.closingSeconds + 1
        server.serve(timeoutMs: 0, now: now) { _, _ in [] }
        #expect(server.clients.isEmpty)
    }

    /// A client that sends its lines and ends its input (a shell pipe) gets
    /// every reply, then end of file; and the server knows who it is.
    @Test func endOfInputStillGetsTheReplies() throws {
        let server = try Self.server("eof")
        let c = try RawClient(server.path)
        c.send(String(repeating: "one\ntwo\n", count: 100) + "last, without its newline")
        shutdown(c.fd, Int32(SHUT_WR))
        var now = 0.0
        var peers: [ControlServer.Peer?] = []
        for _ in 0..<200 where !c.ended {
            Self.turn(server, now: &now, timeoutMs: 1, reading: [c]) { client, line in peers.append(client.peer); return Self.reply(line) }
        }
        #expect(c.ended && c.lines.count == 201)
        #expect(c.lines.last == "{\"echo\":\"last, without its newline\"}")
        #expect(peers.first??.uid == getuid() && peers.first??.pid == getpid())
        #expect(server.clients.isEmpty)
    }

    /// A monitor that asks for a reply larger than the output limit (`sa
    /// list` on a big SAD) keeps its events: the limit is on events it
    /// does not read, not on what it asked for (before: the next event
    /// closed it). One that then leaves its events unread is still closed.
    @Test func aMonitorsOwnLargeReplyDoesNotCountAgainstItsEvents() throws {
        let server = try Self.server("monitor-big")
        server.limits.queuedBytes = 64 << 10
        let c = try RawClient(server.path)
        c.send("monitor\nbig 3000000\n")
        var now = 0.0
        func turn() { Self.turn(server, now: &now) }
        for _ in 0..<5 { turn() }
        let m = try #require(server.clients.first)
        #expect(m.monitoring && m.queued > server.limits.queuedBytes, "queued \(m.queued)")
        for i in 0..<10 { server.broadcast("{\"event\":\(i)}"); turn() }
        #expect(!m.closing, "closed by an event behind its own reply")
        for _ in 0..<2000 where c.lineCount < 12 { turn(); c.receive() }
        #expect(c.lines.count == 12 && c.lines[1].count == 3_000_000, "\(c.lines.map(\.count))")
        #expect(Array(c.lines.suffix(10)) == (0..<10).map { "{\"event\":\($0)}" })
        // Now it stops reading: events beyond the limit close it.
        let event = "{\"event\":\"" + String(repeating: "e", count: 1000) + "\"}"
        for _ in 0..<1000 where !m.closing { server.broadcast(event); turn() }
        #expect(m.closing, "a monitor that does not read its events is closed")
    }

    /// The line limit is on the command, without its newline, whether the
    /// `\r` of a CRLF arrives with its `\n` or before it (before: a line of
    /// exactly the limit was refused when its `\r` came first).
    @Test func theLineLimitDoesNotCountACRLF() throws {
        let server = try Self.server("crlf")
        server.limits.lineBytes = 100
        let c = try RawClient(server.path)
        var now = 0.0
        func turn() { Self.turn(server, now: &now, reading: [c]) }
        let exact = String(repeating: "a", count: 100), over = String(repeating: "o", count: 101)
        for line in [exact, over] {
            c.send(line + "\r")
            for _ in 0..<5 { turn() }
            c.send("\n")
            for _ in 0..<5 { turn() }
        }
        c.send(exact + "\r\n")
        for _ in 0..<5 { turn() }
        #expect(c.lines.count == 3, "\(c.lines)")
        #expect(c.lines.first == "{\"echo\":\"\(exact)\"}")
        #expect(c.lines.dropFirst().first?.contains("line_too_long") == true)
        #expect(c.lines.last == "{\"echo\":\"\(exact)\"}")
    }
}
