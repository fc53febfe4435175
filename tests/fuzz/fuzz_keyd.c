// libFuzzer harness for tlsgate-keyd's request handling (tg_keyd_handle): the bytes a
// compromised tlsgate could send. Any packet gets exactly one well-formed response; a
// signature only for a well-formed request naming the key, and that signature verifies.
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <openssl/ec_key.h>
#include <openssl/evp.h>
#include <openssl/nid.h>

#include "fuzz.h"
#include "tlsgate/keyd.h"

static EVP_PKEY *g_key;
static uint8_t g_hash[1][32];

static void init(void) {
    EC_KEY *ec = EC_KEY_new_by_curve_name(NID_X9_62_prime256v1);
    if (ec == NULL || !EC_KEY_generate_key(ec))
        __builtin_trap();
    g_key = EVP_PKEY_new();
    EVP_PKEY_assign_EC_KEY(g_key, ec);
    tg_keyd_spki_hash(g_key, g_hash[0]);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (g_key == NULL)
        init();
    // The corpus names the key with zeros; put the real hash in so signing paths are reached.
    uint8_t pkt[TG_KEYD_REQ_LEN + 8];
    size_t len = size < sizeof(pkt) ? size : sizeof(pkt);
    memcpy(pkt, data, len);
    int named = len >= TG_KEYD_HDR_LEN && pkt[12] == 0 && pkt[13] == 0;
    if (named)
        memcpy(pkt + 12, g_hash[0], 32);
    uint8_t out[TG_KEYD_RESP_LEN];
    size_t n = tg_keyd_handle(&g_key, (const uint8_t(*)[32])g_hash, 1, pkt, len, out);
    struct tg_keyd_resp resp;
    if (n == 0 || !tg_keyd_resp_decode(&resp, out, n))
        __builtin_trap();
    struct tg_keyd_req req;
    int ok = tg_keyd_req_decode(&req, pkt, len);
    if (resp.status == TG_KEYD_OK && (!ok || memcmp(req.spki_sha256, g_hash[0], 32) != 0))
        __builtin_trap();
    if (ok && resp.id != req.id)
        __builtin_trap();
    return 0;
}
