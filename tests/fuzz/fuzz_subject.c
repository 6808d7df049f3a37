/* fuzz_subject.c — libFuzzer target for subjects (opstate.h >>subjects).

   Invariants, each checked with abort() against independent oracles:
   - token_validate: OK exactly when 1..OPSTATE_MAX_TOKEN_LEN bytes, none of
     '.', '*', '>', <= 0x20, >= 0x7f; err->offset at the first bad byte.
   - prefix_validate: OK exactly when the input is valid tokens joined by
     single dots.
   - key_unescape: OK exactly when the input is the canonical escape of some
     key (bounded by OPSTATE_MAX_KEY_LEN); then re-escaping gives back the
     same token; on failure the output buffer is untouched.
   - key_escape of the input (as a key) unescapes to the same bytes, and the
     token has only [A-Za-z0-9_-] and "%XX" (uppercase hex).
   - subject_parse under a fixed prefix ("ops", "a.b"): NOT_FOUND exactly
     when the input does not start with "<prefix>."; when OK, the parts lie
     in the input, and building from them gives back the input.

   Build: make build/fuzz-subject (libFuzzer) or build/fuzz-replay-subject. */
#include <stdint.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../../opstate.h"

#define FUZZ_ASSERT(c) do { if (!(c)) abort(); } while (0)

static int fuzz_token_byte_ok(uint8_t c)
{
    return c > 0x20 && c < 0x7F && c != '.' && c != '*' && c != '>';
}

static int fuzz_key_safe(uint8_t c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           c == '_' || c == '-';
}

static int fuzz_hex_val(uint8_t c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* First bad byte of a token, or len. */
static size_t fuzz_token_first_bad(const uint8_t *t, size_t len)
{
    size_t i;
    for (i = 0; i < len; i++)
        if (!fuzz_token_byte_ok(t[i])) return i;
    return len;
}

static void fuzz_token(const uint8_t *data, size_t size)
{
    opstate_error err;
    opstate_result r;
    size_t bad = fuzz_token_first_bad(data, size);
    int want_ok = size >= 1 && size <= OPSTATE_MAX_TOKEN_LEN && bad == size;
    memset(&err, 0, sizeof err);
    r = opstate_token_validate((const char *)data, size, &err);
    FUZZ_ASSERT((r == OPSTATE_OK) == want_ok);
    FUZZ_ASSERT(opstate_token_validate((const char *)data, size, NULL) == r);
    if (r == OPSTATE_OK) return;
    FUZZ_ASSERT(err.result == r);
    FUZZ_ASSERT(r == OPSTATE_INVALID_TOKEN || r == OPSTATE_OVERSIZED);
    if (size == 0) FUZZ_ASSERT(r == OPSTATE_INVALID_TOKEN);
    if (size >= 1 && size <= OPSTATE_MAX_TOKEN_LEN) {
        FUZZ_ASSERT(r == OPSTATE_INVALID_TOKEN);
        FUZZ_ASSERT(err.offset == bad);
    }
    if (size > OPSTATE_MAX_TOKEN_LEN && bad == size) FUZZ_ASSERT(r == OPSTATE_OVERSIZED);
}

static void fuzz_prefix(const uint8_t *data, size_t size)
{
    size_t i = 0, start = 0;
    int want_ok = size > 0;
    opstate_result r;
    while (want_ok && i <= size) {
        if (i == size || data[i] == '.') {
            size_t n = i - start;
            if (n == 0 || n > OPSTATE_MAX_TOKEN_LEN ||
                fuzz_token_first_bad(data + start, n) != n)
                want_ok = 0;
            start = i + 1;
        }
        i++;
    }
    r = opstate_prefix_validate((const char *)data, size, NULL);
    FUZZ_ASSERT((r == OPSTATE_OK) == want_ok);
}

/* Decoded length when tok is the canonical escape of a key, else (size_t)-1. */
static size_t fuzz_canonical_len(const uint8_t *tok, size_t len)
{
    size_t i, n = 0;
    if (len == 0) return (size_t)-1;
    for (i = 0; i < len; i++, n++) {
        if (tok[i] == '%') {
            int hi, lo;
            if (i + 2 >= len) return (size_t)-1;
            hi = fuzz_hex_val(tok[i + 1]);
            lo = fuzz_hex_val(tok[i + 2]);
            if (hi < 0 || lo < 0 || fuzz_key_safe((uint8_t)(hi * 16 + lo))) return (size_t)-1;
            i += 2;
        } else if (!fuzz_key_safe(tok[i])) {
            return (size_t)-1;
        }
    }
    return n;
}

static void fuzz_escaped_charset(const char *t, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++) {
        uint8_t c = (uint8_t)t[i];
        if (c == '%') {
            FUZZ_ASSERT(i + 2 < n);
            FUZZ_ASSERT(fuzz_hex_val((uint8_t)t[i + 1]) >= 0);
            FUZZ_ASSERT(fuzz_hex_val((uint8_t)t[i + 2]) >= 0);
            i += 2;
        } else {
            FUZZ_ASSERT(fuzz_key_safe(c));
        }
    }
}

static void fuzz_unescape(const uint8_t *data, size_t size)
{
    size_t q = 0, n = 0, e = 0, canon = fuzz_canonical_len(data, size);
    opstate_error err;
    opstate_result r;
    uint8_t *out = (uint8_t *)malloc(size + 1);
    char *again;
    FUZZ_ASSERT(out != NULL);
    memset(&err, 0, sizeof err);
    r = opstate_key_unescape((const char *)data, size, NULL, 0, &q, &err);
    if (canon == (size_t)-1) FUZZ_ASSERT(r != OPSTATE_OK);
    if (canon != (size_t)-1 && canon <= OPSTATE_MAX_KEY_LEN) FUZZ_ASSERT(r == OPSTATE_OK);
    if (r != OPSTATE_OK) {
        FUZZ_ASSERT(err.result == r);
        FUZZ_ASSERT(err.offset <= size);
        /* output untouched on failure */
        memset(out, 0xC3, size + 1);
        FUZZ_ASSERT(opstate_key_unescape((const char *)data, size, out, size + 1, &n, NULL) == r);
        for (n = 0; n <= size; n++) FUZZ_ASSERT(out[n] == 0xC3);
        free(out);
        return;
    }
    FUZZ_ASSERT(q == canon);
    FUZZ_ASSERT(q >= 1 && q <= size);
    FUZZ_ASSERT(opstate_key_unescape((const char *)data, size, out, size + 1, &n, NULL) ==
                OPSTATE_OK);
    FUZZ_ASSERT(n == q);
    /* one byte too small */
    if (q > 0) {
        size_t m = 0;
        FUZZ_ASSERT(opstate_key_unescape((const char *)data, size, out, q - 1, &m, NULL) ==
                    OPSTATE_BUFFER_TOO_SMALL);
    }
    /* re-escape gives back the same token */
    again = (char *)malloc(size + 1);
    FUZZ_ASSERT(again != NULL);
    FUZZ_ASSERT(opstate_key_escape(out, n, again, size + 1, &e) == OPSTATE_OK);
    FUZZ_ASSERT(e == size);
    FUZZ_ASSERT(memcmp(again, data, size) == 0);
    free(again);
    free(out);
}

static void fuzz_escape(const uint8_t *data, size_t size)
{
    size_t q = 0, n = 0, m = 0, cap = 3 * size + 1;
    char *tok;
    uint8_t *back;
    opstate_result r = opstate_key_escape(data, size, NULL, 0, &q);
    if (size == 0) {
        FUZZ_ASSERT(r == OPSTATE_INVALID_ARGUMENT);
        return;
    }
    if (size > OPSTATE_MAX_KEY_LEN) {
        FUZZ_ASSERT(r != OPSTATE_OK);
        return;
    }
    FUZZ_ASSERT(r == OPSTATE_OK);
    FUZZ_ASSERT(q >= size && q <= 3 * size);
    tok = (char *)malloc(cap);
    back = (uint8_t *)malloc(size + 1);
    FUZZ_ASSERT(tok != NULL && back != NULL);
    FUZZ_ASSERT(opstate_key_escape(data, size, tok, cap, &n) == OPSTATE_OK);
    FUZZ_ASSERT(n == q);
    fuzz_escaped_charset(tok, n);
    if (n <= OPSTATE_MAX_TOKEN_LEN)
        FUZZ_ASSERT(opstate_token_validate(tok, n, NULL) == OPSTATE_OK);
    FUZZ_ASSERT(opstate_key_unescape(tok, n, back, size + 1, &m, NULL) == OPSTATE_OK);
    FUZZ_ASSERT(m == size);
    FUZZ_ASSERT(memcmp(back, data, size) == 0);
    free(tok);
    free(back);
}

static void fuzz_parse_under(const uint8_t *data, size_t size, const char *prefix)
{
    size_t pl = strlen(prefix), n = 0, kn = 0;
    int under = size > pl && memcmp(data, prefix, pl) == 0 && data[pl] == '.';
    opstate_subject_parts parts, pre;
    opstate_error err;
    opstate_result r;
    memset(&pre, 0x4D, sizeof pre);
    parts = pre;
    memset(&err, 0, sizeof err);
    r = opstate_subject_parse((const char *)data, size, prefix, pl, &parts, &err);
    if (!under) FUZZ_ASSERT(r != OPSTATE_OK);
    if (size > pl && !under) FUZZ_ASSERT(r == OPSTATE_NOT_FOUND);
    if (under) FUZZ_ASSERT(r != OPSTATE_NOT_FOUND);
    if (r != OPSTATE_OK) {
        FUZZ_ASSERT(err.result == r);
        FUZZ_ASSERT(memcmp(&parts, &pre, sizeof parts) == 0);
        return;
    }
    /* parts lie inside the input, in order */
    FUZZ_ASSERT(parts.scope.ptr == data + pl + 1);
    FUZZ_ASSERT(parts.kind.ptr == parts.scope.ptr + parts.scope.len + 1);
    FUZZ_ASSERT(opstate_token_validate((const char *)parts.scope.ptr, parts.scope.len, NULL) ==
                OPSTATE_OK);
    FUZZ_ASSERT(opstate_token_validate((const char *)parts.kind.ptr, parts.kind.len, NULL) ==
                OPSTATE_OK);
    if (parts.key_token.len == 0) {
        char *again = (char *)malloc(size);
        FUZZ_ASSERT(again != NULL);
        FUZZ_ASSERT(parts.kind.ptr + parts.kind.len == data + size);
        FUZZ_ASSERT(opstate_subject_build(prefix, pl, parts.scope, parts.kind, parts.key_token,
                                          again, size, &n, NULL) == OPSTATE_OK);
        FUZZ_ASSERT(n == size);
        FUZZ_ASSERT(memcmp(again, data, size) == 0);
        free(again);
    } else {
        uint8_t *key = (uint8_t *)malloc(parts.key_token.len);
        char *again = (char *)malloc(size);
        opstate_bytes kb;
        FUZZ_ASSERT(key != NULL && again != NULL);
        FUZZ_ASSERT(parts.key_token.ptr == parts.kind.ptr + parts.kind.len + 1);
        FUZZ_ASSERT(parts.key_token.ptr + parts.key_token.len == data + size);
        FUZZ_ASSERT(opstate_key_unescape((const char *)parts.key_token.ptr, parts.key_token.len,
                                         key, parts.key_token.len, &kn, NULL) == OPSTATE_OK);
        kb.ptr = key;
        kb.len = kn;
        FUZZ_ASSERT(opstate_subject_build(prefix, pl, parts.scope, parts.kind, kb, again, size,
                                          &n, NULL) == OPSTATE_OK);
        FUZZ_ASSERT(n == size);
        FUZZ_ASSERT(memcmp(again, data, size) == 0);
        free(key);
        free(again);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_token(data, size);
    fuzz_prefix(data, size);
    fuzz_unescape(data, size);
    fuzz_escape(data, size);
    fuzz_parse_under(data, size, "ops");
    fuzz_parse_under(data, size, "a.b");
    return 0;
}
