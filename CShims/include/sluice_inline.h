/* Hot-path forwarders: always inlined into Swift. */
#ifndef SLUICE_INLINE_H
#define SLUICE_INLINE_H

#define SL_INLINE static inline __attribute__((always_inline))

/* ---- errno seam ---- */
SL_INLINE int sl_errno(void) { return rte_errno; }

/* ---- shared state (atomics) ---- */
SL_INLINE sl_fib *sl_shared_fib(sl_shared *s) { return __atomic_load_n(&s->fib, __ATOMIC_ACQUIRE); }
SL_INLINE void sl_shared_publish_fib(sl_shared *s, sl_fib *f) {
    __atomic_store_n(&s->fib, f, __ATOMIC_RELEASE);
    __atomic_add_fetch(&s->generation, 1, __ATOMIC_RELEASE);
}
SL_INLINE void *sl_shared_ipsec(sl_shared *s) { return __atomic_load_n(&s->ipsec, __ATOMIC_ACQUIRE); }
SL_INLINE void sl_shared_publish_ipsec(sl_shared *s, void *t) {
    __atomic_store_n(&s->ipsec, t, __ATOMIC_RELEASE);
    __atomic_add_fetch(&s->generation, 1, __ATOMIC_RELEASE);
}
/* Outbound sequence numbers shared by every worker that uses the SA: take up
 * to `count` consecutive numbers at once; returns the first and sets
 * `granted` (fewer near `limit`; 0 and nothing taken once exhausted). Past
 * 2^64 − 1 the counter reads 0: exhausted, never wraps into reuse. */
SL_INLINE uint64_t sl_seq_reserve(uint64_t *next, uint64_t count, uint64_t limit, uint64_t *granted) {
    uint64_t cur = __atomic_load_n(next, __ATOMIC_RELAXED);
    for (;;) {
        if (cur == 0 || cur > limit || count == 0) { *granted = 0; return 0; }
        uint64_t n = limit - cur < count - 1 ? limit - cur + 1 : count;  /* as many as remain */
        if (__atomic_compare_exchange_n(next, &cur, cur + n, false, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) {
            *granted = n;
            return cur;
        }
    }
}
SL_INLINE uint64_t sl_seq_load(uint64_t *next) { return __atomic_load_n(next, __ATOMIC_RELAXED); }
/* A counter several workers add to (an outbound SA's bytes): the value before. */
SL_INLINE uint64_t sl_counter_fetch_add(uint64_t *c, uint64_t n) { return __atomic_fetch_add(c, n, __ATOMIC_RELAXED); }
/* A counter one worker writes, read by the control thread. */
SL_INLINE uint64_t sl_counter_load(const uint64_t *c) { return __atomic_load_n(c, __ATOMIC_RELAXED); }
SL_INLINE void sl_counter_store(uint64_t *c, uint64_t v) { __atomic_store_n(c, v, __ATOMIC_RELAXED); }
SL_INLINE uint64_t sl_shared_generation(sl_shared *s) { return __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE); }
SL_INLINE bool sl_shared_stopping(sl_shared *s) { return __atomic_load_n(&s->stop, __ATOMIC_RELAXED) != 0; }
SL_INLINE void sl_shared_request_stop(sl_shared *s) { __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE); }

/* A spin-wait hint (the control thread waiting a few microseconds for a worker). */
SL_INLINE void sl_pause(void) { rte_pause(); }

/* A generation one worker acknowledges (release: its replica writes come
 * first) and the control thread reads (acquire). */
SL_INLINE void sl_ack_store(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
SL_INLINE uint64_t sl_ack_load(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* A flag one worker raises (release: its writes before it come first) and
 * another reads (acquire): an inbound SA's replay window handed over. */
SL_INLINE void sl_flag_store(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
SL_INLINE uint32_t sl_flag_load(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

/* Bytes of malloc'd memory in use (glibc's mallinfo2): memory checks in tests and benchmarks. */
SL_INLINE size_t sl_heap_in_use(void) { return mallinfo2().uordblks; }

SL_INLINE uint32_t sl_load_relaxed_u32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
SL_INLINE void sl_store_release_u32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

/* ---- mbuf ---- */
SL_INLINE uint8_t *sl_mbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
SL_INLINE uint16_t sl_mbuf_data_len(const struct rte_mbuf *m) { return m->data_len; }
SL_INLINE uint32_t sl_mbuf_pkt_len(const struct rte_mbuf *m) { return m->pkt_len; }
SL_INLINE uint16_t sl_mbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
SL_INLINE uint16_t sl_mbuf_port(const struct rte_mbuf *m) { return m->port; }
SL_INLINE void sl_mbuf_set_port(struct rte_mbuf *m, uint16_t port) { m->port = port; }
/* Drops `n` bytes at the start of a single-segment packet (the caller checked them there). */
SL_INLINE void sl_mbuf_adj(struct rte_mbuf *m, uint16_t n) { m->data_off += n; m->data_len -= n; m->pkt_len -= n; }
SL_INLINE void sl_mbuf_set_len(struct rte_mbuf *m, uint16_t len) { m->data_len = len; m->pkt_len = len; }
SL_INLINE void sl_mbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
SL_INLINE struct rte_mbuf *sl_mbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
SL_INLINE struct rte_mempool *sl_mbuf_pool(const struct rte_mbuf *m) { return m->pool; }
SL_INLINE uint64_t sl_rand(void) { return rte_rand(); }
SL_INLINE int sl_mbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **m, unsigned n) { return rte_pktmbuf_alloc_bulk(mp, m, n); }
SL_INLINE void sl_prefetch0(const void *p) { rte_prefetch0(p); }
SL_INLINE void sl_prefetch_mbuf_data(struct rte_mbuf *m) { rte_prefetch0(rte_pktmbuf_mtod(m, void *)); }
/* The port's RX IPv4 checksum flags: SL_IP_CKSUM_UNCHECKED (0: the port did
 * not check), SL_IP_CKSUM_GOOD, or anything else (bad, or no checksum). */
enum { SL_IP_CKSUM_UNCHECKED = 0, SL_IP_CKSUM_GOOD = (int)RTE_MBUF_F_RX_IP_CKSUM_GOOD };
SL_INLINE uint32_t sl_mbuf_ip_cksum_flags(const struct rte_mbuf *m) {
    return (uint32_t)(m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK);
}
/* RX IPv4 checksum verdict: 1 good, -1 bad, 0 not checked by the port. */
SL_INLINE int sl_mbuf_ip_cksum_state(const struct rte_mbuf *m) {
    uint32_t f = sl_mbuf_ip_cksum_flags(m);
    return f == RTE_MBUF_F_RX_IP_CKSUM_GOOD ? 1 : (f == RTE_MBUF_F_RX_IP_CKSUM_BAD ? -1 : 0);
}

/* A 32-bit tag in the first cache line (the upper half of the flow-director
 * hash word, unused with RSS): traffic tools mark their packets with it. */
SL_INLINE uint32_t sl_mbuf_tag(const struct rte_mbuf *m) { return m->hash.fdir.hi; }
SL_INLINE void sl_mbuf_set_tag(struct rte_mbuf *m, uint32_t t) { m->hash.fdir.hi = t; }
/* Resets the data window to the default headroom and a length, as a fresh mbuf. */
SL_INLINE void sl_mbuf_reset_window(struct rte_mbuf *m, uint16_t len) {
    m->data_off = RTE_PKTMBUF_HEADROOM < m->buf_len ? RTE_PKTMBUF_HEADROOM : 0;
    m->data_len = len; m->pkt_len = len;
}

/* Buffer geometry for in-place encapsulation (single-segment mbufs). */
SL_INLINE uint8_t *sl_mbuf_buf_addr(const struct rte_mbuf *m) { return (uint8_t *)m->buf_addr; }
SL_INLINE uint16_t sl_mbuf_buf_len(const struct rte_mbuf *m) { return m->buf_len; }
/* Moves the data window to [off, off+len) of the buffer; the caller checked the bounds. */
SL_INLINE void sl_mbuf_set_window(struct rte_mbuf *m, uint16_t off, uint16_t len) {
    m->data_off = off; m->data_len = len; m->pkt_len = len;
}

/* ---- ethdev ---- */
SL_INLINE uint16_t sl_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}
SL_INLINE uint16_t sl_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

/* ---- port configuration constants (function-like macros do not import) ---- */
SL_INLINE uint64_t sl_rss_hf_esp(void) { return RTE_ETH_RSS_ESP; }
SL_INLINE uint64_t sl_rss_hf_wanted(void) { return RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP | RTE_ETH_RSS_ESP; }
SL_INLINE uint64_t sl_tx_offload_fast_free(void) { return RTE_ETH_TX_OFFLOAD_MBUF_FAST_FREE; }
SL_INLINE uint64_t sl_rx_offload_ipv4_cksum(void) { return RTE_ETH_RX_OFFLOAD_IPV4_CKSUM; }
SL_INLINE uint16_t sl_mbuf_default_buf_size(void) { return RTE_MBUF_DEFAULT_BUF_SIZE; }

/* ---- rings ---- */
SL_INLINE unsigned sl_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n) {
    return rte_ring_enqueue_burst(r, objs, n, NULL);
}
SL_INLINE unsigned sl_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n) {
    return rte_ring_dequeue_burst(r, objs, n, NULL);
}
/* One object onto a multi-producer ring (handoff between workers); false when full. */
SL_INLINE bool sl_ring_enqueue_one(struct rte_ring *r, void *obj) { return rte_ring_mp_enqueue(r, obj) == 0; }
/* Rings of 24-byte elements (a packet, the SA to seal it with, where its IP packet is). */
SL_INLINE bool sl_ring_enqueue_elem24(struct rte_ring *r, const void *obj) { return rte_ring_enqueue_elem(r, (void *)obj, 24) == 0; }
SL_INLINE unsigned sl_ring_dequeue_burst_elem24(struct rte_ring *r, void *objs, unsigned n) {
    return rte_ring_dequeue_burst_elem(r, objs, 24, n, NULL);
}
SL_INLINE bool sl_ring_enqueue_one_sp(struct rte_ring *r, void *obj) { return rte_ring_sp_enqueue(r, obj) == 0; }
SL_INLINE unsigned sl_ring_free_count(const struct rte_ring *r) { return rte_ring_free_count(r); }

/* Event rings: SP/SC rings of sl_event elements. */
SL_INLINE struct rte_ring *sl_event_ring_create(const char *name, unsigned count, int socket) {
    return rte_ring_create_elem(name, sizeof(sl_event), count, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
}
SL_INLINE int sl_event_push(struct rte_ring *r, const sl_event *e) {
    return rte_ring_sp_enqueue_elem(r, (void *)e, sizeof(sl_event));
}
SL_INLINE int sl_event_pop(struct rte_ring *r, sl_event *e) {
    return rte_ring_sc_dequeue_elem(r, e, sizeof(sl_event));
}

/* ---- per-core context accessors (C arrays are tuples in Swift) ---- */
SL_INLINE uint64_t *sl_worker_drops(sl_worker *w) { return w->counters.drops; }
SL_INLINE sl_txq *sl_worker_txq(sl_worker *w, uint16_t port) { return &w->tx[port]; }
SL_INLINE struct rte_mbuf **sl_txq_pkts(sl_txq *q) { return q->pkts; }
SL_INLINE struct rte_mbuf **sl_worker_rx(sl_worker *w) { return w->rx; }
SL_INLINE uint8_t *sl_worker_dst6(sl_worker *w) { return &w->dst6[0][0]; }
SL_INLINE uint64_t *sl_worker_nh6(sl_worker *w) { return w->nh6; }
SL_INLINE struct rte_mbuf **sl_worker_pkt6(sl_worker *w) { return w->pkt6; }
SL_INLINE uint8_t **sl_worker_l3_6(sl_worker *w) { return w->l3_6; }
SL_INLINE struct rte_mbuf **sl_worker_seal_m(sl_worker *w) { return w->seal_m; }
SL_INLINE uint8_t **sl_worker_seal_ip(sl_worker *w) { return w->seal_ip; }
SL_INLINE uint32_t *sl_worker_seal_len(sl_worker *w) { return w->seal_len; }
SL_INLINE uint16_t *sl_worker_port_ids(sl_worker *w) { return w->port_ids; }
SL_INLINE uint8_t *sl_worker_port_prefetch(sl_worker *w) { return w->port_prefetch; }
SL_INLINE uint8_t *sl_worker_port_roles(sl_worker *w) { return w->port_roles; }

/* ---- routing ---- */
/* IPv4: rte_lpm's inline DIR-24-8 lookup, one packet at a time inside the
 * parse loop; a miss (or no table) gives the default route's next hop, which
 * is 0 ("no route") when there is none. */
SL_INLINE uint32_t sl_fib4_next_hop(const sl_fib *f, uint32_t ip) {
    uint32_t nh;
    if (f->lpm4 == NULL || rte_lpm_lookup(f->lpm4, ip, &nh) != 0) return f->default4;
    return nh;
}
/* The IP MTU of `port` in this snapshot (port < SL_MAX_PORTS: next hops only
 * name ports the gateway set up). */
SL_INLINE uint32_t sl_fib_port_mtu(const sl_fib *f, uint16_t port) { return f->port_mtu[port & (SL_MAX_PORTS - 1)]; }
SL_INLINE uint8_t sl_fib_port_rpf(const sl_fib *f, uint16_t port) { return f->port_rpf[port & (SL_MAX_PORTS - 1)]; }
SL_INLINE uint8_t sl_fib_port_punt(const sl_fib *f, uint16_t port) { return f->port_punt[port & (SL_MAX_PORTS - 1)]; }
SL_INLINE uint8_t sl_fib_port_uplink(const sl_fib *f, uint16_t port) { return f->port_uplink[port & (SL_MAX_PORTS - 1)]; }
SL_INLINE uint8_t sl_fib_port_resolve(const sl_fib *f, uint16_t port) { return f->port_resolve[port & (SL_MAX_PORTS - 1)]; }
/* Whether anything on `port` may go to a local stack or the neighbour agent. */
SL_INLINE bool sl_fib_port_local(const sl_fib *f, uint16_t port) {
    return (f->port_punt[port & (SL_MAX_PORTS - 1)] | f->port_resolve[port & (SL_MAX_PORTS - 1)]) != 0;
}
/* The own-address filters' bit for an IPv4 address (host order) and for an
 * IPv6 one (its 16 bytes as on the wire): the top byte of a multiplicative
 * hash, over the whole address for IPv6 (interface identifiers such as ::1
 * recur on many prefixes: keyed on them alone, every ::1 source behind any
 * router would ask the route table once the gateway has a ::1 address). */
SL_INLINE unsigned sl_own_bit4(uint32_t a) { return (a * 0x9E3779B1u) >> 24; }
SL_INLINE unsigned sl_own_bit6(const uint8_t *a) {
    uint64_t high, low;
    memcpy(&high, a, 8);
    memcpy(&low, a + 8, 8);
    return (unsigned)(((low ^ (high * 0xC2B2AE3D27D4EB4Full)) * 0x9E3779B97F4A7C15ull) >> 56);
}
SL_INLINE void sl_fib_add_own4(sl_fib *f, uint32_t a) { unsigned b = sl_own_bit4(a); f->own4[b >> 6] |= 1ull << (b & 63); }
SL_INLINE void sl_fib_add_own6(sl_fib *f, const uint8_t *a) { unsigned b = sl_own_bit6(a); f->own6[b >> 6] |= 1ull << (b & 63); }
/* Whether the IPv4 address `a` (host order) / IPv6 address at `a` may be one
 * of the gateway's own: false is certain, true asks the route table. */
SL_INLINE bool sl_fib_may_be_own4(const sl_fib *f, uint32_t a) { unsigned b = sl_own_bit4(a); return (f->own4[b >> 6] >> (b & 63)) & 1; }
SL_INLINE bool sl_fib_may_be_own6(const sl_fib *f, const uint8_t *a) { unsigned b = sl_own_bit6(a); return (f->own6[b >> 6] >> (b & 63)) & 1; }
/* A copy of `m` (one segment) from `m`'s pool, or NULL. */
SL_INLINE struct rte_mbuf *sl_mbuf_copy(struct rte_mbuf *m) { return rte_pktmbuf_copy(m, m->pool, 0, UINT32_MAX); }
/* The addresses ICMP errors leaving through `port` come from (see sl_fib). */
SL_INLINE uint32_t sl_fib_port_addr4(const sl_fib *f, uint16_t port) { return f->port_addr4[port & (SL_MAX_PORTS - 1)]; }
SL_INLINE const uint8_t *sl_fib_port_addr6(const sl_fib *f, uint16_t port) { return f->port_addr6[port & (SL_MAX_PORTS - 1)]; }
/* IPv6, one address: the bulk lookup with n = 1 (0 = no route, no table). */
SL_INLINE uint32_t sl_fib6_next_hop(const sl_fib *f, const uint8_t *ip) {
    if (f->fib6 == NULL) return 0;
    uint8_t a[1][RTE_FIB6_IPV6_ADDR_SIZE];
    memcpy(a[0], ip, RTE_FIB6_IPV6_ADDR_SIZE);
    uint64_t nh = 0;
    rte_fib6_lookup_bulk(f->fib6, a, &nh, 1);
    return (uint32_t)nh;
}
SL_INLINE void sl_fib6_lookup_bulk(struct rte_fib6 *f, uint8_t *ips, uint64_t *nh, int n) {
    rte_fib6_lookup_bulk(f, (uint8_t (*)[RTE_FIB6_IPV6_ADDR_SIZE])ips, nh, n);
}

/* ---- RCU ---- */
SL_INLINE void sl_qsbr_quiescent(struct rte_rcu_qsbr *v, unsigned tid) { rte_rcu_qsbr_quiescent(v, tid); }

/* ---- time ---- */
SL_INLINE uint64_t sl_tsc(void) { return rte_rdtsc(); }
SL_INLINE uint64_t sl_tsc_hz(void) { return rte_get_tsc_hz(); }

/* ---- out of line (src/shims.c) ---- */
void sl_install_stop_signals(void);
void sl_stdout_line_buffered(void);
/* CPUs in this process's affinity mask, ascending; returns how many (at most max). */
int sl_affinity_cpus(int *out, int max);
int sl_stop_signal(void);
/* Registers (once) a 4-byte mbuf dynamic field for tools; returns its offset or -1. */
int sl_mbuf_dynfield_u32_register(const char *name);          /* the signal number received, 0 if none */
const char *sl_strerror(int err);
int sl_eal_init(int argc, char **argv);

#endif
