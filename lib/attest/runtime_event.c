/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack runtime events (spec attestation.md §4.4, guest-agent-api.md §4.10): the V1 and V2
 * digest formulas, the RFC 8785 canonical JSON preimage of V2 events (a small string escaper
 * is enough because the object has three fixed keys), the "effective digest" rule used for
 * replay, and V2 preimage validation. Also hosts the UTF-8 validator and the checked JSON string
 * writer the JSON serializer shares (eventlog_priv.h); the escaping itself is
 * ds_json_append_string() in lib/base, also used by the app-compose serializer.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "attest/eventlog_priv.h"
#include "dstack/eventlog.h"

/* The decimal form of DS_RUNTIME_EVENT_TYPE as JCS prints it. */
#define RUNTIME_TYPE_DECIMAL "134217729"

bool ds_evl_utf8_valid(const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t n;
        uint32_t cp, min;
        if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
            min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
            min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
            min = 0x10000;
        } else {
            return false;
        }
        if (n > len - i - 1) {
            return false;
        }
        for (size_t k = 1; k <= n; k++) {
            uint8_t cc = s[i + k];
            if ((cc & 0xC0) != 0x80) {
                return false;
            }
            cp = (cp << 6) | (cc & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
            return false;
        }
        i += n + 1;
    }
    return true;
}

int ds_evl_json_string(struct ds_buf *b, const char *s, size_t len)
{
    if (!ds_evl_utf8_valid(s, len)) {
        return -DS_E_FORMAT;
    }
    return ds_json_append_string(b, s, len);
}

int ds_evl_hex(struct ds_buf *b, const uint8_t *p, size_t n)
{
    static const char hexd[] = "0123456789abcdef";
    char chunk[128];
    size_t used = 0;
    for (size_t i = 0; i < n; i++) {
        chunk[used++] = hexd[p[i] >> 4];
        chunk[used++] = hexd[p[i] & 0xF];
        if (used == sizeof(chunk)) {
            DS_TRY(ds_buf_append(b, chunk, used));
            used = 0;
        }
    }
    return ds_buf_append(b, chunk, used);
}

/* ---- digests ------------------------------------------------------------------------------ */

static const uint8_t v1_prefix[5] = {0x01, 0x00, 0x00, 0x08, ':'}; /* le32(type) ":" */

void ds_runtime_event_digest_v1_sha384(const char *name, const void *payload, size_t payload_len,
                                       uint8_t out[DS_SHA384_LEN])
{
    const char *n = name ? name : "";
    ds_sha384_v(out, 4, v1_prefix, sizeof(v1_prefix), n, strlen(n), ":", (size_t)1,
                payload ? payload : "", payload_len);
}

void ds_runtime_event_digest_v1_sha256(const char *name, const void *payload, size_t payload_len,
                                       uint8_t out[DS_SHA256_LEN])
{
    const char *n = name ? name : "";
    ds_sha256_v(out, 4, v1_prefix, sizeof(v1_prefix), n, strlen(n), ":", (size_t)1,
                payload ? payload : "", payload_len);
}

int ds_runtime_event_preimage_v2(const char *name, const void *payload, size_t payload_len,
                                 char **out, size_t *out_len)
{
    const char *n = name ? name : "";
    size_t nlen = strlen(n);
    struct ds_buf b;
    int r;
    if (nlen > DS_EVENTLOG_MAX_NAME || payload_len > DS_EVENTLOG_MAX_PAYLOAD) {
        return -DS_E_LIMIT;
    }
    ds_buf_init(&b, DS_EVENTLOG_MAX_PREIMAGE);
    /* Keys in JCS order (UTF-16 code-unit order, here plain ASCII): name, payload, type. */
    r = ds_buf_append_str(&b, "{\"name\":");
    if (r == 0) {
        r = ds_evl_json_string(&b, n, nlen);
    }
    if (r == 0) {
        r = ds_buf_append_str(&b, ",\"payload\":\"");
    }
    if (r == 0) {
        r = ds_evl_hex(&b, payload, payload_len);
    }
    if (r == 0) {
        r = ds_buf_append_str(&b, "\",\"type\":" RUNTIME_TYPE_DECIMAL "}");
    }
    if (r < 0) {
        goto out;
    }
    uint8_t *p;
    size_t plen;
    ds_buf_steal(&b, &p, &plen);
    *out = (char *)p;
    *out_len = plen;
out:
    ds_buf_done(&b);
    return r;
}

int ds_runtime_event_digest_sha384(uint32_t version, const char *name, const void *payload,
                                   size_t payload_len, uint8_t out[DS_SHA384_LEN])
{
    if (version == 1) {
        ds_runtime_event_digest_v1_sha384(name, payload, payload_len, out);
        return 0;
    }
    if (version != 2) {
        return -DS_E_FORMAT;
    }
    char *pre;
    size_t pre_len;
    DS_TRY(ds_runtime_event_preimage_v2(name, payload, payload_len, &pre, &pre_len));
    ds_sha384(pre, pre_len, out);
    free(pre);
    return 0;
}

int ds_runtime_event_digest_sha256(uint32_t version, const char *name, const void *payload,
                                   size_t payload_len, uint8_t out[DS_SHA256_LEN])
{
    if (version == 1) {
        ds_runtime_event_digest_v1_sha256(name, payload, payload_len, out);
        return 0;
    }
    if (version != 2) {
        return -DS_E_FORMAT;
    }
    char *pre;
    size_t pre_len;
    DS_TRY(ds_runtime_event_preimage_v2(name, payload, payload_len, &pre, &pre_len));
    ds_sha256(pre, pre_len, out);
    free(pre);
    return 0;
}

bool ds_event_is_runtime(const struct ds_event *ev)
{
    return ev->event_type == DS_RUNTIME_EVENT_TYPE;
}

int ds_event_effective_digest(const struct ds_event *ev, uint8_t out[DS_EVENT_DIGEST_MAX],
                              size_t *out_len)
{
    if (ds_event_is_runtime(ev)) {
        /* Spec §4.2: recomputed from name + payload; the supplied digest is ignored. */
        DS_TRY(ds_runtime_event_digest_sha384(ev->version, ev->name, ev->payload, ev->payload_len,
                                              out));
        *out_len = DS_SHA384_LEN;
        return 0;
    }
    if (ev->digest_len == 0) {
        return -DS_E_NOT_FOUND;
    }
    if (ev->digest_len > DS_EVENT_DIGEST_MAX) {
        return -DS_E_FORMAT;
    }
    memcpy(out, ev->digest, ev->digest_len);
    *out_len = ev->digest_len;
    return 0;
}

/* Check one V2 runtime event; see the header for the stripped-digest decision. */
static int validate_v2_event(const struct ds_event *ev)
{
    char *canon = NULL;
    size_t canon_len;
    int r;
    if (!ev->preimage) {
        return -DS_E_NOT_FOUND;
    }
    r = ds_runtime_event_preimage_v2(ev->name, ev->payload, ev->payload_len, &canon, &canon_len);
    if (r < 0) {
        goto out;
    }
    /* Public data: an ordinary comparison is fine, but lengths must agree first. */
    if (canon_len != ev->preimage_len || memcmp(canon, ev->preimage, canon_len) != 0) {
        r = -DS_E_MISMATCH;
        goto out;
    }
    if (ev->digest_len != 0) {
        uint8_t h[DS_SHA384_LEN];
        ds_sha384(ev->preimage, ev->preimage_len, h);
        if (ev->digest_len != DS_SHA384_LEN || memcmp(h, ev->digest, DS_SHA384_LEN) != 0) {
            r = -DS_E_MISMATCH;
            goto out;
        }
    }
    r = 0;
out:
    free(canon);
    return r;
}

int ds_eventlog_validate_v2_preimages(const struct ds_event_log *log, size_t *out_bad_index)
{
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        if (!ds_event_is_runtime(ev) || ev->version != 2) {
            continue;
        }
        int r = validate_v2_event(ev);
        if (r < 0) {
            if (out_bad_index) {
                *out_bad_index = i;
            }
            return r;
        }
    }
    return 0;
}
