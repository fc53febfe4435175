// libFuzzer harness for the DNS answer parser: any bytes must give either records whose names
// are host names of at most 255 bytes and whose addresses match their types, or a refusal with
// a reason and no record. What a message yields then goes through the CNAME chain, the
// address and SRV collection and the SRV ordering, as the resolver would use it.
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "tlsgate/dnsmsg.h"

static uint32_t fixed_rand(void *arg) {
    uint32_t *state = arg;
    *state = *state * 1103515245u + 12345u;
    return *state >> 8;
}

static void check_name(const char *name) {
    size_t len = strnlen(name, TG_HOST_MAX);
    if (len > 255)
        __builtin_trap();
    for (size_t i = 0; i < len; i++)
        if (!tg_is_name_char(name[i]))
            __builtin_trap();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static struct tg_dns_answer ans;
    char why[128];
    why[0] = '\0';
    if (!tg_dns_parse(&ans, data, size, why, sizeof(why))) {
        if (why[0] == '\0' || ans.num_rr != 0)
            __builtin_trap();
        return 0;
    }
    if (ans.num_rr > TG_DNS_MAX_RR)
        __builtin_trap();
    for (size_t i = 0; i < ans.num_rr; i++) {
        const struct tg_dns_rr *rr = &ans.rr[i];
        check_name(rr->owner);
        if (rr->type == TG_DNS_A && rr->addr.family != AF_INET)
            __builtin_trap();
        if (rr->type == TG_DNS_AAAA && rr->addr.family != AF_INET6)
            __builtin_trap();
        if (rr->type == TG_DNS_SRV || rr->type == TG_DNS_CNAME)
            check_name(rr->srv.target);
    }
    // Ask for the first record's owner, as the resolver asks for the name it queried.
    const char *qname = ans.num_rr > 0 ? ans.rr[0].owner : "x";
    struct tg_dns_addr addrs[TG_DNS_MAX_ADDRS];
    struct tg_dns_srv srv[TG_DNS_MAX_SRV];
    uint32_t ttl = 0, state = (uint32_t)size;
    if (tg_dns_collect_addrs(&ans, qname, TG_DNS_A, addrs, TG_DNS_MAX_ADDRS, &ttl) >
        TG_DNS_MAX_ADDRS)
        __builtin_trap();
    tg_dns_collect_addrs(&ans, qname, TG_DNS_AAAA, addrs, TG_DNS_MAX_ADDRS, &ttl);
    size_t n = tg_dns_collect_srv(&ans, qname, srv, TG_DNS_MAX_SRV, &ttl);
    if (n > TG_DNS_MAX_SRV)
        __builtin_trap();
    tg_dns_srv_order(srv, n, fixed_rand, &state);
    for (size_t i = 1; i < n; i++)
        if (srv[i].priority < srv[i - 1].priority)
            __builtin_trap();
    return 0;
}
