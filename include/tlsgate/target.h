#ifndef TLSGATE_TARGET_H
#define TLSGATE_TARGET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

// Network targets: a `HOST:PORT` as configured, the checks on its parts (numeric IPv4 and IPv6
// addresses, DNS names, ports), the socket address it stands for, its resolution and its
// printed form. Also the small value parsers and error-message helpers that the configuration
// loader shares with it. Only tg_resolve_target does network I/O.

// TG_HOST_MAX bounds a host (a DNS name or a numeric address), NUL included.
#define TG_HOST_MAX 256
// TG_QUOTE_MAX is how much of a configured value an error message repeats.
#define TG_QUOTE_MAX 64

// tg_target is one `HOST:PORT`: the text as configured and, once resolved, its address.
struct tg_target {
    char host[TG_HOST_MAX]; // without brackets for IPv6
    // `connect` only: the name the target's certificate must carry (CN and a DNS SAN), also
    // sent as SNI: `=NAME` when configured, else |host| when it is a DNS name. Empty (a target
    // given by address alone, and every other kind of target): the [tls] peer_names.
    char expect_name[TG_HOST_MAX];
    uint16_t port;
    // `connect` only: 1 for a DNS name given without a port: its addresses come from the SRV
    // records of _sips._tcp.HOST (RFC 3263 4.2), else from its A/AAAA records on |port| (5061).
    uint8_t srv;
    int resolved; // 1 once |addr| holds an address
    struct sockaddr_storage addr;
    socklen_t addr_len;
};

// tg_parse_hostport parses `HOST:PORT`, `[V6]:PORT` or `V4:PORT` into |out|; when the host is a
// numeric address it also fills |out->addr| and sets |out->resolved|. Returns 1 on success, 0
// with a short reason in |err| otherwise.
int tg_parse_hostport(struct tg_target *out, const char *text, char *err, size_t err_len);

// tg_resolve_target fills |t|'s address from the first getaddrinfo result for its host
// (blocking). Returns 1 on success, 0 with the reason in |*out_why| otherwise.
int tg_resolve_target(struct tg_target *t, const char **out_why);

// tg_target_format writes `ADDR:PORT` (`[V6]:PORT`) for |t|'s address into |out|.
void tg_target_format(const struct tg_target *t, char *out, size_t out_len);

// tg_valid_dns_name reports whether |s| is a DNS name: labels of 1..63 [A-Za-z0-9_-], not
// starting or ending with '-', separated by single dots, at most 253 characters.
int tg_valid_dns_name(const char *s);

// tg_is_name_char reports whether |c| is one of [A-Za-z0-9_.-].
int tg_is_name_char(char c);

enum tg_uint_result { TG_UINT_OK, TG_UINT_SYNTAX, TG_UINT_RANGE };

// tg_parse_uint parses a decimal integer (digits only) in |min|..|max|. |*out| is 0 on failure,
// so callers never read an unset value.
enum tg_uint_result tg_parse_uint(uint32_t *out, const char *s, uint32_t min, uint32_t max);

// tg_quote copies at most TG_QUOTE_MAX bytes of |s| (|s_len| bytes) into |out| for an error
// message, replacing bytes that are not printable ASCII with '?'.
void tg_quote(char *out, size_t out_len, const char *s, size_t s_len);

// tg_set_why writes a reason (or a whole message) into |why| when there is room for one.
// Returns 0 so callers can `return tg_set_why(...)`.
int tg_set_why(char *why, size_t why_len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

// tg_overlap is how two listen addresses meet under bind(2).
enum tg_overlap { TG_OVERLAP_NONE = 0, TG_OVERLAP_SAME, TG_OVERLAP_WILDCARD };

// tg_listen_overlap compares two numeric listen addresses as bind(2) sees them: the same
// family, address and port (TG_OVERLAP_SAME), or the same family and port with one address
// the wildcard, 0.0.0.0 or [::] (TG_OVERLAP_WILDCARD). IPv6 listeners are V6ONLY, so an IPv4
// and an IPv6 address never overlap.
enum tg_overlap tg_listen_overlap(const struct tg_target *a, const struct tg_target *b);

#endif // TLSGATE_TARGET_H
