/* Layout shared between cores, or with C: defined here with explicit alignment. */
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
    uint64_t drops[SL_DROP_REASON_MAX];
} __rte_cache_aligned sl_counters;

/* One TX buffer per (core, port): packets wait here until SL_BURST or the end
 * of the loop iteration. */
typedef struct sl_txq {
    uint16_t count;
    uint16_t queue;
    uint16_t port;
    uint16_t enabled;
    struct rte_mbuf *pkts[SL_TX_BUFFER];
} __rte_cache_aligned sl_txq;

/* A resolved next hop: where a routed packet leaves and with which MACs. */
enum { SL_NH_FORWARD = 0, SL_NH_NO_NEIGHBOR = 1, SL_NH_LOCAL = 2 };
typedef struct sl_nexthop {
    struct rte_ether_addr dst;
    struct rte_ether_addr src;
    uint16_t port;
    uint8_t kind;
    uint8_t reserved;
} sl_nexthop;
_Static_assert(sizeof(sl_nexthop) == 16, "next hop is 16 bytes");

/* An immutable forwarding snapshot: built by the control thread, published
 * with one atomic store, freed after an RCU grace period. */
typedef struct sl_fib {
    struct rte_lpm *lpm4;
    struct rte_lpm6 *lpm6;
    sl_nexthop *nexthops;
    uint32_t nb_nexthops;
    uint32_t reserved;
    uint64_t generation;
} sl_fib;

/* State every worker reads and only the control thread writes. Accessed through
 * the sl_shared_* helpers (atomics), never field by field. */
typedef struct sl_shared {
    sl_fib *fib;
    uint64_t generation;
    uint32_t stop;
    uint32_t reserved;
} __rte_cache_aligned sl_shared;

/* Per-core context: allocated on the worker's NUMA node, one writer. */
typedef struct sl_worker {
    uint32_t lcore_id;
    uint32_t qsbr_thread_id;
    uint16_t queue_id;
    uint16_t nb_ports;
    int32_t socket_id;
    struct rte_rcu_qsbr *qsbr;
    sl_shared *shared;
    uint16_t port_ids[SL_MAX_PORTS];
    uint8_t port_roles[SL_MAX_PORTS];
    sl_counters counters;
    sl_txq tx[SL_MAX_PORTS];
} __rte_cache_aligned sl_worker;

#endif
