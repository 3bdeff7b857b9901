/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The simulator TEE provider: a client of one dstack-tee-sim device socket (one per TD, so a
 * CVM can only reach its own registers). Each operation is one request/response exchange in
 * the framing of tee_proto.h; docs/tee-sim.md describes the operations.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tee/tee_proto.h"
#include "tee/tee_provider.h"

#define SIMDEV_TIMEOUT_MS 30000

struct simdev {
    char *path;
};

static int call(struct simdev *s, json_t *req, json_t **out, char *err, size_t err_size)
{
    if (!req) {
        return -ENOMEM;
    }
    int r = ds_tee_proto_call(s->path, req, DS_TEE_PROTO_MAX_RESPONSE, SIMDEV_TIMEOUT_MS, out, err,
                              err_size);
    json_decref(req);
    return r;
}

int ds_tee_simdev_open(const char *socket_path, void **out_ctx, char *err, size_t err_size)
{
    struct simdev *s = calloc(1, sizeof(*s));
    if (!s || !(s->path = strdup(socket_path))) {
        free(s);
        return -ENOMEM;
    }
    json_t *resp = NULL;
    int r = call(s, json_pack("{s:s}", "op", "info"), &resp, err, err_size);
    if (r == 0 && !json_is_true(json_object_get(resp, "simulated"))) {
        if (err && err_size) {
            snprintf(err, err_size, "%s is not a tee-sim device", socket_path);
        }
        r = -DS_E_PROTOCOL;
    }
    json_decref(resp);
    if (r < 0) {
        free(s->path);
        free(s);
        return r;
    }
    *out_ctx = s;
    return 0;
}

static int simdev_get_quote(void *ctx, const uint8_t report_data[DS_TEE_REPORT_DATA_SIZE],
                            uint8_t **out, size_t *out_len)
{
    char hex[2 * DS_TEE_REPORT_DATA_SIZE + 1];
    ds_hex_encode(report_data, DS_TEE_REPORT_DATA_SIZE, hex);
    json_t *resp = NULL;
    DS_TRY(
        call(ctx, json_pack("{s:s,s:s}", "op", "get_quote", "report_data", hex), &resp, NULL, 0));
    const json_t *q = json_object_get(resp, "quote");
    int r = -DS_E_FORMAT;
    if (json_is_string(q)) {
        r = ds_hex_decode_alloc(json_string_value(q), json_string_length(q), DS_TEE_QUOTE_MAX, out,
                                out_len);
        if (r == 0 && *out_len == 0) {
            free(*out);
            r = -DS_E_FORMAT;
        }
    }
    json_decref(resp);
    return r;
}

static int simdev_extend(void *ctx, unsigned index, const uint8_t digest[DS_TEE_MR_SIZE],
                         const struct ds_event *ev)
{
    char dhex[2 * DS_TEE_MR_SIZE + 1];
    ds_hex_encode(digest, DS_TEE_MR_SIZE, dhex);
    char *phex = ds_hex_strdup(ev->payload ? ev->payload : (const uint8_t *)"", ev->payload_len);
    if (!phex) {
        return -ENOMEM;
    }
    json_t *resp = NULL;
    int r = call(ctx,
                 json_pack("{s:s,s:i,s:s,s:s,s:s}", "op", "extend_rtmr", "index", (int)index,
                           "digest", dhex, "event", ev->name, "payload", phex),
                 &resp, NULL, 0);
    free(phex);
    json_decref(resp);
    return r;
}

static int simdev_read(void *ctx, struct ds_tee_registers *out)
{
    static const char *const keys[DS_TEE_RTMR_COUNT] = {"rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    json_t *resp = NULL;
    DS_TRY(call(ctx, json_pack("{s:s}", "op", "read_registers"), &resp, NULL, 0));
    struct ds_tee_registers regs;
    int r = ds_tee_json_hex_field(resp, "mrtd", regs.mrtd, sizeof(regs.mrtd));
    for (int i = 0; r == 0 && i < DS_TEE_RTMR_COUNT; i++) {
        r = ds_tee_json_hex_field(resp, keys[i], regs.rtmr[i], sizeof(regs.rtmr[i]));
    }
    json_decref(resp);
    if (r == 0) {
        *out = regs;
    }
    return r;
}

static int simdev_event_log(void *ctx, char **out)
{
    json_t *resp = NULL;
    DS_TRY(call(ctx, json_pack("{s:s}", "op", "get_event_log"), &resp, NULL, 0));
    const json_t *log = json_object_get(resp, "event_log");
    int r = -DS_E_FORMAT;
    if (json_is_array(log)) {
        char *s = json_dumps(log, JSON_COMPACT | JSON_PRESERVE_ORDER);
        r = s ? 0 : -ENOMEM;
        if (s) {
            *out = s;
        }
    }
    json_decref(resp);
    return r;
}

static void simdev_free(void *ctx)
{
    struct simdev *s = ctx;
    if (s) {
        free(s->path);
        free(s);
    }
}

const struct ds_tee_ops ds_tee_simdev_ops = {
    .kind = "sim",
    .simulated = true,
    .get_quote = simdev_get_quote,
    .extend = simdev_extend,
    .read = simdev_read,
    .event_log = simdev_event_log,
    .free = simdev_free,
};
