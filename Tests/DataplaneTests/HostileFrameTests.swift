// Hostile frames through the whole gateway: seeded mutations of every kind of
// frame the two sides send (ESP and ESP in UDP for each inbound SA, fragments,
// IKE, keepalives, plaintext for each policy, ARP and Neighbor Discovery for
// the neighbour agent and the local stack, packets for the gateway itself,
// TTL 1, tags, oversized packets) injected on both ports of the running
// gateway, with the agent serviced between bursts. What must hold for every
// input, however malformed:
//
// * every frame the worker takes ends in exactly one outcome: sent, dropped
//   under one reason (an ICMP error about it counts once), taken for
//   reassembly, or handed to the agent or the stack (the harness waits for
//   that; a frame that vanished leaves it waiting, one counted twice shows);
// * nothing crosses in the clear: a frame leaving the unprotected port is ESP
//   of one of the gateway's outbound SAs or matches the outbound bypass
//   policy. That ESP is opened with the peer's key: it must authenticate,
//   carry a packet within that SA's own policy, padded as RFC 4303 says, and
//   a sequence number the SA never sent before (a nonce never reused). A
//   frame leaving the protected port matches the inbound bypass
//   policy, comes from the gateway itself, or is an inner packet an SA
//   authenticated (its payload carries a marker only the peer's sealed
//   packets have);
// * the local stack gets only frames exactly as they arrived;
// * every frame sent is well formed: the port's MAC, a valid IPv4 header
//   checksum, IP lengths inside the frame, a TTL, no more than the MTU;
// * no packet buffer is lost: once the reassembly table and the agent have
//   given up what they held, the mempool has every buffer back.
//
// Seeds: `TestSeeds` (SLUICE_TEST_SEED replays one); a failure names it.

import CShims
import Command
import Control
import Dataplane
import Glibc
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// The inner packets the peer seals under SA `spi` carry eight bytes of
    /// this value (0xE1 for 0x7201, …); nothing else does.
    static func markerByte(_ spi: UInt32) -> UInt8 { 0xE0 | UInt8(truncatingIfNeeded: spi & 0x0F) }
    /// The inbound SAs, their markers' SPIs.
    static let inboundSPIs: [UInt32] = [0x7201, 0x7202, 0x7203, 0x7204]

    /// The IPv6 outbound SA's key material (the others use the peer's, 0x6d × 20):
    /// a packet sealed with another SA's key does not open.
    static let outbound6Key: [UInt8] = Array(repeating: 0x5a, count: 20)

    var hostileConfigText: String {
        let key = "0x" + String(repeating: "6d", count: 20)
        let key6 = "0x" + Self.outbound6Key.map { String($0, radix: 16) }.joined()
        return h.baseConfigText + """

        neighbor 192.0.2.77 lladdr 02:bb:00:00:00:77 port \(h.u)
        port \(h.stack.port)
        port \(h.u) punt \(h.stack.port)
        port \(h.p) resolve on
        sa add spi 0x7201 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) replay-window 64
        sa add spi 0x7202 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) encap udp 4500 4500
        sa add spi 0x7203 dir in src 2001:db8:b::fe dst 2001:db8:b::1 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7204 dir in mode transport aead aes-gcm-128 key \(key)
        sa add spi 0x7301 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7302 dir out src 2001:db8:b::1 dst 2001:db8:b::fe mode tunnel aead aes-gcm-128 key \(key6) encap udp 4500 4500
        sp add dir in src 198.51.100.0/24 dst 10.0.0.0/8 priority 1 action protect spi 0x7201
        sp add dir in src 198.51.101.0/24 dst 10.0.0.0/8 priority 2 action protect spi 0x7202
        sp add dir in src 2001:db8:100::/48 dst ::/0 priority 3 action protect spi 0x7203
        sp add dir in src 192.0.2.254/32 dst 10.1.0.0/16 priority 4 action protect spi 0x7204
        sp add dir in src 203.0.113.0/24 dst 10.0.0.0/8 priority 5 action bypass
        sp add dir in src 0.0.0.0/0 dst 192.0.2.1/32 proto udp dport 500-500 priority 6 action bypass
        sp add dir out src 10.0.0.0/8 dst 198.51.100.0/24 priority 1 action protect spi 0x7301
        sp add dir out src 2001:db8::/32 dst 2001:db8:100::/48 priority 2 action protect spi 0x7302
        sp add dir out src 10.0.0.0/8 dst 203.0.113.0/24 priority 5 action bypass
        sp add dir out src 10.0.0.0/8 dst 8.8.0.0/16 priority 6 action discard
        """
    }

    /// One seed frame per kind, built afresh each time (ESP gets the next
    /// sequence number): the port it arrives on and the bytes.
    func hostileSeeds(_ peer: TunnelPeer) -> [(onProtected: Bool, make: () -> [UInt8])] {
        let u = h.portMAC(h.u), p = h.portMAC(h.p)
        func inner4(_ src: String, _ dst: String, ttl: UInt8 = 30, payload: Int = 40, sa: UInt32 = 0x7201) -> [UInt8] {
            h.frame4(src, dst, ttl: ttl, payload: payload, pattern: .constant(Self.markerByte(sa)), ethDst: u)
        }
        func inner6(_ src: String, _ dst: String, payload: Int = 40, sa: UInt32 = 0x7201) -> [UInt8] {
            h.frame6(src, dst, hopLimit: 30, payload: payload, pattern: .constant(Self.markerByte(sa)), ethDst: u)
        }
        /// An untagged IPv4 frame without options cut in two real fragments,
        /// the first carrying `k` bytes of its payload (a multiple of 8).
        func split(_ f: [UInt8], at k: Int) -> ([UInt8], [UInt8]) {
            let header = Array(f[14..<34]), body = Array(f[34...])
            func piece(_ data: ArraySlice<UInt8>, offset: Int, more: Bool) -> [UInt8] {
                var g = Array(f[0..<14]) + header + Array(data)
                let total = 20 + data.count, v = offset / 8 | (more ? 0x2000 : 0)
                g[14 + 2] = UInt8(total >> 8); g[14 + 3] = UInt8(total & 0xFF)
                g[14 + 6] = UInt8(v >> 8); g[14 + 7] = UInt8(v & 0xFF)
                Self.fixChecksum(&g)
                return g
            }
            return (piece(body[0..<k], offset: 0, more: true), piece(body[k...], offset: k, more: false))
        }
        func nd(_ type: UInt8, from mac: MACAddress, _ src: String, to dst: String, target: String, flags: UInt8 = 0) -> [UInt8] {
            NDMessage(type: type, ethernetSource: mac, source: ipv6(src), destination: ipv6(dst), flags: flags,
                      target: ipv6(target), linkLayer: mac).frame(to: MACAddress(multicast: ipv6(dst)))
        }
        let host = mac("02:aa:00:00:00:09"), router = mac("02:bb:00:00:00:fe")
        final class Last { var frame: [UInt8] = []; var secondFragment: [UInt8] = [] }
        let last = Last()
        let seeds: [(Bool, () -> [UInt8])] = [
            // Unprotected side: ESP for each SA, tunnel and transport, v4 and v6 inside and out.
            (false, { last.frame = peer.frame(spi: 0x7201, inner: inner4("198.51.100.7", "10.1.0.5")); return last.frame }),
            (false, { last.frame }),  // the same again: a replay
            (false, { peer.frame(spi: 0x7201, inner: inner4("198.51.100.7", "10.0.0.9")) }),  // on p's link: the agent
            (false, { peer.frame(spi: 0x7201, inner: inner4("198.51.100.7", "10.1.0.5", ttl: 1)) }),
            (false, { peer.frame(spi: 0x7201, inner: inner4("198.51.100.7", "10.1.0.5", payload: 1400)) }),
            (false, { peer.frame(spi: 0x7201, inner: inner6("2001:db8:100::7", "2001:db8:1::5")) }),  // not 0x7201's traffic
            (false, { peer.frame(spi: 0x7202, inner: inner4("198.51.101.7", "10.1.0.5", sa: 0x7202), udp: (4500, 4500)) }),
            (false, { peer.frame(spi: 0x7203, inner: inner6("2001:db8:100::7", "2001:db8:a::9", sa: 0x7203), outer6: true) }),
            (false, { peer.frame(spi: 0x7203, inner: inner6("2001:db8:100::7", "2001:db8:1::5", sa: 0x7203), outer6: true) }),
            (false, { peer.frame(spi: 0x7204, inner: inner4("192.0.2.254", "10.1.0.5", sa: 0x7204), transport: true) }),
            // An ESP packet in two fragments: the first now, the second whenever its seed comes up.
            (false, {
                let (first, second) = split(peer.frame(spi: 0x7201, inner: inner4("198.51.100.7", "10.1.0.5", payload: 200)), at: 64)
                last.secondFragment = second
                return first
            }),
            (false, { last.secondFragment }),
            (false, { self.asFragment(peer.frame(spi: 0x7201, inner: inner4("198.51.100.7", "10.1.0.5", payload: 200)), offset8: 8, more: false) }),
            (false, { peer.frame(spi: 0x7299, inner: inner4("198.51.100.7", "10.1.0.5")) }),  // no such SA
            // IKE, the non-ESP marker, a keepalive, plaintext for each inbound policy, the gateway itself.
            (false, { self.h.frame4("198.51.100.7", "192.0.2.1", transport: .udp(sourcePort: 500, destinationPort: 500), payload: 60, ethDst: u) }),
            (false, { self.h.frame4("198.51.100.7", "192.0.2.1", transport: .udp(sourcePort: 4500, destinationPort: 4500), payload: 40, pattern: .constant(0), ethDst: u) }),
            (false, { self.h.frame4("198.51.100.7", "192.0.2.1", transport: .udp(sourcePort: 4500, destinationPort: 4500), payload: 1, pattern: .constant(0xFF), ethDst: u) }),
            (false, { self.h.frame4("203.0.113.9", "10.1.0.5", ethDst: u) }),
            (false, { self.h.frame4("203.0.113.9", "10.1.0.5", ttl: 1, ethDst: u) }),
            (false, { self.h.frame4("203.0.113.9", "10.1.0.5", payload: 1460, ethDst: u) }),
            (false, { self.h.frame4("198.51.100.7", "10.1.0.5", ethDst: u) }),  // plaintext a protect policy covers
            (false, { self.h.frame4("198.51.100.7", "192.0.2.1", transport: .raw(.icmp), ethDst: u) }),
            (false, { self.h.frame6("2001:db8:200::9", "2001:db8:1::5", ethDst: u) }),
            (false, { self.h.frame4("203.0.113.9", "10.1.0.5", vlan: VLANTag(id: 7), ethDst: u) }),
            (false, { self.asFragment(self.h.frame4("203.0.113.9", "192.0.2.1", payload: 100, ethDst: u), offset8: 0, more: true) }),
            (false, { self.asFragment6(self.h.frame6("2001:db8:200::9", "2001:db8:b::1", payload: 100, ethDst: u), offset8: 0, more: true) }),
            (false, { self.arpFrame(ARPMessage.request, from: router, "192.0.2.254", to: MACAddress.broadcast, target: "192.0.2.1") }),
            (false, { nd(NeighborDiscovery.solicitation, from: router, "2001:db8:b::fe", to: "ff02::1:ff00:1", target: "2001:db8:b::1") }),
            // Protected side: each outbound policy, the agent's ARP and ND, the gateway itself.
            (true, { self.h.frame4("10.1.0.5", "198.51.100.7") }),
            (true, { self.h.frame4("10.1.0.5", "198.51.100.7", payload: 1400) }),
            (true, { self.h.frame4("10.1.0.5", "198.51.100.7", payload: 1470) }),  // too big sealed: PTB
            (true, { self.h.frame4("10.1.0.5", "198.51.100.7", payload: 1470, dontFragment: false) }),
            (true, { self.h.frame4("10.1.0.5", "198.51.100.7", ttl: 1) }),
            (true, { self.h.frame6("2001:db8:1::5", "2001:db8:100::7") }),
            (true, { self.h.frame6("2001:db8:1::5", "2001:db8:100::7", payload: 1450) }),
            (true, { self.h.frame4("10.1.0.5", "203.0.113.9", transport: .tcp(TCPSpec(sourcePort: 4000, destinationPort: 443))) }),
            (true, { self.h.frame4("10.1.0.5", "8.8.8.8") }),
            (true, { self.h.frame4("10.1.0.5", "192.0.2.200") }),  // no policy
            (true, { self.h.frame4("10.1.0.5", "10.0.0.1", transport: .raw(.icmp)) }),
            (true, { self.h.frame4("10.0.0.9", "10.0.0.1", transport: .udp(sourcePort: 68, destinationPort: 67)) }),
            (true, { self.asFragment(self.h.frame4("10.1.0.5", "198.51.100.7", payload: 200), offset8: 0, more: true) }),
            (true, { self.asFragment6(self.h.frame6("2001:db8:1::5", "2001:db8:100::7", payload: 100), offset8: 0, more: true) }),
            (true, { self.arpFrame(ARPMessage.request, from: host, "10.0.0.9", to: MACAddress.broadcast, target: "10.0.0.1") }),
            (true, { self.arpFrame(ARPMessage.reply, from: host, "10.0.0.9", to: p, target: "10.0.0.1", targetMAC: p) }),
            (true, { nd(NeighborDiscovery.solicitation, from: host, "2001:db8:a::9", to: "ff02::1:ff00:1", target: "2001:db8:a::1") }),
            (true, { nd(NeighborDiscovery.advertisement, from: host, "2001:db8:a::9", to: "ff02::1", target: "2001:db8:a::9",
                        flags: NeighborDiscovery.override) }),
        ]
        return seeds.map { (onProtected: $0.0, make: $0.1) }
    }

    /// `frame` changed in 1…4 ways: bits flipped, bytes set, cut, grown, a
    /// header field rewritten, bytes taken out; then, three times in four, its IPv4 header checksum
    /// made right again so that the change reaches past the header check.
    static func mutate(_ frame: [UInt8], rng: inout SplitMix64) -> [UInt8] {
        var b = frame
        for _ in 0...(rng.next() % 4) {
            let at = Int(rng.next() % UInt64(max(b.count, 1)))
            // Half the changes land in the first 64 bytes, where the headers are.
            let head = Int(rng.next() % UInt64(min(max(b.count, 1), 64)))
            switch rng.next() % 10 {
            case 0 where at < b.count: b[at] ^= 1 << (rng.next() % 8)
            case 1 where head < b.count: b[head] ^= 1 << (rng.next() % 8)
            case 2 where head < b.count: b[head] = UInt8(truncatingIfNeeded: rng.next())
            case 3 where at < b.count: b[at] = UInt8(truncatingIfNeeded: rng.next())
            case 4: b = Array(b.prefix(Int(rng.next() % UInt64(b.count + 1))))
            case 5: b += (0..<(1 + rng.next() % 24)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 6, 7, 8:
                // A length, protocol, flags or type field of the usual headers.
                let fields = [12, 14, 14 + 2, 14 + 4, 14 + 6, 14 + 8, 14 + 9, 14 + 20, 14 + 22, 14 + 24, 14 + 28,
                              14 + 40, 14 + 42, 14 + 44, 14 + 48, 14 + 20 + 8, 14 + 40 + 8]
                let f = fields[Int(rng.next() % UInt64(fields.count))]
                if f + 1 < b.count {
                    let special: [UInt16] = [0, 1, 4, 8, 17, 40, 44, 50, 58, 0xFFFF, 0x0800, 0x86DD, 0x0806, 4500, 0x2000, 0x3FFF]
                    let v = rng.next() % 2 == 0 ? special[Int(rng.next() % UInt64(special.count))] : UInt16(truncatingIfNeeded: rng.next())
                    b[f] = UInt8(v >> 8); b[f + 1] = UInt8(v & 0xFF)
                }
            default:
                if b.count > 60 { b.removeSubrange(20..<min(b.count, 20 + Int(rng.next() % 40))) }
            }
        }
        if rng.next() % 4 != 0 && b.count >= 34 && b[12] == 0x08 && b[13] == 0x00 && b[14] >> 4 == 4 && Int(b[14] & 0x0F) * 4 <= b.count - 14 {
            fixChecksum(&b)
        }
        return b
    }

    @Test func hostileFramesAreAccountedNeverLeakAndNeverCrossInTheClear() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText); _ = h.gateway.agentReceive() }
        let text = hostileConfigText
        try h.publish(text)
        _ = h.gateway.agentReceive()  // what an earlier test left
        let session = try h.installSession(text, name: "hostile")
        var now = monotonicSeconds()
        _ = agentTurn(session, now: now)
        // Whatever an earlier test left in the reassembly table expires first.
        var baseline = rte_mempool_avail_count(h.pool)
        for _ in 0..<50 {
            usleep(UInt32(GatewayHarness.reassemblyTimeout * 2.5e6))
            let again = rte_mempool_avail_count(h.pool)
            if again == baseline { break }
            baseline = again
        }
        let peer = try TunnelPeer()
        let seeds = hostileSeeds(peer)
        let ledger = SealedLedger(peers: [0x7301: try TunnelPeer(), 0x7302: try TunnelPeer(keyMaterial: Self.outbound6Key)])
        var outcomes: [String: Int] = [:]
        for seed in TestSeeds.list(fixed: [1, 0x5EED]) {
            var rng = SplitMix64(seed: seed)
            let label = "seed \(TestSeeds.hex(seed))"
            var violations = 0
            var miscounted = 0
            for batch in 0..<400 {
                let onProtected = batch % 2 == 0
                let kinds = seeds.filter { $0.onProtected == onProtected }
                var frames: [[UInt8]] = []
                for _ in 0..<16 {
                    let f = kinds[Int(rng.next() % UInt64(kinds.count))].make()
                    // One in four as built: the valid paths stay busy (ESP keeps authenticating).
                    frames.append(rng.next() % 4 == 0 ? f : Self.mutate(f, rng: &rng))
                }
                frames = frames.filter { !$0.isEmpty }
                let out = try h.inject(frames, on: onProtected ? h.protected : h.unprotected)
                #expect(out.delta.rxPackets == UInt64(frames.count), "\(label) batch \(batch): \(out.delta)")
                // A packet the worker lost (neither sent nor counted) made
                // `inject` wait in vain, and say so; one such burst is enough.
                guard out.delta.settled >= frames.count else { return }
                // Exactly one outcome each: nothing counted twice.
                if out.delta.settled != frames.count {
                    miscounted += 1
                    if miscounted <= 5 {
                        Issue.record("\(label) batch \(batch): \(out.delta.settled) outcomes for \(frames.count) frames: \(out.delta)")
                    }
                }
                for (reason, n) in out.delta.dropsByReason { outcomes[reason.name, default: 0] += Int(n) }
                outcomes["sent", default: 0] += out.allSent
                outcomes["to_agent", default: 0] += Int(out.delta.toAgent)
                outcomes["punted", default: 0] += Int(out.delta.punted)
                outcomes["reassembled", default: 0] += Int(out.delta.reassembled)
                outcomes["icmp_errors", default: 0] += Int(out.delta.icmpErrors)
                for (port, sent) in out.sent {
                    for f in sent {
                        if port == h.u && f.count > 34 && (Array(f[26..<30]) == [192, 0, 2, 1] || f[12] == 0x86) {
                            outcomes["sealed", default: 0] += 1  // the only v6 that may leave there is 0x7302's
                        }
                        if port == h.p && Self.marker(in: f) != nil { outcomes["opened", default: 0] += 1 }
                        if Self.isICMPError(f) { outcomes["icmp_errors_seen", default: 0] += 1 }
                        if let why = hostileViolation(f, port: port, inputs: frames, arrivedProtected: onProtected, ledger: ledger) {
                            violations += 1
                            if violations <= 5 {
                                Issue.record("\(label) batch \(batch): port \(port) sent \(why): \(hexString(f))")
                            }
                        }
                    }
                }
                // The gateway's ESP packets that left in fragments, made whole and opened.
                for why in Self.fragmentedESPViolations(out.sent[h.u] ?? [], ledger: ledger) {
                    guard let why else { continue }
                    violations += 1
                    if violations <= 5 { Issue.record("\(label) batch \(batch): port \(h.u) sent \(why)") }
                }
                if batch % 8 == 7 {
                    now += 0.25
                    let sent = agentTurn(session, now: now)
                    for (port, frames) in sent {
                        for f in frames {
                            if let why = hostileViolation(f, port: port, inputs: [], arrivedProtected: nil, ledger: ledger) {
                                violations += 1
                                if violations <= 5 { Issue.record("\(label) batch \(batch): the agent sent on port \(port) \(why): \(hexString(f))") }
                            }
                        }
                    }
                }
            }
            #expect(violations == 0, "\(label): \(violations) frames broke a rule")
            #expect(miscounted == 0, "\(label): \(miscounted) bursts with outcomes counted twice")
        }
        // Whatever was held is given up: the agent's questions time out, the
        // reassembly table's datagrams expire (0.2 s in this harness).
        for _ in 0..<8 {
            now += 10
            _ = agentTurn(session, now: now)
        }
        let deadline = monotonicSeconds() + 5
        var available = rte_mempool_avail_count(h.pool)
        while available != baseline && monotonicSeconds() < deadline {
            usleep(20_000)
            now += 10
            _ = agentTurn(session, now: now)
            available = rte_mempool_avail_count(h.pool)
        }
        #expect(available == baseline, "packet buffers lost: \(Int(baseline) - Int(available)) (outcomes \(outcomes))")
        outcomes["sealed_opened_by_peer"] = ledger.opened
        outcomes["sealed_fragments_made_whole"] = ledger.openedWhole
        // The run reached the paths it is meant to: ESP opened and sealed, the
        // agent and the stack fed, policies applied, errors sent.
        for outcome in ["sealed", "sealed_opened_by_peer", "sealed_fragments_made_whole", "opened", "reassembled", "icmp_errors", "to_agent", "punted", "esp_authentication_failed", "esp_replayed", "malformed",
                        "bad_checksum", "policy_discard", "plaintext_protected", "ttl_exceeded", "packet_too_big"] {
            #expect(outcomes[outcome, default: 0] > 0, "no \(outcome) in \(outcomes)")
        }
        print("hostile frames: \(outcomes.sorted { $0.key < $1.key })")
    }

    /// The inbound SA whose marker `frame` holds (eight bytes of its value), if any.
    static func marker(in frame: [UInt8]) -> UInt32? {
        inboundSPIs.first { spi in
            let m = [UInt8](repeating: markerByte(spi), count: 8)
            return frame.count >= 8 && (0...(frame.count - 8)).contains { Array(frame[$0..<($0 + 8)]) == m }
        }
    }

    /// Whether `f` is an untagged ICMP or ICMPv6 error (not an echo, not ND).
    static func isICMPError(_ f: [UInt8]) -> Bool {
        guard f.count >= 14 + 48 else { return false }
        if f[12] == 0x08 && f[13] == 0x00 && f[14 + 9] == 1 {
            return [3, 11, 12].contains(f[14 + Int(f[14] & 0x0F) * 4])
        }
        return f[12] == 0x86 && f[13] == 0xDD && f[14 + 6] == 58 && (1...4).contains(f[14 + 40])
    }

    /// Why `f`, sent on `port` during a burst of `inputs` that arrived on the
    /// protected port (or the unprotected one; nil: the agent's turn), breaks
    /// a rule (nil: it does not). ESP the gateway sent is opened with
    /// `ledger`'s peer and its sequence number recorded there.
    func hostileViolation(_ f: [UInt8], port: UInt16, inputs: [[UInt8]], arrivedProtected: Bool?,
                          ledger: SealedLedger) -> String? {
        if port == h.stack.port {
            return inputs.contains(f) ? nil : "a frame to the local stack that is none of the inputs"
        }
        guard f.count >= 14 else { return "a runt" }
        guard f.count <= 1514 else { return "a frame over the MTU" }
        guard Array(f[6..<12]) == h.portMAC(port).array else { return "a foreign source MAC" }
        let type = UInt16(f[12]) << 8 | UInt16(f[13])
        if type == 0x0806 {
            guard port == h.p, let a = ARPMessage(frame: f), a.senderIP == ipv4("10.0.0.1"), a.senderMAC == h.portMAC(port) else {
                return "ARP that is not the agent's"
            }
            return nil
        }
        let ip = Array(f[14...])
        let v4 = type == 0x0800
        guard v4 || type == 0x86DD else { return "EtherType \(type)" }
        guard v4 ? ip.count >= 20 && ip[0] >> 4 == 4 : ip.count >= 40 && ip[0] >> 4 == 6 else { return "an IP header cut short" }
        if v4 {
            let hlen = Int(ip[0] & 0x0F) * 4
            guard hlen >= 20, hlen <= ip.count, InternetChecksum.checksum(Array(ip[0..<hlen])) == 0 else { return "a bad IPv4 header" }
            guard Int(ip[2]) << 8 | Int(ip[3]) <= ip.count, ip[8] > 0 else { return "an IPv4 length past the frame or TTL 0" }
        } else {
            guard 40 + (Int(ip[4]) << 8 | Int(ip[5])) <= ip.count, ip[7] > 0 else { return "an IPv6 length past the frame or hop limit 0" }
        }
        let src = v4 ? Array(ip[12..<16]) : Array(ip[8..<24])
        let dst = v4 ? Array(ip[16..<20]) : Array(ip[24..<40])
        var proto = v4 ? ip[9] : ip[6]
        var l4 = v4 ? Int(ip[0] & 0x0F) * 4 : 40
        // A fragment: the pieces after the first carry no headers to check.
        var laterFragment = v4 && (Int(ip[6]) << 8 | Int(ip[7])) & 0x1FFF != 0
        if !v4 && proto == 44 && ip.count >= 48 {
            laterFragment = (Int(ip[42]) << 8 | Int(ip[43])) & 0xFFF8 != 0
            proto = ip[40]
            l4 = 48
        }
        if port == h.u {
            if within(src, "10.0.0.0/8") && within(dst, "203.0.113.0/24") { return nil }  // outbound bypass
            let ours = v4 ? within(src, "192.0.2.1/32") : within(src, "2001:db8:b::1/128")
            guard ours else { return "plaintext no bypass policy allows" }
            if laterFragment { return proto == 50 || proto == 17 ? nil : "a fragment from the gateway that is not ESP" }
            let espAt = proto == 50 ? l4 : (proto == 17 && ip.count >= l4 + 8 && ip[l4 + 2] == 0x11 && ip[l4 + 3] == 0x94 ? l4 + 8 : -1)
            guard espAt >= 0, ip.count >= espAt + 8 else { return "a packet from the gateway that is not ESP" }
            let spi = ip[espAt..<(espAt + 4)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard spi == (v4 ? 0x7301 : 0x7302) else { return "ESP under SPI \(String(spi, radix: 16)), not the outbound SA's" }
            let sequence = ip[(espAt + 4)..<(espAt + 8)].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard ledger.used[spi, default: []].insert(sequence).inserted else {
                return "sequence number \(sequence) of SA \(String(spi, radix: 16)) sent twice"
            }
            // The IV: the 64-bit sequence number (no ESN: its high half 0), so never repeated either.
            guard ip.count >= espAt + 16, ip[(espAt + 8)..<(espAt + 12)].allSatisfy({ $0 == 0 }),
                  ip[(espAt + 12)..<(espAt + 16)].elementsEqual(ip[(espAt + 4)..<(espAt + 8)]) else {
                return "ESP under SA \(String(spi, radix: 16)) whose IV is not its sequence number"
            }
            // The first piece of a packet the gateway cut: the rest is in another frame.
            if v4 ? ip[6] & 0x20 != 0 : ip[6] == 44 { return nil }
            let end = v4 ? Int(ip[2]) << 8 | Int(ip[3]) : 40 + (Int(ip[4]) << 8 | Int(ip[5]))
            guard end >= espAt else { return "an ESP packet whose IP length ends inside its headers" }
            return Self.sealedViolation(spi: spi, esp: Array(ip[espAt..<end]), ledger: ledger)
        }
        // The protected port.
        if v4 && within(src, "203.0.113.0/24") && within(dst, "10.0.0.0/8") { return nil }  // inbound bypass
        if v4 ? within(src, "10.0.0.1/32") : (within(src, "2001:db8:a::1/128") || within(src, "fe80::/10")) {
            // The gateway's own: ICMP errors and Neighbor Discovery.
            guard proto == (v4 ? 1 : 58), ip.count > l4 else { return "protocol \(proto) from the gateway's address" }
            if !v4 && (133...137).contains(ip[l4]) { return nil }
            guard Self.isICMPError(f) else { return "ICMP type \(ip[l4]) from the gateway's address" }
            // An error about a packet that came from the unprotected side
            // quotes it: only traffic a bypass policy lets in may be quoted.
            if arrivedProtected == false {
                let q = Array(ip[(l4 + 8)...])
                guard q.count >= 20, q[0] >> 4 == 4, within(Array(q[12..<16]), "203.0.113.0/24"), within(Array(q[16..<20]), "10.0.0.0/8")
                else { return "an ICMP error on the protected side quoting what the unprotected side sent" }
            }
            return nil
        }
        guard let spi = Self.marker(in: f) else { return "plaintext no SA authenticated and no bypass policy allows" }
        // Within the selectors of the SA that sealed it (its policy's).
        let selectorsHold: Bool
        switch spi {
        case 0x7201: selectorsHold = v4 && within(src, "198.51.100.0/24") && within(dst, "10.0.0.0/8")
        case 0x7202: selectorsHold = v4 && within(src, "198.51.101.0/24") && within(dst, "10.0.0.0/8")
        case 0x7203: selectorsHold = !v4 && within(src, "2001:db8:100::/48")
        default: selectorsHold = v4 && within(src, "192.0.2.254/32") && within(dst, "10.1.0.0/16")
        }
        return selectorsHold ? nil : "a packet opened by SA \(String(spi, radix: 16)) outside its selectors"
    }

    /// Why `esp` (a whole ESP packet of outbound SA `spi`, from its SPI to its
    /// ICV) breaks a rule, opened by that SA's far end (nil: it does not): it
    /// must authenticate, be padded 1, 2, 3…, and carry one whole packet
    /// within the SA's own outbound policy.
    static func sealedViolation(spi: UInt32, esp: [UInt8], ledger: SealedLedger) -> String? {
        let name = "ESP under SA \(String(spi, radix: 16))"
        guard esp.count >= 16 + 2 + 16, let (_, plain) = ledger.peers[spi]?.open(esp) else {
            return "\(name) that the far end cannot authenticate with its key"
        }
        ledger.opened += 1
        // The trailer: padding 1, 2, 3…, its length, the next header.
        let pad = Int(plain[plain.count - 2])
        guard plain.count >= 2 + pad, plain[(plain.count - 2 - pad)..<(plain.count - 2)].elementsEqual((0..<pad).map { UInt8($0 + 1) }) else {
            return "\(name) with bad padding"
        }
        let inner = Array(plain[0..<(plain.count - 2 - pad)])
        let next = plain[plain.count - 1]
        // What the SA carries: a whole packet within its own policy's selectors.
        if spi == 0x7301 {
            guard next == 4, inner.count >= 20, inner[0] >> 4 == 4, Int(inner[2]) << 8 | Int(inner[3]) == inner.count,
                  within(Array(inner[12..<16]), "10.0.0.0/8"), within(Array(inner[16..<20]), "198.51.100.0/24")
            else { return "\(name) sealed a packet outside its policy: \(hexString(inner))" }
        } else {
            guard next == 41, inner.count >= 40, inner[0] >> 4 == 6, 40 + (Int(inner[4]) << 8 | Int(inner[5])) == inner.count,
                  within(Array(inner[8..<24]), "2001:db8::/32"), within(Array(inner[24..<40]), "2001:db8:100::/48")
            else { return "\(name) sealed a packet outside its policy: \(hexString(inner))" }
        }
        return nil
    }

    /// The gateway's ESP packets that `frames` (what the unprotected port
    /// sent in one burst) carry in fragments, made whole again: for each, a
    /// violation (nil: none). Pieces are matched by identification; a set
    /// that does not make a whole datagram is reported.
    static func fragmentedESPViolations(_ frames: [[UInt8]], ledger: SealedLedger) -> [String?] {
        // identification → (the first piece's header fields, pieces: offset, more, payload)
        var sets: [[UInt8]: (v4: Bool, pieces: [(offset: Int, more: Bool, data: ArraySlice<UInt8>)])] = [:]
        for f in frames where f.count >= 14 + 20 {
            let ip = Array(f[14...])
            if f[12] == 0x08 && f[13] == 0x00 && Array(ip[12..<16]) == [192, 0, 2, 1] {
                let flags = Int(ip[6]) << 8 | Int(ip[7])
                guard flags & 0x3FFF != 0 else { continue }  // not a fragment
                let hlen = Int(ip[0] & 0x0F) * 4
                let total = Int(ip[2]) << 8 | Int(ip[3])
                guard hlen >= 20, total >= hlen, total <= ip.count else { continue }  // the per-frame rules report it
                sets[[4] + Array(ip[4..<6]), default: (true, [])].pieces.append(
                    ((flags & 0x1FFF) * 8, flags & 0x2000 != 0, ip[hlen..<total]))
            } else if f[12] == 0x86 && f[13] == 0xDD && ip.count >= 48 && ip[6] == 44 {
                let total = 40 + (Int(ip[4]) << 8 | Int(ip[5]))
                guard total >= 48, total <= ip.count else { continue }
                let field = Int(ip[42]) << 8 | Int(ip[43])
                sets[[6] + Array(ip[44..<48]), default: (false, [])].pieces.append(
                    (field & 0xFFF8, field & 1 != 0, ip[48..<total]))
            }
        }
        return sets.values.map { set in
            let pieces = set.pieces.sorted { $0.offset < $1.offset }
            var whole: [UInt8] = []
            for (k, p) in pieces.enumerated() {
                guard p.offset == whole.count, p.more == (k < pieces.count - 1) else {
                    return "fragments of an ESP packet that do not make it whole: \(pieces.map { ($0.offset, $0.more, $0.data.count) })"
                }
                whole += p.data
            }
            // IPv4: ESP itself (0x7301); IPv6: ESP in UDP (0x7302).
            let esp = set.v4 ? whole : Array(whole.dropFirst(8))
            guard esp.count >= 4 else { return "a fragmented datagram too short for ESP" }
            let spi = esp[0..<4].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
            guard spi == (set.v4 ? 0x7301 : 0x7302) else { return "fragmented ESP under SPI \(String(spi, radix: 16))" }
            ledger.openedWhole += 1
            return sealedViolation(spi: spi, esp: esp, ledger: ledger)
        }
    }
}

/// Whether the address in `a` (4 or 16 bytes) lies in `prefix`.
fileprivate func within(_ a: [UInt8], _ prefix: String) -> Bool {
    IPPrefix(prefix)!.contains(a.count == 4 ? .v4(IPv4Address(a[0], a[1], a[2], a[3])) : .v6(IPv6Address(bytes: a)))
}

func hexString(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}

/// The hostile-frame test's record of the ESP the gateway sent: the peers
/// that open it, the sequence numbers each outbound SA used, and how many
/// packets the peers opened.
final class SealedLedger {
    /// The far end of each outbound SA, with that SA's key.
    let peers: [UInt32: TunnelPeer]
    var used: [UInt32: Set<UInt32>] = [:]
    var opened = 0
    /// Of those, packets that left in fragments (made whole again to be opened).
    var openedWhole = 0

    init(peers: [UInt32: TunnelPeer]) { self.peers = peers }
}
