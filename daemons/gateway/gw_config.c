/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gateway.toml (spec host-side.md §4.7) as a lib/config schema: upstream's keys and defaults
 * (Rocket's top-level address/port and [tls], [core] with attestation, auth, admin, debug, wg,
 * proxy, recycle, sync), plus our own: core.wg.enabled (false = registry only, no `wg` calls),
 * core.proxy.enabled, core.attestation.insecure_allow_simulated / simulator_root_ca (accept
 * quotes from dstack-tee-sim), core.admin.port. The command line: -c/--config, --check,
 * --dump-config, --config-doc, -v. Cross-key rules (§4.3 address plan, admin token, what is
 * not implemented) are checked after loading so `--check` reports them too.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gw_ctl.h"
#include "log.h"

#define K(key_, type_, member_, def_, help_)                                                       \
    {                                                                                              \
        key_, type_, offsetof(struct gw_config, member_), def_, 0, 0, NULL, NULL, help_, 0         \
    }
#define KF(key_, type_, member_, def_, help_, flags_)                                              \
    {                                                                                              \
        key_, type_, offsetof(struct gw_config, member_), def_, 0, 0, NULL, NULL, help_, flags_    \
    }
#define KR(key_, type_, member_, def_, min_, max_, help_)                                          \
    {                                                                                              \
        key_, type_, offsetof(struct gw_config, member_), def_, min_, max_, NULL, NULL, help_, 0   \
    }

static const struct ds_config_key gw_keys[] = {
    KR("workers", DS_CFG_INT, workers, "0", 0, 4096, "Rocket workers (accepted, unused)"),
    KR("max_blocking", DS_CFG_INT, max_blocking, "0", 0, 65536, "Rocket (accepted, unused)"),
    K("ident", DS_CFG_STRING, ident, NULL, "Rocket server ident (accepted, unused)"),
    K("temp_dir", DS_CFG_PATH, temp_dir, NULL, "Rocket temp dir (accepted, unused)"),
    KR("keep_alive", DS_CFG_INT, keep_alive, "0", 0, 3600, "Rocket (accepted, unused)"),
    K("log_level", DS_CFG_STRING, log_level, NULL, "Rocket log level (use -v instead)"),
    K("address", DS_CFG_STRING, address, "0.0.0.0", "main RPC server address"),
    K("port", DS_CFG_PORT, port, "8000", "main RPC server port (0 = any free port)"),
    K("tls.key", DS_CFG_PATH, tls_key, NULL, "PEM private key of the RPC server"),
    K("tls.certs", DS_CFG_PATH, tls_certs, NULL, "PEM certificate chain of the RPC server"),
    K("tls.mutual.ca_certs", DS_CFG_PATH, tls_ca_certs, NULL,
      "PEM CA(s) client certificates must chain to (the KMS root CA)"),
    K("tls.mutual.mandatory", DS_CFG_BOOL, tls_mandatory, "false",
      "refuse TLS clients without a certificate"),
    K("core.kms_url", DS_CFG_STRING, kms_url, NULL, "KMS URL (informational)"),
    K("core.set_ulimit", DS_CFG_BOOL, set_ulimit, "true", "raise RLIMIT_NOFILE at start"),
    K("core.rpc_domain", DS_CFG_STRING, rpc_domain, "",
      "non-empty: get the RPC server's RA-TLS certificate from the guest agent for this name and "
      "write it to the [tls] paths"),
    K("core.agent_socket", DS_CFG_PATH, agent_socket, "/var/run/dstack.sock",
      "the guest agent's dstack.sock (our addition)"),
    K("core.attestation.insecure_allow_external_trust_anchors", DS_CFG_BOOL, att_external_anchors,
      "false", "accepted, unused"),
    K("core.attestation.urls.pccs", DS_CFG_STRING, att_pccs, NULL,
      "collateral service for quotes in client certificates (default Intel PCS)"),
    K("core.attestation.urls.amd_kds", DS_CFG_STRING, att_amd_kds, NULL, "accepted, unused"),
    K("core.attestation.insecure_allow_simulated", DS_CFG_BOOL, att_allow_simulated, "false",
      "accept quotes from dstack-tee-sim (mock root); tests only"),
    K("core.attestation.simulator_root_ca", DS_CFG_PATH, att_sim_root, NULL,
      "DER of the simulator's mock root (else fetched from the PCCS URL)"),
    K("core.auth.enabled", DS_CFG_BOOL, auth_enabled, "false", "ask a webhook before RegisterCvm"),
    K("core.auth.url", DS_CFG_STRING, auth_url, NULL,
      "webhook URL (POST AppInfo JSON; 2xx = allow)"),
    K("core.auth.timeout", DS_CFG_DURATION, auth_timeout_ms, "5s", "webhook timeout"),
    K("core.admin.enabled", DS_CFG_BOOL, admin_enabled, "false", "serve the Admin service"),
    K("core.admin.address", DS_CFG_STRING, admin_address, "127.0.0.1:8011",
      "admin listener host:port (or host with core.admin.port)"),
    K("core.admin.port", DS_CFG_PORT, admin_port, "0", "admin port when address has none"),
    KF("core.admin.auth_token", DS_CFG_STRING, admin_token, NULL,
       "admin token (else env DSTACK_GATEWAY_ADMIN_TOKEN or ADMIN_API_TOKEN)", DS_CFG_SECRET),
    KF("core.admin.admin_token", DS_CFG_STRING, admin_token_alias, NULL, "alias of auth_token",
       DS_CFG_SECRET),
    K("core.admin.insecure_no_auth", DS_CFG_BOOL, admin_no_auth, "false",
      "serve Admin without a token (never in production)"),
    K("core.debug.insecure_enable_debug_rpc", DS_CFG_BOOL, dbg_rpc, "false",
      "debug RPC server (not implemented: must stay false)"),
    K("core.debug.insecure_skip_attestation", DS_CFG_BOOL, dbg_skip_att, "false",
      "do not verify quotes in client certificates (app info extension only)"),
    K("core.debug.insecure_localhost_backend", DS_CFG_BOOL, dbg_localhost, "false",
      "id \"localhost\" routes to 127.0.0.1"),
    K("core.debug.address", DS_CFG_STRING, dbg_address, "127.0.0.1:8012", "debug server address"),
    K("core.wg.enabled", DS_CFG_BOOL, wg_enabled, "true",
      "drive the WireGuard interface with `wg` (false: registry only)"),
    K("core.wg.public_key", DS_CFG_STRING, wg_public_key, NULL,
      "gateway WireGuard public key (derived from private_key when absent)"),
    KF("core.wg.private_key", DS_CFG_STRING, wg_private_key, NULL,
       "gateway WireGuard private key (base64)", DS_CFG_REQUIRED | DS_CFG_SECRET),
    K("core.wg.listen_port", DS_CFG_PORT, wg_listen_port, "51820", "WireGuard UDP port"),
    K("core.wg.ip", DS_CFG_STRING, wg_ip, "10.0.0.1/24", "gateway address / network"),
    K("core.wg.reserved_net", DS_CFG_STRINGS, wg_reserved, "[\"10.0.0.1/32\"]",
      "never handed to CVMs (must contain the gateway address)"),
    K("core.wg.client_ip_range", DS_CFG_STRING, wg_range, "10.0.0.0/25",
      "addresses handed to CVMs"),
    K("core.wg.config_path", DS_CFG_PATH, wg_config_path, "/etc/wireguard/wg0.conf",
      "accepted (peers are set with `wg set`)"),
    K("core.wg.interface", DS_CFG_STRING, wg_interface, "wg0", "WireGuard interface"),
    K("core.wg.endpoint", DS_CFG_STRING, wg_endpoint, "10.0.2.2:51820",
      "endpoint CVMs use to reach this gateway"),
    K("core.proxy.enabled", DS_CFG_BOOL, px_enabled, "true", "run the SNI proxy"),
    K("core.proxy.tls_crypto_provider", DS_CFG_STRING, px_crypto, "aws-lc-rs",
      "accepted (OpenSSL is used)"),
    K("core.proxy.tls_versions", DS_CFG_STRINGS, px_tls_versions, "[\"1.2\"]",
      "TLS versions when terminating (\"1.2\", \"1.3\")"),
    K("core.proxy.listen_addr", DS_CFG_STRING, px_listen_addr, "0.0.0.0", "proxy address"),
    K("core.proxy.listen_port", DS_CFG_PORT, px_listen_port, "8443", "proxy port"),
    K("core.proxy.agent_port", DS_CFG_PORT, px_agent_port, "8090",
      "guest agent port (RegisterCvm internal_port)"),
    K("core.proxy.buffer_size", DS_CFG_SIZE, px_buffer_size, "65536", "relay buffer"),
    KR("core.proxy.connect_top_n", DS_CFG_INT, px_top_n, "3", 0, 64, "backends tried at once"),
    K("core.proxy.app_address_ns_prefix", DS_CFG_STRING, px_ns_prefix, "_dstack-app-address",
      "TXT prefix for custom domains"),
    K("core.proxy.app_address_ns_compat", DS_CFG_BOOL, px_ns_compat, "true",
      "also try _tapp-address"),
    K("core.proxy.app_address_dns_servers", DS_CFG_STRINGS, px_dns_servers, "[]",
      "DNS servers for TXT lookups"),
    KR("core.proxy.workers", DS_CFG_INT, px_workers, "32", 0, 4096, "proxy event loops (0 = CPUs)"),
    K("core.proxy.thread_per_core", DS_CFG_BOOL, px_thread_per_core, "true", "workers <= CPUs"),
    K("core.proxy.connection_rebalance", DS_CFG_BOOL, px_rebalance, "true", "accepted"),
    K("core.proxy.external_port", DS_CFG_PORT, px_external_port, "443",
      "public port (RegisterCvm agent.external_port, Info)"),
    KR("core.proxy.max_connections_per_app", DS_CFG_INT, px_max_conn_per_app, "2000", 0, 100000000,
       "0 = unlimited"),
    K("core.proxy.inbound_pp_enabled", DS_CFG_BOOL, px_inbound_pp, "false", "expect PROXY headers"),
    K("core.proxy.base_domain", DS_CFG_STRING, px_base_domain, NULL, "static wildcard domain"),
    K("core.proxy.cert_chain", DS_CFG_PATH, px_cert_chain, NULL, "static wildcard cert chain"),
    K("core.proxy.cert_key", DS_CFG_PATH, px_cert_key, NULL, "static wildcard key"),
    K("core.proxy.cert_source", DS_CFG_STRING, px_cert_source, "files",
      "wildcard certificate: \"files\" (cert_chain/cert_key) or \"agent\" (guest agent, KMS CA)"),
    K("core.proxy.agent_cert_validity", DS_CFG_DURATION, px_agent_cert_validity, "0s",
      "cert_source \"agent\": requested validity (0 = the agent's default)"),
    KR("core.proxy.app_info_refresh", DS_CFG_DURATION, px_app_info_refresh, "5m", 1000,
       31536000000LL, "refresh of the agent Info served at gateway.<base>/app-info"),
    K("core.proxy.tcp_splice.after_bytes", DS_CFG_SIZE, px_splice_bytes, NULL,
      "splice after this many bytes (absent = off)"),
    K("core.proxy.tcp_splice.after_duration", DS_CFG_DURATION, px_splice_dur, NULL,
      "splice after this long (absent = off)"),
    K("core.proxy.ktls.after_bytes", DS_CFG_SIZE, px_ktls_bytes, NULL, "accepted"),
    K("core.proxy.ktls.after_duration", DS_CFG_DURATION, px_ktls_dur, NULL, "accepted"),
    K("core.proxy.port_policy_fetch.timeout", DS_CFG_DURATION, ppf_timeout, "10s",
      "one agent Info request of the port policy fetch"),
    KR("core.proxy.port_policy_fetch.max_retries", DS_CFG_INT, ppf_retries, "5", 0, 100,
       "port policy fetch: retries after the first attempt"),
    K("core.proxy.port_policy_fetch.backoff_initial", DS_CFG_DURATION, ppf_backoff_initial, "1s",
      "port policy fetch: first retry delay (doubles)"),
    K("core.proxy.port_policy_fetch.backoff_max", DS_CFG_DURATION, ppf_backoff_max, "30s",
      "port policy fetch: longest retry delay"),
    K("core.proxy.timeouts.connect", DS_CFG_DURATION, to_connect, "5s", "backend connect"),
    K("core.proxy.timeouts.handshake", DS_CFG_DURATION, to_handshake, "5s", "ClientHello/TLS"),
    K("core.proxy.timeouts.cache_top_n", DS_CFG_DURATION, to_cache_top_n, "30s", "accepted"),
    K("core.proxy.timeouts.handshake_stale", DS_CFG_DURATION, to_handshake_stale, "30m",
      "WireGuard handshake older = unhealthy"),
    K("core.proxy.timeouts.dns_resolve", DS_CFG_DURATION, to_dns, "5s", "TXT lookup"),
    K("core.proxy.timeouts.data_timeout_enabled", DS_CFG_BOOL, to_data_enabled, "true",
      "apply the idle timeout"),
    K("core.proxy.timeouts.idle", DS_CFG_DURATION, to_idle, "10m", "idle connection"),
    K("core.proxy.timeouts.write", DS_CFG_DURATION, to_write, "5s", "accepted"),
    K("core.proxy.timeouts.shutdown", DS_CFG_DURATION, to_shutdown, "5s", "drain"),
    K("core.proxy.timeouts.total", DS_CFG_DURATION, to_total, "5h", "whole connection"),
    K("core.proxy.timeouts.pp_header", DS_CFG_DURATION, to_pp_header, "5s", "PROXY header"),
    K("core.recycle.enabled", DS_CFG_BOOL, rc_enabled, "true", "remove stale instances"),
    KR("core.recycle.interval", DS_CFG_DURATION, rc_interval, "5m", 1000, 31536000000LL,
       "recycle period (>= 1s)"),
    K("core.recycle.timeout", DS_CFG_DURATION, rc_timeout, "10h",
      "registered and no handshake for this long = removed"),
    K("core.recycle.node_timeout", DS_CFG_DURATION, rc_node_timeout, "10m", "accepted"),
    K("core.sync.enabled", DS_CFG_BOOL, sync_enabled, "false",
      "cluster sync (not implemented: must stay false)"),
    KR("core.sync.node_id", DS_CFG_INT, sync_node_id, "0", 0, 1000000, "this node's id"),
    K("core.sync.my_url", DS_CFG_STRING, sync_my_url, "https://localhost:8011",
      "this node's URL (GatewayNodeInfo.url)"),
    K("core.sync.interval", DS_CFG_DURATION, sync_interval, "1m", "accepted"),
    K("core.sync.timeout", DS_CFG_DURATION, sync_timeout, "30s", "accepted"),
    K("core.sync.bootnode", DS_CFG_STRING, sync_bootnode, "", "accepted"),
    K("core.sync.data_dir", DS_CFG_PATH, sync_data_dir, "/dstack-gateway/data",
      "state directory (gateway.db, wg.key)"),
    K("core.sync.persist_interval", DS_CFG_DURATION, sync_persist, "5m", "accepted"),
    K("core.sync.sync_connections_enabled", DS_CFG_BOOL, sync_conn_enabled, "true", "accepted"),
    K("core.sync.sync_connections_interval", DS_CFG_DURATION, sync_conn_interval, "30s",
      "accepted"),
};

const struct ds_config_schema gw_config_schema = {
    .name = "gateway.toml",
    .keys = gw_keys,
    .count = DS_ARRAY_SIZE(gw_keys),
    .size = sizeof(struct gw_config),
};

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack-gateway [-v] [-c FILE] [--check] [--dump-config] [--config-doc]\n"
                 "       dstack-gateway proxy-only --config FILE\n"
                 "  -c, --config FILE  gateway.toml (default: built-in defaults)\n"
                 "  --check            validate the configuration and exit\n"
                 "  --dump-config      print the effective configuration (secrets omitted)\n"
                 "  --config-doc       print the key reference (Markdown)\n"
                 "  -v                 more logging (repeatable)\n");
}

int gw_opts_parse(int argc, char **argv, struct gw_opts *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            o->verbose++;
        } else if (strcmp(a, "-c") == 0 || strcmp(a, "--config") == 0) {
            if (i + 1 >= argc) {
                log_warnx("%s needs a FILE", a);
                return 2;
            }
            o->config_path = argv[++i];
        } else if (strncmp(a, "--config=", 9) == 0) {
            o->config_path = a + 9;
        } else if (strcmp(a, "--check") == 0) {
            o->check = true;
        } else if (strcmp(a, "--dump-config") == 0) {
            o->dump = true;
        } else if (strcmp(a, "--config-doc") == 0) {
            o->doc = true;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 1;
        } else if (strcmp(a, "--version") == 0) {
            printf("dstack-gateway %s\n", GW_VERSION);
            return 1;
        } else {
            log_warnx("unknown argument '%s'", a);
            usage(stderr);
            return 2;
        }
    }
    return 0;
}

int gw_split_hostport(const char *s, char *host, size_t host_size, uint16_t *port)
{
    const char *colon;
    const char *h = s;
    size_t hl;
    if (!s) {
        return -EINVAL;
    }
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':') {
            return -EINVAL;
        }
        h = s + 1;
        hl = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) {
            return -EINVAL;
        }
        hl = (size_t)(colon - s);
    }
    const char *p = colon + 1;
    size_t d = strspn(p, "0123456789");
    if (d == 0 || d > 5 || p[d] != '\0' || atoi(p) > 65535 || hl == 0 || hl >= host_size) {
        return -EINVAL;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    *port = (uint16_t)atoi(p);
    return 0;
}

const char *gw_config_admin_token(const struct gw_config *c)
{
    const char *t = c->admin_token ? c->admin_token : c->admin_token_alias;
    if (!t || !t[0]) {
        t = getenv("DSTACK_GATEWAY_ADMIN_TOKEN");
    }
    if (!t || !t[0]) {
        t = getenv("ADMIN_API_TOKEN");
    }
    return t && t[0] ? t : NULL;
}

static int fail(const char *what)
{
    log_warnx("configuration: %s", what);
    return -EINVAL;
}

static int validate(struct gw_config *c, struct gw_net *net)
{
    char err[GW_ERR_MAX];
    char host[256];
    uint16_t port;
    if (c->sync_enabled) {
        return fail("core.sync.enabled = true: cluster sync (WaveKV, spec §4.5) is not "
                    "implemented in this gateway; run single nodes");
    }
    if (c->dbg_rpc) {
        return fail("core.debug.insecure_enable_debug_rpc = true: the debug RPC server is not "
                    "implemented");
    }
    if (!c->tls_key || !c->tls_certs) {
        return fail("tls.key and tls.certs are required (RegisterCvm is served over TLS)");
    }
    if (!c->tls_ca_certs) {
        return fail("tls.mutual.ca_certs is required: the KMS root CA client certificates of "
                    "CVMs chain to");
    }
    if (c->auth_enabled && (!c->auth_url || !c->auth_url[0])) {
        return fail("core.auth.enabled needs core.auth.url");
    }
    if (c->admin_enabled) {
        if (!c->admin_no_auth && !gw_config_admin_token(c)) {
            return fail("core.admin.enabled needs core.admin.auth_token (or env "
                        "DSTACK_GATEWAY_ADMIN_TOKEN / ADMIN_API_TOKEN), or "
                        "core.admin.insecure_no_auth = true");
        }
        if (gw_split_hostport(c->admin_address, host, sizeof(host), &port) < 0 &&
            c->admin_port == 0) {
            return fail("core.admin.address: expected host:port (or set core.admin.port)");
        }
    }
    if (!gw_wg_key_valid(c->wg_private_key)) {
        return fail("core.wg.private_key: expected base64 of 32 bytes");
    }
    if (c->wg_public_key && !gw_wg_key_valid(c->wg_public_key)) {
        return fail("core.wg.public_key: expected base64 of 32 bytes");
    }
    if (!c->wg_interface || !c->wg_interface[0] || strlen(c->wg_interface) > 15 ||
        strspn(c->wg_interface,
               "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") !=
            strlen(c->wg_interface)) {
        return fail("core.wg.interface: 1-15 characters [A-Za-z0-9._-]");
    }
    if (gw_net_init(net, c->wg_ip, (const char *const *)c->wg_reserved.items, c->wg_reserved.count,
                    c->wg_range, err, sizeof(err)) < 0) {
        return fail(err);
    }
    for (size_t i = 0; i < c->px_tls_versions.count; i++) {
        const char *v = c->px_tls_versions.items[i];
        if (strcmp(v, "1.2") != 0 && strcmp(v, "1.3") != 0) {
            return fail("core.proxy.tls_versions: only \"1.2\" and \"1.3\"");
        }
    }
    if (strcmp(c->px_cert_source, "files") != 0 && strcmp(c->px_cert_source, "agent") != 0) {
        return fail(strcmp(c->px_cert_source, "acme") == 0
                        ? "core.proxy.cert_source = \"acme\": ACME is not implemented"
                        : "core.proxy.cert_source: expected \"files\" or \"agent\"");
    }
    if (strcmp(c->px_cert_source, "agent") == 0 &&
        (!c->px_base_domain || !c->px_base_domain[0] || c->px_cert_chain || c->px_cert_key)) {
        return fail("core.proxy.cert_source = \"agent\" needs core.proxy.base_domain and no "
                    "cert_chain/cert_key");
    }
    if (gw_agent_needed(c) && (!c->agent_socket || !c->agent_socket[0])) {
        return fail("core.agent_socket must name the guest agent's socket");
    }
    if (!c->sync_data_dir || !c->sync_data_dir[0]) {
        return fail("core.sync.data_dir must name the state directory");
    }
    return 0;
}

int gw_config_load(const char *path, struct gw_config *cfg, struct gw_net *net)
{
    struct ds_config_err err;
    int r = path ? ds_config_load(&gw_config_schema, path, cfg, &err)
                 : ds_config_defaults(&gw_config_schema, cfg, &err);
    if (r < 0) {
        log_warnx("%s", err.msg);
        return r;
    }
    return validate(cfg, net);
}

void gw_config_done(struct gw_config *cfg)
{
    ds_config_free(&gw_config_schema, cfg);
}
