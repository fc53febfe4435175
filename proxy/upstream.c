// Upstream connect and failover (see include/tlsgate/upstream.h).
#include "tlsgate/upstream.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tlsgate/log.h"
#include "tlsgate/probes.h"
#include "tlsgate/sipglue.h"

static struct tg_target_health *health(const struct tg_metrics *m, size_t listener, size_t t) {
    return &m->targets[listener * TG_METRICS_MAX_TARGETS + t];
}

void tg_upstream_init_health(struct tg_metrics *m, const struct tg_config *cfg) {
    for (size_t l = 0; l < cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        if (lc->direction != TG_OUTBOUND)
            continue;
        for (size_t t = 0; t < lc->num_targets && t < TG_METRICS_MAX_TARGETS; t++) {
            struct tg_target_health *h = health(m, l, t);
            const struct tg_target *tt = &lc->targets[t];
            snprintf(h->name, sizeof(h->name), strchr(tt->host, ':') ? "[%s]:%u" : "%s:%u",
                     tt->host, tt->port);
            h->named = 1;
        }
    }
}

// conn_list is the addresses of |c|'s listener in the snapshot |c| walks.
static const struct tg_dns_list *conn_list(const struct tg_conns *cs, const struct tg_conn *c) {
    (void)cs;
    return &c->dns->snap->lists[c->tio.listener];
}

static int entry_up(struct tg_dns_entry *e, uint32_t now) {
    uint32_t until = atomic_load_explicit(&e->down_until, memory_order_relaxed);
    return until == 0 || tg_time_reached(now, until);
}

// next_entry returns the address the next attempt of |c| goes to: the first one in order (the
// configured targets in order, within a target its addresses in DNS order) that this
// connection has not tried, that is not within a failure's back-off and whose target the
// OPTIONS prober has not marked down; else the first one not tried (an address in back-off is
// still better than giving up); -1 when every address was tried.
static int next_entry(const struct tg_conns *cs, const struct tg_conn *c) {
    const struct tg_dns_list *list = conn_list(cs, c);
    for (size_t i = 0; i < list->num_entries; i++) {
        struct tg_dns_entry *e = &list->entries[i];
        if (!(c->tried & (1u << i)) && entry_up(e, cs->loop->now) &&
            !tg_probes_target_down(cs->metrics, c->tio.listener, e->target))
            return (int)i;
    }
    for (size_t i = 0; i < list->num_entries; i++)
        if (!(c->tried & (1u << i)))
            return (int)i;
    return -1;
}

static void take_entry(const struct tg_conns *cs, struct tg_conn *c, int i) {
    c->entry = (uint8_t)i;
    c->target = conn_list(cs, c)->entries[i].target;
    c->tried |= 1u << i;
}

int tg_upstream_first(struct tg_conns *cs, struct tg_conn *c) {
    if (c->dns == NULL)
        c->dns = tg_dns_view_acquire(cs->dns);
    c->tried = 0;
    int i = next_entry(cs, c);
    if (i < 0)
        return 0;
    take_entry(cs, c, i);
    return 1;
}

int tg_upstream_probe_target(struct tg_conns *cs, struct tg_conn *c, size_t target) {
    if (c->dns == NULL)
        c->dns = tg_dns_view_acquire(cs->dns);
    const struct tg_dns_list *list = conn_list(cs, c);
    for (size_t i = 0; i < list->num_entries; i++) {
        if (list->entries[i].target == target) {
            take_entry(cs, c, (int)i);
            return 1;
        }
    }
    return 0;
}

// advance moves |c| to its next address; returns 0 when none is left.
static int advance(struct tg_conns *cs, struct tg_conn *c) {
    int i = next_entry(cs, c);
    if (i < 0)
        return 0;
    take_entry(cs, c, i);
    return 1;
}

// attempt_name writes where the current attempt of |c| goes: `ADDR:PORT`.
static void attempt_name(const struct tg_conns *cs, const struct tg_conn *c, char *out,
                         size_t out_len) {
    if (c->dns != NULL) {
        tg_dns_entry_format(&conn_list(cs, c)->entries[c->entry], out, out_len);
        return;
    }
    tg_target_format(&tg_conn_lconf(cs, c)->targets[c->target], out, out_len);
}

// target_failed marks the address |c| tried down for its listener's back-off: new connections
// skip it until then, trying its siblings first. Its target is down (tlsgate_target_up 0) once
// none of the target's addresses is up. The first worker to mark a change logs it.
static void target_failed(struct tg_conns *cs, struct tg_conn *c, const char *why) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    if (lc->direction != TG_OUTBOUND || lc->target_backoff_s == 0 || c->dns == NULL)
        return;
    const struct tg_dns_list *list = conn_list(cs, c);
    struct tg_dns_entry *e = &list->entries[c->entry];
    uint32_t now = cs->loop->now;
    uint32_t until = now + lc->target_backoff_s * 1000u;
    if (until == 0)
        until = 1;
    int was_up = entry_up(e, now);
    atomic_store_explicit(&e->down_until, until, memory_order_relaxed);
    struct tg_target_health *h = health(cs->metrics, c->tio.listener, c->target);
    uint32_t back = until; // when the first of the target's addresses is taken again
    for (size_t i = 0; i < list->num_entries; i++) {
        struct tg_dns_entry *s = &list->entries[i];
        if (s->target != c->target)
            continue;
        if (entry_up(s, now)) {
            if (was_up) {
                char addr[80];
                tg_dns_entry_format(e, addr, sizeof(addr));
                TG_WARN("target_address_down",
                        "listener=%s target=%s address=%s backoff_s=%u why=%s", lc->name, h->name,
                        addr, lc->target_backoff_s, why);
            }
            return;
        }
        uint32_t u = atomic_load_explicit(&s->down_until, memory_order_relaxed);
        if (!tg_time_reached(u, back))
            back = u;
    }
    atomic_store_explicit(&h->down_until, back, memory_order_relaxed);
    uint8_t was = 0;
    if (atomic_compare_exchange_strong_explicit(&h->passive_down, &was, 1, memory_order_relaxed,
                                                memory_order_relaxed))
        TG_WARN("target_down", "listener=%s target=%s backoff_s=%u why=%s", lc->name, h->name,
                lc->target_backoff_s, why);
}

// target_ok marks the address and target of |c| up again after a completed handshake.
static void target_ok(struct tg_conns *cs, struct tg_conn *c) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    if (c->dns != NULL)
        atomic_store_explicit(&conn_list(cs, c)->entries[c->entry].down_until, 0,
                              memory_order_relaxed);
    struct tg_target_health *h = health(cs->metrics, c->tio.listener, c->target);
    uint8_t was = 1;
    if (atomic_compare_exchange_strong_explicit(&h->passive_down, &was, 0, memory_order_relaxed,
                                                memory_order_relaxed))
        TG_INFO("target_up", "listener=%s target=%s", lc->name, h->name);
}

void tg_upstream_arm_attempt(struct tg_conns *cs, struct tg_conn *c, uint32_t phase_ms) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    uint32_t deadline = cs->loop->now + phase_ms;
    if (lc->failover_timeout_ms > 0 && !(c->flags & TG_F_PROBE)) {
        uint32_t end = c->chain_start + lc->failover_timeout_ms;
        if (tg_time_reached(deadline, end))
            deadline = end;
    }
    tg_timer_arm_at(&cs->attempt_lane, &c->timer, deadline);
}

void tg_upstream_verified(struct tg_conns *cs, struct tg_conn *c) {
    if (!tg_conn_inbound(cs, c))
        target_ok(cs, c);
}

// chain_over says whether the operator's bound on the whole chain of attempts has passed.
static int chain_over(const struct tg_conns *cs, const struct tg_conn *c) {
    uint32_t total = tg_conn_lconf(cs, c)->failover_timeout_ms;
    return total > 0 && tg_time_reached(cs->loop->now, c->chain_start + total);
}

void tg_upstream_attempt_expired(struct tg_conns *cs, struct tg_conn *c) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    char target[80];
    attempt_name(cs, c, target, sizeof(target));
    if (c->flags & TG_F_RETRY) {
        // Already failing over, waiting for the last completions (an alert being sent): stop.
        if (c->tio.fd >= 0)
            tg_loop_cancel_fd(cs->loop, c->tio.fd);
        tg_upstream_arm_attempt(cs, c, lc->connect_timeout_ms);
        return;
    }
    if (c->state == TG_CS_CONNECTING) {
        tg_counter_add(&cs->ctr[c->tio.listener].upstream_connect_errors, 1);
        TG_WARN("connect_failed",
                "conn=w%u-%u listener=%s target=%s error=\"no answer within "
                "connect_timeout_ms\"",
                cs->worker_id, c->tio.seq, lc->name, target);
        c->connect_failures++;
        target_failed(cs, c, "connect_timeout");
        if (c->flags & TG_F_PROBE) {
            tg_conn_close(cs, c, "options_connect_timeout");
            return;
        }
        if (!chain_over(cs, c) && tg_upstream_may_retry(cs, c)) {
            c->flags |= TG_F_RETRY;
            tg_loop_cancel_fd(cs->loop, c->tio.fd); // the connect: tg_conn_reap retries
            return;
        }
        if (c->connect_failures == conn_list(cs, c)->num_entries)
            tg_counter_add(&cs->ctr[c->tio.listener].handshakes[TG_VERDICT_CONNECT_FAILED], 1);
        tg_conn_close(cs, c, chain_over(cs, c) ? "failover_timeout" : "no_target_reachable");
        return;
    }
    // Silent in the handshake: a failed handshake of this target (counted as a timeout), which
    // fails over like any other.
    tg_conn_handshake_failed(cs, c, TG_VERDICT_TIMEOUT, "handshake_timeout_ms elapsed");
}

void tg_upstream_connect(struct tg_conns *cs, struct tg_conn *c) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    const struct sockaddr_storage *addr = &lc->targets[0].addr; // inbound: the backend
    socklen_t addr_len = lc->targets[0].addr_len;
    if (lc->direction == TG_OUTBOUND) {
        const struct tg_dns_entry *e = &conn_list(cs, c)->entries[c->entry];
        addr = &e->addr;
        addr_len = e->addr_len;
    }
    int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        TG_ERROR("socket_failed", "conn=w%u-%u listener=%s error=\"%s\"", cs->worker_id, c->tio.seq,
                 lc->name, strerror(errno));
        if (lc->direction == TG_INBOUND)
            tg_conn_fatal(cs, c, "socket_failed");
        else
            tg_conn_close(cs, c, "socket_failed");
        return;
    }
    tg_conn_sockopts(cs, fd);
    if (lc->direction == TG_INBOUND)
        c->plain_fd = fd;
    else
        c->tio.fd = fd;
    struct io_uring_sqe *sqe = tg_loop_sqe(cs->loop);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)addr, addr_len);
    io_uring_sqe_set_data64(sqe, tg_conn_ud(cs, c, TG_CONN_OP_CONNECT));
    c->inflight++;
}

static void connect_failed(struct tg_conns *cs, struct tg_conn *c, int res) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    if (c->flags & TG_F_PROBE) {
        TG_DEBUG("options_connect_failed", "conn=w%u-%u listener=%s target=%u error=\"%s\"",
                 cs->worker_id, c->tio.seq, lc->name, c->target, strerror(-res));
        tg_conn_close(cs, c, "options_connect_failed");
        return;
    }
    char target[80];
    attempt_name(cs, c, target, sizeof(target));
    tg_counter_add(&cs->ctr[c->tio.listener].upstream_connect_errors, 1);
    TG_WARN("connect_failed", "conn=w%u-%u listener=%s target=%s error=\"%s\"", cs->worker_id,
            c->tio.seq, lc->name, target, strerror(-res));
    if (lc->direction == TG_INBOUND) {
        tg_conn_fatal(cs, c, "backend_connect_failed");
        return;
    }
    c->connect_failures++;
    target_failed(cs, c, "connect_failed");
    if (!chain_over(cs, c) && advance(cs, c)) {
        close(c->tio.fd);
        c->tio.fd = -1;
        tg_upstream_arm_attempt(cs, c, lc->connect_timeout_ms);
        tg_upstream_connect(cs, c);
        return;
    }
    if (c->connect_failures == conn_list(cs, c)->num_entries)
        tg_counter_add(&cs->ctr[c->tio.listener].handshakes[TG_VERDICT_CONNECT_FAILED], 1);
    tg_conn_close(cs, c, "no_target_reachable");
}

void tg_upstream_on_connect(struct tg_conns *cs, struct tg_conn *c, int res) {
    // Closing, or failing over already (the attempt timed out and its connect was cancelled):
    // tg_conn_reap moves on once this last completion is in.
    if (c->state == TG_CS_CLOSING || (c->flags & TG_F_RETRY))
        return;
    if (res < 0) {
        connect_failed(cs, c, res);
        return;
    }
    if (tg_conn_inbound(cs, c)) {
        c->flags |= TG_F_PLAIN_UP;
        if (c->state == TG_CS_OPEN && c->timer.lane == &cs->hs_lane)
            tg_timer_arm(&cs->idle_lane, &c->timer, cs->loop->now);
        tg_sipglue_backend_up(cs, c);
        tg_conn_step(cs, c);
        return;
    }
    // Outbound: the provider's TCP connection is up; start the client handshake.
    c->flags |= TG_F_TLS_UP;
    if (!tg_conn_start_tls(cs, c, 0)) {
        tg_conn_close(cs, c, "ssl_new_failed");
        return;
    }
    tg_conn_client_hello(cs, c);
}

int tg_upstream_may_retry(const struct tg_conns *cs, const struct tg_conn *c) {
    return !tg_conn_inbound(cs, c) && !(c->flags & TG_F_PROBE) && next_entry(cs, c) >= 0 &&
           !chain_over(cs, c);
}

void tg_upstream_handshake_failed(struct tg_conns *cs, struct tg_conn *c, const char *why) {
    if (!tg_conn_inbound(cs, c))
        target_failed(cs, c, why);
}

void tg_upstream_retry(struct tg_conns *cs, struct tg_conn *c) {
    close(c->tio.fd);
    c->tio.fd = -1;
    tg_tlsio_drop(&c->tio);
    tg_bufq_reset(&c->pend_tls, &cs->bc);
    c->flags &= ~(TG_F_RETRY | TG_F_TLS_UP | TG_F_TLS_RECV | TG_F_TLS_RECV_CANCEL);
    if (!advance(cs, c)) { // cannot happen: tg_upstream_may_retry said there was one
        tg_conn_close(cs, c, "no_target_left");
        return;
    }
    c->state = TG_CS_CONNECTING;
    tg_upstream_arm_attempt(cs, c, tg_conn_lconf(cs, c)->connect_timeout_ms);
    tg_upstream_connect(cs, c);
}
