/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-bench agent`: throughput and latency of the guest agent's app API over its Unix
 * socket, for GetKey, GetQuote and Info, with 1 and 16 (--clients) concurrent clients. Each
 * client is a thread with ONE persistent HTTP/1.1 keep-alive connection (it reconnects only if
 * the agent closes it, and counts that). Beside it, the same run measures the bare
 * cryptography of one GetKey done in-process with lib/crypto (HKDF-SHA256 derive, secp256k1
 * public key, Keccak-256, recoverable signature by the app root key), so the report shows
 * what the server adds around the cryptography: ratio = server p50 (1 client) / bare p50.
 * Prints one JSON line per measurement.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "bench.h"
#include "dstack/base.h"
#include "dstack/crypto.h"

#define AGENT_BENCH_DEFAULT_SECONDS 3.0
#define AGENT_BENCH_MAX_CLIENTS     256
#define AGENT_BENCH_MAX_CLIENT_SETS 8
#define AGENT_BENCH_RESPONSE_MAX    (8u * 1024u * 1024u)
#define AGENT_BENCH_REQUEST_MAX     1024

struct agent_op {
    const char *method;
    const char *body;
};

static const struct agent_op agent_ops[] = {
    {"GetKey", "{\"path\":\"bench/key\",\"purpose\":\"bench\",\"algorithm\":\"secp256k1\"}"},
    {"GetQuote", "{\"report_data\":\"00112233445566778899aabbccddeeff00112233445566778899aabbcc"
                 "ddeeff00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\"}"},
    {"Info", "{}"},
};

struct agent_worker {
    pthread_t thread;
    const char *socket_path;
    const struct agent_op *op;
    uint64_t deadline_ns;
    struct bench_samples samples;
    size_t errors;
    size_t reconnects;
    char first_error[160];
};

static int connect_unix(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path)) {
        return -ENAMETOOLONG;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        return -errno;
    }
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Content-Length of a header block (NUL-terminated, ends at "\r\n\r\n"); -1 if absent. */
static long header_content_length(const char *hdr)
{
    const char *p = hdr;
    while ((p = strchr(p, '\n')) != NULL) {
        p++;
        if (strncasecmp(p, "content-length:", 15) == 0) {
            char *end;
            long v = strtol(p + 15, &end, 10);
            return v >= 0 ? v : -1;
        }
    }
    return -1;
}

/*
 * One request/response on a keep-alive connection. Returns the HTTP status (> 0), 0 when
 * the server closed the connection before answering, or a negative errno.
 * *out_close is set when the server asked to close the connection.
 */
static int http_roundtrip(int fd, const char *req, size_t req_len, char *buf, size_t cap,
                          bool *out_close)
{
    int r = write_all(fd, req, req_len);
    if (r < 0) {
        return r == -EPIPE || r == -ECONNRESET ? 0 : r;
    }
    size_t len = 0;
    char *hdr_end = NULL;
    long clen = -1;
    for (;;) {
        if (len + 1 >= cap) {
            return -E2BIG;
        }
        ssize_t n = recv(fd, buf + len, cap - 1 - len, 0);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return errno == ECONNRESET ? 0 : -errno;
        }
        if (n == 0) {
            return 0;
        }
        len += (size_t)n;
        buf[len] = '\0';
        if (hdr_end == NULL) {
            hdr_end = strstr(buf, "\r\n\r\n");
            if (hdr_end == NULL) {
                continue;
            }
            *hdr_end = '\0';
            clen = header_content_length(buf);
            *out_close = strcasestr(buf, "\nconnection: close") != NULL;
            if (clen < 0) {
                return -EPROTO;
            }
        }
        size_t hlen = (size_t)(hdr_end - buf) + 4;
        if (len - hlen >= (size_t)clen) {
            int status = 0;
            if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
                return -EPROTO;
            }
            return status;
        }
    }
}

static void *worker_main(void *arg)
{
    struct agent_worker *w = arg;
    char req[AGENT_BENCH_REQUEST_MAX];
    int req_len = snprintf(req, sizeof(req),
                           "POST /%s HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                           "application/json\r\nContent-Length: %zu\r\n\r\n%s",
                           w->op->method, strlen(w->op->body), w->op->body);
    char *buf = malloc(AGENT_BENCH_RESPONSE_MAX);
    int fd = -1;
    if (buf == NULL || req_len <= 0 || (size_t)req_len >= sizeof(req)) {
        w->errors++;
        snprintf(w->first_error, sizeof(w->first_error), "setup failed");
        goto out;
    }
    while (bench_now_ns() < w->deadline_ns) {
        if (fd < 0) {
            fd = connect_unix(w->socket_path);
            if (fd < 0) {
                w->errors++;
                snprintf(w->first_error, sizeof(w->first_error), "connect: %s", strerror(-fd));
                goto out;
            }
        }
        bool close_after = false;
        uint64_t t0 = bench_now_ns();
        int st =
            http_roundtrip(fd, req, (size_t)req_len, buf, AGENT_BENCH_RESPONSE_MAX, &close_after);
        uint64_t t1 = bench_now_ns();
        if (st == 0) {
            /* Server closed an idle keep-alive connection: reconnect, not an error. */
            close(fd);
            fd = -1;
            w->reconnects++;
            continue;
        }
        if (st != 200) {
            w->errors++;
            if (w->first_error[0] == '\0') {
                snprintf(w->first_error, sizeof(w->first_error), "%s: %s %d", w->op->method,
                         st < 0 ? strerror(-st) : "HTTP", st);
            }
            if (st < 0) {
                close(fd);
                fd = -1;
            }
            continue;
        }
        if (bench_samples_add(&w->samples, t1 - t0) < 0) {
            break;
        }
        if (close_after) {
            close(fd);
            fd = -1;
            w->reconnects++;
        }
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    free(buf);
    return NULL;
}

struct agent_result {
    double rps;
    double p50_us;
    double p99_us;
};

static void stats_to_result(struct bench_samples *s, double elapsed_s, struct agent_result *out)
{
    struct bench_stats st;
    bench_stats_compute(s, elapsed_s, &st);
    out->rps = st.ops_per_sec;
    out->p50_us = st.p50_us;
    out->p99_us = st.p99_us;
}

static int run_server(const char *socket_path, const struct agent_op *op, int clients,
                      double seconds, struct agent_result *out)
{
    struct agent_worker *w = calloc((size_t)clients, sizeof(*w));
    struct bench_samples all = {0};
    size_t errors = 0, reconnects = 0;
    const char *first_error = NULL;
    int r = BENCH_EXIT_OK;
    int started = 0;
    if (w == NULL) {
        return BENCH_EXIT_FAIL;
    }
    uint64_t start = bench_now_ns();
    uint64_t deadline = start + (uint64_t)(seconds * 1e9);
    for (int i = 0; i < clients; i++) {
        w[i].socket_path = socket_path;
        w[i].op = op;
        w[i].deadline_ns = deadline;
        if (pthread_create(&w[i].thread, NULL, worker_main, &w[i]) != 0) {
            r = BENCH_EXIT_FAIL;
            break;
        }
        started++;
    }
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].thread, NULL);
    }
    double elapsed = (double)(bench_now_ns() - start) / 1e9;
    for (int i = 0; i < started; i++) {
        if (bench_samples_merge(&all, &w[i].samples) < 0) {
            r = BENCH_EXIT_FAIL;
        }
        errors += w[i].errors;
        reconnects += w[i].reconnects;
        if (first_error == NULL && w[i].first_error[0] != '\0') {
            first_error = w[i].first_error;
        }
    }
    stats_to_result(&all, elapsed, out);
    printf("{\"bench\":\"agent\",\"op\":\"%s\",\"transport\":\"unix\",\"clients\":%d,"
           "\"connections\":\"persistent\",\"requests\":%zu,\"errors\":%zu,\"reconnects\":%zu,"
           "\"rps\":%.1f,\"p50_us\":%.1f,\"p99_us\":%.1f}\n",
           op->method, clients, all.count, errors, reconnects, out->rps, out->p50_us, out->p99_us);
    fflush(stdout);
    if (errors > 0 || all.count == 0) {
        fprintf(stderr, "dstack-bench agent: %s with %d clients: %zu errors (%s)\n", op->method,
                clients, errors, first_error != NULL ? first_error : "no successful request");
        r = BENCH_EXIT_FAIL;
    }
    for (int i = 0; i < clients; i++) {
        bench_samples_done(&w[i].samples);
    }
    bench_samples_done(&all);
    free(w);
    return r;
}

/* The cryptography of one GetKey (spec guest-agent-api.md §4.2-§4.3), in-process. */
static int bare_getkey(const uint8_t root[32], const char *path, const char *purpose)
{
    static const char salt[] = "RATLS";
    uint8_t key[32], pub[33], digest[32], sig[65];
    char msg[160];
    int r = ds_hkdf_sha256(salt, sizeof(salt) - 1, root, 32, path, strlen(path), key, sizeof(key));
    if (r < 0) {
        goto out;
    }
    if ((r = ds_k256_public(key, pub)) < 0) {
        goto out;
    }
    int n = snprintf(msg, sizeof(msg), "%s:", purpose);
    for (size_t i = 0; i < sizeof(pub); i++) {
        n += snprintf(msg + n, sizeof(msg) - (size_t)n, "%02x", pub[i]);
    }
    ds_keccak256(msg, (size_t)n, digest);
    r = ds_k256_sign_recoverable(root, digest, sig);
out:
    ds_wipe(key, sizeof(key));
    return r;
}

static int bare_getkey_op(void *root)
{
    return bare_getkey(root, "bench/key", "bench");
}

static int run_bare(double seconds, struct agent_result *out)
{
    uint8_t root[32];
    struct bench_samples s = {0};
    double elapsed = 0;
    int r = ds_random(root, sizeof(root));
    if (r < 0) {
        return BENCH_EXIT_FAIL;
    }
    r = bench_run_timed(seconds, bare_getkey_op, root, &s, &elapsed);
    if (r == -E2BIG) {
        r = 0; /* sample limit reached: report what was measured */
    }
    ds_wipe(root, sizeof(root));
    if (r < 0) {
        fprintf(stderr, "dstack-bench agent: bare GetKey crypto failed: %s\n", ds_strerror(r));
        bench_samples_done(&s);
        return BENCH_EXIT_FAIL;
    }
    stats_to_result(&s, elapsed, out);
    printf("{\"bench\":\"agent\",\"op\":\"GetKey-bare-crypto\",\"clients\":1,\"requests\":%zu,"
           "\"rps\":%.1f,\"p50_us\":%.2f,\"p99_us\":%.2f,\"what\":\"hkdf-sha256 + k256 pubkey + "
           "keccak256 + recoverable sign, in-process\"}\n",
           s.count, out->rps, out->p50_us, out->p99_us);
    fflush(stdout);
    bench_samples_done(&s);
    return BENCH_EXIT_OK;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: dstack-bench agent --socket PATH [--seconds N] [--clients 1,16]\n"
            "  --socket PATH    the guest agent's dstack.sock\n"
            "  --seconds N      duration of each measurement (default 3)\n"
            "  --clients LIST   comma-separated concurrent client counts (default 1,16); each\n"
            "                   client is a thread with one persistent keep-alive connection\n");
}

static int parse_clients(const char *s, int *out, int *out_count)
{
    int n = 0;
    while (*s != '\0') {
        char *end;
        errno = 0;
        long v = strtol(s, &end, 10);
        if (errno != 0 || end == s || v < 1 || v > AGENT_BENCH_MAX_CLIENTS ||
            n == AGENT_BENCH_MAX_CLIENT_SETS || (*end != ',' && *end != '\0')) {
            return -EINVAL;
        }
        out[n++] = (int)v;
        s = *end == ',' ? end + 1 : end;
    }
    if (n == 0) {
        return -EINVAL;
    }
    *out_count = n;
    return 0;
}

int bench_agent_main(int argc, char **argv)
{
    const char *socket_path = NULL;
    double seconds = AGENT_BENCH_DEFAULT_SECONDS;
    int clients[AGENT_BENCH_MAX_CLIENT_SETS] = {1, 16};
    int nclients = 2;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return BENCH_EXIT_OK;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "dstack-bench agent: %s needs a value\n", a);
            usage(stderr);
            return BENCH_EXIT_USAGE;
        }
        const char *v = argv[++i];
        if (strcmp(a, "--socket") == 0) {
            socket_path = v;
        } else if (strcmp(a, "--seconds") == 0) {
            if (bench_parse_seconds(v, &seconds) < 0) {
                fprintf(stderr, "dstack-bench agent: bad --seconds '%s'\n", v);
                return BENCH_EXIT_USAGE;
            }
        } else if (strcmp(a, "--clients") == 0) {
            if (parse_clients(v, clients, &nclients) < 0) {
                fprintf(stderr, "dstack-bench agent: bad --clients '%s' (1..%d, comma-separated)\n",
                        v, AGENT_BENCH_MAX_CLIENTS);
                return BENCH_EXIT_USAGE;
            }
        } else {
            fprintf(stderr, "dstack-bench agent: unknown option '%s'\n", a);
            usage(stderr);
            return BENCH_EXIT_USAGE;
        }
    }
    if (socket_path == NULL) {
        fprintf(stderr, "dstack-bench agent: --socket is required\n");
        usage(stderr);
        return BENCH_EXIT_USAGE;
    }

    int status = BENCH_EXIT_OK;
    struct agent_result bare = {0}, getkey1 = {0};
    bool have_getkey1 = false;
    if (run_bare(seconds, &bare) != BENCH_EXIT_OK) {
        status = BENCH_EXIT_FAIL;
    }
    for (size_t o = 0; o < sizeof(agent_ops) / sizeof(agent_ops[0]); o++) {
        for (int c = 0; c < nclients; c++) {
            struct agent_result res = {0};
            if (run_server(socket_path, &agent_ops[o], clients[c], seconds, &res) !=
                BENCH_EXIT_OK) {
                status = BENCH_EXIT_FAIL;
                continue;
            }
            if (o == 0 && clients[c] == 1) {
                getkey1 = res;
                have_getkey1 = true;
            }
        }
    }
    if (have_getkey1 && bare.p50_us > 0 && getkey1.rps > 0) {
        printf("{\"bench\":\"agent\",\"op\":\"GetKey-ratio\",\"server_over_bare_p50\":%.2f,"
               "\"bare_rps_over_server_rps_1client\":%.2f}\n",
               getkey1.p50_us / bare.p50_us, bare.rps / getkey1.rps);
    }
    return status;
}
