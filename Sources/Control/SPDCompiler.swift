import Command
import Dataplane
import IPsec
import Packet

/// Compiles one direction's policies into the classifier of an SPD snapshot.
///
/// Each policy becomes an `SPDRule` whose rank is `priority << 32 | sequence`
/// (sequence numbers follow the effective order, so "lower priority value
/// first, ties in insertion order" is just "lower rank first") and whose value
/// is the policy's slot in the snapshot's verdict array. The verdicts are
/// rebuilt every time (they name SA indices, which move when SAs change); the
/// classifier is patched from the previous one when only a few policies were
/// added or removed and the driver allows it, and rebuilt otherwise.
final class SPDCompiler {
    /// A compiled state: the rule of every policy and the classifier holding them.
    struct State {
        var rules: [PolicyID: SPDRule]
        var classifier: any SPDClassifier
        var nextSequence: UInt32
        var nextSlot: UInt32
    }

    /// How the last `compile` produced its classifier.
    enum Method: Equatable, CustomStringConvertible {
        case rebuilt(SPDDriver, reason: String)
        case patched(SPDDriver, changes: Int)
        case unchanged(SPDDriver)

        var description: String {
            switch self {
            case let .rebuilt(driver, reason): "driver \(driver) (\(reason))"
            case let .patched(driver, changes): "driver \(driver), \(changes) change\(changes == 1 ? "" : "s") patched in"
            case let .unchanged(driver): "driver \(driver), unchanged"
            }
        }
    }

    /// At most this many added or removed policies are patched in; more rebuild.
    static let patchLimit = 16

    private(set) var committed: State? = nil
    private var pending: State? = nil

    /// Adopts the state of the last `compile` (call once its snapshot is published).
    func commit() {
        if let pending { committed = pending }
    }

    /// `policies`: this direction's, in effective order. `verdict(p)` says
    /// what policy `p` decides.
    func compile(_ policies: [PolicyConfig], choice: SPDDriverChoice,
                 verdict: (PolicyConfig) -> PolicyVerdict) -> (SPDTable, Method) {
        let (state, method) = classify(policies, choice: choice)
        pending = state
        var verdicts = [PolicyVerdict](repeating: .unused, count: Int(state.nextSlot))
        // Protect and discard policies that name ports, with their ports
        // taken out (`SPDTable.portsMayBeProtected`), and every slot's rank
        // when there are any.
        var portGuards: [SPDRule] = []
        for p in policies {
            // Every policy has a rule (classify gave each one).
            let rule = state.rules[p.id]!
            let v = verdict(p)
            verdicts[Int(rule.value)] = v
            if v.action != .bypass && rule.selector.namesPorts {
                var any = p.selector
                any.sourcePorts = nil
                any.destinationPorts = nil
                portGuards.append(SPDRule(selector: Self.selector(any), ifID: rule.ifID, rank: rule.rank,
                                          value: UInt32(portGuards.count)))
            }
        }
        var slotRanks: [UInt64] = []
        if !portGuards.isEmpty {
            slotRanks = [UInt64](repeating: .max, count: verdicts.count)
            for p in policies {
                let rule = state.rules[p.id]!
                slotRanks[Int(rule.value)] = rule.rank
            }
        }
        return (SPDTable(classifier: state.classifier, verdicts: verdicts, portGuards: portGuards,
                         portGuardIndex: portGuardIndex(portGuards), slotRanks: slotRanks), method)
    }

    /// Up to this many port guards are scanned in turn; more are looked up
    /// in a classifier of their own, so that a flood of later fragments
    /// costs one lookup each whatever the size of the SPD.
    static let portGuardScanLimit = 16

    /// The last classifier built over port guards, kept while they stay the same.
    private var portGuardCache: (guards: [SPDRule], classifier: any SPDClassifier)? = nil

    /// A classifier over `guards` (their values index `guards`), or nil when
    /// they are few enough to scan.
    private func portGuardIndex(_ guards: [SPDRule]) -> (any SPDClassifier)? {
        guard guards.count > Self.portGuardScanLimit else { return nil }
        if let cache = portGuardCache, cache.guards == guards { return cache.classifier }
        let classifier = SPDDriver.build(SPDDriver.choose(for: guards).driver, rules: guards)
        portGuardCache = (guards, classifier)
        return classifier
    }

    private func classify(_ policies: [PolicyConfig], choice: SPDDriverChoice) -> (State, Method) {
        guard var state = committed else { return rebuild(policies, choice: choice) }
        let driver = type(of: state.classifier).driver
        if let wanted = Self.driver(choice), wanted != driver { return rebuild(policies, choice: choice) }

        // Keep the rule of every policy whose selector and priority stayed;
        // number the new ones after everything so far.
        var next: [PolicyID: SPDRule] = [:]
        next.reserveCapacity(policies.count)
        var added: [SPDRule] = []
        var previousRank: UInt64? = nil
        for p in policies {
            let rule: SPDRule
            let selector = Self.selector(p.selector)
            if let old = state.rules[p.id], old.rank >> 32 == UInt64(p.priority),
               old.selector == selector, old.ifID == p.selector.ifID {
                rule = old
            } else {
                guard state.nextSequence < UInt32.max, state.nextSlot < SPDNoMatch - 1 else {
                    return rebuild(policies, choice: choice)
                }
                rule = SPDRule(selector: selector, ifID: p.selector.ifID,
                               rank: UInt64(p.priority) << 32 | UInt64(state.nextSequence), value: state.nextSlot)
                state.nextSequence += 1
                state.nextSlot += 1
                added.append(rule)
            }
            // Ranks must follow the effective order; otherwise renumber.
            if let previousRank, rule.rank <= previousRank { return rebuild(policies, choice: choice) }
            previousRank = rule.rank
            next[p.id] = rule
        }
        let removed = state.rules.filter { next[$0.key]?.rank != $0.value.rank }.map(\.value.rank)
        let changes = removed.count + added.count
        if changes == 0 { return (state, .unchanged(driver)) }
        guard changes <= Self.patchLimit else { return rebuild(policies, choice: choice) }
        // `auto` follows the rule set as it grows or shrinks one change at a
        // time: when it would now pick another driver, rebuild with that one.
        if choice == .auto && SPDDriver.choose(for: Array(next.values)).driver != driver {
            return rebuild(policies, choice: choice)
        }
        var classifier = state.classifier
        for rank in removed {
            guard let next = classifier.removing(rank: rank) else { return rebuild(policies, choice: choice) }
            classifier = next
        }
        for rule in added {
            guard let next = classifier.inserting(rule) else { return rebuild(policies, choice: choice) }
            classifier = next
        }
        state.classifier = classifier
        state.rules = next
        return (state, .patched(driver, changes: changes))
    }

    private func rebuild(_ policies: [PolicyConfig], choice: SPDDriverChoice) -> (State, Method) {
        var rules: [PolicyID: SPDRule] = [:]
        rules.reserveCapacity(policies.count)
        var list: [SPDRule] = []
        list.reserveCapacity(policies.count)
        for (i, p) in policies.enumerated() {
            let rule = SPDRule(selector: Self.selector(p.selector), ifID: p.selector.ifID,
                               rank: UInt64(p.priority) << 32 | UInt64(i), value: UInt32(i))
            rules[p.id] = rule
            list.append(rule)
        }
        let driver: SPDDriver, reason: String
        if let configured = Self.driver(choice) {
            (driver, reason) = (configured, "configured")
        } else {
            let auto = SPDDriver.choose(for: list)
            (driver, reason) = (auto.driver, "auto: " + auto.reason)
        }
        let classifier = SPDDriver.build(driver, rules: list)
        let state = State(rules: rules, classifier: classifier, nextSequence: UInt32(policies.count),
                          nextSlot: UInt32(policies.count))
        return (state, .rebuilt(driver, reason: reason))
    }

    static func driver(_ choice: SPDDriverChoice) -> SPDDriver? {
        switch choice {
        case .auto: nil
        case .linear: .linear
        case .hashList: .hashList
        case .cutTree: .cutTree
        }
    }

    static func selector(_ s: PolicySelector) -> TrafficSelector {
        // The parser guarantees both prefixes share a family, so the selector exists.
        TrafficSelector(source: s.source, destination: s.destination, proto: s.proto,
                        sourcePorts: s.sourcePorts, destinationPorts: s.destinationPorts)!
    }
}
