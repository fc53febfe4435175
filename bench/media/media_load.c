// tg-media-load: the media load of bench/media/media_bench.py.
//
//   tg-media-load echo --bind 127.0.0.1:PORT [--seconds S]
//       the PBX's media end: every datagram back to its source (recvmmsg/sendmmsg). Stops
//       after S seconds or at SIGTERM/SIGINT, and prints {"echoed": N}.
//   tg-media-load load --bind 127.0.0.1:PORT --calls FILE --key B64 --seconds S [--pps 50]
//       the provider's media end for every call in FILE (one line per call: the relay's
//       provider-side RTP port on 127.0.0.1, then optionally the relay's SRTP key for that
//       call, base64, from its SDP answer): SRTP (AES_CM_128_HMAC_SHA1_80, key B64, SSRC = line
//       number; the project's own transform, proxy/srtp.c) with 160-byte payloads at --pps packets
//       per second per call, all calls spread evenly over each 20 ms; the echoes come back through
//       the relay, and the time from send to receive of each (matched by SSRC and sequence number
//       in the clear RTP header) goes into a histogram. The load wakes every millisecond (no busy
//       loop: it shares its CPU with the echo), sends what is due with sendmmsg in chunks of 8
//       stamped just before each chunk, and takes each echo's arrival time from the kernel
//       (SO_TIMESTAMPNS), so that how late it drains does not count in the round trip. With a key
//       on the line, every echo of that call must also unprotect with it (a failure is
//       counted, not received).
//       Prints one JSON line: sent, received, auth_failures, drops (at the load's own socket:
//       its receive buffer was full), p50_us, p99_us, max_us.
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "tlsgate/srtp.h"

#define PAYLOAD 160
#define BATCH 256
#define STAMP 8         // packets per sendmmsg: one send timestamp each
#define TICK_NS 1000000 // the load's wake-up period
#define HIST_US 200000  // 1 us buckets up to 200 ms; later ones in the last
// SRTP runs on proxy/srtp.c (BoringSSL's AES and HMAC, ~0.25 us a packet), not on Debian's
// libsrtp2 (NSS, ~2 us, growing with the number of contexts alive): with libsrtp2 the load
// itself fell behind at ~1,500 calls and could check the echoes of 64 calls only. libsrtp2
// stays the oracle of proxy/srtp.c in the unit tests (test_srtp), packet for packet.

static void die(const char *what) {
    fprintf(stderr, "tg-media-load: %s\n", what);
    exit(2);
}

// CLOCK_REALTIME: the clock of the kernel's receive timestamps (SO_TIMESTAMPNS).
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void parse_addr(const char *s, struct sockaddr_in *out) {
    char host[64];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        die("address must be IPv4:PORT");
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(out, 0, sizeof(*out));
    out->sin_family = AF_INET;
    out->sin_port = htons((uint16_t)atoi(colon + 1));
    if (inet_pton(AF_INET, host, &out->sin_addr) != 1)
        die("bad IPv4 address");
}

static int udp_bound(const char *addr) {
    struct sockaddr_in sa;
    parse_addr(addr, &sa);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    int big = 8 << 20;
    // Past rmem_max where we may (root): the load must not be what drops packets.
    if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &big, sizeof(big)) != 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &big, sizeof(big));
    if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big)) != 0)
        setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &big, sizeof(big));
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("bind failed");
    return fd;
}

static volatile sig_atomic_t g_stop;

static void on_stop(int sig) {
    (void)sig;
    g_stop = 1;
}

static int echo(const char *bind_s, unsigned seconds) {
    int fd = udp_bound(bind_s);
    struct sigaction sa = {.sa_handler = on_stop};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    static uint8_t bufs[BATCH][2048];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    struct sockaddr_in from[BATCH];
    uint64_t end = now_ns() + (uint64_t)seconds * 1000000000u, n = 0;
    while (now_ns() < end && !g_stop) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 100) <= 0)
            continue;
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){.iov_base = bufs[i], .iov_len = sizeof(bufs[i])};
            msgs[i].msg_hdr = (struct msghdr){.msg_name = &from[i],
                                              .msg_namelen = sizeof(from[i]),
                                              .msg_iov = &iov[i],
                                              .msg_iovlen = 1};
        }
        int r = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0)
            continue;
        for (int i = 0; i < r; i++)
            iov[i].iov_len = msgs[i].msg_len;
        sendmmsg(fd, msgs, (unsigned)r, 0);
        n += (uint64_t)r;
    }
    printf("{\"echoed\": %llu}\n", (unsigned long long)n);
    return 0;
}

static size_t b64_decode(const char *in, uint8_t *out, size_t cap) {
    static const char k[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *in != '\0' && *in != '='; in++) {
        const char *p = strchr(k, *in);
        if (p == NULL)
            die("bad base64");
        acc = (acc << 6) | (uint32_t)(p - k);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n == cap)
                die("key too long");
            out[n++] = (uint8_t)(acc >> bits);
        }
    }
    return n;
}

// srtp_ctx makes a context of AES_CM_128_HMAC_SHA1_80 for the 30-byte master key and salt in
// base64 |key_s| that protects or unprotects. One per call and direction: a context keeps a
// few SSRCs only (TG_SRTP_MAX_SSRC).
static struct tg_srtp *srtp_ctx(const char *key_s, int protect) {
    uint8_t key[64];
    if (b64_decode(key_s, key, sizeof(key)) != TG_SRTP_KEY_LEN + 14)
        die("the key must be 30 bytes");
    struct tg_srtp_params p;
    memset(&p, 0, sizeof(p));
    p.suite = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    memcpy(p.key, key, TG_SRTP_KEY_LEN);
    memcpy(p.salt, key + TG_SRTP_KEY_LEN, 14);
    struct tg_srtp *s = tg_srtp_new(&p, protect);
    if (s == NULL)
        die("tg_srtp_new");
    return s;
}

struct call {
    struct sockaddr_in to;
    struct tg_srtp *tx; // the load's key: what this call sends
    struct tg_srtp *rx; // the relay's key for this call, or NULL: echoes are not checked
    uint16_t seq;
    uint64_t sent_ns[64]; // by seq % 64
};

struct rx {
    uint32_t *hist;
    uint64_t received, max_us, auth_failures, drops;
};

// rx_time is the kernel's receive timestamp of |m| (SO_TIMESTAMPNS), or now without one;
// it also keeps the socket's drop count (SO_RXQ_OVFL) in |drops|.
static uint64_t rx_time(struct msghdr *m, uint64_t *drops) {
    uint64_t t = 0;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(m); c != NULL; c = CMSG_NXTHDR(m, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS) {
            struct timespec ts;
            memcpy(&ts, CMSG_DATA(c), sizeof(ts));
            t = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
        } else if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SO_RXQ_OVFL) {
            uint32_t d;
            memcpy(&d, CMSG_DATA(c), sizeof(d));
            *drops = d;
        }
    }
    return t != 0 ? t : now_ns();
}

// drain takes every echo waiting (recvmmsg) and records its round trip.
static void drain(int fd, struct call *calls, size_t ncalls, struct rx *x) {
    static uint8_t rbuf[BATCH][2048];
    static uint8_t cbuf[BATCH][CMSG_SPACE(sizeof(struct timespec)) + CMSG_SPACE(4)];
    struct mmsghdr msgs[BATCH];
    struct iovec iov[BATCH];
    for (;;) {
        for (int i = 0; i < BATCH; i++) {
            iov[i] = (struct iovec){.iov_base = rbuf[i], .iov_len = sizeof(rbuf[i])};
            msgs[i].msg_hdr = (struct msghdr){.msg_iov = &iov[i],
                                              .msg_iovlen = 1,
                                              .msg_control = cbuf[i],
                                              .msg_controllen = sizeof(cbuf[i])};
        }
        int r = recvmmsg(fd, msgs, BATCH, MSG_DONTWAIT, NULL);
        if (r <= 0)
            return;
        for (int i = 0; i < r; i++) {
            uint64_t rt = rx_time(&msgs[i].msg_hdr, &x->drops);
            const uint8_t *p = rbuf[i];
            if (msgs[i].msg_len < 12)
                continue;
            uint32_t ssrc = ntohl(*(const uint32_t *)(const void *)(p + 8));
            uint16_t seq = (uint16_t)((p[2] << 8) | p[3]);
            if (ssrc == 0 || ssrc > ncalls)
                continue;
            size_t len = msgs[i].msg_len;
            if (calls[ssrc - 1].rx != NULL &&
                tg_srtp_unprotect(calls[ssrc - 1].rx, rbuf[i], len, &len) != TG_SRTP_OK) {
                x->auth_failures++;
                continue;
            }
            uint64_t sent_ns = calls[ssrc - 1].sent_ns[seq % 64];
            uint64_t us = rt > sent_ns ? (rt - sent_ns) / 1000 : 0;
            x->hist[us < HIST_US ? us : HIST_US]++;
            if (us > x->max_us)
                x->max_us = us;
            x->received++;
        }
        if (r < BATCH)
            return;
    }
}

// The send side: packets protected into a batch, sent with sendmmsg in chunks of STAMP, each
// call's send time taken just before its chunk goes.
struct tx {
    int fd;
    int n;
    uint8_t pkt[BATCH][12 + PAYLOAD + TG_SRTP_OVERHEAD];
    struct iovec iov[BATCH];
    struct mmsghdr msgs[BATCH];
    struct call *who[BATCH];
    uint16_t seq[BATCH];
    uint64_t sent;
};

static void flush(struct tx *q) {
    for (int off = 0; off < q->n; off += STAMP) {
        int k = q->n - off < STAMP ? q->n - off : STAMP;
        uint64_t t = now_ns();
        for (int i = off; i < off + k; i++)
            q->who[i]->sent_ns[q->seq[i] % 64] = t;
        int r = sendmmsg(q->fd, q->msgs + off, (unsigned)k, 0);
        if (r > 0)
            q->sent += (uint64_t)r;
    }
    q->n = 0;
}

static void queue(struct tx *q, struct call *c, uint32_t ssrc) {
    uint8_t *pkt = q->pkt[q->n];
    pkt[0] = 0x80;
    pkt[1] = 0;
    pkt[2] = (uint8_t)(c->seq >> 8);
    pkt[3] = (uint8_t)c->seq;
    uint32_t ts = (uint32_t)c->seq * 160u;
    memcpy(pkt + 4, &(uint32_t){htonl(ts)}, 4);
    memcpy(pkt + 8, &(uint32_t){htonl(ssrc)}, 4);
    memset(pkt + 12, (int)(c->seq & 0xff), PAYLOAD);
    size_t len = 12 + PAYLOAD;
    if (tg_srtp_protect(c->tx, pkt, len, sizeof(q->pkt[0]), &len) != TG_SRTP_OK)
        die("tg_srtp_protect");
    q->iov[q->n] = (struct iovec){.iov_base = pkt, .iov_len = len};
    q->msgs[q->n].msg_hdr = (struct msghdr){.msg_name = &c->to,
                                            .msg_namelen = sizeof(c->to),
                                            .msg_iov = &q->iov[q->n],
                                            .msg_iovlen = 1};
    q->who[q->n] = c;
    q->seq[q->n] = c->seq;
    c->seq++;
    if (++q->n == BATCH)
        flush(q);
}

static int load(const char *bind_s, const char *calls_path, const char *key_s, unsigned seconds,
                unsigned pps) {
    FILE *f = fopen(calls_path, "r");
    if (f == NULL)
        die("cannot open the calls file");
    size_t ncalls = 0, cap = 1024;
    struct call *calls = calloc(cap, sizeof(*calls));
    char line[256], rxkey[128];
    unsigned port;
    while (fgets(line, sizeof(line), f) != NULL) {
        int fields = sscanf(line, "%u %127s", &port, rxkey);
        if (fields < 1)
            continue;
        if (ncalls == cap) {
            cap *= 2;
            calls = realloc(calls, cap * sizeof(*calls));
            memset(calls + ncalls, 0, (cap - ncalls) * sizeof(*calls));
        }
        parse_addr("127.0.0.1:0", &calls[ncalls].to);
        calls[ncalls].to.sin_port = htons((uint16_t)port);
        calls[ncalls].tx = srtp_ctx(key_s, 1);
        if (fields == 2)
            calls[ncalls].rx = srtp_ctx(rxkey, 0);
        ncalls++;
    }
    fclose(f);
    if (ncalls == 0 || pps == 0)
        die("no calls");
    int fd = udp_bound(bind_s);
    int on = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0 ||
        setsockopt(fd, SOL_SOCKET, SO_RXQ_OVFL, &on, sizeof(on)) != 0)
        die("SO_TIMESTAMPNS/SO_RXQ_OVFL");
    struct rx x = {.hist = calloc(HIST_US + 1, sizeof(uint32_t))};
    static struct tx q;
    q.fd = fd;
    const uint64_t period = 1000000000u / pps; // per call
    const uint64_t start = now_ns(), end = start + (uint64_t)seconds * 1000000000u;
    size_t next_call = 0;
    uint64_t round_start = start;
    for (uint64_t tick = start;; tick += TICK_NS) {
        uint64_t t = now_ns();
        if (t >= end + 500000000u) // half a second for the last echoes
            break;
        // Send what is due: call i at round_start + i * period / ncalls.
        while (t < end && round_start + (uint64_t)next_call * period / ncalls <= t) {
            queue(&q, &calls[next_call], (uint32_t)next_call + 1);
            if (++next_call == ncalls) {
                next_call = 0;
                round_start += period;
            }
        }
        flush(&q);
        drain(fd, calls, ncalls, &x);
        // Sleep to the next tick (skipping those already past: behind schedule, no sleep).
        uint64_t now = now_ns();
        if (tick + TICK_NS > now) {
            uint64_t d = tick + TICK_NS - now;
            struct timespec ts = {.tv_sec = (time_t)(d / 1000000000u),
                                  .tv_nsec = (long)(d % 1000000000u)};
            nanosleep(&ts, NULL);
        } else {
            tick = now - TICK_NS;
        }
    }
    uint64_t sent = q.sent;
    uint64_t acc = 0, p50 = 0, p99 = 0, received = x.received, max_us = x.max_us;
    for (uint64_t us = 0; us <= HIST_US; us++) {
        acc += x.hist[us];
        if (p50 == 0 && acc * 2 >= received)
            p50 = us;
        if (p99 == 0 && acc * 100 >= received * 99) {
            p99 = us;
            break;
        }
    }
    printf("{\"calls\": %zu, \"sent\": %llu, \"received\": %llu, \"auth_failures\": %llu, "
           "\"drops\": %llu, \"p50_us\": %llu, \"p99_us\": %llu, \"max_us\": %llu}\n",
           ncalls, (unsigned long long)sent, (unsigned long long)received,
           (unsigned long long)x.auth_failures, (unsigned long long)x.drops,
           (unsigned long long)p50, (unsigned long long)p99, (unsigned long long)max_us);
    for (size_t i = 0; i < ncalls; i++) {
        tg_srtp_free(calls[i].tx);
        tg_srtp_free(calls[i].rx);
    }
    free(x.hist);
    free(calls);
    close(fd);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2)
        die("usage: tg-media-load echo|load ... (see the top of media_load.c)");
    const char *bind_s = NULL, *calls = NULL, *key = NULL;
    unsigned seconds = 5, pps = 50;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--bind") == 0)
            bind_s = argv[i + 1];
        else if (strcmp(argv[i], "--calls") == 0)
            calls = argv[i + 1];
        else if (strcmp(argv[i], "--key") == 0)
            key = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = (unsigned)atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--pps") == 0)
            pps = (unsigned)atoi(argv[i + 1]);
        else
            die("unknown option");
    }
    if (bind_s == NULL)
        die("--bind is required");
    if (strcmp(argv[1], "echo") == 0)
        return echo(bind_s, seconds);
    if (strcmp(argv[1], "load") == 0 && calls != NULL && key != NULL)
        return load(bind_s, calls, key, seconds, pps);
    die("usage: tg-media-load echo|load ... (see the top of media_load.c)");
    return 2;
}
