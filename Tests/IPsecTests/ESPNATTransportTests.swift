// NAT traversal in transport mode (RFC 3948 §3.1.2) against scapy: scapy
// builds a TCP, UDP, ICMP or ICMPv6 packet with the peer's own addresses
// (its stack computes the checksum over them), encrypts it in transport mode
// inside UDP 4500, and then plays the NAT: it rewrites the source, the
// destination or both (and the UDP source port), as a NAT between the peers
// would, without touching the encrypted segment. What Sluice decapsulates
// must be, byte for byte, the packet scapy builds with the translated
// addresses, checksums computed by scapy. The same translated packet in
// plain ESP (no UDP: no NAT-T SA) keeps the checksum the peer sent. An IPv6
// packet with a Routing header (Segments Left 0: its Destination is the
// final one, which the pseudo-header takes) is fixed like the others.

import Crypto
import Foundation
@testable import IPsec
import Packet
import Testing

enum ScapyNAT {
    static let script = ScapyPeer.prelude + #"""
def build(j, src, dst, zero_udp):
    l3 = IP(src=src, dst=dst, id=7, ttl=33) if j["v"] == 4 else IPv6(src=src, dst=dst, hlim=33)
    if j["routing"]:
        l3 = l3 / IPv6ExtHdrRouting(addresses=[], segleft=0)
    if j["proto"] == "tcp":
        l4 = TCP(sport=40000, dport=443, seq=12345, ack=777, flags="PA")
    elif j["proto"] == "udp":
        l4 = UDP(sport=40001, dport=53)
    else:
        l4 = ICMP(id=9, seq=1) if j["v"] == 4 else ICMPv6EchoRequest(id=9, seq=1)
    b = bytearray(raw(l3 / l4 / Raw(bytes.fromhex(j["payload"]))))
    if zero_udp:
        at = upper_offset(j, b)
        b[at + 6:at + 8] = b"\0\0"
    return bytes(b)

def upper_offset(j, b):
    return (b[0] & 15) * 4 if j["v"] == 4 else 40 + (8 if j["routing"] else 0)

def translate(b, j, udp):
    p = parse(b)
    p.src, p.dst = j["nat_src"], j["nat_dst"]
    if j["v"] == 4:
        del p[IP].chksum
    if udp:
        p[UDP].sport = 61000
        p[UDP].chksum = 0
    return raw(p)

def encrypt(j, sent, udp):
    natt = UDP(sport=4500, dport=4500) if udp else None
    sa = SecurityAssociation(ESP, spi=j["spi"], crypt_algo=j["algo"], crypt_key=bytes.fromhex(j["key"]),
                             nat_t_header=natt)
    b = bytearray(raw(sa.encrypt(parse(sent), seq_num=j["seq"])))
    if udp and j["routing"]:
        # scapy 2.5 leaves the Routing header's next header at ESP (50) in
        # front of the UDP header it inserts: 17, and the UDP length.
        b[40] = 17
        n = len(b) - 48
        b[52:54] = bytes([n >> 8, n & 255])
    elif udp:
        fix_natt_length(b)
    return translate(bytes(b), j, udp)

def with_tfc(b, j, n):
    # TFC padding (RFC 4303 §2.7) after the datagram: in the IP length, not the UDP length.
    b = bytearray(b) + bytes([9] * n)
    if j["v"] == 4:
        b[2:4] = len(b).to_bytes(2, "big")
        p = IP(bytes(b))
        del p.chksum
        return raw(p)
    b[4:6] = (len(b) - 40).to_bytes(2, "big")
    return bytes(b)

def handle(j):
    sent = build(j, j["src"], j["dst"], j["zero_udp"])
    if j["tfc"]:
        sent = with_tfc(sent, j, j["tfc"])
    # A zero UDP checksum means "none" over IPv4 only; over IPv6 the host must get a real one.
    expected = build(j, j["nat_src"], j["nat_dst"], j["zero_udp"] and j["v"] == 4)
    if j["tfc"]:
        # The padding stays; the UDP checksum is over the datagram alone.
        expected = with_tfc(expected, j, j["tfc"])
    # Plain ESP: the same translation, the segment's checksum left as the peer computed it.
    unfixed = bytearray(expected)
    at = upper_offset(j, sent)
    field = {"tcp": 16, "udp": 6}.get(j["proto"], 2)
    unfixed[at + field:at + field + 2] = sent[at + field:at + field + 2]
    return {"natt": encrypt(j, sent, True).hex(), "plain": encrypt(j, sent, False).hex(),
            "expected": expected.hex(), "unfixed": bytes(unfixed).hex(), "sent": sent.hex()}

serve(handle)
"""#

    struct Job: Encodable {
        var v: Int
        var proto: String
        var src: String
        var dst: String
        var nat_src: String
        var nat_dst: String
        var zero_udp: Bool
        var routing: Bool
        var tfc: Int
        var spi: UInt32
        var algo: String
        var key: String
        var seq: UInt32
        var payload: String
    }

    struct Result: Decodable {
        var natt: String?
        var plain: String?
        var expected: String?
        var unfixed: String?
        var sent: String?
        var error: String?
    }

    static func process(_ jobs: [Job]) throws -> [Result] {
        let result = try ScapyPeer.run(input: try JSONEncoder().encode(jobs), script: script)
        try #require(result.status == 0, "scapy NAT peer failed: \(result.stderr)")
        return try JSONDecoder().decode([Result].self, from: result.stdout)
    }
}

@Suite(.serialized, .enabled(if: ScapyPeer.available, "needs /usr/bin/python3 with scapy and cryptography"))
struct ESPNATTransportTests {
    /// A peer behind a NAT (source translated), this gateway behind one
    /// (destination translated), and both.
    enum Translation: CaseIterable { case source, destination, both }

    struct Case: CustomStringConvertible {
        var ipv6: Bool
        var proto: String
        var translation: Translation
        var zeroUDP = false
        /// IPv6 with a Routing header (Segments Left 0) before ESP.
        var routing = false
        /// Bytes of TFC padding the peer put after a UDP datagram: forwarded, outside the fixed checksum.
        var tfc = 0
        var payload: Int
        var aead: AEADAlgorithm
        var description: String {
            "IPv\(ipv6 ? 6 : 4)\(routing ? " + Routing" : "") \(proto)\(zeroUDP ? " (checksum 0)" : "")\(tfc > 0 ? " + \(tfc) B TFC" : "") "
                + "\(translation) \(payload) B \(aead)"
        }

        var addresses: (src: String, dst: String, natSrc: String, natDst: String) {
            let (src, dst, publicSrc, publicDst) = ipv6
                ? ("fd00:a::10", "2001:db8:5::1", "2001:db8:77::3", "fd00:b::1")
                : ("192.168.1.10", "198.51.100.1", "203.0.113.7", "10.20.0.1")
            switch translation {
            case .source: return (src, dst, publicSrc, dst)
            case .destination: return (src, dst, src, publicDst)
            case .both: return (src, dst, publicSrc, publicDst)
            }
        }
    }

    static var cases: [Case] {
        var all: [Case] = []
        let aeads = AEADAlgorithm.allCases
        var n = 0
        for ipv6 in [false, true] {
            for proto in ["tcp", "udp", "icmp"] {
                for translation in Translation.allCases {
                    for payload in [0, 1, 333, 1000] {
                        all.append(Case(ipv6: ipv6, proto: proto, translation: translation, payload: payload,
                                        aead: aeads[n % aeads.count]))
                        n += 1
                    }
                }
            }
            all.append(Case(ipv6: ipv6, proto: "udp", translation: .source, zeroUDP: true, payload: 64,
                            aead: .aes256GCM))
        }
        for proto in ["tcp", "udp"] {
            all.append(Case(ipv6: true, proto: proto, translation: .both, routing: true, payload: 100, aead: .aes128GCM))
        }
        for ipv6 in [false, true] {
            all.append(Case(ipv6: ipv6, proto: "udp", translation: .both, tfc: 7, payload: 30, aead: .chacha20Poly1305))
        }
        return all
    }

    @Test func checksumsFollowTheTranslatedAddresses() throws {
        let core = try makeCore()
        let cases = Self.cases
        var keys: [TestKey] = []
        var jobs: [ScapyNAT.Job] = []
        for (i, c) in cases.enumerated() {
            let key = try TestKey(c.aead, seed: UInt64(i) &+ 900)
            keys.append(key)
            var rng = SplitMix64(seed: UInt64(i))
            let payload = (0..<c.payload).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let a = c.addresses
            jobs.append(ScapyNAT.Job(v: c.ipv6 ? 6 : 4, proto: c.proto, src: a.src, dst: a.dst, nat_src: a.natSrc,
                                     nat_dst: a.natDst, zero_udp: c.zeroUDP, routing: c.routing, tfc: c.tfc, spi: 0x7000_0000 | UInt32(i),
                                     algo: key.scapyName, key: hexString(key.material), seq: UInt32(i + 1),
                                     payload: hexString(payload)))
        }
        let results = try ScapyNAT.process(jobs)
        try #require(results.count == cases.count)
        var changed = 0
        for (i, (c, r)) in zip(cases, results).enumerated() {
            #expect(r.error == nil, "\(c): \(r.error ?? "")")
            guard let natt = r.natt, let plain = r.plain, let expected = r.expected.map(hexBytes),
                  let unfixed = r.unfixed.map(hexBytes), let sent = r.sent.map(hexBytes) else { continue }
            if expected != unfixed { changed += 1 }
            let spi = SPI(0x7000_0000 | UInt32(i))
            for udp in [true, false] {
                let sa = try InboundSA(spi: spi, mode: .transport, key: keys[i].handle, esn: false,
                                       udpEncapsulation: udp ? (4500, 4500) : nil)
                let window = try TestWindow(esn: false)
                let buffer = PacketBuffer(hexBytes(udp ? natt : plain))
                let drop = receive(buffer, sa: sa, window: window, core: core)
                #expect(drop == nil, "\(c) udp \(udp): \(String(describing: drop))")
                let want = udp ? expected : unfixed
                let same = buffer.bytes == want
                #expect(same, """
                    \(c) \(udp ? "NAT-T" : "plain ESP"): got \(hexString(buffer.bytes))
                    want \(hexString(want))
                    peer sent \(hexString(sent))
                    """)
                #expect(buffer.guardsIntact, "\(c) udp \(udp)")
            }
        }
        // The translation must have broken most checksums, or the test shows nothing.
        #expect(changed >= cases.count / 2, "only \(changed) of \(cases.count) cases needed a new checksum")
    }
}

/// Sending UDP-encapsulated ESP in transport mode over IPv6 with a Routing
/// header that still has segments left: the UDP checksum (mandatory over
/// IPv6) is over the final destination, which the header names (RFC 8200
/// §8.1), as scapy computes it: the last address of a type 0 header, the
/// first of a Segment Routing Header's list (type 4). A type whose
/// addresses are compressed (3, RPL) gives no final destination to compute
/// it over, and is refused as malformed.
@Suite(.enabled(if: ScapyPeer.available, "needs /usr/bin/python3 with scapy and cryptography"))
struct ESPRoutingChecksumTests {
    static let build = ScapyPeer.prelude + #"""
from scapy.all import IPv6ExtHdrSegmentRouting
def handle(j):
    rh = IPv6ExtHdrRouting(addresses=["2001:db8:1::1", "2001:db8:2::2"], segleft=2) if j["type"] == 0 \
        else IPv6ExtHdrSegmentRouting(addresses=["2001:db8:9::9", "2001:db8:8::8"], segleft=1, lastentry=1)
    p = IPv6(src="fd00:a::10", dst="2001:db8:5::1") / rh / UDP(sport=40001, dport=53) / Raw(b"x" * 37)
    return {"packet": raw(p).hex()}
serve(handle)
"""#

    static let check = ScapyPeer.prelude + #"""
from scapy.all import IPv6ExtHdrSegmentRouting
from scapy.layers.inet6 import in6_chksum
def handle(j):
    b = bytearray(bytes.fromhex(j["packet"]))
    at = j["udp_at"]
    got = b[at + 6] << 8 | b[at + 7]
    b[at + 6:at + 8] = b"\0\0"
    p = IPv6(bytes(b))
    want = in6_chksum(17, p[UDP], bytes(b[at:])) or 0xFFFF
    return {"packet": "%04x %04x" % (got, want)}
serve(handle)
"""#

    @Test func theChecksumIsOverTheFinalDestination() throws {
        struct Job: Encodable { var type: Int; var packet = ""; var udp_at = 0 }
        let built = try ScapyPeer.run(input: JSONEncoder().encode([Job(type: 0), Job(type: 4)]), script: Self.build)
        try #require(built.status == 0, "\(built.stderr)")
        let plain = try JSONDecoder().decode([ScapyPeer.Result].self, from: built.stdout).map { hexBytes($0.packet ?? "") }
        try #require(plain.count == 2 && plain.allSatisfy { $0.count > 80 })
        let core = try makeCore()
        let key = try TestKey(.aes128GCM, seed: 77)
        let sa = ESPCell.transport6.outboundSA(spi: SPI(0x9494), key: key.handle, esn: false, udp: true)
        var jobs: [Job] = []
        for (type, packet) in zip([0, 4], plain) {
            let headers = 40 + (Int(packet[41]) + 1) * 8  // IPv6 + the Routing header
            let buffer = PacketBuffer(packet)
            try #require(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 1, core: core) == nil, "type \(type)")
            #expect(buffer.bytes[40] == 17 && be16(buffer.bytes, headers + 2) == 4500, "UDP after the Routing header")
            jobs.append(Job(type: type, packet: hexString(buffer.bytes), udp_at: headers))
        }
        let checked = try ScapyPeer.run(input: JSONEncoder().encode(jobs), script: Self.check)
        try #require(checked.status == 0, "\(checked.stderr)")
        let results = try JSONDecoder().decode([ScapyPeer.Result].self, from: checked.stdout)
        for (job, result) in zip(jobs, results) {
            let pair = (result.packet ?? result.error ?? "").split(separator: " ")
            #expect(pair.count == 2 && pair[0] == pair[1], "type \(job.type): sent \(pair.first ?? ""), scapy computes \(pair.last ?? "")")
        }
        // Type 3 (RPL, compressed addresses) with segments left: refused before anything is sealed.
        var rpl = plain[0]
        rpl[42] = 3
        let buffer = PacketBuffer(rpl)
        #expect(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: 1, core: core) == .malformed)
        #expect(buffer.bytes == rpl)
    }
}
