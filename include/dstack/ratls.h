/* SPDX-License-Identifier: Apache-2.0 */
/*
 * RA-TLS: X.509 certificates that carry a dstack attestation bound to their key (spec
 * kms-ratls.md §6.1-6.6, guest-agent-api.md §4.6), built and read with OpenSSL's X509 API.
 *   - attester side: P-256 keys, the attestation extension for a key (report_data =
 *     SHA-512("ratls-cert:" || SPKI DER)), the rcgen-compatible certificate profile with the
 *     private extensions 1.3.6.1.4.1.62397.1.{1,2,3,4,8,9} (payload double-wrapped in OCTET
 *     STRINGs), app-info MessagePack, the KMS CSR (CertSigningRequestV2, SCALE) and its
 *     signature;
 *   - verifier side: extension lookup by walking the extension list, and certificate
 *     verification that names the failed step (struct ds_attestation_result, versioned.h),
 *     usable from TLS verify callbacks on both ends.
 * Keys and certificates are OpenSSL objects; functions that return them transfer ownership.
 */
#ifndef DSTACK_RATLS_H
#define DSTACK_RATLS_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "dstack/versioned.h"

/* ---- extensions (§6.1) ---------------------------------------------------------------------- */

#define DS_RATLS_OID_ARC "1.3.6.1.4.1.62397.1"

/* Last arc of each dstack extension OID. */
enum ds_ratls_ext {
    DS_RATLS_EXT_TDX_QUOTE = 1,   /* legacy raw TDX quote */
    DS_RATLS_EXT_EVENT_LOG = 2,   /* legacy JSON event log */
    DS_RATLS_EXT_APP_ID = 3,      /* raw app id (issuer claim) */
    DS_RATLS_EXT_USAGE = 4,       /* "kms:rpc" | "app:ca" | "app:custom" */
    DS_RATLS_EXT_ATTESTATION = 8, /* stripped VersionedAttestation */
    DS_RATLS_EXT_APP_INFO = 9,    /* MessagePack compact AppInfo (issuer claim) */
};

/* Payload caps per extension (the reader rejects larger ones with -DS_E_LIMIT). */
#define DS_RATLS_MAX_QUOTE       DS_QUOTE_MAX_SIZE
#define DS_RATLS_MAX_EVENT_LOG   DS_ATTESTATION_MAX_SIZE
#define DS_RATLS_MAX_APP_ID      64
#define DS_RATLS_MAX_USAGE       256
#define DS_RATLS_MAX_ATTESTATION DS_ATTESTATION_MAX_SIZE
#define DS_RATLS_MAX_APP_INFO    (256 * 1024)

#define DS_RATLS_USAGE_KMS_RPC    "kms:rpc"
#define DS_RATLS_USAGE_APP_CA     "app:ca"
#define DS_RATLS_USAGE_APP_CUSTOM "app:custom"

/* Payload cap for an extension number (0 for a number that is not a dstack extension). */
size_t ds_ratls_ext_max(enum ds_ratls_ext which);

/*
 * Unwrap an extnValue's content (the inner DER): it must be exactly one primitive OCTET
 * STRING (definite length, minimal length encoding) of at most max bytes. *out borrows from
 * der. Returns 0, -DS_E_FORMAT, -DS_E_TRUNCATED or -DS_E_LIMIT.
 */
DS_MUST_USE int ds_ratls_ext_unwrap(const uint8_t *der, size_t len, size_t max, const uint8_t **out,
                                    size_t *out_len);

/*
 * Find dstack extension `which` by walking the certificate's extension list (OID compare) and
 * unwrap its payload. *out borrows from cert (valid while cert lives). Returns 0,
 * -DS_E_NOT_FOUND, -DS_E_FORMAT (not one OCTET STRING, or the extension appears twice),
 * -DS_E_LIMIT (payload above ds_ratls_ext_max), -EINVAL.
 */
DS_MUST_USE int ds_ratls_cert_get_ext(X509 *cert, enum ds_ratls_ext which, const uint8_t **out,
                                      size_t *out_len);

/*
 * The attestation a certificate carries (§6.4 step 1): extension .1.8 decoded, else the legacy
 * .1.1 quote + .1.2 JSON log (then .1.2 is required: -DS_E_FORMAT without it). Returns 0,
 * -DS_E_NOT_FOUND (neither), the extension reader's errors, the decoder's errors.
 */
DS_MUST_USE int ds_ratls_cert_get_attestation(X509 *cert, struct ds_attestation **out);

/* ---- keys and binding (§6.2) ----------------------------------------------------------------- */

/* Fresh P-256 key. Returns 0, -DS_E_CRYPTO. */
DS_MUST_USE int ds_ratls_key_generate(EVP_PKEY **out);
/* P-256 key from a 32-byte big-endian scalar (1 <= d < n, else -DS_E_FORMAT). */
DS_MUST_USE int ds_ratls_key_from_scalar(const uint8_t scalar[32], EVP_PKEY **out);
/* Public key from SubjectPublicKeyInfo DER; must be EC P-256. -DS_E_FORMAT otherwise. */
DS_MUST_USE int ds_ratls_key_from_spki(const uint8_t *der, size_t len, EVP_PKEY **out);
/* SubjectPublicKeyInfo DER of key (malloc'd; 91 bytes for P-256). */
DS_MUST_USE int ds_ratls_spki_der(EVP_PKEY *key, uint8_t **out, size_t *out_len);
/* report_data = SHA-512("ratls-cert:" || SPKI DER). */
DS_MUST_USE int ds_ratls_report_data(EVP_PKEY *key, uint8_t out[DS_REPORT_DATA_SIZE]);
/* PEM encodings (malloc'd, NUL-terminated): PKCS#8 "PRIVATE KEY" and "CERTIFICATE". */
DS_MUST_USE int ds_ratls_key_pem(EVP_PKEY *key, char **out);
DS_MUST_USE int ds_ratls_cert_pem(X509 *cert, char **out);
/* Certificate DER (malloc'd). */
DS_MUST_USE int ds_ratls_cert_der(X509 *cert, uint8_t **out, size_t *out_len);

/*
 * The attestation extension payload for key: checks that the quote's report_data equals
 * ds_ratls_report_data(key) (-DS_E_MISMATCH otherwise), builds a TDX attestation from quote,
 * event_log and runtime_events (NULL = the log's runtime events) and config (NULL = ""),
 * strips it (§6.3) and encodes it (V1 when a runtime event is V2, else V0). *out malloc'd.
 */
DS_MUST_USE int ds_ratls_attestation_for_key(EVP_PKEY *key, const uint8_t *quote, size_t quote_len,
                                             const struct ds_event_log *event_log,
                                             const struct ds_event_log *runtime_events,
                                             const char *config, uint8_t **out, size_t *out_len);

/* ---- app info extension (.1.9) --------------------------------------------------------------- */

/*
 * MessagePack compact array of AppInfo: [app_id, compose_hash, instance_id, device_id,
 * mr_system, mr_aggregated, os_image_hash, key_provider_info (all bin), init_script_hashes
 * (nil when none, else array of bin)]. *out malloc'd. Returns 0, -ENOMEM, -DS_E_LIMIT.
 */
DS_MUST_USE int ds_ratls_app_info_encode(const struct ds_app_info *info, uint8_t **out,
                                         size_t *out_len);
/* Decode the same (bin or array-of-int byte fields accepted). key_provider_name/id are parsed
 * from key_provider_info when it is JSON. Returns 0, -DS_E_FORMAT, -DS_E_LIMIT, -ENOMEM. */
DS_MUST_USE int ds_ratls_app_info_decode(const uint8_t *data, size_t len, struct ds_app_info *out);

/* ---- certificate building (§6.1) --------------------------------------------------------------
 */

#define DS_RATLS_DEFAULT_VALIDITY_DAYS 3650
#define DS_RATLS_DEFAULT_NOT_BEFORE    157766400 /* 1975-01-01T00:00:00Z (rcgen default) */
#define DS_RATLS_MAX_ALT_NAMES         64

struct ds_ratls_cert_req {
    const char *org;              /* optional O= (NULL: none) */
    const char *subject;          /* CN (NULL = "") */
    const char *const *alt_names; /* IP SAN when it parses as IPv4/IPv6, else DNS SAN */
    size_t alt_name_count;
    bool ca;          /* CA: KU adds keyCertSign+cRLSign, BasicConstraints */
    int ca_path_len;  /* pathLenConstraint when ca (>= 0) */
    bool server_auth; /* EKU; no EKU extension when neither is set */
    bool client_auth;
    bool has_not_before; /* else DS_RATLS_DEFAULT_NOT_BEFORE */
    int64_t not_before;
    bool has_not_after; /* else now + 3650 days */
    int64_t not_after;
    int64_t now;           /* unix seconds, for the default not_after */
    const uint8_t *app_id; /* .1.3 when non-NULL */
    size_t app_id_len;
    const char *usage;          /* .1.4 when non-NULL */
    const uint8_t *attestation; /* .1.8 payload (stripped VersionedAttestation) */
    size_t attestation_len;
    const uint8_t *app_info; /* .1.9 payload (ds_ratls_app_info_encode) */
    size_t app_info_len;
};

/*
 * Build and sign a certificate for subject_key's public key. issuer_cert NULL = self-signed
 * (issuer_key must then be the subject key). Serial = SHA-256(subject public key point)[0..20]
 * with the top bit cleared; KeyUsage critical; SKI; AKI when issued by another cert. Returns 0
 * (*out owned by the caller), -EINVAL (bad request: not_before >= not_after, too many alt
 * names, negative path length, O/CN not UTF-8 or longer than 4096 bytes, issuer key not
 * matching issuer cert, self-signed with another key), -DS_E_LIMIT (an extension payload
 * above its ds_ratls_ext_max cap), -DS_E_CRYPTO, -ENOMEM.
 */
DS_MUST_USE int ds_ratls_cert_build(const struct ds_ratls_cert_req *req, EVP_PKEY *subject_key,
                                    EVP_PKEY *issuer_key, X509 *issuer_cert, X509 **out);

/* ---- verification (§6.4) ----------------------------------------------------------------------
 */

/*
 * Verify an RA-TLS certificate: validity (unless opts->skip_cert_validity), the attestation
 * (.1.8 or legacy), binding report_data == SHA-512("ratls-cert:" || cert SPKI DER) (this
 * overrides opts->expected_report_data), then ds_attestation_verify. This checks only the
 * key<->evidence binding; issuer claims (app id, app info, usage extensions) need a chain.
 * res is always initialized; release with ds_attestation_result_done(). Returns 0 when
 * verified, else res->err (-DS_E_EXPIRED, -DS_E_NOT_FOUND (no attestation), -DS_E_MISMATCH
 * (binding), ...).
 */
DS_MUST_USE int ds_ratls_verify_cert(X509 *cert, const struct ds_attestation_verify_opts *opts,
                                     struct ds_attestation_result *res);
DS_MUST_USE int ds_ratls_verify_cert_der(const uint8_t *der, size_t len,
                                         const struct ds_attestation_verify_opts *opts,
                                         struct ds_attestation_result *res);
/* For SSL verify callbacks: the leaf of the chain being verified (X509_STORE_CTX_get0_cert). */
DS_MUST_USE int ds_ratls_verify_store_ctx(X509_STORE_CTX *ctx,
                                          const struct ds_attestation_verify_opts *opts,
                                          struct ds_attestation_result *res);
/* After the handshake: the peer's certificate (-DS_E_NOT_FOUND when the peer sent none). */
DS_MUST_USE int ds_ratls_verify_peer(SSL *ssl, const struct ds_attestation_verify_opts *opts,
                                     struct ds_attestation_result *res);

/* ---- CSR (§6.6) -------------------------------------------------------------------------------
 */

#define DS_CSR_CONFIRM    "please sign cert:"
#define DS_CSR_MAX_SIZE   (DS_ATTESTATION_MAX_SIZE + 64 * 1024)
#define DS_CSR_MAX_STRING 4096 /* org, subject, one alt name */
#define DS_CSR_MAX_PUBKEY 1024

struct ds_cert_config {
    char *org_name; /* NULL = None */
    char *subject;
    char **alt_names;
    size_t alt_name_count;
    bool usage_server_auth;
    bool usage_client_auth;
    bool ext_quote;
    bool ext_app_info;
    bool has_not_before;
    uint64_t not_before;
    bool has_not_after;
    uint64_t not_after;
};

/* CertSigningRequestV2. Strings and buffers are malloc'd; ds_csr_done frees them. */
struct ds_csr {
    char *confirm;
    uint8_t *pubkey; /* SPKI DER */
    size_t pubkey_len;
    struct ds_cert_config config;
    uint8_t *attestation; /* raw VersionedAttestation bytes (the rest of the input) */
    size_t attestation_len;
};
void ds_csr_done(struct ds_csr *csr);

/* SCALE encoding (what gets signed). *out malloc'd. Returns 0, -EINVAL, -DS_E_LIMIT, -ENOMEM. */
DS_MUST_USE int ds_csr_encode(const struct ds_csr *csr, uint8_t **out, size_t *out_len);
/* Decode V2 (attestation = all remaining bytes, not decoded here). Returns 0, -DS_E_TRUNCATED,
 * -DS_E_FORMAT (bad compact, bool not 0/1, option tag not 0/1, bad UTF-8), -DS_E_LIMIT,
 * -ENOMEM. */
DS_MUST_USE int ds_csr_decode(const uint8_t *data, size_t len, struct ds_csr *out);
/* Decode a legacy CertSigningRequestV1 and upgrade it (ext_app_info false, no validity
 * overrides, attestation = V0 encoding of the legacy quote + JSON event log). */
DS_MUST_USE int ds_csr_decode_v1(const uint8_t *data, size_t len, struct ds_csr *out);
/* DER ECDSA-P256-SHA256 signature over the encoded CSR with key. *out malloc'd. */
DS_MUST_USE int ds_csr_sign(EVP_PKEY *key, const uint8_t *encoded, size_t len, uint8_t **out,
                            size_t *out_len);
/*
 * Server side of SignCert: decode (api_version 2: V2, 1: V1), verify the DER signature over
 * the encoded bytes with the CSR's own SPKI (must be EC P-256), then the confirm word.
 * Returns 0 (out filled), decode errors, -DS_E_SIGNATURE, -DS_E_FORMAT (SPKI not P-256),
 * -DS_E_MISMATCH (confirm word), -DS_E_UNSUPPORTED (api_version).
 */
DS_MUST_USE int ds_csr_verify(uint32_t api_version, const uint8_t *encoded, size_t len,
                              const uint8_t *sig, size_t sig_len, struct ds_csr *out);

#endif /* DSTACK_RATLS_H */
