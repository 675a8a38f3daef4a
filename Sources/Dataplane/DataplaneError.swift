import CShims

/// Why the data plane could not be set up. Every message says what was wrong
/// and, where it helps, what to do about it.
public struct DataplaneError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }

    /// The one seam that turns DPDK's `rte_errno` / negative return codes into text.
    static func dpdk(_ what: String, code: Int32) -> DataplaneError {
        let err = code < 0 ? -code : code
        return DataplaneError("\(what): \(String(cString: sl_strerror(err))) (\(err))")
    }
    static func dpdkErrno(_ what: String) -> DataplaneError { dpdk(what, code: sl_errno()) }
}
