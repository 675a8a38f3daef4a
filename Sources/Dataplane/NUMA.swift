import CShims
import Glibc

/// NUMA placement for memory that does not come from DPDK's allocator
/// (libnuma), and the topology checks the gateway reports at start-up.
public enum NUMA {
    /// Whether the kernel and libnuma support NUMA calls here.
    public static var available: Bool { numa_available() >= 0 }

    /// The NUMA node of a CPU, or nil when unknown.
    public static func node(ofCPU cpu: Int32) -> Int32? {
        guard available else { return nil }
        let n = numa_node_of_cpu(cpu)
        return n < 0 ? nil : n
    }

    /// `bytes` of zeroed memory on `node` (libnuma), or from the C heap when
    /// NUMA is unavailable; nil when out of memory. Release with `free(_:bytes:)`.
    public static func allocate(bytes: Int, node: Int32) -> UnsafeMutableRawPointer? {
        guard available else { return calloc(1, bytes) }
        guard let p = numa_alloc_onnode(bytes, max(node, 0)) else { return nil }
        p.initializeMemory(as: UInt8.self, repeating: 0, count: bytes)
        return p
    }

    public static func free(_ p: UnsafeMutableRawPointer, bytes: Int) {
        if available { numa_free(p, bytes) } else { Glibc.free(p) }
    }
}
