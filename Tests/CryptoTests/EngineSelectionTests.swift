// Which engine an SA gets, and the errors for what an engine cannot serve.

import CCrypto
@testable import Crypto
import Foundation
import Testing

@Suite struct EngineSelectionTests {
    /// Once the engines are in use, the code path is fixed: pinning another
    /// (or going back to auto) is refused with the reason, and nothing
    /// changes. `ESPInterop.pinnedCodePath` pins each path in a real gateway.
    @Test func pinningAfterFirstUseIsRefused() throws {
        _ = CryptoEngines.summary  // the probe has run
        let before = CryptoEngines.ipsecMB?.architecture
        for arch in [IPsecMBArchitecture.sse, .avx2, nil] {
            let error = #expect(throws: CryptoError.self) { try CryptoEngines.pin(arch) }
            #expect(error?.description.contains("before the engines are first used") == true)
        }
        #expect(CryptoEngines.pinned == nil && CryptoEngines.ipsecMB?.architecture == before)
        #expect(IPsecMBArchitecture.pinnable.map { IPsecMBArchitecture(name: $0.description.uppercased()) }
                == [.sse, .avx, .avx2, .avx512])
        #expect(IPsecMBArchitecture(name: "no-aesni") == nil && IPsecMBArchitecture(name: "avx3") == nil)
    }

    /// The CPU flags the kernel reports.
    static var cpuFlags: Set<Substring> {
        let info = readProcFile("/proc/cpuinfo")
        guard let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return [] }
        return Set(line.split(separator: " "))
    }

    @Test func autoResolvesToIPsecMBWhereTheCPUHasAESNI() throws {
        let flags = Self.cpuFlags
        #expect(flags.contains("sse2"), "read the CPU flags")
        print("crypto engines:", CryptoEngines.summary)
        if flags.contains("aes") && flags.contains("pclmulqdq") && flags.contains("sse4_2") {
            let mb = try #require(CryptoEngines.ipsecMB, "intel-ipsec-mb must initialise on an AES-NI CPU")
            #expect(mb.architecture != .noAESNI)
            if flags.contains("avx512f") && flags.contains("avx512bw") && flags.contains("avx512vl") {
                #expect(mb.architecture == .avx512)
            }
            if flags.contains("vaes") { #expect(mb.extensions.contains("VAES")) }
        }
        for aead in AEADAlgorithm.allCases {
            let expected: CryptoEngine? = CryptoEngines.ipsecMB != nil ? .ipsecMB
                : (try? CryptoEngines.resolve(.sodium, for: aead))
            #expect((try? CryptoEngines.resolve(.auto, for: aead)) == expected)
            if let expected {
                let key = try AEADKey(aead, keyMaterial: [UInt8](repeating: 7, count: aead.keyMaterialLength))
                let (engine, algorithm) = (key.engine, key.algorithm)
                #expect(engine == expected && algorithm == aead)
            }
        }
        let core = try CryptoCore()
        #expect(core.ipsecMBArchitecture == CryptoEngines.ipsecMB?.architecture)
    }

    @Test func aes128GCMOnSodiumIsAClearInstallError() {
        let material = [UInt8](repeating: 1, count: 20)
        #expect(throws: CryptoError.unsupported(.sodium, .aes128GCM)) {
            _ = try AEADKey(.aes128GCM, keyMaterial: material, engine: .sodium)
        }
        let message = CryptoError.unsupported(.sodium, .aes128GCM).description
        #expect(message == "the sodium engine does not implement aes-128-gcm")
    }

    @Test func aes256GCMOnSodiumFollowsTheCPU() throws {
        let material = [UInt8](repeating: 2, count: 36)
        if CryptoEngines.sodiumAES256GCMAvailable {
            let key = try AEADKey(.aes256GCM, keyMaterial: material, engine: .sodium)
            let engine = key.engine
            #expect(engine == .sodium)
        } else {
            #expect(throws: CryptoError.cpuFeatureMissing(.sodium, .aes256GCM, feature: "AES-NI and PCLMULQDQ")) {
                _ = try AEADKey(.aes256GCM, keyMaterial: material, engine: .sodium)
            }
        }
        // On an AES-NI CPU libsodium must offer it.
        let flags = Self.cpuFlags
        if flags.contains("aes") && flags.contains("pclmulqdq") { #expect(CryptoEngines.sodiumAES256GCMAvailable) }
    }

    @Test(arguments: AEADAlgorithm.allCases)
    func wrongKeyMaterialLengthIsAClearInstallError(aead: AEADAlgorithm) {
        for kind in engines(for: aead) {
            for bad in [0, aead.keyLength, aead.keyMaterialLength - 1, aead.keyMaterialLength + 1] {
                #expect(throws: CryptoError.keyMaterialLength(aead, expected: aead.keyMaterialLength, got: bad)) {
                    _ = try AEADKey(aead, keyMaterial: [UInt8](repeating: 3, count: bad), engine: kind)
                }
            }
        }
        let e = CryptoError.keyMaterialLength(.aes128GCM, expected: 20, got: 16)
        #expect(e.description == "aes-128-gcm key material must be 20 bytes (16-byte key followed by a 4-byte salt), got 16")
    }

    @Test func namesRoundTrip() {
        for aead in AEADAlgorithm.allCases { #expect(AEADAlgorithm(name: aead.description) == aead) }
        #expect(AEADAlgorithm(name: "aes-192-gcm") == nil)
    }
}
