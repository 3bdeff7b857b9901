/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack event logs: the TDX boot log (CCEL, a TCG crypto-agile binary log) and dstack's JSON
 * event form, RTMR replay, dstack runtime events (the RTMR3 measurements dstack-util and apps
 * emit), app identity decoding from a log and a quote (app_id, compose_hash, mr_system,
 * mr_aggregated, ...), mr_config_id builders and report_data helpers.
 * Spec: ../shared/spec/attestation.md §4 and guest-agent-api.md §4.9-4.11.
 *
 * Ownership: a struct ds_event_log owns its events and every string/byte buffer inside them;
 * release it with ds_eventlog_free() (NULL-safe). Parsers allocate a new log; nothing borrows
 * from the input bytes.
 */
#ifndef DSTACK_EVENTLOG_H
#define DSTACK_EVENTLOG_H

#include "dstack/attest.h"
#include "dstack/base.h"
#include "dstack/crypto.h"

/* ---- limits and constants ------------------------------------------------------------------ */

#define DS_EVENTLOG_MAX_EVENTS   4096               /* events in one log */
#define DS_EVENTLOG_MAX_PAYLOAD  (1024 * 1024)      /* bytes of one event's payload */
#define DS_EVENTLOG_MAX_NAME     1024               /* bytes of one event name */
#define DS_EVENTLOG_MAX_PREIMAGE (4 * 1024 * 1024)  /* bytes of one V2 preimage */
#define DS_EVENTLOG_MAX_CCEL     (16 * 1024 * 1024) /* bytes of a CCEL binary log */
#define DS_EVENTLOG_MAX_JSON     (32 * 1024 * 1024) /* bytes of the JSON form (in and out) */
#define DS_EVENTLOG_MAX_ALGS     16                 /* algorithms in the Spec ID event */
#define DS_EVENT_DIGEST_MAX      64                 /* largest digest (SHA-512) */

#define DS_RTMR_COUNT 4
#define DS_RTMR_SIZE  48

/* TCG event types this module cares about (TCG PC Client PFP). */
#define DS_EV_NO_ACTION             0x00000003u
#define DS_EV_SEPARATOR             0x00000004u
#define DS_EV_PLATFORM_CONFIG_FLAGS 0x0000000Au
/* dstack runtime events (spec §4.4): always RTMR3 on TDX. */
#define DS_RUNTIME_EVENT_TYPE 0x08000001u
#define DS_RUNTIME_EVENT_IMR  3

/* TPM algorithm ids accepted in CCEL digests (anything else is -DS_E_UNSUPPORTED). */
#define DS_TPM_ALG_SHA1   0x0004
#define DS_TPM_ALG_SHA256 0x000B
#define DS_TPM_ALG_SHA384 0x000C
#define DS_TPM_ALG_SHA512 0x000D

/* Event names dstack-util emits (spec §4.5) and the ACPI labels (§4.1). */
#define DS_EVENT_SYSTEM_PREPARING "system-preparing"
#define DS_EVENT_APP_ID           "app-id"
#define DS_EVENT_COMPOSE_HASH     "compose-hash"
#define DS_EVENT_INIT_SCRIPT_HASH "init-script-hash"
#define DS_EVENT_INSTANCE_ID      "instance-id"
#define DS_EVENT_BOOT_MR_DONE     "boot-mr-done"
#define DS_EVENT_OS_IMAGE_HASH    "os-image-hash"
#define DS_EVENT_KEY_PROVIDER     "key-provider"
#define DS_EVENT_STORAGE_FS       "storage-fs"
#define DS_EVENT_SYSTEM_READY     "system-ready"
#define DS_EVENT_ACPI_LOADER      "acpi-loader"
#define DS_EVENT_ACPI_RSDP        "acpi-rsdp"
#define DS_EVENT_ACPI_TABLES      "acpi-tables"
#define DS_ACPI_DATA_PAYLOAD      "ACPI DATA"

/* ---- events and logs ----------------------------------------------------------------------- */

struct ds_event {
    uint32_t imr;        /* 0..3 (RTMR index) */
    uint32_t event_type; /* TCG type, or DS_RUNTIME_EVENT_TYPE */
    uint8_t digest[DS_EVENT_DIGEST_MAX];
    size_t digest_len; /* 0 when the digest was empty or missing (stripped runtime events) */
    char *name;        /* malloc'd, NUL-terminated UTF-8, never NULL in a parsed log ("") */
    uint8_t *payload;  /* malloc'd; may be NULL when payload_len == 0 */
    size_t payload_len;
    uint32_t version;  /* 1 or 2 (V2 runtime events only) */
    uint8_t *preimage; /* malloc'd V2 preimage (canonical JSON bytes), NULL when absent */
    size_t preimage_len;
};

struct ds_event_log {
    struct ds_event *events;
    size_t count;
    size_t cap;
};

/* A new empty log. Returns 0 or -ENOMEM. */
DS_MUST_USE int ds_eventlog_new(struct ds_event_log **out);
/* Free a log and everything it owns. NULL-safe. */
void ds_eventlog_free(struct ds_event_log *log);

/*
 * Append a deep copy of ev (name NULL is taken as ""). Checks imr <= 3, version 1/2, digest_len
 * <= 64, a valid UTF-8 name and the limits above. Returns 0, -ENOMEM, -DS_E_FORMAT,
 * -DS_E_LIMIT, or -EINVAL (a non-zero length with a NULL pointer).
 */
DS_MUST_USE int ds_eventlog_append(struct ds_event_log *log, const struct ds_event *ev);

/*
 * Append a runtime event (imr 3, type 0x08000001) with its SHA-384 digest computed for
 * `version` (1 or 2); for V2 the preimage (canonical JSON) is stored too.
 * Returns 0, -ENOMEM, -DS_E_FORMAT (name not UTF-8, bad version) or -DS_E_LIMIT.
 */
DS_MUST_USE int ds_eventlog_append_runtime(struct ds_event_log *log, const char *name,
                                           const void *payload, size_t payload_len,
                                           uint32_t version);

/* ---- parsers ------------------------------------------------------------------------------- */

/*
 * Parse a CCEL / TCG crypto-agile binary log (spec §4.1) into the TDX form: the header event
 * (with the "Spec ID Event03" EfiSpecIdEvent) is consumed; events follow until the next u32 is
 * 0xFFFFFFFF (CCEL padding) or the data ends exactly at an event boundary. Events with
 * imr_index 0 are dropped; every other event must carry exactly one digest and gets
 * imr = imr_index - 1 (which must be <= 3), name "" and payload = the raw event data. The first
 * three imr-0 EV_PLATFORM_CONFIG_FLAGS events whose payload is exactly "ACPI DATA" are named
 * acpi-loader, acpi-rsdp, acpi-tables.
 * Returns 0; -DS_E_TRUNCATED (a field ends early, including 1-3 stray bytes at the end);
 * -DS_E_UNSUPPORTED (a digest algorithm other than SHA-1/256/384/512); -DS_E_FORMAT (bad
 * header, digest count != 1, imr_index > 4); -DS_E_LIMIT (too many events or algorithms, event
 * or log too large); -ENOMEM.
 */
DS_MUST_USE int ds_eventlog_parse_ccel(const uint8_t *data, size_t len, struct ds_event_log **out);

/*
 * Parse the dstack JSON form (spec §4.2, guest-agent-api §4.9): a JSON array of objects
 * {imr (0-3), event_type (u32), digest (hex, may be "" or missing), event (string),
 * event_payload (hex), version (optional 1|2), preimage (optional hex)}. Unknown keys are
 * ignored (upstream serde does the same). The digest, when present and non-empty, must be
 * 20, 32, 48 or 64 bytes. A preimage is only kept for V2 events.
 * Returns 0; -DS_E_FORMAT (not JSON, not an array, wrong type, bad hex, imr > 3, bad version,
 * name not valid UTF-8 or containing NUL); -DS_E_LIMIT; -ENOMEM.
 */
DS_MUST_USE int ds_eventlog_parse_json(const char *json, size_t len, struct ds_event_log **out);

/* ---- serializer ---------------------------------------------------------------------------- */

/*
 * JSON output flags. 0 = the full form (every digest and payload, no preimage), as in
 * Info.tcb_info.event_log.
 * DS_EVENTLOG_JSON_STRIPPED: the real GetQuote/TdxQuote form: boot events (type !=
 *   0x08000001) keep their digest but get payload "" -- except the imr-0 "ACPI DATA" events,
 *   which keep it; runtime events get digest "" and keep their payload.
 * DS_EVENTLOG_JSON_PREIMAGE: add "preimage" to V2 runtime events (taken from the event, or
 *   computed as the canonical JSON when the event has none).
 * DS_EVENTLOG_JSON_RUNTIME_DIGESTS: with STRIPPED, keep the digests of runtime events (newer
 *   upstream `stripped()` keeps them so V2 events stay bound to their preimage; the spec's
 *   HEAD clears them). Our validator accepts both.
 * Real GetQuote = STRIPPED | PREIMAGE; simulator GetQuote = PREIMAGE.
 */
#define DS_EVENTLOG_JSON_STRIPPED        0x1u
#define DS_EVENTLOG_JSON_PREIMAGE        0x2u
#define DS_EVENTLOG_JSON_RUNTIME_DIGESTS 0x4u

/*
 * Serialize to compact JSON text, keys in the order imr, event_type, digest, event,
 * event_payload[, version (only 2)][, preimage], hex lowercase. *out is malloc'd and
 * NUL-terminated; out_len (may be NULL) gets its length. Returns 0, -ENOMEM, -DS_E_LIMIT or
 * -DS_E_FORMAT (an event name is not valid UTF-8).
 */
DS_MUST_USE int ds_eventlog_to_json(const struct ds_event_log *log, unsigned flags, char **out,
                                    size_t *out_len);

/* ---- runtime events (spec §4.4) ------------------------------------------------------------ */

/* V1 digests: H(le32(0x08000001) || ":" || name || ":" || payload). */
void ds_runtime_event_digest_v1_sha384(const char *name, const void *payload, size_t payload_len,
                                       uint8_t out[DS_SHA384_LEN]);
void ds_runtime_event_digest_v1_sha256(const char *name, const void *payload, size_t payload_len,
                                       uint8_t out[DS_SHA256_LEN]);

/*
 * The V2 preimage: RFC 8785 canonical JSON {"name":name,"payload":lowercase-hex,
 * "type":134217729} (no whitespace; \b \f \n \r \t \" \\ short escapes, other controls \u00xx,
 * non-ASCII raw UTF-8). *out is malloc'd and NUL-terminated, *out_len its length.
 * Returns 0, -DS_E_FORMAT (name not valid UTF-8), -DS_E_LIMIT or -ENOMEM.
 */
DS_MUST_USE int ds_runtime_event_preimage_v2(const char *name, const void *payload,
                                             size_t payload_len, char **out, size_t *out_len);

/*
 * Digest of a runtime event for `version` (1 or 2) with SHA-384 (RTMR3, NitroTPM PCR14) or
 * SHA-256 (GCP vTPM PCR14). Returns 0, -DS_E_FORMAT (bad version or name), -ENOMEM.
 */
DS_MUST_USE int ds_runtime_event_digest_sha384(uint32_t version, const char *name,
                                               const void *payload, size_t payload_len,
                                               uint8_t out[DS_SHA384_LEN]);
DS_MUST_USE int ds_runtime_event_digest_sha256(uint32_t version, const char *name,
                                               const void *payload, size_t payload_len,
                                               uint8_t out[DS_SHA256_LEN]);

/* true when ev is a dstack runtime event (event_type == 0x08000001, any imr). */
bool ds_event_is_runtime(const struct ds_event *ev);

/*
 * The digest an event contributes to its register (spec §4.2): for runtime events it is
 * recomputed (SHA-384, by version) from name and payload and any supplied digest is ignored;
 * otherwise it is the supplied digest, which must be non-empty. Writes out (>= 64 bytes) and
 * *out_len. Returns 0, -DS_E_NOT_FOUND (non-runtime event without a digest), -DS_E_FORMAT,
 * -ENOMEM.
 */
DS_MUST_USE int ds_event_effective_digest(const struct ds_event *ev,
                                          uint8_t out[DS_EVENT_DIGEST_MAX], size_t *out_len);

/*
 * V2 preimage validation (spec §4.2/§4.4). For every V2 runtime event: the preimage must be
 * present and byte-equal to the canonical JSON of its name and payload; when the event carries
 * a non-empty digest it must equal SHA-384(preimage).
 * Decision on the stripped case (upstream inconsistency noted in the spec): an EMPTY digest is
 * accepted, because GetQuote and RA-TLS certificates strip runtime digests and the digest used
 * for replay is always the recomputed one (== SHA-384(canonical JSON) == SHA-384(preimage) once
 * the preimage matched). A missing preimage is still rejected, as upstream does.
 * V1 events and non-runtime events are not checked. On failure, *out_bad_index (may be NULL)
 * gets the index of the first offending event.
 * Returns 0, -DS_E_NOT_FOUND (preimage missing), -DS_E_MISMATCH (preimage != canonical JSON,
 * or digest != SHA-384(preimage)), -DS_E_FORMAT, -ENOMEM.
 */
DS_MUST_USE int ds_eventlog_validate_v2_preimages(const struct ds_event_log *log,
                                                  size_t *out_bad_index);

/* ---- replay (spec §4.3) -------------------------------------------------------------------- */

/*
 * Replay RTMR0-3 from 48 zero bytes: for each event in log order, RTMR[imr] =
 * SHA-384(RTMR[imr] || effective digest). Digests shorter than 48 bytes are zero-padded to 48
 * (the npm SDK's replayRtmrs does this); 64-byte digests are rejected with -DS_E_FORMAT.
 * When to_event is non-NULL, replay stops after (and including) the first event with that name;
 * if no event has that name the whole log is replayed (upstream replay_events).
 * Returns 0 or the error of ds_event_effective_digest().
 */
DS_MUST_USE int ds_eventlog_replay(const struct ds_event_log *log, const char *to_event,
                                   uint8_t out[DS_RTMR_COUNT][DS_RTMR_SIZE]);

/*
 * Replay only the runtime events (type 0x08000001, whatever their imr) into one SHA-384
 * register, as the verifier checks RTMR3 (spec §4.6); to_event as above.
 */
DS_MUST_USE int ds_eventlog_replay_runtime_sha384(const struct ds_event_log *log,
                                                  const char *to_event, uint8_t out[DS_SHA384_LEN]);
/* Same over the SHA-256 bank (GCP PCR14): runtime digests recomputed with SHA-256. */
DS_MUST_USE int ds_eventlog_replay_runtime_sha256(const struct ds_event_log *log,
                                                  const char *to_event, uint8_t out[DS_SHA256_LEN]);

/*
 * Compare replayed registers with expected ones (constant time per register). Returns -1 when
 * all four are equal, else the index (0..3) of the first register that differs.
 */
int ds_rtmr_first_mismatch(const uint8_t replayed[DS_RTMR_COUNT][DS_RTMR_SIZE],
                           const uint8_t expected[DS_RTMR_COUNT][DS_RTMR_SIZE]);

/*
 * Check the log against a TD report: replay all runtime events and compare with RTMR3 (what
 * the dstack verifier does). Returns 0 or -DS_E_MISMATCH, or a replay error.
 */
DS_MUST_USE int ds_eventlog_verify_rtmr3(const struct ds_event_log *log,
                                         const struct ds_td_report *td);

/*
 * The first runtime event named `name` before the first "system-ready" (spec §4.6
 * find_event). Returns a borrowed pointer into log, or NULL.
 */
const struct ds_event *ds_eventlog_find_event(const struct ds_event_log *log, const char *name);

/* ---- app identity (spec §4.6, TDX) --------------------------------------------------------- */

#define DS_APP_INFO_MAX_INIT_SCRIPTS 64

/* Byte fields are malloc'd (NULL when empty). Release with ds_app_info_done(). */
struct ds_app_info {
    uint8_t *app_id;
    size_t app_id_len;
    uint8_t *compose_hash;
    size_t compose_hash_len;
    uint8_t *instance_id;
    size_t instance_id_len;
    uint8_t device_id[DS_SHA256_LEN];
    uint8_t mr_system[DS_SHA256_LEN];
    uint8_t mr_aggregated[DS_SHA256_LEN];
    uint8_t *os_image_hash;
    size_t os_image_hash_len;
    uint8_t *key_provider_info; /* raw key-provider payload (JSON bytes); empty when boottime */
    size_t key_provider_info_len;
    char *key_provider_name;  /* parsed "name" of key_provider_info, NULL if absent/invalid */
    uint8_t *key_provider_id; /* parsed hex "id", NULL when absent or empty */
    size_t key_provider_id_len;
    uint8_t **init_script_hashes; /* ordered init-script-hash payloads before system-ready */
    size_t *init_script_hash_lens;
    size_t init_script_count;
};

void ds_app_info_done(struct ds_app_info *info);

/*
 * Decode app identity from an event log and the quote's TD report (spec §4.6).
 * - app_id, compose_hash, instance_id: payloads of the first such events before system-ready.
 * - key_provider_info: key-provider payload, empty when `boottime`; mr_key_provider =
 *   SHA-256(it) or 32 zero bytes when empty.
 * - mr_system = SHA-256(MRTD || RTMR0 || RTMR1 || RTMR2 || mr_key_provider).
 * - mr_aggregated = SHA-256(MRTD || RTMR0-2 || RTMR3' [|| MRCONFIGID || MROWNER ||
 *   MROWNERCONFIG]) with RTMR3' = runtime replay to boot-mr-done when `boottime`, else of the
 *   whole log; the config registers are appended only if any is non-zero.
 * - os_image_hash: vm_config's "os_image_hash" (hex) when vm_config is given (a sys-config
 *   with a nested "vm_config" string is unwrapped); otherwise the os-image-hash event payload.
 * - device_id = SHA-256(ppid); ppid may be NULL/0, giving SHA-256("") as the guest agent
 *   reports at upstream HEAD.
 * Returns 0 (out filled; release with ds_app_info_done), -DS_E_FORMAT (vm_config not JSON or
 * bad hex), -DS_E_LIMIT, -ENOMEM, or a replay error.
 */
DS_MUST_USE int ds_app_info_decode(const struct ds_event_log *log, const struct ds_td_report *td,
                                   const uint8_t *ppid, size_t ppid_len, const char *vm_config,
                                   bool boottime, struct ds_app_info *out);

/* Parse key-provider JSON {"name":..,"id":"<hex>"}: malloc'd name and id (NULL when empty).
 * Returns 0, -DS_E_FORMAT or -ENOMEM. */
DS_MUST_USE int ds_app_info_parse_key_provider(const uint8_t *json, size_t len, char **out_name,
                                               uint8_t **out_id, size_t *out_id_len);

/* ---- mr_config_id (spec §4.6 end) ---------------------------------------------------------- */

enum ds_key_provider_kind {
    DS_KEY_PROVIDER_NONE = 0,
    DS_KEY_PROVIDER_LOCAL = 1,
    DS_KEY_PROVIDER_KMS = 2,
    DS_KEY_PROVIDER_TPM = 3,
};

#define DS_MR_CONFIG_ID_SIZE 48
#define DS_APP_ID_SIZE       20

/* v1: 01 || compose_hash(32) || 0^15. */
void ds_mr_config_id_v1(const uint8_t compose_hash[DS_SHA256_LEN],
                        uint8_t out[DS_MR_CONFIG_ID_SIZE]);
/* v2: 02 || Keccak256(compose_hash || app_id(20) || kind || key_provider_id) || 0^15.
 * Returns 0 or -DS_E_FORMAT (unknown kind). */
DS_MUST_USE int ds_mr_config_id_v2(const uint8_t compose_hash[DS_SHA256_LEN],
                                   const uint8_t app_id[DS_APP_ID_SIZE],
                                   enum ds_key_provider_kind kind, const uint8_t *key_provider_id,
                                   size_t key_provider_id_len, uint8_t out[DS_MR_CONFIG_ID_SIZE]);

/* ---- report_data (QuoteContentType, spec §4.6) --------------------------------------------- */

#define DS_REPORT_DATA_SIZE 64

enum ds_report_hash {
    DS_REPORT_HASH_SHA512 = 0, /* the default */
    DS_REPORT_HASH_SHA256,
    DS_REPORT_HASH_SHA384,
    DS_REPORT_HASH_SHA3_256,
    DS_REPORT_HASH_SHA3_384,
    DS_REPORT_HASH_SHA3_512,
    DS_REPORT_HASH_KECCAK256,
    DS_REPORT_HASH_RAW, /* content is the 64-byte report_data itself; tag ignored */
    DS_REPORT_HASH_KECCAK384,
    DS_REPORT_HASH_KECCAK512,
};

/* Tags the stack uses. */
#define DS_REPORT_TAG_KMS_ROOT_CA "kms-root-ca"
#define DS_REPORT_TAG_RATLS_CERT  "ratls-cert"
#define DS_REPORT_TAG_APP_DATA    "app-data"

/*
 * Parse a hash name: "" or "sha512" (default), "sha256", "sha384", "sha3-256", "sha3-384",
 * "sha3-512", "keccak256", "keccak384", "keccak512" (original Keccak padding, spec
 * guest-agent-api.md §4.7), "raw". Names are case-sensitive. Returns 0 or -DS_E_UNSUPPORTED.
 */
DS_MUST_USE int ds_report_hash_parse(const char *name, enum ds_report_hash *out);

/*
 * report_data = H(tag || ":" || content) zero-padded to 64 bytes. For RAW the content must be
 * exactly 64 bytes. Returns 0, -DS_E_FORMAT (RAW with a wrong length, NULL tag), -DS_E_CRYPTO.
 */
DS_MUST_USE int ds_report_data_build(enum ds_report_hash hash, const char *tag, const void *content,
                                     size_t content_len, uint8_t out[DS_REPORT_DATA_SIZE]);

#endif /* DSTACK_EVENTLOG_H */
