/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TCB info and QE identity (spec: ../shared/spec/attestation.md §2.5): parsing of the signed
 * JSON with jansson (only after its signature verified), the canonical order of TCB levels,
 * platform matching (FMSPC, PCE ID, SGX and TDX component SVNs, TDX module identity), the QE
 * identity policy, TCB status names and the status/advisory merge. Parsed values are plain
 * structs so a verifier can cache them and match many quotes against them.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "attest/verify_internal.h"
#include "dstack/crypto.h"

/* ---- status names ---------------------------------------------------------------------------- */

static const char *const status_names[DS_TCB_STATUS_MAX] = {
    [DS_TCB_UP_TO_DATE] = "UpToDate",
    [DS_TCB_SW_HARDENING_NEEDED] = "SWHardeningNeeded",
    [DS_TCB_CONFIGURATION_NEEDED] = "ConfigurationNeeded",
    [DS_TCB_CONFIGURATION_AND_SW_HARDENING_NEEDED] = "ConfigurationAndSWHardeningNeeded",
    [DS_TCB_OUT_OF_DATE] = "OutOfDate",
    [DS_TCB_OUT_OF_DATE_CONFIGURATION_NEEDED] = "OutOfDateConfigurationNeeded",
    [DS_TCB_REVOKED] = "Revoked",
};

const char *ds_tcb_status_name(enum ds_tcb_status s)
{
    if ((unsigned)s >= DS_TCB_STATUS_MAX) {
        return "Unknown";
    }
    return status_names[s];
}

int ds_tcb_status_parse(const char *s, enum ds_tcb_status *out)
{
    if (!s) {
        return -DS_E_FORMAT;
    }
    for (unsigned i = 0; i < DS_TCB_STATUS_MAX; i++) {
        if (strcmp(s, status_names[i]) == 0) {
            *out = (enum ds_tcb_status)i;
            return 0;
        }
    }
    return -DS_E_FORMAT;
}

/* ---- merge ----------------------------------------------------------------------------------- */

void ds_attest_status_init(struct ds_attest_status *s, enum ds_tcb_status status)
{
    memset(s, 0, sizeof(*s));
    s->status = status;
}

int ds_attest_status_merge(struct ds_attest_status *a, enum ds_tcb_status b,
                           const char *const *b_ids, size_t b_count)
{
    /* The enum is ordered by severity (§2.5); ties keep a. */
    if (b > a->status) {
        a->status = b;
    }
    for (size_t i = 0; b_ids && i < b_count; i++) {
        bool seen = false;
        for (size_t j = 0; j < a->count && !seen; j++) {
            seen = strcmp(a->ids[j], b_ids[i]) == 0;
        }
        if (seen) {
            continue;
        }
        if (a->count >= DS_ADVISORY_MAX) {
            return -DS_E_LIMIT;
        }
        a->ids[a->count++] = b_ids[i];
    }
    return 0;
}

/* ---- time ------------------------------------------------------------------------------------ */

int64_t ds_attest_unix_from_civil(int64_t y, unsigned mon, unsigned d, unsigned h, unsigned mi,
                                  unsigned s)
{
    /* Howard Hinnant's days_from_civil. */
    y -= mon <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t mp = (mon + 9) % 12;
    int64_t doy = (153 * mp + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    int64_t days = era * 146097 + doe - 719468;
    return days * 86400 + (int64_t)h * 3600 + (int64_t)mi * 60 + s;
}

static int digits(const char **p, unsigned n, unsigned *out)
{
    unsigned v = 0;
    for (unsigned i = 0; i < n; i++) {
        char c = (*p)[i];
        if (c < '0' || c > '9') {
            return -DS_E_FORMAT;
        }
        v = v * 10 + (unsigned)(c - '0');
    }
    *p += n;
    *out = v;
    return 0;
}

static int expect(const char **p, char c)
{
    if (**p != c) {
        return -DS_E_FORMAT;
    }
    (*p)++;
    return 0;
}

static bool leap_year(unsigned y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

int ds_attest_parse_rfc3339(const char *s, int64_t *out)
{
    static const unsigned mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    unsigned y, mon, d, h, mi, sec, oh = 0, om = 0;
    int sign = 0;
    const char *p = s;
    if (!s) {
        return -DS_E_FORMAT;
    }
    DS_TRY(digits(&p, 4, &y));
    DS_TRY(expect(&p, '-'));
    DS_TRY(digits(&p, 2, &mon));
    DS_TRY(expect(&p, '-'));
    DS_TRY(digits(&p, 2, &d));
    if (*p != 'T' && *p != 't') {
        return -DS_E_FORMAT;
    }
    p++;
    DS_TRY(digits(&p, 2, &h));
    DS_TRY(expect(&p, ':'));
    DS_TRY(digits(&p, 2, &mi));
    DS_TRY(expect(&p, ':'));
    DS_TRY(digits(&p, 2, &sec));
    if (*p == '.') {
        /* Fractional seconds are allowed and truncated. */
        p++;
        if (*p < '0' || *p > '9') {
            return -DS_E_FORMAT;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        sign = *p == '+' ? 1 : -1;
        p++;
        DS_TRY(digits(&p, 2, &oh));
        DS_TRY(expect(&p, ':'));
        DS_TRY(digits(&p, 2, &om));
        DS_ENSURE(oh <= 23 && om <= 59, -DS_E_FORMAT);
    } else {
        return -DS_E_FORMAT;
    }
    DS_ENSURE(*p == '\0', -DS_E_FORMAT);
    DS_ENSURE(mon >= 1 && mon <= 12 && d >= 1, -DS_E_FORMAT);
    DS_ENSURE(d <= mdays[mon - 1] + (mon == 2 && leap_year(y) ? 1u : 0u), -DS_E_FORMAT);
    /* RFC 3339 allows a leap second (60); it is read as the next second. */
    DS_ENSURE(h <= 23 && mi <= 59 && sec <= 60, -DS_E_FORMAT);
    int64_t t = ds_attest_unix_from_civil(y, mon, d, h, mi, sec);
    t -= (int64_t)sign * ((int64_t)oh * 3600 + (int64_t)om * 60);
    *out = t;
    return 0;
}

/* ---- JSON helpers ---------------------------------------------------------------------------- */

static void set_msg(char *msg, size_t msg_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_msg(char *msg, size_t msg_size, const char *fmt, ...)
{
    va_list ap;
    if (!msg || msg_size == 0) {
        return;
    }
    va_start(ap, fmt);
    vsnprintf(msg, msg_size, fmt, ap);
    va_end(ap);
}

/* Context for error messages: which document is being parsed. */
struct jctx {
    const char *doc;
    char *msg;
    size_t msg_size;
};

static int jfail(const struct jctx *c, const char *field, const char *why)
{
    set_msg(c->msg, c->msg_size, "%s: field \"%s\" %s", c->doc, field, why);
    return -DS_E_FORMAT;
}

static int j_string(const struct jctx *c, json_t *o, const char *key, const char **out)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        return jfail(c, key, "is missing");
    }
    if (!json_is_string(v)) {
        return jfail(c, key, "is not a string");
    }
    *out = json_string_value(v);
    return 0;
}

static int j_uint(const struct jctx *c, json_t *o, const char *key, json_int_t max, json_int_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        return jfail(c, key, "is missing");
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max) {
        return jfail(c, key, "is not an integer in range");
    }
    *out = json_integer_value(v);
    return 0;
}

static int j_hex(const struct jctx *c, json_t *o, const char *key, uint8_t *out, size_t n)
{
    const char *s;
    DS_TRY(j_string(c, o, key, &s));
    size_t len = strlen(s);
    if (len != 2 * n || ds_hex_decode(s, len, out, n) != (int)n) {
        return jfail(c, key, "is not hex of the expected length");
    }
    return 0;
}

static int j_date(const struct jctx *c, json_t *o, const char *key, int64_t *out)
{
    const char *s;
    DS_TRY(j_string(c, o, key, &s));
    if (ds_attest_parse_rfc3339(s, out) < 0) {
        return jfail(c, key, "is not an RFC 3339 date");
    }
    return 0;
}

static int j_status(const struct jctx *c, json_t *o, const char *key, enum ds_tcb_status *out)
{
    const char *s;
    DS_TRY(j_string(c, o, key, &s));
    if (ds_tcb_status_parse(s, out) < 0) {
        return jfail(c, key, "is not a known TCB status");
    }
    return 0;
}

/* An array member with at most max entries; absent is an error unless optional. */
static int j_array(const struct jctx *c, json_t *o, const char *key, size_t max, bool optional,
                   json_t **out)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (optional) {
            *out = NULL;
            return 0;
        }
        return jfail(c, key, "is missing");
    }
    if (!json_is_array(v)) {
        return jfail(c, key, "is not an array");
    }
    if (json_array_size(v) > max) {
        return jfail(c, key, "has too many entries");
    }
    *out = v;
    return 0;
}

static int j_object(const struct jctx *c, json_t *o, const char *key, bool optional, json_t **out)
{
    json_t *v = json_object_get(o, key);
    if (!v) {
        if (optional) {
            *out = NULL;
            return 0;
        }
        return jfail(c, key, "is missing");
    }
    if (!json_is_object(v)) {
        return jfail(c, key, "is not an object");
    }
    *out = v;
    return 0;
}

static void advisories_done(struct ds_attest_advisories *a)
{
    for (size_t i = 0; i < a->count; i++) {
        free(a->ids[i]);
    }
    free(a->ids);
    a->ids = NULL;
    a->count = 0;
}

/* Optional "advisoryIDs": array of strings. */
static int j_advisories(const struct jctx *c, json_t *o, struct ds_attest_advisories *out)
{
    json_t *arr, *v;
    size_t i;
    DS_TRY(j_array(c, o, "advisoryIDs", DS_ATTEST_MAX_LEVEL_ADVISORIES, true, &arr));
    if (!arr || json_array_size(arr) == 0) {
        return 0;
    }
    out->ids = calloc(json_array_size(arr), sizeof(*out->ids));
    if (!out->ids) {
        return -ENOMEM;
    }
    json_array_foreach(arr, i, v)
    {
        if (!json_is_string(v) || json_string_length(v) == 0 ||
            json_string_length(v) > DS_ATTEST_MAX_ADVISORY_LEN ||
            strlen(json_string_value(v)) != json_string_length(v)) {
            return jfail(c, "advisoryIDs", "holds an entry that is not a short string");
        }
        out->ids[i] = strdup(json_string_value(v));
        if (!out->ids[i]) {
            return -ENOMEM;
        }
        out->count = i + 1;
    }
    return 0;
}

/* Array of {"svn": u8, ...} into svn[], *count = number of entries. */
static int j_components(const struct jctx *c, json_t *tcb, const char *key, bool optional,
                        uint8_t *svn, size_t *count)
{
    json_t *arr, *v;
    size_t i;
    json_int_t n;
    DS_TRY(j_array(c, tcb, key, DS_ATTEST_MAX_COMPONENTS, optional, &arr));
    *count = 0;
    if (!arr) {
        return 0;
    }
    json_array_foreach(arr, i, v)
    {
        if (!json_is_object(v)) {
            return jfail(c, key, "holds a component that is not an object");
        }
        DS_TRY(j_uint(c, v, "svn", 255, &n));
        svn[i] = (uint8_t)n;
    }
    *count = json_array_size(arr);
    return 0;
}

static int j_isv_levels(const struct jctx *c, json_t *o, json_int_t svn_max,
                        struct ds_attest_isv_level **out, size_t *out_count)
{
    json_t *arr, *v, *tcb;
    size_t i;
    json_int_t n;
    DS_TRY(j_array(c, o, "tcbLevels", DS_ATTEST_MAX_LEVELS, false, &arr));
    *out_count = 0;
    if (json_array_size(arr) == 0) {
        return 0;
    }
    *out = calloc(json_array_size(arr), sizeof(**out));
    if (!*out) {
        return -ENOMEM;
    }
    json_array_foreach(arr, i, v)
    {
        struct ds_attest_isv_level *l = &(*out)[i];
        *out_count = i + 1;
        if (!json_is_object(v)) {
            return jfail(c, "tcbLevels", "holds an entry that is not an object");
        }
        DS_TRY(j_object(c, v, "tcb", false, &tcb));
        DS_TRY(j_uint(c, tcb, "isvsvn", svn_max, &n));
        l->isvsvn = (uint16_t)n;
        DS_TRY(j_status(c, v, "tcbStatus", &l->status));
        DS_TRY(j_advisories(c, v, &l->adv));
    }
    return 0;
}

static void isv_levels_free(struct ds_attest_isv_level *l, size_t n)
{
    for (size_t i = 0; l && i < n; i++) {
        advisories_done(&l[i].adv);
    }
    free(l);
}

static int load_json(const struct jctx *c, const char *text, size_t len, json_t **out)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        set_msg(c->msg, c->msg_size, "%s: invalid JSON at line %d: %s", c->doc, jerr.line,
                jerr.text);
        return -DS_E_FORMAT;
    }
    if (!json_is_object(root)) {
        json_decref(root);
        set_msg(c->msg, c->msg_size, "%s: not a JSON object", c->doc);
        return -DS_E_FORMAT;
    }
    *out = root;
    return 0;
}

static void copy_id(char *dst, size_t dst_size, const char *src)
{
    snprintf(dst, dst_size, "%s", src);
}

/* ---- TCB info -------------------------------------------------------------------------------- */

void ds_attest_tcb_info_free(struct ds_attest_tcb_info *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; t->levels && i < t->level_count; i++) {
        advisories_done(&t->levels[i].adv);
    }
    free(t->levels);
    for (size_t i = 0; t->modules && i < t->module_count; i++) {
        isv_levels_free(t->modules[i].levels, t->modules[i].level_count);
    }
    free(t->modules);
    free(t);
}

/* Lexicographic compare of svn vectors, a shorter prefix being smaller (Rust Vec order). */
static int svn_cmp(const uint8_t *a, size_t na, const uint8_t *b, size_t nb)
{
    size_t n = na < nb ? na : nb;
    for (size_t i = 0; i < n; i++) {
        if (a[i] != b[i]) {
            return a[i] < b[i] ? -1 : 1;
        }
    }
    return na == nb ? 0 : (na < nb ? -1 : 1);
}

/* Ascending comparison; the canonical order is the reverse (highest first). */
static int level_cmp(const struct ds_attest_tcb_level *a, const struct ds_attest_tcb_level *b,
                     bool tdx)
{
    int r = svn_cmp(a->sgx_svn, a->sgx_count, b->sgx_svn, b->sgx_count);
    if (r != 0) {
        return r;
    }
    if (a->pcesvn != b->pcesvn) {
        return a->pcesvn < b->pcesvn ? -1 : 1;
    }
    return tdx ? svn_cmp(a->tdx_svn, a->tdx_count, b->tdx_svn, b->tdx_count) : 0;
}

/* Stable insertion sort, descending (§2.5 canonical order). Levels number at most 256. */
static void sort_levels(struct ds_attest_tcb_level *l, size_t n, bool tdx)
{
    for (size_t i = 1; i < n; i++) {
        struct ds_attest_tcb_level cur = l[i];
        size_t j = i;
        while (j > 0 && level_cmp(&l[j - 1], &cur, tdx) < 0) {
            l[j] = l[j - 1];
            j--;
        }
        l[j] = cur;
    }
}

static int parse_tcb_levels(const struct jctx *c, json_t *root, bool tdx,
                            struct ds_attest_tcb_info *t)
{
    json_t *arr, *v, *tcb;
    size_t i;
    json_int_t n;
    DS_TRY(j_array(c, root, "tcbLevels", DS_ATTEST_MAX_LEVELS, false, &arr));
    if (json_array_size(arr) == 0) {
        return 0;
    }
    t->levels = calloc(json_array_size(arr), sizeof(*t->levels));
    if (!t->levels) {
        return -ENOMEM;
    }
    json_array_foreach(arr, i, v)
    {
        struct ds_attest_tcb_level *l = &t->levels[i];
        t->level_count = i + 1;
        if (!json_is_object(v)) {
            return jfail(c, "tcbLevels", "holds an entry that is not an object");
        }
        DS_TRY(j_object(c, v, "tcb", false, &tcb));
        DS_TRY(j_components(c, tcb, "sgxtcbcomponents", false, l->sgx_svn, &l->sgx_count));
        DS_TRY(j_components(c, tcb, "tdxtcbcomponents", !tdx, l->tdx_svn, &l->tdx_count));
        DS_TRY(j_uint(c, tcb, "pcesvn", 0xffff, &n));
        l->pcesvn = (uint16_t)n;
        DS_TRY(j_status(c, v, "tcbStatus", &l->status));
        DS_TRY(j_advisories(c, v, &l->adv));
    }
    return 0;
}

static int parse_tdx_module(const struct jctx *c, json_t *root, struct ds_attest_tcb_info *t)
{
    json_t *m, *arr, *v;
    size_t i;
    DS_TRY(j_object(c, root, "tdxModule", true, &m));
    if (m) {
        t->has_module = true;
        DS_TRY(j_hex(c, m, "mrsigner", t->module_mrsigner, sizeof(t->module_mrsigner)));
        DS_TRY(j_hex(c, m, "attributes", t->module_attributes, sizeof(t->module_attributes)));
        DS_TRY(j_hex(c, m, "attributesMask", t->module_attributes_mask,
                     sizeof(t->module_attributes_mask)));
    }
    DS_TRY(j_array(c, root, "tdxModuleIdentities", DS_ATTEST_MAX_MODULES, true, &arr));
    if (!arr || json_array_size(arr) == 0) {
        return 0;
    }
    t->modules = calloc(json_array_size(arr), sizeof(*t->modules));
    if (!t->modules) {
        return -ENOMEM;
    }
    json_array_foreach(arr, i, v)
    {
        struct ds_attest_module_identity *mi = &t->modules[i];
        const char *id;
        t->module_count = i + 1;
        if (!json_is_object(v)) {
            return jfail(c, "tdxModuleIdentities", "holds an entry that is not an object");
        }
        DS_TRY(j_string(c, v, "id", &id));
        if (strlen(id) >= sizeof(mi->id)) {
            return jfail(c, "tdxModuleIdentities.id", "is too long");
        }
        copy_id(mi->id, sizeof(mi->id), id);
        DS_TRY(j_hex(c, v, "mrsigner", mi->mrsigner, sizeof(mi->mrsigner)));
        DS_TRY(j_hex(c, v, "attributes", mi->attributes, sizeof(mi->attributes)));
        DS_TRY(j_hex(c, v, "attributesMask", mi->attributes_mask, sizeof(mi->attributes_mask)));
        DS_TRY(j_isv_levels(c, v, 255, &mi->levels, &mi->level_count));
    }
    return 0;
}

static int tcb_info_fill(const struct jctx *c, json_t *root, struct ds_attest_tcb_info *t)
{
    const char *id;
    json_int_t n;
    DS_TRY(j_string(c, root, "id", &id));
    if (strcmp(id, "SGX") != 0 && strcmp(id, "TDX") != 0) {
        return jfail(c, "id", "is neither \"SGX\" nor \"TDX\"");
    }
    copy_id(t->id, sizeof(t->id), id);
    DS_TRY(j_uint(c, root, "version", 255, &n));
    t->version = (unsigned)n;
    DS_TRY(j_date(c, root, "issueDate", &t->issue_date));
    DS_TRY(j_date(c, root, "nextUpdate", &t->next_update));
    DS_TRY(j_hex(c, root, "fmspc", t->fmspc, sizeof(t->fmspc)));
    DS_TRY(j_hex(c, root, "pceId", t->pce_id, sizeof(t->pce_id)));
    DS_TRY(j_uint(c, root, "tcbType", 0xffffffff, &n));
    DS_TRY(j_uint(c, root, "tcbEvaluationDataNumber", 0xffffffff, &n));
    bool tdx = strcmp(t->id, "TDX") == 0;
    DS_TRY(parse_tcb_levels(c, root, tdx, t));
    DS_TRY(parse_tdx_module(c, root, t));
    sort_levels(t->levels, t->level_count, tdx);
    return 0;
}

int ds_attest_tcb_info_parse(const char *json, size_t len, struct ds_attest_tcb_info **out,
                             char *msg, size_t msg_size)
{
    const struct jctx c = {"tcb_info", msg, msg_size};
    json_t *root = NULL;
    struct ds_attest_tcb_info *t = NULL;
    int r = load_json(&c, json, len, &root);
    if (r < 0) {
        goto out;
    }
    t = calloc(1, sizeof(*t));
    if (!t) {
        r = -ENOMEM;
        goto out;
    }
    r = tcb_info_fill(&c, root, t);
    if (r < 0) {
        goto out;
    }
    *out = t;
    t = NULL;
out:
    ds_attest_tcb_info_free(t);
    json_decref(root);
    return r;
}

/* ---- QE identity ----------------------------------------------------------------------------- */

void ds_attest_qe_identity_free(struct ds_attest_qe_identity *q)
{
    if (!q) {
        return;
    }
    isv_levels_free(q->levels, q->level_count);
    free(q);
}

static uint32_t le32(const uint8_t b[4])
{
    return (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16) | ((uint32_t)b[3] << 24);
}

static int qe_identity_fill(const struct jctx *c, json_t *root, struct ds_attest_qe_identity *q)
{
    const char *id;
    json_int_t n;
    uint8_t b4[4];
    DS_TRY(j_string(c, root, "id", &id));
    if (strlen(id) >= sizeof(q->id)) {
        return jfail(c, "id", "is too long");
    }
    copy_id(q->id, sizeof(q->id), id);
    DS_TRY(j_uint(c, root, "version", 255, &n));
    q->version = (unsigned)n;
    DS_TRY(j_date(c, root, "issueDate", &q->issue_date));
    DS_TRY(j_date(c, root, "nextUpdate", &q->next_update));
    DS_TRY(j_uint(c, root, "tcbEvaluationDataNumber", 0xffffffff, &n));
    /* miscselect is 4 hex bytes read as a little-endian u32 (§8). */
    DS_TRY(j_hex(c, root, "miscselect", b4, sizeof(b4)));
    q->miscselect = le32(b4);
    DS_TRY(j_hex(c, root, "miscselectMask", b4, sizeof(b4)));
    q->miscselect_mask = le32(b4);
    DS_TRY(j_hex(c, root, "attributes", q->attributes, sizeof(q->attributes)));
    DS_TRY(j_hex(c, root, "attributesMask", q->attributes_mask, sizeof(q->attributes_mask)));
    DS_TRY(j_hex(c, root, "mrsigner", q->mrsigner, sizeof(q->mrsigner)));
    DS_TRY(j_uint(c, root, "isvprodid", 0xffff, &n));
    q->isvprodid = (uint16_t)n;
    return j_isv_levels(c, root, 0xffff, &q->levels, &q->level_count);
}

int ds_attest_qe_identity_parse(const char *json, size_t len, struct ds_attest_qe_identity **out,
                                char *msg, size_t msg_size)
{
    const struct jctx c = {"qe_identity", msg, msg_size};
    json_t *root = NULL;
    struct ds_attest_qe_identity *q = NULL;
    int r = load_json(&c, json, len, &root);
    if (r < 0) {
        goto out;
    }
    q = calloc(1, sizeof(*q));
    if (!q) {
        r = -ENOMEM;
        goto out;
    }
    r = qe_identity_fill(&c, root, q);
    if (r < 0) {
        goto out;
    }
    *out = q;
    q = NULL;
out:
    ds_attest_qe_identity_free(q);
    json_decref(root);
    return r;
}

/* Advisory list of a parsed level as merge arguments. */
#define ADV(adv) (const char *const *)(adv).ids, (adv).count

/* ---- matching -------------------------------------------------------------------------------- */

static bool svn_at_least(const uint8_t *have, const uint8_t *need, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (have[i] < need[i]) {
            return false;
        }
    }
    return true;
}

/* First level in canonical order the platform meets (§2.5 step 3). */
static int match_level(const struct ds_attest_tcb_info *t, const struct ds_attest_pck_info *pck,
                       const struct ds_quote *q, const struct ds_attest_tcb_level **out, char *msg,
                       size_t msg_size)
{
    bool tdx = q->tee_type == DS_TEE_TYPE_TDX;
    for (size_t i = 0; i < t->level_count; i++) {
        const struct ds_attest_tcb_level *l = &t->levels[i];
        if (pck->pcesvn < l->pcesvn) {
            continue;
        }
        if (l->sgx_count != DS_ATTEST_TCB_COMPONENTS) {
            set_msg(msg, msg_size, "SGX component count mismatch (%zu in TCB level %zu)",
                    l->sgx_count, i);
            return -DS_E_FORMAT;
        }
        if (!svn_at_least(pck->cpusvn, l->sgx_svn, DS_ATTEST_TCB_COMPONENTS)) {
            continue;
        }
        if (tdx) {
            if (l->tdx_count != DS_ATTEST_TCB_COMPONENTS) {
                set_msg(msg, msg_size, "TDX component count mismatch (%zu in TCB level %zu)",
                        l->tdx_count, i);
                return -DS_E_FORMAT;
            }
            /* All 16 bytes, including module SVN and version (dcap-qvl; TD15 uses the base). */
            if (!svn_at_least(q->td.tee_tcb_svn, l->tdx_svn, DS_ATTEST_TCB_COMPONENTS)) {
                continue;
            }
        }
        *out = l;
        return 0;
    }
    set_msg(msg, msg_size, "No matching TCB level found");
    return -DS_E_POLICY;
}

/* TDX module identity (§2.5 step 4); merges the module level into *st. */
static int match_module(const struct ds_attest_tcb_info *t, const struct ds_quote *q,
                        struct ds_attest_status *st, char *msg, size_t msg_size)
{
    const uint8_t *mrsigner = t->module_mrsigner;
    const uint8_t *attrs = t->module_attributes;
    const uint8_t *mask = t->module_attributes_mask;
    const struct ds_attest_module_identity *mi = NULL;
    uint8_t isvsvn = q->td.tee_tcb_svn[0];
    uint8_t version = q->td.tee_tcb_svn[1];

    if (!t->has_module) {
        set_msg(msg, msg_size, "TDX TCB info has no tdxModule");
        return -DS_E_FORMAT;
    }
    if (version > 0 && t->module_count > 0) {
        char want[16];
        snprintf(want, sizeof(want), "TDX_%02X", version);
        for (size_t i = 0; i < t->module_count && !mi; i++) {
            if (strcasecmp(t->modules[i].id, want) == 0) {
                mi = &t->modules[i];
            }
        }
        if (!mi) {
            set_msg(msg, msg_size, "TDX module identity %s not found in TCB info", want);
            return -DS_E_NOT_FOUND;
        }
        mrsigner = mi->mrsigner;
        attrs = mi->attributes;
        mask = mi->attributes_mask;
    }
    if (memcmp(q->td.mr_signer_seam, mrsigner, 48) != 0) {
        set_msg(msg, msg_size, "TDX module mrsigner (mr_signer_seam) mismatch");
        return -DS_E_MISMATCH;
    }
    for (size_t i = 0; i < 8; i++) {
        uint8_t a = q->td.seam_attributes[i];
        if ((a & mask[i]) != (attrs[i] & mask[i]) || (a & (uint8_t)~mask[i]) != 0) {
            set_msg(msg, msg_size, "TDX module attributes (seam_attributes) mismatch");
            return -DS_E_MISMATCH;
        }
    }
    if (!mi) {
        return 0;
    }
    for (size_t i = 0; i < mi->level_count; i++) {
        if (isvsvn >= mi->levels[i].isvsvn) {
            if (ds_attest_status_merge(st, mi->levels[i].status, ADV(mi->levels[i].adv)) < 0) {
                set_msg(msg, msg_size, "too many advisory IDs");
                return -DS_E_LIMIT;
            }
            return 0;
        }
    }
    set_msg(msg, msg_size, "TDX module ISVSVN %u is below the minimum of %s", isvsvn, mi->id);
    return -DS_E_POLICY;
}

int ds_attest_match_platform(const struct ds_attest_tcb_info *t,
                             const struct ds_attest_pck_info *pck, const struct ds_quote *q,
                             struct ds_attest_status *out, char *msg, size_t msg_size)
{
    const struct ds_attest_tcb_level *l = NULL;
    struct ds_attest_status st;
    bool tdx = q->tee_type == DS_TEE_TYPE_TDX;

    if (memcmp(pck->fmspc, t->fmspc, sizeof(t->fmspc)) != 0) {
        set_msg(msg, msg_size, "Fmspc mismatch");
        return -DS_E_MISMATCH;
    }
    if (memcmp(pck->pce_id, t->pce_id, sizeof(t->pce_id)) != 0) {
        set_msg(msg, msg_size, "PCE ID mismatch");
        return -DS_E_MISMATCH;
    }
    if (tdx && (strcmp(t->id, "TDX") != 0 || t->version < 3)) {
        set_msg(msg, msg_size, "TDX quote with non-TDX TCB info (id %s, version %u)", t->id,
                t->version);
        return -DS_E_MISMATCH;
    }
    if (!tdx && (strcmp(t->id, "SGX") != 0 || t->version < 2)) {
        set_msg(msg, msg_size, "SGX quote with non-SGX TCB info (id %s, version %u)", t->id,
                t->version);
        return -DS_E_MISMATCH;
    }
    DS_TRY(match_level(t, pck, q, &l, msg, msg_size));
    ds_attest_status_init(&st, l->status);
    if (ds_attest_status_merge(&st, l->status, ADV(l->adv)) < 0) {
        set_msg(msg, msg_size, "too many advisory IDs");
        return -DS_E_LIMIT;
    }
    if (tdx) {
        DS_TRY(match_module(t, q, &st, msg, msg_size));
    }
    *out = st;
    return 0;
}

int ds_attest_match_qe(const struct ds_attest_qe_identity *qi, const struct ds_sgx_report *qe,
                       struct ds_attest_status *out, char *msg, size_t msg_size)
{
    if (memcmp(qe->mr_signer, qi->mrsigner, sizeof(qi->mrsigner)) != 0) {
        set_msg(msg, msg_size, "QE MRSIGNER mismatch");
        return -DS_E_MISMATCH;
    }
    if (qe->attributes[0] & 0x02) {
        set_msg(msg, msg_size, "QE is a debug enclave");
        return -DS_E_POLICY;
    }
    if (qe->isv_prod_id != qi->isvprodid) {
        set_msg(msg, msg_size, "QE ISVPRODID mismatch (%u, expected %u)", qe->isv_prod_id,
                qi->isvprodid);
        return -DS_E_MISMATCH;
    }
    if ((qe->misc_select & qi->miscselect_mask) != (qi->miscselect & qi->miscselect_mask)) {
        set_msg(msg, msg_size, "QE MISCSELECT mismatch");
        return -DS_E_MISMATCH;
    }
    for (size_t i = 0; i < sizeof(qi->attributes); i++) {
        if ((qe->attributes[i] & qi->attributes_mask[i]) !=
            (qi->attributes[i] & qi->attributes_mask[i])) {
            set_msg(msg, msg_size, "QE ATTRIBUTES mismatch");
            return -DS_E_MISMATCH;
        }
    }
    /* Levels in JSON order, which Intel publishes highest first (§2.2 step 7). */
    for (size_t i = 0; i < qi->level_count; i++) {
        if (qe->isv_svn >= qi->levels[i].isvsvn) {
            ds_attest_status_init(out, qi->levels[i].status);
            if (ds_attest_status_merge(out, qi->levels[i].status, ADV(qi->levels[i].adv)) < 0) {
                set_msg(msg, msg_size, "too many advisory IDs");
                return -DS_E_LIMIT;
            }
            return 0;
        }
    }
    set_msg(msg, msg_size, "QE ISVSVN %u is below the minimum of the QE identity", qe->isv_svn);
    return -DS_E_POLICY;
}
