// tg-srtp-peer: the provider's media end in the integration tests. It protects RTP (and one
// RTCP sender report) with libsrtp2 — an implementation independent of proxy/srtp.c — sends
// it to tlsgate's provider-side port, and unprotects what comes back (the PBX stand-in echoes
// the RTP; tlsgate protects it again with its own key), checking every payload byte for byte
// against what it sent under that sequence number. Optionally it also sends packets under a
// wrong key, which tlsgate must drop (none of them may come back).
//
//   tg-srtp-peer --bind 127.0.0.1:PORT --to 127.0.0.1:PORT --suite AES_CM_128_HMAC_SHA1_80
//                --tx BASE64 --rx BASE64 [--count 50] [--interval-ms 20] [--seq 1000]
//                [--ssrc 0x1234] [--wrong BASE64 --wrong-count 5] [--wait-ms 2000]
//                [--rtcp-to 127.0.0.1:PORT --rtcp-bind 127.0.0.1:PORT]
// Prints one JSON line of counts and exits 0 (2 on bad arguments or a libsrtp2 failure).
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <srtp2/srtp.h>

#define PAYLOAD 160
#define MAX_PKT 1500
#define MAX_COUNT 100000

static void die(const char *what) {
    fprintf(stderr, "tg-srtp-peer: %s\n", what);
    exit(2);
}

static int b64_val(int c) {
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

static size_t b64_decode(const char *in, uint8_t *out, size_t cap) {
    size_t n = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (; *in != '\0' && *in != '='; in++) {
        int v = b64_val((unsigned char)*in);
        if (v < 0)
            die("bad base64");
        acc = (acc << 6) | (uint32_t)v;
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

static srtp_t make_session(const char *suite, const char *b64, int outbound) {
    static uint8_t keys[8][64]; // libsrtp2 keeps the pointer: one buffer per session
    static int nkeys;
    if (nkeys == 8)
        die("too many sessions");
    uint8_t *key = keys[nkeys++];
    size_t klen = b64_decode(b64, key, 64);
    srtp_policy_t pol;
    memset(&pol, 0, sizeof(pol));
    size_t want = 30;
    if (strcmp(suite, "AES_CM_128_HMAC_SHA1_80") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp);
    } else if (strcmp(suite, "AES_CM_128_HMAC_SHA1_32") == 0) {
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_32(&pol.rtp);
        srtp_crypto_policy_set_aes_cm_128_hmac_sha1_80(&pol.rtcp); // RFC 4568: SRTCP keeps 80
    } else if (strcmp(suite, "AEAD_AES_128_GCM") == 0) {
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtp);
        srtp_crypto_policy_set_aes_gcm_128_16_auth(&pol.rtcp);
        want = 28;
    } else {
        die("unknown suite");
    }
    if (klen != want)
        die("key||salt has the wrong length for the suite");
    pol.ssrc.type = outbound ? ssrc_any_outbound : ssrc_any_inbound;
    pol.key = key;
    pol.window_size = 128;
    srtp_t s;
    if (srtp_create(&s, &pol) != srtp_err_status_ok)
        die("srtp_create failed");
    return s;
}

static void fill_rtp(uint8_t *p, uint16_t seq, uint32_t ssrc) {
    p[0] = 0x80;
    p[1] = 0; // PCMU
    p[2] = (uint8_t)(seq >> 8);
    p[3] = (uint8_t)seq;
    uint32_t ts = (uint32_t)seq * 160u;
    p[4] = (uint8_t)(ts >> 24);
    p[5] = (uint8_t)(ts >> 16);
    p[6] = (uint8_t)(ts >> 8);
    p[7] = (uint8_t)ts;
    p[8] = (uint8_t)(ssrc >> 24);
    p[9] = (uint8_t)(ssrc >> 16);
    p[10] = (uint8_t)(ssrc >> 8);
    p[11] = (uint8_t)ssrc;
    for (int i = 0; i < PAYLOAD; i++)
        p[12 + i] = (uint8_t)(seq * 7u + (unsigned)i * 13u + 1u);
}

// fill_sr writes an RTCP sender report (no report blocks) of 28 bytes.
static size_t fill_sr(uint8_t *p, uint32_t ssrc, uint32_t n) {
    memset(p, 0, 28);
    p[0] = 0x80;
    p[1] = 200;
    p[3] = 6; // length in 32-bit words minus one
    p[4] = (uint8_t)(ssrc >> 24);
    p[5] = (uint8_t)(ssrc >> 16);
    p[6] = (uint8_t)(ssrc >> 8);
    p[7] = (uint8_t)ssrc;
    p[20] = (uint8_t)(n >> 24);
    p[23] = (uint8_t)n; // packet count
    return 28;
}

static uint64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct counts {
    unsigned received, matched, mismatched, unprotect_failed, wrong_echoed, rtcp_received;
};

static void receive_one(int fd, srtp_t rx, int is_rtcp, uint16_t seq0, unsigned count,
                        uint16_t wrong0, unsigned wrong_count, uint8_t *seen, struct counts *c) {
    uint8_t buf[MAX_PKT];
    ssize_t r = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (r <= 0)
        return;
    int len = (int)r;
    srtp_err_status_t st =
        is_rtcp ? srtp_unprotect_rtcp(rx, buf, &len) : srtp_unprotect(rx, buf, &len);
    if (st != srtp_err_status_ok) {
        c->unprotect_failed++;
        return;
    }
    if (is_rtcp) {
        c->rtcp_received++;
        return;
    }
    c->received++;
    uint16_t seq = (uint16_t)((buf[2] << 8) | buf[3]);
    uint32_t ssrc =
        ((uint32_t)buf[8] << 24) | ((uint32_t)buf[9] << 16) | ((uint32_t)buf[10] << 8) | buf[11];
    if ((uint16_t)(seq - wrong0) < wrong_count) {
        c->wrong_echoed++;
        return;
    }
    uint8_t want[12 + PAYLOAD];
    fill_rtp(want, seq, ssrc);
    uint16_t i = (uint16_t)(seq - seq0);
    if (len == 12 + PAYLOAD && i < count && memcmp(buf + 12, want + 12, PAYLOAD) == 0 && !seen[i]) {
        seen[i] = 1;
        c->matched++;
    } else {
        c->mismatched++;
    }
}

static int udp_bound(const char *addr) {
    struct sockaddr_in sa;
    parse_addr(addr, &sa);
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        die("bind failed");
    return fd;
}

int main(int argc, char **argv) {
    const char *bind_s = NULL, *to_s = NULL, *suite = "AES_CM_128_HMAC_SHA1_80", *tx_s = NULL,
               *rx_s = NULL, *wrong_s = NULL, *rtcp_to_s = NULL, *rtcp_bind_s = NULL;
    unsigned count = 50, interval = 20, wrong_count = 0, wait_ms = 2000;
    uint16_t seq0 = 1000;
    uint32_t ssrc = 0x5eed1234;
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--bind") == 0)
            bind_s = v;
        else if (strcmp(k, "--to") == 0)
            to_s = v;
        else if (strcmp(k, "--suite") == 0)
            suite = v;
        else if (strcmp(k, "--tx") == 0)
            tx_s = v;
        else if (strcmp(k, "--rx") == 0)
            rx_s = v;
        else if (strcmp(k, "--wrong") == 0)
            wrong_s = v;
        else if (strcmp(k, "--wrong-count") == 0)
            wrong_count = (unsigned)atoi(v);
        else if (strcmp(k, "--count") == 0)
            count = (unsigned)atoi(v);
        else if (strcmp(k, "--interval-ms") == 0)
            interval = (unsigned)atoi(v);
        else if (strcmp(k, "--wait-ms") == 0)
            wait_ms = (unsigned)atoi(v);
        else if (strcmp(k, "--seq") == 0)
            seq0 = (uint16_t)atoi(v);
        else if (strcmp(k, "--ssrc") == 0)
            ssrc = (uint32_t)strtoul(v, NULL, 0);
        else if (strcmp(k, "--rtcp-to") == 0)
            rtcp_to_s = v;
        else if (strcmp(k, "--rtcp-bind") == 0)
            rtcp_bind_s = v;
        else
            die("unknown option");
    }
    if (bind_s == NULL || to_s == NULL || tx_s == NULL || rx_s == NULL || count > MAX_COUNT ||
        wrong_count > 1000 || (wrong_count > 0 && wrong_s == NULL))
        die("usage: see the comment at the top of tg_srtp_peer.c");
    if (srtp_init() != srtp_err_status_ok)
        die("srtp_init failed");
    srtp_t tx = make_session(suite, tx_s, 1), rx = make_session(suite, rx_s, 0);
    srtp_t bad = wrong_count > 0 ? make_session(suite, wrong_s, 1) : NULL;
    int fd = udp_bound(bind_s);
    struct sockaddr_in to, rtcp_to;
    parse_addr(to_s, &to);
    int rfd = -1;
    if (rtcp_to_s != NULL && rtcp_bind_s != NULL) {
        parse_addr(rtcp_to_s, &rtcp_to);
        rfd = udp_bound(rtcp_bind_s);
    }
    uint8_t *seen = calloc(count + 1, 1);
    struct counts c = {0};
    unsigned sent = 0, wrong_sent = 0, rtcp_sent = 0;
    const uint16_t wrong0 = (uint16_t)(seq0 + count + 100);
    uint64_t next = now_ms(), end = 0;
    for (;;) {
        uint64_t t = now_ms();
        if (sent + wrong_sent < count + wrong_count && t >= next) {
            uint8_t pkt[MAX_PKT];
            int len = 12 + PAYLOAD;
            // The wrong-key packets go out in the middle of the good ones.
            int wrong = wrong_sent < wrong_count && sent >= count / 2;
            uint16_t seq = wrong ? (uint16_t)(wrong0 + wrong_sent) : (uint16_t)(seq0 + sent);
            fill_rtp(pkt, seq, ssrc);
            if (srtp_protect(wrong ? bad : tx, pkt, &len) != srtp_err_status_ok)
                die("srtp_protect failed");
            sendto(fd, pkt, (size_t)len, 0, (struct sockaddr *)&to, sizeof(to));
            if (wrong)
                wrong_sent++;
            else
                sent++;
            next += interval;
            if (rfd >= 0 && (sent == count / 4 || sent == count) && !wrong && rtcp_sent < 2) {
                int rlen = (int)fill_sr(pkt, ssrc, sent);
                if (srtp_protect_rtcp(tx, pkt, &rlen) != srtp_err_status_ok)
                    die("srtp_protect_rtcp failed");
                sendto(rfd, pkt, (size_t)rlen, 0, (struct sockaddr *)&rtcp_to, sizeof(rtcp_to));
                rtcp_sent++;
            }
            if (sent + wrong_sent == count + wrong_count)
                end = now_ms() + wait_ms;
        }
        if (end != 0 && (now_ms() >= end || c.matched == count))
            break;
        struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = rfd, .events = POLLIN}};
        int timeout = (int)(end != 0 ? (end > now_ms() ? end - now_ms() : 0)
                                     : (next > now_ms() ? next - now_ms() : 0));
        if (poll(p, rfd >= 0 ? 2 : 1, timeout) < 0 && errno != EINTR)
            die("poll failed");
        if (p[0].revents & POLLIN)
            receive_one(fd, rx, 0, seq0, count, wrong0, wrong_count, seen, &c);
        if (rfd >= 0 && (p[1].revents & POLLIN))
            receive_one(rfd, rx, 1, seq0, count, wrong0, wrong_count, seen, &c);
    }
    // RTCP echoes may trail the last RTP: a short extra wait when some are missing.
    for (uint64_t stop = now_ms() + 300;
         rfd >= 0 && c.rtcp_received < rtcp_sent && now_ms() < stop;) {
        struct pollfd p = {.fd = rfd, .events = POLLIN};
        if (poll(&p, 1, 50) > 0)
            receive_one(rfd, rx, 1, seq0, count, wrong0, wrong_count, seen, &c);
    }
    printf("{\"sent\": %u, \"received\": %u, \"matched\": %u, \"mismatched\": %u, "
           "\"unprotect_failed\": %u, \"wrong_sent\": %u, \"wrong_echoed\": %u, "
           "\"rtcp_sent\": %u, \"rtcp_received\": %u}\n",
           sent, c.received, c.matched, c.mismatched, c.unprotect_failed, wrong_sent,
           c.wrong_echoed, rtcp_sent, c.rtcp_received);
    srtp_dealloc(tx);
    srtp_dealloc(rx);
    if (bad != NULL)
        srtp_dealloc(bad);
    free(seen);
    close(fd);
    if (rfd >= 0)
        close(rfd);
    srtp_shutdown();
    return 0;
}
