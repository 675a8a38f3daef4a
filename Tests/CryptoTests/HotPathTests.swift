// The per-packet and burst calls allocate nothing and make no retain/release.
// Counted by the repository's LD_PRELOAD alloc-counter (Perf/alloc-counter):
// the parent test builds it and re-runs this test binary under it, selecting
// only `childCountsUnderPreload`, which measures every engine × AEAD × path
// through CryptoBench with a positive control.

@testable import Crypto
import Foundation
import TestSupport
import Testing

@Suite struct HotPathTests {
    static let childMarker = "SLUICE_CRYPTO_ALLOC_CHILD"

    /// Nothing the data path copies holds a reference.
    @Test func dataPathValuesAreTrivial() {
        #expect(_isPOD(AEADKeyHandle.self))
        #expect(_isPOD(AEADAlgorithm.self))
        #expect(MemoryLayout<AEADKeyHandle>.size == 8)
    }

    @Test func noAllocationOrRetainPerPacket() throws {
        let child = try runUnderAllocationCounter(filter: "childCountsUnderPreload", marker: Self.childMarker)
        #expect(child.status == 0, "\(child.output)")
        #expect(child.output.contains("alloc-child: measured 10 paths"), "\(child.output)")
    }

    /// Runs only in the child started above (a no-op in a normal run).
    @Test func childCountsUnderPreload() throws {
        guard ProcessInfo.processInfo.environment[Self.childMarker] == "1" else { return }
        let before = try #require(AllocationCounts.read(), "the preload is not active")
        let probe = [Int](repeating: 7, count: Int(before.mallocs % 5) + 100)
        let after = try #require(AllocationCounts.read())
        #expect(after.mallocs > before.mallocs && after.swiftAllocs > before.swiftAllocs && probe.count >= 100,
                "the counter sees an allocation made on purpose")
        var measured = 0
        for (aead, engine) in BurstTests.combinations {
            for path in [CryptoBench.Path.perPacket, .burst] {
                let m = try #require(try CryptoBench.measure(engine: engine, aead: aead, payloadSize: 256, burst: 32,
                                                             packets: 20_000, path: path, operation: .sealOpen))
                let counts = try #require(m.allocations)
                // A release without a retain cannot be per packet; allow the odd
                // one from runtime threads, as the end-to-end allocation test does.
                #expect(counts.mallocs == 0 && counts.swiftAllocs == 0 && counts.retains == 0 && counts.releases <= 2,
                        "\(m)")
                measured += 1
            }
        }
        print("alloc-child: measured \(measured) paths")
    }
}
