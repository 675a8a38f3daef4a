// Turning single words of the IPsec verbs into values: SPIs, keys, numbers
// with their ranges, protocols, port ranges and the enumerated choices. Like
// the readers in Values.swift, each takes the next word, says what it expected
// when the word is missing or malformed, and records which field it fills.
// Key text is never echoed (see `Word.quoted`).

import Crypto
import Packet

extension ValueText {
    static let spiRange = "256…4294967295 or 0x100…0xffffffff"

    static func badSPI(_ text: some StringProtocol) -> String {
        "bad SPI \(quoted(text)): expected a number \(spiRange)"
    }

    static func reservedSPI(_ text: some StringProtocol) -> String {
        "bad SPI \(quoted(text)): 0…255 are reserved (RFC 4303); expected \(spiRange)"
    }

    static let badKey = "bad key: expected 0x followed by an even number of hex digits"

    /// "bad `what` 'text': expected a number LO…HI".
    static func badNumber(_ what: String, _ text: some StringProtocol, _ range: ClosedRange<some BinaryInteger>,
                          hex: Bool = false) -> String {
        "bad \(what) \(quoted(text)): expected a number \(range.lowerBound)…\(range.upperBound)"
            + (hex ? ", in decimal or 0x hex" : "")
    }

    static func badPortRange(_ text: some StringProtocol) -> String {
        "bad port range \(quoted(text)): expected N or LO-HI with LO ≤ HI, each 0…65535"
    }

    static func badProtocol(_ text: some StringProtocol) -> String {
        "bad protocol \(quoted(text)): expected a number 0…255 or "
            + WordCursor.alternatives(IPProtocol.commandNames.map(\.name))
    }
}

enum NumberText {
    /// Decimal digits, or `0x`/`0X` and hex digits when `hex`; nil when the
    /// text is neither or the value does not fit 64 bits. No signs, no spaces.
    static func value(_ text: Substring, hex: Bool) -> UInt64? {
        if hex, text.hasPrefix("0x") || text.hasPrefix("0X") {
            let digits = text.dropFirst(2)
            guard !digits.isEmpty, digits.count <= 16, digits.allSatisfy({ $0.isHexDigit && $0.isASCII }) else {
                return nil
            }
            return UInt64(digits, radix: 16)
        }
        guard !text.isEmpty, text.count <= 20, text.allSatisfy({ $0.isASCII && $0.isNumber }) else { return nil }
        return UInt64(text)
    }

    /// Key material: `0x` and an even number of hex digits, as bytes. Reads
    /// the text in place, and wipes what it decoded when the text turns out
    /// bad: the caller wipes the result (`SAKeyMaterial(wiping:)`).
    static func bytes(_ text: Substring) -> [UInt8]? {
        guard text.hasPrefix("0x") || text.hasPrefix("0X") else { return nil }
        let digits = text.utf8.dropFirst(2)
        guard !digits.isEmpty, digits.count % 2 == 0 else { return nil }
        var bytes = [UInt8](repeating: 0, count: digits.count / 2)
        var index = digits.startIndex
        for i in bytes.indices {
            let next = digits.index(after: index)
            guard let high = nibble(digits[index]), let low = nibble(digits[next]) else {
                SecretBytes.wipe(&bytes)
                return nil
            }
            bytes[i] = high << 4 | low
            index = digits.index(after: next)
        }
        return bytes
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

extension WordCursor {
    /// An SPI, decimal or `0x` hex, not reserved.
    mutating func readSPI(field: CommandField = .spi) throws(CommandError) -> SecurityParameterIndex {
        let word = try next(expecting: "an SPI")
        guard let value = NumberText.value(word.text, hex: true), let raw = UInt32(exactly: value) else {
            throw error(ValueText.badSPI(word.text), at: word)
        }
        let spi = SecurityParameterIndex(raw)
        guard !spi.isReserved else { throw error(ValueText.reservedSPI(word.text), at: word) }
        mark(field, word)
        return spi
    }

    /// Key material in hex; its length is checked against the AEAD by `GatewayConfig.apply`.
    mutating func readKeyMaterial(field: CommandField = .key) throws(CommandError) -> SAKeyMaterial {
        let word = try next(expecting: "a key")
        guard var bytes = NumberText.bytes(word.text) else { throw error(ValueText.badKey, at: word) }
        do {
            let material = try SAKeyMaterial(wiping: &bytes)
            mark(field, word)
            return material
        } catch let failure {
            guard case .secretTooLong = failure else { throw error("cannot keep the key: \(failure)", at: word) }
            throw error("bad key: \(failure)", at: word)
        }
    }

    /// A number in `range`, decimal (or `0x` hex when `hex`); `what` names it in errors.
    mutating func readNumber<T: FixedWidthInteger>(_ what: String, in range: ClosedRange<T>, hex: Bool = false,
                                                   field: CommandField) throws(CommandError) -> T {
        let word = try next(expecting: "a number")
        guard let value = NumberText.value(word.text, hex: hex), let typed = T(exactly: value),
              range.contains(typed) else {
            throw error(ValueText.badNumber(what, word.text, range, hex: hex), at: word)
        }
        mark(field, word)
        return typed
    }

    /// A policy id, `PolicyID.valid`.
    mutating func readPolicyID() throws(CommandError) -> PolicyID {
        PolicyID(try readNumber("policy id", in: PolicyID.valid, field: .policyID))
    }

    /// One of an enumeration's raw values.
    mutating func readChoice<T: RawRepresentable & CaseIterable>(_: T.Type, field: CommandField)
        throws(CommandError) -> T where T.RawValue == String {
        let word = try keyword(T.allCases.map(\.rawValue))
        guard let value = T(rawValue: String(word.text)) else {
            throw error("bad value \(word.quoted)", at: word)  // keyword() only returns raw values
        }
        mark(field, word)
        return value
    }

    /// A protocol number 0…255 or one of `IPProtocol.commandNames`.
    mutating func readProtocol(field: CommandField = .proto) throws(CommandError) -> IPProtocol {
        let word = try next(expecting: "a protocol")
        let named = IPProtocol.commandNames.first(where: { $0.name == word.text })?.proto
        guard let proto = named ?? NumberText.value(word.text, hex: false).flatMap(UInt8.init(exactly:))
            .map(IPProtocol.init(_:)) else {
            throw error(ValueText.badProtocol(word.text), at: word)
        }
        mark(field, word)
        return proto
    }

    /// `N` or `LO-HI` with LO ≤ HI.
    mutating func readPortRange(field: CommandField, icmp: Bool = false) throws(CommandError) -> ClosedRange<UInt16> {
        let word = try next(expecting: icmp ? "an ICMP value or range (0-255)" : "a port or port range")
        let parts = word.text.split(separator: "-", maxSplits: 1, omittingEmptySubsequences: false)
        let bounds = parts.map { NumberText.value($0, hex: false).flatMap(UInt16.init(exactly:)) }
        // An ICMP value above 255 parses (the line prints back as it was
        // read); `GatewayConfig.apply` refuses it with the other selector checks.
        guard let low = bounds.first ?? nil, let high = bounds.last ?? nil, low <= high else {
            throw error(ValueText.badPortRange(word.text), at: word)
        }
        mark(field, word)
        return low...high
    }
}
