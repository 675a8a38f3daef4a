// The local stack (`port N punt M`): what is the gateway's own — ARP,
// link-scoped IPv4 and IPv6 (Neighbor Discovery, DHCP, VRRP), IP addressed
// to the gateway, IKE behind the non-ESP marker — leaves by port M exactly
// as it arrived on N, where it was dropped before; what arrives on M leaves
// by N as it is. Forwarded and ESP traffic is untouched. The same frames
// without `punt` are dropped under their old reasons (negative control).

import Command
import Control
import Dataplane
import IPsec
import Packet
import Testing

/// A MAC address's six bytes.
func macBytes(_ m: MACAddress) -> [UInt8] {
    let b = m.bytes
    return [b.0, b.1, b.2, b.3, b.4, b.5]
}

extension EALSuites.GatewayTests {
    /// An ARP request (EtherType 0x0806) for `target` from the unprotected neighbour.
    func arpRequest(for target: [UInt8]) -> [UInt8] {
        let host = macBytes(GatewayHarness.hostMAC)
        var f = [UInt8](repeating: 0xFF, count: 6) + host + [0x08, 0x06]
        f += [0x00, 0x01, 0x08, 0x00, 6, 4, 0x00, 0x01] + host
        f += [192, 0, 2, 254] + [UInt8](repeating: 0, count: 6) + target
        return f + [UInt8](repeating: 0, count: 60 - f.count)  // Ethernet minimum
    }

    /// Frames on u that are the gateway's own, and the drop reason each had
    /// before there was a local stack.
    var ownFrames: [(frame: [UInt8], was: DropReason, what: String)] {
        let u = h.portMAC(h.u)
        return [
            (arpRequest(for: [192, 0, 2, 1]), .unsupportedEthertype, "ARP request"),
            (h.frame6("fe80::2", "ff02::1:ff00:1", hopLimit: 255, transport: .raw(IPProtocol(58)), ethDst: u),
             .martianSource, "neighbor solicitation (link-local source)"),
            (h.frame6("::", "ff02::1:ff00:1", hopLimit: 255, transport: .raw(IPProtocol(58)), ethDst: u),
             .martianSource, "duplicate address detection (unspecified source)"),
            (h.frame4("0.0.0.0", "255.255.255.255", transport: .udp(sourcePort: 68, destinationPort: 67), ethDst: u),
             .martianSource, "DHCP discover"),
            (h.frame4("192.0.2.254", "224.0.0.18", ttl: 255, transport: .raw(IPProtocol(112)), ethDst: u),
             .martian, "VRRP advertisement"),
            (h.frame4("198.51.100.7", "192.0.2.1", transport: .udp(sourcePort: 500, destinationPort: 500), ethDst: u),
             .local, "IKE to the gateway"),
            (h.frame4("198.51.100.7", "192.0.2.1", ttl: 1, transport: .udp(sourcePort: 33434, destinationPort: 33434), ethDst: u),
             .ttlExceeded, "traceroute's last probe (TTL 1)"),
            (h.frame6("2001:db8:100::7", "2001:db8:b::1", transport: .udp(sourcePort: 500, destinationPort: 500), ethDst: u),
             .local, "IKE to the gateway over IPv6"),
        ]
    }

    @Test func localStackTakesTheGatewaysOwnFrames() throws {
        defer { try? h.publish(h.baseConfigText) }
        let own = ownFrames
        // Without a stack: dropped, one by one under the old reason.
        refillICMPBudget()
        for (frame, was, what) in own {
            let out = try h.inject([frame], on: h.unprotected)
            #expect(out.delta.dropsByReason == [was: 1] && out.delta.punted == 0 && (out.sent[h.stack.port] ?? []).isEmpty,
                    "\(what), no stack: \(out.delta)")
        }
        try h.publish(h.baseConfigText + "\nport \(h.stack.port)\nport \(h.u) punt \(h.stack.port)\n")
        let out = try h.inject(own.map(\.frame), on: h.unprotected)
        #expect(out.delta.punted == UInt64(own.count) && out.delta.totalDrops == 0, "\(out.delta)")
        let taken = out.sent[h.stack.port] ?? []
        #expect(taken.count == own.count, "\(taken.count) frames on the stack's port")
        for (i, (frame, _, what)) in own.enumerated() where i < taken.count {
            #expect(taken[i] == frame, "\(what): the stack gets the frame as it arrived")
        }
        #expect((out.sent[h.p] ?? []).isEmpty && (out.sent[h.u] ?? []).isEmpty)
        // Transit traffic still goes its way.
        let transit = h.frame4("198.51.100.7", "10.1.2.3", ethDst: h.portMAC(h.u))
        let forwarded = try h.inject([transit], on: h.unprotected)
        #expect(forwarded.sent[h.p]?.count == 1 && forwarded.delta.punted == 0, "\(forwarded.delta)")
        // The protected port has no stack: its ARP is still dropped.
        try expectDropped([arpRequest(for: [10, 0, 0, 1])], reason: .unsupportedEthertype, on: h.protected)

        // What the stack sends leaves by u, byte for byte (its ARP reply, IKE).
        var reply = macBytes(GatewayHarness.unprotectedNeighbor4.1) + macBytes(h.portMAC(h.u)) + [0x08, 0x06]
        reply += [UInt8](repeating: 0x5A, count: 46)
        let ike = h.frame4("192.0.2.1", "198.51.100.7", ttl: 64, transport: .udp(sourcePort: 500, destinationPort: 500),
                           ethDst: GatewayHarness.unprotectedNeighbor4.1)
        let sent = try h.inject([reply, ike], on: h.stack)
        #expect(sent.sent[h.u] == [reply, ike] && sent.delta.fromStack == 2 && sent.delta.totalDrops == 0, "\(sent.delta)")
        #expect((sent.sent[h.stack.port] ?? []).isEmpty && (sent.sent[h.p] ?? []).isEmpty)
    }

    @Test func localStackOnTheIPsecPaths() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let key = "0x" + String(repeating: "6d", count: 20)
        let text = h.baseConfigText + """

        port \(h.stack.port)
        port \(h.u) punt \(h.stack.port)
        sa add spi 0x7105 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7106 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7107 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key) encap udp 4500 4500
        sp add dir in src 0.0.0.0/0 dst 192.0.2.1/32 proto udp dport 500-500 priority 1 action bypass
        sp add dir in src 198.51.101.0/24 dst 10.1.0.0/16 priority 4 action protect spi 0x7107
        sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 priority 3 action protect spi 0x7105
        sp add dir out src 10.1.0.0/16 dst 198.51.100.0/24 priority 3 action protect spi 0x7106
        """
        try h.publish(text)  // the ports' forwarding state, `punt` included
        _ = try h.installSession(text, name: "punt")
        let u = h.portMAC(h.u)
        // IKE the inbound SPD bypasses: to the stack with its TTL as it came
        // (the routing path took one off; given back, checksum and all).
        let ike = h.frame4("198.51.100.7", "192.0.2.1", ttl: 9, transport: .udp(sourcePort: 500, destinationPort: 500), ethDst: u)
        // IKE on the NAT-traversal port (0x7107's): the non-ESP marker, then the IKE header.
        let natIKE = h.frame4("198.51.100.7", "192.0.2.1", transport: .udp(sourcePort: 4500, destinationPort: 4500),
                              payload: 40, pattern: .constant(0), ethDst: u)
        let own = [arpRequest(for: [192, 0, 2, 1]), ike, natIKE,
                   h.frame6("fe80::2", "ff02::1:ff00:1", hopLimit: 255, transport: .raw(IPProtocol(58)), ethDst: u),
                   h.frame4("192.0.2.254", "224.0.0.18", ttl: 255, transport: .raw(IPProtocol(112)), ethDst: u)]
        let out = try h.inject(own, on: h.unprotected)
        #expect(out.delta.punted == UInt64(own.count) && out.delta.totalDrops == 0, "\(out.delta)")
        let taken = out.sent[h.stack.port] ?? []
        #expect(taken == own, "the stack gets each frame as it arrived: \(taken.map { own.firstIndex(of: $0) })")
        // ESP for an SA is the gateway's to open, never the stack's.
        let peer = try TunnelPeer()
        let esp = try h.inject([peer.frame(spi: 0x7105, inner: h.frame4("198.51.100.9", "10.1.2.3", ethDst: u))], on: h.unprotected)
        #expect(esp.sent[h.p]?.count == 1 && esp.delta.punted == 0 && esp.delta.totalDrops == 0, "\(esp.delta)")
        // The SPD still decides for the gateway's own addresses: no bypass for ping.
        let ping = h.frame4("198.51.100.7", "192.0.2.1", transport: .raw(.icmp), ethDst: u)
        try expectDropped([ping], reason: .policyDiscard, on: h.unprotected)
    }

    /// IKE that arrives in fragments (a certificate-bearing IKE_AUTH without
    /// RFC 7383 fragmentation, UDP 500, no NAT) reaches the stack whole: every
    /// UDP fragment to the gateway is reassembled, since the later pieces
    /// carry no port to tell ESP in UDP by. Before, the first piece went to
    /// the stack alone and the rest waited in the table until they expired.
    @Test func fragmentedIKEReachesTheStackWhole() throws {
        defer { try? h.gateway.publish(ipsec: nil); try? h.publish(h.baseConfigText) }
        let text = h.baseConfigText + """

        port \(h.stack.port)
        port \(h.u) punt \(h.stack.port)
        sp add dir in src 0.0.0.0/0 dst 192.0.2.1/32 proto udp dport 500-500 priority 1 action bypass
        sp add dir in src ::/0 dst 2001:db8:b::1/128 proto udp dport 500-500 priority 2 action bypass
        """
        try h.publish(text)
        _ = try h.installSession(text, name: "fragmented-ike")
        let u = h.portMAC(h.u)
        let ike4 = h.frame4("198.51.100.7", "192.0.2.1", ttl: 9, id: 0x5151,
                            transport: .udp(sourcePort: 500, destinationPort: 500), payload: 5000, ethDst: u,
                            dontFragment: false)
        let ike6 = h.frame6("2001:db8:100::7", "2001:db8:b::1", transport: .udp(sourcePort: 500, destinationPort: 500),
                            payload: 5000, ethDst: u)
        // Larger than one packet buffer (2 KiB) made whole: copied into a
        // 64 KiB buffer of the reassembly table's own pool.
        // (One that fits a packet buffer is linearized in place.)
        let small6 = h.frame6("2001:db8:100::7", "2001:db8:b::1", transport: .udp(sourcePort: 500, destinationPort: 500),
                              payload: 1000, ethDst: u)
        for (name, whole, frames) in [
            ("IPv4 in order", ike4, fragments4(ike4, pieces: [1200, 1200, 1200], id: 0x5151)),
            ("IPv4, first piece last", ike4, Array(fragments4(ike4, pieces: [1400, 1400, 1400], id: 0x5151).reversed())),
            ("IPv6 in order", ike6, fragments6(ike6, pieces: [1200, 1200, 1200, 1200], id: 0x515151)),
            ("IPv6, small", small6, fragments6(small6, pieces: [512], id: 0x515152)),
        ] {
            let out = try h.inject(frames, on: h.unprotected)
            #expect(out.delta.fragments == UInt64(frames.count) && out.delta.reassembled == 1, "\(name): \(out.delta)")
            #expect(out.delta.punted == 1 && out.delta.totalDrops == 0, "\(name): \(out.delta)")
            let taken = out.sent[h.stack.port] ?? []
            #expect(taken.count == 1 && taken.first == whole,
                    "\(name): the stack got \(taken.map(\.count)) bytes, not the \(whole.count)-byte datagram")
        }
    }
}
