/* cc -std=c99 -O2 -Wall -Wextra -Wpedantic -Werror examples/firmware_nomalloc.c -o firmware_nomalloc

   Freestanding (no libc at all; the library part and this file build as
   they would for a microcontroller, output goes to a UART stand-in):

   cc -std=c99 -O2 -ffreestanding -DOPSTATE_NO_STDLIB -Wall -Wextra -Wpedantic -Werror -c examples/firmware_nomalloc.c -o firmware_nomalloc.o

   firmware_nomalloc.c — opstate.h on a device: OPSTATE_NO_MALLOC, static
   buffers only, no heap anywhere (run it under valgrind: 0 allocs).

   A valve controller keeps the last state of its valves and syncs with a
   gateway that relays events from the plant's log. It uses only the
   caller-buffer layer of opstate.h:
     1. ids and subjects for an event it emits;
     2. the codec: an event encoded into a frame, "sent over the radio",
        decoded zero-copy on the other side; a frame with one flipped bit
        is refused with CORRUPT and its byte offset;
     3. the restore decision and the resume check for the position it keeps
        in flash, against what the gateway reports about the stream;
     4. the dedup window over a static buffer: a redelivered event is
        skipped; the window is saved to "flash" and loaded back;
     5. the high-water mark under out-of-order acks: the position saved to
        flash only ever covers events that were all applied. */
#define OPSTATE_NO_MALLOC
#define OPSTATE_HWM_CAPACITY 16 /* events in flight; the default 256 costs 4 KiB of RAM */
#define OPSTATE_IMPLEMENTATION
#include "../opstate.h"

/* --- output: a UART ------------------------------------------------------ */

#ifdef OPSTATE_NO_STDLIB
/* On the board this is the UART driver; here the bytes land in RAM. */
static char uart_ram[4096];
static size_t uart_used;
static void uart_write(const char *s, size_t n)
{
    while (n-- && uart_used < sizeof uart_ram) uart_ram[uart_used++] = *s++;
}
#else
#include <stdio.h>
static void uart_write(const char *s, size_t n)
{
    fwrite(s, 1, n, stdout);
}
#endif

static size_t cstr_len(const char *s)
{
    size_t n = 0;
    while (s[n]) n++;
    return n;
}
static void put_str(const char *s)
{
    uart_write(s, cstr_len(s));
}
static void put_mem(const void *p, size_t n)
{
    uart_write((const char *)p, n);
}
static void put_u64(uint64_t v)
{
    char buf[20];
    size_t i = sizeof buf;
    do {
        buf[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    uart_write(buf + i, sizeof buf - i);
}
static void put_i64(int64_t v)
{
    if (v < 0) {
        put_str("-");
        put_u64(0 - (uint64_t)v);
    } else {
        put_u64((uint64_t)v);
    }
}
static void put_id(const opstate_id *id)
{
    char text[OPSTATE_ID_TEXT_LEN];
    opstate_id_to_text(id, text);
    put_mem(text, sizeof text);
}
static opstate_bytes bytes_of(const char *s)
{
    opstate_bytes b;
    b.ptr = (const uint8_t *)s;
    b.len = cstr_len(s);
    return b;
}

/* --- static memory ------------------------------------------------------- */

#define DEDUP_CAPACITY 32u
#define DEDUP_TABLE 64u /* smallest power of two >= 2 x capacity */
static uint32_t dedup_ram[(DEDUP_TABLE * 4u + DEDUP_CAPACITY * 16u) / 4u];
static uint32_t dedup_ram2[(DEDUP_TABLE * 4u + DEDUP_CAPACITY * 16u) / 4u];
static uint8_t flash_dedup[6 + 16 * DEDUP_CAPACITY + 4]; /* header, ids, CRC */
static uint8_t radio_frame[256];
static uint8_t radio_frame_damaged[256];
static char subject[128];
static char json[512];
static opstate_hwm hwm; /* about 300 bytes with OPSTATE_HWM_CAPACITY 16 */

/* Valve events: scope "line3", kind "valve", key = valve tag, data = a
   small JSON object. rtc_ms is the device clock, rng the hardware RNG. */
static opstate_result make_event(opstate_event *ev, const char *tag, const char *state, int64_t rtc_ms,
                                 const uint8_t rng[8])
{
    uint8_t *z = (uint8_t *)ev;
    size_t i;
    for (i = 0; i < sizeof *ev; i++) z[i] = 0;
    ev->scope = bytes_of("line3");
    ev->kind = bytes_of("valve");
    ev->key = bytes_of(tag);
    ev->op = OPSTATE_OP_PUT;
    ev->data = bytes_of(state);
    ev->has_time = true;
    ev->time = rtc_ms * 1000000;
    return opstate_id_time_ordered(ev->time, rng, &ev->id);
}

static int step_ids_subjects_codec(void)
{
    static const uint8_t rng[8] = {0x5a, 0x17, 0xc3, 0x08, 0x9e, 0x44, 0x21, 0x7b};
    opstate_event ev, rx;
    opstate_error err;
    size_t need = 0, n = 0, i;
    opstate_result r;

    put_str("1. emit an event: id and subject\n");
    if (make_event(&ev, "V-12/A", "{\"open\":true}", 1767225600123, rng) != OPSTATE_OK) return 1;
    put_str("   id       ");
    put_id(&ev.id);
    put_str("\n");
    r = opstate_subject_build("plant", 5, ev.scope, ev.kind, ev.key, subject, sizeof subject, &n, &err);
    if (r != OPSTATE_OK) return 1;
    put_str("   subject  ");
    put_mem(subject, n);
    put_str("   (the key's '-' stays, '/' is escaped)\n");

    put_str("2. codec: encode into a radio frame, decode on the gateway side\n");
    if (opstate_event_encode(&ev, NULL, 0, &need, NULL) != OPSTATE_OK || need > sizeof radio_frame) return 1;
    if (opstate_event_encode(&ev, radio_frame, sizeof radio_frame, &n, NULL) != OPSTATE_OK) return 1;
    put_str("   frame    ");
    put_u64(n);
    put_str(" bytes (size asked first with a NULL buffer: ");
    put_u64(need);
    put_str(")\n");
    r = opstate_event_decode(radio_frame, n, &rx, &err);
    if (r != OPSTATE_OK) return 1;
    put_str("   decoded  key=");
    put_mem(rx.key.ptr, rx.key.len);
    put_str(" data=");
    put_mem(rx.data.ptr, rx.data.len);
    put_str(" time=");
    put_i64(rx.time);
    put_str(rx.key.ptr >= radio_frame && rx.key.ptr < radio_frame + n ? " (zero-copy: points into the frame)\n"
                                                                        : "\n");
    if (opstate_event_to_json(&rx, json, sizeof json, &n) == OPSTATE_OK) {
        put_str("   as JSON  ");
        put_mem(json, n);
        put_str("\n");
    }
    for (i = 0; i < sizeof radio_frame; i++) radio_frame_damaged[i] = radio_frame[i];
    radio_frame_damaged[50] ^= 0x04; /* one bit flipped in transit */
    r = opstate_event_decode(radio_frame_damaged, need, &rx, &err);
    put_str("   a frame with one flipped bit: ");
    put_str(opstate_result_str(r));
    put_str(" (");
    put_str(err.field ? err.field : "?");
    put_str(" at byte ");
    put_u64(err.offset);
    put_str(")\n");
    return r == OPSTATE_CORRUPT ? 0 : 1;
}

static void show_decision(const char *what, const opstate_position *stored, const opstate_stream_info *stream)
{
    opstate_start start;
    opstate_restore_decision d;
    opstate_resume res;
    start.kind = OPSTATE_START_RESUME;
    start.seq = 0;
    start.time = 0;
    put_str(what);
    if (opstate_decide_restore(OPSTATE_MODE_AUTO, start, stored, stream, &d) != OPSTATE_OK) {
        put_str("   decision failed\n");
        return;
    }
    put_str(d.restore ? "      -> RESTORE" : "      -> CLEAR");
    if (d.resync) put_str(" + RESYNC");
    put_str(" (");
    put_str(opstate_reason_name(d.reason));
    put_str("): ");
    put_str(opstate_reason_str(d.reason));
    put_str("\n");
    if (d.restore && opstate_resume_check(*stored, stream, &res) == OPSTATE_OK) {
        put_str("         resume check: read from seq ");
        put_u64(res.next_seq);
        if (res.missed) {
            put_str("; ");
            put_u64(res.missed);
            put_str(" events were evicted while the device was off");
        }
        put_str("\n");
    }
}

static int step_decision(void)
{
    opstate_position flash_pos;
    opstate_stream_info gw;
    put_str("3. boot: restore what flash holds, or start clean?\n");
    flash_pos.seq = 100;
    flash_pos.time = 1767225600000000000;
    flash_pos.epoch = 7;
    put_str("   flash holds position seq 100, epoch 7\n");
    gw.first_seq = 40;
    gw.last_seq = 130;
    gw.first_time = 0;
    gw.last_time = 0;
    gw.epoch = 7;
    gw.messages = 91;
    show_decision("   gateway: seq 40..130, epoch 7\n", &flash_pos, &gw);
    gw.first_seq = 120;
    show_decision("   gateway: seq 120..130, epoch 7 (retention passed the device)\n", &flash_pos, &gw);
    gw.first_seq = 1;
    gw.last_seq = 12;
    gw.epoch = 8;
    show_decision("   gateway: seq 1..12, epoch 8 (stream recreated)\n", &flash_pos, &gw);
    return 0;
}

static int step_dedup(void)
{
    static const uint8_t rngs[3][8] = {{1, 1, 1, 1, 1, 1, 1, 1}, {2, 2, 2, 2, 2, 2, 2, 2}, {3, 3, 3, 3, 3, 3, 3, 3}};
    static const char *const tags[3] = {"V-1", "V-2", "V-3"};
    opstate_dedup window, reloaded;
    opstate_event evs[3];
    size_t n = 0;
    int i, applied = 0;
    put_str("4. dedup window of ");
    put_u64(DEDUP_CAPACITY);
    put_str(" ids over a static buffer (");
    put_u64(opstate_dedup_storage_size(DEDUP_CAPACITY));
    put_str(" bytes)\n");
    if (opstate_dedup_storage_size(DEDUP_CAPACITY) > sizeof dedup_ram ||
        opstate_dedup_init(&window, dedup_ram, sizeof dedup_ram, DEDUP_CAPACITY) != OPSTATE_OK)
        return 1;
    for (i = 0; i < 3; i++)
        if (make_event(&evs[i], tags[i], "{\"open\":false}", 1767225601000 + i, rngs[i]) != OPSTATE_OK) return 1;
    /* The gateway delivers 1, 2, then 2 again (its ack was lost), then 3. */
    {
        static const int order[4] = {0, 1, 1, 2};
        for (i = 0; i < 4; i++) {
            const opstate_event *ev = &evs[order[i]];
            bool fresh = opstate_dedup_insert(&window, &ev->id);
            put_str("   delivery ");
            put_u64((uint64_t)i + 1);
            put_str(": ");
            put_mem(ev->key.ptr, ev->key.len);
            put_str(fresh ? " applied\n" : " already seen: skipped\n");
            applied += fresh;
        }
    }
    if (opstate_dedup_encode(&window, flash_dedup, sizeof flash_dedup, &n) != OPSTATE_OK) return 1;
    if (opstate_dedup_init(&reloaded, dedup_ram2, sizeof dedup_ram2, DEDUP_CAPACITY) != OPSTATE_OK ||
        opstate_dedup_decode(&reloaded, flash_dedup, n, NULL) != OPSTATE_OK)
        return 1;
    put_str("   window saved to flash (");
    put_u64(n);
    put_str(" bytes) and loaded after a reboot: event 2 ");
    put_str(opstate_dedup_contains(&reloaded, &evs[1].id) ? "is still known\n" : "IS FORGOTTEN\n");
    return applied == 3 && opstate_dedup_contains(&reloaded, &evs[1].id) ? 0 : 1;
}

static int step_hwm(void)
{
    static const uint64_t acks[5] = {103, 101, 105, 102, 104};
    opstate_position start;
    uint64_t seq;
    int i;
    put_str("5. high-water mark: deliver 101..105, handlers finish out of order\n");
    start.seq = 100;
    start.time = 0;
    start.epoch = 7;
    opstate_hwm_init(&hwm, start);
    for (seq = 101; seq <= 105; seq++)
        if (opstate_hwm_deliver(&hwm, seq, (int64_t)seq * 1000) != OPSTATE_OK) return 1;
    for (i = 0; i < 5; i++) {
        if (opstate_hwm_ack(&hwm, acks[i]) != OPSTATE_OK) return 1;
        put_str("   ack ");
        put_u64(acks[i]);
        put_str(" -> mark ");
        put_u64(hwm.mark.seq);
        put_str(", in flight ");
        put_u64(opstate_hwm_in_flight(&hwm));
        put_str("\n");
    }
    put_str("   flash stores only the mark: whenever the device dies, every event at or\n"
            "   below it was applied; what is above it is read again from the log\n");
    put_str("   redelivery of 104: ");
    put_str(opstate_result_str(opstate_hwm_deliver(&hwm, 104, 0)));
    put_str(" (skip it)\n");
    return hwm.mark.seq == 105 ? 0 : 1;
}

int main(void)
{
    int failed;
#ifndef OPSTATE_NO_STDLIB
    static char stdout_buf[512]; /* so that even stdio does not allocate */
    setvbuf(stdout, stdout_buf, _IOLBF, sizeof stdout_buf);
#endif
    put_str("opstate ");
    put_str(OPSTATE_VERSION_STRING);
    put_str(" on a device: OPSTATE_NO_MALLOC, static buffers only\n");
    {
        /* At boot, before any table exists: the secret the dedup window's
           hash key derives from, so a hostile sender cannot make its ids
           collide. On the board: 16 bytes of the hardware RNG. */
        static const uint8_t boot_rng[16] = {0x9c, 0x41, 0xe7, 0x0d, 0x36, 0xb2, 0x58, 0xfa,
                                             0x13, 0x6e, 0xc9, 0x27, 0x84, 0x5b, 0xd0, 0x7f};
        opstate_hash_seed(boot_rng);
    }
    failed = step_ids_subjects_codec() || step_decision() || step_dedup() || step_hwm();
    put_str(failed ? "firmware example: FAILED\n" : "done: no heap used\n");
    return failed;
}
