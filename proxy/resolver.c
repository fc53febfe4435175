// The resolver thread, its snapshots and the workers' views of them (see
// include/tlsgate/resolver.h). Queries go through glibc's res_nquery (retries, timeouts, TCP
// on truncation); answers are read by dnsmsg.c.
#include "tlsgate/resolver.h"

#include <arpa/inet.h>
#include <arpa/nameser.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <resolv.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "tlsgate/log.h"

// A name found in the hosts file is looked at again this often (seconds).
#define HOSTS_REFRESH_S 30

// ---------------------------------------------------------------------------------------------
// Snapshots.

void tg_dns_snapshot_up_ref(struct tg_dns_snapshot *s) {
    if (s != NULL)
        atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
}

void tg_dns_snapshot_free(struct tg_dns_snapshot *s) {
    if (s == NULL || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1)
        return;
    free(s);
}

void tg_dns_entry_format(const struct tg_dns_entry *e, char *out, size_t out_len) {
    struct tg_dns_addr a = {0};
    if (e->addr.ss_family == AF_INET) {
        a.family = AF_INET;
        memcpy(a.bytes, &((const struct sockaddr_in *)&e->addr)->sin_addr, 4);
    } else {
        a.family = AF_INET6;
        memcpy(a.bytes, &((const struct sockaddr_in6 *)&e->addr)->sin6_addr, 16);
    }
    tg_dns_addr_format(&a, e->port, out, out_len);
}

static void set_sockaddr(struct tg_dns_entry *e, const struct tg_dns_addr *a, uint16_t port) {
    memset(&e->addr, 0, sizeof(e->addr));
    e->port = port;
    if (a->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)&e->addr;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        memcpy(&sin->sin_addr, a->bytes, 4);
        e->addr_len = sizeof(*sin);
        return;
    }
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&e->addr;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    memcpy(&sin6->sin6_addr, a->bytes, 16);
    e->addr_len = sizeof(*sin6);
}

// target_count is how many entries configured target |t| contributes.
static size_t target_count(const struct tg_target *t, const struct tg_dns_resolved *r) {
    return t->resolved ? 1 : r->num;
}

// carry_health copies the passive health of the same address of the same target in |prev|.
static void carry_health(struct tg_dns_entry *e, const struct tg_dns_list *prev) {
    for (size_t i = 0; prev != NULL && i < prev->num_entries; i++) {
        struct tg_dns_entry *p = &prev->entries[i];
        if (p->target == e->target && p->addr_len == e->addr_len &&
            memcmp(&p->addr, &e->addr, e->addr_len) == 0) {
            uint32_t until = atomic_load_explicit(&p->down_until, memory_order_relaxed);
            atomic_store_explicit(&e->down_until, until, memory_order_relaxed);
            return;
        }
    }
}

struct tg_dns_snapshot *tg_dns_snapshot_build(const struct tg_config *cfg,
                                              const struct tg_dns_resolved *per_target,
                                              const struct tg_dns_snapshot *prev, uint64_t serial) {
    size_t nl = cfg->num_listeners, total = 0;
    for (size_t l = 0; l < nl; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        size_t n = 0;
        for (size_t t = 0; lc->direction == TG_OUTBOUND && t < lc->num_targets; t++)
            n += target_count(&lc->targets[t], &per_target[l * TG_MAX_TARGETS + t]);
        total += n < TG_DNS_MAX_ENTRIES ? n : TG_DNS_MAX_ENTRIES;
    }
    size_t head = sizeof(struct tg_dns_snapshot) + nl * sizeof(struct tg_dns_list);
    head = (head + _Alignof(struct tg_dns_entry) - 1) & ~(_Alignof(struct tg_dns_entry) - 1);
    struct tg_dns_snapshot *s = calloc(1, head + (total + 1) * sizeof(struct tg_dns_entry));
    if (s == NULL)
        return NULL;
    atomic_init(&s->refs, 1);
    s->serial = serial;
    s->num_listeners = nl;
    struct tg_dns_entry *next = (struct tg_dns_entry *)((char *)s + head);
    for (size_t l = 0; l < nl; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        struct tg_dns_list *list = &s->lists[l];
        const struct tg_dns_list *prev_list =
            prev != NULL && l < prev->num_listeners ? &prev->lists[l] : NULL;
        list->entries = next;
        for (size_t t = 0; lc->direction == TG_OUTBOUND && t < lc->num_targets; t++) {
            const struct tg_target *tt = &lc->targets[t];
            const struct tg_dns_resolved *r = &per_target[l * TG_MAX_TARGETS + t];
            for (size_t i = 0; i < target_count(tt, r); i++) {
                if (list->num_entries == TG_DNS_MAX_ENTRIES)
                    break;
                struct tg_dns_entry *e = &list->entries[list->num_entries++];
                e->target = (uint8_t)t;
                e->expect_name = tt->expect_name;
                if (tt->resolved) {
                    memcpy(&e->addr, &tt->addr, sizeof(e->addr));
                    e->addr_len = tt->addr_len;
                    e->port = tt->port;
                } else {
                    set_sockaddr(e, &r->addrs[i], r->ports[i]);
                }
                carry_health(e, prev_list);
            }
        }
        next += list->num_entries;
    }
    return s;
}

// resolved_add appends |a| with |port| unless it is there already.
static int resolved_add(struct tg_dns_resolved *out, const struct tg_dns_addr *a, uint16_t port) {
    for (size_t i = 0; i < out->num; i++)
        if (out->ports[i] == port && out->addrs[i].family == a->family &&
            memcmp(out->addrs[i].bytes, a->bytes, a->family == AF_INET ? 4 : 16) == 0)
            return 0;
    if (out->num == TG_DNS_MAX_ADDRS)
        return 0;
    out->addrs[out->num] = *a;
    out->ports[out->num] = port;
    out->num++;
    return 1;
}

size_t tg_dns_resolved_from_answer(struct tg_dns_resolved *out, const struct tg_dns_answer *a,
                                   const char *qname, uint16_t type, uint16_t port) {
    struct tg_dns_addr addrs[TG_DNS_MAX_ADDRS];
    uint32_t ttl = TG_DNS_TTL_MAX;
    size_t n = tg_dns_collect_addrs(a, qname, type, addrs, TG_DNS_MAX_ADDRS, &ttl);
    size_t added = 0;
    for (size_t i = 0; i < n; i++)
        added += (size_t)resolved_add(out, &addrs[i], port);
    if (n > 0 && ttl < out->ttl)
        out->ttl = ttl;
    return added;
}

// ---------------------------------------------------------------------------------------------
// A worker's view.

static struct tg_dns_hold *hold_new(struct tg_dns_snapshot *snap) {
    struct tg_dns_hold *h = calloc(1, sizeof(*h));
    if (h != NULL)
        h->snap = snap;
    return h;
}

static void hold_free(struct tg_dns_hold *h) {
    if (h == NULL)
        return;
    tg_dns_snapshot_free(h->snap);
    free(h);
}

int tg_dns_view_init(struct tg_dns_view *v, struct tg_dns_snapshot *snap) {
    atomic_init(&v->mailbox, NULL);
    v->retired = NULL;
    v->cur = hold_new(snap);
    if (v->cur == NULL)
        return 0;
    tg_dns_snapshot_up_ref(snap);
    return 1;
}

int tg_dns_view_offer(struct tg_dns_view *v, struct tg_dns_snapshot *snap) {
    tg_dns_snapshot_up_ref(snap);
    tg_dns_snapshot_free(atomic_exchange(&v->mailbox, snap));
    return 1;
}

void tg_dns_view_adopt(struct tg_dns_view *v) {
    struct tg_dns_snapshot *snap = atomic_exchange(&v->mailbox, NULL);
    if (snap == NULL)
        return;
    struct tg_dns_hold *h = hold_new(snap);
    if (h == NULL) { // memory short: stay on the current one; the next refresh offers again
        tg_dns_snapshot_free(snap);
        return;
    }
    struct tg_dns_hold *old = v->cur;
    v->cur = h;
    if (old->users == 0) {
        hold_free(old);
        return;
    }
    old->next = v->retired;
    v->retired = old;
}

struct tg_dns_hold *tg_dns_view_acquire(struct tg_dns_view *v) {
    v->cur->users++;
    return v->cur;
}

void tg_dns_view_release(struct tg_dns_view *v, struct tg_dns_hold *h) {
    if (h == NULL || --h->users > 0 || h == v->cur)
        return;
    for (struct tg_dns_hold **p = &v->retired; *p != NULL; p = &(*p)->next) {
        if (*p == h) {
            *p = h->next;
            hold_free(h);
            return;
        }
    }
}

void tg_dns_view_cleanup(struct tg_dns_view *v) {
    tg_dns_snapshot_free(atomic_exchange(&v->mailbox, NULL));
    hold_free(v->cur);
    v->cur = NULL;
    while (v->retired != NULL) {
        struct tg_dns_hold *h = v->retired;
        v->retired = h->next;
        hold_free(h);
    }
}

// ---------------------------------------------------------------------------------------------
// Queries.

enum q_result { Q_OK = 0, Q_NXDOMAIN, Q_NODATA, Q_ERROR, Q_MALFORMED, Q_NUM };
static const char *const k_q_names[Q_NUM] = {"ok", "nxdomain", "nodata", "error", "malformed"};

// tstate is what the resolver knows of one configured target.
struct tstate {
    struct tg_dns_resolved cur; // the last good answer (kept while DNS fails)
    struct tg_dns_sched sched;
    int is_name;   // a DNS name (numeric targets are never asked)
    int ever_ok;   // |cur| holds an answer
    char why[160]; // the last failure
};

struct tg_resolver {
    const struct tg_config *cfg;
    char hosts_path[4096];
    struct __res_state res;
    int res_ok;
    struct tstate *ts; // [listener * TG_MAX_TARGETS + target]
    struct tg_dns_snapshot *cur;
    uint64_t serial;
    struct tg_metrics *metrics;
    tg_dns_publish_fn publish;
    void *publish_arg;
    pthread_t thread;
    int running;
    int stop_fd;
    _Atomic uint64_t queries[Q_NUM];
    _Atomic uint8_t *num_addrs; // [listener * TG_MAX_TARGETS + target], for the metrics
    uint8_t buf[65536];
    struct tg_dns_answer ans;
};

// query asks the nameservers for |name|'s records of |type| into r->ans.
static enum q_result query(struct tg_resolver *r, const char *name, int type, char *why,
                           size_t why_len) {
    enum q_result q = Q_OK;
    int n = r->res_ok ? res_nquery(&r->res, name, ns_c_in, type, r->buf, sizeof(r->buf)) : -1;
    if (n < 0) {
        int h = r->res_ok ? r->res.res_h_errno : NO_RECOVERY;
        q = h == HOST_NOT_FOUND ? Q_NXDOMAIN : h == NO_DATA ? Q_NODATA : Q_ERROR;
        if (q == Q_ERROR)
            tg_set_why(why, why_len,
                       "no answer from the nameservers (timeout, refusal or "
                       "server failure)");
    } else {
        char reason[96];
        size_t len = (size_t)n < sizeof(r->buf) ? (size_t)n : sizeof(r->buf);
        if (!tg_dns_parse(&r->ans, r->buf, len, reason, sizeof(reason))) {
            q = Q_MALFORMED;
            tg_set_why(why, why_len, "malformed answer: %s", reason);
        } else if (r->ans.rcode == 3) {
            q = Q_NXDOMAIN;
        } else if (r->ans.rcode != 0) {
            q = Q_ERROR;
            tg_set_why(why, why_len, "server failure (rcode %u)", r->ans.rcode);
        }
    }
    atomic_fetch_add_explicit(&r->queries[q], 1, memory_order_relaxed);
    return q;
}

static uint32_t sys_rand(void *arg) {
    (void)arg;
    uint32_t v = 0;
    RAND_bytes((uint8_t *)&v, sizeof(v));
    return v;
}

// resolve_addrs adds |name|'s addresses (hosts file, else A then AAAA) with |port| to |out|.
// Returns 1 when it has any; else 0 with the reason.
static int resolve_addrs(struct tg_resolver *r, const char *name, uint16_t port, const char *hosts,
                         size_t hosts_len, struct tg_dns_resolved *out, char *why, size_t why_len) {
    struct tg_dns_addr ha[TG_DNS_MAX_ADDRS];
    size_t nh = tg_hosts_lookup(hosts, hosts_len, name, ha, TG_DNS_MAX_ADDRS);
    if (nh > 0) {
        for (size_t i = 0; i < nh; i++)
            resolved_add(out, &ha[i], port);
        if (out->ttl > HOSTS_REFRESH_S)
            out->ttl = HOSTS_REFRESH_S;
        return 1;
    }
    size_t before = out->num;
    char err[160] = "";
    enum q_result qa = query(r, name, T_A, err, sizeof(err));
    if (qa == Q_OK)
        tg_dns_resolved_from_answer(out, &r->ans, name, TG_DNS_A, port);
    if (qa != Q_NXDOMAIN) {
        enum q_result q6 = query(r, name, T_AAAA, err, sizeof(err));
        if (q6 == Q_OK)
            tg_dns_resolved_from_answer(out, &r->ans, name, TG_DNS_AAAA, port);
    }
    if (out->num > before)
        return 1;
    if (qa == Q_NXDOMAIN)
        return tg_set_why(why, why_len, "NXDOMAIN (no such name)");
    if (err[0] != '\0')
        return tg_set_why(why, why_len, "%s", err);
    return tg_set_why(why, why_len, "no A or AAAA record");
}

// resolve_srv resolves a name given without a port: SRV _sips._tcp.NAME first. Returns -1
// when there is no SRV record (the caller falls back to A/AAAA), 1 with addresses, 0 failed.
static int resolve_srv(struct tg_resolver *r, const char *name, const char *hosts, size_t hosts_len,
                       struct tg_dns_resolved *out, char *why, size_t why_len) {
    char qname[TG_HOST_MAX + 16];
    snprintf(qname, sizeof(qname), "_sips._tcp.%s", name);
    enum q_result q = query(r, qname, T_SRV, why, why_len);
    if (q == Q_NXDOMAIN || q == Q_NODATA)
        return -1;
    if (q != Q_OK)
        return 0;
    struct tg_dns_srv srv[TG_DNS_MAX_SRV];
    uint32_t ttl = TG_DNS_TTL_MAX;
    size_t n = tg_dns_collect_srv(&r->ans, qname, srv, TG_DNS_MAX_SRV, &ttl);
    if (n == 0)
        return -1;
    tg_dns_srv_order(srv, n, sys_rand, NULL);
    if (ttl < out->ttl)
        out->ttl = ttl;
    char err[160] = "";
    for (size_t i = 0; i < n; i++) {
        if (srv[i].target[0] == '\0' || srv[i].port == 0)
            continue; // "." : not offered there (RFC 2782)
        resolve_addrs(r, srv[i].target, srv[i].port, hosts, hosts_len, out, err, sizeof(err));
    }
    if (out->num > 0)
        return 1;
    return tg_set_why(why, why_len, "no SRV target of %s resolves%s%s", qname,
                      err[0] != '\0' ? ": " : "", err);
}

// resolve_target resolves one configured name target into |out|.
static int resolve_target(struct tg_resolver *r, const struct tg_target *t, const char *hosts,
                          size_t hosts_len, struct tg_dns_resolved *out, char *why,
                          size_t why_len) {
    memset(out, 0, sizeof(*out));
    out->ttl = TG_DNS_TTL_MAX;
    struct tg_dns_addr in_hosts[1];
    if (t->srv && tg_hosts_lookup(hosts, hosts_len, t->host, in_hosts, 1) == 0) {
        int s = resolve_srv(r, t->host, hosts, hosts_len, out, why, why_len);
        if (s >= 0)
            return s;
    }
    return resolve_addrs(r, t->host, t->port, hosts, hosts_len, out, why, why_len);
}

// ---------------------------------------------------------------------------------------------
// The resolver.

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

struct tg_resolver *tg_resolver_new(const struct tg_config *cfg, const char *hosts_path, char *err,
                                    size_t err_len) {
    struct tg_resolver *r = calloc(1, sizeof(*r));
    size_t nt = cfg->num_listeners * TG_MAX_TARGETS;
    if (r == NULL || (r->ts = calloc(nt + 1, sizeof(*r->ts))) == NULL ||
        (r->num_addrs = calloc(nt + 1, sizeof(*r->num_addrs))) == NULL) {
        tg_resolver_free(r);
        tg_set_why(err, err_len, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    r->stop_fd = -1;
    snprintf(r->hosts_path, sizeof(r->hosts_path), "%s",
             hosts_path != NULL ? hosts_path : "/etc/hosts");
    r->res_ok = res_ninit(&r->res) == 0;
    if (r->res_ok && cfg->num_resolvers > 0) {
        // `resolvers` replaces /etc/resolv.conf's nameservers (IPv4 entries of nsaddr_list are
        // the ones res_send copies at its first use).
        for (size_t i = 0; i < cfg->num_resolvers; i++)
            memcpy(&r->res.nsaddr_list[i], &cfg->resolvers[i].addr, sizeof(struct sockaddr_in));
        r->res.nscount = (int)cfg->num_resolvers;
    }
    r->res.retrans = 2; // seconds per try, two tries per nameserver
    r->res.retry = 2;
    for (size_t l = 0; l < cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        for (size_t t = 0; lc->direction == TG_OUTBOUND && t < lc->num_targets; t++)
            r->ts[l * TG_MAX_TARGETS + t].is_name = !lc->targets[t].resolved;
    }
    return r;
}

void tg_resolver_free(struct tg_resolver *r) {
    if (r == NULL)
        return;
    tg_resolver_stop(r);
    if (r->res_ok)
        res_nclose(&r->res);
    tg_dns_snapshot_free(r->cur);
    free(r->ts);
    free((void *)r->num_addrs);
    free(r);
}

// format_list writes a target's addresses as `A:P,B:P`.
static void format_list(const struct tg_dns_resolved *d, char *out, size_t out_len) {
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < d->num && n + 1 < out_len; i++) {
        char one[64];
        tg_dns_addr_format(&d->addrs[i], d->ports[i], one, sizeof(one));
        n += (size_t)snprintf(out + n, out_len - n, "%s%s", i > 0 ? "," : "", one);
    }
}

// same_resolved compares two answers as sets: SRV's weighted draw reorders records of one
// priority at each refresh, which is not a change worth a new snapshot and a log line.
static int same_resolved(const struct tg_dns_resolved *a, const struct tg_dns_resolved *b) {
    if (a->num != b->num)
        return 0;
    for (size_t i = 0; i < a->num; i++) {
        int found = 0;
        for (size_t j = 0; j < b->num && !found; j++)
            found = a->ports[i] == b->ports[j] && a->addrs[i].family == b->addrs[j].family &&
                    memcmp(a->addrs[i].bytes, b->addrs[j].bytes, 16) == 0;
        if (!found)
            return 0;
    }
    return 1;
}

// refresh resolves target |idx| again. Returns 1 when its addresses changed.
static int refresh(struct tg_resolver *r, size_t l, size_t t, const char *hosts, size_t hosts_len,
                   uint64_t now) {
    const struct tg_listener_conf *lc = &r->cfg->listeners[l];
    const struct tg_target *tt = &lc->targets[t];
    struct tstate *s = &r->ts[l * TG_MAX_TARGETS + t];
    struct tg_dns_resolved next;
    char why[160];
    if (!resolve_target(r, tt, hosts, hosts_len, &next, why, sizeof(why))) {
        snprintf(s->why, sizeof(s->why), "%s", why);
        if (tg_dns_sched_fail(&s->sched, now))
            TG_WARN("dns_failed", "listener=%s name=%s why=\"%s\" kept=%zu retry_s=%u", lc->name,
                    tt->host, why, s->cur.num, s->sched.backoff_s);
        return 0;
    }
    if (tg_dns_sched_ok(&s->sched, now, next.ttl))
        TG_INFO("dns_recovered", "listener=%s name=%s addresses=%zu", lc->name, tt->host, next.num);
    int changed = !s->ever_ok || !same_resolved(&s->cur, &next);
    if (changed) {
        char old_list[512], new_list[512];
        format_list(&s->cur, old_list, sizeof(old_list));
        format_list(&next, new_list, sizeof(new_list));
        TG_INFO("dns_changed", "listener=%s name=%s old=\"%s\" new=\"%s\" ttl_s=%u", lc->name,
                tt->host, old_list, new_list, tg_dns_clamp_ttl(next.ttl));
    }
    if (changed) // else the order the connections walk stays as it was
        s->cur = next;
    s->ever_ok = 1;
    return changed;
}

// per_target gathers the current answers (a copy the snapshot is built from).
static struct tg_dns_resolved *per_target(const struct tg_resolver *r) {
    size_t nt = r->cfg->num_listeners * TG_MAX_TARGETS;
    struct tg_dns_resolved *p = calloc(nt + 1, sizeof(*p));
    for (size_t i = 0; p != NULL && i < nt; i++)
        p[i] = r->ts[i].cur;
    return p;
}

// rebuild makes a new current snapshot from the targets' answers. Returns 0 on memory short.
static int rebuild(struct tg_resolver *r) {
    struct tg_dns_resolved *p = per_target(r);
    if (p == NULL)
        return 0;
    struct tg_dns_snapshot *s = tg_dns_snapshot_build(r->cfg, p, r->cur, r->serial + 1);
    free(p);
    if (s == NULL)
        return 0;
    r->serial++;
    tg_dns_snapshot_free(r->cur);
    r->cur = s;
    for (size_t l = 0; l < r->cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &r->cfg->listeners[l];
        for (size_t t = 0; lc->direction == TG_OUTBOUND && t < lc->num_targets; t++) {
            size_t n = lc->targets[t].resolved ? 1 : r->ts[l * TG_MAX_TARGETS + t].cur.num;
            atomic_store_explicit(&r->num_addrs[l * TG_MAX_TARGETS + t], (uint8_t)n,
                                  memory_order_relaxed);
            if (r->metrics != NULL)
                atomic_store_explicit(
                    &r->metrics->targets[l * TG_METRICS_MAX_TARGETS + t].unresolved, n == 0,
                    memory_order_relaxed);
        }
    }
    return 1;
}

int tg_resolver_initial(struct tg_resolver *r, FILE *warn, char *err, size_t err_len) {
    const struct tg_config *cfg = r->cfg;
    char *hosts = NULL;
    size_t hosts_len = 0;
    if (!tg_hosts_read(r->hosts_path, &hosts, &hosts_len))
        return tg_set_why(err, err_len, "out of memory");
    uint64_t now = now_ms();
    int ok = 1;
    for (size_t l = 0; l < cfg->num_listeners && ok; l++) {
        const struct tg_listener_conf *lc = &cfg->listeners[l];
        if (lc->direction != TG_OUTBOUND)
            continue;
        size_t good = 0, first_bad = TG_MAX_TARGETS;
        for (size_t t = 0; t < lc->num_targets; t++) {
            struct tstate *s = &r->ts[l * TG_MAX_TARGETS + t];
            if (s->is_name)
                refresh(r, l, t, hosts, hosts_len, now);
            if (!s->is_name || s->ever_ok)
                good++;
            else if (first_bad == TG_MAX_TARGETS)
                first_bad = t;
        }
        if (good == 0) {
            const struct tstate *s = &r->ts[l * TG_MAX_TARGETS + first_bad];
            ok = tg_set_why(err, err_len, "%s:%d: outbound %s.connect: cannot resolve %s: %s",
                            cfg->path, lc->line, lc->name, lc->targets[first_bad].host, s->why);
            break;
        }
        for (size_t t = 0; t < lc->num_targets; t++) {
            const struct tstate *s = &r->ts[l * TG_MAX_TARGETS + t];
            if (!s->is_name || s->ever_ok)
                continue;
            TG_WARN("dns_unresolved", "listener=%s name=%s why=\"%s\" retry_s=%u", lc->name,
                    lc->targets[t].host, s->why, s->sched.backoff_s);
            if (warn != NULL)
                fprintf(warn,
                        "%s:%d: outbound %s.connect: warning: cannot resolve %s: %s (the other "
                        "targets resolve; it is retried)\n",
                        cfg->path, lc->line, lc->name, lc->targets[t].host, s->why);
        }
    }
    free(hosts);
    if (!ok)
        return 0;
    if (!rebuild(r))
        return tg_set_why(err, err_len, "out of memory");
    return 1;
}

struct tg_dns_snapshot *tg_resolver_get1(struct tg_resolver *r) {
    tg_dns_snapshot_up_ref(r->cur);
    return r->cur;
}

// next_due returns the earliest refresh time of a name target (UINT64_MAX: none).
static uint64_t next_due(const struct tg_resolver *r) {
    uint64_t due = UINT64_MAX;
    for (size_t i = 0; i < r->cfg->num_listeners * TG_MAX_TARGETS; i++)
        if (r->ts[i].is_name && r->ts[i].sched.due_ms < due)
            due = r->ts[i].sched.due_ms;
    return due;
}

// refresh_due refreshes every name whose time has come; publishes a changed snapshot.
static void refresh_due(struct tg_resolver *r) {
    char *hosts = NULL;
    size_t hosts_len = 0;
    if (!tg_hosts_read(r->hosts_path, &hosts, &hosts_len))
        return;
    uint64_t now = now_ms();
    int changed = 0;
    for (size_t l = 0; l < r->cfg->num_listeners; l++) {
        for (size_t t = 0; t < TG_MAX_TARGETS; t++) {
            struct tstate *s = &r->ts[l * TG_MAX_TARGETS + t];
            if (s->is_name && s->sched.due_ms <= now)
                changed |= refresh(r, l, t, hosts, hosts_len, now);
        }
    }
    free(hosts);
    if (changed && rebuild(r) && r->publish != NULL)
        r->publish(r->publish_arg, r->cur);
}

static void *resolver_main(void *arg) {
    struct tg_resolver *r = arg;
    for (;;) {
        uint64_t due = next_due(r), now = now_ms();
        int wait_ms = due == UINT64_MAX      ? -1
                      : due <= now           ? 0
                      : due - now > 3600000u ? 3600000
                                             : (int)(due - now);
        struct pollfd pfd = {.fd = r->stop_fd, .events = POLLIN};
        int pr = poll(&pfd, 1, wait_ms);
        if (pr > 0)
            break; // stop
        if (pr < 0 && errno != EINTR)
            break;
        if (pr == 0)
            refresh_due(r);
        tg_log_flush(); // summaries of what this thread's log budget suppressed
    }
    return NULL;
}

int tg_resolver_start(struct tg_resolver *r, struct tg_metrics *m, tg_dns_publish_fn publish,
                      void *arg, char *err, size_t err_len) {
    r->metrics = m;
    r->publish = publish;
    r->publish_arg = arg;
    rebuild(r); // the metrics' view of the targets without an address
    r->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (r->stop_fd < 0)
        return tg_set_why(err, err_len, "eventfd: %s", strerror(errno));
    if (pthread_create(&r->thread, NULL, resolver_main, r) != 0) {
        close(r->stop_fd);
        r->stop_fd = -1;
        return tg_set_why(err, err_len, "pthread_create failed");
    }
    r->running = 1;
    return 1;
}

void tg_resolver_stop(struct tg_resolver *r) {
    if (!r->running)
        return;
    uint64_t one = 1;
    if (write(r->stop_fd, &one, sizeof(one)) < 0)
        TG_WARN("resolver_stop", "error=\"%s\"", strerror(errno));
    pthread_join(r->thread, NULL);
    close(r->stop_fd);
    r->stop_fd = -1;
    r->running = 0;
}

size_t tg_resolver_metrics(struct tg_resolver *r, char *buf, size_t len) {
    size_t n = 0;
#define OUT(...)                                                                                   \
    do {                                                                                           \
        if (n < len)                                                                               \
            n += (size_t)snprintf(buf + n, len - n, __VA_ARGS__);                                  \
    } while (0)
    OUT("# HELP tlsgate_dns_queries_total DNS queries for connect targets, by result.\n"
        "# TYPE tlsgate_dns_queries_total counter\n");
    for (int q = 0; q < Q_NUM; q++)
        OUT("tlsgate_dns_queries_total{result=\"%s\"} %llu\n", k_q_names[q],
            (unsigned long long)atomic_load_explicit(&r->queries[q], memory_order_relaxed));
    OUT("# HELP tlsgate_target_addresses Addresses a connect target stands for now.\n"
        "# TYPE tlsgate_target_addresses gauge\n");
    for (size_t l = 0; l < r->cfg->num_listeners; l++) {
        const struct tg_listener_conf *lc = &r->cfg->listeners[l];
        for (size_t t = 0; lc->direction == TG_OUTBOUND && t < lc->num_targets; t++) {
            const struct tg_target *tt = &lc->targets[t];
            OUT(strchr(tt->host, ':') != NULL
                    ? "tlsgate_target_addresses{listener=\"%s\",target=\"[%s]:%u\"} %u\n"
                    : "tlsgate_target_addresses{listener=\"%s\",target=\"%s:%u\"} %u\n",
                lc->name, tt->host, (unsigned)tt->port,
                (unsigned)atomic_load_explicit(&r->num_addrs[l * TG_MAX_TARGETS + t],
                                               memory_order_relaxed));
        }
    }
#undef OUT
    return n < len ? n : (len > 0 ? len - 1 : 0);
}
