/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-bench`: the benchmark program. main() dispatches through the benchmark table; the
 * shared helpers (monotonic clock, latency samples and percentiles) live here too. Each
 * benchmark is in bench_<name>.c and prints one JSON line per measured mode.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"
#include "log.h"

struct bench_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct bench_cmd bench_cmds[] = {
    {"verify", bench_verify_main, "DCAP quote verification rate, warm and cold caches"},
    {"sim", bench_sim_main,
     "simulated TDX quote generation, in-process and over the device socket"},
    {"agent", bench_agent_main, "guest agent GetKey/GetQuote/Info over its socket vs bare crypto"},
    {"kms", bench_kms_main, "KMS key releases per second over RA-TLS (full, resumed, keepalive)"},
};

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int bench_samples_add(struct bench_samples *s, uint64_t ns)
{
    if (s->count == s->cap) {
        if (s->cap >= BENCH_MAX_SAMPLES) {
            return -E2BIG;
        }
        size_t ncap = s->cap == 0 ? 4096 : s->cap * 2;
        uint64_t *p = realloc(s->ns, ncap * sizeof(*p));
        if (p == NULL) {
            return -ENOMEM;
        }
        s->ns = p;
        s->cap = ncap;
    }
    s->ns[s->count++] = ns;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

double bench_samples_percentile_us(struct bench_samples *s, double pct)
{
    if (s->count == 0) {
        return 0.0;
    }
    qsort(s->ns, s->count, sizeof(*s->ns), cmp_u64);
    /* Nearest-rank percentile. */
    size_t rank = (size_t)((pct / 100.0) * (double)s->count + 0.999999);
    if (rank == 0) {
        rank = 1;
    }
    if (rank > s->count) {
        rank = s->count;
    }
    return (double)s->ns[rank - 1] / 1000.0;
}

void bench_samples_done(struct bench_samples *s)
{
    free(s->ns);
    s->ns = NULL;
    s->count = s->cap = 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack-bench BENCHMARK [OPTIONS]\n\nbenchmarks:\n");
    for (size_t i = 0; i < sizeof(bench_cmds) / sizeof(bench_cmds[0]); i++) {
        fprintf(out, "  %-10s %s\n", bench_cmds[i].name, bench_cmds[i].summary);
    }
    fprintf(out, "\n'dstack-bench BENCHMARK --help' shows its options.\n");
}

int main(int argc, char **argv)
{
    log_init("dstack-bench", 0);
    if (argc < 2) {
        usage(stderr);
        return BENCH_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(stdout);
        return BENCH_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof(bench_cmds) / sizeof(bench_cmds[0]); i++) {
        if (strcmp(argv[1], bench_cmds[i].name) == 0) {
            return bench_cmds[i].run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "dstack-bench: unknown benchmark '%s'\n", argv[1]);
    usage(stderr);
    return BENCH_EXIT_USAGE;
}
