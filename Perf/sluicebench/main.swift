// sluicebench: see Bench.swift. Lcore entry points live in Generator.swift
// (never closures here, which Swift 6 would isolate to the main actor).
// --mode sad and --mode sad-install have their own options (SADBench.swift).
if SADBenchCommand.handles(Array(CommandLine.arguments.dropFirst())) {
    SADBenchCommand.main()
} else {
    SluiceBench.main()
}
