// Reading the words of one line in order, with the "expected X after Y, found
// Z" errors that every verb's grammar needs, and a record of which word became
// which field of the command. Messages quote words through `Word.quoted`, which
// never echoes anything that may be key material.

struct WordCursor {
    let file: String
    let line: Int
    let words: [Word]
    /// The column just past the last word, where "end of line" is reported.
    let endColumn: Int
    private(set) var position = 0
    private(set) var fieldLocations: [CommandField: SourceLocation] = [:]

    init(file: String, line: Int, words: [Word], endColumn: Int) {
        self.file = file
        self.line = line
        self.words = words
        self.endColumn = endColumn
    }

    func location(of word: Word) -> SourceLocation {
        SourceLocation(file: file, line: line, column: word.column)
    }

    var endLocation: SourceLocation { SourceLocation(file: file, line: line, column: endColumn) }

    func error(_ message: String, at word: Word) -> CommandError {
        CommandError(message, at: location(of: word))
    }

    /// The word most recently read, quoted for a message; `''` before anything is read.
    var previous: String { position > 0 ? words[position - 1].quoted : "''" }

    var atEnd: Bool { position >= words.count }

    /// The next word without reading it, or nil at the end of the line.
    func peek() -> Word? { position < words.count ? words[position] : nil }

    /// The next word, or nil at the end of the line.
    mutating func next() -> Word? {
        guard position < words.count else { return nil }
        defer { position += 1 }
        return words[position]
    }

    /// The next word; at the end of the line, "expected `what` after …".
    mutating func next(expecting what: String) throws(CommandError) -> Word {
        let after = previous
        guard let word = next() else {
            throw CommandError("expected \(what) after \(after), found end of line", at: endLocation)
        }
        return word
    }

    /// The next word, which must be one of `keywords`.
    mutating func keyword(_ keywords: [String]) throws(CommandError) -> Word {
        let after = previous
        let expected = Self.alternatives(keywords.map { "'\($0)'" })
        let word = try next(expecting: expected)
        guard keywords.contains(where: { $0 == word.text }) else {
            throw error("expected \(expected) after \(after), found \(word.quoted)", at: word)
        }
        return word
    }

    /// Remembers that `word` is the source of `field`.
    mutating func mark(_ field: CommandField, _ word: Word) {
        fieldLocations[field] = location(of: word)
    }

    /// Fails on any word left on the line.
    func expectEnd() throws(CommandError) {
        guard position < words.count else { return }
        throw unexpected(words[position], "expected end of line")
    }

    /// "unexpected 'word' after 'previous word'; `explanation`".
    func unexpected(_ word: Word, _ explanation: String) -> CommandError {
        let after = words.last(where: { $0.column < word.column }).map { " after \($0.quoted)" } ?? ""
        return error("unexpected \(word.quoted)\(after); \(explanation)", at: word)
    }

    /// Reads `keyword value` options in any order up to the end of the line,
    /// handing each keyword to `handle`, which reads its value. Each keyword
    /// may appear once unless listed in `repeatable`; the `required` ones must
    /// all appear.
    mutating func options(
        _ keywords: [String], required: [String] = [], repeatable: [String] = [],
        _ handle: (Word, inout WordCursor) throws(CommandError) -> Void
    ) throws(CommandError) {
        var seen: [Substring] = []
        while let word = next() {
            guard keywords.contains(where: { $0 == word.text }) else {
                throw unexpected(word, "expected " + Self.alternatives(
                    stillAllowed(keywords, required: required, repeatable: repeatable, seen: seen)))
            }
            if seen.contains(word.text) && !repeatable.contains(where: { $0 == word.text }) {
                throw unexpected(word, "'\(word.text)' may appear only once")
            }
            seen.append(word.text)
            try handle(word, &self)
        }
        if let missing = required.first(where: { name in !seen.contains(where: { $0 == name }) }) {
            throw CommandError("expected '\(missing)' after \(previous), found end of line", at: endLocation)
        }
    }

    private func stillAllowed(_ keywords: [String], required: [String], repeatable: [String],
                              seen: [Substring]) -> [String] {
        let open = keywords.filter { name in
            repeatable.contains(name) || !seen.contains(where: { $0 == name })
        }.map { "'\($0)'" }
        let allRequiredSeen = required.allSatisfy { name in seen.contains(where: { $0 == name }) }
        return allRequiredSeen ? open + ["end of line"] : open
    }

    /// `a`, `a or b`, `a, b or c`.
    static func alternatives(_ items: [String]) -> String {
        guard let last = items.last else { return "nothing" }
        guard items.count > 1 else { return last }
        return items.dropLast().joined(separator: ", ") + " or " + last
    }
}
