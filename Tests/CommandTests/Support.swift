// Helpers shared by the command language tests.

import Command
import Packet

func parse(_ line: String, file: String = "t.conf", line number: Int = 1) throws(CommandError) -> Command? {
    try CommandParser.parseLine(Substring(line), location: SourceLocation(file: file, line: number, column: 1))?.command
}

/// The error loading `text` as a config file gives, or nil when it loads.
func loadError(_ text: String) -> CommandError? {
    do {
        _ = try GatewayConfig.load(text: text, name: "t.conf")
        return nil
    } catch {
        return error
    }
}

func ip(_ text: String) -> IPAddress { IPAddress(text)! }
func prefix(_ text: String) -> IPPrefix { IPPrefix(text)! }
func mac(_ text: String) -> MACAddress { MACAddress(text)! }

/// A small deterministic generator (SplitMix64), so random tests repeat exactly.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Key material of `count` bytes 0, 1, 2, … as a `key` value.
func hexKey(_ count: Int, from first: UInt8 = 0) -> String {
    "0x" + (0..<count).map { i -> String in
        let byte = first &+ UInt8(truncatingIfNeeded: i)
        return (byte < 16 ? "0" : "") + String(byte, radix: 16)
    }.joined()
}

func keyBytes(_ count: Int, from first: UInt8 = 0) -> SAKeyMaterial {
    try! SAKeyMaterial((0..<count).map { first &+ UInt8(truncatingIfNeeded: $0) })
}

/// 16-byte key and salt for aes-gcm-128; 32 and salt for the other two.
let key128 = hexKey(20)
let key256 = hexKey(36)

func spi(_ raw: UInt32) -> SecurityParameterIndex { SecurityParameterIndex(raw) }
