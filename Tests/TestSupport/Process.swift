import Foundation

/// Runs a program to completion with extra environment variables; its
/// standard output and error together, and its exit status.
public func runProcess(_ tool: String, _ arguments: [String], environment: [String: String]) throws
    -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: tool)
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Builds the repository's allocation-counting LD_PRELOAD library
/// (Perf/alloc-counter) into a scratch folder and re-runs this test binary
/// under it, with only the Swift Testing tests matching `filter` and
/// `marker=1` in the environment (the child test checks the marker).
public func runUnderAllocationCounter(filter: String, marker: String) throws -> (status: Int32, output: String) {
    let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../..").standardized.path
    let source = root + "/Perf/alloc-counter/alloc_counter.c"
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-alloc-\(getpid())-\(filter)").path
    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: dir) }
    let preload = dir + "/alloc_counter.so"
    let cc = try runProcess("/usr/bin/env", ["cc", "-O2", "-shared", "-fPIC", "-o", preload, source, "-ldl"],
                            environment: [:])
    guard cc.status == 0 else { return (cc.status, "building the alloc-counter preload failed: \(cc.output)") }
    return try rerunTestBinary(filter: filter, marker: marker, environment: ["LD_PRELOAD": preload])
}

/// Re-runs this test binary with only the Swift Testing tests matching
/// `filter`, `marker=1` and `environment` in the environment: a measurement
/// of the whole process (allocations, memory mappings) made where no other
/// suite runs beside it. The child test checks the marker.
public func rerunTestBinary(filter: String, marker: String, environment: [String: String] = [:]) throws
    -> (status: Int32, output: String) {
    try runProcess(CommandLine.arguments[0], ["--testing-library", "swift-testing", "--filter", filter],
                   environment: environment.merging([marker: "1"]) { $1 })
}
