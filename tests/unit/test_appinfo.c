/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for app identity decoding (spec attestation.md §4.6): a dstack boot log is built
 * event by event, and app_id, compose_hash, key provider, os_image_hash, device_id,
 * init_script_hashes, mr_system and mr_aggregated are checked against values recomputed here
 * from the definitions with OpenSSL's one-shot hashes (boottime and full, with and without
 * non-zero config registers). Also mr_config_id v1/v2 and report_data against a Python
 * (hashlib + pycryptodome Keccak) oracle and the spec's SHA-512 test vector.
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

static const char kp_json[] = "{\"name\":\"kms\",\"id\":\"3059301306072a8648ce3d0201\"}";

struct fixture {
    uint8_t app_id[20];
    uint8_t compose_hash[32];
    uint8_t instance_id[20];
    uint8_t os_image_hash[32];
    uint8_t init1[32], init2[32];
};

static void fill(uint8_t *p, size_t n, uint8_t seed)
{
    for (size_t i = 0; i < n; i++) {
        p[i] = (uint8_t)(seed + i * 7);
    }
}

static struct ds_event_log *build_log(struct fixture *f, uint32_t version)
{
    struct ds_event_log *log = NULL;
    struct ds_event ev;
    fill(f->app_id, sizeof(f->app_id), 0x10);
    fill(f->compose_hash, sizeof(f->compose_hash), 0x20);
    fill(f->instance_id, sizeof(f->instance_id), 0x30);
    fill(f->os_image_hash, sizeof(f->os_image_hash), 0x40);
    fill(f->init1, 32, 0x50);
    fill(f->init2, 32, 0x60);

    assert_int_equal(ds_eventlog_new(&log), 0);
    /* a boot event: must not disturb runtime decoding */
    memset(&ev, 0, sizeof(ev));
    ev.imr = 0;
    ev.event_type = 0x8000000B;
    ev.version = 1;
    memset(ev.digest, 0xAA, 48);
    ev.digest_len = 48;
    assert_int_equal(ds_eventlog_append(log, &ev), 0);

#define RT(name, p, n) assert_int_equal(ds_eventlog_append_runtime(log, name, p, n, version), 0)
    RT("system-preparing", "", 0);
    RT("app-id", f->app_id, 20);
    RT("compose-hash", f->compose_hash, 32);
    RT("init-script-hash", f->init1, 32);
    RT("init-script-hash", f->init2, 32);
    RT("instance-id", f->instance_id, 20);
    RT("boot-mr-done", "", 0);
    RT("os-image-hash", f->os_image_hash, 32);
    RT("key-provider", kp_json, strlen(kp_json));
    RT("storage-fs", "zfs", 3);
    RT("system-ready", "", 0);
    /* application events after system-ready: replayed into RTMR3, ignored for identity */
    RT("app-id", "evil-app-id-evil-app", 20);
    RT("init-script-hash", "late", 4);
    RT("key-provider", "{}", 2);
#undef RT
    return log;
}

/* RTMR3' computed from the definition with V1 digests (OpenSSL one-shot, no libdstack). */
static void oracle_rtmr3(const struct ds_event_log *log, bool to_boot_done, uint8_t out[48])
{
    memset(out, 0, 48);
    for (size_t i = 0; i < log->count; i++) {
        const struct ds_event *ev = &log->events[i];
        if (ev->event_type != 0x08000001) {
            continue;
        }
        uint8_t pre[256], d[48], buf[96];
        size_t n = 0, nl = strlen(ev->name);
        assert_true(5 + nl + 1 + ev->payload_len <= sizeof(pre));
        memcpy(pre, "\x01\x00\x00\x08:", 5);
        n = 5;
        memcpy(pre + n, ev->name, nl);
        n += nl;
        pre[n++] = ':';
        if (ev->payload_len) {
            memcpy(pre + n, ev->payload, ev->payload_len);
        }
        n += ev->payload_len;
        SHA384(pre, n, d);
        memcpy(buf, out, 48);
        memcpy(buf + 48, d, 48);
        SHA384(buf, 96, out);
        if (to_boot_done && strcmp(ev->name, "boot-mr-done") == 0) {
            break;
        }
    }
}

static void make_td(struct ds_td_report *td, bool config_regs)
{
    memset(td, 0, sizeof(*td));
    fill(td->mr_td, 48, 0x01);
    fill(td->rtmr[0], 48, 0x02);
    fill(td->rtmr[1], 48, 0x03);
    fill(td->rtmr[2], 48, 0x04);
    fill(td->rtmr[3], 48, 0x05); /* not used: RTMR3' comes from the log */
    if (config_regs) {
        fill(td->mr_owner_config, 48, 0x06); /* one non-zero register is enough */
    }
}

static void expected_mrs(const struct ds_td_report *td, const struct ds_event_log *log,
                         bool boottime, uint8_t mr_system[32], uint8_t mr_aggregated[32])
{
    uint8_t buf[48 * 8];
    uint8_t kp[32] = {0};
    uint8_t rt3[48];
    if (!boottime) {
        SHA256((const uint8_t *)kp_json, strlen(kp_json), kp);
    }
    memcpy(buf, td->mr_td, 48);
    memcpy(buf + 48, td->rtmr[0], 48);
    memcpy(buf + 96, td->rtmr[1], 48);
    memcpy(buf + 144, td->rtmr[2], 48);
    memcpy(buf + 192, kp, 32);
    SHA256(buf, 224, mr_system);

    oracle_rtmr3(log, boottime, rt3);
    memcpy(buf + 192, rt3, 48);
    size_t n = 240;
    bool any = false;
    for (size_t i = 0; i < 48; i++) {
        any |= td->mr_config_id[i] | td->mr_owner[i] | td->mr_owner_config[i];
    }
    if (any) {
        memcpy(buf + 240, td->mr_config_id, 48);
        memcpy(buf + 288, td->mr_owner, 48);
        memcpy(buf + 336, td->mr_owner_config, 48);
        n = 384;
    }
    SHA256(buf, n, mr_aggregated);
}

static void test_app_info_full(void **state)
{
    struct fixture f;
    struct ds_event_log *log = build_log(&f, 1);
    for (int cfg = 0; cfg <= 1; cfg++) {
        struct ds_td_report td;
        struct ds_app_info info;
        uint8_t es[32], ea[32], dev[32];
        const uint8_t ppid[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};
        make_td(&td, cfg);
        assert_int_equal(ds_app_info_decode(log, &td, ppid, sizeof(ppid), NULL, false, &info), 0);
        assert_int_equal(info.app_id_len, 20);
        assert_memory_equal(info.app_id, f.app_id, 20);
        assert_int_equal(info.compose_hash_len, 32);
        assert_memory_equal(info.compose_hash, f.compose_hash, 32);
        assert_int_equal(info.instance_id_len, 20);
        assert_memory_equal(info.instance_id, f.instance_id, 20);
        assert_int_equal(info.os_image_hash_len, 32);
        assert_memory_equal(info.os_image_hash, f.os_image_hash, 32);
        assert_int_equal(info.key_provider_info_len, strlen(kp_json));
        assert_memory_equal(info.key_provider_info, kp_json, strlen(kp_json));
        assert_string_equal(info.key_provider_name, "kms");
        assert_int_equal(info.key_provider_id_len, 13);
        assert_memory_equal(info.key_provider_id,
                            "\x30\x59\x30\x13\x06\x07\x2a\x86\x48\xce\x3d\x02\x01", 13);
        assert_int_equal(info.init_script_count, 2);
        assert_int_equal(info.init_script_hash_lens[0], 32);
        assert_memory_equal(info.init_script_hashes[0], f.init1, 32);
        assert_memory_equal(info.init_script_hashes[1], f.init2, 32);
        SHA256(ppid, sizeof(ppid), dev);
        assert_memory_equal(info.device_id, dev, 32);

        expected_mrs(&td, log, false, es, ea);
        assert_memory_equal(info.mr_system, es, 32);
        assert_memory_equal(info.mr_aggregated, ea, 32);
        ds_app_info_done(&info);

        /* The config registers change mr_aggregated only, and only when non-zero. */
        if (cfg) {
            struct ds_td_report td0;
            make_td(&td0, false);
            uint8_t es0[32], ea0[32];
            expected_mrs(&td0, log, false, es0, ea0);
            assert_memory_equal(es, es0, 32);
            assert_memory_not_equal(ea, ea0, 32);
        }
    }
    ds_eventlog_free(log);
}

static void test_app_info_boottime(void **state)
{
    struct fixture f;
    for (uint32_t version = 1; version <= 2; version++) {
        struct ds_event_log *log = build_log(&f, version);
        struct ds_td_report td;
        struct ds_app_info info;
        make_td(&td, true);
        assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, NULL, true, &info), 0);
        assert_int_equal(info.key_provider_info_len, 0);
        assert_null(info.key_provider_info);
        assert_null(info.key_provider_name);
        uint8_t empty[32];
        SHA256((const uint8_t *)"", 0, empty);
        assert_memory_equal(info.device_id, empty, 32);
        if (version == 1) {
            uint8_t es[32], ea[32];
            expected_mrs(&td, log, true, es, ea);
            assert_memory_equal(info.mr_system, es, 32);
            assert_memory_equal(info.mr_aggregated, ea, 32);
        } else {
            /* V2: RTMR3' must use the V2 digests; check through the replay API. */
            uint8_t rt3[48], buf[48 * 8], ea[32];
            assert_int_equal(ds_eventlog_replay_runtime_sha384(log, "boot-mr-done", rt3), 0);
            uint8_t v1rt[48];
            oracle_rtmr3(log, true, v1rt);
            assert_memory_not_equal(rt3, v1rt, 48);
            memcpy(buf, td.mr_td, 48);
            memcpy(buf + 48, td.rtmr, 3 * 48);
            memcpy(buf + 192, rt3, 48);
            memcpy(buf + 240, td.mr_config_id, 48);
            memcpy(buf + 288, td.mr_owner, 48);
            memcpy(buf + 336, td.mr_owner_config, 48);
            SHA256(buf, 384, ea);
            assert_memory_equal(info.mr_aggregated, ea, 32);
        }
        ds_app_info_done(&info);

        /* Boot-time and full mr_aggregated differ (events after boot-mr-done). */
        struct ds_app_info full;
        assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, NULL, false, &full), 0);
        assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, NULL, true, &info), 0);
        assert_memory_not_equal(full.mr_aggregated, info.mr_aggregated, 32);
        assert_memory_not_equal(full.mr_system, info.mr_system, 32);
        ds_app_info_done(&full);
        ds_app_info_done(&info);
        ds_eventlog_free(log);
    }
}

static void test_app_info_vm_config(void **state)
{
    struct fixture f;
    struct ds_event_log *log = build_log(&f, 1);
    struct ds_td_report td;
    struct ds_app_info info;
    make_td(&td, false);
    const char *vm =
        "{\"os_image_hash\":\"e61be43dd1cc6a6f5edefd7c51b608983780839b0000ce60dd99737dcffe09b9\","
        "\"cpu_count\":1,\"memory_size\":2147483648}";
    assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, vm, false, &info), 0);
    assert_int_equal(info.os_image_hash_len, 32);
    assert_memory_equal(info.os_image_hash, "\xe6\x1b\xe4\x3d", 4);
    ds_app_info_done(&info);

    /* a whole sys-config with the vm_config as a JSON string */
    const char *sys =
        "{\"kms_urls\":[],\"vm_config\":\"{\\\"os_image_hash\\\":\\\"64f0d154\\\"}\"}";
    assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, sys, false, &info), 0);
    assert_int_equal(info.os_image_hash_len, 4);
    assert_memory_equal(info.os_image_hash, "\x64\xf0\xd1\x54", 4);
    ds_app_info_done(&info);

    /* no os_image_hash key: empty */
    assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, "{\"cpu_count\":2}", false, &info), 0);
    assert_int_equal(info.os_image_hash_len, 0);
    assert_null(info.os_image_hash);
    ds_app_info_done(&info);

    /* errors: out is untouched */
    memset(&info, 0x5A, sizeof(info));
    assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, "not json", false, &info), -DS_E_FORMAT);
    assert_int_equal(
        ds_app_info_decode(log, &td, NULL, 0, "{\"os_image_hash\":\"xyz\"}", false, &info),
        -DS_E_FORMAT);
    assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, "{\"os_image_hash\":5}", false, &info),
                     -DS_E_FORMAT);
    assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, "[1]", false, &info), -DS_E_FORMAT);
    uint8_t poison[sizeof(info)];
    memset(poison, 0x5A, sizeof(poison));
    assert_memory_equal(&info, poison, sizeof(info));
    ds_eventlog_free(log);
}

static int kp_parse(const char *s, char **name, uint8_t **id, size_t *id_len)
{
    return ds_app_info_parse_key_provider((const uint8_t *)s, strlen(s), name, id, id_len);
}

static void test_app_info_sparse(void **state)
{
    /* A log with no dstack events: empty fields, zero mr_key_provider. */
    struct ds_event_log *log = NULL;
    struct ds_td_report td;
    struct ds_app_info info;
    assert_int_equal(ds_eventlog_new(&log), 0);
    assert_int_equal(ds_eventlog_append_runtime(log, "key-provider", "not json", 8, 1), 0);
    make_td(&td, false);
    assert_int_equal(ds_app_info_decode(log, &td, NULL, 0, NULL, false, &info), 0);
    assert_null(info.app_id);
    assert_null(info.compose_hash);
    assert_int_equal(info.init_script_count, 0);
    assert_int_equal(info.key_provider_info_len, 8);
    assert_null(info.key_provider_name); /* unparsable: informational only */
    uint8_t buf[224], es[32];
    memcpy(buf, td.mr_td, 48);
    memcpy(buf + 48, td.rtmr, 144);
    SHA256((const uint8_t *)"not json", 8, buf + 192);
    SHA256(buf, 224, es);
    assert_memory_equal(info.mr_system, es, 32);
    ds_app_info_done(&info);
    ds_app_info_done(NULL);
    ds_eventlog_free(log);

    char *name;
    uint8_t *id;
    size_t id_len;
    assert_int_equal(kp_parse("{\"name\":\"tpm\",\"id\":\"\"}", &name, &id, &id_len), 0);
    assert_string_equal(name, "tpm");
    assert_null(id);
    assert_int_equal(id_len, 0);
    free(name);
    assert_int_equal(kp_parse("{\"id\":\"00\"}", &name, &id, &id_len), -DS_E_FORMAT);
    assert_int_equal(kp_parse("{\"name\":\"x\",\"id\":\"0\"}", &name, &id, &id_len), -DS_E_FORMAT);
}

/*
 * V1 digest ambiguity: H(type ":" "app-id" ":" (':' || rest)) is also the digest of an event
 * named "app-id:" with payload rest. A log that re-labels the genuine app-id that way (same
 * RTMR3) must not let a later forged "app-id" event (before system-ready) become the identity.
 */
static void test_app_info_colon_relabel(void **state)
{
    struct ds_event_log *genuine = NULL, *forged = NULL;
    struct ds_td_report td;
    struct ds_app_info info;
    uint8_t own[20], victim[20], compose[32];
    fill(own, sizeof(own), 0x70);
    own[0] = ':';
    fill(victim, sizeof(victim), 0x90);
    fill(compose, sizeof(compose), 0xa0);
    assert_int_equal(ds_eventlog_new(&genuine), 0);
    assert_int_equal(ds_eventlog_new(&forged), 0);
    assert_int_equal(ds_eventlog_append_runtime(genuine, "app-id", own, sizeof(own), 1), 0);
    assert_int_equal(ds_eventlog_append_runtime(forged, "app-id:", own + 1, sizeof(own) - 1, 1), 0);
    struct ds_event_log *both[2] = {genuine, forged};
    for (int i = 0; i < 2; i++) {
        assert_int_equal(ds_eventlog_append_runtime(both[i], "compose-hash", compose, 32, 1), 0);
        assert_int_equal(ds_eventlog_append_runtime(both[i], "app-id", victim, 20, 1), 0);
        assert_int_equal(ds_eventlog_append_runtime(both[i], "system-ready", NULL, 0, 1), 0);
    }
    make_td(&td, false);
    assert_int_equal(ds_eventlog_replay_runtime_sha384(genuine, NULL, td.rtmr[3]), 0);
    /* the forged log replays to the same RTMR3 ... */
    assert_int_equal(ds_eventlog_verify_rtmr3(forged, &td), 0);
    /* ... but its identity is refused instead of reading the victim's app id */
    assert_int_equal(ds_app_info_decode(forged, &td, NULL, 0, NULL, false, &info), -DS_E_FORMAT);
    /* the genuine log still decodes, with its own (first) app id */
    assert_int_equal(ds_app_info_decode(genuine, &td, NULL, 0, NULL, false, &info), 0);
    assert_int_equal(info.app_id_len, 20);
    assert_memory_equal(info.app_id, own, 20);
    ds_app_info_done(&info);
    /* names with ':' after system-ready (application events) stay allowed */
    assert_int_equal(ds_eventlog_append_runtime(genuine, "my:event", "x", 1, 1), 0);
    assert_int_equal(ds_app_info_decode(genuine, &td, NULL, 0, NULL, false, &info), 0);
    ds_app_info_done(&info);
    ds_eventlog_free(genuine);
    ds_eventlog_free(forged);
}

/* ---- mr_config_id and report_data vs. a Python oracle ------------------------------------ */

static const char *oracle_py =
    "import hashlib, sys\n"
    "from Cryptodome.Hash import keccak\n"
    "ch = bytes(range(32)); app = bytes(range(100, 120)); kpid = bytes.fromhex('3059deadbeef')\n"
    "def k(b): return keccak.new(digest_bits=256, data=b).hexdigest()\n"
    "print(k(ch + app + b'\\x02' + kpid))\n"
    "print(k(ch + app + b'\\x00'))\n"
    "c = b'app-data:test content'\n"
    "for n in ('sha512','sha256','sha384','sha3_256','sha3_384','sha3_512'):\n"
    "    print(hashlib.new(n, c).hexdigest())\n"
    "print(k(c))\n"
    "print(keccak.new(digest_bits=384, data=c).hexdigest())\n"
    "print(keccak.new(digest_bits=512, data=c).hexdigest())\n"
    "print(hashlib.sha512(b'ratls-cert:' + bytes(range(91))).hexdigest())\n";

static void read_hex_line(FILE *p, uint8_t *out, size_t n)
{
    char line[256];
    assert_non_null(fgets(line, sizeof(line), p));
    line[strcspn(line, "\n")] = 0;
    assert_int_equal(strlen(line), 2 * n);
    assert_int_equal(ds_hex_decode(line, strlen(line), out, n), (int)n);
}

static void test_mr_config_and_report_data(void **state)
{
    char script[] = "/tmp/ds_appinfo_oracle_XXXXXX";
    int fd = mkstemp(script);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, oracle_py, strlen(oracle_py)), (ssize_t)strlen(oracle_py));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s", script);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);

    uint8_t ch[32], app[20], out[48], exp[64];
    for (int i = 0; i < 32; i++) {
        ch[i] = (uint8_t)i;
    }
    for (int i = 0; i < 20; i++) {
        app[i] = (uint8_t)(100 + i);
    }
    ds_mr_config_id_v1(ch, out);
    assert_int_equal(out[0], 1);
    assert_memory_equal(out + 1, ch, 32);
    assert_true(ds_is_zero(out + 33, 15));

    read_hex_line(p, exp, 32);
    assert_int_equal(ds_mr_config_id_v2(ch, app, DS_KEY_PROVIDER_KMS,
                                        (const uint8_t *)"\x30\x59\xde\xad\xbe\xef", 6, out),
                     0);
    assert_int_equal(out[0], 2);
    assert_memory_equal(out + 1, exp, 32);
    assert_true(ds_is_zero(out + 33, 15));
    read_hex_line(p, exp, 32);
    assert_int_equal(ds_mr_config_id_v2(ch, app, DS_KEY_PROVIDER_NONE, NULL, 0, out), 0);
    assert_memory_equal(out + 1, exp, 32);
    assert_int_equal(ds_mr_config_id_v2(ch, app, (enum ds_key_provider_kind)4, NULL, 0, out),
                     -DS_E_FORMAT);

    /* report_data: the spec vector, then each hash against the oracle, zero-padded */
    uint8_t rd[64];
    assert_int_equal(
        ds_report_data_build(DS_REPORT_HASH_SHA512, "app-data", "test content", 12, rd), 0);
    char hex[129];
    ds_hex_encode(rd, 64, hex);
    assert_memory_equal(hex, "7ea0b744", 8);
    assert_string_equal(hex + 122, "ae8a01");
    static const struct {
        const char *name;
        size_t len;
    } hashes[] = {{"sha512", 64},    {"sha256", 32},    {"sha384", 48},
                  {"sha3-256", 32},  {"sha3-384", 48},  {"sha3-512", 64},
                  {"keccak256", 32}, {"keccak384", 48}, {"keccak512", 64}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(hashes); i++) {
        enum ds_report_hash h;
        read_hex_line(p, exp, hashes[i].len);
        assert_int_equal(ds_report_hash_parse(hashes[i].name, &h), 0);
        assert_int_equal(ds_report_data_build(h, "app-data", "test content", 12, rd), 0);
        assert_memory_equal(rd, exp, hashes[i].len);
        assert_true(ds_is_zero(rd + hashes[i].len, 64 - hashes[i].len));
    }
    uint8_t spki[91];
    for (int i = 0; i < 91; i++) {
        spki[i] = (uint8_t)i;
    }
    read_hex_line(p, exp, 64);
    assert_int_equal(ds_report_data_build(DS_REPORT_HASH_SHA512, DS_REPORT_TAG_RATLS_CERT, spki,
                                          sizeof(spki), rd),
                     0);
    assert_memory_equal(rd, exp, 64);
    assert_int_equal(pclose(p), 0);
    unlink(script);

    enum ds_report_hash h;
    assert_int_equal(ds_report_hash_parse("", &h), 0);
    assert_int_equal(h, DS_REPORT_HASH_SHA512);
    assert_int_equal(ds_report_hash_parse("raw", &h), 0);
    assert_int_equal(h, DS_REPORT_HASH_RAW);
    assert_int_equal(ds_report_hash_parse("keccak384", &h), 0);
    assert_int_equal(h, DS_REPORT_HASH_KECCAK384);
    assert_int_equal(ds_report_hash_parse("keccak512", &h), 0);
    assert_int_equal(h, DS_REPORT_HASH_KECCAK512);
    /* Keccak-512 is not SHA3-512: the same content gives different report data. */
    uint8_t rd_sha3[64];
    assert_int_equal(ds_report_data_build(DS_REPORT_HASH_SHA3_512, "app-data", "x", 1, rd_sha3), 0);
    assert_int_equal(ds_report_data_build(DS_REPORT_HASH_KECCAK512, "app-data", "x", 1, rd), 0);
    assert_memory_not_equal(rd, rd_sha3, 64);
    assert_int_equal(ds_report_data_build(DS_REPORT_HASH_KECCAK384, NULL, spki, 1, rd),
                     -DS_E_FORMAT);
    /* Negative: only the exact names; keccak224 and a misspelling are unsupported. */
    assert_int_equal(ds_report_hash_parse("keccak224", &h), -DS_E_UNSUPPORTED);
    assert_int_equal(ds_report_hash_parse("keccak-384", &h), -DS_E_UNSUPPORTED);
    assert_int_equal(ds_report_hash_parse("KECCAK512", &h), -DS_E_UNSUPPORTED);
    assert_int_equal(ds_report_hash_parse("SHA512", &h), -DS_E_UNSUPPORTED);
    assert_int_equal(ds_report_data_build(DS_REPORT_HASH_RAW, NULL, spki, 63, rd), -DS_E_FORMAT);
    assert_int_equal(ds_report_data_build(DS_REPORT_HASH_RAW, NULL, spki, 64, rd), 0);
    assert_memory_equal(rd, spki, 64);
    assert_int_equal(ds_report_data_build(DS_REPORT_HASH_SHA256, NULL, spki, 1, rd), -DS_E_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_app_info_full),
        cmocka_unit_test(test_app_info_boottime),
        cmocka_unit_test(test_app_info_vm_config),
        cmocka_unit_test(test_app_info_sparse),
        cmocka_unit_test(test_app_info_colon_relabel),
        cmocka_unit_test(test_mr_config_and_report_data),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
