/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/tee's provider interface and the tee-sim protocol:
 * - the request parser (valid requests and every rejection with its specific error),
 * - provider selection (spec strings, env DSTACK_TEE, "no TEE found"),
 * - the simulator provider against a real dstack-tee-sim (DS_BIN) in a temp state dir: two
 *   TDs, register isolation, RTMR3 = SHA384(old || digest), runtime-digest checks, quotes that
 *   parse to the TD's registers and verify against the mock root (and not against Intel's),
 * - the TDX provider against a fake configfs-tsm / measurements tree that a helper thread
 *   drives like the kernel does (generation bumps, outblob), plus a hand-built CCEL table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "dstack/attest.h"
#include "dstack/crypto.h"
#include "dstack/eventlog.h"
#include "dstack/sim.h"
#include "dstack/tee.h"
#include "tee/tee_proto.h"

#define SEED_HEX "4242424242424242424242424242424242424242424242424242424242424242"

static int parse(const char *json, unsigned ops, struct ds_tee_request *req)
{
    char err[256];
    return ds_tee_request_parse((const uint8_t *)json, strlen(json), ops, req, err, sizeof(err));
}

static char *hexrep(const char *byte, size_t n)
{
    char *s = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) {
        memcpy(s + 2 * i, byte, 2);
    }
    s[2 * n] = '\0';
    return s;
}

/* ---- request parser ------------------------------------------------------------------------- */

static void test_parse_valid(void **state)
{
    struct ds_tee_request req;
    char buf[1024];
    char *rd = hexrep("ab", 64), *dg = hexrep("cd", 48);
    snprintf(buf, sizeof(buf), "{\"op\":\"get_quote\",\"report_data\":\"%s\"}", rd);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), 0);
    assert_int_equal(req.op, DS_TEE_OP_GET_QUOTE);
    assert_int_equal(req.quote_version, 4);
    assert_int_equal(req.report_data[63], 0xab);
    ds_tee_request_done(&req);

    snprintf(buf, sizeof(buf), "{\"op\":\"get_quote\",\"report_data\":\"%s\",\"version\":5}", rd);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), 0);
    assert_int_equal(req.quote_version, 5);
    ds_tee_request_done(&req);

    snprintf(buf, sizeof(buf),
             "{\"op\":\"extend_rtmr\",\"index\":3,\"digest\":\"%s\",\"event\":\"x\","
             "\"payload\":\"0102\"}",
             dg);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), 0);
    assert_int_equal(req.index, 3);
    assert_string_equal(req.event, "x");
    assert_int_equal(req.payload_len, 2);
    assert_int_equal(req.digest[0], 0xcd);
    ds_tee_request_done(&req);

    assert_int_equal(parse("{\"op\":\"list_tds\"}", DS_TEE_OPS_CONTROL, &req), 0);
    assert_int_equal(req.op, DS_TEE_OP_LIST_TDS);
    ds_tee_request_done(&req);

    snprintf(buf, sizeof(buf),
             "{\"op\":\"create_td\",\"name\":\"td-1.a_b\",\"mrtd\":\"%s\",\"rtmr1\":\"%s\","
             "\"event_log\":[{\"imr\":0,\"event_type\":1,\"digest\":\"%s\",\"event\":\"\","
             "\"event_payload\":\"00\"}]}",
             dg, dg, dg);
    assert_int_equal(parse(buf, DS_TEE_OPS_CONTROL, &req), 0);
    assert_string_equal(req.name, "td-1.a_b");
    assert_true(req.has_mrtd);
    assert_false(req.has_rtmr[0]);
    assert_true(req.has_rtmr[1]);
    assert_non_null(req.event_log);
    assert_int_equal(req.event_log->count, 1);
    ds_tee_request_done(&req);
    free(rd);
    free(dg);
}

static void test_parse_rejects(void **state)
{
    struct ds_tee_request req;
    char buf[40000];
    char *rd = hexrep("ab", 64), *dg = hexrep("cd", 48), *big = hexrep("00", 16 * 1024 + 1);
    assert_int_equal(parse("", DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    assert_int_equal(parse("[1]", DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    assert_int_equal(parse("{\"op\":1}", DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    assert_int_equal(parse("{\"op\":\"reboot\"}", DS_TEE_OPS_DEVICE, &req), -DS_E_UNSUPPORTED);
    /* control ops are not available on a device socket and vice versa */
    assert_int_equal(parse("{\"op\":\"list_tds\"}", DS_TEE_OPS_DEVICE, &req), -DS_E_UNSUPPORTED);
    assert_int_equal(parse("{\"op\":\"info\"}", DS_TEE_OPS_CONTROL, &req), -DS_E_UNSUPPORTED);
    /* duplicate keys */
    assert_int_equal(parse("{\"op\":\"info\",\"op\":\"info\"}", DS_TEE_OPS_DEVICE, &req),
                     -DS_E_FORMAT);
    /* report data: missing, short, not hex, bad version */
    assert_int_equal(parse("{\"op\":\"get_quote\"}", DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    assert_int_equal(
        parse("{\"op\":\"get_quote\",\"report_data\":\"abcd\"}", DS_TEE_OPS_DEVICE, &req),
        -DS_E_FORMAT);
    rd[5] = 'z';
    snprintf(buf, sizeof(buf), "{\"op\":\"get_quote\",\"report_data\":\"%s\"}", rd);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    rd[5] = 'b';
    snprintf(buf, sizeof(buf), "{\"op\":\"get_quote\",\"report_data\":\"%s\",\"version\":3}", rd);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    /* extension of RTMR0/1 is denied; index out of range is a format error */
    for (int idx = 0; idx <= 1; idx++) {
        snprintf(buf, sizeof(buf), "{\"op\":\"extend_rtmr\",\"index\":%d,\"digest\":\"%s\"}", idx,
                 dg);
        assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), -DS_E_DENIED);
    }
    snprintf(buf, sizeof(buf), "{\"op\":\"extend_rtmr\",\"index\":4,\"digest\":\"%s\"}", dg);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    assert_int_equal(
        parse("{\"op\":\"extend_rtmr\",\"index\":3,\"digest\":\"00\"}", DS_TEE_OPS_DEVICE, &req),
        -DS_E_FORMAT);
    snprintf(buf, sizeof(buf),
             "{\"op\":\"extend_rtmr\",\"index\":3,\"digest\":\"%s\",\"payload\":\"%s\"}", dg, big);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), -DS_E_LIMIT);
    snprintf(buf, sizeof(buf),
             "{\"op\":\"extend_rtmr\",\"index\":3,\"digest\":\"%s\",\"payload\":\"123\"}", dg);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    snprintf(buf, sizeof(buf),
             "{\"op\":\"extend_rtmr\",\"index\":3,\"digest\":\"%s\",\"event\":\"a\\u0000b\"}", dg);
    assert_int_equal(parse(buf, DS_TEE_OPS_DEVICE, &req), -DS_E_FORMAT);
    /* TD names: path tricks and bad characters */
    const char *bad_names[] = {
        "",    ".",   "..",     "../x",
        "a/b", "a b", "x\\\\y", "0123456789012345678901234567890123456789012345678901234567890123"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad_names); i++) {
        snprintf(buf, sizeof(buf), "{\"op\":\"remove_td\",\"name\":\"%s\"}", bad_names[i]);
        assert_int_equal(parse(buf, DS_TEE_OPS_CONTROL, &req), -DS_E_FORMAT);
    }
    assert_int_equal(
        parse("{\"op\":\"remove_td\",\"name\":\"a\\u0000b\"}", DS_TEE_OPS_CONTROL, &req),
        -DS_E_FORMAT);
    /* create_td: bad register, bad event log */
    assert_int_equal(
        parse("{\"op\":\"create_td\",\"name\":\"a\",\"rtmr0\":\"00\"}", DS_TEE_OPS_CONTROL, &req),
        -DS_E_FORMAT);
    assert_int_equal(
        parse("{\"op\":\"create_td\",\"name\":\"a\",\"event_log\":{}}", DS_TEE_OPS_CONTROL, &req),
        -DS_E_FORMAT);
    assert_int_equal(parse("{\"op\":\"create_td\",\"name\":\"a\",\"event_log\":[{\"imr\":9}]}",
                           DS_TEE_OPS_CONTROL, &req),
                     -DS_E_FORMAT);
    free(rd);
    free(dg);
    free(big);
}

static void test_td_names(void **state)
{
    assert_true(ds_tee_td_name_valid("a"));
    assert_true(ds_tee_td_name_valid("..a"));
    assert_true(ds_tee_td_name_valid("A-b_c.9"));
    assert_false(ds_tee_td_name_valid(""));
    assert_false(ds_tee_td_name_valid(".."));
    assert_false(ds_tee_td_name_valid("a/.."));
    assert_false(ds_tee_td_name_valid("é"));
}

static void test_error_names(void **state)
{
    assert_string_equal(ds_tee_error_name(-DS_E_DENIED), "denied");
    assert_int_equal(ds_tee_error_from_name("denied"), -DS_E_DENIED);
    assert_int_equal(ds_tee_error_from_name("mismatch"), -DS_E_MISMATCH);
    assert_string_equal(ds_tee_error_name(-ENOMEM), "internal");
    assert_int_equal(ds_tee_error_from_name("nonsense"), -DS_E_PROTOCOL);
    assert_int_equal(ds_tee_error_from_name(NULL), -DS_E_PROTOCOL);
}

/* ---- provider selection --------------------------------------------------------------------- */

static void no_tdx_env(void)
{
    setenv("DSTACK_TDX_GUEST_DEVICE", "/nonexistent/tdx_guest", 1);
    setenv("DCAP_TDX_QUOTE_CONFIGFS_PATH", "/nonexistent/configfs", 1);
}

static void test_open_selection(void **state)
{
    struct ds_tee *t = NULL;
    char err[256] = "";
    no_tdx_env();
    unsetenv("DSTACK_TEE");
    assert_int_equal(ds_tee_open(NULL, &t, err, sizeof(err)), -DS_E_NOT_FOUND);
    assert_non_null(strstr(err, "DSTACK_TEE=sim:"));
    assert_int_equal(ds_tee_open("bogus", &t, err, sizeof(err)), -DS_E_FORMAT);
    assert_int_equal(ds_tee_open("sim:", &t, err, sizeof(err)), -DS_E_FORMAT);
    assert_int_equal(ds_tee_open("sim:/nonexistent/tdx.sock", &t, err, sizeof(err)), -ENOENT);
    setenv("DSTACK_TEE", "sim:/nonexistent/tdx.sock", 1);
    assert_int_equal(ds_tee_open(NULL, &t, err, sizeof(err)), -ENOENT);
    unsetenv("DSTACK_TEE");
    /* "tdx" requested but no configfs-tsm and no device */
    assert_int_not_equal(ds_tee_open("tdx", &t, err, sizeof(err)), 0);
    assert_null(t);
}

/* ---- the simulator provider against a real daemon ------------------------------------------- */

struct daemon {
    pid_t pid;
    char dir[256];
};

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

/* The daemon of the running test, killed by the group teardown if an assertion bailed out. */
static struct daemon live_daemon;

static void daemon_start(struct daemon *d)
{
    const char *bin = getenv("DS_BIN");
    assert_non_null(bin);
    char exe[512];
    snprintf(exe, sizeof(exe), "%s/dstack-tee-sim", bin);
    assert_int_equal(access(exe, X_OK), 0);
    snprintf(d->dir, sizeof(d->dir), "/tmp/test_tee.XXXXXX");
    assert_non_null(mkdtemp(d->dir));
    char state[300];
    snprintf(state, sizeof(state), "%s/state", d->dir);
    d->pid = fork();
    assert_true(d->pid >= 0);
    live_daemon = *d;
    if (d->pid == 0) {
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(exe, exe, "serve", "--seed", SEED_HEX, "--state-dir", state, (char *)NULL);
        _exit(127);
    }
    char control[400];
    snprintf(control, sizeof(control), "%s/control.sock", state);
    for (int i = 0; i < 500 && access(control, F_OK) != 0; i++) {
        usleep(10000);
    }
    assert_int_equal(access(control, F_OK), 0);
}

static void daemon_stop(struct daemon *d)
{
    memset(&live_daemon, 0, sizeof(live_daemon));
    if (d->pid > 0) {
        kill(d->pid, SIGTERM);
        waitpid(d->pid, NULL, 0);
        d->pid = 0;
    }
    nftw(d->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static int control(struct daemon *d, json_t *req, json_t **resp)
{
    char path[400], err[256];
    snprintf(path, sizeof(path), "%s/state/control.sock", d->dir);
    int r = ds_tee_proto_call(path, req, DS_TEE_PROTO_MAX_RESPONSE, 10000, resp, err, sizeof(err));
    json_decref(req);
    return r;
}

static struct ds_tee *create_td(struct daemon *d, const char *name, uint8_t mrtd_byte,
                                uint8_t rtmr0_byte)
{
    uint8_t mr[48];
    char mrtd[97], rtmr0[97];
    memset(mr, mrtd_byte, 48);
    ds_hex_encode(mr, 48, mrtd);
    memset(mr, rtmr0_byte, 48);
    ds_hex_encode(mr, 48, rtmr0);
    json_t *resp = NULL;
    assert_int_equal(control(d,
                             json_pack("{s:s,s:s,s:s,s:s}", "op", "create_td", "name", name, "mrtd",
                                       mrtd, "rtmr0", rtmr0),
                             &resp),
                     0);
    char spec[512];
    snprintf(spec, sizeof(spec), "sim:%s", json_string_value(json_object_get(resp, "socket")));
    json_decref(resp);
    struct ds_tee *t = NULL;
    char err[256];
    assert_int_equal(ds_tee_open(spec, &t, err, sizeof(err)), 0);
    assert_true(ds_tee_is_simulated(t));
    assert_string_equal(ds_tee_kind(t), "sim");
    return t;
}

static void check_quote(struct ds_sim_pki *pki, struct ds_tee *t,
                        const struct ds_tee_registers *regs, uint8_t rd_byte, bool verify)
{
    uint8_t rd[64], *quote = NULL;
    size_t len = 0;
    memset(rd, rd_byte, sizeof(rd));
    assert_int_equal(ds_tee_get_quote(t, rd, &quote, &len), 0);
    struct ds_quote q;
    assert_int_equal(ds_quote_parse(quote, len, &q), 0);
    assert_int_equal(q.version, 4);
    assert_int_equal(q.tee_type, DS_TEE_TYPE_TDX);
    assert_memory_equal(q.td.mr_td, regs->mrtd, 48);
    assert_memory_equal(q.td.rtmr, regs->rtmr, sizeof(regs->rtmr));
    assert_memory_equal(q.td.report_data, rd, 64);
    if (verify) {
        const uint8_t *root;
        size_t root_len;
        ds_sim_pki_root_der(pki, &root, &root_len);
        struct ds_collateral *coll = NULL;
        int64_t now = (int64_t)time(NULL);
        assert_int_equal(ds_sim_collateral(pki, now, &coll), 0);
        struct ds_verifier *v = NULL;
        struct ds_verify_result res;
        assert_int_equal(ds_verifier_new(root, root_len, &v), 0);
        memset(&res, 0, sizeof(res));
        assert_int_equal(ds_verify_quote(v, quote, len, coll, now, &res), 0);
        assert_true(res.ok);
        ds_verify_result_done(&res);
        ds_verifier_free(v);
        /* the genuine Intel root rejects simulator quotes */
        assert_int_equal(ds_verifier_new(NULL, 0, &v), 0);
        memset(&res, 0, sizeof(res));
        assert_int_not_equal(ds_verify_quote(v, quote, len, coll, now, &res), 0);
        assert_false(res.ok);
        ds_verify_result_done(&res);
        ds_verifier_free(v);
        ds_collateral_free(coll);
    }
    free(quote);
}

static void test_sim_provider(void **state)
{
    struct daemon d = {0};
    daemon_start(&d);
    uint8_t seed[32];
    assert_int_equal(ds_hex_decode(SEED_HEX, 64, seed, 32), 32);
    struct ds_sim_pki *pki = NULL;
    assert_int_equal(ds_sim_pki_new(seed, &pki), 0);

    struct ds_tee *a = create_td(&d, "A", 0xa1, 0xa2);
    struct ds_tee *b = create_td(&d, "B", 0xb1, 0xb2);
    json_t *resp = NULL;
    /* a second TD with the same name is refused */
    assert_int_equal(control(&d, json_pack("{s:s,s:s}", "op", "create_td", "name", "A"), &resp),
                     -EEXIST);

    struct ds_tee_registers ra, rb, ra2, rb2;
    assert_int_equal(ds_tee_read_rtmrs(a, &ra), 0);
    assert_int_equal(ds_tee_read_rtmrs(b, &rb), 0);
    assert_int_equal(ra.mrtd[0], 0xa1);
    assert_int_equal(ra.rtmr[0][47], 0xa2);
    assert_int_equal(rb.mrtd[0], 0xb1);
    assert_true(ds_is_zero(ra.rtmr[3], 48));

    /* extend A's RTMR3 with a V1 runtime event: A changes, B does not */
    const uint8_t payload[] = {1, 2, 3};
    uint8_t digest[48], expect[48];
    ds_runtime_event_digest_v1_sha384("test-event", payload, sizeof(payload), digest);
    assert_int_equal(ds_tee_extend_rtmr(a, 3, digest, "test-event", payload, sizeof(payload)), 0);
    ds_sha384_v(expect, 2, ra.rtmr[3], (size_t)48, digest, (size_t)48);
    assert_int_equal(ds_tee_read_rtmrs(a, &ra2), 0);
    assert_int_equal(ds_tee_read_rtmrs(b, &rb2), 0);
    assert_memory_equal(ra2.rtmr[3], expect, 48);
    assert_memory_equal(&rb2, &rb, sizeof(rb));
    assert_memory_equal(ra2.rtmr[0], ra.rtmr[0], 48);

    /* a V2 digest is accepted too; a digest matching neither is refused */
    uint8_t v2[48];
    assert_int_equal(ds_runtime_event_digest_sha384(2, "v2-event", "", 0, v2), 0);
    assert_int_equal(ds_tee_extend_rtmr(a, 3, v2, "v2-event", NULL, 0), 0);
    assert_int_equal(ds_tee_extend_rtmr(a, 3, digest, "other-name", payload, sizeof(payload)),
                     -DS_E_MISMATCH);
    assert_int_equal(ds_tee_extend_rtmr(a, 1, digest, "x", NULL, 0), -DS_E_DENIED);
    assert_int_equal(ds_tee_extend_rtmr(a, 0, digest, "x", NULL, 0), -DS_E_DENIED);
    /* RTMR2 is extendable with any digest */
    memset(digest, 0x5a, sizeof(digest));
    assert_int_equal(ds_tee_extend_rtmr(a, 2, digest, "cmdline", payload, sizeof(payload)), 0);
    assert_int_equal(ds_tee_read_rtmrs(a, &ra2), 0);
    ds_sha384_v(expect, 2, ra.rtmr[2], (size_t)48, digest, (size_t)48);
    assert_memory_equal(ra2.rtmr[2], expect, 48);

    /* the event log replays to the registers */
    char *log_json = NULL;
    assert_int_equal(ds_tee_get_event_log(a, &log_json), 0);
    struct ds_event_log *log = NULL;
    assert_int_equal(ds_eventlog_parse_json(log_json, strlen(log_json), &log), 0);
    assert_int_equal(log->count, 3);
    assert_string_equal(log->events[0].name, "test-event");
    assert_int_equal(log->events[1].version, 2);
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, NULL), 0);
    uint8_t replay[4][48];
    assert_int_equal(ds_eventlog_replay(log, NULL, replay), 0);
    assert_memory_equal(replay[3], ra2.rtmr[3], 48);
    ds_eventlog_free(log);
    free(log_json);

    check_quote(pki, a, &ra2, 0x77, true);
    check_quote(pki, b, &rb2, 0x78, false);

    /* restart: registers unchanged */
    ds_tee_close(a);
    ds_tee_close(b);
    kill(d.pid, SIGTERM);
    waitpid(d.pid, NULL, 0);
    char keep[256];
    memcpy(keep, d.dir, sizeof(keep));
    d.pid = fork();
    live_daemon = d;
    if (d.pid == 0) {
        char exe[512], st[300];
        snprintf(exe, sizeof(exe), "%s/dstack-tee-sim", getenv("DS_BIN"));
        snprintf(st, sizeof(st), "%s/state", keep);
        int fd = open("/dev/null", O_WRONLY);
        dup2(fd, 2);
        execl(exe, exe, "serve", "--seed", SEED_HEX, "--state-dir", st, (char *)NULL);
        _exit(127);
    }
    char ctl[400], spec[400];
    snprintf(ctl, sizeof(ctl), "%s/state/control.sock", d.dir);
    for (int i = 0; i < 500 && access(ctl, F_OK) != 0; i++) {
        usleep(10000);
    }
    snprintf(spec, sizeof(spec), "sim:%s/state/tds/A/tdx.sock", d.dir);
    char err[256];
    assert_int_equal(ds_tee_open(spec, &a, err, sizeof(err)), 0);
    struct ds_tee_registers ra3;
    assert_int_equal(ds_tee_read_rtmrs(a, &ra3), 0);
    assert_memory_equal(&ra3, &ra2, sizeof(ra3));
    ds_tee_close(a);

    /* remove B: its socket is gone; list shows only A */
    assert_int_equal(control(&d, json_pack("{s:s,s:s}", "op", "remove_td", "name", "B"), &resp), 0);
    json_decref(resp);
    assert_int_equal(control(&d, json_pack("{s:s,s:s}", "op", "remove_td", "name", "B"), &resp),
                     -DS_E_NOT_FOUND);
    snprintf(spec, sizeof(spec), "sim:%s/state/tds/B/tdx.sock", d.dir);
    assert_int_equal(ds_tee_open(spec, &b, err, sizeof(err)), -ENOENT);
    assert_int_equal(control(&d, json_pack("{s:s}", "op", "list_tds"), &resp), 0);
    assert_int_equal(json_array_size(json_object_get(resp, "tds")), 1);
    json_decref(resp);

    ds_sim_pki_free(pki);
    daemon_stop(&d);
}

static void test_create_td_event_log(void **state)
{
    struct daemon d = {0};
    daemon_start(&d);
    uint8_t dg[48];
    memset(dg, 0x3c, sizeof(dg));
    char dhex[97];
    ds_hex_encode(dg, 48, dhex);
    json_t *log = json_pack("[{s:i,s:i,s:s,s:s,s:s}]", "imr", 1, "event_type", 13, "digest", dhex,
                            "event", "", "event_payload", "6b65726e656c");
    uint8_t want[48];
    uint8_t zero[48] = {0};
    ds_sha384_v(want, 2, zero, (size_t)48, dg, (size_t)48);
    char whex[97];
    ds_hex_encode(want, 48, whex);
    json_t *resp = NULL;
    /* an explicit RTMR1 that disagrees with the log is refused */
    assert_int_equal(control(&d,
                             json_pack("{s:s,s:s,s:s,s:O}", "op", "create_td", "name", "L", "rtmr1",
                                       dhex, "event_log", log),
                             &resp),
                     -DS_E_MISMATCH);
    assert_int_equal(control(&d,
                             json_pack("{s:s,s:s,s:s,s:O}", "op", "create_td", "name", "L", "rtmr1",
                                       whex, "event_log", log),
                             &resp),
                     0);
    char spec[512], err[256];
    snprintf(spec, sizeof(spec), "sim:%s", json_string_value(json_object_get(resp, "socket")));
    json_decref(resp);
    struct ds_tee *t = NULL;
    assert_int_equal(ds_tee_open(spec, &t, err, sizeof(err)), 0);
    struct ds_tee_registers regs;
    assert_int_equal(ds_tee_read_rtmrs(t, &regs), 0);
    assert_memory_equal(regs.rtmr[1], want, 48);
    char *text = NULL;
    assert_int_equal(ds_tee_get_event_log(t, &text), 0);
    assert_non_null(strstr(text, "6b65726e656c"));
    free(text);
    ds_tee_close(t);
    json_decref(log);
    daemon_stop(&d);
}

/* ---- the TDX provider against a fake configfs-tsm tree -------------------------------------- */

struct fake_tsm {
    char dir[256];
    char configfs[300];
    char meas[300];
    struct ds_sim_pki *pki;
    pthread_t thread;
    volatile int stop;
    volatile int mode; /* 0 normal, 1 never bump generation, 2 bump by two, 3 tiny outblob */
};

static void write_file(const char *dir, const char *name, const void *data, size_t len)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    assert_int_equal(ds_write_file_atomic(path, data, len, 0600), 0);
}

/* The kernel's side: a 64-byte inblob write produces an outblob and bumps generation. */
static void *fake_tsm_thread(void *arg)
{
    struct fake_tsm *f = arg;
    char inblob[512], gen_path[512];
    snprintf(inblob, sizeof(inblob), "%s/inblob", f->configfs);
    snprintf(gen_path, sizeof(gen_path), "%s/generation", f->configfs);
    while (!f->stop) {
        uint8_t *data = NULL;
        size_t len = 0;
        if (ds_read_file(inblob, 4096, &data, &len) == 0 && len == 64) {
            /* consume the request before answering, so the next one is never lost */
            assert_int_equal(truncate(inblob, 0), 0);
            uint8_t *quote = NULL;
            size_t qlen = 0;
            struct ds_sim_td td;
            ds_sim_td_defaults(&td);
            memset(td.rtmr[2], 0x22, 48);
            if (ds_sim_quote(f->pki, &td, data, NULL, &quote, &qlen) == 0) {
                write_file(f->configfs, "outblob", quote, f->mode == 3 ? 100 : qlen);
                free(quote);
            }
            uint8_t *g = NULL;
            size_t glen = 0;
            unsigned long long gen = 0;
            if (ds_read_file(gen_path, 64, &g, &glen) == 0) {
                gen = strtoull((char *)g, NULL, 10);
                free(g);
            }
            char buf[32];
            snprintf(buf, sizeof(buf), "%llu\n", gen + (f->mode == 2 ? 2 : 1));
            if (f->mode != 1) {
                write_file(f->configfs, "generation", buf, strlen(buf));
            }
        }
        free(data);
        usleep(1000);
    }
    return NULL;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

/* A CCEL with the Spec ID header and one SHA-384 event in RTMR0 ("abcd"). */
static size_t build_ccel(uint8_t *out, uint8_t digest[48])
{
    size_t o = 0;
    put_le32(out + o, 0), o += 4;                      /* pcr */
    put_le32(out + o, 3), o += 4;                      /* EV_NO_ACTION */
    memset(out + o, 0, 20), o += 20;                   /* sha1 digest */
    put_le32(out + o, 33), o += 4;                     /* event size */
    memcpy(out + o, "Spec ID Event03\0", 16), o += 16; /* signature */
    put_le32(out + o, 0), o += 4;                      /* platform class */
    out[o++] = 0;                                      /* minor */
    out[o++] = 2;                                      /* major */
    out[o++] = 0;                                      /* errata */
    out[o++] = 2;                                      /* uintn size */
    put_le32(out + o, 1), o += 4;                      /* algorithms */
    out[o++] = 0x0c, out[o++] = 0;                     /* SHA-384 */
    out[o++] = 48, out[o++] = 0;                       /* digest size */
    out[o++] = 0;                                      /* vendor info size */
    put_le32(out + o, 1), o += 4;                      /* imr index 1 = RTMR0 */
    put_le32(out + o, 0x80000001u), o += 4;            /* event type */
    put_le32(out + o, 1), o += 4;                      /* digest count */
    out[o++] = 0x0c, out[o++] = 0;                     /* SHA-384 */
    memset(digest, 0x99, 48);
    memcpy(out + o, digest, 48), o += 48;
    put_le32(out + o, 4), o += 4;
    memcpy(out + o, "abcd", 4), o += 4;
    put_le32(out + o, 0xffffffffu), o += 4; /* CCEL padding */
    return o;
}

static void fake_tsm_setup(struct fake_tsm *f)
{
    memset(f, 0, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/test_tee_tdx.XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->configfs, sizeof(f->configfs), "%s/report", f->dir);
    snprintf(f->meas, sizeof(f->meas), "%s/measurements", f->dir);
    assert_int_equal(mkdir(f->configfs, 0700), 0);
    assert_int_equal(mkdir(f->meas, 0700), 0);
    write_file(f->configfs, "provider", "tdx_guest\n", 10);
    write_file(f->configfs, "generation", "7\n", 2);
    write_file(f->configfs, "inblob", "", 0);
    write_file(f->configfs, "outblob", "", 0);
    uint8_t ccel[512], dg[48];
    size_t n = build_ccel(ccel, dg);
    write_file(f->dir, "CCEL", ccel, n);
    char path[512];
    setenv("DCAP_TDX_QUOTE_CONFIGFS_PATH", f->configfs, 1);
    setenv("DCAP_TDX_RTMR_SYSFS_PATH", f->meas, 1);
    setenv("DSTACK_TDX_GUEST_DEVICE", "/nonexistent/tdx_guest", 1);
    snprintf(path, sizeof(path), "%s/CCEL", f->dir);
    setenv("DSTACK_CCEL_FILE", path, 1);
    snprintf(path, sizeof(path), "%s/runtime_events.jsonl", f->dir);
    setenv("DSTACK_RUNTIME_EVENT_LOG", path, 1);
    unsetenv("DSTACK_TEE");
    uint8_t seed[32];
    memset(seed, 7, sizeof(seed));
    assert_int_equal(ds_sim_pki_new(seed, &f->pki), 0);
    assert_int_equal(pthread_create(&f->thread, NULL, fake_tsm_thread, f), 0);
}

static void fake_tsm_teardown(struct fake_tsm *f)
{
    f->stop = 1;
    pthread_join(f->thread, NULL);
    ds_sim_pki_free(f->pki);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void test_tdx_provider(void **state)
{
    struct fake_tsm f;
    fake_tsm_setup(&f);
    struct ds_tee *t = NULL;
    char err[256] = "";
    /* autodetected through the configfs provider file */
    assert_int_equal(ds_tee_open(NULL, &t, err, sizeof(err)), 0);
    assert_string_equal(ds_tee_kind(t), "tdx");
    assert_false(ds_tee_is_simulated(t));

    uint8_t rd[64], *quote = NULL;
    size_t len = 0;
    memset(rd, 0x41, sizeof(rd));
    assert_int_equal(ds_tee_get_quote(t, rd, &quote, &len), 0);
    struct ds_quote q;
    assert_int_equal(ds_quote_parse(quote, len, &q), 0);
    assert_memory_equal(q.td.report_data, rd, 64);
    free(quote);

    /* registers: no measurement files -> taken from a quote */
    struct ds_tee_registers regs;
    assert_int_equal(ds_tee_read_rtmrs(t, &regs), 0);
    assert_int_equal(regs.rtmr[2][0], 0x22);
    assert_int_equal(regs.mrtd[0], 0x11);

    /* extend: the digest is written to rtmr3:sha384 and the event logged */
    char path[512];
    snprintf(path, sizeof(path), "%s/rtmr3:sha384", f.meas);
    write_file(f.meas, "rtmr3:sha384", "", 0);
    uint8_t digest[48];
    ds_runtime_event_digest_v1_sha384("app-event", "hi", 2, digest);
    assert_int_equal(ds_tee_extend_rtmr(t, 3, digest, "app-event", (const uint8_t *)"hi", 2), 0);
    uint8_t *got = NULL;
    size_t got_len = 0;
    assert_int_equal(ds_read_file(path, 4096, &got, &got_len), 0);
    assert_int_equal(got_len, 48);
    assert_memory_equal(got, digest, 48);
    free(got);
    /* wrong digest: refused before anything is written */
    assert_int_equal(ds_tee_extend_rtmr(t, 3, digest, "other", NULL, 0), -DS_E_MISMATCH);
    /* RTMR2 without a sysfs file and without a device: the error surfaces */
    assert_int_equal(ds_tee_extend_rtmr(t, 2, digest, "x", NULL, 0), -ENOENT);

    /* measurement files present: read from them */
    uint8_t mr[48];
    for (int i = 0; i < 5; i++) {
        char name[32];
        memset(mr, 0xe0 + i, sizeof(mr));
        snprintf(name, sizeof(name), i == 0 ? "mrtd:sha384" : "rtmr%d:sha384", i - 1);
        write_file(f.meas, name, mr, sizeof(mr));
    }
    assert_int_equal(ds_tee_read_rtmrs(t, &regs), 0);
    assert_int_equal(regs.mrtd[0], 0xe0);
    assert_int_equal(regs.rtmr[3][0], 0xe4);
    write_file(f.meas, "rtmr1:sha384", mr, 47);
    assert_int_equal(ds_tee_read_rtmrs(t, &regs), -DS_E_FORMAT);

    /* event log: the CCEL event followed by the runtime event */
    char *json = NULL;
    assert_int_equal(ds_tee_get_event_log(t, &json), 0);
    struct ds_event_log *log = NULL;
    assert_int_equal(ds_eventlog_parse_json(json, strlen(json), &log), 0);
    assert_int_equal(log->count, 2);
    assert_int_equal(log->events[0].imr, 0);
    assert_int_equal(log->events[0].payload_len, 4);
    assert_int_equal(log->events[1].imr, 3);
    assert_string_equal(log->events[1].name, "app-event");
    ds_eventlog_free(log);
    free(json);

    /* the kernel misbehaves */
    f.mode = 3; /* quote too short */
    assert_int_equal(ds_tee_get_quote(t, rd, &quote, &len), -DS_E_FORMAT);
    f.mode = 2; /* someone else wrote inblob meanwhile */
    assert_int_equal(ds_tee_get_quote(t, rd, &quote, &len), -EBUSY);
    f.mode = 1; /* no answer */
    assert_int_equal(ds_tee_get_quote(t, rd, &quote, &len), -ETIMEDOUT);
    ds_tee_close(t);

    /* a configfs provider that is not TDX */
    write_file(f.configfs, "provider", "sev_guest\n", 10);
    assert_int_equal(ds_tee_open("tdx", &t, err, sizeof(err)), -DS_E_UNSUPPORTED);
    assert_int_equal(ds_tee_open(NULL, &t, err, sizeof(err)), -DS_E_NOT_FOUND);
    fake_tsm_teardown(&f);
    no_tdx_env();
}

static int teardown_group(void **state)
{
    if (live_daemon.dir[0]) {
        struct daemon d = live_daemon;
        daemon_stop(&d);
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_td_names),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_open_selection),
        cmocka_unit_test(test_sim_provider),
        cmocka_unit_test(test_create_td_event_log),
        cmocka_unit_test(test_tdx_provider),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_group);
}
