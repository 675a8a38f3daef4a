// Shared helpers for the ESP tests: packet buffers with guarded head- and
// tailroom, keys, inner-packet builders, the known-answer file and the scapy
// peer.

import Crypto
import Foundation
import TestSupport
@testable import IPsec
import Packet
import Testing

// MARK: - Bytes

func hexBytes(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = s.makeIterator()
    while let a = it.next(), let b = it.next() { out.append(UInt8(String([a, b]), radix: 16)!) }
    return out
}

func hexString(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

func be16(_ b: [UInt8], _ i: Int) -> UInt16 { UInt16(b[i]) << 8 | UInt16(b[i + 1]) }
func be32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(be16(b, i)) << 16 | UInt32(be16(b, i + 2)) }

/// The Internet checksum over `bytes` (0 when a correct checksum is included).
func internetChecksum(_ bytes: [UInt8]) -> UInt16 { InternetChecksum.checksum(bytes) }

// MARK: - Guarded packet buffer

/// One packet in the middle of a heap buffer: `headroom` and `tailroom`
/// writable bytes around it, and guard bytes beyond those that nothing may
/// write (checked by `guardsIntact`).
final class PacketBuffer {
    static let guardSize = 64
    static let guardByte: UInt8 = 0xA5
    let base: UnsafeMutableRawPointer
    let capacity: Int
    var view: PacketView

    init(_ bytes: [UInt8], headroom: Int = 128, tailroom: Int = 128) {
        capacity = Self.guardSize + headroom + bytes.count + tailroom + Self.guardSize
        base = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1), alignment: 64)
        base.initializeMemory(as: UInt8.self, repeating: Self.guardByte, count: capacity)
        // Head- and tailroom hold junk, not zeros, so nothing relies on zeroed room.
        (base + Self.guardSize).initializeMemory(as: UInt8.self, repeating: 0x5C, count: headroom)
        (base + Self.guardSize + headroom + bytes.count).initializeMemory(as: UInt8.self, repeating: 0xC5,
                                                                          count: tailroom)
        let start = base + Self.guardSize + headroom
        bytes.withUnsafeBytes { if let b = $0.baseAddress { start.copyMemory(from: b, byteCount: bytes.count) } }
        view = PacketView(start: start, length: bytes.count, headroom: headroom, tailroom: tailroom)
    }

    deinit { base.deallocate() }

    /// The bytes `view` describes now.
    var bytes: [UInt8] { [UInt8](UnsafeRawBufferPointer(start: view.start, count: view.length)) }

    /// The view is inside the writable area and no guard byte changed.
    var guardsIntact: Bool {
        let head = base + Self.guardSize
        let tailEnd = base + capacity - Self.guardSize
        guard view.start - view.headroom == head, view.start + view.length + view.tailroom == tailEnd else {
            return false
        }
        for i in 0..<Self.guardSize {
            if base.load(fromByteOffset: i, as: UInt8.self) != Self.guardByte { return false }
            if tailEnd.load(fromByteOffset: i, as: UInt8.self) != Self.guardByte { return false }
        }
        return true
    }
}

// MARK: - Keys

/// An installed key with its handle (the owner must outlive uses of the handle).
final class TestKey {
    let key: AEADKey
    let material: [UInt8]
    let algorithm: AEADAlgorithm
    init(_ algorithm: AEADAlgorithm, material: [UInt8], engine: CryptoEngineKind = .auto) throws {
        key = try AEADKey(algorithm, keyMaterial: material, engine: engine)
        self.material = material
        self.algorithm = algorithm
    }
    convenience init(_ algorithm: AEADAlgorithm, seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        try self.init(algorithm, material: (0..<algorithm.keyMaterialLength).map { _ in
            UInt8(truncatingIfNeeded: rng.next())
        })
    }
    var handle: AEADKeyHandle { key.unsafeHandle }
    var scapyName: String { algorithm == .chacha20Poly1305 ? "CHACHA20-POLY1305" : "AES-GCM" }
}

/// One crypto context per test process would do; one per use is simplest.
func makeCore() throws -> CryptoCore { try CryptoCore() }

// MARK: - Inner packets

enum Inner {
    static let v4Source = IPv4Address(10, 0, 0, 1)
    static let v4Destination = IPv4Address(10, 1, 0, 7)
    static let v6Source = IPv6Address("2001:db8:10::1")!
    static let v6Destination = IPv6Address("2001:db8:20::7")!

    /// IPv4 / UDP with `payload` bytes; TOS, DF and identification as given.
    static func ipv4UDP(payload: Int, tos: UInt8 = 0, df: Bool = true, id: UInt16 = 0x1234,
                        sourcePort: UInt16 = 1111, destinationPort: UInt16 = 53, seed: UInt64 = 1) -> [UInt8] {
        let spec = IPv4Spec(source: v4Source, destination: v4Destination, ttl: 61, dscp: tos >> 2, ecn: tos & 3,
                            identification: id, dontFragment: df)
        let builder = PacketBuilder(network: .ipv4(spec),
                                    transport: .udp(sourcePort: sourcePort, destinationPort: destinationPort),
                                    pattern: .pseudoRandom(seed: seed))
        let frame = try! builder.build(payloadLength: payload)
        return Array(frame[builder.networkOffset...])
    }

    /// IPv6 / UDP with `payload` bytes.
    static func ipv6UDP(payload: Int, trafficClass: UInt8 = 0, flowLabel: UInt32 = 0xABCDE,
                        sourcePort: UInt16 = 2222, destinationPort: UInt16 = 443, seed: UInt64 = 2) -> [UInt8] {
        let spec = IPv6Spec(source: v6Source, destination: v6Destination, hopLimit: 60, trafficClass: trafficClass,
                            flowLabel: flowLabel)
        let builder = PacketBuilder(network: .ipv6(spec),
                                    transport: .udp(sourcePort: sourcePort, destinationPort: destinationPort),
                                    pattern: .pseudoRandom(seed: seed))
        let frame = try! builder.build(payloadLength: payload)
        return Array(frame[builder.networkOffset...])
    }

    /// IPv6 / Fragment / UDP with `payload` bytes: the Fragment header's
    /// offset-and-flags bytes as given ((0, 0): an atomic fragment, RFC 6946),
    /// identification 0x12345678; `hopByHop` puts an 8-byte Hop-by-Hop header
    /// (a PadN option) in front of it.
    static func ipv6UDPFragment(payload: Int, offsetAndFlags: (UInt8, UInt8), hopByHop: Bool = false,
                                seed: UInt64 = 2) -> [UInt8] {
        let plain = ipv6UDP(payload: payload, seed: seed)
        var headers: [UInt8] = hopByHop ? [44, 0, 1, 4, 0, 0, 0, 0] : []
        headers += [17, 0, offsetAndFlags.0, offsetAndFlags.1, 0x12, 0x34, 0x56, 0x78]
        var packet = Array(plain[0..<40]) + headers + Array(plain[40...])
        packet[6] = hopByHop ? 0 : 44
        let payloadLength = packet.count - 40
        packet[4] = UInt8(payloadLength >> 8)
        packet[5] = UInt8(payloadLength & 0xFF)
        return packet
    }

    static func udp(ipv6: Bool, payload: Int, seed: UInt64 = 3) -> [UInt8] {
        ipv6 ? ipv6UDP(payload: payload, seed: seed) : ipv4UDP(payload: payload, seed: seed)
    }

    /// A selector that covers the packets above.
    static func selector(ipv6: Bool) -> TrafficSelector {
        ipv6 ? TrafficSelector(source: IPPrefix("2001:db8:10::/48")!, destination: IPPrefix("2001:db8:20::/48")!)!
            : TrafficSelector(source: IPPrefix("10.0.0.0/24")!, destination: IPPrefix("10.1.0.0/16")!)!
    }
}

// MARK: - Tunnel endpoints

enum Gateways {
    static let v4Local = IPv4Address(192, 0, 2, 1)
    static let v4Peer = IPv4Address(198, 51, 100, 9)
    static let v6Local = IPv6Address("2001:db8:ffff::1")!
    static let v6Peer = IPv6Address("2001:db8:eeee::9")!

    /// Outbound outer header from local to peer.
    static func outbound(ipv6: Bool, ttl: UInt8 = 64) -> OuterHeader {
        ipv6 ? .ipv6(source: v6Local, destination: v6Peer, hopLimit: ttl)
            : .ipv4(source: v4Local, destination: v4Peer, ttl: ttl)
    }
}

// MARK: - Known answers


// MARK: - Windows

/// A replay window with its own bitmap, freed with the box.
final class TestWindow {
    var window: ReplayWindow
    init(esn: Bool, size: Int = 64, highest: UInt64 = 0) throws {
        window = try ReplayWindow.allocate(configuration: ReplayWindowConfiguration(size: size, esn: esn),
                                           highestReceived: SequenceNumber(highest))
    }
    deinit { window.deallocate() }
}

// MARK: - One inbound pass

/// classify, check the SA matches, decapsulate.
func receive(_ buffer: PacketBuffer, sa: InboundSA, window: TestWindow, core: borrowing CryptoCore,
             natPorts: NATTraversalPorts = .rfc3948) -> ESPDrop? {
    switch ESPInbound.classify(buffer.view, natPorts: natPorts) {
    case .notESP: return .notESP
    case .drop(let drop): return drop
    case .esp(let header):
        guard sa.matches(header) else { return .noSA }
        return ESPInbound.decapsulate(&buffer.view, header: header, sa: sa, window: &window.window, core: core)
    }
}
