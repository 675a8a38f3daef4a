import CShims
import Packet
import Synchronization

/// Where a route sends a packet, resolved by the control plane.
public enum NextHop: Hashable, Sendable {
    /// Out of `port` with `destination` as the Ethernet destination and `source` as the source.
    case forward(port: UInt16, destination: MACAddress, source: MACAddress)
    /// A route exists but its next hop has no neighbour entry: counted drop.
    case noNeighbor
    /// The same, for a prefix on the link of `port` (connected to it, or
    /// `route add … port N`): the destination has no neighbour entry. The
    /// port is kept for the reverse-path check (`port N rpf strict`).
    case onLink(port: UInt16)
    /// One of the gateway's own addresses: counted drop (no local stack).
    case local
    /// A destination no router forwards (RFC 1812 §5.3.7, RFC 4291): counted drop.
    case martian
}

/// One longest-prefix-match entry.
public struct RouteEntry: Hashable, Sendable {
    public var prefix: IPPrefix
    public var nextHop: NextHop
    public init(prefix: IPPrefix, nextHop: NextHop) { self.prefix = prefix.network; self.nextHop = nextHop }
}

/// What the data plane needs of a port besides its routes: the largest IP
/// packet it may send (its IP MTU) and the addresses ICMP errors leaving
/// through it come from.
public struct PortForwarding: Hashable, Sendable {
    public var port: UInt16
    public var mtu: Int
    public var ipv4: IPv4Address?
    public var ipv6: IPv6Address?
    /// The check of the sources of packets arriving on the port.
    public var rpf: ReversePathFilter
    /// The port leading to the local network stack for this port's frames
    /// (`port … punt M`), or nil.
    public var punt: UInt16?
    /// Whether the neighbour agent resolves the port's neighbours (`port … resolve on`).
    public var resolve: Bool

    public init(port: UInt16, mtu: Int = PortMTU.ethernet, ipv4: IPv4Address? = nil, ipv6: IPv6Address? = nil,
                rpf: ReversePathFilter = .off, punt: UInt16? = nil, resolve: Bool = false) {
        self.port = port
        self.mtu = mtu
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self.rpf = rpf
        self.punt = punt
        self.resolve = resolve
    }
}

/// Builds immutable forwarding snapshots (`sl_fib`): an `rte_fib` (DIR-24-8)
/// for IPv4, an `rte_fib6` (trie) for IPv6, and a next-hop array whose entry 0
/// is "no route" (the FIBs' default), so lookups have no miss branch.
/// Next-hop entry width follows the number of distinct next hops, which keeps
/// the 2^24-entry first level at 16 MB for up to 127 next hops.
public enum ForwardingTable {
    /// DPDK names FIBs globally; a process-wide serial keeps them unique.
    static let nameSerial = Atomic<UInt64>(0)

    /// Builds a snapshot on `socket`. Nothing is published here.
    /// `ports`: the MTU and ICMP source addresses of each port; a port not
    /// listed has `PortMTU.ethernet` and no address.
    public static func build(routes: [RouteEntry], ports: [PortForwarding] = [], socket: Int32,
                             generation: UInt64) throws(DataplaneError) -> UnsafeMutablePointer<sl_fib> {
        var index: [NextHop: UInt32] = [:]
        var hops: [sl_nexthop] = [sl_nexthop(dst: rte_ether_addr(), src: rte_ether_addr(), port: 0, kind: UInt8(SL_NH_NO_ROUTE), flags: 0)]
        for r in routes where index[r.nextHop] == nil {
            index[r.nextHop] = UInt32(hops.count)
            hops.append(cNextHop(r.nextHop))
        }
        guard let fibMem = rte_zmalloc_socket("sl_fib", MemoryLayout<sl_fib>.size, 64, socket) else {
            throw DataplaneError("out of DPDK memory for a forwarding snapshot (increase -m)")
        }
        let fib = fibMem.assumingMemoryBound(to: sl_fib.self)
        fib.pointee.generation = generation
        setPorts(fib, ports)
        setOwnAddresses(fib, routes)
        do throws(DataplaneError) {
            guard let nhMem = rte_zmalloc_socket("sl_nexthops", MemoryLayout<sl_nexthop>.stride * hops.count, 64, socket) else {
                throw DataplaneError("out of DPDK memory for \(hops.count) next hops (increase -m)")
            }
            let nh = nhMem.assumingMemoryBound(to: sl_nexthop.self)
            for (i, h) in hops.enumerated() { nh[i] = h }
            fib.pointee.nexthops = nh
            fib.pointee.nb_nexthops = UInt32(hops.count)

            // DPDK's DIR-24-8 and trie fill covered ranges when a prefix is
            // added: adding shorter prefixes first keeps longer ones intact.
            let ordered = routes.sorted { $0.prefix.length < $1.prefix.length }
            let v4 = ordered.filter { $0.prefix.address.isIPv4 }
            let v6 = ordered.filter { !$0.prefix.address.isIPv4 }
            // rte_lpm takes depths 1…32: the default route is the miss value.
            if let d = v4.first(where: { $0.prefix.length == 0 }) { fib.pointee.default4 = index[d.nextHop]! }
            fib.pointee.lpm4 = try makeLpm4(v4.filter { $0.prefix.length > 0 }, index: index, socket: socket)
            fib.pointee.fib6 = try makeFib6(v6, index: index, hopCount: hops.count, socket: socket, generation: generation)
        } catch {
            free(fib)
            throw error
        }
        return fib
    }

    static func setPorts(_ fib: UnsafeMutablePointer<sl_fib>, _ ports: [PortForwarding]) {
        let count = Int(SL_MAX_PORTS)
        withUnsafeMutableBytes(of: &fib.pointee.port_mtu) { mtu in
            for i in 0..<count { mtu.storeBytes(of: UInt16(PortMTU.ethernet), toByteOffset: 2 * i, as: UInt16.self) }
            for p in ports where Int(p.port) < count {
                // The ICMP errors' quote sizes assume at least the minimum.
                let clamped = min(max(p.mtu, PortMTU.accepted.lowerBound), PortMTU.accepted.upperBound)
                mtu.storeBytes(of: UInt16(clamped), toByteOffset: 2 * Int(p.port), as: UInt16.self)
            }
        }
        withUnsafeMutableBytes(of: &fib.pointee.port_rpf) { rpf in
            for i in 0..<count { rpf[i] = 0 }
            for p in ports where Int(p.port) < count { rpf[Int(p.port)] = p.rpf.code }
        }
        withUnsafeMutableBytes(of: &fib.pointee.port_punt) { punt in
            withUnsafeMutableBytes(of: &fib.pointee.port_uplink) { uplink in
                for i in 0..<count { punt[i] = 0; uplink[i] = 0 }
                for p in ports where Int(p.port) < count {
                    guard let target = p.punt, Int(target) < count else { continue }
                    punt[Int(p.port)] = UInt8(target + 1)
                    uplink[Int(target)] = UInt8(p.port + 1)
                }
            }
        }
        withUnsafeMutableBytes(of: &fib.pointee.port_resolve) { resolve in
            for i in 0..<count { resolve[i] = 0 }
            for p in ports where Int(p.port) < count && p.resolve { resolve[Int(p.port)] = 1 }
        }
        withUnsafeMutableBytes(of: &fib.pointee.port_addr4) { a4 in
            for p in ports where Int(p.port) < count {
                a4.storeBytes(of: p.ipv4?.value ?? 0, toByteOffset: 4 * Int(p.port), as: UInt32.self)
            }
        }
        withUnsafeMutableBytes(of: &fib.pointee.port_addr6) { a6 in
            for p in ports where Int(p.port) < count {
                guard let a = p.ipv6 else { continue }
                a6.storeBytes(of: a.high.bigEndian, toByteOffset: 16 * Int(p.port), as: UInt64.self)
                a6.storeBytes(of: a.low.bigEndian, toByteOffset: 16 * Int(p.port) + 8, as: UInt64.self)
            }
        }
    }

    /// The own-address filters (`sl_fib.own4`, `own6`) from the `local`
    /// routes. A `local` prefix wider than one address sets its family's
    /// every bit: each source of that family then asks the route table.
    static func setOwnAddresses(_ fib: UnsafeMutablePointer<sl_fib>, _ routes: [RouteEntry]) {
        for r in routes where r.nextHop == .local {
            let host = r.prefix.length == r.prefix.address.bitWidth
            switch r.prefix.address {
            case .v4(let a):
                if host { sl_fib_add_own4(fib, a.value) } else { fib.pointee.own4 = (~0, ~0, ~0, ~0) }
            case .v6(let a):
                if host {
                    withUnsafeBytes(of: (a.high.bigEndian, a.low.bigEndian)) {
                        sl_fib_add_own6(fib, $0.baseAddress!.assumingMemoryBound(to: UInt8.self))
                    }
                } else {
                    fib.pointee.own6 = (~0, ~0, ~0, ~0)
                }
            }
        }
    }

    /// Frees a snapshot no worker can still see (after the RCU grace period).
    public static func free(_ fib: UnsafeMutablePointer<sl_fib>) {
        if let f = fib.pointee.lpm4 { rte_lpm_free(f) }
        if let f = fib.pointee.fib6 { rte_fib6_free(f) }
        if let nh = fib.pointee.nexthops { rte_free(nh) }
        rte_free(fib)
    }

    static func cNextHop(_ h: NextHop) -> sl_nexthop {
        switch h {
        case let .forward(port, dst, src):
            return sl_nexthop(dst: rte_ether_addr(addr_bytes: dst.bytes), src: rte_ether_addr(addr_bytes: src.bytes),
                              port: port, kind: UInt8(SL_NH_FORWARD), flags: 0)
        case .noNeighbor:
            return sl_nexthop(dst: rte_ether_addr(), src: rte_ether_addr(), port: 0, kind: UInt8(SL_NH_NO_NEIGHBOR), flags: 0)
        case .onLink(let port):
            return sl_nexthop(dst: rte_ether_addr(), src: rte_ether_addr(), port: port, kind: UInt8(SL_NH_NO_NEIGHBOR),
                              flags: UInt8(SL_NH_ON_LINK))
        case .local:
            return sl_nexthop(dst: rte_ether_addr(), src: rte_ether_addr(), port: 0, kind: UInt8(SL_NH_LOCAL), flags: 0)
        case .martian:
            return sl_nexthop(dst: rte_ether_addr(), src: rte_ether_addr(), port: 0, kind: UInt8(SL_NH_MARTIAN), flags: 0)
        }
    }

    private static func makeLpm4(_ routes: [RouteEntry], index: [NextHop: UInt32], socket: Int32) throws(DataplaneError) -> OpaquePointer? {
        if routes.isEmpty { return nil }
        var conf = rte_lpm_config()
        conf.max_rules = UInt32(routes.count + 16)
        // One tbl8 group per distinct /24 that holds a longer prefix, at most.
        conf.number_tbl8s = UInt32(routes.filter { $0.prefix.length > 24 }.count + 16)
        conf.flags = 0
        guard let lpm = rte_lpm_create("sl4_\(nameSerial.add(1, ordering: .relaxed).newValue)", socket, &conf) else {
            throw .dpdkErrno("cannot create the IPv4 route table (\(routes.count) routes; out of DPDK memory? try a larger -m)")
        }
        for r in routes {
            guard case .v4(let a) = r.prefix.address else { continue }
            let rc = rte_lpm_add(lpm, a.value, UInt8(r.prefix.length), index[r.nextHop]!)
            if rc != 0 { rte_lpm_free(lpm); throw .dpdk("cannot add route \(r.prefix)", code: rc) }
        }
        return lpm
    }

    private static func makeFib6(_ routes: [RouteEntry], index: [NextHop: UInt32], hopCount: Int, socket: Int32,
                                 generation: UInt64) throws(DataplaneError) -> OpaquePointer? {
        if routes.isEmpty { return nil }
        var conf = rte_fib6_conf()
        conf.type = RTE_FIB6_TRIE
        conf.default_nh = 0
        conf.max_routes = Int32(routes.count + 16)
        conf.rib_ext_sz = 0
        // A prefix longer than 24 bits can need one tbl8 per further byte; an
        // entry holds a next hop or a tbl8 index, so the width fits both.
        let tbl8 = routes.reduce(0) { $0 + max(0, ($1.prefix.length - 24 + 7) / 8) } + 64
        conf.trie.nh_sz = max(hopCount, tbl8) < 32767 ? RTE_FIB6_TRIE_2B : RTE_FIB6_TRIE_4B
        conf.trie.num_tbl8 = UInt32(tbl8)
        guard let fib = rte_fib6_create("sl6_\(nameSerial.add(1, ordering: .relaxed).newValue)", socket, &conf) else {
            throw .dpdkErrno("cannot create the IPv6 FIB (\(routes.count) routes; out of DPDK memory? try a larger -m)")
        }
        for r in routes {
            guard case .v6(let a) = r.prefix.address else { continue }
            let bytes = a.bytes
            let rc = bytes.withUnsafeBufferPointer { b in
                rte_fib6_add(fib, b.baseAddress!, UInt8(r.prefix.length), UInt64(index[r.nextHop]!))
            }
            if rc != 0 { rte_fib6_free(fib); throw .dpdk("cannot add route \(r.prefix)", code: rc) }
        }
        return fib
    }
}
