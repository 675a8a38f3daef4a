"""Shared pieces of the Sluice end-to-end scripts (run with /usr/bin/python3).

One place describes the test network (config text, neighbours, routes) and
what the gateway must do to a frame; make_traffic.py writes pcaps and the
expectation from it, check_output.py checks the gateway's pcaps against it.
"""

import json
import struct
import sys

sys.dont_write_bytecode = True

# Every generated frame carries this tag and a 6-digit id in its payload, so
# an output frame is matched to its input whatever order the gateway emits.
TAG = b"SLUICE-E2E#"
TAG_LEN = len(TAG) + 6

# Neighbours: address -> (MAC, port).
NEIGHBORS = {
    "10.1.0.2": ("02:00:00:00:01:02", 0),
    "10.2.0.2": ("02:00:00:00:02:02", 1),
    "2001:db8:1::2": ("02:00:00:00:01:62", 0),
    "2001:db8:2::2": ("02:00:00:00:02:62", 1),
}

CONFIG = """\
# Sluice end-to-end test network (written by make_traffic.py)
port 0 role protected address 10.1.0.1/24
port 0 address 2001:db8:1::1/64
port 1 role unprotected
port 1 address 10.2.0.1/24 address 2001:db8:2::1/64

neighbor 10.1.0.2 lladdr 02:00:00:00:01:02 port 0
neighbor 10.2.0.2 lladdr 02:00:00:00:02:02 port 1
neighbor 2001:db8:1::2 lladdr 02:00:00:00:01:62 port 0
neighbor 2001:db8:2::2 lladdr 02:00:00:00:02:62 port 1

route add 172.16.0.0/12 via 10.1.0.2
route add 192.168.0.0/16 via 10.2.0.2
route add 192.168.7.0/24 via 10.1.0.2          # more specific than the /16, other port
route add 2001:db8:100::/48 via 2001:db8:1::2
route add 2001:db8:200::/48 via 2001:db8:2::2
route add 2001:db8:200:7::/64 via 2001:db8:1::2  # more specific than the /48, other port
route add 203.0.113.0/24 port 1                # no neighbour for those hosts: no_neighbor
route add 198.18.0.0/15 via 10.2.0.2
route del 198.18.0.0/15                        # deleted again: no_route
"""


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


def ipv4_checksum(header):
    if len(header) % 2:
        header += b"\0"
    s = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def l3_offset(frame):
    """(offset of the IP header, ethertype) after Ethernet and one 802.1Q tag."""
    ethertype = struct.unpack("!H", frame[12:14])[0]
    if ethertype in (0x8100, 0x88A8):
        return 18, struct.unpack("!H", frame[16:18])[0]
    return 14, ethertype


def forwarded(frame, dst_mac, src_mac):
    """The exact bytes the gateway must transmit for `frame`: MACs rewritten,
    an 802.1Q/802.1ad tag removed (no VLAN interfaces), TTL / hop limit minus
    one, IPv4 header checksum recomputed, all else (options, payload,
    trailing padding) unchanged."""
    if l3_offset(frame)[0] == 18:
        frame = frame[0:12] + frame[16:]
    out = bytearray(frame)
    out[0:6] = mac_bytes(dst_mac)
    out[6:12] = mac_bytes(src_mac)
    off, ethertype = l3_offset(frame)
    if ethertype == 0x0800:
        ihl = (out[off] & 0x0F) * 4
        out[off + 8] -= 1
        out[off + 10:off + 12] = b"\0\0"
        out[off + 10:off + 12] = struct.pack("!H", ipv4_checksum(bytes(out[off:off + ihl])))
    elif ethertype == 0x86DD:
        out[off + 7] -= 1
    else:
        raise ValueError("not IP")
    return bytes(out)


def packet_id(frame):
    i = frame.find(TAG)
    if i < 0 or i + TAG_LEN > len(frame):
        return None
    digits = frame[i + len(TAG):i + TAG_LEN]
    return int(digits) if digits.isdigit() else None


def write_pcap(path, frames):
    """A classic little-endian pcap (microseconds, Ethernet), frames as given."""
    with open(path, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
        for i, frame in enumerate(frames):
            f.write(struct.pack("<IIII", 1700000000 + i // 1000000, i % 1000000, len(frame), len(frame)))
            f.write(frame)


def read_pcap(path):
    """Every frame of a classic pcap (either byte order, us or ns stamps)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        raise ValueError("%s: %d bytes, not a pcap file" % (path, len(data)))
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError("%s: bad pcap magic %s" % (path, magic.hex()))
    frames = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[offset:offset + 16])
        offset += 16
        frames.append(data[offset:offset + incl])
        offset += incl
    return frames


def emit(summary):
    json.dump(summary, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")
