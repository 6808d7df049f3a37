/* nats_cluster.h — a real three-node JetStream cluster for tests: three
   nats-server processes on 127.0.0.1 (nodes n1..n3, one cluster name, each
   listing every route), free client and route ports, store dirs and logs
   in one temp dir; a node killed by PID and restarted on the same ports and
   store; stopped by PID, never by name. Needs POSIX and nats.c (-lnats).
   Builds on nats_server.h (one server): each node is a nats_server, so
   nats_server_kill works on c.node[i] too.

       nats_cluster c;
       if (nats_cluster_start(&c, 20000) != 0) ...    up, and JetStream has a meta leader
       c.urls                                          "nats://127.0.0.1:a,nats://...:b,nats://...:c"
       nats_cluster_leaders(&c, js, "S", "D1", &sl, &cl);   node index of each leader (-1: none)
       nats_cluster_kill(&c, sl, SIGKILL); nats_cluster_restart(&c, sl);
       nats_cluster_wait_healthy(&c, js, "S", "D1", 20000);  all up, replicas current
       nats_cluster_stop(&c);                          SIGTERM, wait, remove the dir

   Children get PR_SET_PDEATHSIG(SIGKILL), which fires when the *thread*
   that forked them ends: restart nodes from a thread that outlives them (or
   stop the cluster before that thread ends). Set NATS_CLUSTER_KEEP=1 in the
   environment to keep the dir (stores and n1.log..n3.log) after stop. */
#ifndef NATS_CLUSTER_H
#define NATS_CLUSTER_H

#include "nats_server.h"
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <nats/nats.h>

#define NATS_CLUSTER_FN NATS_SERVER_FN
#define NATS_CLUSTER_NODES 3

typedef struct nats_cluster {
    nats_server node[NATS_CLUSTER_NODES]; /* pid (0: not running), port, dir, url */
    int route_port[NATS_CLUSTER_NODES];
    char root[40];  /* temp dir: n1/ n2/ n3/ stores, n1.log n2.log n3.log */
    char name[32];  /* cluster name */
    char urls[256]; /* every client URL, comma-separated, for clients */
} nats_cluster;

NATS_CLUSTER_FN int64_t nats_cluster_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Node index of a server name "n1".."n3"; -1 for anything else. */
NATS_CLUSTER_FN int nats_cluster_node_of(const char *server_name)
{
    if (!server_name || server_name[0] != 'n' || server_name[1] < '1' ||
        server_name[1] > '0' + NATS_CLUSTER_NODES || server_name[2] != '\0')
        return -1;
    return server_name[1] - '1';
}

/* (Re)starts node i on its ports and store; waits (up to 10 s) until its
   client port accepts. Everything the child needs is prepared before the
   fork: the parent has other threads (nats.c), so the child only makes
   async-signal-safe calls before exec. */
NATS_CLUSTER_FN int nats_cluster_spawn(nats_cluster *c, int i)
{
    char port[16], name[8], listen[64], routes[256], log_path[96];
    const char *argv[20];
    int k, n = 0, fd;
    pid_t parent = getpid();
    snprintf(port, sizeof port, "%d", c->node[i].port);
    name[0] = 'n';
    name[1] = (char)('1' + i);
    name[2] = '\0';
    snprintf(listen, sizeof listen, "nats://127.0.0.1:%d", c->route_port[i]);
    snprintf(routes, sizeof routes, "nats-route://127.0.0.1:%d,nats-route://127.0.0.1:%d,nats-route://127.0.0.1:%d",
             c->route_port[0], c->route_port[1], c->route_port[2]);
    snprintf(log_path, sizeof log_path, "%s/n%d.log", c->root, i + 1);
    argv[n++] = "nats-server";
    argv[n++] = "-js";
    argv[n++] = "-a";
    argv[n++] = "127.0.0.1";
    argv[n++] = "-p";
    argv[n++] = port;
    argv[n++] = "-sd";
    argv[n++] = c->node[i].dir;
    argv[n++] = "--server_name";
    argv[n++] = name;
    argv[n++] = "--cluster_name";
    argv[n++] = c->name;
    argv[n++] = "--cluster";
    argv[n++] = listen;
    argv[n++] = "--routes";
    argv[n++] = routes;
    argv[n] = NULL;
    fflush(NULL); /* or the child would write our buffered output again */
    c->node[i].pid = fork();
    if (c->node[i].pid < 0) {
        c->node[i].pid = 0;
        return -1;
    }
    if (c->node[i].pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test program takes its servers along */
        if (getppid() != parent) _exit(127); /* it died before prctl */
        fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
            close(fd);
        }
        execvp(argv[0], (char *const *)(void *)argv);
        _exit(127);
    }
    for (k = 0; k < 1000; k++) { /* up to 10 s */
        if (nats_server_accepts(c->node[i].port)) return 0;
        if (waitpid(c->node[i].pid, NULL, WNOHANG) == c->node[i].pid) break; /* exited: port taken? */
        nats_server_sleep_ms(10);
    }
    nats_server_kill(&c->node[i], SIGKILL); /* reaps it; pid 0 */
    return -1;
}

/* Connects to every node's URL (reconnecting for ever, 100 ms apart) and
   makes a JetStream context whose API calls wait up to wait_ms. */
NATS_CLUSTER_FN natsStatus nats_cluster_connect(const nats_cluster *c, int64_t wait_ms, natsConnection **nc,
                                                jsCtx **js)
{
    const char *servers[NATS_CLUSTER_NODES];
    natsOptions *o = NULL;
    jsOptions jo;
    natsStatus s;
    int i;
    *nc = NULL;
    *js = NULL;
    for (i = 0; i < NATS_CLUSTER_NODES; i++) servers[i] = c->node[i].url;
    s = natsOptions_Create(&o);
    if (s == NATS_OK) s = natsOptions_SetServers(o, servers, NATS_CLUSTER_NODES);
    if (s == NATS_OK) s = natsOptions_SetMaxReconnect(o, -1);
    if (s == NATS_OK) s = natsOptions_SetReconnectWait(o, 100);
    if (s == NATS_OK) s = natsOptions_SetTimeout(o, 2000);
    if (s == NATS_OK) s = natsConnection_Connect(nc, o);
    natsOptions_Destroy(o);
    if (s == NATS_OK) s = jsOptions_Init(&jo);
    if (s == NATS_OK) {
        jo.Wait = wait_ms;
        s = natsConnection_JetStream(js, *nc, &jo);
    }
    if (s != NATS_OK) {
        natsConnection_Destroy(*nc);
        *nc = NULL;
    }
    return s;
}

/* Waits (up to timeout_ms) until JetStream can place an R3 stream: creates
   and deletes a small memory stream, retrying while the meta leader is
   being elected ("server is ready" is not "JetStream is ready"). */
NATS_CLUSTER_FN int nats_cluster_wait_ready(nats_cluster *c, int64_t timeout_ms)
{
    int64_t deadline = nats_cluster_now_ms() + timeout_ms;
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    int ok = 0;
    while (!ok && nats_cluster_now_ms() < deadline) {
        jsStreamConfig sc;
        jsStreamInfo *si = NULL;
        const char *subjects[1] = {"nats_cluster_probe.>"};
        if (!nc && nats_cluster_connect(c, 2000, &nc, &js) != NATS_OK) {
            nats_server_sleep_ms(200);
            continue;
        }
        jsStreamConfig_Init(&sc);
        sc.Name = "NATS_CLUSTER_PROBE";
        sc.Subjects = subjects;
        sc.SubjectsLen = 1;
        sc.Storage = js_MemoryStorage;
        sc.Replicas = NATS_CLUSTER_NODES;
        if (js_AddStream(&si, js, &sc, NULL, NULL) == NATS_OK) {
            jsStreamInfo_Destroy(si);
            ok = js_DeleteStream(js, "NATS_CLUSTER_PROBE", NULL, NULL) == NATS_OK;
        }
        if (!ok) nats_server_sleep_ms(200);
    }
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    return ok ? 0 : -1;
}

NATS_CLUSTER_FN void nats_cluster_stop(nats_cluster *c);

/* Starts the three nodes and waits (up to ready_timeout_ms) for JetStream.
   0 on success; -1 with everything stopped and removed otherwise. */
NATS_CLUSTER_FN int nats_cluster_start(nats_cluster *c, int64_t ready_timeout_ms)
{
    int ports[2 * NATS_CLUSTER_NODES], i, j, tries;
    memset(c, 0, sizeof *c);
    snprintf(c->root, sizeof c->root, "/tmp/opstate-cluster-XXXXXX");
    if (!mkdtemp(c->root)) return -1;
    snprintf(c->name, sizeof c->name, "C%ld", (long)getpid());
    for (i = 0; i < 2 * NATS_CLUSTER_NODES; i++) { /* six distinct free ports */
        for (tries = 0; tries < 50; tries++) {
            ports[i] = nats_server_free_port();
            for (j = 0; j < i && ports[j] != ports[i]; j++) continue;
            if (ports[i] > 0 && j == i) break;
        }
        if (tries == 50) {
            nats_cluster_stop(c);
            return -1;
        }
    }
    for (i = 0; i < NATS_CLUSTER_NODES; i++) {
        c->node[i].port = ports[i];
        c->route_port[i] = ports[NATS_CLUSTER_NODES + i];
        snprintf(c->node[i].dir, sizeof c->node[i].dir, "%s/n%d", c->root, i + 1);
        snprintf(c->node[i].url, sizeof c->node[i].url, "nats://127.0.0.1:%d", c->node[i].port);
        if (mkdir(c->node[i].dir, 0700) != 0 && errno != EEXIST) {
            nats_cluster_stop(c);
            return -1;
        }
    }
    snprintf(c->urls, sizeof c->urls, "%s,%s,%s", c->node[0].url, c->node[1].url, c->node[2].url);
    for (i = 0; i < NATS_CLUSTER_NODES; i++) {
        if (nats_cluster_spawn(c, i) != 0) {
            nats_cluster_stop(c);
            return -1;
        }
    }
    if (nats_cluster_wait_ready(c, ready_timeout_ms) != 0) {
        nats_cluster_stop(c);
        return -1;
    }
    return 0;
}

NATS_CLUSTER_FN bool nats_cluster_running(const nats_cluster *c, int i) { return c->node[i].pid > 0; }

/* Kills node i by PID with `sig` and reaps it. */
NATS_CLUSTER_FN void nats_cluster_kill(nats_cluster *c, int i, int sig) { nats_server_kill(&c->node[i], sig); }

/* Starts node i again on the same ports and store dir. */
NATS_CLUSTER_FN int nats_cluster_restart(nats_cluster *c, int i)
{
    if (c->node[i].pid > 0) return 0;
    return nats_cluster_spawn(c, i);
}

/* Node index of the stream's leader and (consumer non-NULL) of the
   consumer's leader, -1 when there is none (an election) or the name is
   unknown. Returns the first failing natsStatus (the leaders it could not
   read stay -1). */
NATS_CLUSTER_FN natsStatus nats_cluster_leaders(const nats_cluster *c, jsCtx *js, const char *stream,
                                                const char *consumer, int *stream_leader, int *consumer_leader)
{
    jsStreamInfo *si = NULL;
    jsConsumerInfo *ci = NULL;
    natsStatus s = js_GetStreamInfo(&si, js, stream, NULL, NULL), s2 = NATS_OK;
    (void)c;
    *stream_leader = -1;
    if (consumer_leader) *consumer_leader = -1;
    if (s == NATS_OK && si->Cluster) *stream_leader = nats_cluster_node_of(si->Cluster->Leader);
    jsStreamInfo_Destroy(si);
    if (consumer && consumer_leader) {
        s2 = js_GetConsumerInfo(&ci, js, stream, consumer, NULL, NULL);
        if (s2 == NATS_OK && ci->Cluster) *consumer_leader = nats_cluster_node_of(ci->Cluster->Leader);
        jsConsumerInfo_Destroy(ci);
    }
    return s != NATS_OK ? s : s2;
}

/* A leader and every other replica current and online. */
NATS_CLUSTER_FN bool nats_cluster__group_current(const jsClusterInfo *ci, int replicas)
{
    int i, current = 0;
    if (!ci || nats_cluster_node_of(ci->Leader) < 0) return false;
    for (i = 0; i < ci->ReplicasLen; i++) /* "current" lingers on a dead peer for a moment: seen lately too */
        current += ci->Replicas[i]->Current && !ci->Replicas[i]->Offline && ci->Replicas[i]->Active < (int64_t)3000000000;
    return current == replicas - 1;
}

/* true when every node runs and the stream (and the consumer, when not
   NULL) has a leader and its other replicas are current. The replica
   count is read from the stream's config. */
NATS_CLUSTER_FN bool nats_cluster_healthy(const nats_cluster *c, jsCtx *js, const char *stream, const char *consumer)
{
    jsStreamInfo *si = NULL;
    jsConsumerInfo *ci = NULL;
    int i, replicas = 1;
    bool ok = true;
    for (i = 0; i < NATS_CLUSTER_NODES; i++) ok = ok && nats_cluster_running(c, i);
    if (!ok || !stream) return ok;
    ok = js_GetStreamInfo(&si, js, stream, NULL, NULL) == NATS_OK;
    if (ok) {
        replicas = si->Config && si->Config->Replicas > 0 ? (int)si->Config->Replicas : 1;
        ok = nats_cluster__group_current(si->Cluster, replicas);
    }
    jsStreamInfo_Destroy(si);
    if (ok && consumer) {
        ok = js_GetConsumerInfo(&ci, js, stream, consumer, NULL, NULL) == NATS_OK;
        if (ok) {
            int cr = ci->Config && ci->Config->Replicas > 0 ? (int)ci->Config->Replicas : replicas;
            ok = nats_cluster__group_current(ci->Cluster, cr);
        }
        jsConsumerInfo_Destroy(ci);
    }
    return ok;
}

/* Waits (up to timeout_ms, 100 ms apart) for nats_cluster_healthy. 0 when
   healthy, -1 on timeout. */
NATS_CLUSTER_FN int nats_cluster_wait_healthy(const nats_cluster *c, jsCtx *js, const char *stream,
                                              const char *consumer, int64_t timeout_ms)
{
    int64_t deadline = nats_cluster_now_ms() + timeout_ms;
    for (;;) {
        if (nats_cluster_healthy(c, js, stream, consumer)) return 0;
        if (nats_cluster_now_ms() >= deadline) return -1;
        nats_server_sleep_ms(100);
    }
}

/* Stops every running node (SIGTERM, up to 10 s each, then SIGKILL), by
   PID, and removes the temp dir unless NATS_CLUSTER_KEEP is set. */
NATS_CLUSTER_FN void nats_cluster_stop(nats_cluster *c)
{
    char cmd[128];
    int i, k;
    for (i = 0; i < NATS_CLUSTER_NODES; i++)
        if (c->node[i].pid > 0) kill(c->node[i].pid, SIGTERM);
    for (i = 0; i < NATS_CLUSTER_NODES; i++) {
        if (c->node[i].pid <= 0) continue;
        for (k = 0; k < 1000 && waitpid(c->node[i].pid, NULL, WNOHANG) == 0; k++) nats_server_sleep_ms(10);
        if (k == 1000) nats_server_kill(&c->node[i], SIGKILL);
        c->node[i].pid = 0;
    }
    if (!c->root[0]) return;
    if (getenv("NATS_CLUSTER_KEEP")) {
        fprintf(stderr, "nats_cluster: kept %s\n", c->root);
        return;
    }
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", c->root);
    if (system(cmd) != 0) fprintf(stderr, "nats_cluster: could not remove %s\n", c->root);
}

#endif /* NATS_CLUSTER_H */
