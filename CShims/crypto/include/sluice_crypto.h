/*
 * Crypto shims: intel-ipsec-mb and libsodium only, no DPDK, so that the
 * Crypto and IPsec modules build and test without an EAL. Symbols carry the
 * `slc_` prefix.
 *
 * Per packet (static inline, inlined into Swift): slc_aead_seal, slc_aead_open
 * and the burst container accessors. Set-up, tear-down, bursts and the raw
 * baseline benchmark are out of line in crypto.c.
 *
 * ESP use (RFC 4106 AES-GCM, RFC 7634 ChaCha20-Poly1305): key material is
 * key || 4-byte salt; nonce = salt || 8-byte IV from the packet; AAD is
 * SPI || seq (8 bytes) or SPI || seq-high || seq-low (12 bytes, ESN);
 * ICV 16 bytes. Encryption and decryption are in place.
 */
#ifndef SLUICE_CRYPTO_H
#define SLUICE_CRYPTO_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>
#include <string.h>

/* Keep intel-ipsec-mb's pre-0.53 compatibility macros (ENCRYPT, JOB_AES_HMAC,
 * ...) out of the Swift namespace. */
#define NO_COMPAT_IMB_API_053
#include <intel-ipsec-mb.h>
#include <sodium.h>

#define SLC_INLINE static inline __attribute__((always_inline))

#define SLC_SALT_LEN 4
#define SLC_IV_LEN 8
#define SLC_NONCE_LEN 12
#define SLC_ICV_LEN 16
/* Most packets one burst call takes (= IMB_MAX_BURST_SIZE). */
#define SLC_BURST_MAX 128

/* The implementation an SA key was expanded for; chosen once at install. */
typedef enum slc_impl {
    SLC_IMPL_NONE = 0,
    SLC_IMPL_MB_AES128_GCM = 1,
    SLC_IMPL_MB_AES256_GCM = 2,
    SLC_IMPL_MB_CHACHA20_POLY1305 = 3,
    SLC_IMPL_NA_AES256_GCM = 4,
    SLC_IMPL_NA_CHACHA20_POLY1305 = 5,
} slc_impl;

/* Which algorithm (matches Swift's AEADAlgorithm raw values). */
typedef enum slc_aead {
    SLC_AEAD_AES128_GCM = 1,
    SLC_AEAD_AES256_GCM = 2,
    SLC_AEAD_CHACHA20_POLY1305 = 3,
} slc_aead;

/* Set-up results (Swift maps them to CryptoError). */
typedef enum slc_status {
    SLC_OK = 0,
    SLC_ERR_KEY_LENGTH = 1,
    SLC_ERR_NO_MEMORY = 2,
    SLC_ERR_UNSUPPORTED = 3,
    SLC_ERR_MB_UNAVAILABLE = 4,
    SLC_ERR_SODIUM_UNAVAILABLE = 5,
    SLC_ERR_NO_AESNI = 6,
} slc_status;

/*
 * One SA's expanded key, in sodium_malloc memory (guard pages, mlock'd,
 * read-only after set-up), zeroed and freed by slc_aead_key_destroy.
 * The first cache line holds what every packet reads besides the key.
 */
typedef struct slc_aead_key {
    uint32_t impl;                 /* slc_impl */
    uint32_t salt;                 /* the 4 salt bytes as they are in memory */
    uint32_t bytes;                /* size of this allocation */
    uint8_t pad_[52];
    union {
        struct gcm_key_data mb_gcm;            /* ipsec-mb: round keys + GHASH key powers */
        crypto_aead_aes256gcm_state na_gcm;    /* libsodium: precomputed AES-256-GCM */
        uint8_t chacha[32];                    /* both engines: the ChaCha20 key itself */
    } k;
} __attribute__((aligned(64))) slc_aead_key;
_Static_assert(offsetof(slc_aead_key, k) == 64, "key schedule starts on the second cache line");
_Static_assert(sizeof(slc_aead_key) % 64 == 0, "sodium_malloc returns 64-byte alignment only for multiples of 64");

/*
 * Key material as configured (key || salt), in the same kind of memory as the
 * expanded keys, zeroed and freed by slc_secret_destroy. The control plane
 * keeps it to compare and re-install keys; the data path never reads it.
 */
#define SLC_SECRET_MAX 60
typedef struct slc_secret {
    uint32_t len;
    uint8_t bytes[SLC_SECRET_MAX];
} slc_secret;
_Static_assert(sizeof(slc_secret) % 64 == 0, "sodium_malloc returns 64-byte alignment only for multiples of 64");

/*
 * Per-burst metadata, struct-of-arrays, one per worker core (allocated once).
 * The caller fills data/len/iv/aad/icv (and, for the keyed calls, key and
 * aad_len per packet, the AAD perhaps in aad_buf); ok[] and the scratch are
 * the engine's.
 */
typedef struct slc_burst {
    uint32_t count;
    uint32_t pad_[15];
    uint8_t *data[SLC_BURST_MAX];
    const uint8_t *iv[SLC_BURST_MAX];
    const uint8_t *aad[SLC_BURST_MAX];
    uint8_t *icv[SLC_BURST_MAX];
    uint32_t len[SLC_BURST_MAX];
    uint8_t ok[SLC_BURST_MAX];
    uint8_t aad_len[SLC_BURST_MAX];
    const slc_aead_key *key[SLC_BURST_MAX];
    /* AAD the caller builds per packet (ESN: SPI || seq-high || seq-low) */
    uint8_t aad_buf[SLC_BURST_MAX][16] __attribute__((aligned(16)));
    /* engine scratch: nonces and computed tags must outlive queued jobs */
    uint8_t nonce[SLC_BURST_MAX][16] __attribute__((aligned(16)));
    uint8_t tag[SLC_BURST_MAX][16] __attribute__((aligned(16)));
    IMB_JOB *jobs[SLC_BURST_MAX];
} __attribute__((aligned(64))) slc_burst;

/* What the libraries offer on this machine (filled once by slc_engine_probe). */
typedef struct slc_engine_info {
    int32_t mb_usable;             /* 1 when intel-ipsec-mb initialised with AES-NI or better */
    int32_t mb_arch;               /* IMB_ARCH in use (init_mb_mgr_auto's, or the pinned one) */
    uint64_t mb_features;          /* IMB_FEATURE_* of that manager */
    uint32_t mb_version;           /* imb_get_version() at run time */
    int32_t mb_errno;              /* imb_get_errno after init, 0 when fine */
    int32_t sodium_usable;         /* sodium_init() succeeded */
    int32_t sodium_aes256gcm;      /* crypto_aead_aes256gcm_is_available() */
} slc_engine_info;

/* ---- Set-up (out of line, crypto.c) ---- */

/* Pins intel-ipsec-mb's code path for the whole process (IMB_ARCH_SSE, _AVX,
 * _AVX2 or _AVX512; IMB_ARCH_NONE: the best the CPU has, the default). Only
 * before the first slc_engine_probe: 0, or -1 when too late or not a path. A
 * path the CPU cannot run leaves intel-ipsec-mb unusable (mb_usable 0). */
int slc_mb_pin_arch(int32_t arch);
int32_t slc_mb_pinned_arch(void);
/* Initialises a manager for the process's code path (*arch: the path, or
 * IMB_ARCH_NONE when the CPU lacks what a pinned one needs). */
void slc_mb_init(IMB_MGR *mgr, IMB_ARCH *arch);

/* Probes both libraries once (thread-safe); later calls copy the result. */
void slc_engine_probe(slc_engine_info *out);
const char *slc_mb_version_string(void);
const char *slc_sodium_version_string(void);

/* A per-core intel-ipsec-mb manager (not thread-safe). NULL and *status set on failure. */
IMB_MGR *slc_mb_mgr_create(slc_status *status);
void slc_mb_mgr_destroy(IMB_MGR *mgr);
int32_t slc_mb_mgr_arch(const IMB_MGR *mgr);

/* Expands key material (key || salt) for `impl`; NULL and *status on failure. */
slc_aead_key *slc_aead_key_create(slc_impl impl, const uint8_t *material, size_t material_len,
                                  slc_status *status);
/* Zeroes and frees. Returns whether the whole allocation read back as zero
 * right before sodium_free (the test hook; deinit ignores it). */
bool slc_aead_key_destroy(slc_aead_key *key);
/* Copies `len` (at most SLC_SECRET_MAX) bytes into secret memory; NULL and
 * *status on failure. The caller's copy is the caller's to wipe. */
slc_secret *slc_secret_create(const uint8_t *bytes, size_t len, slc_status *status);
/* Zeroes and frees; returns whether the slot read back as zero. */
bool slc_secret_destroy(slc_secret *secret);
/* Test hook: whether `needle` occurs anywhere in the slabs of keys and key
 * material, live or given back. */
bool slc_secret_memory_contains(const uint8_t *needle, size_t len);
/* Test hook: whether `needle` occurs in the key's allocation. */
bool slc_aead_key_contains(const slc_aead_key *key, const uint8_t *needle, size_t len);
SLC_INLINE uint32_t slc_aead_key_impl(const slc_aead_key *key) { return key->impl; }
SLC_INLINE const void *slc_aead_key_address(const slc_aead_key *key) { return key; }
SLC_INLINE uint32_t slc_aead_key_bytes(const slc_aead_key *key) { return key->bytes; }

slc_burst *slc_burst_create(void);
void slc_burst_destroy(slc_burst *burst);

/* Bursts of one SA: every packet in `burst`. Returns how many authenticated
 * (open) or were sealed (seal); open sets ok[i] per packet and zeroes the
 * payload of every packet that failed. */
uint32_t slc_aead_seal_burst(IMB_MGR *mgr, const slc_aead_key *key, slc_burst *burst, uint32_t aad_len);
uint32_t slc_aead_open_burst(IMB_MGR *mgr, const slc_aead_key *key, slc_burst *burst, uint32_t aad_len);
/* The same for a burst whose packets carry their own key and AAD length
 * (slc_burst_append_keyed: a worker's burst over many SAs). With `prefetch`,
 * the lines after the first of the next packet's first 320 bytes are asked
 * for while one is sealed or opened. Returns how many were sealed / authentic. */
uint32_t slc_burst_seal_keyed(IMB_MGR *mgr, slc_burst *burst, bool prefetch);
uint32_t slc_burst_open_keyed(IMB_MGR *mgr, slc_burst *burst, bool prefetch);

/* Baseline: one crypto library driven from C with no wrapper, over `burst`
 * in-place buffers of `len` bytes (+16 ICV) each, the payload `offset` bytes
 * (0-63) past a 64-byte boundary, `packets` packets in bursts of `burst`.
 * engine: 0 = intel-ipsec-mb, 1 = libsodium. api (ipsec-mb only): 0 = job
 * API (get_next_job/submit/flush), 1 = direct API (IMB_AESxxx_GCM_ENC/DEC,
 * CHACHA20_POLY1305 init/update/finalize). open: 0 = seal; 1 = open, i.e.
 * decrypt and check the ICV of valid sealed payloads (each buffer alternates
 * between two ciphertexts, see crypto.c, so every open authenticates);
 * 2 = seal each buffer of a burst, then open each (direct API or libsodium;
 * one seal and one open per packet counted).
 * Returns elapsed nanoseconds, or 0 when the library or algorithm is not
 * usable here or an open failed to authenticate. flags: 0, or
 * SLC_RAW_TAMPER (test hook) to corrupt one expected ICV after set-up
 * (open 2: the last buffer's ICV between its seal and its open). */
#define SLC_RAW_TAMPER 1u
uint64_t slc_bench_raw(int engine, slc_aead aead, int api, int open, uint32_t len, uint32_t offset,
                       uint32_t burst, uint64_t packets, uint32_t flags);

/* The overlap probe (overlap.c): cycles per round trip (one seal and one
 * open of `len` bytes with intel-ipsec-mb's direct AES-256-GCM API) with
 * nothing between the calls (`cipher`), of two blocks of scalar work alone
 * (`work`), and of both, a block after each call (`together`). latency: 0
 * for blocks of independent ALU work (`steps` steps of eight chains), 1 for a
 * dependent chain of `steps` multiply-adds. One result per entry of `steps`;
 * each the best of `repeats` runs of `rounds` bursts of 32. Returns 0, or -1
 * when intel-ipsec-mb is not usable or an open failed to authenticate. */
typedef struct slc_overlap_result {
    double cipher, work, together;
    double batched; /* the same blocks all run before each burst's calls */
} slc_overlap_result;
int slc_bench_overlap(uint32_t len, int latency, const uint32_t *steps, uint32_t count, uint64_t rounds,
                      uint32_t repeats, slc_overlap_result *out);

/* ---- Per packet (static inline) ---- */

/* 16 bytes as one SSE value. */
typedef uint32_t slc_u32x4 __attribute__((vector_size(16)));

/* The 12-byte nonce salt || IV (plus 4 zero bytes) as one 16-byte value that
 * the compiler stores with one instruction. The engines read the nonce with a
 * vector load right after it is written; a nonce assembled with narrower
 * stores fails store-to-load forwarding there, which measured 2x slower for
 * 64-byte AES-GCM packets. The same holds for the AAD: write it with one
 * 16-byte store (slc_esp_aad) or long before the call. */
SLC_INLINE slc_u32x4 slc_nonce(const slc_aead_key *key, const void *iv)
{
    uint32_t lo, hi;
    memcpy(&lo, iv, 4);
    memcpy(&hi, (const uint8_t *)iv + 4, 4);
    slc_u32x4 v = { key->salt, lo, hi, 0 };
    return v;
}

/* Writes ESP AAD at dst (16 writable bytes) with one 16-byte store: SPI || seq
 * (8 bytes) or SPI || seq-high || seq-low (12 bytes, ESN); all values in host
 * order, written big-endian. Returns the AAD length. */
SLC_INLINE uint32_t slc_esp_aad(void *dst, uint32_t spi, uint64_t seq, bool esn)
{
    uint32_t hi = __builtin_bswap32((uint32_t)(seq >> 32));
    uint32_t lo = __builtin_bswap32((uint32_t)seq);
    slc_u32x4 v = { __builtin_bswap32(spi), esn ? hi : lo, esn ? lo : 0, 0 };
    memcpy(dst, &v, 16);
    return esn ? 12 : 8;
}

/* Constant time: no data-dependent branch or early exit. 1 when equal. */
SLC_INLINE int slc_icv_equal(const void *a, const void *b)
{
    uint64_t a0, a1, b0, b1;
    memcpy(&a0, a, 8); memcpy(&a1, (const uint8_t *)a + 8, 8);
    memcpy(&b0, b, 8); memcpy(&b1, (const uint8_t *)b + 8, 8);
    uint64_t d = (a0 ^ b0) | (a1 ^ b1);
    return (int)(((d | (0 - d)) >> 63) ^ 1);
}

SLC_INLINE void slc_wipe16(uint8_t t[16])
{
    memset(t, 0, 16);
    __asm__ __volatile__("" : : "r"(t) : "memory");
}

/* Fills one intel-ipsec-mb ChaCha20-Poly1305 job (in place, 12-byte nonce). */
SLC_INLINE void slc_mb_chacha_job(IMB_JOB *job, const slc_aead_key *key, uint8_t *data, uint32_t len,
                                  const uint8_t *nonce, const void *aad, uint32_t aad_len,
                                  uint8_t *tag, int encrypt)
{
    job->cipher_mode = IMB_CIPHER_CHACHA20_POLY1305;
    job->hash_alg = IMB_AUTH_CHACHA20_POLY1305;
    job->cipher_direction = encrypt ? IMB_DIR_ENCRYPT : IMB_DIR_DECRYPT;
    job->chain_order = encrypt ? IMB_ORDER_CIPHER_HASH : IMB_ORDER_HASH_CIPHER;
    job->enc_keys = key->k.chacha;
    job->dec_keys = key->k.chacha;
    job->key_len_in_bytes = 32;
    job->src = data;
    job->dst = data;
    job->cipher_start_src_offset_in_bytes = 0;
    job->msg_len_to_cipher_in_bytes = len;
    job->hash_start_src_offset_in_bytes = 0;
    job->msg_len_to_hash_in_bytes = len;
    job->iv = nonce;
    job->iv_len_in_bytes = SLC_NONCE_LEN;
    job->u.CHACHA20_POLY1305.aad = aad;
    job->u.CHACHA20_POLY1305.aad_len_in_bytes = aad_len;
    job->auth_tag_output = tag;
    job->auth_tag_output_len_in_bytes = SLC_ICV_LEN;
}

/* One ChaCha20-Poly1305 packet through the job API. The manager's queue is
 * empty between calls (every burst call flushes), so the job that completes
 * is this one. Single jobs beat the init/update/finalize API 1.2-1.7x. */
SLC_INLINE void slc_mb_chacha_one(IMB_MGR *mgr, const slc_aead_key *key, uint8_t *data, uint32_t len,
                                  const uint8_t *nonce, const void *aad, uint32_t aad_len,
                                  uint8_t *tag, int encrypt)
{
    IMB_JOB *job = IMB_GET_NEXT_JOB(mgr);
    slc_mb_chacha_job(job, key, data, len, nonce, aad, aad_len, tag, encrypt);
    if (IMB_SUBMIT_JOB_NOCHECK(mgr) == NULL)
        (void)IMB_FLUSH_JOB(mgr);
}

/* Encrypts `len` bytes at `data` in place and writes the 16-byte ICV. */
SLC_INLINE void slc_aead_seal(IMB_MGR *mgr, const slc_aead_key *key, void *data, uint32_t len,
                              const void *iv, const void *aad, uint32_t aad_len, void *icv)
{
    const slc_u32x4 n = slc_nonce(key, iv);
    const uint8_t *nonce = (const uint8_t *)&n;
    switch (key->impl) {
    case SLC_IMPL_MB_AES128_GCM: {
        struct gcm_context_data ctx;
        IMB_AES128_GCM_ENC(mgr, &key->k.mb_gcm, &ctx, data, data, len, nonce, aad, aad_len, icv, SLC_ICV_LEN);
        break;
    }
    case SLC_IMPL_MB_AES256_GCM: {
        struct gcm_context_data ctx;
        IMB_AES256_GCM_ENC(mgr, &key->k.mb_gcm, &ctx, data, data, len, nonce, aad, aad_len, icv, SLC_ICV_LEN);
        break;
    }
    case SLC_IMPL_MB_CHACHA20_POLY1305:
        slc_mb_chacha_one(mgr, key, data, len, nonce, aad, aad_len, icv, 1);
        break;
    case SLC_IMPL_NA_AES256_GCM:
        (void)crypto_aead_aes256gcm_encrypt_detached_afternm(data, icv, NULL, data, len, aad, aad_len,
                                                             NULL, nonce, &key->k.na_gcm);
        break;
    case SLC_IMPL_NA_CHACHA20_POLY1305:
        (void)crypto_aead_chacha20poly1305_ietf_encrypt_detached(data, icv, NULL, data, len, aad, aad_len,
                                                                 NULL, nonce, key->k.chacha);
        break;
    default:
        __builtin_trap();
    }
}

/* Decrypts in place and verifies the ICV in constant time. Returns true when
 * authentic; on failure the payload is zeroed (no engine leaves plaintext of
 * a forged packet behind). */
SLC_INLINE bool slc_aead_open(IMB_MGR *mgr, const slc_aead_key *key, void *data, uint32_t len,
                              const void *iv, const void *aad, uint32_t aad_len, const void *icv)
{
    const slc_u32x4 n = slc_nonce(key, iv);
    const uint8_t *nonce = (const uint8_t *)&n;
    uint8_t tag[SLC_ICV_LEN] __attribute__((aligned(16)));
    int ok;
    switch (key->impl) {
    case SLC_IMPL_MB_AES128_GCM: {
        struct gcm_context_data ctx;
        IMB_AES128_GCM_DEC(mgr, &key->k.mb_gcm, &ctx, data, data, len, nonce, aad, aad_len, tag, SLC_ICV_LEN);
        ok = slc_icv_equal(tag, icv);
        slc_wipe16(tag);
        break;
    }
    case SLC_IMPL_MB_AES256_GCM: {
        struct gcm_context_data ctx;
        IMB_AES256_GCM_DEC(mgr, &key->k.mb_gcm, &ctx, data, data, len, nonce, aad, aad_len, tag, SLC_ICV_LEN);
        ok = slc_icv_equal(tag, icv);
        slc_wipe16(tag);
        break;
    }
    case SLC_IMPL_MB_CHACHA20_POLY1305:
        slc_mb_chacha_one(mgr, key, data, len, nonce, aad, aad_len, tag, 0);
        ok = slc_icv_equal(tag, icv);
        slc_wipe16(tag);
        break;
    case SLC_IMPL_NA_AES256_GCM:
        ok = crypto_aead_aes256gcm_decrypt_detached_afternm(data, NULL, data, len, icv, aad, aad_len,
                                                            nonce, &key->k.na_gcm) == 0;
        break;
    case SLC_IMPL_NA_CHACHA20_POLY1305:
        ok = crypto_aead_chacha20poly1305_ietf_decrypt_detached(data, NULL, data, len, icv, aad, aad_len,
                                                                nonce, key->k.chacha) == 0;
        break;
    default:
        __builtin_trap();
    }
    if (__builtin_expect(!ok, 0))
        sodium_memzero(data, len);
    return ok;
}

/* ---- Burst container (static inline) ---- */

SLC_INLINE void slc_burst_reset(slc_burst *b) { b->count = 0; }
SLC_INLINE uint32_t slc_burst_count(const slc_burst *b) { return b->count; }
SLC_INLINE bool slc_burst_ok(const slc_burst *b, uint32_t i) { return b->ok[i] != 0; }
/* Appends a packet with its own key and AAD length; returns its index. */
SLC_INLINE uint32_t slc_burst_append_keyed(slc_burst *b, const slc_aead_key *key, void *data, uint32_t len,
                                           const void *iv, const void *aad, uint32_t aad_len, void *icv)
{
    uint32_t i = b->count;
    b->key[i] = key;
    b->data[i] = data;
    b->len[i] = len;
    b->iv[i] = iv;
    b->aad[i] = aad;
    b->aad_len[i] = (uint8_t)aad_len;
    b->icv[i] = icv;
    b->count = i + 1;
    return i;
}
/* The 16 bytes of AAD scratch of the packet the next append adds. */
SLC_INLINE uint8_t *slc_burst_next_aad(slc_burst *b) { return b->aad_buf[b->count]; }
/* Appends a packet of the burst's one key (slc_aead_seal_burst / open_burst
 * give the key and AAD length for all). */
SLC_INLINE void slc_burst_append(slc_burst *b, void *data, uint32_t len, const void *iv,
                                 const void *aad, void *icv)
{
    (void)slc_burst_append_keyed(b, NULL, data, len, iv, aad, 0, icv);
}

#endif
