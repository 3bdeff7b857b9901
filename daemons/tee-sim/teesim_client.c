/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Client subcommands of dstack-tee-sim: create-td / remove-td / list-tds talk to a running
 * simulator's control socket; tdx-quote / extend / read / event-log talk to one TD's device
 * socket through the public TEE API (ds_tee_open("sim:<socket>")), the same path a guest uses.
 * Also the option parser the subcommands share.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "dstack/crypto.h"
#include "dstack/tee.h"
#include "log.h"
#include "teesim.h"

#define CLIENT_TIMEOUT_MS 30000

int teesim_parse_opts(int argc, char **argv, const struct teesim_opt *opts, size_t count)
{
    for (int i = 1; i < argc; i++) {
        size_t k;
        for (k = 0; k < count; k++) {
            if (strcmp(argv[i], opts[k].name) == 0) {
                break;
            }
        }
        if (k == count) {
            log_warnx("unknown option \"%s\"", argv[i]);
            return -1;
        }
        if (opts[k].flag) {
            *opts[k].value = "1";
            continue;
        }
        if (i + 1 >= argc) {
            log_warnx("option %s needs a value", argv[i]);
            return -1;
        }
        *opts[k].value = argv[++i];
    }
    return 0;
}

static int control_path(const char *state_dir, char *out, size_t out_size)
{
    if (!state_dir) {
        log_warnx("--state-dir is required");
        return -1;
    }
    if (teesim_join(out, out_size, state_dir, TEESIM_CONTROL_SOCKET) < 0) {
        log_warnx("--state-dir path too long");
        return -1;
    }
    return 0;
}

/* Send req (consumed) to the control socket; prints errors. */
static int control_call(const char *state_dir, json_t *req, json_t **out)
{
    char path[PATH_MAX], err[256] = "";
    if (control_path(state_dir, path, sizeof(path)) < 0 || !req) {
        json_decref(req);
        return -1;
    }
    int r = ds_tee_proto_call(path, req, DS_TEE_PROTO_MAX_RESPONSE, CLIENT_TIMEOUT_MS, out, err,
                              sizeof(err));
    json_decref(req);
    if (r < 0) {
        log_warnx("%s", err[0] ? err : ds_strerror(r));
        return -1;
    }
    return 0;
}

static int put_hex(json_t *req, const char *key, const char *hex, size_t size)
{
    uint8_t buf[64];
    if (!hex) {
        return 0;
    }
    if (size > sizeof(buf) || ds_hex_decode(hex, strlen(hex), buf, size) < 0) {
        log_warnx("--%s must be %zu hex digits", key, 2 * size);
        return -1;
    }
    char enc[2 * sizeof(buf) + 1];
    ds_hex_encode(buf, size, enc);
    return json_object_set_new(req, key, json_string(enc)) < 0 ? -1 : 0;
}

int teesim_cmd_create_td(int argc, char **argv)
{
    const char *dir = NULL, *name = NULL, *mrtd = NULL, *r0 = NULL, *r1 = NULL, *r2 = NULL,
               *log_file = NULL;
    const struct teesim_opt opts[] = {
        {"--state-dir", &dir, false},      {"--name", &name, false}, {"--mrtd", &mrtd, false},
        {"--rtmr0", &r0, false},           {"--rtmr1", &r1, false},  {"--rtmr2", &r2, false},
        {"--event-log", &log_file, false},
    };
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    if (!name) {
        log_warnx("--name is required");
        return 2;
    }
    json_t *req = json_pack("{s:s,s:s}", "op", "create_td", "name", name), *resp = NULL;
    if (!req || put_hex(req, "mrtd", mrtd, 48) < 0 || put_hex(req, "rtmr0", r0, 48) < 0 ||
        put_hex(req, "rtmr1", r1, 48) < 0 || put_hex(req, "rtmr2", r2, 48) < 0) {
        json_decref(req);
        return 2;
    }
    if (log_file) {
        json_error_t jerr;
        json_t *log = json_load_file(log_file, JSON_REJECT_DUPLICATES, &jerr);
        /* Accept the bare array or upstream's string-wrapped form ("event_log": "<json>"). */
        if (json_is_string(log)) {
            json_t *inner = json_loads(json_string_value(log), 0, &jerr);
            json_decref(log);
            log = inner;
        }
        if (!json_is_array(log)) {
            log_warnx("%s: not a JSON event log array: %s", log_file, jerr.text);
            json_decref(log);
            json_decref(req);
            return 1;
        }
        json_object_set_new(req, "event_log", log);
    }
    if (control_call(dir, req, &resp) < 0) {
        return 1;
    }
    printf("%s\n", json_string_value(json_object_get(resp, "socket")));
    json_decref(resp);
    return 0;
}

int teesim_cmd_remove_td(int argc, char **argv)
{
    const char *dir = NULL, *name = NULL;
    const struct teesim_opt opts[] = {{"--state-dir", &dir, false}, {"--name", &name, false}};
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0 || !name) {
        log_warnx("usage: remove-td --state-dir DIR --name NAME");
        return 2;
    }
    json_t *resp = NULL;
    if (control_call(dir, json_pack("{s:s,s:s}", "op", "remove_td", "name", name), &resp) < 0) {
        return 1;
    }
    json_decref(resp);
    return 0;
}

int teesim_cmd_list_tds(int argc, char **argv)
{
    const char *dir = NULL;
    const struct teesim_opt opts[] = {{"--state-dir", &dir, false}};
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    json_t *resp = NULL;
    if (control_call(dir, json_pack("{s:s}", "op", "list_tds"), &resp) < 0) {
        return 1;
    }
    size_t i;
    json_t *td;
    json_array_foreach(json_object_get(resp, "tds"), i, td)
    {
        printf("%s\t%s\n", json_string_value(json_object_get(td, "name")),
               json_string_value(json_object_get(td, "socket")));
    }
    json_decref(resp);
    return 0;
}

static struct ds_tee *open_socket(const char *sock)
{
    if (!sock) {
        log_warnx("--socket is required");
        return NULL;
    }
    char spec[PATH_MAX + 8], err[256] = "";
    snprintf(spec, sizeof(spec), "sim:%s", sock);
    struct ds_tee *t = NULL;
    int r = ds_tee_open(spec, &t, err, sizeof(err));
    if (r < 0) {
        log_warnx("%s", err[0] ? err : ds_strerror(r));
        return NULL;
    }
    return t;
}

int teesim_cmd_tdx_quote(int argc, char **argv)
{
    const char *sock = NULL, *rd_hex = NULL;
    const struct teesim_opt opts[] = {{"--socket", &sock, false},
                                      {"--report-data", &rd_hex, false}};
    uint8_t rd[DS_TEE_REPORT_DATA_SIZE] = {0};
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    if (rd_hex && ds_hex_decode(rd_hex, strlen(rd_hex), rd, sizeof(rd)) < 0) {
        log_warnx("--report-data must be 128 hex digits");
        return 2;
    }
    struct ds_tee *t = open_socket(sock);
    if (!t) {
        return 1;
    }
    uint8_t *quote = NULL;
    size_t len = 0;
    int r = ds_tee_get_quote(t, rd, &quote, &len);
    ds_tee_close(t);
    if (r < 0) {
        log_warnx("quote failed: %s", ds_strerror(r));
        return 1;
    }
    if (isatty(STDOUT_FILENO)) {
        log_warnx("refusing to write a binary quote to a terminal; redirect stdout");
        free(quote);
        return 1;
    }
    size_t w = fwrite(quote, 1, len, stdout);
    free(quote);
    return (w == len && fflush(stdout) == 0) ? 0 : 1;
}

int teesim_cmd_extend(int argc, char **argv)
{
    const char *sock = NULL, *index = NULL, *event = NULL, *payload_hex = NULL, *digest_hex = NULL;
    const struct teesim_opt opts[] = {
        {"--socket", &sock, false},       {"--index", &index, false},
        {"--event", &event, false},       {"--payload", &payload_hex, false},
        {"--digest", &digest_hex, false},
    };
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    unsigned idx = index ? (unsigned)strtoul(index, NULL, 10) : 3;
    if (!index || (strcmp(index, "2") != 0 && strcmp(index, "3") != 0)) {
        log_warnx("--index must be 2 or 3");
        return 2;
    }
    uint8_t *payload = NULL, digest[DS_SHA384_LEN];
    size_t payload_len = 0;
    const char *ph = payload_hex ? payload_hex : "";
    if (ds_hex_decode_alloc(ph, strlen(ph), DS_TEE_PROTO_MAX_PAYLOAD, &payload, &payload_len) < 0) {
        log_warnx("--payload must be hex (at most %d bytes)", DS_TEE_PROTO_MAX_PAYLOAD);
        return 2;
    }
    if (!event) {
        event = "";
    }
    int r = 0;
    if (digest_hex) {
        r = ds_hex_decode(digest_hex, strlen(digest_hex), digest, sizeof(digest));
    } else if (idx == 3) {
        ds_runtime_event_digest_v1_sha384(event, payload, payload_len, digest); /* spec §4.4 */
    } else {
        ds_sha384(payload, payload_len, digest);
    }
    if (r < 0) {
        log_warnx("--digest must be 96 hex digits");
        free(payload);
        return 2;
    }
    struct ds_tee *t = open_socket(sock);
    if (!t) {
        free(payload);
        return 1;
    }
    r = ds_tee_extend_rtmr(t, idx, digest, event, payload, payload_len);
    struct ds_tee_registers regs;
    if (r == 0) {
        r = ds_tee_read_rtmrs(t, &regs);
    }
    ds_tee_close(t);
    free(payload);
    if (r < 0) {
        log_warnx("extend failed: %s", ds_strerror(r));
        return 1;
    }
    char hex[2 * DS_TEE_MR_SIZE + 1];
    ds_hex_encode(regs.rtmr[idx], DS_TEE_MR_SIZE, hex);
    printf("%s\n", hex);
    return 0;
}

int teesim_cmd_read(int argc, char **argv)
{
    const char *sock = NULL;
    const struct teesim_opt opts[] = {{"--socket", &sock, false}};
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    struct ds_tee *t = open_socket(sock);
    if (!t) {
        return 1;
    }
    struct ds_tee_registers regs;
    int r = ds_tee_read_rtmrs(t, &regs);
    ds_tee_close(t);
    if (r < 0) {
        log_warnx("read failed: %s", ds_strerror(r));
        return 1;
    }
    char hex[5][2 * DS_TEE_MR_SIZE + 1];
    ds_hex_encode(regs.mrtd, DS_TEE_MR_SIZE, hex[0]);
    for (int i = 0; i < DS_TEE_RTMR_COUNT; i++) {
        ds_hex_encode(regs.rtmr[i], DS_TEE_MR_SIZE, hex[i + 1]);
    }
    printf(
        "{\"mrtd\":\"%s\",\"rtmr0\":\"%s\",\"rtmr1\":\"%s\",\"rtmr2\":\"%s\",\"rtmr3\":\"%s\"}\n",
        hex[0], hex[1], hex[2], hex[3], hex[4]);
    return 0;
}

int teesim_cmd_event_log(int argc, char **argv)
{
    const char *sock = NULL;
    const struct teesim_opt opts[] = {{"--socket", &sock, false}};
    if (teesim_parse_opts(argc, argv, opts, DS_ARRAY_SIZE(opts)) < 0) {
        return 2;
    }
    struct ds_tee *t = open_socket(sock);
    if (!t) {
        return 1;
    }
    char *log = NULL;
    int r = ds_tee_get_event_log(t, &log);
    ds_tee_close(t);
    if (r < 0) {
        log_warnx("event log failed: %s", ds_strerror(r));
        return 1;
    }
    printf("%s\n", log);
    free(log);
    return 0;
}
