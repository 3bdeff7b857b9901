/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack-client: the C SDK for applications running inside a dstack CVM. It is the C
 * counterpart of the official SDKs (@phala/dstack-sdk, dstack-sdk for Python/Rust/Go): it
 * talks to the guest agent's app API (`/var/run/dstack.sock`, or an HTTP endpoint for the
 * simulator) and offers the same calls: keys, TLS certificates, quotes, attestations, app
 * info, runtime events, signing and version. It depends only on libcurl, jansson and
 * OpenSSL's libcrypto (for SHA-384 in dstack_quote_replay_rtmrs), never on libdstack.
 *
 * CONVENTIONS
 *   Every fallible function returns 0 on success or a negative DSTACK_ERR_* code. On failure
 *   a human-readable message (for a server error, the server's own `error` text) is available
 *   from dstack_client_errmsg() until the next call on the same client. out_* parameters are
 *   written only on success.
 *
 *   Results are heap objects owned by the caller and released with the matching *_free()
 *   function; every *_free() accepts NULL. Results that hold key material (key results, TLS
 *   keys) are wiped before they are freed.
 *
 *   Byte strings are given as (pointer, length); binary results are decoded from the wire's
 *   hex. Identifiers and measurements in dstack_info_result are kept as the lowercase hex
 *   strings the agent returns, as the JS SDK does.
 *
 * THREADS
 *   A struct dstack_client keeps one HTTP connection open and is not safe to use from two
 *   threads at once; give each thread its own client. Creating clients from several threads
 *   at once is safe.
 */
#ifndef DSTACK_CLIENT_H
#define DSTACK_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Error codes. They are negative and returned as they are (no extra negation). */
enum dstack_error {
    DSTACK_OK = 0,
    DSTACK_ERR_ARG = -1,         /* invalid argument (NULL, empty event name, bad length) */
    DSTACK_ERR_NOMEM = -2,       /* out of memory */
    DSTACK_ERR_NO_ENDPOINT = -3, /* no endpoint given and no agent socket found */
    DSTACK_ERR_TRANSPORT = -4,   /* could not connect, send or receive (curl error) */
    DSTACK_ERR_SERVER = -5,      /* the agent answered with an error (HTTP status != 200) */
    DSTACK_ERR_PROTOCOL = -6,    /* the answer is not the expected JSON shape */
    DSTACK_ERR_TOO_LONG = -7,    /* report data longer than 64 bytes (checked before sending) */
    DSTACK_ERR_UNSUPPORTED = -8, /* agent too old for the requested feature (no Version RPC) */
};

/* Version of this SDK (sent as the User-Agent "dstack-sdk-c/<version>"). */
#define DSTACK_CLIENT_VERSION "0.1.0"

/* Maximum report data for dstack_get_quote() and dstack_attest(). */
#define DSTACK_REPORT_DATA_MAX 64
/* Size of one RTMR (SHA-384). */
#define DSTACK_RTMR_SIZE 48
/* Limit on a response body; larger answers fail with DSTACK_ERR_PROTOCOL. */
#define DSTACK_RESPONSE_MAX (16u * 1024u * 1024u)
/* Default request timeout in milliseconds; dstack_is_reachable() uses 500 ms like the JS SDK. */
#define DSTACK_TIMEOUT_MS           30000
#define DSTACK_REACHABLE_TIMEOUT_MS 500

struct dstack_client;

/* A byte string owned by the result that contains it. */
struct dstack_bytes {
    uint8_t *data;
    size_t len;
};

/*
 * NAME
 *   dstack_client_new, dstack_client_free - connect to the guest agent
 * SYNOPSIS
 *   int dstack_client_new(const char *endpoint, struct dstack_client **out_client);
 *   void dstack_client_free(struct dstack_client *client);
 * DESCRIPTION
 *   Creates a client for `endpoint`: a URL starting with http:// or https:// is used over TCP;
 *   any other value is a Unix socket path (an optional "unix:" prefix is removed). When
 *   `endpoint` is NULL the environment variable DSTACK_SIMULATOR_ENDPOINT is used if set,
 *   otherwise the first existing path among /var/run/dstack.sock, /run/dstack.sock,
 *   /var/run/dstack/dstack.sock and /run/dstack/dstack.sock. No request is sent yet.
 *   dstack_client_free() closes the connection and frees the client; NULL is ignored.
 * RETURN VALUE
 *   0, and *out_client is set; or a negative error code.
 * ERRORS
 *   DSTACK_ERR_ARG (out_client NULL, empty endpoint), DSTACK_ERR_NO_ENDPOINT (a socket path
 *   that does not exist, or none found), DSTACK_ERR_NOMEM, DSTACK_ERR_TRANSPORT (libcurl could
 *   not be initialised).
 * EXAMPLE
 *   struct dstack_client *c;
 *   if (dstack_client_new(NULL, &c) < 0) { ... }
 *   ...
 *   dstack_client_free(c);
 */
int dstack_client_new(const char *endpoint, struct dstack_client **out_client);
void dstack_client_free(struct dstack_client *client);

/*
 * NAME
 *   dstack_client_endpoint, dstack_client_errmsg, dstack_strerror - diagnostics
 * SYNOPSIS
 *   const char *dstack_client_endpoint(const struct dstack_client *client);
 *   const char *dstack_client_errmsg(const struct dstack_client *client);
 *   const char *dstack_strerror(int err);
 * DESCRIPTION
 *   dstack_client_endpoint() is the endpoint the client uses (a socket path or a URL).
 *   dstack_client_errmsg() describes the last failure on this client, e.g. the agent's
 *   "Report data is too long"; it is "" after a success. dstack_strerror() names an error code.
 *   The strings are owned by the library: the errmsg one stays valid until the next call on
 *   the same client; the others are static.
 * RETURN VALUE
 *   Never NULL.
 * EXAMPLE
 *   int r = dstack_info(c, &info);
 *   if (r < 0) fprintf(stderr, "%s: %s\n", dstack_strerror(r), dstack_client_errmsg(c));
 */
const char *dstack_client_endpoint(const struct dstack_client *client);
const char *dstack_client_errmsg(const struct dstack_client *client);
const char *dstack_strerror(int err);

/*
 * NAME
 *   dstack_get_key - derive a deterministic app key
 * SYNOPSIS
 *   int dstack_get_key(struct dstack_client *client, const char *path, const char *purpose,
 *                      const char *algorithm, struct dstack_key_result **out);
 *   void dstack_key_result_free(struct dstack_key_result *result);
 * DESCRIPTION
 *   Calls GetKey. `path` selects the key (the same path always gives the same key for the same
 *   app), `purpose` is signed into the first signature-chain entry, `algorithm` is
 *   "secp256k1" (alias "k256") or "ed25519". NULL means "" for path and purpose and
 *   "secp256k1" for algorithm. For an algorithm other than secp256k1 the agent's version is
 *   checked first, as the official SDKs do.
 *   The result holds `key` (32 bytes: a secp256k1 scalar or an Ed25519 seed) and
 *   `signature_chain`: [0] = app key's recoverable secp256k1 signature (r||s||v, 65 bytes) over
 *   Keccak-256(purpose ":" hex(public key)), [1] = the KMS signature over the app key.
 *   dstack_key_result_free() wipes the key and frees the result.
 * RETURN VALUE
 *   0 and *out set, or a negative error code.
 * ERRORS
 *   DSTACK_ERR_ARG, DSTACK_ERR_NOMEM, DSTACK_ERR_TRANSPORT, DSTACK_ERR_SERVER (for example
 *   "Unsupported algorithm"), DSTACK_ERR_PROTOCOL, DSTACK_ERR_UNSUPPORTED.
 * EXAMPLE
 *   struct dstack_key_result *k;
 *   if (dstack_get_key(c, "wallet/eth", "signing", NULL, &k) == 0) {
 *       use(k->key.data, k->key.len);
 *       dstack_key_result_free(k);
 *   }
 */
struct dstack_key_result {
    struct dstack_bytes key;
    struct dstack_bytes *signature_chain;
    size_t signature_chain_count;
};
int dstack_get_key(struct dstack_client *client, const char *path, const char *purpose,
                   const char *algorithm, struct dstack_key_result **out);
void dstack_key_result_free(struct dstack_key_result *result);

/*
 * NAME
 *   dstack_get_tls_key - a fresh TLS key with a certificate issued by the app CA
 * SYNOPSIS
 *   struct dstack_tls_key_options opts = DSTACK_TLS_KEY_OPTIONS_INIT;
 *   int dstack_get_tls_key(struct dstack_client *client,
 *                          const struct dstack_tls_key_options *opts,
 *                          struct dstack_tls_key_result **out);
 *   void dstack_tls_key_result_free(struct dstack_tls_key_result *result);
 * DESCRIPTION
 *   Calls GetTlsKey. Each call makes a new random P-256 key. `opts` may be NULL for the
 *   defaults (those of DSTACK_TLS_KEY_OPTIONS_INIT: empty subject, no alt names, server auth
 *   only, no RA-TLS). `usage_ra_tls` embeds an attestation of the key in the certificate
 *   (OID 1.3.6.1.4.1.62397.1.8). The validity fields and `with_app_info` are sent only when
 *   set (has_not_before / has_not_after / with_app_info), after a version check.
 *   The result holds `key` (PKCS#8 PEM, NUL-terminated) and `certificate_chain` (PEM strings,
 *   leaf first). dstack_tls_key_result_free() wipes the key and frees everything.
 * RETURN VALUE
 *   0 and *out set, or a negative error code.
 * ERRORS
 *   DSTACK_ERR_ARG, DSTACK_ERR_NOMEM, DSTACK_ERR_TRANSPORT, DSTACK_ERR_SERVER (for example
 *   "not_before must be earlier than not_after"), DSTACK_ERR_PROTOCOL, DSTACK_ERR_UNSUPPORTED.
 * EXAMPLE
 *   const char *names[] = {"app.example.com"};
 *   struct dstack_tls_key_options o = DSTACK_TLS_KEY_OPTIONS_INIT;
 *   o.subject = "app"; o.alt_names = names; o.alt_names_count = 1; o.usage_ra_tls = true;
 *   struct dstack_tls_key_result *t;
 *   if (dstack_get_tls_key(c, &o, &t) == 0) { ...; dstack_tls_key_result_free(t); }
 */
struct dstack_tls_key_options {
    const char *subject;
    const char *const *alt_names;
    size_t alt_names_count;
    bool usage_ra_tls;
    bool usage_server_auth;
    bool usage_client_auth;
    bool with_app_info;
    bool has_not_before;
    bool has_not_after;
    uint64_t not_before; /* seconds since the epoch */
    uint64_t not_after;
};
#define DSTACK_TLS_KEY_OPTIONS_INIT                                                                \
    {                                                                                              \
        .subject = "", .usage_server_auth = true                                                   \
    }
struct dstack_tls_key_result {
    char *key;
    char **certificate_chain;
    size_t certificate_chain_count;
};
int dstack_get_tls_key(struct dstack_client *client, const struct dstack_tls_key_options *opts,
                       struct dstack_tls_key_result **out);
void dstack_tls_key_result_free(struct dstack_tls_key_result *result);

/*
 * NAME
 *   dstack_get_quote, dstack_quote_replay_rtmrs - a TDX quote over caller data
 * SYNOPSIS
 *   int dstack_get_quote(struct dstack_client *client, const void *report_data, size_t len,
 *                        struct dstack_quote_result **out);
 *   int dstack_quote_replay_rtmrs(const struct dstack_quote_result *quote,
 *                                 uint8_t out_rtmrs[4][DSTACK_RTMR_SIZE]);
 *   void dstack_quote_result_free(struct dstack_quote_result *result);
 * DESCRIPTION
 *   Calls GetQuote with up to 64 bytes of report data; the agent right-pads it with zeros to
 *   64 bytes. The result holds the raw `quote`, the `event_log` JSON text, the padded
 *   `report_data`, the `vm_config` JSON text and, when the agent sent one, the serialized
 *   `attestation` (else attestation.len == 0).
 *   dstack_quote_replay_rtmrs() replays the event log like the JS SDK's replayRtmrs():
 *   for each imr 0..3, RTMR = SHA-384(RTMR || digest) from 48 zero bytes, digests shorter
 *   than 48 bytes zero-padded. Compare the output with the RTMRs inside the quote.
 * RETURN VALUE
 *   0 (and *out or out_rtmrs written), or a negative error code.
 * ERRORS
 *   DSTACK_ERR_TOO_LONG (len > 64, nothing sent), DSTACK_ERR_ARG, DSTACK_ERR_NOMEM,
 *   DSTACK_ERR_TRANSPORT, DSTACK_ERR_SERVER, DSTACK_ERR_PROTOCOL (also: an event log that
 *   is not a JSON array of events with hex digests, for the replay).
 * EXAMPLE
 *   struct dstack_quote_result *q;
 *   uint8_t nonce[32]; ...
 *   if (dstack_get_quote(c, nonce, sizeof(nonce), &q) == 0) {
 *       send_to_verifier(q->quote.data, q->quote.len, q->event_log);
 *       dstack_quote_result_free(q);
 *   }
 */
struct dstack_quote_result {
    struct dstack_bytes quote;
    char *event_log;
    uint8_t report_data[DSTACK_REPORT_DATA_MAX];
    char *vm_config;
    struct dstack_bytes attestation;
};
int dstack_get_quote(struct dstack_client *client, const void *report_data, size_t len,
                     struct dstack_quote_result **out);
int dstack_quote_replay_rtmrs(const struct dstack_quote_result *quote,
                              uint8_t out_rtmrs[4][DSTACK_RTMR_SIZE]);
void dstack_quote_result_free(struct dstack_quote_result *result);

/*
 * NAME
 *   dstack_attest - a versioned attestation (quote, event log, report data, config)
 * SYNOPSIS
 *   int dstack_attest(struct dstack_client *client, const void *report_data, size_t len,
 *                     struct dstack_bytes *out_attestation);
 *   void dstack_bytes_free(struct dstack_bytes *bytes);
 * DESCRIPTION
 *   Calls Attest with up to 64 bytes of report data (zero-padded by the agent). The
 *   attestation bytes (VersionedAttestation, first byte 0x00 for the SCALE form) are stored in
 *   *out_attestation, whose `data` the caller releases with dstack_bytes_free() (which frees
 *   the data, not the struct, and resets it to empty).
 * RETURN VALUE
 *   0, or a negative error code.
 * ERRORS
 *   As for dstack_get_quote().
 * EXAMPLE
 *   struct dstack_bytes att;
 *   if (dstack_attest(c, "hello", 5, &att) == 0) { ...; dstack_bytes_free(&att); }
 */
int dstack_attest(struct dstack_client *client, const void *report_data, size_t len,
                  struct dstack_bytes *out_attestation);
void dstack_bytes_free(struct dstack_bytes *bytes);

/*
 * NAME
 *   dstack_info - app identity and TCB information
 * SYNOPSIS
 *   int dstack_info(struct dstack_client *client, struct dstack_info_result **out);
 *   void dstack_info_result_free(struct dstack_info_result *result);
 * DESCRIPTION
 *   Calls Info. Every member is a NUL-terminated string, never NULL ("" when the agent left a
 *   field out). Identifiers and hashes are lowercase hex; `tcb_info` is JSON text with
 *   mrtd, rtmr0-3, mr_aggregated, os_image_hash, compose_hash, device_id, event_log and
 *   app_compose; `app_cert` is a PEM chain; `key_provider_info` and `vm_config` are JSON text.
 * RETURN VALUE
 *   0 and *out set, or a negative error code.
 * ERRORS
 *   DSTACK_ERR_ARG, DSTACK_ERR_NOMEM, DSTACK_ERR_TRANSPORT, DSTACK_ERR_SERVER,
 *   DSTACK_ERR_PROTOCOL.
 * EXAMPLE
 *   struct dstack_info_result *i;
 *   if (dstack_info(c, &i) == 0) { printf("%s\n", i->app_id); dstack_info_result_free(i); }
 */
struct dstack_info_result {
    char *app_id;
    char *instance_id;
    char *app_cert;
    char *tcb_info;
    char *app_name;
    char *device_id;
    char *mr_aggregated;
    char *os_image_hash;
    char *key_provider_info;
    char *compose_hash;
    char *vm_config;
    char *cloud_vendor;
    char *cloud_product;
};
int dstack_info(struct dstack_client *client, struct dstack_info_result **out);
void dstack_info_result_free(struct dstack_info_result *result);

/*
 * NAME
 *   dstack_emit_event - extend RTMR3 with an application event
 * SYNOPSIS
 *   int dstack_emit_event(struct dstack_client *client, const char *event,
 *                         const void *payload, size_t len);
 * DESCRIPTION
 *   Calls EmitEvent: the agent extends RTMR3 with SHA-384 of the runtime-event preimage
 *   (type 0x08000001, `event`, `payload`) and appends the event to the event log. Unlike the
 *   JS SDK, an error answer from the agent is reported (agents since 2026-07 no longer serve
 *   EmitEvent and answer "Service not found: EmitEvent").
 * RETURN VALUE
 *   0, or a negative error code.
 * ERRORS
 *   DSTACK_ERR_ARG (event NULL or empty), DSTACK_ERR_NOMEM, DSTACK_ERR_TRANSPORT,
 *   DSTACK_ERR_SERVER.
 * EXAMPLE
 *   dstack_emit_event(c, "model-loaded", digest, sizeof(digest));
 */
int dstack_emit_event(struct dstack_client *client, const char *event, const void *payload,
                      size_t len);

/*
 * NAME
 *   dstack_sign, dstack_verify - sign with, and verify against, the app's signing key
 * SYNOPSIS
 *   int dstack_sign(struct dstack_client *client, const char *algorithm, const void *data,
 *                   size_t len, struct dstack_sign_result **out);
 *   void dstack_sign_result_free(struct dstack_sign_result *result);
 *   int dstack_verify(struct dstack_client *client, const char *algorithm, const void *data,
 *                     size_t len, const void *signature, size_t signature_len,
 *                     const void *public_key, size_t public_key_len, bool *out_valid);
 * DESCRIPTION
 *   dstack_sign() calls Sign with `algorithm` "ed25519" (signature over the data),
 *   "secp256k1" (ECDSA over SHA-256(data)) or "secp256k1_prehashed" (`data` is the 32-byte
 *   digest). The result holds the 64-byte `signature`, the `public_key` (32 bytes Ed25519,
 *   33 bytes compressed secp256k1) and `signature_chain` = [signature, app-key signature over
 *   the public key with purpose "signing", KMS signature].
 *   dstack_verify() calls Verify and stores whether the signature is valid in *out_valid.
 *   A well-formed but wrong signature is not an error: *out_valid is false.
 * RETURN VALUE
 *   0, or a negative error code.
 * ERRORS
 *   DSTACK_ERR_ARG (NULL arguments; secp256k1_prehashed with len != 32, nothing sent),
 *   DSTACK_ERR_NOMEM, DSTACK_ERR_TRANSPORT, DSTACK_ERR_SERVER (unsupported algorithm,
 *   malformed key or signature), DSTACK_ERR_PROTOCOL.
 * EXAMPLE
 *   struct dstack_sign_result *s;
 *   bool ok;
 *   if (dstack_sign(c, "ed25519", msg, n, &s) == 0 &&
 *       dstack_verify(c, "ed25519", msg, n, s->signature.data, s->signature.len,
 *                     s->public_key.data, s->public_key.len, &ok) == 0 && ok) { ... }
 *   dstack_sign_result_free(s);
 */
struct dstack_sign_result {
    struct dstack_bytes signature;
    struct dstack_bytes *signature_chain;
    size_t signature_chain_count;
    struct dstack_bytes public_key;
};
int dstack_sign(struct dstack_client *client, const char *algorithm, const void *data, size_t len,
                struct dstack_sign_result **out);
void dstack_sign_result_free(struct dstack_sign_result *result);
int dstack_verify(struct dstack_client *client, const char *algorithm, const void *data, size_t len,
                  const void *signature, size_t signature_len, const void *public_key,
                  size_t public_key_len, bool *out_valid);

/*
 * NAME
 *   dstack_version, dstack_is_reachable - agent version and liveness
 * SYNOPSIS
 *   int dstack_version(struct dstack_client *client, struct dstack_version_result **out);
 *   void dstack_version_result_free(struct dstack_version_result *result);
 *   bool dstack_is_reachable(struct dstack_client *client);
 * DESCRIPTION
 *   dstack_version() calls Version: `version` is the agent version (e.g. "0.5.8"), `rev` its
 *   source revision. Agents older than 0.5.7 have no Version call (DSTACK_ERR_SERVER).
 *   dstack_is_reachable() calls Info with a 500 ms timeout, as the JS SDK does.
 * RETURN VALUE
 *   dstack_version(): 0 or a negative error code. dstack_is_reachable(): true when the agent
 *   answered Info successfully.
 * ERRORS
 *   DSTACK_ERR_ARG, DSTACK_ERR_NOMEM, DSTACK_ERR_TRANSPORT, DSTACK_ERR_SERVER,
 *   DSTACK_ERR_PROTOCOL.
 * EXAMPLE
 *   if (!dstack_is_reachable(c)) errx(1, "no dstack agent at %s", dstack_client_endpoint(c));
 */
struct dstack_version_result {
    char *version;
    char *rev;
};
int dstack_version(struct dstack_client *client, struct dstack_version_result **out);
void dstack_version_result_free(struct dstack_version_result *result);
bool dstack_is_reachable(struct dstack_client *client);

#ifdef __cplusplus
}
#endif

#endif /* DSTACK_CLIENT_H */
