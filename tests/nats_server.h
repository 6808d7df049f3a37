/* nats_server.h — starts a real nats-server (JetStream on) for a test:
   127.0.0.1 only, a free port, a temp store dir; stopped by PID, never by
   name. Needs POSIX (fork/exec, sockets).

       nats_server srv;
       if (nats_server_start(&srv) != 0) ...   srv.url is "nats://127.0.0.1:PORT"
       nats_server_kill(&srv, SIGKILL); nats_server_restart(&srv);   same port and store
       nats_server_stop(&srv);                 SIGTERM, wait, remove the store */
#ifndef NATS_SERVER_H
#define NATS_SERVER_H

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#if defined(__GNUC__) || defined(__clang__)
#define NATS_SERVER_FN static __attribute__((unused))
#else
#define NATS_SERVER_FN static
#endif

typedef struct nats_server {
    pid_t pid;
    int port;
    char dir[64];
    char url[64];
    const char *user, *pass; /* set before nats_server_start: the server requires them */
    const char *tls_cert, *tls_key; /* set before nats_server_start: TLS required */
    const char *tls_ca;             /* ... and client certificates signed by this CA */
} nats_server;

/* A port the kernel says is free right now. */
NATS_SERVER_FN int nats_server_free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0 && getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0) close(fd);
    return port;
}

NATS_SERVER_FN int nats_server_accepts(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), ok;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    ok = fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) close(fd);
    return ok;
}

NATS_SERVER_FN void nats_server_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    nanosleep(&ts, NULL);
}

/* The server's command line for srv (argv has room for 20). */
NATS_SERVER_FN void nats_server_argv(const nats_server *srv, const char *port, const char **argv)
{
    int n = 0;
    const char *base[] = {"nats-server", "-js", "-a", "127.0.0.1", "-p", port, "-sd", srv->dir};
    for (; n < 8; n++) argv[n] = base[n];
    if (srv->user) {
        argv[n++] = "--user";
        argv[n++] = srv->user;
        argv[n++] = "--pass";
        argv[n++] = srv->pass;
    }
    if (srv->tls_cert) {
        argv[n++] = "--tls";
        argv[n++] = "--tlscert";
        argv[n++] = srv->tls_cert;
        argv[n++] = "--tlskey";
        argv[n++] = srv->tls_key;
    }
    if (srv->tls_ca) {
        argv[n++] = "--tlsverify";
        argv[n++] = "--tlscacert";
        argv[n++] = srv->tls_ca;
    }
    argv[n] = NULL;
}

/* (Re)starts the server process on srv->port and srv->dir. */
NATS_SERVER_FN int nats_server_spawn(nats_server *srv)
{
    char port[16];
    const char *argv[20];
    int i;
    snprintf(port, sizeof port, "%d", srv->port);
    nats_server_argv(srv, port, argv);
    fflush(NULL); /* or the child would write our buffered output again */
    srv->pid = fork();
    if (srv->pid < 0) return -1;
    if (srv->pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* a crashed test program takes its server along */
        freopen("/dev/null", "w", stdout);
        freopen("/dev/null", "w", stderr);
        execvp(argv[0], (char *const *)(void *)argv);
        _exit(127);
    }
    for (i = 0; i < 500; i++) { /* up to 5 s */
        if (nats_server_accepts(srv->port)) return 0;
        nats_server_sleep_ms(10);
    }
    return -1;
}

NATS_SERVER_FN int nats_server_start(nats_server *srv)
{
    nats_server asked = *srv; /* the fields a caller sets */
    memset(srv, 0, sizeof *srv);
    srv->user = asked.user;
    srv->pass = asked.pass;
    srv->tls_cert = asked.tls_cert;
    srv->tls_key = asked.tls_key;
    srv->tls_ca = asked.tls_ca;
    snprintf(srv->dir, sizeof srv->dir, "/tmp/opstate-nats-XXXXXX");
    if (!mkdtemp(srv->dir) || (srv->port = nats_server_free_port()) < 0) return -1;
    snprintf(srv->url, sizeof srv->url, "nats://127.0.0.1:%d", srv->port);
    return nats_server_spawn(srv);
}

/* Kills the server by PID with `sig` and reaps it. */
NATS_SERVER_FN void nats_server_kill(nats_server *srv, int sig)
{
    if (srv->pid > 0) {
        kill(srv->pid, sig);
        waitpid(srv->pid, NULL, 0);
    }
    srv->pid = 0;
}

NATS_SERVER_FN int nats_server_restart(nats_server *srv) { return nats_server_spawn(srv); }

NATS_SERVER_FN void nats_server_stop(nats_server *srv)
{
    char cmd[128];
    nats_server_kill(srv, SIGTERM);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", srv->dir);
    if (system(cmd) != 0) fprintf(stderr, "nats_server: could not remove %s\n", srv->dir);
}

#endif /* NATS_SERVER_H */
