// libFuzzer harness for the SDP parser and writer. Whatever tg_sdp_parse accepts is written
// back with a fixed rewrite (ports, RTCP, mux and SAVP varying per section; an IPv4 and the
// longest IPv6 address) into a heap buffer of exactly tg_sdp_write_max bytes, so that ASan sees
// any write past it; the writer must fit. The output must parse again (the writer only writes
// what the parser accepts) with the ports, transports, keys and directions asked for, and
// writing it once more must give the same bytes. Every a=crypto value is also checked to
// format and parse back the same when it is usable.
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tlsgate/sdp.h"

static struct tg_sdp g_in, g_again, g_third;

static void media_out(const struct tg_sdp *s, struct tg_sdp_media_out *mo) {
    for (size_t i = 0; i < s->num_media; i++) {
        const struct tg_sdp_media *m = &s->media[i];
        struct tg_sdp_media_out *o = &mo[i];
        memset(o, 0, sizeof(*o));
        o->port = m->port == 0 || m->proto == TG_SDP_PROTO_OTHER ? 0 : (uint16_t)(20000u + 2 * i);
        o->rtcp_mux = m->rtcp_mux && i % 2 == 0;
        o->rtcp_port = o->rtcp_mux ? 0 : (uint16_t)(i % 3 == 1 ? 30000u + i : o->port + 1u);
        o->secure = i % 2 == 0 || m->proto == TG_SDP_RTP_SAVP;
        o->crypto.tag = (uint32_t)(i + 1);
        o->crypto.usable = 1;
        o->crypto.params.suite = (enum tg_srtp_suite)(1 + i % 3);
        for (size_t k = 0; k < TG_SRTP_KEY_LEN; k++)
            o->crypto.params.key[k] = (uint8_t)(k * 7 + i);
        for (size_t k = 0; k < TG_SRTP_SALT_MAX; k++)
            o->crypto.params.salt[k] = (uint8_t)(k * 13 + i);
        o->crypto.params.mki_len = (uint8_t)(i % 5);
        o->crypto.params.mki = o->crypto.params.mki_len > 0 ? (uint32_t)i + 1 : 0;
        o->crypto.lifetime_log2 = (uint8_t)(i % 2 ? 31 : 0);
    }
}

static size_t salt_len(enum tg_srtp_suite s) {
    return s == TG_SRTP_AEAD_AES_128_GCM ? 12 : 14;
}

// check_again checks the re-parsed output against what was asked for.
static void check_again(const struct tg_sdp *in, const struct tg_sdp *out,
                        const struct tg_sdp_media_out *mo) {
    if (out->num_media != in->num_media)
        __builtin_trap();
    for (size_t i = 0; i < in->num_media; i++) {
        const struct tg_sdp_media *a = &in->media[i], *b = &out->media[i];
        if (b->port != mo[i].port || b->dir != a->dir || b->conn.hold != a->conn.hold)
            __builtin_trap();
        if (a->proto != TG_SDP_PROTO_OTHER &&
            (b->proto == TG_SDP_RTP_SAVP || b->proto == TG_SDP_RTP_SAVPF) != mo[i].secure)
            __builtin_trap();
        if (b->num_crypto != (mo[i].secure ? 1u : 0u))
            __builtin_trap();
        if (mo[i].secure) {
            const struct tg_srtp_params *p = &b->crypto[0].params, *q = &mo[i].crypto.params;
            if (!b->crypto[0].usable || p->suite != q->suite || p->mki != q->mki ||
                p->mki_len != q->mki_len || memcmp(p->key, q->key, TG_SRTP_KEY_LEN) != 0 ||
                memcmp(p->salt, q->salt, salt_len(q->suite)) != 0 ||
                b->crypto[0].lifetime_log2 != mo[i].crypto.lifetime_log2)
                __builtin_trap();
        }
        if (b->rtcp_mux != (a->rtcp_mux && mo[i].rtcp_mux))
            __builtin_trap();
    }
}

// check_crypto formats each usable crypto line and parses it back.
static void check_crypto(const struct tg_sdp *s) {
    for (size_t i = 0; i < s->num_media; i++) {
        for (size_t k = 0; k < s->media[i].num_crypto; k++) {
            const struct tg_sdp_crypto *c = &s->media[i].crypto[k];
            if (!c->usable)
                continue;
            char text[TG_SDP_CRYPTO_MAX];
            size_t n = tg_sdp_crypto_format(c, text, sizeof(text));
            struct tg_sdp_crypto back;
            if (n == 0 || !tg_sdp_crypto_parse(&back, text, n) || !back.usable ||
                memcmp(&back.params, &c->params, sizeof(c->params)) != 0 ||
                back.lifetime_log2 != c->lifetime_log2 || back.tag != c->tag)
                __builtin_trap();
        }
    }
}

static void write_and_check(const char *body, size_t len, const char *addr) {
    struct tg_sdp_media_out mo[TG_SDP_MAX_MEDIA];
    media_out(&g_in, mo);
    size_t cap = tg_sdp_write_max(&g_in);
    char *out = malloc(cap);
    char *out2 = malloc(cap);
    if (out == NULL || out2 == NULL) {
        free(out);
        free(out2);
        return;
    }
    size_t n = 0;
    if (tg_sdp_write(&g_in, body, len, addr, mo, out, cap, &n) != TG_SDP_OK || n > cap)
        __builtin_trap();
    if (n > 0 &&
        tg_sdp_write(&g_in, body, len, addr, mo, out2, n - 1, &(size_t){0}) != TG_SDP_NO_SPACE)
        __builtin_trap();
    if (n <= TG_SDP_MAX_BODY) {
        if (tg_sdp_parse(&g_again, out, n, NULL, 0) != TG_SDP_OK)
            __builtin_trap();
        check_again(&g_in, &g_again, mo);
        // Written again, the output is a fixed point.
        size_t n2 = 0;
        size_t cap2 = tg_sdp_write_max(&g_again);
        if (cap2 > cap) {
            free(out2);
            out2 = malloc(cap2);
        }
        if (out2 == NULL ||
            tg_sdp_write(&g_again, out, n, addr, mo, out2, cap2, &n2) != TG_SDP_OK || n2 != n ||
            memcmp(out, out2, n) != 0)
            __builtin_trap();
        if (tg_sdp_parse(&g_third, out2, n2, NULL, 0) != TG_SDP_OK)
            __builtin_trap();
    }
    free(out);
    free(out2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *body = (const char *)data;
    char why[128];
    if (tg_sdp_parse(&g_in, body, size, why, sizeof(why)) != TG_SDP_OK) {
        if (memchr(why, '\0', sizeof(why)) == NULL || strncmp(why, "line ", 5) != 0)
            __builtin_trap(); // a refusal always says where
        return 0;
    }
    check_crypto(&g_in);
    write_and_check(body, size, "192.0.2.44");
    write_and_check(body, size, "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255");
    return 0;
}
