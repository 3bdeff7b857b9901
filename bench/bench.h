/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interface of `dstack-bench`, the benchmark program: one entry point per benchmark,
 * dispatched from the table in bench/main.c, plus small shared helpers (a monotonic clock and
 * latency statistics). Benchmarks print JSON lines on stdout so scripts can compare runs.
 */
#ifndef DSTACK_BENCH_H
#define DSTACK_BENCH_H

#include <stddef.h>
#include <stdint.h>

/* Exit codes: 0 ok, 1 a benchmarked operation failed, 2 usage or input error. */
#define BENCH_EXIT_OK    0
#define BENCH_EXIT_FAIL  1
#define BENCH_EXIT_USAGE 2

/* `dstack-bench verify`: DCAP quote verification, warm and cold caches (bench_verify.c). */
int bench_verify_main(int argc, char **argv);
/* `dstack-bench sim`: simulator benchmarks (bench_sim.c). */
int bench_sim_main(int argc, char **argv);
/* `dstack-bench agent`: guest agent API throughput and latency (bench_agent.c). */
int bench_agent_main(int argc, char **argv);
/* `dstack-bench kms`: KMS GetAppKey releases over RA-TLS (bench_kms.c). */
int bench_kms_main(int argc, char **argv);

/* Monotonic time in nanoseconds. */
uint64_t bench_now_ns(void);

/* Latency samples (nanoseconds) with a hard maximum count. */
#define BENCH_MAX_SAMPLES (16 * 1024 * 1024)

struct bench_samples {
    uint64_t *ns;
    size_t count;
    size_t cap;
};

/* Append one sample; returns 0 or -ENOMEM / -E2BIG (limit reached). */
int bench_samples_add(struct bench_samples *s, uint64_t ns);
/* Percentile (0..100) in microseconds; sorts the samples in place. 0 when empty. */
double bench_samples_percentile_us(struct bench_samples *s, double pct);
void bench_samples_done(struct bench_samples *s);

/* ---- statistics (bench_stats.c) ---------------------------------------------------------------
 */

/* Upper bound of --seconds, for every benchmark. */
#define BENCH_MAX_SECONDS 3600.0

/* Summary of one measured run. */
struct bench_stats {
    size_t count;       /* samples */
    double ops_per_sec; /* count / elapsed, 0 when nothing elapsed */
    double p50_us;
    double p99_us;
};

/*
 * Call op(ctx) back to back until `seconds` have passed, adding one sample per successful
 * call: the time from the end of the previous call to the end of this one. Stops at the
 * first failure. *out_elapsed_s is the time from the start to the end of the last recorded
 * call. Returns 0, op's negative result, or bench_samples_add()'s (-ENOMEM, -E2BIG).
 */
int bench_run_timed(double seconds, int (*op)(void *ctx), void *ctx, struct bench_samples *s,
                    double *out_elapsed_s);
/* Append all of src's samples to dst. Returns 0 or bench_samples_add()'s error. */
int bench_samples_merge(struct bench_samples *dst, const struct bench_samples *src);
/* Rate and percentiles of s over elapsed_s seconds (sorts the samples in place). */
void bench_stats_compute(struct bench_samples *s, double elapsed_s, struct bench_stats *out);
/* Print {"mode","ops_per_sec","p50_us","p99_us","count"} as one line on stdout and flush. */
void bench_print_mode_line(const char *mode, const struct bench_stats *st);
/* Parse a --seconds value: a number in (0, BENCH_MAX_SECONDS]. Returns 0 or -EINVAL. */
int bench_parse_seconds(const char *text, double *out);

#endif /* DSTACK_BENCH_H */
