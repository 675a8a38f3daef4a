// The raw baselines sluicebench divides by: intel-ipsec-mb and libsodium
// driven from C (CryptoBench raw paths). An open must authenticate every
// packet, which only holds if the buffers really alternate between the two
// ciphertexts the set-up sealed (slc_bench_raw returns 0 when one fails).

@testable import Crypto
import CCrypto
import Testing

@Suite struct RawBaselineTests {
    static let paths: [CryptoBench.Path] = [.rawIPsecMBDirect, .rawIPsecMBJobs, .rawSodium]

    /// sealOpen (sluicebench --mode round-trip's baseline): each burst sealed, then opened; not on the job path.
    @Test(arguments: paths, [CryptoBench.Operation.seal, .open, .sealOpen])
    func everyOperationRunsAndAuthenticates(path: CryptoBench.Path, operation: CryptoBench.Operation) throws {
        if operation == .sealOpen && path == .rawIPsecMBJobs { return }
        for aead in AEADAlgorithm.allCases {
            let usable = path == .rawSodium
                ? (try? CryptoEngines.resolve(.sodium, for: aead)) != nil
                : (try? CryptoEngines.resolve(.ipsecMB, for: aead)) != nil
            for offset in [0, 14, 50] {
                // 320 packets: 10 bursts, so an open runs on both ciphertexts of every buffer.
                let m = try CryptoBench.measure(engine: .auto, aead: aead, payloadSize: 1430, burst: 32, packets: 320,
                                                path: path, operation: operation, offset: offset)
                if usable {
                    let got = try #require(m, "\(path) \(operation) \(aead) offset \(offset)")
                    #expect(got.packets == 320 && got.operation == operation && got.mpps > 0)
                } else {
                    #expect(m == nil, "\(path) has no \(aead)")
                }
            }
        }
    }

    /// The negative control: with one expected ICV corrupted (the last
    /// buffer's, used on odd rounds) every engine reports the failed open, so
    /// the test above can fail; a seal does not check ICVs and still runs.
    @Test(arguments: [(Int32(0), Int32(1)), (0, 0), (1, 1)])
    func aFailedOpenIsReported(engine: Int32, api: Int32) {
        let c = slc_aead(rawValue: UInt32(AEADAlgorithm.chacha20Poly1305.rawValue))
        #expect(slc_bench_raw(engine, c, api, 1, 1430, 50, 32, 320, 0) != 0)
        #expect(slc_bench_raw(engine, c, api, 1, 1430, 50, 32, 320, SLC_RAW_TAMPER) == 0)
        #expect(slc_bench_raw(engine, c, api, 0, 1430, 50, 32, 320, SLC_RAW_TAMPER) != 0)
        // Seal then open: the open checks the ICV its seal wrote.
        if api == 1 {
            #expect(slc_bench_raw(engine, c, api, 2, 1430, 50, 32, 320, 0) != 0)
            #expect(slc_bench_raw(engine, c, api, 2, 1430, 50, 32, 320, SLC_RAW_TAMPER) == 0)
        } else {
            #expect(slc_bench_raw(engine, c, api, 2, 1430, 50, 32, 320, 0) == 0, "the job path has no seal-then-open")
        }
    }

    /// sluicebench --mode overlap's probe: every open of its loop authenticates
    /// the seal before it (the probe returns nil otherwise), one row per block
    /// size, each loop timed. How many cycles hide is the benchmark's to report.
    @Test func theOverlapProbeRunsAndAuthenticates() throws {
        guard (try? CryptoEngines.resolve(.ipsecMB, for: .aes256GCM)) != nil else {
            #expect(CryptoBench.overlap(payloadSize: 1400, latencyBound: false, steps: [1]) == nil)
            return
        }
        for latency in [false, true] {
            let rows = try #require(CryptoBench.overlap(payloadSize: 1400, latencyBound: latency, steps: [0, 4], rounds: 10,
                                                        repeats: 1))
            #expect(rows.map(\.steps) == [0, 4])
            #expect(rows.allSatisfy { $0.cipherCycles > 0 && $0.togetherCycles > 0 && $0.batchedCycles > 0 }
                    && rows[1].workCycles > 0)
        }
    }
}
