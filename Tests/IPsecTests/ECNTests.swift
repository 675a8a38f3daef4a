import IPsec
import Testing

/// One cell of RFC 6040 Figure 4.
private func cell(_ outgoing: ECN, _ marker: ECNDecapsulation.Marker = .none) -> ECNDecapsulation {
    ECNDecapsulation(outgoing: outgoing, marker: marker)
}
private let drop = ECNDecapsulation(outgoing: nil, marker: .unexpected)

@Suite struct ECNTests {
    @Test func codepoints() {
        // RFC 3168 §5.
        #expect(ECN.notECT.rawValue == 0b00)
        #expect(ECN.ect1.rawValue == 0b01)
        #expect(ECN.ect0.rawValue == 0b10)
        #expect(ECN.ce.rawValue == 0b11)
        #expect(ECN(rawValue: 4) == nil)
        #expect(ECN(rawValue: 3) == .ce)
        #expect(ECN.allCases.count == 4)
        #expect(Set(ECN.allCases.map(\.rawValue)) == [0, 1, 2, 3])
        #expect(ECN(trafficClass: 0xB9) == .ect1)  // DSCP 46 (EF) + ECT(1)
        #expect(ECN.ce.applied(to: 0xB8) == 0xBB)
        #expect(ECN.notECT.applied(to: 0xBB) == 0xB8)
        #expect(ECN.ect0.description == "ECT(0)")
    }

    /// RFC 6040 §4.1, Figure 3, both columns.
    @Test func encapsulationFigure3() {
        // (incoming inner, compatibility-mode outer, normal-mode outer)
        let figure3: [(ECN, ECN, ECN)] = [
            (.notECT, .notECT, .notECT),
            (.ect0, .notECT, .ect0),
            (.ect1, .notECT, .ect1),
            (.ce, .notECT, .ce),
        ]
        for (inner, compatibility, normal) in figure3 {
            #expect(ECNTunnel.encapsulate(inner: inner) == normal, "\(inner)")
            #expect(ECNTunnel.encapsulateCompatibility(inner: inner) == compatibility, "\(inner)")
        }
    }

    /// RFC 6040 §4.2, Figure 4, all sixteen cells, transcribed row by row in
    /// the figure's order.
    @Test func decapsulationFigure4() {
        let outerColumns: [ECN] = [.notECT, .ect0, .ect1, .ce]
        let figure4: [(inner: ECN, cells: [ECNDecapsulation])] = [
            (.notECT, [cell(.notECT), cell(.notECT, .unexpected), cell(.notECT, .unexpected), drop]),
            (.ect0, [cell(.ect0), cell(.ect0), cell(.ect1), cell(.ce)]),
            (.ect1, [cell(.ect1), cell(.ect1, .unusual), cell(.ect1), cell(.ce)]),
            (.ce, [cell(.ce), cell(.ce), cell(.ce, .unexpected), cell(.ce)]),
        ]
        var seen = 0
        for row in figure4 {
            for (outer, expected) in zip(outerColumns, row.cells) {
                let got = ECNTunnel.decapsulate(outer: outer, inner: row.inner)
                #expect(got == expected, "inner \(row.inner) outer \(outer)")
                seen += 1
            }
        }
        #expect(seen == 16)
        let all = ECN.allCases.flatMap { i in ECN.allCases.map { o in ECNTunnel.decapsulate(outer: o, inner: i) } }
        #expect(all.filter(\.isDrop).count == 1)
        #expect(all.filter { $0.marker == .unexpected }.count == 4)
        #expect(all.filter { $0.marker == .unusual }.count == 1)
    }

    /// The data path's packed table says what Figure 4 says, cell by cell.
    @Test func packedFieldMatchesFigure4() {
        for outer in ECN.allCases {
            for inner in ECN.allCases {
                #expect(ECNTunnel.decapsulatedField(outer: outer, inner: inner)
                        == ECNTunnel.decapsulate(outer: outer, inner: inner).outgoing, "inner \(inner) outer \(outer)")
            }
        }
        #expect(ECNTunnel.decapsulatedField(outer: .ce, inner: .notECT) == nil)
    }

    /// A CE mark set between the tunnel ends survives decapsulation whenever
    /// the inner transport is ECN-capable (the point of RFC 6040).
    @Test func congestionSurvivesTheTunnel() {
        for inner in ECN.allCases where inner != .notECT {
            let outer = ECNTunnel.encapsulate(inner: inner)
            #expect(ECNTunnel.decapsulate(outer: outer, inner: inner) == cell(inner))
            #expect(ECNTunnel.decapsulate(outer: .ce, inner: inner).outgoing == .ce)
        }
    }
}
