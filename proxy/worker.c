// The data plane: one io_uring per worker thread, multishot accept on the worker's own
// SO_REUSEPORT sockets, multishot recv into a provided-buffer ring, BoringSSL fed through a
// custom BIO, and a bounded queue per direction (see docs/ARCHITECTURE.md).
#include "tlsgate/worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <liburing.h>
#include <openssl/err.h>

#include "tlsgate/control.h"
#include "tlsgate/log.h"
#include "tlsgate/sipconn.h"

// ---------------------------------------------------------------------------------------------
// user_data encoding, the one place it is defined:
//   bits  0..7   op (enum op)
//   bits  8..31  connection slot index (listener index for OP_ACCEPT)
//   bits 32..63  slot generation: a completion for an older occupant of the slot is ignored
// The provided buffer id of a recv completion travels in cqe->flags, not in user_data.
enum op {
    OP_IGNORE = 0, // cancel requests and other completions nobody waits for
    OP_ACCEPT,
    OP_WAKE,
    OP_TIMER,
    OP_RECV_TLS,
    OP_RECV_PLAIN,
    OP_SEND_TLS,
    OP_SEND_PLAIN,
    OP_CONNECT,
};

static inline uint64_t ud_make(enum op op, uint32_t idx, uint32_t gen) {
    return (uint64_t)op | ((uint64_t)(idx & 0xffffff) << 8) | ((uint64_t)gen << 32);
}
static inline enum op ud_op(uint64_t ud) {
    return (enum op)(ud & 0xff);
}
static inline uint32_t ud_idx(uint64_t ud) {
    return (uint32_t)(ud >> 8) & 0xffffff;
}
static inline uint32_t ud_gen(uint64_t ud) {
    return (uint32_t)(ud >> 32);
}

#define TG_NIL UINT32_MAX
#define BUF_SIZE 16384u      // one provided buffer: one TLS record's worth
#define BUF_COUNT 1024u      // provided buffers per worker (power of two)
#define BUF_GROUP 0
#define TLS_CHUNK 16384u     // plaintext per SSL_write: one full record
#define TLS_SLACK (TLS_CHUNK + 1024u) // room the ciphertext queue keeps for one more record
#define RECORD_OVERHEAD 256u  // bound on what sealing adds to one record (header, tag, padding)
#define TICK_MS 100

// A byte queue: bytes [head, tail) of |data| are pending. Memory is taken on first use and
// given back when the queue empties, so an idle connection holds no buffer at all. While a
// send from the queue is in flight (|busy|) the bytes may not move: the queue then only
// appends at its tail, and compacts once the send has completed.
struct bufq {
    uint8_t *data;
    uint32_t head, tail, cap;
};

static inline uint32_t bufq_len(const struct bufq *q) {
    return q->tail - q->head;
}

// Queue memory of the two standard sizes is recycled through a small per-worker cache, so a
// busy connection does not allocate and free its queues for every message (which also kept
// the allocator purging pages on the data path); an idle one still holds none.
static uint8_t *bufcache_get(uint32_t size);
static int bufcache_put(uint8_t *data, uint32_t size);

static void bufq_reset(struct bufq *q) {
    if (q->data != NULL && !bufcache_put(q->data, q->cap))
        free(q->data);
    memset(q, 0, sizeof(*q));
}

// bufq_space returns where the next bytes go and, in |*out_room|, how many fit there without
// moving what is queued. A new queue gets |size| bytes; an idle one is compacted first.
static uint8_t *bufq_space(struct bufq *q, uint32_t size, int busy, uint32_t *out_room) {
    *out_room = 0;
    if (q->data == NULL) {
        q->data = bufcache_get(size);
        if (q->data == NULL)
            return NULL;
        q->head = q->tail = 0;
        q->cap = size;
    } else if (!busy && q->head > 0) {
        memmove(q->data, q->data + q->head, bufq_len(q));
        q->tail -= q->head;
        q->head = 0;
    }
    *out_room = q->cap - q->tail;
    return q->data + q->tail;
}

// bufq_append copies |n| bytes to the tail, growing the queue when it is not |busy|.
// Returns 0 when the bytes do not fit (busy) or memory is short.
static int bufq_append(struct bufq *q, const uint8_t *p, uint32_t n, uint32_t size, int busy) {
    uint32_t room;
    uint8_t *dst = bufq_space(q, size, busy, &room);
    if (dst == NULL)
        return 0;
    if (room < n) {
        if (busy)
            return 0;
        uint32_t cap = q->cap;
        while (cap - q->tail < n)
            cap *= 2;
        uint8_t *data = realloc(q->data, cap);
        if (data == NULL)
            return 0;
        q->data = data;
        q->cap = cap;
        dst = q->data + q->tail;
    }
    memcpy(dst, p, n);
    q->tail += n;
    return 1;
}

static void bufq_consume(struct bufq *q, uint32_t n) {
    q->head += n;
    if (q->head == q->tail)
        bufq_reset(q);
}

enum conn_state {
    CS_FREE = 0,
    CS_CONNECTING,  // outbound: connecting to a target, before TLS
    CS_HANDSHAKE,
    CS_OPEN,        // relaying (inbound: possibly still connecting to the backend)
    CS_CLOSING,     // waiting for the last completions before the slot is freed
};

enum conn_flag {
    F_TLS_RECV = 1u << 0,        // multishot recv armed on the TLS socket
    F_TLS_RECV_CANCEL = 1u << 1, // ... and a cancel for it submitted
    F_PLAIN_RECV = 1u << 2,
    F_PLAIN_RECV_CANCEL = 1u << 3,
    F_TLS_SENDING = 1u << 4,
    F_PLAIN_SENDING = 1u << 5,
    F_TLS_RD_EOF = 1u << 6,      // the TLS peer finished sending (close_notify or TCP FIN)
    F_PLAIN_RD_EOF = 1u << 7,
    F_TLS_SHUT_SENT = 1u << 8,   // our close_notify is queued
    F_TLS_WR_DONE = 1u << 9,     // ... sent and SHUT_WR done
    F_PLAIN_WR_DONE = 1u << 10,
    F_PLAIN_UP = 1u << 11,       // the plain socket is connected (always, for outbound)
    F_TLS_UP = 1u << 12,         // the TLS socket is connected (always, for inbound)
    F_TCP_EOF = 1u << 13,        // TCP FIN seen on the TLS socket
    F_FATAL_FLUSH = 1u << 14,    // close once our close_notify has been sent
    F_RETRY = 1u << 15,          // outbound: tear down this target's socket, try the next
    F_SIP_CLOSE = 1u << 16,      // mode = sip: a stream could not be resynchronised
    F_PROBE = 1u << 17,          // tlsgate's own OPTIONS connection to a target: no plain side
};

// tg_conn is one proxied connection: the TLS socket toward the provider and the plain socket
// toward the PBX. Narrow fields: memory per connection is a product feature.
struct tg_conn {
    SSL *ssl;
    struct bufq to_plain;  // plaintext waiting to go out on the plain socket
    struct bufq to_tls;    // ciphertext waiting to go out on the TLS socket
    struct bufq pend_tls;  // ciphertext received but not yet decrypted (backpressure)
    struct bufq pend_plain; // plaintext received but not yet encrypted (backpressure)
    const uint8_t *in;     // ciphertext the read BIO hands BoringSSL now
    uint32_t in_len;
    uint32_t gen;          // slot generation (see user_data)
    uint32_t seq;          // connection id within the worker: `conn=w<worker>-<seq>`
    int tls_fd;
    int plain_fd;
    uint32_t prev, next;   // deadline list links (slot indices)
    uint32_t stamp;        // ms: accept time on the handshake list, last activity on idle list
    uint32_t flags;
    uint16_t listener;
    uint8_t state;
    uint8_t list;          // LIST_NONE, LIST_HANDSHAKE, LIST_IDLE
    uint8_t verdict;       // set by the verify callback; TG_VERDICT_OK otherwise
    uint8_t target;        // outbound: index of the connect target in use
    uint8_t inflight;      // submitted operations whose last completion has not arrived
    uint8_t connect_failures;
};

enum { LIST_NONE = 0, LIST_HANDSHAKE, LIST_IDLE, LIST_NUM };

struct dlist {
    uint32_t head, tail;
};

#define BUFCACHE_MAX 64 // per size and worker: at most 64 x (buffer_size + 17 KiB) kept

struct bufcache {
    uint8_t *bufs[BUFCACHE_MAX];
    unsigned num;
};

// A verified peer chain, remembered per worker so that the next handshake presenting the very
// same chain skips parsing and chain building. Certificates are CRYPTO_BUFFERs from one pool,
// which returns the same buffer for the same DER while a reference is held: comparing pointers
// compares contents. The entry holds references on the buffers and on the context whose policy
// accepted them, so neither address can be reused for something else while cached. Only
// acceptances are cached, for at most VCACHE_TTL seconds and never past the leaf's notAfter.
#define VCACHE_SIZE 8
#define VCACHE_CHAIN_MAX 4
#define VCACHE_TTL 60

struct vcache_entry {
    SSL_CTX *ctx;
    CRYPTO_BUFFER *certs[VCACHE_CHAIN_MAX]; // leaf first
    uint8_t num_certs;
    int64_t valid_until;
    const char *name; // owned by ctx's policy
    char issuer[160];
    int64_t not_after;
};

// probe is the OPTIONS keepalive of one connect target of an outbound SIP listener, kept by
// worker 0 alone: the connection it uses (a slot flagged F_PROBE, with no plain side) and the
// verdict so far. Indexed [listener * TG_MAX_TARGETS + target].
struct probe {
    uint32_t conn, gen; // the probe connection (TG_NIL when none)
    uint32_t due;       // ms: when the next OPTIONS goes out
    uint32_t sent;      // ms: when the outstanding one was started (connect included)
    uint32_t cseq;
    uint8_t awaiting;   // an OPTIONS is outstanding
    uint8_t failures;   // consecutive
    uint8_t down;
};

_Static_assert(TG_MAX_TARGETS == TG_METRICS_MAX_TARGETS, "one target table size");
_Static_assert(TG_MAX_TARGETS <= 256, "targets fit tg_conn.target");

struct tg_worker {
    const struct tg_runtime *rt;
    unsigned id;
    pthread_t thread;
    sem_t ready;
    int init_ok;
    char *init_err;
    size_t init_err_len;

    struct io_uring ring;
    struct io_uring_buf_ring *br;
    uint8_t *bufs;
    size_t br_size;

    int *listen_fds;           // one per listener; -1 once closed
    size_t num_listeners;
    unsigned accepts_armed;

    struct tg_conn *conns;
    uint32_t max_conns;
    uint32_t free_head;        // free slots chained through |next|
    uint32_t num_active;
    uint32_t next_seq;
    struct dlist lists[LIST_NUM];

    uint32_t tls_qsize;        // allocation of a ciphertext queue: buffer_size + TLS_SLACK
    // mode = sip only (NULL when no listener is): per-slot SIP state, taken by SIP connections
    // alone, and the rewriter's output buffer.
    struct tg_sipconn **sip;
    uint8_t *sip_scratch;
    uint32_t sip_scratch_len;  // TG_SIPCONN_SCRATCH_FOR(the largest sip_max_message)
    struct probe *probes;      // worker 0 with an outbound SIP listener probing targets; else NULL
    uint32_t next_keepalive;   // ms: next scan for idle provider sides (keepalive_interval_ms)
    struct tg_listener_counters *ctr;
    SSL_CTX *server_ctx;       // the generation new connections start on (one reference each)
    SSL_CTX *client_ctx;
    _Atomic(struct ctx_pair *) mailbox; // a newer generation, handed over by the control thread
    struct vcache_entry vcache[VCACHE_SIZE];
    unsigned vcache_next;
    struct bufcache cache_plain; // queues of buffer_size bytes
    struct bufcache cache_tls;   // queues of tls_qsize bytes
    int wake_fd;
    uint64_t wake_val;
    _Atomic int stop;
    int draining;
    uint32_t drain_deadline;
    uint32_t now;              // ms, monotonic, refreshed once per loop turn
    struct __kernel_timespec tick;
};

// A generation's contexts on their way to a worker, each with a reference for the worker.
struct ctx_pair {
    SSL_CTX *server, *client;
};

static void ctx_pair_free(struct ctx_pair *p) {
    if (p == NULL)
        return;
    SSL_CTX_free(p->server);
    SSL_CTX_free(p->client);
    free(p);
}

static _Thread_local struct tg_worker *t_worker;

static struct bufcache *bufcache_for(uint32_t size) {
    struct tg_worker *w = t_worker;
    if (w == NULL)
        return NULL;
    if (size == w->rt->cfg->buffer_size)
        return &w->cache_plain;
    if (size == w->tls_qsize)
        return &w->cache_tls;
    return NULL;
}

static uint8_t *bufcache_get(uint32_t size) {
    struct bufcache *bc = bufcache_for(size);
    if (bc != NULL && bc->num > 0)
        return bc->bufs[--bc->num];
    return malloc(size);
}

static int bufcache_put(uint8_t *data, uint32_t size) {
    struct bufcache *bc = bufcache_for(size);
    if (bc == NULL || bc->num == BUFCACHE_MAX)
        return 0;
    bc->bufs[bc->num++] = data;
    return 1;
} // for the verify callback's log lines

static uint32_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint32_t)((uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000);
}

static inline int ms_reached(uint32_t now, uint32_t deadline) {
    return (int32_t)(now - deadline) >= 0;
}

static inline uint32_t conn_idx(const struct tg_worker *w, const struct tg_conn *c) {
    return (uint32_t)(c - w->conns);
}

static inline const struct tg_listener_conf *conn_lconf(const struct tg_worker *w,
                                                        const struct tg_conn *c) {
    return &w->rt->cfg->listeners[c->listener];
}

static inline int conn_inbound(const struct tg_worker *w, const struct tg_conn *c) {
    return conn_lconf(w, c)->direction == TG_INBOUND;
}

// conn_sip returns the SIP state of a mode = sip connection, NULL for a tcp one.
static inline struct tg_sipconn *conn_sip(const struct tg_worker *w, const struct tg_conn *c) {
    return w->sip != NULL ? w->sip[conn_idx(w, c)] : NULL;
}

// ---------------------------------------------------------------------------------------------
// Deadline lists. Each list is ordered by |stamp| because every member of a list has the same
// timeout: the handshake list in accept order, the idle list in order of last activity (a
// connection moves to the tail whenever it does something). The tick pops expired heads.

static void list_unlink(struct tg_worker *w, struct tg_conn *c) {
    if (c->list == LIST_NONE)
        return;
    struct dlist *l = &w->lists[c->list];
    if (c->prev != TG_NIL)
        w->conns[c->prev].next = c->next;
    else
        l->head = c->next;
    if (c->next != TG_NIL)
        w->conns[c->next].prev = c->prev;
    else
        l->tail = c->prev;
    c->prev = c->next = TG_NIL;
    c->list = LIST_NONE;
}

static void list_push(struct tg_worker *w, struct tg_conn *c, uint8_t which) {
    list_unlink(w, c);
    struct dlist *l = &w->lists[which];
    uint32_t idx = conn_idx(w, c);
    c->list = which;
    c->stamp = w->now;
    c->prev = l->tail;
    c->next = TG_NIL;
    if (l->tail != TG_NIL)
        w->conns[l->tail].next = idx;
    else
        l->head = idx;
    l->tail = idx;
}

static inline void conn_touch(struct tg_worker *w, struct tg_conn *c) {
    if (c->list == LIST_IDLE && c->stamp != w->now)
        list_push(w, c, LIST_IDLE);
}

// ---------------------------------------------------------------------------------------------
// Logging helpers: every line about a connection carries `conn=w<worker>-<seq>`.

static void peer_str(int fd, char *out, size_t out_len) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    out[0] = '\0';
    if (fd < 0 || getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
        snprintf(out, out_len, "-");
        return;
    }
    struct tg_target t = {.addr = ss, .addr_len = len, .resolved = 1};
    tg_target_format(&t, out, out_len);
}

static void ssl_err_str(char *out, size_t out_len) {
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(out, out_len, "-");
        return;
    }
    const char *reason = ERR_reason_error_string(e);
    snprintf(out, out_len, "%s", reason ? reason : "unknown");
    ERR_clear_error();
}

// ---------------------------------------------------------------------------------------------
// io_uring submission helpers.

static struct io_uring_sqe *get_sqe(struct tg_worker *w) {
    struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
    if (sqe != NULL)
        return sqe;
    io_uring_submit(&w->ring);
    sqe = io_uring_get_sqe(&w->ring);
    if (sqe == NULL) {
        // The SQ ring was just emptied by the submit: this cannot happen.
        TG_ERROR("sq_full", "worker=%u", w->id);
        abort();
    }
    return sqe;
}

static void submit_recv(struct tg_worker *w, struct tg_conn *c, int tls) {
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_recv_multishot(sqe, tls ? c->tls_fd : c->plain_fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, ud_make(tls ? OP_RECV_TLS : OP_RECV_PLAIN, conn_idx(w, c), c->gen));
    c->flags |= tls ? F_TLS_RECV : F_PLAIN_RECV;
    c->inflight++;
}

static void cancel_recv(struct tg_worker *w, struct tg_conn *c, int tls) {
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_cancel64(sqe, ud_make(tls ? OP_RECV_TLS : OP_RECV_PLAIN, conn_idx(w, c), c->gen),
                           0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_IGNORE, 0, 0));
    c->flags |= tls ? F_TLS_RECV_CANCEL : F_PLAIN_RECV_CANCEL;
}

static void submit_send(struct tg_worker *w, struct tg_conn *c, int tls) {
    struct bufq *q = tls ? &c->to_tls : &c->to_plain;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_send(sqe, tls ? c->tls_fd : c->plain_fd, q->data + q->head, bufq_len(q),
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, ud_make(tls ? OP_SEND_TLS : OP_SEND_PLAIN, conn_idx(w, c), c->gen));
    c->flags |= tls ? F_TLS_SENDING : F_PLAIN_SENDING;
    c->inflight++;
}

static void cancel_fd(struct tg_worker *w, int fd) {
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_cancel_fd(sqe, fd, IORING_ASYNC_CANCEL_ALL);
    io_uring_sqe_set_data64(sqe, ud_make(OP_IGNORE, 0, 0));
}

static void return_buffer(struct tg_worker *w, unsigned bid) {
    io_uring_buf_ring_add(w->br, w->bufs + (size_t)bid * BUF_SIZE, BUF_SIZE, (unsigned short)bid,
                          io_uring_buf_ring_mask(BUF_COUNT), 0);
    io_uring_buf_ring_advance(w->br, 1);
}

// ---------------------------------------------------------------------------------------------
// The custom BIO: BoringSSL reads ciphertext from |c->in| (a provided buffer or the pending
// queue, never copied) and writes ciphertext straight into |c->to_tls|.

static BIO_METHOD *g_bio_method;
static pthread_once_t g_bio_once = PTHREAD_ONCE_INIT;

static int bio_read(BIO *bio, char *out, int len) {
    struct tg_conn *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (c->in_len == 0) {
        if (c->flags & F_TCP_EOF)
            return 0;
        BIO_set_retry_read(bio);
        return -1;
    }
    uint32_t n = (uint32_t)len < c->in_len ? (uint32_t)len : c->in_len;
    memcpy(out, c->in, n);
    c->in += n;
    c->in_len -= n;
    return (int)n;
}

static int bio_write(BIO *bio, const char *in, int len) {
    struct tg_conn *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    if (len <= 0)
        return 0;
    // Grows only while no send is in flight; otherwise BoringSSL is told to retry, and the
    // worker calls it again once the send has completed.
    if (!bufq_append(&c->to_tls, (const uint8_t *)in, (uint32_t)len, t_worker->tls_qsize,
                     (c->flags & F_TLS_SENDING) != 0)) {
        BIO_set_retry_write(bio);
        return -1;
    }
    return len;
}

static long bio_ctrl(BIO *bio, int cmd, long larg, void *parg) {
    (void)bio;
    (void)larg;
    (void)parg;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static void bio_method_init(void) {
    g_bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "tlsgate");
    BIO_meth_set_read(g_bio_method, bio_read);
    BIO_meth_set_write(g_bio_method, bio_write);
    BIO_meth_set_ctrl(g_bio_method, bio_ctrl);
}

static int conn_new_ssl(struct tg_worker *w, struct tg_conn *c, int server) {
    c->ssl = SSL_new(server ? w->server_ctx : w->client_ctx);
    if (c->ssl == NULL)
        return 0;
    BIO *bio = BIO_new(g_bio_method);
    if (bio == NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
        return 0;
    }
    BIO_set_data(bio, c);
    BIO_set_init(bio, 1);
    SSL_set_bio(c->ssl, bio, bio); // one reference, taken by the SSL
    SSL_set_app_data(c->ssl, c);
    SSL_set_shed_handshake_config(c->ssl, 1);
    SSL_set_mode(c->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (server) {
        SSL_set_accept_state(c->ssl);
        return 1;
    }
    SSL_set_connect_state(c->ssl);
    const struct tg_target *t = &conn_lconf(w, c)->targets[c->target];
    struct in6_addr tmp;
    // SNI names the provider host; an IP literal is not a valid server name.
    if (inet_pton(AF_INET, t->host, &tmp) != 1 && inet_pton(AF_INET6, t->host, &tmp) != 1)
        SSL_set_tlsext_host_name(c->ssl, t->host);
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Connection life cycle.

static void conn_close(struct tg_worker *w, struct tg_conn *c, const char *why);
static void conn_step(struct tg_worker *w, struct tg_conn *c);
static void sip_tls_read(struct tg_worker *w, struct tg_conn *c, struct tg_sipconn *sc);
static uint32_t sip_plain_feed(struct tg_worker *w, struct tg_conn *c, struct tg_sipconn *sc,
                               const uint8_t *data, uint32_t len);
static struct vcache_entry *vcache_find(struct tg_worker *w, const SSL *ssl, int64_t now);
static void start_connect(struct tg_worker *w, struct tg_conn *c);

static void probe_conn_gone(struct tg_worker *w, struct tg_conn *c);
static void probe_send(struct tg_worker *w, struct tg_conn *c);
static void probe_read(struct tg_worker *w, struct tg_conn *c);

static struct tg_conn *conn_alloc(struct tg_worker *w) {
    if (w->free_head == TG_NIL)
        return NULL;
    struct tg_conn *c = &w->conns[w->free_head];
    w->free_head = c->next;
    uint32_t gen = c->gen + 1;
    memset(c, 0, sizeof(*c));
    c->gen = gen;
    c->tls_fd = -1;
    c->plain_fd = -1;
    c->prev = c->next = TG_NIL;
    c->seq = ++w->next_seq;
    w->num_active++;
    return c;
}

static void conn_free(struct tg_worker *w, struct tg_conn *c) {
    list_unlink(w, c);
    if (c->tls_fd >= 0)
        close(c->tls_fd);
    if (c->plain_fd >= 0)
        close(c->plain_fd);
    SSL_free(c->ssl);
    bufq_reset(&c->to_plain);
    bufq_reset(&c->to_tls);
    bufq_reset(&c->pend_tls);
    bufq_reset(&c->pend_plain);
    if (c->flags & F_PROBE)
        probe_conn_gone(w, c);
    else
        tg_counter_add(&w->ctr[c->listener].conns_closed, 1);
    if (w->sip != NULL) {
        tg_sipconn_free(w->sip[conn_idx(w, c)]);
        w->sip[conn_idx(w, c)] = NULL;
    }
    c->ssl = NULL;
    c->state = CS_FREE;
    c->next = w->free_head;
    w->free_head = conn_idx(w, c);
    w->num_active--;
}

// conn_close tears the connection down: every operation is cancelled, and conn_reap frees
// the slot once the last completion has arrived. It never frees, so callers deep in the data
// path may still look at |c| after calling it.
static void conn_close(struct tg_worker *w, struct tg_conn *c, const char *why) {
    if (c->state == CS_CLOSING || c->state == CS_FREE)
        return;
    TG_DEBUG("conn_close", "conn=w%u-%u listener=%s why=%s", w->id, c->seq,
             conn_lconf(w, c)->name, why);
    c->state = CS_CLOSING;
    list_unlink(w, c);
    if (c->inflight == 0)
        return;
    if (c->tls_fd >= 0)
        cancel_fd(w, c->tls_fd);
    if (c->plain_fd >= 0)
        cancel_fd(w, c->plain_fd);
}

static void retry_next_target(struct tg_worker *w, struct tg_conn *c);

// conn_reap runs at the end of every event handler: a closing connection with nothing in
// flight is freed; an outbound one whose target was refused moves to the next target.
static void conn_reap(struct tg_worker *w, struct tg_conn *c) {
    while (c->inflight == 0) {
        if (c->state == CS_CLOSING) {
            conn_free(w, c);
            return;
        }
        if (!(c->flags & F_RETRY))
            return;
        retry_next_target(w, c);
    }
}

// conn_fatal ends a connection whose plain side failed: the TLS peer gets a close_notify
// (closed cleanly, not reset), then everything is closed.
static void conn_fatal(struct tg_worker *w, struct tg_conn *c, const char *why) {
    if (c->flags & F_FATAL_FLUSH)
        return;
    if (c->ssl == NULL || !SSL_is_init_finished(c->ssl) || (c->flags & F_TLS_WR_DONE) ||
        !(c->flags & F_TLS_UP)) {
        conn_close(w, c, why);
        return;
    }
    TG_DEBUG("conn_fatal", "conn=w%u-%u why=%s", w->id, c->seq, why);
    c->flags |= F_FATAL_FLUSH | F_PLAIN_RD_EOF | F_PLAIN_WR_DONE;
    bufq_reset(&c->pend_plain); // to_plain may still be under a send: freed with the slot
    if (!(c->flags & F_TLS_SHUT_SENT)) {
        SSL_shutdown(c->ssl);
        c->flags |= F_TLS_SHUT_SENT;
    }
    if (c->plain_fd >= 0 && (c->flags & (F_PLAIN_RECV | F_PLAIN_SENDING)))
        cancel_fd(w, c->plain_fd);
    conn_step(w, c);
}

static void record_handshake(struct tg_worker *w, struct tg_conn *c, enum tg_verdict v,
                             const char *detail) {
    tg_counter_add(&w->ctr[c->listener].handshakes[v], 1);
    // A policy refusal was logged, with the rule's own words, by the verify callback.
    if (v == TG_VERDICT_OK || (v <= TG_VERDICT_POLICY_MAX && v == c->verdict))
        return;
    char peer[64];
    peer_str(c->tls_fd, peer, sizeof(peer));
    TG_WARN("handshake_refused", "conn=w%u-%u listener=%s peer=%s reason=%s detail=\"%s\"", w->id,
            c->seq, conn_lconf(w, c)->name, peer, tg_verdict_name(v), detail ? detail : "");
}

static void handshake_done(struct tg_worker *w, struct tg_conn *c) {
    record_handshake(w, c, TG_VERDICT_OK, NULL);
    c->state = CS_OPEN;
    list_push(w, c, LIST_IDLE);
    if (tg_log_enabled(TG_LOG_INFO)) {
        char peer[64];
        peer_str(c->tls_fd, peer, sizeof(peer));
        TG_INFO("handshake_ok", "conn=w%u-%u listener=%s peer=%s version=%s cipher=%s", w->id,
                c->seq, conn_lconf(w, c)->name, peer, SSL_get_version(c->ssl),
                SSL_CIPHER_get_name(SSL_get_current_cipher(c->ssl)));
    }
    if (c->flags & F_PROBE) {
        probe_send(w, c);
        return;
    }
    struct tg_sipconn *sc = conn_sip(w, c);
    if (sc != NULL && sc->peer_name == NULL) {
        // A resumed session skipped the verify callback: the name is in the cache, if anywhere.
        struct vcache_entry *e = vcache_find(w, c->ssl, (int64_t)time(NULL));
        if (e != NULL)
            sc->peer_name = e->name;
    }
    if (conn_inbound(w, c))
        start_connect(w, c); // the backend is reached only for an authenticated peer
}

// handshake_failed decides, for a failed handshake, what the failure was and what happens next.
static void handshake_failed(struct tg_worker *w, struct tg_conn *c, enum tg_verdict v,
                             const char *detail) {
    record_handshake(w, c, v, detail);
    if (!conn_inbound(w, c) && !(c->flags & F_PROBE) &&
        (size_t)c->target + 1 < conn_lconf(w, c)->num_targets) {
        c->flags |= F_RETRY;
        if (c->inflight > 0)
            cancel_fd(w, c->tls_fd);
        return; // conn_reap retries once the last completion for this socket has arrived
    }
    if (bufq_len(&c->to_tls) > 0 && (c->flags & F_TLS_UP) && !(c->flags & F_TCP_EOF)) {
        // Let the peer read the alert that says why (bad_certificate, unknown_ca, ...).
        c->flags |= F_FATAL_FLUSH | F_TLS_SHUT_SENT;
        conn_step(w, c);
        return;
    }
    conn_close(w, c, "handshake_failed");
}

// ssl_failure classifies a failed SSL_do_handshake.
static void ssl_handshake_error(struct tg_worker *w, struct tg_conn *c, int ret) {
    int err = SSL_get_error(c->ssl, ret);
    char detail[128];
    unsigned long e = ERR_peek_error();
    ssl_err_str(detail, sizeof(detail));
    enum tg_verdict v = (enum tg_verdict)c->verdict;
    if (v == TG_VERDICT_OK) {
        if (ERR_GET_LIB(e) == ERR_LIB_SSL &&
            ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
            v = TG_VERDICT_NO_CERTIFICATE;
        else if (err == SSL_ERROR_SYSCALL || err == SSL_ERROR_ZERO_RETURN ||
                 ((c->flags & F_TCP_EOF) && e == 0))
            v = TG_VERDICT_PEER_CLOSED;
        else
            v = TG_VERDICT_HANDSHAKE_ERROR;
    }
    handshake_failed(w, c, v, detail);
}

// tls_pump moves ciphertext from |c->in| through BoringSSL: the handshake first, then
// plaintext into |to_plain| until the input is used up or the queue is full.
static void tls_pump(struct tg_worker *w, struct tg_conn *c) {
    if (c->state == CS_HANDSHAKE) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            int err = SSL_get_error(c->ssl, r);
            if (err == SSL_ERROR_WANT_READ && !(c->flags & F_TCP_EOF))
                return;
            ssl_handshake_error(w, c, r);
            return;
        }
        handshake_done(w, c);
        if (c->state != CS_OPEN)
            return;
    }
    if (c->state != CS_OPEN || (c->flags & F_TLS_RD_EOF))
        return;
    if (c->flags & F_PROBE) {
        probe_read(w, c);
        return;
    }
    struct tg_sipconn *sc = conn_sip(w, c);
    if (sc != NULL) {
        sip_tls_read(w, c, sc);
        return;
    }
    const uint32_t cap = w->rt->cfg->buffer_size;
    struct tg_listener_counters *ctr = &w->ctr[c->listener];
    uint64_t total = 0;
    while (bufq_len(&c->to_plain) < cap) {
        uint32_t room;
        uint8_t *dst = bufq_space(&c->to_plain, cap, (c->flags & F_PLAIN_SENDING) != 0, &room);
        if (dst == NULL) {
            conn_close(w, c, "out_of_memory");
            return;
        }
        if (room == 0)
            break; // the rest of the queue is being sent: resume when that completes
        int n = SSL_read(c->ssl, dst, (int)room);
        if (n > 0) {
            c->to_plain.tail += (uint32_t)n;
            total += (uint64_t)n;
            continue;
        }
        if (bufq_len(&c->to_plain) == 0)
            bufq_reset(&c->to_plain); // nothing was read: give the reservation back
        int err = SSL_get_error(c->ssl, n);
        if ((err == SSL_ERROR_WANT_READ && !(c->flags & F_TCP_EOF)) || err == SSL_ERROR_WANT_WRITE)
            break;
        if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL || err == SSL_ERROR_WANT_READ) {
            // close_notify, or FIN without one (a truncation we pass on as a half-close).
            c->flags |= F_TLS_RD_EOF;
            ERR_clear_error();
            break;
        }
        char detail[128];
        ssl_err_str(detail, sizeof(detail));
        TG_WARN("tls_error", "conn=w%u-%u listener=%s detail=\"%s\"", w->id, c->seq,
                conn_lconf(w, c)->name, detail);
        conn_close(w, c, "tls_error");
        return;
    }
    if (total > 0) {
        if (conn_inbound(w, c))
            tg_counter_add(&ctr->bytes_up, total);
        else
            tg_counter_add(&ctr->bytes_down, total);
    }
}

// tls_input hands ciphertext to BoringSSL straight from the provided buffer; whatever cannot
// be taken now (the plaintext queue is full) is kept in |pend_tls| and reading stops.
static void tls_input(struct tg_worker *w, struct tg_conn *c, const uint8_t *data, uint32_t len) {
    if (bufq_len(&c->pend_tls) > 0) {
        if (!bufq_append(&c->pend_tls, data, len, BUF_SIZE, 0))
            conn_close(w, c, "out_of_memory");
        return;
    }
    c->in = data;
    c->in_len = len;
    tls_pump(w, c);
    if (c->in_len > 0 && c->state != CS_CLOSING &&
        !(c->flags & (F_RETRY | F_FATAL_FLUSH | F_SIP_CLOSE))) {
        if (!bufq_append(&c->pend_tls, c->in, c->in_len, BUF_SIZE, 0))
            conn_close(w, c, "out_of_memory");
    }
    c->in = NULL;
    c->in_len = 0;
}

// tls_resume decrypts what |pend_tls| holds, once the plaintext queue has room again.
static void tls_resume(struct tg_worker *w, struct tg_conn *c) {
    uint32_t len = bufq_len(&c->pend_tls);
    // Besides pend_tls, BoringSSL itself may hold the rest of a decrypted record that did not
    // fit in to_plain: it must come out now, since no more ciphertext may ever arrive for it.
    if (len == 0 && SSL_pending(c->ssl) == 0 &&
        !((c->flags & F_TCP_EOF) && !(c->flags & F_TLS_RD_EOF)))
        return;
    c->in = c->pend_tls.data ? c->pend_tls.data + c->pend_tls.head : NULL;
    c->in_len = len;
    tls_pump(w, c);
    if (c->state != CS_CLOSING && len > 0)
        bufq_consume(&c->pend_tls, len - c->in_len);
    c->in = NULL;
    c->in_len = 0;
}

// plain_encrypt seals plaintext into |to_tls| while the queue is under its bound; returns how
// many bytes it took.
static uint32_t plain_encrypt(struct tg_worker *w, struct tg_conn *c, const uint8_t *data,
                              uint32_t len) {
    const uint32_t cap = w->rt->cfg->buffer_size;
    uint32_t done = 0;
    while (done < len && bufq_len(&c->to_tls) < cap) {
        uint32_t n = len - done < TLS_CHUNK ? len - done : TLS_CHUNK;
        uint32_t room;
        if (bufq_space(&c->to_tls, w->tls_qsize, (c->flags & F_TLS_SENDING) != 0, &room) == NULL) {
            conn_close(w, c, "out_of_memory");
            return done;
        }
        // Seal only what fits where it is written: a record never moves queued bytes.
        if (room < n + RECORD_OVERHEAD) {
            if (room < 2 * RECORD_OVERHEAD)
                break;
            n = room - RECORD_OVERHEAD;
        }
        int r = SSL_write(c->ssl, data + done, (int)n);
        if (r <= 0 && SSL_get_error(c->ssl, r) == SSL_ERROR_WANT_WRITE)
            break; // retried with the same bytes from pend_plain once the send completes
        if (r <= 0) {
            char detail[128];
            ssl_err_str(detail, sizeof(detail));
            TG_WARN("tls_error", "conn=w%u-%u listener=%s detail=\"%s\"", w->id, c->seq,
                    conn_lconf(w, c)->name, detail);
            conn_close(w, c, "tls_write_error");
            return done;
        }
        done += (uint32_t)r;
    }
    struct tg_listener_counters *ctr = &w->ctr[c->listener];
    if (conn_inbound(w, c))
        tg_counter_add(&ctr->bytes_down, done);
    else
        tg_counter_add(&ctr->bytes_up, done);
    return done;
}

static void plain_input(struct tg_worker *w, struct tg_conn *c, const uint8_t *data, uint32_t len) {
    if (bufq_len(&c->pend_plain) > 0 || (c->flags & F_TLS_SHUT_SENT)) {
        if ((c->flags & F_TLS_SHUT_SENT) == 0 && !bufq_append(&c->pend_plain, data, len, BUF_SIZE, 0))
            conn_close(w, c, "out_of_memory");
        return;
    }
    struct tg_sipconn *sc = conn_sip(w, c);
    uint32_t done =
        sc != NULL ? sip_plain_feed(w, c, sc, data, len) : plain_encrypt(w, c, data, len);
    if (c->state == CS_CLOSING)
        return;
    if (done < len && !bufq_append(&c->pend_plain, data + done, len - done, BUF_SIZE, 0))
        conn_close(w, c, "out_of_memory");
}

static void plain_resume(struct tg_worker *w, struct tg_conn *c) {
    uint32_t len = bufq_len(&c->pend_plain);
    if (len == 0)
        return;
    struct tg_sipconn *sc = conn_sip(w, c);
    const uint8_t *data = c->pend_plain.data + c->pend_plain.head;
    uint32_t done =
        sc != NULL ? sip_plain_feed(w, c, sc, data, len) : plain_encrypt(w, c, data, len);
    if (c->state != CS_CLOSING)
        bufq_consume(&c->pend_plain, done);
}

// ---------------------------------------------------------------------------------------------
// mode = sip: instead of relaying bytes, each side's plaintext is framed into messages in the
// connection's tg_sipconn, and what tg_sipconn_process makes of them is queued here: toward the
// PBX by appending to |to_plain|, toward the provider by SSL_write into |to_tls|. A message is
// processed only when its destination queue has no send in flight and is under its bound, so
// the append may grow the queue and SSL_write never has to be retried; otherwise processing
// stops (input then backs up into pend_tls / pend_plain and the receive is cancelled, as in tcp
// mode), and conn_step resumes it once the send has completed.

struct sip_arg {
    struct tg_worker *w;
    struct tg_conn *c;
};

static int sip_can_send(void *arg, enum tg_sip_side side) {
    const struct sip_arg *a = arg;
    const struct tg_conn *c = a->c;
    const uint32_t cap = a->w->rt->cfg->buffer_size;
    if (c->state != CS_OPEN || (c->flags & (F_FATAL_FLUSH | F_SIP_CLOSE)))
        return 0;
    // A side we have finished writing to never gets anything again: sip_send drops it.
    if (side == TG_SIP_SIDE_PROVIDER)
        return (c->flags & F_TLS_SHUT_SENT) ||
               ((c->flags & F_TLS_UP) && !(c->flags & F_TLS_SENDING) &&
                bufq_len(&c->to_tls) < cap);
    return (c->flags & F_PLAIN_WR_DONE) ||
           ((c->flags & F_PLAIN_UP) && !(c->flags & F_PLAIN_SENDING) &&
            bufq_len(&c->to_plain) < cap);
}

static int sip_send(void *arg, enum tg_sip_side side, const uint8_t *data, uint32_t len) {
    const struct sip_arg *a = arg;
    struct tg_worker *w = a->w;
    struct tg_conn *c = a->c;
    struct tg_listener_counters *ctr = &w->ctr[c->listener];
    // Bytes toward the far side of the listener count as up, as in tcp mode.
    int up = (side == TG_SIP_SIDE_PBX) == conn_inbound(w, c);
    if (c->flags & (side == TG_SIP_SIDE_PBX ? F_PLAIN_WR_DONE : F_TLS_SHUT_SENT))
        return 1;
    if (side == TG_SIP_SIDE_PBX) {
        if (!bufq_append(&c->to_plain, data, len, w->rt->cfg->buffer_size, 0)) {
            conn_close(w, c, "out_of_memory");
            return 0;
        }
    } else {
        struct tg_sipconn *sc = conn_sip(w, c);
        if (sc != NULL)
            sc->provider_seen = w->now;
        int r = SSL_write(c->ssl, data, (int)len);
        if (r != (int)len) {
            char detail[128];
            ssl_err_str(detail, sizeof(detail));
            TG_WARN("tls_error", "conn=w%u-%u listener=%s detail=\"%s\"", w->id, c->seq,
                    conn_lconf(w, c)->name, detail);
            conn_close(w, c, "tls_write_error");
            return 0;
        }
    }
    tg_counter_add(up ? &ctr->bytes_up : &ctr->bytes_down, len);
    return 1;
}

// sip_run processes what |side| has buffered. Returns 0 when the connection is going away.
static int sip_run(struct tg_worker *w, struct tg_conn *c, struct tg_sipconn *sc,
                   enum tg_sip_side side) {
    if (c->state != CS_OPEN || (c->flags & (F_FATAL_FLUSH | F_SIP_CLOSE)))
        return 0;
    struct sip_arg arg = {.w = w, .c = c};
    struct tg_sipconn_io io = {
        .arg = &arg,
        .can_send = sip_can_send,
        .send = sip_send,
        .self = {.slot = conn_idx(w, c), .gen = c->gen, .worker = (uint8_t)w->id},
        .scratch = w->sip_scratch,
        .scratch_len = w->sip_scratch_len,
        .ctr = &w->ctr[c->listener],
        .conn_seq = c->seq,
    };
    enum tg_sipconn_result r = tg_sipconn_process(sc, side, &io);
    if (r == TG_SIPCONN_CLOSE) {
        // Answered if it could be; conn_step closes the pair (close_notify after the answer).
        TG_INFO("sip_unframed", "conn=w%u-%u listener=%s side=%s", w->id, c->seq,
                conn_lconf(w, c)->name, side == TG_SIP_SIDE_PROVIDER ? "provider" : "pbx");
        // Both directions end as after a half-close from each side: what is already queued (the
        // answer included) is flushed, then close_notify and FIN, then the slot is freed.
        c->flags |= F_SIP_CLOSE | F_TLS_RD_EOF | F_PLAIN_RD_EOF;
        c->in_len = 0; // the rest of this ciphertext is not wanted
        return 0;
    }
    return r != TG_SIPCONN_FAILED && c->state == CS_OPEN;
}

// sip_resume processes what both sides have buffered, once a send has made room. Returns 0
// when the connection is closing.
static int sip_resume(struct tg_worker *w, struct tg_conn *c, struct tg_sipconn *sc) {
    if (c->flags & (F_FATAL_FLUSH | F_SIP_CLOSE))
        return c->state != CS_CLOSING;
    if (sc->in_len[TG_SIP_SIDE_PROVIDER] > 0)
        sip_run(w, c, sc, TG_SIP_SIDE_PROVIDER);
    if (c->state == CS_OPEN && sc->in_len[TG_SIP_SIDE_PBX] > 0)
        sip_run(w, c, sc, TG_SIP_SIDE_PBX);
    return c->state != CS_CLOSING;
}

// sip_drop_pending forgets the input a closing SIP stream will never process, so that the
// half-closes that end it are not held back. Not while the input is being read (|c->in|).
static void sip_drop_pending(struct tg_conn *c) {
    if (!(c->flags & F_SIP_CLOSE) || c->in != NULL)
        return;
    bufq_reset(&c->pend_tls);
    bufq_reset(&c->pend_plain);
}

// sip_tls_read decrypts into the provider side's input buffer and processes it, until
// BoringSSL wants more ciphertext or the buffer is full (its messages waiting for a queue).
static void sip_tls_read(struct tg_worker *w, struct tg_conn *c, struct tg_sipconn *sc) {
    for (;;) {
        if (!sip_run(w, c, sc, TG_SIP_SIDE_PROVIDER))
            return;
        uint32_t room;
        uint8_t *dst = tg_sipconn_reserve(sc, TG_SIP_SIDE_PROVIDER, &room);
        if (dst == NULL) {
            conn_close(w, c, "out_of_memory");
            return;
        }
        if (room == 0)
            return;
        int n = SSL_read(c->ssl, dst, (int)room);
        if (n > 0) {
            tg_sipconn_commit(sc, TG_SIP_SIDE_PROVIDER, (uint32_t)n);
            continue;
        }
        tg_sipconn_commit(sc, TG_SIP_SIDE_PROVIDER, 0); // gives an empty buffer back
        int err = SSL_get_error(c->ssl, n);
        if ((err == SSL_ERROR_WANT_READ && !(c->flags & F_TCP_EOF)) || err == SSL_ERROR_WANT_WRITE)
            return;
        if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL ||
            err == SSL_ERROR_WANT_READ) {
            c->flags |= F_TLS_RD_EOF;
            ERR_clear_error();
            return;
        }
        char detail[128];
        ssl_err_str(detail, sizeof(detail));
        TG_WARN("tls_error", "conn=w%u-%u listener=%s detail=\"%s\"", w->id, c->seq,
                conn_lconf(w, c)->name, detail);
        conn_close(w, c, "tls_error");
        return;
    }
}

// sip_plain_feed takes plaintext from the PBX into its input buffer and processes it; returns
// how many bytes it took (all of them when the connection is going away: they are dropped).
static uint32_t sip_plain_feed(struct tg_worker *w, struct tg_conn *c, struct tg_sipconn *sc,
                               const uint8_t *data, uint32_t len) {
    uint32_t done = 0;
    for (;;) {
        if (!sip_run(w, c, sc, TG_SIP_SIDE_PBX))
            return len;
        if (done == len)
            return done;
        long n = tg_sipconn_feed(sc, TG_SIP_SIDE_PBX, data + done, len - done);
        if (n < 0) {
            conn_close(w, c, "out_of_memory");
            return len;
        }
        if (n == 0)
            return done; // the buffer is full of messages waiting for a queue
        done += (uint32_t)n;
    }
}

// sip_fqdn_port is the port the provider reaches us on: an inbound listener's own port; for
// an outbound one, the first inbound SIP listener's (5061 when there is none).
static uint16_t sip_fqdn_port(const struct tg_worker *w, const struct tg_listener_conf *lc) {
    if (lc->direction == TG_INBOUND)
        return lc->listen.port;
    const struct tg_config *cfg = w->rt->cfg;
    for (size_t l = 0; l < cfg->num_listeners; l++)
        if (cfg->listeners[l].direction == TG_INBOUND && cfg->listeners[l].mode == TG_MODE_SIP)
            return cfg->listeners[l].listen.port;
    return 5061;
}

// sip_attach gives a new connection of a SIP listener, accepted as |fd|, its state. Returns 0
// when memory is short.
static int sip_attach(struct tg_worker *w, struct tg_conn *c, int fd) {
    const struct tg_listener_conf *lc = conn_lconf(w, c);
    struct tg_sipconn *sc = tg_sipconn_new(w->rt->cfg->fqdn, sip_fqdn_port(w, lc), w->rt->sip_key);
    if (sc == NULL)
        return 0;
    tg_sipconn_set_max_message(sc, lc->sip_max_message);
    if (lc->direction == TG_OUTBOUND) {
        // The PBX reaches us where it reached this connection: the accepted socket's local
        // address (a wildcard listener has no better one), else the listener's.
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0)
            tg_sipconn_set_inside(sc, (const struct sockaddr *)&ss);
        else
            tg_sipconn_set_inside(sc, (const struct sockaddr *)&lc->listen.addr);
    }
    w->sip[conn_idx(w, c)] = sc;
    return 1;
}

// sip_note_peer remembers the verified provider name of a SIP connection.
static void sip_note_peer(struct tg_worker *w, struct tg_conn *c, const char *name) {
    struct tg_sipconn *sc = conn_sip(w, c);
    if (sc != NULL)
        sc->peer_name = name;
}

// conn_step brings the connection's operations in line with its state: it resumes what
// backpressure held back, starts sends, propagates half-closes, arms or cancels the receives
// (level-triggered: each call recomputes what should be armed), and closes a finished
// connection.
static void conn_step(struct tg_worker *w, struct tg_conn *c) {
    if (c->state == CS_CLOSING || c->state == CS_FREE || (c->flags & F_RETRY))
        return;
    const uint32_t cap = w->rt->cfg->buffer_size;
    uint32_t f;

    if (c->state == CS_OPEN) {
        struct tg_sipconn *sc = conn_sip(w, c);
        sip_drop_pending(c);
        if (sc != NULL && !sip_resume(w, c, sc))
            return;
        if (bufq_len(&c->to_plain) < cap)
            tls_resume(w, c);
        if (c->state == CS_CLOSING)
            return;
        if (bufq_len(&c->to_tls) < cap && !(c->flags & F_TLS_SHUT_SENT))
            plain_resume(w, c);
        if (c->state == CS_CLOSING)
            return;
        sip_drop_pending(c);
    }
    f = c->flags;

    // A SIP side whose complete messages wait for a queue is not finished yet; what is left
    // of an incomplete one after EOF never will be.
    struct tg_sipconn *sc = conn_sip(w, c);
    int sip_wait_pbx = sc != NULL && sc->blocked[TG_SIP_SIDE_PBX] && !(f & F_SIP_CLOSE);
    int sip_wait_prov = sc != NULL && sc->blocked[TG_SIP_SIDE_PROVIDER] && !(f & F_SIP_CLOSE);

    // Half-close from the plain side: our close_notify once everything before it is sealed.
    if (c->state == CS_OPEN && (f & F_PLAIN_RD_EOF) && bufq_len(&c->pend_plain) == 0 &&
        !sip_wait_pbx && !(f & F_TLS_SHUT_SENT)) {
        SSL_shutdown(c->ssl);
        c->flags |= F_TLS_SHUT_SENT;
    }
    f = c->flags;
    if ((f & F_TLS_UP) && bufq_len(&c->to_tls) > 0 && !(f & F_TLS_SENDING))
        submit_send(w, c, 1);
    if ((f & F_PLAIN_UP) && bufq_len(&c->to_plain) > 0 && !(f & (F_PLAIN_SENDING | F_PLAIN_WR_DONE)))
        submit_send(w, c, 0);
    f = c->flags;
    if ((f & F_TLS_SHUT_SENT) && !(f & F_TLS_SENDING) && bufq_len(&c->to_tls) == 0 &&
        !(f & F_TLS_WR_DONE)) {
        if (f & F_FATAL_FLUSH) {
            conn_close(w, c, "fatal_flushed");
            return;
        }
        shutdown(c->tls_fd, SHUT_WR);
        c->flags |= F_TLS_WR_DONE;
    }
    // Half-close from the TLS side: FIN to the plain side once its queue is empty.
    if ((f & F_TLS_RD_EOF) && (f & F_PLAIN_UP) && !(f & F_PLAIN_SENDING) &&
        bufq_len(&c->to_plain) == 0 && bufq_len(&c->pend_tls) == 0 && !sip_wait_prov &&
        !(f & F_PLAIN_WR_DONE)) {
        shutdown(c->plain_fd, SHUT_WR);
        c->flags |= F_PLAIN_WR_DONE;
    }
    f = c->flags;
    const uint32_t done = F_TLS_RD_EOF | F_PLAIN_RD_EOF | F_TLS_WR_DONE | F_PLAIN_WR_DONE;
    if ((f & done) == done) {
        conn_close(w, c, "finished");
        return;
    }

    // Receives: armed exactly when the data they bring can be taken.
    int want_tls = (f & F_TLS_UP) && (c->state == CS_HANDSHAKE || c->state == CS_OPEN) &&
                   !(f & (F_TLS_RD_EOF | F_TCP_EOF | F_FATAL_FLUSH)) && bufq_len(&c->pend_tls) == 0 &&
                   bufq_len(&c->to_plain) < cap;
    int want_plain = (f & F_PLAIN_UP) && c->state == CS_OPEN &&
                     !(f & (F_PLAIN_RD_EOF | F_TLS_SHUT_SENT)) &&
                     bufq_len(&c->pend_plain) == 0 && bufq_len(&c->to_tls) < cap;
    if (want_tls && !(f & F_TLS_RECV))
        submit_recv(w, c, 1);
    else if (!want_tls && (f & F_TLS_RECV) && !(f & F_TLS_RECV_CANCEL))
        cancel_recv(w, c, 1);
    if (want_plain && !(f & F_PLAIN_RECV))
        submit_recv(w, c, 0);
    else if (!want_plain && (f & F_PLAIN_RECV) && !(f & F_PLAIN_RECV_CANCEL))
        cancel_recv(w, c, 0);
}

// ---------------------------------------------------------------------------------------------
// OPTIONS keepalive toward the provider (outbound SIP listeners, worker 0 only): one mutual-TLS
// connection per connect target, made by the same connect and client-handshake code as a PBX's
// connection but with no plain side (F_PROBE). Every `options_interval_s` an OPTIONS goes out on
// it; any final response within min(interval, 10 s) is a success, anything else (no answer,
// connect or handshake failure, the connection lost while waiting) a failure. After
// `options_failures` consecutive failures the target is down, after one success up again. New
// PBX connections through the listener start at the first target that is not down.

static inline struct probe *probe_at(struct tg_worker *w, size_t listener, size_t target) {
    return &w->probes[listener * TG_MAX_TARGETS + target];
}

static inline struct tg_target_health *target_health(const struct tg_worker *w, size_t listener,
                                                     size_t target) {
    return &w->rt->metrics->targets[listener * TG_METRICS_MAX_TARGETS + target];
}

static int probed_listener(const struct tg_listener_conf *lc) {
    return lc->direction == TG_OUTBOUND && lc->mode == TG_MODE_SIP && lc->options_interval_s > 0;
}

// pick_target returns the first target from |from| on that is not marked down, or |from| when
// all of them are (they are then still tried in order).
static uint8_t pick_target(const struct tg_worker *w, uint16_t listener, unsigned from) {
    const struct tg_listener_conf *lc = &w->rt->cfg->listeners[listener];
    if (!probed_listener(lc))
        return (uint8_t)from;
    for (size_t t = from; t < lc->num_targets; t++) {
        uint8_t st = atomic_load_explicit(&target_health(w, listener, t)->state,
                                          memory_order_relaxed);
        if (st != TG_TARGET_DOWN)
            return (uint8_t)t;
    }
    return (uint8_t)from;
}

// probes_init sets up worker 0's probes, if any listener wants them. Returns 0 when memory is
// short.
static int probes_init(struct tg_worker *w) {
    const struct tg_config *cfg = w->rt->cfg;
    int any = 0;
    for (size_t l = 0; l < cfg->num_listeners; l++)
        any |= probed_listener(&cfg->listeners[l]);
    if (!any || w->sip == NULL)
        return 1;
    w->probes = calloc(cfg->num_listeners * TG_MAX_TARGETS, sizeof(*w->probes));
    if (w->probes == NULL)
        return 0;
    for (size_t l = 0; l < cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        for (size_t t = 0; t < TG_MAX_TARGETS; t++)
            probe_at(w, l, t)->conn = TG_NIL;
        if (!probed_listener(lc))
            continue;
        for (size_t t = 0; t < lc->num_targets; t++) {
            struct tg_target_health *h = target_health(w, l, t);
            const struct tg_target *tt = &lc->targets[t];
            snprintf(h->name, sizeof(h->name), strchr(tt->host, ':') ? "[%s]:%u" : "%s:%u",
                     tt->host, tt->port);
            atomic_store_explicit(&h->state, TG_TARGET_UP, memory_order_release);
        }
    }
    return 1;
}

// probe_result records the outcome of one OPTIONS transaction.
static void probe_result(struct tg_worker *w, size_t l, size_t t, int ok, const char *why) {
    struct probe *p = probe_at(w, l, t);
    const struct tg_listener_conf *lc = &w->rt->cfg->listeners[l];
    struct tg_target_health *h = target_health(w, l, t);
    p->awaiting = 0;
    if (ok) {
        p->failures = 0;
        if (!p->down)
            return;
        p->down = 0;
        atomic_store_explicit(&h->state, TG_TARGET_UP, memory_order_release);
        TG_INFO("sip_target_up", "listener=%s target=%s", lc->name, h->name);
        return;
    }
    if (p->failures < UINT8_MAX)
        p->failures++;
    TG_DEBUG("sip_options_failed", "listener=%s target=%s failures=%u why=%s", lc->name, h->name,
             p->failures, why);
    if (p->down || p->failures < lc->options_failures)
        return;
    p->down = 1;
    atomic_store_explicit(&h->state, TG_TARGET_DOWN, memory_order_release);
    TG_WARN("sip_target_down", "listener=%s target=%s failures=%u why=%s", lc->name, h->name,
            p->failures, why);
}

// probe_conn_gone runs when a probe connection's slot is freed: an OPTIONS still waiting for
// its answer has failed.
static void probe_conn_gone(struct tg_worker *w, struct tg_conn *c) {
    if (w->probes == NULL)
        return;
    struct probe *p = probe_at(w, c->listener, c->target);
    if (p->conn != conn_idx(w, c) || p->gen != c->gen)
        return;
    p->conn = TG_NIL;
    if (p->awaiting && !w->draining)
        probe_result(w, c->listener, c->target, 0, "connection_lost");
}

// probe_send writes one OPTIONS on the open probe connection |c|.
static void probe_send(struct tg_worker *w, struct tg_conn *c) {
    const struct tg_listener_conf *lc = conn_lconf(w, c);
    const struct tg_target *t = &lc->targets[c->target];
    struct probe *p = probe_at(w, c->listener, c->target);
    const char *fqdn = w->rt->cfg->fqdn;
    const char *hfmt = strchr(t->host, ':') ? "[%s]" : "%s";
    char host[TG_HOST_MAX + 2];
    snprintf(host, sizeof(host), hfmt, t->host);
    p->cseq++;
    char msg[2048];
    int n = snprintf(msg, sizeof(msg),
                     "OPTIONS sip:%s:%u;transport=tls SIP/2.0\r\n"
                     "Via: SIP/2.0/TLS %s:%u;branch=z9hG4bK-tgopt-%u-%u-%u\r\n"
                     "Max-Forwards: 70\r\n"
                     "From: <sip:%s>;tag=tlsgate-%u-%u\r\n"
                     "To: <sip:%s:%u>\r\n"
                     "Call-ID: tlsgate-options-%u-%u-%u@%s\r\n"
                     "CSeq: %u OPTIONS\r\n"
                     "Content-Length: 0\r\n\r\n",
                     host, t->port, fqdn, sip_fqdn_port(w, lc), c->listener, c->target, p->cseq,
                     fqdn, c->listener, c->target, host, t->port, c->listener, c->target, c->seq,
                     fqdn, p->cseq);
    if (n <= 0 || (size_t)n >= sizeof(msg) || SSL_write(c->ssl, msg, n) != n) {
        ERR_clear_error();
        conn_close(w, c, "options_write_failed");
        return;
    }
    conn_step(w, c);
}

// probe_read decrypts what the target sent on a probe connection into |to_plain| (unused
// otherwise: there is no plain side) and looks at each complete message: a final response
// while an OPTIONS is outstanding is the success; anything else is ignored.
static void probe_read(struct tg_worker *w, struct tg_conn *c) {
    struct probe *p = probe_at(w, c->listener, c->target);
    for (;;) {
        uint8_t buf[4096];
        int n = SSL_read(c->ssl, buf, (int)sizeof(buf));
        if (n > 0) {
            if (bufq_len(&c->to_plain) + (uint32_t)n > TG_SIPCONN_MAX_MESSAGE ||
                !bufq_append(&c->to_plain, buf, (uint32_t)n, BUF_SIZE, 0)) {
                conn_close(w, c, "options_input_overflow");
                return;
            }
            continue;
        }
        int err = SSL_get_error(c->ssl, n);
        if ((err == SSL_ERROR_WANT_READ && !(c->flags & F_TCP_EOF)) || err == SSL_ERROR_WANT_WRITE)
            break;
        ERR_clear_error();
        c->flags |= F_TLS_RD_EOF;
        conn_close(w, c, "options_peer_closed");
        return;
    }
    struct tg_sip_header hdrs[64];
    struct tg_sip_msg m;
    while (bufq_len(&c->to_plain) > 0) {
        const uint8_t *data = c->to_plain.data + c->to_plain.head;
        uint32_t len = bufq_len(&c->to_plain);
        enum tg_sip_scan_result s = tg_sip_scan(NULL, &m, hdrs, 64, data, len);
        if (s == TG_SIP_NEED_MORE)
            return;
        if (s == TG_SIP_ERROR && (!m.can_continue || m.len == 0 || m.len > len)) {
            conn_close(w, c, "options_unframed");
            return;
        }
        if (s == TG_SIP_MESSAGE && !m.is_request && m.code >= 200 && p->awaiting)
            probe_result(w, c->listener, c->target, 1, "answered");
        bufq_consume(&c->to_plain, m.len);
    }
}

// probe_tick sends the OPTIONS that are due and fails those that waited too long.
static void probe_tick(struct tg_worker *w) {
    const struct tg_config *cfg = w->rt->cfg;
    for (size_t l = 0; l < cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        if (!probed_listener(lc))
            continue;
        uint32_t interval = lc->options_interval_s * 1000u;
        uint32_t timeout = interval < 10000u ? interval : 10000u;
        for (size_t t = 0; t < lc->num_targets; t++) {
            struct probe *p = probe_at(w, l, t);
            struct tg_conn *c = NULL;
            if (p->conn != TG_NIL && w->conns[p->conn].gen == p->gen &&
                w->conns[p->conn].state != CS_FREE && w->conns[p->conn].state != CS_CLOSING)
                c = &w->conns[p->conn];
            if (p->awaiting) {
                if (!ms_reached(w->now, p->sent + timeout))
                    continue;
                probe_result(w, l, t, 0, "timeout");
                if (c != NULL) {
                    conn_close(w, c, "options_timeout");
                    conn_reap(w, c);
                }
                continue;
            }
            if (!ms_reached(w->now, p->due))
                continue;
            p->due = w->now + interval;
            p->awaiting = 1;
            p->sent = w->now;
            if (c != NULL) {
                if (c->state == CS_OPEN)
                    probe_send(w, c);
                conn_reap(w, c);
                continue;
            }
            if (p->conn != TG_NIL)
                continue; // the previous connection is still being torn down: fails on timeout
            c = conn_alloc(w);
            if (c == NULL) {
                probe_result(w, l, t, 0, "no_free_slot");
                continue;
            }
            c->listener = (uint16_t)l;
            c->target = (uint8_t)t;
            c->flags |= F_PROBE;
            c->state = CS_CONNECTING;
            p->conn = conn_idx(w, c);
            p->gen = c->gen;
            list_push(w, c, LIST_HANDSHAKE); // the handshake timeout covers connecting too
            start_connect(w, c);
            conn_reap(w, c);
        }
    }
}

// probe_close_all ends the probe connections when the worker drains.
static void probe_close_all(struct tg_worker *w) {
    for (size_t i = 0; w->probes != NULL && i < w->num_listeners * TG_MAX_TARGETS; i++) {
        struct probe *p = &w->probes[i];
        p->awaiting = 0;
        if (p->conn == TG_NIL)
            continue;
        struct tg_conn *c = &w->conns[p->conn];
        if (c->gen != p->gen || c->state == CS_FREE)
            continue;
        conn_close(w, c, "draining");
        conn_reap(w, c);
    }
}

// keepalive_tick sends our CRLFCRLF ping on each SIP connection whose provider side has been
// idle for its listener's keepalive_interval_ms. The CRLF pong clears |pong_wait|; a missing
// pong is logged at debug level, the connection is not closed for it.
static void keepalive_tick(struct tg_worker *w) {
    w->next_keepalive = w->now + 250;
    for (uint32_t i = 0; i < w->max_conns; i++) {
        struct tg_sipconn *sc = w->sip[i];
        struct tg_conn *c = &w->conns[i];
        if (sc == NULL || c->state != CS_OPEN || (c->flags & (F_PROBE | F_TLS_SHUT_SENT)))
            continue;
        uint32_t interval = conn_lconf(w, c)->keepalive_interval_ms;
        if (interval == 0 || !(c->flags & F_TLS_UP))
            continue;
        if (sc->provider_seen == 0) {
            sc->provider_seen = w->now;
            continue;
        }
        if (!ms_reached(w->now, sc->provider_seen + interval))
            continue;
        struct sip_arg arg = {.w = w, .c = c};
        if (!sip_can_send(&arg, TG_SIP_SIDE_PROVIDER)) {
            sc->provider_seen = w->now;
            continue;
        }
        if (sc->pong_wait)
            TG_DEBUG("sip_no_pong", "conn=w%u-%u listener=%s", w->id, c->seq,
                     conn_lconf(w, c)->name);
        if (!sip_send(&arg, TG_SIP_SIDE_PROVIDER, (const uint8_t *)"\r\n\r\n", 4)) {
            conn_reap(w, c);
            continue;
        }
        sc->pong_wait = 1;
        conn_step(w, c);
        conn_reap(w, c);
    }
}

// start_connect opens the far-side socket: the backend (inbound, after the handshake) or the
// current connect target (outbound, before it).
static void start_connect(struct tg_worker *w, struct tg_conn *c) {
    const struct tg_listener_conf *lc = conn_lconf(w, c);
    const struct tg_target *t = &lc->targets[c->target];
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        TG_ERROR("socket_failed", "conn=w%u-%u listener=%s error=\"%s\"", w->id, c->seq, lc->name,
                 strerror(errno));
        if (lc->direction == TG_INBOUND)
            conn_fatal(w, c, "socket_failed");
        else
            conn_close(w, c, "socket_failed");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (lc->direction == TG_INBOUND)
        c->plain_fd = fd;
    else
        c->tls_fd = fd;
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&t->addr, t->addr_len);
    io_uring_sqe_set_data64(sqe, ud_make(OP_CONNECT, conn_idx(w, c), c->gen));
    c->inflight++;
}

static void on_connect(struct tg_worker *w, struct tg_conn *c, int res) {
    const struct tg_listener_conf *lc = conn_lconf(w, c);
    if (c->state == CS_CLOSING)
        return;
    if (res < 0 && (c->flags & F_PROBE)) {
        TG_DEBUG("options_connect_failed", "conn=w%u-%u listener=%s target=%u error=\"%s\"",
                 w->id, c->seq, lc->name, c->target, strerror(-res));
        conn_close(w, c, "options_connect_failed");
        return;
    }
    if (res < 0) {
        char target[80];
        tg_target_format(&lc->targets[c->target], target, sizeof(target));
        tg_counter_add(&w->ctr[c->listener].upstream_connect_errors, 1);
        TG_WARN("connect_failed", "conn=w%u-%u listener=%s target=%s error=\"%s\"", w->id, c->seq,
                lc->name, target, strerror(-res));
        if (lc->direction == TG_INBOUND) {
            conn_fatal(w, c, "backend_connect_failed");
            return;
        }
        c->connect_failures++;
        if ((size_t)c->target + 1 < lc->num_targets) {
            close(c->tls_fd);
            c->tls_fd = -1;
            c->target = pick_target(w, c->listener, c->target + 1u);
            start_connect(w, c);
            return;
        }
        if (c->connect_failures == lc->num_targets)
            tg_counter_add(&w->ctr[c->listener].handshakes[TG_VERDICT_CONNECT_FAILED], 1);
        conn_close(w, c, "no_target_reachable");
        return;
    }
    if (lc->direction == TG_INBOUND) {
        c->flags |= F_PLAIN_UP;
        struct tg_sipconn *sc = conn_sip(w, c);
        if (sc != NULL) {
            // Our address toward the PBX is the local end of this very connection.
            struct sockaddr_storage ss;
            socklen_t sl = sizeof(ss);
            if (getsockname(c->plain_fd, (struct sockaddr *)&ss, &sl) == 0)
                tg_sipconn_set_inside(sc, (const struct sockaddr *)&ss);
        }
        conn_step(w, c);
        return;
    }
    // Outbound: the provider's TCP connection is up; start the client handshake.
    c->flags |= F_TLS_UP;
    if (!conn_new_ssl(w, c, 0)) {
        conn_close(w, c, "ssl_new_failed");
        return;
    }
    c->state = CS_HANDSHAKE;
    list_push(w, c, LIST_HANDSHAKE);
    int r = SSL_do_handshake(c->ssl); // writes the ClientHello into to_tls
    if (r != 1 && SSL_get_error(c->ssl, r) != SSL_ERROR_WANT_READ) {
        ssl_handshake_error(w, c, r);
        return;
    }
    conn_step(w, c);
}

// retry_next_target runs once every completion for a refused target's socket has arrived.
static void retry_next_target(struct tg_worker *w, struct tg_conn *c) {
    close(c->tls_fd);
    c->tls_fd = -1;
    SSL_free(c->ssl);
    c->ssl = NULL;
    bufq_reset(&c->to_tls);
    bufq_reset(&c->pend_tls);
    c->flags &= ~(F_RETRY | F_TLS_UP | F_TCP_EOF | F_TLS_RECV | F_TLS_RECV_CANCEL | F_TLS_SENDING);
    c->verdict = TG_VERDICT_OK;
    c->target = pick_target(w, c->listener, c->target + 1u);
    c->state = CS_CONNECTING;
    list_unlink(w, c);
    start_connect(w, c);
}

static void on_accept(struct tg_worker *w, uint32_t listener, struct io_uring_cqe *cqe) {
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        w->accepts_armed--;
        if (w->draining || cqe->res == -ECANCELED) {
            if (w->listen_fds[listener] >= 0) {
                close(w->listen_fds[listener]);
                w->listen_fds[listener] = -1;
            }
        } else {
            struct io_uring_sqe *sqe = get_sqe(w);
            io_uring_prep_multishot_accept(sqe, w->listen_fds[listener], NULL, NULL, SOCK_CLOEXEC);
            io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT, listener, 0));
            w->accepts_armed++;
        }
    }
    if (cqe->res < 0) {
        if (cqe->res != -ECANCELED)
            TG_WARN("accept_failed", "worker=%u listener=%s error=\"%s\"", w->id,
                    w->rt->cfg->listeners[listener].name, strerror(-cqe->res));
        return;
    }
    int fd = cqe->res;
    struct tg_listener_counters *ctr = &w->ctr[listener];
    if (w->draining) {
        tg_counter_add(&ctr->rejected[TG_REJECT_DRAINING], 1);
        close(fd);
        return;
    }
    struct tg_conn *c = conn_alloc(w);
    if (c == NULL) {
        tg_counter_add(&ctr->rejected[TG_REJECT_MAX_CONNECTIONS], 1);
        TG_WARN("connection_rejected", "worker=%u listener=%s reason=max_connections", w->id,
                w->rt->cfg->listeners[listener].name);
        close(fd);
        return;
    }
    tg_counter_add(&ctr->conns_opened, 1);
    c->listener = (uint16_t)listener;
    if (w->rt->cfg->listeners[listener].mode == TG_MODE_SIP && !sip_attach(w, c, fd)) {
        close(fd);
        conn_close(w, c, "out_of_memory");
        conn_reap(w, c);
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (tg_log_enabled(TG_LOG_DEBUG)) {
        char peer[64];
        peer_str(fd, peer, sizeof(peer));
        TG_DEBUG("accept", "conn=w%u-%u listener=%s peer=%s", w->id, c->seq,
                 w->rt->cfg->listeners[listener].name, peer);
    }
    if (conn_inbound(w, c)) {
        c->tls_fd = fd;
        c->flags |= F_TLS_UP;
        if (!conn_new_ssl(w, c, 1)) {
            conn_close(w, c, "ssl_new_failed");
            conn_reap(w, c);
            return;
        }
        c->state = CS_HANDSHAKE;
        list_push(w, c, LIST_HANDSHAKE);
        conn_step(w, c);
    } else {
        c->plain_fd = fd;
        c->flags |= F_PLAIN_UP;
        c->target = pick_target(w, c->listener, 0);
        c->state = CS_CONNECTING;
        list_push(w, c, LIST_HANDSHAKE); // the handshake timeout covers connecting too
        start_connect(w, c);
    }
    conn_reap(w, c);
}

static void on_recv(struct tg_worker *w, struct tg_conn *c, int tls, struct io_uring_cqe *cqe) {
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more)
        c->flags &= tls ? ~(F_TLS_RECV | F_TLS_RECV_CANCEL) : ~(F_PLAIN_RECV | F_PLAIN_RECV_CANCEL);
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe->res > 0 && c->state != CS_CLOSING && !(c->flags & (F_RETRY | F_FATAL_FLUSH))) {
            const uint8_t *data = w->bufs + (size_t)bid * BUF_SIZE;
            conn_touch(w, c);
            struct tg_sipconn *sc = tls ? conn_sip(w, c) : NULL;
            if (sc != NULL)
                sc->provider_seen = w->now;
            if (tls)
                tls_input(w, c, data, (uint32_t)cqe->res);
            else
                plain_input(w, c, data, (uint32_t)cqe->res);
        }
        return_buffer(w, bid); // at once: a slow peer never holds the pool
    }
    if (c->state == CS_CLOSING || (c->flags & F_RETRY))
        return;
    if (cqe->res == 0) {
        if (tls) {
            c->flags |= F_TCP_EOF;
            if (c->state == CS_HANDSHAKE) {
                c->in = NULL;
                c->in_len = 0;
                tls_pump(w, c); // lets BoringSSL see the EOF and classify it
            }
        } else {
            c->flags |= F_PLAIN_RD_EOF;
        }
    } else if (cqe->res < 0 && cqe->res != -ENOBUFS && cqe->res != -ECANCELED) {
        TG_DEBUG("recv_error", "conn=w%u-%u side=%s error=\"%s\"", w->id, c->seq,
                 tls ? "tls" : "plain", strerror(-cqe->res));
        if (tls && c->state == CS_HANDSHAKE) {
            // A reset mid-handshake is a failed handshake: counted, and for outbound the next
            // target is tried.
            c->flags |= F_TCP_EOF;
            handshake_failed(w, c, TG_VERDICT_PEER_CLOSED, strerror(-cqe->res));
            return;
        }
        if (tls || c->state != CS_OPEN)
            conn_close(w, c, "recv_error");
        else
            conn_fatal(w, c, "plain_recv_error");
        return;
    }
    if (c->state != CS_CLOSING && !(c->flags & F_RETRY))
        conn_step(w, c);
}

static void on_send(struct tg_worker *w, struct tg_conn *c, int tls, int res) {
    c->flags &= tls ? ~F_TLS_SENDING : ~F_PLAIN_SENDING;
    if (c->state == CS_CLOSING || (c->flags & F_RETRY))
        return;
    if (res < 0) {
        TG_DEBUG("send_error", "conn=w%u-%u side=%s error=\"%s\"", w->id, c->seq,
                 tls ? "tls" : "plain", strerror(-res));
        if (tls)
            conn_close(w, c, "send_error");
        else
            conn_fatal(w, c, "plain_send_error");
        return;
    }
    bufq_consume(tls ? &c->to_tls : &c->to_plain, (uint32_t)res);
    conn_touch(w, c);
    conn_step(w, c);
}

static void on_conn_cqe(struct tg_worker *w, struct io_uring_cqe *cqe, enum op op) {
    uint64_t ud = cqe->user_data;
    uint32_t idx = ud_idx(ud);
    if (idx >= w->max_conns)
        return;
    struct tg_conn *c = &w->conns[idx];
    if (c->gen != ud_gen(ud) || c->state == CS_FREE) {
        // Should never happen: a slot is freed only after its last completion.
        if ((cqe->flags & IORING_CQE_F_BUFFER))
            return_buffer(w, cqe->flags >> IORING_CQE_BUFFER_SHIFT);
        return;
    }
    if (op == OP_CONNECT || !(cqe->flags & IORING_CQE_F_MORE))
        c->inflight--;
    switch (op) {
    case OP_RECV_TLS:
        on_recv(w, c, 1, cqe);
        break;
    case OP_RECV_PLAIN:
        on_recv(w, c, 0, cqe);
        break;
    case OP_SEND_TLS:
        on_send(w, c, 1, cqe->res);
        break;
    case OP_SEND_PLAIN:
        on_send(w, c, 0, cqe->res);
        break;
    case OP_CONNECT:
        on_connect(w, c, cqe->res);
        break;
    default:
        break;
    }
    conn_reap(w, c);
}

// ---------------------------------------------------------------------------------------------
// The verify callback: policy over the peer's chain, with the verdict kept on the connection
// for the metrics and the log line.

static void vcache_entry_clear(struct vcache_entry *e) {
    for (unsigned i = 0; i < e->num_certs; i++)
        CRYPTO_BUFFER_free(e->certs[i]);
    SSL_CTX_free(e->ctx);
    memset(e, 0, sizeof(*e));
}

static struct vcache_entry *vcache_find(struct tg_worker *w, const SSL *ssl, int64_t now) {
    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
    size_t n = certs != NULL ? sk_CRYPTO_BUFFER_num(certs) : 0;
    if (n == 0 || n > VCACHE_CHAIN_MAX)
        return NULL;
    for (unsigned i = 0; i < VCACHE_SIZE; i++) {
        struct vcache_entry *e = &w->vcache[i];
        if (e->ctx != SSL_get_SSL_CTX(ssl) || e->num_certs != n || now >= e->valid_until)
            continue;
        size_t k = 0;
        while (k < n && e->certs[k] == sk_CRYPTO_BUFFER_value(certs, k))
            k++;
        if (k == n)
            return e;
    }
    return NULL;
}

static void vcache_add(struct tg_worker *w, const SSL *ssl, int64_t now, const char *name,
                       X509 *leaf) {
    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
    size_t n = certs != NULL ? sk_CRYPTO_BUFFER_num(certs) : 0;
    if (n == 0 || n > VCACHE_CHAIN_MAX)
        return;
    struct vcache_entry *e = &w->vcache[w->vcache_next++ % VCACHE_SIZE];
    vcache_entry_clear(e);
    tg_control_peer_info(leaf, e->issuer, sizeof(e->issuer), &e->not_after);
    e->valid_until = now + VCACHE_TTL < e->not_after ? now + VCACHE_TTL : e->not_after;
    e->ctx = SSL_get_SSL_CTX(ssl);
    SSL_CTX_up_ref(e->ctx);
    for (size_t i = 0; i < n; i++) {
        e->certs[i] = (CRYPTO_BUFFER *)sk_CRYPTO_BUFFER_value(certs, i);
        CRYPTO_BUFFER_up_ref(e->certs[i]);
    }
    e->num_certs = (uint8_t)n;
    e->name = name;
}

enum ssl_verify_result_t tg_verify_peer(SSL *ssl, uint8_t *out_alert) {
    struct tg_conn *c = SSL_get_app_data(ssl);
    struct tg_worker *w = t_worker;
    int64_t now = (int64_t)time(NULL);
    struct vcache_entry *hit = w != NULL ? vcache_find(w, ssl, now) : NULL;
    if (hit != NULL) {
        tg_control_note_peer_info(hit->name, hit->issuer, hit->not_after);
        TG_DEBUG("peer_verified", "conn=w%u-%u name=%s cached=yes", w->id, c->seq, hit->name);
        c->verdict = TG_VERDICT_OK;
        sip_note_peer(w, c, hit->name);
        return ssl_verify_ok;
    }
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    char detail[256] = "";
    enum tg_verdict v;
    if (!tg_tls_peer_chain(ssl, &leaf, &chain)) {
        v = TG_VERDICT_HANDSHAKE_ERROR;
        snprintf(detail, sizeof(detail), "peer certificate does not parse");
    } else {
        const char *name = NULL;
        v = tg_policy_check_peer(tg_tls_policy(ssl), leaf, chain, now, &name, detail,
                                 sizeof(detail));
        if (v == TG_VERDICT_OK) {
            tg_control_note_peer(name, leaf);
            if (w != NULL) {
                sip_note_peer(w, c, name);
                vcache_add(w, ssl, now, name, leaf);
                TG_DEBUG("peer_verified", "conn=w%u-%u name=%s", w->id, c->seq, name);
            }
        }
    }
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    c->verdict = (uint8_t)v;
    if (v == TG_VERDICT_OK)
        return ssl_verify_ok;
    if (w != NULL) {
        char peer[64];
        peer_str(c->tls_fd, peer, sizeof(peer));
        TG_WARN("handshake_refused", "conn=w%u-%u listener=%s peer=%s reason=%s detail=\"%s\"",
                w->id, c->seq, conn_lconf(w, c)->name, peer, tg_verdict_name(v), detail);
    }
    switch (v) {
    case TG_VERDICT_EXPIRED:
    case TG_VERDICT_NOT_YET_VALID:
        *out_alert = SSL_AD_CERTIFICATE_EXPIRED;
        break;
    case TG_VERDICT_UNTRUSTED:
    case TG_VERDICT_SELF_SIGNED:
        *out_alert = SSL_AD_UNKNOWN_CA;
        break;
    default:
        *out_alert = SSL_AD_BAD_CERTIFICATE;
    }
    return ssl_verify_invalid;
}

// ---------------------------------------------------------------------------------------------
// Timers and draining.

static void arm_timer(struct tg_worker *w) {
    struct io_uring_sqe *sqe = get_sqe(w);
    w->tick.tv_sec = 0;
    w->tick.tv_nsec = TICK_MS * 1000000L;
    io_uring_prep_timeout(sqe, &w->tick, 0, 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_TIMER, 0, 0));
}

static void arm_wake(struct tg_worker *w) {
    struct io_uring_sqe *sqe = get_sqe(w);
    io_uring_prep_read(sqe, w->wake_fd, &w->wake_val, sizeof(w->wake_val), 0);
    io_uring_sqe_set_data64(sqe, ud_make(OP_WAKE, 0, 0));
}

// adopt_contexts switches new connections to the generation waiting in the mailbox. Open
// connections keep theirs: each SSL holds a reference on the context it was made from.
static void adopt_contexts(struct tg_worker *w) {
    struct ctx_pair *p = atomic_exchange(&w->mailbox, NULL);
    if (p == NULL)
        return;
    SSL_CTX_free(w->server_ctx);
    SSL_CTX_free(w->client_ctx);
    w->server_ctx = p->server;
    w->client_ctx = p->client;
    free(p);
    TG_DEBUG("generation_adopted", "worker=%u", w->id);
}

static void expire_lists(struct tg_worker *w) {
    const struct tg_config *cfg = w->rt->cfg;
    struct dlist *hs = &w->lists[LIST_HANDSHAKE];
    while (hs->head != TG_NIL) {
        struct tg_conn *c = &w->conns[hs->head];
        if (!ms_reached(w->now, c->stamp + cfg->handshake_timeout_ms))
            break;
        list_unlink(w, c);
        if (!(c->flags & F_FATAL_FLUSH)) // a refused peer that does not read its alert
            record_handshake(w, c, TG_VERDICT_TIMEOUT, "handshake_timeout_ms elapsed");
        conn_close(w, c, "handshake_timeout");
        conn_reap(w, c);
    }
    struct dlist *idle = &w->lists[LIST_IDLE];
    while (cfg->idle_timeout_ms > 0 && idle->head != TG_NIL) {
        struct tg_conn *c = &w->conns[idle->head];
        if (!ms_reached(w->now, c->stamp + cfg->idle_timeout_ms))
            break;
        list_unlink(w, c);
        TG_INFO("idle_timeout", "conn=w%u-%u listener=%s", w->id, c->seq, conn_lconf(w, c)->name);
        conn_close(w, c, "idle_timeout");
        conn_reap(w, c);
    }
}

static void begin_drain(struct tg_worker *w) {
    if (w->draining)
        return;
    w->draining = 1;
    w->drain_deadline = w->now + w->rt->cfg->drain_timeout_ms;
    for (size_t l = 0; l < w->num_listeners; l++) {
        struct io_uring_sqe *sqe = get_sqe(w);
        io_uring_prep_cancel64(sqe, ud_make(OP_ACCEPT, (uint32_t)l, 0), IORING_ASYNC_CANCEL_ALL);
        io_uring_sqe_set_data64(sqe, ud_make(OP_IGNORE, 0, 0));
    }
    TG_INFO("drain_start", "worker=%u connections=%u timeout_ms=%u", w->id, w->num_active,
            w->rt->cfg->drain_timeout_ms);
    probe_close_all(w);
}

static void close_all(struct tg_worker *w) {
    for (uint32_t i = 0; i < w->max_conns; i++) {
        struct tg_conn *c = &w->conns[i];
        if (c->state != CS_FREE && c->state != CS_CLOSING) {
            conn_close(w, c, "drain_timeout");
            conn_reap(w, c);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Setup and the loop.

static int setup_ring(struct tg_worker *w) {
    struct io_uring_params p;
    memset(&p, 0, sizeof(p));
    p.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
              IORING_SETUP_COOP_TASKRUN;
    p.cq_entries = 16384;
    int r = io_uring_queue_init_params(1024, &w->ring, &p);
    if (r == -EINVAL) {
        // Kernels before 6.1 lack DEFER_TASKRUN / SINGLE_ISSUER.
        memset(&p, 0, sizeof(p));
        p.flags = IORING_SETUP_CQSIZE;
        p.cq_entries = 16384;
        r = io_uring_queue_init_params(1024, &w->ring, &p);
    }
    if (r < 0) {
        snprintf(w->init_err, w->init_err_len, "io_uring_queue_init: %s", strerror(-r));
        return 0;
    }
    // liburing 2.3 has no io_uring_setup_buf_ring: map and register the ring by hand.
    w->br_size = BUF_COUNT * sizeof(struct io_uring_buf);
    w->br = mmap(NULL, w->br_size, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (w->br == MAP_FAILED) {
        w->br = NULL;
        snprintf(w->init_err, w->init_err_len, "mmap buffer ring: %s", strerror(errno));
        return 0;
    }
    struct io_uring_buf_reg reg;
    memset(&reg, 0, sizeof(reg));
    reg.ring_addr = (unsigned long)w->br;
    reg.ring_entries = BUF_COUNT;
    reg.bgid = BUF_GROUP;
    r = io_uring_register_buf_ring(&w->ring, &reg, 0);
    if (r < 0) {
        snprintf(w->init_err, w->init_err_len, "io_uring_register_buf_ring: %s (kernel 5.19+ "
                 "needed)", strerror(-r));
        return 0;
    }
    w->bufs = malloc((size_t)BUF_COUNT * BUF_SIZE);
    if (w->bufs == NULL) {
        snprintf(w->init_err, w->init_err_len, "out of memory for receive buffers");
        return 0;
    }
    io_uring_buf_ring_init(w->br);
    for (unsigned i = 0; i < BUF_COUNT; i++)
        io_uring_buf_ring_add(w->br, w->bufs + (size_t)i * BUF_SIZE, BUF_SIZE, (unsigned short)i,
                              io_uring_buf_ring_mask(BUF_COUNT), (int)i);
    io_uring_buf_ring_advance(w->br, BUF_COUNT);
    return 1;
}

static void pin_thread(unsigned id) {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu <= 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(id % (unsigned long)ncpu), &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static void *worker_main(void *arg) {
    struct tg_worker *w = arg;
    t_worker = w;
    pin_thread(w->id);
    w->init_ok = setup_ring(w);
    sem_post(&w->ready);
    if (!w->init_ok)
        return NULL;
    w->now = now_ms();
    w->next_keepalive = w->now;
    for (size_t i = 0; w->probes != NULL && i < w->num_listeners * TG_MAX_TARGETS; i++)
        w->probes[i].due = w->now;
    for (size_t l = 0; l < w->num_listeners; l++) {
        struct io_uring_sqe *sqe = get_sqe(w);
        io_uring_prep_multishot_accept(sqe, w->listen_fds[l], NULL, NULL, SOCK_CLOEXEC);
        io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT, (uint32_t)l, 0));
        w->accepts_armed++;
    }
    arm_timer(w);
    arm_wake(w);
    if (atomic_load(&w->stop))
        begin_drain(w);

    for (;;) {
        int r = io_uring_submit_and_wait(&w->ring, 1);
        if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY) {
            TG_ERROR("io_uring_wait", "worker=%u error=\"%s\"", w->id, strerror(-r));
            break;
        }
        w->now = now_ms();
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&w->ring, head, cqe) {
            seen++;
            enum op op = ud_op(cqe->user_data);
            switch (op) {
            case OP_IGNORE:
                break;
            case OP_ACCEPT:
                on_accept(w, ud_idx(cqe->user_data), cqe);
                break;
            case OP_WAKE:
                adopt_contexts(w);
                if (atomic_load(&w->stop))
                    begin_drain(w);
                else
                    arm_wake(w);
                break;
            case OP_TIMER:
                expire_lists(w);
                if (w->probes != NULL && !w->draining)
                    probe_tick(w);
                if (w->sip != NULL && !w->draining && ms_reached(w->now, w->next_keepalive))
                    keepalive_tick(w);
                if (w->draining && w->num_active > 0 && ms_reached(w->now, w->drain_deadline))
                    close_all(w);
                arm_timer(w);
                break;
            default:
                on_conn_cqe(w, cqe, op);
                break;
            }
        }
        io_uring_cq_advance(&w->ring, seen);
        if (w->draining && w->num_active == 0 && w->accepts_armed == 0)
            break;
    }
    TG_INFO("worker_stopped", "worker=%u", w->id);
    return NULL;
}

int tg_listen_open(const struct tg_target *addr, char *err, size_t err_len) {
    char where[80];
    tg_target_format(addr, where, sizeof(where));
    int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "%s: socket: %s", where, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one));
    if (addr->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, (const struct sockaddr *)&addr->addr, addr->addr_len) != 0) {
        snprintf(err, err_len, "%s: bind: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    if (listen(fd, 4096) != 0) {
        snprintf(err, err_len, "%s: listen: %s", where, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

static void worker_free(struct tg_worker *w) {
    if (w == NULL)
        return;
    for (uint32_t i = 0; w->conns != NULL && i < w->max_conns; i++) {
        struct tg_conn *c = &w->conns[i];
        if (c->state != CS_FREE)
            conn_free(w, c);
    }
    if (w->ring.ring_fd > 0)
        io_uring_queue_exit(&w->ring);
    if (w->br != NULL)
        munmap(w->br, w->br_size);
    free(w->bufs);
    for (size_t l = 0; l < w->num_listeners; l++)
        if (w->listen_fds[l] >= 0)
            close(w->listen_fds[l]);
    free(w->listen_fds);
    free(w->conns);
    free(w->sip);
    free(w->sip_scratch);
    free(w->probes);
    if (w->wake_fd >= 0)
        close(w->wake_fd);
    SSL_CTX_free(w->server_ctx);
    SSL_CTX_free(w->client_ctx);
    ctx_pair_free(atomic_exchange(&w->mailbox, NULL));
    for (unsigned i = 0; i < VCACHE_SIZE; i++)
        vcache_entry_clear(&w->vcache[i]);
    while (w->cache_plain.num > 0)
        free(w->cache_plain.bufs[--w->cache_plain.num]);
    while (w->cache_tls.num > 0)
        free(w->cache_tls.bufs[--w->cache_tls.num]);
    sem_destroy(&w->ready);
    free(w);
}

struct tg_worker *tg_worker_start(const struct tg_runtime *rt, unsigned id, int *listen_fds,
                                  uint32_t max_conns, char *err, size_t err_len) {
    pthread_once(&g_bio_once, bio_method_init);
    struct tg_worker *w = calloc(1, sizeof(*w));
    if (w == NULL) {
        snprintf(err, err_len, "out of memory");
        return NULL;
    }
    sem_init(&w->ready, 0, 0);
    w->rt = rt;
    w->id = id;
    w->num_listeners = rt->cfg->num_listeners;
    w->listen_fds = malloc(w->num_listeners * sizeof(int));
    w->wake_fd = eventfd(0, EFD_CLOEXEC);
    w->max_conns = max_conns;
    w->conns = calloc(max_conns, sizeof(struct tg_conn));
    w->ctr = tg_metrics_worker(rt->metrics, id);
    w->tls_qsize = rt->cfg->buffer_size + TLS_SLACK;
    for (size_t l = 0; l < rt->cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &rt->cfg->listeners[l];
        uint32_t need = TG_SIPCONN_SCRATCH_FOR(lc->sip_max_message);
        if (lc->mode == TG_MODE_SIP && need > w->sip_scratch_len)
            w->sip_scratch_len = need;
    }
    for (size_t l = 0; l < rt->cfg->num_listeners && w->conns != NULL; l++) {
        if (rt->cfg->listeners[l].mode != TG_MODE_SIP || w->sip != NULL)
            continue;
        w->sip = calloc(max_conns, sizeof(*w->sip));
        w->sip_scratch = malloc(w->sip_scratch_len);
        if (w->sip == NULL || w->sip_scratch == NULL) {
            free(w->conns);
            w->conns = NULL; // reported as out of memory below
        }
    }
    if (id == 0 && w->conns != NULL && !probes_init(w)) {
        free(w->conns);
        w->conns = NULL; // reported as out of memory below
    }
    SSL_CTX_up_ref(rt->tls->server);
    SSL_CTX_up_ref(rt->tls->client);
    w->server_ctx = rt->tls->server;
    w->client_ctx = rt->tls->client;
    w->init_err = err;
    w->init_err_len = err_len;
    if (w->listen_fds == NULL || w->conns == NULL || w->wake_fd < 0) {
        snprintf(err, err_len, "out of memory");
        if (w->listen_fds != NULL) {
            memcpy(w->listen_fds, listen_fds, w->num_listeners * sizeof(int));
        } else {
            for (size_t l = 0; l < w->num_listeners; l++)
                close(listen_fds[l]);
            w->num_listeners = 0;
        }
        worker_free(w);
        return NULL;
    }
    memcpy(w->listen_fds, listen_fds, w->num_listeners * sizeof(int));
    for (uint32_t i = 0; i < max_conns; i++) {
        w->conns[i].next = i + 1 < max_conns ? i + 1 : TG_NIL;
        w->conns[i].prev = TG_NIL;
        w->conns[i].tls_fd = w->conns[i].plain_fd = -1;
    }
    w->free_head = max_conns > 0 ? 0 : TG_NIL;
    for (int l = 0; l < LIST_NUM; l++)
        w->lists[l].head = w->lists[l].tail = TG_NIL;
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
        snprintf(err, err_len, "pthread_create: %s", strerror(errno));
        worker_free(w);
        return NULL;
    }
    sem_wait(&w->ready);
    if (!w->init_ok) {
        pthread_join(w->thread, NULL);
        worker_free(w);
        return NULL;
    }
    w->init_err = NULL;
    return w;
}

void tg_worker_stop(struct tg_worker *w) {
    atomic_store(&w->stop, 1);
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
}

int tg_worker_set_contexts(struct tg_worker *w, SSL_CTX *server, SSL_CTX *client) {
    struct ctx_pair *p = malloc(sizeof(*p));
    if (p == NULL)
        return 0;
    SSL_CTX_up_ref(server);
    SSL_CTX_up_ref(client);
    p->server = server;
    p->client = client;
    // A generation the worker has not picked up yet is simply replaced.
    ctx_pair_free(atomic_exchange(&w->mailbox, p));
    uint64_t one = 1;
    ssize_t r = write(w->wake_fd, &one, sizeof(one));
    (void)r;
    return 1;
}

void tg_worker_join(struct tg_worker *w) {
    pthread_join(w->thread, NULL);
    worker_free(w);
}
