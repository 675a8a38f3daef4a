import CShims

/// An ethdev port backed by rte_rings (`rte_eth_from_rings`), for in-process
/// traffic sources: whatever the source enqueues on `rx[q]` the port receives
/// on queue q, and what the port sends on queue q appears on `tx[q]`.
public struct RingPort {
    public var port: UInt16
    public var rx: [OpaquePointer]
    public var tx: [OpaquePointer]

    /// Creates a ring port with `queues` RX/TX ring pairs of `size` slots
    /// (single producer, single consumer: one generator and one worker per ring).
    /// `loopback`: each queue's TX ring is its own RX ring instead, so what
    /// the port sends on queue q it receives again on queue q, in order; the
    /// worker that polls queue q is then the ring's only producer and
    /// consumer (a traffic loop that costs it only the ring operations).
    public static func create(name: String, queues: Int, size: Int, socket: Int32,
                              loopback: Bool = false) throws(DataplaneError) -> RingPort {
        var rx: [OpaquePointer?] = []
        var tx: [OpaquePointer?] = []
        let flags = UInt32(RING_F_SP_ENQ | RING_F_SC_DEQ)
        for q in 0..<queues {
            guard let r = rte_ring_create("\(name)_rx\(q)", UInt32(size), socket, flags),
                  let t = loopback ? r : rte_ring_create("\(name)_tx\(q)", UInt32(size), socket, flags) else {
                throw .dpdkErrno("cannot create the rings of \(name)")
            }
            rx.append(r); tx.append(t)
        }
        let id = rx.withUnsafeMutableBufferPointer { rxb in
            tx.withUnsafeMutableBufferPointer { txb in
                rte_eth_from_rings(name, rxb.baseAddress, UInt32(queues), txb.baseAddress, UInt32(queues), UInt32(bitPattern: socket))
            }
        }
        if id < 0 { throw .dpdkErrno("cannot create ring port \(name)") }
        return RingPort(port: UInt16(id), rx: rx.map { $0! }, tx: tx.map { $0! })
    }
}
