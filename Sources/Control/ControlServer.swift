// The control socket: a UNIX stream socket served by the control thread
// (never a worker) with poll(2), one command per line in, one JSON object
// per line out. Every limit a hostile client could push against is bounded
// and answered with an error, never a crash or a stall of the gateway:
// line length, number of clients, idle time, and how much unread output a
// client may leave queued.

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
        /// Seconds a client may stay silent (monitors excepted).
        public var idleSeconds = 300.0
        /// Replies and events queued for a client that does not read.
        public var queuedBytes = 4 * 1024 * 1024
        public init() {}
    }

    /// A client's batch (`Client.batch`), which a line the server refuses
    /// itself (too long) must fail: a batch commits whole or not at all.
    public protocol Batch: AnyObject {
        func fail(_ reason: String)
    }

    /// One connected client.
    public final class Client {
        let fd: Int32
        var input: [UInt8] = []
        var output: [UInt8] = []
        var outputSent = 0
        var lastActive: Double
        /// Streams events (`monitor`) until it leaves.
        public var monitoring = false
        /// Inside `begin` … `commit`/`abort`: the session keeps its batch here.
        public var batch: AnyObject? = nil
        var closing = false
        /// Discarding the rest of an over-long line.
        var skippingLine = false
        init(fd: Int32, now: Double) { self.fd = fd; lastActive = now }
    }

    public let path: String
    private let listener: Int32
    public private(set) var clients: [Client] = []
    public var limits = Limits()

    /// Binds `path` with mode 0660. A live socket there is an error (another
    /// gateway); a stale one (nobody accepts) is replaced.
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
        if access(path, F_OK) == 0 {
            if Self.isLive(&address) {
                throw ControlSocketError(message: "a gateway is already listening on \(path); stop it or give another --control PATH")
            }
            unlink(path)
        }
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw ControlSocketError(message: "socket: \(Self.errnoText())") }
        // Never world-accessible, not even between bind and chmod.
        let oldMask = umask(0o117)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        umask(oldMask)
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
        for c in clients { close(c.fd) }
        close(listener)
        unlink(path)
    }

    /// Waits up to `timeoutMs` for activity, then accepts clients, reads
    /// their lines and hands each complete one to `handle`, which returns the
    /// reply lines; writes what it can without blocking; closes clients that
    /// left, misbehaved or idled out.
    public func serve(timeoutMs: Int32, now: Double, handle: (Client, String) -> [String]) {
        var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0)]
        for c in clients {
            var events = Int16(POLLIN)
            if c.outputSent < c.output.count { events |= Int16(POLLOUT) }
            fds.append(pollfd(fd: c.fd, events: events, revents: 0))
        }
        let ready = poll(&fds, nfds_t(fds.count), timeoutMs)
        if ready > 0 {
            for (i, c) in clients.enumerated() where fds[i + 1].revents != 0 {
                let revents = fds[i + 1].revents
                if revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { read(c, now: now, handle: handle) }
                if revents & Int16(POLLOUT) != 0 { flush(c) }
            }
            if fds[0].revents & Int16(POLLIN) != 0 { accept(now: now) }
        }
        for c in clients where !c.monitoring && !c.closing && now - c.lastActive > limits.idleSeconds {
            send(c, ControlReply.error("idle", "no command for \(Int(limits.idleSeconds)) s; closing"))
            c.closing = true
        }
        for c in clients { flush(c) }
        clients.removeAll { c in
            let done = c.closing && c.outputSent >= c.output.count
            if done { close(c.fd) }
            return done
        }
    }

    /// Queues one line (a JSON object) for `client`.
    public func send(_ client: Client, _ line: String) {
        if client.output.count - client.outputSent + line.utf8.count + 1 > limits.queuedBytes {
            // It does not read: drop it rather than queue without bound.
            client.output.removeAll()
            client.outputSent = 0
            client.closing = true
            return
        }
        client.output.append(contentsOf: line.utf8)
        client.output.append(0x0A)
    }

    /// Queues `line` for every monitoring client.
    public func broadcast(_ line: String) {
        for c in clients where c.monitoring && !c.closing { send(c, line) }
    }

    private func accept(now: Double) {
        while true {
            let fd = Glibc.accept(listener, nil, nil)
            if fd < 0 { return }
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            let c = Client(fd: fd, now: now)
            let open = clients.filter { !$0.closing }
            if open.count >= limits.clients {
                // Full: make room by closing the client silent the longest
                // (not a monitor, not inside a batch), so idle connections
                // can never lock the operator out.
                if let victim = open.filter({ !$0.monitoring && $0.batch == nil }).min(by: { $0.lastActive < $1.lastActive }) {
                    send(victim, ControlReply.error("evicted", "\(limits.clients) clients are connected; closing the one idle the longest"))
                    victim.closing = true
                } else {
                    send(c, ControlReply.error("too_many_clients", "\(limits.clients) clients are busy; try again later"))
                    c.closing = true
                }
            }
            clients.append(c)
        }
    }

    private func read(_ c: Client, now: Double, handle: (Client, String) -> [String]) {
        var buffer = [UInt8](repeating: 0, count: 16384)
        while !c.closing {
            let n = buffer.withUnsafeMutableBytes { recv(c.fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { c.closing = true; c.output.removeAll(); c.outputSent = 0; return }
            if n < 0 {
                if errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR { return }
                c.closing = true; c.output.removeAll(); c.outputSent = 0
                return
            }
            c.lastActive = now
            for byte in buffer[0..<n] {
                if byte == 0x0A {
                    if c.skippingLine {
                        c.skippingLine = false
                    } else {
                        var bytes = c.input
                        if bytes.last == 0x0D { bytes.removeLast() }
                        let line = String(decoding: bytes, as: UTF8.self)
                        for reply in handle(c, line) { send(c, reply) }
                    }
                    c.input.removeAll(keepingCapacity: true)
                    if c.closing { return }
                } else if !c.skippingLine {
                    if c.input.count >= limits.lineBytes {
                        let why = "a command line is at most \(limits.lineBytes) bytes; the rest of this line is ignored"
                        (c.batch as? Batch)?.fail("line_too_long: " + why)
                        send(c, ControlReply.error("line_too_long", why))
                        c.input.removeAll()
                        c.skippingLine = true
                    } else {
                        c.input.append(byte)
                    }
                }
            }
        }
    }

    private func flush(_ c: Client) {
        while c.outputSent < c.output.count {
            let n = c.output[c.outputSent...].withUnsafeBytes { Glibc.send(c.fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n <= 0 {
                if n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                    c.closing = true; c.output.removeAll(); c.outputSent = 0
                }
                return
            }
            c.outputSent += n
        }
        c.output.removeAll(keepingCapacity: true)
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
            mkdir(prefix, 0o750)  // EEXIST is fine; a real failure shows at bind
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
