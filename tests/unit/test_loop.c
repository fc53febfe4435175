// Unit tests of the loop core (proxy/loop.c) on a real io_uring: slabs and generations, the
// user_data encoding, dispatch by kind, stale completions, provided-buffer groups, the tick,
// wake-ups from other threads and messages between loops (MSG_RING and the mailbox).
//
// Each loop is driven only by the thread that created it (the ring is SINGLE_ISSUER). Every
// loop is started with a short tick, so tg_loop_run_once always returns within a few ms, and
// every wait is bounded by a deadline: a broken loop fails a test, it cannot hang it. Where the
// kernel (or a sandbox) refuses io_uring, the ring tests are skipped, loudly.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "tlsgate/loop.h"

#define K_TEST ((enum tg_kind)5)   // a kind with a slab
#define K_NOSLAB ((enum tg_kind)6) // a kind whose slot is an index (like TG_KIND_LISTENER)
#define K_UNSET 9                  // a kind nobody registered

#define TICK_MS 5
#define WAIT_MS 3000 // the longest any wait may take before the test fails

#define OP_NOP 1
#define OP_RECV 2
#define OP_MRECV 3
#define OP_MSG 4

#define BGID 1
#define BSIZE 2048
#define BCOUNT 8

// --- What the handlers saw -------------------------------------------------------------------

struct delivery {
    void *arg;
    void *obj;
    uint32_t slot;
    unsigned op;
    int32_t res;
    uint32_t flags;
    uint64_t ud;
    int bid;      // -1: no buffer
    uint32_t len; // bytes copied to |data|
    char data[64];
};

#define MAX_DELIVERIES 1024

static struct {
    struct tg_loop *loop; // whose buffers the handler reads and returns
    int return_bufs;
    unsigned n;
    struct delivery d[MAX_DELIVERIES];
} g_sink;

static void sink_reset(struct tg_loop *l) {
    memset(&g_sink, 0, sizeof(g_sink));
    g_sink.loop = l;
    g_sink.return_bufs = 1;
}

static void on_cqe(void *arg, void *obj, uint32_t slot, unsigned op,
                   const struct io_uring_cqe *cqe) {
    assert_true(g_sink.n < MAX_DELIVERIES);
    struct delivery *d = &g_sink.d[g_sink.n++];
    d->arg = arg;
    d->obj = obj;
    d->slot = slot;
    d->op = op;
    d->res = cqe->res;
    d->flags = cqe->flags;
    d->ud = cqe->user_data;
    d->bid = -1;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        d->bid = (int)bid;
        if (cqe->res > 0) {
            const uint8_t *p = tg_loop_buf(g_sink.loop, BGID, bid);
            d->len = (uint32_t)cqe->res < sizeof(d->data) - 1 ? (uint32_t)cqe->res
                                                              : (uint32_t)sizeof(d->data) - 1;
            memcpy(d->data, p, d->len);
        }
        if (g_sink.return_bufs)
            tg_loop_buf_return(g_sink.loop, BGID, bid);
    }
}

// --- io_uring availability, loops, bounded driving ----------------------------------------------

static int g_uring = -1; // -1 unknown, 0 refused by the kernel (skip), 1 fine
static char g_uring_why[128];

static void require_uring(void) {
    if (g_uring < 0) {
        struct io_uring r;
        int rc = io_uring_queue_init(4, &r, 0);
        if (rc == 0) {
            io_uring_queue_exit(&r);
            g_uring = 1;
        } else if (rc == -ENOSYS || rc == -EPERM) {
            g_uring = 0;
            snprintf(g_uring_why, sizeof(g_uring_why), "io_uring_queue_init: %s", strerror(-rc));
        } else {
            fail_msg("io_uring_queue_init: %s", strerror(-rc));
        }
    }
    if (g_uring == 0) {
        print_message("SKIPPED: io_uring is not available here (%s)\n", g_uring_why);
        skip();
    }
}

static void loop_init(struct tg_loop *l) {
    char err[256] = "";
    int ok = tg_loop_init(l, 64, 256, err, sizeof(err));
    if (!ok)
        fail_msg("tg_loop_init: %s", err);
    assert_true(l->ring_ok);
    assert_true(l->wake_fd >= 0);
}

static uint64_t mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

// until: what a bounded drive waits for (each pointer NULL: no condition).
struct until {
    const unsigned *u;
    unsigned u_min;
    const uint64_t *u64;
    uint64_t u64_min;
    const int *flag;
};

static int until_met(const struct until *w) {
    return (w->u == NULL || *w->u >= w->u_min) && (w->u64 == NULL || *w->u64 >= w->u64_min) &&
           (w->flag == NULL || *w->flag);
}

// drive runs |l| until |w| is met or WAIT_MS passed. Returns whether |w| was met.
static int drive(struct tg_loop *l, const struct until *w) {
    const uint64_t end = mono_ms() + WAIT_MS;
    while (!until_met(w)) {
        if (mono_ms() > end)
            return 0;
        int rc = tg_loop_run_once(l);
        if (rc != 1)
            fail_msg("tg_loop_run_once: %d", rc);
    }
    return 1;
}

static void drive_n(struct tg_loop *l, unsigned want) {
    struct until w = {.u = &g_sink.n, .u_min = want};
    if (!drive(l, &w))
        fail_msg("waited %d ms for %u deliveries, got %u", WAIT_MS, want, g_sink.n);
}

// drive_for runs |l| for |ms| whatever happens (to see that something does NOT happen).
static void drive_for(struct tg_loop *l, unsigned ms) {
    const uint64_t end = mono_ms() + ms;
    while (mono_ms() < end)
        assert_int_equal(tg_loop_run_once(l), 1);
}

static void submit_nop(struct tg_loop *l, uint64_t ud) {
    struct io_uring_sqe *sqe = tg_loop_sqe(l);
    io_uring_prep_nop(sqe);
    io_uring_sqe_set_data64(sqe, ud);
}

static void submit_recv(struct tg_loop *l, int fd, uint64_t ud, int multishot) {
    struct io_uring_sqe *sqe = tg_loop_sqe(l);
    if (multishot)
        io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
    else
        io_uring_prep_recv(sqe, fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BGID;
    io_uring_sqe_set_data64(sqe, ud);
}

static void send_dgram(int fd, const char *s) {
    assert_int_equal(send(fd, s, strlen(s), 0), (ssize_t)strlen(s));
}

struct tobj {
    uint64_t magic;
    uint32_t id;
};

// A loop started with the tick, a slab of tobj and K_TEST / K_NOSLAB registered.
struct fixture {
    struct tg_loop loop;
    struct tg_slab slab;
};

static void fixture_init(struct fixture *f, int bgid) {
    memset(f, 0, sizeof(*f));
    loop_init(&f->loop);
    assert_int_equal(tg_slab_init(&f->slab, sizeof(struct tobj), 4), 1);
    struct tg_kind_ops ops = {
        .name = "test", .on_cqe = on_cqe, .arg = &g_sink, .slab = &f->slab, .bgid = bgid};
    tg_loop_set_kind(&f->loop, K_TEST, &ops);
    struct tg_kind_ops ops2 = {
        .name = "noslab", .on_cqe = on_cqe, .arg = &f->slab, .slab = NULL, .bgid = -1};
    tg_loop_set_kind(&f->loop, K_NOSLAB, &ops2);
    tg_loop_start(&f->loop, TICK_MS, NULL, NULL, NULL);
    sink_reset(&f->loop);
}

static void fixture_cleanup(struct fixture *f) {
    tg_loop_cleanup(&f->loop);
    tg_slab_cleanup(&f->slab);
}

static const struct delivery *find_op(unsigned op) {
    for (unsigned i = 0; i < g_sink.n; i++)
        if (g_sink.d[i].op == op)
            return &g_sink.d[i];
    return NULL;
}

// --- Slabs (no ring) -----------------------------------------------------------------------

static void test_slab(void **state) {
    (void)state;
    struct tg_slab s;
    assert_int_equal(tg_slab_init(&s, sizeof(struct tobj), 4), 1);
    assert_int_equal(s.num_active, 0);
    struct tobj *o[4];
    uint32_t slot[4];
    for (int i = 0; i < 4; i++) {
        o[i] = tg_slab_alloc(&s, &slot[i]);
        assert_non_null(o[i]);
        assert_int_equal(tg_slab_gen(&s, slot[i]), 1);
        assert_true(tg_slab_live(&s, slot[i]));
        assert_ptr_equal(tg_slab_at(&s, slot[i]), o[i]);
        assert_int_equal(tg_slab_index(&s, o[i]), slot[i]);
        assert_ptr_equal(tg_slab_lookup(&s, slot[i], 1), o[i]);
        for (int k = 0; k < i; k++)
            assert_int_not_equal(slot[k], slot[i]);
        o[i]->magic = 0x1111111111111111ull * (uint64_t)(i + 1);
        o[i]->id = (uint32_t)i;
    }
    assert_int_equal(s.num_active, 4);
    // Exhausted.
    uint32_t x = 12345;
    assert_null(tg_slab_alloc(&s, &x));
    assert_int_equal(s.num_active, 4);

    // Freed: no longer live, the lookup fails even with the right generation.
    tg_slab_free(&s, slot[2]);
    assert_int_equal(s.num_active, 3);
    assert_false(tg_slab_live(&s, slot[2]));
    assert_null(tg_slab_lookup(&s, slot[2], 1));
    // Freeing again, or a slot out of range, changes nothing.
    tg_slab_free(&s, slot[2]);
    tg_slab_free(&s, 4);
    tg_slab_free(&s, UINT32_MAX);
    assert_int_equal(s.num_active, 3);

    // Allocated again: the same slot (the only free one), zeroed, a new generation; the old
    // generation no longer finds it.
    struct tobj *again = tg_slab_alloc(&s, &x);
    assert_ptr_equal(again, o[2]);
    assert_int_equal(x, slot[2]);
    assert_int_equal(again->magic, 0);
    assert_int_equal(again->id, 0);
    assert_int_equal(tg_slab_gen(&s, x), 2);
    assert_null(tg_slab_lookup(&s, x, 1));
    assert_ptr_equal(tg_slab_lookup(&s, x, 2), again);
    assert_null(tg_slab_lookup(&s, x, 3));
    // The others kept their contents.
    assert_int_equal(o[1]->magic, 0x2222222222222222ull);
    // Lookups out of range.
    assert_null(tg_slab_lookup(&s, 4, 1));
    assert_null(tg_slab_lookup(&s, 0xffffff, 0));
    assert_false(tg_slab_live(&s, 4));

    // The generation wraps without a crash, and stays distinct from the previous one.
    tg_slab_free(&s, slot[0]);
    s.gen[slot[0]] = UINT32_MAX;
    assert_ptr_equal(tg_slab_alloc(&s, &x), o[0]);
    assert_int_equal(tg_slab_gen(&s, x), 0);
    assert_ptr_equal(tg_slab_lookup(&s, x, 0), o[0]);
    assert_null(tg_slab_lookup(&s, x, UINT32_MAX));

    // Free everything: LIFO reuse, every slot available again.
    for (int i = 0; i < 4; i++)
        tg_slab_free(&s, slot[i]);
    assert_int_equal(s.num_active, 0);
    for (int i = 0; i < 4; i++)
        assert_non_null(tg_slab_alloc(&s, &x));
    assert_null(tg_slab_alloc(&s, &x));
    tg_slab_cleanup(&s);
    assert_null(s.objs);

    // An empty slab and one beyond the limit.
    assert_int_equal(tg_slab_init(&s, 8, 0), 1);
    assert_null(tg_slab_alloc(&s, &x));
    assert_null(tg_slab_lookup(&s, 0, 0));
    tg_slab_cleanup(&s);
    assert_int_equal(tg_slab_init(&s, 8, TG_SLAB_MAX + 1), 0);
    tg_slab_cleanup(&s);
}

// --- user_data -----------------------------------------------------------------------------

static void test_ud_round_trip(void **state) {
    (void)state;
    static const struct {
        unsigned kind, op;
        uint32_t slot, gen;
    } cases[] = {
        {0, 0, 0, 0},
        {1, 2, 3, 4},
        {15, 15, 0xffffff, UINT32_MAX},
        {TG_KIND_CONN, 5, 0xffffff, 0},
        {0, 0, 0xffffff, 0},
        {0, 0, 0, UINT32_MAX},
        {15, 0, 0, 0},
        {0, 15, 0, 0},
        {7, 9, 0x123456, 0x89abcdef},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        uint64_t ud = tg_ud(cases[i].kind, cases[i].op, cases[i].slot, cases[i].gen);
        assert_int_equal(tg_ud_kind(ud), cases[i].kind);
        assert_int_equal(tg_ud_op(ud), cases[i].op);
        assert_int_equal(tg_ud_slot(ud), cases[i].slot);
        assert_int_equal(tg_ud_gen(ud), cases[i].gen);
    }
    // The documented layout.
    assert_int_equal(tg_ud(0xa, 0xb, 0xcdef01, 0x23456789), 0x23456789cdef01baull);
    assert_int_equal(tg_ud(15, 15, 0xffffff, UINT32_MAX), UINT64_MAX);
    // Fields out of range are truncated; they do not spill into their neighbours.
    uint64_t ud = tg_ud(16 + 3, 16 + 4, 0x1000000 | 7, 9);
    assert_int_equal(tg_ud_kind(ud), 3);
    assert_int_equal(tg_ud_op(ud), 4);
    assert_int_equal(tg_ud_slot(ud), 7);
    assert_int_equal(tg_ud_gen(ud), 9);
    assert_true(TG_SLAB_MAX - 1 == 0xffffff);
}

// --- Dispatch ------------------------------------------------------------------------------

static void test_dispatch_nop(void **state) {
    (void)state;
    require_uring();
    struct fixture f;
    fixture_init(&f, -1);
    uint32_t sa, sb;
    struct tobj *a = tg_slab_alloc(&f.slab, &sa);
    struct tobj *b = tg_slab_alloc(&f.slab, &sb);
    assert_non_null(a);
    assert_non_null(b);

    submit_nop(&f.loop, tg_ud(K_TEST, OP_NOP, sa, tg_slab_gen(&f.slab, sa)));
    submit_nop(&f.loop, tg_ud(K_TEST, 15, sb, tg_slab_gen(&f.slab, sb)));
    submit_nop(&f.loop, tg_ud(K_NOSLAB, 9, 0xffffff, 77));
    // Nobody's: the loop's own ignored op, and a kind without a handler.
    submit_nop(&f.loop, tg_ud(TG_KIND_CORE, TG_OP_IGNORE, 0, 0));
    submit_nop(&f.loop, tg_ud(K_UNSET, 1, 0, 0));
    submit_nop(&f.loop, tg_ud(K_TEST, 14, sa, tg_slab_gen(&f.slab, sa))); // a marker, last
    drive_n(&f.loop, 4);
    drive_for(&f.loop, 20);
    assert_int_equal(g_sink.n, 4);
    assert_int_equal(f.loop.stale, 0);

    const struct delivery *d = find_op(OP_NOP);
    assert_non_null(d);
    assert_ptr_equal(d->arg, &g_sink);
    assert_ptr_equal(d->obj, a);
    assert_int_equal(d->slot, sa);
    assert_int_equal(d->res, 0);
    assert_int_equal(d->ud, tg_ud(K_TEST, OP_NOP, sa, 1));
    d = find_op(15);
    assert_non_null(d);
    assert_ptr_equal(d->obj, b);
    assert_int_equal(d->slot, sb);
    d = find_op(9);
    assert_non_null(d);
    assert_ptr_equal(d->arg, &f.slab);
    assert_null(d->obj);
    assert_int_equal(d->slot, 0xffffff);
    d = find_op(14);
    assert_non_null(d);
    assert_ptr_equal(d->obj, a);
    fixture_cleanup(&f);
}

static void test_sqe_refill(void **state) {
    (void)state;
    require_uring();
    // A ring of 4 submissions: tg_loop_sqe submits what is queued when it is full.
    struct tg_loop l;
    char err[256] = "";
    if (!tg_loop_init(&l, 4, 64, err, sizeof(err)))
        fail_msg("tg_loop_init: %s", err);
    struct tg_slab s;
    assert_int_equal(tg_slab_init(&s, sizeof(struct tobj), 1), 1);
    struct tg_kind_ops ops = {
        .name = "test", .on_cqe = on_cqe, .arg = &g_sink, .slab = &s, .bgid = -1};
    tg_loop_set_kind(&l, K_TEST, &ops);
    tg_loop_start(&l, TICK_MS, NULL, NULL, NULL);
    sink_reset(&l);
    uint32_t slot;
    assert_non_null(tg_slab_alloc(&s, &slot));
    for (unsigned i = 0; i < 20; i++)
        submit_nop(&l, tg_ud(K_TEST, i & 0xf, slot, 1));
    drive_n(&l, 20);
    for (unsigned i = 0; i < 20; i++)
        assert_int_equal(g_sink.d[i].op, i & 0xf); // in submission order
    tg_loop_cleanup(&l);
    tg_slab_cleanup(&s);
}

static void test_stale_not_delivered(void **state) {
    (void)state;
    require_uring();
    struct fixture f;
    fixture_init(&f, -1);
    uint32_t s1;
    assert_non_null(tg_slab_alloc(&f.slab, &s1));
    const uint32_t g1 = tg_slab_gen(&f.slab, s1);

    // Freed before its completion arrives.
    submit_nop(&f.loop, tg_ud(K_TEST, 1, s1, g1));
    tg_slab_free(&f.slab, s1);
    submit_nop(&f.loop, tg_ud(K_NOSLAB, 2, 0, 0)); // a marker
    drive_n(&f.loop, 1);
    assert_int_equal(g_sink.d[0].op, 2);
    assert_int_equal(f.loop.stale, 1);

    // The slot's next occupant: the old generation is dropped, the new one delivered.
    uint32_t s2;
    struct tobj *o2 = tg_slab_alloc(&f.slab, &s2);
    assert_int_equal(s2, s1);
    const uint32_t g2 = tg_slab_gen(&f.slab, s2);
    assert_int_equal(g2, g1 + 1);
    submit_nop(&f.loop, tg_ud(K_TEST, 3, s2, g1));
    submit_nop(&f.loop, tg_ud(K_TEST, 4, s2, g2 + 1)); // a generation not issued yet
    submit_nop(&f.loop, tg_ud(K_TEST, 5, 3, 0));       // a slot never allocated
    submit_nop(&f.loop, tg_ud(K_TEST, 6, 3, 1));
    submit_nop(&f.loop, tg_ud(K_TEST, 7, 0xffffff, 1)); // beyond the slab
    submit_nop(&f.loop, tg_ud(K_TEST, 8, s2, g2));
    drive_n(&f.loop, 2);
    drive_for(&f.loop, 20);
    assert_int_equal(g_sink.n, 2);
    assert_int_equal(g_sink.d[1].op, 8);
    assert_ptr_equal(g_sink.d[1].obj, o2);
    assert_int_equal(f.loop.stale, 6);
    fixture_cleanup(&f);
}

// --- Provided buffers ------------------------------------------------------------------------

static void test_bufgroup_params(void **state) {
    (void)state;
    require_uring();
    struct tg_loop l;
    loop_init(&l);
    char err[256];
    assert_int_equal(tg_loop_add_bufgroup(&l, BGID, BSIZE, BCOUNT, err, sizeof(err)), 1);
    assert_int_equal(l.num_groups, 1);
    err[0] = 0;
    assert_int_equal(tg_loop_add_bufgroup(&l, BGID, BSIZE, BCOUNT, err, sizeof(err)), 0);
    assert_true(err[0] != 0); // a reason
    assert_int_equal(tg_loop_add_bufgroup(&l, 2, BSIZE, 6, err, sizeof(err)), 0);
    assert_int_equal(tg_loop_add_bufgroup(&l, 2, BSIZE, 0, err, sizeof(err)), 0);
    assert_int_equal(tg_loop_add_bufgroup(&l, 2, BSIZE, 65536, err, sizeof(err)), 0);
    assert_int_equal(l.num_groups, 1);
    // Up to TG_LOOP_MAX_GROUPS groups.
    for (uint16_t g = 2; g < 2 + TG_LOOP_MAX_GROUPS - 1; g++)
        assert_int_equal(tg_loop_add_bufgroup(&l, g, 64, 1, err, sizeof(err)), 1);
    assert_int_equal(l.num_groups, TG_LOOP_MAX_GROUPS);
    assert_int_equal(tg_loop_add_bufgroup(&l, 10, 64, 1, err, sizeof(err)), 0);
    // tg_loop_buf addresses the group's buffers.
    assert_ptr_equal(tg_loop_buf(&l, BGID, 0), l.groups[0].mem);
    assert_ptr_equal(tg_loop_buf(&l, BGID, 5), l.groups[0].mem + 5 * BSIZE);
    assert_ptr_equal(tg_loop_buf(&l, 3, 0), l.groups[2].mem);
    // Returning a buffer of a group that does not exist, or out of range, is ignored.
    tg_loop_buf_return(&l, 99, 0);
    tg_loop_buf_return(&l, BGID, BCOUNT);
    tg_loop_cleanup(&l);
}

static void test_bufgroup_recv(void **state) {
    (void)state;
    require_uring();
    struct fixture f;
    fixture_init(&f, BGID);
    char err[256];
    if (!tg_loop_add_bufgroup(&f.loop, BGID, BSIZE, BCOUNT, err, sizeof(err)))
        fail_msg("%s", err);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);
    uint32_t slot;
    struct tobj *o = tg_slab_alloc(&f.slab, &slot);
    const uint32_t gen = tg_slab_gen(&f.slab, slot);

    // Plain receives, 3 x BCOUNT of them: the buffers go back and are used again.
    unsigned used[BCOUNT] = {0};
    for (unsigned i = 0; i < 3 * BCOUNT; i++) {
        char msg[32];
        snprintf(msg, sizeof(msg), "datagram-%u", i);
        send_dgram(sv[1], msg);
        submit_recv(&f.loop, sv[0], tg_ud(K_TEST, OP_RECV, slot, gen), 0);
        drive_n(&f.loop, i + 1);
        const struct delivery *d = &g_sink.d[i];
        assert_int_equal(d->op, OP_RECV);
        assert_ptr_equal(d->obj, o);
        if (d->res != (int32_t)strlen(msg))
            fail_msg("recv %u: res %d (%s)", i, d->res, d->res < 0 ? strerror(-d->res) : "");
        assert_true(d->flags & IORING_CQE_F_BUFFER);
        assert_true(d->bid >= 0 && d->bid < BCOUNT);
        assert_int_equal(d->len, strlen(msg));
        assert_memory_equal(d->data, msg, d->len);
        used[d->bid]++;
    }
    unsigned reused = 0;
    for (unsigned b = 0; b < BCOUNT; b++)
        reused += used[b] > 1;
    assert_true(reused > 0);

    // Without the returns the group runs dry after BCOUNT receives: ENOBUFS, no buffer.
    g_sink.return_bufs = 0;
    unsigned base = g_sink.n;
    for (unsigned i = 0; i < BCOUNT; i++) {
        send_dgram(sv[1], "held");
        submit_recv(&f.loop, sv[0], tg_ud(K_TEST, OP_RECV, slot, gen), 0);
        drive_n(&f.loop, base + i + 1);
        assert_int_equal(g_sink.d[base + i].res, 4);
    }
    send_dgram(sv[1], "late");
    submit_recv(&f.loop, sv[0], tg_ud(K_TEST, OP_RECV, slot, gen), 0);
    drive_n(&f.loop, base + BCOUNT + 1);
    assert_int_equal(g_sink.d[base + BCOUNT].res, -ENOBUFS);
    assert_false(g_sink.d[base + BCOUNT].flags & IORING_CQE_F_BUFFER);
    // Handing them back makes the group usable again; the datagram waited in the socket.
    for (unsigned i = 0; i < BCOUNT; i++)
        tg_loop_buf_return(&f.loop, BGID, (unsigned)g_sink.d[base + i].bid);
    g_sink.return_bufs = 1;
    submit_recv(&f.loop, sv[0], tg_ud(K_TEST, OP_RECV, slot, gen), 0);
    drive_n(&f.loop, base + BCOUNT + 2);
    assert_int_equal(g_sink.d[base + BCOUNT + 1].res, 4);
    assert_memory_equal(g_sink.d[base + BCOUNT + 1].data, "late", 4);

    // A multishot receive: one submission, many completions, each with a buffer.
    base = g_sink.n;
    const uint64_t mud = tg_ud(K_TEST, OP_MRECV, slot, gen);
    submit_recv(&f.loop, sv[0], mud, 1);
    for (unsigned i = 0; i < 3 * BCOUNT; i++) {
        char msg[32];
        snprintf(msg, sizeof(msg), "multi-%u", i);
        send_dgram(sv[1], msg);
        drive_n(&f.loop, base + i + 1);
        const struct delivery *d = &g_sink.d[base + i];
        if (i == 0 && d->res == -EINVAL) {
            print_message("multishot recv not supported by this kernel: part skipped\n");
            goto out;
        }
        assert_int_equal(d->op, OP_MRECV);
        assert_int_equal(d->res, (int32_t)strlen(msg));
        assert_true(d->flags & IORING_CQE_F_MORE);
        assert_true(d->flags & IORING_CQE_F_BUFFER);
        assert_memory_equal(d->data, msg, d->len);
    }
    // Cancelled: the last completion has no F_MORE.
    tg_loop_cancel_ud(&f.loop, mud, 0);
    drive_n(&f.loop, base + 3 * BCOUNT + 1);
    assert_int_equal(g_sink.d[base + 3 * BCOUNT].res, -ECANCELED);
    assert_false(g_sink.d[base + 3 * BCOUNT].flags & IORING_CQE_F_MORE);

    // tg_loop_cancel_fd ends a pending receive too.
    base = g_sink.n;
    submit_recv(&f.loop, sv[0], tg_ud(K_TEST, OP_RECV, slot, gen), 0);
    drive_for(&f.loop, 10); // submitted and waiting
    assert_int_equal(g_sink.n, base);
    tg_loop_cancel_fd(&f.loop, sv[0]);
    drive_n(&f.loop, base + 1);
    assert_int_equal(g_sink.d[base].res, -ECANCELED);
out:
    close(sv[0]);
    close(sv[1]);
    fixture_cleanup(&f);
}

static void test_stale_recv_returns_buffer(void **state) {
    (void)state;
    require_uring();
    struct fixture f;
    fixture_init(&f, BGID);
    char err[256];
    if (!tg_loop_add_bufgroup(&f.loop, BGID, BSIZE, BCOUNT, err, sizeof(err)))
        fail_msg("%s", err);
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv), 0);

    // 4 x BCOUNT receives whose object is gone by the time they complete: each takes a buffer,
    // the loop drops the completion and must hand the buffer back.
    for (unsigned i = 0; i < 4 * BCOUNT; i++) {
        uint32_t slot;
        assert_non_null(tg_slab_alloc(&f.slab, &slot));
        const uint64_t ud = tg_ud(K_TEST, OP_RECV, slot, tg_slab_gen(&f.slab, slot));
        tg_slab_free(&f.slab, slot);
        send_dgram(sv[1], "for-nobody");
        submit_recv(&f.loop, sv[0], ud, 0);
        struct until w = {.u64 = &f.loop.stale, .u64_min = i + 1};
        if (!drive(&f.loop, &w))
            fail_msg("stale completion %u did not come", i);
    }
    assert_int_equal(g_sink.n, 0);
    assert_int_equal(f.loop.stale, 4 * BCOUNT);

    // The group is not exhausted: a live receive gets its datagram in a buffer.
    uint32_t slot;
    struct tobj *o = tg_slab_alloc(&f.slab, &slot);
    send_dgram(sv[1], "alive");
    submit_recv(&f.loop, sv[0], tg_ud(K_TEST, OP_RECV, slot, tg_slab_gen(&f.slab, slot)), 0);
    drive_n(&f.loop, 1);
    if (g_sink.d[0].res < 0)
        fail_msg("live recv after stale ones: %s (buffers not returned?)",
                 strerror(-g_sink.d[0].res));
    assert_ptr_equal(g_sink.d[0].obj, o);
    assert_int_equal(g_sink.d[0].res, 5);
    assert_memory_equal(g_sink.d[0].data, "alive", 5);
    close(sv[0]);
    close(sv[1]);
    fixture_cleanup(&f);
}

// --- Tick and wake-ups -----------------------------------------------------------------------

static unsigned g_ticks;
static unsigned g_wakes;
static int g_wake_ret;
static void *g_owner_seen;

static void on_tick(void *owner) {
    g_owner_seen = owner;
    g_ticks++;
}

static int on_wake(void *owner) {
    g_owner_seen = owner;
    g_wakes++;
    return g_wake_ret;
}

// The probe for IORING_OP_SEND with a destination address (what media sends use): found on
// kernels from 6.0, and a datagram sent that way arrives at that address.
static void test_send_addr(void **state) {
    (void)state;
    require_uring();
    struct tg_loop l;
    loop_init(&l);
    struct utsname u;
    assert_int_equal(uname(&u), 0);
    unsigned major = 0, minor = 0;
    sscanf(u.release, "%u.%u", &major, &minor);
    if (major >= 6)
        assert_true(l.has_send_addr);
    if (!l.has_send_addr) {
        print_message("IORING_OP_SEND takes no address on %s: send part skipped\n", u.release);
        tg_loop_cleanup(&l);
        return;
    }
    int rx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    int tx = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t to_len = sizeof(to);
    assert_true(rx >= 0 && tx >= 0);
    assert_int_equal(bind(rx, (struct sockaddr *)&to, sizeof(to)), 0);
    assert_int_equal(getsockname(rx, (struct sockaddr *)&to, &to_len), 0);
    static const char msg[] = "sent-with-address";
    struct io_uring_sqe *sqe = tg_loop_sqe(&l);
    io_uring_prep_send(sqe, tx, msg, sizeof(msg), 0);
    io_uring_prep_send_set_addr(sqe, (const struct sockaddr *)&to, sizeof(to));
    io_uring_sqe_set_data64(sqe, 7);
    assert_true(io_uring_submit_and_wait(&l.ring, 1) >= 0);
    struct io_uring_cqe *cqe;
    assert_int_equal(io_uring_peek_cqe(&l.ring, &cqe), 0);
    assert_int_equal(cqe->user_data, 7);
    assert_int_equal(cqe->res, (int)sizeof(msg));
    io_uring_cqe_seen(&l.ring, cqe);
    char got[64];
    assert_int_equal(recv(rx, got, sizeof(got), MSG_DONTWAIT), (ssize_t)sizeof(msg));
    assert_memory_equal(got, msg, sizeof(msg));
    close(rx);
    close(tx);
    tg_loop_cleanup(&l);
}

static void test_tick(void **state) {
    (void)state;
    require_uring();
    struct tg_loop l;
    loop_init(&l);
    g_ticks = 0;
    g_owner_seen = NULL;
    int owner;
    const uint64_t t0 = mono_ms();
    tg_loop_start(&l, 10, on_tick, on_wake, &owner);
    assert_int_equal(l.tick.tv_sec, 0);
    assert_int_equal(l.tick.tv_nsec, 10000000);
    struct until w = {.u = &g_ticks, .u_min = 3};
    if (!drive(&l, &w))
        fail_msg("3 ticks of 10 ms did not come within %d ms (%u)", WAIT_MS, g_ticks);
    const uint64_t took = mono_ms() - t0;
    assert_ptr_equal(g_owner_seen, &owner);
    assert_true(took >= 28); // three periods of 10 ms, one after the other
    // The loop's clock is refreshed on every turn.
    uint32_t now = tg_loop_now_ms();
    assert_true((uint32_t)(now - l.now) < 100);
    tg_loop_cleanup(&l);

    // Whole seconds and the rest.
    loop_init(&l);
    tg_loop_start(&l, 1250, NULL, NULL, NULL);
    assert_int_equal(l.tick.tv_sec, 1);
    assert_int_equal(l.tick.tv_nsec, 250000000);
    tg_loop_cleanup(&l);
}

struct waker {
    struct tg_loop *loop;
    unsigned delay_ms;
};

static void *waker_main(void *arg) {
    const struct waker *wk = arg;
    struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)wk->delay_ms * 1000000L};
    nanosleep(&ts, NULL);
    tg_loop_wake(wk->loop);
    return NULL;
}

static void wake_from_thread(struct tg_loop *l, unsigned delay_ms) {
    pthread_t th;
    struct waker wk = {.loop = l, .delay_ms = delay_ms};
    assert_int_equal(pthread_create(&th, NULL, waker_main, &wk), 0);
    const unsigned before = g_wakes;
    struct until w = {.u = &g_wakes, .u_min = before + 1};
    int ok = drive(l, &w);
    pthread_join(th, NULL);
    if (!ok)
        fail_msg("the wake-up from another thread did not come within %d ms", WAIT_MS);
}

static void test_wake(void **state) {
    (void)state;
    require_uring();
    struct tg_loop l;
    loop_init(&l);
    g_wakes = 0;
    g_wake_ret = 1;
    int owner;
    tg_loop_start(&l, TICK_MS, NULL, on_wake, &owner);
    assert_true(l.wake_armed);
    // Nothing without a wake-up.
    drive_for(&l, 30);
    assert_int_equal(g_wakes, 0);

    wake_from_thread(&l, 20);
    assert_int_equal(g_wakes, 1);
    assert_ptr_equal(g_owner_seen, &owner);
    assert_true(l.wake_armed); // listening again
    wake_from_thread(&l, 0);
    assert_int_equal(g_wakes, 2);

    // on_wake returning 0: no longer listening; further wake-ups are not seen.
    g_wake_ret = 0;
    wake_from_thread(&l, 5);
    assert_int_equal(g_wakes, 3);
    assert_false(l.wake_armed);
    tg_loop_wake(&l);
    drive_for(&l, 30);
    assert_int_equal(g_wakes, 3);
    tg_loop_cleanup(&l);
}

// --- Messages between loops ------------------------------------------------------------------

static void test_post_msg_ring(void **state) {
    (void)state;
    require_uring();
    struct tg_loop a;
    loop_init(&a);
    tg_loop_start(&a, TICK_MS, NULL, NULL, NULL);
    struct fixture fb;
    fixture_init(&fb, -1);
    struct tg_loop *b = &fb.loop;
    uint32_t slot;
    struct tobj *o = tg_slab_alloc(&fb.slab, &slot);
    const uint32_t gen = tg_slab_gen(&fb.slab, slot);

    if (!a.has_msg_ring) {
        print_message("IORING_OP_MSG_RING not supported by this kernel: MSG_RING part skipped\n");
    } else {
        assert_int_equal(tg_loop_post(&a, b, tg_ud(K_TEST, OP_MSG, slot, gen), 1234), 1);
        // Queued on |a|: nothing reaches |b| before |a| submits.
        drive_for(b, 15);
        assert_int_equal(g_sink.n, 0);
        assert_int_equal(tg_loop_run_once(&a), 1);
        drive_n(b, 1);
        const struct delivery *d = &g_sink.d[0];
        assert_int_equal(d->op, OP_MSG);
        assert_ptr_equal(d->obj, o);
        assert_int_equal(d->slot, slot);
        assert_int_equal(d->res, 1234);
        assert_int_equal(d->ud, tg_ud(K_TEST, OP_MSG, slot, gen));
        assert_int_equal(atomic_load(&b->mb_tail), 0); // not through the mailbox

        // To a slot whose object has gone: dropped by |b| as stale.
        assert_int_equal(tg_loop_post(&a, b, tg_ud(K_TEST, OP_MSG, slot, gen + 1), 5), 1);
        assert_int_equal(tg_loop_run_once(&a), 1);
        struct until w = {.u64 = &b->stale, .u64_min = 1};
        assert_true(drive(b, &w));
        assert_int_equal(g_sink.n, 1);
        // To a kind without a slab.
        assert_int_equal(tg_loop_post(&a, b, tg_ud(K_NOSLAB, 11, 0xabcdef, 3), 0), 1);
        assert_int_equal(tg_loop_run_once(&a), 1);
        drive_n(b, 2);
        assert_int_equal(g_sink.d[1].op, 11);
        assert_int_equal(g_sink.d[1].slot, 0xabcdef);
        assert_null(g_sink.d[1].obj);
        assert_int_equal(g_sink.d[1].res, 0);
    }

    // A negative result cannot travel in MSG_RING's length: it takes the mailbox.
    const unsigned base = g_sink.n;
    assert_int_equal(tg_loop_post(&a, b, tg_ud(K_TEST, OP_MSG, slot, gen), -EPIPE), 1);
    assert_int_equal(atomic_load(&b->mb_tail), 1);
    drive_n(b, base + 1);
    assert_int_equal(g_sink.d[base].res, -EPIPE);
    assert_ptr_equal(g_sink.d[base].obj, o);

    // A kernel without MSG_RING: a loop of our own still posts, through the mailbox.
    a.has_msg_ring = 0;
    assert_int_equal(tg_loop_post(&a, b, tg_ud(K_TEST, OP_MSG, slot, gen), 77), 1);
    assert_int_equal(atomic_load(&b->mb_tail), 2);
    drive_n(b, base + 2);
    assert_int_equal(g_sink.d[base + 1].res, 77);
    tg_loop_cleanup(&a);
    fixture_cleanup(&fb);
}

static void test_post_mailbox(void **state) {
    (void)state;
    require_uring();
    struct fixture fb;
    fixture_init(&fb, -1);
    struct tg_loop *b = &fb.loop;
    uint32_t slot;
    struct tobj *o = tg_slab_alloc(&fb.slab, &slot);
    const uint32_t gen = tg_slab_gen(&fb.slab, slot);

    // From a thread without a loop (from = NULL): the mailbox and the eventfd.
    assert_int_equal(tg_loop_post(NULL, b, tg_ud(K_TEST, OP_MSG, slot, gen), 42), 1);
    assert_int_equal(atomic_load(&b->mb_tail), 1);
    drive_n(b, 1);
    assert_int_equal(g_sink.d[0].op, OP_MSG);
    assert_ptr_equal(g_sink.d[0].obj, o);
    assert_int_equal(g_sink.d[0].res, 42);
    assert_int_equal(g_sink.d[0].flags, 0);
    assert_int_equal(b->mb_head, 1);

    // A stale one through the mailbox is dropped as well.
    assert_int_equal(tg_loop_post(NULL, b, tg_ud(K_TEST, OP_MSG, slot, gen + 7), 1), 1);
    struct until w = {.u64 = &b->stale, .u64_min = 1};
    assert_true(drive(b, &w));
    assert_int_equal(g_sink.n, 1);
    fixture_cleanup(&fb);
}

static void test_mailbox_full(void **state) {
    (void)state;
    require_uring();
    struct fixture fb;
    fixture_init(&fb, -1);
    struct tg_loop *b = &fb.loop;
    uint32_t slot;
    assert_non_null(tg_slab_alloc(&fb.slab, &slot));
    const uint64_t ud = tg_ud(K_TEST, OP_MSG, slot, tg_slab_gen(&fb.slab, slot));

    // |b| is not driven: TG_LOOP_MAILBOX posts fit, the next one does not.
    for (int i = 0; i < TG_LOOP_MAILBOX; i++)
        assert_int_equal(tg_loop_post(NULL, b, ud, i), 1);
    assert_int_equal(tg_loop_post(NULL, b, ud, -1), 0);
    assert_int_equal(tg_loop_post(NULL, b, ud, -2), 0);
    assert_int_equal(g_sink.n, 0);

    // Drained in order, the refused ones never delivered.
    drive_n(b, TG_LOOP_MAILBOX);
    drive_for(b, 20);
    assert_int_equal(g_sink.n, TG_LOOP_MAILBOX);
    for (int i = 0; i < TG_LOOP_MAILBOX; i++)
        assert_int_equal(g_sink.d[i].res, i);

    // Room again, several laps around the ring.
    for (int lap = 0; lap < 3; lap++) {
        const unsigned base = g_sink.n;
        for (int i = 0; i < TG_LOOP_MAILBOX; i++)
            assert_int_equal(tg_loop_post(NULL, b, ud, 1000 * lap + i), 1);
        assert_int_equal(tg_loop_post(NULL, b, ud, -1), 0);
        drive_n(b, base + TG_LOOP_MAILBOX);
        for (int i = 0; i < TG_LOOP_MAILBOX; i++)
            assert_int_equal(g_sink.d[base + (unsigned)i].res, 1000 * lap + i);
        if (lap == 0)
            g_sink.n = 0; // keep within MAX_DELIVERIES
    }
    fixture_cleanup(&fb);
}

struct producer {
    struct tg_loop *to;
    uint64_t ud;
    int count;
    int sent;
    int refused; // times the mailbox was full
};

static void *producer_main(void *arg) {
    struct producer *p = arg;
    const uint64_t end = mono_ms() + WAIT_MS;
    for (int i = 0; i < p->count && mono_ms() < end;) {
        if (tg_loop_post(NULL, p->to, p->ud, i)) {
            i++;
            p->sent = i;
        } else {
            p->refused++;
            struct timespec ts = {.tv_sec = 0, .tv_nsec = 200000};
            nanosleep(&ts, NULL);
        }
    }
    return NULL;
}

static void test_mailbox_from_thread(void **state) {
    (void)state;
    require_uring();
    struct fixture fb;
    fixture_init(&fb, -1);
    uint32_t slot;
    assert_non_null(tg_slab_alloc(&fb.slab, &slot));
    struct producer p = {.to = &fb.loop,
                         .ud = tg_ud(K_TEST, OP_MSG, slot, tg_slab_gen(&fb.slab, slot)),
                         .count = 900};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, producer_main, &p), 0);
    struct until w = {.u = &g_sink.n, .u_min = (unsigned)p.count};
    int ok = drive(&fb.loop, &w);
    pthread_join(th, NULL);
    if (!ok)
        fail_msg("%u of %d messages from another thread arrived (%d sent)", g_sink.n, p.count,
                 p.sent);
    for (int i = 0; i < p.count; i++)
        assert_int_equal(g_sink.d[i].res, i); // one producer: in order
    fixture_cleanup(&fb);
}

// A loop owned by another thread posts to ours with MSG_RING (the way workers talk).
struct xposter {
    struct tg_loop *to;
    uint64_t ud;
    int count;
    _Atomic int state; // 0 starting, 1 posting, -1 no loop, -2 no MSG_RING, 2 all posted
    _Atomic int stop;
    int posted;
    char err[256];
};

static void *xposter_main(void *arg) {
    struct xposter *x = arg;
    struct tg_loop a;
    if (!tg_loop_init(&a, 64, 256, x->err, sizeof(x->err))) {
        atomic_store(&x->state, -1);
        return NULL;
    }
    tg_loop_start(&a, TICK_MS, NULL, NULL, NULL);
    if (!a.has_msg_ring) {
        tg_loop_cleanup(&a);
        atomic_store(&x->state, -2);
        return NULL;
    }
    atomic_store(&x->state, 1);
    for (int i = 0; i < x->count; i++) {
        if (!tg_loop_post(&a, x->to, x->ud, i))
            break;
        x->posted = i + 1;
        if ((i & 15) == 15 && tg_loop_run_once(&a) != 1)
            break;
    }
    atomic_store(&x->state, 2);
    // Keep driving |a| (it alone submits its ring) until the owner of |to| has seen it all.
    const uint64_t end = mono_ms() + WAIT_MS;
    while (!atomic_load(&x->stop) && mono_ms() < end)
        if (tg_loop_run_once(&a) != 1)
            break;
    tg_loop_cleanup(&a);
    return NULL;
}

static void test_post_msg_ring_other_thread(void **state) {
    (void)state;
    require_uring();
    struct fixture fb;
    fixture_init(&fb, -1);
    uint32_t slot;
    assert_non_null(tg_slab_alloc(&fb.slab, &slot));
    static struct xposter x;
    memset(&x, 0, sizeof(x));
    x.to = &fb.loop;
    x.ud = tg_ud(K_TEST, OP_MSG, slot, tg_slab_gen(&fb.slab, slot));
    x.count = 500;
    atomic_init(&x.state, 0);
    atomic_init(&x.stop, 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, xposter_main, &x), 0);
    const uint64_t end = mono_ms() + WAIT_MS;
    while (atomic_load(&x.state) == 0 && mono_ms() < end) {
        struct timespec ts = {.tv_sec = 0, .tv_nsec = 1000000};
        nanosleep(&ts, NULL);
    }
    const int st = atomic_load(&x.state);
    int ok = 1;
    if (st > 0) {
        struct until w = {.u = &g_sink.n, .u_min = (unsigned)x.count};
        ok = drive(&fb.loop, &w);
    }
    atomic_store(&x.stop, 1);
    pthread_join(th, NULL);
    if (st == -1)
        fail_msg("tg_loop_init on another thread: %s", x.err);
    if (st == -2) {
        fixture_cleanup(&fb);
        print_message("IORING_OP_MSG_RING not supported by this kernel: test skipped\n");
        skip();
    }
    if (!ok)
        fail_msg("%u of %d MSG_RING messages from another thread arrived (%d posted)", g_sink.n,
                 x.count, x.posted);
    assert_int_equal(x.posted, x.count);
    assert_int_equal(atomic_load(&fb.loop.mb_tail), 0); // MSG_RING, not the mailbox
    static unsigned seen[500];
    memset(seen, 0, sizeof(seen));
    for (unsigned i = 0; i < g_sink.n; i++) {
        assert_int_equal(g_sink.d[i].op, OP_MSG);
        assert_true(g_sink.d[i].res >= 0 && g_sink.d[i].res < x.count);
        seen[g_sink.d[i].res]++;
    }
    for (int i = 0; i < x.count; i++)
        assert_int_equal(seen[i], 1);
    fixture_cleanup(&fb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slab),
        cmocka_unit_test(test_ud_round_trip),
        cmocka_unit_test(test_dispatch_nop),
        cmocka_unit_test(test_sqe_refill),
        cmocka_unit_test(test_stale_not_delivered),
        cmocka_unit_test(test_bufgroup_params),
        cmocka_unit_test(test_bufgroup_recv),
        cmocka_unit_test(test_stale_recv_returns_buffer),
        cmocka_unit_test(test_send_addr),
        cmocka_unit_test(test_tick),
        cmocka_unit_test(test_wake),
        cmocka_unit_test(test_post_msg_ring),
        cmocka_unit_test(test_post_msg_ring_other_thread),
        cmocka_unit_test(test_post_mailbox),
        cmocka_unit_test(test_mailbox_full),
        cmocka_unit_test(test_mailbox_from_thread),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
