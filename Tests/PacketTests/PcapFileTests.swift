import Glibc
import Packet
import Testing

@Suite struct PcapFileTests {
    static func sampleFrames() throws -> [[UInt8]] {
        let b = PacketBuilder.udp(IPv4Address(10, 0, 0, 1), 1, IPv4Address(10, 0, 0, 2), 2)
        return try IMIX.classic.map { try b.build(frameSize: $0) } + [[], [0xAA]]
    }

    @Test func encodeDecodeRoundTrip() throws {
        let frames = try Self.sampleFrames()
        let start = PcapTimestamp(seconds: 1_700_000_000, microseconds: 999_999)
        let bytes = try PcapFile.encode(frames, start: start, intervalMicroseconds: 10)
        #expect(bytes.count == 24 + frames.reduce(0) { $0 + 16 + $1.count })
        // Global header: LE magic, version 2.4, snaplen, Ethernet.
        #expect(Array(bytes[0..<8]) == [0xD4, 0xC3, 0xB2, 0xA1, 2, 0, 4, 0])
        #expect(Array(bytes[20..<24]) == [1, 0, 0, 0])
        let capture = try PcapFile.decode(bytes)
        #expect(capture.linkType == PcapFile.linkTypeEthernet)
        #expect(!capture.nanosecondResolution)
        #expect(capture.frames == frames)
        #expect(capture.records[0].timestamp == start)
        #expect(capture.records[1].timestamp == PcapTimestamp(seconds: 1_700_000_001, microseconds: 9))
        #expect(capture.records.allSatisfy { $0.originalLength == $0.data.count })
    }

    @Test func fileAndStreamingWriter() throws {
        let dir = makeTemporaryDirectory()
        defer { removeTree(dir) }
        let frames = try Self.sampleFrames()
        try PcapFile.write(frames, to: dir + "/a.pcap")
        #expect(try PcapFile.read(dir + "/a.pcap") == frames)

        var writer = try PcapWriter(path: dir + "/b.pcap", start: .zero, intervalMicroseconds: 1_000_000)
        // Enough frames to pass the writer's flush threshold more than once.
        var all: [[UInt8]] = []
        for i in 0..<3000 {
            let f = frames[i % frames.count]
            all.append(f)
            try writer.write(f)
        }
        try writer.write([1, 2, 3], timestamp: PcapTimestamp(seconds: 7, microseconds: 8))
        all.append([1, 2, 3])
        #expect(writer.count == 3001)
        try writer.close()
        #expect(throws: PcapError.self) { try writer.write([1]) }
        let capture = try PcapFile.readCapture(dir + "/b.pcap")
        #expect(capture.frames == all)
        #expect(capture.records[2999].timestamp == PcapTimestamp(seconds: 2999, microseconds: 0))
        #expect(capture.records[3000].timestamp == PcapTimestamp(seconds: 7, microseconds: 8))
        // Identical content written both ways gives identical files.
        try PcapFile.write(all.dropLast().map { $0 }, to: dir + "/c.pcap", intervalMicroseconds: 1_000_000)
        var w2 = try PcapWriter(path: dir + "/d.pcap", intervalMicroseconds: 1_000_000)
        for f in all.dropLast() { try w2.write(f) }
        try w2.close()
        #expect(runShell("cmp -s '\(dir)/c.pcap' '\(dir)/d.pcap'").status == 0)
    }

    @Test func writerDeinitFlushes() throws {
        let dir = makeTemporaryDirectory()
        defer { removeTree(dir) }
        do {
            var w = try PcapWriter(path: dir + "/e.pcap")
            try w.write([9, 9, 9])
        }
        #expect(try PcapFile.read(dir + "/e.pcap") == [[9, 9, 9]])
    }

    @Test func bigEndianAndNanosecondFiles() throws {
        // A big-endian nanosecond file, built by hand.
        var bytes: [UInt8] = [0xA1, 0xB2, 0x3C, 0x4D, 0, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0, 0, 0, 1]
        bytes += [0, 0, 0, 5, 0, 0, 0x03, 0xE8, 0, 0, 0, 2, 0, 0, 0, 60, 0xAB, 0xCD]
        let c = try PcapFile.decode(bytes)
        #expect(c.nanosecondResolution && c.linkType == 1 && c.snapLength == 0xFFFF)
        #expect(c.records == [PcapRecord(timestamp: PcapTimestamp(seconds: 5, microseconds: 1), data: [0xAB, 0xCD], originalLength: 60)])
    }

    @Test func malformedInputThrowsNeverTraps() throws {
        let good = try PcapFile.encode(try Self.sampleFrames())
        // Every truncation of a valid file either decodes (cut at a record
        // boundary) or throws.
        var decodedPrefixes = 0
        for n in 0..<good.count {
            if (try? PcapFile.decode(Array(good[0..<n]))) != nil { decodedPrefixes += 1 }
        }
        #expect(decodedPrefixes == 14)  // after the header and after each of the first 13 records
        #expect(throws: PcapError.badMagic(0x0403_0201)) { try PcapFile.decode([1, 2, 3, 4] + [UInt8](repeating: 0, count: 20)) }
        #expect(throws: PcapError.truncatedFileHeader(length: 3)) { try PcapFile.decode([1, 2, 3]) }
        var huge = Array(good[0..<24]) + [UInt8](repeating: 0, count: 16)
        huge[32] = 0xFF; huge[33] = 0xFF; huge[34] = 0xFF; huge[35] = 0x7F
        #expect(throws: PcapError.recordTooLarge(index: 0, length: 0x7FFF_FFFF)) { try PcapFile.decode(huge) }
        // Random corruption of record headers.
        var rng = SplitMix64(seed: 8)
        for _ in 0..<2000 {
            var b = good
            for _ in 0..<4 { b[24 + Int(rng.next() % UInt64(b.count - 24))] = UInt8(truncatingIfNeeded: rng.next()) }
            _ = try? PcapFile.decode(b)
        }
        #expect(throws: PcapError.self) { try PcapFile.read("/nonexistent/dir/x.pcap") }
        do {
            _ = try PcapFile.read("/nonexistent/dir/x.pcap")
        } catch {
            #expect(error == .system(operation: "open", path: "/nonexistent/dir/x.pcap", errno: ENOENT))
            #expect(error.description.hasPrefix("open /nonexistent/dir/x.pcap: No such file"))
        }
    }

    @Test func timestamps() {
        #expect(PcapTimestamp(seconds: 1, microseconds: 2_500_000) == PcapTimestamp(seconds: 3, microseconds: 500_000))
        #expect(PcapTimestamp(seconds: 1, microseconds: 999_999).advanced(byMicroseconds: 1) == PcapTimestamp(seconds: 2, microseconds: 0))
        #expect(PcapTimestamp(seconds: UInt32.max, microseconds: 0).advanced(byMicroseconds: 1_000_000) == .zero)
        #expect(PcapTimestamp.zero < PcapTimestamp(seconds: 0, microseconds: 1))
    }
}
