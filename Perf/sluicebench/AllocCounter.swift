import Glibc

/// Counters from the alloc-counter preload (Perf/alloc-counter), when the
/// process runs with it: mallocs and Swift heap objects / retains / releases.
struct AllocCounter {
    var mallocs: UInt64
    var swiftAllocs: UInt64
    var retains: UInt64
    var releases: UInt64

    typealias ReadFn = @convention(c) (UnsafeMutablePointer<UInt64>?) -> Void

    /// The preload's reader, resolved once (nil when the preload is absent).
    static func reader() -> ReadFn? {
        guard let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "sl_alloccount_read") else { return nil }
        return unsafeBitCast(sym, to: ReadFn.self)
    }

    /// Reads the counters without allocating or retaining anything itself.
    static func read(_ fn: ReadFn) -> AllocCounter {
        var v: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        withUnsafeMutablePointer(to: &v) { p in
            p.withMemoryRebound(to: UInt64.self, capacity: 4) { fn($0) }
        }
        return AllocCounter(mallocs: v.0, swiftAllocs: v.1, retains: v.2, releases: v.3)
    }
}
