/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VersionedAttestation container (spec kms-ratls.md §6.3, attestation.md §6.2,
 * guest-agent-api.md §4.12): construction from a quote and event logs, the legacy certificate
 * form, stripping for certificate embedding, the V0 (SCALE) codec and the dispatch between V0
 * and V1 (MessagePack, versioned_msgpack.c). The SCALE layouts are written out field by field
 * so the code reads like the wire format.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "attest/versioned_priv.h"

#define V0_TAG             0x00
#define SCALE_MAX_EVIDENCE DS_ATTESTATION_MAX_SIZE /* Vec<u8> of non-TDX evidence */
#define SCALE_MAX_CERTS    64                      /* SEV-SNP cert_chain entries */
#define SCALE_MAX_PCRS     64                      /* TPM quote pcr_values / event_log */
#define TPM_PLATFORM_MAX   3                       /* TpmQuote.platform u8 */
#define STRIP_ACPI_PAYLOAD DS_ACPI_DATA_PAYLOAD

static const char *const platform_names[DS_ATT_PLATFORM_MAX] = {
    [DS_ATT_TDX] = "tdx",
    [DS_ATT_GCP_TDX] = "gcp-tdx",
    [DS_ATT_NITRO_ENCLAVE] = "nitro-enclave",
    [DS_ATT_SEV_SNP] = "sev-snp",
    [DS_ATT_AWS_NITRO_TPM] = "aws-nitro-tpm",
};

const char *ds_att_platform_name(enum ds_att_platform p)
{
    if ((unsigned)p >= DS_ATT_PLATFORM_MAX) {
        return "unknown";
    }
    return platform_names[p];
}

void ds_attestation_free(struct ds_attestation *a)
{
    if (!a) {
        return;
    }
    free(a->quote);
    ds_eventlog_free(a->event_log);
    free(a->platform_raw);
    ds_eventlog_free(a->runtime_events);
    free(a->config);
    free(a->report_data_payload);
    free(a);
}

int ds_att_alloc(struct ds_attestation **out)
{
    struct ds_attestation *a = calloc(1, sizeof(*a));
    int r = -ENOMEM;
    if (!a) {
        return -ENOMEM;
    }
    a->config = strdup("");
    if (!a->config) {
        goto out;
    }
    r = ds_eventlog_new(&a->event_log);
    if (r == 0) {
        r = ds_eventlog_new(&a->runtime_events);
    }
out:
    if (r < 0) {
        ds_attestation_free(a);
        return r;
    }
    *out = a;
    return 0;
}

int ds_att_add_runtime(struct ds_attestation *a, const char *name, const uint8_t *payload,
                       size_t payload_len, uint32_t version)
{
    return ds_eventlog_append_runtime(a->runtime_events, name, payload, payload_len, version);
}

static int set_string(char **dst, const char *s)
{
    char *c = strdup(s ? s : "");
    if (!c) {
        return -ENOMEM;
    }
    free(*dst);
    *dst = c;
    return 0;
}

static int copy_log(struct ds_event_log *dst, const struct ds_event_log *src)
{
    for (size_t i = 0; src && i < src->count; i++) {
        DS_TRY(ds_eventlog_append(dst, &src->events[i]));
    }
    return 0;
}

/* Runtime events of a log, as the stack's runtime_events list. */
static int copy_runtime(struct ds_attestation *a, const struct ds_event_log *src, bool all_types)
{
    for (size_t i = 0; src && i < src->count; i++) {
        const struct ds_event *ev = &src->events[i];
        if (!all_types && !ds_event_is_runtime(ev)) {
            continue;
        }
        DS_TRY(ds_att_add_runtime(a, ev->name, ev->payload, ev->payload_len,
                                  ev->version ? ev->version : 1));
    }
    return 0;
}

int ds_attestation_new_tdx(const uint8_t *quote, size_t quote_len,
                           const struct ds_event_log *event_log,
                           const struct ds_event_log *runtime_events, const uint8_t *report_data,
                           const char *config, struct ds_attestation **out)
{
    struct ds_attestation *a = NULL;
    int r;

    if ((!quote && quote_len) || !out) {
        return -EINVAL;
    }
    if (quote_len > DS_QUOTE_MAX_SIZE || (config && strlen(config) > DS_ATTESTATION_MAX_CONFIG)) {
        return -DS_E_LIMIT;
    }
    r = ds_att_alloc(&a);
    if (r < 0) {
        return r;
    }
    a->platform = DS_ATT_TDX;
    if (report_data) {
        memcpy(a->report_data, report_data, DS_REPORT_DATA_SIZE);
    } else {
        struct ds_quote q;
        r = ds_quote_parse(quote, quote_len, &q);
        if (r < 0) {
            goto out;
        }
        memcpy(a->report_data, ds_quote_report_data(&q), DS_REPORT_DATA_SIZE);
    }
    if (quote_len) {
        a->quote = malloc(quote_len);
        if (!a->quote) {
            r = -ENOMEM;
            goto out;
        }
        memcpy(a->quote, quote, quote_len);
        a->quote_len = quote_len;
    }
    r = copy_log(a->event_log, event_log);
    if (r == 0) {
        r = runtime_events ? copy_runtime(a, runtime_events, true)
                           : copy_runtime(a, event_log, false);
    }
    if (r == 0) {
        r = set_string(&a->config, config);
    }
out:
    if (r < 0) {
        ds_attestation_free(a);
        return r;
    }
    *out = a;
    return 0;
}

int ds_attestation_from_legacy(const uint8_t *quote, size_t quote_len, const char *event_log_json,
                               size_t json_len, struct ds_attestation **out)
{
    struct ds_event_log *log = NULL;
    int r = ds_eventlog_parse_json(event_log_json, json_len, &log);
    if (r < 0) {
        return r;
    }
    r = ds_attestation_new_tdx(quote, quote_len, log, NULL, NULL, NULL, out);
    ds_eventlog_free(log);
    return r;
}

/* ---- stripping (§6.3) ----------------------------------------------------------------------- */

static bool is_acpi_data(const struct ds_event *ev)
{
    return ev->imr == 0 && ev->event_type == DS_EV_PLATFORM_CONFIG_FLAGS;
}

static int strip_log(const struct ds_event_log *src, bool keep_acpi, struct ds_event_log *dst)
{
    for (size_t i = 0; i < src->count; i++) {
        struct ds_event ev = src->events[i];
        if (keep_acpi && is_acpi_data(&ev)) {
            ev.payload = (uint8_t *)STRIP_ACPI_PAYLOAD;
            ev.payload_len = strlen(STRIP_ACPI_PAYLOAD);
        } else if (ev.imr == DS_RUNTIME_EVENT_IMR) {
            if (ds_event_is_runtime(&ev)) {
                ev.digest_len = 0;
            } else {
                ev.payload = NULL;
                ev.payload_len = 0;
                ev.preimage = NULL;
                ev.preimage_len = 0;
            }
        } else {
            continue;
        }
        DS_TRY(ds_eventlog_append(dst, &ev));
    }
    return 0;
}

int ds_attestation_strip(const struct ds_attestation *a, struct ds_attestation **out)
{
    struct ds_attestation *c = NULL;
    int r = ds_att_alloc(&c);
    if (r < 0) {
        return r;
    }
    c->platform = a->platform;
    c->pod = a->pod;
    memcpy(c->report_data, a->report_data, DS_REPORT_DATA_SIZE);
    if (a->quote_len) {
        c->quote = malloc(a->quote_len);
        if (!c->quote) {
            r = -ENOMEM;
            goto out;
        }
        memcpy(c->quote, a->quote, a->quote_len);
        c->quote_len = a->quote_len;
    }
    if (a->platform_raw_len) {
        c->platform_raw = malloc(a->platform_raw_len);
        if (!c->platform_raw) {
            r = -ENOMEM;
            goto out;
        }
        memcpy(c->platform_raw, a->platform_raw, a->platform_raw_len);
        c->platform_raw_len = a->platform_raw_len;
    }
    if (a->platform == DS_ATT_TDX || a->platform == DS_ATT_GCP_TDX) {
        r = strip_log(a->event_log, a->platform == DS_ATT_TDX, c->event_log);
    } else {
        r = copy_log(c->event_log, a->event_log);
    }
    if (r == 0) {
        r = copy_log(c->runtime_events, a->runtime_events);
    }
    if (r == 0) {
        r = set_string(&c->config, a->config);
    }
    if (r == 0 && a->report_data_payload) {
        r = set_string(&c->report_data_payload, a->report_data_payload);
    }
out:
    if (r < 0) {
        ds_attestation_free(c);
        return r;
    }
    *out = c;
    return 0;
}

/* ---- V0 (SCALE) decoding -------------------------------------------------------------------- */

static int get_u32(struct ds_reader *r, uint32_t *v)
{
    return ds_rd_u32le(r, v);
}

/* TdxEvent = imr u32, event_type u32, digest Vec<u8>, event String, event_payload Vec<u8>. */
static int v0_get_tdx_event(struct ds_reader *r, struct ds_event_log *log)
{
    struct ds_event ev;
    const uint8_t *digest;
    size_t digest_len;
    char *name = NULL;
    int rc;

    memset(&ev, 0, sizeof(ev));
    ev.version = 1;
    DS_TRY(get_u32(r, &ev.imr));
    DS_TRY(get_u32(r, &ev.event_type));
    DS_TRY(ds_scale_get_bytes(r, DS_EVENT_DIGEST_MAX, &digest, &digest_len));
    memcpy(ev.digest, digest, digest_len);
    ev.digest_len = digest_len;
    DS_TRY(ds_scale_get_string(r, DS_EVENTLOG_MAX_NAME, &name));
    ev.name = name;
    const uint8_t *payload;
    rc = ds_scale_get_bytes(r, DS_EVENTLOG_MAX_PAYLOAD, &payload, &ev.payload_len);
    if (rc == 0) {
        ev.payload = (uint8_t *)payload;
        rc = ds_eventlog_append(log, &ev);
    }
    free(name);
    return rc;
}

static int v0_get_event_log(struct ds_reader *r, struct ds_event_log *log)
{
    size_t n;
    DS_TRY(ds_scale_get_len(r, DS_EVENTLOG_MAX_EVENTS, &n));
    for (size_t i = 0; i < n; i++) {
        DS_TRY(v0_get_tdx_event(r, log));
    }
    return 0;
}

static int v0_get_quote(struct ds_reader *r, struct ds_attestation *a)
{
    const uint8_t *q;
    size_t n;
    DS_TRY(ds_scale_get_bytes(r, DS_QUOTE_MAX_SIZE, &q, &n));
    if (n) {
        a->quote = malloc(n);
        if (!a->quote) {
            return -ENOMEM;
        }
        memcpy(a->quote, q, n);
        a->quote_len = n;
    }
    return v0_get_event_log(r, a->event_log);
}

/* TpmQuote = message, signature Vec<u8>; pcr_values Vec<{u32, String, Vec<u8>}>; ak_cert
 * Vec<u8>; platform u8; event_log Vec<{u32, Vec<u8>}>. Framing only. */
static int v0_skip_tpm_quote(struct ds_reader *r)
{
    const uint8_t *p;
    size_t n, count;
    uint32_t u;
    uint8_t platform;
    char *s = NULL;

    DS_TRY(ds_scale_get_bytes(r, SCALE_MAX_EVIDENCE, &p, &n));
    DS_TRY(ds_scale_get_bytes(r, SCALE_MAX_EVIDENCE, &p, &n));
    DS_TRY(ds_scale_get_len(r, SCALE_MAX_PCRS, &count));
    for (size_t i = 0; i < count; i++) {
        DS_TRY(get_u32(r, &u));
        DS_TRY(ds_scale_get_string(r, DS_EVENTLOG_MAX_NAME, &s));
        free(s);
        s = NULL;
        DS_TRY(ds_scale_get_bytes(r, DS_EVENT_DIGEST_MAX, &p, &n));
    }
    DS_TRY(ds_scale_get_bytes(r, SCALE_MAX_EVIDENCE, &p, &n));
    DS_TRY(ds_rd_u8(r, &platform));
    if (platform > TPM_PLATFORM_MAX) {
        return -DS_E_FORMAT;
    }
    DS_TRY(ds_scale_get_len(r, DS_EVENTLOG_MAX_EVENTS, &count));
    for (size_t i = 0; i < count; i++) {
        DS_TRY(get_u32(r, &u));
        DS_TRY(ds_scale_get_bytes(r, DS_EVENT_DIGEST_MAX, &p, &n));
    }
    return 0;
}

static int v0_skip_platform(struct ds_reader *r, enum ds_att_platform p)
{
    const uint8_t *b;
    size_t n, count;
    char *s = NULL;

    switch (p) {
    case DS_ATT_GCP_TDX:
        return v0_skip_tpm_quote(r);
    case DS_ATT_NITRO_ENCLAVE:
    case DS_ATT_AWS_NITRO_TPM:
        return ds_scale_get_bytes(r, SCALE_MAX_EVIDENCE, &b, &n);
    case DS_ATT_SEV_SNP:
        DS_TRY(ds_scale_get_bytes(r, SCALE_MAX_EVIDENCE, &b, &n));
        DS_TRY(ds_scale_get_len(r, SCALE_MAX_CERTS, &count));
        for (size_t i = 0; i < count; i++) {
            DS_TRY(ds_scale_get_bytes(r, SCALE_MAX_EVIDENCE, &b, &n));
        }
        DS_TRY(ds_scale_get_string(r, DS_ATTESTATION_MAX_CONFIG, &s));
        free(s);
        return 0;
    default:
        return -DS_E_FORMAT;
    }
}

static int v0_decode(const uint8_t *data, size_t len, struct ds_attestation *a)
{
    struct ds_reader r;
    uint8_t tag, variant;
    size_t n;

    ds_rd_init(&r, data, len);
    DS_TRY(ds_rd_u8(&r, &tag));
    if (tag != V0_TAG) {
        return -DS_E_FORMAT;
    }
    DS_TRY(ds_rd_u8(&r, &variant));
    if (variant >= DS_ATT_PLATFORM_MAX) {
        return -DS_E_FORMAT;
    }
    a->platform = (enum ds_att_platform)variant;
    if (a->platform == DS_ATT_TDX || a->platform == DS_ATT_GCP_TDX) {
        DS_TRY(v0_get_quote(&r, a));
    }
    if (a->platform != DS_ATT_TDX) {
        size_t start = r.off;
        DS_TRY(v0_skip_platform(&r, a->platform));
        a->platform_raw_len = r.off - start;
        a->platform_raw = malloc(a->platform_raw_len ? a->platform_raw_len : 1);
        if (!a->platform_raw) {
            return -ENOMEM;
        }
        memcpy(a->platform_raw, data + start, a->platform_raw_len);
    }
    DS_TRY(ds_scale_get_len(&r, DS_EVENTLOG_MAX_EVENTS, &n));
    for (size_t i = 0; i < n; i++) {
        char *name = NULL;
        const uint8_t *payload;
        size_t payload_len;
        DS_TRY(ds_scale_get_string(&r, DS_EVENTLOG_MAX_NAME, &name));
        int rc = ds_scale_get_bytes(&r, DS_EVENTLOG_MAX_PAYLOAD, &payload, &payload_len);
        if (rc == 0) {
            rc = ds_att_add_runtime(a, name, payload, payload_len, 1);
        }
        free(name);
        DS_TRY(rc);
    }
    DS_TRY(ds_rd_copy(&r, a->report_data, DS_REPORT_DATA_SIZE));
    char *config = NULL;
    DS_TRY(ds_scale_get_string(&r, DS_ATTESTATION_MAX_CONFIG, &config));
    free(a->config);
    a->config = config;
    if (ds_rd_left(&r) != 0) {
        return -DS_E_FORMAT; /* trailing bytes */
    }
    a->decoded_from = DS_ATT_WIRE_V0;
    return 0;
}

/* ---- V0 (SCALE) encoding -------------------------------------------------------------------- */

static int v0_put_event_log(struct ds_buf *b, const struct ds_event_log *log)
{
    DS_TRY(ds_scale_put_compact(b, log->count));
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        DS_TRY(ds_buf_u32le(b, ev->imr));
        DS_TRY(ds_buf_u32le(b, ev->event_type));
        DS_TRY(ds_scale_put_bytes(b, ev->digest, ev->digest_len));
        DS_TRY(ds_scale_put_bytes(b, ev->name ? ev->name : "", ev->name ? strlen(ev->name) : 0));
        DS_TRY(ds_scale_put_bytes(b, ev->payload, ev->payload_len));
    }
    return 0;
}

static int v0_encode(const struct ds_attestation *a, struct ds_buf *b)
{
    DS_TRY(ds_buf_u8(b, V0_TAG));
    DS_TRY(ds_buf_u8(b, (uint8_t)a->platform));
    if (a->platform == DS_ATT_TDX || a->platform == DS_ATT_GCP_TDX) {
        DS_TRY(ds_scale_put_bytes(b, a->quote, a->quote_len));
        DS_TRY(v0_put_event_log(b, a->event_log));
    }
    if (a->platform != DS_ATT_TDX) {
        if (!a->platform_raw) {
            return -DS_E_UNSUPPORTED;
        }
        DS_TRY(ds_buf_append(b, a->platform_raw, a->platform_raw_len));
    }
    DS_TRY(ds_scale_put_compact(b, a->runtime_events->count));
    for (size_t i = 0; i < a->runtime_events->count; i++) {
        const struct ds_event *ev = &a->runtime_events->events[i];
        if (ev->version != 1) {
            return -DS_E_UNSUPPORTED; /* V0 cannot say "version 2" */
        }
        DS_TRY(ds_scale_put_bytes(b, ev->name, strlen(ev->name)));
        DS_TRY(ds_scale_put_bytes(b, ev->payload, ev->payload_len));
    }
    DS_TRY(ds_buf_append(b, a->report_data, DS_REPORT_DATA_SIZE));
    DS_TRY(ds_scale_put_bytes(b, a->config, strlen(a->config)));
    return 0;
}

/* ---- dispatch ------------------------------------------------------------------------------- */

int ds_attestation_decode(const uint8_t *data, size_t len, struct ds_attestation **out)
{
    struct ds_attestation *a = NULL;
    int r;

    if (!data || !out) {
        return -EINVAL;
    }
    if (len > DS_ATTESTATION_MAX_SIZE) {
        return -DS_E_LIMIT;
    }
    if (len == 0) {
        return -DS_E_TRUNCATED;
    }
    if (data[0] == V0_TAG) {
        r = ds_att_alloc(&a);
        if (r == 0) {
            r = v0_decode(data, len, a);
        }
    } else if ((data[0] >= 0x80 && data[0] <= 0x8f) || data[0] == 0xde || data[0] == 0xdf) {
        r = ds_att_decode_v1(data, len, &a);
    } else {
        r = -DS_E_FORMAT;
    }
    if (r < 0) {
        ds_attestation_free(a);
        return r;
    }
    *out = a;
    return 0;
}

static bool has_v2_runtime(const struct ds_attestation *a)
{
    for (size_t i = 0; i < a->runtime_events->count; i++) {
        if (a->runtime_events->events[i].version == 2) {
            return true;
        }
    }
    return false;
}

int ds_attestation_encode(const struct ds_attestation *a, enum ds_att_wire wire, uint8_t **out,
                          size_t *out_len)
{
    struct ds_buf b;
    int r;

    if (!a || !out || !out_len) {
        return -EINVAL;
    }
    if (wire == DS_ATT_WIRE_AUTO) {
        wire = (has_v2_runtime(a) || a->pod) ? DS_ATT_WIRE_V1 : DS_ATT_WIRE_V0;
    }
    if (wire == DS_ATT_WIRE_V1) {
        return ds_att_encode_v1(a, out, out_len);
    }
    if (a->pod) {
        return -DS_E_UNSUPPORTED; /* dstack-pod exists only in V1 */
    }
    ds_buf_init(&b, DS_ATTESTATION_MAX_SIZE);
    r = v0_encode(a, &b);
    if (r < 0) {
        ds_buf_done(&b);
        return r;
    }
    ds_buf_steal(&b, out, out_len);
    return 0;
}
