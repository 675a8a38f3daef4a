// The checks `GatewayConfig.apply` makes for the IPsec commands. Each reads
// the state and either throws or says what to change; GatewayConfig.swift
// makes the change, so that a failing command leaves the state untouched.

import Packet

extension GatewayConfig {
    // MARK: SAs

    /// Everything `sa add` needs: the SA's own consistency, then its place
    /// among the SAs already there (see `SAIdentifier`).
    func checkSAAdd(_ sa: SAConfig, _ c: LocatedCommand, replacing: SAIdentifier? = nil) throws(CommandError) {
        if sa.spi.isReserved {
            throw CommandError(ValueText.reservedSPI(sa.spi.description), at: c.location(of: .spi))
        }
        switch (sa.source, sa.destination) {
        case (nil, nil):
            if sa.mode == .tunnel {
                throw CommandError("tunnel mode needs src and dst (the outer header)", at: c.location(of: .mode))
            }
        case (_?, nil):
            throw CommandError("src needs dst: give both outer addresses or neither", at: c.location(of: .source))
        case (nil, _?):
            throw CommandError("dst needs src: give both outer addresses or neither",
                               at: c.location(of: .destination))
        case let (source?, destination?):
            if source.isIPv4 != destination.isIPv4 {
                throw CommandError("dst \(destination) is \(Self.family(destination)) but src \(source) is "
                                   + Self.family(source), at: c.location(of: .destination))
            }
        }
        try checkSAValues(sa, c)
        try checkSAIdentifier(sa, c, replacing: replacing)
    }

    /// Lengths and ranges, and options the direction or mode has no use for.
    /// Messages name lengths, never key bytes.
    private func checkSAValues(_ sa: SAConfig, _ c: LocatedCommand) throws(CommandError) {
        let keyBytes = sa.keyMaterial.count
        if keyBytes != sa.aead.keyMaterialLength {
            throw CommandError("key for \(sa.aead.rawValue) must be \(sa.aead.keyMaterialLength) bytes "
                               + "(\(sa.aead.keyLength)-byte key and \(AEADTransform.saltLength)-byte salt), "
                               + "found \(keyBytes)", at: c.location(of: .key))
        }
        if sa.direction == .outbound && sa.sequence == 0 {
            throw CommandError("seq 0: an outbound SA's seq is the next number sent, at least 1",
                               at: c.location(of: .sequence))
        }
        if !sa.esn && sa.sequence > UInt64(UInt32.max) {
            throw CommandError("seq \(sa.sequence) needs esn (32-bit sequence numbers end at \(UInt32.max))",
                               at: c.location(of: .sequence))
        }
        if sa.replayWindow == 0 {
            // RFC 4303 §3.4.3: the receiver may turn anti-replay off; ESN
            // inference needs a window, so only 32-bit sequence numbers.
            if sa.esn {
                throw CommandError("replay-window 0 turns anti-replay off, which needs 32-bit sequence numbers (no esn)",
                                   at: c.location(of: .replayWindow))
            }
        } else if !SAConfig.replayWindows.contains(sa.replayWindow) {
            throw CommandError(ValueText.badNumber("replay window", String(sa.replayWindow), SAConfig.replayWindows)
                               + " (or 0: anti-replay off)",
                               at: c.location(of: .replayWindow))
        }
        if sa.direction == .outbound && sa.replayWindow != SAConfig.defaultReplayWindow {
            throw CommandError("replay-window applies only to inbound SAs (dir in)", at: c.location(of: .replayWindow))
        }
        if !SAConfig.ttls.contains(sa.ttl) {
            throw CommandError(ValueText.badNumber("TTL", String(sa.ttl), SAConfig.ttls), at: c.location(of: .ttl))
        }
        if let encapsulation = sa.encapsulation {
            for (port, field) in [(encapsulation.sourcePort, CommandField.encapSourcePort),
                                  (encapsulation.destinationPort, .encapDestinationPort)]
            where !UDPEncapsulation.ports.contains(port) {
                throw CommandError(ValueText.badNumber("UDP port", String(port), UDPEncapsulation.ports),
                                   at: c.location(of: field))
            }
        }
        if let cpu = sa.cpu, sa.direction == .outbound {
            if sa.reqid == nil {
                throw CommandError("cpu \(cpu) needs reqid: a per-CPU SA serves the policies of its reqid",
                                   at: c.location(of: .cpu))
            }
        }
        if sa.mode == .transport {
            if sa.df != .copy {
                throw CommandError("df applies only to tunnel mode (the outer header)", at: c.location(of: .df))
            }
            if sa.ttl != SAConfig.defaultTTL {
                throw CommandError("ttl applies only to tunnel mode (the outer header)", at: c.location(of: .ttl))
            }
        }
    }

    /// The rules of `SAIdentifier`: unique identifiers, an SA without dst
    /// alone with its SPI, outbound SPIs unique.
    /// `replacing`: the SA an `sa update` replaces, checked as if it were gone.
    private func checkSAIdentifier(_ sa: SAConfig, _ c: LocatedCommand, replacing: SAIdentifier?) throws(CommandError) {
        let identifier = sa.identifier
        let at = c.location(of: .spi)
        if sas[identifier] != nil && identifier != replacing {
            throw CommandError("SA \(identifier) already exists; delete it first", at: at)
        }
        let sameSPI = sas(spi: sa.spi).filter { $0.identifier != replacing }.sorted { $0.identifier < $1.identifier }
        if sa.destination == nil, let other = sameSPI.first {
            throw CommandError("SA spi \(sa.spi) without dst would also match SA \(other.identifier); "
                               + "an SA without dst must be the only one with its SPI", at: at)
        }
        if sameSPI.contains(where: { $0.destination == nil }) {
            throw CommandError("SA spi \(sa.spi) without dst exists and matches every dst; "
                               + "it must be the only SA with its SPI", at: at)
        }
        if sa.direction == .outbound, let other = sameSPI.first(where: { $0.direction == .outbound }) {
            throw CommandError("outbound SA \(other.identifier) already exists; an outbound SPI names one SA",
                               at: at)
        }
        if sa.direction == .outbound, let reqid = sa.reqid,
           let other = outboundSA(reqid: reqid, cpu: sa.cpu), other.identifier != replacing {
            let role = sa.cpu.map { "cpu \($0)" } ?? "the fallback (no cpu)"
            throw CommandError("outbound SA \(other.identifier) is already \(role) of reqid \(reqid); delete it first",
                               at: c.location(of: .reqid))
        }
    }

    /// The first index of `policies` where `after` holds (it holds from some
    /// index on: the list is sorted by priority), or `policies.count`.
    private func policyIndex(where after: (PolicyConfig) -> Bool) -> Int {
        var low = 0, high = policies.count
        while low < high {
            let middle = (low + high) / 2
            if after(policies[middle]) { high = middle } else { low = middle + 1 }
        }
        return low
    }

    /// The SA `sa del` names. Without dst, the one SA with that SPI. An SA a
    /// `protect` policy relies on (no other SA of its direction has its SPI)
    /// stays until the policy goes.
    func saToDelete(spi: SecurityParameterIndex, destination: IPAddress?,
                    _ c: LocatedCommand) throws(CommandError) -> SAIdentifier {
        let at = c.location(of: .spi)
        let identifier: SAIdentifier
        if let destination {
            identifier = SAIdentifier(spi: spi, destination: destination)
        } else {
            let matches = sas(spi: spi).map(\.identifier).sorted()
            if matches.count > 1 {
                let dsts = matches.map { $0.destination.map { "dst \($0)" } ?? "no dst" }
                throw CommandError("several SAs have spi \(spi) (\(dsts.joined(separator: ", "))); "
                                   + "name one with 'dst'", at: at)
            }
            identifier = matches.first ?? SAIdentifier(spi: spi)
        }
        guard let sa = sas[identifier] else { throw CommandError("no SA \(identifier)", at: at) }
        let stillCovered = sas(spi: spi).contains { $0.identifier != identifier && $0.direction == sa.direction }
        let users = policies.filter { $0.selector.direction.saDirection == sa.direction && $0.action == .protect(spi) }
        if !stillCovered && !users.isEmpty {
            let ids = users.map(\.id.description).joined(separator: ", ")
            throw CommandError("SA \(identifier) is used by \(users.count == 1 ? "policy" : "policies") id \(ids); "
                               + "delete \(users.count == 1 ? "it" : "them") first", at: at)
        }
        return identifier
    }

    // MARK: Policies

    /// Everything `sp add` needs. Returns the policy, its id assigned, and the
    /// index in `policies` that keeps them in effective order.
    func checkPolicyAdd(id: PolicyID?, selector: PolicySelector, priority: UInt32, action: PolicyAction,
                        nextID: UInt64, _ c: LocatedCommand) throws(CommandError) -> (PolicyConfig, Int) {
        let policyID: PolicyID
        if let id {
            guard PolicyID.valid.contains(id.rawValue) else {
                throw CommandError(ValueText.badNumber("policy id", id.description, PolicyID.valid),
                                   at: c.location(of: .policyID))
            }
            if policy(id: id) != nil {
                throw CommandError("policy id \(id) already exists; delete it first", at: c.location(of: .policyID))
            }
            policyID = id
        } else if let raw = UInt32(exactly: nextID) {
            policyID = PolicyID(raw)
        } else {
            // Past the last id (a policy named `id 4294967295`): the lowest
            // free one, so that one explicit id cannot use up the automatic
            // ones. (Only then may an id be given again within a run.)
            guard let free = PolicyID.valid.first(where: { !policyIDs.contains(PolicyID($0)) }) else {
                throw CommandError("no policy id left: all \(UInt32.max) are in use", at: c.location)
            }
            policyID = PolicyID(free)
        }
        try checkSelector(selector, c)
        if case .protect(let spi) = action {
            if spi.isReserved {
                throw CommandError(ValueText.reservedSPI(spi.description), at: c.location(of: .spi))
            }
            if !sas(spi: spi).contains(where: { $0.direction == selector.direction.saDirection }) {
                throw CommandError("no SA spi \(spi) for dir \(selector.direction.rawValue) (an SA of dir "
                                   + "\(selector.direction.saDirection.rawValue))", at: c.location(of: .spi))
            }
        }
        // The list is in priority order: the policies of this priority are
        // found by binary search, and the new one goes after them.
        let first = policyIndex { $0.priority >= priority }
        let index = policyIndex { $0.priority > priority }
        if let existing = policies[first..<index].first(where: { $0.selector == selector }) {
            throw CommandError("policy id \(existing.id) already has this selector and priority",
                               at: c.location(of: .direction))
        }
        return (PolicyConfig(id: policyID, selector: selector, priority: priority, action: action), index)
    }

    /// Prefixes without host bits, of one family; ports only for port protocols.
    private func checkSelector(_ selector: PolicySelector, _ c: LocatedCommand) throws(CommandError) {
        for (prefix, field) in [(selector.source, CommandField.source), (selector.destination, .destination)]
        where prefix.hasHostBits {
            throw CommandError(ValueText.hostBitsSet(prefix, text: prefix.description), at: c.location(of: field))
        }
        let source = selector.source.address, destination = selector.destination.address
        if source.isIPv4 != destination.isIPv4 {
            throw CommandError("dst \(selector.destination) is \(Self.family(destination)) but src "
                               + "\(selector.source) is \(Self.family(source))", at: c.location(of: .destination))
        }
        if selector.proto == .icmp && !source.isIPv4 {
            throw CommandError("proto icmp is IPv4's; use icmpv6 with IPv6 prefixes", at: c.location(of: .proto))
        }
        if selector.proto == .icmpv6 && source.isIPv4 {
            throw CommandError("proto icmpv6 is IPv6's; use icmp with IPv4 prefixes", at: c.location(of: .proto))
        }
        for (ports, field) in [(selector.sourcePorts, CommandField.sourcePorts),
                               (selector.destinationPorts, .destinationPorts)] {
            guard let ports else { continue }
            if selector.isICMP {
                if !PolicySelector.icmpValues.contains(ports.upperBound) {
                    throw CommandError("ICMP type and code are 0-255, found \(ports.upperBound)", at: c.location(of: field))
                }
            } else if selector.proto.map(PolicySelector.portProtocols.contains) != true {
                let name = field == .sourcePorts ? "sport/type" : "dport/code"
                throw CommandError("\(name) needs proto tcp, udp or sctp (ports) or icmp, icmpv6 (type, code)",
                                   at: c.location(of: field))
            }
        }
    }

    /// The index in `policies` of the policy `sp del` names.
    func policyToDelete(_ reference: PolicyReference, _ c: LocatedCommand) throws(CommandError) -> Int {
        switch reference {
        case .id(let id):
            guard let index = policies.firstIndex(where: { $0.id == id }) else {
                throw CommandError("no policy id \(id)", at: c.location(of: .policyID))
            }
            return index
        case let .match(selector, priority):
            guard let index = policies.firstIndex(where: { $0.selector == selector && $0.priority == priority }) else {
                throw CommandError("no policy \(selector.commandText) priority \(priority)",
                                   at: c.location(of: .direction))
            }
            return index
        }
    }
}
