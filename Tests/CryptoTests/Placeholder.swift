import Testing
import Crypto
@Test func cryptoModuleBuilds() { #expect(Bool(true)) }
