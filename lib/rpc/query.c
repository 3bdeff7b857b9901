/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GET query strings as pRPC input (spec/guest-agent-api.md §2.6: serde_qs 0.13, strict mode,
 * max depth 5). The decoder builds a JSON object whose leaves are all strings; converting
 * "true" or "123" to typed values is left to the method's decoder, exactly as serde_qs
 * defers it to the target type. Bracket syntax is parsed on the raw key, so a
 * percent-encoded bracket is an ordinary character of a name (strict mode).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/http.h"

#define QS_INDEX_DIGITS_MAX 9

struct qs_seg {
    const char *p;
    size_t n;
};

/*
 * Split a raw key into its name and bracket segments: `a[b][]` -> "a", "b", "".
 * Returns the segment count, 0 for an empty name (the pair is ignored), or a negative error.
 */
static int qs_split_key(const char *k, size_t n, struct qs_seg *segs, const char **msg)
{
    size_t i = 0;
    while (i < n && k[i] != '[') {
        i++;
    }
    if (i == 0) {
        return 0;
    }
    segs[0].p = k;
    segs[0].n = i;
    int count = 1;
    while (i < n) {
        if (k[i] != '[') {
            *msg = "invalid query string: text after ']' in a key";
            return -DS_E_FORMAT;
        }
        const char *close = memchr(k + i + 1, ']', n - i - 1);
        if (!close) {
            *msg = "invalid query string: unclosed '[' in a key";
            return -DS_E_FORMAT;
        }
        if (count > DS_RPC_QUERY_DEPTH_MAX) {
            *msg = "invalid query string: key nested deeper than 5 levels";
            return -DS_E_LIMIT;
        }
        segs[count].p = k + i + 1;
        segs[count].n = (size_t)(close - (k + i + 1));
        count++;
        i = (size_t)(close - k) + 1;
    }
    return count;
}

/* Percent-decode into a new string; rejects NUL bytes and invalid UTF-8. */
static int qs_decode(const char *p, size_t n, char **out, const char **msg)
{
    char *s = malloc(n + 1);
    if (!s) {
        return -ENOMEM;
    }
    size_t len = rpc_percent_decode(p, n, s, true);
    if (strlen(s) != len) {
        free(s);
        *msg = "invalid query string: NUL byte";
        return -DS_E_FORMAT;
    }
    json_t *probe = json_stringn(s, len);
    if (!probe) {
        free(s);
        *msg = "invalid query string: not UTF-8";
        return -DS_E_FORMAT;
    }
    json_decref(probe);
    *out = s;
    return 0;
}

static int qs_conflict(const char **msg)
{
    *msg = "invalid query string: a key is used both as a value and as a map or list";
    return -DS_E_FORMAT;
}

/* Store value under names[0..count) in root (see ds_rpc_query_decode for the rules). */
static int qs_insert(json_t *root, char **names, int count, const char *value, const char **msg)
{
    json_t *node = root;
    const char *name = names[0];
    for (int k = 1; k < count; k++) {
        bool append = names[k][0] == 0;
        json_t *child = json_object_get(node, name);
        if (!child) {
            child = append ? json_array() : json_object();
            if (!child || json_object_set_new(node, name, child) < 0) {
                return -ENOMEM;
            }
        } else if (append ? !json_is_array(child) : !json_is_object(child)) {
            return qs_conflict(msg);
        }
        if (append) {
            if (k != count - 1) {
                *msg = "invalid query string: '[]' is only allowed at the end of a key";
                return -DS_E_FORMAT;
            }
            return json_array_append_new(child, json_string(value)) < 0 ? -ENOMEM : 0;
        }
        node = child;
        name = names[k];
    }
    json_t *cur = json_object_get(node, name);
    if (!cur) {
        return json_object_set_new(node, name, json_string(value)) < 0 ? -ENOMEM : 0;
    }
    if (json_is_array(cur)) {
        return json_array_append_new(cur, json_string(value)) < 0 ? -ENOMEM : 0;
    }
    if (!json_is_string(cur)) {
        return qs_conflict(msg);
    }
    /* A repeated plain key collects its values in order. */
    json_t *arr = json_array();
    if (!arr || json_array_append(arr, cur) < 0 ||
        json_array_append_new(arr, json_string(value)) < 0 ||
        json_object_set_new(node, name, arr) < 0) {
        json_decref(arr);
        return -ENOMEM;
    }
    return 0;
}

/* A canonical list index: "0" or [1-9][0-9]*, at most DS_RPC_QUERY_INDEX_MAX. */
static int qs_index(const char *key, long *out)
{
    size_t n = strlen(key);
    if (n == 0 || n > QS_INDEX_DIGITS_MAX || (n > 1 && key[0] == '0')) {
        return -DS_E_FORMAT;
    }
    long v = 0;
    for (size_t i = 0; i < n; i++) {
        if (key[i] < '0' || key[i] > '9') {
            return -DS_E_FORMAT;
        }
        v = v * 10 + (key[i] - '0');
    }
    if (v > DS_RPC_QUERY_INDEX_MAX) {
        return -DS_E_LIMIT;
    }
    *out = v;
    return 0;
}

struct qs_item {
    long index;
    json_t *value;
};

static int qs_item_cmp(const void *a, const void *b)
{
    const struct qs_item *x = a, *y = b;
    return (x->index > y->index) - (x->index < y->index);
}

/* Turn objects whose keys are all list indexes into arrays ordered by index (recursively). */
static int qs_finalize(json_t *node, json_t **out_replacement, const char **msg)
{
    *out_replacement = NULL;
    if (json_is_array(node)) {
        for (size_t i = 0; i < json_array_size(node); i++) {
            json_t *rep;
            DS_TRY(qs_finalize(json_array_get(node, i), &rep, msg));
            if (rep && json_array_set_new(node, i, rep) < 0) {
                return -ENOMEM;
            }
        }
        return 0;
    }
    if (!json_is_object(node)) {
        return 0;
    }
    bool all_index = json_object_size(node) > 0;
    for (void *it = json_object_iter(node); it; it = json_object_iter_next(node, it)) {
        json_t *rep;
        DS_TRY(qs_finalize(json_object_iter_value(it), &rep, msg));
        if (rep && json_object_iter_set_new(node, it, rep) < 0) {
            return -ENOMEM;
        }
        long idx;
        int r = qs_index(json_object_iter_key(it), &idx);
        if (r == -DS_E_LIMIT) {
            *msg = "invalid query string: list index too large";
            return r;
        }
        all_index = all_index && r == 0;
    }
    if (!all_index) {
        return 0;
    }
    size_t n = json_object_size(node);
    struct qs_item *items = calloc(n, sizeof(*items));
    if (!items) {
        return -ENOMEM;
    }
    size_t i = 0;
    for (void *it = json_object_iter(node); it; it = json_object_iter_next(node, it)) {
        if (qs_index(json_object_iter_key(it), &items[i].index) < 0) {
            free(items);
            return -DS_E_FORMAT;
        }
        items[i++].value = json_object_iter_value(it);
    }
    qsort(items, n, sizeof(*items), qs_item_cmp);
    json_t *arr = json_array();
    int r = arr ? 0 : -ENOMEM;
    for (i = 0; r == 0 && i < n; i++) {
        if (json_array_append(arr, items[i].value) < 0) {
            r = -ENOMEM;
        }
    }
    free(items);
    if (r < 0) {
        json_decref(arr);
        return r;
    }
    *out_replacement = arr;
    return 0;
}

int ds_rpc_query_decode(const char *query, size_t len, json_t **out, const char **out_msg)
{
    const char *msg_local = NULL;
    const char **msg = out_msg ? out_msg : &msg_local;
    struct qs_seg segs[DS_RPC_QUERY_DEPTH_MAX + 1];
    char *names[DS_RPC_QUERY_DEPTH_MAX + 1] = {0};
    char *value = NULL;
    int count = 0;
    size_t pairs = 0, pos = 0;
    int r = 0;
    json_t *root = json_object();
    if (!root) {
        return -ENOMEM;
    }
    *msg = "out of memory";
    while (pos < len) {
        const char *pair = query + pos;
        const char *amp = memchr(pair, '&', len - pos);
        size_t plen = amp ? (size_t)(amp - pair) : len - pos;
        pos += plen + 1;
        if (plen == 0) {
            continue;
        }
        if (++pairs > DS_RPC_QUERY_PAIRS_MAX) {
            *msg = "invalid query string: too many pairs";
            r = -DS_E_LIMIT;
            goto out;
        }
        const char *eq = memchr(pair, '=', plen);
        size_t klen = eq ? (size_t)(eq - pair) : plen;
        count = qs_split_key(pair, klen, segs, msg);
        if (count <= 0) {
            r = count;
            if (r < 0) {
                goto out;
            }
            continue;
        }
        for (int i = 0; i < count; i++) {
            r = qs_decode(segs[i].p, segs[i].n, &names[i], msg);
            if (r < 0) {
                goto out;
            }
        }
        r = eq ? qs_decode(eq + 1, plen - klen - 1, &value, msg) : qs_decode("", 0, &value, msg);
        if (r < 0) {
            goto out;
        }
        r = qs_insert(root, names, count, value, msg);
        if (r < 0) {
            goto out;
        }
        for (int i = 0; i < count; i++) {
            free(names[i]);
            names[i] = NULL;
        }
        free(value);
        value = NULL;
        count = 0;
    }
    json_t *rep;
    r = qs_finalize(root, &rep, msg);
    if (r < 0) {
        goto out;
    }
    if (rep) {
        /* The top level is the request message, which is always a map. */
        json_decref(rep);
    }
    *out = root;
    root = NULL;
    *msg = NULL;
out:
    for (int i = 0; i < DS_RPC_QUERY_DEPTH_MAX + 1; i++) {
        free(names[i]);
    }
    free(value);
    json_decref(root);
    return r;
}

bool ds_rpc_query_json_flag(const char *query, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        const char *pair = query + pos;
        const char *amp = memchr(pair, '&', len - pos);
        size_t plen = amp ? (size_t)(amp - pair) : len - pos;
        pos += plen + 1;
        const char *eq = memchr(pair, '=', plen);
        size_t klen = eq ? (size_t)(eq - pair) : plen;
        /* "json" and "true" are short and escapes only make text longer, so a bound on the
         * raw lengths is enough. */
        if (klen > 12 || (eq && plen - klen - 1 > 12)) {
            continue;
        }
        char kbuf[16], vbuf[16];
        size_t kn = rpc_percent_decode(pair, klen, kbuf, true);
        size_t vn = eq ? rpc_percent_decode(eq + 1, plen - klen - 1, vbuf, true) : 0;
        if (!eq) {
            vbuf[0] = 0;
        }
        if (kn == 4 && memcmp(kbuf, "json", 4) == 0 &&
            (vn == 0 || strcmp(vbuf, "1") == 0 || strcmp(vbuf, "true") == 0)) {
            return true;
        }
    }
    return false;
}
