// Strong types for the SPI and the 64-bit ESP sequence number, and the
// outbound sequence counter of an SA (RFC 4303 §2.1, §2.2.1, §3.3.3).
//
// Pure arithmetic. The per-packet functions never trap, never throw and never
// allocate; only the set-up initialiser validates and throws a typed error.
// The counter never wraps: an SA that has sent its last number answers
// `.exhausted` from then on and the caller drops the packet (and the control
// plane rekeys; RFC 4303 §3.3.3).

/// A Security Parameters Index (RFC 4303 §2.1), in host order.
public struct SPI: RawRepresentable, Hashable, Comparable, Sendable, BitwiseCopyable, CustomStringConvertible {
    public var rawValue: UInt32
    @inlinable public init(rawValue: UInt32) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// 0 is reserved for local use and "MUST NOT be sent on the wire"; 1...255
    /// are reserved by IANA (RFC 4303 §2.1). No SA is installed with one.
    @inlinable public var isReserved: Bool { rawValue < 256 }

    @inlinable public static func < (a: SPI, b: SPI) -> Bool { a.rawValue < b.rawValue }

    /// `0x` and eight hex digits, the way `ip xfrm` and the command language write SPIs.
    public var description: String {
        let hex = String(rawValue, radix: 16)
        return "0x" + String(repeating: "0", count: 8 - hex.count) + hex
    }
}

/// A 64-bit ESP sequence number. Without ESN only the low half is ever
/// non-zero; with ESN (RFC 4303 §2.2.1) the low half travels in the ESP
/// header and the high half is kept by both ends and enters the AAD
/// (SPI, high half, low half: RFC 4106 §5, and the same in RFC 7634 for
/// ChaCha20-Poly1305).
public struct SequenceNumber: RawRepresentable, Hashable, Comparable, Sendable, BitwiseCopyable,
    ExpressibleByIntegerLiteral, CustomStringConvertible
{
    public var rawValue: UInt64
    @inlinable public init(rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    @inlinable public init(integerLiteral value: UInt64) { self.rawValue = value }
    @inlinable public init(high32: UInt32, low32: UInt32) {
        rawValue = UInt64(high32) << 32 | UInt64(low32)
    }

    /// The 32-bit Sequence Number field of the ESP header.
    @inlinable public var low32: UInt32 { UInt32(truncatingIfNeeded: rawValue) }
    /// The high half: 0 without ESN; with ESN it goes into the AAD only.
    @inlinable public var high32: UInt32 { UInt32(truncatingIfNeeded: rawValue >> 32) }

    /// The largest number an SA may send: 2^32 − 1 without ESN, 2^64 − 1 with ESN.
    @inlinable public static func limit(esn: Bool) -> SequenceNumber {
        SequenceNumber(esn ? UInt64.max : UInt64(UInt32.max))
    }

    @inlinable public static func < (a: SequenceNumber, b: SequenceNumber) -> Bool { a.rawValue < b.rawValue }

    public var description: String { String(rawValue) }
}

/// A control-plane error when an SA's sequence state is installed.
public enum SequenceNumberError: Error, Hashable, Sendable, CustomStringConvertible {
    /// `seq 0`: number 0 is never sent (the first packet carries 1; RFC 4303 §3.3.3).
    case zeroIsNeverSent
    /// `seq N` beyond what the SA may send (2^32 − 1 without ESN).
    case beyondSequenceSpace(next: UInt64, limit: UInt64)

    public var description: String {
        switch self {
        case .zeroIsNeverSent:
            "sequence number 0 is never sent; the first packet of an SA carries 1"
        case .beyondSequenceSpace(let next, let limit):
            "next sequence number \(next) is beyond the last one this SA may send (\(limit)); "
                + "enable ESN or rekey"
        }
    }
}

/// The result of asking an outbound SA for one sequence number.
public enum SequenceAssignment: Hashable, Sendable, BitwiseCopyable {
    case assigned(SequenceNumber)
    /// The SA has sent its last number; the packet must be dropped (and counted).
    case exhausted
}

/// A run of consecutive sequence numbers for a burst of same-SA packets:
/// `first`, `first + 1`, …, `first + count − 1`. `count` may be smaller than
/// asked for (down to 0) when the SA runs out; `first` means nothing when it is 0.
public struct SequenceRun: Hashable, Sendable, BitwiseCopyable {
    public var first: SequenceNumber
    public var count: Int
    @inlinable public init(first: SequenceNumber, count: Int) { self.first = first; self.count = count }
}

/// The outbound sequence counter of one SA. Written by the one core that owns
/// the SA (per-CPU SAs give each core its own); plain integers, no atomics.
public struct OutboundSequence: Hashable, Sendable, BitwiseCopyable {
    /// The last number handed out; 0 before the first packet.
    @usableFromInline var _lastSent: UInt64
    /// The largest number this SA may send (2^32 − 1 or 2^64 − 1).
    @usableFromInline let _limit: UInt64

    /// Sets up the counter. `next` is the number the next packet will carry
    /// (`seq N` in the command language: 1 for a fresh SA, more when an SA is
    /// installed mid-stream).
    public init(esn: Bool, next: SequenceNumber = 1) throws(SequenceNumberError) {
        let limit = SequenceNumber.limit(esn: esn).rawValue
        guard next.rawValue != 0 else { throw .zeroIsNeverSent }
        guard next.rawValue <= limit else { throw .beyondSequenceSpace(next: next.rawValue, limit: limit) }
        _limit = limit
        _lastSent = next.rawValue - 1  // next ≥ 1
    }

    @inlinable public var esn: Bool { _limit == UInt64.max }
    /// The last number sent; 0 when none was.
    @inlinable public var lastSent: SequenceNumber { SequenceNumber(_lastSent) }
    /// The largest number this SA may send.
    @inlinable public var limit: SequenceNumber { SequenceNumber(_limit) }
    /// True once the last number has been sent.
    @inlinable public var isExhausted: Bool { _lastSent == _limit }
    /// How many more packets this SA may send.
    @inlinable public var remaining: UInt64 { _limit &- _lastSent }  // lastSent ≤ limit: no wrap
    /// The number the next packet would carry, or nil once exhausted.
    @inlinable public var next: SequenceNumber? { isExhausted ? nil : SequenceNumber(_lastSent &+ 1) }

    /// Hands out the next number, or `.exhausted` (forever after) once the
    /// last one has gone. Never wraps, never traps.
    @inlinable
    public mutating func assign() -> SequenceAssignment {
        guard _lastSent < _limit else { return .exhausted }
        _lastSent &+= 1  // < limit ≤ UInt64.max: cannot overflow
        return .assigned(SequenceNumber(_lastSent))
    }

    /// Hands out up to `count` consecutive numbers for a burst; fewer (down to
    /// 0) when the SA runs out. The packets past `run.count` must be dropped.
    @inlinable
    public mutating func assign(upTo count: Int) -> SequenceRun {
        let available = _limit &- _lastSent  // lastSent ≤ limit: no wrap
        let granted = count <= 0 ? 0 : min(UInt64(count), available)
        let first = _lastSent &+ 1  // wraps only when lastSent == UInt64.max, and then granted == 0
        _lastSent &+= granted  // ≤ limit
        return SequenceRun(first: SequenceNumber(first), count: Int(truncatingIfNeeded: granted))
    }
}
