/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest side of gateway registration (spec host-side.md §4.3 "Guest side"): a fresh
 * WireGuard key pair (X25519 from lib/crypto, base64 as `wg` writes it), RegisterCvm over
 * mutual TLS with the CVM's client certificate (server trusted through the KMS root CA only,
 * host name checked), and the WireGuard configuration the answer describes: Interface
 * PrivateKey / ListenPort 9182 / Address <client_ip>/32, one Peer per server sorted by public
 * key with AllowedIPs <server ip>/32, Endpoint and PersistentKeepalive 25, written 0600.
 * util_gateway_register() and util_gateway_wg_config() are the reusable client; bringing the
 * tunnel up (ip, wg setconf, iptables) is `dstack-util gateway-setup` (util_gateway_setup.c).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <arpa/inet.h>
#include <curl/curl.h>
#include <jansson.h>

#include "dstack/crypto.h"
#include "dstack/ratls.h"
#include "log.h"
#include "util.h"

#define GW_RESPONSE_MAX    (1024 * 1024)
#define GW_SERVERS_MAX     64
#define GW_FIELD_MAX       256
#define GW_WG_LISTEN_PORT  9182
#define GW_DEFAULT_WG_CONF "/etc/wireguard/dstack-wg0.conf"

struct body {
    struct ds_buf buf;
    bool overflow;
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct body *b = ud;
    if (ds_buf_append(&b->buf, p, size * n) < 0) {
        b->overflow = true;
        return 0;
    }
    return size * n;
}

int util_wg_keypair(char priv_b64[45], char pub_b64[45])
{
    uint8_t priv[32], pub[32];
    int r = ds_random(priv, sizeof(priv));
    if (r < 0) {
        return r;
    }
    priv[0] &= 248;
    priv[31] &= 127;
    priv[31] |= 64;
    r = ds_x25519_public(priv, pub);
    char *a = r == 0 ? ds_base64_encode(priv, sizeof(priv)) : NULL;
    char *b = r == 0 ? ds_base64_encode(pub, sizeof(pub)) : NULL;
    if (r == 0 && (!a || !b)) {
        r = -ENOMEM;
    }
    if (r == 0) {
        snprintf(priv_b64, 45, "%s", a);
        snprintf(pub_b64, 45, "%s", b);
    }
    if (a) {
        ds_wipe(a, strlen(a));
    }
    free(a);
    free(b);
    ds_wipe(priv, sizeof(priv));
    return r;
}

/* Server certificate checks (§4.3): chain to the KMS root CA only, then the app id rule. */
struct gw_tls {
    X509 *root;
    const char *expect_app_id; /* NULL = no app id check */
    char why[256];
};

/* The app id extension (hex) must be a case-insensitive substring of expect. */
static int check_app_id(X509 *leaf, const char *expect, char *why, size_t why_size)
{
    const uint8_t *id = NULL;
    size_t n = 0;
    char hex[2 * DS_RATLS_MAX_APP_ID + 1], low[UTIL_KMS_URL_MAX];
    if (ds_ratls_cert_get_ext(leaf, DS_RATLS_EXT_APP_ID, &id, &n) < 0 || n == 0) {
        snprintf(why, why_size, "gateway certificate carries no app id");
        return -DS_E_CERT;
    }
    ds_hex_encode(id, n, hex);
    size_t i = 0;
    for (; expect[i] && i + 1 < sizeof(low); i++) {
        low[i] = (char)(expect[i] >= 'A' && expect[i] <= 'Z' ? expect[i] + 32 : expect[i]);
    }
    low[i] = '\0';
    if (!strstr(low, hex)) {
        snprintf(why, why_size, "gateway app id %s is not the expected gateway app id", hex);
        return -DS_E_CERT;
    }
    return 0;
}

static int verify_gateway(X509_STORE_CTX *xs, void *arg)
{
    struct gw_tls *t = arg;
    if (X509_verify_cert(xs) <= 0) {
        snprintf(t->why, sizeof(t->why), "gateway certificate does not chain to the CA: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(xs)));
        return 0;
    }
    X509 *leaf = X509_STORE_CTX_get0_cert(xs);
    if (t->expect_app_id &&
        (!leaf || check_app_id(leaf, t->expect_app_id, t->why, sizeof(t->why)) < 0)) {
        X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    return 1;
}

static CURLcode on_ssl_ctx(CURL *curl, void *sslctx, void *parm)
{
    struct gw_tls *t = parm;
    (void)curl;
    X509_STORE *st = X509_STORE_new();
    if (!st || X509_STORE_add_cert(st, t->root) != 1) {
        X509_STORE_free(st);
        return CURLE_OUT_OF_MEMORY;
    }
    SSL_CTX_set_cert_store(sslctx, st); /* only the KMS root CA: no system roots */
    SSL_CTX_set_cert_verify_callback(sslctx, verify_gateway, t);
    return CURLE_OK;
}

static int load_root(const char *path, X509 **out, char *err, size_t err_size)
{
    uint8_t *pem = NULL;
    size_t len = 0;
    int r = ds_read_file(path, UTIL_PEM_MAX, &pem, &len);
    if (r == 0) {
        char *text = strndup((const char *)pem, len);
        r = text ? util_pem_to_cert(text, out) : -ENOMEM;
        free(text);
    }
    free(pem);
    if (r < 0) {
        snprintf(err, err_size, "--ca %s: %s", path, ds_strerror(r));
    }
    return r;
}

int util_gateway_register(const char *url, const char *cert, const char *key, const char *ca,
                          const char *gateway_app_id, const char *wg_pub, const json_t *port_policy,
                          json_t **out, char *err, size_t err_size)
{
    struct gw_tls tls = {.root = NULL, .why = ""};
    bool any = gateway_app_id && strcasecmp(gateway_app_id, "any") == 0;
    tls.expect_app_id = any ? NULL : gateway_app_id;
    char full[UTIL_KMS_URL_MAX + 64], curl_err[CURL_ERROR_SIZE] = "";
    struct body b = {.overflow = false};
    struct curl_slist *hdr = NULL;
    json_t *req = NULL, *resp = NULL;
    char *body = NULL;
    long status = 0;
    int r = -ENOMEM;
    size_t n = strlen(url);
    ds_buf_init(&b.buf, GW_RESPONSE_MAX);
    while (n > 0 && url[n - 1] == '/') {
        n--;
    }
    if (strncmp(url, "https://", 8) != 0 || n >= UTIL_KMS_URL_MAX) {
        snprintf(err, err_size, "gateway URL must be https://...");
        return -EINVAL;
    }
    bool has_prpc = n >= 5 && memcmp(url + n - 5, "/prpc", 5) == 0;
    snprintf(full, sizeof(full), "%.*s%s/RegisterCvm?json", (int)n, url, has_prpc ? "" : "/prpc");
    if (!any && (r = load_root(ca, &tls.root, err, err_size)) < 0) {
        return r;
    }
    r = -ENOMEM;
    req = port_policy
              ? json_pack("{s:s, s:O}", "client_public_key", wg_pub, "port_policy", port_policy)
              : json_pack("{s:s, s:{s:[], s:b}}", "client_public_key", wg_pub, "port_policy",
                          "ports", "restrict_mode", 0);
    body = req ? json_dumps(req, JSON_COMPACT) : NULL;
    CURL *h = curl_easy_init();
    hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (!body || !h || !hdr) {
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, full);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "https");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, UTIL_KMS_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, UTIL_KMS_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_SSLCERT, cert);
    curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
    curl_easy_setopt(h, CURLOPT_SSLKEY, key);
    curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
    if (any) {
        /* gateway_app_id "any" disables server verification (upstream's rule, §4.3) */
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 0L);
    } else {
        /* trust root = the KMS root CA only (§4.3): our own store, checked in the callback */
        curl_easy_setopt(h, CURLOPT_CAINFO, NULL);
        curl_easy_setopt(h, CURLOPT_CAPATH, NULL);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, 1L);
        curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, 2L);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_FUNCTION, on_ssl_ctx);
        curl_easy_setopt(h, CURLOPT_SSL_CTX_DATA, &tls);
    }
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, curl_err);
    CURLcode cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        snprintf(err, err_size, "RegisterCvm: %s",
                 b.overflow    ? "answer too large"
                 : tls.why[0]  ? tls.why
                 : curl_err[0] ? curl_err
                               : curl_easy_strerror(cc));
        r = -DS_E_NETWORK;
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    resp = json_loadb(b.buf.data ? (const char *)b.buf.data : "", b.buf.len, 0, NULL);
    if (status != 200) {
        const char *m = resp ? json_string_value(json_object_get(resp, "error")) : NULL;
        snprintf(err, err_size, "RegisterCvm: %s", m ? m : "HTTP error");
        if (!m) {
            snprintf(err, err_size, "RegisterCvm: HTTP %ld", status);
        }
        r = -DS_E_DENIED;
        goto out;
    }
    if (!json_is_object(resp)) {
        snprintf(err, err_size, "RegisterCvm: the answer is not a JSON object");
        r = -DS_E_PROTOCOL;
        goto out;
    }
    *out = resp;
    resp = NULL;
    r = 0;
out:
    if (h) {
        curl_easy_cleanup(h);
    }
    X509_free(tls.root);
    curl_slist_free_all(hdr);
    json_decref(req);
    json_decref(resp);
    free(body);
    ds_buf_done(&b.buf);
    return r;
}

/* A response string field that may go into the config file: printable, no spaces/newlines. */
static const char *safe_str(const json_t *obj, const char *name)
{
    const char *s = json_string_value(json_object_get(obj, name));
    if (!s || !s[0] || strlen(s) > GW_FIELD_MAX) {
        return NULL;
    }
    for (const char *p = s; *p; p++) {
        if (*p <= ' ' || *p == 0x7f) {
            return NULL;
        }
    }
    return s;
}

static bool key_ok(const char *b64)
{
    uint8_t *raw = NULL;
    size_t len = 0;
    if (!b64 || strlen(b64) != 44 || ds_base64_decode(b64, 44, 32, &raw, &len) < 0) {
        return false;
    }
    free(raw);
    return len == 32;
}

struct peer {
    const char *pk, *endpoint;
    char ip[INET_ADDRSTRLEN];
};

static int peer_cmp(const void *a, const void *b)
{
    return strcmp(((const struct peer *)a)->pk, ((const struct peer *)b)->pk);
}

int util_gateway_wg_config(const json_t *resp, const char *wg_priv, char **out, char *err,
                           size_t err_size)
{
    const json_t *wg = json_object_get(resp, "wg");
    const json_t *servers = json_object_get(wg, "servers");
    const char *client_ip = safe_str(wg, "client_ip");
    struct peer peers[GW_SERVERS_MAX];
    struct in_addr a;
    struct ds_buf b;
    size_t n = json_array_size(servers);
    if (!client_ip || inet_pton(AF_INET, client_ip, &a) != 1) {
        snprintf(err, err_size, "RegisterCvm answer: wg.client_ip is not an IPv4 address");
        return -DS_E_PROTOCOL;
    }
    if (n == 0 || n > GW_SERVERS_MAX) {
        snprintf(err, err_size, "RegisterCvm answer: wg.servers must list 1-%d servers",
                 GW_SERVERS_MAX);
        return -DS_E_PROTOCOL;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *s = json_array_get(servers, i);
        const char *ip = safe_str(s, "ip");
        peers[i].pk = safe_str(s, "pk");
        peers[i].endpoint = safe_str(s, "endpoint");
        size_t iplen = ip ? strcspn(ip, "/") : 0;
        if (!key_ok(peers[i].pk) || !peers[i].endpoint || !ip || iplen >= INET_ADDRSTRLEN) {
            snprintf(err, err_size, "RegisterCvm answer: server %zu is malformed", i);
            return -DS_E_PROTOCOL;
        }
        memcpy(peers[i].ip, ip, iplen);
        peers[i].ip[iplen] = '\0';
        if (inet_pton(AF_INET, peers[i].ip, &a) != 1) {
            snprintf(err, err_size, "RegisterCvm answer: server %zu ip is not IPv4", i);
            return -DS_E_PROTOCOL;
        }
    }
    qsort(peers, n, sizeof(peers[0]), peer_cmp);
    ds_buf_init(&b, GW_RESPONSE_MAX);
    b.secret = true;
    int r = ds_buf_printf(&b, "[Interface]\nPrivateKey = %s\nListenPort = %d\nAddress = %s/32\n",
                          wg_priv, GW_WG_LISTEN_PORT, client_ip);
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = ds_buf_printf(&b,
                          "\n[Peer]\nPublicKey = %s\nAllowedIPs = %s/32\nEndpoint = %s\n"
                          "PersistentKeepalive = 25\n",
                          peers[i].pk, peers[i].ip, peers[i].endpoint);
    }
    if (r < 0) {
        ds_buf_done(&b);
        return r;
    }
    size_t len;
    ds_buf_steal(&b, (uint8_t **)out, &len);
    return 0;
}

void util_gateway_register_usage(FILE *out)
{
    fprintf(
        out,
        "usage: dstack-util gateway-register --gateway-url URL --cert CERT --key KEY --ca CA\n"
        "                                    [--wg-config-out FILE] [--gateway-app-id HEX|any]\n"
        "\n"
        "Register this CVM with a dstack gateway: generate a WireGuard key pair, call\n"
        "RegisterCvm over mutual TLS (client certificate CERT/KEY, server trusted only\n"
        "through CA, the KMS root CA) and write the WireGuard config (0600, "
        "default\n" GW_DEFAULT_WG_CONF ").\n"
        "--gateway-app-id: the gateway certificate's app id (extension .1.3, hex) must be\n"
        "a case-insensitive substring of HEX (the KMS's gateway_app_id); \"any\" disables\n"
        "server verification (upstream's rule).\n"
        "Prints the assigned address and the gateway's answer (JSON) on stdout.\n");
}

int util_cmd_gateway_register(int argc, char **argv)
{
    const char *url = NULL, *cert = NULL, *key = NULL, *ca = NULL, *conf = GW_DEFAULT_WG_CONF;
    const char *app_id = NULL;
    char priv[45] = "", pub[45] = "", err[UTIL_KMS_ERR_MAX] = "";
    json_t *resp = NULL;
    char *text = NULL;
    bool help = false;
    const struct util_opt opts[] = {
        {"gateway-url", UTIL_OPT_STRING, &url, "URL", true},
        {"cert", UTIL_OPT_STRING, &cert, "CERT", true},
        {"key", UTIL_OPT_STRING, &key, "KEY", true},
        {"ca", UTIL_OPT_STRING, &ca, "CA", true},
        {"wg-config-out", UTIL_OPT_STRING, &conf, "FILE", false},
        {"gateway-app-id", UTIL_OPT_STRING, &app_id, "HEX|any", false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = util_parse_opts("gateway-register", argc, argv, opts, &help);
    if (help) {
        util_gateway_register_usage(stdout);
        return UTIL_EXIT_OK;
    }
    if (rc != 0) {
        return rc;
    }
    rc = UTIL_EXIT_FAIL;
    if (util_wg_keypair(priv, pub) < 0) {
        log_warnx("cannot generate a WireGuard key pair");
        goto out;
    }
    if (util_gateway_register(url, cert, key, ca, app_id, pub, NULL, &resp, err, sizeof(err)) < 0 ||
        util_gateway_wg_config(resp, priv, &text, err, sizeof(err)) < 0) {
        log_warnx("%s", err);
        goto out;
    }
    int r = ds_write_file_atomic(conf, text, strlen(text), 0600);
    if (r < 0) {
        log_warnx("writing %s: %s", conf, ds_strerror(r));
        goto out;
    }
    char *dump = json_dumps(resp, JSON_COMPACT);
    printf("%s\n", dump ? dump : "{}");
    free(dump);
    log_info("registered: WireGuard address %s, config in %s",
             json_string_value(json_object_get(json_object_get(resp, "wg"), "client_ip")), conf);
    rc = UTIL_EXIT_OK;
out:
    if (text) {
        ds_wipe(text, strlen(text));
        free(text);
    }
    ds_wipe(priv, sizeof(priv));
    json_decref(resp);
    return rc;
}
