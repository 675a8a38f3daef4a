// The three checks (see FuzzChecks.swift for the input layout and the rules).

import Crypto
import IPsec
import Packet

/// Room around every packet: enough for any outer header, UDP, ESP header,
/// IV, padding and ICV, so a refusal for room is itself a violation.
let headroom = 96
let tailroom = 48

extension Fixture {
    /// Runs the check `input` names. `control`: the expected bytes of a
    /// successful round trip are deliberately wrong (the harness must notice).
    func run(_ input: [UInt8], control: Bool = false) throws(Violation) -> Outcome {
        guard input.count >= 2 else { return .tooShort }
        let shape = Shape(Int(input[0]) / 3 % 24)
        let options = input[1]
        let bytes = Array(input[2...])
        switch input[0] % 3 {
        case 0: return try roundTrip(bytes, shape, options, control: control)
        case 1: return try received(bytes, shape, options)
        default: return try authenticated(bytes, shape, options)
        }
    }

    /// classify, SA match, decapsulate, with a fresh window that has seen
    /// everything before `sequence`.
    func receive(_ arena: Arena, _ shape: Shape, _ options: UInt8, sequence: UInt64) -> ESPDrop? {
        let sa = inboundSA(shape, options)
        var window = try! ReplayWindow.allocate(configuration: ReplayWindowConfiguration(size: 64, esn: shape.esn),
                                                highestReceived: SequenceNumber(shape.esn ? sequence - 1 : (sequence - 1) & 0xFFFF_FFFF))
        defer { window.deallocate() }
        switch ESPInbound.classify(arena.view, natPorts: .rfc3948) {
        case .notESP: return .notESP
        case .drop(let d): return d
        case .esp(let header):
            guard sa.matches(header) else { return .noSA }
            return ESPInbound.decapsulate(&arena.view, header: header, sa: sa, window: &window, core: core)
        }
    }

    // MARK: roundTrip

    func roundTrip(_ packet: [UInt8], _ shape: Shape, _ options: UInt8, control: Bool) throws(Violation) -> Outcome {
        let sequence = sequencePosition(options)
        let arena = Arena(packet, headroom: headroom, tailroom: tailroom)
        let refusal = ESPOutbound.encapsulate(&arena.view, sa: outboundSA(shape, options),
                                              sequence: SequenceNumber(sequence), core: core)
        try arena.check("outbound \(shape)")
        let datagram = Datagram(packet)
        if !shape.esn && sequence > 0xFFFF_FFFF {
            guard refusal == .sequenceExhausted else {
                throw Violation("\(shape): sequence \(sequence) without ESN gave \(String(describing: refusal))")
            }
            return .refused(.sequenceExhausted)
        }
        // Transport mode protects whole datagrams: fragments are refused, and
        // an IPv6 datagram needs a readable extension-header chain.
        var fragment = false
        var upper: UInt8? = nil
        var upperOffset = 0
        var enRoute = false
        var finalKnown = true
        if let d = datagram, !shape.tunnel {
            if d.ipv6 {
                let walk = ipv6Upper(packet, length: d.length)
                upper = walk?.proto
                upperOffset = walk?.offset ?? 0
                enRoute = walk?.enRoute ?? false
                finalKnown = walk?.finalKnown ?? true
                if let walk, walk.proto == 44 {
                    // RFC 6946: offset 0 and no M flag is an atomic fragment, a
                    // whole datagram; ESP goes after its Fragment header.
                    if walk.offset + 8 <= d.length {
                        fragment = be16(packet, walk.offset + 2) & 0xFFF9 != 0
                        upper = packet[walk.offset]
                        upperOffset = walk.offset + 8
                    } else {
                        upper = nil
                    }
                }
            } else {
                fragment = be16(packet, 6) & 0x3FFF != 0
                upper = packet[9]
                upperOffset = d.headerLength
            }
        }
        let walkable = datagram != nil && (shape.tunnel || !datagram!.ipv6 || upper != nil)
        if let refusal {
            let expected: Bool
            switch refusal {
            // UDP over IPv6 needs a checksum over the final destination.
            case .malformed: expected = !walkable || (!fragment && shape.udp && enRoute && !finalKnown)
            case .fragmented: expected = walkable && fragment
            default: expected = false
            }
            guard expected else {
                throw Violation("\(shape): outbound refused a \(datagram == nil ? "non-" : "")datagram as \(refusal)")
            }
            return .refused(refusal)
        }
        guard let datagram, walkable, !fragment else {
            throw Violation("\(shape): outbound sealed what is not a whole datagram")
        }
        if shape.udp && enRoute && !finalKnown {
            throw Violation("\(shape): outbound sealed in UDP a datagram whose final destination it cannot know")
        }

        let sealed = arena.bytes
        // RFC 1812 §5.2.2: a tunnel's inner IPv4 header with a wrong checksum
        // is sealed as it came (the sender's gateway checks on receipt, not
        // here) and refused once opened.
        let badInnerChecksum = shape.tunnel && !datagram.ipv6
            && onesComplementSum(packet[..<datagram.headerLength]) != 0xFFFF
        if let drop = receive(arena, shape, options, sequence: sequence) {
            // RFC 4303 §2.6: next header 59 marks a dummy packet, which the
            // receiver discards; a transport datagram with no upper layer looks the same.
            if drop == .dummyPacket && upper == 59 { return .dropped(drop) }
            if drop == .malformed && badInnerChecksum { return .dropped(drop) }
            // RFC 8200 §4.4: transport-mode ESP behind a Routing header with
            // Segments Left > 0 is for a node further on, not this one.
            if drop == .notESP && enRoute { return .dropped(drop) }
            throw Violation("\(shape): inbound dropped what outbound sealed (\(drop)); ESP \(hex(sealed))")
        }
        if enRoute {
            throw Violation("\(shape): inbound took ESP still en route (Routing header, Segments Left > 0); ESP \(hex(sealed))")
        }
        if badInnerChecksum {
            throw Violation("\(shape): inbound delivered an inner IPv4 header with a wrong checksum; ESP \(hex(sealed))")
        }
        try arena.check("inbound \(shape)")
        var expected = Array(packet[..<datagram.length])
        if !shape.tunnel && !datagram.ipv6 {
            expected.replaceSubrange(0..<datagram.headerLength,
                                     with: withIPv4Checksum(Array(expected[..<datagram.headerLength])))
        }
        if !shape.tunnel && shape.udp, let upper {
            expected = natTransportChecksum(expected, headerLength: upperOffset, proto: upper, ipv6: datagram.ipv6)
        }
        if control { expected[expected.count / 2] ^= 0x20 }
        let got = arena.bytes
        guard got == expected else {
            let at = (0..<min(got.count, expected.count)).first { got[$0] != expected[$0] } ?? min(got.count, expected.count)
            throw Violation("\(shape): round trip differs at byte \(at) (\(got.count) bytes, expected \(expected.count))")
        }
        return .delivered
    }

    // MARK: received

    func received(_ packet: [UInt8], _ shape: Shape, _ options: UInt8) throws(Violation) -> Outcome {
        // No room at all: any write past the packet hits a guard.
        let arena = Arena(packet, headroom: 0, tailroom: 0)
        let drop = receive(arena, shape, options, sequence: sequencePosition(options))
        try arena.check("received \(shape)")
        guard let drop else {
            // Only a packet sealed under the key gets here; its result must be
            // a datagram whose header claims exactly its length.
            let got = arena.bytes
            guard let d = Datagram(got), d.length == got.count else {
                throw Violation("\(shape): delivered \(got.count) bytes that are not one datagram")
            }
            return .delivered
        }
        return .dropped(drop)
    }

    // MARK: authenticated

    /// Builds [outer IP][UDP][ESP header][IV][plaintext sealed][ICV].
    func seal(_ plaintext: [UInt8], _ shape: Shape, _ options: UInt8, sequence: UInt64) -> [UInt8] {
        let udpLength = shape.udp ? 8 : 0
        let espLength = 16 + plaintext.count + 16
        let outerECN = options >> 6
        var packet: [UInt8]
        if shape.outerIPv6 {
            let payload = udpLength + espLength
            packet = [0x60, outerECN << 4, 0, 0, UInt8(payload >> 8), UInt8(truncatingIfNeeded: payload),
                      shape.udp ? 17 : 50, 64] + Endpoints.v6Local.bytes + Endpoints.v6Peer.bytes
        } else {
            let total = 20 + udpLength + espLength
            packet = withIPv4Checksum([0x45, outerECN, UInt8(total >> 8), UInt8(truncatingIfNeeded: total), 0x12, 0x34, 0x40, 0,
                                       64, shape.udp ? 17 : 50, 0, 0] + Endpoints.v4Local.bytes + Endpoints.v4Peer.bytes)
        }
        if shape.udp {
            let length = udpLength + espLength
            packet += [0x11, 0x94, 0x11, 0x94, UInt8(length >> 8), UInt8(truncatingIfNeeded: length), 0, 0]
        }
        let spi = Endpoints.spi.rawValue
        let ivBytes = (0..<8).map { UInt8(truncatingIfNeeded: sequence >> (56 - 8 * $0)) }
        packet += [UInt8(spi >> 24), UInt8(truncatingIfNeeded: spi >> 16), UInt8(truncatingIfNeeded: spi >> 8),
                   UInt8(truncatingIfNeeded: spi)] + ivBytes[4...] + ivBytes + plaintext + [UInt8](repeating: 0, count: 16)
        let esp = packet.count - espLength
        packet.withUnsafeMutableBytes { raw in
            let e = raw.baseAddress! + esp
            var aad = SIMD4<UInt32>()
            let aadLength = ESPAssociatedData.store(spi: spi, sequence: sequence, extendedSequenceNumbers: shape.esn, to: &aad)
            withUnsafeBytes(of: &aad) { a in
                key(options, opening: false).seal(core, payload: e + 16, length: plaintext.count, iv: e + 8,
                                                  aad: a.baseAddress!, aadLength: aadLength, icv: e + 16 + plaintext.count)
            }
        }
        return packet
    }

    func authenticated(_ plaintext: [UInt8], _ shape: Shape, _ options: UInt8) throws(Violation) -> Outcome {
        let sequence = sequencePosition(options) & (shape.esn ? ~0 : 0xFFFF_FFFF)
        let packet = seal(plaintext, shape, options, sequence: sequence)
        let outerLength = (shape.outerIPv6 ? 40 : 20) + (shape.udp ? 8 : 0)
        let arena = Arena(packet, headroom: 0, tailroom: 0)
        let drop = receive(arena, shape, options, sequence: sequence)
        try arena.check("authenticated \(shape)")
        let expected = predict(plaintext, shape, outerECN: options >> 6, outer: Array(packet[..<(shape.outerIPv6 ? 40 : 20)]))
        switch (drop, expected) {
        case (nil, .success), (nil, .ipv4ChecksumChanged):
            guard expected.matches(arena.bytes) else {
                throw Violation("\(shape): delivered \(hex(arena.bytes)), predicted \(expected); ESP \(hex(packet))")
            }
            return .delivered
        case (let d?, .drop(let e)) where d == e:
            return .dropped(d)
        default:
            throw Violation("\(shape): got \(drop.map { "\($0)" } ?? "delivery"), predicted \(expected); "
                            + "plaintext \(hex(plaintext)) after \(outerLength) outer bytes")
        }
    }

    enum Prediction: CustomStringConvertible {
        case success([UInt8])
        /// An inner IPv4 header whose ECN field changed: these bytes except
        /// the checksum, which must verify if the arriving one did.
        case ipv4ChecksumChanged([UInt8], headerLength: Int, wasValid: Bool)
        case drop(ESPDrop)
        var description: String {
            switch self {
            case .success(let b), .ipv4ChecksumChanged(let b, _, _): "delivery of \(b.count) bytes"
            case .drop(let d): "\(d)"
            }
        }

        /// Whether `got` is the delivery predicted.
        func matches(_ got: [UInt8]) -> Bool {
            switch self {
            case .success(let b): return got == b
            case .ipv4ChecksumChanged(let b, let headerLength, let wasValid):
                guard got.count == b.count, got.indices.allSatisfy({ $0 == 10 || $0 == 11 || got[$0] == b[$0] }) else {
                    return false
                }
                return !wasValid || onesComplementSum(got[..<headerLength]) == 0xFFFF
            case .drop: return false
            }
        }
    }

    /// What RFC 4303 §3.4.4 and RFC 6040 say happens to an authentic payload.
    func predict(_ t: [UInt8], _ shape: Shape, outerECN: UInt8, outer: [UInt8]) -> Prediction {
        let n = t.count
        guard n >= 4, n % 4 == 0 else { return .drop(.badLength) }
        let padLength = Int(t[n - 2])
        let nextHeader = t[n - 1]
        guard padLength <= n - 2 else { return .drop(.badPadding) }
        let payloadLength = n - 2 - padLength
        for i in 0..<padLength where t[payloadLength + i] != UInt8(truncatingIfNeeded: i + 1) {
            return .drop(.badPadding)
        }
        if nextHeader == 59 { return .drop(.dummyPacket) }
        let payload = Array(t[..<payloadLength])
        guard shape.tunnel else {
            // Transport: the outer header comes back with the next header and length.
            var header = outer
            if shape.outerIPv6 {
                header[6] = nextHeader
                header[4] = UInt8(payloadLength >> 8); header[5] = UInt8(truncatingIfNeeded: payloadLength)
            } else {
                header[9] = nextHeader
                let total = 20 + payloadLength
                header[2] = UInt8(total >> 8); header[3] = UInt8(truncatingIfNeeded: total)
                header = withIPv4Checksum(header)
            }
            guard shape.udp else { return .success(header + payload) }
            return .success(natTransportChecksum(header + payload, headerLength: header.count, proto: nextHeader,
                                                 ipv6: shape.outerIPv6))
        }
        guard nextHeader == 4 || nextHeader == 41 else { return .drop(.unsupportedNextHeader) }
        guard let inner = Datagram(payload, version: nextHeader == 4 ? 4 : 6) else { return .drop(.malformed) }
        // RFC 1812 §5.2.2: an inner IPv4 header with a wrong checksum is not forwarded.
        if !inner.ipv6 && onesComplementSum(payload[..<inner.headerLength]) != 0xFFFF { return .drop(.malformed) }
        var result = Array(payload[..<inner.length])
        let innerECN = inner.ipv6 ? result[1] >> 4 & 3 : result[1] & 3
        guard let ecn = decapsulatedECN(outer: outerECN, inner: innerECN) else { return .drop(.ecnDrop) }
        guard ecn != innerECN else { return .success(result) }
        if inner.ipv6 {
            result[1] = result[1] & 0xCF | ecn << 4
            return .success(result)
        }
        // IPv4: the checksum is updated incrementally (RFC 1624), so a valid
        // one must stay valid; its bytes are compared by that rule alone.
        result[1] = result[1] & 0xFC | ecn
        let valid = onesComplementSum(payload[..<inner.headerLength]) == 0xFFFF
        return .ipv4ChecksumChanged(result, headerLength: inner.headerLength, wasValid: valid)
    }
}

func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}
