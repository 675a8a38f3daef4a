"""A model of the gateway's ESP data path, written from the feature's
contract, for `esp_interop.py selftest` only: it reads the input pcaps that
`make` / `make-tamper` wrote and writes the output pcaps and drop counters a
correct sluice would, so that `check` and the tamper expectations can be
tested before (and independently of) the real data path. It is not used
when sluice runs.

Outbound (protected port): SPD by the cells' selectors (protect / discard /
no match), inner TTL - 1, ESP with the cell's outbound SA (sequence numbers
from the SA's `seq`, IV = the 64-bit sequence number, tunnel outer header
with the SA's TTL, DF rule, DSCP/ECN copied from the inner header; transport
keeps the packet's own header), UDP 4500 when the SA encapsulates, then out
of the unprotected port to the next hop. NAT-T transport mode inbound: the
TCP/UDP/ICMPv6 checksum recomputed (RFC 3948 §3.1.2).

Inbound (unprotected port): ESP (proto 50, or UDP to 4500 that is neither
a NAT keepalive nor behind a non-ESP marker) -> SA by SPI (and the SA's
src/dst) -> ESN high half inferred (RFC 4303 Appendix A2) -> replay
pre-check -> decrypt -> trailer -> window update -> inner selectors -> TTL
- 1 -> out of the protected port.
"""

import ipaddress
import os
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import esp_cells as esp  # noqa: E402
import sluice_e2e as e2e  # noqa: E402
from esp_cells import IP, IPv6  # noqa: E402


class ReplayWindow:
    """RFC 4303 §3.4.3 and Appendix A2, as plain sets of numbers."""

    def __init__(self, highest, size, esn):
        self.top = highest
        self.size = size
        self.esn = esn
        self.seen = set(range(max(0, highest - size + 1), highest + 1))

    def infer(self, low):
        if not self.esn:
            return low
        t, w = self.top, self.size
        tl, th = t & 0xFFFFFFFF, t >> 32
        bl = (t - w + 1) & 0xFFFFFFFF
        if tl >= w - 1:
            high = th if low >= bl else th + 1
        else:
            high = th - 1 if low >= bl else th
        return (high << 32) | low if high >= 0 else None

    def check(self, seq):
        if seq is None or seq == 0:
            return False
        if seq > self.top:
            return True
        if seq <= self.top - self.size:
            return False
        return seq not in self.seen

    def update(self, seq):
        if seq > self.top:
            self.top = seq
            self.seen = {s for s in self.seen if s > seq - self.size}
        self.seen.add(seq)


class Gateway:
    def __init__(self, cells, port_macs):
        self.cells = cells
        self.port_macs = port_macs
        self.drops = {}
        self.tx = {0: [], 1: []}
        self.out_seq = {c.out_spi: c.out_seq_start for c in cells}
        self.windows = {c.in_spi: ReplayWindow(c.peer_seq_start - 1, c.effective_window(), c.esn) for c in cells}
        self.by_in_spi = {c.in_spi: c for c in cells}

    def drop(self, reason):
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # -- outbound --------------------------------------------------------------

    def outbound(self, frame):
        packet = frame[14:]
        family = packet[0] >> 4
        src, dst = (ipaddress.ip_address(a) for a in esp.ip_addresses(packet))
        verdict = None
        for cell in self.cells:
            if src in cell.local_net and dst in cell.remote_net:
                verdict = cell
                break
            for direction, psrc, pdst, action in cell.extra_policies:
                if direction == "out" and src in ipaddress.ip_network(psrc) and dst in ipaddress.ip_network(pdst):
                    verdict = action
        if verdict is None:
            return self.drop("no_policy")
        if verdict == "discard":
            return self.drop("policy_discard")
        cell = verdict
        ttl = packet[8] if family == 4 else packet[7]
        if ttl <= 1:
            return self.drop("ttl_exceeded")
        inner = esp.decrement_ttl(packet)
        seq = self.out_seq[cell.out_spi]
        self.out_seq[cell.out_spi] = seq + 1
        sa = cell.scapy_sa("out")
        outer = None
        if cell.tunnel:
            tos = inner[1] if family == 4 else ((inner[0] & 0x0F) << 4 | inner[1] >> 4)
            if cell.outer_family == 4:
                df = {"set": True, "clear": False}.get(cell.effective_df(), family == 4 and bool(inner[6] & 0x40))
                outer = IP(src=cell.gateway, dst=cell.peer, ttl=cell.effective_ttl(), tos=tos, id=0,
                           flags="DF" if df else 0)
            else:
                outer = IPv6(src=cell.gateway, dst=cell.peer, hlim=cell.effective_ttl(), tc=tos)
        inner_pkt = IP(inner) if family == 4 else IPv6(inner)
        wire = esp.scapy_encrypt(sa, inner_pkt, seq, seq.to_bytes(8, "big"), cell.esn, outer=outer)
        if cell.udp:
            wire = esp.encapsulate_udp(wire)
        neighbor = esp.UNPROTECTED_NEIGHBOR[wire[0] >> 4][1]
        self.tx[1].append(esp.frame(wire, dst_mac=neighbor, src_mac=self.port_macs[1]))

    # -- inbound ---------------------------------------------------------------

    def inbound(self, frame):
        packet = frame[14:]
        hl = esp.ip_header_len(packet)
        proto = packet[9] if packet[0] >> 4 == 4 else packet[6]
        if proto == 17:
            sport, dport, length, _ = struct.unpack("!HHHH", packet[hl:hl + 8])
            payload = packet[hl + 8:]
            if dport != esp.NAT_T_PORT:
                return self.drop("no_policy")
            if payload == b"\xff":
                return self.drop("nat_keepalive")
            if payload[:4] == b"\0\0\0\0":
                return self.drop("non_esp_marker")
            packet = esp.strip_udp(packet)
            udp = True
        elif proto == 50:
            udp = False
        else:
            return self.drop("no_policy")
        data = packet[hl:]
        if len(data) < 8:
            return self.drop("malformed")
        spi, low = struct.unpack("!II", data[:8])
        cell = self.by_in_spi.get(spi)
        src, dst = esp.ip_addresses(packet)
        if cell is None or (cell.tunnel and (dst != cell.gateway or src != cell.peer)) or cell.udp != udp:
            return self.drop("no_sa")
        if len(data) < 8 + esp.IV_LEN + esp.ICV_LEN + 4 or (len(data) - 8 - esp.IV_LEN - esp.ICV_LEN) % 4:
            return self.drop("malformed")
        window = self.windows[spi]
        seq = window.infer(low)
        if not window.check(seq):
            return self.drop("replayed")
        plaintext = esp.aead_open(cell.aead, cell.in_key, spi, seq, cell.esn, data)
        if plaintext is None:
            return self.drop("authentication_failed")
        padlen, nh = plaintext[-2], plaintext[-1]
        body_len = len(plaintext) - 2 - padlen
        if body_len < 0 or plaintext[body_len:-2] != bytes(range(1, padlen + 1)):
            return self.drop("bad_padding")
        window.update(seq)
        body = plaintext[:body_len]
        if cell.tunnel:
            if nh not in (4, 41) or not body or body[0] >> 4 != (4 if nh == 4 else 6):
                return self.drop("malformed")
            inner = body
        else:
            header = bytearray(packet[:hl])
            if header[0] >> 4 == 4:
                header[9] = nh
                inner = esp.ipv4_fix(bytes(header) + body)
            else:
                header[6] = nh
                header[4:6] = struct.pack("!H", len(body))
                inner = bytes(header) + body
            if udp:
                inner = nat_transport_checksum(inner)
        isrc, idst = (ipaddress.ip_address(a) for a in esp.ip_addresses(inner))
        if isrc not in cell.remote_net or idst not in cell.local_net:
            return self.drop("selector_mismatch")
        ttl = inner[8] if inner[0] >> 4 == 4 else inner[7]
        if ttl <= 1:
            return self.drop("ttl_exceeded")
        out = esp.decrement_ttl(inner)
        neighbor = esp.PROTECTED_NEIGHBOR[out[0] >> 4][1]
        self.tx[0].append(esp.frame(out, dst_mac=neighbor, src_mac=self.port_macs[0]))


def nat_transport_checksum(packet):
    """RFC 3948 §3.1.2 for NAT-T transport mode: the TCP, UDP or ICMPv6
    checksum recomputed (by scapy) over the addresses the packet now has; a
    zero UDP checksum over IPv4 stays zero."""
    pkt = esp.IP(packet) if packet[0] >> 4 == 4 else esp.IPv6(packet)
    for layer, field in ((esp.TCP, "chksum"), (esp.UDP, "chksum"), (esp.ICMPv6EchoRequest, "cksum")):
        if layer in pkt and not (layer is esp.UDP and packet[0] >> 4 == 4 and pkt[layer].chksum == 0):
            delattr(pkt[layer], field)
            return bytes(esp.raw(pkt))
    return packet


def run(directory, expect, cells, port_macs, mutate=None):
    """Processes the input pcaps in DIR like the gateway and writes the TX
    pcaps; returns the drop counters. `mutate(port, frames)` may corrupt the
    output first (the selftest's negative cases)."""
    gateway = Gateway(cells, port_macs)
    rx = {int(p): [f for name in files["rx"] for f in e2e.read_pcap(os.path.join(directory, name))]
          for p, files in expect["ports"].items()}
    # One worker, port 0 then port 1 each poll: order within a port is kept, which is all that matters.
    for f in rx.get(0, []):
        gateway.outbound(f)
    for f in rx.get(1, []):
        gateway.inbound(f)
    for port, files in expect["ports"].items():
        frames = gateway.tx[int(port)]
        if mutate is not None:
            frames = mutate(int(port), list(frames))
        e2e.write_pcap(os.path.join(directory, files["tx"][0]), frames)
    return gateway.drops
