#ifndef TLSGATE_ADMIN_H
#define TLSGATE_ADMIN_H

#include <stdatomic.h>

#include "tlsgate/config.h"
#include "tlsgate/metrics.h"

// The admin listener: plain HTTP on a management address (libmicrohttpd, a small pool of its
// own threads). It depends on no certificate, so it keeps working whatever state the TLS side
// is in.
//   GET /healthz  200 "ok" (503 "draining" once shutdown has begun)
//   GET /metrics  Prometheus text
//   GET /status   JSON: version, uptime, workers, listeners with live counts, and the control's
//                 part: our certificate and its rule results, the CA bundle, the last reload,
//                 the peers recently verified. Needs the token when one is configured.
//   POST /reload  builds and publishes a new generation; 200 with JSON, or 422 with the reason.
//                 Needs the token when one is configured.
// Who may ask what is decided by adminpolicy (source allow-list, Host, Origin, Content-Type,
// method, bearer token); a refusal is answered with its status, logged (`admin_refused`) and
// counted in tlsgate_admin_refused_total{reason}. A source outside `allow` is dropped when
// accepted, before a byte is read.
struct tg_admin;
struct tg_control;
struct tg_peers;

struct tg_resolver;

struct tg_admin_info {
    const struct tg_config *cfg;
    const struct tg_metrics *metrics;
    unsigned num_workers;
    const _Atomic int *draining;
    long long started;            // CLOCK_REALTIME seconds
    struct tg_control *control;   // may be NULL (no reload, no certificate status)
    const struct tg_peers *peers; // recently verified peers (may be NULL)
    struct tg_resolver *resolver; // connect targets' DNS (may be NULL)
};

// tg_admin_check_config reads and checks |cfg|'s `[admin] token_file` when there is one: a
// regular file that neither group nor others may read or write, holding one token of
// TG_ADMIN_TOKEN_MIN..MAX printable ASCII characters without blanks (a final newline is
// ignored). Returns 1, or 0 with `FILE:LINE: admin.token_file: why` in |err|.
int tg_admin_check_config(const struct tg_config *cfg, char *err, size_t err_len);

// tg_admin_start starts serving on |info->cfg->admin_listen|. |info| is borrowed and must
// outlive the admin. The token file is read here, once (see tg_admin_check_config). Returns
// NULL with a reason in |err| on failure.
struct tg_admin *tg_admin_start(const struct tg_admin_info *info, char *err, size_t err_len);

// tg_admin_stop stops serving and frees |a|. NULL is a no-op.
void tg_admin_stop(struct tg_admin *a);

#endif // TLSGATE_ADMIN_H
