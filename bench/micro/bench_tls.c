// TLS benchmarks over tlsgate's own contexts, in memory: full and resumed mutual-TLS
// handshakes, and record seal / open over an established connection. Both ends run on the
// benchmark's thread, so a handshake's time is the client's work plus the server's.

#include "bench_micro.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "tg_bench.h"

// Handshakes ----------------------------------------------------------------------------------

struct handshake_case {
    const char *name;
    struct tgb_world *w;
    uint16_t version; // the highest version the client offers
    int ecdsa_client; // the client presents its ECDSA P-256 certificate, else RSA-2048
};

static struct handshake_case g_full[4];

// label_with names the key exchange group and the cipher suite |ssl| negotiated in |st|'s report.
static void label_with(struct tg_bench_state *st, const SSL *ssl) {
    char label[128];
    const char *group = SSL_get_curve_name(SSL_get_curve_id(ssl));
    snprintf(label, sizeof(label), "%s %s", group != NULL ? group : "no-group",
             SSL_CIPHER_get_name(SSL_get_current_cipher(ssl)));
    tg_bench_set_label(st, label);
}

// bench_full: one iteration is SSL_new on both sides, a full mutual handshake (X25519,
// RSA-2048 server, the client's certificate checked by tg_policy_check_peer on the server and
// the server's on the client), and SSL_free. In TLS 1.3 the server also makes its two session
// tickets (it holds them until its first write, so they never reach the client here).
static void bench_full(struct tg_bench_state *st, void *arg) {
    const struct handshake_case *hc = arg;
    SSL_CTX *client_ctx = hc->ecdsa_client ? hc->w->client_ecdsa.client : hc->w->client_rsa.client;
    char err[256];
    int labelled = 0;
    while (tg_bench_keep_running(st)) {
        struct tgb_conn c;
        if (!tgb_conn_new(&c, client_ctx, hc->w->server.server, hc->version)) {
            tg_bench_skip_with_error(st, "cannot make a connection");
            break;
        }
        int ok = tgb_conn_handshake(&c, err, sizeof(err));
        if (ok && (SSL_session_reused(c.server) || SSL_version(c.server) != hc->version)) {
            snprintf(err, sizeof(err), "not a full handshake at the version asked for");
            ok = 0;
        }
        if (ok && !labelled) {
            label_with(st, c.server);
            labelled = 1;
        }
        tgb_conn_free(&c);
        if (!ok) {
            tg_bench_skip_with_error(st, err);
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
}

struct resume_case {
    struct tgb_world *w;
    uint16_t version;
};

static struct resume_case g_resume[2];

// get_session runs one full handshake from the resuming client and returns the session (with
// its ticket) that the server gave it. In TLS 1.3 the tickets come after the handshake, and the
// server holds them back until it next writes: it sends a byte, the client reads the tickets on
// the way to that byte.
static SSL_SESSION *get_session(const struct resume_case *rc, char *err, size_t err_len) {
    struct tgb_conn c;
    SSL_SESSION *session = NULL;
    if (!tgb_conn_new(&c, rc->w->client_resume.client, rc->w->server.server, rc->version)) {
        snprintf(err, err_len, "cannot make a connection");
        return NULL;
    }
    tgb_capture_sessions(&c, &session);
    if (tgb_conn_handshake(&c, err, err_len)) {
        uint8_t byte = 'x';
        if (SSL_write(c.server, &byte, 1) != 1 || SSL_read(c.client, &byte, 1) != 1 ||
            session == NULL)
            snprintf(err, err_len, "the server sent no session ticket");
        ERR_clear_error();
    }
    tgb_conn_free(&c);
    return session;
}

// bench_resumed: one iteration is a handshake resuming a ticket from a full handshake made
// before the loop. TLS 1.3: PSK with (EC)DHE, so X25519 but no signature and no certificate;
// the server still writes fresh tickets. TLS 1.2: an abbreviated handshake, no key exchange.
static void bench_resumed(struct tg_bench_state *st, void *arg) {
    const struct resume_case *rc = arg;
    char err[256] = "";
    int labelled = 0;
    SSL_SESSION *session = get_session(rc, err, sizeof(err));
    if (session == NULL) {
        tg_bench_skip_with_error(st, err);
        return;
    }
    while (tg_bench_keep_running(st)) {
        struct tgb_conn c;
        if (!tgb_conn_new(&c, rc->w->client_resume.client, rc->w->server.server, rc->version)) {
            tg_bench_skip_with_error(st, "cannot make a connection");
            break;
        }
        SSL_set_session(c.client, session);
        int ok = tgb_conn_handshake(&c, err, sizeof(err));
        if (ok && (!SSL_session_reused(c.client) || !SSL_session_reused(c.server))) {
            snprintf(err, sizeof(err), "the session was not resumed");
            ok = 0;
        }
        if (ok && !labelled) {
            label_with(st, c.server);
            labelled = 1;
        }
        tgb_conn_free(&c);
        if (!ok) {
            tg_bench_skip_with_error(st, err);
            break;
        }
    }
    tg_bench_set_items_processed(st, tg_bench_iterations(st));
    SSL_SESSION_free(session);
}

// Records -------------------------------------------------------------------------------------

struct record_case {
    struct tgb_world *w;
    size_t len; // plaintext bytes per record
};

static struct record_case g_records[3];
static const size_t kRecordLens[3] = {64, 1024, 16384};

// open_conn makes an established TLS 1.3 connection (RSA client) for the record benchmarks and
// labels the run with its cipher suite.
static int open_conn(struct tg_bench_state *st, struct tgb_conn *c, struct tgb_world *w) {
    char err[256];
    if (!tgb_conn_new(c, w->client_rsa.client, w->server.server, TLS1_3_VERSION)) {
        tg_bench_skip_with_error(st, "cannot make a connection");
        return 0;
    }
    if (!tgb_conn_handshake(c, err, sizeof(err))) {
        tgb_conn_free(c);
        tg_bench_skip_with_error(st, err);
        return 0;
    }
    tg_bench_set_label(st, SSL_CIPHER_get_name(SSL_get_current_cipher(c->client)));
    return 1;
}

// bench_seal: one iteration is SSL_write of |len| bytes on the client, which seals one record
// into the client-to-server pipe; the pipe is then emptied (a pointer reset), so the
// ciphertext stays in cache as it would in an io_uring send buffer.
static void bench_seal(struct tg_bench_state *st, void *arg) {
    const struct record_case *rc = arg;
    uint8_t *buf = calloc(1, rc->len);
    struct tgb_conn c;
    if (buf == NULL || !open_conn(st, &c, rc->w)) {
        if (buf == NULL)
            tg_bench_skip_with_error(st, "out of memory");
        free(buf);
        return;
    }
    while (tg_bench_keep_running(st)) {
        if (SSL_write(c.client, buf, (int)rc->len) != (int)rc->len) {
            tg_bench_skip_with_error(st, "SSL_write failed");
            break;
        }
        tgb_pipe_clear(c.c2s);
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)rc->len);
    tgb_conn_free(&c);
    free(buf);
}

// bench_open: one iteration is SSL_read of one |len|-byte record on the server. Records are
// sealed by the client in batches of about 1 MiB with the timer paused, so the pause costs
// little per record.
static void bench_open(struct tg_bench_state *st, void *arg) {
    const struct record_case *rc = arg;
    size_t batch = ((size_t)1 << 20) / rc->len;
    uint8_t *buf = calloc(1, rc->len);
    struct tgb_conn c;
    if (buf == NULL || !open_conn(st, &c, rc->w)) {
        if (buf == NULL)
            tg_bench_skip_with_error(st, "out of memory");
        free(buf);
        return;
    }
    while (tg_bench_keep_running(st)) {
        if (tgb_pipe_pending(c.c2s) == 0) {
            tg_bench_pause_timing(st);
            int ok = 1;
            for (size_t i = 0; ok && i < batch; i++)
                ok = SSL_write(c.client, buf, (int)rc->len) == (int)rc->len;
            tg_bench_resume_timing(st);
            if (!ok) {
                tg_bench_skip_with_error(st, "SSL_write failed");
                break;
            }
        }
        if (SSL_read(c.server, buf, (int)rc->len) != (int)rc->len) {
            tg_bench_skip_with_error(st, "SSL_read did not return one whole record");
            break;
        }
    }
    tg_bench_set_bytes_processed(st, tg_bench_iterations(st) * (int64_t)rc->len);
    tgb_conn_free(&c);
    free(buf);
}

// Registration --------------------------------------------------------------------------------

int tgb_register_tls(struct tgb_world *w) {
    static const struct {
        const char *name;
        uint16_t version;
        int ecdsa_client;
    } full[4] = {
        {"handshake/full/tls13/client_rsa2048", TLS1_3_VERSION, 0},
        {"handshake/full/tls13/client_ecdsa_p256", TLS1_3_VERSION, 1},
        {"handshake/full/tls12/client_rsa2048", TLS1_2_VERSION, 0},
        {"handshake/full/tls12/client_ecdsa_p256", TLS1_2_VERSION, 1},
    };
    int ok = 1;
    for (size_t i = 0; i < 4; i++) {
        g_full[i] = (struct handshake_case){full[i].name, w, full[i].version, full[i].ecdsa_client};
        ok &= tg_bench_register_unit(full[i].name, bench_full, &g_full[i], TG_BENCH_US);
    }
    g_resume[0] = (struct resume_case){w, TLS1_3_VERSION};
    g_resume[1] = (struct resume_case){w, TLS1_2_VERSION};
    ok &=
        tg_bench_register_unit("handshake/resumed/tls13", bench_resumed, &g_resume[0], TG_BENCH_US);
    ok &=
        tg_bench_register_unit("handshake/resumed/tls12", bench_resumed, &g_resume[1], TG_BENCH_US);
    char name[64];
    for (size_t i = 0; i < 3; i++) {
        g_records[i] = (struct record_case){w, kRecordLens[i]};
        snprintf(name, sizeof(name), "record/seal/%zu", kRecordLens[i]);
        ok &= tg_bench_register(name, bench_seal, &g_records[i]);
    }
    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof(name), "record/open/%zu", kRecordLens[i]);
        ok &= tg_bench_register(name, bench_open, &g_records[i]);
    }
    return ok;
}
