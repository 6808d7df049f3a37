/* test_lmdb_integrity.c — storage integrity and ownership of the LMDB
   companion (DESIGN.md "Storage integrity", "Ownership"): sealed log
   records (a flipped sequence key or time is CORRUPT), data files checked
   before they are mapped (every truncation is a clean result, never
   SIGBUS), read-only opens that change no byte, one writer process per
   environment (LOCKED, and a killed holder never blocks), the layout-0 log
   migration, and opstate_lmdb_verify. Damage is done to real files. */
#include "runner.h"
#include "../opstate_lmdb.h"
#include "lmdb_helpers.h"
#include <lmdb.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define EVENTS 40

typedef struct integ {
    char dir[64], file[96];
    opstate_lmdb *env;
    opstate_lmdb_log *lg;
    opstate_log log;
} integ;

static opstate_result integ_open(integ *t, opstate_lmdb_access access, opstate_error *err)
{
    opstate_lmdb_config c;
    opstate_result r;
    memset(&c, 0, sizeof c);
    c.path = t->dir;
    c.access = access;
    c.durability = OPSTATE_LMDB_SYNC_NONE;
    t->env = NULL;
    t->lg = NULL;
    if ((r = opstate_lmdb_open(&c, &t->env, err)) != OPSTATE_OK) return r;
    if ((r = opstate_lmdb_log_open(t->env, NULL, &t->lg, err)) != OPSTATE_OK) {
        opstate_lmdb_close(t->env);
        t->env = NULL;
        return r;
    }
    t->log = opstate_lmdb_log_iface(t->lg);
    return OPSTATE_OK;
}

static void integ_close(integ *t)
{
    opstate_lmdb_log_close(t->lg);
    opstate_lmdb_close(t->env);
    t->lg = NULL;
    t->env = NULL;
}

/* A fresh empty directory in t (nothing open); t->file names its data.mdb. */
static bool integ_empty_dir(integ *t)
{
    memset(t, 0, sizeof *t);
    strcpy(t->dir, "/tmp/opstate-integ-XXXXXX");
    if (!mkdtemp(t->dir)) return false;
    snprintf(t->file, sizeof t->file, "%s/data.mdb", t->dir);
    return true;
}

/* A fresh directory with a log of EVENTS messages "MARK-<seq>", each
   followed by `pad` bytes (a padded log spans several leaf pages), closed. */
static bool integ_make_padded(integ *t, size_t pad)
{
    char data[512];
    opstate_append_result res;
    int i;
    if (!integ_empty_dir(t) || integ_open(t, OPSTATE_LMDB_CREATE, NULL) != OPSTATE_OK) return false;
    for (i = 1; i <= EVENTS; i++) {
        opstate_bytes subject = {(const uint8_t *)"ops.a.b.c", 9}, payload;
        snprintf(data, sizeof data, "MARK-%03d", i);
        memset(data + 8, '.', pad);
        payload.ptr = (const uint8_t *)data;
        payload.len = 8 + pad;
        if (t->log.append(t->log.user, subject, payload, NULL, &res, NULL) != OPSTATE_OK) return false;
    }
    integ_close(t);
    return true;
}

static bool integ_make(integ *t) { return integ_make_padded(t, 0); }

static void integ_remove(const integ *t) { rm_rf(t->dir); }

/* XORs byte `back` bytes before the payload "MARK-<seq>" (0: its first). */
static bool flip_before(const char *file, int seq, size_t back)
{
    char mark[16];
    size_t len = 0, i, n;
    uint8_t *b = (uint8_t *)read_file(file, &len);
    bool ok = false;
    snprintf(mark, sizeof mark, "MARK-%03d", seq);
    n = strlen(mark);
    for (i = back; b && i + n <= len; i++)
        if (memcmp(b + i, mark, n) == 0) {
            b[i - back] ^= 0x01;
            ok = true;
        }
    ok = ok && write_file(file, b, len);
    free(b);
    return ok;
}

/* Reads the whole log: its result, and how many messages came. */
static opstate_result read_all(integ *t, size_t *n)
{
    opstate_log_message msgs[EVENTS + 1];
    opstate_result r = t->log.read(t->log.user, str(NULL), 1, 0, msgs, EVENTS + 1, n, NULL);
    return r;
}

/* How a child that opens the log read-only and reads it all ends (so that
   a signal is seen, not suffered): the code it reports (child_finish), or
   READ_KILLED when it died before reporting; -1 when it could not start. */
enum { READ_WHOLE = 0, READ_CORRUPT = 1, READ_NOT_FOUND = 2, READ_OTHER = 8, READ_SHORT = 9 /* silent wrong */,
       READ_KILLED = 10 };

static int read_in_child(integ *t)
{
    int fd, code;
    pid_t pid = child_start(&fd);
    if (pid < 0) return -1;
    if (pid == 0) {
        size_t n = 0;
        opstate_result r = integ_open(t, OPSTATE_LMDB_READ_ONLY, NULL);
        if (r == OPSTATE_OK) r = read_all(t, &n);
        if (r == OPSTATE_OK) child_finish(fd, n == EVENTS ? READ_WHOLE : READ_SHORT);
        child_finish(fd, r == OPSTATE_CORRUPT ? READ_CORRUPT : r == OPSTATE_NOT_FOUND ? READ_NOT_FOUND : READ_OTHER);
    }
    code = child_wait(pid, fd);
    return code < 0 ? READ_KILLED : code;
}

/* Every field of a message record is sealed: a flipped bit in the
   sequence key, the publish time, the subject or the payload stops a read
   with CORRUPT before the damaged record; verify names it. */
TEST(lmdb_integrity, flipped_log_record_is_corrupt)
{
    /* bytes before the payload "MARK-020" (record: key 8 | time 8 | id 16 |
       has id | subject length 2 | subject 9 | payload | seal): the payload,
       the subject, the has-id byte, the id, the time, the sequence key */
    static const size_t backs[] = {0, 1, 12, 20, 30, 37};
    size_t i;
    for (i = 0; i < sizeof backs / sizeof backs[0]; i++) {
        integ t;
        size_t n = 0;
        opstate_lmdb_verify_report rep;
        opstate_error err;
        REQUIRE(integ_make(&t));
        CHECK(flip_before(t.file, 20, backs[i]));
        REQUIRE(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_OK);
        memset(&err, 0, sizeof err);
        CHECK(read_all(&t, &n) == OPSTATE_CORRUPT);
        CHECK_EQ_U64(n, 0); /* nothing of a batch that holds a bad record */
        CHECK(opstate_lmdb_verify(t.env, &rep, &err) == OPSTATE_CORRUPT);
        CHECK(strstr(rep.where, "l:events:msgs") != NULL);
        integ_close(&t);
        integ_remove(&t);
    }
}

/* Truncation at every page boundary (and mid-page): opening and reading
   is a clean result in a child process — never a signal — and whatever
   reads OK is exactly the log. */
TEST(lmdb_integrity, truncation_never_kills)
{
    integ t;
    size_t len = 0, cut, reads_ok = 0, refused = 0;
    uint8_t *whole;
    REQUIRE(integ_make(&t));
    REQUIRE((whole = (uint8_t *)read_file(t.file, &len)) != NULL);
    for (cut = 0; cut <= len; cut += 2048) {
        int code;
        REQUIRE(write_file(t.file, whole, cut));
        code = read_in_child(&t);
        CHECK(code == READ_WHOLE || code == READ_CORRUPT || code == READ_NOT_FOUND);
        reads_ok += code == READ_WHOLE;
        refused += code == READ_CORRUPT || code == READ_NOT_FOUND;
    }
    CHECK(refused > 0);
    CHECK(reads_ok > 0); /* the whole file */
    free(whole);
    integ_remove(&t);
}

/* An empty data.mdb is not a new log: NOT_FOUND for every access, and a
   read-only open of a directory creates nothing. */
TEST(lmdb_integrity, empty_or_missing_file_is_not_found)
{
    integ t;
    struct stat sb;
    char lock[96];
    REQUIRE(integ_empty_dir(&t));
    snprintf(lock, sizeof lock, "%s/lock.mdb", t.dir);
    CHECK(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_NOT_FOUND);
    CHECK(integ_open(&t, OPSTATE_LMDB_EXISTING, NULL) == OPSTATE_NOT_FOUND);
    CHECK(stat(t.file, &sb) != 0 && stat(lock, &sb) != 0);
    REQUIRE(write_file(t.file, (const uint8_t *)"", 0));
    CHECK(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_NOT_FOUND);
    CHECK(integ_open(&t, OPSTATE_LMDB_CREATE, NULL) == OPSTATE_NOT_FOUND);
    CHECK(stat(t.file, &sb) == 0 && sb.st_size == 0); /* left as it was */
    integ_remove(&t);
}

/* Looking never writes: info, reads, verify, and a store opened read-only
   with pending deltas (no compaction at close) leave data.mdb as it was. */
TEST(lmdb_integrity, read_only_changes_nothing)
{
    integ t;
    opstate_stream_info info;
    opstate_lmdb_store_config sc;
    opstate_lmdb_store *st = NULL;
    opstate_lmdb_verify_report rep;
    opstate_append_result res;
    size_t before_len = 0, after_len = 0, n = 0;
    uint8_t *before, *after;
    REQUIRE(integ_make(&t));
    REQUIRE((before = (uint8_t *)read_file(t.file, &before_len)) != NULL);
    REQUIRE(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_OK);
    CHECK(t.log.info(t.log.user, &info, NULL) == OPSTATE_OK && info.last_seq == EVENTS);
    CHECK(read_all(&t, &n) == OPSTATE_OK && n == EVENTS);
    CHECK(opstate_lmdb_verify(t.env, &rep, NULL) == OPSTATE_OK && rep.logs == 1 && rep.records > EVENTS);
    CHECK(t.log.append(t.log.user, str("x"), str("y"), NULL, &res, NULL) != OPSTATE_OK);
    memset(&sc, 0, sizeof sc);
    sc.name = "absent";
    CHECK(opstate_lmdb_store_open(t.env, &sc, &st, NULL) == OPSTATE_CONFLICT); /* a log's directory holds no store */
    integ_close(&t);
    REQUIRE((after = (uint8_t *)read_file(t.file, &after_len)) != NULL);
    CHECK(before_len == after_len && memcmp(before, after, before_len) == 0);
    free(before);
    free(after);
    integ_remove(&t);
}

/* One writer process: a second writer is LOCKED and told the holder's pid;
   readers are welcome; a holder killed with SIGKILL never blocks. */
TEST(lmdb_integrity, second_writer_is_locked)
{
    integ t, reader;
    opstate_error err;
    int fds[2];
    char c = 0;
    pid_t pid;
    REQUIRE(integ_make(&t));
    REQUIRE(pipe(fds) == 0);
    fflush(stdout);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
        char ok = integ_open(&t, OPSTATE_LMDB_CREATE, NULL) == OPSTATE_OK ? 'y' : 'n';
        if (write(fds[1], &ok, 1) != 1) _exit(1);
        for (;;) pause();
    }
    CHECK(read(fds[0], &c, 1) == 1 && c == 'y');
    memset(&err, 0, sizeof err);
    CHECK(integ_open(&t, OPSTATE_LMDB_CREATE, &err) == OPSTATE_LOCKED);
    CHECK_EQ_U64((uint64_t)err.dep_status, (uint64_t)pid);
    CHECK(integ_open(&t, OPSTATE_LMDB_EXISTING, NULL) == OPSTATE_LOCKED);
    reader = t;
    CHECK(integ_open(&reader, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_OK);
    integ_close(&reader);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    CHECK(integ_open(&t, OPSTATE_LMDB_CREATE, NULL) == OPSTATE_OK);
    integ_close(&t);
    close(fds[0]);
    close(fds[1]);
    integ_remove(&t);
}

/* Strips the seal from every value of database `name` (the 0.1 layout). */
static int unseal(MDB_txn *txn, const char *name)
{
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    uint8_t key[600], val[600];
    int rc = mdb_dbi_open(txn, name, 0, &dbi);
    if (rc == 0) rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        memcpy(key, k.mv_data, k.mv_size);
        memcpy(val, v.mv_data, v.mv_size - 4);
        k.mv_data = key;
        v.mv_data = val;
        v.mv_size -= 4;
        if ((rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT)) != 0) break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Rewrites the log as opstate 0.1 wrote it: no seals, a 32-byte info. */
static bool make_layout0(const char *dir)
{
    static const char *const dbs[] = {"l:events:msgs", "l:events:subj", "l:events:bysubj", "l:events:ids",
                                      "l:events:idseq", "l:events:meta"};
    MDB_env *env;
    MDB_txn *txn;
    int rc = mdb_env_create(&env), i;
    if (rc == 0 && (rc = mdb_env_set_maxdbs(env, 16)) == 0 && (rc = mdb_env_open(env, dir, 0, 0600)) == 0 &&
        (rc = mdb_txn_begin(env, NULL, 0, &txn)) == 0) {
        for (i = 0; i < 6 && rc == 0; i++) rc = unseal(txn, dbs[i]);
        if (rc == 0) rc = mdb_txn_commit(txn); /* the info record keeps its layout field: cut below */
        else mdb_txn_abort(txn);
    }
    if (rc == 0 && (rc = mdb_txn_begin(env, NULL, 0, &txn)) == 0) {
        MDB_dbi meta;
        MDB_val k, v;
        uint8_t info[32];
        k.mv_size = 4;
        k.mv_data = (void *)(uintptr_t)"info";
        if ((rc = mdb_dbi_open(txn, "l:events:meta", 0, &meta)) == 0 && (rc = mdb_get(txn, meta, &k, &v)) == 0) {
            memcpy(info, v.mv_data, 32);
            v.mv_data = info;
            v.mv_size = 32;
            rc = mdb_put(txn, meta, &k, &v, 0);
        }
        if (rc == 0) rc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc == 0;
}

/* A 0.1 log: a read-only open refuses it and says how to migrate; a
   read-write open migrates it in one transaction, every message intact. */
TEST(lmdb_integrity, layout0_log_is_migrated)
{
    integ t;
    opstate_error err;
    opstate_log_message msgs[EVENTS + 1];
    size_t n = 0;
    REQUIRE(integ_make(&t));
    REQUIRE(make_layout0(t.dir));
    memset(&err, 0, sizeof err);
    CHECK(integ_open(&t, OPSTATE_LMDB_READ_ONLY, &err) == OPSTATE_UNKNOWN_VERSION);
    CHECK(err.field && strstr(err.field, "migrate") != NULL);
    REQUIRE(integ_open(&t, OPSTATE_LMDB_CREATE, NULL) == OPSTATE_OK);
    CHECK(t.log.read(t.log.user, str(NULL), 1, 0, msgs, EVENTS + 1, &n, NULL) == OPSTATE_OK);
    CHECK_EQ_U64(n, EVENTS);
    if (n == EVENTS) CHECK(msgs[19].data.len == 8 && memcmp(msgs[19].data.ptr, "MARK-020", 8) == 0);
    integ_close(&t);
    REQUIRE(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_OK);
    CHECK(read_all(&t, &n) == OPSTATE_OK && n == EVENTS);
    integ_close(&t);
    integ_remove(&t);
}

/* A forged export: data.mdb cut short and a manifest recomputed to match
   it. Import checks the file before it maps it: CORRUPT, never SIGBUS. */
TEST(lmdb_integrity, forged_truncated_export_is_corrupt)
{
    integ t;
    char exp[128], data[160], manifest[160], dest[128];
    size_t len = 0;
    uint8_t *b;
    FILE *f;
    pid_t pid;
    int status = 0;
    REQUIRE(integ_make(&t));
    snprintf(exp, sizeof exp, "%s/export", t.dir);
    snprintf(dest, sizeof dest, "%s/imported", t.dir);
    snprintf(data, sizeof data, "%s/data.mdb", exp);
    snprintf(manifest, sizeof manifest, "%s/MANIFEST", exp);
    REQUIRE(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_OK);
    CHECK(opstate_lmdb_export(t.env, exp, NULL) == OPSTATE_OK);
    integ_close(&t);
    REQUIRE((b = (uint8_t *)read_file(data, &len)) != NULL && len > 3 * 4096);
    REQUIRE(write_file(data, b, 3 * 4096));
    REQUIRE((f = fopen(manifest, "w")) != NULL);
    fprintf(f, "opstate-lmdb-export %d\nfile data.mdb %llu %08lx\nend\n", OPSTATE_LMDB_MANIFEST_VERSION,
            (unsigned long long)(3 * 4096), (unsigned long)opstate_crc32c(0, b, 3 * 4096));
    fclose(f);
    free(b);
    fflush(stdout);
    pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(opstate_lmdb_import(exp, dest, NULL) == OPSTATE_CORRUPT ? 0 : 1);
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    integ_remove(&t);
}

/* Runs fn on the raw LMDB database `name` of dir, in a write transaction. */
static bool raw_edit(const char *dir, const char *name, int (*fn)(MDB_txn *, MDB_dbi))
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    int rc = mdb_env_create(&env);
    if (rc == 0 && (rc = mdb_env_set_maxdbs(env, 16)) == 0 && (rc = mdb_env_open(env, dir, 0, 0600)) == 0 &&
        (rc = mdb_txn_begin(env, NULL, 0, &txn)) == 0) {
        rc = mdb_dbi_open(txn, name, 0, &dbi);
        if (rc == 0) rc = fn(txn, dbi);
        if (rc == 0) rc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
    }
    mdb_env_close(env);
    return rc == 0;
}

/* Puts message 40's record again under sequence `seq`, with a good seal. */
static int sealed_copy_of_40(MDB_txn *txn, MDB_dbi dbi, uint8_t seq)
{
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 40}, copy[128];
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != 0 || v.mv_size > sizeof copy) return rc ? rc : MDB_BAD_VALSIZE;
    memcpy(copy, v.mv_data, v.mv_size);
    key[7] = seq;
    opstate_put_le32(copy + v.mv_size - 4, opstate_crc32c(opstate_crc32c(0, key, 8), copy, v.mv_size - 4));
    v.mv_data = copy;
    return mdb_put(txn, dbi, &k, &v, 0);
}

static int sealed_beyond_last(MDB_txn *txn, MDB_dbi dbi) { return sealed_copy_of_40(txn, dbi, 45); }

/* Sequences 45 and 46 past the info's last, 20 and 21 dropped: the count
   of records still agrees with the info's, and a batch of EVENTS - 1
   messages from 1 ends on 45 with more to come (no end-of-log check). */
static int sealed_past_last_counted(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 20};
    MDB_val k = {8, key};
    int rc = sealed_copy_of_40(txn, dbi, 45);
    if (rc == 0) rc = sealed_copy_of_40(txn, dbi, 46);
    if (rc == 0) rc = mdb_del(txn, dbi, &k, NULL);
    key[7] = 21;
    return rc ? rc : mdb_del(txn, dbi, &k, NULL);
}

/* Message 30's record, kept between take_30 and put_30_after_19. */
static uint8_t moved_rec[128];
static size_t moved_len;

static int take_30(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 30};
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != 0 || v.mv_size > sizeof moved_rec) return rc ? rc : MDB_BAD_VALSIZE;
    memcpy(moved_rec, v.mv_data, v.mv_size);
    moved_len = v.mv_size;
    return mdb_del(txn, dbi, &k, NULL);
}

/* An order in which sequence 30 sorts between 19 and 20. */
static int seq30_after_19(const MDB_val *a, const MDB_val *b)
{
    int x = ((const uint8_t *)a->mv_data)[7] * 2, y = ((const uint8_t *)b->mv_data)[7] * 2; /* all below 256 */
    if (x == 60) x = 39;
    if (y == 60) y = 39;
    return x < y ? -1 : x > y;
}

/* Puts message 30's intact record back where sequence 19.5 would go: the
   file then holds 19, 30, 20, ... in key order. */
static int put_30_after_19(MDB_txn *txn, MDB_dbi dbi)
{
    uint8_t key[8] = {0, 0, 0, 0, 0, 0, 0, 30};
    MDB_val k = {8, key}, v = {moved_len, moved_rec};
    int rc = mdb_set_compare(txn, dbi, seq30_after_19);
    return rc ? rc : mdb_put(txn, dbi, &k, &v, 0);
}

/* Flips one bit of the info record's epoch, leaving its seal. */
static int flip_info(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_val k = {4, (void *)(uintptr_t)"info"}, v;
    uint8_t copy[64];
    int rc = mdb_get(txn, dbi, &k, &v);
    if (rc != 0 || v.mv_size > sizeof copy) return rc ? rc : MDB_BAD_VALSIZE;
    memcpy(copy, v.mv_data, v.mv_size);
    copy[0] ^= 1;
    v.mv_data = copy;
    return mdb_put(txn, dbi, &k, &v, 0);
}

/* Well-sealed records in a wrong place are CORRUPT: one beyond the info's
   last sequence (added, or with a record dropped so that the count still
   agrees and a batch ends on it) and
   one stored out of key order (19, 30, 20: a sequence that goes back); so
   is an info record whose seal does not match. */
typedef int (*msgs_edit)(MDB_txn *, MDB_dbi);

/* A fresh log whose messages `first` then `then` (may be NULL) edit: a
   read of `max` messages from 1 and opstate_lmdb_verify are CORRUPT. */
static void edited_log_is_corrupt(msgs_edit first, msgs_edit then, size_t max)
{
    integ t;
    opstate_log_message msgs[EVENTS + 1];
    opstate_lmdb_verify_report rep;
    size_t n = 0;
    REQUIRE(integ_make(&t));
    REQUIRE(raw_edit(t.dir, "l:events:msgs", first) && (!then || raw_edit(t.dir, "l:events:msgs", then)));
    REQUIRE(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_OK);
    CHECK(t.log.read(t.log.user, str(NULL), 1, 0, msgs, max, &n, NULL) == OPSTATE_CORRUPT);
    CHECK(opstate_lmdb_verify(t.env, &rep, NULL) == OPSTATE_CORRUPT);
    integ_close(&t);
    integ_remove(&t);
}

TEST(lmdb_integrity, sequences_only_go_forward)
{
    integ t;
    edited_log_is_corrupt(sealed_beyond_last, NULL, EVENTS + 1);
    edited_log_is_corrupt(sealed_past_last_counted, NULL, EVENTS - 1);
    edited_log_is_corrupt(take_30, put_30_after_19, EVENTS + 1);
    REQUIRE(integ_make(&t));
    REQUIRE(raw_edit(t.dir, "l:events:meta", flip_info));
    CHECK(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_CORRUPT);
    CHECK(integ_open(&t, OPSTATE_LMDB_CREATE, NULL) == OPSTATE_CORRUPT);
    integ_remove(&t);
}

/* Only CREATE creates: an EXISTING open of a log that is not there is
   NOT_FOUND and adds nothing to the environment. */
TEST(lmdb_integrity, existing_access_creates_nothing)
{
    integ t;
    opstate_lmdb_config c;
    opstate_lmdb_log_config lc;
    opstate_lmdb_log *lg = NULL;
    size_t logs = 0, stores = 0;
    REQUIRE(integ_make(&t));
    memset(&c, 0, sizeof c);
    memset(&lc, 0, sizeof lc);
    c.path = t.dir;
    c.access = OPSTATE_LMDB_EXISTING;
    lc.name = "other";
    REQUIRE(opstate_lmdb_open(&c, &t.env, NULL) == OPSTATE_OK);
    CHECK(opstate_lmdb_log_open(t.env, &lc, &lg, NULL) == OPSTATE_NOT_FOUND);
    CHECK(opstate_lmdb_contents(t.env, &logs, &stores, NULL) == OPSTATE_OK && logs == 1 && stores == 0);
    opstate_lmdb_close(t.env);
    integ_remove(&t);
}

static int drop_last_delta(MDB_txn *txn, MDB_dbi dbi)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc == 0 && (rc = mdb_cursor_get(cur, &k, &v, MDB_LAST)) == 0) rc = mdb_cursor_del(cur, 0);
    mdb_cursor_close(cur);
    return rc;
}

/* A delta record lost from the chain (the meta counts three, two are
   there) is CORRUPT at load and in verify, never a silently older state. */
TEST(lmdb_integrity, lost_delta_record_is_corrupt)
{
    integ t;
    opstate_lmdb_store_config sc;
    opstate_lmdb_store *st = NULL;
    opstate_kv_config kc;
    opstate_kv *kv = NULL;
    opstate_snapshot_meta meta;
    opstate_store s;
    opstate_lmdb_verify_report rep;
    uint64_t i;
    REQUIRE(integ_make(&t));
    memset(&sc, 0, sizeof sc);
    memset(&kc, 0, sizeof kc);
    memset(&meta, 0, sizeof meta);
    sc.name = "state";
    sc.no_compact_on_close = true;
    REQUIRE(integ_open(&t, OPSTATE_LMDB_CREATE, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_store_open(t.env, &sc, &st, NULL) == OPSTATE_OK);
    REQUIRE(opstate_kv_create(&kc, &kv) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    for (i = 1; i <= 3; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%u", (unsigned)i);
        meta.position.seq = i;
        CHECK(opstate_kv_put(kv, str(key), str("v"), meta.position) == OPSTATE_OK);
        CHECK(flush_cycle(&s, kv, &meta, NULL, NULL) == OPSTATE_OK);
    }
    opstate_lmdb_store_close(st);
    integ_close(&t);
    REQUIRE(raw_edit(t.dir, "s:state:deltas", drop_last_delta));
    REQUIRE(integ_open(&t, OPSTATE_LMDB_READ_ONLY, NULL) == OPSTATE_OK);
    REQUIRE(opstate_lmdb_store_open(t.env, &sc, &st, NULL) == OPSTATE_OK);
    s = opstate_lmdb_store_iface(st);
    opstate_kv_clear(kv);
    CHECK(s.load(s.user, kv, &meta, NULL, NULL) == OPSTATE_CORRUPT);
    CHECK(opstate_lmdb_verify(t.env, &rep, NULL) == OPSTATE_CORRUPT && strstr(rep.where, "s:state:meta") != NULL);
    opstate_lmdb_store_close(st);
    integ_close(&t);
    opstate_kv_destroy(kv);
    integ_remove(&t);
}

/* Changes the key count in the header of the leaf page that holds payload
   "MARK-<seq>" by `delta` node pointers (records hidden from a reader, or
   garbage pointers shown to it). */
static bool shrink_leaf(const char *file, int seq, int delta)
{
    char mark[16];
    size_t len = 0, i, n, page;
    uint8_t *b = (uint8_t *)read_file(file, &len);
    uint16_t lower;
    bool ok = false;
    snprintf(mark, sizeof mark, "MARK-%03d", seq);
    n = strlen(mark);
    for (i = 0; b && !ok && i + n <= len; i++)
        if (memcmp(b + i, mark, n) == 0) {
            page = i / 4096 * 4096;
            memcpy(&lower, b + page + sizeof(size_t) + 4, 2);
            lower = (uint16_t)(lower + 2 * delta);
            memcpy(b + page + sizeof(size_t) + 4, &lower, 2);
            ok = true;
        }
    ok = ok && write_file(file, b, len);
    free(b);
    return ok;
}

/* A leaf page whose header counts one key fewer than it holds: the read
   stops with CORRUPT instead of quietly missing the page's last record —
   the log's only page, and the first of a log of several pages (where the
   walk still reaches the newest message: only the page check sees it). */
TEST(lmdb_integrity, leaf_page_hiding_records_is_corrupt)
{
    integ t;
    REQUIRE(integ_make(&t));
    REQUIRE(shrink_leaf(t.file, EVENTS, -1));
    CHECK(read_in_child(&t) == READ_CORRUPT);
    integ_remove(&t);
    REQUIRE(integ_make_padded(&t, 300));
    REQUIRE(shrink_leaf(t.file, 1, -1));
    CHECK(read_in_child(&t) == READ_CORRUPT);
    integ_remove(&t);
}

/* The first leaf page's key count damaged both ways: a read from the start
   (its seek lands past the hidden records) is CORRUPT, never a shorter log. */
TEST(lmdb_integrity, first_leaf_page_damaged_is_corrupt)
{
    static const int deltas[] = {-1, -3, 40};
    size_t i;
    for (i = 0; i < sizeof deltas / sizeof deltas[0]; i++) {
        integ t;
        int code;
        REQUIRE(integ_make(&t));
        REQUIRE(shrink_leaf(t.file, 1, deltas[i]));
        code = read_in_child(&t);
        CHECK(code != -1);
        /* a crash in LMDB's page walk is LMDB's */
        CHECK(code == READ_KILLED || code == READ_CORRUPT || code == READ_WHOLE);
        integ_remove(&t);
    }
}

/* The page number of the main table's root page (the newer meta's
   mm_dbs[MAIN_DBI].md_root) and of the page holding "MARK-<seq>". */
static bool find_pages(const uint8_t *b, size_t len, int seq, uint64_t *root, uint64_t *mark_page)
{
    char mark[16];
    uint64_t txn0, txn1;
    size_t i, n;
    if (len < 3 * 4096) return false;
    memcpy(&txn0, b + 144, 8); /* mm_txnid of meta 0 and 1 */
    memcpy(&txn1, b + 4096 + 144, 8);
    memcpy(root, b + (txn1 > txn0 ? 4096 : 0) + 128, 8);
    snprintf(mark, sizeof mark, "MARK-%03d", seq);
    n = strlen(mark);
    for (i = 0; i + n <= len; i++)
        if (memcmp(b + i, mark, n) == 0) {
            *mark_page = i / 4096;
            return *root < len / 4096;
        }
    return false;
}

/* Writes `pgno` into the page header of the main table's root page;
   *mark_page: the page holding "MARK-<seq>". */
static bool damage_root_number(const char *file, int seq, uint64_t pgno, uint64_t *root, uint64_t *mark_page)
{
    size_t len = 0;
    uint8_t *b = (uint8_t *)read_file(file, &len);
    bool ok = b && find_pages(b, len, seq, root, mark_page);
    if (ok) memcpy(b + *root * 4096, &pgno, 8);
    ok = ok && write_file(file, b, len);
    free(b);
    return ok;
}

static void note_diag(void *user, opstate_diag_level level, const char *message)
{
    (void)level;
    if (strstr(message, "not found from its pages")) *(int *)user = 1;
}

/* Whether opening the environment read-only had to look for its map
   elsewhere than in its pages. */
static int map_not_found_from_pages(const integ *t)
{
    opstate_lmdb_config c;
    opstate_lmdb *env = NULL;
    int noted = 0;
    memset(&c, 0, sizeof c);
    c.path = t->dir;
    c.access = OPSTATE_LMDB_READ_ONLY;
    c.diag.fn = note_diag;
    c.diag.user = &noted;
    if (opstate_lmdb_open(&c, &env, NULL) != OPSTATE_OK) return -1;
    opstate_lmdb_close(env);
    return noted;
}

/* The map's start is found from the page number of the main table's root
   page. A damaged one — pointing below the map, far outside it, or at the
   second meta page — disagrees with the meta and is never trusted: the
   reader looks elsewhere and still checks pages against the right start
   (a damaged leaf is CORRUPT). An undamaged environment needs no other
   source. */
TEST(lmdb_integrity, damaged_page_number_never_misplaces_the_map)
{
    uint64_t root = 0, mark_page = 0;
    size_t i;
    for (i = 0; i < 4; i++) {
        integ t;
        REQUIRE(integ_make(&t));
        CHECK(map_not_found_from_pages(&t) == 0);
        REQUIRE(damage_root_number(t.file, EVENTS, 0, &root, &mark_page)); /* learns root; 0 for now */
        {
            uint64_t bogus[4] = {16383, (uint64_t)1 << 40, root - 1, root + 1};
            REQUIRE(root >= 2);
            REQUIRE(damage_root_number(t.file, EVENTS, bogus[i], &root, &mark_page));
        }
        CHECK(map_not_found_from_pages(&t) == 1);
        REQUIRE(shrink_leaf(t.file, EVENTS, -1));
        CHECK(read_in_child(&t) == READ_CORRUPT);
        integ_remove(&t);
    }
}

/* Sets the page count of every overflow page whose value starts with
   `mark` 16 bytes in (a table record, and a delta record of one key of
   three bytes) to `pages`. */
static bool damage_overflow_count(const char *file, const char *mark, uint32_t pages)
{
    size_t len = 0, page, hdr = sizeof(size_t) + 8;
    uint8_t *b = (uint8_t *)read_file(file, &len);
    bool ok = false;
    for (page = 0; b && page + 4096 <= len; page += 4096)
        if (memcmp(b + page + hdr + 16, mark, strlen(mark)) == 0) {
            memcpy(b + page + sizeof(size_t) + 4, &pages, 4);
            ok = true;
        }
    ok = ok && write_file(file, b, len);
    free(b);
    return ok;
}

/* Flushes key "big" = `value` at `seq` and compacts; the result. */
static opstate_result flush_big(integ *t, opstate_lmdb_access access, const char *value, uint64_t seq)
{
    opstate_lmdb_store_config sc;
    opstate_lmdb_store *st = NULL;
    opstate_kv_config kc;
    opstate_kv *kv = NULL;
    opstate_snapshot_meta meta;
    opstate_store s;
    opstate_lmdb_config ec;
    opstate_result r;
    memset(&sc, 0, sizeof sc);
    memset(&kc, 0, sizeof kc);
    memset(&meta, 0, sizeof meta);
    sc.name = "state";
    sc.no_compact_on_close = true;
    memset(&ec, 0, sizeof ec);
    ec.path = t->dir;
    ec.access = access;
    if ((r = opstate_lmdb_open(&ec, &t->env, NULL)) != OPSTATE_OK) return r;
    if ((r = opstate_lmdb_store_open(t->env, &sc, &st, NULL)) == OPSTATE_OK &&
        (r = opstate_kv_create(&kc, &kv)) == OPSTATE_OK) {
        s = opstate_lmdb_store_iface(st);
        meta.position.seq = seq;
        r = opstate_kv_put(kv, str("big"), str(value), meta.position);
        if (r == OPSTATE_OK) r = flush_cycle(&s, kv, &meta, NULL, NULL);
        if (r == OPSTATE_OK) r = opstate_lmdb_store_compact(st, NULL);
    }
    opstate_kv_destroy(kv);
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(t->env);
    return r;
}

/* A table value on overflow pages whose page count is damaged: compaction
   replacing it stops with CORRUPT (LMDB would free the pages the count
   claims, and hang or fault doing so), within a bounded time. */
TEST(lmdb_integrity, compaction_over_damaged_overflow_is_corrupt)
{
    static char big[3 * 4096];
    integ t;
    int status = -1;
    pid_t pid;
    memset(big, 'x', sizeof big - 1);
    memcpy(big, "BIGVALUE-1", 10);
    REQUIRE(integ_empty_dir(&t));
    REQUIRE(flush_big(&t, OPSTATE_LMDB_CREATE, big, 1) == OPSTATE_OK);
    REQUIRE(damage_overflow_count(t.file, "BIGVALUE-1", 0x7fffffffu));
    memcpy(big, "BIGVALUE-2", 10);
    fflush(stdout);
    REQUIRE((pid = fork()) >= 0);
    if (pid == 0) {
        alarm(20);
        _exit(flush_big(&t, OPSTATE_LMDB_EXISTING, big, 2) == OPSTATE_CORRUPT ? 0 : 1);
    }
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
    integ_remove(&t);
}

/* Adds `delta` to the entry count LMDB keeps for database `name` (its
   record in the main database: the name, then an MDB_db whose md_entries
   lies 32 bytes in), in every copy of the record in the file. */
static bool damage_entry_count(const char *file, const char *name, int delta)
{
    size_t len = 0, n = strlen(name), i;
    uint8_t *b = (uint8_t *)read_file(file, &len);
    uint64_t entries;
    uint16_t ksize;
    bool ok = false;
    for (i = 8; b && i + n + 48 <= len; i++) {
        memcpy(&ksize, b + i - 2, 2);
        if (ksize != n || memcmp(b + i, name, n) != 0) continue;
        memcpy(&entries, b + i + n + 32, 8);
        entries += (uint64_t)(int64_t)delta;
        memcpy(b + i + n + 32, &entries, 8);
        ok = true;
    }
    ok = ok && write_file(file, b, len);
    free(b);
    return ok;
}

/* The largest allocation the fold asked for; anything above 64 MiB is
   refused (a count trusted blindly would size the slot table from it). */
static size_t capped_largest;

static void *capped_alloc(void *user, size_t size)
{
    (void)user;
    if (size > capped_largest) capped_largest = size;
    return size > ((size_t)64 << 20) ? NULL : malloc(size);
}

static void capped_free(void *user, void *ptr)
{
    (void)user;
    free(ptr);
}

/* A table whose entry count disagrees with the records a walk sees (a
   damaged page can hide records from a cursor): a load-all load and verify
   are CORRUPT, never a smaller state. A count beyond what the file can hold
   is CORRUPT before the fold is sized from it. */
TEST(lmdb_integrity, table_missing_counted_entries_is_corrupt)
{
    static const struct {
        const char *name;
        int delta; /* added to the table's entry count */
    } cases[] = {{"one more than the records", 1}, {"beyond what the file holds", 1 << 26}};
    size_t i;
    for (i = 0; i < COUNT_OF(cases); i++) {
        integ t;
        opstate_lmdb_config ec;
        opstate_lmdb_store_config sc;
        opstate_lmdb_store *st = NULL;
        opstate_kv_config kc;
        opstate_kv *kv = NULL;
        opstate_snapshot_meta meta;
        opstate_store s;
        opstate_lmdb_verify_report rep;
        CASE(cases[i].name);
        REQUIRE(integ_empty_dir(&t));
        REQUIRE(flush_big(&t, OPSTATE_LMDB_CREATE, "small", 1) == OPSTATE_OK);
        REQUIRE(damage_entry_count(t.file, "s:state:table", cases[i].delta));
        memset(&ec, 0, sizeof ec);
        memset(&sc, 0, sizeof sc);
        memset(&kc, 0, sizeof kc);
        ec.path = t.dir;
        ec.access = OPSTATE_LMDB_READ_ONLY;
        sc.name = "state";
        kc.allocator.alloc = capped_alloc;
        kc.allocator.free = capped_free;
        REQUIRE(opstate_lmdb_open(&ec, &t.env, NULL) == OPSTATE_OK);
        REQUIRE(opstate_lmdb_store_open(t.env, &sc, &st, NULL) == OPSTATE_OK);
        REQUIRE(opstate_kv_create(&kc, &kv) == OPSTATE_OK);
        s = opstate_lmdb_store_iface(st);
        capped_largest = 0;
        CHECK(s.load(s.user, kv, &meta, NULL, NULL) == OPSTATE_CORRUPT);
        CHECK(capped_largest < ((size_t)1 << 20)); /* the fold was never sized from the count */
        CHECK_EQ_U64(opstate_kv_count(kv), 0);
        CHECK(opstate_lmdb_verify(t.env, &rep, NULL) == OPSTATE_CORRUPT);
        opstate_kv_destroy(kv);
        opstate_lmdb_store_close(st);
        opstate_lmdb_close(t.env);
        integ_remove(&t);
    }
}
