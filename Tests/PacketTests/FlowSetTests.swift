import Packet
import Testing

@Suite struct FlowSetTests {
    static let template = PacketBuilder.udp(IPv4Address(10, 1, 0, 0), 1000, IPv4Address(10, 2, 0, 1), 4500)
    static let reta = RedirectionTable(size: 128, queueCount: 4)!

    @Test func distinctDeterministicAndHashedLikeTheFrames() throws {
        let set = try FlowSet(template: Self.template, count: 500, seed: 11, reta: Self.reta)
        #expect(set.flows.count == 500)
        #expect(Set(set.flows.map { "\($0.source):\($0.sourcePort)" }).count == 500)
        let again = try FlowSet(template: Self.template, count: 500, seed: 11, reta: Self.reta)
        #expect(again.flows == set.flows)
        let other = try FlowSet(template: Self.template, count: 500, seed: 12, reta: Self.reta)
        #expect(other.flows != set.flows)

        let frames = try set.frames(frameSize: 64)
        #expect(frames.count == 500)
        for (flow, frame) in zip(set.flows, frames) {
            #expect(frame.count == 64)
            let p = try #require(parseFrame(frame))
            #expect(p.l4ChecksumResult == 0 && p.ipv4HeaderChecksumResult == 0)
            // Hash the frame's own fields the way a NIC would.
            let h = ToeplitzKey.microsoft.hash(p.source + p.destination + Array(p.transportBytes[0..<4]))
            #expect(h == flow.hash)
            #expect(Self.reta.queue(forHash: h) == flow.queue)
            #expect(p.destination == [10, 2, 0, 1] && p.destinationPort == 4500)
            #expect(p.source[0] == 10 && p.source[1] == 1)  // only the low 16 bits vary
            #expect(p.sourcePort >= 1024)
        }
        #expect(set.countsByQueue.values.reduce(0, +) == 500)
        #expect(set.countsByQueue.keys.allSatisfy { $0 < 4 })
    }

    @Test func balancedAcrossQueues() throws {
        let reta = try #require(RedirectionTable(size: 512, queueCount: 6))
        let v6 = PacketBuilder(network: .ipv6(IPv6Spec(source: IPv6Address("2001:db8::")!, destination: IPv6Address("2001:db8:1::1")!)),
                               transport: .tcp(TCPSpec(sourcePort: 1, destinationPort: 80)))
        for template in [Self.template, v6] {
            let set = try FlowSet(template: template, flowsPerQueue: 10, seed: 3, reta: reta)
            #expect(set.flows.count == 60)
            for q in UInt16(0)..<6 {
                let flows = set.flows(onQueue: q)
                #expect(flows.count == 10)
                #expect(flows.allSatisfy { reta.queue(forHash: $0.hash) == q })
            }
        }
    }

    @Test func addressOnlyHashing() throws {
        let raw = PacketBuilder(network: .ipv4(IPv4Spec(source: IPv4Address(172, 16, 0, 0), destination: IPv4Address(172, 17, 0, 1))),
                                transport: .raw(.esp))
        let set = try FlowSet(template: raw, count: 256, seed: 1, sourceAddressBits: 8, reta: Self.reta, input: .addresses)
        #expect(Set(set.flows.map(\.source)).count == 256)
        for f in set.flows {
            guard case .v4(let s) = f.source, case .v4(let d) = f.destination else { Issue.record("family"); continue }
            #expect(f.sourcePort == 0)
            #expect(f.hash == ToeplitzKey.microsoft.hash(source: s, destination: d))
        }
        #expect(throws: FlowSetError.notEnoughDistinctFlows(requested: 257, available: 256)) {
            try FlowSet(template: raw, count: 257, sourceAddressBits: 8, reta: Self.reta)
        }
        // UDP template hashed on addresses only: ports vary but do not count.
        let udp = try FlowSet(template: Self.template, count: 50, reta: Self.reta, input: .addresses)
        for f in udp.flows {
            #expect(f.hash == FlowSet.hash(key: .microsoft, source: f.source, destination: f.destination, ports: nil))
        }
    }

    @Test func errors() throws {
        #expect(throws: FlowSetError.negativeCount(-1)) { try FlowSet(template: Self.template, count: -1, reta: Self.reta) }
        #expect(throws: FlowSetError.sourceAddressBitsOutOfRange(33, maximum: 32)) {
            try FlowSet(template: Self.template, count: 1, sourceAddressBits: 33, reta: Self.reta)
        }
        // A queue the hash can never reach through a 1-address, 1-port space.
        let raw = PacketBuilder(network: .ipv4(IPv4Spec(source: IPv4Address(1, 2, 3, 4), destination: IPv4Address(5, 6, 7, 8))),
                                transport: .raw(.icmp))
        #expect(throws: FlowSetError.self) {
            try FlowSet(template: raw, flowsPerQueue: 1, sourceAddressBits: 0, reta: Self.reta)
        }
        #expect(try FlowSet(template: Self.template, count: 0, reta: Self.reta).flows.isEmpty)
        #expect(throws: FlowSetError.self) { try FlowSet(template: Self.template, flowsPerQueue: Int.max, reta: Self.reta) }

        // Two possible flows, two queues: either each lands on its own queue,
        // or the generator gives up with a clear error instead of spinning.
        let two = try #require(RedirectionTable(entries: [0, 1]))
        let key = ToeplitzKey.microsoft
        let q0 = two.queue(forHash: key.hash(source: IPv4Address(1, 2, 3, 4), destination: IPv4Address(5, 6, 7, 8)))
        let q1 = two.queue(forHash: key.hash(source: IPv4Address(1, 2, 3, 5), destination: IPv4Address(5, 6, 7, 8)))
        if q0 != q1 {
            #expect(try FlowSet(template: raw, flowsPerQueue: 1, sourceAddressBits: 1, reta: two).flows.count == 2)
        } else {
            #expect(throws: FlowSetError.self) { try FlowSet(template: raw, flowsPerQueue: 1, sourceAddressBits: 1, reta: two) }
        }
    }
}
