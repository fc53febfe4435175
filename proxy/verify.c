// Peer verification: the verify callback, resumed sessions, the per-worker cache of accepted
// chains (see include/tlsgate/verify.h).
#include "tlsgate/verify.h"

#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "tlsgate/config.h"
#include "tlsgate/log.h"
#include "tlsgate/tls.h"

void tg_verifier_init(struct tg_verifier *v, struct tg_peer_ring *peers) {
    memset(v, 0, sizeof(*v));
    v->peers = peers;
}

static void entry_clear(struct tg_vcache_entry *e) {
    for (unsigned i = 0; i < e->num_certs; i++)
        CRYPTO_BUFFER_free(e->certs[i]);
    SSL_CTX_free(e->ctx);
    memset(e, 0, sizeof(*e));
}

void tg_verifier_cleanup(struct tg_verifier *v) {
    for (unsigned i = 0; i < TG_VCACHE_SIZE; i++)
        entry_clear(&v->cache[i]);
}

// same_expect reports whether two checks were bound to the same name (NULL: peer_names).
static int same_expect(const char *a, const char *b) {
    if (a == NULL || b == NULL)
        return a == b;
    return a == b || strcmp(a, b) == 0;
}

static struct tg_vcache_entry *cache_find(struct tg_verifier *v, const SSL *ssl, int64_t now,
                                          const char *expect) {
    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
    size_t n = certs != NULL ? sk_CRYPTO_BUFFER_num(certs) : 0;
    if (n == 0 || n > TG_VCACHE_CHAIN_MAX)
        return NULL;
    for (unsigned i = 0; i < TG_VCACHE_SIZE; i++) {
        struct tg_vcache_entry *e = &v->cache[i];
        if (e->ctx != SSL_get_SSL_CTX(ssl) || e->num_certs != n || now >= e->valid_until ||
            !same_expect(e->expect, expect))
            continue;
        size_t k = 0;
        while (k < n && e->certs[k] == sk_CRYPTO_BUFFER_value(certs, k))
            k++;
        if (k == n)
            return e;
    }
    return NULL;
}

static int64_t asn1_epoch(const ASN1_TIME *t) {
    int days = 0, secs = 0;
    if (t == NULL || !ASN1_TIME_diff(&days, &secs, NULL, t))
        return 0;
    return (int64_t)time(NULL) + (int64_t)days * 86400 + secs;
}

static struct tg_vcache_entry *cache_add(struct tg_verifier *v, const SSL *ssl, int64_t now,
                                         const char *expect, const char *name, X509 *leaf) {
    const STACK_OF(CRYPTO_BUFFER) *certs = SSL_get0_peer_certificates(ssl);
    size_t n = certs != NULL ? sk_CRYPTO_BUFFER_num(certs) : 0;
    if (n == 0 || n > TG_VCACHE_CHAIN_MAX)
        return NULL;
    struct tg_vcache_entry *e = &v->cache[v->next++ % TG_VCACHE_SIZE];
    entry_clear(e);
    X509_NAME_oneline(X509_get_issuer_name(leaf), e->issuer, (int)sizeof(e->issuer));
    e->not_after = asn1_epoch(X509_get0_notAfter(leaf));
    e->valid_until = now + TG_VCACHE_TTL < e->not_after ? now + TG_VCACHE_TTL : e->not_after;
    e->ctx = SSL_get_SSL_CTX(ssl);
    SSL_CTX_up_ref(e->ctx);
    for (size_t i = 0; i < n; i++) {
        e->certs[i] = (CRYPTO_BUFFER *)sk_CRYPTO_BUFFER_value(certs, i);
        CRYPTO_BUFFER_up_ref(e->certs[i]);
    }
    e->num_certs = (uint8_t)n;
    e->name = name;
    e->expect = expect;
    return e;
}

static const char *label(const struct tg_tlsio *t) {
    if (t->env == NULL || t->env->label == NULL)
        return "-";
    return t->env->label(t->env->label_arg, t->listener);
}

// clamp_session keeps a session made by a full handshake from outliving the peer's
// certificate: a ticket for it expires with the certificate, and a resumption after that is a
// full handshake (which then meets the expiry).
static void clamp_session(SSL *ssl, int64_t now, int64_t not_after) {
    if (!SSL_in_init(ssl) || not_after <= 0)
        return;
    SSL_SESSION *s = SSL_get_session(ssl);
    if (s == NULL)
        return;
    int64_t left = not_after - now;
    if (left < 1)
        left = 1;
    if ((uint64_t)left < SSL_SESSION_get_timeout(s))
        SSL_SESSION_set_timeout(s, (uint32_t)left);
}

// check_chain runs the policy (or the cache) over the peer's chain of |ssl|, holding it to
// t->expect_name when the connection has one (a target reached by name), else peer_names.
static enum tg_verdict check_chain(struct tg_tlsio *t, SSL *ssl, int64_t now, char *detail,
                                   size_t detail_len) {
    struct tg_verifier *v = t->env != NULL ? t->env->verifier : NULL;
    unsigned wid = t->env != NULL ? t->env->worker_id : 0;
    const char *expect = t->expect_name;
    struct tg_vcache_entry *hit = v != NULL ? cache_find(v, ssl, now, expect) : NULL;
    if (hit != NULL) {
        if (v->peers != NULL)
            tg_peer_ring_seen(v->peers, &hit->peer_handle, hit->name, hit->issuer, hit->not_after,
                              now);
        TG_DEBUG("peer_verified", "conn=w%u-%u name=%s cached=yes", wid, t->seq, hit->name);
        t->peer_name = hit->name;
        clamp_session(ssl, now, hit->not_after);
        return TG_VERDICT_OK;
    }
    X509 *leaf = NULL;
    STACK_OF(X509) *chain = NULL;
    enum tg_verdict verdict;
    if (!tg_tls_peer_chain(ssl, &leaf, &chain)) {
        verdict = TG_VERDICT_HANDSHAKE_ERROR;
        snprintf(detail, detail_len, "peer certificate does not parse");
    } else {
        const char *name = NULL;
        enum tg_peer_role role = SSL_is_server(ssl) ? TG_PEER_CLIENT : TG_PEER_SERVER;
        verdict = tg_policy_check_peer_name(tg_tls_policy(ssl), role, leaf, chain, now, expect,
                                            &name, detail, detail_len);
        if (verdict == TG_VERDICT_OK) {
            t->peer_name = name;
            struct tg_vcache_entry *e =
                v != NULL ? cache_add(v, ssl, now, expect, name, leaf) : NULL;
            if (e != NULL && v->peers != NULL)
                e->peer_handle = tg_peer_ring_note(v->peers, name, e->issuer, e->not_after, now);
            clamp_session(ssl, now, asn1_epoch(X509_get0_notAfter(leaf)));
            TG_DEBUG("peer_verified", "conn=w%u-%u name=%s", wid, t->seq, name);
        }
    }
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    return verdict;
}

static uint8_t alert_for(enum tg_verdict v) {
    switch (v) {
    case TG_VERDICT_EXPIRED:
    case TG_VERDICT_NOT_YET_VALID:
        return SSL_AD_CERTIFICATE_EXPIRED;
    case TG_VERDICT_UNTRUSTED:
    case TG_VERDICT_SELF_SIGNED:
        return SSL_AD_UNKNOWN_CA;
    case TG_VERDICT_LEAF_IS_CA:
    case TG_VERDICT_EKU_MISMATCH:
    case TG_VERDICT_KEY_USAGE_MISMATCH:
        return SSL_AD_UNSUPPORTED_CERTIFICATE;
    default:
        return SSL_AD_BAD_CERTIFICATE;
    }
}

static void log_refusal(const struct tg_tlsio *t, enum tg_verdict v, const char *detail,
                        const char *how) {
    if (t->env == NULL)
        return;
    char peer[64];
    tg_peer_str(t->fd, peer, sizeof(peer));
    TG_WARN("handshake_refused", "conn=w%u-%u listener=%s peer=%s reason=%s detail=\"%s\"%s",
            t->env->worker_id, t->seq, label(t), peer, tg_verdict_name(v), detail, how);
}

enum ssl_verify_result_t tg_verify_peer(SSL *ssl, uint8_t *out_alert) {
    struct tg_tlsio *t = tg_tlsio_from_ssl(ssl);
    char detail[256] = "";
    enum tg_verdict v = check_chain(t, ssl, (int64_t)time(NULL), detail, sizeof(detail));
    t->verdict = (uint8_t)v;
    if (v == TG_VERDICT_OK)
        return ssl_verify_ok;
    log_refusal(t, v, detail, "");
    *out_alert = alert_for(v);
    return ssl_verify_invalid;
}

enum tg_verdict tg_verify_resumed(struct tg_tlsio *t, uint8_t *out_alert) {
    char detail[256] = "";
    enum tg_verdict v = check_chain(t, t->ssl, (int64_t)time(NULL), detail, sizeof(detail));
    if (v == TG_VERDICT_OK && t->peer_name == NULL) {
        v = TG_VERDICT_HANDSHAKE_ERROR;
        snprintf(detail, sizeof(detail), "resumed session carries no verified identity");
    }
    t->verdict = (uint8_t)v;
    if (v != TG_VERDICT_OK) {
        log_refusal(t, v, detail, " resumed=yes");
        *out_alert = alert_for(v);
    }
    return v;
}
