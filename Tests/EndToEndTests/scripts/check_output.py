#!/usr/bin/python3
"""Checks the gateway's TX pcaps in DIR against DIR/expect.json (written by
make_traffic.py), frame by frame, and prints a JSON summary on stdout.

  check_output.py --dir DIR --port-mac 0=02:70:63:61:70:00 --port-mac 1=...

Each output frame is matched to its input by the id in its payload, so the
order the gateway emits frames in does not matter. For every match: it left
by the expected port; destination MAC = the next hop's, source MAC = the
port's; TTL / hop limit one less; the IPv4 header checksum is what scapy
recomputes; everything else (VLAN tag, options, L4 header, payload, padding)
byte for byte the input. Every forwardable input must appear exactly once,
no dropped one may appear.
"""

import argparse
import json
import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sluice_e2e as e2e  # noqa: E402

try:
    from scapy.all import IP, Ether, IPv6  # noqa: E402
except ImportError as error:  # pragma: no cover
    e2e.emit({"ok": False, "error": "scapy is missing for %s: %s" % (sys.executable, error)})
    sys.exit(3)

COUNTERS = ["missing", "duplicates", "unexpected", "should_have_dropped", "wrong_port", "wrong_dst_mac",
            "wrong_src_mac", "bad_ttl", "bad_ipv4_checksum", "payload_changed", "other_bytes_changed",
            "missing_files"]


def ip_layer(frame):
    packet = Ether(frame)
    if IP in packet:
        return packet[IP]
    if IPv6 in packet:
        return packet[IPv6]
    return None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--port-mac", action="append", default=[], help="PORT=MAC, the gateway's port MACs")
    args = parser.parse_args()

    port_macs = {}
    for item in args.port_mac:
        port, mac = item.split("=", 1)
        port_macs[int(port)] = mac.lower()
    with open(os.path.join(args.dir, "expect.json")) as f:
        expect = json.load(f)
    packets = expect["packets"]

    counts = {name: 0 for name in COUNTERS}
    problems = []
    seen = {}
    outputs_per_port = {}
    outputs_per_file = {}

    def problem(kind, text):
        counts[kind] += 1
        if len(problems) < 12:
            problems.append("%s: %s" % (kind, text))

    for port_text, files in sorted(expect["ports"].items()):
        port = int(port_text)
        outputs_per_port[port_text] = 0
        for name in files["tx"]:
            path = os.path.join(args.dir, name)
            if not os.path.exists(path):
                problem("missing_files", "%s was not written (port %d)" % (name, port))
                outputs_per_file[name] = 0
                continue
            frames = e2e.read_pcap(path)
            outputs_per_file[name] = len(frames)
            outputs_per_port[port_text] += len(frames)
            for index, out in enumerate(frames):
                where = "%s frame %d" % (name, index)
                ident = e2e.packet_id(out)
                exp = packets.get(str(ident)) if ident is not None else None
                if exp is None:
                    problem("unexpected", "%s has no known id (%d bytes: %s…)" % (where, len(out), out[:34].hex()))
                    continue
                if exp["action"] != "forward":
                    problem("should_have_dropped", "%s is packet %d, expected drop %s" % (where, ident, exp["reason"]))
                    continue
                seen[ident] = seen.get(ident, 0) + 1
                if seen[ident] > 1:
                    problem("duplicates", "%s: packet %d sent %d times" % (where, ident, seen[ident]))
                    continue
                check_frame(where, ident, out, exp, port, port_macs, problem)

    for ident, exp in packets.items():
        if exp["action"] == "forward" and int(ident) not in seen:
            problem("missing", "packet %s (to port %d via %s) never left" % (ident, exp["port"], exp["neighbor"]))

    expected_forwarded = sum(1 for e in packets.values() if e["action"] == "forward")
    summary = dict(counts)
    summary.update({
        "ok": all(v == 0 for v in counts.values()) and len(seen) == expected_forwarded,
        "matched": len(seen),
        "expected_forwarded": expected_forwarded,
        "outputs_per_port": outputs_per_port,
        "outputs_per_file": outputs_per_file,
        "problems": problems,
    })
    e2e.emit(summary)


def check_frame(where, ident, out, exp, port, port_macs, problem):
    frame = bytes.fromhex(exp["frame"])
    # The gateway strips an 802.1Q/802.1ad tag (it has no VLAN interfaces):
    # compare against the untagged input.
    if e2e.l3_offset(frame)[0] == 18:
        frame = frame[0:12] + frame[16:]
    label = "%s (packet %d)" % (where, ident)
    if port != exp["port"]:
        problem("wrong_port", "%s left by port %d, expected port %d" % (label, port, exp["port"]))
    if out[0:6] != e2e.mac_bytes(exp["dst_mac"]):
        problem("wrong_dst_mac", "%s dst %s, expected %s" % (label, out[0:6].hex(":"), exp["dst_mac"]))
    src = port_macs.get(exp["port"])
    if src is None or out[6:12] != e2e.mac_bytes(src):
        problem("wrong_src_mac", "%s src %s, expected port %d's MAC %s" % (label, out[6:12].hex(":"), exp["port"], src))

    before, after = ip_layer(frame), ip_layer(out)
    flagged = False
    if after is None or type(after) is not type(before):
        problem("other_bytes_changed", "%s is no longer %s" % (label, type(before).__name__))
        return
    if isinstance(before, IP):
        if after.ttl != before.ttl - 1:
            problem("bad_ttl", "%s TTL %d, input had %d" % (label, after.ttl, before.ttl))
            flagged = True
        recomputed = after.copy()
        recomputed.chksum = None
        recomputed = IP(bytes(recomputed)).chksum
        if after.chksum != recomputed:
            problem("bad_ipv4_checksum", "%s checksum %#06x, scapy computes %#06x" % (label, after.chksum, recomputed))
            flagged = True
        header = before.ihl * 4
    else:
        if after.hlim != before.hlim - 1:
            problem("bad_ttl", "%s hop limit %d, input had %d" % (label, after.hlim, before.hlim))
            flagged = True
        header = 40
    offset, _ = e2e.l3_offset(frame)
    if out[offset + header:] != frame[offset + header:]:
        problem("payload_changed", "%s bytes after the IP header differ (%d → %d bytes)"
                % (label, len(frame) - offset - header, len(out) - offset - header))
        flagged = True
    expected = e2e.forwarded(frame, exp["dst_mac"], src or "00:00:00:00:00:00")
    if out[12:] != expected[12:] and not flagged:
        first = next(i for i in range(min(len(out), len(expected)) + 1)
                     if i >= min(len(out), len(expected)) or out[i] != expected[i])
        problem("other_bytes_changed", "%s differs from the expected frame at byte %d (%d vs %d bytes)"
                % (label, first, len(out), len(expected)))


if __name__ == "__main__":
    main()
