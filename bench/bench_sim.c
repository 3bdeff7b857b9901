/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-bench sim`: how fast the simulated TDX module produces quotes.
 *   1. in-process: ds_sim_quote() in a loop (signing cost of a quote: QE report + quote),
 *   2. device socket: the round trip of a get_quote request over a dstack-tee-sim device
 *      socket through the public TEE API (ds_tee_open("sim:...")), against a simulator given
 *      with --socket or one this benchmark starts itself in a temporary state dir.
 * Prints one JSON line per mode: ops_per_sec, p50_us, p99_us, count.
 */
#define _XOPEN_SOURCE 700
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "dstack/sim.h"
#include "dstack/tee.h"
#include "tee/tee_proto.h"

#define SIM_BENCH_DEFAULT_SECONDS 3.0
#define SIM_BENCH_STARTUP_MS      10000
#define SIM_BENCH_SEED_HEX        "0101010101010101010101010101010101010101010101010101010101010101"

struct sim_bench_daemon {
    pid_t pid;
    char dir[PATH_MAX];
    char socket[PATH_MAX];
};

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack-bench sim [--seconds N] [--socket PATH] [--tee-sim BINARY]\n"
                 "  --socket PATH   measure against this device socket instead of starting a\n"
                 "                  dstack-tee-sim (default: the one next to dstack-bench)\n");
}

static void print_result(const char *mode, struct bench_samples *s, double elapsed_s)
{
    struct bench_stats st;
    bench_stats_compute(s, elapsed_s, &st);
    bench_print_mode_line(mode, &st);
}

struct inprocess_ctx {
    const struct ds_sim_pki *pki;
    const struct ds_sim_td *td;
    const struct ds_sim_quote_opts *opts;
    uint8_t rd[64];
};

static int inprocess_quote(void *arg)
{
    struct inprocess_ctx *c = arg;
    uint8_t *q = NULL;
    size_t len = 0;
    c->rd[0]++;
    int r = ds_sim_quote(c->pki, c->td, c->rd, c->opts, &q, &len);
    free(q);
    return r;
}

static int bench_inprocess(double seconds)
{
    uint8_t seed[DS_SIM_SEED_LEN];
    memset(seed, 1, sizeof(seed));
    struct ds_sim_pki *pki = NULL;
    int r = ds_sim_pki_new(seed, &pki);
    if (r < 0) {
        fprintf(stderr, "dstack-bench sim: mock PKI: %s\n", ds_strerror(r));
        return BENCH_EXIT_FAIL;
    }
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    struct ds_sim_quote_opts opts = {.version = 4};
    struct inprocess_ctx ctx = {.pki = pki, .td = &td, .opts = &opts};
    struct bench_samples s = {0};
    double elapsed = 0;
    r = bench_run_timed(seconds, inprocess_quote, &ctx, &s, &elapsed);
    if (r < 0) {
        fprintf(stderr, "dstack-bench sim: quote failed: %s\n", ds_strerror(r));
    } else {
        print_result("sim_quote_inprocess", &s, elapsed);
    }
    bench_samples_done(&s);
    ds_sim_pki_free(pki);
    return r == 0 ? BENCH_EXIT_OK : BENCH_EXIT_FAIL;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static void stop_daemon(struct sim_bench_daemon *d)
{
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
    if (d->dir[0]) {
        nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
        d->dir[0] = '\0';
    }
}

/* dstack-tee-sim next to our own executable. */
static int default_tee_sim(char *out, size_t size)
{
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n < 0) {
        return -errno;
    }
    self[n] = '\0';
    int w = snprintf(out, size, "%s/dstack-tee-sim", dirname(self));
    return (w < 0 || (size_t)w >= size) ? -ENAMETOOLONG : 0;
}

static int start_daemon(const char *binary, struct sim_bench_daemon *d)
{
    snprintf(d->dir, sizeof(d->dir), "%s/dstack-bench-sim.XXXXXX",
             getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(d->dir)) {
        d->dir[0] = '\0';
        return -errno;
    }
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDERR_FILENO);
            dup2(devnull, STDOUT_FILENO);
        }
        execl(binary, binary, "serve", "--seed", SIM_BENCH_SEED_HEX, "--state-dir", d->dir,
              (char *)NULL);
        _exit(127);
    }
    d->pid = pid;
    char control[PATH_MAX + 16];
    snprintf(control, sizeof(control), "%s/control.sock", d->dir);
    json_t *req = json_pack("{s:s,s:s}", "op", "create_td", "name", "bench"), *resp = NULL;
    int r = -ETIMEDOUT;
    char err[256] = "";
    for (int waited = 0; waited < SIM_BENCH_STARTUP_MS; waited += 20) {
        if (access(control, F_OK) == 0) {
            r = ds_tee_proto_call(control, req, DS_TEE_PROTO_MAX_RESPONSE, 10000, &resp, err,
                                  sizeof(err));
            break;
        }
        if (waitpid(pid, NULL, WNOHANG) == pid) {
            d->pid = 0;
            r = -ECHILD;
            break;
        }
        struct timespec ts = {.tv_nsec = 20 * 1000000L};
        nanosleep(&ts, NULL);
    }
    json_decref(req);
    const char *sock = json_string_value(json_object_get(resp, "socket"));
    if (r == 0 && (!sock || strlen(sock) >= sizeof(d->socket))) {
        r = -DS_E_FORMAT;
    }
    if (r == 0) {
        memcpy(d->socket, sock, strlen(sock) + 1);
    } else if (err[0]) {
        fprintf(stderr, "dstack-bench sim: create_td: %s\n", err);
    }
    json_decref(resp);
    return r;
}

struct socket_ctx {
    struct ds_tee *tee;
    uint8_t rd[DS_TEE_REPORT_DATA_SIZE];
};

static int socket_quote(void *arg)
{
    struct socket_ctx *c = arg;
    uint8_t *q = NULL;
    size_t len = 0;
    c->rd[1]++;
    int r = ds_tee_get_quote(c->tee, c->rd, &q, &len);
    free(q);
    return r;
}

static int bench_socket(const char *socket, double seconds)
{
    char spec[PATH_MAX + 8], err[256] = "";
    snprintf(spec, sizeof(spec), "sim:%s", socket);
    struct ds_tee *t = NULL;
    int r = ds_tee_open(spec, &t, err, sizeof(err));
    if (r < 0) {
        fprintf(stderr, "dstack-bench sim: %s\n", err[0] ? err : ds_strerror(r));
        return BENCH_EXIT_FAIL;
    }
    struct socket_ctx ctx = {.tee = t};
    struct bench_samples s = {0};
    double elapsed = 0;
    r = bench_run_timed(seconds, socket_quote, &ctx, &s, &elapsed);
    if (r < 0) {
        fprintf(stderr, "dstack-bench sim: quote over the socket failed: %s\n", ds_strerror(r));
    } else {
        print_result("sim_quote_device_socket", &s, elapsed);
    }
    bench_samples_done(&s);
    ds_tee_close(t);
    return r == 0 ? BENCH_EXIT_OK : BENCH_EXIT_FAIL;
}

int bench_sim_main(int argc, char **argv)
{
    double seconds = SIM_BENCH_DEFAULT_SECONDS;
    const char *socket = NULL, *binary = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return BENCH_EXIT_OK;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "dstack-bench sim: unknown argument or missing value: '%s'\n", a);
            usage(stderr);
            return BENCH_EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--seconds") == 0) {
            if (bench_parse_seconds(v, &seconds) < 0) {
                fprintf(stderr, "dstack-bench sim: --seconds: expected 0 < N <= 3600\n");
                return BENCH_EXIT_USAGE;
            }
        } else if (strcmp(a, "--socket") == 0) {
            socket = v;
        } else if (strcmp(a, "--tee-sim") == 0) {
            binary = v;
        } else {
            fprintf(stderr, "dstack-bench sim: unknown argument '%s'\n", a);
            usage(stderr);
            return BENCH_EXIT_USAGE;
        }
    }
    int rc = bench_inprocess(seconds);
    if (rc != BENCH_EXIT_OK) {
        return rc;
    }
    if (socket) {
        return bench_socket(socket, seconds);
    }
    char bin[PATH_MAX];
    if (!binary) {
        if (default_tee_sim(bin, sizeof(bin)) < 0) {
            fprintf(stderr, "dstack-bench sim: cannot locate dstack-tee-sim; use --tee-sim\n");
            return BENCH_EXIT_USAGE;
        }
        binary = bin;
    }
    struct sim_bench_daemon d = {0};
    int r = start_daemon(binary, &d);
    if (r < 0) {
        fprintf(stderr, "dstack-bench sim: cannot start %s: %s\n", binary, ds_strerror(r));
        stop_daemon(&d);
        return BENCH_EXIT_FAIL;
    }
    rc = bench_socket(d.socket, seconds);
    stop_daemon(&d);
    return rc;
}
