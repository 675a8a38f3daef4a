// The typed commands of the command language. A `Command` is what one line
// says; a `LocatedCommand` also remembers where each of its words came from so
// that `GatewayConfig.apply` can point semantic errors at the right word.

import Packet

/// Which side of the gateway a port faces.
public enum PortRole: String, Sendable, CaseIterable {
    /// The private side: cleartext traffic that outbound policy may protect.
    case protected
    /// The public side: ESP towards peers, and bypass traffic.
    case unprotected
}

/// Where a route sends matching packets.
public enum RouteTarget: Sendable, Hashable {
    /// To a next hop, resolved through the neighbor table.
    case via(IPAddress)
    /// Directly out of a port (the destination is on-link).
    case port(UInt16)
}

/// What `port N punt …` says: the port whose far end is the local network
/// stack (a TAP device to the kernel, say) for port N's frames, or none.
public enum PuntSetting: Sendable, Hashable {
    case off
    case port(UInt16)
}

/// What `port N resolve …` says: whether Sluice itself resolves the port's
/// neighbours (ARP, IPv6 Neighbor Discovery) and answers for its addresses.
public enum ResolveSetting: String, Sendable, Hashable, CaseIterable {
    case off
    case on
}

/// One parsed command line.
public enum Command: Sendable, Hashable {
    /// `port N [role R] [address A/LEN]… [mtu M] [rpf off|loose|strict] [punt M|off] [resolve on|off]`:
    /// declares port N or adds to it (`mtu`: the largest IP packet the port
    /// sends, `PortMTU.accepted`; `rpf`: the check of its arrivals' sources;
    /// `punt`: the port that leads to the local network stack for N's frames;
    /// `resolve`: Sluice resolves the port's neighbours itself).
    case port(id: UInt16, role: PortRole?, addresses: [IPPrefix], mtu: Int? = nil, rpf: ReversePathFilter? = nil,
              punt: PuntSetting? = nil, resolve: ResolveSetting? = nil)
    /// `neighbor IP lladdr MAC port N`: a static neighbor entry.
    case neighbor(address: IPAddress, mac: MACAddress, port: UInt16)
    /// `route add PREFIX via NEXTHOP` or `route add PREFIX port N`.
    case routeAdd(prefix: IPPrefix, target: RouteTarget)
    /// `route del PREFIX`.
    case routeDel(prefix: IPPrefix)
    /// `crypto-engine auto|ipsec-mb|sodium`: the engine of SAs without their own.
    case cryptoEngine(CryptoEngineChoice)
    /// `spd driver auto|linear|hash-list|cut-tree`: the SPD classifier.
    case spdDriver(SPDDriverChoice)
    /// `shared-sa atomic|handoff`: how several workers use one outbound SA.
    case sharedSA(SharedSAChoice)
    /// `sa add spi S dir D …`: a new SA, defaults filled in.
    case saAdd(SAConfig)
    /// `sa update spi S dir D …`: replaces the SA with the same SPI and dst
    /// (and direction). Its sequence number and replay window carry on when
    /// its key, algorithm and ESN stay (see the IPsec compiler).
    case saUpdate(SAConfig)
    /// `sa del spi S [dst B]`.
    case saDel(spi: SecurityParameterIndex, destination: IPAddress?)
    /// `sp add [id N] dir D src P dst P … priority N action …`; `id` nil assigns the next free id.
    case spAdd(id: PolicyID?, selector: PolicySelector, priority: UInt32, action: PolicyAction)
    /// `sp del id N` or `sp del dir D src P dst P … priority N`.
    case spDel(PolicyReference)
}

/// A word of a command that errors can point at.
public enum CommandField: Sendable, Hashable {
    /// A port number: the N of `port N`, wherever it appears.
    case port
    /// The value after `role`.
    case role
    /// The value after `mtu`.
    case mtu
    /// The value after `rpf`.
    case rpf
    /// The value after `punt`.
    case punt
    /// The value after `resolve`.
    case resolve
    /// The n-th address of a command: the address options of `port` in order,
    /// or the neighbor's IP address (index 0).
    case address(Int)
    /// The value after `lladdr`.
    case mac
    /// The prefix of a `route` command.
    case prefix
    /// The value after `via`.
    case nexthop
    /// The SPI of `sa add`/`sa del`, or the SPI after `action protect spi`.
    case spi
    /// The value after `dir`.
    case direction
    /// The value after `src` (an SA's outer source, a policy's source prefix).
    case source
    /// The value after `dst` (an SA's outer destination, a policy's destination prefix).
    case destination
    /// The value after `mode`.
    case mode
    /// The value after `aead`.
    case aead
    /// The value after `key`.
    case key
    /// The word `esn`.
    case esn
    /// The value after `seq`.
    case sequence
    /// The value after `replay-window`.
    case replayWindow
    /// The ports after `encap udp`.
    case encapSourcePort
    case encapDestinationPort
    /// The value after `df`.
    case df
    /// The value after `ttl`.
    case ttl
    /// The value after `crypto-engine`, as a verb or an SA option.
    case cryptoEngine
    /// The value after `proto`.
    case proto
    /// The values after `sport` and `dport`.
    case sourcePorts
    case destinationPorts
    /// The value after `priority`.
    case priority
    /// The word after `action`.
    case action
    /// The value after `id` in `sp add` and `sp del`.
    case policyID
    /// The value after `if-id`.
    case ifID
    /// The value after `spd driver`.
    case spdDriver
    /// The value after `shared-sa`.
    case sharedSA
    /// The value after `reqid` (an SA's, or a policy's `protect reqid`).
    case reqid
    /// The value after `cpu`.
    case cpu
    /// The limits after `lifetime`.
    case lifetime
}

/// A command together with where it, and each of its words, came from.
public struct LocatedCommand: Sendable, Equatable {
    public var command: Command
    /// The location of the command's first word (its verb).
    public var location: SourceLocation
    /// Locations of individual words; fields not listed fall back to `location`.
    public var fieldLocations: [CommandField: SourceLocation]

    public init(_ command: Command, at location: SourceLocation,
                fieldLocations: [CommandField: SourceLocation] = [:]) {
        self.command = command
        self.location = location
        self.fieldLocations = fieldLocations
    }

    /// Where the word for `field` is, or the command's own location if unknown.
    public func location(of field: CommandField) -> SourceLocation {
        fieldLocations[field] ?? location
    }
}
