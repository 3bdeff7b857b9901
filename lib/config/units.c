/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Duration and size strings as upstream's configs write them: durations the way Rust's
 * humantime does ("500ms", "30s", "2m", "5h", "10d", "1h 30m", "2 weeks"; every number needs a
 * unit) and sizes as "65536", "64K", "4M", "10MiB", "1GB" (K/Ki/KiB = 1024, KB = 1000; likewise M,
 * G, T). Durations are returned in milliseconds, sizes in bytes; overflow is an error, never a
 * wrap.
 */
#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "dstack/config.h"

struct unit {
    const char *name;
    uint64_t mult;
};

static const struct unit duration_units[] = {
    {"ms", 1},           {"msec", 1},          {"s", 1000},        {"sec", 1000},
    {"secs", 1000},      {"second", 1000},     {"seconds", 1000},  {"m", 60000},
    {"min", 60000},      {"mins", 60000},      {"minute", 60000},  {"minutes", 60000},
    {"h", 3600000},      {"hr", 3600000},      {"hour", 3600000},  {"hours", 3600000},
    {"d", 86400000},     {"day", 86400000},    {"days", 86400000}, {"w", 604800000},
    {"week", 604800000}, {"weeks", 604800000},
};

static const struct unit size_units[] = {
    {"", 1},
    {"b", 1},
    {"k", 1ull << 10},
    {"ki", 1ull << 10},
    {"kib", 1ull << 10},
    {"kb", 1000ull},
    {"m", 1ull << 20},
    {"mi", 1ull << 20},
    {"mib", 1ull << 20},
    {"mb", 1000000ull},
    {"g", 1ull << 30},
    {"gi", 1ull << 30},
    {"gib", 1ull << 30},
    {"gb", 1000000000ull},
    {"t", 1ull << 40},
    {"ti", 1ull << 40},
    {"tib", 1ull << 40},
    {"tb", 1000000000000ull},
};

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Decimal digits at s[*i]; at least one. */
static int read_uint(const char *s, size_t *i, uint64_t *out)
{
    uint64_t v = 0;
    size_t start = *i;
    while (is_digit(s[*i])) {
        uint64_t d = (uint64_t)(s[*i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -DS_E_LIMIT;
        }
        v = v * 10 + d;
        (*i)++;
    }
    if (*i == start) {
        return -DS_E_FORMAT;
    }
    *out = v;
    return 0;
}

static int find_unit(const struct unit *units, size_t count, const char *u, size_t len,
                     bool fold_case, uint64_t *mult)
{
    for (size_t k = 0; k < count; k++) {
        const char *n = units[k].name;
        if (strlen(n) == len &&
            (fold_case ? strncasecmp(n, u, len) == 0 : strncmp(n, u, len) == 0)) {
            *mult = units[k].mult;
            return 0;
        }
    }
    return -DS_E_FORMAT;
}

int ds_config_parse_duration(const char *s, uint64_t *out_ms)
{
    uint64_t total = 0;
    size_t i = 0;
    bool any = false;
    if (!s) {
        return -DS_E_FORMAT;
    }
    for (;;) {
        while (s[i] == ' ') {
            i++;
        }
        if (!s[i]) {
            break;
        }
        uint64_t n, mult;
        DS_TRY(read_uint(s, &i, &n));
        while (s[i] == ' ') {
            i++;
        }
        size_t u = i;
        while (is_alpha(s[i])) {
            i++;
        }
        if (i == u) {
            return -DS_E_FORMAT; /* a bare number: which unit? */
        }
        DS_TRY(
            find_unit(duration_units, DS_ARRAY_SIZE(duration_units), s + u, i - u, false, &mult));
        if (n && mult > UINT64_MAX / n) {
            return -DS_E_LIMIT;
        }
        if (total > UINT64_MAX - n * mult) {
            return -DS_E_LIMIT;
        }
        total += n * mult;
        any = true;
    }
    if (!any) {
        return -DS_E_FORMAT;
    }
    if (total == DS_CONFIG_UNSET) {
        return -DS_E_LIMIT; /* reserved for "unset" */
    }
    *out_ms = total;
    return 0;
}

int ds_config_parse_size(const char *s, uint64_t *out_bytes)
{
    size_t i = 0;
    uint64_t n, mult;
    if (!s) {
        return -DS_E_FORMAT;
    }
    DS_TRY(read_uint(s, &i, &n));
    while (s[i] == ' ') {
        i++;
    }
    size_t u = i;
    while (is_alpha(s[i])) {
        i++;
    }
    if (s[i]) {
        return -DS_E_FORMAT;
    }
    DS_TRY(find_unit(size_units, DS_ARRAY_SIZE(size_units), s + u, i - u, true, &mult));
    if (n && mult > UINT64_MAX / n) {
        return -DS_E_LIMIT;
    }
    if (n * mult == DS_CONFIG_UNSET) {
        return -DS_E_LIMIT; /* reserved for "unset" */
    }
    *out_bytes = n * mult;
    return 0;
}
