/* SPDX-License-Identifier: Apache-2.0 */
/* Hex and base64 codecs (OpenSSL's EVP base64 is line-oriented and lenient; we want strict). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/base.h"

static const char hexdig[] = "0123456789abcdef";

void ds_hex_encode(const void *in, size_t n, char *out)
{
    const uint8_t *p = in;
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hexdig[p[i] >> 4];
        out[2 * i + 1] = hexdig[p[i] & 15];
    }
    out[2 * n] = 0;
}

char *ds_hex_strdup(const void *in, size_t n)
{
    if (n > (SIZE_MAX - 1) / 2)
        return NULL;
    char *s = malloc(2 * n + 1);
    if (s)
        ds_hex_encode(in, n, s);
    return s;
}

int ds_hex_digit_value(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static void strip_0x(const char **hex, size_t *len)
{
    if (*len >= 2 && (*hex)[0] == '0' && ((*hex)[1] == 'x' || (*hex)[1] == 'X')) {
        *hex += 2;
        *len -= 2;
    }
}

static int hex_decode_raw(const char *hex, size_t len, uint8_t *out)
{
    for (size_t i = 0; i < len / 2; i++) {
        int hi = ds_hex_digit_value(hex[2 * i]), lo = ds_hex_digit_value(hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -DS_E_FORMAT;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

int ds_hex_decode(const char *hex, size_t hex_len, void *out, size_t out_size)
{
    strip_0x(&hex, &hex_len);
    if (hex_len != 2 * out_size)
        return -DS_E_FORMAT;
    DS_TRY(hex_decode_raw(hex, hex_len, out));
    return (int)out_size;
}

int ds_hex_decode_alloc(const char *hex, size_t hex_len, size_t max_size, uint8_t **out,
                        size_t *out_len)
{
    strip_0x(&hex, &hex_len);
    if (hex_len % 2)
        return -DS_E_FORMAT;
    if (hex_len / 2 > max_size)
        return -DS_E_LIMIT;
    uint8_t *p = malloc(hex_len / 2 + 1);
    if (!p)
        return -ENOMEM;
    int r = hex_decode_raw(hex, hex_len, p);
    if (r < 0) {
        free(p);
        return r;
    }
    *out = p;
    *out_len = hex_len / 2;
    return 0;
}

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *ds_base64_encode(const void *in, size_t n)
{
    const uint8_t *p = in;
    if (n > (SIZE_MAX / 4) * 3 - 3)
        return NULL;
    size_t olen = 4 * ((n + 2) / 3);
    char *o = malloc(olen + 1), *q = o;
    if (!o)
        return NULL;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *q++ = b64[v >> 18];
        *q++ = b64[(v >> 12) & 63];
        *q++ = b64[(v >> 6) & 63];
        *q++ = b64[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *q++ = b64[v >> 18];
        *q++ = b64[(v >> 12) & 63];
        *q++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
        *q++ = '=';
    }
    *q = 0;
    return o;
}

static int b64val(char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int ds_base64_decode(const char *in, size_t in_len, size_t max_size, uint8_t **out, size_t *out_len)
{
    while (in_len && in[in_len - 1] == '=')
        in_len--;
    if (in_len % 4 == 1)
        return -DS_E_FORMAT;
    size_t olen = in_len / 4 * 3 + (in_len % 4 ? in_len % 4 - 1 : 0);
    if (olen > max_size)
        return -DS_E_LIMIT;
    uint8_t *o = malloc(olen + 1);
    if (!o)
        return -ENOMEM;
    size_t k = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < in_len; i++) {
        int v = b64val(in[i]);
        if (v < 0) {
            free(o);
            return -DS_E_FORMAT;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            o[k++] = (uint8_t)(acc >> bits);
        }
    }
    /* Leftover bits must be zero for a canonical encoding. */
    if (bits && (acc & ((1u << bits) - 1))) {
        free(o);
        return -DS_E_FORMAT;
    }
    *out = o;
    *out_len = k;
    return 0;
}
