/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-guest-agent, shared declarations: the configuration (one schema table in
 * agent_config.c), the state every service reads (inputs loaded by agent_state.c, the TEE,
 * the app keys held by agent_keys.c), certificates (agent_tls.c, agent_kms.c), the TEE worker
 * thread (agent_jobs.c), simulator mode (agent_sim.c), the request decoders (agent_decode.c, also
 * used by the fuzz harness) and the service tables of each listener (agent_dstack.c,
 * agent_tappd.c, agent_worker.c).
 *
 * Threads: the loop thread owns calls and decoding; the worker thread owns the TEE, the Info
 * cache and every evidence computation once serving. Keys and inputs are read-only then.
 * Spec: ../shared/spec/guest-agent-api.md.
 */
#ifndef DSTACK_AGENT_H
#define DSTACK_AGENT_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "dstack/attest.h"
#include "dstack/base.h"
#include "dstack/rpc.h"
#include "dstack/tee.h"

#define AGENT_VERSION "0.5.8"
/* The git revision (CMake passes DS_GIT_REV, "unknown" outside a git checkout). */
#ifdef DS_GIT_REV
#define AGENT_REV DS_GIT_REV
#else
#define AGENT_REV "unknown"
#endif

/* Real-guest defaults (spec §1, §4.1). */
#define AGENT_DEFAULT_SOCKET        "/var/run/dstack/dstack.sock"
#define AGENT_DEFAULT_TAPPD_SOCKET  "/var/run/dstack/tappd.sock"
#define AGENT_DEFAULT_HTTP          "0.0.0.0:8090"
#define AGENT_DEFAULT_KEYS_FILE     "/dstack/.host-shared/.appkeys.json"
#define AGENT_DEFAULT_COMPOSE_FILE  "/dstack/.host-shared/app-compose.json"
#define AGENT_DEFAULT_SYS_CONFIG    "/dstack/.host-shared/.sys-config.json"
#define AGENT_DEFAULT_INSTANCE_INFO "/dstack/.host-shared/.instance_info"
#define AGENT_DEFAULT_DMI_DIR       "/sys/class/dmi/id"

/* Input file limits. */
#define AGENT_COMPOSE_MAX       (1024 * 1024)
#define AGENT_SYS_CONFIG_MAX    (1024 * 1024)
#define AGENT_KEYS_FILE_MAX     (256 * 1024)
#define AGENT_INSTANCE_INFO_MAX (64 * 1024)
#define AGENT_DMI_MAX           256

/* ---- configuration (agent_config.c) ---------------------------------------------------------- */

struct agent_config {
    bool simulator;
    const char *socket;       /* dstack.sock ("" = none) */
    const char *tappd_socket; /* tappd.sock ("" = none) */
    const char *http;         /* external listener ADDR:PORT ("" = none) */
    const char *keys_file;
    const char *compose_file;
    const char *sys_config_file;
    const char *instance_info_file;
    const char *dmi_dir;
    const char *tee;  /* ds_tee_open spec; NULL/"" = env DSTACK_TEE or autodetect */
    const char *seed; /* simulator: mock PKI seed (64 hex) */
    const char *config_file;
    bool check;
    bool dump;
    int verbose;
    unsigned keep_alive_s; /* HTTP keep-alive idle timeout (TOML default.keep_alive) */
    char http_buf[128];    /* external ADDR:PORT composed from the TOML [external] table */
    void *toml;            /* the loaded TOML config (owns the strings above that came from it) */
};

/* Parse argv into cfg: defaults, then --config FILE (upstream's dstack.toml layout), then the
 * other command-line options. Returns 0, 1 for --help/--version (already printed), or -1
 * after logging a usage or configuration error. */
int agent_config_parse(struct agent_config *cfg, int argc, char **argv);
/* Print the effective configuration as a TOML file --config reads back. */
void agent_config_dump(const struct agent_config *cfg);
void agent_config_free(struct agent_config *cfg);

/* ---- state ----------------------------------------------------------------------------------- */

struct ds_appkeys;
struct agent_req;
struct agent_jobs;
struct event_base;

struct agent {
    struct agent_config cfg;
    struct ds_tee *tee;
    struct ds_appkeys *appkeys; /* owned by agent_keys.c (the only file that sees keys.h) */
    /* app-compose.json (raw text, kept for tcb_info.app_compose) and what it says */
    char *compose_raw;
    char *app_name;
    bool public_logs;
    bool public_sysinfo;
    bool public_tcbinfo;
    uint32_t event_log_version; /* runtime events: 1, or 2 with event_log_version 2 (§4.10) */
    /* sys-config's vm_config string ("" when absent) */
    char *vm_config;
    char *cloud_vendor;
    char *cloud_product;
    /* .instance_info (optional): ids used when the event log has no app-id / instance-id */
    char *ii_app_id;
    char *ii_instance_id;
    /* Info.app_cert: the demo RA-TLS chain, PEMs joined with "\n" */
    char *app_cert;
    /* Cached AppInfo (a real quote per Info would be slow): rebuilt when RTMR3 changes, whoever
     * extended it (EmitEvent here, dstack-util or an app through the kernel interface). */
    json_t *info_cache;
    uint8_t info_rtmr3[48]; /* RTMR3 when info_cache was built */
    /* The TEE worker thread (agent_jobs.c); NULL before the loop starts. */
    struct agent_jobs *jobs;
    char version_header[128];
};

/* A fresh quote with the event log that explains it (agent_state.c). */
struct ds_event_log;
struct agent_evidence {
    uint8_t *quote;
    size_t quote_len;
    struct ds_td_report td;
    struct ds_event_log *log; /* full log, runtime events included */
};
int agent_evidence_get(struct agent *a, const uint8_t rd[64], struct agent_evidence *out, char *msg,
                       size_t msg_size);
void agent_evidence_done(struct agent_evidence *e);

/* Load keys, compose, sys-config and DMI strings (agent_state.c). Logs and returns < 0. */
int agent_state_load(struct agent *a);
/* Apply app-compose.json text and sys-config text (used by the loader and simulator mode). */
int agent_state_set_inputs(struct agent *a, const char *compose_text, const char *sys_config_text);
/* The Attest container (V0, or V1 when a runtime event is V2) for 64 bytes of report data. */
int agent_attest(struct agent *a, const uint8_t rd[64], uint8_t **out, size_t *out_len, char *msg,
                 size_t msg_size);
void agent_state_free(struct agent *a);
/* The AppInfo object (§4.11), cached; `external` blanks tcb_info/vm_config unless
 * public_tcbinfo. Returns 0 and a new reference, or < 0 with msg set. */
int agent_info(struct agent *a, bool external, json_t **out, char *msg, size_t msg_size);
void agent_info_invalidate(struct agent *a);
/* The GetQuote response object for 64 bytes of report data (§3.1, §4.7). */
int agent_quote_response(struct agent *a, const uint8_t rd[64], bool with_vm_config, json_t **out,
                         char *msg, size_t msg_size);
/* Issue Info.app_cert at start-up (§4.6: synchronously, the Rust SDK test needs it). */
int agent_issue_demo_cert(struct agent *a);

/*
 * Keys (agent_keys.c, the one file that handles the app's secret keys; spec §4.2-4.6). JSON
 * results are new references; on failure msg gets the client-facing message.
 */
int agent_keys_load(struct agent *a, const char *path);
void agent_keys_free(struct agent *a);
int agent_keys_get_key(struct agent *a, const struct agent_req *req, bool legacy_names,
                       json_t **out, char *msg, size_t msg_size);
int agent_keys_sign(struct agent *a, const struct agent_req *req, json_t **out, char *msg,
                    size_t msg_size);
int agent_keys_verify(const struct agent_req *req, json_t **out, char *msg, size_t msg_size);
/* P-256 scalar for a TLS key: HKDF(k256_key, derive_path) or fresh random when NULL. */
int agent_keys_tls_scalar(struct agent *a, const char *derive_path, uint8_t out[32]);
/* PKCS#8 PEM of a P-256 scalar (free with agent_keys_free_pem). */
int agent_keys_key_pem(const uint8_t scalar[32], char **out);
void agent_keys_free_pem(char *pem);
/* The local CA (key provider None/Local/Tpm): its scalar and certificate PEM (borrowed). */
int agent_keys_ca(struct agent *a, uint8_t out_scalar[32], const char **out_cert_pem);
/* Key provider Kms: the SignCert endpoint, the temp CA (scalar + certificate, for the client
 * certificate) and the root CA the KMS server must chain to. -DS_E_NOT_FOUND for other
 * providers. Strings are borrowed from the keys file. */
int agent_keys_kms(struct agent *a, const char **out_url, uint8_t out_tmp_ca[32],
                   const char **out_tmp_ca_cert, const char **out_root_ca);
/* Public key of GetKey("vms", "", alg) for Worker.GetAttestationForAppKey. */
int agent_keys_app_pubkey(struct agent *a, const char *alg, uint8_t out[33], size_t *out_len,
                          bool *out_ed25519, char *msg, size_t msg_size);
/* Simulator: development app keys from the fixed development KMS roots; out_ca gets the app CA
 * scalar (for the CA certificate agent_sim.c builds) and out_kms_spki_hex the root id. */
int agent_keys_dev(struct agent *a, const uint8_t app_id[20], const uint8_t *instance_id,
                   size_t instance_id_len, uint8_t out_ca[32], char out_kms_id_hex[183]);
int agent_keys_set_ca_cert(struct agent *a, const char *pem);

/* TLS certificates (agent_tls.c, RA-TLS through ratls.h). */
struct agent_cert_opts {
    const char *subject;
    const char *const *alt_names;
    size_t alt_name_count;
    bool ra_tls;
    bool server_auth;
    bool client_auth;
    bool has_not_before, has_not_after;
    uint64_t not_before, not_after;
    bool with_app_info;
};
/* Issue a certificate for the P-256 scalar signed by the local CA; *out = [leaf, ca] PEMs. */
int agent_tls_issue(struct agent *a, const uint8_t scalar[32], const struct agent_cert_opts *o,
                    json_t **out_chain, char *msg, size_t msg_size);
/* KMS SignCert (agent_kms.c, spec kms-ratls.md §6.6): a certificate for key (an EVP_PKEY *)
 * issued by the KMS; *out_chain = [leaf, app CA, root CA] PEMs. */
int agent_kms_sign_cert(struct agent *a, void *key, const struct agent_cert_opts *o,
                        json_t **out_chain, char *msg, size_t msg_size);
/* Self-signed development CA certificate (simulator). *out malloc'd PEM. */
int agent_tls_dev_ca(const uint8_t ca_scalar[32], char **out_pem);

/* Simulator mode (agent_sim.c): development inputs and the boot-time runtime events. */
int agent_sim_setup(struct agent *a);

/* ---- request decoding (agent_decode.c) ------------------------------------------------------- */

enum agent_req_kind {
    AGENT_REQ_GET_KEY,   /* GetKey, DeriveK256Key: path, purpose, algorithm */
    AGENT_REQ_TLS_KEY,   /* GetTlsKey */
    AGENT_REQ_DERIVE,    /* Tappd DeriveKey */
    AGENT_REQ_QUOTE,     /* GetQuote, Attest, RawQuote: report_data */
    AGENT_REQ_TDX_QUOTE, /* Tappd TdxQuote */
    AGENT_REQ_SIGN,
    AGENT_REQ_VERIFY,
    AGENT_REQ_EMIT_EVENT,
    AGENT_REQ_APP_KEY, /* Worker GetAttestationForAppKey: algorithm */
    AGENT_REQ_KIND_MAX
};

/* Every field any agent method takes (proto field names); a method decodes only the ones in
 * its table. Strings are "" when absent, bytes never NULL after a successful decode. */
struct agent_req {
    enum agent_req_kind kind;
    char *path;
    char *purpose;
    char *algorithm;
    char *subject;
    char *event;
    char *hash_algorithm;
    char *prefix;
    struct ds_rpc_strings alt_names;
    struct ds_rpc_bytes report_data;
    struct ds_rpc_bytes data;
    struct ds_rpc_bytes signature;
    struct ds_rpc_bytes public_key;
    struct ds_rpc_bytes payload;
    bool usage_ra_tls;
    bool usage_server_auth;
    bool usage_client_auth;
    bool with_app_info;
    bool random_seed;
    struct ds_rpc_opt_u64 not_before;
    struct ds_rpc_opt_u64 not_after;
};

#define AGENT_DECODE_ERR 256

/*
 * Decode params (from_query: the GET query form) into *out with the kind's field table through
 * lib/rpc's serde-compatible decoder (spec §2.4, §2.6). Returns 0, or -DS_E_FORMAT /
 * -DS_E_LIMIT / -ENOMEM with err set ("failed to decode request: ..."). Release with
 * agent_req_done() either way (also after a failure).
 */
int agent_req_decode(enum agent_req_kind kind, const json_t *params, bool from_query,
                     struct agent_req *out, char *err, size_t err_size);
void agent_req_done(struct agent_req *r);

/* ---- TEE jobs (agent_jobs.c) ------------------------------------------------------------------
 */

#define AGENT_HTML_MAX (8 * 1024 * 1024) /* dashboard page */

struct agent_job;
/* Work run on the TEE worker thread: fill j->result (or j->html) and return 0, or return < 0
 * with j->msg set. Must not touch j->call. */
typedef int (*agent_job_fn)(struct agent *a, struct agent_job *j);

struct agent_job {
    struct agent_job *next;
    struct ds_rpc_call *call; /* loop thread only */
    agent_job_fn fn;
    struct agent_req req; /* decoded on the loop thread, owned by the job */
    uint8_t rd[64];       /* report data, for the quote methods */
    bool flag;            /* Info: external listener; quotes: with report_data + vm_config */
    const char *alg;      /* TdxQuote: echoed hash_algorithm and prefix (static or in req) */
    const char *tag;
    json_t *result;
    bool is_html;
    struct ds_buf html;
    int rc;
    char msg[256];
};

struct agent_job *agent_job_new(agent_job_fn fn);
void agent_job_free(struct agent_job *j);
/* Queue j (ownership passes) for call: returns DS_RPC_DEFERRED, or 0 after answering inline
 * when no worker runs, or a negative handler error. */
int agent_job_submit(struct agent *a, struct ds_rpc_call *call, struct agent_job *j);
int agent_jobs_start(struct agent *a, struct event_base *base);
/* Join the worker and answer every job still queued. NULL-safe on a->jobs. */
void agent_jobs_stop(struct agent *a);

/*
 * The usual handler body: a job for fn, params decoded as `kind` (AGENT_REQ_KIND_MAX: none),
 * then check (may be NULL; runs on the loop thread, may use call for errors and fill j),
 * then submit. Returns what a method handler returns.
 */
int agent_rpc_job(struct ds_rpc_call *call, const json_t *params, struct agent *a,
                  enum agent_req_kind kind, agent_job_fn fn,
                  int (*check)(struct ds_rpc_call *call, struct agent *a, struct agent_job *j),
                  bool flag);
/* Shared work functions (agent_dstack.c). */
int agent_work_info(struct agent *a, struct agent_job *j);
int agent_work_quote(struct agent *a, struct agent_job *j);
int agent_work_tls(struct agent *a, struct agent_job *j);

/* ---- services -------------------------------------------------------------------------------- */

extern const struct ds_rpc_service agent_dstack_service;
extern const struct ds_rpc_service agent_tappd_service;
extern const struct ds_rpc_service agent_worker_service;
/* Dashboard routes of the external listener (agent_worker.c). */
extern const struct ds_rpc_route agent_worker_routes[];
extern const size_t agent_worker_route_count;

/* Shared by the services (agent_dstack.c): the Version response; request decoding that turns a
 * decode failure into the 400 reply; an error code + message into a handler error. */
json_t *agent_version_json(void);
int agent_rpc_decode(struct ds_rpc_call *call, enum agent_req_kind kind, const json_t *params,
                     struct agent_req *req);
int agent_rpc_fail(struct ds_rpc_call *call, int r, const char *msg);

#endif /* DSTACK_AGENT_H */
