#!/usr/bin/python3
"""A stand-in for the sluice binary, for testing the ESP interop harness
itself (ESPInteropTests.swift) while the ESP data path does not exist:

  SLUICE_ESP_INTEROP=1 SLUICE_BIN=Tests/EndToEndTests/scripts/esp_fake_sluice.py \
      swift test --filter ESPInterop

It takes sluice's command line, runs the model gateway of esp_reference.py
over the pcaps esp_interop.py wrote (it reads expect.json next to the
config, so it only serves those runs), prints `sluice: ready`, `stats:`
lines until SIGTERM, then the `final:` block, and exits 0. A green suite
with it says the harness is consistent, nothing about sluice.

FAKE_RENAME=A:B counts drop reason A under B (to see a counter mismatch fail).
"""

import json
import os
import signal
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import esp_cells as esp  # noqa: E402
import esp_reference  # noqa: E402
import sluice_e2e as e2e  # noqa: E402

MACS = {0: "02:70:63:61:70:00", 1: "02:70:63:61:70:01"}  # net_pcap's defaults


def main():
    args = sys.argv[1:]
    if "--config" not in args:
        sys.stderr.write("sluice: error: esp_fake_sluice.py needs --config\n")
        sys.exit(1)
    config = args[args.index("--config") + 1]
    directory = os.path.dirname(os.path.abspath(config))
    with open(os.path.join(directory, "expect.json")) as f:
        expect = json.load(f)
    cells = [esp.Cell.from_json(c) for c in expect["cells"]]
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    signal.signal(signal.SIGINT, lambda *_: stop.append(True))
    print("sluice: ready (1 workers)", flush=True)

    rx = {int(p): sum(len(e2e.read_pcap(os.path.join(directory, n))) for n in files["rx"])
          for p, files in expect["ports"].items()}
    drops = esp_reference.run(directory, expect, cells, MACS)
    if os.environ.get("FAKE_RENAME"):
        a, b = os.environ["FAKE_RENAME"].split(":")
        drops[b] = drops.get(b, 0) + drops.pop(a, 0)
    tx = {int(p): len(e2e.read_pcap(os.path.join(directory, files["tx"][0]))) for p, files in expect["ports"].items()}
    received, sent, dropped = sum(rx.values()), sum(tx.values()), sum(drops.values())
    while not stop:
        print("stats: rx=%d tx=%d drop=%d rx_pps=0 tx_pps=0" % (received, sent, dropped), flush=True)
        time.sleep(0.1)
    reasons = "".join(" %s=%d" % kv for kv in sorted(drops.items()))
    for p in sorted(rx):
        print("final: port %d name=net_pcap%d mac=%s rx=%d tx=%d missed=0 rx_errors=0 tx_errors=0 rx_nombuf=0"
              % (p, p, MACS[p], rx[p], tx[p]))
    print("final: core 1 queue=0 socket=0 rx=%d tx=%d drop=%d%s" % (received, sent, dropped, reasons))
    print("final: total rx=%d tx=%d drop=%d%s" % (received, sent, dropped, reasons), flush=True)


if __name__ == "__main__":
    main()
