/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Statistics shared by the dstack-bench benchmarks: the timed loop that records one latency
 * sample per operation, merging per-thread samples, the summary of a run (rate, p50, p99),
 * the common {"mode","ops_per_sec","p50_us","p99_us","count"} JSON line, and the --seconds
 * option. The clock and the sample store themselves are in main.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench.h"

int bench_run_timed(double seconds, int (*op)(void *ctx), void *ctx, struct bench_samples *s,
                    double *out_elapsed_s)
{
    uint64_t start = bench_now_ns(), end = start + (uint64_t)(seconds * 1e9), t = start;
    int r = 0;
    while (t < end) {
        r = op(ctx);
        uint64_t t1 = bench_now_ns();
        if (r < 0) {
            break;
        }
        r = bench_samples_add(s, t1 - t);
        if (r < 0) {
            break;
        }
        t = t1;
    }
    *out_elapsed_s = (double)(t - start) / 1e9;
    return r;
}

int bench_samples_merge(struct bench_samples *dst, const struct bench_samples *src)
{
    for (size_t i = 0; i < src->count; i++) {
        int r = bench_samples_add(dst, src->ns[i]);
        if (r < 0) {
            return r;
        }
    }
    return 0;
}

void bench_stats_compute(struct bench_samples *s, double elapsed_s, struct bench_stats *out)
{
    out->count = s->count;
    out->ops_per_sec = elapsed_s > 0 ? (double)s->count / elapsed_s : 0.0;
    out->p50_us = bench_samples_percentile_us(s, 50.0);
    out->p99_us = bench_samples_percentile_us(s, 99.0);
}

void bench_print_mode_line(const char *mode, const struct bench_stats *st)
{
    printf("{\"mode\":\"%s\",\"ops_per_sec\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"count\":%zu}\n",
           mode, st->ops_per_sec, st->p50_us, st->p99_us, st->count);
    fflush(stdout);
}

int bench_parse_seconds(const char *text, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(text, &end);
    if (errno != 0 || end == text || *end != '\0' || !(v > 0.0) || v > BENCH_MAX_SECONDS) {
        return -EINVAL;
    }
    *out = v;
    return 0;
}
