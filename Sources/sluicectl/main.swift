// sluicectl: the operator's tool. `check` validates config files offline with
// the same parser and rules the gateway uses; further subcommands (such as
// `send`, talking to the control socket) are added to `Sluicectl.subcommands`.

import ArgumentParser
import Command
import Foundation

struct Sluicectl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluicectl",
        abstract: "Control and check a Sluice IPsec gateway.",
        subcommands: [Check.self]
    )
}

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Parse and validate configuration files without touching a gateway.",
        discussion: "Each file is checked on its own, as the gateway would load it. Problems are "
            + "printed as FILE:LINE:COLUMN: MESSAGE on standard error."
    )

    @Argument(help: "Configuration files to check.")
    var files: [String]

    func run() throws {
        var failed = false
        for file in files {
            let text: String
            do {
                text = try String(contentsOfFile: file, encoding: .utf8)
            } catch {
                printError("\(file): cannot read: \(error.localizedDescription)")
                failed = true
                continue
            }
            do {
                let config = try GatewayConfig.load(text: text, name: file)
                print("\(file): ok (\(config.ports.count) ports, \(config.neighbors.count) neighbors, "
                      + "\(config.routes.count) routes, \(config.sas.count) SAs, \(config.policies.count) policies)")
            } catch {
                printError(error.description)
                failed = true
            }
        }
        if failed { throw ExitCode.failure }
    }
}

func printError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

Sluicectl.main()
