import CCrypto

/// One SA's AEAD key, expanded once for the engine chosen at install time.
///
/// The expanded key lives in `sodium_malloc` memory (guard pages, locked,
/// read-only after set-up) and is zeroed and freed when the owner is
/// destroyed. The per-packet operations allocate nothing, take no locks and
/// make no reference-counting calls: the engine choice is a switch on a field
/// of the key inside an always-inlined C shim.
///
/// Keys are immutable after set-up, so one key may be used by several cores at
/// once, each with its own `CryptoCore`.
public struct AEADKey: ~Copyable, @unchecked Sendable {
    public let algorithm: AEADAlgorithm
    public let engine: CryptoEngine
    /// `slc_aead_key *` in sodium_malloc memory.
    @usableFromInline let state: OpaquePointer

    /// Installs `keyMaterial` (key || 4-byte salt) for `algorithm` on the engine
    /// `kind` resolves to. Throws when the engine cannot serve the algorithm
    /// here or the material has the wrong length. The caller's copy of the key
    /// material is the caller's to wipe.
    public init(_ algorithm: AEADAlgorithm, keyMaterial: UnsafeRawBufferPointer,
                engine kind: CryptoEngineKind = .auto) throws(CryptoError) {
        (engine, state) = try AEADKey.install(algorithm, keyMaterial, kind)
        self.algorithm = algorithm
    }

    /// Convenience for the control plane and tests.
    public init(_ algorithm: AEADAlgorithm, keyMaterial: [UInt8],
                engine kind: CryptoEngineKind = .auto) throws(CryptoError) {
        let installed = keyMaterial.withUnsafeBytes { raw in
            Result { () throws(CryptoError) in try AEADKey.install(algorithm, raw, kind) }
        }
        (engine, state) = try installed.get()
        self.algorithm = algorithm
    }

    private static func install(_ algorithm: AEADAlgorithm, _ keyMaterial: UnsafeRawBufferPointer,
                                _ kind: CryptoEngineKind) throws(CryptoError) -> (CryptoEngine, OpaquePointer) {
        let engine = try CryptoEngines.resolve(kind, for: algorithm)
        guard keyMaterial.count == algorithm.keyMaterialLength, let base = keyMaterial.baseAddress else {
            throw .keyMaterialLength(algorithm, expected: algorithm.keyMaterialLength, got: keyMaterial.count)
        }
        var status = SLC_OK
        guard let key = slc_aead_key_create(CryptoEngines.implementation(engine, algorithm),
                                            base.assumingMemoryBound(to: UInt8.self), keyMaterial.count, &status)
        else {
            throw CryptoError.from(status, engine: engine, aead: algorithm, got: keyMaterial.count)
        }
        return (engine, key)
    }

    deinit {
        _ = slc_aead_key_destroy(state)
    }

    /// A copyable reference to this key for runtime SA records. Valid only while
    /// this owner lives; it does not keep the key alive.
    @inlinable public var unsafeHandle: AEADKeyHandle { AEADKeyHandle(state: state) }

    /// Encrypts `length` bytes at `payload` in place and writes the 16-byte ICV
    /// to `icv`. `iv` is the packet's 8-byte IV; `aad` is SPI || seq (8 bytes)
    /// or SPI || seq-high || seq-low (12 bytes, ESN). AAD written right before
    /// the call should be written with one 16-byte store
    /// (`ESPAssociatedData.store`): see there for why.
    @inlinable @inline(__always)
    public func seal(_ core: borrowing CryptoCore, payload: UnsafeMutableRawPointer, length: Int,
                     iv: UnsafeRawPointer, aad: UnsafeRawPointer, aadLength: Int, icv: UnsafeMutableRawPointer) {
        unsafeHandle.seal(core, payload: payload, length: length, iv: iv, aad: aad, aadLength: aadLength, icv: icv)
    }

    /// Decrypts `length` bytes at `payload` in place and verifies the ICV at `icv`
    /// in constant time. Returns true when authentic. On failure the payload is
    /// zeroed: no engine leaves the plaintext of a forged packet behind.
    @inlinable @inline(__always)
    public func open(_ core: borrowing CryptoCore, payload: UnsafeMutableRawPointer, length: Int,
                     iv: UnsafeRawPointer, aad: UnsafeRawPointer, aadLength: Int, icv: UnsafeRawPointer) -> Bool {
        unsafeHandle.open(core, payload: payload, length: length, iv: iv, aad: aad, aadLength: aadLength, icv: icv)
    }

    /// Seals every packet in `burst` (all of this SA). Returns how many were sealed.
    @discardableResult @inlinable
    public func seal(_ core: borrowing CryptoCore, burst: borrowing AEADBurst, aadLength: Int) -> Int {
        unsafeHandle.seal(core, burst: burst, aadLength: aadLength)
    }

    /// Opens every packet in `burst` (all of this SA). Returns how many were
    /// authentic; `burst.isAuthentic(at:)` tells which. Failed payloads are zeroed.
    @inlinable
    public func open(_ core: borrowing CryptoCore, burst: borrowing AEADBurst, aadLength: Int) -> Int {
        unsafeHandle.open(core, burst: burst, aadLength: aadLength)
    }
}

/// A non-owning, trivially copyable reference to an `AEADKey`, for runtime SA
/// records. Using it after its owner is destroyed is undefined behaviour.
public struct AEADKeyHandle: @unchecked Sendable {
    @usableFromInline let state: OpaquePointer

    @inlinable init(state: OpaquePointer) { self.state = state }

    /// See `AEADKey.seal(_:payload:length:iv:aad:aadLength:icv:)`.
    @inlinable @inline(__always)
    public func seal(_ core: borrowing CryptoCore, payload: UnsafeMutableRawPointer, length: Int,
                     iv: UnsafeRawPointer, aad: UnsafeRawPointer, aadLength: Int, icv: UnsafeMutableRawPointer) {
        assert(length >= 0 && length <= Int(UInt32.max) && aadLength >= 0 && aadLength <= 64)
        assert(core.manager != nil || slc_aead_key_impl(state) >= SLC_IMPL_NA_AES256_GCM.rawValue)
        // Lengths are checked above in debug builds; ESP payloads are < 64 KiB.
        slc_aead_seal(core.manager, state, payload, UInt32(truncatingIfNeeded: length), iv, aad,
                      UInt32(truncatingIfNeeded: aadLength), icv)
    }

    /// See `AEADKey.open(_:payload:length:iv:aad:aadLength:icv:)`.
    @inlinable @inline(__always)
    public func open(_ core: borrowing CryptoCore, payload: UnsafeMutableRawPointer, length: Int,
                     iv: UnsafeRawPointer, aad: UnsafeRawPointer, aadLength: Int, icv: UnsafeRawPointer) -> Bool {
        assert(length >= 0 && length <= Int(UInt32.max) && aadLength >= 0 && aadLength <= 64)
        assert(core.manager != nil || slc_aead_key_impl(state) >= SLC_IMPL_NA_AES256_GCM.rawValue)
        return slc_aead_open(core.manager, state, payload, UInt32(truncatingIfNeeded: length), iv, aad,
                             UInt32(truncatingIfNeeded: aadLength), icv)
    }

    /// See `AEADKey.seal(_:burst:aadLength:)`.
    @discardableResult @inlinable
    public func seal(_ core: borrowing CryptoCore, burst: borrowing AEADBurst, aadLength: Int) -> Int {
        assert(aadLength >= 0 && aadLength <= 64)
        return Int(slc_aead_seal_burst(core.manager, state, burst.storage, UInt32(truncatingIfNeeded: aadLength)))
    }

    /// See `AEADKey.open(_:burst:aadLength:)`.
    @inlinable
    public func open(_ core: borrowing CryptoCore, burst: borrowing AEADBurst, aadLength: Int) -> Int {
        assert(aadLength >= 0 && aadLength <= 64)
        return Int(slc_aead_open_burst(core.manager, state, burst.storage, UInt32(truncatingIfNeeded: aadLength)))
    }
}

// Test hooks (internal; reached with @testable import).
extension AEADKey {
    /// Destroys the key the way deinit does and reports whether its whole
    /// sodium_malloc allocation read back as zero right before sodium_free.
    consuming func destroyReportingZeroization() -> Bool {
        let key = state
        discard self
        return slc_aead_key_destroy(key)
    }

    /// Whether `bytes` occur in the key's allocation (key schedules start with
    /// the key itself, so a live key contains its own key bytes).
    func stateContains(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { slc_aead_key_contains(state, $0.baseAddress, $0.count) }
    }

    /// Address and size of the key's allocation.
    var stateRegion: (address: UInt, bytes: Int) {
        (UInt(bitPattern: slc_aead_key_address(state)), Int(slc_aead_key_bytes(state)))
    }
}
