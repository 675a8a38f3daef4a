// Choosing header values that a NIC's RSS sends to a chosen queue: the
// Toeplitz hash of the fields the NIC hashes, then the redirection table.
// Used to pick SPIs (and UDP-encapsulation ports) whose inbound packets land
// on the worker that owns the SA, so no packet needs a handoff (issue 5).

/// The fields a NIC hashes for ESP when it hashes ESP at all.
public enum ESPHashFields: Sendable, Hashable {
    /// Source address, destination address, SPI (the Toeplitz input in that order).
    case addressesAndSPI
    /// The SPI alone (e.g. Intel E810 with its ESP profile).
    case spiOnly
}

/// A port's RSS: its Toeplitz key and redirection table (entry → queue).
public struct RSSSteering: Sendable {
    public let key: ToeplitzKey
    public let reta: [UInt16]

    /// nil without a redirection table.
    public init?(key: ToeplitzKey, reta: [UInt16]) {
        guard !reta.isEmpty else { return nil }
        self.key = key
        self.reta = reta
    }

    /// The queue of a hash: NICs index the table with the hash's low bits
    /// (tables are a power of two long; for others this is the remainder).
    public func queue(forHash hash: UInt32) -> UInt16 { reta[Int(hash % UInt32(reta.count))] }

    /// The Toeplitz input of an ESP packet.
    public static func espInput(source: IPAddress, destination: IPAddress, spi: UInt32, fields: ESPHashFields) -> [UInt8] {
        let spiBytes: [UInt8] = [UInt8(spi >> 24), UInt8((spi >> 16) & 0xFF), UInt8((spi >> 8) & 0xFF), UInt8(spi & 0xFF)]
        guard fields == .addressesAndSPI else { return spiBytes }
        return source.bytes + destination.bytes + spiBytes
    }

    /// The queue ESP from `source` to `destination` with `spi` lands on.
    public func espQueue(source: IPAddress, destination: IPAddress, spi: UInt32, fields: ESPHashFields) -> UInt16 {
        queue(forHash: key.hash(Self.espInput(source: source, destination: destination, spi: spi, fields: fields)))
    }

    /// An SPI (256 or more, not in `taken`) whose ESP from `source` to
    /// `destination` lands on `queue`; nil when `attempts` random tries find
    /// none (the table may not name the queue at all).
    public func spi(toQueue queue: UInt16, source: IPAddress, destination: IPAddress, fields: ESPHashFields,
                    taken: Set<UInt32>, using rng: inout some RandomNumberGenerator, attempts: Int = 1 << 16) -> UInt32? {
        guard reta.contains(queue) else { return nil }
        for _ in 0..<attempts {
            let spi = UInt32.random(in: 256...UInt32.max, using: &rng)
            if !taken.contains(spi) && espQueue(source: source, destination: destination, spi: spi, fields: fields) == queue {
                return spi
            }
        }
        return nil
    }

    /// A UDP source port (1024…65535) for UDP-encapsulated ESP from `source`
    /// to `destination`:`destinationPort` that lands on `queue` (the 4-tuple hash).
    public func udpSourcePort(toQueue queue: UInt16, source: IPv4Address, destination: IPv4Address,
                              destinationPort: UInt16) -> UInt16? {
        for port in UInt16(1024)...UInt16.max
        where self.queue(forHash: key.hash(source: source, destination: destination, sourcePort: port,
                                           destinationPort: destinationPort)) == queue {
            return port
        }
        return nil
    }
}

extension IPAddress {
    /// Network byte order: 4 bytes for IPv4, 16 for IPv6.
    public var bytes: [UInt8] {
        switch self {
        case .v4(let a): return (0..<4).map { UInt8((a.value >> (24 - 8 * UInt32($0))) & 0xFF) }
        case .v6(let a):
            return (0..<8).map { UInt8((a.high >> (56 - 8 * UInt64($0))) & 0xFF) }
                + (0..<8).map { UInt8((a.low >> (56 - 8 * UInt64($0))) & 0xFF) }
        }
    }
}
