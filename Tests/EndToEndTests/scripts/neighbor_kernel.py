"""The neighbour agent (`port N resolve on`) through the real sluice, against
the Linux kernel's ARP and Neighbor Discovery (peers nobody here wrote). Run
inside a fresh network namespace (`unshare -n`): two net_tap ports, wire0
(port 0, unprotected: the kernel is the upstream router 192.0.2.254 and
2001:db8:b::fe on it) and lan0 (port 1, protected: scapy is host 10.0.0.5
and 2001:db8:a::5 on it). No `neighbor` lines anywhere.

* sluice resolves the kernel: packets from the LAN for the routes via the
  kernel wait for the kernel's ARP reply / Neighbor Advertisement, then
  reach wire0 addressed to the kernel's MAC;
* the kernel resolves sluice: it sends to the LAN via 192.0.2.1 and
  2001:db8:b::1, so it must get sluice's MAC from sluice's ARP reply / NA;
  sluice in turn resolves the LAN host (scapy answers) and delivers.
Prints one JSON line: what arrived where, the kernel's neighbour entries for
sluice, sluice's `neighbor list` and final counters.

usage: neighbor_kernel.py SLUICE SCRATCH_DIR [--no-resolve]
"""
import json, os, socket, subprocess, sys, threading, time
from sluice_child import finish

sluice, scratch = sys.argv[1], sys.argv[2]
resolve = "--no-resolve" not in sys.argv
ROUTER, HOST = "02:bb:00:00:00:fe", "02:cc:00:00:00:05"
conf = os.path.join(scratch, "gw.conf")
control = os.path.join(scratch, "ctl.sock")
with open(conf, "w") as f:
    f.write("""port 0 role unprotected address 192.0.2.1/24
port 0 address 2001:db8:b::1/64
port 1 role protected address 10.0.0.1/24
port 1 address 2001:db8:a::1/64
route add 198.51.100.0/24 via 192.0.2.254
route add 2001:db8:100::/48 via 2001:db8:b::fe
""" + ("port 0 resolve on\nport 1 resolve on\n" if resolve else ""))


def sh(*args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def ask(line):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(control)
    s.sendall((line + "\n").encode())
    data = b""
    while not data.endswith(b"\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return json.loads(data.decode().splitlines()[0])


sh("ip", "link", "set", "lo", "up")
log = open(os.path.join(scratch, "sluice.log"), "w")
gw = subprocess.Popen([sluice, "--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--no-telemetry", "--lcores", "0,1",
                       "--vdev", "net_tap0,iface=wire0", "--vdev", "net_tap1,iface=lan0",
                       "--", "--config", conf, "--control", control, "--stats-interval", "0"],
                      stdout=log, stderr=subprocess.STDOUT)
result = {"started": False, "resolve": resolve}
try:
    for _ in range(100):
        if os.path.exists(control):
            break
        time.sleep(0.1)
    result["started"] = gw.poll() is None and os.path.exists(control)
    text = open(os.path.join(scratch, "sluice.log")).read()
    macs = {}
    for line in text.splitlines():
        if line.startswith("sluice: port ") and " mac=" in line:
            macs[int(line.split()[2])] = line.split(" mac=")[1].split()[0]
    result["sluice_macs"] = macs
    # The kernel's sides: wire0 is the router, lan0 carries only scapy's frames.
    with open("/proc/sys/net/ipv6/conf/lan0/disable_ipv6", "w") as f:
        f.write("1")
    sh("ip", "link", "set", "wire0", "address", ROUTER)
    sh("ip", "link", "set", "lan0", "address", HOST)
    sh("ip", "addr", "add", "192.0.2.254/24", "dev", "wire0")
    sh("ip", "-6", "addr", "add", "2001:db8:b::fe/64", "dev", "wire0", "nodad")
    sh("ip", "link", "set", "wire0", "up")
    sh("ip", "link", "set", "lan0", "up")
    sh("ip", "route", "add", "10.0.0.0/24", "via", "192.0.2.1", "dev", "wire0")
    sh("ip", "-6", "route", "add", "2001:db8:a::/64", "via", "2001:db8:b::1", "dev", "wire0")

    from scapy.all import conf as sconf, sendp, AsyncSniffer, Ether, ARP, IP, UDP, IPv6, ICMPv6ND_NS, ICMPv6ND_NA, \
        ICMPv6NDOptDstLLAddr
    sconf.verb = 0

    # scapy plays the LAN host: answers sluice's questions for 10.0.0.5 and 2001:db8:a::5.
    def lan_answer(p):
        if ARP in p and p[ARP].op == 1 and p[ARP].pdst == "10.0.0.5":
            sendp(Ether(dst=p[ARP].hwsrc, src=HOST) / ARP(op=2, hwsrc=HOST, psrc="10.0.0.5", hwdst=p[ARP].hwsrc,
                                                           pdst=p[ARP].psrc), iface="lan0")
        elif ICMPv6ND_NS in p and p[ICMPv6ND_NS].tgt == "2001:db8:a::5":
            sendp(Ether(dst=p[Ether].src, src=HOST) / IPv6(src="2001:db8:a::5", dst=p[IPv6].src, hlim=255)
                  / ICMPv6ND_NA(tgt="2001:db8:a::5", R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=HOST), iface="lan0")
    lan = AsyncSniffer(iface="lan0", prn=lan_answer, store=True)
    wire = AsyncSniffer(iface="wire0", store=True)
    lan.start()
    wire.start()
    time.sleep(1.0)

    # 1. sluice resolves the kernel: the LAN host sends to the far side.
    pmac = macs.get(1, "ff:ff:ff:ff:ff:ff")
    for i in range(3):
        sendp(Ether(dst=pmac, src=HOST) / IP(src="10.0.0.5", dst="198.51.100.7", ttl=20) / UDP(sport=4000, dport=5000)
              / b"to-remote-4", iface="lan0")
        sendp(Ether(dst=pmac, src=HOST) / IPv6(src="2001:db8:a::5", dst="2001:db8:100::7", hlim=20)
              / UDP(sport=4000, dport=5000) / b"to-remote-6", iface="lan0")
        time.sleep(0.5)

    # 2. The kernel resolves sluice: it sends to the LAN through it.
    for i in range(3):
        for family, dst in ((socket.AF_INET, "10.0.0.5"), (socket.AF_INET6, "2001:db8:a::5")):
            s = socket.socket(family, socket.SOCK_DGRAM)
            try:
                s.sendto(b"from-kernel", (dst, 6000))
            except OSError:
                pass
            s.close()
        time.sleep(0.7)
    time.sleep(1.0)
    lan.stop()
    wire.stop()

    router_seen = [p for p in wire.results if UDP in p and p[UDP].dport == 5000]
    result["sluice_resolved_kernel_v4"] = any(IP in p and p[IP].dst == "198.51.100.7" and p[Ether].dst == ROUTER
                                               and p[IP].ttl == 19 and bytes(p[UDP].payload) == b"to-remote-4"
                                               for p in router_seen)
    result["sluice_resolved_kernel_v6"] = any(IPv6 in p and p[IPv6].dst == "2001:db8:100::7" and p[Ether].dst == ROUTER
                                               and p[IPv6].hlim == 19 and bytes(p[UDP].payload) == b"to-remote-6"
                                               for p in router_seen)
    result["kernel_answered_arp"] = any(ARP in p and p[ARP].op == 2 and p[ARP].psrc == "192.0.2.254"
                                        for p in lan.results + wire.results) or result["sluice_resolved_kernel_v4"]
    lan_seen = [p for p in lan.results if UDP in p and p[UDP].dport == 6000]
    result["kernel_reached_lan_v4"] = any(IP in p and p[IP].dst == "10.0.0.5" and p[Ether].dst == HOST
                                          and p[Ether].src == pmac for p in lan_seen)
    result["kernel_reached_lan_v6"] = any(IPv6 in p and p[IPv6].dst == "2001:db8:a::5" and p[Ether].dst == HOST
                                          and p[Ether].src == pmac for p in lan_seen)
    neigh = sh("ip", "neigh", "show", "dev", "wire0") + sh("ip", "-6", "neigh", "show", "dev", "wire0")
    result["kernel_neighbors"] = neigh.strip().splitlines()
    umac = macs.get(0, "?")
    result["kernel_learned_sluice_v4"] = any(l.startswith("192.0.2.1 ") and umac in l and "FAILED" not in l
                                             for l in neigh.splitlines())
    result["kernel_learned_sluice_v6"] = any(l.startswith("2001:db8:b::1 ") and umac in l and "FAILED" not in l
                                             for l in neigh.splitlines())
    try:
        result["neighbor_list"] = ask("neighbor list").get("neighbors")
        result["agent"] = ask("stats").get("neighbor_agent")
    except (OSError, ValueError) as e:
        result["control_error"] = str(e)
finally:
    finish(gw, log, scratch, result)
