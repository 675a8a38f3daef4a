// The checks sluicefuzz runs on one input, and what they expect: an
// independent reading of RFC 4303 (ESP), RFC 6040 (ECN) and the IP headers,
// written here without the product's parsing helpers.
//
// An input is [check · shape][options][bytes…]:
//   byte 0: check = b % 3, SA shape = b / 3 % 24 (6 modes × UDP × ESN);
//   byte 1: bits 0-1 algorithm (3 = ChaCha20-Poly1305 too), bits 2-3 the
//           sequence number's position (1, 0x1234, 2^32 − 1, 2^32 + 5),
//           bit 4 / 5 the engine that seals / opens (where the algorithm has
//           two), bits 6-7 the outer ECN field (`authenticated`);
//   bytes: what the check reads.
//
// * roundTrip: the bytes are a plaintext IP packet. ESPOutbound either
//   refuses it for a reason the packet gives (not an IP datagram, a fragment
//   in transport mode, a sequence number past the SA's space), or its
//   ESP packet must go back through ESPInbound to exactly the datagram
//   (transport IPv4: with a correct header checksum; transport in UDP: with
//   the TCP, UDP or ICMPv6 checksum recomputed, `natTransportChecksum`).
// * received: the bytes are a packet from the unprotected side, as is.
// * authenticated: the bytes are the plaintext of an ESP payload (inner
//   packet or transport payload, padding, pad length, next header) sealed
//   with the SA's key, as a peer holding the key could send: every check
//   after the ICV is reachable, and its verdict is predicted here.
// Every check: nothing written outside the packet's buffer, and a result
// view inside it.

import Crypto
import IPsec
import Packet

// MARK: - The SA shapes

/// One of the 24 SA shapes an input can pick.
struct Shape: CustomStringConvertible {
    /// tunnel 4in4, 6in6, 4in6, 6in4, transport 4, transport 6.
    let cell: Int
    let udp: Bool
    let esn: Bool

    init(_ index: Int) {
        cell = index % 6
        udp = index / 6 % 2 == 1
        esn = index / 12 % 2 == 1
    }

    var tunnel: Bool { cell < 4 }
    /// The family of the header in front of ESP.
    var outerIPv6: Bool { cell == 1 || cell == 2 || cell == 5 }
    /// The family of the protected datagram.
    var innerIPv6: Bool { cell == 1 || cell == 3 || cell == 5 }
    var description: String {
        ["tunnel4in4", "tunnel6in6", "tunnel4in6", "tunnel6in4", "transport4", "transport6"][cell]
            + (udp ? "+udp" : "") + (esn ? "+esn" : "")
    }
}

enum Endpoints {
    static let v4Local = IPv4Address(192, 0, 2, 1)
    static let v4Peer = IPv4Address(198, 51, 100, 9)
    static let v6Local = IPv6Address("2001:db8:ffff::1")!
    static let v6Peer = IPv6Address("2001:db8:eeee::9")!
    static let spi = SPI(0x5151_0001)
    static let natPort: UInt16 = 4500
}

/// The sequence number an input's option byte names.
func sequencePosition(_ options: UInt8) -> UInt64 {
    [1, 0x1234, 0xFFFF_FFFF, 0x1_0000_0005][Int(options >> 2 & 3)]
}

// MARK: - Keys and the crypto context

/// The keys (one material per algorithm, installed on every engine that has
/// it) and the crypto context, made once per process.
final class Fixture {
    let core: CryptoCore
    /// keys[algorithm]: the same material on each engine that serves it.
    let keys: [[InstalledKey]]

    init() throws {
        core = try CryptoCore()
        var keys: [[InstalledKey]] = []
        for (index, algorithm) in [AEADAlgorithm.aes128GCM, .aes256GCM, .chacha20Poly1305].enumerated() {
            var rng = SplitMix64(seed: 0xF022 &+ UInt64(index))
            let material = (0..<algorithm.keyMaterialLength).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            var installed: [InstalledKey] = []
            for engine in [CryptoEngineKind.ipsecMB, .sodium] {
                // An engine without the algorithm here (libsodium: no AES-128-GCM) is skipped.
                if let key = try? AEADKey(algorithm, keyMaterial: material, engine: engine) { installed.append(InstalledKey(key)) }
            }
            guard !installed.isEmpty else { throw FuzzSetupError.noEngine(algorithm.description) }
            keys.append(installed)
        }
        self.keys = keys
    }

    /// The key that seals (`opening` false) or opens under `options`.
    func key(_ options: UInt8, opening: Bool) -> AEADKeyHandle {
        let candidates = keys[min(Int(options & 3), 2)]
        let choice = Int(options >> (opening ? 5 : 4) & 1) % candidates.count
        return candidates[choice].key.unsafeHandle
    }

    func outboundSA(_ shape: Shape, _ options: UInt8) -> OutboundSA {
        let mode: ESPMode
        if !shape.tunnel {
            mode = .transport
        } else if shape.outerIPv6 {
            mode = .tunnel(.ipv6(source: Endpoints.v6Local, destination: Endpoints.v6Peer, hopLimit: 64))
        } else {
            mode = .tunnel(.ipv4(source: Endpoints.v4Local, destination: Endpoints.v4Peer, ttl: 64))
        }
        return OutboundSA(spi: Endpoints.spi, mode: mode, key: key(options, opening: false), esn: shape.esn,
                          udpEncapsulation: shape.udp ? (Endpoints.natPort, Endpoints.natPort) : nil)
    }

    /// The receiving end of `outboundSA` (tunnel: outer source and destination named).
    func inboundSA(_ shape: Shape, _ options: UInt8) -> InboundSA {
        let source: IPAddress? = shape.tunnel ? (shape.outerIPv6 ? .v6(Endpoints.v6Local) : .v4(Endpoints.v4Local)) : nil
        let destination: IPAddress? = shape.tunnel ? (shape.outerIPv6 ? .v6(Endpoints.v6Peer) : .v4(Endpoints.v4Peer)) : nil
        // Families agree and there are no selectors: this cannot throw.
        return try! InboundSA(spi: Endpoints.spi, mode: shape.tunnel ? .tunnel : .transport,
                              key: key(options, opening: true), esn: shape.esn, source: source,
                              destination: destination,
                              udpEncapsulation: shape.udp ? (Endpoints.natPort, Endpoints.natPort) : nil)
    }
}

/// An installed key (not copyable) in a box the fixture's arrays can hold.
final class InstalledKey {
    let key: AEADKey
    init(_ key: consuming AEADKey) { self.key = key }
}

enum FuzzSetupError: Error { case noEngine(String) }

/// A check's verdict on one input: an outcome to tally, or a broken rule.
enum Outcome: Hashable {
    case delivered
    case dropped(ESPDrop)
    case refused(ESPDrop)
    /// Under two bytes: no check named, nothing run.
    case tooShort
}

struct Violation: Error, CustomStringConvertible {
    let description: String
    init(_ text: String) { description = text }
}

// MARK: - A packet buffer with guard zones

/// A packet with writable room before and after it, and guard bytes beyond
/// that nothing may touch.
final class Arena {
    static let guardLength = 48
    static let guardValue: UInt8 = 0xE7
    let memory: UnsafeMutableRawBufferPointer
    var view: PacketView

    init(_ bytes: [UInt8], headroom: Int, tailroom: Int) {
        let size = Self.guardLength * 2 + headroom + bytes.count + tailroom
        memory = .allocate(byteCount: size, alignment: 64)
        memory.initializeMemory(as: UInt8.self, repeating: Self.guardValue)
        let start = memory.baseAddress! + Self.guardLength + headroom
        // Room holds junk (0x3C), so nothing can rely on zeroed head- or tailroom.
        (start - headroom).initializeMemory(as: UInt8.self, repeating: 0x3C, count: headroom)
        (start + bytes.count).initializeMemory(as: UInt8.self, repeating: 0x3C, count: tailroom)
        bytes.withUnsafeBytes { if let b = $0.baseAddress { start.copyMemory(from: b, byteCount: bytes.count) } }
        view = PacketView(start: start, length: bytes.count, headroom: headroom, tailroom: tailroom)
    }

    deinit { memory.deallocate() }

    var bytes: [UInt8] { [UInt8](UnsafeRawBufferPointer(start: view.start, count: view.length)) }

    /// No guard byte changed, and the view (with its room) lies between the guards.
    func check(_ what: String) throws(Violation) {
        let low = memory.baseAddress! + Self.guardLength
        let high = memory.baseAddress! + memory.count - Self.guardLength
        guard view.length >= 0, view.start - view.headroom >= low,
              view.start + view.length + view.tailroom <= high else {
            throw Violation("\(what): the packet view left its buffer")
        }
        for i in 0..<Self.guardLength where memory[i] != Self.guardValue || memory[memory.count - 1 - i] != Self.guardValue {
            throw Violation("\(what): wrote outside the packet's buffer")
        }
    }
}

// MARK: - Independent header reading

func be16(_ b: [UInt8], _ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }

/// RFC 1071 over `bytes`: the value a header's checksum field must hold
/// (computed with the field's own bytes counted as they are).
func onesComplementSum(_ bytes: ArraySlice<UInt8>) -> UInt16 {
    var sum = 0
    var i = bytes.startIndex
    while i + 1 < bytes.endIndex { sum += Int(bytes[i]) << 8 | Int(bytes[i + 1]); i += 2 }
    if i < bytes.endIndex { sum += Int(bytes[i]) << 8 }
    while sum > 0xFFFF { sum = (sum & 0xFFFF) + (sum >> 16) }
    return UInt16(sum)
}

/// `header` with its IPv4 checksum field (bytes 10-11) made correct.
func withIPv4Checksum(_ header: [UInt8]) -> [UInt8] {
    var h = header
    h[10] = 0; h[11] = 0
    let c = ~onesComplementSum(h[...])
    h[10] = UInt8(c >> 8); h[11] = UInt8(truncatingIfNeeded: c)
    return h
}

/// The datagram an IP header at the start of `b` claims, as RFC 791 / 8200
/// read it: IPv4 with IHL ≥ 5 and IHL·4 ≤ total length ≤ the bytes there;
/// IPv6 with 40 + payload length ≤ the bytes there (no jumbograms).
struct Datagram {
    let ipv6: Bool
    let length: Int
    let headerLength: Int  // IPv4: IHL·4; IPv6: 40

    init?(_ b: [UInt8], version expected: UInt8? = nil) {
        guard let first = b.first, expected == nil || first >> 4 == expected! else { return nil }
        if first >> 4 == 4 {
            guard b.count >= 20 else { return nil }
            let ihl = Int(first & 15) * 4
            let total = be16(b, 2)
            guard ihl >= 20, total >= ihl, total <= b.count else { return nil }
            (ipv6, length, headerLength) = (false, total, ihl)
        } else if first >> 4 == 6 {
            guard b.count >= 40, 40 + be16(b, 4) <= b.count else { return nil }
            (ipv6, length, headerLength) = (true, 40 + be16(b, 4), 40)
        } else {
            return nil
        }
    }
}

/// Where an IPv6 datagram's upper layer starts for ESP (RFC 4303 §3.1.1):
/// after Hop-by-Hop (first only), Routing and Destination Options headers,
/// at most 8 of them; nil when one runs past `length`. `proto` 44: a fragment.
/// `enRoute`: a Routing header with Segments Left > 0 was among them (RFC
/// 8200 §4.4: the packet is not yet at the node that takes its ESP).
/// `finalKnown`: every such header names the final destination where a
/// sender finds it (RFC 8200 §8.1: types 0 and 2 last, RFC 8754's type 4
/// first), so a UDP checksum over it can be computed.
func ipv6Upper(_ b: [UInt8], length: Int) -> (proto: UInt8, offset: Int, enRoute: Bool, finalKnown: Bool)? {
    var proto = b[6]
    var offset = 40
    var count = 0
    var enRoute = false
    var finalKnown = true
    while (proto == 0 && count == 0) || proto == 43 || proto == 60 {
        guard count < 8, offset + 8 <= length else { return nil }
        if proto == 43 && b[offset + 3] != 0 {
            enRoute = true
            if ![0, 2, 4].contains(b[offset + 2]) || b[offset + 1] < 2 { finalKnown = false }
        }
        let size = (Int(b[offset + 1]) + 1) * 8
        guard offset + size <= length else { return nil }
        proto = b[offset]
        offset += size
        count += 1
    }
    return (proto, offset, enRoute, finalKnown)
}

/// RFC 3948 §3.1.2 as this gateway applies it to what a UDP-encapsulated
/// transport-mode SA delivers (`d`: the datagram, its upper layer `proto`
/// after `headerLength` bytes): the TCP, UDP or ICMPv6 checksum computed
/// afresh over the pseudo-header of the addresses delivered (RFC 9293 §3.1,
/// RFC 768, RFC 8200 §8.1, RFC 4443 §2.3; UDP over its UDP Length's bytes),
/// a computed 0 sent as 0xFFFF for UDP; unchanged: a UDP checksum 0 over IPv4 (none), a segment too short
/// for its checksum field, ICMP over IPv4. (A Routing header is delivered
/// only with Segments Left 0, when the Destination is the final one.)
func natTransportChecksum(_ d: [UInt8], headerLength: Int, proto: UInt8, ipv6: Bool) -> [UInt8] {
    let length = d.count - headerLength
    let field: Int
    switch proto {
    case 6 where length >= 20: field = 16
    case 17 where length >= 8 && (ipv6 || be16(d, headerLength + 6) != 0): field = 6
    case 58 where ipv6 && length >= 4: field = 2
    default: return d
    }
    // UDP: over the datagram its UDP Length gives (RFC 768); what follows
    // it (TFC padding, RFC 4303 §2.7) is not covered.
    var covered = length
    if proto == 17, case let udpLength = Int(be16(d, headerLength + 4)), udpLength >= 8 && udpLength < length {
        covered = udpLength
    }
    let lengthBytes = [UInt8(truncatingIfNeeded: covered >> 8), UInt8(truncatingIfNeeded: covered)]
    let pseudo = ipv6 ? Array(d[8..<40]) + [0, 0] + lengthBytes + [0, 0, 0, proto]
        : Array(d[12..<20]) + [0, proto] + lengthBytes
    var out = d
    out[headerLength + field] = 0
    out[headerLength + field + 1] = 0
    var c = ~onesComplementSum((pseudo + out[headerLength..<(headerLength + covered)])[...])
    if proto == 17 && c == 0 { c = 0xFFFF }
    out[headerLength + field] = UInt8(c >> 8)
    out[headerLength + field + 1] = UInt8(truncatingIfNeeded: c)
    return out
}

/// RFC 6040 §4.2, Figure 4: the inner ECN field after decapsulation, nil = drop.
/// 0 Not-ECT, 1 ECT(1), 2 ECT(0), 3 CE.
func decapsulatedECN(outer: UInt8, inner: UInt8) -> UInt8? {
    if inner == 0 { return outer == 3 ? nil : 0 }
    if outer == 3 { return 3 }
    if outer == 1 && inner == 2 { return 1 }
    return inner
}
