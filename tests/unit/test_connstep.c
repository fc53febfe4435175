// Unit tests of the connection step decision (proxy/connstep.c): a table of views and the
// action due for each, invariants over random views, and whole steps run on a simulated
// connection the way proxy/conn.c's tg_conn_step applies each action.
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "tlsgate/conn.h"

#define CAP 100u
#define CLOSE_NOTIFY 31u // bytes SSL_shutdown queues (the simulation's stand-in)

// Short names for the flags.
#define TRECV TG_F_TLS_RECV
#define TRECVC TG_F_TLS_RECV_CANCEL
#define PRECV TG_F_PLAIN_RECV
#define PRECVC TG_F_PLAIN_RECV_CANCEL
#define TSEND TG_F_TLS_SENDING
#define PSEND TG_F_PLAIN_SENDING
#define TEOF TG_F_TLS_RD_EOF
#define PEOF TG_F_PLAIN_RD_EOF
#define SHUT TG_F_TLS_SHUT_SENT
#define TWD TG_F_TLS_WR_DONE
#define PWD TG_F_PLAIN_WR_DONE
#define PUP TG_F_PLAIN_UP
#define TUP TG_F_TLS_UP
#define TCPEOF TG_F_TCP_EOF
#define FATAL TG_F_FATAL_FLUSH
#define UP (TUP | PUP)
#define RECVS (TRECV | PRECV)
#define DONE4 (TEOF | PEOF | TWD | PWD)

#define HS TG_CS_HANDSHAKE
#define OPEN TG_CS_OPEN

struct row {
    const char *what;
    uint8_t state;
    uint32_t flags;
    uint32_t to_tls, to_plain, pend_tls, pend_plain, cap;
    uint8_t wait_pbx, wait_prov;
    enum tg_conn_action want;
};

static const struct row k_rows[] = {
    // --- NONE ---
    {"free slot", TG_CS_FREE, 0, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"closing", TG_CS_CLOSING, 0, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"open, steady", OPEN, UP | RECVS, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"connecting, nothing up", TG_CS_CONNECTING, 0, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"connecting: no TLS recv before the handshake", TG_CS_CONNECTING, UP, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},

    // --- TLS_SHUTDOWN ---
    {"plain EOF: close_notify", OPEN, UP | RECVS | PEOF, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_TLS_SHUTDOWN},
    {"plain EOF: close_notify before sending what is queued", OPEN, UP | RECVS | PEOF, 10, 0, 0, 0,
     CAP, 0, 0, TG_ACT_TLS_SHUTDOWN},
    {"plain EOF, even while a TLS send is in flight", OPEN, UP | TRECV | PEOF | TSEND, 10, 0, 0, 0,
     CAP, 0, 0, TG_ACT_TLS_SHUTDOWN},
    {"plain EOF, pend_plain not sealed yet: no shutdown", OPEN, UP | TRECV | PEOF, 0, 0, 0, 5, CAP,
     0, 0, TG_ACT_NONE},
    {"plain EOF, SIP message waits toward the provider: no shutdown", OPEN, UP | TRECV | PEOF, 0, 0,
     0, 0, CAP, 1, 0, TG_ACT_NONE},
    {"plain EOF, sip_wait_prov does not hold the shutdown", OPEN, UP | TRECV | PEOF, 0, 0, 0, 0,
     CAP, 0, 1, TG_ACT_TLS_SHUTDOWN},
    {"plain EOF, shutdown already sent and done: not again", OPEN, UP | TRECV | PEOF | SHUT | TWD,
     0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"plain EOF during the handshake: no shutdown", HS, UP | TRECV | PEOF, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},

    // --- SEND_TLS ---
    {"ciphertext queued", OPEN, UP | RECVS, 10, 0, 0, 0, CAP, 0, 0, TG_ACT_SEND_TLS},
    {"ciphertext queued, send in flight: no second send", OPEN, UP | RECVS | TSEND, 10, 0, 0, 0,
     CAP, 0, 0, TG_ACT_NONE},
    {"ClientHello during the handshake", HS, UP, 200, 0, 0, 0, CAP, 0, 0, TG_ACT_SEND_TLS},
    {"TLS socket not connected: no send", TG_CS_CONNECTING, PUP, 10, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"TLS send before plain send", OPEN, UP | RECVS, 10, 10, 0, 0, CAP, 0, 0, TG_ACT_SEND_TLS},
    {"fatal flush: the close_notify goes out", HS, TUP | FATAL | SHUT, 7, 0, 0, 0, CAP, 0, 0,
     TG_ACT_SEND_TLS},

    // --- SEND_PLAIN ---
    {"plaintext queued", OPEN, UP | RECVS, 0, 10, 0, 0, CAP, 0, 0, TG_ACT_SEND_PLAIN},
    {"plain send while a TLS send is in flight", OPEN, UP | RECVS | TSEND, 10, 10, 0, 0, CAP, 0, 0,
     TG_ACT_SEND_PLAIN},
    {"plaintext queued, send in flight: no second send", OPEN, UP | RECVS | PSEND, 0, 10, 0, 0, CAP,
     0, 0, TG_ACT_NONE},
    {"plain side shut for writing: no send", OPEN, UP | RECVS | PWD, 0, 10, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"backend not connected yet: no plain send", OPEN, TUP | TRECV, 0, 10, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},

    // --- CLOSE_FLUSHED ---
    {"fatal flush done", HS, TUP | FATAL | SHUT, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_CLOSE_FLUSHED},
    {"fatal flush done (open)", OPEN, UP | FATAL | SHUT | PEOF | PWD, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_CLOSE_FLUSHED},
    {"fatal flush, close_notify in flight: not yet", HS, TUP | FATAL | SHUT | TSEND, 7, 0, 0, 0,
     CAP, 0, 0, TG_ACT_NONE},
    {"fatal flush, sent but not completed: not yet", HS, TUP | FATAL | SHUT | TSEND, 0, 0, 0, 0,
     CAP, 0, 0, TG_ACT_NONE},
    {"fatal flush, already shut: no close_flushed", HS, TUP | FATAL | SHUT | TWD, 0, 0, 0, 0, CAP,
     0, 0, TG_ACT_NONE},

    // --- TLS_WR_SHUT ---
    {"close_notify sent: SHUT_WR", OPEN, UP | TRECV | PEOF | SHUT, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_TLS_WR_SHUT},
    {"close_notify still in flight: no SHUT_WR", OPEN, UP | TRECV | PEOF | SHUT | TSEND, 0, 0, 0, 0,
     CAP, 0, 0, TG_ACT_NONE},
    {"close_notify still queued: send first", OPEN, UP | TRECV | PEOF | SHUT, 31, 0, 0, 0, CAP, 0,
     0, TG_ACT_SEND_TLS},
    {"SHUT_WR done: not again", OPEN, UP | TRECV | PEOF | SHUT | TWD, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"no close_notify: no SHUT_WR", OPEN, UP | RECVS, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},

    // --- PLAIN_WR_SHUT ---
    {"TLS EOF, plain queue empty: FIN to the PBX", OPEN, UP | PRECV | TEOF, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_PLAIN_WR_SHUT},
    {"TLS EOF, plain send in flight: not yet", OPEN, UP | PRECV | TEOF | PSEND, 0, 10, 0, 0, CAP, 0,
     0, TG_ACT_NONE},
    {"TLS EOF, pend_tls not decrypted: not yet", OPEN, UP | PRECV | TEOF, 0, 0, 5, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"TLS EOF, SIP message waits toward the PBX: not yet", OPEN, UP | PRECV | TEOF, 0, 0, 0, 0, CAP,
     0, 1, TG_ACT_NONE},
    {"TLS EOF, sip_wait_pbx does not hold the FIN", OPEN, UP | PRECV | TEOF, 0, 0, 0, 0, CAP, 1, 0,
     TG_ACT_PLAIN_WR_SHUT},
    {"TLS EOF, already shut: not again", OPEN, UP | PRECV | TEOF | PWD, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"TLS EOF, no plain socket: no FIN", OPEN, TUP | TEOF, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"TCP FIN alone is not a TLS EOF: no FIN", OPEN, UP | PRECV | TRECV | TCPEOF, 0, 0, 0, 0, CAP,
     0, 0, TG_ACT_CANCEL_TLS_RECV},

    // --- CLOSE_FINISHED ---
    {"all four directions done", OPEN, UP | DONE4 | SHUT, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_CLOSE_FINISHED},
    {"all done, with receives still armed", OPEN, UP | RECVS | DONE4 | SHUT, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_CLOSE_FINISHED},
    {"finished needs TLS_RD_EOF", OPEN, UP | TRECV | PEOF | TWD | PWD | SHUT, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"finished needs PLAIN_RD_EOF", OPEN, UP | TEOF | TWD | PWD | SHUT, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"finished needs TLS_WR_DONE", OPEN, UP | TEOF | PEOF | PWD | SHUT | TSEND, 5, 0, 0, 0, CAP, 0,
     0, TG_ACT_NONE},
    {"finished needs PLAIN_WR_DONE", OPEN, UP | TEOF | PEOF | TWD | SHUT | PSEND, 0, 5, 0, 0, CAP,
     0, 0, TG_ACT_NONE},

    // --- ARM_TLS_RECV ---
    {"handshake: TLS recv", HS, TUP, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_ARM_TLS_RECV},
    {"open: TLS recv first", OPEN, UP, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_ARM_TLS_RECV},
    {"to_plain below the cap: TLS recv", OPEN, UP | PRECV | PSEND, 0, CAP - 1, 0, 0, CAP, 0, 0,
     TG_ACT_ARM_TLS_RECV},
    {"to_plain at the cap: no TLS recv", OPEN, UP | PRECV | PSEND, 0, CAP, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"pend_tls non-empty: no TLS recv", OPEN, UP | PRECV, 0, 0, 1, 0, CAP, 0, 0, TG_ACT_NONE},
    {"TLS EOF: no TLS recv", OPEN, UP | PRECV | TEOF | PWD, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"TCP FIN: no TLS recv", OPEN, UP | PRECV | TCPEOF, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"fatal flush: no TLS recv", HS, TUP | FATAL | SHUT | TSEND, 5, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"TLS socket not up: no TLS recv", OPEN, PUP | PRECV, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"wanted again while a cancel is in flight: wait for it", OPEN, UP | PRECV | TRECV | TRECVC, 0,
     0, 0, 0, CAP, 0, 0, TG_ACT_NONE},

    // --- CANCEL_TLS_RECV ---
    {"pend_tls non-empty: cancel the TLS recv", OPEN, UP | RECVS, 0, 0, 1, 0, CAP, 0, 0,
     TG_ACT_CANCEL_TLS_RECV},
    {"... only once", OPEN, UP | RECVS | TRECVC, 0, 0, 1, 0, CAP, 0, 0, TG_ACT_NONE},
    {"to_plain at the cap: cancel the TLS recv", OPEN, UP | RECVS | PSEND, 0, CAP, 0, 0, CAP, 0, 0,
     TG_ACT_CANCEL_TLS_RECV},
    {"to_plain over the cap: cancel only once", OPEN, UP | RECVS | PSEND | TRECVC, 0, CAP + 5, 0, 0,
     CAP, 0, 0, TG_ACT_NONE},
    {"fatal flush: cancel the TLS recv", HS, TUP | TRECV | FATAL | SHUT | TSEND, 5, 0, 0, 0, CAP, 0,
     0, TG_ACT_CANCEL_TLS_RECV},
    {"TLS EOF with the recv still armed: cancel", OPEN, UP | RECVS | TEOF | PSEND, 0, 5, 0, 0, CAP,
     0, 0, TG_ACT_CANCEL_TLS_RECV},
    {"TLS recv cancel before plain recv arm", OPEN, UP | TRECV, 0, 0, 1, 0, CAP, 0, 0,
     TG_ACT_CANCEL_TLS_RECV},

    // --- ARM_PLAIN_RECV ---
    {"open, TLS recv armed: plain recv", OPEN, UP | TRECV, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_ARM_PLAIN_RECV},
    {"to_tls below the cap: plain recv", OPEN, UP | TRECV | TSEND, CAP - 1, 0, 0, 0, CAP, 0, 0,
     TG_ACT_ARM_PLAIN_RECV},
    {"to_tls at the cap: no plain recv", OPEN, UP | TRECV | TSEND, CAP, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"pend_plain non-empty: no plain recv", OPEN, UP | TRECV, 0, 0, 0, 1, CAP, 0, 0, TG_ACT_NONE},
    {"handshake: no plain recv", HS, UP | TRECV, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"plain EOF: no plain recv", OPEN, UP | TRECV | PEOF | SHUT | TWD, 0, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"close_notify sent: no plain recv", OPEN, UP | TRECV | SHUT | TSEND, 5, 0, 0, 0, CAP, 0, 0,
     TG_ACT_NONE},
    {"plain socket not up: no plain recv", OPEN, TUP | TRECV, 0, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},

    // --- CANCEL_PLAIN_RECV ---
    {"to_tls at the cap: cancel the plain recv", OPEN, UP | RECVS | TSEND, CAP, 0, 0, 0, CAP, 0, 0,
     TG_ACT_CANCEL_PLAIN_RECV},
    {"... only once", OPEN, UP | RECVS | TSEND | PRECVC, CAP, 0, 0, 0, CAP, 0, 0, TG_ACT_NONE},
    {"pend_plain non-empty: cancel the plain recv", OPEN, UP | RECVS, 0, 0, 0, 3, CAP, 0, 0,
     TG_ACT_CANCEL_PLAIN_RECV},
    {"close_notify sent: cancel the plain recv", OPEN, UP | RECVS | SHUT | TSEND, 5, 0, 0, 0, CAP,
     0, 0, TG_ACT_CANCEL_PLAIN_RECV},
    {"fatal flush: cancel the plain recv", OPEN, UP | PRECV | FATAL | SHUT | PEOF | PWD | TSEND, 5,
     0, 0, 0, CAP, 0, 0, TG_ACT_CANCEL_PLAIN_RECV},
};

static struct tg_conn_view view_of_row(const struct row *r) {
    struct tg_conn_view v;
    memset(&v, 0, sizeof(v));
    v.state = r->state;
    v.flags = r->flags;
    v.to_tls = r->to_tls;
    v.to_plain = r->to_plain;
    v.pend_tls = r->pend_tls;
    v.pend_plain = r->pend_plain;
    v.cap = r->cap;
    v.sip_wait_pbx = r->wait_pbx;
    v.sip_wait_prov = r->wait_prov;
    return v;
}

static void test_table(void **state) {
    (void)state;
    unsigned bad = 0;
    int seen[TG_ACT_CANCEL_PLAIN_RECV + 1] = {0};
    for (size_t i = 0; i < sizeof(k_rows) / sizeof(k_rows[0]); i++) {
        const struct row *r = &k_rows[i];
        struct tg_conn_view v = view_of_row(r);
        enum tg_conn_action got = tg_conn_decide(&v);
        if (got != r->want) {
            print_error("row %zu \"%s\": got %s, expected %s\n", i, r->what,
                        tg_conn_action_name(got), tg_conn_action_name(r->want));
            bad++;
        }
        seen[r->want]++;
    }
    // The table covers every action.
    for (int a = 0; a <= TG_ACT_CANCEL_PLAIN_RECV; a++) {
        if (seen[a] == 0) {
            print_error("no row expects %s\n", tg_conn_action_name((enum tg_conn_action)a));
            bad++;
        }
    }
    assert_int_equal(bad, 0);
}

static void test_action_names(void **state) {
    (void)state;
    static const char *const want[] = {
        "none",          "tls_shutdown",    "send_tls",       "send_plain",
        "close_flushed", "tls_wr_shut",     "plain_wr_shut",  "close_finished",
        "arm_tls_recv",  "cancel_tls_recv", "arm_plain_recv", "cancel_plain_recv",
    };
    for (int a = 0; a <= TG_ACT_CANCEL_PLAIN_RECV; a++)
        assert_string_equal(tg_conn_action_name((enum tg_conn_action)a), want[a]);
    assert_string_equal(tg_conn_action_name((enum tg_conn_action)(TG_ACT_CANCEL_PLAIN_RECV + 1)),
                        "?");
    assert_string_equal(tg_conn_action_name((enum tg_conn_action) - 1), "?");
}

// --- The step, simulated -------------------------------------------------------------------

#define MAX_STEP_ACTIONS 16

static int is_close(enum tg_conn_action a) {
    return a == TG_ACT_CLOSE_FLUSHED || a == TG_ACT_CLOSE_FINISHED;
}

// apply does to |v| what tg_conn_step does to the connection for |a|.
static void apply(struct tg_conn_view *v, enum tg_conn_action a) {
    switch (a) {
    case TG_ACT_NONE:
        break;
    case TG_ACT_TLS_SHUTDOWN:
        v->flags |= TG_F_TLS_SHUT_SENT;
        v->to_tls += CLOSE_NOTIFY;
        break;
    case TG_ACT_SEND_TLS:
        v->flags |= TG_F_TLS_SENDING;
        break;
    case TG_ACT_SEND_PLAIN:
        v->flags |= TG_F_PLAIN_SENDING;
        break;
    case TG_ACT_CLOSE_FLUSHED:
    case TG_ACT_CLOSE_FINISHED:
        v->state = TG_CS_CLOSING;
        break;
    case TG_ACT_TLS_WR_SHUT:
        v->flags |= TG_F_TLS_WR_DONE;
        break;
    case TG_ACT_PLAIN_WR_SHUT:
        v->flags |= TG_F_PLAIN_WR_DONE;
        break;
    case TG_ACT_ARM_TLS_RECV:
        v->flags |= TG_F_TLS_RECV;
        break;
    case TG_ACT_CANCEL_TLS_RECV:
        v->flags |= TG_F_TLS_RECV_CANCEL;
        break;
    case TG_ACT_ARM_PLAIN_RECV:
        v->flags |= TG_F_PLAIN_RECV;
        break;
    case TG_ACT_CANCEL_PLAIN_RECV:
        v->flags |= TG_F_PLAIN_RECV_CANCEL;
        break;
    }
}

// step runs the decision to completion on |v| (TG_ACT_NONE or a close), recording the actions
// in |out| (the last one being NONE or the close). Returns how many, 0 when it did not end
// within MAX_STEP_ACTIONS.
static unsigned step(struct tg_conn_view *v, enum tg_conn_action *out) {
    for (unsigned n = 0; n < MAX_STEP_ACTIONS; n++) {
        enum tg_conn_action a = tg_conn_decide(v);
        out[n] = a;
        apply(v, a);
        if (a == TG_ACT_NONE || is_close(a))
            return n + 1;
    }
    return 0;
}

static void format_seq(char *buf, size_t len, const enum tg_conn_action *s, unsigned n) {
    size_t off = 0;
    buf[0] = 0;
    for (unsigned i = 0; i < n && off < len; i++) {
        int w = snprintf(buf + off, len - off, "%s%s", i ? "," : "", tg_conn_action_name(s[i]));
        if (w < 0)
            break;
        off += (size_t)w;
    }
}

// expect_step runs one step and asserts the sequence of actions it took.
static void expect_step(const char *what, struct tg_conn_view *v, const enum tg_conn_action *want,
                        unsigned want_n) {
    enum tg_conn_action got[MAX_STEP_ACTIONS];
    unsigned n = step(v, got);
    int ok = n == want_n;
    for (unsigned i = 0; ok && i < n; i++)
        ok = got[i] == want[i];
    if (!ok) {
        char g[512], w[512];
        format_seq(g, sizeof(g), got, n ? n : MAX_STEP_ACTIONS);
        format_seq(w, sizeof(w), want, want_n);
        print_error("%s: got [%s]%s, expected [%s]\n", what, g, n ? "" : " (did not end)", w);
    }
    assert_true(ok);
}

#define EXPECT_STEP(what, v, ...)                                                                  \
    do {                                                                                           \
        static const enum tg_conn_action want_[] = {__VA_ARGS__};                                  \
        expect_step(what, v, want_, sizeof(want_) / sizeof(want_[0]));                             \
    } while (0)

// Completions, as conn.c's handlers record them.
static void tls_send_done(struct tg_conn_view *v) {
    v->flags &= ~TG_F_TLS_SENDING;
    v->to_tls = 0;
}
static void plain_send_done(struct tg_conn_view *v) {
    v->flags &= ~TG_F_PLAIN_SENDING;
    v->to_plain = 0;
}
static void tls_recv_ended(struct tg_conn_view *v) {
    v->flags &= ~(TG_F_TLS_RECV | TG_F_TLS_RECV_CANCEL);
}
static void plain_recv_ended(struct tg_conn_view *v) {
    v->flags &= ~(TG_F_PLAIN_RECV | TG_F_PLAIN_RECV_CANCEL);
}

static struct tg_conn_view fresh(uint8_t st, uint32_t flags) {
    struct tg_conn_view v;
    memset(&v, 0, sizeof(v));
    v.state = st;
    v.flags = flags;
    v.cap = CAP;
    return v;
}

static void test_run_fresh_open(void **state) {
    (void)state;
    // A connection that just opened arms both receives, the TLS one first; then rests.
    struct tg_conn_view v = fresh(OPEN, UP);
    EXPECT_STEP("fresh open", &v, TG_ACT_ARM_TLS_RECV, TG_ACT_ARM_PLAIN_RECV, TG_ACT_NONE);
    assert_int_equal(v.flags, UP | RECVS);
    EXPECT_STEP("fresh open, again", &v, TG_ACT_NONE);

    // An outbound handshake: the ClientHello goes out, the TLS receive is armed, no plain one.
    v = fresh(HS, UP);
    v.to_tls = 250;
    EXPECT_STEP("client hello", &v, TG_ACT_SEND_TLS, TG_ACT_ARM_TLS_RECV, TG_ACT_NONE);
    tls_send_done(&v);
    EXPECT_STEP("client hello sent", &v, TG_ACT_NONE);
    v.state = OPEN; // handshake done
    EXPECT_STEP("handshake done", &v, TG_ACT_ARM_PLAIN_RECV, TG_ACT_NONE);
}

static void test_run_half_close_plain(void **state) {
    (void)state;
    struct tg_conn_view v = fresh(OPEN, UP | RECVS);
    // The PBX closes: its multishot recv ends with res 0.
    plain_recv_ended(&v);
    v.flags |= TG_F_PLAIN_RD_EOF;
    EXPECT_STEP("plain EOF", &v, TG_ACT_TLS_SHUTDOWN, TG_ACT_SEND_TLS, TG_ACT_NONE);
    assert_int_equal(v.to_tls, CLOSE_NOTIFY);
    assert_true(v.flags & TG_F_TLS_SHUT_SENT);
    // Nothing more until the close_notify has gone out; the TLS side still reads.
    EXPECT_STEP("close_notify in flight", &v, TG_ACT_NONE);
    tls_send_done(&v);
    EXPECT_STEP("close_notify sent", &v, TG_ACT_TLS_WR_SHUT, TG_ACT_NONE);
    // The provider answers with its close_notify: TLS EOF; the FIN to the PBX ends it all.
    v.flags |= TG_F_TLS_RD_EOF;
    EXPECT_STEP("TLS EOF", &v, TG_ACT_PLAIN_WR_SHUT, TG_ACT_CLOSE_FINISHED);
    assert_int_equal(v.state, TG_CS_CLOSING);

    // The same with plaintext still waiting to be sealed: nothing until it is.
    v = fresh(OPEN, UP | TRECV | TG_F_PLAIN_RD_EOF);
    v.pend_plain = 40;
    EXPECT_STEP("plain EOF, pend_plain", &v, TG_ACT_NONE);
    v.pend_plain = 0;
    v.to_tls = 60; // sealed
    EXPECT_STEP("plain EOF, sealed", &v, TG_ACT_TLS_SHUTDOWN, TG_ACT_SEND_TLS, TG_ACT_NONE);
    assert_int_equal(v.to_tls, 60 + CLOSE_NOTIFY);
}

static void test_run_half_close_tls(void **state) {
    (void)state;
    struct tg_conn_view v = fresh(OPEN, UP | RECVS);
    // The provider's close_notify arrives with 20 bytes of data before it.
    v.to_plain = 20;
    v.flags |= TG_F_TLS_RD_EOF;
    EXPECT_STEP("TLS EOF, data", &v, TG_ACT_SEND_PLAIN, TG_ACT_CANCEL_TLS_RECV, TG_ACT_NONE);
    EXPECT_STEP("TLS EOF, data in flight", &v, TG_ACT_NONE); // cancel only once
    tls_recv_ended(&v);
    plain_send_done(&v);
    EXPECT_STEP("TLS EOF, data sent", &v, TG_ACT_PLAIN_WR_SHUT, TG_ACT_NONE);
    // The PBX closes too.
    plain_recv_ended(&v);
    v.flags |= TG_F_PLAIN_RD_EOF;
    EXPECT_STEP("both EOF", &v, TG_ACT_TLS_SHUTDOWN, TG_ACT_SEND_TLS, TG_ACT_NONE);
    tls_send_done(&v);
    EXPECT_STEP("both EOF, close_notify sent", &v, TG_ACT_TLS_WR_SHUT, TG_ACT_CLOSE_FINISHED);
}

static void test_run_fatal_flush(void **state) {
    (void)state;
    // The plain side failed on an open connection: tg_conn_fatal marks the plain side done,
    // queues our close_notify and steps.
    struct tg_conn_view v = fresh(OPEN, UP | RECVS);
    plain_recv_ended(&v); // the failing recv
    v.flags |= TG_F_FATAL_FLUSH | TG_F_PLAIN_RD_EOF | TG_F_PLAIN_WR_DONE | TG_F_TLS_SHUT_SENT;
    v.to_tls = CLOSE_NOTIFY;
    EXPECT_STEP("fatal", &v, TG_ACT_SEND_TLS, TG_ACT_CANCEL_TLS_RECV, TG_ACT_NONE);
    EXPECT_STEP("fatal, close_notify in flight", &v, TG_ACT_NONE);
    tls_recv_ended(&v); // the cancel completes first
    EXPECT_STEP("fatal, recv cancelled", &v, TG_ACT_NONE);
    tls_send_done(&v);
    EXPECT_STEP("fatal, flushed", &v, TG_ACT_CLOSE_FLUSHED);

    // A failed handshake whose alert is queued (tg_conn_handshake_failed).
    v = fresh(HS, UP | TRECV | TG_F_FATAL_FLUSH | TG_F_TLS_SHUT_SENT);
    v.to_tls = 7;
    EXPECT_STEP("alert", &v, TG_ACT_SEND_TLS, TG_ACT_CANCEL_TLS_RECV, TG_ACT_NONE);
    tls_send_done(&v);
    EXPECT_STEP("alert sent", &v, TG_ACT_CLOSE_FLUSHED);
}

static void test_run_backpressure(void **state) {
    (void)state;
    struct tg_conn_view v = fresh(OPEN, UP | RECVS);
    // The PBX is slow: to_plain fills up to the cap while a send is in flight.
    v.to_plain = CAP;
    v.flags |= TG_F_PLAIN_SENDING;
    EXPECT_STEP("to_plain full", &v, TG_ACT_CANCEL_TLS_RECV, TG_ACT_NONE);
    EXPECT_STEP("to_plain full, again", &v, TG_ACT_NONE);
    tls_recv_ended(&v);
    EXPECT_STEP("TLS recv cancelled", &v, TG_ACT_NONE);
    plain_send_done(&v);
    EXPECT_STEP("to_plain drained", &v, TG_ACT_ARM_TLS_RECV, TG_ACT_NONE);

    // The provider is slow: to_tls at the cap.
    v.to_tls = CAP;
    v.flags |= TG_F_TLS_SENDING;
    EXPECT_STEP("to_tls full", &v, TG_ACT_CANCEL_PLAIN_RECV, TG_ACT_NONE);
    plain_recv_ended(&v);
    tls_send_done(&v);
    EXPECT_STEP("to_tls drained", &v, TG_ACT_ARM_PLAIN_RECV, TG_ACT_NONE);
}

// A small deterministic generator (xorshift32).
static uint32_t rnd(uint32_t *s) {
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *s = x;
    return x;
}

static uint32_t pick_len(uint32_t *s) {
    static const uint32_t lens[] = {0, 0, 1, CAP - 1, CAP, CAP + 7};
    return lens[rnd(s) % (sizeof(lens) / sizeof(lens[0]))];
}

// check_invariants asserts, for one decision, the conditions under which it must not be taken.
static int check_invariants(const struct tg_conn_view *v, enum tg_conn_action a) {
    const uint32_t f = v->flags;
    switch (a) {
    case TG_ACT_NONE:
        return 1;
    case TG_ACT_TLS_SHUTDOWN:
        return v->state == TG_CS_OPEN && (f & TG_F_PLAIN_RD_EOF) && v->pend_plain == 0 &&
               !v->sip_wait_pbx && !(f & TG_F_TLS_SHUT_SENT);
    case TG_ACT_SEND_TLS:
        return (f & TG_F_TLS_UP) && v->to_tls > 0 && !(f & TG_F_TLS_SENDING);
    case TG_ACT_SEND_PLAIN:
        return (f & TG_F_PLAIN_UP) && v->to_plain > 0 &&
               !(f & (TG_F_PLAIN_SENDING | TG_F_PLAIN_WR_DONE));
    case TG_ACT_CLOSE_FLUSHED:
        return (f & TG_F_FATAL_FLUSH) && (f & TG_F_TLS_SHUT_SENT) && !(f & TG_F_TLS_SENDING) &&
               v->to_tls == 0;
    case TG_ACT_TLS_WR_SHUT:
        return !(f & TG_F_FATAL_FLUSH) && (f & TG_F_TLS_SHUT_SENT) && !(f & TG_F_TLS_SENDING) &&
               v->to_tls == 0 && !(f & TG_F_TLS_WR_DONE);
    case TG_ACT_PLAIN_WR_SHUT:
        return (f & TG_F_TLS_RD_EOF) && (f & TG_F_PLAIN_UP) && !(f & TG_F_PLAIN_SENDING) &&
               v->to_plain == 0 && v->pend_tls == 0 && !v->sip_wait_prov &&
               !(f & TG_F_PLAIN_WR_DONE);
    case TG_ACT_CLOSE_FINISHED:
        return (f & DONE4) == DONE4;
    case TG_ACT_ARM_TLS_RECV:
        return !(f & TG_F_TLS_RECV) && (f & TG_F_TLS_UP) && v->pend_tls == 0 &&
               v->to_plain < v->cap && !(f & (TG_F_TLS_RD_EOF | TG_F_TCP_EOF | TG_F_FATAL_FLUSH)) &&
               (v->state == TG_CS_HANDSHAKE || v->state == TG_CS_OPEN);
    case TG_ACT_CANCEL_TLS_RECV:
        return (f & TG_F_TLS_RECV) && !(f & TG_F_TLS_RECV_CANCEL);
    case TG_ACT_ARM_PLAIN_RECV:
        return !(f & TG_F_PLAIN_RECV) && (f & TG_F_PLAIN_UP) && v->state == TG_CS_OPEN &&
               v->pend_plain == 0 && v->to_tls < v->cap &&
               !(f & (TG_F_PLAIN_RD_EOF | TG_F_TLS_SHUT_SENT));
    case TG_ACT_CANCEL_PLAIN_RECV:
        return (f & TG_F_PLAIN_RECV) && !(f & TG_F_PLAIN_RECV_CANCEL);
    }
    return 0;
}

static void test_random_views_terminate(void **state) {
    (void)state;
    uint32_t seed = 0x2545f491u;
    unsigned counts[TG_ACT_CANCEL_PLAIN_RECV + 1] = {0};
    for (unsigned i = 0; i < 200000; i++) {
        struct tg_conn_view v;
        memset(&v, 0, sizeof(v));
        v.state = (uint8_t)(rnd(&seed) % 5);
        v.flags = rnd(&seed) & ((1u << 18) - 1);
        v.to_tls = pick_len(&seed);
        v.to_plain = pick_len(&seed);
        v.pend_tls = pick_len(&seed);
        v.pend_plain = pick_len(&seed);
        v.cap = CAP;
        v.sip_wait_pbx = (rnd(&seed) % 4) == 0;
        v.sip_wait_prov = (rnd(&seed) % 4) == 0;
        const struct tg_conn_view start = v;

        enum tg_conn_action seq[MAX_STEP_ACTIONS];
        unsigned n = 0;
        int ended = 0;
        while (n < MAX_STEP_ACTIONS) {
            enum tg_conn_action a = tg_conn_decide(&v);
            seq[n++] = a;
            counts[a]++;
            if (!check_invariants(&v, a)) {
                print_error("view %u (state %u flags 0x%x q %u/%u/%u/%u sip %u/%u): %s not due\n",
                            i, v.state, v.flags, v.to_tls, v.to_plain, v.pend_tls, v.pend_plain,
                            v.sip_wait_pbx, v.sip_wait_prov, tg_conn_action_name(a));
                fail();
            }
            // No action is taken twice in one step: each one's effect ends its cause.
            for (unsigned k = 0; k + 1 < n; k++) {
                if (seq[k] == a && a != TG_ACT_NONE) {
                    char s[512];
                    format_seq(s, sizeof(s), seq, n);
                    print_error("view %u: %s twice: [%s]\n", i, tg_conn_action_name(a), s);
                    fail();
                }
            }
            if (a == TG_ACT_NONE || is_close(a)) {
                ended = 1;
                break;
            }
            apply(&v, a);
        }
        if (!ended) {
            char s[512];
            format_seq(s, sizeof(s), seq, n);
            print_error("view %u (state %u flags 0x%x): step did not end: [%s]\n", i, start.state,
                        start.flags, s);
            fail();
        }
    }
    // Every action came up at least once in the sample.
    for (int a = 0; a <= TG_ACT_CANCEL_PLAIN_RECV; a++) {
        if (counts[a] == 0)
            print_error("random views never gave %s\n",
                        tg_conn_action_name((enum tg_conn_action)a));
        assert_true(counts[a] > 0);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_action_names),
        cmocka_unit_test(test_run_fresh_open),
        cmocka_unit_test(test_run_half_close_plain),
        cmocka_unit_test(test_run_half_close_tls),
        cmocka_unit_test(test_run_fatal_flush),
        cmocka_unit_test(test_run_backpressure),
        cmocka_unit_test(test_random_views_terminate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
