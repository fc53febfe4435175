// Unit tests for the admin access decision (proxy/adminpolicy.c): CIDR networks, Host and
// Origin names, and a table of requests with the refusal and status each must get.

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "tlsgate/adminpolicy.h"
#include "tlsgate/config.h"

#define TOKEN "s3cret-t0ken-0123456789"

// The [tls] and listener sections every policy's configuration needs.
#define REST                                                                                       \
    "[tls]\ncert = c\nkey = k\nca = a\nfqdn = sbc.example.com\npeer_names = p\n"                   \
    "[inbound x]\nlisten = 127.0.0.1:5061\nforward = 127.0.0.1:5060\n"

enum which { LOOP, LOOP_TOKEN, WILD, V6, NUM_POLICIES };

static const char *const k_admin_sections[NUM_POLICIES] = {
    // LOOP: the default (loopback, no allow-list, no token).
    "[admin]\nlisten = 127.0.0.1:9900\n",
    // LOOP_TOKEN: loopback with a token, an allow-list and extra names.
    "[admin]\nlisten = 127.0.0.1:9900\nallow = 127.0.0.0/8\ntoken_file = t\n"
    "hosts = admin.example.net, 192.0.2.9, 2001:db8::9\n",
    // WILD: every address, allow-list and token required.
    "[admin]\nlisten = 0.0.0.0:9900\nallow = 10.0.0.0/8, 192.0.2.7/32, ::1/128\n"
    "token_file = t\nhosts = tlsgate-admin.internal\n",
    // V6: IPv6 loopback.
    "[admin]\nlisten = [::1]:9900\n",
};

struct fixture {
    struct tg_config cfg[NUM_POLICIES];
    struct tg_adminpolicy policy[NUM_POLICIES];
};

static struct fixture g_fx;

static int setup(void **state) {
    (void)state;
    for (int i = 0; i < NUM_POLICIES; i++) {
        char text[1024], err[512];
        snprintf(text, sizeof(text), "%s%s", k_admin_sections[i], REST);
        if (!tg_config_parse(&g_fx.cfg[i], "t.conf", text, strlen(text), err, sizeof(err))) {
            fprintf(stderr, "policy %d: %s\n", i, err);
            return -1;
        }
        int token = g_fx.cfg[i].admin_token_file[0] != '\0';
        if (!tg_adminpolicy_init(&g_fx.policy[i], &g_fx.cfg[i],
                                 token ? (const uint8_t *)TOKEN : NULL, token ? strlen(TOKEN) : 0))
            return -1;
    }
    return 0;
}

static int teardown(void **state) {
    (void)state;
    for (int i = 0; i < NUM_POLICIES; i++)
        tg_config_cleanup(&g_fx.cfg[i]);
    return 0;
}

// sockaddr_of fills |ss| with |text| (IPv4 or IPv6), port 40000.
static const struct sockaddr *sockaddr_of(struct sockaddr_storage *ss, const char *text) {
    memset(ss, 0, sizeof(*ss));
    if (text == NULL)
        return NULL;
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, text, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(40000);
        return (const struct sockaddr *)ss;
    }
    assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(40000);
    return (const struct sockaddr *)ss;
}

// ---------------------------------------------------------------------------------------------
// Networks.

static void test_cidr_parse_good(void **state) {
    (void)state;
    static const struct {
        const char *text;
        int family;
        unsigned prefix;
    } k_good[] = {
        {"10.0.0.0/8", AF_INET, 8},     {"192.0.2.7/32", AF_INET, 32},
        {"192.0.2.7", AF_INET, 32},     {"0.0.0.0/0", AF_INET, 0},
        {"::1/128", AF_INET6, 128},     {"2001:db8::/32", AF_INET6, 32},
        {"::/0", AF_INET6, 0},          {"fe80::", AF_INET6, 128},
        {"10.0.0.0/008", AF_INET, 8},   {"::ffff:10.0.0.0/8", AF_INET, 8},
        {"172.16.0.0/12", AF_INET, 12}, {"2001:db8:8000::/33", AF_INET6, 33},
    };
    for (size_t i = 0; i < sizeof(k_good) / sizeof(k_good[0]); i++) {
        struct tg_cidr net;
        char why[200] = "";
        if (!tg_cidr_parse(&net, k_good[i].text, strlen(k_good[i].text), why, sizeof(why)))
            fail_msg("%s: %s", k_good[i].text, why);
        assert_int_equal(net.family, k_good[i].family);
        assert_int_equal(net.prefix, k_good[i].prefix);
    }
}

static void test_cidr_parse_bad(void **state) {
    (void)state;
    static const struct {
        const char *text;
        const char *why;
    } k_bad[] = {
        {"", "'' is not ADDR/PREFIX with a numeric address"},
        {"/8", "'/8' is not ADDR/PREFIX with a numeric address"},
        {"10.0.0.0/", "'10.0.0.0/': bad prefix length: expected 0..32"},
        {"10.0.0.0/33", "'10.0.0.0/33': bad prefix length: expected 0..32"},
        {"10.0.0.0/-1", "'10.0.0.0/-1': bad prefix length: expected 0..32"},
        {"10.0.0.0/8/8", "'10.0.0.0/8/8': bad prefix length: expected 0..32"},
        {"10.0.0.0/ 8", "'10.0.0.0/ 8': bad prefix length: expected 0..32"},
        {"::1/129", "'::1/129': bad prefix length: expected 0..128"},
        {"10.0.0.1/8", "'10.0.0.1/8' has host bits set (the network is 10.0.0.0/8)"},
        {"2001:db8::1/32", "'2001:db8::1/32' has host bits set (the network is 2001:db8::/32)"},
        {"[::1]/128", "'[::1]/128': write an IPv6 network without brackets"},
        {"localhost/32", "'localhost/32' is not ADDR/PREFIX with a numeric address"},
        {"10.0.0/8", "'10.0.0/8' is not ADDR/PREFIX with a numeric address"},
        {"10.0.0.256", "'10.0.0.256' is not ADDR/PREFIX with a numeric address"},
        {"fe80::1%eth0", "'fe80::1%eth0' is not ADDR/PREFIX with a numeric address"},
        {"1111:2222:3333:4444:5555:6666:7777:8888:9999/128",
         "'1111:2222:3333:4444:5555:6666:7777:8888:9999/128' is not ADDR/PREFIX with a numeric "
         "address"},
    };
    for (size_t i = 0; i < sizeof(k_bad) / sizeof(k_bad[0]); i++) {
        struct tg_cidr net;
        char why[200] = "";
        if (tg_cidr_parse(&net, k_bad[i].text, strlen(k_bad[i].text), why, sizeof(why)))
            fail_msg("%s parsed", k_bad[i].text);
        assert_string_equal(why, k_bad[i].why);
    }
    // A NUL inside the given length is refused, not cut short.
    struct tg_cidr net;
    assert_int_equal(tg_cidr_parse(&net, "10.0.0.0\0/8", 11, NULL, 0), 0);
}

static void test_cidr_contains(void **state) {
    (void)state;
    static const struct {
        const char *net;
        const char *addr;
        int in;
    } k_cases[] = {
        {"10.0.0.0/8", "10.255.1.2", 1},
        {"10.0.0.0/8", "11.0.0.1", 0},
        {"10.0.0.0/8", "::ffff:10.1.1.1", 1},
        {"10.0.0.0/8", "::1", 0},
        {"192.0.2.7/32", "192.0.2.7", 1},
        {"192.0.2.7/32", "192.0.2.6", 0},
        {"0.0.0.0/0", "203.0.113.5", 1},
        {"0.0.0.0/0", "2001:db8::1", 0},
        {"::1/128", "::1", 1},
        {"::1/128", "127.0.0.1", 0},
        {"2001:db8::/33", "2001:db8::5", 1},
        {"2001:db8::/33", "2001:db8:8000::1", 0},
        {"127.0.0.0/8", "127.0.0.2", 1},
        {"127.0.0.1/32", "127.0.0.2", 0},
        {"172.16.0.0/12", "172.31.255.255", 1},
        {"172.16.0.0/12", "172.32.0.0", 0},
    };
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        struct tg_cidr net;
        assert_true(tg_cidr_parse(&net, k_cases[i].net, strlen(k_cases[i].net), NULL, 0));
        struct sockaddr_storage ss;
        if (tg_cidr_contains(&net, sockaddr_of(&ss, k_cases[i].addr)) != k_cases[i].in)
            fail_msg("%s in %s: expected %d", k_cases[i].addr, k_cases[i].net, k_cases[i].in);
    }
    struct tg_cidr net;
    assert_true(tg_cidr_parse(&net, "0.0.0.0/0", 9, NULL, 0));
    assert_false(tg_cidr_contains(&net, NULL));
    struct sockaddr_storage unix_sa = {.ss_family = AF_UNIX};
    assert_false(tg_cidr_contains(&net, (const struct sockaddr *)&unix_sa));
}

static void test_loopback_and_format(void **state) {
    (void)state;
    struct sockaddr_storage ss;
    assert_true(tg_sockaddr_is_loopback(sockaddr_of(&ss, "127.0.0.1")));
    assert_true(tg_sockaddr_is_loopback(sockaddr_of(&ss, "127.9.9.9")));
    assert_true(tg_sockaddr_is_loopback(sockaddr_of(&ss, "::1")));
    assert_true(tg_sockaddr_is_loopback(sockaddr_of(&ss, "::ffff:127.0.0.1")));
    assert_false(tg_sockaddr_is_loopback(sockaddr_of(&ss, "0.0.0.0")));
    assert_false(tg_sockaddr_is_loopback(sockaddr_of(&ss, "::")));
    assert_false(tg_sockaddr_is_loopback(sockaddr_of(&ss, "128.0.0.1")));
    assert_false(tg_sockaddr_is_loopback(sockaddr_of(&ss, "::2")));
    assert_false(tg_sockaddr_is_loopback(NULL));
    char out[64];
    tg_sockaddr_format(sockaddr_of(&ss, "::ffff:192.0.2.1"), out, sizeof(out));
    assert_string_equal(out, "192.0.2.1");
    tg_sockaddr_format(sockaddr_of(&ss, "2001:db8::1"), out, sizeof(out));
    assert_string_equal(out, "2001:db8::1");
    tg_sockaddr_format(NULL, out, sizeof(out));
    assert_string_equal(out, "?");
}

// ---------------------------------------------------------------------------------------------
// Names.

static void test_host_names(void **state) {
    (void)state;
    static const struct {
        enum which policy;
        const char *host;
        const char *local; // the address the connection arrived on (NULL: unknown)
        uint16_t default_port;
        int ok;
    } k_cases[] = {
        {LOOP, "127.0.0.1:9900", NULL, 0, 1},
        {LOOP, "127.0.0.1", NULL, 0, 1},
        {LOOP, "localhost:9900", NULL, 0, 1},
        {LOOP, "LOCALHOST", NULL, 0, 1},
        {LOOP, "localhost:9901", NULL, 0, 0},
        {LOOP, "127.0.0.2:9900", NULL, 0, 0}, // not our address
        {LOOP, "attacker.example", NULL, 0, 0},
        {LOOP, "attacker.example:9900", NULL, 0, 0},
        {LOOP, "localhost.", NULL, 0, 0},
        {LOOP, "localhost:", NULL, 0, 0},
        {LOOP, "localhost:0", NULL, 0, 0},
        {LOOP, "localhost:99000", NULL, 0, 0},
        {LOOP, "localhost:9900x", NULL, 0, 0},
        {LOOP, ":9900", NULL, 0, 0},
        {LOOP, "", NULL, 0, 0},
        {LOOP, "127.0.0.1:9900:9900", NULL, 0, 0},
        {LOOP, "evil@127.0.0.1:9900", NULL, 0, 0},
        {LOOP, "[127.0.0.1]:9900", NULL, 0, 0}, // brackets are for IPv6 only
        {LOOP, "127.0.0.1", NULL, 80, 0},       // an Origin without a port means port 80
        {LOOP, "127.0.0.1:9900", NULL, 80, 1},
        {LOOP_TOKEN, "admin.example.net:9900", NULL, 0, 1},
        {LOOP_TOKEN, "Admin.Example.NET", NULL, 0, 1},
        {LOOP_TOKEN, "192.0.2.9:9900", NULL, 0, 1},
        {LOOP_TOKEN, "[2001:db8::9]:9900", NULL, 0, 1},
        {LOOP_TOKEN, "[2001:DB8:0::9]", NULL, 0, 1},
        {LOOP_TOKEN, "2001:db8::9", NULL, 0, 0}, // unbracketed IPv6
        {LOOP_TOKEN, "admin.example.net.evil", NULL, 0, 0},
        {WILD, "0.0.0.0:9900", NULL, 0, 1}, // the listen address as written
        {WILD, "0.0.0.0:9901", NULL, 0, 0},
        {WILD, "10.1.2.3:9900", "10.1.2.3", 0, 1}, // the address it arrived on
        {WILD, "10.1.2.3:9900", "10.1.2.4", 0, 0},
        {WILD, "10.1.2.3:9900", NULL, 0, 0},
        {WILD, "localhost:9900", "127.0.0.1", 0, 1},
        {WILD, "localhost:9900", "10.1.2.3", 0, 0},
        {WILD, "tlsgate-admin.internal:9900", "10.1.2.3", 0, 1},
        {WILD, "tlsgate-admin.internal:9900", NULL, 0, 1},
        {WILD, "attacker.example:9900", "10.1.2.3", 0, 0},
        {V6, "[::1]:9900", NULL, 0, 1},
        {V6, "[0:0::1]", NULL, 0, 1},
        {V6, "[::1", NULL, 0, 0},
        {V6, "[::1]x", NULL, 0, 0},
        {V6, "[]:9900", NULL, 0, 0},
        {V6, "[localhost]:9900", NULL, 0, 0},
        {V6, "localhost:9900", NULL, 0, 1},
        {V6, "127.0.0.1:9900", NULL, 0, 0},
    };
    for (size_t i = 0; i < sizeof(k_cases) / sizeof(k_cases[0]); i++) {
        struct sockaddr_storage ss;
        const struct sockaddr *local = sockaddr_of(&ss, k_cases[i].local);
        int ok = tg_adminpolicy_host_ok(&g_fx.policy[k_cases[i].policy], k_cases[i].host,
                                        strlen(k_cases[i].host), local, k_cases[i].default_port);
        if (ok != k_cases[i].ok)
            fail_msg("case %zu: host '%s' policy %d: expected %d", i, k_cases[i].host,
                     (int)k_cases[i].policy, k_cases[i].ok);
    }
}

// ---------------------------------------------------------------------------------------------
// The decision.

struct decide_case {
    enum which policy;
    const char *method, *path, *host, *origin, *content_type, *authorization;
    const char *source, *local;
    enum tg_admin_refusal refusal;
    uint16_t status;
    enum tg_admin_route route;
};

#define BEARER "Bearer " TOKEN
#define H "127.0.0.1:9900"

static const struct decide_case k_decide[] = {
    // The default loopback admin: reads and reload without a token, as before.
    {LOOP, "GET", "/healthz", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_HEALTHZ},
    {LOOP, "HEAD", "/metrics", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_METRICS},
    {LOOP, "GET", "/status", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_STATUS},
    {LOOP, "POST", "/reload", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", NULL, NULL, "application/json", NULL, "127.0.0.1", NULL, TG_ADMIN_OK,
     200, TG_ADMIN_ROUTE_RELOAD}, // HTTP/1.0 without Host
    {LOOP, "POST", "/reload", H, "http://127.0.0.1:9900", NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, "http://localhost:9900", NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_RELOAD},
    // DNS rebinding: a name that is not ours.
    {LOOP, "POST", "/reload", "attacker.example", NULL, NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_HOST, 421, TG_ADMIN_ROUTE_NONE},
    {LOOP, "GET", "/status", "attacker.example:9900", NULL, NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_HOST, 421, TG_ADMIN_ROUTE_NONE},
    {LOOP, "GET", "/healthz", "", NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_HOST, 421,
     TG_ADMIN_ROUTE_NONE},
    // Cross-site browser shapes.
    {LOOP, "POST", "/reload", H, "http://evil.example", "text/plain", NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_ORIGIN, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, "null", NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_ORIGIN, 403,
     TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, "http://127.0.0.1", NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_ORIGIN, 403, TG_ADMIN_ROUTE_RELOAD}, // port 80: another origin
    {LOOP, "POST", "/reload", H, "http://127.0.0.1:9900/x", NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_ORIGIN, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, "ftp://127.0.0.1:9900", NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_ORIGIN, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, "http://", NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_ORIGIN,
     403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, NULL, "text/plain", NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_CONTENT_TYPE, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, NULL, "Text/Plain; charset=UTF-8", NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_CONTENT_TYPE, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, NULL, "application/x-www-form-urlencoded", NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_CONTENT_TYPE, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, NULL, " multipart/form-data ; boundary=x", NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_CONTENT_TYPE, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/reload", H, NULL, "text/plainx", NULL, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_RELOAD},
    // A GET carries no Origin or Content-Type check (the Host check covers rebinding).
    {LOOP, "GET", "/healthz", H, "http://evil.example", "text/plain", NULL, "127.0.0.1", NULL,
     TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_HEALTHZ},
    // Methods and paths.
    {LOOP, "GET", "/reload", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_METHOD, 405,
     TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "PUT", "/reload", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_METHOD, 405,
     TG_ADMIN_ROUTE_RELOAD},
    {LOOP, "POST", "/status", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_METHOD, 405,
     TG_ADMIN_ROUTE_STATUS},
    {LOOP, "OPTIONS", "/metrics", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_METHOD,
     405, TG_ADMIN_ROUTE_METRICS},
    {LOOP, "get", "/healthz", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_METHOD, 405,
     TG_ADMIN_ROUTE_HEALTHZ},
    {LOOP, "GET", "/", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_NOT_FOUND, 404,
     TG_ADMIN_ROUTE_NONE},
    {LOOP, "GET", "/healthz/", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_NOT_FOUND,
     404, TG_ADMIN_ROUTE_NONE},
    {LOOP, "GET", "", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_NOT_FOUND, 404,
     TG_ADMIN_ROUTE_NONE},
    {LOOP, NULL, "/healthz", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_REFUSE_METHOD, 405,
     TG_ADMIN_ROUTE_NONE},
    // A source that cannot be told is refused.
    {LOOP, "GET", "/healthz", H, NULL, NULL, NULL, NULL, NULL, TG_ADMIN_REFUSE_SOURCE, 403,
     TG_ADMIN_ROUTE_NONE},
    // Loopback with a token: /reload and /status need it, /healthz and /metrics do not.
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_MISSING, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "Bearer wrong-token-0123456789", "127.0.0.1",
     NULL, TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "Bearer " TOKEN "x", "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "Bearer s3cret", "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "Basic " TOKEN, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "Bearer", "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "Bearer ", "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "Bearer" TOKEN, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "", "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_WRONG, 401, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, BEARER, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, NULL, "bearer  " TOKEN " ", "127.0.0.1", NULL,
     TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "GET", "/status", H, NULL, NULL, NULL, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_TOKEN_MISSING, 401, TG_ADMIN_ROUTE_STATUS},
    {LOOP_TOKEN, "GET", "/status", H, NULL, NULL, BEARER, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_STATUS},
    {LOOP_TOKEN, "GET", "/healthz", H, NULL, NULL, NULL, "127.0.0.1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_HEALTHZ},
    {LOOP_TOKEN, "GET", "/metrics", H, NULL, NULL, "Bearer nonsense", "127.0.0.1", NULL,
     TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_METRICS},
    // The token does not excuse the browser checks, which come first.
    {LOOP_TOKEN, "POST", "/reload", H, "http://evil.example", NULL, BEARER, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_ORIGIN, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", H, NULL, "text/plain", BEARER, "127.0.0.1", NULL,
     TG_ADMIN_REFUSE_CONTENT_TYPE, 403, TG_ADMIN_ROUTE_RELOAD},
    {LOOP_TOKEN, "POST", "/reload", "admin.example.net", "https://admin.example.net:9900", NULL,
     BEARER, "127.0.0.1", NULL, TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_RELOAD},
    // The allow-list comes before everything else.
    {LOOP_TOKEN, "GET", "/healthz", H, NULL, NULL, NULL, "192.0.2.1", NULL, TG_ADMIN_REFUSE_SOURCE,
     403, TG_ADMIN_ROUTE_NONE},
    {LOOP_TOKEN, "GET", "/nope", "attacker.example", NULL, NULL, NULL, "::1", NULL,
     TG_ADMIN_REFUSE_SOURCE, 403, TG_ADMIN_ROUTE_NONE},
    {LOOP_TOKEN, "GET", "/healthz", H, NULL, NULL, NULL, "::ffff:127.0.0.5", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_HEALTHZ},
    // Every address: allow-list and names.
    {WILD, "GET", "/healthz", "10.1.2.3:9900", NULL, NULL, NULL, "10.9.9.9", "10.1.2.3",
     TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_HEALTHZ},
    {WILD, "GET", "/healthz", "10.1.2.3:9900", NULL, NULL, NULL, "11.9.9.9", "10.1.2.3",
     TG_ADMIN_REFUSE_SOURCE, 403, TG_ADMIN_ROUTE_NONE},
    {WILD, "GET", "/healthz", "192.0.2.7:9900", NULL, NULL, NULL, "192.0.2.8", "192.0.2.7",
     TG_ADMIN_REFUSE_SOURCE, 403, TG_ADMIN_ROUTE_NONE},
    {WILD, "GET", "/healthz", "10.1.2.3:9900", NULL, NULL, NULL, "192.0.2.7", "10.1.2.3",
     TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_HEALTHZ},
    {WILD, "GET", "/healthz", "[::1]:9900", NULL, NULL, NULL, "::1", "::1", TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_HEALTHZ},
    {WILD, "GET", "/healthz", "localhost:9900", NULL, NULL, NULL, "::1", "::1", TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_HEALTHZ},
    {WILD, "GET", "/healthz", "127.0.0.1:9900", NULL, NULL, NULL, "127.0.0.1", "127.0.0.1",
     TG_ADMIN_REFUSE_SOURCE, 403, TG_ADMIN_ROUTE_NONE},
    {WILD, "GET", "/healthz", "attacker.example:9900", NULL, NULL, NULL, "10.0.0.1", "10.1.2.3",
     TG_ADMIN_REFUSE_HOST, 421, TG_ADMIN_ROUTE_NONE},
    {WILD, "POST", "/reload", "tlsgate-admin.internal:9900", NULL, NULL, NULL, "10.0.0.1",
     "10.1.2.3", TG_ADMIN_REFUSE_TOKEN_MISSING, 401, TG_ADMIN_ROUTE_RELOAD},
    {WILD, "POST", "/reload", "tlsgate-admin.internal:9900", NULL, "application/json", BEARER,
     "10.0.0.1", "10.1.2.3", TG_ADMIN_OK, 200, TG_ADMIN_ROUTE_RELOAD},
    // IPv6 loopback.
    {V6, "GET", "/healthz", "[::1]:9900", NULL, NULL, NULL, "::1", NULL, TG_ADMIN_OK, 200,
     TG_ADMIN_ROUTE_HEALTHZ},
    {V6, "GET", "/healthz", "127.0.0.1:9900", NULL, NULL, NULL, "::1", NULL, TG_ADMIN_REFUSE_HOST,
     421, TG_ADMIN_ROUTE_NONE},
};

static void test_decide_table(void **state) {
    (void)state;
    for (size_t i = 0; i < sizeof(k_decide) / sizeof(k_decide[0]); i++) {
        const struct decide_case *c = &k_decide[i];
        struct sockaddr_storage src, loc;
        struct tg_admin_request req = {
            .method = c->method,
            .path = c->path,
            .host = c->host,
            .origin = c->origin,
            .content_type = c->content_type,
            .authorization = c->authorization,
            .source = sockaddr_of(&src, c->source),
            .local = sockaddr_of(&loc, c->local),
        };
        struct tg_admin_decision d;
        enum tg_admin_refusal r = tg_adminpolicy_decide(&g_fx.policy[c->policy], &d, &req);
        if (r != c->refusal || d.refusal != c->refusal || d.status != c->status ||
            d.route != c->route)
            fail_msg("case %zu (%s %s host=%s): got %s/%u/route %d, expected %s/%u/route %d", i,
                     c->method ? c->method : "-", c->path, c->host ? c->host : "-",
                     tg_admin_refusal_name(r), d.status, (int)d.route,
                     tg_admin_refusal_name(c->refusal), c->status, (int)c->route);
    }
}

static void test_refusal_names(void **state) {
    (void)state;
    for (int i = 0; i < TG_ADMIN_REFUSE_NUM; i++) {
        const char *a = tg_admin_refusal_name((enum tg_admin_refusal)i);
        assert_string_not_equal(a, "?");
        for (int j = 0; j < i; j++)
            assert_string_not_equal(a, tg_admin_refusal_name((enum tg_admin_refusal)j));
    }
    assert_string_equal(tg_admin_refusal_name(TG_ADMIN_REFUSE_NUM), "?");
}

static void test_init_token_length(void **state) {
    (void)state;
    struct tg_adminpolicy p;
    const struct tg_config *cfg = &g_fx.cfg[LOOP_TOKEN];
    assert_false(tg_adminpolicy_init(&p, cfg, (const uint8_t *)"short", 5));
    uint8_t big[TG_ADMIN_TOKEN_MAX + 1];
    memset(big, 'a', sizeof(big));
    assert_false(tg_adminpolicy_init(&p, cfg, big, sizeof(big)));
    assert_true(tg_adminpolicy_init(&p, cfg, big, TG_ADMIN_TOKEN_MAX));
    assert_true(p.have_token);
    assert_true(tg_adminpolicy_init(&p, cfg, NULL, 0));
    assert_false(p.have_token);
    // A token of the maximum length is accepted in the header; one byte more is not.
    char auth[TG_ADMIN_TOKEN_MAX + 16];
    snprintf(auth, sizeof(auth), "Bearer %.*s", TG_ADMIN_TOKEN_MAX, (const char *)big);
    assert_true(tg_adminpolicy_init(&p, cfg, big, TG_ADMIN_TOKEN_MAX));
    struct sockaddr_storage src;
    struct tg_admin_request req = {.method = "GET",
                                   .path = "/status",
                                   .authorization = auth,
                                   .source = sockaddr_of(&src, "127.0.0.1")};
    struct tg_admin_decision d;
    assert_int_equal(tg_adminpolicy_decide(&p, &d, &req), TG_ADMIN_OK);
    char longer[TG_ADMIN_TOKEN_MAX + 32];
    snprintf(longer, sizeof(longer), "%sa", auth);
    req.authorization = longer;
    assert_int_equal(tg_adminpolicy_decide(&p, &d, &req), TG_ADMIN_REFUSE_TOKEN_WRONG);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cidr_parse_good), cmocka_unit_test(test_cidr_parse_bad),
        cmocka_unit_test(test_cidr_contains),   cmocka_unit_test(test_loopback_and_format),
        cmocka_unit_test(test_host_names),      cmocka_unit_test(test_decide_table),
        cmocka_unit_test(test_refusal_names),   cmocka_unit_test(test_init_token_length),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
