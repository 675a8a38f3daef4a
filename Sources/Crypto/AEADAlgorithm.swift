import CCrypto

/// An ESP AEAD transform: AES-GCM with a 16-byte ICV (RFC 4106) or
/// ChaCha20-Poly1305 (RFC 7634).
///
/// Key material for every algorithm is the cipher key followed by a 4-byte
/// salt; the 12-byte nonce is `salt || IV`, where the 8-byte IV travels in the
/// packet.
public enum AEADAlgorithm: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case aes128GCM = 1
    case aes256GCM = 2
    case chacha20Poly1305 = 3

    /// Bytes of the cipher key, without the salt.
    @inlinable public var keyLength: Int {
        switch self {
        case .aes128GCM: return 16
        case .aes256GCM, .chacha20Poly1305: return 32
        }
    }

    /// Bytes of key material an SA carries: key followed by the salt.
    @inlinable public var keyMaterialLength: Int { keyLength &+ AEADAlgorithm.saltLength }

    /// Salt bytes at the end of the key material.
    public static let saltLength = 4
    /// IV bytes carried in each ESP packet.
    public static let ivLength = 8
    /// ICV (authentication tag) bytes after the ciphertext.
    public static let icvLength = 16
    /// AAD length without extended sequence numbers: SPI || seq.
    public static let aadLength = 8
    /// AAD length with extended sequence numbers: SPI || seq-high || seq-low.
    public static let aadLengthESN = 12

    public var description: String {
        switch self {
        case .aes128GCM: return "aes-128-gcm"
        case .aes256GCM: return "aes-256-gcm"
        case .chacha20Poly1305: return "chacha20-poly1305"
        }
    }

    /// Parses the names `description` produces.
    public init?(name: String) {
        guard let found = AEADAlgorithm.allCases.first(where: { $0.description == name }) else { return nil }
        self = found
    }
}

/// Which engine an SA asks for when it is installed.
public enum CryptoEngineKind: Sendable, Hashable, CustomStringConvertible {
    /// intel-ipsec-mb when the library initialises on this CPU, else libsodium.
    case auto
    case ipsecMB
    case sodium

    public var description: String {
        switch self {
        case .auto: return "auto"
        case .ipsecMB: return "ipsec-mb"
        case .sodium: return "sodium"
        }
    }
}

/// The engine an installed SA key actually uses.
public enum CryptoEngine: Sendable, Hashable, CustomStringConvertible {
    case ipsecMB
    case sodium

    public var description: String {
        switch self {
        case .ipsecMB: return "ipsec-mb"
        case .sodium: return "sodium"
        }
    }
}
