// ECN across the tunnel, RFC 6040 ("Tunnelling of Explicit Congestion
// Notification"), which updates RFC 4301's IPsec rules. Pure functions over
// the 2-bit ECN field (RFC 3168 §5: Not-ECT 00, ECT(1) 01, ECT(0) 10, CE 11).
//
// Encapsulation, RFC 6040 §4.1, Figure 3:
//
//   +-----------------+-------------------------------+
//   | Incoming Header |      Departing Outer Header   |
//   | (also equal to  +---------------+---------------+
//   | departing Inner | Compatibility |    Normal     |
//   |     Header)     |     Mode      |     Mode      |
//   +-----------------+---------------+---------------+
//   |    Not-ECT      |   Not-ECT     |   Not-ECT     |
//   |     ECT(0)      |   Not-ECT     |    ECT(0)     |
//   |     ECT(1)      |   Not-ECT     |    ECT(1)     |
//   |       CE        |   Not-ECT     |      CE       |
//   +-----------------+---------------+---------------+
//
// Normal mode copies the field, CE included. (Resetting CE to ECT(0) is RFC
// 3168's old "full-functionality" ingress, which RFC 6040 replaces; RFC 4301
// IPsec tunnels already copied CE.) The inner header is never changed.
//
// Decapsulation, RFC 6040 §4.2, Figure 4 (rows: arriving inner; columns:
// arriving outer; the cell is the ECN field of the departing packet):
//
//   +---------+------------------------------------------------+
//   |Arriving |            Arriving Outer Header               |
//   |   Inner +---------+------------+------------+------------+
//   |  Header | Not-ECT | ECT(0)     | ECT(1)     |     CE     |
//   +---------+---------+------------+------------+------------+
//   | Not-ECT | Not-ECT |Not-ECT(!!!)|Not-ECT(!!!)| <drop>(!!!)|
//   |  ECT(0) |  ECT(0) | ECT(0)     | ECT(1)     |     CE     |
//   |  ECT(1) |  ECT(1) | ECT(1) (!) | ECT(1)     |     CE     |
//   |    CE   |      CE |     CE     |     CE(!!!)|     CE     |
//   +---------+---------+------------+------------+------------+
//
// The (!!!) cells are combinations a compliant ingress never produces; §4.2
// asks the egress to make them loggable (they hint at an attack or a broken
// node). The (!) cell is an unusual but possible combination, marked
// separately. `ECNDecapsulation.marker` carries the mark so the caller can
// count it; the <drop> cell is a drop reason of its own.

/// The 2-bit ECN field of an IPv4 TOS or IPv6 Traffic Class byte.
public struct ECN: RawRepresentable, Hashable, Sendable, BitwiseCopyable, CaseIterable, CustomStringConvertible {
    /// 0...3.
    public let rawValue: UInt8

    /// nil for values above 3.
    @inlinable public init?(rawValue: UInt8) {
        guard rawValue <= 3 else { return nil }
        self.rawValue = rawValue
    }
    /// The low two bits of a TOS / Traffic Class byte.
    @inlinable public init(trafficClass: UInt8) { rawValue = trafficClass & 3 }
    @inlinable init(unchecked rawValue: UInt8) { self.rawValue = rawValue }

    @inlinable public static var notECT: ECN { ECN(unchecked: 0b00) }
    @inlinable public static var ect1: ECN { ECN(unchecked: 0b01) }
    @inlinable public static var ect0: ECN { ECN(unchecked: 0b10) }
    @inlinable public static var ce: ECN { ECN(unchecked: 0b11) }

    public static var allCases: [ECN] { [.notECT, .ect1, .ect0, .ce] }

    /// `trafficClass` with its ECN bits replaced by this value (DSCP kept).
    @inlinable public func applied(to trafficClass: UInt8) -> UInt8 { trafficClass & ~3 | rawValue }

    public var description: String {
        switch rawValue {
        case 0: "Not-ECT"
        case 1: "ECT(1)"
        case 2: "ECT(0)"
        default: "CE"
        }
    }
}

/// The cell of RFC 6040 Figure 4 for one packet.
public struct ECNDecapsulation: Hashable, Sendable, BitwiseCopyable {
    /// The marks of Figure 4.
    public enum Marker: Hashable, Sendable, BitwiseCopyable {
        case none
        /// "(!)": inner ECT(1) under outer ECT(0).
        case unusual
        /// "(!!!)": a combination no compliant ingress produces.
        case unexpected
    }

    /// The ECN field for the departing (inner) header, or nil: drop the packet.
    public let outgoing: ECN?
    public let marker: Marker

    @inlinable public init(outgoing: ECN?, marker: Marker) { self.outgoing = outgoing; self.marker = marker }
    @inlinable public var isDrop: Bool { outgoing == nil }
}

/// RFC 6040 encapsulation and decapsulation.
public enum ECNTunnel {
    /// RFC 6040 §4.1 normal mode: the outer header copies the inner ECN field.
    @inlinable @inline(__always)
    public static func encapsulate(inner: ECN) -> ECN { inner }

    /// RFC 6040 §4.1 compatibility mode (for egresses that predate ECN): Not-ECT.
    @inlinable @inline(__always)
    public static func encapsulateCompatibility(inner: ECN) -> ECN { .notECT }

    /// The outgoing field of `decapsulate` alone (nil: drop), for the data
    /// path: Figure 4 packed four bits per cell, cell `outer << 2 | inner`,
    /// 4 meaning drop. A shift and a mask where `decapsulate` is a call with
    /// branches; `packedFieldMatchesFigure4` checks all sixteen cells.
    @inlinable @inline(__always)
    public static func decapsulatedField(outer: ECN, inner: ECN) -> ECN? {
        let figure4: UInt64 = 0x3334_3210_3110_3210
        let cell = UInt8(truncatingIfNeeded: figure4 >> (UInt64(outer.rawValue &<< 2 | inner.rawValue) &<< 2)) & 0xF
        return cell > 3 ? nil : ECN(unchecked: cell)
    }

    /// RFC 6040 §4.2, Figure 4.
    @inlinable
    public static func decapsulate(outer: ECN, inner: ECN) -> ECNDecapsulation {
        if inner == .notECT {
            // Row Not-ECT: the inner transport cannot take a CE mark, so CE drops.
            if outer == .notECT { return ECNDecapsulation(outgoing: .notECT, marker: .none) }
            if outer == .ce { return ECNDecapsulation(outgoing: nil, marker: .unexpected) }
            return ECNDecapsulation(outgoing: .notECT, marker: .unexpected)
        }
        if outer == .ce { return ECNDecapsulation(outgoing: .ce, marker: .none) }
        if outer == .ect1 {
            // ECT(1) from the outer header wins over ECT(0); CE inner stays CE (!!!).
            if inner == .ce { return ECNDecapsulation(outgoing: .ce, marker: .unexpected) }
            return ECNDecapsulation(outgoing: .ect1, marker: .none)
        }
        // Outer Not-ECT or ECT(0): the inner field stands.
        if outer == .ect0 && inner == .ect1 { return ECNDecapsulation(outgoing: .ect1, marker: .unusual) }
        return ECNDecapsulation(outgoing: inner, marker: .none)
    }
}
