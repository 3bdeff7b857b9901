/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack kms: the testable, process-independent parts of dstack-kms (spec kms-ratls.md §2,
 * §4.4, §5.1-5.2): the request decoders of every KMS / Onboard / Admin method (one field table
 * per proto message plus the method's validation), the BootInfo record the KMS builds from a
 * verified attestation and sends to its authorization backend (camelCase JSON, lowercase hex),
 * the webhook's reply formats, and the built-in policy file that is equivalent to upstream's
 * auth-simple. The daemon (daemons/kms) adds the processes, the network and the root keys.
 *
 * Ownership: decoded requests, boot infos, decisions and policies own what they point to;
 * release each with its *_done / *_free function (NULL-safe). Library code never logs.
 */
#ifndef DSTACK_KMS_H
#define DSTACK_KMS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dstack/base.h"
#include "dstack/rpc.h"
#include "dstack/versioned.h"

/* ---- requests (kms-ratls.md §2.1) ------------------------------------------------------------ */

#define DS_KMS_DOMAIN_MAX     253
#define DS_KMS_LABEL_MAX      63
#define DS_KMS_VM_CONFIG_MAX  (64 * 1024)
#define DS_KMS_URL_MAX        2048
#define DS_KMS_CSR_MAX        (1024 * 1024)
#define DS_KMS_CSR_SIG_MAX    256
#define DS_KMS_API_VERSION    1 /* GetAppKey: api_version must be <= this */
#define DS_KMS_APP_ID_SIZE    20
#define DS_KMS_DECODE_MSG_MAX 256

enum ds_kms_req {
    DS_KMS_REQ_GET_APP_KEY = 0,   /* GetAppKeyRequest {api_version, vm_config} */
    DS_KMS_REQ_APP_ID,            /* AppId {app_id} (20 bytes) */
    DS_KMS_REQ_GET_KMS_KEY,       /* GetKmsKeyRequest {vm_config} */
    DS_KMS_REQ_SIGN_CERT,         /* SignCertRequest {api_version 1|2, csr, signature, vm_config} */
    DS_KMS_REQ_CLEAR_IMAGE_CACHE, /* ClearImageCacheRequest {image_hash, config_hash} */
    DS_KMS_REQ_BOOTSTRAP,         /* BootstrapRequest {domain} (a DNS name) */
    DS_KMS_REQ_ONBOARD,           /* OnboardRequest {source_url, domain} */
    DS_KMS_REQ_MAX
};

struct ds_kms_get_app_key_req {
    uint32_t api_version;
    char *vm_config;
};
struct ds_kms_app_id_req {
    struct ds_rpc_bytes app_id;
};
struct ds_kms_get_kms_key_req {
    char *vm_config;
};
struct ds_kms_sign_cert_req {
    uint32_t api_version;
    struct ds_rpc_bytes csr;
    struct ds_rpc_bytes signature;
    char *vm_config;
};
struct ds_kms_clear_image_cache_req {
    char *image_hash;
    char *config_hash;
};
struct ds_kms_bootstrap_req {
    char *domain;
};
struct ds_kms_onboard_req {
    char *source_url;
    char *domain;
};

/* sizeof the output struct of a request kind (0 for an unknown kind). */
size_t ds_kms_req_size(enum ds_kms_req which);

/*
 * Decode `params` (the pRPC input object; from_query when it came from a GET query string)
 * into the struct for `which` (`out` points to that struct type) and apply the method's
 * checks: AppId 20 bytes ("Invalid app id length: N"), SignCert api_version 1 or 2,
 * Bootstrap/Onboard domain a valid DNS name, Onboard source_url non-empty http(s) URL,
 * ClearImageCache hashes empty, "all" or hex. On failure nothing stays allocated, out is
 * zeroed and msg gets the reason. Returns 0, -DS_E_FORMAT, -DS_E_LIMIT, -DS_E_UNSUPPORTED
 * (api_version), -EINVAL (bad kind) or -ENOMEM.
 */
DS_MUST_USE int ds_kms_req_decode(enum ds_kms_req which, const json_t *params, bool from_query,
                                  void *out, char *msg, size_t msg_size);
/* Free what ds_kms_req_decode allocated and zero the struct. NULL-safe. */
void ds_kms_req_free(enum ds_kms_req which, void *out);

/* Bootstrap/Onboard domain rule (§2.4): non-empty ASCII DNS name <= 253 bytes, labels 1..63
 * of [A-Za-z0-9-], not starting or ending with '-'. */
bool ds_kms_domain_valid(const char *domain);

/* ---- BootInfo (§4.4) ------------------------------------------------------------------------- */

#define DS_KMS_TCB_STATUS_MAX 64

struct ds_kms_boot_info {
    const char *tee_variant; /* static string, "dstack-tdx" */
    uint8_t app_id[DS_KMS_APP_ID_SIZE];
    uint8_t *compose_hash;
    size_t compose_hash_len;
    uint8_t *instance_id;
    size_t instance_id_len;
    uint8_t device_id[32];
    uint8_t *key_provider_info;
    size_t key_provider_info_len;
    uint8_t mr_system[32];
    uint8_t mr_aggregated[32];
    uint8_t *os_image_hash;
    size_t os_image_hash_len;
    char tcb_status[DS_KMS_TCB_STATUS_MAX];
    char **advisory_ids;
    size_t advisory_count;
};

void ds_kms_boot_info_done(struct ds_kms_boot_info *bi);

/*
 * BootInfo of a VERIFIED TDX attestation `a` (res is its successful ds_attestation_verify /
 * ds_ratls_verify_cert result): identity re-decoded from a's runtime events and res->td with
 * the runtime replay, or up to boot-mr-done when `boottime` (SignCert); osImageHash from
 * vm_config when non-NULL and non-empty, else from the attestation's config; deviceId, TCB
 * status and advisories from res. Returns 0, -EINVAL (res not ok), -DS_E_FORMAT (app id not 20
 * bytes, bad vm_config), -ENOMEM, or the decoder's errors.
 */
DS_MUST_USE int ds_kms_boot_info_build(const struct ds_attestation *a,
                                       const struct ds_attestation_result *res,
                                       const char *vm_config, bool boottime,
                                       struct ds_kms_boot_info *out);

/* The webhook body: {"teeVariant","appId","composeHash","instanceId","deviceId","keyProviderInfo",
 * "mrSystem","mrAggregated","osImageHash","tcbStatus","advisoryIds"} with lowercase hex.
 * Returns 0 and a new object, or -ENOMEM. */
DS_MUST_USE int ds_kms_boot_info_to_json(const struct ds_kms_boot_info *bi, json_t **out);

/* ---- authorization decisions (§5.1) ---------------------------------------------------------- */

#define DS_KMS_REASON_MAX 512

enum ds_kms_boot_kind { DS_KMS_BOOT_APP = 0, DS_KMS_BOOT_KMS };

struct ds_kms_decision {
    bool allowed;
    char reason[DS_KMS_REASON_MAX];
    char *gateway_app_id; /* malloc'd, never NULL after success */
};
void ds_kms_decision_done(struct ds_kms_decision *d);

#define DS_KMS_WEBHOOK_BODY_MAX (64 * 1024)

/*
 * Parse a /bootAuth/{app,kms} reply: a JSON object with the three REQUIRED keys isAllowed
 * (bool), gatewayAppId (string), reason (string); extra keys ignored. Returns 0, -DS_E_FORMAT
 * (err says which key), -DS_E_LIMIT (body too large) or -ENOMEM.
 */
DS_MUST_USE int ds_kms_decision_parse(const char *body, size_t len, struct ds_kms_decision *out,
                                      char *err, size_t err_size);

/* The `GET {url}/` reply (GetMeta, GetAttestationInfo). */
struct ds_kms_auth_info {
    char *status;
    char *kms_contract_addr;
    char *gateway_app_id;
    uint64_t chain_id;
    char *app_implementation;
    char *eth_rpc_url; /* optional: "" when absent */
};
void ds_kms_auth_info_done(struct ds_kms_auth_info *i);
/* Required: status, kmsContractAddr, gatewayAppId (strings), chainId (non-negative integer),
 * appImplementation (string); ethRpcUrl optional. Returns 0, -DS_E_FORMAT, -DS_E_LIMIT, -ENOMEM. */
DS_MUST_USE int ds_kms_auth_info_parse(const char *body, size_t len, struct ds_kms_auth_info *out,
                                       char *err, size_t err_size);

/* ---- the built-in policy file (auth-simple equivalent, §5.2) --------------------------------- */

#define DS_KMS_POLICY_FILE_MAX (4 * 1024 * 1024)

struct ds_kms_policy;

/*
 * Parse an auth-simple config JSON. Every key is optional with auth-simple's defaults
 * (gatewayAppId "", kmsContractAddr and appImplementation the zero address, chainId 0, empty
 * lists, allowedTcbStatuses ["UpToDate"], allowAnyDevice false). Wrong types are
 * -DS_E_FORMAT (err says where). Returns 0, -DS_E_FORMAT, -DS_E_LIMIT or -ENOMEM.
 */
DS_MUST_USE int ds_kms_policy_parse(const char *json, size_t len, struct ds_kms_policy **out,
                                    char *err, size_t err_size);
/* The all-default policy (what auth-simple uses for a missing or invalid file: denies). */
DS_MUST_USE int ds_kms_policy_default(struct ds_kms_policy **out);
void ds_kms_policy_free(struct ds_kms_policy *p);

/*
 * Evaluate auth-simple's rules in order (tcb status, advisories, OS image, then KMS:
 * mrAggregated + device, or app: registration, compose hash, device). Hex values are compared
 * lowercase with a 0x prefix on both sides. out->reason is auth-simple's text on denial, ""
 * when allowed; out->gateway_app_id the config's. Returns 0 or -ENOMEM.
 */
DS_MUST_USE int ds_kms_policy_check(const struct ds_kms_policy *p, enum ds_kms_boot_kind kind,
                                    const struct ds_kms_boot_info *bi, struct ds_kms_decision *out);

/* What auth-simple answers on GET / (status "ok", kmsContractAddr, gatewayAppId, chainId,
 * appAuthImplementation, appImplementation) as an auth info. Returns 0 or -ENOMEM. */
DS_MUST_USE int ds_kms_policy_info(const struct ds_kms_policy *p, struct ds_kms_auth_info *out);

#endif /* DSTACK_KMS_H */
