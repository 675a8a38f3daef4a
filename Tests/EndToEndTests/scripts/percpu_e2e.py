"""Per-CPU SAs (RFC 9611) on the real gateway with two workers.

    percpu_e2e.py make  --dir D [--shared-sa atomic|handoff]
    percpu_e2e.py check --dir D

`make` writes sluice.conf and two pcaps for port 0's two RX queues (queue q
is served by the q-th worker: lcores 1 and 2). Three policies protect with a
reqid each:
  reqid 7: an SA for cpu 1, one for cpu 2 and a fallback — each worker uses
           its own, the fallback is never used;
  reqid 8: an SA for cpu 1 only, no fallback — worker 2 drops (no_outbound_sa)
           and raises ACQUIRE;
  reqid 9: an SA for cpu 1 and a fallback — worker 2 uses the fallback;
  reqid 10: only a fallback — both workers use it (shared-sa: with atomic
           both seal it, with handoff its owner, lcore 1, seals everything).
`check` decrypts port 1's output with scapy and checks that every packet
left under the SA of its worker, each SA's numbers 1, 2, 3… without gap or
repeat (two workers sealing one SA interleave them across their queues),
and reports which TX queues each SA left by.
"""

import argparse
import json
import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_e2e as e2e  # noqa: E402
import spd_e2e as spd  # noqa: E402
from spd_e2e import IP, ESP, SecurityAssociation, raw  # noqa: E402

KEY = spd.KEY
# reqid -> (destination network of its policy, {cpu or None: spi})
REQIDS = {
    7: ("192.168.70.0/24", {1: 0x7001, 2: 0x7002, None: 0x7000}),
    8: ("192.168.80.0/24", {1: 0x8001}),
    9: ("192.168.90.0/24", {1: 0x9001, None: 0x9000}),
    10: ("192.168.100.0/24", {None: 0xA000}),
}
PER_QUEUE = 40


def expected_spi(reqid, worker_lcore):
    sas = REQIDS[reqid][1]
    return sas.get(worker_lcore, sas.get(None))


def make(args):
    lines = [e2e.CONFIG, "shared-sa %s" % args.shared_sa]
    for reqid, (net, sas) in sorted(REQIDS.items()):
        for cpu, spi in sorted(sas.items(), key=lambda x: -1 if x[0] is None else x[0]):
            lines.append("sa add spi 0x%x dir out src 10.2.0.1 dst 10.2.0.2 mode tunnel aead aes-gcm-128 key 0x%s "
                         "reqid %d%s" % (spi, KEY, reqid, "" if cpu is None else " cpu %d" % cpu))
        lines.append("sp add id %d dir out src 172.16.0.0/12 dst %s priority 10 action protect reqid %d"
                     % (100 + reqid, net, reqid))
    config = os.path.join(args.dir, "sluice.conf")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    expect = []
    pid = 0
    for queue in (0, 1):
        frames = []
        for i in range(PER_QUEUE):
            reqid = sorted(REQIDS)[i % len(REQIDS)]
            dst = REQIDS[reqid][0].replace("0/24", str(1 + i % 200))
            payload = spd.TAG + b"%06d" % pid
            ip = IP(src="172.16.0.%d" % (1 + queue), dst=dst, proto=17, ttl=64) / (
                struct.pack("!HHHH", 4000 + i, 53, 8 + len(payload), 0) + payload)
            frames.append(b"\x02\x00\x00\x00\xbb\x01" + e2e.mac_bytes(spd.SENDER_MAC) + b"\x08\x00" + raw(ip))
            lcore = 1 + queue
            expect.append({"id": pid, "queue": queue, "reqid": reqid, "spi": expected_spi(reqid, lcore)})
            pid += 1
        e2e.write_pcap(os.path.join(args.dir, "in0_q%d.pcap" % queue), frames)
    with open(os.path.join(args.dir, "expect.json"), "w") as f:
        json.dump(expect, f)
    dropped = sum(1 for e in expect if e["spi"] is None)
    e2e.emit({"config": config, "inputs": len(expect), "dropped": dropped, "acquire_policy": 108})


def check(args):
    expect = {e["id"]: e for e in json.load(open(os.path.join(args.dir, "expect.json")))}
    sas = {}
    for _, (_, per_cpu) in REQIDS.items():
        for spi in per_cpu.values():
            sas[spi] = SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(KEY),
                                           tunnel_header=IP(src="10.2.0.1", dst="10.2.0.2"))
    problems, seqs, seen, queues = [], {}, set(), {}
    frames = []
    for queue in (0, 1):
        frames += [(queue, f) for f in e2e.read_pcap(os.path.join(args.dir, "out1_%d.pcap" % queue))]
    for out_queue, frame in frames:
        l3 = frame[14:]
        if l3[9] != 50:
            problems.append("a frame in clear")
            continue
        spi, seq = struct.unpack("!II", l3[20:28])
        if spi not in sas:
            problems.append("unknown spi 0x%x" % spi)
            continue
        inner = raw(sas[spi].decrypt(IP(l3)))
        pid = spd.find_tag(inner)
        e = expect.get(pid)
        if e is None:
            problems.append("spi 0x%x: no known packet inside" % spi)
            continue
        if e["spi"] != spi:
            problems.append("packet %d (queue %d, reqid %d) left with spi 0x%x, expected %s"
                            % (pid, e["queue"], e["reqid"], spi, e["spi"] and "0x%x" % e["spi"]))
        seqs.setdefault(spi, []).append(seq)
        queues.setdefault("0x%x" % spi, set()).add(out_queue)
        if pid in seen:
            problems.append("packet %d left twice" % pid)
        seen.add(pid)
    for spi, numbers in seqs.items():
        if sorted(numbers) != list(range(1, len(numbers) + 1)):
            problems.append("spi 0x%x numbered %s, not 1, 2, 3… without gap or repeat" % (spi, sorted(numbers)[:10]))
    for pid, e in expect.items():
        if (e["spi"] is not None) != (pid in seen):
            problems.append("packet %d (queue %d, reqid %d) %s" % (pid, e["queue"], e["reqid"],
                            "missing" if e["spi"] is not None else "should have been dropped"))
    e2e.emit({"ok": not problems, "problems": problems[:20], "spis": sorted("0x%x" % s for s in seqs),
              "queues": {s: sorted(q) for s, q in queues.items()}})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["make", "check"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--shared-sa", default="atomic", choices=["atomic", "handoff"])
    args = parser.parse_args()
    make(args) if args.mode == "make" else check(args)


if __name__ == "__main__":
    main()
