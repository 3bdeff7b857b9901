/* SPDX-License-Identifier: Apache-2.0 */
/*
 * TEE provider selection and the checks every provider shares: ds_tee_open() picks "tdx" or
 * "sim:<socket>" from the spec, env DSTACK_TEE or autodetection, and every operation goes
 * through the provider's table (tee_provider.h), so code above lib/tee never knows which
 * provider it has.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"
#include "tee/tee_provider.h"

#define SIM_PREFIX      "sim:"
#define EMBEDDED_SPEC   "embedded"
#define EMBEDDED_PREFIX "embedded:"

struct ds_tee {
    const struct ds_tee_ops *ops;
    void *ctx;
};

static int fail(char *err, size_t err_size, int code, const char *msg)
{
    if (err && err_size) {
        snprintf(err, err_size, "%s", msg);
    }
    return code;
}

int ds_tee_open(const char *spec, struct ds_tee **out, char *err, size_t err_size)
{
    if (!spec || !*spec) {
        spec = getenv("DSTACK_TEE");
    }
    if (!spec || !*spec) {
        if (!ds_tee_tdx_detect()) {
            return fail(err, err_size, -DS_E_NOT_FOUND,
                        "no TEE found; set DSTACK_TEE=sim:<socket> to use the simulator");
        }
        spec = "tdx";
    }
    const struct ds_tee_ops *ops;
    void *ctx = NULL;
    int r;
    if (strcmp(spec, "tdx") == 0) {
        ops = &ds_tee_tdx_ops;
        r = ds_tee_tdx_open(&ctx, err, err_size);
    } else if (strncmp(spec, SIM_PREFIX, strlen(SIM_PREFIX)) == 0 &&
               spec[strlen(SIM_PREFIX)] != '\0') {
        ops = &ds_tee_simdev_ops;
        r = ds_tee_simdev_open(spec + strlen(SIM_PREFIX), &ctx, err, err_size);
    } else if (strcmp(spec, EMBEDDED_SPEC) == 0 ||
               strncmp(spec, EMBEDDED_PREFIX, strlen(EMBEDDED_PREFIX)) == 0) {
        /* In-process simulated module (tee_embedded.c), for development modes only. */
        ops = &ds_tee_embedded_ops;
        r = ds_tee_embedded_open(spec[strlen(EMBEDDED_SPEC)] ? spec + strlen(EMBEDDED_PREFIX)
                                                             : NULL,
                                 &ctx, err, err_size);
    } else {
        return fail(err, err_size, -DS_E_FORMAT,
                    "unknown TEE spec; use \"tdx\", \"sim:<socket path>\" or "
                    "\"embedded[:<seed hex>]\"");
    }
    if (r < 0) {
        return r;
    }
    struct ds_tee *t = calloc(1, sizeof(*t));
    if (!t) {
        ops->free(ctx);
        return -ENOMEM;
    }
    t->ops = ops;
    t->ctx = ctx;
    *out = t;
    return 0;
}

void ds_tee_close(struct ds_tee *t)
{
    if (!t) {
        return;
    }
    t->ops->free(t->ctx);
    free(t);
}

const char *ds_tee_kind(const struct ds_tee *t)
{
    return t->ops->kind;
}

bool ds_tee_is_simulated(const struct ds_tee *t)
{
    return t->ops->simulated;
}

int ds_tee_get_quote(struct ds_tee *t, const uint8_t report_data[DS_TEE_REPORT_DATA_SIZE],
                     uint8_t **out, size_t *out_len)
{
    return t->ops->get_quote(t->ctx, report_data, out, out_len);
}

int ds_tee_extend_event(struct ds_event_log *log, unsigned index,
                        const uint8_t digest[DS_TEE_MR_SIZE], const char *name,
                        const uint8_t *payload, size_t payload_len)
{
    if (!name) {
        name = "";
    }
    if (index == 2) {
        struct ds_event ev = {
            .imr = 2,
            .event_type = DS_TEE_RTMR2_EVENT_TYPE,
            .digest_len = DS_TEE_MR_SIZE,
            .name = (char *)name,
            .payload = (uint8_t *)payload,
            .payload_len = payload_len,
            .version = 1,
        };
        memcpy(ev.digest, digest, DS_TEE_MR_SIZE);
        return ds_eventlog_append(log, &ev);
    }
    if (index != 3) {
        return -DS_E_DENIED;
    }
    /* A runtime event's digest is recomputed from name and payload by every verifier (spec
     * attestation.md §4.2), so a digest matching neither version would make the log unusable;
     * refuse it here rather than produce a TD whose RTMR3 can never be replayed. */
    for (uint32_t version = 1; version <= 2; version++) {
        uint8_t want[DS_SHA384_LEN];
        DS_TRY(ds_runtime_event_digest_sha384(version, name, payload, payload_len, want));
        if (ds_ct_equal(want, digest, DS_SHA384_LEN)) {
            return ds_eventlog_append_runtime(log, name, payload, payload_len, version);
        }
    }
    return -DS_E_MISMATCH;
}

int ds_tee_extend_rtmr(struct ds_tee *t, unsigned index, const uint8_t digest[DS_TEE_MR_SIZE],
                       const char *event, const uint8_t *payload, size_t payload_len)
{
    struct ds_event_log *log = NULL;
    DS_TRY(ds_eventlog_new(&log));
    int r = ds_tee_extend_event(log, index, digest, event, payload, payload_len);
    if (r == 0) {
        r = t->ops->extend(t->ctx, index, digest, &log->events[0]);
    }
    ds_eventlog_free(log);
    return r;
}

int ds_tee_read_rtmrs(struct ds_tee *t, struct ds_tee_registers *out)
{
    return t->ops->read(t->ctx, out);
}

int ds_tee_get_event_log(struct ds_tee *t, char **out)
{
    return t->ops->event_log(t->ctx, out);
}
