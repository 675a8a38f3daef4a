/*
 * Sluice C shims: the one place C lives. DPDK and libnuma are included here
 * (intel-ipsec-mb and libsodium in CShims/crypto); one-line forwarders for the hot path are
 * `static inline` and always inlined into Swift (every Swift target that
 * imports this module passes the same -march flag). Every symbol carries the
 * `sl_` prefix. Layout that other cores read or that must be cache-aligned is
 * defined here, not in Swift.
 */
#ifndef SLUICE_SHIMS_H
#define SLUICE_SHIMS_H

#define ALLOW_EXPERIMENTAL_API 1
#include <rte_config.h>

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <errno.h>

#include <rte_common.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_cycles.h>
#include <rte_malloc.h>
#include <rte_memory.h>
#include <rte_mempool.h>
#include <rte_mbuf.h>
#include <rte_ethdev.h>
#include <rte_ether.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>
#include <rte_fib.h>
#include <rte_lpm.h>
#include <rte_fib6.h>
#include <rte_rcu_qsbr.h>
#include <rte_thash.h>
#include <rte_prefetch.h>
#include <rte_byteorder.h>
#include <rte_version.h>
#include <rte_random.h>

/* intel-ipsec-mb and libsodium are wrapped by the sibling module CCrypto
 * (CShims/crypto), which has no DPDK in it: one Clang module per library
 * header, or Swift sees their types twice. */
#include <numa.h>
#include <malloc.h>

#include "sluice_layout.h"
#include "sluice_inline.h"

/* RSS state of a port (shims.c): key and hash functions, redirection table. */
int sl_rss_key_get(uint16_t port, uint8_t *key, uint8_t *len, uint64_t *rss_hf);
int sl_reta_get(uint16_t port, uint16_t *queues, uint16_t size);

/* A pktmbuf pool like rte_pktmbuf_pool_create's (no private area, default
 * data room), except that where no device can need an mbuf's buffer to be
 * physically contiguous (IOVA as VA, or no hugepages so no physical
 * addresses at all) its objects are packed back to back instead of each
 * starting a page of its own (shims.c). NULL with rte_errno set on failure. */
struct rte_mempool *sl_pktmbuf_pool_create(const char *name, unsigned n, unsigned cache, int socket);
/* IPv6 Fragment header identifications (shims.c): `sl_frag_id` is a keyed
 * permutation of 32-bit values, four Feistel rounds over 16-bit halves with
 * SipHash-2-4 (libsodium's crypto_shorthash) under the 16-byte `key` as the
 * round function, so no value repeats before the counter wraps and none is
 * predictable from those seen without the key (RFC 7739 §5). */
uint32_t sl_frag_id(const uint8_t key[16], uint32_t counter);
/* A worker's random counter start and key (libsodium's randombytes). */
void sl_worker_frag_init(struct sl_worker *w);
/* The identification of the worker's next IPv6 Fragment header. */
uint32_t sl_worker_next_frag_id(struct sl_worker *w);
/* The same with `room` bytes of buffer per mbuf (headroom included). */
struct rte_mempool *sl_pktmbuf_pool_create_room(const char *name, unsigned n, unsigned cache, int socket,
                                                uint16_t room);
/* Whether sl_pktmbuf_pool_create packs objects in this EAL. */
int sl_pktmbuf_pool_packs(void);

/* Reassembly of IP fragments addressed to the gateway (reassembly.c): one
 * table per worker, on DPDK's ip_frag library, at most `max_datagrams`
 * datagrams in progress, each given up `timeout_cycles` after its first
 * fragment. */
typedef struct sl_reasm sl_reasm;
enum { SL_REASM_HELD = 0, SL_REASM_DONE = 1, SL_REASM_BAD = 2, SL_REASM_TOO_BIG = 3 };
/* Fragments per datagram the library reassembles at most. */
enum { SL_REASM_MAX_FRAGS = RTE_LIBRTE_IP_FRAG_MAX_FRAG };
/* Reassembled datagrams too big for the fragments' own buffers are copied
 * into one of this many 64 KiB buffers of the table's own pool (`name`). */
enum { SL_REASM_LARGE_BUFFERS = 7 };
sl_reasm *sl_reasm_create(uint32_t max_datagrams, uint64_t timeout_cycles, int socket, const char *name);
/* Frees the table and every fragment it holds. */
void sl_reasm_destroy(sl_reasm *r);
/* Takes the fragment `m` (one segment, its IP header at `ip_offset`, an IPv4
 * header checked by the caller). SL_REASM_HELD: kept until its datagram is
 * complete or given up. SL_REASM_DONE: `*out` is the whole datagram, in one
 * segment, the first fragment's frame header in front, IPv4 checksum valid.
 * SL_REASM_BAD: an unusable fragment (no data, misaligned, past 65,535
 * bytes, an IPv6 extension header before the Fragment header), freed.
 * SL_REASM_TOO_BIG: the datagram did not fit one buffer, freed.
 * `*discarded`: fragments the table gave up meanwhile (timed out,
 * overlapping or duplicated, more than RTE_LIBRTE_IP_FRAG_MAX_FRAG, no room). */
int sl_reasm_add(sl_reasm *r, struct rte_mbuf *m, uint32_t ip_offset, uint64_t now,
                 struct rte_mbuf **out, uint32_t *discarded);
/* Gives up the datagrams whose time is up; returns the fragments freed. */
uint32_t sl_reasm_expire(sl_reasm *r, uint64_t now);

/* DPDK telemetry (shims/telemetry.c): /sluice/stats, /sluice/cores,
 * /sluice/sa/list, /sluice/sp/list, answered on DPDK's telemetry thread
 * from the workers' counters and lists the control thread hands over. */
int sl_telemetry_register(void);
/* The workers whose counters /sluice/stats sums (NULL, 0 before they go). */
void sl_telemetry_set_workers(sl_worker *const *workers, unsigned count);
/* The names of the drop reasons, in counter order (copied). */
void sl_telemetry_set_drop_names(const char *const *names, unsigned count);
/* Newline-separated lines for /sluice/sa/list and /sluice/sp/list (copied). */
void sl_telemetry_set_lists(const char *sas, const char *policies);

/* Opens `path` read-only (non-blocking: a FIFO cannot stall the caller) with
 * the file access rights of user `uid` in group `gid` with supplementary
 * `groups`, and no capability, as that user's own open(2) would be checked;
 * the calling thread's rights are its own again on return (shims/peer.c).
 * Returns the descriptor, or -errno. */
int sl_open_as(const char *path, uint32_t uid, uint32_t gid, const uint32_t *groups, uint32_t ngroups);
/* Whether the file open at `fd` lies on a kernel filesystem (proc, sys,
 * debugfs, cgroup, …): nothing there is a configuration file. */
int sl_is_kernel_filesystem(int fd);
/* The user, group, process and supplementary groups (up to `*ngroups`,
 * which becomes the count) of a UNIX socket's peer as they were when it
 * connected (SO_PEERCRED, SO_PEERGROUPS); 0, or -errno. */
int sl_peer_credentials(int fd, uint32_t *uid, uint32_t *gid, int32_t *pid, uint32_t *groups, uint32_t *ngroups);

#endif
