// The one raw-pointer packet type of the ESP paths: an IP packet's bytes in a
// buffer with writable room around it (an mbuf's data room, later; a Swift
// array in the tests). ESP encapsulation grows the packet at both ends and
// decapsulation shrinks it, so the view says how far it may grow.
//
// The view does not own the memory and does no bounds checking of its own:
// whoever makes one vouches for `headroom + length + tailroom` bytes around
// `start` being valid and writable for as long as it is used. Everything in
// this module that reads or writes through a view stays inside
// `[start − headroom, start + length + tailroom)`.

/// A packet's bytes in a buffer with room around it. `start` points at the IP
/// header; L2 headers are not part of the view.
public struct PacketView: BitwiseCopyable {
    /// The first byte of the IP header.
    public var start: UnsafeMutableRawPointer
    /// Bytes from `start`: the whole IP packet (trailing L2 padding, if the
    /// caller left it, is tolerated: the IP header's own length wins).
    public var length: Int
    /// Writable bytes before `start`.
    public var headroom: Int
    /// Writable bytes after `start + length`.
    public var tailroom: Int

    @inlinable
    public init(start: UnsafeMutableRawPointer, length: Int, headroom: Int, tailroom: Int) {
        self.start = start
        self.length = length
        self.headroom = headroom
        self.tailroom = tailroom
    }

    /// Moves `start` back by `count` bytes (the new bytes are not initialised
    /// here). The caller checked `count <= headroom`.
    @inlinable @inline(__always)
    mutating func prepend(_ count: Int) {
        assert(count >= 0 && count <= headroom)
        start -= count
        headroom &-= count  // count ≤ headroom
        length &+= count
    }

    /// Narrows the view to `count` bytes starting `offset` bytes after
    /// `start`; the bytes left out on either side become head- and tailroom.
    /// The caller checked `0 <= offset`, `offset + count <= length`.
    @inlinable @inline(__always)
    mutating func narrow(offset: Int, count: Int) {
        assert(offset >= 0 && count >= 0 && offset + count <= length)
        start += offset
        headroom &+= offset
        tailroom &+= length &- offset &- count  // ≥ 0 by the caller's check
        length = count
    }
}
