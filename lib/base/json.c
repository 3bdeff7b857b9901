/* SPDX-License-Identifier: Apache-2.0 */
/*
 * JSON string literal writer shared by the RFC 8785 (JCS) preimage of V2 runtime events
 * (lib/attest/runtime_event.c) and the canonical app-compose serializer
 * (lib/compose/compose_json.c). Both need the same escaping: the two-character escapes of
 * RFC 8785 §3.2.2.2, other control characters as \u00xx in lowercase hex, everything else
 * copied verbatim. Callers that accept untrusted text validate UTF-8 first.
 */
#include <string.h>

#include "dstack/base.h"

/* Longest escape written for one byte: "\u00xx" plus the NUL. */
#define JSON_ESCAPE_MAX 7

int ds_json_append_string(struct ds_buf *b, const char *s, size_t len)
{
    static const char hexd[] = "0123456789abcdef";
    DS_TRY(ds_buf_u8(b, '"'));
    size_t run = 0; /* start of the pending run of bytes copied verbatim */
    for (size_t i = 0; i < len; i++) {
        uint8_t c = (uint8_t)s[i];
        const char *esc = NULL;
        char ubuf[JSON_ESCAPE_MAX];
        switch (c) {
        case '"':
            esc = "\\\"";
            break;
        case '\\':
            esc = "\\\\";
            break;
        case '\b':
            esc = "\\b";
            break;
        case '\f':
            esc = "\\f";
            break;
        case '\n':
            esc = "\\n";
            break;
        case '\r':
            esc = "\\r";
            break;
        case '\t':
            esc = "\\t";
            break;
        default:
            if (c < 0x20) {
                memcpy(ubuf, "\\u00", 4);
                ubuf[4] = hexd[c >> 4];
                ubuf[5] = hexd[c & 0xF];
                ubuf[6] = '\0';
                esc = ubuf;
            }
            break;
        }
        if (esc != NULL) {
            DS_TRY(ds_buf_append(b, s + run, i - run));
            DS_TRY(ds_buf_append_str(b, esc));
            run = i + 1;
        }
    }
    DS_TRY(ds_buf_append(b, s + run, len - run));
    return ds_buf_u8(b, '"');
}
