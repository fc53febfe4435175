#ifndef TLSGATE_RESOLVER_H
#define TLSGATE_RESOLVER_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

#include "tlsgate/config.h"
#include "tlsgate/dnsmsg.h"
#include "tlsgate/metrics.h"

// The `connect` targets of outbound listeners as DNS has them now: every address of a name
// (A, AAAA; SRV _sips._tcp.NAME for a name given without a port, RFC 3263 4.2), /etc/hosts
// first, refreshed by one resolver thread when the shortest TTL runs out (stale addresses kept
// while DNS fails, retried with a back-off). What the workers read is an immutable snapshot,
// handed to each worker through an atomic mailbox (tg_dns_view) and freed when its last holder
// lets go: no lock on the data path.

// TG_DNS_MAX_ENTRIES bounds the addresses of one listener (all its targets): a connection
// tries each at most once (a bit each in tg_conn.tried).
#define TG_DNS_MAX_ENTRIES 32

// tg_dns_entry is one address a connection of a listener may try.
struct tg_dns_entry {
    struct sockaddr_storage addr; // with the port
    socklen_t addr_len;
    uint16_t port;
    uint8_t target;          // index of the configured `connect` target it belongs to
    const char *expect_name; // the target's certificate name (borrowed from the config; may be "")
    // Passive health of this address: a failed attempt skips it for new connections until then
    // (monotonic ms, 0: never failed). The one mutable field; any worker writes it.
    _Atomic uint32_t down_until;
};

// tg_dns_list is one outbound listener's addresses: its targets in configured order, within a
// target its addresses in the order DNS gave them. Empty for inbound listeners.
struct tg_dns_list {
    struct tg_dns_entry *entries;
    size_t num_entries;
};

// tg_dns_snapshot is every listener's list at one moment. Reference-counted.
struct tg_dns_snapshot {
    _Atomic uint32_t refs;
    uint64_t serial; // 1, 2, ... in the order the resolver built them
    size_t num_listeners;
    struct tg_dns_list lists[];
};

// tg_dns_snapshot_up_ref takes a reference on |s| (NULL: no-op).
void tg_dns_snapshot_up_ref(struct tg_dns_snapshot *s);

// tg_dns_snapshot_free drops a reference; the last one frees |s|. NULL is a no-op.
void tg_dns_snapshot_free(struct tg_dns_snapshot *s);

// tg_dns_entry_format writes the entry's `ADDR:PORT` (`[V6]:PORT`).
void tg_dns_entry_format(const struct tg_dns_entry *e, char *out, size_t out_len);

// tg_dns_resolved is what one configured target stands for now.
struct tg_dns_resolved {
    struct tg_dns_addr addrs[TG_DNS_MAX_ADDRS];
    uint16_t ports[TG_DNS_MAX_ADDRS];
    size_t num;
    uint32_t ttl; // seconds until it is asked again (the smallest TTL used)
};

// tg_dns_snapshot_build makes a snapshot of |cfg|'s outbound listeners from |per_target|
// ([listener * TG_MAX_TARGETS + target]; numeric targets may be left empty there: their
// address is taken from the configuration). Health (down_until) of an address that |prev| (may
// be NULL) also holds for the same target is carried over. Entries past TG_DNS_MAX_ENTRIES
// per listener are dropped. Returns NULL when memory is short.
struct tg_dns_snapshot *tg_dns_snapshot_build(const struct tg_config *cfg,
                                              const struct tg_dns_resolved *per_target,
                                              const struct tg_dns_snapshot *prev, uint64_t serial);

// tg_dns_resolved_from_answer adds to |out| the addresses that answer |a| gives |qname| for
// |type| (A or AAAA), each with |port|, and lowers |out->ttl| to theirs. Returns the number
// added.
size_t tg_dns_resolved_from_answer(struct tg_dns_resolved *out, const struct tg_dns_answer *a,
                                   const char *qname, uint16_t type, uint16_t port);

// ---------------------------------------------------------------------------------------------
// A worker's view: the snapshot new connections use, and the older ones still in use.

// tg_dns_hold is one snapshot a worker holds (one reference) and how many of its connections
// use it. Worker-local: no atomics.
struct tg_dns_hold {
    struct tg_dns_snapshot *snap;
    uint32_t users;
    struct tg_dns_hold *next; // retired holds still in use
};

struct tg_dns_view {
    _Atomic(struct tg_dns_snapshot *) mailbox; // a newer snapshot, from the resolver thread
    struct tg_dns_hold *cur;                   // new connections take this one
    struct tg_dns_hold *retired;               // replaced, still used by connections
};

// tg_dns_view_init starts |v| on |snap| (takes its own reference). Returns 0 when memory is
// short.
int tg_dns_view_init(struct tg_dns_view *v, struct tg_dns_snapshot *snap);

// tg_dns_view_offer hands |v| a newer snapshot (takes its own reference; a snapshot not yet
// adopted is replaced). Safe from any thread. Returns 1.
int tg_dns_view_offer(struct tg_dns_view *v, struct tg_dns_snapshot *snap);

// tg_dns_view_adopt switches new connections to the offered snapshot, if any (the worker's
// thread, on its wake-up). Connections keep the one they started with.
void tg_dns_view_adopt(struct tg_dns_view *v);

// tg_dns_view_acquire returns the current hold for a new connection (counted as a user).
struct tg_dns_hold *tg_dns_view_acquire(struct tg_dns_view *v);

// tg_dns_view_release ends a connection's use of |h|; a retired hold with no user left gives
// its reference back.
void tg_dns_view_release(struct tg_dns_view *v, struct tg_dns_hold *h);

// tg_dns_view_cleanup drops every reference |v| holds.
void tg_dns_view_cleanup(struct tg_dns_view *v);

// ---------------------------------------------------------------------------------------------
// The resolver.

struct tg_resolver;

// tg_dns_publish_fn hands a new snapshot to the workers (each takes its own reference).
typedef void (*tg_dns_publish_fn)(void *arg, struct tg_dns_snapshot *snap);

// tg_resolver_new prepares the resolution of |cfg|'s `connect` targets (|cfg| is borrowed and
// must outlive it): nameservers from `[global] resolvers`, else /etc/resolv.conf; names looked
// up in |hosts_path| (NULL: /etc/hosts) first. Returns NULL with the reason in |err|.
struct tg_resolver *tg_resolver_new(const struct tg_config *cfg, const char *hosts_path, char *err,
                                    size_t err_len);

// tg_resolver_free stops the thread if it runs and frees everything. NULL is a no-op.
void tg_resolver_free(struct tg_resolver *r);

// tg_resolver_initial resolves every target once (blocking; at start-up and in `check`). A
// target that does not resolve while another of its listener does is a warning (the log's
// dns_unresolved; also a `FILE:LINE: ... warning:` line on |warn| when not NULL); a listener
// none of whose targets resolves fails: 0 with `FILE:LINE: outbound NAME.connect: cannot
// resolve HOST: why` in |err|.
int tg_resolver_initial(struct tg_resolver *r, FILE *warn, char *err, size_t err_len);

// tg_resolver_get1 returns the current snapshot with a reference for the caller.
struct tg_dns_snapshot *tg_resolver_get1(struct tg_resolver *r);

// tg_resolver_start starts the refresh thread, which publishes each changed snapshot through
// |publish| and marks targets without an address in |m|'s target table (may be NULL).
// Returns 0 with the reason in |err|.
int tg_resolver_start(struct tg_resolver *r, struct tg_metrics *m, tg_dns_publish_fn publish,
                      void *arg, char *err, size_t err_len);

// tg_resolver_stop stops the refresh thread (waits for a query in progress). Safe when it is
// not running.
void tg_resolver_stop(struct tg_resolver *r);

// tg_resolver_metrics appends Prometheus lines: tlsgate_dns_queries_total{result} and
// tlsgate_target_addresses{listener,target}. Returns the length written.
size_t tg_resolver_metrics(struct tg_resolver *r, char *buf, size_t len);

#endif // TLSGATE_RESOLVER_H
