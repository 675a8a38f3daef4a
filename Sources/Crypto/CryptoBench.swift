import CCrypto
#if canImport(Glibc)
import Glibc
#endif

/// Crypto throughput measurement for `sluicebench --mode crypto`: one core,
/// hot cache, in-place buffers, 8-byte AAD. Not a test; not on any data path.
public enum CryptoBench {
    /// How packets reach the engine.
    public enum Path: Sendable, Hashable, CustomStringConvertible {
        /// `AEADKey.seal` once per packet.
        case perPacket
        /// `AEADKey.seal(_:burst:aadLength:)` once per burst.
        case burst
        /// The named baseline: intel-ipsec-mb's job API driven from C with no
        /// wrapper (get_next_job / submit_job_nocheck / flush per burst).
        case rawIPsecMBJobs
        /// intel-ipsec-mb's direct API from C with no wrapper.
        case rawIPsecMBDirect
        /// libsodium's AEAD functions from C with no wrapper.
        case rawSodium

        public var description: String {
            switch self {
            case .perPacket: return "per-packet"
            case .burst: return "burst"
            case .rawIPsecMBJobs: return "raw-ipsec-mb-jobs"
            case .rawIPsecMBDirect: return "raw-ipsec-mb-direct"
            case .rawSodium: return "raw-sodium"
            }
        }
    }

    public enum Operation: Sendable, Hashable, CustomStringConvertible {
        /// Encrypt + ICV (outbound).
        case seal
        /// Seal then open each packet (one inbound + one outbound; Mpps counts pairs).
        /// Raw direct and libsodium paths: each burst is sealed, then opened.
        case sealOpen
        /// Decrypt + ICV check of valid sealed payloads (inbound). Raw paths only.
        case open

        public var description: String {
            switch self {
            case .seal: return "seal"
            case .sealOpen: return "seal+open"
            case .open: return "open"
            }
        }
    }

    public struct Measurement: Sendable, CustomStringConvertible {
        public let engine: CryptoEngine
        public let aead: AEADAlgorithm
        public let path: Path
        public let operation: Operation
        public let payloadSize: Int
        public let burst: Int
        public let packets: Int
        public let nanoseconds: UInt64
        /// Allocations and reference counting during the timed window, when the
        /// process runs under the alloc-counter preload (Perf/alloc-counter);
        /// nil otherwise. Raw paths are C and report nil.
        public let allocations: AllocationCounts?

        public var mpps: Double { Double(packets) * 1e3 / Double(max(nanoseconds, 1)) }
        /// Payload gigabits per second.
        public var gbps: Double { Double(packets * payloadSize * 8) / Double(max(nanoseconds, 1)) }

        public var description: String {
            let mppsText = String(Int((mpps * 100).rounded())).leftPadded(4)
            return "\(engine) \(aead) \(operation) \(path) size=\(payloadSize) burst=\(burst): "
                + "\(mppsText.dropLast(2)).\(mppsText.suffix(2)) Mpps, \(Int(gbps.rounded())) Gb/s"
                + (allocations.map { " \($0)" } ?? "")
        }
    }

    /// Measures `packets` packets of `payloadSize` bytes in bursts of `burst`
    /// (1...AEADBurst.capacity) over `burst` distinct buffers, after a warm-up
    /// of at least a tenth as many and 50 ms (raw paths: a tenth as many).
    /// Each payload starts `offset` bytes (0-63) past a 64-byte boundary.
    /// Raw paths ignore `engine` (the path names the
    /// library), measure `.seal` or `.open`, and return nil when their library
    /// or the algorithm is unusable here.
    public static func measure(engine kind: CryptoEngineKind, aead: AEADAlgorithm, payloadSize: Int,
                               burst: Int, packets: Int, path: Path = .burst,
                               operation: Operation = .seal, offset: Int = 0) throws(CryptoError) -> Measurement? {
        precondition(burst >= 1 && burst <= AEADBurst.capacity && payloadSize >= 0 && packets > 0 && (0..<64).contains(offset))
        switch path {
        case .rawIPsecMBJobs, .rawIPsecMBDirect, .rawSodium:
            precondition(operation != .sealOpen || path != .rawIPsecMBJobs, "the raw job path measures seal or open")
            let engine: Int32 = path == .rawSodium ? 1 : 0
            let api: Int32 = path == .rawIPsecMBJobs ? 0 : 1
            let open: Int32 = operation == .open ? 1 : (operation == .sealOpen ? 2 : 0)
            let c = slc_aead(rawValue: UInt32(aead.rawValue))
            func run(_ n: Int) -> UInt64 {
                slc_bench_raw(engine, c, api, open, UInt32(payloadSize), UInt32(offset), UInt32(burst), UInt64(n), 0)
            }
            _ = run(max(packets / 10, burst))
            let ns = run(packets)
            guard ns != 0 else { return nil }
            let rounded = (packets + burst - 1) / burst * burst
            return Measurement(engine: path == .rawSodium ? .sodium : .ipsecMB, aead: aead, path: path, operation: operation,
                               payloadSize: payloadSize, burst: burst, packets: rounded, nanoseconds: ns,
                               allocations: nil)
        case .perPacket, .burst:
            precondition(operation != .open, "open alone is measured on raw paths")
        }

        let core = try CryptoCore()
        var material = [UInt8](repeating: 0, count: aead.keyMaterialLength)
        for i in material.indices { material[i] = UInt8(truncatingIfNeeded: 0xA0 &+ i) }
        let key = try AEADKey(aead, keyMaterial: material, engine: kind)
        let batch = try AEADBurst()

        let stride = (offset + payloadSize + AEADAlgorithm.icvLength + 63) & ~63
        let buffers = UnsafeMutableRawPointer.allocate(byteCount: stride * burst, alignment: 64)
        let meta = UnsafeMutableRawPointer.allocate(byteCount: 16 * burst, alignment: 64) // IV 8 + AAD 8
        defer { buffers.deallocate(); meta.deallocate() }
        buffers.initializeMemory(as: UInt8.self, repeating: 0x5A, count: stride * burst)
        for i in 0..<burst {
            meta.storeBytes(of: UInt64(i + 1).bigEndian, toByteOffset: 16 * i, as: UInt64.self)
            meta.storeBytes(of: UInt64(0x1234_5678_0000_0000 | UInt64(i)).bigEndian, toByteOffset: 16 * i + 8,
                            as: UInt64.self)
        }

        func run(_ count: Int) -> Int {
            var done = 0
            var failures = 0
            while done < count {
                switch path {
                case .perPacket:
                    for i in 0..<burst {
                        let p = buffers + stride * i + offset
                        key.seal(core, payload: p, length: payloadSize, iv: meta + 16 * i, aad: meta + 16 * i + 8,
                                 aadLength: 8, icv: p + payloadSize)
                        if operation == .sealOpen,
                           !key.open(core, payload: p, length: payloadSize, iv: meta + 16 * i,
                                     aad: meta + 16 * i + 8, aadLength: 8, icv: p + payloadSize) {
                            failures &+= 1
                        }
                    }
                default:
                    batch.removeAll()
                    for i in 0..<burst {
                        let p = buffers + stride * i + offset
                        batch.append(payload: p, length: payloadSize, iv: meta + 16 * i, aad: meta + 16 * i + 8,
                                     icv: p + payloadSize)
                    }
                    key.seal(core, burst: batch, aadLength: 8)
                    if operation == .sealOpen, key.open(core, burst: batch, aadLength: 8) != burst {
                        failures &+= 1
                    }
                }
                done &+= burst
            }
            precondition(failures == 0, "a sealed packet failed to open")
            return done
        }

        // Warm-up: a tenth of the packets and at least 50 ms (caches, branch
        // predictors, clock ramp-up; the first ContinuousClock.now allocates).
        let warmStart = ContinuousClock.now
        repeat {
            _ = run(max(packets / 10, burst))
        } while ContinuousClock.now - warmStart < .milliseconds(50)
        let countsBefore = AllocationCounts.read()
        let start = ContinuousClock.now
        let done = run(packets)
        let elapsed = ContinuousClock.now - start
        let countsAfter = AllocationCounts.read()
        let ns = UInt64(elapsed.components.seconds) * 1_000_000_000
            + UInt64(elapsed.components.attoseconds / 1_000_000_000)
        return Measurement(engine: key.engine, aead: aead, path: path, operation: operation,
                           payloadSize: payloadSize, burst: burst, packets: done, nanoseconds: max(ns, 1),
                           allocations: countsAfter.flatMap { after in countsBefore.map { after - $0 } })
    }

    /// One row of the overlap probe (`slc_bench_overlap`): TSC cycles per
    /// round trip (a seal and an open of the same payload with intel-ipsec-mb's
    /// direct AES-256-GCM API) with nothing between the calls, of two blocks of
    /// scalar work alone, of both (a block after each call), and of both
    /// batched (a burst's blocks all before its calls).
    public struct Overlap: Sendable {
        /// The block's size: steps of eight independent ALU chains (34
        /// instructions a step) or of one dependent multiply-add chain (6).
        public let steps: Int
        public let cipherCycles: Double
        public let workCycles: Double
        public let togetherCycles: Double
        public let batchedCycles: Double

        /// The share of the blocks' own cycles the cipher hid: 0 when the two
        /// simply add up, 1 when the blocks cost nothing beside the cipher.
        public var hidden: Double { (cipherCycles + workCycles - togetherCycles) / max(workCycles, 1) }
        /// The same share with the blocks batched.
        public var hiddenBatched: Double { (cipherCycles + workCycles - batchedCycles) / max(workCycles, 1) }
    }

    /// Runs the overlap probe on the calling thread for each block size in
    /// `steps`: issue-bound blocks (`latencyBound` false: what a packet
    /// path's parsing and bookkeeping look like) or latency-bound ones. Nil
    /// when intel-ipsec-mb is not usable here.
    public static func overlap(payloadSize: Int, latencyBound: Bool, steps: [Int], rounds: Int = 2_000,
                               repeats: Int = 5) -> [Overlap]? {
        precondition(payloadSize > 0 && rounds > 0 && repeats > 0 && !steps.isEmpty && steps.allSatisfy { $0 >= 0 })
        var results = [slc_overlap_result](repeating: slc_overlap_result(), count: steps.count)
        let counts = steps.map { UInt32(clamping: $0) }
        let status = slc_bench_overlap(UInt32(payloadSize), latencyBound ? 1 : 0, counts, UInt32(counts.count),
                                       UInt64(rounds), UInt32(repeats), &results)
        guard status == 0 else { return nil }
        return zip(steps, results).map {
            Overlap(steps: $0, cipherCycles: $1.cipher, workCycles: $1.work, togetherCycles: $1.together,
                    batchedCycles: $1.batched)
        }
    }

    /// The standard table: every engine × AEAD it serves × 64/512/1400 bytes,
    /// per-packet and burst paths, plus the raw intel-ipsec-mb baselines.
    public static func standardSuite(packets: Int = 2_000_000, burst: Int = 32) -> [Measurement] {
        var out: [Measurement] = []
        for aead in AEADAlgorithm.allCases {
            for size in [64, 512, 1400] {
                for kind in [CryptoEngineKind.ipsecMB, .sodium] {
                    for path in [Path.perPacket, .burst] {
                        if let m = try? measure(engine: kind, aead: aead, payloadSize: size, burst: burst,
                                                packets: packets, path: path) {
                            out.append(m)
                        }
                    }
                }
                for path in [Path.rawIPsecMBJobs, .rawIPsecMBDirect, .rawSodium] {
                    if let m = try? measure(engine: .ipsecMB, aead: aead, payloadSize: size, burst: burst,
                                            packets: packets, path: path) {
                        out.append(m)
                    }
                }
            }
        }
        return out
    }
}

/// Counters of the LD_PRELOAD alloc-counter (Perf/alloc-counter, built by
/// scripts/build-alloc-counter.sh): malloc-family calls, swift_allocObject,
/// retains and releases, process-wide.
public struct AllocationCounts: Sendable, Hashable, CustomStringConvertible {
    public var mallocs: UInt64
    public var swiftAllocs: UInt64
    public var retains: UInt64
    public var releases: UInt64

    typealias ReadFn = @convention(c) (UnsafeMutablePointer<UInt64>?) -> Void

    static let reader: ReadFn? = {
        #if canImport(Glibc)
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sl_alloccount_read") else { return nil }
        return unsafeBitCast(sym, to: ReadFn.self)
        #else
        return nil
        #endif
    }()

    /// The counters now, or nil without the preload. Allocates nothing.
    public static func read() -> AllocationCounts? {
        guard let fn = reader else { return nil }
        var v: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutablePointer(to: &v) { p in
            p.withMemoryRebound(to: UInt64.self, capacity: 4) { fn($0) }
        }
        return AllocationCounts(mallocs: v.0, swiftAllocs: v.1, retains: v.2, releases: v.3)
    }

    static func - (a: AllocationCounts, b: AllocationCounts) -> AllocationCounts {
        AllocationCounts(mallocs: a.mallocs &- b.mallocs, swiftAllocs: a.swiftAllocs &- b.swiftAllocs,
                         retains: a.retains &- b.retains, releases: a.releases &- b.releases)
    }

    public var description: String {
        "[mallocs \(mallocs), swift allocs \(swiftAllocs), retains \(retains), releases \(releases)]"
    }
}

extension String {
    fileprivate func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}
