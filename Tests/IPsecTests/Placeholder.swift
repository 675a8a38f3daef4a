import Testing
import IPsec
@Test func ipsecModuleBuilds() { #expect(Bool(true)) }
