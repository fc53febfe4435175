// The media relay of one worker: port allocator, sessions of four UDP sockets, multishot
// receives, SRTP <-> RTP in place, batched sends, symmetric-RTP latching, timeouts (see
// include/tlsgate/media.h).
#include "tlsgate/media.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tlsgate/guard.h"
#include "tlsgate/log.h"

// ---------------------------------------------------------------------------------------------
// Sockets.

static void set_port(struct sockaddr_storage *ss, uint16_t port) {
    if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
    else
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
}

static uint16_t get_port(const struct sockaddr_storage *ss) {
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

static socklen_t ss_len(const struct sockaddr_storage *ss) {
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

// same_ip reports whether |a| and |b| hold the same address (ports aside).
static int same_ip(const struct sockaddr_storage *a, const struct sockaddr *b) {
    if (a->ss_family != b->sa_family)
        return 0;
    if (a->ss_family == AF_INET6)
        return memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
                      &((const struct sockaddr_in6 *)b)->sin6_addr, 16) == 0;
    return ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
           ((const struct sockaddr_in *)b)->sin_addr.s_addr;
}

static int same_addr(const struct sockaddr_storage *a, const struct sockaddr *b) {
    return same_ip(a, b) && get_port(a) == get_port((const struct sockaddr_storage *)b);
}

// open_udp binds a UDP socket to |addr| port |port|. Returns the fd or -1.
static int open_udp(const struct sockaddr_storage *addr, uint16_t port, uint32_t bufsize) {
    int fd = socket(addr->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    if (addr->ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bufsize > 0) {
        int v = (int)bufsize;
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &v, sizeof(v));
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
    }
    struct sockaddr_storage ss = *addr;
    set_port(&ss, port);
    if (bind(fd, (const struct sockaddr *)&ss, ss_len(&ss)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// open_pair takes a port pair from the slice and binds RTP and RTCP sockets on |addr|. A pair
// some other process holds is skipped (and given back). Returns the RTP port, or 0.
static uint16_t open_pair(struct tg_media *m, const struct sockaddr_storage *addr, int *fd_rtp,
                          int *fd_rtcp) {
    for (int tries = 0; tries < 8; tries++) {
        uint16_t port = tg_portalloc_take(&m->ports);
        if (port == 0)
            return 0;
        *fd_rtp = open_udp(addr, port, m->cfg->socket_buffer);
        *fd_rtcp = *fd_rtp >= 0 ? open_udp(addr, (uint16_t)(port + 1), m->cfg->socket_buffer) : -1;
        if (*fd_rtcp >= 0)
            return port;
        int error = errno;
        if (*fd_rtp >= 0)
            close(*fd_rtp);
        *fd_rtp = -1;
        tg_portalloc_give(&m->ports, port);
        if (error != EADDRINUSE) {
            TG_WARN("media_bind_failed", "worker=%u port=%u error=\"%s\"", m->worker, port,
                    strerror(error));
            return 0;
        }
    }
    return 0;
}

static void arm_recv(struct tg_media *m, struct tg_msess *s, uint32_t slot, unsigned k) {
    struct io_uring_sqe *sqe = tg_loop_sqe(m->loop);
    io_uring_prep_recvmsg_multishot(sqe, s->fd[k], &m->rx_mh, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = TG_MEDIA_BGID;
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_MEDIA, k, slot, tg_slab_gen(&m->sess, slot)));
    s->armed[k] = 1;
}

// ---------------------------------------------------------------------------------------------
// Relaying.

static void rearm_waiting(struct tg_media *m);

// drop gives buffer |bid| back to the ring. Receives that stopped for lack of buffers are
// re-armed as soon as half the ring is free again, not at the next tick: a burst that empties
// the ring (a loop turn delayed by a busy CPU) must not leave sockets unread for up to a tick.
static void drop(struct tg_media *m, unsigned bid) {
    tg_loop_buf_return(m->loop, TG_MEDIA_BGID, bid);
    if (m->bufs_out > 0)
        m->bufs_out--;
    if (m->num_rearm > 0 && m->bufs_out < TG_MEDIA_BUF_COUNT / 2)
        rearm_waiting(m);
}

// send_from queues the send of |n| bytes at |pkt| (inside buffer |bid|) on |fd| to |to|: a
// plain send with the destination in the SQE where the kernel takes one (no msghdr for the
// kernel to copy in and check per packet), a sendmsg elsewhere.
static void send_from(struct tg_media *m, int fd, unsigned bid, uint8_t *pkt, size_t n,
                      const struct sockaddr_storage *to) {
    struct tg_media_tx *t = &m->tx[bid];
    memcpy(&t->to, to, ss_len(to)); // per packet: the address's own size, not the storage's
    struct io_uring_sqe *sqe = tg_loop_sqe(m->loop);
    if (m->loop->has_send_addr) {
        io_uring_prep_send(sqe, fd, pkt, n, 0);
        io_uring_prep_send_set_addr(sqe, (const struct sockaddr *)&t->to, (uint16_t)ss_len(&t->to));
    } else {
        t->iov.iov_base = pkt;
        t->iov.iov_len = n;
        memset(&t->mh, 0, sizeof(t->mh));
        t->mh.msg_name = &t->to;
        t->mh.msg_namelen = ss_len(&t->to);
        t->mh.msg_iov = &t->iov;
        t->mh.msg_iovlen = 1;
        io_uring_prep_sendmsg(sqe, fd, &t->mh, 0);
    }
    io_uring_sqe_set_data64(sqe, tg_ud(TG_KIND_MEDIA_TX, 0, bid, 0));
}

static void count_status(struct tg_media *m, enum tg_srtp_status st) {
    if (st == TG_SRTP_AUTH_FAIL)
        tg_counter_add(&m->ctr->auth_failures, 1);
    else if (st == TG_SRTP_REPLAY)
        tg_counter_add(&m->ctr->replays, 1);
    else
        tg_counter_add(&m->ctr->bad_packets, 1);
}

static enum tg_srtp_status unprotect(struct tg_srtp *ctx, int rtcp, uint8_t *pkt, size_t len,
                                     size_t *n) {
    return rtcp ? tg_srtcp_unprotect(ctx, pkt, len, n) : tg_srtp_unprotect(ctx, pkt, len, n);
}

// from_provider unprotects and relays one datagram that came to provider-side socket |k|.
static void from_provider(struct tg_media *m, struct tg_msess *s, unsigned k, unsigned bid,
                          uint8_t *pkt, size_t len, const struct sockaddr *src, int rtcp) {
    if (s->rx == NULL) {
        tg_counter_add(&m->ctr->bad_packets, 1);
        return drop(m, bid);
    }
    size_t n = 0;
    // A failed unprotect leaves the bytes unspecified (GCM decrypts as it checks): while a
    // previous key may still be in use, the packet is kept for it.
    if (s->rx_old != NULL)
        memcpy(m->keep, pkt, len);
    enum tg_srtp_status st = unprotect(s->rx, rtcp, pkt, len, &n);
    if (st == TG_SRTP_AUTH_FAIL && s->rx_old != NULL) {
        memcpy(pkt, m->keep, len);
        st = unprotect(s->rx_old, rtcp, pkt, len, &n);
    } else if (st == TG_SRTP_OK && s->rx_old != NULL) {
        tg_srtp_free(s->rx_old); // the new key is in use: the old one is done
        s->rx_old = NULL;
    }
    if (st != TG_SRTP_OK) {
        count_status(m, st);
        return drop(m, bid);
    }
    // Authenticated: the source is the provider's (symmetric RTP).
    struct tg_mpeer *p = &s->prov;
    struct sockaddr_storage *lat = k == TG_MS_PROV_RTCP ? &p->rtcp : &p->rtp;
    if (!rtcp || k == TG_MS_PROV_RTCP) {
        if (!p->known || (k == TG_MS_PROV_RTP && !p->latched) || !same_addr(lat, src)) {
            memcpy(lat, src,
                   src->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                              : sizeof(struct sockaddr_in));
            lat->ss_family = src->sa_family;
            if (k == TG_MS_PROV_RTP) {
                p->latched = 1;
                tg_counter_add(&m->ctr->latches, 1);
                if (!p->known && !p->mux) { // no SDP address yet: RTCP next to it
                    p->rtcp = p->rtp;
                    set_port(&p->rtcp, (uint16_t)(get_port(&p->rtp) + 1));
                }
                p->known = 1;
            }
        }
    }
    s->active_ms = m->loop->now;
    struct tg_mpeer *to = &s->pbx;
    if (!to->known || !to->recv) {
        tg_counter_add(&m->ctr->no_destination, 1);
        return drop(m, bid);
    }
    int via_rtcp = rtcp && !to->mux;
    tg_counter_add(&m->ctr->packets[0], 1);
    tg_counter_add(&m->ctr->bytes[0], len);
    send_from(m, s->fd[via_rtcp ? TG_MS_PBX_RTCP : TG_MS_PBX_RTP], bid, pkt, n,
              via_rtcp ? &to->rtcp : &to->rtp);
}

// from_pbx checks the source, protects and relays one datagram that came to PBX-side socket
// |k|.
static void from_pbx(struct tg_media *m, struct tg_msess *s, unsigned k, unsigned bid, uint8_t *pkt,
                     size_t len, size_t cap, const struct sockaddr *src, int rtcp) {
    struct tg_mpeer *p = &s->pbx;
    if (!p->known || !same_ip(&p->sdp, src)) {
        tg_counter_add(&m->ctr->foreign_source, 1);
        return drop(m, bid);
    }
    // The PBX's port is latched from its own packets (the address is the SDP's).
    struct sockaddr_storage *lat = k == TG_MS_PBX_RTCP ? &p->rtcp : &p->rtp;
    if ((!rtcp || k == TG_MS_PBX_RTCP) && !same_addr(lat, src)) {
        set_port(lat, get_port((const struct sockaddr_storage *)src));
        p->latched = 1;
    }
    if (s->tx == NULL) {
        tg_counter_add(&m->ctr->bad_packets, 1);
        return drop(m, bid);
    }
    size_t n = 0;
    enum tg_srtp_status st = rtcp ? tg_srtcp_protect(s->tx, pkt, len, cap, &n)
                                  : tg_srtp_protect(s->tx, pkt, len, cap, &n);
    if (st != TG_SRTP_OK) {
        count_status(m, st);
        return drop(m, bid);
    }
    s->active_ms = m->loop->now;
    struct tg_mpeer *to = &s->prov;
    if (!to->known || !to->recv) {
        tg_counter_add(&m->ctr->no_destination, 1);
        return drop(m, bid);
    }
    int via_rtcp = rtcp && !to->mux;
    tg_counter_add(&m->ctr->packets[1], 1);
    tg_counter_add(&m->ctr->bytes[1], len);
    send_from(m, s->fd[via_rtcp ? TG_MS_PROV_RTCP : TG_MS_PROV_RTP], bid, pkt, n,
              via_rtcp ? &to->rtcp : &to->rtp);
}

// relay handles one received datagram: |res| bytes of buffer |bid| in recvmsg-out layout.
static void relay(struct tg_media *m, struct tg_msess *s, unsigned k, unsigned bid, int res) {
    uint8_t *buf = (uint8_t *)tg_loop_buf(m->loop, TG_MEDIA_BGID, bid);
    struct io_uring_recvmsg_out *out = io_uring_recvmsg_validate(buf, res, &m->rx_mh);
    if (buf == NULL || out == NULL || (out->flags & MSG_TRUNC) ||
        out->namelen > m->rx_mh.msg_namelen) {
        tg_counter_add(&m->ctr->bad_packets, 1);
        return drop(m, bid);
    }
    const struct sockaddr *src = io_uring_recvmsg_name(out);
    uint8_t *pkt = io_uring_recvmsg_payload(out, &m->rx_mh);
    size_t len = io_uring_recvmsg_payload_length(out, res, &m->rx_mh);
    size_t cap = (size_t)(buf + TG_MEDIA_BUF_SIZE - pkt);
    // RTP and RTCP are version 2 with a 12-byte (RTP) or 8-byte (RTCP) header at least; STUN
    // and anything else is dropped. RTCP on the RTP port (rtcp-mux): packet types 192..223.
    if (len < 12 || (pkt[0] >> 6) != 2 || cap < len + TG_SRTCP_OVERHEAD) {
        tg_counter_add(&m->ctr->bad_packets, 1);
        return drop(m, bid);
    }
    int rtcp = (k == TG_MS_PROV_RTCP || k == TG_MS_PBX_RTCP) || (pkt[1] >= 192 && pkt[1] <= 223);
    if (k == TG_MS_PROV_RTP || k == TG_MS_PROV_RTCP)
        from_provider(m, s, k, bid, pkt, len, src, rtcp);
    else
        from_pbx(m, s, k, bid, pkt, len, cap, src, rtcp);
}

static void on_recv(void *arg, void *obj, uint32_t slot, unsigned op,
                    const struct io_uring_cqe *cqe) {
    struct tg_media *m = arg;
    struct tg_msess *s = obj;
    if (op >= TG_MS_NUM)
        return;
    if (!(cqe->flags & IORING_CQE_F_MORE)) {
        s->armed[op] = 0;
        if (cqe->res == -ENOBUFS) {
            tg_counter_add(&m->ctr->recv_nobufs, 1);
            if (!s->rearm && m->num_rearm < m->sess.cap) { // re-armed as buffers come back
                s->rearm = 1;
                m->rearm_list[m->num_rearm++] = slot;
            }
        } else if (cqe->res != -ECANCELED && s->fd[op] >= 0)
            arm_recv(m, s, slot, op);
    }
    if (!(cqe->flags & IORING_CQE_F_BUFFER))
        return;
    unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
    m->bufs_out++;
    if (cqe->res <= 0)
        return drop(m, bid);
    relay(m, s, op, bid, cqe->res);
}

static void on_sent(void *arg, void *obj, uint32_t bid, unsigned op,
                    const struct io_uring_cqe *cqe) {
    (void)obj;
    (void)op;
    struct tg_media *m = arg;
    if (cqe->res < 0)
        tg_counter_add(&m->ctr->send_errors, 1);
    if (bid < TG_MEDIA_BUF_COUNT)
        drop(m, bid);
}

// ---------------------------------------------------------------------------------------------
// Sessions.

int tg_media_init(struct tg_media *m, struct tg_loop *loop, const struct tg_config *cfg,
                  struct tg_media_counters *ctr, unsigned worker, unsigned num_workers, char *err,
                  size_t err_len) {
    memset(m, 0, sizeof(*m));
    m->loop = loop;
    m->cfg = cfg;
    m->ctr = ctr;
    m->worker = worker;
    uint16_t base;
    uint32_t pairs =
        tg_portalloc_slice(cfg->media_port_min, cfg->media_port_max, worker, num_workers, &base);
    if (pairs < 2) {
        snprintf(err, err_len,
                 "media.port_range %u-%u: too few port pairs for %u workers (two per stream)",
                 cfg->media_port_min, cfg->media_port_max, num_workers);
        return 0;
    }
    uint32_t share = cfg->media_max_calls / num_workers;
    m->max_calls = share > 0 ? share : 1;
    if (!tg_portalloc_init(&m->ports, base, pairs) ||
        !tg_slab_init(&m->sess, sizeof(struct tg_msess), pairs / 2) ||
        (m->tx = calloc(TG_MEDIA_BUF_COUNT, sizeof(*m->tx))) == NULL ||
        (m->rearm_list = calloc(pairs / 2 + 1, sizeof(*m->rearm_list))) == NULL) {
        snprintf(err, err_len, "out of memory for media sessions");
        return 0;
    }
    if (!tg_loop_add_bufgroup(loop, TG_MEDIA_BGID, TG_MEDIA_BUF_SIZE, TG_MEDIA_BUF_COUNT, err,
                              err_len))
        return 0;
    tg_tlane_init(&m->lane, cfg->media_timeout_s * 1000u);
    m->rx_mh.msg_namelen = sizeof(struct sockaddr_in6);
    tg_loop_set_kind(
        loop, TG_KIND_MEDIA,
        &(struct tg_kind_ops){
            .name = "media", .on_cqe = on_recv, .arg = m, .slab = &m->sess, .bgid = TG_MEDIA_BGID});
    tg_loop_set_kind(loop, TG_KIND_MEDIA_TX,
                     &(struct tg_kind_ops){
                         .name = "media_tx", .on_cqe = on_sent, .arg = m, .bgid = TG_MEDIA_BGID});
    return 1;
}

void tg_media_cleanup(struct tg_media *m) {
    if (m->sess.objs != NULL) {
        for (uint32_t i = 0; i < m->sess.cap; i++)
            if (tg_slab_live(&m->sess, i))
                tg_media_close(m, i);
    }
    tg_slab_cleanup(&m->sess);
    tg_portalloc_cleanup(&m->ports);
    free(m->tx);
    m->tx = NULL;
    free(m->rearm_list);
    m->rearm_list = NULL;
}

int tg_media_call_begin(struct tg_media *m) {
    if (m->num_calls >= m->max_calls) {
        tg_counter_add(&m->ctr->port_exhausted, 1);
        return 0;
    }
    m->num_calls++;
    tg_counter_add(&m->ctr->calls_opened, 1);
    return 1;
}

void tg_media_call_end(struct tg_media *m) {
    if (m->num_calls == 0)
        return;
    m->num_calls--;
    tg_counter_add(&m->ctr->calls_closed, 1);
}

uint32_t tg_media_open(struct tg_media *m, uint64_t owner, uint32_t *gen) {
    // The four sockets are counted with the connections' descriptors: a session that would eat
    // into fd_reserve is refused like one that finds no port (the call gets 503).
    if (m->guard != NULL && !tg_guard_take_fds(m->guard, TG_MS_NUM)) {
        tg_counter_add(&m->ctr->port_exhausted, 1);
        return TG_NIL;
    }
    uint32_t slot;
    struct tg_msess *s = tg_slab_alloc(&m->sess, &slot);
    if (s == NULL) {
        if (m->guard != NULL)
            tg_guard_give_fds(m->guard, TG_MS_NUM);
        tg_counter_add(&m->ctr->port_exhausted, 1);
        return TG_NIL;
    }
    for (unsigned k = 0; k < TG_MS_NUM; k++)
        s->fd[k] = -1;
    s->owner = owner;
    s->port[0] =
        open_pair(m, &m->cfg->media_public_addr, &s->fd[TG_MS_PROV_RTP], &s->fd[TG_MS_PROV_RTCP]);
    s->port[1] = s->port[0] == 0 ? 0
                                 : open_pair(m, &m->cfg->media_internal_addr, &s->fd[TG_MS_PBX_RTP],
                                             &s->fd[TG_MS_PBX_RTCP]);
    if (s->port[1] == 0) {
        tg_counter_add(&m->ctr->port_exhausted, 1);
        tg_counter_add(&m->ctr->streams_opened, 1); // closing counts it closed
        tg_media_close(m, slot);
        return TG_NIL;
    }
    tg_counter_add(&m->ctr->streams_opened, 1);
    for (unsigned k = 0; k < TG_MS_NUM; k++)
        arm_recv(m, s, slot, k);
    s->active_ms = m->loop->now;
    tg_timer_arm(&m->lane, &s->timer, m->loop->now);
    *gen = tg_slab_gen(&m->sess, slot);
    return slot;
}

struct tg_msess *tg_media_get(struct tg_media *m, uint32_t slot, uint32_t gen) {
    return tg_slab_lookup(&m->sess, slot, gen);
}

void tg_media_close(struct tg_media *m, uint32_t slot) {
    if (!tg_slab_live(&m->sess, slot))
        return;
    struct tg_msess *s = tg_slab_at(&m->sess, slot);
    int any = 0;
    // Each receive is cancelled by the user_data it was armed with: the kernel finds it by a
    // hash. A cancel by descriptor walks every request armed on the ring (io_cancel_req_match):
    // with 4,500 calls each cancel walked ~18,000 receives, and ending every call at shutdown
    // took longer than 17 s. Sends in flight are not cancelled: they finish on their socket
    // (they hold it) and give their buffer back as usual.
    const uint32_t gen = tg_slab_gen(&m->sess, slot);
    for (unsigned k = 0; k < TG_MS_NUM; k++) {
        if (s->fd[k] >= 0 && s->armed[k]) {
            tg_loop_cancel_ud(m->loop, tg_ud(TG_KIND_MEDIA, k, slot, gen), 0);
            any = 1;
        }
    }
    // Sends queued from these sockets and the cancels go to the kernel before the descriptors
    // close, so a number reused by the next socket never carries this session's packets.
    if (any || io_uring_sq_ready(&m->loop->ring) > 0)
        io_uring_submit(&m->loop->ring);
    for (unsigned k = 0; k < TG_MS_NUM; k++) {
        if (s->fd[k] >= 0)
            close(s->fd[k]);
        s->fd[k] = -1;
    }
    for (int side = 0; side < 2; side++)
        if (s->port[side] != 0)
            tg_portalloc_give(&m->ports, s->port[side]);
    tg_srtp_free(s->rx);
    tg_srtp_free(s->rx_old);
    tg_srtp_free(s->tx);
    tg_timer_cancel(&s->timer);
    memset(s, 0, sizeof(*s));
    tg_slab_free(&m->sess, slot);
    if (m->guard != NULL)
        tg_guard_give_fds(m->guard, TG_MS_NUM);
    tg_counter_add(&m->ctr->streams_closed, 1);
}

// hold_timer exempts a held stream from the media timeout (a=inactive may carry no packet at
// all for as long as the hold lasts) and times it again from its resume.
static void hold_timer(struct tg_media *m, struct tg_msess *s) {
    int held = !s->prov.recv || !s->pbx.recv;
    if (held)
        tg_timer_cancel(&s->timer);
    else if (!tg_timer_armed(&s->timer)) {
        s->active_ms = m->loop->now;
        tg_timer_arm(&m->lane, &s->timer, m->loop->now);
    }
}

void tg_media_set_peer(struct tg_media *m, struct tg_msess *s, int pbx, const struct sockaddr *rtp,
                       uint16_t rtcp_port, int mux, int receives) {
    struct tg_mpeer *p = pbx ? &s->pbx : &s->prov;
    p->mux = (uint8_t)(mux != 0);
    p->recv = (uint8_t)(receives != 0);
    p->described = 1;
    if (s->prov.described && s->pbx.described) // until then a call that never answers times out
        hold_timer(m, s);
    if (rtp == NULL) { // on hold, or declined: nowhere to send
        p->known = 0;
        p->latched = 0;
        return;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, rtp,
           rtp->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    // An unchanged SDP address keeps what was latched from the peer's packets.
    if (p->known && p->latched && same_addr(&p->sdp, (const struct sockaddr *)&ss))
        return;
    p->sdp = ss;
    p->rtp = ss;
    p->rtcp = ss;
    set_port(&p->rtcp, rtcp_port != 0 ? rtcp_port : (uint16_t)(get_port(&ss) + 1));
    p->len = ss_len(&ss);
    p->known = 1;
    p->latched = 0;
}

int tg_media_set_rx_key(struct tg_msess *s, const struct tg_srtp_params *p) {
    struct tg_srtp *ctx = tg_srtp_new(p, 0);
    if (ctx == NULL)
        return 0;
    tg_srtp_free(s->rx_old);
    s->rx_old = s->rx;
    s->rx = ctx;
    return 1;
}

int tg_media_set_tx_key(struct tg_msess *s, const struct tg_srtp_params *p) {
    struct tg_srtp *ctx = tg_srtp_new(p, 1);
    if (ctx == NULL)
        return 0;
    tg_srtp_free(s->tx);
    s->tx = ctx;
    return 1;
}

void tg_media_tick(struct tg_media *m) {
    const uint32_t now = m->loop->now;
    struct tg_timer *t;
    while ((t = tg_tlane_pop_expired(&m->lane, now)) != NULL) {
        struct tg_msess *s = tg_timer_owner(t, struct tg_msess, timer);
        uint32_t active_until = s->active_ms + m->lane.timeout_ms;
        if (!tg_time_reached(now, active_until)) { // packets since: it runs on
            tg_timer_arm_at(&m->lane, &s->timer, active_until);
            continue;
        }
        uint32_t slot = tg_slab_index(&m->sess, s);
        tg_counter_add(&m->ctr->timeouts, 1);
        TG_INFO("media_timeout", "worker=%u port=%u idle_s=%u", m->worker, s->port[0],
                m->cfg->media_timeout_s);
        if (m->on_timeout != NULL)
            m->on_timeout(m->cb_arg, s->owner); // closes the call's sessions
        if (tg_slab_live(&m->sess, slot) && tg_slab_at(&m->sess, slot) == (void *)s &&
            !tg_timer_armed(&s->timer) && s->port[0] != 0)
            tg_media_close(m, slot);
    }
    if (m->num_rearm > 0)
        rearm_waiting(m);
}

// rearm_waiting re-arms the receives of the sessions in rearm_list (those still open).
static void rearm_waiting(struct tg_media *m) {
    uint32_t n = m->num_rearm;
    m->num_rearm = 0;
    for (uint32_t j = 0; j < n; j++) {
        uint32_t i = m->rearm_list[j];
        if (!tg_slab_live(&m->sess, i))
            continue;
        struct tg_msess *s = tg_slab_at(&m->sess, i);
        if (!s->rearm)
            continue; // closed and reused since
        s->rearm = 0;
        for (unsigned k = 0; k < TG_MS_NUM; k++)
            if (!s->armed[k] && s->fd[k] >= 0)
                arm_recv(m, s, i, k);
    }
}
