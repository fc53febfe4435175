#ifndef TLSGATE_ADMINPOLICY_H
#define TLSGATE_ADMINPOLICY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "tlsgate/target.h"

// The admin listener's access decision, with no I/O: a request's method, path, the headers that
// matter (Host, Origin, Content-Type, Authorization), its source address and the address it
// arrived on, against the [admin] configuration, give a route or a refusal with its HTTP status.
// admin.c does the HTTP; this module decides. Also the CIDR networks of `[admin] allow`.
//
// The order of the checks, first refusal wins:
//   1. source address not in `allow` (when `allow` is set)        403 source
//   2. Host header present and not one of our names                421 host
//   3. path not an endpoint                                        404 not_found
//   4. method: GET/HEAD for /healthz /metrics /status, POST for /reload   405 method
//   5. POST only: Origin present and not one of our origins        403 origin
//      POST only: Content-Type a browser sends cross-site without a preflight
//      (text/plain, application/x-www-form-urlencoded, multipart/form-data)   403 content_type
//   6. a token is configured and the route needs it (/reload, /status):
//      no `Authorization: Bearer` header                           401 token_missing
//      another token                                               401 token_wrong
// Our names: the listen address literal, for a wildcard listen also the address the connection
// arrived on, `localhost` when that address is loopback, and the `[admin] hosts` list; each
// with or without `:PORT`, where PORT must be the admin port. A request without Host (HTTP/1.0)
// passes: a browser always sends one.

struct tg_config;

// TG_ADMIN_MAX_ALLOW bounds the networks of `[admin] allow`.
#define TG_ADMIN_MAX_ALLOW 32
// TG_ADMIN_MAX_HOSTS bounds the names of `[admin] hosts`.
#define TG_ADMIN_MAX_HOSTS 16
// TG_ADMIN_TOKEN_MIN and TG_ADMIN_TOKEN_MAX bound the length of the admin token, in bytes.
#define TG_ADMIN_TOKEN_MIN 16
#define TG_ADMIN_TOKEN_MAX 256

// tg_cidr is one network: |family| is AF_INET or AF_INET6, |addr| holds 4 or 16 bytes with
// every bit after |prefix| zero.
struct tg_cidr {
    uint8_t family;
    uint8_t prefix;
    uint8_t addr[16];
};

// tg_cidr_parse parses `ADDR/PREFIX` (IPv4 or unbracketed IPv6) or a bare address (a /32 or
// /128) from |s| (|len| bytes) into |out|. Host bits set after the prefix are refused. Returns 1,
// or 0 with a short reason in |why|.
int tg_cidr_parse(struct tg_cidr *out, const char *s, size_t len, char *why, size_t why_len);

// tg_cidr_contains reports whether |sa| (AF_INET or AF_INET6; an IPv4-mapped IPv6 address
// counts as its IPv4 address) is in |net|.
int tg_cidr_contains(const struct tg_cidr *net, const struct sockaddr *sa);

// tg_sockaddr_is_loopback reports whether |sa| is 127.0.0.0/8, ::1 or ::ffff:127.0.0.0/104.
int tg_sockaddr_is_loopback(const struct sockaddr *sa);

// tg_sockaddr_format writes |sa|'s address (no port) into |out|, or `?` when it is neither
// AF_INET nor AF_INET6.
void tg_sockaddr_format(const struct sockaddr *sa, char *out, size_t out_len);

enum tg_admin_route {
    TG_ADMIN_ROUTE_NONE = 0,
    TG_ADMIN_ROUTE_HEALTHZ,
    TG_ADMIN_ROUTE_METRICS,
    TG_ADMIN_ROUTE_STATUS,
    TG_ADMIN_ROUTE_RELOAD,
};

// Why a request was refused; TG_ADMIN_OK when it was not. Each has a name (the `reason` label
// of tlsgate_admin_refused_total).
enum tg_admin_refusal {
    TG_ADMIN_OK = 0,
    TG_ADMIN_REFUSE_SOURCE,
    TG_ADMIN_REFUSE_HOST,
    TG_ADMIN_REFUSE_NOT_FOUND,
    TG_ADMIN_REFUSE_METHOD,
    TG_ADMIN_REFUSE_ORIGIN,
    TG_ADMIN_REFUSE_CONTENT_TYPE,
    TG_ADMIN_REFUSE_TOKEN_MISSING,
    TG_ADMIN_REFUSE_TOKEN_WRONG,
    TG_ADMIN_REFUSE_NUM,
};

// tg_admin_refusal_name returns the label of |r| (`source`, `host`, ...; `ok` for TG_ADMIN_OK).
const char *tg_admin_refusal_name(enum tg_admin_refusal r);

// tg_adminpolicy is what the decision needs of the configuration. It borrows the config's
// `allow` and `hosts` lists, so the config must outlive it; the token is kept as its SHA-256.
struct tg_adminpolicy {
    const struct tg_cidr *allow; // borrowed; none: every source
    size_t num_allow;
    const char (*hosts)[TG_HOST_MAX]; // borrowed: `[admin] hosts`
    size_t num_hosts;
    struct tg_cidr listen; // the listen address as a /32 or /128
    uint16_t port;
    uint8_t listen_wildcard; // 0.0.0.0 or ::
    uint8_t have_token;
    uint8_t token_sha256[32];
};

// tg_adminpolicy_init fills |p| from |cfg|'s [admin] keys and the token |token| (|token_len|
// bytes; NULL when no token_file is configured). Returns 1, or 0 when the listen address is
// neither IPv4 nor IPv6 or the token's length is outside TG_ADMIN_TOKEN_MIN..MAX.
int tg_adminpolicy_init(struct tg_adminpolicy *p, const struct tg_config *cfg, const uint8_t *token,
                        size_t token_len);

// tg_admin_request is one request as the decision sees it. Header values are NUL-terminated,
// NULL when the header is absent.
struct tg_admin_request {
    const char *method;
    const char *path; // without the query string
    const char *host;
    const char *origin;
    const char *content_type;
    const char *authorization;
    const struct sockaddr *source; // the client's address; NULL: unknown (refused)
    const struct sockaddr *local;  // the address the connection arrived on; NULL: unknown
};

// tg_admin_decision is the outcome: the route (TG_ADMIN_ROUTE_NONE for an unknown path or a
// refusal before routing) and, for a refusal, the HTTP status to answer.
struct tg_admin_decision {
    enum tg_admin_route route;
    enum tg_admin_refusal refusal;
    uint16_t status; // 200 when allowed (the handler may still answer otherwise)
};

// tg_adminpolicy_decide decides |req| under |p| into |out|. Returns |out->refusal|.
enum tg_admin_refusal tg_adminpolicy_decide(const struct tg_adminpolicy *p,
                                            struct tg_admin_decision *out,
                                            const struct tg_admin_request *req);

// tg_adminpolicy_source_ok reports whether |source| may connect: it is in `allow`, or `allow`
// is empty. NULL and families other than IPv4 and IPv6 may not.
int tg_adminpolicy_source_ok(const struct tg_adminpolicy *p, const struct sockaddr *source);

// tg_adminpolicy_host_ok reports whether |hostport| (a Host header value, or the `host[:port]`
// of an Origin) names this admin listener, for a connection that arrived on |local| (may be
// NULL). When |default_port| is non-zero a missing port means that port (Origin); when it is 0 a
// missing port matches (Host).
int tg_adminpolicy_host_ok(const struct tg_adminpolicy *p, const char *hostport, size_t len,
                           const struct sockaddr *local, uint16_t default_port);

#endif // TLSGATE_ADMINPOLICY_H
