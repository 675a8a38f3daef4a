"""The ESP interop matrix: cells, their addresses, SAs, policies and config
lines, and the scapy peer (scapy.layers.ipsec) that encrypts and decrypts
for them. Shared by esp_interop.py (make, check, tamper, selftest) and
esp_reference.py (the gateway model the selftest runs instead of sluice).

A cell is AEAD x mode/families x ESN x encapsulation, named
`AEAD/MODE/ESN/ENCAP`, e.g. `aes-gcm-256/tunnel-6in4/esn/udp`:

  AEAD   aes-gcm-128 | aes-gcm-256 | chacha20-poly1305
  MODE   tunnel-4in4 | tunnel-6in6 | tunnel-4in6 | tunnel-6in4   (inner in outer)
         transport-4 | transport-6
  ESN    noesn: outbound seq 1.., inbound SA fresh, the peer sends 1..
         esn:   outbound `esn seq 4294967290`, the peer sends from
                4294967290 and the inbound SA says `seq 4294967289`, so
                both directions cross 2^32 after six packets
  ENCAP  esp: IP protocol 50 | udp: RFC 3948 UDP 4500 -> 4500

Every cell has its own SPIs and inner prefixes (and tunnel peer), so any set
of cells shares one config and one gateway run. Cell number i (its place in
the matrix, or 100+ for the tamper cells):

  protected hosts   10.8.i.0/24      2001:db8:8:i::/64   behind 10.0.0.5 / 2001:db8::5 (port 0)
  remote hosts      10.9.i.0/24      2001:db8:9:i::/64   via 192.0.2.2 / 2001:db8:2::2 (port 1)
  tunnel peer       198.51.100.i+1   2001:db8:5::i+1     via 192.0.2.2 / 2001:db8:2::2
  gateway (outer)   192.0.2.1        2001:db8:2::1
  SPIs              out 0x00010000+i, in 0x00020000+i    (bit 31 clear: a flipped bit 31 names no SA)
"""

import hashlib
import ipaddress
import os
import random
import struct
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import sluice_e2e as e2e  # noqa: E402

try:
    from scapy.all import ICMP, IP, TCP, UDP, ICMPv6EchoRequest, IPv6, Raw, raw  # noqa: E402
    from scapy.layers.ipsec import CRYPT_ALGOS, ESP, SecurityAssociation, _ESPPlain  # noqa: E402,F401
    from scapy.layers.ipsec import IPSecIntegrityError  # noqa: E402,F401  (re-exported)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305  # noqa: E402
except ImportError as error:  # pragma: no cover
    e2e.emit({"ok": False, "error": "scapy/cryptography missing for %s: %s "
              "(apt-get install python3-scapy python3-cryptography)" % (sys.executable, error)})
    sys.exit(3)

AEADS = ["aes-gcm-128", "aes-gcm-256", "chacha20-poly1305"]
MODES = ["tunnel-4in4", "tunnel-6in6", "tunnel-4in6", "tunnel-6in4", "transport-4", "transport-6"]
ESNS = ["noesn", "esn"]
ENCAPS = ["esp", "udp"]

# scapy's algorithm name and the cipher key length (the salt, 4 bytes, follows the key).
SCAPY_AEAD = {
    "aes-gcm-128": ("AES-GCM", 16),
    "aes-gcm-256": ("AES-GCM", 32),
    "chacha20-poly1305": ("CHACHA20-POLY1305", 32),
}
SALT = 4
IV_LEN = 8
ICV_LEN = 16
ESN_START = 4294967290          # 2^32 - 6
NAT_T_PORT = 4500
TAMPER_BASE = 100               # cell numbers of the tamper cells

# The test network. Port MACs are sluice's (given to `check`); these are the neighbours'.
PROTECTED_GW = ("10.0.0.1", "2001:db8::1")
UNPROTECTED_GW = ("192.0.2.1", "2001:db8:2::1")
PROTECTED_NEIGHBOR = {4: ("10.0.0.5", "02:00:00:00:00:05"), 6: ("2001:db8::5", "02:00:00:00:00:65")}
UNPROTECTED_NEIGHBOR = {4: ("192.0.2.2", "02:00:00:00:00:02"), 6: ("2001:db8:2::2", "02:00:00:00:00:62")}
SENDER_MAC = "02:00:00:00:aa:01"
GATEWAY_MAC_PLACEHOLDER = "02:00:00:00:bb:01"  # sluice does not check the destination MAC

TAG = b"SLUICE-ESP#"            # + 6 digits: the packet id, inside every inner payload
TAG_LEN = len(TAG) + 6


def all_cell_names():
    return ["%s/%s/%s/%s" % (a, m, s, e) for a in AEADS for m in MODES for s in ESNS for e in ENCAPS]


def packet_id(data):
    i = data.find(TAG)
    if i < 0 or i + TAG_LEN > len(data):
        return None
    digits = data[i + len(TAG):i + TAG_LEN]
    return int(digits) if digits.isdigit() else None


class Cell:
    """One matrix cell: its two SAs (out: sluice encrypts, in: the scapy
    peer encrypts), its two protect policies and its traffic."""

    def __init__(self, name, index=None, engine="per-cell", replay_window=None, ttl=None, df=None):
        parts = name.split("/")
        if len(parts) != 4 or parts[0] not in AEADS or parts[1] not in MODES or parts[2] not in ESNS \
                or parts[3] not in ENCAPS:
            raise ValueError("bad cell name %r: expected AEAD/MODE/ESN/ENCAP from %s / %s / %s / %s"
                             % (name, "|".join(AEADS), "|".join(MODES), "|".join(ESNS), "|".join(ENCAPS)))
        self.name = name
        self.aead, self.mode, esn, encap = parts
        self.index = all_cell_names().index(name) if index is None else index
        if not 0 <= self.index <= 253:
            raise ValueError("cell number %d out of 0...253" % self.index)
        self.esn = esn == "esn"
        self.udp = encap == "udp"
        self.tunnel = self.mode.startswith("tunnel")
        if self.tunnel:
            self.inner_family = 6 if self.mode[7] == "6" else 4
            self.outer_family = 6 if self.mode[-1] == "6" else 4
        else:
            self.inner_family = self.outer_family = int(self.mode[-1])
        i = self.index
        self.out_spi = 0x00010000 + i
        self.in_spi = 0x00020000 + i
        seed = hashlib.sha256(name.encode() + b"%d" % i).digest()
        key_len = SCAPY_AEAD[self.aead][1] + SALT
        self.out_key = (hashlib.sha256(b"out" + seed).digest() + hashlib.sha256(b"out2" + seed).digest())[:key_len]
        self.in_key = (hashlib.sha256(b"in" + seed).digest() + hashlib.sha256(b"in2" + seed).digest())[:key_len]
        self.out_seq_start = ESN_START if self.esn else 1
        self.peer_seq_start = ESN_START if self.esn else 1
        self.replay_window = replay_window          # None: sluice's default (64)
        # Outer header options, varied over the cells so that each is exercised.
        self.ttl = ttl if ttl is not None else (17 if self.tunnel and i % 3 == 1 else None)
        self.df = df if df is not None else ({0: None, 1: "set", 2: "clear"}[i % 3]
                                              if self.tunnel and self.outer_family == 4 else None)
        if engine == "per-cell":
            # aes-gcm-128 only exists in intel-ipsec-mb; the others alternate so
            # both engines meet scapy: plain ESP on ipsec-mb, UDP on libsodium.
            engine = None if self.aead == "aes-gcm-128" else ("sodium" if self.udp else "ipsec-mb")
        self.engine = engine or None
        # Prefixes and addresses.
        v4 = self.inner_family == 4
        self.local_net = ipaddress.ip_network("10.8.%d.0/24" % i if v4 else "2001:db8:8:%x::/64" % i)
        self.remote_net = ipaddress.ip_network("10.9.%d.0/24" % i if v4 else "2001:db8:9:%x::/64" % i)
        self.gateway = UNPROTECTED_GW[0] if self.outer_family == 4 else UNPROTECTED_GW[1]
        self.peer = "198.51.100.%d" % (i + 1) if self.outer_family == 4 else "2001:db8:5::%x" % (i + 1)
        self.extra_policies = []  # (dir, src, dst, action) for tamper cells

    def to_json(self):
        return {"name": self.name, "index": self.index, "engine": self.engine, "replay_window": self.replay_window,
                "ttl": self.ttl, "df": self.df, "extra_policies": self.extra_policies}

    @staticmethod
    def from_json(d):
        cell = Cell(d["name"], index=d["index"], engine=d["engine"], replay_window=d["replay_window"],
                    ttl=d["ttl"], df=d["df"])
        cell.extra_policies = [tuple(p) for p in d["extra_policies"]]
        return cell

    # -- config ---------------------------------------------------------------

    def effective_ttl(self):
        return self.ttl if self.ttl is not None else 64

    def effective_df(self):
        return self.df or "copy"

    def effective_window(self):
        return self.replay_window or 64

    def config_lines(self):
        lines = ["# cell %d: %s" % (self.index, self.name)]
        common = []
        if self.udp:
            common.append("encap udp %d %d" % (NAT_T_PORT, NAT_T_PORT))
        for direction in ("out", "in"):
            spi = self.out_spi if direction == "out" else self.in_spi
            key = self.out_key if direction == "out" else self.in_key
            words = ["sa add spi 0x%08x dir %s" % (spi, direction)]
            if self.tunnel:
                src, dst = (self.gateway, self.peer) if direction == "out" else (self.peer, self.gateway)
                words.append("src %s dst %s" % (src, dst))
            words.append("mode %s" % ("tunnel" if self.tunnel else "transport"))
            aead = "aead %s key 0x%s" % (self.aead, key.hex())
            words.append(aead)
            if self.esn:
                seq = self.out_seq_start if direction == "out" else self.peer_seq_start - 1
                words.append("esn seq %d" % seq)
            if direction == "in" and self.replay_window is not None:
                words.append("replay-window %d" % self.replay_window)
            words += common
            if direction == "out" and self.tunnel:
                if self.df is not None:
                    words.append("df %s" % self.df)
                if self.ttl is not None:
                    words.append("ttl %d" % self.ttl)
            if self.engine is not None:
                words.append("crypto-engine %s" % self.engine)
            lines.append(" ".join(words))
        lines.append("sp add dir out src %s dst %s priority 10 action protect spi 0x%08x"
                     % (self.local_net, self.remote_net, self.out_spi))
        lines.append("sp add dir in src %s dst %s priority 10 action protect spi 0x%08x"
                     % (self.remote_net, self.local_net, self.in_spi))
        for direction, src, dst, action in self.extra_policies:
            lines.append("sp add dir %s src %s dst %s priority 10 action %s" % (direction, src, dst, action))
        return lines

    # -- scapy SAs ------------------------------------------------------------

    def scapy_sa(self, direction):
        """The scapy SecurityAssociation for one direction: 'in' is what the
        peer encrypts with (sluice's inbound SA), 'out' what checks sluice's
        ESP. No nat_t_header: UDP is added and removed by `encapsulate` /
        `decapsulate_udp` (scapy 2.5 writes UDP length 8 for IPv4)."""
        algo, _ = SCAPY_AEAD[self.aead]
        tunnel = None
        if self.tunnel:
            src, dst = (self.gateway, self.peer) if direction == "out" else (self.peer, self.gateway)
            tunnel = IP(src=src, dst=dst) if self.outer_family == 4 else IPv6(src=src, dst=dst)
        spi = self.out_spi if direction == "out" else self.in_spi
        key = self.out_key if direction == "out" else self.in_key
        return SecurityAssociation(ESP, spi=spi, crypt_algo=algo, crypt_key=key, tunnel_header=tunnel,
                                   esn_en=self.esn)


# -- encryption and decryption with 64-bit sequence numbers ----------------------

def scapy_encrypt(sa, inner, seq64, iv, esn, outer=None):
    """scapy's ESP of `inner` with the 64-bit sequence number `seq64`.
    scapy takes `seq_num or self.seq_num` and `esn or self.esn`, so a low or
    high half of 0 must go through the SA's own fields."""
    sa.seq_num = seq64 & 0xFFFFFFFF
    sa.esn = seq64 >> 32 if esn else 0
    if outer is not None:
        sa.tunnel_header = outer
    return raw(sa.encrypt(inner, iv=iv))


def scapy_decrypt(sa, packet_bytes, seq64_high, esn):
    """scapy's decryption of an IP/ESP packet (no UDP) with the given high
    half; returns the scapy packet or raises IPSecIntegrityError."""
    sa.esn = seq64_high if esn else 0
    pkt = IP(packet_bytes) if packet_bytes[0] >> 4 == 4 else IPv6(packet_bytes)
    return sa.decrypt(pkt)  # scapy decrypts in place; pkt is ours


def esp_fields(esp):
    """(spi, low seq, iv, ciphertext, icv) of ESP bytes (SPI onwards)."""
    spi, seq = struct.unpack("!II", esp[:8])
    return spi, seq, esp[8:8 + IV_LEN], esp[8 + IV_LEN:-ICV_LEN], esp[-ICV_LEN:]


def aead_open(aead, key_and_salt, spi, seq64, esn, esp):
    """The ESP payload (payload, padding, pad length, next header) of ESP
    bytes, by the cryptography package directly (RFC 4106 / RFC 7634 nonce
    and AAD); None when it does not authenticate. Used for what scapy does
    not expose: the padding bytes."""
    key, salt = key_and_salt[:-SALT], key_and_salt[-SALT:]
    iv = esp[8:8 + IV_LEN]
    low = seq64 & 0xFFFFFFFF
    aad = struct.pack("!III", spi, seq64 >> 32, low) if esn else struct.pack("!II", spi, low)
    cipher = ChaCha20Poly1305(key) if aead.startswith("chacha") else AESGCM(key)
    try:
        return cipher.decrypt(salt + iv, esp[8 + IV_LEN:], aad)
    except Exception:
        return None


# -- outer headers and UDP encapsulation --------------------------------------

def ipv4_fix(header_and_payload):
    """IPv4 bytes with total length and header checksum recomputed."""
    b = bytearray(header_and_payload)
    ihl = (b[0] & 0x0F) * 4
    b[2:4] = struct.pack("!H", len(b))
    b[10:12] = b"\0\0"
    b[10:12] = struct.pack("!H", e2e.ipv4_checksum(bytes(b[:ihl])))
    return bytes(b)


def udp_checksum(family, src, dst, segment):
    addresses = ipaddress.ip_address(src).packed + ipaddress.ip_address(dst).packed
    if family == 4:
        pseudo = addresses + struct.pack("!BBH", 0, 17, len(segment))
    else:
        pseudo = addresses + struct.pack("!IxxxB", len(segment), 17)
    data = pseudo + segment
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    c = (~s) & 0xFFFF
    return c or 0xFFFF


def ip_header_len(packet):
    return (packet[0] & 0x0F) * 4 if packet[0] >> 4 == 4 else 40


def esp_offset(packet):
    """(offset of the SPI, UDP-encapsulated?) in an IP packet without extension
    headers that carries ESP, or ESP in UDP from or to port 4500; None when it
    carries neither or is too short to hold the SPI."""
    if len(packet) < 20:
        return None
    hl = ip_header_len(packet)
    proto = packet[9] if packet[0] >> 4 == 4 else packet[6]
    if proto == 50 and len(packet) >= hl + 4:
        return hl, False
    if proto == 17 and len(packet) >= hl + 12 and NAT_T_PORT in struct.unpack("!HH", packet[hl:hl + 4]):
        return hl + 8, True
    return None


def ip_addresses(packet):
    if packet[0] >> 4 == 4:
        return str(ipaddress.ip_address(packet[12:16])), str(ipaddress.ip_address(packet[16:20]))
    return str(ipaddress.ip_address(packet[8:24])), str(ipaddress.ip_address(packet[24:40]))


def encapsulate_udp(packet, sport=NAT_T_PORT, dport=NAT_T_PORT, checksum_v4=False):
    """IP/ESP -> IP/UDP/ESP (RFC 3948): protocol 17, a UDP header, lengths
    fixed. The UDP checksum is 0 over IPv4 (RFC 3948 §2.1) and computed over
    IPv6 (RFC 8200 §8.1: a zero UDP checksum is not valid there)."""
    hl = ip_header_len(packet)
    header, esp = bytearray(packet[:hl]), packet[hl:]
    family = packet[0] >> 4
    udp = bytearray(struct.pack("!HHHH", sport, dport, 8 + len(esp), 0)) + esp
    src, dst = ip_addresses(packet)
    if family == 6 or checksum_v4:
        udp[6:8] = struct.pack("!H", udp_checksum(family, src, dst, bytes(udp)))
    if family == 4:
        header[9] = 17
        return ipv4_fix(bytes(header) + bytes(udp))
    header[6] = 17
    header[4:6] = struct.pack("!H", len(udp))
    return bytes(header) + bytes(udp)


def strip_udp(packet):
    """IP/UDP/ESP -> IP/ESP (the inverse of encapsulate_udp)."""
    hl = ip_header_len(packet)
    header, esp = bytearray(packet[:hl]), packet[hl + 8:]
    if packet[0] >> 4 == 4:
        header[9] = 50
        return ipv4_fix(bytes(header) + esp)
    header[6] = 50
    header[4:6] = struct.pack("!H", len(esp))
    return bytes(header) + esp


def wrap_esp(cell, direction, inner, esp):
    """A whole IP packet around ESP bytes the caller sealed itself: the
    cell's outer header (tunnel) or the inner packet's own header (transport),
    plus UDP when the cell encapsulates."""
    if cell.tunnel:
        src, dst = (cell.peer, cell.gateway) if direction == "in" else (cell.gateway, cell.peer)
        outer = raw(IP(src=src, dst=dst, proto=50, ttl=64)) if cell.outer_family == 4 else \
            raw(IPv6(src=src, dst=dst, nh=50, hlim=64))
        header = outer[:ip_header_len(outer)]
    else:
        header = inner[:ip_header_len(inner)]
    packet = bytearray(header) + esp
    if packet[0] >> 4 == 4:
        packet[9] = 50
        packet = ipv4_fix(bytes(packet))
    else:
        packet[6] = 50
        packet[4:6] = struct.pack("!H", len(esp))
        packet = bytes(packet)
    return encapsulate_udp(packet) if cell.udp else packet


def transport_split(inner):
    """(L4 bytes, protocol) of an IP packet without extension headers."""
    hl = ip_header_len(inner)
    proto = inner[9] if inner[0] >> 4 == 4 else inner[6]
    return inner[hl:], proto


def frame(packet, dst_mac=GATEWAY_MAC_PLACEHOLDER, src_mac=SENDER_MAC):
    ethertype = 0x0800 if packet[0] >> 4 == 4 else 0x86DD
    return e2e.mac_bytes(dst_mac) + e2e.mac_bytes(src_mac) + struct.pack("!H", ethertype) + packet


# -- inner traffic ----------------------------------------------------------------

class Traffic:
    """Plaintext inner packets with unique ids in their payloads."""

    SIZES = [0, 0, 1, 3, 7, 18, 64, 200, 512, 1000, 1200]

    def __init__(self, seed, first_id=0):
        self.rng = random.Random(seed)
        self.next_id = first_id

    def host(self, net):
        r = self.rng
        if net.version == 4:
            return str(net.network_address + r.randint(1, 254))
        return str(net.network_address + r.randint(1, 0xFFFF))

    def inner(self, src_net, dst_net, size=None, ttl=None):
        """(id, inner IP packet bytes): UDP, TCP or ICMP echo with a tagged payload."""
        r = self.rng
        ident = self.next_id
        self.next_id += 1
        if size is None:
            size = r.choice(self.SIZES)
        body = TAG + b"%06d" % ident + bytes(r.getrandbits(8) for _ in range(size))
        src, dst = self.host(src_net), self.host(dst_net)
        hop = ttl if ttl is not None else r.choice([2, 3, 63, 64, 128, 255])
        kind = r.randrange(3)
        if src_net.version == 4:
            l3 = IP(src=src, dst=dst, ttl=hop, id=r.getrandbits(16), flags=r.choice([0, 2]),
                    tos=r.choice([0, 0x10, 0xb8, 0x02]))
            l4 = [UDP(sport=r.randint(1024, 65535), dport=r.choice([53, 443, r.randint(1, 65535)])),
                  TCP(sport=r.randint(1024, 65535), dport=r.choice([22, 80, 443]), flags=r.choice(["S", "A", "PA"]),
                      seq=r.getrandbits(32), ack=r.getrandbits(32)),
                  ICMP(type=8, id=r.getrandbits(16), seq=r.getrandbits(16))][kind]
        else:
            l3 = IPv6(src=src, dst=dst, hlim=hop, fl=r.getrandbits(20), tc=r.choice([0, 0x20, 0xb8, 0x02]))
            l4 = [UDP(sport=r.randint(1024, 65535), dport=r.choice([53, 443, r.randint(1, 65535)])),
                  TCP(sport=r.randint(1024, 65535), dport=r.choice([22, 80, 443]), flags=r.choice(["S", "A", "PA"]),
                      seq=r.getrandbits(32), ack=r.getrandbits(32)),
                  ICMPv6EchoRequest(id=r.getrandbits(16), seq=r.getrandbits(16))][kind]
        return ident, raw(l3 / l4 / Raw(body))

    def iv(self):
        return bytes(self.rng.getrandbits(8) for _ in range(IV_LEN))


def decrement_ttl(packet):
    """The IP packet as a router forwards it: TTL / hop limit - 1, IPv4 checksum recomputed."""
    b = bytearray(packet)
    if b[0] >> 4 == 4:
        b[8] -= 1
        ihl = (b[0] & 0x0F) * 4
        b[10:12] = b"\0\0"
        b[10:12] = struct.pack("!H", e2e.ipv4_checksum(bytes(b[:ihl])))
    else:
        b[7] -= 1
    return bytes(b)


def peer_encrypt(cell, inner, seq64, iv):
    """What the scapy peer sends for `inner`: IP[/UDP]/ESP with the cell's
    inbound SA (tunnel: outer from the peer to the gateway)."""
    sa = cell.scapy_sa("in")
    if cell.tunnel:
        outer = IP(src=cell.peer, dst=cell.gateway, ttl=64) if cell.outer_family == 4 else \
            IPv6(src=cell.peer, dst=cell.gateway, hlim=64)
        sa.tunnel_header = outer
    inner_pkt = IP(inner) if cell.inner_family == 4 else IPv6(inner)
    packet = scapy_encrypt(sa, inner_pkt, seq64, iv, cell.esn)
    return encapsulate_udp(packet) if cell.udp else packet


def load_cells(names, engine="per-cell"):
    return [Cell(n, engine=engine) for n in names]
