/* cc -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror examples/projector.c -llmdb -o projector

   projector.c — a durable consumer projecting an event log into a derived
   table, with opstate_lmdb.h: the log and the projection live in one LMDB
   environment, and every flush commits the changed rows and the consumer's
   position in ONE transaction.

       ./projector [DIR]      DIR: the LMDB environment (default: a fresh
                              temp dir, removed at the end). Run it twice on
                              the same DIR to see a restart resume.

   The derived table (the consumer's KV state):
       count/<kind>           how many events of that kind were projected
       latest/<kind>/<key>    the newest value of that entity (deleted with it)
   The apply callback is idempotent: every row remembers the sequence of the
   last event folded into it, and an event at or below that is not counted
   again. The consumer already guarantees as much (it resumes after the
   position committed with the rows, and skips redelivered ids); the guard
   makes the projection safe on its own too.

   What it does:
     1. publishes 1000 events (sensor readings, valve moves, alarms, a few
        deletes) into the LMDB log;
     2. a child process projects them, flushing every 100 events, and is
        killed with SIGKILL after 650 — between two flushes;
     3. the parent restarts the projector: it restores the table and the
        position of the last flush, resumes right after it, and catches up;
     4. the table equals a full replay of the log into an empty table;
     5. one more restart has nothing to do (caught up).
   The environment runs with OPSTATE_LMDB_SYNC_NONE: a commit survives
   kill -9 (the OS has the pages), not a power cut — use the default
   SYNC_FULL for that.

   Under valgrind the parent ends with nothing allocated; the child, killed
   on purpose, is reported with what it held when it died (add
   --child-silent-after-fork=yes to hide it). */
#define _POSIX_C_SOURCE 200809L /* this program's own mkdtemp, fork, waitpid; the library needs no flag */
#define OPSTATE_IMPLEMENTATION
#define OPSTATE_LMDB_IMPLEMENTATION
#include "../opstate_lmdb.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define EVENTS 1000u
#define KILL_AFTER 650u

typedef struct projector {
    uint64_t applied;    /* events this process folded in */
    uint64_t kill_after; /* 0: never */
} projector;

typedef struct app {
    opstate_lmdb *env;
    opstate_lmdb_log *log;
    opstate_lmdb_store *store;
    opstate_consumer *consumer;
    projector proj;
} app;

static opstate_bytes text(const char *s, size_t n)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)s;
    b.len = n;
    return b;
}

static uint64_t parse_u64(opstate_bytes b)
{
    uint64_t v = 0;
    size_t i;
    for (i = 0; i < b.len && b.ptr[i] >= '0' && b.ptr[i] <= '9'; i++) v = v * 10 + (uint64_t)(b.ptr[i] - '0');
    return v;
}

/* The apply callback: folds one event into the derived table. */
static opstate_apply_outcome project(void *user, opstate_kv *kv, const opstate_event *ev)
{
    projector *p = (projector *)user;
    char key[600], num[24];
    int n;
    opstate_kv_item row;
    opstate_result r;

    /* count/<kind> += 1, unless this row already holds this event */
    n = snprintf(key, sizeof key, "count/%.*s", (int)ev->kind.len, (const char *)ev->kind.ptr);
    if (n < 0 || (size_t)n >= sizeof key) return OPSTATE_APPLY_REJECT;
    r = opstate_kv_get(kv, text(key, (size_t)n), &row);
    if (r != OPSTATE_OK && r != OPSTATE_NOT_FOUND) return OPSTATE_APPLY_RETRY;
    if (r == OPSTATE_NOT_FOUND || row.position.seq < ev->position.seq) {
        uint64_t count = r == OPSTATE_OK ? parse_u64(row.value) : 0;
        int m = snprintf(num, sizeof num, "%lu", (unsigned long)(count + 1));
        if (opstate_kv_put(kv, text(key, (size_t)n), text(num, (size_t)m), ev->position) != OPSTATE_OK)
            return OPSTATE_APPLY_RETRY;
    }

    /* latest/<kind>/<key> = data, or removed by a delete */
    n = snprintf(key, sizeof key, "latest/%.*s/%.*s", (int)ev->kind.len, (const char *)ev->kind.ptr,
                 (int)ev->key.len, (const char *)ev->key.ptr);
    if (n < 0 || (size_t)n >= sizeof key) return OPSTATE_APPLY_REJECT;
    r = opstate_kv_get(kv, text(key, (size_t)n), &row);
    if (r != OPSTATE_OK && r != OPSTATE_NOT_FOUND) return OPSTATE_APPLY_RETRY;
    if (r == OPSTATE_NOT_FOUND || row.position.seq < ev->position.seq) {
        r = ev->op == OPSTATE_OP_DELETE ? opstate_kv_delete(kv, text(key, (size_t)n), ev->position)
                                        : opstate_kv_put(kv, text(key, (size_t)n), ev->data, ev->position);
        if (r != OPSTATE_OK) return OPSTATE_APPLY_RETRY;
    }

    p->applied++;
    if (p->kill_after && p->applied == p->kill_after) {
        printf("   child: applied %lu events, now kill -9 (the last flush was at a multiple of 100)\n",
               (unsigned long)p->applied);
        fflush(stdout);
        raise(SIGKILL);
    }
    return OPSTATE_APPLY_DONE;
}

static int fail(const char *what, opstate_result r)
{
    fprintf(stderr, "projector: %s: %s\n", what, opstate_result_str(r));
    return 1;
}

static int open_env(app *a, const char *dir)
{
    opstate_lmdb_config ec;
    opstate_lmdb_log_config lc;
    opstate_lmdb_store_config sc;
    opstate_result r;
    memset(a, 0, sizeof *a);
    memset(&ec, 0, sizeof ec);
    memset(&lc, 0, sizeof lc);
    memset(&sc, 0, sizeof sc);
    ec.path = dir;
    ec.durability = OPSTATE_LMDB_SYNC_NONE;
    lc.name = "plant";
    sc.name = "projection";
    if ((r = opstate_lmdb_open(&ec, &a->env, NULL)) != OPSTATE_OK) return fail("open environment", r);
    if ((r = opstate_lmdb_log_open(a->env, &lc, &a->log, NULL)) != OPSTATE_OK) return fail("open log", r);
    if ((r = opstate_lmdb_store_open(a->env, &sc, &a->store, NULL)) != OPSTATE_OK) return fail("open store", r);
    return 0;
}

static void close_env(app *a)
{
    if (a->consumer) opstate_consumer_close(a->consumer, NULL);
    if (a->store) opstate_lmdb_store_close(a->store);
    if (a->log) opstate_lmdb_log_close(a->log);
    if (a->env) opstate_lmdb_close(a->env);
    memset(a, 0, sizeof *a);
}

/* Opens the consumer and prints what it decided. */
static int start_projector(app *a, const char *who)
{
    opstate_consumer_config cfg;
    const opstate_consumer_status *st;
    opstate_result r;
    memset(&cfg, 0, sizeof cfg);
    cfg.log = opstate_lmdb_log_iface(a->log);
    cfg.store = opstate_lmdb_store_iface(a->store);
    cfg.apply = project;
    cfg.apply_user = &a->proj;
    cfg.schema.version = 1;
    cfg.flush_every = 100;
    if ((r = opstate_consumer_open(&cfg, &a->consumer, NULL)) != OPSTATE_OK) return fail("open consumer", r);
    st = opstate_consumer_get_status(a->consumer);
    printf("   %s: %s (%s); restored position %lu, resume check: %s\n", who,
           st->decision.restore ? "restore" : "clear", opstate_reason_str(st->decision.reason),
           (unsigned long)opstate_consumer_position(a->consumer).seq, opstate_resume_state_str(st->resume.state));
    return 0;
}

static int run_to_end(app *a)
{
    opstate_poll_result pr;
    opstate_result r;
    do {
        if ((r = opstate_consumer_poll(a->consumer, 50, 0, &pr, NULL)) != OPSTATE_OK) return fail("poll", r);
    } while (!pr.caught_up);
    if ((r = opstate_consumer_flush(a->consumer, NULL)) != OPSTATE_OK) return fail("flush", r);
    return 0;
}

static int publish_workload(app *a, uint32_t base)
{
    static const char *const kinds[] = {"sensor", "sensor", "sensor", "valve", "valve", "alarm"};
    opstate_log log = opstate_lmdb_log_iface(a->log);
    uint32_t i, rng = 2463534242u + base;
    for (i = 0; i < EVENTS; i++) {
        opstate_event ev;
        opstate_append_result res;
        opstate_result r;
        char key[16], data[48];
        const char *kind;
        int kn, dn;
        rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5; /* xorshift32 */
        kind = kinds[rng % 6];
        kn = snprintf(key, sizeof key, "%s-%02u", kind[0] == 's' ? "T" : kind[0] == 'v' ? "V" : "A",
                      (unsigned)(rng >> 8) % 40);
        dn = snprintf(data, sizeof data, "{\"value\":%u,\"n\":%u}", (unsigned)(rng >> 16) % 1000, base + i + 1);
        memset(&ev, 0, sizeof ev);
        ev.scope = text("line3", 5);
        ev.kind = text(kind, strlen(kind));
        ev.key = text(key, (size_t)kn);
        ev.op = (rng >> 4) % 20 == 0 ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT;
        ev.data = ev.op == OPSTATE_OP_PUT ? text(data, (size_t)dn) : text("", 0);
        ev.has_time = true;
        ev.time = 1767225600000000000 + (int64_t)(base + i) * 1000000;
        ev.id = opstate_id_from_content(&ev); /* deterministic: a re-publish would dedup */
        if ((r = opstate_publish(&log, text("plant", 5), &ev, NULL, NULL, &res, NULL)) != OPSTATE_OK)
            return fail("publish", r);
    }
    return 0;
}

static char *kv_json(const opstate_kv *kv)
{
    size_t need = 0, n = 0;
    char *buf;
    if (opstate_kv_to_json(kv, NULL, 0, &need) != OPSTATE_OK || !(buf = (char *)malloc(need + 1))) return NULL;
    if (opstate_kv_to_json(kv, buf, need, &n) != OPSTATE_OK) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

static bool print_counts(void *user, const opstate_kv_item *item)
{
    uint64_t *latest_rows = (uint64_t *)user;
    if (item->key.len > 6 && memcmp(item->key.ptr, "count/", 6) == 0)
        printf("   %-14.*s %.*s events\n", (int)item->key.len, (const char *)item->key.ptr, (int)item->value.len,
               (const char *)item->value.ptr);
    else
        ++*latest_rows;
    return true;
}

/* The projection must equal a full replay of the log into an empty table. */
static int verify(app *a)
{
    opstate_replay_config rc;
    opstate_replay_result rr;
    opstate_kv *fresh = NULL;
    projector scratch = {0, 0};
    char *live = NULL, *replayed = NULL;
    uint64_t latest_rows = 0;
    int bad = 1;
    memset(&rc, 0, sizeof rc);
    rc.log = opstate_lmdb_log_iface(a->log);
    rc.apply = project;
    rc.apply_user = &scratch;
    if (opstate_kv_create(NULL, &fresh) == OPSTATE_OK && opstate_replay(&rc, fresh, &rr, NULL) == OPSTATE_OK &&
        (live = kv_json(opstate_consumer_kv(a->consumer))) && (replayed = kv_json(fresh))) {
        opstate_kv_iterate(opstate_consumer_kv(a->consumer), print_counts, &latest_rows);
        printf("   %lu latest/ rows; a full replay of %lu events into an empty table gives %s\n",
               (unsigned long)latest_rows, (unsigned long)rr.applied,
               strcmp(live, replayed) == 0 ? "the same table, byte for byte" : "A DIFFERENT TABLE");
        bad = strcmp(live, replayed) != 0;
    }
    free(live);
    free(replayed);
    opstate_kv_destroy(fresh);
    return bad;
}

static void remove_env_dir(const char *dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data.mdb", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/lock.mdb", dir);
    unlink(path);
    rmdir(dir);
}

int main(int argc, char **argv)
{
    char tmp[] = "/tmp/opstate-projector.XXXXXX";
    const char *dir = argc > 1 ? argv[1] : NULL;
    opstate_stream_info info;
    app a;
    pid_t pid;
    int status, rc = 1;
    uint32_t base;

    if (!dir && !(dir = mkdtemp(tmp))) {
        perror("mkdtemp");
        return 1;
    }
    memset(&a, 0, sizeof a);

    printf("1. publish %u events into the LMDB log in %s\n", EVENTS, dir);
    if (open_env(&a, dir)) goto out;
    opstate_lmdb_log_iface(a.log).info(a.log, &info, NULL);
    base = (uint32_t)info.messages;
    if (publish_workload(&a, base)) goto out;
    opstate_lmdb_log_iface(a.log).info(a.log, &info, NULL);
    printf("   log: seq %lu..%lu\n", (unsigned long)info.first_seq, (unsigned long)info.last_seq);
    close_env(&a); /* an LMDB environment must not cross a fork */
    fflush(stdout);

    printf("2. a child process projects, flushing every 100 events\n");
    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        perror("fork");
        goto out;
    }
    if (pid == 0) {
        if (open_env(&a, dir) || start_projector(&a, "child")) _exit(1);
        fflush(stdout);
        a.proj.kill_after = KILL_AFTER;
        run_to_end(&a);
        _exit(0); /* only reached when the log had fewer events left than KILL_AFTER */
    }
    if (waitpid(pid, &status, 0) != pid) goto out;
    if (WIFSIGNALED(status))
        printf("   child died of signal %d\n", WTERMSIG(status));
    else
        printf("   child exited with status %d\n", WEXITSTATUS(status));

    printf("3. restart: restore, resume after the last flush, catch up\n");
    if (open_env(&a, dir) || start_projector(&a, "parent")) goto out;
    if (run_to_end(&a)) goto out;
    printf("   parent applied %lu events, position now %lu\n", (unsigned long)a.proj.applied,
           (unsigned long)opstate_consumer_position(a.consumer).seq);

    printf("4. the projection\n");
    if (verify(&a)) goto out;
    opstate_consumer_close(a.consumer, NULL);
    a.consumer = NULL;

    printf("5. restart once more\n");
    a.proj.applied = 0;
    if (start_projector(&a, "parent") || run_to_end(&a)) goto out;
    printf("   applied %lu events: nothing was projected twice\n", (unsigned long)a.proj.applied);
    rc = a.proj.applied == 0 ? 0 : 1;
out:
    close_env(&a);
    if (argc <= 1) remove_env_dir(dir);
    if (rc) fprintf(stderr, "projector: failed\n");
    return rc;
}
