// `sluicectl import-secgw FILE`: a DPDK ipsec-secgw configuration file as
// Sluice commands. The translation is `SecgwImport`'s; this file reads the
// file, prints the commands and the notes, and picks the exit status.

import ArgumentParser
import Command
import Crypto
import Foundation

struct ImportSecgw: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "import-secgw",
        abstract: "Translate an ipsec-secgw configuration file (sp, sa, rt, neigh) into Sluice commands.",
        discussion: """
            The commands go to standard output (or --output); notes on what could not be carried over, or \
            was carried over changed, go to standard error as 'sluicectl: note: FILE:LINE: …'. \
            secgw's port roles are command-line options (-p, -u): give the unprotected ports with \
            --unprotected-ports, else they are guessed from where the SAs' peers are routed.
            Exit status: 0 everything was translated (notes may still describe changes); 1 something was \
            left out (an unsupported algorithm, an unreadable line, …: the notes say what); 2 the file could \
            not be read or the output not written.
            """
    )

    @Argument(help: "The ipsec-secgw configuration file (what its -f option takes).")
    var file: String

    @Option(name: .customLong("unprotected-ports"),
            help: ArgumentHelp("secgw's -u ports, as a list such as 2,3: these get role unprotected, the others protected.",
                               valueName: "LIST"))
    var unprotectedPorts: String?

    @Option(name: [.short, .long], help: "Write the commands to FILE instead of standard output.")
    var output: String?

    /// `--unprotected-ports` as port ids.
    func ports() throws -> Set<UInt16>? {
        guard let unprotectedPorts else { return nil }
        var ports: Set<UInt16> = []
        for word in unprotectedPorts.split(separator: ",", omittingEmptySubsequences: false) {
            let text = word.trimmingCharacters(in: .whitespaces)
            guard let port = UInt16(text), CommandParser.portIDs.contains(port) else {
                throw ValidationError("bad port '\(text)' in --unprotected-ports: expected numbers "
                                      + "\(CommandParser.portIDs.lowerBound)…\(CommandParser.portIDs.upperBound) "
                                      + "separated by commas, such as 2,3")
            }
            ports.insert(port)
        }
        return ports
    }

    func validate() throws { _ = try ports() }

    /// Writes `text` to `path` readable by its owner only (mode 0600, the
    /// translation holds every SA's key), atomically: a temporary file in
    /// the same directory, renamed over `path` once complete.
    static func writePrivately(_ text: String, to path: String) throws {
        var template = Array((path + ".XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        let temporary = String(cString: template)
        var bytes = Array(text.utf8)
        defer { SecretBytes.wipe(&bytes) }
        var written = 0
        var failure: Int32 = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress! + written, $0.count - written) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { failure = errno; break }
            written += n
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        if close(fd) != 0 && failure == 0 { failure = errno }
        if failure == 0 && rename(temporary, path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary)
            throw POSIXError(POSIXErrorCode(rawValue: failure) ?? .EIO)
        }
    }

    func run() throws {
        let text: String
        do {
            text = try String(contentsOfFile: file, encoding: .utf8)
        } catch {
            printError("sluicectl: error: cannot read \(file): \(error.localizedDescription)")
            throw ExitCode(2)
        }
        let translation = SecgwImport.translate(text, name: file, unprotectedPorts: try ports())
        let body = "# Translated from the ipsec-secgw file \(file) by sluicectl import-secgw.\n" + translation.text
        if let output {
            do {
                try Self.writePrivately(body, to: output)
            } catch {
                printError("sluicectl: error: cannot write \(output): \(error.localizedDescription)")
                throw ExitCode(2)
            }
        } else {
            print(body, terminator: "")
        }
        for note in translation.notes { printError("sluicectl: note: \(note)") }
        for error in translation.errors { printError("sluicectl: error: \(error)") }
        if !translation.isComplete {
            printError("sluicectl: some of \(file) was left out (see the notes above)")
            throw ExitCode.failure
        }
    }
}
