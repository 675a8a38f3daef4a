// Test support shared by the test targets (no product code): the known-answer
// ESP vectors in <package root>/../shared/vectors.

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

    public static let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../../shared/vectors/esp-known-answers.json").standardized

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
