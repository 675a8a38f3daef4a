// Inbound anti-replay: RFC 4303 §3.4.3 with the ESN inference of RFC 4303
// Appendix A, kept in an RFC 6479-style ring bitmap of 64-bit blocks.
//
// The RFC splits the work in two and so does this type:
//   * `check(_:)` runs before decryption. It only reads the state; for ESN it
//     also infers the 64-bit number (Appendix A2.2) that the caller needs for
//     the AAD. A packet whose high half was guessed wrong fails the ICV.
//   * `update(acceptedSequence:)` runs after the ICV verified and is the only
//     per-packet writer. It re-checks, because two copies of one packet can
//     pass `check` in the same burst before either is recorded.
//
// State: the highest number received (64 bits) and a ring of B 64-bit blocks,
// B a power of two with B ≥ ⌈W / 64⌉ + 1. Number s lives at bit s mod 64 of
// block (s / 64) mod B. When the highest number moves into a new block the
// blocks passed over are cleared as a whole (RFC 6479 §2), so sliding costs
// one store per 64 numbers and never shifts a bitmap. The one spare block is
// what lets the window's lower edge sit in the middle of a block.
//
// Window size: any W in 32...65536, used exactly (a number is too old when it
// is W or more behind the highest). Only the bitmap is rounded up: B is the
// next power of two of ⌈W / 64⌉ + 1, so W = 64 takes 2 blocks (16 bytes),
// W = 1024 takes 32 blocks (256 bytes), W = 4096 takes 128 blocks (1 KiB).
//
// Storage: `ReplayWindow` is plain integers and one pointer to the bitmap, so
// it can be placed in raw per-core memory; the bitmap is memory the caller
// owns (`rte_zmalloc_socket` on the owning core's node later; `allocate` for
// tests and simple callers). Copies of the value share the bitmap: keep one
// live copy per SA, in the replica of the core that owns the SA, and let only
// that core call `update`. Nothing here allocates, traps or throws per packet.
//
// `seq N` (installing an inbound SA mid-stream): N is the highest number
// already received, and every number up to N counts as received. That is the
// conservative reading: a packet the previous owner may have accepted is never
// accepted twice, at the price of dropping stragglers below N. A fresh SA is
// installed with N = 0, which is also what makes 0 itself never valid.

/// Control-plane errors when a replay window is configured or installed.
public enum ReplayWindowError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The window must hold 32...65536 packets (RFC 4303 §3.4.3: at least 32).
    case sizeOutOfRange(Int)
    /// Without ESN the highest received number cannot exceed 2^32 − 1.
    case highestReceivedBeyondSequenceSpace(UInt64)

    public var description: String {
        switch self {
        case .sizeOutOfRange(let size):
            "replay window of \(size) packets is out of range "
                + "(\(ReplayWindowConfiguration.minimumSize)...\(ReplayWindowConfiguration.maximumSize))"
        case .highestReceivedBeyondSequenceSpace(let highest):
            "highest received sequence number \(highest) needs ESN (32-bit sequence numbers end at 4294967295)"
        }
    }
}

/// The cold, validated description of an SA's anti-replay window.
public struct ReplayWindowConfiguration: Hashable, Sendable {
    /// RFC 4303 §3.4.3: "A minimum window size of 32 packets MUST be supported".
    public static let minimumSize = 32
    public static let maximumSize = 65536
    /// RFC 4303 §3.4.3: 64 "SHOULD be employed as the default".
    public static let defaultSize = 64

    /// W, the number of packets the window covers, used exactly.
    public let size: Int
    /// Extended (64-bit) sequence numbers, RFC 4303 §2.2.1.
    public let esn: Bool

    public init(size: Int = ReplayWindowConfiguration.defaultSize, esn: Bool) throws(ReplayWindowError) {
        guard size >= Self.minimumSize, size <= Self.maximumSize else { throw .sizeOutOfRange(size) }
        self.size = size
        self.esn = esn
    }

    private init(disabledWithESN esn: Bool) {
        size = 0
        self.esn = esn
    }

    /// Anti-replay off (RFC 4303 §3.4.3 lets a receiver disable it): every
    /// number but 0 is accepted, any number of times. 32-bit sequence numbers
    /// only: ESN inference needs a window.
    public static let disabled = ReplayWindowConfiguration(disabledWithESN: false)

    /// Whether this window checks anything.
    public var isEnabled: Bool { size != 0 }

    /// B: the next power of two of ⌈W / 64⌉ + 1.
    public var bitmapBlockCount: Int {
        var blocks = 1
        while blocks < (size + 63) / 64 + 1 { blocks <<= 1 }
        return blocks
    }
    /// Bytes of bitmap memory `ReplayWindow.init(configuration:unsafeBitmap:highestReceived:)` needs.
    public var bitmapByteCount: Int { bitmapBlockCount * MemoryLayout<UInt64>.stride }
}

/// What `ReplayWindow.check(_:)` says about an arriving ESP packet.
public enum ReplayVerdict: Hashable, Sendable, BitwiseCopyable {
    /// Not seen and not too old: decrypt with this (inferred) 64-bit number in
    /// the AAD, then call `update(acceptedSequence:)` with it if the ICV verifies.
    case accept(SequenceNumber)
    /// Inside the window and already received.
    case replayed
    /// Left of the window: W or more behind the highest number received. Only
    /// without ESN; with ESN every number maps into or right of the window.
    case tooOld
    /// ESN, RFC 4303 Appendix A2.2 case B (the window spans two subspaces) with
    /// Th = 0: the inferred high half would be Th − 1 = −1. No such packet can
    /// have been sent.
    case beforeFirstSequence
    /// ESN, Appendix A2.2 case A with Th = 2^32 − 1 and Seql < Bl: the inferred
    /// high half would be 2^32, past the last number any sender may use.
    case beyondSequenceSpace
}

/// What `ReplayWindow.update(acceptedSequence:)` did.
public enum ReplayUpdate: Hashable, Sendable, BitwiseCopyable {
    /// Recorded; forward the packet.
    case recorded
    /// Recorded since the check (a duplicate in the same burst); drop it.
    case replayed
    /// The window moved past it since the check; drop it.
    case tooOld
}

/// The inbound anti-replay state of one SA. See the top of this file.
public struct ReplayWindow: BitwiseCopyable {
    /// The highest number received (right edge of the window).
    @usableFromInline var _highest: UInt64
    /// W.
    @usableFromInline let _size: UInt32
    /// B − 1; B is a power of two.
    @usableFromInline let _blockMask: UInt32
    @usableFromInline let _esn: Bool
    /// B blocks; caller-owned memory.
    @usableFromInline let _bitmap: UnsafeMutablePointer<UInt64>

    /// Sets up a window over `unsafeBitmap`, which must hold
    /// `configuration.bitmapBlockCount` blocks and stay valid (and be used by
    /// this SA only) for the window's life. Its contents are overwritten.
    /// Every number up to `highestReceived` counts as received (`seq N`).
    public init(configuration: ReplayWindowConfiguration, unsafeBitmap: UnsafeMutablePointer<UInt64>,
                highestReceived: SequenceNumber = 0) throws(ReplayWindowError)
    {
        guard configuration.esn || highestReceived.rawValue <= UInt64(UInt32.max) else {
            throw .highestReceivedBeyondSequenceSpace(highestReceived.rawValue)
        }
        _size = UInt32(configuration.size)
        _blockMask = UInt32(configuration.bitmapBlockCount - 1)
        _esn = configuration.esn
        _bitmap = unsafeBitmap
        _highest = highestReceived.rawValue
        fillReceivedUpToHighest()
    }

    /// Allocates a cache-line-aligned bitmap and sets up a window over it.
    /// Pair with `deallocate()`. Set-up time only.
    public static func allocate(configuration: ReplayWindowConfiguration,
                                highestReceived: SequenceNumber = 0) throws(ReplayWindowError) -> ReplayWindow
    {
        let raw = UnsafeMutableRawPointer.allocate(byteCount: configuration.bitmapByteCount, alignment: 64)
        let bitmap = raw.bindMemory(to: UInt64.self, capacity: configuration.bitmapBlockCount)
        do {
            return try ReplayWindow(configuration: configuration, unsafeBitmap: bitmap, highestReceived: highestReceived)
        } catch {
            raw.deallocate()
            throw error
        }
    }

    /// Frees a bitmap that came from `allocate`. No copy may be used afterwards.
    public func deallocate() { UnsafeMutableRawPointer(_bitmap).deallocate() }

    /// Re-installs the window at `highestReceived` (`seq N` on a live SA):
    /// everything up to it counts as received, nothing above it. Control path.
    public mutating func reset(highestReceived: SequenceNumber) throws(ReplayWindowError) {
        guard _esn || highestReceived.rawValue <= UInt64(UInt32.max) else {
            throw .highestReceivedBeyondSequenceSpace(highestReceived.rawValue)
        }
        _highest = highestReceived.rawValue
        fillReceivedUpToHighest()
    }

    /// Marks every number ≤ highest as received: all blocks full except the
    /// highest's own, where the bits above it stay clear.
    private func fillReceivedUpToHighest() {
        let blocks = Int(_blockMask) + 1
        for i in 0..<blocks { _bitmap[i] = ~0 }
        let bit = _highest & 63
        _bitmap[Int(truncatingIfNeeded: (_highest >> 6) & UInt64(_blockMask))] = ~0 >> (63 - bit)
    }

    // MARK: - Reading

    /// W, in packets.
    @inlinable public var size: Int { Int(_size) }
    @inlinable public var esn: Bool { _esn }
    /// The highest number received so far (`seq N` for an inbound SA).
    @inlinable public var highestReceived: SequenceNumber { SequenceNumber(_highest) }
    /// Blocks in the ring bitmap (B).
    @inlinable public var bitmapBlockCount: Int { Int(_blockMask) + 1 }

    /// Whether `sequence` is marked in the bitmap. Meaningful only inside the
    /// window (highest − W < sequence ≤ highest).
    @inlinable @inline(__always)
    func isMarked(_ sequence: UInt64) -> Bool {
        let block = Int(truncatingIfNeeded: (sequence >> 6) & UInt64(_blockMask))  // < B: in bounds
        return (_bitmap[block] >> (sequence & 63)) & 1 != 0
    }

    /// The pre-decryption check (RFC 4303 §3.4.3; Appendix A2.1 and A2.2 for
    /// ESN). Reads the state only. `seqLow32` is the ESP header's field.
    /// Always inlined, like `update`: out of line, `ESPInbound.decapsulate`
    /// (itself inlined into the worker loop) spills its registers around
    /// each call.
    @inlinable @inline(__always)
    public func check(_ seqLow32: UInt32) -> ReplayVerdict {
        if _size == 0 { return seqLow32 == 0 ? .tooOld : .accept(SequenceNumber(UInt64(seqLow32))) }
        let sequence: UInt64
        if _esn {
            // Appendix A2.2/A2.3: Tl, Th the halves of the highest number,
            // Bl = Tl − W + 1 mod 2^32 the window's lower edge ("arithmetic is
            // mod 2^32"). W − 1 ≥ 31: no wrap.
            let tl = UInt32(truncatingIfNeeded: _highest)
            let th = UInt32(truncatingIfNeeded: _highest >> 32)
            let wMinus1 = _size &- 1
            let bl = tl &- wMinus1
            let seqh: UInt32
            if tl >= wMinus1 {
                // Case A: the window lies within one subspace.
                if seqLow32 >= bl {
                    seqh = th
                } else {
                    guard th != UInt32.max else { return .beyondSequenceSpace }
                    seqh = th &+ 1  // th < 2^32 − 1
                }
            } else {
                // Case B: the window spans subspaces Th − 1 and Th.
                if seqLow32 >= bl {
                    guard th != 0 else { return .beforeFirstSequence }
                    seqh = th &- 1  // th > 0
                } else {
                    seqh = th
                }
            }
            sequence = UInt64(seqh) << 32 | UInt64(seqLow32)
        } else {
            sequence = UInt64(seqLow32)
        }
        if sequence > _highest { return .accept(SequenceNumber(sequence)) }
        // sequence ≤ highest: no wrap.
        if _highest &- sequence >= UInt64(_size) { return .tooOld }
        return isMarked(sequence) ? .replayed : .accept(SequenceNumber(sequence))
    }

    /// The post-authentication update: records `acceptedSequence`, a number
    /// that `check` accepted and whose ICV then verified, sliding the window
    /// when it is the new highest. Answers `.replayed` or `.tooOld` (and
    /// changes nothing) when another packet got there first since the check.
    @inlinable @inline(__always)
    public mutating func update(acceptedSequence: SequenceNumber) -> ReplayUpdate {
        let sequence = acceptedSequence.rawValue
        if _size == 0 {
            if sequence > _highest { _highest = sequence }
            return .recorded
        }
        assert(_esn || sequence <= UInt64(UInt32.max), "a 32-bit SA cannot have accepted \(sequence)")
        if sequence > _highest {
            let newBlock = sequence >> 6
            let oldBlock = _highest >> 6
            let passed = newBlock &- oldBlock  // sequence > highest: no wrap
            if passed > UInt64(_blockMask) {
                // Moved B or more blocks: every block is stale.
                var i = 0
                while i <= Int(_blockMask) { _bitmap[i] = 0; i &+= 1 }
            } else {
                // Clear the blocks entered, oldBlock + 1 ... newBlock (< B of them).
                var block = oldBlock
                while block != newBlock {
                    block &+= 1  // ≤ newBlock
                    _bitmap[Int(truncatingIfNeeded: block & UInt64(_blockMask))] = 0
                }
            }
            _highest = sequence
        } else {
            if _highest &- sequence >= UInt64(_size) { return .tooOld }  // sequence ≤ highest
            if isMarked(sequence) { return .replayed }
        }
        let block = Int(truncatingIfNeeded: (sequence >> 6) & UInt64(_blockMask))  // < B
        _bitmap[block] |= 1 &<< (sequence & 63)
        return .recorded
    }
}
