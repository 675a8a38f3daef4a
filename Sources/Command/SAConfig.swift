// The configuration of one security association, as `sa add` describes it:
// cold, validated control-plane values. The data path's SA records are built
// from these elsewhere.
//
// Names here stay clear of the IPsec and Crypto modules' (`SPI`,
// `AEADAlgorithm`, `CryptoEngineKind`): a file importing Command next to them
// could not qualify a clash as `Command.SPI`, because `Command` is also the
// name of this module's enum.

import Crypto
import Packet

/// A Security Parameters Index (RFC 4303 §2.1), as the command language reads
/// it. Converts to `IPsec.SPI` by its raw value.
public struct SecurityParameterIndex: RawRepresentable, Hashable, Comparable, Sendable, CustomStringConvertible {
    public var rawValue: UInt32
    public init(rawValue: UInt32) { self.rawValue = rawValue }
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// 0 is reserved for local use and 1…255 by IANA (RFC 4303 §2.1); no SA
    /// or policy may name one.
    public var isReserved: Bool { rawValue < 256 }

    public static func < (a: Self, b: Self) -> Bool { a.rawValue < b.rawValue }

    /// `0x` and eight lower-case hex digits, as `ip xfrm` and `IPsec.SPI` write it.
    public var description: String {
        let hex = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - hex.count) + hex
    }
}

/// Which way traffic flows through an SA or a policy.
public enum IPsecDirection: String, Sendable, Hashable, CaseIterable {
    /// Arriving ESP, decrypted here (and inbound cleartext checked by policy).
    case inbound = "in"
    /// Cleartext leaving through the gateway, encrypted here.
    case outbound = "out"
}

/// ESP mode (RFC 4301 §4.1).
public enum SAMode: String, Sendable, Hashable, CaseIterable {
    /// A new outer IP header from the SA's src to its dst carries the packet.
    case tunnel
    /// ESP goes between the packet's own IP header and its payload.
    case transport
}

/// The AEAD transforms the language offers, by their command names.
public enum AEADTransform: String, Sendable, Hashable, CaseIterable {
    /// AES-GCM with a 16-byte key and 16-byte ICV (RFC 4106).
    case aesGCM128 = "aes-gcm-128"
    /// AES-GCM with a 32-byte key and 16-byte ICV (RFC 4106).
    case aesGCM256 = "aes-gcm-256"
    /// ChaCha20-Poly1305 (RFC 7634).
    case chacha20Poly1305 = "chacha20-poly1305"

    /// Bytes of the cipher key, without the salt.
    public var keyLength: Int {
        switch self {
        case .aesGCM128: 16
        case .aesGCM256, .chacha20Poly1305: 32
        }
    }

    /// The salt that follows the key on a `key` line: the implicit nonce part
    /// (RFC 4106 §4, RFC 7634 §2).
    public static let saltLength = 4

    /// Bytes a `key` value must have: the cipher key followed by the salt.
    public var keyMaterialLength: Int { keyLength + Self.saltLength }
}

/// Which crypto engine an SA asks for; `auto` picks intel-ipsec-mb where it
/// initialises on the CPU and libsodium otherwise.
public enum CryptoEngineChoice: String, Sendable, Hashable, CaseIterable {
    case auto
    case ipsecMB = "ipsec-mb"
    case sodium
}

/// What a tunnel SA does with the DF bit of an IPv4 outer header.
public enum OuterDF: String, Sendable, Hashable, CaseIterable {
    /// From the inner IPv4 header (clear for inner IPv6).
    case copy
    case set
    case clear
}

/// An SA's lifetime (RFC 4301 §4.4.2.1): soft and hard limits on bytes,
/// packets, seconds since it was installed and seconds since its first use.
/// Soft raises one EXPIRE(soft) event; hard removes the SA from the data path
/// and raises EXPIRE(hard).
public struct SALifetime: Sendable, Hashable {
    public struct Limits: Sendable, Hashable {
        public var soft: UInt64?
        public var hard: UInt64?
        public init(soft: UInt64? = nil, hard: UInt64? = nil) { self.soft = soft; self.hard = hard }
    }
    public enum Kind: String, Sendable, CaseIterable {
        case bytes, packets, seconds
        case useSeconds = "use-seconds"
    }
    public var limits: [Kind: Limits] = [:]

    public init(_ limits: [Kind: Limits] = [:]) { self.limits = limits }

    public subscript(kind: Kind) -> Limits? {
        get { limits[kind] }
        set { limits[kind] = newValue }
    }
    public var isEmpty: Bool { limits.isEmpty }
}

/// UDP encapsulation of ESP for NAT traversal (RFC 3948).
public struct UDPEncapsulation: Sendable, Hashable {
    public var sourcePort: UInt16
    public var destinationPort: UInt16

    public init(sourcePort: UInt16 = 4500, destinationPort: UInt16 = 4500) {
        self.sourcePort = sourcePort
        self.destinationPort = destinationPort
    }

    /// Ports an `encap udp` line may give; 0 is not a port a peer can use.
    public static let ports: ClosedRange<UInt16> = 1...65535
    /// RFC 3948 §2: port 4500 at both ends, what `encap udp` alone means.
    public static let rfc3948 = UDPEncapsulation()
}

/// An SA's key material: the cipher key followed by the 4-byte salt, exactly
/// as the `key` value gives it.
///
/// The bytes live in `SecretBytes`: locked, guarded memory that is zeroed
/// when the last SA config holding them goes (`sa del`, a re-key, `clear`).
/// Copies of an `SAConfig` share them. What cannot be wiped is the command
/// text the key arrived in, which the caller owns. `description`,
/// `debugDescription` and the mirror say only how many bytes there are, so
/// printing an `SAConfig` or a `GatewayConfig` does not print keys;
/// `Command.description` and `GatewayConfig.configText` do, because they are
/// the config file format.
public struct SAKeyMaterial: Sendable, Hashable, CustomStringConvertible, CustomDebugStringConvertible,
    CustomReflectable
{
    /// The longest key material accepted (`SecretBytes.maximumCount`).
    public static let maximumLength = SecretBytes.maximumCount

    private let secret: SecretBytes

    /// Copies `bytes`; the caller's array is left as it is.
    public init(_ bytes: [UInt8]) throws(CryptoError) {
        secret = try bytes.withUnsafeBytes { raw in
            Result { () throws(CryptoError) in try SecretBytes(copying: raw) }
        }.get()
    }

    /// Takes `bytes` and zeroes the array's storage when the array holds it
    /// alone (a buffer shared with another array is copied first, as any
    /// write to it is, and that copy is what gets zeroed).
    public init(wiping bytes: inout [UInt8]) throws(CryptoError) {
        secret = try SecretBytes(wiping: &bytes)
    }

    public var count: Int { secret.count }

    /// Reads the key material in place.
    public func withUnsafeBytes<R: ~Copyable, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        try secret.withUnsafeBytes(body)
    }

    /// The key material as lowercase hex, for the config file format.
    var hex: String {
        withUnsafeBytes { raw in
            String(unsafeUninitializedCapacity: raw.count * 2) { out in
                let digits: StaticString = "0123456789abcdef"
                for (i, byte) in raw.enumerated() {
                    out[2 * i] = digits.utf8Start[Int(byte >> 4)]
                    out[2 * i + 1] = digits.utf8Start[Int(byte & 0xF)]
                }
                return raw.count * 2
            }
        }
    }

    public static func == (a: SAKeyMaterial, b: SAKeyMaterial) -> Bool { a.secret.isEqual(to: b.secret) }

    /// A keyed digest of the key material (`SecretBytes.digest`): equal keys
    /// have equal digests; confirm a match with `==`.
    public var digest: UInt64 { secret.digest }

    /// The length only: equal values have equal lengths, and key bytes stay
    /// out of hash tables.
    public func hash(into hasher: inout Hasher) { hasher.combine(count) }

    public var description: String { "<\(count) bytes of key material>" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: [], displayStyle: .struct) }
}

/// How SAs are told apart: by SPI and outer destination address.
///
/// One table holds both directions. Rules (`GatewayConfig.apply` enforces them):
/// * no two SAs share an identifier;
/// * an SA without dst matches its SPI with any destination, so it must be the
///   only SA with that SPI (this also keeps every SA nameable by `sa del`);
/// * an outbound SPI names one SA, because `action protect spi` picks the
///   outbound SA by SPI alone. Inbound SAs may share an SPI when their dst
///   differs (RFC 4301 §4.1 lookup by SPI and destination).
public struct SAIdentifier: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var spi: SecurityParameterIndex
    public var destination: IPAddress?

    public init(spi: SecurityParameterIndex, destination: IPAddress? = nil) {
        self.spi = spi
        self.destination = destination
    }

    /// By SPI; then no dst first, then IPv4 before IPv6, by address.
    public static func < (a: Self, b: Self) -> Bool {
        if a.spi != b.spi { return a.spi < b.spi }
        switch (a.destination, b.destination) {
        case (nil, nil): return false
        case (nil, _): return true
        case (_, nil): return false
        case let (x?, y?): return IPAddress.precedes(x, y)
        }
    }

    /// `spi 0x00001000` or `spi 0x00001000 dst 192.0.2.1`, as `sa del` takes it.
    public var description: String {
        destination.map { "spi \(spi) dst \($0)" } ?? "spi \(spi)"
    }
}

/// One security association.
public struct SAConfig: Sendable, Hashable {
    public var spi: SecurityParameterIndex
    public var direction: IPsecDirection
    /// Outer source and destination: both or neither, one family. Tunnel mode
    /// needs them (they are the outer header); a transport-mode SA without
    /// them is found by SPI alone.
    public var source: IPAddress?
    public var destination: IPAddress?
    public var mode: SAMode
    public var aead: AEADTransform
    /// `aead.keyMaterialLength` bytes: the key, then the salt.
    public var keyMaterial: SAKeyMaterial
    /// Extended (64-bit) sequence numbers, RFC 4303 §2.2.1.
    public var esn: Bool
    /// Outbound: the next sequence number to send (at least 1). Inbound: the
    /// highest number already received (0 for a fresh SA); every number up to
    /// it counts as seen. Without ESN at most 2^32 − 1.
    public var sequence: UInt64
    /// Anti-replay window in packets, `replayWindows`, or 0: anti-replay off
    /// (RFC 4303 §3.4.3 lets a receiver disable it; without ESN only).
    /// Inbound only: an outbound SA keeps the default.
    public var replayWindow: Int
    /// UDP encapsulation (NAT traversal), or nil for plain ESP.
    public var encapsulation: UDPEncapsulation?
    /// DF bit and TTL (hop limit) of the outer header: tunnel mode only; a
    /// transport-mode SA keeps the defaults. `df` matters for an IPv4 outer
    /// header only.
    public var df: OuterDF
    public var ttl: UInt8
    /// The SA's own engine, or nil to follow the global `crypto-engine`.
    public var cryptoEngine: CryptoEngineChoice?
    /// The template id policies name with `action protect reqid N` (as Linux
    /// xfrm templates do); nil: reachable only by SPI.
    public var reqid: UInt32?
    /// The EAL lcore of the worker that owns the SA. Outbound (RFC 9611
    /// per-CPU SA, needs a reqid): nil is the fallback SA of its reqid, used
    /// by workers without their own. Inbound: the worker that keeps its
    /// replay window (others hand its packets over); nil: chosen by SPI.
    public var cpu: UInt32?
    /// Soft and hard limits; empty: none.
    public var lifetime: SALifetime = SALifetime()

    public static let replayWindows: ClosedRange<Int> = 32...65536
    /// RFC 4303 §3.4.3: 64 "SHOULD be employed as the default".
    public static let defaultReplayWindow = 64
    public static let ttls: ClosedRange<UInt8> = 1...255
    public static let defaultTTL: UInt8 = 64

    /// The `seq` an SA has when its line gives none: 1 outbound (the first
    /// number sent), 0 inbound (nothing received yet).
    public static func defaultSequence(_ direction: IPsecDirection) -> UInt64 {
        direction == .outbound ? 1 : 0
    }

    /// `sequence: nil` means `defaultSequence(direction)`.
    public init(spi: SecurityParameterIndex, direction: IPsecDirection,
                source: IPAddress? = nil, destination: IPAddress? = nil,
                mode: SAMode, aead: AEADTransform, keyMaterial: SAKeyMaterial,
                esn: Bool = false, sequence: UInt64? = nil, replayWindow: Int = SAConfig.defaultReplayWindow,
                encapsulation: UDPEncapsulation? = nil, df: OuterDF = .copy, ttl: UInt8 = SAConfig.defaultTTL,
                cryptoEngine: CryptoEngineChoice? = nil, reqid: UInt32? = nil, cpu: UInt32? = nil) {
        self.spi = spi
        self.direction = direction
        self.source = source
        self.destination = destination
        self.mode = mode
        self.aead = aead
        self.keyMaterial = keyMaterial
        self.esn = esn
        self.sequence = sequence ?? Self.defaultSequence(direction)
        self.replayWindow = replayWindow
        self.encapsulation = encapsulation
        self.df = df
        self.ttl = ttl
        self.cryptoEngine = cryptoEngine
        self.reqid = reqid
        self.cpu = cpu
    }

    /// reqid values a policy or SA may carry (0 means "none" to Linux).
    public static let reqids: ClosedRange<UInt32> = 1...UInt32.max

    /// The key of this SA in `GatewayConfig.sas`.
    public var identifier: SAIdentifier { SAIdentifier(spi: spi, destination: destination) }
}

extension IPAddress {
    /// IPv4 before IPv6, then by value: the order config text lists things in.
    public static func precedes(_ a: IPAddress, _ b: IPAddress) -> Bool {
        switch (a, b) {
        case let (.v4(x), .v4(y)): x < y
        case let (.v6(x), .v6(y)): x < y
        case (.v4, .v6): true
        case (.v6, .v4): false
        }
    }
}
