/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Event logs: the owned container (struct ds_event_log), the CCEL / TCG crypto-agile binary log
 * parser with dstack's TDX conversion (spec attestation.md §4.1), RTMR replay (§4.3, §4.4
 * replay_events), and find_event (§4.6). The parser reads only through struct ds_reader and
 * checks every length against a named limit before allocating.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "attest/eventlog_priv.h"
#include "dstack/eventlog.h"

/* "Spec ID Event03\0", the signature of the crypto-agile TCG_EfiSpecIDEvent. */
static const uint8_t spec_id_signature[16] = "Spec ID Event03";
#define CCEL_PADDING      0xFFFFFFFFu
#define HEADER_DIGEST_LEN 20 /* the legacy SHA-1 digest of the header event */
#define TDX_MAX_IMR_INDEX 4  /* CCEL MR index 1..4 = RTMR0..3 */
#define ACPI_LABEL_COUNT  3

static const char *const acpi_labels[ACPI_LABEL_COUNT] = {
    DS_EVENT_ACPI_LOADER,
    DS_EVENT_ACPI_RSDP,
    DS_EVENT_ACPI_TABLES,
};

/* ---- container ---------------------------------------------------------------------------- */

int ds_eventlog_new(struct ds_event_log **out)
{
    struct ds_event_log *log = calloc(1, sizeof(*log));
    if (!log) {
        return -ENOMEM;
    }
    *out = log;
    return 0;
}

static void event_done(struct ds_event *ev)
{
    free(ev->name);
    free(ev->payload);
    free(ev->preimage);
    memset(ev, 0, sizeof(*ev));
}

void ds_eventlog_free(struct ds_event_log *log)
{
    if (!log) {
        return;
    }
    for (size_t i = 0; i < log->count; i++) {
        event_done(&log->events[i]);
    }
    free(log->events);
    free(log);
}

static int grow(struct ds_event_log *log)
{
    if (log->count >= DS_EVENTLOG_MAX_EVENTS) {
        return -DS_E_LIMIT;
    }
    if (log->count < log->cap) {
        return 0;
    }
    size_t cap = log->cap ? log->cap * 2 : 32;
    if (cap > DS_EVENTLOG_MAX_EVENTS) {
        cap = DS_EVENTLOG_MAX_EVENTS;
    }
    struct ds_event *p = realloc(log->events, cap * sizeof(*p));
    if (!p) {
        return -ENOMEM;
    }
    log->events = p;
    log->cap = cap;
    return 0;
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *d = malloc(n ? n : 1);
    if (d && n) {
        memcpy(d, p, n);
    }
    return d;
}

/* Validate ev and take ownership of nothing: everything is deep-copied. */
int ds_eventlog_append(struct ds_event_log *log, const struct ds_event *ev)
{
    const char *name = ev->name ? ev->name : "";
    size_t name_len = strlen(name);
    struct ds_event copy;
    int r;

    if (ev->imr >= DS_RTMR_COUNT || (ev->version != 1 && ev->version != 2) ||
        ev->digest_len > DS_EVENT_DIGEST_MAX) {
        return -DS_E_FORMAT;
    }
    if (name_len > DS_EVENTLOG_MAX_NAME || ev->payload_len > DS_EVENTLOG_MAX_PAYLOAD ||
        ev->preimage_len > DS_EVENTLOG_MAX_PREIMAGE) {
        return -DS_E_LIMIT;
    }
    if (!ds_evl_utf8_valid(name, name_len)) {
        return -DS_E_FORMAT;
    }
    if ((ev->payload_len && !ev->payload) || (ev->preimage_len && !ev->preimage)) {
        return -EINVAL;
    }
    r = grow(log);
    if (r < 0) {
        return r;
    }
    memset(&copy, 0, sizeof(copy));
    copy.imr = ev->imr;
    copy.event_type = ev->event_type;
    copy.version = ev->version;
    memcpy(copy.digest, ev->digest, ev->digest_len);
    copy.digest_len = ev->digest_len;
    copy.name = (char *)dup_bytes(name, name_len + 1);
    copy.payload = ev->payload_len ? dup_bytes(ev->payload, ev->payload_len) : NULL;
    copy.payload_len = ev->payload_len;
    if (ev->preimage) {
        copy.preimage = dup_bytes(ev->preimage, ev->preimage_len);
        copy.preimage_len = ev->preimage_len;
    }
    if (!copy.name || (ev->payload_len && !copy.payload) || (ev->preimage && !copy.preimage)) {
        event_done(&copy);
        return -ENOMEM;
    }
    log->events[log->count++] = copy;
    return 0;
}

int ds_eventlog_append_runtime(struct ds_event_log *log, const char *name, const void *payload,
                               size_t payload_len, uint32_t version)
{
    struct ds_event ev;
    char *pre = NULL;
    size_t pre_len = 0;
    int r;

    memset(&ev, 0, sizeof(ev));
    ev.imr = DS_RUNTIME_EVENT_IMR;
    ev.event_type = DS_RUNTIME_EVENT_TYPE;
    ev.version = version;
    ev.name = (char *)(name ? name : "");
    ev.payload = (uint8_t *)payload;
    ev.payload_len = payload_len;
    if (version == 2) {
        r = ds_runtime_event_preimage_v2(ev.name, payload, payload_len, &pre, &pre_len);
        if (r < 0) {
            goto out;
        }
        ev.preimage = (uint8_t *)pre;
        ev.preimage_len = pre_len;
    }
    r = ds_runtime_event_digest_sha384(version, ev.name, payload, payload_len, ev.digest);
    if (r < 0) {
        goto out;
    }
    ev.digest_len = DS_SHA384_LEN;
    r = ds_eventlog_append(log, &ev);
out:
    free(pre);
    return r;
}

/* ---- CCEL parser -------------------------------------------------------------------------- */

static int alg_digest_size(uint16_t alg, size_t *out)
{
    switch (alg) {
    case DS_TPM_ALG_SHA1:
        *out = 20;
        return 0;
    case DS_TPM_ALG_SHA256:
        *out = 32;
        return 0;
    case DS_TPM_ALG_SHA384:
        *out = 48;
        return 0;
    case DS_TPM_ALG_SHA512:
        *out = 64;
        return 0;
    default:
        return -DS_E_UNSUPPORTED;
    }
}

/*
 * The header event (TCG_PCClientPCREvent) and its TCG_EfiSpecIDEvent. The algorithm list is
 * bounds-checked and bounded but not used for sizes: as upstream, digest sizes come from the
 * fixed table, and unknown algorithms fail when an event uses them.
 */
static int parse_ccel_header(struct ds_reader *r)
{
    uint32_t imr, type, event_size, platform_class, n_algs;
    uint8_t minor, major, errata, uintn, vendor_size;
    uint8_t sig[sizeof(spec_id_signature)];
    struct ds_reader ev;

    DS_TRY(ds_rd_u32le(r, &imr));
    DS_TRY(ds_rd_u32le(r, &type));
    DS_TRY(ds_rd_skip(r, HEADER_DIGEST_LEN));
    DS_TRY(ds_rd_u32le(r, &event_size));
    if (type != DS_EV_NO_ACTION) {
        return -DS_E_FORMAT;
    }
    if (event_size > DS_EVENTLOG_MAX_PAYLOAD) {
        return -DS_E_LIMIT;
    }
    DS_TRY(ds_rd_sub(r, event_size, &ev));

    DS_TRY(ds_rd_copy(&ev, sig, sizeof(sig)));
    if (memcmp(sig, spec_id_signature, sizeof(sig)) != 0) {
        return -DS_E_FORMAT;
    }
    DS_TRY(ds_rd_u32le(&ev, &platform_class));
    DS_TRY(ds_rd_u8(&ev, &minor));
    DS_TRY(ds_rd_u8(&ev, &major));
    DS_TRY(ds_rd_u8(&ev, &errata));
    DS_TRY(ds_rd_u8(&ev, &uintn));
    DS_TRY(ds_rd_u32le(&ev, &n_algs));
    if (n_algs == 0) {
        return -DS_E_FORMAT;
    }
    if (n_algs > DS_EVENTLOG_MAX_ALGS) {
        return -DS_E_LIMIT;
    }
    for (uint32_t i = 0; i < n_algs; i++) {
        uint16_t alg, size;
        DS_TRY(ds_rd_u16le(&ev, &alg));
        DS_TRY(ds_rd_u16le(&ev, &size));
    }
    DS_TRY(ds_rd_u8(&ev, &vendor_size));
    DS_TRY(ds_rd_skip(&ev, vendor_size));
    return 0;
}

/* Label the first three imr-0 "ACPI DATA" events (spec §4.1, upstream tdx.rs). */
static int label_acpi_events(struct ds_event_log *log)
{
    size_t seen = 0;
    const size_t plen = sizeof(DS_ACPI_DATA_PAYLOAD) - 1;
    for (size_t i = 0; i < log->count && seen < ACPI_LABEL_COUNT; i++) {
        struct ds_event *ev = &log->events[i];
        if (ev->imr != 0 || ev->event_type != DS_EV_PLATFORM_CONFIG_FLAGS ||
            ev->payload_len != plen || memcmp(ev->payload, DS_ACPI_DATA_PAYLOAD, plen) != 0) {
            continue;
        }
        char *name = strdup(acpi_labels[seen]);
        if (!name) {
            return -ENOMEM;
        }
        free(ev->name);
        ev->name = name;
        seen++;
    }
    return 0;
}

/* One TCG_PCR_EVENT2; appends it to log unless imr_index is 0. */
static int parse_ccel_event(struct ds_reader *r, struct ds_event_log *log)
{
    uint32_t imr_index, type, n_digests, event_size;
    struct ds_event ev;
    const uint8_t *event_data;

    DS_TRY(ds_rd_u32le(r, &imr_index));
    DS_TRY(ds_rd_u32le(r, &type));
    DS_TRY(ds_rd_u32le(r, &n_digests));
    if (n_digests > DS_EVENTLOG_MAX_ALGS) {
        return -DS_E_LIMIT;
    }
    memset(&ev, 0, sizeof(ev));
    for (uint32_t i = 0; i < n_digests; i++) {
        uint16_t alg;
        size_t size;
        const uint8_t *d;
        DS_TRY(ds_rd_u16le(r, &alg));
        DS_TRY(alg_digest_size(alg, &size));
        DS_TRY(ds_rd_ptr(r, size, &d));
        if (i == 0) {
            memcpy(ev.digest, d, size);
            ev.digest_len = size;
        }
    }
    DS_TRY(ds_rd_u32le(r, &event_size));
    if (event_size > DS_EVENTLOG_MAX_PAYLOAD) {
        return -DS_E_LIMIT;
    }
    DS_TRY(ds_rd_ptr(r, event_size, &event_data));

    if (imr_index == 0) {
        return 0; /* GCP writes some MR-0 events; upstream drops them */
    }
    if (imr_index > TDX_MAX_IMR_INDEX || n_digests != 1) {
        return -DS_E_FORMAT;
    }
    ev.imr = imr_index - 1;
    ev.event_type = type;
    ev.version = 1;
    ev.name = "";
    ev.payload = (uint8_t *)event_data;
    ev.payload_len = event_size;
    return ds_eventlog_append(log, &ev);
}

int ds_eventlog_parse_ccel(const uint8_t *data, size_t len, struct ds_event_log **out)
{
    struct ds_reader r;
    struct ds_event_log *log = NULL;
    size_t parsed = 0;
    int ret;

    if (len > DS_EVENTLOG_MAX_CCEL) {
        return -DS_E_LIMIT;
    }
    ds_rd_init(&r, data, len);
    ret = ds_eventlog_new(&log);
    if (ret < 0) {
        goto out;
    }
    ret = parse_ccel_header(&r);
    if (ret < 0) {
        goto out;
    }
    while (ds_rd_left(&r) > 0) {
        struct ds_reader peek = r;
        uint32_t first;
        ret = ds_rd_u32le(&peek, &first);
        if (ret < 0) {
            goto out;
        }
        if (first == CCEL_PADDING) {
            break;
        }
        if (++parsed > DS_EVENTLOG_MAX_EVENTS) {
            ret = -DS_E_LIMIT;
            goto out;
        }
        ret = parse_ccel_event(&r, log);
        if (ret < 0) {
            goto out;
        }
    }
    ret = label_acpi_events(log);
    if (ret < 0) {
        goto out;
    }
    *out = log;
    log = NULL;
out:
    ds_eventlog_free(log);
    return ret;
}

/* ---- replay ------------------------------------------------------------------------------- */

static bool name_is(const struct ds_event *ev, const char *name)
{
    return ev->name && strcmp(ev->name, name) == 0;
}

int ds_eventlog_replay(const struct ds_event_log *log, const char *to_event,
                       uint8_t out[DS_RTMR_COUNT][DS_RTMR_SIZE])
{
    uint8_t mr[DS_RTMR_COUNT][DS_RTMR_SIZE];
    memset(mr, 0, sizeof(mr));
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        uint8_t d[DS_EVENT_DIGEST_MAX];
        uint8_t padded[DS_RTMR_SIZE];
        size_t dlen;
        if (ev->imr >= DS_RTMR_COUNT) {
            return -DS_E_FORMAT;
        }
        DS_TRY(ds_event_effective_digest(ev, d, &dlen));
        if (dlen > DS_RTMR_SIZE) {
            return -DS_E_FORMAT;
        }
        memset(padded, 0, sizeof(padded));
        memcpy(padded, d, dlen);
        ds_sha384_v(mr[ev->imr], 2, mr[ev->imr], (size_t)DS_RTMR_SIZE, padded,
                    (size_t)DS_RTMR_SIZE);
        if (to_event && name_is(ev, to_event)) {
            break;
        }
    }
    memcpy(out, mr, sizeof(mr));
    return 0;
}

int ds_eventlog_replay_runtime_sha384(const struct ds_event_log *log, const char *to_event,
                                      uint8_t out[DS_SHA384_LEN])
{
    uint8_t mr[DS_SHA384_LEN];
    memset(mr, 0, sizeof(mr));
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        uint8_t d[DS_SHA384_LEN];
        if (!ds_event_is_runtime(ev)) {
            continue;
        }
        DS_TRY(
            ds_runtime_event_digest_sha384(ev->version, ev->name, ev->payload, ev->payload_len, d));
        ds_sha384_v(mr, 2, mr, sizeof(mr), d, sizeof(d));
        if (to_event && name_is(ev, to_event)) {
            break;
        }
    }
    memcpy(out, mr, sizeof(mr));
    return 0;
}

int ds_eventlog_replay_runtime_sha256(const struct ds_event_log *log, const char *to_event,
                                      uint8_t out[DS_SHA256_LEN])
{
    uint8_t mr[DS_SHA256_LEN];
    memset(mr, 0, sizeof(mr));
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        uint8_t d[DS_SHA256_LEN];
        if (!ds_event_is_runtime(ev)) {
            continue;
        }
        DS_TRY(
            ds_runtime_event_digest_sha256(ev->version, ev->name, ev->payload, ev->payload_len, d));
        ds_sha256_v(mr, 2, mr, sizeof(mr), d, sizeof(d));
        if (to_event && name_is(ev, to_event)) {
            break;
        }
    }
    memcpy(out, mr, sizeof(mr));
    return 0;
}

int ds_rtmr_first_mismatch(const uint8_t replayed[DS_RTMR_COUNT][DS_RTMR_SIZE],
                           const uint8_t expected[DS_RTMR_COUNT][DS_RTMR_SIZE])
{
    for (int i = 0; i < DS_RTMR_COUNT; i++) {
        if (!ds_ct_equal(replayed[i], expected[i], DS_RTMR_SIZE)) {
            return i;
        }
    }
    return -1;
}

int ds_eventlog_verify_rtmr3(const struct ds_event_log *log, const struct ds_td_report *td)
{
    uint8_t rt[DS_SHA384_LEN];
    DS_TRY(ds_eventlog_replay_runtime_sha384(log, NULL, rt));
    return ds_ct_equal(rt, td->rtmr[3], DS_SHA384_LEN) ? 0 : -DS_E_MISMATCH;
}

const struct ds_event *ds_eventlog_find_event(const struct ds_event_log *log, const char *name)
{
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        if (!ds_event_is_runtime(ev)) {
            continue;
        }
        if (name_is(ev, DS_EVENT_SYSTEM_READY)) {
            break;
        }
        if (name_is(ev, name)) {
            return ev;
        }
    }
    return NULL;
}
