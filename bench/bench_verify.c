/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-bench verify`: how fast libdstack verifies a DCAP quote. Runs ds_verify_quote() in a
 * loop for --seconds, first warm (the verifier keeps its caches of verified chains and
 * collateral, as a long-running verifier service does), then cold (ds_verifier_clear_cache()
 * before every verification, so each one redoes the full chain, CRL and signature work).
 * Prints one JSON line per mode: {"mode","ops_per_sec","p50_us","p99_us","count"}. Any failed
 * verification stops the benchmark with exit 1: a fast wrong answer is not a result.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/attest.h"

#include "bench.h"

#define BENCH_DEFAULT_SECONDS 3.0
#define BENCH_ROOT_MAX        (64 * 1024)
#define BENCH_TIME_MAX        253402300799LL

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack-bench verify --quote FILE --collateral FILE --time UNIX\n"
                 "                           [--seconds N] [--root-ca FILE]\n"
                 "  Verify the quote in a loop for N seconds (default 3) per mode and print\n"
                 "  one JSON line for the warm and one for the cold mode.\n");
}

static int parse_time(const char *s, int64_t *out)
{
    int64_t v = 0;
    if (*s == '\0') {
        return -1;
    }
    for (; *s != '\0'; s++) {
        if (*s < '0' || *s > '9') {
            return -1;
        }
        v = v * 10 + (*s - '0');
        if (v > BENCH_TIME_MAX) {
            return -1;
        }
    }
    *out = v;
    return 0;
}

/* DER bytes of a root given as DER or PEM (first CERTIFICATE block). */
static int load_root(const char *path, uint8_t **out, size_t *out_len)
{
    static const char begin[] = "-----BEGIN CERTIFICATE-----";
    static const char end[] = "-----END CERTIFICATE-----";
    uint8_t *raw = NULL;
    size_t len = 0;
    int rc = ds_read_file(path, BENCH_ROOT_MAX, &raw, &len);
    if (rc < 0) {
        return rc;
    }
    const char *b = memmem(raw, len, begin, sizeof(begin) - 1);
    if (b == NULL) {
        *out = raw;
        *out_len = len;
        return 0;
    }
    b += sizeof(begin) - 1;
    const char *e = memmem(b, len - (size_t)(b - (const char *)raw), end, sizeof(end) - 1);
    if (e == NULL) {
        free(raw);
        return -DS_E_FORMAT;
    }
    char *b64 = malloc((size_t)(e - b) + 1);
    size_t m = 0;
    if (b64 == NULL) {
        free(raw);
        return -ENOMEM;
    }
    for (const char *p = b; p < e; p++) {
        if (!isspace((unsigned char)*p)) {
            b64[m++] = *p;
        }
    }
    rc = ds_base64_decode(b64, m, BENCH_ROOT_MAX, out, out_len);
    free(b64);
    free(raw);
    return rc < 0 ? rc : 0;
}

struct bench_input {
    uint8_t *quote;
    size_t quote_len;
    struct ds_collateral *coll;
    int64_t now;
};

/* One verification; on failure prints why and returns -1. */
static int verify_once(struct ds_verifier *v, const struct bench_input *in, uint64_t *ns)
{
    struct ds_verify_result res;
    memset(&res, 0, sizeof(res));
    uint64_t t0 = bench_now_ns();
    int rc = ds_verify_quote(v, in->quote, in->quote_len, in->coll, in->now, &res);
    uint64_t t1 = bench_now_ns();
    bool ok = rc == 0 && res.ok;
    if (!ok) {
        fprintf(stderr, "dstack-bench: verification failed at step %s: %s\n",
                ds_verify_step_name(res.failed_step),
                res.message[0] != '\0' ? res.message : ds_strerror(rc));
    }
    ds_verify_result_done(&res);
    *ns = t1 - t0;
    return ok ? 0 : -1;
}

static int run_mode(struct ds_verifier *v, const struct bench_input *in, bool cold, double seconds)
{
    struct bench_samples s = {0};
    uint64_t budget = (uint64_t)(seconds * 1e9);
    uint64_t start = bench_now_ns(), elapsed = 0;
    int rc = BENCH_EXIT_FAIL;
    do {
        uint64_t ns = 0;
        if (cold) {
            ds_verifier_clear_cache(v);
        }
        if (verify_once(v, in, &ns) != 0) {
            goto out;
        }
        if (bench_samples_add(&s, ns) != 0) {
            fprintf(stderr, "dstack-bench: too many samples; use fewer --seconds\n");
            goto out;
        }
        elapsed = bench_now_ns() - start;
    } while (elapsed < budget);
    struct bench_stats st;
    bench_stats_compute(&s, (double)elapsed / 1e9, &st);
    bench_print_mode_line(cold ? "cold" : "warm", &st);
    rc = BENCH_EXIT_OK;
out:
    bench_samples_done(&s);
    return rc;
}

int bench_verify_main(int argc, char **argv)
{
    const char *quote_path = NULL, *coll_path = NULL, *time_str = NULL, *root_path = NULL;
    double seconds = BENCH_DEFAULT_SECONDS;
    struct bench_input in = {0};
    struct ds_verifier *v = NULL;
    uint8_t *root = NULL, *json = NULL;
    size_t root_len = 0, json_len = 0;
    char err[256] = "";
    int rc = BENCH_EXIT_USAGE;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        const char **slot = NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return BENCH_EXIT_OK;
        } else if (strcmp(a, "--quote") == 0) {
            slot = &quote_path;
        } else if (strcmp(a, "--collateral") == 0) {
            slot = &coll_path;
        } else if (strcmp(a, "--time") == 0) {
            slot = &time_str;
        } else if (strcmp(a, "--root-ca") == 0) {
            slot = &root_path;
        } else if (strcmp(a, "--seconds") == 0) {
            if (i + 1 >= argc) {
                fprintf(stderr, "dstack-bench verify: --seconds: expected a number\n");
                return BENCH_EXIT_USAGE;
            }
            if (bench_parse_seconds(argv[++i], &seconds) < 0) {
                fprintf(stderr,
                        "dstack-bench verify: --seconds: expected a number in (0, %.0f], got "
                        "'%s'\n",
                        BENCH_MAX_SECONDS, argv[i]);
                return BENCH_EXIT_USAGE;
            }
            continue;
        } else {
            fprintf(stderr, "dstack-bench verify: unknown argument '%s'\n", a);
            usage(stderr);
            return BENCH_EXIT_USAGE;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "dstack-bench verify: %s: expected a value\n", a);
            return BENCH_EXIT_USAGE;
        }
        *slot = argv[++i];
    }
    if (quote_path == NULL || coll_path == NULL || time_str == NULL) {
        fprintf(stderr, "dstack-bench verify: --quote, --collateral and --time are required\n");
        usage(stderr);
        return BENCH_EXIT_USAGE;
    }
    if (parse_time(time_str, &in.now) != 0) {
        fprintf(stderr, "dstack-bench verify: --time: expected unix seconds, got '%s'\n", time_str);
        return BENCH_EXIT_USAGE;
    }
    int r = ds_read_file(quote_path, DS_QUOTE_MAX_SIZE, &in.quote, &in.quote_len);
    if (r < 0) {
        fprintf(stderr, "dstack-bench verify: cannot read quote file '%s': %s\n", quote_path,
                ds_strerror(r));
        goto out;
    }
    r = ds_read_file(coll_path, DS_COLLATERAL_MAX_JSON, &json, &json_len);
    if (r < 0) {
        fprintf(stderr, "dstack-bench verify: cannot read collateral file '%s': %s\n", coll_path,
                ds_strerror(r));
        goto out;
    }
    r = ds_collateral_from_json((const char *)json, json_len, &in.coll, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "dstack-bench verify: collateral file '%s': %s\n", coll_path,
                err[0] != '\0' ? err : ds_strerror(r));
        goto out;
    }
    if (root_path != NULL) {
        r = load_root(root_path, &root, &root_len);
        if (r < 0) {
            fprintf(stderr, "dstack-bench verify: --root-ca: cannot load '%s': %s\n", root_path,
                    ds_strerror(r));
            goto out;
        }
    }
    r = ds_verifier_new(root, root_len, &v);
    if (r < 0) {
        fprintf(stderr, "dstack-bench verify: cannot create the verifier: %s\n", ds_strerror(r));
        goto out;
    }
    /* One verification outside the measurement: checks the inputs before anything is timed and
     * fills the caches, so the warm loop measures only warm verifications. */
    uint64_t first_ns = 0;
    if (verify_once(v, &in, &first_ns) != 0) {
        rc = BENCH_EXIT_FAIL;
        goto out;
    }
    rc = run_mode(v, &in, false, seconds);
    if (rc != BENCH_EXIT_OK) {
        goto out;
    }
    rc = run_mode(v, &in, true, seconds);
out:
    ds_verifier_free(v);
    ds_collateral_free(in.coll);
    free(in.quote);
    free(json);
    free(root);
    return rc;
}
