// Later fragments and policies that name ports (RFC 4301 §7): a fragment
// other than the first carries no ports, so it matches only policies with
// any ports. Behind a protect policy that names ports it would fall to a
// bypass policy ranked after it and leave (or enter) in the clear, though
// its datagram may be the very traffic that policy protects. The gateway
// drops it (`fragment_ports_unknown`) where a protect policy that names
// ports, ranked before the bypass, matches its addresses and protocol; a
// later fragment no such policy could claim still passes.

import CShims
import Command
import Dataplane
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// `frame` (IPv4, no options) as the fragment at `offset8` × 8 bytes, MF as `more`.
    func asFragment(_ frame: [UInt8], offset8: UInt16, more: Bool) -> [UInt8] {
        var f = frame
        let v = offset8 | (more ? 0x2000 : 0)
        f[14 + 6] = UInt8(v >> 8); f[14 + 7] = UInt8(v & 0xFF)
        Self.fixChecksum(&f)
        return f
    }

    /// `frame` (IPv6, no extension header) with a Fragment header for the
    /// piece at `offset8` × 8 bytes, M as `more`.
    func asFragment6(_ frame: [UInt8], offset8: UInt16, more: Bool) -> [UInt8] {
        var g = Array(frame[0..<54])
        let next = g[14 + 6]
        g[14 + 6] = 44
        let length = Int(g[14 + 4]) << 8 | Int(g[14 + 5]) + 8
        g[14 + 4] = UInt8(length >> 8); g[14 + 5] = UInt8(length & 0xFF)
        let v = offset8 << 3 | (more ? 1 : 0)
        return g + [next, 0, UInt8(v >> 8), UInt8(v & 0xFF), 0, 0, 0x12, 0x34] + Array(frame[54...])
    }

    /// `padding`: as many more port-naming protect policies, ranked first,
    /// for other networks: past 16 the check looks them up in a classifier
    /// of their own instead of scanning them; the verdicts are the same.
    @Test(arguments: [0, 40])
    func aLaterFragmentDoesNotSlipPastAProtectPolicyThatNamesPorts(padding: Int) throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let key = "0x" + String(repeating: "5c", count: 20)
        _ = try h.installSession(h.baseConfigText + """

        sa add spi 0x7201 dir out src 192.0.2.1 dst 192.0.2.254 mode tunnel aead aes-gcm-128 key \(key)
        sa add spi 0x7202 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key \(key)
        sp add dir out src 10.1.9.0/24 dst 198.51.100.0/24 priority 0 action bypass
        sp add dir out src 10.1.0.0/16 dst 198.51.100.0/24 proto udp dport 5000 priority 1 action protect spi 0x7201
        sp add dir out src 10.1.7.0/24 dst 198.51.100.0/24 proto tcp dport 23 priority 1 action discard
        sp add dir out src 2001:db8:1::/48 dst 2001:db8:100::/48 proto udp dport 5000 priority 1 action protect spi 0x7201
        sp add dir out src 0.0.0.0/0 dst 0.0.0.0/0 priority 9 action bypass
        sp add dir out src ::/0 dst ::/0 priority 9 action bypass
        sp add dir in src 198.51.100.0/24 dst 10.1.0.0/16 proto udp sport 5000 priority 1 action protect spi 0x7202
        sp add dir in src 0.0.0.0/0 dst 0.0.0.0/0 priority 9 action bypass

        """ + (0..<padding).map { i in
            "sp add dir out src 172.16.\(i).0/24 dst 198.51.100.0/24 proto tcp dport \(1000 + i) priority 0 action protect spi 0x7201\n"
            + "sp add dir in src 198.51.100.0/24 dst 172.16.\(i).0/24 proto tcp sport \(1000 + i) priority 0 action protect spi 0x7202\n"
        }.joined(), name: "fragment-ports")
        func udp(_ s: String, _ d: String, ethDst: MACAddress? = nil) -> [UInt8] {
            h.frame4(s, d, payload: 200, ethDst: ethDst, dontFragment: false)
        }
        func tcp(_ s: String, _ d: String, ethDst: MACAddress? = nil) -> [UInt8] {
            h.frame4(s, d, transport: .tcp(TCPSpec(sourcePort: 4000, destinationPort: 5000)), payload: 200, ethDst: ethDst,
                     dontFragment: false)
        }

        // Outbound. The first fragment has its ports: sealed.
        let first = try h.inject([asFragment(udp("10.1.2.3", "198.51.100.4"), offset8: 0, more: true)], on: h.protected)
        let sealed = try #require(first.sent[h.u]?.first, "\(first.delta)")
        #expect(sealed[14 + 9] == 50 && first.delta.dropsByReason.isEmpty, "\(first.delta)")
        // A later one of UDP between the same networks: it may be the rest
        // of that datagram. Likewise over IPv6, and TCP that a discard
        // policy naming a port may claim.
        let later = try h.inject([asFragment(udp("10.1.2.3", "198.51.100.4"), offset8: 100, more: false),
                                  asFragment6(h.frame6("2001:db8:1::3", "2001:db8:100::4", payload: 200), offset8: 100, more: false),
                                  asFragment(tcp("10.1.7.5", "198.51.100.4"), offset8: 100, more: false)], on: h.protected)
        #expect(later.delta.dropsByReason == [.fragmentPortsUnknown: 3] && later.sent.values.allSatisfy(\.isEmpty),
                "\(later.delta)")
        // No such policy could claim these: TCP; from 10.1.9.0/24, whose
        // bypass outranks the protect policy; from outside its source; a
        // whole datagram to another port; TCP over IPv6.
        let clear = [asFragment(tcp("10.1.2.3", "198.51.100.4"), offset8: 100, more: false),
                     asFragment(udp("10.1.9.5", "198.51.100.4"), offset8: 100, more: false),
                     asFragment(udp("10.2.0.5", "198.51.100.4"), offset8: 100, more: false),
                     h.frame4("10.1.2.3", "198.51.100.4", transport: .udp(sourcePort: 4000, destinationPort: 6000)),
                     asFragment6(h.frame6("2001:db8:1::3", "2001:db8:100::4", transport: .tcp(TCPSpec(sourcePort: 4000, destinationPort: 5000)),
                                          payload: 200), offset8: 100, more: false)]
        let passed = try h.inject(clear, on: h.protected)
        #expect(passed.delta.dropsByReason.isEmpty && passed.sent[h.u]?.count == clear.count
                && passed.sent[h.u]?.allSatisfy { $0[14 + 9] != 50 } == true, "\(passed.delta)")

        // Inbound: a plaintext later fragment that the protect policy's SA
        // should have carried does not enter in the clear; TCP does.
        let inbound = try h.inject([asFragment(udp("198.51.100.4", "10.1.2.3", ethDst: h.portMAC(h.u)), offset8: 100, more: false)],
                                   on: h.unprotected)
        #expect(inbound.delta.dropsByReason == [.fragmentPortsUnknown: 1] && inbound.sent.values.allSatisfy(\.isEmpty),
                "\(inbound.delta)")
        let inboundTCP = try h.inject([asFragment(tcp("198.51.100.4", "10.1.2.3", ethDst: h.portMAC(h.u)), offset8: 100,
                                                  more: false)], on: h.unprotected)
        #expect(inboundTCP.delta.dropsByReason.isEmpty && inboundTCP.sent[h.p]?.count == 1, "\(inboundTCP.delta)")
    }
}
