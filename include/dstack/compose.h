/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack compose: the app compose manifest (`app-compose.json`) and the encrypted
 * environment that travels with it. Covers the guest-side reading and validation of the
 * manifest (spec host-side.md §2.1; unknown fields ignored as upstream), its identity
 * (compose_hash = SHA-256 of the exact file bytes, app_id, instance_id: §2.2), the two
 * serialisations the tools produce (vmm-cli.py's `json.dumps(indent=4, ensure_ascii=False)`
 * layout, §1.12, and the SDKs' getComposeHash normalisation: sorted keys, compact, §2.2), the
 * `.env` file rules of vmm-cli, and the encrypted environment (kms-ratls.md §7: ephemeral
 * X25519, raw shared secret as AES-256-GCM key, eph_pub || iv || ciphertext || tag) with the
 * guest's limits and allowed_envs filtering, plus the env-encrypt public key signature check
 * (§3.6) built on lib/keys.
 *
 * Conventions: functions return 0 (or a count) or a negative error (-DS_E_*, -ENOMEM,
 * -EINVAL); out parameters are written only on success. Functions that reject their input
 * take an optional struct ds_compose_error naming the offending field (e.g. "allowed_envs[2]",
 * "env[0].key") or .env line. Secrets (env_crypt_key, decrypted values) are wiped on free.
 */
#ifndef DSTACK_COMPOSE_H
#define DSTACK_COMPOSE_H

#include "dstack/base.h"
#include "dstack/keys.h"

#define DS_COMPOSE_HASH_SIZE     32
#define DS_INSTANCE_ID_SIZE      20
#define DS_COMPOSE_FILE_MAX      (50u * 1024 * 1024) /* guest copy cap for app-compose.json */
#define DS_COMPOSE_MANIFEST_MAX  3                   /* highest manifest_version a guest knows */
#define DS_COMPOSE_INIT_MAX      5                   /* init_script entries */
#define DS_COMPOSE_LIST_MAX      4096                /* entries of any other list field */
#define DS_COMPOSE_KP_ID_MAX     4096                /* key_provider_id bytes */
#define DS_COMPOSE_JSON_DEPTH    64                  /* nesting accepted by the serialisers */
#define DS_COMPOSE_ERR_FIELD_MAX 64
#define DS_COMPOSE_ERR_MSG_MAX   128

/* Encrypted env limits (kms-ratls.md §7, the guest's dstack-util rules). */
#define DS_ENV_HEADER_SIZE   (32 + 12) /* eph_pub || iv */
#define DS_ENV_TAG_SIZE      16
#define DS_ENV_BLOB_MAX      (256u * 1024) /* host-shared .encrypted-env copy cap */
#define DS_ENV_ITEMS_MAX     1024
#define DS_ENV_TOTAL_MAX     (1024u * 1024) /* plaintext JSON bytes */
#define DS_ENV_KEY_MAX       255
#define DS_ENV_VALUE_MAX     (128u * 1024)
#define DS_ENV_FILE_MAX      (4u * 1024 * 1024) /* a .env file read by the tools */
#define DS_ENV_PLAINTEXT_MAX DS_ENV_TOTAL_MAX

/* Error detail: field is the JSON path or "line N" of a .env file; msg says what was wrong. */
struct ds_compose_error {
    char field[DS_COMPOSE_ERR_FIELD_MAX];
    char msg[DS_COMPOSE_ERR_MSG_MAX];
};

/* ---- the manifest (host-side.md §2.1) ------------------------------------------------------ */

enum ds_key_provider {
    DS_KP_NONE = 0, /* values are the MR_CONFIG V2 kind byte (§2.6) */
    DS_KP_LOCAL = 1,
    DS_KP_KMS = 2,
    DS_KP_TPM = 3,
};

/* "none", "local", "kms", "tpm". */
const char *ds_key_provider_name(enum ds_key_provider kp);
/* Parse one of those names. 0 or -DS_E_FORMAT. */
DS_MUST_USE int ds_key_provider_parse(const char *s, enum ds_key_provider *out);

struct ds_port_attrs {
    uint16_t port;
    bool pp;
};

struct ds_verity_volume {
    char *source;            /* bare file name */
    uint8_t verity_root[32]; /* 64 hex in the file */
    char *target;            /* absolute path */
};

/* requirements (manifest "3" only); unknown fields inside are errors (deny_unknown_fields). */
struct ds_compose_requirements {
    char *os_version; /* semver requirement text, NULL if absent */
    bool has_platforms;
    char **platforms; /* TeeVariant strings; an empty list allows none */
    size_t platform_count;
    bool has_tdx_measure_acpi_tables;
    bool tdx_measure_acpi_tables;
    bool has_launch_token_hash;
    uint8_t launch_token_hash[32];
    bool has_gpu_policy;
    bool attest_gpu; /* default true */
    char *gpu_rego;  /* NULL if absent */
    bool allow_devtools, allow_debug, allow_insecure_boot;
};

/*
 * The parsed manifest. Strings are NUL-terminated UTF-8 copies (a string containing U+0000 is
 * rejected). Absent optional strings are NULL. Free with ds_app_compose_free().
 */
struct ds_app_compose {
    uint32_t manifest_version; /* 1..DS_COMPOSE_MANIFEST_MAX */
    bool manifest_is_string;   /* "3" vs legacy 2 */
    char *name;
    char *runner; /* docker-compose, nerdctl-compose or bash */
    char *snapshotter;
    char *docker_compose_file;
    char *bash_script;
    char *pre_launch_script;
    char **init_scripts; /* string or array in the file */
    size_t init_script_count;
    char **features;
    size_t feature_count;
    bool public_logs;
    bool public_sysinfo;
    bool public_tcbinfo; /* default true */
    bool kms_enabled;
    bool gateway_enabled; /* gateway_enabled || tproxy_enabled */
    bool local_key_provider_enabled;
    bool has_key_provider;
    enum ds_key_provider key_provider_field; /* valid when has_key_provider */
    uint8_t *key_provider_id;
    size_t key_provider_id_len;
    char **allowed_envs;
    size_t allowed_env_count;
    bool no_instance_id;
    bool secure_time; /* default true */
    char *storage_fs; /* zfs or ext4 */
    uint64_t swap_size;
    uint32_t event_log_version; /* 1 or 2 */
    struct ds_port_attrs *ports;
    size_t port_count;
    bool port_restrict_mode;
    bool has_requirements;
    struct ds_compose_requirements requirements;
    struct ds_verity_volume *verity_volumes;
    size_t verity_volume_count;
};

/*
 * Parse and validate app-compose.json bytes (at most DS_COMPOSE_FILE_MAX). Unknown top-level
 * fields are ignored; a duplicated key is an error. Field rules: host-side.md §2.1, including the
 * manifest "3" gates (requirements, runner nerdctl-compose, more than one init script) and the
 * snapshotter / storage_fs / swap_size / event_log_version / verity_volumes value rules.
 * Returns 0 and a new manifest in *out; -DS_E_FORMAT (err names the field), -DS_E_LIMIT,
 * -DS_E_UNSUPPORTED (manifest_version above 3), -ENOMEM.
 */
DS_MUST_USE int ds_app_compose_parse(const void *json, size_t len, struct ds_app_compose **out,
                                     struct ds_compose_error *err);
void ds_app_compose_free(struct ds_app_compose *c);

/* The effective key provider: key_provider if set, else kms / local / none by the legacy flags. */
enum ds_key_provider ds_app_compose_key_provider(const struct ds_app_compose *c);
/* gateway_enabled, or the deprecated feature "tproxy-net". */
bool ds_app_compose_gateway_enabled(const struct ds_app_compose *c);
/* true when name is listed in allowed_envs. */
bool ds_app_compose_env_allowed(const struct ds_app_compose *c, const char *name);

/* ---- identity (§2.2) ----------------------------------------------------------------------- */

/* compose_hash = SHA-256 over the exact bytes (never re-serialised). */
void ds_compose_hash(const void *bytes, size_t len, uint8_t out[DS_COMPOSE_HASH_SIZE]);
/* Default app_id: the first 20 bytes of the compose hash. */
void ds_compose_app_id(const uint8_t compose_hash[DS_COMPOSE_HASH_SIZE],
                       uint8_t out[DS_APP_ID_SIZE]);
/*
 * instance_id = SHA-256(seed || app_id [|| platform_binding])[:20]. platform_binding may be
 * NULL/0 (the dstack platform; GCP / AWS pass the SHA-256 of their vTPM key's public area).
 */
void ds_compose_instance_id(const uint8_t seed[DS_INSTANCE_ID_SIZE],
                            const uint8_t app_id[DS_APP_ID_SIZE], const uint8_t *platform_binding,
                            size_t binding_len, uint8_t out[DS_INSTANCE_ID_SIZE]);

/* ---- serialisations ------------------------------------------------------------------------ */

/*
 * The SDKs' getComposeHash input form (JS JSON.stringify of the recursively key-sorted value):
 * keys sorted by UTF-16 code units, array-index keys ("0".."4294967294") first in numeric
 * order as JS objects enumerate them, "__proto__" keys dropped (JS assignment ignores them),
 * compact separators, non-ASCII raw, numbers as JS doubles (integers beyond 2^53 round).
 * `preprocess` applies getComposeHash(..., normalize = true): runner bash drops
 * docker_compose_file, runner docker-compose drops bash_script, a falsy pre_launch_script is
 * dropped. Input: any JSON text. Returns 0 and a malloc'd NUL-terminated string; -DS_E_FORMAT
 * for invalid JSON, -DS_E_LIMIT beyond DS_COMPOSE_FILE_MAX or DS_COMPOSE_JSON_DEPTH, -ENOMEM.
 */
DS_MUST_USE int ds_compose_sdk_normalize(const void *json, size_t len, bool preprocess, char **out,
                                         size_t *out_len);
/* SHA-256 of that normalised form: what getComposeHash returns for JSON.parse(json). */
DS_MUST_USE int ds_compose_sdk_hash(const void *json, size_t len, bool preprocess,
                                    uint8_t out[DS_COMPOSE_HASH_SIZE]);

/*
 * Re-serialise JSON text the way vmm-cli.py writes app-compose.json: Python json.dumps with
 * indent=4, ensure_ascii=False, insertion order kept (a duplicate key keeps its first position
 * and its last value, like json.loads), Python float repr. Same returns as above.
 */
DS_MUST_USE int ds_compose_python_dump(const void *json, size_t len, char **out, size_t *out_len);

/* ---- building a manifest like `vmm-cli.py compose` (§1.12) -------------------------------- */

struct ds_compose_options {
    const char *name;           /* required */
    const char *docker_compose; /* the YAML text (required, UTF-8) */
    size_t docker_compose_len;
    const char *pre_launch_script; /* file contents or NULL (included even when empty) */
    size_t pre_launch_script_len;
    bool kms, gateway, local_key_provider, public_logs, public_sysinfo, no_instance_id, secure_time;
    bool has_key_provider;
    enum ds_key_provider key_provider;
    const char *key_provider_id;     /* hex text as given, NULL = "" */
    const char *const *allowed_envs; /* names from the env file, in file order */
    size_t allowed_env_count;
    uint64_t swap_mb;           /* 0 = no swap_size key */
    uint32_t event_log_version; /* 0 or 1 = omitted, 2 = written */
    bool sdk_normalized;        /* write the SDK-normalised form instead of indent 4 */
};

/*
 * Build app-compose.json bytes: vmm-cli's fields and key order (manifest_version 2, name,
 * runner "docker-compose", docker_compose_file, kms_enabled, gateway_enabled,
 * local_key_provider_enabled, key_provider_id, public_logs, public_sysinfo, allowed_envs,
 * no_instance_id, secure_time, then key_provider, pre_launch_script, swap_size (bytes),
 * event_log_version when given) in its indent-4 layout, or the SDK-normalised form. Checks:
 * UTF-8 text, hex key_provider_id, valid and unique env names. Returns 0 and a malloc'd
 * buffer; -DS_E_FORMAT (err names the option: "name", "docker-compose", "key-provider-id",
 * "env-file", ...), -ENOMEM.
 */
DS_MUST_USE int ds_compose_build(const struct ds_compose_options *o, char **out, size_t *out_len,
                                 struct ds_compose_error *err);

/* ---- environment files and variables ------------------------------------------------------- */

/* ^[A-Za-z_][A-Za-z0-9_]*$ and at most DS_ENV_KEY_MAX bytes. */
bool ds_env_name_valid(const char *name, size_t len);

struct ds_env_var {
    char *key;
    char *value;
};

/* A list of variables; values are treated as secrets (wiped on free). */
struct ds_env_list {
    struct ds_env_var *vars;
    size_t count;
};

void ds_env_list_free(struct ds_env_list *l);
/*
 * Set key=value: replaces the value of an existing key in place (keeps its position, like a
 * Python dict), else appends. 0, -DS_E_LIMIT (DS_ENV_ITEMS_MAX), -ENOMEM.
 */
DS_MUST_USE int ds_env_list_set(struct ds_env_list *l, const char *key, size_t key_len,
                                const char *value, size_t value_len);

/*
 * Parse a .env file the way vmm-cli.py's parse_env_file does: lines split on \n, \r\n or \r;
 * each line stripped of whitespace; empty lines, lines starting with '#' and lines without '='
 * skipped; split at the first '='; key and value stripped. Quotes are kept verbatim (vmm-cli
 * does not unquote). A later duplicate replaces the value, keeping the first position.
 * Stricter than vmm-cli: the text must be UTF-8 and every key a valid name (err names
 * "line N"). 0, -DS_E_FORMAT, -DS_E_LIMIT, -ENOMEM.
 */
DS_MUST_USE int ds_env_file_parse(const void *text, size_t len, struct ds_env_list *out,
                                  struct ds_compose_error *err);

/*
 * The env plaintext {"env":[{"key":K,"value":V},...]} (JS JSON.stringify layout, as the SDK's
 * encryptEnvVars). Returns a malloc'd string.
 */
DS_MUST_USE int ds_env_plaintext(const struct ds_env_list *l, char **out, size_t *out_len);

/*
 * Encrypt plaintext for an app's X25519 env public key with a fresh ephemeral key and IV:
 * out = eph_pub(32) || iv(12) || ciphertext || tag(16) (kms-ratls.md §7). Returns 0 and a
 * malloc'd blob; -DS_E_CRYPTO (including an all-zero shared secret from a low-order public
 * key), -DS_E_LIMIT beyond DS_ENV_PLAINTEXT_MAX, -ENOMEM.
 */
DS_MUST_USE int ds_env_encrypt(const uint8_t app_pub[DS_X25519_PUB_SIZE], const void *plaintext,
                               size_t len, uint8_t **out, size_t *out_len);
/* Same with a given ephemeral secret and IV (test vectors only). */
DS_MUST_USE int ds_env_encrypt_with(const uint8_t app_pub[DS_X25519_PUB_SIZE],
                                    const uint8_t eph_secret[32], const uint8_t iv[12],
                                    const void *plaintext, size_t len, uint8_t **out,
                                    size_t *out_len);
/* Encrypt a variable list (plaintext per ds_env_plaintext) and return lowercase hex, as the
 * deployers send `encrypted_env`. */
DS_MUST_USE int ds_env_encrypt_hex(const uint8_t app_pub[DS_X25519_PUB_SIZE],
                                   const struct ds_env_list *l, char **out_hex);

/*
 * Decrypt a blob with env_crypt_key (guest side). Returns 0 and the malloc'd plaintext (a
 * secret: wipe it); -DS_E_TRUNCATED shorter than header + tag, -DS_E_LIMIT beyond
 * DS_ENV_BLOB_MAX, -DS_E_CRYPTO for an all-zero shared secret, -DS_E_SIGNATURE when the tag
 * does not verify (wrong key, tampered bytes).
 */
DS_MUST_USE int ds_env_decrypt(const uint8_t env_crypt_key[DS_KEY_SIZE], const uint8_t *blob,
                               size_t blob_len, uint8_t **out, size_t *out_len);

/*
 * Parse a decrypted plaintext and keep the variables the manifest allows (allowed may be NULL/0
 * for "none allowed"). Variables not in allowed are skipped, as the guest does, and counted in
 * *out_skipped (may be NULL). Limits: DS_ENV_ITEMS_MAX items, DS_ENV_TOTAL_MAX bytes, key
 * names per ds_env_name_valid, values DS_ENV_VALUE_MAX; a later duplicate key wins. The result
 * is sorted by key. -DS_E_FORMAT (err names "env[i].key" etc.), -DS_E_LIMIT, -ENOMEM.
 */
DS_MUST_USE int ds_env_parse_plaintext(const void *json, size_t len, const char *const *allowed,
                                       size_t allowed_count, struct ds_env_list *out,
                                       size_t *out_skipped, struct ds_compose_error *err);

/*
 * The guest's whole step: decrypt with env_crypt_key, parse, filter by the manifest's
 * allowed_envs. Errors as ds_env_decrypt and ds_env_parse_plaintext.
 */
DS_MUST_USE int ds_env_decrypt_for_app(const struct ds_app_compose *c,
                                       const uint8_t env_crypt_key[DS_KEY_SIZE],
                                       const uint8_t *blob, size_t blob_len,
                                       struct ds_env_list *out, size_t *out_skipped,
                                       struct ds_compose_error *err);

/*
 * Render `.decrypted-env`: one KEY=value line per variable in list order; the value is
 * double-quoted when it contains space, tab, | & ; < > ( ) $ ` \ " ' or newline; newline is
 * written as \n and " $ ` get a backslash (backslash itself is not escaped), quoted or not.
 * Returns a malloc'd string (a secret).
 */
DS_MUST_USE int ds_env_render_dotenv(const struct ds_env_list *l, char **out, size_t *out_len);

/* ---- env-encrypt public key signatures (kms-ratls.md §3.6) -------------------------------- */

struct ds_env_pubkey_response {
    uint8_t public_key[DS_X25519_PUB_SIZE];
    bool has_signature;
    uint8_t signature[DS_K256_SIG_SIZE]; /* legacy */
    bool has_signature_v1;
    uint8_t signature_v1[DS_K256_SIG_SIZE];
    uint64_t timestamp; /* valid with signature_v1 */
};

/*
 * Check a GetAppEnvEncryptPubKey answer the way vmm-cli does: signature_v1 first (recovered
 * signer, fresh per ds_env_pubkey_check_time with max_age, 0 = the SDK default), else the legacy
 * signature. *out_signer gets the compressed signer; *out_legacy tells which one verified
 * (may be NULL). The caller compares the signer with its trusted KMS keys. Returns 0;
 * -DS_E_EXPIRED when only a stale v1 signature was offered, -DS_E_SIGNATURE when nothing
 * recovers, -DS_E_NOT_FOUND when the answer carries no signature.
 */
DS_MUST_USE int ds_env_pubkey_verify(const struct ds_env_pubkey_response *r,
                                     const uint8_t app_id[DS_APP_ID_SIZE], uint64_t now,
                                     uint64_t max_age, uint8_t out_signer[DS_K256_PUB_SIZE],
                                     bool *out_legacy);

#endif /* DSTACK_COMPOSE_H */
