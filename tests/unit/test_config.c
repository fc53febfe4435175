// Unit tests for the configuration loader (proxy/config.c).

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tlsgate/config.h"

// A valid [tls] section on lines 1..6 and an inbound listener on lines 7..9: negative tests
// add one bad line around them so the expected line number is easy to read.
#define TLS_SECTION                                                                                \
    "[tls]\n"                                                                                      \
    "cert = /etc/tlsgate/sbc.crt\n"                                                                \
    "key = /etc/tlsgate/sbc.key\n"                                                                 \
    "ca = /etc/tlsgate/ca.pem\n"                                                                   \
    "fqdn = sbc.example.com\n"                                                                     \
    "peer_names = sip.example-carrier.net\n"
#define INBOUND_SECTION                                                                            \
    "[inbound carrier]\n"                                                                          \
    "listen = 0.0.0.0:5061\n"                                                                      \
    "forward = 192.0.2.10:5060\n"
#define MINIMAL TLS_SECTION INBOUND_SECTION

// parse copies |data_len| bytes of |data| into a buffer of exactly that size (no terminating
// NUL, so ASan sees any read past the end) and parses it as "t.conf".
static int parse_bytes(struct tg_config *cfg, const char *data, size_t data_len, char *err,
                       size_t err_len) {
    char *copy = malloc(data_len > 0 ? data_len : 1);
    assert_non_null(copy);
    memcpy(copy, data, data_len);
    int ok = tg_config_parse(cfg, "t.conf", copy, data_len, err, err_len);
    free(copy);
    return ok;
}

static int parse(struct tg_config *cfg, const char *text, char *err, size_t err_len) {
    return parse_bytes(cfg, text, strlen(text), err, err_len);
}

// expect_error_bytes asserts that parsing fails with exactly the message |want| and leaves
// nothing allocated in the config.
static void expect_error_bytes(const char *data, size_t data_len, const char *want) {
    struct tg_config cfg;
    char err[512];
    int ok = parse_bytes(&cfg, data, data_len, err, sizeof(err));
    if (ok)
        fail_msg("parse succeeded, expected: %s", want);
    assert_string_equal(err, want);
    assert_null(cfg.listeners);
    assert_null(cfg.peer_names);
    tg_config_cleanup(&cfg);
}

static void expect_error(const char *text, const char *want) {
    expect_error_bytes(text, strlen(text), want);
}

static void expect_ok(struct tg_config *cfg, const char *text) {
    char err[512] = "";
    if (!parse(cfg, text, err, sizeof(err)))
        fail_msg("parse failed: %s", err);
}

static void assert_target(const struct tg_target *t, const char *host, uint16_t port, int resolved,
                          const char *formatted) {
    char buf[300];
    assert_string_equal(t->host, host);
    assert_int_equal(t->port, port);
    assert_int_equal(t->resolved, resolved);
    tg_target_format(t, buf, sizeof(buf));
    assert_string_equal(buf, formatted);
}

// ---------------------------------------------------------------------------------------------
// Good files.

static const char k_full[] =
    "; tlsgate test configuration\n"
    "# every key set\n"
    "[global]\n"
    "workers = 4\n"
    "max_connections = 5000\n"
    "log_level = debug\n"
    "user = tlsgate\n"
    "drain_timeout_ms = 2500\n"
    "buffer_size = 131072\n"
    "\n"
    "[admin]\n"
    "listen = [::1]:9901\n"
    "enabled = no\n"
    "\n"
    "[tls]\n"
    "cert = /etc/tlsgate/sbc.crt\n"
    "key = /etc/tlsgate/sbc.key\n"
    "ca = /etc/tlsgate/ca.pem\n"
    "fqdn = sbc.example.com\n"
    "peer_names =  sip.Example-Carrier.net ,sip2.example-carrier.net,\tPeer_3 \n"
    "min_key_bits = 3072\n"
    "min_version = 1.3\n"
    "ciphers = ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384\n"
    "handshake_timeout_ms = 5000\n"
    "idle_timeout_ms = 0\n"
    "\n"
    "[inbound carrier]\n"
    "listen = [::]:5061\n"
    "forward = 192.0.2.10:5060\n"
    "mode = sip\n"
    "\n"
    "[outbound pbx-out.1]\n"
    "listen = 127.0.0.1:5062\n"
    "connect = sip.example-carrier.net:5061, [2001:db8::5]:5061 "
    ",198.51.100.7:5061\n"
    "mode = tcp\n";

static void test_full_file(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, k_full);
    assert_string_equal(cfg.path, "t.conf");

    assert_int_equal(cfg.workers, 4);
    assert_int_equal(cfg.max_connections, 5000);
    assert_int_equal(cfg.log_level, TG_LOG_DEBUG);
    assert_string_equal(cfg.user, "tlsgate");
    assert_int_equal(cfg.drain_timeout_ms, 2500);
    assert_int_equal(cfg.buffer_size, 131072);

    assert_int_equal(cfg.admin_enabled, 0);
    assert_target(&cfg.admin_listen, "::1", 9901, 1, "[::1]:9901");
    assert_int_equal(cfg.admin_listen.addr.ss_family, AF_INET6);
    assert_int_equal(cfg.admin_listen.addr_len, sizeof(struct sockaddr_in6));

    assert_string_equal(cfg.cert, "/etc/tlsgate/sbc.crt");
    assert_string_equal(cfg.key, "/etc/tlsgate/sbc.key");
    assert_string_equal(cfg.ca, "/etc/tlsgate/ca.pem");
    assert_string_equal(cfg.fqdn, "sbc.example.com");
    assert_int_equal(cfg.num_peer_names, 3);
    assert_string_equal(cfg.peer_names[0], "sip.Example-Carrier.net");
    assert_string_equal(cfg.peer_names[1], "sip2.example-carrier.net");
    assert_string_equal(cfg.peer_names[2], "Peer_3");
    assert_int_equal(cfg.min_key_bits, 3072);
    assert_int_equal(cfg.min_version, 0x0304);
    assert_string_equal(cfg.ciphers, "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384");
    assert_int_equal(cfg.handshake_timeout_ms, 5000);
    assert_int_equal(cfg.idle_timeout_ms, 0);

    assert_int_equal(cfg.num_listeners, 2);
    const struct tg_listener_conf *in = &cfg.listeners[0];
    assert_string_equal(in->name, "carrier");
    assert_int_equal(in->direction, TG_INBOUND);
    assert_int_equal(in->mode, TG_MODE_SIP);
    assert_int_equal(in->line, 27);
    assert_target(&in->listen, "::", 5061, 1, "[::]:5061");
    assert_int_equal(in->num_targets, 1);
    assert_target(&in->targets[0], "192.0.2.10", 5060, 1, "192.0.2.10:5060");
    const struct sockaddr_in *sin = (const struct sockaddr_in *)&in->targets[0].addr;
    assert_int_equal(sin->sin_family, AF_INET);
    assert_int_equal(ntohs(sin->sin_port), 5060);
    assert_int_equal(ntohl(sin->sin_addr.s_addr), 0xC000020A);
    assert_int_equal(in->targets[0].addr_len, sizeof(struct sockaddr_in));

    const struct tg_listener_conf *out = &cfg.listeners[1];
    assert_string_equal(out->name, "pbx-out.1");
    assert_int_equal(out->direction, TG_OUTBOUND);
    assert_int_equal(out->mode, TG_MODE_TCP);
    assert_int_equal(out->line, 32);
    assert_target(&out->listen, "127.0.0.1", 5062, 1, "127.0.0.1:5062");
    assert_int_equal(out->num_targets, 3);
    assert_target(&out->targets[0], "sip.example-carrier.net", 5061, 0,
                  "sip.example-carrier.net:5061");
    assert_target(&out->targets[1], "2001:db8::5", 5061, 1, "[2001:db8::5]:5061");
    assert_target(&out->targets[2], "198.51.100.7", 5061, 1, "198.51.100.7:5061");
    tg_config_cleanup(&cfg);
    tg_config_cleanup(&cfg); // cleanup twice is safe
}

static void test_defaults(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, MINIMAL);
    assert_int_equal(cfg.workers, 0);
    assert_int_equal(cfg.max_connections, 10000);
    assert_int_equal(cfg.log_level, TG_LOG_INFO);
    assert_string_equal(cfg.user, "");
    assert_int_equal(cfg.drain_timeout_ms, 10000);
    assert_int_equal(cfg.buffer_size, 65536);
    assert_int_equal(cfg.admin_enabled, 1);
    assert_target(&cfg.admin_listen, "127.0.0.1", 9900, 1, "127.0.0.1:9900");
    assert_int_equal(cfg.min_key_bits, 2048);
    assert_int_equal(cfg.min_version, 0x0303);
    assert_string_equal(cfg.ciphers, "");
    assert_int_equal(cfg.handshake_timeout_ms, 10000);
    assert_int_equal(cfg.idle_timeout_ms, 300000);
    assert_int_equal(cfg.num_peer_names, 1);
    assert_string_equal(cfg.peer_names[0], "sip.example-carrier.net");
    assert_int_equal(cfg.num_listeners, 1);
    assert_int_equal(cfg.listeners[0].mode, TG_MODE_TCP);
    assert_int_equal(cfg.listeners[0].line, 7);
    tg_config_cleanup(&cfg);

    // tg_config_init alone gives the same defaults.
    tg_config_init(&cfg);
    assert_int_equal(cfg.max_connections, 10000);
    assert_int_equal(cfg.min_key_bits, 2048);
    assert_int_equal(cfg.num_listeners, 0);
    tg_config_cleanup(&cfg);
}

static void test_workers_auto_and_bounds(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, "[global]\nworkers = auto\nbuffer_size = 4096\n" MINIMAL);
    assert_int_equal(cfg.workers, 0);
    assert_int_equal(cfg.buffer_size, 4096);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, "[global]\nworkers = 256\nbuffer_size = 4194304\n"
                    "max_connections = 1000000\n" MINIMAL);
    assert_int_equal(cfg.workers, 256);
    assert_int_equal(cfg.buffer_size, 4194304);
    assert_int_equal(cfg.max_connections, 1000000);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, TLS_SECTION "min_key_bits = 1024\nmin_version = 1.2\n" INBOUND_SECTION);
    assert_int_equal(cfg.min_key_bits, 1024);
    assert_int_equal(cfg.min_version, 0x0303);
    tg_config_cleanup(&cfg);
}

// The SIP keys of a listener: defaults, values, and bounds.
static void test_sip_listener_keys(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, TLS_SECTION "[outbound out]\nlisten = 127.0.0.1:5062\nmode = sip\n"
                                "connect = 192.0.2.1:5061\n");
    assert_int_equal(cfg.listeners[0].options_interval_s, 60);
    assert_int_equal(cfg.listeners[0].options_failures, 2);
    assert_int_equal(cfg.listeners[0].keepalive_interval_ms, 30000);
    assert_int_equal(cfg.listeners[0].sip_max_message, 65536);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, TLS_SECTION "[outbound out]\nlisten = 127.0.0.1:5062\nmode = sip\n"
                                "connect = 192.0.2.1:5061\noptions_interval_s = 0\n"
                                "options_failures = 5\nkeepalive_interval_ms = 0\n"
                                "sip_max_message = 1048576\n"
                                "[inbound in]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10:5060\n"
                                "keepalive_interval_ms = 500\nsip_max_message = 1024\n");
    assert_int_equal(cfg.listeners[0].options_interval_s, 0);
    assert_int_equal(cfg.listeners[0].options_failures, 5);
    assert_int_equal(cfg.listeners[0].keepalive_interval_ms, 0);
    assert_int_equal(cfg.listeners[0].sip_max_message, 1048576);
    assert_int_equal(cfg.listeners[1].keepalive_interval_ms, 500);
    assert_int_equal(cfg.listeners[1].sip_max_message, 1024);
    tg_config_cleanup(&cfg);
    expect_error(TLS_SECTION "[outbound out]\nlisten = 127.0.0.1:5062\n"
                             "options_interval_s = 3601\n",
                 "t.conf:9: outbound out.options_interval_s: value 3601 out of range 0..3600");
    expect_error(TLS_SECTION "[outbound out]\nlisten = 127.0.0.1:5062\n"
                             "options_failures = 0\n",
                 "t.conf:9: outbound out.options_failures: value 0 out of range 1..100");
    expect_error(TLS_SECTION INBOUND_SECTION "sip_max_message = 1023\n",
                 "t.conf:10: inbound carrier.sip_max_message: value 1023 out of range "
                 "1024..1048576");
    // OPTIONS keepalive is an outbound key.
    expect_error(TLS_SECTION INBOUND_SECTION "options_interval_s = 5\n",
                 "t.conf:10: inbound carrier.options_interval_s: unknown key");
}

// Comments, indentation, CRLF, a UTF-8 BOM and `;` inline comments are accepted.
static void test_comments_and_layout(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, "\xEF\xBB\xBF; BOM, then a comment\r\n"
                    "  # indented comment\r\n"
                    "[global] ; trailing comment\r\n"
                    "    workers = 2 ; inline comment\r\n"
                    "\tlog_level=warn\r\n"
                    "\r\n" MINIMAL);
    assert_int_equal(cfg.workers, 2);
    assert_int_equal(cfg.log_level, TG_LOG_WARN);
    assert_int_equal(cfg.num_listeners, 1);
    tg_config_cleanup(&cfg);
    // A ';' not preceded by a blank is part of the value (here: of the port).
    expect_error(TLS_SECTION "[outbound out]\nlisten = 127.0.0.1:5062\n"
                             "connect = sip.example-carrier.net:5061;x\n",
                 "t.conf:9: outbound out.connect: target 1: bad port '5061;x': expected 1..65535");
}

// ---------------------------------------------------------------------------------------------
// One negative test per kind of bad line.

static void test_unknown_key(void **state) {
    (void)state;
    expect_error(TLS_SECTION "colour = red\n" INBOUND_SECTION, "t.conf:7: tls.colour: unknown key");
    expect_error(MINIMAL "connect = 192.0.2.1:5060\n",
                 "t.conf:10: inbound carrier.connect: unknown key");
}

static void test_bad_integer(void **state) {
    (void)state;
    expect_error("[global]\nmax_connections = 12abc\n" MINIMAL,
                 "t.conf:2: global.max_connections: bad value '12abc': expected an integer "
                 "1..1000000");
    expect_error("[global]\ndrain_timeout_ms = -1\n" MINIMAL,
                 "t.conf:2: global.drain_timeout_ms: bad value '-1': expected an integer "
                 "0..3600000");
    expect_error("[global]\nbuffer_size = 0x1000\n" MINIMAL,
                 "t.conf:2: global.buffer_size: bad value '0x1000': expected an integer "
                 "4096..4194304");
    expect_error("[global]\nworkers = many\n" MINIMAL,
                 "t.conf:2: global.workers: bad value 'many': expected auto or an integer 1..256");
}

static void test_out_of_range(void **state) {
    (void)state;
    expect_error("[global]\nbuffer_size = 4095\n" MINIMAL,
                 "t.conf:2: global.buffer_size: value 4095 out of range 4096..4194304");
    expect_error("[global]\nmax_connections = 99999999999999999999\n" MINIMAL,
                 "t.conf:2: global.max_connections: value 99999999999999999999 out of range "
                 "1..1000000");
    expect_error("[global]\nworkers = 0\n" MINIMAL,
                 "t.conf:2: global.workers: bad value '0': expected auto or an integer 1..256");
    expect_error(TLS_SECTION "handshake_timeout_ms = 99\n" INBOUND_SECTION,
                 "t.conf:7: tls.handshake_timeout_ms: value 99 out of range 100..600000");
    expect_error(TLS_SECTION "idle_timeout_ms = 86400001\n" INBOUND_SECTION,
                 "t.conf:7: tls.idle_timeout_ms: value 86400001 out of range 0..86400000");
}

static void test_min_key_bits(void **state) {
    (void)state;
    expect_error(TLS_SECTION "min_key_bits = 512\n" INBOUND_SECTION,
                 "t.conf:7: tls.min_key_bits: 512 bits is under the floor of 1024 bits");
    expect_error(TLS_SECTION "min_key_bits = 16385\n" INBOUND_SECTION,
                 "t.conf:7: tls.min_key_bits: value 16385 out of range 1024..16384");
}

static void test_bad_min_version(void **state) {
    (void)state;
    expect_error(TLS_SECTION "min_version = 1.1\n" INBOUND_SECTION,
                 "t.conf:7: tls.min_version: TLS 1.1 is refused: expected 1.2 or 1.3");
    expect_error(TLS_SECTION "min_version = 1.0\n" INBOUND_SECTION,
                 "t.conf:7: tls.min_version: TLS 1.0 is refused: expected 1.2 or 1.3");
    expect_error(TLS_SECTION "min_version = TLSv1.3\n" INBOUND_SECTION,
                 "t.conf:7: tls.min_version: bad value 'TLSv1.3': expected 1.2 or 1.3");
}

// Each name of `ciphers` is tried alone, so the unknown one is named with its line.
static void test_bad_ciphers(void **state) {
    (void)state;
    expect_error(TLS_SECTION "ciphers = ECDHE-RSA-AES128-GCM-SHA256:NOPE-CIPHER\n" INBOUND_SECTION,
                 "t.conf:7: tls.ciphers: unknown cipher 'NOPE-CIPHER'");
    expect_error(TLS_SECTION "ciphers = BOGUS\n" INBOUND_SECTION,
                 "t.conf:7: tls.ciphers: unknown cipher 'BOGUS'");
}

static void test_bad_values(void **state) {
    (void)state;
    expect_error("[global]\nlog_level = verbose\n" MINIMAL,
                 "t.conf:2: global.log_level: bad value 'verbose': expected debug, info, warn or "
                 "error");
    expect_error("[global]\nuser = bad user\n" MINIMAL,
                 "t.conf:2: global.user: bad user name 'bad user': 1..63 characters of "
                 "[A-Za-z0-9_.-]");
    expect_error("[admin]\nenabled = true\n" MINIMAL,
                 "t.conf:2: admin.enabled: bad value 'true': expected yes or no");
    expect_error(MINIMAL "mode = http\n",
                 "t.conf:10: inbound carrier.mode: bad value 'http': expected tcp or sip");
    expect_error(TLS_SECTION "[inbound a]\nlisten =\n", "t.conf:8: inbound a.listen: empty value");
    expect_error("[tls]\nfqdn = sbc..example.com\n",
                 "t.conf:2: tls.fqdn: bad DNS name 'sbc..example.com'");
    // '#' starts a comment only at the start of a line.
    expect_error("[global]\nworkers = 4 # four\n" MINIMAL,
                 "t.conf:2: global.workers: bad value '4 # four': expected auto or an integer "
                 "1..256");
}

static void test_bad_address(void **state) {
    (void)state;
    expect_error(TLS_SECTION "[inbound a]\nlisten = 192.0.2.300:5061\n",
                 "t.conf:8: inbound a.listen: bad IPv4 address '192.0.2.300'");
    // listen and forward must be numeric.
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:5061\nforward = pbx.example.com:5060\n",
                 "t.conf:9: inbound a.forward: 'pbx.example.com' is not a numeric address (names "
                 "only in connect)");
    expect_error(TLS_SECTION "[inbound a]\nlisten = [fe80::zz]:5061\n",
                 "t.conf:8: inbound a.listen: bad IPv6 address 'fe80::zz'");
    expect_error("[admin]\nlisten = localhost:9900\n" MINIMAL,
                 "t.conf:2: admin.listen: 'localhost' is not a numeric address (names only in "
                 "connect)");
    expect_error(TLS_SECTION "[outbound b]\nlisten = 127.0.0.1:5062\nconnect = bad_host!:5061\n",
                 "t.conf:9: outbound b.connect: target 1: bad host name 'bad_host!'");
}

static void test_bad_port(void **state) {
    (void)state;
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:65536\n",
                 "t.conf:8: inbound a.listen: port 65536 out of range 1..65535");
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:0\n",
                 "t.conf:8: inbound a.listen: port 0 out of range 1..65535");
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:sip\n",
                 "t.conf:8: inbound a.listen: bad port 'sip': expected 1..65535");
}

static void test_missing_port(void **state) {
    (void)state;
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0\n",
                 "t.conf:8: inbound a.listen: missing port: expected HOST:PORT");
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:\n",
                 "t.conf:8: inbound a.listen: missing port: expected HOST:PORT");
    expect_error(TLS_SECTION "[inbound a]\nlisten = [::1]\n",
                 "t.conf:8: inbound a.listen: missing port: expected [ADDR]:PORT");
}

static void test_ipv6_without_brackets(void **state) {
    (void)state;
    expect_error(TLS_SECTION "[inbound a]\nlisten = ::1:5061\n",
                 "t.conf:8: inbound a.listen: IPv6 address must be in brackets: [ADDR]:PORT");
}

static void test_duplicate_key(void **state) {
    (void)state;
    expect_error(MINIMAL "listen = 0.0.0.0:5062\n",
                 "t.conf:10: inbound carrier.listen: duplicate key (first at line 8)");
    expect_error(TLS_SECTION "cert = /x\n" INBOUND_SECTION,
                 "t.conf:7: tls.cert: duplicate key (first at line 2)");
}

static void test_duplicate_section(void **state) {
    (void)state;
    expect_error(MINIMAL "[tls]\n", "t.conf:10: [tls]: duplicate section (first at line 1)");
    expect_error("[global]\n" MINIMAL "[global]\n",
                 "t.conf:11: [global]: duplicate section (first at line 1)");
    // Listener names are unique across inbound and outbound.
    expect_error(MINIMAL "[outbound carrier]\n",
                 "t.conf:10: [outbound carrier]: duplicate listener name (first at line 7)");
}

static void test_unknown_section(void **state) {
    (void)state;
    expect_error(MINIMAL "[logging]\n", "t.conf:10: [logging]: unknown section");
    expect_error(MINIMAL "[TLS]\n", "t.conf:10: [TLS]: unknown section");
    expect_error(MINIMAL "[tls extra]\n", "t.conf:10: [tls extra]: this section takes no name");
    expect_error(MINIMAL "[inbound]\n",
                 "t.conf:10: [inbound]: missing listener name: [inbound NAME]");
    expect_error(MINIMAL "[inbound x\n", "t.conf:10: syntax: section header without ']'");
    expect_error(MINIMAL "[inbound x] y\n",
                 "t.conf:10: [inbound x]: text after the section header");
}

static void test_missing_required_key(void **state) {
    (void)state;
    // In the section: the line of its header.
    expect_error("\n[tls]\ncert = /c\nkey = /k\nca = /ca\nfqdn = sbc.example.com\n" INBOUND_SECTION,
                 "t.conf:2: tls.peer_names: required key missing");
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:5061\n[global]\n",
                 "t.conf:7: inbound a.forward: required key missing");
    expect_error(TLS_SECTION "[outbound b]\nlisten = 127.0.0.1:5062\n",
                 "t.conf:7: outbound b.connect: required key missing");
    // The whole section absent: line 0.
    expect_error(INBOUND_SECTION, "t.conf:0: tls.cert: required key missing");
    expect_error("", "t.conf:0: tls.cert: required key missing");
}

static void test_no_listeners(void **state) {
    (void)state;
    expect_error(TLS_SECTION "[global]\nworkers = 1\n",
                 "t.conf:0: listeners: at least one [inbound NAME] or [outbound NAME] section "
                 "required");
}

static void test_line_without_equals(void **state) {
    (void)state;
    expect_error(TLS_SECTION "this is not a key\n" INBOUND_SECTION,
                 "t.conf:7: syntax: expected 'key = value' or a [section] header");
    // inih would take `name: value`; the language does not.
    expect_error(TLS_SECTION "min_version: 1.3\n" INBOUND_SECTION,
                 "t.conf:7: syntax: expected 'key = value' or a [section] header");
    expect_error(TLS_SECTION "= 1.3\n" INBOUND_SECTION, "t.conf:7: syntax: missing key before '='");
    expect_error(TLS_SECTION "min:version = 1.3\n" INBOUND_SECTION,
                 "t.conf:7: syntax: bad key 'min:version'");
}

static void test_key_outside_section(void **state) {
    (void)state;
    expect_error("; header comment\nworkers = 4\n" MINIMAL,
                 "t.conf:2: workers: key outside any section");
}

static void test_too_many_targets(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, TLS_SECTION "[outbound b]\nlisten = 127.0.0.1:5062\n"
                                "connect = a:1,b:2,c:3,d:4,e:5,f:6,g:7,[::1]:8\n");
    assert_int_equal(cfg.listeners[0].num_targets, TG_MAX_TARGETS);
    assert_target(&cfg.listeners[0].targets[7], "::1", 8, 1, "[::1]:8");
    tg_config_cleanup(&cfg);
    expect_error(TLS_SECTION "[outbound b]\nlisten = 127.0.0.1:5062\n"
                             "connect = a:1,b:2,c:3,d:4,e:5,f:6,g:7,h:8,i:9\n",
                 "t.conf:9: outbound b.connect: more than 8 targets");
    expect_error(TLS_SECTION "[outbound b]\nlisten = 127.0.0.1:5062\nconnect = a:1,,b:2\n",
                 "t.conf:9: outbound b.connect: target 2 is empty");
}

// Names bound to targets: `connect = HOST:PORT=NAME`.
#define OUTBOUND_B TLS_SECTION "[outbound b]\nlisten = 127.0.0.1:5062\n"

static void test_connect_names(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, OUTBOUND_B "connect = 192.0.2.7:5061=sip.carrier.example, "
                               "carrier-lb.example.net:5061=sip.carrier.example, "
                               "sip.example-carrier.net:5061,198.51.100.7:5061, "
                               "[::1]:5061=name.v6.example, [2001:db8::5]:5061 = Peer_3\n");
    const struct tg_listener_conf *l = &cfg.listeners[0];
    assert_int_equal(l->num_targets, 6);
    // An address with a name: the name is what the certificate must carry (and the SNI).
    assert_target(&l->targets[0], "192.0.2.7", 5061, 1, "192.0.2.7:5061");
    assert_string_equal(l->targets[0].expect_name, "sip.carrier.example");
    // A host name with another name: the explicit one wins.
    assert_target(&l->targets[1], "carrier-lb.example.net", 5061, 0, "carrier-lb.example.net:5061");
    assert_string_equal(l->targets[1].expect_name, "sip.carrier.example");
    // A host name alone binds to itself.
    assert_string_equal(l->targets[2].host, "sip.example-carrier.net");
    assert_string_equal(l->targets[2].expect_name, "sip.example-carrier.net");
    // An address alone: peer_names (empty).
    assert_target(&l->targets[3], "198.51.100.7", 5061, 1, "198.51.100.7:5061");
    assert_string_equal(l->targets[3].expect_name, "");
    assert_target(&l->targets[4], "::1", 5061, 1, "[::1]:5061");
    assert_string_equal(l->targets[4].expect_name, "name.v6.example");
    // Blanks around '=' go; the name keeps its case (matched exactly, as peer_names).
    assert_target(&l->targets[5], "2001:db8::5", 5061, 1, "[2001:db8::5]:5061");
    assert_string_equal(l->targets[5].expect_name, "Peer_3");
    tg_config_cleanup(&cfg);

    // A name may use every character a peer name may, up to TG_HOST_MAX - 1 of them.
    expect_ok(&cfg, OUTBOUND_B "connect = [::1]:5061=*.wild:card/x=y\n");
    assert_string_equal(cfg.listeners[0].targets[0].expect_name, "*.wild:card/x=y");
    tg_config_cleanup(&cfg);

    // forward (inbound) and listen never carry a name.
    expect_ok(&cfg, MINIMAL);
    assert_string_equal(cfg.listeners[0].targets[0].expect_name, "");
    tg_config_cleanup(&cfg);
}

static void test_connect_names_bad(void **state) {
    (void)state;
    expect_error(OUTBOUND_B "connect = 192.0.2.7:5061=\n",
                 "t.conf:9: outbound b.connect: target 1: missing name after '='");
    expect_error(OUTBOUND_B "connect = 192.0.2.7:5061 = \t, 192.0.2.8:5061\n",
                 "t.conf:9: outbound b.connect: target 1: missing name after '='");
    expect_error(OUTBOUND_B "connect = [::1]:5061=\n",
                 "t.conf:9: outbound b.connect: target 1: missing name after '='");
    expect_error(OUTBOUND_B "connect = 192.0.2.7:5061, 192.0.2.8:5061=sip carrier.example\n",
                 "t.conf:9: outbound b.connect: target 2: 'sip carrier.example' after '=' is "
                 "not a peer name");
    expect_error(OUTBOUND_B "connect = 192.0.2.7:5061=sip.\xc3\xa9xample\n",
                 "t.conf:9: outbound b.connect: target 1: 'sip.??xample' after '=' is not a "
                 "peer name");
    expect_error(OUTBOUND_B "connect = 192.0.2.7:5061=sip\x7f\n",
                 "t.conf:9: outbound b.connect: target 1: 'sip?' after '=' is not a peer name");
    expect_error(OUTBOUND_B "connect = =sip.carrier.example\n",
                 "t.conf:9: outbound b.connect: target 1: missing HOST:PORT before '='");
    // The address part is checked as before.
    expect_error(OUTBOUND_B "connect = 192.0.2.7:50a=sip.carrier.example\n",
                 "t.conf:9: outbound b.connect: target 1: bad port '50a': expected 1..65535");
    expect_error(OUTBOUND_B "connect = :5061\n",
                 "t.conf:9: outbound b.connect: target 1: missing host: expected HOST:PORT");
    expect_error(OUTBOUND_B "connect = sip.example.net:\n",
                 "t.conf:9: outbound b.connect: target 1: missing port: expected HOST:PORT");
    expect_error(OUTBOUND_B "connect = [::1]x5061=name\n",
                 "t.conf:9: outbound b.connect: target 1: expected ':' after ']'");
    expect_error(OUTBOUND_B "connect = ::1:5061=name\n",
                 "t.conf:9: outbound b.connect: target 1: IPv6 address must be in brackets: "
                 "[ADDR]:PORT");
    expect_error(OUTBOUND_B "connect = [::zz]:5061=name\n",
                 "t.conf:9: outbound b.connect: target 1: bad IPv6 address '::zz'");
    expect_error(OUTBOUND_B "connect = bad_host!:5061=name\n",
                 "t.conf:9: outbound b.connect: target 1: bad host name 'bad_host!'");
    // A name is for connect targets only.
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10:5060=x\n",
                 "t.conf:9: inbound a.forward: bad port '5060=x': expected 1..65535");
}

// `connect` without a port: an address takes 5061, a name asks SRV (RFC 3263 4.2) and falls
// back to 5061; every other address key still needs its port.
static void test_connect_without_port(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, OUTBOUND_B "connect = 192.0.2.7=sip.carrier.example, [::1], "
                               "sip.pstnhub.microsoft.com, sip2.example.net=peer.example\n");
    const struct tg_listener_conf *l = &cfg.listeners[0];
    assert_int_equal(l->num_targets, 4);
    assert_int_equal(l->targets[0].port, 5061);
    assert_int_equal(l->targets[0].resolved, 1);
    assert_int_equal(l->targets[0].srv, 0);
    assert_string_equal(l->targets[0].expect_name, "sip.carrier.example");
    assert_int_equal(l->targets[1].port, 5061);
    assert_int_equal(l->targets[1].resolved, 1);
    assert_int_equal(l->targets[1].srv, 0);
    assert_string_equal(l->targets[2].host, "sip.pstnhub.microsoft.com");
    assert_int_equal(l->targets[2].srv, 1);
    assert_int_equal(l->targets[2].resolved, 0);
    // The certificate name stays the configured name, not an SRV target (RFC 5922 4.1).
    assert_string_equal(l->targets[2].expect_name, "sip.pstnhub.microsoft.com");
    assert_int_equal(l->targets[3].srv, 1);
    assert_string_equal(l->targets[3].expect_name, "peer.example");
    tg_config_cleanup(&cfg);
    // With a port, no SRV.
    expect_ok(&cfg, OUTBOUND_B "connect = sip.example.net:5061\n");
    assert_int_equal(cfg.listeners[0].targets[0].srv, 0);
    tg_config_cleanup(&cfg);
    // Only connect may omit it.
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0\nforward = 192.0.2.10:5060\n",
                 "t.conf:8: inbound a.listen: missing port: expected HOST:PORT");
    expect_error(TLS_SECTION "[inbound a]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10\n",
                 "t.conf:9: inbound a.forward: missing port: expected HOST:PORT");
}

// `[global] resolvers`: numeric IPv4 ADDR:PORT, at most three.
static void test_resolvers(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, "[global]\nresolvers = 127.0.0.1:5353, 192.0.2.53:53\n" OUTBOUND_B
                    "connect = sip.example.net:5061\n");
    assert_int_equal(cfg.num_resolvers, 2);
    assert_int_equal(cfg.resolvers[0].port, 5353);
    assert_int_equal(cfg.resolvers[1].port, 53);
    tg_config_cleanup(&cfg);
    expect_error("[global]\nresolvers = 127.0.0.1\n",
                 "t.conf:2: global.resolvers: item 1 '127.0.0.1': missing port: expected "
                 "HOST:PORT");
    expect_error("[global]\nresolvers = [::1]:53\n",
                 "t.conf:2: global.resolvers: item 1 '[::1]:53': expected a numeric IPv4 "
                 "ADDR:PORT");
    expect_error("[global]\nresolvers = dns.example:53\n",
                 "t.conf:2: global.resolvers: item 1 'dns.example:53': expected a numeric IPv4 "
                 "ADDR:PORT");
    expect_error("[global]\nresolvers = 127.0.0.1:53,,127.0.0.2:53\n",
                 "t.conf:2: global.resolvers: item 2 is empty");
    expect_error("[global]\nresolvers = 1.1.1.1:53,1.1.1.2:53,1.1.1.3:53,1.1.1.4:53\n",
                 "t.conf:2: global.resolvers: more than 3 nameservers");
}

static void test_overlong_line(void **state) {
    (void)state;
    // 199 characters fit (Debian's inih: INI_MAX_LINE 200, with the NUL); 200 do not.
    char text[1024];
    char path[256];
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    snprintf(text, sizeof(text), "[tls]\ncert = %.*s\n", 199 - 7, path);
    struct tg_config cfg;
    char err[512];
    assert_int_equal(parse(&cfg, text, err, sizeof(err)), 0);
    assert_string_equal(err, "t.conf:1: tls.key: required key missing");
    tg_config_cleanup(&cfg);
    snprintf(text, sizeof(text), "[tls]\ncert = %.*s\nkey = /k\n", 200 - 7, path);
    expect_error(text, "t.conf:2: syntax: line longer than 199 characters");
    // Also for comments; the over-long line is never split into two.
    char comment[601];
    memset(comment, 'x', 600);
    comment[600] = '\0';
    snprintf(text, sizeof(text), MINIMAL "; %s\n[global]\n", comment);
    expect_error(text, "t.conf:10: syntax: line longer than 199 characters");
}

static void test_nul_byte(void **state) {
    (void)state;
    static const char text[] = TLS_SECTION "fqdn\0 = x\n" INBOUND_SECTION;
    expect_error_bytes(text, sizeof(text) - 1, "t.conf:7: syntax: NUL byte in line");
    static const char tail[] = MINIMAL "\0";
    expect_error_bytes(tail, sizeof(tail) - 1, "t.conf:10: syntax: NUL byte in line");
}

static void test_empty_peer_name(void **state) {
    (void)state;
    expect_error("[tls]\npeer_names = a.example.com,,b.example.com\n",
                 "t.conf:2: tls.peer_names: item 2 is empty");
    expect_error("[tls]\npeer_names = a.example.com, \n",
                 "t.conf:2: tls.peer_names: item 2 is empty");
    expect_error("[tls]\npeer_names = a b\n",
                 "t.conf:2: tls.peer_names: item 1 'a b' is not a peer name");
}

static void test_bad_listener_name(void **state) {
    (void)state;
    expect_error(MINIMAL "[inbound pbx/1]\n",
                 "t.conf:10: [inbound pbx/1]: bad listener name: 1..63 characters of "
                 "[A-Za-z0-9_.-]");
    expect_error(MINIMAL "[outbound a b]\n",
                 "t.conf:10: [outbound a b]: bad listener name: 1..63 characters of "
                 "[A-Za-z0-9_.-]");
    char text[512];
    char name[65];
    memset(name, 'n', 64);
    name[64] = '\0';
    snprintf(text, sizeof(text), MINIMAL "[inbound %s]\n", name);
    char want[512];
    snprintf(want, sizeof(want),
             "t.conf:10: [inbound %.55s...: bad listener name: 1..63 characters of "
             "[A-Za-z0-9_.-]",
             name);
    expect_error(text, want);
    // 63 characters are fine.
    name[63] = '\0';
    snprintf(text, sizeof(text), MINIMAL "[outbound %s]\nlisten = 127.0.0.1:1\nconnect = h:1\n",
             name);
    struct tg_config cfg;
    expect_ok(&cfg, text);
    assert_string_equal(cfg.listeners[1].name, name);
    tg_config_cleanup(&cfg);
}

// Every prefix of a good file, and some noise, parses or fails without crashing or leaking.
static void test_prefixes_and_noise(void **state) {
    (void)state;
    char err[256];
    struct tg_config cfg;
    for (size_t n = 0; n <= sizeof(k_full) - 1; n++) {
        parse_bytes(&cfg, k_full, n, err, sizeof(err));
        tg_config_cleanup(&cfg);
    }
    uint32_t x = 12345;
    char noise[512];
    for (int round = 0; round < 2000; round++) {
        size_t len = (size_t)(round % (int)sizeof(noise));
        memcpy(noise, k_full, len);
        for (int k = 0; k < 4 && len > 0; k++) {
            x = x * 1103515245u + 12345u;
            noise[(x >> 8) % len] = (char)(x >> 24);
        }
        parse_bytes(&cfg, noise, len, err, sizeof(err));
        tg_config_cleanup(&cfg);
    }
    // A too-small or absent error buffer is fine.
    assert_int_equal(parse(&cfg, "[x]\n", err, 5), 0);
    assert_string_equal(err, "t.co");
    assert_int_equal(parse(&cfg, "[x]\n", NULL, 0), 0);
    tg_config_cleanup(&cfg);
}

// ---------------------------------------------------------------------------------------------
// tg_parse_hostport and tg_target_format.

static void expect_hostport_error(const char *text, const char *want) {
    struct tg_target t;
    char err[256];
    assert_int_equal(tg_parse_hostport(&t, text, err, sizeof(err)), 0);
    assert_string_equal(err, want);
}

// Relative certificate paths are taken from the configuration file's directory; absolute
// ones are kept as written.
static void test_relative_paths(void **state) {
    (void)state;
    static const char text[] = "[tls]\n"
                               "cert = pki/sbc.crt\n"
                               "key = /abs/sbc.key\n"
                               "ca = ../ca.pem\n"
                               "fqdn = sbc.example.com\n"
                               "peer_names = sip.example-carrier.net\n" INBOUND_SECTION;
    struct tg_config cfg;
    char err[256];
    assert_int_equal(
        tg_config_parse(&cfg, "/etc/tlsgate/t.conf", text, strlen(text), err, sizeof(err)), 1);
    assert_string_equal(cfg.cert, "/etc/tlsgate/pki/sbc.crt");
    assert_string_equal(cfg.key, "/abs/sbc.key");
    assert_string_equal(cfg.ca, "/etc/tlsgate/../ca.pem");
    tg_config_cleanup(&cfg);
    // A file named without a directory keeps the path relative to the working directory.
    assert_int_equal(tg_config_parse(&cfg, "t.conf", text, strlen(text), err, sizeof(err)), 1);
    assert_string_equal(cfg.cert, "pki/sbc.crt");
    tg_config_cleanup(&cfg);
}

static void test_parse_hostport(void **state) {
    (void)state;
    struct tg_target t;
    char err[256];
    char buf[300];
    assert_int_equal(tg_parse_hostport(&t, "192.0.2.1:5061", err, sizeof(err)), 1);
    assert_target(&t, "192.0.2.1", 5061, 1, "192.0.2.1:5061");
    assert_int_equal(t.addr.ss_family, AF_INET);
    assert_int_equal(tg_parse_hostport(&t, "[2001:DB8::1]:1", err, sizeof(err)), 1);
    assert_target(&t, "2001:DB8::1", 1, 1, "[2001:db8::1]:1");
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&t.addr)->sin6_port), 1);
    assert_int_equal(tg_parse_hostport(&t, "[::ffff:192.0.2.1]:65535", err, sizeof(err)), 1);
    assert_int_equal(t.port, 65535);
    assert_int_equal(tg_parse_hostport(&t, "sip.example-carrier.net:5061", err, sizeof(err)), 1);
    assert_target(&t, "sip.example-carrier.net", 5061, 0, "sip.example-carrier.net:5061");
    assert_int_equal(tg_parse_hostport(&t, "localhost:05060", err, sizeof(err)), 1);
    assert_int_equal(t.port, 5060);
    tg_target_format(&t, buf, 4);
    assert_string_equal(buf, "loc");

    expect_hostport_error("192.0.2.1", "missing port: expected HOST:PORT");
    expect_hostport_error("192.0.2.1:", "missing port: expected HOST:PORT");
    expect_hostport_error(":5061", "missing host: expected HOST:PORT");
    expect_hostport_error("[]:5061", "missing host: expected HOST:PORT");
    expect_hostport_error("192.0.2.1:0", "port 0 out of range 1..65535");
    expect_hostport_error("192.0.2.1:65536", "port 65536 out of range 1..65535");
    expect_hostport_error("192.0.2.1:+5", "bad port '+5': expected 1..65535");
    expect_hostport_error("192.0.2.1:5 ", "bad port '5 ': expected 1..65535");
    expect_hostport_error("2001:db8::1:5061", "IPv6 address must be in brackets: [ADDR]:PORT");
    expect_hostport_error("[2001:db8::1:5061", "missing ']' after IPv6 address");
    expect_hostport_error("[2001:db8::1]5061", "expected ':' after ']'");
    expect_hostport_error("[192.0.2.1]:5061", "bad IPv6 address '192.0.2.1'");
    expect_hostport_error("[example.com]:5061", "bad IPv6 address 'example.com'");
    expect_hostport_error("1.2.3:5061", "bad IPv4 address '1.2.3'");
    expect_hostport_error("a..b:5061", "bad host name 'a..b'");
    expect_hostport_error("-carrier.example.net:5061", "bad host name '-carrier.example.net'");
    expect_hostport_error("carrier-.example.net:5061", "bad host name 'carrier-.example.net'");
}

static void test_target_format_unresolved_v6_text(void **state) {
    (void)state;
    struct tg_target t;
    memset(&t, 0, sizeof(t));
    strcpy(t.host, "2001:db8::7");
    t.port = 5061;
    char buf[64];
    tg_target_format(&t, buf, sizeof(buf));
    assert_string_equal(buf, "[2001:db8::7]:5061");
}

// ---------------------------------------------------------------------------------------------
// Files and resolution.

static void test_load_file(void **state) {
    (void)state;
    const char *tmp = getenv("TMPDIR");
    char dir[4096];
    snprintf(dir, sizeof(dir), "%s/tg_config_XXXXXX", tmp != NULL && tmp[0] != '\0' ? tmp : "/tmp");
    assert_non_null(mkdtemp(dir));
    char path[4200];
    snprintf(path, sizeof(path), "%s/tlsgate.conf", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(k_full, 1, sizeof(k_full) - 1, f), sizeof(k_full) - 1);
    assert_int_equal(fclose(f), 0);

    struct tg_config cfg;
    char err[4400];
    if (!tg_config_load(&cfg, path, err, sizeof(err)))
        fail_msg("load failed: %s", err);
    assert_string_equal(cfg.path, path);
    assert_int_equal(cfg.num_listeners, 2);
    assert_int_equal(cfg.num_peer_names, 3);
    tg_config_cleanup(&cfg);

    // A bad file names itself in the message.
    char bad_path[4200];
    snprintf(bad_path, sizeof(bad_path), "%s/bad.conf", dir);
    f = fopen(bad_path, "w");
    assert_non_null(f);
    fputs("[tls]\nkey = /k\ncolour = red\n", f);
    assert_int_equal(fclose(f), 0);
    char want[4400];
    snprintf(want, sizeof(want), "%s:3: tls.colour: unknown key", bad_path);
    assert_int_equal(tg_config_load(&cfg, bad_path, err, sizeof(err)), 0);
    assert_string_equal(err, want);
    tg_config_cleanup(&cfg);

    assert_int_equal(unlink(path), 0);
    assert_int_equal(unlink(bad_path), 0);

    // The missing file: its name and strerror.
    assert_int_equal(tg_config_load(&cfg, path, err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "%s:0: file: cannot open: %s", path, strerror(ENOENT));
    assert_string_equal(err, want);
    tg_config_cleanup(&cfg);

    // A directory cannot be read.
    assert_int_equal(tg_config_load(&cfg, dir, err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "%s:0: file: cannot read: %s", dir, strerror(EISDIR));
    assert_string_equal(err, want);
    tg_config_cleanup(&cfg);

    // A file of exactly 1 MiB loads (comment lines pad it); one byte more is refused.
    f = fopen(path, "w");
    assert_non_null(f);
    fputs(MINIMAL, f);
    size_t left = 1024 * 1024 - strlen(MINIMAL);
    char pad[64];
    memset(pad, 'x', sizeof(pad));
    pad[0] = ';';
    pad[63] = '\n';
    for (; left > sizeof(pad); left -= sizeof(pad))
        assert_int_equal(fwrite(pad, 1, sizeof(pad), f), sizeof(pad));
    pad[left - 1] = '\n';
    assert_int_equal(fwrite(pad, 1, left, f), left);
    assert_int_equal(fclose(f), 0);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 1024 * 1024);
    assert_int_equal(tg_config_load(&cfg, path, err, sizeof(err)), 1);
    tg_config_cleanup(&cfg);
    f = fopen(path, "a");
    assert_non_null(f);
    fputs("\n", f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(tg_config_load(&cfg, path, err, sizeof(err)), 0);
    snprintf(want, sizeof(want), "%s:0: file: cannot read: file larger than 1 MiB", path);
    assert_string_equal(err, want);
    tg_config_cleanup(&cfg);
    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir), 0);
}

// conf/example.conf, found from this source file's path, loads as documented.
static void test_example_conf(void **state) {
    (void)state;
    char path[4096];
    const char *slash = strrchr(__FILE__, '/');
    if (__FILE__[0] != '/' || slash == NULL) {
        print_message("skipping test_example_conf: __FILE__ is not an absolute path\n");
        skip();
    }
    snprintf(path, sizeof(path), "%.*s/../../conf/example.conf", (int)(slash - __FILE__), __FILE__);
    struct tg_config cfg;
    char err[4400];
    if (!tg_config_load(&cfg, path, err, sizeof(err)))
        fail_msg("%s", err);
    assert_int_equal(cfg.workers, 0);
    assert_string_equal(cfg.user, "tlsgate");
    assert_string_equal(cfg.fqdn, "sbc.example.com");
    assert_int_equal(cfg.num_peer_names, 2);
    assert_string_equal(cfg.peer_names[1], "sip2.example-carrier.net");
    assert_string_equal(cfg.ciphers, "");
    assert_int_equal(cfg.num_listeners, 2);
    const struct tg_listener_conf *in = &cfg.listeners[0], *out = &cfg.listeners[1];
    assert_int_equal(in->direction, TG_INBOUND);
    assert_target(&in->listen, "0.0.0.0", 5061, 1, "0.0.0.0:5061");
    assert_target(&in->targets[0], "192.0.2.10", 5060, 1, "192.0.2.10:5060");
    assert_int_equal(out->direction, TG_OUTBOUND);
    assert_target(&out->listen, "127.0.0.1", 5062, 1, "127.0.0.1:5062");
    assert_int_equal(out->num_targets, 2);
    assert_target(&out->targets[0], "sip.example-carrier.net", 5061, 0,
                  "sip.example-carrier.net:5061");
    assert_target(&out->targets[1], "sip2.example-carrier.net", 5061, 0,
                  "sip2.example-carrier.net:5061");
    tg_config_cleanup(&cfg);
}

static void test_resolve(void **state) {
    (void)state;
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo("localhost", NULL, &hints, &res) != 0) {
        print_message("skipping test_resolve: this machine cannot resolve localhost\n");
        skip();
    }
    freeaddrinfo(res);

    struct tg_config cfg;
    expect_ok(&cfg, TLS_SECTION "[outbound b]\nlisten = 127.0.0.1:5062\n"
                                "connect = localhost:5061,192.0.2.1:5062\n");
    char err[512] = "";
    if (!tg_config_resolve(&cfg, err, sizeof(err)))
        fail_msg("resolve failed: %s", err);
    const struct tg_target *t = &cfg.listeners[0].targets[0];
    assert_int_equal(t->resolved, 1);
    char buf[64];
    tg_target_format(t, buf, sizeof(buf));
    if (strcmp(buf, "127.0.0.1:5061") != 0 && strcmp(buf, "[::1]:5061") != 0)
        fail_msg("localhost resolved to %s", buf);
    assert_string_equal(cfg.listeners[0].targets[0].host, "localhost");
    tg_config_cleanup(&cfg);
}

// ---------------------------------------------------------------------------------------------
// [admin]: allow-list, names, token file, and the rule for a listen address off loopback.

static void test_admin_keys(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, MINIMAL);
    assert_int_equal(cfg.admin_enabled, 1);
    assert_target(&cfg.admin_listen, "127.0.0.1", 9900, 1, "127.0.0.1:9900");
    assert_int_equal(cfg.num_admin_allow, 0);
    assert_int_equal(cfg.num_admin_hosts, 0);
    assert_string_equal(cfg.admin_token_file, "");
    tg_config_cleanup(&cfg);

    static const char text[] = "[admin]\n"
                               "listen = 0.0.0.0:9901\n"
                               "allow = 10.0.0.0/8, 192.0.2.7/32 ,::1/128,\t2001:db8::/32\n"
                               "hosts = admin.example.net, 192.0.2.9,2001:db8::9\n"
                               "token_file = secrets/admin.token\n" MINIMAL;
    char err[256];
    assert_int_equal(
        tg_config_parse(&cfg, "/etc/tlsgate/t.conf", text, strlen(text), err, sizeof(err)), 1);
    assert_int_equal(cfg.num_admin_allow, 4);
    assert_int_equal(cfg.admin_allow[0].family, AF_INET);
    assert_int_equal(cfg.admin_allow[0].prefix, 8);
    assert_int_equal(cfg.admin_allow[1].prefix, 32);
    assert_int_equal(cfg.admin_allow[2].family, AF_INET6);
    assert_int_equal(cfg.admin_allow[2].prefix, 128);
    assert_int_equal(cfg.admin_allow[3].prefix, 32);
    assert_int_equal(cfg.num_admin_hosts, 3);
    assert_string_equal(cfg.admin_hosts[0], "admin.example.net");
    assert_string_equal(cfg.admin_hosts[1], "192.0.2.9");
    assert_string_equal(cfg.admin_hosts[2], "2001:db8::9");
    // Relative to the configuration file, like the certificate paths; the line is kept.
    assert_string_equal(cfg.admin_token_file, "/etc/tlsgate/secrets/admin.token");
    assert_int_equal(cfg.admin_token_file_line, 5);
    tg_config_cleanup(&cfg);

    // Loopback takes an allow-list and a token too (both optional there).
    expect_ok(&cfg, "[admin]\nallow = 127.0.0.1/32\ntoken_file = /t\n" MINIMAL);
    assert_int_equal(cfg.num_admin_allow, 1);
    assert_string_equal(cfg.admin_token_file, "/t");
    tg_config_cleanup(&cfg);
}

static void test_admin_bad_values(void **state) {
    (void)state;
    expect_error("[admin]\nallow = 10.0.0.1/8\n" MINIMAL,
                 "t.conf:2: admin.allow: item 1: '10.0.0.1/8' has host bits set (the network is "
                 "10.0.0.0/8)");
    expect_error("[admin]\nallow = 10.0.0.0/8, 10.0.0.0/33\n" MINIMAL,
                 "t.conf:2: admin.allow: item 2: '10.0.0.0/33': bad prefix length: expected "
                 "0..32");
    expect_error("[admin]\nallow = 10.0.0.0/8,,192.0.2.0/24\n" MINIMAL,
                 "t.conf:2: admin.allow: item 2 is empty");
    expect_error("[admin]\nallow = 10.0.0.0/8,\n" MINIMAL,
                 "t.conf:2: admin.allow: item 2 is empty");
    expect_error("[admin]\nallow = office\n" MINIMAL,
                 "t.conf:2: admin.allow: item 1: 'office' is not ADDR/PREFIX with a numeric "
                 "address");
    expect_error("[admin]\nallow = [::1]/128\n" MINIMAL,
                 "t.conf:2: admin.allow: item 1: '[::1]/128': write an IPv6 network without "
                 "brackets");
    char many[1024] = "[admin]\nallow = ";
    for (int i = 0; i <= TG_ADMIN_MAX_ALLOW; i++) {
        char item[32];
        snprintf(item, sizeof(item), "%s%x::", i ? "," : "", i + 1); // short: lines end at 199
        strcat(many, item);
    }
    strcat(many, "\n" MINIMAL);
    expect_error(many, "t.conf:2: admin.allow: more than 32 networks");
    expect_error("[admin]\nhosts = admin.example.net, bad_name!\n" MINIMAL,
                 "t.conf:2: admin.hosts: item 2 'bad_name!' is neither a DNS name nor a numeric "
                 "address");
    expect_error("[admin]\nhosts = [::1]\n" MINIMAL,
                 "t.conf:2: admin.hosts: item 1 '[::1]' is neither a DNS name nor a numeric "
                 "address");
    expect_error("[admin]\nhosts = a.example, ,b.example\n" MINIMAL,
                 "t.conf:2: admin.hosts: item 2 is empty");
    expect_error("[admin]\nhosts = 10.0.0.0/8\n" MINIMAL,
                 "t.conf:2: admin.hosts: item 1 '10.0.0.0/8' is neither a DNS name nor a numeric "
                 "address");
    char hosts[1024] = "[admin]\nhosts = ";
    for (int i = 0; i <= TG_ADMIN_MAX_HOSTS; i++) {
        char item[32];
        snprintf(item, sizeof(item), "%sh%d", i ? "," : "", i);
        strcat(hosts, item);
    }
    strcat(hosts, "\n" MINIMAL);
    expect_error(hosts, "t.conf:2: admin.hosts: more than 16 names");
    expect_error("[admin]\ntoken_file = /x\ntoken_file = /y\n" MINIMAL,
                 "t.conf:3: admin.token_file: duplicate key (first at line 2)");
    expect_error("[admin]\ntoken_file = /x\x01y\n" MINIMAL,
                 "t.conf:2: admin.token_file: control character in value");
}

static void test_admin_off_loopback(void **state) {
    (void)state;
    // Without both an allow-list and a token, refused at the listen line.
    expect_error("[admin]\nenabled = yes\nlisten = 0.0.0.0:9900\n" MINIMAL,
                 "t.conf:3: admin.listen: 0.0.0.0:9900 is not a loopback address: it needs "
                 "admin.allow (source networks) and admin.token_file (bearer token)");
    expect_error("[admin]\nlisten = 192.0.2.1:9900\nallow = 192.0.2.0/24\n" MINIMAL,
                 "t.conf:2: admin.listen: 192.0.2.1:9900 is not a loopback address: it needs "
                 "admin.token_file (bearer token)");
    expect_error("[admin]\ntoken_file = /t\nlisten = [::]:9900\n" MINIMAL,
                 "t.conf:3: admin.listen: [::]:9900 is not a loopback address: it needs "
                 "admin.allow (source networks)");
    // Also when [admin] is the last section (checked at the end of the file).
    expect_error(MINIMAL "[admin]\nlisten = 10.1.2.3:9900\n",
                 "t.conf:11: admin.listen: 10.1.2.3:9900 is not a loopback address: it needs "
                 "admin.allow (source networks) and admin.token_file (bearer token)");
    // With both, or disabled, or on loopback: fine.
    struct tg_config cfg;
    expect_ok(&cfg,
              "[admin]\nlisten = 0.0.0.0:9900\nallow = 10.0.0.0/8\ntoken_file = /t\n" MINIMAL);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, "[admin]\nlisten = 0.0.0.0:9900\nenabled = no\n" MINIMAL);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, "[admin]\nlisten = 127.0.0.2:9900\n" MINIMAL);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, "[admin]\nlisten = [::1]:9900\n" MINIMAL);
    tg_config_cleanup(&cfg);
}

// ---------------------------------------------------------------------------------------------
// One owner per listen address.

static void test_listen_owners(void **state) {
    (void)state;
    // The same address twice, reported at the second listen line, naming the first.
    expect_error(MINIMAL "[inbound b]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10:5060\n",
                 "t.conf:11: inbound b.listen: 0.0.0.0:5061 is already the listen address of "
                 "[inbound carrier] (line 8)");
    // A specific address under a wildcard of the same family and port, across directions.
    expect_error(MINIMAL "[outbound b]\nlisten = 127.0.0.1:5061\nconnect = 192.0.2.1:5061\n",
                 "t.conf:11: outbound b.listen: 127.0.0.1:5061 overlaps 0.0.0.0:5061, the listen "
                 "address of [inbound carrier] (line 8)");
    expect_error(TLS_SECTION "[inbound a]\nforward = 192.0.2.10:5060\nlisten = 127.0.0.1:5070\n"
                             "[inbound b]\nlisten = 0.0.0.0:5070\nforward = 192.0.2.10:5060\n",
                 "t.conf:11: inbound b.listen: 0.0.0.0:5070 overlaps 127.0.0.1:5070, the listen "
                 "address of [inbound a] (line 9)");
    // IPv6: the same address written two ways, and the IPv6 wildcard.
    expect_error(TLS_SECTION "[inbound a]\nlisten = [::1]:5061\nforward = 192.0.2.10:5060\n"
                             "[inbound b]\nlisten = [0:0::1]:5061\nforward = 192.0.2.10:5060\n",
                 "t.conf:11: inbound b.listen: [::1]:5061 is already the listen address of "
                 "[inbound a] (line 8)");
    expect_error(TLS_SECTION "[inbound a]\nlisten = [2001:db8::1]:5061\nforward = 192.0.2.10:5060\n"
                             "[inbound b]\nlisten = [::]:5061\nforward = 192.0.2.10:5060\n",
                 "t.conf:11: inbound b.listen: [::]:5061 overlaps [2001:db8::1]:5061, the listen "
                 "address of [inbound a] (line 8)");

    // Not conflicts: other port, other specific address, other family (IPv6 is V6ONLY).
    static const char *const k_fine[] = {
        "0.0.0.0:5062",
        "[::]:5061",
        "[::1]:5061",
    };
    for (size_t i = 0; i < sizeof(k_fine) / sizeof(k_fine[0]); i++) {
        char text[512];
        snprintf(text, sizeof(text),
                 MINIMAL "[inbound b]\nlisten = %s\nforward = 192.0.2.10:5060\n", k_fine[i]);
        struct tg_config cfg;
        expect_ok(&cfg, text);
        tg_config_cleanup(&cfg);
    }
    struct tg_config cfg;
    expect_ok(&cfg,
              TLS_SECTION "[inbound a]\nlisten = 127.0.0.1:5061\nforward = 192.0.2.10:5060\n"
                          "[inbound b]\nlisten = 127.0.0.2:5061\nforward = 192.0.2.10:5060\n");
    assert_int_equal(cfg.listeners[0].listen_line, 8);
    assert_int_equal(cfg.listeners[1].listen_line, 11);
    tg_config_cleanup(&cfg);
}

static void test_listen_owners_admin(void **state) {
    (void)state;
    // [admin] after the listener: reported at admin.listen.
    expect_error(TLS_SECTION "[inbound a]\nlisten = 127.0.0.1:9901\nforward = 192.0.2.10:5060\n"
                             "[admin]\nlisten = 127.0.0.1:9901\n",
                 "t.conf:11: admin.listen: 127.0.0.1:9901 is already the listen address of "
                 "[inbound a] (line 8)");
    // [admin] first: reported at the listener's listen line.
    expect_error("[admin]\nlisten = 127.0.0.1:9901\n" TLS_SECTION
                 "[inbound a]\nlisten = 127.0.0.1:9901\nforward = 192.0.2.10:5060\n",
                 "t.conf:10: inbound a.listen: 127.0.0.1:9901 is already the admin listen "
                 "address (line 2)");
    // The default admin address counts too, wildcards included.
    expect_error(TLS_SECTION "[inbound a]\nlisten = 127.0.0.1:9900\nforward = 192.0.2.10:5060\n",
                 "t.conf:8: inbound a.listen: 127.0.0.1:9900 is already the admin listen address "
                 "(the default: set admin.listen, or admin.enabled = no)");
    expect_error(TLS_SECTION "[outbound a]\nlisten = 0.0.0.0:9900\nconnect = 192.0.2.1:5061\n",
                 "t.conf:8: outbound a.listen: 0.0.0.0:9900 overlaps 127.0.0.1:9900, the admin "
                 "listen address (the default: set admin.listen, or admin.enabled = no)");
    // With the admin disabled, its address is free; the key lines are kept.
    struct tg_config cfg;
    expect_ok(&cfg, "[admin]\nenabled = no\n" TLS_SECTION
                    "[inbound a]\nlisten = 127.0.0.1:9900\nforward = 192.0.2.10:5060\n");
    assert_int_equal(cfg.admin_listen_line, 0);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, "[global]\nuser = tlsgate\n[admin]\nlisten = 127.0.0.1:9901\n" MINIMAL);
    assert_int_equal(cfg.user_line, 2);
    assert_int_equal(cfg.admin_listen_line, 4);
    tg_config_cleanup(&cfg);
}

// ---------------------------------------------------------------------------------------------
// tg_config_diff: what a reload cannot apply.

#define DIFF_BASE                                                                                  \
    "[global]\nlog_level = info\n"                                                                 \
    "[admin]\nallow = 127.0.0.1/32, ::1/128\nhosts = Admin.example.net, b.example\n"               \
    "[tls]\ncert = /c.pem\nkey = /k.pem\nca = /ca.pem\nfqdn = sbc.example.com\n"                   \
    "peer_names = sip.example-carrier.net\n"                                                       \
    "[inbound provider]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10:5060\n"                       \
    "[outbound pbx]\nlisten = 127.0.0.1:5062\n"

// diff_texts parses |a| and |b| and returns tg_config_diff's count, the names in |names|.
static size_t diff_texts(const char *a, const char *b, char names[][TG_CONFIG_DIFF_NAME_MAX],
                         size_t max_names) {
    struct tg_config ca, cb;
    expect_ok(&ca, a);
    expect_ok(&cb, b);
    size_t n = tg_config_diff(&ca, &cb, names, max_names);
    tg_config_cleanup(&ca);
    tg_config_cleanup(&cb);
    return n;
}

static void expect_diff(const char *a, const char *b, const char *const *want, size_t num_want) {
    char names[16][TG_CONFIG_DIFF_NAME_MAX];
    size_t n = diff_texts(a, b, names, 16);
    for (size_t i = 0; i < n && i < num_want; i++)
        assert_string_equal(names[i], want[i]);
    if (n != num_want)
        fail_msg("%zu differences, want %zu (first: %s)", n, num_want, n > 0 ? names[0] : "-");
}

static void test_config_diff(void **state) {
    (void)state;
    static const char a[] = DIFF_BASE "connect = sip.example.net:5061, [::1]:5061\n";
    // Nothing, or only what a reload applies ([tls] files, names and TLS settings), or only
    // spelling: no difference.
    expect_diff(a, a, NULL, 0);
    expect_diff(a,
                "[global]\nlog_level = info\nworkers = auto\n"
                "[admin]\nallow = ::1/128,127.0.0.1\nhosts = b.example, admin.EXAMPLE.net\n"
                "[tls]\ncert = /c2.pem\nkey = /k2.pem\nca = /ca2.pem\nfqdn = sbc.example.com\n"
                "peer_names = other.example\nmin_version = 1.3\nmin_key_bits = 3072\n"
                "ciphers = ECDHE-RSA-AES128-GCM-SHA256\n"
                "[inbound provider]\nforward = 192.0.2.10:5060\nlisten = 0.0.0.0:5061\nmode = tcp\n"
                "[outbound pbx]\nlisten = 127.0.0.1:5062\n"
                "connect = sip.example.net:5061, [0:0:0::1]:5061\n",
                NULL, 0);
    // A DNS name is compared case-insensitively as a host, but the name a target must carry
    // (the host itself when no `=NAME` is given) is exact.
    expect_diff(DIFF_BASE "connect = sip.example.net:5061=peer.example\n",
                DIFF_BASE "connect = SIP.Example.NET:5061=peer.example\n", NULL, 0);
    static const char *const want_case[] = {"outbound pbx.connect"};
    expect_diff(a, DIFF_BASE "connect = SIP.Example.NET:5061, [::1]:5061\n", want_case, 1);
    // A name given without a port (SRV) is not the same target as the name on 5061.
    expect_diff(DIFF_BASE "connect = sip.example.net\n", DIFF_BASE "connect = sip.example.net\n",
                NULL, 0);
    expect_diff(DIFF_BASE "connect = sip.example.net\n",
                DIFF_BASE "connect = sip.example.net:5061\n", want_case, 1);
    // The nameservers: a reload does not apply them.
    static const char *const want_ns[] = {"global.resolvers"};
    static const char ns_a[] = "[global]\nresolvers = 127.0.0.1:53\n[tls]\ncert = /c.pem\n"
                               "key = /k.pem\nca = /ca.pem\nfqdn = f.example\npeer_names = p\n"
                               "[outbound pbx]\nlisten = 127.0.0.1:5062\nconnect = s.example\n";
    static const char ns_b[] = "[global]\nresolvers = 127.0.0.1:5353\n[tls]\ncert = /c.pem\n"
                               "key = /k.pem\nca = /ca.pem\nfqdn = f.example\npeer_names = p\n"
                               "[outbound pbx]\nlisten = 127.0.0.1:5062\nconnect = s.example\n";
    expect_diff(ns_a, ns_b, want_ns, 1);
    expect_diff(ns_a, ns_a, NULL, 0);

    // The changes of the issue: listen, connect, log_level; and the [tls] keys the workers
    // read from the startup configuration.
    static const char *const want1[] = {"global.log_level", "tls.fqdn", "tls.idle_timeout_ms",
                                        "inbound provider.listen", "outbound pbx.connect"};
    expect_diff(a,
                "[global]\nlog_level = debug\n"
                "[admin]\nallow = 127.0.0.1/32, ::1/128\nhosts = Admin.example.net, b.example\n"
                "[tls]\ncert = /c.pem\nkey = /k.pem\nca = /ca.pem\nfqdn = sbc2.example.com\n"
                "peer_names = sip.example-carrier.net\nidle_timeout_ms = 1000\n"
                "[inbound provider]\nlisten = 0.0.0.0:5063\nforward = 192.0.2.10:5060\n"
                "[outbound pbx]\nlisten = 127.0.0.1:5062\n"
                "connect = sip.example.net:5061, [::2]:5061\n",
                want1, 5);

    // [global], [admin] and per-listener keys; a target's expected name; a new port.
    static const char *const want2[] = {"global.max_connections",
                                        "global.max_handshakes",
                                        "global.user",
                                        "admin.listen",
                                        "admin.allow",
                                        "admin.hosts",
                                        "inbound provider.forward",
                                        "inbound provider.mode",
                                        "outbound pbx.connect",
                                        "outbound pbx.options_interval_s"};
    expect_diff(a,
                "[global]\nlog_level = info\nmax_connections = 100\nuser = tlsgate\n"
                "[admin]\nlisten = 127.0.0.1:9901\nallow = 127.0.0.1/32\n"
                "hosts = Admin.example.net\n"
                "[tls]\ncert = /c.pem\nkey = /k.pem\nca = /ca.pem\nfqdn = sbc.example.com\n"
                "peer_names = sip.example-carrier.net\n"
                "[inbound provider]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10:5070\n"
                "mode = sip\n"
                "[outbound pbx]\nlisten = 127.0.0.1:5062\noptions_interval_s = 30\n"
                "connect = sip.example.net:5061=peer.example, [::1]:5061\n",
                want2, 10);

    // Listeners added, removed, turned around, and reordered.
    static const char *const want3[] = {"inbound provider (removed)", "inbound pbx2 (added)",
                                        "outbound provider (added)"};
    expect_diff(a,
                "[tls]\ncert = /c.pem\nkey = /k.pem\nca = /ca.pem\nfqdn = sbc.example.com\n"
                "peer_names = sip.example-carrier.net\n"
                "[admin]\nallow = 127.0.0.1/32, ::1/128\nhosts = Admin.example.net, b.example\n"
                "[outbound pbx]\nlisten = 127.0.0.1:5062\n"
                "connect = sip.example.net:5061, [::1]:5061\n"
                "[inbound pbx2]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10:5060\n"
                "[outbound provider]\nlisten = 127.0.0.1:5064\nconnect = 192.0.2.1:5061\n",
                want3, 3);
    char names[16][TG_CONFIG_DIFF_NAME_MAX];
    static const char b3[] =
        "[tls]\ncert = /c.pem\nkey = /k.pem\nca = /ca.pem\nfqdn = sbc.example.com\n"
        "peer_names = sip.example-carrier.net\n"
        "[admin]\nallow = 127.0.0.1/32, ::1/128\nhosts = Admin.example.net, b.example\n"
        "[outbound pbx]\nlisten = 127.0.0.1:5062\nconnect = sip.example.net:5061, [::1]:5061\n"
        "[inbound provider]\nlisten = 0.0.0.0:5061\nforward = 192.0.2.10:5060\n";
    static const char *const want_order[] = {"listeners (order)"};
    expect_diff(a, b3, want_order, 1);
    static const char b4[] =
        "[tls]\ncert = /c.pem\nkey = /k.pem\nca = /ca.pem\nfqdn = sbc.example.com\n"
        "peer_names = sip.example-carrier.net\n"
        "[admin]\nallow = 127.0.0.1/32, ::1/128\nhosts = Admin.example.net, b.example\n"
        "[outbound provider]\nlisten = 0.0.0.0:5061\nconnect = 192.0.2.1:5061\n"
        "[outbound pbx]\nlisten = 127.0.0.1:5062\nconnect = sip.example.net:5061, [::1]:5061\n"
        "[inbound extra]\nlisten = 0.0.0.0:5065\nforward = 192.0.2.10:5060\n";
    static const char *const want4[] = {"inbound provider (removed)", "outbound provider (added)",
                                        "inbound extra (added)"};
    expect_diff(a, b4, want4, 3);

    // More differences than room: all counted, the first written; none written with no room.
    size_t n = diff_texts(a, b4, names, 2);
    assert_int_equal(n, 3);
    assert_string_equal(names[1], "outbound provider (added)");
    assert_int_equal(diff_texts(a, b4, NULL, 0), 3);
}

// ---------------------------------------------------------------------------------------------
// [media].

static void test_media_keys(void **state) {
    (void)state;
    struct tg_config cfg;
    expect_ok(&cfg, MINIMAL);
    assert_int_equal(cfg.media_enabled, 0); // no [media]: SDP passes as before
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, MINIMAL "[media]\npublic_address = 198.51.100.7\ninternal_address = "
                            "fd00::5\n");
    assert_int_equal(cfg.media_enabled, 1);
    assert_string_equal(cfg.media_public, "198.51.100.7");
    assert_string_equal(cfg.media_internal, "fd00::5");
    assert_int_equal(cfg.media_internal_addr.ss_family, AF_INET6);
    assert_int_equal(cfg.media_port_min, 40000);
    assert_int_equal(cfg.media_port_max, 49999);
    assert_int_equal(cfg.media_num_suites, 3);
    assert_int_equal(cfg.media_suites[0], 1);
    assert_int_equal(cfg.media_timeout_s, 30);
    assert_int_equal(cfg.media_max_calls, 1000);
    tg_config_cleanup(&cfg);
    expect_ok(&cfg, MINIMAL "[media]\npublic_address = 198.51.100.7\ninternal_address = 10.0.0.1\n"
                            "port_range = 20000-20099\nsrtp_suites = AEAD_AES_128_GCM, "
                            "AES_CM_128_HMAC_SHA1_80\ntimeout_s = 5\nmax_calls = 7\n");
    assert_int_equal(cfg.media_port_min, 20000);
    assert_int_equal(cfg.media_port_max, 20099);
    assert_int_equal(cfg.media_num_suites, 2);
    assert_int_equal(cfg.media_suites[0], 3);
    assert_int_equal(cfg.media_suites[1], 1);
    assert_int_equal(cfg.media_timeout_s, 5);
    assert_int_equal(cfg.media_max_calls, 7);
    tg_config_cleanup(&cfg);
}

static void test_media_bad_values(void **state) {
    (void)state;
#define MEDIA_HEAD MINIMAL "[media]\npublic_address = 198.51.100.7\ninternal_address = 10.0.0.1\n"
    expect_error(MINIMAL "[media]\npublic_address = 198.51.100.7\n",
                 "t.conf:10: media.internal_address: required key missing");
    expect_error(MINIMAL "[media]\npublic_address = media.example.com\n",
                 "t.conf:11: media.public_address: bad address 'media.example.com': expected a "
                 "numeric IPv4 or IPv6 address");
    expect_error(MINIMAL "[media]\npublic_address = 198.51.100.7:5000\n",
                 "t.conf:11: media.public_address: bad address '198.51.100.7:5000': expected a "
                 "numeric IPv4 or IPv6 address");
    expect_error(MEDIA_HEAD "port_range = 40001-49999\n",
                 "t.conf:13: media.port_range: '40001-49999': MIN must be even (RTP on even "
                 "ports)");
    expect_error(MEDIA_HEAD "port_range = 40000-40002\n",
                 "t.conf:13: media.port_range: '40000-40002': at least two port pairs needed");
    expect_error(MEDIA_HEAD "port_range = 40000\n",
                 "t.conf:13: media.port_range: bad value '40000': expected MIN-MAX (40000-49999)");
    expect_error(MEDIA_HEAD "port_range = 80-49999\n",
                 "t.conf:13: media.port_range: bad value '80-49999': expected MIN-MAX within "
                 "1024-65535");
    expect_error(MEDIA_HEAD "srtp_suites = AES_CM_128_HMAC_SHA1_80, F8_128_HMAC_SHA1_80\n",
                 "t.conf:13: media.srtp_suites: unknown suite 'F8_128_HMAC_SHA1_80': expected "
                 "AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32 or AEAD_AES_128_GCM");
    expect_error(MEDIA_HEAD "srtp_suites = AEAD_AES_128_GCM,AEAD_AES_128_GCM\n",
                 "t.conf:13: media.srtp_suites: suite 'AEAD_AES_128_GCM' listed twice");
    expect_error(MEDIA_HEAD "timeout_s = 0\n",
                 "t.conf:13: media.timeout_s: value 0 out of range 1..86400");
    expect_error(MEDIA_HEAD "[media]\n",
                 "t.conf:13: [media]: duplicate section (first at line 10)");
#undef MEDIA_HEAD
}

static void test_config_diff_media(void **state) {
    (void)state;
#define MEDIA_A "[media]\npublic_address = 198.51.100.7\ninternal_address = 10.0.0.1\n"
    static const char a[] = DIFF_BASE "connect = sip.example.net:5061\n" MEDIA_A;
    expect_diff(a, a, NULL, 0);
    static const char *const added[] = {"media (added)"};
    expect_diff(DIFF_BASE "connect = sip.example.net:5061\n", a, added, 1);
    static const char *const removed[] = {"media (removed)"};
    expect_diff(a, DIFF_BASE "connect = sip.example.net:5061\n", removed, 1);
    static const char *const changed[] = {"media.internal_address", "media.port_range",
                                          "media.srtp_suites", "media.timeout_s",
                                          "media.max_calls"};
    expect_diff(a,
                DIFF_BASE "connect = sip.example.net:5061\n[media]\npublic_address = 198.51.100.7\n"
                          "internal_address = 10.0.0.2\nport_range = 20000-29999\n"
                          "srtp_suites = AEAD_AES_128_GCM\ntimeout_s = 60\nmax_calls = 5\n",
                changed, 5);
#undef MEDIA_A
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_full_file),
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_workers_auto_and_bounds),
        cmocka_unit_test(test_comments_and_layout),
        cmocka_unit_test(test_unknown_key),
        cmocka_unit_test(test_bad_integer),
        cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_min_key_bits),
        cmocka_unit_test(test_bad_min_version),
        cmocka_unit_test(test_bad_ciphers),
        cmocka_unit_test(test_bad_values),
        cmocka_unit_test(test_bad_address),
        cmocka_unit_test(test_bad_port),
        cmocka_unit_test(test_missing_port),
        cmocka_unit_test(test_ipv6_without_brackets),
        cmocka_unit_test(test_duplicate_key),
        cmocka_unit_test(test_duplicate_section),
        cmocka_unit_test(test_unknown_section),
        cmocka_unit_test(test_missing_required_key),
        cmocka_unit_test(test_no_listeners),
        cmocka_unit_test(test_line_without_equals),
        cmocka_unit_test(test_key_outside_section),
        cmocka_unit_test(test_too_many_targets),
        cmocka_unit_test(test_connect_names),
        cmocka_unit_test(test_connect_names_bad),
        cmocka_unit_test(test_connect_without_port),
        cmocka_unit_test(test_resolvers),
        cmocka_unit_test(test_overlong_line),
        cmocka_unit_test(test_nul_byte),
        cmocka_unit_test(test_empty_peer_name),
        cmocka_unit_test(test_bad_listener_name),
        cmocka_unit_test(test_prefixes_and_noise),
        cmocka_unit_test(test_parse_hostport),
        cmocka_unit_test(test_target_format_unresolved_v6_text),
        cmocka_unit_test(test_load_file),
        cmocka_unit_test(test_relative_paths),
        cmocka_unit_test(test_example_conf),
        cmocka_unit_test(test_sip_listener_keys),
        cmocka_unit_test(test_resolve),
        cmocka_unit_test(test_admin_keys),
        cmocka_unit_test(test_admin_bad_values),
        cmocka_unit_test(test_admin_off_loopback),
        cmocka_unit_test(test_listen_owners),
        cmocka_unit_test(test_listen_owners_admin),
        cmocka_unit_test(test_config_diff),
        cmocka_unit_test(test_media_keys),
        cmocka_unit_test(test_config_diff_media),
        cmocka_unit_test(test_media_bad_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
