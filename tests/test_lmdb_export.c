/* test_lmdb_export.c — the LMDB companion's export and import
   (opstate_lmdb.h >>export, suite lmdb_export): a compacted copy with its
   MANIFEST, files of mode 0600, a verified import that installs nothing
   when the copy was tampered with, and non-empty or live directories
   refused. Every test works in its own mkdtemp directory under /tmp and
   removes it at the end. */
#include "runner.h"
#include "../opstate_lmdb.h"
#include "lmdb_helpers.h"

/* Replaces the first `from` in a text file by `to`. */
static bool edit_text(const char *path, const char *from, const char *to)
{
    size_t len = 0;
    char *text = read_file(path, &len), *hit, *out;
    bool ok = false;
    if (!text) return false;
    if ((hit = strstr(text, from)) != NULL && (out = (char *)malloc(len + strlen(to) + 1)) != NULL) {
        size_t head = (size_t)(hit - text);
        memcpy(out, text, head);
        strcpy(out + head, to);
        strcat(out + head, hit + strlen(from));
        ok = write_file(path, out, strlen(out));
        free(out);
    }
    free(text);
    return ok;
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* An environment with two stores and a log, and the oracle of "alpha". */
typedef struct expfx {
    char base[64], src[128];
    opstate_lmdb *env;
    opstate_kv *alpha, *beta;
} expfx;

static bool exp_setup(expfx *x)
{
    opstate_lmdb_store *a = NULL, *b = NULL;
    opstate_lmdb_log *lg = NULL;
    opstate_store sa, sb;
    opstate_log log;
    opstate_append_result res;
    opstate_kv *ka = kv_new(NULL), *kb = kv_new(NULL);
    opstate_snapshot_meta ma = smeta(2, 7, 7000, 5), mb = smeta(1, 3, 3000, 5);
    bool ok;
    x->env = NULL;
    x->alpha = kv_new(NULL);
    x->beta = kv_new(NULL);
    tmp_dir(x->base);
    join(x->src, sizeof x->src, x->base, "src");
    ok = ka && kb && x->alpha && x->beta && x->base[0] && env_open(x->src, 0, 0, &x->env, NULL) == OPSTATE_OK &&
         store_open(x->env, "alpha", false, 2, &a, NULL) == OPSTATE_OK &&
         store_open(x->env, "beta", false, 1000, &b, NULL) == OPSTATE_OK &&
         opstate_lmdb_log_open(x->env, NULL, &lg, NULL) == OPSTATE_OK;
    if (ok) {
        sa = opstate_lmdb_store_iface(a);
        sb = opstate_lmdb_store_iface(b);
        log = opstate_lmdb_log_iface(lg);
        fill(ka, x->alpha, 40, 1);
        ok = flush_cycle(&sa, ka, &ma, NULL, NULL) == OPSTATE_OK;
        put2(ka, x->alpha, "k-00001", "updated", 6);
        del2(ka, x->alpha, "k-00002", 7);
        ok = ok && flush_cycle(&sa, ka, &ma, NULL, NULL) == OPSTATE_OK; /* compacted */
        put2(ka, x->alpha, "pending", "delta", 7);
        ok = ok && flush_cycle(&sa, ka, &ma, NULL, NULL) == OPSTATE_OK; /* one delta left */
        put2(kb, x->beta, "b", "bee", 3);
        ok = ok && flush_cycle(&sb, kb, &mb, NULL, NULL) == OPSTATE_OK;
        ok = ok && log.append(log.user, str("ev.1"), str("one"), NULL, &res, NULL) == OPSTATE_OK;
        ok = ok && log.append(log.user, str("ev.2"), str("two"), NULL, &res, NULL) == OPSTATE_OK;
    }
    opstate_lmdb_store_close(a);
    opstate_lmdb_store_close(b);
    opstate_lmdb_log_close(lg);
    opstate_kv_destroy(ka);
    opstate_kv_destroy(kb);
    return ok;
}

static void exp_teardown(expfx *x)
{
    opstate_lmdb_close(x->env);
    opstate_kv_destroy(x->alpha);
    opstate_kv_destroy(x->beta);
    if (x->base[0]) rm_rf(x->base);
}

/* Loads store `name` of the environment at `path` and compares it. */
static bool env_has_store(const char *path, const char *name, const opstate_kv *want, uint64_t seq, int64_t time,
                          uint64_t epoch)
{
    opstate_lmdb *env = NULL;
    opstate_lmdb_store *st = NULL;
    opstate_store s;
    opstate_kv *kv = kv_new(NULL);
    opstate_snapshot_meta m;
    bool ok = kv && env_open(path, 0, 0, &env, NULL) == OPSTATE_OK &&
              store_open(env, name, false, 1000, &st, NULL) == OPSTATE_OK;
    if (ok) {
        s = opstate_lmdb_store_iface(st);
        ok = s.load(s.user, kv, &m, NULL, NULL) == OPSTATE_OK && same_state(kv, want) && m.position.seq == seq &&
             m.position.time == time && m.position.epoch == epoch;
    }
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
    opstate_kv_destroy(kv);
    return ok;
}

TEST(lmdb_export, export_manifest_and_import)
{
    expfx x;
    char exp[160], imp[160], f[192], want[512];
    char *manifest, *data;
    size_t dlen = 0;
    struct stat st;
    opstate_error err;
    REQUIRE(exp_setup(&x));
    join(exp, sizeof exp, x.base, "exp");
    join(imp, sizeof imp, x.base, "imp");
    CHECK(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_OK);
    join(f, sizeof f, exp, "data.mdb");
    data = read_file(f, &dlen);
    CHECK(data != NULL);
    join(f, sizeof f, exp, "MANIFEST");
    manifest = read_file(f, NULL);
    CHECK(manifest != NULL);
    if (data && manifest) {
        snprintf(want, sizeof want,
                 "opstate-lmdb-export 1\nfile data.mdb %lu %08lx\nstore alpha 7 7000 5\nstore beta 3 3000 5\nend\n",
                 (unsigned long)dlen, (unsigned long)opstate_crc32c(0, data, dlen));
        CHECK_STR(manifest, want);
    }
    free(data);
    free(manifest);
    /* only MANIFEST and data.mdb */
    join(f, sizeof f, exp, "MANIFEST.tmp");
    CHECK(!exists(f));
    join(f, sizeof f, exp, "lock.mdb");
    CHECK(!exists(f));

    CHECK(opstate_lmdb_import(exp, imp, &err) == OPSTATE_OK);
    join(f, sizeof f, imp, "data.mdb");
    CHECK(stat(f, &st) == 0 && (st.st_mode & 0777) == 0600);
    CHECK(env_has_store(imp, "alpha", x.alpha, 7, 7000, 5));
    CHECK(env_has_store(imp, "beta", x.beta, 3, 3000, 5));
    {
        /* the log came along */
        opstate_lmdb *env = NULL;
        opstate_lmdb_log *lg = NULL;
        opstate_stream_info info;
        opstate_log log;
        CHECK(env_open(imp, 0, 0, &env, NULL) == OPSTATE_OK);
        if (env && opstate_lmdb_log_open(env, NULL, &lg, NULL) == OPSTATE_OK) {
            log = opstate_lmdb_log_iface(lg);
            CHECK(log.info(log.user, &info, NULL) == OPSTATE_OK);
            CHECK_EQ_U64(info.last_seq, 2);
            CHECK_EQ_U64(info.messages, 2);
            opstate_lmdb_log_close(lg);
        }
        opstate_lmdb_close(env);
    }
    /* the source is untouched and still in use */
    CHECK(opstate_lmdb_map_size(x.env) > 0);
    exp_teardown(&x);
}

TEST(lmdb_export, import_refuses_tampering)
{
    enum { FLIP_DATA, DROP_DATA, EXTRA_FILE, EDIT_POSITION, EDIT_EPOCH, DROP_STORE_LINE, EDIT_CRC, TRUNCATE_DATA,
           NEW_VERSION, NO_END, NO_MANIFEST, NO_FILE_LINE };
    static const struct {
        const char *name;
        int how;
        opstate_result want;
    } rows[] = {
        {"flipped byte in data.mdb", FLIP_DATA, OPSTATE_CORRUPT},
        {"data.mdb removed", DROP_DATA, OPSTATE_NOT_FOUND},
        {"extra file", EXTRA_FILE, OPSTATE_MALFORMED},
        {"store position edited", EDIT_POSITION, OPSTATE_CONFLICT},
        {"store epoch edited", EDIT_EPOCH, OPSTATE_CONFLICT},
        {"store line removed", DROP_STORE_LINE, OPSTATE_CONFLICT},
        {"data CRC edited", EDIT_CRC, OPSTATE_CORRUPT},
        {"data.mdb truncated", TRUNCATE_DATA, OPSTATE_CORRUPT},
        {"manifest version 2", NEW_VERSION, OPSTATE_UNKNOWN_VERSION},
        {"manifest without end", NO_END, OPSTATE_MALFORMED},
        {"manifest removed", NO_MANIFEST, OPSTATE_NOT_FOUND},
        {"manifest without its file line", NO_FILE_LINE, OPSTATE_MALFORMED},
    };
    expfx x;
    size_t i;
    REQUIRE(exp_setup(&x));
    for (i = 0; i < COUNT_OF(rows); i++) {
        char exp[160], dest[160], f[192], g[192], name[32];
        size_t len = 0;
        char *data;
        opstate_error err;
        bool done = false;
        CASE(rows[i].name);
        snprintf(name, sizeof name, "exp%u", (unsigned)i);
        join(exp, sizeof exp, x.base, name);
        snprintf(name, sizeof name, "dest%u", (unsigned)i);
        join(dest, sizeof dest, x.base, name);
        REQUIRE(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_OK);
        join(f, sizeof f, exp, "data.mdb");
        join(g, sizeof g, exp, "MANIFEST");
        switch (rows[i].how) {
        case FLIP_DATA:
            if ((data = read_file(f, &len)) != NULL) {
                data[len / 2] ^= 0x01;
                done = write_file(f, data, len);
                free(data);
            }
            break;
        case TRUNCATE_DATA:
            if ((data = read_file(f, &len)) != NULL) {
                done = write_file(f, data, len - 4096);
                free(data);
            }
            break;
        case DROP_DATA: done = unlink(f) == 0; break;
        case NO_MANIFEST: done = unlink(g) == 0; break;
        case EXTRA_FILE:
            join(f, sizeof f, exp, "notes.txt");
            done = write_file(f, "hi", 2);
            break;
        case EDIT_POSITION: done = edit_text(g, "store alpha 7 ", "store alpha 8 "); break;
        case EDIT_EPOCH: done = edit_text(g, "store beta 3 3000 5", "store beta 3 3000 6"); break;
        case DROP_STORE_LINE: done = edit_text(g, "store beta 3 3000 5\n", ""); break;
        case EDIT_CRC: {
            char *m = read_file(g, NULL), *p = m ? strstr(m, "file data.mdb ") : NULL;
            if (p && (p = strchr(p + 14, ' ')) != NULL) {
                p[1] = p[1] == '0' ? '1' : '0';
                done = write_file(g, m, strlen(m));
            }
            free(m);
            break;
        }
        case NEW_VERSION: done = edit_text(g, "opstate-lmdb-export 1", "opstate-lmdb-export 2"); break;
        case NO_END: done = edit_text(g, "end\n", ""); break;
        case NO_FILE_LINE: {
            char *m = read_file(g, NULL), *p = m ? strstr(m, "file data.mdb ") : NULL, *e = p ? strchr(p, '\n') : NULL;
            if (e) {
                memmove(p, e + 1, strlen(e + 1) + 1);
                done = write_file(g, m, strlen(m));
            }
            free(m);
            break;
        }
        }
        CHECK(done);
        memset(&err, 0, sizeof err);
        CHECK_EQ_U64(opstate_lmdb_import(exp, dest, &err), rows[i].want);
        CHECK_EQ_U64(err.result, rows[i].want);
        join(f, sizeof f, dest, "data.mdb");
        CHECK(!exists(f)); /* nothing installed */
    }
    CASE(NULL);
    exp_teardown(&x);
}

TEST(lmdb_export, refuses_non_empty_dirs)
{
    expfx x;
    char exp[160], dest[160], f[192];
    opstate_error err;
    REQUIRE(exp_setup(&x));
    join(exp, sizeof exp, x.base, "full");
    CHECK(mkdir(exp, 0700) == 0);
    join(f, sizeof f, exp, "something");
    CHECK(write_file(f, "x", 1));
    memset(&err, 0, sizeof err);
    CHECK(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_INVALID_ARGUMENT);
    CHECK(err.result == OPSTATE_INVALID_ARGUMENT);
    join(f, sizeof f, exp, "data.mdb");
    CHECK(!exists(f));
    /* an existing empty directory is fine */
    join(exp, sizeof exp, x.base, "empty");
    CHECK(mkdir(exp, 0700) == 0);
    CHECK(opstate_lmdb_export(x.env, exp, &err) == OPSTATE_OK);
    /* import into a non-empty destination is refused too */
    join(dest, sizeof dest, x.base, "busy");
    CHECK(mkdir(dest, 0700) == 0);
    join(f, sizeof f, dest, "keep");
    CHECK(write_file(f, "x", 1));
    CHECK(opstate_lmdb_import(exp, dest, &err) == OPSTATE_INVALID_ARGUMENT);
    join(f, sizeof f, dest, "data.mdb");
    CHECK(!exists(f));
    /* importing onto a live environment's directory is refused */
    CHECK(opstate_lmdb_import(exp, x.src, &err) == OPSTATE_INVALID_ARGUMENT);
    exp_teardown(&x);
}

/* The header promises files of mode 0600; an export holds the whole state,
   so its files should not be readable by others either (here into an
   existing 0755 directory, where the directory does not hide them). */
TEST(lmdb_export, export_files_mode_0600)
{
    expfx x;
    char exp[160], f[192];
    struct stat st;
    REQUIRE(exp_setup(&x));
    join(exp, sizeof exp, x.base, "open");
    CHECK(mkdir(exp, 0755) == 0);
    CHECK(opstate_lmdb_export(x.env, exp, NULL) == OPSTATE_OK);
    join(f, sizeof f, exp, "data.mdb");
    CHECK(stat(f, &st) == 0);
    CHECK_EQ_U64(st.st_mode & 0777, 0600);
    join(f, sizeof f, exp, "MANIFEST");
    CHECK(stat(f, &st) == 0);
    CHECK_EQ_U64(st.st_mode & 0777, 0600);
    exp_teardown(&x);
}
