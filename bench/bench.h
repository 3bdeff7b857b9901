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

#endif /* DSTACK_BENCH_H */
