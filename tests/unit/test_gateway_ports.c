/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the gateway's port policies (spec host-side.md §4.2 step 5, §4.3, §4.5):
 * the validator (every field's error named), canonical JSON, the per-port decisions, which
 * policy is in force (admin > instance > none), the guest agent Info answer, the routing
 * table's filter (unknown = denied and fetched, restrict_mode, pp, filtering before top_n),
 * and the registry: a database file created with the schema before the port policy columns is
 * migrated in place with its rows intact, registrations store / keep / invalidate the reported
 * policy by compose hash, the admin override and the fetched policy are stored.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <sqlite3.h>
#include <unistd.h>

#include "../../daemons/gateway/gw_db.c"
#include "../../daemons/gateway/gw_parse.c"
#include "../../daemons/gateway/gw_portpolicy.c"
#include "../../daemons/gateway/gw_routes.c"

static struct gw_port_policy pol;
static char err[256];

static int parse(const char *text)
{
    err[0] = '\0';
    return gw_port_policy_parse(text, strlen(text), "port_policy", &pol, err, sizeof(err));
}

static void expect_bad(const char *text, int rc, const char *msg)
{
    memset(&pol, 0x5a, sizeof(pol));
    struct gw_port_policy before = pol;
    assert_int_equal(parse(text), rc);
    if (strstr(err, msg) == NULL) {
        fail_msg("%s: error \"%s\" does not contain \"%s\"", text, err, msg);
    }
    assert_memory_equal(&pol, &before, sizeof(pol)); /* out untouched on failure */
}

static void test_parse_valid(void **state)
{
    (void)state;
    assert_int_equal(parse("{\"ports\":[{\"port\":8443,\"pp\":true},{\"port\":80},"
                           "{\"port\":65535,\"pp\":false}],\"restrict_mode\":true,\"x\":1}"),
                     0);
    assert_true(pol.restrict_mode);
    assert_int_equal(pol.count, 3);
    assert_int_equal(pol.ports[0].port, 80); /* sorted */
    assert_false(pol.ports[0].pp);
    assert_int_equal(pol.ports[1].port, 8443);
    assert_true(pol.ports[1].pp);
    assert_int_equal(pol.ports[2].port, 65535);
    char *dump = gw_port_policy_dump(&pol);
    assert_string_equal(dump, "{\"ports\":[{\"port\":80,\"pp\":false},{\"port\":8443,\"pp\":true},"
                              "{\"port\":65535,\"pp\":false}],\"restrict_mode\":true}");
    struct gw_port_policy again;
    assert_int_equal(gw_port_policy_parse(dump, strlen(dump), "p", &again, err, sizeof(err)), 0);
    assert_memory_equal(&again, &pol, sizeof(pol));
    free(dump);
    /* defaults: open */
    assert_int_equal(parse("{}"), 0);
    assert_false(pol.restrict_mode);
    assert_int_equal(pol.count, 0);
    assert_int_equal(parse("{\"ports\":[],\"restrict_mode\":false}"), 0);
    /* the maximum count */
    char big[GW_PORT_POLICY_PORTS_MAX * 16 + 64];
    size_t n = (size_t)snprintf(big, sizeof(big), "{\"ports\":[");
    for (int i = 1; i <= GW_PORT_POLICY_PORTS_MAX; i++) {
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s{\"port\":%d}", i > 1 ? "," : "", i);
    }
    snprintf(big + n, sizeof(big) - n, "]}");
    assert_int_equal(parse(big), 0);
    assert_int_equal(pol.count, GW_PORT_POLICY_PORTS_MAX);
}

static void test_parse_invalid(void **state)
{
    (void)state;
    expect_bad("[]", -DS_E_FORMAT, "port_policy: expected an object");
    expect_bad("not json", -DS_E_FORMAT, "port_policy: not JSON");
    expect_bad("{\"restrict_mode\":1}", -DS_E_FORMAT,
               "port_policy.restrict_mode: expected true or false");
    expect_bad("{\"ports\":{}}", -DS_E_FORMAT, "port_policy.ports: expected a list");
    expect_bad("{\"ports\":[80]}", -DS_E_FORMAT, "port_policy.ports[0]: expected an object");
    expect_bad("{\"ports\":[{\"port\":0}]}", -DS_E_FORMAT,
               "port_policy.ports[0].port: expected an integer 1..65535");
    expect_bad("{\"ports\":[{\"port\":80},{\"port\":65536}]}", -DS_E_FORMAT,
               "port_policy.ports[1].port: expected an integer 1..65535");
    expect_bad("{\"ports\":[{\"port\":-1}]}", -DS_E_FORMAT, "ports[0].port");
    expect_bad("{\"ports\":[{\"port\":\"80\"}]}", -DS_E_FORMAT, "ports[0].port");
    expect_bad("{\"ports\":[{\"port\":80.5}]}", -DS_E_FORMAT, "ports[0].port");
    expect_bad("{\"ports\":[{\"pp\":true}]}", -DS_E_FORMAT, "ports[0].port");
    expect_bad("{\"ports\":[{\"port\":80,\"pp\":\"yes\"}]}", -DS_E_FORMAT,
               "port_policy.ports[0].pp: expected true or false");
    expect_bad("{\"ports\":[{\"port\":80},{\"port\":443},{\"port\":80,\"pp\":true}]}", -DS_E_FORMAT,
               "port_policy.ports: port 80 is listed twice");
    expect_bad("{\"restrict_mode\":true,\"restrict_mode\":false}", -DS_E_FORMAT, "not JSON");
    char big[GW_PORT_POLICY_PORTS_MAX * 16 + 64];
    size_t n = (size_t)snprintf(big, sizeof(big), "{\"ports\":[");
    for (int i = 1; i <= GW_PORT_POLICY_PORTS_MAX + 1; i++) {
        n += (size_t)snprintf(big + n, sizeof(big) - n, "%s{\"port\":%d}", i > 1 ? "," : "", i);
    }
    snprintf(big + n, sizeof(big) - n, "]}");
    expect_bad(big, -DS_E_LIMIT, "257 entries, at most 256 allowed");
    char *huge = malloc(GW_PORT_POLICY_TEXT_MAX + 2);
    assert_non_null(huge);
    memset(huge, ' ', GW_PORT_POLICY_TEXT_MAX + 1);
    huge[GW_PORT_POLICY_TEXT_MAX + 1] = '\0';
    expect_bad(huge, -DS_E_LIMIT, "at most 65536 allowed");
    free(huge);
}

static void test_decisions(void **state)
{
    (void)state;
    assert_int_equal(parse("{\"ports\":[{\"port\":443,\"pp\":true},{\"port\":80}],"
                           "\"restrict_mode\":true}"),
                     0);
    assert_true(gw_port_policy_allows(&pol, 443));
    assert_true(gw_port_policy_allows(&pol, 80));
    assert_false(gw_port_policy_allows(&pol, 8080));
    assert_true(gw_port_policy_wants_pp(&pol, 443));
    assert_false(gw_port_policy_wants_pp(&pol, 80));
    assert_false(gw_port_policy_wants_pp(&pol, 8080));
    pol.restrict_mode = false; /* open: every port, pp still per listed port */
    assert_true(gw_port_policy_allows(&pol, 8080));
    assert_true(gw_port_policy_wants_pp(&pol, 443));
    assert_false(gw_port_policy_wants_pp(&pol, 8080));

    struct gw_port_policy admin = {.restrict_mode = true}, reported = {.count = 0};
    const char *src = NULL;
    assert_ptr_equal(gw_port_policy_effective(&admin, &reported, &src), &admin);
    assert_string_equal(src, "admin");
    assert_ptr_equal(gw_port_policy_effective(NULL, &reported, &src), &reported);
    assert_string_equal(src, "instance");
    assert_null(gw_port_policy_effective(NULL, NULL, &src));
    assert_string_equal(src, "none");
    assert_ptr_equal(gw_port_policy_effective(&admin, NULL, NULL), &admin);
}

static int info(const char *body)
{
    memset(&pol, 0x5a, sizeof(pol));
    err[0] = '\0';
    return gw_port_policy_from_agent_info(body, strlen(body), &pol, err, sizeof(err));
}

static void test_agent_info(void **state)
{
    (void)state;
    /* a policy inside the app compose text inside the tcb_info text */
    json_t *compose = json_pack("{s:i, s:{s:[{s:i, s:b}], s:b}}", "manifest_version", 2,
                                "port_policy", "ports", "port", 8080, "pp", 1, "restrict_mode", 1);
    char *ctext = json_dumps(compose, JSON_COMPACT);
    json_t *tcb = json_pack("{s:s, s:s}", "mrtd", "00", "app_compose", ctext);
    char *ttext = json_dumps(tcb, JSON_COMPACT);
    json_t *ans = json_pack("{s:s, s:s}", "app_id", "ab", "tcb_info", ttext);
    char *body = json_dumps(ans, JSON_COMPACT);
    assert_int_equal(info(body), 0);
    assert_true(pol.restrict_mode);
    assert_int_equal(pol.count, 1);
    assert_int_equal(pol.ports[0].port, 8080);
    assert_true(pol.ports[0].pp);
    free(body);
    json_decref(ans);
    free(ttext);
    json_decref(tcb);
    free(ctext);
    json_decref(compose);

    /* public_tcbinfo = false: empty tcb_info = the open policy */
    assert_int_equal(info("{\"app_id\":\"ab\",\"tcb_info\":\"\"}"), 0);
    assert_false(pol.restrict_mode);
    assert_int_equal(pol.count, 0);
    assert_int_equal(info("{\"app_id\":\"ab\"}"), 0);
    assert_int_equal(pol.count, 0);
    /* a compose without port_policy: open */
    assert_int_equal(info("{\"tcb_info\":\"{\\\"app_compose\\\":\\\"{\\\\\\\"name\\\\\\\":"
                          "\\\\\\\"x\\\\\\\"}\\\"}\"}"),
                     0);
    assert_false(pol.restrict_mode);

    assert_int_equal(info("[]"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "expected a JSON object"));
    assert_int_equal(info("{\"tcb_info\":5}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "tcb_info: expected a string"));
    assert_int_equal(info("{\"tcb_info\":\"not json\"}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "tcb_info: expected a JSON object text"));
    assert_int_equal(info("{\"tcb_info\":\"{}\"}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "tcb_info.app_compose: expected a string"));
    assert_int_equal(info("{\"tcb_info\":\"{\\\"app_compose\\\":\\\"[\\\"}\"}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "app_compose: not a JSON object"));
    assert_int_equal(info("{\"tcb_info\":\"{\\\"app_compose\\\":\\\"{\\\\\\\"port_policy\\\\\\\":"
                          "{\\\\\\\"ports\\\\\\\":[{\\\\\\\"port\\\\\\\":0}]}}\\\"}\"}"),
                     -DS_E_FORMAT);
    assert_non_null(strstr(err, "app_compose.port_policy.ports[0].port"));
}

struct hook_log {
    int calls;
    char last[GW_ID_MAX + 1];
    char ip[GW_IP_TEXT_MAX + 1];
};

static void hook(const char *instance_id, const char *ip, void *arg)
{
    struct hook_log *h = arg;
    h->calls++;
    snprintf(h->last, sizeof(h->last), "%s", instance_id);
    snprintf(h->ip, sizeof(h->ip), "%s", ip);
}

static void test_routes_filter(void **state)
{
    (void)state;
    struct gw_routes *rt = NULL;
    struct gw_backend be[8];
    struct gw_routes_denial d;
    struct hook_log h = {0};
    const char *app = "aa", *fresh = "01", *old = "02", *unknown = "03";
    int64_t now = 100000;
    assert_int_equal(gw_routes_new(&rt), 0);
    gw_routes_set_fetch_hook(rt, hook, &h);
    assert_int_equal(gw_routes_set_instance(rt, app, fresh, "10.0.0.2", now - 1), 0);
    assert_int_equal(gw_routes_set_instance(rt, app, old, "10.0.0.3", now - 50), 0);
    assert_int_equal(gw_routes_set_policy(rt, "ff", NULL), -ENOENT);
    /* new instances start unknown: denied, fetch requested */
    assert_int_equal(gw_routes_lookup_port(rt, fresh, 80, now, 1800, 3, be, 8, &d), 0);
    assert_int_equal(d.denied, 1);
    assert_int_equal(d.unknown, 1);
    assert_string_equal(d.instance_id, fresh);
    assert_int_equal(h.calls, 1);
    assert_string_equal(h.ip, "10.0.0.2");
    struct gw_port_policy got;
    assert_int_equal(gw_routes_get_policy(rt, fresh, &got), 0);
    /* fresh: only 443 (pp); old: open with pp on 80 */
    assert_int_equal(parse("{\"ports\":[{\"port\":443,\"pp\":true}],\"restrict_mode\":true}"), 0);
    assert_int_equal(gw_routes_set_policy(rt, fresh, &pol), 0);
    assert_int_equal(gw_routes_get_policy(rt, fresh, &got), 1);
    assert_memory_equal(&got, &pol, sizeof(pol));
    assert_int_equal(parse("{\"ports\":[{\"port\":80,\"pp\":true}]}"), 0);
    assert_int_equal(gw_routes_set_policy(rt, old, &pol), 0);
    /* port 80 by app id, top 1: the fresher instance does not allow it, the other wins */
    assert_int_equal(gw_routes_lookup_port(rt, app, 80, now, 1800, 1, be, 8, &d), 1);
    assert_string_equal(be[0].instance_id, old);
    assert_true(be[0].pp);
    assert_int_equal(d.denied, 1);
    assert_int_equal(d.unknown, 0);
    /* the unfiltered lookup would have picked the fresher one */
    assert_int_equal(gw_routes_lookup(rt, app, now, 1800, 1, be, 8), 1);
    assert_string_equal(be[0].instance_id, fresh);
    /* port 443: both allow it; pp only where listed */
    assert_int_equal(gw_routes_lookup_port(rt, app, 443, now, 1800, 3, be, 8, &d), 2);
    assert_string_equal(be[0].instance_id, fresh);
    assert_true(be[0].pp);
    assert_string_equal(be[1].instance_id, old);
    assert_false(be[1].pp);
    /* by instance id: 8080 refused for fresh, allowed for old */
    assert_int_equal(gw_routes_lookup_port(rt, fresh, 8080, now, 1800, 3, be, 8, &d), 0);
    assert_int_equal(d.denied, 1);
    assert_int_equal(gw_routes_lookup_port(rt, old, 8080, now, 1800, 3, be, 8, &d), 1);
    assert_false(be[0].pp);
    /* back to unknown, plus a third unknown instance: both counted, fetch asked */
    assert_int_equal(gw_routes_set_instance(rt, app, unknown, "10.0.0.4", now - 2), 0);
    assert_int_equal(gw_routes_set_policy(rt, fresh, NULL), 0);
    h.calls = 0;
    assert_int_equal(gw_routes_lookup_port(rt, app, 443, now, 1800, 3, be, 8, &d), 1);
    assert_string_equal(be[0].instance_id, old);
    assert_int_equal(d.unknown, 2);
    assert_int_equal(h.calls, 2);
    /* a handshake update keeps the policy; removal frees it */
    assert_int_equal(gw_routes_set_instance(rt, app, old, "10.0.0.3", now), 0);
    assert_int_equal(gw_routes_get_policy(rt, old, &got), 1);
    assert_int_equal(gw_routes_remove_instance(rt, old), 0);
    assert_int_equal(gw_routes_get_policy(rt, old, &got), -ENOENT);
    assert_int_equal(gw_routes_lookup_port(rt, app, 443, now, 1800, 3, be, 8, NULL), -EINVAL);
    gw_routes_free(rt);
}

/* ---- registry ------------------------------------------------------------------------------ */

/* The schema as it was before the port policy columns (schema version 1). */
static const char v1_schema[] =
    "CREATE TABLE instances ("
    " instance_id TEXT PRIMARY KEY NOT NULL,"
    " app_id TEXT NOT NULL,"
    " compose_hash TEXT NOT NULL DEFAULT '',"
    " ip TEXT NOT NULL UNIQUE,"
    " public_key TEXT NOT NULL UNIQUE,"
    " reg_time INTEGER NOT NULL,"
    " last_handshake INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);"
    "INSERT INTO instances VALUES ('0101', 'aaaa', 'c1', '10.0.0.4', "
    " 'AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=', 1000, 1500);"
    "INSERT INTO meta VALUES ('node_uuid', 'abcd');";

#define KEY1 "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
#define KEY2 "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBA="

static void policies(struct gw_db *db, const char *id, const char *reported, const char *admin,
                     const char *hash)
{
    struct gw_db_policies p;
    assert_int_equal(gw_db_get_policies(db, id, &p), 0);
    if (reported == NULL) {
        assert_null(p.reported);
    } else {
        assert_non_null(p.reported);
        assert_string_equal(p.reported, reported);
    }
    if (admin == NULL) {
        assert_null(p.admin);
    } else {
        assert_non_null(p.admin);
        assert_string_equal(p.admin, admin);
    }
    assert_string_equal(p.hash, hash);
    gw_db_policies_done(&p);
}

static void test_db_migration(void **state)
{
    (void)state;
    char dir[] = "/tmp/gw-ports-db.XXXXXX", path[64], e[256];
    assert_non_null(mkdtemp(dir));
    snprintf(path, sizeof(path), "%s/gateway.db", dir);
    sqlite3 *h;
    assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
    assert_int_equal(sqlite3_exec(h, v1_schema, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(h);

    struct gw_db *db;
    assert_int_equal(gw_db_open(path, &db, e, sizeof(e)), 0);
    struct gw_instance inst;
    assert_int_equal(gw_db_get(db, "0101", &inst), 0);
    assert_string_equal(inst.app_id, "aaaa");
    assert_string_equal(inst.ip, "10.0.0.4");
    assert_int_equal(inst.last_handshake, 1500);
    policies(db, "0101", NULL, NULL, ""); /* migrated row: policy unknown */
    char v[64];
    assert_int_equal(gw_db_meta_get(db, "node_uuid", v, sizeof(v)), 0);
    assert_string_equal(v, "abcd");
    gw_db_close(db);
    /* opening again is a no-op migration */
    assert_int_equal(gw_db_open(path, &db, e, sizeof(e)), 0);
    assert_int_equal(sqlite3_open(path, &h), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(h, "PRAGMA user_version", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), SCHEMA_VERSION);
    sqlite3_finalize(st);
    sqlite3_close(h);

    /* registrations */
    struct gw_net net;
    const char *reserved[] = {"10.0.0.1/32"};
    assert_int_equal(gw_net_init(&net, "10.0.0.1/24", reserved, 1, "10.0.0.0/28", e, sizeof(e)), 0);
    char old[GW_WG_KEY_B64_LEN + 1];
    const char *p80 = "{\"ports\":[{\"port\":80,\"pp\":false}],\"restrict_mode\":true}";
    const char *p443 = "{\"ports\":[{\"port\":443,\"pp\":true}],\"restrict_mode\":true}";
    /* the migrated instance re-registers with a policy */
    assert_int_equal(
        gw_db_register(db, &net, "aaaa", "0101", "c1", KEY1, p80, 2000, &inst, old, e, sizeof(e)),
        0);
    policies(db, "0101", p80, NULL, "c1");
    /* same compose hash, no policy (older guest): kept */
    assert_int_equal(
        gw_db_register(db, &net, "aaaa", "0101", "c1", KEY1, NULL, 2001, &inst, old, e, sizeof(e)),
        0);
    policies(db, "0101", p80, NULL, "c1");
    /* admin override, then another compose hash without policy: reported invalidated, the
     * override survives */
    assert_int_equal(gw_db_set_admin_policy(db, "0101", p443), 0);
    assert_int_equal(
        gw_db_register(db, &net, "aaaa", "0101", "c2", KEY2, NULL, 2002, &inst, old, e, sizeof(e)),
        0);
    assert_string_equal(old, KEY1);
    policies(db, "0101", NULL, p443, "c2");
    /* the fetch fills the unknown one, but never overwrites a known one */
    assert_int_equal(gw_db_set_fetched_policy(db, "0101", p80), 0);
    policies(db, "0101", p80, p443, "c2");
    assert_int_equal(gw_db_set_fetched_policy(db, "0101", p443), -ENOENT);
    policies(db, "0101", p80, p443, "c2");
    /* a new compose hash with a policy replaces it */
    assert_int_equal(
        gw_db_register(db, &net, "aaaa", "0101", "c3", KEY2, p443, 2003, &inst, old, e, sizeof(e)),
        0);
    policies(db, "0101", p443, p443, "c3");
    assert_int_equal(gw_db_set_admin_policy(db, "0101", NULL), 0);
    policies(db, "0101", p443, NULL, "c3");
    /* a new instance without a policy: unknown */
    assert_int_equal(gw_db_register(db, &net, "aaaa", "0202", "c1",
                                    "CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCCA=", NULL, 2004,
                                    &inst, old, e, sizeof(e)),
                     0);
    policies(db, "0202", NULL, NULL, "c1");
    struct gw_db_policies none;
    assert_int_equal(gw_db_get_policies(db, "ffff", &none), -ENOENT);
    assert_int_equal(gw_db_set_admin_policy(db, "ffff", p80), -ENOENT);
    gw_db_close(db);

    /* survives a reopen */
    assert_int_equal(gw_db_open(path, &db, e, sizeof(e)), 0);
    policies(db, "0101", p443, NULL, "c3");
    gw_db_close(db);
    char f[96];
    static const char *const suffix[] = {"", "-wal", "-shm"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(f, sizeof(f), "%s%s", path, suffix[i]);
        unlink(f);
    }
    rmdir(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_valid),   cmocka_unit_test(test_parse_invalid),
        cmocka_unit_test(test_decisions),     cmocka_unit_test(test_agent_info),
        cmocka_unit_test(test_routes_filter), cmocka_unit_test(test_db_migration),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
