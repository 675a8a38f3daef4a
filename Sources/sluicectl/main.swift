// sluicectl: the operator's tool. `sluicectl WORDS…` sends one command to a
// running gateway's control socket, `sluicectl -f FILE` a file as one atomic
// batch; `check` validates config files offline with the same parser and
// rules the gateway uses.

import ArgumentParser
import Command
import Foundation
import Glibc

struct Sluicectl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluicectl",
        abstract: "Control and check a Sluice IPsec gateway.",
        subcommands: [Send.self, Check.self, ImportSecgw.self],
        defaultSubcommand: Send.self
    )
}

struct Send: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send a command (or, with -f, a file as one batch) to a running gateway.",
        discussion: "Examples: sluicectl sp list; sluicectl stats core 1; sluicectl -f changes.conf; "
            + "sluicectl monitor (streams ACQUIRE and EXPIRE events until interrupted)."
    )

    @Option(name: .long, help: "The gateway's control socket.")
    var socket = "/run/sluice/sluice.sock"

    @Flag(name: .long, help: "Print the gateway's JSON replies as they are.")
    var json = false

    @Option(name: .short, help: "Send FILE's lines between begin and commit: all are applied or none.")
    var file: String?

    @Argument(parsing: .captureForPassthrough, help: "The command, e.g. 'sp list' or 'sa del spi 0x1000'.")
    var words: [String] = []

    func validate() throws {
        if file == nil && words.isEmpty { throw ValidationError("give a command, or -f FILE") }
        if file != nil && !words.isEmpty { throw ValidationError("give either a command or -f FILE, not both") }
    }

    func run() throws {
        let connection: Connection
        do { connection = try Connection(path: socket) } catch {
            printError("sluicectl: error: \(error)")
            throw ExitCode(2)
        }
        var lines: [String]
        // With -f: the file line each of `lines` came from (0: begin, commit).
        var fileLines: [Int] = []
        if let file {
            let text: String
            do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
                printError("sluicectl: error: cannot read \(file): \(error.localizedDescription)")
                throw ExitCode.failure
            }
            // Lines and words as a configuration file's (`sluice --config`):
            // lines end at "\n", "\r\n" or a lone "\r"; blank and comment-only
            // lines are not sent.
            let numbered = CommandText.lines(text).enumerated().compactMap { index, line in
                CommandText.words(line).first.map { (number: index + 1, line: String(line), verb: String($0)) }
            }
            // The file is the batch: its own begin, commit or abort would end it early.
            for l in numbered {
                if ["begin", "commit", "abort"].contains(l.verb) {
                    printError("sluicectl: error: \(file):\(l.number): '\(l.verb)' cannot be in a file sent with -f (the whole file is one batch); nothing sent")
                    throw ExitCode.failure
                }
            }
            lines = ["begin"] + numbered.map(\.line) + ["commit"]
            fileLines = [0] + numbered.map(\.number) + [0]
        } else {
            lines = [words.joined(separator: " ")]
        }
        var failed = false
        for (n, line) in lines.enumerated() {
            try connection.write(line + "\n")
            guard let reply = try connection.readLine() else {
                printError("sluicectl: error: the gateway closed the connection")
                throw ExitCode.failure
            }
            let object = (try? JSONSerialization.jsonObject(with: Data(reply.utf8))) as? [String: Any] ?? [:]
            let ok = object["ok"] as? Bool ?? false
            if !ok {
                let error = object["error"] as? [String: Any]
                let message = error?["message"] as? String ?? reply
                // The file and line number, not the line: it may carry a key.
                printError("sluicectl: error: " + (file != nil && n > 0 && n < lines.count - 1 ? "\(file!):\(fileLines[n]): " : "") + message)
                failed = true
                if file != nil && n < lines.count - 1 { continue }  // the commit reports the batch's fate
            }
            // Batched lines only say "batched"; the commit's reply is the result.
            if ok && (file == nil || n == lines.count - 1) {
                print(json ? reply : printable(Self.human(object)))
            }
        }
        if lines == ["monitor"] && !failed {
            while let event = try connection.readLine() { print(json ? event : printable(Self.human(event))) }
        }
        if failed { throw ExitCode.failure }
    }

    /// A reply for people: the config text or command lines as they are,
    /// other fields as `key: value`.
    static func human(_ object: [String: Any]) -> String {
        if let config = object["config"] as? String { return config.hasSuffix("\n") ? String(config.dropLast()) : config }
        for key in ["policies", "sas"] {
            if let list = object[key] as? [[String: Any]] {
                return list.map { item in
                    let command = item["command"] as? String ?? ""
                    let extra = item.keys.sorted().filter { !["command", "id", "priority", "spi", "dir"].contains($0) }
                        .map { "\($0)=\(item[$0]!)" }
                    return extra.isEmpty ? command : command + "   # " + extra.joined(separator: " ")
                }.joined(separator: "\n")
            }
        }
        if let commands = object["commands"] as? [String] { return commands.joined(separator: "\n") }
        let fields = object.keys.sorted().filter { $0 != "ok" }
        if fields.isEmpty { return "ok" }
        return fields.map { key -> String in
            if let nested = object[key] as? [String: Any] {
                return "\(key): " + nested.keys.sorted().map { "\($0)=\(nested[$0]!)" }.joined(separator: " ")
            }
            return "\(key): \(object[key]!)"
        }.joined(separator: "\n")
    }

    static func human(_ line: String) -> String {
        guard let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] else { return line }
        return object.keys.sorted().map { "\($0)=\(object[$0]!)" }.joined(separator: " ")
    }
}

/// A connection to the control socket: lines out, lines in.
final class Connection {
    let fd: Int32
    var buffer: [UInt8] = []

    struct Failure: Error, CustomStringConvertible { var description: String }

    init(path: String) throws {
        fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket: \(String(cString: strerror(errno)))") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let capacity = MemoryLayout.size(ofValue: address.sun_path)
        guard path.utf8.count < capacity else { throw Failure(description: "socket path too long: \(path)") }
        withUnsafeMutableBytes(of: &address.sun_path) { b in for (i, c) in path.utf8.enumerated() { b[i] = c } }
        let rc = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard rc == 0 else {
            let why = String(cString: strerror(errno))
            close(fd)
            throw Failure(description: "cannot connect to \(path): \(why) (is sluice running with --control \(path)?)")
        }
    }

    deinit { close(fd) }

    func write(_ text: String) throws {
        var bytes = Array(text.utf8)[...]
        while !bytes.isEmpty {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard n > 0 else { throw Failure(description: "send: \(String(cString: strerror(errno)))") }
            bytes = bytes.dropFirst(n)
        }
    }

    /// The next line, without its newline; nil at end of stream.
    func readLine() throws -> String? {
        while true {
            if let nl = buffer.firstIndex(of: 0x0A) {
                let line = String(decoding: buffer[..<nl], as: UTF8.self)
                buffer.removeSubrange(...nl)
                return line
            }
            var chunk = [UInt8](repeating: 0, count: 65536)
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return nil }
            guard n > 0 else {
                if errno == EINTR { continue }
                throw Failure(description: "recv: \(String(cString: strerror(errno)))")
            }
            buffer += chunk[0..<n]
        }
    }
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Parse and validate configuration files without touching a gateway.",
        discussion: "Each file is checked on its own, as the gateway would load it. Problems are "
            + "printed as FILE:LINE:COLUMN: MESSAGE on standard error."
    )

    @Argument(help: "Configuration files to check.")
    var files: [String]

    func run() throws {
        var failed = false
        for file in files {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                printError("\(file): cannot read: \(error.localizedDescription)")
                failed = true
                continue
            }
            do {
                let config = try GatewayConfig.load(text: text, name: file)
                print(printable("\(file): ok (\(config.ports.count) ports, \(config.neighbors.count) neighbors, "
                      + "\(config.routes.count) routes, \(config.sas.count) SAs, \(config.policies.count) policies)"))
            } catch {
                printError(error.description)
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((printable(line) + "\n").utf8))
}

/// `text` as it may reach a terminal: control characters other than newline
/// and tab, and the bidirectional overrides and isolates, written as `\u{1B}`.
/// A quoted word of a file or a reply could otherwise move the cursor,
/// clear the screen or reorder what the operator reads.
func printable(_ text: String) -> String {
    var out = String.UnicodeScalarView()
    for s in text.unicodeScalars {
        let bidi = (0x202A...0x202E).contains(s.value) || (0x2066...0x2069).contains(s.value)
        if bidi || s.properties.generalCategory == .control && s != "\n" && s != "\t" {
            out.append(contentsOf: "\\u{\(String(s.value, radix: 16, uppercase: true))}".unicodeScalars)
        } else {
            out.append(s)
        }
    }
    return String(out)
}

Sluicectl.main()
