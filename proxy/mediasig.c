// Call signalling for the media relay: the SIP body hook over the dialog table and the media
// sessions (see include/tlsgate/mediasig.h).
#include "tlsgate/mediasig.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <openssl/rand.h>

#include "tlsgate/log.h"

// ---------------------------------------------------------------------------------------------
// Calls.

static void on_timeout(void *arg, uint64_t owner);

// OP_ANSWER: an ACK or PRACK of the call carried SDP to another worker (see on_request).
enum dialog_op { OP_BYE = 1, OP_CANCEL, OP_MOVED, OP_ANSWER };

// Why tlsgate ended a call itself: the Reason of its BYEs (RFC 3326).
enum own_why { WHY_NONE = 0, WHY_TIMEOUT, WHY_ANSWER };
static const char *const k_reason[] = {
    [WHY_NONE] = NULL,
    [WHY_TIMEOUT] = "SIP;cause=408;text=\"media timeout\"",
    [WHY_ANSWER] = "SIP;cause=488;text=\"SDP answer not acceptable\"",
};

// LINGER_MS is how long a call tlsgate ended itself stays in the table once its requests are
// out: a 2xx retransmitted before our ACK arrived and the ACK of the failed-back response come
// within it (TCP and TLS: no loss, so T1 retransmissions at most). GIVE_UP_MS bounds the wait
// for a busy connection (64*T1, the 2xx retransmission limit of RFC 3261 13.3.1.4).
#define LINGER_MS 4000u
#define GIVE_UP_MS 32000u

static void end_call(struct tg_mediasig *ms, struct tg_dialog *d, const char *why);

static enum tg_sip_side sip_side(enum tg_dlg_side s) {
    return s == TG_DLG_PROVIDER ? TG_SIP_SIDE_PROVIDER : TG_SIP_SIDE_PBX;
}

static enum tg_dlg_side other_side(enum tg_dlg_side s) {
    return s == TG_DLG_PROVIDER ? TG_DLG_PBX : TG_DLG_PROVIDER;
}

static void lost_answer(struct tg_mediasig *ms, struct tg_dialog *d);

// on_dialog_msg handles a message from another worker about dialog |obj| (the loop checked
// its generation: a call that ended meanwhile gets nothing).
static void on_dialog_msg(void *arg, void *obj, uint32_t slot, unsigned op,
                          const struct io_uring_cqe *cqe) {
    (void)slot;
    (void)cqe;
    struct tg_mediasig *ms = arg;
    struct tg_dialog *d = obj;
    if (op == OP_BYE)
        end_call(ms, d, "bye_elsewhere");
    else if (op == OP_CANCEL && !d->confirmed)
        end_call(ms, d, "cancel_elsewhere");
    else if (op == OP_MOVED)
        end_call(ms, d, "moved");
    else if (op == OP_ANSWER && !d->ending)
        lost_answer(ms, d);
}

int tg_mediasig_init(struct tg_mediasig *ms, struct tg_loop *loop, const struct tg_config *cfg,
                     struct tg_media_counters *ctr, struct tg_calldir *dir, unsigned worker,
                     unsigned num_workers, char *err, size_t err_len) {
    memset(ms, 0, sizeof(*ms));
    ms->dir = dir;
    ms->loop = loop;
    ms->cfg = cfg;
    ms->ctr = ctr;
    ms->worker = worker;
    if (!tg_media_init(&ms->media, loop, cfg, ctr, worker, num_workers, err, err_len))
        return 0;
    ms->media_ok = 1;
    ms->media.on_timeout = on_timeout;
    ms->media.cb_arg = ms;
    uint64_t key[2];
    RAND_bytes((uint8_t *)key, sizeof(key));
    // Room beyond max_calls for the calls tlsgate ended itself, lingering a few seconds.
    uint32_t cap = ms->media.max_calls + ms->media.max_calls / 4 + 4;
    if (!tg_dialogs_init(&ms->dialogs, cap, key)) {
        snprintf(err, err_len, "out of memory for the dialog table");
        return 0;
    }
    ms->dialogs_ok = 1;
    tg_loop_set_kind(loop, TG_KIND_DIALOG,
                     &(struct tg_kind_ops){.name = "dialog",
                                           .on_cqe = on_dialog_msg,
                                           .arg = ms,
                                           .slab = &ms->dialogs.slab,
                                           .bgid = -1});
    if (dir != NULL)
        tg_calldir_attach(dir, worker, loop);
    return 1;
}

void tg_mediasig_detach(struct tg_mediasig *ms) {
    if (ms->dir != NULL)
        tg_calldir_detach(ms->dir, ms->worker);
}

// post_owner sends |op| about the call of Call-ID |cid| to the worker that owns it. Returns 1
// when another worker owns it (whether or not the message could be queued).
static int post_owner(struct tg_mediasig *ms, const char *cid, size_t len, enum dialog_op op) {
    unsigned owner;
    uint64_t cookie;
    if (ms->dir == NULL ||
        !tg_calldir_find(ms->dir, ms->worker, tg_calldir_hash(ms->dir, cid, len), &owner, &cookie))
        return 0;
    if (!tg_calldir_post(ms->dir, ms->loop, owner,
                         tg_ud(TG_KIND_DIALOG, op, (uint32_t)cookie, (uint32_t)(cookie >> 32))))
        TG_WARN("media_post_failed", "worker=%u owner=%u op=%d", ms->worker, owner, (int)op);
    return 1;
}

// release_media closes the streams of |d|, gives its call slot back and takes it out of the
// call directory.
static void release_media(struct tg_mediasig *ms, struct tg_dialog *d, const char *why) {
    unsigned streams = 0;
    for (size_t i = 0; i < TG_DIALOG_STREAMS; i++) {
        if (d->st[i].slot == TG_NIL)
            continue;
        if (tg_media_get(&ms->media, d->st[i].slot, d->st[i].gen) != NULL) {
            tg_media_close(&ms->media, d->st[i].slot);
            streams++;
        }
        d->st[i].slot = TG_NIL;
    }
    if (d->has_call)
        tg_media_call_end(&ms->media);
    TG_INFO("media_call_end", "worker=%u reason=%s streams=%u", ms->worker, why, streams);
    d->has_call = 0;
    if (ms->dir != NULL && d->dir_hash != 0)
        tg_calldir_del(ms->dir, ms->worker, d->dir_hash);
    d->dir_hash = 0;
    memset(&d->st, 0, sizeof(d->st)); // keys gone
    for (size_t i = 0; i < TG_DIALOG_STREAMS; i++)
        d->st[i].slot = TG_NIL;
}

// end_call ends the call of |d| (if tlsgate has not already) and forgets it.
static void end_call(struct tg_mediasig *ms, struct tg_dialog *d, const char *why) {
    if (d->ending)
        ms->num_ending--;
    else
        release_media(ms, d, why);
    tg_dialog_remove(&ms->dialogs, d);
}

// can_send returns the requests of |pending| that tlsgate knows enough of |d| to send: a CANCEL
// and the ACK of a final failure from the INVITE as sent, the others from the complete dialog.
static uint8_t can_send(const struct tg_dialog *d, uint8_t pending) {
    const uint8_t of_invite = TG_OWN_CANCEL | TG_OWN_ACK_FINAL;
    uint8_t ok = d->id.invite ? of_invite : 0;
    if (d->id.complete && !d->id.overflow)
        ok |= (uint8_t)~of_invite;
    return pending & ok;
}

// end_call_own ends the call of |d| on tlsgate's own account: its media at once, the requests
// in |pending| (TG_OWN_*) toward the sides at the next tick; the dialog lingers meanwhile.
static void end_call_own(struct tg_mediasig *ms, struct tg_dialog *d, const char *why,
                         uint8_t pending, enum own_why reason) {
    release_media(ms, d, why);
    d->ending = 1;
    ms->num_ending++;
    d->why = (uint8_t)reason;
    d->ended_at = ms->loop->now;
    d->pending = ms->send_own != NULL ? can_send(d, pending) : 0;
    if (pending != 0 && d->pending == 0)
        TG_WARN("media_no_bye", "worker=%u reason=%s complete=%u overflow=%u", ms->worker, why,
                (unsigned)d->id.complete, (unsigned)d->id.overflow);
}

// of_invite fills |r| for the CANCEL of the initial INVITE toward |d->fail_side|, or the ACK of
// its final failure: the INVITE's Request-URI, top Via (so the far side matches its
// transaction: RFC 3261 9.1, 17.1.1.3), Route, From, Call-ID and CSeq number; its To, or for
// the ACK the failure's (with the to-tag). Returns the side.
static enum tg_dlg_side of_invite(struct tg_dialog *d, uint8_t bit, struct tg_sip_own_req *r) {
    const struct tg_dialog_id *id = &d->id;
    memset(r, 0, sizeof(*r));
    r->method = bit == TG_OWN_CANCEL ? TG_SIP_M_CANCEL : TG_SIP_M_ACK;
    r->ruri = tg_dialog_id_get(id, TG_DID_INV_RURI, &r->ruri_len);
    r->via = tg_dialog_id_get(id, TG_DID_INV_VIA, &r->via_len);
    r->route = tg_dialog_id_get(id, TG_DID_INV_ROUTE, &r->route_len);
    r->from = tg_dialog_id_get(id, TG_DID_INV_FROM, &r->from_len);
    r->to = tg_dialog_id_get(id, bit == TG_OWN_CANCEL ? TG_DID_INV_TO : TG_DID_TO, &r->to_len);
    r->call_id = d->call_id;
    r->call_id_len = d->call_id_len;
    r->cseq = d->fail_cseq;
    if (bit == TG_OWN_CANCEL)
        r->reason = k_reason[WHY_ANSWER];
    return (enum tg_dlg_side)d->fail_side;
}

// own_request fills |r| for tlsgate's request |bit| (TG_OWN_*) in |d|, speaking for the side
// opposite |toward| toward it. Returns the side.
static enum tg_dlg_side own_request(struct tg_dialog *d, uint8_t bit, struct tg_sip_own_req *r) {
    if (bit == TG_OWN_CANCEL || bit == TG_OWN_ACK_FINAL)
        return of_invite(d, bit, r);
    enum tg_dlg_side toward = bit == TG_OWN_ACK        ? (enum tg_dlg_side)d->fail_side
                              : bit == TG_OWN_BYE_PROV ? TG_DLG_PROVIDER
                                                       : TG_DLG_PBX;
    enum tg_dlg_side speaker = other_side(toward);
    const struct tg_dialog_id *id = &d->id;
    int to_callee = toward != (enum tg_dlg_side)id->caller;
    memset(r, 0, sizeof(*r));
    r->method = bit == TG_OWN_ACK ? TG_SIP_M_ACK : TG_SIP_M_BYE;
    r->ruri = tg_dialog_id_get(
        id, toward == TG_DLG_PROVIDER ? TG_DID_TARGET_PROV : TG_DID_TARGET_PBX, &r->ruri_len);
    r->route = tg_dialog_id_get(
        id, toward == TG_DLG_PROVIDER ? TG_DID_ROUTE_PROV : TG_DID_ROUTE_PBX, &r->route_len);
    r->from = tg_dialog_id_get(id, to_callee ? TG_DID_FROM : TG_DID_TO, &r->from_len);
    r->to = tg_dialog_id_get(id, to_callee ? TG_DID_TO : TG_DID_FROM, &r->to_len);
    r->call_id = d->call_id;
    r->call_id_len = d->call_id_len;
    if (bit == TG_OWN_ACK) {
        r->cseq = d->fail_cseq;
    } else {
        r->cseq = d->id.cseq[speaker - 1] + 1; // above anything that side sent (flush_own
                                               // counts it once the request is out)
        r->reason = k_reason[d->why < sizeof(k_reason) / sizeof(k_reason[0]) ? d->why : WHY_NONE];
    }
    return toward;
}

// flush_own sends what tlsgate still owes the sides of |d|, in order (the ACK before the BYE
// toward the same side); a busy connection keeps the rest for the next tick. Returns 0 when
// |d| is gone (a failed send closed its connection, which ended its calls).
static int flush_own(struct tg_mediasig *ms, struct tg_dialog *d) {
    static const uint8_t k_order[] = {TG_OWN_CANCEL, TG_OWN_ACK_FINAL, TG_OWN_ACK, TG_OWN_BYE_PROV,
                                      TG_OWN_BYE_PBX};
    const uint64_t cookie = tg_dialog_cookie(&ms->dialogs, d);
    for (size_t i = 0; i < sizeof(k_order); i++) {
        uint8_t bit = k_order[i];
        if (!(d->pending & bit))
            continue;
        struct tg_sip_own_req r;
        enum tg_dlg_side toward = own_request(d, bit, &r);
        int sent = ms->send_own(ms->send_arg, d->conn_slot, d->conn_gen, sip_side(toward), &r);
        if (tg_dialog_by_cookie(&ms->dialogs, cookie) != d)
            return 0;
        if (sent == 0)
            return 1;
        d->pending &= (uint8_t)~bit;
        const char *side = toward == TG_DLG_PROVIDER ? "provider" : "pbx";
        if (sent < 0) {
            TG_INFO("media_own_request_lost", "worker=%u side=%s method=%s reason=connection_gone",
                    ms->worker, side, tg_sip_method_name(r.method));
            continue;
        }
        if (bit == TG_OWN_BYE_PROV || bit == TG_OWN_BYE_PBX) {
            d->id.cseq[other_side(toward) - 1] = r.cseq;
            tg_counter_add(&ms->ctr->byes_sent, 1);
        }
        TG_INFO("media_own_request", "worker=%u side=%s method=%s cseq=%u why=%s", ms->worker, side,
                tg_sip_method_name(r.method), r.cseq,
                d->why == WHY_TIMEOUT ? "media_timeout" : "answer_refused");
    }
    return 1;
}

// tick_ending sends the requests owed by the calls tlsgate ended and forgets those done.
static void tick_ending(struct tg_mediasig *ms) {
    const uint32_t now = ms->loop->now;
    for (uint32_t i = 0; i < ms->dialogs.slab.cap && ms->num_ending > 0; i++) {
        if (!tg_slab_live(&ms->dialogs.slab, i))
            continue;
        struct tg_dialog *d = tg_slab_at(&ms->dialogs.slab, i);
        if (!d->ending)
            continue;
        if (d->pending != 0 && ms->send_own != NULL && !flush_own(ms, d))
            continue;
        uint32_t age = now - d->ended_at;
        // A CANCELled INVITE's final response (487, or a 2xx that crossed the CANCEL) is
        // awaited, to be absorbed and ACKed: up to GIVE_UP_MS.
        if ((d->pending == 0 && d->cancelled != 1 && age >= LINGER_MS) || age >= GIVE_UP_MS) {
            if (d->pending != 0)
                TG_WARN("media_own_request_lost", "worker=%u pending=%u reason=busy", ms->worker,
                        (unsigned)d->pending);
            end_call(ms, d, "done");
        }
    }
}

void tg_mediasig_cleanup(struct tg_mediasig *ms) {
    if (ms->dialogs_ok) {
        for (uint32_t i = 0; i < ms->dialogs.slab.cap; i++)
            if (tg_slab_live(&ms->dialogs.slab, i))
                end_call(ms, tg_slab_at(&ms->dialogs.slab, i), "shutdown");
        tg_dialogs_cleanup(&ms->dialogs);
    }
    if (ms->media_ok)
        tg_media_cleanup(&ms->media);
    ms->dialogs_ok = ms->media_ok = 0;
}

// lost_answer ends a call whose ACK or PRACK with SDP went to another worker: that SDP is the
// answer to an offer this worker rewrote (its ports, its key), so only this worker could apply
// it, and messages between workers carry no payload. Without it the call has no media, so it
// ends on both sides, as for an answer tlsgate cannot use (a BYE each, Reason 488; an early
// dialog, whose identity is not complete yet, ends here only).
static void lost_answer(struct tg_mediasig *ms, struct tg_dialog *d) {
    tg_counter_add(&ms->ctr->answers_failed, 1);
    TG_INFO("media_answer_failed", "worker=%u from=elsewhere confirmed=%u", ms->worker,
            (unsigned)d->confirmed);
    if (d->confirmed)
        end_call_own(ms, d, "answer_elsewhere", TG_OWN_BYE_PROV | TG_OWN_BYE_PBX, WHY_ANSWER);
    else
        end_call(ms, d, "answer_elsewhere");
}

static void on_timeout(void *arg, uint64_t owner) {
    struct tg_mediasig *ms = arg;
    struct tg_dialog *d = tg_dialog_by_cookie(&ms->dialogs, owner);
    if (d == NULL || d->ending)
        return;
    // The sides learn it: a BYE to each of a confirmed call (an early one just ends here).
    if (d->confirmed)
        end_call_own(ms, d, "media_timeout", TG_OWN_BYE_PROV | TG_OWN_BYE_PBX, WHY_TIMEOUT);
    else
        end_call(ms, d, "media_timeout");
}

void tg_mediasig_tick(struct tg_mediasig *ms) {
    tg_media_tick(&ms->media);
    if (ms->num_ending > 0)
        tick_ending(ms);
}

void tg_mediasig_conn_closed(struct tg_mediasig *ms, uint32_t slot, uint32_t gen) {
    for (uint32_t i = 0; i < ms->dialogs.slab.cap; i++) {
        if (!tg_slab_live(&ms->dialogs.slab, i))
            continue;
        struct tg_dialog *d = tg_slab_at(&ms->dialogs.slab, i);
        if (d->conn_slot == slot && d->conn_gen == gen)
            end_call(ms, d, "connection_closed");
    }
}

// ---------------------------------------------------------------------------------------------
// Reading the message.

// is_sdp says whether the message carries an SDP body (Content-Type application/sdp).
static int is_sdp(const struct tg_sip_msg *m, const uint8_t *buf) {
    static const char k_type[] = "application/sdp";
    const size_t n = sizeof(k_type) - 1;
    const char *v;
    size_t len;
    if (m->body_len == 0 || !tg_sip_value(m, buf, TG_SIP_H_CONTENT_TYPE, &v, &len) || len < n ||
        strncasecmp(v, k_type, n) != 0)
        return 0;
    return len == n || v[n] == ';' || v[n] == ' ' || v[n] == '\t';
}

// cseq reads "NUMBER METHOD".
static int cseq(const struct tg_sip_msg *m, const uint8_t *buf, uint32_t *num,
                enum tg_sip_method *method) {
    const char *v;
    size_t len, i = 0;
    if (!tg_sip_value(m, buf, TG_SIP_H_CSEQ, &v, &len))
        return 0;
    uint64_t n = 0;
    while (i < len && v[i] >= '0' && v[i] <= '9' && n <= UINT32_MAX)
        n = n * 10 + (uint64_t)(v[i++] - '0');
    if (i == 0 || n > UINT32_MAX)
        return 0;
    while (i < len && (v[i] == ' ' || v[i] == '\t'))
        i++;
    *num = (uint32_t)n;
    *method = TG_SIP_M_OTHER;
    for (int k = 1; k < TG_SIP_M_NUM; k++) {
        const char *name = tg_sip_method_name((enum tg_sip_method)k);
        if (strlen(name) == len - i && memcmp(name, v + i, len - i) == 0)
            *method = (enum tg_sip_method)k;
    }
    return 1;
}

// ---------------------------------------------------------------------------------------------
// Offer and answer.

// stream_session returns the session of stream |i| of |d|, opened if it has none.
static struct tg_msess *stream_session(struct tg_mediasig *ms, struct tg_dialog *d, size_t i) {
    struct tg_dstream *ds = &d->st[i];
    struct tg_msess *s = ds->slot != TG_NIL ? tg_media_get(&ms->media, ds->slot, ds->gen) : NULL;
    if (s != NULL)
        return s;
    ds->slot = tg_media_open(&ms->media, tg_dialog_cookie(&ms->dialogs, d), &ds->gen);
    return ds->slot != TG_NIL ? tg_media_get(&ms->media, ds->slot, ds->gen) : NULL;
}

static void close_stream(struct tg_mediasig *ms, struct tg_dstream *ds) {
    if (ds->slot != TG_NIL && tg_media_get(&ms->media, ds->slot, ds->gen) != NULL)
        tg_media_close(&ms->media, ds->slot);
    ds->slot = TG_NIL;
}

// our_crypto sets tlsgate's key toward the provider for stream |ds| (session |s|): the one
// already made for this CSeq when a response repeats its answer, else a fresh one.
static int our_crypto(struct tg_mediasig *ms, struct tg_dstream *ds, struct tg_msess *s,
                      int is_offer, int is_response, uint32_t num, struct tg_sdp_crypto *out) {
    if (is_response && ds->ours_valid && ds->ours_cseq == num) {
        *out = ds->ours;
        return 1;
    }
    enum tg_srtp_suite su = (enum tg_srtp_suite)ds->suite;
    uint32_t tag = ds->tag;
    if (is_offer || su == TG_SRTP_NONE) {
        su = (enum tg_srtp_suite)ms->cfg->media_suites[0];
        tag = 1;
    }
    memset(out, 0, sizeof(*out));
    out->tag = tag;
    out->usable = 1;
    if (!tg_srtp_params_random(&out->params, su) || !tg_media_set_tx_key(s, &out->params))
        return 0;
    ds->suite = (uint8_t)su;
    ds->ours = *out;
    ds->ours_cseq = num;
    ds->ours_valid = 1;
    return 1;
}

struct sdp_msg {
    enum tg_dlg_side side; // where it came from
    int is_offer, is_response;
    uint32_t cseq;
    const char *body;
    size_t len;
    const uint8_t *msg;  // the whole message (its index: the hook's |m|)
    const uint8_t *sent; // the message as rewritten for the other side
    uint32_t sent_len;
};

// stream fills |mo| for section |i| of |sdp| (relayed) and sets its session up. Returns 0
// when the session or a key cannot be made.
static int stream(struct tg_mediasig *ms, struct tg_dialog *d, const struct sdp_msg *sm,
                  const struct tg_sdp *sdp, size_t i, int idx, struct tg_sdp_media_out *mo) {
    const struct tg_sdp_media *md = &sdp->media[i];
    struct tg_dstream *ds = &d->st[i];
    struct tg_msess *s = stream_session(ms, d, i);
    if (s == NULL)
        return 0;
    int from_pbx = sm->side == TG_DLG_PBX;
    if (from_pbx)
        ds->pbx_mux = (uint8_t)md->rtcp_mux;
    else
        ds->prov_mux = (uint8_t)md->rtcp_mux;
    struct sockaddr_storage peer;
    int have = tg_mplan_peer(md, &peer);
    tg_media_set_peer(&ms->media, s, from_pbx, have ? (const struct sockaddr *)&peer : NULL,
                      md->rtcp_port, md->rtcp_mux, tg_mplan_receives(md));
    if (!sm->is_offer) { // the exchange is complete: rtcp-mux where both sides said so
        s->prov.mux = s->pbx.mux = (uint8_t)(ds->prov_mux && ds->pbx_mux);
    }
    if (!from_pbx) {
        const struct tg_sdp_crypto *c = &md->crypto[idx];
        if (!tg_media_set_rx_key(s, &c->params))
            return 0;
        if (sm->is_offer) {
            ds->suite = (uint8_t)c->params.suite;
            ds->tag = c->tag;
        }
        mo->secure = 0;
    } else {
        mo->secure = 1;
        if (!our_crypto(ms, ds, s, sm->is_offer, sm->is_response, sm->cseq, &mo->crypto))
            return 0;
    }
    mo->port = s->port[from_pbx ? 0 : 1];
    mo->rtcp_mux = md->rtcp_mux;
    mo->rtcp_port = md->rtcp_mux ? 0 : (uint16_t)(mo->port + 1);
    return 1;
}

// process_sdp rewrites the SDP of |sm| for the other side into |out|. Returns REPLACE, or
// REFUSE with |*status| (0 for a response: dropped).
static enum tg_sip_body process_sdp(struct tg_mediasig *ms, struct tg_dialog *d,
                                    const struct sdp_msg *sm, uint8_t *out, uint32_t cap,
                                    uint32_t *out_len, uint16_t *status) {
    struct tg_sdp sdp;
    char why[128] = "";
    *status = 0;
    if (tg_sdp_parse(&sdp, sm->body, sm->len, why, sizeof(why)) != TG_SDP_OK) {
        tg_counter_add(&ms->ctr->sdp_errors, 1);
        TG_DEBUG("media_sdp_refused", "worker=%u why=\"%s\"", ms->worker, why);
        *status = sm->is_response ? 0 : 400;
        return TG_SIP_BODY_REFUSE;
    }
    int idx[TG_SDP_MAX_MEDIA];
    if (sm->side == TG_DLG_PROVIDER) {
        uint8_t offered[TG_SDP_MAX_MEDIA] = {0};
        for (size_t i = 0; i < TG_DIALOG_STREAMS && i < TG_SDP_MAX_MEDIA; i++)
            offered[i] = d->st[i].suite;
        if (!tg_mplan_provider_crypto(&sdp, sm->is_offer, ms->cfg->media_suites,
                                      ms->cfg->media_num_suites, offered, idx)) {
            tg_counter_add(&ms->ctr->crypto_refused, 1);
            TG_INFO("media_crypto_refused", "worker=%u offer=%d", ms->worker, sm->is_offer);
            *status = sm->is_response ? 0 : 488;
            return TG_SIP_BODY_REFUSE;
        }
    }
    struct tg_sdp_media_out mo[TG_SDP_MAX_MEDIA];
    memset(mo, 0, sizeof(mo));
    for (size_t i = 0; i < sdp.num_media; i++) {
        const struct tg_sdp_media *md = &sdp.media[i];
        int relay = i < TG_DIALOG_STREAMS && tg_mplan_relayable(md) &&
                    (sm->side == TG_DLG_PBX || idx[i] >= 0);
        if (!relay) {
            if (i < TG_DIALOG_STREAMS && md->port == 0)
                close_stream(ms, &d->st[i]); // declined: its ports go back
            continue;                        // port 0: declined on the far side too
        }
        if (!stream(ms, d, sm, &sdp, i, sm->side == TG_DLG_PBX ? -1 : idx[i], &mo[i])) {
            *status = sm->is_response ? 0 : 503;
            return TG_SIP_BODY_REFUSE;
        }
    }
    const char *addr = sm->side == TG_DLG_PBX ? ms->cfg->media_public : ms->cfg->media_internal;
    size_t n = 0;
    if (tg_sdp_write(&sdp, sm->body, sm->len, addr, mo, (char *)out, cap, &n) != TG_SDP_OK) {
        *status = sm->is_response ? 0 : 500;
        return TG_SIP_BODY_REFUSE;
    }
    *out_len = (uint32_t)n;
    d->offer_from = sm->is_offer ? (uint8_t)sm->side : TG_DLG_NONE;
    return TG_SIP_BODY_REPLACE;
}

// ---------------------------------------------------------------------------------------------
// The hook.

static enum tg_sip_body refuse(uint16_t *status, uint16_t code) {
    *status = code;
    return TG_SIP_BODY_REFUSE;
}

// new_call makes the dialog of an initial INVITE. NULL with |*status| when refused.
static struct tg_dialog *new_call(struct tg_mediasig_arg *a, const char *cid, size_t cid_len,
                                  uint16_t *status) {
    struct tg_mediasig *ms = a->ms;
    if (cid_len > TG_CALL_ID_MAX) {
        *status = 400;
        return NULL;
    }
    if (!tg_media_call_begin(&ms->media)) {
        *status = 503;
        return NULL;
    }
    struct tg_dialog *d = tg_dialog_add(&ms->dialogs, cid, cid_len);
    if (d == NULL) {
        tg_media_call_end(&ms->media);
        tg_counter_add(&ms->ctr->port_exhausted, 1);
        *status = 503;
        return NULL;
    }
    d->has_call = 1;
    d->conn_slot = a->conn_slot;
    d->conn_gen = a->conn_gen;
    if (ms->dir != NULL) {
        d->dir_hash = tg_calldir_hash(ms->dir, cid, cid_len);
        if (!tg_calldir_put(ms->dir, ms->worker, d->dir_hash, tg_dialog_cookie(&ms->dialogs, d)))
            d->dir_hash = 0;
    }
    return d;
}

// keep_invite stores the initial INVITE |sm| as it goes out, for its CANCEL (fail_early).
static void keep_invite(struct tg_dialog *d, const struct sdp_msg *sm) {
    struct tg_sip_header hdrs[128];
    struct tg_sip_msg m;
    if (tg_sip_scan(NULL, &m, hdrs, 128, sm->sent, sm->sent_len) == TG_SIP_MESSAGE &&
        m.is_request && m.method == TG_SIP_M_INVITE)
        tg_dialog_id_invite(&d->id, &m, sm->sent);
}

// on_ending_request handles a request of a call tlsgate has ended itself: the ACK of the
// response it failed back is absorbed (the far side had its own), a BYE ends the dialog here
// and goes on (the far side answers it), an SDP offer finds no call (481).
static enum tg_sip_body on_ending_request(struct tg_mediasig *ms, struct tg_dialog *d,
                                          const struct sdp_msg *sm, int sdp,
                                          const struct tg_sip_msg *m, uint16_t *status) {
    if (m->method == TG_SIP_M_ACK)
        return sdp || (d->fail_side != TG_DLG_NONE && sm->cseq == d->fail_cseq &&
                       sm->side != d->fail_side)
                   ? refuse(status, 481) // an ACK is dropped
                   : TG_SIP_BODY_KEEP;
    if (m->method == TG_SIP_M_BYE) {
        end_call(ms, d, "bye");
        return sdp ? refuse(status, 488) : TG_SIP_BODY_KEEP;
    }
    return sdp ? refuse(status, 481) : TG_SIP_BODY_KEEP;
}

static enum tg_sip_body on_request(struct tg_mediasig_arg *a, struct tg_dialog *d,
                                   struct sdp_msg *sm, int sdp, const struct tg_sip_msg *m,
                                   const char *cid, size_t cid_len, uint8_t *out, uint32_t cap,
                                   uint32_t *out_len, uint16_t *status) {
    struct tg_mediasig *ms = a->ms;
    enum tg_dlg_side other = sm->side == TG_DLG_PROVIDER ? TG_DLG_PBX : TG_DLG_PROVIDER;
    if (d != NULL && d->ending)
        return on_ending_request(ms, d, sm, sdp, m, status);
    if (d != NULL && m->method != TG_SIP_M_ACK && m->method != TG_SIP_M_CANCEL &&
        sm->cseq > d->id.cseq[sm->side - 1])
        d->id.cseq[sm->side - 1] = sm->cseq; // tlsgate's own requests for this side go above
    if (d != NULL &&
        ((m->method == TG_SIP_M_INVITE && d->confirmed) || m->method == TG_SIP_M_UPDATE))
        tg_dialog_id_refresh(&d->id, sm->side, m, sm->msg); // a target refresh (RFC 3261 12.2.2)
    switch (m->method) {
    case TG_SIP_M_BYE:
        if (d != NULL)
            end_call(ms, d, "bye");
        else
            post_owner(ms, cid, cid_len, OP_BYE);
        return sdp ? refuse(status, 488) : TG_SIP_BODY_KEEP;
    case TG_SIP_M_CANCEL:
        if (d != NULL && !d->confirmed)
            end_call(ms, d, "cancel");
        else if (d == NULL)
            post_owner(ms, cid, cid_len, OP_CANCEL);
        return TG_SIP_BODY_KEEP;
    case TG_SIP_M_INVITE: {
        int created = 0;
        if (d == NULL) {
            // A call another worker owns moves here with this offer (see mediasig.h), or with
            // the offer the 2xx will carry (a re-INVITE without SDP): never two dialogs of one
            // call, the old one timing out (and sending its BYEs) under the live one.
            int moved = post_owner(ms, cid, cid_len, OP_MOVED);
            d = new_call(a, cid, cid_len, status);
            if (d == NULL)
                return TG_SIP_BODY_REFUSE;
            d->confirmed = (uint8_t)moved;
            created = !moved;
            if (created) {
                tg_dialog_id_caller(&d->id, sm->side, sm->cseq, m, sm->msg);
                keep_invite(d, sm);
            }
        }
        d->invite_cseq = sm->cseq;
        d->invite_offer = (uint8_t)sdp;
        if (!sdp)
            return TG_SIP_BODY_KEEP; // a late offer: the 2xx brings it
        sm->is_offer = 1;
        enum tg_sip_body b = process_sdp(ms, d, sm, out, cap, out_len, status);
        if (b != TG_SIP_BODY_REPLACE && created)
            end_call(ms, d, "refused");
        return b;
    }
    case TG_SIP_M_UPDATE:
    case TG_SIP_M_PRACK:
    case TG_SIP_M_ACK:
        if (!sdp)
            return TG_SIP_BODY_KEEP;
        if (d == NULL && m->method == TG_SIP_M_UPDATE && post_owner(ms, cid, cid_len, OP_MOVED)) {
            d = new_call(a, cid, cid_len, status);
            if (d == NULL)
                return TG_SIP_BODY_REFUSE;
            d->confirmed = 1;
        }
        if (d == NULL && m->method != TG_SIP_M_UPDATE)
            post_owner(ms, cid, cid_len, OP_ANSWER); // the owner ends the call (lost_answer)
        if (d == NULL)
            return refuse(status, 481); // an ACK is dropped
        sm->is_offer =
            m->method == TG_SIP_M_UPDATE || (m->method == TG_SIP_M_PRACK && d->offer_from != other);
        return process_sdp(ms, d, sm, out, cap, out_len, status);
    default:
        // SDP in any other request is not a media session tlsgate anchors: never forwarded.
        return sdp ? refuse(status, 488) : TG_SIP_BODY_KEEP;
    }
}

// fail_answer fails back the 2xx of |sm| to an INVITE whose SDP tlsgate cannot use: the side
// that sent the INVITE gets 488 instead (sipconn builds it), the side that answered, whose
// dialog is confirmed now and who retransmits the 2xx until it is ACKed, gets tlsgate's ACK
// and a BYE; a re-INVITE so answered ends the whole call, the other side gets a BYE too.
static enum tg_sip_body fail_answer(struct tg_mediasig *ms, struct tg_dialog *d,
                                    const struct sdp_msg *sm, const struct tg_sip_msg *m,
                                    uint16_t *status) {
    uint8_t pending = TG_OWN_ACK | (sm->side == TG_DLG_PROVIDER ? TG_OWN_BYE_PROV : TG_OWN_BYE_PBX);
    if (d->confirmed)
        pending |= sm->side == TG_DLG_PROVIDER ? TG_OWN_BYE_PBX : TG_OWN_BYE_PROV;
    tg_counter_add(&ms->ctr->answers_failed, 1);
    TG_INFO("media_answer_failed", "worker=%u from=%s code=%u cseq=%u reinvite=%u", ms->worker,
            sm->side == TG_DLG_PROVIDER ? "provider" : "pbx", (unsigned)m->code, sm->cseq,
            (unsigned)d->confirmed);
    d->fail_side = (uint8_t)sm->side;
    d->fail_cseq = sm->cseq;
    end_call_own(ms, d, "answer_refused", pending, WHY_ANSWER);
    *status = 488;
    return TG_SIP_BODY_REFUSE;
}

// fail_early fails back the 18x of |sm| to the initial INVITE whose SDP tlsgate cannot use: the
// side that sent the INVITE gets 488 instead (sipconn builds it; the ACK it then sends is
// absorbed), the side that answered a CANCEL of that INVITE, whose 200 and the INVITE's 487
// are absorbed, the 487 ACKed by tlsgate (a 2xx that crossed the CANCEL gets an ACK and a BYE,
// on_ending_response). Returns 0 when the INVITE could not be kept (it did not fit): the 18x is
// then dropped and the 2xx, repeating its answer, is failed back.
static int fail_early(struct tg_mediasig *ms, struct tg_dialog *d, const struct sdp_msg *sm,
                      const struct tg_sip_msg *m) {
    if (!d->id.invite || ms->send_own == NULL)
        return 0;
    tg_counter_add(&ms->ctr->answers_failed, 1);
    TG_INFO("media_answer_failed", "worker=%u from=%s code=%u cseq=%u reinvite=0 cancel=1",
            ms->worker, sm->side == TG_DLG_PROVIDER ? "provider" : "pbx", (unsigned)m->code,
            sm->cseq);
    d->fail_side = (uint8_t)sm->side;
    d->fail_cseq = sm->cseq;
    d->cancelled = 1;
    end_call_own(ms, d, "answer_refused", TG_OWN_CANCEL, WHY_ANSWER);
    return 1;
}

// on_ending_response handles a response in a call tlsgate has ended itself: from the side whose
// answer it failed back, to that INVITE, a 2xx is ACKed (again: retransmitted until ACKed) and
// never forwarded, and one that crossed tlsgate's CANCEL gets a BYE too; after a CANCEL
// anything else is absorbed, the final failure (487) ACKed. The rest passes, without SDP.
static enum tg_sip_body on_ending_response(struct tg_mediasig_arg *a, struct tg_dialog *d,
                                           const struct sdp_msg *sm, int sdp,
                                           const struct tg_sip_msg *m, int is_2xx) {
    struct tg_mediasig *ms = a->ms;
    if (sm->side != d->fail_side || sm->cseq != d->fail_cseq || d->fail_side == TG_DLG_NONE)
        return sdp ? TG_SIP_BODY_REFUSE : TG_SIP_BODY_KEEP;
    if (is_2xx) {
        uint8_t more = TG_OWN_ACK;
        if (d->cancelled == 1) { // the callee answered before our CANCEL reached it
            tg_dialog_id_answer(&d->id, sm->side, m, sm->msg,
                                a->rw == NULL                 ? NULL
                                : sm->side == TG_DLG_PROVIDER ? a->rw->fqdn
                                                              : a->rw->inside_host);
            more |= sm->side == TG_DLG_PROVIDER ? TG_OWN_BYE_PROV : TG_OWN_BYE_PBX;
            d->cancelled = 2;
            d->ended_at = ms->loop->now; // lingers for the retransmissions
        }
        d->pending |= can_send(d, more);
        if (can_send(d, more) != more)
            TG_WARN("media_no_bye", "worker=%u reason=2xx_after_cancel complete=%u overflow=%u",
                    ms->worker, (unsigned)d->id.complete, (unsigned)d->id.overflow);
        return TG_SIP_BODY_REFUSE;
    }
    if (!d->cancelled)
        return sdp ? TG_SIP_BODY_REFUSE : TG_SIP_BODY_KEEP;
    if (m->code >= 300 && d->cancelled == 1) {
        const char *to;
        size_t to_len;
        if (tg_sip_value(m, sm->msg, TG_SIP_H_TO, &to, &to_len) &&
            tg_dialog_id_set(&d->id, TG_DID_TO, to, to_len))
            d->pending |= TG_OWN_ACK_FINAL;
        d->cancelled = 2;
        d->ended_at = ms->loop->now;
        TG_INFO("media_cancelled", "worker=%u code=%u acked=%u", ms->worker, (unsigned)m->code,
                (unsigned)((d->pending & TG_OWN_ACK_FINAL) != 0));
    }
    return TG_SIP_BODY_REFUSE; // a 1xx, the 487: the side it would go to has its 488
}

static enum tg_sip_body on_response(struct tg_mediasig_arg *a, struct tg_dialog *d,
                                    struct sdp_msg *sm, int sdp, const struct tg_sip_msg *m,
                                    enum tg_sip_method method, uint8_t *out, uint32_t cap,
                                    uint32_t *out_len, uint16_t *status) {
    struct tg_mediasig *ms = a->ms;
    *status = 0;
    if (d == NULL)
        return sdp ? TG_SIP_BODY_REFUSE : TG_SIP_BODY_KEEP;
    int is_2xx = method == TG_SIP_M_INVITE && m->code >= 200 && m->code < 300;
    if (d->ending && method == TG_SIP_M_INVITE)
        return on_ending_response(a, d, sm, sdp, m, is_2xx);
    if (d->ending)
        return sdp ? TG_SIP_BODY_REFUSE : TG_SIP_BODY_KEEP;
    if (is_2xx && !d->confirmed && sm->cseq == d->invite_cseq &&
        sm->side != (enum tg_dlg_side)d->id.caller)
        tg_dialog_id_answer(&d->id, sm->side, m, sm->msg,
                            a->rw == NULL                 ? NULL
                            : sm->side == TG_DLG_PROVIDER ? a->rw->fqdn
                                                          : a->rw->inside_host);
    if (m->code >= 200 && m->code < 300 &&
        ((method == TG_SIP_M_INVITE && d->confirmed) || method == TG_SIP_M_UPDATE))
        tg_dialog_id_refresh(&d->id, sm->side, m, sm->msg); // the answerer's (12.2.1.2)
    if (method == TG_SIP_M_INVITE && sm->cseq == d->invite_cseq && m->code >= 300) {
        if (!d->confirmed) {
            end_call(ms, d, "rejected");
        } else {
            d->offer_from = TG_DLG_NONE; // the re-INVITE's offer is void
        }
        return sdp ? TG_SIP_BODY_REFUSE : TG_SIP_BODY_KEEP;
    }
    if (!sdp)
        goto done;
    if (m->code < 101 || m->code >= 300 ||
        (method != TG_SIP_M_INVITE && method != TG_SIP_M_UPDATE && method != TG_SIP_M_PRACK))
        return TG_SIP_BODY_REFUSE;
    if (method == TG_SIP_M_INVITE)
        sm->is_offer = !d->invite_offer; // a late offer comes in the 18x/2xx
    else
        sm->is_offer = d->offer_from == TG_DLG_NONE;
    enum tg_sip_body b = process_sdp(ms, d, sm, out, cap, out_len, status);
    if (b != TG_SIP_BODY_REPLACE && is_2xx && sm->cseq == d->invite_cseq)
        return fail_answer(ms, d, sm, m, status);
    if (b != TG_SIP_BODY_REPLACE && method == TG_SIP_M_INVITE && m->code < 200 && !d->confirmed &&
        sm->cseq == d->invite_cseq && fail_early(ms, d, sm, m))
        *status = 488;
    if (b != TG_SIP_BODY_REPLACE)
        return b;
done:
    if (method == TG_SIP_M_INVITE && m->code >= 200 && m->code < 300)
        d->confirmed = 1;
    return sdp ? TG_SIP_BODY_REPLACE : TG_SIP_BODY_KEEP;
}

enum tg_sip_body tg_mediasig_body(void *arg, enum tg_sip_side from, const struct tg_sip_msg *m,
                                  const uint8_t *buf, const uint8_t *sent, uint32_t sent_len,
                                  uint8_t *out, uint32_t cap, uint32_t *out_len, uint16_t *status) {
    struct tg_mediasig_arg *a = arg;
    int sdp = is_sdp(m, buf);
    const char *cid;
    size_t cid_len;
    uint32_t num;
    enum tg_sip_method method;
    *status = 0;
    if (!tg_sip_value(m, buf, TG_SIP_H_CALL_ID, &cid, &cid_len) || !cseq(m, buf, &num, &method))
        return sdp ? refuse(status, m->is_request ? 400 : 0) : TG_SIP_BODY_KEEP;
    struct tg_dialog *d = tg_dialog_find(&a->ms->dialogs, cid, cid_len);
    struct sdp_msg sm = {
        .side = from == TG_SIP_SIDE_PROVIDER ? TG_DLG_PROVIDER : TG_DLG_PBX,
        .is_response = !m->is_request,
        .cseq = num,
        .body = (const char *)buf + m->head_len,
        .len = m->body_len,
        .msg = buf,
        .sent = sent,
        .sent_len = sent_len,
    };
    if (m->is_request)
        return on_request(a, d, &sm, sdp, m, cid, cid_len, out, cap, out_len, status);
    return on_response(a, d, &sm, sdp, m, method, out, cap, out_len, status);
}
