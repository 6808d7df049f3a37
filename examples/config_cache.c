/* cc -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror examples/config_cache.c -llmdb -lnats -o config_cache

   config_cache.c — a local configuration cache: it mirrors a NATS KV
   bucket into an LMDB store (opstate_nats.h reads the bucket as put/delete
   events, opstate_lmdb.h keeps the state and its position), and survives
   restarts: the cached config is readable at boot before the server is
   reached, and a restart resumes after the stored revision instead of
   reading the bucket again. It starts no server.

       ./config_cache [--dir DIR] [--once] [URL [BUCKET]]
           URL     default nats://127.0.0.1:4222; BUCKET default "config"
           --dir   the LMDB directory of the cache (default ./config-cache)
           --once  catch up, print the config and exit (default: keep
                   following the bucket until SIGINT or SIGTERM)

       ./config_cache --demo [URL [BUCKET]]
           creates BUCKET (refused if it exists), puts and deletes a few
           keys with nats.c's KV API, mirrors them into a temp directory,
           stops the cache, changes the bucket, reads the cache offline,
           restarts it (it resumes after the stored revision and reads only
           the new ones), checks the cache against the bucket, and deletes
           the bucket and the directory. Exit 0 when the cache is right.

   The cache is the consumer's KV state with the default apply: a key of
   the bucket is the state key "BUCKET\0kv\0KEY", its value the raw value;
   a delete or purge removes it. The position is the bucket's revision (the
   stream sequence of KV_BUCKET). When the stored revision was evicted
   meanwhile (history, purges), opening resyncs: keys whose every revision
   is gone are removed. */
#define _POSIX_C_SOURCE 200809L /* this program's own sigaction, nanosleep, mkdtemp; the library needs no flag */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#define OPSTATE_NATS_IMPLEMENTATION
#include "../opstate_lmdb.h"
#include "../opstate_nats.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_URL "nats://127.0.0.1:4222"
#define DEFAULT_BUCKET "config"
#define DEFAULT_DIR "./config-cache"
#define STORE_NAME "config"

typedef struct cache {
    const char *bucket;
    opstate_lmdb *env;
    opstate_lmdb_store *store;
    opstate_nats *nats;
    opstate_nats_log *log;
    opstate_consumer *consumer;
} cache;

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
    (void)sig;
    stopping = 1;
}

static int fail(const char *what, opstate_result r, const opstate_error *err)
{
    fprintf(stderr, "config_cache: %s: %s", what, opstate_result_str(r));
    if (err && err->field) fprintf(stderr, " (%s)", err->field);
    fputc('\n', stderr);
    return 1;
}

/* A failure of the companion: its natsStatus, when it has one, says more. */
static int fail_remote(const char *what, opstate_result r, const opstate_error *err)
{
    if (!err->dep_status) return fail(what, r, err);
    fprintf(stderr, "config_cache: %s: %s (%s: %s)\n", what, opstate_result_str(r), err->field ? err->field : "nats",
            natsStatus_GetText((natsStatus)err->dep_status));
    return 1;
}

static int fail_nats(const char *what, natsStatus s)
{
    fprintf(stderr, "config_cache: %s: %s\n", what, natsStatus_GetText(s));
    return 1;
}

/* >>store: the LMDB side, usable without the server ----------------------- */

static int store_open(cache *c, const char *dir)
{
    opstate_lmdb_config ec;
    opstate_lmdb_store_config sc;
    opstate_error err;
    opstate_result r;
    memset(&ec, 0, sizeof ec);
    memset(&sc, 0, sizeof sc);
    memset(&err, 0, sizeof err);
    ec.path = dir;
    sc.name = STORE_NAME;
    if ((r = opstate_lmdb_open(&ec, &c->env, &err)) != OPSTATE_OK) return fail(dir, r, &err);
    if ((r = opstate_lmdb_store_open(c->env, &sc, &c->store, &err)) != OPSTATE_OK) return fail("store", r, &err);
    return 0;
}

/* Prints "  KEY = VALUE" for each key: the part after the last 0x00. */
static bool print_entry(void *user, const opstate_kv_item *item)
{
    const uint8_t *k = item->key.ptr, *end = k + item->key.len, *p = end;
    (void)user;
    while (p > k && p[-1] != 0) p--;
    printf("     %-22.*s = %.*s\n", (int)(end - p), (const char *)p, (int)item->value.len, (const char *)item->value.ptr);
    return true;
}

static void print_config(const opstate_kv *kv, uint64_t revision)
{
    printf("   %llu keys at revision %llu:\n", (unsigned long long)opstate_kv_count(kv), (unsigned long long)revision);
    opstate_kv_iterate(kv, print_entry, NULL);
}

/* What an application reads at boot: the stored config, no server needed. */
static int print_cached(cache *c)
{
    opstate_store st = opstate_lmdb_store_iface(c->store);
    opstate_snapshot_meta meta;
    opstate_kv *kv = NULL;
    opstate_error err;
    opstate_result r;
    memset(&err, 0, sizeof err);
    if ((r = opstate_kv_create(NULL, &kv)) != OPSTATE_OK) return fail("memory", r, NULL);
    r = st.load(st.user, kv, &meta, NULL, &err);
    if (r == OPSTATE_NOT_FOUND) printf("   the cache is empty (never mirrored)\n");
    else if (r == OPSTATE_OK) print_config(kv, meta.position.seq);
    opstate_kv_destroy(kv);
    return r == OPSTATE_OK || r == OPSTATE_NOT_FOUND ? 0 : fail("reading the cache", r, &err);
}

/* >>mirror: the consumer over the bucket ---------------------------------- */

static int connect_to(cache *c, const char *url)
{
    opstate_nats_config nc;
    opstate_error err;
    opstate_result r;
    memset(&nc, 0, sizeof nc);
    memset(&err, 0, sizeof err);
    nc.urls = url;
    nc.name = "config_cache";
    nc.max_reconnect = -1; /* a cache waits for its server */
    if ((r = opstate_nats_connect(&nc, &c->nats, &err)) != OPSTATE_OK) return fail_remote(url, r, &err);
    return 0;
}

/* Opens the bucket's log and the consumer, and says what it restored. */
static int mirror_start(cache *c)
{
    opstate_nats_log_config lc;
    opstate_consumer_config cfg;
    const opstate_consumer_status *st;
    opstate_error err;
    opstate_result r;
    memset(&lc, 0, sizeof lc);
    memset(&cfg, 0, sizeof cfg);
    memset(&err, 0, sizeof err);
    lc.kv_bucket = c->bucket;
    if ((r = opstate_nats_log_open(c->nats, &lc, &c->log, &err)) != OPSTATE_OK) return fail(c->bucket, r, &err);
    cfg.log = opstate_nats_log_iface(c->log);
    cfg.store = opstate_lmdb_store_iface(c->store);
    cfg.schema.version = 1;
    r = opstate_consumer_open(&cfg, &c->consumer, &err);
    if (r == OPSTATE_NOT_FOUND) fprintf(stderr, "config_cache: no KV bucket '%s' on the server\n", c->bucket);
    if (r != OPSTATE_OK) return r == OPSTATE_NOT_FOUND ? 1 : fail_remote("opening the mirror", r, &err);
    st = opstate_consumer_get_status(c->consumer);
    printf("   decision: %s [%s] %s; ", st->decision.restore ? "restore" : "clear",
           opstate_reason_name(st->decision.reason), opstate_reason_str(st->decision.reason));
    if (st->restored.seq) printf("restored revision %llu", (unsigned long long)st->restored.seq);
    else printf("nothing restored");
    printf("; resume: %s\n", opstate_resume_state_str(st->resume.state));
    return 0;
}

/* Applies what the bucket has beyond the cache; *applied counts it. */
static int mirror_catch_up(cache *c, uint64_t *applied)
{
    opstate_poll_result pr;
    opstate_error err;
    opstate_result r;
    *applied = 0;
    do {
        memset(&err, 0, sizeof err);
        r = opstate_consumer_poll(c->consumer, 256, 0, &pr, &err);
        if (r != OPSTATE_OK) return fail_remote("mirroring", r, &err);
        *applied += pr.applied;
    } while (!pr.caught_up);
    if ((r = opstate_consumer_flush(c->consumer, &err)) != OPSTATE_OK) return fail("flushing the cache", r, &err);
    return 0;
}

/* Closes the consumer (a final flush) and the log; the store stays open. */
static int mirror_stop(cache *c)
{
    opstate_error err;
    opstate_result r = OPSTATE_OK;
    memset(&err, 0, sizeof err);
    if (c->consumer) r = opstate_consumer_close(c->consumer, &err);
    opstate_nats_log_close(c->log);
    c->consumer = NULL;
    c->log = NULL;
    return r == OPSTATE_OK ? 0 : fail("final flush", r, &err);
}

static void cache_close(cache *c)
{
    mirror_stop(c);
    opstate_lmdb_store_close(c->store);
    opstate_lmdb_close(c->env);
    opstate_nats_close(c->nats);
    c->store = NULL;
    c->env = NULL;
    c->nats = NULL;
}

/* Follows the bucket until SIGINT/SIGTERM, a line per change batch. */
static int mirror_follow(cache *c)
{
    struct sigaction sa;
    struct timespec nap = {0, 100000000};
    uint64_t applied;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    printf("   following %s (Ctrl-C stops, with a final flush)\n", c->bucket);
    fflush(stdout);
    while (!stopping) {
        if (mirror_catch_up(c, &applied)) return 1;
        if (applied) printf("   +%llu changes; revision %llu\n", (unsigned long long)applied,
                            (unsigned long long)opstate_consumer_position(c->consumer).seq);
        fflush(stdout);
        nanosleep(&nap, NULL);
    }
    printf("   stopped at revision %llu\n", (unsigned long long)opstate_consumer_position(c->consumer).seq);
    return 0;
}

static void remove_store_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

/* >>demo ----------------------------------------------------------------- */

/* One change to the bucket: a put, or a delete when value is NULL. */
static int demo_change(kvStore *kv, const char *key, const char *value)
{
    uint64_t rev = 0;
    natsStatus s = value ? kvStore_PutString(&rev, kv, key, value) : kvStore_Delete(kv, key);
    if (s != NATS_OK) return fail_nats(key, s);
    if (value) printf("     put    %-22s = %s (revision %llu)\n", key, value, (unsigned long long)rev);
    else printf("     delete %s\n", key);
    return 0;
}

static int demo_changes(kvStore *kv, const char *const *changes, size_t n)
{
    size_t i;
    for (i = 0; i + 1 < n; i += 2)
        if (demo_change(kv, changes[i], changes[i + 1])) return 1;
    return 0;
}

/* The bucket's keys and values, each in the cache, and nothing more. */
static int demo_verify(cache *c, kvStore *kv)
{
    kvKeysList keys;
    const opstate_kv *state = opstate_consumer_kv(c->consumer);
    char skey[300];
    int i, same = 0;
    natsStatus s = kvStore_Keys(&keys, kv, NULL);
    if (s != NATS_OK) return fail_nats("listing the bucket's keys", s);
    for (i = 0; i < keys.Count; i++) {
        kvEntry *e = NULL;
        opstate_kv_item item;
        int n = snprintf(skey, sizeof skey, "%s%ckv%c%s", c->bucket, 0, 0, keys.Keys[i]);
        opstate_bytes k;
        k.ptr = (const uint8_t *)skey;
        k.len = n > 0 && (size_t)n < sizeof skey ? (size_t)n : 0;
        if (kvStore_Get(&e, kv, keys.Keys[i]) == NATS_OK && opstate_kv_get(state, k, &item) == OPSTATE_OK &&
            item.value.len == (size_t)kvEntry_ValueLen(e) && memcmp(item.value.ptr, kvEntry_Value(e), item.value.len) == 0)
            same++;
        kvEntry_Destroy(e);
    }
    printf("   the bucket has %d keys; %d of them are in the cache with the same value; the cache has %llu keys: %s\n",
           keys.Count, same, (unsigned long long)opstate_kv_count(state),
           same == keys.Count && (uint64_t)same == opstate_kv_count(state) ? "identical" : "DIFFERENT");
    i = same == keys.Count && (uint64_t)same == opstate_kv_count(state) ? 0 : 1;
    kvKeysList_Destroy(&keys);
    return i;
}

/* Creates the bucket; one that exists already is not the demo's to touch. */
static int demo_bucket(cache *c, kvStore **kv)
{
    kvConfig kc;
    natsStatus s;
    if (js_KeyValue(kv, opstate_nats_jetstream(c->nats), c->bucket) == NATS_OK) {
        kvStore_Destroy(*kv);
        *kv = NULL;
        fprintf(stderr, "config_cache: bucket '%s' exists: --demo makes and deletes its own, name another one\n", c->bucket);
        return 1;
    }
    kvConfig_Init(&kc);
    kc.Bucket = c->bucket;
    kc.History = 5;
    if ((s = js_CreateKeyValue(kv, opstate_nats_jetstream(c->nats), &kc)) != NATS_OK) return fail_nats(c->bucket, s);
    return 0;
}

/* Steps 2 to 5: mirror, stop, change the bucket, read offline, restart. */
static int demo_restart(cache *c, kvStore *kv)
{
    static const char *const later[] = {"feature.checkout_v2", "on", "cache.ttl_s", "300", "app.name", NULL};
    uint64_t applied, stored;
    printf("2. the cache mirrors the bucket into LMDB\n");
    if (mirror_start(c) || mirror_catch_up(c, &applied)) return 1;
    stored = opstate_consumer_position(c->consumer).seq;
    printf("   applied %llu revisions; the cache is at revision %llu\n", (unsigned long long)applied,
           (unsigned long long)stored);
    printf("3. the cache stops; meanwhile the bucket changes\n");
    if (mirror_stop(c) || demo_changes(kv, later, sizeof later / sizeof later[0])) return 1;
    printf("4. at boot, before the server is reached, the cache serves what it stored\n");
    if (print_cached(c)) return 1;
    printf("5. the cache restarts: it resumes after revision %llu\n", (unsigned long long)stored);
    if (mirror_start(c) || mirror_catch_up(c, &applied)) return 1;
    printf("   applied %llu revisions (only the new ones)\n", (unsigned long long)applied);
    print_config(opstate_consumer_kv(c->consumer), opstate_consumer_position(c->consumer).seq);
    return opstate_consumer_get_status(c->consumer)->decision.reason == OPSTATE_REASON_RESUME && applied == 3 ? 0 : 1;
}

static int run_demo(cache *c, const char *url)
{
    static const char *const first[] = {"app.name", "shop", "db.url", "postgres://db:5432/shop", "db.pool", "10",
                                        "feature.checkout_v2", "off", "log.level", "debug", "db.pool", "20",
                                        "log.level", NULL};
    char dir[] = "/tmp/config-cache.XXXXXX";
    kvStore *kv = NULL;
    int bad = 1;
    printf("1. bucket '%s' on %s: puts and deletes with nats.c's KV API\n", c->bucket, url);
    if (!mkdtemp(dir)) {
        perror("config_cache: mkdtemp");
        return 1;
    }
    if (connect_to(c, url) || demo_bucket(c, &kv) || demo_changes(kv, first, sizeof first / sizeof first[0]) ||
        store_open(c, dir))
        goto out;
    bad = demo_restart(c, kv);
    printf("6. the cache against the bucket\n");
    bad |= demo_verify(c, kv);
out:
    if (kv) {
        js_DeleteKeyValue(opstate_nats_jetstream(c->nats), c->bucket);
        kvStore_Destroy(kv);
    }
    cache_close(c);
    remove_store_dir(dir);
    printf("%s\n", bad ? "config_cache demo FAILED" : "config_cache demo passed");
    return bad;
}

/* >>main ----------------------------------------------------------------- */

/* The normal run: the cached config first (no server needed), then catch
   up with the bucket, then follow it (or exit with --once). */
static int run_cache(cache *c, const char *url, const char *dir, bool once)
{
    uint64_t applied;
    int bad;
    printf("cache %s (bucket '%s' on %s)\n", dir, c->bucket, url);
    if (store_open(c, dir) || print_cached(c)) {
        cache_close(c);
        return 1;
    }
    printf("mirroring\n");
    bad = connect_to(c, url) || mirror_start(c) || mirror_catch_up(c, &applied);
    if (!bad) {
        printf("   applied %llu revisions\n", (unsigned long long)applied);
        print_config(opstate_consumer_kv(c->consumer), opstate_consumer_position(c->consumer).seq);
        if (!once) bad = mirror_follow(c);
    }
    cache_close(c);
    return bad;
}

static int usage(FILE *out, int rc)
{
    fprintf(out, "usage: config_cache [--dir DIR] [--once] [URL [BUCKET]]\n"
                    "       config_cache --demo [URL [BUCKET]]\n"
                    "URL default " DEFAULT_URL ", BUCKET default " DEFAULT_BUCKET ", DIR default " DEFAULT_DIR "\n");
    return rc;
}

int main(int argc, char **argv)
{
    const char *positional[2] = {DEFAULT_URL, DEFAULT_BUCKET}, *dir = DEFAULT_DIR;
    bool demo = false, once = false;
    int i, n = 0, rc;
    cache c;
    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--demo") == 0) demo = true;
        else if (strcmp(argv[i], "--once") == 0) once = true;
        else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) dir = argv[++i];
        else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) return usage(stdout, 0);
        else if (argv[i][0] != '-' && n < 2) positional[n++] = argv[i];
        else return usage(stderr, 2);
    }
    memset(&c, 0, sizeof c);
    c.bucket = positional[1];
    rc = demo ? run_demo(&c, positional[0]) : run_cache(&c, positional[0], dir, once);
    nats_Close();
    return rc;
}
