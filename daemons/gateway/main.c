/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-gateway: registers CVMs into a WireGuard network and proxies TLS to them by SNI
 * (spec host-side.md §4). This file is the table of contents:
 *   1. config: gateway.toml and the command line (gw_config.c; --check, --dump-config);
 *   2. db: the SQLite registry of instances and addresses under core.sync.data_dir (gw_db.c);
 *   3. wireguard: the interface through the `wg` tool, peers restored from the registry, and
 *      a 10 s timer feeding `wg show dump` handshakes into the routes (gw_wg.c, gw_register.c);
 *   4. rpc: the main server over TLS with optional client certificates chaining to the KMS
 *      root CA: Gateway service (RegisterCvm, Info) at /prpc and GET /health (gw_register.c);
 *   5. admin: the Admin service and status page behind a token (gw_admin.c);
 *   6. proxy: the SNI proxy of the data plane (gw_proxy.h) fed with the registered instances;
 *      before it the worker threads (gw_jobs.c) and, with core.rpc_domain or
 *      core.proxy.cert_source = "agent", the guest agent (gw_agent.c): RPC certificate into
 *      the [tls] files, own app id, proxy certificate and its renewal, /app-info.
 * `dstack-gateway proxy-only --config FILE` runs the data plane alone (gw_proxy_only_main).
 * [core.recycle] runs gw_recycle() every interval; SIGHUP renews / reloads the proxy
 * certificates. Not implemented: cluster sync (§4.5), ACME (§4.6), the debug server.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/err.h>

#include "dstack/attest.h"
#include "dstack/crypto.h"
#include "gw_ctl.h"
#include "log.h"

#define ROOT_CA_FILE_MAX (64 * 1024)
#define UUID_BYTES       16

static const struct ds_rpc_mount main_mounts[] = {
    {.prefix = "/prpc/", .trim = {"Tproxy.", "Gateway."}, .service = &gw_gateway_service},
};
static const struct ds_rpc_route main_routes[] = {
    {"/health", DS_RPC_HTTP_GET, gw_health},
};
static const struct ds_rpc_mount admin_mounts[] = {
    {.prefix = "/prpc/", .trim = {"Admin."}, .service = &gw_admin_service},
};
static const struct ds_rpc_route admin_routes[] = {
    {"/", DS_RPC_HTTP_GET, gw_admin_page},
    {"/health", DS_RPC_HTTP_GET, gw_health},
};
static const char *const gw_headers[] = {"X-App-Version: dstack-gateway " GW_VERSION, NULL};

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopexit(arg, NULL);
}

/* SIGHUP: renew the agent-issued proxy certificate, re-read file-backed ones. */
static void on_sighup(evutil_socket_t sig, short what, void *arg)
{
    struct gw *g = arg;
    (void)sig;
    (void)what;
    log_info("SIGHUP: reloading the proxy certificates");
    gw_agent_renew_now(g);
    if (g->proxy && gw_proxy_reload_certs(g->proxy) < 0) {
        log_warnx("certificate reload failed; the previous certificates stay");
    }
}

static void on_recycle_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_recycle(arg);
}

static void on_handshake_timer(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    gw_refresh_handshakes(arg);
}

/* ---- 1. config --------------------------------------------------------------------------------
 */

static int derive_wg_public(struct gw *g)
{
    uint8_t *priv = NULL, pub[32];
    size_t len = 0;
    int r = ds_base64_decode(g->cfg.wg_private_key, strlen(g->cfg.wg_private_key), 32, &priv, &len);
    if (r == 0 && len == 32) {
        r = ds_x25519_public(priv, pub);
    } else if (r == 0) {
        r = -DS_E_FORMAT;
    }
    if (priv) {
        ds_wipe(priv, len);
        free(priv);
    }
    if (r < 0) {
        return r;
    }
    char *b64 = ds_base64_encode(pub, sizeof(pub));
    if (!b64) {
        return -ENOMEM;
    }
    snprintf(g->wg_public_key, sizeof(g->wg_public_key), "%s", b64);
    free(b64);
    if (g->cfg.wg_public_key && strcmp(g->cfg.wg_public_key, g->wg_public_key) != 0) {
        log_warnx("core.wg.public_key does not belong to core.wg.private_key");
        return -DS_E_MISMATCH;
    }
    return 0;
}

/* ---- 2. db ---------------------------------------------------------------------------------- */

static int open_db(struct gw *g)
{
    char path[GW_PATH_MAX + 16], err[GW_ERR_MAX] = "";
    snprintf(g->data_dir, sizeof(g->data_dir), "%s", g->cfg.sync_data_dir);
    if (mkdir(g->data_dir, 0700) != 0 && errno != EEXIST) {
        log_warn("cannot create the state dir \"%s\"", g->data_dir);
        return -errno;
    }
    snprintf(path, sizeof(path), "%s/%s", g->data_dir, GW_DB_FILE);
    int r = gw_db_open(path, &g->db, err, sizeof(err));
    if (r < 0) {
        log_warnx("registry: %s", err);
        return r;
    }
    if (gw_db_meta_get(g->db, "node_uuid", g->node_uuid, sizeof(g->node_uuid)) < 0) {
        uint8_t u[UUID_BYTES];
        DS_TRY(ds_random(u, sizeof(u)));
        ds_hex_encode(u, sizeof(u), g->node_uuid);
        DS_TRY(gw_db_meta_set(g->db, "node_uuid", g->node_uuid));
    }
    return 0;
}

/* ---- 4. rpc --------------------------------------------------------------------------------- */

/* One verifier per worker thread (ds_verifier is not thread-safe). */
static int open_verifier(struct gw *g)
{
    uint8_t *der = NULL;
    size_t len = 0;
    int r = 0;
    if (g->cfg.att_allow_simulated) {
        log_warnx(
            "core.attestation.insecure_allow_simulated = true: SIMULATED quotes are ACCEPTED");
        if (!g->cfg.att_sim_root) {
            log_warnx("insecure_allow_simulated needs core.attestation.simulator_root_ca");
            return -EINVAL;
        }
        r = ds_read_file(g->cfg.att_sim_root, ROOT_CA_FILE_MAX, &der, &len);
    }
    for (size_t i = 0; r == 0 && i < GW_WORKERS; i++) {
        r = ds_verifier_new(der, len, &g->verifiers[i]);
    }
    if (r < 0 && g->cfg.att_allow_simulated) {
        log_warnx("simulator root CA \"%s\": %s", g->cfg.att_sim_root, ds_strerror(r));
    }
    free(der);
    return r;
}

static int make_tls(struct gw *g)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    STACK_OF(X509_NAME) *names = NULL;
    if (!ctx) {
        return -ENOMEM;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    if (SSL_CTX_use_certificate_chain_file(ctx, g->cfg.tls_certs) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, g->cfg.tls_key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        log_warnx("tls.certs \"%s\" / tls.key \"%s\": cannot load a matching certificate and key",
                  g->cfg.tls_certs, g->cfg.tls_key);
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(ctx, g->cfg.tls_ca_certs, NULL) != 1 ||
        !(names = SSL_load_client_CA_file(g->cfg.tls_ca_certs))) {
        log_warnx("tls.mutual.ca_certs \"%s\": cannot load", g->cfg.tls_ca_certs);
        goto fail;
    }
    SSL_CTX_set_client_CA_list(ctx, names);
    SSL_CTX_set_verify(
        ctx, SSL_VERIFY_PEER | (g->cfg.tls_mandatory ? SSL_VERIFY_FAIL_IF_NO_PEER_CERT : 0), NULL);
    g->tls = ctx;
    return 0;
fail:
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return -DS_E_CERT;
}

static int listen_main(struct gw *g)
{
    static const struct ds_rpc_site site = {
        .mounts = main_mounts,
        .mount_count = DS_ARRAY_SIZE(main_mounts),
        .routes = main_routes,
        .route_count = DS_ARRAY_SIZE(main_routes),
        .headers = gw_headers,
    };
    static struct ds_rpc_site s;
    s = site;
    s.ctx = g;
    int r = ds_rpc_server_new(g->base, NULL, &g->main_srv);
    if (r == 0) {
        r = ds_rpc_server_listen_tcp(g->main_srv, g->cfg.address, g->cfg.port, &s, g->tls,
                                     &g->main_port);
    }
    if (r < 0) {
        log_warnx("RPC listener %s:%u: %s", g->cfg.address, g->cfg.port, ds_strerror(r));
        return r;
    }
    log_info("Gateway RPC listening on %s:%u (TLS, client certificates from the KMS root CA)",
             g->cfg.address, g->main_port);
    return 0;
}

/* ---- 5. admin ------------------------------------------------------------------------------- */

static int listen_admin(struct gw *g)
{
    static const struct ds_rpc_site site = {
        .mounts = admin_mounts,
        .mount_count = DS_ARRAY_SIZE(admin_mounts),
        .routes = admin_routes,
        .route_count = DS_ARRAY_SIZE(admin_routes),
        .headers = gw_headers,
        .filter = gw_admin_filter,
    };
    static struct ds_rpc_site s;
    char host[256];
    uint16_t port = g->cfg.admin_port;
    if (!g->cfg.admin_enabled) {
        return 0;
    }
    s = site;
    s.ctx = g;
    if (gw_split_hostport(g->cfg.admin_address, host, sizeof(host), &port) < 0) {
        snprintf(host, sizeof(host), "%s", g->cfg.admin_address);
        port = g->cfg.admin_port;
    } else if (g->cfg.admin_port) {
        port = g->cfg.admin_port;
    }
    int r = ds_rpc_server_new(g->base, NULL, &g->admin_srv);
    if (r == 0) {
        r = ds_rpc_server_listen_tcp(g->admin_srv, host, port, &s, NULL, &g->admin_port);
    }
    if (r < 0) {
        log_warnx("admin listener %s:%u: %s", host, port, ds_strerror(r));
        return r;
    }
    if (g->cfg.admin_no_auth) {
        log_warnx("core.admin.insecure_no_auth = true: the Admin API needs NO token");
    }
    log_info("Admin listening on %s:%u", host, g->admin_port);
    return 0;
}

/* ---- 6. proxy ------------------------------------------------------------------------------- */

static int start_proxy(struct gw *g)
{
    struct gw_proxy_config pc;
    char listen[300];
    int r;
    DS_TRY(gw_routes_new(&g->routes));
    DS_TRY(gw_certs_new(&g->certs));
    gw_proxy_config_defaults(&pc);
    unsigned versions = 0;
    for (size_t i = 0; i < g->cfg.px_tls_versions.count; i++) {
        versions |= strcmp(g->cfg.px_tls_versions.items[i], "1.3") == 0 ? GW_TLS_1_3 : GW_TLS_1_2;
    }
    gw_certs_set_versions(g->certs, versions ? versions : GW_TLS_1_2);
    /* the guest agent: RPC certificate, own app id, proxy certificate (cert_source "agent") */
    if ((r = gw_agent_start(g)) < 0) {
        return r;
    }
    if (!g->cfg.px_enabled) {
        return 0;
    }
    if (strcmp(g->cfg.px_cert_source, "files") == 0 && g->cfg.px_base_domain &&
        g->cfg.px_cert_chain && g->cfg.px_cert_key) {
        r = gw_certs_load_files(g->certs, g->cfg.px_base_domain, g->cfg.px_cert_chain,
                                g->cfg.px_cert_key);
        if (r < 0) {
            log_warnx("core.proxy.cert_chain/cert_key: %s", ds_strerror(r));
            return r;
        }
    }
    bool v6 = strchr(g->cfg.px_listen_addr, ':') != NULL;
    snprintf(listen, sizeof(listen), v6 ? "[%s]:%u" : "%s:%u", g->cfg.px_listen_addr,
             (unsigned)g->cfg.px_listen_port);
    pc.listen[0] = listen;
    pc.listen_count = 1;
    pc.tls_versions = versions ? versions : GW_TLS_1_2;
    pc.inbound_pp = g->cfg.px_inbound_pp;
    pc.agent_port = g->cfg.px_agent_port;
    pc.connect_top_n = (unsigned)g->cfg.px_top_n;
    pc.max_connections_per_app = (uint32_t)g->cfg.px_max_conn_per_app;
    pc.buffer_size = (size_t)g->cfg.px_buffer_size;
    pc.splice =
        g->cfg.px_splice_bytes != DS_CONFIG_UNSET || g->cfg.px_splice_dur != DS_CONFIG_UNSET;
    pc.splice_after_bytes =
        g->cfg.px_splice_bytes != DS_CONFIG_UNSET ? (uint64_t)g->cfg.px_splice_bytes : 0;
    pc.splice_after_ms =
        g->cfg.px_splice_dur != DS_CONFIG_UNSET ? (uint32_t)g->cfg.px_splice_dur : 0;
    /* workers (0 = one per CPU); thread_per_core caps them at the CPU count. */
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    int64_t workers = g->cfg.px_workers > 0 ? g->cfg.px_workers : (cpus > 0 ? cpus : 1);
    if (g->cfg.px_thread_per_core && cpus > 0 && workers > cpus) {
        workers = cpus;
    }
    pc.workers = (unsigned)(workers < GW_WORKERS_MAX ? workers : GW_WORKERS_MAX);
    pc.app_address_ns_prefix = g->cfg.px_ns_prefix;
    pc.app_address_ns_compat = g->cfg.px_ns_compat;
    pc.insecure_localhost_backend = g->cfg.dbg_localhost;
    pc.timeouts.pp_header_ms = (uint32_t)g->cfg.to_pp_header;
    pc.timeouts.handshake_ms = (uint32_t)g->cfg.to_handshake;
    pc.timeouts.connect_ms = (uint32_t)g->cfg.to_connect;
    pc.timeouts.idle_ms = g->cfg.to_data_enabled ? (uint32_t)g->cfg.to_idle : 0;
    pc.timeouts.total_ms = (uint32_t)g->cfg.to_total;
    pc.timeouts.shutdown_ms = (uint32_t)g->cfg.to_shutdown;
    pc.timeouts.dns_ms = (uint32_t)g->cfg.to_dns;
    pc.timeouts.stale_handshake_s = (uint32_t)(g->cfg.to_handshake_stale / 1000);
    pc.special = gw_agent_special;
    pc.special_arg = g->agent;
    r = gw_proxy_new(g->base, &pc, g->routes, g->certs, &g->proxy);
    if (r < 0) {
        log_warnx("proxy listener %s: %s", listen, ds_strerror(r));
        return r;
    }
    int port = gw_proxy_listen_port(g->proxy, 0);
    log_info("proxy listening on %s (bound port %d)", listen, port);
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) < 0) {
            log_warn("setrlimit(RLIMIT_NOFILE)");
        }
    }
}

static void cleanup(struct gw *g)
{
    gw_policy_stop(g);
    gw_jobs_free(g->jobs); /* answers or fails the deferred calls still in the pool */
    gw_agent_free(g->agent);
    gw_proxy_free(g->proxy);
    ds_rpc_server_free(g->main_srv);
    ds_rpc_server_free(g->admin_srv);
    gw_certs_free(g->certs);
    gw_routes_free(g->routes);
    SSL_CTX_free(g->tls);
    for (size_t i = 0; i < GW_WORKERS; i++) {
        ds_verifier_free(g->verifiers[i]);
    }
    gw_db_close(g->db);
    gw_config_done(&g->cfg);
    if (g->base) {
        event_base_free(g->base);
    }
}

int main(int argc, char **argv)
{
    struct gw g;
    struct gw_opts o;
    struct event *sigint = NULL, *sigterm = NULL, *sighup = NULL, *hs = NULL, *rc = NULL;
    char err[GW_ERR_MAX] = "";
    int r;
    memset(&g, 0, sizeof(g));
    log_init("dstack-gateway", 0);
    if (argc > 1 && strcmp(argv[1], "proxy-only") == 0) {
        return gw_proxy_only_main(argc - 1, argv + 1);
    }
    r = gw_opts_parse(argc, argv, &o);
    if (r != 0) {
        return r == 1 ? 0 : 2;
    }
    log_set_verbose(o.verbose);
    if (o.doc) {
        return ds_config_doc(&gw_config_schema, stdout) < 0 ? 1 : 0;
    }
    /* 1. config */
    r = gw_config_load(o.config_path, &g.cfg, &g.net);
    if (r == 0) {
        r = derive_wg_public(&g);
    }
    if (r < 0) {
        gw_config_done(&g.cfg);
        return 2;
    }
    if (o.dump) {
        r = ds_config_dump(&gw_config_schema, &g.cfg, stdout);
        gw_config_done(&g.cfg);
        return r < 0 ? 1 : 0;
    }
    if (o.check) {
        printf("configuration OK\n");
        gw_config_done(&g.cfg);
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    if (g.cfg.set_ulimit) {
        raise_nofile();
    }
    g.started = (int64_t)time(NULL);
    /* worker threads (gw_jobs.c) wake the loop with event_active() */
    if (evthread_use_pthreads() < 0 || !(g.base = event_base_new())) {
        r = -ENOMEM;
        goto out;
    }
    sigint = evsignal_new(g.base, SIGINT, on_signal, g.base);
    sigterm = evsignal_new(g.base, SIGTERM, on_signal, g.base);
    sighup = evsignal_new(g.base, SIGHUP, on_sighup, &g);
    if (!sigint || !sigterm || !sighup || evsignal_add(sigint, NULL) < 0 ||
        evsignal_add(sigterm, NULL) < 0 || evsignal_add(sighup, NULL) < 0) {
        r = -ENOMEM;
        goto out;
    }
    if ((r = gw_jobs_new(g.base, GW_WORKERS, &g.jobs)) < 0) {
        log_warnx("worker threads: %s", ds_strerror(r));
        goto out;
    }
    /* 2. db */
    if ((r = open_db(&g)) < 0) {
        goto out;
    }
    /* 3. wireguard */
    r = gw_wg_setup(&g.wg, &g.cfg, g.data_dir, err, sizeof(err));
    if (r < 0) {
        log_warnx("%s", err);
        goto out;
    }
    log_info("WireGuard: %s", g.wg.enabled ? g.cfg.wg_interface : "disabled (registry only)");
    /* 6. proxy first: the routing table is filled by the restore */
    if ((r = start_proxy(&g)) < 0) {
        goto out;
    }
    if ((r = gw_policy_start(&g)) < 0) {
        goto out;
    }
    if ((r = gw_restore(&g)) < 0) {
        log_warnx("registry restore: %s", ds_strerror(r));
        goto out;
    }
    if (g.wg.enabled) {
        struct timeval tv = {GW_HANDSHAKE_MS / 1000, 0};
        hs = event_new(g.base, -1, EV_PERSIST, on_handshake_timer, &g);
        if (!hs || event_add(hs, &tv) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    if (g.cfg.rc_enabled) {
        struct timeval tv = {(time_t)(g.cfg.rc_interval / 1000),
                             (suseconds_t)(g.cfg.rc_interval % 1000) * 1000};
        rc = event_new(g.base, -1, EV_PERSIST, on_recycle_timer, &g);
        if (!rc || event_add(rc, &tv) < 0) {
            r = -ENOMEM;
            goto out;
        }
    }
    /* 4. rpc, 5. admin */
    if ((r = open_verifier(&g)) < 0 || (r = make_tls(&g)) < 0 || (r = listen_main(&g)) < 0 ||
        (r = listen_admin(&g)) < 0) {
        goto out;
    }
    event_base_dispatch(g.base);
    r = 0;
out:
    if (hs) {
        event_free(hs);
    }
    if (rc) {
        event_free(rc);
    }
    if (sigint) {
        event_free(sigint);
    }
    if (sigterm) {
        event_free(sigterm);
    }
    if (sighup) {
        event_free(sighup);
    }
    cleanup(&g);
    curl_global_cleanup();
    return r < 0 ? 1 : 0;
}
