// The real worker loop on ring ports: frames built with PacketBuilder go in
// on a port's RX ring, and what the worker sends comes back from the TX
// rings, checked byte for byte; every drop reason is provoked and its counter
// checked exactly; a route change is published while the worker runs.

import CShims
import Dataplane
import Packet
import Testing

extension EALSuites {
    @Suite(.runningGateway) struct GatewayTests {
        let h: GatewayHarness

        init() throws {
            h = try #require(GatewayHarness.current, "the gateway suite runs inside GatewayScope")
        }

        // Where each side's traffic must go.
        var toUnprotected4: Egress { Egress(port: h.u, destination: GatewayHarness.unprotectedNeighbor4.1, source: h.portMAC(h.u)) }
        var toUnprotected6: Egress { Egress(port: h.u, destination: GatewayHarness.unprotectedNeighbor6.1, source: h.portMAC(h.u)) }
        var toProtected4: Egress { Egress(port: h.p, destination: GatewayHarness.protectedNeighbor4.1, source: h.portMAC(h.p)) }
        var toProtected6: Egress { Egress(port: h.p, destination: GatewayHarness.protectedNeighbor6.1, source: h.portMAC(h.p)) }

        /// Forwards `frames` (each with its egress) injected on `port` and
        /// checks counters, the port each left by and every byte.
        func expectForwarded(_ cases: [(frame: [UInt8], egress: Egress, name: String)], on port: RingPort,
                             sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
            let out = try h.inject(cases.map(\.frame), on: port)
            let n = UInt64(cases.count)
            #expect(out.delta.rxPackets == n, "\(out.delta)", sourceLocation: sourceLocation)
            #expect(out.delta.rxBytes == UInt64(cases.reduce(0) { $0 + $1.frame.count }), "\(out.delta)", sourceLocation: sourceLocation)
            #expect(out.delta.txPackets == n, "\(out.delta)", sourceLocation: sourceLocation)
            #expect(out.delta.dropsByReason == [:], "\(out.delta)", sourceLocation: sourceLocation)
            for egressPort in [h.p, h.u] {
                let expected = cases.filter { $0.egress.port == egressPort }
                let sent = out.sent[egressPort] ?? []
                guard sent.count == expected.count else {
                    Issue.record("port \(egressPort) sent \(sent.count) frames, expected \(expected.count) (\(expected.map(\.name)))",
                                 sourceLocation: sourceLocation)
                    continue
                }
                // The worker handles a burst's IPv4 packets before its IPv6
                // packets, so match each sent frame to its input by content.
                var remaining = sent
                for c in expected {
                    let want = expectedForward(c.frame, c.egress)
                    if let i = remaining.firstIndex(of: want) {
                        remaining.remove(at: i)
                    } else if let i = remaining.indices.min(by: { Self.distance(remaining[$0], want) < Self.distance(remaining[$1], want) }) {
                        // Not sent as expected: say what differs in the closest candidate.
                        checkForwarded(remaining[i], input: c.frame, egress: c.egress, c.name, sourceLocation: sourceLocation)
                        remaining.remove(at: i)
                    }
                }
            }
        }

        /// Bytes that differ (length differences count as many).
        static func distance(_ a: [UInt8], _ b: [UInt8]) -> Int {
            zip(a, b).reduce(abs(a.count - b.count) * 1000) { $0 + ($1.0 == $1.1 ? 0 : 1) }
        }

        /// Injects frames that must all be dropped for `reason`.
        func expectDropped(_ frames: [[UInt8]], reason: DropReason, on port: RingPort? = nil,
                           sourceLocation: Testing.SourceLocation = #_sourceLocation) throws {
            let out = try h.inject(frames, on: port ?? h.protected)
            #expect(out.delta.rxPackets == UInt64(frames.count), "\(out.delta)", sourceLocation: sourceLocation)
            #expect(out.delta.txPackets == 0, "\(out.delta)", sourceLocation: sourceLocation)
            #expect(out.delta.dropsByReason == [reason: UInt64(frames.count)], "\(out.delta)", sourceLocation: sourceLocation)
            #expect(out.allSent == 0, "frames were sent: \(out.sent.mapValues(\.count))", sourceLocation: sourceLocation)
        }

        // MARK: the mempool

        /// Without hugepages the gateway's mbufs are packed back to back: their
        /// offsets within a 4 KiB page vary. With one object per page (what
        /// rte_pktmbuf_pool_create does there) every packet's first bytes map
        /// to the same L1 cache sets, which cost a 64-byte forwarder ~40 % of
        /// its rate here. The stock pool is the negative control.
        @Test func mbufsArePackedWithoutHugepages() throws {
            #expect(rte_eal_has_hugepages() == 0, "the test EAL runs with --no-huge")
            #expect(sl_pktmbuf_pool_packs() != 0)
            func pageOffsets(_ pool: OpaquePointer) throws -> Set<Int> {
                var mbufs = [OpaquePointer?](repeating: nil, count: 64)
                let rc = mbufs.withUnsafeMutableBufferPointer { sl_mbuf_alloc_bulk(pool, $0.baseAddress, 64) }
                try #require(rc == 0, "64 mbufs from the pool")
                defer { for m in mbufs { sl_mbuf_free(m) } }
                for m in mbufs {
                    // Every mbuf keeps the full default data room, and its
                    // data starts after its header.
                    #expect(sl_mbuf_buf_len(m!) == sl_mbuf_default_buf_size())
                    #expect(UnsafeRawPointer(sl_mbuf_buf_addr(m!)) > UnsafeRawPointer(m!))
                }
                return Set(mbufs.map { Int(bitPattern: UnsafeRawPointer(sl_mbuf_data($0!))) & 4095 })
            }
            #expect(try pageOffsets(h.pool).count >= 16)
            let stock = try #require(rte_pktmbuf_pool_create("sl_test_stock", 255, 0, 0, sl_mbuf_default_buf_size(), 0))
            defer { rte_mempool_free(stock) }
            // One offset per memory chunk the stock pool was populated from
            // (usually one; two when the heap is fragmented by earlier tests).
            let stockOffsets = try pageOffsets(stock)
            #expect(stockOffsets.count <= 2, "rte_pktmbuf_pool_create gives each mbuf a page here: \(stockOffsets.sorted())")
        }

        // MARK: forwarding

        /// With the routes compiled from the MACs the gateway read from its
        /// ports (as `sluice` does), frames leave with that port's MAC.
        @Test func sourceMACIsThePortMAC() throws {
            defer { try? h.publish(h.baseConfigText) }
            let real = h.realPortMACs
            #expect(real[h.p] == h.gateway.ports.first { $0.info.id == h.p }?.info.mac)
            try h.publish(h.baseConfigText, portMACs: real)
            try expectForwarded([
                (h.frame4("10.0.0.4", "198.51.100.4"), Egress(port: h.u, destination: GatewayHarness.unprotectedNeighbor4.1, source: real[h.u]!), "out"),
                (h.frame6("2001:db8:b::4", "2001:db8:1::4", ethDst: real[h.u]), Egress(port: h.p, destination: GatewayHarness.protectedNeighbor6.1, source: real[h.p]!), "in"),
            ], on: h.protected)
        }

        /// The MACs the other tests expect as sources are distinct and not
        /// zero, so a missing or swapped rewrite shows.
        @Test func rewriteMACsAreDistinguishable() {
            #expect(h.portMAC(h.p) != h.portMAC(h.u))
            #expect(!h.portMAC(h.p).isZero && !h.portMAC(h.u).isZero)
            #expect(h.portMAC(h.p) != GatewayHarness.hostMAC && h.portMAC(h.u) != GatewayHarness.hostMAC)
        }

        @Test func forwardsIPv4AndIPv6BothWays() throws {
            var rng = SplitMix64(seed: 0xF0_0D)
            var fromProtected: [([UInt8], Egress, String)] = []
            var fromUnprotected: [([UInt8], Egress, String)] = []
            let transports: [TransportSpec] = [
                .udp(sourcePort: 500, destinationPort: 4500), .tcp(TCPSpec(sourcePort: 40000, destinationPort: 443, sequence: 7)),
                .raw(.esp), .raw(.icmp),
            ]
            for i in 0..<48 {
                let ttl = UInt8.random(in: 2...255, using: &rng)
                let t = transports[i % transports.count]
                // The largest sizes fill a 1500-byte port MTU.
                let size = min([0, 1, 26, 100, 999, 1472][i % 6], 1480 - t.headerLength)
                let size6 = min(size, 1460 - t.headerLength)
                let pattern = PayloadPattern.pseudoRandom(seed: rng.next())
                let id = UInt16.random(in: 0...UInt16.max, using: &rng)
                let host = UInt8.random(in: 2...254, using: &rng)  // 10.0.0.1 is the gateway's own
                fromProtected.append((h.frame4("10.0.0.\(host)", "198.51.100.\(i + 1)", ttl: ttl, id: id, transport: t, payload: size, pattern: pattern),
                                      toUnprotected4, "IPv4 #\(i) out"))
                fromProtected.append((h.frame6("2001:db8:a::\(i + 10)", "2001:db8:100::\(i + 1)", hopLimit: ttl, transport: t, payload: size6, pattern: pattern),
                                      toUnprotected6, "IPv6 #\(i) out"))
                fromUnprotected.append((h.frame4("198.51.100.\(host)", "10.1.\(i).\(host)", ttl: ttl, id: id, transport: t, payload: size,
                                                 pattern: pattern, ethDst: h.portMAC(h.u)), toProtected4, "IPv4 #\(i) in"))
                fromUnprotected.append((h.frame6("2001:db8:100::\(i + 10)", "2001:db8:1::\(i + 1)", hopLimit: ttl, transport: t, payload: size6,
                                                 pattern: pattern, ethDst: h.portMAC(h.u)), toProtected6, "IPv6 #\(i) in"))
            }
            // Host routes to the neighbours themselves, and TTL 2 (the lowest that is forwarded).
            fromProtected.append((h.frame4("10.0.0.9", "192.0.2.254", ttl: 2), toUnprotected4, "to the IPv4 neighbour"))
            fromProtected.append((h.frame6("2001:db8:a::9", "2001:db8:b::fe", hopLimit: 2), toUnprotected6, "to the IPv6 neighbour"))
            fromUnprotected.append((h.frame4("192.0.2.9", "10.0.0.2", ttl: 255), toProtected4, "to the protected IPv4 neighbour"))
            fromUnprotected.append((h.frame6("2001:db8:b::9", "2001:db8:a::2", hopLimit: 255), toProtected6, "to the protected IPv6 neighbour"))
            try expectForwarded(fromProtected.map { ($0.0, $0.1, $0.2) }, on: h.protected)
            try expectForwarded(fromUnprotected.map { ($0.0, $0.1, $0.2) }, on: h.unprotected)
        }

        /// One burst on each port, packets arriving one at a time, and
        /// bursts larger than SL_BURST: the per-burst scratch arrays must not
        /// mix packets up.
        @Test func burstSizes() throws {
            for count in [1, 31, 32, 33, 200] {
                var cases: [([UInt8], Egress, String)] = []
                for i in 0..<count {
                    if i % 3 == 2 {
                        cases.append((h.frame6("2001:db8:a::5", "2001:db8:100::\(i + 1)", hopLimit: UInt8(2 + i % 200), payload: i % 50),
                                      toUnprotected6, "IPv6 \(i)/\(count)"))
                    } else {
                        cases.append((h.frame4("10.0.0.5", "198.51.100.\(i % 250 + 1)", ttl: UInt8(2 + i % 200), id: UInt16(i), payload: i % 50),
                                      toUnprotected4, "IPv4 \(i)/\(count)"))
                    }
                }
                try expectForwarded(cases, on: h.protected)
            }
        }

        @Test func vlanTaggedFrames() throws {
            let tags = [VLANTag(id: 100), VLANTag(id: 4095, priority: 7, dropEligible: true), VLANTag(id: 42, tpid: .qinq)]
            var cases: [([UInt8], Egress, String)] = []
            for (i, tag) in tags.enumerated() {
                cases.append((h.frame4("10.0.0.7", "198.51.100.\(i + 1)", vlan: tag, payload: 40), toUnprotected4, "IPv4 tag \(tag)"))
                cases.append((h.frame6("2001:db8:a::7", "2001:db8:100::\(i + 1)", vlan: tag, payload: 40), toUnprotected6, "IPv6 tag \(tag)"))
                cases.append((h.frame4("10.0.0.7", "198.51.100.\(i + 1)", options: [0x94, 0x04, 0, 0], vlan: tag, payload: 3),
                              toUnprotected4, "IPv4 with options, tag \(tag)"))
            }
            try expectForwarded(cases, on: h.protected)
        }

        @Test func ipv4WithOptions() throws {
            var cases: [([UInt8], Egress, String)] = []
            for length in [1, 3, 4, 8, 11, 20, 36, 39, 40] {
                // Record Route style option bytes, then NOPs; padding to 4 bytes is the builder's.
                let options = (0..<length).map { $0 == 0 ? UInt8(7) : ($0 == 1 ? UInt8(length) : UInt8(0x01 &+ UInt8($0))) }
                cases.append((h.frame4("10.0.0.8", "198.51.100.9", ttl: 33, id: UInt16(length), options: options, payload: 64),
                              toUnprotected4, "\(length) option bytes"))
            }
            try expectForwarded(cases, on: h.protected)
        }

        /// Frames longer than their IP packet (Ethernet padding, trailers) are
        /// forwarded whole, the extra bytes untouched.
        @Test func bytesBeyondTheIPPacketAreKept() throws {
            var f4 = h.frame4("10.0.0.8", "198.51.100.9", payload: 0)   // 42 bytes
            f4 += [UInt8](repeating: 0xA5, count: 60 - f4.count) + [1, 2, 3, 4]
            var f6 = h.frame6("2001:db8:a::8", "2001:db8:100::9", payload: 0)
            f6 += [0xDE, 0xAD, 0xBE, 0xEF]
            try expectForwarded([(f4, toUnprotected4, "IPv4 with padding"), (f6, toUnprotected6, "IPv6 with trailer")], on: h.protected)
        }

        /// TTL decrement against a full checksum recomputation where the
        /// incremental update carries: headers whose checksum before the
        /// decrement is near 0x0000 / 0xFFFF, and the header whose stored
        /// checksum is 0xFFFF (the other zero, valid on the wire).
        @Test func ttlDecrementChecksumEdges() throws {
            let targets: Set<UInt16> = [0x0000, 0x0001, 0x00FF, 0x0100, 0xFEFE, 0xFEFF, 0xFF00, 0xFFFE]
            var found: [UInt16: [UInt8]] = [:]
            let base = h.frame4("10.0.0.3", "198.51.100.3", ttl: 200, id: 0, payload: 10)
            var f = base
            for id in 0...0xFFFF where found.count < targets.count {
                f[18] = UInt8(id >> 8); f[19] = UInt8(id & 0xFF)
                f[24] = 0; f[25] = 0
                let sum = InternetChecksum.checksum(Array(f[14..<34]))
                if targets.contains(sum) && found[sum] == nil {
                    f[24] = UInt8(sum >> 8); f[25] = UInt8(sum & 0xFF)
                    found[sum] = f
                }
            }
            #expect(found.count == targets.count, "no identification gives checksums \(targets.subtracting(found.keys))")
            var cases = found.sorted { $0.key < $1.key }.map { ($0.value, toUnprotected4, "checksum \(String($0.key, radix: 16)) before") }
            // Stored 0xFFFF where a recomputation gives 0x0000: still valid.
            if var zero = found[0x0000] {
                zero[24] = 0xFF; zero[25] = 0xFF
                #expect(InternetChecksum.checksum(Array(zero[14..<34])) == 0)
                cases.append((zero, toUnprotected4, "checksum stored as 0xffff"))
            }
            try expectForwarded(cases, on: h.protected)
        }

        // MARK: drops, one reason each

        @Test func malformedFrames() throws {
            var frames: [[UInt8]] = []
            let good4 = h.frame4("10.0.0.4", "198.51.100.4", payload: 20)       // 62 bytes, IHL 5
            let good6 = h.frame6("2001:db8:a::4", "2001:db8:100::4", payload: 20)
            frames.append(Array(good4.prefix(10)))                              // shorter than Ethernet
            frames.append(Array(good4.prefix(14)))                              // Ethernet only
            frames.append(Array(good4.prefix(33)))                              // IPv4 header cut at 19 bytes
            let tagged = h.frame4("10.0.0.4", "198.51.100.4", vlan: VLANTag(id: 5), payload: 20)
            frames.append(Array(tagged.prefix(16)))                             // VLAN tag cut
            frames.append(Array(tagged.prefix(37)))                             // tagged, IPv4 header cut
            var ihl4 = good4; ihl4[14] = 0x44                                   // IHL 4: 16-byte header
            frames.append(ihl4)
            var ihl15 = good4; ihl15[14] = 0x4F                                 // IHL 15: 60 bytes, frame has 48
            frames.append(ihl15)
            var v5 = good4; v5[14] = 0x55                                       // version 5 under 0x0800
            frames.append(v5)
            var longTotal = good4; longTotal[16] = 0; longTotal[17] = UInt8(good4.count - 14 + 1)  // one byte beyond the frame
            frames.append(longTotal)
            var shortTotal = good4; shortTotal[16] = 0; shortTotal[17] = 19     // total length below the header length
            frames.append(shortTotal)
            frames.append(Array(good6.prefix(14 + 39)))                         // IPv6 header cut
            var longPayload = good6; longPayload[18] = 0; longPayload[19] = UInt8(good6.count - 54 + 1)
            frames.append(longPayload)
            var v4in6 = good6; v4in6[14] = 0x45                                 // version 4 under 0x86DD
            frames.append(v4in6)
            // Headers whose other fields are fine: keep the checksum valid so only the length is wrong.
            for i in [5, 6, 8, 9] { Self.fixChecksum(&frames[i]) }
            try expectDropped(frames, reason: .malformed)
        }

        static func fixChecksum(_ f: inout [UInt8]) {
            let l3 = l3Offset(f)
            let hlen = min(Int(f[l3] & 0x0F) * 4, f.count - l3)
            f[l3 + 10] = 0; f[l3 + 11] = 0
            let sum = InternetChecksum.checksum(Array(f[l3..<(l3 + hlen)]))
            f[l3 + 10] = UInt8(sum >> 8); f[l3 + 11] = UInt8(sum & 0xFF)
        }

        @Test func badIPv4Checksum() throws {
            var flipped = h.frame4("10.0.0.4", "198.51.100.4"); flipped[25] ^= 0x01
            var ttlChanged = h.frame4("10.0.0.4", "198.51.100.4", ttl: 64); ttlChanged[22] = 65
            var optionChanged = h.frame4("10.0.0.4", "198.51.100.4", options: [0x94, 0x04, 0, 0]); optionChanged[36] ^= 0x80
            var tagged = h.frame4("10.0.0.4", "198.51.100.4", vlan: VLANTag(id: 9)); tagged[18 + 10] ^= 0xFF
            var ttlOne = h.frame4("10.0.0.4", "198.51.100.4", ttl: 1); ttlOne[25] ^= 0x10   // checked before the TTL
            try expectDropped([flipped, ttlChanged, optionChanged, tagged, ttlOne], reason: .badChecksum)
        }

        @Test func unsupportedEthertypes() throws {
            let base = h.frame4("10.0.0.4", "198.51.100.4")
            func withType(_ t: UInt16) -> [UInt8] { var f = base; f[12] = UInt8(t >> 8); f[13] = UInt8(t & 0xFF); return f }
            let arp = withType(0x0806), lldp = withType(0x88CC), mpls = withType(0x8847), zero = withType(0x0000)
            // Double tagging: the data plane looks through one tag only.
            var qinq = h.frame4("10.0.0.4", "198.51.100.4", vlan: VLANTag(id: 10, tpid: .qinq))
            qinq.insert(contentsOf: [0x81, 0x00, 0x00, 0x14], at: 16)
            var taggedARP = h.frame4("10.0.0.4", "198.51.100.4", vlan: VLANTag(id: 11)); taggedARP[16] = 0x08; taggedARP[17] = 0x06
            try expectDropped([arp, lldp, mpls, zero, qinq, taggedARP], reason: .unsupportedEthertype)
        }

        @Test func noRoute() throws {
            try expectDropped([
                h.frame4("10.0.0.4", "8.8.8.8"), h.frame4("10.0.0.4", "198.51.101.1"),
                h.frame6("2001:db8:a::4", "2001:4860::8888"), h.frame6("2001:db8:a::4", "2001:db8:101::1"),
                h.frame4("10.0.0.4", "8.8.4.4", vlan: VLANTag(id: 3)),
            ], reason: .noRoute)
        }

        @Test func noNeighbor() throws {
            try expectDropped([
                h.frame4("10.0.0.4", "203.0.113.9"),            // route via 192.0.2.77, no neighbour entry
                h.frame6("2001:db8:a::4", "2001:db8:200::9"),   // route via 2001:db8:b::77
                h.frame4("10.0.0.4", "192.0.2.50"),             // connected prefix, host without neighbour
                h.frame6("2001:db8:a::4", "2001:db8:b::50"),
                h.frame4("192.0.2.9", "10.0.0.77", ethDst: h.portMAC(h.u)),
            ], reason: .noNeighbor)
        }

        @Test func ttlExceeded() throws {
            try expectDropped([
                h.frame4("10.0.0.4", "198.51.100.4", ttl: 1), h.frame4("10.0.0.4", "198.51.100.4", ttl: 0),
                h.frame6("2001:db8:a::4", "2001:db8:100::4", hopLimit: 1), h.frame6("2001:db8:a::4", "2001:db8:100::4", hopLimit: 0),
                h.frame4("10.0.0.4", "198.51.100.4", ttl: 1, options: [1, 1, 1, 1], vlan: VLANTag(id: 7)),
            ], reason: .ttlExceeded)
        }

        @Test func addressedToTheGateway() throws {
            try expectDropped([
                h.frame4("10.0.0.4", "10.0.0.1"), h.frame4("10.0.0.4", "192.0.2.1"),
                h.frame6("2001:db8:a::4", "2001:db8:a::1"), h.frame6("2001:db8:a::4", "2001:db8:b::1"),
            ], reason: .local)
        }

        /// Destinations no router forwards are dropped as martians, even where
        /// a default route would cover them (the harness's routes include one
        /// only if configured; the martian prefixes are more specific anyway).
        @Test func martianDestinations() throws {
            try expectDropped([
                h.frame4("10.0.0.4", "224.0.0.5"), h.frame4("10.0.0.4", "255.255.255.255"),
                h.frame4("10.0.0.4", "127.0.0.1"), h.frame4("10.0.0.4", "0.1.2.3"),
                h.frame6("2001:db8:a::4", "ff02::1"), h.frame6("2001:db8:a::4", "fe80::2"), h.frame6("2001:db8:a::4", "::1"),
            ], reason: .martian)
        }

        /// Every outcome in one burst: each packet is counted once, under its
        /// own reason, and the forwarded ones are intact.
        @Test func mixedBurst() throws {
            let fwd4 = h.frame4("10.0.0.4", "198.51.100.4", id: 1), fwd6 = h.frame6("2001:db8:a::4", "2001:db8:100::4")
            var bad = h.frame4("10.0.0.4", "198.51.100.4"); bad[25] ^= 1
            var arp = fwd4; arp[12] = 0x08; arp[13] = 0x06
            let frames: [[UInt8]] = [
                fwd6, Array(fwd4.prefix(20)), fwd4, bad, arp, h.frame4("10.0.0.4", "8.8.8.8"), fwd6,
                h.frame6("2001:db8:a::4", "2001:db8:200::1"), h.frame4("10.0.0.4", "198.51.100.4", ttl: 1),
                h.frame6("2001:db8:a::4", "2001:db8:a::1"), fwd4, h.frame6("2001:db8:a::4", "2001:db8:100::4", hopLimit: 1),
            ]
            let out = try h.inject(frames, on: h.protected)
            #expect(out.delta.rxPackets == UInt64(frames.count))
            #expect(out.delta.txPackets == 4)
            #expect(out.delta.dropsByReason == [.malformed: 1, .badChecksum: 1, .unsupportedEthertype: 1, .noRoute: 1,
                                                .noNeighbor: 1, .ttlExceeded: 2, .local: 1], "\(out.delta)")
            let sent = out.sent[h.u] ?? []
            #expect(out.sent[h.p]?.isEmpty ?? true)
            #expect(sent.sorted { $0.lexicographicallyPrecedes($1) }
                == [expectedForward(fwd4, toUnprotected4), expectedForward(fwd4, toUnprotected4),
                    expectedForward(fwd6, toUnprotected6), expectedForward(fwd6, toUnprotected6)].sorted { $0.lexicographicallyPrecedes($1) })
        }

        /// A TX ring that stays full: the worker sends what fits and counts
        /// the rest as tx_full.
        @Test func txQueueFull() throws {
            let capacity = h.ringSize - 1
            let frames = (0..<(capacity + 77)).map { h.frame4("10.0.0.6", "198.51.100.\($0 % 250 + 1)", id: UInt16($0)) }
            let out = try h.inject(frames, on: h.protected, drain: false)
            let sent = h.dequeueAll(h.unprotected)
            _ = h.dequeueAll(h.protected)
            #expect(out.delta.txPackets == UInt64(capacity), "\(out.delta)")
            #expect(out.delta.dropsByReason == [.txFull: 77], "\(out.delta)")
            #expect(sent.count == capacity)
            // What was sent is the first `capacity` packets, in order, intact.
            for (i, f) in sent.enumerated().prefix(capacity) where f != expectedForward(frames[i], toUnprotected4) {
                checkForwarded(f, input: frames[i], egress: toUnprotected4, "packet \(i)")
                break
            }
        }

        // MARK: route changes

        /// Publishing a new route set while the worker runs: the generation
        /// advances by one per publish and the next packets follow the new
        /// routes; then back again, several times.
        @Test func publishWhileRunning() throws {
            let changed = h.baseConfigText
                .replacingOccurrences("route add 198.51.100.0/24 via 192.0.2.254", "route add 198.51.100.0/24 via 10.0.0.2")
                .replacingOccurrences("route add 203.0.113.0/24 via 192.0.2.77", "route add 8.8.8.0/24 via 192.0.2.254")
                .replacingOccurrences("route add 2001:db8:100::/48 via 2001:db8:b::fe", "route add 2001:db8:100::/48 via 2001:db8:a::2")
            defer { try? h.publish(h.baseConfigText) }
            let toDoc = h.frame4("10.1.2.3", "198.51.100.7", ttl: 9)
            let toDoc6 = h.frame6("2001:db8:1::3", "2001:db8:100::7", hopLimit: 9)
            let toGoogle = h.frame4("10.1.2.3", "8.8.8.8", ttl: 9)
            let toTest = h.frame4("10.1.2.3", "203.0.113.7", ttl: 9)
            for round in 0..<4 {
                let pollsBefore = h.gateway.coreCounters()[0].polls
                let g = h.gateway.currentGeneration
                try h.publish(changed)
                #expect(h.gateway.currentGeneration == g + 1, "round \(round)")
                var out = try h.inject([toDoc, toDoc6, toGoogle, toTest], on: h.protected)
                #expect(out.delta.dropsByReason == [.noRoute: 1], "round \(round), changed routes: \(out.delta)")
                #expect(out.sent[h.p] ?? [] == [expectedForward(toDoc, toProtected4), expectedForward(toDoc6, toProtected6)],
                        "round \(round): 198.51.100.0/24 and 2001:db8:100::/48 now leave by the protected port")
                #expect(out.sent[h.u] ?? [] == [expectedForward(toGoogle, toUnprotected4)], "round \(round): 8.8.8.0/24 is new")

                try h.publish(h.baseConfigText)
                #expect(h.gateway.currentGeneration == g + 2, "round \(round)")
                out = try h.inject([toDoc, toDoc6, toGoogle, toTest], on: h.protected)
                #expect(out.delta.dropsByReason == [.noRoute: 1, .noNeighbor: 1], "round \(round), base routes: \(out.delta)")
                #expect(out.sent[h.u] ?? [] == [expectedForward(toDoc, toUnprotected4), expectedForward(toDoc6, toUnprotected6)],
                        "round \(round): back to the unprotected side")
                #expect(out.sent[h.p]?.isEmpty ?? true)
                #expect(h.gateway.coreCounters()[0].polls > pollsBefore, "the worker kept polling")
            }
        }

        /// A next hop whose port the gateway does not drive cannot be sent:
        /// the worker only flushes the TX buffers of its own ports (and a
        /// port id of SL_MAX_PORTS or more would index past the per-core TX
        /// array). `publish` must refuse such a route set with a message
        /// instead of installing it. No traffic is sent here.
        @Test func publishRefusesNextHopsOnForeignPorts() throws {
            defer { try? h.publish(h.baseConfigText) }
            let ours = Set(h.gateway.ports.map(\.info.id))
            let foreign = try #require((0..<UInt16(SL_MAX_PORTS)).first { !ours.contains($0) })
            let route = RouteEntry(prefix: IPPrefix("192.0.2.128/25")!,
                                   nextHop: .forward(port: foreign, destination: mac("02:dd:00:00:00:01"), source: mac("02:dd:00:00:00:02")))
            let generation = h.gateway.currentGeneration
            #expect(throws: DataplaneError.self, "a route out of port \(foreign), which the gateway does not drive, was published") {
                try h.gateway.publish(routes: [route])
            }
            #expect(h.gateway.currentGeneration == generation, "a refused route set must not be published")
        }

        /// An empty route set: everything is "no route"; the worker keeps running.
        @Test func publishEmptyRouteSet() throws {
            defer { try? h.publish(h.baseConfigText) }
            try h.gateway.publish(routes: [])
            try expectDropped([h.frame4("10.0.0.4", "198.51.100.4"), h.frame6("2001:db8:a::4", "2001:db8:100::4"),
                               h.frame4("10.0.0.4", "10.0.0.1")], reason: .noRoute)
            try h.publish(h.baseConfigText)
            try expectForwarded([(h.frame4("10.0.0.4", "198.51.100.4"), toUnprotected4, "after restoring the routes")], on: h.protected)
        }
    }
}

extension String {
    /// Replaces every occurrence of `a` with `b` (no Foundation here).
    func replacingOccurrences(_ a: String, _ b: String) -> String {
        var result = ""
        var rest = Substring(self)
        while let r = rest.firstRange(of: a) {
            result += rest[..<r.lowerBound]
            result += b
            rest = rest[r.upperBound...]
        }
        return result + rest
    }
}
