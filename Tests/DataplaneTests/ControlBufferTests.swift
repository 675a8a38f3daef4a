// The control server's buffers hold command lines (`sa add … key`) and
// replies (`show config`): what it lets go of is wiped, including the
// copy a compaction would otherwise leave behind past the end.

@testable import Control
import Crypto
import Testing

@Test func removingAPrefixLeavesNoCopyBehind() {
    var a: [UInt8] = Array(1...10)
    a.reserveCapacity(64)
    a.removePrefixWiping(4)
    #expect(a == Array(5...10))
    // The six bytes that moved down leave zeros where their last four were.
    let behind = a.withUnsafeBufferPointer { b in (6..<10).map { UnsafeRawPointer(b.baseAddress!).load(fromByteOffset: $0, as: UInt8.self) } }
    #expect(behind == [0, 0, 0, 0])
    a.removePrefixWiping(0)
    #expect(a == Array(5...10))
    SecretBytes.wipe(&a)
    #expect(a == [0, 0, 0, 0, 0, 0])
}
