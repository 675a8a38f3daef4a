/*
 * The overlap probe (sluicebench --mode overlap): does work placed between
 * AEAD calls hide behind the cipher, or add to it? intel-ipsec-mb's direct
 * AES-256-GCM API seals a burst of 32 in-place buffers and then opens them,
 * as slc_bench_raw(open = 2) does, with a block of scalar work after every
 * call; the same loop runs with the calls only and with the blocks only.
 * Two kinds of block: one of independent ALU work (eight chains, each step
 * a rotate, an add and an xor per chain: bound by how many instructions the
 * core can issue, like a packet path's parse and bookkeeping), and one
 * dependent chain of multiply-adds (bound by latency). A fourth loop runs
 * the same blocks batched: all of a burst's blocks before its 32 calls, as a
 * worker that frames a burst's packets before sealing them does. Cycles are
 * the TSC's.
 */
#include "sluice_crypto.h"

#include <stdlib.h>
#include <x86intrin.h>

#define OVERLAP_BUFFERS 32

static volatile uint64_t overlap_sink;

/* `steps` steps of eight independent chains. The empty asm statements keep
 * each chain in a general-purpose register (no vectorising), and the
 * rotate counts differ so no chain can be folded into another. */
static inline __attribute__((always_inline)) uint64_t issue_bound(uint64_t seed, uint32_t steps)
{
    uint64_t a0 = seed, a1 = seed ^ 1, a2 = seed ^ 2, a3 = seed ^ 3, a4 = seed ^ 4, a5 = seed ^ 5, a6 = seed ^ 6,
             a7 = seed ^ 7;
#define OVERLAP_STEP(a, r, k) a = ((a << r) | (a >> (64 - r))) ^ (a + k)
    for (uint32_t s = 0; s < steps; s++) {
        OVERLAP_STEP(a0, 7, 0x9E37u);  OVERLAP_STEP(a1, 11, 0x79B9u); OVERLAP_STEP(a2, 13, 0x7F4Au);
        OVERLAP_STEP(a3, 17, 0x7C15u); OVERLAP_STEP(a4, 19, 0xBF58u); OVERLAP_STEP(a5, 23, 0x476Du);
        OVERLAP_STEP(a6, 29, 0x1CE4u); OVERLAP_STEP(a7, 31, 0xE5B9u);
        __asm__ volatile("" : "+r"(a0), "+r"(a1), "+r"(a2), "+r"(a3), "+r"(a4), "+r"(a5), "+r"(a6), "+r"(a7));
    }
#undef OVERLAP_STEP
    return a0 ^ a1 ^ a2 ^ a3 ^ a4 ^ a5 ^ a6 ^ a7;
}

/* `steps` dependent multiply-adds: ~4 cycles each whatever the core's width. */
static inline __attribute__((always_inline)) uint64_t latency_bound(uint64_t x, uint32_t steps)
{
    for (uint32_t s = 0; s < steps; s++) {
        x = x * 0x9E3779B97F4A7C15ull + (x >> 29);
        __asm__ volatile("" : "+r"(x));
    }
    return x;
}

static inline __attribute__((always_inline)) uint64_t overlap_block(int latency, uint64_t x, uint32_t steps)
{
    return latency ? latency_bound(x, steps) : issue_bound(x, steps);
}

/* Cycles per round trip (one seal, one open, and after each a block when
 * `blocks`; with `batched`, a burst's blocks all run before its calls) over
 * `rounds` bursts; `calls`: with the AEAD calls. */
static uint64_t overlap_run(IMB_MGR *mgr, const struct gcm_key_data *gk, uint8_t *bufs, size_t stride, uint32_t len,
                            int calls, int blocks, int batched, int latency, uint32_t steps, uint64_t rounds,
                            bool *authentic)
{
    uint8_t iv[OVERLAP_BUFFERS][16] __attribute__((aligned(64)));
    uint8_t aad[16] __attribute__((aligned(16))) = { 0 };
    uint8_t tag[OVERLAP_BUFFERS][SLC_ICV_LEN], check[SLC_ICV_LEN];
    struct gcm_context_data c;
    for (int i = 0; i < OVERLAP_BUFFERS; i++) memset(iv[i], i, sizeof iv[i]);
    uint64_t x = overlap_sink;
    bool ok = true;
    uint64_t t0 = __rdtsc();
    int between = blocks && !batched, before = blocks && batched;
    for (uint64_t r = 0; r < rounds; r++) {
        if (before)
            for (int i = 0; i < OVERLAP_BUFFERS; i++) x = overlap_block(latency, x, steps);
        for (int i = 0; i < OVERLAP_BUFFERS; i++) {
            if (calls) IMB_AES256_GCM_ENC(mgr, gk, &c, bufs + stride * i, bufs + stride * i, len, iv[i], aad, 8, tag[i], SLC_ICV_LEN);
            if (between) x = overlap_block(latency, x, steps);
        }
        if (before)
            for (int i = 0; i < OVERLAP_BUFFERS; i++) x = overlap_block(latency, x, steps);
        for (int i = 0; i < OVERLAP_BUFFERS; i++) {
            if (calls) {
                IMB_AES256_GCM_DEC(mgr, gk, &c, bufs + stride * i, bufs + stride * i, len, iv[i], aad, 8, check, SLC_ICV_LEN);
                ok &= slc_icv_equal(check, tag[i]);
            }
            if (between) x = overlap_block(latency, x, steps);
        }
    }
    uint64_t t1 = __rdtsc();
    overlap_sink = x;
    *authentic = ok;
    return t1 - t0;
}

int slc_bench_overlap(uint32_t len, int latency, const uint32_t *steps, uint32_t count, uint64_t rounds,
                      uint32_t repeats, slc_overlap_result *out)
{
    slc_engine_info info;
    slc_engine_probe(&info);
    if (!info.mb_usable || len == 0 || rounds == 0 || repeats == 0 || count == 0)
        return -1;
    size_t stride = ((size_t)len + 63) & ~(size_t)63;
    uint8_t *bufs = aligned_alloc(64, stride * OVERLAP_BUFFERS);
    IMB_MGR *mgr = alloc_mb_mgr(0);
    struct gcm_key_data *gk = aligned_alloc(64, sizeof *gk);
    int result = -1;
    if (bufs != NULL && mgr != NULL && gk != NULL) {
        uint8_t key[32];
        for (int i = 0; i < 32; i++) key[i] = (uint8_t)(0xA0 + i);
        slc_mb_init(mgr, NULL);
        IMB_AES256_GCM_PRE(mgr, key, gk);
        memset(bufs, 0x5A, stride * OVERLAP_BUFFERS);
        double per = (double)rounds * OVERLAP_BUFFERS;
        bool ok = true, authentic = true;
        for (uint32_t k = 0; k < count && ok; k++) {
            /* The best of `repeats` for each loop, the four taking turns:
             * calls only, blocks only, blocks between calls, blocks batched. */
            uint64_t best[4] = { UINT64_MAX, UINT64_MAX, UINT64_MAX, UINT64_MAX };
            for (uint32_t r = 0; r < repeats; r++) {
                for (int v = 0; v < 4; v++) {
                    uint64_t t = overlap_run(mgr, gk, bufs, stride, len, v != 1, v != 0, v == 3, latency, steps[k],
                                             rounds, &authentic);
                    ok &= authentic;
                    if (t < best[v]) best[v] = t;
                }
            }
            out[k].cipher = (double)best[0] / per;
            out[k].work = (double)best[1] / per;
            out[k].together = (double)best[2] / per;
            out[k].batched = (double)best[3] / per;
        }
        result = ok ? 0 : -1;
    }
    free(bufs);
    free(gk);
    if (mgr != NULL) free_mb_mgr(mgr);
    return result;
}
