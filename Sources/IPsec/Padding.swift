// The ESP trailer (RFC 4303 §2.4–§2.6): Padding, Pad Length, Next Header.
//
//   payload | 1 2 3 … n | n | next header        (n = pad length, 0...255)
//
// The encrypted part (payload through Next Header) must end on a multiple of
// the cipher's block size and in any case on a 4-byte boundary (§2.4). The
// AEADs Sluice uses have block size 1 in ESP (AES-GCM, RFC 4106 §3;
// ChaCha20-Poly1305, RFC 7634), so the alignment is 4 and n is 0...3.
// Padding bytes are the monotonic series 1, 2, 3, … (§2.4), which the
// receiver checks after decryption.
//
// Pure arithmetic over caller-owned bytes: no allocation, no throws, no traps.

import Packet

/// The result of parsing a decrypted ESP trailer.
public enum ESPTrailerParse: Hashable, Sendable {
    /// `payloadLength` bytes of payload precede the padding; `nextHeader` says
    /// what they are (4 or 41 in tunnel mode; 59 marks a dummy packet, §2.6).
    case valid(payloadLength: Int, nextHeader: IPProtocol)
    /// Fewer than the 2 bytes of Pad Length and Next Header.
    case tooShort
    /// Pad Length claims more bytes than precede it.
    case padLengthTooLarge
    /// The padding bytes are not 1, 2, 3, …
    case badPadding
}

/// ESP trailer helpers.
public enum ESPTrailer {
    /// Pad Length and Next Header.
    @inlinable public static var fixedLength: Int { 2 }
    /// RFC 4303 §2.4: the 4-byte alignment that applies when the cipher's block size is smaller.
    @inlinable public static var defaultAlignment: Int { 4 }

    /// The pad length n that makes payload + n + 2 a multiple of `alignment`
    /// (a power of two, 1...256; 4 for the AEADs). The smallest such n.
    @inlinable @inline(__always)
    public static func padLength(payloadLength: Int, alignment: Int = defaultAlignment) -> Int {
        assert(alignment > 0 && alignment <= 256 && alignment & (alignment - 1) == 0, "alignment \(alignment)")
        // −(payload + 2) mod alignment, by masking; alignment − 1 ≤ 255 fits Pad Length.
        return (0 &- (payloadLength &+ fixedLength)) & (alignment &- 1)
    }

    /// Padding, Pad Length and Next Header together: what follows the payload.
    @inlinable @inline(__always)
    public static func trailerLength(payloadLength: Int, alignment: Int = defaultAlignment) -> Int {
        padLength(payloadLength: payloadLength, alignment: alignment) &+ fixedLength
    }

    /// Writes 1, 2, …, `padLength`, then `padLength` and `nextHeader`, at
    /// `trailer` (the byte after the payload): `padLength + 2` bytes, which
    /// the caller has room for. `padLength` is 0...255.
    @inlinable
    public static func write(padLength: Int, nextHeader: IPProtocol, at trailer: UnsafeMutableRawPointer) {
        assert(padLength >= 0 && padLength <= 255, "pad length \(padLength)")
        var i = 0
        while i < padLength {
            trailer.storeBytes(of: UInt8(truncatingIfNeeded: i &+ 1), toByteOffset: i, as: UInt8.self)
            i &+= 1
        }
        trailer.storeBytes(of: UInt8(truncatingIfNeeded: padLength), toByteOffset: padLength, as: UInt8.self)
        trailer.storeBytes(of: nextHeader.rawValue, toByteOffset: padLength &+ 1, as: UInt8.self)
    }

    /// `write` for the AEADs (`padLength` 0...3) as one 8-byte store instead
    /// of a byte loop: the trailer, then zeros up to 8 bytes. The caller has
    /// 8 writable bytes at `trailer`; the bytes after the trailer are the
    /// ICV's, which the seal overwrites.
    @inlinable @inline(__always)
    public static func writeAligned4(padLength: Int, nextHeader: IPProtocol, at trailer: UnsafeMutableRawPointer) {
        assert(padLength >= 0 && padLength <= 3, "pad length \(padLength)")
        // 8 · padLength ≤ 24: both shifts stay below 64.
        let shift = UInt64(truncatingIfNeeded: padLength) &<< 3
        let padding = UInt64(0x03_02_01) & ((1 &<< shift) &- 1)
        let value = padding | UInt64(truncatingIfNeeded: padLength) &<< shift
            | UInt64(nextHeader.rawValue) &<< (shift &+ 8)
        trailer.storeBytes(of: value.littleEndian, as: UInt64.self)
    }

    /// Validates the trailer at the end of `length` decrypted bytes at
    /// `plaintext` (payload through Next Header) and says where the payload ends.
    /// Always inlined: the result would otherwise come back through memory.
    @inlinable @inline(__always)
    public static func parse(_ plaintext: UnsafeRawPointer, length: Int) -> ESPTrailerParse {
        guard length >= fixedLength else { return .tooShort }
        let padLength = Int(plaintext.load(fromByteOffset: length &- 2, as: UInt8.self))
        let nextHeader = plaintext.load(fromByteOffset: length &- 1, as: UInt8.self)
        let payloadLength = length &- fixedLength &- padLength  // may go negative: checked next
        guard payloadLength >= 0 else { return .padLengthTooLarge }
        var i = 0
        while i < padLength {
            // payloadLength + i < length − 2: in bounds.
            if plaintext.load(fromByteOffset: payloadLength &+ i, as: UInt8.self) != UInt8(truncatingIfNeeded: i &+ 1) {
                return .badPadding
            }
            i &+= 1
        }
        return .valid(payloadLength: payloadLength, nextHeader: IPProtocol(nextHeader))
    }
}
