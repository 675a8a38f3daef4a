import CShims
import Dataplane
import Packet

/// The traffic source: a fixed population of packets circulates between the
/// generator and the gateway through ring ports, like testpmd's tx_first
/// loop but with real packets. Every packet is stamped once from a template
/// (flow × size), spread over RX queues by Toeplitz hash as a NIC would; when
/// the gateway sends it out, the generator counts it, restores the headers the
/// gateway rewrote, and feeds it back on the same queue. Nothing is allocated
/// or reference-counted per packet.
final class Generator: @unchecked Sendable {
    struct Queue {
        var inject: OpaquePointer     // gateway RX ring (protected port)
        var collect: [OpaquePointer]  // gateway TX rings of every port, this queue
    }
    let queues: [Queue]
    /// Template frames, `stride` bytes apart.
    let templates: UnsafeMutablePointer<UInt8>
    let templateLengths: UnsafeMutablePointer<UInt16>
    /// How many leading bytes the gateway may rewrite (Ethernet + IP + L4 header).
    let restoreLengths: UnsafeMutablePointer<UInt16>
    let stride: Int
    /// Packets seen back from the gateway, per queue (written by the generator only).
    let received: UnsafeMutablePointer<UInt64>
    let receivedBytes: UnsafeMutablePointer<UInt64>
    let stopFlag: UnsafeMutablePointer<UInt32>
    let lcore: UInt32
    /// Packets taken from a TX ring per dequeue.
    let burst: Int

    let templateBytes: Int

    init(queues: [Queue], templates: [[UInt8]], restoreLengths: [Int], lcore: UInt32, burst: Int) {
        self.burst = burst
        self.queues = queues
        stride = ((templates.map(\.count).max() ?? 64) + 63) / 64 * 64
        // The templates are read by this generator's lcore only: place them on its node.
        templateBytes = max(stride * templates.count, 64)
        self.templates = NUMA.allocate(bytes: templateBytes, node: EAL.socket(ofLcore: lcore))!
            .bindMemory(to: UInt8.self, capacity: templateBytes)
        templateLengths = .allocate(capacity: templates.count)
        self.restoreLengths = .allocate(capacity: templates.count)
        for (i, t) in templates.enumerated() {
            (self.templates + i * stride).update(from: t, count: t.count)
            templateLengths[i] = UInt16(t.count)
            self.restoreLengths[i] = UInt16(restoreLengths[i])
        }
        received = .allocate(capacity: queues.count)
        received.initialize(repeating: 0, count: queues.count)
        receivedBytes = .allocate(capacity: queues.count)
        receivedBytes.initialize(repeating: 0, count: queues.count)
        stopFlag = .allocate(capacity: 1)
        stopFlag.initialize(to: 0)
        self.lcore = lcore
    }

    deinit {
        NUMA.free(templates, bytes: templateBytes); templateLengths.deallocate(); restoreLengths.deallocate()
        received.deallocate(); receivedBytes.deallocate(); stopFlag.deallocate()
    }

    /// Stamps `count` packets for queue `q` from the given template indices and injects them.
    func seed(queue q: Int, templateIndices: [Int], pool: OpaquePointer) throws(DataplaneError) {
        var batch = [OpaquePointer?](repeating: nil, count: templateIndices.count)
        let rc = batch.withUnsafeMutableBufferPointer { sl_mbuf_alloc_bulk(pool, $0.baseAddress, UInt32($0.count)) }
        if rc != 0 { throw DataplaneError("mempool too small for \(templateIndices.count) generator packets") }
        for (i, t) in templateIndices.enumerated() {
            let m = batch[i]!
            let len = templateLengths[t]
            sl_mbuf_reset_window(m, len)
            sl_mbuf_data(m)!.update(from: templates + t * stride, count: Int(len))
            sl_mbuf_set_tag(m, UInt32(t))
        }
        let sent = batch.withUnsafeMutableBufferPointer { b in
            b.baseAddress!.withMemoryRebound(to: UnsafeMutableRawPointer?.self, capacity: b.count) {
                sl_ring_enqueue_burst(queues[q].inject, $0, UInt32(b.count))
            }
        }
        if Int(sent) < batch.count { throw DataplaneError("RX ring of queue \(q) too small for the packet population") }
    }

    func run() {
        let buf = UnsafeMutablePointer<UnsafeMutableRawPointer?>.allocate(capacity: burst)
        defer { buf.deallocate() }
        let nq = queues.count
        // Flatten the rings once so the loop touches no Swift arrays.
        let inject = UnsafeMutablePointer<OpaquePointer>.allocate(capacity: nq)
        let nCollect = queues.first?.collect.count ?? 0
        let collect = UnsafeMutablePointer<OpaquePointer>.allocate(capacity: nq * nCollect)
        for (q, Q) in queues.enumerated() {
            inject[q] = Q.inject
            for (j, r) in Q.collect.enumerated() { collect[q * nCollect + j] = r }
        }
        defer { inject.deallocate(); collect.deallocate() }
        while UnsafeAtomicLoad(stopFlag) == 0 {
            var q = 0
            while q < nq {
                var j = 0
                while j < nCollect {
                    let n = Int(sl_ring_dequeue_burst(collect[q &* nCollect &+ j], buf, UInt32(burst)))
                    if n > 0 { recycle(buf, n, queue: q, inject: inject[q]) }
                    j &+= 1
                }
                q &+= 1
            }
        }
    }

    @inline(__always)
    private func recycle(_ buf: UnsafeMutablePointer<UnsafeMutableRawPointer?>, _ n: Int, queue q: Int, inject: OpaquePointer) {
        var bytes: UInt64 = 0
        // Overlap the cross-core misses: all mbuf headers, then the data lines.
        var k = 0
        while k < n { sl_prefetch0(buf[k]); k &+= 1 }
        k = 0
        while k < n && k < 8 { sl_prefetch_mbuf_data(OpaquePointer(buf[k]!)); k &+= 1 }
        var i = 0
        while i < n {
            let m = OpaquePointer(buf[i]!)
            if i &+ 8 < n { sl_prefetch_mbuf_data(OpaquePointer(buf[i &+ 8]!)) }
            let t = Int(sl_mbuf_tag(m))
            let len = templateLengths[t]
            bytes &+= UInt64(sl_mbuf_pkt_len(m))
            sl_mbuf_reset_window(m, len)
            sl_mbuf_data(m)!.update(from: templates + t &* stride, count: Int(restoreLengths[t]))
            i &+= 1
        }
        received[q] &+= UInt64(n)
        receivedBytes[q] &+= bytes
        // The population never exceeds a ring, so this always fits.
        var done = 0
        while done < n {
            done &+= Int(sl_ring_enqueue_burst(inject, buf + done, UInt32(n &- done)))
        }
    }
}

@inline(__always) func UnsafeAtomicLoad(_ p: UnsafeMutablePointer<UInt32>) -> UInt32 {
    sl_load_relaxed_u32(p)
}

/// Entry point for `rte_eal_remote_launch`; `arg` is an unretained `Generator`.
func generatorEntry(_ arg: UnsafeMutableRawPointer?) -> Int32 {
    guard let arg else { return -1 }
    Unmanaged<Generator>.fromOpaque(arg).takeUnretainedValue().run()
    return 0
}
