// Path MTU of an SA (RFC 4301 §8.2): a router between the gateway and its
// peer answers one of the gateway's ESP packets with ICMP "fragmentation
// needed" (its MTU, 1400, smaller than the port's 1500). The worker that
// receives it, let in by an inbound bypass policy, reports it; the control
// thread maps it to the outbound SA and holds that SA's ESP packets to 1400
// on every worker: an inner packet whose ESP packet would not fit is refused
// with an error announcing the largest that fits (1346), or cut when it may
// be; until the value ages out. Messages that name no SA, a sequence number
// it has not sent, an MTU below 576 or above the one it has are ignored.

import CShims
import Command
@testable import Control
import Dataplane
import Glibc
import IPsec
import Packet
import Testing

extension EALSuites.GatewayTests {
    /// An ICMP "fragmentation needed" frame from a router (203.0.113.9) to
    /// the gateway's unprotected address, announcing `mtu` and quoting the
    /// first 548 bytes of `esp` (an IP packet).
    func fragmentationNeeded(quoting esp: [UInt8], mtu: Int) -> [UInt8] {
        let quote = Array(esp.prefix(548))
        var f = h.frame4("203.0.113.9", "192.0.2.1", transport: .raw(.icmp), payload: 8 + quote.count,
                         ethDst: h.portMAC(h.u))
        var icmp: [UInt8] = [3, 4, 0, 0, 0, 0, UInt8(mtu >> 8), UInt8(mtu & 0xFF)] + quote
        let sum = InternetChecksum.checksum(icmp)
        icmp[2] = UInt8(sum >> 8); icmp[3] = UInt8(sum & 0xFF)
        f.replaceSubrange(34..., with: icmp)
        return f
    }

    @Test func anSAHoldsItsPacketsToThePathMTUARouterReports() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let spi: UInt32 = 0x7103
        let icmpIn = "\nsp add dir in src 0.0.0.0/0 dst 192.0.2.1/32 proto icmp priority 1 action bypass\n"
        let session = try h.installSession(h.baseConfigText + tunnelSAText(spi: spi) + icmpIn, name: "pmtu")
        let id = SAIdentifier(spi: SecurityParameterIndex(spi), destination: IPAddress("192.0.2.254"))
        _ = h.gateway.drainEvents()
        refillICMPBudget()
        // 1446 inside: an ESP packet of 1500, the port's MTU.
        let big = h.frame4("10.1.2.3", "198.51.100.4", payload: 1446 - 28)
        let sealed = try h.inject([big], on: h.protected)
        let esp = try #require(sealed.sent[h.u]?.first.map { Array($0.dropFirst(14)) })
        #expect(esp.count == 1500)
        let sequence = UInt32(esp[24]) << 24 | UInt32(esp[25]) << 16 | UInt32(esp[26]) << 8 | UInt32(esp[27])

        // The router's message: handled as any packet to the gateway (no local stack here: `local`), and reported.
        let seen = try h.inject([fragmentationNeeded(quoting: esp, mtu: 1400)], on: h.unprotected)
        #expect(seen.delta.dropsByReason == [.local: 1], "\(seen.delta)")
        let events = h.gateway.drainEvents()
        #expect(events.count == 1 && events.first?.kind == UInt8(SL_EVENT_PATH_MTU), "\(events.map(CounterReport.eventLine))")
        let e = try #require(events.first)
        #expect(CounterReport.eventLine(e) == "event: path-mtu spi=0x00007103 mtu=1400 src=192.0.2.1 dst=192.0.2.254 "
                + "encap=none seq=\(sequence) cpu=\(e.lcore)")
        #expect(session.ipsec.learnPathMTU(e, now: 100) == .learnt(id, mtu: 1400, changed: true))
        #expect(session.ipsec.pathMTU(of: id) == 1400)

        // The same inner packet is refused with the largest that fits now: 1400 − 54.
        let refused = try h.inject([big], on: h.protected)
        #expect(refused.delta.dropsByReason == [.packetTooBig: 1] && (refused.sent[h.u] ?? []).isEmpty, "\(refused.delta)")
        var quoted = big
        quoted[14 + 8] -= 1  // TTL, as it was about to be sealed
        Self.fixChecksum(&quoted)
        if let back = refused.sent[h.p]?.first {
            expectICMPv4Error(back, .tooBig(mtu: 1346), answering: quoted, from: [10, 0, 0, 1])
        } else {
            Issue.record("no ICMP error: \(refused.sent.mapValues(\.count))")
        }
        // One that fits leaves; one without DF leaves in pieces of at most 1400.
        let fits = try h.inject([h.frame4("10.1.2.3", "198.51.100.4", payload: 1346 - 28)], on: h.protected)
        #expect(fits.sent[h.u]?.map(\.count) == [14 + 1400], "\(fits.delta)")
        let cut = try h.inject([h.frame4("10.1.2.3", "198.51.100.4", payload: 1446 - 28, dontFragment: false)],
                               on: h.protected)
        let pieces = cut.sent[h.u]?.map { $0.count - 14 } ?? []
        #expect(pieces.count == 2 && pieces.allSatisfy { $0 <= 1400 } && cut.delta.fragmented == 1, "\(pieces) \(cut.delta)")

        // Not taken: no such SA, a number not sent yet, below 576, above what it has, in UDP (this SA is not).
        let gateway = IPAddress("192.0.2.1")!, peer = IPAddress("192.0.2.254")!
        func learn(spi: UInt32 = spi, from source: IPAddress = gateway, udp: Bool = false, sequence: UInt32 = sequence,
                   mtu: Int) -> IPsecCompiler.PathMTUOutcome {
            session.ipsec.learnPathMTU(spi: spi, source: source, destination: peer, udp: udp, sequence: sequence,
                                       mtu: mtu, now: 200)
        }
        for outcome in [learn(spi: 0x7104, mtu: 1300), learn(from: IPAddress("192.0.2.9")!, mtu: 1300),
                        learn(sequence: sequence + 1000, mtu: 1300), learn(mtu: 575), learn(mtu: 1450),
                        learn(udp: true, mtu: 1300)] {
            guard case .ignored = outcome else { Issue.record("taken: \(outcome)"); continue }
        }
        #expect(session.ipsec.pathMTU(of: id) == 1400)
        // The same value again keeps it from aging (RFC 1191 §6.3: timed from the last message).
        #expect(learn(mtu: 1400) == .learnt(id, mtu: 1400, changed: false))

        // Aged out after 600 s without a message: the SA's packets may be 1500 again.
        #expect(session.ipsec.agePathMTUs(now: 200 + IPsecCompiler.pathMTUAge - 1).isEmpty)
        #expect(session.ipsec.agePathMTUs(now: 200 + IPsecCompiler.pathMTUAge) == [id])
        #expect(session.ipsec.pathMTU(of: id) == nil)
        let again = try h.inject([big], on: h.protected)
        #expect(again.sent[h.u]?.map(\.count) == [14 + 1500], "\(again.delta)")
    }

    /// An ICMPv6 Packet Too Big frame from a router (2001:db8:ffff::9) to the
    /// gateway's unprotected address, announcing `mtu` and quoting the first
    /// 1232 bytes of `esp`.
    func packetTooBig(quoting esp: [UInt8], mtu: Int) -> [UInt8] {
        let quote = Array(esp.prefix(1232))
        var f = h.frame6("2001:db8:ffff::9", "2001:db8:b::1", transport: .raw(.icmpv6), payload: 8 + quote.count,
                         ethDst: h.portMAC(h.u))
        var icmp: [UInt8] = [2, 0, 0, 0, UInt8(mtu >> 24), UInt8(mtu >> 16 & 0xFF), UInt8(mtu >> 8 & 0xFF), UInt8(mtu & 0xFF)]
            + quote
        let sum = icmp.withUnsafeBytes {
            InternetChecksum.transport($0, source: IPv6Address("2001:db8:ffff::9")!, destination: IPv6Address("2001:db8:b::1")!,
                                       protocol: .icmpv6)
        }
        icmp[2] = UInt8(sum >> 8); icmp[3] = UInt8(sum & 0xFF)
        f.replaceSubrange(54..., with: icmp)
        return f
    }

    /// The same over IPv6, with the SA's packets in UDP (RFC 3948): the
    /// worker reads the SPI behind the quoted UDP header. With 1400 on the
    /// path, an inner packet of 1318 bytes is the largest that fits (outer
    /// 40, UDP 8, ESP header and IV 16, trailer 2, ICV 16). A report below
    /// 1280 counts as 1280 (RFC 8201 §4); an inner packet of at most 1280,
    /// which no error could make smaller, is then sealed and cut.
    @Test func anSAInUDPOverIPv6LearnsItsPathMTU() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let key = "0x" + String(repeating: "5b", count: 20)
        let session = try h.installSession(h.baseConfigText + """

        sa add spi 0x7106 dir out src 2001:db8:b::1 dst 2001:db8:b::fe mode tunnel aead aes-gcm-128 key \(key) encap udp 4500 4500
        sp add dir out src 2001:db8:1::/48 dst 2001:db8:100::/48 priority 1 action protect spi 0x7106
        sp add dir in src ::/0 dst 2001:db8:b::1/128 proto icmpv6 priority 1 action bypass
        """, name: "pmtu6")
        let id = SAIdentifier(spi: SecurityParameterIndex(0x7106), destination: IPAddress("2001:db8:b::fe"))
        _ = h.gateway.drainEvents()
        refillICMPBudget()
        let sealed = try h.inject([h.frame6("2001:db8:1::3", "2001:db8:100::4", payload: 100)], on: h.protected)
        let esp = try #require(sealed.sent[h.u]?.first.map { Array($0.dropFirst(14)) })
        #expect(esp[6] == 17 && esp[42] == 0x11 && esp[43] == 0x94, "ESP in UDP to 4500")
        let seen = try h.inject([packetTooBig(quoting: esp, mtu: 1400)], on: h.unprotected)
        #expect(seen.delta.dropsByReason == [.local: 1], "\(seen.delta)")
        let events = h.gateway.drainEvents()
        let e = try #require(events.first)
        #expect(events.count == 1 && e.kind == UInt8(SL_EVENT_PATH_MTU) && e.proto == 17, "\(events.map(CounterReport.eventLine))")
        #expect(session.ipsec.learnPathMTU(e, now: 10) == .learnt(id, mtu: 1400, changed: true))

        let fits = h.frame6("2001:db8:1::3", "2001:db8:100::4", payload: 1318 - 48)
        let sent = try h.inject([fits], on: h.protected)
        #expect(sent.sent[h.u]?.map(\.count) == [14 + 1400], "\(sent.delta)")
        let big = h.frame6("2001:db8:1::3", "2001:db8:100::4", payload: 1319 - 48)
        let refused = try h.inject([big], on: h.protected)
        #expect(refused.delta.dropsByReason == [.packetTooBig: 1] && (refused.sent[h.u] ?? []).isEmpty, "\(refused.delta)")
        var quoted = big
        quoted[14 + 7] -= 1  // hop limit, as it was about to be sealed
        if let back = refused.sent[h.p]?.first {
            expectICMPv6Error(back, .tooBig(mtu: 1318), answering: quoted, from: ipv6("2001:db8:a::1").bytes)
        } else {
            Issue.record("no ICMPv6 error: \(refused.sent.mapValues(\.count))")
        }
        var small = e
        small.sport = 1000
        #expect(session.ipsec.learnPathMTU(small, now: 11) == .learnt(id, mtu: 1280, changed: true))
        let cut = try h.inject([h.frame6("2001:db8:1::3", "2001:db8:100::4", payload: 1250 - 48)], on: h.protected)
        let pieces = cut.sent[h.u]?.map { $0.count - 14 } ?? []
        #expect(pieces.count == 2 && pieces.allSatisfy { $0 <= 1280 } && cut.delta.fragmented == 1, "\(pieces) \(cut.delta)")
    }

    /// A flood of "too big" messages (a router, or anyone who can send to
    /// the gateway) reaches the control thread at most
    /// `pathMTUReportsPerSecond` times a second from one core; the rest are
    /// handled as any packet to the gateway, and not reported. A new second
    /// brings a new budget.
    @Test func pathMTUReportsFromOneCoreAreLimitedPerSecond() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        let icmpIn = "\nsp add dir in src 0.0.0.0/0 dst 192.0.2.1/32 proto icmp priority 1 action bypass\n"
        _ = try h.installSession(h.baseConfigText + tunnelSAText(spi: 0x7107) + icmpIn, name: "pmtu-flood")
        let sealed = try h.inject([h.frame4("10.1.2.3", "198.51.100.4", payload: 1446 - 28)], on: h.protected)
        let esp = try #require(sealed.sent[h.u]?.first.map { Array($0.dropFirst(14)) })
        let message = fragmentationNeeded(quoting: esp, mtu: 1400)
        let limit = WorkerIPsec.pathMTUReportsPerSecond
        // Past any window an earlier test opened: the first report opens a new one.
        usleep(1_100_000)
        _ = h.gateway.drainEvents()
        let flood = try h.inject(Array(repeating: message, count: limit + 8), on: h.unprotected)
        #expect(flood.delta.dropsByReason == [.local: UInt64(limit + 8)], "\(flood.delta)")
        let reported = h.gateway.drainEvents()
        #expect(reported.count == limit && reported.allSatisfy { $0.kind == UInt8(SL_EVENT_PATH_MTU) && $0.sport == 1400 },
                "\(reported.count) events")
        let spent = try h.inject([message], on: h.unprotected)
        #expect(spent.delta.dropsByReason == [.local: 1] && h.gateway.drainEvents().isEmpty)
        usleep(1_100_000)
        _ = try h.inject([message], on: h.unprotected)
        #expect(h.gateway.drainEvents().count == 1)
    }

    /// Without an inbound policy that lets ICMP in, the message is dropped
    /// by the inbound SPD like any plaintext and nothing is learnt
    /// (RFC 4301 §6.1.1: the operator decides whether such messages count).
    @Test func aPathMTUReportNeedsAPolicyThatLetsICMPIn() throws {
        defer { try? h.gateway.publish(ipsec: nil) }
        _ = try h.installSession(h.baseConfigText + tunnelSAText(spi: 0x7105), name: "pmtu-closed")
        _ = h.gateway.drainEvents()
        let sealed = try h.inject([h.frame4("10.1.2.3", "198.51.100.4", payload: 1446 - 28)], on: h.protected)
        let esp = try #require(sealed.sent[h.u]?.first.map { Array($0.dropFirst(14)) })
        let seen = try h.inject([fragmentationNeeded(quoting: esp, mtu: 1400)], on: h.unprotected)
        #expect(seen.delta.dropsByReason == [.policyDiscard: 1], "\(seen.delta)")
        #expect(h.gateway.drainEvents().isEmpty)
    }
}
