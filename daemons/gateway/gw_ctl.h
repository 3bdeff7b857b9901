/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-gateway control plane internals (spec host-side.md §4.1, §4.3, §4.4, §4.7): the
 * gateway.toml schema (gw_config.c), the SQLite registry of instances and their WireGuard
 * addresses (gw_db.c), the `wg` tool driver (gw_wg.c), the Gateway service with RegisterCvm
 * over mutual RA-TLS (gw_register.c), the Admin service and status page (gw_admin.c), the
 * worker threads for blocking work (gw_jobs.c), the gateway's own certificates and Info from
 * its guest agent (gw_agent.c), and the pure parsers shared with the fuzz harness
 * (gw_parse.c). The data plane is gw_proxy.h.
 * Cluster sync (WaveKV, §4.5) and ACME (§4.6) are not implemented: this is one node.
 */
#ifndef DSTACK_GW_CTL_H
#define DSTACK_GW_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

#include "dstack/config.h"
#include "dstack/rpc.h"
#include "gw_proxy.h"

#define GW_VERSION        "0.5.0-c"
#define GW_ERR_MAX        512
#define GW_PATH_MAX       4096
#define GW_WG_KEY_B64_LEN 44 /* base64 of 32 bytes */
#define GW_IP4_TEXT_MAX   16
#define GW_RANGE_MAX      65536 /* addresses in client_ip_range (a /16 at most) */
#define GW_RESERVED_MAX   64
#define GW_INSTANCES_MAX  65536
#define GW_HANDSHAKE_MS   10000 /* `wg show dump` refresh (spec §4.7: every 10 s) */
#define GW_ONLINE_SECS    300   /* GetMeta: online = handshake younger than this */
#define GW_DB_FILE        "gateway.db"

/* ---- pure parsers (gw_parse.c) ----------------------------------------------------------------
 */

struct gw_cidr {
    uint32_t addr; /* host order, as written (may have host bits) */
    unsigned prefix;
};

/* "10.0.0.1/24" (or "10.0.0.1" = /32). Returns 0 or -DS_E_FORMAT. */
DS_MUST_USE int gw_cidr_parse(const char *s, struct gw_cidr *out);
uint32_t gw_cidr_mask(unsigned prefix);
bool gw_cidr_contains(const struct gw_cidr *net, uint32_t ip);
/* a inside b (every address of a is in b). */
bool gw_cidr_inside(const struct gw_cidr *a, const struct gw_cidr *b);
void gw_ip4_text(uint32_t ip, char out[GW_IP4_TEXT_MAX]);
DS_MUST_USE int gw_ip4_parse(const char *s, uint32_t *out);

/* The address plan of [core.wg] (spec §4.3 "Config validation"). */
struct gw_net {
    struct gw_cidr wg;    /* wg.ip: gateway address + network */
    struct gw_cidr range; /* client_ip_range */
    struct gw_cidr reserved[GW_RESERVED_MAX];
    size_t reserved_count;
};

/* Parse and validate wg.ip, reserved_net, client_ip_range. Returns 0 or -EINVAL (err says). */
DS_MUST_USE int gw_net_init(struct gw_net *net, const char *ip, const char *const *reserved,
                            size_t reserved_count, const char *range, char *err, size_t err_size);
/* Whether ip may be given to a CVM: inside range and the wg network, not the network or
 * broadcast address, not the gateway's own address, not in a reserved net. */
bool gw_net_assignable(const struct gw_net *net, uint32_t ip);
/* The first assignable address of the range for which in_use(ip) is false. Returns 0,
 * -DS_E_LIMIT (range exhausted). */
DS_MUST_USE int gw_net_allocate(const struct gw_net *net, bool (*in_use)(uint32_t ip, void *ctx),
                                void *ctx, uint32_t *out);

/* A WireGuard public key: base64 of exactly 32 bytes. */
bool gw_wg_key_valid(const char *b64);
/* Lowercase hex of at most max_bytes bytes (non-empty). */
bool gw_hex_id_valid(const char *s, size_t max_bytes);

/* One peer line of `wg show <if> dump`. */
struct gw_wg_peer {
    char public_key[GW_WG_KEY_B64_LEN + 1];
    int64_t latest_handshake;
};
/*
 * Parse `wg show <if> dump` output: first line is the interface (4 fields), every further
 * line a peer (8 tab-separated fields). cb is called per peer. Returns the peer count or
 * -DS_E_FORMAT.
 */
DS_MUST_USE int gw_wg_dump_parse(const char *text, size_t len,
                                 void (*cb)(const struct gw_wg_peer *p, void *ctx), void *ctx);

/* The admin token a request carries: "Authorization: Bearer T", "X-Admin-Token: T", or (GET
 * only) ?token=T. *out borrows or points into tmp. Returns true when one was found. */
bool gw_admin_token_of(const char *authorization, const char *x_admin_token, const char *query,
                       bool is_get, char *tmp, size_t tmp_size, const char **out);

/* Append s HTML-escaped (& < > " ') to b. Returns 0 or -DS_E_LIMIT/-ENOMEM. */
DS_MUST_USE int gw_html_escape(struct ds_buf *b, const char *s);

/* ---- configuration (gw_config.c) ------------------------------------------------------------ */

struct gw_config {
    /* Rocket top level (accepted; address/port used) */
    int64_t workers, max_blocking, keep_alive;
    char *ident, *temp_dir, *log_level;
    char *address;
    uint16_t port;
    char *tls_key, *tls_certs, *tls_ca_certs;
    bool tls_mandatory;
    /* [core] */
    char *kms_url;
    bool set_ulimit;
    char *rpc_domain;
    char *agent_socket;
    bool att_external_anchors;
    char *att_pccs, *att_amd_kds;
    bool att_allow_simulated;
    char *att_sim_root;
    bool auth_enabled;
    char *auth_url;
    uint64_t auth_timeout_ms;
    bool admin_enabled;
    char *admin_address;
    uint16_t admin_port;
    char *admin_token, *admin_token_alias;
    bool admin_no_auth;
    bool dbg_rpc, dbg_skip_att, dbg_localhost;
    char *dbg_address;
    bool wg_enabled;
    char *wg_public_key, *wg_private_key;
    uint16_t wg_listen_port;
    char *wg_ip;
    struct ds_config_strv wg_reserved;
    char *wg_range, *wg_config_path, *wg_interface, *wg_endpoint;
    char *px_crypto;
    struct ds_config_strv px_tls_versions;
    char *px_listen_addr;
    uint16_t px_listen_port, px_agent_port, px_external_port;
    bool px_enabled;
    uint64_t px_buffer_size;
    int64_t px_top_n, px_workers, px_max_conn_per_app;
    char *px_ns_prefix;
    bool px_ns_compat;
    struct ds_config_strv px_dns_servers;
    bool px_thread_per_core, px_rebalance, px_inbound_pp;
    char *px_base_domain, *px_cert_chain, *px_cert_key;
    char *px_cert_source;
    uint64_t px_agent_cert_validity, px_app_info_refresh;
    uint64_t px_splice_bytes, px_splice_dur, px_ktls_bytes, px_ktls_dur;
    uint64_t ppf_timeout, ppf_backoff_initial, ppf_backoff_max;
    int64_t ppf_retries;
    uint64_t to_connect, to_handshake, to_cache_top_n, to_handshake_stale, to_dns, to_idle,
        to_write, to_shutdown, to_total, to_pp_header;
    bool to_data_enabled;
    bool rc_enabled;
    uint64_t rc_interval, rc_timeout, rc_node_timeout;
    bool sync_enabled;
    int64_t sync_node_id;
    char *sync_my_url, *sync_bootnode, *sync_data_dir;
    uint64_t sync_interval, sync_timeout, sync_persist, sync_conn_interval;
    bool sync_conn_enabled;
};

extern const struct ds_config_schema gw_config_schema;

struct gw_opts {
    const char *config_path;
    bool check, dump, doc;
    int verbose;
};

/* Parse argv. Returns 0, 1 (--help/--version printed: exit 0) or 2 (usage error). */
int gw_opts_parse(int argc, char **argv, struct gw_opts *out);
/* Load gateway.toml (defaults only when path is NULL), apply env overrides and validate the
 * cross-key rules; fills net. Returns 0 or negative (logged). */
int gw_config_load(const char *path, struct gw_config *cfg, struct gw_net *net);
/* The effective admin token (config, alias, env), or NULL. */
const char *gw_config_admin_token(const struct gw_config *cfg);
void gw_config_done(struct gw_config *cfg);
/* Split "host:port" / "[v6]:port". Returns 0 or -EINVAL. */
DS_MUST_USE int gw_split_hostport(const char *s, char *host, size_t host_size, uint16_t *port);

/* ---- registry (gw_db.c) --------------------------------------------------------------------- */

struct gw_instance {
    char instance_id[GW_ID_MAX + 1];
    char app_id[GW_ID_MAX + 1];
    char compose_hash[65];
    char ip[GW_IP4_TEXT_MAX];
    char public_key[GW_WG_KEY_B64_LEN + 1];
    int64_t reg_time;
    int64_t last_handshake;
};

struct gw_db;

DS_MUST_USE int gw_db_open(const char *path, struct gw_db **out, char *err, size_t err_size);
void gw_db_close(struct gw_db *db);
/*
 * RegisterCvm's registry step, one IMMEDIATE transaction (spec §4.3): refuse a public key used
 * by another instance (-EEXIST) and an instance registered to another app (-DS_E_MISMATCH);
 * an existing instance keeps its address if still assignable and gets the new key and
 * reg_time; a new one gets the first free assignable address (-DS_E_LIMIT when none).
 * port_policy: the reported policy as canonical JSON, NULL when the guest sent none (a stored
 * one is kept unless compose_hash changed, spec §4.3). *out = the stored row; *out_old_key =
 * the previous public key when it changed ("" else).
 */
DS_MUST_USE int gw_db_register(struct gw_db *db, const struct gw_net *net, const char *app_id,
                               const char *instance_id, const char *compose_hash,
                               const char *public_key, const char *port_policy, int64_t now,
                               struct gw_instance *out, char out_old_key[GW_WG_KEY_B64_LEN + 1],
                               char *err, size_t err_size);
DS_MUST_USE int gw_db_get(struct gw_db *db, const char *instance_id, struct gw_instance *out);
/* All instances (malloc'd array, ordered by ip). */
DS_MUST_USE int gw_db_list(struct gw_db *db, struct gw_instance **out, size_t *out_count);
/* Returns 0 or -ENOENT. */
DS_MUST_USE int gw_db_remove(struct gw_db *db, const char *instance_id);
DS_MUST_USE int gw_db_set_handshake(struct gw_db *db, const char *public_key, int64_t ts);
/* Port policies of an instance as JSON text (malloc'd; NULL = none / unknown). */
struct gw_db_policies {
    char *reported; /* port_policy: from RegisterCvm or the background fetch */
    char *admin;    /* admin_port_policy: Admin.SetInstancePortPolicy */
    char hash[65];  /* port_policy_hash: compose hash the reported one belongs to */
};
/* Returns 0, -ENOENT, -DS_E_IO, -ENOMEM. */
DS_MUST_USE int gw_db_get_policies(struct gw_db *db, const char *instance_id,
                                   struct gw_db_policies *out);
void gw_db_policies_done(struct gw_db_policies *p);
/* Store a fetched policy unless one is known by now (a registration won). 0 or -ENOENT. */
DS_MUST_USE int gw_db_set_fetched_policy(struct gw_db *db, const char *instance_id,
                                         const char *json);
/* Set (json) or clear (NULL) the admin override. 0 or -ENOENT. */
DS_MUST_USE int gw_db_set_admin_policy(struct gw_db *db, const char *instance_id, const char *json);
/* meta key/value (node uuid, node status, node url). get: -ENOENT when absent. */
DS_MUST_USE int gw_db_meta_get(struct gw_db *db, const char *key, char *out, size_t out_size);
DS_MUST_USE int gw_db_meta_set(struct gw_db *db, const char *key, const char *value);

/* ---- WireGuard through the `wg` tool (gw_wg.c) ---------------------------------------------- */

struct gw_wg {
    bool enabled;
    const char *iface;
    char key_path[GW_PATH_MAX]; /* private key file handed to `wg set ... private-key` */
};

/* Check the tool and the interface, set the private key and listen port, address and link up.
 * Returns 0 or negative with err. */
DS_MUST_USE int gw_wg_setup(struct gw_wg *wg, const struct gw_config *cfg, const char *data_dir,
                            char *err, size_t err_size);
/* Whether `wg` and the interface are usable right now (err says why not). */
DS_MUST_USE int gw_wg_ready(const struct gw_wg *wg, char *err, size_t err_size);
DS_MUST_USE int gw_wg_set_peer(const struct gw_wg *wg, const char *public_key, const char *ip,
                               char *err, size_t err_size);
DS_MUST_USE int gw_wg_remove_peer(const struct gw_wg *wg, const char *public_key, char *err,
                                  size_t err_size);
/* `wg show <if> dump` into a malloc'd NUL-terminated string. */
DS_MUST_USE int gw_wg_dump(const struct gw_wg *wg, char **out, char *err, size_t err_size);

/* ---- worker threads (gw_jobs.c) ------------------------------------------------------------- */

#define GW_WORKERS          4   /* threads for RegisterCvm verification and agent calls */
#define GW_JOBS_MAX         16  /* gw_jobs threads at most */
#define GW_JOBS_PENDING_MAX 256 /* beyond: RegisterCvm answers "too many registrations" */

struct event_base;
struct gw_jobs;
/* Runs on a worker thread; `worker` (0..workers-1) selects per-thread state (verifiers). */
typedef void (*gw_job_work_fn)(void *arg, unsigned worker);
/* Runs on the event-loop thread after `work`, exactly once per submitted job; ran = false
 * when the pool was freed before the job started (free the job's state, reply an error). */
typedef void (*gw_job_done_fn)(void *arg, bool ran);

/* Start `workers` threads (1..GW_JOBS_MAX) bound to base. Returns 0, -EINVAL, -ENOMEM. */
DS_MUST_USE int gw_jobs_new(struct event_base *base, unsigned workers, struct gw_jobs **out);
/* Queue a job. Returns 0, -EAGAIN (GW_JOBS_PENDING_MAX waiting, or stopping), -ENOMEM. */
DS_MUST_USE int gw_jobs_submit(struct gw_jobs *q, gw_job_work_fn work, gw_job_done_fn done,
                               void *arg);
/* Let running jobs finish, join the threads, run every outstanding `done` (loop thread).
 * NULL-safe. */
void gw_jobs_free(struct gw_jobs *q);

/* ---- the guest agent (gw_agent.c) ----------------------------------------------------------- */

#define GW_AGENT_CERT_SUBJECT "dstack-gateway"
#define GW_APP_INFO_MAX       (1024 * 1024) /* the agent's Info JSON kept for /app-info */

struct gw;
struct gw_agent;

/* Whether the configuration needs the guest agent (core.rpc_domain set, or
 * core.proxy.cert_source = "agent"). */
bool gw_agent_needed(const struct gw_config *cfg);
/*
 * Start-up (spec §4.1): ask the agent at core.agent_socket for the RPC server's RA-TLS
 * certificate (when rpc_domain is set) and write tls.key / tls.certs / tls.mutual.ca_certs
 * (0600, atomically); read the gateway's own app id from Info (unless
 * insecure_skip_attestation) into g->app_id; with cert_source = "agent" load the proxy's
 * wildcard certificate into g->certs. Blocking (runs before the listeners). Every failure is
 * logged naming the socket. Then arms the timers: proxy certificate renewal (a third of its
 * validity left, exponential backoff on failure) and the Info refresh for /app-info, both run
 * through g->jobs. Needs g->base, g->jobs, g->certs. Returns 0 or negative.
 */
DS_MUST_USE int gw_agent_start(struct gw *g);
/* Renew the agent-issued proxy certificate now (SIGHUP). No-op without cert_source "agent". */
void gw_agent_renew_now(struct gw *g);
void gw_agent_free(struct gw_agent *a); /* NULL-safe */
/* Admin RenewCert: renew the agent-issued proxy certificate now; answered ({"renewed": true}
 * or the failure) when the renewal is done (deferred). Admin ReloadCert: re-read file-backed
 * certificates ({}). Both in gw_agent.c, listed in gw_admin.c's method table. */
int gw_admin_renew_cert(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx);
int gw_admin_reload_cert(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx);
/* The proxy's hook for gateway.<base> paths (gw_proxy.h gw_special_fn): /app-info answers the
 * cached agent Info JSON, /acme-info a 404 JSON error. Thread-safe. */
int gw_agent_special(const char *path, struct ds_buf *body, const char **content_type, void *arg);

/* ---- the daemon state ----------------------------------------------------------------------- */

struct ds_verifier;

struct gw {
    struct gw_config cfg;
    struct gw_net net;
    struct event_base *base;
    struct gw_db *db;
    struct gw_wg wg;
    char wg_public_key[GW_WG_KEY_B64_LEN + 1];
    char node_uuid[40];
    char data_dir[GW_PATH_MAX];
    struct ds_verifier *verifiers[GW_WORKERS]; /* one per worker thread (not thread-safe) */
    struct gw_jobs *jobs;
    struct gw_agent *agent;
    char app_id[GW_ID_MAX + 1]; /* own app id from the guest agent's Info, "" when unknown */
    struct gw_routes *routes;
    struct gw_certs *certs;
    struct gw_proxy *proxy;
    struct gw_pfetch *pfetch;
    SSL_CTX *tls;
    struct ds_rpc_server *main_srv, *admin_srv;
    uint16_t main_port, admin_port;
    int64_t started;
    uint64_t registrations;
};

/* gw_register.c: the Gateway service (main server, /prpc). */
extern const struct ds_rpc_service gw_gateway_service;
int gw_health(struct ds_rpc_call *call, void *ctx);
/* Rebuild routes and WireGuard peers from the registry (start-up). */
int gw_restore(struct gw *g);
/* Refresh handshakes from `wg show dump` into routes and the registry. */
void gw_refresh_handshakes(struct gw *g);
/* [core.recycle] (spec §4.3): remove instances registered longer than the timeout ago whose
 * latest handshake is older than the timeout (never = older); peers and routes too. */
void gw_recycle(struct gw *g);

/* gw_policy.c: port policies (registry -> routing table, background fetch, Admin methods). */
/* Resolve instance_id's effective policy (admin override > reported > unknown) into routes. */
void gw_policy_apply(struct gw *g, const char *instance_id);
/* Start the background fetcher ([core.proxy.port_policy_fetch]) and hook it to the routes. */
DS_MUST_USE int gw_policy_start(struct gw *g);
void gw_policy_stop(struct gw *g);
int gw_admin_set_port_policy(struct ds_rpc_call *call, const json_t *params, json_t **out,
                             void *ctx);
int gw_admin_clear_port_policy(struct ds_rpc_call *call, const json_t *params, json_t **out,
                               void *ctx);
int gw_admin_get_port_policy(struct ds_rpc_call *call, const json_t *params, json_t **out,
                             void *ctx);

/* gw_admin.c: the Admin service, its token filter and the status page. */
extern const struct ds_rpc_service gw_admin_service;
int gw_admin_filter(struct ds_rpc_call *call, void *ctx);
int gw_admin_page(struct ds_rpc_call *call, void *ctx);

#endif /* DSTACK_GW_CTL_H */
