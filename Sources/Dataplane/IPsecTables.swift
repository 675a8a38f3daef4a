import CShims
import Crypto
import IPsec

/// Mutable state of one outbound SA, shared by the workers that use it: the
/// next sequence number (taken with an atomic reservation, `sl_seq_reserve`).
/// Owned by the control plane, which keeps it across republishes (so a route
/// or policy change never resets a sequence number) and frees it after the
/// last table that refers to it.
public final class OutboundSAState {
    public let key: AEADKey
    public let next: UnsafeMutablePointer<UInt64>
    public let limit: UInt64
    public init(key: consuming AEADKey, next: UInt64, esn: Bool) {
        self.key = key
        self.next = .allocate(capacity: 1)
        self.next.initialize(to: next)
        limit = esn ? UInt64.max : UInt64(UInt32.max)
    }
    deinit { next.deallocate() }
    /// The next sequence number the SA will send (0 once exhausted past 2^64−1).
    public var nextSequence: UInt64 { sl_seq_load(next) }
}

/// Mutable state of one inbound SA: its replay window (written by the worker
/// that receives the SA's packets; RSS on the SPI keeps an SA on one queue).
public final class InboundSAState {
    public let key: AEADKey
    public let window: UnsafeMutablePointer<ReplayWindow>
    public init(key: consuming AEADKey, window: ReplayWindow) {
        self.key = key
        self.window = .allocate(capacity: 1)
        self.window.initialize(to: window)
    }
    deinit { window.pointee.deallocate(); window.deallocate() }
}

/// The IPsec snapshot the workers read: the outbound SPD and the inbound one
/// (`in` and `fwd` policies), each a classifier of the driver the compiler
/// chose, and the SAs with their precomputed parameters. Immutable once
/// built; published with one atomic store plus a generation beside the FIB and
/// freed after an RCU grace period. Everything the fast path touches is in
/// raw buffers (no Swift arrays, no ARC per packet).
public final class IPsecTables {
    public let outSPD: SPDTable
    public let inSPD: SPDTable
    let outSAs: UnsafeMutableBufferPointer<OutboundSA>
    let outNext: UnsafeMutableBufferPointer<UnsafeMutablePointer<UInt64>>
    let outLimit: UnsafeMutableBufferPointer<UInt64>
    /// Inbound SAs, most specific first for equal SPIs (SPI+dst+src, SPI+dst, SPI).
    let inSAs: UnsafeMutableBufferPointer<InboundSA>
    let inWindows: UnsafeMutableBufferPointer<UnsafeMutablePointer<ReplayWindow>>
    let natPorts: NATTraversalPorts
    /// Keeps keys and mutable state alive as long as these tables.
    private let owners: [AnyObject]

    public struct Outbound {
        public var sa: OutboundSA
        public var state: OutboundSAState
        public init(sa: OutboundSA, state: OutboundSAState) { self.sa = sa; self.state = state }
    }
    public struct Inbound {
        public var sa: InboundSA
        public var state: InboundSAState
        public init(sa: InboundSA, state: InboundSAState) { self.sa = sa; self.state = state }
    }

    /// Outbound protect verdicts index `outbound`.
    public init(outSPD: SPDTable, inSPD: SPDTable, outbound: [Outbound], inbound: [Inbound], natPorts: NATTraversalPorts) {
        func buffer<T>(_ xs: [T]) -> UnsafeMutableBufferPointer<T> {
            let b = UnsafeMutableBufferPointer<T>.allocate(capacity: max(xs.count, 1))
            _ = b.initialize(from: xs)
            return UnsafeMutableBufferPointer(rebasing: b[0..<xs.count])
        }
        self.outSPD = outSPD
        self.inSPD = inSPD
        outSAs = buffer(outbound.map(\.sa))
        outNext = buffer(outbound.map(\.state.next))
        outLimit = buffer(outbound.map(\.state.limit))
        func specificity(_ s: InboundSA) -> Int { (s.destination != nil ? 2 : 0) + (s.source != nil ? 1 : 0) }
        let inOrdered = inbound.sorted { ($0.sa.spi.rawValue, -specificity($0.sa)) < ($1.sa.spi.rawValue, -specificity($1.sa)) }
        inSAs = buffer(inOrdered.map(\.sa))
        inWindows = buffer(inOrdered.map(\.state.window))
        self.natPorts = natPorts
        owners = outbound.map(\.state) + inbound.map(\.state)
    }

    deinit {
        for b in [UnsafeMutableRawBufferPointer(outSAs),
                  UnsafeMutableRawBufferPointer(outNext), UnsafeMutableRawBufferPointer(outLimit),
                  UnsafeMutableRawBufferPointer(inSAs), UnsafeMutableRawBufferPointer(inWindows)] {
            b.baseAddress?.deallocate()
        }
    }

    /// The inbound SA for an ESP header: the most specific SA with its SPI whose addresses match, or −1.
    @inline(__always)
    func inboundSA(for header: ESPInboundHeader) -> Int {
        // Binary search for the first SA with the SPI, then the first that matches.
        var lo = 0, hi = inSAs.count
        let spi = header.spi.rawValue
        while lo < hi {
            let mid = (lo &+ hi) >> 1
            if inSAs[mid].spi.rawValue < spi { lo = mid &+ 1 } else { hi = mid }
        }
        while lo < inSAs.count && inSAs[lo].spi.rawValue == spi {
            if inSAs[lo].matches(header) { return lo }
            lo &+= 1
        }
        return -1
    }
}

/// A worker's IPsec context, created at set-up: its crypto context
/// (intel-ipsec-mb manager) and the per-burst classifier scratch.
public final class WorkerIPsec {
    public let core: CryptoCore
    /// One burst of parsed selector fields and their classifier results.
    let fields: UnsafeMutablePointer<SelectorFields>
    let values: UnsafeMutablePointer<UInt32>

    public init() throws(CryptoError) {
        core = try CryptoCore()
        fields = .allocate(capacity: Int(SL_BURST))
        values = .allocate(capacity: Int(SL_BURST))
        values.initialize(repeating: SPDNoMatch, count: Int(SL_BURST))
    }

    deinit {
        fields.deallocate()
        values.deallocate()
    }
}
