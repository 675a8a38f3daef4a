// The worker's form of ESP: a burst of packets of many SAs framed and staged
// (`ESPOutbound.stage`, `ESPInbound.stage`), sealed or opened with one call
// (`AEADBurst.sealEach`, `openEach`), then finished (`ESPOutbound.finish`,
// `ESPInbound.complete`). It must give exactly what `encapsulate` and
// `decapsulate` give packet by packet, and keep the replay rules when one
// burst holds the same sequence number twice.

import Crypto
@testable import IPsec
import Packet
import Testing

@Suite struct ESPStagedTests {
    /// One SA of the matrix with its packets: the two directions and a window.
    final class Lane {
        let label: String
        let key: TestKey
        let outbound: OutboundSA
        let inbound: InboundSA
        let window: TestWindow
        let first: UInt64
        let inners: [[UInt8]]

        init(_ aead: AEADAlgorithm, _ cell: ESPCell, esn: Bool, udp: Bool, index: Int) throws {
            label = "\(aead) \(cell) esn \(esn) udp \(udp)"
            key = try TestKey(aead, seed: UInt64(index) &* 7919 &+ 3)
            let spi = SPI(0x5000 &+ UInt32(index))
            outbound = cell.outboundSA(spi: spi, key: key.handle, esn: esn, udp: udp)
            inbound = try cell.inboundSA(spi: spi, key: key.handle, esn: esn, udp: udp)
            // With ESN, the lane's three packets cross 2^32.
            first = esn ? (1 << 32) - 2 : 1
            window = try TestWindow(esn: esn, highest: first - 1)
            inners = [0, 37, 1400].enumerated().map { i, size in
                Inner.udp(ipv6: cell.innerIPv6, payload: size, seed: UInt64(index * 3 + i))
            }
        }
    }

    static func lanes(esn: Bool, udp: Bool) throws -> [Lane] {
        var lanes: [Lane] = []
        for aead in AEADAlgorithm.allCases {
            for cell in ESPCell.allCases {
                lanes.append(try Lane(aead, cell, esn: esn, udp: udp, index: lanes.count))
            }
        }
        return lanes
    }

    /// Every AEAD × mode and family mix, three packets each, 54 packets of 18
    /// SAs in one burst (interleaved as a worker's burst would be): each ESP
    /// packet is the one `encapsulate` makes of it alone, and staged opening
    /// gives back every inner packet and moves each window as
    /// `decapsulate` would.
    @Test(arguments: [false, true], [false, true])
    func stagedBurstMatchesOneByOne(esn: Bool, udp: Bool) throws {
        let core = try makeCore()
        let burst = try AEADBurst()
        let lanes = try Self.lanes(esn: esn, udp: udp)
        // Round-robin over the lanes: packet k of every lane, then k + 1.
        let order = (0..<3).flatMap { k in lanes.indices.map { ($0, k) } }

        var staged: [(PacketBuffer, PacketView, ESPFrame)] = []
        for (l, k) in order {
            let lane = lanes[l]
            let buffer = PacketBuffer(lane.inners[k])
            var view = buffer.view
            let result = withUnsafePointer(to: lane.outbound) {
                ESPOutbound.stage(&view, saAt: $0, sequence: SequenceNumber(lane.first + UInt64(k)), burst: burst)
            }
            guard case .framed(let frame) = result else {
                Issue.record("\(lane.label) packet \(k): \(result)")
                return
            }
            staged.append((buffer, view, frame))
        }
        let sealed = burst.sealEach(core, prefetch: true)
        #expect(sealed == order.count)
        burst.removeAll()
        for (i, (l, k)) in order.enumerated() {
            let lane = lanes[l]
            let (buffer, view, frame) = staged[i]
            ESPOutbound.finish(view, frame)
            buffer.view = view
            let alone = PacketBuffer(lane.inners[k])
            #expect(ESPOutbound.encapsulate(&alone.view, sa: lane.outbound,
                                            sequence: SequenceNumber(lane.first + UInt64(k)), core: core) == nil)
            #expect(buffer.bytes == alone.bytes, "\(lane.label) packet \(k): staged and alone differ")
            #expect(buffer.guardsIntact, "\(lane.label) packet \(k)")
        }

        // Inbound: the same burst, staged against each SA's window, opened at once.
        var openings: [ESPOpening] = []
        for (i, (l, k)) in order.enumerated() {
            let lane = lanes[l]
            let buffer = staged[i].0
            guard case .esp(let header) = ESPInbound.classify(buffer.view), lane.inbound.matches(header) else {
                Issue.record("\(lane.label) packet \(k): not this SA's ESP")
                return
            }
            let admitted = withUnsafePointer(to: lane.inbound) {
                ESPInbound.stage(buffer.view, header: header, saAt: $0, window: lane.window.window, burst: burst)
            }
            guard case .admitted(let opening) = admitted else {
                Issue.record("\(lane.label) packet \(k): \(admitted)")
                return
            }
            #expect(opening.sequence.rawValue == lane.first + UInt64(k), "\(lane.label): inferred sequence number")
            openings.append(opening)
        }
        let opened = burst.openEach(core, prefetch: false)
        #expect(opened == order.count)
        for (i, (l, k)) in order.enumerated() {
            let lane = lanes[l]
            let buffer = staged[i].0
            let authentic = burst.isAuthentic(at: i)
            let drop = withUnsafePointer(to: lane.inbound) {
                ESPInbound.complete(&buffer.view, saAt: $0, window: &lane.window.window, opening: openings[i],
                                    authentic: authentic)
            }
            #expect(drop == nil, "\(lane.label) packet \(k): \(String(describing: drop))")
            #expect(buffer.bytes == lane.inners[k], "\(lane.label) packet \(k): inner packet")
        }
        burst.removeAll()
        for lane in lanes {
            #expect(lane.window.window.highestReceived.rawValue == lane.first + 2, "\(lane.label): window")
        }
    }

    /// One burst holding a packet twice: the window admits both (neither is
    /// recorded yet), both are opened, and the second is refused as replayed
    /// once the first is recorded. A forged copy under a fresh number fails
    /// authentication and leaves the window alone; a number the window has
    /// passed is refused before the AEAD (nothing staged).
    @Test func duplicateInOneBurstIsRefusedOnce() throws {
        let core = try makeCore()
        let burst = try AEADBurst()
        let lane = try Lane(.aes256GCM, .tunnel4in4, esn: false, udp: false, index: 0)
        func sealed(_ sequence: UInt64, _ k: Int) -> PacketBuffer {
            let buffer = PacketBuffer(lane.inners[k])
            _ = ESPOutbound.encapsulate(&buffer.view, sa: lane.outbound, sequence: SequenceNumber(sequence), core: core)
            return buffer
        }
        let original = sealed(5, 1), copy = sealed(5, 1), forged = sealed(6, 2)
        let last = forged.view.start + forged.view.length - 1
        last.storeBytes(of: last.load(as: UInt8.self) ^ 1, as: UInt8.self)  // the ICV's last byte

        var openings: [ESPOpening] = []
        for buffer in [original, copy, forged] {
            guard case .esp(let header) = ESPInbound.classify(buffer.view) else { Issue.record("not ESP"); return }
            let admitted = withUnsafePointer(to: lane.inbound) {
                ESPInbound.stage(buffer.view, header: header, saAt: $0, window: lane.window.window, burst: burst)
            }
            guard case .admitted(let opening) = admitted else { Issue.record("\(admitted)"); return }
            openings.append(opening)
        }
        let opened = burst.openEach(core, prefetch: true)
        #expect(opened == 2)
        var drops: [ESPDrop?] = []
        for (i, buffer) in [original, copy, forged].enumerated() {
            let authentic = burst.isAuthentic(at: i)
            drops.append(withUnsafePointer(to: lane.inbound) {
                ESPInbound.complete(&buffer.view, saAt: $0, window: &lane.window.window, opening: openings[i],
                                    authentic: authentic)
            })
        }
        burst.removeAll()
        #expect(drops == [nil, .replayed, .authenticationFailed])
        #expect(original.bytes == lane.inners[1])
        #expect(lane.window.window.highestReceived.rawValue == 5, "the forgery moved nothing")

        // Behind the window now: refused at staging, the burst left empty.
        let again = sealed(5, 1)
        guard case .esp(let header) = ESPInbound.classify(again.view) else { Issue.record("not ESP"); return }
        let admitted = withUnsafePointer(to: lane.inbound) {
            ESPInbound.stage(again.view, header: header, saAt: $0, window: lane.window.window, burst: burst)
        }
        guard case .dropped(.replayed) = admitted else { Issue.record("\(admitted)"); return }
        let emptyAfter = burst.isEmpty
        #expect(emptyAfter)
    }
}
