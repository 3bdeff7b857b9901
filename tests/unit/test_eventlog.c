/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/attest event logs: the CCEL binary parser (built byte by byte here, with
 * negative cases for every field), the JSON form (valid, invalid, round trip, stripped output),
 * runtime-event digests V1/V2 against an independent Python hashlib/json oracle, V2 preimage
 * validation, RTMR replay against a straight OpenSSL fold, and find_event.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <cmocka.h>

#include <openssl/sha.h>

#include "dstack/eventlog.h"

/* ---- a CCEL builder ------------------------------------------------------------------------- */

struct ccel {
    uint8_t data[8192];
    size_t len;
    size_t bounds[64]; /* offsets where a parse may legally end (after the header and each event) */
    size_t nbounds;
};

static void put(struct ccel *c, const void *p, size_t n)
{
    assert_true(c->len + n <= sizeof(c->data));
    memcpy(c->data + c->len, p, n);
    c->len += n;
}

static void put_u32(struct ccel *c, uint32_t v)
{
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(c, b, 4);
}

static void put_u16(struct ccel *c, uint16_t v)
{
    uint8_t b[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    put(c, b, 2);
}

static void ccel_header(struct ccel *c)
{
    uint8_t zero20[20] = {0};
    memset(c, 0, sizeof(*c));
    put_u32(c, 0);                          /* pcr */
    put_u32(c, DS_EV_NO_ACTION);            /* type */
    put(c, zero20, sizeof(zero20));         /* SHA-1 digest */
    put_u32(c, 16 + 4 + 4 + 4 + 4 + 1 + 3); /* event size */
    put(c, "Spec ID Event03", 16);
    put_u32(c, 0);                 /* platform class */
    put(c, "\x00\x02\x00\x02", 4); /* minor, major, errata, uintn */
    put_u32(c, 1);                 /* one algorithm */
    put_u16(c, DS_TPM_ALG_SHA384);
    put_u16(c, 48);
    put(c, "\x03xyz", 4); /* vendor info size 3 */
    c->bounds[c->nbounds++] = c->len;
}

/* An event with one SHA-384 digest = 0xd0+seed repeated. */
static void ccel_event(struct ccel *c, uint32_t imr_index, uint32_t type, uint8_t seed,
                       const void *payload, size_t plen)
{
    uint8_t d[48];
    memset(d, seed, sizeof(d));
    put_u32(c, imr_index);
    put_u32(c, type);
    put_u32(c, 1);
    put_u16(c, DS_TPM_ALG_SHA384);
    put(c, d, sizeof(d));
    put_u32(c, (uint32_t)plen);
    put(c, payload, plen);
    c->bounds[c->nbounds++] = c->len;
}

static bool is_bound(const struct ccel *c, size_t off)
{
    for (size_t i = 0; i < c->nbounds; i++) {
        if (c->bounds[i] == off) {
            return true;
        }
    }
    return false;
}

/* The sample log: RTMR0 table + 3 ACPI DATA, a dropped MR-0 event, RTMR1, RTMR2, RTMR3. */
static void ccel_sample(struct ccel *c)
{
    ccel_header(c);
    ccel_event(c, 1, 0x8000000B, 1, "TdxTable", 8);
    ccel_event(c, 1, DS_EV_PLATFORM_CONFIG_FLAGS, 2, "ACPI DATA", 9);
    ccel_event(c, 0, 0x80000001, 9, "dropped", 7); /* imr_index 0: dropped */
    ccel_event(c, 1, DS_EV_PLATFORM_CONFIG_FLAGS, 3, "ACPI DATA", 9);
    ccel_event(c, 1, DS_EV_PLATFORM_CONFIG_FLAGS, 4, "ACPI DATA", 9);
    ccel_event(c, 1, DS_EV_PLATFORM_CONFIG_FLAGS, 5, "ACPI DATA", 9); /* 4th: not labelled */
    ccel_event(c, 2, 0x80000003, 6, "kernel", 6);
    ccel_event(c, 3, 0xD, 7, "cmdline", 7);
    ccel_event(c, 4, 0x80000007, 8, "", 0);
}

/* Independent replay: SHA384 fold with OpenSSL's one-shot API over expected (imr, seed). */
static void oracle_extend(uint8_t mr[48], uint8_t seed)
{
    uint8_t buf[96];
    memcpy(buf, mr, 48);
    memset(buf + 48, seed, 48);
    SHA384(buf, sizeof(buf), mr);
}

static void test_ccel_sample(void **state)
{
    struct ccel c;
    struct ds_event_log *log = NULL;
    ccel_sample(&c);
    uint8_t pad[16];
    memset(pad, 0xFF, sizeof(pad));
    put(&c, pad, sizeof(pad));

    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), 0);
    assert_int_equal(log->count, 8);
    const uint32_t imrs[8] = {0, 0, 0, 0, 0, 1, 2, 3};
    const char *names[8] = {"", "acpi-loader", "acpi-rsdp", "acpi-tables", "", "", "", ""};
    for (size_t i = 0; i < 8; i++) {
        assert_int_equal(log->events[i].imr, imrs[i]);
        assert_string_equal(log->events[i].name, names[i]);
        assert_int_equal(log->events[i].digest_len, 48);
        assert_int_equal(log->events[i].version, 1);
    }
    assert_int_equal(log->events[0].event_type, 0x8000000B);
    assert_int_equal(log->events[0].payload_len, 8);
    assert_memory_equal(log->events[0].payload, "TdxTable", 8);
    assert_int_equal(log->events[7].payload_len, 0);

    uint8_t mr[4][48], exp[4][48];
    memset(exp, 0, sizeof(exp));
    const uint8_t seeds[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    for (size_t i = 0; i < 8; i++) {
        oracle_extend(exp[imrs[i]], seeds[i]);
    }
    assert_int_equal(ds_eventlog_replay(log, NULL, mr), 0);
    assert_memory_equal(mr, exp, sizeof(exp));
    assert_int_equal(ds_rtmr_first_mismatch(mr, exp), -1);
    exp[2][47] ^= 1;
    assert_int_equal(ds_rtmr_first_mismatch(mr, exp), 2);
    exp[1][0] ^= 1;
    assert_int_equal(ds_rtmr_first_mismatch(mr, exp), 1);

    /* Replay up to and including the acpi-rsdp event: RTMR0 has 3 extends, the rest zero. */
    uint8_t part[4][48], exp2[4][48];
    memset(exp2, 0, sizeof(exp2));
    oracle_extend(exp2[0], 1);
    oracle_extend(exp2[0], 2);
    oracle_extend(exp2[0], 3);
    assert_int_equal(ds_eventlog_replay(log, "acpi-rsdp", part), 0);
    assert_memory_equal(part, exp2, sizeof(exp2));
    /* An absent stop name replays everything (upstream replay_events). */
    assert_int_equal(ds_eventlog_replay(log, "no-such-event", part), 0);
    assert_memory_equal(part, mr, sizeof(mr));
    ds_eventlog_free(log);

    /* Without padding the log ends at the data end. */
    ccel_sample(&c);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), 0);
    assert_int_equal(log->count, 8);
    ds_eventlog_free(log);
}

static void test_ccel_truncated_everywhere(void **state)
{
    struct ccel c;
    ccel_sample(&c);
    /* Events kept before boundary i: boundary 3 closes the dropped imr_index 0 event. */
    size_t events_before[64];
    for (size_t i = 0; i < c.nbounds; i++) {
        events_before[i] = i >= 3 ? i - 1 : i;
    }
    for (size_t cut = 0; cut < c.len; cut++) {
        struct ds_event_log *log = NULL;
        int r = ds_eventlog_parse_ccel(c.data, cut, &log);
        if (is_bound(&c, cut)) {
            assert_int_equal(r, 0);
            size_t bi = 0;
            while (c.bounds[bi] != cut) {
                bi++;
            }
            assert_int_equal(log->count, events_before[bi]);
            ds_eventlog_free(log);
        } else {
            if (r != -DS_E_TRUNCATED) {
                fprintf(stderr, "cut %zu: %d\n", cut, r);
            }
            assert_int_equal(r, -DS_E_TRUNCATED);
            assert_null(log);
        }
    }
}

static void test_ccel_negative(void **state)
{
    struct ccel c;
    struct ds_event_log *log = NULL;
    uint8_t d48[48] = {0};

    /* Unknown digest algorithm (SM3 0x0012) */
    ccel_header(&c);
    put_u32(&c, 1);
    put_u32(&c, 4);
    put_u32(&c, 1);
    put_u16(&c, 0x0012);
    put(&c, d48, 32);
    put_u32(&c, 0);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_UNSUPPORTED);

    /* Two digests in a TDX (imr_index 1) event */
    ccel_header(&c);
    put_u32(&c, 1);
    put_u32(&c, 4);
    put_u32(&c, 2);
    put_u16(&c, DS_TPM_ALG_SHA384);
    put(&c, d48, 48);
    put_u16(&c, DS_TPM_ALG_SHA256);
    put(&c, d48, 32);
    put_u32(&c, 0);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_FORMAT);
    /* ... but an imr_index 0 event with two digests is dropped before the check */
    c.data[c.bounds[0]] = 0;
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), 0);
    assert_int_equal(log->count, 0);
    ds_eventlog_free(log);
    log = NULL;

    /* Zero digests in a TDX event */
    ccel_header(&c);
    put_u32(&c, 2);
    put_u32(&c, 4);
    put_u32(&c, 0);
    put_u32(&c, 0);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_FORMAT);

    /* Oversized event_size: limit, not an allocation */
    ccel_header(&c);
    put_u32(&c, 1);
    put_u32(&c, 4);
    put_u32(&c, 1);
    put_u16(&c, DS_TPM_ALG_SHA384);
    put(&c, d48, 48);
    put_u32(&c, 0xFFFFFFF0u);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_LIMIT);
    /* event_size within the limit but past the end: truncated */
    c.len -= 4;
    put_u32(&c, 100);
    put(&c, d48, 10);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_TRUNCATED);

    /* Absurd digest count */
    ccel_header(&c);
    put_u32(&c, 1);
    put_u32(&c, 4);
    put_u32(&c, 0x10000);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_LIMIT);

    /* imr_index 5: no such RTMR */
    ccel_header(&c);
    ccel_event(&c, 5, 4, 1, "", 0);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_FORMAT);

    /* Bad Spec ID signature, wrong header type, too many algorithms, zero algorithms */
    ccel_header(&c);
    c.data[32] = 'X';
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_FORMAT);
    ccel_header(&c);
    c.data[4] = 1;
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_FORMAT);
    ccel_header(&c);
    c.data[32 + 16 + 8] = 200; /* numberOfAlgorithms */
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_LIMIT);
    ccel_header(&c);
    c.data[32 + 16 + 8] = 0;
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_FORMAT);
    /* Header event size larger than the data */
    ccel_header(&c);
    c.data[28] = 0x40;
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), -DS_E_TRUNCATED);
    /* Header alone (no events) is a valid empty log */
    ccel_header(&c);
    assert_int_equal(ds_eventlog_parse_ccel(c.data, c.len, &log), 0);
    assert_int_equal(log->count, 0);
    ds_eventlog_free(log);
    log = NULL;
    /* Empty input */
    assert_int_equal(ds_eventlog_parse_ccel(c.data, 0, &log), -DS_E_TRUNCATED);
    assert_null(log);
}

static void test_ccel_event_cap(void **state)
{
    static struct ccel big;
    struct ds_event_log *log = NULL;
    ccel_header(&big);
    /* Minimal events: 4+4+4+2+20(SHA-1)+4 = 38 bytes; exceed the count with imr_index 0 ones. */
    size_t n = 0;
    uint8_t *buf = malloc((DS_EVENTLOG_MAX_EVENTS + 2) * 38 + big.len);
    assert_non_null(buf);
    memcpy(buf, big.data, big.len);
    size_t len = big.len;
    for (n = 0; n < DS_EVENTLOG_MAX_EVENTS + 1; n++) {
        uint8_t ev[38] = {0};
        ev[8] = 1;    /* one digest */
        ev[12] = 0x4; /* SHA-1 */
        memcpy(buf + len, ev, sizeof(ev));
        len += sizeof(ev);
    }
    assert_int_equal(ds_eventlog_parse_ccel(buf, len, &log), -DS_E_LIMIT);
    assert_int_equal(ds_eventlog_parse_ccel(buf, len - 38, &log), 0);
    assert_int_equal(log->count, 0);
    ds_eventlog_free(log);
    free(buf);
}

/* ---- JSON form ------------------------------------------------------------------------------ */

static const char *sample_json =
    "[{\"imr\":0,\"event_type\":2147483659,\"digest\":"
    "\"0101010101010101010101010101010101010101010101010101010101010101010101010101010101010101"
    "01010101\",\"event\":\"\",\"event_payload\":\"546478\"},"
    "{\"imr\":0,\"event_type\":10,\"digest\":"
    "\"0202020202020202020202020202020202020202020202020202020202020202020202020202020202020202"
    "02020202\",\"event\":\"acpi-loader\",\"event_payload\":\"414350492044415441\"},"
    "{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"app-id\","
    "\"event_payload\":\"deadbeef\"},"
    "{\"imr\":3,\"event_type\":134217729,\"event\":\"compose-hash\","
    "\"event_payload\":\"abcd\",\"version\":2,\"preimage\":"
    "\"7b226e616d65223a22636f6d706f73652d68617368222c227061796c6f6164223a2261626364222c22747970"
    "65223a3133343231373732397d\",\"unknown\":true}]";

static void test_json_parse_and_roundtrip(void **state)
{
    struct ds_event_log *log = NULL, *log2 = NULL;
    assert_int_equal(ds_eventlog_parse_json(sample_json, strlen(sample_json), &log), 0);
    assert_int_equal(log->count, 4);
    assert_int_equal(log->events[0].event_type, 0x8000000B);
    assert_int_equal(log->events[0].digest_len, 48);
    assert_int_equal(log->events[2].digest_len, 0);
    assert_int_equal(log->events[2].version, 1);
    assert_string_equal(log->events[3].name, "compose-hash");
    assert_int_equal(log->events[3].version, 2);
    assert_int_equal(log->events[3].preimage_len,
                     strlen("{\"name\":\"compose-hash\",\"payload\":\"abcd\",\"type\":134217729}"));
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, NULL), 0);

    /* Full form: parse(to_json(x)) == x, and to_json is a fixed point. */
    char *j1 = NULL, *j2 = NULL;
    size_t n1, n2;
    assert_int_equal(ds_eventlog_to_json(log, DS_EVENTLOG_JSON_PREIMAGE, &j1, &n1), 0);
    assert_int_equal(strlen(j1), n1);
    assert_int_equal(ds_eventlog_parse_json(j1, n1, &log2), 0);
    assert_int_equal(ds_eventlog_to_json(log2, DS_EVENTLOG_JSON_PREIMAGE, &j2, &n2), 0);
    assert_string_equal(j1, j2);
    assert_int_equal(log2->count, log->count);
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *a = &log->events[i], *b = &log2->events[i];
        assert_int_equal(a->imr, b->imr);
        assert_int_equal(a->event_type, b->event_type);
        assert_int_equal(a->digest_len, b->digest_len);
        assert_memory_equal(a->digest, b->digest, a->digest_len);
        assert_string_equal(a->name, b->name);
        assert_int_equal(a->payload_len, b->payload_len);
        if (a->payload_len) {
            assert_memory_equal(a->payload, b->payload, a->payload_len);
        }
        assert_int_equal(a->version, b->version);
        assert_int_equal(a->preimage_len, b->preimage_len);
    }
    free(j1);
    free(j2);
    ds_eventlog_free(log2);

    /* Exact full output without preimages (Info.tcb_info.event_log shape) for the runtime part */
    assert_int_equal(ds_eventlog_to_json(log, 0, &j1, NULL), 0);
    assert_non_null(strstr(j1, "{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":"
                               "\"app-id\",\"event_payload\":\"deadbeef\"},{\"imr\":3,"
                               "\"event_type\":134217729,\"digest\":\"\",\"event\":\"compose-"
                               "hash\",\"event_payload\":\"abcd\",\"version\":2}]"));
    assert_null(strstr(j1, "preimage"));
    free(j1);

    /* Stripped (GetQuote): boot payloads dropped except ACPI DATA, runtime digests dropped. */
    log->events[2].digest_len = 48;
    memset(log->events[2].digest, 0xee, 48);
    assert_int_equal(
        ds_eventlog_to_json(log, DS_EVENTLOG_JSON_STRIPPED | DS_EVENTLOG_JSON_PREIMAGE, &j1, NULL),
        0);
    assert_string_equal(
        j1, "[{\"imr\":0,\"event_type\":2147483659,\"digest\":"
            "\"0101010101010101010101010101010101010101010101010101010101010101010101010101010101"
            "01010101010101\",\"event\":\"\",\"event_payload\":\"\"},"
            "{\"imr\":0,\"event_type\":10,\"digest\":"
            "\"0202020202020202020202020202020202020202020202020202020202020202020202020202020202"
            "02020202020202\",\"event\":\"acpi-loader\",\"event_payload\":\"414350492044415441\"},"
            "{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"app-id\","
            "\"event_payload\":\"deadbeef\"},"
            "{\"imr\":3,\"event_type\":134217729,\"digest\":\"\",\"event\":\"compose-hash\","
            "\"event_payload\":\"abcd\",\"version\":2,\"preimage\":"
            "\"7b226e616d65223a22636f6d706f73652d68617368222c227061796c6f6164223a2261626364222c22"
            "74797065223a3133343231373732397d\"}]");
    free(j1);

    /* RUNTIME_DIGESTS keeps the runtime digest in the stripped form (still no boot payload). */
    assert_int_equal(
        ds_eventlog_to_json(log, DS_EVENTLOG_JSON_STRIPPED | DS_EVENTLOG_JSON_RUNTIME_DIGESTS, &j1,
                            NULL),
        0);
    assert_non_null(strstr(j1, "\"digest\":\"eeeeeeee"));
    assert_non_null(strstr(j1, "\"event\":\"\",\"event_payload\":\"\"}"));
    assert_null(strstr(j1, "preimage"));
    free(j1);

    /* A V2 event without a stored preimage gets a computed one under PREIMAGE. */
    free(log->events[3].preimage);
    log->events[3].preimage = NULL;
    log->events[3].preimage_len = 0;
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, NULL), -DS_E_NOT_FOUND);
    assert_int_equal(ds_eventlog_to_json(log, DS_EVENTLOG_JSON_PREIMAGE, &j1, NULL), 0);
    assert_non_null(strstr(j1, "\"preimage\":\"7b226e616d65223a22636f6d706f73652d"));
    free(j1);
    ds_eventlog_free(log);

    /* Empty array, digest missing, whitespace */
    assert_int_equal(ds_eventlog_parse_json(" [ ] ", 5, &log), 0);
    assert_int_equal(log->count, 0);
    assert_int_equal(ds_eventlog_to_json(log, 0, &j1, NULL), 0);
    assert_string_equal(j1, "[]");
    free(j1);
    ds_eventlog_free(log);
}

static void test_json_invalid(void **state)
{
    static const struct {
        const char *json;
        int err;
    } cases[] = {
        {"", -DS_E_FORMAT},
        {"{}", -DS_E_FORMAT},
        {"[1]", -DS_E_FORMAT},
        {"[{\"imr\":\"0\",\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}]", -DS_E_FORMAT},
        {"[{\"imr\":4,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}]", -DS_E_FORMAT},
        {"[{\"imr\":-1,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}]", -DS_E_FORMAT},
        {"[{\"imr\":0.5,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}]", -DS_E_FORMAT},
        {"[{\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}]", -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":4294967296,\"event\":\"\",\"event_payload\":\"\"}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":\"zz\"}]", -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":\"abc\"}]", -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":12}]", -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\"}]", -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event_payload\":\"\"}]", -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":7,\"event_payload\":\"\"}]", -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"a\\u0000b\",\"event_payload\":\"\"}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"digest\":\"0102\",\"event\":\"\",\"event_payload\":\"\"}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"digest\":\"xx\",\"event\":\"\",\"event_payload\":\"\"}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\",\"version\":3}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\",\"version\":\"2\"}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"imr\":1,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\",\"preimage\":\"q\"}]",
         -DS_E_FORMAT},
        {"[{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}", -DS_E_FORMAT},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(cases); i++) {
        struct ds_event_log *log = NULL;
        int r = ds_eventlog_parse_json(cases[i].json, strlen(cases[i].json), &log);
        if (r != cases[i].err) {
            fprintf(stderr, "case %zu: got %d (%s)\n", i, r, ds_strerror(r));
        }
        assert_int_equal(r, cases[i].err);
        assert_null(log);
    }

    /* Over-long name and too many events are limits. */
    size_t nlen = DS_EVENTLOG_MAX_NAME + 1;
    char *big = malloc(nlen + 128);
    assert_non_null(big);
    int k = sprintf(big, "[{\"imr\":0,\"event_type\":1,\"event\":\"");
    memset(big + k, 'a', nlen);
    strcpy(big + k + nlen, "\",\"event_payload\":\"\"}]");
    struct ds_event_log *log = NULL;
    assert_int_equal(ds_eventlog_parse_json(big, strlen(big), &log), -DS_E_LIMIT);
    free(big);

    const char *one = "{\"imr\":0,\"event_type\":1,\"event\":\"\",\"event_payload\":\"\"}";
    size_t cap = (strlen(one) + 1) * (DS_EVENTLOG_MAX_EVENTS + 1) + 3;
    char *many = malloc(cap);
    assert_non_null(many);
    size_t off = 0;
    many[off++] = '[';
    for (size_t i = 0; i < DS_EVENTLOG_MAX_EVENTS + 1; i++) {
        if (i) {
            many[off++] = ',';
        }
        memcpy(many + off, one, strlen(one));
        off += strlen(one);
    }
    many[off++] = ']';
    assert_int_equal(ds_eventlog_parse_json(many, off, &log), -DS_E_LIMIT);
    free(many);
}

/* ---- runtime events vs. an independent oracle -------------------------------------------- */

static const char *oracle_py =
    "import sys, hashlib, json\n"
    "for arg in sys.argv[1:]:\n"
    "    nh, ph = arg.split(':')\n"
    "    name = bytes.fromhex(nh).decode('utf-8'); payload = bytes.fromhex(ph)\n"
    "    v1 = b'\\x01\\x00\\x00\\x08:' + name.encode('utf-8') + b':' + payload\n"
    "    pre = json.dumps({'name': name, 'payload': payload.hex(), 'type': 134217729},\n"
    "                     sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode()\n"
    "    print(hashlib.sha384(v1).hexdigest(), hashlib.sha256(v1).hexdigest(),\n"
    "          hashlib.sha384(pre).hexdigest(), hashlib.sha256(pre).hexdigest(), pre.hex())\n";

struct rt_case {
    const char *name;
    const char *payload;
    size_t payload_len;
};

static const struct rt_case rt_cases[] = {
    {"app-id", "\xde\xad\xbe\xef", 4},
    {"compose-hash", "\xab\xcd", 2},
    {"", "", 0},
    {"a\"b\n", "x", 1},
    {"event\"with\\special\nchars", "\xff", 1},
    {"\b\f\n\r\t\x01\x1f\x7f", "\x00\x01", 2},
    {"\xe6\xb5\x8b\xe8\xaf\x95-emoji-\xf0\x9f\xa6\x80", "payload", 7},
    {"</script>\xe2\x80\xa8", "", 0},
};

static void test_runtime_digests_oracle(void **state)
{
    char script[] = "/tmp/ds_evl_oracle_XXXXXX";
    int fd = mkstemp(script);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, oracle_py, strlen(oracle_py)), (ssize_t)strlen(oracle_py));
    close(fd);

    char cmd[8192];
    size_t off = (size_t)snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s", script);
    for (size_t i = 0; i < DS_ARRAY_SIZE(rt_cases); i++) {
        char nh[512], ph[64];
        ds_hex_encode(rt_cases[i].name, strlen(rt_cases[i].name), nh);
        ds_hex_encode(rt_cases[i].payload, rt_cases[i].payload_len, ph);
        off += (size_t)snprintf(cmd + off, sizeof(cmd) - off, " %s:%s", nh, ph);
    }
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    for (size_t i = 0; i < DS_ARRAY_SIZE(rt_cases); i++) {
        char e384[97], e256[65], e2_384[97], e2_256[65], epre[1024];
        assert_int_equal(fscanf(p, "%96s %64s %96s %64s %1023s", e384, e256, e2_384, e2_256, epre),
                         5);
        const struct rt_case *c = &rt_cases[i];
        uint8_t d384[48], d256[32];
        char hex[1024];

        ds_runtime_event_digest_v1_sha384(c->name, c->payload, c->payload_len, d384);
        ds_hex_encode(d384, 48, hex);
        assert_string_equal(hex, e384);
        ds_runtime_event_digest_v1_sha256(c->name, c->payload, c->payload_len, d256);
        ds_hex_encode(d256, 32, hex);
        assert_string_equal(hex, e256);
        assert_int_equal(
            ds_runtime_event_digest_sha384(1, c->name, c->payload, c->payload_len, d384), 0);
        ds_hex_encode(d384, 48, hex);
        assert_string_equal(hex, e384);

        char *pre;
        size_t pre_len;
        assert_int_equal(
            ds_runtime_event_preimage_v2(c->name, c->payload, c->payload_len, &pre, &pre_len), 0);
        ds_hex_encode(pre, pre_len, hex);
        assert_string_equal(hex, epre);
        free(pre);
        assert_int_equal(
            ds_runtime_event_digest_sha384(2, c->name, c->payload, c->payload_len, d384), 0);
        ds_hex_encode(d384, 48, hex);
        assert_string_equal(hex, e2_384);
        assert_int_equal(
            ds_runtime_event_digest_sha256(2, c->name, c->payload, c->payload_len, d256), 0);
        ds_hex_encode(d256, 32, hex);
        assert_string_equal(hex, e2_256);
    }
    assert_int_equal(pclose(p), 0);
    unlink(script);
}

static void test_runtime_fixed_vectors(void **state)
{
    char *pre;
    size_t n;
    /* upstream runtime_events.rs tests */
    assert_int_equal(ds_runtime_event_preimage_v2("compose-hash", "\xab\xcd", 2, &pre, &n), 0);
    assert_string_equal(pre, "{\"name\":\"compose-hash\",\"payload\":\"abcd\",\"type\":134217729}");
    free(pre);
    assert_int_equal(
        ds_runtime_event_preimage_v2("event\"with\\special\nchars", "\xff", 1, &pre, &n), 0);
    assert_string_equal(
        pre,
        "{\"name\":\"event\\\"with\\\\special\\nchars\",\"payload\":\"ff\",\"type\":134217729}");
    free(pre);
    assert_int_equal(ds_runtime_event_preimage_v2("\b\f\n\r\t\x01", "", 0, &pre, &n), 0);
    assert_string_equal(
        pre, "{\"name\":\"\\b\\f\\n\\r\\t\\u0001\",\"payload\":\"\",\"type\":134217729}");
    free(pre);
    assert_int_equal(ds_runtime_event_preimage_v2("x", "\xAB\xCD\xEF", 3, &pre, &n), 0);
    assert_non_null(strstr(pre, "\"payload\":\"abcdef\""));
    free(pre);

    /* Invalid UTF-8 names and bad versions are rejected. */
    uint8_t d[48];
    assert_int_equal(ds_runtime_event_preimage_v2("\xc0\xaf", "", 0, &pre, &n), -DS_E_FORMAT);
    assert_int_equal(ds_runtime_event_preimage_v2("\xed\xa0\x80", "", 0, &pre, &n), -DS_E_FORMAT);
    assert_int_equal(ds_runtime_event_preimage_v2("\xf4\x90\x80\x80", "", 0, &pre, &n),
                     -DS_E_FORMAT);
    assert_int_equal(ds_runtime_event_preimage_v2("\xe6\xb5", "", 0, &pre, &n), -DS_E_FORMAT);
    assert_int_equal(ds_runtime_event_digest_sha384(3, "x", "", 0, d), -DS_E_FORMAT);
    assert_int_equal(ds_runtime_event_digest_sha384(0, "x", "", 0, d), -DS_E_FORMAT);
}

/* ---- runtime logs: effective digest, V2 validation, RTMR3, find_event ------------------- */

static struct ds_event_log *runtime_log(uint32_t version)
{
    struct ds_event_log *log = NULL;
    assert_int_equal(ds_eventlog_new(&log), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "system-preparing", "", 0, version), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "app-id", "01234567890123456789", 20, version),
                     0);
    assert_int_equal(ds_eventlog_append_runtime(log, "boot-mr-done", "", 0, version), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "system-ready", "", 0, version), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "app-id", "late", 4, version), 0);
    return log;
}

static void test_runtime_log_replay(void **state)
{
    for (uint32_t version = 1; version <= 2; version++) {
        struct ds_event_log *log = runtime_log(version);
        uint8_t mr[4][48], rt[48], rt_boot[48], exp[48];
        memset(exp, 0, sizeof(exp));
        uint8_t exp_boot[48];
        for (size_t i = 0; i < log->count; i++) {
            uint8_t d[48], buf[96];
            assert_int_equal(ds_runtime_event_digest_sha384(version, log->events[i].name,
                                                            log->events[i].payload,
                                                            log->events[i].payload_len, d),
                             0);
            assert_memory_equal(d, log->events[i].digest, 48);
            memcpy(buf, exp, 48);
            memcpy(buf + 48, d, 48);
            SHA384(buf, 96, exp);
            if (i == 2) {
                memcpy(exp_boot, exp, 48);
            }
        }
        assert_int_equal(ds_eventlog_replay(log, NULL, mr), 0);
        assert_memory_equal(mr[3], exp, 48);
        assert_true(ds_is_zero(mr[0], 48 * 3));
        assert_int_equal(ds_eventlog_replay_runtime_sha384(log, NULL, rt), 0);
        assert_memory_equal(rt, exp, 48);
        assert_int_equal(ds_eventlog_replay_runtime_sha384(log, DS_EVENT_BOOT_MR_DONE, rt_boot), 0);
        assert_memory_equal(rt_boot, exp_boot, 48);

        /* The supplied digest of a runtime event is ignored (spec §4.2). */
        memset(log->events[1].digest, 0x55, 48);
        log->events[0].digest_len = 0;
        assert_int_equal(ds_eventlog_replay(log, NULL, mr), 0);
        assert_memory_equal(mr[3], exp, 48);

        struct ds_td_report td;
        memset(&td, 0, sizeof(td));
        memcpy(td.rtmr[3], exp, 48);
        assert_int_equal(ds_eventlog_verify_rtmr3(log, &td), 0);
        td.rtmr[3][0] ^= 1;
        assert_int_equal(ds_eventlog_verify_rtmr3(log, &td), -DS_E_MISMATCH);

        /* find_event stops at system-ready. */
        const struct ds_event *ev = ds_eventlog_find_event(log, "app-id");
        assert_non_null(ev);
        assert_int_equal(ev->payload_len, 20);
        assert_null(ds_eventlog_find_event(log, "late"));
        assert_null(ds_eventlog_find_event(log, "system-ready"));
        ds_eventlog_free(log);
    }

    /* SHA-256 bank (GCP PCR14) */
    struct ds_event_log *log = runtime_log(1);
    uint8_t r256[32], e256[32] = {0};
    for (size_t i = 0; i < log->count; i++) {
        uint8_t d[32], buf[64];
        ds_runtime_event_digest_v1_sha256(log->events[i].name, log->events[i].payload,
                                          log->events[i].payload_len, d);
        memcpy(buf, e256, 32);
        memcpy(buf + 32, d, 32);
        SHA256(buf, 64, e256);
    }
    assert_int_equal(ds_eventlog_replay_runtime_sha256(log, NULL, r256), 0);
    assert_memory_equal(r256, e256, 32);

    /* A boot event without a digest cannot be replayed. */
    struct ds_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.imr = 1;
    ev.event_type = 4;
    ev.version = 1;
    assert_int_equal(ds_eventlog_append(log, &ev), 0);
    uint8_t mr[4][48];
    assert_int_equal(ds_eventlog_replay(log, NULL, mr), -DS_E_NOT_FOUND);
    ds_eventlog_free(log);
}

static void test_v2_preimage_validation(void **state)
{
    struct ds_event_log *log = runtime_log(2);
    size_t bad = 99;
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, &bad), 0);
    assert_int_equal(bad, 99);

    /* Stripped digest (GetQuote form): accepted by decision, replay uses the recomputed one. */
    log->events[1].digest_len = 0;
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, &bad), 0);

    /* Wrong supplied digest */
    log->events[1].digest_len = 48;
    memset(log->events[1].digest, 0x11, 48);
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, &bad), -DS_E_MISMATCH);
    assert_int_equal(bad, 1);
    log->events[1].digest_len = 0;

    /* Preimage that is not the canonical JSON of name+payload */
    log->events[2].preimage[10] ^= 1;
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, &bad), -DS_E_MISMATCH);
    assert_int_equal(bad, 2);
    log->events[2].preimage[10] ^= 1;

    /* A preimage that hashes to the digest but describes another event */
    char *other;
    size_t other_len;
    assert_int_equal(ds_runtime_event_preimage_v2("app-id", "evil", 4, &other, &other_len), 0);
    free(log->events[3].preimage);
    log->events[3].preimage = (uint8_t *)other;
    log->events[3].preimage_len = other_len;
    ds_sha384(other, other_len, log->events[3].digest);
    log->events[3].digest_len = 48;
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, &bad), -DS_E_MISMATCH);
    assert_int_equal(bad, 3);

    /* Missing preimage */
    free(log->events[3].preimage);
    log->events[3].preimage = NULL;
    log->events[3].preimage_len = 0;
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, &bad), -DS_E_NOT_FOUND);
    assert_int_equal(bad, 3);
    ds_eventlog_free(log);

    /* V1 events are not checked */
    log = runtime_log(1);
    assert_int_equal(ds_eventlog_validate_v2_preimages(log, NULL), 0);
    ds_eventlog_free(log);
}

static void test_append_checks(void **state)
{
    struct ds_event_log *log = NULL;
    struct ds_event ev;
    assert_int_equal(ds_eventlog_new(&log), 0);
    memset(&ev, 0, sizeof(ev));
    ev.version = 1;
    ev.imr = 4;
    assert_int_equal(ds_eventlog_append(log, &ev), -DS_E_FORMAT);
    ev.imr = 0;
    ev.version = 0;
    assert_int_equal(ds_eventlog_append(log, &ev), -DS_E_FORMAT);
    ev.version = 2;
    ev.name = "\xff";
    assert_int_equal(ds_eventlog_append(log, &ev), -DS_E_FORMAT);
    ev.name = NULL;
    ev.payload_len = DS_EVENTLOG_MAX_PAYLOAD + 1;
    assert_int_equal(ds_eventlog_append(log, &ev), -DS_E_LIMIT);
    ev.payload_len = 0;
    assert_int_equal(ds_eventlog_append(log, &ev), 0);
    assert_string_equal(log->events[0].name, "");
    assert_int_equal(ds_eventlog_append_runtime(log, "x", "", 0, 3), -DS_E_FORMAT);
    assert_int_equal(ds_eventlog_append_runtime(log, "\xc3", "", 0, 1), -DS_E_FORMAT);
    assert_int_equal(log->count, 1);
    ds_eventlog_free(log);
    ds_eventlog_free(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ccel_sample),
        cmocka_unit_test(test_ccel_truncated_everywhere),
        cmocka_unit_test(test_ccel_negative),
        cmocka_unit_test(test_ccel_event_cap),
        cmocka_unit_test(test_json_parse_and_roundtrip),
        cmocka_unit_test(test_json_invalid),
        cmocka_unit_test(test_runtime_digests_oracle),
        cmocka_unit_test(test_runtime_fixed_vectors),
        cmocka_unit_test(test_runtime_log_replay),
        cmocka_unit_test(test_v2_preimage_validation),
        cmocka_unit_test(test_append_checks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
