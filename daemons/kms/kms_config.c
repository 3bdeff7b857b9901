/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-kms configuration: one schema table for kms.toml (upstream's keys where they apply,
 * spec kms-ratls.md §5.6, read by the strict TOML reader of lib/config: unknown keys are
 * errors) and one option table for the command line, which overrides the file. `--check`
 * validates and exits; `--dump-config` prints the effective file settings. `--dev` is the
 * development mode: embedded simulated TEE, bootstrap on first start, allow-all unless a
 * policy file is given, and insecure_allow_simulated implied (loudly).
 */
#include <errno.h>
#include <getopt.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/config.h"
#include "kms.h"
#include "log.h"

/* ---- kms.toml -------------------------------------------------------------------------------- */

struct kms_toml {
    /* [default]: upstream's Rocket settings */
    int64_t workers;
    int64_t max_blocking;
    char *ident;
    char *temp_dir;
    int64_t keep_alive;
    int log_level;
    struct ds_config_strmap limits;
    char *rpc_address;
    uint16_t rpc_port;
    char *cert_dir;
    char *site_name;
    bool enforce_self_authorization;
    bool attest_rpc_cert;
    bool sev_snp_key_release;
    bool aws_nitro_tpm_key_release;
    char *tee;
    char *vm_config;
    bool insecure_allow_simulated;
    bool insecure_allow_external_trust_anchors;
    char *simulator_root_ca;
    char *pccs;
    char *amd_kds;
    bool image_verify;
    char *image_cache_dir;
    char *image_download_url;
    uint64_t image_download_timeout;
    bool admin_enabled;
    char *admin_address;
    uint16_t admin_port;
    char *admin_token;
    bool admin_insecure_no_auth;
    bool metrics_enabled;
    int auth_type;
    char *webhook_url;
    char *dev_gateway_app_id;
    char *policy_file;
    bool onboard_enabled;
    char *auto_bootstrap_domain;
    char *onboard_address;
    uint16_t onboard_port;
};

static const char *const auth_types[] = {"dev", "webhook", "policy", NULL};
/* Rocket's log levels; "debug" and "normal"/"info" map to ours, see load_toml */
static const char *const log_levels[] = {"off",  "critical", "error", "warn", "normal",
                                         "info", "debug",    "trace", NULL};
enum { LOG_LEVEL_DEBUG = 6, LOG_LEVEL_TRACE = 7 };

#define K(key_, type_, member_, def_, help_)                                                       \
    {                                                                                              \
        .key = key_, .type = type_, .offset = offsetof(struct kms_toml, member_), .def = def_,     \
        .help = help_                                                                              \
    }

static const struct ds_config_key toml_keys[] = {
    {.key = "default.workers",
     .type = DS_CFG_INT,
     .offset = offsetof(struct kms_toml, workers),
     .def = "8",
     .min = 1,
     .max = KMS_TOML_THREADS_MAX,
     .help = "Rocket worker threads: ignored (one event loop)"},
    {.key = "default.max_blocking",
     .type = DS_CFG_INT,
     .offset = offsetof(struct kms_toml, max_blocking),
     .def = "64",
     .min = 1,
     .max = KMS_TOML_THREADS_MAX,
     .help = "Rocket blocking threads: ignored"},
    K("default.ident", DS_CFG_STRING, ident, "DStack KMS", "Rocket Server header: ignored"),
    K("default.temp_dir", DS_CFG_PATH, temp_dir, "/tmp", "Rocket temp dir: ignored"),
    {.key = "default.keep_alive",
     .type = DS_CFG_INT,
     .offset = offsetof(struct kms_toml, keep_alive),
     .def = "10",
     .min = 0,
     .max = KMS_TOML_KEEP_ALIVE_MAX,
     .help = "keep-alive idle timeout in seconds (0: default kept)"},
    {.key = "default.log_level",
     .type = DS_CFG_ENUM,
     .offset = offsetof(struct kms_toml, log_level),
     .def = "normal",
     .choices = log_levels,
     .help = "debug / trace = verbose log; other levels: the normal log"},
    K("default.limits", DS_CFG_STRMAP, limits, NULL, "Rocket data limits: ignored"),
    K("rpc.address", DS_CFG_STRING, rpc_address, "0.0.0.0", "main RA-TLS listener address"),
    K("rpc.port", DS_CFG_PORT, rpc_port, "8000", "main RA-TLS listener port"),
    K("core.cert_dir", DS_CFG_PATH, cert_dir, "/etc/kms/certs", "state dir: keys and certs"),
    K("core.site_name", DS_CFG_STRING, site_name, "", "reported by GetAttestationInfo"),
    K("core.enforce_self_authorization", DS_CFG_BOOL, enforce_self_authorization, "true",
      "ask bootAuth/kms about this KMS on every trusted call"),
    K("core.attest_rpc_cert", DS_CFG_BOOL, attest_rpc_cert, "true",
      "embed an attestation in rpc.crt (refuse to start if that fails)"),
    K("core.sev_snp_key_release", DS_CFG_BOOL, sev_snp_key_release, "false",
      "accepted for compatibility (SEV-SNP is not supported)"),
    K("core.aws_nitro_tpm_key_release", DS_CFG_BOOL, aws_nitro_tpm_key_release, "false",
      "accepted for compatibility (Nitro TPM is not supported)"),
    K("core.tee", DS_CFG_STRING, tee, NULL, "TEE provider: tdx, sim:<socket>, embedded"),
    K("core.vm_config", DS_CFG_STRING, vm_config, NULL, "this KMS's own vm_config JSON"),
    K("core.attestation.insecure_allow_simulated", DS_CFG_BOOL, insecure_allow_simulated, "false",
      "INSECURE: trust a simulator's mock root instead of Intel's"),
    K("core.attestation.insecure_allow_external_trust_anchors", DS_CFG_BOOL,
      insecure_allow_external_trust_anchors, "false", "accepted for compatibility"),
    K("core.attestation.simulator_root_ca", DS_CFG_PATH, simulator_root_ca, NULL,
      "mock root CA (DER) trusted with insecure_allow_simulated"),
    K("core.attestation.urls.pccs", DS_CFG_STRING, pccs, NULL, "PCCS / PCS base URL"),
    K("core.attestation.urls.amd_kds", DS_CFG_STRING, amd_kds, NULL, "unused (no SEV-SNP)"),
    K("core.image.verify", DS_CFG_BOOL, image_verify, "false",
      "OS image verification (not implemented: must be false)"),
    K("core.image.cache_dir", DS_CFG_PATH, image_cache_dir, NULL, "unused"),
    K("core.image.download_url", DS_CFG_STRING, image_download_url, NULL, "unused"),
    K("core.image.download_timeout", DS_CFG_DURATION, image_download_timeout, "2m", "unused"),
    K("core.admin.enabled", DS_CFG_BOOL, admin_enabled, "false", "Admin listener"),
    K("core.admin.address", DS_CFG_STRING, admin_address, "127.0.0.1", "Admin address"),
    K("core.admin.port", DS_CFG_PORT, admin_port, "8001", "Admin port"),
    {.key = "core.admin.auth_token",
     .type = DS_CFG_STRING,
     .offset = offsetof(struct kms_toml, admin_token),
     .help = "Admin token",
     .flags = DS_CFG_SECRET},
    K("core.admin.insecure_no_auth", DS_CFG_BOOL, admin_insecure_no_auth, "false",
      "INSECURE: Admin without a token"),
    K("core.metrics.enabled", DS_CFG_BOOL, metrics_enabled, "false",
      "GET /metrics (Prometheus text) on the main listener"),
    {.key = "core.auth_api.type",
     .type = DS_CFG_ENUM,
     .offset = offsetof(struct kms_toml, auth_type),
     .def = "webhook",
     .choices = auth_types,
     .help = "authorization backend: dev, webhook, policy"},
    K("core.auth_api.webhook.url", DS_CFG_STRING, webhook_url, NULL, "webhook base URL"),
    K("core.auth_api.dev.gateway_app_id", DS_CFG_STRING, dev_gateway_app_id, "any",
      "dev backend gateway app id"),
    K("core.auth_api.policy.file", DS_CFG_PATH, policy_file, NULL,
      "auth-simple JSON policy file (re-read when it changes)"),
    K("core.onboard.enabled", DS_CFG_BOOL, onboard_enabled, "true", "onboard listener"),
    K("core.onboard.auto_bootstrap_domain", DS_CFG_STRING, auto_bootstrap_domain, "",
      "bootstrap without the onboard listener"),
    K("core.onboard.address", DS_CFG_STRING, onboard_address, "0.0.0.0", "onboard address"),
    K("core.onboard.port", DS_CFG_PORT, onboard_port, "8000", "onboard port"),
};

static const struct ds_config_schema toml_schema = {
    .name = "kms.toml",
    .keys = toml_keys,
    .count = DS_ARRAY_SIZE(toml_keys),
    .size = sizeof(struct kms_toml),
};

static int set_str(char **dst, const char *src)
{
    free(*dst);
    *dst = src && *src ? strdup(src) : NULL;
    return !src || !*src || *dst ? 0 : -ENOMEM;
}

static int load_toml(struct kms_config *c, const char *path, bool dump)
{
    struct kms_toml t;
    struct ds_config_err err;
    memset(&t, 0, sizeof(t));
    int r = ds_config_load(&toml_schema, path, &t, &err);
    if (r < 0) {
        log_warnx("%s", err.msg[0] ? err.msg : ds_strerror(r));
        return r;
    }
    if (dump) {
        if (ds_config_dump(&toml_schema, &t, stdout) < 0) {
            log_warnx("cannot print the configuration");
        }
    }
    /* [default] (upstream's Rocket settings): keep_alive and log_level mean something here;
     * the rest is accepted for compatibility and has no effect */
    if (t.keep_alive > 0) {
        c->idle_timeout_ms = (unsigned)t.keep_alive * 1000u;
    }
    if (t.log_level >= LOG_LEVEL_DEBUG) {
        c->verbose = t.log_level - LOG_LEVEL_DEBUG + 1;
    }
    log_info("%s: [default] keep_alive and log_level are used; workers, max_blocking, ident, "
             "temp_dir and limits are accepted and ignored (one event loop)",
             path);
    snprintf(c->listen_addr, sizeof(c->listen_addr), "%s", t.rpc_address);
    c->listen_port = t.rpc_port;
    c->enforce_self_authorization = t.enforce_self_authorization;
    c->attest_rpc_cert = t.attest_rpc_cert;
    c->insecure_allow_simulated = t.insecure_allow_simulated;
    c->auth = (enum kms_auth_type)t.auth_type;
    c->admin_enabled = t.admin_enabled;
    snprintf(c->admin_addr, sizeof(c->admin_addr), "%s", t.admin_address);
    c->admin_port = t.admin_port;
    c->admin_insecure_no_auth = t.admin_insecure_no_auth;
    c->metrics_enabled = t.metrics_enabled;
    c->onboard_enabled = t.onboard_enabled;
    snprintf(c->onboard_addr, sizeof(c->onboard_addr), "%s", t.onboard_address);
    c->onboard_port = t.onboard_port;
    if (t.image_verify) {
        log_warnx("%s: core.image.verify = true is not supported (OS-image verification is not "
                  "implemented); set it to false and pin osImageHash in the policy",
                  path);
        r = -DS_E_UNSUPPORTED;
    }
    if (r == 0) {
        r = set_str(&c->cert_dir, t.cert_dir);
    }
    if (r == 0) {
        r = set_str(&c->site_name, t.site_name);
    }
    if (r == 0) {
        r = set_str(&c->tee, t.tee);
    }
    if (r == 0) {
        r = set_str(&c->vm_config, t.vm_config);
    }
    if (r == 0) {
        r = set_str(&c->simulator_root_ca, t.simulator_root_ca);
    }
    if (r == 0) {
        r = set_str(&c->pccs_url, t.pccs);
    }
    if (r == 0) {
        r = set_str(&c->admin_token, t.admin_token);
    }
    if (r == 0) {
        r = set_str(&c->webhook_url, t.webhook_url);
    }
    if (r == 0) {
        r = set_str(&c->gateway_app_id, t.dev_gateway_app_id);
    }
    if (r == 0) {
        r = set_str(&c->policy_file, t.policy_file);
    }
    if (r == 0) {
        r = set_str(&c->auto_bootstrap_domain, t.auto_bootstrap_domain);
    }
    ds_config_free(&toml_schema, &t);
    return r;
}

/* ---- command line ---------------------------------------------------------------------------- */

enum {
    OPT_DEV = 256,
    OPT_CHECK,
    OPT_CONFIG,
    OPT_STATE_DIR,
    OPT_LISTEN,
    OPT_ONBOARD_LISTEN,
    OPT_DOMAIN,
    OPT_AUTH,
    OPT_WEBHOOK,
    OPT_POLICY,
    OPT_GATEWAY_APP_ID,
    OPT_NO_SELF_AUTH,
    OPT_NO_ATTEST_RPC,
    OPT_TEE,
    OPT_PCCS,
    OPT_ALLOW_SIM,
    OPT_SIM_ROOT,
    OPT_SITE_NAME,
    OPT_VM_CONFIG,
    OPT_ADMIN_LISTEN,
    OPT_ADMIN_TOKEN,
    OPT_ADMIN_NO_AUTH,
    OPT_DUMP,
    OPT_METRICS,
    OPT_VERSION,
};

static const struct option options[] = {
    {"dev", no_argument, NULL, OPT_DEV},
    {"check", no_argument, NULL, OPT_CHECK},
    {"config", required_argument, NULL, OPT_CONFIG},
    {"state-dir", required_argument, NULL, OPT_STATE_DIR},
    {"cert-dir", required_argument, NULL, OPT_STATE_DIR},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"onboard-listen", required_argument, NULL, OPT_ONBOARD_LISTEN},
    {"domain", required_argument, NULL, OPT_DOMAIN},
    {"auth", required_argument, NULL, OPT_AUTH},
    {"webhook", required_argument, NULL, OPT_WEBHOOK},
    {"policy", required_argument, NULL, OPT_POLICY},
    {"gateway-app-id", required_argument, NULL, OPT_GATEWAY_APP_ID},
    {"no-self-authorization", no_argument, NULL, OPT_NO_SELF_AUTH},
    {"no-attest-rpc-cert", no_argument, NULL, OPT_NO_ATTEST_RPC},
    {"tee", required_argument, NULL, OPT_TEE},
    {"pccs-url", required_argument, NULL, OPT_PCCS},
    {"insecure-allow-simulated", no_argument, NULL, OPT_ALLOW_SIM},
    {"simulator-root-ca", required_argument, NULL, OPT_SIM_ROOT},
    {"site-name", required_argument, NULL, OPT_SITE_NAME},
    {"vm-config", required_argument, NULL, OPT_VM_CONFIG},
    {"admin-listen", required_argument, NULL, OPT_ADMIN_LISTEN},
    {"admin-token", required_argument, NULL, OPT_ADMIN_TOKEN},
    {"admin-insecure-no-auth", no_argument, NULL, OPT_ADMIN_NO_AUTH},
    {"dump-config", no_argument, NULL, OPT_DUMP},
    {"metrics", no_argument, NULL, OPT_METRICS},
    {"verbose", no_argument, NULL, 'v'},
    {"help", no_argument, NULL, 'h'},
    {"version", no_argument, NULL, OPT_VERSION},
    {NULL, 0, NULL, 0},
};

static void usage(FILE *out)
{
    fprintf(
        out,
        "usage: dstack-kms [--config kms.toml] [options]\n"
        "       dstack-kms --dev --state-dir DIR --listen ADDR:PORT [--policy FILE]\n"
        "  --dev                      development mode (embedded simulated TEE, bootstrap on\n"
        "                             first start, allow-all unless --policy): NOT FOR PRODUCTION\n"
        "  --config FILE              kms.toml (command-line options override it)\n"
        "  -n, --check                validate the configuration and exit\n"
        "  --dump-config              print the effective kms.toml settings\n"
        "  --state-dir DIR            key and certificate directory (core.cert_dir)\n"
        "  --listen ADDR:PORT         main RA-TLS listener (port 0 = any)\n"
        "  --onboard-listen ADDR:PORT onboard listener (plain HTTP) while there are no keys\n"
        "  --domain NAME              bootstrap automatically with this RPC domain\n"
        "  --auth dev|webhook|policy  authorization backend\n"
        "  --webhook URL              webhook backend base URL (implies --auth webhook)\n"
        "  --policy FILE              auth-simple JSON policy (implies --auth policy)\n"
        "  --gateway-app-id ID        gateway app id of the dev backend (default any)\n"
        "  --no-self-authorization    do not ask bootAuth/kms about this KMS\n"
        "  --no-attest-rpc-cert       no attestation in rpc.crt\n"
        "  --tee SPEC                 tdx, sim:<socket>, embedded[:<seed>]\n"
        "  --pccs-url URL             collateral service\n"
        "  --insecure-allow-simulated trust a simulator's mock root (INSECURE)\n"
        "  --simulator-root-ca FILE   that root (DER); else URL/dstack-sim/v1/root-ca.der\n"
        "  --site-name NAME, --vm-config JSON\n"
        "  --admin-listen ADDR:PORT   Admin service (needs --admin-token or\n"
        "                             DSTACK_KMS_ADMIN_TOKEN, or --admin-insecure-no-auth)\n"
        "  -v, --verbose, -h, --help, --version\n");
}

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

static void defaults(struct kms_config *c)
{
    memset(c, 0, sizeof(*c));
    snprintf(c->listen_addr, sizeof(c->listen_addr), "0.0.0.0");
    c->listen_port = KMS_DEFAULT_PORT;
    snprintf(c->onboard_addr, sizeof(c->onboard_addr), "0.0.0.0");
    c->onboard_port = KMS_DEFAULT_PORT;
    snprintf(c->admin_addr, sizeof(c->admin_addr), "127.0.0.1");
    c->admin_port = 8001;
    c->enforce_self_authorization = true;
    c->attest_rpc_cert = true;
    c->auth = KMS_AUTH_WEBHOOK;
}

int kms_config_parse(struct kms_config *c, int argc, char **argv)
{
    const char *config = NULL;
    bool dump = false;
    int opt, r = 0;
    defaults(c);
    /* pass 1: the file, so that the command line overrides it */
    opterr = 0;
    while ((opt = getopt_long(argc, argv, "nvh", options, NULL)) != -1) {
        if (opt == OPT_CONFIG) {
            config = optarg;
        } else if (opt == OPT_DUMP) {
            dump = true;
        }
    }
    if (config) {
        DS_TRY(load_toml(c, config, dump));
        r = set_str(&c->config, config);
    }
    optind = 0;
    opterr = 1;
    while (r == 0 && (opt = getopt_long(argc, argv, "nvh", options, NULL)) != -1) {
        switch (opt) {
        case OPT_DEV:
            c->dev = true;
            break;
        case 'n':
        case OPT_CHECK:
            c->check = true;
            break;
        case OPT_CONFIG:
        case OPT_DUMP:
            break;
        case OPT_STATE_DIR:
            r = set_str(&c->cert_dir, optarg);
            break;
        case OPT_LISTEN:
            r = parse_addr(optarg, c->listen_addr, sizeof(c->listen_addr), &c->listen_port);
            if (r < 0) {
                log_warnx("bad --listen \"%s\" (ADDR:PORT)", optarg);
            }
            break;
        case OPT_ONBOARD_LISTEN:
            c->onboard_enabled = true;
            r = parse_addr(optarg, c->onboard_addr, sizeof(c->onboard_addr), &c->onboard_port);
            if (r < 0) {
                log_warnx("bad --onboard-listen \"%s\" (ADDR:PORT)", optarg);
            }
            break;
        case OPT_DOMAIN:
            r = set_str(&c->auto_bootstrap_domain, optarg);
            break;
        case OPT_AUTH:
            if (strcmp(optarg, "dev") == 0) {
                c->auth = KMS_AUTH_DEV;
            } else if (strcmp(optarg, "webhook") == 0) {
                c->auth = KMS_AUTH_WEBHOOK;
            } else if (strcmp(optarg, "policy") == 0) {
                c->auth = KMS_AUTH_POLICY;
            } else {
                log_warnx("bad --auth \"%s\" (dev, webhook, policy)", optarg);
                r = -EINVAL;
            }
            break;
        case OPT_WEBHOOK:
            c->auth = KMS_AUTH_WEBHOOK;
            r = set_str(&c->webhook_url, optarg);
            break;
        case OPT_POLICY:
            c->auth = KMS_AUTH_POLICY;
            r = set_str(&c->policy_file, optarg);
            break;
        case OPT_GATEWAY_APP_ID:
            r = set_str(&c->gateway_app_id, optarg);
            break;
        case OPT_NO_SELF_AUTH:
            c->enforce_self_authorization = false;
            break;
        case OPT_NO_ATTEST_RPC:
            c->attest_rpc_cert = false;
            break;
        case OPT_TEE:
            r = set_str(&c->tee, optarg);
            break;
        case OPT_PCCS:
            r = set_str(&c->pccs_url, optarg);
            break;
        case OPT_ALLOW_SIM:
            c->insecure_allow_simulated = true;
            break;
        case OPT_SIM_ROOT:
            r = set_str(&c->simulator_root_ca, optarg);
            break;
        case OPT_SITE_NAME:
            r = set_str(&c->site_name, optarg);
            break;
        case OPT_VM_CONFIG:
            r = set_str(&c->vm_config, optarg);
            break;
        case OPT_ADMIN_LISTEN:
            c->admin_enabled = true;
            r = parse_addr(optarg, c->admin_addr, sizeof(c->admin_addr), &c->admin_port);
            if (r < 0) {
                log_warnx("bad --admin-listen \"%s\" (ADDR:PORT)", optarg);
            }
            break;
        case OPT_ADMIN_TOKEN:
            r = set_str(&c->admin_token, optarg);
            break;
        case OPT_ADMIN_NO_AUTH:
            c->admin_insecure_no_auth = true;
            break;
        case OPT_METRICS:
            c->metrics_enabled = true;
            break;
        case 'v':
            c->verbose++;
            break;
        case 'h':
            usage(stdout);
            return 1;
        case OPT_VERSION:
            printf("dstack-kms %s\n", KMS_VERSION);
            return 1;
        default:
            usage(stderr);
            return -EINVAL;
        }
    }
    if (r == 0 && optind < argc) {
        log_warnx("unexpected argument \"%s\"", argv[optind]);
        r = -EINVAL;
    }
    if (r == 0 && !c->admin_token && getenv("DSTACK_KMS_ADMIN_TOKEN")) {
        r = set_str(&c->admin_token, getenv("DSTACK_KMS_ADMIN_TOKEN"));
    }
    if (r == 0 && c->dev) {
        /* dev: allow-all unless a backend was chosen explicitly */
        if (!c->policy_file && !c->webhook_url) {
            c->auth = KMS_AUTH_DEV;
        }
        /* bootstrap on first start, unless onboarding was asked for */
        if (!c->auto_bootstrap_domain && !c->onboard_enabled) {
            r = set_str(&c->auto_bootstrap_domain, KMS_DEFAULT_DOMAIN);
        }
        if (r == 0 && !c->tee) {
            r = set_str(&c->tee, "embedded");
        }
    }
    if (r == 0 && !c->cert_dir) {
        r = set_str(&c->cert_dir, "/etc/kms/certs");
    }
    return r;
}

int kms_config_validate(const struct kms_config *c)
{
    if (c->auth == KMS_AUTH_WEBHOOK && !c->webhook_url) {
        log_warnx("the webhook backend needs a URL (--webhook, core.auth_api.webhook.url)");
        return -EINVAL;
    }
    if (c->auth == KMS_AUTH_POLICY && !c->policy_file) {
        log_warnx("the policy backend needs a file (--policy, core.auth_api.policy.file)");
        return -EINVAL;
    }
    if (c->auto_bootstrap_domain && !ds_kms_domain_valid(c->auto_bootstrap_domain)) {
        log_warnx("invalid bootstrap domain \"%s\"", c->auto_bootstrap_domain);
        return -EINVAL;
    }
    if (c->admin_enabled && !c->admin_token && !c->admin_insecure_no_auth) {
        log_warnx("the Admin listener needs a token (--admin-token, core.admin.auth_token, "
                  "DSTACK_KMS_ADMIN_TOKEN) or insecure_no_auth");
        return -EINVAL;
    }
    if (c->insecure_allow_simulated && !c->simulator_root_ca && !c->pccs_url && !c->dev) {
        log_warnx("insecure_allow_simulated needs simulator_root_ca or a PCCS URL");
        return -EINVAL;
    }
    if (!c->dev && c->auth == KMS_AUTH_DEV) {
        log_warnx("auth_api.type = dev outside --dev: EVERY app and KMS is allowed");
    }
    return 0;
}

void kms_config_done(struct kms_config *c)
{
    free(c->tee);
    free(c->cert_dir);
    free(c->config);
    free(c->auto_bootstrap_domain);
    free(c->webhook_url);
    free(c->policy_file);
    free(c->gateway_app_id);
    free(c->pccs_url);
    free(c->simulator_root_ca);
    free(c->site_name);
    free(c->vm_config);
    if (c->admin_token) {
        ds_wipe(c->admin_token, strlen(c->admin_token));
        free(c->admin_token);
    }
    memset(c, 0, sizeof(*c));
}
