"""SA lifetimes end to end.

    lifetime_e2e.py make --dir D

sluice.conf on the test network of sluice_e2e.py with:
  0x6001 out, lifetime packets soft 5 hard 8   — 12 packets in: 8 leave;
  0x6002 out, lifetime bytes hard 3*L          — 6 packets of L bytes: 3 leave
                                                 (sent while the bytes before
                                                 them are below the limit);
  0x6003 in,  lifetime packets soft 3 hard 6   — scapy's ESP of 10: 6 forwarded;
  0x6004 out, lifetime seconds soft 1 hard 2   — no traffic: time alone.
in0.pcap holds the plaintext for 0x6001 and 0x6002 (protected port),
in1.pcap scapy's ESP for 0x6003 (unprotected port).
"""

import argparse
import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sluice_e2e as e2e  # noqa: E402
import spd_e2e as spd  # noqa: E402
from spd_e2e import IP, ESP, SecurityAssociation, raw  # noqa: E402

INNER_LEN = 20 + 8 + len(spd.TAG) + 6


def packet(i, dst):
    payload = spd.TAG + b"%06d" % i
    return IP(src="172.16.0.5", dst=dst, proto=17, ttl=64) / (struct.pack("!HHHH", 7000 + i, 53, 8 + len(payload), 0) + payload)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["make"])
    parser.add_argument("--dir", required=True)
    args = parser.parse_args()
    sa = "sa add spi 0x%x dir %s src %s dst %s mode tunnel aead aes-gcm-128 key 0x" + spd.KEY + " lifetime %s\n"
    config = os.path.join(args.dir, "sluice.conf")
    with open(config, "w") as f:
        f.write(e2e.CONFIG
                + sa % (0x6001, "out", "10.2.0.1", "10.2.0.2", "packets soft 5 hard 8")
                + sa % (0x6002, "out", "10.2.0.1", "10.2.0.2", "bytes hard %d" % (3 * INNER_LEN))
                + sa % (0x6003, "in", "10.2.0.2", "10.2.0.1", "packets soft 3 hard 6")
                + sa % (0x6004, "out", "10.2.0.1", "10.2.0.2", "seconds soft 1 hard 2")
                + "sp add dir out src 172.16.0.0/12 dst 192.168.61.0/24 priority 1 action protect spi 0x6001\n"
                + "sp add dir out src 172.16.0.0/12 dst 192.168.62.0/24 priority 1 action protect spi 0x6002\n"
                + "sp add dir out src 172.16.0.0/12 dst 192.168.64.0/24 priority 1 action protect spi 0x6004\n"
                + "sp add dir in src 192.168.63.0/24 dst 172.16.0.0/12 priority 1 action protect spi 0x6003\n")
    mac = b"\x02\x00\x00\x00\xbb\x01" + e2e.mac_bytes(spd.SENDER_MAC)
    plain = [mac + b"\x08\x00" + raw(packet(i, "192.168.61.9")) for i in range(12)]
    plain += [mac + b"\x08\x00" + raw(packet(100 + i, "192.168.62.9")) for i in range(6)]
    e2e.write_pcap(os.path.join(args.dir, "in0.pcap"), plain)
    peer = SecurityAssociation(ESP, spi=0x6003, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(spd.KEY),
                               tunnel_header=IP(src="10.2.0.2", dst="10.2.0.1"))
    esp = []
    for i in range(10):
        inner = packet(200 + i, "172.16.0.9")
        inner.src = "192.168.63.%d" % (1 + i)
        peer.seq_num = i + 1
        esp.append(b"\x02\x00\x00\x00\xbb\x02" + e2e.mac_bytes("02:00:00:00:02:02") + b"\x08\x00" + raw(peer.encrypt(inner)))
    e2e.write_pcap(os.path.join(args.dir, "in1.pcap"), esp)
    e2e.emit({"config": config, "inputs": len(plain) + len(esp)})


if __name__ == "__main__":
    main()
