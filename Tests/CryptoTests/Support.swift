import CCrypto
@testable import Crypto
import Foundation
import TestSupport


func hex(_ s: String) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(s.count / 2)
    var it = s.makeIterator()
    while let a = it.next(), let b = it.next() {
        out.append(UInt8(String([a, b]), radix: 16)!)
    }
    return out
}

func hexString(_ b: [UInt8]) -> String { b.map { String(format: "%02x", $0) }.joined() }

/// SplitMix64: seeded, reproducible.
struct SeededRandom: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    mutating func bytes(_ n: Int) -> [UInt8] { (0..<n).map { _ in UInt8.random(in: 0...255, using: &self) } }
}

/// The engines that can serve `aead` on this machine.
func engines(for aead: AEADAlgorithm) -> [CryptoEngineKind] {
    [CryptoEngineKind.ipsecMB, .sodium].filter { (try? CryptoEngines.resolve($0, for: aead)) != nil }
}

/// One ESP packet's crypto inputs, held in Swift arrays for the tests.
struct Packet {
    var payload: [UInt8]
    var iv: [UInt8]
    var aad: [UInt8]
    var icv = [UInt8](repeating: 0, count: 16)
}

extension AEADKey {
    func seal(_ core: borrowing CryptoCore, _ p: inout Packet) {
        let n = p.payload.count
        let aadCount = p.aad.count
        p.payload.withUnsafeMutableBytes { payload in
            p.iv.withUnsafeBytes { iv in
                p.aad.withUnsafeBytes { aad in
                    p.icv.withUnsafeMutableBytes { icv in
                        // An empty array's buffer may have a nil base; give the engine a valid pointer.
                        withUnsafeTemporaryAllocation(byteCount: 1, alignment: 1) { scratch in
                            seal(core, payload: payload.baseAddress ?? scratch.baseAddress!, length: n,
                                 iv: iv.baseAddress!, aad: aad.baseAddress!, aadLength: aadCount,
                                 icv: icv.baseAddress!)
                        }
                    }
                }
            }
        }
    }

    func open(_ core: borrowing CryptoCore, _ p: inout Packet) -> Bool {
        let n = p.payload.count
        let aadCount = p.aad.count
        return p.payload.withUnsafeMutableBytes { payload in
            p.iv.withUnsafeBytes { iv in
                p.aad.withUnsafeBytes { aad in
                    p.icv.withUnsafeBytes { icv in
                        withUnsafeTemporaryAllocation(byteCount: 1, alignment: 1) { scratch in
                            open(core, payload: payload.baseAddress ?? scratch.baseAddress!, length: n,
                                 iv: iv.baseAddress!, aad: aad.baseAddress!, aadLength: aadCount,
                                 icv: icv.baseAddress!)
                        }
                    }
                }
            }
        }
    }
}

/// AAD for ESP: SPI || seq (8 bytes) or SPI || seq-high || seq-low (12, ESN).
func espAAD(spi: UInt32, seq: UInt64, esn: Bool) -> [UInt8] {
    var out = withUnsafeBytes(of: spi.bigEndian, Array.init)
    if esn { out += withUnsafeBytes(of: UInt32(truncatingIfNeeded: seq >> 32).bigEndian, Array.init) }
    out += withUnsafeBytes(of: UInt32(truncatingIfNeeded: seq).bigEndian, Array.init)
    return out
}

/// Reads a /proc file (they report size 0, so read until EOF).
func readProcFile(_ path: String) -> String {
    guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
    defer { try? handle.close() }
    let data = (try? handle.readToEnd()) ?? Data()
    return String(decoding: data, as: UTF8.self)
}
