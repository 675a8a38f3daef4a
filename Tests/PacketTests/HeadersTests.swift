import Packet
import Testing

@Suite struct HeadersTests {
    @Test func constants() {
        #expect(EtherType.ipv4.rawValue == 0x0800 && EtherType.ipv6.rawValue == 0x86DD)
        #expect(EtherType.vlan.rawValue == 0x8100 && EtherType.qinq.rawValue == 0x88A8)
        #expect(EtherType.vlan.isVLANTag && EtherType.qinq.isVLANTag && !EtherType.ipv4.isVLANTag)
        #expect(EtherType.ipv6.description == "0x86dd" && EtherType.ipv4.description == "0x0800")
        #expect(IPProtocol.tcp.rawValue == 6 && IPProtocol.udp.rawValue == 17 && IPProtocol.icmp.rawValue == 1)
        #expect(IPProtocol.icmpv6.rawValue == 58 && IPProtocol.esp.rawValue == 50)
        #expect(IPProtocol.esp.description == "esp" && IPProtocol(200).description == "200")
        #expect(HeaderSize.ethernet + HeaderSize.ipv4 + HeaderSize.udp == 42)
    }

    @Test func bigEndianAccessAtUnalignedOffsets() {
        var bytes = [UInt8](repeating: 0, count: 32)
        bytes.withUnsafeMutableBytes { raw in
            let p = raw.baseAddress!
            p.storeBE16(0x1234, at: 1)
            p.storeBE32(0x89AB_CDEF, at: 3)
            p.storeBE64(0x0102_0304_0506_0708, at: 7)
            p.storeByte(0xFF, at: 15)
            #expect(p.loadBE16(at: 1) == 0x1234)
            #expect(p.loadBE32(at: 3) == 0x89AB_CDEF)
            #expect(p.loadBE64(at: 7) == 0x0102_0304_0506_0708)
            #expect(p.loadByte(at: 15) == 0xFF)
            let r = UnsafeRawPointer(p)
            #expect(r.loadBE16(at: 1) == 0x1234 && r.loadBE32(at: 3) == 0x89AB_CDEF)
            #expect(r.loadBE64(at: 7) == 0x0102_0304_0506_0708 && r.loadByte(at: 15) == 0xFF)
        }
        #expect(Array(bytes[0..<16]) == [0, 0x12, 0x34, 0x89, 0xAB, 0xCD, 0xEF, 1, 2, 3, 4, 5, 6, 7, 8, 0xFF])
    }
}
