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
            // 640 policies, each twice: at most the budget, each policy once.
            let start = sl_tsc()
            for _ in 0..<2 { for i in 0..<640 { context.acquire(policyID: UInt32(1 + 64 * i), fields) } }
            let seconds = Double(sl_tsc() - start) / Double(sl_tsc_hz())
            let acquires = drain()
            let allowed = WorkerIPsec.acquiresPerSecond * (seconds < 1 ? 1 : 2)
            #expect(acquires.count >= WorkerIPsec.acquiresPerSecond && acquires.count <= allowed,
                    "\(acquires.count) ACQUIREs in \(seconds) s")
            #expect(Set(acquires.map(\.policy_id)).count == acquires.count, "each a different policy")
            #expect(acquires.allSatisfy { $0.kind == UInt8(SL_EVENT_ACQUIRE) && $0.lcore == 7 })
            // A policy that just raised one is quiet for a second.
            context.acquire(policyID: acquires[0].policy_id, fields)
            #expect(drain().isEmpty)

            // Policies whose runs start at one slot cannot push each other out
            // to pass the limit again: a fresh core, six such policies taking
            // turns 100 times, one ACQUIRE each for the first four (the run's
            // slots), none for the rest this second. Before, policies sharing a
            // slot each raised one at every turn.
            let counters2 = UnsafeMutablePointer<sl_counters>.allocate(capacity: 1)
            counters2.initialize(to: sl_counters())
            defer { counters2.deallocate() }
            let fresh = try WorkerIPsec(index: 0, lcore: 8, socket: 0,
                                        name: "t_ev\(Self.serial.add(1, ordering: .relaxed).newValue)", counters: counters2)
            let home = WorkerIPsec.acquireHome(1)
            let crowd = (1...UInt32(1_000_000)).lazy.filter { WorkerIPsec.acquireHome($0) == home }.prefix(6)
            #expect(crowd.count == 6)
            for _ in 0..<100 { for id in crowd { fresh.acquire(policyID: id, fields) } }
            var e = sl_event(), raised: [UInt32] = []
            while sl_event_pop(fresh.events, &e) == 0 { raised.append(e.policy_id) }
            #expect(raised == Array(crowd.prefix(WorkerIPsec.acquireProbe)), "\(raised)")

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
