import IPsec
import Packet
import Testing

@Suite struct SequenceNumberTests {
    static let limit32: UInt64 = 0xFFFF_FFFF

    @Test func spiReservedRangeAndDescription() {
        #expect(SPI(0).isReserved)
        #expect(SPI(255).isReserved)
        #expect(!SPI(256).isReserved)
        #expect(!SPI(0x1001).isReserved)
        #expect(SPI(0x1001).description == "0x00001001")
        #expect(SPI(0xDEAD_BEEF).description == "0xdeadbeef")
        #expect(SPI(1) < SPI(2))
    }

    @Test func halvesForTheHeaderAndTheAAD() {
        let s = SequenceNumber(0x0000_0001_0000_0002)
        #expect(s.high32 == 1)
        #expect(s.low32 == 2)
        #expect(SequenceNumber(high32: 0xAABB_CCDD, low32: 0x1122_3344).rawValue == 0xAABB_CCDD_1122_3344)
        var rng = SplitMix64(seed: 7)
        for _ in 0..<1000 {
            let raw = rng.next()
            let s = SequenceNumber(raw)
            #expect(SequenceNumber(high32: s.high32, low32: s.low32) == s)
        }
        #expect(SequenceNumber.limit(esn: false).rawValue == Self.limit32)
        #expect(SequenceNumber.limit(esn: true).rawValue == UInt64.max)
    }

    @Test func freshSAStartsAtOne() throws {
        var out = try OutboundSequence(esn: false)
        #expect(out.next == 1)
        #expect(out.lastSent == 0)
        #expect(out.assign() == .assigned(1))
        #expect(out.assign() == .assigned(2))
        #expect(out.lastSent == 2)
        #expect(out.remaining == Self.limit32 - 2)
        #expect(!out.esn)
        #expect(try OutboundSequence(esn: true).esn)
    }

    @Test func seqNInstallsTheNextNumberSent() throws {
        var out = try OutboundSequence(esn: false, next: 12345)
        #expect(out.next == 12345)
        #expect(out.lastSent == 12344)
        #expect(out.assign() == .assigned(12345))
        #expect(out.next == 12346)

        var esn = try OutboundSequence(esn: true, next: SequenceNumber(high32: 7, low32: 9))
        #expect(esn.assign() == .assigned(SequenceNumber(high32: 7, low32: 9)))
    }

    @Test func seqNValidation() {
        #expect(throws: SequenceNumberError.zeroIsNeverSent) { try OutboundSequence(esn: false, next: 0) }
        #expect(throws: SequenceNumberError.zeroIsNeverSent) { try OutboundSequence(esn: true, next: 0) }
        #expect(throws: SequenceNumberError.beyondSequenceSpace(next: 1 << 32, limit: Self.limit32)) {
            try OutboundSequence(esn: false, next: SequenceNumber(1 << 32))
        }
        #expect(throws: Never.self) { try OutboundSequence(esn: false, next: SequenceNumber(Self.limit32)) }
        #expect(throws: Never.self) { try OutboundSequence(esn: true, next: SequenceNumber(UInt64.max)) }
        #expect(SequenceNumberError.zeroIsNeverSent.description.contains("never sent"))
    }

    @Test func exhaustionWithout32BitESN() throws {
        var out = try OutboundSequence(esn: false, next: SequenceNumber(Self.limit32 - 1))
        #expect(out.assign() == .assigned(SequenceNumber(Self.limit32 - 1)))
        #expect(!out.isExhausted)
        #expect(out.assign() == .assigned(SequenceNumber(Self.limit32)))
        #expect(out.isExhausted)
        #expect(out.next == nil)
        #expect(out.remaining == 0)
        for _ in 0..<3 { #expect(out.assign() == .exhausted) }
        #expect(out.lastSent.rawValue == Self.limit32)  // never wrapped
    }

    @Test func exhaustionWithESN() throws {
        var out = try OutboundSequence(esn: true, next: SequenceNumber(UInt64.max - 1))
        #expect(out.assign() == .assigned(SequenceNumber(UInt64.max - 1)))
        #expect(out.assign() == .assigned(SequenceNumber(UInt64.max)))
        #expect(out.isExhausted)
        for _ in 0..<3 { #expect(out.assign() == .exhausted) }
        #expect(out.lastSent.rawValue == UInt64.max)
    }

    @Test func esnCarriesIntoTheHighHalf() throws {
        var out = try OutboundSequence(esn: true, next: SequenceNumber(Self.limit32))
        guard case .assigned(let a) = out.assign(), case .assigned(let b) = out.assign() else {
            Issue.record("exhausted too early"); return
        }
        #expect(a.high32 == 0 && a.low32 == 0xFFFF_FFFF)
        #expect(b.high32 == 1 && b.low32 == 0)
    }

    @Test func burstRunsStopAtTheLimit() throws {
        var out = try OutboundSequence(esn: false)
        #expect(out.assign(upTo: 32) == SequenceRun(first: 1, count: 32))
        #expect(out.assign() == .assigned(33))
        #expect(out.assign(upTo: 0).count == 0)
        #expect(out.assign(upTo: -5).count == 0)
        #expect(out.assign() == .assigned(34))

        var end = try OutboundSequence(esn: false, next: SequenceNumber(Self.limit32 - 9))
        #expect(end.assign(upTo: 32) == SequenceRun(first: SequenceNumber(Self.limit32 - 9), count: 10))
        #expect(end.isExhausted)
        #expect(end.assign(upTo: 5).count == 0)
        #expect(end.assign() == .exhausted)

        var esnEnd = try OutboundSequence(esn: true, next: SequenceNumber(UInt64.max - 2))
        #expect(esnEnd.assign(upTo: 8) == SequenceRun(first: SequenceNumber(UInt64.max - 2), count: 3))
        #expect(esnEnd.assign(upTo: 8).count == 0)
        #expect(esnEnd.assign() == .exhausted)
    }

    /// Runs and single assignments hand out the same numbers from any state.
    @Test func burstRunsMatchSingleAssignments() throws {
        var rng = SplitMix64(seed: 11)
        for esn in [false, true] {
            let limit = SequenceNumber.limit(esn: esn).rawValue
            for _ in 0..<200 {
                let start = limit - rng.next() % 100
                var bulk = try OutboundSequence(esn: esn, next: SequenceNumber(start))
                var single = bulk
                let want = Int(rng.next() % 120)
                let run = bulk.assign(upTo: want)
                var singles: [UInt64] = []
                for _ in 0..<want {
                    if case .assigned(let s) = single.assign() { singles.append(s.rawValue) }
                }
                #expect(run.count == singles.count)
                if let first = singles.first { #expect(run.first.rawValue == first) }
                #expect(singles == singles.indices.map { run.first.rawValue + UInt64($0) })
                #expect(bulk == single)
            }
        }
    }
}
