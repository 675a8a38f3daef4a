// Classic libpcap files (not pcapng): the 24-byte global header, then per
// frame a 16-byte record header and the captured bytes. The writer always
// produces little-endian, microsecond-resolution files with link type
// Ethernet; the reader accepts either byte order and microsecond or
// nanosecond files. Plain POSIX I/O through Glibc; every system call goes
// through `PcapError.system`, which captures errno.

import Glibc

/// A capture time with microsecond resolution.
public struct PcapTimestamp: Hashable, Sendable, Comparable {
    public var seconds: UInt32
    /// 0...999_999.
    public var microseconds: UInt32

    public init(seconds: UInt32, microseconds: UInt32) {
        // Normalise rather than trap on an out-of-range microsecond count.
        self.seconds = seconds &+ microseconds / 1_000_000
        self.microseconds = microseconds % 1_000_000
    }

    public static let zero = PcapTimestamp(seconds: 0, microseconds: 0)

    /// This time plus `us` microseconds (seconds wrap at 2^32, as the format does).
    public func advanced(byMicroseconds us: UInt64) -> PcapTimestamp {
        let total = UInt64(microseconds) + us % 1_000_000
        let secs = UInt64(seconds) &+ us / 1_000_000 &+ total / 1_000_000
        return PcapTimestamp(seconds: UInt32(truncatingIfNeeded: secs), microseconds: UInt32(total % 1_000_000))
    }

    public static func < (a: Self, b: Self) -> Bool { (a.seconds, a.microseconds) < (b.seconds, b.microseconds) }
}

/// One captured frame.
public struct PcapRecord: Hashable, Sendable {
    public var timestamp: PcapTimestamp
    /// Length on the wire; at least `data.count` in a well-formed file.
    public var originalLength: Int
    /// The captured bytes.
    public var data: [UInt8]

    public init(timestamp: PcapTimestamp, data: [UInt8], originalLength: Int? = nil) {
        self.timestamp = timestamp; self.data = data; self.originalLength = originalLength ?? data.count
    }
}

/// A whole decoded file.
public struct PcapCapture: Hashable, Sendable {
    public var linkType: UInt32
    public var snapLength: UInt32
    /// True when the file stored nanoseconds (converted to microseconds here).
    public var nanosecondResolution: Bool
    public var records: [PcapRecord]
    public var frames: [[UInt8]] { records.map(\.data) }
}

public enum PcapError: Error, Hashable, Sendable, CustomStringConvertible {
    /// A system call failed; `errno` is its error number.
    case system(operation: String, path: String, errno: Int32)
    case badMagic(UInt32)
    case truncatedFileHeader(length: Int)
    /// Record `index` (0-based) or its header runs past the end of the file.
    case truncatedRecord(index: Int)
    /// Record `index` claims more bytes than any capture holds (over 256 MiB).
    case recordTooLarge(index: Int, length: UInt32)
    /// A frame passed to the writer is longer than a record can describe.
    case frameTooLarge(length: Int)

    public var description: String {
        switch self {
        case .system(let op, let path, let e):
            "\(op) \(path): \(String(cString: strerror(e))) (errno \(e))"
        case .badMagic(let m): "not a classic pcap file (magic 0x\(String(m, radix: 16)))"
        case .truncatedFileHeader(let n): "pcap file header truncated (\(n) of 24 bytes)"
        case .truncatedRecord(let i): "pcap record \(i) truncated"
        case .recordTooLarge(let i, let n): "pcap record \(i) claims \(n) bytes"
        case .frameTooLarge(let n): "frame of \(n) bytes is too large for a pcap record"
        }
    }

    /// The one place errno becomes a typed error.
    static func fromErrno(_ operation: String, _ path: String) -> PcapError {
        .system(operation: operation, path: path, errno: errno)
    }
}

public enum PcapFile {
    public static let linkTypeEthernet: UInt32 = 1
    /// Snap length written by the encoder (tcpdump's default).
    public static let defaultSnapLength: UInt32 = 262_144
    static let magicMicroseconds: UInt32 = 0xA1B2_C3D4
    static let magicNanoseconds: UInt32 = 0xA1B2_3C4D
    static let maximumRecordLength: UInt32 = 256 << 20

    // MARK: encoding

    /// A whole file in memory: frame i is stamped `start + i * interval`.
    public static func encode(_ frames: [[UInt8]], start: PcapTimestamp = .zero,
                              intervalMicroseconds: UInt64 = 1) throws(PcapError) -> [UInt8] {
        var out = fileHeader(linkType: linkTypeEthernet)
        var t = start
        for frame in frames {
            try appendRecord(PcapRecord(timestamp: t, data: frame), to: &out)
            t = t.advanced(byMicroseconds: intervalMicroseconds)
        }
        return out
    }

    /// A whole file in memory from records with their own timestamps.
    public static func encode(records: [PcapRecord], linkType: UInt32 = linkTypeEthernet) throws(PcapError) -> [UInt8] {
        var out = fileHeader(linkType: linkType)
        for r in records { try appendRecord(r, to: &out) }
        return out
    }

    static func fileHeader(linkType: UInt32) -> [UInt8] {
        var h: [UInt8] = []
        h.reserveCapacity(24)
        appendLE32(magicMicroseconds, to: &h)
        appendLE16(2, to: &h)                    // version 2.4
        appendLE16(4, to: &h)
        appendLE32(0, to: &h)                    // thiszone
        appendLE32(0, to: &h)                    // sigfigs
        appendLE32(defaultSnapLength, to: &h)
        appendLE32(linkType, to: &h)
        return h
    }

    static func appendRecord(_ r: PcapRecord, to out: inout [UInt8]) throws(PcapError) {
        guard r.data.count <= Int(maximumRecordLength) else { throw .frameTooLarge(length: r.data.count) }
        guard r.originalLength >= 0, r.originalLength <= Int(UInt32.max) else { throw .frameTooLarge(length: r.originalLength) }
        appendLE32(r.timestamp.seconds, to: &out)
        appendLE32(r.timestamp.microseconds, to: &out)
        appendLE32(UInt32(r.data.count), to: &out)
        appendLE32(UInt32(Swift.max(r.originalLength, r.data.count)), to: &out)
        out.append(contentsOf: r.data)
    }

    static func appendLE16(_ v: UInt16, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: v)); out.append(UInt8(truncatingIfNeeded: v >> 8))
    }
    static func appendLE32(_ v: UInt32, to out: inout [UInt8]) {
        for shift in stride(from: 0, to: 32, by: 8) { out.append(UInt8(truncatingIfNeeded: v >> UInt32(shift))) }
    }

    // MARK: decoding

    /// Parses a whole file; never traps on malformed input.
    public static func decode(_ bytes: [UInt8]) throws(PcapError) -> PcapCapture {
        guard bytes.count >= 24 else { throw .truncatedFileHeader(length: bytes.count) }
        let magicLE = readLE32(bytes, 0)
        let swapped: Bool, nanos: Bool
        switch magicLE {
        case magicMicroseconds: swapped = false; nanos = false
        case magicNanoseconds: swapped = false; nanos = true
        case magicMicroseconds.byteSwapped: swapped = true; nanos = false
        case magicNanoseconds.byteSwapped: swapped = true; nanos = true
        default: throw .badMagic(magicLE)
        }
        func u32(_ at: Int) -> UInt32 { swapped ? readLE32(bytes, at).byteSwapped : readLE32(bytes, at) }
        var capture = PcapCapture(linkType: u32(20), snapLength: u32(16), nanosecondResolution: nanos, records: [])
        var offset = 24
        var index = 0
        while offset < bytes.count {
            guard bytes.count - offset >= 16 else { throw .truncatedRecord(index: index) }
            let secs = u32(offset), frac = u32(offset + 4), incl = u32(offset + 8), orig = u32(offset + 12)
            guard incl <= maximumRecordLength else { throw .recordTooLarge(index: index, length: incl) }
            let start = offset + 16
            guard bytes.count - start >= Int(incl) else { throw .truncatedRecord(index: index) }
            let ts = PcapTimestamp(seconds: secs, microseconds: nanos ? frac / 1000 : frac)
            capture.records.append(PcapRecord(timestamp: ts, data: Array(bytes[start ..< start + Int(incl)]),
                                              originalLength: Int(orig)))
            offset = start + Int(incl)
            index += 1
        }
        return capture
    }

    static func readLE32(_ b: [UInt8], _ at: Int) -> UInt32 {
        UInt32(b[at]) | UInt32(b[at + 1]) << 8 | UInt32(b[at + 2]) << 16 | UInt32(b[at + 3]) << 24
    }

    // MARK: files

    /// Writes `frames` to `path` (created or truncated), stamped like `encode`.
    public static func write(_ frames: [[UInt8]], to path: String, start: PcapTimestamp = .zero,
                             intervalMicroseconds: UInt64 = 1) throws(PcapError) {
        try writeFile(path, try encode(frames, start: start, intervalMicroseconds: intervalMicroseconds))
    }

    /// Writes records with their own timestamps.
    public static func write(records: [PcapRecord], to path: String) throws(PcapError) {
        try writeFile(path, try encode(records: records))
    }

    /// The captured bytes of every frame in the file at `path`.
    public static func read(_ path: String) throws(PcapError) -> [[UInt8]] {
        try decode(try readFile(path)).frames
    }

    /// The whole file at `path` with timestamps and header fields.
    public static func readCapture(_ path: String) throws(PcapError) -> PcapCapture {
        try decode(try readFile(path))
    }

    static func writeFile(_ path: String, _ bytes: [UInt8]) throws(PcapError) {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .fromErrno("open", path) }
        let result = writeAll(fd, bytes, path)
        let closed = Glibc.close(fd)
        if case .failure(let e) = result { throw e }
        guard closed == 0 else { throw .fromErrno("close", path) }
    }

    /// Writes every byte, retrying short writes and EINTR.
    static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ path: String) -> Result<Void, PcapError> {
        bytes.withUnsafeBytes { raw -> Result<Void, PcapError> in
            guard let base = raw.baseAddress else { return .success(()) }
            var done = 0
            while done < raw.count {
                let n = Glibc.write(fd, base + done, raw.count - done)
                if n < 0 {
                    if errno == EINTR { continue }
                    return .failure(.fromErrno("write", path))
                }
                done += n
            }
            return .success(())
        }
    }

    static func readFile(_ path: String) throws(PcapError) -> [UInt8] {
        let fd = Glibc.open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw .fromErrno("open", path) }
        defer { _ = Glibc.close(fd) }
        var out: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw .fromErrno("read", path)
            }
            if n == 0 { break }
            out.append(contentsOf: chunk[0..<n])
        }
        return out
    }
}

/// Streams frames into a pcap file without holding them all in memory.
/// Call `close()` to learn about write errors; the deinitializer only
/// flushes and closes on a best-effort basis.
public struct PcapWriter: ~Copyable {
    private var fd: Int32
    private let path: String
    private var buffer: [UInt8] = []
    private var next: PcapTimestamp
    private let interval: UInt64
    /// Frames written so far.
    public private(set) var count = 0

    private static let flushThreshold = 1 << 20

    /// Creates or truncates `path` and writes the file header. Frames are
    /// stamped `start`, `start + interval`, … unless given a timestamp.
    public init(path: String, start: PcapTimestamp = .zero, intervalMicroseconds: UInt64 = 1) throws(PcapError) {
        let fd = Glibc.open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw .fromErrno("open", path) }
        self.fd = fd
        self.path = path
        self.next = start
        self.interval = intervalMicroseconds
        buffer = PcapFile.fileHeader(linkType: PcapFile.linkTypeEthernet)
    }

    public mutating func write(_ frame: [UInt8], timestamp: PcapTimestamp? = nil) throws(PcapError) {
        guard fd >= 0 else { throw .system(operation: "write", path: path, errno: EBADF) }
        let ts = timestamp ?? next
        try PcapFile.appendRecord(PcapRecord(timestamp: ts, data: frame), to: &buffer)
        next = ts.advanced(byMicroseconds: interval)
        count += 1
        if buffer.count >= Self.flushThreshold { try flush() }
    }

    public mutating func flush() throws(PcapError) {
        guard fd >= 0, !buffer.isEmpty else { return }
        let result = PcapFile.writeAll(fd, buffer, path)
        buffer.removeAll(keepingCapacity: true)
        if case .failure(let e) = result { throw e }
    }

    /// Flushes and closes; later writes fail with EBADF.
    public mutating func close() throws(PcapError) {
        guard fd >= 0 else { return }
        var flushError: PcapError? = nil
        do { try flush() } catch { flushError = error }
        let rc = Glibc.close(fd)
        fd = -1
        if let flushError { throw flushError }
        guard rc == 0 else { throw .fromErrno("close", path) }
    }

    deinit {
        if fd >= 0 {
            _ = PcapFile.writeAll(fd, buffer, path)
            _ = Glibc.close(fd)
        }
    }
}
