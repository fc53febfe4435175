// Identity policy over parsed certificates. No I/O except tg_policy_load_ca_file, which reads
// the one file it is given.
//
// Every public function leaves the thread's BoringSSL error queue as it found it (ERR_set_mark /
// ERR_pop_to_mark): the peer check runs inside the handshake's verify callback, and a stray
// error there would turn the next SSL_get_error into SSL_ERROR_SSL.

#include "tlsgate/policy.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/ec.h>
#include <openssl/ec_key.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/mem.h>
#include <openssl/nid.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

// The longest name or CN quoted in a detail string; longer ones are cut. An escaped CN
// (escape_bytes) needs a buffer of TG_DETAIL_ESCAPED_MAX bytes: the name, "..." and a NUL.
#define TG_DETAIL_NAME_MAX 80
#define TG_DETAIL_ESCAPED_MAX (TG_DETAIL_NAME_MAX + sizeof("..."))

#define TG_SECS_PER_DAY 86400
#define TG_OWN_WARN_DAYS 30
#define TG_OWN_RSA_FAIL_BITS 1024
#define TG_OWN_RSA_WARN_BITS 2048
#define TG_EC_MIN_BITS 256

struct tg_policy {
    X509_STORE *store; // the trusted CAs; X509_STORE is internally locked
    size_t num_cas;
    char **names; // accepted peer identities, NUL-terminated copies
    size_t num_names;
    unsigned min_rsa_bits;
};

static const char *const kVerdictNames[TG_VERDICT_NUM] = {
    [TG_VERDICT_OK] = "ok",
    [TG_VERDICT_NO_CERTIFICATE] = "no_certificate",
    [TG_VERDICT_SELF_SIGNED] = "self_signed",
    [TG_VERDICT_UNTRUSTED] = "untrusted",
    [TG_VERDICT_EXPIRED] = "expired",
    [TG_VERDICT_NOT_YET_VALID] = "not_yet_valid",
    [TG_VERDICT_KEY_TOO_SMALL] = "key_too_small",
    [TG_VERDICT_CN_MISMATCH] = "cn_mismatch",
    [TG_VERDICT_CN_CASE_MISMATCH] = "cn_case_mismatch",
    [TG_VERDICT_SAN_MISSING] = "san_missing",
    [TG_VERDICT_SAN_MISMATCH] = "san_mismatch",
    [TG_VERDICT_SAN_CASE_MISMATCH] = "san_case_mismatch",
    [TG_VERDICT_LEAF_IS_CA] = "leaf_is_ca",
    [TG_VERDICT_EKU_MISMATCH] = "eku_mismatch",
    [TG_VERDICT_KEY_USAGE_MISMATCH] = "key_usage_mismatch",
    [TG_VERDICT_HANDSHAKE_ERROR] = "handshake_error",
    [TG_VERDICT_TIMEOUT] = "timeout",
    [TG_VERDICT_PEER_CLOSED] = "peer_closed",
    [TG_VERDICT_CONNECT_FAILED] = "connect_failed",
};

const char *tg_verdict_name(enum tg_verdict v) {
    if ((unsigned)v >= TG_VERDICT_NUM || kVerdictNames[v] == NULL) {
        return "unknown";
    }
    return kVerdictNames[v];
}

const char *tg_rule_status_name(enum tg_rule_status s) {
    switch (s) {
    case TG_RULE_PASS:
        return "PASS";
    case TG_RULE_WARN:
        return "WARN";
    case TG_RULE_FAIL:
        return "FAIL";
    }
    return "?";
}

// Detail strings -----------------------------------------------------------------------------

static int is_hex_digit(int c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

// sanitize_detail rewrites |s| in place so it can sit inside a double-quoted log value: double
// quotes become single quotes, and control bytes, non-ASCII bytes and backslashes become '?',
// except a backslash that starts a \xHH escape written by escape_bytes (which escapes every
// backslash of its input, so such an escape always stands for one byte of the certificate).
static void sanitize_detail(char *s) {
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"') {
            *s = '\'';
        } else if (c == '\\' && s[1] == 'x' && is_hex_digit(s[2]) && is_hex_digit(s[3])) {
            s += 3;
        } else if (c == '\\' || c < 0x20 || c >= 0x7f) {
            *s = '?';
        }
    }
}

// escape_bytes writes the |in_len| bytes at |in| (a CN, which may hold any byte, NUL included)
// into |out| as printable ASCII fit to quote in a detail: every byte outside 0x20..0x7e, and
// the quote characters and the backslash, as \xHH. At most TG_DETAIL_NAME_MAX characters are
// written (then "..." marks the cut), and an escape is never split.
static void escape_bytes(char out[TG_DETAIL_ESCAPED_MAX], const uint8_t *in, size_t in_len) {
    static const char kHex[] = "0123456789abcdef";
    size_t n = 0;
    for (size_t i = 0; i < in_len; i++) {
        uint8_t c = in[i];
        int plain = c >= 0x20 && c < 0x7f && c != '"' && c != '\'' && c != '\\';
        size_t need = plain ? 1 : 4;
        if (n + need > TG_DETAIL_NAME_MAX) {
            memcpy(out + n, "...", 3);
            n += 3;
            break;
        }
        if (plain) {
            out[n++] = (char)c;
            continue;
        }
        out[n++] = '\\';
        out[n++] = 'x';
        out[n++] = kHex[c >> 4];
        out[n++] = kHex[c & 0xf];
    }
    out[n] = '\0';
}

// set_detail formats into |detail| (if not NULL) and sanitizes the result.
__attribute__((format(printf, 3, 4))) static void set_detail(char *detail, size_t detail_len,
                                                             const char *fmt, ...) {
    if (detail == NULL || detail_len == 0) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, detail_len, fmt, ap);
    va_end(ap);
    sanitize_detail(detail);
}

// Name comparison ----------------------------------------------------------------------------

enum name_match { NAME_NONE = 0, NAME_CASE, NAME_EXACT };

static int ascii_lower(int c) {
    return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

// match_name compares the |v_len| bytes at |v| (a CN or a DNS SAN, which may hold any bytes,
// NULs included) with the C string |name|. NAME_EXACT when equal byte for byte, NAME_CASE when
// equal once ASCII letters are folded, NAME_NONE otherwise. A value with an embedded NUL can
// never have the same length as |name|'s bytes and match, so it is always NAME_NONE.
static enum name_match match_name(const uint8_t *v, size_t v_len, const char *name) {
    size_t name_len = strlen(name);
    if (v_len != name_len || memchr(v, 0, v_len) != NULL) {
        return NAME_NONE;
    }
    if (memcmp(v, name, v_len) == 0) {
        return NAME_EXACT;
    }
    for (size_t i = 0; i < v_len; i++) {
        if (ascii_lower(v[i]) != ascii_lower((unsigned char)name[i])) {
            return NAME_NONE;
        }
    }
    return NAME_CASE;
}

// cn_utf8 converts the CN entry at |idx| of |subject| to UTF-8 into a buffer the caller frees
// with OPENSSL_free. Returns 1 on success.
static int cn_utf8(const X509_NAME *subject, int idx, uint8_t **out, size_t *out_len) {
    X509_NAME_ENTRY *e = X509_NAME_get_entry(subject, idx);
    ASN1_STRING *s = e != NULL ? X509_NAME_ENTRY_get_data(e) : NULL;
    if (s == NULL) {
        return 0;
    }
    unsigned char *utf8 = NULL;
    int len = ASN1_STRING_to_UTF8(&utf8, s);
    if (len < 0) {
        return 0;
    }
    *out = utf8;
    *out_len = (size_t)len;
    return 1;
}

int tg_policy_name_string(char *out, size_t out_len, const X509_NAME *name) {
    if (out == NULL || out_len == 0) {
        return 0;
    }
    out[0] = '\0';
    if (name == NULL) {
        return 0;
    }
    ERR_set_mark();
    BIO *bio = BIO_new(BIO_s_mem());
    // RFC 2253 flags escape every byte over 0x7e, so the text is printable ASCII.
    int ok = bio != NULL && X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253) >= 0;
    const uint8_t *text;
    size_t text_len;
    if (ok && BIO_mem_contents(bio, &text, &text_len)) {
        size_t n = text_len < out_len - 1 ? text_len : out_len - 1;
        memcpy(out, text, n);
        out[n] = '\0';
        sanitize_detail(out);
    } else {
        ok = 0;
    }
    BIO_free(bio);
    ERR_pop_to_mark();
    return ok;
}

// Certificate facts --------------------------------------------------------------------------

// is_self_signed returns 1 when |x|'s issuer name equals its subject name and its signature
// verifies with its own public key. (X509_check_issued is not used: it also demands keyCertSign
// in a keyUsage extension, which a self-signed leaf usually lacks.)
static int is_self_signed(X509 *x) {
    if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) != 0) {
        return 0;
    }
    EVP_PKEY *pub = X509_get_pubkey(x);
    if (pub == NULL) {
        return 0;
    }
    int ok = X509_verify(x, pub) == 1;
    EVP_PKEY_free(pub);
    return ok;
}

// secs_until sets |*out| to |t| - |now| in seconds. Returns 0 when |t| cannot be decoded.
static int secs_until(int64_t *out, const ASN1_TIME *now, const ASN1_TIME *t) {
    int days, secs;
    if (t == NULL || !ASN1_TIME_diff(&days, &secs, now, t)) {
        return 0;
    }
    *out = (int64_t)days * TG_SECS_PER_DAY + secs;
    return 1;
}

enum validity { VALID_OK, VALID_EXPIRED, VALID_NOT_YET, VALID_UNREADABLE };

// check_validity places |now| within |x|'s validity window; |*out_left| gets the seconds left
// to notAfter (negative once expired), |*out_until_start| those to notBefore.
static enum validity check_validity(X509 *x, int64_t now, int64_t *out_left,
                                    int64_t *out_until_start) {
    ASN1_TIME *now_asn1 = ASN1_TIME_set(NULL, (time_t)now);
    if (now_asn1 == NULL) {
        return VALID_UNREADABLE;
    }
    int ok = secs_until(out_until_start, now_asn1, X509_get0_notBefore(x)) &&
             secs_until(out_left, now_asn1, X509_get0_notAfter(x));
    ASN1_TIME_free(now_asn1);
    if (!ok) {
        return VALID_UNREADABLE;
    }
    if (*out_until_start > 0) {
        return VALID_NOT_YET;
    }
    if (*out_left < 0) {
        return VALID_EXPIRED;
    }
    return VALID_OK;
}

// describe_span writes "N days" or, under a day, "N s" for |secs| (taken as absolute).
static void describe_span(char *out, size_t out_len, int64_t secs) {
    if (secs < 0) {
        secs = -secs;
    }
    if (secs >= TG_SECS_PER_DAY) {
        snprintf(out, out_len, "%lld days", (long long)(secs / TG_SECS_PER_DAY));
        return;
    }
    snprintf(out, out_len, "%lld s", (long long)secs);
}

const char *tg_policy_key_type_name(const EVP_PKEY *pkey) {
    switch (EVP_PKEY_id(pkey)) {
    case EVP_PKEY_RSA:
        return "RSA";
    case EVP_PKEY_EC: {
        const EC_KEY *ec = EVP_PKEY_get0_EC_KEY(pkey);
        const EC_GROUP *g = ec != NULL ? EC_KEY_get0_group(ec) : NULL;
        switch (g != NULL ? EC_GROUP_get_curve_name(g) : NID_undef) {
        case NID_X9_62_prime256v1:
            return "EC P-256";
        case NID_secp384r1:
            return "EC P-384";
        case NID_secp521r1:
            return "EC P-521";
        default:
            return "EC";
        }
    }
    case EVP_PKEY_ED25519:
        return "Ed25519";
    case EVP_PKEY_X25519:
        return "X25519";
    case EVP_PKEY_DSA:
        return "DSA";
    default:
        return "unknown";
    }
}

// key_kind says what |pkey| is for the size rules. Ed25519 counts as acceptable: it gives about
// 128-bit security, like P-256, and there is no smaller variant to refuse. Other types (DSA, or
// anything BoringSSL cannot parse) are refused as too small.
enum key_kind { KEY_RSA, KEY_EC, KEY_ED25519, KEY_OTHER };

static enum key_kind key_kind(const EVP_PKEY *pkey) {
    switch (EVP_PKEY_id(pkey)) {
    case EVP_PKEY_RSA:
        return KEY_RSA;
    case EVP_PKEY_EC:
        return KEY_EC;
    case EVP_PKEY_ED25519:
        return KEY_ED25519;
    default:
        return KEY_OTHER;
    }
}

// leaf_dates_are_ours is the chain verify callback: it forgives the leaf's own validity errors
// (depth 0). The callers judge the leaf's window themselves, by the header's rule (expired when
// now > notAfter; BoringSSL's verifier already calls now == notAfter expired), and report it
// under its own verdict or rule. Issuers' dates stay the verifier's to check.
static int leaf_dates_are_ours(int ok, X509_STORE_CTX *ctx) {
    if (ok) {
        return 1;
    }
    int err = X509_STORE_CTX_get_error(ctx);
    return X509_STORE_CTX_get_error_depth(ctx) == 0 &&
           (err == X509_V_ERR_CERT_HAS_EXPIRED || err == X509_V_ERR_CERT_NOT_YET_VALID);
}

// verify_chain builds and verifies the chain of |leaf| to a root in |store| with |untrusted| as
// candidate intermediates, at time |now|. Neither a purpose nor the leaf's own dates are checked.
// Returns 1 when it verifies; |*out_err| and |*out_depth| get the X509_V_* error and its depth,
// |*out_len| the length of the chain built (when verified). When the chain stops because an
// issuer could not be found and |out_orphan| is not NULL, |*out_orphan| gets a new reference to
// the certificate whose issuer is missing (else NULL). A fresh X509_STORE_CTX per call keeps
// concurrent callers apart; the store itself is locked inside BoringSSL.
static int verify_chain(X509_STORE *store, X509 *leaf, STACK_OF(X509) *untrusted, int64_t now,
                        int *out_err, int *out_depth, size_t *out_len, X509 **out_orphan) {
    *out_err = X509_V_ERR_OUT_OF_MEM;
    *out_depth = 0;
    *out_len = 0;
    if (out_orphan != NULL) {
        *out_orphan = NULL;
    }
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    if (ctx == NULL) {
        return 0;
    }
    if (!X509_STORE_CTX_init(ctx, store, leaf, untrusted)) {
        X509_STORE_CTX_free(ctx);
        return 0;
    }
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(param, (time_t)now);
    X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_USE_CHECK_TIME);
    X509_STORE_CTX_set_verify_cb(ctx, leaf_dates_are_ours);
    int ok = X509_verify_cert(ctx) == 1;
    *out_err = X509_STORE_CTX_get_error(ctx);
    *out_depth = X509_STORE_CTX_get_error_depth(ctx);
    if (ok) {
        STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(ctx);
        *out_len = chain != NULL ? sk_X509_num(chain) : 0;
    } else if (out_orphan != NULL && (*out_err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY ||
                                      *out_err == X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT)) {
        X509 *at = X509_STORE_CTX_get_current_cert(ctx);
        if (at != NULL && X509_up_ref(at)) {
            *out_orphan = at;
        }
    }
    X509_STORE_CTX_free(ctx);
    return ok;
}

// Policy -------------------------------------------------------------------------------------

struct tg_policy *tg_policy_new(void) {
    struct tg_policy *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return NULL;
    }
    p->store = X509_STORE_new();
    if (p->store == NULL) {
        free(p);
        return NULL;
    }
    p->min_rsa_bits = 2048;
    return p;
}

void tg_policy_free(struct tg_policy *p) {
    if (p == NULL) {
        return;
    }
    X509_STORE_free(p->store);
    for (size_t i = 0; i < p->num_names; i++) {
        free(p->names[i]);
    }
    free(p->names);
    free(p);
}

int tg_policy_add_ca(struct tg_policy *p, X509 *ca) {
    if (p == NULL || ca == NULL) {
        return 0;
    }
    ERR_set_mark();
    // X509_STORE_add_cert takes its own reference. Adding a certificate already present is
    // not an error in BoringSSL.
    int ok = X509_STORE_add_cert(p->store, ca);
    ERR_pop_to_mark();
    if (!ok) {
        return 0;
    }
    p->num_cas++;
    return 1;
}

// read_pem_certs reads every certificate of the PEM file at |path| into a new stack. Returns
// NULL with a reason in |err| on failure, or when the file holds no certificate.
static STACK_OF(X509) *read_pem_certs(const char *path, char *err, size_t err_len) {
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        set_detail(err, err_len, "cannot open '%s'", path);
        return NULL;
    }
    STACK_OF(X509) *certs = sk_X509_new_null();
    if (certs == NULL) {
        BIO_free(bio);
        set_detail(err, err_len, "out of memory");
        return NULL;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL) {
            break;
        }
        if (!sk_X509_push(certs, x)) {
            X509_free(x);
            sk_X509_pop_free(certs, X509_free);
            BIO_free(bio);
            set_detail(err, err_len, "out of memory");
            return NULL;
        }
    }
    BIO_free(bio);
    // The loop ends on the first block that is not a certificate. Running out of input is the
    // normal end; anything else (a damaged block) rejects the whole bundle.
    uint32_t e = ERR_peek_last_error();
    int clean_end = ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE;
    if (!clean_end) {
        sk_X509_pop_free(certs, X509_free);
        set_detail(err, err_len, "'%s': unreadable PEM certificate", path);
        return NULL;
    }
    if (sk_X509_num(certs) == 0) {
        sk_X509_free(certs);
        set_detail(err, err_len, "'%s': no PEM certificate found", path);
        return NULL;
    }
    return certs;
}

size_t tg_policy_load_ca_file(struct tg_policy *p, const char *path, char *err, size_t err_len) {
    if (p == NULL || path == NULL) {
        set_detail(err, err_len, "no path");
        return 0;
    }
    ERR_set_mark();
    STACK_OF(X509) *certs = read_pem_certs(path, err, err_len);
    size_t added = 0;
    if (certs != NULL) {
        for (size_t i = 0; i < sk_X509_num(certs); i++) {
            if (!tg_policy_add_ca(p, sk_X509_value(certs, i))) {
                set_detail(err, err_len, "'%s': cannot add certificate %zu", path, i + 1);
                added = 0;
                break;
            }
            added++;
        }
        sk_X509_pop_free(certs, X509_free);
    }
    ERR_pop_to_mark();
    return added;
}

int tg_policy_add_peer_name(struct tg_policy *p, const char *name) {
    if (p == NULL || name == NULL || name[0] == '\0') {
        return 0;
    }
    char **names = realloc(p->names, (p->num_names + 1) * sizeof(*names));
    if (names == NULL) {
        return 0;
    }
    p->names = names;
    char *copy = strdup(name);
    if (copy == NULL) {
        return 0;
    }
    p->names[p->num_names++] = copy;
    return 1;
}

void tg_policy_set_min_rsa_bits(struct tg_policy *p, unsigned bits) {
    if (p != NULL) {
        p->min_rsa_bits = bits;
    }
}

// Peer check ---------------------------------------------------------------------------------

static enum tg_verdict peer_validity(X509 *leaf, int64_t now, char *detail, size_t detail_len) {
    int64_t left, until_start;
    char span[32];
    switch (check_validity(leaf, now, &left, &until_start)) {
    case VALID_OK:
        return TG_VERDICT_OK;
    case VALID_EXPIRED:
        describe_span(span, sizeof(span), left);
        set_detail(detail, detail_len, "certificate expired %s ago", span);
        return TG_VERDICT_EXPIRED;
    case VALID_NOT_YET:
        describe_span(span, sizeof(span), until_start);
        set_detail(detail, detail_len, "certificate is not valid for another %s", span);
        return TG_VERDICT_NOT_YET_VALID;
    case VALID_UNREADABLE:
        break;
    }
    set_detail(detail, detail_len, "unreadable validity dates");
    return TG_VERDICT_EXPIRED;
}

static enum tg_verdict peer_key(const struct tg_policy *p, X509 *leaf, char *detail,
                                size_t detail_len) {
    EVP_PKEY *pub = X509_get_pubkey(leaf);
    if (pub == NULL) {
        set_detail(detail, detail_len, "unreadable public key");
        return TG_VERDICT_KEY_TOO_SMALL;
    }
    unsigned bits = (unsigned)EVP_PKEY_bits(pub);
    enum key_kind kind = key_kind(pub);
    EVP_PKEY_free(pub);
    switch (kind) {
    case KEY_RSA:
        if (bits >= p->min_rsa_bits) {
            return TG_VERDICT_OK;
        }
        set_detail(detail, detail_len, "RSA key of %u bits is under the floor of %u", bits,
                   p->min_rsa_bits);
        return TG_VERDICT_KEY_TOO_SMALL;
    case KEY_EC:
        if (bits >= TG_EC_MIN_BITS) {
            return TG_VERDICT_OK;
        }
        set_detail(detail, detail_len, "EC key of %u bits is under %u", bits, TG_EC_MIN_BITS);
        return TG_VERDICT_KEY_TOO_SMALL;
    case KEY_ED25519:
        return TG_VERDICT_OK;
    case KEY_OTHER:
        break;
    }
    set_detail(detail, detail_len, "unsupported key type");
    return TG_VERDICT_KEY_TOO_SMALL;
}

static enum tg_verdict peer_chain(const struct tg_policy *p, X509 *leaf, STACK_OF(X509) *untrusted,
                                  int64_t now, char *detail, size_t detail_len) {
    int err, depth;
    size_t len;
    if (p->num_cas == 0) {
        set_detail(detail, detail_len, "no trusted CA configured");
        return TG_VERDICT_UNTRUSTED;
    }
    if (verify_chain(p->store, leaf, untrusted, now, &err, &depth, &len, NULL)) {
        return TG_VERDICT_OK;
    }
    set_detail(detail, detail_len, "chain: %s at depth %d", X509_verify_cert_error_string(err),
               depth);
    // The leaf's own dates were checked before; these are an issuer's.
    if (err == X509_V_ERR_CERT_HAS_EXPIRED) {
        return TG_VERDICT_EXPIRED;
    }
    if (err == X509_V_ERR_CERT_NOT_YET_VALID) {
        return TG_VERDICT_NOT_YET_VALID;
    }
    return TG_VERDICT_UNTRUSTED;
}

// peer_cn finds the name of |names| (|num_names| of them) the subject CN equals. Every CN entry
// is tried (a subject may carry several); one that equals a name exactly wins. Returns
// TG_VERDICT_OK with |*out_name| set, else CN_CASE_MISMATCH when some CN equals a name once case
// is ignored, else CN_MISMATCH (no CN, or none matches). |bound| says the one name is a
// target's own (tg_policy_check_peer_name), which the detail then names.
static enum tg_verdict peer_cn(const char *const *names, size_t num_names, int bound, X509 *leaf,
                               const char **out_name, char *detail, size_t detail_len) {
    const X509_NAME *subject = X509_get_subject_name(leaf);
    int seen = 0;
    int case_only = 0;
    for (int idx = -1; (idx = X509_NAME_get_index_by_NID(subject, NID_commonName, idx)) >= 0;) {
        uint8_t *cn;
        size_t cn_len;
        if (!cn_utf8(subject, idx, &cn, &cn_len)) {
            continue;
        }
        for (size_t i = 0; i < num_names; i++) {
            enum name_match m = match_name(cn, cn_len, names[i]);
            if (m == NAME_EXACT) {
                *out_name = names[i];
                OPENSSL_free(cn);
                return TG_VERDICT_OK;
            }
            if (m == NAME_CASE && !case_only) {
                case_only = 1;
                char shown[TG_DETAIL_ESCAPED_MAX];
                escape_bytes(shown, cn, cn_len);
                set_detail(detail, detail_len, "CN '%s' differs from %s '%s' only in case", shown,
                           bound ? "target name" : "peer name", names[i]);
            }
        }
        if (!seen && !case_only) {
            char shown[TG_DETAIL_ESCAPED_MAX];
            escape_bytes(shown, cn, cn_len);
            if (bound) {
                set_detail(detail, detail_len, "CN '%s' is not the target name '%s'", shown,
                           names[0]);
            } else {
                set_detail(detail, detail_len, "CN '%s' is none of the %zu peer name(s)", shown,
                           num_names);
            }
        }
        seen = 1;
        OPENSSL_free(cn);
    }
    if (case_only) {
        return TG_VERDICT_CN_CASE_MISMATCH;
    }
    if (!seen) {
        set_detail(detail, detail_len, "no readable subject CN");
    }
    return TG_VERDICT_CN_MISMATCH;
}

// san_lookup searches |leaf|'s DNS SANs for |name|. Returns NAME_EXACT or NAME_CASE for the
// best match, NAME_NONE otherwise; |*out_num_dns| gets the number of DNS SANs.
static enum name_match san_lookup(X509 *leaf, const char *name, size_t *out_num_dns) {
    *out_num_dns = 0;
    GENERAL_NAMES *gens = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    if (gens == NULL) {
        return NAME_NONE;
    }
    enum name_match best = NAME_NONE;
    for (size_t i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *gen = sk_GENERAL_NAME_value(gens, i);
        if (gen->type != GEN_DNS) {
            continue;
        }
        (*out_num_dns)++;
        const ASN1_STRING *dns = gen->d.dNSName;
        enum name_match m =
            match_name(ASN1_STRING_get0_data(dns), (size_t)ASN1_STRING_length(dns), name);
        if (m > best) {
            best = m;
        }
    }
    GENERAL_NAMES_free(gens);
    return best;
}

static enum tg_verdict peer_san(X509 *leaf, const char *name, char *detail, size_t detail_len) {
    size_t num_dns;
    switch (san_lookup(leaf, name, &num_dns)) {
    case NAME_EXACT:
        return TG_VERDICT_OK;
    case NAME_CASE:
        set_detail(detail, detail_len, "DNS SAN differs from '%s' only in case", name);
        return TG_VERDICT_SAN_CASE_MISMATCH;
    case NAME_NONE:
        break;
    }
    if (num_dns == 0) {
        set_detail(detail, detail_len, "no DNS SAN");
        return TG_VERDICT_SAN_MISSING;
    }
    set_detail(detail, detail_len, "none of %zu DNS SAN(s) is '%s'", num_dns, name);
    return TG_VERDICT_SAN_MISMATCH;
}

// describe_eku writes the purposes an extendedKeyUsage extension with |xku| (XKU_* bits) names,
// "serverAuth, codeSigning", or "no purpose tlsgate knows" when none.
static void describe_eku(char *out, size_t out_len, uint32_t xku) {
    static const struct {
        uint32_t bit;
        const char *name;
    } kPurposes[] = {
        {XKU_SSL_SERVER, "serverAuth"},      {XKU_SSL_CLIENT, "clientAuth"},
        {XKU_SMIME, "emailProtection"},      {XKU_CODE_SIGN, "codeSigning"},
        {XKU_OCSP_SIGN, "OCSPSigning"},      {XKU_TIMESTAMP, "timeStamping"},
        {XKU_ANYEKU, "anyExtendedKeyUsage"},
    };
    size_t n = 0;
    out[0] = '\0';
    for (size_t i = 0; i < sizeof(kPurposes) / sizeof(kPurposes[0]); i++) {
        if ((xku & kPurposes[i].bit) == 0) {
            continue;
        }
        int w = snprintf(out + n, out_len - n, "%s%s", n > 0 ? ", " : "", kPurposes[i].name);
        if (w < 0 || (size_t)w >= out_len - n) {
            return;
        }
        n += (size_t)w;
    }
    if (n == 0) {
        snprintf(out, out_len, "no purpose tlsgate knows");
    }
}

// peer_purpose checks that |leaf| is an end-entity certificate its issuer meant for the TLS
// role the peer plays (RFC 5280 4.2.1.3, 4.2.1.9, 4.2.1.12):
//  - basicConstraints CA:TRUE is refused: a CA certificate is not a peer identity.
//  - extendedKeyUsage, when present, must name clientAuth (the peer is the TLS client) or
//    serverAuth (the peer is the TLS server). anyExtendedKeyUsage does not stand in for it: RFC
//    5280 lets an application that needs a purpose refuse it, OpenSSL and BoringSSL do for TLS,
//    and the CA/Browser Forum forbids it in TLS leaves; a CA that means "any purpose" omits the
//    extension. Absent, any purpose is allowed (RFC 5280).
//  - keyUsage, when present, must allow digitalSignature: a TLS client signs CertificateVerify,
//    and a server signs its ECDHE parameters (TLS 1.2) or CertificateVerify (TLS 1.3).
//    keyEncipherment is not asked for: it serves only RSA key transport, which the default
//    suites (all ECDHE) and TLS 1.3 never use.
static enum tg_verdict peer_purpose(X509 *leaf, enum tg_peer_role role, char *detail,
                                    size_t detail_len) {
    uint32_t flags = X509_get_extension_flags(leaf);
    if ((flags & EXFLAG_BCONS) != 0 && (flags & EXFLAG_CA) != 0) {
        set_detail(detail, detail_len, "certificate is a CA (basicConstraints CA:TRUE)");
        return TG_VERDICT_LEAF_IS_CA;
    }
    if ((flags & EXFLAG_XKUSAGE) != 0) {
        uint32_t xku = X509_get_extended_key_usage(leaf);
        int client = role == TG_PEER_CLIENT;
        if ((xku & (client ? XKU_SSL_CLIENT : XKU_SSL_SERVER)) == 0) {
            char has[128];
            describe_eku(has, sizeof(has), xku);
            set_detail(detail, detail_len, "extendedKeyUsage lacks %s for a TLS %s (has %s)",
                       client ? "clientAuth" : "serverAuth", client ? "client" : "server", has);
            return TG_VERDICT_EKU_MISMATCH;
        }
    }
    if ((flags & EXFLAG_KUSAGE) != 0 && (X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE) == 0) {
        set_detail(detail, detail_len, "keyUsage lacks digitalSignature");
        return TG_VERDICT_KEY_USAGE_MISMATCH;
    }
    return TG_VERDICT_OK;
}

static enum tg_verdict check_peer(const struct tg_policy *p, enum tg_peer_role role, X509 *leaf,
                                  STACK_OF(X509) *untrusted, int64_t now, const char *only_name,
                                  const char **out_name, char *detail, size_t detail_len) {
    if (leaf == NULL) {
        set_detail(detail, detail_len, "no certificate");
        return TG_VERDICT_NO_CERTIFICATE;
    }
    if (p == NULL) {
        set_detail(detail, detail_len, "no policy");
        return TG_VERDICT_UNTRUSTED;
    }
    if (is_self_signed(leaf)) {
        set_detail(detail, detail_len, "self-signed certificate");
        return TG_VERDICT_SELF_SIGNED;
    }
    enum tg_verdict v = peer_validity(leaf, now, detail, detail_len);
    if (v != TG_VERDICT_OK) {
        return v;
    }
    v = peer_key(p, leaf, detail, detail_len);
    if (v != TG_VERDICT_OK) {
        return v;
    }
    v = peer_chain(p, leaf, untrusted, now, detail, detail_len);
    if (v != TG_VERDICT_OK) {
        return v;
    }
    v = peer_purpose(leaf, role, detail, detail_len);
    if (v != TG_VERDICT_OK) {
        return v;
    }
    // The names the peer may carry: the one a target is bound to, else the peer_names list.
    // An empty name is bound to nothing (it would match an empty CN).
    if (only_name != NULL && only_name[0] == '\0') {
        set_detail(detail, detail_len, "empty target name");
        return TG_VERDICT_CN_MISMATCH;
    }
    const char *const *names = only_name != NULL ? &only_name : (const char *const *)p->names;
    size_t num_names = only_name != NULL ? 1 : p->num_names;
    const char *name = NULL;
    v = peer_cn(names, num_names, only_name != NULL, leaf, &name, detail, detail_len);
    if (v != TG_VERDICT_OK) {
        return v;
    }
    v = peer_san(leaf, name, detail, detail_len);
    if (v != TG_VERDICT_OK) {
        return v;
    }
    if (out_name != NULL) {
        *out_name = name;
    }
    set_detail(detail, detail_len, "peer name '%s'", name);
    return TG_VERDICT_OK;
}

enum tg_verdict tg_policy_check_peer_name(const struct tg_policy *p, enum tg_peer_role role,
                                          X509 *leaf, STACK_OF(X509) *untrusted, int64_t now,
                                          const char *only_name, const char **out_name,
                                          char *detail, size_t detail_len) {
    if (out_name != NULL) {
        *out_name = NULL;
    }
    ERR_set_mark();
    enum tg_verdict v =
        check_peer(p, role, leaf, untrusted, now, only_name, out_name, detail, detail_len);
    ERR_pop_to_mark();
    return v;
}

enum tg_verdict tg_policy_check_peer(const struct tg_policy *p, enum tg_peer_role role, X509 *leaf,
                                     STACK_OF(X509) *untrusted, int64_t now, const char **out_name,
                                     char *detail, size_t detail_len) {
    return tg_policy_check_peer_name(p, role, leaf, untrusted, now, NULL, out_name, detail,
                                     detail_len);
}

// Own certificate ----------------------------------------------------------------------------

struct own_out {
    struct tg_rule_result *out;
    size_t max_out;
    size_t num;
};

__attribute__((format(printf, 4, 5))) static void
emit(struct own_out *o, const char *rule, enum tg_rule_status status, const char *fmt, ...) {
    if (o->num >= o->max_out) {
        return;
    }
    struct tg_rule_result *r = &o->out[o->num++];
    r->rule = rule;
    r->status = status;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->detail, sizeof(r->detail), fmt, ap);
    va_end(ap);
    sanitize_detail(r->detail);
}

static void own_self_signed(struct own_out *o, X509 *leaf) {
    if (is_self_signed(leaf)) {
        emit(o, "not_self_signed", TG_RULE_FAIL, "certificate is self-signed");
        return;
    }
    emit(o, "not_self_signed", TG_RULE_PASS, "issued by a CA");
}

static void own_chain(struct own_out *o, X509 *leaf, STACK_OF(X509) *chain, X509_STORE *trust,
                      int64_t now) {
    if (trust == NULL) {
        emit(o, "chain", TG_RULE_PASS, "skipped: no trust store given");
        return;
    }
    int err, depth;
    size_t len;
    X509 *orphan;
    if (!verify_chain(trust, leaf, chain, now, &err, &depth, &len, &orphan)) {
        if (orphan == NULL) {
            emit(o, "chain", TG_RULE_FAIL, "%s at depth %d", X509_verify_cert_error_string(err),
                 depth);
            return;
        }
        // Name what is missing: the operator has to fetch exactly that certificate.
        char issuer[TG_DETAIL_NAME_MAX + 1], subject[TG_DETAIL_NAME_MAX + 1];
        tg_policy_name_string(issuer, sizeof(issuer), X509_get_issuer_name(orphan));
        tg_policy_name_string(subject, sizeof(subject), X509_get_subject_name(orphan));
        if (X509_NAME_cmp(X509_get_issuer_name(orphan), X509_get_subject_name(orphan)) == 0) {
            emit(o, "chain", TG_RULE_FAIL, "'%s' is its own issuer and not a trusted root",
                 subject);
        } else {
            emit(o, "chain", TG_RULE_FAIL,
                 "issuer '%s' of '%s' not found in the chain or the trust store (missing "
                 "intermediate?)",
                 issuer, subject);
        }
        X509_free(orphan);
        return;
    }
    emit(o, "chain", TG_RULE_PASS, "%zu certificate(s) up to a trusted root", len);
}

// own_chain_length: TLS sends our certificates from a fixed array (tls.c), at most
// TG_OWN_CHAIN_MAX of them; a longer file cannot be served.
static void own_chain_length(struct own_out *o, STACK_OF(X509) *chain) {
    size_t n = 1 + (chain != NULL ? sk_X509_num(chain) : 0);
    if (n > TG_OWN_CHAIN_MAX) {
        emit(o, "chain_length", TG_RULE_FAIL,
             "%zu certificates, more than %d: keep the leaf and its intermediates, drop the rest",
             n, TG_OWN_CHAIN_MAX);
        return;
    }
    emit(o, "chain_length", TG_RULE_PASS, "%zu certificate(s)", n);
}

// own_chain_order: the file lists the leaf first, then each certificate's issuer. A CA in
// first place, or a certificate not issued (by name) by the next one, is a file in the wrong
// order; saying so beats the key mismatch that follows from it.
static void own_chain_order(struct own_out *o, X509 *leaf, STACK_OF(X509) *chain) {
    size_t num = chain != NULL ? sk_X509_num(chain) : 0;
    char a[TG_DETAIL_NAME_MAX + 1], b[TG_DETAIL_NAME_MAX + 1];
    if (num > 0 && (X509_get_extension_flags(leaf) & EXFLAG_CA) != 0) {
        tg_policy_name_string(a, sizeof(a), X509_get_subject_name(leaf));
        emit(o, "chain_order", TG_RULE_FAIL,
             "the chain is out of order: certificate 1 (%s) is a CA; put the leaf first, then "
             "each issuer",
             a);
        return;
    }
    X509 *cur = leaf;
    for (size_t i = 0; i < num; i++) {
        X509 *next = sk_X509_value(chain, i);
        if (X509_NAME_cmp(X509_get_issuer_name(cur), X509_get_subject_name(next)) != 0) {
            tg_policy_name_string(a, sizeof(a), X509_get_subject_name(cur));
            tg_policy_name_string(b, sizeof(b), X509_get_subject_name(next));
            emit(o, "chain_order", TG_RULE_FAIL,
                 "the chain is out of order: certificate %zu (%s) is not issued by certificate "
                 "%zu (%s); put the leaf first, then each issuer",
                 i + 1, a, i + 2, b);
            return;
        }
        cur = next;
    }
    emit(o, "chain_order", TG_RULE_PASS, "leaf first, then each issuer");
}

static void own_cn(struct own_out *o, X509 *leaf, const char *fqdn) {
    const X509_NAME *subject = X509_get_subject_name(leaf);
    int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    uint8_t *cn;
    size_t cn_len;
    if (idx < 0 || !cn_utf8(subject, idx, &cn, &cn_len)) {
        emit(o, "cn_matches_fqdn", TG_RULE_FAIL, "no subject CN");
        return;
    }
    if (X509_NAME_get_index_by_NID(subject, NID_commonName, idx) >= 0) {
        emit(o, "cn_matches_fqdn", TG_RULE_FAIL, "subject has more than one CN");
        OPENSSL_free(cn);
        return;
    }
    char shown[TG_DETAIL_ESCAPED_MAX];
    escape_bytes(shown, cn, cn_len);
    switch (match_name(cn, cn_len, fqdn)) {
    case NAME_EXACT:
        emit(o, "cn_matches_fqdn", TG_RULE_PASS, "CN is '%s'", fqdn);
        break;
    case NAME_CASE:
        emit(o, "cn_matches_fqdn", TG_RULE_FAIL, "CN '%s' differs from '%s' only in case", shown,
             fqdn);
        break;
    case NAME_NONE:
        emit(o, "cn_matches_fqdn", TG_RULE_FAIL, "CN '%s' is not '%s'", shown, fqdn);
        break;
    }
    OPENSSL_free(cn);
}

static void own_san(struct own_out *o, X509 *leaf, const char *fqdn) {
    size_t num_dns;
    switch (san_lookup(leaf, fqdn, &num_dns)) {
    case NAME_EXACT:
        emit(o, "san_matches_fqdn", TG_RULE_PASS, "DNS SAN '%s' present", fqdn);
        return;
    case NAME_CASE:
        emit(o, "san_matches_fqdn", TG_RULE_FAIL, "DNS SAN differs from '%s' only in case", fqdn);
        return;
    case NAME_NONE:
        break;
    }
    if (num_dns == 0) {
        emit(o, "san_matches_fqdn", TG_RULE_FAIL, "no DNS SAN");
        return;
    }
    emit(o, "san_matches_fqdn", TG_RULE_FAIL, "none of %zu DNS SAN(s) is '%s'", num_dns, fqdn);
}

static void own_key_size(struct own_out *o, X509 *leaf) {
    EVP_PKEY *pub = X509_get_pubkey(leaf);
    if (pub == NULL) {
        emit(o, "key_size", TG_RULE_FAIL, "unreadable public key");
        return;
    }
    unsigned bits = (unsigned)EVP_PKEY_bits(pub);
    enum key_kind kind = key_kind(pub);
    EVP_PKEY_free(pub);
    switch (kind) {
    case KEY_RSA:
        if (bits < TG_OWN_RSA_FAIL_BITS) {
            emit(o, "key_size", TG_RULE_FAIL, "RSA %u bits, under %u", bits, TG_OWN_RSA_FAIL_BITS);
        } else if (bits < TG_OWN_RSA_WARN_BITS) {
            emit(o, "key_size", TG_RULE_WARN, "RSA %u bits, under %u", bits, TG_OWN_RSA_WARN_BITS);
        } else {
            emit(o, "key_size", TG_RULE_PASS, "RSA %u bits", bits);
        }
        return;
    case KEY_EC:
        if (bits < TG_EC_MIN_BITS) {
            emit(o, "key_size", TG_RULE_FAIL, "EC %u bits, under %u", bits, TG_EC_MIN_BITS);
            return;
        }
        emit(o, "key_size", TG_RULE_PASS, "EC %u bits", bits);
        return;
    case KEY_ED25519:
    case KEY_OTHER:
        break;
    }
    emit(o, "key_size", TG_RULE_PASS, "skipped: see key_type");
}

// own_key_type: our key must be one that SIP peers and BoringSSL's TLS stack both take.
static void own_key_type(struct own_out *o, X509 *leaf) {
    EVP_PKEY *pub = X509_get_pubkey(leaf);
    if (pub == NULL) {
        emit(o, "key_type", TG_RULE_FAIL, "unreadable public key");
        return;
    }
    const char *name = tg_policy_key_type_name(pub);
    int ok = EVP_PKEY_id(pub) == EVP_PKEY_RSA || EVP_PKEY_id(pub) == EVP_PKEY_EC;
    EVP_PKEY_free(pub);
    if (!ok) {
        emit(o, "key_type", TG_RULE_FAIL, "%s keys are not supported; %s", name, TG_OWN_KEY_TYPES);
        return;
    }
    emit(o, "key_type", TG_RULE_PASS, "%s", name);
}

static void own_key_matches(struct own_out *o, X509 *leaf, EVP_PKEY *key) {
    if (key == NULL) {
        emit(o, "key_matches", TG_RULE_PASS, "skipped: no private key given");
        return;
    }
    if (!X509_check_private_key(leaf, key)) {
        emit(o, "key_matches", TG_RULE_FAIL, "private key does not match the certificate");
        return;
    }
    emit(o, "key_matches", TG_RULE_PASS, "private key matches the certificate");
}

static void own_validity(struct own_out *o, X509 *leaf, int64_t now) {
    int64_t left, until_start;
    char span[32];
    switch (check_validity(leaf, now, &left, &until_start)) {
    case VALID_UNREADABLE:
        emit(o, "validity", TG_RULE_FAIL, "unreadable validity dates");
        return;
    case VALID_EXPIRED:
        describe_span(span, sizeof(span), left);
        emit(o, "validity", TG_RULE_FAIL, "expired %s ago", span);
        return;
    case VALID_NOT_YET:
        describe_span(span, sizeof(span), until_start);
        emit(o, "validity", TG_RULE_FAIL, "not valid for another %s", span);
        return;
    case VALID_OK:
        break;
    }
    describe_span(span, sizeof(span), left);
    if (left < (int64_t)TG_OWN_WARN_DAYS * TG_SECS_PER_DAY) {
        emit(o, "validity", TG_RULE_WARN, "%s left, under %d days", span, TG_OWN_WARN_DAYS);
        return;
    }
    emit(o, "validity", TG_RULE_PASS, "%s left", span);
}

// own_eku: our certificate serves both directions of a trunk, so it needs serverAuth and
// clientAuth. A certificate without an EKU extension is usable for any purpose by RFC 5280,
// but some SIP peers insist on seeing both, so that is a WARN.
static void own_eku(struct own_out *o, X509 *leaf) {
    if ((X509_get_extension_flags(leaf) & EXFLAG_XKUSAGE) == 0) {
        emit(o, "eku", TG_RULE_WARN, "no extendedKeyUsage extension (peers may want both)");
        return;
    }
    uint32_t eku = X509_get_extended_key_usage(leaf);
    int server = (eku & XKU_SSL_SERVER) != 0;
    int client = (eku & XKU_SSL_CLIENT) != 0;
    if (server && client) {
        emit(o, "eku", TG_RULE_PASS, "serverAuth and clientAuth");
        return;
    }
    emit(o, "eku", TG_RULE_FAIL, "missing %s",
         !server && !client ? "serverAuth and clientAuth"
         : !server          ? "serverAuth"
                            : "clientAuth");
}

size_t tg_policy_check_own(const char *fqdn, X509 *leaf, STACK_OF(X509) *chain, EVP_PKEY *key,
                           X509_STORE *trust, int64_t now, struct tg_rule_result *out,
                           size_t max_out) {
    struct own_out o = {out, out != NULL ? max_out : 0, 0};
    if (leaf == NULL || fqdn == NULL) {
        static const char *const kRules[] = {
            "not_self_signed", "chain_length",     "chain_order", "chain",
            "cn_matches_fqdn", "san_matches_fqdn", "key_type",    "key_size",
            "key_matches",     "validity",         "eku"};
        for (size_t i = 0; i < sizeof(kRules) / sizeof(kRules[0]); i++) {
            emit(&o, kRules[i], TG_RULE_FAIL, leaf == NULL ? "no certificate" : "no FQDN");
        }
        return o.num;
    }
    ERR_set_mark();
    own_self_signed(&o, leaf);
    own_chain_length(&o, chain);
    own_chain_order(&o, leaf, chain);
    own_chain(&o, leaf, chain, trust, now);
    own_cn(&o, leaf, fqdn);
    own_san(&o, leaf, fqdn);
    own_key_type(&o, leaf);
    own_key_size(&o, leaf);
    own_key_matches(&o, leaf, key);
    own_validity(&o, leaf, now);
    own_eku(&o, leaf);
    ERR_pop_to_mark();
    return o.num;
}
