/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-tee-sim: a software TDX module for machines without TDX (../shared/DESIGN.md §3).
 * This file is the table of contents: the subcommand table, `serve` (device sockets per TD,
 * control socket, optional PCCS collateral service, all on one libevent loop) and the
 * standalone generators `quote`, `collateral` and `root-ca`, which need no daemon.
 * Everything it produces verifies only against the mock root derived from --seed.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dstack/crypto.h"
#include "log.h"
#include "teesim.h"

struct subcommand {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *usage;
};

int teesim_parse_seed(const char *hex, uint8_t seed[DS_SIM_SEED_LEN])
{
    if (!hex || strlen(hex) != 2 * DS_SIM_SEED_LEN ||
        strspn(hex, "0123456789abcdefABCDEF") != 2 * DS_SIM_SEED_LEN ||
        ds_hex_decode(hex, strlen(hex), seed, DS_SIM_SEED_LEN) < 0) {
        log_warnx("--seed must be exactly %d hex digits (%d bytes)", 2 * DS_SIM_SEED_LEN,
                  DS_SIM_SEED_LEN);
        return -1;
    }
    return 0;
}

static int load_pki(const char *seed_hex, struct ds_sim_pki **out)
{
    uint8_t seed[DS_SIM_SEED_LEN];
    if (teesim_parse_seed(seed_hex, seed) < 0) {
        return -1;
    }
    int r = ds_sim_pki_new(seed, out);
    ds_wipe(seed, sizeof(seed));
    if (r < 0) {
        log_warnx("cannot derive the mock PKI: %s", ds_strerror(r));
        return -1;
    }
    return 0;
}

static int write_stdout(const void *data, size_t len)
{
    return (fwrite(data, 1, len, stdout) == len && fflush(stdout) == 0) ? 0 : 1;
}

/* ---- serve -------------------------------------------------------------------------------- */

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    struct teesim *sim = arg;
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopexit(sim->base, NULL);
}

static void warn_simulator(void)
{
    log_warnx("**************************************************************************");
    log_warnx("* THIS IS A SIMULATOR. Its quotes are signed by a MOCK Intel PKI derived  *");
    log_warnx("* from --seed; they prove NOTHING about the hardware. Verifiers accept     *");
    log_warnx("* them only when told to trust the mock root (--insecure-allow-simulated). *");
    log_warnx("**************************************************************************");
}

/* Take the state-dir lock so two simulators never serve the same TDs. */
static int lock_state_dir(const char *dir, int *out_fd)
{
    char path[PATH_MAX];
    DS_TRY(teesim_join(path, sizeof(path), dir, TEESIM_LOCK_FILE));
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno == EWOULDBLOCK ? -EBUSY : -errno;
        close(fd);
        return e;
    }
    *out_fd = fd;
    return 0;
}

static int cmd_serve(int argc, char **argv)
{
    const char *seed = NULL, *dir = NULL, *pccs = NULL, *verbose = NULL;
    const struct teesim_opt opts[] = {
        {"--seed", &seed, false},
        {"--state-dir", &dir, false},
        {"--pccs-listen", &pccs, false},
        {"-v", &verbose, true},
    };
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    if (!dir) {
        log_warnx("--state-dir is required");
        return 2;
    }
    log_set_verbose(verbose ? 1 : 0);
    struct teesim sim;
    memset(&sim, 0, sizeof(sim));
    TAILQ_INIT(&sim.tds);
    TAILQ_INIT(&sim.control_conns);
    if (strlen(dir) >= sizeof(sim.state_dir)) {
        log_warnx("--state-dir too long");
        return 2;
    }
    memcpy(sim.state_dir, dir, strlen(dir) + 1);
    if (load_pki(seed, &sim.pki) < 0) {
        return 2;
    }
    warn_simulator();
    umask(077);
    signal(SIGPIPE, SIG_IGN);
    int rc = 1, lock_fd = -1, r;
    struct event *sigint = NULL, *sigterm = NULL;
    char path[PATH_MAX];
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        log_warn("cannot create %s", dir);
        goto out;
    }
    r = lock_state_dir(dir, &lock_fd);
    if (r < 0) {
        log_warnx("%s: %s", dir,
                  r == -EBUSY ? "another dstack-tee-sim serves this state dir" : ds_strerror(r));
        goto out;
    }
    const uint8_t *root;
    size_t root_len;
    ds_sim_pki_root_der(sim.pki, &root, &root_len);
    if (teesim_join(path, sizeof(path), dir, TEESIM_ROOT_CA_FILE) < 0 ||
        (r = ds_write_file_atomic(path, root, root_len, 0644)) < 0) {
        log_warnx("cannot write %s/%s", dir, TEESIM_ROOT_CA_FILE);
        goto out;
    }
    if (teesim_join(path, sizeof(path), dir, TEESIM_PCCS_ADDR_FILE) == 0) {
        unlink(path); /* a stale address must not be mistaken for this run's */
    }
    sim.base = event_base_new();
    if (!sim.base) {
        log_warnx("event_base_new failed");
        goto out;
    }
    r = teesim_state_load_all(&sim);
    if (r < 0) {
        log_warnx("cannot load TDs from %s: %s", dir, ds_strerror(r));
        goto out;
    }
    if (pccs && teesim_pccs_start(&sim, pccs) < 0) {
        goto out;
    }
    /* The control socket comes last: once it exists, everything else is ready. */
    if (teesim_join(sim.control_path, sizeof(sim.control_path), dir, TEESIM_CONTROL_SOCKET) < 0 ||
        (r = teesim_listen(&sim, NULL, sim.control_path, &sim.control)) < 0) {
        log_warnx("cannot listen on %s/%s", dir, TEESIM_CONTROL_SOCKET);
        goto out;
    }
    sigint = evsignal_new(sim.base, SIGINT, on_signal, &sim);
    sigterm = evsignal_new(sim.base, SIGTERM, on_signal, &sim);
    if (!sigint || !sigterm || evsignal_add(sigint, NULL) < 0 || evsignal_add(sigterm, NULL) < 0) {
        log_warnx("cannot install signal handlers");
        goto out;
    }
    log_info("serving %zu TD(s); control socket %s", sim.td_count, sim.control_path);
    event_base_dispatch(sim.base);
    rc = 0;
out:
    if (sigint) {
        event_free(sigint);
    }
    if (sigterm) {
        event_free(sigterm);
    }
    teesim_conn_free_all(&sim.control_conns);
    if (sim.control) {
        evconnlistener_free(sim.control);
        unlink(sim.control_path);
    }
    teesim_pccs_stop(&sim);
    teesim_state_free_all(&sim);
    if (sim.base) {
        event_base_free(sim.base);
    }
    ds_sim_pki_free(sim.pki);
    if (lock_fd >= 0) {
        close(lock_fd);
    }
    return rc;
}

/* ---- standalone generators ---------------------------------------------------------------- */

static int cmd_quote(int argc, char **argv)
{
    const char *seed = NULL, *rd_hex = NULL, *version = NULL;
    const char *mr[6] = {NULL}; /* mrtd, rtmr0-3, (unused) */
    const struct teesim_opt opts[] = {
        {"--seed", &seed, false},   {"--report-data", &rd_hex, false}, {"--mrtd", &mr[0], false},
        {"--rtmr0", &mr[1], false}, {"--rtmr1", &mr[2], false},        {"--rtmr2", &mr[3], false},
        {"--rtmr3", &mr[4], false}, {"--version", &version, false},
    };
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    uint8_t rd[64] = {0};
    if (!rd_hex || ds_hex_decode(rd_hex, strlen(rd_hex), rd, sizeof(rd)) < 0) {
        log_warnx("--report-data must be 128 hex digits");
        return 2;
    }
    struct ds_sim_quote_opts qopts = {.version = 4};
    if (version && strcmp(version, "4") != 0 && strcmp(version, "5") != 0) {
        log_warnx("--version must be 4 or 5");
        return 2;
    }
    if (version) {
        qopts.version = (uint16_t)atoi(version);
    }
    struct ds_sim_td td;
    ds_sim_td_defaults(&td);
    for (int i = 0; i < 5; i++) {
        uint8_t *dst = i == 0 ? td.mr_td : td.rtmr[i - 1];
        if (mr[i] && ds_hex_decode(mr[i], strlen(mr[i]), dst, 48) < 0) {
            log_warnx("%s must be 96 hex digits", i == 0 ? "--mrtd" : "--rtmrN");
            return 2;
        }
    }
    if (isatty(STDOUT_FILENO)) {
        log_warnx("refusing to write a binary quote to a terminal; redirect stdout");
        return 2;
    }
    struct ds_sim_pki *pki = NULL;
    if (load_pki(seed, &pki) < 0) {
        return 2;
    }
    uint8_t *quote = NULL;
    size_t len = 0;
    int r = ds_sim_quote(pki, &td, rd, &qopts, &quote, &len);
    ds_sim_pki_free(pki);
    if (r < 0) {
        log_warnx("quote generation failed: %s", ds_strerror(r));
        return 1;
    }
    int rc = write_stdout(quote, len);
    free(quote);
    return rc;
}

static int cmd_collateral(int argc, char **argv)
{
    const char *seed = NULL, *when = NULL;
    const struct teesim_opt opts[] = {{"--seed", &seed, false}, {"--time", &when, false}};
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    int64_t now = (int64_t)time(NULL);
    if (when) {
        char *end;
        errno = 0;
        long long v = strtoll(when, &end, 10);
        if (errno || end == when || *end || v < 0) {
            log_warnx("--time must be a UNIX timestamp");
            return 2;
        }
        now = v;
    }
    struct ds_sim_pki *pki = NULL;
    if (load_pki(seed, &pki) < 0) {
        return 2;
    }
    struct ds_collateral *c = NULL;
    char *json = NULL;
    int r = ds_sim_collateral(pki, now, &c);
    if (r == 0) {
        r = ds_collateral_to_json(c, &json);
    }
    ds_collateral_free(c);
    ds_sim_pki_free(pki);
    if (r < 0) {
        log_warnx("collateral generation failed: %s", ds_strerror(r));
        return 1;
    }
    printf("%s\n", json);
    free(json);
    return fflush(stdout) == 0 ? 0 : 1;
}

static int cmd_root_ca(int argc, char **argv)
{
    const char *seed = NULL;
    const struct teesim_opt opts[] = {{"--seed", &seed, false}};
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    struct ds_sim_pki *pki = NULL;
    if (load_pki(seed, &pki) < 0) {
        return 2;
    }
    const uint8_t *der;
    size_t len;
    ds_sim_pki_root_der(pki, &der, &len);
    int rc = write_stdout(der, len);
    ds_sim_pki_free(pki);
    return rc;
}

static const struct subcommand commands[] = {
    {"serve", cmd_serve, "serve --seed HEX --state-dir DIR [--pccs-listen ADDR:PORT] [-v]"},
    {"create-td", teesim_cmd_create_td,
     "create-td --state-dir DIR --name NAME [--mrtd HEX] [--rtmr0 HEX] [--rtmr1 HEX] "
     "[--rtmr2 HEX] [--event-log FILE]"},
    {"remove-td", teesim_cmd_remove_td, "remove-td --state-dir DIR --name NAME"},
    {"list-tds", teesim_cmd_list_tds, "list-tds --state-dir DIR"},
    {"quote", cmd_quote,
     "quote --seed HEX --report-data HEX [--mrtd HEX] [--rtmr0..3 HEX] [--version 4|5] > Q"},
    {"collateral", cmd_collateral, "collateral --seed HEX [--time UNIX] > collateral.json"},
    {"root-ca", cmd_root_ca, "root-ca --seed HEX > root.der"},
    {"tdx-quote", teesim_cmd_tdx_quote, "tdx-quote --socket S --report-data HEX > quote.bin"},
    {"extend", teesim_cmd_extend,
     "extend --socket S --index 2|3 --event NAME [--payload HEX] [--digest HEX]"},
    {"read", teesim_cmd_read, "read --socket S"},
    {"event-log", teesim_cmd_event_log, "event-log --socket S"},
};

static void usage(void)
{
    fprintf(stderr, "usage: dstack-tee-sim <command> [options]   (a TDX SIMULATOR)\n");
    for (size_t i = 0; i < DS_ARRAY_SIZE(commands); i++) {
        fprintf(stderr, "  %s\n", commands[i].usage);
    }
}

int main(int argc, char **argv)
{
    log_init("dstack-tee-sim", 0);
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage();
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(commands); i++) {
        if (strcmp(argv[1], commands[i].name) == 0) {
            return commands[i].fn(argc - 1, argv + 1);
        }
    }
    log_warnx("unknown command \"%s\"", argv[1]);
    usage();
    return 2;
}
