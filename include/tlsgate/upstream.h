#ifndef TLSGATE_UPSTREAM_H
#define TLSGATE_UPSTREAM_H

#include <stdint.h>

#include "tlsgate/conn.h"

// The far side of a connection: the backend of an inbound listener (connected after the
// handshake), the provider targets of an outbound one (connected before it), and failover
// from a target that refused, reset or failed the handshake to the next one that is not down.

// tg_upstream_pick returns the first target of |listener| from |from| on that is not marked
// down by the OPTIONS prober, or |from| when all of them are (they are then still tried in
// order).
uint8_t tg_upstream_pick(const struct tg_conns *cs, uint16_t listener, unsigned from);

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
