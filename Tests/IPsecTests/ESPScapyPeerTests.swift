// An independent peer: scapy's ESP implementation (scapy.layers.ipsec, with
// python3-cryptography) decrypts what Sluice encrypts and encrypts what
// Sluice decrypts, for AES-GCM-128/256 and ChaCha20-Poly1305, tunnel mode in
// every family mix, plain and UDP-encapsulated, with and without ESN, and
// transport mode. scapy picks random IVs and builds its own outer headers
// (identification 1, DF clear), so nothing here depends on Sluice's choices.
//
// One python process per direction handles every case (importing scapy takes
// a second). The script is inline so the test target needs no resources.

import Crypto
import Foundation
@testable import IPsec
import Packet
import Testing

enum ScapyPeer {
    static let python = "/usr/bin/python3"

    /// What every peer script starts with: the imports, `parse`, the
    /// NAT-T length fix and `serve`, which answers each JSON job on stdin
    /// with `handle(job)` (or the exception it raised) as one JSON list.
    static let prelude = #"""
import sys, json
from scapy.all import IP, IPv6, IPv6ExtHdrRouting, UDP, TCP, ICMP, ICMPv6EchoRequest, Raw, raw
from scapy.layers.ipsec import SecurityAssociation, ESP

def parse(b):
    return IP(b) if b[0] >> 4 == 4 else IPv6(b)

def fix_natt_length(b):
    # scapy 2.5 freezes the UDP header before appending ESP, leaving its
    # length at 8: put the real length in (RFC 768).
    at = (b[0] & 15) * 4 if b[0] >> 4 == 4 else 40
    n = len(b) - at
    b[at + 4:at + 6] = bytes([n >> 8, n & 255])

def serve(handle):
    results = []
    for j in json.load(sys.stdin):
        try:
            results.append(handle(j))
        except Exception as e:
            results.append({"error": repr(e)})
    json.dump(results, sys.stdout)

"""#

    static let script = prelude + #"""
def sa_for(j):
    tunnel = None
    if j["mode"] == "tunnel":
        t = j["tunnel"]
        tunnel = IP(src=t["src"], dst=t["dst"]) if t["v"] == 4 else IPv6(src=t["src"], dst=t["dst"])
    natt = UDP(sport=j["natt"][0], dport=j["natt"][1]) if j.get("natt") else None
    return SecurityAssociation(ESP, spi=j["spi"], crypt_algo=j["algo"], crypt_key=bytes.fromhex(j["key"]),
                               tunnel_header=tunnel, nat_t_header=natt, esn_en=j["esn"], esn=j["esn_hi"])

def handle(j):
    sa = sa_for(j)
    pkt = parse(bytes.fromhex(j["packet"]))
    if j["op"] == "decrypt":
        out = sa.decrypt(pkt, esn_en=j["esn"], esn=j["esn_hi"])
    else:
        out = sa.encrypt(pkt, seq_num=j["seq"], esn_en=j["esn"], esn=j["esn_hi"])
    b = bytearray(raw(out))
    if j["op"] == "encrypt" and j.get("natt"):
        fix_natt_length(b)
    return {"packet": bytes(b).hex()}

serve(handle)
"""#

    struct Job: Encodable {
        var op: String
        var mode: String
        var tunnel: Tunnel?
        var natt: [UInt16]?
        var spi: UInt32
        var algo: String
        var key: String
        var esn: Bool
        var esn_hi: UInt32
        var seq: UInt32
        var packet: String
        struct Tunnel: Encodable { var v: Int; var src: String; var dst: String }
    }

    struct Result: Decodable { var packet: String?; var error: String? }

    /// Whether /usr/bin/python3 has scapy's ESP and the cryptography package.
    static let available: Bool = {
        guard FileManager.default.isExecutableFile(atPath: python) else { return false }
        let check = try? run(input: Data(), script: "import scapy.layers.ipsec, cryptography")
        return check?.status == 0
    }()

    static func run(input: Data, script: String) throws -> (status: Int32, stdout: Data, stderr: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: python)
        process.arguments = ["-c", script]
        let stdin = Pipe(), stdout = Pipe(), stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        // Write on another thread so a large reply cannot deadlock against a full pipe.
        let writer = Thread {
            stdin.fileHandleForWriting.write(input)
            try? stdin.fileHandleForWriting.close()
        }
        writer.start()
        let out = stdout.fileHandleForReading.readDataToEndOfFile()
        let err = stderr.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, out, String(decoding: err, as: UTF8.self))
    }

    static func process(_ jobs: [Job]) throws -> [Result] {
        let result = try run(input: try JSONEncoder().encode(jobs), script: script)
        try #require(result.status == 0, "scapy peer failed: \(result.stderr)")
        return try JSONDecoder().decode([Result].self, from: result.stdout)
    }
}

/// One case of the peer matrix.
struct PeerCase: CustomStringConvertible {
    var aead: AEADAlgorithm
    var cell: ESPCell
    var esn: Bool
    var udp: Bool
    var description: String { "\(aead) \(cell) esn \(esn) udp \(udp)" }

    /// The cases: every AEAD × every tunnel mix × ESN × UDP, and transport
    /// (plain ESP: scapy cannot take NAT-T transport mode apart).
    static var all: [PeerCase] {
        var cases: [PeerCase] = []
        for aead in AEADAlgorithm.allCases {
            for cell in ESPCell.allCases {
                for esn in [false, true] {
                    for udp in [false, true] where cell.isTunnel || !udp {
                        cases.append(PeerCase(aead: aead, cell: cell, esn: esn, udp: udp))
                    }
                }
            }
        }
        return cases
    }

    var spi: SPI { SPI(0x5000_0000 | UInt32(aead.rawValue) << 8 | UInt32(ESPCell.allCases.firstIndex(of: cell)!)) }
    /// Sequence numbers: with ESN, the high half is 1 or more.
    func sequence(_ i: Int) -> UInt64 { esn ? (UInt64(3) << 32) | UInt64(i + 10) : UInt64(i + 10) }

    /// A job for the peer, from this gateway's point of view: Sluice sends
    /// local → peer, scapy sends peer → local.
    func job(_ op: String, key: TestKey, sequence: UInt64, packet: [UInt8], fromPeer: Bool) -> ScapyPeer.Job {
        var tunnel: ScapyPeer.Job.Tunnel?
        if cell.isTunnel {
            let (a, b) = cell.outerIPv6 ? (Gateways.v6Local.description, Gateways.v6Peer.description)
                : (Gateways.v4Local.description, Gateways.v4Peer.description)
            tunnel = .init(v: cell.outerIPv6 ? 6 : 4, src: fromPeer ? b : a, dst: fromPeer ? a : b)
        }
        return ScapyPeer.Job(op: op, mode: cell.isTunnel ? "tunnel" : "transport", tunnel: tunnel,
                             natt: udp ? [4500, 4500] : nil, spi: spi.rawValue, algo: key.scapyName,
                             key: hexString(key.material), esn: esn, esn_hi: UInt32(sequence >> 32),
                             seq: UInt32(truncatingIfNeeded: sequence), packet: hexString(packet))
    }
}

@Suite(.serialized, .enabled(if: ScapyPeer.available, "needs /usr/bin/python3 with scapy and cryptography"))
struct ESPScapyPeerTests {
    static let sizes = [0, 1, 2, 3, 100, 1000]

    /// scapy decrypts every packet Sluice encrypts to the exact inner packet.
    @Test func scapyDecryptsSluice() throws {
        let core = try makeCore()
        var jobs: [ScapyPeer.Job] = []
        var expected: [(String, [UInt8])] = []
        for c in PeerCase.all {
            let key = try TestKey(c.aead, seed: UInt64(c.spi.rawValue))
            let sa = c.cell.outboundSA(spi: c.spi, key: key.handle, esn: c.esn, udp: c.udp)
            for (i, size) in Self.sizes.enumerated() {
                let inner = Inner.udp(ipv6: c.cell.innerIPv6, payload: size, seed: UInt64(i))
                let buffer = PacketBuffer(inner)
                let sequence = c.sequence(i)
                try #require(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: SequenceNumber(sequence),
                                                     core: core) == nil)
                jobs.append(c.job("decrypt", key: key, sequence: sequence, packet: buffer.bytes, fromPeer: false))
                expected.append(("\(c) size \(size)", inner))
            }
        }
        try Self.expectDecrypted(jobs, expected, trimTransport: true)
    }

    /// Has scapy run `jobs` (each decrypting Sluice's ESP) and expects each
    /// to give back exactly its `expected` packet. `trimTransport`: a
    /// transport-mode result longer than expected is cut to its length
    /// before comparing (scapy keeps nothing extra; defensive).
    static func expectDecrypted(_ jobs: [ScapyPeer.Job], _ expected: [(String, [UInt8])], trimTransport: Bool = false,
                                sourceLocation: SourceLocation = #_sourceLocation) throws {
        let results = try ScapyPeer.process(jobs)
        try #require(results.count == jobs.count, sourceLocation: sourceLocation)
        for (result, (label, inner)) in zip(results, expected) {
            #expect(result.error == nil, "\(label): \(result.error ?? "")", sourceLocation: sourceLocation)
            guard let packet = result.packet else { continue }
            var got = hexBytes(packet)
            if trimTransport && !label.contains("tunnel") && got.count > inner.count {
                got = Array(got.prefix(inner.count))
            }
            let same = got == inner
            #expect(same, "\(label): got \(hexString(got))", sourceLocation: sourceLocation)
        }
    }

    /// An IPv6 atomic fragment (RFC 6946: a Fragment header with offset 0
    /// and no M flag) is a whole datagram: transport mode seals it with ESP
    /// after the Fragment header (RFC 4303 §3.1.1), behind a Hop-by-Hop
    /// header too, and scapy decrypts it to the exact input.
    @Test func scapyDecryptsTransportAtomicFragments() throws {
        let core = try makeCore()
        var jobs: [ScapyPeer.Job] = []
        var expected: [(String, [UInt8])] = []
        for aead in AEADAlgorithm.allCases {
            for esn in [false, true] {
                let c = PeerCase(aead: aead, cell: .transport6, esn: esn, udp: false)
                let key = try TestKey(c.aead, seed: UInt64(c.spi.rawValue))
                let sa = c.cell.outboundSA(spi: c.spi, key: key.handle, esn: c.esn, udp: false)
                for (i, (size, hopByHop)) in [(0, false), (3, true), (1000, false)].enumerated() {
                    let inner = Inner.ipv6UDPFragment(payload: size, offsetAndFlags: (0, 0), hopByHop: hopByHop,
                                                      seed: UInt64(i))
                    let buffer = PacketBuffer(inner)
                    let sequence = c.sequence(i)
                    try #require(ESPOutbound.encapsulate(&buffer.view, sa: sa, sequence: SequenceNumber(sequence),
                                                         core: core) == nil, "\(c) size \(size)")
                    // ESP follows the Fragment header, whose Next Header names it.
                    let fragmentAt = hopByHop ? 48 : 40
                    #expect(buffer.bytes[fragmentAt] == 50 && buffer.bytes[fragmentAt + 2] == 0
                            && buffer.bytes[fragmentAt + 3] == 0, "\(c) size \(size)")
                    jobs.append(c.job("decrypt", key: key, sequence: sequence, packet: buffer.bytes, fromPeer: false))
                    expected.append(("\(c) size \(size) hop-by-hop \(hopByHop)", inner))
                }
            }
        }
        try Self.expectDecrypted(jobs, expected)
    }

    /// Sluice decrypts every packet scapy encrypts (random IVs, scapy's own
    /// outer headers and padding) to the exact inner packet.
    @Test func sluiceDecryptsScapy() throws {
        let core = try makeCore()
        var jobs: [ScapyPeer.Job] = []
        var cases: [(PeerCase, Int, [UInt8])] = []
        for c in PeerCase.all {
            let key = try TestKey(c.aead, seed: UInt64(c.spi.rawValue))
            for (i, size) in Self.sizes.enumerated() {
                let inner = Inner.udp(ipv6: c.cell.innerIPv6, payload: size, seed: UInt64(i + 100))
                jobs.append(c.job("encrypt", key: key, sequence: c.sequence(i), packet: inner, fromPeer: true))
                cases.append((c, i, inner))
            }
        }
        let results = try ScapyPeer.process(jobs)
        try #require(results.count == jobs.count)
        var windows: [String: TestWindow] = [:]
        var keys: [String: TestKey] = [:]
        for (result, (c, i, inner)) in zip(results, cases) {
            let label = "\(c) packet \(i)"
            #expect(result.error == nil, "\(label): \(result.error ?? "")")
            guard let packet = result.packet else { continue }
            let key = try keys[c.description] ?? TestKey(c.aead, seed: UInt64(c.spi.rawValue))
            keys[c.description] = key
            let window = try windows[c.description] ?? TestWindow(esn: c.esn, highest: c.sequence(0) - 1)
            windows[c.description] = window
            // Inbound: scapy is the peer, so the SA's addresses are the other way round.
            let source: IPAddress? = c.cell.isTunnel ? (c.cell.outerIPv6 ? .v6(Gateways.v6Peer) : .v4(Gateways.v4Peer)) : nil
            let destination: IPAddress? = c.cell.isTunnel
                ? (c.cell.outerIPv6 ? .v6(Gateways.v6Local) : .v4(Gateways.v4Local)) : nil
            let sa = try InboundSA(spi: c.spi, mode: c.cell.isTunnel ? .tunnel : .transport, key: key.handle,
                                   esn: c.esn, source: source, destination: destination,
                                   udpEncapsulation: c.udp ? (4500, 4500) : nil,
                                   selectors: [Inner.selector(ipv6: c.cell.innerIPv6)])
            let buffer = PacketBuffer(hexBytes(packet))
            let drop = receive(buffer, sa: sa, window: window, core: core)
            #expect(drop == nil, "\(label): \(String(describing: drop))")
            let same = buffer.bytes == inner
            #expect(same, "\(label)")
            #expect(buffer.guardsIntact, "\(label)")
        }
    }
}
