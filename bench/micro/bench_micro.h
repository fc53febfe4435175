#ifndef TLSGATE_BENCH_MICRO_H
#define TLSGATE_BENCH_MICRO_H

#include <stdio.h>

#include "bench_world.h"

// The micro benchmark groups. Each registers its benchmarks with tg_bench (borrowing |w|, which
// must outlive the run) and returns 1 on success.

// tgb_register_crypto registers the crypto floor: `floor/*`, the public-key and AEAD primitives
// a handshake and a record are made of, on the keys of |w|, and `floor/handshake_tls13_*`, the
// public-key work of one full mutual handshake done as a plain sequence.
int tgb_register_crypto(struct tgb_world *w);

// tgb_register_tls registers `handshake/full/*`, `handshake/resumed/*`, `record/seal/*` and
// `record/open/*` over the contexts of |w|.
int tgb_register_tls(struct tgb_world *w);

// tgb_register_policy registers `policy/check_peer` and `policy/check_peer_parsed` over the
// leaf <- intermediate <- root chain of |w|.
int tgb_register_policy(struct tgb_world *w);

// tgb_register_srtp registers `srtp/protect/*` and `srtp/unprotect/*` (a 172-byte RTP packet,
// each suite, tlsgate's proxy/srtp.c beside libsrtp2) and the primitives srtp.c chose between.
int tgb_register_srtp(void);

// tgb_print_floor_summary writes, after a run, the floor of a full handshake (measured, and as
// the sum of its primitives) and each full handshake's multiple of it, to |out|. It compares CPU
// times, which a busy machine disturbs less than real times.
void tgb_print_floor_summary(FILE *out);

#endif // TLSGATE_BENCH_MICRO_H
