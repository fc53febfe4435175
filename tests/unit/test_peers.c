// Unit tests of the record of recently verified peers (proxy/peers.c): note, seen, the JSON
// of /status (escaping, newest first, at most TG_PEERS_SHOWN entries across rings, entries
// reused for another peer) and a reader copying entries while a worker writes them.

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "tlsgate/peers.h"

// A fixed clock: 2023-11-14T22:13:20Z.
static const int64_t kNow = 1700000000;
#define DAY ((int64_t)86400)

// A strict parser for what tg_peers_json writes -------------------------------------------------

#define MAX_ENTRIES 64

struct jentry {
    char name[512];
    char issuer[1024];
    char not_after[32];
    char seen[32];
};

struct jarray {
    size_t num;
    struct jentry e[MAX_ENTRIES];
};

static int hexval(char c) {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// parse_string reads a JSON string at |*p| into |out| (decoded; \u escapes of one byte only).
// Returns 1 on success.
static int parse_string(const char **p, char *out, size_t out_len) {
    const char *s = *p;
    size_t n = 0;
    if (*s++ != '"')
        return 0;
    for (;;) {
        unsigned char ch = (unsigned char)*s++;
        if (ch == '\0' || ch < 0x20)
            return 0;
        if (ch == '"')
            break;
        if (ch == '\\') {
            char e = *s++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                ch = (unsigned char)e;
                break;
            case 'n':
                ch = '\n';
                break;
            case 't':
                ch = '\t';
                break;
            case 'r':
                ch = '\r';
                break;
            case 'b':
                ch = '\b';
                break;
            case 'f':
                ch = '\f';
                break;
            case 'u': {
                int v = 0;
                for (int i = 0; i < 4; i++) {
                    int h = hexval(*s++);
                    if (h < 0)
                        return 0;
                    v = v * 16 + h;
                }
                if (v == 0 || v > 0xff)
                    return 0;
                ch = (unsigned char)v;
                break;
            }
            default:
                return 0;
            }
        }
        if (n + 1 >= out_len)
            return 0;
        out[n++] = (char)ch;
    }
    out[n] = '\0';
    *p = s;
    return 1;
}

static int is_iso_time(const char *t) {
    // YYYY-MM-DDTHH:MM:SSZ
    static const char pat[] = "dddd-dd-ddTdd:dd:ddZ";
    if (strlen(t) != sizeof(pat) - 1)
        return 0;
    for (size_t i = 0; pat[i] != '\0'; i++) {
        if (pat[i] == 'd' ? (t[i] < '0' || t[i] > '9') : t[i] != pat[i])
            return 0;
    }
    return 1;
}

static int expect_lit(const char **p, const char *lit) {
    size_t k = strlen(lit);
    if (strncmp(*p, lit, k) != 0)
        return 0;
    *p += k;
    return 1;
}

// parse_json parses a whole answer into |a|. Returns 1 when it is exactly a well-formed array
// of well-formed entries.
static int parse_json(const char *s, struct jarray *a) {
    a->num = 0;
    const char *p = s;
    if (!expect_lit(&p, "["))
        return 0;
    if (expect_lit(&p, "]"))
        return *p == '\0';
    for (;;) {
        if (a->num == MAX_ENTRIES)
            return 0;
        struct jentry *e = &a->e[a->num];
        if (!expect_lit(&p, "{\"name\":") || !parse_string(&p, e->name, sizeof(e->name)) ||
            !expect_lit(&p, ",\"issuer\":") || !parse_string(&p, e->issuer, sizeof(e->issuer)) ||
            !expect_lit(&p, ",\"not_after\":") ||
            !parse_string(&p, e->not_after, sizeof(e->not_after)) ||
            !expect_lit(&p, ",\"seen\":") || !parse_string(&p, e->seen, sizeof(e->seen)) ||
            !expect_lit(&p, "}")) {
            return 0;
        }
        if (!is_iso_time(e->not_after) || !is_iso_time(e->seen))
            return 0;
        a->num++;
        if (expect_lit(&p, "]"))
            return *p == '\0';
        if (!expect_lit(&p, ","))
            return 0;
    }
}

static void iso(int64_t t, char *out, size_t out_len) {
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(out, out_len, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

// render calls tg_peers_json into a large buffer and parses the answer, failing the test
// unless it is well formed.
static void render(const struct tg_peers *p, struct jarray *a) {
    static char buf[65536];
    memset(buf, 'x', sizeof(buf));
    size_t n = tg_peers_json(p, buf, sizeof(buf));
    assert_int_equal(n, strlen(buf));
    if (!parse_json(buf, a))
        fail_msg("malformed peers JSON: %s", buf);
}

static void assert_entry(const struct jentry *e, const char *name, const char *issuer,
                         int64_t not_after, int64_t seen) {
    char t[32];
    assert_string_equal(e->name, name);
    assert_string_equal(e->issuer, issuer);
    iso(not_after, t, sizeof(t));
    assert_string_equal(e->not_after, t);
    iso(seen, t, sizeof(t));
    assert_string_equal(e->seen, t);
}

// Tests ------------------------------------------------------------------------------------------

static void test_empty(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(3);
    assert_non_null(p);
    assert_int_equal(p->num_rings, 3);
    char buf[64];
    assert_int_equal(tg_peers_json(p, buf, sizeof(buf)), 2);
    assert_string_equal(buf, "[]");
    // No room at all: nothing written, nothing returned.
    buf[0] = 'z';
    assert_int_equal(tg_peers_json(p, buf, 0), 0);
    assert_int_equal(buf[0], 'z');
    tg_peers_free(p);
    // No rings at all.
    p = tg_peers_new(0);
    assert_non_null(p);
    assert_int_equal(tg_peers_json(p, buf, sizeof(buf)), 2);
    assert_string_equal(buf, "[]");
    tg_peers_free(p);
    tg_peers_free(NULL);
}

static void test_note_one(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(1);
    assert_non_null(p);
    tg_peer_ring_note(tg_peers_ring(p, 0), "sip.a.example", "/CN=Root", kNow + DAY, kNow);
    char buf[512];
    size_t n = tg_peers_json(p, buf, sizeof(buf));
    const char *want = "[{\"name\":\"sip.a.example\",\"issuer\":\"/CN=Root\","
                       "\"not_after\":\"2023-11-15T22:13:20Z\","
                       "\"seen\":\"2023-11-14T22:13:20Z\"}]";
    assert_string_equal(buf, want);
    assert_int_equal(n, strlen(want));
    // Reading is not consuming: the same answer again.
    assert_int_equal(tg_peers_json(p, buf, sizeof(buf)), n);
    assert_string_equal(buf, want);
    tg_peers_free(p);
}

static void test_null_strings(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(1);
    assert_non_null(p);
    tg_peer_ring_note(tg_peers_ring(p, 0), NULL, NULL, kNow, kNow);
    struct jarray a;
    render(p, &a);
    assert_int_equal(a.num, 1);
    assert_entry(&a.e[0], "", "", kNow, kNow);
    tg_peers_free(p);
}

static void test_newest_first_across_rings(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(3);
    assert_non_null(p);
    tg_peer_ring_note(tg_peers_ring(p, 0), "a", "ia", kNow + 1 * DAY, kNow + 100);
    tg_peer_ring_note(tg_peers_ring(p, 1), "b", "ib", kNow + 2 * DAY, kNow + 200);
    tg_peer_ring_note(tg_peers_ring(p, 0), "c", "ic", kNow + 3 * DAY, kNow + 300);
    tg_peer_ring_note(tg_peers_ring(p, 2), "d", "id", kNow + 4 * DAY, kNow + 400);
    tg_peer_ring_note(tg_peers_ring(p, 1), "e", "ie", kNow + 5 * DAY, kNow + 50);
    struct jarray a;
    render(p, &a);
    assert_int_equal(a.num, 5);
    assert_entry(&a.e[0], "d", "id", kNow + 4 * DAY, kNow + 400);
    assert_entry(&a.e[1], "c", "ic", kNow + 3 * DAY, kNow + 300);
    assert_entry(&a.e[2], "b", "ib", kNow + 2 * DAY, kNow + 200);
    assert_entry(&a.e[3], "a", "ia", kNow + 1 * DAY, kNow + 100);
    assert_entry(&a.e[4], "e", "ie", kNow + 5 * DAY, kNow + 50);
    tg_peers_free(p);
}

static void test_seen_moves_entry(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(2);
    assert_non_null(p);
    struct tg_peer_ring *r = tg_peers_ring(p, 0);
    uint32_t ha = tg_peer_ring_note(r, "a", "ia", kNow + DAY, kNow + 10);
    uint32_t hb = tg_peer_ring_note(tg_peers_ring(p, 1), "b", "ib", kNow + DAY, kNow + 20);
    assert_int_not_equal(ha, 0);
    struct jarray a;
    render(p, &a);
    assert_int_equal(a.num, 2);
    assert_string_equal(a.e[0].name, "b");
    // a is seen again: it moves to the front, in place (same handle, no new entry).
    uint32_t h = ha;
    tg_peer_ring_seen(r, &h, "a", "ia", kNow + DAY, kNow + 30);
    assert_int_equal(h, ha);
    render(p, &a);
    assert_int_equal(a.num, 2);
    assert_entry(&a.e[0], "a", "ia", kNow + DAY, kNow + 30);
    assert_entry(&a.e[1], "b", "ib", kNow + DAY, kNow + 20);
    // Seen again and again: still one entry.
    for (int i = 0; i < 40; i++)
        tg_peer_ring_seen(r, &h, "a", "ia", kNow + DAY, kNow + 31 + i);
    assert_int_equal(h, ha);
    render(p, &a);
    assert_int_equal(a.num, 2);
    assert_entry(&a.e[0], "a", "ia", kNow + DAY, kNow + 70);
    // b's handle on its own ring.
    h = hb;
    tg_peer_ring_seen(tg_peers_ring(p, 1), &h, "b", "ib", kNow + DAY, kNow + 80);
    assert_int_equal(h, hb);
    render(p, &a);
    assert_string_equal(a.e[0].name, "b");
    tg_peers_free(p);
}

static void test_escaping(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(1);
    assert_non_null(p);
    const char *name = "we\"ird\\name\x01\n\x1f\x7f.example";
    const char *issuer = "/O=\"Quoted\" \\ Corp/CN=Root\t1";
    tg_peer_ring_note(tg_peers_ring(p, 0), name, issuer, kNow, kNow);
    char buf[1024];
    tg_peers_json(p, buf, sizeof(buf));
    assert_non_null(
        strstr(buf, "\"name\":\"we\\\"ird\\\\name\\u0001\\u000a\\u001f\\u007f.example\""));
    assert_non_null(strstr(buf, "\"issuer\":\"/O=\\\"Quoted\\\" \\\\ Corp/CN=Root\\u00091\""));
    // No raw control character anywhere.
    for (const char *c = buf; *c != '\0'; c++)
        assert_true((unsigned char)*c >= 0x20 && *c != 0x7f);
    struct jarray a;
    render(p, &a);
    assert_int_equal(a.num, 1);
    assert_string_equal(a.e[0].name, name);
    assert_string_equal(a.e[0].issuer, issuer);
    tg_peers_free(p);
}

// Names and issuers longer than an entry holds are cut, and still well formed.
static void test_long_strings(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(1);
    assert_non_null(p);
    char name[400], issuer[800];
    memset(name, 'n', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    for (size_t i = 0; i < sizeof(issuer) - 1; i++)
        issuer[i] = i % 2 ? '"' : 'i';
    issuer[sizeof(issuer) - 1] = '\0';
    tg_peer_ring_note(tg_peers_ring(p, 0), name, issuer, kNow, kNow);
    struct jarray a;
    render(p, &a);
    assert_int_equal(a.num, 1);
    assert_int_equal(strlen(a.e[0].name), sizeof(((struct tg_peer_entry *)0)->name) - 1);
    assert_memory_equal(a.e[0].name, name, strlen(a.e[0].name));
    assert_true(strlen(a.e[0].issuer) > 0);
    assert_memory_equal(a.e[0].issuer, issuer, strlen(a.e[0].issuer));
    tg_peers_free(p);
}

// At most TG_PEERS_SHOWN entries, the newest of all rings.
static void test_shown_limit(void **state) {
    (void)state;
    enum { RINGS = 3 };
    struct tg_peers *p = tg_peers_new(RINGS);
    assert_non_null(p);
    // Ring r, entry i gets seen time kNow + i * RINGS + r: interleaved across rings.
    for (unsigned i = 0; i < TG_PEERS_PER_WORKER; i++) {
        for (unsigned r = 0; r < RINGS; r++) {
            char name[32], issuer[32];
            snprintf(name, sizeof(name), "peer-%u-%u", r, i);
            snprintf(issuer, sizeof(issuer), "issuer-%u-%u", r, i);
            tg_peer_ring_note(tg_peers_ring(p, r), name, issuer, kNow + DAY * (r + 1),
                              kNow + (int64_t)(i * RINGS + r));
        }
    }
    struct jarray a;
    render(p, &a);
    assert_int_equal(a.num, TG_PEERS_SHOWN);
    int64_t newest = kNow + TG_PEERS_PER_WORKER * RINGS - 1;
    for (unsigned k = 0; k < TG_PEERS_SHOWN; k++) {
        int64_t t = newest - k;
        unsigned r = (unsigned)((t - kNow) % RINGS), i = (unsigned)((t - kNow) / RINGS);
        char name[32], issuer[32];
        snprintf(name, sizeof(name), "peer-%u-%u", r, i);
        snprintf(issuer, sizeof(issuer), "issuer-%u-%u", r, i);
        assert_entry(&a.e[k], name, issuer, kNow + DAY * (r + 1), t);
    }
    tg_peers_free(p);
}

// A ring keeps its last TG_PEERS_PER_WORKER peers; an older one's handle no longer names its
// entry once that entry holds another peer, and seeing it again records it anew.
static void test_entry_reused(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(1);
    assert_non_null(p);
    struct tg_peer_ring *r = tg_peers_ring(p, 0);
    uint32_t ha = tg_peer_ring_note(r, "a", "ia", kNow + DAY, kNow);
    for (unsigned i = 0; i < TG_PEERS_PER_WORKER; i++) {
        char name[16];
        snprintf(name, sizeof(name), "p%u", i);
        tg_peer_ring_note(r, name, "ip", kNow + 2 * DAY, kNow + 10 + i);
    }
    struct jarray a;
    render(p, &a);
    assert_int_equal(a.num,
                     TG_PEERS_PER_WORKER < TG_PEERS_SHOWN ? TG_PEERS_PER_WORKER : TG_PEERS_SHOWN);
    for (size_t k = 0; k < a.num; k++)
        assert_string_not_equal(a.e[k].name, "a"); // a's entry holds the last peer now
    const int64_t last = kNow + 10 + TG_PEERS_PER_WORKER - 1;
    // a is seen again: not a move of the newest peer's entry, a new record.
    uint32_t h = ha;
    tg_peer_ring_seen(r, &h, "a", "ia", kNow + DAY, kNow + 1000);
    assert_int_not_equal(h, ha);
    render(p, &a);
    assert_entry(&a.e[0], "a", "ia", kNow + DAY, kNow + 1000);
    char lastname[16];
    snprintf(lastname, sizeof(lastname), "p%u", TG_PEERS_PER_WORKER - 1);
    assert_entry(&a.e[1], lastname, "ip", kNow + 2 * DAY, last);
    for (size_t k = 0; k < a.num; k++)
        assert_string_not_equal(a.e[k].name, "p0"); // the oldest made room for a
    // The new handle works.
    uint32_t h2 = h;
    tg_peer_ring_seen(r, &h2, "a", "ia", kNow + DAY, kNow + 1001);
    assert_int_equal(h2, h);
    render(p, &a);
    assert_entry(&a.e[0], "a", "ia", kNow + DAY, kNow + 1001);
    size_t count = a.num;
    // A handle naming no entry at all records the peer too.
    uint32_t bogus = 0xffffffffu;
    tg_peer_ring_seen(r, &bogus, "z", "iz", kNow + DAY, kNow + 2000);
    assert_int_not_equal(bogus, 0xffffffffu);
    render(p, &a);
    assert_int_equal(a.num, count);
    assert_entry(&a.e[0], "z", "iz", kNow + DAY, kNow + 2000);
    tg_peers_free(p);
}

// An answer cut by a small buffer is still a JSON array (of fewer entries) once there is room
// for "[]", and always NUL-terminated within the buffer.
static void test_json_truncated_is_valid(void **state) {
    (void)state;
    struct tg_peers *p = tg_peers_new(1);
    assert_non_null(p);
    struct tg_peer_ring *r = tg_peers_ring(p, 0);
    char longname[120];
    memset(longname, 'L', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    tg_peer_ring_note(r, "s", "i", kNow, kNow + 1);      // older, short
    tg_peer_ring_note(r, longname, "i", kNow, kNow + 2); // newer, long
    char full[2048];
    size_t full_len = tg_peers_json(p, full, sizeof(full));
    assert_int_equal(full_len, strlen(full));
    for (size_t len = 1; len <= full_len + 1; len++) {
        char *buf = malloc(len + 16);
        assert_non_null(buf);
        memset(buf, '#', len + 16);
        size_t n = tg_peers_json(p, buf, len);
        assert_true(n < len);
        assert_int_equal(buf[n], '\0');
        assert_int_equal(strlen(buf), n);
        for (size_t k = len; k < len + 16; k++)
            assert_int_equal(buf[k], '#'); // nothing written past |len|
        struct jarray a;
        char bad[2048] = "";
        if (len >= 3 && !parse_json(buf, &a)) // room for "[]" at least
            snprintf(bad, sizeof(bad), "%s", buf);
        free(buf);
        if (bad[0] != '\0') {
            tg_peers_free(p);
            fail_msg("len %zu of %zu: malformed peers JSON: %s", len, full_len, bad);
        }
    }
    tg_peers_free(p);
}

// Concurrency: one writer, one reader ------------------------------------------------------------

#define NUM_NAMES 8

struct conc {
    struct tg_peers *p;
    char names[NUM_NAMES][128];
    char issuers[NUM_NAMES][256];
    _Atomic int stop;
    _Atomic unsigned long writes;
};

static int64_t conc_not_after(unsigned k) {
    return kNow + (int64_t)(k + 1) * DAY;
}

// Names of very different lengths and characters, so that a copy mixing two of them shows.
static void conc_init(struct conc *c) {
    for (unsigned k = 0; k < NUM_NAMES; k++) {
        size_t len = 1 + (k * 37) % 126;
        memset(c->names[k], 'a' + (int)k, len);
        c->names[k][len] = '\0';
        size_t ilen = 1 + (k * 83 + 40) % 254;
        memset(c->issuers[k], 'A' + (int)k, ilen);
        c->issuers[k][ilen] = '\0';
    }
}

static void *writer(void *arg) {
    struct conc *c = arg;
    struct tg_peer_ring *r = tg_peers_ring(c->p, 0);
    uint32_t handles[NUM_NAMES] = {0};
    int noted[NUM_NAMES] = {0};
    uint32_t x = 12345;
    int64_t now = kNow;
    while (!atomic_load(&c->stop)) {
        x = x * 1103515245u + 12345u;
        unsigned k = (x >> 16) % NUM_NAMES;
        now++;
        if (noted[k] && (x & 0x100))
            tg_peer_ring_seen(r, &handles[k], c->names[k], c->issuers[k], conc_not_after(k), now);
        else
            handles[k] = tg_peer_ring_note(r, c->names[k], c->issuers[k], conc_not_after(k), now);
        noted[k] = 1;
        atomic_fetch_add_explicit(&c->writes, 1, memory_order_relaxed);
    }
    return NULL;
}

static double elapsed(const struct timespec *t0) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void test_concurrent_reader(void **state) {
    (void)state;
    struct conc *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->p = tg_peers_new(2);
    assert_non_null(c->p);
    conc_init(c);
    // A quiet second ring, written before the writer starts.
    tg_peer_ring_note(tg_peers_ring(c->p, 1), c->names[0], c->issuers[0], conc_not_after(0), kNow);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer, c), 0);
    struct jarray *a = malloc(sizeof(*a));
    char *buf = malloc(65536);
    assert_non_null(a);
    assert_non_null(buf);
    unsigned long reads = 0, entries = 0;
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    int bad = 0;
    while (!bad && elapsed(&t0) < 0.5) {
        size_t n = tg_peers_json(c->p, buf, 65536);
        if (n != strlen(buf) || !parse_json(buf, a)) {
            bad = 1;
            break;
        }
        reads++;
        assert_true(a->num <= TG_PEERS_SHOWN);
        for (size_t i = 0; i < a->num && !bad; i++) {
            unsigned k = 0;
            while (k < NUM_NAMES && strcmp(a->e[i].name, c->names[k]) != 0)
                k++;
            char na[32];
            if (k == NUM_NAMES || strcmp(a->e[i].issuer, c->issuers[k]) != 0) {
                bad = 1;
                break;
            }
            iso(conc_not_after(k), na, sizeof(na));
            if (strcmp(a->e[i].not_after, na) != 0)
                bad = 1;
            entries++;
        }
    }
    atomic_store(&c->stop, 1);
    assert_int_equal(pthread_join(th, NULL), 0);
    if (bad)
        fail_msg("torn or malformed entry after %lu reads: %s", reads, buf);
    print_message("%lu reads, %lu entries checked, %lu writes\n", reads, entries,
                  atomic_load(&c->writes));
    assert_true(reads > 0);
    assert_true(entries > reads); // the writer's ring was not always empty
    assert_true(atomic_load(&c->writes) > 0);
    // Quiet again: the answer is complete and orderly.
    struct jarray *b = a;
    buf[0] = '\0';
    tg_peers_json(c->p, buf, 65536);
    assert_int_equal(parse_json(buf, b), 1);
    assert_true(b->num >= 2);
    for (size_t i = 1; i < b->num; i++)
        assert_true(strcmp(b->e[i - 1].seen, b->e[i].seen) >= 0);
    free(buf);
    free(a);
    tg_peers_free(c->p);
    free(c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_empty),
        cmocka_unit_test(test_note_one),
        cmocka_unit_test(test_null_strings),
        cmocka_unit_test(test_newest_first_across_rings),
        cmocka_unit_test(test_seen_moves_entry),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_long_strings),
        cmocka_unit_test(test_shown_limit),
        cmocka_unit_test(test_entry_reused),
        cmocka_unit_test(test_json_truncated_is_valid),
        cmocka_unit_test(test_concurrent_reader),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
