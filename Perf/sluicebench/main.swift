// sluicebench: see Bench.swift. Lcore entry points live in Generator.swift
// (never closures here, which Swift 6 would isolate to the main actor).
SluiceBench.main()
