// Whole Ethernet frames as byte arrays, for the control plane, tests and the
// traffic generator (never the per-packet path): Ethernet with at most one
// VLAN tag, IPv4 (with options) or IPv6, then UDP, TCP or a raw payload under
// any protocol number. Lengths and checksums are always correct.
//
// Frame size convention (testpmd's `txpkts`): a frame of size N is N bytes
// from the destination MAC to the end of the payload, without the 4-byte FCS
// the NIC appends; "64-byte frames" are 64-byte mbufs.

/// One IEEE 802.1Q (or 802.1ad) tag.
public struct VLANTag: Hashable, Sendable {
    /// Tag protocol identifier: `.vlan` (0x8100) or `.qinq` (0x88A8).
    public var tpid: EtherType
    /// Priority code point, 0...7.
    public var priority: UInt8
    public var dropEligible: Bool
    /// VLAN identifier, 0...4095.
    public var id: UInt16

    public init(id: UInt16, priority: UInt8 = 0, dropEligible: Bool = false, tpid: EtherType = .vlan) {
        self.id = id; self.priority = priority; self.dropEligible = dropEligible; self.tpid = tpid
    }

    /// The 16-bit tag control information; nil when a field is out of range.
    public var tci: UInt16? {
        guard priority <= 7, id <= 4095 else { return nil }
        return UInt16(priority) << 13 | (dropEligible ? 0x1000 : 0) | id
    }
}

public struct EthernetSpec: Hashable, Sendable {
    public var destination: MACAddress
    public var source: MACAddress
    public var vlan: VLANTag?

    public init(destination: MACAddress = .defaultDestination, source: MACAddress = .defaultSource,
                vlan: VLANTag? = nil) {
        self.destination = destination; self.source = source; self.vlan = vlan
    }

    public var headerLength: Int { HeaderSize.ethernet + (vlan == nil ? 0 : HeaderSize.vlanTag) }
}

extension MACAddress {
    /// Locally administered unicast addresses used when a caller names none.
    public static let defaultSource = MACAddress((0x02, 0x00, 0x00, 0x00, 0x00, 0x01))
    public static let defaultDestination = MACAddress((0x02, 0x00, 0x00, 0x00, 0x00, 0x02))
}

public struct IPv4Spec: Hashable, Sendable {
    public var source: IPv4Address
    public var destination: IPv4Address
    public var ttl: UInt8
    /// Differentiated services code point, 0...63.
    public var dscp: UInt8
    /// Explicit congestion notification, 0...3.
    public var ecn: UInt8
    public var identification: UInt16
    public var dontFragment: Bool
    /// Option bytes; padded with zeros (End of Option List) to a multiple of
    /// four. At most 40 bytes after padding.
    public var options: [UInt8]

    public init(source: IPv4Address, destination: IPv4Address, ttl: UInt8 = 64, dscp: UInt8 = 0, ecn: UInt8 = 0,
                identification: UInt16 = 0, dontFragment: Bool = true, options: [UInt8] = []) {
        self.source = source; self.destination = destination; self.ttl = ttl; self.dscp = dscp; self.ecn = ecn
        self.identification = identification; self.dontFragment = dontFragment; self.options = options
    }

    /// Options length after padding to a multiple of four.
    public var paddedOptionsLength: Int { (options.count + 3) / 4 * 4 }
    public var headerLength: Int { HeaderSize.ipv4 + paddedOptionsLength }
}

public struct IPv6Spec: Hashable, Sendable {
    public var source: IPv6Address
    public var destination: IPv6Address
    public var hopLimit: UInt8
    public var trafficClass: UInt8
    /// 20-bit flow label, 0...0xFFFFF.
    public var flowLabel: UInt32

    public init(source: IPv6Address, destination: IPv6Address, hopLimit: UInt8 = 64, trafficClass: UInt8 = 0,
                flowLabel: UInt32 = 0) {
        self.source = source; self.destination = destination; self.hopLimit = hopLimit
        self.trafficClass = trafficClass; self.flowLabel = flowLabel
    }
}

public enum NetworkSpec: Hashable, Sendable {
    case ipv4(IPv4Spec)
    case ipv6(IPv6Spec)

    public var headerLength: Int {
        switch self {
        case .ipv4(let v4): v4.headerLength
        case .ipv6: HeaderSize.ipv6
        }
    }
    public var etherType: EtherType {
        switch self { case .ipv4: .ipv4; case .ipv6: .ipv6 }
    }
    public var source: IPAddress {
        switch self { case .ipv4(let s): .v4(s.source); case .ipv6(let s): .v6(s.source) }
    }
    public var destination: IPAddress {
        switch self { case .ipv4(let s): .v4(s.destination); case .ipv6(let s): .v6(s.destination) }
    }
}

public struct TCPFlags: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let fin = TCPFlags(rawValue: 0x01)
    public static let syn = TCPFlags(rawValue: 0x02)
    public static let rst = TCPFlags(rawValue: 0x04)
    public static let psh = TCPFlags(rawValue: 0x08)
    public static let ack = TCPFlags(rawValue: 0x10)
    public static let urg = TCPFlags(rawValue: 0x20)
    public static let ece = TCPFlags(rawValue: 0x40)
    public static let cwr = TCPFlags(rawValue: 0x80)
}

public struct TCPSpec: Hashable, Sendable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var sequence: UInt32
    public var acknowledgment: UInt32
    public var flags: TCPFlags
    public var window: UInt16

    public init(sourcePort: UInt16, destinationPort: UInt16, sequence: UInt32 = 0, acknowledgment: UInt32 = 0,
                flags: TCPFlags = [.ack], window: UInt16 = 65535) {
        self.sourcePort = sourcePort; self.destinationPort = destinationPort; self.sequence = sequence
        self.acknowledgment = acknowledgment; self.flags = flags; self.window = window
    }
}

public enum TransportSpec: Hashable, Sendable {
    case udp(sourcePort: UInt16, destinationPort: UInt16)
    case tcp(TCPSpec)
    /// No transport header: the payload follows the IP header under `protocol`
    /// (ESP, ICMP, or anything else the caller assembles itself).
    case raw(IPProtocol)

    public var headerLength: Int {
        switch self {
        case .udp: HeaderSize.udp
        case .tcp: HeaderSize.tcp
        case .raw: 0
        }
    }
    public var ipProtocol: IPProtocol {
        switch self {
        case .udp: .udp
        case .tcp: .tcp
        case .raw(let p): p
        }
    }
    /// Source and destination port, or nil for `.raw`.
    public var ports: (source: UInt16, destination: UInt16)? {
        switch self {
        case .udp(let s, let d): (s, d)
        case .tcp(let t): (t.sourcePort, t.destinationPort)
        case .raw: nil
        }
    }
}

/// How generated payload bytes are filled.
public enum PayloadPattern: Hashable, Sendable {
    /// Byte i is `start &+ i`.
    case incrementing(from: UInt8)
    case constant(UInt8)
    /// SplitMix64 output bytes from `seed`.
    case pseudoRandom(seed: UInt64)

    public func bytes(count: Int) -> [UInt8] {
        guard count > 0 else { return [] }
        switch self {
        case .incrementing(let start):
            return (0..<count).map { start &+ UInt8(truncatingIfNeeded: $0) }
        case .constant(let b):
            return [UInt8](repeating: b, count: count)
        case .pseudoRandom(let seed):
            var rng = SplitMix64(seed: seed)
            var out = [UInt8]()
            out.reserveCapacity(count)
            while out.count < count {
                var word = rng.next()
                for _ in 0..<8 where out.count < count {
                    out.append(UInt8(truncatingIfNeeded: word))
                    word >>= 8
                }
            }
            return out
        }
    }
}

public enum PacketBuilderError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The requested frame cannot even hold the headers.
    case frameTooSmall(frameSize: Int, headerLength: Int)
    case negativePayloadLength(Int)
    /// IPv4 total length, IPv6 payload length or UDP length would pass 65535.
    case payloadTooLong(payloadLength: Int, limit: Int)
    /// A header field outside its range (`field` names it).
    case fieldOutOfRange(field: String, value: Int, maximum: Int)

    public var description: String {
        switch self {
        case .frameTooSmall(let size, let headers):
            "frame size \(size) is smaller than the \(headers) bytes of headers"
        case .negativePayloadLength(let n):
            "payload length \(n) is negative"
        case .payloadTooLong(let n, let limit):
            "payload of \(n) bytes is longer than the \(limit) bytes the headers can describe"
        case .fieldOutOfRange(let field, let value, let maximum):
            "\(field) \(value) is out of range (maximum \(maximum))"
        }
    }
}

/// A frame template: fixed headers, variable payload.
public struct PacketBuilder: Hashable, Sendable {
    public var ethernet: EthernetSpec
    public var network: NetworkSpec
    public var transport: TransportSpec
    public var pattern: PayloadPattern

    public init(ethernet: EthernetSpec = EthernetSpec(), network: NetworkSpec, transport: TransportSpec,
                pattern: PayloadPattern = .incrementing(from: 0)) {
        self.ethernet = ethernet; self.network = network; self.transport = transport; self.pattern = pattern
    }

    /// Ethernet / IPv4 / UDP with default MAC addresses.
    public static func udp(_ source: IPv4Address, _ sourcePort: UInt16,
                           _ destination: IPv4Address, _ destinationPort: UInt16) -> PacketBuilder {
        PacketBuilder(network: .ipv4(IPv4Spec(source: source, destination: destination)),
                      transport: .udp(sourcePort: sourcePort, destinationPort: destinationPort))
    }

    /// Ethernet / IPv6 / UDP with default MAC addresses.
    public static func udp(_ source: IPv6Address, _ sourcePort: UInt16,
                           _ destination: IPv6Address, _ destinationPort: UInt16) -> PacketBuilder {
        PacketBuilder(network: .ipv6(IPv6Spec(source: source, destination: destination)),
                      transport: .udp(sourcePort: sourcePort, destinationPort: destinationPort))
    }

    /// Bytes before the payload: Ethernet (and tag), IP, transport header.
    public var headerLength: Int { ethernet.headerLength + network.headerLength + transport.headerLength }

    /// Offset of the IP header in the frame.
    public var networkOffset: Int { ethernet.headerLength }
    /// Offset of the transport header (or raw payload) in the frame.
    public var transportOffset: Int { ethernet.headerLength + network.headerLength }

    /// The largest payload the IP and UDP length fields can describe.
    public var maximumPayloadLength: Int {
        switch network {
        case .ipv4(let v4): 65535 - v4.headerLength - transport.headerLength
        case .ipv6: 65535 - transport.headerLength
        }
    }

    /// A frame of exactly `frameSize` bytes (no FCS), the payload filling what
    /// the headers leave.
    public func build(frameSize: Int) throws(PacketBuilderError) -> [UInt8] {
        try validate()
        guard frameSize >= headerLength else {
            throw .frameTooSmall(frameSize: frameSize, headerLength: headerLength)
        }
        return try build(payloadLength: frameSize - headerLength)
    }

    /// A frame whose payload is `payloadLength` bytes of `pattern`.
    public func build(payloadLength: Int) throws(PacketBuilderError) -> [UInt8] {
        try validate()
        guard payloadLength >= 0 else { throw .negativePayloadLength(payloadLength) }
        guard payloadLength <= maximumPayloadLength else {
            throw .payloadTooLong(payloadLength: payloadLength, limit: maximumPayloadLength)
        }
        return try build(payload: pattern.bytes(count: payloadLength))
    }

    /// A frame carrying `payload` after the transport header (or directly
    /// after the IP header for `.raw`).
    public func build(payload: [UInt8]) throws(PacketBuilderError) -> [UInt8] {
        try validate()
        guard payload.count <= maximumPayloadLength else {
            throw .payloadTooLong(payloadLength: payload.count, limit: maximumPayloadLength)
        }
        var frame = [UInt8](repeating: 0, count: headerLength + payload.count)
        frame.withUnsafeMutableBytes { raw in
            guard let p = raw.baseAddress else { return }  // never: count >= 14
            write(into: p, payload: payload)
        }
        return frame
    }

    // MARK: internals

    private func validate() throws(PacketBuilderError) {
        if let tag = ethernet.vlan {
            guard tag.priority <= 7 else { throw .fieldOutOfRange(field: "VLAN priority", value: Int(tag.priority), maximum: 7) }
            guard tag.id <= 4095 else { throw .fieldOutOfRange(field: "VLAN id", value: Int(tag.id), maximum: 4095) }
        }
        switch network {
        case .ipv4(let v4):
            guard v4.dscp <= 63 else { throw .fieldOutOfRange(field: "DSCP", value: Int(v4.dscp), maximum: 63) }
            guard v4.ecn <= 3 else { throw .fieldOutOfRange(field: "ECN", value: Int(v4.ecn), maximum: 3) }
            guard v4.paddedOptionsLength <= 40 else {
                throw .fieldOutOfRange(field: "IPv4 options length", value: v4.paddedOptionsLength, maximum: 40)
            }
        case .ipv6(let v6):
            guard v6.flowLabel <= 0xFFFFF else {
                throw .fieldOutOfRange(field: "flow label", value: Int(v6.flowLabel), maximum: 0xFFFFF)
            }
        }
    }

    /// Writes the whole frame; `p` has `headerLength + payload.count` bytes.
    /// `validate()` and the `maximumPayloadLength` check ran first, so the
    /// narrowing conversions below (IHL / 4 <= 15, lengths <= 65535) hold.
    private func write(into p: UnsafeMutableRawPointer, payload: [UInt8]) {
        var o = 0
        for b in ethernet.destination.array { p.storeByte(b, at: o); o += 1 }
        for b in ethernet.source.array { p.storeByte(b, at: o); o += 1 }
        if let tag = ethernet.vlan, let tci = tag.tci {
            p.storeBE16(tag.tpid.rawValue, at: o)
            p.storeBE16(tci, at: o + 2)
            o += HeaderSize.vlanTag
        }
        p.storeBE16(network.etherType.rawValue, at: o)
        o += 2

        let l4Length = transport.headerLength + payload.count
        switch network {
        case .ipv4(let v4):
            let ihl = v4.headerLength
            p.storeByte(0x40 | UInt8(ihl / 4), at: o)
            p.storeByte(v4.dscp << 2 | v4.ecn, at: o + IPv4Field.tos)
            p.storeBE16(UInt16(ihl + l4Length), at: o + IPv4Field.totalLength)
            p.storeBE16(v4.identification, at: o + IPv4Field.identification)
            p.storeBE16(v4.dontFragment ? IPv4Field.dontFragment : 0, at: o + IPv4Field.flagsFragment)
            p.storeByte(v4.ttl, at: o + IPv4Field.ttl)
            p.storeByte(transport.ipProtocol.rawValue, at: o + IPv4Field.protocol)
            p.storeBE32(v4.source.value, at: o + IPv4Field.source)
            p.storeBE32(v4.destination.value, at: o + IPv4Field.destination)
            for (i, b) in v4.options.enumerated() { p.storeByte(b, at: o + HeaderSize.ipv4 + i) }
            // Padding bytes are already zero (End of Option List).
            let sum = InternetChecksum.checksum(UnsafeRawBufferPointer(start: p + o, count: ihl))
            p.storeBE16(sum, at: o + IPv4Field.checksum)
            o += ihl
        case .ipv6(let v6):
            p.storeBE32(6 << 28 | UInt32(v6.trafficClass) << 20 | v6.flowLabel, at: o)
            p.storeBE16(UInt16(l4Length), at: o + IPv6Field.payloadLength)
            p.storeByte(transport.ipProtocol.rawValue, at: o + IPv6Field.nextHeader)
            p.storeByte(v6.hopLimit, at: o + IPv6Field.hopLimit)
            p.storeBE64(v6.source.high, at: o + IPv6Field.source)
            p.storeBE64(v6.source.low, at: o + IPv6Field.source + 8)
            p.storeBE64(v6.destination.high, at: o + IPv6Field.destination)
            p.storeBE64(v6.destination.low, at: o + IPv6Field.destination + 8)
            o += HeaderSize.ipv6
        }

        let l4Offset = o
        var checksumOffset: Int? = nil
        switch transport {
        case .udp(let sport, let dport):
            p.storeBE16(sport, at: o + UDPField.sourcePort)
            p.storeBE16(dport, at: o + UDPField.destinationPort)
            p.storeBE16(UInt16(l4Length), at: o + UDPField.length)
            checksumOffset = o + UDPField.checksum
            o += HeaderSize.udp
        case .tcp(let t):
            p.storeBE16(t.sourcePort, at: o + TCPField.sourcePort)
            p.storeBE16(t.destinationPort, at: o + TCPField.destinationPort)
            p.storeBE32(t.sequence, at: o + TCPField.sequence)
            p.storeBE32(t.acknowledgment, at: o + TCPField.acknowledgment)
            p.storeByte(UInt8(HeaderSize.tcp / 4) << 4, at: o + TCPField.dataOffsetFlags)
            p.storeByte(t.flags.rawValue, at: o + TCPField.dataOffsetFlags + 1)
            p.storeBE16(t.window, at: o + TCPField.window)
            checksumOffset = o + TCPField.checksum
            o += HeaderSize.tcp
        case .raw:
            break
        }
        payload.withUnsafeBytes { src in
            if let s = src.baseAddress, src.count > 0 { (p + o).copyMemory(from: s, byteCount: src.count) }
        }

        if let checksumOffset {
            let segment = UnsafeRawBufferPointer(start: p + l4Offset, count: l4Length)
            let proto = transport.ipProtocol
            var sum: UInt16
            switch network {
            case .ipv4(let v4):
                sum = InternetChecksum.transport(segment, source: v4.source, destination: v4.destination, protocol: proto)
            case .ipv6(let v6):
                sum = InternetChecksum.transport(segment, source: v6.source, destination: v6.destination, protocol: proto)
            }
            if proto == .udp { sum = InternetChecksum.udpFieldValue(sum) }
            p.storeBE16(sum, at: checksumOffset)
        }
    }
}

/// Frame-size mixes for throughput tests.
public enum IMIX {
    /// The classic simple IMIX, 7 : 4 : 1 frames of 64, 576 and 1500 bytes,
    /// interleaved so that no size comes in long runs. One period is 12 frames.
    public static let classic: [Int] = [64, 576, 64, 64, 1500, 64, 576, 64, 64, 576, 64, 576]

    /// Average frame size of `classic`: 4252 / 12 ≈ 354.33 bytes.
    public static var classicAverage: Double { Double(classic.reduce(0, +)) / Double(classic.count) }

    /// `count` sizes repeating the `classic` period.
    public static func classicSequence(count: Int) -> [Int] {
        guard count > 0 else { return [] }
        return (0..<count).map { classic[$0 % classic.count] }
    }
}
