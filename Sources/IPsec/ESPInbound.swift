// Inbound ESP (RFC 4303 §3.4) for the AEADs, in place in the packet's buffer.
//
// Two steps, because the SA lookup sits between them and is the caller's:
//
// 1. `classify` looks at a packet from the unprotected side: IP protocol 50,
//    or UDP to one of the gateway's NAT-traversal ports (RFC 3948), is ESP;
//    everything else is not (the caller applies the inbound SPD to it). For
//    UDP: one byte 0xFF is a NAT keepalive (dropped, counted); four zero
//    bytes are the non-ESP marker (IKE: dropped as `.notESP`, counted, or
//    handed to the IKE daemon by the caller); the UDP checksum is not
//    checked (RFC 3948 §3.1.2 lets the receiver ignore it: the ICV protects
//    the ESP packet). Fragmented ESP is dropped (no reassembly here; an IPv6
//    atomic fragment, offset 0 without M, is whole and processed). The
//    outer IPv4 header checksum is the caller's L3 parse's to check; an outer
//    IPv6 hop limit of 0 is accepted (the packet is for this node).
//
// 2. `decapsulate`, with the SA the caller found for the header's SPI and
//    addresses:
//    * anti-replay check before decryption (RFC 4303 §3.4.3), with the ESN
//      high half inferred by the window (Appendix A2);
//    * decrypt and verify the ICV; AAD is read in place from the ESP header
//      (SPI || seq) or, with ESN, written with one 16-byte store;
//    * the window is updated only after the ICV verified;
//    * padding checked (1, 2, 3, …), Next Header 59 (dummy packet) dropped;
//    * tunnel: the outer header goes, the inner packet's ECN field is
//      combined with the outer one per RFC 6040 §4.2 (drop where it says
//      drop; the inner IPv4 checksum is updated); TFC padding after the inner
//      packet (RFC 4303 §2.7) is dropped too, by the inner header's length;
//    * transport: the IP header moves back over the ESP header and gets the
//      Next Header, its lengths and its checksum back; when the SA is
//      UDP-encapsulated, the TCP, UDP or ICMPv6 checksum is recomputed for
//      the addresses a NAT may have rewritten (RFC 3948 §3.1.2,
//      NATTransport.swift);
//    * the result must match the SA's traffic selectors (RFC 4301 §5.2).
//
// No allocation, no ARC, no existentials, no throws: one drop reason or nil.

import Crypto
import Packet

/// The UDP destination ports this gateway takes ESP-in-UDP on (RFC 3948:
/// 4500 unless IKE moved it). Up to four, inline.
public struct NATTraversalPorts: Hashable, Sendable, BitwiseCopyable {
    @usableFromInline let ports: (UInt16, UInt16, UInt16, UInt16)

    public static let capacity = 4
    /// Port 4500 only.
    public static let rfc3948 = NATTraversalPorts(ports: (4500, 0, 0, 0))
    /// No UDP encapsulation at all.
    public static let none = NATTraversalPorts(ports: (0, 0, 0, 0))

    @usableFromInline init(ports: (UInt16, UInt16, UInt16, UInt16)) { self.ports = ports }

    /// nil when there are more than `capacity` distinct ports or one is 0.
    public init?(_ list: [UInt16]) {
        var unique: [UInt16] = []
        for port in list where !unique.contains(port) { unique.append(port) }
        guard unique.count <= Self.capacity, !unique.contains(0) else { return nil }
        func at(_ i: Int) -> UInt16 { i < unique.count ? unique[i] : 0 }
        ports = (at(0), at(1), at(2), at(3))
    }

    @inlinable @inline(__always)
    public func contains(_ port: UInt16) -> Bool {
        port != 0 && (port == ports.0 || port == ports.1 || port == ports.2 || port == ports.3)
    }

    public static func == (a: Self, b: Self) -> Bool { a.ports == b.ports }
    public func hash(into hasher: inout Hasher) {
        hasher.combine(ports.0); hasher.combine(ports.1); hasher.combine(ports.2); hasher.combine(ports.3)
    }
}

/// What the caller needs from an arriving ESP packet before the SA lookup,
/// and what `decapsulate` needs afterwards.
public struct ESPInboundHeader: Hashable, Sendable, BitwiseCopyable {
    public var spi: SPI
    /// The Sequence Number field (the low half with ESN).
    public var sequenceLow: UInt32
    /// Bytes from the start of the IP header to the SPI.
    public var espOffset: Int
    /// The IP datagram's length as its header gives it (trailing bytes in the
    /// buffer beyond it are not part of the packet).
    public var ipLength: Int
    /// Offset of the byte that named ESP (50) or UDP (17): the IPv4 Protocol
    /// field, the IPv6 Next Header or the last extension header's.
    public var protocolFieldOffset: Int
    public var udpEncapsulated: Bool
    /// UDP ports when `udpEncapsulated` (else 0).
    public var udpSourcePort: UInt16
    public var udpDestinationPort: UInt16
    /// Outer addresses, for the SA lookup.
    public var source: RawIPAddress
    public var destination: RawIPAddress

    @inlinable
    public init(spi: SPI, sequenceLow: UInt32, espOffset: Int, ipLength: Int, protocolFieldOffset: Int,
                udpEncapsulated: Bool, udpSourcePort: UInt16, udpDestinationPort: UInt16,
                source: RawIPAddress, destination: RawIPAddress) {
        self.spi = spi
        self.sequenceLow = sequenceLow
        self.espOffset = espOffset
        self.ipLength = ipLength
        self.protocolFieldOffset = protocolFieldOffset
        self.udpEncapsulated = udpEncapsulated
        self.udpSourcePort = udpSourcePort
        self.udpDestinationPort = udpDestinationPort
        self.source = source
        self.destination = destination
    }

    @inlinable public var isIPv6: Bool { source.isIPv6 }
}

/// What `ESPInbound.classify` found.
public enum ESPClassification: Hashable, Sendable, BitwiseCopyable {
    /// ESP (or ESP in UDP): look the SA up and decapsulate.
    case esp(ESPInboundHeader)
    /// Not ESP: plaintext for the inbound SPD.
    case notESP
    /// ESP-related but not to be processed (keepalive, IKE marker, fragment, malformed).
    case drop(ESPDrop)
}

/// What `ESPInbound.admit` found for a packet the window admits: its full
/// (inferred) sequence number, the length of the plaintext after the IV, and
/// what `complete` needs of its `ESPInboundHeader` (a third of its size).
public struct ESPOpening: BitwiseCopyable {
    public var sequence: SequenceNumber
    @usableFromInline var _cipherLength: UInt32
    @usableFromInline var _espOffset: UInt32
    @usableFromInline var _protocolFieldOffset: UInt32
    @usableFromInline var udpEncapsulated: Bool
    @usableFromInline var isIPv6: Bool

    @inlinable public var cipherLength: Int { Int(_cipherLength) }
    @inlinable var espOffset: Int { Int(_espOffset) }
    @inlinable var protocolFieldOffset: Int { Int(_protocolFieldOffset) }

    /// Offsets and lengths are those `admit` checked: inside the packet.
    @inlinable @inline(__always)
    init(sequence: SequenceNumber, cipherLength: Int, header: ESPInboundHeader) {
        self.sequence = sequence
        _cipherLength = UInt32(truncatingIfNeeded: cipherLength)
        _espOffset = UInt32(truncatingIfNeeded: header.espOffset)
        _protocolFieldOffset = UInt32(truncatingIfNeeded: header.protocolFieldOffset)
        udpEncapsulated = header.udpEncapsulated
        isIPv6 = header.isIPv6
    }
}

/// A packet admitted to the AEAD, or why it was refused.
public enum ESPAdmission {
    case admitted(ESPOpening)
    case dropped(ESPDrop)
}

/// The inbound ESP transform.
public enum ESPInbound {
    /// Classifies an IP packet arriving on the unprotected side. Always
    /// inlined: returned through memory, the header's narrow fields would be
    /// read back with wide loads (a store-forwarding stall per packet).
    @_transparent
    public static func classify(_ packet: PacketView, natPorts: NATTraversalPorts = .rfc3948) -> ESPClassification {
        let p = UnsafeRawPointer(packet.start)
        let available = packet.length
        guard available >= HeaderSize.ipv4 else { return .drop(.malformed) }
        let version = p.loadByte(at: 0) >> 4
        let ipLength: Int
        let l4: Int
        let proto: UInt8
        let protocolField: Int
        let fragment: Bool       // any fragment
        let laterFragment: Bool  // not the first: no upper-layer header
        let source: RawIPAddress
        let destination: RawIPAddress
        if version == 4 {
            guard let (headerLength, total) = IPParse.ipv4DatagramLength(p, available: available) else {
                return .drop(.malformed)
            }
            ipLength = total
            l4 = headerLength
            proto = p.loadByte(at: IPv4Field.protocol)
            protocolField = IPv4Field.protocol
            let flags = p.loadBE16(at: IPv4Field.flagsFragment)
            fragment = flags & (IPv4Field.moreFragments | IPv4Field.fragmentOffsetMask) != 0
            laterFragment = flags & IPv4Field.fragmentOffsetMask != 0
            source = RawIPAddress.loadIPv4(p, at: IPv4Field.source)
            destination = RawIPAddress.loadIPv4(p, at: IPv4Field.destination)
        } else if version == 6 {
            guard available >= HeaderSize.ipv6, let total = IPParse.ipv6DatagramLength(p, available: available),
                  let (upper, fragmentHeader) = IPParse.ipv6UpperLayerPastFirstFragment(p, length: total)
            else { return .drop(.malformed) }
            // Still en route (a Routing header with Segments Left > 0): what
            // follows is not for this node yet, ESP or not (RFC 8200 §4.4).
            // Ordinary traffic for the SPD and the route.
            if upper.enRoute { return .notESP }
            ipLength = total
            source = RawIPAddress.loadIPv6(p, at: IPv6Field.source)
            destination = RawIPAddress.loadIPv6(p, at: IPv6Field.destination)
            if upper.proto == 44 {
                // A later fragment's Fragment header (or a second one).
                guard total &- upper.offset >= 8 else { return .drop(.malformed) }
                proto = p.loadByte(at: upper.offset)
                protocolField = upper.offset
                let offsetAndFlags = p.loadBE16(at: upper.offset &+ 2)
                // A second Fragment header behind a first fragment's: its
                // M flag counts too (the datagram is still in pieces).
                let firstMore = fragmentHeader != upper.offset && p.loadBE16(at: fragmentHeader &+ 2) & 1 != 0
                fragment = offsetAndFlags & 0xFFF9 != 0 || firstMore
                laterFragment = offsetAndFlags & 0xFFF8 != 0
                l4 = upper.offset &+ 8
            } else {
                proto = upper.proto
                protocolField = upper.protocolFieldOffset
                // Past a first fragment's Fragment header: with no M flag it
                // is atomic, a whole datagram to be processed as it is
                // (RFC 6946 §4).
                fragment = fragmentHeader != 0 && p.loadBE16(at: fragmentHeader &+ 2) & 1 != 0
                laterFragment = false
                l4 = upper.offset
            }
        } else {
            return .drop(.malformed)
        }
        let room = ipLength &- l4  // ≥ 0: l4 lies inside the datagram

        if proto == IPProtocol.esp.rawValue {
            if fragment { return .drop(.fragmented) }
            guard room >= HeaderSize.esp else { return .drop(.malformed) }
            let spi = p.loadBE32(at: l4)
            guard spi != 0 else { return .drop(.malformed) }  // SPI 0 never goes on the wire
            return .esp(ESPInboundHeader(
                spi: SPI(spi), sequenceLow: p.loadBE32(at: l4 &+ 4), espOffset: l4, ipLength: ipLength,
                protocolFieldOffset: protocolField, udpEncapsulated: false, udpSourcePort: 0,
                udpDestinationPort: 0, source: source, destination: destination))
        }
        guard proto == IPProtocol.udp.rawValue, !laterFragment, room >= HeaderSize.udp else { return .notESP }
        let destinationPort = p.loadBE16(at: l4 &+ UDPField.destinationPort)
        guard natPorts.contains(destinationPort) else { return .notESP }
        if fragment { return .drop(.fragmented) }
        guard Int(p.loadBE16(at: l4 &+ UDPField.length)) == room else { return .drop(.malformed) }
        let esp = l4 &+ HeaderSize.udp
        let payload = room &- HeaderSize.udp
        if payload == 1 && p.loadByte(at: esp) == 0xFF { return .drop(.natKeepalive) }
        if payload >= 4 && p.loadBE32(at: esp) == 0 { return .drop(.notESP) }  // non-ESP marker: IKE
        guard payload >= HeaderSize.esp else { return .drop(.malformed) }
        return .esp(ESPInboundHeader(
            spi: SPI(p.loadBE32(at: esp)), sequenceLow: p.loadBE32(at: esp &+ 4), espOffset: esp,
            ipLength: ipLength, protocolFieldOffset: protocolField, udpEncapsulated: true,
            udpSourcePort: p.loadBE16(at: l4 &+ UDPField.sourcePort), udpDestinationPort: destinationPort,
            source: source, destination: destination))
    }

    /// Replay pre-check, decrypt and verify, replay update, padding check,
    /// trailer; then tunnel decapsulation with RFC 6040 ECN or the transport
    /// header restored; then the SA's selector check. On success (nil)
    /// `packet` is the inner IP packet. `header` is what `classify` returned
    /// for this packet, `sa` the SA the caller looked up for it and `window`
    /// that SA's replay window (same ESN setting). On a drop the packet's
    /// bytes may have been changed (a forged payload is zeroed).
    ///
    /// For an SA in a table, `decapsulate(_:header:saAt:window:core:)` reads
    /// it in place.
    @_transparent
    public static func decapsulate(_ packet: inout PacketView, header: ESPInboundHeader, sa: InboundSA,
                                   window: inout ReplayWindow, core: borrowing CryptoCore) -> ESPDrop? {
        withUnsafePointer(to: sa) { decapsulate(&packet, header: header, saAt: $0, window: &window, core: core) }
    }

    /// `decapsulate(_:header:sa:window:core:)` with the SA read in place, each
    /// field when it is used. Always inlined: out of line, the caller would
    /// copy the whole SA (selectors included, ~420 bytes) per packet. A
    /// value parameter costs nearly as much inlined: every field used after
    /// the AEAD call (an opaque call, which might write any memory) has to be
    /// loaded before it and kept on the stack across it, which was ~130
    /// instructions per packet for the four selectors alone.
    @_transparent
    public static func decapsulate(_ packet: inout PacketView, header: ESPInboundHeader,
                                   saAt sa: UnsafePointer<InboundSA>,
                                   window: inout ReplayWindow, core: borrowing CryptoCore) -> ESPDrop? {
        let opening: ESPOpening
        switch admit(packet, header: header, saAt: sa, window: window) {
        case .admitted(let o): opening = o
        case .dropped(let d): return d
        }
        let esp = packet.start + header.espOffset
        let payload = esp + ESPLayout.headerAndIV
        let authentic: Bool
        if sa.pointee.esn {
            var aad = SIMD4<UInt32>()
            let aadLength = ESPAssociatedData.store(spi: sa.pointee.spi.rawValue, sequence: opening.sequence.rawValue,
                                                    extendedSequenceNumbers: true, to: &aad)
            authentic = sa.pointee.key.open(core, payload: payload, length: opening.cipherLength, iv: esp + 8, aad: &aad,
                                            aadLength: aadLength, icv: payload + opening.cipherLength)
        } else {
            authentic = sa.pointee.key.open(core, payload: payload, length: opening.cipherLength, iv: esp + 8, aad: esp,
                                            aadLength: AEADAlgorithm.aadLength, icv: payload + opening.cipherLength)
        }
        return complete(&packet, saAt: sa, window: &window, opening: opening, authentic: authentic)
    }

    /// `decapsulate` up to the AEAD: the packet is checked (SA, lengths,
    /// replay window) and its open is added to `burst` (the AEAD's AAD in
    /// the burst's scratch when the SA has ESN). Once `burst.openEach` has
    /// run, `complete` does the rest with what the burst says of it. The
    /// worker's form: a burst's ciphers run back to back (see
    /// `ESPOutbound.stage`). Packets of one SA staged together are checked
    /// against the window as it was before any of them: a duplicate within
    /// the burst is opened, then refused by the window update (`complete`).
    @_transparent
    public static func stage(_ packet: PacketView, header: ESPInboundHeader, saAt sa: UnsafePointer<InboundSA>,
                             window: ReplayWindow, burst: borrowing AEADBurst) -> ESPAdmission {
        let result = admit(packet, header: header, saAt: sa, window: window)
        if case .admitted(let o) = result {
            burst.appendESP(esp: packet.start + header.espOffset, cipherLength: o.cipherLength, key: sa.pointee.key,
                            spi: sa.pointee.spi, sequence: o.sequence, esn: sa.pointee.esn)
        }
        return result
    }

    /// The checks before the AEAD: the SA is the header's, the lengths hold,
    /// and the window admits the sequence number (its high half inferred).
    @_transparent @usableFromInline
    static func admit(_ packet: PacketView, header: ESPInboundHeader, saAt sa: UnsafePointer<InboundSA>,
                      window: ReplayWindow) -> ESPAdmission {
        assert(window.esn == sa.pointee.esn, "the replay window and the SA disagree on ESN")
        guard header.spi == sa.pointee.spi else { return .dropped(.noSA) }
        guard header.udpEncapsulated == sa.pointee.udp,
              !sa.pointee.udp || header.udpDestinationPort == sa.pointee.udpDestinationPort
        else { return .dropped(.encapsulationMismatch) }
        let ipLength = header.ipLength
        let espOffset = header.espOffset
        // A header from `classify` for this packet passes; anything else must not reach memory.
        let udpLength = header.udpEncapsulated ? HeaderSize.udp : 0
        guard ipLength <= packet.length, espOffset >= HeaderSize.ipv4 &+ udpLength, espOffset <= ipLength,
              header.protocolFieldOffset >= 0, header.protocolFieldOffset < espOffset &- udpLength
        else { return .dropped(.malformed) }
        let cipherLength = ipLength &- espOffset &- ESPLayout.headerAndIV &- ESPLayout.icv
        guard cipherLength >= 4, cipherLength & 3 == 0 else { return .dropped(.badLength) }

        switch window.check(header.sequenceLow) {
        case .accept(let inferred): return .admitted(ESPOpening(sequence: inferred, cipherLength: cipherLength, header: header))
        case .replayed: return .dropped(.replayed)
        case .tooOld, .beforeFirstSequence, .beyondSequenceSpace: return .dropped(.tooOld)
        }
    }

    /// The rest of `decapsulate` once the AEAD has run (`authentic`: its
    /// verdict on the ICV): the window is updated, the trailer checked and
    /// removed, the packet decapsulated and its selectors checked.
    @_transparent
    public static func complete(_ packet: inout PacketView, saAt sa: UnsafePointer<InboundSA>, window: inout ReplayWindow,
                                opening: ESPOpening, authentic: Bool) -> ESPDrop? {
        guard authentic else { return .authenticationFailed }
        switch window.update(acceptedSequence: opening.sequence) {
        case .recorded: break
        case .replayed: return .replayed
        case .tooOld: return .tooOld
        }

        let espOffset = opening.espOffset
        let payload = packet.start + espOffset + ESPLayout.headerAndIV
        let payloadLength: Int
        let nextHeader: UInt8
        switch ESPTrailer.parse(payload, length: opening.cipherLength) {
        case .valid(let length, let next):
            payloadLength = length
            nextHeader = next.rawValue
        case .tooShort: return .badLength  // cipherLength ≥ 4: cannot happen
        case .padLengthTooLarge, .badPadding: return .badPadding
        }
        if nextHeader == IPProtocol.none.rawValue { return .dummyPacket }

        let payloadOffset = espOffset &+ ESPLayout.headerAndIV
        switch sa.pointee.mode {
        case .tunnel:
            if let drop = decapsulateTunnel(&packet, payloadOffset: payloadOffset, payloadLength: payloadLength,
                                            nextHeader: nextHeader) {
                return drop
            }
        case .transport:
            restoreTransport(&packet, opening: opening, payloadOffset: payloadOffset, payloadLength: payloadLength,
                             nextHeader: nextHeader)
        }
        let selectors = sa.pointer(to: \.selectors)!  // a stored property: never nil
        if selectors.pointee.count != 0 {
            guard let fields = SelectorFields(packet), SelectorList.matches(selectors, fields) else { return .selectorMismatch }
        }
        return nil
    }

    /// Tunnel mode: the inner packet is the payload; RFC 6040 ECN; the view
    /// narrowed to the inner datagram. Always inlined (the per-packet case):
    /// out of line, the view would go through memory both ways.
    @inlinable @inline(__always)
    static func decapsulateTunnel(_ packet: inout PacketView, payloadOffset: Int, payloadLength: Int,
                                  nextHeader: UInt8) -> ESPDrop? {
        let outer = packet.start
        let inner = outer + payloadOffset
        let outerECN: ECN
        if outer.loadByte(at: 0) >> 4 == 4 {
            outerECN = ECN(trafficClass: outer.loadByte(at: IPv4Field.tos))
        } else {
            outerECN = ECN(trafficClass: UInt8(truncatingIfNeeded: outer.loadBE32(at: IPv6Field.versionClassFlow) >> 20))
        }
        let innerLength: Int
        if nextHeader == IPProtocol.ipInIP.rawValue {
            // RFC 1812 §5.2.2: a router verifies the header checksum of what
            // it forwards, the peer's inner packets included.
            guard payloadLength >= HeaderSize.ipv4,
                  let (headerLength, total) = IPParse.ipv4DatagramLength(inner, available: payloadLength),
                  InternetChecksum.ipv4HeaderIsValid(UnsafeRawPointer(inner), length: headerLength) else { return .malformed }
            innerLength = total
            let tos = inner.loadByte(at: IPv4Field.tos)
            guard let outgoing = ECNTunnel.decapsulatedField(outer: outerECN, inner: ECN(trafficClass: tos)) else {
                return .ecnDrop
            }
            if outgoing != ECN(trafficClass: tos) {
                // RFC 1624 eqn. 3 over the 16-bit word version/IHL | TOS.
                let oldWord = inner.loadBE16(at: IPv4Field.versionIHL)
                let newTOS = outgoing.applied(to: tos)
                let newWord = oldWord & 0xFF00 | UInt16(newTOS)
                let checksum = inner.loadBE16(at: IPv4Field.checksum)
                var sum = UInt32(~checksum) &+ UInt32(~oldWord) &+ UInt32(newWord)
                sum = (sum >> 16) &+ (sum & 0xFFFF)
                sum = (sum >> 16) &+ (sum & 0xFFFF)
                inner.storeByte(newTOS, at: IPv4Field.tos)
                inner.storeBE16(~UInt16(truncatingIfNeeded: sum), at: IPv4Field.checksum)
            }
        } else if nextHeader == IPProtocol.ipv6InIP.rawValue {
            guard payloadLength >= HeaderSize.ipv6,
                  let total = IPParse.ipv6DatagramLength(inner, available: payloadLength) else { return .malformed }
            innerLength = total
            let word = inner.loadBE32(at: IPv6Field.versionClassFlow)
            let trafficClass = UInt8(truncatingIfNeeded: word >> 20)
            guard let outgoing = ECNTunnel.decapsulatedField(outer: outerECN, inner: ECN(trafficClass: trafficClass)) else {
                return .ecnDrop
            }
            if outgoing != ECN(trafficClass: trafficClass) {
                let newWord = word & ~(UInt32(3) << 20) | UInt32(outgoing.rawValue) << 20
                inner.storeBE32(newWord, at: IPv6Field.versionClassFlow)
            }
        } else {
            return .unsupportedNextHeader
        }
        packet.narrow(offset: payloadOffset, count: innerLength)
        return nil
    }

    /// Transport mode: moves the IP header (with its extension headers) back
    /// to just before the payload, restores the Next Header and the lengths;
    /// with UDP encapsulation, fixes the upper layer's checksum (NATTransport).
    @inlinable
    static func restoreTransport(_ packet: inout PacketView, opening: ESPOpening, payloadOffset: Int,
                                 payloadLength: Int, nextHeader: UInt8) {
        let headerLength = opening.espOffset &- (opening.udpEncapsulated ? HeaderSize.udp : 0)
        let shift = payloadOffset &- headerLength
        let p = packet.start
        let h = p + shift
        h.copyMemory(from: p, byteCount: headerLength)  // overlapping move (memmove)
        h.storeByte(nextHeader, at: opening.protocolFieldOffset)
        let length = headerLength &+ payloadLength  // < the old length ≤ 65535 + 40
        if opening.isIPv6 {
            h.storeBE16(UInt16(truncatingIfNeeded: length &- HeaderSize.ipv6), at: IPv6Field.payloadLength)
        } else {
            h.storeBE16(UInt16(truncatingIfNeeded: length), at: IPv4Field.totalLength)
            h.storeBE16(IPParse.ipv4HeaderChecksum(h, headerLength: headerLength), at: IPv4Field.checksum)
        }
        packet.narrow(offset: shift, count: length)
        // NAT traversal: the upper layer's checksum, for the addresses a NAT may have rewritten.
        if opening.udpEncapsulated { NATTransport.fixChecksum(packet, headerLength: headerLength, nextHeader: nextHeader) }
    }
}
