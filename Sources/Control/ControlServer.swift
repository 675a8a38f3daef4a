// The control socket: a UNIX stream socket served by the control thread
// (never a worker) with poll(2), one command per line in, one JSON object
// per line out. Every limit a hostile client could push against is bounded
// and answered with an error, never a crash or a stall of the gateway:
// line length, number of clients and of monitors, idle time, lines handled
// per turn, and output: a client's replies wait in its queue, and while the
// queue is full the server reads nothing more from it (a large reply is
// sent whole; a client that does not read only stops itself); events for
// a monitor that does not read are not kept, the monitor is closed.

import CShims
import Crypto
import Glibc

/// Why the control socket could not be set up.
public struct ControlSocketError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

public final class ControlServer {
    public struct Limits: Sendable {
        /// Longest command line accepted (bytes, without the newline).
        public var lineBytes = 64 * 1024
        /// Clients connected at once; one more closes the one idle the longest.
        public var clients = 64
        /// Clients streaming events (`monitor`) at once: at most half, so
        /// there is always a client to make room for a new one.
        public var monitors = 32
        /// Seconds a client may stay silent (monitors excepted).
        public var idleSeconds = 300.0
        /// Unsent output above which a client's further lines wait (and a
        /// monitor's events are not queued: it is closed).
        public var queuedBytes = 4 * 1024 * 1024
        /// Lines handled for one client before the others get their turn.
        public var linesPerTurn = 64
        /// Seconds a closed client gets to take what was queued for it.
        public var closingSeconds = 5.0
        public init() {}
    }

    /// A client's batch (`Client.batch`), which a line the server refuses
    /// itself (too long) or a close must fail: a batch commits whole or not at all.
    public protocol Batch: AnyObject {
        func fail(_ reason: String)
    }

    /// Who connected (SO_PEERCRED, as of the connect).
    public struct Peer: Sendable, Equatable {
        public var uid: UInt32
        public var gid: UInt32
        public var pid: Int32
        /// Its supplementary groups (none where the kernel would not say).
        public var groups: [UInt32]
    }

    /// One connected client.
    public final class Client {
        let fd: Int32
        /// Nil only where the kernel would not say (then no file is read for it).
        public let peer: Peer?
        unowned let server: ControlServer
        /// Received bytes from `inputStart` on are not handled yet.
        var input: [UInt8] = []
        var inputStart = 0
        var output: [UInt8] = []
        var outputSent = 0
        /// Bytes of output sent or let go since the connect: the stream
        /// position of `output[outputSent]`.
        var streamSent = 0
        /// The stream position just past the last reply queued (not an
        /// event): a monitor's events may queue `Limits.queuedBytes` beyond it.
        var repliesEnd = 0
        var lastActive: Double
        /// Streams events (`monitor`) until it leaves.
        public private(set) var monitoring = false
        /// Inside `begin` … `commit`/`abort`: the session keeps its batch here.
        public var batch: AnyObject? = nil
        /// When it was closed (it gets `closingSeconds` to take its output), or nil.
        var closedAt: Double? = nil
        var closing: Bool { closedAt != nil }
        /// Discarding the rest of an over-long line.
        var skippingLine = false
        /// The client sent end-of-file: its last lines are handled, then it is closed.
        var inputEnded = false
        /// The peer hung up (nothing can reach it): its output is dropped,
        /// and what it sent before is still read and handled.
        var hungUp = false
        /// `input` holds no newline before this index (from `inputStart`).
        private var scanned = 0

        init(fd: Int32, server: ControlServer, now: Double) {
            self.fd = fd
            self.server = server
            lastActive = now
            var uid: UInt32 = 0, gid: UInt32 = 0, pid: Int32 = 0
            var groups = [UInt32](repeating: 0, count: 1024)
            var count = UInt32(groups.count)
            peer = sl_peer_credentials(fd, &uid, &gid, &pid, &groups, &count) == 0
                ? Peer(uid: uid, gid: gid, pid: pid, groups: Array(groups.prefix(Int(count)))) : nil
            // Room for the longest line and one receive: the input never
            // moves to a new buffer, which would leave its bytes behind unwiped.
            input.reserveCapacity(max(server.limits.lineBytes, Self.receiveBytes) + Self.receiveBytes + 2)
        }

        /// What one receive takes at most.
        static let receiveBytes = 65536

        // What clients sent and were sent (`sa add … key`, `show config`)
        // is wiped before its memory goes back to the allocator.
        deinit {
            SecretBytes.wipe(&input)
            SecretBytes.wipe(&output)
        }

        var queued: Int { output.count - outputSent }

        /// Makes it a monitor (`monitor`); false when `Limits.monitors` are streaming already.
        public func startMonitoring() -> Bool {
            if monitoring { return true }
            guard server.clients.count(where: { $0.monitoring && !$0.closing }) < server.limits.monitors else { return false }
            monitoring = true
            return true
        }

        /// The index of the next newline in the unhandled input, or nil.
        func nextNewline() -> Int? {
            let from = max(inputStart, scanned)
            guard let nl = input[from...].firstIndex(of: 0x0A) else {
                scanned = input.count
                return nil
            }
            scanned = nl
            return nl
        }

        /// Drops the handled input (`inputStart` moves to 0), wiped: a line
        /// may have carried a key.
        func compactInput() {
            guard inputStart > 0 else { return }
            input.removePrefixWiping(inputStart)
            scanned = max(0, scanned - inputStart)
            inputStart = 0
        }

        /// A complete line waits to be handled, and may be now (output permitting).
        var hasLine: Bool { !closing && queued <= server.limits.queuedBytes && nextNewline() != nil }

        /// Closes it: nothing more is read or handled. `keepOutput`: what is
        /// queued is still sent (for up to `Limits.closingSeconds`).
        func close(now: Double, keepOutput: Bool) {
            if closedAt == nil {
                closedAt = now
                (batch as? Batch)?.fail("the client closed")
                batch = nil
            }
            if !keepOutput { discardOutput() }
        }

        /// Drops what waits to be sent.
        func discardOutput() {
            streamSent += queued
            SecretBytes.wipe(&output)
            output.removeAll()
            outputSent = 0
        }

        /// Queued bytes that are events, not replies it asked for (an
        /// upper bound: events queued among replies count as replies).
        var queuedEvents: Int { queued - max(0, repliesEnd - streamSent) }
    }

    public let path: String
    private let listener: Int32
    public private(set) var clients: [Client] = []
    public var limits = Limits()
    /// `accept` is not retried before this (the process is out of descriptors).
    private var acceptPausedUntil = -Double.infinity
    /// Connections `accept` failed to take for want of descriptors or memory.
    public private(set) var acceptFailures = 0

    /// Binds `path` with mode 0660. A live socket there is an error (another
    /// gateway); a stale one (nobody accepts) is replaced; anything else
    /// there (a file, a directory, a link) is an error and left as it is.
    public init(path: String) throws(ControlSocketError) {
        self.path = path
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else {
            throw ControlSocketError(message: "control socket path \(path) is longer than \(capacity - 1) bytes")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { b in
            for (i, c) in path.utf8.enumerated() { b[i] = c }
        }
        let directory = path.split(separator: "/", omittingEmptySubsequences: false).dropLast().joined(separator: "/")
        if !directory.isEmpty { Self.makeDirectories(directory) }
        var existing = stat()
        if lstat(path, &existing) == 0 {
            // Only a socket is replaced: a file there is the operator's (a
            // mistyped path), never deleted.
            guard existing.st_mode & S_IFMT == S_IFSOCK else {
                throw ControlSocketError(message: "\(path) exists and is not a socket; give another --control PATH")
            }
            if Self.isLive(&address) {
                throw ControlSocketError(message: "a gateway is already listening on \(path); stop it or give another --control PATH")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(message: "socket: \(Self.errnoText())") }
        // Never world-accessible, not even between bind and chmod: Linux
        // makes the socket file with the socket's own mode (less the umask),
        // so that is set first. (Not the umask: it is the whole process's.)
        fchmod(fd, 0o660)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else {
            let why = Self.errnoText()
            close(fd)
            throw ControlSocketError(message: "cannot bind the control socket \(path): \(why)")
        }
        chmod(path, 0o660)
        guard listen(fd, 64) == 0 else {
            let why = Self.errnoText()
            close(fd); unlink(path)
            throw ControlSocketError(message: "listen on \(path): \(why)")
        }
        listener = fd
        signal(SIGPIPE, SIG_IGN)
    }

    deinit {
        for c in clients { Glibc.close(c.fd) }
        close(listener)
        unlink(path)
    }

    /// Waits up to `timeoutMs` for activity (not at all while a client has
    /// lines waiting), then accepts clients, reads what they sent and hands
    /// each complete line to `handle`, which returns the reply lines
    /// (`Limits.linesPerTurn` per client per call); writes what it can
    /// without blocking; closes clients that left, misbehaved or idled out.
    /// Returns what poll(2) returned.
    @discardableResult
    public func serve(timeoutMs: Int32, now: Double, handle: (Client, String) -> [String]) -> Int32 {
        let listening = now >= acceptPausedUntil
        var fds = [pollfd(fd: listening ? listener : -1, events: Int16(POLLIN), revents: 0)]
        for c in clients {
            // A closed client is only written to; one with a full output
            // queue or a line waiting is not read from.
            let wantsInput = !c.closing && !c.inputEnded && c.queued <= limits.queuedBytes && !c.hasLine
            var events: Int16 = wantsInput ? Int16(POLLIN) : 0
            if c.queued > 0 { events |= Int16(POLLOUT) }
            // A peer that hung up says so at every poll: it is polled only for what it sent.
            fds.append(pollfd(fd: c.hungUp && !wantsInput ? -1 : c.fd, events: events, revents: 0))
        }
        let ready = poll(&fds, nfds_t(fds.count), clients.contains(where: \.hasLine) ? 0 : timeoutMs)
        if ready > 0 {
            for (i, c) in clients.enumerated() where fds[i + 1].revents != 0 {
                let revents = fds[i + 1].revents
                if revents & Int16(POLLHUP | POLLERR) != 0 {
                    // Gone both ways: nothing more reaches it, but the lines
                    // it sent before it left are still handled.
                    c.hungUp = true
                    c.discardOutput()
                    if c.closing { continue }
                }
                if revents & Int16(POLLOUT) != 0 { flush(c, now: now) }
                if revents & Int16(POLLIN) != 0 && !c.closing { read(c, now: now) }
            }
            if fds[0].revents & Int16(POLLIN) != 0 { accept(now: now) }
        }
        for c in clients where !c.closing { handleLines(c, now: now, handle: handle) }
        for c in clients where !c.monitoring && !c.closing && now - c.lastActive > limits.idleSeconds {
            send(c, ControlReply.error("idle", "no command for \(Int(limits.idleSeconds)) s; closing"))
            c.close(now: now, keepOutput: true)
        }
        for c in clients { flush(c, now: now) }
        clients.removeAll { c in
            guard let closedAt = c.closedAt, c.queued == 0 || now - closedAt > limits.closingSeconds else { return false }
            Glibc.close(c.fd)
            return true
        }
        return ready
    }

    /// Queues one reply line (a JSON object) for `client`, whatever its
    /// size: the client asked for it, and reads nothing more until the
    /// queue is back under `Limits.queuedBytes`.
    public func send(_ client: Client, _ line: String) {
        enqueue(client, line)
        client.repliesEnd = client.streamSent + client.queued
    }

    private func enqueue(_ client: Client, _ line: String) {
        // Closed with nothing left to send, or hung up: it would never go.
        guard (!client.closing || client.queued > 0) && !client.hungUp else { return }
        let needed = client.output.count + line.utf8.count + 1
        if needed > client.output.capacity {
            // Moved to a larger buffer by hand: the one let go is wiped first.
            var larger: [UInt8] = []
            larger.reserveCapacity(max(needed, client.output.capacity * 2))
            larger.append(contentsOf: client.output)
            SecretBytes.wipe(&client.output)
            client.output = larger
        }
        client.output.append(contentsOf: line.utf8)
        client.output.append(0x0A)
    }

    /// Queues `line` for every monitoring client; one whose queue is full
    /// of events does not read them, and is closed. Replies it asked for
    /// (`sa list` from a monitor, larger than the limit) do not count.
    public func broadcast(_ line: String) {
        for c in clients where c.monitoring && !c.closing {
            if c.queuedEvents + line.utf8.count + 1 > limits.queuedBytes {
                // Nothing kept: it goes at the next turn, whatever the time it closed.
                c.close(now: c.lastActive, keepOutput: false)
            } else {
                enqueue(c, line)
            }
        }
    }

    private func accept(now: Double) {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd < 0 {
                if errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM {
                    // The listener stays readable: look again later, not in a spin.
                    acceptFailures += 1
                    acceptPausedUntil = now + 0.1
                }
                return
            }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let c = Client(fd: fd, server: self, now: now)
            let open = clients.filter { !$0.closing }
            if open.count >= limits.clients {
                // Full: make room by closing the client silent the longest,
                // one without a batch if there is one (a batch it held is
                // failed, nothing of it applied). Monitors are at most half
                // the clients, so there is always one: an idle or hostile
                // crowd can never lock the operator out.
                let candidates = open.filter { !$0.monitoring }
                let victim = candidates.filter { $0.batch == nil }.min { $0.lastActive < $1.lastActive }
                    ?? candidates.min { $0.lastActive < $1.lastActive }
                if let victim {
                    send(victim, ControlReply.error("evicted", "\(limits.clients) clients are connected; closing the one idle the longest"))
                    victim.close(now: now, keepOutput: true)
                } else {
                    send(c, ControlReply.error("too_many_clients", "\(limits.clients) clients are busy; try again later"))
                    c.close(now: now, keepOutput: true)
                }
            }
            clients.append(c)
        }
    }

    /// Takes what the client sent (one receive: the others get their turn).
    private func read(_ c: Client, now: Double) {
        c.compactInput()
        let old = c.input.count
        c.input.append(contentsOf: repeatElement(0, count: Client.receiveBytes))
        let n = c.input[old...].withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
        c.input.removeSubrange((old + max(n, 0))...)
        if n == 0 {
            c.inputEnded = true
            // A last line without its newline is a line all the same.
            if c.inputStart < c.input.count && !c.skippingLine { c.input.append(0x0A) }
            return
        }
        if n < 0 {
            if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR { c.close(now: now, keepOutput: false) }
            return
        }
        c.lastActive = now
        // A line that outgrew the limit: refused now, its rest dropped as it
        // comes. (A `\r` at the end may be the first half of its newline.)
        let pending = c.input.count - c.inputStart
        if c.skippingLine || (c.nextNewline() == nil
                              && pending > limits.lineBytes + (c.input.last == 0x0D ? 1 : 0)) {
            dropLongLine(c)
        }
    }

    /// Refuses the over-long line at the head of the client's input (once)
    /// and drops it up to its newline.
    private func dropLongLine(_ c: Client) {
        if !c.skippingLine {
            let why = "a command line is at most \(limits.lineBytes) bytes; the rest of this line is ignored"
            (c.batch as? Batch)?.fail("line_too_long: " + why)
            send(c, ControlReply.error("line_too_long", why))
            c.skippingLine = true
        }
        if let nl = c.nextNewline() {
            c.inputStart = nl + 1
            c.skippingLine = false
        } else {
            c.inputStart = c.input.count
            c.compactInput()
        }
    }

    /// Hands up to `Limits.linesPerTurn` of the client's complete lines to
    /// `handle`, while its output queue has room.
    private func handleLines(_ c: Client, now: Double, handle: (Client, String) -> [String]) {
        var turn = 0
        while turn < limits.linesPerTurn && !c.closing && c.queued <= limits.queuedBytes {
            if c.skippingLine {
                dropLongLine(c)
                if c.skippingLine {
                    // Its newline has not come yet (and never will, after end of input).
                    if c.inputEnded { c.close(now: now, keepOutput: true) }
                    break
                }
                continue
            }
            guard let nl = c.nextNewline() else {
                // Its last line handled: a client that ended its input is done.
                if c.inputEnded { c.close(now: now, keepOutput: true) }
                break
            }
            var end = nl
            if end > c.inputStart && c.input[end - 1] == 0x0D { end -= 1 }
            if end - c.inputStart > limits.lineBytes {
                dropLongLine(c)
                continue
            }
            let line = String(decoding: c.input[c.inputStart..<end], as: UTF8.self)
            c.inputStart = nl + 1
            turn += 1
            for reply in handle(c, line) { send(c, reply) }
        }
    }

    private func flush(_ c: Client, now: Double) {
        while c.outputSent < c.output.count {
            let n = c.output[c.outputSent...].withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                    c.close(now: now, keepOutput: false)
                } else if c.outputSent >= 1 << 20 && c.outputSent * 2 >= c.output.count {
                    // What went out goes, or a client that reads as it asks
                    // would keep everything it was ever sent.
                    c.output.removePrefixWiping(c.outputSent)
                    c.outputSent = 0
                }
                return
            }
            c.outputSent += n
            c.streamSent += n
        }
        SecretBytes.wipe(&c.output)
        c.output.removeAll(keepingCapacity: c.output.capacity <= 1 << 20)
        c.outputSent = 0
    }

    private static func isLive(_ address: inout sockaddr_un) -> Bool {
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        } == 0
    }

    private static func makeDirectories(_ path: String) {
        var prefix = path.hasPrefix("/") ? "" : "."
        for part in path.split(separator: "/") {
            prefix += "/" + part
            // EEXIST is fine (an operator's directory keeps its mode); a real
            // failure shows at bind. One made here is 0750 whatever the umask.
            if mkdir(prefix, 0o750) == 0 { chmod(prefix, 0o750) }
        }
    }

    static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// The JSON lines the socket speaks.
public enum ControlReply {
    public static func error(_ code: String, _ message: String) -> String {
        "{\"ok\":false,\"error\":{\"code\":\(quote(code)),\"message\":\(quote(message))}}"
    }

    /// `{"ok":true,…}` with `fields` (already JSON values) in the given order.
    public static func ok(_ fields: [(String, String)] = []) -> String {
        "{\"ok\":true" + fields.map { ",\(quote($0.0)):\($0.1)" }.joined() + "}"
    }

    /// A JSON string literal.
    public static func quote(_ s: String) -> String {
        var out = "\""
        for u in s.unicodeScalars {
            switch u {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            default:
                if u.value < 0x20 {
                    let hex = String(u.value, radix: 16)
                    out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
                } else {
                    out.unicodeScalars.append(u)
                }
            }
        }
        return out + "\""
    }
}

extension Array where Element == UInt8 {
    /// Removes the first `n` bytes, leaving no copy of what was removed, or
    /// of what moved down in its place, in the buffer.
    mutating func removePrefixWiping(_ n: Int) {
        guard n > 0 else { return }
        let total = count
        withUnsafeMutableBytes { b in
            let base = b.baseAddress!
            memmove(base, base + n, total - n)
            explicit_bzero(base + (total - n), n)
        }
        removeLast(n)
    }
}
