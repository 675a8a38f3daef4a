import CCrypto

/// The code path intel-ipsec-mb's `init_mb_mgr_auto` chose for this CPU.
public enum IPsecMBArchitecture: Sendable, Hashable, CustomStringConvertible {
    case noAESNI, sse, avx, avx2, avx512

    init?(_ raw: Int32) {
        switch raw {
        case Int32(IMB_ARCH_NOAESNI.rawValue): self = .noAESNI
        case Int32(IMB_ARCH_SSE.rawValue): self = .sse
        case Int32(IMB_ARCH_AVX.rawValue): self = .avx
        case Int32(IMB_ARCH_AVX2.rawValue): self = .avx2
        case Int32(IMB_ARCH_AVX512.rawValue): self = .avx512
        default: return nil
        }
    }

    /// The paths a process can pin (`pin`), by the names options take:
    /// "sse", "avx", "avx2", "avx512".
    public static let pinnable: [IPsecMBArchitecture] = [.sse, .avx, .avx2, .avx512]

    /// The pinnable path named `name` (any case), or nil.
    public init?(name: String) {
        guard let a = Self.pinnable.first(where: { $0.description.lowercased() == name.lowercased() }) else { return nil }
        self = a
    }

    var raw: Int32 {
        switch self {
        case .noAESNI: return Int32(IMB_ARCH_NOAESNI.rawValue)
        case .sse: return Int32(IMB_ARCH_SSE.rawValue)
        case .avx: return Int32(IMB_ARCH_AVX.rawValue)
        case .avx2: return Int32(IMB_ARCH_AVX2.rawValue)
        case .avx512: return Int32(IMB_ARCH_AVX512.rawValue)
        }
    }

    public var description: String {
        switch self {
        case .noAESNI: return "no-AESNI"
        case .sse: return "SSE"
        case .avx: return "AVX"
        case .avx2: return "AVX2"
        case .avx512: return "AVX512"
        }
    }
}

/// What intel-ipsec-mb offers on this machine.
public struct IPsecMBInfo: Sendable, Hashable, CustomStringConvertible {
    /// Library version at run time ("1.3.0").
    public let version: String
    public let architecture: IPsecMBArchitecture
    /// CPU extensions the library detected and uses beyond the base ISA,
    /// e.g. ["AESNI", "PCLMULQDQ", "VAES", "VPCLMULQDQ", "GFNI", ...].
    public let extensions: [String]

    public var description: String {
        "intel-ipsec-mb \(version), \(architecture) (\(extensions.joined(separator: " ")))"
    }
}

/// Engine discovery and the per-SA engine choice. Probed once per process
/// (thread-safe); nothing here is on the data path.
public enum CryptoEngines {
    /// Pins intel-ipsec-mb's code path for this process (nil: the best this
    /// CPU has, the default). Must come before anything uses an engine, since
    /// keys are expanded for one path. Pinning a path the CPU cannot run
    /// leaves intel-ipsec-mb unavailable, with that as the reason. Why pin
    /// one: to keep a core off AVX-512 (CPUs that lower their clock for it),
    /// to run one path on a fleet of mixed CPUs, or to measure what the
    /// gateway costs beside a slower cipher (`sluicebench --ipsec-mb-arch`).
    public static func pin(_ arch: IPsecMBArchitecture?) throws(CryptoError) {
        guard slc_mb_pin_arch(arch?.raw ?? Int32(IMB_ARCH_NONE.rawValue)) == 0 else {
            throw .engineUnavailable(.ipsecMB, reason: "its code path can only be chosen before the engines are first used")
        }
    }

    /// The path pinned by `pin`, or nil (the best the CPU has).
    public static var pinned: IPsecMBArchitecture? { IPsecMBArchitecture(slc_mb_pinned_arch()) }

    static let probe: slc_engine_info = {
        var info = slc_engine_info()
        slc_engine_probe(&info)
        return info
    }()

    /// intel-ipsec-mb on this machine, or nil when it did not initialise or
    /// the CPU lacks AES-NI (its software-AES path is not used).
    public static var ipsecMB: IPsecMBInfo? {
        let p = probe
        guard p.mb_usable != 0, let arch = IPsecMBArchitecture(p.mb_arch) else { return nil }
        let named: [(UInt64, String)] = [
            (UInt64(IMB_FEATURE_AESNI), "AESNI"), (UInt64(IMB_FEATURE_PCLMULQDQ), "PCLMULQDQ"),
            (UInt64(IMB_FEATURE_AVX), "AVX"), (UInt64(IMB_FEATURE_AVX2), "AVX2"),
            (UInt64(IMB_FEATURE_AVX512F), "AVX512F"), (UInt64(IMB_FEATURE_VAES), "VAES"),
            (UInt64(IMB_FEATURE_VPCLMULQDQ), "VPCLMULQDQ"), (UInt64(IMB_FEATURE_GFNI), "GFNI"),
            (UInt64(IMB_FEATURE_AVX512_IFMA), "AVX512IFMA"), (UInt64(IMB_FEATURE_SHANI), "SHANI"),
        ]
        return IPsecMBInfo(version: String(cString: slc_mb_version_string()), architecture: arch,
                           extensions: named.filter { p.mb_features & $0.0 != 0 }.map(\.1))
    }

    static var ipsecMBUnavailableReason: String {
        let p = probe
        let runtime = "\(p.mb_version >> 16).\((p.mb_version >> 8) & 0xFF).\(p.mb_version & 0xFF)"
        if p.mb_version >> 16 != UInt32(IMB_VERSION_NUM) >> 16 || p.mb_version < UInt32(IMB_VERSION_NUM) {
            return "library version \(runtime) does not match the headers (\(IMB_VERSION_STR))"
        }
        if let pinned, p.mb_arch == Int32(IMB_ARCH_NONE.rawValue) {
            return "this CPU cannot run its pinned \(pinned) code path"
        }
        if p.mb_errno != 0 { return "initialisation failed (imb errno \(p.mb_errno))" }
        if let arch = IPsecMBArchitecture(p.mb_arch), arch == .noAESNI { return "the CPU lacks AES-NI" }
        return "the library did not initialise (arch \(p.mb_arch))"
    }

    /// libsodium's version string ("1.0.18").
    public static var sodiumVersion: String { String(cString: slc_sodium_version_string()) }
    /// Whether libsodium initialised.
    public static var sodiumUsable: Bool { probe.sodium_usable != 0 }
    /// Whether libsodium's AES-256-GCM runs here (needs AES-NI and PCLMULQDQ).
    public static var sodiumAES256GCMAvailable: Bool { probe.sodium_aes256gcm != 0 }

    /// One line for logs and `sluicebench`: which engines and which ISA.
    public static var summary: String {
        let mb = ipsecMB.map { $0.description + (pinned != nil ? ", pinned" : "") }
            ?? "intel-ipsec-mb unavailable: \(ipsecMBUnavailableReason)"
        let na = sodiumUsable
            ? "libsodium \(sodiumVersion) (AES-256-GCM \(sodiumAES256GCMAvailable ? "available" : "unavailable"))"
            : "libsodium unavailable"
        return "\(mb); \(na); auto = \(ipsecMB != nil ? "ipsec-mb" : "sodium")"
    }

    /// The engine an SA with `aead` gets when it asks for `kind`; a clear
    /// error when that engine cannot serve it on this machine.
    public static func resolve(_ kind: CryptoEngineKind, for aead: AEADAlgorithm) throws(CryptoError) -> CryptoEngine {
        switch kind {
        case .ipsecMB:
            guard probe.mb_usable != 0 else {
                throw .engineUnavailable(.ipsecMB, reason: ipsecMBUnavailableReason)
            }
            return .ipsecMB
        case .sodium:
            guard probe.sodium_usable != 0 else { throw .engineUnavailable(.sodium, reason: "sodium_init() failed") }
            switch aead {
            case .aes128GCM:
                throw .unsupported(.sodium, aead)
            case .aes256GCM:
                guard probe.sodium_aes256gcm != 0 else {
                    throw .cpuFeatureMissing(.sodium, aead, feature: "AES-NI and PCLMULQDQ")
                }
                return .sodium
            case .chacha20Poly1305:
                return .sodium
            }
        case .auto:
            return probe.mb_usable != 0 ? .ipsecMB : try resolve(.sodium, for: aead)
        }
    }

    static func implementation(_ engine: CryptoEngine, _ aead: AEADAlgorithm) -> slc_impl {
        switch (engine, aead) {
        case (.ipsecMB, .aes128GCM): return SLC_IMPL_MB_AES128_GCM
        case (.ipsecMB, .aes256GCM): return SLC_IMPL_MB_AES256_GCM
        case (.ipsecMB, .chacha20Poly1305): return SLC_IMPL_MB_CHACHA20_POLY1305
        case (.sodium, .aes128GCM): return SLC_IMPL_NONE
        case (.sodium, .aes256GCM): return SLC_IMPL_NA_AES256_GCM
        case (.sodium, .chacha20Poly1305): return SLC_IMPL_NA_CHACHA20_POLY1305
        }
    }
}
