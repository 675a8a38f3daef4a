import Control
import Glibc

// The gateway: all logic lives in the Control module (lcore entry points must
// not be closures in main.swift, which Swift 6 would isolate to the main actor).
exit(GatewayMain.run(arguments: CommandLine.arguments))
