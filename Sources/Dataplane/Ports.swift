import CShims
import Packet

/// What the EAL knows about one ethdev port, read once from `rte_eth_dev_info`.
public struct PortInfo: Sendable {
    public var id: UInt16
    public var name: String
    public var driver: String
    public var mac: MACAddress
    /// NUMA socket of the device; 0 when unknown (virtual devices).
    public var socket: Int32
    /// Whether the device reported its socket (virtual devices do not).
    public var socketKnown: Bool
    public var maxRxQueues: Int
    public var maxTxQueues: Int
    public var rssOffloads: UInt64
    public var rxOffloads: UInt64
    public var txOffloads: UInt64
    public var rxDescMax: Int
    public var txDescMax: Int
    public var retaSize: Int
    public var hashKeySize: Int

    /// Every port the EAL probed, in id order.
    public static func available() throws(DataplaneError) -> [PortInfo] {
        var ports: [PortInfo] = []
        var id = rte_eth_find_next_owned_by(0, 0)
        while id < UInt64(RTE_MAX_ETHPORTS) {
            ports.append(try PortInfo(id: UInt16(id)))
            id = rte_eth_find_next_owned_by(UInt16(id + 1), 0)
        }
        return ports
    }

    init(id: UInt16) throws(DataplaneError) {
        var info = rte_eth_dev_info()
        let rc = rte_eth_dev_info_get(id, &info)
        if rc != 0 { throw .dpdk("cannot read device info of port \(id)", code: rc) }
        var nameBuf = [CChar](repeating: 0, count: Int(RTE_ETH_NAME_MAX_LEN))
        _ = rte_eth_dev_get_name_by_port(id, &nameBuf)
        var addr = rte_ether_addr()
        _ = rte_eth_macaddr_get(id, &addr)
        self.id = id
        name = String(cString: nameBuf)
        driver = info.driver_name.map { String(cString: $0) } ?? "?"
        mac = MACAddress(addr.addr_bytes)
        let s = rte_eth_dev_socket_id(id)
        socket = s < 0 ? 0 : s
        socketKnown = s >= 0
        maxRxQueues = Int(info.max_rx_queues)
        maxTxQueues = Int(info.max_tx_queues)
        rssOffloads = info.flow_type_rss_offloads
        rxOffloads = info.rx_offload_capa
        txOffloads = info.tx_offload_capa
        rxDescMax = Int(info.rx_desc_lim.nb_max)
        txDescMax = Int(info.tx_desc_lim.nb_max)
        retaSize = Int(info.reta_size)
        hashKeySize = Int(info.hash_key_size)
    }

    /// What a worker should prefetch for this driver's received bursts (SL_PREFETCH_* bits).
    static func prefetchPolicy(driver: String) -> UInt8 {
        switch driver {
        case "net_ring": UInt8(SL_PREFETCH_MBUF | SL_PREFETCH_DATA)
        case "net_pcap", "net_null", "net_tap", "net_af_packet", "net_memif": 0
        default: UInt8(SL_PREFETCH_DATA)
        }
    }

    /// Whether the port hashes flows over several RX queues itself.
    public var supportsRSS: Bool { rssOffloads != 0 }
}

/// How a port was set up: what the workers and the stats printer need.
public struct PortSetup: Sendable {
    public var info: PortInfo
    public var queues: Int
    public var rxDescriptors: Int
    public var txDescriptors: Int
    public var rssHashFunctions: UInt64
    /// RX verifies the IPv4 header checksum in hardware (mbuf flags say good/bad).
    public var rxIPv4Checksum: Bool
    public var txFastFree: Bool
}

extension PortSetup {
    /// Whether the port spreads ESP by its SPI (RSS with the ESP hash function).
    public var hashesESP: Bool { rssHashFunctions & sl_rss_hf_esp() != 0 }

    /// Which ESP fields the NIC hashes: the SPI alone on Intel E810 (ice),
    /// addresses and SPI elsewhere.
    public var espHashFields: ESPHashFields { info.driver.hasPrefix("net_ice") ? .spiOnly : .addressesAndSPI }

    /// The port's RSS key and redirection table as the PMD reports them now;
    /// nil when it has no RSS or will not say.
    public func rssSteering() -> RSSSteering? {
        guard rssHashFunctions != 0, info.retaSize > 0 else { return nil }
        var key = [UInt8](repeating: 0, count: 64)
        var length = UInt8(key.count)
        var hf: UInt64 = 0
        guard sl_rss_key_get(info.id, &key, &length, &hf) == 0, let toeplitz = ToeplitzKey(bytes: Array(key.prefix(Int(length)))) else {
            return nil
        }
        var reta = [UInt16](repeating: 0, count: info.retaSize)
        guard sl_reta_get(info.id, &reta, UInt16(info.retaSize)) == 0 else { return nil }
        return RSSSteering(key: toeplitz, reta: reta)
    }
}

/// Counters the PMD keeps for a port (`rte_eth_stats`).
public struct PortStats: Sendable {
    public var rxPackets: UInt64 = 0
    public var txPackets: UInt64 = 0
    public var rxBytes: UInt64 = 0
    public var txBytes: UInt64 = 0
    public var rxMissed: UInt64 = 0
    public var rxErrors: UInt64 = 0
    public var txErrors: UInt64 = 0
    public var rxNoMbuf: UInt64 = 0

    public static func read(port: UInt16) -> PortStats {
        var s = rte_eth_stats()
        guard rte_eth_stats_get(port, &s) == 0 else { return PortStats() }
        return PortStats(rxPackets: s.ipackets, txPackets: s.opackets, rxBytes: s.ibytes, txBytes: s.obytes,
                         rxMissed: s.imissed, rxErrors: s.ierrors, txErrors: s.oerrors, rxNoMbuf: s.rx_nombuf)
    }
}

public enum PortControl {
    public static let defaultRxDescriptors = 1024
    public static let defaultTxDescriptors = 1024

    /// Checks that `port` can give one RX and one TX queue to each of `workers`
    /// workers; the message names the port and both numbers.
    public static func checkQueues(_ port: PortInfo, workers: Int) throws(DataplaneError) {
        let allowed = min(port.maxRxQueues, port.maxTxQueues)
        if workers > allowed {
            throw DataplaneError("port \(port.id) (\(port.name)) allows at most \(port.maxRxQueues) RX and \(port.maxTxQueues) TX queues, but \(workers) workers need one each; use fewer worker lcores or give the port more queues")
        }
    }

    /// Configures `port` with one RX and one TX queue per worker; queue q's RX
    /// mbufs come from `rxPools[q]` (the mempool on worker q's NUMA socket).
    /// Only offloads the port advertises are requested.
    public static func configure(_ port: PortInfo, rxPools: [OpaquePointer], rxSockets: [Int32],
                                 rxDescriptors: Int = defaultRxDescriptors,
                                 txDescriptors: Int = defaultTxDescriptors) throws(DataplaneError) -> PortSetup {
        let queues = rxPools.count
        try checkQueues(port, workers: queues)
        var conf = rte_eth_conf()
        var rssHF: UInt64 = 0
        if port.supportsRSS && queues > 1 {
            rssHF = sl_rss_hf_wanted() & port.rssOffloads
            conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS
            conf.rx_adv_conf.rss_conf.rss_hf = rssHF
            conf.rx_adv_conf.rss_conf.rss_key = nil  // the PMD's default key
        }
        let rxCsum = port.rxOffloads & sl_rx_offload_ipv4_cksum() != 0
        if rxCsum { conf.rxmode.offloads |= sl_rx_offload_ipv4_cksum() }
        let fastFree = port.txOffloads & sl_tx_offload_fast_free() != 0
        if fastFree { conf.txmode.offloads |= sl_tx_offload_fast_free() }

        var rc = rte_eth_dev_configure(port.id, UInt16(queues), UInt16(queues), &conf)
        if rc != 0 { throw .dpdk("cannot configure port \(port.id) (\(port.name)) with \(queues) queues", code: rc) }
        var nrx = UInt16(min(rxDescriptors, max(port.rxDescMax, 1)))
        var ntx = UInt16(min(txDescriptors, max(port.txDescMax, 1)))
        rc = rte_eth_dev_adjust_nb_rx_tx_desc(port.id, &nrx, &ntx)
        if rc != 0 { throw .dpdk("port \(port.id): cannot adjust descriptor counts", code: rc) }
        for q in 0..<queues {
            rc = rte_eth_rx_queue_setup(port.id, UInt16(q), nrx, UInt32(bitPattern: rxSockets[q]), nil, rxPools[q])
            if rc != 0 { throw .dpdk("port \(port.id): cannot set up RX queue \(q)", code: rc) }
            rc = rte_eth_tx_queue_setup(port.id, UInt16(q), ntx, UInt32(bitPattern: rxSockets[q]), nil)
            if rc != 0 { throw .dpdk("port \(port.id): cannot set up TX queue \(q)", code: rc) }
        }
        return PortSetup(info: port, queues: queues, rxDescriptors: Int(nrx), txDescriptors: Int(ntx),
                         rssHashFunctions: rssHF, rxIPv4Checksum: rxCsum, txFastFree: fastFree)
    }

    public static func start(_ port: UInt16) throws(DataplaneError) {
        let rc = rte_eth_dev_start(port)
        if rc != 0 { throw .dpdk("cannot start port \(port)", code: rc) }
    }

    /// Stops and closes a port; net_pcap flushes its TX capture here.
    public static func stopAndClose(_ port: UInt16) {
        _ = rte_eth_dev_stop(port)
        _ = rte_eth_dev_close(port)
    }
}
