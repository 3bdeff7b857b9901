/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The dstack JSON event-log form (spec attestation.md §4.2, guest-agent-api.md §4.9): the
 * parser (jansson, strict types, every hex field bounded) and the serializer, which writes the
 * exact key order and compact form the Rust guest agent produces, in full, stripped (GetQuote)
 * and with-preimage variants.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "attest/eventlog_priv.h"
#include "dstack/eventlog.h"

#define U32_MAX_AS_LL   0xFFFFFFFFLL
#define SHA1_DIGEST_LEN 20

/* ---- parser ------------------------------------------------------------------------------- */

static int get_u32(const json_t *obj, const char *key, bool required, uint32_t *out)
{
    const json_t *v = json_object_get(obj, key);
    if (!v) {
        return required ? -DS_E_FORMAT : -DS_E_NOT_FOUND;
    }
    if (!json_is_integer(v)) {
        return -DS_E_FORMAT;
    }
    json_int_t n = json_integer_value(v);
    if (n < 0 || n > U32_MAX_AS_LL) {
        return -DS_E_FORMAT;
    }
    *out = (uint32_t)n;
    return 0;
}

/* Optional hex string field. A missing key or null gives NULL/0 (serde `default`). */
static int get_hex(const json_t *obj, const char *key, size_t max, uint8_t **out, size_t *out_len)
{
    const json_t *v = json_object_get(obj, key);
    *out = NULL;
    *out_len = 0;
    if (!v || json_is_null(v)) {
        return 0;
    }
    if (!json_is_string(v)) {
        return -DS_E_FORMAT;
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (n / 2 > max) {
        return -DS_E_LIMIT;
    }
    if (n == 0) {
        return 0;
    }
    return ds_hex_decode_alloc(s, n, max, out, out_len);
}

static bool digest_len_ok(size_t n)
{
    return n == 0 || n == SHA1_DIGEST_LEN || n == DS_SHA256_LEN || n == DS_SHA384_LEN ||
           n == DS_SHA512_LEN;
}

static int parse_event(const json_t *obj, struct ds_event_log *log)
{
    struct ds_event ev;
    uint8_t *digest = NULL, *payload = NULL, *preimage = NULL;
    size_t digest_len, payload_len, preimage_len;
    const json_t *name;
    int r;

    memset(&ev, 0, sizeof(ev));
    if (!json_is_object(obj)) {
        return -DS_E_FORMAT;
    }
    r = get_u32(obj, "imr", true, &ev.imr);
    if (r < 0) {
        goto out;
    }
    if (ev.imr >= DS_RTMR_COUNT) {
        r = -DS_E_FORMAT;
        goto out;
    }
    r = get_u32(obj, "event_type", true, &ev.event_type);
    if (r < 0) {
        goto out;
    }
    r = get_u32(obj, "version", false, &ev.version);
    if (r == -DS_E_NOT_FOUND) {
        ev.version = 1;
    } else if (r < 0) {
        goto out;
    } else if (ev.version != 1 && ev.version != 2) {
        r = -DS_E_FORMAT;
        goto out;
    }
    name = json_object_get(obj, "event");
    if (!json_is_string(name)) {
        r = -DS_E_FORMAT;
        goto out;
    }
    if (json_string_length(name) > DS_EVENTLOG_MAX_NAME) {
        r = -DS_E_LIMIT;
        goto out;
    }
    /* jansson rejects \u0000 unless asked, so the name is a proper C string. */
    if (strlen(json_string_value(name)) != json_string_length(name)) {
        r = -DS_E_FORMAT;
        goto out;
    }
    ev.name = (char *)json_string_value(name);

    /* event_payload is required by serde, Python pydantic and our schema. */
    if (!json_object_get(obj, "event_payload")) {
        r = -DS_E_FORMAT;
        goto out;
    }
    r = get_hex(obj, "digest", DS_EVENT_DIGEST_MAX, &digest, &digest_len);
    if (r == 0 && !digest_len_ok(digest_len)) {
        r = -DS_E_FORMAT;
    }
    if (r < 0) {
        goto out;
    }
    r = get_hex(obj, "event_payload", DS_EVENTLOG_MAX_PAYLOAD, &payload, &payload_len);
    if (r < 0) {
        goto out;
    }
    r = get_hex(obj, "preimage", DS_EVENTLOG_MAX_PREIMAGE, &preimage, &preimage_len);
    if (r < 0) {
        goto out;
    }
    if (digest_len) {
        memcpy(ev.digest, digest, digest_len);
    }
    ev.digest_len = digest_len;
    ev.payload = payload;
    ev.payload_len = payload_len;
    if (ev.version == 2 && preimage) {
        ev.preimage = preimage;
        ev.preimage_len = preimage_len;
    }
    r = ds_eventlog_append(log, &ev);
out:
    free(digest);
    free(payload);
    free(preimage);
    return r;
}

int ds_eventlog_parse_json(const char *json, size_t len, struct ds_event_log **out)
{
    struct ds_event_log *log = NULL;
    json_t *root = NULL;
    json_error_t jerr;
    int r;

    if (len > DS_EVENTLOG_MAX_JSON) {
        return -DS_E_LIMIT;
    }
    root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_array(root)) {
        r = -DS_E_FORMAT;
        goto out;
    }
    if (json_array_size(root) > DS_EVENTLOG_MAX_EVENTS) {
        r = -DS_E_LIMIT;
        goto out;
    }
    r = ds_eventlog_new(&log);
    if (r < 0) {
        goto out;
    }
    for (size_t i = 0; i < json_array_size(root); i++) {
        r = parse_event(json_array_get(root, i), log);
        if (r < 0) {
            goto out;
        }
    }
    *out = log;
    log = NULL;
    r = 0;
out:
    ds_eventlog_free(log);
    json_decref(root);
    return r;
}

/* ---- serializer --------------------------------------------------------------------------- */

static bool is_acpi_data(const struct ds_event *ev)
{
    const size_t plen = sizeof(DS_ACPI_DATA_PAYLOAD) - 1;
    return ev->imr == 0 && ev->event_type == DS_EV_PLATFORM_CONFIG_FLAGS &&
           ev->payload_len == plen && memcmp(ev->payload, DS_ACPI_DATA_PAYLOAD, plen) == 0;
}

static int write_event(struct ds_buf *b, const struct ds_event *ev, unsigned flags)
{
    bool runtime = ds_event_is_runtime(ev);
    bool stripped = (flags & DS_EVENTLOG_JSON_STRIPPED) != 0;
    bool keep_digest = !(stripped && runtime) || (flags & DS_EVENTLOG_JSON_RUNTIME_DIGESTS);
    bool keep_payload = !stripped || runtime || is_acpi_data(ev);
    const char *name = ev->name ? ev->name : "";

    DS_TRY(ds_buf_printf(b, "{\"imr\":%u,\"event_type\":%u,\"digest\":\"", (unsigned)ev->imr,
                         (unsigned)ev->event_type));
    if (keep_digest) {
        DS_TRY(ds_evl_hex(b, ev->digest, ev->digest_len));
    }
    DS_TRY(ds_buf_append_str(b, "\",\"event\":"));
    DS_TRY(ds_evl_json_string(b, name, strlen(name)));
    DS_TRY(ds_buf_append_str(b, ",\"event_payload\":\""));
    if (keep_payload) {
        DS_TRY(ds_evl_hex(b, ev->payload, ev->payload_len));
    }
    DS_TRY(ds_buf_u8(b, '"'));
    if (ev->version == 2) {
        DS_TRY(ds_buf_append_str(b, ",\"version\":2"));
    }
    if ((flags & DS_EVENTLOG_JSON_PREIMAGE) && runtime && ev->version == 2) {
        DS_TRY(ds_buf_append_str(b, ",\"preimage\":\""));
        if (ev->preimage) {
            DS_TRY(ds_evl_hex(b, ev->preimage, ev->preimage_len));
        } else {
            char *pre;
            size_t pre_len;
            DS_TRY(
                ds_runtime_event_preimage_v2(name, ev->payload, ev->payload_len, &pre, &pre_len));
            int r = ds_evl_hex(b, (const uint8_t *)pre, pre_len);
            free(pre);
            DS_TRY(r);
        }
        DS_TRY(ds_buf_u8(b, '"'));
    }
    return ds_buf_u8(b, '}');
}

int ds_eventlog_to_json(const struct ds_event_log *log, unsigned flags, char **out, size_t *out_len)
{
    struct ds_buf b;
    int r;

    ds_buf_init(&b, DS_EVENTLOG_MAX_JSON);
    r = ds_buf_u8(&b, '[');
    for (size_t i = 0; r == 0 && i < log->count; i++) {
        if (i > 0) {
            r = ds_buf_u8(&b, ',');
        }
        if (r == 0) {
            r = write_event(&b, &log->events[i], flags);
        }
    }
    if (r == 0) {
        r = ds_buf_u8(&b, ']');
    }
    if (r < 0) {
        goto out;
    }
    uint8_t *p;
    size_t n;
    ds_buf_steal(&b, &p, &n);
    *out = (char *)p;
    if (out_len) {
        *out_len = n;
    }
out:
    ds_buf_done(&b);
    return r;
}
