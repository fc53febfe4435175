// The SIP relay of mode = sip on a connection (see include/tlsgate/sipglue.h).
#include "tlsgate/sipglue.h"

#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/rand.h>

#include "tlsgate/log.h"
#include "tlsgate/mediasig.h"

int tg_sipglue_init(struct tg_conns *cs) {
    const struct tg_config *cfg = cs->cfg;
    int any = 0;
    for (size_t l = 0; l < cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        if (lc->mode != TG_MODE_SIP)
            continue;
        any = 1;
        uint32_t need = TG_SIPCONN_SCRATCH_FOR(lc->sip_max_message);
        if (need > cs->sip_scratch_len)
            cs->sip_scratch_len = need;
    }
    if (!any)
        return 1;
    cs->sip = calloc(cs->slab.cap > 0 ? cs->slab.cap : 1, sizeof(*cs->sip));
    cs->sip_scratch = malloc(cs->sip_scratch_len);
    if (cfg->media_enabled && (cs->sip_body = malloc(TG_SDP_MAX_BODY)) == NULL)
        return 0;
    return cs->sip != NULL && cs->sip_scratch != NULL;
}

void tg_sipglue_cleanup(struct tg_conns *cs) {
    free(cs->sip);
    free(cs->sip_scratch);
    free(cs->sip_body);
    cs->sip = NULL;
    cs->sip_scratch = NULL;
    cs->sip_body = NULL;
}

uint16_t tg_sipglue_fqdn_port(const struct tg_config *cfg, const struct tg_listener_conf *lc) {
    // An inbound listener's own port; for an outbound one, the first inbound SIP listener's
    // (5061 when there is none).
    if (lc->direction == TG_INBOUND)
        return lc->listen.port;
    for (size_t l = 0; l < cfg->num_listeners; l++)
        if (cfg->listeners[l].direction == TG_INBOUND && cfg->listeners[l].mode == TG_MODE_SIP)
            return cfg->listeners[l].listen.port;
    return 5061;
}

int tg_sipglue_attach(struct tg_conns *cs, struct tg_conn *c, int fd) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    struct tg_sipconn *sc =
        tg_sipconn_new(cs->cfg->fqdn, tg_sipglue_fqdn_port(cs->cfg, lc), cs->sip_key);
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
    cs->sip[tg_conn_slot(cs, c)] = sc;
    return 1;
}

void tg_sipglue_detach(struct tg_conns *cs, struct tg_conn *c) {
    if (cs->sip == NULL)
        return;
    uint32_t slot = tg_conn_slot(cs, c);
    if (cs->msig != NULL && cs->sip[slot] != NULL)
        tg_mediasig_conn_closed(cs->msig, slot, tg_conn_gen(cs, c)); // the calls it carried
    tg_sipconn_free(cs->sip[slot]);
    cs->sip[slot] = NULL;
}

void tg_sipglue_verified(struct tg_conns *cs, struct tg_conn *c) {
    struct tg_sipconn *sc = tg_conn_sip(cs, c);
    if (sc != NULL)
        sc->peer_name = c->tio.peer_name;
}

void tg_sipglue_backend_up(struct tg_conns *cs, struct tg_conn *c) {
    struct tg_sipconn *sc = tg_conn_sip(cs, c);
    if (sc == NULL)
        return;
    // Our address toward the PBX is the local end of this very connection.
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    if (getsockname(c->plain_fd, (struct sockaddr *)&ss, &sl) == 0)
        tg_sipconn_set_inside(sc, (const struct sockaddr *)&ss);
}

void tg_sipglue_provider_seen(struct tg_conns *cs, struct tg_conn *c) {
    struct tg_sipconn *sc = tg_conn_sip(cs, c);
    if (sc != NULL)
        sc->provider_seen = cs->loop->now;
}

struct sip_arg {
    struct tg_conns *cs;
    struct tg_conn *c;
    enum tg_sip_side from; // the side whose input is being processed
};

static int sip_can_send(void *arg, enum tg_sip_side side) {
    const struct sip_arg *a = arg;
    const struct tg_conn *c = a->c;
    const uint32_t cap = a->cs->cfg->buffer_size;
    if (c->state != TG_CS_OPEN || (c->flags & (TG_F_FATAL_FLUSH | TG_F_SIP_CLOSE)))
        return 0;
    // A side we have finished writing to never gets anything again: sip_send drops it.
    if (side == TG_SIP_SIDE_PROVIDER)
        return (c->flags & TG_F_TLS_SHUT_SENT) ||
               ((c->flags & TG_F_TLS_UP) && !c->tio.out_busy && tg_bufq_len(&c->tio.out) < cap);
    return (c->flags & TG_F_PLAIN_WR_DONE) ||
           ((c->flags & TG_F_PLAIN_UP) && !(c->flags & TG_F_PLAIN_SENDING) &&
            tg_bufq_len(&c->to_plain) < cap);
}

static int sip_send(void *arg, enum tg_sip_side side, const uint8_t *data, uint32_t len) {
    const struct sip_arg *a = arg;
    struct tg_conns *cs = a->cs;
    struct tg_conn *c = a->c;
    struct tg_listener_counters *ctr = &cs->ctr[c->tio.listener];
    // Bytes toward the far side of the listener count as up, as in tcp mode.
    int up = (side == TG_SIP_SIDE_PBX) == tg_conn_inbound(cs, c);
    if (c->flags & (side == TG_SIP_SIDE_PBX ? TG_F_PLAIN_WR_DONE : TG_F_TLS_SHUT_SENT))
        return 1;
    // A message relayed from one peer to the other is what keeps a SIP connection from being
    // idle; answers on the same side (keepalive pongs, local OPTIONS answers, errors) are not.
    if (side != a->from)
        tg_conn_touch(cs, c);
    if (side == TG_SIP_SIDE_PBX) {
        if (!tg_bufq_append(&c->to_plain, &cs->bc, data, len, cs->cfg->buffer_size, 0)) {
            tg_conn_close(cs, c, "out_of_memory");
            return 0;
        }
    } else {
        tg_sipglue_provider_seen(cs, c);
        if (!tg_tls_write_all(&c->tio, data, len)) {
            tg_conn_log_tls_error(cs, c);
            tg_conn_close(cs, c, "tls_write_error");
            return 0;
        }
    }
    tg_counter_add(up ? &ctr->bytes_up : &ctr->bytes_down, len);
    return 1;
}

// sip_run processes what |side| has buffered. Returns 0 when the connection is going away.
static int sip_run(struct tg_conns *cs, struct tg_conn *c, struct tg_sipconn *sc,
                   enum tg_sip_side side) {
    if (c->state != TG_CS_OPEN || (c->flags & (TG_F_FATAL_FLUSH | TG_F_SIP_CLOSE)))
        return 0;
    struct sip_arg arg = {.cs = cs, .c = c, .from = side};
    struct tg_mediasig_arg marg = {.ms = cs->msig,
                                   .conn_slot = tg_conn_slot(cs, c),
                                   .conn_gen = tg_conn_gen(cs, c),
                                   .rw = &sc->rw};
    struct tg_sipconn_io io = {
        .arg = &arg,
        .can_send = sip_can_send,
        .send = sip_send,
        .self = {.slot = tg_conn_slot(cs, c),
                 .gen = tg_conn_gen(cs, c),
                 .worker = (uint8_t)cs->worker_id},
        .scratch = cs->sip_scratch,
        .scratch_len = cs->sip_scratch_len,
        .ctr = &cs->ctr[c->tio.listener],
        .conn_seq = c->tio.seq,
        .body = cs->msig != NULL ? tg_mediasig_body : NULL,
        .body_arg = &marg,
        .body_buf = cs->sip_body,
        .body_cap = TG_SDP_MAX_BODY,
    };
    enum tg_sipconn_result r = tg_sipconn_process(sc, side, &io);
    if (r == TG_SIPCONN_CLOSE) {
        // Answered if it could be; the step closes the pair (close_notify after the answer).
        TG_INFO("sip_unframed", "conn=w%u-%u listener=%s side=%s", cs->worker_id, c->tio.seq,
                tg_conn_lconf(cs, c)->name, side == TG_SIP_SIDE_PROVIDER ? "provider" : "pbx");
        // Both directions end as after a half-close from each side: what is already queued (the
        // answer included) is flushed, then close_notify and FIN, then the slot is freed.
        c->flags |= TG_F_SIP_CLOSE | TG_F_TLS_RD_EOF | TG_F_PLAIN_RD_EOF;
        c->tio.in_len = 0; // the rest of this ciphertext is not wanted
        return 0;
    }
    return r != TG_SIPCONN_FAILED && c->state == TG_CS_OPEN;
}

int tg_sipglue_resume(struct tg_conns *cs, struct tg_conn *c, struct tg_sipconn *sc) {
    if (c->flags & (TG_F_FATAL_FLUSH | TG_F_SIP_CLOSE))
        return c->state != TG_CS_CLOSING;
    if (sc->in_len[TG_SIP_SIDE_PROVIDER] > 0)
        sip_run(cs, c, sc, TG_SIP_SIDE_PROVIDER);
    if (c->state == TG_CS_OPEN && sc->in_len[TG_SIP_SIDE_PBX] > 0)
        sip_run(cs, c, sc, TG_SIP_SIDE_PBX);
    return c->state != TG_CS_CLOSING;
}

void tg_sipglue_drop_pending(struct tg_conns *cs, struct tg_conn *c) {
    // Not while the input is being read (|tio.in|).
    if (!(c->flags & TG_F_SIP_CLOSE) || c->tio.in != NULL)
        return;
    tg_bufq_reset(&c->pend_tls, &cs->bc);
    tg_bufq_reset(&c->pend_plain, &cs->bc);
}

void tg_sipglue_tls_read(struct tg_conns *cs, struct tg_conn *c, struct tg_sipconn *sc) {
    for (;;) {
        if (!sip_run(cs, c, sc, TG_SIP_SIDE_PROVIDER))
            return;
        uint32_t room, n;
        uint8_t *dst = tg_sipconn_reserve(sc, TG_SIP_SIDE_PROVIDER, &room);
        if (dst == NULL) {
            tg_conn_close(cs, c, "out_of_memory");
            return;
        }
        if (room == 0)
            return;
        enum tg_tls_status s = tg_tls_read(&c->tio, dst, room, &n);
        tg_sipconn_commit(sc, TG_SIP_SIDE_PROVIDER, n); // n == 0 gives an empty buffer back
        if (s == TG_TLS_OK)
            continue;
        if (s == TG_TLS_WANT)
            return;
        if (s == TG_TLS_EOF) {
            c->flags |= TG_F_TLS_RD_EOF;
            return;
        }
        tg_conn_log_tls_error(cs, c);
        tg_conn_tls_failed(cs, c, "tls_error");
        return;
    }
}

uint32_t tg_sipglue_plain_feed(struct tg_conns *cs, struct tg_conn *c, struct tg_sipconn *sc,
                               const uint8_t *data, uint32_t len) {
    uint32_t done = 0;
    for (;;) {
        if (!sip_run(cs, c, sc, TG_SIP_SIDE_PBX))
            return len;
        if (done == len)
            return done;
        long n = tg_sipconn_feed(sc, TG_SIP_SIDE_PBX, data + done, len - done);
        if (n < 0) {
            tg_conn_close(cs, c, "out_of_memory");
            return len;
        }
        if (n == 0)
            return done; // the buffer is full of messages waiting for a queue
        done += (uint32_t)n;
    }
}

int tg_sipglue_send_own(void *arg, uint32_t slot, uint32_t gen, enum tg_sip_side toward,
                        const struct tg_sip_own_req *r) {
    struct tg_conns *cs = arg;
    if (slot >= cs->slab.cap || !tg_slab_live(&cs->slab, slot) ||
        tg_slab_gen(&cs->slab, slot) != gen)
        return -1;
    struct tg_conn *c = tg_slab_at(&cs->slab, slot);
    struct tg_sipconn *sc = tg_conn_sip(cs, c);
    uint32_t done = toward == TG_SIP_SIDE_PBX ? TG_F_PLAIN_WR_DONE : TG_F_TLS_SHUT_SENT;
    if (sc == NULL || c->state != TG_CS_OPEN || (c->flags & (TG_F_FATAL_FLUSH | TG_F_SIP_CLOSE)) ||
        (c->flags & done))
        return -1;
    struct sip_arg sa = {.cs = cs, .c = c, .from = toward}; // an answer of ours: not activity
    if (!sip_can_send(&sa, toward))
        return 0;
    uint8_t msg[4096];
    size_t n;
    uint32_t txh;
    RAND_bytes((uint8_t *)&txh, sizeof(txh)); // a fresh branch per request
    const struct tg_sip_flow self = {.slot = slot, .gen = gen, .worker = (uint8_t)cs->worker_id};
    if (!tg_sipconn_build_request(sc, toward, &self, txh, r, msg, sizeof(msg), &n))
        return -1;
    if (!sip_send(&sa, toward, msg, (uint32_t)n)) {
        tg_conn_reap(cs, c);
        return -1;
    }
    tg_conn_step(cs, c);
    tg_conn_reap(cs, c);
    return 1;
}

void tg_sipglue_keepalive_tick(struct tg_conns *cs) {
    const uint32_t now = cs->loop->now;
    cs->next_keepalive = now + 250;
    for (uint32_t i = 0; i < cs->slab.cap; i++) {
        struct tg_sipconn *sc = cs->sip[i];
        if (sc == NULL || !tg_slab_live(&cs->slab, i))
            continue;
        struct tg_conn *c = tg_slab_at(&cs->slab, i);
        if (c->state != TG_CS_OPEN || (c->flags & (TG_F_PROBE | TG_F_TLS_SHUT_SENT)))
            continue;
        uint32_t interval = tg_conn_lconf(cs, c)->keepalive_interval_ms;
        if (interval == 0 || !(c->flags & TG_F_TLS_UP))
            continue;
        if (sc->provider_seen == 0) {
            sc->provider_seen = now;
            continue;
        }
        if (!tg_time_reached(now, sc->provider_seen + interval))
            continue;
        struct sip_arg arg = {.cs = cs, .c = c, .from = TG_SIP_SIDE_PROVIDER};
        if (!sip_can_send(&arg, TG_SIP_SIDE_PROVIDER)) {
            sc->provider_seen = now;
            continue;
        }
        if (sc->pong_wait)
            TG_DEBUG("sip_no_pong", "conn=w%u-%u listener=%s", cs->worker_id, c->tio.seq,
                     tg_conn_lconf(cs, c)->name);
        if (!sip_send(&arg, TG_SIP_SIDE_PROVIDER, (const uint8_t *)"\r\n\r\n", 4)) {
            tg_conn_reap(cs, c);
            continue;
        }
        sc->pong_wait = 1;
        tg_conn_step(cs, c);
        tg_conn_reap(cs, c);
    }
}
