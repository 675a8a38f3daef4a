// Splitting command text into lines and lines into words. A word is a run of
// characters that are neither whitespace nor `#`; `#` starts a comment that
// runs to the end of the line, even in the middle of a word.

/// One word of a line and the column it starts at.
struct Word: Sendable {
    var text: Substring
    var column: Int
    /// Follows `key` (directly or after other hex words): a piece of a key
    /// split by spaces, however short.
    var afterKey = false

    /// The word as error messages show it: `'text'`, or `<redacted>` when it
    /// may be key material (see `mayBeKeyMaterial`, `afterKey`).
    var quoted: String { afterKey || Self.mayBeKeyMaterial(text) ? "<redacted>" : "'\(text)'" }

    /// Hex digits, with or without `0x`: what a piece of a key looks like.
    static func isHex(_ text: Substring) -> Bool {
        let digits = text.hasPrefix("0x") || text.hasPrefix("0X") ? text.dropFirst(2) : text
        return !digits.isEmpty && digits.allSatisfy { $0.isHexDigit && $0.isASCII }
    }

    /// True for words no message may echo: `0x` followed by more than 16
    /// characters, or more than 20 hex digits. No number the language takes is
    /// that long (a 64-bit value has at most 16 hex or 20 decimal digits), and
    /// every valid key is (the shortest, AES-GCM-128 with salt, has 40 digits),
    /// so a key is never echoed even when it is misplaced or mistyped after
    /// its `0x`.
    static func mayBeKeyMaterial(_ text: Substring) -> Bool {
        if text.hasPrefix("0x") || text.hasPrefix("0X") { return text.count > 18 }
        return text.count > 20 && text.allSatisfy { $0.isHexDigit && $0.isASCII }
    }
}

/// The language's lines and words for readers that do not parse them (the
/// control socket's own verbs, sluicectl's file batches): split exactly as
/// configuration text is.
public enum CommandText {
    /// `Lexer.lines`.
    public static func lines(_ text: String) -> [Substring] { Lexer.lines(text) }
    /// The words of `line` before any comment (`Lexer.words`).
    public static func words(_ line: Substring) -> [Substring] { Lexer.words(line, firstColumn: 1).words.map(\.text) }
}

enum Lexer {
    /// Splits text into lines at `\n`, `\r\n` or `\r`. The line terminators are
    /// not part of the lines; text after the last terminator is a final line.
    static func lines(_ text: String) -> [Substring] {
        text.split(omittingEmptySubsequences: false) { $0 == "\n" || $0 == "\r\n" || $0 == "\r" }
    }

    /// The words of `line` before any comment, numbering columns from
    /// `firstColumn`, and the column just past the last word (where "end of
    /// line" is reported).
    static func words(_ line: Substring, firstColumn: Int) -> (words: [Word], endColumn: Int) {
        var words: [Word] = []
        var wordStart: Substring.Index? = nil
        var wordColumn = firstColumn
        var column = firstColumn
        var index = line.startIndex
        scan: while index < line.endIndex {
            let character = line[index]
            let isComment = character == "#"
            if isComment || character.isWhitespace {
                if let start = wordStart {
                    words.append(Word(text: line[start..<index], column: wordColumn))
                    wordStart = nil
                }
                if isComment { break scan }
            } else if wordStart == nil {
                wordStart = index
                wordColumn = column
            }
            column += 1
            index = line.index(after: index)
        }
        if let start = wordStart {
            words.append(Word(text: line[start..<index], column: wordColumn))
        }
        // The hex words after `key` are never echoed, even a short piece of a
        // key split by a space (the word before an error is quoted).
        var inKey = false
        for i in words.indices {
            // (`df`, an option that may follow a key, is hex too: it ends one.)
            inKey = inKey && Word.isHex(words[i].text) && words[i].text != "df"
            words[i].afterKey = inKey
            if words[i].text == "key" { inKey = true }
        }
        let endColumn = words.last.map { $0.column + $0.text.count } ?? firstColumn
        return (words, endColumn)
    }
}
