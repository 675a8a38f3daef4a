/* Layout shared between cores, or with C: defined here, cache lines explicit.
 * Swift imports C structs aligned to more than 16 bytes as opaque pointers, so
 * nothing here carries an alignment attribute: objects are allocated 64-byte
 * aligned (rte_zmalloc_socket(..., 64, ...)) and padding members plus static
 * assertions keep each one-writer region on its own cache lines. */
#define SL_CACHE_LINE 64
#define SL_ASSERT_LINE(type, member) \
    _Static_assert(offsetof(type, member) % SL_CACHE_LINE == 0, #type "." #member " starts a cache line")
#define SL_ASSERT_LINES(type) _Static_assert(sizeof(type) % SL_CACHE_LINE == 0, #type " fills whole cache lines")
#ifndef SLUICE_LAYOUT_H
#define SLUICE_LAYOUT_H

#define SL_MAX_PORTS 32          /* port ids index per-core TX arrays directly */
#define SL_BURST 32              /* RX burst and TX flush threshold */
#define SL_TX_BUFFER 64          /* per (core, port) TX buffer capacity */
#define SL_DROP_REASON_MAX 48    /* named drop reasons, declared in Swift (DropReason) */

/* Per-core counters: plain integers written by their core only, read (racy but
 * torn-free on x86-64 for aligned 64-bit words) by the control thread. */
typedef struct sl_counters {
    uint64_t rx_packets;
    uint64_t rx_bytes;
    uint64_t tx_packets;
    uint64_t tx_bytes;
    uint64_t rx_bursts;      /* polls that returned at least one packet */
    uint64_t polls;          /* loop iterations */
    uint64_t busy_cycles;    /* TSC cycles spent in iterations that received packets */
    uint64_t drops[SL_DROP_REASON_MAX];
    uint64_t fragments;      /* fragments addressed to the gateway taken for reassembly */
    uint64_t reassembled;    /* datagrams they made whole */
    uint64_t fragmented;     /* datagrams this core sent in fragments */
    uint64_t fragments_out;  /* the fragments it made of them */
    uint64_t punted;         /* frames handed to the local stack (`port N punt M`) */
    uint64_t from_stack;     /* frames the local stack sent, relayed out of their port */
    uint64_t to_agent;       /* frames and packets handed to the neighbour agent (`port N resolve on`) */
    uint64_t from_agent;     /* frames the neighbour agent sent */
    uint64_t icmp_errors;    /* ICMP errors this core queued for TX (each then a tx packet or a tx_full drop; its cause a drop) */
    uint64_t icmp_limited;   /* ICMP errors not sent: the core's rate limit was reached */
    uint64_t events_lost;    /* ACQUIRE and EXPIRE events that found the core's event ring full */
    uint64_t reserved[6];
} sl_counters;
SL_ASSERT_LINES(sl_counters);

/* One TX buffer per (core, port): packets wait here until SL_BURST or the end
 * of the loop iteration. */
typedef struct sl_txq {
    uint16_t count;
    uint16_t queue;
    uint16_t port;
    uint16_t enabled;
    struct rte_mbuf *pkts[SL_TX_BUFFER];
    uint8_t reserved[56];
} sl_txq;
SL_ASSERT_LINES(sl_txq);

/* Prefetch policy per port: ring ports hand over mbufs no core touched
 * (headers and data cold); hardware NICs write the mbuf headers but DMA the
 * data (data cold); software PMDs that copy the packet (pcap, null, tap,
 * af_packet, memif) leave both hot. */
enum { SL_PREFETCH_MBUF = 1, SL_PREFETCH_DATA = 2 };

/* A resolved next hop: where a routed packet leaves and with which MACs.
 * Index 0 of every next-hop table is the "no route" entry, returned by the FIB
 * as its default, so a lookup never needs a miss branch. */
enum { SL_NH_FORWARD = 0, SL_NH_NO_ROUTE = 1, SL_NH_NO_NEIGHBOR = 2, SL_NH_LOCAL = 3, SL_NH_MARTIAN = 4 };
enum { SL_NH_ON_LINK = 1 };
enum { SL_AGENT_HELD = 0x8000 };  /* m.port of a packet the agent holds for a neighbour */
typedef struct sl_nexthop {
    struct rte_ether_addr dst;
    struct rte_ether_addr src;
    uint16_t port;
    uint8_t kind;
    uint8_t flags;           /* SL_NH_ON_LINK: a NO_NEIGHBOR entry whose port is set */
} sl_nexthop;
_Static_assert(sizeof(sl_nexthop) == 16, "next hop is 16 bytes");

/* An immutable forwarding snapshot: built by the control thread, published
 * with one atomic store, freed after an RCU grace period. */
typedef struct sl_fib {
    struct rte_lpm *lpm4;
    struct rte_fib6 *fib6;
    sl_nexthop *nexthops;
    uint32_t nb_nexthops;
    uint32_t default4;       /* next hop of 0.0.0.0/0 (rte_lpm has no depth 0); 0 = no route */
    uint64_t generation;
    /* Per port: the largest IP packet it sends (its IP MTU), and the
     * addresses ICMP errors leaving through it come from (IPv4 in host
     * order, 0 = none; IPv6 all zero = none). */
    uint16_t port_mtu[SL_MAX_PORTS];
    uint32_t port_addr4[SL_MAX_PORTS];
    uint8_t port_addr6[SL_MAX_PORTS][16];
    /* Per port: the reverse-path check of its arrivals (ReversePathFilter.code:
     * 0 off, 1 loose, 2 strict). */
    uint8_t port_rpf[SL_MAX_PORTS];
    /* Per port, the local network stack (`port N punt M`): port_punt[N] is
     * M + 1, where N's frames for the stack go; port_uplink[M] is N + 1,
     * where what the stack sends on M leaves. 0 = none. */
    uint8_t port_punt[SL_MAX_PORTS];
    uint8_t port_uplink[SL_MAX_PORTS];
    /* Per port: 1 when Sluice resolves its neighbours itself (`port N
     * resolve on`): its ARP and Neighbor Discovery frames, and packets whose
     * on-link next hop has no neighbour entry yet, go to the neighbour agent
     * (the control thread). */
    uint8_t port_resolve[SL_MAX_PORTS];
    /* The gateway's own addresses (its `local` routes) as 256-bit filters,
     * one per family (sl_fib_add_own*, sl_fib_may_be_own*): a clear bit
     * says a source is none of them, a set one asks the route table. */
    uint64_t own4[4];
    uint64_t own6[4];
} sl_fib;

/* State every worker reads and only the control thread writes. Accessed through
 * the sl_shared_* helpers (atomics), never field by field. */
typedef struct sl_shared {
    sl_fib *fib;
    uint64_t generation;
    uint32_t stop;
    uint32_t reserved0;
    void *ipsec;             /* the published IPsec tables (Swift object), NULL = no SPD: plain router */
    uint32_t reserved[8];
} sl_shared;
SL_ASSERT_LINES(sl_shared);

/* An event a worker reports to the control thread through its own
 * single-producer/single-consumer ring (fixed-size elements, no allocation). */
enum { SL_EVENT_ACQUIRE = 1, SL_EVENT_EXPIRE_SOFT = 2, SL_EVENT_EXPIRE_HARD = 3, SL_EVENT_PATH_MTU = 4 };
/* Why an SA expired (EXPIRE events, in `proto`). */
enum { SL_EXPIRE_BYTES = 1, SL_EXPIRE_PACKETS = 2, SL_EXPIRE_SEQUENCE = 3, SL_EXPIRE_SECONDS = 4, SL_EXPIRE_USE_SECONDS = 5 };
typedef struct sl_event {
    uint8_t kind;            /* SL_EVENT_* */
    uint8_t family;          /* ACQUIRE, PATH_MTU: 4 or 6; EXPIRE: the SA's direction, 0 out, 1 in */
    uint8_t proto;           /* ACQUIRE: the packet's protocol; EXPIRE: SL_EXPIRE_*; PATH_MTU: 50 or 17 (ESP in UDP) */
    uint8_t has_ports;
    uint32_t policy_id;      /* ACQUIRE: the policy; EXPIRE, PATH_MTU: the SA's SPI */
    uint32_t lcore;          /* the worker's EAL lcore id */
    uint16_t sport, dport;   /* ACQUIRE (ICMP: type, code); PATH_MTU: sport the MTU (at most 65535) */
    uint32_t sa_token;       /* EXPIRE: the SA record's token (SARecordBox.lifeToken); PATH_MTU: the
                                quoted sequence number (low 32 bits) */
    uint8_t src[16], dst[16]; /* ACQUIRE: the packet's; PATH_MTU: the quoted ESP packet's; IPv4: the first 4 bytes */
} sl_event;
_Static_assert(sizeof(sl_event) == 52, "sl_event is a ring element of 52 bytes");

/* Per-core context: allocated on the worker's NUMA node, one writer. */
typedef struct sl_worker {
    uint32_t lcore_id;
    uint32_t qsbr_thread_id;
    uint16_t queue_id;
    uint16_t nb_ports;
    int32_t socket_id;
    struct rte_rcu_qsbr *qsbr;
    sl_shared *shared;
    void *crypto;            /* this core's crypto context (Swift object), owned by the gateway */
    uint16_t port_ids[SL_MAX_PORTS];
    uint8_t port_roles[SL_MAX_PORTS];
    /* Per port, what the worker prefetches for a received burst
     * (SL_PREFETCH_* bits, chosen from the driver at set-up). */
    uint8_t port_prefetch[SL_MAX_PORTS];
    /* ICMP errors this core originates, token bucket (see ICMPErrors.swift). */
    uint64_t icmp_refill_tsc;  /* when the bucket last gained a token */
    uint32_t icmp_tokens;
    /* IPv6 Fragment header identifications this core writes: a counter
     * and a key (`frag_key`, below), both random at start
     * (sl_worker_next_frag_id). */
    uint32_t frag_counter;
    /* The mbuf pool of the worker's NUMA node (ordinary 2 KiB buffers): what
     * it allocates packets from (fragments), whatever pool the packet
     * at hand came from (a reassembled datagram's may be a small pool of
     * large buffers, reassembly.c). */
    struct rte_mempool *pool;
    sl_counters counters;
    sl_txq tx[SL_MAX_PORTS];
    /* Per-burst scratch (struct of arrays), only touched by this core. */
    struct rte_mbuf *rx[SL_BURST];
    uint8_t dst6[SL_BURST][16];
    uint64_t nh6[SL_BURST];
    struct rte_mbuf *pkt6[SL_BURST];  /* the n-th IPv6 packet of the burst */
    uint8_t *l3_6[SL_BURST];          /* its IP header */
    /* Outbound ESP waiting for its sequence numbers (reserved once per SA per burst). */
    struct rte_mbuf *seal_m[SL_BURST];
    uint8_t *seal_ip[SL_BURST];
    uint32_t seal_len[SL_BURST];  /* the SA of each: WorkerIPsec.sealRecord */
    /* The neighbour agent (control thread, `port N resolve on`): what this
     * worker hands it (SP/SC ring of mbufs: ARP/ND frames with m.port the
     * arrival port; IP packets waiting for a neighbour, data at the IP
     * header, m.port the port they leave by | SL_AGENT_HELD), and, on the
     * worker with queue 0 only, the frames it sends (m.port their port). */
    struct rte_ring *agent_rx;
    struct rte_ring *agent_tx;
    /* Held packets this core may still hand the agent: a token bucket
     * (NeighborHandoff.swift), so a flood towards an unresolved neighbour
     * costs the control thread a bounded rate. */
    uint64_t agent_refill_tsc;
    uint32_t agent_tokens;
    uint32_t reserved_agent;
    uint8_t frag_key[16];
} sl_worker;
SL_ASSERT_LINE(sl_worker, counters);
SL_ASSERT_LINE(sl_worker, tx);
SL_ASSERT_LINE(sl_worker, rx);

#endif
