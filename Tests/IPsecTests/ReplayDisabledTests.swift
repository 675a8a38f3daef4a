import Testing
@testable import IPsec

/// `replay-window 0`: anti-replay off (RFC 4303 §3.4.3 lets the receiver
/// disable it), 32-bit sequence numbers only.
@Suite struct ReplayDisabledTests {
    @Test func acceptsEveryNumberButZeroAnyNumberOfTimes() throws {
        var w = try ReplayWindow.allocate(configuration: .disabled, highestReceived: 100)
        defer { w.deallocate() }
        #expect(!ReplayWindowConfiguration.disabled.isEnabled)
        for s: UInt32 in [1, 5, 100, 101, 5, 5, 0xFFFF_FFFF, 1] {
            guard case .accept(let n) = w.check(s) else { Issue.record("\(s) refused"); continue }
            #expect(n.rawValue == UInt64(s))
            #expect(w.update(acceptedSequence: n) == .recorded)
        }
        #expect(w.check(0) == .tooOld)
        #expect(w.highestReceived.rawValue == 0xFFFF_FFFF)
    }

    @Test func anEnabledWindowStillRefusesDuplicates() throws {
        var w = try ReplayWindow.allocate(configuration: ReplayWindowConfiguration(size: 32, esn: false))
        defer { w.deallocate() }
        guard case .accept(let n) = w.check(7) else { Issue.record("7 refused"); return }
        _ = w.update(acceptedSequence: n)
        #expect(w.check(7) == .replayed)
    }
}
