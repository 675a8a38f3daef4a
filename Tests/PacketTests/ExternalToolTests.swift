// Independent peers: scapy decodes the builder's frames from a pcap and
// recomputes every length and checksum; tshark reads the same pcap with
// checksum validation on. Each test is skipped where its tool is missing.

import Packet
import Testing

@Suite struct ExternalToolTests {
    /// A mix of everything the builder emits.
    static func frames() throws -> [[UInt8]] {
        let s4 = IPv4Address(10, 0, 0, 1), d4 = IPv4Address(203, 0, 113, 9)
        let s6 = IPv6Address("2001:db8::1")!, d6 = IPv6Address("2001:db8:abcd::99")!
        let tcp = TCPSpec(sourcePort: 33333, destinationPort: 80, sequence: 1, acknowledgment: 2, flags: [.psh, .ack])
        var builders: [PacketBuilder] = [
            .udp(s4, 1234, d4, 4500),
            .udp(s6, 500, d6, 4500),
            PacketBuilder(network: .ipv4(IPv4Spec(source: s4, destination: d4, ttl: 3, dscp: 10, identification: 77)),
                          transport: .tcp(tcp)),
            PacketBuilder(network: .ipv6(IPv6Spec(source: s6, destination: d6, trafficClass: 0x20, flowLabel: 0x12345)),
                          transport: .tcp(tcp), pattern: .pseudoRandom(seed: 9)),
            PacketBuilder(network: .ipv4(IPv4Spec(source: s4, destination: d4, options: [0x94, 0x04, 0, 0])),
                          transport: .udp(sourcePort: 7, destinationPort: 9)),
        ]
        var vlan = builders[0]
        vlan.ethernet.vlan = VLANTag(id: 42, priority: 3)
        builders.append(vlan)
        var out: [[UInt8]] = []
        for b in builders {
            for size in [b.headerLength, b.headerLength + 1, 64, 65, 301, 1500] where size >= b.headerLength {
                out.append(try b.build(frameSize: size))
            }
        }
        // A UDP datagram whose checksum computes to 0 and is sent as 0xFFFF:
        // search a payload word that makes it so.
        let zero = PacketBuilder.udp(s4, 1, d4, 2)
        for w in 0...0xFFFF {
            let f = try zero.build(payload: [UInt8(w >> 8), UInt8(w & 0xFF)])
            if be16(f, 40) == 0xFFFF { out.append(f); break }
        }
        return out
    }

    static let scapyScript = """
    import sys
    from scapy.all import rdpcap, Ether, IP, IPv6, UDP, TCP
    for pkt in rdpcap(sys.argv[1]):
        fresh = Ether(bytes(pkt))
        if IP in fresh:
            del fresh[IP].chksum
            del fresh[IP].len
            del fresh[IP].ihl
        if IPv6 in fresh:
            del fresh[IPv6].plen
        if UDP in fresh:
            del fresh[UDP].chksum
            del fresh[UDP].len
        if TCP in fresh:
            del fresh[TCP].chksum
        rebuilt = Ether(bytes(fresh))
        fields = []
        for layer, names in ((IP, ("chksum", "len", "ihl")), (IPv6, ("plen",)), (UDP, ("chksum", "len")), (TCP, ("chksum",))):
            if layer in pkt:
                for n in names:
                    fields.append("%s.%s=%d/%d" % (layer.__name__, n, getattr(pkt[layer], n), getattr(rebuilt[layer], n)))
        print(len(pkt), " ".join(fields))
    """

    @Test(.enabled(if: ExternalTools.scapyAvailable, "needs /usr/bin/python3 with scapy"))
    func scapyRecomputesTheSameChecksums() throws {
        let frames = try Self.frames()
        let dir = makeTemporaryDirectory()
        defer { removeTree(dir) }
        try PcapFile.write(frames, to: dir + "/frames.pcap")
        writeTextFile(dir + "/check.py", Self.scapyScript)
        let (status, output) = runShell("\(ExternalTools.systemPython) '\(dir)/check.py' '\(dir)/frames.pcap' 2>&1")
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n")
        try #require(lines.count == frames.count, "\(output)")
        for (line, frame) in zip(lines, frames) {
            let parts = line.split(separator: " ")
            #expect(parts.first.map(String.init) == String(frame.count))
            let fields = parts.dropFirst()
            // IP or IPv6 and UDP or TCP were all recognised.
            #expect(fields.contains { $0.hasPrefix("IP.chksum") || $0.hasPrefix("IPv6.plen") }, "\(line)")
            #expect(fields.contains { $0.hasPrefix("UDP.chksum") || $0.hasPrefix("TCP.chksum") }, "\(line)")
            for field in fields {
                let values = field.split(separator: "=").last?.split(separator: "/") ?? []
                #expect(values.count == 2 && values[0] == values[1], "\(field) in \(line)")
            }
        }
        #expect(output.contains("UDP.chksum=65535/65535"), "the zero-checksum datagram goes out as 0xFFFF")
    }

    @Test(.enabled(if: ExternalTools.scapyAvailable, "needs /usr/bin/python3 with scapy"))
    func scapyReadsOurPcapAndWeReadScapys() throws {
        let dir = makeTemporaryDirectory()
        defer { removeTree(dir) }
        let script = """
        from scapy.all import wrpcap, Ether, IP, UDP, Raw
        pkts = [Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")/IP(src="10.0.0.1", dst="10.0.0.2", ttl=9)/UDP(sport=1, dport=2)/Raw(bytes(range(n))) for n in (0, 1, 18, 200)]
        wrpcap("\(dir)/scapy.pcap", pkts)
        """
        writeTextFile(dir + "/w.py", script)
        let (status, output) = runShell("\(ExternalTools.systemPython) '\(dir)/w.py' 2>&1")
        try #require(status == 0, "\(output)")
        let frames = try PcapFile.read(dir + "/scapy.pcap")
        #expect(frames.count == 4)
        let b = PacketBuilder(network: .ipv4(IPv4Spec(source: IPv4Address(10, 0, 0, 1), destination: IPv4Address(10, 0, 0, 2),
                                                      ttl: 9, identification: 1, dontFragment: false)),
                              transport: .udp(sourcePort: 1, destinationPort: 2))
        for (frame, n) in zip(frames, [0, 1, 18, 200]) {
            // scapy's defaults: id 1, no DF; otherwise byte-identical to ours.
            #expect(frame == (try b.build(payloadLength: n)))
        }
    }

    @Test(.enabled(if: ExternalTools.tsharkPath != nil, "needs tshark"))
    func tsharkValidatesChecksums() throws {
        let frames = try Self.frames()
        let dir = makeTemporaryDirectory()
        defer { removeTree(dir) }
        try PcapFile.write(frames, to: dir + "/frames.pcap")
        let tshark = ExternalTools.tsharkPath ?? "tshark"
        let command = "\(tshark) -r '\(dir)/frames.pcap' -o ip.check_checksum:TRUE -o udp.check_checksum:TRUE "
            + "-o tcp.check_checksum:TRUE -T fields -E separator=, -e frame.len -e ip.checksum.status "
            + "-e udp.checksum.status -e tcp.checksum.status -e _ws.expert.severity 2>/dev/null"
        let (status, output) = runShell(command)
        #expect(status == 0)
        let lines = output.split(separator: "\n", omittingEmptySubsequences: true)
        try #require(lines.count == frames.count, "\(output)")
        for (line, frame) in zip(lines, frames) {
            let cols = line.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
            #expect(cols.first == String(frame.count))
            // checksum.status: 1 = good, 0 = bad, 2 = unverified; empty = layer absent.
            let statuses = cols.dropFirst().prefix(3).filter { !$0.isEmpty }
            #expect(!statuses.isEmpty && statuses.allSatisfy { $0 == "1" }, "\(line)")
        }
    }
}
