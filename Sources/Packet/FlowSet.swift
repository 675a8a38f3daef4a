// Sets of distinct flows for traffic generation, each with the Toeplitz hash
// and RX queue a NIC with a given key and redirection table would give it.
// Virtual ports have no RSS, so the generator itself spreads flows over the
// gateway's queues the way a NIC would.
//
// A flow differs from the template in its source address (the low
// `sourceAddressBits` bits are drawn from a seeded generator) and, when the
// template has ports, its source port (1024...65535). The destination stays.

/// Which fields the NIC hashes.
public enum RSSInput: Hashable, Sendable {
    /// Source and destination address (hash types IPV4 / IPV6).
    case addresses
    /// Addresses and ports (TCP / UDP hash types); a template without ports
    /// hashes its addresses only.
    case addressesAndPorts
}

/// One flow of a `FlowSet`.
public struct Flow: Hashable, Sendable {
    public var source: IPAddress
    public var destination: IPAddress
    /// Zero when the template has no ports.
    public var sourcePort: UInt16
    public var destinationPort: UInt16
    public var hash: UInt32
    public var queue: UInt16
}

public enum FlowSetError: Error, Hashable, Sendable, CustomStringConvertible {
    case negativeCount(Int)
    case sourceAddressBitsOutOfRange(Int, maximum: Int)
    /// The template, address bits and ports allow fewer distinct flows than asked.
    case notEnoughDistinctFlows(requested: Int, available: Int)
    /// Gave up looking for flows that land on `queue` after `attempts` draws.
    case queueUnreachable(queue: UInt16, found: Int, wanted: Int, attempts: Int)

    public var description: String {
        switch self {
        case .negativeCount(let n): "flow count \(n) is negative"
        case .sourceAddressBitsOutOfRange(let b, let max): "source address bits \(b) out of range 0...\(max)"
        case .notEnoughDistinctFlows(let requested, let available):
            "\(requested) flows requested but only \(available) distinct ones exist"
        case .queueUnreachable(let q, let found, let wanted, let attempts):
            "found \(found) of \(wanted) flows for queue \(q) in \(attempts) attempts"
        }
    }
}

public struct FlowSet: Hashable, Sendable {
    public let template: PacketBuilder
    public let key: ToeplitzKey
    public let reta: RedirectionTable
    public let input: RSSInput
    /// The flows, in generation order.
    public let flows: [Flow]

    /// `count` distinct flows.
    public init(template: PacketBuilder, count: Int, seed: UInt64 = 1, sourceAddressBits: Int = 16,
                key: ToeplitzKey = .microsoft, reta: RedirectionTable,
                input: RSSInput = .addressesAndPorts) throws(FlowSetError) {
        guard count >= 0 else { throw .negativeCount(count) }
        var gen = try Generator(template: template, seed: seed, bits: sourceAddressBits, key: key, reta: reta, input: input)
        guard count <= gen.available else { throw .notEnoughDistinctFlows(requested: count, available: gen.available) }
        var out: [Flow] = []
        out.reserveCapacity(count)
        while out.count < count {
            if let flow = gen.nextDistinct() { out.append(flow) }
        }
        self.template = template; self.key = key; self.reta = reta; self.input = input; self.flows = out
    }

    /// Exactly `flowsPerQueue` distinct flows for every queue the RETA names.
    public init(template: PacketBuilder, flowsPerQueue: Int, seed: UInt64 = 1, sourceAddressBits: Int = 16,
                key: ToeplitzKey = .microsoft, reta: RedirectionTable,
                input: RSSInput = .addressesAndPorts) throws(FlowSetError) {
        guard flowsPerQueue >= 0 else { throw .negativeCount(flowsPerQueue) }
        var gen = try Generator(template: template, seed: seed, bits: sourceAddressBits, key: key, reta: reta, input: input)
        let queues = Set(reta.entries).sorted()
        let (wanted, overflow) = flowsPerQueue.multipliedReportingOverflow(by: queues.count)
        guard !overflow, wanted <= gen.available else {
            throw .notEnoughDistinctFlows(requested: overflow ? Int.max : wanted, available: gen.available)
        }
        var counts: [UInt16: Int] = [:]
        var out: [Flow] = []
        out.reserveCapacity(wanted)
        // wanted <= available, and a count of flows this large could never be
        // stored anyway; saturate rather than trap.
        let (scaled, big) = wanted.multipliedReportingOverflow(by: 64)
        let maxAttempts = big || scaled > Int.max - 100_000 ? Int.max : scaled + 100_000
        var attempts = 0
        while out.count < wanted {
            guard attempts < maxAttempts else {
                let starved = queues.first { counts[$0, default: 0] < flowsPerQueue } ?? 0
                throw .queueUnreachable(queue: starved, found: counts[starved, default: 0],
                                        wanted: flowsPerQueue, attempts: attempts)
            }
            attempts += 1
            guard let flow = gen.nextDistinct(), counts[flow.queue, default: 0] < flowsPerQueue else { continue }
            counts[flow.queue, default: 0] += 1
            out.append(flow)
        }
        self.template = template; self.key = key; self.reta = reta; self.input = input; self.flows = out
    }

    /// The flows the RETA sends to `queue`.
    public func flows(onQueue queue: UInt16) -> [Flow] { flows.filter { $0.queue == queue } }

    /// Number of flows per queue.
    public var countsByQueue: [UInt16: Int] {
        flows.reduce(into: [:]) { $0[$1.queue, default: 0] += 1 }
    }

    /// The template with this flow's source address and port.
    public func builder(for flow: Flow) -> PacketBuilder {
        var b = template
        switch (b.network, flow.source) {
        case (.ipv4(var v4), .v4(let a)): v4.source = a; b.network = .ipv4(v4)
        case (.ipv6(var v6), .v6(let a)): v6.source = a; b.network = .ipv6(v6)
        default: break  // flows of this set always share the template's family
        }
        switch b.transport {
        case .udp(_, let d): b.transport = .udp(sourcePort: flow.sourcePort, destinationPort: d)
        case .tcp(var t): t.sourcePort = flow.sourcePort; b.transport = .tcp(t)
        case .raw: break
        }
        return b
    }

    /// One frame per flow, in flow order.
    public func frames(frameSize: Int) throws(PacketBuilderError) -> [[UInt8]] {
        var out: [[UInt8]] = []
        out.reserveCapacity(flows.count)
        for f in flows { out.append(try builder(for: f).build(frameSize: frameSize)) }
        return out
    }

    /// The hash a NIC computes for a flow with these fields.
    public static func hash(key: ToeplitzKey, source: IPAddress, destination: IPAddress,
                            ports: (source: UInt16, destination: UInt16)?) -> UInt32 {
        switch (source, destination) {
        case (.v4(let s), .v4(let d)):
            if let ports { return key.hash(source: s, destination: d, sourcePort: ports.source, destinationPort: ports.destination) }
            return key.hash(source: s, destination: d)
        case (.v6(let s), .v6(let d)):
            if let ports { return key.hash(source: s, destination: d, sourcePort: ports.source, destinationPort: ports.destination) }
            return key.hash(source: s, destination: d)
        default:
            return 0  // mixed families never form a packet
        }
    }

    // MARK: generation

    private struct FlowKey: Hashable {
        var source: IPAddress
        var port: UInt16
    }

    private struct Generator {
        var rng: SplitMix64
        let template: PacketBuilder
        let bits: Int
        let key: ToeplitzKey
        let reta: RedirectionTable
        let hashPorts: Bool
        /// Number of distinct (source, source port) pairs, saturated at Int.max.
        let available: Int
        var seen: Set<FlowKey> = []

        init(template: PacketBuilder, seed: UInt64, bits: Int, key: ToeplitzKey, reta: RedirectionTable,
             input: RSSInput) throws(FlowSetError) {
            let maxBits: Int
            switch template.network { case .ipv4: maxBits = 32; case .ipv6: maxBits = 64 }
            guard (0...maxBits).contains(bits) else { throw .sourceAddressBitsOutOfRange(bits, maximum: maxBits) }
            rng = SplitMix64(seed: seed)
            self.template = template; self.bits = bits; self.key = key; self.reta = reta
            hashPorts = input == .addressesAndPorts && template.transport.ports != nil
            let addresses = bits >= 62 ? Int.max : 1 << bits
            let ports = template.transport.ports == nil ? 1 : 64512
            let (product, overflow) = addresses.multipliedReportingOverflow(by: ports)
            available = overflow ? Int.max : product
        }

        /// The next draw, or nil when it repeats an earlier flow.
        mutating func nextDistinct() -> Flow? {
            let r = rng.next()
            let source: IPAddress
            switch template.network {
            case .ipv4(let v4):
                let mask: UInt32 = bits == 0 ? 0 : ~UInt32(0) >> UInt32(32 - bits)
                source = .v4(IPv4Address(v4.source.value & ~mask | UInt32(truncatingIfNeeded: r) & mask))
            case .ipv6(let v6):
                let mask: UInt64 = bits == 0 ? 0 : ~UInt64(0) >> UInt64(64 - bits)
                source = .v6(IPv6Address(high: v6.source.high, low: v6.source.low & ~mask | r & mask))
            }
            var sport: UInt16 = 0, dport: UInt16 = 0
            if let ports = template.transport.ports {
                // A second draw keeps ports independent of the address bits.
                sport = UInt16(truncatingIfNeeded: 1024 + rng.next() % 64512)
                dport = ports.destination
            }
            guard seen.insert(FlowKey(source: source, port: sport)).inserted else { return nil }
            let destination = template.network.destination
            let h = FlowSet.hash(key: key, source: source, destination: destination,
                                 ports: hashPorts ? (sport, dport) : nil)
            return Flow(source: source, destination: destination, sourcePort: sport, destinationPort: dport,
                        hash: h, queue: reta.queue(forHash: h))
        }
    }
}
