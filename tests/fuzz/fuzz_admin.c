// libFuzzer harness for the admin access decision (proxy/adminpolicy.c): any request must get a
// decision whose status matches its reason, and nothing may be allowed that the rules refuse
// (a source outside the allow-list, a foreign Host, a POST to a read endpoint, a token-guarded
// route without the token). The CIDR parser gets the same bytes.
//
// Input: byte 0 picks one of four policies, byte 1 the source family (even: IPv4, odd: IPv6),
// bytes 2..17 the source address (the first 4 for IPv4), bytes 18..33 the local address the
// same way (family from byte 1's second bit), then up to six fields separated by '\n': method,
// path, Host, Origin, Content-Type, Authorization. A field not present is an absent header; a
// NUL inside a field ends it there, as it would in a C string from the HTTP parser.
#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "fuzz.h"
#include "tlsgate/adminpolicy.h"
#include "tlsgate/config.h"

#define TOKEN "fuzz-token-0123456789abcdef"
#define NUM_POLICIES 4
#define NUM_FIELDS 6

#define REST                                                                                       \
    "[tls]\ncert = c\nkey = k\nca = a\nfqdn = sbc.example.com\npeer_names = p\n"                   \
    "[inbound x]\nlisten = 127.0.0.1:5061\nforward = 127.0.0.1:5060\n"

static const char *const k_configs[NUM_POLICIES] = {
    "[admin]\nlisten = 127.0.0.1:9900\n" REST,
    "[admin]\nlisten = 127.0.0.1:9900\nallow = 127.0.0.0/8\ntoken_file = t\n"
    "hosts = admin.example.net, 192.0.2.9, 2001:db8::9\n" REST,
    "[admin]\nlisten = 0.0.0.0:9900\nallow = 10.0.0.0/8, 192.0.2.7/32, ::1/128\ntoken_file = t\n"
    "hosts = tlsgate-admin.internal\n" REST,
    "[admin]\nlisten = [::1]:9900\nallow = ::/0, 0.0.0.0/1\n" REST,
};

static struct tg_config g_cfg[NUM_POLICIES];
static struct tg_adminpolicy g_policy[NUM_POLICIES];
static int g_ready;

static void setup_once(void) {
    if (g_ready)
        return;
    for (int i = 0; i < NUM_POLICIES; i++) {
        char err[256];
        if (!tg_config_parse(&g_cfg[i], "fuzz.conf", k_configs[i], strlen(k_configs[i]), err,
                             sizeof(err)))
            __builtin_trap();
        int token = g_cfg[i].admin_token_file[0] != '\0';
        if (!tg_adminpolicy_init(&g_policy[i], &g_cfg[i], token ? (const uint8_t *)TOKEN : NULL,
                                 token ? strlen(TOKEN) : 0))
            __builtin_trap();
    }
    g_ready = 1;
}

// fill_addr makes a socket address of |family| from 16 bytes at |b|.
static const struct sockaddr *fill_addr(struct sockaddr_storage *ss, int v6, const uint8_t *b) {
    memset(ss, 0, sizeof(*ss));
    if (v6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, b, 16);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, b, 4);
    }
    return (const struct sockaddr *)ss;
}

static uint16_t expected_status(enum tg_admin_refusal r) {
    switch (r) {
    case TG_ADMIN_OK:
        return 200;
    case TG_ADMIN_REFUSE_SOURCE:
    case TG_ADMIN_REFUSE_ORIGIN:
    case TG_ADMIN_REFUSE_CONTENT_TYPE:
        return 403;
    case TG_ADMIN_REFUSE_HOST:
        return 421;
    case TG_ADMIN_REFUSE_NOT_FOUND:
        return 404;
    case TG_ADMIN_REFUSE_METHOD:
        return 405;
    case TG_ADMIN_REFUSE_TOKEN_MISSING:
    case TG_ADMIN_REFUSE_TOKEN_WRONG:
        return 401;
    case TG_ADMIN_REFUSE_NUM:
        break;
    }
    __builtin_trap();
}

// bearer_is_token reports, independently of the module, whether |auth| carries TOKEN.
static int bearer_is_token(const char *auth) {
    if (strncasecmp(auth, "bearer", 6) != 0 || (auth[6] != ' ' && auth[6] != '\t'))
        return 0;
    const char *t = auth + 6;
    while (*t == ' ' || *t == '\t')
        t++;
    size_t len = strlen(t);
    while (len > 0 && (t[len - 1] == ' ' || t[len - 1] == '\t'))
        len--;
    return len == strlen(TOKEN) && memcmp(t, TOKEN, len) == 0;
}

static void check_cidr(const char *text) {
    struct tg_cidr net;
    char why[200];
    if (!tg_cidr_parse(&net, text, strlen(text), why, sizeof(why))) {
        if (why[0] == '\0')
            __builtin_trap(); // every refusal says why
        return;
    }
    if ((net.family == AF_INET && net.prefix > 32) || (net.family == AF_INET6 && net.prefix > 128))
        __builtin_trap();
    struct sockaddr_storage ss;
    if (!tg_cidr_contains(&net, fill_addr(&ss, net.family == AF_INET6, net.addr)))
        __builtin_trap(); // a network contains its own address
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    setup_once();
    if (size < 34)
        return 0;
    const struct tg_adminpolicy *p = &g_policy[data[0] % NUM_POLICIES];
    struct sockaddr_storage src, loc;
    const struct sockaddr *source = fill_addr(&src, data[1] & 1, data + 2);
    const struct sockaddr *local = fill_addr(&loc, (data[1] >> 1) & 1, data + 18);

    // The fields, each copied into its own NUL-terminated buffer (ASan sees any overread).
    char *fields[NUM_FIELDS] = {NULL};
    size_t pos = 34;
    for (int f = 0; f < NUM_FIELDS && pos <= size; f++) {
        const uint8_t *nl = memchr(data + pos, '\n', size - pos);
        size_t len = nl != NULL ? (size_t)(nl - (data + pos)) : size - pos;
        fields[f] = malloc(len + 1);
        if (fields[f] == NULL)
            __builtin_trap();
        memcpy(fields[f], data + pos, len);
        fields[f][len] = '\0';
        pos += len + 1;
        if (nl == NULL)
            break;
    }
    struct tg_admin_request req = {
        .method = fields[0],
        .path = fields[1],
        .host = fields[2],
        .origin = fields[3],
        .content_type = fields[4],
        .authorization = fields[5],
        .source = source,
        .local = local,
    };
    struct tg_admin_decision d;
    enum tg_admin_refusal r = tg_adminpolicy_decide(p, &d, &req);
    if (r != d.refusal || r >= TG_ADMIN_REFUSE_NUM || d.status != expected_status(r))
        __builtin_trap();
    if (r == TG_ADMIN_OK) {
        if (d.route == TG_ADMIN_ROUTE_NONE || !tg_adminpolicy_source_ok(p, source))
            __builtin_trap();
        if (req.host != NULL && !tg_adminpolicy_host_ok(p, req.host, strlen(req.host), local, 0))
            __builtin_trap();
        int post = strcmp(req.method, "POST") == 0;
        if (post != (d.route == TG_ADMIN_ROUTE_RELOAD))
            __builtin_trap();
        int guarded = d.route == TG_ADMIN_ROUTE_RELOAD || d.route == TG_ADMIN_ROUTE_STATUS;
        if (p->have_token && guarded &&
            (req.authorization == NULL || !bearer_is_token(req.authorization)))
            __builtin_trap();
    }
    if (r == TG_ADMIN_REFUSE_SOURCE && tg_adminpolicy_source_ok(p, source))
        __builtin_trap();
    if (fields[1] != NULL)
        check_cidr(fields[1]);
    for (int f = 0; f < NUM_FIELDS; f++)
        free(fields[f]);
    return 0;
}
