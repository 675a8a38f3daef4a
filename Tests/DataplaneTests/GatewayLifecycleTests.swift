// A gateway's life: started once, stopped with nothing of an SA change left
// on a worker's command ring (a stalled worker's batches are applied by the
// control thread in order, so a replay-window handover does not stay pending
// and no batch is freed while still queued).

import CShims
import Command
@testable import Control
@testable import Dataplane
import Glibc
import Synchronization
import Testing

extension EALSuites {
    @Suite struct GatewayLifecycleTests {
        static let serial = Atomic<Int>(0)

        /// A ring port of its own for one test (EAL up).
        static func ring() throws -> RingPort {
            try TestEAL.ensure()
            return try RingPort.create(name: "dpt_life\(serial.add(1, ordering: .relaxed).newValue)", queues: 1,
                                       size: 256, socket: 0)
        }

        /// A gateway on `ring` with one worker (lcore 2), its log silent.
        static func gateway(on ring: RingPort) throws -> Gateway {
            let gateway = try Gateway(portIDs: [ring.port], workerLcores: [2])
            gateway.log = { _ in }
            return gateway
        }

        @Test func aStoppedWorkersPendingChangesAreAppliedInOrder() throws {
            let ring = try Self.ring()
            let gateway = try Self.gateway(on: ring)
            try gateway.start()
            #expect(throws: DataplaneError.self, "a gateway starts once") { try gateway.start() }

            let compiler = IPsecCompiler()
            func publish(window: Int) throws -> SARecordBox {
                let config = try GatewayConfig.load(text: """
                    port 0 role protected address 10.0.0.1/24
                    sa add spi 0x2001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(IPsecCompilerTests.key) replay-window \(window)
                    sp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001
                    """, name: "life.conf")
                let tables = try #require(try compiler.compile(config, workerLcores: [2]))
                let record = try #require(tables.sad.added.first { $0.inbound != nil })
                try gateway.publish(ipsec: tables)
                compiler.commit()
                return record
            }
            let first = try publish(window: 64)
            #expect(gateway.sadCommitWarning == nil, "the refused second start left the worker running")
            #expect(first.inboundReady)

            // The worker stalls: a rebuilt window (same key) waits for its
            // handover, which the worker would do between two bursts.
            gateway.sadCommitTimeout = 0.01
            gateway.holdSADCommands(lcore: 2, true)
            let rebuilt = try publish(window: 128)
            #expect(gateway.sadCommitWarning != nil, "the held worker did not acknowledge")
            #expect(!rebuilt.inboundReady)

            // Stopped: what it had not taken is applied, the handover with it.
            gateway.stopWorkers()
            #expect(rebuilt.inboundReady, "the handover the stalled worker left was done at stop")
            // A change made while stopped is applied by the control thread, in order.
            let again = try publish(window: 256)
            #expect(gateway.sadCommitWarning == nil && again.inboundReady)
            gateway.holdSADCommands(lcore: 2, false)
            gateway.stop()
            #expect(throws: DataplaneError.self, "nor after a stop") { try gateway.start() }
        }

        /// A change whose replica part is all in the second batch (a policy
        /// deleted, its SA kept: the target is released after the publish)
        /// needs room for that batch before anything is published. A stalled
        /// worker's command ring with one slot left refuses the change whole
        /// (nothing published, the compiler not committed); once the worker
        /// runs again the same change goes through. Before, an empty first
        /// batch skipped the room check, the snapshot was published and the
        /// second batch could fail after it.
        @Test func aChangesSecondBatchHasRoomBeforeAnythingIsPublished() throws {
            let ring = try Self.ring()
            let gateway = try Self.gateway(on: ring)
            try gateway.start()
            defer { gateway.holdSADCommands(lcore: 2, false); gateway.stop() }
            let compiler = IPsecCompiler()
            func compile(policy: Bool) throws -> IPsecTables {
                let config = try GatewayConfig.load(text: """
                    port 0 role protected address 10.0.0.1/24
                    sa add spi 0x1001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(IPsecCompilerTests.key)
                    """ + (policy ? "\nsp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect spi 0x1001\n" : "\n"),
                    name: "room.conf")
                return try #require(try compiler.compile(config, workerLcores: [2]))
            }
            try gateway.publish(ipsec: try compile(policy: true))
            compiler.commit()

            // The worker stalls, its ring filled to one free slot (255 hold).
            gateway.sadCommitTimeout = 0.005
            gateway.holdSADCommands(lcore: 2, true)
            var filler = SADChange()
            filler.targets = [[.setTarget(Int32(WorkerIPsec.targetCapacity - 1), nil)]]
            for _ in 0..<254 { try gateway.commitSAD(filler) }
            let deleted = try compile(policy: false)
            #expect(deleted.sad.isEmpty && !deleted.sad.released.isEmpty, "only the second batch has commands")
            let before = gateway.currentGeneration
            #expect(throws: DataplaneError.self, "no room for the second batch") { try gateway.publish(ipsec: deleted) }
            #expect(gateway.currentGeneration == before, "nothing published")

            gateway.sadCommitTimeout = 2
            gateway.holdSADCommands(lcore: 2, false)
            try gateway.publish(ipsec: try compile(policy: false))
            compiler.commit()
            #expect(gateway.sadCommitWarning == nil)
        }

        /// Set while `aStuckWorkerIsReportedNotAwaitedForever` holds its
        /// worker in an RX callback; `stuckPolls` counts the worker's calls.
        static let stuck = Atomic<Bool>(false)
        static let stuckPolls = Atomic<Int>(0)

        /// A worker stuck in its port's receive (a driver that never returns)
        /// does not hang the stop: after the timeout it is named by lcore and
        /// left running, and once it returns a second stop completes.
        @Test func aStuckWorkerIsReportedNotAwaitedForever() throws {
            let ring = try Self.ring()
            let gateway = try Self.gateway(on: ring)
            Self.stuck.store(true, ordering: .releasing)
            let added = rte_eth_add_rx_callback(ring.port, 0, { _, _, _, count, _, _ in
                GatewayLifecycleTests.stuckPolls.add(1, ordering: .relaxed)
                while GatewayLifecycleTests.stuck.load(ordering: .acquiring) { usleep(100) }
                return count
            }, nil)
            let callback = try #require(added)
            defer { _ = rte_eth_remove_rx_callback(ring.port, 0, callback) }
            try gateway.start()
            let polled = monotonicSeconds() + 5
            while Self.stuckPolls.load(ordering: .relaxed) == 0 && monotonicSeconds() < polled { usleep(1000) }
            #expect(Self.stuckPolls.load(ordering: .relaxed) > 0, "the worker polls its port")

            let asked = monotonicSeconds()
            #expect(gateway.stopWorkers(timeout: 0.2) == [2], "the stuck worker is named")
            #expect(monotonicSeconds() - asked >= 0.2)
            #expect(rte_eal_get_lcore_state(2) == RUNNING, "and left running")
            #expect(gateway.stopWorkers(timeout: 0.05) == [2], "asked again, it is still stuck")

            Self.stuck.store(false, ordering: .releasing)
            #expect(gateway.stopWorkers(timeout: 5) == [], "returned, it is waited for")
            #expect(rte_eal_get_lcore_state(2) == WAIT)
            gateway.stop()
        }

        /// DPDK mempools in the process.
        static func mempoolCount() -> Int {
            var count = 0
            rte_mempool_walk({ _, arg in arg!.assumingMemoryBound(to: Int.self).pointee += 1 }, &count)
            return count
        }

        /// A gateway whose set-up fails after it made its mempool and
        /// configured a port gives them back, and leaves alone the running
        /// gateway whose port it could not take.
        @Test func aFailedSetUpGivesBackWhatItTook() throws {
            let busy = try Self.ring(), fresh = try Self.ring()
            let running = try Self.gateway(on: busy)
            try running.start()
            defer { running.stop() }

            let pools = Self.mempoolCount()
            #expect(throws: DataplaneError.self, "the busy port cannot be configured") {
                try Gateway(portIDs: [fresh.port, busy.port], workerLcores: [2])
            }
            #expect(Self.mempoolCount() == pools, "the failed gateway's mempool is freed")
            // The running gateway still forwards SA changes (its worker answers).
            let compiler = IPsecCompiler()
            let tables = try #require(try compiler.compile(GatewayConfig.load(text: """
                port 0 role protected address 10.0.0.1/24
                sa add spi 0x2001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(IPsecCompilerTests.key)
                sp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001
                """, name: "life.conf"), workerLcores: [2]))
            try running.publish(ipsec: tables)
            #expect(running.sadCommitWarning == nil)
        }
    }
}
