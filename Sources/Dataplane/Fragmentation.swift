import CShims
import IPsec
import Packet

// Fragmentation of what the gateway sends, when a packet is larger than the
// MTU of the port it leaves by and may be cut:
//
// * IPv4 without DF (RFC 791 §3.2, RFC 1812 §4.2.2.7 … §5.2.6): forwarded
//   plaintext, an inner packet an SA opened on its way to a protected host,
//   and the ESP packets of SAs whose outer header has DF clear
//   (`df clear`, or `df copy` of an inner packet without DF). A fragment is
//   cut again; the pieces keep its offset and the last one its MF bit.
// * IPv6, only the ESP packets this gateway seals in tunnel mode (it is their
//   source, RFC 8200 §4.5 and §5): those whose inner packet may be
//   fragmented (IPv4 without DF), and inner IPv6 packets of at most 1,280
//   bytes, whose sender cannot be told to send less (RFC 8200 §5 asks a
//   tunnel to fragment then). The Fragment header goes right after the
//   outer header. Its identification is a keyed permutation of a per-core
//   counter (`nextFragmentID`: four Feistel rounds with SipHash-2-4 under
//   the core's random 128-bit key): no value repeats within 2^32 datagrams
//   of a core, and consecutive ones are unrelated to whoever does not hold
//   the key (RFC 7739 §5 warns against a plain counter).
//
// ESP is fragmented after it is sealed, as Linux does: the peer reassembles
// the ESP packet (as Sluice does, Reassembly.swift) and opens the inner
// packet whole, so its selectors with ports still apply. Fragmenting the
// inner packet before sealing (RFC 4459 §5.1) would leave later fragments
// without ports for the peer's inbound policy check (RFC 4301 §7).
//
// The first piece stays in the packet's own buffer (IPv6: its header moved
// 8 bytes forward into the headroom for the Fragment header); the others
// are copied into fresh buffers from the worker's pool (`sl_worker.pool`). IPv4 options whose
// copy flag is set are repeated in every piece, the others go in the first
// only (RFC 791). Every piece carries as many bytes as the MTU allows, a
// multiple of 8 except the last. Off the fast path: only packets already too
// big for their port come here.

/// The most pieces one datagram is cut into (2 KB buffers and an MTU of at
/// least 68 never need more than 43).
let maxFragmentsOut = 64

/// Sends the IP packet `view` (its datagram length: `view.length`) in
/// fragments no larger than `mtu` to `hop`, which forwards. IPv4: DF is
/// clear. IPv6: a packet this gateway sealed, its header the 40-byte base
/// header alone. Takes the packet: sent, or dropped as
/// `fragmentation_failed` (also a packet in chained buffers).
@inline(never)
func sendFragmented(_ w: UnsafeMutablePointer<sl_worker>, _ m: OpaquePointer, _ view: PacketView, ipv4: Bool,
                    hop: UnsafeMutablePointer<sl_nexthop>, mtu: Int, fib: UnsafeMutablePointer<sl_fib>,
                    hops: UnsafeMutablePointer<sl_nexthop>, tx: inout TxCursor, drops: UnsafeMutablePointer<UInt64>) {
    let p = view.start
    // Header of the first piece, of the later ones, and what follows them.
    let header = ipv4 ? Int(p.loadByte(at: IPv4Field.versionIHL) & 0x0F) &<< 2 : HeaderSize.ipv6
    let laterHeader = ipv4 ? HeaderSize.ipv4 &+ copiedOptionsLength(p, header: header) : HeaderSize.ipv6 &+ 8
    let firstHeader = ipv4 ? header : laterHeader
    let payload = view.length &- header
    let firstData = (mtu &- firstHeader) & ~7
    let laterData = (mtu &- laterHeader) & ~7
    // One buffer holds the whole packet (the plain forwarding path takes
    // chained mbufs, whose pieces would have to be gathered).
    guard firstData >= 8, laterData >= 8, payload > firstData, ipv4 || view.headroom >= 8, sl_mbuf_nb_segs(m) == 1 else {
        drop(m, .fragmentationFailed, drops)
        return
    }
    let later = (payload &- firstData &+ laterData &- 1) / laterData
    // Where the original's fragment offset and MF bit put the pieces (IPv4);
    // a fragment whose data would end past 65,535 bytes has no offsets for them.
    let field = ipv4 ? p.loadBE16(at: IPv4Field.flagsFragment) : 0
    let originalOffset = Int(field & IPv4Field.fragmentOffsetMask) &<< 3
    let lastMF = field & IPv4Field.moreFragments != 0
    guard later < maxFragmentsOut, originalOffset &+ payload <= 65535 else {
        drop(m, .fragmentationFailed, drops)
        return
    }
    withUnsafeTemporaryAllocation(of: OpaquePointer?.self, capacity: maxFragmentsOut) { pieces in
        // From the worker's own pool: the packet's may be reassembly's few large buffers.
        guard let base = pieces.baseAddress, sl_mbuf_alloc_bulk(w.pointee.pool ?? sl_mbuf_pool(m), base, UInt32(later)) == 0
        else {
            drop(m, .fragmentationFailed, drops)
            return
        }
        // The pool's buffers are all alike: room for the largest piece?
        let fresh = base[0]!
        let freshRoom = Int(sl_mbuf_buf_len(fresh)) &- (sl_mbuf_data(fresh)! - sl_mbuf_buf_addr(fresh)!)
        guard HeaderSize.ethernet &+ laterHeader &+ laterData <= freshRoom else {
            for k in 0..<later { sl_mbuf_free(base[k]) }
            drop(m, .fragmentationFailed, drops)
            return
        }
        // IPv6: what follows the Fragment header, and its identification.
        let nextHeader = ipv4 ? 0 : p.loadByte(at: IPv6Field.nextHeader)
        let id = ipv4 ? 0 : nextFragmentID(w)
        var offset = firstData
        for k in 0..<later {
            let n = base[k]!
            let size = min(laterData, payload &- offset)
            let ip = UnsafeMutableRawPointer(sl_mbuf_data(n)!) + HeaderSize.ethernet
            if ipv4 {
                ip.copyMemory(from: p, byteCount: HeaderSize.ipv4)
                copyOptions(from: p, header: header, to: ip + HeaderSize.ipv4)
            } else {
                ip.copyMemory(from: p, byteCount: HeaderSize.ipv6)
            }
            let more = k &+ 1 < later || lastMF
            writeFragmentFields(ip, ipv4: ipv4, headerLength: laterHeader, dataLength: size,
                                offset: originalOffset &+ offset, more: more, nextHeader: nextHeader, id: id)
            (ip + laterHeader).copyMemory(from: p + (header &+ offset), byteCount: size)
            offset &+= size
        }
        // The first piece, in place.
        var first = view
        if !ipv4 {
            (p - 8).copyMemory(from: p, byteCount: HeaderSize.ipv6)
            first = ipView(m, ip: p - 8, length: view.length &+ 8)
            writeFragmentFields(first.start, ipv4: false, headerLength: firstHeader, dataLength: firstData,
                                offset: 0, more: true, nextHeader: nextHeader, id: id)
        } else {
            writeFragmentFields(p, ipv4: true, headerLength: firstHeader, dataLength: firstData,
                                offset: originalOffset, more: true, nextHeader: 0, id: 0)
        }
        first.length = firstHeader &+ firstData
        w.pointee.counters.fragmented &+= 1
        w.pointee.counters.fragments_out &+= UInt64(later &+ 1)
        sendRebuilt(w, m, first, ipv4: ipv4, hop: hop, fib: fib, hops: hops, tx: &tx, drops: drops)
        // The later pieces, their lengths read back from their headers.
        for k in 0..<later {
            let n = base[k]!
            let ip = UnsafeMutableRawPointer(sl_mbuf_data(n)!) + HeaderSize.ethernet
            sendRebuilt(w, n, ipView(n, ip: ip, length: datagramLength(ip, ipv4: ipv4)), ipv4: ipv4, hop: hop, fib: fib, hops: hops, tx: &tx,
                        drops: drops)
        }
    }
}

/// The identification of this core's next IPv6 Fragment header: its
/// counter through a keyed permutation (`sl_frag_id`), so no value repeats
/// before the counter does, and one seen tells nothing of the next. (Before,
/// a public mixing of counter + key: one observed identification gave away
/// every later one.)
@inline(__always)
func nextFragmentID(_ w: UnsafeMutablePointer<sl_worker>) -> UInt32 { sl_worker_next_frag_id(w) }

/// Writes the fields that make the IP header at `ip` a fragment's: of
/// `dataLength` bytes after a header of `headerLength`, at byte `offset` of
/// the datagram (a multiple of 8), more to come or not. IPv4: length, IHL,
/// flags and offset, checksum (the rest is the datagram's). IPv6: payload
/// length, next header 44, and the Fragment header after the base header,
/// carrying `nextHeader` and `id`.
func writeFragmentFields(_ ip: UnsafeMutableRawPointer, ipv4: Bool, headerLength: Int, dataLength: Int, offset: Int,
                         more: Bool, nextHeader: UInt8, id: UInt32) {
    let offsetField = UInt16(truncatingIfNeeded: offset &>> 3) | (more ? IPv4Field.moreFragments : 0)
    if ipv4 {
        ip.storeByte(0x40 | UInt8(truncatingIfNeeded: headerLength &>> 2), at: IPv4Field.versionIHL)
        ip.storeBE16(UInt16(truncatingIfNeeded: headerLength &+ dataLength), at: IPv4Field.totalLength)
        ip.storeBE16(offsetField, at: IPv4Field.flagsFragment)  // DF clear, reserved bit 0
        ip.storeBE16(0, at: IPv4Field.checksum)
        ip.storeBE16(InternetChecksum.checksum(UnsafeRawBufferPointer(start: ip, count: headerLength)),
                     at: IPv4Field.checksum)
    } else {
        ip.storeBE16(UInt16(truncatingIfNeeded: 8 &+ dataLength), at: IPv6Field.payloadLength)
        ip.storeByte(IPProtocol.ipv6Fragment.rawValue, at: IPv6Field.nextHeader)
        let f = ip + HeaderSize.ipv6
        f.storeByte(nextHeader, at: 0)
        f.storeByte(0, at: 1)
        // Offset in 8-byte units in the top 13 bits, M in the lowest.
        f.storeBE16(UInt16(truncatingIfNeeded: offset) | (more ? 1 : 0), at: 2)
        f.storeBE32(id, at: 4)
    }
}

/// Walks the options of the IPv4 header at `p` (`header` bytes) and calls
/// `body` with the offset and length of each whose copy flag is set (RFC 791:
/// to be repeated in every fragment). A malformed option ends the walk.
@inline(__always)
private func forEachCopiedOption(_ p: UnsafeRawPointer, header: Int, _ body: (Int, Int) -> Void) {
    var i = HeaderSize.ipv4
    while i < header {
        let type = p.loadByte(at: i)
        if type == 0 { break }                 // end of options
        if type == 1 { i &+= 1; continue }     // no operation
        guard i &+ 1 < header else { break }
        let length = Int(p.loadByte(at: i &+ 1))
        guard length >= 2, i &+ length <= header else { break }
        if type & 0x80 != 0 { body(i, length) }
        i &+= length
    }
}

/// Bytes of the options every later fragment repeats, padded to 4.
private func copiedOptionsLength(_ p: UnsafeRawPointer, header: Int) -> Int {
    var total = 0
    forEachCopiedOption(p, header: header) { _, length in total &+= length }
    return (total &+ 3) & ~3
}

/// Writes the options every later fragment repeats at `to`, padded to 4
/// with end-of-options bytes.
private func copyOptions(from p: UnsafeRawPointer, header: Int, to: UnsafeMutableRawPointer) {
    var at = 0
    forEachCopiedOption(p, header: header) { i, length in
        (to + at).copyMemory(from: p + i, byteCount: length)
        at &+= length
    }
    while at & 3 != 0 { to.storeByte(0, at: at); at &+= 1 }
}
