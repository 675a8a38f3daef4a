// Test support shared by the test targets (no product code): the known-answer
// ESP vectors (../shared/vectors, or the copy in Tests/TestSupport/vectors).

import Crypto
import Foundation

/// The shared known-answer file.
public enum Vectors {
    public struct Case: Decodable, Sendable {
        public let name: String
        public let aead: String
        public let spi: String
        public let seq: String
        public let esn: Bool?
        public let key_and_salt: String
        public let iv: String
        public let plaintext: String?
        public let esp: String?
        public let inner_packet: String?
        public let esp_packet_with_outer_ipv4: String?
        public let tunnel_src: String?
        public let tunnel_dst: String?
        public let outer_ipv4_id: String?
        public let outer_ttl: Int?
    }

    struct File: Decodable { let cases: [Case] }

    /// $SLUICE_VECTORS (a folder), else the workspace's ../shared/vectors,
    /// else the copy kept with these tests (a clone made anywhere).
    public static let url: URL = {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let candidates = [ProcessInfo.processInfo.environment["SLUICE_VECTORS"].map { URL(fileURLWithPath: $0) },
                          here.appendingPathComponent("../../../shared/vectors").standardized,
                          here.appendingPathComponent("vectors")].compactMap { $0 }
            .map { $0.appendingPathComponent("esp-known-answers.json") }
        return candidates.first { FileManager.default.fileExists(atPath: $0.path) } ?? candidates[candidates.count - 1]
    }()

    public static func load() throws -> [Case] {
        try JSONDecoder().decode(File.self, from: Data(contentsOf: url)).cases
    }

    public static func algorithm(_ name: String) -> AEADAlgorithm? {
        switch name {
        case "aes-gcm-128": .aes128GCM
        case "aes-gcm-256": .aes256GCM
        case "chacha20-poly1305": .chacha20Poly1305
        default: nil
        }
    }
}
