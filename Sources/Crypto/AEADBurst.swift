import CCrypto

/// Per-burst metadata for up to `capacity` packets of one SA, struct-of-arrays
/// in C, allocated once per worker core and reused for every burst.
///
/// Fill it with `append`, hand it to `AEADKey.seal(_:burst:aadLength:)` or
/// `open(_:burst:aadLength:)`, read `isAuthentic(at:)`, then `removeAll()`.
/// The pointers appended must stay valid until the seal/open call returns.
public struct AEADBurst: ~Copyable, @unchecked Sendable {
    /// Most packets in one burst (intel-ipsec-mb's IMB_MAX_BURST_SIZE).
    public static let capacity = Int(SLC_BURST_MAX)

    /// `slc_burst *`.
    @usableFromInline let storage: OpaquePointer

    public init() throws(CryptoError) {
        guard let b = slc_burst_create() else { throw .outOfMemory }
        storage = b
    }

    deinit {
        slc_burst_destroy(storage)
    }

    @inlinable public var count: Int { Int(slc_burst_count(storage)) }
    @inlinable public var isEmpty: Bool { slc_burst_count(storage) == 0 }
    @inlinable public var isFull: Bool { Int(slc_burst_count(storage)) == AEADBurst.capacity }

    @inlinable public func removeAll() { slc_burst_reset(storage) }

    /// Adds one packet: `length` payload bytes at `payload`, its 8-byte IV, its
    /// AAD and its 16-byte ICV location. Traps when the burst is full.
    @inlinable @inline(__always)
    public func append(payload: UnsafeMutableRawPointer, length: Int, iv: UnsafeRawPointer,
                       aad: UnsafeRawPointer, icv: UnsafeMutableRawPointer) {
        precondition(Int(slc_burst_count(storage)) < AEADBurst.capacity, "AEADBurst is full")
        assert(length >= 0 && length <= Int(UInt32.max))
        // Length checked above in debug builds; ESP payloads are < 64 KiB.
        slc_burst_append(storage, payload, UInt32(truncatingIfNeeded: length), iv, aad, icv)
    }

    /// After `open`: whether packet `index` (in append order) was authentic.
    @inlinable
    public func isAuthentic(at index: Int) -> Bool {
        precondition(index >= 0 && index < count, "index outside the burst")
        return slc_burst_ok(storage, UInt32(truncatingIfNeeded: index))
    }
}
