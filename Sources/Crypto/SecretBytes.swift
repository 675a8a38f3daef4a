import CCrypto

/// Bytes that must not linger in ordinary memory: an SA's key material as it
/// was configured (key || salt), which the control plane keeps to compare
/// keys and to install them again on another engine.
///
/// They live in the same kind of memory as the expanded keys: a slot in a
/// slab of `sodium_malloc` memory (guard pages, locked, read-only except
/// while a slot is written or wiped), zeroed when the last reference goes.
/// Copies of the value share one slot. Equality is compared in constant time.
public final class SecretBytes: @unchecked Sendable {
    /// The most bytes one value holds (60: key material is at most 36).
    public static let maximumCount = Int(SLC_SECRET_MAX)

    private let slot: UnsafeMutablePointer<slc_secret>

    /// Copies `bytes` (at most `maximumCount`) into secret memory. The
    /// caller's copy is the caller's to wipe.
    public init(copying bytes: UnsafeRawBufferPointer) throws(CryptoError) {
        slot = try Self.slot(Self.create(bytes), count: bytes.count)
    }

    /// Moves `bytes` into secret memory and zeroes the array's storage,
    /// whether or not that succeeds. Only storage the array holds alone is
    /// zeroed: a buffer shared with another array is copied first, as any
    /// write to it is.
    public init(wiping bytes: inout [UInt8]) throws(CryptoError) {
        defer { Self.wipe(&bytes) }
        slot = try Self.slot(bytes.withUnsafeBytes(Self.create), count: bytes.count)
    }

    /// Zeroes `bytes`' storage (`sodium_memzero`: never optimised away),
    /// the same rule as `init(wiping:)` for a shared buffer.
    public static func wipe(_ bytes: inout [UInt8]) {
        bytes.withUnsafeMutableBytes { sodium_memzero($0.baseAddress, $0.count) }
    }

    private static func create(_ bytes: UnsafeRawBufferPointer) -> (UnsafeMutablePointer<slc_secret>?, slc_status) {
        var status = SLC_OK
        let slot = slc_secret_create(bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), bytes.count, &status)
        return (slot, status)
    }

    private static func slot(_ made: (UnsafeMutablePointer<slc_secret>?, slc_status),
                             count: Int) throws(CryptoError) -> UnsafeMutablePointer<slc_secret> {
        if let slot = made.0 { return slot }
        switch made.1 {
        case SLC_ERR_KEY_LENGTH: throw .secretTooLong(got: count)
        case SLC_ERR_SODIUM_UNAVAILABLE: throw .engineUnavailable(.sodium, reason: "sodium_init() failed")
        default: throw .outOfMemory
        }
    }

    deinit {
        _ = slc_secret_destroy(slot)
    }

    public var count: Int { Int(slot.pointee.len) }

    /// Reads the bytes in place (no copy is made).
    public func withUnsafeBytes<R: ~Copyable, E: Error>(
        _ body: (UnsafeRawBufferPointer) throws(E) -> R
    ) throws(E) -> R {
        let offset = MemoryLayout<slc_secret>.offset(of: \slc_secret.bytes)!
        return try body(UnsafeRawBufferPointer(start: UnsafeRawPointer(slot) + offset, count: count))
    }

    /// A keyed 64-bit digest of the bytes (libsodium's SipHash-2-4 under a
    /// key drawn once per process and kept in secret memory itself), to
    /// index secrets without their bytes in a hash table: equal secrets have
    /// equal digests, and two unequal ones collide with probability 2⁻⁶⁴, so
    /// a match is confirmed by `isEqual`. (A secret exists only once
    /// sodium_init succeeded, so the key is random.)
    public var digest: UInt64 {
        guard let digestKey = Self.digestKey else { return 0 }  // all equal: `isEqual` still tells them apart
        return withUnsafeBytes { raw in
            var out: UInt64 = 0
            guard let bytes = raw.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return out }
            digestKey.withUnsafeBytes { key in
                withUnsafeMutableBytes(of: &out) { o in
                    _ = crypto_shorthash(o.baseAddress!.assumingMemoryBound(to: UInt8.self), bytes, UInt64(raw.count),
                                         key.baseAddress!.assumingMemoryBound(to: UInt8.self))
                }
            }
            return out
        }
    }

    private static let digestKey: SecretBytes? = {
        var key = [UInt8](repeating: 0, count: Int(crypto_shorthash_KEYBYTES))
        randombytes_buf(&key, key.count)
        return try? SecretBytes(wiping: &key)
    }()

    /// Same length and bytes, compared in constant time for a given length.
    public func isEqual(to other: SecretBytes) -> Bool {
        guard count == other.count else { return false }
        return withUnsafeBytes { a in
            other.withUnsafeBytes { b in sodium_memcmp(a.baseAddress, b.baseAddress, a.count) == 0 }
        }
    }

    /// Test hook: whether `needle` occurs anywhere in the slabs of expanded
    /// keys and of key material, slots in use or given back (given back ones
    /// are zeroed). A key nobody holds any more is found nowhere.
    public static func memoryContains(_ needle: [UInt8]) -> Bool {
        needle.withUnsafeBufferPointer { slc_secret_memory_contains($0.baseAddress, $0.count) }
    }

    /// Test hook: the slot's address.
    var address: UInt { UInt(bitPattern: slot) }
}
