#!/usr/bin/python3
"""Writes the input pcaps, the gateway config and the expectation for one
end-to-end scenario into DIR, and prints a JSON summary on stdout.

  make_traffic.py --scenario forwarding  --dir DIR [--count N] [--seed S]
  make_traffic.py --scenario two-workers --dir DIR [--count N] [--seed S]

forwarding:  everything enters on port 0 (one queue): routed IPv4/IPv6,
             UDP/TCP, IPv4 options, 802.1Q, Ethernet padding, plus frames
             for every drop reason but tx_full.
two-workers: both ports, two RX queues each, only forwardable traffic.
"""

import argparse
import json
import os
import random
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sluice_e2e as e2e  # noqa: E402

try:
    from scapy.all import (ARP, IP, TCP, UDP, Dot1Q, Ether, IPOption_NOP, IPOption_Router_Alert,  # noqa: E402
                           IPOption_RR, IPOption_Timestamp, IPv6, Padding, Raw)
except ImportError as error:  # pragma: no cover
    e2e.emit({"error": "scapy is missing for %s: %s (apt-get install python3-scapy)" % (sys.executable, error)})
    sys.exit(3)

SOURCE_MAC = "02:00:00:00:aa:01"
GATEWAY_MAC_PLACEHOLDER = "02:00:00:00:bb:01"  # the gateway does not check the destination MAC


class Builder:
    def __init__(self, seed):
        self.rng = random.Random(seed)
        self.next_id = 0
        self.frames = []  # (id or None, bytes, expectation)

    def payload(self, size=None):
        r = self.rng
        ident = self.next_id
        self.next_id += 1
        if size is None:
            size = r.choice([0, 0, 1, 7, 18, 64, 200, 512, 1000, 1400])
        body = e2e.TAG + b"%06d" % ident + bytes(r.getrandbits(8) for _ in range(size))
        return ident, Raw(body)

    def l4(self, r):
        if r.random() < 0.5:
            return UDP(sport=r.randint(1024, 65535), dport=r.choice([53, 500, 4500, 8080, r.randint(1, 65535)]))
        return TCP(sport=r.randint(1024, 65535), dport=r.choice([22, 80, 443, r.randint(1, 65535)]),
                   flags=r.choice(["S", "SA", "A", "PA", "FA"]), seq=r.getrandbits(32), ack=r.getrandbits(32))

    def ipv4(self, dst, ttl=None, **kw):
        r = self.rng
        return IP(src="10.9.%d.%d" % (r.randint(0, 255), r.randint(1, 254)), dst=dst,
                  ttl=ttl if ttl is not None else r.choice([2, 3, 63, 64, 128, 255]),
                  id=r.getrandbits(16), flags=r.choice([0, 2]), tos=r.choice([0, 0x10, 0xb8]), **kw)

    def ipv6(self, dst, hlim=None):
        r = self.rng
        return IPv6(src="2001:db8:9::%x" % r.randint(1, 0xFFFF), dst=dst,
                    hlim=hlim if hlim is not None else r.choice([2, 3, 64, 255]),
                    fl=r.getrandbits(20), tc=r.choice([0, 0x20]))

    def add(self, ident, packet, expectation):
        self.frames.append((ident, bytes(packet), expectation))

    def forward(self, l3, neighbor, vlan=None, pad_to=None):
        mac, port = e2e.NEIGHBORS[neighbor]
        ident, body = self.payload(0 if pad_to else None)
        ether = Ether(src=SOURCE_MAC, dst=GATEWAY_MAC_PLACEHOLDER)
        if vlan is not None:
            ether = ether / Dot1Q(vlan=vlan, prio=3)
        packet = ether / l3 / self.l4(self.rng) / body
        if pad_to and len(packet) < pad_to:
            packet = packet / Padding(b"\xee" * (pad_to - len(packet)))
        self.add(ident, packet, {"action": "forward", "port": port, "dst_mac": mac, "neighbor": neighbor})

    def drop(self, reason, l3=None, raw_frame=None, vlan=None):
        if raw_frame is not None:
            self.add(None, raw_frame, {"action": "drop", "reason": reason})
            return
        ident, body = self.payload()
        ether = Ether(src=SOURCE_MAC, dst=GATEWAY_MAC_PLACEHOLDER)
        if vlan is not None:
            ether = ether / Dot1Q(vlan=vlan)
        self.add(ident, ether / l3 / self.l4(self.rng) / body, {"action": "drop", "reason": reason})

    def random_forward(self):
        r = self.rng
        pick = r.randrange(10)
        if pick == 0:
            self.forward(self.ipv4("172.%d.%d.%d" % (r.randint(16, 31), r.randint(0, 255), r.randint(1, 254))), "10.1.0.2")
        elif pick == 1:
            self.forward(self.ipv4("192.168.%d.%d" % (r.choice([0, 1, 6, 8, 200, 255]), r.randint(1, 254))), "10.2.0.2")
        elif pick == 2:
            self.forward(self.ipv4("192.168.7.%d" % r.randint(1, 254)), "10.1.0.2")
        elif pick == 3:
            dst = r.choice(["10.1.0.2", "10.2.0.2"])
            self.forward(self.ipv4(dst), dst)
        elif pick == 4:
            self.forward(self.ipv6("2001:db8:100:%x::%x" % (r.randint(0, 0xFFFF), r.randint(1, 0xFFFF))), "2001:db8:1::2")
        elif pick == 5:
            self.forward(self.ipv6("2001:db8:200:%x::%x" % (r.choice([0, 1, 6, 8, 0xFFFF]), r.randint(1, 0xFFFF))),
                         "2001:db8:2::2")
        elif pick == 6:
            self.forward(self.ipv6("2001:db8:200:7::%x" % r.randint(1, 0xFFFF)), "2001:db8:1::2")
        elif pick == 7:
            dst = r.choice(["2001:db8:1::2", "2001:db8:2::2"])
            self.forward(self.ipv6(dst), dst)
        elif pick == 8:
            self.forward(self.ipv4("172.20.%d.%d" % (r.randint(0, 255), r.randint(1, 254)), ttl=2), "10.1.0.2")
        else:
            self.forward(self.ipv6("2001:db8:200::%x" % r.randint(1, 0xFFFF), hlim=2), "2001:db8:2::2")

    def special_forwards(self):
        # IPv4 options: the header is longer than 20 bytes, the checksum covers them.
        self.forward(self.ipv4("192.168.1.10", options=[IPOption_RR(routers=["0.0.0.0"] * 3)]), "10.2.0.2")
        self.forward(self.ipv4("172.16.9.9", options=[IPOption_Router_Alert()]), "10.1.0.2")
        self.forward(self.ipv4("192.168.7.7", options=[IPOption_NOP(), IPOption_NOP(), IPOption_NOP(),
                                                       IPOption_NOP()]), "10.1.0.2")
        self.forward(self.ipv4("192.168.44.4", options=[IPOption_Timestamp(flg=0, length=8, pointer=5, timestamp=0)]), "10.2.0.2")
        # One 802.1Q tag, kept as it is.
        self.forward(self.ipv4("172.16.1.1"), "10.1.0.2", vlan=100)
        self.forward(self.ipv4("192.168.3.3"), "10.2.0.2", vlan=4000)
        self.forward(self.ipv6("2001:db8:200::77"), "2001:db8:2::2", vlan=7)
        # Ethernet padding after a short IPv4 packet: untouched.
        self.forward(self.ipv4("192.168.1.1"), "10.2.0.2", pad_to=60)

    def drops(self):
        # no_route
        self.drop("no_route", self.ipv4("198.51.100.7"))
        self.drop("no_route", self.ipv4("8.8.8.8"))
        self.drop("no_route", self.ipv4("198.18.1.1"))  # route added then deleted
        self.drop("no_route", self.ipv6("2001:db8:999::1"))
        self.drop("no_route", self.ipv6("2001:db8:300::1"))
        # ttl_exceeded: routable destinations, TTL / hop limit 1 or 0 on arrival
        self.drop("ttl_exceeded", self.ipv4("172.16.1.1", ttl=1))
        self.drop("ttl_exceeded", self.ipv4("192.168.1.1", ttl=1))
        self.drop("ttl_exceeded", self.ipv4("172.16.2.2", ttl=0))
        self.drop("ttl_exceeded", self.ipv4("192.168.2.2", ttl=1), vlan=100)
        self.drop("ttl_exceeded", self.ipv6("2001:db8:100::5", hlim=1))
        self.drop("ttl_exceeded", self.ipv6("2001:db8:200::5", hlim=0))
        # no_neighbor: connected or port routes without a neighbour entry
        self.drop("no_neighbor", self.ipv4("10.2.0.77"))
        self.drop("no_neighbor", self.ipv4("10.1.0.99"))
        self.drop("no_neighbor", self.ipv4("203.0.113.5"))
        self.drop("no_neighbor", self.ipv6("2001:db8:2::77"))
        # local: the gateway's own addresses
        self.drop("local", self.ipv4("10.1.0.1"))
        self.drop("local", self.ipv4("10.2.0.1"))
        self.drop("local", self.ipv6("2001:db8:1::1"))
        # bad_checksum
        self.drop("bad_checksum", self.ipv4("172.16.3.3", chksum=0x1234))
        self.drop("bad_checksum", self.ipv4("192.168.3.3", options=[IPOption_Router_Alert()], chksum=0))
        # unsupported_ethertype
        self.drop("unsupported_ethertype",
                  raw_frame=bytes(Ether(src=SOURCE_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst="10.1.0.1")))
        self.drop("unsupported_ethertype",
                  raw_frame=bytes(Ether(src=SOURCE_MAC, dst="01:80:c2:00:00:0e", type=0x88CC) / Raw(b"\x02\x07" * 20)))
        # malformed: truncated headers, a total length beyond the frame
        self.drop("malformed", raw_frame=bytes(Ether(src=SOURCE_MAC, dst=GATEWAY_MAC_PLACEHOLDER, type=0x0800))
                  + bytes(self.ipv4("172.16.4.4") / UDP())[:12])
        self.drop("malformed", raw_frame=bytes(Ether(src=SOURCE_MAC, dst=GATEWAY_MAC_PLACEHOLDER, type=0x86DD))
                  + bytes(self.ipv6("2001:db8:100::9") / UDP())[:30])
        self.drop("malformed", self.ipv4("172.16.5.5", len=1400))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--scenario", choices=["forwarding", "two-workers"], required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--count", type=int, default=None, help="forwardable frames (per RX queue for two-workers)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)

    b = Builder(args.seed)
    ports = {}
    expectation = {}
    inputs_per_port = {}
    inputs_per_queue = {}
    if args.scenario == "forwarding":
        count = args.count if args.count is not None else 240
        b.special_forwards()
        b.drops()
        while sum(1 for f in b.frames if f[2]["action"] == "forward") < count:
            b.random_forward()
        b.rng.shuffle(b.frames)
        e2e.write_pcap(os.path.join(args.dir, "in0.pcap"), [f[1] for f in b.frames])
        e2e.write_pcap(os.path.join(args.dir, "empty.pcap"), [])
        ports = {"0": {"rx": ["in0.pcap"], "tx": ["out0.pcap"]},
                 "1": {"rx": ["empty.pcap"], "tx": ["out1.pcap"]}}
        inputs_per_port = {"0": len(b.frames), "1": 0}
        inputs_per_queue = {"0": len(b.frames)}
        frames = [(0, f) for f in b.frames]
    else:
        count = args.count if args.count is not None else 300
        frames = []
        for port in (0, 1):
            ports[str(port)] = {"rx": [], "tx": []}
            inputs_per_port[str(port)] = 0
            for queue in (0, 1):
                start = len(b.frames)
                for _ in range(count):
                    b.random_forward()
                mine = b.frames[start:]
                name = "in%dq%d.pcap" % (port, queue)
                e2e.write_pcap(os.path.join(args.dir, name), [f[1] for f in mine])
                ports[str(port)]["rx"].append(name)
                ports[str(port)]["tx"].append("out%dq%d.pcap" % (port, queue))
                inputs_per_port[str(port)] += len(mine)
                inputs_per_queue[str(queue)] = inputs_per_queue.get(str(queue), 0) + len(mine)
                frames += [(port, f) for f in mine]

    drops = {}
    forwarded_per_port = {"0": 0, "1": 0}
    untagged = 0
    for in_port, (ident, frame, exp) in frames:
        if exp["action"] == "drop":
            drops[exp["reason"]] = drops.get(exp["reason"], 0) + 1
            if exp["reason"] == "bad_checksum":
                off, _ = e2e.l3_offset(frame)
                ihl = (frame[off] & 0x0F) * 4
                assert e2e.ipv4_checksum(frame[off:off + ihl]) != 0, "bad_checksum frame has a valid checksum"
        else:
            forwarded_per_port[str(exp["port"])] += 1
        if ident is None:
            untagged += 1
            continue
        record = dict(exp)
        record["in_port"] = in_port
        record["frame"] = frame.hex()
        expectation[str(ident)] = record

    config_path = os.path.join(args.dir, "sluice.conf")
    with open(config_path, "w") as f:
        f.write(e2e.CONFIG)
    with open(os.path.join(args.dir, "expect.json"), "w") as f:
        json.dump({"scenario": args.scenario, "ports": ports, "packets": expectation}, f)

    e2e.emit({
        "scenario": args.scenario,
        "config": config_path,
        "ports": ports,
        "inputs": len(frames),
        "inputs_per_port": inputs_per_port,
        "inputs_per_queue": inputs_per_queue,
        "forwarded": sum(forwarded_per_port.values()),
        "forwarded_per_port": forwarded_per_port,
        "drops": drops,
        "untagged_drops": untagged,
    })


if __name__ == "__main__":
    main()
