// The pure parts of media anchoring: port allocator, dialog table, offer/answer decisions
// (see include/tlsgate/mediaplan.h).
#include "tlsgate/mediaplan.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/siphash.h>

#include "tlsgate/siporig.h"
#include "tlsgate/siprw.h"

// ---------------------------------------------------------------------------------------------
// Port allocator.

uint32_t tg_portalloc_slice(uint16_t min, uint16_t max, unsigned worker, unsigned num_workers,
                            uint16_t *out_base) {
    *out_base = 0;
    if (num_workers == 0 || worker >= num_workers || max < min)
        return 0;
    uint64_t total = ((uint64_t)max - min + 1) / 2; // whole pairs: RTCP of the last fits
    uint64_t from = total * worker / num_workers, to = total * (worker + 1) / num_workers;
    *out_base = (uint16_t)(min + 2 * from);
    return (uint32_t)(to - from);
}

int tg_portalloc_init(struct tg_portalloc *pa, uint16_t base, uint32_t pairs) {
    memset(pa, 0, sizeof(*pa));
    pa->used = calloc(pairs > 0 ? pairs : 1, 1);
    if (pa->used == NULL)
        return 0;
    pa->base = base;
    pa->pairs = pairs;
    return 1;
}

void tg_portalloc_cleanup(struct tg_portalloc *pa) {
    free(pa->used);
    memset(pa, 0, sizeof(*pa));
}

uint16_t tg_portalloc_take(struct tg_portalloc *pa) {
    if (pa->in_use >= pa->pairs)
        return 0;
    for (uint32_t i = 0; i < pa->pairs; i++) {
        uint32_t p = pa->next;
        pa->next = p + 1 < pa->pairs ? p + 1 : 0;
        if (!pa->used[p]) {
            pa->used[p] = 1;
            pa->in_use++;
            return (uint16_t)(pa->base + 2 * p);
        }
    }
    return 0;
}

void tg_portalloc_give(struct tg_portalloc *pa, uint16_t port) {
    if (port < pa->base || (port - pa->base) % 2 != 0)
        return;
    uint32_t p = (uint32_t)(port - pa->base) / 2;
    if (p >= pa->pairs || !pa->used[p])
        return;
    pa->used[p] = 0;
    pa->in_use--;
}

// ---------------------------------------------------------------------------------------------
// Dialog table.

int tg_dialogs_init(struct tg_dialogs *t, uint32_t cap, const uint64_t key[2]) {
    memset(t, 0, sizeof(*t));
    uint32_t nb = 16;
    while (nb < cap * 2 && nb < (1u << 24))
        nb *= 2;
    t->buckets = malloc(nb * sizeof(*t->buckets));
    if (t->buckets == NULL || !tg_slab_init(&t->slab, sizeof(struct tg_dialog), cap)) {
        free(t->buckets);
        t->buckets = NULL;
        return 0;
    }
    for (uint32_t i = 0; i < nb; i++)
        t->buckets[i] = TG_NIL;
    t->mask = nb - 1;
    t->key[0] = key[0];
    t->key[1] = key[1];
    return 1;
}

void tg_dialogs_cleanup(struct tg_dialogs *t) {
    tg_slab_cleanup(&t->slab);
    free(t->buckets);
    t->buckets = NULL;
}

static uint32_t bucket_of(const struct tg_dialogs *t, const char *cid, size_t len) {
    return (uint32_t)SIPHASH_24(t->key, (const uint8_t *)cid, len) & t->mask;
}

struct tg_dialog *tg_dialog_find(struct tg_dialogs *t, const char *cid, size_t len) {
    if (len == 0 || len > TG_CALL_ID_MAX)
        return NULL;
    for (uint32_t i = t->buckets[bucket_of(t, cid, len)]; i != TG_NIL;) {
        struct tg_dialog *d = tg_slab_at(&t->slab, i);
        if (d->call_id_len == len && memcmp(d->call_id, cid, len) == 0)
            return d;
        i = d->hnext;
    }
    return NULL;
}

struct tg_dialog *tg_dialog_add(struct tg_dialogs *t, const char *cid, size_t len) {
    if (len == 0 || len > TG_CALL_ID_MAX)
        return NULL;
    uint32_t slot;
    struct tg_dialog *d = tg_slab_alloc(&t->slab, &slot);
    if (d == NULL)
        return NULL;
    memcpy(d->call_id, cid, len);
    d->call_id_len = (uint16_t)len;
    for (size_t i = 0; i < TG_DIALOG_STREAMS; i++)
        d->st[i].slot = TG_NIL;
    uint32_t b = bucket_of(t, cid, len);
    d->hnext = t->buckets[b];
    t->buckets[b] = slot;
    return d;
}

int tg_dialog_id_set(struct tg_dialog_id *id, enum tg_did_field f, const char *v, size_t len) {
    if (len > sizeof(id->buf) - id->used) {
        id->overflow = 1;
        return 0;
    }
    memcpy(id->buf + id->used, v, len);
    id->off[f] = id->used;
    id->len[f] = (uint16_t)len;
    id->used = (uint16_t)(id->used + len);
    return 1;
}

const char *tg_dialog_id_get(const struct tg_dialog_id *id, enum tg_did_field f, uint16_t *len) {
    *len = id->len[f];
    return id->buf + id->off[f];
}

void tg_dialog_remove(struct tg_dialogs *t, struct tg_dialog *d) {
    uint32_t slot = tg_slab_index(&t->slab, d);
    uint32_t *link = &t->buckets[bucket_of(t, d->call_id, d->call_id_len)];
    while (*link != TG_NIL && *link != slot)
        link = &((struct tg_dialog *)tg_slab_at(&t->slab, *link))->hnext;
    if (*link == slot)
        *link = d->hnext;
    tg_slab_free(&t->slab, slot);
}

uint64_t tg_dialog_cookie(const struct tg_dialogs *t, const struct tg_dialog *d) {
    uint32_t slot = tg_slab_index(&t->slab, d);
    return (uint64_t)slot | ((uint64_t)tg_slab_gen(&t->slab, slot) << 32);
}

struct tg_dialog *tg_dialog_by_cookie(struct tg_dialogs *t, uint64_t cookie) {
    return tg_slab_lookup(&t->slab, (uint32_t)cookie, (uint32_t)(cookie >> 32));
}

// ---------------------------------------------------------------------------------------------
// The dialog's identity (what tlsgate needs to send requests in it itself).

static int is_ws(char ch) {
    return ch == ' ' || ch == '\t';
}

// uri_of finds the URI of the first element of a Contact or Record-Route value [v, v + len), as
// the rewriter reads it (siprw.h): the far side sees the element tlsgate saw.
static int uri_of(const char *v, size_t len, const char **out, size_t *out_len) {
    const struct tg_cur c = {(const uint8_t *)v, len};
    size_t off, end;
    if (!tg_sip_elem_uri(&c, 0, tg_sip_elem_end(&c, 0, len), &off, &end))
        return 0;
    *out = v + off;
    *out_len = end - off;
    return 1;
}

#define MAX_RR 16 // Record-Route entries tlsgate keeps of a dialog; more: no requests of its own

struct span_ {
    const char *p;
    size_t n;
};

// rr_entries splits every header |hid| (Record-Route, Route) of |m| into its entries, as the
// rewriter does (tg_sip_elem_end). Returns their number, or -1 over MAX_RR.
static int rr_entries(const struct tg_sip_msg *m, const uint8_t *buf, enum tg_sip_hdr hid,
                      struct span_ *out) {
    int num = 0;
    for (unsigned k = 0; k < m->num_headers; k++) {
        const struct tg_sip_header *h = &m->headers[k];
        if (h->id != hid)
            continue;
        const char *v = (const char *)buf + h->value.off;
        const struct tg_cur c = {(const uint8_t *)v, h->value.len};
        for (size_t i = 0; i <= c.len;) {
            size_t a = i, b = tg_sip_elem_end(&c, i, c.len);
            i = b + 1;
            while (a < b && is_ws(v[a]))
                a++;
            while (b > a && is_ws(v[b - 1]))
                b--;
            if (b == a)
                continue;
            if (num == MAX_RR)
                return -1;
            out[num++] = (struct span_){v + a, b - a};
        }
    }
    return num;
}

// join writes |n| entries (backwards when |rev|) separated by ", " into |out| (|cap| bytes).
// Returns the length, or -1 when it does not fit.
static long join(const struct span_ *e, int n, int rev, char *out, size_t cap) {
    size_t len = 0;
    for (int k = 0; k < n; k++) {
        const struct span_ *x = &e[rev ? n - 1 - k : k];
        size_t need = x->n + (k > 0 ? 2 : 0);
        if (len + need > cap)
            return -1;
        if (k > 0) {
            memcpy(out + len, ", ", 2);
            len += 2;
        }
        memcpy(out + len, x->p, x->n);
        len += x->n;
    }
    return (long)len;
}

// contact_uri finds the URI of the Contact of |m|: 0 when there is none that can stand in a
// start line.
static int contact_uri(const struct tg_sip_msg *m, const uint8_t *buf, const char **u, size_t *n) {
    const char *v;
    size_t len;
    return tg_sip_value(m, buf, TG_SIP_H_CONTACT, &v, &len) && uri_of(v, len, u, n) &&
           tg_sip_sealable((const uint8_t *)*u, *n);
}

static enum tg_did_field target_of(enum tg_dlg_side side) {
    return side == TG_DLG_PROVIDER ? TG_DID_TARGET_PROV : TG_DID_TARGET_PBX;
}

// set_contact stores the URI of the Contact of |m| as |side|'s remote target.
static void set_contact(struct tg_dialog_id *id, enum tg_dlg_side side, const struct tg_sip_msg *m,
                        const uint8_t *buf) {
    const char *u;
    size_t n;
    if (!contact_uri(m, buf, &u, &n)) {
        id->overflow = 1; // no remote target that can stand in a start line
        return;
    }
    tg_dialog_id_set(id, target_of(side), u, n);
}

// replace_field puts |len| bytes at |v| in place of field |f|: the old value's bytes are taken
// out (the fields after it move down), so that a field replaced again and again (a remote
// target refreshed by every re-INVITE) never eats the buffer. Returns 0, changing nothing, when
// the new value does not fit.
static int replace_field(struct tg_dialog_id *id, enum tg_did_field f, const char *v, size_t len) {
    size_t old = id->len[f], at = id->off[f];
    if (len > sizeof(id->buf) - (id->used - old))
        return 0;
    if (old > 0) {
        memmove(id->buf + at, id->buf + at + old, id->used - at - old);
        for (int g = 0; g < TG_DID_NUM; g++)
            if (g != (int)f && id->off[g] > at)
                id->off[g] = (uint16_t)(id->off[g] - old);
        id->used = (uint16_t)(id->used - old);
        id->len[f] = 0;
    }
    return tg_dialog_id_set(id, f, v, len);
}

void tg_dialog_id_refresh(struct tg_dialog_id *id, enum tg_dlg_side side,
                          const struct tg_sip_msg *m, const uint8_t *buf) {
    const char *u;
    size_t n;
    if (side != TG_DLG_PROVIDER && side != TG_DLG_PBX)
        return;
    if (tg_sip_value(m, buf, TG_SIP_H_CONTACT, &u, &n) == 0)
        return; // no Contact: the target stays (RFC 3261 12.2.1.2, 12.2.2: "if present")
    if (!contact_uri(m, buf, &u, &n) || !replace_field(id, target_of(side), u, n))
        id->overflow = 1; // the old target is stale: better no BYE than one to the wrong place
}

void tg_dialog_id_answer(struct tg_dialog_id *id, enum tg_dlg_side callee,
                         const struct tg_sip_msg *m, const uint8_t *buf, const char *ours) {
    const char *v;
    size_t len;
    if (id->complete)
        return;
    id->complete = 1;
    if (!tg_sip_value(m, buf, TG_SIP_H_FROM, &v, &len) ||
        !tg_dialog_id_set(id, TG_DID_FROM, v, len) ||
        !tg_sip_value(m, buf, TG_SIP_H_TO, &v, &len) || !tg_dialog_id_set(id, TG_DID_TO, v, len)) {
        id->overflow = 1;
        return;
    }
    set_contact(id, callee, m, buf);
    struct span_ e[MAX_RR];
    int n = rr_entries(m, buf, TG_SIP_H_RECORD_ROUTE, e);
    if (n < 0) {
        id->overflow = 1;
        return;
    }
    int at = -1;
    for (int k = 0; k < n && at < 0; k++) {
        const struct tg_cur c = {(const uint8_t *)e[k].p, e[k].n};
        size_t off, end;
        if (tg_sip_elem_uri(&c, 0, c.len, &off, &end) && tg_sip_uri_host_is(&c, off, end, ours))
            at = k;
    }
    if (at < 0)
        return; // no entry of ours (a peer that drops Record-Route): no route sets
    char tmp[TG_DIALOG_ID_MAX];
    long r = join(e, at, 1, tmp, sizeof(tmp));
    int prov = callee == TG_DLG_PROVIDER;
    if (r < 0 ||
        !tg_dialog_id_set(id, prov ? TG_DID_ROUTE_PROV : TG_DID_ROUTE_PBX, tmp, (size_t)r)) {
        id->overflow = 1;
        return;
    }
    r = join(e + at + 1, n - at - 1, 0, tmp, sizeof(tmp));
    if (r < 0 || !tg_dialog_id_set(id, prov ? TG_DID_ROUTE_PBX : TG_DID_ROUTE_PROV, tmp, (size_t)r))
        id->overflow = 1;
}

int tg_dialog_id_invite(struct tg_dialog_id *id, const struct tg_sip_msg *m, const uint8_t *buf) {
    const char *via, *from, *to;
    size_t via_len, from_len, to_len;
    struct span_ e[MAX_RR];
    char route[TG_DIALOG_ID_MAX];
    int n = m->is_request ? rr_entries(m, buf, TG_SIP_H_ROUTE, e) : -1;
    long route_len = n < 0 ? -1 : join(e, n, 0, route, sizeof(route));
    const char *ruri = (const char *)buf + m->uri.off;
    if (route_len < 0 || !tg_sip_value(m, buf, TG_SIP_H_VIA, &via, &via_len) ||
        memchr(via, ',', via_len) != NULL ||
        !tg_sip_value(m, buf, TG_SIP_H_FROM, &from, &from_len) ||
        !tg_sip_value(m, buf, TG_SIP_H_TO, &to, &to_len) ||
        !tg_sip_sealable((const uint8_t *)ruri, m->uri.len))
        return 0; // not one Via of its own (tlsgate writes its own on its own line), or no URI
                  // that can stand in a start line
    uint16_t used = id->used;
    uint8_t overflow = id->overflow;
    if (tg_dialog_id_set(id, TG_DID_INV_RURI, ruri, m->uri.len) &&
        tg_dialog_id_set(id, TG_DID_INV_VIA, via, via_len) &&
        tg_dialog_id_set(id, TG_DID_INV_ROUTE, route, (size_t)route_len) &&
        tg_dialog_id_set(id, TG_DID_INV_FROM, from, from_len) &&
        tg_dialog_id_set(id, TG_DID_INV_TO, to, to_len)) {
        id->invite = 1;
        return 1;
    }
    for (int f = TG_DID_INV_RURI; f <= TG_DID_INV_TO; f++)
        id->len[f] = 0;
    id->used = used; // what did fit goes back: the 2xx's fields keep their room
    id->overflow = overflow;
    return 0;
}

void tg_dialog_id_caller(struct tg_dialog_id *id, enum tg_dlg_side caller, uint32_t cseq,
                         const struct tg_sip_msg *m, const uint8_t *buf) {
    id->caller = (uint8_t)caller;
    id->cseq[caller - 1] = cseq;
    set_contact(id, caller, m, buf);
}

// ---------------------------------------------------------------------------------------------
// Offer/answer decisions.

int tg_mplan_relayable(const struct tg_sdp_media *m) {
    return m->port != 0 && m->proto != TG_SDP_PROTO_OTHER;
}

int tg_mplan_provider_crypto(const struct tg_sdp *sdp, int is_offer, const uint8_t *prefs,
                             size_t num_prefs, const uint8_t *offered, int out_idx[]) {
    int any = 0;
    for (size_t i = 0; i < sdp->num_media; i++) {
        const struct tg_sdp_media *m = &sdp->media[i];
        out_idx[i] = -1;
        if (!tg_mplan_relayable(m) || i >= TG_DIALOG_STREAMS)
            continue;
        enum tg_srtp_suite p[4];
        size_t n = 0;
        if (is_offer) {
            for (size_t k = 0; k < num_prefs && k < 4; k++)
                p[n++] = (enum tg_srtp_suite)prefs[k];
        } else if (offered != NULL && offered[i] != TG_SRTP_NONE) {
            p[n++] = (enum tg_srtp_suite)offered[i];
        }
        out_idx[i] = n > 0 ? tg_sdp_choose_crypto(m, p, n) : -1;
        if (out_idx[i] >= 0)
            any = 1;
    }
    return any;
}

int tg_mplan_receives(const struct tg_sdp_media *m) {
    return m->port != 0 && m->conn.family != 0 && !m->conn.hold && m->dir != TG_SDP_SENDONLY &&
           m->dir != TG_SDP_INACTIVE;
}

int tg_mplan_peer(const struct tg_sdp_media *m, struct sockaddr_storage *out) {
    memset(out, 0, sizeof(*out));
    if (m->port == 0 || m->conn.family == 0 || m->conn.hold)
        return 0;
    if (m->conn.family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, m->conn.bytes, 16);
        s6->sin6_port = htons(m->port);
        return 1;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)out;
    s4->sin_family = AF_INET;
    memcpy(&s4->sin_addr, m->conn.bytes, 4);
    s4->sin_port = htons(m->port);
    return 1;
}
