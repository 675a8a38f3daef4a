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

static void probe_once_fn(void)
{
    slc_engine_info info;
    memset(&info, 0, sizeof info);
    info.mb_arch = IMB_ARCH_NONE;

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
            init_mb_mgr_auto(mgr, &arch);
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
    init_mb_mgr_auto(mgr, &arch);
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

/* ---- SA keys ----
 *
 * Keys live in slabs: one sodium_malloc allocation (guard pages around it,
 * mlock'd, read-only except while a key is written or wiped) holds
 * SLC_KEYS_PER_SLAB keys. One allocation per key would cost each key its own
 * guard-page mappings, and a process may hold only vm.max_map_count (65,530)
 * mappings: about 15,000 SAs. A slab is freed when its last key goes.
 */

#define SLC_KEYS_PER_SLAB 256

typedef struct slc_key_slab {
    struct slc_key_slab *next;
    slc_aead_key *keys;                 /* SLC_KEYS_PER_SLAB of them, sodium_malloc'd */
    uint32_t used;
    uint8_t in_use[SLC_KEYS_PER_SLAB];
} slc_key_slab;

static slc_key_slab *key_slabs;
static pthread_mutex_t key_lock = PTHREAD_MUTEX_INITIALIZER;

/* A free key slot, its slab left read-write (key_lock held by the caller). */
static slc_aead_key *key_slot_take(void)
{
    slc_key_slab *slab = key_slabs;
    while (slab != NULL && slab->used == SLC_KEYS_PER_SLAB)
        slab = slab->next;
    if (slab == NULL) {
        slab = calloc(1, sizeof *slab);
        if (slab == NULL)
            return NULL;
        slab->keys = sodium_malloc(SLC_KEYS_PER_SLAB * sizeof(slc_aead_key));
        if (slab->keys == NULL || ((uintptr_t)slab->keys & 63) != 0) {
            if (slab->keys != NULL)
                sodium_free(slab->keys);
            free(slab);
            return NULL;
        }
        memset(slab->keys, 0, SLC_KEYS_PER_SLAB * sizeof(slc_aead_key));
        slab->next = key_slabs;
        key_slabs = slab;
    } else {
        sodium_mprotect_readwrite(slab->keys);
    }
    for (uint32_t i = 0; i < SLC_KEYS_PER_SLAB; i++) {
        if (!slab->in_use[i]) {
            slab->in_use[i] = 1;
            slab->used++;
            return &slab->keys[i];
        }
    }
    return NULL; /* not reached: used < SLC_KEYS_PER_SLAB */
}

/* The slab holding `key` (key_lock held). */
static slc_key_slab *key_slab_of(const slc_aead_key *key, slc_key_slab ***link)
{
    slc_key_slab **l = &key_slabs;
    for (slc_key_slab *slab = key_slabs; slab != NULL; l = &slab->next, slab = slab->next) {
        if (key >= slab->keys && key < slab->keys + SLC_KEYS_PER_SLAB) {
            *link = l;
            return slab;
        }
    }
    return NULL;
}

/* Makes the slab holding `key` read-only again (key_lock held). */
static void key_slab_seal(const slc_aead_key *key)
{
    slc_key_slab **link;
    slc_key_slab *slab = key_slab_of(key, &link);
    if (slab != NULL)
        sodium_mprotect_readonly(slab->keys);
}

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

    /* sodium_malloc puts the slab right before a guard page, so its start
     * is 64-byte aligned because the size is a multiple of 64 (asserted in
     * the header); checked anyway. */
    pthread_mutex_lock(&key_lock);
    slc_aead_key *key = key_slot_take();
    if (key == NULL) {
        pthread_mutex_unlock(&key_lock);
        *status = SLC_ERR_NO_MEMORY;
        return NULL;
    }
    memset(key, 0, sizeof *key);
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
    key_slab_seal(key);
    pthread_mutex_unlock(&key_lock);
    *status = SLC_OK;
    return key;
}

bool slc_aead_key_destroy(slc_aead_key *key)
{
    if (key == NULL)
        return true;
    pthread_mutex_lock(&key_lock);
    slc_key_slab **link;
    slc_key_slab *slab = key_slab_of(key, &link);
    if (slab == NULL) {
        pthread_mutex_unlock(&key_lock);
        return false;
    }
    sodium_mprotect_readwrite(slab->keys);
    size_t bytes = sizeof *key;
    sodium_memzero(key, bytes);
    bool zero = sodium_is_zero((const unsigned char *)key, bytes) == 1;
    slab->in_use[key - slab->keys] = 0;
    if (--slab->used == 0) {
        *link = slab->next;
        sodium_free(slab->keys); /* zeroes the whole slab again */
        free(slab);
    } else {
        sodium_mprotect_readonly(slab->keys);
    }
    pthread_mutex_unlock(&key_lock);
    return zero;
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

/* ---- Raw intel-ipsec-mb baseline ---- */

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

uint64_t slc_bench_raw_mb(slc_aead aead, int api, uint32_t len, uint32_t burst, uint64_t packets)
{
    slc_engine_info info;
    slc_engine_probe(&info);
    if (!info.mb_usable || burst == 0 || burst > SLC_BURST_MAX)
        return 0;
    IMB_MGR *mgr = alloc_mb_mgr(0);
    if (mgr == NULL)
        return 0;
    init_mb_mgr_auto(mgr, NULL);

    struct gcm_key_data *gk = aligned_alloc(64, sizeof *gk);
    size_t stride = ((size_t)len + SLC_ICV_LEN + 63) & ~(size_t)63;
    uint8_t *bufs = aligned_alloc(64, stride * burst);
    if (gk == NULL || bufs == NULL) {
        free(gk); free(bufs); free_mb_mgr(mgr);
        return 0;
    }
    uint8_t key[32], nonce[SLC_BURST_MAX][16], aad[SLC_BURST_MAX][16];
    for (int i = 0; i < 32; i++) key[i] = (uint8_t)(0xA0 + i);
    memset(bufs, 0x5A, stride * burst);
    for (uint32_t i = 0; i < burst; i++) {
        memset(nonce[i], (int)i, 16);
        memset(aad[i], (int)i + 1, 16);
    }
    if (aead == SLC_AEAD_AES128_GCM) IMB_AES128_GCM_PRE(mgr, key, gk);
    else if (aead == SLC_AEAD_AES256_GCM) IMB_AES256_GCM_PRE(mgr, key, gk);

    uint64_t done = 0;
    uint64_t t0 = now_ns();
    while (done < packets) {
        if (api == 1) {
            for (uint32_t i = 0; i < burst; i++) {
                uint8_t *p = bufs + stride * i;
                if (aead == SLC_AEAD_CHACHA20_POLY1305) {
                    struct chacha20_poly1305_context_data c;
                    IMB_CHACHA20_POLY1305_INIT(mgr, key, &c, nonce[i], aad[i], 8);
                    IMB_CHACHA20_POLY1305_ENC_UPDATE(mgr, key, &c, p, p, len);
                    IMB_CHACHA20_POLY1305_ENC_FINALIZE(mgr, &c, p + len, SLC_ICV_LEN);
                } else {
                    struct gcm_context_data c;
                    if (aead == SLC_AEAD_AES128_GCM)
                        IMB_AES128_GCM_ENC(mgr, gk, &c, p, p, len, nonce[i], aad[i], 8, p + len, SLC_ICV_LEN);
                    else
                        IMB_AES256_GCM_ENC(mgr, gk, &c, p, p, len, nonce[i], aad[i], 8, p + len, SLC_ICV_LEN);
                }
            }
        } else {
            for (uint32_t i = 0; i < burst; i++) {
                uint8_t *p = bufs + stride * i;
                IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
                job->src = p;
                job->dst = p;
                job->cipher_start_src_offset_in_bytes = 0;
                job->msg_len_to_cipher_in_bytes = len;
                job->hash_start_src_offset_in_bytes = 0;
                job->msg_len_to_hash_in_bytes = len;
                job->iv = nonce[i];
                job->iv_len_in_bytes = SLC_NONCE_LEN;
                job->auth_tag_output = p + len;
                job->auth_tag_output_len_in_bytes = SLC_ICV_LEN;
                job->cipher_direction = IMB_DIR_ENCRYPT;
                job->chain_order = IMB_ORDER_CIPHER_HASH;
                if (aead == SLC_AEAD_CHACHA20_POLY1305) {
                    job->cipher_mode = IMB_CIPHER_CHACHA20_POLY1305;
                    job->hash_alg = IMB_AUTH_CHACHA20_POLY1305;
                    job->enc_keys = key;
                    job->dec_keys = key;
                    job->key_len_in_bytes = 32;
                    job->u.CHACHA20_POLY1305.aad = aad[i];
                    job->u.CHACHA20_POLY1305.aad_len_in_bytes = 8;
                } else {
                    job->cipher_mode = IMB_CIPHER_GCM;
                    job->hash_alg = IMB_AUTH_AES_GMAC;
                    job->enc_keys = gk;
                    job->dec_keys = gk;
                    job->key_len_in_bytes = aead == SLC_AEAD_AES128_GCM ? 16 : 32;
                    job->u.GCM.aad = aad[i];
                    job->u.GCM.aad_len_in_bytes = 8;
                }
                job = IMB_SUBMIT_JOB_NOCHECK(mgr);
                while (job != NULL)
                    job = IMB_GET_COMPLETED_JOB(mgr);
            }
            while (IMB_FLUSH_JOB(mgr) != NULL) {}
        }
        done += burst;
    }
    uint64_t elapsed = now_ns() - t0;
    free(bufs);
    sodium_memzero(gk, sizeof *gk);
    free(gk);
    free_mb_mgr(mgr);
    return elapsed == 0 ? 1 : elapsed;
}
