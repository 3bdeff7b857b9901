/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dstack attestation container (`VersionedAttestation`): the bytes of guest-agent
 * Attest.attestation, GetQuote.attestation, the RA-TLS certificate extension .1.8, the KMS CSR
 * trailer and verifier requests. Two wire forms (spec kms-ratls.md §6.3, attestation.md §6.2,
 * guest-agent-api.md §4.12):
 *   V0 = 0x00 || SCALE(Attestation)          (producers' default)
 *   V1 = MessagePack named map {version:1, platform:{kind,data}, stack:{kind,data}}
 *        (producers use it when some runtime event is V2).
 * This module decodes both (every platform variant's framing; only TDX can be verified),
 * encodes TDX in both, strips an attestation for certificate embedding and verifies a TDX
 * attestation (DCAP quote, report_data, RTMR replay, app identity).
 *
 * Ownership: struct ds_attestation owns everything inside it; free with ds_attestation_free()
 * (NULL-safe). Decoding copies; nothing borrows from the input bytes.
 */
#ifndef DSTACK_VERSIONED_H
#define DSTACK_VERSIONED_H

#include "dstack/attest.h"
#include "dstack/base.h"
#include "dstack/eventlog.h"

#define DS_ATTESTATION_MAX_SIZE   (10 * 1024 * 1024) /* whole encoded container */
#define DS_ATTESTATION_MAX_CONFIG (4 * 1024 * 1024)  /* the config (vm_config JSON) string */

/* AttestationQuote variant indices (SCALE u8) and V1 "kind" strings. */
enum ds_att_platform {
    DS_ATT_TDX = 0,           /* "tdx" */
    DS_ATT_GCP_TDX = 1,       /* "gcp-tdx" */
    DS_ATT_NITRO_ENCLAVE = 2, /* "nitro-enclave" */
    DS_ATT_SEV_SNP = 3,       /* "sev-snp" */
    DS_ATT_AWS_NITRO_TPM = 4, /* "aws-nitro-tpm" */
    DS_ATT_PLATFORM_MAX
};
const char *ds_att_platform_name(enum ds_att_platform p);

/* Wire form to encode. AUTO = V1 when any runtime event is V2, else V0 (upstream rule). */
enum ds_att_wire {
    DS_ATT_WIRE_AUTO = 0,
    DS_ATT_WIRE_V0,
    DS_ATT_WIRE_V1,
};

struct ds_attestation {
    enum ds_att_platform platform;
    enum ds_att_wire decoded_from; /* V0 or V1 after ds_attestation_decode; AUTO otherwise */
    /* TDX and GCP-TDX: the TDX quote and the platform (CCEL/JSON) event log. */
    uint8_t *quote;
    size_t quote_len;
    struct ds_event_log *event_log; /* never NULL */
    /*
     * Other platforms: their evidence is kept opaque. For a V0 input it is the SCALE body of
     * the variant (re-emitted byte for byte by a V0 encode; for GCP-TDX the part after the
     * TdxQuote); for V1 it is NULL (re-encoding a non-TDX V1 is -DS_E_UNSUPPORTED).
     */
    uint8_t *platform_raw;
    size_t platform_raw_len;
    /* Stack: runtime events (each stored as an imr-3 runtime event, digest computed for its
     * version, so they can be replayed directly), report_data and config. */
    struct ds_event_log *runtime_events; /* never NULL */
    uint8_t report_data[DS_REPORT_DATA_SIZE];
    char *config;              /* never NULL ("" when absent) */
    bool pod;                  /* stack kind "dstack-pod" (V1 only) */
    char *report_data_payload; /* dstack-pod only, else NULL */
};

void ds_attestation_free(struct ds_attestation *a);

/*
 * A TDX attestation from its parts (deep copies). runtime_events NULL = take every runtime
 * event (type 0x08000001) of event_log, as upstream does for the raw quote path; event_log
 * NULL = empty. report_data NULL = take the quote's report_data (the quote must parse).
 * config NULL = "". Returns 0, -EINVAL, -ENOMEM, -DS_E_LIMIT, or a quote parse error.
 */
DS_MUST_USE int ds_attestation_new_tdx(const uint8_t *quote, size_t quote_len,
                                       const struct ds_event_log *event_log,
                                       const struct ds_event_log *runtime_events,
                                       const uint8_t *report_data, const char *config,
                                       struct ds_attestation **out);

/*
 * The legacy certificate form (extensions .1.1 raw quote + .1.2 JSON event log, §6.4 step 1):
 * runtime events = log entries of type 0x08000001, report_data from the quote, empty config.
 * Returns 0, the JSON/quote parser's errors, -ENOMEM.
 */
DS_MUST_USE int ds_attestation_from_legacy(const uint8_t *quote, size_t quote_len,
                                           const char *event_log_json, size_t json_len,
                                           struct ds_attestation **out);

/*
 * Decode V0 or V1 (first byte decides). The whole input must be consumed; at most
 * DS_ATTESTATION_MAX_SIZE bytes. Byte fields in V1 may be msgpack bin or arrays of integers
 * 0..255. Returns 0; -DS_E_TRUNCATED; -DS_E_FORMAT (unknown first byte / variant / kind,
 * wrong msgpack type, bad SCALE compact (non-canonical too), trailing bytes, missing field,
 * bad UTF-8); -DS_E_LIMIT; -DS_E_UNSUPPORTED (V1 version != 1); -ENOMEM.
 */
DS_MUST_USE int ds_attestation_decode(const uint8_t *data, size_t len, struct ds_attestation **out);

/*
 * Encode. wire AUTO picks V1 when any runtime event has version 2. V1 byte fields follow
 * rmp-serde defaults: quote/report_data as arrays of integers, digests/payloads as bin.
 * *out is malloc'd. Returns 0, -DS_E_UNSUPPORTED (V1 of a non-TDX platform, or a non-TDX
 * attestation without its raw V0 body), -DS_E_LIMIT, -ENOMEM.
 */
DS_MUST_USE int ds_attestation_encode(const struct ds_attestation *a, enum ds_att_wire wire,
                                      uint8_t **out, size_t *out_len);

/*
 * The stripped copy for certificate embedding (§6.3). TDX: the event log keeps only the imr-0
 * EV_PLATFORM_CONFIG_FLAGS (type 10) "ACPI DATA" events (digest kept, payload "ACPI DATA")
 * and the imr-3 events -- runtime events keep name+payload and lose the digest, other imr-3
 * events keep the digest and lose the payload. GCP-TDX keeps only imr-3 events. Runtime
 * events, report_data and config are kept. Returns 0 or -ENOMEM.
 */
DS_MUST_USE int ds_attestation_strip(const struct ds_attestation *a, struct ds_attestation **out);

/* ---- verification --------------------------------------------------------------------------- */

/* Steps of ds_attestation_verify / ds_ratls_verify_cert, in order; stable names. */
enum ds_att_step {
    DS_ATT_STEP_NONE = 0,
    DS_ATT_STEP_CERTIFICATE,    /* "certificate": parse, extensions, validity */
    DS_ATT_STEP_NO_ATTESTATION, /* "no_attestation": no .1.8 and no legacy .1.1 */
    DS_ATT_STEP_DECODE,         /* "decode": attestation bytes malformed */
    DS_ATT_STEP_BINDING,        /* "binding": report_data != expected (SHA-512 of SPKI) */
    DS_ATT_STEP_PLATFORM,       /* "platform": platform not verifiable here */
    DS_ATT_STEP_COLLATERAL,     /* "collateral": no collateral and fetching failed */
    DS_ATT_STEP_QUOTE,          /* "quote": DCAP verification (dcap_step says which) */
    DS_ATT_STEP_REPORT_DATA,    /* "report_data": quote report_data != attestation's */
    DS_ATT_STEP_EVENT_LOG,      /* "event_log": RTMR replay, V2 preimages */
    DS_ATT_STEP_APP_INFO,       /* "app_info": identity decoding */
    DS_ATT_STEP_MAX
};
const char *ds_att_step_name(enum ds_att_step s);

struct ds_attestation_verify_opts {
    struct ds_verifier *verifier;           /* required (trust anchor, caches) */
    const struct ds_collateral *collateral; /* NULL = fetch from pccs_url */
    const char *pccs_url;                   /* used only when collateral is NULL */
    long fetch_timeout_ms;                  /* 0 = ds_collateral_fetch's default */
    int64_t now;                            /* unix seconds */
    const uint8_t *expected_report_data;    /* 64 bytes, or NULL to skip the binding step */
    bool skip_cert_validity;                /* RA-TLS only: don't check notBefore/notAfter */
};

struct ds_attestation_result {
    bool ok;
    enum ds_att_step failed_step;
    enum ds_verify_step dcap_step; /* DCAP sub-step when failed_step == QUOTE */
    int err;                       /* negative code on failure */
    char message[256];             /* reason on failure */
    enum ds_att_platform platform;
    enum ds_tcb_status tcb_status;       /* valid once the quote verified */
    char *advisory_ids[DS_ADVISORY_MAX]; /* malloc'd */
    size_t advisory_count;
    bool simulated;         /* the quote chained to a non-Intel (mock) root */
    struct ds_td_report td; /* the verified TD report (copy) */
    uint8_t report_data[DS_REPORT_DATA_SIZE];
    struct ds_app_info app_info; /* valid when ok; device_id = SHA-256(PPID of the PCK) */
};
void ds_attestation_result_done(struct ds_attestation_result *r);

/*
 * Verify a TDX attestation (spec §6.4 steps 2-4): optional report_data binding, DCAP
 * verification of the quote against opts->collateral (or collateral fetched from
 * opts->pccs_url), quote report_data == attestation report_data, V2 preimages, RTMR3 ==
 * replay of the runtime events and RTMR0-2 == replay of the event log when the log has events
 * for them, then the app identity (ds_app_info_decode with the PCK PPID and the config).
 * Fails closed. res is always initialized; release with ds_attestation_result_done().
 * Returns 0 when verified, else res->err: -EINVAL, -DS_E_MISMATCH (binding, report_data,
 * RTMR), -DS_E_UNSUPPORTED (non-TDX platform), a DCAP error, a fetch error, ...
 */
DS_MUST_USE int ds_attestation_verify(const struct ds_attestation *a,
                                      const struct ds_attestation_verify_opts *opts,
                                      struct ds_attestation_result *res);

#endif /* DSTACK_VERSIONED_H */
