/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Codec primitives for the attestation container and RA-TLS (spec kms-ratls.md §6.3, §6.6):
 * SCALE compact integers (parity-scale-codec rules, non-canonical forms rejected as upstream
 * does) and a bounds-checked MessagePack pull reader over struct ds_reader, plus small helpers
 * around msgpack-c's packer for the writing side. See versioned_priv.h for why decoding does
 * not use msgpack-c's unpacker.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "attest/eventlog_priv.h"
#include "attest/versioned_priv.h"

/* Compact thresholds (parity-scale-codec). */
#define COMPACT_1B_MAX ((uint64_t)1 << 6)
#define COMPACT_2B_MAX ((uint64_t)1 << 14)
#define COMPACT_4B_MAX ((uint64_t)1 << 30)

/* ---- SCALE ---------------------------------------------------------------------------------- */

int ds_scale_put_compact(struct ds_buf *b, uint64_t v)
{
    if (v < COMPACT_1B_MAX) {
        return ds_buf_u8(b, (uint8_t)(v << 2));
    }
    if (v < COMPACT_2B_MAX) {
        return ds_buf_u16le(b, (uint16_t)((v << 2) | 1));
    }
    if (v < COMPACT_4B_MAX) {
        return ds_buf_u32le(b, (uint32_t)((v << 2) | 2));
    }
    uint8_t tmp[9];
    size_t n = 0;
    for (uint64_t x = v; x; x >>= 8) {
        tmp[1 + n++] = (uint8_t)x;
    }
    if (n < 4) {
        n = 4; /* cannot happen for v >= 2^30, kept for clarity */
    }
    tmp[0] = (uint8_t)(((n - 4) << 2) | 3);
    return ds_buf_append(b, tmp, n + 1);
}

int ds_scale_put_bytes(struct ds_buf *b, const void *p, size_t n)
{
    size_t mark = b->len;
    int r = ds_scale_put_compact(b, n);
    if (r == 0 && n) {
        r = ds_buf_append(b, p, n);
    }
    if (r < 0) {
        b->len = mark;
    }
    return r;
}

int ds_scale_get_compact(struct ds_reader *r, uint64_t *out)
{
    struct ds_reader t = *r;
    uint8_t b0;
    uint64_t v;

    DS_TRY(ds_rd_u8(&t, &b0));
    switch (b0 & 3) {
    case 0:
        v = b0 >> 2;
        break;
    case 1: {
        uint8_t b1;
        DS_TRY(ds_rd_u8(&t, &b1));
        v = (((uint64_t)b1 << 8) | b0) >> 2;
        if (v < COMPACT_1B_MAX) {
            return -DS_E_FORMAT;
        }
        break;
    }
    case 2: {
        uint8_t rest[3];
        DS_TRY(ds_rd_copy(&t, rest, sizeof(rest)));
        v = ((uint64_t)b0 | (uint64_t)rest[0] << 8 | (uint64_t)rest[1] << 16 |
             (uint64_t)rest[2] << 24) >>
            2;
        if (v < COMPACT_2B_MAX) {
            return -DS_E_FORMAT;
        }
        break;
    }
    default: {
        size_t n = (size_t)(b0 >> 2) + 4;
        const uint8_t *p;
        if (n > 8) {
            return -DS_E_LIMIT; /* does not fit u64: no length here can be that large */
        }
        DS_TRY(ds_rd_ptr(&t, n, &p));
        v = 0;
        for (size_t i = n; i-- > 0;) {
            v = (v << 8) | p[i];
        }
        /* canonical: needs the big mode, and exactly n bytes */
        if (v < COMPACT_4B_MAX || p[n - 1] == 0) {
            return -DS_E_FORMAT;
        }
        break;
    }
    }
    *r = t;
    *out = v;
    return 0;
}

int ds_scale_get_len(struct ds_reader *r, size_t max, size_t *out)
{
    struct ds_reader t = *r;
    uint64_t v;
    DS_TRY(ds_scale_get_compact(&t, &v));
    if (v > max) {
        return -DS_E_LIMIT;
    }
    /* every item takes at least one byte, so a count beyond the input is a truncation */
    if (v > ds_rd_left(&t)) {
        return -DS_E_TRUNCATED;
    }
    *r = t;
    *out = (size_t)v;
    return 0;
}

int ds_scale_get_bytes(struct ds_reader *r, size_t max, const uint8_t **out, size_t *out_len)
{
    struct ds_reader t = *r;
    size_t n;
    const uint8_t *p = NULL;
    DS_TRY(ds_scale_get_len(&t, max, &n));
    DS_TRY(ds_rd_ptr(&t, n, &p));
    *r = t;
    *out = p;
    *out_len = n;
    return 0;
}

static int dup_text(const uint8_t *p, size_t n, size_t max, char **out)
{
    if (n > max) {
        return -DS_E_LIMIT;
    }
    if (memchr(p, 0, n) || !ds_evl_utf8_valid((const char *)p, n)) {
        return -DS_E_FORMAT;
    }
    char *s = malloc(n + 1);
    if (!s) {
        return -ENOMEM;
    }
    if (n) {
        memcpy(s, p, n);
    }
    s[n] = 0;
    *out = s;
    return 0;
}

int ds_scale_get_string(struct ds_reader *r, size_t max, char **out)
{
    struct ds_reader t = *r;
    const uint8_t *p;
    size_t n;
    DS_TRY(ds_scale_get_bytes(&t, max, &p, &n));
    DS_TRY(dup_text(p, n, max, out));
    *r = t;
    return 0;
}

/* ---- MessagePack pull reader ---------------------------------------------------------------- */

static int rd_be(struct ds_reader *r, size_t n, uint64_t *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, n, &p));
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        v = (v << 8) | p[i];
    }
    *out = v;
    return 0;
}

/* Container header: fix range [fix_lo, fix_lo+15], 16-bit tag, 32-bit tag. */
static int read_container(struct ds_reader *r, uint8_t fix_lo, uint8_t t16, uint8_t t32,
                          uint32_t *out)
{
    struct ds_reader t = *r;
    uint8_t b;
    uint64_t n;
    DS_TRY(ds_rd_u8(&t, &b));
    if (b >= fix_lo && b <= fix_lo + 15) {
        n = b & 0x0f;
    } else if (b == t16) {
        DS_TRY(rd_be(&t, 2, &n));
    } else if (b == t32) {
        DS_TRY(rd_be(&t, 4, &n));
    } else {
        return -DS_E_FORMAT;
    }
    /* each element (map: key and value) takes at least one byte */
    if (n > ds_rd_left(&t)) {
        return -DS_E_TRUNCATED;
    }
    *r = t;
    *out = (uint32_t)n;
    return 0;
}

int ds_mp_read_map(struct ds_reader *r, uint32_t *out_count)
{
    return read_container(r, 0x80, 0xde, 0xdf, out_count);
}

int ds_mp_read_array(struct ds_reader *r, uint32_t *out_count)
{
    return read_container(r, 0x90, 0xdc, 0xdd, out_count);
}

/* str (is_bin false) or bin (true). */
static int read_blob(struct ds_reader *r, bool is_bin, const uint8_t **out, size_t *out_len)
{
    struct ds_reader t = *r;
    uint8_t b;
    uint64_t n;
    DS_TRY(ds_rd_u8(&t, &b));
    if (!is_bin && b >= 0xa0 && b <= 0xbf) {
        n = b & 0x1f;
    } else if (b == (is_bin ? 0xc4 : 0xd9)) {
        DS_TRY(rd_be(&t, 1, &n));
    } else if (b == (is_bin ? 0xc5 : 0xda)) {
        DS_TRY(rd_be(&t, 2, &n));
    } else if (b == (is_bin ? 0xc6 : 0xdb)) {
        DS_TRY(rd_be(&t, 4, &n));
    } else {
        return -DS_E_FORMAT;
    }
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(&t, (size_t)n, &p));
    *r = t;
    *out = p;
    *out_len = (size_t)n;
    return 0;
}

int ds_mp_read_str(struct ds_reader *r, const uint8_t **out, size_t *out_len)
{
    return read_blob(r, false, out, out_len);
}

int ds_mp_read_uint(struct ds_reader *r, uint64_t *out)
{
    struct ds_reader t = *r;
    uint8_t b;
    uint64_t v;
    DS_TRY(ds_rd_u8(&t, &b));
    if (b <= 0x7f) {
        v = b;
    } else if (b >= 0xcc && b <= 0xcf) {
        DS_TRY(rd_be(&t, (size_t)1 << (b - 0xcc), &v));
    } else if (b >= 0xd0 && b <= 0xd3) {
        /* signed forms are fine when the value is non-negative */
        size_t n = (size_t)1 << (b - 0xd0);
        DS_TRY(rd_be(&t, n, &v));
        if (v >> (n * 8 - 1)) {
            return -DS_E_FORMAT;
        }
    } else {
        return -DS_E_FORMAT;
    }
    *r = t;
    *out = v;
    return 0;
}

int ds_mp_read_nil(struct ds_reader *r)
{
    if (ds_rd_left(r) && r->data[r->off] == 0xc0) {
        r->off++;
        return 1;
    }
    return 0;
}

int ds_mp_read_bytes(struct ds_reader *r, size_t max, uint8_t **out, size_t *out_len)
{
    struct ds_reader t = *r;
    const uint8_t *p;
    size_t n;
    uint8_t *buf = NULL;
    uint32_t count;
    int rc;

    if (read_blob(&t, true, &p, &n) == 0) {
        if (n > max) {
            return -DS_E_LIMIT;
        }
        if (n) {
            buf = malloc(n);
            if (!buf) {
                return -ENOMEM;
            }
            memcpy(buf, p, n);
        }
        goto done;
    }
    DS_TRY(ds_mp_read_array(&t, &count));
    if (count > max) {
        return -DS_E_LIMIT;
    }
    n = count;
    if (n) {
        buf = malloc(n);
        if (!buf) {
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        uint64_t v;
        rc = ds_mp_read_uint(&t, &v);
        if (rc == 0 && v > 0xff) {
            rc = -DS_E_FORMAT;
        }
        if (rc < 0) {
            free(buf);
            return rc;
        }
        buf[i] = (uint8_t)v;
    }
done:
    *r = t;
    *out = buf;
    *out_len = n;
    return 0;
}

int ds_mp_read_fixed(struct ds_reader *r, uint8_t *out, size_t n)
{
    struct ds_reader t = *r;
    uint8_t *buf = NULL;
    size_t len;
    DS_TRY(ds_mp_read_bytes(&t, n, &buf, &len));
    if (len != n) {
        free(buf);
        return -DS_E_FORMAT;
    }
    if (n) {
        memcpy(out, buf, n);
    }
    free(buf);
    *r = t;
    return 0;
}

int ds_mp_read_string(struct ds_reader *r, size_t max, char **out)
{
    struct ds_reader t = *r;
    const uint8_t *p;
    size_t n;
    DS_TRY(ds_mp_read_str(&t, &p, &n));
    DS_TRY(dup_text(p, n, max, out));
    *r = t;
    return 0;
}

static int skip_depth(struct ds_reader *r, int depth)
{
    uint8_t b;
    size_t n;
    uint32_t count;
    const uint8_t *p;

    if (depth > DS_MP_MAX_DEPTH) {
        return -DS_E_LIMIT;
    }
    if (ds_rd_left(r) == 0) {
        return -DS_E_TRUNCATED;
    }
    b = r->data[r->off];
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        return ds_rd_skip(r, 1);
    }
    if ((b >= 0xcc && b <= 0xcf) || (b >= 0xd0 && b <= 0xd3)) {
        return ds_rd_skip(r, 1 + ((size_t)1 << (b & 3)));
    }
    if (b == 0xca || b == 0xcb) {
        return ds_rd_skip(r, b == 0xca ? 5 : 9);
    }
    if ((b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb)) {
        return ds_mp_read_str(r, &p, &n);
    }
    if (b >= 0xc4 && b <= 0xc6) {
        return read_blob(r, true, &p, &n);
    }
    if ((b >= 0x90 && b <= 0x9f) || b == 0xdc || b == 0xdd) {
        DS_TRY(ds_mp_read_array(r, &count));
        for (uint32_t i = 0; i < count; i++) {
            DS_TRY(skip_depth(r, depth + 1));
        }
        return 0;
    }
    if ((b >= 0x80 && b <= 0x8f) || b == 0xde || b == 0xdf) {
        DS_TRY(ds_mp_read_map(r, &count));
        for (uint32_t i = 0; i < count; i++) {
            DS_TRY(skip_depth(r, depth + 1));
            DS_TRY(skip_depth(r, depth + 1));
        }
        return 0;
    }
    /* ext types and the never-used 0xc1 */
    return -DS_E_FORMAT;
}

int ds_mp_skip(struct ds_reader *r)
{
    struct ds_reader t = *r;
    DS_TRY(skip_depth(&t, 0));
    *r = t;
    return 0;
}

bool ds_mp_key_is(const uint8_t *s, size_t len, const char *key)
{
    return strlen(key) == len && memcmp(s, key, len) == 0;
}

/* ---- packing helpers ------------------------------------------------------------------------ */

int ds_mp_pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    if (msgpack_pack_str(pk, n) != 0 || msgpack_pack_str_body(pk, s, n) != 0) {
        return -ENOMEM;
    }
    return 0;
}

int ds_mp_pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    if (msgpack_pack_bin(pk, n) != 0 || (n && msgpack_pack_bin_body(pk, p, n) != 0)) {
        return -ENOMEM;
    }
    return 0;
}

int ds_mp_pack_int_array(msgpack_packer *pk, const uint8_t *p, size_t n)
{
    if (msgpack_pack_array(pk, n) != 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        if (msgpack_pack_uint8(pk, p[i]) != 0) {
            return -ENOMEM;
        }
    }
    return 0;
}
