/*
 * IP reassembly of fragments addressed to the gateway, on DPDK's ip_frag
 * library (one table per worker, never shared). The library keeps the
 * fragments, finds the datagram's pieces and chains them; these shims check
 * what DPDK 22.11's reassembly does not (empty fragments, datagrams that
 * would pass 65,535 bytes, IPv6 headers in front of the Fragment header),
 * count what it discards, and hand back the datagram in one buffer: the ESP
 * paths rewrite packets in place and need them contiguous. One too big for
 * the first fragment's buffer is copied into a 64 KiB one of a small pool of
 * the table's own.
 */
#include "sluice_shims.h"
#include <rte_ip_frag.h>

struct sl_reasm {
    struct rte_ip_frag_tbl *tbl;
    struct rte_ip_frag_death_row dr;
    /* Buffers of the largest size an mbuf can have, for datagrams the first
     * fragment's buffer cannot hold whole (IKE with certificates, ESP of a
     * jumbo inner packet). */
    struct rte_mempool *large;
};

sl_reasm *sl_reasm_create(uint32_t max_datagrams, uint64_t timeout_cycles, int socket, const char *name) {
    sl_reasm *r = rte_zmalloc_socket("sl_reasm", sizeof(*r), RTE_CACHE_LINE_SIZE, socket);
    if (r == NULL) return NULL;
    /* Two candidate buckets of 8 per datagram, twice as many slots as
     * datagrams: a full bucket pair is rare before the table is full. */
    uint32_t buckets = 1;
    while (buckets * 8 < 2 * max_datagrams) buckets <<= 1;
    r->tbl = rte_ip_frag_table_create(buckets, 8, max_datagrams, timeout_cycles, socket);
    if (r->tbl == NULL) { rte_free(r); return NULL; }
    r->large = sl_pktmbuf_pool_create_room(name, SL_REASM_LARGE_BUFFERS, 0, socket, UINT16_MAX);
    if (r->large == NULL) { rte_ip_frag_table_destroy(r->tbl); rte_free(r); return NULL; }
    return r;
}

void sl_reasm_destroy(sl_reasm *r) {
    if (r == NULL) return;
    rte_ip_frag_table_destroy(r->tbl);  /* frees the fragments it holds */
    rte_ip_frag_free_death_row(&r->dr, 0);
    rte_mempool_free(r->large);  /* after the ports closed: none of its buffers is out */
    rte_free(r);
}

/* The chain `m` copied into one large buffer (its metadata with it), `m`
 * freed; NULL, `m` kept, when none is free or the datagram does not fit. */
static struct rte_mbuf *sl_reasm_copy_large(sl_reasm *r, struct rte_mbuf *m) {
    struct rte_mbuf *b = rte_pktmbuf_alloc(r->large);
    if (b == NULL) return NULL;
    char *to = rte_pktmbuf_append(b, (uint16_t)RTE_MIN(m->pkt_len, (uint32_t)UINT16_MAX));
    if (to == NULL || m->pkt_len > rte_pktmbuf_data_len(b)) { rte_pktmbuf_free(b); return NULL; }
    const void *from = rte_pktmbuf_read(m, 0, m->pkt_len, to);
    if (from != to) rte_memcpy(to, from, m->pkt_len);
    b->port = m->port;
    b->packet_type = m->packet_type;
    b->hash = m->hash;
    b->vlan_tci = m->vlan_tci;
    b->l2_len = m->l2_len;
    b->l3_len = m->l3_len;
    rte_pktmbuf_free(m);
    return b;
}

/* Frees what the library discarded; returns how many mbufs that was. */
static uint32_t sl_reasm_bury(sl_reasm *r) {
    uint32_t n = r->dr.cnt;
    if (n != 0) rte_ip_frag_free_death_row(&r->dr, 0);
    return n;
}

uint32_t sl_reasm_expire(sl_reasm *r, uint64_t now) {
    rte_ip_frag_table_del_expired_entries(r->tbl, &r->dr, now);
    return sl_reasm_bury(r);
}

/* The datagram the library chained, in one buffer with its IP header made
 * whole again; SL_REASM_TOO_BIG (and the chain freed) when it does not fit. */
static int sl_reasm_finish(sl_reasm *r, struct rte_mbuf *m, uint32_t ip_offset, int ipv4, struct rte_mbuf **out) {
    uint32_t ip_len = m->pkt_len - ip_offset;
    /* Linearizing fails, changing nothing, when the first buffer lacks room. */
    if (m->nb_segs > 1 && rte_pktmbuf_linearize(m) != 0) {
        struct rte_mbuf *b = sl_reasm_copy_large(r, m);
        if (b == NULL) {
            rte_pktmbuf_free(m);
            return SL_REASM_TOO_BIG;
        }
        m = b;
    }
    uint8_t *ip = rte_pktmbuf_mtod_offset(m, uint8_t *, ip_offset);
    if (ipv4) {
        struct rte_ipv4_hdr *h = (struct rte_ipv4_hdr *)ip;
        /* The library wrote the total length and cleared the checksum. */
        if (rte_be_to_cpu_16(h->total_length) != ip_len) { rte_pktmbuf_free(m); return SL_REASM_BAD; }
        h->hdr_checksum = 0;
        h->hdr_checksum = rte_ipv4_cksum(h);
    } else {
        struct rte_ipv6_hdr *h = (struct rte_ipv6_hdr *)ip;
        if (rte_be_to_cpu_16(h->payload_len) + sizeof(*h) != ip_len) { rte_pktmbuf_free(m); return SL_REASM_BAD; }
    }
    m->ol_flags = 0;
    *out = m;
    return SL_REASM_DONE;
}

int sl_reasm_add(sl_reasm *r, struct rte_mbuf *m, uint32_t ip_offset, uint64_t now,
                 struct rte_mbuf **out, uint32_t *discarded) {
    *out = NULL;
    *discarded = 0;  /* every call leaves the death row empty */
    /* An IPv4 fragment may be shorter than an IPv6 header (a last piece of
     * a few bytes, unpadded on virtual ports): each family checks its own. */
    if (m->nb_segs != 1 || ip_offset + sizeof(struct rte_ipv4_hdr) > m->data_len) {
        rte_pktmbuf_free(m);
        return SL_REASM_BAD;
    }
    uint8_t *ip = rte_pktmbuf_mtod_offset(m, uint8_t *, ip_offset);
    uint32_t room = m->data_len - ip_offset;
    struct rte_mbuf *whole = NULL;
    int ipv4 = ip[0] >> 4 == 4;
    if (ipv4) {
        struct rte_ipv4_hdr *h = (struct rte_ipv4_hdr *)ip;
        uint32_t hl = (uint32_t)(h->version_ihl & 0xF) * 4;
        uint32_t total = rte_be_to_cpu_16(h->total_length);
        uint16_t frag = rte_be_to_cpu_16(h->fragment_offset);
        uint32_t offset = (uint32_t)(frag & RTE_IPV4_HDR_OFFSET_MASK) * 8;
        int more = (frag & RTE_IPV4_HDR_MF_FLAG) != 0;
        /* A fragment carries data; all but the last a multiple of 8 bytes
         * of it; and none ends past the largest datagram. */
        if (hl < 20 || total > room || total <= hl || (more && (total - hl) % 8 != 0)
            || offset + total > 65535 || (!more && offset == 0)) {
            rte_pktmbuf_free(m);
            return SL_REASM_BAD;
        }
        m->l2_len = ip_offset;
        m->l3_len = hl;
        whole = rte_ipv4_frag_reassemble_packet(r->tbl, &r->dr, m, now, h);
    } else {
        struct rte_ipv6_hdr *h = (struct rte_ipv6_hdr *)ip;
        /* Only a Fragment header right behind the IPv6 header: what DPDK's
         * reassembly handles (it removes the header from there). */
        if (room < sizeof(*h) + 8) {
            rte_pktmbuf_free(m);
            return SL_REASM_BAD;
        }
        uint32_t total = sizeof(*h) + rte_be_to_cpu_16(h->payload_len);
        if (h->proto != IPPROTO_FRAGMENT || total > room) {
            rte_pktmbuf_free(m);
            return SL_REASM_BAD;
        }
        struct rte_ipv6_fragment_ext *f = (struct rte_ipv6_fragment_ext *)(h + 1);
        uint16_t fd = rte_be_to_cpu_16(f->frag_data);
        uint32_t offset = (uint32_t)(fd & 0xFFF8);
        int more = (fd & 1) != 0;
        uint32_t data = total - sizeof(*h) - 8;
        if (data == 0 || (more && data % 8 != 0) || offset + data > 65535 || (!more && offset == 0)) {
            rte_pktmbuf_free(m);
            return SL_REASM_BAD;
        }
        m->l2_len = ip_offset;
        m->l3_len = sizeof(*h) + 8;
        whole = rte_ipv6_frag_reassemble_packet(r->tbl, &r->dr, m, now, h, f);
    }
    *discarded = sl_reasm_bury(r);
    if (whole == NULL) return SL_REASM_HELD;
    return sl_reasm_finish(r, whole, ip_offset, ipv4, out);
}
