/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The collateral service: Intel PCS / PCCS v4 routes served from the mock PKI with libevent's
 * evhttp, so verifiers fetch simulator collateral exactly as they fetch Intel's (spec
 * attestation.md §2.8 for what the fetcher requests, §6.3 for upstream's mock server):
 *
 *   GET /sgx/certification/v4/pckcrl?ca=platform[&encoding=der]   PCK CRL (PEM, or DER)
 *   GET /sgx/certification/v4/rootcacrl                           root CA CRL as hex text
 *   GET /{sgx,tdx}/certification/v4/tcb?fmspc=HEX                 {"tcbInfo":..,"signature":..}
 *   GET /{sgx,tdx}/certification/v4/qe/identity                   {"enclaveIdentity":..,..}
 *   GET /dstack-sim/v1/root-ca.der                                the mock root (not Intel's)
 *
 * Issuer chains go in the headers Intel uses, as percent-encoded PEM. The JSON bodies embed
 * the exact signed bytes of TCB info / QE identity (the signature covers that span). The mock
 * platform has one TCB info and one QE identity (TDX); the SGX routes serve the same ones.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/keyvalq_struct.h>
#include <netinet/in.h>

#include "log.h"
#include "teesim.h"

#define PCCS_ADDR_MAX 128

struct pccs_route {
    const char *path;
    void (*fn)(struct teesim *sim, struct evhttp_request *req, const struct evkeyvalq *query,
               bool tdx);
    bool tdx;
};

const struct ds_collateral *teesim_collateral(struct teesim *sim)
{
    int64_t now = (int64_t)time(NULL);
    if (sim->coll && now - sim->coll_time < TEESIM_COLLATERAL_REFRESH && now >= sim->coll_time) {
        return sim->coll;
    }
    struct ds_collateral *c = NULL;
    int r = ds_sim_collateral(sim->pki, now, &c);
    if (r < 0) {
        log_warnx("cannot generate collateral: %s", ds_strerror(r));
        return sim->coll; /* keep serving the previous set, if any */
    }
    ds_collateral_free(sim->coll);
    sim->coll = c;
    sim->coll_time = now;
    return c;
}

static void reply_text(struct evhttp_request *req, int code, const char *reason, const char *msg)
{
    struct evbuffer *b = evbuffer_new();
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type", "text/plain");
    if (b) {
        evbuffer_add_printf(b, "%s\n", msg);
    }
    evhttp_send_reply(req, code, reason, b);
    if (b) {
        evbuffer_free(b);
    }
}

/* Send body with content type and, when chain_header is set, the percent-encoded PEM chain. */
static void reply(struct evhttp_request *req, const char *type, const void *body, size_t len,
                  const char *chain_header, const char *chain_pem)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    struct evbuffer *b = evbuffer_new();
    char *enc = NULL;
    if (chain_header) {
        enc = evhttp_encode_uri(chain_pem ? chain_pem : "");
    }
    if (!b || (chain_header && !enc) || evbuffer_add(b, body, len) < 0) {
        if (b) {
            evbuffer_free(b);
        }
        free(enc);
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
        return;
    }
    evhttp_add_header(h, "Content-Type", type);
    if (enc) {
        evhttp_add_header(h, chain_header, enc);
    }
    evhttp_send_reply(req, HTTP_OK, "OK", b);
    evbuffer_free(b);
    free(enc);
}

static void route_pckcrl(struct teesim *sim, struct evhttp_request *req,
                         const struct evkeyvalq *query, bool tdx)
{
    const char *ca = evhttp_find_header(query, "ca");
    const char *enc = evhttp_find_header(query, "encoding");
    if (!ca || (strcasecmp(ca, "platform") != 0 && strcasecmp(ca, "processor") != 0)) {
        reply_text(req, HTTP_BADREQUEST, "Bad Request", "ca must be platform or processor");
        return;
    }
    if (enc && strcasecmp(enc, "der") != 0 && strcasecmp(enc, "pem") != 0) {
        reply_text(req, HTTP_BADREQUEST, "Bad Request", "encoding must be pem or der");
        return;
    }
    if (strcasecmp(ca, "processor") == 0) {
        /* The mock PKI issues its PCK certificates from a Platform CA only. */
        reply_text(req, HTTP_NOTFOUND, "Not Found", "the simulated platform has no Processor CA");
        return;
    }
    const struct ds_collateral *c = teesim_collateral(sim);
    if (!c) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "no collateral");
        return;
    }
    if (enc && strcasecmp(enc, "der") == 0) {
        reply(req, "application/pkix-crl", c->pck_crl, c->pck_crl_len, "SGX-PCK-CRL-Issuer-Chain",
              c->pck_crl_issuer_chain);
        return;
    }
    /* Intel's default encoding is PEM. */
    char *b64 = ds_base64_encode(c->pck_crl, c->pck_crl_len);
    struct ds_buf pem;
    ds_buf_init(&pem, 4 * c->pck_crl_len + 256);
    int r = b64 ? ds_buf_append_str(&pem, "-----BEGIN X509 CRL-----\n") : -ENOMEM;
    for (size_t off = 0; r == 0 && off < strlen(b64); off += 64) {
        size_t n = strlen(b64) - off < 64 ? strlen(b64) - off : 64;
        r = ds_buf_append(&pem, b64 + off, n);
        if (r == 0) {
            r = ds_buf_append_str(&pem, "\n");
        }
    }
    if (r == 0) {
        r = ds_buf_append_str(&pem, "-----END X509 CRL-----\n");
    }
    if (r == 0) {
        reply(req, "application/x-pem-file", pem.data, pem.len, "SGX-PCK-CRL-Issuer-Chain",
              c->pck_crl_issuer_chain);
    } else {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
    }
    ds_buf_done(&pem);
    free(b64);
}

static void route_rootcacrl(struct teesim *sim, struct evhttp_request *req,
                            const struct evkeyvalq *query, bool tdx)
{
    const struct ds_collateral *c = teesim_collateral(sim);
    char *hex = c ? ds_hex_strdup(c->root_ca_crl, c->root_ca_crl_len) : NULL;
    if (!hex) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "no collateral");
        return;
    }
    /* PCCS serves the root CA CRL as hex text (spec §2.8). */
    reply(req, "text/plain", hex, strlen(hex), NULL, NULL);
    free(hex);
}

/* {"<key>":<signed bytes>,"signature":"<hex>"} */
static int signed_json(const char *key, const char *body, size_t body_len, const uint8_t *sig,
                       size_t sig_len, struct ds_buf *out)
{
    char *hex = ds_hex_strdup(sig, sig_len);
    if (!hex) {
        return -ENOMEM;
    }
    int r = ds_buf_printf(out, "{\"%s\":", key);
    if (r == 0) {
        r = ds_buf_append(out, body, body_len);
    }
    if (r == 0) {
        r = ds_buf_printf(out, ",\"signature\":\"%s\"}", hex);
    }
    free(hex);
    return r;
}

static void route_tcb(struct teesim *sim, struct evhttp_request *req, const struct evkeyvalq *query,
                      bool tdx)
{
    const char *fmspc = evhttp_find_header(query, "fmspc");
    uint8_t want[6], have[6], pce_id[2], ppid[16];
    if (!fmspc || ds_hex_decode(fmspc, strlen(fmspc), want, sizeof(want)) < 0) {
        reply_text(req, HTTP_BADREQUEST, "Bad Request", "fmspc must be 12 hex digits");
        return;
    }
    ds_sim_pki_platform(sim->pki, have, pce_id, ppid);
    if (memcmp(want, have, sizeof(have)) != 0) {
        reply_text(req, HTTP_NOTFOUND, "Not Found", "no TCB info for this FMSPC");
        return;
    }
    const struct ds_collateral *c = teesim_collateral(sim);
    if (!c) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "no collateral");
        return;
    }
    struct ds_buf body;
    ds_buf_init(&body, c->tcb_info_len + 2 * c->tcb_info_signature_len + 64);
    if (signed_json("tcbInfo", c->tcb_info, c->tcb_info_len, c->tcb_info_signature,
                    c->tcb_info_signature_len, &body) < 0) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
    } else {
        reply(req, "application/json", body.data, body.len,
              tdx ? "TCB-Info-Issuer-Chain" : "SGX-TCB-Info-Issuer-Chain",
              c->tcb_info_issuer_chain);
    }
    ds_buf_done(&body);
}

static void route_qe_identity(struct teesim *sim, struct evhttp_request *req,
                              const struct evkeyvalq *query, bool tdx)
{
    const struct ds_collateral *c = teesim_collateral(sim);
    if (!c) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "no collateral");
        return;
    }
    struct ds_buf body;
    ds_buf_init(&body, c->qe_identity_len + 2 * c->qe_identity_signature_len + 64);
    if (signed_json("enclaveIdentity", c->qe_identity, c->qe_identity_len, c->qe_identity_signature,
                    c->qe_identity_signature_len, &body) < 0) {
        reply_text(req, HTTP_INTERNAL, "Internal Server Error", "out of memory");
    } else {
        reply(req, "application/json", body.data, body.len, "SGX-Enclave-Identity-Issuer-Chain",
              c->qe_identity_issuer_chain);
    }
    ds_buf_done(&body);
}

static void route_root_ca(struct teesim *sim, struct evhttp_request *req,
                          const struct evkeyvalq *query, bool tdx)
{
    const uint8_t *der;
    size_t len;
    ds_sim_pki_root_der(sim->pki, &der, &len);
    reply(req, "application/pkix-cert", der, len, NULL, NULL);
}

static const struct pccs_route routes[] = {
    {"/sgx/certification/v4/pckcrl", route_pckcrl, false},
    {"/sgx/certification/v4/rootcacrl", route_rootcacrl, false},
    {"/sgx/certification/v4/tcb", route_tcb, false},
    {"/tdx/certification/v4/tcb", route_tcb, true},
    {"/sgx/certification/v4/qe/identity", route_qe_identity, false},
    {"/tdx/certification/v4/qe/identity", route_qe_identity, true},
    {"/dstack-sim/v1/root-ca.der", route_root_ca, false},
};

static void pccs_cb(struct evhttp_request *req, void *arg)
{
    struct teesim *sim = arg;
    if (evhttp_request_get_command(req) != EVHTTP_REQ_GET) {
        reply_text(req, 405, "Method Not Allowed", "only GET is supported");
        return;
    }
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    const char *qs = uri ? evhttp_uri_get_query(uri) : NULL;
    struct evkeyvalq query;
    TAILQ_INIT(&query);
    if (!path || (qs && evhttp_parse_query_str(qs, &query) < 0)) {
        reply_text(req, HTTP_BADREQUEST, "Bad Request", "malformed request URI");
        evhttp_clear_headers(&query);
        return;
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(routes); i++) {
        if (strcmp(path, routes[i].path) == 0) {
            log_debug("pccs: GET %s", path);
            routes[i].fn(sim, req, &query, routes[i].tdx);
            evhttp_clear_headers(&query);
            return;
        }
    }
    evhttp_clear_headers(&query);
    reply_text(req, HTTP_NOTFOUND, "Not Found", "no such route");
}

/* Split "ADDR:PORT" ("[v6]:PORT" too) into host and port. */
static int split_listen(const char *listen, char *host, size_t host_size, uint16_t *port)
{
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen) {
        return -DS_E_FORMAT;
    }
    const char *h = listen;
    size_t hl = (size_t)(colon - listen);
    if (h[0] == '[') {
        if (hl < 2 || h[hl - 1] != ']') {
            return -DS_E_FORMAT;
        }
        h++;
        hl -= 2;
    }
    if (hl == 0 || hl >= host_size) {
        return -DS_E_FORMAT;
    }
    memcpy(host, h, hl);
    host[hl] = '\0';
    char *end;
    errno = 0;
    unsigned long p = strtoul(colon + 1, &end, 10);
    if (errno || end == colon + 1 || *end || p > 65535) {
        return -DS_E_FORMAT;
    }
    *port = (uint16_t)p;
    return 0;
}

int teesim_pccs_start(struct teesim *sim, const char *listen)
{
    char host[PCCS_ADDR_MAX];
    uint16_t port;
    if (split_listen(listen, host, sizeof(host), &port) < 0) {
        log_warnx("--pccs-listen \"%s\": expected ADDR:PORT", listen);
        return -DS_E_FORMAT;
    }
    sim->http = evhttp_new(sim->base);
    if (!sim->http) {
        return -ENOMEM;
    }
    evhttp_set_allowed_methods(sim->http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST);
    evhttp_set_timeout(sim->http, TEESIM_READ_TIMEOUT_SEC);
    evhttp_set_max_headers_size(sim->http, 16 * 1024);
    evhttp_set_max_body_size(sim->http, 0);
    evhttp_set_gencb(sim->http, pccs_cb, sim);
    struct evhttp_bound_socket *bs = evhttp_bind_socket_with_handle(sim->http, host, port);
    if (!bs) {
        log_warnx("cannot listen on %s", listen);
        return -EADDRNOTAVAIL;
    }
    struct sockaddr_storage ss;
    socklen_t sl = sizeof(ss);
    char ip[INET6_ADDRSTRLEN], addr[PCCS_ADDR_MAX + 16];
    if (getsockname(evhttp_bound_socket_get_fd(bs), (struct sockaddr *)&ss, &sl) < 0) {
        return -errno;
    }
    if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(addr, sizeof(addr), "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(addr, sizeof(addr), "%s:%u", ip, ntohs(s4->sin_port));
    }
    char path[PATH_MAX], line[PCCS_ADDR_MAX + 32];
    DS_TRY(teesim_join(path, sizeof(path), sim->state_dir, TEESIM_PCCS_ADDR_FILE));
    snprintf(line, sizeof(line), "%s\n", addr);
    int r = ds_write_file_atomic(path, line, strlen(line), 0644);
    if (r < 0) {
        log_warnx("cannot write %s: %s", path, ds_strerror(r));
        return r;
    }
    /* Warm the cache so the first verifier request does not pay for the signatures. */
    (void)teesim_collateral(sim);
    log_info("collateral service (PCCS v4 routes) on http://%s", addr);
    return 0;
}

void teesim_pccs_stop(struct teesim *sim)
{
    if (sim->http) {
        evhttp_free(sim->http);
        sim->http = NULL;
    }
    ds_collateral_free(sim->coll);
    sim->coll = NULL;
}
