// IPsec traffic passing through the gateway between other hosts (RFC 4301
// §5.2): only ESP and NAT-T traffic addressed to the gateway itself goes to
// the SAD; ESP, IKE on port 4500, NAT keepalives and ESP fragments on their
// way to someone else are ordinary traffic for the inbound SPD. Before this
// was done they were all dropped as the gateway's own (`esp_no_sa`, …), so a
// VPN client behind the gateway could not reach its server.

import Command
import Control
import Dataplane
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// The suite's base configuration plus two inbound SAs to the gateway's
    /// unprotected address (one ESP, one ESP in UDP 4500, which makes 4500 a
    /// NAT-T port) and an inbound SPD: a protected peer network,
    /// transit ESP and NAT-T from 203.0.113.0/24 to the protected hosts
    /// allowed, and nothing else.
    func transitSession() throws -> ControlSession {
        let key = "0x" + String(repeating: "6d", count: 20)
        let text = h.baseConfigText + """

        sa add spi 0x7001 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 1 action protect spi 0x7001
        sa add spi 0x7003 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) encap udp 4500 4500
        sp add dir in src 198.51.100.0/24 dst 10.2.0.0/16 priority 2 action protect spi 0x7003
        sp add dir in src 203.0.113.0/24 dst 10.1.0.0/16 proto 50 priority 5 action bypass
        sp add dir in src 203.0.113.0/24 dst 10.1.0.0/16 proto udp dport 4500-4500 priority 6 action bypass
        sp add dir out src 10.1.0.0/16 dst 203.0.113.0/24 priority 5 action bypass
        """
        return try h.installSession(text, name: "transit")
    }

    func esp(_ src: String, _ dst: String, spi: UInt32 = 0x7001, fragment: Bool = false) -> [UInt8] {
        var f = h.frame4(src, dst, transport: .raw(.esp), payload: 64, pattern: .incrementing(from: 0x10), ethDst: h.portMAC(h.u))
        f[14 + 20] = UInt8(spi >> 24); f[14 + 21] = UInt8(spi >> 16 & 0xFF)
        f[14 + 22] = UInt8(spi >> 8 & 0xFF); f[14 + 23] = UInt8(spi & 0xFF)
        if fragment { setMoreFragments(&f) }
        return f
    }

    func natT(_ src: String, _ dst: String, payload: Int, byte: UInt8) -> [UInt8] {
        h.frame4(src, dst, transport: .udp(sourcePort: 4500, destinationPort: 4500), payload: payload,
                 pattern: .constant(byte), ethDst: h.portMAC(h.u))
    }

    /// Sets MF on an untagged IPv4 frame and fixes the header checksum.
    func setMoreFragments(_ f: inout [UInt8]) {
        f[14 + 6] |= 0x20
        Self.fixChecksum(&f)
    }

    /// ESP, IKE over 4500 (non-ESP marker), a keepalive and an ESP fragment
    /// from 203.0.113.9 to a protected host are forwarded like any bypassed
    /// packet, even with the SPI of one of the gateway's own SAs.
    @Test func transitIPsecIsForwardedByPolicy() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try transitSession()
        try expectForwarded([
            (esp("203.0.113.9", "10.1.0.5"), toProtected4, "transit ESP, the SPI of an inbound SA of ours"),
            (esp("203.0.113.9", "10.1.0.5", spi: 0xDEAD_BEEF), toProtected4, "transit ESP, unknown SPI"),
            (esp("203.0.113.9", "10.1.0.5", fragment: true), toProtected4, "transit ESP fragment"),
            (natT("203.0.113.9", "10.1.0.5", payload: 40, byte: 0), toProtected4, "transit IKE on 4500"),
            (natT("203.0.113.9", "10.1.0.5", payload: 1, byte: 0xFF), toProtected4, "transit NAT keepalive"),
            (natT("203.0.113.9", "10.1.0.5", payload: 40, byte: 0x5A), toProtected4, "transit ESP in UDP"),
        ], on: h.unprotected)
    }

    /// IPsec not addressed to the gateway that the inbound SPD does not let
    /// through meets the SPD's verdict: no policy → discarded. A protect
    /// policy means it should have been ESP under one of the gateway's SAs
    /// (transport mode takes ESP addressed to protected hosts), so it keeps
    /// its ESP counter: no SA, or what `classify` found; plaintext there is
    /// `plaintext_protected` as before. (With a transport-mode SA installed,
    /// such an ESP fragment is reassembled instead: ReassemblyTests.)
    @Test func transitIPsecMeetsTheInboundSPD() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try transitSession()
        try expectDropped([esp("192.0.2.77", "10.1.0.5"), natT("192.0.2.77", "10.1.0.5", payload: 1, byte: 0xFF)],
                          reason: .policyDiscard, on: h.unprotected)
        try expectDropped([esp("198.51.100.9", "10.1.0.5", spi: 0x1234_5678)], reason: .esp(.noSA), on: h.unprotected)
        try expectDropped([natT("198.51.100.9", "10.1.0.5", payload: 40, byte: 0)], reason: .esp(.notESP), on: h.unprotected)
        try expectDropped([natT("198.51.100.9", "10.1.0.5", payload: 1, byte: 0xFF)], reason: .esp(.natKeepalive), on: h.unprotected)
        try expectDropped([esp("198.51.100.9", "10.1.0.5", fragment: true)], reason: .esp(.fragmented), on: h.unprotected)
        try expectDropped([h.frame4("198.51.100.9", "10.1.0.5", ethDst: h.portMAC(h.u))], reason: .plaintextProtected,
                          on: h.unprotected)
    }

    /// The same packets addressed to the gateway stay the gateway's own
    /// business, with their own counters.
    @Test func ipsecForTheGatewayKeepsItsCounters() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try transitSession()
        try expectDropped([esp("203.0.113.9", "192.0.2.1", spi: 0xDEAD_BEEF), esp("192.0.2.254", "192.0.2.1", spi: 0x7002)],
                          reason: .esp(.noSA), on: h.unprotected)
        // (An ESP fragment to the gateway is reassembled: ReassemblyTests.)
        try expectDropped([natT("192.0.2.254", "192.0.2.1", payload: 40, byte: 0)], reason: .esp(.notESP), on: h.unprotected)
        try expectDropped([natT("192.0.2.254", "192.0.2.1", payload: 1, byte: 0xFF)], reason: .esp(.natKeepalive), on: h.unprotected)
        // The SA's own traffic still goes to the SA: a forged packet fails authentication.
        try expectDropped([esp("192.0.2.254", "192.0.2.1")], reason: .esp(.authenticationFailed), on: h.unprotected)
    }
}

extension EALSuites.GatewayTests {
    /// 1,200 random frames on the unprotected side: ESP (the gateway's SPIs
    /// and others, short ones, fragments), UDP on 4500 (keepalives, IKE,
    /// ESP in UDP), other UDP and TCP; from peers, transit sources and
    /// martians; to the gateway's addresses, protected hosts and elsewhere;
    /// TTL 64 or 1. Exactly the frames the inbound SPD bypasses are forwarded
    /// (from 203.0.113.0/24 to 10.1.0.0/16, ESP or UDP to 4500, TTL > 1),
    /// each intact and out of the protected port; everything else is dropped;
    /// every frame is counted once.
    @Test func randomIPsecTrafficMeetsItsFate() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try transitSession()
        var rng = SplitMix64(seed: 0x7A45_1701)
        func pick<T>(_ a: [T]) -> T { a[Int(rng.next() % UInt64(a.count))] }
        let sources = ["203.0.113.9", "203.0.113.200", "198.51.100.9", "192.0.2.254", "192.0.2.254", "192.0.2.77",
                       "127.0.0.1", "224.0.0.1", "0.0.0.1"]
        let destinations = ["10.1.0.5", "10.1.9.9", "192.0.2.1", "10.0.0.1", "198.51.100.50"]
        var frames: [[UInt8]] = []
        var forwarded: [[UInt8]] = []
        for i in 0..<1200 {
            let src = pick(sources), dst = pick(destinations)
            let ttl: UInt8 = rng.next() % 8 == 0 ? 1 : 64
            let kind = rng.next() % 6
            var f: [UInt8]
            switch kind {
            case 0, 1:  // ESP, maybe short, maybe a first fragment
                f = h.frame4(src, dst, ttl: ttl, id: UInt16(i), transport: .raw(.esp), payload: 4 * Int(rng.next() % 23),
                             pattern: .pseudoRandom(seed: rng.next()), ethDst: h.portMAC(h.u))
                if f.count >= 38 {
                    let spi: UInt32 = pick([0x7001, 0x7001, 0x7003, 0xDEAD_BEEF, UInt32(truncatingIfNeeded: rng.next())])
                    for k in 0..<4 { f[34 + k] = UInt8(truncatingIfNeeded: spi >> (24 - 8 * k)) }
                }
                if rng.next() % 5 == 0 { setMoreFragments(&f) }
            case 2, 3:  // UDP 4500: keepalive, IKE (non-ESP marker), ESP in UDP
                let sub = rng.next() % 3
                f = h.frame4(src, dst, ttl: ttl, id: UInt16(i), transport: .udp(sourcePort: 4500, destinationPort: 4500),
                             payload: sub == 0 ? 1 : 20 + Int(rng.next() % 60),
                             pattern: sub == 0 ? .constant(0xFF) : (sub == 1 ? .constant(0) : .pseudoRandom(seed: rng.next())),
                             ethDst: h.portMAC(h.u))
            case 4:
                f = h.frame4(src, dst, ttl: ttl, id: UInt16(i), transport: .udp(sourcePort: 5353, destinationPort: 53),
                             payload: 30, ethDst: h.portMAC(h.u))
            default:
                f = h.frame4(src, dst, ttl: ttl, id: UInt16(i), transport: .tcp(TCPSpec(sourcePort: 40000, destinationPort: 443)),
                             payload: 10, ethDst: h.portMAC(h.u))
            }
            frames.append(f)
            let ipsecLike = kind <= 3
            if src.hasPrefix("203.0.113.") && dst.hasPrefix("10.1.") && ipsecLike && ttl > 1 { forwarded.append(f) }
        }
        var sent: [[UInt8]] = []
        var total = CounterDelta()
        for start in stride(from: 0, to: frames.count, by: 48) {
            let out = try h.inject(Array(frames[start..<min(start + 48, frames.count)]), on: h.unprotected)
            #expect(out.sent[h.u]?.isEmpty ?? true, "nothing goes back out of the unprotected port")
            sent += out.sent[h.p] ?? []
            total = total + out.delta
        }
        // ESP first fragments to the gateway wait for pieces that never come:
        // once given up, each is one reassembly_failed drop.
        let beforeTimeout = h.totals()
        waitForReassemblyTimeout()
        let late = (h.totals() - beforeTimeout)
        for r in late.drops.indices { total.drops[r] += late.drops[r] }
        #expect(total.fragments > 0 && total.reassembled == 0, "\(total)")
        #expect(total.drops[DropReason.reassemblyFailed.rawValue] == total.fragments, "\(total)")
        #expect(total.rxPackets == UInt64(frames.count) && total.txPackets + total.totalDrops == total.rxPackets, "\(total)")
        #expect(forwarded.count > 50, "the mix must forward a fair share: \(forwarded.count)")
        #expect(sent.count == forwarded.count, "forwarded \(sent.count), expected \(forwarded.count): \(total)")
        var remaining = sent
        for f in forwarded {
            let want = expectedForward(f, toProtected4)
            if let i = remaining.firstIndex(of: want) { remaining.remove(at: i) } else {
                Issue.record("not forwarded intact: \(f.prefix(40).map { String(format: "%02x", $0) }.joined())")
            }
        }
        // Every kind of refusal was met.
        for reason: DropReason in [.martianSource, .policyDiscard, .plaintextProtected, .ttlExceeded,
                                   .esp(.noSA), .esp(.authenticationFailed), .esp(.natKeepalive), .esp(.notESP),
                                   .esp(.fragmented), .esp(.malformed)] {
            #expect(total.drops[reason.rawValue] > 0, "never dropped as \(reason): \(total)")
        }
    }
}
