#ifndef TLSGATE_KFEAT_H
#define TLSGATE_KFEAT_H

#include <stdint.h>

// What the kernel offers the data path beyond plain sockets, probed once at start-up. None of
// it is ever required: a feature missing here is a feature not used, never a refusal to start.
// The probe does I/O (a loopback TCP pair, a throw-away io_uring); the result is plain data,
// shown in the start-up log and as `tlsgate_kernel_feature{feature=...}` (metrics.h).

enum tg_kfeat {
    TG_KFEAT_KTLS = 0,    // the "tls" TCP upper-layer protocol attaches (kernel TLS)
    TG_KFEAT_SEND_ZC,     // io_uring knows IORING_OP_SEND_ZC (zero-copy send)
    TG_KFEAT_SO_ZEROCOPY, // a TCP socket takes SO_ZEROCOPY (send with MSG_ZEROCOPY)
    TG_KFEAT_NUM
};

// tg_kfeats is the result of one probe: |has[f]| is 1 when feature |f| is there.
struct tg_kfeats {
    uint8_t has[TG_KFEAT_NUM];
};

// tg_kfeat_probe probes every feature into |out|. A probe that cannot run (no loopback, no
// io_uring) reports the feature as missing.
void tg_kfeat_probe(struct tg_kfeats *out);

// tg_kfeat_name returns the feature's name as it appears in logs and metrics ("ktls", ...).
const char *tg_kfeat_name(enum tg_kfeat f);

#endif // TLSGATE_KFEAT_H
