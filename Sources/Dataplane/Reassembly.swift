import CShims
import IPsec
import Packet

/// Reassembly of the fragments addressed to the gateway (RFC 4303 §3.4.1:
/// an ESP packet that arrived in fragments is reassembled before IPsec
/// processing). A peer fragments its ESP packets when a plaintext packet
/// without DF does not fit its path (Linux does, after encryption), and a
/// NAT-T path's smaller MTU fragments ESP in UDP on the way.
///
/// What is reassembled: IPv4 and IPv6 fragments of ESP or UDP addressed to
/// one of the gateway's own addresses (fragments in transit are ordinary
/// traffic for the inbound SPD). Each worker keeps its own table, on DPDK's
/// ip_frag library (`sl_reasm_*`, reassembly.c): the NIC's RSS hashes
/// fragments on their addresses only, so one datagram's pieces reach one
/// queue. The whole datagram, in one buffer, then goes through the inbound
/// path as if it had arrived so: ESP's ICV authenticates every byte of it,
/// so a forged or misassembled piece costs a failed authentication, never a
/// wrong packet.
///
/// Bounds: `maxDatagrams` in progress per worker, `SL_REASM_MAX_FRAGS`
/// fragments each, a datagram given up `defaultTimeout` seconds after its
/// first fragment (then its fragments count as `reassembly_failed`). When
/// the table is full new datagrams are refused until entries time out: a
/// flood of lone fragments can hold up reassembly, not exhaust the mempool,
/// which has room for a full table per worker.
public enum Reassembly {
    /// Datagrams one worker reassembles at once.
    public static let maxDatagrams = 128
    /// Seconds a datagram may take to arrive whole.
    public static let defaultTimeout = 2.0
    /// Fragments one worker's table can hold at most.
    public static var mbufsHeld: Int { maxDatagrams * Int(SL_REASM_MAX_FRAGS) }
}

/// Whether `view` is a fragment of a UDP datagram that `ESPInbound.classify`
/// called not ESP: a later piece (no UDP header, so no port to tell ESP in
/// UDP by) or the first piece of a datagram to another port. Either way all
/// of the datagram's pieces are reassembled together, since its later
/// pieces cannot be told apart: otherwise a first piece to port 500 (IKE
/// with certificates) went its way alone while the rest waited for it in the
/// table until they expired. IPv6: a Fragment header right after the IPv6
/// header, the only place reassembly takes it, not an atomic one, followed
/// by UDP or by Destination Options (RFC 8200 §4.1), behind which UDP or
/// ESP may be: its later pieces cannot tell either.
@inline(__always)
func udpFragment(_ view: PacketView) -> Bool {
    let p = UnsafeRawPointer(view.start)
    if p.load(as: UInt8.self) >> 4 == 4 {
        return p.loadBE16(at: IPv4Field.flagsFragment) & (IPv4Field.moreFragments | IPv4Field.fragmentOffsetMask) != 0
            && p.loadByte(at: IPv4Field.protocol) == IPProtocol.udp.rawValue
    }
    guard view.length >= HeaderSize.ipv6 + 8 && p.loadByte(at: IPv6Field.nextHeader) == 44 else { return false }
    let next = p.loadByte(at: HeaderSize.ipv6)
    return (next == IPProtocol.udp.rawValue || next == 60) && p.loadBE16(at: HeaderSize.ipv6 &+ 2) & 0xFFF9 != 0
}

/// Hands a fragment addressed to the gateway to this worker's reassembly
/// table. Returns the whole datagram when this fragment completed it; nil
/// when the fragment is kept for later or was dropped (counted).
@inline(never)
func reassemble(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, _ view: PacketView, context: WorkerIPsec,
                drops: UnsafeMutablePointer<UInt64>) -> OpaquePointer? {
    let now = sl_tsc()
    let ipOffset = UInt32(truncatingIfNeeded: UnsafeRawPointer(view.start) - UnsafeRawPointer(sl_mbuf_data(m)!))
    var whole: OpaquePointer? = nil
    var discarded: UInt32 = 0
    let result = Int(sl_reasm_add(context.reassembly, m, ipOffset, now, &whole, &discarded))
    drops[DropReason.reassemblyFailed.rawValue] &+= UInt64(discarded)
    if result == Int(SL_REASM_BAD) {
        drops[DropReason.badFragment.rawValue] &+= 1
        return nil
    }
    w.pointee.counters.fragments &+= 1
    // Sweep expired datagrams until every one this fragment may have started has expired.
    context.reassemblySweepUntil = now &+ 2 &* context.reassemblyTimeout
    switch result {
    case Int(SL_REASM_DONE):
        w.pointee.counters.reassembled &+= 1
        return whole
    case Int(SL_REASM_TOO_BIG):
        drops[DropReason.reassemblyTooBig.rawValue] &+= 1
        return nil
    default:
        return nil
    }
}

/// Frees the datagrams whose time is up (counted as `reassembly_failed`),
/// while fragments may be held. Between bursts, at a TSC read; `crypto` is
/// the worker's `WorkerIPsec` (nil without IPsec: nothing to sweep).
@inline(__always)
func sweepReassembly(_ crypto: UnsafeMutableRawPointer?, now: UInt64, drops: UnsafeMutablePointer<UInt64>) {
    guard let crypto else { return }
    Unmanaged<WorkerIPsec>.fromOpaque(crypto)._withUnsafeGuaranteedRef { context in
        guard context.reassemblySweepUntil != 0 else { return }
        if now > context.reassemblySweepUntil { context.reassemblySweepUntil = 0 }
        drops[DropReason.reassemblyFailed.rawValue] &+= UInt64(sl_reasm_expire(context.reassembly, now))
    }
}

extension WorkerIPsec {
    /// Frees every fragment the reassembly table holds (counted as
    /// `reassembly_failed` in `drops`). Only while the worker is stopped.
    func freeReassembly(drops: UnsafeMutablePointer<UInt64>) {
        while true {
            let n = sl_reasm_expire(reassembly, UInt64.max / 2)
            if n == 0 { break }
            drops[DropReason.reassemblyFailed.rawValue] &+= UInt64(n)
        }
        reassemblySweepUntil = 0
    }
}
