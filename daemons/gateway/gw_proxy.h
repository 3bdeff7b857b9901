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
#include <jansson.h>

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
    bool pp; /* gw_routes_lookup_port: the port policy asks for PROXY v2 on this port */
};

/* ---- port policies (gw_portpolicy.c: pure; spec host-side.md §2.1, §4.2 step 5) ---------- */

#define GW_PORT_POLICY_PORTS_MAX 256               /* listed ports per policy */
#define GW_PORT_POLICY_TEXT_MAX  (64 * 1024)       /* JSON text of one policy */
#define GW_AGENT_INFO_MAX        (8 * 1024 * 1024) /* a guest agent's Info answer (event log) */

struct gw_port_attr {
    uint16_t port; /* 1..65535 */
    bool pp;       /* send a PROXY v2 header to the backend on this port */
};

/* `{ports: [{port, pp}], restrict_mode}`; ports sorted ascending, no duplicates. The default
 * (all zero) is the open policy: every port reachable, no PROXY header. */
struct gw_port_policy {
    bool restrict_mode; /* only the listed ports are reachable */
    size_t count;
    struct gw_port_attr ports[GW_PORT_POLICY_PORTS_MAX];
};

/*
 * Validate a port policy object. `field` names it in messages ("port_policy", "policy"):
 * e.g. "port_policy.ports[2].port: expected an integer 1..65535". `ports` (absent = empty)
 * must be a list of at most GW_PORT_POLICY_PORTS_MAX objects with an integer `port` 1..65535
 * (no duplicates) and an optional boolean `pp`; `restrict_mode` an optional boolean. Unknown
 * keys are ignored (upstream serde). Returns 0, -DS_E_FORMAT or -DS_E_LIMIT (err says).
 */
DS_MUST_USE int gw_port_policy_from_json(const json_t *v, const char *field,
                                         struct gw_port_policy *out, char *err, size_t err_size);
/* The same from JSON text (at most GW_PORT_POLICY_TEXT_MAX bytes, duplicate keys refused). */
DS_MUST_USE int gw_port_policy_parse(const char *text, size_t len, const char *field,
                                     struct gw_port_policy *out, char *err, size_t err_size);
/* {ports: [{port, pp}], restrict_mode} (new reference), NULL on ENOMEM. */
json_t *gw_port_policy_to_json(const struct gw_port_policy *p);
/* Canonical compact JSON text (malloc'd), NULL on ENOMEM. */
char *gw_port_policy_dump(const struct gw_port_policy *p);
/* Whether a connection to `port` is allowed: not restrict_mode, or the port is listed. */
bool gw_port_policy_allows(const struct gw_port_policy *p, uint16_t port);
/* Whether `port` is listed with pp = true. */
bool gw_port_policy_wants_pp(const struct gw_port_policy *p, uint16_t port);
/* The policy in force: the admin override when set, else the instance-reported one, else NULL
 * (unknown). source: "admin", "instance" or "none" (upstream's GetInstancePortPolicy.source). */
const struct gw_port_policy *gw_port_policy_effective(const struct gw_port_policy *admin,
                                                      const struct gw_port_policy *reported,
                                                      const char **source);
/*
 * The policy from a guest agent's Info answer (`{"tcb_info": "<json text>"}`, the JSON text
 * holding `app_compose`, the app-compose.json text): an empty or absent tcb_info (the app
 * has public_tcbinfo = false) and an app compose without port_policy give the open policy.
 * Returns 0 or -DS_E_FORMAT (err says; not worth retrying).
 */
DS_MUST_USE int gw_port_policy_from_agent_info(const char *body, size_t len,
                                               struct gw_port_policy *out, char *err,
                                               size_t err_size);

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
/*
 * The effective port policy of an instance (copied); NULL = unknown (a registration without
 * port_policy): its connections are denied and the fetch hook is called. New instances start
 * unknown (fail closed). Returns 0, -ENOENT, -ENOMEM.
 */
DS_MUST_USE int gw_routes_set_policy(struct gw_routes *rt, const char *instance_id,
                                     const struct gw_port_policy *p);
/* Copy of an instance's effective policy: 1 (known, *out filled), 0 (unknown) or -ENOENT. */
DS_MUST_USE int gw_routes_get_policy(struct gw_routes *rt, const char *instance_id,
                                     struct gw_port_policy *out);
/* Called when a lookup meets an instance whose policy is unknown. It runs under the table's
 * lock: it must not block nor call back into the table (gw_pfetch_request qualifies). */
typedef void (*gw_routes_fetch_fn)(const char *instance_id, const char *ip, void *arg);
void gw_routes_set_fetch_hook(struct gw_routes *rt, gw_routes_fetch_fn fn, void *arg);

/* Why gw_routes_lookup_port found nothing: instances refused by their policy. */
struct gw_routes_denial {
    size_t denied;                   /* candidates refused (unknown policy included) */
    size_t unknown;                  /* of which the policy is unknown (fetch requested) */
    char instance_id[GW_ID_MAX + 1]; /* the first refused one, for the log */
};
/*
 * gw_routes_lookup for a connection to `port`, with the port policy filter (spec §4.2 step
 * 5): candidates whose effective policy is unknown (fetch hook called) or refuses the port
 * (restrict_mode and not listed) are dropped before the top_n selection; out[i].pp says
 * whether that instance's policy wants a PROXY v2 header on `port`. `denial` is filled in any
 * case. Returns the count (0 = nothing routable; denial->denied > 0 means the policy refused)
 * or -EINVAL.
 */
DS_MUST_USE int gw_routes_lookup_port(struct gw_routes *rt, const char *id, uint16_t port,
                                      int64_t now, int64_t stale_secs, unsigned top_n,
                                      struct gw_backend *out, size_t max,
                                      struct gw_routes_denial *denial);
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

/* ---- background fetch of port policies (gw_portfetch.c) ------------------------------------- */

/*
 * For an instance registered without port_policy (an older guest) the policy is read from its
 * guest agent: POST http://<wg ip>:<agent_port>/prpc/Info?json, tcb_info.app_compose.port_policy
 * (spec §4.2 step 5, [core.proxy.port_policy_fetch]). Worker threads do the HTTP so the event
 * loop never blocks; a failed attempt (connect error, timeout, non-2xx) is retried after
 * backoff_initial, doubling up to backoff_max, at most max_retries times; an answer that cannot
 * be parsed is not retried. The outcome is handed to `done` on the event base's thread.
 */
#define GW_PFETCH_WORKERS   2
#define GW_PFETCH_QUEUE_MAX 4096 /* instances waiting or being fetched */

struct gw_pfetch_config {
    uint16_t agent_port;         /* [core.proxy] agent_port (8090) */
    uint32_t timeout_ms;         /* one attempt (10 s) */
    uint32_t max_retries;        /* attempts after the first (5) */
    uint32_t backoff_initial_ms; /* 1 s */
    uint32_t backoff_max_ms;     /* 30 s */
};
/* rc 0: *p is the policy; negative: given up (err says why). attempts: how many were made. */
typedef void (*gw_pfetch_done_fn)(const char *instance_id, int rc, const struct gw_port_policy *p,
                                  unsigned attempts, const char *err, void *arg);
struct gw_pfetch;
DS_MUST_USE int gw_pfetch_new(struct event_base *base, const struct gw_pfetch_config *cfg,
                              gw_pfetch_done_fn done, void *arg, struct gw_pfetch **out);
/* Stops the workers (an attempt in progress is aborted); no callback runs afterwards. */
void gw_pfetch_free(struct gw_pfetch *pf); /* NULL-safe */
/* Queue a fetch unless one for this instance is already queued or running. Thread-safe,
 * never blocks; a full queue drops the request (the next connection asks again). */
void gw_pfetch_request(struct gw_pfetch *pf, const char *instance_id, const char *ip);
/* gw_routes_fetch_fn adapter (arg = the struct gw_pfetch). */
void gw_pfetch_hook(const char *instance_id, const char *ip, void *arg);

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

/*
 * Answer for a `gateway.<base>` path the data plane does not serve itself (/app-info,
 * /acme-info: control-plane data). `path` is the request path; fill `body` and
 * *content_type (a static string) and return the HTTP status (200, 404, 503). Called on a
 * proxy thread: must be thread-safe. Without a hook these paths answer 404. The body is
 * limited to GW_SPECIAL_BODY_MAX.
 */
#define GW_SPECIAL_BODY_MAX (2 * 1024 * 1024)
typedef int (*gw_special_fn)(const char *path, struct ds_buf *body, const char **content_type,
                             void *arg);

struct gw_proxy_config {
    /* "addr:port" or "[v6]:port"; port may be "a-b" (one listener per port). */
    char *listen[GW_LISTEN_MAX];
    size_t listen_count;
    uint32_t tls_versions;  /* GW_TLS_1_2 | GW_TLS_1_3 (default 1.2 only, spec §4.7) */
    bool inbound_pp;        /* expect a PROXY v1/v2 header from a load balancer */
    bool outbound_pp;       /* PROXY v2 to every backend; else per port policy (pp = true) */
    uint16_t agent_port;    /* proxy.agent_port (8090): returned as internal_port */
    unsigned connect_top_n; /* 3 */
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
    gw_special_fn special; /* may be NULL */
    void *special_arg;

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
    uint64_t refused_port_policy; /* port not allowed, or the instance's policy unknown */
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

#endif /* DSTACK_GW_PROXY_H */
