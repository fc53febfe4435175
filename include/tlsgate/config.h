#ifndef TLSGATE_CONFIG_H
#define TLSGATE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/adminpolicy.h"
#include "tlsgate/log.h"
#include "tlsgate/target.h"

// The configuration as loaded from an INI file. The loader does no network I/O: addresses
// must be numeric (`127.0.0.1:5061`, `[::1]:5061`) except `connect` targets, whose host may be a
// DNS name that tg_config_resolve() turns into addresses at startup.

#define TG_MAX_TARGETS 8
#define TG_NAME_MAX 64

enum tg_mode { TG_MODE_TCP = 0, TG_MODE_SIP };
enum tg_direction { TG_INBOUND = 0, TG_OUTBOUND };

// tg_listener_conf is one `[inbound NAME]` or `[outbound NAME]` section.
struct tg_listener_conf {
    char name[TG_NAME_MAX];
    enum tg_direction direction;
    enum tg_mode mode;
    int line;                // line of the section header, for messages
    struct tg_target listen; // numeric, resolved by the loader
    // inbound: exactly one (`forward`); outbound: the `connect` list, tried in order.
    struct tg_target targets[TG_MAX_TARGETS];
    size_t num_targets;
    // mode = sip only:
    uint32_t options_interval_s;    // outbound: OPTIONS to each target every N s; 0 = off (60)
    uint32_t options_failures;      // outbound: consecutive failures that mark a target down (2)
    uint32_t keepalive_interval_ms; // CRLFCRLF ping on a provider side idle this long; 0 = off
    uint32_t sip_max_message;       // bytes, head + body of one message (65536)
    uint32_t max_connections;       // this listener's own cap; 0 = only the global one
};

struct tg_config {
    char path[4096];

    // [global]
    unsigned workers;            // 0 = auto (online CPUs)
    uint32_t max_connections;    // whole process, default 10000
    enum tg_log_level log_level; // default info
    char user[TG_NAME_MAX];      // empty: keep the current user
    uint32_t drain_timeout_ms;   // default 10000
    uint32_t buffer_size;        // bytes queued per direction per connection, default 65536
    // Admission of inbound connections, before any cryptography (guard.h):
    uint32_t max_handshakes;             // unauthenticated connections in progress, whole
                                         // process; default max_connections / 2
    uint32_t max_handshakes_per_source;  // ... from one source address (IPv6: /64); 0 = no cap
    uint32_t new_connections_per_source; // accepted per second from one source; 0 = no cap

    // [admin]
    int admin_enabled;             // default 1
    struct tg_target admin_listen; // default 127.0.0.1:9900
    // Source networks allowed to connect; none: any. Required with a non-loopback listen.
    struct tg_cidr admin_allow[TG_ADMIN_MAX_ALLOW];
    size_t num_admin_allow;
    // Names (DNS names or numeric addresses) that Host and Origin may give besides the listen
    // address and `localhost`.
    char admin_hosts[TG_ADMIN_MAX_HOSTS][TG_HOST_MAX];
    size_t num_admin_hosts;
    // The bearer token's file (empty: no token; required with a non-loopback listen) and the
    // line of the key, for messages about the file.
    char admin_token_file[4096];
    int admin_token_file_line;

    // [tls]
    char cert[4096];
    char key[4096];
    char ca[4096];
    char fqdn[TG_HOST_MAX];
    char **peer_names; // owned; exact, case-sensitive
    size_t num_peer_names;
    uint32_t min_key_bits;         // default 2048, never under 1024
    uint16_t min_version;          // TLS1_2_VERSION (0x0303) or TLS1_3_VERSION (0x0304)
    char ciphers[512];             // TLS 1.2 cipher list; empty = the Teams Direct Routing list
    uint32_t handshake_timeout_ms; // default 10000
    uint32_t idle_timeout_ms;      // default 300000; 0 = none

    struct tg_listener_conf *listeners; // owned
    size_t num_listeners;
};

// tg_config_init fills |cfg| with the defaults and no listeners.
void tg_config_init(struct tg_config *cfg);

// tg_config_cleanup frees what |cfg| owns. Safe on an initialised or zeroed config.
void tg_config_cleanup(struct tg_config *cfg);

// tg_config_load reads the INI file at |path| into |cfg| (which it initialises first).
// Returns 1 on success. On failure returns 0 and writes one line to |err| in the form
// `FILE:LINE: key: what is wrong` (LINE is 0 for whole-file problems such as a missing
// required key, where the key names it: `FILE:0: tls.cert: required key missing`).
int tg_config_load(struct tg_config *cfg, const char *path, char *err, size_t err_len);

// tg_config_parse behaves like tg_config_load over the bytes |data|, naming them |name| in
// messages. |data| need not be NUL-terminated. Used by tests and the fuzz harness.
int tg_config_parse(struct tg_config *cfg, const char *name, const char *data, size_t data_len,
                    char *err, size_t err_len);

// tg_config_resolve resolves every unresolved target with getaddrinfo (blocking; call at
// startup). Returns 1 on success, 0 with `FILE:LINE: key: cannot resolve HOST: why` in |err|.
int tg_config_resolve(struct tg_config *cfg, char *err, size_t err_len);

#endif // TLSGATE_CONFIG_H
