// The latency histogram: HDR-style log-linear buckets (see load.h).
#include <math.h>
#include <stddef.h>

#include "load.h"

#define SUB_COUNT (1u << LG_HIST_SUB_BITS)        // exact values below this
#define HALF_COUNT (1u << (LG_HIST_SUB_BITS - 1)) // linear buckets per power of two above

static uint32_t bucket_of(uint64_t v) {
    if (v < SUB_COUNT)
        return (uint32_t)v;
    unsigned k = 63u - (unsigned)__builtin_clzll(v); // v in [2^k, 2^(k+1)), k >= SUB_BITS
    if (k >= LG_HIST_MAX_BITS)
        return LG_HIST_NUM_BUCKETS - 1;
    uint32_t sub = (uint32_t)(v >> (k - (LG_HIST_SUB_BITS - 1))) - HALF_COUNT;
    return SUB_COUNT + (k - LG_HIST_SUB_BITS) * HALF_COUNT + sub;
}

static uint64_t bucket_highest(uint32_t idx) {
    if (idx < SUB_COUNT)
        return idx;
    uint32_t j = idx - SUB_COUNT;
    unsigned shift = j / HALF_COUNT + 1; // k - (SUB_BITS - 1)
    uint64_t lowest = (uint64_t)(HALF_COUNT + j % HALF_COUNT) << shift;
    return lowest + ((uint64_t)1 << shift) - 1;
}

void lg_hist_record(struct lg_hist *h, uint64_t ns) {
    h->counts[bucket_of(ns)]++;
    h->total++;
    if (ns > h->max)
        h->max = ns;
}

void lg_hist_merge(struct lg_hist *h, const struct lg_hist *from) {
    for (size_t i = 0; i < LG_HIST_NUM_BUCKETS; i++)
        h->counts[i] += from->counts[i];
    h->total += from->total;
    if (from->max > h->max)
        h->max = from->max;
}

uint64_t lg_hist_percentile(const struct lg_hist *h, double pct) {
    if (h->total == 0)
        return 0;
    double r = ceil(pct / 100.0 * (double)h->total);
    uint64_t rank = r < 1.0 ? 1 : (uint64_t)r;
    if (rank > h->total)
        rank = h->total;
    uint64_t seen = 0;
    for (uint32_t i = 0; i < LG_HIST_NUM_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = bucket_highest(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}
