import CCrypto

/// Why an SA key or a per-core crypto context could not be set up. Raised at
/// install time only; the data path never throws.
public enum CryptoError: Error, Sendable, Hashable, CustomStringConvertible {
    /// Key material must be key || 4-byte salt.
    case keyMaterialLength(AEADAlgorithm, expected: Int, got: Int)
    /// The engine does not implement this AEAD at all (AES-128-GCM on libsodium).
    case unsupported(CryptoEngine, AEADAlgorithm)
    /// The engine implements this AEAD only with a CPU feature this machine lacks
    /// (libsodium AES-256-GCM needs AES-NI and PCLMULQDQ).
    case cpuFeatureMissing(CryptoEngine, AEADAlgorithm, feature: String)
    /// The engine's library did not initialise here.
    case engineUnavailable(CryptoEngine, reason: String)
    /// sodium_malloc or the library's allocator failed.
    case outOfMemory
    /// More bytes than `SecretBytes.maximumCount`.
    case secretTooLong(got: Int)

    public var description: String {
        switch self {
        case let .keyMaterialLength(aead, expected, got):
            return "\(aead) key material must be \(expected) bytes (\(aead.keyLength)-byte key followed by "
                + "a \(AEADAlgorithm.saltLength)-byte salt), got \(got)"
        case let .unsupported(engine, aead):
            return "the \(engine) engine does not implement \(aead)"
        case let .cpuFeatureMissing(engine, aead, feature):
            return "the \(engine) engine implements \(aead) only on CPUs with \(feature), which this CPU lacks"
        case let .engineUnavailable(engine, reason):
            return "the \(engine) engine is unavailable: \(reason)"
        case .outOfMemory:
            return "out of memory for crypto state"
        case let .secretTooLong(got):
            return "key material is at most \(SecretBytes.maximumCount) bytes, got \(got)"
        }
    }

    /// The single seam from the C set-up status to a typed error.
    static func from(_ status: slc_status, engine: CryptoEngine, aead: AEADAlgorithm, got: Int) -> CryptoError {
        switch status {
        case SLC_ERR_KEY_LENGTH:
            return .keyMaterialLength(aead, expected: aead.keyMaterialLength, got: got)
        case SLC_ERR_NO_MEMORY:
            return .outOfMemory
        case SLC_ERR_MB_UNAVAILABLE:
            return .engineUnavailable(.ipsecMB, reason: CryptoEngines.ipsecMBUnavailableReason)
        case SLC_ERR_SODIUM_UNAVAILABLE:
            return .engineUnavailable(.sodium, reason: "sodium_init() failed")
        case SLC_ERR_NO_AESNI:
            return .cpuFeatureMissing(engine, aead, feature: "AES-NI and PCLMULQDQ")
        default:
            return .unsupported(engine, aead)
        }
    }
}
