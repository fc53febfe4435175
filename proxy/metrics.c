#include "tlsgate/metrics.h"

#include "tlsgate/kfeat.h"
#include "tlsgate/loop.h"
#include "tlsgate/signer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct tg_metrics *tg_metrics_new(size_t num_workers, size_t num_listeners,
                                  const char **listener_names, const char **listener_kinds) {
    struct tg_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->num_workers = num_workers;
    m->num_listeners = num_listeners;
    m->listener_names = listener_names;
    m->listener_kinds = listener_kinds;
    m->per_worker = calloc(num_workers, sizeof(*m->per_worker));
    m->targets = calloc(num_listeners * TG_METRICS_MAX_TARGETS + 1, sizeof(*m->targets));
    m->media = aligned_alloc(64, (num_workers + 1) * sizeof(*m->media));
    if (m->per_worker == NULL || m->targets == NULL || m->media == NULL)
        goto fail;
    memset(m->media, 0, (num_workers + 1) * sizeof(*m->media));
    for (size_t w = 0; w < num_workers; w++) {
        // Each worker's block on its own cache lines: no false sharing between workers.
        size_t size = num_listeners * sizeof(struct tg_listener_counters);
        size = (size + 63) & ~(size_t)63;
        m->per_worker[w] = aligned_alloc(64, size > 0 ? size : 64);
        if (m->per_worker[w] == NULL)
            goto fail;
        memset(m->per_worker[w], 0, size);
    }
    return m;
fail:
    tg_metrics_free(m);
    return NULL;
}

void tg_metrics_free(struct tg_metrics *m) {
    if (m == NULL)
        return;
    if (m->per_worker != NULL) {
        for (size_t w = 0; w < m->num_workers; w++)
            free(m->per_worker[w]);
        free(m->per_worker);
    }
    free(m->targets);
    free(m->media);
    free(m);
}

struct tg_listener_counters *tg_metrics_worker(struct tg_metrics *m, size_t w) {
    return m->per_worker[w];
}

// A growable output buffer for the exposition text.
struct out {
    char *data;
    size_t len, cap;
    int failed;
};

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void out_printf(struct out *o, const char *fmt, ...) {
    if (o->failed)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(o->data + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            o->failed = 1;
            return;
        }
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        size_t cap = o->cap * 2 + (size_t)n;
        char *data = realloc(o->data, cap);
        if (data == NULL) {
            o->failed = 1;
            return;
        }
        o->data = data;
        o->cap = cap;
    }
}

// sum adds one counter (selected by byte offset into tg_listener_counters) over all workers.
static uint64_t sum(const struct tg_metrics *m, size_t listener, size_t offset) {
    uint64_t total = 0;
    for (size_t w = 0; w < m->num_workers; w++) {
        const char *base = (const char *)&m->per_worker[w][listener];
        total += tg_counter_get((const tg_counter *)(base + offset));
    }
    return total;
}

#define FIELD(f) offsetof(struct tg_listener_counters, f)

static const char *const k_reject_names[TG_REJECT_NUM] = {"max_connections",
                                                          "draining",
                                                          "listener_max_connections",
                                                          "handshakes_in_progress",
                                                          "source_handshakes",
                                                          "source_rate",
                                                          "fd_limit"};

// The method label of each tg_sip_method: PUBLISH is counted as "other" to keep the set small.
static const char *sip_method_label(int method) {
    switch (method) {
    case TG_SIP_M_OTHER:
    case TG_SIP_M_PUBLISH:
        return "other";
    default:
        return tg_sip_method_name((enum tg_sip_method)method);
    }
}

// render_sip writes the SIP series; a sample shows once it is non-zero (SIP listeners only).
static void render_sip(const struct tg_metrics *m, struct out *o) {
    const size_t nl = m->num_listeners;
    out_printf(o, "# HELP tlsgate_sip_requests_total SIP requests received, by method.\n"
                  "# TYPE tlsgate_sip_requests_total counter\n");
    for (size_t l = 0; l < nl; l++) {
        uint64_t other = 0;
        for (int i = 0; i < TG_SIP_M_NUM; i++) {
            uint64_t n = sum(m, l, FIELD(sip_requests) + (size_t)i * sizeof(tg_counter));
            if (i == TG_SIP_M_OTHER || i == TG_SIP_M_PUBLISH) {
                other += n;
                continue;
            }
            if (n > 0)
                out_printf(o, "tlsgate_sip_requests_total{listener=\"%s\",method=\"%s\"} %llu\n",
                           m->listener_names[l], sip_method_label(i), (unsigned long long)n);
        }
        if (other > 0)
            out_printf(o, "tlsgate_sip_requests_total{listener=\"%s\",method=\"other\"} %llu\n",
                       m->listener_names[l], (unsigned long long)other);
    }
    out_printf(o, "# HELP tlsgate_sip_responses_total SIP responses received, by status class.\n"
                  "# TYPE tlsgate_sip_responses_total counter\n");
    for (size_t l = 0; l < nl; l++)
        for (int c = 0; c < 6; c++) {
            uint64_t n = sum(m, l, FIELD(sip_responses) + (size_t)c * sizeof(tg_counter));
            if (n > 0)
                out_printf(o, "tlsgate_sip_responses_total{listener=\"%s\",class=\"%dxx\"} %llu\n",
                           m->listener_names[l], c + 1, (unsigned long long)n);
        }
    out_printf(o, "# HELP tlsgate_sip_errors_total SIP messages refused or dropped, by reason.\n"
                  "# TYPE tlsgate_sip_errors_total counter\n");
    for (size_t l = 0; l < nl; l++) {
        for (int e = 1; e < TG_SIP_ERR_NUM; e++) {
            uint64_t n = sum(m, l, FIELD(sip_scan_errors) + (size_t)e * sizeof(tg_counter));
            if (n > 0)
                out_printf(o, "tlsgate_sip_errors_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                           m->listener_names[l], tg_sip_err_name((enum tg_sip_err)e),
                           (unsigned long long)n);
        }
        for (int r = 1; r < TG_SIP_RW_NUM; r++) {
            uint64_t n = sum(m, l, FIELD(sip_rw_errors) + (size_t)r * sizeof(tg_counter));
            if (n > 0)
                out_printf(o, "tlsgate_sip_errors_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                           m->listener_names[l], tg_sip_rw_name((enum tg_sip_rw)r),
                           (unsigned long long)n);
        }
        uint64_t n = sum(m, l, FIELD(sip_flow_errors));
        if (n > 0)
            out_printf(o,
                       "tlsgate_sip_errors_total{listener=\"%s\",reason=\"flow_mismatch\"} "
                       "%llu\n",
                       m->listener_names[l], (unsigned long long)n);
    }
}

// tg_target_is_up says whether a connect target is taken by new connections now: not marked
// down by its OPTIONS probe, and not within the back-off of a failed attempt.
int tg_target_is_up(const struct tg_target_health *h, uint32_t now_ms) {
    if (atomic_load_explicit(&h->unresolved, memory_order_relaxed))
        return 0;
    if (atomic_load_explicit(&h->state, memory_order_relaxed) == TG_TARGET_DOWN)
        return 0;
    if (!atomic_load_explicit(&h->passive_down, memory_order_relaxed))
        return 1;
    // Wrap-safe for back-offs under 24 days (target_backoff_s is at most an hour).
    return (int32_t)(now_ms - atomic_load_explicit(&h->down_until, memory_order_relaxed)) >= 0;
}

// render_targets writes the health of each connect target: tlsgate_target_up for every
// outbound target, and the OPTIONS verdict of each probed one.
static void render_targets(const struct tg_metrics *m, struct out *o) {
    uint32_t now_ms = tg_loop_now_ms();
    out_printf(o, "# HELP tlsgate_target_up Connect target taken by new connections (1) or "
                  "skipped after a failure or a failed OPTIONS probe (0).\n"
                  "# TYPE tlsgate_target_up gauge\n");
    for (size_t l = 0; l < m->num_listeners; l++) {
        for (size_t t = 0; t < TG_METRICS_MAX_TARGETS; t++) {
            const struct tg_target_health *h = &m->targets[l * TG_METRICS_MAX_TARGETS + t];
            if (!h->named)
                continue;
            out_printf(o, "tlsgate_target_up{listener=\"%s\",target=\"%s\"} %d\n",
                       m->listener_names[l], h->name, tg_target_is_up(h, now_ms));
        }
    }
    out_printf(o, "# HELP tlsgate_sip_target_up Connect target answering OPTIONS (1) or marked "
                  "down (0).\n# TYPE tlsgate_sip_target_up gauge\n");
    for (size_t l = 0; l < m->num_listeners; l++) {
        for (size_t t = 0; t < TG_METRICS_MAX_TARGETS; t++) {
            struct tg_target_health *h = &m->targets[l * TG_METRICS_MAX_TARGETS + t];
            uint8_t st = atomic_load_explicit(&h->state, memory_order_acquire);
            if (st == TG_TARGET_UNPROBED)
                continue;
            out_printf(o, "tlsgate_sip_target_up{listener=\"%s\",target=\"%s\"} %d\n",
                       m->listener_names[l], h->name, st == TG_TARGET_UP ? 1 : 0);
        }
    }
}

static uint64_t media_sum(const struct tg_metrics *m, size_t offset) {
    uint64_t total = 0;
    for (size_t w = 0; w < m->num_workers; w++)
        total += tg_counter_get((const tg_counter *)((const char *)&m->media[w] + offset));
    return total;
}

#define MFIELD(f) offsetof(struct tg_media_counters, f)

// render_media writes the media series ([media] configured only).
static void render_media(const struct tg_metrics *m, struct out *o) {
    static const struct {
        const char *name, *help;
        size_t off;
    } k_counters[] = {
        {"tlsgate_media_calls_total", "Calls given media sessions.", MFIELD(calls_opened)},
        {"tlsgate_media_streams_total", "Media streams opened (four UDP sockets each).",
         MFIELD(streams_opened)},
        {"tlsgate_media_srtp_auth_failures_total",
         "SRTP/SRTCP packets whose tag did not verify (dropped).", MFIELD(auth_failures)},
        {"tlsgate_media_srtp_replays_total", "SRTP/SRTCP packets replayed or too old (dropped).",
         MFIELD(replays)},
        {"tlsgate_media_bad_packets_total",
         "Datagrams that were not RTP/RTCP, truncated, or came before a key (dropped).",
         MFIELD(bad_packets)},
        {"tlsgate_media_foreign_source_total",
         "Datagrams on a PBX-side socket from an address that is not the PBX's (dropped).",
         MFIELD(foreign_source)},
        {"tlsgate_media_no_destination_total",
         "Packets with nowhere to go yet (no SDP address, on hold) (dropped).",
         MFIELD(no_destination)},
        {"tlsgate_media_send_errors_total", "Media sends that failed.", MFIELD(send_errors)},
        {"tlsgate_media_recv_nobufs_total",
         "Media receives that found every datagram buffer in use (re-armed as buffers return).",
         MFIELD(recv_nobufs)},
        {"tlsgate_media_latches_total",
         "Provider source addresses learnt from authenticated packets.", MFIELD(latches)},
        {"tlsgate_media_timeouts_total", "Media streams ended by [media] timeout_s.",
         MFIELD(timeouts)},
        {"tlsgate_media_port_exhausted_total",
         "Calls refused for lack of media ports or over max_calls.", MFIELD(port_exhausted)},
        {"tlsgate_media_crypto_refused_total", "Offers answered 488: no acceptable a=crypto line.",
         MFIELD(crypto_refused)},
        {"tlsgate_media_sdp_errors_total", "SDP bodies refused as malformed.", MFIELD(sdp_errors)},
        {"tlsgate_media_answers_failed_total",
         "2xx answers whose SDP could not be used: 488 to one side, ACK and BYE to the other.",
         MFIELD(answers_failed)},
        {"tlsgate_media_byes_sent_total",
         "BYEs tlsgate sent itself (media timeout, failed answer).", MFIELD(byes_sent)},
    };
    out_printf(o,
               "# HELP tlsgate_media_calls_active Calls with media sessions now.\n"
               "# TYPE tlsgate_media_calls_active gauge\ntlsgate_media_calls_active %llu\n",
               (unsigned long long)(media_sum(m, MFIELD(calls_opened)) -
                                    media_sum(m, MFIELD(calls_closed))));
    out_printf(o,
               "# HELP tlsgate_media_streams_active Media streams (port pairs on each side) "
               "open now.\n# TYPE tlsgate_media_streams_active gauge\n"
               "tlsgate_media_streams_active %llu\n",
               (unsigned long long)(media_sum(m, MFIELD(streams_opened)) -
                                    media_sum(m, MFIELD(streams_closed))));
    static const char *const dirs[2] = {"provider_to_pbx", "pbx_to_provider"};
    out_printf(o, "# HELP tlsgate_media_packets_total Media packets relayed, by direction.\n"
                  "# TYPE tlsgate_media_packets_total counter\n");
    for (int d = 0; d < 2; d++)
        out_printf(
            o, "tlsgate_media_packets_total{direction=\"%s\"} %llu\n", dirs[d],
            (unsigned long long)media_sum(m, MFIELD(packets) + (size_t)d * sizeof(tg_counter)));
    out_printf(o, "# HELP tlsgate_media_bytes_total Media bytes received and relayed, by "
                  "direction.\n# TYPE tlsgate_media_bytes_total counter\n");
    for (int d = 0; d < 2; d++)
        out_printf(
            o, "tlsgate_media_bytes_total{direction=\"%s\"} %llu\n", dirs[d],
            (unsigned long long)media_sum(m, MFIELD(bytes) + (size_t)d * sizeof(tg_counter)));
    for (size_t i = 0; i < sizeof(k_counters) / sizeof(k_counters[0]); i++)
        out_printf(o, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", k_counters[i].name,
                   k_counters[i].help, k_counters[i].name, k_counters[i].name,
                   (unsigned long long)media_sum(m, k_counters[i].off));
}

// render_signer writes the counters of the pool that signs with our key (signer.h).
static void render_signer(struct out *o, const struct tg_signer_stats *s) {
    out_printf(o,
               "# HELP tlsgate_signatures_total Signatures with our key, by where they were made "
               "and result.\n# TYPE tlsgate_signatures_total counter\n"
               "tlsgate_signatures_total{by=\"pool\",result=\"ok\"} %llu\n"
               "tlsgate_signatures_total{by=\"pool\",result=\"failed\"} %llu\n"
               "tlsgate_signatures_total{by=\"pool\",result=\"queue_full\"} %llu\n"
               "tlsgate_signatures_total{by=\"pool\",result=\"keyd_down\"} %llu\n"
               "# HELP tlsgate_sign_queue Signatures queued or being made now.\n"
               "# TYPE tlsgate_sign_queue gauge\ntlsgate_sign_queue %u\n",
               (unsigned long long)atomic_load_explicit(&s->signed_ok, memory_order_relaxed),
               (unsigned long long)atomic_load_explicit(&s->failed, memory_order_relaxed),
               (unsigned long long)atomic_load_explicit(&s->queue_full, memory_order_relaxed),
               (unsigned long long)atomic_load_explicit(&s->keyd_down, memory_order_relaxed),
               (unsigned)atomic_load_explicit(&s->depth, memory_order_relaxed));
}

// render_kfeats writes what the kernel offered at start-up (kfeat.h), used or not.
static void render_kfeats(struct out *o, const struct tg_kfeats *k) {
    out_printf(o, "# HELP tlsgate_kernel_feature Optional kernel features found at start-up "
                  "(1) or not (0).\n# TYPE tlsgate_kernel_feature gauge\n");
    for (unsigned f = 0; f < TG_KFEAT_NUM; f++)
        out_printf(o, "tlsgate_kernel_feature{feature=\"%s\"} %u\n",
                   tg_kfeat_name((enum tg_kfeat)f), (unsigned)k->has[f]);
}

int tg_metrics_render(const struct tg_metrics *m, const char *extra, char **out, size_t *out_len) {
    struct out o = {.data = malloc(4096), .cap = 4096};
    if (o.data == NULL)
        return 0;
    o.data[0] = '\0';
    const size_t nl = m->num_listeners;

    out_printf(&o, "# HELP tlsgate_connections_active Connections open now.\n"
                   "# TYPE tlsgate_connections_active gauge\n");
    for (size_t l = 0; l < nl; l++) {
        uint64_t opened = sum(m, l, FIELD(conns_opened));
        uint64_t closed = sum(m, l, FIELD(conns_closed));
        out_printf(&o, "tlsgate_connections_active{listener=\"%s\",kind=\"%s\"} %llu\n",
                   m->listener_names[l], m->listener_kinds[l],
                   (unsigned long long)(opened - closed));
    }
    if (m->signer != NULL)
        render_signer(&o, m->signer);
    if (m->kfeats != NULL)
        render_kfeats(&o, m->kfeats);
    out_printf(&o, "# HELP tlsgate_connections_total Connections accepted.\n"
                   "# TYPE tlsgate_connections_total counter\n");
    for (size_t l = 0; l < nl; l++)
        out_printf(&o, "tlsgate_connections_total{listener=\"%s\",kind=\"%s\"} %llu\n",
                   m->listener_names[l], m->listener_kinds[l],
                   (unsigned long long)sum(m, l, FIELD(conns_opened)));
    out_printf(&o, "# HELP tlsgate_handshakes_total TLS handshakes by result (ok or the refusal "
                   "reason).\n# TYPE tlsgate_handshakes_total counter\n");
    for (size_t l = 0; l < nl; l++) {
        for (int v = 0; v < TG_VERDICT_NUM; v++) {
            uint64_t n = sum(m, l, FIELD(handshakes) + (size_t)v * sizeof(tg_counter));
            // Every listener always shows ok; other results once they occurred.
            if (n == 0 && v != TG_VERDICT_OK)
                continue;
            out_printf(&o, "tlsgate_handshakes_total{listener=\"%s\",result=\"%s\"} %llu\n",
                       m->listener_names[l], tg_verdict_name((enum tg_verdict)v),
                       (unsigned long long)n);
        }
    }
    out_printf(&o, "# HELP tlsgate_bytes_total Plaintext bytes relayed; up is from the accepted "
                   "side toward the far side.\n# TYPE tlsgate_bytes_total counter\n");
    for (size_t l = 0; l < nl; l++) {
        out_printf(&o, "tlsgate_bytes_total{listener=\"%s\",direction=\"up\"} %llu\n",
                   m->listener_names[l], (unsigned long long)sum(m, l, FIELD(bytes_up)));
        out_printf(&o, "tlsgate_bytes_total{listener=\"%s\",direction=\"down\"} %llu\n",
                   m->listener_names[l], (unsigned long long)sum(m, l, FIELD(bytes_down)));
    }
    out_printf(&o, "# HELP tlsgate_upstream_connect_errors_total Failed connects to a forward "
                   "or connect target.\n# TYPE tlsgate_upstream_connect_errors_total counter\n");
    for (size_t l = 0; l < nl; l++)
        out_printf(&o, "tlsgate_upstream_connect_errors_total{listener=\"%s\"} %llu\n",
                   m->listener_names[l],
                   (unsigned long long)sum(m, l, FIELD(upstream_connect_errors)));
    out_printf(&o, "# HELP tlsgate_connections_rejected_total Connections closed at accept.\n"
                   "# TYPE tlsgate_connections_rejected_total counter\n");
    for (size_t l = 0; l < nl; l++)
        for (int r = 0; r < TG_REJECT_NUM; r++)
            out_printf(
                &o, "tlsgate_connections_rejected_total{listener=\"%s\",reason=\"%s\"} %llu\n",
                m->listener_names[l], k_reject_names[r],
                (unsigned long long)sum(m, l, FIELD(rejected) + (size_t)r * sizeof(tg_counter)));
    out_printf(&o, "# HELP tlsgate_accept_paused_total Times accepting paused for lack of file "
                   "descriptors.\n# TYPE tlsgate_accept_paused_total counter\n");
    for (size_t l = 0; l < nl; l++)
        out_printf(&o, "tlsgate_accept_paused_total{listener=\"%s\"} %llu\n", m->listener_names[l],
                   (unsigned long long)sum(m, l, FIELD(accept_paused)));
    out_printf(&o, "# HELP tlsgate_recv_nobufs_total Receives that found no free buffer and were "
                   "re-armed later.\n# TYPE tlsgate_recv_nobufs_total counter\n");
    for (size_t l = 0; l < nl; l++)
        out_printf(&o, "tlsgate_recv_nobufs_total{listener=\"%s\"} %llu\n", m->listener_names[l],
                   (unsigned long long)sum(m, l, FIELD(recv_nobufs)));
    out_printf(&o, "# HELP tlsgate_handshakes_evicted_total Handshakes in progress closed to admit "
                   "new connections while max_handshakes was reached.\n"
                   "# TYPE tlsgate_handshakes_evicted_total counter\n");
    for (size_t l = 0; l < nl; l++)
        out_printf(&o, "tlsgate_handshakes_evicted_total{listener=\"%s\"} %llu\n",
                   m->listener_names[l], (unsigned long long)sum(m, l, FIELD(hs_evicted)));
    render_sip(m, &o);
    render_targets(m, &o);
    if (m->media_enabled)
        render_media(m, &o);
    if (extra != NULL)
        out_printf(&o, "%s", extra);
    if (o.failed) {
        free(o.data);
        return 0;
    }
    *out = o.data;
    *out_len = o.len;
    return 1;
}
