import Command
import Foundation
import Testing

/// The example configurations shipped in Config/ stay valid, and each
/// reproduces itself through `configText`.
@Suite struct ExampleConfigTests {
    static let configDirectory = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Config")

    @Test(arguments: ["example.conf", "ipsec-tunnel.conf", "local-stack.conf", "resolve.conf"])
    func exampleLoads(_ name: String) throws {
        let text = try String(contentsOf: Self.configDirectory.appendingPathComponent(name), encoding: .utf8)
        let config = try GatewayConfig.load(text: text, name: name)
        #expect(!config.ports.isEmpty)
        #expect(try GatewayConfig.load(text: config.configText, name: "\(name) again") == config)
    }
}
