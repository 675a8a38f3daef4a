import CShims
import Glibc

/// The DPDK Environment Abstraction Layer: initialised once per process.
public enum EAL {
    /// Initialises the EAL with `arguments` (argv[0] first, EAL options after it)
    /// and returns the arguments the EAL did not consume (application options
    /// after `--`).
    public static func initialize(arguments: [String]) throws(DataplaneError) -> [String] {
        let cStrings: [UnsafeMutablePointer<CChar>?] = arguments.map { strdup($0) }
        defer { for p in cStrings { free(p) } }
        // rte_eal_init permutes argv; free through our own copy of the pointers.
        var argv = cStrings
        argv.append(nil)
        let consumed = argv.withUnsafeMutableBufferPointer { buf in
            sl_eal_init(Int32(arguments.count), buf.baseAddress)
        }
        if consumed < 0 { throw .dpdkErrno("EAL initialisation failed") }
        var rest = Array(arguments.dropFirst(Int(consumed)))
        if rest.first == "--" { rest.removeFirst() }
        return rest
    }

    /// Lcore ids of the worker lcores (every enabled lcore except the main one), ascending.
    public static var workerLcores: [UInt32] {
        var ids: [UInt32] = []
        var i = rte_get_next_lcore(UInt32.max, 1, 0)
        while i < UInt32(RTE_MAX_LCORE) {
            ids.append(i)
            i = rte_get_next_lcore(i, 1, 0)
        }
        return ids
    }

    public static var mainLcore: UInt32 { rte_get_main_lcore() }

    /// NUMA socket of an lcore; 0 when the EAL does not know (SOCKET_ID_ANY).
    public static func socket(ofLcore lcore: UInt32) -> Int32 {
        let s = Int32(bitPattern: rte_lcore_to_socket_id(lcore))
        return s < 0 ? 0 : s
    }

    public static func cleanup() { _ = rte_eal_cleanup() }
}
