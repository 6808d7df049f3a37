/* old_hash.h — the unkeyed hashes of the KV fold and the dedup window
   before issue 15, and how a hostile producer solves for keys and ids that
   all share one hash under them. tests/test_hash.c checks that such keys
   spread under the keyed hash; bench/bench_core.c times them. Test code
   only: nothing here is the library's any more.

   The fold's old hash of n bytes: h = PHI ^ n; per 8-byte little-endian
   word w, h = (h ^ mix(w)) * C1; then mix((h ^ mix(tail ^ t)) * C2) where
   tail holds the t = n % 8 bytes left. mix (x ^= x >> 32; x *= M;
   x ^= x >> 32) and the odd multiplications are invertible, so whoever
   fixes every word of a key but the last can solve for the last and hit
   any hash. The window's old hash of an id was mix(lo * PHI ^ hi) of its
   two halves: any lo, solve for hi. */
#ifndef OLD_HASH_H
#define OLD_HASH_H

#include <stddef.h>
#include <stdint.h>

#define OLD_HASH_PHI 0x9e3779b97f4a7c15u
#define OLD_HASH_C1 0xff51afd7ed558ccdu
#define OLD_HASH_C2 0xc4ceb9fe1a85ec53u
#define OLD_HASH_M 0xd6e8feb86659fd93u
#define OLD_HASH_TARGET 0x0123456789abcdefu /* the state every solved key reaches */

static inline uint64_t old_hash_le64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 7; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static inline uint64_t old_hash_mix(uint64_t x)
{
    x ^= x >> 32;
    x *= OLD_HASH_M;
    return x ^ (x >> 32);
}

/* The inverse of an odd m modulo 2^64 (Newton: each step doubles the bits). */
static inline uint64_t old_hash_inverse(uint64_t m)
{
    uint64_t x = m;
    int i;
    for (i = 0; i < 6; i++) x *= 2 - m * x;
    return x;
}

static inline uint64_t old_hash_unmix(uint64_t x)
{
    x ^= x >> 32;
    x *= old_hash_inverse(OLD_HASH_M);
    return x ^ (x >> 32);
}

/* The KV fold's old hash of n bytes. */
static inline uint64_t old_hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = OLD_HASH_PHI ^ (uint64_t)n, tail = 0;
    size_t i;
    for (; n >= 8; p += 8, n -= 8) h = (h ^ old_hash_mix(old_hash_le64(p))) * OLD_HASH_C1;
    for (i = 0; i < n; i++) tail |= (uint64_t)p[i] << (8 * i);
    return old_hash_mix((h ^ old_hash_mix(tail ^ n)) * OLD_HASH_C2);
}

/* Fills the last 8 bytes of key (n bytes, n a multiple of 8) so that its
   old hash equals that of every other key of n bytes solved here. */
static inline void old_hash_solve(uint8_t *key, size_t n)
{
    uint64_t h = OLD_HASH_PHI ^ (uint64_t)n, last;
    size_t i;
    for (i = 0; i + 8 < n; i += 8) h = (h ^ old_hash_mix(old_hash_le64(key + i))) * OLD_HASH_C1;
    last = old_hash_unmix((OLD_HASH_TARGET * old_hash_inverse(OLD_HASH_C1)) ^ h);
    for (i = 0; i < 8; i++) key[n - 8 + i] = (uint8_t)(last >> (8 * i));
}

/* The dedup window's old hash of an id (its home slot: the low bits). */
static inline uint64_t old_hash_id(const uint8_t id[16])
{
    return old_hash_mix(old_hash_le64(id) * OLD_HASH_PHI ^ old_hash_le64(id + 8));
}

/* Fills bytes 8-15 of id so that its old hash equals every other solved id's. */
static inline void old_hash_solve_id(uint8_t id[16])
{
    uint64_t hi = old_hash_le64(id) * OLD_HASH_PHI ^ OLD_HASH_TARGET;
    int i;
    for (i = 0; i < 8; i++) id[8 + i] = (uint8_t)(hi >> (8 * i));
}

#endif
