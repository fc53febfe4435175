// Unit tests for the pure parts of media anchoring (proxy/mediaplan.c): the port allocator and
// its per-worker slices, the dialog table, and the offer/answer decisions (which crypto line,
// 488, declined sections, hold).
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "tlsgate/mediaplan.h"

// ---------------------------------------------------------------------------------------------
// Port allocator.

static void test_slices_disjoint_and_complete(void **state) {
    (void)state;
    const uint16_t min = 40000, max = 49999;
    for (unsigned workers = 1; workers <= 17; workers++) {
        uint32_t total = 0;
        uint32_t next_base = min;
        for (unsigned w = 0; w < workers; w++) {
            uint16_t base;
            uint32_t pairs = tg_portalloc_slice(min, max, w, workers, &base);
            assert_int_equal(base % 2, 0);
            assert_int_equal(base, next_base); // contiguous, no overlap, no gap
            next_base = base + 2 * pairs;
            total += pairs;
        }
        assert_int_equal(total, 5000);
        assert_true(next_base - 1 <= max); // the last RTCP port is in the range
    }
    uint16_t base;
    assert_int_equal(tg_portalloc_slice(40000, 40003, 3, 2, &base), 0); // no such worker
    // An odd max: the last even port has no RTCP partner in the range and is not handed out.
    assert_int_equal(tg_portalloc_slice(40000, 40004, 0, 1, &base), 2);
}

static void test_take_give(void **state) {
    (void)state;
    struct tg_portalloc pa;
    assert_true(tg_portalloc_init(&pa, 20000, 3));
    assert_int_equal(tg_portalloc_take(&pa), 20000);
    assert_int_equal(tg_portalloc_take(&pa), 20002);
    assert_int_equal(tg_portalloc_take(&pa), 20004);
    assert_int_equal(tg_portalloc_take(&pa), 0); // exhausted
    // Foreign, odd and free ports are ignored.
    tg_portalloc_give(&pa, 19998);
    tg_portalloc_give(&pa, 20001);
    tg_portalloc_give(&pa, 20006);
    assert_int_equal(pa.in_use, 3);
    tg_portalloc_give(&pa, 20002);
    tg_portalloc_give(&pa, 20002); // twice: once
    assert_int_equal(pa.in_use, 2);
    assert_int_equal(tg_portalloc_take(&pa), 20002);
    // Next-fit: a pair given back is reused only after the others.
    tg_portalloc_give(&pa, 20000);
    tg_portalloc_give(&pa, 20004);
    assert_int_equal(tg_portalloc_take(&pa), 20004);
    assert_int_equal(tg_portalloc_take(&pa), 20000);
    assert_int_equal(tg_portalloc_take(&pa), 0);
    tg_portalloc_cleanup(&pa);
}

// ---------------------------------------------------------------------------------------------
// Dialog table.

static void test_dialogs(void **state) {
    (void)state;
    struct tg_dialogs t;
    const uint64_t key[2] = {1, 2};
    assert_true(tg_dialogs_init(&t, 4, key));
    struct tg_dialog *a = tg_dialog_add(&t, "a@x", 3);
    struct tg_dialog *b = tg_dialog_add(&t, "b@x", 3);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(a->st[0].slot, TG_NIL);
    assert_ptr_equal(tg_dialog_find(&t, "a@x", 3), a);
    assert_ptr_equal(tg_dialog_find(&t, "b@x", 3), b);
    assert_null(tg_dialog_find(&t, "a@", 2));
    assert_null(tg_dialog_find(&t, "A@x", 3)); // Call-IDs compare exactly
    uint64_t ca = tg_dialog_cookie(&t, a);
    assert_ptr_equal(tg_dialog_by_cookie(&t, ca), a);
    tg_dialog_remove(&t, a);
    assert_null(tg_dialog_find(&t, "a@x", 3));
    assert_null(tg_dialog_by_cookie(&t, ca)); // a late timer finds nothing
    assert_ptr_equal(tg_dialog_find(&t, "b@x", 3), b);
    // Bounds: the table's capacity and the Call-ID length.
    char big[TG_CALL_ID_MAX + 1];
    memset(big, 'c', sizeof(big));
    assert_null(tg_dialog_add(&t, big, sizeof(big)));
    assert_null(tg_dialog_add(&t, "", 0));
    assert_non_null(tg_dialog_add(&t, big, TG_CALL_ID_MAX));
    assert_non_null(tg_dialog_add(&t, "c", 1));
    assert_non_null(tg_dialog_add(&t, "d", 1));
    assert_null(tg_dialog_add(&t, "e", 1)); // full
    assert_ptr_equal(tg_dialog_find(&t, big, TG_CALL_ID_MAX)->call_id_len, TG_CALL_ID_MAX);
    tg_dialogs_cleanup(&t);
}

// A dialog's identity is bounded: fields go into one buffer, and one that does not fit marks
// the call as one tlsgate cannot speak in (no request of its own), never a write past it.
static void test_dialog_id_bounded(void **state) {
    (void)state;
    static struct tg_dialog_id id;
    memset(&id, 0, sizeof(id));
    uint16_t n;
    assert_int_equal(tg_dialog_id_get(&id, TG_DID_ROUTE_PBX, &n) - id.buf, 0);
    assert_int_equal(n, 0);
    assert_true(tg_dialog_id_set(&id, TG_DID_FROM, "<sip:a@x>;tag=1", 15));
    assert_true(tg_dialog_id_set(&id, TG_DID_TARGET_PROV, "sip:a@192.0.2.1", 15));
    const char *v = tg_dialog_id_get(&id, TG_DID_FROM, &n);
    assert_int_equal(n, 15);
    assert_memory_equal(v, "<sip:a@x>;tag=1", 15);
    v = tg_dialog_id_get(&id, TG_DID_TARGET_PROV, &n);
    assert_memory_equal(v, "sip:a@192.0.2.1", n);
    static char big[TG_DIALOG_ID_MAX];
    memset(big, 'r', sizeof(big));
    assert_false(tg_dialog_id_set(&id, TG_DID_ROUTE_PROV, big, sizeof(big) - 29));
    assert_true(id.overflow);
    assert_int_equal(id.used, 30);
    tg_dialog_id_get(&id, TG_DID_ROUTE_PROV, &n);
    assert_int_equal(n, 0);
    assert_true(tg_dialog_id_set(&id, TG_DID_ROUTE_PROV, big, sizeof(big) - 30)); // exactly full
    assert_int_equal(id.used, TG_DIALOG_ID_MAX);
    assert_false(tg_dialog_id_set(&id, TG_DID_TO, "x", 1));
}

// answer_id scans |text| (a 2xx from |callee|) into a fresh identity.
static void answer_id(struct tg_dialog_id *id, enum tg_dlg_side callee, const char *text,
                      const char *ours) {
    static struct tg_sip_header hdrs[64];
    struct tg_sip_msg m;
    memset(id, 0, sizeof(*id));
    assert_int_equal(tg_sip_scan(NULL, &m, hdrs, 64, (const uint8_t *)text, strlen(text)),
                     TG_SIP_MESSAGE);
    tg_dialog_id_answer(id, callee, &m, (const uint8_t *)text, ours);
}

static void assert_field(const struct tg_dialog_id *id, enum tg_did_field f, const char *want) {
    uint16_t n;
    const char *v = tg_dialog_id_get(id, f, &n);
    if (n != strlen(want) || memcmp(v, want, n) != 0)
        print_error("field %d: got \"%.*s\", want \"%s\"\n", (int)f, (int)n, v, want);
    assert_int_equal(n, strlen(want));
}

#define RESP_HEAD                                                                                  \
    "SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP 10.0.0.1:5060;branch=z9hG4bKx\r\n"                         \
    "From: \"Carrier\" <sip:c@example.net>;tag=f\r\nTo: <sip:pbx@example.net>;tag=t\r\n"           \
    "Call-ID: id-1\r\nCSeq: 1 INVITE\r\n"

// The route sets are split at tlsgate's own Record-Route entry of the 2xx: before it toward the
// callee (reversed), after it toward the caller (in order), across several headers.
static void test_dialog_id_route_sets(void **state) {
    (void)state;
    static struct tg_dialog_id id;
    answer_id(&id, TG_DLG_PBX,
              RESP_HEAD "Record-Route: <sip:p1.example;lr>, <sip:p2.example;lr>,"
                        " <sip:10.0.0.1:5060;transport=tcp;lr>, <sip:edge1.example;lr>\r\n"
                        "Record-Route: <sip:edge2.example;lr>\r\n"
                        "Contact: \"PBX\" <sip:pbx@10.0.0.9:5060;transport=tcp>;expires=60\r\n"
                        "Content-Length: 0\r\n\r\n",
              "10.0.0.1");
    assert_true(id.complete);
    assert_false(id.overflow);
    assert_field(&id, TG_DID_FROM, "\"Carrier\" <sip:c@example.net>;tag=f");
    assert_field(&id, TG_DID_TO, "<sip:pbx@example.net>;tag=t");
    assert_field(&id, TG_DID_TARGET_PBX, "sip:pbx@10.0.0.9:5060;transport=tcp");
    assert_field(&id, TG_DID_ROUTE_PBX, "<sip:p2.example;lr>, <sip:p1.example;lr>");
    assert_field(&id, TG_DID_ROUTE_PROV, "<sip:edge1.example;lr>, <sip:edge2.example;lr>");
    // Our entry unknown: no route sets (never a route through ourselves).
    answer_id(&id, TG_DLG_PBX,
              RESP_HEAD "Record-Route: <sip:10.0.0.1;lr>\r\nContact: <sip:pbx@10.0.0.9>\r\n"
                        "Content-Length: 0\r\n\r\n",
              NULL);
    assert_false(id.overflow);
    assert_field(&id, TG_DID_ROUTE_PROV, "");
    assert_field(&id, TG_DID_TARGET_PBX, "sip:pbx@10.0.0.9");
    // A provider's answer: our entry is named by our FQDN (any case).
    answer_id(&id, TG_DLG_PROVIDER,
              RESP_HEAD "Record-Route: <sip:e.carrier;lr>, <sip:SBC.example.com:5061;lr>\r\n"
                        "Contact: sip:gw@192.0.2.1;transport=tls\r\nContent-Length: 0\r\n\r\n",
              "sbc.example.com");
    assert_field(&id, TG_DID_ROUTE_PROV, "<sip:e.carrier;lr>");
    assert_field(&id, TG_DID_ROUTE_PBX, "");
    assert_field(&id, TG_DID_TARGET_PROV, "sip:gw@192.0.2.1");
    // A display name may hold '<', '>' and ',' in its quotes: the elements and URIs are the
    // rewriter's (what the far side sees), not the first '<' or comma of the value.
    answer_id(&id, TG_DLG_PBX,
              RESP_HEAD "Record-Route: \"a, <b>\" <sip:p1.example;lr>, <sip:10.0.0.1;lr>\r\n"
                        "Contact: \"PBX <x>, \\\"y\" <sip:pbx@10.0.0.9>\r\n"
                        "Content-Length: 0\r\n\r\n",
              "10.0.0.1");
    assert_false(id.overflow);
    assert_field(&id, TG_DID_TARGET_PBX, "sip:pbx@10.0.0.9");
    assert_field(&id, TG_DID_ROUTE_PBX, "\"a, <b>\" <sip:p1.example;lr>");
    // No usable target (an 8-bit byte, no Contact at all), too many entries: no requests.
    answer_id(&id, TG_DLG_PBX,
              RESP_HEAD "Contact: <sip:pb\xc3\xa9@10.0.0.9>\r\nContent-Length: 0\r\n\r\n",
              "10.0.0.1");
    assert_true(id.overflow);
    answer_id(&id, TG_DLG_PBX, RESP_HEAD "Content-Length: 0\r\n\r\n", "10.0.0.1");
    assert_true(id.overflow);
    char many[2048];
    int n = snprintf(many, sizeof(many), RESP_HEAD "Contact: <sip:a@b>\r\n");
    for (int k = 0; k < 17; k++)
        n += snprintf(many + n, sizeof(many) - (size_t)n, "Record-Route: <sip:r%d;lr>\r\n", k);
    snprintf(many + n, sizeof(many) - (size_t)n, "Content-Length: 0\r\n\r\n");
    answer_id(&id, TG_DLG_PBX, many, "10.0.0.1");
    assert_true(id.overflow);
}

// refresh_id scans |text| (a target refresh of |side|, or its 2xx to one) into |id|.
static void refresh_id(struct tg_dialog_id *id, enum tg_dlg_side side, const char *text) {
    static struct tg_sip_header hdrs[64];
    struct tg_sip_msg m;
    assert_int_equal(tg_sip_scan(NULL, &m, hdrs, 64, (const uint8_t *)text, strlen(text)),
                     TG_SIP_MESSAGE);
    tg_dialog_id_refresh(id, side, &m, (const uint8_t *)text);
}

#define REINV_HEAD                                                                                 \
    "INVITE sip:pbx@10.0.0.9 SIP/2.0\r\nVia: SIP/2.0/TLS 192.0.2.1;branch=z9hG4bKr\r\n"            \
    "From: <sip:c@example.net>;tag=f\r\nTo: <sip:pbx@example.net>;tag=t\r\n"                       \
    "Call-ID: id-1\r\nCSeq: 2 INVITE\r\n"

// A target refresh replaces that side's remote target in place, again and again without
// filling the buffer; no Contact keeps it; an unusable or oversize one sets overflow and leaves
// every stored field as it was.
static void test_dialog_id_refresh(void **state) {
    (void)state;
    static struct tg_dialog_id id;
    answer_id(&id, TG_DLG_PBX,
              RESP_HEAD "Record-Route: <sip:10.0.0.1;lr>, <sip:edge1.example;lr>\r\n"
                        "Contact: <sip:pbx@10.0.0.9>\r\nContent-Length: 0\r\n\r\n",
              "10.0.0.1");
    assert_true(tg_dialog_id_set(&id, TG_DID_TARGET_PROV, "sip:gw@192.0.2.1", 16));
    uint16_t used = id.used;
    for (int k = 0; k < 200; k++)
        refresh_id(&id, TG_DLG_PROVIDER,
                   k % 2 == 0 ? REINV_HEAD
                       "Contact: <sip:gw@192.0.2.1>\r\nContent-Length: 0\r\n\r\n"
                              : REINV_HEAD "Contact: \"GW\" <sip:gw@192.0.2.77:5061;transport=tls>"
                                           ";expires=60\r\nContent-Length: 0\r\n\r\n");
    assert_false(id.overflow);
    assert_field(&id, TG_DID_TARGET_PROV, "sip:gw@192.0.2.77:5061;transport=tls");
    assert_int_equal(id.used, used + 20); // the new URI's extra bytes, nothing more
    // The fields stored after and before the replaced one are intact.
    assert_field(&id, TG_DID_FROM, "\"Carrier\" <sip:c@example.net>;tag=f");
    assert_field(&id, TG_DID_TO, "<sip:pbx@example.net>;tag=t");
    assert_field(&id, TG_DID_TARGET_PBX, "sip:pbx@10.0.0.9");
    assert_field(&id, TG_DID_ROUTE_PROV, "<sip:edge1.example;lr>");
    // The PBX's 2xx to it refreshes the PBX's target.
    refresh_id(&id, TG_DLG_PBX,
               RESP_HEAD "Contact: <sip:pbx2@10.0.0.10>\r\nContent-Length: 0\r\n\r\n");
    assert_field(&id, TG_DID_TARGET_PBX, "sip:pbx2@10.0.0.10");
    assert_field(&id, TG_DID_TARGET_PROV, "sip:gw@192.0.2.77:5061;transport=tls");
    // No Contact: the target stays.
    refresh_id(&id, TG_DLG_PROVIDER, REINV_HEAD "Content-Length: 0\r\n\r\n");
    assert_false(id.overflow);
    assert_field(&id, TG_DID_TARGET_PROV, "sip:gw@192.0.2.77:5061;transport=tls");
    // Oversize: refused, overflow set, nothing moved.
    static char big[TG_DIALOG_ID_MAX + 256];
    int n = snprintf(big, sizeof(big), REINV_HEAD "Contact: <sip:");
    memset(big + n, 'a', TG_DIALOG_ID_MAX);
    snprintf(big + n + TG_DIALOG_ID_MAX, sizeof(big) - (size_t)n - TG_DIALOG_ID_MAX,
             "@x>\r\nContent-Length: 0\r\n\r\n");
    used = id.used;
    refresh_id(&id, TG_DLG_PROVIDER, big);
    assert_true(id.overflow);
    assert_int_equal(id.used, used);
    assert_field(&id, TG_DID_TARGET_PROV, "sip:gw@192.0.2.77:5061;transport=tls");
    assert_field(&id, TG_DID_TO, "<sip:pbx@example.net>;tag=t");
    // A URI that cannot stand in a start line: overflow.
    id.overflow = 0;
    refresh_id(&id, TG_DLG_PBX,
               REINV_HEAD "Contact: <sip:pb\xc3\xa9@10.0.0.9>\r\nContent-Length: 0\r\n\r\n");
    assert_true(id.overflow);
    assert_field(&id, TG_DID_TARGET_PBX, "sip:pbx2@10.0.0.10");
}

// invite_id scans |text| (an INVITE as tlsgate sent it) into |id|. Returns what
// tg_dialog_id_invite did.
static int invite_id(struct tg_dialog_id *id, const char *text) {
    static struct tg_sip_header hdrs[64];
    struct tg_sip_msg m;
    assert_int_equal(tg_sip_scan(NULL, &m, hdrs, 64, (const uint8_t *)text, strlen(text)),
                     TG_SIP_MESSAGE);
    return tg_dialog_id_invite(id, &m, (const uint8_t *)text);
}

#define INV_HEAD "INVITE sip:+4930@carrier.example SIP/2.0\r\n"
#define INV_VIA "Via: SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bKtok\r\n"
#define INV_TAIL                                                                                   \
    "Via: SIP/2.0/TCP 10.0.0.9:5060;branch=z9hG4bK-p\r\n"                                          \
    "From: <sip:100@pbx.example>;tag=p\r\nTo: <sip:+4930@carrier.example>\r\n"                     \
    "Call-ID: c\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"

// What a CANCEL of the initial INVITE repeats is kept from the INVITE as sent: its top Via
// only, its Route entries across headers; a Via line of several values, a Request-URI that
// cannot stand in a start line or no room keep nothing, and spoil nothing else.
static void test_dialog_id_invite(void **state) {
    (void)state;
    static struct tg_dialog_id id;
    memset(&id, 0, sizeof(id));
    assert_true(invite_id(&id, INV_HEAD INV_VIA "Route: <sip:e1.carrier;lr>, <sip:e2;lr>\r\n"
                                                "Route: <sip:e3;lr>\r\n" INV_TAIL));
    assert_true(id.invite);
    assert_false(id.overflow);
    assert_field(&id, TG_DID_INV_RURI, "sip:+4930@carrier.example");
    assert_field(&id, TG_DID_INV_VIA, "SIP/2.0/TLS sbc.example.com:5061;branch=z9hG4bKtok");
    assert_field(&id, TG_DID_INV_ROUTE, "<sip:e1.carrier;lr>, <sip:e2;lr>, <sip:e3;lr>");
    assert_field(&id, TG_DID_INV_FROM, "<sip:100@pbx.example>;tag=p");
    assert_field(&id, TG_DID_INV_TO, "<sip:+4930@carrier.example>");
    memset(&id, 0, sizeof(id));
    assert_true(invite_id(&id, INV_HEAD INV_VIA INV_TAIL));
    assert_field(&id, TG_DID_INV_ROUTE, "");
    memset(&id, 0, sizeof(id));
    assert_false(
        invite_id(&id, INV_HEAD "Via: SIP/2.0/TLS a;branch=z9hG4bK1, SIP/2.0/TCP b\r\n" INV_TAIL));
    assert_false(invite_id(&id, "INVITE sip:+4930@carri\xc3\xa9r SIP/2.0\r\n" INV_VIA INV_TAIL));
    assert_false(id.invite);
    assert_int_equal(id.used, 0);
    // No room: what did fit is given back, the dialog's other fields keep theirs.
    static char big[TG_DIALOG_ID_MAX];
    memset(big, 'r', sizeof(big));
    assert_true(tg_dialog_id_set(&id, TG_DID_ROUTE_PROV, big, sizeof(big) - 100));
    assert_false(invite_id(&id, INV_HEAD INV_VIA INV_TAIL));
    assert_false(id.invite);
    assert_false(id.overflow);
    assert_int_equal(id.used, sizeof(big) - 100);
    assert_true(tg_dialog_id_set(&id, TG_DID_FROM, big, 100));
}

static void test_dialogs_many(void **state) {
    (void)state;
    struct tg_dialogs t;
    const uint64_t key[2] = {7, 9};
    assert_true(tg_dialogs_init(&t, 1000, key));
    char id[32];
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(id, sizeof(id), "call-%d@pbx", i);
        assert_non_null(tg_dialog_add(&t, id, (size_t)n));
    }
    for (int i = 0; i < 1000; i += 2) {
        int n = snprintf(id, sizeof(id), "call-%d@pbx", i);
        tg_dialog_remove(&t, tg_dialog_find(&t, id, (size_t)n));
    }
    for (int i = 0; i < 1000; i++) {
        int n = snprintf(id, sizeof(id), "call-%d@pbx", i);
        struct tg_dialog *d = tg_dialog_find(&t, id, (size_t)n);
        if (i % 2 == 0)
            assert_null(d);
        else
            assert_non_null(d);
    }
    tg_dialogs_cleanup(&t);
}

// ---------------------------------------------------------------------------------------------
// Offer/answer.

static const char k_key1[] = "WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz"; // 30 bytes
static const char k_key2[] = "PS1uJDBpaXV3fGJOBmVnKXxsKjEsKWdCSg9qbUZq";

static void parse(struct tg_sdp *sdp, const char *body) {
    char why[128] = "";
    enum tg_sdp_status st = tg_sdp_parse(sdp, body, strlen(body), why, sizeof(why));
    if (st != TG_SDP_OK)
        fail_msg("parse: %s", why);
}

static const uint8_t k_prefs[] = {TG_SRTP_AES_CM_128_HMAC_SHA1_80, TG_SRTP_AES_CM_128_HMAC_SHA1_32,
                                  TG_SRTP_AEAD_AES_128_GCM};

static void test_offer_picks_operator_order(void **state) {
    (void)state;
    char body[1024];
    snprintf(body, sizeof(body),
             "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
             "m=audio 5000 RTP/SAVP 0\r\n"
             "a=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:%s\r\n"
             "a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:%s|2^20|1:4\r\n",
             k_key1, k_key2);
    struct tg_sdp sdp;
    parse(&sdp, body);
    int idx[TG_SDP_MAX_MEDIA];
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 1, k_prefs, 3, NULL, idx), 1);
    assert_int_equal(idx[0], 1); // _80 first in the operator's order, though offered second
    assert_int_equal(sdp.media[0].crypto[1].params.mki_len, 4);
    // The operator prefers _32: it wins.
    const uint8_t p32[] = {TG_SRTP_AES_CM_128_HMAC_SHA1_32, TG_SRTP_AES_CM_128_HMAC_SHA1_80};
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 1, p32, 2, NULL, idx), 1);
    assert_int_equal(idx[0], 0);
    // Only GCM accepted: nothing can be met, an offer gets 488.
    const uint8_t gcm[] = {TG_SRTP_AEAD_AES_128_GCM};
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 1, gcm, 1, NULL, idx), 0);
    assert_int_equal(idx[0], -1);
}

static void test_offer_unknown_suites_488(void **state) {
    (void)state;
    char body[1024];
    snprintf(body, sizeof(body),
             "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
             "m=audio 5000 RTP/SAVP 0\r\n"
             "a=crypto:1 F8_128_HMAC_SHA1_80 inline:%s\r\n",
             k_key1);
    struct tg_sdp sdp;
    parse(&sdp, body);
    int idx[TG_SDP_MAX_MEDIA];
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 1, k_prefs, 3, NULL, idx), 0);
    // No crypto at all (plain RTP/AVP from the provider): 488 as well.
    parse(&sdp, "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
                "m=audio 5000 RTP/AVP 0\r\n");
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 1, k_prefs, 3, NULL, idx), 0);
}

static void test_crypto_under_avp_and_declined_sections(void **state) {
    (void)state;
    char body[1024];
    // a=crypto under RTP/AVP is accepted; a T.38 section and a declined one are not relayed.
    snprintf(body, sizeof(body),
             "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
             "m=audio 5000 RTP/AVP 0\r\na=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n"
             "m=image 5002 udptl t38\r\n"
             "m=audio 0 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:%s\r\n",
             k_key1, k_key2);
    struct tg_sdp sdp;
    parse(&sdp, body);
    assert_true(tg_mplan_relayable(&sdp.media[0]));
    assert_false(tg_mplan_relayable(&sdp.media[1]));
    assert_false(tg_mplan_relayable(&sdp.media[2]));
    int idx[TG_SDP_MAX_MEDIA];
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 1, k_prefs, 3, NULL, idx), 1);
    assert_int_equal(idx[0], 0);
    assert_int_equal(idx[1], -1);
    assert_int_equal(idx[2], -1);
    assert_int_equal(sdp.media[0].crypto[0].tag, 7);
}

static void test_answer_must_carry_offered_suite(void **state) {
    (void)state;
    char body[1024];
    snprintf(body, sizeof(body),
             "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
             "m=audio 5000 RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_32 inline:%s\r\n",
             k_key1);
    struct tg_sdp sdp;
    parse(&sdp, body);
    int idx[TG_SDP_MAX_MEDIA];
    uint8_t offered[TG_SDP_MAX_MEDIA] = {TG_SRTP_AES_CM_128_HMAC_SHA1_32};
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 0, k_prefs, 3, offered, idx), 1);
    assert_int_equal(idx[0], 0);
    // We offered _80; an answer in _32 cannot be used.
    offered[0] = TG_SRTP_AES_CM_128_HMAC_SHA1_80;
    assert_int_equal(tg_mplan_provider_crypto(&sdp, 0, k_prefs, 3, offered, idx), 0);
    assert_int_equal(idx[0], -1);
}

static void test_peer_and_hold(void **state) {
    (void)state;
    struct tg_sdp sdp;
    struct sockaddr_storage ss;
    parse(&sdp, "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.9\r\nt=0 0\r\n"
                "m=audio 5004 RTP/AVP 0\r\n"
                "m=audio 6000 RTP/AVP 0\r\nc=IN IP4 0.0.0.0\r\n"
                "m=audio 6002 RTP/AVP 0\r\na=sendonly\r\n"
                "m=audio 6004 RTP/AVP 0\r\na=inactive\r\n"
                "m=audio 6006 RTP/AVP 0\r\na=recvonly\r\n"
                "m=audio 6008 RTP/AVP 0\r\nc=IN IP6 2001:db8::7\r\n");
    assert_int_equal(tg_mplan_peer(&sdp.media[0], &ss), 1);
    const struct sockaddr_in *s4 = (const struct sockaddr_in *)&ss;
    assert_int_equal(s4->sin_family, AF_INET);
    assert_int_equal(ntohs(s4->sin_port), 5004);
    assert_int_equal(ntohl(s4->sin_addr.s_addr), 0xc0000209);
    assert_true(tg_mplan_receives(&sdp.media[0]));
    assert_int_equal(tg_mplan_peer(&sdp.media[1], &ss), 0); // hold: c=0.0.0.0
    assert_false(tg_mplan_receives(&sdp.media[1]));
    assert_true(tg_mplan_relayable(&sdp.media[1])); // ... the stream stays
    // sendonly (music on hold from it): its address stands, it gets nothing.
    assert_int_equal(tg_mplan_peer(&sdp.media[2], &ss), 1);
    assert_int_equal(ntohs(((const struct sockaddr_in *)&ss)->sin_port), 6002);
    assert_false(tg_mplan_receives(&sdp.media[2]));
    assert_int_equal(tg_mplan_peer(&sdp.media[3], &ss), 1); // inactive
    assert_false(tg_mplan_receives(&sdp.media[3]));
    assert_true(tg_mplan_receives(&sdp.media[4])); // recvonly: it receives
    assert_int_equal(tg_mplan_peer(&sdp.media[5], &ss), 1);
    const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&ss;
    assert_int_equal(s6->sin6_family, AF_INET6);
    assert_int_equal(ntohs(s6->sin6_port), 6008);
    assert_int_equal(s6->sin6_addr.s6_addr[15], 7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_slices_disjoint_and_complete),
        cmocka_unit_test(test_dialog_id_bounded),
        cmocka_unit_test(test_dialog_id_route_sets),
        cmocka_unit_test(test_dialog_id_refresh),
        cmocka_unit_test(test_dialog_id_invite),
        cmocka_unit_test(test_take_give),
        cmocka_unit_test(test_dialogs),
        cmocka_unit_test(test_dialogs_many),
        cmocka_unit_test(test_offer_picks_operator_order),
        cmocka_unit_test(test_offer_unknown_suites_488),
        cmocka_unit_test(test_crypto_under_avp_and_declined_sections),
        cmocka_unit_test(test_answer_must_carry_offered_suite),
        cmocka_unit_test(test_peer_and_hold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
