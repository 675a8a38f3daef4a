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
SL_INLINE uint64_t sl_shared_generation(sl_shared *s) { return __atomic_load_n(&s->generation, __ATOMIC_ACQUIRE); }
SL_INLINE bool sl_shared_stopping(sl_shared *s) { return __atomic_load_n(&s->stop, __ATOMIC_RELAXED) != 0; }
SL_INLINE void sl_shared_request_stop(sl_shared *s) { __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE); }

/* ---- mbuf ---- */
SL_INLINE uint8_t *sl_mbuf_data(struct rte_mbuf *m) { return rte_pktmbuf_mtod(m, uint8_t *); }
SL_INLINE uint16_t sl_mbuf_data_len(const struct rte_mbuf *m) { return m->data_len; }
SL_INLINE uint32_t sl_mbuf_pkt_len(const struct rte_mbuf *m) { return m->pkt_len; }
SL_INLINE uint16_t sl_mbuf_nb_segs(const struct rte_mbuf *m) { return m->nb_segs; }
SL_INLINE uint64_t sl_mbuf_ol_flags(const struct rte_mbuf *m) { return m->ol_flags; }
SL_INLINE uint32_t sl_mbuf_rss(const struct rte_mbuf *m) { return m->hash.rss; }
SL_INLINE void sl_mbuf_set_rss(struct rte_mbuf *m, uint32_t h) { m->hash.rss = h; m->ol_flags |= RTE_MBUF_F_RX_RSS_HASH; }
SL_INLINE void sl_mbuf_set_len(struct rte_mbuf *m, uint16_t len) { m->data_len = len; m->pkt_len = len; }
SL_INLINE void sl_mbuf_free(struct rte_mbuf *m) { rte_pktmbuf_free(m); }
SL_INLINE void sl_mbuf_free_bulk(struct rte_mbuf **m, unsigned n) { rte_pktmbuf_free_bulk(m, n); }
SL_INLINE struct rte_mbuf *sl_mbuf_alloc(struct rte_mempool *mp) { return rte_pktmbuf_alloc(mp); }
SL_INLINE int sl_mbuf_alloc_bulk(struct rte_mempool *mp, struct rte_mbuf **m, unsigned n) { return rte_pktmbuf_alloc_bulk(mp, m, n); }
SL_INLINE void sl_prefetch0(const void *p) { rte_prefetch0(p); }
SL_INLINE void sl_prefetch_mbuf_data(struct rte_mbuf *m) { rte_prefetch0(rte_pktmbuf_mtod(m, void *)); }
SL_INLINE bool sl_mbuf_ip_cksum_good(const struct rte_mbuf *m) {
    return (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_GOOD;
}
SL_INLINE bool sl_mbuf_ip_cksum_bad(const struct rte_mbuf *m) {
    return (m->ol_flags & RTE_MBUF_F_RX_IP_CKSUM_MASK) == RTE_MBUF_F_RX_IP_CKSUM_BAD;
}

/* ---- ethdev ---- */
SL_INLINE uint16_t sl_rx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_rx_burst(port, queue, pkts, n);
}
SL_INLINE uint16_t sl_tx_burst(uint16_t port, uint16_t queue, struct rte_mbuf **pkts, uint16_t n) {
    return rte_eth_tx_burst(port, queue, pkts, n);
}

/* ---- rings ---- */
SL_INLINE unsigned sl_ring_enqueue_burst(struct rte_ring *r, void *const *objs, unsigned n) {
    return rte_ring_enqueue_burst(r, objs, n, NULL);
}
SL_INLINE unsigned sl_ring_dequeue_burst(struct rte_ring *r, void **objs, unsigned n) {
    return rte_ring_dequeue_burst(r, objs, n, NULL);
}
SL_INLINE unsigned sl_ring_count(const struct rte_ring *r) { return rte_ring_count(r); }

/* ---- routing ---- */
SL_INLINE int sl_lpm4_lookup(const struct rte_lpm *lpm, uint32_t ip, uint32_t *nh) { return rte_lpm_lookup((struct rte_lpm *)lpm, ip, nh); }
SL_INLINE int sl_lpm6_lookup(const struct rte_lpm6 *lpm, const uint8_t *ip, uint32_t *nh) { return rte_lpm6_lookup(lpm, ip, nh); }

/* ---- RCU ---- */
SL_INLINE void sl_qsbr_quiescent(struct rte_rcu_qsbr *v, unsigned tid) { rte_rcu_qsbr_quiescent(v, tid); }

/* ---- time ---- */
SL_INLINE uint64_t sl_tsc(void) { return rte_rdtsc(); }
SL_INLINE uint64_t sl_tsc_hz(void) { return rte_get_tsc_hz(); }
SL_INLINE unsigned sl_lcore_id(void) { return rte_lcore_id(); }
SL_INLINE int sl_socket_id(void) { return (int)rte_socket_id(); }

/* ---- out of line (src/shims.c) ---- */
const char *sl_strerror(int err);
int sl_eal_init(int argc, char **argv);

#endif
