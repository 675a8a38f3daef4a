import IPsec
import Packet
import Testing

private let limit32: UInt64 = 0xFFFF_FFFF
private let two32: UInt64 = 1 << 32

/// Every low half worth asking about around a window: the whole window, a
/// margin past both edges, and the far side of the 32-bit circle.
private func probeLows(highest: UInt64, size: Int) -> [UInt32] {
    var lows: [UInt32] = [0, 1, 2, .max, .max - 1, .max - 63, 1 << 31]
    let tl = UInt32(truncatingIfNeeded: highest)
    lows += [tl &+ (1 << 31), tl &- (1 << 31), tl &+ (1 << 31) &+ 1]
    let h = Int128(highest)
    for d in -(Int128(size) + 130)...130 {
        let s = h + d
        if s >= 0 && s <= Int128(UInt64.max) { lows.append(UInt32(truncatingIfNeeded: s)) }
    }
    return lows
}

/// Checks every probe against the model; the check must leave highest and
/// every bitmap byte as they were.
private func probeAll(_ w: OwnedWindow, _ model: ReferenceReplay, _ context: String,
                      sourceLocation: SourceLocation = #_sourceLocation)
{
    let before = w.snapshot()
    let highest = w.window.highestReceived
    #expect(highest.rawValue == model.highest, "\(context)", sourceLocation: sourceLocation)
    var mismatches = 0
    for low in probeLows(highest: highest.rawValue, size: w.window.size) {
        let got = w.window.check(low)
        let want = model.check(low)
        if got != want {
            mismatches += 1
            if mismatches <= 3 {
                Issue.record("\(context): check(\(low)) = \(got), model says \(want)", sourceLocation: sourceLocation)
            }
        }
    }
    #expect(mismatches == 0, "\(context)", sourceLocation: sourceLocation)
    #expect(w.snapshot() == before, "check wrote the bitmap: \(context)", sourceLocation: sourceLocation)
    #expect(w.window.highestReceived == highest, "\(context)", sourceLocation: sourceLocation)
}

/// Delivers `s` (the true number) the way the data path would: check, and
/// update only when the ICV would verify, i.e. when the inferred number is the
/// true one. Returns the verdict.
@discardableResult
private func deliver(_ s: UInt64, to w: inout OwnedWindow, _ model: inout ReferenceReplay,
                     sourceLocation: SourceLocation = #_sourceLocation) -> ReplayVerdict
{
    let low = UInt32(truncatingIfNeeded: s)
    let verdict = w.window.check(low)
    let expected = model.check(low)
    if verdict != expected {
        Issue.record("check(\(low)) for \(s) = \(verdict), model says \(expected)", sourceLocation: sourceLocation)
    }
    if verdict.acceptedValue == s {
        let got = w.window.update(acceptedSequence: SequenceNumber(s))
        let want = model.update(s)
        if got != want { Issue.record("update(\(s)) = \(got), model says \(want)", sourceLocation: sourceLocation) }
    }
    return verdict
}

@Suite struct ReplayWindowTests {
    static let sizes = [32, 64, 128, 1024, 4096]

    /// Window positions: fresh, around the first blocks, around W, mid-space at
    /// several bit offsets, at the end of the 32-bit space, and (ESN) across
    /// each high-half boundary up to the end of the 64-bit space.
    static func bases(size: Int, esn: Bool) -> [UInt64] {
        let w = UInt64(size)
        var b: [UInt64] = [0, 1, 31, 63, 64, w - 2, w - 1, w, w + 1, 100_000, 100_017, 100_063, 1 << 31,
                           limit32 - 2 * w, limit32 - w, limit32 - 40, limit32]
        if esn {
            b += [two32, two32 + 1, two32 + w - 2, two32 + w - 1, two32 + w, (5 << 32) | 0xFFFF_FF00,
                  UInt64.max - two32, (limit32 << 32) + 10, (limit32 << 32) + w, UInt64.max - 2 * w, UInt64.max]
        }
        return b
    }

    // MARK: - Exhaustive sweeps against the reference model

    @Test(arguments: sizes, [false, true])
    func sweepWindowPositions(size: Int, esn: Bool) throws {
        let limit = SequenceNumber.limit(esn: esn).rawValue
        for base in Self.bases(size: size, esn: esn) {
            var w = try OwnedWindow(size: size, esn: esn, highest: base)
            defer { w.free() }
            var model = ReferenceReplay(size: size, esn: esn, highest: base)
            probeAll(w, model, "W=\(size) esn=\(esn) installed at \(base)")

            // Move right by up to 1.5 W, receiving about half the numbers, so
            // the bitmap holds holes and the window crosses block (and, near
            // 2^32, high-half) boundaries.
            var rng = SplitMix64(seed: base ^ UInt64(size) << 40 ^ (esn ? 1 : 0))
            let top = base + min(limit - base, UInt64(3 * size / 2))
            var s = base
            while s < top {
                s += 1
                if rng.next() & 1 == 0 { deliver(s, to: &w, &model) }
            }
            // Late arrivals inside the window.
            for _ in 0..<(size / 4) {
                let back = rng.next() % UInt64(size)
                if back < model.highest { deliver(model.highest - back, to: &w, &model) }
            }
            probeAll(w, model, "W=\(size) esn=\(esn) from \(base) to \(model.highest)")
        }
    }

    /// Jumps of every size that matters to the ring: within a block, one block,
    /// W, B blocks (the whole ring) and far beyond. Stale blocks must read as
    /// not received.
    @Test(arguments: sizes, [false, true])
    func sweepJumps(size: Int, esn: Bool) throws {
        let blocks = UInt64(try ReplayWindowConfiguration(size: size, esn: esn).bitmapBlockCount)
        let w = UInt64(size)
        let jumps: [UInt64] = [1, 2, 63, 64, 65, w - 1, w, w + 1, 64 * blocks - 1, 64 * blocks, 64 * blocks + 1,
                               10 * w + 7]
        let starts: [UInt64] = esn ? [1000, 1037, two32 - 70, (limit32 << 32) - 100] : [1000, 1037, 1 << 31]
        for start in starts {
            for jump in jumps {
                var ow = try OwnedWindow(size: size, esn: esn, highest: start)
                defer { ow.free() }
                var model = ReferenceReplay(size: size, esn: esn, highest: start)
                // Holes: receive every third number over two windows.
                for k in stride(from: UInt64(1), through: 2 * w, by: 3) { deliver(start + k, to: &ow, &model) }
                let target = model.highest + jump
                #expect(deliver(target, to: &ow, &model) == .accept(SequenceNumber(target)))
                #expect(ow.window.highestReceived.rawValue == target)
                probeAll(ow, model, "W=\(size) esn=\(esn) start \(start) jump \(jump)")
            }
        }
    }

    /// Seeded random traffic in bursts, as the data path sees it: check a whole
    /// burst, then update the accepted packets whose ICV would verify. Reorders,
    /// duplicates (also within one burst), big jumps, ancient packets, packets
    /// at the window's edge and forgeries; with ESN the stream crosses 2^32.
    @Test(arguments: sizes, [false, true])
    func randomTrafficAgainstReference(size: Int, esn: Bool) throws {
        let limit = SequenceNumber.limit(esn: esn).rawValue
        let w = UInt64(size)
        let starts: [UInt64] = esn ? [0, two32 - 6 * w] : [0, limit32 - 40 * w]
        var verdicts: [String: Int] = [:]
        var updates: [ReplayUpdate: Int] = [:]
        var misinferred = 0
        for start in starts {
            var ow = try OwnedWindow(size: size, esn: esn, highest: start)
            defer { ow.free() }
            var model = ReferenceReplay(size: size, esn: esn, highest: start)
            var rng = SplitMix64(seed: UInt64(size) &* 1_000_003 &+ start &+ (esn ? 7 : 0))
            var sent = start  // highest number the sender has used
            var inFlight: [UInt64] = []
            var history: [UInt64] = []
            for _ in 0..<800 {
                // Build one burst of (true number or nil for a forgery, low half).
                var burst: [(UInt64?, UInt32)] = []
                for _ in 0..<(1 + Int(rng.next() % 16)) {
                    let r = rng.next() % 100
                    var s: UInt64?
                    switch r {
                    case 0..<55:
                        if sent < limit { sent += 1; inFlight.append(sent) }
                        if !inFlight.isEmpty && (rng.next() % 3 != 0 || inFlight.count > 8) {
                            s = inFlight.remove(at: Int(rng.next() % UInt64(inFlight.count)))
                        }
                    case 55..<67:
                        if !history.isEmpty { s = history[history.count - 1 - Int(rng.next() % UInt64(min(history.count, 64)))] }
                    case 67..<72:
                        sent += min(limit - sent, 1 + rng.next() % (4 * w))
                        if sent > start { s = sent }
                    case 72..<80:
                        if sent > w { s = 1 + rng.next() % (sent - w) }  // ancient
                    case 80..<92:
                        if sent > w + 2 { s = sent - w - 1 + rng.next() % 4 }  // around the left edge
                    default:
                        burst.append((nil, UInt32(truncatingIfNeeded: rng.next())))  // forged: ICV fails
                    }
                    if let s, s > 0 { burst.append((s, UInt32(truncatingIfNeeded: s))); history.append(s) }
                }
                if history.count > 4096 { history.removeFirst(history.count - 1024) }

                // Check the whole burst against one state.
                var verdictsOfBurst: [ReplayVerdict] = []
                for (_, low) in burst {
                    let got = ow.window.check(low)
                    let want = model.check(low)
                    if got != want { Issue.record("W=\(size) esn=\(esn): check(\(low)) = \(got), model \(want)") }
                    verdictsOfBurst.append(got)
                    let key: String
                    switch got {
                    case .accept: key = "accept"
                    case .replayed: key = "replayed"
                    case .tooOld: key = "tooOld"
                    case .beforeFirstSequence: key = "beforeFirst"
                    case .beyondSequenceSpace: key = "beyond"
                    }
                    verdicts[key, default: 0] += 1
                }
                // Then update those whose ICV verifies, in burst order.
                for ((s, _), verdict) in zip(burst, verdictsOfBurst) {
                    guard let accepted = verdict.acceptedValue else { continue }
                    guard let s, accepted == s else { misinferred += 1; continue }
                    let got = ow.window.update(acceptedSequence: SequenceNumber(accepted))
                    let want = model.update(accepted)
                    if got != want { Issue.record("W=\(size) esn=\(esn): update(\(accepted)) = \(got), model \(want)") }
                    updates[got, default: 0] += 1
                }
                if ow.window.highestReceived.rawValue != model.highest {
                    Issue.record("highest \(ow.window.highestReceived) vs model \(model.highest)")
                }
            }
            probeAll(ow, model, "after random traffic W=\(size) esn=\(esn) from \(start)")
        }
        // The walk exercised what it claims to.
        #expect(verdicts["accept", default: 0] > 1000)
        #expect(verdicts["replayed", default: 0] > 100)
        #expect(updates[.recorded, default: 0] > 1000)
        #expect(updates[.replayed, default: 0] > 0, "no duplicate inside a burst")
        if esn {
            #expect(verdicts["tooOld", default: 0] == 0, "ESN maps every number into or right of the window")
            #expect(misinferred > 0, "no ancient packet was inferred into the next subspace")
        } else {
            #expect(verdicts["tooOld", default: 0] > 100)
        }
    }

    // MARK: - RFC 4303 Appendix A (ESN)

    /// Case B: the window spans subspaces 0 and 1 (highest = 2^32 + 5, W = 64,
    /// Bl = 5 − 63 mod 2^32 = 0xFFFFFFC6).
    @Test func appendixACaseBWindowSpansTwoSubspaces() throws {
        var ow = try OwnedWindow(size: 64, esn: true, highest: two32 - 100)
        defer { ow.free() }
        let skipped: Set<UInt64> = [0xFFFF_FFF0, two32 + 3]
        for s in (two32 - 99)...(two32 + 5) where !skipped.contains(s) {
            _ = ow.window.update(acceptedSequence: SequenceNumber(s))
        }
        let window = ow.window
        #expect(window.highestReceived.rawValue == two32 + 5)
        // Seql ≥ Bl: Seqh = Th − 1 = 0.
        #expect(window.check(0xFFFF_FFF0) == .accept(SequenceNumber(high32: 0, low32: 0xFFFF_FFF0)))
        #expect(window.check(0xFFFF_FFF1) == .replayed)
        #expect(window.check(0xFFFF_FFC6) == .replayed)  // exactly Bl, the left edge
        // Seql < Bl: Seqh = Th = 1.
        #expect(window.check(3) == .accept(SequenceNumber(high32: 1, low32: 3)))
        #expect(window.check(0) == .replayed)  // 2^32 itself was received
        #expect(window.check(5) == .replayed)
        #expect(window.check(6) == .accept(SequenceNumber(high32: 1, low32: 6)))
        // Just below Bl: Seqh = Th, i.e. far ahead; the ICV will decide.
        #expect(window.check(0xFFFF_FFC5) == .accept(SequenceNumber(high32: 1, low32: 0xFFFF_FFC5)))
    }

    /// Case A: the window lies within subspace 0 (highest = 0xFFFFFFF0, W = 64,
    /// Bl = 0xFFFFFFB1).
    @Test func appendixACaseAWindowInOneSubspace() throws {
        let ow = try OwnedWindow(size: 64, esn: true, highest: 0xFFFF_FFF0)
        defer { ow.free() }
        let window = ow.window
        // Seql < Bl: Seqh = Th + 1.
        #expect(window.check(3) == .accept(SequenceNumber(high32: 1, low32: 3)))
        #expect(window.check(0) == .accept(SequenceNumber(high32: 1, low32: 0)))
        #expect(window.check(0xFFFF_FFB0) == .accept(SequenceNumber(high32: 1, low32: 0xFFFF_FFB0)))
        // Seql ≥ Bl: Seqh = Th.
        #expect(window.check(0xFFFF_FFB1) == .replayed)  // Bl: inside, and installed as received
        #expect(window.check(0xFFFF_FFF0) == .replayed)
        #expect(window.check(0xFFFF_FFF5) == .accept(SequenceNumber(high32: 0, low32: 0xFFFF_FFF5)))
    }

    /// Case B with Th = 0: Seqh would be −1.
    @Test func appendixACaseBBeforeTheFirstSubspace() throws {
        let ow = try OwnedWindow(size: 64, esn: true, highest: 5)
        defer { ow.free() }
        let window = ow.window
        #expect(window.check(0xFFFF_FFF0) == .beforeFirstSequence)
        #expect(window.check(0xFFFF_FFC6) == .beforeFirstSequence)  // Bl
        #expect(window.check(0xFFFF_FFC5) == .accept(SequenceNumber(0xFFFF_FFC5)))  // ahead in subspace 0
        #expect(window.check(6) == .accept(6))
        #expect(window.check(5) == .replayed)
    }

    /// Case A with Th = 2^32 − 1: Seqh would be 2^32.
    @Test func appendixACaseABeyondTheLastSubspace() throws {
        let top: UInt64 = limit32 << 32
        let ow = try OwnedWindow(size: 64, esn: true, highest: top | 0x1000)
        defer { ow.free() }
        #expect(ow.window.check(0x10) == .beyondSequenceSpace)
        #expect(ow.window.check(0xFC0) == .beyondSequenceSpace)  // Bl − 1
        #expect(ow.window.check(0xFC1) == .replayed)  // Bl
        #expect(ow.window.check(0x2000) == .accept(SequenceNumber(top | 0x2000)))

        let end = try OwnedWindow(size: 64, esn: true, highest: UInt64.max)
        defer { end.free() }
        #expect(end.window.check(0xFFFF_FFFF) == .replayed)
        #expect(end.window.check(0) == .beyondSequenceSpace)
        #expect(end.window.check(0xFFFF_FFC0) == .replayed)
        #expect(end.window.check(0xFFFF_FFBF) == .beyondSequenceSpace)

        // Case B in the last subspace: Seqh = Th − 1 is fine there.
        let spans = try OwnedWindow(size: 64, esn: true, highest: top | 5)
        defer { spans.free() }
        #expect(spans.window.check(0xFFFF_FFF0) == .replayed)
        #expect(spans.window.check(6) == .accept(SequenceNumber(top | 6)))
    }

    // MARK: - Without ESN

    /// Number 0 is never accepted, fresh or later, and the window never
    /// infers anything but the low half.
    @Test(arguments: sizes)
    func zeroIsNeverValid(size: Int) throws {
        for esn in [false, true] {
            var ow = try OwnedWindow(size: size, esn: esn, highest: 0)
            defer { ow.free() }
            #expect(ow.window.check(0) == .replayed)
            #expect(ow.window.check(1) == .accept(1))
            for s in stride(from: UInt64(1), through: UInt64(3 * size), by: 7) {
                _ = ow.window.update(acceptedSequence: SequenceNumber(s))
                #expect(ow.window.check(0).acceptedValue != 0)
            }
            #expect(ow.window.update(acceptedSequence: 0) != .recorded)
        }
        let big = try OwnedWindow(size: size, esn: false, highest: UInt64(size) + 10)
        defer { big.free() }
        #expect(big.window.check(0) == .tooOld)
    }

    @Test func endOfThe32BitSpace() throws {
        let ow = try OwnedWindow(size: 64, esn: false, highest: limit32)
        defer { ow.free() }
        let window = ow.window
        #expect(window.check(.max) == .replayed)
        #expect(window.check(.max - 63) == .replayed)
        #expect(window.check(.max - 64) == .tooOld)
        #expect(window.check(0) == .tooOld)  // no wrap without ESN
        #expect(window.check(5) == .tooOld)
    }

    /// W need not be a power of two and is used exactly.
    @Test func windowSizeIsExact() throws {
        for size in [32, 33, 64, 100, 1000, 4096, 65536] {
            let ow = try OwnedWindow(size: size, esn: false, highest: 1_000_000)
            defer { ow.free() }
            var window = ow.window
            #expect(window.size == size)
            #expect(window.update(acceptedSequence: 1_000_001) == .recorded)
            let edge = UInt32(1_000_001 - size)
            #expect(window.check(edge + 1) == .replayed)  // installed as received, still inside
            #expect(window.check(edge) == .tooOld)
        }
    }

    // MARK: - The check/update split

    @Test func checkNeverMutatesAndUpdateOnlyAfterICV() throws {
        var ow = try OwnedWindow(size: 64, esn: true, highest: 1000)
        defer { ow.free() }
        let before = ow.snapshot()
        // A forgery with sequence 1010: the check accepts, the ICV fails, no update.
        for _ in 0..<3 { #expect(ow.window.check(1010) == .accept(1010)) }
        #expect(ow.snapshot() == before)
        #expect(ow.window.highestReceived == 1000)
        // The genuine packet with the same number is still accepted and recorded.
        #expect(ow.window.check(1010) == .accept(1010))
        #expect(ow.window.update(acceptedSequence: 1010) == .recorded)
        #expect(ow.window.check(1010) == .replayed)
        #expect(ow.window.check(1005) == .accept(1005))  // a hole left by the jump
    }

    @Test func updateRechecksWithinABurst() throws {
        var ow = try OwnedWindow(size: 64, esn: false, highest: 1000)
        defer { ow.free() }
        // Two copies of one packet pass the check in one burst.
        #expect(ow.window.check(1020) == .accept(1020))
        #expect(ow.window.check(1020) == .accept(1020))
        #expect(ow.window.update(acceptedSequence: 1020) == .recorded)
        #expect(ow.window.update(acceptedSequence: 1020) == .replayed)
        // Same for an old number inside the window.
        #expect(ow.window.check(990) == .replayed)
        #expect(ow.window.check(1010) == .accept(1010))
        #expect(ow.window.update(acceptedSequence: 1010) == .recorded)
        #expect(ow.window.update(acceptedSequence: 1010) == .replayed)
        // A later packet of the burst moved the window past an earlier one.
        #expect(ow.window.check(1015) == .accept(1015))
        #expect(ow.window.update(acceptedSequence: 1200) == .recorded)
        #expect(ow.window.update(acceptedSequence: 1015) == .tooOld)
        #expect(ow.window.highestReceived == 1200)
    }

    // MARK: - Set-up

    @Test func configurationBoundsAndBitmapRounding() throws {
        #expect(throws: ReplayWindowError.sizeOutOfRange(31)) { try ReplayWindowConfiguration(size: 31, esn: false) }
        #expect(throws: ReplayWindowError.sizeOutOfRange(65537)) { try ReplayWindowConfiguration(size: 65537, esn: true) }
        #expect(try ReplayWindowConfiguration(esn: false).size == 64)
        let expected: [(Int, Int)] = [(32, 2), (64, 2), (65, 4), (128, 4), (192, 4), (193, 8), (1024, 32),
                                      (4096, 128), (65536, 2048)]
        for (size, blocks) in expected {
            let c = try ReplayWindowConfiguration(size: size, esn: false)
            #expect(c.bitmapBlockCount == blocks, "W=\(size)")
            #expect(c.bitmapByteCount == blocks * 8)
            // The ring always has room for the window plus one spare block.
            #expect(c.bitmapBlockCount * 64 >= size + 64)
        }
        let c = try ReplayWindowConfiguration(size: 64, esn: false)
        #expect(throws: ReplayWindowError.highestReceivedBeyondSequenceSpace(two32)) {
            try ReplayWindow.allocate(configuration: c, highestReceived: SequenceNumber(two32))
        }
        #expect(ReplayWindowError.sizeOutOfRange(31).description.contains("32...65536"))
    }

    @Test func allocateAndReset() throws {
        let c = try ReplayWindowConfiguration(size: 1024, esn: true)
        var window = try ReplayWindow.allocate(configuration: c, highestReceived: SequenceNumber(two32 + 7))
        defer { window.deallocate() }
        #expect(window.bitmapBlockCount == 32)
        #expect(window.esn)
        #expect(window.highestReceived == SequenceNumber(two32 + 7))
        #expect(window.check(7) == .replayed)
        #expect(window.check(8) == .accept(SequenceNumber(two32 + 8)))
        #expect(window.update(acceptedSequence: SequenceNumber(two32 + 100)) == .recorded)
        #expect(window.check(50) == .accept(SequenceNumber(two32 + 50)))
        // `seq N` on a live SA: everything up to N is received again, nothing above.
        try window.reset(highestReceived: 40)
        #expect(window.highestReceived == 40)
        #expect(window.check(40) == .replayed)
        #expect(window.check(39) == .replayed)
        #expect(window.check(41) == .accept(41))
        #expect(window.check(100) == .accept(100))
    }
}
