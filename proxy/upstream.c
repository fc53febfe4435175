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

uint8_t tg_upstream_pick(const struct tg_conns *cs, uint16_t listener, unsigned from) {
    const struct tg_listener_conf *lc = &cs->cfg->listeners[listener];
    if (!tg_probes_listener_probed(lc))
        return (uint8_t)from;
    for (size_t t = from; t < lc->num_targets; t++)
        if (!tg_probes_target_down(cs->metrics, listener, t))
            return (uint8_t)t;
    return (uint8_t)from;
}

void tg_upstream_connect(struct tg_conns *cs, struct tg_conn *c) {
    const struct tg_listener_conf *lc = tg_conn_lconf(cs, c);
    const struct tg_target *t = &lc->targets[c->target];
    int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        TG_ERROR("socket_failed", "conn=w%u-%u listener=%s error=\"%s\"", cs->worker_id, c->tio.seq,
                 lc->name, strerror(errno));
        if (lc->direction == TG_INBOUND)
            tg_conn_fatal(cs, c, "socket_failed");
        else
            tg_conn_close(cs, c, "socket_failed");
        return;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (lc->direction == TG_INBOUND)
        c->plain_fd = fd;
    else
        c->tio.fd = fd;
    struct io_uring_sqe *sqe = tg_loop_sqe(cs->loop);
    io_uring_prep_connect(sqe, fd, (const struct sockaddr *)&t->addr, t->addr_len);
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
    tg_target_format(&lc->targets[c->target], target, sizeof(target));
    tg_counter_add(&cs->ctr[c->tio.listener].upstream_connect_errors, 1);
    TG_WARN("connect_failed", "conn=w%u-%u listener=%s target=%s error=\"%s\"", cs->worker_id,
            c->tio.seq, lc->name, target, strerror(-res));
    if (lc->direction == TG_INBOUND) {
        tg_conn_fatal(cs, c, "backend_connect_failed");
        return;
    }
    c->connect_failures++;
    if ((size_t)c->target + 1 < lc->num_targets) {
        close(c->tio.fd);
        c->tio.fd = -1;
        c->target = tg_upstream_pick(cs, c->tio.listener, c->target + 1u);
        tg_upstream_connect(cs, c);
        return;
    }
    if (c->connect_failures == lc->num_targets)
        tg_counter_add(&cs->ctr[c->tio.listener].handshakes[TG_VERDICT_CONNECT_FAILED], 1);
    tg_conn_close(cs, c, "no_target_reachable");
}

void tg_upstream_on_connect(struct tg_conns *cs, struct tg_conn *c, int res) {
    if (c->state == TG_CS_CLOSING)
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
    return !tg_conn_inbound(cs, c) && !(c->flags & TG_F_PROBE) &&
           (size_t)c->target + 1 < tg_conn_lconf(cs, c)->num_targets;
}

void tg_upstream_retry(struct tg_conns *cs, struct tg_conn *c) {
    close(c->tio.fd);
    c->tio.fd = -1;
    tg_tlsio_drop(&c->tio);
    tg_bufq_reset(&c->pend_tls, &cs->bc);
    c->flags &= ~(TG_F_RETRY | TG_F_TLS_UP | TG_F_TLS_RECV | TG_F_TLS_RECV_CANCEL);
    c->target = tg_upstream_pick(cs, c->tio.listener, c->target + 1u);
    c->state = TG_CS_CONNECTING;
    tg_timer_cancel(&c->timer);
    tg_upstream_connect(cs, c);
}
