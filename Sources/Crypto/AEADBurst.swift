import CCrypto

/// Per-burst metadata for up to `capacity` packets, struct-of-arrays in C,
/// allocated once per worker core and reused for every burst.
///
/// Packets of one SA: fill it with `append(payload:…)`, hand it to
/// `AEADKey.seal(_:burst:aadLength:)` or `open(_:burst:aadLength:)`.
/// Packets of several SAs: `append(key:…)` and `sealEach` / `openEach`.
/// Then read `isAuthentic(at:)`, and `removeAll()`.
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

    /// Adds one packet that carries its own key and AAD length (a worker's
    /// burst over several SAs, sealed or opened with `sealEach`/`openEach`).
    /// Traps when the burst is full.
    @inlinable @inline(__always)
    public func append(key: AEADKeyHandle, payload: UnsafeMutableRawPointer, length: Int, iv: UnsafeRawPointer,
                       aad: UnsafeRawPointer, aadLength: Int, icv: UnsafeMutableRawPointer) {
        precondition(Int(slc_burst_count(storage)) < AEADBurst.capacity, "AEADBurst is full")
        assert(length >= 0 && length <= Int(UInt32.max) && aadLength >= 0 && aadLength <= 16)
        // Lengths checked above in debug builds; ESP payloads are < 64 KiB, AAD ≤ 12 bytes.
        _ = slc_burst_append_keyed(storage, key.state, payload, UInt32(truncatingIfNeeded: length), iv, aad,
                                   UInt32(truncatingIfNeeded: aadLength), icv)
    }

    /// Sixteen bytes of scratch for the AAD of the packet the next `append`
    /// adds (ESN: SPI || seq-high || seq-low), valid until the burst is
    /// emptied. Traps when the burst is full.
    @inlinable @inline(__always)
    public var nextAAD: UnsafeMutableRawPointer {
        precondition(Int(slc_burst_count(storage)) < AEADBurst.capacity, "AEADBurst is full")
        return UnsafeMutableRawPointer(slc_burst_next_aad(storage))
    }

    /// Seals every packet appended with its own key, in append order, with
    /// one call into the engines (no work of the caller's between two
    /// ciphers). `prefetch`: ask for the next packet's first lines while one
    /// is sealed (packets another core wrote). Returns how many were sealed.
    @discardableResult @inlinable
    public func sealEach(_ core: borrowing CryptoCore, prefetch: Bool) -> Int {
        Int(slc_burst_seal_keyed(core.manager, storage, prefetch))
    }

    /// Opens every packet appended with its own key, like `sealEach`. Returns
    /// how many were authentic; `isAuthentic(at:)` tells which. Failed
    /// payloads are zeroed.
    @inlinable
    public func openEach(_ core: borrowing CryptoCore, prefetch: Bool) -> Int {
        Int(slc_burst_open_keyed(core.manager, storage, prefetch))
    }

    /// After `open`: whether packet `index` (in append order) was authentic.
    @inlinable
    public func isAuthentic(at index: Int) -> Bool {
        precondition(index >= 0 && index < count, "index outside the burst")
        return slc_burst_ok(storage, UInt32(truncatingIfNeeded: index))
    }
}
