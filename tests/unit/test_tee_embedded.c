/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the embedded TEE provider (lib/tee/tee_embedded.c) through the public tee.h
 * interface: spec parsing ("embedded", "embedded:<seed>", malformed seeds), the boot event log
 * replaying to the registers, RTMR2/3 extension (register and log stay consistent, RTMR0/1
 * refused, wrong runtime digest refused), quotes that carry the registers and report data and
 * verify against the mock root of the same seed only, and determinism across instances.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "dstack/attest.h"
#include "dstack/crypto.h"
#include "dstack/eventlog.h"
#include "dstack/sim.h"
#include "dstack/tee.h"

#define DEV_SEED_HEX "64737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031"
#define OTHER_SEED   "0101010101010101010101010101010101010101010101010101010101010101"

static struct ds_event_log *read_log(struct ds_tee *t)
{
    char *json = NULL;
    struct ds_event_log *log = NULL;
    assert_int_equal(ds_tee_get_event_log(t, &json), 0);
    assert_int_equal(ds_eventlog_parse_json(json, strlen(json), &log), 0);
    free(json);
    return log;
}

static void test_spec_parsing(void **state)
{
    (void)state;
    struct ds_tee *t = NULL;
    char err[256];
    assert_int_equal(ds_tee_open("embedded", &t, err, sizeof(err)), 0);
    assert_string_equal(ds_tee_kind(t), "embedded");
    assert_true(ds_tee_is_simulated(t));
    ds_tee_close(t);
    t = NULL;
    assert_int_equal(ds_tee_open("embedded:" DEV_SEED_HEX, &t, err, sizeof(err)), 0);
    ds_tee_close(t);
    static const char *const bad[] = {
        "embedded:", "embedded:abcd", "embedded:" DEV_SEED_HEX "00",
        "embedded:zz737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        t = NULL;
        err[0] = '\0';
        assert_int_equal(ds_tee_open(bad[i], &t, err, sizeof(err)), -DS_E_FORMAT);
        assert_null(t);
        assert_non_null(strstr(err, "64 hex digits"));
    }
    assert_int_equal(ds_tee_open("embeddedx", &t, err, sizeof(err)), -DS_E_FORMAT);
    assert_non_null(strstr(err, "embedded[:<seed hex>]"));
}

static void test_boot_log_replays(void **state)
{
    (void)state;
    struct ds_tee *t = NULL;
    assert_int_equal(ds_tee_open("embedded", &t, NULL, 0), 0);
    struct ds_tee_registers regs;
    assert_int_equal(ds_tee_read_rtmrs(t, &regs), 0);
    struct ds_event_log *log = read_log(t);
    uint8_t replay[DS_RTMR_COUNT][DS_RTMR_SIZE];
    assert_int_equal(ds_eventlog_replay(log, NULL, replay), 0);
    assert_memory_equal(replay, regs.rtmr, sizeof(replay));
    for (int i = 0; i < 3; i++) {
        assert_false(ds_is_zero(regs.rtmr[i], 48)); /* every boot register is measured */
    }
    assert_true(ds_is_zero(regs.rtmr[3], 48)); /* nothing runtime yet */
    /* The three ACPI DATA events the stripped form keeps. */
    int acpi = 0;
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *e = &log->events[i];
        if (e->imr == 0 && e->event_type == DS_EV_PLATFORM_CONFIG_FLAGS && e->payload_len == 9 &&
            memcmp(e->payload, "ACPI DATA", 9) == 0) {
            acpi++;
        }
    }
    assert_int_equal(acpi, 3);
    ds_eventlog_free(log);
    ds_tee_close(t);
}

static void test_extend(void **state)
{
    (void)state;
    struct ds_tee *t = NULL;
    assert_int_equal(ds_tee_open("embedded", &t, NULL, 0), 0);
    struct ds_tee_registers before, after;
    assert_int_equal(ds_tee_read_rtmrs(t, &before), 0);
    uint8_t digest[48], want[48];
    ds_runtime_event_digest_v1_sha384("app-event", "xyz", 3, digest);
    assert_int_equal(ds_tee_extend_rtmr(t, 3, digest, "app-event", (const uint8_t *)"xyz", 3), 0);
    assert_int_equal(ds_tee_read_rtmrs(t, &after), 0);
    ds_sha384_v(want, 2, before.rtmr[3], (size_t)48, digest, (size_t)48);
    assert_memory_equal(after.rtmr[3], want, 48);
    assert_memory_equal(after.rtmr, before.rtmr, 3 * 48);
    struct ds_event_log *log = read_log(t);
    const struct ds_event *last = &log->events[log->count - 1];
    assert_string_equal(last->name, "app-event");
    assert_int_equal(last->imr, 3);
    uint8_t replay[DS_RTMR_COUNT][DS_RTMR_SIZE];
    assert_int_equal(ds_eventlog_replay(log, NULL, replay), 0);
    assert_memory_equal(replay, after.rtmr, sizeof(replay));
    size_t count = log->count;
    ds_eventlog_free(log);

    /* RTMR2 (EV_IPL) is extendable; RTMR0/1 and a digest that is not the event's are not. */
    uint8_t d2[48];
    ds_sha384("kernel-cmdline", 14, d2);
    assert_int_equal(ds_tee_extend_rtmr(t, 2, d2, "", NULL, 0), 0);
    assert_int_equal(ds_tee_extend_rtmr(t, 0, d2, "x", NULL, 0), -DS_E_DENIED);
    assert_int_equal(ds_tee_extend_rtmr(t, 1, d2, "x", NULL, 0), -DS_E_DENIED);
    assert_int_equal(ds_tee_extend_rtmr(t, 3, d2, "x", NULL, 0), -DS_E_MISMATCH);
    log = read_log(t);
    assert_int_equal(log->count, count + 1);
    assert_int_equal(ds_tee_read_rtmrs(t, &before), 0);
    assert_int_equal(ds_eventlog_replay(log, NULL, replay), 0);
    assert_memory_equal(replay, before.rtmr, sizeof(replay));
    ds_eventlog_free(log);
    ds_tee_close(t);
}

static void verify_with(const char *seed_hex, const uint8_t *quote, size_t len, bool expect_ok)
{
    uint8_t seed[32];
    struct ds_sim_pki *pki = NULL;
    struct ds_collateral *coll = NULL;
    struct ds_verifier *v = NULL;
    struct ds_verify_result res;
    const uint8_t *root;
    size_t root_len;
    int64_t now = (int64_t)time(NULL);
    assert_int_equal(ds_hex_decode(seed_hex, 64, seed, 32), 32);
    assert_int_equal(ds_sim_pki_new(seed, &pki), 0);
    assert_int_equal(ds_sim_collateral(pki, now, &coll), 0);
    ds_sim_pki_root_der(pki, &root, &root_len);
    assert_int_equal(ds_verifier_new(root, root_len, &v), 0);
    memset(&res, 0, sizeof(res));
    int r = ds_verify_quote(v, quote, len, coll, now, &res);
    if (expect_ok) {
        assert_int_equal(r, 0);
        assert_true(res.ok);
    } else {
        assert_int_not_equal(r, 0);
    }
    ds_verify_result_done(&res);
    ds_verifier_free(v);
    ds_collateral_free(coll);
    ds_sim_pki_free(pki);
}

static void test_quote(void **state)
{
    (void)state;
    struct ds_tee *t = NULL;
    assert_int_equal(ds_tee_open("embedded", &t, NULL, 0), 0);
    uint8_t rd[64], *quote = NULL;
    size_t len = 0;
    for (int i = 0; i < 64; i++) {
        rd[i] = (uint8_t)i;
    }
    assert_int_equal(ds_tee_get_quote(t, rd, &quote, &len), 0);
    struct ds_quote q;
    assert_int_equal(ds_quote_parse(quote, len, &q), 0);
    struct ds_tee_registers regs;
    assert_int_equal(ds_tee_read_rtmrs(t, &regs), 0);
    assert_int_equal(q.version, 4);
    assert_memory_equal(q.td.report_data, rd, 64);
    assert_memory_equal(q.td.mr_td, regs.mrtd, 48);
    assert_memory_equal(q.td.rtmr, regs.rtmr, sizeof(regs.rtmr));
    verify_with(DEV_SEED_HEX, quote, len, true);
    verify_with(OTHER_SEED, quote, len, false);
    free(quote);
    ds_tee_close(t);

    /* Another seed: same registers, a quote only that seed's root accepts. */
    assert_int_equal(ds_tee_open("embedded:" OTHER_SEED, &t, NULL, 0), 0);
    struct ds_tee_registers regs2;
    assert_int_equal(ds_tee_read_rtmrs(t, &regs2), 0);
    assert_memory_equal(&regs, &regs2, sizeof(regs));
    assert_int_equal(ds_tee_get_quote(t, rd, &quote, &len), 0);
    verify_with(OTHER_SEED, quote, len, true);
    verify_with(DEV_SEED_HEX, quote, len, false);
    free(quote);
    ds_tee_close(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_spec_parsing),
        cmocka_unit_test(test_boot_log_replays),
        cmocka_unit_test(test_extend),
        cmocka_unit_test(test_quote),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
