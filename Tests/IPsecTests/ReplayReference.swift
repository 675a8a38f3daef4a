import IPsec

/// The naive anti-replay model the ring bitmap is compared with: a Set of
/// every number accepted, the highest, and "everything up to the installed
/// highest counts as received". ESN inference is written the other way round
/// from RFC 4303 Appendix A2.2's case analysis: the inferred number is the
/// one value ≡ Seql (mod 2^32) in [highest − W + 1, highest − W + 2^32], the
/// 2^32 numbers that start at the window's lower edge (computed in Int128, so
/// "before 0" and "after 2^64 − 1" are plain comparisons).
struct ReferenceReplay {
    let size: UInt64
    let esn: Bool
    let installedHighest: UInt64
    private(set) var highest: UInt64
    private(set) var received: Set<UInt64> = []

    init(size: Int, esn: Bool, highest: UInt64) {
        self.size = UInt64(size)
        self.esn = esn
        installedHighest = highest
        self.highest = highest
    }

    func isReceived(_ s: UInt64) -> Bool { s <= installedHighest || received.contains(s) }

    func check(_ low: UInt32) -> ReplayVerdict {
        let value: Int128
        if esn {
            let span = Int128(1) << 32
            let bottom = Int128(highest) - Int128(size) + 1
            var offset = (Int128(low) - bottom) % span
            if offset < 0 { offset += span }
            value = bottom + offset
            if value < 0 { return .beforeFirstSequence }
            if value > Int128(UInt64.max) { return .beyondSequenceSpace }
        } else {
            value = Int128(low)
        }
        let s = UInt64(value)
        if s > highest { return .accept(SequenceNumber(s)) }
        if highest - s >= size { return .tooOld }
        return isReceived(s) ? .replayed : .accept(SequenceNumber(s))
    }

    mutating func update(_ s: UInt64) -> ReplayUpdate {
        if s > highest {
            highest = s
            received.insert(s)
            return .recorded
        }
        if highest - s >= size { return .tooOld }
        if isReceived(s) { return .replayed }
        received.insert(s)
        return .recorded
    }
}

/// A replay window over a bitmap this test owns, so that the bytes can be
/// compared before and after a check. Deallocate with `free()`.
struct OwnedWindow {
    var window: ReplayWindow
    let bitmap: UnsafeMutablePointer<UInt64>
    let blocks: Int

    init(size: Int, esn: Bool, highest: UInt64) throws {
        let configuration = try ReplayWindowConfiguration(size: size, esn: esn)
        blocks = configuration.bitmapBlockCount
        bitmap = .allocate(capacity: blocks)
        bitmap.initialize(repeating: 0x5A5A_5A5A_5A5A_5A5A, count: blocks)  // init must overwrite it
        window = try ReplayWindow(configuration: configuration, unsafeBitmap: bitmap,
                                  highestReceived: SequenceNumber(highest))
    }

    func snapshot() -> [UInt64] { (0..<blocks).map { bitmap[$0] } }
    func free() { bitmap.deallocate() }
}

extension ReplayVerdict {
    var acceptedValue: UInt64? {
        if case .accept(let s) = self { return s.rawValue }
        return nil
    }
}
