import CShims
import Dataplane
import Packet

/// The far ends of `--mode round-trip`'s loopback ports, as RX callbacks on
/// the worker (their cost is counted in the worker's cycles; a few loads and
/// stores per packet):
/// - unprotected port: the peer sends each ESP packet back under the mirror
///   SA (same SPI and key, from 203.0.113.2 to 192.0.2.1): the outer IPv4
///   source and destination are swapped (the header checksum is unchanged,
///   and ESP does not cover the outer header);
/// - protected port: a host sends each opened packet again with a fresh TTL
///   (the gateway took one off when sealing it and one when routing it once
///   opened): TTL back to `ttl`, checksum updated.
enum LoopPeer {
    static let ttl: UInt8 = 64

    static func install(protectedPort: UInt16, unprotectedPort: UInt16) throws {
        guard rte_eth_add_rx_callback(protectedPort, 0, freshTTL, nil) != nil,
              rte_eth_add_rx_callback(unprotectedPort, 0, mirrorPeer, nil) != nil else {
            throw DataplaneError("cannot add the round-trip RX callbacks (rte_errno \(sl_errno()))")
        }
    }
}

/// Calls `body` with the IPv4 header of each untagged IPv4 frame of a burst.
@inline(__always)
private func eachIPv4(_ packets: UnsafeMutablePointer<OpaquePointer?>?, _ count: UInt16,
                      _ body: (UnsafeMutableRawPointer) -> Void) {
    guard let packets else { return }
    var i = 0
    while i < Int(count) {
        if let m = packets[i], let data = sl_mbuf_data(m),
           UnsafeRawPointer(data).loadBE16(at: HeaderSize.ethernet - 2) == EtherType.ipv4.rawValue {
            body(UnsafeMutableRawPointer(data + HeaderSize.ethernet))
        }
        i &+= 1
    }
}

private func freshTTL(_ port: UInt16, _ queue: UInt16, _ packets: UnsafeMutablePointer<OpaquePointer?>?,
                      _ count: UInt16, _ capacity: UInt16, _ context: UnsafeMutableRawPointer?) -> UInt16 {
    eachIPv4(packets, count) { ip in
        let old = ip.loadBE16(at: IPv4Field.ttl)  // TTL and protocol
        let new = UInt16(LoopPeer.ttl) << 8 | old & 0xFF
        ip.storeBE16(InternetChecksum.update(ip.loadBE16(at: IPv4Field.checksum), old: old, new: new), at: IPv4Field.checksum)
        ip.storeBE16(new, at: IPv4Field.ttl)
    }
    return count
}

private func mirrorPeer(_ port: UInt16, _ queue: UInt16, _ packets: UnsafeMutablePointer<OpaquePointer?>?,
                        _ count: UInt16, _ capacity: UInt16, _ context: UnsafeMutableRawPointer?) -> UInt16 {
    eachIPv4(packets, count) { ip in
        let source = ip.loadUnaligned(fromByteOffset: IPv4Field.source, as: UInt32.self)
        let destination = ip.loadUnaligned(fromByteOffset: IPv4Field.destination, as: UInt32.self)
        ip.storeBytes(of: destination, toByteOffset: IPv4Field.source, as: UInt32.self)
        ip.storeBytes(of: source, toByteOffset: IPv4Field.destination, as: UInt32.self)
    }
    return count
}
