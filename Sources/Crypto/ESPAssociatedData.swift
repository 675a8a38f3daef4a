import CCrypto

/// ESP additional authenticated data (RFC 4106 §5, RFC 7634 §2.1):
/// SPI || seq (8 bytes), or SPI || seq-high || seq-low (12 bytes) with
/// extended sequence numbers.
///
/// Write AAD with `store` (one 16-byte store) when it is built right before a
/// seal/open: the engines read it with one vector load, and AAD written with
/// narrower stores just before fails store-to-load forwarding, which measured
/// 1.7x slower for 64-byte AES-GCM packets. The same applies to an ESP header
/// (SPI || seq || IV) written just before it is used as AAD and IV.
public enum ESPAssociatedData {
    /// Bytes `store` may write at its destination.
    public static let storageSize = 16

    /// Writes the AAD for `spi` and `sequence` (host order; big-endian on the
    /// wire) at `destination`, which must have `storageSize` writable bytes.
    /// Returns the AAD length: 8, or 12 with `extendedSequenceNumbers`.
    @inlinable @inline(__always)
    public static func store(spi: UInt32, sequence: UInt64, extendedSequenceNumbers: Bool,
                             to destination: UnsafeMutableRawPointer) -> Int {
        Int(slc_esp_aad(destination, spi, sequence, extendedSequenceNumbers))
    }
}
