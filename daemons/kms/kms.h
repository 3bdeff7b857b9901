/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-kms internals shared by the files of the daemon. Two processes (OpenBSD keyproc
 * pattern, STYLE.md): the key process (kms_keyproc.c) holds the root keys, has no network and
 * answers a small request/response protocol over a socketpair; the network process (everything
 * else) serves pRPC over RA-TLS, verifies callers, asks the authorization backend and only
 * ever sees derived keys, public keys, certificates, and the exported roots of GetKmsKey.
 */
#ifndef DSTACK_KMS_DAEMON_H
#define DSTACK_KMS_DAEMON_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <openssl/ssl.h>

#include "dstack/kms.h"
#include "dstack/keys.h"
#include "dstack/ratls.h"
#include "dstack/rpc.h"
#include "dstack/tee.h"

#define KMS_VERSION             "0.5.0-c"
#define KMS_ADDR_MAX            64
#define KMS_PATH_MAX            4096
#define KMS_DEFAULT_PORT        8000
#define KMS_DEFAULT_DOMAIN      "localhost"
#define KMS_DEFAULT_PCCS        "https://api.trustedservices.intel.com"
#define KMS_ERR_MAX             512
#define KMS_COLL_CACHE_SIZE     8     /* platforms (PCK chains) whose collateral is kept */
#define KMS_COLL_CACHE_TTL      600   /* seconds before collateral is fetched again */
#define KMS_TOML_THREADS_MAX    1024  /* range of [default] workers / max_blocking */
#define KMS_TOML_KEEP_ALIVE_MAX 86400 /* seconds, [default] keep_alive */
#define KMS_TLS_SESSION_CTX     "dstack-kms-rpc" /* session id context of the main listener */
#define KMS_TLS_SESSION_CACHE   1024 /* server-side TLS sessions kept (each holds a client cert) */
#define KMS_TLS_SESSION_TTL     300  /* seconds a TLS session can be resumed */

/* ---- configuration (kms_config.c) ------------------------------------------------------------ */

enum kms_auth_type { KMS_AUTH_DEV = 0, KMS_AUTH_WEBHOOK, KMS_AUTH_POLICY };

struct kms_config {
    bool dev;
    bool check;
    int verbose;
    char *tee;      /* TEE provider spec; dev default "embedded" */
    char *cert_dir; /* state dir with the key files */
    char *config;   /* kms.toml path (needs config.h) */
    char listen_addr[KMS_ADDR_MAX];
    uint16_t listen_port;
    bool onboard_enabled;
    char onboard_addr[KMS_ADDR_MAX];
    uint16_t onboard_port;
    char *auto_bootstrap_domain;
    enum kms_auth_type auth;
    char *webhook_url;
    char *policy_file;
    char *gateway_app_id; /* dev backend */
    bool enforce_self_authorization;
    bool attest_rpc_cert;
    char *pccs_url;
    bool insecure_allow_simulated;
    char *simulator_root_ca; /* DER file of the mock root */
    char *site_name;
    char *vm_config; /* our own vm_config JSON (a real guest reads it from the agent) */
    bool admin_enabled;
    char admin_addr[KMS_ADDR_MAX];
    uint16_t admin_port;
    char *admin_token;
    bool admin_insecure_no_auth;
    bool metrics_enabled;
    unsigned idle_timeout_ms; /* keep-alive idle timeout (kms.toml default.keep_alive); 0 = lib */
};

/* Parse argv (and kms.toml when given). Returns 0, 1 for --help/--version (exit 0), or < 0. */
int kms_config_parse(struct kms_config *c, int argc, char **argv);
void kms_config_done(struct kms_config *c);
/* Checks that do not need the state (cross-option rules). Returns 0 or -EINVAL (logged). */
int kms_config_validate(const struct kms_config *c);

/* ---- key process (kms_keyproc.c) ------------------------------------------------------------- */

enum kms_kp_op {
    KP_STATUS = 1, /* -> [has_keys u8] */
    KP_GENERATE,   /* -> []  (fresh root CA, root k256, tmp CA; files written 0600) */
    KP_IMPORT,     /* [ca_key_pem, k256 32, tmp_ca_key_pem] -> [] */
    KP_PUBLIC,     /* -> [root_ca_pem, tmp_ca_pem, k256_pub33, ca_spki] */
    KP_APP_KEYS,   /* [app_id, instance_id] -> [disk, env, env_pub, k256, k256_pub, sig] */
    KP_ENV_PUBKEY, /* [app_id, u64be timestamp] -> [pub32, sig65, sig_v1 65] */
    KP_SIGN_RPC,   /* [domain, spki, attestation] -> [cert_pem] */
    KP_SIGN_APP,   /* [app_id, org, subject, alt names, flags, nb, na, spki, att, info]
                      -> [leaf_pem, app_ca_pem] */
    KP_EXPORT,     /* -> [ca_key_pem, k256 32, tmp_ca_key_pem] (after authorization) */
    KP_TMP_CA,     /* -> [tmp_ca_key_pem, tmp_ca_cert_pem] */
    KP_OP_MAX
};

#define KP_FIELDS_MAX  16
#define KP_MESSAGE_MAX (4 * 1024 * 1024)

struct kms_blob {
    const void *ptr;
    size_t len;
};

/* A reply: status (0 or negative) and fields that borrow from `data` (wipe + free with
 * kms_kp_reply_done). */
struct kms_kp_reply {
    int status;
    uint8_t *data;
    size_t data_len;
    struct kms_blob fields[KP_FIELDS_MAX];
    size_t count;
};
void kms_kp_reply_done(struct kms_kp_reply *r);

struct kms_keyproc {
    int fd;
    pid_t pid;
};

/* Fork the key process for cert_dir (before any listener exists). Returns 0 or -errno. */
int kms_keyproc_start(const char *cert_dir, struct kms_keyproc *out);
void kms_keyproc_stop(struct kms_keyproc *kp);
/* One request/response. Returns 0 (rep->status may still be negative) or a transport error. */
int kms_keyproc_call(struct kms_keyproc *kp, enum kms_kp_op op, const struct kms_blob *args,
                     size_t nargs, struct kms_kp_reply *rep);

/* ---- the network process state --------------------------------------------------------------- */

struct ds_verifier;
struct ds_collateral;
struct ds_sim_pki;
struct ds_rpc_server;
struct event_base;

struct kms {
    struct kms_config cfg;
    struct kms_keyproc kp;
    struct event_base *base;
    struct ds_tee *tee;
    char *vm_config;
    /* verification of callers */
    struct ds_verifier *verifier;
    struct ds_sim_pki *dev_pki;     /* dev mode: the embedded TEE's mock PKI */
    struct ds_collateral *dev_coll; /* collateral made from it */
    int64_t dev_coll_time;
    /* collateral fetched from the PCCS, per PCK chain (kms_attest.c) */
    struct kms_coll_entry {
        uint8_t key[32];
        struct ds_collateral *coll;
        int64_t fetched;
    } coll_cache[KMS_COLL_CACHE_SIZE];
    /* public material from the key process */
    bool has_keys;
    char *root_ca_pem;
    char *tmp_ca_pem;
    uint8_t k256_pub[DS_K256_PUB_SIZE];
    uint8_t ca_spki[DS_P256_SPKI_SIZE];
    char *domain;
    /* own BootInfo for self-authorization (cached once) */
    bool self_ready;
    struct ds_kms_boot_info self_bi;
    /* policy file cache (reloaded when the file changes) */
    struct ds_kms_policy *policy;
    struct stat policy_st;
    bool policy_loaded;
    /* servers */
    struct ds_rpc_server *main_srv;
    struct ds_rpc_server *onboard_srv;
    struct ds_rpc_server *admin_srv;
    SSL_CTX *tls;
    bool onboard_finished;
    /* /metrics counters (GetAppKey, GetKmsKey, SignCert; failure = HTTP status >= 400) */
    uint64_t att_requests;
    uint64_t att_failures;
};

/* ---- kms_keys.c: bootstrap, state files, RPC certificate ------------------------------------- */

/* Refresh the public material (root CA, tmp CA, k256 pubkey) from the key process. */
int kms_keys_refresh(struct kms *k);
/* First start: generate the roots in the key process, then the bootstrap info. */
int kms_keys_bootstrap(struct kms *k, const char *domain, bool write_info, json_t **out_info);
/* (Re)issue rpc.key/rpc.crt for domain, attested, signed by the root CA; build the TLS ctx. */
int kms_keys_setup_rpc(struct kms *k, const char *domain);
/* Whether the state dir holds a complete key set (§3.1 "key exists"). */
bool kms_keys_exist(const char *cert_dir);
/* Path helper: cert_dir/name into out. */
int kms_path(const struct kms *k, const char *name, char *out, size_t size);

/* ---- kms_attest.c: own attestation and verification of others -------------------------------- */

int kms_attest_open(struct kms *k);
/* VersionedAttestation over report_data (our quote + event log + vm_config). */
int kms_attest(struct kms *k, const uint8_t report_data[64], uint8_t **out, size_t *out_len);
/* The RA-TLS attestation extension payload for a key. */
int kms_attest_for_key(struct kms *k, EVP_PKEY *key, uint8_t **out, size_t *out_len);
/* Fill verification options for a quote (collateral: dev-local, cached, or the PCCS URL). */
int kms_verify_opts(struct kms *k, const uint8_t *quote, size_t quote_len,
                    struct ds_attestation_verify_opts *opts);
void kms_coll_cache_free(struct kms *k);
/* Our own BootInfo (cached). */
int kms_self_boot_info(struct kms *k, const struct ds_kms_boot_info **out, char *err, size_t n);
/* BootInfo of an RA-TLS certificate's attestation (runtime MR). */
int kms_cert_boot_info(struct kms *k, X509 *cert, const char *vm_config,
                       struct ds_kms_boot_info *out, char *err, size_t n);

/* Blocking HTTP(S) with libcurl: GET when body is NULL, else POST with content_type. The
 * response body (at most max bytes) is malloc'd and NUL-terminated. 0 or -DS_E_NETWORK/-LIMIT. */
int kms_http(const char *url, const char *content_type, const void *body, size_t body_len,
             size_t max, long *out_status, uint8_t **out, size_t *out_len, char *err, size_t n);

/* ---- kms_auth.c: the authorization backends -------------------------------------------------- */

/* Ask the backend. < 0 = backend failure (fail closed; err says why). */
int kms_auth_check(struct kms *k, enum ds_kms_boot_kind kind, const struct ds_kms_boot_info *bi,
                   struct ds_kms_decision *out, char *err, size_t n);
/* GET / of the backend (dev: from config). */
int kms_auth_info(struct kms *k, struct ds_kms_auth_info *out, char *err, size_t n);
/* The self-authorization gate (§2.2). On failure the call's error is set. */
int kms_self_authorize(struct kms *k, struct ds_rpc_call *call);
const char *kms_auth_name(enum kms_auth_type t);

/* ---- services -------------------------------------------------------------------------------- */

extern const struct ds_rpc_service kms_rpc_service;     /* kms_rpc.c */
extern const struct ds_rpc_service kms_onboard_service; /* kms_onboard.c */
extern const struct ds_rpc_service kms_admin_service;   /* kms_admin.c */
int kms_health(struct ds_rpc_call *call, void *ctx);
int kms_metrics(struct ds_rpc_call *call, void *ctx);
int kms_onboard_page(struct ds_rpc_call *call, void *ctx);
int kms_onboard_finish_route(struct ds_rpc_call *call, void *ctx);
int kms_admin_filter(struct ds_rpc_call *call, void *ctx);

/* The onboarding client flow (§5.4 steps 1-5). */
int kms_onboard_from(struct kms *k, const char *source_url, const char *domain, char *err,
                     size_t n);

/* JSON helpers */
int kms_json_set_hex(json_t *o, const char *key, const void *p, size_t n);

#endif /* DSTACK_KMS_DAEMON_H */
