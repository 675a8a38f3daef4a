// encapsulate, classify and decapsulate allocate nothing and make no
// retain/release per packet. Counted with the repository's LD_PRELOAD
// alloc-counter (Perf/alloc-counter), as the Crypto hot-path test does: the
// parent builds it and re-runs this test binary under it, selecting only
// `espChildCountsUnderPreload`, which measures every AEAD × mode × ESN × UDP
// combination after a warm-up, with a positive control. The measured loop
// touches only raw memory and trivial values (no classes, no arrays).

import Crypto
import Foundation
import TestSupport
@testable import IPsec
import Packet
import Testing

@Suite struct ESPAllocationTests {
    static let childMarker = "SLUICE_ESP_ALLOC_CHILD"

    @Test func noAllocationOrRetainPerPacket() throws {
        let child = try runUnderAllocationCounter(filter: "espChildCountsUnderPreload", marker: Self.childMarker)
        #expect(child.status == 0, "\(child.output)")
        #expect(child.output.contains("esp-alloc-child: measured 72 paths"), "\(child.output)")
    }

    /// Runs only in the child started above (a no-op in a normal run).
    @Test func espChildCountsUnderPreload() throws {
        guard ProcessInfo.processInfo.environment[Self.childMarker] == "1" else { return }
        let before = try #require(AllocationCounts.read(), "the preload is not active")
        let probe = [Int](repeating: 7, count: Int(before.mallocs % 5) + 100)
        let after = try #require(AllocationCounts.read())
        #expect(after.mallocs > before.mallocs && after.swiftAllocs > before.swiftAllocs && probe.count >= 100,
                "the counter sees an allocation made on purpose")

        let core = try CryptoCore()
        let room = 256
        let capacity = room + 2048 + room
        let memory = UnsafeMutableRawPointer.allocate(byteCount: capacity, alignment: 64)
        defer { memory.deallocate() }
        var measured = 0
        for aead in AEADAlgorithm.allCases {
            let key = try TestKey(aead, seed: 1234)
            for cell in ESPCell.allCases {
                for esn in [false, true] {
                    for udp in [false, true] {
                        let inner = Inner.udp(ipv6: cell.innerIPv6, payload: 200)
                        let source = UnsafeMutableRawPointer.allocate(byteCount: inner.count, alignment: 8)
                        defer { source.deallocate() }
                        inner.withUnsafeBytes { source.copyMemory(from: $0.baseAddress!, byteCount: inner.count) }
                        let innerLength = inner.count
                        let out = cell.outboundSA(spi: SPI(0x7777), key: key.handle, esn: esn, udp: udp)
                        let sa = try cell.inboundSA(spi: SPI(0x7777), key: key.handle, esn: esn, udp: udp)
                        var sequence = try OutboundSequence(esn: esn, next: SequenceNumber(esn ? (1 << 32) - 100 : 1))
                        var window = try ReplayWindow.allocate(
                            configuration: ReplayWindowConfiguration(size: 64, esn: esn),
                            highestReceived: SequenceNumber(esn ? (1 << 32) - 101 : 0))
                        defer { window.deallocate() }

                        // Up to three windows of 1000 packets: a path that allocated per
                        // packet would show it in every window; a stray allocation by
                        // the test runner's own threads does not repeat.
                        var failures = 0
                        var clean = false
                        var countsBefore = AllocationCounts.read()!
                        var countsAfter = countsBefore
                        for _ in 0..<3 where !clean {
                            for iteration in 0..<1200 {
                                if iteration == 200 { countsBefore = AllocationCounts.read()! }  // after warm-up
                                let start = memory + room
                                start.copyMemory(from: source, byteCount: innerLength)
                                var view = PacketView(start: start, length: innerLength, headroom: room,
                                                      tailroom: capacity - room - innerLength)
                                if ESPOutbound.encapsulate(&view, sa: out, sequence: &sequence, core: core) != nil {
                                    failures += 1
                                    continue
                                }
                                switch ESPInbound.classify(view) {
                                case .esp(let header):
                                    if !sa.matches(header) { failures += 1; continue }
                                    if ESPInbound.decapsulate(&view, header: header, sa: sa, window: &window,
                                                              core: core) != nil {
                                        failures += 1
                                    }
                                    if view.length != innerLength || view.start != start { failures += 1 }
                                case .notESP, .drop:
                                    failures += 1
                                }
                            }
                            countsAfter = AllocationCounts.read()!
                            clean = countsAfter.mallocs == countsBefore.mallocs
                                && countsAfter.swiftAllocs == countsBefore.swiftAllocs
                                && countsAfter.retains == countsBefore.retains
                                && countsAfter.releases &- countsBefore.releases <= 2
                        }
                        let label = "\(aead) \(cell) esn \(esn) udp \(udp)"
                        #expect(failures == 0, "\(label): \(failures) packets failed")
                        #expect(clean, "\(label): before \(countsBefore), after \(countsAfter)")
                        measured += 1
                    }
                }
            }
        }
        print("esp-alloc-child: measured \(measured) paths")
    }
}
