import CShims
public func dataplaneVersion() -> String { String(cString: rte_version()) }
