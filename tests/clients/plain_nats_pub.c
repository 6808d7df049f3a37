/* plain_nats_pub.c — publishes to JetStream with plain nats.c and nothing
   of opstate: what a service in any language would write. The CLI tests
   use it to show that opstate consumes such a stream.

   cc -std=c99 -D_POSIX_C_SOURCE=200809L tests/clients/plain_nats_pub.c -lnats -o plain_nats_pub

   Usage: plain_nats_pub URL SUBJECT PAYLOAD HEADER [SUBJECT PAYLOAD HEADER]...
   HEADER is "Name: value", or "-" for none. Each message is published and
   acknowledged in turn; prints the stream sequence of each, one per line.
   Exit 0 when every one was stored, 1 otherwise. */
#include <nats/nats.h>
#include <stdio.h>
#include <string.h>

/* Publishes one message; prints its sequence. */
static natsStatus publish_one(jsCtx *js, const char *subject, const char *payload, const char *header)
{
    natsMsg *m = NULL;
    jsPubAck *pa = NULL;
    char name[128];
    const char *colon = strchr(header, ':');
    natsStatus s = natsMsg_Create(&m, subject, NULL, payload, (int)strlen(payload));
    if (s == NATS_OK && strcmp(header, "-") != 0) {
        size_t n = colon ? (size_t)(colon - header) : 0;
        if (!colon || n == 0 || n >= sizeof name) {
            fprintf(stderr, "plain_nats_pub: header %s: expected \"Name: value\" or -\n", header);
            natsMsg_Destroy(m);
            return NATS_INVALID_ARG;
        }
        memcpy(name, header, n);
        name[n] = '\0';
        s = natsMsgHeader_Set(m, name, colon[1] == ' ' ? colon + 2 : colon + 1);
    }
    if (s == NATS_OK) s = js_PublishMsg(&pa, js, m, NULL, NULL);
    if (s == NATS_OK) printf("%llu\n", (unsigned long long)pa->Sequence);
    jsPubAck_Destroy(pa);
    natsMsg_Destroy(m);
    return s;
}

int main(int argc, char **argv)
{
    natsConnection *nc = NULL;
    jsCtx *js = NULL;
    natsStatus s;
    int i;
    if (argc < 5 || (argc - 2) % 3 != 0) {
        fprintf(stderr, "usage: plain_nats_pub URL SUBJECT PAYLOAD HEADER [SUBJECT PAYLOAD HEADER]...\n");
        return 2;
    }
    s = natsConnection_ConnectTo(&nc, argv[1]);
    if (s == NATS_OK) s = natsConnection_JetStream(&js, nc, NULL);
    for (i = 2; s == NATS_OK && i < argc; i += 3) s = publish_one(js, argv[i], argv[i + 1], argv[i + 2]);
    if (s != NATS_OK) fprintf(stderr, "plain_nats_pub: %s\n", natsStatus_GetText(s));
    jsCtx_Destroy(js);
    natsConnection_Destroy(nc);
    nats_Close();
    return s == NATS_OK ? 0 : 1;
}
