/* opstate_lmdb.h — LMDB companion to opstate.h: an atomic snapshot store and
   an embedded event log with JetStream-like semantics. v0.1.0

   DO THIS in exactly one C or C++ file, after opstate.h is available:

       #define OPSTATE_LMDB_IMPLEMENTATION
       #include "opstate_lmdb.h"       (it includes opstate.h itself)

   and link with -llmdb (Debian: liblmdb-dev). The core's implementation
   (OPSTATE_IMPLEMENTATION) may live in the same file or another one.

   CONTENTS (grep the tag)
       >>env      one LMDB environment per path per process, map growth
       >>store    snapshot store: meta + table + delta records, compaction,
                  read-through base, whole-blob mode, layout migration
       >>log      embedded event log: sequences, retention, duplicate
                  window, expected last subject sequence, epoch
       >>export   compacted copy + manifest; verified import

   USAGE
       opstate_lmdb *env;
       opstate_lmdb_config ec = {0};
       ec.path = "state";                      a directory, created 0700
       opstate_lmdb_open(&ec, &env, &err);

       opstate_lmdb_store *st;                 one per consumer
       opstate_lmdb_store_config sc = {0};
       sc.name = "projector";
       opstate_lmdb_store_open(env, &sc, &st, &err);
       cfg.store = opstate_lmdb_store_iface(st);   for opstate_consumer_open

       opstate_lmdb_log *lg;                   the embedded log (optional)
       opstate_lmdb_log_config lc = {0};
       opstate_lmdb_log_open(env, &lc, &lg, &err);
       cfg.log = opstate_lmdb_log_iface(lg);

   LAYOUT (inside one environment; a store named N and a log named L)
       s:N:meta    "meta" -> position, schema versions, dedup window, CRC
       s:N:table   key -> u64 seq | i64 time | value | CRC  (compacted state)
       s:N:deltas  u64 BE flush number -> one record of that flush's puts
                   and deletes (appended with MDB_APPEND), CRC
       l:L:msgs    u64 BE seq -> time | id | subject | data | seal
       l:L:subj    subject -> first, last, count;  l:L:bysubj subject 0 seq
       l:L:ids     id -> seq;  l:L:idseq  seq -> id  (the ids appended
                   within the duplicate window, a time as on JetStream)
       l:L:meta    "info" -> epoch, last seq, last time, count, layout
   Every log record ends with a seal: CRC32C of its key and value (layout
   1; a 0.1 log is migrated by the first read-write open). Delta records
   sum their flush number too. opstate_lmdb_verify checks them all.
   A flush appends ONE delta record and the meta in ONE write transaction:
   cost O(changes); it reads the fold and never changes it. Compaction
   folds the deltas into the table in its own transaction, never inside a
   flush: the store says when it is due (the deltas passed a bound, bytes
   or flushes) or overdue (4 times the bound), and the consumer runs it in
   a poll that finds nothing to apply (an overdue one at once), then lets
   a read-through fold forget what the table now holds. Without a
   consumer, call opstate_lmdb_store_compact. Keys are at most 511 bytes
   (LMDB's limit).

   READ-THROUGH OR LOAD-ALL (opstate_lmdb_store_config.read_through)
       read-through  the fold holds only what changed since the last
                     compaction and reads the rest from the table (zero
                     copy): restart is O(deltas), ~0.2-0.3 ms whatever the
                     state size; state may exceed RAM. Best for restarts.
       load-all      (the default) the fold holds every key: restart copies
                     the table into memory, O(state) (~15 ms for 8 MiB);
                     reads never touch LMDB afterwards.

   DURABILITY (opstate_lmdb_config.durability)
       OPSTATE_LMDB_SYNC_FULL (default)  fsync data and meta on commit: a
                                         commit survives power loss
       OPSTATE_LMDB_SYNC_NO_META         one flush per commit; a power loss
                                         may undo the last commit (never
                                         tears it)
       OPSTATE_LMDB_SYNC_NONE            the OS writes back when it likes;
                                         survives kill -9, not power loss
   `make bench` measures the three.

   ERRORS: opstate results; the LMDB status code (MDB_* or errno) is kept in
   opstate_error.dep_status next to it. Files are created with mode 0600.
   CORRUPT: a bad record or a file unfit to map (checked before mapping);
   LOCKED: another process holds the environment for writing; NO_SPACE: the
   disk is full; FULL: the map reached max_map_size.

   OWNERSHIP: one writer process per environment (opstate_lmdb_config.access
   CREATE or EXISTING), any number of READ_ONLY readers. An environment, its
   logs and stores are used by one thread at a time.

   BUILD: no flags needed (-std=c99, c11, gnu99, C++); link with -llmdb.
   One rule under strict -std=c99 / c11: in the file that defines
   OPSTATE_LMDB_IMPLEMENTATION, include opstate_lmdb.h (or opstate.h)
   before any system header; a file holding just the two lines above is
   simplest. The implementation uses POSIX, which glibc shows only when
   asked before the FIRST system header, and opstate.h asks
   (_DEFAULT_SOURCE, what gnu99 gets). A file that includes <stdio.h> or
   the like first defines _POSIX_C_SOURCE 200809L itself, above it;
   otherwise an #error says so.

   See the end of the file for the license. */

#ifndef OPSTATE_LMDB_H_INCLUDED
#define OPSTATE_LMDB_H_INCLUDED

#include "opstate.h"

#define OPSTATE_LMDB_VERSION_MAJOR 0
#define OPSTATE_LMDB_VERSION_MINOR 1
#define OPSTATE_LMDB_VERSION_PATCH 0
#define OPSTATE_LMDB_VERSION_STRING "0.1.0"
/* On-disk layout of a store; older layouts are migrated on open. */
#define OPSTATE_LMDB_LAYOUT_VERSION 1
/* On-disk layout of a log: 1 seals every record with a CRC32C over its key
   and value. A layout-0 log (opstate 0.1) is migrated when it is opened
   read-write (one transaction); a read-only open refuses it with
   UNKNOWN_VERSION. */
#define OPSTATE_LMDB_LOG_LAYOUT_VERSION 1
/* Export manifest format. */
#define OPSTATE_LMDB_MANIFEST_VERSION 1

#if OPSTATE_VERSION_MAJOR != 0 || OPSTATE_VERSION_MINOR < 1
#error "opstate_lmdb.h needs opstate.h 0.1 or newer (same major)"
#endif
#ifdef OPSTATE_NO_MALLOC
#error "opstate_lmdb.h allocates: do not define OPSTATE_NO_MALLOC"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* >>env ------------------------------------------------------------------ */

typedef enum opstate_lmdb_durability {
    OPSTATE_LMDB_SYNC_FULL = 0,
    OPSTATE_LMDB_SYNC_NO_META,
    OPSTATE_LMDB_SYNC_NONE
} opstate_lmdb_durability;

/* What an open may do to the files (DESIGN.md "Ownership"). */
typedef enum opstate_lmdb_access {
    OPSTATE_LMDB_CREATE = 0,  /* read-write; creates the directory and files
                                 when they do not exist (publishers, stores) */
    OPSTATE_LMDB_EXISTING,    /* read-write; NOT_FOUND unless data.mdb exists */
    OPSTATE_LMDB_READ_ONLY    /* never creates, writes or compacts (LMDB only
                                 keeps its reader table in lock.mdb);
                                 NOT_FOUND unless data.mdb exists */
} opstate_lmdb_access;

typedef struct opstate_lmdb_config {
    const char *path;         /* directory holding data.mdb and lock.mdb */
    opstate_lmdb_access access;
    unsigned mode;            /* file mode (0: 0600) */
    size_t map_size;          /* initial map size (0: 64 MiB) */
    size_t max_map_size;      /* growth stops here (0: 16 GiB), then FULL */
    unsigned max_readers;     /* reader slots (0: 126) */
    unsigned max_dbs;         /* named databases (0: 64; a store uses 3, a log 6) */
    opstate_lmdb_durability durability;
    /* No OS readahead on the mapped file (MDB_NORDAHEAD): for a
       read-through store larger than the memory it may use, whose reads
       are random. With readahead each page fault reads up to the device's
       read_ahead_kb (8 MiB was seen), evicted again before it is used
       under a memory cap. Leave it off for sequential work (load-all
       restarts, log replays from a cold cache). */
    bool no_readahead;
    opstate_allocator allocator;
    opstate_diag diag;
} opstate_lmdb_config;

typedef struct opstate_lmdb opstate_lmdb;

/* Opens the environment at cfg->path (creating it only with access
   CREATE). Before LMDB maps data.mdb it is checked: both meta pages, the
   page size, and a file size that covers every page the metas name; a file
   unfit to map is CORRUPT (a truncated file would otherwise kill the
   process with SIGBUS), an empty or missing one NOT_FOUND. One writer
   process at a time: a read-write open while another process holds the
   environment for writing is LOCKED (err->dep_status: the holder's pid
   when known; a crashed holder never blocks). Refuses a second open of the
   same directory in this process with ALREADY_OPEN (a second handle would
   break LMDB's locks). A child process after fork() must not use its
   parent's handles, and may open the path itself once the parent closed
   its own writer handle. A full disk is NO_SPACE. Clears stale reader
   slots. */
OPSTATE_API opstate_result opstate_lmdb_open(const opstate_lmdb_config *cfg, opstate_lmdb **out,
                                             opstate_error *err);
/* Closes the environment. Close its stores and logs first. */
OPSTATE_API void opstate_lmdb_close(opstate_lmdb *env);
/* Current map size in bytes. */
OPSTATE_API size_t opstate_lmdb_map_size(const opstate_lmdb *env);
/* How many logs and state stores the environment holds (a tool can refuse
   to put a log into a state store's directory, or the reverse). */
OPSTATE_API opstate_result opstate_lmdb_contents(opstate_lmdb *env, size_t *logs, size_t *stores, opstate_error *err);
/* Forces everything committed to disk (for SYNC_NO_META / SYNC_NONE
   environments, e.g. after a bulk load). */
OPSTATE_API opstate_result opstate_lmdb_sync(opstate_lmdb *env, opstate_error *err);

/* >>store ---------------------------------------------------------------- */

typedef struct opstate_lmdb_store_config {
    const char *name;          /* 1..64 bytes of [A-Za-z0-9_-] */
    bool read_through;         /* the fold reads the table through a base:
                                  restart is O(deltas), state may exceed RAM;
                                  false (load-all): load copies the whole
                                  table into the fold, O(state) */
    uint64_t compact_bytes;    /* a compaction is due when deltas pass this
                                  (0: 8 MiB), overdue at 4 times it */
    uint32_t compact_flushes;  /* ... or this many flushes (0: 64) */
    bool no_compact_on_close;  /* by default closing the store folds pending
                                  deltas in, so the next start has no tail */
} opstate_lmdb_store_config;

typedef struct opstate_lmdb_store opstate_lmdb_store;

/* Opens the store `name` in env, migrating an older layout (a single
   opstate snapshot record, layout 0) in one transaction; UNKNOWN_VERSION for
   a newer layout. Closing it compacts pending deltas unless
   no_compact_on_close is set. */
OPSTATE_API opstate_result opstate_lmdb_store_open(opstate_lmdb *env, const opstate_lmdb_store_config *cfg,
                                                   opstate_lmdb_store **out, opstate_error *err);
OPSTATE_API void opstate_lmdb_store_close(opstate_lmdb_store *st);
/* The store interface for opstate_consumer_config.store. */
OPSTATE_API opstate_store opstate_lmdb_store_iface(opstate_lmdb_store *st);
/* Folds the delta records into the table now (one transaction). A
   read-through fold over this store may then forget its clean entries
   (opstate_kv_forget_clean); the consumer does both when it chooses. */
OPSTATE_API opstate_result opstate_lmdb_store_compact(opstate_lmdb_store *st, opstate_error *err);
/* Delta records waiting for compaction: count and bytes. */
OPSTATE_API void opstate_lmdb_store_deltas(const opstate_lmdb_store *st, uint32_t *count, uint64_t *bytes);
/* Whole-blob mode for opaque state: saves bytes and meta in one
   transaction (replacing any KV state of the store). */
OPSTATE_API opstate_result opstate_lmdb_blob_save(opstate_lmdb_store *st, opstate_bytes blob,
                                                  const opstate_snapshot_meta *meta, opstate_error *err);
/* Calls fn with the stored blob (zero-copy, valid during the call) and its
   meta. NOT_FOUND when no blob is stored; CORRUPT on a bad checksum. */
OPSTATE_API opstate_result opstate_lmdb_blob_load(opstate_lmdb_store *st,
                                                  void (*fn)(void *user, opstate_bytes blob,
                                                             const opstate_snapshot_meta *meta),
                                                  void *user, opstate_error *err);

/* >>log ------------------------------------------------------------------ */

typedef struct opstate_lmdb_log_config {
    const char *name;          /* 1..64 bytes of [A-Za-z0-9_-] (0: "events") */
    uint64_t max_messages;     /* retention: 0 = unlimited */
    int64_t max_age_ns;        /* retention by publish time: 0 = unlimited */
    uint64_t max_per_subject;  /* retention per subject: 0 = unlimited */
    int64_t duplicate_window_ns; /* an id appended again within this much
                                    publish time is a duplicate (0:
                                    OPSTATE_DUPLICATE_WINDOW_NS, 2 min) */
    int64_t (*clock)(void *user); /* publish time in ns; NULL: CLOCK_REALTIME */
    void *clock_user;
    int64_t poll_interval_ns;  /* a waiting read looks again this often (0: 1 ms) */
} opstate_lmdb_log_config;

typedef struct opstate_lmdb_log opstate_lmdb_log;

/* Opens the log `name` in env, creating it only when env was opened with
   access CREATE: otherwise a missing log is NOT_FOUND, and CONFLICT when
   the environment holds state stores only. Every record is sealed with a
   CRC32C over its key and value; a read that meets a bad record, or
   sequences that do not go forward, stops with CORRUPT (err->offset: the
   first sequence not delivered). A layout-0 log (opstate 0.1) is migrated
   by a read-write open; a read-only open refuses it (UNKNOWN_VERSION).
   Readers in other processes open the environment READ_ONLY while the one
   writer appends. Subjects are at most 500 bytes. */
OPSTATE_API opstate_result opstate_lmdb_log_open(opstate_lmdb *env, const opstate_lmdb_log_config *cfg,
                                                 opstate_lmdb_log **out, opstate_error *err);
OPSTATE_API void opstate_lmdb_log_close(opstate_lmdb_log *lg);
/* The log interface (read pointers stay valid until the next call on the
   log or a map growth of the environment). */
OPSTATE_API opstate_log opstate_lmdb_log_iface(opstate_lmdb_log *lg);
/* One message of a batch append. */
typedef struct opstate_lmdb_append_item {
    opstate_bytes subject, data;
    opstate_append_options opts; /* msg_id, expected last subject sequence */
} opstate_lmdb_append_item;

/* Appends n messages in ONE transaction (one commit, one fsync: a bulk
   load runs at LMDB's bulk speed). All or nothing: a CONFLICT or an invalid
   subject refuses the whole batch, with err->offset the failing item's
   index. out[i] gets each message's sequence and duplicate flag (an id
   repeated inside the batch is a duplicate of its first copy). */
OPSTATE_API opstate_result opstate_lmdb_log_append_batch(opstate_lmdb_log *lg, const opstate_lmdb_append_item *items,
                                                         size_t n, opstate_append_result *out, opstate_error *err);
/* Deletes every message and starts a new incarnation: sequences restart
   at 1 and the epoch changes. */
OPSTATE_API opstate_result opstate_lmdb_log_recreate(opstate_lmdb_log *lg, opstate_error *err);
/* Removes every message below `below_seq`, as retention would. */
OPSTATE_API opstate_result opstate_lmdb_log_purge(opstate_lmdb_log *lg, uint64_t below_seq, opstate_error *err);

/* >>verify --------------------------------------------------------------- */

/* What opstate_lmdb_verify walked, and where it stopped. */
typedef struct opstate_lmdb_verify_report {
    uint64_t logs, stores, records; /* records checked */
    char where[160];                /* the first bad record: database and key */
} opstate_lmdb_verify_report;

/* Walks every log and store of the environment in one read transaction and
   checks every record: the seal of each log record, sequences that go
   forward, the info record and its counts; a store's meta, every table
   entry, every delta record and the delta chain, a blob's checksum. OK, or
   CORRUPT (UNKNOWN_VERSION for a layout this program does not know) with
   the first bad record in out->where and err->offset (its sequence or flush
   number). Never writes. */
OPSTATE_API opstate_result opstate_lmdb_verify(opstate_lmdb *env, opstate_lmdb_verify_report *out, opstate_error *err);

/* >>export --------------------------------------------------------------- */

/* Writes a compacted copy of the environment into directory `dir` (created;
   it must not exist or be empty): data.mdb (mdb_env_copy2 with
   MDB_CP_COMPACT, then fsync of the file and the directory) and MANIFEST
   (format version, the size and CRC32C of data.mdb, the position of every
   store). */
OPSTATE_API opstate_result opstate_lmdb_export(opstate_lmdb *env, const char *dir, opstate_error *err);
/* Verifies an export and installs it as a new environment at `dest` (which
   must not exist or be empty): MALFORMED for a bad manifest or an extra
   file, NOT_FOUND for a missing one, CORRUPT for a size or checksum
   mismatch, CONFLICT when a store's position differs from the manifest. */
OPSTATE_API opstate_result opstate_lmdb_import(const char *dir, const char *dest, opstate_error *err);

#ifdef __cplusplus
}
#endif

#endif /* OPSTATE_LMDB_H_INCLUDED */

/* ======================================================================
   API ends here; implementation below.
   ====================================================================== */

#if defined(OPSTATE_LMDB_IMPLEMENTATION) && !defined(OPSTATE_LMDB_IMPLEMENTATION_INCLUDED)
#define OPSTATE_LMDB_IMPLEMENTATION_INCLUDED

#include <lmdb.h>
#include <errno.h>
#include <string.h>
#include <stdlib.h>
#include <stdio.h>
#include <time.h>
#include <pthread.h>
#include <fcntl.h>
#include <unistd.h>
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

/* POSIX.1-2008 must be visible (see BUILD at the top): these two macros
   stand for the rest (clock_gettime, nanosleep, pread, posix_fallocate,
   fileno). */
#if !defined(CLOCK_MONOTONIC) || !defined(O_CLOEXEC)
#error "opstate_lmdb.h: POSIX.1-2008 is hidden: include it before any system header (see BUILD at its top)"
#endif

#if defined(__GNUC__) || defined(__clang__)
#define OPSTATE_LMDB__PRIVATE static __attribute__((unused))
#else
#define OPSTATE_LMDB__PRIVATE static
#endif

/* >>env ------------------------------------------------------------------ */

#define OPSTATE_LMDB__ABORT (-1) /* a transaction body failed for an opstate reason */
#define OPSTATE_LMDB__MAX_KEY 511u

OPSTATE_LMDB__PRIVATE MDB_val opstate_lmdb__val(const void *p, size_t n)
{
    MDB_val v;
    v.mv_data = (void *)(uintptr_t)p;
    v.mv_size = n;
    return v;
}

OPSTATE_LMDB__PRIVATE void opstate_lmdb__put_be64(uint8_t *p, uint64_t v)
{
    int i;
    for (i = 7; i >= 0; i--, v >>= 8) p[i] = (uint8_t)v;
}

OPSTATE_LMDB__PRIVATE uint64_t opstate_lmdb__get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    int i;
    for (i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* Byte string view of an LMDB value. */
OPSTATE_LMDB__PRIVATE opstate_bytes opstate_lmdb__bytes(const MDB_val *v)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)v->mv_data;
    b.len = v->mv_size;
    return b;
}

/* A read transaction kept between calls (reset, then renewed), so that
   returned pointers stay valid until the next call. */
typedef struct opstate_lmdb__reader {
    MDB_txn *txn;
    bool active;
    struct opstate_lmdb__reader *next;
} opstate_lmdb__reader;

struct opstate_lmdb {
    MDB_env *env;
    opstate_lmdb_config cfg;
    char *path;
    dev_t dev;
    ino_t ino;
    pid_t pid; /* a handle inherited through fork() belongs to the parent */
    int lock_fd; /* data.mdb: flock()ed by a writer, only open for a reader */
    ino_t data_ino;
    size_t map_size, max_map_size;
    const uint8_t *map;  /* where data.mdb is mapped (NULL: not known) */
    size_t map_valid;    /* bytes of it backed by the file: every page a
                            committed meta names */
    unsigned page_size;
    opstate_lmdb__reader *readers; /* every reader of this environment */
    struct opstate_lmdb *next_open;
};

/* Environments open in this process, keyed by the directory's (dev, inode). */
static pthread_mutex_t opstate_lmdb__registry_lock = PTHREAD_MUTEX_INITIALIZER;
static opstate_lmdb *opstate_lmdb__registry;

/* Maps an LMDB status (MDB_* or errno) to a result, keeping the raw code. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__fail(opstate_error *err, int rc, const char *field)
{
    opstate_result r;
    switch (rc) {
    case MDB_NOTFOUND: r = OPSTATE_NOT_FOUND; break;
    case MDB_MAP_FULL: r = OPSTATE_FULL; break;
    case ENOSPC: case EDQUOT: r = OPSTATE_NO_SPACE; break;
    case MDB_CORRUPTED: case MDB_PAGE_NOTFOUND: r = OPSTATE_CORRUPT; break;
    case MDB_VERSION_MISMATCH: case MDB_INVALID: r = OPSTATE_UNKNOWN_VERSION; break;
    case MDB_BAD_VALSIZE: r = OPSTATE_OVERSIZED; break;
    case ENOMEM: r = OPSTATE_NO_MEMORY; break;
    case EINVAL: r = OPSTATE_INVALID_ARGUMENT; break;
    default: r = OPSTATE_IO; break;
    }
    return opstate_error_set(err, r, field, rc);
}

OPSTATE_LMDB__PRIVATE void opstate_lmdb__join(char *out, size_t cap, const char *dir, const char *file)
{
    snprintf(out, cap, "%s/%s", dir, file);
}

/* >>check: a data file is checked before LMDB maps it ------------------- */

#define OPSTATE_LMDB__MAGIC 0xBEEFC0DEu /* LMDB's meta page: mm_magic */
#define OPSTATE_LMDB__DATA_VERSION 1u   /* mm_version of LMDB 0.9 files */
#define OPSTATE_LMDB__P_META 0x08u      /* mp_flags of a meta page */

/* What one LMDB meta page says (native byte order and word size, as LMDB
   writes it: page header = pgno word, pad, flags, lower/upper; then magic,
   version, address, map size, two MDB_db records, last page, txnid). */
typedef struct opstate_lmdb__meta_page {
    size_t page_size, last_page, roots[2], txnid;
} opstate_lmdb__meta_page;

OPSTATE_LMDB__PRIVATE size_t opstate_lmdb__word(const uint8_t *p)
{
    size_t w;
    OPSTATE_MEMCPY(&w, p, sizeof w);
    return w;
}

/* Decodes the meta page at `p` (n bytes read): false when it is not one. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__meta_page_read(const uint8_t *p, size_t n, opstate_lmdb__meta_page *m)
{
    const size_t w = sizeof(size_t), meta = w + 8, db = 8 + 5 * w, dbs = meta + 8 + 2 * w;
    uint16_t flags;
    uint32_t magic, version, psize;
    if (n < dbs + 2 * db + 2 * w) return OPSTATE_CORRUPT;
    OPSTATE_MEMCPY(&flags, p + w + 2, 2);
    OPSTATE_MEMCPY(&magic, p + meta, 4);
    OPSTATE_MEMCPY(&version, p + meta + 4, 4);
    OPSTATE_MEMCPY(&psize, p + dbs, 4);
    if (!(flags & OPSTATE_LMDB__P_META) || magic != OPSTATE_LMDB__MAGIC) return OPSTATE_CORRUPT;
    if (version != OPSTATE_LMDB__DATA_VERSION) return OPSTATE_UNKNOWN_VERSION;
    if (psize < 512 || psize > 65536 || (psize & (psize - 1))) return OPSTATE_CORRUPT;
    m->page_size = psize;
    m->roots[0] = opstate_lmdb__word(p + dbs + 8 + 4 * w);
    m->roots[1] = opstate_lmdb__word(p + dbs + db + 8 + 4 * w);
    m->last_page = opstate_lmdb__word(p + dbs + 2 * db);
    m->txnid = opstate_lmdb__word(p + dbs + 2 * db + w);
    return OPSTATE_OK;
}

/* Reads meta page i (0 or 1) of the open data file fd into m[i]; meta 1
   starts one page (the size meta 0 gives, in m[0]) into the file. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__meta_read(int fd, int i, opstate_lmdb__meta_page m[2])
{
    uint8_t page[256];
    ssize_t got = pread(fd, page, sizeof page, i ? (off_t)m[0].page_size : 0);
    return opstate_lmdb__meta_page_read(page, got > 0 ? (size_t)got : 0, &m[i]);
}

/* Bytes of file both metas need: every page they name, roots included. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__meta_fits(const opstate_lmdb__meta_page *m, uint64_t file_size)
{
    int i;
    if (m->last_page < 1 || m->last_page >= file_size / m->page_size) return false;
    for (i = 0; i < 2; i++)
        if (m->roots[i] != (size_t)-1 && m->roots[i] > m->last_page) return false;
    return true;
}

/* LMDB writes transaction t's meta into page t % 2, so the two metas hold
   consecutive ids (or both 0). A damaged id would make LMDB quietly fall
   back to the older meta: a lost commit. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__metas_agree(const opstate_lmdb__meta_page m[2])
{
    size_t lo = m[0].txnid < m[1].txnid ? m[0].txnid : m[1].txnid, hi = m[0].txnid ^ m[1].txnid ^ lo;
    if (m[0].txnid % 2 != 0 || (m[1].txnid && m[1].txnid % 2 != 1)) return false;
    return hi - lo == 1 || (hi == 0 && lo == 0);
}

/* Checks data file `file` before it is mapped: NOT_FOUND when missing or
   empty, CORRUPT when a meta page is bad or the file is shorter than the
   pages the metas name, UNKNOWN_VERSION for another LMDB data version. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__check_file(const char *file, opstate_error *err)
{
    opstate_lmdb__meta_page m[2];
    struct stat sb;
    opstate_result r = OPSTATE_OK;
    int i, fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? opstate_error_set(err, OPSTATE_NOT_FOUND, "data.mdb", ENOENT)
                                       : opstate_lmdb__fail(err, errno, "data.mdb");
    if (fstat(fd, &sb) != 0) r = opstate_lmdb__fail(err, errno, "data.mdb");
    else if (sb.st_size == 0) r = opstate_error_set(err, OPSTATE_NOT_FOUND, "data.mdb is empty", 0);
    for (i = 0; i < 2 && r == OPSTATE_OK; i++) {
        r = opstate_lmdb__meta_read(fd, i, m);
        if (r == OPSTATE_OK && i && m[1].page_size != m[0].page_size) r = OPSTATE_CORRUPT;
        if (r == OPSTATE_OK && !opstate_lmdb__meta_fits(&m[i], (uint64_t)sb.st_size)) r = OPSTATE_CORRUPT;
        if (r != OPSTATE_OK)
            r = opstate_error_set(err, r, r == OPSTATE_CORRUPT ? "data.mdb: bad meta page or truncated file"
                                                                : "data.mdb: another LMDB data version", 0);
        if (r != OPSTATE_OK && err) err->offset = i ? m[0].page_size : 0;
    }
    if (r == OPSTATE_OK && !opstate_lmdb__metas_agree(m))
        r = opstate_error_set(err, OPSTATE_CORRUPT, "data.mdb: the meta pages' transaction ids disagree", 0);
    close(fd);
    return r;
}

/* The main table's root page number as the newer meta page of data.mdb
   names it; 0 when the metas do not read. */
OPSTATE_LMDB__PRIVATE size_t opstate_lmdb__main_root(const opstate_lmdb *e)
{
    opstate_lmdb__meta_page m[2];
    if (opstate_lmdb__meta_read(e->lock_fd, 0, m) != OPSTATE_OK || opstate_lmdb__meta_read(e->lock_fd, 1, m) != OPSTATE_OK)
        return 0;
    return m[m[1].txnid > m[0].txnid].roots[1];
}

/* Where data.mdb is mapped, from the first record of LMDB's main table
   (it names the environment's tables): LMDB finds a page at map start +
   page number x page size, so when that record lies in the root page the
   meta names (the page says so in its header, and a table of fewer than
   a page of names has no other), the map starts root pages before it.
   NULL when there is no record yet or the numbers disagree (a damaged
   page, a deeper table, a commit in between). */
OPSTATE_LMDB__PRIVATE const uint8_t *opstate_lmdb__map_from_main(const opstate_lmdb *e)
{
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi main_dbi;
    MDB_val k, v;
    uintptr_t page = 0;
    size_t root, pgno = 0, ps = e->page_size;
    if (ps < 512 || (ps & (ps - 1)) || mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn) != 0) return NULL;
    if (mdb_dbi_open(txn, NULL, 0, &main_dbi) == 0 && mdb_cursor_open(txn, main_dbi, &cur) == 0 &&
        mdb_cursor_get(cur, &k, &v, MDB_FIRST) == 0) {
        page = (uintptr_t)k.mv_data & ~(uintptr_t)(ps - 1);
        OPSTATE_MEMCPY(&pgno, (const void *)page, sizeof pgno); /* mp_pgno */
    }
    if (cur) mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    root = opstate_lmdb__main_root(e);
    if (!page || pgno != root || pgno < 2 || pgno >= e->map_size / ps || pgno > page / ps) return NULL;
    return (const uint8_t *)(page - pgno * ps);
}

/* Finds where data.mdb is mapped: from a page of the map, else (a new
   environment; Linux) /proc/self/maps, by inode; elsewhere lengths stay
   unchecked. */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__locate_map(opstate_lmdb *e, ino_t data_ino)
{
    char line[512];
    unsigned long lo, hi, ino;
    FILE *f;
    if ((e->map = opstate_lmdb__map_from_main(e)) != NULL) return;
    opstate_diag_line(&e->cfg.diag, OPSTATE_DIAG_INFO, "lmdb: the start of the ", (uint64_t)e->map_size,
                      "-byte map is not found from its pages (a new environment, or a damaged page number)");
    f = fopen("/proc/self/maps", "r");
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "%lx-%lx %*s %*s %*s %lu", &lo, &hi, &ino) == 3 && (ino_t)ino == data_ino && hi - lo >= e->map_size) {
            e->map = (const uint8_t *)(uintptr_t)lo;
            break;
        }
    if (f) fclose(f);
}

/* Refreshes how much of the map the file backs (every committed page);
   known even where the map's address is not. */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__bound(opstate_lmdb *e)
{
    MDB_envinfo info;
    if (mdb_env_info(e->env, &info) != 0) return;
    e->map_valid = (info.me_last_pgno + 1) * (size_t)e->page_size;
}

/* A value too big for a leaf lives on overflow pages: its page header must
   say so and count exactly the pages the value needs (LMDB frees that many
   when the value changes; a damaged count would free or loop over pages
   that are not the value's). */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__overflow_ok(const opstate_lmdb *e, const uint8_t *value, size_t size)
{
    const size_t header = sizeof(size_t) + 8; /* LMDB's PAGEHDRSZ */
    const uint8_t *page = value - header;
    uint16_t flags;
    uint32_t pages;
    if ((size_t)(page - e->map) % e->page_size != 0) return true; /* inside a leaf page: bounded above */
    OPSTATE_MEMCPY(&flags, page + sizeof(size_t) + 2, 2);
    OPSTATE_MEMCPY(&pages, page + sizeof(size_t) + 4, 4);
    return (flags & 0x04u) && pages == (header + size + e->page_size - 1) / e->page_size; /* P_OVERFLOW */
}

/* The leaf page holding `p` (a key LMDB handed back) is whole: its header
   says leaf, its key count fits, every node lies in the used space and the
   nodes fill exactly that space, so a damaged key count cannot hide the
   page's last records. `*checked` remembers the last page found good. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__leaf_ok(const opstate_lmdb *e, const void *p, const uint8_t **checked)
{
    const size_t header = sizeof(size_t) + 8, ps = e->page_size;
    const uint8_t *page;
    uint16_t flags, lower, upper, at, ksize, nflags, i;
    size_t used = 0;
    if (!e->map || (const uint8_t *)p < e->map || (size_t)((const uint8_t *)p - e->map) >= e->map_valid) return true;
    page = e->map + ((size_t)((const uint8_t *)p - e->map) / ps) * ps;
    if (page == *checked) return true;
    OPSTATE_MEMCPY(&flags, page + header - 6, 2);
    OPSTATE_MEMCPY(&lower, page + header - 4, 2);
    OPSTATE_MEMCPY(&upper, page + header - 2, 2);
    if (!(flags & 0x02u) || lower < header || lower > upper || upper > ps || (lower - header) % 2) return false;
    for (i = 0; i < (lower - header) / 2; i++) {
        uint16_t lo, hi;
        size_t dsize;
        OPSTATE_MEMCPY(&at, page + header + 2u * i, 2);
        if (at < upper || (size_t)at + 8 > ps) return false;
        OPSTATE_MEMCPY(&lo, page + at, 2); /* mn_lo, mn_hi: the data size, native halves */
        OPSTATE_MEMCPY(&hi, page + at + 2, 2);
        dsize = (size_t)lo | (size_t)hi << 16;
        OPSTATE_MEMCPY(&nflags, page + at + 4, 2);
        OPSTATE_MEMCPY(&ksize, page + at + 6, 2);
        used += (8u + ksize + ((nflags & 0x01u) ? sizeof(size_t) : dsize) + 1u) & ~(size_t)1; /* F_BIGDATA, EVEN */
    }
    if (used != ps - upper) return false;
    *checked = page;
    return true;
}

/* False when a key or value LMDB handed back lies inside the map but runs
   past the bytes the file backs (a corrupt length); pages of a write
   transaction live outside the map and are LMDB's own. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__in_bounds(const opstate_lmdb *e, const MDB_val *v)
{
    uintptr_t p = (uintptr_t)v->mv_data, lo = (uintptr_t)e->map;
    if (!e->map || p < lo || p - lo >= e->map_size) return true;
    if (p - lo > e->map_valid || v->mv_size > e->map_valid - (p - lo)) return false;
    return v->mv_size <= e->page_size / 2 || opstate_lmdb__overflow_ok(e, (const uint8_t *)v->mv_data, v->mv_size);
}

/* mdb_get and mdb_cursor_get with the key and value bounded. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__get(const opstate_lmdb *e, MDB_txn *txn, MDB_dbi dbi, MDB_val *k, MDB_val *v)
{
    int rc = mdb_get(txn, dbi, k, v);
    return rc == 0 && !opstate_lmdb__in_bounds(e, v) ? MDB_CORRUPTED : rc;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__cursor_get(const opstate_lmdb *e, MDB_cursor *cur, MDB_val *k, MDB_val *v,
                                                   MDB_cursor_op op)
{
    int rc = mdb_cursor_get(cur, k, v, op);
    return rc == 0 && (!opstate_lmdb__in_bounds(e, k) || !opstate_lmdb__in_bounds(e, v)) ? MDB_CORRUPTED : rc;
}

OPSTATE_LMDB__PRIVATE void opstate_lmdb__reader_end(opstate_lmdb__reader *rd)
{
    if (rd->active) mdb_txn_reset(rd->txn);
    rd->active = false;
}

/* Ends every read transaction of the environment: needed before the map
   may move (growth here or in another process). */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__quiesce(opstate_lmdb *e)
{
    opstate_lmdb__reader *rd;
    for (rd = e->readers; rd; rd = rd->next) opstate_lmdb__reader_end(rd);
}

/* Learns the size LMDB gave the map (at least every committed page)
   and where it lies. */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__learn_map(opstate_lmdb *e)
{
    MDB_envinfo info;
    mdb_env_info(e->env, &info);
    e->map_size = info.me_mapsize;
    opstate_lmdb__locate_map(e, e->data_ino);
}

/* Adopts a map grown by another process (MDB_MAP_RESIZED). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__adopt_map(opstate_lmdb *e)
{
    int rc;
    opstate_lmdb__quiesce(e);
    if ((rc = mdb_env_set_mapsize(e->env, 0)) != 0) return rc;
    opstate_lmdb__learn_map(e);
    return 0;
}

/* Starts (or renews) a reader's transaction. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__reader_begin(opstate_lmdb *e, opstate_lmdb__reader *rd,
                                                                 opstate_error *err)
{
    int rc;
    opstate_lmdb__reader_end(rd);
    for (;;) {
        rc = rd->txn ? mdb_txn_renew(rd->txn) : mdb_txn_begin(e->env, NULL, MDB_RDONLY, &rd->txn);
        if (rc != MDB_MAP_RESIZED) break;
        if ((rc = opstate_lmdb__adopt_map(e)) != 0) break;
    }
    if (rc != 0) return opstate_lmdb__fail(err, rc, "read transaction");
    rd->active = true;
    opstate_lmdb__bound(e);
    return OPSTATE_OK;
}

OPSTATE_LMDB__PRIVATE void opstate_lmdb__reader_add(opstate_lmdb *e, opstate_lmdb__reader *rd)
{
    OPSTATE_MEMSET(rd, 0, sizeof *rd);
    rd->next = e->readers;
    e->readers = rd;
}

OPSTATE_LMDB__PRIVATE void opstate_lmdb__reader_remove(opstate_lmdb *e, opstate_lmdb__reader *rd)
{
    opstate_lmdb__reader **p;
    for (p = &e->readers; *p && *p != rd; p = &(*p)->next) continue;
    if (*p) *p = rd->next;
    if (rd->txn) mdb_txn_abort(rd->txn);
    rd->txn = NULL;
}

/* Doubles the map (up to the limit) with every read transaction ended. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__grow(opstate_lmdb *e)
{
    size_t next = e->map_size * 2 > e->max_map_size ? e->max_map_size : e->map_size * 2;
    if (next <= e->map_size) return false;
    opstate_lmdb__quiesce(e);
    if (mdb_env_set_mapsize(e->env, next) != 0) return false;
    opstate_diag_line(&e->cfg.diag, OPSTATE_DIAG_INFO, "lmdb map grown to ", (uint64_t)next, " bytes");
    e->map_size = next;
    opstate_lmdb__locate_map(e, e->data_ino);
    return true;
}

/* Body of a write transaction: returns 0, an LMDB status, or
   OPSTATE_LMDB__ABORT with the reason in its own context. */
typedef int (*opstate_lmdb__txn_fn)(void *user, MDB_txn *txn);

/* Runs fn in a write transaction and commits. On MDB_MAP_FULL the whole
   transaction is redone after growing the map; past the limit it fails
   with FULL and nothing was written. */
/* Commits one tiny change. LMDB reuses pages freed by a transaction only
   after a later commit; when the map is full at its limit right after a
   drop or purge, this commit lets the retry use the freed pages. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__tick(opstate_lmdb *e)
{
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_val k = opstate_lmdb__val("opstate.tick", 12), v = opstate_lmdb__val("", 0);
    int rc = mdb_txn_begin(e->env, NULL, 0, &txn);
    if (rc != 0) return false;
    rc = mdb_dbi_open(txn, NULL, 0, &dbi);
    if (rc == 0) rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc == 0) return mdb_txn_commit(txn) == 0;
    mdb_txn_abort(txn);
    return false;
}

/* LMDB reports a short write (a disk that filled up in the middle of a
   commit) as EIO: when the disk then has under 1 MiB free, it is ENOSPC. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__why_io(const opstate_lmdb *e, int rc)
{
    struct statvfs fs;
    if (rc != EIO || statvfs(e->path, &fs) != 0) return rc;
    return (uint64_t)fs.f_bavail * fs.f_frsize < ((uint64_t)1 << 20) ? ENOSPC : rc;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__write(opstate_lmdb *e, opstate_lmdb__txn_fn fn, void *user,
                                                         opstate_result *abort_reason, opstate_error *err)
{
    bool ticked = false;
    if (e->cfg.access == OPSTATE_LMDB_READ_ONLY)
        return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "the environment is open read-only", EACCES);
    for (;;) {
        MDB_txn *txn;
        int rc = mdb_txn_begin(e->env, NULL, 0, &txn);
        if (rc == MDB_MAP_RESIZED && (rc = opstate_lmdb__adopt_map(e)) == 0) continue;
        if (rc != 0) return opstate_lmdb__fail(err, rc, "write transaction");
        opstate_lmdb__bound(e);
        rc = fn(user, txn);
        if (rc == 0) rc = mdb_txn_commit(txn);
        else mdb_txn_abort(txn);
        if (rc == 0) return OPSTATE_OK;
        if (rc == OPSTATE_LMDB__ABORT) return opstate_error_set(err, *abort_reason, "transaction", 0);
        if (rc == MDB_MAP_FULL && opstate_lmdb__grow(e)) continue;
        if (rc == MDB_MAP_FULL && !ticked) {
            ticked = true;
            if (opstate_lmdb__tick(e)) continue;
        }
        return opstate_lmdb__fail(err, opstate_lmdb__why_io(e, rc), "commit");
    }
}

OPSTATE_LMDB__PRIVATE char *opstate_lmdb__strdup(const opstate_allocator *a, const char *s)
{
    size_t n = strlen(s) + 1;
    char *copy = (char *)opstate_alloc(a, n);
    if (copy) OPSTATE_MEMCPY(copy, s, n);
    return copy;
}

/* Creates the directory (0700) if needed and registers (dev, inode);
   ALREADY_OPEN when this process has it open. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__register(opstate_lmdb *e, opstate_error *err)
{
    struct stat st;
    opstate_lmdb *it;
    opstate_result r = OPSTATE_OK;
    if (e->cfg.access == OPSTATE_LMDB_CREATE && mkdir(e->path, 0700) != 0 && errno != EEXIST)
        return opstate_lmdb__fail(err, errno, "path");
    if (stat(e->path, &st) != 0)
        return errno == ENOENT ? opstate_error_set(err, OPSTATE_NOT_FOUND, "path", ENOENT) : opstate_lmdb__fail(err, errno, "path");
    if (!S_ISDIR(st.st_mode)) return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "path is not a directory", ENOTDIR);
    e->dev = st.st_dev;
    e->ino = st.st_ino;
    e->pid = getpid();
    pthread_mutex_lock(&opstate_lmdb__registry_lock);
    for (it = opstate_lmdb__registry; it; it = it->next_open)
        if (it->dev == e->dev && it->ino == e->ino && it->pid == e->pid)
            r = opstate_error_set(err, OPSTATE_ALREADY_OPEN, "path", 0);
    if (r == OPSTATE_OK) {
        e->next_open = opstate_lmdb__registry;
        opstate_lmdb__registry = e;
    }
    pthread_mutex_unlock(&opstate_lmdb__registry_lock);
    return r;
}

OPSTATE_LMDB__PRIVATE void opstate_lmdb__unregister(opstate_lmdb *e)
{
    opstate_lmdb **p;
    pthread_mutex_lock(&opstate_lmdb__registry_lock);
    for (p = &opstate_lmdb__registry; *p && *p != e; p = &(*p)->next_open) continue;
    if (*p) *p = e->next_open;
    pthread_mutex_unlock(&opstate_lmdb__registry_lock);
}

OPSTATE_LMDB__PRIVATE unsigned opstate_lmdb__env_flags(const opstate_lmdb_config *c)
{
    unsigned flags = MDB_NOTLS;
    if (c->durability == OPSTATE_LMDB_SYNC_NO_META) flags |= MDB_NOMETASYNC;
    if (c->durability == OPSTATE_LMDB_SYNC_NONE) flags |= MDB_NOSYNC;
    if (c->access == OPSTATE_LMDB_READ_ONLY) flags |= MDB_RDONLY;
    if (c->no_readahead) flags |= MDB_NORDAHEAD;
    return flags;
}

/* The pid holding a flock() on inode `ino` (Linux: /proc/locks), or 0. */
OPSTATE_LMDB__PRIVATE long opstate_lmdb__lock_holder(ino_t ino)
{
    char line[256];
    long pid, found = 0;
    unsigned long node;
    FILE *f = fopen("/proc/locks", "r");
    while (f && !found && fgets(line, sizeof line, f))
        if (sscanf(line, "%*s FLOCK %*s %*s %ld %*x:%*x:%lu", &pid, &node) == 2 && (ino_t)node == ino) found = pid;
    if (f) fclose(f);
    return found;
}

/* One writer process per environment: an exclusive flock() on data.mdb,
   held while the handle is open and dropped by the kernel when the holder
   dies. LOCKED (dep_status: the holder's pid, or 0) when another has it. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__lock(opstate_lmdb *e, const char *file, opstate_error *err)
{
    struct stat sb;
    long holder;
    e->lock_fd = open(file, O_RDONLY | O_CLOEXEC);
    if (e->lock_fd < 0 || fstat(e->lock_fd, &sb) != 0) return opstate_lmdb__fail(err, errno, "data.mdb");
    e->data_ino = sb.st_ino;
    if (e->cfg.access == OPSTATE_LMDB_READ_ONLY || flock(e->lock_fd, LOCK_EX | LOCK_NB) == 0) return OPSTATE_OK;
    if (errno != EWOULDBLOCK) return opstate_lmdb__fail(err, errno, "lock");
    holder = opstate_lmdb__lock_holder(sb.st_ino);
    return opstate_error_set(err, OPSTATE_LOCKED, "held by another writer process", holder);
}

/* Makes lock.mdb with its blocks allocated when it does not exist: LMDB
   would ftruncate a sparse one and write through its map, which a full disk
   answers with SIGBUS. Room for every reader slot (64 bytes each) and
   LMDB's header; LMDB sizes its table by the file it finds. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__lock_file(const opstate_lmdb *e, opstate_error *err)
{
    char file[4096];
    off_t size = (off_t)(((size_t)e->cfg.max_readers * 64 + 512 + 4095) / 4096 * 4096);
    int fd, rc = 0;
    opstate_lmdb__join(file, sizeof file, e->path, "lock.mdb");
    if ((fd = open(file, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, (mode_t)e->cfg.mode)) < 0)
        return errno == EEXIST ? OPSTATE_OK : opstate_lmdb__fail(err, errno, "lock.mdb");
    rc = posix_fallocate(fd, 0, size);
    close(fd);
    if (rc == 0) return OPSTATE_OK;
    unlink(file);
    return opstate_lmdb__fail(err, rc, "lock.mdb");
}

/* Removes what a failed creation made (data.mdb did not exist before). */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__unmake(const opstate_lmdb *e)
{
    char file[4096];
    opstate_lmdb__join(file, sizeof file, e->path, "data.mdb");
    unlink(file);
    opstate_lmdb__join(file, sizeof file, e->path, "lock.mdb");
    unlink(file);
}

/* mdb_env_create .. mdb_env_open with the configured limits. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__mdb_open(opstate_lmdb *e)
{
    int rc;
    if ((rc = mdb_env_create(&e->env)) != 0) return rc;
    if ((rc = mdb_env_set_mapsize(e->env, e->map_size)) == 0 &&
        (rc = mdb_env_set_maxreaders(e->env, e->cfg.max_readers)) == 0 &&
        (rc = mdb_env_set_maxdbs(e->env, e->cfg.max_dbs)) == 0)
        rc = mdb_env_open(e->env, e->path, opstate_lmdb__env_flags(&e->cfg), (mdb_mode_t)e->cfg.mode);
    if (rc != 0) {
        mdb_env_close(e->env);
        e->env = NULL;
    }
    return rc;
}

/* Checks data.mdb, opens LMDB, takes the writer lock. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__env_open(opstate_lmdb *e, opstate_error *err)
{
    char file[4096];
    MDB_stat stat;
    int rc, dead = 0;
    bool fresh;
    opstate_result r;
    opstate_lmdb__join(file, sizeof file, e->path, "data.mdb");
    r = opstate_lmdb__check_file(file, err);
    fresh = r == OPSTATE_NOT_FOUND && access(file, F_OK) != 0 && e->cfg.access == OPSTATE_LMDB_CREATE;
    if (r != OPSTATE_OK && !fresh) return r;
    if (e->cfg.access != OPSTATE_LMDB_READ_ONLY && (r = opstate_lmdb__lock_file(e, err)) != OPSTATE_OK) return r;
    if ((rc = opstate_lmdb__mdb_open(e)) != 0) r = opstate_lmdb__fail(err, rc, "open");
    else r = opstate_lmdb__lock(e, file, err);
    if (r != OPSTATE_OK) {
        if (e->env) mdb_env_close(e->env);
        e->env = NULL;
        if (fresh) opstate_lmdb__unmake(e);
        return r;
    }
    mdb_reader_check(e->env, &dead);
    if (dead) opstate_diag_line(&e->cfg.diag, OPSTATE_DIAG_INFO, "lmdb: cleared ", (uint64_t)dead, " stale readers");
    mdb_env_stat(e->env, &stat);
    e->page_size = stat.ms_psize;
    opstate_lmdb__learn_map(e); /* mdb_env_open mapped every committed page: no remap needed */
    return OPSTATE_OK;
}

/* Every default of an environment config, in one place. */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__env_defaults(opstate_lmdb_config *cfg)
{
    if (!cfg->mode) cfg->mode = 0600;
    if (!cfg->map_size) cfg->map_size = (size_t)64 << 20;
    if (!cfg->max_map_size) cfg->max_map_size = (size_t)16 << 30;
    if (cfg->max_map_size < cfg->map_size) cfg->max_map_size = cfg->map_size;
    if (!cfg->max_readers) cfg->max_readers = 126;
    if (!cfg->max_dbs) cfg->max_dbs = 64;
}

OPSTATE_API opstate_result opstate_lmdb_open(const opstate_lmdb_config *cfg, opstate_lmdb **out, opstate_error *err)
{
    opstate_lmdb *e;
    opstate_result r;
    if (!cfg || !cfg->path || !cfg->path[0]) return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "path", 0);
    if (!(e = (opstate_lmdb *)opstate_alloc(&cfg->allocator, sizeof *e)))
        return opstate_error_set(err, OPSTATE_NO_MEMORY, "environment", 0);
    OPSTATE_MEMSET(e, 0, sizeof *e);
    e->cfg = *cfg;
    opstate_lmdb__env_defaults(&e->cfg);
    e->lock_fd = -1;
    e->map_size = e->cfg.map_size;
    e->max_map_size = e->cfg.max_map_size;
    if (!(e->path = opstate_lmdb__strdup(&cfg->allocator, cfg->path))) {
        opstate_free(&cfg->allocator, e);
        return opstate_error_set(err, OPSTATE_NO_MEMORY, "path", 0);
    }
    e->cfg.path = e->path;
    r = opstate_lmdb__register(e, err);
    if (r == OPSTATE_OK && (r = opstate_lmdb__env_open(e, err)) != OPSTATE_OK) opstate_lmdb__unregister(e);
    if (r != OPSTATE_OK && e->lock_fd >= 0) close(e->lock_fd);
    if (r != OPSTATE_OK) {
        opstate_free(&cfg->allocator, e->path);
        opstate_free(&cfg->allocator, e);
        return r;
    }
    *out = e;
    return OPSTATE_OK;
}

OPSTATE_API void opstate_lmdb_close(opstate_lmdb *e)
{
    opstate_allocator a;
    if (!e) return;
    a = e->cfg.allocator;
    while (e->readers) opstate_lmdb__reader_remove(e, e->readers);
    mdb_env_close(e->env);
    if (e->lock_fd >= 0) close(e->lock_fd); /* drops the writer lock */
    opstate_lmdb__unregister(e);
    opstate_free(&a, e->path);
    opstate_free(&a, e);
}

OPSTATE_API size_t opstate_lmdb_map_size(const opstate_lmdb *e) { return e->map_size; }

OPSTATE_API opstate_result opstate_lmdb_sync(opstate_lmdb *e, opstate_error *err)
{
    int rc = mdb_env_sync(e->env, 1);
    return rc == 0 ? OPSTATE_OK : opstate_lmdb__fail(err, rc, "sync");
}

/* Opens the named database "<kind>:<name>:<part>", creating it only in an
   environment opened with access CREATE (else MDB_NOTFOUND). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__dbi(const opstate_lmdb *e, MDB_txn *txn, char kind, const char *name,
                                            const char *part, MDB_dbi *out)
{
    char full[96];
    snprintf(full, sizeof full, "%c:%s:%s", kind, name, part);
    return mdb_dbi_open(txn, full, e->cfg.access == OPSTATE_LMDB_CREATE ? MDB_CREATE : 0, out);
}

/* Runs fn in a read-only transaction and commits it (so that the database
   handles it opened stay open): the read-only twin of opstate_lmdb__write. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__read_txn(opstate_lmdb *e, opstate_lmdb__txn_fn fn, void *user,
                                                            opstate_result *abort_reason, opstate_error *err)
{
    MDB_txn *txn;
    int rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn);
    if (rc == MDB_MAP_RESIZED && (rc = opstate_lmdb__adopt_map(e)) == 0) rc = mdb_txn_begin(e->env, NULL, MDB_RDONLY, &txn);
    if (rc != 0) return opstate_lmdb__fail(err, rc, "read transaction");
    opstate_lmdb__bound(e);
    rc = fn(user, txn);
    if (rc == 0) rc = mdb_txn_commit(txn);
    else mdb_txn_abort(txn);
    if (rc == OPSTATE_LMDB__ABORT) return opstate_error_set(err, *abort_reason, "transaction", 0);
    return rc == 0 ? OPSTATE_OK : opstate_lmdb__fail(err, rc, "open");
}

/* Opens a log's or store's databases: read-write, or read-only. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__open_part(opstate_lmdb *e, opstate_lmdb__txn_fn fn, void *user,
                                                             opstate_result *abort_reason, opstate_error *err)
{
    if (e->cfg.access == OPSTATE_LMDB_READ_ONLY) return opstate_lmdb__read_txn(e, fn, user, abort_reason, err);
    return opstate_lmdb__write(e, fn, user, abort_reason, err);
}

/* Counts the logs and stores of an environment (their meta databases). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__count_parts(MDB_txn *txn, size_t *logs, size_t *stores)
{
    MDB_dbi main_dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    *logs = *stores = 0;
    if (rc == 0) rc = mdb_cursor_open(txn, main_dbi, &cur);
    if (rc != 0) return rc;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const char *name = (const char *)k.mv_data;
        if (k.mv_size < 7 || name[1] != ':' || OPSTATE_MEMCMP(name + k.mv_size - 5, ":meta", 5) != 0) continue;
        if (name[0] == 'l') ++*logs;
        if (name[0] == 's') ++*stores;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* NOT_FOUND for a part that is not there, or CONFLICT naming the other
   kind when the environment holds only that (a log's directory given as a
   state store, or the reverse). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__missing(MDB_txn *txn, char kind, opstate_result *why)
{
    size_t logs, stores;
    int rc = opstate_lmdb__count_parts(txn, &logs, &stores);
    if (rc != 0) return rc;
    *why = OPSTATE_NOT_FOUND;
    if (kind == 'l' && !logs && stores) *why = OPSTATE_CONFLICT;
    if (kind == 's' && !stores && logs) *why = OPSTATE_CONFLICT;
    return OPSTATE_LMDB__ABORT;
}

typedef struct opstate_lmdb__parts {
    size_t logs, stores;
} opstate_lmdb__parts;

OPSTATE_LMDB__PRIVATE int opstate_lmdb__parts_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb__parts *p = (opstate_lmdb__parts *)user;
    return opstate_lmdb__count_parts(txn, &p->logs, &p->stores);
}

OPSTATE_API opstate_result opstate_lmdb_contents(opstate_lmdb *env, size_t *logs, size_t *stores, opstate_error *err)
{
    opstate_lmdb__parts p = {0, 0};
    opstate_result why = OPSTATE_OK, r = opstate_lmdb__read_txn(env, opstate_lmdb__parts_txn, &p, &why, err);
    if (r == OPSTATE_OK) {
        *logs = p.logs;
        *stores = p.stores;
    }
    return r;
}

/* A name for a store or log: 1..64 bytes of [A-Za-z0-9_-]. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__name_ok(const char *name)
{
    size_t i;
    for (i = 0; name && name[i]; i++) {
        char c = name[i];
        if (i == 64 || !((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
                         c == '-'))
            return false;
    }
    return i > 0;
}

/* >>store ---------------------------------------------------------------- */

#define OPSTATE_LMDB__META_FIXED 60u
#define OPSTATE_LMDB__META_BLOB 1u /* flags: the store holds a whole blob */
#define OPSTATE_LMDB__TABLE_FIXED 20u /* seq, time, CRC around the value */
#define OPSTATE_LMDB__ITEM_FIXED 25u  /* op, key len, value len, seq, time */
/* Op byte flag of a delta item: the table held the key when it was flushed.
   The table changes only by a compaction, which consumes every delta, so a
   read-through load can trust it instead of looking the key up. */
#define OPSTATE_LMDB__IN_TABLE 0x80u
/* Delta record count flag: the IN_TABLE bits are known (the flushed fold
   read through the table); without it a load looks the keys up. */
#define OPSTATE_LMDB__IN_TABLE_KNOWN 0x80000000u
/* Delta record count flag: the CRC covers the record's key (its flush
   number) too; records written before this flag sum the value only. */
#define OPSTATE_LMDB__KEYED_CRC 0x40000000u
#define OPSTATE_LMDB__COUNT_FLAGS (OPSTATE_LMDB__IN_TABLE_KNOWN | OPSTATE_LMDB__KEYED_CRC)
static const uint8_t opstate_lmdb__meta_magic[4] = {'O', 'P', 'S', 'L'};

/* The meta record of a store, decoded. */
typedef struct opstate_lmdb__meta {
    uint16_t layout, flags;
    opstate_snapshot_meta snap;
    uint64_t next_flush, delta_bytes;
    uint32_t delta_count;
    opstate_bytes dedup; /* points into the record */
} opstate_lmdb__meta;

struct opstate_lmdb_store {
    opstate_lmdb *e;
    opstate_lmdb_store_config cfg;
    char name[65];
    MDB_dbi meta_dbi, table, deltas;
    opstate_lmdb__reader rd;
    opstate_kv_base base;
    opstate_lmdb__meta m; /* counters as last committed (dedup not kept) */
    opstate_result open_why;
};

OPSTATE_LMDB__PRIVATE size_t opstate_lmdb__meta_size(const opstate_dedup *dedup)
{
    size_t n = 0;
    if (dedup) opstate_dedup_encode(dedup, NULL, 0, &n);
    return OPSTATE_LMDB__META_FIXED + n + 4;
}

OPSTATE_LMDB__PRIVATE void opstate_lmdb__meta_encode(const opstate_lmdb__meta *m, const opstate_dedup *dedup,
                                                     uint8_t *out, size_t size)
{
    size_t n = size - OPSTATE_LMDB__META_FIXED - 4;
    OPSTATE_MEMCPY(out, opstate_lmdb__meta_magic, 4);
    opstate_put_le16(out + 4, OPSTATE_LMDB_LAYOUT_VERSION);
    opstate_put_le16(out + 6, m->flags);
    opstate_put_le32(out + 8, m->snap.schema_version);
    opstate_put_le64(out + 12, m->snap.position.seq);
    opstate_put_le64(out + 20, (uint64_t)m->snap.position.time);
    opstate_put_le64(out + 28, m->snap.position.epoch);
    opstate_put_le64(out + 36, m->next_flush);
    opstate_put_le32(out + 44, m->delta_count);
    opstate_put_le64(out + 48, m->delta_bytes);
    opstate_put_le32(out + 56, (uint32_t)n);
    if (dedup) opstate_dedup_encode(dedup, out + OPSTATE_LMDB__META_FIXED, n, &n);
    opstate_put_le32(out + size - 4, opstate_crc32c(0, out, size - 4));
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__meta_decode(opstate_bytes b, opstate_lmdb__meta *m,
                                                               opstate_error *err)
{
    uint32_t dlen;
    if (b.len < OPSTATE_LMDB__META_FIXED + 4 || OPSTATE_MEMCMP(b.ptr, opstate_lmdb__meta_magic, 4) != 0)
        return opstate_error_set(err, OPSTATE_CORRUPT, "store meta", 0);
    if (opstate_get_le16(b.ptr + 4) > OPSTATE_LMDB_LAYOUT_VERSION)
        return opstate_error_set(err, OPSTATE_UNKNOWN_VERSION, "store layout (newer than this program)", 0);
    dlen = opstate_get_le32(b.ptr + 56);
    if (dlen != b.len - OPSTATE_LMDB__META_FIXED - 4 || opstate_crc32c(0, b.ptr, b.len - 4) != opstate_get_le32(b.ptr + b.len - 4))
        return opstate_error_set(err, OPSTATE_CORRUPT, "store meta", 0);
    m->layout = opstate_get_le16(b.ptr + 4);
    m->flags = opstate_get_le16(b.ptr + 6);
    m->snap.schema_version = opstate_get_le32(b.ptr + 8);
    m->snap.position.seq = opstate_get_le64(b.ptr + 12);
    m->snap.position.time = (int64_t)opstate_get_le64(b.ptr + 20);
    m->snap.position.epoch = opstate_get_le64(b.ptr + 28);
    m->next_flush = opstate_get_le64(b.ptr + 36);
    m->delta_count = opstate_get_le32(b.ptr + 44);
    m->delta_bytes = opstate_get_le64(b.ptr + 48);
    m->dedup.ptr = b.ptr + OPSTATE_LMDB__META_FIXED;
    m->dedup.len = dlen;
    return OPSTATE_OK;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__meta_put(const opstate_lmdb_store *st, MDB_txn *txn,
                                                 const opstate_lmdb__meta *m, const opstate_dedup *dedup)
{
    MDB_val k = opstate_lmdb__val("meta", 4), v;
    int rc;
    v.mv_size = opstate_lmdb__meta_size(dedup);
    if ((rc = mdb_put(txn, st->meta_dbi, &k, &v, MDB_RESERVE)) != 0) return rc;
    opstate_lmdb__meta_encode(m, dedup, (uint8_t *)v.mv_data, v.mv_size);
    return 0;
}

/* Table record: u64 seq | i64 time | value | u32 CRC32C of key + all before. */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__table_encode(uint8_t *out, opstate_bytes key, opstate_bytes value,
                                                      opstate_position pos)
{
    size_t n = 16 + value.len;
    opstate_put_le64(out, pos.seq);
    opstate_put_le64(out + 8, (uint64_t)pos.time);
    if (value.len) OPSTATE_MEMCPY(out + 16, value.ptr, value.len);
    opstate_put_le32(out + n, opstate_crc32c(opstate_crc32c(0, key.ptr, key.len), out, n));
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__table_decode(opstate_bytes key, opstate_bytes rec, opstate_bytes *value,
                                                      opstate_position *pos)
{
    size_t n;
    if (rec.len < OPSTATE_LMDB__TABLE_FIXED) return false;
    n = rec.len - 4;
    if (opstate_crc32c(opstate_crc32c(0, key.ptr, key.len), rec.ptr, n) != opstate_get_le32(rec.ptr + n)) return false;
    pos->seq = opstate_get_le64(rec.ptr);
    pos->time = (int64_t)opstate_get_le64(rec.ptr + 8);
    pos->epoch = 0;
    value->ptr = rec.ptr + 16;
    value->len = n - 16;
    return true;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__table_put(const opstate_lmdb_store *st, MDB_txn *txn, opstate_bytes key,
                                                  opstate_bytes value, opstate_position pos)
{
    MDB_val k = opstate_lmdb__val(key.ptr, key.len), v;
    int rc;
    v.mv_size = OPSTATE_LMDB__TABLE_FIXED + value.len;
    if ((rc = mdb_put(txn, st->table, &k, &v, MDB_RESERVE)) != 0) return rc;
    opstate_lmdb__table_encode((uint8_t *)v.mv_data, key, value, pos);
    return 0;
}

/* Walks one delta record (CRC already checked), calling fn per item. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__delta_walk(opstate_bytes rec, opstate_kv_iter_fn fn, void *user)
{
    uint32_t count = opstate_get_le32(rec.ptr) & ~OPSTATE_LMDB__COUNT_FLAGS, i;
    size_t at = 4, end = rec.len - 4;
    for (i = 0; i < count; i++) {
        opstate_kv_item item;
        if (end - at < OPSTATE_LMDB__ITEM_FIXED) return false;
        item.deleted = (rec.ptr[at] & 0x7fu) == OPSTATE_OP_DELETE;
        item.in_base = (rec.ptr[at] & OPSTATE_LMDB__IN_TABLE) != 0;
        item.key.len = opstate_get_le32(rec.ptr + at + 1);
        if (item.key.len > end - at - OPSTATE_LMDB__ITEM_FIXED) return false;
        item.key.ptr = rec.ptr + at + 5;
        item.value.len = opstate_get_le32(item.key.ptr + item.key.len);
        if (item.value.len > end - at - OPSTATE_LMDB__ITEM_FIXED - item.key.len) return false;
        item.value.ptr = item.key.ptr + item.key.len + 4;
        item.position.seq = opstate_get_le64(item.value.ptr + item.value.len);
        item.position.time = (int64_t)opstate_get_le64(item.value.ptr + item.value.len + 8);
        item.position.epoch = 0;
        at += OPSTATE_LMDB__ITEM_FIXED + item.key.len + item.value.len;
        if (!fn(user, &item)) return false;
    }
    return at == end;
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__delta_ok(opstate_bytes key, opstate_bytes rec)
{
    uint32_t crc = 0;
    if (key.len != 8 || rec.len < 8) return false;
    if (opstate_get_le32(rec.ptr) & OPSTATE_LMDB__KEYED_CRC) crc = opstate_crc32c(0, key.ptr, key.len);
    return opstate_crc32c(crc, rec.ptr, rec.len - 4) == opstate_get_le32(rec.ptr + rec.len - 4);
}

/* Applies delta items to a fold (load). */
typedef struct opstate_lmdb__apply {
    opstate_kv *kv;
    MDB_txn *txn;   /* set when the record's IN_TABLE bits are unknown: look keys up here */
    MDB_dbi table;
    opstate_result r;
} opstate_lmdb__apply;

/* The delta chain as a load walks it: flush numbers go forward, stay below
   the meta's next flush, and there are as many as the meta counts. */
typedef struct opstate_lmdb__chain {
    opstate_lmdb__apply apply;
    uint64_t next_flush, last;
    uint32_t seen;
} opstate_lmdb__chain;

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__apply_item(void *user, const opstate_kv_item *item)
{
    opstate_lmdb__apply *a = (opstate_lmdb__apply *)user;
    opstate_kv_item it = *item;
    if (a->txn) { /* flushed from a fold without a base: ask the table */
        MDB_val k = opstate_lmdb__val(it.key.ptr, it.key.len), v;
        it.in_base = mdb_get(a->txn, a->table, &k, &v) == 0;
    }
    a->r = opstate_kv_restore(a->kv, &it);
    return a->r == OPSTATE_OK;
}

/* One flush: the fold's dirty items as one delta record, plus the meta. */
typedef struct opstate_lmdb__flush_ctx {
    opstate_lmdb_store *st;
    const opstate_kv *kv;
    const opstate_snapshot_meta *snap;
    const opstate_dedup *dedup;
    size_t size;   /* delta record bytes */
    uint32_t count;
    uint8_t *at, *end; /* write position while encoding, where the items end */
    opstate_lmdb__meta next;
    opstate_result why;
} opstate_lmdb__flush_ctx;

/* Encodes one dirty item at f->at. A key LMDB cannot hold as a table key,
   or items past the room the fold's counters sized (the fold changed
   under the flush), stop it: its transaction is aborted, nothing written. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__flush_item(void *user, const opstate_kv_item *item)
{
    opstate_lmdb__flush_ctx *f = (opstate_lmdb__flush_ctx *)user;
    uint8_t *p = f->at;
    if (item->key.len > OPSTATE_LMDB__MAX_KEY) f->why = OPSTATE_OVERSIZED;
    else if ((size_t)(f->end - p) < OPSTATE_LMDB__ITEM_FIXED + item->key.len + item->value.len)
        f->why = OPSTATE_INVALID_ARGUMENT;
    if (f->why != OPSTATE_OK) return false;
    p[0] = (uint8_t)((item->deleted ? OPSTATE_OP_DELETE : OPSTATE_OP_PUT) | (item->in_base ? OPSTATE_LMDB__IN_TABLE : 0u));
    opstate_put_le32(p + 1, (uint32_t)item->key.len);
    OPSTATE_MEMCPY(p + 5, item->key.ptr, item->key.len);
    p += 5 + item->key.len;
    opstate_put_le32(p, (uint32_t)item->value.len);
    if (item->value.len) OPSTATE_MEMCPY(p + 4, item->value.ptr, item->value.len);
    p += 4 + item->value.len;
    opstate_put_le64(p, item->position.seq);
    opstate_put_le64(p + 8, (uint64_t)item->position.time);
    f->at = p + 16;
    return true;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__flush_body(void *user, MDB_txn *txn)
{
    opstate_lmdb__flush_ctx *f = (opstate_lmdb__flush_ctx *)user;
    opstate_lmdb_store *st = f->st;
    int rc;
    f->next = st->m;
    f->next.flags = 0;
    f->next.snap = *f->snap;
    if (f->count) {
        uint8_t key[8] = {0};
        MDB_val k = opstate_lmdb__val(key, 8), v;
        opstate_lmdb__put_be64(key, st->m.next_flush);
        v.mv_size = f->size;
        if ((rc = mdb_put(txn, st->deltas, &k, &v, MDB_RESERVE | MDB_APPEND)) != 0) return rc;
        opstate_put_le32((uint8_t *)v.mv_data, f->count | OPSTATE_LMDB__KEYED_CRC |
                                                   (opstate_kv_has_base(f->kv) ? OPSTATE_LMDB__IN_TABLE_KNOWN : 0u));
        f->at = (uint8_t *)v.mv_data + 4;
        f->end = (uint8_t *)v.mv_data + f->size - 4;
        opstate_kv_dirty_iterate(f->kv, opstate_lmdb__flush_item, f);
        if (f->why == OPSTATE_OK && f->at != f->end) f->why = OPSTATE_INVALID_ARGUMENT;
        if (f->why != OPSTATE_OK) return OPSTATE_LMDB__ABORT;
        opstate_put_le32(f->at, opstate_crc32c(opstate_crc32c(0, key, 8), v.mv_data, f->size - 4));
        f->next.next_flush++;
        f->next.delta_count++;
        f->next.delta_bytes += f->size;
    }
    return opstate_lmdb__meta_put(st, txn, &f->next, f->dedup);
}

/* Due when the deltas pass the configured bound, overdue at 4 times it. */
OPSTATE_LMDB__PRIVATE opstate_compaction opstate_lmdb__compact_due(void *user)
{
    const opstate_lmdb_store *st = (const opstate_lmdb_store *)user;
    uint64_t flushes = st->cfg.compact_flushes, bytes = st->cfg.compact_bytes;
    if (st->m.delta_count >= 4 * flushes || st->m.delta_bytes >= 4 * bytes) return OPSTATE_COMPACTION_OVERDUE;
    if (st->m.delta_count >= flushes || st->m.delta_bytes >= bytes) return OPSTATE_COMPACTION_DUE;
    return OPSTATE_COMPACTION_NOT_DUE;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__flush(void *user, const opstate_kv *kv, const opstate_snapshot_meta *meta,
                                                         const opstate_dedup *dedup, opstate_error *err)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    opstate_lmdb__flush_ctx f;
    opstate_result r;
    OPSTATE_MEMSET(&f, 0, sizeof f);
    f.st = st;
    f.kv = kv;
    f.snap = meta;
    f.dedup = dedup;
    f.count = opstate_kv_dirty_count(kv);
    f.size = 8 + (size_t)f.count * OPSTATE_LMDB__ITEM_FIXED + (size_t)opstate_kv_dirty_bytes(kv); /* + count, CRC */
    f.why = OPSTATE_OK;
    opstate_lmdb__reader_end(&st->rd);
    r = opstate_lmdb__write(st->e, opstate_lmdb__flush_body, &f, &f.why, err);
    if (r == OPSTATE_OVERSIZED) return opstate_error_set(err, r, "key longer than 511 bytes (LMDB limit)", 0);
    if (r != OPSTATE_OK) return r;
    st->m = f.next;
    return OPSTATE_OK;
}

/* Rewrites the meta record with no deltas pending (the rest, the dedup
   window included, is kept as it is). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__meta_clear_deltas(const opstate_lmdb_store *st, MDB_txn *txn,
                                                          opstate_result *why)
{
    MDB_val k = opstate_lmdb__val("meta", 4), v;
    opstate_lmdb__meta m;
    uint8_t *copy;
    int rc = opstate_lmdb__get(st->e, txn, st->meta_dbi, &k, &v);
    if (rc != 0) return rc;
    if (opstate_lmdb__meta_decode(opstate_lmdb__bytes(&v), &m, NULL) != OPSTATE_OK) {
        *why = OPSTATE_CORRUPT;
        return OPSTATE_LMDB__ABORT;
    }
    if (!(copy = (uint8_t *)opstate_alloc(&st->e->cfg.allocator, v.mv_size))) return ENOMEM;
    OPSTATE_MEMCPY(copy, v.mv_data, v.mv_size);
    opstate_put_le32(copy + 44, 0);
    opstate_put_le64(copy + 48, 0);
    opstate_put_le32(copy + v.mv_size - 4, opstate_crc32c(0, copy, v.mv_size - 4));
    v.mv_data = copy;
    rc = mdb_put(txn, st->meta_dbi, &k, &v, 0);
    opstate_free(&st->e->cfg.allocator, copy);
    return rc;
}

/* Compaction: fold every delta record into the table. The items of all
   deltas are sorted by key (pointers into the records: they stay valid in
   this transaction, whose writes only touch the table), and only the
   newest change of each key is written, in key order: one write per key,
   neighbouring keys on neighbouring pages. Keys often share a long prefix
   (scope, kind), so the sort compares first the 8 bytes that follow the
   prefix every key shares, held next to the item: most comparisons then
   touch no key bytes. (Those 8 bytes are a function of the key, so the
   order stays total and the changes of one key adjacent whatever they
   hold; that they follow the shared prefix is what makes it key order.) */
typedef struct opstate_lmdb__citem {
    opstate_kv_item item;
    size_t order; /* position in delta order: the higher, the newer */
} opstate_lmdb__citem;

typedef struct opstate_lmdb__csort {
    uint64_t next8; /* big-endian bytes [shared, shared + 8) of the key, zero-padded */
    const opstate_lmdb__citem *c;
} opstate_lmdb__csort;

typedef struct opstate_lmdb__compact {
    opstate_lmdb_store *st;
    MDB_txn *txn;
    opstate_lmdb__citem *items;
    size_t n, cap;
    opstate_result why;
} opstate_lmdb__compact;

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__compact_take(void *user, const opstate_kv_item *item)
{
    opstate_lmdb__compact *c = (opstate_lmdb__compact *)user;
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 1024;
        opstate_lmdb__citem *grown = (opstate_lmdb__citem *)opstate_alloc(&c->st->e->cfg.allocator, cap * sizeof *grown);
        if (!grown) {
            c->why = OPSTATE_NO_MEMORY;
            return false;
        }
        if (c->n) OPSTATE_MEMCPY(grown, c->items, c->n * sizeof *grown);
        opstate_free(&c->st->e->cfg.allocator, c->items);
        c->items = grown;
        c->cap = cap;
    }
    c->items[c->n].item = *item;
    c->items[c->n].order = c->n;
    c->n++;
    return true;
}

/* Key order; for one key, delta order. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__citem_cmp(const void *a, const void *b)
{
    const opstate_lmdb__csort *sa = (const opstate_lmdb__csort *)a, *sb = (const opstate_lmdb__csort *)b;
    const opstate_lmdb__citem *x = sa->c, *y = sb->c;
    size_t n = x->item.key.len < y->item.key.len ? x->item.key.len : y->item.key.len;
    int c;
    if (sa->next8 != sb->next8) return sa->next8 < sb->next8 ? -1 : 1; /* padding sorts a shorter key first */
    c = n ? memcmp(x->item.key.ptr, y->item.key.ptr, n) : 0;
    if (c) return c;
    if (x->item.key.len != y->item.key.len) return x->item.key.len < y->item.key.len ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* Gathers the items of every delta record; 0, an LMDB status or ABORT. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__compact_collect(opstate_lmdb__compact *c)
{
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(c->txn, c->st->deltas, &cur);
    for (rc = rc ? rc : opstate_lmdb__cursor_get(c->st->e, cur, &k, &v, MDB_FIRST); rc == 0; rc = opstate_lmdb__cursor_get(c->st->e, cur, &k, &v, MDB_NEXT)) {
        opstate_bytes rec = opstate_lmdb__bytes(&v);
        if (!opstate_lmdb__delta_ok(opstate_lmdb__bytes(&k), rec)) c->why = OPSTATE_CORRUPT;
        if (c->why != OPSTATE_OK || !opstate_lmdb__delta_walk(rec, opstate_lmdb__compact_take, c)) {
            if (c->why == OPSTATE_OK) c->why = OPSTATE_CORRUPT;
            rc = OPSTATE_LMDB__ABORT;
            break;
        }
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* The sort array: each item with the 8 key bytes after the shared prefix. */
OPSTATE_LMDB__PRIVATE opstate_lmdb__csort *opstate_lmdb__compact_order(const opstate_lmdb__compact *c)
{
    opstate_lmdb__csort *o = (opstate_lmdb__csort *)opstate_alloc(&c->st->e->cfg.allocator, c->n * sizeof *o);
    size_t shared = c->n ? c->items[0].item.key.len : 0, i, j;
    if (!o) return NULL;
    for (i = 1; i < c->n && shared; i++) {
        const opstate_bytes *k = &c->items[i].item.key, *k0 = &c->items[0].item.key;
        for (j = 0; j < shared && j < k->len && k->ptr[j] == k0->ptr[j]; j++) {}
        shared = j;
    }
    for (i = 0; i < c->n; i++) {
        const opstate_bytes *k = &c->items[i].item.key;
        o[i].next8 = 0;
        for (j = 0; j < 8; j++) o[i].next8 = o[i].next8 << 8 | (shared + j < k->len ? k->ptr[shared + j] : 0u);
        o[i].c = &c->items[i];
    }
    qsort(o, c->n, sizeof *o, opstate_lmdb__citem_cmp);
    return o;
}

/* Writes the newest change of every key, in key order. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__compact_write(opstate_lmdb__compact *c)
{
    size_t i;
    int rc = 0;
    opstate_lmdb__csort *o = c->n ? opstate_lmdb__compact_order(c) : NULL;
    if (c->n && !o) {
        c->why = OPSTATE_NO_MEMORY;
        return OPSTATE_LMDB__ABORT;
    }
    for (i = 0; i < c->n && rc == 0; i++) {
        const opstate_kv_item *it = &o[i].c->item;
        MDB_val k = opstate_lmdb__val(it->key.ptr, it->key.len), old;
        if (i + 1 < c->n && o[i + 1].next8 == o[i].next8 && o[i + 1].c->item.key.len == it->key.len &&
            memcmp(o[i + 1].c->item.key.ptr, it->key.ptr, it->key.len) == 0)
            continue; /* a newer change of this key follows */
        rc = opstate_lmdb__get(c->st->e, c->txn, c->st->table, &k, &old);
        if (rc != 0 && rc != MDB_NOTFOUND) break; /* a damaged old value: LMDB would free the pages it claims */
        if (!it->deleted) rc = opstate_lmdb__table_put(c->st, c->txn, it->key, it->value, it->position);
        else rc = rc == MDB_NOTFOUND ? 0 : mdb_del(c->txn, c->st->table, &k, NULL);
    }
    opstate_free(&c->st->e->cfg.allocator, o);
    return rc;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__compact_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb__compact *c = (opstate_lmdb__compact *)user;
    int rc;
    c->txn = txn;
    c->n = 0;
    rc = opstate_lmdb__compact_collect(c);
    if (rc == 0) rc = opstate_lmdb__compact_write(c);
    opstate_free(&c->st->e->cfg.allocator, c->items);
    c->items = NULL;
    c->n = c->cap = 0;
    if (rc == 0) rc = mdb_drop(txn, c->st->deltas, 0);
    return rc ? rc : opstate_lmdb__meta_clear_deltas(c->st, txn, &c->why);
}

OPSTATE_API opstate_result opstate_lmdb_store_compact(opstate_lmdb_store *st, opstate_error *err)
{
    opstate_lmdb__compact c;
    opstate_result r;
    if (st->m.delta_count == 0) return OPSTATE_OK;
    OPSTATE_MEMSET(&c, 0, sizeof c);
    c.st = st;
    opstate_lmdb__reader_end(&st->rd);
    mdb_reader_check(st->e->env, NULL); /* stale readers of dead processes would pin the freed pages */
    if ((r = opstate_lmdb__write(st->e, opstate_lmdb__compact_txn, &c, &c.why, err)) != OPSTATE_OK) return r;
    st->m.delta_count = 0;
    st->m.delta_bytes = 0;
    return OPSTATE_OK;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__compact_now(void *user, opstate_error *err)
{
    return opstate_lmdb_store_compact((opstate_lmdb_store *)user, err);
}

OPSTATE_API void opstate_lmdb_store_deltas(const opstate_lmdb_store *st, uint32_t *count, uint64_t *bytes)
{
    *count = st->m.delta_count;
    *bytes = st->m.delta_bytes;
}

/* Reads and checks the meta record inside the reader's transaction. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__meta_get(opstate_lmdb_store *st, opstate_lmdb__meta *m,
                                                            opstate_error *err)
{
    MDB_val k = opstate_lmdb__val("meta", 4), v;
    opstate_result r = opstate_lmdb__reader_begin(st->e, &st->rd, err);
    int rc;
    if (r != OPSTATE_OK) return r;
    if ((rc = opstate_lmdb__get(st->e, st->rd.txn, st->meta_dbi, &k, &v)) != 0) return opstate_lmdb__fail(err, rc, "store meta");
    return opstate_lmdb__meta_decode(opstate_lmdb__bytes(&v), m, err);
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__read_meta(void *user, opstate_snapshot_meta *meta, opstate_error *err)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    opstate_lmdb__meta m;
    opstate_result r = opstate_lmdb__meta_get(st, &m, err);
    opstate_lmdb__reader_end(&st->rd);
    if (r == OPSTATE_OK && (m.flags & OPSTATE_LMDB__META_BLOB)) r = opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "store holds a blob", 0);
    if (r == OPSTATE_OK) *meta = m.snap;
    return r;
}

/* LMDB's key order (memcmp, then the shorter first): a > b. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__key_after(const MDB_val *a, const MDB_val *b)
{
    size_t n = a->mv_size < b->mv_size ? a->mv_size : b->mv_size;
    int c = OPSTATE_MEMCMP(a->mv_data, b->mv_data, n);
    return c > 0 || (c == 0 && a->mv_size > b->mv_size);
}

/* Called for each record of a walk; false stops it. */
typedef bool (*opstate_lmdb__visit_fn)(void *user, const MDB_val *k, const MDB_val *v);

/* Walks database dbi in key order: every key must come after the one before
   it, and a walk that reaches the end must have seen every entry the
   database counts (a damaged page would otherwise hide records). 0 at the
   end, OPSTATE_LMDB__ABORT when fn stopped, MDB_CORRUPTED, or an LMDB
   status. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__walk(const opstate_lmdb *e, MDB_txn *txn, MDB_dbi dbi, opstate_lmdb__visit_fn fn,
                                             void *user)
{
    MDB_cursor *cur;
    MDB_val k, v, prev = {0, NULL};
    MDB_stat stat;
    uint64_t seen = 0;
    int rc = mdb_stat(txn, dbi, &stat);
    if (rc == 0) rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc != 0) return rc;
    for (rc = opstate_lmdb__cursor_get(e, cur, &k, &v, MDB_FIRST); rc == 0; rc = opstate_lmdb__cursor_get(e, cur, &k, &v, MDB_NEXT)) {
        if (seen++ && !opstate_lmdb__key_after(&k, &prev)) rc = MDB_CORRUPTED; /* keys out of order */
        else if (!fn(user, &k, &v)) rc = OPSTATE_LMDB__ABORT;
        if (rc != 0) break;
        prev = k;
    }
    mdb_cursor_close(cur);
    if (rc == MDB_NOTFOUND) rc = seen == stat.ms_entries ? 0 : MDB_CORRUPTED;
    return rc;
}

/* Walks a database in key order inside the reader's transaction; fn gets
   each record and returns a result (OK to go on). */
typedef opstate_result (*opstate_lmdb__record_fn)(void *user, opstate_bytes key, opstate_bytes value);

typedef struct opstate_lmdb__scan_ctx {
    opstate_lmdb__record_fn fn;
    void *user;
    opstate_result r;
} opstate_lmdb__scan_ctx;

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__scan_visit(void *user, const MDB_val *k, const MDB_val *v)
{
    opstate_lmdb__scan_ctx *c = (opstate_lmdb__scan_ctx *)user;
    c->r = c->fn(c->user, opstate_lmdb__bytes(k), opstate_lmdb__bytes(v));
    return c->r == OPSTATE_OK;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__scan(opstate_lmdb_store *st, MDB_dbi dbi,
                                                        opstate_lmdb__record_fn fn, void *user, opstate_error *err)
{
    opstate_lmdb__scan_ctx c;
    int rc;
    c.fn = fn;
    c.user = user;
    c.r = OPSTATE_OK;
    rc = opstate_lmdb__walk(st->e, st->rd.txn, dbi, opstate_lmdb__scan_visit, &c);
    if (rc == OPSTATE_LMDB__ABORT) return opstate_error_set(err, c.r, "store record", 0);
    return rc == 0 ? OPSTATE_OK : opstate_lmdb__fail(err, rc, "store records");
}

/* Load-all restores each table record a few records behind the walk and
   fetches its key's slot when the record is read, so that the fold's
   memory waits overlap the walk (the items point into the map, valid for
   the read transaction). */
#define OPSTATE_LMDB__AHEAD 8u

typedef struct opstate_lmdb__table_load {
    opstate_kv *kv;
    opstate_kv_item ring[OPSTATE_LMDB__AHEAD]; /* records read, not yet restored */
    uint64_t read;
} opstate_lmdb__table_load;

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__load_table_record(void *user, opstate_bytes key, opstate_bytes rec)
{
    opstate_lmdb__table_load *t = (opstate_lmdb__table_load *)user;
    opstate_kv_item *slot = &t->ring[t->read % OPSTATE_LMDB__AHEAD];
    opstate_result r = OPSTATE_OK;
    opstate_kv_item item;
    item.key = key;
    item.deleted = false;
    item.in_base = false; /* load-all: the fold has no base */
    if (!opstate_lmdb__table_decode(key, rec, &item.value, &item.position)) return OPSTATE_CORRUPT;
    if (t->read >= OPSTATE_LMDB__AHEAD) r = opstate_kv_restore(t->kv, slot); /* the record read AHEAD before */
    *slot = item;
    opstate_kv_prefetch(t->kv, key);
    t->read++;
    return r;
}

/* Restores what the walk left in the ring, oldest first. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__load_table_rest(opstate_lmdb__table_load *t, opstate_error *err)
{
    uint64_t i = t->read > OPSTATE_LMDB__AHEAD ? t->read - OPSTATE_LMDB__AHEAD : 0;
    opstate_result r = OPSTATE_OK;
    for (; i < t->read && r == OPSTATE_OK; i++) r = opstate_kv_restore(t->kv, &t->ring[i % OPSTATE_LMDB__AHEAD]);
    return r == OPSTATE_OK ? r : opstate_error_set(err, r, "store record", 0);
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__load_delta_record(void *user, opstate_bytes key, opstate_bytes rec)
{
    opstate_lmdb__chain *c = (opstate_lmdb__chain *)user;
    opstate_lmdb__apply a = c->apply;
    uint64_t flush;
    if (!opstate_lmdb__delta_ok(key, rec)) return OPSTATE_CORRUPT;
    flush = opstate_lmdb__get_be64(key.ptr);
    if (flush <= c->last || flush >= c->next_flush) return OPSTATE_CORRUPT;
    c->last = flush;
    c->seen++;
    if ((opstate_get_le32(rec.ptr) & OPSTATE_LMDB__IN_TABLE_KNOWN) || !opstate_kv_has_base(a.kv)) a.txn = NULL;
    if (!opstate_lmdb__delta_walk(rec, opstate_lmdb__apply_item, &a) && a.r == OPSTATE_OK) return OPSTATE_CORRUPT;
    return a.r;
}

/* Loads the table (unless read-through) and replays the deltas. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__load_records(opstate_lmdb_store *st, const opstate_lmdb__meta *m,
                                                                opstate_kv *kv, opstate_error *err)
{
    opstate_result r = OPSTATE_OK;
    opstate_lmdb__chain c;
    OPSTATE_MEMSET(&c, 0, sizeof c);
    c.apply.kv = kv;
    c.apply.txn = st->rd.txn;
    c.apply.table = st->table;
    c.next_flush = m->next_flush;
    if (!st->cfg.read_through) {
        MDB_stat ms;
        opstate_lmdb__table_load t;
        if (mdb_stat(st->rd.txn, st->table, &ms) != 0) return opstate_error_set(err, OPSTATE_IO, "store table", 0);
        if (ms.ms_entries > st->e->map_valid / OPSTATE_LMDB__TABLE_FIXED) /* more than the file holds: never sized */
            return opstate_error_set(err, OPSTATE_CORRUPT, "store table entry count", 0);
        if ((r = opstate_kv_reserve(kv, ms.ms_entries)) != OPSTATE_OK) return opstate_error_set(err, r, "store table", 0);
        t.kv = kv;
        t.read = 0;
        r = opstate_lmdb__scan(st, st->table, opstate_lmdb__load_table_record, &t, err);
        if (r == OPSTATE_OK) r = opstate_lmdb__load_table_rest(&t, err);
    }
    if (r == OPSTATE_OK) r = opstate_lmdb__scan(st, st->deltas, opstate_lmdb__load_delta_record, &c, err);
    if (r == OPSTATE_OK && c.seen != m->delta_count) r = opstate_error_set(err, OPSTATE_CORRUPT, "store delta chain", 0);
    return r;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__load(void *user, opstate_kv *kv, opstate_snapshot_meta *meta,
                                                        opstate_dedup *dedup, opstate_error *err)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    opstate_lmdb__meta m;
    opstate_result r = opstate_lmdb__meta_get(st, &m, err);
    if (r == OPSTATE_OK && (m.flags & OPSTATE_LMDB__META_BLOB)) r = opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "store holds a blob", 0);
    if (r == OPSTATE_OK) r = opstate_lmdb__load_records(st, &m, kv, err);
    if (r == OPSTATE_OK && dedup) {
        if (m.dedup.len) r = opstate_dedup_decode(dedup, m.dedup.ptr, m.dedup.len, err);
        else opstate_dedup_clear(dedup);
    }
    opstate_lmdb__reader_end(&st->rd);
    if (r != OPSTATE_OK) {
        opstate_kv_clear(kv);
        return r;
    }
    opstate_kv_mark_clean(kv);
    *meta = m.snap;
    return OPSTATE_OK;
}

/* The read-through base over the table. */
/* A key the table does not hold: the entries around where it would be are
   checked, so that a damaged key (a flipped key byte or key length) is
   CORRUPT rather than a silently absent key. NOT_FOUND when they are good. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__miss_checked(opstate_lmdb_store *st, opstate_bytes key)
{
    MDB_cursor *cur;
    MDB_val k = opstate_lmdb__val(key.ptr, key.len), v;
    opstate_bytes value;
    opstate_position pos;
    bool good = true;
    int rc = mdb_cursor_open(st->rd.txn, st->table, &cur), step;
    if (rc != 0) return opstate_lmdb__fail(NULL, rc, "table");
    rc = opstate_lmdb__cursor_get(st->e, cur, &k, &v, MDB_SET_RANGE);
    if (rc == MDB_NOTFOUND) rc = opstate_lmdb__cursor_get(st->e, cur, &k, &v, MDB_LAST);
    for (step = 0; step < 2 && rc == 0 && good; step++) {
        good = opstate_lmdb__table_decode(opstate_lmdb__bytes(&k), opstate_lmdb__bytes(&v), &value, &pos);
        rc = opstate_lmdb__cursor_get(st->e, cur, &k, &v, MDB_PREV);
    }
    mdb_cursor_close(cur);
    if (!good || (rc != 0 && rc != MDB_NOTFOUND)) return OPSTATE_CORRUPT;
    return OPSTATE_NOT_FOUND;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__base_get(void *user, opstate_bytes key, opstate_bytes *value,
                                                            opstate_position *pos)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    MDB_val k = opstate_lmdb__val(key.ptr, key.len), v;
    opstate_result r;
    int rc;
    if (key.len > OPSTATE_LMDB__MAX_KEY) return OPSTATE_NOT_FOUND;
    if ((r = opstate_lmdb__reader_begin(st->e, &st->rd, NULL)) != OPSTATE_OK) return r;
    rc = opstate_lmdb__get(st->e, st->rd.txn, st->table, &k, &v);
    if (rc == MDB_NOTFOUND) return opstate_lmdb__miss_checked(st, key);
    if (rc != 0) return opstate_lmdb__fail(NULL, rc, "table");
    return opstate_lmdb__table_decode(key, opstate_lmdb__bytes(&v), value, pos) ? OPSTATE_OK : OPSTATE_CORRUPT;
}

/* Every table entry in key order; a bad entry, keys out of order or fewer
   entries than the table counts (a damaged page) are CORRUPT. */
typedef struct opstate_lmdb__base_ctx {
    opstate_kv_iter_fn fn;
    void *user;
    bool corrupt;
} opstate_lmdb__base_ctx;

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__base_visit(void *user, const MDB_val *k, const MDB_val *v)
{
    opstate_lmdb__base_ctx *c = (opstate_lmdb__base_ctx *)user;
    opstate_kv_item item;
    item.key = opstate_lmdb__bytes(k);
    item.deleted = false;
    item.in_base = true;
    if (!opstate_lmdb__table_decode(item.key, opstate_lmdb__bytes(v), &item.value, &item.position)) {
        c->corrupt = true;
        return false;
    }
    return c->fn(c->user, &item);
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__base_iterate(void *user, opstate_kv_iter_fn fn, void *fn_user)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    opstate_lmdb__base_ctx c;
    opstate_result r = opstate_lmdb__reader_begin(st->e, &st->rd, NULL);
    int rc;
    if (r != OPSTATE_OK) return r;
    c.fn = fn;
    c.user = fn_user;
    c.corrupt = false;
    rc = opstate_lmdb__walk(st->e, st->rd.txn, st->table, opstate_lmdb__base_visit, &c);
    if (rc == OPSTATE_LMDB__ABORT) return c.corrupt ? OPSTATE_CORRUPT : OPSTATE_OK; /* a bad entry, or fn stopped */
    return rc == 0 ? OPSTATE_OK : opstate_lmdb__fail(NULL, rc, "table");
}

OPSTATE_LMDB__PRIVATE uint64_t opstate_lmdb__base_count(void *user)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    MDB_stat s;
    if (opstate_lmdb__reader_begin(st->e, &st->rd, NULL) != OPSTATE_OK || mdb_stat(st->rd.txn, st->table, &s) != 0)
        return 0;
    return s.ms_entries;
}

OPSTATE_LMDB__PRIVATE const opstate_kv_base *opstate_lmdb__base(void *user)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    return st->cfg.read_through ? &st->base : NULL;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__drop_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    MDB_val meta = opstate_lmdb__val("meta", 4), blob = opstate_lmdb__val("blob", 4);
    int rc;
    if ((rc = mdb_drop(txn, st->table, 0)) != 0 || (rc = mdb_drop(txn, st->deltas, 0)) != 0) return rc;
    if ((rc = mdb_del(txn, st->meta_dbi, &meta, NULL)) != 0 && rc != MDB_NOTFOUND) return rc;
    rc = mdb_del(txn, st->meta_dbi, &blob, NULL);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__drop(void *user, opstate_error *err)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    opstate_result why = OPSTATE_OK, r;
    opstate_lmdb__reader_end(&st->rd);
    r = opstate_lmdb__write(st->e, opstate_lmdb__drop_txn, st, &why, err);
    if (r == OPSTATE_OK) {
        OPSTATE_MEMSET(&st->m, 0, sizeof st->m);
        st->m.next_flush = 1;
    }
    return r;
}

/* Layout 0 (one "snapshot" record holding opstate_snapshot_encode bytes)
   to layout 1, inside the open transaction. */
typedef struct opstate_lmdb__migrate {
    opstate_lmdb_store *st;
    MDB_txn *txn;
    int rc;
} opstate_lmdb__migrate;

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__migrate_item(void *user, const opstate_kv_item *item)
{
    opstate_lmdb__migrate *mg = (opstate_lmdb__migrate *)user;
    mg->rc = item->key.len > OPSTATE_LMDB__MAX_KEY ? MDB_BAD_VALSIZE
                                                   : opstate_lmdb__table_put(mg->st, mg->txn, item->key, item->value, item->position);
    return mg->rc == 0;
}

/* A dedup window big enough for the one encoded in a layout-0 snapshot
   (the snapshot format keeps its length at offset 36 and the window from
   offset 40; the window's id count is at +2). NULL storage: none. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__snapshot_dedup(const opstate_allocator *a, const MDB_val *snap,
                                                                  opstate_dedup *d, void **storage)
{
    const uint8_t *b = (const uint8_t *)snap->mv_data;
    uint32_t count = 1;
    size_t bytes;
    *storage = NULL;
    if (snap->mv_size >= 52 && opstate_get_le32(b + 36) >= 10) count = opstate_get_le32(b + 42);
    if (count == 0) count = 1;
    if (!(bytes = opstate_dedup_storage_size(count))) return OPSTATE_OVERSIZED;
    if (!(*storage = opstate_alloc(a, bytes))) return OPSTATE_NO_MEMORY;
    return opstate_dedup_init(d, *storage, bytes, count);
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__migrate0(opstate_lmdb_store *st, MDB_txn *txn, MDB_val *old, opstate_result *why)
{
    opstate_kv_config kc;
    opstate_kv *kv = NULL;
    opstate_dedup dedup;
    void *dedup_mem = NULL;
    opstate_lmdb__meta m;
    opstate_lmdb__migrate mg;
    MDB_val k = opstate_lmdb__val("snapshot", 8);
    OPSTATE_MEMSET(&kc, 0, sizeof kc);
    OPSTATE_MEMSET(&m, 0, sizeof m);
    kc.allocator = st->e->cfg.allocator;
    mg.st = st;
    mg.txn = txn;
    mg.rc = 0;
    *why = opstate_kv_create(&kc, &kv);
    if (*why == OPSTATE_OK) *why = opstate_lmdb__snapshot_dedup(&kc.allocator, old, &dedup, &dedup_mem);
    if (*why == OPSTATE_OK)
        *why = opstate_snapshot_decode((const uint8_t *)old->mv_data, old->mv_size, kv, &m.snap, &dedup, NULL);
    if (*why == OPSTATE_OK && (*why = opstate_kv_iterate(kv, opstate_lmdb__migrate_item, &mg)) == OPSTATE_OK && !mg.rc) {
        m.next_flush = 1;
        mg.rc = opstate_lmdb__meta_put(st, txn, &m, &dedup); /* the window moves along: redeliveries stay skipped */
        if (!mg.rc) mg.rc = mdb_del(txn, st->meta_dbi, &k, NULL);
    }
    opstate_kv_destroy(kv);
    opstate_free(&kc.allocator, dedup_mem);
    if (*why != OPSTATE_OK) return OPSTATE_LMDB__ABORT;
    if (!mg.rc) opstate_diag_line(&st->e->cfg.diag, OPSTATE_DIAG_INFO, "lmdb: migrated a layout 0 snapshot to layout ",
                                  OPSTATE_LMDB_LAYOUT_VERSION, "");
    return mg.rc;
}

/* Opens the three databases and brings the layout up to date. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__store_open_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb_store *st = (opstate_lmdb_store *)user;
    MDB_val mk = opstate_lmdb__val("meta", 4), sk = opstate_lmdb__val("snapshot", 8), v;
    int rc;
    if ((rc = opstate_lmdb__dbi(st->e, txn, 's', st->name, "meta", &st->meta_dbi)) != 0 ||
        (rc = opstate_lmdb__dbi(st->e, txn, 's', st->name, "table", &st->table)) != 0 ||
        (rc = opstate_lmdb__dbi(st->e, txn, 's', st->name, "deltas", &st->deltas)) != 0)
        return rc == MDB_NOTFOUND ? opstate_lmdb__missing(txn, 's', &st->open_why) : rc;
    rc = opstate_lmdb__get(st->e, txn, st->meta_dbi, &mk, &v);
    if (rc == 0) return 0;
    if (rc != MDB_NOTFOUND) return rc;
    rc = opstate_lmdb__get(st->e, txn, st->meta_dbi, &sk, &v);
    if (rc == MDB_NOTFOUND) return 0;
    if (rc == 0 && st->e->cfg.access == OPSTATE_LMDB_READ_ONLY) {
        st->open_why = OPSTATE_UNKNOWN_VERSION; /* a reader never writes: a writer migrates */
        return OPSTATE_LMDB__ABORT;
    }
    return rc ? rc : opstate_lmdb__migrate0(st, txn, &v, &st->open_why);
}

OPSTATE_API opstate_result opstate_lmdb_store_open(opstate_lmdb *e, const opstate_lmdb_store_config *cfg,
                                                   opstate_lmdb_store **out, opstate_error *err)
{
    opstate_lmdb_store *st;
    opstate_lmdb__meta m;
    opstate_result r;
    if (!cfg || !opstate_lmdb__name_ok(cfg->name)) return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "store name", 0);
    if (!(st = (opstate_lmdb_store *)opstate_alloc(&e->cfg.allocator, sizeof *st)))
        return opstate_error_set(err, OPSTATE_NO_MEMORY, "store", 0);
    OPSTATE_MEMSET(st, 0, sizeof *st);
    st->e = e;
    st->cfg = *cfg;
    if (!st->cfg.compact_bytes) st->cfg.compact_bytes = (uint64_t)8 << 20; /* the store config's defaults */
    if (!st->cfg.compact_flushes) st->cfg.compact_flushes = 64;
    OPSTATE_MEMCPY(st->name, cfg->name, strlen(cfg->name) + 1);
    st->cfg.name = st->name;
    st->base.user = st;
    st->base.get = opstate_lmdb__base_get;
    st->base.iterate = opstate_lmdb__base_iterate;
    st->base.count = opstate_lmdb__base_count;
    st->m.next_flush = 1;
    opstate_lmdb__reader_add(e, &st->rd);
    r = opstate_lmdb__open_part(e, opstate_lmdb__store_open_txn, st, &st->open_why, err);
    if (err && r == OPSTATE_CONFLICT) err->field = "the environment holds a log, not a state store";
    if (err && r == OPSTATE_UNKNOWN_VERSION && st->open_why == r)
        err->field = "store layout 0 (opstate 0.1): open it read-write once to migrate";
    if (r == OPSTATE_OK) {
        r = opstate_lmdb__meta_get(st, &m, err);
        if (r == OPSTATE_OK) st->m = m;
        else if (r == OPSTATE_NOT_FOUND) r = OPSTATE_OK;
        opstate_lmdb__reader_end(&st->rd);
    }
    if (r != OPSTATE_OK) {
        opstate_lmdb_store_close(st);
        return r;
    }
    st->m.dedup.ptr = NULL;
    st->m.dedup.len = 0;
    *out = st;
    return OPSTATE_OK;
}

OPSTATE_API void opstate_lmdb_store_close(opstate_lmdb_store *st)
{
    if (!st) return;
    if (!st->cfg.no_compact_on_close && st->e->cfg.access != OPSTATE_LMDB_READ_ONLY && st->m.delta_count &&
        opstate_lmdb_store_compact(st, NULL) != OPSTATE_OK)
        opstate_diag_line(&st->e->cfg.diag, OPSTATE_DIAG_WARN, "lmdb: compaction at close failed; ", st->m.delta_count,
                          " delta records stay for the next start");
    opstate_lmdb__reader_remove(st->e, &st->rd);
    opstate_free(&st->e->cfg.allocator, st);
}

OPSTATE_API opstate_store opstate_lmdb_store_iface(opstate_lmdb_store *st)
{
    opstate_store s;
    s.user = st;
    s.read_meta = opstate_lmdb__read_meta;
    s.load = opstate_lmdb__load;
    s.flush = opstate_lmdb__flush;
    s.drop = opstate_lmdb__drop;
    s.base = opstate_lmdb__base;
    s.compact_due = opstate_lmdb__compact_due;
    s.compact = opstate_lmdb__compact_now;
    s.max_key_len = OPSTATE_LMDB__MAX_KEY;
    return s;
}

/* Whole-blob mode. */
typedef struct opstate_lmdb__blob {
    opstate_lmdb_store *st;
    opstate_bytes blob;
    const opstate_snapshot_meta *snap;
} opstate_lmdb__blob;

OPSTATE_LMDB__PRIVATE int opstate_lmdb__blob_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb__blob *b = (opstate_lmdb__blob *)user;
    MDB_val k = opstate_lmdb__val("blob", 4), v;
    opstate_lmdb__meta m;
    int rc = opstate_lmdb__drop_txn(b->st, txn);
    if (rc != 0) return rc;
    v.mv_size = b->blob.len + 4;
    if ((rc = mdb_put(txn, b->st->meta_dbi, &k, &v, MDB_RESERVE)) != 0) return rc;
    if (b->blob.len) OPSTATE_MEMCPY(v.mv_data, b->blob.ptr, b->blob.len);
    opstate_put_le32((uint8_t *)v.mv_data + b->blob.len, opstate_crc32c(0, b->blob.ptr, b->blob.len));
    OPSTATE_MEMSET(&m, 0, sizeof m);
    m.flags = OPSTATE_LMDB__META_BLOB;
    m.snap = *b->snap;
    m.next_flush = 1;
    return opstate_lmdb__meta_put(b->st, txn, &m, NULL);
}

OPSTATE_API opstate_result opstate_lmdb_blob_save(opstate_lmdb_store *st, opstate_bytes blob,
                                                  const opstate_snapshot_meta *meta, opstate_error *err)
{
    opstate_lmdb__blob b;
    opstate_result why = OPSTATE_OK;
    b.st = st;
    b.blob = blob;
    b.snap = meta;
    opstate_result r;
    opstate_lmdb__reader_end(&st->rd);
    r = opstate_lmdb__write(st->e, opstate_lmdb__blob_txn, &b, &why, err);
    if (r == OPSTATE_OK) { /* the blob replaced any table and deltas */
        OPSTATE_MEMSET(&st->m, 0, sizeof st->m);
        st->m.next_flush = 1;
    }
    return r;
}

OPSTATE_API opstate_result opstate_lmdb_blob_load(opstate_lmdb_store *st,
                                                  void (*fn)(void *user, opstate_bytes blob,
                                                             const opstate_snapshot_meta *meta),
                                                  void *user, opstate_error *err)
{
    opstate_lmdb__meta m;
    MDB_val k = opstate_lmdb__val("blob", 4), v;
    opstate_result r = opstate_lmdb__meta_get(st, &m, err);
    int rc;
    if (r == OPSTATE_OK && !(m.flags & OPSTATE_LMDB__META_BLOB)) r = opstate_error_set(err, OPSTATE_NOT_FOUND, "blob", 0);
    if (r == OPSTATE_OK && (rc = opstate_lmdb__get(st->e, st->rd.txn, st->meta_dbi, &k, &v)) != 0) r = opstate_lmdb__fail(err, rc, "blob");
    if (r == OPSTATE_OK && (v.mv_size < 4 || opstate_crc32c(0, v.mv_data, v.mv_size - 4) !=
                                                 opstate_get_le32((const uint8_t *)v.mv_data + v.mv_size - 4)))
        r = opstate_error_set(err, OPSTATE_CORRUPT, "blob", 0);
    if (r == OPSTATE_OK) {
        opstate_bytes b;
        b.ptr = (const uint8_t *)v.mv_data;
        b.len = v.mv_size - 4;
        fn(user, b, &m.snap);
    }
    opstate_lmdb__reader_end(&st->rd);
    return r;
}

/* >>log ------------------------------------------------------------------ */

#define OPSTATE_LMDB__MSG_FIXED 31u     /* time, id, has id, subject length, CRC */
#define OPSTATE_LMDB__MAX_SUBJECT 500u
#define OPSTATE_LMDB__INFO_SIZE 40u     /* epoch, last seq, last time, live, layout, CRC */
#define OPSTATE_LMDB__INFO_SIZE_0 32u   /* layout 0 (opstate 0.1): no layout, no CRC */

/* Every log record ends with a seal: the CRC32C of its LMDB key and of the
   value bytes before it, so a flipped sequence, time or index entry is seen
   (DESIGN.md "Storage integrity"). */
OPSTATE_LMDB__PRIVATE uint32_t opstate_lmdb__seal_crc(const MDB_val *k, const void *v, size_t n)
{
    return opstate_crc32c(opstate_crc32c(0, k->mv_data, k->mv_size), v, n);
}

/* Writes the seal into the last 4 bytes of a value of `size` bytes. */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__seal(const MDB_val *k, uint8_t *v, size_t size)
{
    opstate_put_le32(v + size - 4, opstate_lmdb__seal_crc(k, v, size - 4));
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__sealed(const MDB_val *k, const MDB_val *v)
{
    const uint8_t *p = (const uint8_t *)v->mv_data;
    return v->mv_size >= 4 && opstate_lmdb__seal_crc(k, p, v->mv_size - 4) == opstate_get_le32(p + v->mv_size - 4);
}

/* Puts key -> value | seal (MDB_RESERVE: the value is written in place). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__put_sealed(MDB_txn *txn, MDB_dbi dbi, MDB_val *k, const void *value, size_t n,
                                                   unsigned flags)
{
    MDB_val v;
    int rc;
    v.mv_size = n + 4;
    if ((rc = mdb_put(txn, dbi, k, &v, flags | MDB_RESERVE)) != 0) return rc;
    if (n) OPSTATE_MEMCPY(v.mv_data, value, n);
    opstate_lmdb__seal(k, (uint8_t *)v.mv_data, n + 4);
    return 0;
}

/* The log's info record: epoch | last seq | last time | live count. */
typedef struct opstate_lmdb__info_rec {
    uint64_t epoch, last_seq, live;
    int64_t last_time;
} opstate_lmdb__info_rec;

struct opstate_lmdb_log {
    opstate_lmdb *e;
    opstate_lmdb_log_config cfg;
    char name[65];
    MDB_dbi msgs, subj, bysubj, ids, idseq, meta;
    opstate_lmdb__reader rd;
    opstate_result open_why;
};

/* One message record decoded (pointers into the map). */
typedef struct opstate_lmdb__msg {
    uint64_t seq;
    int64_t time;
    opstate_bytes subject, data;
} opstate_lmdb__msg;

OPSTATE_LMDB__PRIVATE int64_t opstate_lmdb__now(const opstate_lmdb_log *lg)
{
    struct timespec ts;
    if (lg->cfg.clock) return lg->cfg.clock(lg->cfg.clock_user);
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__msg_decode(const MDB_val *k, const MDB_val *v, opstate_lmdb__msg *m)
{
    const uint8_t *p = (const uint8_t *)v->mv_data;
    size_t slen;
    if (k->mv_size != 8 || v->mv_size < OPSTATE_LMDB__MSG_FIXED || !opstate_lmdb__sealed(k, v)) return false;
    slen = opstate_get_le16(p + 25);
    if (slen > v->mv_size - OPSTATE_LMDB__MSG_FIXED) return false;
    m->seq = opstate_lmdb__get_be64((const uint8_t *)k->mv_data);
    m->time = (int64_t)opstate_get_le64(p);
    m->subject.ptr = p + 27;
    m->subject.len = slen;
    m->data.ptr = p + 27 + slen;
    m->data.len = v->mv_size - OPSTATE_LMDB__MSG_FIXED - slen;
    return true;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__info_get(const opstate_lmdb_log *lg, MDB_txn *txn, opstate_lmdb__info_rec *info)
{
    MDB_val k = opstate_lmdb__val("info", 4), v;
    const uint8_t *p;
    int rc = opstate_lmdb__get(lg->e, txn, lg->meta, &k, &v);
    OPSTATE_MEMSET(info, 0, sizeof *info);
    if (rc != 0) return rc;
    if (v.mv_size == OPSTATE_LMDB__INFO_SIZE_0) return MDB_VERSION_MISMATCH; /* layout 0: migrated at open */
    if (v.mv_size != OPSTATE_LMDB__INFO_SIZE || !opstate_lmdb__sealed(&k, &v)) return MDB_CORRUPTED;
    p = (const uint8_t *)v.mv_data;
    if (opstate_get_le32(p + 32) != OPSTATE_LMDB_LOG_LAYOUT_VERSION) return MDB_VERSION_MISMATCH;
    info->epoch = opstate_get_le64(p);
    info->last_seq = opstate_get_le64(p + 8);
    info->last_time = (int64_t)opstate_get_le64(p + 16);
    info->live = opstate_get_le64(p + 24);
    return 0;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__info_put(const opstate_lmdb_log *lg, MDB_txn *txn, const opstate_lmdb__info_rec *info)
{
    uint8_t b[OPSTATE_LMDB__INFO_SIZE - 4];
    MDB_val k = opstate_lmdb__val("info", 4);
    opstate_put_le64(b, info->epoch);
    opstate_put_le64(b + 8, info->last_seq);
    opstate_put_le64(b + 16, (uint64_t)info->last_time);
    opstate_put_le64(b + 24, info->live);
    opstate_put_le32(b + 32, OPSTATE_LMDB_LOG_LAYOUT_VERSION);
    return opstate_lmdb__put_sealed(txn, lg->meta, &k, b, sizeof b, 0);
}

/* Key of the per-subject index: subject 0x00 BE seq. */
OPSTATE_LMDB__PRIVATE MDB_val opstate_lmdb__bysubj_key(uint8_t *buf, opstate_bytes subject, uint64_t seq)
{
    OPSTATE_MEMCPY(buf, subject.ptr, subject.len);
    buf[subject.len] = 0;
    opstate_lmdb__put_be64(buf + subject.len + 1, seq);
    return opstate_lmdb__val(buf, subject.len + 9);
}

/* subject -> first | last | count */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__subj_get(const opstate_lmdb_log *lg, MDB_txn *txn, opstate_bytes subject,
                                                 uint64_t out[3])
{
    MDB_val k = opstate_lmdb__val(subject.ptr, subject.len), v;
    int rc = opstate_lmdb__get(lg->e, txn, lg->subj, &k, &v);
    if (rc != 0) return rc;
    if (v.mv_size != 28 || !opstate_lmdb__sealed(&k, &v)) return MDB_CORRUPTED;
    out[0] = opstate_get_le64((const uint8_t *)v.mv_data);
    out[1] = opstate_get_le64((const uint8_t *)v.mv_data + 8);
    out[2] = opstate_get_le64((const uint8_t *)v.mv_data + 16);
    return 0;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__subj_put(const opstate_lmdb_log *lg, MDB_txn *txn, opstate_bytes subject,
                                                 const uint64_t s[3])
{
    uint8_t b[24];
    MDB_val k = opstate_lmdb__val(subject.ptr, subject.len);
    if (s[2] == 0) return mdb_del(txn, lg->subj, &k, NULL);
    opstate_put_le64(b, s[0]);
    opstate_put_le64(b + 8, s[1]);
    opstate_put_le64(b + 16, s[2]);
    return opstate_lmdb__put_sealed(txn, lg->subj, &k, b, 24, 0);
}

/* Deletes message `seq` (record at hand) and its index entries. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__msg_delete(const opstate_lmdb_log *lg, MDB_txn *txn, const opstate_lmdb__msg *m,
                                                   opstate_lmdb__info_rec *info)
{
    uint8_t kb[OPSTATE_LMDB__MAX_SUBJECT + 9], seqb[8];
    uint64_t s[3];
    MDB_val bk = opstate_lmdb__bysubj_key(kb, m->subject, m->seq), mk = opstate_lmdb__val(seqb, 8), nk, nv;
    MDB_cursor *cur;
    opstate_bytes subject = m->subject;
    int rc = mdb_del(txn, lg->bysubj, &bk, NULL);
    if (rc == 0 && (rc = opstate_lmdb__subj_get(lg, txn, subject, s)) == 0) {
        s[2]--;
        if (s[2] && s[0] == m->seq && (rc = mdb_cursor_open(txn, lg->bysubj, &cur)) == 0) {
            nk = opstate_lmdb__bysubj_key(kb, subject, 0); /* first remaining seq of the subject */
            if ((rc = opstate_lmdb__cursor_get(lg->e, cur, &nk, &nv, MDB_SET_RANGE)) == 0)
                s[0] = opstate_lmdb__get_be64((const uint8_t *)nk.mv_data + subject.len + 1);
            mdb_cursor_close(cur);
        }
        if (rc == 0) rc = opstate_lmdb__subj_put(lg, txn, subject, s);
    }
    opstate_lmdb__put_be64(seqb, m->seq);
    if (rc == 0) rc = mdb_del(txn, lg->msgs, &mk, NULL);
    if (rc == 0) info->live--;
    return rc;
}

/* Deletes the oldest message while `more` says so (retention, purge). */
typedef bool (*opstate_lmdb__more_fn)(const opstate_lmdb_log *lg, const opstate_lmdb__msg *oldest,
                                      const opstate_lmdb__info_rec *info, uint64_t arg);

OPSTATE_LMDB__PRIVATE int opstate_lmdb__trim(const opstate_lmdb_log *lg, MDB_txn *txn, opstate_lmdb__info_rec *info,
                                             opstate_lmdb__more_fn more, uint64_t arg)
{
    for (;;) {
        MDB_cursor *cur;
        MDB_val k, v;
        opstate_lmdb__msg m;
        int rc = mdb_cursor_open(txn, lg->msgs, &cur);
        if (rc == 0) rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_FIRST);
        if (rc == 0 && !opstate_lmdb__msg_decode(&k, &v, &m)) rc = MDB_CORRUPTED;
        mdb_cursor_close(cur);
        if (rc == MDB_NOTFOUND) return 0;
        if (rc != 0) return rc;
        if (!more(lg, &m, info, arg)) return 0;
        if ((rc = opstate_lmdb__msg_delete(lg, txn, &m, info)) != 0) return rc;
    }
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__over_limits(const opstate_lmdb_log *lg, const opstate_lmdb__msg *oldest,
                                                     const opstate_lmdb__info_rec *info, uint64_t now)
{
    if (lg->cfg.max_messages && info->live > lg->cfg.max_messages) return true;
    return opstate_log_aged_out(lg->cfg.max_age_ns, oldest->time, (int64_t)now);
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__below(const opstate_lmdb_log *lg, const opstate_lmdb__msg *oldest,
                                               const opstate_lmdb__info_rec *info, uint64_t below)
{
    (void)lg;
    (void)info;
    return oldest->seq < below;
}

typedef struct opstate_lmdb__append_ctx {
    opstate_lmdb_log *lg;
    const opstate_lmdb_append_item *items;
    size_t n, at; /* at: the item being appended */
    opstate_append_result *out;
    opstate_result why;
} opstate_lmdb__append_ctx;

/* The publish time of message `seq`, or of the first message after it
   when retention removed it (an upper bound: publish times do not go back
   with sequences), or the log's last time when none is left. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__time_at(const opstate_lmdb_log *lg, MDB_txn *txn, const uint8_t seq_key[8],
                                                const opstate_lmdb__info_rec *info, int64_t *time)
{
    uint8_t kb[8];
    MDB_val k, v;
    MDB_cursor *cur;
    opstate_lmdb__msg m;
    int rc = mdb_cursor_open(txn, lg->msgs, &cur);
    OPSTATE_MEMCPY(kb, seq_key, 8);
    k = opstate_lmdb__val(kb, 8);
    if (rc == 0) rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_SET_RANGE);
    if (rc == 0) rc = opstate_lmdb__msg_decode(&k, &v, &m) ? 0 : MDB_CORRUPTED;
    if (rc == 0) *time = m.time;
    if (rc == MDB_NOTFOUND) *time = info->last_time;
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Forgets, oldest first, the ids whose append left the duplicate window by
   `now`, so that the ids left are exactly the live ones. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__forget_ids(const opstate_lmdb_log *lg, MDB_txn *txn,
                                                   const opstate_lmdb__info_rec *info, int64_t now)
{
    MDB_cursor *cur;
    MDB_val sk, old;
    int64_t time = 0;
    int rc = mdb_cursor_open(txn, lg->idseq, &cur);
    for (rc = rc ? rc : opstate_lmdb__cursor_get(lg->e, cur, &sk, &old, MDB_FIRST); rc == 0;
         rc = opstate_lmdb__cursor_get(lg->e, cur, &sk, &old, MDB_NEXT)) {
        uint8_t idb[16], seqb[8];
        MDB_val ik = opstate_lmdb__val(idb, 16), cur_seq;
        if (sk.mv_size != 8 || old.mv_size != 20 || !opstate_lmdb__sealed(&sk, &old)) rc = MDB_CORRUPTED;
        if (rc == 0) {
            OPSTATE_MEMCPY(seqb, sk.mv_data, 8);
            rc = opstate_lmdb__time_at(lg, txn, seqb, info, &time);
        }
        if (rc != 0 || !opstate_log_id_expired(lg->cfg.duplicate_window_ns, time, now)) break;
        OPSTATE_MEMCPY(idb, old.mv_data, 16);
        if ((rc = opstate_lmdb__get(lg->e, txn, lg->ids, &ik, &cur_seq)) == 0 && cur_seq.mv_size == 12 &&
            OPSTATE_MEMCMP(cur_seq.mv_data, seqb, 8) == 0) /* not appended again since */
            rc = mdb_del(txn, lg->ids, &ik, NULL);
        if ((rc == 0 || rc == MDB_NOTFOUND) && (rc = mdb_cursor_del(cur, 0)) != 0) break;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Remembers the id of message `seq` (the window's oldest were forgotten
   before the duplicate check). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__remember_id(const opstate_lmdb_log *lg, MDB_txn *txn, const opstate_id *id,
                                                    uint64_t seq)
{
    uint8_t sb[8];
    MDB_val ik = opstate_lmdb__val(id->bytes, 16), sk = opstate_lmdb__val(sb, 8);
    int rc;
    opstate_lmdb__put_be64(sb, seq);
    if ((rc = opstate_lmdb__put_sealed(txn, lg->ids, &ik, sb, 8, 0)) != 0) return rc;
    return opstate_lmdb__put_sealed(txn, lg->idseq, &sk, id->bytes, 16, MDB_APPEND);
}

/* Stores the message itself and links it into its subject. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__store_msg(const opstate_lmdb_log *lg, const opstate_lmdb_append_item *a,
                                                  MDB_txn *txn, uint64_t seq, int64_t time)
{
    uint8_t key[8] = {0}, kb[OPSTATE_LMDB__MAX_SUBJECT + 9];
    uint64_t s[3];
    MDB_val k = opstate_lmdb__val(key, 8), v, bk;
    uint8_t *p;
    int rc;
    opstate_lmdb__put_be64(key, seq);
    v.mv_size = OPSTATE_LMDB__MSG_FIXED + a->subject.len + a->data.len;
    if ((rc = mdb_put(txn, lg->msgs, &k, &v, MDB_RESERVE | MDB_APPEND)) != 0) return rc;
    p = (uint8_t *)v.mv_data;
    opstate_put_le64(p, (uint64_t)time);
    OPSTATE_MEMSET(p + 8, 0, 17);
    if (a->opts.msg_id) {
        OPSTATE_MEMCPY(p + 8, a->opts.msg_id->bytes, 16);
        p[24] = 1;
    }
    opstate_put_le16(p + 25, (uint16_t)a->subject.len);
    OPSTATE_MEMCPY(p + 27, a->subject.ptr, a->subject.len);
    if (a->data.len) OPSTATE_MEMCPY(p + 27 + a->subject.len, a->data.ptr, a->data.len);
    opstate_lmdb__seal(&k, p, v.mv_size);
    bk = opstate_lmdb__bysubj_key(kb, a->subject, seq);
    if ((rc = opstate_lmdb__put_sealed(txn, lg->bysubj, &bk, NULL, 0, 0)) != 0) return rc;
    if ((rc = opstate_lmdb__subj_get(lg, txn, a->subject, s)) == MDB_NOTFOUND) {
        s[0] = seq;
        s[2] = 0;
    } else if (rc != 0) {
        return rc;
    }
    s[1] = seq;
    s[2]++;
    return opstate_lmdb__subj_put(lg, txn, a->subject, s);
}

/* Per-subject retention: drop the subject's oldest while over the limit. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__trim_subject(const opstate_lmdb_log *lg, MDB_txn *txn, opstate_bytes subject,
                                                     opstate_lmdb__info_rec *info)
{
    uint64_t s[3];
    int rc;
    while (lg->cfg.max_per_subject && (rc = opstate_lmdb__subj_get(lg, txn, subject, s)) != MDB_NOTFOUND) {
        uint8_t key[8] = {0};
        MDB_val k = opstate_lmdb__val(key, 8), v;
        opstate_lmdb__msg m;
        if (rc != 0) return rc;
        if (s[2] <= lg->cfg.max_per_subject) break;
        opstate_lmdb__put_be64(key, s[0]);
        if ((rc = opstate_lmdb__get(lg->e, txn, lg->msgs, &k, &v)) != 0) return rc;
        if (!opstate_lmdb__msg_decode(&k, &v, &m)) return MDB_CORRUPTED;
        m.subject = subject; /* the caller's copy: the record is deleted below */
        if ((rc = opstate_lmdb__msg_delete(lg, txn, &m, info)) != 0) return rc;
    }
    return 0;
}

/* Appends one item inside the batch's transaction. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__append_one(opstate_lmdb__append_ctx *a, MDB_txn *txn, opstate_lmdb__info_rec *info,
                                                   int64_t now)
{
    const opstate_lmdb_log *lg = a->lg;
    const opstate_lmdb_append_item *it = &a->items[a->at];
    opstate_append_result *out = &a->out[a->at];
    uint64_t s[3];
    int rc;
    if (it->opts.msg_id) {
        MDB_val k = opstate_lmdb__val(it->opts.msg_id->bytes, 16), v;
        if ((rc = opstate_lmdb__forget_ids(lg, txn, info, now)) != 0) return rc;
        if ((rc = opstate_lmdb__get(lg->e, txn, lg->ids, &k, &v)) == 0 && (v.mv_size != 12 || !opstate_lmdb__sealed(&k, &v)))
            return MDB_CORRUPTED;
        if (rc == 0) {
            out->seq = opstate_lmdb__get_be64((const uint8_t *)v.mv_data);
            out->duplicate = true;
            return 0;
        }
    }
    if (it->opts.expect_last_subject_seq) {
        if ((rc = opstate_lmdb__subj_get(lg, txn, it->subject, s)) == MDB_NOTFOUND) s[1] = 0;
        else if (rc != 0) return rc;
        if (opstate_log_expect_check(&it->opts, s[1]) != OPSTATE_OK) {
            a->why = OPSTATE_CONFLICT;
            return OPSTATE_LMDB__ABORT;
        }
    }
    info->last_seq++;
    info->last_time = now;
    info->live++;
    if ((rc = opstate_lmdb__store_msg(lg, it, txn, info->last_seq, now)) != 0) return rc;
    if (it->opts.msg_id && (rc = opstate_lmdb__remember_id(lg, txn, it->opts.msg_id, info->last_seq)) != 0) return rc;
    if ((rc = opstate_lmdb__trim_subject(lg, txn, it->subject, info)) != 0 ||
        (rc = opstate_lmdb__trim(lg, txn, info, opstate_lmdb__over_limits, (uint64_t)now)) != 0)
        return rc;
    out->seq = info->last_seq;
    out->duplicate = false;
    return 0;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__append_body(void *user, MDB_txn *txn)
{
    opstate_lmdb__append_ctx *a = (opstate_lmdb__append_ctx *)user;
    opstate_lmdb__info_rec info;
    int rc = opstate_lmdb__info_get(a->lg, txn, &info);
    for (a->at = 0; rc == 0 && a->at < a->n; a->at++) {
        rc = opstate_lmdb__append_one(a, txn, &info, opstate_lmdb__now(a->lg));
        if (rc) break; /* at stays on the failing item */
    }
    return rc ? rc : opstate_lmdb__info_put(a->lg, txn, &info);
}

OPSTATE_API opstate_result opstate_lmdb_log_append_batch(opstate_lmdb_log *lg, const opstate_lmdb_append_item *items,
                                                         size_t n, opstate_append_result *out, opstate_error *err)
{
    opstate_lmdb__append_ctx a;
    opstate_result r;
    size_t i;
    for (i = 0; i < n; i++) {
        opstate_bytes sj = items[i].subject;
        if (sj.len == 0 || sj.len > OPSTATE_LMDB__MAX_SUBJECT || memchr(sj.ptr, 0, sj.len)) {
            r = opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "subject (1..500 bytes, no 0x00)", 0);
            if (err) err->offset = i;
            return r;
        }
    }
    OPSTATE_MEMSET(&a, 0, sizeof a);
    a.lg = lg;
    a.items = items;
    a.n = n;
    a.out = out;
    opstate_lmdb__reader_end(&lg->rd);
    r = opstate_lmdb__write(lg->e, opstate_lmdb__append_body, &a, &a.why, err);
    if (r != OPSTATE_OK && err) err->offset = a.at;
    return r;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__append(void *user, opstate_bytes subject, opstate_bytes data,
                                                          const opstate_append_options *opts, opstate_append_result *out,
                                                          opstate_error *err)
{
    opstate_lmdb_append_item it;
    OPSTATE_MEMSET(&it, 0, sizeof it);
    it.subject = subject;
    it.data = data;
    if (opts) it.opts = *opts;
    return opstate_lmdb_log_append_batch((opstate_lmdb_log *)user, &it, 1, out, err);
}

OPSTATE_LMDB__PRIVATE int64_t opstate_lmdb__monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct opstate_lmdb__purge_ctx {
    opstate_lmdb_log *lg;
    opstate_lmdb__more_fn more;
    uint64_t arg;
} opstate_lmdb__purge_ctx;

OPSTATE_LMDB__PRIVATE int opstate_lmdb__purge_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb__purge_ctx *p = (opstate_lmdb__purge_ctx *)user;
    opstate_lmdb__info_rec info;
    int rc = opstate_lmdb__info_get(p->lg, txn, &info);
    if (rc == 0) rc = opstate_lmdb__trim(p->lg, txn, &info, p->more, p->arg);
    return rc ? rc : opstate_lmdb__info_put(p->lg, txn, &info);
}

/* Deletes the oldest messages while `more` says so, in one transaction. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__trim_now(opstate_lmdb_log *lg, opstate_lmdb__more_fn more, uint64_t arg,
                                                            opstate_error *err)
{
    opstate_lmdb__purge_ctx p;
    opstate_result why = OPSTATE_OK;
    p.lg = lg;
    p.more = more;
    p.arg = arg;
    opstate_lmdb__reader_end(&lg->rd);
    return opstate_lmdb__write(lg->e, opstate_lmdb__purge_txn, &p, &why, err);
}

OPSTATE_API opstate_result opstate_lmdb_log_purge(opstate_lmdb_log *lg, uint64_t below_seq, opstate_error *err)
{
    return opstate_lmdb__trim_now(lg, opstate_lmdb__below, below_seq, err);
}

/* Max age does not wait for an append: reads and info first drop what has
   expired, as JetStream expires messages on its own clock. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__expire(opstate_lmdb_log *lg, opstate_error *err)
{
    MDB_cursor *cur;
    MDB_val k, v;
    opstate_lmdb__msg m;
    int64_t now;
    bool expired = false;
    opstate_result r;
    if (!lg->cfg.max_age_ns || lg->e->cfg.access == OPSTATE_LMDB_READ_ONLY) return OPSTATE_OK;
    now = opstate_lmdb__now(lg);
    if ((r = opstate_lmdb__reader_begin(lg->e, &lg->rd, err)) != OPSTATE_OK) return r;
    if (mdb_cursor_open(lg->rd.txn, lg->msgs, &cur) == 0) {
        expired = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_FIRST) == 0 && opstate_lmdb__msg_decode(&k, &v, &m) &&
                  opstate_log_aged_out(lg->cfg.max_age_ns, m.time, now);
        mdb_cursor_close(cur);
    }
    opstate_lmdb__reader_end(&lg->rd);
    return expired ? opstate_lmdb__trim_now(lg, opstate_lmdb__over_limits, (uint64_t)now, err) : OPSTATE_OK;
}

/* The seek for from_seq landed on key k: the record before k, if any, must
   sit below from_seq on a whole page. Else the seek passed over records (a
   damaged page hid them) and the hole it left is no retention's. */
OPSTATE_LMDB__PRIVATE bool opstate_lmdb__nothing_before(const opstate_lmdb_log *lg, const MDB_val *k, uint64_t from_seq)
{
    MDB_cursor *cur;
    MDB_val pk = *k, pv;
    const uint8_t *checked = NULL;
    bool ok = true;
    int rc;
    if (k->mv_size != 8 || opstate_lmdb__get_be64((const uint8_t *)k->mv_data) <= from_seq) return true;
    if (mdb_cursor_open(lg->rd.txn, lg->msgs, &cur) != 0) return false;
    if ((rc = opstate_lmdb__cursor_get(lg->e, cur, &pk, &pv, MDB_SET)) == 0 &&
        (rc = opstate_lmdb__cursor_get(lg->e, cur, &pk, &pv, MDB_PREV)) == 0)
        ok = pk.mv_size == 8 && opstate_lmdb__leaf_ok(lg->e, pk.mv_data, &checked) &&
             opstate_lmdb__get_be64((const uint8_t *)pk.mv_data) < from_seq;
    mdb_cursor_close(cur);
    return ok && (rc == 0 || rc == MDB_NOTFOUND);
}

/* One pass over the retained messages from from_seq. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__read_once(opstate_lmdb_log *lg, opstate_bytes filter, uint64_t from_seq,
                                                             opstate_log_message *msgs, size_t max, size_t *count,
                                                             const opstate_lmdb__info_rec *info, opstate_error *err)
{
    uint8_t key[8] = {0};
    MDB_val k = opstate_lmdb__val(key, 8), v;
    MDB_cursor *cur;
    size_t n = 0;
    uint64_t prev = from_seq ? from_seq - 1 : 0;
    const uint8_t *page_checked = NULL;
    int rc = mdb_cursor_open(lg->rd.txn, lg->msgs, &cur);
    opstate_lmdb__put_be64(key, from_seq);
    if (rc == 0 && (rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_SET_RANGE)) == 0 &&
        !opstate_lmdb__nothing_before(lg, &k, from_seq))
        rc = MDB_CORRUPTED;
    for (; rc == 0 && n < max; rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_NEXT)) {
        opstate_lmdb__msg m;
        if (!opstate_lmdb__leaf_ok(lg->e, k.mv_data, &page_checked) || !opstate_lmdb__msg_decode(&k, &v, &m) ||
            m.seq <= prev || m.seq > info->last_seq) {
            rc = MDB_CORRUPTED; /* a bad record, or sequences that do not go forward */
            if (err) err->offset = (size_t)prev + 1;
            break;
        }
        prev = m.seq;
        if (filter.len && !opstate_subject_matches(filter, m.subject)) continue;
        msgs[n].position.seq = m.seq;
        msgs[n].position.time = m.time;
        msgs[n].position.epoch = info->epoch;
        msgs[n].subject = m.subject;
        msgs[n].contiguous = true; /* the cursor walked every retained message: vouched */
        msgs[n++].data = m.data;
    }
    mdb_cursor_close(cur);
    /* the newest message is always retained: a walk that ended without
       reaching it lost records on the way (a damaged page) */
    if (rc == MDB_NOTFOUND && info->live && from_seq <= info->last_seq && prev != info->last_seq) rc = MDB_CORRUPTED;
    if (rc != 0 && rc != MDB_NOTFOUND) {
        *count = 0; /* nothing of a batch that holds a bad record */
        return opstate_lmdb__fail(err, rc, "log record");
    }
    *count = n;
    return OPSTATE_OK;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__read(void *user, opstate_bytes filter, uint64_t from_seq, int64_t wait_ns,
                                                        opstate_log_message *msgs, size_t max, size_t *count,
                                                        opstate_error *err)
{
    opstate_lmdb_log *lg = (opstate_lmdb_log *)user;
    int64_t deadline = wait_ns > 0 ? opstate_lmdb__monotonic_ns() + wait_ns : 0;
    for (;;) {
        opstate_lmdb__info_rec info;
        int rc;
        struct timespec pause;
        int64_t step = lg->cfg.poll_interval_ns;
        opstate_result r = opstate_lmdb__expire(lg, err);
        if (r == OPSTATE_OK) r = opstate_lmdb__reader_begin(lg->e, &lg->rd, err);
        if (r != OPSTATE_OK) return r;
        if ((rc = opstate_lmdb__info_get(lg, lg->rd.txn, &info)) != 0) return opstate_lmdb__fail(err, rc, "log info");
        r = opstate_lmdb__read_once(lg, filter, from_seq, msgs, max, count, &info, err);
        if (r != OPSTATE_OK || *count || !deadline || opstate_lmdb__monotonic_ns() >= deadline) return r;
        opstate_lmdb__reader_end(&lg->rd);
        pause.tv_sec = (time_t)(step / 1000000000);
        pause.tv_nsec = (long)(step % 1000000000);
        nanosleep(&pause, NULL);
    }
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__info(void *user, opstate_stream_info *out, opstate_error *err)
{
    opstate_lmdb_log *lg = (opstate_lmdb_log *)user;
    opstate_lmdb__info_rec info;
    MDB_cursor *cur;
    MDB_val k, v;
    opstate_lmdb__msg m;
    opstate_result r = opstate_lmdb__expire(lg, err);
    int rc;
    if (r == OPSTATE_OK) r = opstate_lmdb__reader_begin(lg->e, &lg->rd, err);
    if (r != OPSTATE_OK) return r;
    rc = opstate_lmdb__info_get(lg, lg->rd.txn, &info);
    OPSTATE_MEMSET(out, 0, sizeof *out);
    out->last_seq = info.last_seq;
    out->last_time = info.last_time;
    out->epoch = info.epoch;
    out->messages = info.live;
    out->first_seq = info.last_seq ? info.last_seq + 1 : 0;
    if (rc == 0 && (rc = mdb_cursor_open(lg->rd.txn, lg->msgs, &cur)) == 0) {
        if ((rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_FIRST)) == 0) {
            if (!opstate_lmdb__msg_decode(&k, &v, &m) || m.seq > info.last_seq) rc = MDB_CORRUPTED;
            out->first_seq = m.seq;
            out->first_time = m.time;
        }
        mdb_cursor_close(cur);
    }
    opstate_lmdb__reader_end(&lg->rd);
    return rc == 0 || rc == MDB_NOTFOUND ? OPSTATE_OK : opstate_lmdb__fail(err, rc, "info");
}

/* The last message of the subject whose index entry is (k, v); an entry
   that is not sealed, or names a message that is not there, is CORRUPTED. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__subject_last(const opstate_lmdb_log *lg, const MDB_val *k, const MDB_val *v,
                                                    const opstate_lmdb__info_rec *info, opstate_log_message *msg)
{
    uint8_t key[8] = {0};
    MDB_val mk = opstate_lmdb__val(key, 8), mv;
    opstate_lmdb__msg m;
    int rc;
    if (v->mv_size != 28 || !opstate_lmdb__sealed(k, v)) return MDB_CORRUPTED;
    opstate_lmdb__put_be64(key, opstate_get_le64((const uint8_t *)v->mv_data + 8));
    if ((rc = opstate_lmdb__get(lg->e, lg->rd.txn, lg->msgs, &mk, &mv)) != 0) return rc == MDB_NOTFOUND ? MDB_CORRUPTED : rc;
    if (!opstate_lmdb__msg_decode(&mk, &mv, &m) || m.seq > info->last_seq) return MDB_CORRUPTED;
    msg->position.seq = m.seq;
    msg->position.time = m.time;
    msg->position.epoch = info->epoch;
    msg->subject = m.subject;
    msg->data = m.data;
    msg->contiguous = false; /* one message per subject: no order to vouch for */
    return 0;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__last_per_subject(void *user, opstate_bytes filter,
                                                                    opstate_log_visit_fn fn, void *fn_user,
                                                                    opstate_error *err)
{
    opstate_lmdb_log *lg = (opstate_lmdb_log *)user;
    opstate_lmdb__info_rec info;
    MDB_cursor *cur;
    MDB_val k, v;
    opstate_result r = opstate_lmdb__reader_begin(lg->e, &lg->rd, err);
    int rc;
    if (r != OPSTATE_OK) return r;
    if ((rc = opstate_lmdb__info_get(lg, lg->rd.txn, &info)) == 0 && (rc = mdb_cursor_open(lg->rd.txn, lg->subj, &cur)) == 0) {
        for (rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_FIRST); rc == 0;
             rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_NEXT)) {
            opstate_log_message msg;
            if (filter.len && !opstate_subject_matches(filter, opstate_lmdb__bytes(&k))) continue;
            if ((rc = opstate_lmdb__subject_last(lg, &k, &v, &info, &msg)) != 0) break;
            fn(fn_user, &msg);
        }
        mdb_cursor_close(cur);
    }
    opstate_lmdb__reader_end(&lg->rd);
    return rc == 0 || rc == MDB_NOTFOUND ? OPSTATE_OK : opstate_lmdb__fail(err, rc, "subjects");
}

/* Opens the log's databases; a new log gets its first epoch. */
/* Layout 0 -> 1 for one database: every value gets its seal. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__reseal(const opstate_lmdb_log *lg, MDB_txn *txn, MDB_dbi dbi)
{
    const opstate_allocator *a = &lg->e->cfg.allocator;
    uint8_t key[OPSTATE_LMDB__MAX_SUBJECT + 16], *buf = NULL;
    size_t cap = 0;
    MDB_cursor *cur;
    MDB_val k, v;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    for (rc = rc ? rc : opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_FIRST); rc == 0;
         rc = opstate_lmdb__cursor_get(lg->e, cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size > sizeof key) rc = MDB_CORRUPTED;
        if (rc == 0 && v.mv_size + 4 > cap) {
            opstate_free(a, buf);
            cap = (v.mv_size + 4) * 2;
            if (!(buf = (uint8_t *)opstate_alloc(a, cap))) rc = ENOMEM;
        }
        if (rc != 0) break;
        OPSTATE_MEMCPY(key, k.mv_data, k.mv_size);
        if (v.mv_size) OPSTATE_MEMCPY(buf, v.mv_data, v.mv_size);
        k.mv_data = key;
        v.mv_data = buf;
        v.mv_size += 4;
        opstate_lmdb__seal(&k, buf, v.mv_size);
        if ((rc = mdb_cursor_put(cur, &k, &v, MDB_CURRENT)) != 0) break;
    }
    mdb_cursor_close(cur);
    opstate_free(a, buf);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

/* Migrates a layout-0 log (opstate 0.1) in the open transaction. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__log_migrate0(opstate_lmdb_log *lg, MDB_txn *txn, const MDB_val *old_info)
{
    const MDB_dbi dbis[5] = {lg->msgs, lg->subj, lg->bysubj, lg->ids, lg->idseq};
    const uint8_t *p = (const uint8_t *)old_info->mv_data;
    opstate_lmdb__info_rec info;
    int i, rc = 0;
    info.epoch = opstate_get_le64(p);
    info.last_seq = opstate_get_le64(p + 8);
    info.last_time = (int64_t)opstate_get_le64(p + 16);
    info.live = opstate_get_le64(p + 24);
    if (lg->e->cfg.access == OPSTATE_LMDB_READ_ONLY) {
        lg->open_why = OPSTATE_UNKNOWN_VERSION; /* a reader never writes: a writer migrates */
        return OPSTATE_LMDB__ABORT;
    }
    for (i = 0; i < 5 && rc == 0; i++) rc = opstate_lmdb__reseal(lg, txn, dbis[i]);
    if (rc == 0) rc = opstate_lmdb__info_put(lg, txn, &info);
    if (rc == 0) opstate_diag_line(&lg->e->cfg.diag, OPSTATE_DIAG_INFO, "lmdb: migrated a layout 0 log (", info.live,
                                   " messages) to layout 1");
    return rc;
}

/* Opens the log's databases; a new log gets its first epoch. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__log_open_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb_log *lg = (opstate_lmdb_log *)user;
    opstate_lmdb__info_rec info;
    MDB_val k = opstate_lmdb__val("info", 4), v;
    int rc;
    if ((rc = opstate_lmdb__dbi(lg->e, txn, 'l', lg->name, "msgs", &lg->msgs)) != 0 ||
        (rc = opstate_lmdb__dbi(lg->e, txn, 'l', lg->name, "subj", &lg->subj)) != 0 ||
        (rc = opstate_lmdb__dbi(lg->e, txn, 'l', lg->name, "bysubj", &lg->bysubj)) != 0 ||
        (rc = opstate_lmdb__dbi(lg->e, txn, 'l', lg->name, "ids", &lg->ids)) != 0 ||
        (rc = opstate_lmdb__dbi(lg->e, txn, 'l', lg->name, "idseq", &lg->idseq)) != 0 ||
        (rc = opstate_lmdb__dbi(lg->e, txn, 'l', lg->name, "meta", &lg->meta)) != 0)
        return rc == MDB_NOTFOUND ? opstate_lmdb__missing(txn, 'l', &lg->open_why) : rc;
    rc = opstate_lmdb__info_get(lg, txn, &info);
    if (rc == MDB_VERSION_MISMATCH && opstate_lmdb__get(lg->e, txn, lg->meta, &k, &v) == 0 &&
        v.mv_size == OPSTATE_LMDB__INFO_SIZE_0)
        return opstate_lmdb__log_migrate0(lg, txn, &v);
    if (rc != MDB_NOTFOUND) return rc;
    if (lg->e->cfg.access != OPSTATE_LMDB_CREATE) return opstate_lmdb__missing(txn, 'l', &lg->open_why);
    info.epoch = (uint64_t)opstate_lmdb__now(lg);
    if (!info.epoch) info.epoch = 1;
    return opstate_lmdb__info_put(lg, txn, &info);
}

/* Every default of a log config, in one place (cfg may be NULL). */
OPSTATE_LMDB__PRIVATE void opstate_lmdb__log_defaults(opstate_lmdb_log_config *cfg)
{
    if (!cfg->name) cfg->name = "events";
    if (!cfg->duplicate_window_ns) cfg->duplicate_window_ns = OPSTATE_DUPLICATE_WINDOW_NS;
    if (!cfg->poll_interval_ns) cfg->poll_interval_ns = 1000000;
}

OPSTATE_API opstate_result opstate_lmdb_log_open(opstate_lmdb *e, const opstate_lmdb_log_config *cfg,
                                                 opstate_lmdb_log **out, opstate_error *err)
{
    opstate_lmdb_log *lg;
    opstate_lmdb_log_config c;
    opstate_result r;
    const char *name;
    if (cfg) c = *cfg;
    else OPSTATE_MEMSET(&c, 0, sizeof c);
    opstate_lmdb__log_defaults(&c);
    name = c.name;
    if (!opstate_lmdb__name_ok(name)) return opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "log name", 0);
    if (!(lg = (opstate_lmdb_log *)opstate_alloc(&e->cfg.allocator, sizeof *lg)))
        return opstate_error_set(err, OPSTATE_NO_MEMORY, "log", 0);
    OPSTATE_MEMSET(lg, 0, sizeof *lg);
    lg->e = e;
    lg->cfg = c;
    OPSTATE_MEMCPY(lg->name, name, strlen(name) + 1);
    lg->cfg.name = lg->name;
    opstate_lmdb__reader_add(e, &lg->rd);
    if ((r = opstate_lmdb__open_part(e, opstate_lmdb__log_open_txn, lg, &lg->open_why, err)) != OPSTATE_OK) {
        if (err && r == OPSTATE_CONFLICT) err->field = "the environment holds a state store, not a log";
        if (err && r == OPSTATE_UNKNOWN_VERSION) err->field = "log layout 0 (opstate 0.1): open it read-write once to migrate";
        if (err && r == OPSTATE_NOT_FOUND) err->field = "log";
        opstate_lmdb_log_close(lg);
        return r;
    }
    *out = lg;
    return OPSTATE_OK;
}

OPSTATE_API void opstate_lmdb_log_close(opstate_lmdb_log *lg)
{
    if (!lg) return;
    opstate_lmdb__reader_remove(lg->e, &lg->rd);
    opstate_free(&lg->e->cfg.allocator, lg);
}

OPSTATE_API opstate_log opstate_lmdb_log_iface(opstate_lmdb_log *lg)
{
    opstate_log log;
    log.user = lg;
    log.append = opstate_lmdb__append;
    log.read = opstate_lmdb__read;
    log.info = opstate_lmdb__info;
    log.last_per_subject = opstate_lmdb__last_per_subject;
    log.ack = NULL;
    return log;
}

OPSTATE_LMDB__PRIVATE int opstate_lmdb__recreate_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb_log *lg = (opstate_lmdb_log *)user;
    opstate_lmdb__info_rec info;
    uint64_t old_epoch;
    int rc = opstate_lmdb__info_get(lg, txn, &info);
    if (rc != 0) return rc;
    old_epoch = info.epoch;
    if ((rc = mdb_drop(txn, lg->msgs, 0)) != 0 || (rc = mdb_drop(txn, lg->subj, 0)) != 0 ||
        (rc = mdb_drop(txn, lg->bysubj, 0)) != 0 || (rc = mdb_drop(txn, lg->ids, 0)) != 0 ||
        (rc = mdb_drop(txn, lg->idseq, 0)) != 0)
        return rc;
    OPSTATE_MEMSET(&info, 0, sizeof info);
    info.epoch = (uint64_t)opstate_lmdb__now(lg);
    if (info.epoch <= old_epoch) info.epoch = old_epoch + 1;
    return opstate_lmdb__info_put(lg, txn, &info);
}

OPSTATE_API opstate_result opstate_lmdb_log_recreate(opstate_lmdb_log *lg, opstate_error *err)
{
    opstate_result why = OPSTATE_OK;
    opstate_lmdb__reader_end(&lg->rd);
    return opstate_lmdb__write(lg->e, opstate_lmdb__recreate_txn, lg, &why, err);
}

/* >>verify --------------------------------------------------------------- */

typedef struct opstate_lmdb__verify {
    opstate_lmdb *e;
    MDB_txn *txn;
    opstate_lmdb_verify_report *out;
    char name[80];   /* "l:NAME" or "s:NAME" of the part being walked */
    uint64_t bad_key; /* sequence or flush number of the bad record */
    uint64_t prev, limit, count; /* keys go forward, stay at or below limit */
} opstate_lmdb__verify;

/* Checks one record of database `part`; false stops the walk. */
typedef bool (*opstate_lmdb__check_fn)(opstate_lmdb__verify *v, const MDB_val *k, const MDB_val *val);

typedef struct opstate_lmdb__check_ctx {
    opstate_lmdb__verify *v;
    opstate_lmdb__check_fn fn;
} opstate_lmdb__check_ctx;

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__check_visit(void *user, const MDB_val *k, const MDB_val *val)
{
    opstate_lmdb__check_ctx *c = (opstate_lmdb__check_ctx *)user;
    c->v->bad_key = k->mv_size == 8 ? opstate_lmdb__get_be64((const uint8_t *)k->mv_data) : 0;
    if (!c->fn(c->v, k, val)) return false;
    c->v->out->records++;
    return true;
}

/* Walks the database "<part name>:<part>" with fn; 0, or the LMDB status
   (MDB_CORRUPTED when fn refused a record, out->where naming it). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__verify_db(opstate_lmdb__verify *v, const char *part, opstate_lmdb__check_fn fn)
{
    char full[96];
    MDB_dbi dbi;
    opstate_lmdb__check_ctx c;
    int rc;
    snprintf(full, sizeof full, "%s:%s", v->name, part);
    c.v = v;
    c.fn = fn;
    if ((rc = mdb_dbi_open(v->txn, full, 0, &dbi)) != 0) return rc;
    rc = opstate_lmdb__walk(v->e, v->txn, dbi, opstate_lmdb__check_visit, &c);
    if (rc == OPSTATE_LMDB__ABORT) rc = MDB_CORRUPTED;
    if (rc != 0) snprintf(v->out->where, sizeof v->out->where, "%s, record %llu", full, (unsigned long long)v->bad_key);
    return rc;
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__verify_sealed(opstate_lmdb__verify *v, const MDB_val *k, const MDB_val *val)
{
    (void)v;
    return opstate_lmdb__sealed(k, val);
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__verify_msg(opstate_lmdb__verify *v, const MDB_val *k, const MDB_val *val)
{
    opstate_lmdb__msg m;
    if (!opstate_lmdb__msg_decode(k, val, &m) || m.seq <= v->prev || m.seq > v->limit) return false;
    v->prev = m.seq;
    v->count++;
    return true;
}

/* A log: the info record, then every database of it. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__verify_log(opstate_lmdb__verify *v)
{
    static const char *const index_parts[] = {"subj", "bysubj", "ids", "idseq"};
    opstate_lmdb_log lg;
    opstate_lmdb__info_rec info;
    int i, rc;
    OPSTATE_MEMSET(&lg, 0, sizeof lg);
    lg.e = v->e;
    snprintf(lg.name, sizeof lg.name, "%s", v->name + 2);
    if ((rc = opstate_lmdb__dbi(v->e, v->txn, 'l', lg.name, "meta", &lg.meta)) != 0 ||
        (rc = opstate_lmdb__info_get(&lg, v->txn, &info)) != 0) {
        snprintf(v->out->where, sizeof v->out->where, "%s:meta, the info record", v->name);
        return rc;
    }
    v->prev = v->count = 0;
    v->limit = info.last_seq;
    if ((rc = opstate_lmdb__verify_db(v, "msgs", opstate_lmdb__verify_msg)) != 0) return rc;
    if (v->count != info.live) {
        snprintf(v->out->where, sizeof v->out->where, "%s:meta, the info record counts %llu messages, %llu found",
                 v->name, (unsigned long long)info.live, (unsigned long long)v->count);
        return MDB_CORRUPTED;
    }
    for (i = 0; i < 4 && rc == 0; i++) rc = opstate_lmdb__verify_db(v, index_parts[i], opstate_lmdb__verify_sealed);
    return rc;
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__verify_table(opstate_lmdb__verify *v, const MDB_val *k, const MDB_val *val)
{
    opstate_bytes value;
    opstate_position pos;
    (void)v;
    return opstate_lmdb__table_decode(opstate_lmdb__bytes(k), opstate_lmdb__bytes(val), &value, &pos);
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__verify_item(void *user, const opstate_kv_item *item)
{
    (void)user;
    (void)item;
    return true;
}

OPSTATE_LMDB__PRIVATE bool opstate_lmdb__verify_delta(opstate_lmdb__verify *v, const MDB_val *k, const MDB_val *val)
{
    opstate_bytes key = opstate_lmdb__bytes(k), rec = opstate_lmdb__bytes(val);
    if (!opstate_lmdb__delta_ok(key, rec) || !opstate_lmdb__delta_walk(rec, opstate_lmdb__verify_item, NULL)) return false;
    if (v->bad_key <= v->prev || v->bad_key >= v->limit) return false; /* the chain goes forward, below next flush */
    v->prev = v->bad_key;
    v->count++;
    return true;
}

/* A store: the meta record, the table, the delta chain, a blob. */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__verify_store(opstate_lmdb__verify *v)
{
    opstate_lmdb_store st;
    opstate_lmdb__meta m;
    MDB_val mk = opstate_lmdb__val("meta", 4), bk = opstate_lmdb__val("blob", 4), val;
    int rc;
    OPSTATE_MEMSET(&st, 0, sizeof st);
    st.e = v->e;
    snprintf(st.name, sizeof st.name, "%s", v->name + 2);
    snprintf(v->out->where, sizeof v->out->where, "%s:meta, the meta record", v->name);
    if ((rc = opstate_lmdb__dbi(v->e, v->txn, 's', st.name, "meta", &st.meta_dbi)) != 0 ||
        (rc = opstate_lmdb__get(v->e, v->txn, st.meta_dbi, &mk, &val)) != 0)
        return rc == MDB_NOTFOUND ? 0 : rc; /* an empty store (or layout 0, migrated at open) */
    if (opstate_lmdb__meta_decode(opstate_lmdb__bytes(&val), &m, NULL) != OPSTATE_OK) return MDB_CORRUPTED;
    if ((m.flags & OPSTATE_LMDB__META_BLOB) &&
        ((rc = opstate_lmdb__get(v->e, v->txn, st.meta_dbi, &bk, &val)) != 0 || val.mv_size < 4 ||
         opstate_crc32c(0, val.mv_data, val.mv_size - 4) != opstate_get_le32((const uint8_t *)val.mv_data + val.mv_size - 4)))
        return rc ? rc : MDB_CORRUPTED;
    v->out->where[0] = '\0';
    v->prev = v->count = 0;
    v->limit = m.next_flush;
    if ((rc = opstate_lmdb__verify_db(v, "table", opstate_lmdb__verify_table)) != 0 ||
        (rc = opstate_lmdb__verify_db(v, "deltas", opstate_lmdb__verify_delta)) != 0)
        return rc;
    if (v->count == m.delta_count) return 0;
    snprintf(v->out->where, sizeof v->out->where, "%s:meta, the meta record counts %lu delta records, %llu found", v->name,
             (unsigned long)m.delta_count, (unsigned long long)v->count);
    return MDB_CORRUPTED;
}

/* Every part named in the main database ("l:NAME:meta", "s:NAME:meta"). */
OPSTATE_LMDB__PRIVATE int opstate_lmdb__verify_txn(void *user, MDB_txn *txn)
{
    opstate_lmdb__verify *v = (opstate_lmdb__verify *)user;
    MDB_dbi main_dbi;
    MDB_cursor *cur;
    MDB_val k, val;
    int rc = mdb_dbi_open(txn, NULL, 0, &main_dbi);
    v->txn = txn;
    if (rc == 0) rc = mdb_cursor_open(txn, main_dbi, &cur);
    if (rc != 0) return rc;
    for (rc = opstate_lmdb__cursor_get(v->e, cur, &k, &val, MDB_FIRST); rc == 0;
         rc = opstate_lmdb__cursor_get(v->e, cur, &k, &val, MDB_NEXT)) {
        const char *name = (const char *)k.mv_data;
        if (k.mv_size < 7 || k.mv_size - 5 >= sizeof v->name || name[1] != ':' ||
            OPSTATE_MEMCMP(name + k.mv_size - 5, ":meta", 5) != 0 || (name[0] != 'l' && name[0] != 's'))
            continue;
        OPSTATE_MEMCPY(v->name, name, k.mv_size - 5);
        v->name[k.mv_size - 5] = '\0';
        rc = name[0] == 'l' ? opstate_lmdb__verify_log(v) : opstate_lmdb__verify_store(v);
        if (rc != 0) break;
        if (name[0] == 'l') v->out->logs++;
        else v->out->stores++;
    }
    mdb_cursor_close(cur);
    return rc == MDB_NOTFOUND ? 0 : rc;
}

OPSTATE_API opstate_result opstate_lmdb_verify(opstate_lmdb *env, opstate_lmdb_verify_report *out, opstate_error *err)
{
    opstate_lmdb__verify v;
    opstate_result why = OPSTATE_OK, r;
    OPSTATE_MEMSET(&v, 0, sizeof v);
    OPSTATE_MEMSET(out, 0, sizeof *out);
    v.e = env;
    v.out = out;
    r = opstate_lmdb__read_txn(env, opstate_lmdb__verify_txn, &v, &why, err);
    if (r != OPSTATE_OK && err) err->offset = (size_t)v.bad_key;
    if (r != OPSTATE_OK && !out->where[0]) snprintf(out->where, sizeof out->where, "%s", v.name);
    return r;
}

/* >>export --------------------------------------------------------------- */

#define OPSTATE_LMDB__MAX_STORES 256

/* One store's position as the manifest records it. */
typedef struct opstate_lmdb__pos {
    char name[65];
    opstate_position pos;
} opstate_lmdb__pos;

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__errno(opstate_error *err, const char *field)
{
    return opstate_lmdb__fail(err, errno, field);
}

/* fsync of a file or directory by path. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__fsync_path(const char *path, opstate_error *err)
{
    int fd = open(path, O_RDONLY), rc;
    if (fd < 0) return opstate_lmdb__errno(err, path);
    rc = fsync(fd);
    close(fd);
    return rc == 0 ? OPSTATE_OK : opstate_lmdb__errno(err, path);
}

/* Size and CRC32C of a file. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__file_sum(const char *path, uint64_t *size, uint32_t *crc,
                                                            opstate_error *err)
{
    uint8_t buf[16384];
    FILE *f = fopen(path, "rb");
    size_t n;
    if (!f) return errno == ENOENT ? opstate_error_set(err, OPSTATE_NOT_FOUND, path, ENOENT) : opstate_lmdb__errno(err, path);
    *size = 0;
    *crc = 0;
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) {
        *crc = opstate_crc32c(*crc, buf, n);
        *size += n;
    }
    n = (size_t)ferror(f);
    fclose(f);
    return n ? opstate_error_set(err, OPSTATE_IO, path, EIO) : OPSTATE_OK;
}

/* Creates dir (0700) or accepts an existing empty one. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__empty_dir(const char *dir, opstate_error *err)
{
    DIR *d;
    struct dirent *ent;
    bool empty = true;
    if (mkdir(dir, 0700) == 0) return OPSTATE_OK;
    if (errno != EEXIST || !(d = opendir(dir))) return opstate_lmdb__errno(err, dir);
    while ((ent = readdir(d)) != NULL)
        if (strcmp(ent->d_name, ".") != 0 && strcmp(ent->d_name, "..") != 0) empty = false;
    closedir(d);
    return empty ? OPSTATE_OK : opstate_error_set(err, OPSTATE_INVALID_ARGUMENT, "directory is not empty", EEXIST);
}

/* Reads the position of every store in the environment at `dir`, opened
   read-only without a lock file (an export is nobody's live database). */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__positions(const char *dir, opstate_lmdb__pos *out, size_t *count,
                                                             opstate_error *err)
{
    MDB_env *env;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    MDB_dbi main_dbi, meta_dbi;
    MDB_val k, v, mk = opstate_lmdb__val("meta", 4), mv;
    size_t n = 0;
    char data[4096];
    opstate_result r;
    int rc;
    opstate_lmdb__join(data, sizeof data, dir, "data.mdb");
    if ((r = opstate_lmdb__check_file(data, err)) != OPSTATE_OK) return r; /* before it is mapped */
    rc = mdb_env_create(&env);
    if (rc == 0 && (rc = mdb_env_set_maxdbs(env, 1024)) == 0 &&
        (rc = mdb_env_open(env, dir, MDB_RDONLY | MDB_NOLOCK | MDB_NOTLS, 0600)) == 0 &&
        (rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &txn)) == 0 && (rc = mdb_dbi_open(txn, NULL, 0, &main_dbi)) == 0)
        rc = mdb_cursor_open(txn, main_dbi, &cur);
    for (rc = rc ? rc : mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        char name[96];
        opstate_lmdb__meta m;
        if (k.mv_size < 8 || k.mv_size >= sizeof name || OPSTATE_MEMCMP(k.mv_data, "s:", 2) != 0 ||
            OPSTATE_MEMCMP((const char *)k.mv_data + k.mv_size - 5, ":meta", 5) != 0)
            continue;
        OPSTATE_MEMCPY(name, k.mv_data, k.mv_size);
        name[k.mv_size] = '\0';
        if (n == OPSTATE_LMDB__MAX_STORES || mdb_dbi_open(txn, name, 0, &meta_dbi) != 0 ||
            mdb_get(txn, meta_dbi, &mk, &mv) != 0)
            continue; /* an empty store */
        if (opstate_lmdb__meta_decode(opstate_lmdb__bytes(&mv), &m, NULL) != OPSTATE_OK) {
            rc = MDB_CORRUPTED;
            break;
        }
        OPSTATE_MEMCPY(out[n].name, name + 2, k.mv_size - 7);
        out[n].name[k.mv_size - 7] = '\0';
        out[n++].pos = m.snap.position;
    }
    if (cur) mdb_cursor_close(cur);
    if (txn) mdb_txn_abort(txn);
    mdb_env_close(env);
    *count = n;
    return rc == MDB_NOTFOUND ? OPSTATE_OK : opstate_lmdb__fail(err, rc, "export environment");
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__write_manifest(const char *dir, uint64_t size, uint32_t crc,
                                                                  const opstate_lmdb__pos *pos, size_t n,
                                                                  opstate_error *err)
{
    char tmp[4096], final_path[4096];
    FILE *f;
    size_t i;
    int bad;
    opstate_lmdb__join(tmp, sizeof tmp, dir, "MANIFEST.tmp");
    opstate_lmdb__join(final_path, sizeof final_path, dir, "MANIFEST");
    if (!(f = fopen(tmp, "w")) || chmod(tmp, 0600) != 0) {
        if (f) fclose(f);
        return opstate_lmdb__errno(err, "MANIFEST");
    }
    fprintf(f, "opstate-lmdb-export %d\nfile data.mdb %llu %08lx\n", OPSTATE_LMDB_MANIFEST_VERSION,
            (unsigned long long)size, (unsigned long)crc);
    for (i = 0; i < n; i++)
        fprintf(f, "store %s %llu %lld %llu\n", pos[i].name, (unsigned long long)pos[i].pos.seq,
                (long long)pos[i].pos.time, (unsigned long long)pos[i].pos.epoch);
    fprintf(f, "end\n");
    bad = fflush(f) != 0 || fsync(fileno(f)) != 0;
    bad |= fclose(f) != 0;
    if (bad || rename(tmp, final_path) != 0) return opstate_lmdb__errno(err, "MANIFEST");
    return opstate_lmdb__fsync_path(dir, err);
}

OPSTATE_API opstate_result opstate_lmdb_export(opstate_lmdb *e, const char *dir, opstate_error *err)
{
    opstate_lmdb__pos *pos;
    char data[4096];
    uint64_t size;
    uint32_t crc;
    size_t n;
    int rc;
    opstate_result r = opstate_lmdb__empty_dir(dir, err);
    if (r != OPSTATE_OK) return r;
    if ((rc = mdb_env_copy2(e->env, dir, MDB_CP_COMPACT)) != 0) return opstate_lmdb__fail(err, rc, "mdb_env_copy2");
    if (!(pos = (opstate_lmdb__pos *)opstate_alloc(&e->cfg.allocator, OPSTATE_LMDB__MAX_STORES * sizeof *pos)))
        return opstate_error_set(err, OPSTATE_NO_MEMORY, "export", 0);
    opstate_lmdb__join(data, sizeof data, dir, "data.mdb");
    r = chmod(data, 0600) == 0 ? opstate_lmdb__fsync_path(data, err) : opstate_lmdb__errno(err, "data.mdb");
    if (r == OPSTATE_OK) r = opstate_lmdb__file_sum(data, &size, &crc, err);
    if (r == OPSTATE_OK) r = opstate_lmdb__positions(dir, pos, &n, err);
    if (r == OPSTATE_OK) r = opstate_lmdb__write_manifest(dir, size, crc, pos, n, err);
    opstate_free(&e->cfg.allocator, pos);
    return r;
}

/* What a manifest says. */
typedef struct opstate_lmdb__manifest {
    uint64_t size;
    unsigned long crc;
    opstate_lmdb__pos *pos;
    size_t n;
} opstate_lmdb__manifest;

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__parse_line(const char *line, opstate_lmdb__manifest *m, bool *ended)
{
    unsigned long long a, c;
    long long b;
    char name[80];
    int version;
    if (sscanf(line, "opstate-lmdb-export %d", &version) == 1)
        return version == OPSTATE_LMDB_MANIFEST_VERSION ? OPSTATE_OK : OPSTATE_UNKNOWN_VERSION;
    if (sscanf(line, "file data.mdb %llu %lx", &a, &m->crc) == 2) {
        m->size = a;
        return OPSTATE_OK;
    }
    if (sscanf(line, "store %64s %llu %lld %llu", name, &a, &b, &c) == 4 && m->n < OPSTATE_LMDB__MAX_STORES) {
        OPSTATE_MEMCPY(m->pos[m->n].name, name, strlen(name) + 1);
        m->pos[m->n].pos.seq = a;
        m->pos[m->n].pos.time = b;
        m->pos[m->n++].pos.epoch = c;
        return OPSTATE_OK;
    }
    *ended = strcmp(line, "end\n") == 0;
    return *ended ? OPSTATE_OK : OPSTATE_MALFORMED;
}

OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__read_manifest(const char *dir, opstate_lmdb__manifest *m, opstate_error *err)
{
    char path[4096], line[256];
    bool ended = false, first = true;
    opstate_result r = OPSTATE_OK;
    FILE *f;
    opstate_lmdb__join(path, sizeof path, dir, "MANIFEST");
    if (!(f = fopen(path, "r")))
        return errno == ENOENT ? opstate_error_set(err, OPSTATE_NOT_FOUND, "MANIFEST", ENOENT) : opstate_lmdb__errno(err, "MANIFEST");
    m->n = 0;
    m->size = 0;
    m->crc = 0;
    while (r == OPSTATE_OK && !ended && fgets(line, sizeof line, f)) {
        if (first && strncmp(line, "opstate-lmdb-export ", 20) != 0) r = OPSTATE_MALFORMED;
        first = false;
        if (r == OPSTATE_OK) r = opstate_lmdb__parse_line(line, m, &ended);
    }
    if (r == OPSTATE_OK && (!ended || m->size == 0 || fgets(line, sizeof line, f))) r = OPSTATE_MALFORMED;
    fclose(f);
    return r == OPSTATE_OK ? OPSTATE_OK : opstate_error_set(err, r, "MANIFEST", 0);
}

/* Only MANIFEST and data.mdb may be in an export. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__only_known_files(const char *dir, opstate_error *err)
{
    DIR *d = opendir(dir);
    struct dirent *ent;
    opstate_result r = OPSTATE_OK;
    if (!d) return opstate_lmdb__errno(err, dir);
    while (r == OPSTATE_OK && (ent = readdir(d)) != NULL)
        if (strcmp(ent->d_name, ".") && strcmp(ent->d_name, "..") && strcmp(ent->d_name, "MANIFEST") &&
            strcmp(ent->d_name, "data.mdb"))
            r = opstate_error_set(err, OPSTATE_MALFORMED, "extra file in export", 0);
    closedir(d);
    return r;
}

/* The copy's store positions must be exactly the manifest's. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__match_positions(const char *dir, const opstate_lmdb__manifest *m,
                                                                   opstate_lmdb__pos *found, opstate_error *err)
{
    size_t n, i, j;
    opstate_result r = opstate_lmdb__positions(dir, found, &n, err);
    if (r != OPSTATE_OK) return r;
    if (n != m->n) return opstate_error_set(err, OPSTATE_CONFLICT, "stores differ from the manifest", 0);
    for (i = 0; i < n; i++) {
        for (j = 0; j < m->n && strcmp(found[i].name, m->pos[j].name) != 0; j++) continue;
        if (j == m->n || found[i].pos.seq != m->pos[j].pos.seq || found[i].pos.time != m->pos[j].pos.time ||
            found[i].pos.epoch != m->pos[j].pos.epoch)
            return opstate_error_set(err, OPSTATE_CONFLICT, "store position differs from the manifest", 0);
    }
    return OPSTATE_OK;
}

/* Copies a file with mode 0600 and fsyncs it. */
OPSTATE_LMDB__PRIVATE opstate_result opstate_lmdb__copy_file(const char *from, const char *to, opstate_error *err)
{
    uint8_t buf[16384];
    int in = open(from, O_RDONLY), out;
    ssize_t n = 0;
    opstate_result r = OPSTATE_OK;
    if (in < 0) return opstate_lmdb__errno(err, from);
    if ((out = open(to, O_WRONLY | O_CREAT | O_EXCL, 0600)) < 0) {
        close(in);
        return opstate_lmdb__errno(err, to);
    }
    while (r == OPSTATE_OK && (n = read(in, buf, sizeof buf)) > 0)
        if (write(out, buf, (size_t)n) != n) r = opstate_lmdb__errno(err, to);
    if (r == OPSTATE_OK && (n < 0 || fsync(out) != 0)) r = opstate_lmdb__errno(err, to);
    close(in);
    close(out);
    return r;
}

OPSTATE_API opstate_result opstate_lmdb_import(const char *dir, const char *dest, opstate_error *err)
{
    opstate_lmdb__manifest m;
    opstate_lmdb__pos *found;
    opstate_allocator none;
    char data[4096], target[4096];
    uint64_t size;
    uint32_t crc;
    opstate_result r;
    OPSTATE_MEMSET(&none, 0, sizeof none);
    m.pos = (opstate_lmdb__pos *)opstate_alloc(&none, 2 * OPSTATE_LMDB__MAX_STORES * sizeof *m.pos);
    if (!m.pos) return opstate_error_set(err, OPSTATE_NO_MEMORY, "import", 0);
    found = m.pos + OPSTATE_LMDB__MAX_STORES;
    opstate_lmdb__join(data, sizeof data, dir, "data.mdb");
    opstate_lmdb__join(target, sizeof target, dest, "data.mdb");
    r = opstate_lmdb__read_manifest(dir, &m, err);
    if (r == OPSTATE_OK) r = opstate_lmdb__only_known_files(dir, err);
    if (r == OPSTATE_OK) r = opstate_lmdb__file_sum(data, &size, &crc, err);
    if (r == OPSTATE_OK && (size != m.size || crc != m.crc))
        r = opstate_error_set(err, OPSTATE_CORRUPT, "data.mdb does not match the manifest", 0);
    if (r == OPSTATE_OK) r = opstate_lmdb__match_positions(dir, &m, found, err);
    if (r == OPSTATE_OK) r = opstate_lmdb__empty_dir(dest, err);
    if (r == OPSTATE_OK) r = opstate_lmdb__copy_file(data, target, err);
    if (r == OPSTATE_OK) r = opstate_lmdb__fsync_path(dest, err);
    opstate_free(&none, m.pos);
    return r;
}

#endif /* OPSTATE_LMDB_IMPLEMENTATION */

/*
------------------------------------------------------------------------------
MIT License. Copyright (c) 2026 the opstate authors. The full text is at the
end of opstate.h and in LICENSE.
------------------------------------------------------------------------------
*/
