// The keyd protocol, keyd's signing of a digest, and the client tlsgate's signer threads use
// (see include/tlsgate/keyd.h).
#include "tlsgate/keyd.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/bytestring.h>
#include <openssl/digest.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>

static void put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v >> 8);
    p[1] = (uint8_t)v;
}

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint16_t get16(const uint8_t *p) {
    return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

size_t tg_keyd_req_encode(const struct tg_keyd_req *r, uint8_t *out, size_t cap) {
    size_t len = TG_KEYD_HDR_LEN + r->digest_len;
    if (r->digest_len > TG_KEYD_MAX_DIGEST || cap < len)
        return 0;
    put32(out, TG_KEYD_MAGIC);
    put32(out + 4, r->id);
    put16(out + 8, r->alg);
    put16(out + 10, (uint16_t)r->digest_len);
    memcpy(out + 12, r->spki_sha256, 32);
    memcpy(out + TG_KEYD_HDR_LEN, r->digest, r->digest_len);
    return len;
}

int tg_keyd_req_decode(struct tg_keyd_req *r, const uint8_t *in, size_t len) {
    memset(r, 0, sizeof(*r));
    if (len < TG_KEYD_HDR_LEN || get32(in) != TG_KEYD_MAGIC)
        return 0;
    r->id = get32(in + 4);
    r->alg = get16(in + 8);
    size_t dlen = get16(in + 10);
    if (dlen == 0 || dlen > TG_KEYD_MAX_DIGEST || len != TG_KEYD_HDR_LEN + dlen)
        return 0;
    memcpy(r->spki_sha256, in + 12, 32);
    memcpy(r->digest, in + TG_KEYD_HDR_LEN, dlen);
    r->digest_len = dlen;
    return 1;
}

size_t tg_keyd_resp_encode(const struct tg_keyd_resp *r, uint8_t *out, size_t cap) {
    size_t len = TG_KEYD_RESP_HDR_LEN + r->sig_len;
    if (r->sig_len > TG_KEYD_MAX_SIG || cap < len)
        return 0;
    put32(out, TG_KEYD_MAGIC);
    put32(out + 4, r->id);
    put16(out + 8, r->status);
    put16(out + 10, (uint16_t)r->sig_len);
    memcpy(out + TG_KEYD_RESP_HDR_LEN, r->sig, r->sig_len);
    return len;
}

int tg_keyd_resp_decode(struct tg_keyd_resp *r, const uint8_t *in, size_t len) {
    memset(r, 0, sizeof(*r));
    if (len < TG_KEYD_RESP_HDR_LEN || get32(in) != TG_KEYD_MAGIC)
        return 0;
    r->id = get32(in + 4);
    r->status = get16(in + 8);
    size_t slen = get16(in + 10);
    if (slen > TG_KEYD_MAX_SIG || len != TG_KEYD_RESP_HDR_LEN + slen ||
        (r->status == TG_KEYD_OK) != (slen > 0))
        return 0;
    memcpy(r->sig, in + TG_KEYD_RESP_HDR_LEN, slen);
    r->sig_len = slen;
    return 1;
}

int tg_keyd_spki_hash(EVP_PKEY *key, uint8_t out[32]) {
    CBB cbb;
    uint8_t *der = NULL;
    size_t der_len = 0;
    if (!CBB_init(&cbb, 512) || !EVP_marshal_public_key(&cbb, key) ||
        !CBB_finish(&cbb, &der, &der_len)) {
        CBB_cleanup(&cbb);
        ERR_clear_error();
        return 0;
    }
    SHA256(der, der_len, out);
    OPENSSL_free(der);
    return 1;
}

size_t tg_keyd_digest(uint16_t alg, const uint8_t *in, size_t in_len,
                      uint8_t out[TG_KEYD_MAX_DIGEST]) {
    const EVP_MD *md = SSL_get_signature_algorithm_digest(alg);
    unsigned len = 0;
    if (md == NULL || !EVP_Digest(in, in_len, out, &len, md, NULL))
        return 0;
    return len;
}

int tg_keyd_sign_digest(EVP_PKEY *key, uint16_t alg, const uint8_t *digest, size_t digest_len,
                        uint8_t *out, size_t *out_len, size_t max_out) {
    const EVP_MD *md = SSL_get_signature_algorithm_digest(alg);
    if (md == NULL || SSL_get_signature_algorithm_key_type(alg) != EVP_PKEY_id(key) ||
        EVP_MD_size(md) != digest_len || (size_t)EVP_PKEY_size(key) > max_out)
        return 0;
    EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
    size_t len = max_out;
    int ok = ctx != NULL && EVP_PKEY_sign_init(ctx) && EVP_PKEY_CTX_set_signature_md(ctx, md);
    if (ok && EVP_PKEY_id(key) == EVP_PKEY_RSA)
        ok = SSL_is_signature_algorithm_rsa_pss(alg)
                 ? EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PSS_PADDING) &&
                       EVP_PKEY_CTX_set_rsa_pss_saltlen(ctx, -1) // salt = digest length
                 : EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING);
    ok = ok && EVP_PKEY_sign(ctx, out, &len, digest, digest_len);
    EVP_PKEY_CTX_free(ctx);
    if (!ok) {
        ERR_clear_error();
        return 0;
    }
    *out_len = len;
    return 1;
}

size_t tg_keyd_handle(EVP_PKEY *const *keys, const uint8_t (*hashes)[32], size_t num,
                      const uint8_t *in, size_t len, uint8_t *out) {
    struct tg_keyd_req req;
    struct tg_keyd_resp resp = {.status = TG_KEYD_BAD_REQUEST};
    if (tg_keyd_req_decode(&req, in, len)) {
        resp.id = req.id;
        resp.status = TG_KEYD_NO_KEY;
        for (size_t i = 0; i < num; i++) {
            if (memcmp(hashes[i], req.spki_sha256, 32) != 0)
                continue;
            resp.status = tg_keyd_sign_digest(keys[i], req.alg, req.digest, req.digest_len,
                                              resp.sig, &resp.sig_len, sizeof(resp.sig))
                              ? TG_KEYD_OK
                              : TG_KEYD_SIGN_FAILED;
            break;
        }
    } else if (len >= 8 && get32(in) == TG_KEYD_MAGIC) {
        resp.id = get32(in + 4);
    }
    if (resp.status != TG_KEYD_OK)
        resp.sig_len = 0;
    return tg_keyd_resp_encode(&resp, out, TG_KEYD_RESP_LEN);
}

// ---------------------------------------------------------------------------------------------
// Client.

int tg_keyd_connect(const char *path, char *err, size_t err_len) {
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        snprintf(err, err_len, "keyd:%s: socket path too long", path);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, err_len, "keyd:%s: socket: %s", path, strerror(errno));
        return -1;
    }
    struct timeval tv = {.tv_sec = 2};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
        snprintf(err, err_len, "keyd:%s: cannot connect: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int tg_keyd_sign(int fd, uint32_t id, const uint8_t spki[32], uint16_t alg, const uint8_t *in,
                 size_t in_len, uint8_t *out, size_t *out_len, size_t max_out, char *err,
                 size_t err_len) {
    struct tg_keyd_req req = {.id = id, .alg = alg};
    memcpy(req.spki_sha256, spki, 32);
    req.digest_len = tg_keyd_digest(alg, in, in_len, req.digest);
    if (req.digest_len == 0)
        return TG_KEYD_BAD_REQUEST;
    uint8_t pkt[TG_KEYD_RESP_LEN];
    size_t n = tg_keyd_req_encode(&req, pkt, sizeof(pkt));
    if (send(fd, pkt, n, MSG_NOSIGNAL) != (ssize_t)n) {
        snprintf(err, err_len, "send: %s", strerror(errno));
        return -1;
    }
    for (;;) { // a late answer to an earlier request that timed out is skipped
        ssize_t r = recv(fd, pkt, sizeof(pkt), 0);
        if (r <= 0) {
            snprintf(err, err_len, "%s", r == 0 ? "keyd closed the connection" : strerror(errno));
            return -1;
        }
        struct tg_keyd_resp resp;
        if (!tg_keyd_resp_decode(&resp, pkt, (size_t)r)) {
            snprintf(err, err_len, "malformed response");
            return -1;
        }
        if (resp.id != id)
            continue;
        if (resp.status != TG_KEYD_OK)
            return resp.status;
        if (resp.sig_len > max_out)
            return TG_KEYD_SIGN_FAILED;
        memcpy(out, resp.sig, resp.sig_len);
        *out_len = resp.sig_len;
        return TG_KEYD_OK;
    }
}

static const char *status_text(int s) {
    switch (s) {
    case TG_KEYD_NO_KEY:
        return "keyd holds no private key for our certificate's public key";
    case TG_KEYD_BAD_REQUEST:
        return "keyd refused the request as malformed";
    case TG_KEYD_SIGN_FAILED:
        return "keyd could not sign with the key";
    }
    return "unknown status";
}

int tg_keyd_verify(EVP_PKEY *pub, uint16_t alg, const uint8_t *msg, size_t msg_len,
                   const uint8_t *sig, size_t sig_len) {
    EVP_MD_CTX ctx;
    EVP_MD_CTX_init(&ctx);
    EVP_PKEY_CTX *pctx = NULL;
    int ok = EVP_DigestVerifyInit(&ctx, &pctx, SSL_get_signature_algorithm_digest(alg), NULL, pub);
    if (ok && SSL_is_signature_algorithm_rsa_pss(alg))
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, -1);
    ok = ok && EVP_DigestVerify(&ctx, sig, sig_len, msg, msg_len);
    EVP_MD_CTX_cleanup(&ctx);
    ERR_clear_error();
    return ok;
}

int tg_keyd_check(const char *path, EVP_PKEY *pub, char *err, size_t err_len) {
    uint8_t spki[32], msg[64], sig[TG_KEYD_MAX_SIG];
    size_t sig_len = 0;
    uint16_t alg = EVP_PKEY_id(pub) == EVP_PKEY_RSA ? SSL_SIGN_RSA_PSS_RSAE_SHA256
                   : EVP_PKEY_id(pub) == EVP_PKEY_EC && EVP_PKEY_bits(pub) == 384
                       ? SSL_SIGN_ECDSA_SECP384R1_SHA384
                       : SSL_SIGN_ECDSA_SECP256R1_SHA256;
    if (!tg_keyd_spki_hash(pub, spki) || !RAND_bytes(msg, sizeof(msg))) {
        snprintf(err, err_len, "keyd:%s: out of memory", path);
        return 0;
    }
    char why[200];
    int fd = tg_keyd_connect(path, err, err_len);
    if (fd < 0)
        return 0;
    int s = tg_keyd_sign(fd, 1, spki, alg, msg, sizeof(msg), sig, &sig_len, sizeof(sig), why,
                         sizeof(why));
    close(fd);
    if (s < 0) {
        snprintf(err, err_len, "keyd:%s: %s", path, why);
        return 0;
    }
    if (s != TG_KEYD_OK) {
        snprintf(err, err_len, "keyd:%s: %s", path, status_text(s));
        return 0;
    }
    // The signature must verify with our certificate's public key: keyd holds the right key.
    int ok = tg_keyd_verify(pub, alg, msg, sizeof(msg), sig, sig_len);
    if (!ok)
        snprintf(err, err_len, "keyd:%s: its signature does not verify with our certificate", path);
    return ok;
}
