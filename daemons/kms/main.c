/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-kms: attested key release for dstack apps (spec ../shared/spec/kms-ratls.md). This
 * file is the table of contents:
 *   1. configuration: kms.toml + command line (kms_config.c);
 *   2. the key process, forked before anything touches the network (kms_keyproc.c);
 *   3. our TEE and the verifier of callers' attestations (kms_attest.c);
 *   4. root keys: loaded, bootstrapped (kms_keys.c), or obtained through the onboard listener
 *      and the Onboard service (kms_onboard.c);
 *   5. the RPC certificate, reissued with a fresh attestation at every start (kms_keys.c);
 *   6. the listeners on one libevent loop (lib/rpc): the main RA-TLS listener with the KMS
 *      service (kms_rpc.c) and /health, and optionally the Admin service (kms_admin.c).
 * Authorization backends (dev, webhook, policy file) live in kms_auth.c.
 */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "dstack/sim.h"
#include "kms.h"
#include "log.h"

#define DOMAIN_FILE_MAX 256

static const struct ds_rpc_mount kms_mounts[] = {
    {.prefix = "/prpc/", .trim = {"KMS."}, .service = &kms_rpc_service},
};
static const struct ds_rpc_route kms_routes[] = {
    {"/health", DS_RPC_HTTP_GET, kms_health},
    {"/metrics", DS_RPC_HTTP_GET, kms_metrics},
};
#ifndef DS_GIT_REV
#define DS_GIT_REV "unknown"
#endif
static const char *const kms_headers[] = {"X-App-Version: v" KMS_VERSION " (" DS_GIT_REV ")", NULL};

static const struct ds_rpc_mount onboard_mounts[] = {
    {.prefix = "/prpc/", .trim = {"Onboard."}, .service = &kms_onboard_service},
};
static const struct ds_rpc_route onboard_routes[] = {
    {"/", DS_RPC_HTTP_GET, kms_onboard_page},
    {"/finish", DS_RPC_HTTP_GET, kms_onboard_finish_route},
    {"/health", DS_RPC_HTTP_GET, kms_health},
};

static const struct ds_rpc_mount admin_mounts[] = {
    {.prefix = "/prpc/", .trim = {"Admin."}, .service = &kms_admin_service},
};

/* jansson holds hex key material of replies (GetAppKey, GetKmsKey): wipe every block it frees. */
static void wiping_free(void *p)
{
    if (p) {
        ds_wipe(p, malloc_usable_size(p));
        free(p);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("signal %d: shutting down", (int)sig);
    event_base_loopexit(arg, NULL);
}

static void dev_banner(void)
{
    log_warnx("**************************************************************************");
    log_warnx("* DEVELOPMENT MODE (--dev): NOT FOR PRODUCTION. The TEE is simulated in  *");
    log_warnx("* this process, its attestation proves nothing, SIMULATED quotes from    *");
    log_warnx("* callers are accepted, and without --policy EVERY app gets its keys.    *");
    log_warnx("**************************************************************************");
}

/* Log our own BootInfo: the values an operator allowlists (mrAggregated, deviceId, ...). */
static void log_self(struct kms *k)
{
    const struct ds_kms_boot_info *bi = NULL;
    char err[KMS_ERR_MAX] = "";
    json_t *j = NULL;
    if (kms_self_boot_info(k, &bi, err, sizeof(err)) < 0) {
        log_warnx("own boot info unavailable: %s", err);
        return;
    }
    if (ds_kms_boot_info_to_json(bi, &j) == 0) {
        char *s = json_dumps(j, JSON_COMPACT);
        log_info("own boot info: %s", s ? s : "?");
        free(s);
        json_decref(j);
    }
}

/* Start-up self-authorization before an automatic bootstrap (§5.4). */
static int self_allowed(struct kms *k)
{
    const struct ds_kms_boot_info *bi = NULL;
    struct ds_kms_decision d = {0};
    char err[KMS_ERR_MAX] = "";
    if (!k->cfg.enforce_self_authorization) {
        return 0;
    }
    int r = kms_self_boot_info(k, &bi, err, sizeof(err));
    if (r == 0) {
        r = kms_auth_check(k, DS_KMS_BOOT_KMS, bi, &d, err, sizeof(err));
    }
    if (r < 0) {
        log_warnx("self authorization failed: %s", err);
        return r;
    }
    if (!d.allowed) {
        log_warnx("KMS is not allowed: %s", d.reason);
        r = -DS_E_DENIED;
    }
    ds_kms_decision_done(&d);
    return r;
}

static int run_onboarding(struct kms *k)
{
    static const struct ds_rpc_site site = {
        .mounts = onboard_mounts,
        .mount_count = DS_ARRAY_SIZE(onboard_mounts),
        .routes = onboard_routes,
        .route_count = DS_ARRAY_SIZE(onboard_routes),
        .headers = kms_headers,
    };
    struct ds_rpc_site s = site;
    uint16_t port = 0;
    s.ctx = k;
    int r = ds_rpc_server_new(k->base, NULL, &k->onboard_srv);
    if (r == 0) {
        r = ds_rpc_server_listen_tcp(k->onboard_srv, k->cfg.onboard_addr, k->cfg.onboard_port, &s,
                                     NULL, &port);
    }
    if (r < 0) {
        log_warnx("onboard listener %s:%u: %s", k->cfg.onboard_addr, k->cfg.onboard_port,
                  ds_strerror(r));
        return r;
    }
    log_info("no keys yet: onboard listener (plain HTTP) on %s:%u", k->cfg.onboard_addr, port);
    event_base_dispatch(k->base);
    ds_rpc_server_free(k->onboard_srv);
    k->onboard_srv = NULL;
    return k->onboard_finished ? 0 : -EINTR;
}

static int obtain_keys(struct kms *k)
{
    struct kms_kp_reply rep;
    DS_TRY(kms_keyproc_call(&k->kp, KP_STATUS, NULL, 0, &rep));
    bool has = rep.status == 0 && rep.count == 1 && ((const uint8_t *)rep.fields[0].ptr)[0];
    kms_kp_reply_done(&rep);
    if (has) {
        return kms_keys_refresh(k);
    }
    if (kms_keys_exist(k->cfg.cert_dir)) {
        log_warnx("the key files in \"%s\" exist but cannot be loaded", k->cfg.cert_dir);
        return -DS_E_FORMAT;
    }
    if (k->cfg.auto_bootstrap_domain) {
        DS_TRY(self_allowed(k));
        return kms_keys_bootstrap(k, k->cfg.auto_bootstrap_domain, true, NULL);
    }
    if (k->cfg.onboard_enabled) {
        DS_TRY(run_onboarding(k));
        if (k->has_keys) {
            return 0;
        }
    }
    log_warnx("no keys in \"%s\" (bootstrap with --domain or onboard first)", k->cfg.cert_dir);
    return -DS_E_NOT_FOUND;
}

static char *rpc_domain(struct kms *k)
{
    char path[KMS_PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    if (kms_path(k, "rpc-domain", path, sizeof(path)) == 0 &&
        ds_read_file(path, DOMAIN_FILE_MAX, &data, &len) == 0) {
        char *d = strndup((const char *)data, len);
        free(data);
        if (d && ds_kms_domain_valid(d)) {
            return d;
        }
        free(d);
    }
    return strdup(k->cfg.auto_bootstrap_domain ? k->cfg.auto_bootstrap_domain : KMS_DEFAULT_DOMAIN);
}

static int serve(struct kms *k)
{
    static const struct ds_rpc_site main_site = {
        .mounts = kms_mounts,
        .mount_count = DS_ARRAY_SIZE(kms_mounts),
        .routes = kms_routes,
        .route_count = DS_ARRAY_SIZE(kms_routes),
        .headers = kms_headers,
    };
    static const struct ds_rpc_site admin_site = {
        .mounts = admin_mounts,
        .mount_count = DS_ARRAY_SIZE(admin_mounts),
        .headers = kms_headers,
        .filter = kms_admin_filter,
    };
    struct ds_rpc_site ms = main_site, as = admin_site;
    uint16_t port = 0;
    ms.ctx = k;
    as.ctx = k;
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    if (k->cfg.idle_timeout_ms) {
        lim.idle_timeout_ms = k->cfg.idle_timeout_ms;
    }
    int r = ds_rpc_server_new(k->base, &lim, &k->main_srv);
    if (r == 0) {
        r = ds_rpc_server_listen_tcp(k->main_srv, k->cfg.listen_addr, k->cfg.listen_port, &ms,
                                     k->tls, &port);
    }
    if (r < 0) {
        log_warnx("listener %s:%u: %s", k->cfg.listen_addr, k->cfg.listen_port, ds_strerror(r));
        return r;
    }
    log_info("KMS listening on %s:%u (RA-TLS, domain \"%s\", auth %s)", k->cfg.listen_addr, port,
             k->domain, kms_auth_name(k->cfg.auth));
    if (k->cfg.admin_enabled) {
        r = ds_rpc_server_new(k->base, NULL, &k->admin_srv);
        if (r == 0) {
            r = ds_rpc_server_listen_tcp(k->admin_srv, k->cfg.admin_addr, k->cfg.admin_port, &as,
                                         NULL, &port);
        }
        if (r < 0) {
            log_warnx("admin listener %s:%u: %s", k->cfg.admin_addr, k->cfg.admin_port,
                      ds_strerror(r));
            return r;
        }
        log_info("Admin listening on %s:%u", k->cfg.admin_addr, port);
    }
    event_base_dispatch(k->base);
    return 0;
}

static void cleanup(struct kms *k)
{
    ds_rpc_server_free(k->main_srv);
    ds_rpc_server_free(k->admin_srv);
    ds_rpc_server_free(k->onboard_srv);
    SSL_CTX_free(k->tls);
    kms_keyproc_stop(&k->kp);
    ds_tee_close(k->tee);
    ds_verifier_free(k->verifier);
    ds_sim_pki_free(k->dev_pki);
    ds_collateral_free(k->dev_coll);
    kms_coll_cache_free(k);
    ds_kms_boot_info_done(&k->self_bi);
    ds_kms_policy_free(k->policy);
    free(k->root_ca_pem);
    free(k->tmp_ca_pem);
    free(k->domain);
    free(k->vm_config);
    kms_config_done(&k->cfg);
    if (k->base) {
        event_base_free(k->base);
    }
}

int main(int argc, char **argv)
{
    struct kms k;
    struct event *sigint = NULL, *sigterm = NULL;
    char *domain = NULL;
    memset(&k, 0, sizeof(k));
    k.kp.fd = -1;
    log_init("dstack-kms", 0);
    json_set_alloc_funcs(malloc, wiping_free);
    int r = kms_config_parse(&k.cfg, argc, argv);
    if (r != 0) {
        kms_config_done(&k.cfg);
        return r > 0 ? 0 : 1;
    }
    log_set_verbose(k.cfg.verbose);
    log_debug("debug log on (level %d: -v or kms.toml default.log_level)", k.cfg.verbose);
    if (kms_config_validate(&k.cfg) < 0) {
        kms_config_done(&k.cfg);
        return 1;
    }
    if (k.cfg.check) {
        printf("configuration OK\n");
        kms_config_done(&k.cfg);
        return 0;
    }
    if (k.cfg.dev) {
        dev_banner();
    }
    signal(SIGPIPE, SIG_IGN);
    if (mkdir(k.cfg.cert_dir, 0700) != 0 && errno != EEXIST) {
        log_warn("cannot create the state dir \"%s\"", k.cfg.cert_dir);
        r = -errno;
        goto out;
    }
    /* 2. the key process, before any TEE handle, socket or listener exists */
    r = kms_keyproc_start(k.cfg.cert_dir, &k.kp);
    if (r < 0) {
        log_warnx("cannot start the key process: %s", ds_strerror(r));
        goto out;
    }
    log_info("key process %d started (no network)", (int)k.kp.pid);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    k.base = event_base_new();
    if (!k.base) {
        r = -ENOMEM;
        goto out;
    }
    sigint = evsignal_new(k.base, SIGINT, on_signal, k.base);
    sigterm = evsignal_new(k.base, SIGTERM, on_signal, k.base);
    if (!sigint || !sigterm || evsignal_add(sigint, NULL) < 0 || evsignal_add(sigterm, NULL) < 0) {
        log_warnx("cannot install signal handlers");
        r = -ENOMEM;
        goto out;
    }
    /* 3. TEE and verifier */
    r = kms_attest_open(&k);
    if (r < 0) {
        goto out;
    }
    log_self(&k);
    /* 4. keys */
    r = obtain_keys(&k);
    if (r < 0) {
        goto out;
    }
    /* 5. the RPC certificate */
    domain = rpc_domain(&k);
    r = domain ? kms_keys_setup_rpc(&k, domain) : -ENOMEM;
    if (r < 0) {
        log_warnx("cannot issue the RPC certificate: %s", ds_strerror(r));
        goto out;
    }
    /* 6. serve */
    r = serve(&k);
out:
    free(domain);
    if (sigint) {
        event_free(sigint);
    }
    if (sigterm) {
        event_free(sigterm);
    }
    cleanup(&k);
    curl_global_cleanup();
    return r < 0 ? 1 : 0;
}
