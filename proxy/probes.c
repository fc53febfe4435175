// The OPTIONS probe connections of worker 0 (see include/tlsgate/probes.h).
#include "tlsgate/probes.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "tlsgate/log.h"
#include "tlsgate/sipglue.h"
#include "tlsgate/upstream.h"

_Static_assert(TG_MAX_TARGETS == TG_METRICS_MAX_TARGETS, "one target table size");

// probe is one connect target's prober and the connection it uses (a slot flagged TG_F_PROBE).
struct probe {
    struct tg_probe_state st;
    uint32_t conn, gen; // the probe connection (TG_NIL when none)
};

struct tg_probes {
    size_t num_listeners;
    struct probe p[]; // [listener * TG_MAX_TARGETS + target]
};

static inline struct probe *probe_at(struct tg_conns *cs, size_t listener, size_t target) {
    return &cs->probes->p[listener * TG_MAX_TARGETS + target];
}

static inline struct tg_target_health *target_health(const struct tg_metrics *m, size_t listener,
                                                     size_t target) {
    return &m->targets[listener * TG_METRICS_MAX_TARGETS + target];
}

int tg_probes_listener_probed(const struct tg_listener_conf *lc) {
    return lc->direction == TG_OUTBOUND && lc->mode == TG_MODE_SIP && lc->options_interval_s > 0;
}

int tg_probes_target_down(const struct tg_metrics *m, size_t listener, size_t t) {
    return atomic_load_explicit(&target_health(m, listener, t)->state, memory_order_relaxed) ==
           TG_TARGET_DOWN;
}

int tg_probes_init(struct tg_conns *cs) {
    const struct tg_config *cfg = cs->cfg;
    int any = 0;
    for (size_t l = 0; l < cfg->num_listeners; l++)
        any |= tg_probes_listener_probed(&cfg->listeners[l]);
    if (!any || cs->sip == NULL)
        return 1;
    cs->probes =
        calloc(1, sizeof(*cs->probes) + cfg->num_listeners * TG_MAX_TARGETS * sizeof(struct probe));
    if (cs->probes == NULL)
        return 0;
    cs->probes->num_listeners = cfg->num_listeners;
    for (size_t l = 0; l < cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        for (size_t t = 0; t < TG_MAX_TARGETS; t++) {
            probe_at(cs, l, t)->conn = TG_NIL;
            tg_probe_start(&probe_at(cs, l, t)->st, cs->loop->now);
        }
        if (!tg_probes_listener_probed(lc))
            continue;
        for (size_t t = 0; t < lc->num_targets; t++) {
            struct tg_target_health *h = target_health(cs->metrics, l, t);
            const struct tg_target *tt = &lc->targets[t];
            snprintf(h->name, sizeof(h->name), strchr(tt->host, ':') ? "[%s]:%u" : "%s:%u",
                     tt->host, tt->port);
            atomic_store_explicit(&h->state, TG_TARGET_UP, memory_order_release);
        }
    }
    return 1;
}

void tg_probes_cleanup(struct tg_conns *cs) {
    free(cs->probes);
    cs->probes = NULL;
}

// record records the outcome of one OPTIONS transaction, logging a change of state.
static void record(struct tg_conns *cs, size_t l, size_t t, int ok, const char *why) {
    struct probe *p = probe_at(cs, l, t);
    const struct tg_listener_conf *lc = &cs->cfg->listeners[l];
    struct tg_target_health *h = target_health(cs->metrics, l, t);
    enum tg_probe_change ch = tg_probe_result(&p->st, ok, lc->options_failures);
    if (!ok)
        TG_DEBUG("sip_options_failed", "listener=%s target=%s failures=%u why=%s", lc->name,
                 h->name, p->st.failures, why);
    if (ch == TG_PROBE_WENT_UP) {
        atomic_store_explicit(&h->state, TG_TARGET_UP, memory_order_release);
        TG_INFO("sip_target_up", "listener=%s target=%s", lc->name, h->name);
    } else if (ch == TG_PROBE_WENT_DOWN) {
        atomic_store_explicit(&h->state, TG_TARGET_DOWN, memory_order_release);
        TG_WARN("sip_target_down", "listener=%s target=%s failures=%u why=%s", lc->name, h->name,
                p->st.failures, why);
    }
}

void tg_probes_conn_gone(struct tg_conns *cs, struct tg_conn *c) {
    if (cs->probes == NULL)
        return;
    struct probe *p = probe_at(cs, c->tio.listener, c->target);
    if (p->conn != tg_conn_slot(cs, c) || p->gen != tg_conn_gen(cs, c))
        return;
    p->conn = TG_NIL;
    if (p->st.awaiting && !cs->draining)
        record(cs, c->tio.listener, c->target, 0, "connection_lost");
}

void tg_probes_send(struct tg_conns *cs, struct tg_conn *c) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    const struct tg_target *t = &lc->targets[c->target];
    struct probe *p = probe_at(cs, c->tio.listener, c->target);
    p->st.cseq++;
    char msg[2048];
    size_t n = tg_probe_format_options(msg, sizeof(msg), t->host, t->port, cs->cfg->fqdn,
                                       tg_sipglue_fqdn_port(cs->cfg, lc), c->tio.listener,
                                       c->target, p->st.cseq, c->tio.seq);
    if (n == 0 || !tg_tls_write_all(&c->tio, (const uint8_t *)msg, (uint32_t)n)) {
        ERR_clear_error();
        tg_conn_close(cs, c, "options_write_failed");
        return;
    }
    tg_conn_step(cs, c);
}

void tg_probes_read(struct tg_conns *cs, struct tg_conn *c) {
    struct probe *p = probe_at(cs, c->tio.listener, c->target);
    // What the target sends collects in |to_plain| (unused otherwise: there is no plain side).
    for (;;) {
        uint8_t buf[4096];
        uint32_t n;
        enum tg_tls_status s = tg_tls_read(&c->tio, buf, sizeof(buf), &n);
        if (s == TG_TLS_OK) {
            if (tg_bufq_len(&c->to_plain) + n > TG_SIPCONN_MAX_MESSAGE ||
                !tg_bufq_append(&c->to_plain, &cs->bc, buf, n, TG_BUF_SIZE, 0)) {
                tg_conn_close(cs, c, "options_input_overflow");
                return;
            }
            continue;
        }
        if (s == TG_TLS_WANT)
            break;
        ERR_clear_error();
        c->flags |= TG_F_TLS_RD_EOF;
        tg_conn_close(cs, c, "options_peer_closed");
        return;
    }
    while (tg_bufq_len(&c->to_plain) > 0) {
        uint32_t len;
        enum tg_probe_scan_result r =
            tg_probe_scan(tg_bufq_peek(&c->to_plain), tg_bufq_len(&c->to_plain), &len);
        if (r == TG_PROBE_SCAN_MORE)
            return;
        if (r == TG_PROBE_SCAN_BROKEN) {
            tg_conn_close(cs, c, "options_unframed");
            return;
        }
        if (r == TG_PROBE_SCAN_ANSWER && p->st.awaiting)
            record(cs, c->tio.listener, c->target, 1, "answered");
        tg_bufq_consume(&c->to_plain, &cs->bc, len);
    }
}

// live_conn returns the probe's connection if it is open or opening.
static struct tg_conn *live_conn(struct tg_conns *cs, const struct probe *p) {
    if (p->conn == TG_NIL)
        return NULL;
    struct tg_conn *c = tg_slab_lookup(&cs->slab, p->conn, p->gen);
    return c != NULL && c->state != TG_CS_CLOSING ? c : NULL;
}

// open_conn starts a probe connection to target |t| of listener |l|.
static void open_conn(struct tg_conns *cs, size_t l, size_t t) {
    struct probe *p = probe_at(cs, l, t);
    struct tg_conn *c = tg_conn_alloc(cs);
    if (c == NULL) {
        record(cs, l, t, 0, "no_free_slot");
        return;
    }
    c->tio.listener = (uint16_t)l;
    c->target = (uint8_t)t;
    c->flags |= TG_F_PROBE;
    if (!tg_upstream_probe_target(cs, c, t)) { // a name with no address yet
        record(cs, l, t, 0, "unresolved");
        tg_conn_close(cs, c, "options_unresolved");
        tg_conn_reap(cs, c);
        return;
    }
    c->state = TG_CS_CONNECTING;
    p->conn = tg_conn_slot(cs, c);
    p->gen = tg_conn_gen(cs, c);
    c->chain_start = cs->loop->now;
    tg_upstream_arm_attempt(cs, c, tg_conn_lconf(cs, c)->connect_timeout_ms);
    tg_upstream_connect(cs, c);
    tg_conn_reap(cs, c);
}

void tg_probes_tick(struct tg_conns *cs) {
    const struct tg_config *cfg = cs->cfg;
    for (size_t l = 0; l < cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        if (!tg_probes_listener_probed(lc))
            continue;
        uint32_t interval = lc->options_interval_s * 1000u;
        for (size_t t = 0; t < lc->num_targets; t++) {
            struct probe *p = probe_at(cs, l, t);
            struct tg_conn *c = live_conn(cs, p);
            switch (tg_probe_tick(&p->st, cs->loop->now, interval)) {
            case TG_PROBE_IDLE:
                break;
            case TG_PROBE_TIMED_OUT:
                record(cs, l, t, 0, "timeout");
                if (c != NULL) {
                    tg_conn_close(cs, c, "options_timeout");
                    tg_conn_reap(cs, c);
                }
                break;
            case TG_PROBE_DUE:
                if (c != NULL) {
                    if (c->state == TG_CS_OPEN)
                        tg_probes_send(cs, c);
                    tg_conn_reap(cs, c);
                } else if (p->conn == TG_NIL) {
                    open_conn(cs, l, t);
                } // else the previous connection is still being torn down: fails on timeout
                break;
            }
        }
    }
}

void tg_probes_close_all(struct tg_conns *cs) {
    for (size_t i = 0; cs->probes != NULL && i < cs->probes->num_listeners * TG_MAX_TARGETS; i++) {
        struct probe *p = &cs->probes->p[i];
        p->st.awaiting = 0;
        if (p->conn == TG_NIL)
            continue;
        struct tg_conn *c = tg_slab_lookup(&cs->slab, p->conn, p->gen);
        if (c == NULL)
            continue;
        tg_conn_close(cs, c, "draining");
        tg_conn_reap(cs, c);
    }
}
