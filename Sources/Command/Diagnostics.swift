// Where a command came from, and the one error type of the command language.
// Every error, syntax or semantic, names the file, line and column of the word
// it is about, so a config file, the CLI and the control socket all report
// problems the same way.

/// A position in command text. Lines and columns are 1-based; columns count
/// characters (extended grapheme clusters), so a tab is one column.
public struct SourceLocation: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int

    public init(file: String, line: Int, column: Int) {
        self.file = file
        self.line = line
        self.column = column
    }

    /// `file:line:column`, the form compilers and editors understand.
    public var description: String { "\(file):\(line):\(column)" }
}

/// A syntax or semantic error in command text, pointing at the offending word.
public struct CommandError: Error, Sendable, Equatable, CustomStringConvertible {
    public var location: SourceLocation
    /// What is wrong and what was expected, without the location.
    public var message: String

    public init(_ message: String, at location: SourceLocation) {
        self.message = message
        self.location = location
    }

    /// `file:line:column: message`.
    public var description: String { "\(location): \(message)" }
}
