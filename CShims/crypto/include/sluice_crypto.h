/*
 * Crypto shims: intel-ipsec-mb and libsodium only, no DPDK, so that the
 * Crypto and IPsec modules build and test without an EAL. Symbols carry the
 * `slc_` prefix.
 */
#ifndef SLUICE_CRYPTO_H
#define SLUICE_CRYPTO_H

#include <stdint.h>
#include <stddef.h>
#include <stdbool.h>

#include <intel-ipsec-mb.h>
#include <sodium.h>

#define SLC_INLINE static inline __attribute__((always_inline))

#endif
