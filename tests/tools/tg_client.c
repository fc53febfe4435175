// tg-client: a BoringSSL TLS client that the integration tests drive against the proxy.
//
//   tg-client --connect ADDR:PORT [--cert PEM --key PEM] [--ca PEM] [--sni NAME]
//             [--tls 1.2|1.3] [--timeout-ms N] [--seed N] MODE
//   MODE (default --bulk 1048576):
//     --bulk BYTES [--no-echo]    one connection; stream BYTES bytes, verify the echo
//     --concurrent N [--bytes M]  N connections established at once, M bytes each (default 1024)
//     --expect-refused            succeed only if the server refuses us (alert or close)
//     --handshake-only            handshake, report version/cipher/peer CN, close
//
// Results are one line on stdout: "result=ok ...", "result=refused ...", "result=accepted ..."
// or "result=error reason=\"...\"". Exit codes: 0 ok, 1 failure, 2 usage, 3 timeout.
//
// The data stream is deterministic: xorshift64 seeded from --seed (per connection in
// --concurrent mode, so crossed connections are detected), read out as little-endian bytes.
// Write sizes come from a second xorshift64 state. Writes are regenerated from a saved stream
// state on retry, so one scratch buffer serves every connection.

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#define TG_CLIENT_MAX_CHUNK 65536u
#define TG_CLIENT_REASON_LEN 256

enum tg_client_mode {
    TG_MODE_BULK,
    TG_MODE_CONCURRENT,
    TG_MODE_EXPECT_REFUSED,
    TG_MODE_HANDSHAKE_ONLY,
};

struct tg_client_opts {
    const char *connect;
    const char *cert;
    const char *key;
    const char *ca;
    const char *sni;
    uint16_t tls_version; // 0: allow TLS 1.2 and 1.3
    uint64_t timeout_ms;
    uint64_t seed;
    enum tg_client_mode mode;
    uint64_t bytes;
    uint32_t num_conns;
    int no_echo;
};

// Global state shared by all connections of this single-threaded process.
static struct sockaddr_storage tg_addr;
static socklen_t tg_addr_len;
static uint64_t tg_deadline_ns;
static uint8_t tg_tx_scratch[TG_CLIENT_MAX_CHUNK];
static uint8_t tg_rx_scratch[TG_CLIENT_MAX_CHUNK];
static uint8_t tg_expect_scratch[TG_CLIENT_MAX_CHUNK];

// ---------------------------------------------------------------------------------------------
// Time, printing, helpers.

// tg_format is snprintf for diagnostic text, where truncation is acceptable.
__attribute__((format(printf, 3, 4))) static void tg_format(char *out, size_t out_len,
                                                            const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(out, out_len, fmt, ap);
    va_end(ap);
}

static uint64_t tg_now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

// tg_remaining_ms returns the milliseconds left before the overall deadline (0 when past it).
static int tg_remaining_ms(void) {
    uint64_t now = tg_now_ns();
    if (now >= tg_deadline_ns) {
        return 0;
    }
    uint64_t ms = (tg_deadline_ns - now + 999999u) / 1000000u;
    return ms > 0x7fffffff ? 0x7fffffff : (int)ms;
}

// tg_print_error prints the one-line error result; quotes in |reason| become apostrophes.
static void tg_print_error(const char *reason) {
    printf("result=error reason=\"");
    for (const char *p = reason; *p != '\0'; p++) {
        putchar(*p == '"' ? '\'' : *p);
    }
    printf("\"\n");
    fflush(stdout);
}

static int tg_fail_timeout(const char *what) {
    char reason[TG_CLIENT_REASON_LEN];
    tg_format(reason, sizeof(reason), "timeout: %s", what);
    tg_print_error(reason);
    return 3;
}

static void tg_raise_nofile(void) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == rl.rlim_max) {
        return;
    }
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
}

// tg_parse_u64 parses a decimal number into |out|. Returns 1 on success.
static int tg_parse_u64(uint64_t *out, const char *text) {
    char *end;
    if (text[0] < '0' || text[0] > '9') {
        return 0;
    }
    errno = 0;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno != 0 || *end != '\0') {
        return 0;
    }
    *out = v;
    return 1;
}

// tg_parse_addr parses "a.b.c.d:port" or "[v6]:port" into |out_ss|. Returns 1 on success.
static int tg_parse_addr(struct sockaddr_storage *out_ss, socklen_t *out_len, const char *text) {
    char host[128];
    const char *port_text;
    memset(out_ss, 0, sizeof(*out_ss));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - text - 1) >= sizeof(host)) {
            return 0;
        }
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        port_text = close + 2;
    } else {
        const char *colon = strrchr(text, ':');
        if (colon == NULL || (size_t)(colon - text) >= sizeof(host)) {
            return 0;
        }
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
        port_text = colon + 1;
    }
    uint64_t port;
    if (!tg_parse_u64(&port, port_text) || port == 0 || port > 65535) {
        return 0;
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)out_ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out_ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *out_len = sizeof(*sin);
        return 1;
    }
    if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *out_len = sizeof(*sin6);
        return 1;
    }
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Deterministic streams.

static uint64_t tg_splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static uint64_t tg_xorshift64(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

static uint64_t tg_xorshift_seed(uint64_t seed) {
    uint64_t s = tg_splitmix64(seed);
    return s != 0 ? s : 0x2545F4914F6CDD1Dull;
}

// tg_stream is a position in the byte stream: the xorshift state plus the bytes of the current
// 64-bit word not yet consumed. Copying the struct saves the position.
struct tg_stream {
    uint64_t state;
    uint64_t word;
    uint8_t used; // bytes of |word| already consumed; 8 means none left
};

static void tg_stream_init(struct tg_stream *s, uint64_t seed) {
    s->state = tg_xorshift_seed(seed);
    s->word = 0;
    s->used = 8;
}

static void tg_stream_fill(struct tg_stream *s, uint8_t *out, size_t out_len) {
    size_t i = 0;
    while (i < out_len) {
        if (s->used == 8) {
            s->word = tg_xorshift64(&s->state);
            s->used = 0;
            if (out_len - i >= 8) {
                uint64_t w = s->word;
                for (int b = 0; b < 8; b++) {
                    out[i + (size_t)b] = (uint8_t)(w >> (8 * b));
                }
                i += 8;
                s->used = 8;
                continue;
            }
        }
        out[i++] = (uint8_t)(s->word >> (8 * s->used));
        s->used++;
    }
}

// ---------------------------------------------------------------------------------------------
// TLS context and error text.

static int tg_ex_index = -1;

// tg_alert_slot is where the info callback records the last alert received on an SSL.
struct tg_alert_slot {
    int received; // -1 if none, else the alert description
};

static void tg_info_callback(const SSL *ssl, int where, int value) {
    // SSL_CB_READ_ALERT and SSL_CB_WRITE_ALERT share the SSL_CB_ALERT bit: test both bits.
    if ((where & SSL_CB_READ_ALERT) != SSL_CB_READ_ALERT) {
        return;
    }
    struct tg_alert_slot *slot = SSL_get_ex_data(ssl, tg_ex_index);
    if (slot != NULL && (value & 0xff) != SSL_AD_CLOSE_NOTIFY) {
        slot->received = value & 0xff;
    }
}

static SSL_CTX *tg_ctx_new(const struct tg_client_opts *opts, char *out_reason, size_t reason_len) {
    SSL_CTX *ctx = SSL_CTX_new(TLS_method());
    if (ctx == NULL) {
        tg_format(out_reason, reason_len, "SSL_CTX_new failed");
        return NULL;
    }
    uint16_t min = opts->tls_version ? opts->tls_version : TLS1_2_VERSION;
    uint16_t max = opts->tls_version ? opts->tls_version : TLS1_3_VERSION;
    if (!SSL_CTX_set_min_proto_version(ctx, min) || !SSL_CTX_set_max_proto_version(ctx, max)) {
        tg_format(out_reason, reason_len, "cannot pin TLS version");
        goto err;
    }
    if (opts->cert != NULL && (!SSL_CTX_use_certificate_chain_file(ctx, opts->cert) ||
                               !SSL_CTX_use_PrivateKey_file(ctx, opts->key, SSL_FILETYPE_PEM) ||
                               !SSL_CTX_check_private_key(ctx))) {
        tg_format(out_reason, reason_len, "cannot load client certificate %s / key %s", opts->cert,
                  opts->key);
        goto err;
    }
    if (opts->ca != NULL) {
        if (!SSL_CTX_load_verify_locations(ctx, opts->ca, NULL)) {
            tg_format(out_reason, reason_len, "cannot load CA file %s", opts->ca);
            goto err;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    } else {
        SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_info_callback(ctx, tg_info_callback);
    return ctx;

err:
    SSL_CTX_free(ctx);
    return NULL;
}

// tg_ssl_reason describes why an SSL operation returning |ret| failed: the received alert, the
// certificate verification result, the BoringSSL error queue or errno. It drains the queue.
static void tg_ssl_reason(SSL *ssl, int ret, char *out, size_t out_len) {
    int saved_errno = errno;
    int err = SSL_get_error(ssl, ret);
    uint32_t packed = ERR_get_error();
    char errbuf[160] = "";
    if (packed != 0) {
        ERR_error_string_n(packed, errbuf, sizeof(errbuf));
    }
    ERR_clear_error();
    const struct tg_alert_slot *slot = SSL_get_ex_data(ssl, tg_ex_index);
    long verify = SSL_get_verify_result(ssl);
    if (slot != NULL && slot->received >= 0) {
        tg_format(out, out_len, "received alert: %s (%s)",
                  SSL_alert_desc_string_long(slot->received), errbuf[0] ? errbuf : "no error");
    } else if (verify != X509_V_OK && SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE) {
        tg_format(out, out_len, "server certificate verify failed: %s (%s)",
                  X509_verify_cert_error_string(verify), errbuf);
    } else if (err == SSL_ERROR_ZERO_RETURN) {
        tg_format(out, out_len, "peer sent close_notify");
    } else if (err == SSL_ERROR_SYSCALL && packed == 0) {
        if (ret == 0 || saved_errno == 0) {
            tg_format(out, out_len, "connection closed by peer (EOF)");
        } else {
            tg_format(out, out_len, "socket error: %s", strerror(saved_errno));
        }
    } else if (errbuf[0] != '\0') {
        tg_format(out, out_len, "%s", errbuf);
    } else {
        tg_format(out, out_len, "SSL error %d", err);
    }
}

// ---------------------------------------------------------------------------------------------
// Connections.

enum tg_conn_state {
    TG_CONN_CONNECTING,
    TG_CONN_HANDSHAKE,
    TG_CONN_ESTABLISHED, // handshake done, waiting for the others (--concurrent)
    TG_CONN_TRANSFER,
    TG_CONN_DONE,
    TG_CONN_FAILED,
};

// Failure categories, counted separately in --concurrent mode.
enum tg_fail_kind {
    TG_FAIL_CONNECT,
    TG_FAIL_HANDSHAKE,
    TG_FAIL_CLOSED_EARLY,
    TG_FAIL_MISMATCH,
    TG_FAIL_SHORT,
    TG_FAIL_IO,
    TG_FAIL_TIMEOUT,
    TG_FAIL_COUNT,
};

static const char *const tg_fail_names[TG_FAIL_COUNT] = {
    "connect", "handshake", "closed_before_transfer", "mismatch", "short", "io", "timeout",
};

struct tg_conn {
    SSL *ssl;
    int fd;
    uint8_t state;
    uint8_t fail_kind;
    uint8_t shutdown_sent;
    uint8_t peer_closed;       // 0: not yet, 1: close_notify, 2: EOF without close_notify
    uint32_t pending_len;      // length of the SSL_write being retried, 0 if none
    uint64_t sent;             // bytes SSL_write accepted
    uint64_t received;         // bytes SSL_read returned and verified
    struct tg_stream tx;       // stream position after the pending chunk
    struct tg_stream tx_chunk; // stream position at the start of the pending chunk
    struct tg_stream rx;       // expected stream position of the next byte read
    uint64_t sizes;            // xorshift state for write sizes
    struct tg_alert_slot alert;
    char *fail_reason;
};

// tg_engine drives a set of connections through one epoll set.
struct tg_engine {
    const struct tg_client_opts *opts;
    SSL_CTX *ctx;
    struct tg_conn *conns;
    uint32_t num_conns;
    uint32_t num_established;
    uint32_t num_finished; // done or failed
    int epfd;
    int barrier_released;
    uint64_t bytes_each;
    int expect_echo;
    const struct tg_conn *scratch_owner; // whose pending chunk |tg_tx_scratch| holds
    uint64_t transfer_start_ns;
};

static void tg_conn_release(struct tg_conn *conn) {
    if (conn->ssl != NULL) {
        SSL_free(conn->ssl);
        conn->ssl = NULL;
    }
    if (conn->fd >= 0) {
        close(conn->fd);
        conn->fd = -1;
    }
}

static void tg_conn_fail(struct tg_engine *eng, struct tg_conn *conn, enum tg_fail_kind kind,
                         const char *reason) {
    conn->state = TG_CONN_FAILED;
    conn->fail_kind = (uint8_t)kind;
    conn->fail_reason = strdup(reason);
    tg_conn_release(conn);
    eng->num_finished++;
}

static void tg_conn_fail_ssl(struct tg_engine *eng, struct tg_conn *conn, enum tg_fail_kind kind,
                             const char *what, int ret) {
    char reason[TG_CLIENT_REASON_LEN];
    char detail[TG_CLIENT_REASON_LEN - 32];
    tg_ssl_reason(conn->ssl, ret, detail, sizeof(detail));
    tg_format(reason, sizeof(reason), "%s: %s", what, detail);
    tg_conn_fail(eng, conn, kind, reason);
}

// tg_conn_fail_io fails a connection whose write or shutdown failed. A refusal alert may be
// queued behind the reset that failed the write, so it reads once to report the alert instead.
static void tg_conn_fail_io(struct tg_engine *eng, struct tg_conn *conn, const char *what,
                            int ret) {
    char reason[TG_CLIENT_REASON_LEN];
    char detail[TG_CLIENT_REASON_LEN - 32];
    tg_ssl_reason(conn->ssl, ret, detail, sizeof(detail));
    if (conn->alert.received < 0) {
        ERR_clear_error();
        int rret = SSL_read(conn->ssl, tg_rx_scratch, sizeof(tg_rx_scratch));
        if (rret <= 0 && conn->alert.received >= 0) {
            tg_ssl_reason(conn->ssl, rret, detail, sizeof(detail));
        }
    }
    tg_format(reason, sizeof(reason), "%s: %s", what, detail);
    tg_conn_fail(eng, conn, TG_FAIL_IO, reason);
}

static void tg_conn_done(struct tg_engine *eng, struct tg_conn *conn) {
    conn->state = TG_CONN_DONE;
    tg_conn_release(conn);
    eng->num_finished++;
}

// tg_conn_start creates the socket, starts a non-blocking connect and attaches an SSL.
// Returns 1 on success; on failure the connection is marked failed.
static int tg_conn_start(struct tg_engine *eng, struct tg_conn *conn, uint32_t index) {
    char reason[TG_CLIENT_REASON_LEN];
    conn->fd = socket(tg_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    conn->alert.received = -1;
    conn->state = TG_CONN_CONNECTING;
    if (conn->fd < 0) {
        tg_format(reason, sizeof(reason), "socket: %s", strerror(errno));
        tg_conn_fail(eng, conn, TG_FAIL_CONNECT, reason);
        return 0;
    }
    int one = 1;
    setsockopt(conn->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(conn->fd, (struct sockaddr *)&tg_addr, tg_addr_len) != 0 && errno != EINPROGRESS) {
        tg_format(reason, sizeof(reason), "connect: %s", strerror(errno));
        tg_conn_fail(eng, conn, TG_FAIL_CONNECT, reason);
        return 0;
    }
    conn->ssl = SSL_new(eng->ctx);
    if (conn->ssl == NULL || !SSL_set_fd(conn->ssl, conn->fd) ||
        !SSL_set_ex_data(conn->ssl, tg_ex_index, &conn->alert) ||
        (eng->opts->sni != NULL && !SSL_set_tlsext_host_name(conn->ssl, eng->opts->sni))) {
        tg_conn_fail(eng, conn, TG_FAIL_CONNECT, "cannot set up SSL object");
        return 0;
    }
    SSL_set_connect_state(conn->ssl);
    uint64_t seed = eng->opts->seed + index;
    tg_stream_init(&conn->tx, seed);
    tg_stream_init(&conn->rx, seed);
    conn->sizes = tg_xorshift_seed(seed ^ 0xA5A5A5A5DEADBEEFull);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLET, .data.u32 = index};
    if (epoll_ctl(eng->epfd, EPOLL_CTL_ADD, conn->fd, &ev) != 0) {
        tg_format(reason, sizeof(reason), "epoll_ctl: %s", strerror(errno));
        tg_conn_fail(eng, conn, TG_FAIL_CONNECT, reason);
        return 0;
    }
    return 1;
}

// tg_conn_check_peer_closed finishes a connection whose peer closed (close_notify or EOF).
static void tg_conn_peer_closed(struct tg_engine *eng, struct tg_conn *conn, const char *how) {
    char reason[TG_CLIENT_REASON_LEN];
    if (conn->state != TG_CONN_TRANSFER) {
        tg_format(reason, sizeof(reason), "peer closed (%s) before the transfer started", how);
        tg_conn_fail(eng, conn, TG_FAIL_CLOSED_EARLY, reason);
        return;
    }
    conn->peer_closed = strcmp(how, "close_notify") == 0 ? 1 : 2;
    uint64_t want = eng->expect_echo ? eng->bytes_each : 0;
    if (conn->sent < eng->bytes_each || !conn->shutdown_sent || conn->received < want) {
        tg_format(reason, sizeof(reason),
                  "peer closed (%s) early: sent %llu of %llu, received %llu of %llu", how,
                  (unsigned long long)conn->sent, (unsigned long long)eng->bytes_each,
                  (unsigned long long)conn->received, (unsigned long long)want);
        tg_conn_fail(eng, conn, TG_FAIL_SHORT, reason);
        return;
    }
    tg_conn_done(eng, conn);
}

// tg_conn_verify checks |in_len| received bytes against the expected stream. Returns 1 if they
// match; otherwise fails the connection with the offset of the first differing byte.
static int tg_conn_verify(struct tg_engine *eng, struct tg_conn *conn, const uint8_t *in,
                          size_t in_len) {
    char reason[TG_CLIENT_REASON_LEN];
    if (!eng->expect_echo || conn->state != TG_CONN_TRANSFER) {
        tg_format(reason, sizeof(reason), "unexpected %zu bytes of application data", in_len);
        tg_conn_fail(eng, conn, TG_FAIL_MISMATCH, reason);
        return 0;
    }
    if (conn->received + in_len > eng->bytes_each) {
        tg_format(reason, sizeof(reason), "received more than sent: %llu bytes past %llu",
                  (unsigned long long)(conn->received + in_len - eng->bytes_each),
                  (unsigned long long)eng->bytes_each);
        tg_conn_fail(eng, conn, TG_FAIL_MISMATCH, reason);
        return 0;
    }
    tg_stream_fill(&conn->rx, tg_expect_scratch, in_len);
    if (memcmp(in, tg_expect_scratch, in_len) == 0) {
        conn->received += in_len;
        return 1;
    }
    size_t i = 0;
    while (in[i] == tg_expect_scratch[i]) {
        i++;
    }
    tg_format(reason, sizeof(reason), "mismatch at offset %llu: got 0x%02x, expected 0x%02x",
              (unsigned long long)(conn->received + i), in[i], tg_expect_scratch[i]);
    tg_conn_fail(eng, conn, TG_FAIL_MISMATCH, reason);
    return 0;
}

// tg_conn_pump_read reads until the socket would block. Returns 0 if the connection finished.
static int tg_conn_pump_read(struct tg_engine *eng, struct tg_conn *conn) {
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int ret = SSL_read(conn->ssl, tg_rx_scratch, sizeof(tg_rx_scratch));
        if (ret > 0) {
            if (!tg_conn_verify(eng, conn, tg_rx_scratch, (size_t)ret)) {
                return 0;
            }
            continue;
        }
        int err = SSL_get_error(conn->ssl, ret);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
            return 1;
        }
        if (err == SSL_ERROR_ZERO_RETURN) {
            tg_conn_peer_closed(eng, conn, "close_notify");
            return 0;
        }
        if (err == SSL_ERROR_SYSCALL && ret == 0 && ERR_peek_error() == 0) {
            tg_conn_peer_closed(eng, conn, "EOF");
            return 0;
        }
        tg_conn_fail_ssl(eng, conn,
                         conn->state == TG_CONN_TRANSFER ? TG_FAIL_IO : TG_FAIL_CLOSED_EARLY,
                         "read", ret);
        return 0;
    }
}

// tg_conn_pump_write writes stream chunks until done or the socket would block, then sends
// close_notify. Returns 0 if the connection finished.
static int tg_conn_pump_write(struct tg_engine *eng, struct tg_conn *conn) {
    while (conn->sent < eng->bytes_each) {
        if (conn->pending_len == 0) {
            uint64_t left = eng->bytes_each - conn->sent;
            uint64_t size = 1 + tg_xorshift64(&conn->sizes) % TG_CLIENT_MAX_CHUNK;
            conn->pending_len = (uint32_t)(size < left ? size : left);
            conn->tx_chunk = conn->tx;
            tg_stream_fill(&conn->tx, tg_tx_scratch, conn->pending_len);
            eng->scratch_owner = conn;
        } else if (eng->scratch_owner != conn) {
            // Retry after WANT_WRITE: regenerate the identical bytes from the saved position.
            struct tg_stream s = conn->tx_chunk;
            tg_stream_fill(&s, tg_tx_scratch, conn->pending_len);
            eng->scratch_owner = conn;
        }
        ERR_clear_error();
        errno = 0;
        int ret = SSL_write(conn->ssl, tg_tx_scratch, (int)conn->pending_len);
        if (ret > 0) {
            conn->sent += (uint64_t)ret;
            conn->pending_len = 0;
            continue;
        }
        int err = SSL_get_error(conn->ssl, ret);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
            return 1;
        }
        tg_conn_fail_io(eng, conn, "write", ret);
        return 0;
    }
    if (!conn->shutdown_sent) {
        ERR_clear_error();
        errno = 0;
        int ret = SSL_shutdown(conn->ssl);
        if (ret >= 0) {
            conn->shutdown_sent = 1;
            return 1;
        }
        int err = SSL_get_error(conn->ssl, ret);
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ) {
            return 1;
        }
        tg_conn_fail_io(eng, conn, "shutdown", ret);
        return 0;
    }
    return 1;
}

static void tg_conn_step(struct tg_engine *eng, struct tg_conn *conn, uint32_t events) {
    char reason[TG_CLIENT_REASON_LEN];
    switch (conn->state) {
    case TG_CONN_CONNECTING: {
        if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) {
            return;
        }
        int soerr = 0;
        socklen_t len = sizeof(soerr);
        if (getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &len) != 0) {
            soerr = errno;
        }
        if (soerr != 0) {
            tg_format(reason, sizeof(reason), "connect: %s", strerror(soerr));
            tg_conn_fail(eng, conn, TG_FAIL_CONNECT, reason);
            return;
        }
        conn->state = TG_CONN_HANDSHAKE;
    }
        __attribute__((fallthrough));
    case TG_CONN_HANDSHAKE: {
        ERR_clear_error();
        errno = 0;
        int ret = SSL_do_handshake(conn->ssl);
        if (ret != 1) {
            int err = SSL_get_error(conn->ssl, ret);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                tg_conn_fail_ssl(eng, conn, TG_FAIL_HANDSHAKE, "handshake", ret);
            }
            return;
        }
        conn->state = TG_CONN_ESTABLISHED;
        eng->num_established++;
    }
        __attribute__((fallthrough));
    case TG_CONN_ESTABLISHED:
        if (!eng->barrier_released) {
            // Keep reading so that tickets are consumed and a late refusal is noticed.
            tg_conn_pump_read(eng, conn);
            return;
        }
        conn->state = TG_CONN_TRANSFER;
        __attribute__((fallthrough));
    case TG_CONN_TRANSFER:
        if (!tg_conn_pump_write(eng, conn)) {
            return;
        }
        tg_conn_pump_read(eng, conn);
        return;
    default:
        return;
    }
}

// tg_engine_maybe_release starts the transfer phase once every connection that has not failed
// has completed its handshake, kicking each one since no socket event may follow.
static void tg_engine_maybe_release(struct tg_engine *eng) {
    if (eng->barrier_released) {
        return;
    }
    uint32_t waiting = 0;
    for (uint32_t i = 0; i < eng->num_conns; i++) {
        uint8_t st = eng->conns[i].state;
        if (st == TG_CONN_CONNECTING || st == TG_CONN_HANDSHAKE) {
            return;
        }
        waiting += st == TG_CONN_ESTABLISHED;
    }
    eng->barrier_released = 1;
    eng->transfer_start_ns = tg_now_ns();
    if (eng->opts->mode == TG_MODE_CONCURRENT) {
        printf("established=%u\n", waiting);
        fflush(stdout);
    }
    for (uint32_t i = 0; i < eng->num_conns; i++) {
        if (eng->conns[i].state == TG_CONN_ESTABLISHED) {
            tg_conn_step(eng, &eng->conns[i], 0);
        }
    }
}

// tg_engine_run drives all connections until each is done or failed, or the deadline passes.
// Returns 1 if the deadline passed.
static int tg_engine_run(struct tg_engine *eng) {
    struct epoll_event events[512];
    for (uint32_t i = 0; i < eng->num_conns; i++) {
        tg_conn_start(eng, &eng->conns[i], i);
    }
    tg_engine_maybe_release(eng);
    while (eng->num_finished < eng->num_conns) {
        int timeout = tg_remaining_ms();
        if (timeout == 0) {
            return 1;
        }
        int n = epoll_wait(eng->epfd, events, 512, timeout);
        if (n < 0 && errno != EINTR) {
            perror("epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            struct tg_conn *conn = &eng->conns[events[i].data.u32];
            tg_conn_step(eng, conn, events[i].events);
        }
        tg_engine_maybe_release(eng);
    }
    return 0;
}

static const char *tg_state_name(uint8_t state) {
    switch (state) {
    case TG_CONN_CONNECTING:
        return "connecting";
    case TG_CONN_HANDSHAKE:
        return "handshake";
    case TG_CONN_ESTABLISHED:
        return "waiting for the other connections";
    case TG_CONN_TRANSFER:
        return "transfer";
    default:
        return "finished";
    }
}

// tg_run_bulk: one connection, BYTES bytes streamed and (unless --no-echo) verified.
static int tg_run_bulk(const struct tg_client_opts *opts, SSL_CTX *ctx) {
    struct tg_conn conn = {.fd = -1};
    struct tg_engine eng = {
        .opts = opts,
        .ctx = ctx,
        .conns = &conn,
        .num_conns = 1,
        .epfd = epoll_create1(EPOLL_CLOEXEC),
        .bytes_each = opts->bytes,
        .expect_echo = !opts->no_echo,
    };
    char version[32] = "";
    char cipher[96] = "";
    // Record the session parameters before the SSL is freed at completion.
    int timed_out = 0;
    {
        struct epoll_event events[4];
        tg_conn_start(&eng, &conn, 0);
        while (eng.num_finished < 1) {
            if (conn.state >= TG_CONN_ESTABLISHED && version[0] == '\0' && conn.ssl != NULL) {
                tg_format(version, sizeof(version), "%s", SSL_get_version(conn.ssl));
                tg_format(cipher, sizeof(cipher), "%s",
                          SSL_CIPHER_get_name(SSL_get_current_cipher(conn.ssl)));
            }
            tg_engine_maybe_release(&eng);
            if (eng.num_finished >= 1) {
                break;
            }
            int timeout = tg_remaining_ms();
            if (timeout == 0) {
                timed_out = 1;
                break;
            }
            int n = epoll_wait(eng.epfd, events, 4, timeout);
            for (int i = 0; i < n; i++) {
                tg_conn_step(&eng, &conn, events[i].events);
            }
        }
    }
    close(eng.epfd);
    if (timed_out) {
        char what[TG_CLIENT_REASON_LEN];
        tg_format(what, sizeof(what), "%s, sent %llu received %llu of %llu",
                  tg_state_name(conn.state), (unsigned long long)conn.sent,
                  (unsigned long long)conn.received, (unsigned long long)opts->bytes);
        tg_conn_release(&conn);
        return tg_fail_timeout(what);
    }
    if (conn.state == TG_CONN_FAILED) {
        tg_print_error(conn.fail_reason);
        free(conn.fail_reason);
        return 1;
    }
    double seconds = (double)(tg_now_ns() - eng.transfer_start_ns) / 1e9;
    double mbps = seconds > 0 ? (double)conn.sent * 8.0 / seconds / 1e6 : 0.0;
    printf("result=ok mode=bulk bytes_sent=%llu bytes_received=%llu seconds=%.3f mbps=%.1f "
           "version=%s cipher=%s peer_close=%s\n",
           (unsigned long long)conn.sent, (unsigned long long)conn.received, seconds, mbps, version,
           cipher, conn.peer_closed == 1 ? "close_notify" : "eof");
    fflush(stdout);
    return 0;
}

// tg_run_concurrent: N connections established at once, then M bytes each.
static int tg_run_concurrent(const struct tg_client_opts *opts, SSL_CTX *ctx) {
    tg_raise_nofile();
    struct tg_engine eng = {
        .opts = opts,
        .ctx = ctx,
        .conns = calloc(opts->num_conns, sizeof(struct tg_conn)),
        .num_conns = opts->num_conns,
        .epfd = epoll_create1(EPOLL_CLOEXEC),
        .bytes_each = opts->bytes,
        .expect_echo = !opts->no_echo,
    };
    if (eng.conns == NULL || eng.epfd < 0) {
        tg_print_error("out of memory or epoll_create1 failed");
        return 1;
    }
    for (uint32_t i = 0; i < eng.num_conns; i++) {
        eng.conns[i].fd = -1;
    }
    uint64_t start = tg_now_ns();
    int timed_out = tg_engine_run(&eng);
    double seconds = (double)(tg_now_ns() - start) / 1e9;

    uint32_t counts[TG_FAIL_COUNT] = {0};
    const char *examples[TG_FAIL_COUNT] = {0};
    uint32_t num_ok = 0;
    uint32_t num_timeout_by_state[TG_CONN_DONE] = {0};
    for (uint32_t i = 0; i < eng.num_conns; i++) {
        struct tg_conn *conn = &eng.conns[i];
        if (conn->state == TG_CONN_DONE) {
            num_ok++;
        } else if (conn->state == TG_CONN_FAILED) {
            counts[conn->fail_kind]++;
            if (examples[conn->fail_kind] == NULL) {
                examples[conn->fail_kind] = conn->fail_reason;
            }
        } else {
            counts[TG_FAIL_TIMEOUT]++;
            num_timeout_by_state[conn->state]++;
            tg_conn_release(conn);
        }
    }
    int rc = 0;
    if (num_ok != eng.num_conns) {
        for (int k = 0; k < TG_FAIL_COUNT; k++) {
            if (counts[k] == 0) {
                continue;
            }
            if (k == TG_FAIL_TIMEOUT) {
                printf("failed reason=timeout count=%u connecting=%u handshake=%u waiting=%u "
                       "transfer=%u\n",
                       counts[k], num_timeout_by_state[TG_CONN_CONNECTING],
                       num_timeout_by_state[TG_CONN_HANDSHAKE],
                       num_timeout_by_state[TG_CONN_ESTABLISHED],
                       num_timeout_by_state[TG_CONN_TRANSFER]);
                continue;
            }
            printf("failed reason=%s count=%u example=\"%s\"\n", tg_fail_names[k], counts[k],
                   examples[k]);
        }
        char reason[TG_CLIENT_REASON_LEN];
        tg_format(reason, sizeof(reason), "%s%u of %u connections failed",
                  timed_out ? "timeout: " : "", eng.num_conns - num_ok, eng.num_conns);
        tg_print_error(reason);
        rc = timed_out ? 3 : 1;
    } else {
        printf("result=ok mode=concurrent connections=%u bytes_each=%llu seconds=%.3f\n",
               eng.num_conns, (unsigned long long)eng.bytes_each, seconds);
        fflush(stdout);
    }
    for (uint32_t i = 0; i < eng.num_conns; i++) {
        free(eng.conns[i].fail_reason);
    }
    free(eng.conns);
    close(eng.epfd);
    return rc;
}

// ---------------------------------------------------------------------------------------------
// Single-connection modes driven by poll: --handshake-only and --expect-refused.

// tg_wait waits until |fd| is ready for what |ssl_err| asks (read or write). Returns 1 when
// ready, 0 when |limit_ns| (an absolute time) passes first.
static int tg_wait(int fd, int ssl_err, uint64_t limit_ns) {
    struct pollfd pfd = {.fd = fd, .events = ssl_err == SSL_ERROR_WANT_WRITE ? POLLOUT : POLLIN};
    for (;;) {
        uint64_t now = tg_now_ns();
        if (now >= limit_ns) {
            return 0;
        }
        int ms = (int)((limit_ns - now + 999999u) / 1000000u);
        int n = poll(&pfd, 1, ms);
        if (n > 0) {
            return 1;
        }
        if (n < 0 && errno != EINTR) {
            return 1; // let the SSL call report the error
        }
    }
}

enum tg_sync_result { TG_SYNC_OK, TG_SYNC_FAILED, TG_SYNC_TIMEOUT };

// tg_connect_sync connects and completes the handshake on |conn| before the deadline. On
// failure |out_reason| says why and |*out_tls_failure| whether TLS (not TCP) failed.
static enum tg_sync_result tg_connect_sync(struct tg_engine *eng, struct tg_conn *conn,
                                           char *out_reason, size_t reason_len,
                                           int *out_tls_failure) {
    *out_tls_failure = 0;
    // tg_conn_start registers the socket with an epoll set; this path polls instead.
    eng->epfd = epoll_create1(EPOLL_CLOEXEC);
    int started = tg_conn_start(eng, conn, 0);
    close(eng->epfd);
    if (!started) {
        tg_format(out_reason, reason_len, "%s", conn->fail_reason);
        return TG_SYNC_FAILED;
    }
    struct pollfd pfd = {.fd = conn->fd, .events = POLLOUT};
    for (;;) {
        int ms = tg_remaining_ms();
        if (ms == 0) {
            tg_format(out_reason, reason_len, "connect");
            return TG_SYNC_TIMEOUT;
        }
        int n = poll(&pfd, 1, ms);
        if (n > 0) {
            break;
        }
        if (n < 0 && errno != EINTR) {
            tg_format(out_reason, reason_len, "poll: %s", strerror(errno));
            return TG_SYNC_FAILED;
        }
    }
    int soerr = 0;
    socklen_t len = sizeof(soerr);
    getsockopt(conn->fd, SOL_SOCKET, SO_ERROR, &soerr, &len);
    if (soerr != 0) {
        tg_format(out_reason, reason_len, "connect: %s", strerror(soerr));
        return TG_SYNC_FAILED;
    }
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int ret = SSL_do_handshake(conn->ssl);
        if (ret == 1) {
            return TG_SYNC_OK;
        }
        int err = SSL_get_error(conn->ssl, ret);
        if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
            char detail[TG_CLIENT_REASON_LEN - 32];
            tg_ssl_reason(conn->ssl, ret, detail, sizeof(detail));
            tg_format(out_reason, reason_len, "handshake: %s", detail);
            *out_tls_failure = 1;
            return TG_SYNC_FAILED;
        }
        if (!tg_wait(conn->fd, err, tg_deadline_ns)) {
            tg_format(out_reason, reason_len, "handshake");
            return TG_SYNC_TIMEOUT;
        }
    }
}

static void tg_peer_cn(SSL *ssl, char *out, size_t out_len) {
    tg_format(out, out_len, "-");
    X509 *peer = SSL_get_peer_certificate(ssl);
    if (peer == NULL) {
        return;
    }
    X509_NAME *name = X509_get_subject_name(peer);
    if (name != NULL && X509_NAME_get_text_by_NID(name, NID_commonName, out, (int)out_len) < 0) {
        tg_format(out, out_len, "-");
    }
    X509_free(peer);
}

static int tg_run_handshake_only(const struct tg_client_opts *opts, SSL_CTX *ctx) {
    struct tg_conn conn = {.fd = -1};
    struct tg_engine eng = {.opts = opts, .ctx = ctx, .conns = &conn, .num_conns = 1};
    char reason[TG_CLIENT_REASON_LEN];
    int tls_failure;
    enum tg_sync_result r = tg_connect_sync(&eng, &conn, reason, sizeof(reason), &tls_failure);
    if (r != TG_SYNC_OK) {
        tg_conn_release(&conn);
        free(conn.fail_reason);
        if (r == TG_SYNC_TIMEOUT) {
            return tg_fail_timeout(reason);
        }
        tg_print_error(reason);
        return 1;
    }
    char cn[256];
    tg_peer_cn(conn.ssl, cn, sizeof(cn));
    printf("result=ok version=%s cipher=%s peer_cn=%s\n", SSL_get_version(conn.ssl),
           SSL_CIPHER_get_name(SSL_get_current_cipher(conn.ssl)), cn);
    fflush(stdout);
    // Best effort close_notify; the result is already decided.
    for (int i = 0; i < 100; i++) {
        int ret = SSL_shutdown(conn.ssl);
        if (ret >= 0) {
            break;
        }
        int err = SSL_get_error(conn.ssl, ret);
        if (err != SSL_ERROR_WANT_WRITE || !tg_wait(conn.fd, err, tg_deadline_ns)) {
            break;
        }
    }
    tg_conn_release(&conn);
    return 0;
}

static int tg_print_refused(const char *reason) {
    printf("result=refused reason=\"");
    for (const char *p = reason; *p != '\0'; p++) {
        putchar(*p == '"' ? '\'' : *p);
    }
    printf("\"\n");
    fflush(stdout);
    return 0;
}

// tg_refused_or_error classifies a failed SSL operation in --expect-refused mode: a failure of
// our own verification of the server is an error (exit 1), anything else is a refusal (exit 0).
static int tg_refused_or_error(SSL *ssl, const char *reason) {
    if (SSL_get_verify_mode(ssl) != SSL_VERIFY_NONE && SSL_get_verify_result(ssl) != X509_V_OK) {
        tg_print_error(reason);
        return 1;
    }
    return tg_print_refused(reason);
}

static int tg_run_expect_refused(const struct tg_client_opts *opts, SSL_CTX *ctx) {
    struct tg_conn conn = {.fd = -1};
    struct tg_engine eng = {.opts = opts, .ctx = ctx, .conns = &conn, .num_conns = 1};
    char reason[TG_CLIENT_REASON_LEN];
    char detail[TG_CLIENT_REASON_LEN - 32];
    int tls_failure;
    int rc;
    enum tg_sync_result r = tg_connect_sync(&eng, &conn, reason, sizeof(reason), &tls_failure);
    if (r == TG_SYNC_TIMEOUT) {
        rc = tg_fail_timeout(reason);
        goto out;
    }
    if (r == TG_SYNC_FAILED) {
        if (tls_failure) {
            rc = tg_refused_or_error(conn.ssl, reason);
        } else {
            tg_print_error(reason);
            rc = 1;
        }
        goto out;
    }

    // The handshake completed on our side. Probe: the server either refuses (alert/close) or
    // the connection carries data.
    uint64_t probe_limit = tg_now_ns() + 2000000000ull;
    if (probe_limit > tg_deadline_ns) {
        probe_limit = tg_deadline_ns;
    }
    static const char probe[] = "ping\n";
    int probe_sent = 0;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int ret;
        int err;
        if (!probe_sent) {
            ret = SSL_write(conn.ssl, probe, sizeof(probe) - 1);
            if (ret > 0) {
                probe_sent = 1;
                continue;
            }
            err = SSL_get_error(conn.ssl, ret);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                // The write may fail because a refusal alert is waiting: read it for the reason.
                tg_ssl_reason(conn.ssl, ret, detail, sizeof(detail));
                uint8_t byte;
                ERR_clear_error();
                int rret = SSL_read(conn.ssl, &byte, 1);
                if (rret <= 0 && conn.alert.received >= 0) {
                    tg_ssl_reason(conn.ssl, rret, detail, sizeof(detail));
                }
                tg_format(reason, sizeof(reason), "write: %s", detail);
                rc = tg_refused_or_error(conn.ssl, reason);
                goto out;
            }
        } else {
            ret = SSL_read(conn.ssl, tg_rx_scratch, sizeof(tg_rx_scratch));
            if (ret > 0) {
                printf("result=accepted reason=\"server sent %d bytes of application data\"\n",
                       ret);
                fflush(stdout);
                rc = 1;
                goto out;
            }
            err = SSL_get_error(conn.ssl, ret);
            if (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE) {
                tg_ssl_reason(conn.ssl, ret, detail, sizeof(detail));
                tg_format(reason, sizeof(reason), "read: %s", detail);
                rc = tg_refused_or_error(conn.ssl, reason);
                goto out;
            }
        }
        if (!tg_wait(conn.fd, err, probe_limit)) {
            if (probe_limit >= tg_deadline_ns && tg_remaining_ms() == 0) {
                rc = tg_fail_timeout("waiting for the probe's answer");
                goto out;
            }
            printf("result=accepted reason=\"connection still usable after 2 s\"\n");
            fflush(stdout);
            rc = 1;
            goto out;
        }
    }

out:
    tg_conn_release(&conn);
    free(conn.fail_reason);
    return rc;
}

// ---------------------------------------------------------------------------------------------

static void tg_usage(void) {
    fprintf(stderr,
            "usage: tg-client --connect ADDR:PORT [--cert PEM --key PEM] [--ca PEM] [--sni NAME]\n"
            "                 [--tls 1.2|1.3] [--timeout-ms N] [--seed N] [MODE]\n"
            "  MODE: --bulk BYTES [--no-echo]       (default: --bulk 1048576)\n"
            "        --concurrent N [--bytes M] [--no-echo]\n"
            "        --expect-refused\n"
            "        --handshake-only\n"
            "  ADDR: IPv4 (127.0.0.1:443) or bracketed IPv6 ([::1]:443)\n"
            "  exit: 0 ok, 1 failure, 2 usage, 3 timeout\n");
}

// tg_parse_args fills |opts| from the command line. Returns 1 on success.
static int tg_parse_args(struct tg_client_opts *opts, int argc, char **argv) {
    int num_modes = 0;
    int have_bytes = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        uint64_t n;
        if (strcmp(a, "--no-echo") == 0) {
            opts->no_echo = 1;
        } else if (strcmp(a, "--expect-refused") == 0) {
            opts->mode = TG_MODE_EXPECT_REFUSED;
            num_modes++;
        } else if (strcmp(a, "--handshake-only") == 0) {
            opts->mode = TG_MODE_HANDSHAKE_ONLY;
            num_modes++;
        } else if (v == NULL) {
            fprintf(stderr, "tg-client: unknown option or missing value: %s\n", a);
            return 0;
        } else if (strcmp(a, "--connect") == 0) {
            opts->connect = v;
            i++;
        } else if (strcmp(a, "--cert") == 0) {
            opts->cert = v;
            i++;
        } else if (strcmp(a, "--key") == 0) {
            opts->key = v;
            i++;
        } else if (strcmp(a, "--ca") == 0) {
            opts->ca = v;
            i++;
        } else if (strcmp(a, "--sni") == 0) {
            opts->sni = v;
            i++;
        } else if (strcmp(a, "--tls") == 0) {
            if (strcmp(v, "1.2") == 0) {
                opts->tls_version = TLS1_2_VERSION;
            } else if (strcmp(v, "1.3") == 0) {
                opts->tls_version = TLS1_3_VERSION;
            } else {
                fprintf(stderr, "tg-client: --tls takes 1.2 or 1.3\n");
                return 0;
            }
            i++;
        } else if (strcmp(a, "--timeout-ms") == 0 && tg_parse_u64(&n, v) && n > 0) {
            opts->timeout_ms = n;
            i++;
        } else if (strcmp(a, "--seed") == 0 && tg_parse_u64(&n, v)) {
            opts->seed = n;
            i++;
        } else if (strcmp(a, "--bulk") == 0 && tg_parse_u64(&n, v)) {
            opts->mode = TG_MODE_BULK;
            opts->bytes = n;
            num_modes++;
            have_bytes = 1;
            i++;
        } else if (strcmp(a, "--concurrent") == 0 && tg_parse_u64(&n, v) && n > 0 && n <= 1000000) {
            opts->mode = TG_MODE_CONCURRENT;
            opts->num_conns = (uint32_t)n;
            num_modes++;
            i++;
        } else if (strcmp(a, "--bytes") == 0 && tg_parse_u64(&n, v)) {
            opts->bytes = n;
            have_bytes = 1;
            i++;
        } else {
            fprintf(stderr, "tg-client: bad option or value: %s %s\n", a, v);
            return 0;
        }
    }
    if (num_modes > 1) {
        fprintf(stderr, "tg-client: choose one mode\n");
        return 0;
    }
    if (opts->connect == NULL || !tg_parse_addr(&tg_addr, &tg_addr_len, opts->connect)) {
        fprintf(stderr, "tg-client: --connect ADDR:PORT is required\n");
        return 0;
    }
    if ((opts->cert == NULL) != (opts->key == NULL)) {
        fprintf(stderr, "tg-client: --cert and --key go together\n");
        return 0;
    }
    if (!have_bytes) {
        opts->bytes = opts->mode == TG_MODE_CONCURRENT ? 1024 : 1048576;
    }
    return 1;
}

int main(int argc, char **argv) {
    struct tg_client_opts opts = {.timeout_ms = 30000, .seed = 1, .mode = TG_MODE_BULK};
    if (!tg_parse_args(&opts, argc, argv)) {
        tg_usage();
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    tg_deadline_ns = tg_now_ns() + opts.timeout_ms * 1000000ull;
    tg_ex_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);

    char reason[TG_CLIENT_REASON_LEN];
    SSL_CTX *ctx = tg_ctx_new(&opts, reason, sizeof(reason));
    if (ctx == NULL) {
        tg_print_error(reason);
        return 1;
    }
    int rc;
    switch (opts.mode) {
    case TG_MODE_CONCURRENT:
        rc = tg_run_concurrent(&opts, ctx);
        break;
    case TG_MODE_EXPECT_REFUSED:
        rc = tg_run_expect_refused(&opts, ctx);
        break;
    case TG_MODE_HANDSHAKE_ONLY:
        rc = tg_run_handshake_only(&opts, ctx);
        break;
    default:
        rc = tg_run_bulk(&opts, ctx);
        break;
    }
    SSL_CTX_free(ctx);
    return rc;
}
