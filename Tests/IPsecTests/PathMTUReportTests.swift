// ICMP "too big" messages about ESP packets (RFC 4301 §8.2.1), built by
// scapy: IPv4 "fragmentation needed" (type 3 code 4, RFC 1191) and ICMPv6
// Packet Too Big (RFC 4443), each quoting an ESP packet, plain or in UDP
// (IPv6: also a first fragment), as a router on the path would. scapy
// computes the checksums. `PathMTUReport` must read the router's MTU and
// the quoted packet's SPI, sequence number and addresses; and take nothing
// from other ICMP messages, quotes it cannot attribute, or a message whose
// checksum fails.

import Foundation
@testable import IPsec
import Packet
import Testing

enum ScapyTooBig {
    static let script = ScapyPeer.prelude + #"""
from scapy.all import ICMPv6PacketTooBig, ICMPv6DestUnreach, IPv6ExtHdrFragment

def handle(j):
    v6 = j["v"] == 6
    outer = IPv6(src=j["gw"], dst=j["peer"]) if v6 else IP(src=j["gw"], dst=j["peer"], flags="DF", id=99)
    if j.get("fragment"):
        outer = outer / IPv6ExtHdrFragment(offset=0, m=1, id=5)
    if j["inner"] == "tcp":
        quoted = outer / TCP(sport=1, dport=2) / Raw(b"t" * 200)
    elif j["inner"] == "ike":
        quoted = outer / UDP(sport=4500, dport=4500) / Raw(b"\0\0\0\0" + b"i" * 200)
    else:
        body = j["spi"].to_bytes(4, "big") + j["seq"].to_bytes(4, "big") + b"e" * 200
        quoted = outer / (UDP(sport=4500, dport=4500) / Raw(body) if j["inner"] == "udp" else Raw(body))
        if not j["inner"] == "udp":
            if v6 and j.get("fragment"):
                quoted[IPv6ExtHdrFragment].nh = 50
            elif v6:
                quoted[IPv6].nh = 50
            else:
                quoted[IP].proto = 50
    q = raw(quoted)
    if j.get("later") and not v6:
        p = IP(q)
        p.flags, p.frag = "MF", 185  # offset 185 × 8
        del p.chksum
        q = raw(p)
    q = q[:j["quote"]]
    if v6:
        icmp = ICMPv6PacketTooBig(mtu=j["mtu"]) if j["type"] == 2 else ICMPv6DestUnreach(code=0)
        err = IPv6(src=j["router"], dst=j["gw"]) / icmp / Raw(q)
    else:
        err = IP(src=j["router"], dst=j["gw"]) / ICMP(type=j["type"], code=j["code"], nexthopmtu=j["mtu"]) / Raw(q)
    return {"packet": raw(err).hex()}

serve(handle)
"""#

    struct Job: Encodable {
        var v: Int
        var inner: String  // esp, udp, tcp, ike
        var spi: UInt32 = 0x0102_0304
        var seq: UInt32 = 77
        var mtu: Int
        var type: Int
        var code: Int = 4
        var quote: Int = 548
        var fragment = false
        var later = false
        var gw: String
        var peer: String
        var router: String
    }

    static func build(_ jobs: [Job]) throws -> [[UInt8]] {
        let result = try ScapyPeer.run(input: try JSONEncoder().encode(jobs), script: script)
        try #require(result.status == 0, "scapy failed: \(result.stderr)")
        let out = try JSONDecoder().decode([ScapyPeer.Result].self, from: result.stdout)
        return try out.map { r in
            try #require(r.error == nil, "scapy: \(r.error ?? "")")
            return hexBytes(r.packet ?? "")
        }
    }
}

@Suite(.serialized, .enabled(if: ScapyPeer.available, "needs /usr/bin/python3 with scapy and cryptography"))
struct PathMTUReportTests {
    static func v4(_ inner: String, mtu: Int = 1400, type: Int = 3, code: Int = 4, quote: Int = 548,
                   later: Bool = false) -> ScapyTooBig.Job {
        ScapyTooBig.Job(v: 4, inner: inner, mtu: mtu, type: type, code: code, quote: quote, later: later,
                        gw: "192.0.2.1", peer: "198.51.100.7", router: "203.0.113.9")
    }
    static func v6(_ inner: String, mtu: Int = 1380, type: Int = 2, quote: Int = 1232, fragment: Bool = false) -> ScapyTooBig.Job {
        ScapyTooBig.Job(v: 6, inner: inner, mtu: mtu, type: type, quote: quote, fragment: fragment,
                        gw: "2001:db8:b::1", peer: "2001:db8:100::7", router: "2001:db8:ffff::9")
    }

    static func report(_ bytes: [UInt8]) -> PathMTUReport? {
        var b = bytes
        return b.withUnsafeMutableBytes { PathMTUReport(PacketView(start: $0.baseAddress!, length: $0.count, headroom: 0, tailroom: 0)) }
    }

    static func expected(_ job: ScapyTooBig.Job) -> PathMTUReport {
        PathMTUReport(mtu: UInt32(job.mtu), spi: job.spi, sequence: job.seq,
                      source: RawIPAddress(IPAddress(job.gw)!), destination: RawIPAddress(IPAddress(job.peer)!),
                      udp: job.inner == "udp")
    }

    @Test func readsWhatARouterSaysAboutAnESPPacket() throws {
        let jobs = [Self.v4("esp"), Self.v4("udp", mtu: 1280), Self.v4("esp", quote: 28),
                    Self.v6("esp"), Self.v6("udp", mtu: 1400), Self.v6("esp", fragment: true),
                    Self.v6("udp", mtu: 1500, quote: 56)]
        let packets = try ScapyTooBig.build(jobs)
        for (job, packet) in zip(jobs, packets) {
            #expect(Self.report(packet) == Self.expected(job), "\(job)")
        }
    }

    @Test func takesNothingItCannotAttribute() throws {
        let jobs = [
            Self.v4("udp", quote: 28),       // RFC 792's minimum quote: the UDP header, no SPI
            Self.v4("esp", quote: 27),       // not even the sequence number
            Self.v4("ike"),                  // the non-ESP marker: IKE, not ESP
            Self.v4("tcp"),
            Self.v4("esp", type: 3, code: 1),  // host unreachable
            Self.v4("esp", type: 11, code: 0),  // time exceeded
            Self.v4("esp", later: true),     // a later fragment: no ESP header there
            Self.v6("esp", type: 1),         // destination unreachable
            Self.v6("udp", quote: 55),
            Self.v6("ike"),
        ]
        let packets = try ScapyTooBig.build(jobs)
        for (job, packet) in zip(jobs, packets) {
            #expect(Self.report(packet) == nil, "\(job)")
        }
        // One bit flipped in the quote: the ICMP checksum fails.
        let good = try ScapyTooBig.build([Self.v4("esp"), Self.v6("esp")])
        for var packet in good {
            #expect(Self.report(packet) != nil)
            packet[packet.count - 1] ^= 0x10
            #expect(Self.report(packet) == nil)
        }
    }
}
