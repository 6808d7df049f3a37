/* kill9.c — crash consistency of the consumer over the LMDB log and store.

     cc -std=c99 -O2 -D_POSIX_C_SOURCE=200809L -I. tests/chaos/kill9.c -llmdb -o build/kill9 && ./build/kill9

   A parent builds an LMDB event log (puts, deletes, overwrites over 200
   keys). At least 200 times it forks a child that opens the log and an LMDB
   store (load-all or read-through, alternating) and consumes with a small
   flush interval, and SIGKILLs it after a random delay (up to 20 ms, less
   when children finish first): before, inside or after a flush. At least
   200 kills must land while the child still runs. After each kill the parent reopens the store and checks
   that the stored state equals an opstate_replay of the log up to the
   stored position: no torn, lost or doubled event. Every 4 rounds the
   store is dropped so kills also land early in a consumption; every round
   appends more events so there is always work left. The state environment runs with
   OPSTATE_LMDB_SYNC_NONE for speed: a kill -9 is a process crash, the page
   cache survives, and the atomicity under test is the same. */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "opstate_lmdb.h"
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 220
#define KEYS 200

static char dir[64], log_path[96], state_path[96];
static uint64_t rng = 0x9e3779b97f4a7c15u;

static uint64_t next_random(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

static void die(const char *what, opstate_result r)
{
    fprintf(stderr, "kill9: %s: %s\n", what, opstate_result_str(r));
    exit(2);
}

static opstate_lmdb *open_env(const char *path, opstate_lmdb_durability d)
{
    opstate_lmdb_config c;
    opstate_lmdb *env;
    opstate_result r;
    memset(&c, 0, sizeof c);
    c.path = path;
    c.durability = d;
    if ((r = opstate_lmdb_open(&c, &env, NULL)) != OPSTATE_OK) die(path, r);
    return env;
}

static opstate_lmdb_log *open_log(opstate_lmdb *env)
{
    opstate_lmdb_log *lg;
    opstate_result r = opstate_lmdb_log_open(env, NULL, &lg, NULL);
    if (r != OPSTATE_OK) die("log", r);
    return lg;
}

static opstate_lmdb_store *open_store(opstate_lmdb *env, bool read_through)
{
    opstate_lmdb_store_config c;
    opstate_lmdb_store *st;
    opstate_result r;
    memset(&c, 0, sizeof c);
    c.name = "chaos";
    c.read_through = read_through;
    c.compact_flushes = 8; /* compactions land among the kills too */
    if ((r = opstate_lmdb_store_open(env, &c, &st, NULL)) != OPSTATE_OK) die("store", r);
    return st;
}

/* Appends n events: puts of varying values, overwrites and deletes. */
static void append_events(int n)
{
    static uint64_t serial;
    opstate_lmdb *env = open_env(log_path, OPSTATE_LMDB_SYNC_NONE);
    opstate_lmdb_log *lg = open_log(env);
    opstate_log log = opstate_lmdb_log_iface(lg);
    opstate_bytes prefix = {(const uint8_t *)"ops", 3};
    int i;
    for (i = 0; i < n; i++) {
        opstate_event ev;
        opstate_append_result ar;
        char key[16], value[48];
        uint8_t entropy[8];
        uint64_t x = next_random();
        opstate_result r;
        memset(&ev, 0, sizeof ev);
        snprintf(key, sizeof key, "k%03d", (int)(x % KEYS));
        snprintf(value, sizeof value, "{\"v\":%llu}", (unsigned long long)++serial);
        ev.scope.ptr = (const uint8_t *)"chaos";
        ev.scope.len = 5;
        ev.kind.ptr = (const uint8_t *)"item";
        ev.kind.len = 4;
        ev.key.ptr = (const uint8_t *)key;
        ev.key.len = strlen(key);
        ev.op = (x >> 32) % 5 == 0 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT;
        ev.data.ptr = (const uint8_t *)value;
        ev.data.len = ev.op == OPSTATE_OP_PUT ? strlen(value) : 0;
        memcpy(entropy, &serial, sizeof entropy); /* serial: unique ids */
        opstate_id_time_ordered((int64_t)serial * 1000, entropy, &ev.id);
        if ((r = opstate_publish(&log, prefix, &ev, NULL, NULL, &ar, NULL)) != OPSTATE_OK) die("publish", r);
    }
    opstate_lmdb_sync(env, NULL);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(env);
}

/* The child: consume until caught up, flushing every `every` events. */
static void consume(bool read_through, uint64_t every)
{
    opstate_lmdb *log_env = open_env(log_path, OPSTATE_LMDB_SYNC_NONE);
    opstate_lmdb *state_env = open_env(state_path, OPSTATE_LMDB_SYNC_NONE);
    opstate_lmdb_log *lg = open_log(log_env);
    opstate_lmdb_store *st = open_store(state_env, read_through);
    opstate_consumer_config cfg;
    opstate_consumer *c;
    opstate_poll_result pr;
    opstate_result r;
    memset(&cfg, 0, sizeof cfg);
    cfg.log = opstate_lmdb_log_iface(lg);
    cfg.store = opstate_lmdb_store_iface(st);
    cfg.flush_every = every;
    cfg.batch = 16;
    if ((r = opstate_consumer_open(&cfg, &c, NULL)) != OPSTATE_OK) die("consumer open", r);
    do {
        if ((r = opstate_consumer_poll(c, 64, 0, &pr, NULL)) != OPSTATE_OK) die("poll", r);
    } while (!pr.caught_up);
    opstate_consumer_close(c, NULL);
    _exit(0);
}

typedef struct compare {
    opstate_kv *other;
    uint64_t mismatches;
} compare;

static bool compare_item(void *user, const opstate_kv_item *item)
{
    compare *cmp = (compare *)user;
    opstate_kv_item found;
    if (opstate_kv_get(cmp->other, item->key, &found) != OPSTATE_OK || found.value.len != item->value.len ||
        (item->value.len && memcmp(found.value.ptr, item->value.ptr, item->value.len) != 0))
        cmp->mismatches++;
    return true;
}

/* Stored state == fold of the log up to the stored position? Returns the
   stored position. */
static uint64_t verify(uint64_t *mismatches)
{
    opstate_lmdb *log_env = open_env(log_path, OPSTATE_LMDB_SYNC_NONE);
    opstate_lmdb *state_env = open_env(state_path, OPSTATE_LMDB_SYNC_NONE);
    opstate_lmdb_log *lg = open_log(log_env);
    opstate_lmdb_store *st = open_store(state_env, false);
    opstate_store store = opstate_lmdb_store_iface(st);
    opstate_kv *stored, *expected;
    opstate_snapshot_meta meta;
    opstate_replay_config rc;
    opstate_replay_result rr;
    compare cmp;
    opstate_result r;
    opstate_kv_create(NULL, &stored);
    opstate_kv_create(NULL, &expected);
    memset(&meta, 0, sizeof meta);
    r = store.load(store.user, stored, &meta, NULL, NULL);
    if (r != OPSTATE_OK && r != OPSTATE_NOT_FOUND) die("load", r);
    memset(&rc, 0, sizeof rc);
    rc.log = opstate_lmdb_log_iface(lg);
    rc.until_seq = meta.position.seq;
    if (meta.position.seq && (r = opstate_replay(&rc, expected, &rr, NULL)) != OPSTATE_OK) die("replay", r);
    cmp.mismatches = opstate_kv_count(stored) != opstate_kv_count(expected);
    cmp.other = expected;
    opstate_kv_iterate(stored, compare_item, &cmp);
    cmp.other = stored;
    opstate_kv_iterate(expected, compare_item, &cmp);
    *mismatches += cmp.mismatches;
    opstate_kv_destroy(stored);
    opstate_kv_destroy(expected);
    opstate_lmdb_store_close(st);
    opstate_lmdb_log_close(lg);
    opstate_lmdb_close(log_env);
    opstate_lmdb_close(state_env);
    return meta.position.seq;
}

static void drop_store(void)
{
    opstate_lmdb *env = open_env(state_path, OPSTATE_LMDB_SYNC_NONE);
    opstate_lmdb_store *st = open_store(env, false);
    opstate_store store = opstate_lmdb_store_iface(st);
    store.drop(store.user, NULL);
    opstate_lmdb_store_close(st);
    opstate_lmdb_close(env);
}

/* Upper bound of the random kill delay (ns): halved when a child finished
   before its kill, grown again when kills land mid-run, so that most kills
   land mid-run however fast or loaded the machine is. */
static long kill_window = 20000000;

/* One round: start a consumer, kill it at a random moment; true when it was
   still running when killed. */
static bool round_kill(int round)
{
    struct timespec delay;
    int status;
    pid_t child = fork();
    if (child < 0) die("fork", OPSTATE_IO);
    if (child == 0) consume(round % 2 == 1, 1 + (uint64_t)round % 10);
    delay.tv_sec = 0;
    delay.tv_nsec = (long)(next_random() % (uint64_t)kill_window);
    nanosleep(&delay, NULL);
    kill(child, SIGKILL);
    waitpid(child, &status, 0);
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) die("child failed", OPSTATE_IO);
    if (!WIFSIGNALED(status) && kill_window > 1000000) kill_window /= 2;
    else if (WIFSIGNALED(status) && kill_window < 20000000) kill_window += kill_window / 8;
    return WIFSIGNALED(status);
}

int main(void)
{
    uint64_t mismatches = 0, max_pos = 0;
    int round, killed = 0;
    char cmd[128];
    snprintf(dir, sizeof dir, "/tmp/opstate-kill9-XXXXXX");
    if (!mkdtemp(dir)) die("mkdtemp", OPSTATE_IO);
    snprintf(log_path, sizeof log_path, "%s/log", dir);
    snprintf(state_path, sizeof state_path, "%s/state", dir);
    append_events(3000);
    for (round = 0; round < ROUNDS || (killed < 200 && round < 2 * ROUNDS); round++) {
        uint64_t pos;
        if (round % 4 == 3) drop_store();
        append_events(200);
        killed += round_kill(round);
        pos = verify(&mismatches);
        if (pos > max_pos) max_pos = pos;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "kill9: could not remove %s\n", dir);
    printf("kill9: %d rounds, %d kills mid-run, max position %llu, %llu mismatches\n", round, killed,
           (unsigned long long)max_pos, (unsigned long long)mismatches);
    return mismatches == 0 && killed >= 200 ? 0 : 1;
}
