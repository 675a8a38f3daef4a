// The gateway refuses impossible set-ups with messages that say what is
// wrong, before it allocates anything.

import CShims
import Dataplane
import Packet
import Synchronization
import Testing

extension EALSuites {
    @Suite struct StartupRefusalTests {
        init() throws { try TestEAL.ensure() }

        /// Ring names are global in DPDK; each port created here gets its own.
        static let serial = Atomic<Int>(0)

        func message(_ body: () throws -> Gateway) -> String? {
            do {
                let g = try body()
                g.stop()
                return nil
            } catch let e as DataplaneError {
                return e.message
            } catch {
                return "unexpected error type: \(error)"
            }
        }

        @Test func unknownPort() throws {
            let m = try #require(message { try Gateway(portIDs: [99]) }, "Gateway(portIDs: [99]) started")
            #expect(m.contains("port 99 does not exist"), "\(m)")
        }

        @Test func moreWorkersThanQueues() throws {
            #expect(EAL.workerLcores == [1, 2], "the test EAL has two worker lcores")
            let ring = try RingPort.create(name: "dpt_oneq\(Self.serial.add(1, ordering: .relaxed).newValue)", queues: 1, size: 64, socket: 0)
            let m = try #require(message { try Gateway(portIDs: [ring.port], workerLcores: [1, 2]) },
                                 "a 1-queue port was configured for two workers")
            #expect(m.contains("allows at most"), "\(m)")
            #expect(m.contains("port \(ring.port)"), "\(m)")

            // The same check on the port's description, as the gateway makes it.
            let info = try #require(try PortInfo.available().first { $0.id == ring.port })
            #expect(info.maxRxQueues == 1 && info.maxTxQueues == 1)
            #expect(throws: Never.self) { try PortControl.checkQueues(info, workers: 1) }
            do {
                try PortControl.checkQueues(info, workers: 2)
                Issue.record("checkQueues accepted two workers on a 1-queue port")
            } catch {
                #expect(error.message.contains("allows at most 1 RX and 1 TX queues, but 2 workers"), "\(error.message)")
            }
        }

        @Test func noWorkersOrNoPorts() throws {
            let noWorkers = try #require(message { try Gateway(portIDs: [0], workerLcores: []) })
            #expect(noWorkers.contains("no worker lcores"), "\(noWorkers)")
            let noPorts = try #require(message { try Gateway(portIDs: []) })
            #expect(noPorts.contains("no ports"), "\(noPorts)")
        }
    }
}
