// Unit tests of the TLS pump over in-memory BIOs (proxy/tlsconn.c, proxy/verify.c): two BoringSSL
// endpoints in one test, mutual TLS with certificates minted by testpki, a shuttle that moves
// ciphertext from one endpoint's |out| queue into the other's |in|. Handshakes for TLS 1.2 and
// 1.3, data both ways with backpressure, a busy queue, close_notify / truncation / garbage,
// refusals by the policy and the identity of resumed sessions under another worker's verifier.

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "testpki.h"
#include "tlsgate/bufq.h"
#include "tlsgate/config.h"
#include "tlsgate/policy.h"
#include "tlsgate/tls.h"
#include "tlsgate/tlsconn.h"
#include "tlsgate/verify.h"

#define SRV_NAME "gw.tlsgate.example" // the server's certificate (CN and DNS SAN)
#define CLI_NAME "sip.peer.example"   // the client's certificate (CN and DNS SAN)
#define OUT_SIZE 16384u               // the queue size of every test environment

// Shared fixture, built once by group_setup.
static struct {
    char dir[512];
    X509 *ca;
    EVP_PKEY *ca_key;
    X509 *other_ca; // a CA nobody trusts
    EVP_PKEY *other_ca_key;
    struct tg_tls srv; // server: our cert SRV_NAME, accepts CLI_NAME
    struct tg_tls cli; // client: our cert CLI_NAME, accepts SRV_NAME
    unsigned files;    // a counter for unique file names
} fx;

// The latest session the client context handed to its new-session callback (TLS 1.3 tickets
// arrive after the handshake; SSL_get_session keeps the ticket-less one).
static SSL_SESSION *g_new_session;

static int new_session_cb(SSL *ssl, SSL_SESSION *session) {
    (void)ssl;
    SSL_SESSION_free(g_new_session);
    g_new_session = session;
    return 1; // we took the reference
}

static void take_new_session_cb(SSL_CTX *ctx) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
}

// PKI and contexts -------------------------------------------------------------------------------

// mint issues a leaf with |cn| and the DNS SANs |dns| (NULL: SAN = CN) from |ca|, valid until
// |not_after| seconds from now.
static X509 *mint(const char *cn, const char *dns, X509 *ca, EVP_PKEY *ca_key, int64_t not_after,
                  EVP_PKEY **out_key) {
    struct tg_testpki_opts o;
    tg_testpki_opts_init(&o, cn);
    o.key_type = TG_TESTPKI_EC_P256;
    o.not_after = not_after;
    const char *sans[1] = {dns};
    if (dns != NULL) {
        o.dns = sans;
        o.num_dns = 1;
    }
    X509 *x = NULL;
    if (!tg_testpki_issue(&x, out_key, &o, ca, ca_key, (int64_t)time(NULL)))
        return NULL;
    return x;
}

// make_tls writes |cert| / |key| and the trusted CA bundle to the fixture's directory and builds
// a tg_tls from them that accepts the single peer name |peer|, with tg_verify_peer as the
// verify callback. Returns 1 on success.
static int make_tls(struct tg_tls *t, X509 *cert, EVP_PKEY *key, const char *peer) {
    struct tg_config cfg;
    tg_config_init(&cfg);
    unsigned k = fx.files++;
    snprintf(cfg.path, sizeof(cfg.path), "%s/test%u.ini", fx.dir, k);
    snprintf(cfg.cert, sizeof(cfg.cert), "%s/cert%u.pem", fx.dir, k);
    snprintf(cfg.key, sizeof(cfg.key), "%s/key%u.pem", fx.dir, k);
    snprintf(cfg.ca, sizeof(cfg.ca), "%s/ca.pem", fx.dir);
    int ok = tg_testpki_write_certs(cfg.cert, &cert, 1) && tg_testpki_write_key(cfg.key, key);
    if (ok) {
        cfg.peer_names = calloc(1, sizeof(char *));
        ok = cfg.peer_names != NULL && (cfg.peer_names[0] = strdup(peer)) != NULL;
        if (ok)
            cfg.num_peer_names = 1;
    }
    char err[512] = "";
    if (ok && !tg_tls_init(t, &cfg, tg_verify_peer, NULL, err, sizeof(err))) {
        fprintf(stderr, "tg_tls_init: %s\n", err);
        ok = 0;
    }
    tg_config_cleanup(&cfg);
    return ok;
}

// make_client_tls is make_tls for a client certificate minted from |ca| (NULL: the trusted
// CA) with |cn| / |dns|, accepting SRV_NAME. Fails the test when it cannot.
static void make_client_tls(struct tg_tls *t, const char *cn, const char *dns, X509 *ca,
                            EVP_PKEY *ca_key, int64_t not_after) {
    EVP_PKEY *key = NULL;
    X509 *x =
        mint(cn, dns, ca != NULL ? ca : fx.ca, ca != NULL ? ca_key : fx.ca_key, not_after, &key);
    assert_non_null(x);
    int ok = make_tls(t, x, key, SRV_NAME);
    X509_free(x);
    EVP_PKEY_free(key);
    assert_int_equal(ok, 1);
    take_new_session_cb(t->client);
}

static int group_setup(void **state) {
    (void)state;
    int64_t now = (int64_t)time(NULL);
    if (!tg_testpki_tmpdir(fx.dir, sizeof(fx.dir)) ||
        !tg_testpki_ca(&fx.ca, &fx.ca_key, "tlsgate tlsconn root", TG_TESTPKI_EC_P256, now) ||
        !tg_testpki_ca(&fx.other_ca, &fx.other_ca_key, "tlsgate untrusted root", TG_TESTPKI_EC_P256,
                       now)) {
        return -1;
    }
    char path[600];
    snprintf(path, sizeof(path), "%s/ca.pem", fx.dir);
    if (!tg_testpki_write_certs(path, &fx.ca, 1))
        return -1;
    const int64_t year = 365 * (int64_t)86400;
    EVP_PKEY *skey = NULL, *ckey = NULL;
    X509 *s = mint(SRV_NAME, NULL, fx.ca, fx.ca_key, year, &skey);
    X509 *c = mint(CLI_NAME, NULL, fx.ca, fx.ca_key, year, &ckey);
    int ok = s != NULL && c != NULL && make_tls(&fx.srv, s, skey, CLI_NAME) &&
             make_tls(&fx.cli, c, ckey, SRV_NAME);
    X509_free(s);
    X509_free(c);
    EVP_PKEY_free(skey);
    EVP_PKEY_free(ckey);
    if (!ok)
        return -1;
    take_new_session_cb(fx.cli.client);
    return 0;
}

static int group_teardown(void **state) {
    (void)state;
    tg_tls_cleanup(&fx.srv);
    tg_tls_cleanup(&fx.cli);
    X509_free(fx.ca);
    EVP_PKEY_free(fx.ca_key);
    X509_free(fx.other_ca);
    EVP_PKEY_free(fx.other_ca_key);
    SSL_SESSION_free(g_new_session);
    g_new_session = NULL;
    tg_testpki_rmtree(fx.dir);
    return 0;
}

// Environments and endpoints ---------------------------------------------------------------------

// env is what one worker's connections share.
struct env {
    struct tg_bufcache bc;
    struct tg_verifier v;
    struct tg_tlsenv te;
};

static void env_init(struct env *e, unsigned worker_id) {
    memset(e, 0, sizeof(*e));
    tg_bufcache_init(&e->bc, OUT_SIZE, 0);
    tg_verifier_init(&e->v, NULL);
    e->te.bc = &e->bc;
    e->te.out_size = OUT_SIZE;
    e->te.verifier = &e->v;
    e->te.worker_id = worker_id;
}

static void env_cleanup(struct env *e) {
    tg_verifier_cleanup(&e->v);
    tg_bufcache_cleanup(&e->bc);
}

// ep is one endpoint: its tg_tlsio and the ciphertext that arrived for it and that BoringSSL
// has not read yet (|in| / |in_len| point into it during each SSL call).
struct ep {
    struct tg_tlsio t;
    uint8_t *pend;
    size_t pend_len, pend_cap;
    // The outcome of the handshake, captured at the moment it failed (the error queue is the
    // thread's, and the next SSL call on the other endpoint clears it).
    enum tg_tls_status hs;
    int hs_ret;
    enum tg_verdict hs_verdict;
    int hs_reason; // ERR_GET_REASON of the first error of a failed handshake (0: none)
    char hs_detail[160];
};

static void ep_init(struct ep *e, struct env *env, SSL_CTX *ctx, int server, uint16_t max_ver) {
    memset(e, 0, sizeof(*e));
    e->t.fd = -1;
    e->hs = TG_TLS_WANT;
    assert_int_equal(tg_tlsio_init(&e->t, &env->te, ctx, server, server ? NULL : SRV_NAME), 1);
    assert_non_null(e->t.ssl);
    assert_ptr_equal(tg_tlsio_from_ssl(e->t.ssl), &e->t);
    if (max_ver != 0)
        assert_int_equal(SSL_set_max_proto_version(e->t.ssl, max_ver), 1);
}

static void ep_free(struct ep *e) {
    tg_tlsio_drop(&e->t);
    assert_null(e->t.ssl);
    assert_int_equal(tg_bufq_len(&e->t.out), 0);
    free(e->pend);
    e->pend = NULL;
    e->pend_len = e->pend_cap = 0;
}

// ep_push appends ciphertext for |e| to read.
static void ep_push(struct ep *e, const uint8_t *p, size_t n) {
    if (e->pend_len + n > e->pend_cap) {
        size_t cap = e->pend_cap ? e->pend_cap : 4096;
        while (cap < e->pend_len + n)
            cap *= 2;
        uint8_t *np = realloc(e->pend, cap);
        assert_non_null(np);
        e->pend = np;
        e->pend_cap = cap;
    }
    memcpy(e->pend + e->pend_len, p, n);
    e->pend_len += n;
}

// bind hands |e|'s pending ciphertext to its BIO; unbind drops what BoringSSL read.
static void ep_bind(struct ep *e) {
    e->t.in = e->pend;
    e->t.in_len = (uint32_t)e->pend_len;
}

static void ep_unbind(struct ep *e) {
    assert_true(e->t.in_len <= e->pend_len);
    size_t used = e->pend_len - e->t.in_len;
    if (used > 0)
        assert_ptr_equal(e->t.in, e->pend + used);
    if (used > 0) {
        memmove(e->pend, e->pend + used, e->pend_len - used);
        e->pend_len -= used;
    }
    e->t.in = NULL;
    e->t.in_len = 0;
}

// xfer moves up to |max| queued ciphertext bytes of |from| to |to| (what a completed send
// does); returns how many.
static uint32_t xfer_n(struct ep *from, struct ep *to, uint32_t max) {
    uint32_t n = tg_bufq_len(&from->t.out);
    if (n > max)
        n = max;
    if (n == 0)
        return 0;
    const uint8_t *p = tg_bufq_peek(&from->t.out);
    assert_non_null(p);
    ep_push(to, p, n);
    tg_bufq_consume(&from->t.out, from->t.env->bc, n);
    return n;
}

static uint32_t xfer(struct ep *from, struct ep *to) {
    return xfer_n(from, to, UINT32_MAX);
}

// hs_step runs one tg_tls_handshake on |e| unless its handshake is over.
static int hs_step(struct ep *e) {
    if (e->hs != TG_TLS_WANT)
        return 0;
    ep_bind(e);
    e->hs = tg_tls_handshake(&e->t, &e->hs_ret);
    ep_unbind(e);
    if (e->hs == TG_TLS_OK) {
        assert_int_equal(e->hs_ret, 1);
        return 1;
    }
    if (e->hs == TG_TLS_ERROR) {
        e->hs_reason = ERR_GET_REASON(ERR_peek_error());
        e->hs_verdict =
            tg_tls_handshake_verdict(&e->t, e->hs_ret, e->hs_detail, sizeof(e->hs_detail));
        assert_int_equal(ERR_peek_error(), 0); // the verdict takes the errors off the queue
        return 1;
    }
    assert_int_equal(e->hs, TG_TLS_WANT);
    return 0;
}

// handshake shuttles between |c| and |s| until neither can make progress.
static void handshake(struct ep *c, struct ep *s) {
    for (int round = 0; round < 32; round++) {
        int progress = hs_step(c);
        progress |= xfer(c, s) > 0;
        progress |= hs_step(s);
        progress |= xfer(s, c) > 0;
        if (!progress && (c->pend_len == 0 || c->hs != TG_TLS_WANT) &&
            (s->pend_len == 0 || s->hs != TG_TLS_WANT))
            return;
    }
    fail_msg("handshake does not settle");
}

// read_some reads from |e| into |dst| (at most |room| bytes per call) until it wants more
// ciphertext, hits the end or fails; the count goes to |*got|. Returns the last status. With
// |reason|, the error reason of a failure is stored there.
static enum tg_tls_status read_some(struct ep *e, uint8_t *dst, size_t cap, size_t *got,
                                    uint32_t room, int *reason) {
    enum tg_tls_status st;
    ep_bind(e);
    for (;;) {
        uint32_t want = cap - *got < room ? (uint32_t)(cap - *got) : room;
        uint32_t n = 12345;
        uint8_t scratch[1];
        if (want == 0) {
            // No room left: a read of one byte must still find nothing.
            st = tg_tls_read(&e->t, scratch, 1, &n);
            assert_int_not_equal(st, TG_TLS_OK);
        } else {
            st = tg_tls_read(&e->t, dst + *got, want, &n);
        }
        if (st != TG_TLS_OK) {
            assert_int_equal(n, 0);
            break;
        }
        assert_true(n > 0 && n <= want);
        *got += n;
    }
    if (reason != NULL)
        *reason = st == TG_TLS_ERROR ? ERR_GET_REASON(ERR_peek_error()) : 0;
    if (st == TG_TLS_EOF)
        assert_int_equal(ERR_peek_error(), 0); // cleared for EOF
    ep_unbind(e);
    ERR_clear_error();
    return st;
}

// connect_pair makes a client of |cctx| and a server of fx.srv.server and completes a
// handshake between them, both capped at |ver|.
static void connect_pair(struct ep *c, struct env *cenv, struct ep *s, struct env *senv,
                         SSL_CTX *cctx, uint16_t ver) {
    ep_init(c, cenv, cctx, 0, ver);
    ep_init(s, senv, fx.srv.server, 1, ver);
    handshake(c, s);
    assert_int_equal(c->hs, TG_TLS_OK);
    assert_int_equal(s->hs, TG_TLS_OK);
    assert_int_equal(SSL_version(c->t.ssl), ver);
    assert_int_equal(SSL_version(s->t.ssl), ver);
}

static void fill(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        p[i] = (uint8_t)(seed >> 16);
    }
}

static const uint16_t kVersions[] = {TLS1_2_VERSION, TLS1_3_VERSION};

// Handshakes -------------------------------------------------------------------------------------

static void check_handshake(uint16_t ver) {
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    ep_init(&c, &ce, fx.cli.client, 0, ver);
    ep_init(&s, &se, fx.srv.server, 1, ver);
    assert_null(c.t.peer_name);
    assert_null(s.t.peer_name);
    handshake(&c, &s);
    assert_int_equal(c.hs, TG_TLS_OK);
    assert_int_equal(s.hs, TG_TLS_OK);
    assert_int_equal(SSL_version(c.t.ssl), ver);
    assert_int_equal(SSL_version(s.t.ssl), ver);
    assert_int_equal(SSL_session_reused(c.t.ssl), 0);
    assert_int_equal(SSL_session_reused(s.t.ssl), 0);
    assert_non_null(s.t.peer_name);
    assert_string_equal(s.t.peer_name, CLI_NAME);
    assert_non_null(c.t.peer_name);
    assert_string_equal(c.t.peer_name, SRV_NAME);
    assert_int_equal(s.t.verdict, TG_VERDICT_OK);
    assert_int_equal(c.t.verdict, TG_VERDICT_OK);
    // Each side verified the other through its worker's cache: one entry each.
    assert_ptr_equal(se.v.cache[0].ctx, fx.srv.server);
    assert_ptr_equal(ce.v.cache[0].ctx, fx.cli.client);
    // The SNI the client sent is the provider's name.
    const char *sni = SSL_get_servername(s.t.ssl, TLSEXT_NAMETYPE_host_name);
    assert_non_null(sni);
    assert_string_equal(sni, SRV_NAME);
    // Nothing is left in flight but, for TLS 1.3, the server's tickets.
    assert_int_equal(tg_bufq_len(&c.t.out), 0);
    assert_int_equal(tg_bufq_len(&s.t.out), 0);
    assert_int_equal(s.pend_len, 0);
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
    assert_int_equal(ERR_peek_error(), 0);
}

static void test_handshake_tls12(void **state) {
    (void)state;
    check_handshake(TLS1_2_VERSION);
}

static void test_handshake_tls13(void **state) {
    (void)state;
    check_handshake(TLS1_3_VERSION);
}

// A cached chain verifies a second handshake on the same worker to the same name.
static void test_handshake_cached(void **state) {
    (void)state;
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    for (int i = 0; i < 3; i++) {
        struct ep c, s;
        connect_pair(&c, &ce, &s, &se, fx.cli.client, TLS1_3_VERSION);
        assert_string_equal(s.t.peer_name, CLI_NAME);
        assert_string_equal(c.t.peer_name, SRV_NAME);
        ep_free(&c);
        ep_free(&s);
    }
    // The hits did not add entries.
    assert_non_null(se.v.cache[0].ctx);
    assert_null(se.v.cache[1].ctx);
    env_cleanup(&ce);
    env_cleanup(&se);
}

// Data -------------------------------------------------------------------------------------------

#define BIG (100u * 1024u)
#define CAP 4096u

// pump_both sends |BIG| bytes each way with tg_tls_seal capped at CAP, draining between rounds,
// and checks that each side reads exactly what the other sealed.
static void check_data(uint16_t ver) {
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    connect_pair(&c, &ce, &s, &se, fx.cli.client, ver);

    uint8_t *c2s = malloc(BIG), *s2c = malloc(BIG), *got_s = malloc(BIG), *got_c = malloc(BIG);
    assert_non_null(c2s);
    assert_non_null(s2c);
    assert_non_null(got_s);
    assert_non_null(got_c);
    fill(c2s, BIG, 1);
    fill(s2c, BIG, 2);

    // The first seal stops at the cap with most of the data left.
    uint32_t done = 0;
    enum tg_tls_status st = tg_tls_seal(&c.t, c2s, BIG, CAP, &done);
    assert_true(st == TG_TLS_OK || st == TG_TLS_WANT);
    assert_true(done > 0 && done < BIG);
    assert_true(tg_bufq_len(&c.t.out) >= CAP);
    assert_true(tg_bufq_len(&c.t.out) <= OUT_SIZE); // a record never grows the queue
    size_t sent_c = done;
    // Until the peer drains, sealing takes nothing more.
    st = tg_tls_seal(&c.t, c2s + sent_c, BIG - (uint32_t)sent_c, CAP, &done);
    assert_true(st == TG_TLS_OK || st == TG_TLS_WANT);
    assert_int_equal(done, 0);

    size_t sent_s = 0, recv_s = 0, recv_c = 0;
    int rounds = 0;
    while (recv_s < BIG || recv_c < BIG) {
        assert_true(++rounds < 1000);
        if (sent_c < BIG) {
            st = tg_tls_seal(&c.t, c2s + sent_c, BIG - (uint32_t)sent_c, CAP, &done);
            assert_true(st == TG_TLS_OK || st == TG_TLS_WANT);
            sent_c += done;
        }
        if (sent_s < BIG) {
            st = tg_tls_seal(&s.t, s2c + sent_s, BIG - (uint32_t)sent_s, CAP, &done);
            assert_true(st == TG_TLS_OK || st == TG_TLS_WANT);
            assert_true(done < BIG); // never all at once under the cap
            sent_s += done;
        }
        assert_true(tg_bufq_len(&c.t.out) < CAP + TG_TLS_CHUNK + TG_TLS_RECORD_OVERHEAD);
        assert_true(tg_bufq_len(&s.t.out) < CAP + TG_TLS_CHUNK + TG_TLS_RECORD_OVERHEAD);
        xfer(&c, &s);
        xfer(&s, &c);
        // Read in pieces smaller than a record.
        assert_int_equal(read_some(&s, got_s, BIG, &recv_s, 5000, NULL), TG_TLS_WANT);
        assert_int_equal(read_some(&c, got_c, BIG, &recv_c, 3000, NULL), TG_TLS_WANT);
        assert_true(recv_s <= sent_c);
        assert_true(recv_c <= sent_s);
    }
    assert_int_equal(sent_c, BIG);
    assert_int_equal(sent_s, BIG);
    assert_int_equal(recv_s, BIG);
    assert_int_equal(recv_c, BIG);
    assert_memory_equal(got_s, c2s, BIG);
    assert_memory_equal(got_c, s2c, BIG);
    assert_int_equal(s.pend_len, 0);
    assert_int_equal(c.pend_len, 0);

    // tg_tls_write_all puts one whole message in the queue, whatever its size.
    assert_int_equal(tg_tls_write_all(&s.t, s2c, 40000), 1);
    assert_true(tg_bufq_len(&s.t.out) > 40000);
    xfer(&s, &c);
    recv_c = 0;
    assert_int_equal(read_some(&c, got_c, BIG, &recv_c, 65536, NULL), TG_TLS_WANT);
    assert_int_equal(recv_c, 40000);
    assert_memory_equal(got_c, s2c, 40000);

    free(c2s);
    free(s2c);
    free(got_s);
    free(got_c);
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
}

static void test_data_tls12(void **state) {
    (void)state;
    check_data(TLS1_2_VERSION);
}

static void test_data_tls13(void **state) {
    (void)state;
    check_data(TLS1_3_VERSION);
}

// A busy queue: sealing never moves queued bytes. Its stream still reads back intact.
static void check_out_busy(uint16_t ver) {
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    connect_pair(&c, &ce, &s, &se, fx.cli.client, ver);

    enum { TOTAL = 15900 + 5000 + 200 };
    uint8_t msg[TOTAL], got[TOTAL];
    fill(msg, sizeof(msg), 3);
    size_t sent = 0, recv = 0;

    // One record that leaves under two record overheads of room.
    uint32_t done = 0;
    assert_int_equal(tg_tls_seal(&c.t, msg, 15900, 1, &done), TG_TLS_OK);
    assert_int_equal(done, 15900);
    sent = done;
    uint32_t queued = tg_bufq_len(&c.t.out);
    assert_true(queued > 15900 && c.t.out.cap - c.t.out.tail < 2 * TG_TLS_RECORD_OVERHEAD);

    // Part of it is sent; the rest is in flight.
    assert_int_equal(xfer_n(&c, &s, 1000), 1000);
    c.t.out_busy = 1;
    const uint8_t *data = c.t.out.data;
    uint32_t head = c.t.out.head, tail = c.t.out.tail, cap = c.t.out.cap;
    assert_int_equal(head, 1000);
    uint8_t snapshot[OUT_SIZE];
    memcpy(snapshot, data + head, tail - head);

    assert_int_equal(tg_tls_seal(&c.t, msg + sent, 5000, UINT32_MAX, &done), TG_TLS_WANT);
    assert_int_equal(done, 0);
    assert_ptr_equal(c.t.out.data, data);
    assert_int_equal(c.t.out.head, head);
    assert_int_equal(c.t.out.tail, tail);
    assert_int_equal(c.t.out.cap, cap);
    assert_memory_equal(c.t.out.data + head, snapshot, tail - head);
    // Again: a retry while still busy changes nothing either.
    assert_int_equal(tg_tls_seal(&c.t, msg + sent, 5000, UINT32_MAX, &done), TG_TLS_WANT);
    assert_int_equal(done, 0);
    assert_ptr_equal(c.t.out.data, data);
    assert_int_equal(c.t.out.head, head);
    assert_int_equal(c.t.out.tail, tail);

    // The send completes: the queue may compact, and sealing goes on where it stopped.
    c.t.out_busy = 0;
    enum tg_tls_status st = tg_tls_seal(&c.t, msg + sent, 5000, UINT32_MAX, &done);
    assert_true(st == TG_TLS_OK || st == TG_TLS_WANT);
    assert_true(done > 0);
    assert_int_equal(c.t.out.head, 0); // compacted
    sent += done;
    while (sent < 15900 + 5000) {
        xfer(&c, &s);
        assert_int_equal(read_some(&s, got, sizeof(got), &recv, 65536, NULL), TG_TLS_WANT);
        st = tg_tls_seal(&c.t, msg + sent, (uint32_t)(15900 + 5000 - sent), UINT32_MAX, &done);
        assert_true(st == TG_TLS_OK || st == TG_TLS_WANT);
        assert_true(done > 0);
        sent += done;
    }

    // Busy with room at the tail: a record is appended, nothing queued moves.
    xfer(&c, &s);
    assert_int_equal(tg_tls_seal(&c.t, msg + sent, 100, 1, &done), TG_TLS_OK);
    assert_int_equal(done, 100);
    sent += done;
    assert_int_equal(xfer_n(&c, &s, 10), 10);
    c.t.out_busy = 1;
    data = c.t.out.data;
    head = c.t.out.head;
    tail = c.t.out.tail;
    memcpy(snapshot, data + head, tail - head);
    assert_int_equal(tg_tls_seal(&c.t, msg + sent, 100, UINT32_MAX, &done), TG_TLS_OK);
    assert_int_equal(done, 100);
    sent += done;
    assert_ptr_equal(c.t.out.data, data);
    assert_int_equal(c.t.out.head, head);
    assert_true(c.t.out.tail > tail);
    assert_memory_equal(c.t.out.data + head, snapshot, tail - head);
    c.t.out_busy = 0;
    assert_int_equal(sent, TOTAL);

    xfer(&c, &s);
    assert_int_equal(read_some(&s, got, sizeof(got), &recv, 65536, NULL), TG_TLS_WANT);
    assert_int_equal(recv, TOTAL);
    assert_memory_equal(got, msg, TOTAL);

    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
}

static void test_out_busy_tls12(void **state) {
    (void)state;
    check_out_busy(TLS1_2_VERSION);
}

static void test_out_busy_tls13(void **state) {
    (void)state;
    check_out_busy(TLS1_3_VERSION);
}

// A TLS 1.3 server's first write also flushes the tickets BoringSSL held back, so it needs
// more than a record's room. On a busy queue that must be a wait, never moved bytes nor an
// error, and the retry once the send has completed carries data and tickets.
static void test_first_write_busy_tls13(void **state) {
    (void)state;
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    SSL_SESSION_free(g_new_session);
    g_new_session = NULL;
    connect_pair(&c, &ce, &s, &se, fx.cli.client, TLS1_3_VERSION);
    assert_int_equal(tg_bufq_len(&s.t.out), 0);

    // Bytes of something else in flight, leaving room for the record alone.
    uint8_t filler[OUT_SIZE];
    memset(filler, 'f', sizeof(filler));
    const uint32_t fill_len = OUT_SIZE - 600;
    assert_int_equal(tg_bufq_append(&s.t.out, &se.bc, filler, fill_len, OUT_SIZE, 0), 1);
    s.t.out_busy = 1;
    const uint8_t *data = s.t.out.data;
    uint32_t head = s.t.out.head, tail = s.t.out.tail;

    uint8_t msg[100];
    fill(msg, sizeof(msg), 9);
    uint32_t done = 99;
    enum tg_tls_status st = tg_tls_seal(&s.t, msg, sizeof(msg), UINT32_MAX, &done);
    assert_int_equal(st, TG_TLS_WANT);
    assert_int_equal(done, 0);
    assert_ptr_equal(s.t.out.data, data);
    assert_int_equal(s.t.out.head, head);
    assert_true(s.t.out.tail >= tail);
    assert_memory_equal(s.t.out.data + head, filler, fill_len);
    ERR_clear_error();

    // The send completes.
    tg_bufq_consume(&s.t.out, &se.bc, fill_len);
    s.t.out_busy = 0;
    st = tg_tls_seal(&s.t, msg, sizeof(msg), UINT32_MAX, &done);
    assert_int_equal(st, TG_TLS_OK);
    assert_int_equal(done, sizeof(msg));
    xfer(&s, &c);
    uint8_t got[sizeof(msg)];
    size_t n = 0;
    assert_int_equal(read_some(&c, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_WANT);
    assert_int_equal(n, sizeof(msg));
    assert_memory_equal(got, msg, sizeof(msg));
    assert_non_null(g_new_session); // the tickets came too
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
}

// Endings and errors -----------------------------------------------------------------------------

static void check_close_notify(uint16_t ver) {
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    connect_pair(&c, &ce, &s, &se, fx.cli.client, ver);
    assert_int_equal(tg_tls_write_all(&c.t, (const uint8_t *)"bye", 3), 1);
    SSL_shutdown(c.t.ssl);
    xfer(&c, &s);
    uint8_t got[16];
    size_t n = 0;
    assert_int_equal(read_some(&s, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_EOF);
    assert_int_equal(n, 3);
    assert_memory_equal(got, "bye", 3);
    // The end stays the end.
    uint32_t k = 99;
    ep_bind(&s);
    assert_int_equal(tg_tls_read(&s.t, got, sizeof(got), &k), TG_TLS_EOF);
    ep_unbind(&s);
    assert_int_equal(k, 0);
    // The other direction is still open: the server can answer and the client read it.
    assert_int_equal(tg_tls_write_all(&s.t, (const uint8_t *)"ok", 2), 1);
    xfer(&s, &c);
    n = 0;
    assert_int_equal(read_some(&c, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_WANT);
    assert_int_equal(n, 2);
    assert_memory_equal(got, "ok", 2);
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
    ERR_clear_error();
}

static void test_close_notify_tls12(void **state) {
    (void)state;
    check_close_notify(TLS1_2_VERSION);
}

static void test_close_notify_tls13(void **state) {
    (void)state;
    check_close_notify(TLS1_3_VERSION);
}

// FIN without close_notify, on a record boundary: the data, then the end.
static void check_truncation(uint16_t ver) {
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    connect_pair(&c, &ce, &s, &se, fx.cli.client, ver);
    assert_int_equal(tg_tls_write_all(&c.t, (const uint8_t *)"0123456789", 10), 1);
    xfer(&c, &s);
    uint8_t got[16];
    size_t n = 0;
    assert_int_equal(read_some(&s, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_WANT);
    assert_int_equal(n, 10);
    s.t.eof = 1;
    assert_int_equal(read_some(&s, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_EOF);
    assert_int_equal(n, 10);
    assert_memory_equal(got, "0123456789", 10);
    // eof with the data still unread: the data comes first.
    assert_int_equal(tg_tls_write_all(&s.t, (const uint8_t *)"abc", 3), 1);
    xfer(&s, &c);
    c.t.eof = 1;
    n = 0;
    assert_int_equal(read_some(&c, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_EOF);
    assert_int_equal(n, 3);
    assert_memory_equal(got, "abc", 3);
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
    ERR_clear_error();
}

static void test_truncation_tls12(void **state) {
    (void)state;
    check_truncation(TLS1_2_VERSION);
}

static void test_truncation_tls13(void **state) {
    (void)state;
    check_truncation(TLS1_3_VERSION);
}

// FIN in the middle of a record: never data, never a wait for more.
static void test_truncation_mid_record(void **state) {
    (void)state;
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    connect_pair(&c, &ce, &s, &se, fx.cli.client, TLS1_3_VERSION);
    assert_int_equal(tg_tls_write_all(&c.t, (const uint8_t *)"0123456789", 10), 1);
    uint32_t len = tg_bufq_len(&c.t.out);
    assert_int_equal(xfer_n(&c, &s, len / 2), len / 2);
    s.t.eof = 1;
    uint8_t got[16];
    size_t n = 0;
    enum tg_tls_status st = read_some(&s, got, sizeof(got), &n, sizeof(got), NULL);
    assert_true(st == TG_TLS_EOF || st == TG_TLS_ERROR);
    assert_int_equal(n, 0);
    xfer(&c, &s); // the rest would have been thrown away by the caller
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
    ERR_clear_error();
}

static const char kGarbage[] = "GET / HTTP/1.1\r\nHost: gw.tlsgate.example\r\n\r\n";

static void test_garbage_handshake(void **state) {
    (void)state;
    struct env se;
    env_init(&se, 2);
    struct ep s;
    ep_init(&s, &se, fx.srv.server, 1, 0);
    ep_push(&s, (const uint8_t *)kGarbage, sizeof(kGarbage) - 1);
    hs_step(&s);
    assert_int_equal(s.hs, TG_TLS_ERROR);
    assert_int_equal(s.hs_verdict, TG_VERDICT_HANDSHAKE_ERROR);
    assert_true(s.hs_detail[0] != '\0' && strcmp(s.hs_detail, "-") != 0);
    assert_null(s.t.peer_name);
    ep_free(&s);
    env_cleanup(&se);
    ERR_clear_error();
}

static void test_garbage_after_handshake(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(kVersions) / sizeof(kVersions[0]); i++) {
        struct env ce, se;
        env_init(&ce, 1);
        env_init(&se, 2);
        struct ep c, s;
        connect_pair(&c, &ce, &s, &se, fx.cli.client, kVersions[i]);
        // A record header of the right type and version whose body does not decrypt.
        uint8_t rec[5 + 64];
        fill(rec, sizeof(rec), 7);
        rec[0] = 23;
        rec[1] = 3;
        rec[2] = 3;
        rec[3] = 0;
        rec[4] = 64;
        ep_push(&s, rec, sizeof(rec));
        uint8_t got[64];
        size_t n = 0;
        assert_int_equal(read_some(&s, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_ERROR);
        assert_int_equal(n, 0);
        // Plain text where a record should be.
        ep_push(&c, (const uint8_t *)kGarbage, sizeof(kGarbage) - 1);
        assert_int_equal(read_some(&c, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_ERROR);
        assert_int_equal(n, 0);
        ep_free(&c);
        ep_free(&s);
        env_cleanup(&ce);
        env_cleanup(&se);
    }
    ERR_clear_error();
}

// The peer closes before sending anything.
static void test_eof_before_hello(void **state) {
    (void)state;
    struct env se;
    env_init(&se, 2);
    struct ep s;
    ep_init(&s, &se, fx.srv.server, 1, 0);
    s.t.eof = 1;
    hs_step(&s);
    assert_int_equal(s.hs, TG_TLS_ERROR);
    assert_int_equal(s.hs_verdict, TG_VERDICT_PEER_CLOSED);
    ep_free(&s);
    // Same for a client whose server closes at once.
    struct ep c;
    ep_init(&c, &se, fx.cli.client, 0, 0);
    hs_step(&c);
    assert_int_equal(c.hs, TG_TLS_WANT);
    assert_true(tg_bufq_len(&c.t.out) > 0); // the ClientHello
    c.t.eof = 1;
    hs_step(&c);
    assert_int_equal(c.hs, TG_TLS_ERROR);
    assert_int_equal(c.hs_verdict, TG_VERDICT_PEER_CLOSED);
    ep_free(&c);
    env_cleanup(&se);
    ERR_clear_error();
}

// The peer closes in the middle of its flight.
static void test_eof_mid_handshake(void **state) {
    (void)state;
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    ep_init(&c, &ce, fx.cli.client, 0, 0);
    ep_init(&s, &se, fx.srv.server, 1, 0);
    hs_step(&c);
    uint32_t len = tg_bufq_len(&c.t.out);
    assert_true(len > 10);
    xfer_n(&c, &s, len / 2);
    s.t.eof = 1;
    hs_step(&s);
    assert_int_equal(s.hs, TG_TLS_ERROR);
    assert_int_equal(s.hs_verdict, TG_VERDICT_PEER_CLOSED);
    xfer(&c, &s);
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
    ERR_clear_error();
}

// Refusals ---------------------------------------------------------------------------------------

// check_refusal runs a handshake of a client of |cli| against the server and checks the
// server refuses it with |verdict| and the client sees the alert |alert|.
static void check_refusal(struct tg_tls *cli, uint16_t ver, enum tg_verdict verdict, int alert) {
    struct env ce, se;
    env_init(&ce, 1);
    env_init(&se, 2);
    struct ep c, s;
    ep_init(&c, &ce, cli->client, 0, ver);
    ep_init(&s, &se, fx.srv.server, 1, ver);
    handshake(&c, &s);
    assert_int_equal(s.hs, TG_TLS_ERROR);
    assert_int_equal(s.hs_verdict, verdict);
    assert_int_equal(s.t.verdict, verdict);
    assert_null(s.t.peer_name);
    // Nothing refused is cached.
    for (unsigned i = 0; i < TG_VCACHE_SIZE; i++)
        assert_null(se.v.cache[i].ctx);
    // The client accepted the server...
    assert_string_equal(c.t.peer_name, SRV_NAME);
    // ... and hears the alert: at the end of its handshake (TLS 1.2) or on its first read
    // (TLS 1.3, where the client is done before the server has seen its certificate).
    int reason = c.hs_reason;
    if (c.hs == TG_TLS_OK) {
        assert_int_equal(ver, TLS1_3_VERSION);
        uint8_t got[16];
        size_t n = 0;
        assert_int_equal(read_some(&c, got, sizeof(got), &n, sizeof(got), &reason), TG_TLS_ERROR);
        assert_int_equal(n, 0);
    } else {
        assert_int_equal(c.hs, TG_TLS_ERROR);
        assert_int_equal(c.hs_verdict, TG_VERDICT_HANDSHAKE_ERROR);
    }
    assert_int_equal(reason, SSL_AD_REASON_OFFSET + alert);
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    env_cleanup(&se);
    ERR_clear_error();
}

static void test_refuse_cn_mismatch(void **state) {
    (void)state;
    struct tg_tls t;
    make_client_tls(&t, "intruder.example", NULL, NULL, NULL, 86400);
    for (size_t i = 0; i < sizeof(kVersions) / sizeof(kVersions[0]); i++)
        check_refusal(&t, kVersions[i], TG_VERDICT_CN_MISMATCH, SSL_AD_BAD_CERTIFICATE);
    tg_tls_cleanup(&t);
}

static void test_refuse_cn_case_mismatch(void **state) {
    (void)state;
    struct tg_tls t;
    make_client_tls(&t, "SIP.peer.example", NULL, NULL, NULL, 86400);
    check_refusal(&t, TLS1_3_VERSION, TG_VERDICT_CN_CASE_MISMATCH, SSL_AD_BAD_CERTIFICATE);
    tg_tls_cleanup(&t);
}

static void test_refuse_san_mismatch(void **state) {
    (void)state;
    struct tg_tls t;
    make_client_tls(&t, CLI_NAME, "other.peer.example", NULL, NULL, 86400);
    for (size_t i = 0; i < sizeof(kVersions) / sizeof(kVersions[0]); i++)
        check_refusal(&t, kVersions[i], TG_VERDICT_SAN_MISMATCH, SSL_AD_BAD_CERTIFICATE);
    tg_tls_cleanup(&t);
}

static void test_refuse_untrusted(void **state) {
    (void)state;
    struct tg_tls t;
    make_client_tls(&t, CLI_NAME, NULL, fx.other_ca, fx.other_ca_key, 86400);
    for (size_t i = 0; i < sizeof(kVersions) / sizeof(kVersions[0]); i++)
        check_refusal(&t, kVersions[i], TG_VERDICT_UNTRUSTED, SSL_AD_UNKNOWN_CA);
    tg_tls_cleanup(&t);
}

// The client refuses a server whose name it does not expect.
static void test_client_refuses_server(void **state) {
    (void)state;
    EVP_PKEY *key = NULL;
    X509 *x = mint(CLI_NAME, NULL, fx.ca, fx.ca_key, 86400, &key);
    assert_non_null(x);
    struct tg_tls t;
    assert_int_equal(make_tls(&t, x, key, "some.other.server"), 1);
    X509_free(x);
    EVP_PKEY_free(key);
    for (size_t i = 0; i < sizeof(kVersions) / sizeof(kVersions[0]); i++) {
        struct env ce, se;
        env_init(&ce, 1);
        env_init(&se, 2);
        struct ep c, s;
        ep_init(&c, &ce, t.client, 0, kVersions[i]);
        ep_init(&s, &se, fx.srv.server, 1, kVersions[i]);
        handshake(&c, &s);
        assert_int_equal(c.hs, TG_TLS_ERROR);
        assert_int_equal(c.hs_verdict, TG_VERDICT_CN_MISMATCH);
        assert_null(c.t.peer_name);
        assert_int_equal(s.hs, TG_TLS_ERROR);
        assert_int_equal(s.hs_reason, SSL_AD_REASON_OFFSET + SSL_AD_BAD_CERTIFICATE);
        assert_int_equal(s.hs_verdict, TG_VERDICT_HANDSHAKE_ERROR);
        ep_free(&c);
        ep_free(&s);
        env_cleanup(&ce);
        env_cleanup(&se);
    }
    tg_tls_cleanup(&t);
    ERR_clear_error();
}

// Resumption -------------------------------------------------------------------------------------

// first_session makes a full handshake of a client of |cctx| against the server on |senv|,
// reads the tickets that follow it and returns the client's resumable session.
static SSL_SESSION *first_session(SSL_CTX *cctx, struct env *senv, uint16_t ver) {
    struct env ce;
    env_init(&ce, 1);
    struct ep c, s;
    SSL_SESSION_free(g_new_session);
    g_new_session = NULL;
    connect_pair(&c, &ce, &s, senv, cctx, ver);
    assert_int_equal(SSL_session_reused(s.t.ssl), 0);
    // TLS 1.3 tickets come after the handshake, with the server's first write (BoringSSL
    // holds them until then); the client reads them with the data.
    assert_int_equal(tg_tls_write_all(&s.t, (const uint8_t *)"hi", 2), 1);
    xfer(&s, &c);
    uint8_t got[16];
    size_t n = 0;
    assert_int_equal(read_some(&c, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_WANT);
    assert_int_equal(n, 2);
    SSL_SESSION *sess;
    if (ver == TLS1_2_VERSION) {
        sess = SSL_get1_session(c.t.ssl);
    } else {
        sess = g_new_session;
        g_new_session = NULL;
    }
    assert_non_null(sess);
    assert_int_equal(SSL_SESSION_is_resumable(sess), 1);
    ep_free(&c);
    ep_free(&s);
    env_cleanup(&ce);
    return sess;
}

// resume_on connects a client of |cctx| offering |sess| to a server on |senv| (another
// worker's environment). The client side also gets a fresh environment.
static void resume_on(struct ep *c, struct env *ce, struct ep *s, struct env *senv, SSL_CTX *cctx,
                      SSL_SESSION *sess, uint16_t ver) {
    ep_init(c, ce, cctx, 0, ver);
    ep_init(s, senv, fx.srv.server, 1, ver);
    assert_int_equal(SSL_set_session(c->t.ssl, sess), 1);
    handshake(c, s);
}

static void check_resumed_identity(uint16_t ver) {
    struct env se1;
    env_init(&se1, 1);
    SSL_SESSION *sess = first_session(fx.cli.client, &se1, ver);

    // Another worker, whose verifier has never seen this peer.
    struct env se2, ce2;
    env_init(&se2, 2);
    env_init(&ce2, 3);
    struct ep c, s;
    resume_on(&c, &ce2, &s, &se2, fx.cli.client, sess, ver);
    assert_int_equal(c.hs, TG_TLS_OK);
    assert_int_equal(s.hs, TG_TLS_OK);
    assert_int_equal(SSL_session_reused(s.t.ssl), 1);
    assert_int_equal(SSL_session_reused(c.t.ssl), 1);
    uint8_t alert = 0;
    assert_int_equal(tg_verify_resumed(&s.t, &alert), TG_VERDICT_OK);
    assert_int_equal(alert, 0);
    assert_non_null(s.t.peer_name);
    assert_string_equal(s.t.peer_name, CLI_NAME);
    assert_int_equal(s.t.verdict, TG_VERDICT_OK);
    // The client side establishes the provider's identity the same way.
    assert_int_equal(tg_verify_resumed(&c.t, &alert), TG_VERDICT_OK);
    assert_non_null(c.t.peer_name);
    assert_string_equal(c.t.peer_name, SRV_NAME);
    // The resumed connection carries data.
    assert_int_equal(tg_tls_write_all(&c.t, (const uint8_t *)"INVITE", 6), 1);
    xfer(&c, &s);
    uint8_t got[16];
    size_t n = 0;
    assert_int_equal(read_some(&s, got, sizeof(got), &n, sizeof(got), NULL), TG_TLS_WANT);
    assert_int_equal(n, 6);
    assert_memory_equal(got, "INVITE", 6);
    ep_free(&c);
    ep_free(&s);

    // Back on the first worker (its cache holds the chain): the same answer.
    struct env ce3;
    env_init(&ce3, 4);
    resume_on(&c, &ce3, &s, &se1, fx.cli.client, sess, ver);
    assert_int_equal(s.hs, TG_TLS_OK);
    assert_int_equal(SSL_session_reused(s.t.ssl), 1);
    alert = 0;
    assert_int_equal(tg_verify_resumed(&s.t, &alert), TG_VERDICT_OK);
    assert_string_equal(s.t.peer_name, CLI_NAME);
    ep_free(&c);
    ep_free(&s);

    SSL_SESSION_free(sess);
    env_cleanup(&se1);
    env_cleanup(&se2);
    env_cleanup(&ce2);
    env_cleanup(&ce3);
    ERR_clear_error();
}

static void test_resumed_identity_tls12(void **state) {
    (void)state;
    check_resumed_identity(TLS1_2_VERSION);
}

static void test_resumed_identity_tls13(void **state) {
    (void)state;
    check_resumed_identity(TLS1_3_VERSION);
}

// A session made with a certificate that has expired since is not accepted again: either the
// ticket is no longer resumed (a full handshake meets the expiry) or the resumed identity
// check refuses it.
static void test_resumed_after_expiry(void **state) {
    (void)state;
    struct tg_tls t;
    make_client_tls(&t, CLI_NAME, NULL, NULL, NULL, 2);
    struct env se1;
    env_init(&se1, 1);
    SSL_SESSION *sess[2];
    for (size_t i = 0; i < 2; i++)
        sess[i] = first_session(t.client, &se1, kVersions[i]);
    sleep(4);
    for (size_t i = 0; i < 2; i++) {
        struct env se2, ce2;
        env_init(&se2, 2);
        env_init(&ce2, 3);
        struct ep c, s;
        resume_on(&c, &ce2, &s, &se2, t.client, sess[i], kVersions[i]);
        print_message("version %#x: %s\n", kVersions[i],
                      s.hs == TG_TLS_OK ? "resumed, identity re-checked" : "full handshake");
        if (s.hs == TG_TLS_OK) {
            assert_int_equal(SSL_session_reused(s.t.ssl), 1);
            uint8_t alert = 0;
            assert_int_equal(tg_verify_resumed(&s.t, &alert), TG_VERDICT_EXPIRED);
            assert_int_equal(alert, SSL_AD_CERTIFICATE_EXPIRED);
        } else {
            assert_int_equal(s.hs, TG_TLS_ERROR);
            assert_int_equal(s.hs_verdict, TG_VERDICT_EXPIRED);
            assert_int_equal(SSL_session_reused(s.t.ssl), 0);
        }
        assert_null(s.t.peer_name);
        ep_free(&c);
        ep_free(&s);
        env_cleanup(&se2);
        env_cleanup(&ce2);
        SSL_SESSION_free(sess[i]);
    }
    env_cleanup(&se1);
    tg_tls_cleanup(&t);
    ERR_clear_error();
}

// A session resumed on a context whose policy no longer allows the peer (another context that
// shares the ticket keys, as a reloaded generation could) is refused by tg_verify_resumed: the
// identity is checked against the connection's policy now, not taken from the session.
static void check_resumed_policy(const char *allowed, enum tg_verdict want) {
    struct env se1;
    env_init(&se1, 1);
    SSL_SESSION *sess = first_session(fx.cli.client, &se1, TLS1_3_VERSION);
    EVP_PKEY *key = NULL;
    X509 *x = mint(SRV_NAME, NULL, fx.ca, fx.ca_key, 86400, &key);
    assert_non_null(x);
    struct tg_tls t;
    assert_int_equal(make_tls(&t, x, key, allowed), 1);
    X509_free(x);
    EVP_PKEY_free(key);
    uint8_t keys[48];
    assert_int_equal(SSL_CTX_get_tlsext_ticket_keys(fx.srv.server, keys, sizeof(keys)), 1);
    assert_int_equal(SSL_CTX_set_tlsext_ticket_keys(t.server, keys, sizeof(keys)), 1);

    struct env se2, ce2;
    env_init(&se2, 2);
    env_init(&ce2, 3);
    struct ep c, s;
    ep_init(&c, &ce2, fx.cli.client, 0, TLS1_3_VERSION);
    ep_init(&s, &se2, t.server, 1, TLS1_3_VERSION);
    assert_int_equal(SSL_set_session(c.t.ssl, sess), 1);
    handshake(&c, &s);
    assert_int_equal(s.hs, TG_TLS_OK);
    assert_int_equal(SSL_session_reused(s.t.ssl), 1);
    uint8_t alert = 0;
    assert_int_equal(tg_verify_resumed(&s.t, &alert), want);
    assert_int_equal(s.t.verdict, want);
    if (want == TG_VERDICT_OK) {
        assert_int_equal(alert, 0);
        assert_string_equal(s.t.peer_name, CLI_NAME);
    } else {
        assert_int_equal(alert, SSL_AD_BAD_CERTIFICATE);
        assert_null(s.t.peer_name);
    }
    ep_free(&c);
    ep_free(&s);
    SSL_SESSION_free(sess);
    tg_tls_cleanup(&t);
    env_cleanup(&se1);
    env_cleanup(&se2);
    env_cleanup(&ce2);
    ERR_clear_error();
}

static void test_resumed_new_policy_refuses(void **state) {
    (void)state;
    check_resumed_policy("someone.else.example", TG_VERDICT_CN_MISMATCH);
}

static void test_resumed_new_policy_accepts(void **state) {
    (void)state;
    check_resumed_policy(CLI_NAME, TG_VERDICT_OK);
}

// A full handshake in place of a resumption (the server cannot read the ticket) verifies as
// usual.
static void test_foreign_ticket_full_handshake(void **state) {
    (void)state;
    struct env se1;
    env_init(&se1, 1);
    SSL_SESSION *sess = first_session(fx.cli.client, &se1, TLS1_3_VERSION);
    // Another server generation: other ticket keys.
    EVP_PKEY *key = NULL;
    X509 *x = mint(SRV_NAME, NULL, fx.ca, fx.ca_key, 86400, &key);
    assert_non_null(x);
    struct tg_tls t;
    assert_int_equal(make_tls(&t, x, key, CLI_NAME), 1);
    X509_free(x);
    EVP_PKEY_free(key);
    struct env se2, ce2;
    env_init(&se2, 2);
    env_init(&ce2, 3);
    struct ep c, s;
    ep_init(&c, &ce2, fx.cli.client, 0, TLS1_3_VERSION);
    ep_init(&s, &se2, t.server, 1, TLS1_3_VERSION);
    assert_int_equal(SSL_set_session(c.t.ssl, sess), 1);
    handshake(&c, &s);
    assert_int_equal(c.hs, TG_TLS_OK);
    assert_int_equal(s.hs, TG_TLS_OK);
    assert_int_equal(SSL_session_reused(s.t.ssl), 0);
    assert_string_equal(s.t.peer_name, CLI_NAME);
    assert_string_equal(c.t.peer_name, SRV_NAME);
    ep_free(&c);
    ep_free(&s);
    SSL_SESSION_free(sess);
    tg_tls_cleanup(&t);
    env_cleanup(&se1);
    env_cleanup(&se2);
    env_cleanup(&ce2);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_handshake_tls12),
        cmocka_unit_test(test_handshake_tls13),
        cmocka_unit_test(test_handshake_cached),
        cmocka_unit_test(test_data_tls12),
        cmocka_unit_test(test_data_tls13),
        cmocka_unit_test(test_out_busy_tls12),
        cmocka_unit_test(test_out_busy_tls13),
        cmocka_unit_test(test_first_write_busy_tls13),
        cmocka_unit_test(test_close_notify_tls12),
        cmocka_unit_test(test_close_notify_tls13),
        cmocka_unit_test(test_truncation_tls12),
        cmocka_unit_test(test_truncation_tls13),
        cmocka_unit_test(test_truncation_mid_record),
        cmocka_unit_test(test_garbage_handshake),
        cmocka_unit_test(test_garbage_after_handshake),
        cmocka_unit_test(test_eof_before_hello),
        cmocka_unit_test(test_eof_mid_handshake),
        cmocka_unit_test(test_refuse_cn_mismatch),
        cmocka_unit_test(test_refuse_cn_case_mismatch),
        cmocka_unit_test(test_refuse_san_mismatch),
        cmocka_unit_test(test_refuse_untrusted),
        cmocka_unit_test(test_client_refuses_server),
        cmocka_unit_test(test_resumed_identity_tls12),
        cmocka_unit_test(test_resumed_identity_tls13),
        cmocka_unit_test(test_resumed_new_policy_refuses),
        cmocka_unit_test(test_resumed_new_policy_accepts),
        cmocka_unit_test(test_foreign_ticket_full_handshake),
        cmocka_unit_test(test_resumed_after_expiry),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
