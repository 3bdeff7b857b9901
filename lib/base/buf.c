/* SPDX-License-Identifier: Apache-2.0 */
/* Bounded growable buffer: every buffer has a hard maximum set by its owner. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/base.h"

void ds_buf_init(struct ds_buf *b, size_t max)
{
    memset(b, 0, sizeof(*b));
    b->max = max;
}

void ds_buf_done(struct ds_buf *b)
{
    if (b->data && b->secret)
        ds_wipe(b->data, b->cap);
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

void ds_buf_reset(struct ds_buf *b)
{
    if (b->data && b->secret)
        ds_wipe(b->data, b->len);
    b->len = 0;
    if (b->data)
        b->data[0] = 0;
}

/* Make room for n more bytes plus the trailing NUL. */
static int buf_reserve(struct ds_buf *b, size_t n)
{
    if (n > b->max - b->len)
        return -DS_E_LIMIT;
    size_t need = b->len + n + 1;
    if (need <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    uint8_t *p = malloc(cap);
    if (!p)
        return -ENOMEM;
    if (b->data) {
        memcpy(p, b->data, b->len);
        if (b->secret)
            ds_wipe(b->data, b->cap);
        free(b->data);
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int ds_buf_append(struct ds_buf *b, const void *p, size_t n)
{
    DS_TRY(buf_reserve(b, n));
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = 0;
    return 0;
}

int ds_buf_append_str(struct ds_buf *b, const char *s)
{
    return ds_buf_append(b, s, strlen(s));
}

int ds_buf_printf(struct ds_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -DS_E_FORMAT;
    DS_TRY(buf_reserve(b, (size_t)n));
    va_start(ap, fmt);
    vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}

int ds_buf_u8(struct ds_buf *b, uint8_t v)
{
    return ds_buf_append(b, &v, 1);
}

int ds_buf_u16le(struct ds_buf *b, uint16_t v)
{
    uint8_t p[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    return ds_buf_append(b, p, 2);
}

int ds_buf_u32le(struct ds_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    return ds_buf_append(b, p, 4);
}

int ds_buf_u64le(struct ds_buf *b, uint64_t v)
{
    uint8_t p[8];
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
    return ds_buf_append(b, p, 8);
}

int ds_buf_u32be(struct ds_buf *b, uint32_t v)
{
    uint8_t p[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    return ds_buf_append(b, p, 4);
}

void ds_buf_steal(struct ds_buf *b, uint8_t **out, size_t *out_len)
{
    if (!b->data && buf_reserve(b, 0) < 0) {
        *out = NULL;
        *out_len = 0;
        return;
    }
    b->data[b->len] = 0; /* also for a buffer never written: buf_reserve() only allocates */
    *out = b->data;
    *out_len = b->len;
    b->data = NULL;
    b->len = b->cap = 0;
}
