import Glibc

/// Connects a UNIX stream socket to `path` (blocking); the descriptor, or
/// the reason it could not.
public func connectUnixStream(_ path: String) -> Result<Int32, UnixSocketError> {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return .failure(UnixSocketError("socket: \(String(cString: strerror(errno)))")) }
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { b in for (i, c) in path.utf8.prefix(b.count - 1).enumerated() { b[i] = c } }
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard rc == 0 else {
        let why = String(cString: strerror(errno))
        close(fd)
        return .failure(UnixSocketError("cannot connect to \(path): \(why)"))
    }
    return .success(fd)
}

public struct UnixSocketError: Error, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}
