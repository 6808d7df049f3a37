/* lmdb_helpers.h — what the LMDB companion's test files share
   (test_lmdb_env.c, test_lmdb_store.c, test_lmdb_log.c, test_lmdb_export.c,
   test_lmdb_integrity.c): temp directories, opening an environment and a
   store the way the tests do, folds compared item by item against an
   oracle, forked children that report one byte, whole files read and
   written. Everything here is static and marked unused, so each file
   takes what it needs. Needs POSIX (mkdtemp, fork): the Makefile builds
   the LMDB tests with -D_POSIX_C_SOURCE=200809L. */
#ifndef LMDB_HELPERS_H
#define LMDB_HELPERS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <unistd.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>

#include "../opstate_lmdb.h"
#include "test_bytes.h"

#if defined(__GNUC__) || defined(__clang__)
#define LMDB_HELPERS_FN static __attribute__((unused))
#else
#define LMDB_HELPERS_FN static
#endif

LMDB_HELPERS_FN opstate_snapshot_meta smeta(uint32_t schema, uint64_t seq, int64_t time, uint64_t epoch)
{
    opstate_snapshot_meta m;
    m.schema_version = schema;
    m.position.seq = seq;
    m.position.time = time;
    m.position.epoch = epoch;
    return m;
}

LMDB_HELPERS_FN opstate_id mkid(uint8_t n)
{
    opstate_id id;
    memset(&id, 0, sizeof id);
    id.bytes[0] = n;
    id.bytes[6] = 0x70; /* version 7 */
    id.bytes[8] = 0x80;
    id.bytes[15] = (uint8_t)(n * 7u + 1u);
    return id;
}

/* A fresh directory /tmp/opstate-lmdb-XXXXXX; "" on failure. */
LMDB_HELPERS_FN void tmp_dir(char out[64])
{
    strcpy(out, "/tmp/opstate-lmdb-XXXXXX");
    if (!mkdtemp(out)) out[0] = '\0';
}

/* Removes a file or a directory tree (no symlinks followed). */
LMDB_HELPERS_FN void rm_rf(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0) return;
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        struct dirent *ent;
        char child[4096];
        while (d && (ent = readdir(d)) != NULL) {
            if (!strcmp(ent->d_name, ".") || !strcmp(ent->d_name, "..")) continue;
            snprintf(child, sizeof child, "%s/%s", path, ent->d_name);
            rm_rf(child);
        }
        if (d) closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

LMDB_HELPERS_FN void join(char *out, size_t cap, const char *dir, const char *file)
{
    snprintf(out, cap, "%s/%s", dir, file);
}

LMDB_HELPERS_FN opstate_result env_open(const char *path, size_t map, size_t max, opstate_lmdb **out, opstate_error *err)
{
    opstate_lmdb_config c;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.map_size = map;
    c.max_map_size = max;
    c.durability = OPSTATE_LMDB_SYNC_NONE; /* tests never cut the power */
    return opstate_lmdb_open(&c, out, err);
}

LMDB_HELPERS_FN opstate_result store_open(opstate_lmdb *env, const char *name, bool rt, uint32_t flushes,
                                 opstate_lmdb_store **out, opstate_error *err)
{
    opstate_lmdb_store_config c;
    memset(&c, 0, sizeof c);
    c.name = name;
    c.read_through = rt;
    c.compact_flushes = flushes;
    c.compact_bytes = (uint64_t)1 << 40;
    c.no_compact_on_close = true; /* these tests look at the deltas a close leaves */
    return opstate_lmdb_store_open(env, &c, out, err);
}

LMDB_HELPERS_FN opstate_kv *kv_new(const opstate_kv_base *base)
{
    opstate_kv_config c;
    opstate_kv *kv = NULL;
    memset(&c, 0, sizeof c);
    c.base = base;
    if (opstate_kv_create(&c, &kv) != OPSTATE_OK) return NULL;
    return kv;
}

/* A dump of a fold: every live item (key, value, seq, time) in key order,
   as bytes, so two folds compare with one memcmp. */
typedef struct dump {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} dump;

LMDB_HELPERS_FN void dump_add(dump *d, const void *p, size_t n)
{
    if (d->oom) return;
    if (d->len + n > d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 4096;
        uint8_t *q;
        while (cap < d->len + n) cap *= 2;
        if (!(q = (uint8_t *)realloc(d->p, cap))) {
            d->oom = true;
            return;
        }
        d->p = q;
        d->cap = cap;
    }
    if (n) memcpy(d->p + d->len, p, n);
    d->len += n;
}

LMDB_HELPERS_FN bool dump_item(void *user, const opstate_kv_item *it)
{
    dump *d = (dump *)user;
    uint8_t h[24];
    opstate_put_le32(h, (uint32_t)it->key.len);
    opstate_put_le32(h + 4, (uint32_t)it->value.len);
    opstate_put_le64(h + 8, it->position.seq);
    opstate_put_le64(h + 16, (uint64_t)it->position.time);
    dump_add(d, h, sizeof h);
    dump_add(d, it->key.ptr, it->key.len);
    dump_add(d, it->value.ptr, it->value.len);
    return true;
}

/* true when both folds hold exactly the same items (and iterate cleanly). */
LMDB_HELPERS_FN bool same_state(const opstate_kv *a, const opstate_kv *b)
{
    dump da, db;
    bool same;
    memset(&da, 0, sizeof da);
    memset(&db, 0, sizeof db);
    same = opstate_kv_iterate(a, dump_item, &da) == OPSTATE_OK && opstate_kv_iterate(b, dump_item, &db) == OPSTATE_OK &&
           !da.oom && !db.oom && da.len == db.len && (da.len == 0 || memcmp(da.p, db.p, da.len) == 0) &&
           opstate_kv_count(a) == opstate_kv_count(b);
    free(da.p);
    free(db.p);
    return same;
}

/* Puts the same change into the fold under test and the oracle. */
LMDB_HELPERS_FN void put2(opstate_kv *kv, opstate_kv *oracle, const char *key, const char *value, uint64_t seq)
{
    opstate_kv_put(kv, str(key), str(value), pos(seq, (int64_t)seq * 1000));
    opstate_kv_put(oracle, str(key), str(value), pos(seq, (int64_t)seq * 1000));
}

LMDB_HELPERS_FN void del2(opstate_kv *kv, opstate_kv *oracle, const char *key, uint64_t seq)
{
    opstate_kv_delete(kv, str(key), pos(seq, (int64_t)seq * 1000));
    opstate_kv_delete(oracle, str(key), pos(seq, (int64_t)seq * 1000));
}

/* Fills kv and oracle with `n` keys "k-<i>" of 100-byte values. */
LMDB_HELPERS_FN void fill(opstate_kv *kv, opstate_kv *oracle, unsigned n, uint64_t seq0)
{
    char key[32], val[101];
    unsigned i;
    for (i = 0; i < n; i++) {
        snprintf(key, sizeof key, "k-%05u", i);
        memset(val, (int)('A' + i % 26), 100);
        val[100] = '\0';
        put2(kv, oracle, key, val, seq0 + i);
    }
}

/* The consumer's cycle over a store: flush; on OK mark the fold clean;
   then, when the store says a compaction is due (or overdue), compact and
   let a read-through fold forget what the store absorbed. */
LMDB_HELPERS_FN opstate_result flush_cycle(const opstate_store *s, opstate_kv *kv, const opstate_snapshot_meta *m,
                                           const opstate_dedup *dedup, opstate_error *err)
{
    opstate_result r = s->flush(s->user, kv, m, dedup, err);
    if (r != OPSTATE_OK) return r;
    opstate_kv_mark_clean(kv);
    if (!s->compact_due || s->compact_due(s->user) == OPSTATE_COMPACTION_NOT_DUE) return OPSTATE_OK;
    return opstate_store_compact(s, kv, err);
}

/* Compacts st now, then lets a read-through fold kv forget its clean
   entries (what the consumer does after a compaction). */
LMDB_HELPERS_FN opstate_result compact_and_forget(opstate_lmdb_store *st, opstate_kv *kv, opstate_error *err)
{
    opstate_store s = opstate_lmdb_store_iface(st);
    return opstate_store_compact(&s, kv, err);
}

/* Flushes `n` new keys of `vlen` bytes each (key "big-<i>") through the
   store interface; the oracle gets them only when the flush commits. */
LMDB_HELPERS_FN opstate_result flush_big_keys(opstate_store *s, opstate_kv *kv, opstate_kv *oracle, unsigned first, unsigned n,
                                size_t vlen, uint8_t *val, opstate_error *err)
{
    opstate_snapshot_meta m;
    opstate_result r;
    unsigned i;
    char key[32];
    for (i = first; i < first + n; i++) {
        snprintf(key, sizeof key, "big-%04u", i);
        memset(val, (int)('a' + i % 26), vlen);
        opstate_put_le32(val, i);
        if (opstate_kv_put(kv, str(key), by(val, vlen), pos(i + 1, (int64_t)i)) != OPSTATE_OK) return OPSTATE_NO_MEMORY;
    }
    m = smeta(1, first + n, (int64_t)(first + n), 42);
    memset(err, 0, sizeof *err);
    r = flush_cycle(s, kv, &m, NULL, err);
    if (r == OPSTATE_OK)
        for (i = first; i < first + n; i++) {
            snprintf(key, sizeof key, "big-%04u", i);
            memset(val, (int)('a' + i % 26), vlen);
            opstate_put_le32(val, i);
            opstate_kv_put(oracle, str(key), by(val, vlen), pos(i + 1, (int64_t)i));
        }
    return r;
}

/* Forked children report one byte through a pipe, then wait to be killed
   by the parent: no atexit handler of the test program runs in them, and
   valgrind makes no leak report for the parent's heap they inherited (a
   child that exits is leak-checked, and the parent's blocks it cannot see
   fail it).

       pid_t pid = child_start(&fd);        -1: pipe or fork failed
       if (pid == 0) child_finish(fd, work());      in the child
       code = child_wait(pid, fd);          its code, -1 if it died first

   child_start returns fork's pid; *fd is the pipe's write end in the
   child and its read end in the parent. */
LMDB_HELPERS_FN pid_t child_start(int *fd)
{
    int fds[2];
    pid_t pid;
    if (pipe(fds) != 0) return -1;
    fflush(stdout);
    if ((pid = fork()) < 0) {
        close(fds[0]);
        close(fds[1]);
        return -1;
    }
    close(pid == 0 ? fds[0] : fds[1]);
    *fd = pid == 0 ? fds[1] : fds[0];
    return pid;
}

/* In the child: reports code (0..255) and waits to be killed. */
LMDB_HELPERS_FN void child_finish(int fd, int code)
{
    unsigned char c = (unsigned char)code;
    if (write(fd, &c, 1) == 1) close(fd);
    for (;;) pause();
}

/* Waits for a child started with a pipe and ends it; its code, or -1. */
LMDB_HELPERS_FN int child_wait(pid_t pid, int fd)
{
    unsigned char c = 0;
    ssize_t n;
    int status;
    do n = read(fd, &c, 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return n == 1 ? (int)c : -1;
}

/* Reads a whole file, NUL-terminated (so a text file is a string); NULL
   when it cannot. *len (when len is not NULL) gets its length. */
LMDB_HELPERS_FN char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *buf = NULL;
    long n;
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (buf = (char *)malloc((size_t)n + 1)) != NULL) {
        if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
            free(buf);
            buf = NULL;
        } else {
            buf[n] = '\0';
            if (len) *len = (size_t)n;
        }
    }
    fclose(f);
    return buf;
}

/* Writes n bytes at p as the whole file path. */
LMDB_HELPERS_FN bool write_file(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    bool ok;
    if (!f) return false;
    ok = fwrite(p, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}

#endif /* LMDB_HELPERS_H */
