/* test_bytes.h — byte strings and positions as every test file writes them
   (include after opstate.h). */
#ifndef TEST_BYTES_H
#define TEST_BYTES_H

#include <string.h>

/* n bytes at p. */
static inline opstate_bytes by(const void *p, size_t n)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)p;
    b.len = n;
    return b;
}

/* A C string's bytes without the terminator; NULL gives none (NULL, 0). */
static inline opstate_bytes str(const char *s) { return by(s, s ? strlen(s) : 0); }

/* A position with no epoch. */
static inline opstate_position pos(uint64_t seq, int64_t time)
{
    opstate_position p;
    p.seq = seq;
    p.time = time;
    p.epoch = 0;
    return p;
}

#endif
