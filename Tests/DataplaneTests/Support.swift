// Helpers shared by the Dataplane tests: the one EAL of this test process,
// the root suite that serialises everything using it, seeds, and small
// address and MAC helpers.

import CShims
import Crypto
import Dataplane
import Glibc
import IPsec
import Packet
import Synchronization
import Testing

// MARK: - The EAL, once per process

/// `rte_eal_init` succeeds once per process; every test that needs DPDK calls
/// `TestEAL.ensure()`, which initialises it the first time (from whichever
/// thread gets there first) and rethrows the first failure afterwards.
/// Lcore 0 is the main lcore (the test threads); lcores 1 and 2 are workers,
/// all floating on CPUs 0–1 (the machine has two). The gateway suite uses
/// lcore 1; lcore 2 only exists so that a two-worker refusal can be checked.
enum TestEAL {
    static let arguments = [
        "dataplane-tests", "--no-huge", "-m", "512", "--no-pci", "--no-shconf", "--no-telemetry",
        "--lcores", "0@(0-1),1@(0-1),2@(0-1)", "--log-level", "lib.eal:error",
    ]

    private enum State: Sendable {
        case notStarted
        case ready
        case failed(String)
    }

    private static let state = Mutex<State>(.notStarted)

    static func ensure() throws {
        let outcome: State = state.withLock { s in
            if case .notStarted = s {
                do {
                    _ = try EAL.initialize(arguments: arguments)
                    s = .ready
                } catch {
                    s = .failed("\(error)")
                }
            }
            return s
        }
        if case .failed(let message) = outcome {
            throw DataplaneError("test EAL initialisation failed: \(message)")
        }
    }
}

/// Every test that touches the EAL (FIBs, ports, the gateway) lives in a suite
/// nested in this one: `.serialized` applies to all of them recursively, so no
/// two run at once, whatever other test targets run in parallel.
@Suite(.serialized) struct EALSuites {}

// MARK: - Seeds

/// Seeds for randomised tests: `SLUICE_TEST_SEED` (decimal or 0x-hex) replays
/// exactly one; otherwise fixed seeds plus one fresh seed per run. Failures
/// name the seed.
enum TestSeeds {
    static func list(fixed: [UInt64]) -> [UInt64] {
        if let text = getenv("SLUICE_TEST_SEED").map({ String(cString: $0) }) {
            let v = text.hasPrefix("0x") ? UInt64(text.dropFirst(2), radix: 16) : UInt64(text)
            if let v { return [v] }
        }
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var mix = SplitMix64(seed: UInt64(bitPattern: Int64(ts.tv_sec)) &* 1_000_000_007 &+ UInt64(ts.tv_nsec))
        return fixed + [mix.next()]
    }

    static func hex(_ seed: UInt64) -> String { "0x" + String(seed, radix: 16) }
}

// MARK: - Small helpers

func ipv4(_ text: String) -> IPv4Address { IPv4Address(text)! }
func ipv6(_ text: String) -> IPv6Address { IPv6Address(text)! }
func mac(_ text: String) -> MACAddress { MACAddress(text)! }

func mac(_ b: [UInt8]) -> MACAddress { MACAddress((b[0], b[1], b[2], b[3], b[4], b[5])) }

extension MACAddress {
    /// A locally administered unicast address whose last five bytes encode `n`.
    static func numbered(_ n: Int, tag: UInt8 = 0x02) -> MACAddress {
        let v = UInt64(n)
        return MACAddress((tag & 0xFE | 0x02, UInt8(truncatingIfNeeded: v >> 32), UInt8(truncatingIfNeeded: v >> 24),
                           UInt8(truncatingIfNeeded: v >> 16), UInt8(truncatingIfNeeded: v >> 8), UInt8(truncatingIfNeeded: v)))
    }
}

extension IPv6Address {
    /// The 16 network-order bytes, appended to `out`.
    func append(to out: inout [UInt8]) {
        for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: high >> UInt64(s))) }
        for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: low >> UInt64(s))) }
    }
}

/// A hex dump of the first difference between two byte arrays, for failure messages.
func firstDifference(_ a: [UInt8], _ b: [UInt8]) -> String {
    if a.count != b.count { return "lengths differ: \(a.count) vs \(b.count)" }
    guard let i = a.indices.first(where: { a[$0] != b[$0] }) else { return "equal" }
    func h(_ x: UInt8) -> String { (x < 16 ? "0" : "") + String(x, radix: 16) }
    return "first difference at byte \(i): \(h(a[i])) vs \(h(b[i]))"
}

// MARK: - An ESP peer

/// The far end of the harness's tunnel, as its inbound SAs expect it: seals
/// a frame's IP packet in tunnel mode from 192.0.2.254 to 192.0.2.1 with
/// AES-128-GCM under key material 0x6d × 20, each SPI numbered from 1, and
/// puts the frame's Ethernet header back in front.
final class TunnelPeer {
    let core: CryptoCore
    let key: AEADKey
    var next: [UInt32: UInt64] = [:]

    /// `keyMaterial`: another key than the harness's SAs' (`open` only).
    init(keyMaterial: [UInt8] = [UInt8](repeating: 0x6d, count: 20)) throws {
        core = try CryptoCore()
        key = try AEADKey(.aes128GCM, keyMaterial: keyMaterial, engine: .auto)
    }

    /// The ESP frame of `inner` (a frame) for SA `spi`, from the unprotected
    /// neighbour to the gateway: outer IPv4 (or IPv6 with `outer6`), plain
    /// ESP or ESP in UDP `udp` (source, destination ports). `transport`:
    /// transport mode instead, the packet keeping its own header.
    func frame(spi: UInt32, inner: [UInt8], outer6: Bool = false,
               udp: (source: UInt16, destination: UInt16)? = nil, transport: Bool = false) -> [UInt8] {
        let seq = next[spi, default: 1]
        next[spi] = seq + 1
        let outer: OuterHeader = outer6
            ? .ipv6(source: IPv6Address("2001:db8:b::fe")!, destination: IPv6Address("2001:db8:b::1")!)
            : .ipv4(source: IPv4Address("192.0.2.254")!, destination: IPv4Address("192.0.2.1")!)
        let sa = OutboundSA(spi: SPI(spi), mode: transport ? .transport : .tunnel(outer), key: key.unsafeHandle, esn: false,
                            udpEncapsulation: udp, df: .copy)
        let size = inner.count + 512
        var buffer = [UInt8](repeating: 0, count: size)
        let ip = Array(inner.dropFirst(14))
        var ethernet = Array(inner.prefix(14))
        if transport {
            // The packet's own EtherType.
        } else if outer6 { ethernet[12] = 0x86; ethernet[13] = 0xDD } else { ethernet[12] = 0x08; ethernet[13] = 0x00 }
        return buffer.withUnsafeMutableBytes { b -> [UInt8] in
            let start = b.baseAddress! + 128
            start.copyMemory(from: ip, byteCount: ip.count)
            var view = PacketView(start: start, length: ip.count, headroom: 128, tailroom: size - 128 - ip.count)
            guard ESPOutbound.encapsulate(&view, sa: sa, sequence: SequenceNumber(seq), core: core) == nil else { return [] }
            return ethernet + Array(UnsafeRawBufferPointer(start: view.start, count: view.length))
        }
    }

    /// Opens `esp` (an ESP packet from its SPI to its ICV, no ESN) with the
    /// peer's key, as the far end would the gateway's outbound SA of that
    /// key: the sequence number and the decrypted payload with its trailer
    /// (padding, pad length, next header), or nil when it does not
    /// authenticate. Reads the packet itself, not through ESPInbound.
    func open(_ esp: [UInt8]) -> (sequence: UInt32, plaintext: [UInt8])? {
        guard esp.count >= 16 + 16 else { return nil }
        var bytes = esp
        let length = esp.count - 16 - 16
        let authentic = bytes.withUnsafeMutableBytes { b in
            key.open(core, payload: b.baseAddress! + 16, length: length, iv: b.baseAddress! + 8, aad: b.baseAddress!,
                     aadLength: 8, icv: b.baseAddress! + 16 + length)
        }
        guard authentic else { return nil }
        let sequence = esp[4..<8].reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        return (sequence, Array(bytes[16..<(16 + length)]))
    }
}
