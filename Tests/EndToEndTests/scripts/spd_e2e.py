"""The SPD end-to-end test: a 1,000-rule policy database on the real gateway.

    spd_e2e.py make  --dir D [--rules N] [--packets N] [--seed S]
    spd_e2e.py check --dir D --port-mac 1=MAC

`make` writes sluice.conf (the test network of sluice_e2e.py, four outbound
tunnel SAs and N random `sp` rules: nested prefixes, port ranges, ICMP type
and code, any-protocol rules, priorities with ties, some `dir in`/`fwd` and
`if-id` rules that outbound traffic must never hit), in0.pcap (plaintext
entering the protected port 0, every frame tagged with its id) and
expect.json: each frame's fate decided by this script's own reading of the
rules (the oracle, written independently of Sluice's classifiers: first rule
by priority, ties in line order; no rule: discarded).

`check` reads what the gateway sent out of port 1 and, frame by frame:
bypass → the exact plaintext, TTL/hop limit −1; protect → ESP of the
expected SPI that scapy decrypts to the tagged inner packet; discard (or no
rule) → never sent. Prints one JSON line.
"""

import argparse
import ipaddress
import json
import os
import random
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_e2e as e2e  # noqa: E402

try:
    from scapy.all import IP, IPv6, raw  # noqa: E402
    from scapy.layers.ipsec import SecurityAssociation, ESP  # noqa: E402
except ImportError as error:  # pragma: no cover
    e2e.emit({"ok": False, "error": "scapy missing for %s: %s" % (sys.executable, error)})
    sys.exit(3)

TAG = b"SLUICE-SPD#"
TAG_LEN = len(TAG) + 6
SENDER_MAC = "02:00:00:00:01:02"
KEY = "a1" * 16 + "5a5a5a5a"  # aes-gcm-128 key and salt
# spi -> (outer family, tunnel src, tunnel dst)
SAS = {
    0x1001: (4, "10.2.0.1", "10.2.0.2"),
    0x1002: (4, "10.2.0.1", "10.2.0.2"),
    0x1003: (6, "2001:db8:2::1", "2001:db8:2::2"),
    0x1004: (6, "2001:db8:2::1", "2001:db8:2::2"),
}
PORT_PROTOS = (6, 17, 132)
PROTO_NAMES = {6: "tcp", 17: "udp", 1: "icmp", 58: "icmpv6", 132: "sctp"}
# Traffic goes from the protected side to destinations routed out of port 1
# (sluice_e2e.CONFIG): 192.168.0.0/16 except 192.168.7.0/24, and
# 2001:db8:200::/48 except 2001:db8:200:7::/64.
SOURCES = {4: ipaddress.ip_network("172.16.0.0/12"), 6: ipaddress.ip_network("2001:db8:100::/48")}
DESTS = {4: ipaddress.ip_network("192.168.0.0/16"), 6: ipaddress.ip_network("2001:db8:200::/48")}
EXCLUDED = {4: ipaddress.ip_network("192.168.7.0/24"), 6: ipaddress.ip_network("2001:db8:200:7::/64")}


class Rule:
    def __init__(self, line_no, direction, src, dst, proto, sport, dport, priority, action, spi, if_id):
        self.line_no, self.direction, self.src, self.dst = line_no, direction, src, dst
        self.proto, self.sport, self.dport, self.priority = proto, sport, dport, priority
        self.action, self.spi, self.if_id = action, spi, if_id

    def text(self):
        words = ["sp", "add", "dir", self.direction, "src", str(self.src), "dst", str(self.dst)]
        if self.proto is not None:
            words += ["proto", PROTO_NAMES.get(self.proto, str(self.proto))]
        icmp = self.proto in (1, 58)
        for value, port_word, icmp_word in ((self.sport, "sport", "type"), (self.dport, "dport", "code")):
            if value is not None:
                words += [icmp_word if icmp else port_word,
                          str(value[0]) if value[0] == value[1] else "%d-%d" % value]
        if self.if_id:
            words += ["if-id", str(self.if_id)]
        words += ["priority", str(self.priority), "action"]
        words += ["protect", "spi", "0x%x" % self.spi] if self.action == "protect" else [self.action]
        return " ".join(words)

    def matches(self, pkt):
        """The oracle's reading of RFC 4301 selectors (see the module text)."""
        if self.direction != "out" or self.if_id != 0:
            return False
        if pkt["family"] != self.src.version:
            return False
        if ipaddress.ip_address(pkt["src"]) not in self.src or ipaddress.ip_address(pkt["dst"]) not in self.dst:
            return False
        if self.proto is not None and self.proto != pkt["proto"]:
            return False
        if self.sport is None and self.dport is None:
            return True
        if not pkt["has_ports"]:
            return False
        for rng, value in ((self.sport, pkt["sport"]), (self.dport, pkt["dport"])):
            if rng is not None and not rng[0] <= value <= rng[1]:
                return False
        return True


def random_subnet(rng, base, family):
    top = 32 if family == 4 else 128
    length = rng.choice([base.prefixlen, base.prefixlen + 4, base.prefixlen + 8, base.prefixlen + 8,
                         base.prefixlen + 12, base.prefixlen + 16, top])
    length = min(length, top)
    host = rng.getrandbits(top - base.prefixlen)
    address = int(base.network_address) | host
    return ipaddress.ip_network((address >> (top - length) << (top - length), length))


def random_range(rng, limit):
    kind = rng.random()
    if kind < 0.3:
        v = rng.randrange(limit + 1)
        return (v, v)
    if kind < 0.5:
        return (1024, limit) if limit == 65535 else (0, limit // 2)
    lo = rng.randrange(limit + 1)
    return (lo, min(limit, lo + rng.randrange(1, 2000 if limit == 65535 else 64)))


def make_rules(rng, count):
    rules = []
    for i in range(count):
        family = 4 if rng.random() < 0.6 else 6
        src = random_subnet(rng, SOURCES[family], family)
        dst = random_subnet(rng, DESTS[family], family)
        p = rng.random()
        proto = None
        sport = dport = None
        if p < 0.55:
            proto = rng.choice(PORT_PROTOS)
            if rng.random() < 0.7:
                dport = random_range(rng, 65535)
            if rng.random() < 0.3:
                sport = random_range(rng, 65535)
        elif p < 0.7:
            proto = 1 if family == 4 else 58
            if rng.random() < 0.7:
                sport = random_range(rng, 255)
            if rng.random() < 0.4:
                dport = random_range(rng, 255)
        elif p < 0.8:
            proto = 47
        direction = "out" if rng.random() < 0.85 else rng.choice(["in", "fwd"])
        if_id = rng.choice([0] * 19 + [7])
        a = rng.random()
        action = "protect" if a < 0.3 else ("bypass" if a < 0.7 else "discard")
        spi = rng.choice(sorted(SAS)) if action == "protect" else None
        if action == "protect" and direction != "out":
            action, spi = "bypass", None
        priority = rng.randrange(0, 200)  # plenty of ties
        rules.append(Rule(i, direction, src, dst, proto, sport, dport, priority, action, spi, if_id))
    return rules


def point_in(rng, network, family):
    top = 32 if family == 4 else 128
    host_bits = top - network.prefixlen
    return str(ipaddress.ip_address(int(network.network_address) | (rng.getrandbits(host_bits) if host_bits else 0)))


def make_packet(rng, rules, pid):
    out_rules = [r for r in rules if r.direction == "out"]
    base = rng.choice(out_rules) if rng.random() < 0.85 else None
    family = base.src.version if base else rng.choice([4, 6])
    for _ in range(100):
        src = point_in(rng, base.src if base else SOURCES[family], family)
        dst = point_in(rng, base.dst if base else DESTS[family], family)
        if ipaddress.ip_address(dst) not in EXCLUDED[family]:
            break
    else:
        dst = str(next(DESTS[family].hosts()))
    if base and base.proto is not None:
        proto = base.proto
    else:
        proto = rng.choice([6, 17, 132, 1 if family == 4 else 58, 47])
    limit = 255 if proto in (1, 58) else 65535

    def value(r):
        if r is not None and rng.random() < 0.8:
            return rng.choice([r[0], r[1], rng.randint(*r), max(0, r[0] - 1), min(limit, r[1] + 1)])
        return rng.randrange(limit + 1)
    sport = value(base.sport if base else None)
    dport = value(base.dport if base else None)
    payload = TAG + b"%06d" % pid + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 40)))
    if proto in PORT_PROTOS:
        l4 = struct.pack("!HH", sport, dport) + (b"\0" * 16 if proto == 6 else b"\0" * 4) + payload
        if proto == 17:
            l4 = struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload
        has_ports = True
    elif proto in (1, 58):
        l4 = bytes([sport, dport]) + b"\0\0\0\0\0\0" + payload
        has_ports = True
    else:
        l4 = payload
        has_ports = False
        sport = dport = 0
    ip = (IP(src=src, dst=dst, proto=proto, ttl=64) if family == 4
          else IPv6(src=src, dst=dst, nh=proto, hlim=64)) / l4
    ethertype = b"\x08\x00" if family == 4 else b"\x86\xdd"
    frame = b"\x02\x00\x00\x00\xbb\x01" + e2e.mac_bytes(SENDER_MAC) + ethertype + raw(ip)
    return frame, {"family": family, "src": src, "dst": dst, "proto": proto, "sport": sport, "dport": dport,
                   "has_ports": has_ports}


def fate(rules, pkt):
    best = None
    for r in rules:
        if r.matches(pkt) and (best is None or (r.priority, r.line_no) < (best.priority, best.line_no)):
            best = r
    if best is None:
        return {"action": "discard", "rule": None}
    return {"action": best.action, "spi": best.spi, "rule": best.line_no}


def make(args):
    rng = random.Random(args.seed)
    rules = make_rules(rng, args.rules)
    lines = [e2e.CONFIG, "# four outbound tunnel SAs"]
    for spi, (family, src, dst) in sorted(SAS.items()):
        lines.append("sa add spi 0x%x dir out src %s dst %s mode tunnel aead aes-gcm-128 key 0x%s"
                     % (spi, src, dst, KEY))
    if args.driver:
        lines.append("spd driver %s" % args.driver)
    lines += [r.text() for r in rules]
    config = os.path.join(args.dir, "sluice.conf")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    frames, expect = [], []
    for pid in range(args.packets):
        frame, pkt = make_packet(rng, rules, pid)
        frames.append(frame)
        expect.append(dict(pkt, id=pid, **fate(rules, pkt)))
    e2e.write_pcap(os.path.join(args.dir, "in0.pcap"), frames)
    with open(os.path.join(args.dir, "expect.json"), "w") as f:
        json.dump(expect, f)
    counts = {}
    for e in expect:
        counts[e["action"]] = counts.get(e["action"], 0) + 1
    e2e.emit({"config": config, "inputs": len(frames), "fates": counts,
              "rules": len(rules), "out_rules": sum(r.direction == "out" for r in rules)})


def find_tag(data):
    i = data.find(TAG)
    if i < 0 or i + TAG_LEN > len(data):
        return None
    digits = data[i + len(TAG):i + TAG_LEN]
    return int(digits) if digits.isdigit() else None


def check(args):
    expect = {e["id"]: e for e in json.load(open(os.path.join(args.dir, "expect.json")))}
    frames = {e["id"]: f for e, f in zip(sorted(expect.values(), key=lambda e: e["id"]),
                                        e2e.read_pcap(os.path.join(args.dir, "in0.pcap")))}
    macs = dict(x.split("=", 1) for x in args.port_mac)
    out = e2e.read_pcap(os.path.join(args.dir, "out1.pcap"))
    stray = e2e.read_pcap(os.path.join(args.dir, "out0.pcap")) if os.path.exists(os.path.join(args.dir, "out0.pcap")) else []
    problems = []
    seen = {}
    sas = {spi: SecurityAssociation(ESP, spi=spi, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(KEY),
                                    tunnel_header=(IP if fam == 4 else IPv6)(src=s, dst=d))
           for spi, (fam, s, d) in SAS.items()}
    for frame in out:
        ethertype = frame[12:14]
        l3 = frame[14:]
        proto = l3[9] if ethertype == b"\x08\x00" else l3[6]
        header = 20 if ethertype == b"\x08\x00" else 40
        if proto == 50:
            spi = struct.unpack("!I", l3[header:header + 4])[0]
            if spi not in sas:
                problems.append("ESP with unknown spi 0x%x" % spi)
                continue
            try:
                inner = raw(sas[spi].decrypt(IP(l3) if ethertype == b"\x08\x00" else IPv6(l3)))
            except Exception as error:  # noqa: BLE001 — any failure is a finding
                problems.append("ESP spi 0x%x that scapy cannot decrypt: %r" % (spi, error))
                continue
            pid = find_tag(inner)
            if pid is None or pid not in expect:
                problems.append("ESP spi 0x%x with no known packet inside" % spi)
                continue
            e = expect[pid]
            if e["action"] != "protect" or e["spi"] != spi:
                problems.append("packet %d sent with ESP spi 0x%x, expected %s (rule %s)"
                                % (pid, spi, e["action"], e["rule"]))
            original = frames[pid][14:]
            want = bytearray(original)
            if e["family"] == 4:
                want[8] -= 1
                want[10:12] = struct.pack("!H", e2e.ipv4_checksum(bytes(want[:10]) + b"\0\0" + bytes(want[12:20])))
            else:
                want[7] -= 1
            if inner != bytes(want):
                problems.append("packet %d: decrypted inner packet differs from the input (TTL −1)" % pid)
        else:
            pid = find_tag(l3)
            if pid is None or pid not in expect:
                problems.append("plaintext frame with no known id")
                continue
            e = expect[pid]
            if e["action"] != "bypass":
                problems.append("packet %d sent in clear, expected %s (rule %s)" % (pid, e["action"], e["rule"]))
            want = e2e.forwarded(frames[pid], "02:00:00:00:02:02" if e["family"] == 4 else "02:00:00:00:02:62",
                                 macs["1"])
            if frame != want:
                problems.append("packet %d: bypassed frame not forwarded exactly" % pid)
        seen[pid] = seen.get(pid, 0) + 1
    for pid, e in expect.items():
        n = seen.get(pid, 0)
        if e["action"] in ("bypass", "protect") and n != 1:
            problems.append("packet %d (%s, rule %s) sent %d times" % (pid, e["action"], e["rule"], n))
        if e["action"] == "discard" and n:
            problems.append("packet %d should have been discarded (rule %s)" % (pid, e["rule"]))
    if stray:
        problems.append("%d frames left by the protected port" % len(stray))
    counts = {}
    for e in expect.values():
        counts[e["action"]] = counts.get(e["action"], 0) + 1
    e2e.emit({"ok": not problems, "checked": len(out), "expected": counts, "problems": problems[:30],
              "problem_count": len(problems)})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["make", "check"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--rules", type=int, default=1000)
    parser.add_argument("--packets", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--driver")
    parser.add_argument("--port-mac", action="append", default=[])
    args = parser.parse_args()
    make(args) if args.mode == "make" else check(args)


if __name__ == "__main__":
    main()
