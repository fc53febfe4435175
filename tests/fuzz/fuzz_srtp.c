// libFuzzer harness for the SRTP/SRTCP transform. The first byte picks the case: bit 0 SRTCP,
// bits 1-2 the suite (0..2), bit 3 a 2-byte MKI. The rest, copied to a buffer of exactly its
// length, is:
//   1. unprotected as it came, with a fixed key: any status, never a read past the end, and an
//      OK never longer than the input;
//   2. taken as plain RTP/RTCP and protected: when that works, unprotecting the result must give
//      the input back, and unprotecting it a second time must answer REPLAY.
// The seeds (corpus/fuzz_srtp) are genuine packets under the fixed key, so case 1 also reaches
// the decryption and the replay window.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tlsgate/srtp.h"

static const enum tg_srtp_suite kSuites[4] = {
    TG_SRTP_AES_CM_128_HMAC_SHA1_80,
    TG_SRTP_AES_CM_128_HMAC_SHA1_32,
    TG_SRTP_AEAD_AES_128_GCM,
    TG_SRTP_AES_CM_128_HMAC_SHA1_80,
};

static void fixed_params(struct tg_srtp_params *p, uint8_t mode) {
    memset(p, 0, sizeof(*p));
    p->suite = kSuites[(mode >> 1) & 3];
    for (int i = 0; i < TG_SRTP_KEY_LEN; i++)
        p->key[i] = (uint8_t)(7 * i + 1);
    for (int i = 0; i < TG_SRTP_SALT_MAX; i++)
        p->salt[i] = (uint8_t)(0x40 + i);
    if (mode & 8) {
        p->mki = 0x0102;
        p->mki_len = 2;
    }
}

static enum tg_srtp_status unprotect(struct tg_srtp *s, int rtcp, uint8_t *pkt, size_t len,
                                     size_t *out_len) {
    return rtcp ? tg_srtcp_unprotect(s, pkt, len, out_len)
                : tg_srtp_unprotect(s, pkt, len, out_len);
}

// round_trip protects |data| and checks that it comes back, once.
static void round_trip(const struct tg_srtp_params *p, int rtcp, const uint8_t *data, size_t size) {
    struct tg_srtp *tx = tg_srtp_new(p, 1), *rx = tg_srtp_new(p, 0);
    size_t cap = size + TG_SRTCP_OVERHEAD, n = 0, m = 0;
    uint8_t *pkt = malloc(cap), *copy = malloc(cap);
    if (!tx || !rx || !pkt || !copy)
        __builtin_trap();
    memcpy(pkt, data, size);
    enum tg_srtp_status st =
        rtcp ? tg_srtcp_protect(tx, pkt, size, cap, &n) : tg_srtp_protect(tx, pkt, size, cap, &n);
    if (st == TG_SRTP_OK) {
        memcpy(copy, pkt, n);
        if (unprotect(rx, rtcp, pkt, n, &m) != TG_SRTP_OK || m != size ||
            memcmp(pkt, data, size) != 0)
            __builtin_trap();
        if (unprotect(rx, rtcp, copy, n, &m) != TG_SRTP_REPLAY)
            __builtin_trap();
    } else if (st != TG_SRTP_BAD_PACKET) {
        __builtin_trap(); // the room was enough
    }
    free(pkt);
    free(copy);
    tg_srtp_free(tx);
    tg_srtp_free(rx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1)
        return 0;
    uint8_t mode = data[0];
    int rtcp = mode & 1;
    data++;
    size--;
    struct tg_srtp_params p;
    fixed_params(&p, mode);

    struct tg_srtp *rx = tg_srtp_new(&p, 0);
    uint8_t *pkt = malloc(size ? size : 1);
    if (!rx || !pkt)
        __builtin_trap();
    memcpy(pkt, data, size);
    size_t n = 0;
    if (unprotect(rx, rtcp, pkt, size, &n) == TG_SRTP_OK && n > size)
        __builtin_trap();
    free(pkt);
    tg_srtp_free(rx);

    round_trip(&p, rtcp, data, size);
    return 0;
}
