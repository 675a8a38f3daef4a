import CShims
import Command
@testable import Control
@testable import Dataplane
import IPsec
import Packet
import Testing

/// Config → IPsec tables: what is installed, and which SA state survives a
/// recompilation (no EAL needed).
@Suite struct IPsecCompilerTests {
    static let key = "0x" + String(repeating: "42", count: 36)
    static let otherKey = "0x" + String(repeating: "43", count: 36)

    /// The inbound SA's key beside outbound `key`: another one (one key both
    /// ways repeats nonces, and the compiler warns).
    static func inboundKey(_ key: String) -> String { "0x99" + key.dropFirst(4) }

    static func config(ttl: Int = 64, key: String = key, inboundPolicy: Bool = true,
                       outboundPolicy: Bool = true, options: String = "") throws -> GatewayConfig {
        let text = """
        port 0 role protected address 10.0.0.1/24
        port 1 role unprotected address 192.0.2.1/24
        sa add spi 0x1001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(key) ttl \(ttl) seq 100\(options)
        sa add spi 0x2001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(inboundKey(key))\(options)
        """ + (outboundPolicy ? "\nsp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect spi 0x1001" : "")
          + (inboundPolicy ? "\nsp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001\n" : "\n")
        return try GatewayConfig.load(text: text, name: "t.conf")
    }

    /// What the SAs' owners do when their replicas apply a change: hand over
    /// the replay windows it moves (`SADCommand.handover`).
    static func handOver(_ t: IPsecTables) {
        for c in t.sad.common where c.kind == .handoverInbound { SADReplica.handOver(c.inbound!, to: c.successor!) }
    }

    /// The next-sequence word of the (only) outbound SA a compilation added.
    static func outboundNext(_ t: IPsecTables) -> UnsafeMutablePointer<UInt64> {
        t.sad.added.compactMap(\.outbound).first!.pointee.next
    }

    /// What goes to the replicas: everything (after a clear) the first time,
    /// nothing for an unchanged configuration, and for a changed SA its old
    /// record out, the new one in, and the protect target moved on every worker.
    @Test func replicaChangesAreTheDifference() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config(), workerLcores: [1, 2]))
        compiler.commit()
        #expect(first.sad.clearFirst)
        #expect(first.sad.added.count == 2 && first.sad.removed.isEmpty)
        #expect(Set(first.sad.common.map(\.kind)) == [.addInbound, .addOutbound] && first.sad.common.count == 2)
        #expect(first.sad.targets.map { $0.map(\.kind) } == [[.setTarget], [.setTarget]])

        let same = try #require(try compiler.compile(Self.config(), workerLcores: [1, 2]))
        compiler.commit()
        #expect(same.sad.isEmpty && same.sad.added.isEmpty && same.sad.removed.isEmpty)

        let ttl = try #require(try compiler.compile(Self.config(ttl: 9), workerLcores: [1, 2]))
        compiler.commit()
        #expect(!ttl.sad.clearFirst && ttl.sad.common.map(\.kind) == [.removeOutbound, .addOutbound], "the inbound SA did not change")
        #expect(ttl.sad.added.count == 1 && ttl.sad.removed.count == 1)
        #expect(ttl.sad.added[0].outbound != nil && ttl.sad.removed[0] === first.sad.added.first { $0.outbound != nil })
        for w in 0..<2 {
            #expect(ttl.sad.targets[w].count == 1 && ttl.sad.targets[w][0].outbound == ttl.sad.added[0].outbound)
        }

        // Without the outbound policy its target is cleared on every worker,
        // once the snapshot without the policy is published (`released`).
        let noOut = try #require(try compiler.compile(Self.config(ttl: 9, outboundPolicy: false), workerLcores: [1, 2]))
        #expect(noOut.sad.targets.allSatisfy { $0.isEmpty })
        #expect(noOut.sad.released.targets.map { $0.map(\.outbound) } == [[nil], [nil]])
    }

    /// Make-before-break: the outbound policy moves from SA 0x1001 to a new
    /// SA 0x1002 and 0x1001 is deleted in the same change. The new target is
    /// set before the snapshot is published; the old target and 0x1001's
    /// record leave the replicas only in the released change, after it, so a
    /// worker still classifying with the old snapshot seals with 0x1001
    /// instead of dropping `no_outbound_sa`. Before, both went in the first change.
    @Test func aPolicyMovedToANewSAReleasesTheOldOneAfterThePublish() throws {
        func config(protect: String, sas: [String]) throws -> GatewayConfig {
            try GatewayConfig.load(text: """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            """ + sas.map { "\nsa add spi \($0) dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(Self.key)" }.joined()
            + "\nsp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect \(protect)\n", name: "t.conf")
        }
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(try config(protect: "spi 0x1001", sas: ["0x1001"]), workerLcores: [1, 2]))
        compiler.commit()
        let old = try #require(first.sad.added.first)
        let moved = try #require(try compiler.compile(try config(protect: "spi 0x1002", sas: ["0x1002"]), workerLcores: [1, 2]))
        compiler.commit()
        let new = try #require(moved.sad.added.first)
        #expect(moved.sad.common.map(\.kind) == [.addOutbound] && moved.sad.removed.isEmpty, "nothing leaves before the publish")
        #expect(moved.sad.targets.map { $0.map(\.outbound) } == [[new.outbound], [new.outbound]])
        let released = moved.sad.released
        #expect(released.common.map(\.kind) == [.removeOutbound] && released.common.first?.outbound == old.outbound)
        #expect(released.removed.count == 1 && released.removed.first === old)
        let oldTarget = try #require(first.sad.targets[0].first?.target)
        #expect(released.targets.map { $0.map(\.target) } == [[oldTarget], [oldTarget]])
        #expect(released.targets.allSatisfy { $0.allSatisfy { $0.outbound == nil } })

        // The freed id, named again later (a reqid no SA has), is set on every worker.
        let back = try #require(try compiler.compile(try config(protect: "reqid 9", sas: ["0x1002"]), workerLcores: [1, 2]))
        compiler.commit()
        #expect(back.sad.targets.map { $0.map(\.target) } == [[oldTarget], [oldTarget]], "reused, set even to no SA")
    }

    /// Protect-target ids stay distinct when freed ones come back: one
    /// policy's target freed (`flush sp`, SAs kept), then two policies with
    /// two targets. Before, the new-id counter started past the ids in use
    /// only, so the freed id was handed out twice, from the free list and as
    /// "new", and one policy's traffic was sealed with the other's SA.
    @Test func freedTargetIDsAreNotHandedOutTwice() throws {
        func config(_ policies: [String]) throws -> GatewayConfig {
            try GatewayConfig.load(text: """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            sa add spi 0x1001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(Self.key)
            sa add spi 0x1002 dir out src 192.0.2.1 dst 192.0.2.3 mode tunnel aead aes-gcm-256 key \(Self.key)
            """ + policies.enumerated().map { i, spi in
                "\nsp add dir out src 10.0.\(i).0/24 dst 10.1.0.0/16 priority 10 action protect spi \(spi)"
            }.joined() + "\n", name: "t.conf")
        }
        let compiler = IPsecCompiler()
        _ = try compiler.compile(try config(["0x1001"]), workerLcores: [1])
        compiler.commit()
        _ = try compiler.compile(try config([]), workerLcores: [1])
        compiler.commit()
        let both = try #require(try compiler.compile(try config(["0x1001", "0x1002"]), workerLcores: [1]))
        compiler.commit()
        let set = both.sad.targets[0].filter { $0.kind == .setTarget }
        #expect(set.count == 2 && Set(set.map(\.target)).count == 2, "\(set.map(\.target))")
        #expect(Set(set.map(\.outbound)).count == 2, "each target its own SA")
    }

    /// The inbound SA's replay window changes hands only through its owner:
    /// `sa update … cpu K` (a new owner of the same window) and a new window
    /// size under the same key (a rebuilt window) make a record that is not
    /// ready until the installed record's owner applied the change. That
    /// owner carries over what its window accepted after the compiler read
    /// it. A second change while a handover is pending is refused. Workers 0
    /// and 1 are two replicas, applied one at a time as workers would.
    /// One inbound SA whose window worker `cpu` (lcore 1 or 2) keeps, for
    /// the handover tests; replicas of two workers that apply changes when
    /// told (one may lag, as a stalled worker would).
    struct Handovers {
        static let lcores: [UInt32] = [1, 2]
        let compiler = IPsecCompiler()
        let replicas = lcores.indices.map { w in
            let r = SADReplica(inboundCapacity: 16, targetCapacity: 4)
            r.worker = w
            return r
        }

        func config(cpu: Int, window: Int = 64, options: String = "", key: String = IPsecCompilerTests.key,
                    policy: Bool = true) throws -> GatewayConfig {
            try GatewayConfig.load(text: """
                port 0 role protected address 10.0.0.1/24
                port 1 role unprotected address 192.0.2.1/24
                sa add spi 0x2001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(key) replay-window \(window) cpu \(cpu)\(options)
                """ + (policy ? "\nsp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001\n" : "\n"),
                name: "move.conf")
        }
        func compile(cpu: Int, window: Int = 64, options: String = "") throws -> IPsecTables? {
            try compiler.compile(config(cpu: cpu, window: window, options: options), workerLcores: Self.lcores)
        }
        func apply(_ t: IPsecTables, on workers: [Int]) {
            for w in workers {
                if t.sad.clearFirst { replicas[w].apply(.clear) }
                for c in t.sad.common + t.sad.targets[w] + t.sad.released.common + t.sad.released.targets[w] { replicas[w].apply(c) }
            }
        }
        func record(_ t: IPsecTables) throws -> SARecordBox { try #require(t.sad.added.first { $0.inbound != nil }) }
    }

    @Test func anInboundWindowIsHandedOverByItsOwner() throws {
        let h = Handovers(), compiler = h.compiler
        let lcores = Handovers.lcores

        let first = try #require(try compiler.compile(h.config(cpu: 1), workerLcores: lcores))
        compiler.commit()
        h.apply(first, on: [0, 1])
        let r1 = try h.record(first)
        #expect(r1.inboundReady && r1.inbound!.pointee.owner == 0, "a new SA's window is its owner's at once")
        _ = r1.inbound!.pointee.window.pointee.update(acceptedSequence: 500)

        // Owner 0 → 1, the same window.
        let move = try #require(try compiler.compile(h.config(cpu: 2), workerLcores: lcores))
        let r2 = try h.record(move)
        #expect(r2.inbound!.pointee.owner == 1 && r2.inbound!.pointee.window == r1.inbound!.pointee.window)
        #expect(move.sad.common.filter { $0.kind == .handoverInbound }.count == 1)
        #expect(!r2.inboundReady)
        h.apply(move, on: [1])  // the new owner first: it must wait
        #expect(!r2.inboundReady, "the new owner has the record, the old one still the window")
        compiler.commit()
        #expect(throws: IPsecConfigError.self, "a second move while the first is pending") {
            try compiler.compile(h.config(cpu: 1), workerLcores: lcores)
        }
        h.apply(move, on: [0])  // the old owner lets go
        #expect(r2.inboundReady)

        // Back to owner 0 with a window of 128 under the same key: rebuilt.
        let rebuild = try #require(try compiler.compile(h.config(cpu: 1, window: 128), workerLcores: lcores))
        let r3 = try h.record(rebuild)
        #expect(r3.inbound!.pointee.window != r1.inbound!.pointee.window && !r3.inboundReady)
        #expect(r3.inbound!.pointee.window.pointee.highestReceived.rawValue == 500, "what the compiler read")
        // The old owner (1) accepts two more before it applies the change.
        _ = r1.inbound!.pointee.window.pointee.update(acceptedSequence: 650)
        _ = r1.inbound!.pointee.window.pointee.update(acceptedSequence: 640)
        h.apply(rebuild, on: [0])
        #expect(!r3.inboundReady)
        h.apply(rebuild, on: [1])
        compiler.commit()
        #expect(r3.inboundReady)
        let window = r3.inbound!.pointee.window.pointee
        #expect(window.highestReceived.rawValue == 650, "carried over at the handover")
        for n: UInt32 in [640, 650, 600] {
            #expect(window.check(n) == .replayed, "\(n) was accepted by the old owner")
        }
        #expect(window.check(651) == .accept(651))
        // A change that keeps owner and window (a new policy) needs no handover.
        let same = try #require(try compiler.compile(h.config(cpu: 1, window: 128), workerLcores: lcores))
        #expect(same.sad.isEmpty)
    }

    /// More SAs than the replicas hold is a configuration error, not a silent omission.
    /// An inbound SA a hard expiry took out and put back under its key
    /// while its owner had not taken the removal yet (stalled): the new
    /// record waits for that owner's handover as for an installed one, and
    /// gets what the owner accepted meanwhile.
    @Test func anExpiredInboundSAPutBackIsHandedOverByItsOwner() throws {
        let h = Handovers()
        let first = try #require(try h.compile(cpu: 1))
        h.compiler.commit()
        h.apply(first, on: [0, 1])
        let r1 = try h.record(first)
        _ = r1.inbound!.pointee.window.pointee.update(acceptedSequence: 500)

        #expect(h.compiler.expire(spi: 0x2001, direction: .inbound).count == 1)
        let out = try #require(try h.compile(cpu: 1))
        h.compiler.commit()
        #expect(out.sad.added.isEmpty && out.sad.removed.count == 1)
        h.apply(out, on: [1])  // owner 0 lags: it still has the record

        // Put back with a window of 128: rebuilt under the same key.
        let back = try #require(try h.compile(cpu: 1, window: 128))
        let r2 = try h.record(back)
        #expect(!r2.inboundReady && back.sad.common.filter { $0.kind == .handoverInbound }.count == 1)
        #expect(back.sad.removed.contains { $0 === r1 }, "the gateway keeps the old record until the change is taken")
        h.compiler.commit()
        _ = r1.inbound!.pointee.window.pointee.update(acceptedSequence: 520)  // owner 0, before it catches up
        h.apply(back, on: [1])
        #expect(!r2.inboundReady, "only the old record's owner hands the window over")
        h.apply(out, on: [0])
        h.apply(back, on: [0])
        #expect(r2.inboundReady)
        let window = r2.inbound!.pointee.window.pointee
        #expect(window.check(520) == .replayed && window.check(500) == .replayed && window.check(521) == .accept(521))
        // Put back, the retired record is forgotten: uninstalled by its policy
        // going and installed again, the SA is not handed over from it.
        _ = try #require(try h.compiler.compile(h.config(cpu: 1, window: 128, policy: false), workerLcores: Handovers.lcores))
        h.compiler.commit()
        let reinstalled = try #require(try h.compile(cpu: 1, window: 128))
        #expect(!reinstalled.sad.common.contains { $0.kind == .handoverInbound }, "no handover from the retired record")
        h.compiler.commit()

        // Taken out again and put back with the same window and owner: the
        // same worker removes and adds in order, nothing to hand over.
        #expect(h.compiler.expire(spi: 0x2001, direction: .inbound).count == 1)
        let out2 = try #require(try h.compile(cpu: 1, window: 128))
        h.compiler.commit()
        h.apply(out2, on: [0, 1])
        let back2 = try #require(try h.compile(cpu: 1, window: 128, options: " lifetime packets soft 1000 hard 2000"))
        #expect(try h.record(back2).inboundReady && !back2.sad.common.contains { $0.kind == .handoverInbound })
    }

    /// An inbound SA the configuration keeps but no inbound policy names is
    /// out of the data path (fail closed); its window waits for it. Before,
    /// `flush sp` and the policies again restarted every window at the SA's
    /// `seq`, and what had been received was accepted again.
    @Test func anInboundSAWithoutItsPolicyKeepsItsWindow() throws {
        let h = Handovers()
        func compile(_ config: GatewayConfig) throws -> IPsecTables {
            let t = try #require(try h.compiler.compile(config, workerLcores: Handovers.lcores))
            h.compiler.commit()
            h.apply(t, on: [0, 1])
            return t
        }
        let r1 = try h.record(compile(h.config(cpu: 1)))
        _ = r1.inbound!.pointee.window.pointee.update(acceptedSequence: 500)
        let out = try compile(h.config(cpu: 1, policy: false))
        #expect(out.sad.added.isEmpty && out.sad.removed.count == 1, "not installed without a policy")
        let back = try h.record(compile(h.config(cpu: 1)))
        #expect(back.inboundReady && back.inbound!.pointee.window == r1.inbound!.pointee.window, "the same window")
        #expect(back.inbound!.pointee.window.pointee.check(500) == .replayed)

        // A new key while it waits: a window of its own.
        _ = try compile(h.config(cpu: 1, policy: false))
        let rekeyed = try h.record(compile(h.config(cpu: 1, key: IPsecCompilerTests.otherKey)))
        #expect(rekeyed.inbound!.pointee.window != r1.inbound!.pointee.window)
        #expect(rekeyed.inbound!.pointee.window.pointee.check(500) == .accept(500))
    }

    @Test func moreSAsThanTheReplicasHoldAreRefused() throws {
        let compiler = IPsecCompiler()
        compiler.saCapacity = 0
        #expect(throws: IPsecConfigError.self) { try compiler.compile(Self.config()) }
        compiler.saCapacity = 1
        #expect(try compiler.compile(Self.config()) != nil)
    }

    @Test func outboundSequenceSurvivesANonCryptoChangeButNotANewKey() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 100)
        Self.outboundNext(first).pointee = 500  // as if 400 packets had been sent

        // A new outer TTL: same key, so the sequence numbers (the GCM IVs) go on.
        _ = try compiler.compile(Self.config(ttl: 32))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 500)

        // A new key starts from the configured seq.
        _ = try compiler.compile(Self.config(ttl: 32, key: Self.otherKey))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 100)
    }

    /// A new crypto engine or ESN setting under the same key: the key is
    /// expanded again, but the outbound SA's numbers go on through the very
    /// same counter (workers still on the old record take from it until
    /// the change reaches them, so no GCM nonce is handed out twice), and
    /// the inbound SA's window starts from the highest number received.
    /// Before, both restarted from the configured seq. A new key does.
    @Test func aNewEngineOrESNUnderTheSameKeyKeepsTheNumbers() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        let counter = Self.outboundNext(first)
        counter.pointee = 500  // as if 400 packets had been sent
        let window = try #require(first.sad.added.compactMap(\.inbound).first).pointee.window
        try window.pointee.reset(highestReceived: 900)
        var previous = first
        for options in [" crypto-engine sodium", " crypto-engine sodium esn", " esn", ""] {
            let next = try #require(try compiler.compile(Self.config(options: options)))
            compiler.commit()
            Self.handOver(next)
            #expect(next.sad.added.count == 2, "\(options): both SAs re-keyed for the new setting")
            #expect(Self.outboundNext(next) == counter, "\(options): the same sequence counter")
            #expect(compiler.nextSequence(spi: 0x1001) == 500, "\(options)")
            let opened = try #require(next.sad.added.compactMap(\.inbound).first).pointee.window.pointee
            #expect(opened.highestReceived.rawValue == 900 && opened.esn == options.contains("esn"), "\(options)")
            previous = next
        }
        _ = previous
        // A new key starts from the configured seq, and a fresh window.
        let rekeyed = try #require(try compiler.compile(Self.config(key: Self.otherKey)))
        compiler.commit()
        #expect(!rekeyed.sad.common.contains { $0.kind == .handoverInbound }, "a new key's window is ready at once")
        Self.handOver(rekeyed)
        #expect(Self.outboundNext(rekeyed) != counter && compiler.nextSequence(spi: 0x1001) == 100)
        #expect(try #require(rekeyed.sad.added.compactMap(\.inbound).first).pointee.window.pointee.highestReceived.rawValue == 0)
    }

    /// A global `crypto-engine` change re-keys the SAs that follow it (before:
    /// they kept the engine they were installed with), continuing their
    /// numbers under the same key; `auto` spelled out as the engine it picks
    /// changes nothing.
    @Test func aGlobalEngineChangeRekeysTheSAsThatFollowIt() throws {
        func config(_ global: String, perSA: String = "") throws -> GatewayConfig {
            let base = try Self.config(options: perSA)
            return try GatewayConfig.load(text: (global.isEmpty ? "" : "crypto-engine \(global)\n") + base.configText, name: "g.conf")
        }
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(config("")))
        compiler.commit()
        let counter = Self.outboundNext(first)
        counter.pointee = 700
        #expect(first.sad.added.count == 2)
        let sodium = try #require(try compiler.compile(config("sodium")))
        compiler.commit()
        Self.handOver(sodium)
        #expect(sodium.sad.added.count == 2, "both SAs re-keyed for the global engine")
        #expect(compiler.nextSequence(spi: 0x1001) == 700 && Self.outboundNext(sodium) == counter, "the same counter")
        #expect(compiler.installedInbound(spi: 0x2001)?.state.key.engine == .sodium)
        // An SA naming its own engine does not follow the global one.
        let pinned = try #require(try compiler.compile(config("sodium", perSA: " crypto-engine sodium")))
        compiler.commit()
        Self.handOver(pinned)
        #expect(pinned.sad.added.count == 2, "the configuration text of both SAs changed")
        let back = try #require(try compiler.compile(config("auto", perSA: " crypto-engine sodium")))
        compiler.commit()
        #expect(back.sad.isEmpty, "pinned to sodium: a global change leaves them as they are")
    }

    /// A packet lifetime past the end of the 64-bit sequence space is no
    /// limit at all (before: first + hard − 1 wrapped to a small number, and
    /// the SA refused every packet without an EXPIRE).
    @Test func aHugePacketLifetimeDoesNotWrap() throws {
        let text = """
        port 0 role protected address 10.0.0.1/24
        port 1 role unprotected address 192.0.2.1/24
        sa add spi 0x1001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(Self.key) esn seq 2 lifetime packets soft 18446744073709551614 hard 18446744073709551615
        sp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect spi 0x1001
        """
        let tables = try #require(try IPsecCompiler().compile(try GatewayConfig.load(text: text, name: "t.conf")))
        let record = try #require(tables.sad.added.compactMap(\.outbound).first).pointee
        #expect(record.limit == UInt64.max, "limit \(record.limit)")
        // The soft limit's packet is the space's very last number (2 + 2^64 − 3).
        #expect(record.life.softSequence == UInt64.max && !record.life.packetLimited)
    }

    /// A hard packet limit lowered (same key: the SA goes on from its
    /// numbers) to less than the SA has already sent: no packet will cross
    /// it, so no worker reports it; the control thread retires the SA once
    /// it has stood past its limit for `usedUpGrace` seconds, reason packets.
    /// An SA within its limit is left alone.
    @Test func aLimitLoweredBelowUsageExpiresTheSA() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config(options: " lifetime packets hard 1000")))
        compiler.commit()
        Self.outboundNext(first).pointee = 100 + 800  // 800 packets sent from seq 100
        #expect(compiler.checkTimes(now: 10).isEmpty && compiler.checkTimes(now: 20).isEmpty, "within its limit")

        _ = try #require(try compiler.compile(Self.config(options: " lifetime packets hard 500")))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 900, "the same key goes on from its numbers")
        #expect(compiler.checkTimes(now: 30).isEmpty, "not before the grace period")
        let expiries = compiler.checkTimes(now: 30 + IPsecCompiler.usedUpGrace)
        #expect(expiries.map(\.description) == ["event: expire hard dir=out spi=0x00001001 reason=packets"], "\(expiries)")
        let out = try #require(try compiler.compile(Self.config(options: " lifetime packets hard 500")))
        compiler.commit()
        #expect(out.sad.removed.count == 1 && compiler.nextSequence(spi: 0x1001) == nil)
        #expect(compiler.checkTimes(now: 40).isEmpty, "reported once")
    }

    /// The same for a soft limit lowered below what the SA carried: the
    /// control thread raises EXPIRE(soft) once the SA has stood past it for
    /// `usedUpGrace`, once, and the SA goes on. A soft limit a worker
    /// reported itself (`noteSoftExpiry`) is not raised again.
    @Test func aSoftLimitLoweredBelowUsageIsReportedOnce() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config(options: " lifetime packets soft 1000 hard 5000")))
        compiler.commit()
        Self.outboundNext(first).pointee = 100 + 800
        #expect(compiler.checkTimes(now: 10).isEmpty && compiler.checkTimes(now: 20).isEmpty, "within its limit")

        let lowered = try #require(try compiler.compile(Self.config(options: " lifetime packets soft 500 hard 5000")))
        compiler.commit()
        #expect(compiler.checkTimes(now: 30).isEmpty, "not before the grace period")
        let expiries = compiler.checkTimes(now: 30 + IPsecCompiler.usedUpGrace)
        #expect(expiries.map(\.description) == ["event: expire soft dir=out spi=0x00001001 reason=packets"], "\(expiries)")
        #expect(compiler.checkTimes(now: 40).isEmpty, "reported once")
        #expect(compiler.nextSequence(spi: 0x1001) == 900 && compiler.expiredSAs.isEmpty, "the SA goes on")

        // Inbound: a worker crossed the limit and said so.
        let inbound = try #require(lowered.sad.added.first { $0.inbound != nil })
        inbound.inbound!.pointee.life.counters.pointee.packets = 600
        compiler.noteSoftExpiry(token: inbound.lifeToken, reason: Int32(SL_EXPIRE_PACKETS))
        #expect(compiler.checkTimes(now: 50).isEmpty && compiler.checkTimes(now: 60).isEmpty, "reported by the worker")
    }

    /// An EXPIRE can wait in the ring while a change replaces the record it
    /// names (the control loop commits a change before it drains events).
    /// It still counts for its SA when the new record counts in the same
    /// lifetime (same key): a soft one is not raised again by the control
    /// thread, a hard one retires the SA at once, and the control thread
    /// does not raise a second one. Before, the stale token matched nothing:
    /// both were reported twice.
    @Test func anEventAboutAReplacedRecordCountsForItsSA() throws {
        func config(window: Int) throws -> GatewayConfig {
            try GatewayConfig.load(text: """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            sa add spi 0x2001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(Self.key) replay-window \(window) lifetime packets soft 500 hard 1000
            sp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001
            """, name: "t.conf")
        }
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(try config(window: 64)))
        compiler.commit()
        let r1 = try #require(first.sad.added.first)
        r1.inbound!.pointee.life.counters.pointee.packets = 500  // the worker crossed the soft limit…
        let second = try #require(try compiler.compile(try config(window: 128)))
        compiler.commit()  // …and the window grew before its event was drained
        Self.handOver(second)
        let r2 = try #require(second.sad.added.first)
        #expect(r2.lifeToken != r1.lifeToken && r2.inbound!.pointee.life.counters.pointee.packets == 500)
        compiler.noteSoftExpiry(token: r1.lifeToken, reason: Int32(SL_EXPIRE_PACKETS))
        #expect(compiler.checkTimes(now: 10).isEmpty && compiler.checkTimes(now: 20).isEmpty, "the worker's soft EXPIRE counted")

        // The same for the hard limit: crossed under r2, drained after a third record.
        r2.inbound!.pointee.life.counters.pointee.packets = 1000
        let third = try #require(try compiler.compile(try config(window: 256)))
        compiler.commit()
        Self.handOver(third)
        #expect(compiler.expire(spi: 0x2001, token: r2.lifeToken, direction: .inbound).count == 1, "retired at once")
        #expect(compiler.checkTimes(now: 30).isEmpty && compiler.checkTimes(now: 40).isEmpty, "no second EXPIRE(hard)")
        #expect(compiler.expiredSAs.count == 1)
    }

    /// An SA rebuilt under the same key (ESN switched on, a larger replay
    /// window) is the same SA to its lifetime: inbound its packet count goes
    /// on in the same counters, and in both directions `seconds` counts from
    /// when the key was installed, not from the rebuild. Before, the rebuilt
    /// inbound state counted from 0 and both restarted their time limits, so
    /// changing a setting renewed an SA's lifetime.
    @Test func anSARebuiltUnderItsKeyKeepsItsLifetime() throws {
        func config(esn: Bool, window: Int) throws -> GatewayConfig {
            let esn = esn ? " esn" : ""
            return try GatewayConfig.load(text: """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            sa add spi 0x1001 dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(Self.key) seq 100\(esn) lifetime seconds hard 100
            sa add spi 0x2001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(Self.key) replay-window \(window)\(esn) lifetime packets hard 1000 seconds hard 100
            sp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect spi 0x1001
            sp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001
            """, name: "t.conf")
        }
        func inbound(_ t: IPsecTables) throws -> UnsafeMutablePointer<InboundRecord> {
            try #require(t.sad.added.compactMap(\.inbound).first)
        }
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(try config(esn: false, window: 64)))
        compiler.commit()
        #expect(compiler.checkTimes(now: 0).isEmpty)
        try inbound(first).pointee.life.counters.pointee.packets = 800
        Self.outboundNext(first).pointee = 100 + 300

        let rebuilt = try #require(try compiler.compile(try config(esn: true, window: 256)))
        compiler.commit()
        Self.handOver(rebuilt)
        let record = try inbound(rebuilt)
        #expect(record.pointee.window != (try inbound(first)).pointee.window, "a new window")
        #expect(record.pointee.life.counters.pointee.packets == 800, "the count goes on")
        #expect(compiler.nextSequence(spi: 0x1001) == 400)
        #expect(compiler.checkTimes(now: 50).isEmpty)
        let expiries = compiler.checkTimes(now: 100).map(\.description).sorted()
        #expect(expiries == ["event: expire hard dir=in spi=0x00002001 reason=seconds",
                             "event: expire hard dir=out spi=0x00001001 reason=seconds"], "\(expiries)")
    }

    /// A worker's EXPIRE event names the token of the record that reached
    /// its limit: of two inbound SAs sharing an SPI (told apart by
    /// destination) only that record's SA is retired, and an event about a
    /// record a later change replaced (a raised limit) retires nothing.
    /// Before, events named the SPI alone and retired every SA with it.
    @Test func anExpiryRetiresOnlyTheRecordThatReachedItsLimit() throws {
        func config(hard: Int) throws -> GatewayConfig {
            try GatewayConfig.load(text: """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            port 1 address 198.51.100.1/24
            sa add spi 0x3001 dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(Self.key) lifetime packets hard \(hard)
            sa add spi 0x3001 dir in src 198.51.100.2 dst 198.51.100.1 mode tunnel aead aes-gcm-256 key \(Self.key)
            sp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x3001
            """, name: "t.conf")
        }
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(try config(hard: 100)))
        compiler.commit()
        func token(_ tables: IPsecTables, dst: String) throws -> UInt32 {
            let box = try #require(tables.sad.added.first { $0.inbound?.pointee.sa.destination == RawIPAddress(IPAddress(dst)!) })
            return box.lifeToken
        }
        let limited = try token(first, dst: "192.0.2.1"), other = try token(first, dst: "198.51.100.1")
        #expect(limited != other && limited != 0)

        // The limit raised: the record is replaced, and the old one's event is stale.
        let raised = try #require(try compiler.compile(try config(hard: 200)))
        compiler.commit()
        let current = try token(raised, dst: "192.0.2.1")
        #expect(current != limited)
        #expect(compiler.expire(spi: 0x3001, token: limited, direction: .inbound).isEmpty, "a stale event")
        // The current record's event: that SA only.
        let retired = compiler.expire(spi: 0x3001, token: current, direction: .inbound)
        #expect(retired.map(\.destination) == [IPAddress("192.0.2.1")!], "\(retired)")
        let out = try #require(try compiler.compile(try config(hard: 200)))
        compiler.commit()
        #expect(out.sad.removed.count == 1 && out.sad.added.isEmpty)
    }

    /// An SA a hard lifetime took out and then put back under the same key
    /// (another limit, say) goes on from its sequence numbers: restarting
    /// them would reuse GCM nonces. A compile that is never committed does
    /// not put an expired SA back. A new key starts afresh.
    @Test func expiredSAPutBackUnderItsKeyKeepsItsSequence() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        Self.outboundNext(first).pointee = 1_100  // as if 1,000 packets had been sent
        #expect(compiler.expire(spi: 0x1001, direction: .outbound).count == 1)
        let out = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        #expect(out.sad.added.isEmpty && out.sad.removed.count == 1 && compiler.nextSequence(spi: 0x1001) == nil)

        // A change that is never published leaves it expired.
        _ = try compiler.compile(Self.config(ttl: 9))
        let again = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        #expect(again.sad.added.isEmpty && compiler.nextSequence(spi: 0x1001) == nil, "still expired")

        // Put back with another outer TTL, same key: it goes on from 1,100.
        let back = try #require(try compiler.compile(Self.config(ttl: 9)))
        compiler.commit()
        #expect(back.sad.added.count == 1 && compiler.nextSequence(spi: 0x1001) == 1_100)
        #expect(Self.outboundNext(back).pointee == 1_100)

        // Expired again, then put back under a new key: from the configured seq.
        compiler.expire(spi: 0x1001, direction: .outbound)
        _ = try compiler.compile(Self.config(ttl: 9))
        compiler.commit()
        _ = try compiler.compile(Self.config(ttl: 9, key: Self.otherKey))
        compiler.commit()
        #expect(compiler.nextSequence(spi: 0x1001) == 100)
    }

    /// A configuration emptied (`flush sp`, `flush sa`) forgets every
    /// expired SA and its kept state with it, as deleting each would: the
    /// same SA added again afterwards is installed afresh (from its
    /// configured seq), not left out of the data path as still expired.
    @Test func anEmptiedConfigurationForgetsExpiredSAs() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        Self.outboundNext(first).pointee = 1_100
        #expect(compiler.expire(spi: 0x1001, direction: .outbound).count == 1)
        #expect(compiler.expire(spi: 0x2001, direction: .inbound).count == 1)
        _ = try compiler.compile(Self.config())
        compiler.commit()
        #expect(compiler.expiredSAs.count == 2)

        #expect(try compiler.compile(GatewayConfig.load(text: "port 0 role protected address 10.0.0.1/24\n", name: "e.conf")) == nil)
        compiler.commit()
        #expect(compiler.expiredSAs.isEmpty)
        let back = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        #expect(back.sad.added.count == 2 && back.inboundSACount == 1)
        #expect(compiler.nextSequence(spi: 0x1001) == 100)
    }

    @Test func uncommittedCompilationLeavesTheStateInUse() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        Self.outboundNext(first).pointee = 700
        _ = try compiler.compile(Self.config(key: Self.otherKey))  // never published
        #expect(compiler.nextSequence(spi: 0x1001) == 700)
    }

    /// Two SAs under one key put the same nonces on the wire (each sender
    /// counts its own sequence numbers): two outbound SAs, or an outbound SA
    /// and an inbound one (the peer seals with that key too). Installed as
    /// configured, and named in a warning, by a full compilation and by a
    /// change alike; SAs under keys of their own are not named.
    @Test func sasSharingAKeyAreNamed() throws {
        let third = "0x" + String(repeating: "44", count: 36), fourth = "0x" + String(repeating: "45", count: 36)
        func sa(_ spi: String, _ key: String, dir: String = "out", verb: String = "sa add") -> String {
            dir == "out" ? "\(verb) spi \(spi) dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-256 key \(key)"
                         : "\(verb) spi \(spi) dir in src 192.0.2.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key \(key)"
        }
        var config = try GatewayConfig.load(text: """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            \(sa("0x1001", Self.key))
            \(sa("0x1002", Self.otherKey))
            \(sa("0x2001", third, dir: "in"))
            sp add dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect spi 0x1001
            sp add dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect spi 0x2001
            """, name: "keys.conf")
        let compiler = IPsecCompiler()
        func change(_ line: String) throws -> [String] {
            try config.apply(CommandParser.parseLine(Substring(line), location: .init(file: "k", line: 1, column: 1))!)
            _ = try #require(try compiler.compile(config))
            #expect(compiler.lastCompileWasIncremental, "\(line)")
            compiler.commit()
            return compiler.warnings
        }
        _ = try compiler.compile(config)
        #expect(compiler.warnings.isEmpty, "\(compiler.warnings)")
        compiler.commit()

        var warnings = try change(sa("0x1003", Self.key))
        #expect(warnings.count == 1 && warnings[0].hasPrefix("SAs spi 0x00001001 (out), spi 0x00001003 (out) have the same key"),
                "\(warnings)")
        warnings = try change(sa("0x1003", Self.otherKey, verb: "sa update"))
        #expect(warnings.count == 1 && warnings[0].hasPrefix("SAs spi 0x00001002 (out), spi 0x00001003 (out) have"), "\(warnings)")
        #expect(try change("sa del spi 0x1002").isEmpty)
        #expect(try change(sa("0x1004", fourth)).isEmpty)
        // One key both ways: the peer's packets and ours carry the same nonces.
        warnings = try change(sa("0x2001", fourth, dir: "in", verb: "sa update"))
        #expect(warnings.count == 1 && warnings[0].hasPrefix("SAs spi 0x00001004 (out), spi 0x00002001 (in) have"), "\(warnings)")
        // An inbound SA no policy names is not installed (a warning of its own): not named.
        warnings = try change(sa("0x2002", Self.key, dir: "in"))
        #expect(warnings.count == 1 && warnings[0].hasPrefix("inbound SA spi 0x00002002 is not installed"), "\(warnings)")

        // A full compilation of the same configuration names every shared key.
        warnings = try change(sa("0x1005", Self.key))
        #expect(warnings.count == 1 && warnings[0].hasPrefix("SAs spi 0x00001001 (out), spi 0x00001005 (out) have"), "\(warnings)")
        let fresh = IPsecCompiler()
        _ = try fresh.compile(config)
        let shared = fresh.warnings.filter { $0.contains("have the same key") }
        #expect(shared.count == 2 && shared[0].hasPrefix("SAs spi 0x00001001 (out), spi 0x00001005 (out) have")
                && shared[1].hasPrefix("SAs spi 0x00001004 (out), spi 0x00002001 (in) have"), "\(fresh.warnings)")
        fresh.commit()
        #expect(fresh.committedSAsByKey == compiler.committedSAsByKey)
        #expect(compiler.committedSAsByKey.values.map(\.count).sorted() == [1, 2, 2], "0x1001+0x1005, 0x1003, 0x1004+0x2001")
        // A compilation never committed (a refused publish) leaves the index as it was.
        let committed = compiler.committedSAsByKey
        try config.apply(CommandParser.parseLine(Substring("sa del spi 0x1005"), location: .init(file: "k", line: 1, column: 1))!)
        _ = try compiler.compile(config)
        #expect(compiler.committedSAsByKey == committed)
    }

    /// An SA moved to another source keeps no path MTU learnt on the old
    /// path, but only once that change is committed: a change compiled and
    /// then refused (never published) leaves the SA in use as it was.
    @Test func aPathMovesOnlyWithACommittedChange() throws {
        let compiler = IPsecCompiler()
        let first = try #require(try compiler.compile(Self.config()))
        compiler.commit()
        Self.outboundNext(first).pointee = 200
        let id = SAIdentifier(spi: SecurityParameterIndex(0x1001), destination: .v4(IPv4Address(192, 0, 2, 2)))
        #expect(compiler.learnPathMTU(spi: 0x1001, source: .v4(IPv4Address(192, 0, 2, 1)), destination: .v4(IPv4Address(192, 0, 2, 2)),
                                      udp: false, sequence: 150, mtu: 1400, now: 10) == .learnt(id, mtu: 1400, changed: true))
        let moved = try GatewayConfig.load(text: try Self.config().configText.replacingOccurrences(
            of: "sa add spi 0x00001001 dir out src 192.0.2.1", with: "sa add spi 0x00001001 dir out src 192.0.2.3"), name: "moved.conf")
        #expect(moved.sas[id]?.source == .v4(IPv4Address(192, 0, 2, 3)), "\(moved.configText)")
        _ = try compiler.compile(moved)  // refused: never committed
        #expect(compiler.pathMTU(of: id) == 1400)
        _ = try compiler.compile(moved)
        compiler.commit()
        #expect(compiler.pathMTU(of: id) == nil)
    }

    @Test func inboundSAWithoutAPolicyIsNotInstalled() throws {
        let compiler = IPsecCompiler()
        let tables = try #require(try compiler.compile(Self.config(inboundPolicy: false)))
        #expect(tables.inboundSACount == 0)
        #expect(compiler.warnings.count == 1)
        #expect(compiler.warnings.first?.contains("0x00002001") == true, "\(compiler.warnings)")
        let withPolicy = try #require(try compiler.compile(Self.config()))
        #expect(withPolicy.inboundSACount == 1)
        #expect(compiler.warnings.isEmpty)
        // Nothing left at all: no warning from an earlier compile stays behind.
        _ = try compiler.compile(Self.config(inboundPolicy: false))
        #expect(compiler.warnings.count == 1)
        #expect(try compiler.compile(GatewayConfig.load(text: "port 0 role protected address 10.0.0.1/24\n", name: "e.conf")) == nil)
        #expect(compiler.warnings.isEmpty && compiler.notes.isEmpty)
    }

    /// No packet carries an interface id yet: a policy with `if-id` matches
    /// nothing, says so, and names no SA (its inbound SA is not installed:
    /// it would decrypt traffic only to drop every packet).
    @Test func aPolicyWithAnInterfaceIDNamesNoSA() throws {
        let compiler = IPsecCompiler()
        let text = try Self.config(inboundPolicy: false).configText
            + "sp add id 9 dir in src 10.1.0.0/16 dst 10.0.0.0/24 if-id 3 priority 10 action protect spi 0x2001\n"
        let tables = try #require(try compiler.compile(GatewayConfig.load(text: text, name: "if.conf")))
        #expect(tables.inboundSACount == 0)
        #expect(compiler.warnings.count == 2 && compiler.warnings[0].hasPrefix("policy id 9 has if-id 3")
                && compiler.warnings[1].hasPrefix("inbound SA spi 0x00002001 is not installed"), "\(compiler.warnings)")
    }

    @Test func udpPortsAreESPOnlyWhereAnSAUsesThem() throws {
        let compiler = IPsecCompiler()
        let plain = try #require(try compiler.compile(Self.config()))
        #expect(!plain.natPorts.contains(4500))
    }

    /// `spd driver auto` follows a rule set that grows one policy at a time
    /// (each change small enough to patch): past the linear driver's size
    /// it rebuilds with the driver `auto` now picks, instead of patching the
    /// linear classifier forever.
    @Test func autoDriverFollowsARuleSetGrowingByPatches() throws {
        let compiler = IPsecCompiler()
        var config = try Self.config()
        var drivers: [String] = []
        for i in 0..<40 {
            let line = "sp add dir out src 10.\(i).0.0/16 dst 10.1.\(i).0/24 proto udp dport \(1000 + i) priority \(i + 20) action bypass"
            try config.apply(CommandParser.parseLine(Substring(line), location: SourceLocation(file: "t", line: i + 1, column: 1))!)
            _ = try compiler.compile(config)
            compiler.commit()
            drivers.append(compiler.notes.first ?? "")
        }
        #expect(drivers.first?.contains("driver linear") == true, "\(drivers.first ?? "")")
        #expect(drivers.last?.contains("driver cut-tree") == true, "\(drivers.last ?? "")")
        #expect(drivers.dropLast(10).contains { $0.contains("driver linear, 1 change patched in") }, "patched while linear fits")
    }
}

/// Incremental compilation (only the SAs a configuration's journal says
/// changed) against a full one: after every random change, the replicas a
/// compiler fed change by change hold what a fresh compiler's would.
/// (150 accepted random changes per seed.)
@Suite struct IncrementalCompilationTests {
    static let key = "0x" + String(repeating: "24", count: 20)
    static let otherKey = "0x" + String(repeating: "25", count: 20)

    /// What a set of replicas (one per worker) holds, by SPI and policy.
    struct Installed: Equatable, CustomStringConvertible {
        var inbound: Set<String> = []
        var outboundRecords: Set<String> = []
        /// Per worker: policy id → SPI of the SA its target resolves to ("-" for none).
        var targets: [[UInt32: String]] = []
        var description: String { "inbound \(inbound.sorted()) outbound \(outboundRecords.sorted()) targets \(targets)" }
    }

    static func describe(_ replicas: [SADReplica], _ tables: IPsecTables) -> Installed {
        var out = Installed()
        func outbound(_ r: UnsafeMutablePointer<OutboundRecord>) -> String {
            "\(r.pointee.sa.spi.rawValue)/limit \(r.pointee.limit)/owner \(r.pointee.owner)"
        }
        for i in 0...replicas[0].slotMask {
            if let r = replicas[0].slots[i].record {
                let sa = r.pointee.sa
                out.inbound.insert("\(sa.spi.rawValue) \(sa.destination.map { "\($0)" } ?? "*") \(sa.source.map { "\($0)" } ?? "*") owner \(r.pointee.owner) selectors \(sa.selectors.count)")
            }
            if let r = replicas[0].outSlots[i] { out.outboundRecords.insert(outbound(r)) }
        }
        for replica in replicas {
            var map: [UInt32: String] = [:]
            for v in tables.outSPD.verdicts where v.action == .protect {
                map[v.policyID] = v.sa >= 0 ? replica.targets[Int(v.sa)].map(outbound) ?? "-" : "-"
            }
            out.targets.append(map)
        }
        return out
    }

    @Test(arguments: TestSeeds.list(fixed: [1, 0x1_2C_0417]))
    func replicasMatchAFullCompilation(seed: UInt64) throws {
        var rng = SplitMix64(seed: seed)
        let lcores: [UInt32] = [1, 2]
        var config = try GatewayConfig.load(text: """
            port 0 role protected address 10.0.0.1/24
            port 1 role unprotected address 192.0.2.1/24
            sa add spi 0x900 dir out src 192.0.2.1 dst 192.0.2.9 mode tunnel aead aes-gcm-128 key \(Self.key)
            sp add id 1 dir out src 10.0.0.0/24 dst 10.1.0.0/16 priority 10 action protect reqid 5
            sp add id 2 dir out src 10.0.0.0/24 dst 10.2.0.0/16 priority 10 action protect spi 0x900
            sp add id 3 dir in src 10.1.0.0/16 dst 10.0.0.0/24 priority 10 action protect reqid 77
            """, name: "inc.conf")
        let compiler = IPsecCompiler()
        let replicas = lcores.indices.map { w in
            let r = SADReplica(inboundCapacity: 256, targetCapacity: 64)
            r.worker = w
            return r
        }
        var applied = 0, incremental = 0
        // Until 150 changes were accepted (the configuration refuses many random ones).
        var step = -1
        while applied < 150 && step < 5000 {
            step += 1
            // One random change; one the configuration refuses leaves it as it was.
            let spi = 0x100 + rng.next() % 24
            let line: String
            switch rng.next() % 9 {
            case 0, 1:
                let cpu = [" cpu 1", " cpu 2", "", " cpu 3"][Int(rng.next() % 4)]
                let key = rng.next() % 2 == 0 ? Self.key : Self.otherKey
                line = "sa add spi 0x\(String(spi, radix: 16)) dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-128 key \(key) reqid 5\(cpu)"
            case 2, 3:
                let addresses = ["", " src 192.0.2.2 dst 192.0.2.1", " src 192.0.2.3 dst 192.0.2.1"][Int(rng.next() % 3)]
                let mode = addresses.isEmpty ? "transport" : "tunnel"
                line = "sa add spi 0x\(String(spi + 0x1000, radix: 16)) dir in\(addresses) mode \(mode) aead aes-gcm-128 key \(Self.key) reqid 77"
            case 4:
                line = "sa del spi 0x\(String(spi, radix: 16))"
            case 5:
                line = "sa del spi 0x\(String(spi + 0x1000, radix: 16))"
            case 6:
                line = "sa update spi 0x900 dir out src 192.0.2.1 dst 192.0.2.9 mode tunnel aead aes-gcm-128 key \(Self.key) ttl \(1 + rng.next() % 200)"
            case 7:
                line = rng.next() % 2 == 0 ? "sp add id 4 dir in src 10.3.0.0/16 dst 10.0.0.0/24 priority 5 action protect reqid 77"
                                           : "sp del id 4"
            default:
                line = "sa update spi 0x\(String(spi, radix: 16)) dir out src 192.0.2.1 dst 192.0.2.2 mode tunnel aead aes-gcm-128 key \(Self.key) reqid 5 lifetime packets soft 10 hard \(20 + rng.next() % 5)"
            }
            var next = config
            do {
                try next.apply(CommandParser.parseLine(Substring(line), location: .init(file: "inc", line: step + 1, column: 1))!)
            } catch {
                continue
            }
            config = next
            applied += 1
            if rng.next() % 50 == 0 { config.restartJournal() }
            // Now and then a compilation never committed (a refused publish) first: it leaves nothing behind.
            if rng.next() % 8 == 0 { _ = try compiler.compile(config, workerLcores: lcores) }
            guard let tables = try compiler.compile(config, workerLcores: lcores) else { Issue.record("no tables"); return }
            if compiler.lastCompileWasIncremental { incremental += 1 }
            for (w, r) in replicas.enumerated() {
                if tables.sad.clearFirst { r.apply(.clear) }
                for c in tables.sad.common + tables.sad.targets[w] + tables.sad.released.common + tables.sad.released.targets[w] {
                    r.apply(c)
                }
            }
            compiler.commit()
            let fresh = IPsecCompiler()
            guard let full = try fresh.compile(config, workerLcores: lcores) else { Issue.record("no tables"); return }
            let freshReplicas = lcores.map { _ in SADReplica(inboundCapacity: 256, targetCapacity: 64) }
            for (w, r) in freshReplicas.enumerated() {
                for c in [SADCommand.clear] + full.sad.common + full.sad.targets[w] { r.apply(c) }
            }
            let got = Self.describe(replicas, tables), want = Self.describe(freshReplicas, full)
            if got != want {
                Issue.record("seed \(seed) step \(step) after '\(line)':\n incremental \(got)\n full        \(want)")
                return
            }
            fresh.commit()
            if compiler.committedSAsByKey != fresh.committedSAsByKey {
                Issue.record("seed \(seed) step \(step) after '\(line)': SAs by key\n incremental \(compiler.committedSAsByKey)\n full        \(fresh.committedSAsByKey)")
                return
            }
            // Keep the fresh compiler's records alive until compared, then drop them.
            withExtendedLifetime(full) {}
        }
        #expect(applied == 150 && incremental > applied / 2, "\(applied) changes accepted in \(step + 1) steps, \(incremental) compiled incrementally")
    }
}

extension IPsecCompilerTests {
    /// A path MTU report must quote a sequence number the SA has taken:
    /// the latest number below `next` with those low 32 bits, not before
    /// the SA's first (across the 2^32 boundary with ESN, and at the end of
    /// the 64-bit space, where `next` reads 0).
    @Test func aPathMTUReportNeedsASequenceNumberTheSASent() {
        func sent(_ low: UInt32, _ first: UInt64, _ next: UInt64) -> Bool { IPsecCompiler.hasSent(low, first: first, next: next) }
        #expect(!sent(1, 1, 1))                 // nothing sent yet
        #expect(sent(1, 1, 2) && !sent(2, 1, 2))
        #expect(sent(5, 1, 10) && sent(9, 1, 10) && !sent(10, 1, 10) && !sent(0, 1, 10))
        #expect(!sent(4, 5, 10))                // before the SA's first (seq 5 …)
        let wrap: UInt64 = 1 << 32
        #expect(sent(0xFFFF_FFFF, wrap - 10, wrap + 3))  // high half 0
        #expect(sent(2, wrap - 10, wrap + 3) && !sent(3, wrap - 10, wrap + 3))
        #expect(!sent(0xFFFF_FFF0, wrap - 10, wrap + 3))  // 2^32 − 16: before the first
        #expect(sent(0xFFFF_FFFF, 1, 0) && sent(7, UInt64.max - 2, 0) == false)
        #expect(sent(0xFFFF_FFFE, UInt64.max - 2, 0))
    }
}
