// A worker's events to the control thread: ACQUIRE is limited per policy
// and per core, so that a flood of packets without an SA cannot fill the
// event ring an EXPIRE needs, and events that find the ring full are counted
// (`events_lost`) rather than disappearing.

import CShims
@testable import Dataplane
import IPsec
import Packet
import Synchronization
import Testing

extension EALSuites {
    @Suite struct WorkerEventTests {
        static let serial = Atomic<Int>(0)

        @Test func acquiresAreLimitedPerCoreAndLostEventsAreCounted() throws {
            try TestEAL.ensure()
            let counters = UnsafeMutablePointer<sl_counters>.allocate(capacity: 1)
            counters.initialize(to: sl_counters())
            defer { counters.deallocate() }
            let context = try WorkerIPsec(index: 0, lcore: 7, socket: 0,
                                          name: "t_ev\(Self.serial.add(1, ordering: .relaxed).newValue)", counters: counters)
            func drain() -> [sl_event] {
                var out: [sl_event] = [], e = sl_event()
                while sl_event_pop(context.events, &e) == 0 { out.append(e) }
                return out
            }
            let fields = SelectorFields(source: RawIPAddress(IPAddress("10.1.0.1")!),
                                        destination: RawIPAddress(IPAddress("198.51.100.9")!), proto: 17)
            // 640 policies sharing one rate-limit slot (ids 64 apart), each twice:
            // every call found the slot holding another policy.
            let start = sl_tsc()
            for _ in 0..<2 { for i in 0..<640 { context.acquire(policyID: UInt32(1 + 64 * i), fields) } }
            let seconds = Double(sl_tsc() - start) / Double(sl_tsc_hz())
            let acquires = drain()
            let allowed = WorkerIPsec.acquiresPerSecond * (seconds < 1 ? 1 : 2)
            #expect(acquires.count >= WorkerIPsec.acquiresPerSecond && acquires.count <= allowed,
                    "\(acquires.count) ACQUIREs in \(seconds) s")
            #expect(Set(acquires.map(\.policy_id)).count == acquires.count, "each a different policy")
            #expect(acquires.allSatisfy { $0.kind == UInt8(SL_EVENT_ACQUIRE) && $0.lcore == 7 })
            // A policy that just raised one is quiet for a second, as before.
            context.acquire(policyID: acquires[0].policy_id, fields)
            #expect(drain().isEmpty)

            // EXPIREs beyond what the ring holds: each one queued or counted lost.
            #expect(counters.pointee.events_lost == 0)
            for i in 0..<1500 {
                context.expire(hard: true, outbound: true, spi: UInt32(0x1000 + i), token: UInt32(i + 1), reason: Int32(SL_EXPIRE_SEQUENCE))
            }
            let queued = drain()
            #expect(queued.count < 1500 && counters.pointee.events_lost == UInt64(1500 - queued.count),
                    "\(queued.count) queued, \(counters.pointee.events_lost) lost")
            #expect(queued.map(\.sa_token) == (1...UInt32(queued.count)).map { $0 }, "the first ones, in order")
        }
    }
}
