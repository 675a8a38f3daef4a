import Packet
import Testing

@Suite struct PacketBuilderTests {
    static let src4 = IPv4Address(10, 0, 0, 1), dst4 = IPv4Address(192, 168, 1, 2)
    static let src6 = IPv6Address("2001:db8::1")!, dst6 = IPv6Address("2001:db8:ffff::2")!

    static func assertValid(_ p: ParsedFrame, frame: [UInt8], sourceLocation: SourceLocation = #_sourceLocation) {
        if p.etherType == 0x0800 {
            #expect(p.ipv4HeaderChecksumResult == 0, "IPv4 header checksum", sourceLocation: sourceLocation)
            #expect(p.networkOffset + p.totalLength == frame.count, sourceLocation: sourceLocation)
        } else {
            #expect(p.networkOffset + 40 + p.payloadLength == frame.count, sourceLocation: sourceLocation)
        }
        if p.proto == 17 || p.proto == 6 {
            #expect(p.l4ChecksumResult == 0, "L4 checksum", sourceLocation: sourceLocation)
            #expect(p.l4ChecksumField != 0, sourceLocation: sourceLocation)
        }
        if p.proto == 17 { #expect(p.udpLength == p.transportBytes.count, sourceLocation: sourceLocation) }
    }

    @Test func ipv4UDPFieldsAndChecksums() throws {
        var b = PacketBuilder.udp(Self.src4, 1234, Self.dst4, 4500)
        b.network = .ipv4(IPv4Spec(source: Self.src4, destination: Self.dst4, ttl: 17, dscp: 46, ecn: 2,
                                   identification: 0xBEEF, dontFragment: true))
        let f = try b.build(payloadLength: 100)
        #expect(f.count == 14 + 20 + 8 + 100)
        let p = try #require(parseFrame(f))
        Self.assertValid(p, frame: f)
        #expect(p.destinationMAC == MACAddress.defaultDestination.array)
        #expect(p.sourceMAC == MACAddress.defaultSource.array)
        #expect(p.etherType == 0x0800)
        #expect(p.ihl == 20)
        #expect(p.tos == 46 << 2 | 2)
        #expect(p.identification == 0xBEEF)
        #expect(p.flagsFragment == 0x4000)
        #expect(p.ttl == 17)
        #expect(p.proto == 17)
        #expect(p.source == Self.src4.bytes && p.destination == Self.dst4.bytes)
        #expect(p.sourcePort == 1234 && p.destinationPort == 4500)
        #expect(p.udpLength == 108)
        #expect(p.payload == (0..<100).map { UInt8($0) })
        // The fast path agrees with the header the builder wrote.
        #expect(f.withUnsafeBytes { InternetChecksum.ipv4Header($0.baseAddress! + 14) } == be16(f, 24))
    }

    @Test func ipv4OptionsArePaddedAndCovered() throws {
        var b = PacketBuilder.udp(Self.src4, 1, Self.dst4, 2)
        // Router alert (4 bytes) plus a NOP: padded to 8 bytes of options.
        b.network = .ipv4(IPv4Spec(source: Self.src4, destination: Self.dst4, dontFragment: false,
                                   options: [0x94, 0x04, 0x00, 0x00, 0x01]))
        let f = try b.build(payloadLength: 3)
        let p = try #require(parseFrame(f))
        Self.assertValid(p, frame: f)
        #expect(p.ihl == 28)
        #expect(p.ipv4Options == [0x94, 0x04, 0x00, 0x00, 0x01, 0, 0, 0])
        #expect(p.flagsFragment == 0)
        #expect(b.headerLength == 14 + 28 + 8)
    }

    @Test func vlanTag() throws {
        var b = PacketBuilder.udp(Self.src4, 1, Self.dst4, 2)
        b.ethernet.vlan = VLANTag(id: 100, priority: 5, dropEligible: true)
        let f = try b.build(frameSize: 64)
        #expect(f.count == 64)
        let p = try #require(parseFrame(f))
        Self.assertValid(p, frame: f)
        #expect(p.vlanTPID == 0x8100)
        #expect(p.vlanTCI == UInt16(5 << 13 | 0x1000 | 100))
        #expect(p.networkOffset == 18)
        b.ethernet.vlan = VLANTag(id: 7, tpid: .qinq)
        let q = try #require(parseFrame(try b.build(frameSize: 128)))
        #expect(q.vlanTPID == 0x88A8 && q.vlanTCI == UInt16(7))
    }

    @Test func tcpOverIPv4AndIPv6() throws {
        let tcp = TCPSpec(sourcePort: 40000, destinationPort: 443, sequence: 0x0102_0304, acknowledgment: 0xA0B0_C0D0,
                          flags: [.syn, .ack], window: 1024)
        for network in [NetworkSpec.ipv4(IPv4Spec(source: Self.src4, destination: Self.dst4)),
                        .ipv6(IPv6Spec(source: Self.src6, destination: Self.dst6))] {
            let b = PacketBuilder(network: network, transport: .tcp(tcp), pattern: .pseudoRandom(seed: 3))
            for len in [0, 1, 2, 3, 57, 1000] {
                let f = try b.build(payloadLength: len)
                let p = try #require(parseFrame(f))
                Self.assertValid(p, frame: f)
                #expect(p.proto == 6 && p.sourcePort == 40000 && p.destinationPort == 443)
                #expect(be32(p.transportBytes, 4) == 0x0102_0304 && be32(p.transportBytes, 8) == 0xA0B0_C0D0)
                #expect(p.transportBytes[12] == 0x50 && p.transportBytes[13] == 0x12)
                #expect(be16(p.transportBytes, 14) == 1024)
                #expect(p.payload == PayloadPattern.pseudoRandom(seed: 3).bytes(count: len))
            }
        }
    }

    @Test func ipv6UDPFields() throws {
        let b = PacketBuilder(network: .ipv6(IPv6Spec(source: Self.src6, destination: Self.dst6, hopLimit: 9,
                                                      trafficClass: 0xB8, flowLabel: 0xABCDE)),
                              transport: .udp(sourcePort: 500, destinationPort: 4500), pattern: .constant(0x5A))
        let f = try b.build(frameSize: 200)
        #expect(f.count == 200)
        let p = try #require(parseFrame(f))
        Self.assertValid(p, frame: f)
        #expect(p.etherType == 0x86DD && p.ipVersion == 6)
        #expect(p.trafficClass == 0xB8 && p.flowLabel == 0xABCDE && p.hopLimit == 9)
        #expect(p.payloadLength == 200 - 14 - 40)
        #expect(p.source == Self.src6.bytes && p.destination == Self.dst6.bytes)
        #expect(p.payload.allSatisfy { $0 == 0x5A })
    }

    @Test func rawPayloadUnderAnyProtocol() throws {
        let esp: [UInt8] = [0, 0, 0x10, 0x01, 0, 0, 0, 1] + [UInt8](repeating: 0xCC, count: 40)
        let b = PacketBuilder(network: .ipv4(IPv4Spec(source: Self.src4, destination: Self.dst4)), transport: .raw(.esp))
        let f = try b.build(payload: esp)
        let p = try #require(parseFrame(f))
        Self.assertValid(p, frame: f)
        #expect(p.proto == 50)
        #expect(p.payload == esp)
        #expect(b.transportOffset == 34)
    }

    @Test func frameSizesFollowTestpmd() throws {
        let b4 = PacketBuilder.udp(Self.src4, 1, Self.dst4, 2)
        let b6 = PacketBuilder.udp(Self.src6, 1, Self.dst6, 2)
        for size in [42, 60, 64, 65, 128, 576, 1500, 1514, 9000] {
            let f = try b4.build(frameSize: size)
            #expect(f.count == size)
            Self.assertValid(try #require(parseFrame(f)), frame: f)
        }
        for size in [62, 64, 1500] {
            let f = try b6.build(frameSize: size)
            #expect(f.count == size)
            Self.assertValid(try #require(parseFrame(f)), frame: f)
        }
    }

    @Test func errorsInsteadOfTraps() {
        let b4 = PacketBuilder.udp(Self.src4, 1, Self.dst4, 2)
        #expect(throws: PacketBuilderError.frameTooSmall(frameSize: 41, headerLength: 42)) { try b4.build(frameSize: 41) }
        #expect(throws: PacketBuilderError.frameTooSmall(frameSize: -5, headerLength: 42)) { try b4.build(frameSize: -5) }
        #expect(throws: PacketBuilderError.negativePayloadLength(-1)) { try b4.build(payloadLength: -1) }
        #expect(throws: PacketBuilderError.payloadTooLong(payloadLength: 65508, limit: 65507)) {
            try b4.build(payloadLength: 65508)
        }
        #expect((try? b4.build(payloadLength: 65507))?.count == 14 + 65535)

        var b = b4
        b.network = .ipv4(IPv4Spec(source: Self.src4, destination: Self.dst4, dscp: 64))
        #expect(throws: PacketBuilderError.fieldOutOfRange(field: "DSCP", value: 64, maximum: 63)) { try b.build(payloadLength: 1) }
        b.network = .ipv4(IPv4Spec(source: Self.src4, destination: Self.dst4, ecn: 4))
        #expect(throws: PacketBuilderError.self) { try b.build(payloadLength: 1) }
        b.network = .ipv4(IPv4Spec(source: Self.src4, destination: Self.dst4, options: [UInt8](repeating: 1, count: 41)))
        #expect(throws: PacketBuilderError.self) { try b.build(payloadLength: 1) }
        b.network = .ipv6(IPv6Spec(source: Self.src6, destination: Self.dst6, flowLabel: 0x100000))
        #expect(throws: PacketBuilderError.self) { try b.build(payloadLength: 1) }
        b = b4
        b.ethernet.vlan = VLANTag(id: 4096)
        #expect(throws: PacketBuilderError.self) { try b.build(payloadLength: 1) }
        b.ethernet.vlan = VLANTag(id: 1, priority: 8)
        #expect(throws: PacketBuilderError.self) { try b.build(payloadLength: 1) }
    }

    @Test func imix() {
        let seq = IMIX.classic
        #expect(seq.count == 12)
        #expect(seq.filter { $0 == 64 }.count == 7)
        #expect(seq.filter { $0 == 576 }.count == 4)
        #expect(seq.filter { $0 == 1500 }.count == 1)
        #expect(abs(IMIX.classicAverage - 4252.0 / 12.0) < 1e-9)
        let long = IMIX.classicSequence(count: 30)
        #expect(long.count == 30 && Array(long[12..<24]) == seq)
        #expect(IMIX.classicSequence(count: -1).isEmpty)
    }

    @Test func payloadPatterns() {
        #expect(PayloadPattern.incrementing(from: 250).bytes(count: 8) == [250, 251, 252, 253, 254, 255, 0, 1])
        #expect(PayloadPattern.constant(7).bytes(count: 3) == [7, 7, 7])
        #expect(PayloadPattern.pseudoRandom(seed: 1).bytes(count: 13) == PayloadPattern.pseudoRandom(seed: 1).bytes(count: 20).prefix(13).map { $0 })
        #expect(PayloadPattern.pseudoRandom(seed: 1).bytes(count: 16) != PayloadPattern.pseudoRandom(seed: 2).bytes(count: 16))
        #expect(PayloadPattern.constant(1).bytes(count: -3).isEmpty)
    }
}
