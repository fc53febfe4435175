// The connection layer: life cycle, the byte relay of tcp mode, handshake outcomes and the
// step that turns the decision of connstep.c into operations (see include/tlsgate/conn.h).
#include "tlsgate/conn.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "tlsgate/log.h"
#include "tlsgate/probes.h"
#include "tlsgate/sipglue.h"
#include "tlsgate/upstream.h"

#define TLS_SLACK (TG_TLS_CHUNK + 1024u) // room the ciphertext queue keeps for one more record

static const char *listener_label(const void *arg, uint16_t listener) {
    const struct tg_config *cfg = arg;
    return cfg->listeners[listener].name;
}

int tg_conns_init(struct tg_conns *cs, struct tg_loop *loop, const struct tg_config *cfg,
                  struct tg_metrics *metrics, unsigned worker_id, uint32_t max_conns,
                  SSL_CTX *server, SSL_CTX *client, const uint8_t *sip_key,
                  struct tg_peer_ring *peers, struct tg_guard *guard) {
    memset(cs, 0, sizeof(*cs));
    cs->guard = guard;
    cs->loop = loop;
    cs->cfg = cfg;
    cs->metrics = metrics;
    cs->ctr = tg_metrics_worker(metrics, worker_id);
    cs->worker_id = worker_id;
    cs->sip_key = sip_key;
    cs->tls_qsize = cfg->buffer_size + TLS_SLACK;
    tg_tlane_init(&cs->hs_lane, cfg->handshake_timeout_ms);
    tg_tlane_init(&cs->attempt_lane, 0);
    tg_tlane_init(&cs->idle_lane, cfg->idle_timeout_ms);
    tg_bufcache_init(&cs->bc, cfg->buffer_size, cs->tls_qsize);
    tg_verifier_init(&cs->verifier, peers);
    cs->tlsenv = (struct tg_tlsenv){.loop = loop,
                                    .bc = &cs->bc,
                                    .out_size = cs->tls_qsize,
                                    .verifier = &cs->verifier,
                                    .worker_id = worker_id,
                                    .label = listener_label,
                                    .label_arg = cfg};
    SSL_CTX_up_ref(server);
    SSL_CTX_up_ref(client);
    cs->server_ctx = server;
    cs->client_ctx = client;
    if (!tg_slab_init(&cs->slab, sizeof(struct tg_conn), max_conns))
        return 0;
    return tg_sipglue_init(cs);
}

static void conn_free(struct tg_conns *cs, struct tg_conn *c);

void tg_conns_cleanup(struct tg_conns *cs) {
    for (uint32_t i = 0; cs->slab.objs != NULL && i < cs->slab.cap; i++)
        if (tg_slab_live(&cs->slab, i))
            conn_free(cs, tg_slab_at(&cs->slab, i));
    tg_sipglue_cleanup(cs);
    tg_slab_cleanup(&cs->slab);
    SSL_CTX_free(cs->server_ctx);
    SSL_CTX_free(cs->client_ctx);
    tg_verifier_cleanup(&cs->verifier);
    tg_bufcache_cleanup(&cs->bc);
}

// ---------------------------------------------------------------------------------------------
// Submissions.

// submit_recv arms one receive into a provided buffer. Single-shot on purpose: a multishot
// receive keeps completing (the kernel retries it inline) until its cancel is processed, and
// everything it delivers after the destination queue is full must be kept in pend_*: a peer
// that writes and never reads could grow that by megabytes. One receive in flight per side
// bounds pend_tls and pend_plain by one buffer (TG_BUF_SIZE) each.
static void submit_recv(struct tg_conns *cs, struct tg_conn *c, int tls) {
    struct io_uring_sqe *sqe = tg_loop_sqe(cs->loop);
    io_uring_prep_recv(sqe, tls ? c->tio.fd : c->plain_fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = TG_BUF_GROUP;
    io_uring_sqe_set_data64(sqe,
                            tg_conn_ud(cs, c, tls ? TG_CONN_OP_RECV_TLS : TG_CONN_OP_RECV_PLAIN));
    c->flags |= tls ? TG_F_TLS_RECV : TG_F_PLAIN_RECV;
    c->inflight++;
}

static void cancel_recv(struct tg_conns *cs, struct tg_conn *c, int tls) {
    tg_loop_cancel_ud(cs->loop,
                      tg_conn_ud(cs, c, tls ? TG_CONN_OP_RECV_TLS : TG_CONN_OP_RECV_PLAIN), 0);
    c->flags |= tls ? TG_F_TLS_RECV_CANCEL : TG_F_PLAIN_RECV_CANCEL;
}

static void submit_send(struct tg_conns *cs, struct tg_conn *c, int tls) {
    struct tg_bufq *q = tls ? &c->tio.out : &c->to_plain;
    struct io_uring_sqe *sqe = tg_loop_sqe(cs->loop);
    io_uring_prep_send(sqe, tls ? c->tio.fd : c->plain_fd, q->data + q->head, tg_bufq_len(q),
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe,
                            tg_conn_ud(cs, c, tls ? TG_CONN_OP_SEND_TLS : TG_CONN_OP_SEND_PLAIN));
    if (tls)
        c->tio.out_busy = 1;
    else
        c->flags |= TG_F_PLAIN_SENDING;
    c->inflight++;
}

static void conn_touch(struct tg_conns *cs, struct tg_conn *c);

// send_now sends what a queue holds at once with a non-blocking send(2), before the ring is
// asked to. On an uncongested socket (the common case: a SIP message, a reply) it completes
// there, which saves the SQE, its completion and the loop turn that handles the completion:
// per 1 KiB round trip through the proxy, two loop turns and two io_uring_enter calls of six.
// Returns 1 when the queue was emptied; what is left (a full socket buffer, or an error, which
// the ring's send then reports where every send error is handled, in on_send) goes out through
// the ring.
static int send_now(struct tg_conns *cs, struct tg_conn *c, int tls) {
    struct tg_bufq *q = tls ? &c->tio.out : &c->to_plain;
    ssize_t n = send(tls ? c->tio.fd : c->plain_fd, q->data + q->head, tg_bufq_len(q),
                     MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
        tg_bufq_consume(q, &cs->bc, (uint32_t)n);
        conn_touch(cs, c);
    }
    if (tg_bufq_len(q) == 0)
        return 1;
    submit_send(cs, c, tls);
    return 0;
}

// ---------------------------------------------------------------------------------------------
// Life cycle.

struct tg_conn *tg_conn_alloc(struct tg_conns *cs) {
    uint32_t slot;
    struct tg_conn *c = tg_slab_alloc(&cs->slab, &slot);
    if (c == NULL)
        return NULL;
    c->tio.fd = -1;
    c->tio.env = &cs->tlsenv;
    c->plain_fd = -1;
    c->tio.seq = ++cs->next_seq;
    c->state = TG_CS_CONNECTING;
    return c;
}

// guard_release gives back the handshake budget a connection holds (guard.h).
static void guard_release(struct tg_conns *cs, struct tg_conn *c) {
    if (!(c->flags & TG_F_GUARDED))
        return;
    c->flags &= ~TG_F_GUARDED;
    tg_guard_release_handshake(cs->guard, c->guard_bucket);
    cs->hs_inflight--;
}

static void conn_free(struct tg_conns *cs, struct tg_conn *c) {
    tg_timer_cancel(&c->timer);
    if (c->flags & TG_F_NOBUFS)
        cs->num_nobufs--;
    guard_release(cs, c);
    if (c->flags & TG_F_COUNTED)
        tg_guard_release_conn(cs->guard, c->tio.listener);
    if (c->tio.fd >= 0)
        close(c->tio.fd);
    if (c->plain_fd >= 0)
        close(c->plain_fd);
    tg_tlsio_drop(&c->tio);
    tg_bufq_reset(&c->to_plain, &cs->bc);
    tg_bufq_reset(&c->pend_tls, &cs->bc);
    tg_bufq_reset(&c->pend_plain, &cs->bc);
    if (c->flags & TG_F_PROBE)
        tg_probes_conn_gone(cs, c);
    else
        tg_counter_add(&cs->ctr[c->tio.listener].conns_closed, 1);
    tg_sipglue_detach(cs, c);
    if (c->dns != NULL)
        tg_dns_view_release(cs->dns, c->dns);
    c->dns = NULL;
    c->state = TG_CS_FREE;
    tg_slab_free(&cs->slab, tg_conn_slot(cs, c));
}

void tg_conn_close(struct tg_conns *cs, struct tg_conn *c, const char *why) {
    if (c->state == TG_CS_CLOSING || c->state == TG_CS_FREE)
        return;
    TG_DEBUG("conn_close", "conn=w%u-%u listener=%s why=%s", cs->worker_id, c->tio.seq,
             tg_conn_lconf(cs, c)->name, why);
    c->state = TG_CS_CLOSING;
    tg_timer_cancel(&c->timer);
    if (c->inflight == 0)
        return;
    if (c->tio.fd >= 0)
        tg_loop_cancel_fd(cs->loop, c->tio.fd);
    if (c->plain_fd >= 0)
        tg_loop_cancel_fd(cs->loop, c->plain_fd);
}

void tg_conn_reap(struct tg_conns *cs, struct tg_conn *c) {
    while (c->inflight == 0) {
        if (c->state == TG_CS_CLOSING) {
            conn_free(cs, c);
            return;
        }
        if (!(c->flags & TG_F_RETRY))
            return;
        tg_upstream_retry(cs, c);
    }
}

void tg_conn_fatal(struct tg_conns *cs, struct tg_conn *c, const char *why) {
    if (c->flags & TG_F_FATAL_FLUSH)
        return;
    if (c->tio.ssl == NULL || !SSL_is_init_finished(c->tio.ssl) || (c->flags & TG_F_TLS_WR_DONE) ||
        !(c->flags & TG_F_TLS_UP)) {
        tg_conn_close(cs, c, why);
        return;
    }
    TG_DEBUG("conn_fatal", "conn=w%u-%u why=%s", cs->worker_id, c->tio.seq, why);
    c->flags |= TG_F_FATAL_FLUSH | TG_F_PLAIN_RD_EOF | TG_F_PLAIN_WR_DONE;
    tg_bufq_reset(&c->pend_plain, &cs->bc); // to_plain may still be under a send: freed later
    if (!(c->flags & TG_F_TLS_SHUT_SENT)) {
        SSL_shutdown(c->tio.ssl);
        c->flags |= TG_F_TLS_SHUT_SENT;
    }
    if (c->plain_fd >= 0 && (c->flags & (TG_F_PLAIN_RECV | TG_F_PLAIN_SENDING)))
        tg_loop_cancel_fd(cs->loop, c->plain_fd);
    tg_conn_step(cs, c);
}

void tg_conn_tls_failed(struct tg_conns *cs, struct tg_conn *c, const char *why) {
    if (c->state == TG_CS_CLOSING || c->state == TG_CS_FREE)
        return;
    if (tg_bufq_len(&c->tio.out) == 0 || !(c->flags & TG_F_TLS_UP) || c->tio.eof ||
        (c->flags & TG_F_TLS_WR_DONE)) {
        tg_conn_close(cs, c, why);
        return;
    }
    TG_DEBUG("conn_tls_failed", "conn=w%u-%u why=%s", cs->worker_id, c->tio.seq, why);
    // Nothing more is read from either side; what the TLS side has queued (the alert last) is
    // sent, then the connection closes (TG_ACT_CLOSE_FLUSHED). The handshake lane bounds it.
    c->flags |= TG_F_FATAL_FLUSH | TG_F_TLS_SHUT_SENT | TG_F_TLS_RD_EOF | TG_F_PLAIN_RD_EOF |
                TG_F_PLAIN_WR_DONE;
    tg_bufq_reset(&c->pend_plain, &cs->bc);
    tg_bufq_reset(&c->pend_tls, &cs->bc);
    if (c->plain_fd >= 0 && (c->flags & (TG_F_PLAIN_RECV | TG_F_PLAIN_SENDING)))
        tg_loop_cancel_fd(cs->loop, c->plain_fd);
    tg_timer_arm(&cs->hs_lane, &c->timer, cs->loop->now);
    tg_conn_step(cs, c);
}

void tg_conn_log_tls_error(struct tg_conns *cs, struct tg_conn *c) {
    char detail[128];
    tg_tls_err_str(detail, sizeof(detail));
    TG_WARN("tls_error", "conn=w%u-%u listener=%s detail=\"%s\"", cs->worker_id, c->tio.seq,
            tg_conn_lconf(cs, c)->name, detail);
}

static void record_handshake(struct tg_conns *cs, struct tg_conn *c, enum tg_verdict v,
                             const char *detail) {
    tg_counter_add(&cs->ctr[c->tio.listener].handshakes[v], 1);
    // A policy refusal was logged, with the rule's own words, by the verifier.
    if (v == TG_VERDICT_OK || (v <= TG_VERDICT_POLICY_MAX && v == c->tio.verdict))
        return;
    char peer[64];
    tg_peer_str(c->tio.fd, peer, sizeof(peer));
    TG_WARN("handshake_refused", "conn=w%u-%u listener=%s peer=%s reason=%s detail=\"%s\"",
            cs->worker_id, c->tio.seq, tg_conn_lconf(cs, c)->name, peer, tg_verdict_name(v),
            detail ? detail : "");
}

int tg_conn_start_tls(struct tg_conns *cs, struct tg_conn *c, int server) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    const struct tg_target *t = server ? NULL : &lc->targets[c->target];
    // A target with a name (its DNS host or `=NAME`) must prove that name, and is asked for it
    // by SNI; one given by address alone is held to peer_names (and gets no SNI).
    c->tio.expect_name = t != NULL && t->expect_name[0] != '\0' ? t->expect_name : NULL;
    const char *sni = c->tio.expect_name != NULL ? c->tio.expect_name : t != NULL ? t->host : NULL;
    if (!tg_tlsio_init(&c->tio, &cs->tlsenv, server ? cs->server_ctx : cs->client_ctx, server, sni))
        return 0;
    c->tio.sign_ud = tg_conn_ud(cs, c, TG_CONN_OP_SIGNED);
    c->state = TG_CS_HANDSHAKE;
    if (server)
        tg_timer_arm(&cs->hs_lane, &c->timer, cs->loop->now);
    else // one attempt of the outbound chain: its own deadline, within the chain's
        tg_upstream_arm_attempt(cs, c, cs->cfg->handshake_timeout_ms);
    return 1;
}

static void handshake_done(struct tg_conns *cs, struct tg_conn *c) {
    if (SSL_session_reused(c->tio.ssl)) {
        // The verify callback did not run: the identity is established from the session's
        // chain, now, under the rules of the connection's generation.
        uint8_t alert = SSL_AD_BAD_CERTIFICATE;
        enum tg_verdict v = tg_verify_resumed(&c->tio, &alert);
        if (v != TG_VERDICT_OK) {
            SSL_send_fatal_alert(c->tio.ssl, alert);
            ERR_clear_error();
            tg_conn_handshake_failed(cs, c, v, "resumed session refused");
            return;
        }
    }
    record_handshake(cs, c, TG_VERDICT_OK, NULL);
    guard_release(cs, c); // authenticated: no longer counts against the handshake budget
    tg_upstream_verified(cs, c);
    c->state = TG_CS_OPEN;
    // Inbound, the backend is connected now: until it answers, the connection stays under the
    // handshake timeout (a backend that never accepts must not hold it until idle_timeout_ms);
    // the connect completion moves it to the idle lane.
    if (tg_conn_inbound(cs, c) && !(c->flags & TG_F_PLAIN_UP))
        tg_timer_arm(&cs->hs_lane, &c->timer, cs->loop->now);
    else
        tg_timer_arm(&cs->idle_lane, &c->timer, cs->loop->now);
    if (tg_log_enabled(TG_LOG_INFO)) {
        char peer[64];
        tg_peer_str(c->tio.fd, peer, sizeof(peer));
        TG_INFO("handshake_ok", "conn=w%u-%u listener=%s peer=%s version=%s cipher=%s%s",
                cs->worker_id, c->tio.seq, tg_conn_lconf(cs, c)->name, peer,
                SSL_get_version(c->tio.ssl),
                SSL_CIPHER_get_name(SSL_get_current_cipher(c->tio.ssl)),
                SSL_session_reused(c->tio.ssl) ? " resumed=yes" : "");
    }
    if (c->flags & TG_F_PROBE) {
        tg_probes_send(cs, c);
        return;
    }
    tg_sipglue_verified(cs, c);
    if (tg_conn_inbound(cs, c))
        tg_upstream_connect(cs, c); // the backend is reached only for an authenticated peer
}

void tg_conn_handshake_failed(struct tg_conns *cs, struct tg_conn *c, enum tg_verdict v,
                              const char *detail) {
    record_handshake(cs, c, v, detail);
    tg_upstream_handshake_failed(cs, c, tg_verdict_name(v));
    if (tg_upstream_may_retry(cs, c)) {
        c->flags |= TG_F_RETRY;
        if (tg_bufq_len(&c->tio.out) > 0 && (c->flags & TG_F_TLS_UP) && !c->tio.eof &&
            !c->tio.out_busy) {
            // The target gets the alert that says why (bad_certificate, ...) before we move
            // on: the send goes out, the receive is cancelled, then tg_conn_reap retries. The
            // attempt's deadline bounds it.
            submit_send(cs, c, 1);
            if ((c->flags & TG_F_TLS_RECV) && !(c->flags & TG_F_TLS_RECV_CANCEL))
                cancel_recv(cs, c, 1);
            return;
        }
        if (c->inflight > 0)
            tg_loop_cancel_fd(cs->loop, c->tio.fd);
        return; // tg_conn_reap retries once the last completion for this socket has arrived
    }
    if (tg_bufq_len(&c->tio.out) > 0 && (c->flags & TG_F_TLS_UP) && !c->tio.eof) {
        // Let the peer read the alert that says why (bad_certificate, unknown_ca, ...).
        c->flags |= TG_F_FATAL_FLUSH | TG_F_TLS_SHUT_SENT;
        tg_conn_step(cs, c);
        return;
    }
    tg_conn_close(cs, c, "handshake_failed");
}

static void handshake_error(struct tg_conns *cs, struct tg_conn *c, int ret) {
    char detail[128];
    enum tg_verdict v = tg_tls_handshake_verdict(&c->tio, ret, detail, sizeof(detail));
    tg_conn_handshake_failed(cs, c, v, detail);
}

// note_signing counts a signature the handshake just queued (signer.h) as an operation in
// flight: the connection is not freed, nor its TLS side torn down, before it completes.
static void note_signing(struct tg_conn *c) {
    if (c->tio.sign_new) {
        c->tio.sign_new = 0;
        c->inflight++;
    }
}

// handshake advances the handshake; returns 1 when the connection is open.
static int handshake(struct tg_conns *cs, struct tg_conn *c) {
    int ret;
    enum tg_tls_status s = tg_tls_handshake(&c->tio, &ret);
    note_signing(c);
    if (s == TG_TLS_WANT)
        return 0;
    if (s != TG_TLS_OK) {
        handshake_error(cs, c, ret);
        return 0;
    }
    handshake_done(cs, c);
    return c->state == TG_CS_OPEN;
}

// tg_conn_client_hello starts the client handshake of an outbound connection.
void tg_conn_client_hello(struct tg_conns *cs, struct tg_conn *c) {
    int ret;
    enum tg_tls_status s = tg_tls_handshake(&c->tio, &ret);
    note_signing(c);
    if (s == TG_TLS_ERROR && SSL_get_error(c->tio.ssl, ret) != SSL_ERROR_WANT_READ) {
        handshake_error(cs, c, ret);
        return;
    }
    tg_conn_step(cs, c);
}

// ---------------------------------------------------------------------------------------------
// The relay of tcp mode.

// tls_decrypt moves plaintext out of BoringSSL into |to_plain| until the input is used up or
// the queue is full.
static void tls_decrypt(struct tg_conns *cs, struct tg_conn *c) {
    const uint32_t cap = cs->cfg->buffer_size;
    struct tg_listener_counters *ctr = &cs->ctr[c->tio.listener];
    uint64_t total = 0;
    while (tg_bufq_len(&c->to_plain) < cap) {
        uint32_t room, n;
        uint8_t *dst =
            tg_bufq_space(&c->to_plain, &cs->bc, cap, (c->flags & TG_F_PLAIN_SENDING) != 0, &room);
        if (dst == NULL) {
            tg_conn_close(cs, c, "out_of_memory");
            return;
        }
        if (room == 0)
            break; // the rest of the queue is being sent: resume when that completes
        enum tg_tls_status s = tg_tls_read(&c->tio, dst, room, &n);
        if (s == TG_TLS_OK) {
            tg_bufq_commit(&c->to_plain, n);
            total += n;
            continue;
        }
        if (tg_bufq_len(&c->to_plain) == 0)
            tg_bufq_reset(&c->to_plain, &cs->bc); // nothing was read: give the room back
        if (s == TG_TLS_WANT)
            break;
        if (s == TG_TLS_EOF) {
            c->flags |= TG_F_TLS_RD_EOF;
            break;
        }
        tg_conn_log_tls_error(cs, c);
        tg_conn_tls_failed(cs, c, "tls_error");
        return;
    }
    if (total > 0)
        tg_counter_add(tg_conn_inbound(cs, c) ? &ctr->bytes_up : &ctr->bytes_down, total);
}

// tls_pump moves ciphertext from |tio.in| through BoringSSL: the handshake first, then
// plaintext toward the other side.
static void tls_pump(struct tg_conns *cs, struct tg_conn *c) {
    if (c->state == TG_CS_HANDSHAKE && !handshake(cs, c))
        return;
    if (c->state != TG_CS_OPEN || (c->flags & TG_F_TLS_RD_EOF))
        return;
    if (c->flags & TG_F_PROBE) {
        tg_probes_read(cs, c);
        return;
    }
    struct tg_sipconn *sc = tg_conn_sip(cs, c);
    if (sc != NULL) {
        tg_sipglue_tls_read(cs, c, sc);
        return;
    }
    tls_decrypt(cs, c);
}

// tls_input hands ciphertext to BoringSSL straight from the provided buffer; whatever cannot
// be taken now (the plaintext queue is full) is kept in |pend_tls| and reading stops.
static void tls_input(struct tg_conns *cs, struct tg_conn *c, const uint8_t *data, uint32_t len) {
    if (tg_bufq_len(&c->pend_tls) > 0) {
        if (!tg_bufq_append(&c->pend_tls, &cs->bc, data, len, TG_BUF_SIZE, 0))
            tg_conn_close(cs, c, "out_of_memory");
        return;
    }
    c->tio.in = data;
    c->tio.in_len = len;
    tls_pump(cs, c);
    if (c->tio.in_len > 0 && c->state != TG_CS_CLOSING &&
        !(c->flags & (TG_F_RETRY | TG_F_FATAL_FLUSH | TG_F_SIP_CLOSE))) {
        if (!tg_bufq_append(&c->pend_tls, &cs->bc, c->tio.in, c->tio.in_len, TG_BUF_SIZE, 0))
            tg_conn_close(cs, c, "out_of_memory");
    }
    c->tio.in = NULL;
    c->tio.in_len = 0;
}

// pump_pending runs the TLS pump over the ciphertext kept in |pend_tls| (possibly none) and
// drops from it what BoringSSL took.
static void pump_pending(struct tg_conns *cs, struct tg_conn *c) {
    uint32_t len = tg_bufq_len(&c->pend_tls);
    c->tio.in = len > 0 ? tg_bufq_peek(&c->pend_tls) : NULL;
    c->tio.in_len = len;
    tls_pump(cs, c);
    if (c->state != TG_CS_CLOSING && len > 0)
        tg_bufq_consume(&c->pend_tls, &cs->bc, len - c->tio.in_len);
    c->tio.in = NULL;
    c->tio.in_len = 0;
}

// tls_resume decrypts what |pend_tls| holds, once the plaintext queue has room again.
static void tls_resume(struct tg_conns *cs, struct tg_conn *c) {
    // Besides pend_tls, BoringSSL itself may hold the rest of a decrypted record that did not
    // fit in to_plain: it must come out now, since no more ciphertext may ever arrive for it.
    if (tg_bufq_len(&c->pend_tls) == 0 && SSL_pending(c->tio.ssl) == 0 &&
        !(c->tio.eof && !(c->flags & TG_F_TLS_RD_EOF)))
        return;
    pump_pending(cs, c);
}

// plain_encrypt seals plaintext into the ciphertext queue while it is under its bound;
// returns how many bytes it took.
static uint32_t plain_encrypt(struct tg_conns *cs, struct tg_conn *c, const uint8_t *data,
                              uint32_t len) {
    uint32_t done;
    enum tg_tls_status s = tg_tls_seal(&c->tio, data, len, cs->cfg->buffer_size, &done);
    if (s == TG_TLS_ERROR) {
        if (tg_bufq_peek(&c->tio.out) == NULL && ERR_peek_error() == 0) {
            tg_conn_close(cs, c, "out_of_memory");
            return done;
        }
        tg_conn_log_tls_error(cs, c);
        tg_conn_close(cs, c, "tls_write_error");
        return done;
    }
    struct tg_listener_counters *ctr = &cs->ctr[c->tio.listener];
    tg_counter_add(tg_conn_inbound(cs, c) ? &ctr->bytes_down : &ctr->bytes_up, done);
    return done;
}

static uint32_t plain_feed(struct tg_conns *cs, struct tg_conn *c, const uint8_t *data,
                           uint32_t len) {
    struct tg_sipconn *sc = tg_conn_sip(cs, c);
    return sc != NULL ? tg_sipglue_plain_feed(cs, c, sc, data, len)
                      : plain_encrypt(cs, c, data, len);
}

static void plain_input(struct tg_conns *cs, struct tg_conn *c, const uint8_t *data, uint32_t len) {
    if (tg_bufq_len(&c->pend_plain) > 0 || (c->flags & TG_F_TLS_SHUT_SENT)) {
        if ((c->flags & TG_F_TLS_SHUT_SENT) == 0 &&
            !tg_bufq_append(&c->pend_plain, &cs->bc, data, len, TG_BUF_SIZE, 0))
            tg_conn_close(cs, c, "out_of_memory");
        return;
    }
    uint32_t done = plain_feed(cs, c, data, len);
    if (c->state == TG_CS_CLOSING)
        return;
    if (done < len &&
        !tg_bufq_append(&c->pend_plain, &cs->bc, data + done, len - done, TG_BUF_SIZE, 0))
        tg_conn_close(cs, c, "out_of_memory");
}

static void plain_resume(struct tg_conns *cs, struct tg_conn *c) {
    uint32_t len = tg_bufq_len(&c->pend_plain);
    if (len == 0)
        return;
    uint32_t done = plain_feed(cs, c, tg_bufq_peek(&c->pend_plain), len);
    if (c->state != TG_CS_CLOSING)
        tg_bufq_consume(&c->pend_plain, &cs->bc, done);
}

// ---------------------------------------------------------------------------------------------
// The step.

static void view_of(const struct tg_conns *cs, const struct tg_conn *c, struct tg_conn_view *v) {
    const struct tg_sipconn *sc = tg_conn_sip(cs, c);
    v->state = c->state;
    v->flags =
        c->flags | (c->tio.out_busy ? TG_F_TLS_SENDING : 0) | (c->tio.eof ? TG_F_TCP_EOF : 0);
    v->to_tls = tg_bufq_len(&c->tio.out);
    v->to_plain = tg_bufq_len(&c->to_plain);
    v->pend_tls = tg_bufq_len(&c->pend_tls);
    v->pend_plain = tg_bufq_len(&c->pend_plain);
    v->cap = cs->cfg->buffer_size;
    // A SIP side whose complete messages wait for a queue is not finished yet; what is left
    // of an incomplete one after EOF never will be.
    v->sip_wait_pbx = sc != NULL && sc->blocked[TG_SIP_SIDE_PBX] && !(c->flags & TG_F_SIP_CLOSE);
    v->sip_wait_prov =
        sc != NULL && sc->blocked[TG_SIP_SIDE_PROVIDER] && !(c->flags & TG_F_SIP_CLOSE);
}

// resume lets each side go on where backpressure held it back. Returns 0 when the connection
// went away.
static int resume(struct tg_conns *cs, struct tg_conn *c) {
    const uint32_t cap = cs->cfg->buffer_size;
    struct tg_sipconn *sc = tg_conn_sip(cs, c);
    tg_sipglue_drop_pending(cs, c);
    if (sc != NULL && !tg_sipglue_resume(cs, c, sc))
        return 0;
    if (tg_bufq_len(&c->to_plain) < cap)
        tls_resume(cs, c);
    if (c->state == TG_CS_CLOSING)
        return 0;
    if (tg_bufq_len(&c->tio.out) < cap && !(c->flags & TG_F_TLS_SHUT_SENT))
        plain_resume(cs, c);
    if (c->state == TG_CS_CLOSING)
        return 0;
    tg_sipglue_drop_pending(cs, c);
    return 1;
}

void tg_conn_step(struct tg_conns *cs, struct tg_conn *c) {
    if (c->state == TG_CS_CLOSING || c->state == TG_CS_FREE || (c->flags & TG_F_RETRY))
        return;
again:
    if (c->state == TG_CS_OPEN && !resume(cs, c))
        return;
    for (;;) {
        struct tg_conn_view v;
        view_of(cs, c, &v);
        enum tg_conn_action a = tg_conn_decide(&v);
        switch (a) {
        case TG_ACT_NONE:
            return;
        case TG_ACT_TLS_SHUTDOWN:
            SSL_shutdown(c->tio.ssl);
            c->flags |= TG_F_TLS_SHUT_SENT;
            break;
        // A queue emptied at once has room again: what backpressure held back goes on, as
        // after a send completion (on_send).
        case TG_ACT_SEND_TLS:
            if (send_now(cs, c, 1))
                goto again;
            break;
        case TG_ACT_SEND_PLAIN:
            if (send_now(cs, c, 0))
                goto again;
            break;
        case TG_ACT_CLOSE_FLUSHED:
            tg_conn_close(cs, c, "fatal_flushed");
            return;
        case TG_ACT_TLS_WR_SHUT:
            shutdown(c->tio.fd, SHUT_WR);
            c->flags |= TG_F_TLS_WR_DONE;
            break;
        case TG_ACT_PLAIN_WR_SHUT:
            shutdown(c->plain_fd, SHUT_WR);
            c->flags |= TG_F_PLAIN_WR_DONE;
            break;
        case TG_ACT_CLOSE_FINISHED:
            tg_conn_close(cs, c, "finished");
            return;
        case TG_ACT_ARM_TLS_RECV:
            submit_recv(cs, c, 1);
            break;
        case TG_ACT_CANCEL_TLS_RECV:
            cancel_recv(cs, c, 1);
            break;
        case TG_ACT_ARM_PLAIN_RECV:
            submit_recv(cs, c, 0);
            break;
        case TG_ACT_CANCEL_PLAIN_RECV:
            cancel_recv(cs, c, 0);
            break;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Completions.

void tg_conn_touch(struct tg_conns *cs, struct tg_conn *c) {
    if (c->timer.lane == &cs->idle_lane)
        tg_timer_touch(&c->timer, cs->loop->now);
}

// conn_touch notes socket activity. A SIP connection's idle time counts messages relayed
// between the peers (sipglue.c), not bytes: keepalive pings, ours or theirs, keep no silent
// peer alive.
static void conn_touch(struct tg_conns *cs, struct tg_conn *c) {
    if (tg_conn_sip(cs, c) == NULL)
        tg_conn_touch(cs, c);
}

void tg_conns_rearm_nobufs(struct tg_conns *cs) {
    for (uint32_t i = 0; cs->num_nobufs > 0 && i < cs->slab.cap; i++) {
        if (!tg_slab_live(&cs->slab, i))
            continue;
        struct tg_conn *c = tg_slab_at(&cs->slab, i);
        if (!(c->flags & TG_F_NOBUFS))
            continue;
        c->flags &= ~TG_F_NOBUFS;
        cs->num_nobufs--;
        tg_conn_step(cs, c);
        tg_conn_reap(cs, c);
    }
}

static void on_recv(struct tg_conns *cs, struct tg_conn *c, int tls,
                    const struct io_uring_cqe *cqe) {
    int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
    if (!more)
        c->flags &= tls ? ~(TG_F_TLS_RECV | TG_F_TLS_RECV_CANCEL)
                        : ~(TG_F_PLAIN_RECV | TG_F_PLAIN_RECV_CANCEL);
    if (cqe->flags & IORING_CQE_F_BUFFER) {
        unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
        if (cqe->res > 0 && c->state != TG_CS_CLOSING &&
            !(c->flags & (TG_F_RETRY | TG_F_FATAL_FLUSH))) {
            const uint8_t *data = tg_loop_buf(cs->loop, TG_BUF_GROUP, bid);
            conn_touch(cs, c);
            if (tls) {
                tg_sipglue_provider_seen(cs, c);
                tls_input(cs, c, data, (uint32_t)cqe->res);
            } else {
                plain_input(cs, c, data, (uint32_t)cqe->res);
            }
        }
        tg_loop_buf_return(cs->loop, TG_BUF_GROUP, bid); // at once: a slow peer never holds it
    }
    if (c->state == TG_CS_CLOSING || (c->flags & TG_F_RETRY))
        return;
    if (cqe->res == 0) {
        if (tls) {
            c->tio.eof = 1;
            if (c->state == TG_CS_HANDSHAKE) {
                c->tio.in = NULL;
                c->tio.in_len = 0;
                tls_pump(cs, c); // lets BoringSSL see the EOF and classify it
            }
        } else {
            c->flags |= TG_F_PLAIN_RD_EOF;
        }
    } else if (cqe->res == -ENOBUFS) {
        // Every provided buffer is in use: re-armed at the next tick, not at once (that would
        // spin until some come back).
        tg_counter_add(&cs->ctr[c->tio.listener].recv_nobufs, 1);
        if (!(c->flags & TG_F_NOBUFS)) {
            c->flags |= TG_F_NOBUFS;
            cs->num_nobufs++;
        }
        TG_INFO("recv_nobufs", "conn=w%u-%u", cs->worker_id, c->tio.seq);
    } else if (cqe->res < 0 && cqe->res != -ECANCELED) {
        TG_DEBUG("recv_error", "conn=w%u-%u side=%s error=\"%s\"", cs->worker_id, c->tio.seq,
                 tls ? "tls" : "plain", strerror(-cqe->res));
        if (tls && c->state == TG_CS_HANDSHAKE) {
            // A reset mid-handshake is a failed handshake: counted, and for outbound the next
            // target is tried.
            c->tio.eof = 1;
            tg_conn_handshake_failed(cs, c, TG_VERDICT_PEER_CLOSED, strerror(-cqe->res));
            return;
        }
        if (tls || c->state != TG_CS_OPEN)
            tg_conn_close(cs, c, "recv_error");
        else
            tg_conn_fatal(cs, c, "plain_recv_error");
        return;
    }
    if (c->state != TG_CS_CLOSING && !(c->flags & TG_F_RETRY))
        tg_conn_step(cs, c);
}

static void on_send(struct tg_conns *cs, struct tg_conn *c, int tls, int res) {
    if (tls)
        c->tio.out_busy = 0;
    else
        c->flags &= ~TG_F_PLAIN_SENDING;
    if (c->state == TG_CS_CLOSING || (c->flags & TG_F_RETRY))
        return;
    if (res < 0) {
        TG_DEBUG("send_error", "conn=w%u-%u side=%s error=\"%s\"", cs->worker_id, c->tio.seq,
                 tls ? "tls" : "plain", strerror(-res));
        if (tls && c->state == TG_CS_HANDSHAKE) {
            // Reset before our flight got out: a failed handshake (outbound: next target).
            c->tio.eof = 1;
            tg_conn_handshake_failed(cs, c, TG_VERDICT_PEER_CLOSED, strerror(-res));
            return;
        }
        if (tls)
            tg_conn_close(cs, c, "send_error");
        else
            tg_conn_fatal(cs, c, "plain_send_error");
        return;
    }
    tg_bufq_consume(tls ? &c->tio.out : &c->to_plain, &cs->bc, (uint32_t)res);
    conn_touch(cs, c);
    tg_conn_step(cs, c);
}

// on_signed resumes a handshake that waited for our key's signature, with the ciphertext that
// arrived meanwhile (kept in pend_tls).
static void on_signed(struct tg_conns *cs, struct tg_conn *c) {
    if (c->state != TG_CS_HANDSHAKE || (c->flags & (TG_F_RETRY | TG_F_FATAL_FLUSH)))
        return;
    pump_pending(cs, c);
    if (c->state != TG_CS_CLOSING && !(c->flags & TG_F_RETRY))
        tg_conn_step(cs, c);
}

static void conn_on_cqe(void *arg, void *obj, uint32_t slot, unsigned op,
                        const struct io_uring_cqe *cqe) {
    (void)slot;
    struct tg_conns *cs = arg;
    struct tg_conn *c = obj;
    if (op == TG_CONN_OP_CONNECT || !(cqe->flags & IORING_CQE_F_MORE))
        c->inflight--;
    switch (op) {
    case TG_CONN_OP_RECV_TLS:
        on_recv(cs, c, 1, cqe);
        break;
    case TG_CONN_OP_RECV_PLAIN:
        on_recv(cs, c, 0, cqe);
        break;
    case TG_CONN_OP_SEND_TLS:
        on_send(cs, c, 1, cqe->res);
        break;
    case TG_CONN_OP_SEND_PLAIN:
        on_send(cs, c, 0, cqe->res);
        break;
    case TG_CONN_OP_CONNECT:
        tg_upstream_on_connect(cs, c, cqe->res);
        break;
    case TG_CONN_OP_SIGNED:
        on_signed(cs, c);
        break;
    default:
        break;
    }
    tg_conn_reap(cs, c);
}

void tg_conns_kind(struct tg_conns *cs, struct tg_kind_ops *out) {
    *out = (struct tg_kind_ops){
        .name = "conn", .on_cqe = conn_on_cqe, .arg = cs, .slab = &cs->slab, .bgid = TG_BUF_GROUP};
}

// ---------------------------------------------------------------------------------------------
// Accepting, deadlines, draining.

void tg_conn_sockopts(const struct tg_conns *cs, int fd) {
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    int size = (int)cs->cfg->socket_buffer;
    if (size > 0) {
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
    }
}

// refuse turns an accepted socket away before any cryptography: counted, logged (the log is
// rate-limited per event kind), and reset rather than closed gracefully, so that a flood
// leaves no TIME_WAIT behind on our side.
static void refuse(struct tg_conns *cs, uint32_t listener, int fd, enum tg_reject_reason r,
                   const char *reason) {
    tg_counter_add(&cs->ctr[listener].rejected[r], 1);
    char peer[64];
    tg_peer_str(fd, peer, sizeof(peer));
    TG_WARN("connection_rejected", "worker=%u listener=%s peer=%s reason=%s", cs->worker_id,
            cs->cfg->listeners[listener].name, peer, reason);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

// conn_evict frees the slot of a handshake in progress at once, so the newcomer that evicted
// it finds both a budget share and a slot. Its only operation in flight is a receive (a victim
// has no send in flight): cancelled by user_data, its late completion carries the old
// generation and the loop drops it (returning the buffer). The peer gets a reset.
static void conn_evict(struct tg_conns *cs, struct tg_conn *c) {
    if (c->flags & TG_F_TLS_RECV)
        tg_loop_cancel_ud(cs->loop, tg_conn_ud(cs, c, TG_CONN_OP_RECV_TLS), 0);
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    setsockopt(c->tio.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    c->state = TG_CS_CLOSING;
    c->inflight = 0;
    conn_free(cs, c);
}

// evict_oldest closes this worker's oldest inbound handshake in progress when it has been
// waiting long enough that a real peer would have finished (min(1 s, handshake_timeout / 4)):
// under a flood of silent connections the newest comer gets the slot, and the provider's
// handshakes, which take milliseconds, get through. Returns 1 when it freed a slot.
static int evict_oldest(struct tg_conns *cs) {
    uint32_t hs = cs->cfg->handshake_timeout_ms;
    uint32_t min_age = hs / 4 < 1000 ? hs / 4 : 1000;
    unsigned looked = 0;
    for (struct tg_timer *t = cs->hs_lane.head; t != NULL && looked < 16; t = t->next, looked++) {
        struct tg_conn *c = tg_timer_owner(t, struct tg_conn, timer);
        if (!(c->flags & TG_F_GUARDED) || c->state != TG_CS_HANDSHAKE || c->tio.out_busy)
            continue;
        uint32_t started = t->deadline - hs;
        if (!tg_time_reached(cs->loop->now, started + min_age))
            return 0; // the lane is in age order: no older candidate follows
        tg_counter_add(&cs->ctr[c->tio.listener].hs_evicted, 1);
        TG_INFO("handshake_evicted", "conn=w%u-%u listener=%s age_ms=%u", cs->worker_id, c->tio.seq,
                tg_conn_lconf(cs, c)->name, cs->loop->now - started);
        conn_evict(cs, c);
        return 1;
    }
    return 0;
}

// admit decides whether the socket accepted on |listener| may start; returns 1 with the
// guard's counts taken (|*out_bucket| set for an inbound one), else refuses it.
static int admit(struct tg_conns *cs, uint32_t listener, int fd, uint16_t *out_bucket) {
    static const struct {
        enum tg_reject_reason r;
        const char *name;
    } k_why[] = {
        [TG_ADMIT_FD_LIMIT] = {TG_REJECT_FD_LIMIT, "fd_limit"},
        [TG_ADMIT_LISTENER_MAX] = {TG_REJECT_LISTENER_MAX, "listener_max_connections"},
        [TG_ADMIT_HANDSHAKES] = {TG_REJECT_HANDSHAKES, "handshakes_in_progress"},
        [TG_ADMIT_SOURCE_HANDSHAKES] = {TG_REJECT_SOURCE_HANDSHAKES, "source_handshakes"},
        [TG_ADMIT_SOURCE_RATE] = {TG_REJECT_SOURCE_RATE, "source_rate"},
    };
    if (cs->guard == NULL)
        return 1;
    enum tg_admit a = tg_guard_admit_conn(cs->guard, listener);
    if (a != TG_ADMIT_OK) {
        refuse(cs, listener, fd, k_why[a].r, k_why[a].name);
        return 0;
    }
    if (cs->cfg->listeners[listener].direction != TG_INBOUND)
        return 1;
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    int known = getpeername(fd, (struct sockaddr *)&ss, &sl) == 0;
    *out_bucket = tg_guard_bucket(cs->guard, known ? (const struct sockaddr *)&ss : NULL);
    uint32_t now_s = cs->loop->now / 1000;
    a = tg_guard_admit_handshake(cs->guard, *out_bucket, now_s);
    // This worker's share of the unauthenticated budget: when it is full, the worker's own
    // oldest stale handshake makes room (every worker can, whatever the others hold).
    if (a == TG_ADMIT_OK && cs->hs_inflight >= cs->hs_budget && !evict_oldest(cs)) {
        tg_guard_release_handshake(cs->guard, *out_bucket);
        a = TG_ADMIT_HANDSHAKES;
    }
    if (a == TG_ADMIT_OK) {
        cs->hs_inflight++;
        return 1;
    }
    tg_guard_release_conn(cs->guard, listener);
    refuse(cs, listener, fd, k_why[a].r, k_why[a].name);
    return 0;
}

void tg_conn_accepted(struct tg_conns *cs, uint32_t listener, int fd) {
    struct tg_listener_counters *ctr = &cs->ctr[listener];
    const struct tg_listener_conf *lc = &cs->cfg->listeners[listener];
    uint16_t bucket = 0;
    if (!admit(cs, listener, fd, &bucket))
        return;
    struct tg_conn *c = tg_conn_alloc(cs);
    if (c == NULL) {
        if (cs->guard != NULL) {
            tg_guard_release_conn(cs->guard, listener);
            if (lc->direction == TG_INBOUND) {
                tg_guard_release_handshake(cs->guard, bucket);
                cs->hs_inflight--;
            }
        }
        refuse(cs, listener, fd, TG_REJECT_MAX_CONNECTIONS, "max_connections");
        return;
    }
    tg_counter_add(&ctr->conns_opened, 1);
    c->tio.listener = (uint16_t)listener;
    if (cs->guard != NULL) {
        c->flags |= TG_F_COUNTED;
        if (lc->direction == TG_INBOUND) {
            c->flags |= TG_F_GUARDED;
            c->guard_bucket = bucket;
        }
    }
    if (lc->mode == TG_MODE_SIP && !tg_sipglue_attach(cs, c, fd)) {
        close(fd);
        tg_conn_close(cs, c, "out_of_memory");
        tg_conn_reap(cs, c);
        return;
    }
    tg_conn_sockopts(cs, fd);
    if (tg_log_enabled(TG_LOG_DEBUG)) {
        char peer[64];
        tg_peer_str(fd, peer, sizeof(peer));
        TG_DEBUG("accept", "conn=w%u-%u listener=%s peer=%s", cs->worker_id, c->tio.seq, lc->name,
                 peer);
    }
    if (lc->direction == TG_INBOUND) {
        c->tio.fd = fd;
        c->flags |= TG_F_TLS_UP;
        if (!tg_conn_start_tls(cs, c, 1)) {
            tg_conn_close(cs, c, "ssl_new_failed");
            tg_conn_reap(cs, c);
            return;
        }
        tg_conn_step(cs, c);
    } else {
        c->plain_fd = fd;
        c->flags |= TG_F_PLAIN_UP;
        if (!tg_upstream_first(cs, c)) {
            tg_conn_close(cs, c, "no_target_address");
            tg_conn_reap(cs, c);
            return;
        }
        c->state = TG_CS_CONNECTING;
        c->chain_start = cs->loop->now;
        tg_upstream_arm_attempt(cs, c, lc->connect_timeout_ms);
        tg_upstream_connect(cs, c);
    }
    tg_conn_reap(cs, c);
}

void tg_conns_expire(struct tg_conns *cs) {
    struct tg_timer *t;
    while ((t = tg_tlane_pop_expired(&cs->attempt_lane, cs->loop->now)) != NULL) {
        struct tg_conn *c = tg_timer_owner(t, struct tg_conn, timer);
        tg_upstream_attempt_expired(cs, c);
        tg_conn_reap(cs, c);
    }
    while ((t = tg_tlane_pop_expired(&cs->hs_lane, cs->loop->now)) != NULL) {
        struct tg_conn *c = tg_timer_owner(t, struct tg_conn, timer);
        if (c->state == TG_CS_OPEN && !(c->flags & (TG_F_PLAIN_UP | TG_F_FATAL_FLUSH)) &&
            tg_conn_inbound(cs, c)) {
            // An authenticated peer whose backend has not answered the connect in time.
            tg_counter_add(&cs->ctr[c->tio.listener].upstream_connect_errors, 1);
            TG_WARN("connect_failed",
                    "conn=w%u-%u listener=%s error=\"backend connect timed out "
                    "after handshake_timeout_ms\"",
                    cs->worker_id, c->tio.seq, tg_conn_lconf(cs, c)->name);
            tg_timer_arm(&cs->hs_lane, &c->timer, cs->loop->now); // bounds the close_notify
            tg_conn_fatal(cs, c, "backend_connect_timeout");
            tg_conn_reap(cs, c);
            continue;
        }
        if (!(c->flags & TG_F_FATAL_FLUSH)) // a refused peer that does not read its alert
            record_handshake(cs, c, TG_VERDICT_TIMEOUT, "handshake_timeout_ms elapsed");
        tg_conn_close(cs, c, "handshake_timeout");
        tg_conn_reap(cs, c);
    }
    while (cs->cfg->idle_timeout_ms > 0 &&
           (t = tg_tlane_pop_expired(&cs->idle_lane, cs->loop->now)) != NULL) {
        struct tg_conn *c = tg_timer_owner(t, struct tg_conn, timer);
        TG_INFO("idle_timeout", "conn=w%u-%u listener=%s", cs->worker_id, c->tio.seq,
                tg_conn_lconf(cs, c)->name);
        tg_conn_close(cs, c, "idle_timeout");
        tg_conn_reap(cs, c);
    }
}

void tg_conns_close_all(struct tg_conns *cs) {
    for (uint32_t i = 0; i < cs->slab.cap; i++) {
        if (!tg_slab_live(&cs->slab, i))
            continue;
        struct tg_conn *c = tg_slab_at(&cs->slab, i);
        if (c->state != TG_CS_CLOSING) {
            tg_conn_close(cs, c, "drain_timeout");
            tg_conn_reap(cs, c);
        }
    }
}
