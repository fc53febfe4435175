#ifndef TLSGATE_CONFIG_H
#define TLSGATE_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/adminpolicy.h"
#include "tlsgate/log.h"
#include "tlsgate/target.h"

// The configuration as loaded from an INI file. The loader does no network I/O: addresses
// must be numeric (`127.0.0.1:5061`, `[::1]:5061`) except `connect` targets, whose host may be a
// DNS name (with or without a port) that the resolver (resolver.h) follows.

#define TG_MAX_TARGETS 8
// TG_MAX_RESOLVERS is how many nameservers `[global] resolvers` may name (resolv.h's MAXNS).
#define TG_MAX_RESOLVERS 3
// TG_SIPS_PORT is the port of a `connect` target given without one (RFC 3261 19.1.2).
#define TG_SIPS_PORT 5061
#define TG_NAME_MAX 64

enum tg_mode { TG_MODE_TCP = 0, TG_MODE_SIP };
enum tg_direction { TG_INBOUND = 0, TG_OUTBOUND };

// tg_direction_word names a direction as in section headers: "inbound", "outbound".
static inline const char *tg_direction_word(enum tg_direction d) {
    return d == TG_INBOUND ? "inbound" : "outbound";
}

// tg_listener_conf is one `[inbound NAME]` or `[outbound NAME]` section.
struct tg_listener_conf {
    char name[TG_NAME_MAX];
    enum tg_direction direction;
    enum tg_mode mode;
    int line;                // line of the section header, for messages
    struct tg_target listen; // numeric, resolved by the loader
    int listen_line;         // line of the `listen` key, for messages
    // inbound: exactly one (`forward`); outbound: the `connect` list, tried in order.
    struct tg_target targets[TG_MAX_TARGETS];
    size_t num_targets;
    // mode = sip only:
    uint32_t options_interval_s;    // outbound: OPTIONS to each target every N s; 0 = off (60)
    uint32_t options_failures;      // outbound: consecutive failures that mark a target down (2)
    uint32_t keepalive_interval_ms; // CRLFCRLF ping on a provider side idle this long; 0 = off
    uint32_t sip_max_message;       // bytes, head + body of one message (65536)
    uint32_t max_connections;       // this listener's own cap; 0 = only the global one
    // outbound only: the connect of one attempt (3000), the whole chain of attempts over the
    // targets (30000; 0 = each attempt bounded alone), how long a target that failed is
    // skipped by new connections (30; 0 = never skipped)
    uint32_t connect_timeout_ms;
    uint32_t failover_timeout_ms;
    uint32_t target_backoff_s;
};

struct tg_config {
    char path[4096];

    // [global]
    unsigned workers;            // 0 = auto (online CPUs)
    uint32_t max_connections;    // whole process, default 10000
    enum tg_log_level log_level; // default info
    char user[TG_NAME_MAX];      // empty: keep the current user
    int user_line;               // line of the `user` key (0: absent), for messages
    uint32_t drain_timeout_ms;   // default 10000
    uint32_t buffer_size;        // bytes queued per direction per connection, default 65536
    // Admission of inbound connections, before any cryptography (guard.h):
    uint32_t max_handshakes;             // unauthenticated connections in progress, whole
                                         // process; default max_connections / 2
    uint32_t max_handshakes_per_source;  // ... from one source address (IPv6: /64); 0 = no cap
    uint32_t new_connections_per_source; // accepted per second from one source; 0 = no cap
    uint32_t fd_reserve;                 // descriptors the data plane leaves free (64); 0 = none
    uint32_t socket_buffer;              // SO_SNDBUF/SO_RCVBUF of our sockets; 0 = autotuned
    // Nameservers of the `connect` names (IPv4 with a port); none: /etc/resolv.conf.
    struct tg_target resolvers[TG_MAX_RESOLVERS];
    size_t num_resolvers;

    // [admin]
    int admin_enabled;             // default 1
    struct tg_target admin_listen; // default 127.0.0.1:9900
    int admin_listen_line;         // line of the `listen` key (0: the default), for messages
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
    char key[4096]; // the private key file; empty with |keyd|
    char keyd[108]; // `key = keyd:PATH`: tlsgate-keyd's socket (keyd.h); empty: |key| is a file
    char ca[4096];
    char own_ca[4096]; // the CA bundle our own chain must reach; empty = not checked
    char fqdn[TG_HOST_MAX];
    char **peer_names; // owned; exact, case-sensitive
    size_t num_peer_names;
    uint32_t min_key_bits;         // default 2048, never under 1024
    uint16_t min_version;          // TLS1_2_VERSION (0x0303) or TLS1_3_VERSION (0x0304)
    char ciphers[512];             // TLS 1.2 cipher list; empty = the Teams Direct Routing list
    uint32_t handshake_timeout_ms; // default 10000
    uint32_t idle_timeout_ms;      // default 300000; 0 = none
    char ticket_keys[4096];        // session ticket key file; empty = random keys per process
    uint32_t signers; // threads that sign with our key off the I/O loop (1); 0 = inline

    // [media] (media_enabled = 0 without the section: SDP bodies pass as today)
    int media_enabled;
    int media_line; // line of the section header, for messages
    // Numeric addresses (no port): what the provider is told (public) and what the PBX is told
    // (internal); tlsgate's media sockets bind there. Text kept for SDP, parsed for bind().
    char media_public[48];
    char media_internal[48];
    struct sockaddr_storage media_public_addr; // port 0
    struct sockaddr_storage media_internal_addr;
    uint16_t media_port_min, media_port_max; // even min; RTP on even ports, RTCP on port + 1
    uint8_t media_suites[4];                 // enum tg_srtp_suite, preference order
    size_t media_num_suites;
    uint32_t media_timeout_s; // a call without any packet this long ends (30)
    uint32_t media_max_calls; // calls with media at once, whole process (1000)

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

// tg_config_resolve resolves every unresolved target with getaddrinfo, first address only
// (blocking). The daemon follows `connect` names with the resolver instead (resolver.h). Returns 1
// on success, 0 with `FILE:LINE: key: cannot resolve HOST: why` in |err|.
int tg_config_resolve(struct tg_config *cfg, char *err, size_t err_len);

// TG_CONFIG_DIFF_NAME_MAX bounds one name written by tg_config_diff, NUL included.
#define TG_CONFIG_DIFF_NAME_MAX 128

// tg_config_diff compares the configuration in service |cur| with a newly loaded |next|, setting
// by setting on parsed values (addresses as addresses, DNS names case-insensitively and
// unresolved, lists as sets where order means nothing, defaults filled in), and names each
// setting that differs and that a reload does not apply: every key outside [tls] and the [tls]
// keys the workers read from the configuration in service (fqdn, handshake_timeout_ms,
// idle_timeout_ms). A reload applies the other [tls] keys (cert, key, ca, own_ca, peer_names,
// min_key_bits, min_version, ciphers, ticket_keys), so they are not compared. Names read
// `global.log_level`, `admin.listen`, `tls.fqdn`, `inbound NAME.listen`, `outbound NAME.connect`,
// `inbound NAME (added)`, `outbound NAME (removed)` and `listeners (order)`. The first
// |max_names| names go to |out_names| (may be NULL when |max_names| is 0). Returns the number
// of differences, which may exceed |max_names|; 0 when a reload applies everything.
size_t tg_config_diff(const struct tg_config *cur, const struct tg_config *next,
                      char out_names[][TG_CONFIG_DIFF_NAME_MAX], size_t max_names);

#endif // TLSGATE_CONFIG_H
