// Run-time probe of the kernel's optional offers (see include/tlsgate/kfeat.h).
#include "tlsgate/kfeat.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <liburing.h>

// loopback_pair connects two TCP sockets over 127.0.0.1: kTLS attaches only to an established
// TCP connection. Returns 1 with both descriptors, 0 when loopback is not usable.
static int loopback_pair(int *out_a, int *out_b) {
    int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (l < 0)
        return 0;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sa);
    int a = -1, b = -1;
    if (bind(l, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(l, 1) != 0 ||
        getsockname(l, (struct sockaddr *)&sa, &len) != 0)
        goto out;
    a = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (a < 0 || connect(a, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        goto out;
    b = accept4(l, NULL, NULL, SOCK_CLOEXEC);
out:
    close(l);
    if (b < 0) {
        if (a >= 0)
            close(a);
        return 0;
    }
    *out_a = a;
    *out_b = b;
    return 1;
}

// probe_ktls attaches the "tls" upper-layer protocol to a connected socket. This is where the
// kernel says whether kTLS exists (the module loaded, or loadable by us); the keys it would
// then need are another matter (docs/PERFORMANCE.md, issue 11).
static int probe_ktls(void) {
    int a, b;
    if (!loopback_pair(&a, &b))
        return 0;
    int ok = setsockopt(a, IPPROTO_TCP, TCP_ULP, "tls", sizeof("tls") - 1) == 0;
    close(a);
    close(b);
    return ok;
}

static int probe_so_zerocopy(void) {
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        return 0;
    int one = 1;
    int ok = setsockopt(s, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) == 0;
    close(s);
    return ok;
}

static int probe_send_zc(void) {
    struct io_uring_probe *p = io_uring_get_probe();
    if (p == NULL)
        return 0;
    int ok = io_uring_opcode_supported(p, IORING_OP_SEND_ZC);
    io_uring_free_probe(p);
    return ok != 0;
}

void tg_kfeat_probe(struct tg_kfeats *out) {
    memset(out, 0, sizeof(*out));
    out->has[TG_KFEAT_KTLS] = (uint8_t)probe_ktls();
    out->has[TG_KFEAT_SEND_ZC] = (uint8_t)probe_send_zc();
    out->has[TG_KFEAT_SO_ZEROCOPY] = (uint8_t)probe_so_zerocopy();
}

const char *tg_kfeat_name(enum tg_kfeat f) {
    static const char *const names[TG_KFEAT_NUM] = {
        [TG_KFEAT_KTLS] = "ktls",
        [TG_KFEAT_SEND_ZC] = "send_zc",
        [TG_KFEAT_SO_ZEROCOPY] = "so_zerocopy",
    };
    return (unsigned)f < TG_KFEAT_NUM ? names[f] : "?";
}
