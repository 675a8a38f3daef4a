#!/usr/bin/python3
"""ESP interop between sluice and an independent implementation, scapy's
scapy.layers.ipsec (run with /usr/bin/python3: scapy 2.5 + cryptography).
Cells, addresses and SAs: esp_cells.py. Every subcommand prints one JSON
object on stdout.

  esp_interop.py make-config  --dir DIR --cell CELL [--cell CELL]... [--engine E]
  esp_interop.py make-traffic --dir DIR --cell CELL [--cell CELL]... [--count N] [--seed S] [--engine E]
  esp_interop.py make         (both of the above, same options)
  esp_interop.py make-tamper  --dir DIR [--engine E]
  esp_interop.py make-fragments --dir DIR --cell CELL [--cell CELL]... [--count N] [--seed S]
  esp_interop.py make-outbound-fragments --dir DIR --cell CELL [--cell CELL]... [--count N] [--seed S]
  esp_interop.py check        --dir DIR --port-mac 0=MAC --port-mac 1=MAC
  esp_interop.py selftest     [--count N] [--cell CELL]...
  esp_interop.py list-cells

make-config writes DIR/sluice.conf: the test network plus, per cell, its
outbound and inbound SA and protect policies. make-traffic writes DIR/in0.pcap
(plaintext for the protected port 0: COUNT packets per cell, UDP/TCP/ICMP of
the cell's inner family), DIR/in1.pcap (COUNT packets per cell that the scapy
peer encrypted with the cell's inbound SA, for the unprotected port 1) and
DIR/expect.json. make-tamper does the same for the tamper cells, adding
broken and replayed ESP and packets the SPD drops; its JSON lists the drop
counters they must produce. make-fragments writes the config and, for the
unprotected port only, COUNT packets per cell that the scapy peer
encrypted and scapy's own fragmenter (fragment / fragment6) cut into 2 to 4
pieces, in order or reversed, the cells' fragments interleaved: sluice must
reassemble them and deliver each inner packet (transport-mode ESP is
addressed to a protected host: sluice reassembles it as a bump in the wire). make-outbound-fragments
writes the config with `port 1 mtu 1280` and, for the protected port only,
COUNT plaintext packets per cell whose ESP packet is larger than that
(IPv4 without DF, of 1,260 to 1,460 bytes; IPv6 of 1,240 to 1,280, which no
ICMP error could make smaller): sluice must send each ESP packet in
fragments. check decrypts what sluice sent (DIR/out1.pcap)
with scapy and compares it, and DIR/out0.pcap, with what went in; fragments
on port 1 are first put together by scapy's own reassembly (defragment,
defragment6), each no larger than the port's MTU. selftest
runs all of it against a model gateway (esp_reference.py) and scapy against
the known-answer vectors, without sluice.

JSON printed:
  make / make-traffic / make-tamper:
    {"config": PATH, "ports": {"0": {"rx": ["in0.pcap"], "tx": ["out0.pcap"]}, "1": {...}},
     "cells": [NAME...], "inputs": N, "inputs_per_port": {"0": N, "1": N},
     "forwarded": N, "forwarded_per_port": {"0": N, "1": N},
     "drops": [{"reason": R, "match": [SUBSTRING...], "count": N, "packets": ["CELL: KIND"...]}...],
     "scapy": {CELL: "scapy AES-GCM" ...}}                  (drops is [] for make)
  make-config: {"config": PATH, "cells": [...], "config_lines": N}
  check:
    {"ok": BOOL, "matched": N, "expected_forwarded": N, "outputs_per_port": {"0": N, "1": N},
     "fragmented": N (port 1 datagrams scapy put together), "fragment_frames": N,
     "answered": N (ICMP Time Exceeded frames on port 0 answering a packet sent with TTL 1),
     "counts": {KIND: N}, "problems": [TEXT... (first 20)],
     "cells": {CELL: {"ok", "esp_expected", "esp_matched", "plain_expected", "plain_matched",
                      "seq_first", "seq_last", "problems": [TEXT... (first 10)]}}}
    KIND: missing-files unexpected wrong-port wrong-sa bad-encap undecryptable bad-seq bad-iv
          bad-padding bad-next-header bad-outer outer-tos bad-udp wrong-dst-mac wrong-src-mac
          bad-ttl inner-changed duplicates missing should-have-dropped bad-fragment
  selftest: {"ok": BOOL, "failures": [TEXT...], "vectors": [...], "roundtrips": N,
             "matrix": {CASE: {KIND: N}}, "tamper": {...}, "seconds": S}   (exit status 1 unless ok)
Dictionary keys never contain "_" where Swift decodes them (its decoder converts snake_case keys).

--engine: per-cell (default: aes-gcm-128 cells name no engine, the other
AEADs use `crypto-engine ipsec-mb` for plain ESP and `sodium` for UDP cells),
none (no cell names an engine), or auto | ipsec-mb | sodium for every cell
(aes-gcm-128 always names none: libsodium has no AES-128-GCM).
"""

import argparse
import json
import os
import struct
import sys
import tempfile
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import esp_cells as esp  # noqa: E402
import sluice_e2e as e2e  # noqa: E402
from esp_cells import IP, IPv6, IPSecIntegrityError, ICMPv6EchoRequest, TCP, UDP, raw  # noqa: E402

CONFIG_HEAD = """\
# Sluice ESP interop test network (written by esp_interop.py)
port 0 role protected address {p4}/24 address {p6}/64
port 1 role unprotected address {u4}/24 address {u6}/64

neighbor {pn4} lladdr {pm4} port 0
neighbor {pn6} lladdr {pm6} port 0
neighbor {un4} lladdr {um4} port 1
neighbor {un6} lladdr {um6} port 1

route add 10.8.0.0/16 via {pn4}                  # protected hosts of every cell
route add 2001:db8:8::/48 via {pn6}
route add 10.9.0.0/16 via {un4}                  # remote hosts (transport mode, and inner routes)
route add 2001:db8:9::/48 via {un6}
route add 198.51.100.0/24 via {un4}              # tunnel peers
route add 2001:db8:5::/64 via {un6}
route add 10.10.0.0/15 via {un4}                 # tamper: discard policy, no policy
route add 2001:db8:a::/47 via {un6}
""".format(p4=esp.PROTECTED_GW[0], p6=esp.PROTECTED_GW[1], u4=esp.UNPROTECTED_GW[0], u6=esp.UNPROTECTED_GW[1],
           pn4=esp.PROTECTED_NEIGHBOR[4][0], pm4=esp.PROTECTED_NEIGHBOR[4][1],
           pn6=esp.PROTECTED_NEIGHBOR[6][0], pm6=esp.PROTECTED_NEIGHBOR[6][1],
           un4=esp.UNPROTECTED_NEIGHBOR[4][0], um4=esp.UNPROTECTED_NEIGHBOR[4][1],
           un6=esp.UNPROTECTED_NEIGHBOR[6][0], um6=esp.UNPROTECTED_NEIGHBOR[6][1])

PORTS = {"0": {"rx": ["in0.pcap"], "tx": ["out0.pcap"]}, "1": {"rx": ["in1.pcap"], "tx": ["out1.pcap"]}}

# Drop groups of the tamper set, in matching order: a sluice counter belongs
# to the first group one of whose strings its name contains.
DROP_GROUPS = [
    ("selector_mismatch", ["selector", "mismatch"]),
    ("replayed", ["replay", "old", "window"]),
    ("authentication_failed", ["auth", "icv", "integrity"]),
    ("bad_padding", ["padding", "pad_"]),
    ("no_sa", ["no_sa", "spi"]),
    ("malformed", ["malformed", "trunc", "short", "length"]),
    ("policy_discard", ["polic", "discard"]),
    ("ttl_exceeded", ["ttl"]),
]


def engine_arg(value):
    return {"per-cell": "per-cell", "none": None}.get(value, value)


def make_cells(names, engine):
    cells = []
    for name in names:
        cell = esp.Cell(name, engine=engine_arg(engine))
        if cell.aead == "aes-gcm-128" and cell.engine == "sodium":
            cell.engine = None
        cells.append(cell)
    return cells


def write_config(directory, cells):
    path = os.path.join(directory, "sluice.conf")
    with open(path, "w") as f:
        f.write(CONFIG_HEAD)
        for cell in cells:
            f.write("\n" + "\n".join(cell.config_lines()) + "\n")
    return path


def interleave(lists):
    """Round-robin over per-cell lists, so that bursts mix SAs and each
    cell's own order (its sequence numbers) is kept."""
    out = []
    for i in range(max((len(x) for x in lists), default=0)):
        out += [x[i] for x in lists if i < len(x)]
    return out


class Plan:
    """Input frames and the expectation for each packet id."""

    def __init__(self):
        self.rx = {0: [], 1: []}
        self.records = {}   # id -> record
        self.untagged_drops = []  # (cell, kind, reason) for drops whose payload has no id

    def add(self, port, frame, ident, record):
        self.rx[port].append(frame)
        if ident is not None:
            self.records[str(ident)] = record


def matrix_traffic(cells, count, seed):
    traffic = esp.Traffic(seed)
    per_cell = {0: [], 1: []}
    records = {}
    for cell in cells:
        outs, ins = [], []
        for k in range(count):
            ident, inner = traffic.inner(cell.local_net, cell.remote_net)
            outs.append(esp.frame(inner))
            records[str(ident)] = {"cell": cell.name, "dir": "out", "action": "forward", "kind": "valid",
                                   "inner": inner.hex()}
        for k in range(count):
            ident, inner = traffic.inner(cell.remote_net, cell.local_net)
            seq = cell.peer_seq_start + k
            if not cell.tunnel and cell.udp and k % 2 == 1:
                packet = behind_nat(cell, inner, seq, traffic.iv(), k)
            else:
                packet = esp.peer_encrypt(cell, inner, seq, traffic.iv())
            ins.append(esp.frame(packet))
            records[str(ident)] = {"cell": cell.name, "dir": "in", "action": "forward", "kind": "valid",
                                   "inner": inner.hex(), "seq": seq}
        per_cell[0].append(outs)
        per_cell[1].append(ins)
    plan = Plan()
    plan.rx = {0: interleave(per_cell[0]), 1: interleave(per_cell[1])}
    plan.records = records
    return plan


def per_cell_plan(cells, count, seed, port, make):
    """A plan of COUNT packets per cell, all on `port`, the cells
    interleaved: make(traffic, cell, k) gives (id, frames, record)."""
    traffic = esp.Traffic(seed)
    per_cell = []
    plan = Plan()
    for cell in cells:
        frames = []
        for k in range(count):
            ident, made, record = make(traffic, cell, k)
            frames += made
            plan.records[str(ident)] = dict(record, cell=cell.name, action="forward", kind="valid")
        per_cell.append(frames)
    plan.rx = {port: interleave(per_cell), 1 - port: []}
    return plan


def fragment_traffic(cells, count, seed):
    """Inbound ESP in fragments, as scapy cuts a datagram (RFC 791 / RFC
    8200 §4.5): what a peer (or a router on a NAT-T path) does with ESP
    larger than its path's MTU."""
    from scapy.layers.inet import fragment
    from scapy.layers.inet6 import IPv6ExtHdrFragment, fragment6

    def make(traffic, cell, k):
        ident, inner = traffic.inner(cell.remote_net, cell.local_net, size=600 + 97 * (k % 7))
        if not cell.tunnel and cell.inner_family == 4:
            # Transport mode: the packet's own header is the one cut, so it
            # may not say DF (and keeps its identification).
            packet = IP(inner)
            packet.flags = 0
            del packet.chksum
            inner = raw(packet)
        seq = cell.peer_seq_start + k
        packet = esp.peer_encrypt(cell, inner, seq, traffic.iv())
        if packet[0] >> 4 == 4:
            hl = (packet[0] & 15) * 4
            piece = ((len(packet) - hl) // (2 + k % 3) + 7) // 8 * 8
            datagram = IP(packet)
            if cell.tunnel:
                datagram.flags = 0
                datagram.id = 0x3000 + cell.index * 64 + k
            pieces = fragment(datagram, fragsize=piece)
        else:
            outer = IPv6(packet)
            piece = ((len(packet) - 40) // (2 + k % 3) + 7) // 8 * 8
            datagram = IPv6(src=outer.src, dst=outer.dst, hlim=outer.hlim, tc=outer.tc, fl=outer.fl) / \
                IPv6ExtHdrFragment(nh=outer.nh, id=0x30000 + cell.index * 64 + k) / raw(outer.payload)
            pieces = fragment6(datagram, piece + 48)
        pieces = [raw(p) for p in pieces]
        if k % 2 == 1:
            pieces.reverse()
        return ident, [esp.frame(p) for p in pieces], {"dir": "in", "inner": inner.hex(), "seq": seq,
                                                      "fragments": len(pieces)}
    return per_cell_plan(cells, count, seed, 1, make)


def outbound_fragment_traffic(cells, count, seed):
    """Plaintext whose ESP packet is too big for port 1's MTU of 1280 and
    may be cut: IPv4 without DF, IPv6 of at most 1280 bytes."""
    def make(traffic, cell, k):
        v4 = cell.inner_family == 4
        target = 1260 + 29 * k % 200 if v4 else 1280 - 8 * (k % 6)
        size = target - (40 if v4 else 60) - 12
        while True:
            ident, inner = traffic.inner(cell.local_net, cell.remote_net, size=size)
            if len(inner) <= target:
                break
            size -= len(inner) - target
        if v4:
            packet = IP(inner)
            packet.flags = 0
            del packet.chksum
            inner = raw(packet)
        return ident, [esp.frame(inner)], {"dir": "out", "inner": inner.hex()}
    return per_cell_plan(cells, count, seed, 0, make)


OUTBOUND_FRAGMENT_MTU = 1280


def behind_nat(cell, inner, seq, iv, k):
    """NAT-T transport mode through a NAT (RFC 3948 §3.1.2): the peer's
    stack computed `inner`'s TCP/UDP/ICMPv6 checksum over its private
    source address; a NAT then rewrote the source to the one `inner` has
    (and the UDP source port), and could not reach the encrypted checksum.
    The gateway must deliver `inner` exactly, its checksum fixed."""
    v4 = cell.inner_family == 4
    pkt = IP(inner) if v4 else IPv6(inner)
    public = bytes(inner[12:16] if v4 else inner[8:24])
    pkt.src = "192.168.77.%d" % (k % 250 + 1) if v4 else "fd00:77::%x" % (k + 1)
    if v4:
        del pkt.chksum
    for layer, field in ((TCP, "chksum"), (UDP, "chksum"), (ICMPv6EchoRequest, "cksum")):
        if layer in pkt:
            delattr(pkt[layer], field)
    packet = bytearray(esp.peer_encrypt(cell, raw(pkt), seq, iv))
    if v4:
        hl = (packet[0] & 15) * 4
        packet[12:16] = public
        packet[10:12] = b"\0\0"
        packet[10:12] = struct.pack("!H", e2e.ipv4_checksum(bytes(packet[:hl])))
    else:
        hl = 40
        packet[8:24] = public
    packet[hl:hl + 2] = struct.pack("!H", 61000 + k)  # the NAT's port for the peer
    return bytes(packet)


def write_plan(directory, cells, plan, drops=None, extra=None, mtu=None):
    for port, files in PORTS.items():
        e2e.write_pcap(os.path.join(directory, files["rx"][0]), plan.rx[int(port)])
    forwarded_per_port = {"0": 0, "1": 0}
    for r in plan.records.values():
        if r["action"] == "forward":
            forwarded_per_port["1" if r["dir"] == "out" else "0"] += 1
    expect = {"ports": PORTS, "cells": [c.to_json() for c in cells], "packets": plan.records, "mtu": mtu or {}}
    with open(os.path.join(directory, "expect.json"), "w") as f:
        json.dump(expect, f)
    summary = {
        "config": os.path.join(directory, "sluice.conf"),
        "ports": PORTS,
        "cells": [c.name for c in cells],
        "inputs": len(plan.rx[0]) + len(plan.rx[1]),
        "inputs_per_port": {"0": len(plan.rx[0]), "1": len(plan.rx[1])},
        "forwarded": sum(forwarded_per_port.values()),
        "forwarded_per_port": forwarded_per_port,
        "drops": drops or [],
        "scapy": scapy_coverage(cells),
    }
    summary.update(extra or {})
    return summary


def scapy_coverage(cells):
    """Which library each cell's peer uses (all scapy's SecurityAssociation:
    scapy 2.5 has AES-GCM and CHACHA20-POLY1305 in CRYPT_ALGOS)."""
    return {c.name: "scapy %s%s" % (esp.SCAPY_AEAD[c.aead][0], " (UDP header added by this script)" if c.udp else "")
            for c in cells}


# -- tamper set -------------------------------------------------------------------

TAMPER_CELLS = [
    # name, cell number, replay window
    ("aes-gcm-128/tunnel-4in4/noesn/esp", esp.TAMPER_BASE + 0, None),
    ("chacha20-poly1305/transport-6/esn/udp", esp.TAMPER_BASE + 1, 32),
    ("aes-gcm-256/tunnel-6in4/noesn/udp", esp.TAMPER_BASE + 2, 128),
    ("aes-gcm-256/tunnel-6in6/esn/esp", esp.TAMPER_BASE + 3, None),
]


def tamper_cells(engine):
    cells = []
    for name, index, window in TAMPER_CELLS:
        cell = esp.Cell(name, index=index, engine=engine_arg(engine), replay_window=window)
        if cell.aead == "aes-gcm-128" and cell.engine == "sodium":
            cell.engine = None
        v4 = cell.inner_family == 4
        discard_net = "10.10.%d.0/24" % index if v4 else "2001:db8:a:%x::/64" % index
        cell.extra_policies = [("out", str(cell.local_net), discard_net, "discard")]
        cell.discard_net = discard_net
        cell.nopolicy_net = "10.11.%d.0/24" % index if v4 else "2001:db8:b:%x::/64" % index
        cells.append(cell)
    return cells


def flip(data, offset, bit=0):
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


def rewrap(cell, plain_packet, esp_bytes):
    """IP/ESP with its ESP replaced (lengths fixed), then UDP if the cell encapsulates."""
    hl = esp.ip_header_len(plain_packet)
    header = bytearray(plain_packet[:hl])
    if header[0] >> 4 == 4:
        packet = esp.ipv4_fix(bytes(header) + esp_bytes)
    else:
        header[4:6] = struct.pack("!H", len(esp_bytes))
        packet = bytes(header) + esp_bytes
    return esp.encapsulate_udp(packet) if cell.udp else packet


def plain_peer_packet(cell, inner, seq, iv):
    """The peer's IP/ESP for `inner` without UDP (tamper works on ESP bytes)."""
    udp = cell.udp
    cell.udp = False
    try:
        return esp.peer_encrypt(cell, inner, seq, iv)
    finally:
        cell.udp = udp


def tamper_plan(cells, seed):
    """Per tamper cell, in this order on the unprotected port (s0 = the
    peer's first number, J = s0 + 200, W = the replay window):
      10 valid (s0..s0+9; the ESN cells cross 2^32 here), a valid jump to J,
      broken packets at fresh numbers above J, one too old (J - W - 5), one
      whose inner packet the SA's policy does not cover, one with inner TTL 1,
      valid packets at the numbers the broken ones used (a failed check must
      not move the window), duplicates, and a last valid one.
    On the protected port: 6 valid, one to a discard policy, one no policy
    matches, one with TTL 1 (its sender, on the protected side, gets an ICMP
    Time Exceeded back: the plan's "answered")."""
    traffic = esp.Traffic(seed, first_id=500000)
    plan = Plan()
    expected = {}  # group -> list of "cell: kind"
    per_cell_in, per_cell_out = [], []

    def expect_drop(cell, kind, group):
        expected.setdefault(group, []).append("%s: %s" % (cell.name, kind))

    for cell in cells:
        ins, outs = [], []

        def send_in(packet_bytes, ident, record):
            ins.append((esp.frame(packet_bytes), ident, record))

        def valid(seq, src_net=None, ttl=None, size=None, kind="valid"):
            ident, inner = traffic.inner(src_net or cell.remote_net, cell.local_net, ttl=ttl, size=size)
            packet = esp.peer_encrypt(cell, inner, seq, traffic.iv())
            record = {"cell": cell.name, "dir": "in", "action": "forward", "kind": kind, "inner": inner.hex(),
                      "seq": seq}
            send_in(packet, ident, record)
            return ident, packet, record

        s0, window = cell.peer_seq_start, cell.effective_window()
        jump = s0 + 200
        firsts = [valid(s0 + k) for k in range(10)]
        valid(jump, kind="valid-jump")

        # Broken copies of fresh packets: (kind, ESP transformation, group).
        head = 8 + esp.IV_LEN
        cases = [
            ("spi-bit31-flipped", lambda b: flip(b, 0, 7), "no_sa"),
            ("seq-bit0-flipped", lambda b: flip(b, 7, 0), "authentication_failed"),
            ("iv-bit-flipped", lambda b: flip(b, 8 + 3, 5), "authentication_failed"),
            ("ciphertext-first-byte-flipped", lambda b: flip(b, head, 0), "authentication_failed"),
            ("ciphertext-last-byte-flipped", lambda b: flip(b, len(b) - esp.ICV_LEN - 1, 7), "authentication_failed"),
            ("icv-first-byte-flipped", lambda b: flip(b, len(b) - esp.ICV_LEN, 0), "authentication_failed"),
            ("icv-last-byte-flipped", lambda b: flip(b, len(b) - 1, 7), "authentication_failed"),
            ("truncated-by-4", lambda b: b[:-4], "authentication_failed"),
            ("truncated-to-20-bytes", lambda b: b[:20], "malformed"),
        ]
        if not cell.udp:
            cases.append(("truncated-to-6-bytes", lambda b: b[:6], "malformed"))
        retry_seqs = []
        seq = jump + 10
        for kind, transform, group in cases:
            ident, inner = traffic.inner(cell.remote_net, cell.local_net)
            plain = plain_peer_packet(cell, inner, seq, traffic.iv())
            hl = esp.ip_header_len(plain)
            broken = rewrap(cell, plain, transform(plain[hl:]))
            send_in(broken, ident, {"cell": cell.name, "dir": "in", "action": "drop", "kind": kind, "seq": seq})
            expect_drop(cell, kind, group)
            retry_seqs.append(seq)
            seq += 4
        if cell.esn:
            # The right low half sealed with the next epoch's high half.
            ident, inner = traffic.inner(cell.remote_net, cell.local_net)
            packet = esp.peer_encrypt(cell, inner, seq + (1 << 32), traffic.iv())
            send_in(packet, ident, {"cell": cell.name, "dir": "in", "action": "drop", "kind": "esn-high-wrong",
                                    "seq": seq})
            expect_drop(cell, "esn-high-wrong", "authentication_failed")
            retry_seqs.append(seq)
            seq += 4
        # A number below the window (J is still the top: nothing broken moved
        # it). With ESN a number below the window belongs to the next 2^32
        # block (RFC 4303 Appendix A2.2): it fails authentication instead.
        below_window = "authentication_failed" if cell.esn else "replayed"
        ident, packet, record = valid(jump - window - 5, kind="too-old")
        record["action"] = "drop"
        expect_drop(cell, "too-old", below_window)
        # The numbers the broken packets carried are still unused: a failed
        # check must not have moved the window.
        for s in retry_seqs:
            valid(s, kind="valid-retry")
        # (After the retries: these are authentic and move the window.)
        # Trailers scapy would not write, sealed by scapy's own AEAD code.
        for kind in ("padding-not-monotonic", "pad-length-too-large"):
            size = 40 if kind == "pad-length-too-large" else None
            ident, inner = traffic.inner(cell.remote_net, cell.local_net, size=size)
            if cell.tunnel:
                data, nh = inner, (4 if cell.inner_family == 4 else 41)
            else:
                data, nh = esp.transport_split(inner)
            if kind == "padding-not-monotonic":
                n = (-(len(data) + 2)) % 4 + 4           # 4...7 bytes of padding
                padding = bytes(range(1, n)) + bytes([n + 1])
                padlen = n
            else:
                data = data + b"\0" * ((-(len(data) + 2)) % 4)
                padding, padlen = b"", 255               # more than the whole payload
            sa = cell.scapy_sa("in")
            plain_esp = esp._ESPPlain(spi=sa.spi, seq=seq & 0xFFFFFFFF, iv=traffic.iv(), data=esp.Raw(data),
                                      padding=padding, padlen=padlen, nh=nh)
            sealed = esp.raw(sa.crypt_algo.encrypt(sa, plain_esp, sa.crypt_key, esn_en=cell.esn, esn=seq >> 32))
            send_in(esp.wrap_esp(cell, "in", inner, sealed), ident,
                    {"cell": cell.name, "dir": "in", "action": "drop", "kind": kind, "seq": seq})
            expect_drop(cell, kind, "bad_padding")
            # Authentic: the window moved when the ICV verified (RFC 4303
            # §3.4.3), before the trailer was checked, so this number is spent.
            seq += 4
        # Authentic, but refused after decryption (the window moves).
        outside = esp.ipaddress.ip_network("10.7.%d.0/24" % cell.index if cell.inner_family == 4
                                           else "2001:db8:7:%x::/64" % cell.index)
        ident, packet, record = valid(seq, src_net=outside, kind="selector-mismatch")
        record["action"] = "drop"
        expect_drop(cell, "selector-mismatch", "selector_mismatch")
        seq += 4
        ident, ttl_one_packet, record = valid(seq, ttl=1, kind="inner-ttl-1")
        record["action"] = "drop"
        expect_drop(cell, "inner-ttl-1", "ttl_exceeded")
        seq += 4
        # Duplicates: two from before the jump (now below the window), one
        # back to back, one of the packet dropped for its TTL after decryption
        # (authentic, so it moved the window).
        for kind, (ident, packet, record) in (("duplicate-early", firsts[3]), ("duplicate-early-2", firsts[9])):
            send_in(packet, None, None)
            expect_drop(cell, kind, below_window)
        ident, packet, record = valid(seq, kind="valid-then-duplicated")
        send_in(packet, None, None)
        expect_drop(cell, "duplicate-back-to-back", "replayed")
        seq += 1
        send_in(ttl_one_packet, None, None)
        expect_drop(cell, "duplicate-of-inner-ttl-1", "replayed")
        valid(seq, kind="valid-last")

        # Protected side.
        for k in range(6):
            ident, inner = traffic.inner(cell.local_net, cell.remote_net)
            outs.append((esp.frame(inner), ident, {"cell": cell.name, "dir": "out", "action": "forward",
                                                   "kind": "valid", "inner": inner.hex()}))
        for kind, dst_net, ttl, group in (("discard-policy", cell.discard_net, None, "policy_discard"),
                                          ("no-policy", cell.nopolicy_net, None, "policy_discard"),
                                          ("ttl-1", str(cell.remote_net), 1, "ttl_exceeded")):
            ident, inner = traffic.inner(cell.local_net, esp.ipaddress.ip_network(dst_net), ttl=ttl)
            outs.append((esp.frame(inner), ident, {"cell": cell.name, "dir": "out", "action": "drop", "kind": kind}))
            expect_drop(cell, kind, group)
        per_cell_in.append(ins)
        per_cell_out.append(outs)

    for port, lists in ((1, per_cell_in), (0, per_cell_out)):
        for frame, ident, record in interleave(lists):
            plan.rx[port].append(frame)
            if ident is not None:
                plan.records[str(ident)] = record
    drops = [{"reason": name, "match": match, "count": len(expected.get(name, [])),
              "packets": expected.get(name, [])} for name, match in DROP_GROUPS]
    return plan, drops


# -- check ------------------------------------------------------------------------

class Checker:
    KINDS = ["missing-files", "unexpected", "wrong-port", "wrong-sa", "bad-encap", "undecryptable", "bad-seq",
             "bad-iv", "bad-padding", "bad-next-header", "bad-outer", "outer-tos", "bad-udp", "wrong-dst-mac",
             "wrong-src-mac", "bad-ttl", "inner-changed", "duplicates", "missing", "should-have-dropped",
             "bad-fragment"]

    def __init__(self, expect, port_macs):
        self.expect = expect
        self.port_macs = port_macs
        self.cells = {c["name"]: esp.Cell.from_json(c) for c in expect["cells"]}
        self.by_out_spi = {c.out_spi: c for c in self.cells.values()}
        self.in_spis = {c.in_spi for c in self.cells.values()}
        self.records = expect["packets"]
        self.counts = {k: 0 for k in self.KINDS}
        self.problems = []
        self.cell_problems = {name: [] for name in self.cells}
        self.seen = {}
        self.leaked = set()   # ids that left in clear where ESP was due (reported there, not as missing)
        self.seqs = {name: [] for name in self.cells}
        self.last_seq = {}
        self.sas = {name: c.scapy_sa("out") for name, c in self.cells.items()}
        self.mtu = expect.get("mtu", {})
        self.fragmented = 0
        self.fragment_frames = 0
        self.answered = 0

    def problem(self, kind, text, cell=None):
        self.counts[kind] += 1
        line = "%s: %s" % (kind, text)
        if len(self.problems) < 20:
            self.problems.append(line)
        if cell is not None and len(self.cell_problems[cell]) < 10:
            self.cell_problems[cell].append(line)

    def see(self, ident, where, cell):
        self.seen[ident] = self.seen.get(ident, 0) + 1
        if self.seen[ident] > 1:
            self.problem("duplicates", "%s: packet %s sent %d times" % (where, ident, self.seen[ident]), cell)
            return False
        return True

    def run(self, directory):
        outputs = {}
        for port, files in self.expect["ports"].items():
            outputs[port] = 0
            for name in files["tx"]:
                path = os.path.join(directory, name)
                if not os.path.exists(path):
                    self.problem("missing-files", "%s was not written (port %s)" % (name, port))
                    continue
                frames = e2e.read_pcap(path)
                outputs[port] += len(frames)
                if int(port) == 1:
                    frames = self.defragment(name, frames, self.mtu.get(port))
                for i, f in enumerate(frames):
                    where = "%s frame %d" % (name, i)
                    if int(port) == 1:
                        self.unprotected(where, f)
                    else:
                        self.protected(where, f)
        self.finish()
        return outputs

    def defragment(self, name, frames, mtu):
        """The frames with every set of fragments replaced by the datagram
        scapy's reassembly makes of it (at the place of its first piece)."""
        from scapy.layers.inet import defragment
        from scapy.layers.inet6 import IPv6ExtHdrFragment, defragment6
        out, groups = [], {}
        for i, f in enumerate(frames):
            ethertype = struct.unpack("!H", f[12:14])[0]
            packet = f[14:]
            if ethertype == 0x0800 and len(packet) >= 20 and struct.unpack("!H", packet[6:8])[0] & 0x3FFF:
                key = (4, packet[12:20], packet[9], packet[4:6])
            elif ethertype == 0x86DD and len(packet) >= 48 and packet[6] == 44:
                key = (6, packet[8:40], packet[44:48])
            else:
                out.append(f)
                continue
            self.fragment_frames += 1
            if mtu is not None and len(packet) > mtu:
                self.problem("bad-fragment", "%s frame %d: a fragment of %d bytes, port MTU %d" % (name, i, len(packet), mtu))
            if key not in groups:
                groups[key] = []
                out.append(key)
            groups[key].append(f)
        result = []
        for item in out:
            if not isinstance(item, tuple):
                result.append(item)
                continue
            pieces = groups[item]
            if item[0] == 4:
                made = defragment([IP(f[14:]) for f in pieces])
                whole = raw(made[0]) if len(made) == 1 else None
                if whole is not None and struct.unpack("!H", whole[6:8])[0] & 0x3FFF:
                    whole = None
            else:
                made = defragment6([IPv6(f[14:]) for f in pieces])
                whole = raw(made)
                data = sum(len(f) - 14 - 48 for f in pieces)
                if IPv6ExtHdrFragment in IPv6(whole) or len(whole) != 40 + data \
                        or not any(struct.unpack("!H", f[56:58])[0] & 1 == 0 for f in pieces):
                    whole = None
            if whole is None:
                self.problem("bad-fragment", "%s: %d fragments scapy could not put together (%s)"
                             % (name, len(pieces), item[0]))
                continue
            self.fragmented += 1
            result.append(pieces[0][:14] + whole)
        return result

    # -- frames sluice sent to the ESP side -----------------------------------

    def unprotected(self, where, f):
        ethertype = struct.unpack("!H", f[12:14])[0]
        packet = f[14:]
        if ethertype not in (0x0800, 0x86DD) or len(packet) < 20:
            return self.problem("unexpected", "%s: ethertype %#06x, %d bytes" % (where, ethertype, len(f)))
        family = 4 if ethertype == 0x0800 else 6
        hl = esp.ip_header_len(packet)
        proto = packet[9] if family == 4 else packet[6]
        udp = proto == 17
        if udp:
            sport, dport, ulen, csum = struct.unpack("!HHHH", packet[hl:hl + 8])
            if esp.NAT_T_PORT not in (sport, dport):
                return self.leak(where, packet, "UDP %d -> %d" % (sport, dport))
            esp_bytes = packet[hl + 8:]
        elif proto == 50:
            esp_bytes = packet[hl:]
        else:
            return self.leak(where, packet, "protocol %d" % proto)
        if len(esp_bytes) < 8 + esp.IV_LEN + esp.ICV_LEN:
            return self.problem("unexpected", "%s: ESP of %d bytes" % (where, len(esp_bytes)))
        spi, low = struct.unpack("!II", esp_bytes[:8])
        cell = self.by_out_spi.get(spi)
        if cell is None:
            what = "an inbound SA's SPI" if spi in self.in_spis else "no SA's SPI"
            return self.problem("unexpected", "%s: SPI %#010x is %s" % (where, spi, what))
        name = cell.name
        where = "%s (%s)" % (where, name)
        if udp != cell.udp:
            self.problem("bad-encap", "%s: %s, the SA says %s" % (where, "UDP" if udp else "plain ESP",
                                                                   "UDP 4500" if cell.udp else "plain ESP"), name)
        # Sequence number: the high half from the previous packet of this SA (or the SA's start).
        base = self.last_seq.get(name, cell.out_seq_start - 1 if cell.out_seq_start > 1 else 0)
        highs = [base >> 32, (base >> 32) + 1] if cell.esn else [0]
        plain_packet = esp.strip_udp(packet) if udp else packet
        decrypted, seq64 = None, None
        for high in highs:
            try:
                decrypted = esp.scapy_decrypt(self.sas[name], plain_packet, high, cell.esn)
                seq64 = (high << 32) | low
                break
            except IPSecIntegrityError:
                continue
            except Exception as error:  # scapy could not parse what it decrypted
                decrypted = error
                seq64 = (high << 32) | low
                break
        if seq64 is None:
            return self.problem("undecryptable", "%s: scapy's %s with the outbound key does not authenticate "
                                "SPI %#010x seq %d (tried high halves %s)" % (where, esp.SCAPY_AEAD[cell.aead][0],
                                                                               spi, low, highs), name)
        self.last_seq[name] = seq64
        self.seqs[name].append(seq64)
        if isinstance(decrypted, Exception):
            return self.problem("inner-changed", "%s: scapy decrypted but could not parse it: %r" % (where, decrypted),
                                name)
        # What scapy does not show: IV and trailer.
        iv = esp_bytes[8:8 + esp.IV_LEN]
        if iv != seq64.to_bytes(8, "big"):
            self.problem("bad-iv", "%s: IV %s, the sequence number is %d (%s)"
                         % (where, iv.hex(), seq64, seq64.to_bytes(8, "big").hex()), name)
        payload = esp.aead_open(cell.aead, cell.out_key, spi, seq64, cell.esn, esp_bytes)
        inner_bytes = bytes(decrypted)
        if payload is None:
            self.problem("undecryptable", "%s: scapy authenticated it but the cryptography AEAD did not" % where, name)
        else:
            padlen, nh = payload[-2], payload[-1]
            body = len(payload) - 2 - padlen
            if len(payload) % 4 or body < 0 or payload[body:-2] != bytes(range(1, padlen + 1)):
                self.problem("bad-padding", "%s: encrypted part %d bytes, pad length %d, padding %s (RFC 4303 §2.4: "
                             "1, 2, 3, …, 4-byte aligned)" % (where, len(payload), padlen,
                                                              payload[max(body, 0):-2].hex()), name)
            want_nh = (4 if cell.inner_family == 4 else 41) if cell.tunnel else \
                (inner_bytes[9] if cell.inner_family == 4 else inner_bytes[6])
            if nh != want_nh:
                self.problem("bad-next-header", "%s: next header %d, expected %d" % (where, nh, want_nh), name)
        ident = esp.packet_id(inner_bytes)
        record = self.records.get(str(ident)) if ident is not None else None
        if record is None:
            return self.problem("unexpected", "%s: decrypted packet has no known id" % where, name)
        if record["dir"] != "out" or record["cell"] != name:
            return self.problem("wrong-sa", "%s: packet %s (%s, %s) went out with this SA"
                                % (where, ident, record["cell"], record["dir"]), name)
        if record["action"] != "forward":
            return self.problem("should-have-dropped", "%s: packet %s (%s)" % (where, ident, record["kind"]), name)
        if not self.see(ident, where, name):
            return
        where = "%s packet %s seq %d" % (where, ident, seq64)
        expected_inner = esp.decrement_ttl(bytes.fromhex(record["inner"]))
        self.compare_inner(where, name, inner_bytes, expected_inner)
        # L2 and the outer header.
        neighbor = esp.UNPROTECTED_NEIGHBOR[family][1]
        if f[0:6] != e2e.mac_bytes(neighbor):
            self.problem("wrong-dst-mac", "%s: dst %s, next hop %s" % (where, f[0:6].hex(":"), neighbor), name)
        if f[6:12] != e2e.mac_bytes(self.port_macs[1]):
            self.problem("wrong-src-mac", "%s: src %s, port 1 is %s" % (where, f[6:12].hex(":"), self.port_macs[1]),
                         name)
        if family != cell.outer_family:
            self.problem("bad-outer", "%s: outer IPv%d, the cell's is IPv%d" % (where, family, cell.outer_family), name)
            return
        self.check_outer(where, name, cell, packet, expected_inner)
        if udp:
            self.check_udp(where, name, cell, packet)

    def leak(self, where, packet, what):
        """Plaintext on the unprotected port: charged to the cell whose packet it is."""
        ident = esp.packet_id(packet)
        record = self.records.get(str(ident)) if ident is not None else None
        cell = record["cell"] if record else None
        if record is not None:
            self.leaked.add(int(ident))
        self.problem("unexpected", "%s: %s in clear on the unprotected port (packet %s%s)"
                     % (where, what, ident, ", %s %s, should have been ESP" % (cell, record["dir"]) if record else ""),
                     cell)

    def compare_inner(self, where, name, got, want):
        if got == want:
            return
        if len(got) == len(want):
            diff = [i for i in range(len(got)) if got[i] != want[i]]
            ttl_at = 8 if want[0] >> 4 == 4 else 7
            if set(diff) <= {ttl_at, 10, 11} and ttl_at in diff:
                return self.problem("bad-ttl", "%s: inner TTL %d, expected %d (input - 1)"
                                    % (where, got[ttl_at], want[ttl_at]), name)
            return self.problem("inner-changed", "%s: inner bytes differ at %s" % (where, diff[:8]), name)
        self.problem("inner-changed", "%s: inner packet %d bytes, expected %d" % (where, len(got), len(want)), name)

    def check_outer(self, where, name, cell, packet, inner):
        bad = []
        if cell.outer_family == 4:
            ihl = (packet[0] & 0x0F) * 4
            total, flags_frag, ttl = struct.unpack("!H", packet[2:4])[0], struct.unpack("!H", packet[6:8])[0], packet[8]
            if e2e.ipv4_checksum(packet[:ihl]) != 0:
                bad.append("header checksum wrong")
            if total != len(packet):
                bad.append("total length %d, %d bytes follow the MACs" % (total, len(packet)))
            if flags_frag & 0x3FFF:
                bad.append("fragment bits %#06x" % flags_frag)
            if cell.tunnel:
                if ihl != 20:
                    bad.append("IHL %d" % ihl)
                src, dst = esp.ip_addresses(packet)
                if (src, dst) != (cell.gateway, cell.peer):
                    bad.append("%s -> %s, the SA says %s -> %s" % (src, dst, cell.gateway, cell.peer))
                if ttl != cell.effective_ttl():
                    bad.append("TTL %d, the SA says %d" % (ttl, cell.effective_ttl()))
                df = bool(flags_frag & 0x4000)
                want_df = {"set": True, "clear": False}.get(cell.effective_df(),
                                                            inner[0] >> 4 == 4 and bool(inner[6] & 0x40))
                if df != want_df:
                    bad.append("DF %d, df %s wants %d" % (df, cell.effective_df(), want_df))
                inner_tos = inner[1] if inner[0] >> 4 == 4 else ((inner[0] & 0x0F) << 4 | inner[1] >> 4)
                if packet[1] != inner_tos:
                    self.problem("outer-tos", "%s: outer TOS %#04x, inner %#04x (DSCP copied, RFC 4301 §5.1.2.1; "
                                 "ECN normal mode, RFC 6040)" % (where, packet[1], inner_tos), name)
        else:
            plen, hlim = struct.unpack("!H", packet[4:6])[0], packet[7]
            if plen != len(packet) - 40:
                bad.append("payload length %d, %d bytes follow the header" % (plen, len(packet) - 40))
            if cell.tunnel:
                src, dst = esp.ip_addresses(packet)
                if (src, dst) != (cell.gateway, cell.peer):
                    bad.append("%s -> %s, the SA says %s -> %s" % (src, dst, cell.gateway, cell.peer))
                if hlim != cell.effective_ttl():
                    bad.append("hop limit %d, the SA says %d" % (hlim, cell.effective_ttl()))
                tc = (packet[0] & 0x0F) << 4 | packet[1] >> 4
                inner_tos = inner[1] if inner[0] >> 4 == 4 else ((inner[0] & 0x0F) << 4 | inner[1] >> 4)
                if tc != inner_tos:
                    self.problem("outer-tos", "%s: outer traffic class %#04x, inner %#04x (DSCP copied, RFC 4301 "
                                 "§5.1.2.1; ECN normal mode, RFC 6040)" % (where, tc, inner_tos), name)
        proto = packet[9] if cell.outer_family == 4 else packet[6]
        if proto != (17 if cell.udp else 50):
            bad.append("protocol %d" % proto)
        if bad:
            self.problem("bad-outer", "%s: %s" % (where, "; ".join(bad)), name)

    def check_udp(self, where, name, cell, packet):
        hl = esp.ip_header_len(packet)
        sport, dport, ulen, csum = struct.unpack("!HHHH", packet[hl:hl + 8])
        bad = []
        if (sport, dport) != (esp.NAT_T_PORT, esp.NAT_T_PORT):
            bad.append("ports %d -> %d, the SA says %d -> %d" % (sport, dport, esp.NAT_T_PORT, esp.NAT_T_PORT))
        if ulen != len(packet) - hl:
            bad.append("UDP length %d, %d bytes" % (ulen, len(packet) - hl))
        if csum != 0:
            src, dst = esp.ip_addresses(packet)
            segment = bytearray(packet[hl:])
            segment[6:8] = b"\0\0"
            want = esp.udp_checksum(cell.outer_family, src, dst, bytes(segment))
            if csum != want:
                bad.append("UDP checksum %#06x, neither 0 nor the sum %#06x" % (csum, want))
        if packet[hl + 8:hl + 12] == b"\0\0\0\0":
            bad.append("SPI 0 (the non-ESP marker)")
        if bad:
            self.problem("bad-udp", "%s: %s" % (where, "; ".join(bad)), name)

    # -- frames sluice sent to the protected side -------------------------------

    def protected(self, where, f):
        ethertype = struct.unpack("!H", f[12:14])[0]
        packet = f[14:]
        if ethertype not in (0x0800, 0x86DD) or len(packet) < 20:
            return self.problem("unexpected", "%s: ethertype %#06x, %d bytes" % (where, ethertype, len(f)))
        found = esp.esp_offset(packet)
        if found is not None:
            offset, udp = found
            spi = struct.unpack("!I", packet[offset:offset + 4])[0]
            owner = next((c.name for c in self.cells.values() if spi in (c.in_spi, c.out_spi)), None)
            return self.problem("unexpected", "%s: %sESP (SPI %#010x) on the protected port"
                                % (where, "UDP-encapsulated " if udp else "", spi), owner)
        ident = esp.packet_id(packet)
        record = self.records.get(str(ident)) if ident is not None else None
        if record is None:
            return self.problem("unexpected", "%s: no known id (%d bytes: %s…)" % (where, len(f), f[:40].hex()))
        name = record["cell"]
        where = "%s (%s) packet %s" % (where, name, ident)
        if record.get("kind") == "ttl-1" and self.time_exceeded(ethertype, packet):
            # The sender of a packet that arrived with TTL 1 is told (RFC 1812 §5.3.1).
            self.answered += 1
            return
        if record["dir"] != "in":
            return self.problem("wrong-port", "%s: an outbound packet came back in clear on the protected port"
                                % where, name)
        if record["action"] != "forward":
            return self.problem("should-have-dropped", "%s: %s" % (where, record["kind"]), name)
        if not self.see(ident, where, name):
            return
        inner = bytes.fromhex(record["inner"])
        family = inner[0] >> 4
        neighbor = esp.PROTECTED_NEIGHBOR[family][1]
        if f[0:6] != e2e.mac_bytes(neighbor):
            self.problem("wrong-dst-mac", "%s: dst %s, next hop %s" % (where, f[0:6].hex(":"), neighbor), name)
        if f[6:12] != e2e.mac_bytes(self.port_macs[0]):
            self.problem("wrong-src-mac", "%s: src %s, port 0 is %s" % (where, f[6:12].hex(":"), self.port_macs[0]),
                         name)
        if ethertype != (0x0800 if family == 4 else 0x86DD):
            return self.problem("inner-changed", "%s: ethertype %#06x for an IPv%d packet" % (where, ethertype, family),
                                name)
        self.compare_inner(where, name, packet, esp.decrement_ttl(inner))

    @staticmethod
    def time_exceeded(ethertype, packet):
        """Whether `packet` is an ICMP / ICMPv6 Time Exceeded from port 0's address."""
        if ethertype == 0x0800:
            hl = (packet[0] & 15) * 4
            return packet[9] == 1 and packet[hl] == 11 and packet[hl + 1] == 0 \
                and str(esp.ipaddress.ip_address(packet[12:16])) == esp.PROTECTED_GW[0]
        return packet[6] == 58 and packet[40] == 3 and packet[41] == 0 \
            and esp.ipaddress.ip_address(packet[8:24]) == esp.ipaddress.ip_address(esp.PROTECTED_GW[1])

    def finish(self):
        for name, cell in self.cells.items():
            got = self.seqs[name]
            want = list(range(cell.out_seq_start, cell.out_seq_start + len(got)))
            if got != want:
                self.problem("bad-seq", "%s: sequence numbers %s, expected %s…%s in order"
                             % (name, short(got), cell.out_seq_start, cell.out_seq_start + len(got) - 1), name)
        missing = {}
        for ident, record in self.records.items():
            if record["action"] == "forward" and int(ident) not in self.seen and int(ident) not in self.leaked:
                missing.setdefault((record["cell"], record["dir"]), []).append(int(ident))
        for (name, direction), idents in sorted(missing.items()):
            self.counts["missing"] += len(idents) - 1
            self.problem("missing", "%s: %d %s packets never left (%s: ids %s)"
                         % (name, len(idents), direction,
                            "plaintext in, ESP expected on port 1" if direction == "out"
                            else "ESP in, plaintext expected on port 0", short(sorted(idents))), name)

    def summary(self, outputs):
        cells = {}
        for name, cell in self.cells.items():
            mine = [(i, r) for i, r in self.records.items() if r["cell"] == name and r["action"] == "forward"]
            esp_expected = sum(1 for _, r in mine if r["dir"] == "out")
            plain_expected = len(mine) - esp_expected
            esp_matched = sum(1 for i, r in mine if r["dir"] == "out" and int(i) in self.seen)
            plain_matched = sum(1 for i, r in mine if r["dir"] == "in" and int(i) in self.seen)
            seqs = self.seqs[name]
            cells[name] = {
                "ok": not self.cell_problems[name] and esp_matched == esp_expected and plain_matched == plain_expected,
                "esp_expected": esp_expected, "esp_matched": esp_matched,
                "plain_expected": plain_expected, "plain_matched": plain_matched,
                "seq_first": seqs[0] if seqs else None, "seq_last": seqs[-1] if seqs else None,
                "problems": self.cell_problems[name],
            }
        expected = sum(1 for r in self.records.values() if r["action"] == "forward")
        return {
            "ok": all(v == 0 for v in self.counts.values()) and len(self.seen) == expected,
            "matched": len(self.seen),
            "expected_forwarded": expected,
            "counts": self.counts,
            "problems": self.problems,
            "outputs_per_port": outputs,
            "fragmented": self.fragmented,
            "fragment_frames": self.fragment_frames,
            "answered": self.answered,
            "cells": cells,
        }


def short(seqs):
    if len(seqs) <= 8:
        return str(seqs)
    return "[%s, …, %s] (%d)" % (", ".join(map(str, seqs[:4])), ", ".join(map(str, seqs[-2:])), len(seqs))


def check(directory, port_macs):
    with open(os.path.join(directory, "expect.json")) as f:
        expect = json.load(f)
    checker = Checker(expect, port_macs)
    outputs = checker.run(directory)
    return checker.summary(outputs)


# -- selftest -----------------------------------------------------------------------

def vectors_path():
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.normpath(os.path.join(here, "..", "..", ".."))
    for path in (os.environ.get("SLUICE_VECTORS"), os.path.join(root, "..", "shared", "vectors"),
                 os.path.join(root, "Tests", "TestSupport", "vectors")):
        if path and os.path.exists(os.path.join(path, "esp-known-answers.json")):
            return os.path.join(path, "esp-known-answers.json")
    return None


def selftest_vectors(failures):
    """scapy against the known-answer vectors (RFC 7634 Appendix A; the
    McGrew GCM ESP cases, ESN ones included): decrypt, and encrypt where
    scapy's minimal padding is what the vector used."""
    path = vectors_path()
    if path is None:
        return {"vectors": "not found (set SLUICE_VECTORS to the folder of esp-known-answers.json)"}
    with open(path) as f:
        cases = json.load(f)["cases"]
    done = []
    for case in cases:
        key = bytes.fromhex(case["key_and_salt"])
        algo = esp.SCAPY_AEAD[case["aead"]][0]
        seq = int(case["seq"], 16)
        esn = case.get("esn", False)
        iv = bytes.fromhex(case["iv"])
        spi = int(case["spi"], 16)
        if "esp_packet_with_outer_ipv4" in case:
            wire = bytes.fromhex(case["esp_packet_with_outer_ipv4"])
            inner = bytes.fromhex(case["inner_packet"])
            sa = esp.SecurityAssociation(esp.ESP, spi=spi, crypt_algo=algo, crypt_key=key,
                                         tunnel_header=IP(src=case["tunnel_src"], dst=case["tunnel_dst"]))
            got = bytes(sa.decrypt(IP(wire)))
            if got != inner:
                failures.append("vector %s: scapy decrypts to %s" % (case["name"], got.hex()))
            outer = IP(src=case["tunnel_src"], dst=case["tunnel_dst"], id=int(case["outer_ipv4_id"], 16),
                       ttl=case["outer_ttl"])
            again = esp.scapy_encrypt(sa, IP(inner), seq, iv, False, outer=outer)
            if again != wire:
                failures.append("vector %s: scapy encrypts to %s" % (case["name"], again.hex()))
        else:
            wire = bytes.fromhex(case["esp"])
            plaintext = bytes.fromhex(case["plaintext"])
            # scapy's ESP decryption itself (CryptAlgo.decrypt), without its IP
            # reassembly, which would dissect an empty payload as a default header.
            sa = esp.SecurityAssociation(esp.ESP, spi=spi, crypt_algo=algo, crypt_key=key, esn_en=esn)
            try:
                got = sa.crypt_algo.decrypt(sa, esp.ESP(wire), sa.crypt_key, esn_en=esn, esn=seq >> 32)
                padlen = plaintext[-2]
                want = plaintext[:len(plaintext) - 2 - padlen]
                if esp.raw(got.data) != want or got.nh != plaintext[-1] or got.padlen != padlen:
                    failures.append("vector %s: scapy decrypts to %s nh %d, expected %s nh %d"
                                    % (case["name"], esp.raw(got.data).hex(), got.nh, want.hex(), plaintext[-1]))
            except IPSecIntegrityError as error:
                failures.append("vector %s: scapy cannot decrypt it: %r" % (case["name"], error))
            opened = esp.aead_open(case["aead"], key, spi, seq, esn, wire)
            if opened != plaintext:
                failures.append("vector %s: the cryptography AEAD opens it to %s" % (case["name"],
                                                                                     opened.hex() if opened else None))
        done.append(case["name"])
    return {"vectors": done}


def selftest_roundtrip(cells, failures):
    """Per cell, scapy seals packets with each SA across its sequence
    numbers and a fresh scapy SA opens them (what check does)."""
    traffic = esp.Traffic(99, first_id=900000)
    n = 0
    for cell in cells:
        for direction in ("in", "out"):
            start = cell.peer_seq_start if direction == "in" else cell.out_seq_start
            src_net, dst_net = (cell.remote_net, cell.local_net) if direction == "in" else \
                (cell.local_net, cell.remote_net)
            for seq in (start, start + 5, start + 6, start + 7):
                ident, inner = traffic.inner(src_net, dst_net)
                if direction == "in":
                    packet = esp.peer_encrypt(cell, inner, seq, traffic.iv())
                    key = cell.in_key
                    spi = cell.in_spi
                else:
                    # Seal with the outbound SA as the gateway would, IV = seq.
                    sa = cell.scapy_sa("out")
                    if cell.tunnel:
                        sa.tunnel_header = IP(src=cell.gateway, dst=cell.peer) if cell.outer_family == 4 else \
                            IPv6(src=cell.gateway, dst=cell.peer)
                    packet = esp.scapy_encrypt(sa, IP(inner) if cell.inner_family == 4 else IPv6(inner), seq,
                                               seq.to_bytes(8, "big"), cell.esn)
                    if cell.udp:
                        packet = esp.encapsulate_udp(packet)
                    key, spi = cell.out_key, cell.out_spi
                if cell.udp:
                    hl = esp.ip_header_len(packet)
                    ulen = struct.unpack("!H", packet[hl + 4:hl + 6])[0]
                    if ulen != len(packet) - hl:
                        failures.append("%s %s: UDP length %d for %d bytes"
                                        % (cell.name, direction, ulen, len(packet) - hl))
                    packet = esp.strip_udp(packet)
                sa = cell.scapy_sa(direction)
                try:
                    got = bytes(esp.scapy_decrypt(sa, packet, seq >> 32, cell.esn))
                except IPSecIntegrityError:
                    failures.append("%s %s seq %d: scapy cannot open what scapy sealed" % (cell.name, direction, seq))
                    continue
                if got != inner:
                    failures.append("%s %s seq %d: round trip changed the packet" % (cell.name, direction, seq))
                if cell.esn:
                    try:
                        esp.scapy_decrypt(cell.scapy_sa(direction), packet, (seq >> 32) + 1, True)
                        failures.append("%s %s seq %d: opens with the wrong high half" % (cell.name, direction, seq))
                    except IPSecIntegrityError:
                        pass
                hl = esp.ip_header_len(packet)
                if esp.aead_open(cell.aead, key, spi, seq, cell.esn, packet[hl:]) is None:
                    failures.append("%s %s seq %d: the cryptography AEAD disagrees with scapy"
                                    % (cell.name, direction, seq))
                n += 1
    return n


FAKE_MACS = {0: "02:70:63:61:70:00", 1: "02:70:63:61:70:01"}
NEGATIVE_CELLS = ["aes-gcm-256/tunnel-6in4/esn/udp", "chacha20-poly1305/transport-4/noesn/esp",
                  "aes-gcm-128/tunnel-4in6/esn/esp", "aes-gcm-128/transport-6/esn/udp"]


def selftest_matrix(names, count, failures):
    """make + the model gateway + check: clean; then each corruption the
    check must catch."""
    results = {}
    with tempfile.TemporaryDirectory(prefix="esp-selftest-") as directory:
        cells = make_cells(names, "per-cell")
        write_config(directory, cells)
        plan = matrix_traffic(cells, count, seed=7)
        summary = write_plan(directory, cells, plan)
        with open(os.path.join(directory, "expect.json")) as f:
            expect = json.load(f)
        import esp_reference
        drops = esp_reference.run(directory, expect, cells, FAKE_MACS)
        result = check(directory, FAKE_MACS)
        if drops or not result["ok"] or result["matched"] != summary["forwarded"]:
            failures.append("clean matrix run: drops %s, check %s" % (drops, json.dumps(result)[:1500]))
        results["clean"] = {"ok": result["ok"], "matched": result["matched"], "cells": len(result["cells"])}

        # The corruptions test the checker, not the cells: four cells will do.
        cells = make_cells(NEGATIVE_CELLS, "per-cell")
        write_config(directory, cells)
        write_plan(directory, cells, matrix_traffic(cells, count, seed=8))
        with open(os.path.join(directory, "expect.json")) as f:
            expect = json.load(f)

        def corrupt(port_wanted, fn):
            def mutate(port, frames):
                return fn(frames) if port == port_wanted else frames
            return mutate

        def edit(frames, index, fn):
            frames[index] = fn(frames[index])
            return frames

        def esp_at(frame):
            packet = frame[14:]
            hl = esp.ip_header_len(packet)
            proto = packet[9] if packet[0] >> 4 == 4 else packet[6]
            return 14 + hl + (8 if proto == 17 else 0)

        def reseal_iv(frame):
            """Seal the same packet again with IV != seq (still authentic)."""
            b = bytearray(frame)
            off = esp_at(frame)
            spi = struct.unpack("!I", b[off:off + 4])[0]
            cell = next(c for c in cells if c.out_spi == spi)
            esp_bytes = bytes(b[off:])
            low = struct.unpack("!I", esp_bytes[4:8])[0]
            seq = ((cell.out_seq_start >> 32) << 32) | low
            if cell.esn and low < (cell.out_seq_start & 0xFFFFFFFF):
                seq += 1 << 32
            payload = esp.aead_open(cell.aead, cell.out_key, spi, seq, cell.esn, esp_bytes)
            key, salt = cell.out_key[:-4], cell.out_key[-4:]
            iv = b"\x5a" * 8
            aad = struct.pack("!III", spi, seq >> 32, low) if cell.esn else struct.pack("!II", spi, low)
            cipher = esp.ChaCha20Poly1305(key) if cell.aead.startswith("chacha") else esp.AESGCM(key)
            sealed = esp_bytes[:8] + iv + cipher.encrypt(salt + iv, payload, aad)
            return bytes(b[:off]) + sealed

        def ttl_of(frame):
            return frame[22] if frame[14] >> 4 == 4 else frame[21]

        def set_ttl(frame, value):
            b = bytearray(frame)
            if b[14] >> 4 == 4:
                b[22] = value
                b[24:26] = b"\0\0"
                b[24:26] = struct.pack("!H", e2e.ipv4_checksum(bytes(b[14:34])))
            else:
                b[21] = value
            return bytes(b)

        def first_tunnel_frame(frames):
            for i, fr in enumerate(frames):
                off = esp_at(fr)
                spi = struct.unpack("!I", fr[off:off + 4])[0]
                cell = next(c for c in cells if c.out_spi == spi)
                if cell.tunnel:
                    return i
            return 0

        negatives = [
            ("drop one ESP frame", 1, lambda fr: fr[:3] + fr[4:], {"missing": 1}),
            ("duplicate a plaintext frame", 0, lambda fr: fr + [fr[0]], {"duplicates": 1}),
            ("swap two ESP frames of one SA", 1, None, {"bad-seq": 1}),
            ("flip an ICV bit", 1, lambda fr: edit(fr, 2, lambda f: flip(f, len(f) - 1, 0)), {"undecryptable": 1}),
            ("IV other than the sequence number", 1, lambda fr: edit(fr, 5, reseal_iv), {"bad-iv": 1}),
            ("outer TTL off by one", 1, lambda fr: edit(fr, first_tunnel_frame(fr), lambda f: set_ttl(f, ttl_of(f) - 1)),
             {"bad-outer": 1}),
            ("plaintext TTL not decremented", 0, lambda fr: edit(fr, 1, lambda f: set_ttl(f, ttl_of(f) + 1)),
             {"bad-ttl": 1}),
            ("wrong destination MAC", 0, lambda fr: edit(fr, 0, lambda f: b"\x02\0\0\0\0\x99" + f[6:]),
             {"wrong-dst-mac": 1}),
            ("plaintext leaked to the unprotected port", 1, lambda fr: fr + [esp.frame(bytes.fromhex(
                next(r for r in expect["packets"].values() if r["dir"] == "out")["inner"]))], {"unexpected": 1}),
        ]
        for label, port, fn, want in negatives:
            if fn is None:
                def fn(frames):
                    # Two frames of the same SA, swapped.
                    spis = {}
                    for i, fr in enumerate(frames):
                        off = esp_at(fr)
                        spis.setdefault(fr[off:off + 4], []).append(i)
                    a, b = next(v for v in spis.values() if len(v) >= 2)[:2]
                    frames[a], frames[b] = frames[b], frames[a]
                    return frames
            esp_reference.run(directory, expect, cells, FAKE_MACS, mutate=corrupt(port, fn))
            result = check(directory, FAKE_MACS)
            found = {k: v for k, v in result["counts"].items() if v}
            if result["ok"] or any(found.get(k, 0) < v for k, v in want.items()):
                failures.append("negative case '%s': check found %s, expected at least %s" % (label, found, want))
            results[label] = found
    return results


def group_drops(counters, groups):
    """What the Swift test does with sluice's counters: each nonzero
    counter goes to the first group one of whose strings its name contains."""
    sums = {g["reason"]: 0 for g in groups}
    unmatched = {}
    for name, value in counters.items():
        group = next((g["reason"] for g in groups if any(m in name for m in g["match"])), None)
        if group is None:
            unmatched[name] = value
        else:
            sums[group] += value
    return sums, unmatched


def selftest_tamper(failures):
    with tempfile.TemporaryDirectory(prefix="esp-selftest-tamper-") as directory:
        cells = tamper_cells("per-cell")
        write_config(directory, cells)
        plan, drops = tamper_plan(cells, seed=11)
        summary = write_plan(directory, cells, plan, drops=drops)
        with open(os.path.join(directory, "expect.json")) as f:
            expect = json.load(f)
        import esp_reference
        counters = esp_reference.run(directory, expect, cells, FAKE_MACS)
        sums, unmatched = group_drops(counters, drops)
        want = {g["reason"]: g["count"] for g in drops}
        if sums != want or unmatched:
            failures.append("tamper: the model gateway counted %s (grouped %s, unmatched %s), expected %s"
                            % (counters, sums, unmatched, want))
        result = check(directory, FAKE_MACS)
        if not result["ok"] or result["matched"] != summary["forwarded"]:
            failures.append("tamper: check %s" % json.dumps(result)[:1500])
        return {"inputs": summary["inputs"], "forwarded": summary["forwarded"], "model_counters": counters,
                "check_ok": result["ok"]}


def selftest(args):
    started = time.time()
    failures = []
    names = args.cell or esp.all_cell_names()
    report = selftest_vectors(failures)
    report["roundtrips"] = selftest_roundtrip([esp.Cell(n) for n in names] + tamper_cells("per-cell"), failures)
    report["matrix"] = selftest_matrix(names, args.count, failures)
    report["tamper"] = selftest_tamper(failures)
    report["cells"] = len(names)
    report["scapy_algorithms"] = sorted(esp.CRYPT_ALGOS)
    report["seconds"] = round(time.time() - started, 1)
    report["failures"] = failures
    report["ok"] = not failures
    return report


# -- main ---------------------------------------------------------------------------

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["make-config", "make-traffic", "make", "make-tamper", "make-fragments",
                                            "make-outbound-fragments", "check", "selftest", "list-cells"])
    parser.add_argument("--dir")
    parser.add_argument("--cell", action="append", default=[], help="AEAD/MODE/ESN/ENCAP (repeatable)")
    parser.add_argument("--count", type=int, default=None,
                        help="packets per cell and direction (default 24; selftest 8)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--engine", default="per-cell", choices=["per-cell", "none", "auto", "ipsec-mb", "sodium"])
    parser.add_argument("--port-mac", action="append", default=[], help="PORT=MAC, sluice's port MACs (check)")
    args = parser.parse_args()

    if args.command == "list-cells":
        return e2e.emit({"cells": esp.all_cell_names(), "tamper_cells": [t[0] for t in TAMPER_CELLS]})
    if args.command == "selftest":
        args.count = args.count or 8
        report = selftest(args)
        e2e.emit(report)
        sys.exit(0 if report["ok"] else 1)
    if not args.dir:
        parser.error("--dir is required")
    os.makedirs(args.dir, exist_ok=True)
    if args.command == "check":
        macs = dict(FAKE_MACS)
        for item in args.port_mac:
            port, mac = item.split("=", 1)
            macs[int(port)] = mac.lower()
        return e2e.emit(check(args.dir, macs))
    if args.command == "make-tamper":
        cells = tamper_cells(args.engine)
        write_config(args.dir, cells)
        plan, drops = tamper_plan(cells, args.seed)
        answered = sum(1 for r in plan.records.values() if r.get("kind") == "ttl-1")
        return e2e.emit(write_plan(args.dir, cells, plan, drops=drops, extra={"answered": answered}))
    if not args.cell:
        parser.error("give at least one --cell (see list-cells)")
    try:
        cells = make_cells(args.cell, args.engine)
    except ValueError as error:
        parser.error(str(error))
    if len({c.index for c in cells}) != len(cells):
        parser.error("a cell is named twice")
    config = write_config(args.dir, cells)
    if args.command == "make-config":
        return e2e.emit({"config": config, "cells": [c.name for c in cells],
                         "config_lines": sum(len(c.config_lines()) for c in cells)})
    if args.command == "make-fragments":
        plan = fragment_traffic(cells, args.count or 8, args.seed)
        return e2e.emit(write_plan(args.dir, cells, plan, extra={"per_cell": args.count or 8}))
    if args.command == "make-outbound-fragments":
        if any(not c.tunnel and c.inner_family == 6 for c in cells):
            parser.error("make-outbound-fragments: transport-mode IPv6 is not fragmented (the host is its source)")
        with open(config, "a") as f:
            f.write("\nport 1 mtu %d\n" % OUTBOUND_FRAGMENT_MTU)
        plan = outbound_fragment_traffic(cells, args.count or 8, args.seed)
        return e2e.emit(write_plan(args.dir, cells, plan, extra={"per_cell": args.count or 8},
                                   mtu={"1": OUTBOUND_FRAGMENT_MTU}))
    plan = matrix_traffic(cells, args.count or 24, args.seed)
    e2e.emit(write_plan(args.dir, cells, plan, extra={"per_cell": args.count or 24}))


if __name__ == "__main__":
    main()
