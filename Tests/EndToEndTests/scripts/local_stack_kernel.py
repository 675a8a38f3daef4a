"""The local stack through the real sluice, with the Linux kernel as that
stack (a peer nobody here wrote). Run inside a fresh network namespace
(`unshare -n`): three net_tap ports, wire0 (port 0, unprotected: the
outside, where scapy plays a neighbour), stack0 (port 1: `port 0 punt 1`,
the kernel's side of port 0, with port 0's MAC and addresses) and lan0
(port 2, protected). Asks the kernel, through sluice, for ARP, ping,
Neighbor Discovery and IKE on UDP 500 (the inbound SPD bypasses it), and
prints one JSON line with what came back and sluice's final counters.

usage: local_stack_kernel.py SLUICE SCRATCH_DIR
"""
import json, os, socket, subprocess, sys, threading, time
from sluice_child import finish

sluice, scratch = sys.argv[1], sys.argv[2]
MAC, HOST = "02:00:00:00:00:01", "02:cc:00:00:00:01"
conf = os.path.join(scratch, "gw.conf")
with open(conf, "w") as f:
    f.write("""port 0 role unprotected address 192.0.2.1/24
port 0 address 2001:db8:b::1/64
port 1
port 0 punt 1
port 2 role protected address 10.0.0.1/24
sa add spi 0x100 dir in src 192.0.2.254 dst 192.0.2.1 mode tunnel aead aes-gcm-128 key 0x%s
sp add dir in src 0.0.0.0/0 dst 192.0.2.1/32 proto udp dport 500-500 priority 1 action bypass
sp add dir in src 0.0.0.0/0 dst 192.0.2.1/32 proto icmp priority 2 action bypass
sp add dir in src 198.51.100.0/24 dst 10.0.0.0/24 priority 3 action protect spi 0x100
""" % ("6d" * 20))

def sh(*args):
    subprocess.run(args, check=True, capture_output=True)

sh("ip", "link", "set", "lo", "up")
log = open(os.path.join(scratch, "sluice.log"), "w")
gw = subprocess.Popen([sluice, "--no-huge", "-m", "256", "--no-pci", "--no-shconf", "--no-telemetry", "--lcores", "0,1",
                       "--vdev", "net_tap0,iface=wire0,mac=" + MAC, "--vdev", "net_tap1,iface=stack0,mac=" + MAC,
                       "--vdev", "net_tap2,iface=lan0", "--", "--config", conf, "--control", "none"],
                      stdout=log, stderr=subprocess.STDOUT)
result = {"started": False}
try:
    for _ in range(100):
        names = os.listdir("/sys/class/net")
        if all(n in names for n in ("wire0", "stack0", "lan0")):
            break
        time.sleep(0.1)
    time.sleep(1.0)
    result["started"] = gw.poll() is None
    with open("/proc/sys/net/ipv6/conf/wire0/disable_ipv6", "w") as f:
        f.write("1")
    sh("ip", "link", "set", "wire0", "up")
    sh("ip", "addr", "add", "192.0.2.1/24", "dev", "stack0")
    sh("ip", "-6", "addr", "add", "2001:db8:b::1/64", "dev", "stack0", "nodad")
    sh("ip", "link", "set", "stack0", "up")

    # IKE's socket on the kernel's side: answers each datagram.
    ike = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    ike.bind(("192.0.2.1", 500))
    ike.settimeout(8)
    def answer():
        try:
            data, peer = ike.recvfrom(2048)
            ike.sendto(b"IKE-REPLY:" + data, peer)
        except OSError:
            pass
    threading.Thread(target=answer, daemon=True).start()

    from scapy.all import conf as sconf, srp1, Ether, ARP, IP, ICMP, UDP, IPv6, ICMPv6ND_NS, ICMPv6ND_NA, \
        ICMPv6NDOptSrcLLAddr, ICMPv6NDOptDstLLAddr, Raw
    sconf.verb = 0
    r = srp1(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST) / ARP(op=1, hwsrc=HOST, psrc="192.0.2.254", pdst="192.0.2.1"),
             iface="wire0", timeout=3, retry=2)
    result["arp"] = r is not None and ARP in r and r[ARP].op == 2 and r[ARP].psrc == "192.0.2.1" and r[ARP].hwsrc == MAC \
        and r[ARP].pdst == "192.0.2.254"
    r = srp1(Ether(dst=MAC, src=HOST) / IP(src="192.0.2.254", dst="192.0.2.1") / ICMP(id=7, seq=1) / b"sluice-ping",
             iface="wire0", timeout=3, retry=2)
    result["ping"] = r is not None and ICMP in r and r[ICMP].type == 0 and r[IP].src == "192.0.2.1" \
        and bytes(r[ICMP].payload) == b"sluice-ping"
    r = srp1(Ether(dst="33:33:ff:00:00:01", src=HOST) / IPv6(src="fe80::cc", dst="ff02::1:ff00:1", hlim=255)
             / ICMPv6ND_NS(tgt="2001:db8:b::1") / ICMPv6NDOptSrcLLAddr(lladdr=HOST), iface="wire0", timeout=3, retry=2)
    result["neighbor_discovery"] = r is not None and ICMPv6ND_NA in r and r[ICMPv6ND_NA].tgt == "2001:db8:b::1" \
        and ICMPv6NDOptDstLLAddr in r and r[ICMPv6NDOptDstLLAddr].lladdr == MAC
    r = srp1(Ether(dst=MAC, src=HOST) / IP(src="192.0.2.254", dst="192.0.2.1") / UDP(sport=500, dport=500)
             / b"IKE_SA_INIT", iface="wire0", timeout=3, retry=2)
    result["ike"] = r is not None and UDP in r and bytes(r[UDP].payload) == b"IKE-REPLY:IKE_SA_INIT"
finally:
    finish(gw, log, scratch, result)
