/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interface of `dstack-util`, the in-CVM helper program (spec host-side.md §3.3-3.5):
 * the subcommand table and option parser (main.c), the reusable KMS client
 * (util_kms_client.c: GetTempCaCert, RA-TLS client certificates, GetAppKey over mutual TLS,
 * the whole key fetch of spec kms-ratls.md §2.3/§6.5) and the subcommands built on it
 * (util_keys.c: get-keys; util_ratls.c: ratls-cert). Later subcommands (setup, ...) reuse the
 * client. Key material never reaches the log: only fingerprints do.
 */
#ifndef DSTACK_UTIL_H
#define DSTACK_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "dstack/keys.h"
#include "dstack/tee.h"
#include "dstack/versioned.h"

/* Exit codes of every subcommand. */
#define UTIL_EXIT_OK    0
#define UTIL_EXIT_FAIL  1 /* the operation ran and failed (KMS refused, TEE error, ...) */
#define UTIL_EXIT_USAGE 2 /* bad arguments or unreadable input */

/* ---- option parsing (main.c) --------------------------------------------------------------- */

enum util_opt_kind {
    UTIL_OPT_FLAG,   /* --name: sets *(bool *)target */
    UTIL_OPT_STRING, /* --name VALUE or --name=VALUE: sets *(const char **)target */
};

struct util_opt {
    const char *name; /* without the leading "--" */
    enum util_opt_kind kind;
    void *target;
    const char *metavar; /* e.g. "URL", shown in errors */
    bool required;
};

#define UTIL_MAX_OPTS 32

/*
 * Parse argv[1..argc) (argv[0] is the subcommand name) against opts ({NULL}-terminated). No
 * positional arguments are accepted. *help is set by -h/--help (required options are then not
 * checked). Errors name the option; returns 0 or UTIL_EXIT_USAGE.
 */
int util_parse_opts(const char *cmd, int argc, char **argv, const struct util_opt *opts,
                    bool *help);

/*
 * Run argv (argv[0] searched in PATH; fork + execvp, no shell) with stdin from /dev/null and
 * stdout into *out when out is non-NULL (bounded by out's maximum: -DS_E_LIMIT), else onto
 * stderr. Returns the exit status (>= 0), or a negative error (-errno, -DS_E_IO when killed).
 */
struct ds_buf;
int util_run_tool(const char *const argv[], struct ds_buf *out);

/* ---- subcommands --------------------------------------------------------------------------- */

/* `dstack-util get-keys` (util_keys.c). */
int util_cmd_get_keys(int argc, char **argv);
void util_get_keys_usage(FILE *out);

/* `dstack-util ratls-cert` (util_ratls.c). */
int util_cmd_ratls_cert(int argc, char **argv);
void util_ratls_cert_usage(FILE *out);

/* `dstack-util gateway-register` and its reusable client (util_gateway.c, host-side.md §4.3):
 * a WireGuard key pair (base64), RegisterCvm over mutual TLS (answer: *out, a JSON object;
 * gateway_app_id NULL = chain only, "any" = no server verification, else the substring rule;
 * port_policy sent as given, NULL = {ports: [], restrict_mode: false}),
 * and the WireGuard config text the answer describes (malloc'd, holds the private key). */
int util_cmd_gateway_register(int argc, char **argv);
void util_gateway_register_usage(FILE *out);
int util_wg_keypair(char priv_b64[45], char pub_b64[45]);
struct json_t;
int util_gateway_register(const char *url, const char *cert, const char *key, const char *ca,
                          const char *gateway_app_id, const char *wg_pub,
                          const struct json_t *port_policy, struct json_t **out, char *err,
                          size_t err_size);
int util_gateway_wg_config(const struct json_t *resp, const char *wg_priv, char **out, char *err,
                           size_t err_size);

/* `dstack-util gateway-setup` / `gateway-checker` (util_gateway_setup.c, host-side.md §3.3
 * step 17, §3.6, §4.3): register at boot and bring up dstack-wg0; keep it registered. */
int util_cmd_gateway_setup(int argc, char **argv);
void util_gateway_setup_usage(FILE *out);
int util_cmd_gateway_checker(int argc, char **argv);
void util_gateway_checker_usage(FILE *out);

/* ---- RA-TLS certificates from the TEE (util_kms_client.c) ---------------------------------- */

#define UTIL_TEMP_CERT_SUBJECT "RA-TLS TEMP Cert" /* §6.5: the guest's KMS client cert */
#define UTIL_VM_CONFIG_MAX     (64 * 1024)
#define UTIL_PEM_MAX           (64 * 1024) /* one PEM certificate or key file */

/* What to put in an RA-TLS certificate minted from the TEE. */
struct util_mint_req {
    const char *org;     /* optional O= */
    const char *subject; /* CN */
    const char *const *alt_names;
    size_t alt_name_count;
    bool server_auth; /* EKU; neither = no EKU extension (the KMS temp cert has none) */
    bool client_auth;
    bool has_not_before;
    int64_t not_before;
    bool has_not_after;
    int64_t not_after;
    const char *config;   /* vm_config carried in the attestation (NULL = "") */
    EVP_PKEY *key;        /* subject key to certify (NULL = generate a fresh P-256 key) */
    EVP_PKEY *issuer_key; /* NULL = self-signed */
    X509 *issuer_cert;
    const uint8_t *app_id; /* app id extension (.1.3) when non-NULL */
    size_t app_id_len;
};

/*
 * Mint an RA-TLS certificate (spec kms-ratls.md §6.1-6.2): a quote from tee over
 * SHA-512("ratls-cert:" || SPKI), the TEE's event log, stripped into the attestation
 * extension. *out_key gets the subject key (a new reference when req->key was given).
 * Returns 0, or a negative error with err naming the step ("TEE quote: ...").
 */
int util_ratls_mint(struct ds_tee *tee, const struct util_mint_req *req, EVP_PKEY **out_key,
                    X509 **out_cert, char *err, size_t err_size);

/* PEM helpers: parse one certificate / private key (-DS_E_FORMAT when not PEM). */
int util_pem_to_cert(const char *pem, X509 **out);
int util_pem_to_key(const char *pem, EVP_PKEY **out);

/* ---- the KMS client (util_kms_client.c) ---------------------------------------------------- */

#define UTIL_KMS_URL_MAX            2048
#define UTIL_KMS_RESPONSE_MAX       (1024 * 1024) /* a KMS JSON response */
#define UTIL_KMS_CONNECT_TIMEOUT_MS 5000L         /* ra-rpc's client: 5 s connect */
#define UTIL_KMS_TIMEOUT_MS         60000L        /* and 60 s per request */
#define UTIL_KMS_ERR_MAX            512
#define UTIL_PCCS_DEFAULT_URL       "https://api.trustedservices.intel.com"

/*
 * One KMS endpoint and how its server certificate's attestation is checked (§6.5: "server
 * attestation (if present) verified"). verifier is borrowed (NULL: a certificate carrying an
 * attestation is refused, since it cannot be checked); collateral for the server's quote is
 * fetched from pccs_url. Not thread-safe (the verifier is not).
 */
struct util_kms_client {
    char base[UTIL_KMS_URL_MAX]; /* "https://host:port/prpc" (normalized) */
    struct ds_verifier *verifier;
    const char *pccs_url;
    long timeout_ms; /* 0 = UTIL_KMS_TIMEOUT_MS */
};

/*
 * Normalize url into c->base: must be https://, a trailing "/" is dropped and "/prpc" is
 * appended unless present (spec host-side.md §3.5). Returns 0 or -EINVAL.
 */
int util_kms_client_init(struct util_kms_client *c, const char *url);

/* GetTempCaCert's answer. temp_ca_key is secret: release with util_kms_temp_ca_done(). */
struct util_kms_temp_ca {
    char *temp_ca_cert; /* PEM */
    char *temp_ca_key;  /* PEM PKCS#8 (secret) */
    char *ca_cert;      /* root CA PEM */
};
void util_kms_temp_ca_done(struct util_kms_temp_ca *t);

/*
 * GetTempCaCert over TLS without server verification (§6.5 first row). Returns 0, or
 * -DS_E_NETWORK / -DS_E_DENIED (the KMS answered with an error, in err) / -DS_E_PROTOCOL.
 */
int util_kms_get_temp_ca(const struct util_kms_client *c, struct util_kms_temp_ca *out, char *err,
                         size_t err_size);

/* GetAppKey's answer. Secrets: release with util_kms_app_key_done() (wipes). */
struct util_kms_app_key {
    uint8_t disk_crypt_key[DS_KEY_SIZE];
    uint8_t env_crypt_key[DS_KEY_SIZE];
    size_t env_crypt_key_len; /* 0 or 32 */
    uint8_t k256_key[DS_KEY_SIZE];
    uint8_t k256_signature[DS_K256_SIG_SIZE];
    size_t k256_signature_len; /* 0 or 65 */
    char *ca_cert;
    char *gateway_app_id;
    uint8_t *os_image_hash;
    size_t os_image_hash_len;
};
void util_kms_app_key_done(struct util_kms_app_key *k);

/*
 * GetAppKey {api_version 1, vm_config} over mutual TLS (§6.5 second row): the client presents
 * cert/key; the server certificate must chain to root_ca_pem only, match the URL's host (IP
 * SAN for an IP literal), carry usage "kms:rpc", and its attestation, if any, must verify.
 * Returns 0, or -DS_E_CERT (server certificate refused; err says why), -DS_E_NETWORK,
 * -DS_E_DENIED (the KMS refused, err = its message), -DS_E_PROTOCOL (bad answer).
 */
int util_kms_get_app_key(const struct util_kms_client *c, const char *root_ca_pem, EVP_PKEY *key,
                         X509 *cert, const char *vm_config, struct util_kms_app_key *out, char *err,
                         size_t err_size);

/*
 * The whole KMS key fetch of a booting CVM (host-side.md §3.5 "kms"): GetTempCaCert, an RA-TLS
 * "RA-TLS TEMP Cert" signed by the temp CA with a quote from tee, GetAppKey, then the
 * .appkeys.json structure with key_provider Kms {url, pubkey = root CA SPKI, tmp_ca_key,
 * tmp_ca_cert}. *out_os_image_hash (may be NULL) gets GetAppKey's os_image_hash (malloc'd).
 * err names the failed step: "GetTempCaCert: ...", "RA-TLS certificate: ...", "GetAppKey: ...".
 */
int util_kms_fetch_app_keys(const struct util_kms_client *c, struct ds_tee *tee,
                            const char *vm_config, struct ds_appkeys *out,
                            uint8_t **out_os_image_hash, size_t *out_os_image_hash_len, char *err,
                            size_t err_size);

/*
 * A verifier for the KMS server's attestation: the Intel SGX root, or with allow_simulated the
 * mock root a dstack-tee-sim PCCS serves at pccs_url/dstack-sim/v1/root-ca.der (a loud warning
 * is logged). Returns 0 or a negative error (err filled).
 */
int util_make_verifier(const char *pccs_url, bool allow_simulated, struct ds_verifier **out,
                       char *err, size_t err_size);

#endif /* DSTACK_UTIL_H */
