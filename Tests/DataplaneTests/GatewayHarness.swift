// One in-process gateway on two ring ports, shared by the gateway suite: the
// test thread plays both neighbours, enqueuing frames on a port's RX ring and
// dequeuing what the worker sent from the TX rings.

import CShims
import Command
import Control
import Dataplane
import Glibc
import Packet
import Testing

/// Counter differences over one injection, summed over the worker cores:
/// the gateway's own per-core counters, totalled and subtracted (`-`).
typealias CounterDelta = CoreCounters

extension CoreCounters: CustomStringConvertible {
    /// All counters zero.
    init() { self.init(lcore: 0, queue: 0, socket: 0) }

    /// The non-zero drop counters by reason.
    var dropsByReason: [DropReason: UInt64] {
        var out: [DropReason: UInt64] = [:]
        for r in DropReason.allCases where drops[r.rawValue] != 0 { out[r] = drops[r.rawValue] }
        return out
    }

    /// Packets the worker is done with: sent, dropped, or handed to the
    /// agent. A fragment taken for reassembly is done with once taken: the
    /// datagram it joins counts as one packet sent or dropped. A datagram
    /// sent in k fragments counts k packets sent; an ICMP error is a drop
    /// and a packet sent, one outcome. Fragments the reassembly table gave
    /// up later (`reassembly_failed`, one per fragment, and
    /// `reassembly_too_big`, one per datagram) were done with when taken
    /// (racy reads: signed).
    var settled: Int {
        let givenUp = drops[DropReason.reassemblyFailed.rawValue] + drops[DropReason.reassemblyTooBig.rawValue]
        return Int(txPackets) - Int(fragmentsOut) + Int(fragmented) + Int(totalDrops) - Int(givenUp) + Int(fragments)
            - Int(reassembled) + Int(toAgent) - Int(fromAgent) - Int(icmpErrors)
    }

    public var description: String {
        "rx \(rxPackets) (\(rxBytes) B), tx \(txPackets), fragments \(fragments), reassembled \(reassembled), fragmented \(fragmented) into \(fragmentsOut), drops \(dropsByReason.map { "\($0.key.name)=\($0.value)" }.sorted())"
    }
}

/// What one injection did: the counter deltas and the frames each port sent.
struct Outcome {
    var delta: CounterDelta
    var sent: [UInt16: [[UInt8]]]
    var allSent: Int { sent.values.reduce(0) { $0 + $1.count } }
}

/// Where a forwarded frame must leave and with which MACs.
struct Egress: Equatable {
    var port: UInt16
    var destination: MACAddress
    var source: MACAddress
}

final class GatewayHarness: @unchecked Sendable {
    /// The running harness of the gateway suite (set by `GatewayScope`).
    @TaskLocal static var current: GatewayHarness?

    let gateway: Gateway
    let protected: RingPort
    let unprotected: RingPort
    /// A third port, idle unless a test makes it a local stack's (`port u punt s`).
    let stack: RingPort
    let pool: OpaquePointer
    let ringSize = 1024
    /// Short, so that the reassembly tests see datagrams given up.
    static let reassemblyTimeout = 0.2
    /// The source MAC of each port as the routes are compiled. net_ring ports
    /// have the all-zero MAC and refuse a new one (no `mac_addr_set`), which
    /// would make a source-MAC rewrite indistinguishable from zeroing; then
    /// the harness compiles with distinct stand-in MACs, as a control plane
    /// knowing better MACs would. `sourceMACIsThePortMAC` covers the real ones.
    let routeMACs: [UInt16: MACAddress]
    /// Whether the PMD accepted `rte_eth_dev_default_mac_addr_set`.
    let portsTookMACs: Bool

    // The two neighbours on each side, and a host MAC for the injected frames.
    static let protectedNeighbor4 = (ipv4("10.0.0.2"), mac("02:aa:00:00:00:02"))
    static let protectedNeighbor6 = (ipv6("2001:db8:a::2"), mac("02:aa:00:00:06:02"))
    static let unprotectedNeighbor4 = (ipv4("192.0.2.254"), mac("02:bb:00:00:00:fe"))
    static let unprotectedNeighbor6 = (ipv6("2001:db8:b::fe"), mac("02:bb:00:00:06:fe"))
    static let hostMAC = mac("02:cc:00:00:00:01")

    var p: UInt16 { protected.port }
    var u: UInt16 { unprotected.port }

    /// The configuration the suite starts from (and returns to).
    var baseConfigText: String {
        """
        port \(p) role protected address 10.0.0.1/24
        port \(p) address 2001:db8:a::1/64
        port \(u) role unprotected address 192.0.2.1/24
        port \(u) address 2001:db8:b::1/64
        neighbor 10.0.0.2 lladdr 02:aa:00:00:00:02 port \(p)
        neighbor 2001:db8:a::2 lladdr 02:aa:00:00:06:02 port \(p)
        neighbor 192.0.2.254 lladdr 02:bb:00:00:00:fe port \(u)
        neighbor 2001:db8:b::fe lladdr 02:bb:00:00:06:fe port \(u)
        route add 198.51.100.0/24 via 192.0.2.254
        route add 2001:db8:100::/48 via 2001:db8:b::fe
        route add 10.1.0.0/16 via 10.0.0.2
        route add 2001:db8:1::/48 via 2001:db8:a::2
        route add 203.0.113.0/24 via 192.0.2.77
        route add 2001:db8:200::/48 via 2001:db8:b::77
        """
    }

    init() throws {
        try TestEAL.ensure()
        // Ring names are global in DPDK: these are used nowhere else.
        protected = try RingPort.create(name: "dpt_prot", queues: 1, size: ringSize, socket: 0)
        unprotected = try RingPort.create(name: "dpt_unprot", queues: 1, size: ringSize, socket: 0)
        stack = try RingPort.create(name: "dpt_stack", queues: 1, size: ringSize, socket: 0)
        var took = true
        let standIns = [protected.port: mac("02:11:00:00:00:01"), unprotected.port: mac("02:22:00:00:00:02")]
        for (port, m) in standIns {
            var addr = rte_ether_addr(addr_bytes: m.bytes)
            if rte_eth_dev_default_mac_addr_set(port, &addr) != 0 { took = false }
        }
        portsTookMACs = took
        gateway = try Gateway(portIDs: [protected.port, unprotected.port, stack.port],
                              roles: [protected.port: .protected, unprotected.port: .unprotected],
                              workerLcores: [1], extraMbufs: 4096, reassemblyTimeout: Self.reassemblyTimeout)
        guard let mp = gateway.mempools.values.first else { throw DataplaneError("the gateway has no mempool") }
        pool = mp
        let real = Dictionary(uniqueKeysWithValues: gateway.ports.map { ($0.info.id, $0.info.mac) })
        routeMACs = took ? real : standIns
        try publish(baseConfigText)
        try gateway.start()
    }

    /// The source MAC frames leaving `port` carry.
    func portMAC(_ port: UInt16) -> MACAddress { routeMACs[port]! }

    /// The ports' MACs as the gateway read them from the PMD.
    var realPortMACs: [UInt16: MACAddress] {
        Dictionary(uniqueKeysWithValues: gateway.ports.map { ($0.info.id, $0.info.mac) })
    }

    /// Compiles and publishes a configuration, as `sluice` does at start-up
    /// (with `routeMACs` unless `portMACs` says otherwise).
    func publish(_ text: String, portMACs: [UInt16: MACAddress]? = nil) throws {
        let config = try GatewayConfig.load(text: text, name: "test.conf")
        try gateway.publish(routes: RouteCompiler.compile(config, portMACs: portMACs ?? routeMACs),
                            ports: RouteCompiler.ports(config))
    }

    /// A control session over this gateway whose configuration (`text`, with
    /// SAs and policies) is compiled and installed, as the control socket would.
    func installSession(_ text: String, name: String) throws -> ControlSession {
        let session = ControlSession(config: try GatewayConfig.load(text: text, name: name), gateway: gateway,
                                     ipsec: IPsecCompiler(), portMACs: routeMACs)
        try session.install(session.config)
        return session
    }

    func totals() -> CounterDelta { CoreCounters.total(gateway.coreCounters()) }

    /// Copies `frames` into mbufs, enqueues them on `port`'s RX ring, waits
    /// until the worker has counted every one as sent or dropped, then takes
    /// everything off both TX rings.
    func inject(_ frames: [[UInt8]], on port: RingPort, drain: Bool = true) throws -> Outcome {
        let before = totals()
        var objs: [UnsafeMutableRawPointer?] = []
        for f in frames {
            guard let m = sl_mbuf_alloc(pool) else {
                for o in objs { sl_mbuf_free(OpaquePointer(o!)) }
                throw DataplaneError("test mempool exhausted")
            }
            let data = sl_mbuf_data(m)!
            f.withUnsafeBufferPointer { b in
                if let base = b.baseAddress { data.update(from: base, count: b.count) }
            }
            sl_mbuf_set_len(m, UInt16(f.count))
            objs.append(UnsafeMutableRawPointer(m))
        }
        let deadline = monotonicSeconds() + 10
        var done = 0
        while done < objs.count {
            let n = objs.withUnsafeBufferPointer { b in
                Int(sl_ring_enqueue_burst(port.rx[0], b.baseAddress! + done, UInt32(objs.count - done)))
            }
            done += n
            if n == 0 {
                if monotonicSeconds() > deadline {
                    for o in objs[done...] { sl_mbuf_free(OpaquePointer(o!)) }
                    throw DataplaneError("the worker does not take packets from port \(port.port)")
                }
                usleep(50)
            }
        }
        var delta = totals() - before
        while delta.rxPackets < UInt64(frames.count) || delta.settled < frames.count {
            if monotonicSeconds() > deadline {
                Issue.record("timed out waiting for \(frames.count) packets to be processed: \(delta)")
                break
            }
            usleep(100)
            delta = totals() - before
        }
        // A drop is counted before what it caused (an ICMP error) is queued,
        // and TX buffers are flushed at the end of the worker's iteration:
        // wait for the iteration in progress to end (it counts a poll after
        // its flush).
        let polls = gateway.coreCounters().reduce(0) { $0 + $1.polls }
        while gateway.coreCounters().reduce(0, { $0 + $1.polls }) <= polls && monotonicSeconds() < deadline {
            usleep(50)
        }
        // The counters as that iteration left them (an ICMP error is counted
        // sent after its cause's drop).
        delta = totals() - before
        var sent: [UInt16: [[UInt8]]] = [:]
        if drain {
            for rp in [protected, unprotected, stack] { sent[rp.port] = dequeueAll(rp) }
        }
        return Outcome(delta: delta, sent: sent)
    }

    /// Every frame waiting on `port`'s TX ring, as bytes; frees the mbufs.
    func dequeueAll(_ port: RingPort) -> [[UInt8]] {
        var out: [[UInt8]] = []
        var buf = [UnsafeMutableRawPointer?](repeating: nil, count: 64)
        while true {
            let n = Int(buf.withUnsafeMutableBufferPointer { sl_ring_dequeue_burst(port.tx[0], $0.baseAddress, 64) })
            if n == 0 { break }
            for i in 0..<n {
                let m = OpaquePointer(buf[i]!)
                let len = Int(sl_mbuf_data_len(m))
                if sl_mbuf_nb_segs(m) != 1 || Int(sl_mbuf_pkt_len(m)) != len {
                    Issue.record("port \(port.port) sent a multi-segment or inconsistent mbuf (\(sl_mbuf_nb_segs(m)) segments, pkt_len \(sl_mbuf_pkt_len(m)), data_len \(len))")
                }
                out.append(Array(UnsafeBufferPointer(start: sl_mbuf_data(m), count: len)))
                sl_mbuf_free(m)
            }
        }
        return out
    }

    // MARK: frames

    func frame4(_ src: String, _ dst: String, ttl: UInt8 = 64, id: UInt16 = 0x1234, options: [UInt8] = [],
                vlan: VLANTag? = nil, transport: TransportSpec = .udp(sourcePort: 4000, destinationPort: 5000),
                payload: Int = 18, pattern: PayloadPattern = .incrementing(from: 0x40), ethDst: MACAddress? = nil,
                dontFragment: Bool = true) -> [UInt8] {
        let b = PacketBuilder(ethernet: EthernetSpec(destination: ethDst ?? portMAC(p), source: Self.hostMAC, vlan: vlan),
                              network: .ipv4(IPv4Spec(source: ipv4(src), destination: ipv4(dst), ttl: ttl,
                                                      identification: id, dontFragment: dontFragment, options: options)),
                              transport: transport, pattern: pattern)
        return try! b.build(payloadLength: payload)
    }

    func frame6(_ src: String, _ dst: String, hopLimit: UInt8 = 64, vlan: VLANTag? = nil,
                transport: TransportSpec = .udp(sourcePort: 4000, destinationPort: 5000), payload: Int = 18,
                pattern: PayloadPattern = .incrementing(from: 0x60), flowLabel: UInt32 = 0x12345, ethDst: MACAddress? = nil) -> [UInt8] {
        let b = PacketBuilder(ethernet: EthernetSpec(destination: ethDst ?? portMAC(p), source: Self.hostMAC, vlan: vlan),
                              network: .ipv6(IPv6Spec(source: ipv6(src), destination: ipv6(dst), hopLimit: hopLimit,
                                                      trafficClass: 0xB8, flowLabel: flowLabel)),
                              transport: transport, pattern: pattern)
        return try! b.build(payloadLength: payload)
    }
}

// MARK: - The forwarding oracle

/// Offset of the IP header: after the Ethernet header and at most one tag.
func l3Offset(_ frame: [UInt8]) -> Int {
    let t = UInt16(frame[12]) << 8 | UInt16(frame[13])
    return t == 0x8100 || t == 0x88A8 ? 18 : 14
}

/// The frame a router must send for `input`: MACs replaced, TTL or hop limit
/// one less, the IPv4 header checksum what a full recomputation gives, every
/// other byte (tag, rest of the IP header, options, transport, payload,
/// Ethernet padding) unchanged.
func expectedForward(_ input: [UInt8], _ e: Egress) -> [UInt8] {
    // A VLAN tag is stripped (the gateway has no VLAN interfaces).
    if l3Offset(input) != 14 { return Array(expectedForward(Array(input[0..<12] + input[16...]), e)) }
    var out = input
    out.replaceSubrange(0..<6, with: e.destination.array)
    out.replaceSubrange(6..<12, with: e.source.array)
    let l3 = l3Offset(input)
    if input[l3] >> 4 == 4 {
        let hlen = Int(input[l3] & 0x0F) * 4
        out[l3 + 8] -= 1
        out[l3 + 10] = 0; out[l3 + 11] = 0
        let sum = InternetChecksum.checksum(Array(out[l3..<(l3 + hlen)]))
        out[l3 + 10] = UInt8(sum >> 8); out[l3 + 11] = UInt8(sum & 0xFF)
    } else {
        out[l3 + 7] -= 1
    }
    return out
}

/// Checks one forwarded frame field by field (so a failure says what is
/// wrong), then byte for byte against `expectedForward`.
func checkForwarded(_ output: [UInt8], input: [UInt8], egress e: Egress, _ context: String,
                    sourceLocation: Testing.SourceLocation = #_sourceLocation) {
    // A tagged frame leaves untagged.
    if l3Offset(input) != 14 {
        return checkForwarded(output, input: Array(input[0..<12] + input[16...]), egress: e, context + " (tag stripped)",
                              sourceLocation: sourceLocation)
    }
    guard output.count == input.count else {
        Issue.record("\(context): sent \(output.count) bytes for a \(input.count)-byte frame", sourceLocation: sourceLocation)
        return
    }
    #expect(Array(output[0..<6]) == e.destination.array, "\(context): destination MAC", sourceLocation: sourceLocation)
    #expect(Array(output[6..<12]) == e.source.array, "\(context): source MAC", sourceLocation: sourceLocation)
    let l3 = l3Offset(input)
    #expect(Array(output[12..<l3]) == Array(input[12..<l3]), "\(context): EtherType / VLAN tag", sourceLocation: sourceLocation)
    if input[l3] >> 4 == 4 {
        let hlen = Int(input[l3] & 0x0F) * 4
        #expect(output[l3 + 8] == input[l3 + 8] - 1, "\(context): TTL", sourceLocation: sourceLocation)
        #expect(InternetChecksum.checksum(Array(output[l3..<(l3 + hlen)])) == 0, "\(context): IPv4 header checksum invalid", sourceLocation: sourceLocation)
        var a = Array(output[l3..<(l3 + hlen)]), b = Array(input[l3..<(l3 + hlen)])
        for i in [8, 10, 11] { a[i] = 0; b[i] = 0 }
        #expect(a == b, "\(context): IPv4 header fields other than TTL and checksum", sourceLocation: sourceLocation)
        let rest = (Array(output[(l3 + hlen)...]), Array(input[(l3 + hlen)...]))
        #expect(rest.0 == rest.1, "\(context): bytes after the IPv4 header: \(firstDifference(rest.0, rest.1))", sourceLocation: sourceLocation)
    } else {
        #expect(output[l3 + 7] == input[l3 + 7] - 1, "\(context): hop limit", sourceLocation: sourceLocation)
        var a = Array(output[l3..<(l3 + 40)]), b = Array(input[l3..<(l3 + 40)])
        a[7] = 0; b[7] = 0
        #expect(a == b, "\(context): IPv6 header fields other than the hop limit", sourceLocation: sourceLocation)
        let rest = (Array(output[(l3 + 40)...]), Array(input[(l3 + 40)...]))
        #expect(rest.0 == rest.1, "\(context): bytes after the IPv6 header: \(firstDifference(rest.0, rest.1))", sourceLocation: sourceLocation)
    }
    let expected = expectedForward(input, e)
    if output != expected {
        Issue.record("\(context): sent frame differs from the expected one, \(firstDifference(output, expected)) (sent vs expected)",
                     sourceLocation: sourceLocation)
    }
}

// MARK: - Suite scope

/// Starts the harness before the gateway suite and stops the gateway after
/// its last test; the tests reach it through `GatewayHarness.current`.
struct GatewayScope: SuiteTrait, TestScoping {
    func provideScope(for test: Test, testCase: Test.Case?,
                      performing function: @Sendable () async throws -> Void) async throws {
        let harness = try GatewayHarness()
        defer { harness.gateway.stop() }
        try await GatewayHarness.$current.withValue(harness) { try await function() }
    }
}

extension Trait where Self == GatewayScope {
    /// One running gateway on two ring ports for the whole suite.
    static var runningGateway: Self { Self() }
}
