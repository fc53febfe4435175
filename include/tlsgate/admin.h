#ifndef TLSGATE_ADMIN_H
#define TLSGATE_ADMIN_H

#include <stdatomic.h>

#include "tlsgate/config.h"
#include "tlsgate/metrics.h"

// The admin listener: plain HTTP on a management address (libmicrohttpd, its own thread).
// It depends on no certificate, so it keeps working whatever state the TLS side is in.
//   GET /healthz  200 "ok" (503 "draining" once shutdown has begun)
//   GET /metrics  Prometheus text
//   GET /status   JSON: version, uptime, workers, listeners with live counts, and the control's
//                 part: our certificate and its rule results, the CA bundle, the last reload,
//                 the peers recently verified
//   POST /reload  builds and publishes a new generation; 200 with JSON, or 422 with the reason
struct tg_admin;
struct tg_control;
struct tg_peers;

struct tg_admin_info {
    const struct tg_config *cfg;
    const struct tg_metrics *metrics;
    unsigned num_workers;
    const _Atomic int *draining;
    long long started;            // CLOCK_REALTIME seconds
    struct tg_control *control;   // may be NULL (no reload, no certificate status)
    const struct tg_peers *peers; // recently verified peers (may be NULL)
};

// tg_admin_start starts serving on |info->cfg->admin_listen|. |info| is borrowed and must
// outlive the admin. Returns NULL with a reason in |err| on failure.
struct tg_admin *tg_admin_start(const struct tg_admin_info *info, char *err, size_t err_len);

// tg_admin_stop stops serving and frees |a|. NULL is a no-op.
void tg_admin_stop(struct tg_admin *a);

#endif // TLSGATE_ADMIN_H
