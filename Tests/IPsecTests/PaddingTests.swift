import IPsec
import Packet
import Testing

/// Parses `bytes`; one spare byte after them keeps the base address non-nil
/// when `bytes` is empty, and reads past the end would see it.
private func parse(_ bytes: [UInt8]) -> ESPTrailerParse {
    (bytes + [0xCC]).withUnsafeBytes { ESPTrailer.parse($0.baseAddress!, length: bytes.count) }
}

/// payload, then the trailer `ESPTrailer.write` produces.
private func sealed(payload: [UInt8], alignment: Int = 4, nextHeader: IPProtocol) -> [UInt8] {
    let pad = ESPTrailer.padLength(payloadLength: payload.count, alignment: alignment)
    var bytes = payload + [UInt8](repeating: 0xEE, count: pad + 2)
    bytes.withUnsafeMutableBytes {
        ESPTrailer.write(padLength: pad, nextHeader: nextHeader, at: $0.baseAddress! + payload.count)
    }
    return bytes
}

@Suite struct PaddingTests {
    /// The 8-byte-store trailer writer equals the byte loop for every AEAD
    /// pad length and next header, and touches only the 8 bytes it may.
    @Test func wideTrailerWriteMatchesByteLoop() {
        for pad in 0...3 {
            for nextHeader in [IPProtocol.ipInIP, .ipv6InIP, IPProtocol(6), IPProtocol(0xFF)] {
                var narrow = [UInt8](repeating: 0xEE, count: 24)
                var wide = narrow
                narrow.withUnsafeMutableBytes { ESPTrailer.write(padLength: pad, nextHeader: nextHeader, at: $0.baseAddress! + 8) }
                wide.withUnsafeMutableBytes {
                    ESPTrailer.writeAligned4(padLength: pad, nextHeader: nextHeader, at: $0.baseAddress! + 8)
                }
                #expect(Array(wide[..<(10 + pad)]) == Array(narrow[..<(10 + pad)]), "pad \(pad)")
                #expect(wide[(10 + pad)..<16].allSatisfy { $0 == 0 }, "pad \(pad)")
                #expect(Array(wide[16...]) == Array(narrow[16...]), "pad \(pad)")
            }
        }
    }

    @Test func everyPayloadLengthUpTo300() {
        var rng = SplitMix64(seed: 3)
        for length in 0...300 {
            let pad = ESPTrailer.padLength(payloadLength: length)
            #expect((0...3).contains(pad))
            #expect((length + pad + 2) % 4 == 0, "length \(length)")
            #expect(ESPTrailer.trailerLength(payloadLength: length) == pad + 2)
            // The smallest pad that works.
            #expect((0..<pad).allSatisfy { (length + $0 + 2) % 4 != 0 })

            let payload = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            let nextHeader: IPProtocol = length.isMultiple(of: 2) ? .ipInIP : .ipv6InIP
            let bytes = sealed(payload: payload, nextHeader: nextHeader)
            #expect(bytes.count == length + pad + 2)
            #expect(Array(bytes[length..<(length + pad)]) == (0..<pad).map { UInt8($0 + 1) })
            #expect(bytes[length + pad] == UInt8(pad))
            #expect(bytes[length + pad + 1] == nextHeader.rawValue)
            #expect(Array(bytes[..<length]) == payload)
            #expect(parse(bytes) == .valid(payloadLength: length, nextHeader: nextHeader))
        }
    }

    @Test func otherAlignments() {
        for alignment in [1, 2, 4, 8, 16, 64, 256] {
            for length in 0...300 {
                let pad = ESPTrailer.padLength(payloadLength: length, alignment: alignment)
                #expect(pad >= 0 && pad < alignment)
                #expect((length + pad + 2) % alignment == 0, "length \(length) alignment \(alignment)")
                let bytes = sealed(payload: [UInt8](repeating: 0, count: length), alignment: alignment,
                                   nextHeader: .udp)
                #expect(parse(bytes) == .valid(payloadLength: length, nextHeader: .udp))
            }
        }
    }

    @Test func rejectsAnyWrongPaddingByte() {
        // Long pads too (up to 255): a peer may pad for traffic-flow confidentiality.
        for pad in [1, 2, 3, 7, 64, 255] {
            var custom = [UInt8](repeating: 0xAB, count: 5) + (0..<pad).map { UInt8($0 + 1) } + [UInt8(pad), 4]
            #expect(parse(custom) == .valid(payloadLength: 5, nextHeader: .ipInIP))
            for i in 0..<pad {
                for wrong: UInt8 in [0, UInt8(i), UInt8(truncatingIfNeeded: i + 2), 0xFF] where wrong != UInt8(i + 1) {
                    custom[5 + i] = wrong
                    #expect(parse(custom) == .badPadding, "pad \(pad) byte \(i) = \(wrong)")
                }
                custom[5 + i] = UInt8(i + 1)
            }
        }
    }

    @Test func rejectsOversizePadLengthAndShortInput() {
        #expect(parse([]) == .tooShort)
        #expect(parse([4]) == .tooShort)
        #expect(parse([0, 4]) == .valid(payloadLength: 0, nextHeader: .ipInIP))
        #expect(parse([1, 4]) == .padLengthTooLarge)
        #expect(parse([1, 1, 4]) == .valid(payloadLength: 0, nextHeader: .ipInIP))
        #expect(parse([1, 2, 4]) == .padLengthTooLarge)
        #expect(parse([0xFF, 4]) == .padLengthTooLarge)
    }

    /// Every Pad Length byte over short buffers of correct padding: valid
    /// exactly when it fits.
    @Test func everyPadLengthByte() {
        for length in 2...40 {
            // Bytes before the trailer: 1, 2, …, length − 2. Pad lengths 0 and
            // length − 2 see a correct pattern; every other one that fits does not.
            let body = (0..<(length - 2)).map { UInt8(truncatingIfNeeded: length - 2 - $0) }.reversed()
            for padByte in 0...255 {
                let bytes = Array(body) + [UInt8(padByte), 41]
                let result = parse(bytes)
                if padByte > length - 2 {
                    #expect(result == .padLengthTooLarge)
                } else {
                    // The last padByte bytes before the trailer must read 1…padByte.
                    let tail = bytes[(length - 2 - padByte)..<(length - 2)]
                    let good = tail.elementsEqual((0..<padByte).map { UInt8($0 + 1) })
                    #expect(result == (good ? .valid(payloadLength: length - 2 - padByte, nextHeader: .ipv6InIP)
                                            : .badPadding), "length \(length) pad \(padByte)")
                }
            }
        }
    }
}
