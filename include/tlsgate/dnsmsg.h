#ifndef TLSGATE_DNSMSG_H
#define TLSGATE_DNSMSG_H

#include <stddef.h>
#include <stdint.h>

#include "tlsgate/target.h"

// The I/O-free half of the resolver (resolver.h does the queries): DNS answer messages parsed
// with bounded cursors (A, AAAA, CNAME, SRV and their TTLs), CNAME chains followed, SRV records
// put in RFC 2782 order, /etc/hosts text searched, TTLs clamped and refreshes scheduled with a
// back-off. Bytes in, records and decisions out; every byte of a message is an attacker's.

// Record types we read (RFC 1035 3.2.2, RFC 3596, RFC 2782).
enum { TG_DNS_A = 1, TG_DNS_CNAME = 5, TG_DNS_AAAA = 28, TG_DNS_SRV = 33 };

// TG_DNS_MAX_RR bounds the answer records taken from one message; more are ignored.
#define TG_DNS_MAX_RR 32
// TG_DNS_MAX_ADDRS bounds the addresses kept for one name.
#define TG_DNS_MAX_ADDRS 16
// TG_DNS_MAX_SRV bounds the SRV records kept for one service name.
#define TG_DNS_MAX_SRV 8
// TG_DNS_MAX_CNAME bounds the CNAME links followed from a queried name.
#define TG_DNS_MAX_CNAME 8
// TTL bounds (seconds): a name is refreshed no sooner than MIN and no later than MAX.
#define TG_DNS_TTL_MIN 1
#define TG_DNS_TTL_MAX 3600
// Failure back-off (seconds): 1, doubling, at most 30.
#define TG_DNS_BACKOFF_MIN 1
#define TG_DNS_BACKOFF_MAX 30

// tg_dns_addr is one IPv4 (|family| AF_INET, 4 bytes) or IPv6 (AF_INET6, 16 bytes) address.
struct tg_dns_addr {
    uint8_t family;
    uint8_t bytes[16];
};

// tg_dns_srv is one SRV record (RFC 2782).
struct tg_dns_srv {
    uint16_t priority, weight, port;
    uint32_t ttl;
    char target[TG_HOST_MAX]; // empty: "." (the service is not offered there)
};

// tg_dns_rr is one answer record of class IN of a type we read.
struct tg_dns_rr {
    uint16_t type;
    uint32_t ttl;
    char owner[TG_HOST_MAX];
    struct tg_dns_addr addr; // A, AAAA
    struct tg_dns_srv srv;   // SRV (its target) and CNAME (srv.target is the canonical name)
};

// tg_dns_answer is what tg_dns_parse took from one message.
struct tg_dns_answer {
    uint16_t id;
    uint8_t rcode;
    size_t num_rr;
    struct tg_dns_rr rr[TG_DNS_MAX_RR];
};

// tg_dns_parse reads the DNS response |msg| (|len| bytes): header, question section skipped,
// the answer section's records of class IN and type A, AAAA, CNAME or SRV into |out| (at most
// TG_DNS_MAX_RR; others skipped). Names are decompressed with pointers that must point
// backwards, at most 255 bytes, labels of [A-Za-z0-9_-] only. Returns 1, or 0 with the reason
// in |why| for a message that is not a response, truncated (TC), cut short, or malformed;
// nothing is read past |len|.
int tg_dns_parse(struct tg_dns_answer *out, const uint8_t *msg, size_t len, char *why,
                 size_t why_len);

// tg_dns_collect_addrs follows the CNAME chain from |qname| (case-insensitive, at most
// TG_DNS_MAX_CNAME links) and copies the records of |type| (TG_DNS_A or TG_DNS_AAAA) owned by
// its end into |out| (at most |max|, duplicates dropped), in message order. |*out_ttl| is the
// smallest TTL of the records used, links included (unchanged when none). Returns the count.
size_t tg_dns_collect_addrs(const struct tg_dns_answer *a, const char *qname, uint16_t type,
                            struct tg_dns_addr *out, size_t max, uint32_t *out_ttl);

// tg_dns_collect_srv copies the SRV records owned by |qname| (after its CNAME chain) into
// |out| (at most |max|), with |*out_ttl| as tg_dns_collect_addrs. Returns the count.
size_t tg_dns_collect_srv(const struct tg_dns_answer *a, const char *qname, struct tg_dns_srv *out,
                          size_t max, uint32_t *out_ttl);

// tg_dns_rand_fn returns a random number; |arg| is its state.
typedef uint32_t (*tg_dns_rand_fn)(void *arg);

// tg_dns_srv_order sorts |srv| in the order RFC 2782 gives for trying them: priority
// ascending; within a priority, a weighted random draw (records of weight 0 first among the
// candidates, so that they are picked rarely) using |rnd|.
void tg_dns_srv_order(struct tg_dns_srv *srv, size_t num_srv, tg_dns_rand_fn rnd, void *arg);

// tg_dns_clamp_ttl bounds a TTL to TG_DNS_TTL_MIN..TG_DNS_TTL_MAX seconds.
uint32_t tg_dns_clamp_ttl(uint32_t ttl);

// tg_dns_sched is when one name is refreshed next.
struct tg_dns_sched {
    uint64_t due_ms;    // monotonic ms of the next query
    uint32_t backoff_s; // the current failure back-off (0: not failing)
    uint8_t failing;    // in a failure episode
};

// tg_dns_sched_ok schedules the next refresh |ttl| seconds (clamped) after |now_ms| and ends a
// failure episode. Returns 1 when one was in progress (the name recovered).
int tg_dns_sched_ok(struct tg_dns_sched *s, uint64_t now_ms, uint32_t ttl);

// tg_dns_sched_fail schedules a retry after the back-off (1 s, doubling, at most 30 s).
// Returns 1 when this failure starts an episode (log it once), 0 while one lasts.
int tg_dns_sched_fail(struct tg_dns_sched *s, uint64_t now_ms);

// tg_hosts_lookup finds |name| (case-insensitive) in hosts(5) text |data| (|len| bytes): every
// address of every line naming it, in file order, duplicates dropped, at most |max|. Comments,
// blank lines and lines whose address is not numeric are skipped. Returns the count.
size_t tg_hosts_lookup(const char *data, size_t len, const char *name, struct tg_dns_addr *out,
                       size_t max);

// TG_HOSTS_MAX_BYTES bounds what tg_hosts_read reads of a hosts file.
#define TG_HOSTS_MAX_BYTES (1u << 20)

// tg_hosts_read reads the file at |path| (at most TG_HOSTS_MAX_BYTES) into a malloc'd buffer
// (|*out|, |*out_len|; NUL-terminated). A missing file reads as empty. Returns 0 only when
// memory is short.
int tg_hosts_read(const char *path, char **out, size_t *out_len);

// tg_dns_addr_format writes |a| with |port| as `ADDR:PORT` (`[V6]:PORT`).
void tg_dns_addr_format(const struct tg_dns_addr *a, uint16_t port, char *out, size_t out_len);

#endif // TLSGATE_DNSMSG_H
