/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The one reader for untrusted bytes (s2n's stuffer idea). Every read checks
 * n <= len - off, which cannot overflow since off <= len always holds, and leaves the
 * reader unchanged on failure.
 */
#include <string.h>

#include "dstack/base.h"

void ds_rd_init(struct ds_reader *r, const void *data, size_t len)
{
    r->data = data;
    r->len = data ? len : 0;
    r->off = 0;
}

size_t ds_rd_left(const struct ds_reader *r)
{
    return r->len - r->off;
}

int ds_rd_ptr(struct ds_reader *r, size_t n, const uint8_t **out)
{
    if (n > r->len - r->off)
        return -DS_E_TRUNCATED;
    *out = r->data + r->off;
    r->off += n;
    return 0;
}

int ds_rd_copy(struct ds_reader *r, void *out, size_t n)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, n, &p));
    if (n)
        memcpy(out, p, n);
    return 0;
}

int ds_rd_skip(struct ds_reader *r, size_t n)
{
    const uint8_t *p;
    return ds_rd_ptr(r, n, &p);
}

int ds_rd_u8(struct ds_reader *r, uint8_t *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, 1, &p));
    *out = p[0];
    return 0;
}

int ds_rd_u16le(struct ds_reader *r, uint16_t *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, 2, &p));
    *out = (uint16_t)(p[0] | (p[1] << 8));
    return 0;
}

int ds_rd_u32le(struct ds_reader *r, uint32_t *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, 4, &p));
    *out = (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
    return 0;
}

int ds_rd_u64le(struct ds_reader *r, uint64_t *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, 8, &p));
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    *out = v;
    return 0;
}

int ds_rd_u16be(struct ds_reader *r, uint16_t *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, 2, &p));
    *out = (uint16_t)((p[0] << 8) | p[1]);
    return 0;
}

int ds_rd_u32be(struct ds_reader *r, uint32_t *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, 4, &p));
    *out = ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | (uint32_t)p[3];
    return 0;
}

int ds_rd_sub(struct ds_reader *r, size_t n, struct ds_reader *out)
{
    const uint8_t *p;
    DS_TRY(ds_rd_ptr(r, n, &p));
    ds_rd_init(out, p, n);
    return 0;
}
