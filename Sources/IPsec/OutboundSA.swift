// The per-SA record the outbound ESP path reads: everything that does not
// change per packet, computed once when the SA is installed. The tunnel's
// outer IP header (and the UDP header of NAT traversal) is prebuilt as a
// 48-byte inline template; per packet only the length, TOS / traffic class,
// identification, DF and checksum fields are patched in (DPDK lib/ipsec and
// VPP keep the same kind of template in their SA records).
//
// Outer header decisions (tunnel mode):
//   * TOS / Traffic Class: DSCP copied from the inner header; ECN per RFC
//     6040 normal mode (`ECNTunnel.encapsulate`: copied, CE included).
//   * TTL / Hop Limit: the SA's (default 64), not the inner packet's.
//   * IPv4 DF (`DFPolicy`): `copy` takes the inner IPv4 header's DF bit and
//     clears DF for an inner IPv6 packet (IPv6 packets carry no DF bit; this is
//     what the command language's `df copy` documents, and it lets a router
//     fragment the outer packet rather than drop it); `set` and `clear` force it.
//   * IPv4 Identification: the low 16 bits of (sequence number + an offset
//     derived from the SPI). The sequence number is unique per SA, so the ID
//     repeats only after 65536 packets of the SA (RFC 6864 §4.2 asks no more
//     of a source; with DF set any value is allowed, §4.1), and it costs no
//     per-packet state. The SPI-derived offset keeps several SAs between the
//     same two gateways (per-CPU SAs) from starting on the same IDs.
//   * IPv6 Flow Label: the inner IPv6 packet's flow label (keeps ECMP on the
//     path apart per inner flow as well as the inner sender chose), 0 for an
//     inner IPv4 packet.
//   * UDP encapsulation (RFC 3948): the SA's ports; checksum 0 over IPv4
//     (RFC 3948 §2.1), computed over IPv6 (RFC 6935/6936 allow 0 only under
//     conditions a gateway cannot promise).

import Crypto
import Packet

/// The outer IP header of a tunnel-mode SA.
public enum OuterHeader: Hashable, Sendable {
    case ipv4(source: IPv4Address, destination: IPv4Address, ttl: UInt8 = 64)
    case ipv6(source: IPv6Address, destination: IPv6Address, hopLimit: UInt8 = 64)

    /// The default TTL / hop limit of an outer header.
    public static let defaultTTL: UInt8 = 64

    public var isIPv6: Bool { if case .ipv6 = self { true } else { false } }
}

/// ESP mode (RFC 4301 §4.1).
public enum ESPMode: Hashable, Sendable {
    /// A new outer IP header (this one) carries the whole inner packet.
    case tunnel(OuterHeader)
    /// ESP goes between the packet's own IP header and its payload.
    case transport
}

/// What a tunnel SA does with the DF bit of an IPv4 outer header.
public enum DFPolicy: UInt8, Hashable, Sendable, CaseIterable, BitwiseCopyable {
    /// The inner IPv4 header's DF bit; clear for an inner IPv6 packet.
    case copy
    case set
    case clear
}

/// The outbound ESP parameters of one SA, precomputed at install time.
/// Trivially copyable (no references; `BitwiseCopyable` as soon as
/// `AEADKeyHandle` declares it): keep it in the owning core's SA
/// replica. The key handle must outlive it.
public struct OutboundSA {
    /// How the outer header (if any) is built.
    @usableFromInline enum Layout: UInt8, BitwiseCopyable {
        case tunnelIPv4
        case tunnelIPv6
        case transport
    }

    public let spi: SPI
    public let key: AEADKeyHandle
    /// Extended (64-bit) sequence numbers: the high half goes into the AAD.
    public let esn: Bool
    public let df: DFPolicy
    @usableFromInline let layout: Layout
    @usableFromInline let udp: Bool
    @usableFromInline let udpSourcePort: UInt16
    @usableFromInline let udpDestinationPort: UInt16
    /// Outer IP header (20 or 40 bytes), then the UDP header when `udp`, as
    /// wire bytes; the per-packet fields are zero. Unused bytes are zero.
    @usableFromInline let template: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)
    /// Bytes of `template` in use: 0 (transport), 20, 28, 40 or 48.
    @usableFromInline let templateLength: Int
    /// IPv4 outer: the one's-complement sum of the template's constant header
    /// words (version/IHL, TTL/protocol, addresses), not folded.
    @usableFromInline let ipv4ChecksumBase: UInt32
    /// Added to the sequence number to make the outer IPv4 identification.
    @usableFromInline let identificationOffset: UInt16

    /// `mode` gives the outer header of a tunnel (any inner/outer family mix
    /// works); `udpEncapsulation` the UDP ports for NAT traversal (RFC 3948:
    /// 4500 at both ends unless IKE moved them), nil for plain ESP. `df`
    /// applies to an IPv4 outer header only.
    public init(spi: SPI, mode: ESPMode, key: AEADKeyHandle, esn: Bool,
                udpEncapsulation: (source: UInt16, destination: UInt16)? = nil, df: DFPolicy = .copy) {
        self.spi = spi
        self.key = key
        self.esn = esn
        self.df = df
        udp = udpEncapsulation != nil
        udpSourcePort = udpEncapsulation?.source ?? 0
        udpDestinationPort = udpEncapsulation?.destination ?? 0
        identificationOffset = UInt16(truncatingIfNeeded: spi.rawValue ^ spi.rawValue >> 16)

        var bytes = (UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0), UInt64(0))
        var length = 0
        var base: UInt32 = 0
        let nextProtocol: UInt8 = udpEncapsulation != nil ? IPProtocol.udp.rawValue : IPProtocol.esp.rawValue
        switch mode {
        case .transport:
            layout = .transport
        case .tunnel(.ipv4(let source, let destination, let ttl)):
            layout = .tunnelIPv4
            length = HeaderSize.ipv4
            withUnsafeMutableBytes(of: &bytes) { t in
                let p = t.baseAddress!
                p.storeByte(0x45, at: IPv4Field.versionIHL)
                p.storeByte(ttl, at: IPv4Field.ttl)
                p.storeByte(nextProtocol, at: IPv4Field.protocol)
                p.storeBE32(source.value, at: IPv4Field.source)
                p.storeBE32(destination.value, at: IPv4Field.destination)
            }
            // Words 0x4500, TTL/protocol and the four address halves.
            base = 0x4500 &+ (UInt32(ttl) << 8 | UInt32(nextProtocol))
                &+ (source.value >> 16) &+ (source.value & 0xFFFF)
                &+ (destination.value >> 16) &+ (destination.value & 0xFFFF)
        case .tunnel(.ipv6(let source, let destination, let hopLimit)):
            layout = .tunnelIPv6
            length = HeaderSize.ipv6
            withUnsafeMutableBytes(of: &bytes) { t in
                let p = t.baseAddress!
                p.storeBE32(0x6000_0000, at: IPv6Field.versionClassFlow)
                p.storeByte(nextProtocol, at: IPv6Field.nextHeader)
                p.storeByte(hopLimit, at: IPv6Field.hopLimit)
                p.storeBE64(source.high, at: IPv6Field.source)
                p.storeBE64(source.low, at: IPv6Field.source + 8)
                p.storeBE64(destination.high, at: IPv6Field.destination)
                p.storeBE64(destination.low, at: IPv6Field.destination + 8)
            }
        }
        if let ports = udpEncapsulation, layout != .transport {
            let at = length
            withUnsafeMutableBytes(of: &bytes) { t in
                t.baseAddress!.storeBE16(ports.source, at: at + UDPField.sourcePort)
                t.baseAddress!.storeBE16(ports.destination, at: at + UDPField.destinationPort)
            }
            length += HeaderSize.udp
        }
        template = bytes
        templateLength = length
        ipv4ChecksumBase = base
    }

    /// True for tunnel mode.
    @inlinable public var isTunnel: Bool { layout != .transport }
    /// The UDP ports of NAT traversal, nil for plain ESP.
    public var udpEncapsulation: (source: UInt16, destination: UInt16)? {
        udp ? (udpSourcePort, udpDestinationPort) : nil
    }

    /// The mode, with the outer header rebuilt from the template.
    public var mode: ESPMode {
        var t = template
        return withUnsafeBytes(of: &t) { raw in
            let p = raw.baseAddress!
            switch layout {
            case .transport:
                return .transport
            case .tunnelIPv4:
                return .tunnel(.ipv4(source: IPv4Address(p.loadBE32(at: IPv4Field.source)),
                                     destination: IPv4Address(p.loadBE32(at: IPv4Field.destination)),
                                     ttl: p.loadByte(at: IPv4Field.ttl)))
            case .tunnelIPv6:
                return .tunnel(.ipv6(
                    source: IPv6Address(high: p.loadBE64(at: IPv6Field.source), low: p.loadBE64(at: IPv6Field.source + 8)),
                    destination: IPv6Address(high: p.loadBE64(at: IPv6Field.destination),
                                             low: p.loadBE64(at: IPv6Field.destination + 8)),
                    hopLimit: p.loadByte(at: IPv6Field.hopLimit)))
            }
        }
    }

    /// Bytes ESP adds in front of the payload: outer header and UDP (tunnel)
    /// or UDP (transport), ESP header and IV.
    @inlinable public var headerOverhead: Int {
        (layout == .transport ? (udp ? HeaderSize.udp : 0) : templateLength) &+ ESPLayout.headerAndIV
    }

    /// Tunnel mode: calls `body` with the outer IP header as the template
    /// holds it (its version, addresses and the rest as sent).
    @inlinable
    public func withOuterHeader<R>(_ body: (UnsafeRawPointer) -> R) -> R {
        withUnsafeBytes(of: template) { body($0.baseAddress!) }
    }

    /// Writes the template's first `templateLength` bytes, rounded up to 8, at
    /// `p` (the caller has `templateLength + 16` writable bytes there: the ESP
    /// header and IV that follow are written afterwards).
    @inlinable @inline(__always)
    func writeTemplate(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: template.0, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: template.1, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: template.2, toByteOffset: 16, as: UInt64.self)
        if templateLength > 24 { p.storeBytes(of: template.3, toByteOffset: 24, as: UInt64.self) }
        if templateLength > 32 { p.storeBytes(of: template.4, toByteOffset: 32, as: UInt64.self) }
        if templateLength > 40 { p.storeBytes(of: template.5, toByteOffset: 40, as: UInt64.self) }
    }
}

/// Fixed ESP sizes for the AEADs (8-byte IV, 16-byte ICV).
public enum ESPLayout {
    /// SPI, sequence number and IV.
    @inlinable public static var headerAndIV: Int { 16 }
    @inlinable public static var iv: Int { 8 }
    @inlinable public static var icv: Int { 16 }
}

extension AEADBurst {
    /// Adds the AEAD work of the ESP packet whose header (SPI, sequence
    /// number, IV) is at `esp`, `cipherLength` bytes after the IV, ICV after
    /// them: the AAD read in place from the header, or, with ESN (`sequence`
    /// the full number), built in the burst's scratch. Both `stage`s use it.
    @inlinable @inline(__always)
    func appendESP(esp: UnsafeMutableRawPointer, cipherLength: Int, key: AEADKeyHandle, spi: SPI,
                   sequence: SequenceNumber, esn: Bool) {
        let payload = esp + ESPLayout.headerAndIV
        if esn {
            let slot = nextAAD
            let aadLength = ESPAssociatedData.store(spi: spi.rawValue, sequence: sequence.rawValue,
                                                    extendedSequenceNumbers: true, to: slot)
            append(key: key, payload: payload, length: cipherLength, iv: esp + ESPLayout.iv, aad: slot,
                   aadLength: aadLength, icv: payload + cipherLength)
        } else {
            append(key: key, payload: payload, length: cipherLength, iv: esp + ESPLayout.iv, aad: esp,
                   aadLength: AEADAlgorithm.aadLength, icv: payload + cipherLength)
        }
    }
}
