// sluicefuzz: the ESP transforms under coverage-guided fuzzing, and a
// seeded replay of the same checks.
//
// Built with `-D SLUICE_FUZZ` and `--sanitize=fuzzer` (scripts/fuzz.sh),
// this is a libFuzzer target: libFuzzer's main calls
// LLVMFuzzerTestOneInput, and a broken rule aborts with the input saved.
// In an ordinary build it is a command:
//   sluicefuzz [--runs N] [--seed S] [--control] [--json]   seeds, then N mutations of them
//   sluicefuzz --write-seeds DIR                             the seeds as files, for libFuzzer
//   sluicefuzz FILE…                                         replays inputs (e.g. a crash libFuzzer saved)
// Exit status 1 on the first broken rule, with the input in hex.

import Crypto
import IPsec
import Packet
#if canImport(Glibc)
import Glibc
#endif

// MARK: - Seeds

enum Seeds {
    /// An IPv4 or IPv6 UDP datagram with `payload` pattern bytes (IPv6 with a
    /// Destination Options header or an atomic Fragment header, RFC 6946,
    /// when `extensionHeader` is 60 or 44).
    static func datagram(ipv6: Bool, payload: Int, ecn: UInt8, extensionHeader: UInt8?, rng: inout SplitMix64) -> [UInt8] {
        let body = (0..<payload).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
        let udpLength = 8 + payload
        let udp: [UInt8] = [0x04, 0x57, 0x00, 0x35, UInt8(udpLength >> 8), UInt8(truncatingIfNeeded: udpLength), 0, 0] + body
        if !ipv6 {
            let total = 20 + udpLength
            return withIPv4Checksum([0x45, 0xB8 | ecn, UInt8(total >> 8), UInt8(truncatingIfNeeded: total), 0x43, 0x21,
                                     0x40, 0, 61, 17, 0, 0, 10, 0, 0, 1, 10, 1, 0, 7]) + udp
        }
        let options: [UInt8] = switch extensionHeader {
        case 60: [17, 0, 1, 4, 0, 0, 0, 0]
        case 44: [17, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]
        default: []
        }
        let payloadLength = options.count + udpLength
        return [0x6B, 0x80 | ecn << 4, 0xAB, 0xCD, UInt8(payloadLength >> 8), UInt8(truncatingIfNeeded: payloadLength),
                options.isEmpty ? 17 : extensionHeader!, 60]
            + IPv6Address("2001:db8:10::1")!.bytes + IPv6Address("2001:db8:20::7")!.bytes + options + udp
    }

    /// `payload` with RFC 4303 padding (1, 2, 3…) to a 4-byte boundary, pad length and next header.
    static func trailered(_ payload: [UInt8], nextHeader: UInt8) -> [UInt8] {
        let pad = (4 - (payload.count + 2) % 4) % 4
        return payload + (0..<pad).map { UInt8($0 + 1) } + [UInt8(pad), nextHeader]
    }

    /// One seed per check and shape, options drawn from `rng`.
    static func all(_ fixture: Fixture, rng: inout SplitMix64) -> [[UInt8]] {
        var seeds: [[UInt8]] = []
        for index in 0..<24 {
            let shape = Shape(index)
            for check in 0..<3 {
                var options = UInt8(truncatingIfNeeded: rng.next())
                if !shape.esn && options >> 2 & 3 == 3 { options ^= 0x04 }  // inside the 32-bit sequence space
                let ipv6 = shape.innerIPv6
                let inner = datagram(ipv6: ipv6, payload: Int(rng.next() % 300), ecn: UInt8(rng.next() % 4),
                                     extensionHeader: ipv6 && !shape.tunnel ? [nil, 60, 44][Int(rng.next() % 3)] : nil,
                                     rng: &rng)
                let bytes: [UInt8]
                switch check {
                case 0:
                    bytes = inner
                case 1:
                    let arena = Arena(inner, headroom: headroom, tailroom: tailroom)
                    _ = ESPOutbound.encapsulate(&arena.view, sa: fixture.outboundSA(shape, options),
                                                sequence: SequenceNumber(sequencePosition(options)), core: fixture.core)
                    bytes = arena.bytes
                default:
                    if shape.tunnel {
                        bytes = trailered(inner, nextHeader: ipv6 ? 41 : 4)
                    } else {
                        bytes = trailered(Array(inner[(ipv6 ? 40 : 20)...]), nextHeader: ipv6 ? inner[6] : 17)
                    }
                }
                seeds.append([UInt8(index * 3 + check), options] + bytes)
            }
        }
        return seeds
    }

    /// `seed` changed in 1…4 ways: bits flipped, bytes set, cut, grown,
    /// a length field rewritten, other options.
    static func mutate(_ seed: [UInt8], rng: inout SplitMix64) -> [UInt8] {
        var b = seed
        for _ in 0...(rng.next() % 4) {
            let at = 2 + Int(rng.next() % UInt64(max(b.count - 2, 1)))
            switch rng.next() % 7 {
            case 0 where at < b.count: b[at] ^= 1 << (rng.next() % 8)
            case 1 where at < b.count: b[at] = UInt8(truncatingIfNeeded: rng.next())
            case 2: b = Array(b.prefix(2 + Int(rng.next() % UInt64(max(b.count - 1, 1)))))
            case 3: b += (0..<(1 + rng.next() % 8)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            case 4:
                // A 16-bit length where IPv4 / IPv6 / UDP keep theirs.
                let field = 2 + [2, 4, 24, 44][Int(rng.next() % 4)]
                if field + 1 < b.count { b[field] = UInt8(rng.next() % 3); b[field + 1] = UInt8(truncatingIfNeeded: rng.next()) }
            case 5: b[1] = UInt8(truncatingIfNeeded: rng.next())
            default: b[0] = UInt8(truncatingIfNeeded: Int(b[0] % 3) + 3 * Int(rng.next() % 24))
            }
        }
        return b
    }
}

// MARK: - Tally

struct Tally {
    var counts: [String: Int] = [:]
    mutating func add(_ input: [UInt8], _ outcome: Outcome) {
        let check = ["roundTrip", "received", "authenticated"][Int(input.first ?? 0) % 3]
        let key: String
        switch outcome {
        case .delivered: key = check + ".delivered"
        case .dropped(let d): key = check + ".dropped." + d.name
        case .refused(let d): key = check + ".refused." + d.name
        case .tooShort: key = "too_short"  // no check was named
        }
        counts[key, default: 0] += 1
    }
    var json: String {
        "{" + counts.sorted { $0.key < $1.key }.map { "\"\($0.key)\":\($0.value)" }.joined(separator: ",") + "}"
    }
}

// MARK: - Entry points

#if SLUICE_FUZZ
nonisolated(unsafe) var sharedFixture: Fixture? = nil

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutableRawPointer) -> CInt {
    do { sharedFixture = try Fixture() } catch { print("sluicefuzz: \(error)"); abort() }
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let input = data.map { [UInt8](UnsafeBufferPointer(start: $0, count: size)) } ?? []
    do {
        _ = try sharedFixture!.run(input)
    } catch {
        // To stderr, unbuffered: abort() would lose buffered output.
        var report = "sluicefuzz: \(error)\ninput \(hex(input))\n"
        report.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
        abort()
    }
    return 0
}
#else
@main
struct SluiceFuzz {
    static func main() throws {
        var args = Array(CommandLine.arguments.dropFirst())
        func option(_ name: String) -> String? {
            guard let i = args.firstIndex(of: name), i + 1 < args.count else { return nil }
            defer { args.removeSubrange(i...(i + 1)) }
            return args[i + 1]
        }
        func flag(_ name: String) -> Bool {
            guard let i = args.firstIndex(of: name) else { return false }
            args.remove(at: i)
            return true
        }
        let runs = Int(option("--runs") ?? "") ?? 20_000
        var rng = SplitMix64(seed: UInt64(option("--seed") ?? "") ?? 0x5EED)
        let seedDirectory = option("--write-seeds")
        let control = flag("--control")
        let json = flag("--json")
        let fixture = try Fixture()
        let seeds = Seeds.all(fixture, rng: &rng)

        if let seedDirectory {
            for (i, seed) in seeds.enumerated() {
                let path = "\(seedDirectory)/seed-\(i)"
                guard let f = fopen(path, "wb") else { print("sluicefuzz: cannot write \(path)"); exit(2) }
                _ = seed.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
                fclose(f)
            }
            print("sluicefuzz: \(seeds.count) seeds in \(seedDirectory)")
            return
        }

        var inputs: [[UInt8]] = []
        if !args.isEmpty {
            for path in args {
                guard let f = fopen(path, "rb") else { print("sluicefuzz: cannot read \(path)"); exit(2) }
                var bytes: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 4096)
                while case let n = fread(&buffer, 1, buffer.count, f), n > 0 { bytes += buffer[..<n] }
                fclose(f)
                inputs.append(bytes)
            }
        } else {
            inputs = seeds + (0..<runs).map { _ in Seeds.mutate(seeds[Int(rng.next() % UInt64(seeds.count))], rng: &rng) }
        }
        var tally = Tally()
        for input in inputs {
            do {
                tally.add(input, try fixture.run(input, control: control))
            } catch {
                print("sluicefuzz: \(error)\ninput \(hex(input))")
                exit(1)
            }
        }
        print(json ? tally.json : "sluicefuzz: \(inputs.count) inputs, no rule broken\n"
              + tally.counts.sorted { $0.key < $1.key }.map { "  \($0.key) \($0.value)" }.joined(separator: "\n"))
    }
}
#endif
