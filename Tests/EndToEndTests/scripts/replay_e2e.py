"""Anti-replay end to end: 20 ESP packets made by scapy, sent twice.

    replay_e2e.py make --dir D

Writes sluice.conf (an inbound tunnel SA and its policy on the test network
of sluice_e2e.py) and in1.pcap: scapy's ESP of 20 tagged packets, sequence
numbers 1…20, then the same 20 frames again. The gateway must forward each
inner packet once (20 out of port 0) and drop the replays (esp_replayed).
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

SPI = 0x5001


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["make"])
    parser.add_argument("--dir", required=True)
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--queues", type=int, default=1,
                        help="2: port 1 gets two RX queues, each replaying all the frames once")
    parser.add_argument("--owner", type=int, help="the lcore that keeps the inbound SA (sa … cpu K)")
    args = parser.parse_args()
    config = os.path.join(args.dir, "sluice.conf")
    with open(config, "w") as f:
        f.write(e2e.CONFIG + "sa add spi 0x%x dir in src 10.2.0.2 dst 10.2.0.1 mode tunnel aead aes-gcm-128 key 0x%s%s\n"
                % (SPI, spd.KEY, "" if args.owner is None else " cpu %d" % args.owner) + "sp add dir in src 192.168.0.0/16 dst 172.16.0.0/12 priority 1 action protect spi 0x%x\n"
                % SPI)
    sa = SecurityAssociation(ESP, spi=SPI, crypt_algo="AES-GCM", crypt_key=bytes.fromhex(spd.KEY),
                             tunnel_header=IP(src="10.2.0.2", dst="10.2.0.1"))
    frames = []
    for i in range(args.count):
        payload = spd.TAG + b"%06d" % i
        inner = IP(src="192.168.1.%d" % (1 + i), dst="172.16.0.9", proto=17, ttl=64) / (
            struct.pack("!HHHH", 5000 + i, 53, 8 + len(payload), 0) + payload)
        sa.seq_num = i + 1
        esp = raw(sa.encrypt(inner))
        frames.append(b"\x02\x00\x00\x00\xbb\x02" + e2e.mac_bytes("02:00:00:00:02:02") + b"\x08\x00" + esp)
    if args.queues == 2:
        # Both queues carry every packet: two workers receive each sequence number once.
        e2e.write_pcap(os.path.join(args.dir, "in1_q0.pcap"), frames)
        e2e.write_pcap(os.path.join(args.dir, "in1_q1.pcap"), frames)
    else:
        e2e.write_pcap(os.path.join(args.dir, "in1.pcap"), frames + frames)
    e2e.emit({"config": config, "inputs": 2 * len(frames), "unique": len(frames)})


if __name__ == "__main__":
    main()
