// The load engine: one io_uring per thread driving that thread's share of the connections.
// TCP connect, send and multishot recv (into a provided buffer group) go through the ring, which
// the proxy's loop core makes (tg_loop: ring, buffer group, submissions; this engine runs its own
// loop and timing, not tg_loop's dispatch). BoringSSL runs over memory through the proxy's TLS
// endpoint (tg_tlsio: its custom BIO reads the received buffer and writes a ciphertext queue).
//
// Phases of one engine:
//   PRIME   handshake --resume: one connection gets a session (TLS 1.3: reads until the ticket)
//   SETUP   bulk, latency, idle: open every connection (at most MAX_PENDING_SETUP at once)
//   WAIT    idle: wait until every engine is done with SETUP (then `established=N` is printed)
//   WARMUP  load runs, nothing is counted
//   MEASURE load runs and is counted (idle: the hold)
//   DRAIN   no new work; outstanding work finishes, close_notify, wait for the peer's close;
//           whatever is left at the grace deadline is closed by force
//
// The byte stream: every connection writes the bytes of a table (filled once from xorshift64)
// starting at an offset derived from its global id, so a write is an SSL_write straight from the
// table and an echo is checked with one memcmp. The table's period is a prime, so writes do not
// line up with it.
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include <openssl/err.h>

#include "load.h"
#include "tlsgate/bufq.h"
#include "tlsgate/loop.h"
#include "tlsgate/tlsconn.h"

// ---------------------------------------------------------------------------------------------
// user_data is tg_loop's encoding (tlsgate/loop.h): a connection's operations carry kind
// LG_KIND, the op (enum op), the connection's slot index within the engine and its generation (a
// completion for an older occupant of the slot is ignored). Cancel requests (tg_loop_cancel_fd)
// carry TG_KIND_CORE and are ignored. The provided buffer id of a recv completion travels in
// cqe->flags.
#define LG_KIND TG_KIND_CONN

enum op {
    OP_CONNECT = 1,
    OP_RECV,
    OP_SEND,
};

static inline uint64_t ud_make(enum op op, uint32_t idx, uint32_t gen) {
    return tg_ud(LG_KIND, op, idx, gen);
}

#define NS_PER_MS 1000000ull
#define NS_PER_S 1000000000ull
#define BUF_SIZE 16384u // one provided buffer: one TLS record's worth
#define BUF_COUNT 1024u // provided buffers per engine (power of two)
#define BUF_GROUP 0
#define TX_LOW (64u * 1024u) // bulk: keep this much plaintext sealed ahead of the socket
#define TICK_NS (100 * NS_PER_MS)
#define HANDSHAKE_TIMEOUT_NS (10 * NS_PER_S) // connect + handshake of one connection
#define PRIME_WAIT_NS (100 * NS_PER_MS)      // for a ticket before we send a probe
#define PRIME_TIMEOUT_NS (2 * NS_PER_S)      // for a ticket after the probe
#define SHUTDOWN_TIMEOUT_NS (2 * NS_PER_S)   // waiting for the peer's close after ours
#define GRACE_NS (3 * NS_PER_S)              // DRAIN, before the force close
#define HARD_NS (2 * NS_PER_S)               // after the force close, before giving up
#define BACKOFF_NS (100 * NS_PER_MS)         // handshake loop restart after a failure
#define MAX_PENDING_SETUP 256u
#define MAX_ERROR_LINES 5u
#define SCRATCH_SIZE 16384u // SSL_read returns at most one record
#define SETTLE_NS                                                                                  \
    (100 * NS_PER_MS) // idle: quiet time after the last handshake before
                      // `established=` (a TLS 1.3 refusal comes after it)

enum phase {
    PH_PRIME = 0,
    PH_SETUP,
    PH_WAIT,
    PH_WARMUP,
    PH_MEASURE,
    PH_DRAIN,
    PH_DONE,
};

enum conn_state {
    CS_FREE = 0, // no socket
    CS_CONNECTING,
    CS_HANDSHAKE,
    CS_PRIMING, // --resume: handshake done, reading until the session ticket arrives. A
                // BoringSSL server (tlsgate) holds TLS 1.3 tickets back until it next
                // writes application data, so when none came after PRIME_WAIT_NS we send
                // one byte ("\n", echoed by an echo backend) and read on.
    CS_OPEN,
    CS_SHUTDOWN, // our close_notify is queued: waiting for the peer's close (bounded)
    CS_CLOSING,  // operations cancelled; the socket closes once the last completion arrives
};

enum conn_flag {
    F_RECV = 1u << 0,    // multishot recv armed
    F_SENDING = 1u << 1, // a send of |txq| in flight
    F_FAILED = 1u << 2,  // this occupant's failure was counted
    F_SETUP = 1u << 3,   // counted in pending_setup
    F_PRIMER = 1u << 4,  // the --resume priming connection
    F_BACKOFF = 1u << 5, // FREE, restart at |deadline| (handshake mode)
    F_DEAD = 1u << 6,    // FREE for good (bulk, latency, idle after a failure)
    F_PROBED = 1u << 7,  // PRIMING: the probe byte is sent
    F_UP = 1u << 8,      // the handshake completed
    F_REUSED = 1u << 9,  // ... resuming a session (SSL_session_reused)
};

// Ciphertext takes two queues per connection: |tio.out|, which BoringSSL appends to (it grows
// freely: no send is ever made from it, so |tio.out_busy| stays 0), and |txq|, the queue under a
// send (never moved). When the socket is free, tio.out becomes txq and BoringSSL starts a new
// one. With --plain, |tio| has no SSL and requests go straight into tio.out. tio.eof is the TCP
// FIN.
struct lg_conn {
    struct tg_tlsio tio;
    struct tg_bufq txq;
    uint32_t stream_off; // where this connection's stream starts in the pattern table
    uint64_t tx_pos;     // stream bytes written (plaintext)
    uint64_t rx_pos;     // stream bytes received and checked
    uint64_t deadline;   // ns: connect/handshake, priming, shutdown, backoff
    uint64_t up_at;      // ns: when the handshake completed
    uint64_t *lat;       // latency: scheduled send times of the outstanding requests (FIFO)
    uint64_t lat_done;   // latency: responses completed
    uint32_t lat_head, lat_len, lat_cap;
    uint8_t *rx; // sip-options: received bytes not yet framed into a whole response
    uint32_t rx_len, rx_cap;
    uint32_t gen;
    int fd;
    uint16_t flags;
    uint8_t state;
    uint8_t inflight; // submitted operations whose last completion has not arrived
};

struct lg_engine {
    const struct lg_opts *o;
    struct lg_shared *sh;
    struct lg_stats *st;
    struct tg_loop loop;     // the ring and its buffer group; not its dispatch
    struct tg_bufcache bc;   // ciphertext queues of tlsenv.out_size bytes
    struct tg_tlsenv tlsenv; // no verifier: the SSL_CTX verifies (tlsgate_load.c)
    struct lg_conn *conns;
    uint32_t num_conns;
    uint32_t first_id;
    uint32_t num_active;    // connections not CS_FREE
    uint32_t pending_setup; // SETUP: started, not yet up or failed
    uint32_t next_start;    // SETUP: next slot to start
    uint64_t last_up;       // SETUP: when the last handshake completed
    uint32_t error_lines;
    SSL_SESSION *session; // --resume: the session every handshake offers
    enum phase phase;
    uint64_t now;
    uint64_t t_start;   // load (and the latency schedule) starts
    uint64_t t_measure; // measurement window [t_measure, t_end)
    uint64_t t_end;
    uint64_t t_setup_deadline;
    uint64_t t_grace;
    uint64_t t_hard;
    uint64_t next_tick;
    double interval_ns; // latency: between two requests of this engine
    uint64_t next_req;  // latency: index of the next request in the schedule
    uint8_t scratch[SCRATCH_SIZE];
};

static _Thread_local struct lg_engine *t_engine; // for the new-session callback

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static inline uint32_t conn_idx(const struct lg_engine *e, const struct lg_conn *c) {
    return (uint32_t)(c - e->conns);
}

static inline int in_window(const struct lg_engine *e, uint64_t t) {
    return t >= e->t_measure && t < e->t_end && e->phase >= PH_MEASURE;
}

// conn_error counts one failure and says why, for the first few.
static void conn_error(struct lg_engine *e, struct lg_conn *c, const char *what) {
    e->st->errors++;
    if (e->error_lines >= MAX_ERROR_LINES)
        return;
    e->error_lines++;
    char detail[160] = "";
    unsigned long err = ERR_peek_error();
    if (err != 0) {
        const char *reason = ERR_reason_error_string(err);
        snprintf(detail, sizeof(detail), " (%s)", reason ? reason : "unknown");
    }
    fprintf(stderr, "tlsgate-load: conn %u: %s%s\n", e->first_id + conn_idx(e, c), what, detail);
    if (e->error_lines == MAX_ERROR_LINES)
        fprintf(stderr, "tlsgate-load: further errors of this thread are only counted\n");
}

// ---------------------------------------------------------------------------------------------
// Buffers.

static int lat_push(struct lg_conn *c, uint64_t t) {
    if (c->lat_len == c->lat_cap) {
        uint32_t cap = c->lat_cap ? c->lat_cap * 2 : 16;
        uint64_t *lat = malloc(cap * sizeof(*lat));
        if (lat == NULL)
            return 0;
        for (uint32_t i = 0; i < c->lat_len; i++)
            lat[i] = c->lat[(c->lat_head + i) & (c->lat_cap - 1)];
        free(c->lat);
        c->lat = lat;
        c->lat_cap = cap;
        c->lat_head = 0;
    }
    c->lat[(c->lat_head + c->lat_len) & (c->lat_cap - 1)] = t;
    c->lat_len++;
    return 1;
}

static uint64_t lat_pop(struct lg_conn *c) {
    uint64_t t = c->lat[c->lat_head];
    c->lat_head = (c->lat_head + 1) & (c->lat_cap - 1);
    c->lat_len--;
    return t;
}

int lg_engine_new_session(SSL *ssl, SSL_SESSION *session) {
    (void)ssl;
    struct lg_engine *e = t_engine;
    if (e == NULL || e->session != NULL)
        return 0;
    e->session = session;
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Submissions.

static void submit_recv(struct lg_engine *e, struct lg_conn *c) {
    struct io_uring_sqe *sqe = tg_loop_sqe(&e->loop);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, ud_make(OP_RECV, conn_idx(e, c), c->gen));
    c->flags |= F_RECV;
    c->inflight++;
}

static void submit_send(struct lg_engine *e, struct lg_conn *c) {
    struct io_uring_sqe *sqe = tg_loop_sqe(&e->loop);
    io_uring_prep_send(sqe, c->fd, tg_bufq_peek(&c->txq), tg_bufq_len(&c->txq), MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud_make(OP_SEND, conn_idx(e, c), c->gen));
    c->flags |= F_SENDING;
    c->inflight++;
}

// ---------------------------------------------------------------------------------------------
// Connection life cycle.

static void conn_start(struct lg_engine *e, struct lg_conn *c);
static void conn_shutdown(struct lg_engine *e, struct lg_conn *c);
static void handshake_done(struct lg_engine *e, struct lg_conn *c);
static void begin_load(struct lg_engine *e);

static int producing(const struct lg_engine *e, const struct lg_conn *c) {
    return e->o->mode == LG_MODE_BULK && c->state == CS_OPEN &&
           (e->phase == PH_WARMUP || e->phase == PH_MEASURE);
}

// bulk_produce seals B-byte writes of the stream until TX_LOW bytes wait in the filling queue.
static int bulk_produce(struct lg_engine *e, struct lg_conn *c) {
    const struct lg_opts *o = e->o;
    while (tg_bufq_len(&c->tio.out) < TX_LOW) {
        const uint8_t *p = o->pattern + (c->stream_off + c->tx_pos) % o->pattern_period;
        if (!tg_tls_write_all(&c->tio, p, o->write_size))
            return 0;
        c->tx_pos += o->write_size;
        if (e->phase == PH_MEASURE) {
            e->st->bytes_sent += o->write_size;
            e->st->count++;
        }
    }
    return 1;
}

static void conn_close(struct lg_engine *e, struct lg_conn *c);

static void conn_fail(struct lg_engine *e, struct lg_conn *c, const char *what) {
    if (c->state == CS_CLOSING || c->state == CS_FREE)
        return;
    if (!(c->flags & F_FAILED)) {
        c->flags |= F_FAILED;
        conn_error(e, c, what);
    }
    ERR_clear_error();
    conn_close(e, c);
}

// conn_flush keeps bulk writes coming and one send in flight: when the socket is free the
// filling queue goes out and BoringSSL starts another one.
static void conn_flush(struct lg_engine *e, struct lg_conn *c) {
    if (c->state == CS_CLOSING || c->state == CS_FREE)
        return;
    if (producing(e, c) && !bulk_produce(e, c)) {
        conn_fail(e, c, "SSL_write failed");
        return;
    }
    if ((c->flags & F_SENDING) || tg_bufq_len(&c->tio.out) == 0)
        return;
    c->txq = c->tio.out; // empty while no send is in flight: on_send consumed it
    memset(&c->tio.out, 0, sizeof(c->tio.out));
    submit_send(e, c);
    if (producing(e, c) && !bulk_produce(e, c))
        conn_fail(e, c, "SSL_write failed");
}

// conn_close cancels what is in flight; conn_reap frees the slot after the last completion.
static void conn_close(struct lg_engine *e, struct lg_conn *c) {
    if (c->state == CS_CLOSING || c->state == CS_FREE)
        return;
    if (c->flags & F_SETUP) {
        c->flags &= ~F_SETUP;
        e->pending_setup--;
    }
    c->state = CS_CLOSING;
    if (c->inflight == 0)
        return;
    tg_loop_cancel_fd(&e->loop, c->fd);
}

// conn_settle counts, once, a connection whose handshake completed and that has not failed:
// in handshake mode a handshake of the window (and whether it resumed), in every mode an
// established connection. Called when it closes without a failure, or is still up at the end.
static void conn_settle(struct lg_engine *e, struct lg_conn *c) {
    if (!(c->flags & F_UP) || (c->flags & F_FAILED))
        return;
    c->flags &= ~F_UP;
    e->st->established++;
    if (e->o->mode == LG_MODE_HANDSHAKE && !(c->flags & F_PRIMER) && in_window(e, c->up_at)) {
        e->st->count++;
        if (c->flags & F_REUSED)
            e->st->resumed++;
    }
}

static void conn_release(struct lg_engine *e, struct lg_conn *c) {
    conn_settle(e, c);
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    tg_tlsio_drop(&c->tio); // the SSL, tio.out, tio.eof
    tg_bufq_reset(&c->txq, &e->bc);
    free(c->lat);
    c->lat = NULL;
    c->lat_head = c->lat_len = c->lat_cap = 0;
    free(c->rx);
    c->rx = NULL;
    c->rx_len = c->rx_cap = 0;
    c->state = CS_FREE;
    e->num_active--;
}

// conn_reap runs after every completion: a closing connection with nothing in flight is freed
// and, in handshake mode, the loop starts over.
static void conn_reap(struct lg_engine *e, struct lg_conn *c) {
    if (c->state != CS_CLOSING || c->inflight > 0)
        return;
    int failed = (c->flags & F_FAILED) != 0;
    int primer = (c->flags & F_PRIMER) != 0;
    conn_release(e, c);
    c->flags = 0;
    if (primer) {
        if (e->phase != PH_PRIME)
            return; // stopped while priming
        if (e->session == NULL && !failed)
            conn_error(e, c, "no session ticket arrived: every handshake will be full");
        begin_load(e);
        return;
    }
    if (e->o->mode != LG_MODE_HANDSHAKE) {
        c->flags = F_DEAD;
        return;
    }
    if (e->phase != PH_WARMUP && e->phase != PH_MEASURE)
        return;
    if (failed) {
        c->flags = F_BACKOFF;
        c->deadline = e->now + BACKOFF_NS;
        return;
    }
    conn_start(e, c);
}

static void conn_start(struct lg_engine *e, struct lg_conn *c) {
    const struct lg_opts *o = e->o;
    int fd = socket(o->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    c->flags = 0;
    if (fd < 0) {
        conn_error(e, c, strerror(errno));
        c->flags = o->mode == LG_MODE_HANDSHAKE ? F_BACKOFF : F_DEAD;
        c->deadline = e->now + BACKOFF_NS;
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    c->gen++;
    c->fd = fd;
    c->state = CS_CONNECTING;
    c->deadline = e->now + HANDSHAKE_TIMEOUT_NS;
    c->tx_pos = c->rx_pos = 0;
    c->lat_done = 0;
    e->num_active++;
    if (e->phase == PH_SETUP) {
        c->flags |= F_SETUP;
        e->pending_setup++;
    }
    struct io_uring_sqe *sqe = tg_loop_sqe(&e->loop);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&o->addr, o->addr_len);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CONNECT, conn_idx(e, c), c->gen));
    c->inflight++;
}

// conn_new_ssl makes the client SSL (its app data is |c->tio|). --sni goes out as given, an IP
// literal too, and a name BoringSSL refuses fails the connection: tg_tlsio_init would drop both.
static int conn_new_ssl(struct lg_engine *e, struct lg_conn *c) {
    if (!tg_tlsio_init(&c->tio, &e->tlsenv, e->o->ctx, 0, NULL))
        return 0;
    if (e->o->sni != NULL && !SSL_set_tlsext_host_name(c->tio.ssl, e->o->sni))
        return 0;
    if (e->o->resume && e->session != NULL && !SSL_set_session(c->tio.ssl, e->session))
        return 0;
    return 1;
}

static void on_connect(struct lg_engine *e, struct lg_conn *c, int res) {
    if (c->state != CS_CONNECTING)
        return;
    if (res < 0) {
        char what[96];
        snprintf(what, sizeof(what), "connect: %s", strerror(-res));
        conn_fail(e, c, what);
        return;
    }
    if (e->o->plain) {
        c->state = CS_HANDSHAKE;
        submit_recv(e, c);
        handshake_done(e, c); // nothing to negotiate: the connection is up
        conn_flush(e, c);
        return;
    }
    if (!conn_new_ssl(e, c)) {
        conn_fail(e, c, "SSL_new failed");
        return;
    }
    c->state = CS_HANDSHAKE;
    submit_recv(e, c);
    int r;
    if (tg_tls_handshake(&c->tio, &r) == TG_TLS_ERROR) { // the ClientHello goes into tio.out
        conn_fail(e, c, "handshake failed");
        return;
    }
    conn_flush(e, c);
}

// handshake_done: the connection is authenticated both ways.
static void handshake_done(struct lg_engine *e, struct lg_conn *c) {
    c->flags |= F_UP;
    c->up_at = e->now;
    e->last_up = e->now;
    if (c->tio.ssl != NULL && SSL_session_reused(c->tio.ssl))
        c->flags |= F_REUSED;
    if (c->flags & F_SETUP) {
        c->flags &= ~F_SETUP;
        e->pending_setup--;
    }
    if (e->o->mode == LG_MODE_HANDSHAKE) {
        if (c->flags & F_PRIMER) {
            c->state = CS_PRIMING;
            c->deadline = e->now + PRIME_WAIT_NS;
            return; // the read loop ends priming once the session is there
        }
        conn_shutdown(e, c); // counted once it ends without a failure (conn_settle)
        return;
    }
    c->state = CS_OPEN;
    c->deadline = 0;
    if (e->phase >= PH_DRAIN)
        conn_shutdown(e, c);
}

// conn_shutdown queues our close_notify and waits (bounded) for the peer to close.
static void conn_shutdown(struct lg_engine *e, struct lg_conn *c) {
    if (c->state == CS_SHUTDOWN || c->state == CS_CLOSING || c->state == CS_FREE)
        return;
    if (e->o->plain) {
        conn_close(e, c); // no close_notify: the socket closes once nothing is in flight
        return;
    }
    c->state = CS_SHUTDOWN;
    c->deadline = e->now + SHUTDOWN_TIMEOUT_NS;
    SSL_shutdown(c->tio.ssl);
    ERR_clear_error();
    if (c->tio.eof) {
        conn_close(e, c);
        return;
    }
    conn_flush(e, c);
}

// drain_ready: in DRAIN, a connection may close once its outstanding work is done.
static int drain_ready(const struct lg_engine *e, const struct lg_conn *c) {
    switch (e->o->mode) {
    case LG_MODE_BULK:
        return e->o->sink || c->rx_pos >= c->tx_pos;
    case LG_MODE_LATENCY:
    case LG_MODE_SIP:
        return c->lat_len == 0;
    default:
        return 1;
    }
}

// ---------------------------------------------------------------------------------------------
// sip-options: each request is OPTIONS sip:pbx@127.0.0.1 with CSeq n (1, 2, ... per
// connection) and the branch z9hG4bKlg<conn>x<n>. |c->lat| holds the send times of the
// outstanding ones, oldest first: entry i is CSeq lat_done + 1 + i. A response is matched by
// its CSeq and the branch of its top Via; answered entries become LAT_DONE and leave the head.

#define LAT_DONE UINT64_MAX
#define SIP_MAX_RESPONSE (64u * 1024u)

// conn_write hands |n| plaintext bytes to TLS, or straight to the filling queue with --plain.
static int conn_write(struct lg_engine *e, struct lg_conn *c, const void *p, uint32_t n) {
    if (e->o->plain)
        return tg_bufq_append(&c->tio.out, &e->bc, p, n, e->tlsenv.out_size, 0);
    return tg_tls_write_all(&c->tio, p, n);
}

static void sip_send(struct lg_engine *e, struct lg_conn *c, uint64_t sched) {
    char msg[512];
    unsigned id = e->first_id + conn_idx(e, c);
    unsigned long long cseq = (unsigned long long)(c->lat_done + c->lat_len + 1);
    int n = snprintf(msg, sizeof(msg),
                     "OPTIONS sip:pbx@127.0.0.1 SIP/2.0\r\n"
                     "Via: SIP/2.0/%s 127.0.0.1:5099;branch=z9hG4bKlg%ux%llu;rport\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:load@127.0.0.1>;tag=lg%u\r\n"
                     "To: <sip:pbx@127.0.0.1>\r\n"
                     "Call-ID: lg%u-%llu@tlsgate-load\r\n"
                     "CSeq: %llu OPTIONS\r\n"
                     "Content-Length: 0\r\n\r\n",
                     e->o->plain ? "TCP" : "TLS", id, cseq, id, id, cseq, cseq);
    if (n <= 0 || (size_t)n >= sizeof(msg) || !conn_write(e, c, msg, (uint32_t)n) ||
        !lat_push(c, sched)) {
        conn_fail(e, c, "write of an OPTIONS request failed");
        return;
    }
    c->tx_pos += (uint64_t)n;
    if (in_window(e, sched))
        e->st->bytes_sent += (uint64_t)n;
    conn_flush(e, c);
}

// hdr_value: when the header line |p| (|n| bytes) is |name| (or the compact |compact|),
// its value (after the colon and blanks); else NULL.
static const char *hdr_value(const char *p, size_t n, const char *name, const char *compact) {
    const char *colon = memchr(p, ':', n);
    if (colon == NULL)
        return NULL;
    size_t len = (size_t)(colon - p);
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t'))
        len--;
    if (!((len == strlen(name) && strncasecmp(p, name, len) == 0) ||
          (compact != NULL && len == 1 && (p[0] | 0x20) == compact[0])))
        return NULL;
    colon++;
    while (colon < p + n && (*colon == ' ' || *colon == '\t'))
        colon++;
    return colon;
}

// dec_value reads the decimal number at |p| (before |end|; the buffer is not NUL-terminated,
// so never strtol here). Returns -1 when there are no digits or it overflows.
static long long dec_value(const char *p, const char *end) {
    long long v = 0;
    const char *start = p;
    for (; p < end && *p >= '0' && *p <= '9'; p++) {
        if (v > (INT64_MAX - 9) / 10)
            return -1;
        v = v * 10 + (*p - '0');
    }
    return p > start ? v : -1;
}

// sip_response handles one framed response (headers of |hlen| bytes at |m|).
static void sip_response(struct lg_engine *e, struct lg_conn *c, const char *m, size_t hlen) {
    if (hlen < 12 || memcmp(m, "SIP/2.0 ", 8) != 0) {
        conn_fail(e, c, "a request or garbage where a response was expected");
        return;
    }
    int code = (int)dec_value(m + 8, m + hlen);
    unsigned long long cseq = 0;
    const char *branch = NULL;
    size_t branch_len = 0;
    const char *end = m + hlen;
    const char *line = memchr(m, '\n', hlen);
    while (line != NULL && ++line < end) {
        const char *eol = memchr(line, '\n', (size_t)(end - line));
        size_t len = eol ? (size_t)(eol - line) : (size_t)(end - line);
        const char *v;
        if ((v = hdr_value(line, len, "cseq", NULL)) != NULL) {
            long long n = dec_value(v, line + len);
            cseq = n > 0 ? (unsigned long long)n : 0;
        } else if (branch == NULL && (v = hdr_value(line, len, "via", "v")) != NULL) {
            const char *b = memmem(v, (size_t)(line + len - v), "branch=", 7);
            const char *comma = memchr(v, ',', (size_t)(line + len - v));
            if (b != NULL && (comma == NULL || b < comma)) {
                branch = b + 7;
                while (branch + branch_len < line + len &&
                       strchr(";, \t\r", branch[branch_len]) == NULL)
                    branch_len++;
            }
        }
        line = eol;
    }
    if (code >= 100 && code < 200)
        return; // provisional: the transaction goes on
    char want[64];
    int wn = snprintf(want, sizeof(want), "z9hG4bKlg%ux%llu", e->first_id + conn_idx(e, c), cseq);
    uint64_t idx = cseq - (c->lat_done + 1);
    if (cseq <= c->lat_done || idx >= c->lat_len || branch == NULL || branch_len != (size_t)wn ||
        memcmp(branch, want, branch_len) != 0) {
        conn_error(e, c, "a response that matches no outstanding request (CSeq/branch)");
        return;
    }
    uint64_t *slot = &c->lat[(c->lat_head + (uint32_t)idx) & (c->lat_cap - 1)];
    uint64_t sched = *slot;
    if (sched == LAT_DONE) {
        conn_error(e, c, "a second final response to one request");
        return;
    }
    *slot = LAT_DONE;
    if (in_window(e, sched)) {
        if (code == 200) {
            lg_hist_record(&e->st->hist, e->now > sched ? e->now - sched : 0);
            e->st->count++;
        } else {
            char what[64];
            snprintf(what, sizeof(what), "answered %d, not 200", code);
            conn_error(e, c, what);
        }
    }
    while (c->lat_len > 0 && c->lat[c->lat_head] == LAT_DONE) {
        lat_pop(c);
        c->lat_done++;
    }
    if (e->o->rate <= 0 && (e->phase == PH_WARMUP || e->phase == PH_MEASURE) && c->state == CS_OPEN)
        sip_send(e, c, e->now); // closed loop: the next transaction
}

// sip_input frames responses by Content-Length out of the received bytes.
static void sip_input(struct lg_engine *e, struct lg_conn *c, const uint8_t *p, uint32_t n) {
    c->rx_pos += n;
    if (e->phase == PH_MEASURE)
        e->st->bytes_received += n;
    if (c->rx_cap - c->rx_len < n) {
        uint32_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap - c->rx_len < n)
            cap *= 2;
        if (cap > 4 * SIP_MAX_RESPONSE) {
            conn_fail(e, c, "response too large");
            return;
        }
        uint8_t *rx = realloc(c->rx, cap);
        if (rx == NULL) {
            conn_fail(e, c, "out of memory");
            return;
        }
        c->rx = rx;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, p, n);
    c->rx_len += n;
    uint32_t off = 0;
    while (c->state != CS_CLOSING) {
        const char *m = (const char *)c->rx + off;
        uint32_t avail = c->rx_len - off;
        while (avail >= 2 && m[0] == '\r' && m[1] == '\n') { // keepalive CRLFs
            m += 2;
            off += 2;
            avail -= 2;
        }
        const char *hend = memmem(m, avail, "\r\n\r\n", 4);
        if (hend == NULL) {
            if (avail > SIP_MAX_RESPONSE)
                conn_fail(e, c, "response header too large");
            break;
        }
        size_t hlen = (size_t)(hend - m) + 2;
        long long clen = -1;
        const char *line = m;
        while (line < m + hlen) {
            const char *eol = memchr(line, '\n', (size_t)(m + hlen - line));
            size_t len = eol ? (size_t)(eol - line) : (size_t)(m + hlen - line);
            const char *v = hdr_value(line, len, "content-length", "l");
            if (v != NULL)
                clen = dec_value(v, line + len);
            if (eol == NULL)
                break;
            line = eol + 1;
        }
        if (clen < 0 || clen > (long long)SIP_MAX_RESPONSE) {
            conn_fail(e, c, "response without a sane Content-Length");
            break;
        }
        size_t total = hlen + 2 + (size_t)clen;
        if (total > avail)
            break;
        sip_response(e, c, m, hlen);
        off += (uint32_t)total;
    }
    if (c->state == CS_CLOSING)
        return;
    memmove(c->rx, c->rx + off, c->rx_len - off);
    c->rx_len -= off;
}

// on_plain takes decrypted bytes: checks the echo, completes latency requests.
static void on_plain(struct lg_engine *e, struct lg_conn *c, const uint8_t *p, uint32_t n) {
    const struct lg_opts *o = e->o;
    if (o->mode == LG_MODE_HANDSHAKE || o->mode == LG_MODE_IDLE)
        return; // nothing is expected; whatever comes is ignored
    if (o->mode == LG_MODE_SIP) {
        sip_input(e, c, p, n);
        if (c->state != CS_CLOSING && e->phase == PH_DRAIN && c->state == CS_OPEN &&
            drain_ready(e, c))
            conn_shutdown(e, c);
        return;
    }
    int check = o->mode == LG_MODE_LATENCY || !o->sink;
    if (check) {
        if (c->rx_pos + n > c->tx_pos) {
            conn_fail(e, c, "received more than was sent");
            return;
        }
        const uint8_t *want = o->pattern + (c->stream_off + c->rx_pos) % o->pattern_period;
        if (memcmp(p, want, n) != 0) {
            conn_fail(e, c, "echoed bytes differ from what was sent");
            return;
        }
    }
    c->rx_pos += n;
    if (e->phase == PH_MEASURE)
        e->st->bytes_received += n;
    if (o->mode == LG_MODE_LATENCY) {
        while (c->lat_len > 0 && c->rx_pos >= (c->lat_done + 1) * o->req_size) {
            uint64_t sched = lat_pop(c);
            c->lat_done++;
            if (in_window(e, sched)) {
                lg_hist_record(&e->st->hist, e->now > sched ? e->now - sched : 0);
                e->st->count++;
            }
        }
    }
    if (e->phase == PH_DRAIN && c->state == CS_OPEN && drain_ready(e, c))
        conn_shutdown(e, c);
}

// read_loop decrypts everything |c->tio.in| holds; BoringSSL takes it all, so the provided
// buffer can go back at once.
static void read_loop(struct lg_engine *e, struct lg_conn *c) {
    for (;;) {
        int n = SSL_read(c->tio.ssl, e->scratch, (int)sizeof(e->scratch));
        enum tg_tls_status s = tg_tls_classify(&c->tio, n);
        if (s == TG_TLS_OK) {
            on_plain(e, c, e->scratch, (uint32_t)n);
            if (c->state == CS_CLOSING)
                return;
            continue;
        }
        if (s == TG_TLS_WANT)
            break;
        // The peer closed: close_notify (ZERO_RETURN), or FIN without one (TG_TLS_EOF), or an
        // error. A fatal alert is a failure even after our close_notify (TLS 1.3: a refused
        // client certificate is only reported then).
        if (c->state == CS_SHUTDOWN && s == TG_TLS_EOF) {
            ERR_clear_error();
            conn_close(e, c);
            return;
        }
        int err = SSL_get_error(c->tio.ssl, n);
        conn_fail(e, c,
                  err == SSL_ERROR_ZERO_RETURN ? "peer closed the connection"
                  : err == SSL_ERROR_SSL       ? "TLS error"
                                               : "connection closed without close_notify");
        return;
    }
    if (c->state == CS_PRIMING && e->session != NULL)
        conn_shutdown(e, c);
}

static void conn_input(struct lg_engine *e, struct lg_conn *c, const uint8_t *data, uint32_t len) {
    if (e->o->plain) {
        if (len > 0 && c->state == CS_OPEN)
            on_plain(e, c, data, len);
        if (c->state != CS_CLOSING)
            conn_flush(e, c);
        return;
    }
    c->tio.in = data;
    c->tio.in_len = len;
    if (c->state == CS_HANDSHAKE) {
        int r;
        enum tg_tls_status s = tg_tls_handshake(&c->tio, &r);
        if (s == TG_TLS_WANT) {
            conn_flush(e, c);
            goto out;
        }
        if (s != TG_TLS_OK) {
            conn_fail(e, c, "handshake failed");
            goto out;
        }
        handshake_done(e, c);
    }
    if (c->state == CS_PRIMING || c->state == CS_OPEN || c->state == CS_SHUTDOWN)
        read_loop(e, c);
    conn_flush(e, c);
out:
    c->tio.in = NULL;
    c->tio.in_len = 0;
}

static void on_recv(struct lg_engine *e, struct lg_conn *c, struct io_uring_cqe *cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE))
        c->flags &= ~F_RECV;
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe->res > 0 && c->state != CS_CLOSING)
            conn_input(e, c, tg_loop_buf(&e->loop, BUF_GROUP, bid), (uint32_t)cqe->res);
        tg_loop_buf_return(&e->loop, BUF_GROUP, bid);
    }
    if (c->state == CS_CLOSING)
        return;
    if (cqe->res == 0) {
        c->tio.eof = 1;
        conn_input(e, c, NULL, 0); // lets BoringSSL see the EOF
        if (c->state != CS_CLOSING)
            conn_fail(e, c, "connection closed by the peer");
        return;
    }
    if (cqe->res < 0 && cqe->res != -ENOBUFS) {
        if (c->state == CS_SHUTDOWN) {
            conn_close(e, c);
            return;
        }
        char what[96];
        snprintf(what, sizeof(what), "recv: %s", strerror(-cqe->res));
        conn_fail(e, c, what);
        return;
    }
    if (!(c->flags & F_RECV))
        submit_recv(e, c); // out of buffers, or the kernel ended the multishot: arm again
}

static void on_send(struct lg_engine *e, struct lg_conn *c, int res) {
    c->flags &= ~F_SENDING;
    if (c->state == CS_CLOSING)
        return;
    if (res < 0) {
        if (c->state == CS_SHUTDOWN) {
            conn_close(e, c);
            return;
        }
        char what[96];
        snprintf(what, sizeof(what), "send: %s", strerror(-res));
        conn_fail(e, c, what);
        return;
    }
    tg_bufq_consume(&c->txq, &e->bc, (uint32_t)res); // emptied: its memory goes back to e->bc
    if (tg_bufq_len(&c->txq) > 0) {
        submit_send(e, c);
        return;
    }
    conn_flush(e, c);
}

static void on_cqe(struct lg_engine *e, struct io_uring_cqe *cqe) {
    uint64_t ud = cqe->user_data;
    if (tg_ud_kind(ud) != LG_KIND)
        return; // cancel requests
    enum op op = (enum op)tg_ud_op(ud);
    uint32_t idx = tg_ud_slot(ud);
    struct lg_conn *c = idx < e->num_conns ? &e->conns[idx] : NULL;
    if (c == NULL || c->gen != tg_ud_gen(ud) || c->state == CS_FREE) {
        // A slot is freed only after its last completion: this should not happen.
        if (cqe->flags & IORING_CQE_F_BUFFER)
            tg_loop_buf_return(&e->loop, BUF_GROUP, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        return;
    }
    if (op != OP_RECV || !(cqe->flags & IORING_CQE_F_MORE))
        c->inflight--;
    switch (op) {
    case OP_CONNECT:
        on_connect(e, c, cqe->res);
        break;
    case OP_RECV:
        on_recv(e, c, cqe);
        break;
    case OP_SEND:
        on_send(e, c, cqe->res);
        break;
    default:
        break;
    }
    conn_reap(e, c);
}

// ---------------------------------------------------------------------------------------------
// Phases.

static uint64_t seconds_ns(double s) {
    return s <= 0 ? 0 : (uint64_t)(s * (double)NS_PER_S);
}

// begin_load starts the load: handshake loops, or the warmup of the established connections.
static void begin_load(struct lg_engine *e) {
    const struct lg_opts *o = e->o;
    e->t_start = e->now;
    if (o->mode == LG_MODE_IDLE) {
        e->phase = PH_MEASURE;
        e->t_measure = e->now;
        e->t_end = e->now + seconds_ns(o->hold_s);
        return;
    }
    e->phase = PH_WARMUP;
    e->t_measure = e->now + seconds_ns(o->warmup_s);
    e->t_end = e->t_measure + seconds_ns(o->duration_s);
    if (o->mode == LG_MODE_HANDSHAKE) {
        for (uint32_t i = 0; i < e->num_conns; i++)
            conn_start(e, &e->conns[i]);
        return;
    }
    for (uint32_t i = 0; i < e->num_conns; i++) {
        struct lg_conn *c = &e->conns[i];
        if (o->mode == LG_MODE_SIP && o->rate <= 0 && c->state == CS_OPEN)
            sip_send(e, c, e->now); // closed loop: one transaction each, the next on its answer
        // bulk: writing starts
        conn_flush(e, c);
        conn_reap(e, c);
    }
}

static void force_close(struct lg_engine *e, struct lg_conn *c) {
    switch (c->state) {
    case CS_FREE:
    case CS_CLOSING:
        return;
    case CS_SHUTDOWN:
        break;
    case CS_OPEN:
        if (e->o->mode == LG_MODE_LATENCY || e->o->mode == LG_MODE_SIP) {
            // Requests of the window that never got their answer.
            for (uint32_t i = 0; i < c->lat_len; i++) {
                uint64_t t = c->lat[(c->lat_head + i) & (c->lat_cap - 1)];
                if (t != LAT_DONE && in_window(e, t))
                    e->st->errors++;
            }
            break;
        }
        if (!drain_ready(e, c)) {
            char what[160];
            snprintf(what, sizeof(what),
                     "echo incomplete at the end of the grace period: %llu of %llu bytes back "
                     "(TLS bytes buffered: %s)",
                     (unsigned long long)c->rx_pos, (unsigned long long)c->tx_pos,
                     SSL_has_pending(c->tio.ssl) ? "yes" : "none");
            conn_error(e, c, what);
        }
        break;
    default:
        conn_error(e, c, "still connecting at the end of the grace period");
        break;
    }
    conn_close(e, c);
    conn_reap(e, c);
}

static void begin_drain(struct lg_engine *e) {
    if (e->phase == PH_MEASURE)
        e->st->window_ns = e->now - e->t_measure;
    if (e->phase < PH_MEASURE)
        e->t_measure = e->t_end = e->now; // stopped early: an empty window
    else
        e->t_end = e->now;
    e->phase = PH_DRAIN;
    e->t_grace = e->now + GRACE_NS;
    e->t_hard = e->t_grace + HARD_NS;
    for (uint32_t i = 0; i < e->num_conns; i++) {
        struct lg_conn *c = &e->conns[i];
        c->flags &= ~F_BACKOFF;
        if (c->state == CS_OPEN && drain_ready(e, c))
            conn_shutdown(e, c);
        conn_reap(e, c);
    }
}

// end_setup: every connection is up or has failed (or the setup deadline passed).
static void end_setup(struct lg_engine *e) {
    for (uint32_t i = 0; i < e->num_conns; i++) {
        struct lg_conn *c = &e->conns[i];
        if (c->flags & F_SETUP) {
            conn_fail(e, c, "not established before the setup deadline");
            conn_reap(e, c);
        }
    }
    if (e->o->mode != LG_MODE_IDLE) {
        begin_load(e);
        return;
    }
    uint64_t up = 0;
    for (uint32_t i = 0; i < e->num_conns; i++)
        up += e->conns[i].state == CS_OPEN;
    struct lg_shared *sh = e->sh;
    atomic_fetch_add(&sh->established, up);
    if (atomic_fetch_add(&sh->setup_done, 1) + 1 == e->o->num_threads) {
        fprintf(stderr, "established=%llu\n", (unsigned long long)atomic_load(&sh->established));
        fflush(stderr);
        atomic_store(&sh->all_up, 1);
    }
    e->phase = PH_WAIT;
}

// latency_send sends, on its connection, every request whose scheduled time has come.
static void latency_send(struct lg_engine *e) {
    const struct lg_opts *o = e->o;
    for (;;) {
        uint64_t sched = e->t_start + (uint64_t)((double)e->next_req * e->interval_ns);
        if (sched > e->now || sched >= e->t_end)
            return;
        struct lg_conn *c = &e->conns[e->next_req % e->num_conns];
        e->next_req++;
        if (c->state != CS_OPEN) {
            if (in_window(e, sched))
                e->st->errors++; // the connection is gone: the request is lost
            continue;
        }
        if (o->mode == LG_MODE_SIP) {
            if (in_window(e, sched))
                lg_hist_record(&e->st->lag, e->now - sched);
            sip_send(e, c, sched);
            conn_reap(e, c);
            continue;
        }
        const uint8_t *p = o->pattern + (c->stream_off + c->tx_pos) % o->pattern_period;
        if (!tg_tls_write_all(&c->tio, p, o->req_size) || !lat_push(c, sched)) {
            conn_fail(e, c, "SSL_write failed");
            conn_reap(e, c);
            continue;
        }
        c->tx_pos += o->req_size;
        if (in_window(e, sched)) {
            e->st->bytes_sent += o->req_size;
            lg_hist_record(&e->st->lag, e->now - sched);
        }
        conn_flush(e, c);
    }
}

static void scan_deadlines(struct lg_engine *e) {
    for (uint32_t i = 0; i < e->num_conns; i++) {
        struct lg_conn *c = &e->conns[i];
        if (c->state == CS_FREE) {
            if ((c->flags & F_BACKOFF) && e->now >= c->deadline &&
                (e->phase == PH_WARMUP || e->phase == PH_MEASURE))
                conn_start(e, c);
            continue;
        }
        if (c->deadline == 0 || e->now < c->deadline)
            continue;
        switch (c->state) {
        case CS_CONNECTING:
        case CS_HANDSHAKE:
            conn_fail(e, c, "connect/handshake timed out");
            break;
        case CS_PRIMING:
            if (c->flags & F_PROBED) {
                conn_shutdown(e, c);
                break;
            }
            c->flags |= F_PROBED;
            c->deadline = e->now + PRIME_TIMEOUT_NS;
            if (!tg_tls_write_all(&c->tio, (const uint8_t *)"\n", 1)) {
                conn_fail(e, c, "SSL_write failed");
                break;
            }
            conn_flush(e, c);
            break;
        case CS_SHUTDOWN:
            conn_close(e, c); // the peer did not close: we do
            break;
        default:
            break;
        }
        conn_reap(e, c);
    }
}

// advance moves the engine along its phases; returns 0 once it is done.
static int advance(struct lg_engine *e) {
    const struct lg_opts *o = e->o;
    if (*e->sh->stop && e->phase < PH_DRAIN)
        begin_drain(e);
    switch (e->phase) {
    case PH_PRIME:
        break; // conn_reap of the primer calls begin_load
    case PH_SETUP:
        while (e->next_start < e->num_conns && e->pending_setup < MAX_PENDING_SETUP)
            conn_start(e, &e->conns[e->next_start++]);
        if ((e->next_start == e->num_conns && e->pending_setup == 0 &&
             (o->mode != LG_MODE_IDLE || e->now >= e->last_up + SETTLE_NS)) ||
            e->now >= e->t_setup_deadline)
            end_setup(e);
        break;
    case PH_WAIT:
        if (atomic_load(&e->sh->all_up))
            begin_load(e);
        break;
    case PH_WARMUP:
        if (e->now >= e->t_measure)
            e->phase = PH_MEASURE;
        break;
    default:
        break;
    }
    if (e->phase == PH_MEASURE && e->now >= e->t_end)
        begin_drain(e);
    if ((o->mode == LG_MODE_LATENCY || (o->mode == LG_MODE_SIP && o->rate > 0)) &&
        (e->phase == PH_WARMUP || e->phase == PH_MEASURE))
        latency_send(e);
    if (e->now >= e->next_tick) {
        e->next_tick = e->now + TICK_NS;
        scan_deadlines(e);
    }
    if (e->phase == PH_DRAIN) {
        if (e->now >= e->t_grace) {
            for (uint32_t i = 0; i < e->num_conns; i++)
                force_close(e, &e->conns[i]);
        }
        if (e->num_active == 0 || e->now >= e->t_hard)
            e->phase = PH_DONE;
    }
    return e->phase != PH_DONE;
}

// next_wakeup: the earliest time something has to happen without a completion.
static uint64_t next_wakeup(const struct lg_engine *e) {
    uint64_t t = e->next_tick;
    if ((e->phase == PH_WARMUP || e->phase == PH_MEASURE) && e->t_end < t)
        t = e->t_end;
    if (e->phase == PH_WARMUP && e->t_measure < t)
        t = e->t_measure;
    if (e->phase == PH_DRAIN && e->t_grace > e->now && e->t_grace < t)
        t = e->t_grace;
    if ((e->o->mode == LG_MODE_LATENCY || (e->o->mode == LG_MODE_SIP && e->o->rate > 0)) &&
        (e->phase == PH_WARMUP || e->phase == PH_MEASURE)) {
        uint64_t sched = e->t_start + (uint64_t)((double)e->next_req * e->interval_ns);
        if (sched < t)
            t = sched;
    }
    return t;
}

// ---------------------------------------------------------------------------------------------
// Setup and the loop.

static int setup_ring(struct lg_engine *e) {
    unsigned cq = 4096;
    while (cq < 4 * e->num_conns && cq < 65536)
        cq *= 2;
    char err[160];
    if (!tg_loop_init(&e->loop, 1024, cq, err, sizeof(err))) {
        fprintf(stderr, "tlsgate-load: %s\n", err);
        return 0;
    }
    if (!(e->loop.ring.features & IORING_FEAT_EXT_ARG)) {
        fprintf(stderr, "tlsgate-load: the kernel lacks IORING_FEAT_EXT_ARG (5.11+ needed)\n");
        return 0;
    }
    if (!tg_loop_add_bufgroup(&e->loop, BUF_GROUP, BUF_SIZE, BUF_COUNT, err, sizeof(err))) {
        fprintf(stderr, "tlsgate-load: %s\n", err);
        return 0;
    }
    return 1;
}

// out_queue_size is the allocation of a ciphertext queue (and the class of e->bc): one record,
// or one latency request, or in bulk mode what bulk_produce seals ahead of the socket (TX_LOW
// plus one write), sealed. A queue that needs more grows (and is freed, not cached, when empty).
static uint32_t out_queue_size(const struct lg_opts *o) {
    uint32_t plain = TG_TLS_CHUNK;
    if (o->mode == LG_MODE_BULK)
        plain = TX_LOW + o->write_size;
    else if (o->mode == LG_MODE_LATENCY && o->req_size > plain)
        plain = o->req_size;
    return plain + (plain / TG_TLS_CHUNK + 1) * TG_TLS_RECORD_OVERHEAD;
}

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void engine_free(struct lg_engine *e) {
    for (uint32_t i = 0; e->conns != NULL && i < e->num_conns; i++) {
        struct lg_conn *c = &e->conns[i];
        if (c->state != CS_FREE)
            conn_release(e, c);
    }
    free(e->conns);
    tg_bufcache_cleanup(&e->bc);
    tg_loop_cleanup(&e->loop);
    SSL_SESSION_free(e->session);
    free(e);
}

static void engine_loop(struct lg_engine *e) {
    for (;;) {
        e->now = now_ns();
        if (!advance(e))
            return;
        uint64_t next = next_wakeup(e);
        uint64_t wait = next > e->now ? next - e->now : 0;
        struct __kernel_timespec ts = {.tv_sec = (long long)(wait / NS_PER_S),
                                       .tv_nsec = (long long)(wait % NS_PER_S)};
        struct io_uring_cqe *cqe;
        int r = io_uring_submit_and_wait_timeout(&e->loop.ring, &cqe, 1, &ts, NULL);
        if (r < 0 && r != -ETIME && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            fprintf(stderr, "tlsgate-load: io_uring wait: %s\n", strerror(-r));
            return;
        }
        e->now = now_ns();
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&e->loop.ring, head, cqe) {
            seen++;
            on_cqe(e, cqe);
        }
        io_uring_cq_advance(&e->loop.ring, seen);
    }
}

int lg_engine_run(const struct lg_opts *o, struct lg_shared *sh, uint32_t first_id,
                  uint32_t num_conns, double rate, struct lg_stats *out) {
    struct lg_engine *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        fprintf(stderr, "tlsgate-load: out of memory\n");
        return 0;
    }
    e->o = o;
    e->sh = sh;
    e->st = out;
    e->first_id = first_id;
    e->num_conns = num_conns;
    uint32_t out_size = out_queue_size(o);
    tg_bufcache_init(&e->bc, out_size, 0);
    e->tlsenv = (struct tg_tlsenv){.bc = &e->bc, .out_size = out_size};
    // setup_ring first: tg_loop_cleanup (engine_free) wants a tg_loop that tg_loop_init has seen.
    if (!setup_ring(e)) {
        engine_free(e);
        return 0;
    }
    e->conns = calloc(num_conns, sizeof(*e->conns));
    if (e->conns == NULL) {
        fprintf(stderr, "tlsgate-load: out of memory for %u connections\n", num_conns);
        engine_free(e);
        return 0;
    }
    for (uint32_t i = 0; i < num_conns; i++) {
        struct lg_conn *c = &e->conns[i];
        c->fd = -1;
        c->tio.env = &e->tlsenv;
        c->tio.fd = -1;
        c->stream_off =
            (uint32_t)(splitmix64(0x746c7367617465ull + first_id + i) % o->pattern_period);
    }
    t_engine = e;
    if (o->mode == LG_MODE_LATENCY || o->mode == LG_MODE_SIP)
        prctl(PR_SET_TIMERSLACK, 1UL); // send at the scheduled time, not 50 us later
    e->now = now_ns();
    e->next_tick = e->now + TICK_NS;
    e->interval_ns = rate > 0 ? (double)NS_PER_S / rate : 0;
    if (o->mode == LG_MODE_HANDSHAKE && o->resume) {
        e->phase = PH_PRIME;
        conn_start(e, &e->conns[0]);
        e->conns[0].flags |= F_PRIMER;
        if (e->conns[0].state == CS_FREE) {
            e->conns[0].flags = 0;
            begin_load(e);
        }
    } else if (o->mode == LG_MODE_HANDSHAKE) {
        begin_load(e);
    } else {
        e->phase = PH_SETUP;
        e->t_setup_deadline = e->now + HANDSHAKE_TIMEOUT_NS + (uint64_t)num_conns * NS_PER_MS;
    }
    engine_loop(e);
    t_engine = NULL;
    engine_free(e);
    return 1;
}
