/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-gateway data plane: the interface between the control plane (main.c, gateway.toml,
 * RegisterCvm, WireGuard, persistence, admin API) and the SNI proxy (gw_proxy*.c, gw_certs.c,
 * gw_routes.c). The control plane fills a routing table (gw_routes) with the registered
 * instances and their WireGuard handshake times, owns a certificate store (gw_certs) loaded
 * from the static wildcard cert or from ACME, builds a struct gw_proxy_config from the
 * [core.proxy] section (spec host-side.md §4.7) and starts the proxy on its event_base.
 *
 * Threading: gw_routes_* and gw_certs_* may be called from any thread (they take an internal
 * lock; SSL_CTX references are atomic). The proxy runs `workers` event loops: worker 0 on the
 * caller's event base, the others on their own threads and bases, each with its own
 * SO_REUSEPORT listeners and connections. gw_proxy_* must be called on the thread that runs the
 * caller's base; they reach the other workers through their bases (libevent pthreads locking).
 */
#ifndef DSTACK_GW_PROXY_H
#define DSTACK_GW_PROXY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <dstack/base.h>

struct event_base;
struct ssl_ctx_st;

/* ---- routing table (gw_routes.c) ------------------------------------------------------------ */

#define GW_ID_MAX            40 /* hex app_id / instance_id (20 bytes), without NUL */
#define GW_IP_TEXT_MAX       45 /* INET6_ADDRSTRLEN - 1 */
#define GW_ROUTES_LOOKUP_MAX 64

struct gw_backend {
    char app_id[GW_ID_MAX + 1];
    char instance_id[GW_ID_MAX + 1];
    char ip[GW_IP_TEXT_MAX + 1]; /* WireGuard address of the CVM, text ("10.0.0.2") */
    int64_t last_handshake;      /* unix seconds of the latest WG handshake, 0 = never */
    uint32_t num_connections;    /* live proxied connections (maintained by the proxy) */
};

struct gw_routes;

DS_MUST_USE int gw_routes_new(struct gw_routes **out);
void gw_routes_free(struct gw_routes *rt); /* NULL-safe */
/*
 * Insert or update an instance (ids lowercase hex; ip an IPv4/IPv6 literal). Updating keeps the
 * live connection counter. Returns 0, -EINVAL on a malformed id/ip, -ENOMEM.
 */
DS_MUST_USE int gw_routes_set_instance(struct gw_routes *rt, const char *app_id,
                                       const char *instance_id, const char *ip,
                                       int64_t last_handshake);
/* Update only the handshake time. Returns 0 or -ENOENT. */
DS_MUST_USE int gw_routes_set_handshake(struct gw_routes *rt, const char *instance_id,
                                        int64_t last_handshake);
/* Remove an instance. Returns 0 or -ENOENT. Live connections keep running. */
DS_MUST_USE int gw_routes_remove_instance(struct gw_routes *rt, const char *instance_id);
/*
 * Backends for an SNI id (spec §4.2 step 5): if `id` is an instance_id, that one instance;
 * else the app's instances whose handshake is younger than `stale_secs` (0 = no staleness
 * check) at `now`, freshest first, at most `top_n` (0 = one at random). Copies into out[0..max).
 * Returns the count (0 = unknown id / no healthy instance) or -EINVAL.
 */
DS_MUST_USE int gw_routes_lookup(struct gw_routes *rt, const char *id, int64_t now,
                                 int64_t stale_secs, unsigned top_n, struct gw_backend *out,
                                 size_t max);
/* Snapshot of every instance (admin Status). Returns the count copied. */
DS_MUST_USE int gw_routes_list(struct gw_routes *rt, struct gw_backend *out, size_t max);
/* Connection counters, used by the proxy for max_connections_per_app. */
void gw_routes_conn_inc(struct gw_routes *rt, const char *instance_id);
void gw_routes_conn_dec(struct gw_routes *rt, const char *instance_id);
/*
 * Check max_connections_per_app and count the connection in one step (exact across proxy
 * workers): under the lock, the live connections of the candidates cand[0..n) are summed; at or
 * above `limit` (0 = unlimited) nothing changes and -DS_E_LIMIT is returned, else cand[0] is
 * counted and 0 returned (-EINVAL on an empty set). The caller later moves the count to the
 * backend that won the connect race (gw_routes_conn_move) and drops it with gw_routes_conn_dec.
 */
DS_MUST_USE int gw_routes_conn_reserve(struct gw_routes *rt, const struct gw_backend *cand,
                                       size_t n, uint32_t limit);
/* Move one live connection from one instance to another (same app). */
void gw_routes_conn_move(struct gw_routes *rt, const char *from_instance, const char *to_instance);

/* ---- certificate store (gw_certs.c) --------------------------------------------------------- */

/*
 * Wildcard certificates per base domain ("*.<base>"). Each (re)load builds a new SSL_CTX for
 * that domain and swaps it in under the lock; handshakes already running keep the old context
 * by reference, so reloading never drops connections. ACME later calls gw_certs_set_pem().
 */
struct gw_certs;

#define GW_CERT_DOMAIN_MAX 253
#define GW_CERTS_MAX       256

DS_MUST_USE int gw_certs_new(struct gw_certs **out);
void gw_certs_free(struct gw_certs *cs); /* NULL-safe */
/* TLS versions accepted by contexts built from now on: bit 0 = 1.2, bit 1 = 1.3. */
#define GW_TLS_1_2 1u
#define GW_TLS_1_3 2u
void gw_certs_set_versions(struct gw_certs *cs, unsigned tls_versions);
/*
 * Add or replace the certificate for base_domain from PEM files (chain: leaf first) /
 * PEM text. The files are remembered for gw_certs_reload(). Returns 0, -DS_E_CERT (key does
 * not match / unparsable), -ENOENT, -DS_E_LIMIT.
 */
DS_MUST_USE int gw_certs_load_files(struct gw_certs *cs, const char *base_domain,
                                    const char *chain_path, const char *key_path);
DS_MUST_USE int gw_certs_set_pem(struct gw_certs *cs, const char *base_domain,
                                 const char *chain_pem, size_t chain_len, const char *key_pem,
                                 size_t key_len);
DS_MUST_USE int gw_certs_remove(struct gw_certs *cs, const char *base_domain);
/* Re-read every file-backed certificate. Returns the number reloaded or the first error
 * (entries that fail keep their previous certificate). */
DS_MUST_USE int gw_certs_reload(struct gw_certs *cs);
/* true when a certificate for exactly this base domain is loaded. */
bool gw_certs_has(struct gw_certs *cs, const char *base_domain);
/*
 * The SSL_CTX for base_domain with one reference taken (caller SSL_CTX_free()s it), or NULL.
 * The ALPN callback offers h2 only when `h2` (the `g` suffix), else http/1.1.
 */
struct ssl_ctx_st *gw_certs_get_ctx(struct gw_certs *cs, const char *base_domain, bool h2);

/* ---- proxy (gw_proxy*.c) -------------------------------------------------------------------- */

#define GW_LISTEN_MAX               8
#define GW_DEFAULT_AGENT_PORT       8090
#define GW_DEFAULT_TERMINATE_PORT   80  /* `<id>` / `<id>-g` without a port */
#define GW_DEFAULT_PASSTHROUGH_PORT 443 /* `<id>-s` */

#define GW_WORKERS_MAX                256
#define GW_SPLICE_AFTER_BYTES_DEFAULT 65536 /* proxy-only; gateway.toml: absent = no splice */

struct gw_proxy_timeouts {
    uint32_t pp_header_ms;      /* inbound PROXY header (default 5 s) */
    uint32_t handshake_ms;      /* ClientHello up to the SNI, then TLS handshake (default 5 s) */
    uint32_t connect_ms;        /* backend connect, all candidates together (default 5 s) */
    uint32_t idle_ms;           /* no data either way (default 10 min; 0 = off) */
    uint32_t total_ms;          /* whole connection (default 5 h; 0 = off) */
    uint32_t shutdown_ms;       /* drain after one side closed / proxy shutdown (default 5 s) */
    uint32_t dns_ms;            /* custom-domain TXT lookup (default 5 s) */
    uint32_t stale_handshake_s; /* WG handshake older than this = unhealthy (default 1800) */
};

struct gw_proxy_config {
    /* "addr:port" or "[v6]:port"; port may be "a-b" (one listener per port). */
    char *listen[GW_LISTEN_MAX];
    size_t listen_count;
    uint32_t tls_versions;       /* GW_TLS_1_2 | GW_TLS_1_3 (default 1.2 only, spec §4.7) */
    bool inbound_pp;             /* expect a PROXY v1/v2 header from a load balancer */
    bool outbound_pp;            /* send PROXY v2 to every backend (port policy pp=true) */
    uint16_t *outbound_pp_ports; /* if non-NULL: only these backend ports get PROXY v2 */
    size_t outbound_pp_port_count;
    uint16_t agent_port;               /* proxy.agent_port (8090): returned as internal_port */
    unsigned connect_top_n;            /* 3 */
    uint32_t max_connections_per_app;  /* 0 = unlimited */
    uint32_t max_connections;          /* global cap, 0 = unlimited */
    size_t buffer_size;                /* relay buffer per direction (65536) */
    bool splice;                       /* zero-copy relay for passthrough where possible */
    const char *app_address_ns_prefix; /* "_dstack-app-address" */
    bool app_address_ns_compat;        /* also try "_tapp-address" */
    bool insecure_localhost_backend;   /* id "localhost" -> 127.0.0.1 (dev only) */
    /* Backend address override for tests (e.g. "127.0.0.1"): every backend ip is replaced. */
    const char *insecure_backend_override;
    struct gw_proxy_timeouts timeouts;

    /* Passthrough starts with the buffered relay and switches to splice once the connection
     * moved splice_after_bytes (both directions together) or is splice_after_ms old, whichever
     * comes first; both 0 = splice from the start ([core.proxy.tcp_splice], spec §4.7). */
    uint64_t splice_after_bytes;
    uint32_t splice_after_ms;
    /* Event loops (threads); 0 or 1 = one loop on the caller's base. At most GW_WORKERS_MAX. */
    unsigned workers;
};

/* Fill cfg with the §4.7 defaults (no listen addresses; one worker; splice after 64 KiB). */
void gw_proxy_config_defaults(struct gw_proxy_config *cfg);

struct gw_proxy_stats {
    uint64_t accepted, active, refused_no_sni, refused_bad_sni, refused_unknown_app, refused_limit,
        refused_timeout, backend_fail, terminated, passthrough, spliced_bytes;
};

struct gw_proxy;

/*
 * Bind the listeners and start accepting on `base`; with cfg->workers > 1 also start that many
 * - 1 threads, each with its own base and SO_REUSEPORT listeners on the same addresses (signals
 * blocked in them). Borrows cfg strings only during the call, borrows `routes` and `certs` for
 * the proxy's lifetime. Returns 0, -errno (bind, pthread_create), -EINVAL, -ENOMEM.
 */
DS_MUST_USE int gw_proxy_new(struct event_base *base, const struct gw_proxy_config *cfg,
                             struct gw_routes *routes, struct gw_certs *certs,
                             struct gw_proxy **out);
/* Stop every worker's listeners, join the worker threads and close every connection (callers
 * wait for the drain first: gw_proxy_shutdown, then active == 0 or the deadline). NULL-safe. */
void gw_proxy_free(struct gw_proxy *p);
/* Re-read file-backed certificates; existing connections are not touched. */
DS_MUST_USE int gw_proxy_reload_certs(struct gw_proxy *p);
/* Stop accepting (graceful shutdown); live connections drain within shutdown_ms. */
void gw_proxy_shutdown(struct gw_proxy *p);
void gw_proxy_get_stats(struct gw_proxy *p, struct gw_proxy_stats *out);
/* Counters of worker i alone (0 = the caller's base). Returns 0 or -EINVAL past the last. */
DS_MUST_USE int gw_proxy_get_worker_stats(struct gw_proxy *p, size_t i, struct gw_proxy_stats *out);
/* The port actually bound for listener i (useful with port 0). Returns port or -EINVAL. */
DS_MUST_USE int gw_proxy_listen_port(struct gw_proxy *p, size_t i);

/*
 * Proxy-only driver for tests/integration (gw_proxy_main.c): the control plane's main.c
 * dispatches `dstack-gateway proxy-only --config FILE` here. FILE is a small key=value file
 * (see docs/gateway.md). Returns the process exit code.
 */
int gw_proxy_only_main(int argc, char **argv);

/* ---- data-plane internals shared by gw_proxy.c, gw_sni.c, gw_proxyproto.c ------------------- */

struct sockaddr_storage;
struct ds_buf;

/*
 * Custom-domain lookup (spec §4.2 step 4) on a helper thread with res_query(3): TXT
 * `<prefix>.<sni>` (and `_tapp-address.<sni>` when compat), then `<prefix>-wildcard.<parent>`.
 * `cb` runs on the event base with rc 0 and the app address, or a negative error. Cancelling
 * guarantees cb is not called afterwards. At most GW_DNS_INFLIGHT_MAX lookups run at once
 * (-EAGAIN beyond).
 */
#define GW_DNS_INFLIGHT_MAX 64
struct gw_dns_req;
typedef void (*gw_dns_cb)(int rc, const char *app_id, uint16_t port, void *arg);
DS_MUST_USE int gw_dns_lookup_start(struct event_base *base, const char *sni, const char *prefix,
                                    bool compat, gw_dns_cb cb, void *arg, struct gw_dns_req **out);
void gw_dns_lookup_cancel(struct gw_dns_req *req); /* NULL-safe */

/*
 * Answer cache of the custom-domain lookups (spec: 256 entries, negative answers at most 10 s).
 * Positive answers are kept GW_DNS_POSITIVE_TTL_MS (the record TTL is not read). Used on the
 * event-loop thread only. get: 1 = hit (app_id[DS_GW_ID_MAX + 1], port filled), negative =
 * cached failure, 0 = miss.
 */
#define GW_DNS_CACHE_SIZE      256
#define GW_DNS_NEGATIVE_TTL_MS 10000
#define GW_DNS_POSITIVE_TTL_MS 60000
struct gw_dns_cache;
DS_MUST_USE int gw_dns_cache_new(struct gw_dns_cache **out);
void gw_dns_cache_free(struct gw_dns_cache *c); /* NULL-safe */
DS_MUST_USE int gw_dns_cache_get(struct gw_dns_cache *c, const char *sni, uint64_t now_ms,
                                 char *app_id, uint16_t *port);
void gw_dns_cache_put(struct gw_dns_cache *c, const char *sni, int rc, const char *app_id,
                      uint16_t port, uint64_t now_ms);

/*
 * PROXY v2 header for a backend: src = the client (as reported by an inbound PROXY header or
 * the socket), dst = the address the client connected to. Mixed families give a LOCAL header.
 * Returns bytes appended or a negative error.
 */
DS_MUST_USE int gw_pp_backend_header(struct ds_buf *b, const struct sockaddr_storage *client,
                                     const struct sockaddr_storage *local);
/* Whether a backend port gets a PROXY header under cfg. */
bool gw_pp_port_wants(const struct gw_proxy_config *cfg, uint16_t port);

#endif /* DSTACK_GW_PROXY_H */
