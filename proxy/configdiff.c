// Differences between two configurations: what a reload cannot apply (see tg_config_diff in
// include/tlsgate/config.h). Pure: parsed values in, key names out.
#include "tlsgate/config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

struct tg_diff {
    char (*names)[TG_CONFIG_DIFF_NAME_MAX];
    size_t max_names;
    size_t num; // differences found, written or not
};

static void tg_diff_add(struct tg_diff *d, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void tg_diff_add(struct tg_diff *d, const char *fmt, ...) {
    if (d->num < d->max_names) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(d->names[d->num], TG_CONFIG_DIFF_NAME_MAX, fmt, ap);
        va_end(ap);
    }
    d->num++;
}

// tg_same_sockaddr compares two numeric addresses: family, address and port.
static int tg_same_sockaddr(const struct tg_target *a, const struct tg_target *b) {
    return tg_listen_overlap(a, b) == TG_OVERLAP_SAME;
}

// tg_numeric_host parses |host| as a numeric IPv4 or IPv6 address into |out| (16 bytes) and
// returns its family, or AF_UNSPEC for a DNS name.
static int tg_numeric_host(const char *host, uint8_t out[16]) {
    if (inet_pton(AF_INET, host, out) == 1)
        return AF_INET;
    if (inet_pton(AF_INET6, host, out) == 1)
        return AF_INET6;
    return AF_UNSPEC;
}

// tg_same_target compares two targets as configured, without resolving anything: the port, the
// name the peer must carry, and the host as an address when both are numeric, else as a DNS
// name (case-insensitive).
// A target of the configuration in service may have been resolved; its name still counts.
static int tg_same_target(const struct tg_target *a, const struct tg_target *b) {
    if (a->port != b->port || a->srv != b->srv || strcmp(a->expect_name, b->expect_name) != 0)
        return 0;
    uint8_t a_addr[16] = {0}, b_addr[16] = {0};
    int a_family = tg_numeric_host(a->host, a_addr);
    int b_family = tg_numeric_host(b->host, b_addr);
    if (a_family != b_family)
        return 0;
    if (a_family == AF_UNSPEC)
        return strcasecmp(a->host, b->host) == 0;
    return memcmp(a_addr, b_addr, a_family == AF_INET ? 4 : 16) == 0;
}

static int tg_same_cidr(const struct tg_cidr *a, const struct tg_cidr *b) {
    return a->family == b->family && a->prefix == b->prefix &&
           memcmp(a->addr, b->addr, a->family == AF_INET ? 4 : 16) == 0;
}

// tg_same_allow compares the [admin] allow lists as sets.
static int tg_same_allow(const struct tg_config *a, const struct tg_config *b) {
    if (a->num_admin_allow != b->num_admin_allow)
        return 0;
    for (size_t i = 0; i < a->num_admin_allow; i++) {
        size_t j = 0;
        while (j < b->num_admin_allow && !tg_same_cidr(&a->admin_allow[i], &b->admin_allow[j]))
            j++;
        if (j == b->num_admin_allow)
            return 0;
    }
    return 1;
}

// tg_same_hosts compares the [admin] hosts lists as sets of names (case-insensitive).
static int tg_same_hosts(const struct tg_config *a, const struct tg_config *b) {
    if (a->num_admin_hosts != b->num_admin_hosts)
        return 0;
    for (size_t i = 0; i < a->num_admin_hosts; i++) {
        size_t j = 0;
        while (j < b->num_admin_hosts && strcasecmp(a->admin_hosts[i], b->admin_hosts[j]) != 0)
            j++;
        if (j == b->num_admin_hosts)
            return 0;
    }
    return 1;
}

static void tg_diff_global(struct tg_diff *d, const struct tg_config *a,
                           const struct tg_config *b) {
    static const struct {
        const char *name;
        size_t off;
    } k_u32[] = {
        {"max_connections", offsetof(struct tg_config, max_connections)},
        {"drain_timeout_ms", offsetof(struct tg_config, drain_timeout_ms)},
        {"buffer_size", offsetof(struct tg_config, buffer_size)},
        {"max_handshakes", offsetof(struct tg_config, max_handshakes)},
        {"max_handshakes_per_source", offsetof(struct tg_config, max_handshakes_per_source)},
        {"new_connections_per_source", offsetof(struct tg_config, new_connections_per_source)},
    };
    if (a->workers != b->workers)
        tg_diff_add(d, "global.workers");
    if (a->signers != b->signers)
        tg_diff_add(d, "tls.signers");
    for (size_t i = 0; i < sizeof(k_u32) / sizeof(k_u32[0]); i++) {
        uint32_t va, vb;
        memcpy(&va, (const char *)a + k_u32[i].off, sizeof(va));
        memcpy(&vb, (const char *)b + k_u32[i].off, sizeof(vb));
        if (va != vb)
            tg_diff_add(d, "global.%s", k_u32[i].name);
    }
    if (a->log_level != b->log_level)
        tg_diff_add(d, "global.log_level");
    if (strcmp(a->user, b->user) != 0)
        tg_diff_add(d, "global.user");
    int same_ns = a->num_resolvers == b->num_resolvers; // in order: the first is asked first
    for (size_t i = 0; same_ns && i < a->num_resolvers; i++)
        same_ns = tg_same_target(&a->resolvers[i], &b->resolvers[i]);
    if (!same_ns)
        tg_diff_add(d, "global.resolvers");
}

static void tg_diff_admin(struct tg_diff *d, const struct tg_config *a, const struct tg_config *b) {
    if (a->admin_enabled != b->admin_enabled)
        tg_diff_add(d, "admin.enabled");
    if (!tg_same_sockaddr(&a->admin_listen, &b->admin_listen))
        tg_diff_add(d, "admin.listen");
    if (!tg_same_allow(a, b))
        tg_diff_add(d, "admin.allow");
    if (!tg_same_hosts(a, b))
        tg_diff_add(d, "admin.hosts");
    if (strcmp(a->admin_token_file, b->admin_token_file) != 0)
        tg_diff_add(d, "admin.token_file");
}

// tg_diff_tls names the [tls] keys that the workers read from the configuration in service
// rather than from the generation a reload builds.
static void tg_diff_tls(struct tg_diff *d, const struct tg_config *a, const struct tg_config *b) {
    if (strcmp(a->fqdn, b->fqdn) != 0)
        tg_diff_add(d, "tls.fqdn");
    if (a->handshake_timeout_ms != b->handshake_timeout_ms)
        tg_diff_add(d, "tls.handshake_timeout_ms");
    if (a->idle_timeout_ms != b->idle_timeout_ms)
        tg_diff_add(d, "tls.idle_timeout_ms");
}

static const struct tg_listener_conf *tg_find_listener(const struct tg_config *cfg,
                                                       const struct tg_listener_conf *l) {
    for (size_t i = 0; i < cfg->num_listeners; i++) {
        const struct tg_listener_conf *o = &cfg->listeners[i];
        if (o->direction == l->direction && strcmp(o->name, l->name) == 0)
            return o;
    }
    return NULL;
}

static int tg_same_targets(const struct tg_listener_conf *a, const struct tg_listener_conf *b) {
    if (a->num_targets != b->num_targets)
        return 0;
    for (size_t i = 0; i < a->num_targets; i++) {
        if (!tg_same_target(&a->targets[i], &b->targets[i]))
            return 0;
    }
    return 1;
}

// tg_diff_listener names the keys of one listener (present in both) that differ.
static void tg_diff_listener(struct tg_diff *d, const struct tg_listener_conf *a,
                             const struct tg_listener_conf *b) {
    static const struct {
        const char *name;
        size_t off;
        int outbound_only;
    } k_u32[] = {
        {"keepalive_interval_ms", offsetof(struct tg_listener_conf, keepalive_interval_ms), 0},
        {"options_interval_s", offsetof(struct tg_listener_conf, options_interval_s), 1},
        {"options_failures", offsetof(struct tg_listener_conf, options_failures), 1},
        {"sip_max_message", offsetof(struct tg_listener_conf, sip_max_message), 0},
        {"max_connections", offsetof(struct tg_listener_conf, max_connections), 0},
    };
    const char *dir = tg_direction_word(a->direction);
    if (!tg_same_sockaddr(&a->listen, &b->listen))
        tg_diff_add(d, "%s %s.listen", dir, a->name);
    if (!tg_same_targets(a, b))
        tg_diff_add(d, "%s %s.%s", dir, a->name,
                    a->direction == TG_INBOUND ? "forward" : "connect");
    if (a->mode != b->mode)
        tg_diff_add(d, "%s %s.mode", dir, a->name);
    for (size_t i = 0; i < sizeof(k_u32) / sizeof(k_u32[0]); i++) {
        uint32_t va, vb;
        memcpy(&va, (const char *)a + k_u32[i].off, sizeof(va));
        memcpy(&vb, (const char *)b + k_u32[i].off, sizeof(vb));
        if (va != vb && (!k_u32[i].outbound_only || a->direction == TG_OUTBOUND))
            tg_diff_add(d, "%s %s.%s", dir, a->name, k_u32[i].name);
    }
}

// tg_diff_listeners names listeners removed, changed and added, and a new order of those in
// both (the first inbound sip listener gives outbound sip mode its port).
static void tg_diff_listeners(struct tg_diff *d, const struct tg_config *a,
                              const struct tg_config *b) {
    for (size_t i = 0; i < a->num_listeners; i++) {
        const struct tg_listener_conf *l = &a->listeners[i];
        const struct tg_listener_conf *o = tg_find_listener(b, l);
        if (o == NULL)
            tg_diff_add(d, "%s %s (removed)", tg_direction_word(l->direction), l->name);
        else
            tg_diff_listener(d, l, o);
    }
    for (size_t i = 0; i < b->num_listeners; i++) {
        const struct tg_listener_conf *l = &b->listeners[i];
        if (tg_find_listener(a, l) == NULL)
            tg_diff_add(d, "%s %s (added)", tg_direction_word(l->direction), l->name);
    }
    // Walk the listeners present in both, in each file's order: any mismatch is a new order.
    size_t j = 0;
    for (size_t i = 0; i < a->num_listeners; i++) {
        const struct tg_listener_conf *l = &a->listeners[i];
        if (tg_find_listener(b, l) == NULL)
            continue;
        while (j < b->num_listeners && tg_find_listener(a, &b->listeners[j]) == NULL)
            j++;
        if (j == b->num_listeners || b->listeners[j].direction != l->direction ||
            strcmp(b->listeners[j].name, l->name) != 0) {
            tg_diff_add(d, "listeners (order)");
            return;
        }
        j++;
    }
}

// tg_diff_media names the [media] keys that differ: the workers set up their media state
// (sockets, port slices) at start, so none of them is applied by a reload.
static void tg_diff_media(struct tg_diff *d, const struct tg_config *a, const struct tg_config *b) {
    if (a->media_enabled != b->media_enabled) {
        tg_diff_add(d, "media (%s)", b->media_enabled ? "added" : "removed");
        return;
    }
    if (!a->media_enabled)
        return;
    if (strcmp(a->media_public, b->media_public) != 0)
        tg_diff_add(d, "media.public_address");
    if (strcmp(a->media_internal, b->media_internal) != 0)
        tg_diff_add(d, "media.internal_address");
    if (a->media_port_min != b->media_port_min || a->media_port_max != b->media_port_max)
        tg_diff_add(d, "media.port_range");
    if (a->media_num_suites != b->media_num_suites ||
        memcmp(a->media_suites, b->media_suites, a->media_num_suites) != 0)
        tg_diff_add(d, "media.srtp_suites");
    if (a->media_timeout_s != b->media_timeout_s)
        tg_diff_add(d, "media.timeout_s");
    if (a->media_max_calls != b->media_max_calls)
        tg_diff_add(d, "media.max_calls");
}

size_t tg_config_diff(const struct tg_config *cur, const struct tg_config *next,
                      char out_names[][TG_CONFIG_DIFF_NAME_MAX], size_t max_names) {
    struct tg_diff d = {.names = out_names, .max_names = out_names != NULL ? max_names : 0};
    tg_diff_global(&d, cur, next);
    tg_diff_admin(&d, cur, next);
    tg_diff_tls(&d, cur, next);
    tg_diff_listeners(&d, cur, next);
    tg_diff_media(&d, cur, next);
    return d.num;
}
