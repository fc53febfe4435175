#ifndef TLSGATE_UPSTREAM_H
#define TLSGATE_UPSTREAM_H

#include <stdint.h>

#include "tlsgate/conn.h"

// The far side of a connection: the backend of an inbound listener (connected after the
// handshake), the provider targets of an outbound one (connected before it), and failover
// from a target that refused, reset or failed the handshake to the next one that is not down.

// tg_upstream_init_health names the targets of every outbound listener in the metrics' target
// table (before the workers start).
void tg_upstream_init_health(struct tg_metrics *m, const struct tg_config *cfg);

// tg_upstream_arm_attempt (re-)arms the deadline of the current attempt of an outbound
// connection: |phase_ms| from now (connect_timeout_ms while connecting, handshake_timeout_ms in
// the handshake), never past the end of the whole chain (failover_timeout_ms from its start).
void tg_upstream_arm_attempt(struct tg_conns *cs, struct tg_conn *c, uint32_t phase_ms);

// tg_upstream_attempt_expired handles an attempt whose deadline passed: a connect or a
// handshake that got no answer fails over to the next target like a refusal would, or ends the
// connection when none is left or the chain's time is up.
void tg_upstream_attempt_expired(struct tg_conns *cs, struct tg_conn *c);

// tg_upstream_verified marks the target of an outbound connection up after its handshake.
void tg_upstream_verified(struct tg_conns *cs, struct tg_conn *c);

// tg_upstream_handshake_failed marks the address of a failed outbound handshake down (and its
// target, once none of the target's addresses is up).
void tg_upstream_handshake_failed(struct tg_conns *cs, struct tg_conn *c, const char *why);

// tg_upstream_first chooses the first address of a new outbound connection from the worker's
// current resolver snapshot (which the connection holds until it ends): the first, in the
// configured order of the targets and the DNS order of each target's addresses, whose target
// is not marked down by the OPTIONS prober and which is not within the back-off of a failure
// (else the first). Later attempts take the next address not tried yet, preferring those that
// are up; a connection tries each address at most once. Returns 0 when the listener has no
// address.
int tg_upstream_first(struct tg_conns *cs, struct tg_conn *c);

// tg_upstream_probe_target points the OPTIONS connection |c| at the first address of target
// |target|. Returns 0 when the target has no address now.
int tg_upstream_probe_target(struct tg_conns *cs, struct tg_conn *c, size_t target);

// tg_upstream_connect opens the far-side socket of |c| toward its current target.
void tg_upstream_connect(struct tg_conns *cs, struct tg_conn *c);

// tg_upstream_on_connect handles the connect completion |res|.
void tg_upstream_on_connect(struct tg_conns *cs, struct tg_conn *c, int res);

// tg_upstream_may_retry says whether a failed handshake of |c| moves on to another target.
int tg_upstream_may_retry(const struct tg_conns *cs, const struct tg_conn *c);

// tg_upstream_retry runs once every completion for a refused target's socket has arrived: the
// TLS side is torn down and the next target tried, with the PBX's queued bytes kept.
void tg_upstream_retry(struct tg_conns *cs, struct tg_conn *c);

#endif // TLSGATE_UPSTREAM_H
