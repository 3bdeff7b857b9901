/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest's gateway boot step and its checker (spec host-side.md §3.3 step 17, §3.6, §4.3):
 *
 *   dstack-util gateway-setup    reads app-compose.json (gateway enabled? port_policy),
 *       .sys-config.json (gateway_urls) and .appkeys.json (gateway_app_id, the KMS root CA);
 *       gets client certificates from the guest agent's GetTlsKey (signed through the KMS),
 *       cached with the WireGuard key pair in /run/dstack/gateway-cache.json; calls RegisterCvm
 *       on each gateway URL until one answers (util_gateway_register: server trusted through
 *       the KMS root CA only, app id substring rule); writes /etc/wireguard/dstack-wg0.conf and,
 *       when it changed (or --force), brings up dstack-wg0 WITHOUT wg-quick (a bash script that
 *       needs resolvconf; the guest has neither): `ip link add ... type wireguard`, else the
 *       userspace wireguard-go; `wg setconf` with the wg-quick-only lines removed; address,
 *       link up, /32 routes; the DSTACK_WG iptables chain (util_gateway_plan.c builds the
 *       commands). Progress and failure go to the VMM host API.
 *   dstack-util gateway-checker  the §3.6 loop: re-registers periodically, and forced (tunnel
 *       reconfigured) when the config is missing or the handshake is stale, with backoff.
 *
 * Tools run by fork+exec with argument vectors (no shell); every value from the gateway's
 * answer is validated (util_gateway_wg_config, gws_plan_parse) before it reaches a command line
 * or a file. Key material is never logged.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <dstack/client.h>
#include <jansson.h>

#include "dstack/base.h"
#include "dstack/keys.h"
#include "log.h"
#include "util.h"
#include "util_gateway_setup.h"
#include "util_setup.h"

#define GWS_DEFAULT_WORK       "/dstack"
#define GWS_DEFAULT_AGENT      "/var/run/dstack.sock"
#define GWS_DEFAULT_CACHE      "/run/dstack/gateway-cache.json"
#define GWS_DEFAULT_CONF       "/etc/wireguard/dstack-wg0.conf"
#define GWS_WG_GO_SOCK_DIR     "/var/run/wireguard"
#define GWS_AGENT_RESPONSE_MAX (256 * 1024)
#define GWS_TOOL_OUTPUT_MAX    (64 * 1024)
#define GWS_WG_GO_WAIT_MS      10000
#define GWS_ERR_MAX            1024
#define GWS_PATH_MAX           4096
#define GWS_EXIT_NOT_CONFIGURED                                                                    \
    3 /* checker: no gateway_app_id / URLs (RestartPreventExitStatus)                              \
       */
#define GWS_ERROR_PREFIX "dstack-gateway registration failed, the app has no ingress route: "

struct gws_ctx {
    const char *work_dir, *agent_socket, *host_api, *cache_path, *wg_conf, *iface, *wg_go;
    struct gws_app app;
    struct gws_urls urls;
    char *gateway_app_id, *ca_cert;
};

static void ctx_done(struct gws_ctx *c)
{
    gws_app_done(&c->app);
    gws_urls_done(&c->urls);
    free(c->gateway_app_id);
    free(c->ca_cert);
    c->gateway_app_id = c->ca_cert = NULL;
}

static int read_text(const char *path, char **out, size_t *out_len)
{
    uint8_t *d = NULL;
    size_t n = 0;
    int r = ds_read_file(path, GWS_FILE_MAX, &d, &n);
    if (r < 0) {
        return r;
    }
    *out = (char *)d; /* NUL-terminated by ds_read_file */
    *out_len = n;
    return 0;
}

/* app-compose.json, .sys-config.json, .appkeys.json from WORK/.host-shared. */
static int ctx_load(struct gws_ctx *c, char *err, size_t err_size)
{
    char path[GWS_PATH_MAX], *text = NULL;
    size_t len = 0;
    struct ds_appkeys keys;
    struct ds_keys_error kerr = {0};
    snprintf(path, sizeof(path), "%s/.host-shared/app-compose.json", c->work_dir);
    int r = read_text(path, &text, &len);
    if (r < 0) {
        snprintf(err, err_size, "%.512s: %s", path, ds_strerror(r));
        return r;
    }
    r = gws_app_parse(text, len, &c->app, err, err_size);
    free(text);
    if (r < 0 || !c->app.enabled) {
        return r;
    }
    snprintf(path, sizeof(path), "%s/.host-shared/.sys-config.json", c->work_dir);
    if ((r = read_text(path, &text, &len)) < 0) {
        snprintf(err, err_size, "%.512s: %s", path, ds_strerror(r));
        return r;
    }
    r = gws_urls_parse(text, len, &c->urls, err, err_size);
    free(text);
    if (r < 0) {
        return r;
    }
    snprintf(path, sizeof(path), "%s/.host-shared/.appkeys.json", c->work_dir);
    if ((r = ds_appkeys_load(path, &keys, &kerr)) < 0) {
        snprintf(err, err_size, "%.512s: %s%s%s", path, kerr.what[0] ? kerr.what : "",
                 kerr.what[0] ? ": " : "", kerr.msg[0] ? kerr.msg : ds_strerror(r));
        return r;
    }
    c->gateway_app_id = strdup(keys.gateway_app_id ? keys.gateway_app_id : "");
    c->ca_cert = strdup(keys.ca_cert ? keys.ca_cert : "");
    ds_appkeys_done(&keys);
    return c->gateway_app_id && c->ca_cert ? 0 : -ENOMEM;
}

/* ---- running tools ----------------------------------------------------------------------------
 */

int util_run_tool(const char *const argv[], struct ds_buf *out)
{
    int pfd[2] = {-1, -1};
    if (out && pipe2(pfd, O_CLOEXEC) < 0) {
        return -errno;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        if (out) {
            close(pfd[0]);
            close(pfd[1]);
        }
        return e;
    }
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0) {
            dup2(nul, STDIN_FILENO);
        }
        dup2(out ? pfd[1] : STDERR_FILENO, STDOUT_FILENO);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    int r = 0;
    if (out) {
        close(pfd[1]);
        char buf[4096];
        for (;;) {
            ssize_t n = read(pfd[0], buf, sizeof(buf));
            if (n < 0 && errno == EINTR) {
                continue;
            }
            if (n <= 0) {
                break;
            }
            if (r == 0 && ds_buf_append(out, buf, (size_t)n) < 0) {
                r = -DS_E_LIMIT; /* keep draining so the child does not block */
            }
        }
        close(pfd[0]);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    if (r < 0) {
        return r;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : -DS_E_IO;
}

static void argv_text(const char *const argv[], char *out, size_t n)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; argv[i] && off < n; i++) {
        int w = snprintf(out + off, n - off, "%s%s", i ? " " : "", argv[i]);
        off += w > 0 ? (size_t)w : 0;
    }
}

/* Run and require exit 0 (err names the command). */
static int run_ok(const char *const argv[], char *err, size_t err_size)
{
    int r = util_run_tool(argv, NULL);
    if (r != 0) {
        char cmd[256];
        argv_text(argv, cmd, sizeof(cmd));
        snprintf(err, err_size, "'%s' %s %d", cmd, r < 0 ? "failed:" : "exited with", r);
        return r < 0 ? r : -DS_E_IO;
    }
    return 0;
}

/* ---- GetTlsKey from the guest agent (guest-agent-api §4.6, through libdstack-client) -------- */

/* A client certificate: subject "dstack-guest-agent", client_auth, app info, not_after (and the
 * quote when ra_tls). *out_chain = the PEM chain (leaf first), *out_key = its key (secret). */
static int agent_tls_key(const char *sock, bool ra_tls, int64_t not_after, char **out_chain,
                         char **out_key, char *err, size_t err_size)
{
    struct dstack_client *dc = NULL;
    struct dstack_tls_key_result *t = NULL;
    struct dstack_tls_key_options o = DSTACK_TLS_KEY_OPTIONS_INIT;
    struct ds_buf chain;
    EVP_PKEY *k = NULL;
    X509 *leaf = NULL;
    ds_buf_init(&chain, GWS_AGENT_RESPONSE_MAX);
    o.subject = "dstack-guest-agent";
    o.usage_ra_tls = ra_tls;
    o.usage_server_auth = false;
    o.usage_client_auth = true;
    o.with_app_info = true;
    o.has_not_after = true;
    o.not_after = (uint64_t)not_after;
    int r = dstack_client_new(sock, &dc);
    if (r < 0) {
        snprintf(err, err_size, "guest agent %s: %s", sock, dstack_strerror(r));
        r = -DS_E_NETWORK;
        goto out;
    }
    if ((r = dstack_get_tls_key(dc, &o, &t)) < 0) {
        const char *m = dstack_client_errmsg(dc);
        snprintf(err, err_size, "guest agent GetTlsKey: %s%s%s", dstack_strerror(r),
                 m[0] ? ": " : "", m);
        r = r == DSTACK_ERR_TRANSPORT ? -DS_E_NETWORK : -DS_E_PROTOCOL;
        goto out;
    }
    r = -DS_E_PROTOCOL;
    if (t->certificate_chain_count == 0 || t->key == NULL || t->key[0] == '\0') {
        snprintf(err, err_size, "guest agent GetTlsKey: no key / certificate_chain");
        goto out;
    }
    for (size_t i = 0; i < t->certificate_chain_count; i++) {
        const char *pem = t->certificate_chain[i];
        size_t n = strlen(pem);
        if (strncmp(pem, "-----BEGIN CERTIFICATE-----", 27) != 0) {
            snprintf(err, err_size, "guest agent GetTlsKey: certificate_chain[%zu] is not PEM", i);
            goto out;
        }
        if ((r = ds_buf_append(&chain, pem, n)) < 0 ||
            (n && pem[n - 1] != '\n' && (r = ds_buf_append(&chain, "\n", 1)) < 0)) {
            snprintf(err, err_size, "guest agent GetTlsKey: certificate chain too large");
            goto out;
        }
    }
    if (util_pem_to_key(t->key, &k) < 0 || util_pem_to_cert((const char *)chain.data, &leaf) < 0 ||
        X509_check_private_key(leaf, k) != 1) {
        snprintf(err, err_size, "guest agent GetTlsKey: the key does not match the certificate");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    char *kdup = strdup(t->key);
    if (!kdup) {
        r = -ENOMEM;
        goto out;
    }
    size_t clen;
    ds_buf_steal(&chain, (uint8_t **)out_chain, &clen);
    *out_key = kdup;
    r = 0;
out:
    EVP_PKEY_free(k);
    X509_free(leaf);
    dstack_tls_key_result_free(t); /* wipes the key */
    dstack_client_free(dc);
    ds_buf_done(&chain);
    return r;
}

/* ---- the key cache ----------------------------------------------------------------------------
 */

static void cache_load(const char *path, struct gws_cache *c)
{
    char *text = NULL, err[GWS_ERR_MAX] = "";
    size_t len = 0;
    memset(c, 0, sizeof(*c));
    int r = read_text(path, &text, &len);
    if (r == -ENOENT) {
        return;
    }
    if (r == 0) {
        r = gws_cache_parse(text, len, c, err, sizeof(err));
        ds_wipe(text, len);
    }
    free(text);
    if (r < 0) {
        log_warnx("gateway cache %s unusable (%s), starting afresh", path,
                  err[0] ? err : ds_strerror(r));
        memset(c, 0, sizeof(*c));
    }
}

static int cache_save(const char *path, const struct gws_cache *c, char *err, size_t err_size)
{
    char *text = NULL;
    int r = gws_cache_dump(c, &text);
    if (r == 0) {
        r = ds_write_file_atomic(path, text, strlen(text), 0600);
        ds_wipe(text, strlen(text));
        free(text);
    }
    if (r < 0) {
        snprintf(err, err_size, "saving the gateway cache %s: %s", path, ds_strerror(r));
    }
    return r;
}

/* Plain client certificate (and WireGuard keys) valid for >= 10 min, renewed otherwise; the
 * cache is saved before registering (§4.3: no KMS load spikes while a gateway is down). */
static int cache_prepare(const struct gws_ctx *c, struct gws_cache *k, char *err, size_t err_size)
{
    int64_t now = (int64_t)time(NULL);
    bool dirty = false;
    int r = 0;
    cache_load(c->cache_path, k);
    if (!k->wg_sk[0]) {
        if ((r = util_wg_keypair(k->wg_sk, k->wg_pk)) < 0) {
            snprintf(err, err_size, "WireGuard key pair: %s", ds_strerror(r));
            return r;
        }
        dirty = true;
    }
    if (!gws_cache_cert_fresh(k, now)) {
        char *chain = NULL, *key = NULL;
        r = agent_tls_key(c->agent_socket, false, now + GWS_CERT_SECS, &chain, &key, err, err_size);
        if (r < 0) {
            return r;
        }
        free(k->client_cert);
        if (k->client_key) {
            ds_wipe(k->client_key, strlen(k->client_key));
        }
        free(k->client_key);
        k->client_cert = chain;
        k->client_key = key;
        /* the quote-bearing certificate belongs to the old validity: fetch again on demand */
        free(k->client_cert_with_quote);
        if (k->client_key_with_quote) {
            ds_wipe(k->client_key_with_quote, strlen(k->client_key_with_quote));
        }
        free(k->client_key_with_quote);
        k->client_cert_with_quote = k->client_key_with_quote = NULL;
        k->cert_not_after = now + GWS_CERT_SECS;
        dirty = true;
        log_info("gateway: new client certificate from the guest agent (valid 10 days)");
    }
    return dirty ? cache_save(c->cache_path, k, err, err_size) : 0;
}

static int quote_cert(const struct gws_ctx *c, struct gws_cache *k, char *err, size_t err_size)
{
    if (k->client_cert_with_quote) {
        return 0;
    }
    char *chain = NULL, *key = NULL;
    int r = agent_tls_key(c->agent_socket, true, k->cert_not_after, &chain, &key, err, err_size);
    if (r < 0) {
        return r;
    }
    k->client_cert_with_quote = chain;
    k->client_key_with_quote = key;
    log_info("gateway: quote-bearing client certificate from the guest agent");
    return cache_save(c->cache_path, k, err, err_size);
}

/* Write the PEM files util_gateway_register() reads (0600, next to the cache). */
static int write_side(const char *cache, const char *suffix, const char *text, char *path,
                      size_t path_size, char *err, size_t err_size)
{
    snprintf(path, path_size, "%s%s", cache, suffix);
    int r = ds_write_file_atomic(path, text, strlen(text), 0600);
    if (r < 0) {
        snprintf(err, err_size, "writing %s: %s", path, ds_strerror(r));
    }
    return r;
}

/* ---- the tunnel -------------------------------------------------------------------------------
 */

static bool iface_exists(const char *iface)
{
    const char *const argv[] = {"ip", "link", "show", "dev", iface, NULL};
    struct ds_buf b;
    ds_buf_init(&b, GWS_TOOL_OUTPUT_MAX);
    int r = util_run_tool(argv, &b);
    ds_buf_done(&b);
    return r == 0;
}

/* dstack-wg0: the kernel's WireGuard, else wireguard-go (userspace, over /dev/net/tun). */
static int ensure_iface(const struct gws_ctx *c, char *err, size_t err_size)
{
    if (iface_exists(c->iface)) {
        return 0;
    }
    const char *const add[] = {"ip", "link", "add", "dev", c->iface, "type", "wireguard", NULL};
    if (util_run_tool(add, NULL) == 0) {
        log_info("gateway: %s created (kernel WireGuard)", c->iface);
        return 0;
    }
    log_info("gateway: no kernel WireGuard, starting %s %s (userspace)", c->wg_go, c->iface);
    const char *const go[] = {c->wg_go, c->iface, NULL};
    int r = run_ok(go, err, err_size); /* it daemonizes once the interface exists */
    if (r < 0) {
        return r;
    }
    char sock[GWS_PATH_MAX];
    snprintf(sock, sizeof(sock), "%s/%s.sock", GWS_WG_GO_SOCK_DIR, c->iface);
    for (int waited = 0; waited < GWS_WG_GO_WAIT_MS; waited += 50) {
        struct stat st;
        if (stat(sock, &st) == 0 && S_ISSOCK(st.st_mode)) {
            return 0;
        }
        usleep(50 * 1000);
    }
    snprintf(err, err_size, "%s started but its UAPI socket %.256s did not appear", c->wg_go, sock);
    return -DS_E_IO;
}

static int tunnel_up(const struct gws_ctx *c, const char *conf, char *err, size_t err_size)
{
    struct gws_plan plan;
    struct gws_cmd cmds[GWS_CMDS_MAX];
    char *setconf = NULL, path[GWS_PATH_MAX] = "";
    int r = gws_plan_parse(conf, &plan, err, err_size);
    if (r < 0) {
        return r;
    }
    int n = gws_tunnel_cmds(&plan, c->iface, cmds, DS_ARRAY_SIZE(cmds));
    if (n < 0) {
        snprintf(err, err_size, "too many WireGuard servers");
        return n;
    }
    if ((r = ensure_iface(c, err, err_size)) < 0) {
        return r;
    }
    if ((r = gws_setconf_text(conf, &setconf)) < 0) {
        snprintf(err, err_size, "WireGuard config: %s", ds_strerror(r));
        return r;
    }
    /* Like wg-quick down/up (§4.3): first the interface without peers, which ends every
     * session, then the whole config, so the guest starts a fresh handshake (a gateway that
     * dropped and re-added our peer has no session and no endpoint for us). */
    char *peers = strstr(setconf, "[Peer]");
    const char *const wg[] = {"wg", "setconf", c->iface, path, NULL};
    if (peers) {
        char keep = *peers;
        *peers = '\0';
        r = write_side(c->cache_path, ".wg", setconf, path, sizeof(path), err, err_size);
        *peers = keep;
        if (r == 0) {
            r = run_ok(wg, err, err_size);
        }
    }
    if (r == 0) {
        r = write_side(c->cache_path, ".wg", setconf, path, sizeof(path), err, err_size);
    }
    ds_wipe(setconf, strlen(setconf));
    free(setconf);
    if (r == 0) {
        r = run_ok(wg, err, err_size);
    }
    (void)unlink(path);
    for (int i = 0; r == 0 && i < n; i++) {
        r = cmds[i].may_fail ? (util_run_tool(cmds[i].argv, NULL), 0)
                             : run_ok(cmds[i].argv, err, err_size);
    }
    if (r == 0) {
        log_info("gateway: %s up, address %s, %zu server(s)", c->iface, plan.client_ip,
                 plan.route_count);
    }
    return r;
}

/* ---- one registration -------------------------------------------------------------------------
 */

static int mkdir_parent(const char *path)
{
    char dir[GWS_PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", path);
    char *slash = strrchr(dir, '/');
    if (!slash || slash == dir) {
        return 0;
    }
    *slash = '\0';
    for (char *p = dir + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            (void)mkdir(dir, 0755);
            *p = '/';
        }
    }
    return mkdir(dir, 0700) == 0 || errno == EEXIST ? 0 : -errno;
}

/*
 * Register with the first gateway that answers and (when the config changed, or force) bring
 * the tunnel up. *changed (may be NULL) tells whether WireGuard was reconfigured.
 */
static int register_once(const struct gws_ctx *c, bool force, bool *changed, char *err,
                         size_t err_size)
{
    struct gws_cache k;
    json_t *resp = NULL;
    char *conf = NULL, *old = NULL, crt[GWS_PATH_MAX] = "", key[GWS_PATH_MAX] = "";
    char ca[GWS_PATH_MAX] = "";
    char e[GWS_ERR_MAX] = "";
    size_t old_len = 0;
    int r;
    memset(&k, 0, sizeof(k));
    if (changed) {
        *changed = false;
    }
    if ((r = mkdir_parent(c->cache_path)) < 0 || (r = mkdir_parent(c->wg_conf)) < 0) {
        snprintf(err, err_size, "creating the directories of %s / %s: %s", c->cache_path,
                 c->wg_conf, ds_strerror(r));
        return r;
    }
    if ((r = cache_prepare(c, &k, err, err_size)) < 0 ||
        (r = write_side(c->cache_path, ".ca", c->ca_cert, ca, sizeof(ca), err, err_size)) < 0) {
        goto out;
    }
    r = -DS_E_NETWORK;
    for (size_t i = 0; i < c->urls.count && !resp; i++) {
        bool quoted = false;
        for (;;) {
            r = write_side(c->cache_path, ".crt", quoted ? k.client_cert_with_quote : k.client_cert,
                           crt, sizeof(crt), err, err_size);
            if (r == 0) {
                r = write_side(c->cache_path, ".key",
                               quoted ? k.client_key_with_quote : k.client_key, key, sizeof(key),
                               err, err_size);
            }
            if (r < 0) {
                goto out;
            }
            r = util_gateway_register(c->urls.items[i], crt, key, ca, c->gateway_app_id, k.wg_pk,
                                      c->app.port_policy, &resp, e, sizeof(e));
            if (r < 0 && !quoted && strcasestr(e, "no attestation provided")) {
                /* a gateway before 0.5.6 wants the quote in the certificate (§4.3) */
                log_info("gateway %s wants an attestation: retrying with the quote",
                         c->urls.items[i]);
                if ((r = quote_cert(c, &k, err, err_size)) < 0) {
                    goto out;
                }
                quoted = true;
                continue;
            }
            break;
        }
        if (r < 0) {
            log_warnx("gateway %s: %s", c->urls.items[i], e);
        }
    }
    if (key[0]) {
        (void)unlink(key);
    }
    if (!resp) {
        snprintf(err, err_size, "%s", e[0] ? e : "no gateway answered");
        goto out;
    }
    if ((r = util_gateway_wg_config(resp, k.wg_sk, &conf, err, err_size)) < 0) {
        goto out;
    }
    log_info("gateway: registered, WireGuard address %s",
             json_string_value(json_object_get(json_object_get(resp, "wg"), "client_ip")));
    if (read_text(c->wg_conf, &old, &old_len) == 0 && old_len == strlen(conf) &&
        ds_ct_equal(old, conf, old_len) && !force) {
        log_info("gateway: WireGuard config unchanged");
        r = 0;
        goto out;
    }
    if ((r = ds_write_file_atomic(c->wg_conf, conf, strlen(conf), 0600)) < 0) {
        snprintf(err, err_size, "writing %s: %s", c->wg_conf, ds_strerror(r));
        goto out;
    }
    if ((r = tunnel_up(c, conf, err, err_size)) < 0) {
        /* no config on disk = the checker's forced refresh (with backoff), not a silent wait */
        (void)unlink(c->wg_conf);
    } else if (changed) {
        *changed = true;
    }
out:
    if (conf) {
        ds_wipe(conf, strlen(conf));
    }
    if (old) {
        ds_wipe(old, old_len);
    }
    free(conf);
    free(old);
    json_decref(resp);
    gws_cache_done(&k);
    return r;
}

/* ---- options shared by both commands ----------------------------------------------------------
 */

static void ctx_defaults(struct gws_ctx *c)
{
    memset(c, 0, sizeof(*c));
    c->work_dir = GWS_DEFAULT_WORK;
    c->agent_socket = GWS_DEFAULT_AGENT;
    c->cache_path = GWS_DEFAULT_CACHE;
    c->wg_conf = GWS_DEFAULT_CONF;
    c->iface = GWS_IFACE;
    c->wg_go = "wireguard-go";
}

#define GWS_COMMON_OPTS(c)                                                                         \
    {"work-dir", UTIL_OPT_STRING, &(c).work_dir, "DIR", false},                                    \
        {"agent-socket", UTIL_OPT_STRING, &(c).agent_socket, "SOCKET", false},                     \
        {"cache", UTIL_OPT_STRING, &(c).cache_path, "FILE", false},                                \
        {"wg-config", UTIL_OPT_STRING, &(c).wg_conf, "FILE", false},                               \
        {"wireguard-go", UTIL_OPT_STRING, &(c).wg_go, "PROGRAM", false},                           \
    {                                                                                              \
        "host-api", UTIL_OPT_STRING, &(c).host_api, "SOCKET", false                                \
    }

static const char gws_common_usage[] =
    "  --work-dir DIR        CVM work dir with .host-shared/ (default " GWS_DEFAULT_WORK ")\n"
    "  --agent-socket SOCK   guest agent (GetTlsKey; default " GWS_DEFAULT_AGENT ")\n"
    "  --cache FILE          key cache, 0600 (default " GWS_DEFAULT_CACHE ")\n"
    "  --wg-config FILE      WireGuard config, 0600 (default " GWS_DEFAULT_CONF ")\n"
    "  --wireguard-go PROG   userspace WireGuard when the kernel has none (default\n"
    "                        wireguard-go)\n"
    "  --host-api SOCKET     report progress / errors to the VMM host API\n";

/* Reads the inputs; 0 = go on, else the exit code (disabled: 0; not configured: 3). */
static int ctx_check(struct gws_ctx *c, const char *cmd, int not_configured, char *err,
                     size_t err_size)
{
    int r = ctx_load(c, err, err_size);
    if (r < 0) {
        return -1;
    }
    if (!c->app.enabled) {
        log_info("%s: the gateway is not enabled in app-compose.json; nothing to do", cmd);
        return UTIL_EXIT_OK;
    }
    if (c->app.no_instance_id) {
        snprintf(err, err_size,
                 "app-compose.json sets no_instance_id: the gateway registers "
                 "instances, this CVM has no instance id");
    } else if (!c->gateway_app_id[0]) {
        snprintf(err, err_size,
                 ".appkeys.json has no gateway_app_id (the key provider names no "
                 "gateway app)");
    } else if (c->urls.count == 0) {
        snprintf(err, err_size, ".sys-config.json has no gateway_urls");
    } else {
        return -0x100; /* configured */
    }
    return not_configured;
}

/* ---- dstack-util gateway-setup ----------------------------------------------------------------
 */

void util_gateway_setup_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack-util gateway-setup [--work-dir DIR] [--host-api SOCKET] [--force]\n"
            "                                 [--agent-socket SOCK] [--cache FILE]\n"
            "                                 [--wg-config FILE] [--wireguard-go PROG]\n"
            "\n"
            "Boot step (host-side.md §3.3 step 17): when app-compose.json enables the gateway,\n"
            "register this CVM with the first of .sys-config.json's gateway_urls that answers\n"
            "(client certificate from the guest agent, signed through the KMS; the gateway\n"
            "trusted through the KMS root CA and gateway_app_id) and bring up " GWS_IFACE "\n"
            "(ip + wg setconf, wireguard-go without kernel WireGuard; iptables chain\n" GWS_CHAIN
            "). Unchanged config: nothing is reconfigured unless --force.\n"
            "%s"
            "  --force               reconfigure WireGuard even when the config is unchanged\n"
            "exit: 0 registered (or the gateway is disabled), 1 failed (reported as\n"
            "boot.error \"" GWS_ERROR_PREFIX "...\"), 2 usage\n",
            gws_common_usage);
}

int util_cmd_gateway_setup(int argc, char **argv)
{
    struct gws_ctx c;
    bool force = false, help = false;
    char err[GWS_ERR_MAX] = "";
    ctx_defaults(&c);
    const struct util_opt opts[] = {
        GWS_COMMON_OPTS(c),
        {"force", UTIL_OPT_FLAG, &force, NULL, false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = util_parse_opts("gateway-setup", argc, argv, opts, &help);
    if (help) {
        util_gateway_setup_usage(stdout);
        return UTIL_EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    rc = ctx_check(&c, "gateway-setup", UTIL_EXIT_FAIL, err, sizeof(err));
    if (rc == UTIL_EXIT_OK) {
        goto out;
    }
    if (c.host_api && setup_notify(c.host_api, "boot.progress", "setting up dstack-gateway") < 0) {
        log_warnx("host API %s: notify boot.progress failed", c.host_api);
    }
    rc = UTIL_EXIT_FAIL;
    if (err[0] || register_once(&c, force, NULL, err, sizeof(err)) < 0) {
        char msg[SETUP_NOTIFY_BODY_MAX];
        snprintf(msg, sizeof(msg), GWS_ERROR_PREFIX "%s", err);
        log_warnx("%s", msg);
        if (c.host_api && setup_notify(c.host_api, "boot.error", msg) < 0) {
            log_warnx("host API %s: notify boot.error failed", c.host_api);
        }
        goto out;
    }
    rc = UTIL_EXIT_OK;
out:
    ctx_done(&c);
    return rc;
}

/* ---- dstack-util gateway-checker --------------------------------------------------------------
 */

static volatile sig_atomic_t checker_stop;

static void on_stop(int sig)
{
    (void)sig;
    checker_stop = 1;
}

static int parse_secs(const char *opt, const char *s, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = s ? strtoll(s, &end, 10) : 0;
    if (!s) {
        return 0;
    }
    if (errno || end == s || *end || v < 1 || v > 86400) {
        log_warnx("gateway-checker: --%s: expected seconds 1-86400, got '%s'", opt, s);
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

void util_gateway_checker_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack-util gateway-checker [--work-dir DIR] [--interval S]\n"
            "           [--refresh-interval S] [--handshake-timeout S] [--force-interval S]\n"
            "           [--backoff-min S] [--backoff-max S] [common options]\n"
            "\n"
            "Keep this CVM registered with its gateway (host-side.md §3.6): every --interval\n"
            "(10 s) look at " GWS_IFACE "; config missing => forced refresh (retries back off\n"
            "--backoff-min 30 s doubling to --backoff-max 120 s); latest handshake older than\n"
            "--handshake-timeout (180 s), or none for that long => forced refresh at most every\n"
            "--force-interval (180 s); else re-register every --refresh-interval (180 s),\n"
            "reconfiguring WireGuard only when the config text changed.\n"
            "%s"
            "exit: 0 gateway disabled or SIGTERM, 3 no gateway_app_id / gateway URLs, 2 usage\n",
            gws_common_usage);
}

static int64_t latest_handshake(const char *iface)
{
    const char *const argv[] = {"wg", "show", iface, "latest-handshakes", NULL};
    struct ds_buf b;
    int64_t hs = 0;
    ds_buf_init(&b, GWS_TOOL_OUTPUT_MAX);
    if (util_run_tool(argv, &b) != 0 ||
        gws_latest_handshake(b.data ? (const char *)b.data : "", b.len, &hs) < 0) {
        hs = 0;
    }
    ds_buf_done(&b);
    return hs;
}

int util_cmd_gateway_checker(int argc, char **argv)
{
    struct gws_ctx c;
    bool help = false;
    const char *iv = NULL, *ri = NULL, *ht = NULL, *fi = NULL, *bmin = NULL, *bmax = NULL;
    char err[GWS_ERR_MAX] = "";
    int64_t interval = 10;
    struct gws_check_params p = {180, 180, 180, 30, 120};
    struct gws_check_state st = {0};
    ctx_defaults(&c);
    const struct util_opt opts[] = {
        GWS_COMMON_OPTS(c),
        {"interval", UTIL_OPT_STRING, &iv, "SECONDS", false},
        {"refresh-interval", UTIL_OPT_STRING, &ri, "SECONDS", false},
        {"handshake-timeout", UTIL_OPT_STRING, &ht, "SECONDS", false},
        {"force-interval", UTIL_OPT_STRING, &fi, "SECONDS", false},
        {"backoff-min", UTIL_OPT_STRING, &bmin, "SECONDS", false},
        {"backoff-max", UTIL_OPT_STRING, &bmax, "SECONDS", false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = util_parse_opts("gateway-checker", argc, argv, opts, &help);
    if (help) {
        util_gateway_checker_usage(stdout);
        return UTIL_EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    if (parse_secs("interval", iv, &interval) < 0 ||
        parse_secs("refresh-interval", ri, &p.refresh_interval) < 0 ||
        parse_secs("handshake-timeout", ht, &p.handshake_timeout) < 0 ||
        parse_secs("force-interval", fi, &p.force_min_interval) < 0 ||
        parse_secs("backoff-min", bmin, &p.backoff_min) < 0 ||
        parse_secs("backoff-max", bmax, &p.backoff_max) < 0) {
        return UTIL_EXIT_USAGE;
    }
    if (p.backoff_max < p.backoff_min) {
        log_warnx("gateway-checker: --backoff-max must be >= --backoff-min");
        return UTIL_EXIT_USAGE;
    }
    rc = ctx_check(&c, "gateway-checker", GWS_EXIT_NOT_CONFIGURED, err, sizeof(err));
    if (rc >= 0) {
        if (rc == GWS_EXIT_NOT_CONFIGURED) {
            log_warnx("gateway-checker: %s", err);
        }
        goto out;
    }
    if (rc == -1) {
        log_warnx("gateway-checker: %s", err);
        rc = UTIL_EXIT_USAGE;
        goto out;
    }
    struct sigaction sa = {.sa_handler = on_stop};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* gateway-setup has just run: a config on disk counts as a fresh registration */
    if (access(c.wg_conf, F_OK) == 0) {
        st.last_register = (int64_t)time(NULL);
    }
    log_info("gateway-checker: watching %s every %lld s (re-register every %lld s, handshake "
             "timeout %lld s)",
             c.iface, (long long)interval, (long long)p.refresh_interval,
             (long long)p.handshake_timeout);
    while (!checker_stop) {
        int64_t now = (int64_t)time(NULL);
        bool have_conf = access(c.wg_conf, F_OK) == 0;
        int64_t hs = have_conf ? latest_handshake(c.iface) : 0;
        enum gws_action a = gws_check_decide(&p, &st, now, have_conf, hs);
        if (a != GWS_NOTHING) {
            bool changed = false;
            log_info("gateway-checker: %s", !have_conf       ? "no WireGuard config: registering"
                                            : a == GWS_FORCE ? "handshake stale: forced refresh"
                                                             : "periodic re-registration");
            int r = register_once(&c, a == GWS_FORCE, &changed, err, sizeof(err));
            gws_check_result(&p, &st, (int64_t)time(NULL), r == 0);
            if (r < 0) {
                log_warnx("gateway-checker: registration failed (next try in %lld s): %s",
                          (long long)(st.next_retry - (int64_t)time(NULL)), err);
            } else {
                log_info("gateway-checker: registered%s",
                         changed ? ", WireGuard reconfigured" : "");
            }
        }
        struct timespec ts = {.tv_sec = (time_t)interval};
        while (!checker_stop && nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
    }
    log_info("gateway-checker: stopping");
    rc = UTIL_EXIT_OK;
out:
    ctx_done(&c);
    return rc;
}
