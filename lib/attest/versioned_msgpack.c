/* SPDX-License-Identifier: Apache-2.0 */
/*
 * VersionedAttestation V1: MessagePack with named maps (spec kms-ratls.md §6.3,
 * attestation.md §6.2, guest-agent-api.md §4.12):
 *   {"version":1,
 *    "platform":{"kind":"tdx"|"gcp-tdx"|"nitro-enclave"|"aws-nitro-tpm"|"sev-snp","data":{..}},
 *    "stack":{"kind":"dstack"|"dstack-pod","data":{"report_data","runtime_events","config"
 *                                                  [,"report_data_payload"]}}}
 * Decoding accepts keys in any order, skips unknown keys (serde's default) and takes byte
 * fields as bin or as arrays of integers. Encoding follows rmp-serde's defaults as the spec
 * infers them: plain Vec<u8> (quote, report_data) as integer arrays, serde-bytes fields
 * (digest, event_payload, payload, preimage) as bin.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "attest/versioned_priv.h"

#define V1_VERSION      1
#define V1_MAX_KIND     32
#define V1_MAX_PREIMAGE DS_EVENTLOG_MAX_PREIMAGE

static const char *const kind_names[DS_ATT_PLATFORM_MAX] = {
    [DS_ATT_TDX] = "tdx",
    [DS_ATT_GCP_TDX] = "gcp-tdx",
    [DS_ATT_NITRO_ENCLAVE] = "nitro-enclave",
    [DS_ATT_SEV_SNP] = "sev-snp",
    [DS_ATT_AWS_NITRO_TPM] = "aws-nitro-tpm",
};

/* ---- decoding ------------------------------------------------------------------------------- */

static int read_u32(struct ds_reader *r, uint32_t *out)
{
    uint64_t v;
    DS_TRY(ds_mp_read_uint(r, &v));
    if (v > UINT32_MAX) {
        return -DS_E_FORMAT;
    }
    *out = (uint32_t)v;
    return 0;
}

/* preimage: bin, array of ints, or str (the JSON itself, or its hex); nil = absent. */
static int read_preimage(struct ds_reader *r, uint8_t **out, size_t *out_len)
{
    const uint8_t *s;
    size_t n;
    if (ds_mp_read_nil(r)) {
        return 0;
    }
    if (ds_mp_read_str(r, &s, &n) == 0) {
        if (n && s[0] != '{') {
            return ds_hex_decode_alloc((const char *)s, n, V1_MAX_PREIMAGE, out, out_len);
        }
        if (n > V1_MAX_PREIMAGE) {
            return -DS_E_LIMIT;
        }
        *out = malloc(n ? n : 1);
        if (!*out) {
            return -ENOMEM;
        }
        memcpy(*out, s, n);
        *out_len = n;
        return 0;
    }
    return ds_mp_read_bytes(r, V1_MAX_PREIMAGE, out, out_len);
}

static int read_tdx_event(struct ds_reader *r, struct ds_event_log *log)
{
    struct ds_event ev;
    uint32_t n;
    bool have_imr = false, have_type = false;
    uint8_t *digest = NULL;
    size_t digest_len = 0;
    int rc;

    memset(&ev, 0, sizeof(ev));
    ev.version = 1;
    DS_TRY(ds_mp_read_map(r, &n));
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t kl;
        rc = ds_mp_read_str(r, &k, &kl);
        if (rc < 0) {
            goto out;
        }
        if (ds_mp_key_is(k, kl, "imr")) {
            rc = read_u32(r, &ev.imr);
            have_imr = true;
        } else if (ds_mp_key_is(k, kl, "event_type")) {
            rc = read_u32(r, &ev.event_type);
            have_type = true;
        } else if (ds_mp_key_is(k, kl, "digest") && !digest) {
            rc = ds_mp_read_bytes(r, DS_EVENT_DIGEST_MAX, &digest, &digest_len);
        } else if (ds_mp_key_is(k, kl, "event") && !ev.name) {
            rc = ds_mp_read_string(r, DS_EVENTLOG_MAX_NAME, &ev.name);
        } else if (ds_mp_key_is(k, kl, "event_payload") && !ev.payload) {
            rc = ds_mp_read_bytes(r, DS_EVENTLOG_MAX_PAYLOAD, &ev.payload, &ev.payload_len);
        } else if (ds_mp_key_is(k, kl, "version")) {
            rc = read_u32(r, &ev.version);
        } else if (ds_mp_key_is(k, kl, "preimage") && !ev.preimage) {
            rc = read_preimage(r, &ev.preimage, &ev.preimage_len);
        } else if (ds_mp_key_is(k, kl, "digest") || ds_mp_key_is(k, kl, "event") ||
                   ds_mp_key_is(k, kl, "event_payload") || ds_mp_key_is(k, kl, "preimage")) {
            rc = -DS_E_FORMAT; /* duplicate field (serde rejects it) */
        } else {
            rc = ds_mp_skip(r);
        }
        if (rc < 0) {
            goto out;
        }
    }
    if (!have_imr || !have_type) {
        rc = -DS_E_FORMAT;
        goto out;
    }
    if (digest_len) {
        memcpy(ev.digest, digest, digest_len);
    }
    ev.digest_len = digest_len;
    rc = ds_eventlog_append(log, &ev);
out:
    free(digest);
    free(ev.name);
    free(ev.payload);
    free(ev.preimage);
    return rc;
}

static int read_event_log(struct ds_reader *r, struct ds_event_log *log)
{
    uint32_t n;
    DS_TRY(ds_mp_read_array(r, &n));
    if (n > DS_EVENTLOG_MAX_EVENTS) {
        return -DS_E_LIMIT;
    }
    for (uint32_t i = 0; i < n; i++) {
        DS_TRY(read_tdx_event(r, log));
    }
    return 0;
}

/* TDX / GCP-TDX platform data: quote + event_log (+ tpm_quote, skipped). */
static int read_tdx_data(struct ds_reader *r, struct ds_attestation *a)
{
    uint32_t n;
    bool have_quote = false;
    DS_TRY(ds_mp_read_map(r, &n));
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t kl;
        DS_TRY(ds_mp_read_str(r, &k, &kl));
        if (ds_mp_key_is(k, kl, "quote")) {
            if (have_quote) {
                return -DS_E_FORMAT;
            }
            DS_TRY(ds_mp_read_bytes(r, DS_QUOTE_MAX_SIZE, &a->quote, &a->quote_len));
            have_quote = true;
        } else if (ds_mp_key_is(k, kl, "event_log")) {
            DS_TRY(read_event_log(r, a->event_log));
        } else {
            DS_TRY(ds_mp_skip(r));
        }
    }
    return have_quote ? 0 : -DS_E_FORMAT;
}

/* {"kind": K, "data": {...}} in either order: data is parsed once kind is known. */
static int read_tagged(struct ds_reader *r, char **out_kind, struct ds_reader *out_data)
{
    uint32_t n;
    char *kind = NULL;
    bool have_data = false;
    int rc = 0;

    DS_TRY(ds_mp_read_map(r, &n));
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        const uint8_t *k;
        size_t kl;
        rc = ds_mp_read_str(r, &k, &kl);
        if (rc < 0) {
            break;
        }
        if (ds_mp_key_is(k, kl, "kind") && !kind) {
            rc = ds_mp_read_string(r, V1_MAX_KIND, &kind);
        } else if (ds_mp_key_is(k, kl, "data") && !have_data) {
            size_t start = r->off;
            rc = ds_mp_skip(r);
            ds_rd_init(out_data, r->data + start, r->off - start);
            have_data = true;
        } else if (ds_mp_key_is(k, kl, "kind") || ds_mp_key_is(k, kl, "data")) {
            rc = -DS_E_FORMAT;
        } else {
            rc = ds_mp_skip(r);
        }
    }
    if (rc == 0 && (!kind || !have_data)) {
        rc = -DS_E_FORMAT;
    }
    if (rc < 0) {
        free(kind);
        return rc;
    }
    *out_kind = kind;
    return 0;
}

static int read_platform(struct ds_reader *r, struct ds_attestation *a)
{
    char *kind = NULL;
    struct ds_reader data;
    int rc;

    DS_TRY(read_tagged(r, &kind, &data));
    rc = -DS_E_FORMAT;
    for (int p = 0; p < DS_ATT_PLATFORM_MAX; p++) {
        if (strcmp(kind, kind_names[p]) == 0) {
            a->platform = (enum ds_att_platform)p;
            rc = 0;
        }
    }
    free(kind);
    DS_TRY(rc);
    if (a->platform == DS_ATT_TDX || a->platform == DS_ATT_GCP_TDX) {
        DS_TRY(read_tdx_data(&data, a));
    } else {
        uint32_t n;
        DS_TRY(ds_mp_read_map(&data, &n)); /* other platforms: structure checked by the skip */
    }
    return 0;
}

static int read_runtime_events(struct ds_reader *r, struct ds_attestation *a)
{
    uint32_t n;
    DS_TRY(ds_mp_read_array(r, &n));
    if (n > DS_EVENTLOG_MAX_EVENTS) {
        return -DS_E_LIMIT;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t m, version = 1;
        char *name = NULL;
        uint8_t *payload = NULL;
        size_t payload_len = 0;
        bool have_payload = false;
        int rc = ds_mp_read_map(r, &m);
        for (uint32_t j = 0; rc == 0 && j < m; j++) {
            const uint8_t *k;
            size_t kl;
            rc = ds_mp_read_str(r, &k, &kl);
            if (rc < 0) {
                break;
            }
            if (ds_mp_key_is(k, kl, "event") && !name) {
                rc = ds_mp_read_string(r, DS_EVENTLOG_MAX_NAME, &name);
            } else if (ds_mp_key_is(k, kl, "payload") && !have_payload) {
                rc = ds_mp_read_bytes(r, DS_EVENTLOG_MAX_PAYLOAD, &payload, &payload_len);
                have_payload = true;
            } else if (ds_mp_key_is(k, kl, "version")) {
                rc = read_u32(r, &version);
            } else if (ds_mp_key_is(k, kl, "event") || ds_mp_key_is(k, kl, "payload")) {
                rc = -DS_E_FORMAT;
            } else {
                rc = ds_mp_skip(r);
            }
        }
        if (rc == 0 && !name) {
            rc = -DS_E_FORMAT;
        }
        if (rc == 0) {
            rc = ds_att_add_runtime(a, name, payload, payload_len, version);
        }
        free(name);
        free(payload);
        DS_TRY(rc);
    }
    return 0;
}

static int read_stack_data(struct ds_reader *r, struct ds_attestation *a)
{
    uint32_t n;
    bool have_rd = false, have_events = false, have_config = false;
    DS_TRY(ds_mp_read_map(r, &n));
    for (uint32_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t kl;
        DS_TRY(ds_mp_read_str(r, &k, &kl));
        if (ds_mp_key_is(k, kl, "report_data") && !have_rd) {
            DS_TRY(ds_mp_read_fixed(r, a->report_data, DS_REPORT_DATA_SIZE));
            have_rd = true;
        } else if (ds_mp_key_is(k, kl, "runtime_events") && !have_events) {
            DS_TRY(read_runtime_events(r, a));
            have_events = true;
        } else if (ds_mp_key_is(k, kl, "config") && !have_config) {
            char *c = NULL;
            DS_TRY(ds_mp_read_string(r, DS_ATTESTATION_MAX_CONFIG, &c));
            free(a->config);
            a->config = c;
            have_config = true;
        } else if (ds_mp_key_is(k, kl, "report_data_payload") && !a->report_data_payload) {
            if (!ds_mp_read_nil(r)) {
                DS_TRY(ds_mp_read_string(r, DS_ATTESTATION_MAX_CONFIG, &a->report_data_payload));
            }
        } else if (ds_mp_key_is(k, kl, "report_data") || ds_mp_key_is(k, kl, "runtime_events") ||
                   ds_mp_key_is(k, kl, "config") || ds_mp_key_is(k, kl, "report_data_payload")) {
            return -DS_E_FORMAT;
        } else {
            DS_TRY(ds_mp_skip(r));
        }
    }
    return have_rd ? 0 : -DS_E_FORMAT;
}

static int read_stack(struct ds_reader *r, struct ds_attestation *a)
{
    char *kind = NULL;
    struct ds_reader data;
    DS_TRY(read_tagged(r, &kind, &data));
    int rc = 0;
    if (strcmp(kind, "dstack-pod") == 0) {
        a->pod = true;
    } else if (strcmp(kind, "dstack") != 0) {
        rc = -DS_E_FORMAT;
    }
    free(kind);
    DS_TRY(rc);
    DS_TRY(read_stack_data(&data, a));
    if (a->pod && !a->report_data_payload) {
        return -DS_E_FORMAT;
    }
    return 0;
}

int ds_att_decode_v1(const uint8_t *data, size_t len, struct ds_attestation **out)
{
    struct ds_attestation *a = NULL;
    struct ds_reader r;
    uint32_t n;
    bool have_version = false, have_platform = false, have_stack = false;
    int rc;

    DS_TRY(ds_att_alloc(&a));
    ds_rd_init(&r, data, len);
    rc = ds_mp_read_map(&r, &n);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const uint8_t *k;
        size_t kl;
        rc = ds_mp_read_str(&r, &k, &kl);
        if (rc < 0) {
            break;
        }
        if (ds_mp_key_is(k, kl, "version") && !have_version) {
            uint64_t v;
            rc = ds_mp_read_uint(&r, &v);
            if (rc == 0 && v != V1_VERSION) {
                rc = -DS_E_UNSUPPORTED;
            }
            have_version = true;
        } else if (ds_mp_key_is(k, kl, "platform") && !have_platform) {
            rc = read_platform(&r, a);
            have_platform = true;
        } else if (ds_mp_key_is(k, kl, "stack") && !have_stack) {
            rc = read_stack(&r, a);
            have_stack = true;
        } else if (ds_mp_key_is(k, kl, "version") || ds_mp_key_is(k, kl, "platform") ||
                   ds_mp_key_is(k, kl, "stack")) {
            rc = -DS_E_FORMAT;
        } else {
            rc = ds_mp_skip(&r);
        }
    }
    if (rc == 0 && (!have_version || !have_platform || !have_stack)) {
        rc = -DS_E_FORMAT;
    }
    if (rc == 0 && ds_rd_left(&r) != 0) {
        rc = -DS_E_FORMAT; /* trailing bytes */
    }
    if (rc < 0) {
        ds_attestation_free(a);
        return rc;
    }
    a->decoded_from = DS_ATT_WIRE_V1;
    *out = a;
    return 0;
}

/* ---- encoding ------------------------------------------------------------------------------- */

static int pack_u32(msgpack_packer *pk, uint32_t v)
{
    return msgpack_pack_uint32(pk, v) == 0 ? 0 : -ENOMEM;
}

static int pack_map(msgpack_packer *pk, size_t n)
{
    return msgpack_pack_map(pk, n) == 0 ? 0 : -ENOMEM;
}

static int pack_event(msgpack_packer *pk, const struct ds_event *ev)
{
    bool v2 = ev->version == 2;
    DS_TRY(pack_map(pk, v2 ? 7 : 5));
    DS_TRY(ds_mp_pack_str(pk, "imr"));
    DS_TRY(pack_u32(pk, ev->imr));
    DS_TRY(ds_mp_pack_str(pk, "event_type"));
    DS_TRY(pack_u32(pk, ev->event_type));
    DS_TRY(ds_mp_pack_str(pk, "digest"));
    DS_TRY(ds_mp_pack_bin(pk, ev->digest, ev->digest_len));
    DS_TRY(ds_mp_pack_str(pk, "event"));
    DS_TRY(ds_mp_pack_str(pk, ev->name ? ev->name : ""));
    DS_TRY(ds_mp_pack_str(pk, "event_payload"));
    DS_TRY(ds_mp_pack_bin(pk, ev->payload, ev->payload_len));
    if (v2) {
        DS_TRY(ds_mp_pack_str(pk, "version"));
        DS_TRY(pack_u32(pk, 2));
        DS_TRY(ds_mp_pack_str(pk, "preimage"));
        DS_TRY(ds_mp_pack_bin(pk, ev->preimage, ev->preimage_len));
    }
    return 0;
}

static int pack_attestation(msgpack_packer *pk, const struct ds_attestation *a)
{
    const struct ds_event_log *rt = a->runtime_events;

    DS_TRY(pack_map(pk, 3));
    DS_TRY(ds_mp_pack_str(pk, "version"));
    DS_TRY(pack_u32(pk, V1_VERSION));

    DS_TRY(ds_mp_pack_str(pk, "platform"));
    DS_TRY(pack_map(pk, 2));
    DS_TRY(ds_mp_pack_str(pk, "kind"));
    DS_TRY(ds_mp_pack_str(pk, kind_names[DS_ATT_TDX]));
    DS_TRY(ds_mp_pack_str(pk, "data"));
    DS_TRY(pack_map(pk, 2));
    DS_TRY(ds_mp_pack_str(pk, "quote"));
    DS_TRY(ds_mp_pack_int_array(pk, a->quote, a->quote_len));
    DS_TRY(ds_mp_pack_str(pk, "event_log"));
    if (msgpack_pack_array(pk, a->event_log->count) != 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < a->event_log->count; i++) {
        DS_TRY(pack_event(pk, &a->event_log->events[i]));
    }

    DS_TRY(ds_mp_pack_str(pk, "stack"));
    DS_TRY(pack_map(pk, 2));
    DS_TRY(ds_mp_pack_str(pk, "kind"));
    DS_TRY(ds_mp_pack_str(pk, a->pod ? "dstack-pod" : "dstack"));
    DS_TRY(ds_mp_pack_str(pk, "data"));
    DS_TRY(pack_map(pk, a->pod ? 4 : 3));
    DS_TRY(ds_mp_pack_str(pk, "report_data"));
    DS_TRY(ds_mp_pack_int_array(pk, a->report_data, DS_REPORT_DATA_SIZE));
    DS_TRY(ds_mp_pack_str(pk, "runtime_events"));
    if (msgpack_pack_array(pk, rt->count) != 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < rt->count; i++) {
        const struct ds_event *ev = &rt->events[i];
        DS_TRY(pack_map(pk, ev->version == 2 ? 3 : 2));
        DS_TRY(ds_mp_pack_str(pk, "event"));
        DS_TRY(ds_mp_pack_str(pk, ev->name));
        DS_TRY(ds_mp_pack_str(pk, "payload"));
        DS_TRY(ds_mp_pack_bin(pk, ev->payload, ev->payload_len));
        if (ev->version == 2) {
            DS_TRY(ds_mp_pack_str(pk, "version"));
            DS_TRY(pack_u32(pk, 2));
        }
    }
    DS_TRY(ds_mp_pack_str(pk, "config"));
    DS_TRY(ds_mp_pack_str(pk, a->config));
    if (a->pod) {
        DS_TRY(ds_mp_pack_str(pk, "report_data_payload"));
        DS_TRY(ds_mp_pack_str(pk, a->report_data_payload ? a->report_data_payload : ""));
    }
    return 0;
}

int ds_att_encode_v1(const struct ds_attestation *a, uint8_t **out, size_t *out_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int r;

    if (a->platform != DS_ATT_TDX) {
        return -DS_E_UNSUPPORTED;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    r = pack_attestation(&pk, a);
    if (r == 0) {
        r = ds_memdup(sb.data, sb.size, DS_ATTESTATION_MAX_SIZE, out, out_len);
    }
    msgpack_sbuffer_destroy(&sb);
    return r;
}
