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

def handle(j):
    sent = build(j, j["src"], j["dst"], j["zero_udp"])
    # A zero UDP checksum means "none" over IPv4 only; over IPv6 the host must get a real one.
    expected = build(j, j["nat_src"], j["nat_dst"], j["zero_udp"] and j["v"] == 4)
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
        var payload: Int
        var aead: AEADAlgorithm
        var description: String {
            "IPv\(ipv6 ? 6 : 4)\(routing ? " + Routing" : "") \(proto)\(zeroUDP ? " (checksum 0)" : "") "
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
                                     nat_dst: a.natDst, zero_udp: c.zeroUDP, routing: c.routing, spi: 0x7000_0000 | UInt32(i),
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
