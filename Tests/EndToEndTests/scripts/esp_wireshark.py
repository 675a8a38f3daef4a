#!/usr/bin/python3
"""A second independent ESP peer: Wireshark's ESP dissector (tshark; its
AEADs are libgcrypt's) decrypts what sluice sent in an esp_interop.py run
and checks every ICV. Cells, SAs and expected packets come from that run's
DIR/expect.json; sluice's ESP output is DIR/out1.pcap.

  esp_wireshark.py check --dir DIR

For every cell Wireshark can read, each ESP frame sluice sent with the
cell's outbound SPI must be authentic by Wireshark's ICV check
(esp.icv_good), and the data Wireshark finds inside (esp.contained_data)
must be exactly what went in: tunnel mode the inner IP packet with TTL /
hop limit - 1, transport mode the IP payload. As a control, the first ESP
frame of each cell is written again with one ciphertext bit flipped: tshark
must then report a bad ICV (esp.icv_bad), or its "authentic" means nothing.

Wireshark 4.0 (Debian 12) has AES-GCM with a 16-byte ICV in its ESP SA
table, but neither ChaCha20-Poly1305 nor extended sequence numbers: those
cells are listed as "unsupported" and not checked here (scapy still checks
them in esp_interop.py).

Prints one JSON object:
  {"tshark": VERSION, "ok": BOOL, "problems": [TEXT...],
   "cells": {CELL: {"frames": N, "authentic": N, "matched": N, "controlRejected": BOOL, "problems": [...]}},
   "unsupported": [CELL...]}
or {"tshark": null, ...} when tshark is not installed.
"""

import argparse
import json
import os
import shutil
import subprocess
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import esp_cells as esp  # noqa: E402
import sluice_e2e as e2e  # noqa: E402

# Wireshark's name of the AEAD in its ESP SA table (RFC 4106 with a 16-byte ICV).
WIRESHARK_AEAD = {"aes-gcm-128": "AES-GCM with 16 octet ICV [RFC4106]",
                  "aes-gcm-256": "AES-GCM with 16 octet ICV [RFC4106]"}
FIELDS = ["frame.number", "esp.spi", "esp.sequence", "esp.icv_good", "esp.icv_bad", "esp.contained_data"]


def flagged(value):
    """A boolean field as tshark prints it (1 or True; empty when absent)."""
    return value in ("1", "True")


def supported(cell):
    return cell.aead in WIRESHARK_AEAD and not cell.esn


def sa_record(cell):
    """One row of Wireshark's ESP SA table: the outer IP version, any
    addresses, the cell's outbound SPI (unique per cell), key || salt, no
    separate authentication algorithm."""
    fields = ["IPv%d" % cell.outer_family, "*", "*", "0x%08x" % cell.out_spi, WIRESHARK_AEAD[cell.aead],
              "0x" + cell.out_key.hex(), "NULL", ""]
    return "uat:esp_sa:" + ",".join('"%s"' % f for f in fields)


# What tshark dissects: the frame down to ESP and the inner IP header. The
# inner payload (random ports, tagged bytes) stays data: a port-based
# dissector that throws on it (DNS on port 53, say) would cut the ESP
# dissector short before it reports the ICV check.
DISSECTED = {"frame", "eth", "ethertype", "ip", "ipv6", "udp", "udpencap", "esp", "data"}


def profile(directory):
    """A Wireshark configuration folder that disables every other protocol."""
    folder = os.path.join(directory, "wireshark-profile")
    os.makedirs(folder, exist_ok=True)
    listed = subprocess.run(["tshark", "-G", "protocols"], capture_output=True, text=True, timeout=60)
    names = [line.split("\t")[2] for line in listed.stdout.splitlines() if line.count("\t") >= 2]
    if not {"esp", "udpencap"} <= set(names):
        raise RuntimeError("tshark -G protocols lists no esp/udpencap dissector")
    with open(os.path.join(folder, "disabled_protos"), "w") as f:
        f.write("".join(name + "\n" for name in names if name not in DISSECTED))
    return folder


def tshark(path, cells, config):
    args = ["tshark", "-n", "-r", path, "-o", "esp.enable_encryption_decode:TRUE",
            "-o", "esp.enable_authentication_check:TRUE", "-d", "udp.port==%d,udpencap" % esp.NAT_T_PORT]
    for cell in cells:
        args += ["-o", sa_record(cell)]
    args += ["-T", "fields", "-E", "separator=\t", "-E", "occurrence=l"]
    for field in FIELDS:
        args += ["-e", field]
    env = dict(os.environ, WIRESHARK_CONFIG_DIR=config)
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, env=env)
    if result.returncode != 0:
        raise RuntimeError("tshark exited %d: %s" % (result.returncode, result.stderr.strip()[-500:]))
    rows = {}
    for line in result.stdout.splitlines():
        values = line.split("\t")
        if len(values) != len(FIELDS):
            continue
        row = dict(zip(FIELDS, values))
        rows[int(row["frame.number"])] = row
    return rows


def expected_contents(cell, inner):
    """What sluice encrypted for `inner`: tunnel the forwarded packet, transport its payload."""
    forwarded = esp.decrement_ttl(inner)
    return forwarded if cell.tunnel else esp.transport_split(inner)[0]


def check(directory):
    with open(os.path.join(directory, "expect.json")) as f:
        expect = json.load(f)
    cells = [esp.Cell.from_json(c) for c in expect["cells"]]
    readable = [c for c in cells if supported(c)]
    by_spi = {c.out_spi: c for c in readable}
    report = {"tshark": None, "ok": False, "problems": [], "unsupported": [c.name for c in cells if not supported(c)],
              "cells": {c.name: {"frames": 0, "authentic": 0, "matched": 0, "controlRejected": False, "problems": []}
                        for c in readable}}
    if shutil.which("tshark") is None:
        report["problems"].append("tshark is not installed")
        return report
    version = subprocess.run(["tshark", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    report["tshark"] = version.strip()
    if not readable:
        report["ok"] = True
        return report

    def problem(cell, text):
        entry = report["cells"][cell.name]["problems"]
        if len(entry) < 10:
            entry.append(text)

    path = os.path.join(directory, "out1.pcap")
    frames = e2e.read_pcap(path)
    config = profile(directory)
    rows = tshark(path, readable, config)
    controls = []
    for number, frame in enumerate(frames, start=1):
        found = esp.esp_offset(frame[14:])  # after the Ethernet header
        if found is None:
            continue
        offset = 14 + found[0]
        spi = struct.unpack("!I", frame[offset:offset + 4])[0]
        cell = by_spi.get(spi)
        if cell is None:
            continue
        stats = report["cells"][cell.name]
        stats["frames"] += 1
        if stats["frames"] == 1:
            # One ciphertext bit (the first byte after SPI, sequence and IV).
            tampered = bytearray(frame)
            tampered[offset + 16] ^= 0x01
            controls.append((cell, bytes(tampered)))
        row = rows.get(number)
        if row is None or row["esp.spi"] == "":
            problem(cell, "frame %d: tshark did not dissect it as ESP" % number)
            continue
        if not flagged(row["esp.icv_good"]):
            problem(cell, "frame %d (seq %s): Wireshark's ICV check failed (icv_good=%r, icv_bad=%r)"
                    % (number, row["esp.sequence"], row["esp.icv_good"], row["esp.icv_bad"]))
            continue
        stats["authentic"] += 1
        contained = bytes.fromhex(row["esp.contained_data"].replace(":", ""))
        ident = esp.packet_id(contained)
        record = expect["packets"].get(str(ident)) if ident is not None else None
        if record is None or record["cell"] != cell.name or record["dir"] != "out":
            problem(cell, "frame %d: decrypted data carries no packet id of this cell's outbound traffic" % number)
            continue
        want = expected_contents(cell, bytes.fromhex(record["inner"]))
        if contained != want:
            at = next((i for i, (a, b) in enumerate(zip(contained, want)) if a != b), min(len(contained), len(want)))
            problem(cell, "frame %d (packet %s): Wireshark decrypted %d bytes, expected %d; first difference at "
                    "byte %d: %s… against %s…" % (number, ident, len(contained), len(want), at,
                                                 contained[at:at + 16].hex(), want[at:at + 16].hex()))
            continue
        stats["matched"] += 1

    if controls:
        control_path = os.path.join(directory, "wireshark-control.pcap")
        e2e.write_pcap(control_path, [frame for _, frame in controls])
        control_rows = tshark(control_path, readable, config)
        for number, (cell, _) in enumerate(controls, start=1):
            row = control_rows.get(number, {})
            rejected = flagged(row.get("esp.icv_bad")) and not flagged(row.get("esp.icv_good"))
            report["cells"][cell.name]["controlRejected"] = rejected
            if not rejected:
                problem(cell, "control: one flipped ciphertext bit and tshark still says icv_good=%r icv_bad=%r"
                        % (row.get("esp.icv_good"), row.get("esp.icv_bad")))

    report["ok"] = all(s["frames"] > 0 and s["authentic"] == s["frames"] and s["matched"] == s["frames"]
                       and s["controlRejected"] and not s["problems"] for s in report["cells"].values())
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check")
    p.add_argument("--dir", required=True)
    args = parser.parse_args()
    e2e.emit(check(args.dir))


if __name__ == "__main__":
    main()
