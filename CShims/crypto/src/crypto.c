/*
 * Out-of-line crypto shims: library probing, per-core managers, SA key
 * set-up and destruction, bursts and the raw intel-ipsec-mb
 * baseline. Nothing here runs per packet except the burst functions (per burst).
 */
#define _GNU_SOURCE
#include "sluice_crypto.h"

#include <pthread.h>
#include <stdlib.h>
#include <time.h>

/* ---- Probe ---- */

static pthread_once_t probe_once = PTHREAD_ONCE_INIT;
static slc_engine_info probe_info;
/* Key expansion runs on the control plane, not on a worker's manager: one
 * shared manager (same architecture as every per-core one, since both come
 * from init_mb_mgr_auto on the same CPU), serialised by a mutex. */
static IMB_MGR *setup_mgr;
static pthread_mutex_t setup_lock = PTHREAD_MUTEX_INITIALIZER;

/* The code path every manager of the process runs: IMB_ARCH_NONE lets
 * init_mb_mgr_auto choose (the best the CPU has); another value pins that
 * path (slc_mb_pin_arch). Process-wide and fixed before the first probe: a
 * key expanded by one path is laid out for that path only. */
static int32_t pinned_arch = IMB_ARCH_NONE;
static int probed;

int slc_mb_pin_arch(int32_t arch)
{
    if (arch != IMB_ARCH_NONE && (arch < IMB_ARCH_SSE || arch >= IMB_ARCH_NUM))
        return -1;
    pthread_mutex_lock(&setup_lock);
    int ok = !probed;
    if (ok)
        pinned_arch = arch;
    pthread_mutex_unlock(&setup_lock);
    return ok ? 0 : -1;
}

int32_t slc_mb_pinned_arch(void) { return pinned_arch; }

/* Initialises `mgr` for the process's code path; its architecture in *arch,
 * IMB_ARCH_NONE when the CPU lacks what a pinned path needs. */
void slc_mb_init(IMB_MGR *mgr, IMB_ARCH *arch)
{
    static const uint64_t needs[IMB_ARCH_NUM] = {
        [IMB_ARCH_SSE] = IMB_CPUFLAGS_SSE, [IMB_ARCH_AVX] = IMB_CPUFLAGS_AVX,
        [IMB_ARCH_AVX2] = IMB_CPUFLAGS_AVX2, [IMB_ARCH_AVX512] = IMB_CPUFLAGS_AVX512,
    };
    IMB_ARCH chosen = IMB_ARCH_NONE;
    switch (pinned_arch) {
    case IMB_ARCH_NONE: init_mb_mgr_auto(mgr, &chosen); break;
    default:
        if ((mgr->features & needs[pinned_arch]) != needs[pinned_arch])
            break;
        switch (pinned_arch) {
        case IMB_ARCH_SSE: init_mb_mgr_sse(mgr); break;
        case IMB_ARCH_AVX: init_mb_mgr_avx(mgr); break;
        case IMB_ARCH_AVX2: init_mb_mgr_avx2(mgr); break;
        default: init_mb_mgr_avx512(mgr); break;
        }
        chosen = (IMB_ARCH)pinned_arch;
    }
    if (arch != NULL)
        *arch = chosen;
}

static void probe_once_fn(void)
{
    slc_engine_info info;
    memset(&info, 0, sizeof info);
    info.mb_arch = IMB_ARCH_NONE;

    pthread_mutex_lock(&setup_lock);
    probed = 1;
    pthread_mutex_unlock(&setup_lock);
    info.sodium_usable = sodium_init() >= 0;
    if (info.sodium_usable)
        info.sodium_aes256gcm = crypto_aead_aes256gcm_is_available() != 0;

    info.mb_version = imb_get_version();
    /* The header we compiled against must describe the library we run with
     * (IMB_MGR layout): same major version, not older. */
    if ((info.mb_version >> 16) == (IMB_VERSION_NUM >> 16) && info.mb_version >= IMB_VERSION_NUM) {
        IMB_MGR *mgr = alloc_mb_mgr(0);
        if (mgr != NULL) {
            IMB_ARCH arch = IMB_ARCH_NONE;
            slc_mb_init(mgr, &arch);
            info.mb_arch = (int32_t)arch;
            info.mb_features = mgr->features;
            info.mb_errno = imb_get_errno(mgr);
            int self_test_ok = (mgr->features & IMB_FEATURE_SELF_TEST) == 0 ||
                               (mgr->features & IMB_FEATURE_SELF_TEST_PASS) != 0;
            /* AES-NI emulation (IMB_ARCH_NOAESNI) is not an engine for a
             * gateway: software AES is slow and not constant time. */
            if (info.mb_errno == 0 && self_test_ok && arch >= IMB_ARCH_SSE && arch < IMB_ARCH_NUM) {
                info.mb_usable = 1;
                setup_mgr = mgr;
            } else {
                free_mb_mgr(mgr);
            }
        }
    }
    probe_info = info;
}

void slc_engine_probe(slc_engine_info *out)
{
    pthread_once(&probe_once, probe_once_fn);
    *out = probe_info;
}

const char *slc_mb_version_string(void) { return imb_get_version_str(); }
const char *slc_sodium_version_string(void) { return sodium_version_string(); }

/* ---- Per-core managers ---- */

IMB_MGR *slc_mb_mgr_create(slc_status *status)
{
    slc_engine_info info;
    slc_engine_probe(&info);
    if (!info.mb_usable) {
        *status = SLC_ERR_MB_UNAVAILABLE;
        return NULL;
    }
    IMB_MGR *mgr = alloc_mb_mgr(0);
    if (mgr == NULL) {
        *status = SLC_ERR_NO_MEMORY;
        return NULL;
    }
    IMB_ARCH arch = IMB_ARCH_NONE;
    slc_mb_init(mgr, &arch);
    if (imb_get_errno(mgr) != 0 || (int32_t)arch != info.mb_arch) {
        free_mb_mgr(mgr);
        *status = SLC_ERR_MB_UNAVAILABLE;
        return NULL;
    }
    *status = SLC_OK;
    return mgr;
}

void slc_mb_mgr_destroy(IMB_MGR *mgr)
{
    if (mgr != NULL)
        free_mb_mgr(mgr);
}

int32_t slc_mb_mgr_arch(const IMB_MGR *mgr) { return (int32_t)mgr->used_arch; }

/* ---- Slabs of secret memory ----
 *
 * SA keys (expanded) and SA key material (as configured) live in slabs: one
 * sodium_malloc allocation (guard pages around it, mlock'd, read-only except
 * while a slot is written or wiped) holds SLC_SLOTS_PER_SLAB slots of one
 * size. One allocation per slot would cost each its own guard-page mappings,
 * and a process may hold only vm.max_map_count (65,530) mappings: about
 * 15,000 SAs. A slab is freed when its last slot goes. One lock serves both
 * pools: slots are taken and given back by the control thread, never per
 * packet.
 */

#define SLC_SLOTS_PER_SLAB 256

typedef struct slc_slab {
    struct slc_slab *next;
    uint8_t *slots;                     /* SLC_SLOTS_PER_SLAB of them, sodium_malloc'd */
    uint32_t used;
    uint8_t in_use[SLC_SLOTS_PER_SLAB];
} slc_slab;

typedef struct slc_slab_pool {
    slc_slab *slabs;
    size_t slot_size;                   /* a multiple of 64 */
} slc_slab_pool;

static slc_slab_pool key_pool = { NULL, sizeof(slc_aead_key) };
static slc_slab_pool secret_pool = { NULL, sizeof(slc_secret) };
static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

/* A free slot, zeroed, its slab left read-write (key_lock held by the caller). */
static void *slot_take(slc_slab_pool *pool)
{
    slc_slab *slab = pool->slabs;
    while (slab != NULL && slab->used == SLC_SLOTS_PER_SLAB)
        slab = slab->next;
    if (slab == NULL) {
        slab = calloc(1, sizeof *slab);
        if (slab == NULL)
            return NULL;
        /* sodium_malloc puts the slab right before a guard page, so its start
         * is 64-byte aligned because the size is a multiple of 64 (asserted
         * in the header); checked anyway. */
        slab->slots = sodium_malloc(SLC_SLOTS_PER_SLAB * pool->slot_size);
        if (slab->slots == NULL || ((uintptr_t)slab->slots & 63) != 0) {
            if (slab->slots != NULL)
                sodium_free(slab->slots);
            free(slab);
            return NULL;
        }
        memset(slab->slots, 0, SLC_SLOTS_PER_SLAB * pool->slot_size);
        slab->next = pool->slabs;
        pool->slabs = slab;
    } else {
        sodium_mprotect_readwrite(slab->slots);
    }
    for (uint32_t i = 0; i < SLC_SLOTS_PER_SLAB; i++) {
        if (!slab->in_use[i]) {
            slab->in_use[i] = 1;
            slab->used++;
            uint8_t *slot = slab->slots + i * pool->slot_size;
            memset(slot, 0, pool->slot_size);
            return slot;
        }
    }
    return NULL; /* not reached: used < SLC_SLOTS_PER_SLAB */
}

/* The slab holding `slot` (key_lock held). */
static slc_slab *slab_of(slc_slab_pool *pool, const void *slot, slc_slab ***link)
{
    const uint8_t *p = slot;
    slc_slab **l = &pool->slabs;
    for (slc_slab *slab = pool->slabs; slab != NULL; l = &slab->next, slab = slab->next) {
        if (p >= slab->slots && p < slab->slots + SLC_SLOTS_PER_SLAB * pool->slot_size) {
            *link = l;
            return slab;
        }
    }
    return NULL;
}

/* Makes the slab holding `slot` read-only again (key_lock held). */
static void slot_seal(slc_slab_pool *pool, const void *slot)
{
    slc_slab **link;
    slc_slab *slab = slab_of(pool, slot, &link);
    if (slab != NULL)
        sodium_mprotect_readonly(slab->slots);
}

/* Zeroes and gives back `slot`. Returns whether it read back as zero; false
 * also when no slab of the pool holds it. */
static bool slot_release(slc_slab_pool *pool, void *slot)
{
    pthread_mutex_lock(&key_lock);
    slc_slab **link;
    slc_slab *slab = slab_of(pool, slot, &link);
    if (slab == NULL) {
        pthread_mutex_unlock(&key_lock);
        return false;
    }
    sodium_mprotect_readwrite(slab->slots);
    sodium_memzero(slot, pool->slot_size);
    bool zero = sodium_is_zero((const unsigned char *)slot, pool->slot_size) == 1;
    slab->in_use[((uint8_t *)slot - slab->slots) / pool->slot_size] = 0;
    if (--slab->used == 0) {
        *link = slab->next;
        sodium_free(slab->slots); /* zeroes the whole slab again */
        free(slab);
    } else {
        sodium_mprotect_readonly(slab->slots);
    }
    pthread_mutex_unlock(&key_lock);
    return zero;
}

/* Whether `needle` occurs anywhere in the pool's slabs (key_lock held). */
static bool pool_contains(const slc_slab_pool *pool, const uint8_t *needle, size_t len)
{
    for (const slc_slab *slab = pool->slabs; slab != NULL; slab = slab->next) {
        if (memmem(slab->slots, SLC_SLOTS_PER_SLAB * pool->slot_size, needle, len) != NULL)
            return true;
    }
    return false;
}

bool slc_secret_memory_contains(const uint8_t *needle, size_t len)
{
    if (needle == NULL || len == 0)
        return false;
    pthread_mutex_lock(&key_lock);
    bool found = pool_contains(&key_pool, needle, len) || pool_contains(&secret_pool, needle, len);
    pthread_mutex_unlock(&key_lock);
    return found;
}

/* ---- Key material as configured ---- */

slc_secret *slc_secret_create(const uint8_t *bytes, size_t len, slc_status *status)
{
    if ((bytes == NULL && len > 0) || len > SLC_SECRET_MAX) {
        *status = SLC_ERR_KEY_LENGTH;
        return NULL;
    }
    if (sodium_init() < 0) { /* sodium_malloc needs it; idempotent, thread-safe */
        *status = SLC_ERR_SODIUM_UNAVAILABLE;
        return NULL;
    }
    pthread_mutex_lock(&key_lock);
    slc_secret *secret = slot_take(&secret_pool);
    if (secret == NULL) {
        pthread_mutex_unlock(&key_lock);
        *status = SLC_ERR_NO_MEMORY;
        return NULL;
    }
    secret->len = (uint32_t)len;
    if (len > 0)
        memcpy(secret->bytes, bytes, len);
    slot_seal(&secret_pool, secret);
    pthread_mutex_unlock(&key_lock);
    *status = SLC_OK;
    return secret;
}

bool slc_secret_destroy(slc_secret *secret)
{
    return secret == NULL || slot_release(&secret_pool, secret);
}

/* ---- SA keys ---- */

slc_aead_key *slc_aead_key_create(slc_impl impl, const uint8_t *material, size_t material_len,
                                  slc_status *status)
{
    slc_engine_info info;
    slc_engine_probe(&info);

    size_t key_len;
    switch (impl) {
    case SLC_IMPL_MB_AES128_GCM: key_len = 16; break;
    case SLC_IMPL_MB_AES256_GCM:
    case SLC_IMPL_MB_CHACHA20_POLY1305:
    case SLC_IMPL_NA_AES256_GCM:
    case SLC_IMPL_NA_CHACHA20_POLY1305: key_len = 32; break;
    default: *status = SLC_ERR_UNSUPPORTED; return NULL;
    }
    switch (impl) {
    case SLC_IMPL_MB_AES128_GCM:
    case SLC_IMPL_MB_AES256_GCM:
    case SLC_IMPL_MB_CHACHA20_POLY1305:
        if (!info.mb_usable) { *status = SLC_ERR_MB_UNAVAILABLE; return NULL; }
        break;
    case SLC_IMPL_NA_AES256_GCM:
        if (!info.sodium_usable) { *status = SLC_ERR_SODIUM_UNAVAILABLE; return NULL; }
        if (!info.sodium_aes256gcm) { *status = SLC_ERR_NO_AESNI; return NULL; }
        break;
    default:
        if (!info.sodium_usable) { *status = SLC_ERR_SODIUM_UNAVAILABLE; return NULL; }
        break;
    }
    if (material == NULL || material_len != key_len + SLC_SALT_LEN) {
        *status = SLC_ERR_KEY_LENGTH;
        return NULL;
    }

    pthread_mutex_lock(&key_lock);
    slc_aead_key *key = slot_take(&key_pool);
    if (key == NULL) {
        pthread_mutex_unlock(&key_lock);
        *status = SLC_ERR_NO_MEMORY;
        return NULL;
    }
    key->impl = (uint32_t)impl;
    key->bytes = (uint32_t)sizeof *key;
    memcpy(&key->salt, material + key_len, SLC_SALT_LEN);

    switch (impl) {
    case SLC_IMPL_MB_AES128_GCM:
        pthread_mutex_lock(&setup_lock);
        IMB_AES128_GCM_PRE(setup_mgr, material, &key->k.mb_gcm);
        pthread_mutex_unlock(&setup_lock);
        break;
    case SLC_IMPL_MB_AES256_GCM:
        pthread_mutex_lock(&setup_lock);
        IMB_AES256_GCM_PRE(setup_mgr, material, &key->k.mb_gcm);
        pthread_mutex_unlock(&setup_lock);
        break;
    case SLC_IMPL_NA_AES256_GCM:
        crypto_aead_aes256gcm_beforenm(&key->k.na_gcm, material);
        break;
    default: /* ChaCha20: the key itself is the schedule */
        memcpy(key->k.chacha, material, 32);
        break;
    }
    /* Read-only from here on: the data path only reads it. */
    slot_seal(&key_pool, key);
    pthread_mutex_unlock(&key_lock);
    *status = SLC_OK;
    return key;
}

bool slc_aead_key_destroy(slc_aead_key *key)
{
    return key == NULL || slot_release(&key_pool, key);
}

bool slc_aead_key_contains(const slc_aead_key *key, const uint8_t *needle, size_t len)
{
    return memmem(key, key->bytes, needle, len) != NULL;
}

/* ---- Bursts ---- */

slc_burst *slc_burst_create(void)
{
    slc_burst *b = aligned_alloc(64, sizeof *b);
    if (b != NULL)
        memset(b, 0, sizeof *b);
    return b;
}

void slc_burst_destroy(slc_burst *b)
{
    if (b != NULL) {
        sodium_memzero(b->tag, sizeof b->tag);
        free(b);
    }
}

/* Marks the completed jobs of one submit/flush. */
static void mark_done(IMB_JOB **jobs, uint32_t n, slc_burst *b)
{
    for (uint32_t j = 0; j < n; j++)
        b->ok[(uintptr_t)jobs[j]->user_data] = jobs[j]->status == IMB_STATUS_COMPLETED;
}

/* ChaCha20-Poly1305 on intel-ipsec-mb: one burst submission (the AVX-512
 * job path). GCM has no multi-buffer path in ipsec-mb 1.3; its direct API
 * in a loop is 10-45% faster than the job or burst API (measured), so GCM
 * bursts are a loop of slc_aead_seal/open. */
static uint32_t mb_chacha_burst(IMB_MGR *mgr, const slc_aead_key *key, slc_burst *b, uint32_t aad_len,
                                int encrypt)
{
    uint32_t n = b->count;
    IMB_JOB **jobs = b->jobs;
    uint32_t got = IMB_GET_NEXT_BURST(mgr, n, jobs);
    if (got < n) {
        /* The queue is empty between calls; this only happens if it was not. */
        IMB_JOB *flushed[SLC_BURST_MAX];
        while (IMB_FLUSH_BURST(mgr, SLC_BURST_MAX, flushed) != 0) {}
        got = IMB_GET_NEXT_BURST(mgr, n, jobs);
        if (got < n)
            __builtin_trap();
    }
    for (uint32_t i = 0; i < n; i++) {
        const slc_u32x4 n = slc_nonce(key, b->iv[i]);
        memcpy(b->nonce[i], &n, 16);
        slc_mb_chacha_job(jobs[i], key, b->data[i], b->len[i], b->nonce[i], b->aad[i], aad_len,
                          encrypt ? b->icv[i] : b->tag[i], encrypt);
        jobs[i]->user_data = (void *)(uintptr_t)i;
        b->ok[i] = 0;
    }
    uint32_t done = IMB_SUBMIT_BURST_NOCHECK(mgr, n, jobs);
    mark_done(jobs, done, b);
    while (done < n) {
        uint32_t f = IMB_FLUSH_BURST(mgr, n - done, jobs);
        if (f == 0)
            break;
        mark_done(jobs, f, b);
        done += f;
    }
    uint32_t good = 0;
    for (uint32_t i = 0; i < n; i++) {
        int ok = b->ok[i];
        if (!encrypt) {
            ok &= slc_icv_equal(b->tag[i], b->icv[i]);
            slc_wipe16(b->tag[i]);
            if (!ok)
                sodium_memzero(b->data[i], b->len[i]);
        }
        b->ok[i] = (uint8_t)ok;
        good += (uint32_t)ok;
    }
    return good;
}

uint32_t slc_aead_seal_burst(IMB_MGR *mgr, const slc_aead_key *key, slc_burst *b, uint32_t aad_len)
{
    if (key->impl == SLC_IMPL_MB_CHACHA20_POLY1305)
        return mb_chacha_burst(mgr, key, b, aad_len, 1);
    uint32_t n = b->count;
    for (uint32_t i = 0; i < n; i++) {
        slc_aead_seal(mgr, key, b->data[i], b->len[i], b->iv[i], b->aad[i], aad_len, b->icv[i]);
        b->ok[i] = 1;
    }
    return n;
}

uint32_t slc_aead_open_burst(IMB_MGR *mgr, const slc_aead_key *key, slc_burst *b, uint32_t aad_len)
{
    if (key->impl == SLC_IMPL_MB_CHACHA20_POLY1305)
        return mb_chacha_burst(mgr, key, b, aad_len, 0);
    uint32_t n = b->count, good = 0;
    for (uint32_t i = 0; i < n; i++) {
        bool ok = slc_aead_open(mgr, key, b->data[i], b->len[i], b->iv[i], b->aad[i], aad_len, b->icv[i]);
        b->ok[i] = ok;
        good += ok;
    }
    return good;
}

/* Asks for lines 1-4 of the packet at `p`, about to be sealed or opened whole
 * (line 0 was read while it was framed or admitted). The hardware prefetcher
 * streams the rest once the cipher walks in: asking for every line of a
 * 1400-byte packet made ring ports with packed mbufs 20-30 % slower than
 * asking for its first 128, 256 or 512 bytes (no difference with 64- or
 * 512-byte payloads). Unconditional: a line past a short packet's end is
 * still inside its mbuf's buffer, and a prefetch never faults. */
static inline void prefetch_head(const uint8_t *p)
{
    const uint8_t *line = (const uint8_t *)((uintptr_t)p & ~(uintptr_t)63);
    __builtin_prefetch(line + 64);
    __builtin_prefetch(line + 128);
    __builtin_prefetch(line + 192);
    __builtin_prefetch(line + 256);
}

/* Seals (encrypt) or opens a keyed burst, one call per packet in order; with
 * `prefetch`, the next packet's first lines are asked for meanwhile.
 * (ChaCha20-Poly1305 packets submitted together as one multi-buffer burst
 * of intel-ipsec-mb 1.3 jobs measured no faster here than one job each.) */
static uint32_t keyed_burst(IMB_MGR *mgr, slc_burst *b, bool prefetch, int encrypt)
{
    uint32_t n = b->count, good = 0;
    if (prefetch && n > 0)
        prefetch_head(b->data[0]);
    for (uint32_t i = 0; i < n; i++) {
        if (prefetch && i + 1 < n)
            prefetch_head(b->data[i + 1]);
        if (encrypt) {
            slc_aead_seal(mgr, b->key[i], b->data[i], b->len[i], b->iv[i], b->aad[i], b->aad_len[i], b->icv[i]);
            b->ok[i] = 1;
        } else {
            b->ok[i] = slc_aead_open(mgr, b->key[i], b->data[i], b->len[i], b->iv[i], b->aad[i], b->aad_len[i],
                                     b->icv[i]);
        }
        good += b->ok[i];
    }
    return good;
}

uint32_t slc_burst_seal_keyed(IMB_MGR *mgr, slc_burst *b, bool prefetch)
{
    return keyed_burst(mgr, b, prefetch, 1);
}

uint32_t slc_burst_open_keyed(IMB_MGR *mgr, slc_burst *b, bool prefetch)
{
    return keyed_burst(mgr, b, prefetch, 0);
}

/* ---- Raw baselines: intel-ipsec-mb and libsodium with no wrapper ---- */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* What one slc_bench_raw run drives: the library, operation, algorithm and key. */
typedef struct raw_bench {
    int engine, open;
    slc_aead aead;
    IMB_MGR *mgr;
    struct gcm_key_data *gk;
    crypto_aead_aes256gcm_state *na;
    uint8_t key[32];
} raw_bench;

/* Seals (open == 0: writes the ICV to `icv`) or opens (checks `icv`) one
 * in-place payload with the direct API or libsodium. ipsec-mb computes the
 * tag of an open and leaves the comparison to its caller; libsodium
 * compares itself. */
static bool raw_one(const raw_bench *r, int open, uint8_t *p, uint32_t len, const uint8_t *nonce,
                    const uint8_t *aad, uint8_t *icv)
{
    uint8_t tag[SLC_ICV_LEN];
    if (r->engine == 1) {
        if (r->aead == SLC_AEAD_CHACHA20_POLY1305)
            return open ? crypto_aead_chacha20poly1305_ietf_decrypt_detached(p, NULL, p, len, icv, aad, 8, nonce, r->key) == 0
                        : crypto_aead_chacha20poly1305_ietf_encrypt_detached(p, icv, NULL, p, len, aad, 8, NULL, nonce, r->key) == 0;
        return open ? crypto_aead_aes256gcm_decrypt_detached_afternm(p, NULL, p, len, icv, aad, 8, nonce, r->na) == 0
                    : crypto_aead_aes256gcm_encrypt_detached_afternm(p, icv, NULL, p, len, aad, 8, NULL, nonce, r->na) == 0;
    }
    uint8_t *out = open ? tag : icv;
    if (r->aead == SLC_AEAD_CHACHA20_POLY1305) {
        struct chacha20_poly1305_context_data c;
        IMB_CHACHA20_POLY1305_INIT(r->mgr, r->key, &c, nonce, aad, 8);
        if (open) {
            IMB_CHACHA20_POLY1305_DEC_UPDATE(r->mgr, r->key, &c, p, p, len);
            IMB_CHACHA20_POLY1305_DEC_FINALIZE(r->mgr, &c, out, SLC_ICV_LEN);
        } else {
            IMB_CHACHA20_POLY1305_ENC_UPDATE(r->mgr, r->key, &c, p, p, len);
            IMB_CHACHA20_POLY1305_ENC_FINALIZE(r->mgr, &c, out, SLC_ICV_LEN);
        }
    } else {
        struct gcm_context_data c;
        if (r->aead == SLC_AEAD_AES128_GCM) {
            if (open) IMB_AES128_GCM_DEC(r->mgr, r->gk, &c, p, p, len, nonce, aad, 8, out, SLC_ICV_LEN);
            else IMB_AES128_GCM_ENC(r->mgr, r->gk, &c, p, p, len, nonce, aad, 8, out, SLC_ICV_LEN);
        } else {
            if (open) IMB_AES256_GCM_DEC(r->mgr, r->gk, &c, p, p, len, nonce, aad, 8, out, SLC_ICV_LEN);
            else IMB_AES256_GCM_ENC(r->mgr, r->gk, &c, p, p, len, nonce, aad, 8, out, SLC_ICV_LEN);
        }
    }
    return !open || slc_icv_equal(tag, icv);
}

/* One burst through intel-ipsec-mb's job API; opens compare each computed
 * tag after the burst is flushed. */
static bool raw_jobs(const raw_bench *r, uint8_t *bufs, size_t stride, uint32_t offset, uint32_t len,
                     uint32_t burst, uint8_t (*nonce)[16], uint8_t (*aad)[16], uint8_t (*icv)[2][SLC_ICV_LEN],
                     int which, uint8_t (*tag)[SLC_ICV_LEN])
{
    for (uint32_t i = 0; i < burst; i++) {
        uint8_t *p = bufs + stride * i + offset;
        IMB_JOB *job = IMB_GET_NEXT_JOB(r->mgr);
        job->src = p;
        job->dst = p;
        job->cipher_start_src_offset_in_bytes = 0;
        job->msg_len_to_cipher_in_bytes = len;
        job->hash_start_src_offset_in_bytes = 0;
        job->msg_len_to_hash_in_bytes = len;
        job->iv = nonce[i];
        job->iv_len_in_bytes = SLC_NONCE_LEN;
        job->auth_tag_output = r->open ? tag[i] : p + len;
        job->auth_tag_output_len_in_bytes = SLC_ICV_LEN;
        job->cipher_direction = r->open ? IMB_DIR_DECRYPT : IMB_DIR_ENCRYPT;
        job->chain_order = r->open ? IMB_ORDER_HASH_CIPHER : IMB_ORDER_CIPHER_HASH;
        if (r->aead == SLC_AEAD_CHACHA20_POLY1305) {
            job->cipher_mode = IMB_CIPHER_CHACHA20_POLY1305;
            job->hash_alg = IMB_AUTH_CHACHA20_POLY1305;
            job->enc_keys = r->key;
            job->dec_keys = r->key;
            job->key_len_in_bytes = 32;
            job->u.CHACHA20_POLY1305.aad = aad[i];
            job->u.CHACHA20_POLY1305.aad_len_in_bytes = 8;
        } else {
            job->cipher_mode = IMB_CIPHER_GCM;
            job->hash_alg = IMB_AUTH_AES_GMAC;
            job->enc_keys = r->gk;
            job->dec_keys = r->gk;
            job->key_len_in_bytes = r->aead == SLC_AEAD_AES128_GCM ? 16 : 32;
            job->u.GCM.aad = aad[i];
            job->u.GCM.aad_len_in_bytes = 8;
        }
        job = IMB_SUBMIT_JOB_NOCHECK(r->mgr);
        while (job != NULL)
            job = IMB_GET_COMPLETED_JOB(r->mgr);
    }
    while (IMB_FLUSH_JOB(r->mgr) != NULL) {}
    bool ok = true;
    if (r->open)
        for (uint32_t i = 0; i < burst; i++) ok &= slc_icv_equal(tag[i], icv[i][which]);
    return ok;
}

uint64_t slc_bench_raw(int engine, slc_aead aead, int api, int open, uint32_t len, uint32_t offset,
                       uint32_t burst, uint64_t packets, uint32_t flags)
{
    slc_engine_info info;
    slc_engine_probe(&info);
    if (burst == 0 || burst > SLC_BURST_MAX || offset > 63 || open < 0 || open > 2 || (open == 2 && engine == 0 && api == 0))
        return 0;
    if (engine == 0 ? !info.mb_usable
                    : (!info.sodium_usable || aead == SLC_AEAD_AES128_GCM ||
                       (aead == SLC_AEAD_AES256_GCM && !info.sodium_aes256gcm)))
        return 0;

    raw_bench r = { .engine = engine, .open = open, .aead = aead };
    for (int i = 0; i < 32; i++) r.key[i] = (uint8_t)(0xA0 + i);
    size_t stride = ((size_t)offset + len + SLC_ICV_LEN + 63) & ~(size_t)63;
    uint8_t *bufs = aligned_alloc(64, stride * burst);
    /* Per buffer: the nonce, the AAD, and the two ICVs an open alternates between. */
    uint8_t (*nonce)[16] = aligned_alloc(64, 16 * (size_t)SLC_BURST_MAX);
    uint8_t (*aad)[16] = aligned_alloc(64, 16 * (size_t)SLC_BURST_MAX);
    uint8_t (*icv)[2][SLC_ICV_LEN] = aligned_alloc(64, 2 * SLC_ICV_LEN * (size_t)SLC_BURST_MAX);
    bool ready = bufs != NULL && nonce != NULL && aad != NULL && icv != NULL;
    if (ready && engine == 0) {
        r.mgr = alloc_mb_mgr(0);
        r.gk = aligned_alloc(64, sizeof *r.gk);
        ready = r.mgr != NULL && r.gk != NULL;
        if (ready) {
            slc_mb_init(r.mgr, NULL);
            if (aead == SLC_AEAD_AES128_GCM) IMB_AES128_GCM_PRE(r.mgr, r.key, r.gk);
            else if (aead == SLC_AEAD_AES256_GCM) IMB_AES256_GCM_PRE(r.mgr, r.key, r.gk);
        }
    } else if (ready && aead == SLC_AEAD_AES256_GCM) {
        r.na = aligned_alloc(64, (sizeof *r.na + 63) & ~(size_t)63);
        ready = r.na != NULL && crypto_aead_aes256gcm_beforenm(r.na, r.key) == 0;
    }
    uint64_t elapsed = 0;
    if (ready) {
        memset(bufs, 0x5A, stride * burst);
        for (uint32_t i = 0; i < burst; i++) {
            memset(nonce[i], (int)i, 16);
            memset(aad[i], (int)i + 1, 16);
        }
        /* Stream ciphers: sealing the ciphertext C of a plaintext P gives back
         * P, with the ICV of P as a ciphertext. So after sealing each buffer
         * three times (P→C, C→P, P→C) it holds C, icv[0] authenticates C and
         * icv[1] authenticates P: opens alternate between the two, each one a
         * genuine authenticated decryption, with no copy to restore the input. */
        for (uint32_t i = 0; i < burst && ready; i++) {
            uint8_t *p = bufs + stride * i + offset;
            ready = raw_one(&r, 0, p, len, nonce[i], aad[i], icv[i][0]) &&
                    raw_one(&r, 0, p, len, nonce[i], aad[i], icv[i][1]) &&
                    raw_one(&r, 0, p, len, nonce[i], aad[i], icv[i][0]);
        }
        if (flags & SLC_RAW_TAMPER)
            icv[burst - 1][1][0] ^= 1;
        uint8_t (*tags)[SLC_ICV_LEN] = aligned_alloc(64, SLC_ICV_LEN * (size_t)SLC_BURST_MAX);
        ready = ready && tags != NULL;
        uint64_t done = 0, round = 0;
        uint64_t t0 = now_ns();
        while (ready && done < packets) {
            int which = (int)(round & 1);   /* open: buffers hold C on even rounds, P on odd */
            if (engine == 0 && api == 0) {
                ready = raw_jobs(&r, bufs, stride, offset, len, burst, nonce, aad, icv, which, tags);
            } else if (open == 2) {
                /* Seal the burst, then open it: the buffers are back as they were. */
                for (uint32_t i = 0; i < burst; i++)
                    ready &= raw_one(&r, 0, bufs + stride * i + offset, len, nonce[i], aad[i], tags[i]);
                if (flags & SLC_RAW_TAMPER)
                    tags[burst - 1][0] ^= 1;
                for (uint32_t i = 0; i < burst; i++)
                    ready &= raw_one(&r, 1, bufs + stride * i + offset, len, nonce[i], aad[i], tags[i]);
            } else {
                for (uint32_t i = 0; i < burst; i++)
                    ready &= raw_one(&r, open, bufs + stride * i + offset, len, nonce[i], aad[i],
                                     open ? icv[i][which] : bufs + stride * i + offset + len);
            }
            done += burst;
            round++;
        }
        uint64_t t1 = now_ns();
        if (ready) elapsed = t1 - t0 == 0 ? 1 : t1 - t0;
        free(tags);
    }
    free(bufs); free(nonce); free(aad); free(icv);
    if (r.gk != NULL) { sodium_memzero(r.gk, sizeof *r.gk); free(r.gk); }
    if (r.na != NULL) { sodium_memzero(r.na, sizeof *r.na); free(r.na); }
    if (r.mgr != NULL) free_mb_mgr(r.mgr);
    return elapsed;
}
