// swift-tools-version:6.0
// Sluice: an IPsec ESP security gateway data plane in Swift on DPDK.
import PackageDescription

// Debian's libdpdk.pc is unreadable by SwiftPM's pkg-config parser (multi-line
// Description), so the include paths and libraries are named here. The ISA
// flag must reach clang both in the C target and in every Swift target that
// imports the shims, or DPDK's inline helpers (rte_memcpy) fail to import.
let dpdkIncludes = ["-I/usr/include/dpdk", "-I/usr/include/x86_64-linux-gnu/dpdk"]
let isa = ["-march=corei7", "-mpclmul", "-maes"]
let shimClangFlags = dpdkIncludes + isa
let swiftShimFlags: [SwiftSetting] = [.unsafeFlags((dpdkIncludes + isa).flatMap { ["-Xcc", $0] })]
let dpdkLibs = ["rte_eal", "rte_ethdev", "rte_mbuf", "rte_mempool", "rte_ring", "rte_fib", "rte_rib", "rte_lpm", "rte_rcu",
                "rte_hash", "rte_net", "rte_ip_frag", "rte_kvargs", "rte_telemetry", "rte_net_ring"]

let package = Package(
    name: "Sluice",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "sluice", targets: ["sluice"]),
        .executable(name: "sluicectl", targets: ["sluicectl"]),
        .executable(name: "sluicebench", targets: ["sluicebench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C: DPDK, intel-ipsec-mb, libsodium and libnuma behind prefixed shims.
        .target(
            name: "CShims",
            path: "CShims",
            exclude: ["crypto"],
            sources: ["src"],
            publicHeadersPath: "include",
            cSettings: [.unsafeFlags(shimClangFlags + ["-O3"])],
            linkerSettings: dpdkLibs.map { .linkedLibrary($0) } + [
                .linkedLibrary("IPSec_MB"), .linkedLibrary("sodium"), .linkedLibrary("numa"),
            ]
        ),
        // C: intel-ipsec-mb and libsodium only (no DPDK), for Crypto.
        .target(
            name: "CCrypto",
            path: "CShims/crypto",
            sources: ["src"],
            publicHeadersPath: "include",
            cSettings: [.unsafeFlags(isa + ["-O3"])],
            linkerSettings: [.linkedLibrary("IPSec_MB"), .linkedLibrary("sodium")]
        ),
        // AEAD engines (intel-ipsec-mb, libsodium) behind one interface: no DPDK.
        .target(name: "Crypto", dependencies: ["CCrypto"], path: "Sources/Crypto",
                swiftSettings: [.unsafeFlags(isa.flatMap { ["-Xcc", $0] })]),
        // ESP, sequence numbers, anti-replay, SA and policy models: no DPDK.
        // Optimised in debug builds too: compiling an SPD classifier (thousands
        // of rules) unoptimised takes minutes instead of milliseconds, and the
        // tests and the debug `sluice` they run need it in seconds.
        .target(name: "IPsec", dependencies: ["Packet", "Crypto"], path: "Sources/IPsec",
                swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // Header views, builders, checksums, RSS hashing: no DPDK.
        .target(name: "Packet", path: "Sources/Packet"),
        // The command language: lexer, parser, typed commands, errors with positions.
        // Command and Control optimised in debug builds too: checking and
        // compiling a change against 10,000 SAs unoptimised takes a second,
        // too slow for the SA churn the tests drive at 1,000 changes/s.
        .target(name: "Command", dependencies: ["Packet", "Crypto"], path: "Sources/Command",
                swiftSettings: [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        // EAL, ports, mempools, lcores, RCU, per-core context, the worker loop.
        .target(name: "Dataplane", dependencies: ["CShims", "Packet", "IPsec", "Crypto"], path: "Sources/Dataplane",
                swiftSettings: swiftShimFlags),
        // Configuration state, applying commands to the data plane.
        .target(name: "Control", dependencies: ["Command", "Dataplane", "CShims", "Packet", "IPsec", "Crypto"], path: "Sources/Control",
                swiftSettings: swiftShimFlags + [.unsafeFlags(["-O"], .when(configuration: .debug))]),
        .executableTarget(name: "sluice", dependencies: ["Control", "Dataplane", "CShims"], path: "Sources/sluice",
                          swiftSettings: swiftShimFlags),
        .executableTarget(name: "sluicectl", dependencies: [
            "Command", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Sources/sluicectl"),
        .executableTarget(name: "sluicebench", dependencies: [
            "Control", "Dataplane", "CShims", "Packet", "IPsec", "Crypto",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], path: "Perf/sluicebench", swiftSettings: swiftShimFlags),

        // The ESP transforms under libFuzzer (scripts/fuzz.sh), or a seeded replay of the same checks.
        .executableTarget(name: "sluicefuzz", dependencies: ["IPsec", "Packet", "Crypto"], path: "Tests/Fuzz"),

        .testTarget(name: "PacketTests", dependencies: ["Packet"], path: "Tests/PacketTests"),
        .testTarget(name: "CommandTests", dependencies: ["Command", "Packet"], path: "Tests/CommandTests"),
        // Shared by the test targets only: the known-answer vectors.
        .target(name: "TestSupport", dependencies: ["Crypto"], path: "Tests/TestSupport", exclude: ["vectors"]),
        .testTarget(name: "CryptoTests", dependencies: ["Crypto", "CCrypto", "TestSupport"], path: "Tests/CryptoTests",
                    swiftSettings: [.unsafeFlags(isa.flatMap { ["-Xcc", $0] })]),
        .testTarget(name: "IPsecTests", dependencies: ["IPsec", "Packet", "Crypto", "TestSupport"], path: "Tests/IPsecTests"),
        .testTarget(name: "DataplaneTests", dependencies: ["Dataplane", "Control", "CShims", "Packet", "TestSupport"],
                    path: "Tests/DataplaneTests", swiftSettings: swiftShimFlags),
        .testTarget(name: "EndToEndTests", dependencies: ["Packet", "TestSupport"], path: "Tests/EndToEndTests", exclude: ["scripts"]),
    ]
)
