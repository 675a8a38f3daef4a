import ArgumentParser
import CShims
import Command
import Control
import Crypto
import IPsec
import Dataplane
import Foundation
import Packet

/// `sluicebench`: runs the gateway engine in-process on ring ports, feeds it
/// generated traffic, prints testpmd-like periodic stats, and compares with a
/// named baseline measured in the same invocation.
struct SluiceBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluicebench",
        abstract: "Traffic generator and benchmark for the Sluice gateway engine.",
        discussion: """
        The gateway runs in this process on net_ring-style ports (rte_eth_from_rings). A fixed \
        population of packets, stamped once from templates and spread over the gateway's RX queues \
        by the Toeplitz hash a NIC would compute, circulates gateway → generator → gateway. \
        Rates count packets the gateway sent out. --baseline testpmd then runs dpdk-testpmd io \
        forwarding between two net_ring ports on the same CPUs and reports the ratio.
        """)

    @Option(help: """
        What the gateway does: bypass (plaintext routing protected → unprotected), outbound \
        (ESP tunnel encapsulation of the protected side's traffic, IPv4 in IPv4), inbound (ESP \
        from the unprotected side decrypted and routed to the protected one; anti-replay off, \
        since the replayed capture repeats its sequence numbers), round-trip (outbound and inbound \
        together, one worker, on loopback ring ports: each packet is sealed, received back on the \
        unprotected port, opened and routed to the protected port, received back there and sealed \
        again; no generator core and no copy, so the ports cost the worker only ring operations; \
        the baseline is the raw engine sealing and then opening the same payload). spd: the SPD classifiers on \
        dpdk-test-acl rule and trace files (--acl-rules, --acl-traces), beside rte_acl with --baseline \
        test-acl. overlap: no gateway; whether scalar work between AEAD calls hides behind the cipher or adds to it \
        (OverlapBench.swift). acl-gen: write such files (--rules, --traces, --seed) from Sluice's rule-set generator. spd-update: on a running gateway with --rules policies, how long one sp add / sp del takes to reach every worker (compile, publish, RCU grace period).
        """)
    var mode: String = "bypass"
    @Option(help: "outbound: UDP payload bytes of the plaintext packets (the frame is 42 bytes more).")
    var payload: Int = 64
    @Option(help: "outbound: the SA's AEAD (aes-gcm-128, aes-gcm-256, chacha20-poly1305).")
    var aead: String = "aes-gcm-256"
    @Option(help: "outbound: crypto engine (auto, ipsec-mb, sodium).")
    var engine: String = "auto"
    @Option(help: "Frame size in bytes without FCS (60…1514), or 'imix' (7:4:1 of 64/576/1500).")
    var size: String = "64"
    @Option(help: "Burst size of the generator (ring ports) and of testpmd; the gateway's RX burst is 32.")
    var burst: Int = 32
    @Option(help: "Number of distinct flows.")
    var flows: Int = 256
    @Option(help: "Address family of the generated traffic: ipv4 or ipv6.")
    var family: String = "ipv4"
    @Option(help: "Gateway worker lcores (one RX/TX queue pair each per port).")
    var workers: Int = 1
    @Option(help: "Generator lcores.")
    var generators: Int = 1
    @Option(help: """
        outbound: how the workers share SAs. atomic: one SA, every worker seals with an atomic sequence \
        reservation (shared-sa atomic); handoff: one SA sealed only by its owner worker, the others hand \
        packets over (shared-sa handoff); per-cpu: one SA per worker under one reqid (RFC 9611). \
        inbound: atomic and handoff: one SA, its owner worker opens what the others receive (handed over); \
        per-cpu: one SA per worker (reqid 1, cpu K), each queue receiving its worker's SA, as RSS on the SPI delivers.
        """)
    var saMode: String = "atomic"
    @Option(help: "Measured seconds.")
    var seconds: Double = 5
    @Option(help: "Seconds of warm-up before measuring.")
    var warmup: Double = 1
    @Option(help: "Packets in flight per queue.")
    var inflight: Int = 512
    @Option(help: "Periodic stats every N seconds (0 = off).")
    var statsPeriod: Double = 1
    @Option(help: """
        Ports the gateway runs on. pcap: the generated flows are written once to one pcap file per \
        RX queue and replayed from memory by net_pcap (infinite_rx=1) into the protected port; the \
        unprotected port is net_null (no-rx=1), a sink that counts; one core per worker does all the \
        work. ring: ports backed by rte_rings, fed by generator lcores that recycle every packet \
        (cross-core traffic, like a NIC's DMA).
        """)
    var ports: String = "pcap"
    @Option(help: """
        Baseline to compare with: testpmd (bypass/outbound/inbound), secgw (outbound/inbound: DPDK's ipsec-secgw \
        on the same ports, CPU and SA, built by scripts/build-secgw.sh; reported as secgw_mpps and secgw_ratio \
        beside the raw-engine baseline), test-acl (spd: dpdk-test-acl), or none.
        """)
    var baseline: String = "none"
    @Option(help: "spd: the dpdk-test-acl rule file to classify with; acl-gen: the rule file to write.")
    var aclRules: String?
    @Option(help: "spd: the dpdk-test-acl trace file to classify; acl-gen: the trace file to write.")
    var aclTraces: String?
    @Flag(help: "spd, acl-gen: IPv6 rules and traces (dpdk-test-acl --ipv6).")
    var ipv6 = false
    @Option(help: "acl-gen, spd-update: number of rules.")
    var rules: Int = 10_000
    @Option(help: "spd-update: single policy adds (each followed by its delete) published on the running gateway.")
    var changes: Int = 100
    @Option(help: "spd-update: the SPD driver (auto, linear, hash-list, cut-tree).")
    var spdDriver: String = "auto"
    @Option(help: "acl-gen: number of traces (packets).")
    var traces: Int = 100_000
    @Option(help: "acl-gen: generator seed.")
    var seed: UInt64 = 1
    @Option(help: "acl-gen: fraction of traces at rule boundaries and other traps (0…1); the rest hit a random rule.")
    var adversarial: Double = 0.1
    @Option(help: "spd: comma-separated drivers to measure (linear, hash-list, cut-tree) or all.")
    var drivers: String = "all"
    @Option(help: "spd: single-rule inserts and removals timed per driver.")
    var updateSamples: Int = 50
    @Option(help: "spd: EAL memory in MB for dpdk-test-acl.")
    var aclMemory: Int = 2048
    @Flag(help: """
        outbound/inbound on pcap ports: also run --mode bypass in a child sluicebench on the same ports with \
        frames of the size this mode receives, and report what receiving, routing and sending such a frame \
        costs there (port_floor_cycles_per_packet), the raw engine's cycles per packet \
        (baseline_cycles_per_packet), the rest of the worker's time (esp_cycles_per_packet: the ESP work \
        besides the AEAD) and the best ratio these ports allow (ceiling_ratio: engine / (engine + floor)).
        """)
    var portFloor = false
    @OptionGroup var shared: SharedOptions
    @Flag(help: "Report mallocs and retains per packet (run with the alloc-counter preload; disables periodic stats in the window).")
    var countAllocs = false

    func validate() throws {
        guard ["bypass", "outbound", "inbound", "round-trip", "spd", "acl-gen", "spd-update", "overlap"].contains(mode) else {
            throw ValidationError("--mode must be bypass, outbound, inbound, round-trip, spd, acl-gen, spd-update or overlap")
        }
        if mode == "overlap" {
            guard (1...1400).contains(payload), !shared.hugepages, baseline == "none" else {
                throw ValidationError("--mode overlap takes --payload 1…1400 and no baseline")
            }
            return
        }
        guard !shared.hugepages || ["bypass", "outbound", "inbound", "round-trip"].contains(mode) else {
            throw ValidationError("--hugepages applies to --mode bypass, outbound, inbound and round-trip")
        }
        guard mode != "round-trip" || (workers == 1 && baseline == "none" && !portFloor && saMode == "atomic") else {
            throw ValidationError("--mode round-trip runs one worker on its own loopback ports, against the raw engine only")
        }
        if mode == "spd-update" {
            guard rules >= 1, changes >= 1 else { throw ValidationError("need --rules ≥ 1 and --changes ≥ 1") }
            guard ["auto", "linear", "hash-list", "cut-tree"].contains(spdDriver) else {
                throw ValidationError("--spd-driver must be auto, linear, hash-list or cut-tree")
            }
            return
        }
        if mode == "spd" || mode == "acl-gen" {
            guard aclRules != nil, aclTraces != nil else { throw ValidationError("--mode \(mode) needs --acl-rules and --acl-traces") }
            guard ["test-acl", "none"].contains(baseline) else { throw ValidationError("--mode \(mode) takes --baseline test-acl or none") }
            guard rules >= 1, traces >= 1, (0...1).contains(adversarial) else {
                throw ValidationError("need --rules ≥ 1, --traces ≥ 1 and 0 ≤ --adversarial ≤ 1")
            }
            guard seconds > 0, burst >= 1, burst <= 256, updateSamples >= 0 else {
                throw ValidationError("need --seconds > 0, 1 ≤ --burst ≤ 256 and --update-samples ≥ 0")
            }
            return
        }
        guard mode == "bypass" || family == "ipv4" else {
            throw ValidationError("--mode \(mode) runs with --family ipv4")
        }
        guard ["atomic", "handoff", "per-cpu"].contains(saMode) else { throw ValidationError("--sa-mode must be atomic, handoff or per-cpu") }
        guard ["aes-gcm-128", "aes-gcm-256", "chacha20-poly1305"].contains(aead),
              ["auto", "ipsec-mb", "sodium"].contains(engine) else { throw ValidationError("bad --aead or --engine") }
        guard (0...1400).contains(payload) else { throw ValidationError("--payload must be 0…1400") }
        guard workers >= 1, generators >= 1 else { throw ValidationError("--workers and --generators must be ≥ 1") }
        guard ["ipv4", "ipv6"].contains(family) else { throw ValidationError("--family must be ipv4 or ipv6") }
        guard ["testpmd", "secgw", "none"].contains(baseline) else { throw ValidationError("--baseline must be testpmd, secgw or none") }
        guard baseline != "secgw" || (mode != "bypass" && ports == "pcap" && workers == 1) else {
            throw ValidationError("--baseline secgw measures --mode outbound or inbound on --ports pcap with one worker")
        }
        guard ["pcap", "ring"].contains(ports) else { throw ValidationError("--ports must be pcap or ring") }
        guard !portFloor || (mode != "bypass" && ports == "pcap") else {
            // Ring generators restore whole frames for ESP but only headers for bypass: no common floor.
            throw ValidationError("--port-floor measures --mode outbound or inbound on --ports pcap")
        }
        guard seconds > 0, inflight >= burst, burst >= 1, burst <= Int(SL_BURST) else {
            throw ValidationError("need --seconds > 0 and 1 ≤ --burst ≤ \(SL_BURST) ≤ … ≤ --inflight")
        }
        guard frameSizes != nil else { throw ValidationError("--size must be a number 60…1514 or 'imix'") }
    }

    var frameSizes: [Int]? {
        if mode != "bypass" { return [max(60, HeaderSize.ethernet + HeaderSize.ipv4 + HeaderSize.udp + payload)] }
        if size == "imix" { return IMIX.classic }
        guard let n = Int(size), (60...1514).contains(n) else { return nil }
        return [n]
    }

    func run() throws {
        try shared.pinCryptoPath()
        if mode == "acl-gen" {
            try ACLFiles.generate(rules: rules, traces: traces, ipv6: ipv6, seed: seed, adversarial: adversarial,
                                  rulesPath: aclRules!, tracesPath: aclTraces!)
            if !shared.json { print("wrote \(rules) rules to \(aclRules!) and \(traces) traces to \(aclTraces!)") }
            return
        }
        let report = mode == "spd" ? try SPDBench(o: self).run()
            : mode == "overlap" ? try OverlapBench.run(payload: payload, cpu: shared.cpuList().last ?? 0, say: shared.say)
            : mode == "spd-update" ? try SPDUpdateBench.run(rules: rules, changes: changes, driver: spdDriver, say: shared.say)
            : try Bench(options: self).run()
        try shared.printReport(report)
    }
}

/// One benchmark run: EAL, gateway, generator, measurement, baseline.
struct Bench {
    let o: SluiceBench
    init(options: SluiceBench) { o = options }

    func say(_ s: String) { o.shared.say(s) }

    /// Rounds of the raw-engine baseline (each at both offsets).
    static let rawRounds = 5

    /// The measurement with the median rate (`runs` not empty).
    func median(_ runs: [CryptoBench.Measurement]) -> CryptoBench.Measurement {
        runs.sorted { $0.mpps < $1.mpps }[runs.count / 2]
    }

    func run() throws -> [String: Any] {
        if o.baseline == "secgw" { _ = try SecgwBaseline.locate() }  // before the gateway run, not after
        let cpus = o.shared.cpuList()
        let n = cpus.count
        // round-trip: the worker's own loopback ports are the traffic; no generator.
        let loop = o.mode == "round-trip"
        let ring = o.ports == "ring" || loop
        let generatorCount = ring && !loop ? o.generators : 0
        let portsName = loop ? "loopback-ring" : o.ports
        // Workers get dedicated CPUs from the end of the list, generators the
        // ones before them, the (mostly sleeping) main lcore the first.
        let workerCPUs = (0..<o.workers).map { cpus[(n - 1 - $0 % n + n) % n] }
        let generatorCPUs = (0..<generatorCount).map { j in n - 1 - o.workers - j >= 0 ? cpus[n - 1 - o.workers - j] : cpus[0] }
        if o.workers + generatorCount > n {
            say("warning: \(o.workers) workers + \(generatorCount) generators on \(n) CPUs share CPUs; rates are not per-core figures")
        }
        var lcoreMap = ["0@\(cpus[0])"]
        for (i, c) in workerCPUs.enumerated() { lcoreMap.append("\(1 + i)@\(c)") }
        for (j, c) in generatorCPUs.enumerated() { lcoreMap.append("\(1 + o.workers + j)@\(c)") }

        // Templates: every flow in every distinct size, spread over the
        // workers' queues by the Toeplitz hash a NIC with the default key would use.
        let protectedMAC = MACAddress((0x02, 0x70, 0x63, 0x61, 0x70, 0x00))
        let inbound = o.mode == "inbound"
        var template: PacketBuilder = o.family == "ipv4"
            ? (inbound ? .udp(IPv4Address(198, 51, 100, 7), 4789, IPv4Address(10, 0, 0, 2), 1024)
                       : .udp(IPv4Address(10, 0, 0, 2), 1024, IPv4Address(198, 51, 100, 7), 4789))
            : .udp(IPv6Address("2001:db8:a::2")!, 1024, IPv6Address("2001:db8:100::7")!, 4789)
        template.ethernet.destination = protectedMAC
        let reta = RedirectionTable(size: 128, queueCount: o.workers)!
        let flowSet = try FlowSet(template: template, count: o.flows, reta: reta)
        let sizes = o.frameSizes!
        let distinct = Array(Set(sizes)).sorted()
        var frames: [[UInt8]] = []
        var restore: [Int] = []
        for f in flowSet.flows {
            let b = flowSet.builder(for: f)
            for s in distinct {
                frames.append(try b.build(frameSize: s))
                restore.append(b.headerLength)
            }
        }
        if ring && !loop && o.mode != "bypass" {
            // ESP rewrites the whole packet in place: the generator restores
            // all of it. Inbound circulates ESP sealed once per template.
            if inbound {
                frames = try InboundTraffic.seal(frames, aead: o.aead, firstSequence: 1) { i in
                    inboundSPI(o, queue: Int(flowSet.flows[i / distinct.count].queue))
                }
            }
            restore = frames.map(\.count)
        }
        // Queue q's packet population: its flows round-robin, sizes in sequence.
        func population(queue q: Int) throws -> [Int] {
            let qFlows = flowSet.flows.indices.filter { flowSet.flows[$0].queue == UInt16(q) }
            guard !qFlows.isEmpty else { throw ValidationError("no flow hashes to queue \(q): use more --flows") }
            return (0..<o.inflight).map { i in
                qFlows[i % qFlows.count] * distinct.count + distinct.firstIndex(of: sizes[i % sizes.count])!
            }
        }

        var vdevs: [String] = []
        var scratch: String? = nil
        var replayedFrameSize = 0  // pcap ports: the largest frame the source replays
        if !ring {
            let dir = "/tmp/sluicebench-\(getpid())"
            mkdir(dir, 0o755)
            scratch = dir
            var rxArgs: [String] = []
            for q in 0..<o.workers {
                let path = "\(dir)/queue\(q).pcap"
                var queueFrames = try population(queue: q).map { frames[$0] }
                if inbound {
                    queueFrames = try InboundTraffic.seal(queueFrames, aead: o.aead, firstSequence: UInt64(q * o.inflight + 1)) { _ in
                        inboundSPI(o, queue: q)
                    }
                }
                try PcapFile.write(queueFrames, to: path)
                replayedFrameSize = max(replayedFrameSize, queueFrames.map(\.count).max() ?? 0)
                rxArgs.append("rx_pcap=\(path)")
            }
            let source = "net_pcap0," + rxArgs.joined(separator: ",") + ",infinite_rx=1"
            // Port 0 is the protected side: the source for bypass/outbound, the sink for inbound.
            vdevs = inbound ? ["net_null0,no-rx=1", source] : [source, "net_null0,no-rx=1"]
        }
        defer { if let dir = scratch { removeTree(dir) } }

        var eal = ["sluicebench"] + o.shared.ealMemoryArguments + ["-m", "\(o.shared.memory)", "--no-pci", "--no-shconf", "--no-telemetry",
                   "--log-level", "lib.eal:warning", "--lcores", lcoreMap.joined(separator: ",")]
        for v in vdevs { eal += ["--vdev", v] }
        _ = try EAL.initialize(arguments: eal)

        let socket = EAL.socket(ofLcore: 1)
        let protectedPort: UInt16
        let unprotectedPort: UInt16
        var ringPorts: (RingPort, RingPort)? = nil
        if ring {
            let ringSize = 1 << (Int.bitWidth - (o.inflight * 2).leadingZeroBitCount)
            let p = try RingPort.create(name: "sl_prot", queues: o.workers, size: ringSize, socket: socket, loopback: loop)
            let u = try RingPort.create(name: "sl_unprot", queues: o.workers, size: ringSize, socket: socket, loopback: loop)
            ringPorts = (p, u)
            protectedPort = p.port; unprotectedPort = u.port
        } else {
            protectedPort = 0; unprotectedPort = 1
        }
        let workerLcores = (0..<o.workers).map { UInt32(1 + $0) }
        let gateway = try Gateway(portIDs: [protectedPort, unprotectedPort],
                                  roles: [protectedPort: .protected, unprotectedPort: .unprotected], workerLcores: workerLcores,
                                  extraMbufs: ring ? o.workers * o.inflight + 4096 : 0)
        let macs = Dictionary(uniqueKeysWithValues: gateway.ports.map { ($0.info.id, $0.info.mac) })
        let configText = """
        port \(protectedPort) role protected address 10.0.0.1/16
        port \(protectedPort) address 2001:db8:a::1/64
        port \(unprotectedPort) role unprotected address 192.0.2.1/24
        port \(unprotectedPort) address 2001:db8:ff::1/64
        neighbor 192.0.2.254 lladdr 02:00:00:00:00:fe port \(unprotectedPort)
        neighbor 2001:db8:ff::fe lladdr 02:00:00:00:00:fe port \(unprotectedPort)
        route add 198.51.100.0/24 via \(loop ? "10.0.0.2" : "192.0.2.254")
        route add 2001:db8:100::/48 via 2001:db8:ff::fe
        route add 203.0.113.0/24 via 192.0.2.254
        route add 10.0.0.0/24 via 10.0.0.2
        neighbor 10.0.0.2 lladdr 02:00:00:00:00:0a port \(protectedPort)
        """ + (o.mode == "inbound" ? """


        """ + inboundSAs(o, workerLcores: workerLcores) : "") + (o.mode == "outbound" || loop ? outboundSAs(o, workerLcores: workerLcores) : "") + (loop ? """
        sa add spi 0x1001 dir in src 203.0.113.2 dst 192.0.2.1 mode tunnel aead \(o.aead) key 0x\(InboundTraffic.keyHex(o.aead))
        sp add dir in src 10.0.0.0/16 dst 198.51.100.0/24 priority 10 action protect spi 0x1001
        """ : "")
        let config = try GatewayConfig.load(text: configText, name: "sluicebench-\(o.mode)")
        try gateway.publish(routes: RouteCompiler.compile(config, portMACs: macs), ports: RouteCompiler.ports(config))
        let ipsec = IPsecCompiler()
        try gateway.publish(ipsec: ipsec.compile(config, workerLcores: workerLcores))
        ipsec.commit()

        // Ring ports: queues are dealt to generators round-robin.
        var generators: [Generator] = []
        if let (protected, _) = ringPorts, loop {
            // Stamped once into the protected port's loop, then never touched
            // by anyone but the worker (and the far ends, LoopPeer, on RX).
            let stamp = Generator(queues: [.init(inject: protected.rx[0], collect: [])], templates: frames,
                                  restoreLengths: restore, lcore: 0, burst: o.burst)
            try stamp.seed(queue: 0, templateIndices: try population(queue: 0), pool: gateway.mempools.values.first!)
            try LoopPeer.install(protectedPort: protectedPort, unprotectedPort: unprotectedPort)
        } else if let (protected, unprotected) = ringPorts {
            for g in 0..<generatorCount {
                let qs = stride(from: g, to: o.workers, by: generatorCount).map {
                    Generator.Queue(inject: inbound ? unprotected.rx[$0] : protected.rx[$0],
                                    collect: [unprotected.tx[$0], protected.tx[$0]])
                }
                generators.append(Generator(queues: qs, templates: frames, restoreLengths: restore,
                                            lcore: UInt32(1 + o.workers + g), burst: o.burst))
            }
            let pool = gateway.mempools.values.first!
            for q in 0..<o.workers {
                try generators[q % generatorCount].seed(queue: q / generatorCount, templateIndices: try population(queue: q), pool: pool)
            }
        }

        try gateway.start()
        for g in generators {
            let rc = rte_eal_remote_launch(generatorEntry, Unmanaged.passUnretained(g).toOpaque(), g.lcore)
            if rc != 0 { throw DataplaneError("cannot launch the generator on lcore \(g.lcore)") }
        }
        say("sluicebench: mode=\(o.mode) ports=\(portsName) size=\(o.size) family=\(o.family) flows=\(o.flows) workers=\(o.workers)@cpu\(workerCPUs) generators=\(generatorCount)@cpu\(generatorCPUs) packets/queue=\(o.inflight)")

        // Packets out of the gateway: what the generators got back (ring), or
        // what the workers sent (pcap → null sink).
        func totals() -> (packets: UInt64, bytes: UInt64) {
            var p: UInt64 = 0, b: UInt64 = 0
            if loop {
                // Round trips: plaintext delivered back to the protected port
                // (ring ports count no bytes: see `bytes` below).
                for (setup, s) in gateway.portStats() where setup.info.id == protectedPort { p = s.txPackets }
            } else if ring {
                for g in generators {
                    for q in 0..<g.queues.count { p &+= g.received[q]; b &+= g.receivedBytes[q] }
                }
            } else {
                for c in gateway.coreCounters() { p &+= c.txPackets; b &+= c.rxBytes }
            }
            return (p, b)
        }
        usleep(UInt32(o.warmup * 1e6))
        let counterFn = o.countAllocs ? AllocCounter.reader() : nil
        if o.countAllocs && counterFn == nil {
            say("warning: --count-allocs without the alloc-counter preload (LD_PRELOAD=…/alloc_counter.so); not counting")
        }
        // Positive control: the counter must see an allocation made on purpose.
        var probe: AllocCounter? = nil
        if let fn = counterFn {
            let before = AllocCounter.read(fn)
            let box = ProbeBox(size: o.inflight)
            let after = AllocCounter.read(fn)
            probe = AllocCounter(mallocs: after.mallocs &- before.mallocs, swiftAllocs: after.swiftAllocs &- before.swiftAllocs,
                                 retains: 0, releases: UInt64(box.storage.count))
        }
        let c0 = totals()
        let coresAtStart = gateway.coreCounters()
        var last = (t: monotonicSeconds(), c: c0, ports: gateway.portStats().map { $0.1 })
        // Between the two counter reads this thread only reads the clock and
        // sleeps, so whatever is counted was done by the workers and generators.
        var allocStart: AllocCounter? = nil
        if let fn = counterFn { allocStart = AllocCounter.read(fn) }
        let t0 = monotonicSeconds()
        let end = t0 + o.seconds
        if counterFn != nil {
            usleep(UInt32(o.seconds * 1e6))
        } else {
            while true {
                let now = monotonicSeconds()
                if now >= end { break }
                let step = o.statsPeriod > 0 ? min(o.statsPeriod, end - now) : end - now
                usleep(UInt32(step * 1e6))
                if o.statsPeriod > 0 {
                    let t = monotonicSeconds()
                    let ps = gateway.portStats()
                    for (i, (setup, s)) in ps.enumerated() {
                        let prev = last.ports[i]
                        let dt = t - last.t
                        say(String(format: "  port %d %-9@ RX-packets: %-12llu RX-pps: %-10.0f TX-packets: %-12llu TX-pps: %-10.0f",
                                   Int(setup.info.id), setup.info.id == protectedPort ? "protected" : "unprot",
                                   s.rxPackets, Double(s.rxPackets &- prev.rxPackets) / dt,
                                   s.txPackets, Double(s.txPackets &- prev.txPackets) / dt))
                    }
                    last = (t, totals(), ps.map { $0.1 })
                }
            }
        }
        let t1 = monotonicSeconds()
        var allocEnd: AllocCounter? = nil
        if let fn = counterFn { allocEnd = AllocCounter.read(fn) }
        let c1 = totals()

        let coresAtEnd = gateway.coreCounters()
        for g in generators { sl_store_release_u32(g.stopFlag, 1) }
        for g in generators { _ = rte_eal_wait_lcore(g.lcore) }
        gateway.stopWorkers()
        let cores = gateway.coreCounters()
        for line in cores.map(CounterReport.coreLine) { say("  " + line) }

        let dt = t1 - t0
        let packets = Double(c1.packets &- c0.packets)
        // Ring ports count no bytes: a round trip delivers one plaintext frame.
        let bytes = loop ? packets * Double(o.frameSizes![0]) : Double(c1.bytes &- c0.bytes)
        let mpps = packets / dt / 1e6
        // round-trip: per round trip (the worker receives each packet twice).
        let cyclesPerPacket = windowRatio(coresAtStart, coresAtEnd, \.busyCycles, per: \.rxPackets) * (loop ? 2 : 1)
        var report: [String: Any] = [
            "mode": o.mode, "sa_mode": o.saMode, "ports": portsName, "size": o.size, "family": o.family, "flows": o.flows, "workers": o.workers,
            "generators": generatorCount, "seconds": dt, "packets": Int(packets),
            "mpps": round3(mpps), "gbps": round3(bytes * 8 / dt / 1e9),
            "wire_gbps": round3((bytes + packets * 24) * 8 / dt / 1e9),
            "drops": Int(cores.reduce(0) { $0 + $1.totalDrops }),
            "worker_cycles_per_packet": round3(cyclesPerPacket),
            // What the workers would forward if fed without limit: workers × TSC rate / busy cycles per packet.
            "worker_capacity_mpps": round3(Double(sl_tsc_hz()) / max(cyclesPerPacket, 1e-9) / 1e6 * Double(o.workers)),
            "worker_cpus": workerCPUs, "generator_cpus": generatorCPUs, "hugepages": o.shared.hugepages,
            // 32 (the RX burst) when the workers were the bottleneck; less when
            // they waited for traffic (busy cycles per packet then overstate).
            "rx_packets_per_burst": round3(windowRatio(coresAtStart, coresAtEnd, \.rxPackets, per: \.rxBursts)),
        ]
        if loop {
            // What the two SAs carried over the whole run (warm-up included):
            // every round trip is one seal and one authenticated open.
            let spi = SecurityParameterIndex(0x1001)
            let sent = ipsec.usage(of: SAIdentifier(spi: spi, destination: IPAddress("203.0.113.2")))
            let accepted = ipsec.usage(of: SAIdentifier(spi: spi, destination: IPAddress("192.0.2.1")))
            report["sa_out_packets"] = Int(sent?.packets ?? 0)
            report["sa_in_packets"] = Int(accepted?.packets ?? 0)
        }
        if let a = allocStart, let b = allocEnd, packets > 0 {
            report["mallocs"] = Int(b.mallocs &- a.mallocs)
            report["swift_allocs"] = Int(b.swiftAllocs &- a.swiftAllocs)
            report["retains"] = Int(b.retains &- a.retains)
            report["releases"] = Int(b.releases &- a.releases)
            report["probe_mallocs"] = Int(probe?.mallocs ?? 0)
            report["probe_swift_allocs"] = Int(probe?.swiftAllocs ?? 0)
            report["mallocs_per_packet"] = Double(b.mallocs &- a.mallocs) / packets
            report["retains_per_packet"] = Double(b.retains &- a.retains) / packets
        }
        var rawMpps: Double? = nil  // ESP modes: the raw engine's rate
        if o.mode != "bypass" {
            // The named baseline for ESP: the raw engine doing this mode's AEAD
            // operation (outbound seals, inbound opens) on the same ESP payloads
            // (inner IPv4/UDP packet + ESP trailer), in this run, over
            // 64-byte-aligned buffers hot in cache. It is measured a second
            // time with each payload where a packet puts it (the frame starts
            // RTE_PKTMBUF_HEADROOM bytes into the mbuf's buffer; the sealed
            // payload follows the Ethernet header, inbound also the outer IPv4
            // header, the ESP header and the IV), to show what that costs.
            // It runs on the (first) worker's CPU, now idle, not the main
            // lcore's, so both sides of the ratio ran on the same CPU; and in
            // `rawRounds` rounds alternating the two offsets, each about a
            // quarter of a second long, whose medians are reported: one short
            // measurement on this shared host varies by up to ±15 %.
            let inner = HeaderSize.ipv4 + HeaderSize.udp + o.payload
            let sealed = inner + ESPTrailer.trailerLength(payloadLength: inner)
            let algorithm: AEADAlgorithm = o.aead == "aes-gcm-128" ? .aes128GCM : (o.aead == "aes-gcm-256" ? .aes256GCM : .chacha20Poly1305)
            let kind: CryptoEngineKind = o.engine == "sodium" ? .sodium : (o.engine == "ipsec-mb" ? .ipsecMB : .auto)
            let resolved = try CryptoEngines.resolve(kind, for: algorithm)
            // round-trip: each packet is sealed and opened. The baseline is
            // the raw engine sealing a burst of 32 and then opening it, as
            // the worker does (sealOpen: the two functions' code and keys
            // take turns in the caches); beside it, seal and open each
            // measured alone and chained (the time of one plus the other).
            let operations: [CryptoBench.Operation] = loop ? [.sealOpen, .seal, .open] : [inbound ? .open : .seal]
            let path: CryptoBench.Path = resolved == .ipsecMB ? .rawIPsecMBDirect : .rawSodium
            // Outbound seals the inner packet where it arrived; inbound opens
            // what follows the outer header, the ESP header and the IV, which
            // in round-trip is again where the inner packet started.
            let packetOffset = (Int(RTE_PKTMBUF_HEADROOM) + HeaderSize.ethernet
                + (inbound ? HeaderSize.ipv4 + ESPLayout.headerAndIV : 0)) % 64
            // The raw engine is faster than the gateway: at most ~0.25 s per round.
            let roundPackets = max(50_000, Int(mpps * 250_000))
            func raw(_ operation: CryptoBench.Operation, offset: Int) throws -> CryptoBench.Measurement? {
                try CryptoBench.measure(engine: kind, aead: algorithm, payloadSize: sealed, burst: 32, packets: roundPackets,
                                        path: path, operation: operation, offset: offset)
            }
            try pinCallingThread(to: workerCPUs[0])
            defer { try? pinCallingThread(to: cpus[0]) }
            // Per operation: the rounds at the aligned offset, and at the packet's.
            var alignedRuns = [[CryptoBench.Measurement]](repeating: [], count: operations.count)
            var atPacketRuns = alignedRuns
            rounds: for _ in 0..<Self.rawRounds {
                for (j, operation) in operations.enumerated() {
                    guard let a = try raw(operation, offset: 0), let b = try raw(operation, offset: packetOffset) else { break rounds }
                    alignedRuns[j].append(a)
                    atPacketRuns[j].append(b)
                }
            }
            if alignedRuns.allSatisfy({ $0.count == Self.rawRounds }) {
                let aligned = median(alignedRuns[0]).mpps
                let atPacket = median(atPacketRuns[0]).mpps
                rawMpps = aligned
                report["baseline_cpu"] = workerCPUs[0]
                report["baseline_runs_mpps"] = alignedRuns[0].map { round3($0.mpps) }
                report["baseline"] = (resolved == .ipsecMB ? "intel-ipsec-mb direct API" : "libsodium") + ", raw, \(operations[0])"
                report["baseline_mpps"] = round3(aligned)
                report["baseline_gbps"] = round3(aligned * Double(sealed) * 8 / 1e3)
                if loop {
                    let seal = median(alignedRuns[1]).mpps, open = median(alignedRuns[2]).mpps
                    let separate = 1 / (1 / seal + 1 / open)
                    report["baseline_seal_mpps"] = round3(seal)
                    report["baseline_open_mpps"] = round3(open)
                    report["baseline_separate_mpps"] = round3(separate)
                    report["ratio_to_separate"] = round3(mpps / separate)
                }
                report["ratio"] = round3(mpps / aligned)
                report["aead_payload_bytes"] = sealed
                report["packet_offset"] = packetOffset
                report["baseline_at_packet_offset_mpps"] = round3(atPacket)
                report["ratio_at_packet_offset"] = round3(mpps / atPacket)
            }
            if o.workers > 1 {
                // Several workers: the raw engine on every worker's CPU at
                // once, the scaling baseline. What the CPUs share (clock
                // limits, sibling threads, caches) then slows it as it slows
                // the workers, which one CPU's rate times N would not show.
                var sums: [Double] = []
                for _ in 0..<Self.rawRounds {
                    guard let rates = try rawOnEveryCPU(workerCPUs, {
                        try CryptoBench.measure(engine: kind, aead: algorithm, payloadSize: sealed, burst: 32,
                                                packets: roundPackets, path: path, operation: operations[0])
                    }) else { break }
                    sums.append(rates.reduce(0, +))
                }
                if sums.count == Self.rawRounds {
                    let all = sums.sorted()[sums.count / 2]
                    report["baseline_all_workers_mpps"] = round3(all)
                    report["baseline_all_workers_runs_mpps"] = sums.map(round3)
                    report["ratio_all_workers"] = round3(mpps / all)
                }
            }
            report["engine"] = "\(resolved)"
            if resolved == .ipsecMB { report["ipsec_mb_arch"] = CryptoEngines.ipsecMB.map { "\($0.architecture)" } ?? "none" }
            report["aead"] = o.aead
            report["payload"] = o.payload
        }
        if o.baseline == "secgw" {
            say("sluicebench: measuring DPDK ipsec-secgw on the same pcap replay and null ports")
            let secgw = try SecgwBaseline.run(vdevs: vdevs, inbound: inbound, aead: o.aead, keyHex: InboundTraffic.keyHex(o.aead),
                                              cpu: workerCPUs[0], seconds: o.seconds, warmup: o.warmup, scratch: scratch!,
                                              memoryArguments: o.shared.ealMemoryArguments)
            report["secgw_mpps"] = round3(secgw.mpps)
            report["secgw_ratio"] = round3(mpps / secgw.mpps)
            report["secgw_command"] = secgw.command
        }
        if o.baseline == "testpmd" {
            say("sluicebench: measuring the baseline: dpdk-testpmd io forwarding on " + (ring ? "two net_ring loopback ports (tx_first)" : "the same pcap replay and null ports"))
            let frame = o.frameSizes!.count == 1 ? o.frameSizes![0] : 64
            // `mbufAllocation`: testpmd's --mp-alloc (its default pool when nil).
            func testpmd(_ mode: String, mbufAllocation: String? = nil) throws -> TestpmdBaseline.Result {
                try TestpmdBaseline.run(seconds: o.seconds, frameSize: frame, burst: o.burst,
                                        forwardingCores: o.workers, cpus: [cpus[0]] + workerCPUs,
                                        filePrefix: "sluicebench-testpmd-\(mode)\(mbufAllocation.map { "-\($0)" } ?? "")-\(getpid())",
                                        vdevs: ring ? nil : vdevs, memoryMB: ring ? 256 : o.shared.memory,
                                        forwardMode: mode, memoryArguments: o.shared.ealMemoryArguments,
                                        testpmdArguments: mbufAllocation.map { ["--mp-alloc=\($0)"] } ?? [])
            }
            let base = try testpmd("io")
            report["baseline"] = "testpmd-io"
            report["baseline_mpps"] = round3(base.mpps)
            report["baseline_command"] = base.command
            report["ratio"] = round3(mpps / base.mpps)
            // io forwarding never touches a packet; a router must write each
            // one (MACs, TTL, checksum). testpmd's own `mac` forwarding, which
            // writes only the two MAC addresses, shows what that write costs here.
            say("sluicebench: measuring dpdk-testpmd mac forwarding (writes each packet's MACs) on the same ports")
            let mac = try testpmd("mac")
            report["testpmd_mac_mpps"] = round3(mac.mpps)
            report["testpmd_mac_command"] = mac.command
            report["ratio_to_testpmd_mac"] = round3(mpps / mac.mpps)
            // Without hugepages testpmd's stock pool starts every mbuf on a
            // page of its own, so all packets share a few L1 cache sets;
            // Sluice's pool is packed (sl_pktmbuf_pool_create). testpmd's
            // `--mp-alloc=xbuf` (mbuf headers in a packed pool, data buffers
            // back to back in a memzone) is the nearest it has: io forwarding
            // with it is the like-for-like figure on 4 KiB pages.
            if !o.shared.hugepages {
                say("sluicebench: measuring dpdk-testpmd io forwarding with packed buffers (--mp-alloc=xbuf) on the same ports")
                let packed = try testpmd("io", mbufAllocation: "xbuf")
                report["testpmd_io_xbuf_mpps"] = round3(packed.mpps)
                report["testpmd_io_xbuf_command"] = packed.command
                report["ratio_to_testpmd_io_xbuf"] = round3(mpps / packed.mpps)
            }
        }
        if o.portFloor, let rawMpps, rawMpps > 0 {
            // The frames the ESP worker received: plaintext outbound, ESP inbound (one size: --payload).
            let frame = replayedFrameSize
            say("sluicebench: measuring the port floor: --mode bypass with \(frame)-byte frames on the same ports")
            let floor = try PortFloor.measure(frameSize: frame, o: o)
            let rawCycles = Double(sl_tsc_hz()) / (rawMpps * 1e6)
            report["port_floor_frame_size"] = frame
            report["port_floor_mpps"] = round3(floor.mpps)
            report["port_floor_cycles_per_packet"] = round3(floor.cyclesPerPacket)
            report["port_floor_command"] = floor.command
            report["baseline_cycles_per_packet"] = round3(rawCycles)
            report["esp_cycles_per_packet"] = round3(cyclesPerPacket - floor.cyclesPerPacket - rawCycles)
            report["ceiling_ratio"] = round3(rawCycles / (rawCycles + floor.cyclesPerPacket))
        }
        return report
    }
}

/// What plain forwarding of one frame size costs a worker on the benchmark's
/// ports: `sluicebench --mode bypass` run as a child process (one EAL per
/// process), with this run's ports, CPUs, memory and timing.
enum PortFloor {
    struct Result {
        var mpps: Double
        var cyclesPerPacket: Double
        var command: String
    }

    static func measure(frameSize: Int, o: SluiceBench) throws -> Result {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var arguments = ["--mode", "bypass", "--size", "\(frameSize)", "--ports", o.ports, "--workers", "\(o.workers)",
                         "--flows", "\(o.flows)", "--inflight", "\(o.inflight)", "--seconds", "\(o.seconds)",
                         "--warmup", "\(o.warmup)", "--memory", "\(o.shared.memory)", "--stats-period", "0", "--json"]
        if let cpus = o.shared.cpus { arguments += ["--cpus", cpus] }
        if o.shared.hugepages { arguments.append("--hugepages") }
        guard let run = try TestpmdBaseline.runToCompletion(executable, arguments, limit: o.warmup + o.seconds + 120) else {
            throw DataplaneError("the port-floor run did not finish: \(arguments.joined(separator: " "))")
        }
        let command = run.command
        guard run.status == 0,
              let object = try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any],
              let mpps = object["mpps"] as? Double, let cycles = object["worker_cycles_per_packet"] as? Double else {
            throw DataplaneError("the port-floor run failed (status \(run.status)): \(command)\n\(run.stderr.suffix(2000))")
        }
        return Result(mpps: mpps, cyclesPerPacket: cycles, command: command)
    }
}

func round3(_ x: Double) -> Double { (x * 1000).rounded() / 1000 }

/// How much `numerator` grew per unit `denominator` grew, summed over all
/// workers between two counter snapshots (0 when the denominator did not
/// grow): busy cycles per packet, packets per RX burst.
func windowRatio(_ a: [CoreCounters], _ b: [CoreCounters], _ numerator: KeyPath<CoreCounters, UInt64>,
                 per denominator: KeyPath<CoreCounters, UInt64>) -> Double {
    func growth(_ k: KeyPath<CoreCounters, UInt64>) -> Double {
        zip(a, b).reduce(0.0) { $0 + Double($1.1[keyPath: k] &- $1.0[keyPath: k]) }
    }
    let d = growth(denominator)
    return d == 0 ? 0 : growth(numerator) / d
}

/// A heap object allocated on purpose to check the allocation counter.
final class ProbeBox {
    let storage: UnsafeMutableBufferPointer<Int>
    init(size: Int) { storage = .allocate(capacity: size); storage.initialize(repeating: 0) }
    deinit { storage.deallocate() }
}

/// Removes a scratch directory of plain files.
func removeTree(_ dir: String) {
    guard let d = opendir(dir) else { return }
    while let e = readdir(d) {
        let name = withUnsafeBytes(of: e.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        if name != "." && name != ".." { unlink(dir + "/" + name) }
    }
    closedir(d)
    rmdir(dir)
}

/// ESP traffic for `--mode inbound`, sealed once with Sluice's own
/// encapsulation (the interop tests check it against scapy) under the SA the
/// gateway's inbound side is configured with.
enum InboundTraffic {
    /// The key material (hex) of SA number `sa`: 0x5a bytes, the first one
    /// changed for `sa` > 0, so per-CPU SAs each seal under a key of their
    /// own (one key for several SAs would repeat nonces, and the gateway
    /// warns about it).
    static func keyHex(_ aead: String, sa: Int = 0) -> String {
        keyBytes(aead, sa: sa).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }

    static func keyBytes(_ aead: String, sa: Int = 0) -> [UInt8] {
        var bytes = [UInt8](repeating: 0x5a, count: (aead == "aes-gcm-128" ? 16 : 32) + 4)
        bytes[0] ^= UInt8(truncatingIfNeeded: sa)
        bytes[1] ^= UInt8(truncatingIfNeeded: sa >> 8)
        return bytes
    }

    /// Each plaintext frame (Ethernet + IPv4) becomes Ethernet + outer IPv4
    /// 203.0.113.2 → 192.0.2.1 + ESP under the SPI `spi` gives for its index,
    /// sequence numbers from `firstSequence`.
    static func seal(_ frames: [[UInt8]], aead: String, firstSequence: UInt64,
                     spi: (Int) -> UInt32) throws -> [[UInt8]] {
        let algorithm: AEADAlgorithm = aead == "aes-gcm-128" ? .aes128GCM : (aead == "aes-gcm-256" ? .aes256GCM : .chacha20Poly1305)
        // The key of SA 0x2001 + n is `keyBytes(sa: n)`.
        final class Key {
            let key: AEADKey
            init(_ key: consuming AEADKey) { self.key = key }
        }
        var keys: [UInt32: Key] = [:]
        let core = try CryptoCore()
        func sa(_ spi: UInt32) throws -> OutboundSA {
            let key: Key
            if let k = keys[spi] {
                key = k
            } else {
                key = Key(try AEADKey(algorithm, keyMaterial: keyBytes(aead, sa: Int(spi &- 0x2001)), engine: .auto))
                keys[spi] = key
            }
            return OutboundSA(spi: SPI(spi), mode: .tunnel(.ipv4(source: IPv4Address(203, 0, 113, 2),
                                                                 destination: IPv4Address(192, 0, 2, 1), ttl: 64)),
                              key: key.key.unsafeHandle, esn: false)
        }
        var out: [[UInt8]] = []
        for (i, frame) in frames.enumerated() {
            let sa = try sa(spi(i))
            let headroom = 128, inner = frame.count - HeaderSize.ethernet
            var buffer = [UInt8](repeating: 0, count: headroom + frame.count + 256)
            let sealed: [UInt8]? = buffer.withUnsafeMutableBytes { b in
                let start = b.baseAddress! + headroom
                start.copyMemory(from: frame, byteCount: frame.count)
                var view = PacketView(start: start + HeaderSize.ethernet, length: inner,
                                      headroom: headroom, tailroom: b.count - headroom - frame.count)
                guard ESPOutbound.encapsulate(&view, sa: sa, sequence: SequenceNumber(firstSequence + UInt64(i)), core: core) == nil else {
                    return nil
                }
                let ethernet = view.start - HeaderSize.ethernet
                ethernet.copyMemory(from: frame, byteCount: 12)  // the frame's MACs
                ethernet.storeBE16(EtherType.ipv4.rawValue, at: 12)
                return Array(UnsafeRawBufferPointer(start: ethernet, count: view.length + HeaderSize.ethernet))
            }
            guard let sealed else { throw ValidationError("cannot seal the inbound traffic") }
            out.append(sealed)
        }
        return out
    }
}

/// Runs `measure` on one thread pinned to each of `cpus`, all released
/// together, and returns each thread's rate; nil when any measurement could
/// not run. Each thread measures the same number of packets, so the threads
/// overlap for all but the slowest one's last moments.
func rawOnEveryCPU(_ cpus: [Int], _ measure: @escaping @Sendable () throws -> CryptoBench.Measurement?) throws -> [Double]? {
    final class Slots: @unchecked Sendable {
        var rates: [Double?]
        var failure: (any Error)?
        let lock = NSLock()
        init(_ n: Int) { rates = Array(repeating: nil, count: n) }
    }
    let slots = Slots(cpus.count)
    let ready = DispatchGroup(), done = DispatchGroup()
    let start = DispatchSemaphore(value: 0)
    for (i, cpu) in cpus.enumerated() {
        ready.enter(); done.enter()
        let thread = Thread {
            defer { done.leave() }
            let pinned = Result { try pinCallingThread(to: cpu) }
            ready.leave()
            start.wait()
            do {
                try pinned.get()
                let rate = try measure()?.mpps
                slots.lock.withLock { slots.rates[i] = rate }
            } catch {
                slots.lock.withLock { slots.failure = error }
            }
        }
        thread.start()
    }
    ready.wait()
    for _ in cpus { start.signal() }
    done.wait()
    if let failure = slots.failure { throw failure }
    let rates = slots.rates.compactMap { $0 }
    return rates.count == cpus.count ? rates : nil
}

/// The SPI of the ESP that `--mode inbound` feeds to RX queue `queue`: one
/// SA for every queue, or with `--sa-mode per-cpu` the SA of the worker that
/// polls the queue, as a peer with per-CPU SAs (RFC 9611) sends and a NIC
/// that steers ESP by SPI (or `sa allocspi cpu K`'s choice under RSS)
/// delivers it: each inbound SA's packets reach its owner directly.
func inboundSPI(_ o: SluiceBench, queue: Int) -> UInt32 {
    o.saMode == "per-cpu" ? 0x2001 + UInt32(queue) : 0x2001
}

/// The inbound SAs and policy of `--mode inbound` for `--sa-mode`: one SA,
/// whose owner worker opens the packets the others receive (handed over), or
/// with `per-cpu` one SA per worker under one reqid, owned by that worker.
func inboundSAs(_ o: SluiceBench, workerLcores: [UInt32]) -> String {
    func sa(_ spi: UInt32, _ extra: String = "") -> String {
        let key = InboundTraffic.keyHex(o.aead, sa: Int(spi - 0x2001))
        return "sa add spi 0x\(String(spi, radix: 16)) dir in src 203.0.113.2 dst 192.0.2.1 mode tunnel aead \(o.aead) key 0x\(key) replay-window 0\(extra)\n"
    }
    var text = "crypto-engine \(o.engine)\n"
    if o.saMode == "per-cpu" {
        for (q, lcore) in workerLcores.enumerated() { text += sa(inboundSPI(o, queue: q), " reqid 1 cpu \(lcore)") }
        text += "sp add dir in src 198.51.0.0/16 dst 10.0.0.0/16 priority 10 action protect reqid 1\n"
    } else {
        text += sa(inboundSPI(o, queue: 0))
        text += "sp add dir in src 198.51.0.0/16 dst 10.0.0.0/16 priority 10 action protect spi 0x2001\n"
    }
    return text
}

/// The outbound SAs and policy of `--mode outbound` for `--sa-mode`.
func outboundSAs(_ o: SluiceBench, workerLcores: [UInt32]) -> String {
    func sa(_ spi: Int, _ extra: String = "") -> String {
        let key = InboundTraffic.keyHex(o.aead, sa: spi - 0x1001)
        return "sa add spi 0x\(String(spi, radix: 16)) dir out src 192.0.2.1 dst 203.0.113.2 mode tunnel aead \(o.aead) key 0x\(key)\(extra)\n"
    }
    var text = "\ncrypto-engine \(o.engine)\n"
    switch o.saMode {
    case "per-cpu":
        for (i, lcore) in workerLcores.enumerated() { text += sa(0x1001 + i, " reqid 1 cpu \(lcore)") }
        text += "sp add dir out src 10.0.0.0/16 dst 198.51.100.0/24 priority 10 action protect reqid 1\n"
    default:
        text += "shared-sa \(o.saMode)\n" + sa(0x1001)
        text += "sp add dir out src 10.0.0.0/16 dst 198.51.100.0/24 priority 10 action protect spi 0x1001\n"
    }
    return text
}
