// Splitting command text into lines and lines into words. A word is a run of
// characters that are neither whitespace nor `#`; `#` starts a comment that
// runs to the end of the line, even in the middle of a word.

/// One word of a line and the column it starts at.
struct Word: Sendable {
    var text: Substring
    var column: Int
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
        let endColumn = words.last.map { $0.column + $0.text.count } ?? firstColumn
        return (words, endColumn)
    }
}
