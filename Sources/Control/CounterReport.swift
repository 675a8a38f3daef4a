import CShims
import Command
import Dataplane
import Packet

/// The one place counters are formatted as text (the gateway, the benchmark
/// and later the control socket print the same lines).
public enum CounterReport {
    /// `name=value` for every nonzero drop reason, in declaration order.
    public static func dropDetail(_ drops: [UInt64]) -> String {
        DropReason.allCases.compactMap { r in drops[r.rawValue] == 0 ? nil : "\(r.name)=\(drops[r.rawValue])" }
            .joined(separator: " ")
    }

    public static func portLine(_ setup: PortSetup, _ s: PortStats) -> String {
        "port \(setup.info.id) name=\(setup.info.name) mac=\(setup.info.mac) rx=\(s.rxPackets) tx=\(s.txPackets) missed=\(s.rxMissed) rx_errors=\(s.rxErrors) tx_errors=\(s.txErrors) rx_nombuf=\(s.rxNoMbuf)"
    }

    /// ` fragments=N reassembled=M` where fragments were taken for
    /// reassembly, ` fragmented=N fragments_out=M` where datagrams were sent
    /// in fragments, ` punted=N from_stack=M` where a local stack took or
    /// sent frames, ` icmp_errors=N icmp_limited=M` where ICMP errors were
    /// due, ` events_lost=N` where events found the event ring full.
    static func fragmentDetail(_ c: CoreCounters) -> String {
        (c.fragments == 0 ? "" : " fragments=\(c.fragments) reassembled=\(c.reassembled)")
            + (c.fragmented == 0 ? "" : " fragmented=\(c.fragmented) fragments_out=\(c.fragmentsOut)")
            + (c.punted == 0 && c.fromStack == 0 ? "" : " punted=\(c.punted) from_stack=\(c.fromStack)")
            + (c.toAgent == 0 && c.fromAgent == 0 ? "" : " to_agent=\(c.toAgent) from_agent=\(c.fromAgent)")
            + (c.icmpErrors == 0 && c.icmpLimited == 0 ? "" : " icmp_errors=\(c.icmpErrors) icmp_limited=\(c.icmpLimited)")
            + (c.eventsLost == 0 ? "" : " events_lost=\(c.eventsLost)")
    }

    public static func coreLine(_ c: CoreCounters) -> String {
        let d = dropDetail(c.drops)
        return "core \(c.lcore) queue=\(c.queue) socket=\(c.socket) rx=\(c.rxPackets) tx=\(c.txPackets)" + fragmentDetail(c)
            + " drop=\(c.totalDrops)" + (d.isEmpty ? "" : " " + d)
    }

    public static func totalLine(_ cores: [CoreCounters]) -> String {
        let t = CoreCounters.total(cores)
        let d = dropDetail(t.drops)
        return "total rx=\(t.rxPackets) tx=\(t.txPackets)" + fragmentDetail(t) + " drop=\(t.totalDrops)" + (d.isEmpty ? "" : " " + d)
    }

    /// The final block printed at exit: every port, every core, the total.
    public static func final(_ gateway: Gateway, portStats: [(PortSetup, PortStats)]) -> [String] {
        let cores = gateway.coreCounters()
        return portStats.map { "final: " + portLine($0.0, $0.1) }
            + cores.map { "final: " + coreLine($0) }
            + ["final: " + totalLine(cores)]
    }
}

/// Periodic rate line: cumulative totals plus rates since the previous call.
public struct RateMeter {
    private var lastTime: Double
    private var lastRx: UInt64 = 0
    private var lastTx: UInt64 = 0
    public init() { lastTime = monotonicSeconds() }

    public mutating func line(_ cores: [CoreCounters]) -> String {
        let now = monotonicSeconds()
        let total = CoreCounters.total(cores)
        let rx = total.rxPackets, tx = total.txPackets
        let dt = max(now - lastTime, 1e-9)
        let rxPps = Double(rx &- lastRx) / dt
        let txPps = Double(tx &- lastTx) / dt
        lastTime = now; lastRx = rx; lastTx = tx
        return "stats: rx=\(rx) tx=\(tx)\(CounterReport.fragmentDetail(total)) drop=\(total.totalDrops) rx_pps=\(Int(rxPps)) tx_pps=\(Int(txPps))"
    }
}

extension CounterReport {
    /// `event: acquire policy=N cpu=K src=A dst=B proto=P [sport=S dport=D]`
    /// (ICMP: type and code in sport and dport).
    public static func eventLine(_ e: sl_event) -> String {
        if e.kind == UInt8(SL_EVENT_PATH_MTU) {
            return "event: path-mtu spi=\(SecurityParameterIndex(e.policy_id)) mtu=\(e.sport) src=\(e.sourceAddress) "
                + "dst=\(e.destinationAddress) encap=\(e.proto == IPProtocol.udp.rawValue ? "udp" : "none") "
                + "seq=\(e.sa_token) cpu=\(e.lcore)"
        }
        if e.kind == UInt8(SL_EVENT_EXPIRE_SOFT) || e.kind == UInt8(SL_EVENT_EXPIRE_HARD) {
            let reasons = [Int32(SL_EXPIRE_BYTES): "bytes", Int32(SL_EXPIRE_PACKETS): "packets",
                           Int32(SL_EXPIRE_SEQUENCE): "sequence", Int32(SL_EXPIRE_SECONDS): "seconds",
                           Int32(SL_EXPIRE_USE_SECONDS): "use-seconds"]
            let hex = String(e.policy_id, radix: 16)
            return "event: expire \(e.kind == UInt8(SL_EVENT_EXPIRE_HARD) ? "hard" : "soft") "
                + "dir=\(e.family == 0 ? "out" : "in") spi=0x\(String(repeating: "0", count: 8 - hex.count))\(hex) "
                + "reason=\(reasons[Int32(e.proto)] ?? "?") cpu=\(e.lcore)"
        }
        let kind = e.kind == UInt8(SL_EVENT_ACQUIRE) ? "acquire" : "kind\(e.kind)"
        var line = "event: \(kind) policy=\(e.policy_id) cpu=\(e.lcore) src=\(e.sourceAddress) dst=\(e.destinationAddress) proto=\(e.proto)"
        if e.has_ports != 0 { line += " sport=\(e.sport) dport=\(e.dport)" }
        return line
    }
}

extension CounterReport {
    /// The event as the control socket streams it (one JSON object): the
    /// fields of `eventLine` as keys.
    public static func eventJSON(_ e: sl_event) -> String {
        let words = eventLine(e).split(separator: " ").dropFirst()  // "event:"
        var fields = ["\"event\":\"\(words.first ?? "")\""]
        for w in words.dropFirst() {
            if let eq = w.firstIndex(of: "=") {
                let key = w[..<eq], value = w[w.index(after: eq)...]
                fields.append("\"\(key)\":" + (Int(value) != nil ? String(value) : "\"\(value)\""))
            } else {
                fields.append("\"\(w)\":true")
            }
        }
        return "{" + fields.joined(separator: ",") + "}"
    }
}

extension sl_event {
    /// ACQUIRE: the packet's source; PATH_MTU: the quoted ESP packet's (`family` 4 or 6).
    public var sourceAddress: IPAddress { Self.address(src, ipv6: family == 6) }
    public var destinationAddress: IPAddress { Self.address(dst, ipv6: family == 6) }

    private static func address(_ t: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                                      UInt8, UInt8, UInt8, UInt8), ipv6: Bool) -> IPAddress {
        withUnsafeBytes(of: t) { b in
            ipv6 ? .v6(IPv6Address(high: b.loadUnaligned(as: UInt64.self).bigEndian,
                                   low: b.loadUnaligned(fromByteOffset: 8, as: UInt64.self).bigEndian))
                 : .v4(IPv4Address(b.loadUnaligned(as: UInt32.self).bigEndian))
        }
    }
}
