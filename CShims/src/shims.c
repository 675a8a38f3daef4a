#define _GNU_SOURCE 1
#include <sched.h>
#include "sluice_shims.h"

const char *sl_strerror(int err) { return rte_strerror(err); }

int sl_eal_init(int argc, char **argv) { return rte_eal_init(argc, argv); }

#include <signal.h>
#include <pthread.h>
#include <string.h>

static volatile sig_atomic_t sl_stop_signo;

static void sl_on_stop_signal(int signo) { sl_stop_signo = signo; }

void sl_install_stop_signals(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = sl_on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    /* A parent may have blocked these (a thread pool spawning us passes its
     * mask on); the gateway must always be stoppable. */
    sigset_t unblock;
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGINT);
    sigaddset(&unblock, SIGTERM);
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
}

int sl_stop_signal(void) { return sl_stop_signo; }

#include <rte_mbuf_pool_ops.h>

/* rte_pktmbuf_pool_create places a pool's objects so that none crosses a
 * page, for devices that DMA by physical address. Without hugepages the page
 * is 4 KiB and an mbuf is ~2.4 KiB, so every object starts a page of its
 * own: every mbuf header, and every packet's first bytes, sit at the same
 * offset in a page and compete for the same few L1 cache sets. Where no
 * physical contiguity can be needed the pool is packed instead. */
int sl_pktmbuf_pool_packs(void) {
    return rte_eal_iova_mode() == RTE_IOVA_VA || !rte_eal_has_hugepages();
}

struct rte_mempool *sl_pktmbuf_pool_create(const char *name, unsigned n, unsigned cache, int socket) {
    return sl_pktmbuf_pool_create_room(name, n, cache, socket, RTE_MBUF_DEFAULT_BUF_SIZE);
}

struct rte_mempool *sl_pktmbuf_pool_create_room(const char *name, unsigned n, unsigned cache, int socket,
                                                uint16_t room) {
    struct rte_pktmbuf_pool_private priv;
    memset(&priv, 0, sizeof(priv));
    priv.mbuf_data_room_size = room;
    unsigned flags = sl_pktmbuf_pool_packs() ? RTE_MEMPOOL_F_NO_IOVA_CONTIG : 0;
    struct rte_mempool *mp = rte_mempool_create_empty(name, n, sizeof(struct rte_mbuf) + room,
                                                      cache, sizeof(priv), socket, flags);
    if (mp == NULL) return NULL;
    int rc = rte_mempool_set_ops_byname(mp, rte_mbuf_best_mempool_ops(), NULL);
    if (rc == 0) {
        rte_pktmbuf_pool_init(mp, &priv);
        rc = rte_mempool_populate_default(mp);
    }
    if (rc < 0) {
        rte_mempool_free(mp);
        rte_errno = -rc;
        return NULL;
    }
    rte_mempool_obj_iter(mp, rte_pktmbuf_init, NULL);
    return mp;
}

#include <stdio.h>

void sl_stdout_line_buffered(void) { setvbuf(stdout, NULL, _IOLBF, 0); }

int sl_affinity_cpus(int *out, int max) {
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) != 0) return 0;
    int n = 0;
    for (int c = 0; c < CPU_SETSIZE && n < max; c++)
        if (CPU_ISSET(c, &set)) out[n++] = c;
    return n;
}

/* The port's RSS key (up to *len bytes; *len becomes its length) and hash
 * functions; 0 or a negative errno. */
int sl_rss_key_get(uint16_t port, uint8_t *key, uint8_t *len, uint64_t *rss_hf) {
    struct rte_eth_rss_conf conf = { .rss_key = key, .rss_key_len = *len };
    int rc = rte_eth_dev_rss_hash_conf_get(port, &conf);
    if (rc == 0) { *len = conf.rss_key_len; *rss_hf = conf.rss_hf; }
    return rc;
}

/* The port's redirection table: `size` entries (a multiple of 64, at most
 * 512) into `queues`; 0 or a negative errno. */
int sl_reta_get(uint16_t port, uint16_t *queues, uint16_t size) {
    struct rte_eth_rss_reta_entry64 conf[8];
    if (size == 0 || size > 512 || size % RTE_ETH_RETA_GROUP_SIZE != 0) return -EINVAL;
    memset(conf, 0, sizeof conf);
    for (unsigned g = 0; g < size / RTE_ETH_RETA_GROUP_SIZE; g++) conf[g].mask = UINT64_MAX;
    int rc = rte_eth_dev_rss_reta_query(port, conf, size);
    if (rc != 0) return rc;
    for (unsigned i = 0; i < size; i++)
        queues[i] = conf[i / RTE_ETH_RETA_GROUP_SIZE].reta[i % RTE_ETH_RETA_GROUP_SIZE];
    return 0;
}

/* ---- IPv6 fragment identifications ---- */
#include <sodium.h>

uint32_t sl_frag_id(const uint8_t key[16], uint32_t counter) {
    uint16_t left = (uint16_t)(counter >> 16), right = (uint16_t)counter;
    for (uint8_t round = 0; round < 4; round++) {
        const uint8_t in[3] = { round, (uint8_t)right, (uint8_t)(right >> 8) };
        uint8_t h[crypto_shorthash_BYTES];
        crypto_shorthash(h, in, sizeof in, key);
        uint16_t next = left ^ (uint16_t)(h[0] | (uint16_t)h[1] << 8);
        left = right;
        right = next;
    }
    return (uint32_t)left << 16 | right;
}

void sl_worker_frag_init(sl_worker *w) {
    /* sodium_init is idempotent; without it, randombytes still reads the
     * kernel's generator on Linux. */
    (void)sodium_init();
    randombytes_buf(w->frag_key, sizeof w->frag_key);
    randombytes_buf(&w->frag_counter, sizeof w->frag_counter);
}

uint32_t sl_worker_next_frag_id(sl_worker *w) {
    return sl_frag_id(w->frag_key, w->frag_counter++);
}
