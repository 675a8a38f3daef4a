import CShims
import Dataplane
import Packet
import Testing

extension EALSuites {
    @Suite struct ZZDebug {
        func fails(_ routes: [RouteEntry], _ probes: [UInt32]) -> Bool {
            guard let fib = try? ForwardingTable.build(routes: routes, socket: 0, generation: 1) else { return true }
            defer { ForwardingTable.free(fib) }
            var ips = probes
            var nh = [UInt64](repeating: 0, count: ips.count)
            if let f4 = fib.pointee.fib4 { sl_fib4_lookup_bulk(f4, &ips, &nh, Int32(ips.count)) }
            let o = LPMOracle(routes)
            for (i, a) in probes.enumerated() { if decode(fib.pointee.nexthops![Int(nh[i])]) != o.lookup(a) { return true } }
            return false
        }
        @Test func minimise() throws {
            try TestEAL.ensure()
            var rng = SplitMix64(seed: 1)
            let p4 = RouteSets.ipv4Prefixes(count: 400, &rng)
            let p6 = RouteSets.ipv6Prefixes(count: 400, &rng)
            let hops = RouteSets.distinctHops(p4.count + p6.count)
            var routes = zip(p4 + p6, hops).map { RouteEntry(prefix: $0, nextHop: $1) }.shuffled(using: &rng).filter { $0.prefix.address.isIPv4 }
            let probes: [UInt32] = [0, .max]
            print("initial fails:", fails(routes, probes), routes.count)
            var chunk = routes.count / 2
            while chunk >= 1 {
                var i = 0
                while i < routes.count {
                    var t = routes; t.removeSubrange(i..<min(i + chunk, t.count))
                    if fails(t, probes) { routes = t } else { i += chunk }
                }
                chunk /= 2
            }
            for r in routes { print(r.prefix, r.nextHop) }
        }
    }
}
