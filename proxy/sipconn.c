// SIP mode on one connection pair: framing, rewriting and local answers between the scanner
// and rewriter (pure) and the worker (I/O). See include/tlsgate/sipconn.h.
#include "tlsgate/sipconn.h"

#include "tlsgate/log.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define MAX_HEADERS 128

struct tg_sipconn *tg_sipconn_new(const char *fqdn, uint16_t fqdn_port, const uint8_t key[16]) {
    struct tg_sipconn *sc = calloc(1, sizeof(*sc));
    if (sc == NULL)
        return NULL;
    if (!tg_sip_rw_cfg_init(&sc->rw, fqdn, fqdn_port, sc->inside_host, 0, key)) {
        free(sc);
        return NULL;
    }
    sc->rw.limits.max_message = TG_SIPCONN_MAX_MESSAGE;
    return sc;
}

void tg_sipconn_set_max_message(struct tg_sipconn *sc, uint32_t max_message) {
    sc->rw.limits.max_message = max_message;
}

void tg_sipconn_free(struct tg_sipconn *sc) {
    if (sc == NULL)
        return;
    free(sc->in[0]);
    free(sc->in[1]);
    free(sc);
}

void tg_sipconn_set_inside(struct tg_sipconn *sc, const struct sockaddr *sa) {
    char host[INET6_ADDRSTRLEN] = "";
    uint16_t port = 0;
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof(host));
        port = ntohs(s6->sin6_port);
        snprintf(sc->inside_host, sizeof(sc->inside_host), "[%s]", host);
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &s4->sin_addr, host, sizeof(host));
        port = ntohs(s4->sin_port);
        snprintf(sc->inside_host, sizeof(sc->inside_host), "%s", host);
    }
    sc->rw.inside_port = port;
}

uint32_t tg_sipconn_room(const struct tg_sipconn *sc, enum tg_sip_side side) {
    return sc->rw.limits.max_message - sc->in_len[side];
}

uint8_t *tg_sipconn_reserve(struct tg_sipconn *sc, enum tg_sip_side side, uint32_t *out_room) {
    *out_room = 0;
    if (sc->in[side] == NULL) {
        sc->in[side] = malloc(sc->rw.limits.max_message);
        if (sc->in[side] == NULL)
            return NULL;
    }
    *out_room = sc->rw.limits.max_message - sc->in_len[side];
    return sc->in[side] + sc->in_len[side];
}

// drop_input gives the buffer back once it is empty: an idle connection holds none.
static void drop_input(struct tg_sipconn *sc, enum tg_sip_side side, uint32_t n) {
    if (n < sc->in_len[side])
        memmove(sc->in[side], sc->in[side] + n, sc->in_len[side] - n);
    sc->in_len[side] -= n;
    if (sc->in_len[side] == 0) {
        free(sc->in[side]);
        sc->in[side] = NULL;
    }
}

void tg_sipconn_commit(struct tg_sipconn *sc, enum tg_sip_side side, uint32_t n) {
    // Bytes an oversized message still owes are dropped as they arrive.
    uint32_t drop = sc->skip[side] < n ? sc->skip[side] : n;
    if (drop > 0) {
        uint8_t *p = sc->in[side] + sc->in_len[side];
        memmove(p, p + drop, n - drop);
        sc->skip[side] -= drop;
        n -= drop;
    }
    sc->in_len[side] += n;
    if (sc->in_len[side] == 0) {
        free(sc->in[side]);
        sc->in[side] = NULL;
    }
}

long tg_sipconn_feed(struct tg_sipconn *sc, enum tg_sip_side side, const uint8_t *data,
                     uint32_t len) {
    uint32_t taken = sc->skip[side] < len ? sc->skip[side] : len;
    sc->skip[side] -= taken;
    if (taken == len)
        return (long)len;
    uint32_t room;
    uint8_t *dst = tg_sipconn_reserve(sc, side, &room);
    if (dst == NULL)
        return -1;
    uint32_t n = len - taken < room ? len - taken : room;
    memcpy(dst, data + taken, n);
    sc->in_len[side] += n;
    if (sc->in_len[side] == 0) {
        free(sc->in[side]);
        sc->in[side] = NULL;
    }
    return (long)(taken + n);
}

static const char *reason_phrase(unsigned status) {
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 413:
        return "Request Entity Too Large";
    case 481:
        return "Call/Transaction Does Not Exist";
    case 483:
        return "Too Many Hops";
    case 488:
        return "Not Acceptable Here";
    case 503:
        return "Service Unavailable";
    case 505:
        return "Version Not Supported";
    case 513:
        return "Message Too Large";
    default:
        return "Error";
    }
}

#define LOCAL_TAG "tlsgate"
#define ALLOW_LINE                                                                                 \
    "Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO, REFER, "                       \
    "NOTIFY, SUBSCRIBE, MESSAGE\r\n"

// answer builds and sends a local response to |req| on |side|. Returns 0 when the send failed;
// a request too damaged to answer is simply not answered.
static int answer(const struct tg_sipconn_io *io, enum tg_sip_side side,
                  const struct tg_sip_msg *req, const uint8_t *buf, unsigned status,
                  const char *extra) {
    size_t n;
    if (!tg_sip_build_response(io->scratch, io->scratch_len, &n, req, buf, status,
                               reason_phrase(status), LOCAL_TAG, extra))
        return 1;
    return io->send(io->arg, side, io->scratch, (uint32_t)n);
}

static const char *side_name(enum tg_sip_side side) {
    return side == TG_SIP_SIDE_PROVIDER ? "provider" : "pbx";
}

// log_refused notes, at debug level (a peer can send many), a message refused or dropped.
static void log_refused(const struct tg_sipconn_io *io, enum tg_sip_side from, const char *reason) {
    TG_DEBUG("sip_refused", "conn=w%u-%u side=%s reason=%s", (unsigned)io->self.worker,
             io->conn_seq, side_name(from), reason);
}

static void count_request(const struct tg_sipconn_io *io, const struct tg_sip_msg *m) {
    unsigned method = m->method < TG_SIP_M_NUM ? m->method : TG_SIP_M_OTHER;
    tg_counter_add(&io->ctr->sip_requests[method], 1);
}

static void count_response(const struct tg_sipconn_io *io, const struct tg_sip_msg *m) {
    unsigned cls = m->code / 100;
    if (cls >= 1 && cls <= 6)
        tg_counter_add(&io->ctr->sip_responses[cls - 1], 1);
}

// apply_body runs the body hook on the rewritten message in io->scratch (|*n| bytes). Returns 1
// when it goes on (its body maybe replaced, |*n| updated), 0 when it is refused: |*status| is
// then the answer to give (0: drop it).
static int apply_body(struct tg_sipconn *sc, enum tg_sip_side from, const struct tg_sipconn_io *io,
                      const struct tg_sip_msg *m, const uint8_t *buf, size_t *n, uint16_t *status) {
    *status = 0;
    if (io->body == NULL)
        return 1;
    uint32_t body_len = 0;
    enum tg_sip_body b = io->body(io->body_arg, from, m, buf, io->scratch, (uint32_t)*n,
                                  io->body_buf, io->body_cap, &body_len, status);
    if (b == TG_SIP_BODY_KEEP)
        return 1;
    if (b == TG_SIP_BODY_REFUSE)
        return 0;
    enum tg_sip_rw r = tg_sip_set_body(io->scratch, n, io->scratch_len, m->body_len, io->body_buf,
                                       body_len, &sc->rw.limits);
    if (r == TG_SIP_RW_OK)
        return 1;
    tg_counter_add(&io->ctr->sip_rw_errors[r], 1);
    *status = m->is_request ? tg_sip_rw_status(r) : 0; // a response is dropped
    return 0;
}

// fail_back sends toward |to|, instead of the rewritten response at io->scratch (|n| bytes), a
// response with |status| and no body built from it: its Vias (ours already popped), From, To,
// Call-ID and CSeq. Returns 0 when the send failed; a response that cannot be rebuilt (it does
// not fit the hook's buffer) is dropped as it would have been.
static int fail_back(const struct tg_sipconn *sc, enum tg_sip_side to,
                     const struct tg_sipconn_io *io, size_t n, uint16_t status) {
    struct tg_sip_header hdrs[MAX_HEADERS];
    struct tg_sip_msg r;
    if (tg_sip_scan(&sc->rw.limits, &r, hdrs, MAX_HEADERS, io->scratch, (uint32_t)n) !=
            TG_SIP_MESSAGE ||
        r.is_request)
        return 1;
    uint8_t *o = io->body_buf;
    size_t len = 0, cap = io->body_cap;
    int k = snprintf((char *)o, cap, "SIP/2.0 %u %s\r\n", status, reason_phrase(status));
    if (k < 0 || (size_t)k >= cap)
        return 1;
    len = (size_t)k;
    for (unsigned i = 0; i < r.num_headers; i++) {
        const struct tg_sip_header *h = &hdrs[i];
        if (h->id != TG_SIP_H_VIA && h->id != TG_SIP_H_FROM && h->id != TG_SIP_H_TO &&
            h->id != TG_SIP_H_CALL_ID && h->id != TG_SIP_H_CSEQ)
            continue;
        if (len + h->line.len > cap)
            return 1;
        memcpy(o + len, io->scratch + h->line.off, h->line.len); // normal form: one line each
        len += h->line.len;
    }
    static const char k_end[] = "Content-Length: 0\r\n\r\n";
    if (len + sizeof(k_end) - 1 > cap)
        return 1;
    memcpy(o + len, k_end, sizeof(k_end) - 1);
    len += sizeof(k_end) - 1;
    return io->send(io->arg, to, o, (uint32_t)len);
}

// put_line appends |a| then |v| (|vn| bytes) then |b| to |out| at |*len|; 0 when it does not
// fit or |v| holds a CR or LF.
static int put_line(uint8_t *out, size_t cap, size_t *len, const char *a, const char *v, size_t vn,
                    const char *b) {
    size_t an = strlen(a), bn = strlen(b);
    if (memchr(v, '\r', vn) != NULL || memchr(v, '\n', vn) != NULL || *len + an + vn + bn > cap)
        return 0;
    memcpy(out + *len, a, an);
    memcpy(out + *len + an, v, vn);
    memcpy(out + *len + an + vn, b, bn);
    *len += an + vn + bn;
    return 1;
}

int tg_sipconn_build_request(const struct tg_sipconn *sc, enum tg_sip_side toward,
                             const struct tg_sip_flow *self, uint32_t txh,
                             const struct tg_sip_own_req *r, uint8_t *out, size_t cap,
                             size_t *out_len) {
    const char *m = tg_sip_method_name(r->method);
    int prov = toward == TG_SIP_SIDE_PROVIDER;
    *out_len = 0;
    if (!tg_sip_sealable((const uint8_t *)r->ruri, r->ruri_len))
        return 0; // a Request-URI must be "scheme:" then %x21-7E (no space, no 8-bit byte)
    // The token names the request as coming from the other side, as a relayed one would.
    struct tg_sip_flow f = *self;
    f.side = (uint8_t)(prov ? TG_SIP_SIDE_PBX : TG_SIP_SIDE_PROVIDER);
    char tok[TG_SIP_TOKEN_LEN + 1];
    tg_sip_flow_encode(&sc->rw, tok, &f, txh);
    tok[TG_SIP_TOKEN_LEN] = '\0';
    char own[384], num[16];
    int k = snprintf(own, sizeof(own), "SIP/2.0/%s %s:%u;branch=z9hG4bK%s", prov ? "TLS" : "TCP",
                     prov ? sc->rw.fqdn : sc->rw.inside_host,
                     (unsigned)(prov ? sc->rw.fqdn_port : sc->rw.inside_port), tok);
    if (k < 0 || (size_t)k >= sizeof(own))
        return 0;
    const char *via = r->via_len != 0 ? r->via : own;
    size_t via_len = r->via_len != 0 ? r->via_len : (size_t)k;
    snprintf(num, sizeof(num), "%u ", r->cseq);
    size_t len = 0;
    int ok = put_line(out, cap, &len, m, " ", 1, "") &&
             put_line(out, cap, &len, "", r->ruri, r->ruri_len, " SIP/2.0\r\n") &&
             put_line(out, cap, &len, "Via: ", via, via_len, "\r\n") &&
             put_line(out, cap, &len, "Max-Forwards: 70", "", 0, "\r\n") &&
             (r->route_len == 0 ||
              put_line(out, cap, &len, "Route: ", r->route, r->route_len, "\r\n")) &&
             put_line(out, cap, &len, "From: ", r->from, r->from_len, "\r\n") &&
             put_line(out, cap, &len, "To: ", r->to, r->to_len, "\r\n") &&
             put_line(out, cap, &len, "Call-ID: ", r->call_id, r->call_id_len, "\r\n") &&
             put_line(out, cap, &len, "CSeq: ", num, strlen(num), m) &&
             put_line(out, cap, &len, "\r\n", "", 0, "") &&
             (r->reason == NULL ||
              put_line(out, cap, &len, "Reason: ", r->reason, strlen(r->reason), "\r\n")) &&
             put_line(out, cap, &len, "Content-Length: 0\r\n\r\n", "", 0, "");
    *out_len = ok ? len : 0;
    return ok;
}

// process_message handles one complete message of |m->len| bytes at |buf|. Returns IDLE when it
// is done with it (forwarded, answered or dropped), BLOCKED or FAILED.
static enum tg_sipconn_result process_message(struct tg_sipconn *sc, enum tg_sip_side from,
                                              const struct tg_sipconn_io *io,
                                              const struct tg_sip_msg *m, const uint8_t *buf) {
    enum tg_sip_side to = from == TG_SIP_SIDE_PROVIDER ? TG_SIP_SIDE_PBX : TG_SIP_SIDE_PROVIDER;
    size_t n = 0;
    if (m->is_request) {
        if (m->method == TG_SIP_M_OPTIONS && tg_sip_is_options_to_us(m, buf, sc->rw.fqdn)) {
            if (!io->can_send(io->arg, from))
                return TG_SIPCONN_BLOCKED;
            count_request(io, m);
            return answer(io, from, m, buf, 200, ALLOW_LINE) ? TG_SIPCONN_IDLE : TG_SIPCONN_FAILED;
        }
        if (!io->can_send(io->arg, to) || !io->can_send(io->arg, from))
            return TG_SIPCONN_BLOCKED;
        count_request(io, m);
        struct tg_sip_flow self = io->self;
        self.side = (uint8_t)from;
        enum tg_sip_rw r =
            tg_sip_rewrite_request(&sc->rw, io->scratch, io->scratch_len, &n, m, buf, &self,
                                   from == TG_SIP_SIDE_PROVIDER ? sc->peer_name : NULL);
        uint16_t refused = 0;
        if (r == TG_SIP_RW_OK && !apply_body(sc, from, io, m, buf, &n, &refused)) {
            log_refused(io, from, "media");
            if (refused == 0 || m->method == TG_SIP_M_ACK)
                return TG_SIPCONN_IDLE;
            return answer(io, from, m, buf, refused, NULL) ? TG_SIPCONN_IDLE : TG_SIPCONN_FAILED;
        }
        if (r == TG_SIP_RW_OK)
            return io->send(io->arg, to, io->scratch, (uint32_t)n) ? TG_SIPCONN_IDLE
                                                                   : TG_SIPCONN_FAILED;
        tg_counter_add(&io->ctr->sip_rw_errors[r < TG_SIP_RW_NUM ? r : TG_SIP_RW_BAD_REQUEST], 1);
        log_refused(io, from, tg_sip_rw_name(r));
        uint16_t status = tg_sip_rw_status(r);
        if (status == 0 || m->method == TG_SIP_M_ACK)
            return TG_SIPCONN_IDLE;
        return answer(io, from, m, buf, status, NULL) ? TG_SIPCONN_IDLE : TG_SIPCONN_FAILED;
    }
    if (!io->can_send(io->arg, to))
        return TG_SIPCONN_BLOCKED;
    count_response(io, m);
    struct tg_sip_flow flow;
    enum tg_sip_rw r =
        tg_sip_rewrite_response(&sc->rw, &flow, io->scratch, io->scratch_len, &n, m, buf, from);
    if (r == TG_SIP_RW_DROP_LAST_VIA) {
        // Our Via, verified, and no other: the answer to a request tlsgate sent itself (the BYE
        // of a call it ended). It ends here.
        TG_DEBUG("sip_own_response", "conn=w%u-%u side=%s code=%u", (unsigned)io->self.worker,
                 io->conn_seq, side_name(from), (unsigned)m->code);
        return TG_SIPCONN_IDLE;
    }
    if (r != TG_SIP_RW_OK) {
        tg_counter_add(&io->ctr->sip_rw_errors[r < TG_SIP_RW_NUM ? r : TG_SIP_RW_DROP_NOT_OURS], 1);
        log_refused(io, from, tg_sip_rw_name(r));
        return TG_SIPCONN_IDLE;
    }
    // The response goes back on the pair its request went out on: this one, or it is dropped.
    if (flow.worker != io->self.worker || flow.slot != io->self.slot || flow.gen != io->self.gen ||
        flow.side != (uint8_t)to) {
        tg_counter_add(&io->ctr->sip_flow_errors, 1);
        log_refused(io, from, "flow_mismatch");
        return TG_SIPCONN_IDLE;
    }
    uint16_t refused;
    if (!apply_body(sc, from, io, m, buf, &n, &refused)) {
        log_refused(io, from, "media");
        if (refused == 0)
            return TG_SIPCONN_IDLE;
        return fail_back(sc, to, io, n, refused) ? TG_SIPCONN_IDLE : TG_SIPCONN_FAILED;
    }
    return io->send(io->arg, to, io->scratch, (uint32_t)n) ? TG_SIPCONN_IDLE : TG_SIPCONN_FAILED;
}

static enum tg_sipconn_result process(struct tg_sipconn *sc, enum tg_sip_side from,
                                      const struct tg_sipconn_io *io);

enum tg_sipconn_result tg_sipconn_process(struct tg_sipconn *sc, enum tg_sip_side from,
                                          const struct tg_sipconn_io *io) {
    enum tg_sipconn_result r = process(sc, from, io);
    sc->blocked[from] = r == TG_SIPCONN_BLOCKED;
    return r;
}

static enum tg_sipconn_result process(struct tg_sipconn *sc, enum tg_sip_side from,
                                      const struct tg_sipconn_io *io) {
    struct tg_sip_header hdrs[MAX_HEADERS];
    struct tg_sip_msg m;
    uint32_t off = 0;
    enum tg_sipconn_result res = TG_SIPCONN_IDLE;
    while (off < sc->in_len[from]) {
        const uint8_t *buf = sc->in[from] + off;
        uint32_t len = sc->in_len[from] - off;
        enum tg_sip_scan_result s = tg_sip_scan(&sc->rw.limits, &m, hdrs, MAX_HEADERS, buf, len);
        if (s == TG_SIP_NEED_MORE)
            break;
        if (s == TG_SIP_PONG) {
            if (from == TG_SIP_SIDE_PROVIDER)
                sc->pong_wait = 0;
            off += m.len;
            continue;
        }
        if (s == TG_SIP_PING) {
            if (!io->can_send(io->arg, from)) {
                res = TG_SIPCONN_BLOCKED;
                break;
            }
            if (!io->send(io->arg, from, (const uint8_t *)"\r\n", 2))
                return TG_SIPCONN_FAILED;
            off += m.len;
            continue;
        }
        if (s == TG_SIP_MESSAGE) {
            res = process_message(sc, from, io, &m, buf);
            if (res == TG_SIPCONN_FAILED)
                return res;
            if (res == TG_SIPCONN_BLOCKED)
                break;
            off += m.len;
            continue;
        }
        // TG_SIP_ERROR: answer what deserves an answer, then skip it or give up on the stream.
        if (m.status != 0 && !io->can_send(io->arg, from)) {
            res = TG_SIPCONN_BLOCKED;
            break;
        }
        tg_counter_add(&io->ctr->sip_scan_errors[m.err < TG_SIP_ERR_NUM ? m.err : 0], 1);
        log_refused(io, from, tg_sip_err_name((enum tg_sip_err)m.err));
        if (m.status != 0 && !(m.is_request && m.method == TG_SIP_M_ACK) &&
            !answer(io, from, &m, buf, m.status, NULL))
            return TG_SIPCONN_FAILED;
        if (!m.can_continue || m.len == 0)
            return TG_SIPCONN_CLOSE;
        if (m.len > len) {
            sc->skip[from] = m.len - len;
            off += len;
            break;
        }
        off += m.len;
    }
    if (off > 0)
        drop_input(sc, from, off);
    return res;
}
