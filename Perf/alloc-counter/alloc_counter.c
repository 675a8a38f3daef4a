/*
 * LD_PRELOAD library that counts heap allocations and Swift reference-count
 * operations, for proving the data path allocates and retains nothing per
 * packet. sluicebench finds `sl_alloccount_read` with dlsym when preloaded.
 *
 * Counted: malloc/calloc/realloc/posix_memalign/aligned_alloc (glibc entry
 * points), swift_allocObject, swift_retain/_n, swift_release/_n,
 * swift_bridgeObjectRetain/Release. Each wrapper forwards to the next
 * definition (RTLD_NEXT); glibc's malloc family is forwarded to __libc_*.
 */
#define _GNU_SOURCE 1
#include <dlfcn.h>
#include <stdint.h>
#include <stddef.h>
#include <stdatomic.h>

static _Atomic uint64_t n_malloc, n_swift_alloc, n_retain, n_release;

void sl_alloccount_read(uint64_t out[4]) {
    out[0] = atomic_load(&n_malloc);
    out[1] = atomic_load(&n_swift_alloc);
    out[2] = atomic_load(&n_retain);
    out[3] = atomic_load(&n_release);
}

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
extern void *__libc_memalign(size_t, size_t);

void *malloc(size_t n) { atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed); return __libc_malloc(n); }
void *calloc(size_t a, size_t b) { atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed); return __libc_calloc(a, b); }
void *realloc(void *p, size_t n) { atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed); return __libc_realloc(p, n); }
int posix_memalign(void **out, size_t align, size_t n) {
    atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed);
    void *p = __libc_memalign(align, n);
    if (!p) return 12; /* ENOMEM */
    *out = p;
    return 0;
}
void *aligned_alloc(size_t align, size_t n) { atomic_fetch_add_explicit(&n_malloc, 1, memory_order_relaxed); return __libc_memalign(align, n); }

#define FORWARD(ret, name, params, args, counter)                         \
    ret name params {                                                     \
        static ret (*next) params;                                        \
        if (!next) next = (ret (*) params)dlsym(RTLD_NEXT, #name);        \
        atomic_fetch_add_explicit(&counter, 1, memory_order_relaxed);     \
        return next args;                                                 \
    }

FORWARD(void *, swift_allocObject, (void *md, size_t size, size_t align), (md, size, align), n_swift_alloc)
FORWARD(void *, swift_retain, (void *o), (o), n_retain)
FORWARD(void *, swift_retain_n, (void *o, uint32_t k), (o, k), n_retain)
FORWARD(void, swift_release, (void *o), (o), n_release)
FORWARD(void, swift_release_n, (void *o, uint32_t k), (o, k), n_release)
FORWARD(void *, swift_bridgeObjectRetain, (void *o), (o), n_retain)
FORWARD(void, swift_bridgeObjectRelease, (void *o), (o), n_release)
