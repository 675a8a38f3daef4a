"""ESP interop with a second independent peer: DPDK's own gateway,
ipsec-secgw (22.11 example, librte_ipsec + intel-ipsec-mb through the
crypto_aesni_gcm PMD), built by scripts/build-secgw.sh.

    secgw_interop.py make  --dir D [--count N] [--case tunnel|esn|transport]
    secgw_interop.py secgw --dir D --secgw BIN --rx0 F --rx1 F --tx0 F --tx1 F --expect N
    secgw_interop.py check --dir D

One AES-256-GCM tunnel each way, the same keys on both gateways:
  A: plaintext 10.0.0.0/24 -> 198.51.100.0/24 enters sluice's protected
     port 0, leaves its port 1 as ESP (SPI 0x1001, 192.0.2.1 -> 203.0.113.2);
     ipsec-secgw takes that ESP on its unprotected port 1 and must deliver
     the plaintext on its port 0.
  B: plaintext 198.51.100.0/24 -> 10.0.0.0/24 enters ipsec-secgw's port 0,
     leaves its port 1 as ESP (SPI 0x2001, 203.0.113.2 -> 192.0.2.1); sluice
     takes it on port 1 and must deliver the plaintext on port 0.
Cases: `tunnel` as above; `esn` the same with extended sequence numbers on
both sides (12-byte AAD; ipsec-secgw's `-e`); `transport` transport-mode SAs
(no outer header: the ESP goes to the plaintext's own destination).
`make` writes the plaintext pcaps (varied sizes, UDP and TCP), sluice.conf,
secgw.cfg and case.json (ipsec-secgw's extra arguments); `secgw` runs ipsec-secgw on net_pcap ports until it has sent
N packets (or 20 s passed), then stops it with SIGINT (it closes its ports,
which flushes the tx pcaps); `check` compares what each receiving gateway
delivered with what went in: same IP packets, byte for byte, apart from the
TTL (sluice decrements it when it forwards; ipsec-secgw does not) and the
header checksum (which must be valid).
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

from scapy.all import IP, TCP, UDP, Ether, Raw, rdpcap, wrpcap  # noqa: E402

KEY_A = bytes(range(0x10, 0x10 + 36))  # AES-256 key || 4-byte salt, SPI 0x1001
KEY_B = bytes(range(0x60, 0x60 + 36))  # SPI 0x2001


def hexkey(k):
    return "0x" + k.hex()


def colonkey(k):
    return ":".join("%02x" % b for b in k)


def packets(count, src_net, dst_net, seed):
    out = []
    for i in range(count):
        size = [0, 1, 17, 200, 555, 1200, 1400][(i + seed) % 7]
        payload = bytes((i * 7 + j + seed) & 0xFF for j in range(size))
        l4 = (UDP(sport=1024 + i, dport=4789) if i % 3 else TCP(sport=2048 + i, dport=443, flags="PA", seq=i * 1000))
        ip = IP(src="%s.%d" % (src_net, 2 + i % 50), dst="%s.%d" % (dst_net, 7 + i % 40), ttl=64, id=i, tos=(i % 4) << 2)
        out.append(Ether(src="02:00:00:00:00:0a", dst="02:70:63:61:70:00") / ip / l4 / Raw(payload))
    return out


def make(args):
    d = args.dir
    wrpcap(os.path.join(d, "plain_a.pcap"), packets(args.count, "10.0.0", "198.51.100", 1))
    wrpcap(os.path.join(d, "plain_b.pcap"), packets(args.count, "198.51.100", "10.0.0", 4))
    wrpcap(os.path.join(d, "empty.pcap"), [])
    transport = args.case == "transport"
    esn = " esn" if args.case == "esn" else ""
    if transport:
        sluice_sas = ("sa add spi 0x1001 dir out mode transport aead aes-gcm-256 key %s%s\n"
                      "sa add spi 0x2001 dir in mode transport aead aes-gcm-256 key %s%s\n")
        routes = "route add 198.51.100.0/24 via 192.0.2.2\n"
        secgw_modes = ("mode transport", "mode transport")
        secgw_routes = "rt ipv4 dst 10.0.0.0/24 port 1\n"
    else:
        sluice_sas = ("sa add spi 0x1001 dir out src 192.0.2.1 dst 203.0.113.2 mode tunnel aead aes-gcm-256 key %s%s\n"
                      "sa add spi 0x2001 dir in src 203.0.113.2 dst 192.0.2.1 mode tunnel aead aes-gcm-256 key %s%s\n")
        routes = "route add 203.0.113.0/24 via 192.0.2.2\n"
        secgw_modes = ("mode ipv4-tunnel src 203.0.113.2 dst 192.0.2.1", "mode ipv4-tunnel src 192.0.2.1 dst 203.0.113.2")
        secgw_routes = "rt ipv4 dst 192.0.2.1/32 port 1\n"
    with open(os.path.join(d, "sluice.conf"), "w") as f:
        f.write("port 0 role protected address 10.0.0.1/24\n"
                "port 1 role unprotected address 192.0.2.1/24\n"
                "neighbor 10.0.0.250 lladdr 02:00:00:00:00:0b port 0\n"
                "neighbor 192.0.2.2 lladdr 02:00:00:00:00:02 port 1\n"
                "route add 10.0.0.0/24 via 10.0.0.250\n" + routes
                + sluice_sas % (hexkey(KEY_A), esn, hexkey(KEY_B), esn)
                + "sp add dir out src 10.0.0.0/24 dst 198.51.100.0/24 priority 10 action protect spi 0x1001\n"
                "sp add dir in src 198.51.100.0/24 dst 10.0.0.0/24 priority 10 action protect spi 0x2001\n")
    with open(os.path.join(d, "secgw.cfg"), "w") as f:
        f.write("sp ipv4 out esp protect 8193 pri 1 src 198.51.100.0/24 dst 10.0.0.0/24 sport 0:65535 dport 0:65535\n"
                "sa out 8193 aead_algo aes-256-gcm aead_key %s %s type cpu-crypto\n"
                "sp ipv4 in esp protect 4097 pri 1 src 10.0.0.0/24 dst 198.51.100.0/24 sport 0:65535 dport 0:65535\n"
                "sa in 4097 aead_algo aes-256-gcm aead_key %s %s type cpu-crypto\n"
                % (colonkey(KEY_B), secgw_modes[0], colonkey(KEY_A), secgw_modes[1])
                + secgw_routes
                + "rt ipv4 dst 198.51.100.0/24 port 0\n"
                "neigh port 0 02:00:00:00:00:0c\n"
                "neigh port 1 02:00:00:00:00:01\n")
    with open(os.path.join(d, "case.json"), "w") as f:
        json.dump({"secgw_arguments": ["-e"] if esn else []}, f)
    print(json.dumps({"inputs": args.count}))


def run_secgw(args):
    d = args.dir
    p = lambda name: os.path.join(d, name)  # noqa: E731
    cmd = ["/usr/bin/stdbuf", "-oL", args.secgw, "--no-huge", "-m", "512", "--no-pci", "--no-telemetry",
           "--file-prefix", "secgw-interop-%d" % os.getpid(), "--lcores", "0@0",
           "--vdev", "net_pcap0,rx_pcap=%s,tx_pcap=%s" % (p(args.rx0), p(args.tx0)),
           "--vdev", "net_pcap1,rx_pcap=%s,tx_pcap=%s" % (p(args.rx1), p(args.tx1)),
           "--vdev", "crypto_aesni_gcm0", "--",
           "-p", "0x3", "-P", "-u", "0x2", "--config", "(0,0,0),(1,0,0)", "-f", p("secgw.cfg"), "-l", "-t", "1"]
    with open(p("case.json")) as f:
        cmd += json.load(f)["secgw_arguments"]
    log = open(p("secgw-%s.log" % args.tx1), "w")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    sent, deadline, text = 0, time.time() + 20, ""
    fd = proc.stdout.fileno()
    os.set_blocking(fd, False)
    while time.time() < deadline and proc.poll() is None:
        try:
            chunk = os.read(fd, 65536).decode(errors="replace")
        except BlockingIOError:
            chunk = ""
        if chunk:
            text += chunk
            log.write(chunk)
            found = re.findall(r"Total packets sent:\s+(\d+)", text)
            if found:
                sent = int(found[-1])
                if sent >= args.expect:
                    break
        time.sleep(0.05)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        os.set_blocking(fd, True)
        try:
            rest, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            rest, _ = proc.communicate()
        rest = (rest or b"").decode(errors="replace")
        text += rest
        log.write(rest)
    log.close()
    found = re.findall(r"Total packets sent:\s+(\d+)", text)
    sent = int(found[-1]) if found else 0
    print(json.dumps({"sent": sent, "status": proc.returncode, "command": " ".join(cmd),
                      "tail": "\n".join(text.splitlines()[-15:])}))


def canonical(ip, ttl_delta):
    """The IP packet as bytes with TTL put back by ttl_delta and the checksum zeroed."""
    pkt = IP(bytes(ip))
    pkt.ttl = pkt.ttl + ttl_delta
    raw = bytearray(bytes(pkt))
    raw[10:12] = b"\x00\x00"
    return bytes(raw)


def compare(sent_file, got_file, ttl_delta):
    sent = [p[IP] for p in rdpcap(sent_file)]
    got = [p for p in rdpcap(got_file)] if os.path.exists(got_file) else []
    problems = []
    want = {}
    for i, ip in enumerate(sent):
        want.setdefault(canonical(ip, 0), []).append(i)
    matched = 0
    for k, frame in enumerate(got):
        if IP not in frame:
            problems.append("output %d is not IPv4: %r" % (k, frame.summary()))
            continue
        ip = frame[IP]
        check = IP(bytes(ip))
        del check.chksum
        if IP(bytes(check)).chksum != ip.chksum:
            problems.append("output %d: bad IPv4 header checksum" % k)
        key = canonical(ip, ttl_delta)
        if want.get(key):
            want[key].pop()
            matched += 1
        else:
            problems.append("output %d matches no input: %s" % (k, ip.summary()))
    missing = [i for v in want.values() for i in v]
    if missing:
        problems.append("inputs never delivered: %s" % sorted(missing)[:20])
    return {"expected": len(sent), "got": len(got), "matched": matched, "problems": problems[:20]}


def check(args):
    d = args.dir
    # A: sluice sealed (TTL - 1), ipsec-secgw opened and forwarded (TTL kept).
    a = compare(os.path.join(d, "plain_a.pcap"), os.path.join(d, "secgw_out_a.pcap"), 1)
    # B: ipsec-secgw sealed, sluice opened and forwarded (TTL - 1).
    b = compare(os.path.join(d, "plain_b.pcap"), os.path.join(d, "sluice_out_b.pcap"), 1)
    print(json.dumps({"a": a, "b": b}))


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("--dir", required=True)
    m.add_argument("--count", type=int, default=48)
    m.add_argument("--case", choices=["tunnel", "esn", "transport"], default="tunnel")
    s = sub.add_parser("secgw")
    s.add_argument("--dir", required=True)
    s.add_argument("--secgw", required=True)
    for name in ("rx0", "rx1", "tx0", "tx1"):
        s.add_argument("--" + name, required=True)
    s.add_argument("--expect", type=int, required=True)
    c = sub.add_parser("check")
    c.add_argument("--dir", required=True)
    args = ap.parse_args()
    {"make": make, "secgw": run_secgw, "check": check}[args.cmd](args)


if __name__ == "__main__":
    main()
