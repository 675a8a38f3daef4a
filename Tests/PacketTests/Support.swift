// Helpers shared by the Packet tests: a deliberately simple frame parser (the
// oracle the builder is checked against), temporary files, and running the
// independent tools (scapy, tshark) as subprocesses.

import Glibc
import Packet

// MARK: - A minimal frame parser, written from the RFCs, independent of the builder

struct ParsedFrame {
    var destinationMAC: [UInt8] = []
    var sourceMAC: [UInt8] = []
    var vlanTPID: UInt16?
    var vlanTCI: UInt16?
    var etherType: UInt16 = 0
    var networkOffset = 0
    var ipVersion = 0
    // IPv4
    var ihl = 0
    var tos: UInt8 = 0
    var totalLength = 0
    var identification: UInt16 = 0
    var flagsFragment: UInt16 = 0
    var ttl: UInt8 = 0
    var ipv4HeaderChecksumResult: UInt16 = 0xBEEF  // checksum over the header: 0 when valid
    var ipv4Options: [UInt8] = []
    // IPv6
    var trafficClass: UInt8 = 0
    var flowLabel: UInt32 = 0
    var payloadLength = 0
    var hopLimit: UInt8 = 0
    // Both
    var proto: UInt8 = 0
    var source: [UInt8] = []
    var destination: [UInt8] = []
    var transportOffset = 0
    var transportBytes: [UInt8] = []
    // L4
    var sourcePort: UInt16 = 0
    var destinationPort: UInt16 = 0
    var udpLength = 0
    var l4ChecksumField: UInt16 = 0
    /// Checksum over pseudo-header + segment: 0 when the L4 checksum is valid.
    var l4ChecksumResult: UInt16 = 0xBEEF
    var payload: [UInt8] = []
}

func be16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
func be32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(be16(b, i)) << 16 | UInt32(be16(b, i + 2)) }

/// Straightforward RFC 1071 reference: 16-bit big-endian words summed in a
/// UInt64, odd byte padded, folded, complemented.
func referenceChecksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt64 = 0
    var i = 0
    while i + 1 < bytes.count { sum += UInt64(be16(bytes, i)); i += 2 }
    if i < bytes.count { sum += UInt64(bytes[i]) << 8 }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return ~UInt16(sum)
}

/// Parses Ethernet [VLAN] IPv4|IPv6 [UDP|TCP]; nil on anything unexpected.
func parseFrame(_ f: [UInt8]) -> ParsedFrame? {
    var p = ParsedFrame()
    guard f.count >= 14 else { return nil }
    p.destinationMAC = Array(f[0..<6]); p.sourceMAC = Array(f[6..<12])
    var o = 12
    var type = be16(f, o)
    if type == 0x8100 || type == 0x88A8 {
        guard f.count >= 18 else { return nil }
        p.vlanTPID = type; p.vlanTCI = be16(f, 14); o = 16; type = be16(f, o)
    }
    p.etherType = type
    o += 2
    p.networkOffset = o
    guard f.count > o else { return nil }
    p.ipVersion = Int(f[o] >> 4)
    var pseudo: [UInt8] = []
    if type == 0x0800 {
        guard p.ipVersion == 4 else { return nil }
        p.ihl = Int(f[o] & 0xF) * 4
        guard p.ihl >= 20, f.count >= o + p.ihl else { return nil }
        p.tos = f[o + 1]; p.totalLength = Int(be16(f, o + 2)); p.identification = be16(f, o + 4)
        p.flagsFragment = be16(f, o + 6); p.ttl = f[o + 8]; p.proto = f[o + 9]
        p.source = Array(f[o + 12 ..< o + 16]); p.destination = Array(f[o + 16 ..< o + 20])
        p.ipv4Options = Array(f[o + 20 ..< o + p.ihl])
        p.ipv4HeaderChecksumResult = referenceChecksum(Array(f[o ..< o + p.ihl]))
        guard p.totalLength >= p.ihl, o + p.totalLength <= f.count else { return nil }
        p.transportOffset = o + p.ihl
        p.transportBytes = Array(f[o + p.ihl ..< o + p.totalLength])
        pseudo = p.source + p.destination + [0, p.proto, UInt8(p.transportBytes.count >> 8), UInt8(p.transportBytes.count & 0xFF)]
    } else if type == 0x86DD {
        guard p.ipVersion == 6, f.count >= o + 40 else { return nil }
        let w = be32(f, o)
        p.trafficClass = UInt8((w >> 20) & 0xFF); p.flowLabel = w & 0xFFFFF
        p.payloadLength = Int(be16(f, o + 4)); p.proto = f[o + 6]; p.hopLimit = f[o + 7]
        p.source = Array(f[o + 8 ..< o + 24]); p.destination = Array(f[o + 24 ..< o + 40])
        guard o + 40 + p.payloadLength <= f.count else { return nil }
        p.transportOffset = o + 40
        p.transportBytes = Array(f[o + 40 ..< o + 40 + p.payloadLength])
        let n = p.transportBytes.count
        pseudo = p.source + p.destination + [UInt8(n >> 24 & 0xFF), UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), 0, 0, 0, p.proto]
    } else {
        return nil
    }
    let t = p.transportBytes
    switch p.proto {
    case 17:
        guard t.count >= 8 else { return nil }
        p.sourcePort = be16(t, 0); p.destinationPort = be16(t, 2); p.udpLength = Int(be16(t, 4))
        p.l4ChecksumField = be16(t, 6); p.payload = Array(t[8...])
        p.l4ChecksumResult = referenceChecksum(pseudo + t)
    case 6:
        guard t.count >= 20 else { return nil }
        p.sourcePort = be16(t, 0); p.destinationPort = be16(t, 2)
        let dataOffset = Int(t[12] >> 4) * 4
        guard dataOffset >= 20, dataOffset <= t.count else { return nil }
        p.l4ChecksumField = be16(t, 16); p.payload = Array(t[dataOffset...])
        p.l4ChecksumResult = referenceChecksum(pseudo + t)
    default:
        p.payload = t
    }
    return p
}

// MARK: - Files and subprocesses

/// A fresh directory under /tmp, unique per call.
func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/sluice-packet-tests-XXXXXX".utf8CString)
    let path = template.withUnsafeMutableBufferPointer { buf -> String? in
        guard let base = buf.baseAddress, mkdtemp(base) != nil else { return nil }
        return String(cString: base)
    }
    return path ?? "/tmp"
}

func removeTree(_ path: String) {
    guard path.hasPrefix("/tmp/sluice-packet-tests-") else { return }
    _ = runShell("rm -rf '\(path)'")
}

func fileExists(_ path: String) -> Bool { access(path, F_OK) == 0 }
func isExecutable(_ path: String) -> Bool { access(path, X_OK) == 0 }

/// Runs `/bin/sh -c command` and returns its exit status and standard output.
@discardableResult
func runShell(_ command: String) -> (status: Int32, output: String) {
    guard let pipe = popen(command, "r") else { return (-1, "") }
    var data: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buffer.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, pipe) }
        if n == 0 { break }
        data.append(contentsOf: buffer[0..<n])
    }
    let status = pclose(pipe)
    // WEXITSTATUS: the exit code sits in bits 8...15 of the wait status.
    return ((status >> 8) & 0xFF, String(decoding: data, as: UTF8.self))
}

func writeTextFile(_ path: String, _ text: String) {
    let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    guard fd >= 0 else { return }
    let bytes = Array(text.utf8)
    bytes.withUnsafeBytes { _ = write(fd, $0.baseAddress, $0.count) }
    close(fd)
}

enum ExternalTools {
    static let systemPython = "/usr/bin/python3"
    /// scapy is installed for the system Python only.
    static let scapyAvailable: Bool =
        isExecutable(systemPython) && runShell("\(systemPython) -c 'import scapy.all' >/dev/null 2>&1").status == 0
    static let tsharkPath: String? = ["/usr/bin/tshark", "/usr/local/bin/tshark"].first(where: isExecutable)
}

func monotonicNanoseconds() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
}
