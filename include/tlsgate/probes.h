#ifndef TLSGATE_PROBES_H
#define TLSGATE_PROBES_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/conn.h"
#include "tlsgate/prober.h"

// The OPTIONS keepalive toward the provider (outbound SIP listeners, worker 0 only): one
// mutual-TLS connection per connect target, made by the same connect and client-handshake code
// as a PBX's connection but with no plain side (TG_F_PROBE), driven by the pure prober
// (prober.h). The verdict is published in the metrics' target table, which every worker reads
// when it picks a target (upstream.c).

// tg_probes_listener_probed says whether listener |lc| is probed.
int tg_probes_listener_probed(const struct tg_listener_conf *lc);

// tg_probes_target_down says whether target |t| of |listener| is marked down. Any thread.
int tg_probes_target_down(const struct tg_metrics *m, size_t listener, size_t t);

// tg_probes_init sets up the probes of worker 0's |cs|, if any listener wants them. Returns 0
// when memory is short.
int tg_probes_init(struct tg_conns *cs);
void tg_probes_cleanup(struct tg_conns *cs);

// tg_probes_tick sends the OPTIONS that are due and fails those that waited too long.
void tg_probes_tick(struct tg_conns *cs);

// tg_probes_close_all ends the probe connections when the worker drains.
void tg_probes_close_all(struct tg_conns *cs);

// tg_probes_send writes one OPTIONS on the open probe connection |c|.
void tg_probes_send(struct tg_conns *cs, struct tg_conn *c);

// tg_probes_read looks at what the target sent on probe connection |c|.
void tg_probes_read(struct tg_conns *cs, struct tg_conn *c);

// tg_probes_conn_gone runs when a probe connection's slot is freed.
void tg_probes_conn_gone(struct tg_conns *cs, struct tg_conn *c);

#endif // TLSGATE_PROBES_H
