// Choosing an SPD driver for a rule set ("auto"), from measurements of the
// three drivers on generated ClassBench-like sets (release build, 2-CPU VM):
//   * up to ~32 rules `linear` is as fast as anything and smallest;
//   * when nearly all rules are exact host-pair rules, `hash-list` answers in
//     a few probes and its list of the rest stays short;
//   * otherwise `cut-tree`, whose lookups stay near-flat from 1k to 100k rules
//     while `linear` and the list of `hash-list` grow with the set.

extension SPDDriver {
    /// Rule sets up to this size go to `linear`.
    static let linearLimit = 32
    /// At most this many inexact rules may sit in `hash-list`'s list.
    static let hashListInexactLimit = 32

    /// The driver for `rules` and a one-line reason (for logs and `show spd`).
    public static func choose(for rules: [SPDRule]) -> (driver: SPDDriver, reason: String) {
        if rules.count <= linearLimit {
            return (.linear, "\(rules.count) rules (≤ \(linearLimit)): a linear scan is fastest")
        }
        let inexact = rules.reduce(0) { $0 + (HashListKey.variant(of: $1) == nil ? 1 : 0) }
        if inexact <= hashListInexactLimit {
            return (.hashList, "\(rules.count - inexact) of \(rules.count) rules are exact, \(inexact) to scan")
        }
        return (.cutTree, "\(rules.count) rules, \(inexact) with prefixes or ranges: decision tree")
    }

    /// Builds a classifier of `driver` over `rules`.
    public static func build(_ driver: SPDDriver, rules: [SPDRule]) -> any SPDClassifier {
        switch driver {
        case .linear: LinearClassifier(rules: rules)
        case .hashList: HashListClassifier(rules: rules)
        case .cutTree: CutTreeClassifier(rules: rules)
        }
    }
}
