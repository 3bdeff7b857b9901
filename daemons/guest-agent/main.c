/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-guest-agent: the app-facing API of a dstack CVM (spec
 * ../shared/spec/guest-agent-api.md). This file is the table of contents:
 *   1. configuration (agent_config.c: one option table);
 *   2. the TEE (lib/tee: real TDX, a dstack-tee-sim device, or the embedded simulator) and
 *      the inputs: app keys (agent_keys.c), app-compose.json, sys-config, DMI (agent_state.c),
 *      or the development set in simulator mode (agent_sim.c);
 *   3. the demo RA-TLS certificate of Info.app_cert (agent_tls.c);
 *   4. three listeners on one libevent loop (lib/rpc), with TEE work on one worker thread
 *      (agent_jobs.c) so slow quotes never stall the loop: dstack.sock with the DstackGuest
 *      service (agent_dstack.c), tappd.sock with the legacy Tappd service (agent_tappd.c) and
 *      the external TCP listener with the Worker service and the dashboard (agent_worker.c),
 *      plus, in simulator mode only, the DstackGuest service at /<Method>.
 * Systemd socket activation is honoured: LISTEN_FDS index 0 is dstack.sock, 1 tappd.sock.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent.h"
#include "log.h"

#define SOCKET_MODE         0777 /* any process in the CVM may call the agent (§1) */
#define SD_LISTEN_FDS_START 3

static const struct ds_rpc_mount dstack_mounts[] = {
    {.prefix = "/", .trim = {NULL}, .service = &agent_dstack_service},
};
static const struct ds_rpc_mount tappd_mounts[] = {
    {.prefix = "/prpc/", .trim = {"Tappd."}, .service = &agent_tappd_service},
};
static const struct ds_rpc_mount worker_mounts[] = {
    {.prefix = "/prpc/", .trim = {"Worker."}, .service = &agent_worker_service},
};
/* Simulator mode only: the external listener also serves the DstackGuest service at /<Method>
 * so SDKs can use DSTACK_SIMULATOR_ENDPOINT=http://ADDR:PORT, as with upstream's simulator.
 * Raw routes (`/` dashboard, /metrics, /logs/) are tried first and /prpc/Worker.* is mounted
 * before `/` (a mount only takes a single path segment, so /prpc/X never reaches it). On a
 * real guest the dstack API stays on dstack.sock: it is the app's private API (spec §1). */
static const struct ds_rpc_mount sim_external_mounts[] = {
    {.prefix = "/prpc/", .trim = {"Worker."}, .service = &agent_worker_service},
    {.prefix = "/", .trim = {NULL}, .service = &agent_dstack_service},
};

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopexit(arg, NULL);
}

/* Socket activation (sd_listen_fds without libsystemd): the number of inherited fds. */
static int listen_fds(void)
{
    const char *pid = getenv("LISTEN_PID"), *fds = getenv("LISTEN_FDS");
    if (!pid || !fds || strtol(pid, NULL, 10) != (long)getpid()) {
        return 0;
    }
    long n = strtol(fds, NULL, 10);
    return n > 0 && n < 16 ? (int)n : 0;
}

/* "ADDR:PORT" or "[v6]:PORT" into addr (no brackets) and port. */
static int parse_addr(const char *s, char *addr, size_t addr_size, uint16_t *port)
{
    const char *colon = strrchr(s, ':');
    if (!colon || colon == s) {
        return -EINVAL;
    }
    const char *a = s;
    size_t n = (size_t)(colon - s);
    if (a[0] == '[' && n >= 2 && a[n - 1] == ']') {
        a++;
        n -= 2;
    }
    char *end = NULL;
    long p = strtol(colon + 1, &end, 10);
    if (n == 0 || n >= addr_size || !colon[1] || *end || p < 0 || p > 65535) {
        return -EINVAL;
    }
    memcpy(addr, a, n);
    addr[n] = '\0';
    *port = (uint16_t)p;
    return 0;
}

static int listen_unix(struct ds_rpc_server *srv, const char *path, const struct ds_rpc_site *site,
                       int inherited_fd)
{
    int r;
    if (inherited_fd >= 0) {
        r = ds_rpc_server_listen_fd(srv, inherited_fd, site, NULL);
        if (r == 0) {
            log_info("serving inherited socket fd %d", inherited_fd);
        }
    } else {
        r = ds_rpc_server_listen_unix(srv, path, SOCKET_MODE, site);
        if (r == 0) {
            log_info("listening on unix:%s", path);
        }
    }
    if (r < 0) {
        log_warnx("cannot listen on %s: %s", inherited_fd >= 0 ? "inherited fd" : path,
                  ds_strerror(r));
    }
    return r;
}

static int start_listeners(struct agent *a, struct ds_rpc_server *srv, struct ds_rpc_site sites[3],
                           const char *const *headers)
{
    int nfds = a->cfg.simulator ? 0 : listen_fds();
    sites[0] = (struct ds_rpc_site){.mounts = dstack_mounts, .mount_count = 1, .ctx = a};
    sites[1] = (struct ds_rpc_site){.mounts = tappd_mounts, .mount_count = 1, .ctx = a};
    bool sim = a->cfg.simulator;
    sites[2] = (struct ds_rpc_site){.mounts = sim ? sim_external_mounts : worker_mounts,
                                    .mount_count = sim ? DS_ARRAY_SIZE(sim_external_mounts)
                                                       : DS_ARRAY_SIZE(worker_mounts),
                                    .routes = agent_worker_routes,
                                    .route_count = agent_worker_route_count,
                                    .headers = headers,
                                    .ctx = a};
    if ((nfds >= 1 || *a->cfg.socket) &&
        listen_unix(srv, a->cfg.socket, &sites[0], nfds >= 1 ? SD_LISTEN_FDS_START : -1) < 0) {
        return -1;
    }
    if ((nfds >= 2 || *a->cfg.tappd_socket) &&
        listen_unix(srv, a->cfg.tappd_socket, &sites[1], nfds >= 2 ? SD_LISTEN_FDS_START + 1 : -1) <
            0) {
        return -1;
    }
    if (strncmp(a->cfg.http, "unix:", 5) == 0) {
        /* The upstream simulator puts the external listener on a Unix socket too. */
        if (listen_unix(srv, a->cfg.http + 5, &sites[2], -1) < 0) {
            return -1;
        }
    } else if (*a->cfg.http) {
        char addr[64];
        uint16_t port = 0, bound = 0;
        if (parse_addr(a->cfg.http, addr, sizeof(addr), &port) < 0) {
            log_warnx("--http \"%s\": expected ADDR:PORT", a->cfg.http);
            return -1;
        }
        int r = ds_rpc_server_listen_tcp(srv, addr, port, &sites[2], NULL, &bound);
        if (r < 0) {
            log_warnx("cannot listen on %s: %s", a->cfg.http, ds_strerror(r));
            return -1;
        }
        log_info("external listener on http://%s:%u%s", addr, (unsigned)bound,
                 sim ? " (simulator: dstack API at /<Method> too)" : "");
    }
    return 0;
}

int main(int argc, char **argv)
{
    struct agent a;
    struct event_base *base = NULL;
    struct ds_rpc_server *srv = NULL;
    struct event *sigint = NULL, *sigterm = NULL;
    struct ds_rpc_site sites[3];
    int rc = 1;
    memset(&a, 0, sizeof(a));
    log_init("dstack-guest-agent", 0);

    /* 1. configuration */
    int r = agent_config_parse(&a.cfg, argc, argv);
    if (r != 0) {
        agent_config_free(&a.cfg);
        return r > 0 ? 0 : 2;
    }
    log_set_verbose(a.cfg.verbose);
    if (a.cfg.dump) {
        agent_config_dump(&a.cfg);
        agent_config_free(&a.cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);

    /* 2. TEE and inputs */
    if (agent_state_load(&a) < 0) {
        goto out;
    }
    if (a.cfg.simulator) {
        if (agent_sim_setup(&a) < 0) {
            goto out;
        }
    } else {
        char err[256] = "";
        r = ds_tee_open(a.cfg.tee, &a.tee, err, sizeof(err));
        if (r < 0) {
            log_warnx("cannot open the TEE: %s", err[0] ? err : ds_strerror(r));
            goto out;
        }
        if (ds_tee_is_simulated(a.tee)) {
            log_warnx("the TEE is SIMULATED (%s): quotes prove nothing", ds_tee_kind(a.tee));
        }
    }

    /* 3. Info.app_cert (a failure leaves it empty, as upstream before issuance) */
    (void)agent_issue_demo_cert(&a);
    if (a.cfg.check) {
        printf("configuration OK\n");
        rc = 0;
        goto out;
    }

    /* 4. listeners */
    snprintf(a.version_header, sizeof(a.version_header), "X-App-Version: v%s (%s)", AGENT_VERSION,
             AGENT_REV);
    const char *const headers[] = {a.version_header, NULL};
    base = event_base_new();
    struct ds_rpc_limits limits;
    ds_rpc_limits_default(&limits);
    limits.idle_timeout_ms = a.cfg.keep_alive_s * 1000u;
    if (!base || ds_rpc_server_new(base, &limits, &srv) < 0) {
        log_warnx("cannot create the event loop");
        goto out;
    }
    if (start_listeners(&a, srv, sites, headers) < 0) {
        goto out;
    }
    r = agent_jobs_start(&a, base);
    if (r < 0) {
        log_warnx("cannot start the TEE worker: %s", ds_strerror(r));
        goto out;
    }
    sigint = evsignal_new(base, SIGINT, on_signal, base);
    sigterm = evsignal_new(base, SIGTERM, on_signal, base);
    if (!sigint || !sigterm || evsignal_add(sigint, NULL) < 0 || evsignal_add(sigterm, NULL) < 0) {
        log_warnx("cannot install signal handlers");
        goto out;
    }
    log_info("dstack-guest-agent v%s ready (TEE: %s)", AGENT_VERSION, ds_tee_kind(a.tee));
    event_base_dispatch(base);
    rc = 0;
out:
    agent_jobs_stop(&a); /* before the server: queued calls get their (discarded) answers */
    if (sigint) {
        event_free(sigint);
    }
    if (sigterm) {
        event_free(sigterm);
    }
    ds_rpc_server_free(srv);
    if (base) {
        event_base_free(base);
    }
    agent_config_free(&a.cfg); /* before agent_state_free, which clears all of a */
    agent_state_free(&a);
    return rc;
}
