import Command
import Dataplane
import Packet

/// Turns the validated configuration into the longest-prefix-match entries
/// the data plane installs. Precedence, most specific first:
/// * each port address is a host route to the gateway itself (`local`);
/// * each neighbour is a host route out of its port with its MAC, unless an
///   explicit route names exactly that host prefix;
/// * explicit routes (`via` resolves through the neighbour table, `port N`
///   leaves the destination to the neighbour host routes: unresolved → no_neighbor,
///   with the port whose connected prefix holds the next hop (the longest
///   such, `GatewayConfig.connectedPort`) where that port
///   resolves (`resolve on`), so that the workers hand its packets to the
///   neighbour agent);
/// * neighbours the agent learned count as neighbour entries; a static
///   `neighbor` line for the same address wins;
/// * each port address also installs its connected prefix, unless an explicit
///   route names the same prefix.
public enum RouteCompiler {
    /// RFC 1812 §5.3.7 / RFC 6890 and RFC 4291 §2.5–2.7: never forwarded:
    /// the prefixes no host on a link has an address in, and IPv6
    /// link-local. The data plane's `martianSource` tests the same set as
    /// sources, in code (it runs per packet): change both together.
    public static let martianDestinations = GatewayConfig.noHostPrefixes.map(\.prefix) + [IPPrefix("fe80::/10")!]

    /// Each declared port's MTU, its reverse-path check, and the addresses ICMP errors leaving through
    /// it come from: its first IPv4 address and its first IPv6 address that
    /// is not link-local (an error quoting a forwarded packet goes beyond the link).
    public static func ports(_ config: GatewayConfig) -> [PortForwarding] {
        config.ports.values.sorted { $0.id < $1.id }.map { port in
            var ipv4: IPv4Address? = nil
            var ipv6: IPv6Address? = nil
            for prefix in port.addresses {
                switch prefix.address {
                case .v4(let a): if ipv4 == nil { ipv4 = a }
                case .v6(let a): if ipv6 == nil && a.high >> 54 != 0x3FA { ipv6 = a }  // not fe80::/10
                }
            }
            return PortForwarding(port: port.id, mtu: port.mtu, ipv4: ipv4, ipv6: ipv6, rpf: port.rpf, punt: port.punt,
                                  resolve: port.resolve)
        }
    }

    public static func compile(_ config: GatewayConfig, portMACs: [UInt16: MACAddress],
                               learned: [IPAddress: Neighbor] = [:]) -> [RouteEntry] {
        var table: [IPPrefix: NextHop] = [:]
        let neighbors = learned.isEmpty ? config.neighbors : learned.merging(config.neighbors) { _, configured in configured }
        func mac(_ port: UInt16) -> MACAddress { portMACs[port] ?? MACAddress((0, 0, 0, 0, 0, 0)) }

        for port in config.ports.values {
            for a in port.addresses where table[a.network] == nil { table[a.network] = .onLink(port: port.id) }
        }
        for (prefix, target) in config.routes {
            switch target {
            case .via(let gw):
                if let n = neighbors[gw] {
                    table[prefix.network] = .forward(port: n.port, destination: n.mac, source: mac(n.port))
                } else if let port = GatewayConfig.connectedPort(of: gw, in: config.ports.values),
                          config.ports[port]?.resolve == true {
                    table[prefix.network] = .onLink(port: port)
                } else {
                    table[prefix.network] = .noNeighbor
                }
            case .port(let port):
                table[prefix.network] = .onLink(port: port)
            }
        }
        for n in neighbors.values {
            let host = IPPrefix(address: n.address, length: n.address.bitWidth)!
            if config.routes[host] == nil {
                table[host] = .forward(port: n.port, destination: n.mac, source: mac(n.port))
            }
        }
        for port in config.ports.values {
            for a in port.addresses { table[IPPrefix(address: a.address, length: a.address.bitWidth)!] = .local }
        }
        // Destinations no router forwards, unless the configuration names the
        // exact prefix itself (a more specific route also wins, by LPM).
        for prefix in Self.martianDestinations where table[prefix] == nil {
            table[prefix] = .martian
        }
        return table.map { RouteEntry(prefix: $0.key, nextHop: $0.value) }
            .sorted { ($0.prefix.address.bitWidth, $0.prefix.length, $0.prefix.description) < ($1.prefix.address.bitWidth, $1.prefix.length, $1.prefix.description) }
    }

}
