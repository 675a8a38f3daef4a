// Outbound ESP (RFC 4303) with the AEADs of RFC 4106 (AES-GCM) and RFC 7634
// (ChaCha20-Poly1305), in place in the packet's buffer.
//
// Tunnel mode:    [outer IP][UDP][SPI seq IV][inner IP packet][pad pl nh][ICV]
// Transport mode: [IP header][UDP][SPI seq IV][IP payload][pad pl nh][ICV]
//                  ([UDP] only with NAT traversal, RFC 3948)
//
// * IV: the 64-bit sequence number, big-endian (RFC 4106 §3.1 and RFC 7634
//   §2 allow any IV that never repeats under one key; the sequence number of
//   an SA never repeats because it never wraps).
// * AAD: SPI || seq (8 bytes) or, with ESN, SPI || seq-high || seq-low (12).
// * Padding: the fewest bytes (0…3) that end the ciphertext on a 4-byte
//   boundary, filled 1, 2, 3 (RFC 4303 §2.4).
// * The ESP header and IV are written with one 16-byte store right before the
//   seal; the non-ESN AAD is read from that header in place (the AEAD engines
//   load AAD and IV with wide loads, and narrower stores just before would
//   fail store-to-load forwarding; see `ESPAssociatedData`).
// * Transport mode moves the IP header back into the headroom and inserts
//   ESP after it: IPv4 (any options) gets protocol 50 (17 with UDP), its total
//   length and checksum fixed; IPv6 gets ESP after its Hop-by-Hop, Routing
//   and Destination Options headers (RFC 4303 §3.1.1), the Next Header byte
//   that named the payload set to 50 (17), and its payload length fixed;
//   after an atomic Fragment header (offset 0, no M: a whole datagram, RFC
//   6946) ESP follows that header. A fragment (IPv4 MF or offset, an IPv6
//   Fragment header with either) is refused: transport mode protects whole
//   datagrams (RFC 4303 §3.3.4).
// * Trailing bytes after the IP datagram (L2 padding of a short frame) are
//   dropped: the IP header's own length says what is encrypted.
//
// No allocation, no ARC, no existentials, no throws: one drop reason or nil.

import Crypto
import Packet

/// Where `ESPOutbound.frame` left a packet to be sealed: the ESP header (its
/// IV 8 bytes on), the length of the plaintext after the IV (ICV after it),
/// and, when not 0, the offset from the packet's start of a UDP header whose
/// checksum covers the ciphertext (computed by `finish` once sealed).
public struct ESPFrame: BitwiseCopyable {
    public var esp: UnsafeMutableRawPointer
    public var cipherLength: Int
    public var udpChecksumAt: Int

    @inlinable @inline(__always)
    init(esp: UnsafeMutableRawPointer, cipherLength: Int, udpChecksumAt: Int) {
        self.esp = esp
        self.cipherLength = cipherLength
        self.udpChecksumAt = udpChecksumAt
    }
}

/// A framed packet, or why it was refused.
public enum ESPFrameResult {
    case framed(ESPFrame)
    case dropped(ESPDrop)
}

/// The outbound ESP transform.
public enum ESPOutbound {
    /// Encrypts the IP packet in `packet` in place with `sequence`. Tunnel
    /// mode prepends the outer IP header [+ UDP], ESP header and IV; transport
    /// mode moves the IP header forward and inserts [UDP +] ESP header and IV
    /// after it. Both append padding, pad length, next header and the ICV, and
    /// fix lengths, checksums and protocol fields. On success (nil) `packet`
    /// describes the ESP packet (start moved back into the headroom); on a
    /// drop the packet's bytes may have been changed.
    ///
    /// `sequence` must come from the SA's `OutboundSequence` (unique, never
    /// 0); a number beyond the SA's sequence space is refused with
    /// `.sequenceExhausted`.
    ///
    /// `@_transparent`: see `encapsulate(_:saAt:sequence:iv:identification:core:)`.
    @_transparent
    public static func encapsulate(_ packet: inout PacketView, sa: OutboundSA, sequence: SequenceNumber,
                                   core: borrowing CryptoCore) -> ESPDrop? {
        withUnsafePointer(to: sa) {
            encapsulate(&packet, saAt: $0, sequence: sequence, iv: sequence.rawValue, identification: nil, core: core)
        }
    }

    /// `encapsulate(_:sa:sequence:core:)` with the SA read in place, each
    /// field where it is used (the worker's form, for an SA in a table): by
    /// value, even inlined, the SA's fields were loaded up front and the
    /// ones used after the AEAD call (an opaque call) kept on the stack.
    @_transparent
    public static func encapsulate(_ packet: inout PacketView, saAt sa: UnsafePointer<OutboundSA>,
                                   sequence: SequenceNumber, core: borrowing CryptoCore) -> ESPDrop? {
        encapsulate(&packet, saAt: sa, sequence: sequence, iv: sequence.rawValue, identification: nil, core: core)
    }

    /// Assigns the SA's next sequence number and encapsulates with it. An SA
    /// that has sent its last number refuses the packet (`.sequenceExhausted`)
    /// and stays exhausted. A number is used up even when the packet is then
    /// dropped for another reason (it may never be used twice).
    @_transparent
    public static func encapsulate(_ packet: inout PacketView, sa: OutboundSA, sequence: inout OutboundSequence,
                                   core: borrowing CryptoCore) -> ESPDrop? {
        guard case .assigned(let number) = sequence.assign() else { return .sequenceExhausted }
        return withUnsafePointer(to: sa) {
            encapsulate(&packet, saAt: $0, sequence: number, iv: number.rawValue, identification: nil, core: core)
        }
    }

    /// The transform, with the IV and the outer IPv4 identification as
    /// parameters so that known-answer tests can reproduce published packets
    /// (whose IVs are not sequence numbers). `identification` nil: derived
    /// from the sequence number.
    ///
    /// `@_transparent` (always inlined, whatever the caller's size): called
    /// out of line with an SA read from a table, the caller copies the SA
    /// record to the stack per packet and the callee spills most of its
    /// state; the performance inliner refuses `@inline(__always)` for a
    /// function this size into a caller as large as the worker loop.
    @_transparent @usableFromInline
    static func encapsulate(_ packet: inout PacketView, saAt sa: UnsafePointer<OutboundSA>, sequence: SequenceNumber,
                            iv: UInt64, identification: UInt16?, core: borrowing CryptoCore) -> ESPDrop? {
        switch frame(&packet, saAt: sa, sequence: sequence, identification: identification) {
        case .dropped(let d):
            return d
        case .framed(let f):
            seal(esp: f.esp, cipherLength: f.cipherLength, sa: sa, sequence: sequence, iv: iv, core: core)
            finish(packet, f)
            return nil
        }
    }

    /// `encapsulate` without the AEAD: the packet is framed (headers,
    /// trailer, lengths; `packet` describes the ESP packet) and its seal is
    /// added to `burst` (ESP header and IV written, the IV the sequence
    /// number). Once `burst.sealEach` has run, `finish` completes it. The
    /// worker's form: a burst's ciphers run back to back, with none of its
    /// other work between them (`sluicebench --mode overlap`: work between
    /// AEAD calls costs more than the same work before them).
    @_transparent
    public static func stage(_ packet: inout PacketView, saAt sa: UnsafePointer<OutboundSA>, sequence: SequenceNumber,
                             burst: borrowing AEADBurst) -> ESPFrameResult {
        let result = frame(&packet, saAt: sa, sequence: sequence, identification: nil)
        if case .framed(let f) = result {
            writeHeader(esp: f.esp, spi: sa.pointee.spi, sequence: sequence, iv: sequence.rawValue)
            burst.appendESP(esp: f.esp, cipherLength: f.cipherLength, key: sa.pointee.key, spi: sa.pointee.spi,
                            sequence: sequence, esn: sa.pointee.esn)
        }
        return result
    }

    /// What remains of a packet `stage` or `frame` made once it is sealed: a
    /// UDP checksum over the ciphertext (UDP-encapsulated ESP over IPv6).
    @inlinable @inline(__always)
    public static func finish(_ packet: PacketView, _ frame: ESPFrame) {
        let at = frame.udpChecksumAt
        if _slowPath(at != 0) {
            // RFC 8200 §8.1: mandatory over IPv6, over the final destination
            // (`frameTransport` refused a packet whose final one is not known).
            IPParse.storeTransportChecksum(ipHeader: packet.start, ipv6: true, segment: packet.start + at,
                                           length: packet.length &- at, protocol: IPProtocol.udp.rawValue,
                                           field: UDPField.checksum,
                                           destinationAt: IPParse.finalDestinationOffset(packet.start, headersLength: at)
                                               ?? IPv6Field.destination)
        }
    }

    /// Everything `encapsulate` does but the ESP header, IV and seal.
    @_transparent @usableFromInline
    static func frame(_ packet: inout PacketView, saAt sa: UnsafePointer<OutboundSA>, sequence: SequenceNumber,
                      identification: UInt16?) -> ESPFrameResult {
        guard sequence.rawValue <= SequenceNumber.limit(esn: sa.pointee.esn).rawValue else { return .dropped(.sequenceExhausted) }
        let p = packet.start
        let available = packet.length
        guard available >= HeaderSize.ipv4 else { return .dropped(.malformed) }
        let version = p.loadByte(at: 0) >> 4

        // The inner datagram: its length, the outer TOS / traffic class, DF.
        let innerLength: Int
        let trafficClass: UInt8
        let innerDF: Bool
        var flowLabel: UInt32 = 0
        if version == 4 {
            guard let (_, total) = IPParse.ipv4DatagramLength(p, available: available) else { return .dropped(.malformed) }
            innerLength = total
            trafficClass = p.loadByte(at: IPv4Field.tos)
            innerDF = p.loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.dontFragment != 0
        } else if version == 6 {
            guard available >= HeaderSize.ipv6, let total = IPParse.ipv6DatagramLength(p, available: available) else {
                return .dropped(.malformed)
            }
            innerLength = total
            let word = p.loadBE32(at: IPv6Field.versionClassFlow)
            trafficClass = UInt8(truncatingIfNeeded: word >> 20)
            flowLabel = word & 0x000F_FFFF
            innerDF = false
        } else {
            return .dropped(.malformed)
        }

        if sa.pointee.layout == .transport {
            return frameTransport(&packet, sa: sa, version: version, datagramLength: innerLength)
        }

        // Tunnel mode. All lengths below are bounded by 65535 + a few hundred.
        let padLength = ESPTrailer.padLength(payloadLength: innerLength)
        let cipherLength = innerLength &+ padLength &+ ESPTrailer.fixedLength
        let end = cipherLength &+ ESPLayout.icv           // bytes from `p` to the end of the ICV
        guard end &- available <= packet.tailroom else { return .dropped(.noTailroom) }
        let prefix = sa.pointee.templateLength &+ ESPLayout.headerAndIV
        guard prefix <= packet.headroom else { return .dropped(.noHeadroom) }
        let total = prefix &+ end
        let outerIPLength = sa.pointee.layout == .tunnelIPv4 ? HeaderSize.ipv4 : HeaderSize.ipv6
        guard total &- (sa.pointee.layout == .tunnelIPv4 ? 0 : HeaderSize.ipv6) <= 65535 else { return .dropped(.tooBig) }

        // Trailer after the inner packet (over any L2 padding); the ICV's 16
        // bytes follow it, so the 8-byte store stays inside `end`.
        ESPTrailer.writeAligned4(padLength: padLength, nextHeader: version == 4 ? .ipInIP : .ipv6InIP,
                                 at: p + innerLength)

        // Outer header from the template, per-packet fields patched.
        let o = p - prefix
        sa.pointee.writeTemplate(to: o)
        let tos = ECNTunnel.encapsulate(inner: ECN(trafficClass: trafficClass)).applied(to: trafficClass)
        if sa.pointee.layout == .tunnelIPv4 {
            let totalLength = UInt16(truncatingIfNeeded: total)  // ≤ 65535, checked
            let id = identification ?? UInt16(truncatingIfNeeded: sequence.rawValue) &+ sa.pointee.identificationOffset
            let setDF: Bool
            switch sa.pointee.df {
            case .copy: setDF = innerDF
            case .set: setDF = true
            case .clear: setDF = false
            }
            let flags: UInt16 = setDF ? IPv4Field.dontFragment : 0
            o.storeByte(tos, at: IPv4Field.tos)
            o.storeBE16(totalLength, at: IPv4Field.totalLength)
            o.storeBE16(id, at: IPv4Field.identification)
            o.storeBE16(flags, at: IPv4Field.flagsFragment)
            // base < 6 · 2^16; adding four 16-bit words cannot overflow 32 bits.
            var sum = sa.pointee.ipv4ChecksumBase &+ UInt32(tos) &+ UInt32(totalLength) &+ UInt32(id) &+ UInt32(flags)
            sum = (sum >> 16) &+ (sum & 0xFFFF)
            sum = (sum >> 16) &+ (sum & 0xFFFF)
            o.storeBE16(~UInt16(truncatingIfNeeded: sum), at: IPv4Field.checksum)
        } else {
            o.storeBE32(0x6000_0000 | UInt32(tos) << 20 | flowLabel, at: IPv6Field.versionClassFlow)
            o.storeBE16(UInt16(truncatingIfNeeded: total &- HeaderSize.ipv6), at: IPv6Field.payloadLength)
        }
        if sa.pointee.udp {
            o.storeBE16(UInt16(truncatingIfNeeded: total &- outerIPLength), at: outerIPLength &+ UDPField.length)
        }

        packet.tailroom &-= end &- available  // ≤ tailroom, checked
        packet.prepend(prefix)
        packet.length = total
        return .framed(ESPFrame(esp: p - ESPLayout.headerAndIV, cipherLength: cipherLength,
                                udpChecksumAt: sa.pointee.udp && sa.pointee.layout == .tunnelIPv6 ? HeaderSize.ipv6 : 0))
    }

    /// Transport mode: ESP between the packet's own IP header (and, IPv6, its
    /// Hop-by-Hop / Routing / Destination Options headers) and its payload.
    @inlinable
    static func frameTransport(_ packet: inout PacketView, sa: UnsafePointer<OutboundSA>, version: UInt8,
                               datagramLength: Int) -> ESPFrameResult {
        let p = packet.start
        var headerLength: Int
        var protocolField: Int
        if version == 4 {
            guard p.loadBE16(at: IPv4Field.flagsFragment) & (IPv4Field.moreFragments | IPv4Field.fragmentOffsetMask) == 0
            else { return .dropped(.fragmented) }
            headerLength = Int(p.loadByte(at: IPv4Field.versionIHL) & 0x0F) &<< 2
            protocolField = IPv4Field.protocol
        } else {
            guard let upper = IPParse.ipv6UpperLayer(p, length: datagramLength) else { return .dropped(.malformed) }
            headerLength = upper.offset
            protocolField = upper.protocolFieldOffset
            if upper.proto == 44 {
                // Offset 0 and no M flag: an atomic fragment, a whole datagram
                // (RFC 6946 §4). ESP follows its Fragment header (RFC 4303
                // §3.1.1); a true fragment is refused (before anything else).
                guard datagramLength &- upper.offset >= 8 else { return .dropped(.malformed) }
                guard p.loadBE16(at: upper.offset &+ 2) & 0xFFF9 == 0 else { return .dropped(.fragmented) }
                protocolField = upper.offset
                headerLength = upper.offset &+ 8
            }
            // UDP-encapsulated, the checksum needs the final destination (`finish`).
            guard !(upper.enRoute && sa.pointee.udp) || IPParse.finalDestinationOffset(p, headersLength: upper.offset) != nil
            else { return .dropped(.malformed) }
        }
        let nextHeader = p.loadByte(at: protocolField)
        let payloadLength = datagramLength &- headerLength  // ≥ 0: the header lies inside the datagram
        let padLength = ESPTrailer.padLength(payloadLength: payloadLength)
        let cipherLength = payloadLength &+ padLength &+ ESPTrailer.fixedLength
        let udpLength = sa.pointee.udp ? HeaderSize.udp : 0
        let insert = udpLength &+ ESPLayout.headerAndIV
        let end = datagramLength &+ padLength &+ ESPTrailer.fixedLength &+ ESPLayout.icv
        guard end &- packet.length <= packet.tailroom else { return .dropped(.noTailroom) }
        guard insert <= packet.headroom else { return .dropped(.noHeadroom) }
        let total = end &+ insert
        guard total &- (version == 4 ? 0 : HeaderSize.ipv6) <= 65535 else { return .dropped(.tooBig) }

        // The ICV follows the trailer: the 8-byte store stays inside `end`.
        ESPTrailer.writeAligned4(padLength: padLength, nextHeader: IPProtocol(nextHeader), at: p + datagramLength)
        let h = p - insert
        h.copyMemory(from: p, byteCount: headerLength)  // overlapping move (memmove)
        h.storeByte(sa.pointee.udp ? IPProtocol.udp.rawValue : IPProtocol.esp.rawValue, at: protocolField)
        if version == 4 {
            h.storeBE16(UInt16(truncatingIfNeeded: total), at: IPv4Field.totalLength)
            h.storeBE16(IPParse.ipv4HeaderChecksum(h, headerLength: headerLength), at: IPv4Field.checksum)
        } else {
            h.storeBE16(UInt16(truncatingIfNeeded: total &- HeaderSize.ipv6), at: IPv6Field.payloadLength)
        }
        let udp = h + headerLength
        if sa.pointee.udp {
            udp.storeBE16(sa.pointee.udpSourcePort, at: UDPField.sourcePort)
            udp.storeBE16(sa.pointee.udpDestinationPort, at: UDPField.destinationPort)
            udp.storeBE16(UInt16(truncatingIfNeeded: total &- headerLength), at: UDPField.length)
            udp.storeBE16(0, at: UDPField.checksum)
        }

        packet.tailroom &-= end &- packet.length  // ≤ tailroom, checked
        packet.prepend(insert)
        packet.length = total
        return .framed(ESPFrame(esp: udp + udpLength, cipherLength: cipherLength,
                                udpChecksumAt: sa.pointee.udp && version == 6 ? headerLength : 0))
    }

    /// The length of the ESP packet `encapsulate` makes of an IP datagram of
    /// `datagramLength` bytes under `sa`. (Transport mode pads the datagram
    /// less its IP headers, whose length is a multiple of 4: the same padding.)
    @inlinable @inline(__always)
    public static func encapsulatedLength(datagramLength n: Int, sa: UnsafePointer<OutboundSA>) -> Int {
        n &+ ESPTrailer.padLength(payloadLength: n) &+ ESPTrailer.fixedLength &+ ESPLayout.icv &+ sa.pointee.headerOverhead
    }

    /// Whether the ESP packet `sa` makes of `packet` (an IP packet) may leave
    /// in fragments when it is too big for its port, rather than be refused
    /// with an error to the sender: its outer header must allow it (IPv6,
    /// which the gateway sends, or IPv4 with DF clear), and so must the
    /// inner packet (IPv4 without DF, or an IPv6 packet of at most 1,280
    /// bytes, which no error could make smaller: RFC 8200 §5). Under `df set`
    /// only the latter, whose outer header then leaves with DF clear
    /// (`clearDF`; RFC 4213 §3.2 asks an IPv6-in-IPv4 tunnel to fragment
    /// rather than black-hole such a packet); an IPv4 packet without DF is
    /// refused (its sender does not expect an error). Transport mode keeps
    /// the packet's own header: IPv4 without DF only.
    public static func mayFragment(_ packet: PacketView, saAt sa: UnsafePointer<OutboundSA>) -> Bool {
        let p = packet.start
        guard packet.length >= HeaderSize.ipv4 else { return false }
        let version = p.loadByte(at: 0) >> 4
        let innerMay: Bool
        if version == 4 {
            innerMay = p.loadBE16(at: IPv4Field.flagsFragment) & IPv4Field.dontFragment == 0
        } else {
            innerMay = version == 6 && packet.length >= HeaderSize.ipv6
                && HeaderSize.ipv6 &+ Int(p.loadBE16(at: IPv6Field.payloadLength)) <= PortMTU.ipv6Minimum
        }
        switch sa.pointee.layout {
        case .transport: return version == 4 && innerMay
        case .tunnelIPv6: return innerMay
        case .tunnelIPv4: return innerMay && (sa.pointee.df != .set || version == 6)  // `copy` of such a packet: DF clear
        }
    }

    /// Clears DF in the outer IPv4 header of a sealed ESP packet that is to
    /// leave in fragments though its SA says `df set` (see `mayFragment`);
    /// the header checksum is updated. Anything else is left as it is.
    public static func clearDF(_ packet: PacketView) {
        let p = packet.start
        guard packet.length >= HeaderSize.ipv4, p.loadByte(at: 0) >> 4 == 4 else { return }
        let flags = p.loadBE16(at: IPv4Field.flagsFragment)
        guard flags & IPv4Field.dontFragment != 0 else { return }
        let cleared = flags & ~IPv4Field.dontFragment
        p.storeBE16(cleared, at: IPv4Field.flagsFragment)
        p.storeBE16(InternetChecksum.update(p.loadBE16(at: IPv4Field.checksum), old: flags, new: cleared),
                    at: IPv4Field.checksum)
    }

    /// The largest IP datagram whose ESP packet under `sa` is at most `mtu`
    /// bytes (0 when none is): what a Packet Too Big for the tunnel reports.
    public static func largestDatagram(mtu: Int, sa: UnsafePointer<OutboundSA>) -> Int {
        // n + pad(n) + 2 is n + 2 rounded up to 4: n ≤ floor4(room + 2) − 2.
        let room = mtu &- sa.pointee.headerOverhead &- ESPTrailer.fixedLength &- ESPLayout.icv
        return max(0, ((room &+ 2) & ~3) &- 2)
    }

    /// SPI || seq || IV at `esp`, with one 16-byte store.
    @inlinable @inline(__always)
    static func writeHeader(esp: UnsafeMutableRawPointer, spi: SPI, sequence: SequenceNumber, iv: UInt64) {
        let header = SIMD4<UInt32>(spi.rawValue.bigEndian, sequence.low32.bigEndian,
                                   UInt32(truncatingIfNeeded: iv >> 32).bigEndian, UInt32(truncatingIfNeeded: iv).bigEndian)
        esp.storeBytes(of: header, as: SIMD4<UInt32>.self)
    }

    /// Writes SPI || seq || IV at `esp` with one 16-byte store and seals the
    /// `cipherLength` bytes after it; the ICV follows them.
    @inlinable @inline(__always)
    static func seal(esp: UnsafeMutableRawPointer, cipherLength: Int, sa: UnsafePointer<OutboundSA>, sequence: SequenceNumber,
                     iv: UInt64, core: borrowing CryptoCore) {
        writeHeader(esp: esp, spi: sa.pointee.spi, sequence: sequence, iv: iv)
        let payload = esp + ESPLayout.headerAndIV
        if sa.pointee.esn {
            var aad = SIMD4<UInt32>()
            let aadLength = ESPAssociatedData.store(spi: sa.pointee.spi.rawValue, sequence: sequence.rawValue,
                                                    extendedSequenceNumbers: true, to: &aad)
            sa.pointee.key.seal(core, payload: payload, length: cipherLength, iv: esp + 8, aad: &aad,
                        aadLength: aadLength, icv: payload + cipherLength)
        } else {
            sa.pointee.key.seal(core, payload: payload, length: cipherLength, iv: esp + 8, aad: esp,
                        aadLength: AEADAlgorithm.aadLength, icv: payload + cipherLength)
        }
    }
}
