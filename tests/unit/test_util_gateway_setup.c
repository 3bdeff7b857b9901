/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for the pure parts of `dstack-util gateway-setup` / `gateway-checker`
 * (daemons/util/util_gateway_plan.c, compiled in; spec host-side.md §3.6, §4.3): the gateway
 * fields of app-compose.json and port_policy, gateway_urls, the key cache (round trip, a key
 * pair that does not match, fields that go together, freshness), reading the WireGuard config
 * back into validated addresses (hostile values refused), the `wg setconf` text, the exact
 * iptables / ip argument vectors, `wg show latest-handshakes` parsing, and the checker's
 * decisions over time (missing config, stale handshake, periodic refresh, backoff).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../daemons/util/util_gateway_plan.c"

static char err[512];

#define APP(json) gws_app_parse(json, strlen(json), &a, err, sizeof(err))

static void test_app_parse(void **state)
{
    (void)state;
    struct gws_app a;
    assert_int_equal(APP("{\"gateway_enabled\": true}"), 0);
    assert_true(a.enabled);
    assert_false(a.no_instance_id);
    char *pp = json_dumps(a.port_policy, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(pp, "{\"ports\":[],\"restrict_mode\":false}");
    free(pp);
    gws_app_done(&a);
    assert_int_equal(APP("{\"tproxy_enabled\": true, \"no_instance_id\": true}"), 0);
    assert_true(a.enabled && a.no_instance_id);
    gws_app_done(&a);
    assert_int_equal(APP("{\"features\": [\"x\", \"tproxy-net\"]}"), 0);
    assert_true(a.enabled);
    gws_app_done(&a);
    assert_int_equal(APP("{\"gateway_enabled\": false, \"kms_enabled\": true}"), 0);
    assert_false(a.enabled);
    gws_app_done(&a);
    assert_int_equal(APP("{\"gateway_enabled\": true, \"port_policy\": {\"ports\": [{\"port\": "
                         "80, \"pp\": true}, {\"port\": 443}], \"restrict_mode\": true, "
                         "\"extra\": 1}}"),
                     0);
    pp = json_dumps(a.port_policy, JSON_COMPACT | JSON_SORT_KEYS);
    assert_string_equal(pp, "{\"ports\":[{\"port\":80,\"pp\":true},{\"port\":443,\"pp\":false}],"
                            "\"restrict_mode\":true}");
    free(pp);
    gws_app_done(&a);

    /* negative: each names the field */
    assert_int_equal(APP("{\"gateway_enabled\": \"yes\"}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "gateway_enabled must be a boolean"));
    assert_int_equal(APP("{\"port_policy\": {\"ports\": [{\"port\": 0}]}}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "port_policy.ports[0]"));
    assert_int_equal(APP("{\"port_policy\": {\"ports\": [{\"port\": 65536}]}}"), -DS_E_FORMAT);
    assert_int_equal(APP("{\"port_policy\": {\"ports\": [{\"port\": 80, \"pp\": 1}]}}"),
                     -DS_E_FORMAT);
    assert_int_equal(APP("{\"port_policy\": {\"restrict_mode\": \"no\"}}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "restrict_mode"));
    assert_int_equal(APP("{\"port_policy\": []}"), -DS_E_FORMAT);
    assert_int_equal(APP("{\"features\": \"tproxy-net\"}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "features"));
    assert_int_equal(APP("[1]"), -DS_E_FORMAT);
    assert_int_equal(APP("{\"a\":1,\"a\":2}"), -DS_E_FORMAT);
}

#define URLS(json) gws_urls_parse(json, strlen(json), &u, err, sizeof(err))

static void test_urls(void **state)
{
    (void)state;
    struct gws_urls u;
    assert_int_equal(URLS("{\"gateway_urls\": [\"https://a:1\", \"https://b:2/prpc\"]}"), 0);
    assert_int_equal(u.count, 2);
    assert_string_equal(u.items[1], "https://b:2/prpc");
    gws_urls_done(&u);
    assert_int_equal(URLS("{\"kms_urls\": []}"), 0);
    assert_int_equal(u.count, 0);
    assert_int_equal(URLS("{\"gateway_urls\": [\"http://a:1\"]}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "gateway_urls[0] must be an https:// URL"));
    assert_int_equal(URLS("{\"gateway_urls\": [\"https://a\", 1]}"), -DS_E_FORMAT);
    assert_non_null(strstr(err, "gateway_urls[1]"));
    assert_int_equal(URLS("{\"gateway_urls\": [\"https://a b\"]}"), -DS_E_FORMAT);
    assert_int_equal(URLS("{\"gateway_urls\": \"https://a\"}"), -DS_E_FORMAT);
}

/* A WireGuard key pair in base64 from a fixed private key. */
static void wg_pair(uint8_t seed, char sk[45], char pk[45])
{
    uint8_t priv[32], pub[32];
    memset(priv, seed, sizeof(priv));
    priv[0] &= 248;
    priv[31] = (priv[31] & 127) | 64;
    assert_int_equal(ds_x25519_public(priv, pub), 0);
    char *a = ds_base64_encode(priv, 32), *b = ds_base64_encode(pub, 32);
    snprintf(sk, 45, "%s", a);
    snprintf(pk, 45, "%s", b);
    free(a);
    free(b);
}

static void test_cache(void **state)
{
    (void)state;
    struct gws_cache c = {.cert_not_after = 1000000}, d;
    char sk[45], pk[45], sk2[45], pk2[45], *text = NULL, buf[1024];
    wg_pair(7, sk, pk);
    wg_pair(9, sk2, pk2);
    c.client_cert = strdup("-----BEGIN CERTIFICATE-----\nA\n");
    c.client_key = strdup("-----BEGIN PRIVATE KEY-----\nB\n");
    memcpy(c.wg_sk, sk, 45);
    memcpy(c.wg_pk, pk, 45);
    assert_int_equal(gws_cache_dump(&c, &text), 0);
    assert_int_equal(gws_cache_parse(text, strlen(text), &d, err, sizeof(err)), 0);
    assert_string_equal(d.client_cert, c.client_cert);
    assert_string_equal(d.client_key, c.client_key);
    assert_null(d.client_cert_with_quote);
    assert_string_equal(d.wg_sk, sk);
    assert_string_equal(d.wg_pk, pk);
    assert_int_equal(d.cert_not_after, 1000000);
    /* fresh while >= 10 minutes remain */
    assert_true(gws_cache_cert_fresh(&d, 1000000 - 600));
    assert_false(gws_cache_cert_fresh(&d, 1000000 - 599));
    gws_cache_done(&d);
    free(text);
    gws_cache_done(&c);

    /* an empty cache is valid: nothing cached */
    assert_int_equal(gws_cache_parse("{}", 2, &d, err, sizeof(err)), 0);
    assert_false(gws_cache_cert_fresh(&d, 0));
    assert_int_equal(d.wg_sk[0], '\0');
    gws_cache_done(&d);

    /* negative */
    snprintf(buf, sizeof(buf), "{\"wg_sk\": \"%s\", \"wg_pk\": \"%s\"}", sk, pk2);
    assert_int_equal(gws_cache_parse(buf, strlen(buf), &d, err, sizeof(err)), -DS_E_FORMAT);
    assert_non_null(strstr(err, "wg_sk/wg_pk must be a WireGuard key pair"));
    snprintf(buf, sizeof(buf), "{\"wg_sk\": \"%s\"}", sk);
    assert_int_equal(gws_cache_parse(buf, strlen(buf), &d, err, sizeof(err)), -DS_E_FORMAT);
    assert_int_equal(gws_cache_parse("{\"client_cert\": \"x\"}", 20, &d, err, sizeof(err)),
                     -DS_E_FORMAT);
    assert_non_null(strstr(err, "client_cert and client_key go together"));
    assert_int_equal(
        gws_cache_parse("{\"client_cert_with_quote\": \"x\"}", 31, &d, err, sizeof(err)),
        -DS_E_FORMAT);
    assert_int_equal(gws_cache_parse("{\"cert_not_after\": \"1\"}", 23, &d, err, sizeof(err)),
                     -DS_E_FORMAT);
    assert_non_null(strstr(err, "cert_not_after"));
    assert_int_equal(gws_cache_parse("{\"client_key\": 5}", 17, &d, err, sizeof(err)),
                     -DS_E_FORMAT);
    assert_int_equal(gws_cache_parse("not json", 8, &d, err, sizeof(err)), -DS_E_FORMAT);
}

static const char CONF[] = "[Interface]\nPrivateKey = cHJpdmF0ZQ==\nListenPort = 9182\n"
                           "Address = 10.8.0.4/32\n\n[Peer]\nPublicKey = AAAA\n"
                           "AllowedIPs = 10.8.0.1/32\nEndpoint = 192.0.2.1:51820\n"
                           "PersistentKeepalive = 25\n\n[Peer]\nPublicKey = BBBB\n"
                           "AllowedIPs = 10.8.0.9/32\nEndpoint = 192.0.2.1:51821\n"
                           "PersistentKeepalive = 25\n";

static void test_plan(void **state)
{
    (void)state;
    struct gws_plan p;
    assert_int_equal(gws_plan_parse(CONF, &p, err, sizeof(err)), 0);
    assert_string_equal(p.client_ip, "10.8.0.4");
    assert_int_equal(p.route_count, 2);
    assert_string_equal(p.routes[0], "10.8.0.1/32");
    assert_string_equal(p.routes[1], "10.8.0.9/32");
    assert_int_equal(p.endpoint_count, 1); /* the same endpoint address once */
    assert_string_equal(p.endpoints[0], "192.0.2.1");

    /* hostile or unexpected values never reach a command line */
    static const struct {
        const char *from, *to, *why;
    } bad[] = {
        {"Endpoint = 192.0.2.1:51820", "Endpoint = gw.example:51820", "must be IPv4:port"},
        {"Endpoint = 192.0.2.1:51820", "Endpoint = 192.0.2.1;reboot:1", "must be IPv4:port"},
        {"Endpoint = 192.0.2.1:51820", "Endpoint = 192.0.2.1:0", "must be IPv4:port"},
        {"Endpoint = 192.0.2.1:51820", "Endpoint = 192.0.2.1:+80", "must be IPv4:port"},
        {"Endpoint = 192.0.2.1:51820", "Endpoint = [::1]:80", "must be IPv4:port"},
        {"AllowedIPs = 10.8.0.1/32", "AllowedIPs = 0.0.0.0/0", "AllowedIPs must be one IPv4"},
        {"AllowedIPs = 10.8.0.1/32", "AllowedIPs = -j/32", "AllowedIPs must be one IPv4"},
        {"Address = 10.8.0.4/32", "Address = 10.8.0.4/24", "Address must be one IPv4"},
        {"Address = 10.8.0.4/32", "X = y", "needs Address"},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        char conf[sizeof(CONF) + 64];
        const char *at = strstr(CONF, bad[i].from);
        assert_non_null(at);
        snprintf(conf, sizeof(conf), "%.*s%s%s", (int)(at - CONF), CONF, bad[i].to,
                 at + strlen(bad[i].from));
        err[0] = '\0';
        assert_int_equal(gws_plan_parse(conf, &p, err, sizeof(err)), -DS_E_FORMAT);
        assert_non_null(strstr(err, bad[i].why));
    }
    assert_int_equal(gws_plan_parse("", &p, err, sizeof(err)), -DS_E_FORMAT);
}

static void test_setconf_text(void **state)
{
    (void)state;
    char *t = NULL;
    assert_int_equal(gws_setconf_text(CONF, &t), 0);
    assert_null(strstr(t, "Address"));
    assert_non_null(strstr(t, "[Interface]\nPrivateKey = cHJpdmF0ZQ==\nListenPort = 9182\n\n"));
    assert_non_null(strstr(t, "AllowedIPs = 10.8.0.9/32\n"));
    free(t);
    assert_int_equal(gws_setconf_text("DNS = 1.1.1.1\nMTU = 1400\nPostUp = x\nAddressX = 1\n", &t),
                     0);
    assert_string_equal(t, "AddressX = 1\n");
    free(t);
}

static void join(const struct gws_cmd *c, char *out, size_t n)
{
    size_t off = 0;
    out[0] = '\0';
    for (size_t i = 0; c->argv[i]; i++) {
        off += (size_t)snprintf(out + off, n - off, "%s%s", i ? " " : "", c->argv[i]);
    }
}

static void test_tunnel_cmds(void **state)
{
    (void)state;
    struct gws_plan p;
    struct gws_cmd cmds[GWS_CMDS_MAX];
    char line[256];
    assert_int_equal(gws_plan_parse(CONF, &p, err, sizeof(err)), 0);
    int n = gws_tunnel_cmds(&p, "dstack-wg0", cmds, DS_ARRAY_SIZE(cmds));
    static const struct {
        const char *cmd;
        bool may_fail;
    } want[] = {
        {"iptables -w -N DSTACK_WG", true},
        {"iptables -w -F DSTACK_WG", false},
        {"iptables -w -D INPUT -p udp --dport 9182 -j DSTACK_WG", true},
        {"iptables -w -I INPUT -p udp --dport 9182 -j DSTACK_WG", false},
        {"iptables -w -A DSTACK_WG -s 192.0.2.1 -j ACCEPT", false},
        {"iptables -w -A DSTACK_WG -j DROP", false},
        {"ip -4 address flush dev dstack-wg0", false},
        {"ip -4 address replace 10.8.0.4 dev dstack-wg0", false},
        {"ip link set dev dstack-wg0 up", false},
        {"ip -4 route flush dev dstack-wg0", true},
        {"ip -4 route replace 10.8.0.1/32 dev dstack-wg0", false},
        {"ip -4 route replace 10.8.0.9/32 dev dstack-wg0", false},
    };
    assert_int_equal(n, DS_ARRAY_SIZE(want));
    for (int i = 0; i < n; i++) {
        join(&cmds[i], line, sizeof(line));
        assert_string_equal(line, want[i].cmd);
        assert_int_equal(cmds[i].may_fail, want[i].may_fail);
    }
    /* too small an output table is a limit error, not an overflow */
    assert_int_equal(gws_tunnel_cmds(&p, "dstack-wg0", cmds, 3), -DS_E_LIMIT);
}

static void test_handshake(void **state)
{
    (void)state;
    int64_t hs = -1;
    const char *k = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    char buf[256];
    snprintf(buf, sizeof(buf), "%s\t1700000000\n%s\t1700000100\n%s\t0\n", k, k, k);
    assert_int_equal(gws_latest_handshake(buf, strlen(buf), &hs), 0);
    assert_int_equal(hs, 1700000100);
    assert_int_equal(gws_latest_handshake("", 0, &hs), 0);
    assert_int_equal(hs, 0);
    snprintf(buf, sizeof(buf), "%s\t12x\n", k);
    assert_int_equal(gws_latest_handshake(buf, strlen(buf), &hs), -DS_E_FORMAT);
    snprintf(buf, sizeof(buf), "%s\t\n", k);
    assert_int_equal(gws_latest_handshake(buf, strlen(buf), &hs), -DS_E_FORMAT);
    snprintf(buf, sizeof(buf), "%s\t99999999999999999999999\n", k);
    assert_int_equal(gws_latest_handshake(buf, strlen(buf), &hs), -DS_E_FORMAT);
    assert_int_equal(gws_latest_handshake("short\t1\n", 8, &hs), -DS_E_FORMAT);
}

static const struct gws_check_params P = {180, 180, 180, 30, 120};

static void test_check_missing_config(void **state)
{
    (void)state;
    struct gws_check_state st = {0};
    /* no config: forced at once; failures back off 30, 60, 120, 120 */
    assert_int_equal(gws_check_decide(&P, &st, 1000, false, 0), GWS_FORCE);
    gws_check_result(&P, &st, 1000, false);
    assert_int_equal(gws_check_decide(&P, &st, 1029, false, 0), GWS_NOTHING);
    assert_int_equal(gws_check_decide(&P, &st, 1030, false, 0), GWS_FORCE);
    gws_check_result(&P, &st, 1030, false);
    assert_int_equal(gws_check_decide(&P, &st, 1089, false, 0), GWS_NOTHING);
    assert_int_equal(gws_check_decide(&P, &st, 1090, false, 0), GWS_FORCE);
    gws_check_result(&P, &st, 1090, false);
    assert_int_equal(st.next_retry, 1210);
    assert_int_equal(gws_check_decide(&P, &st, 1210, false, 0), GWS_FORCE);
    gws_check_result(&P, &st, 1210, false);
    assert_int_equal(st.next_retry, 1330); /* capped at 120 */
    /* success resets the backoff */
    gws_check_result(&P, &st, 1330, true);
    assert_int_equal(st.next_retry, 0);
    assert_int_equal(st.last_register, 1330);
    gws_check_result(&P, &st, 1331, false);
    assert_int_equal(st.next_retry, 1361);
}

static void test_check_handshake(void **state)
{
    (void)state;
    struct gws_check_state st = {.last_register = 1000};
    /* fresh handshake, recent registration: nothing; periodic refresh after 180 s */
    assert_int_equal(gws_check_decide(&P, &st, 1100, true, 1090), GWS_NOTHING);
    assert_int_equal(gws_check_decide(&P, &st, 1180, true, 1170), GWS_REFRESH);
    gws_check_result(&P, &st, 1180, true);
    assert_int_equal(gws_check_decide(&P, &st, 1200, true, 1190), GWS_NOTHING);
    /* handshake older than 180 s: forced, then at most every 180 s (else plain refresh) */
    assert_int_equal(gws_check_decide(&P, &st, 1371, true, 1190), GWS_FORCE);
    gws_check_result(&P, &st, 1371, true);
    assert_int_equal(gws_check_decide(&P, &st, 1400, true, 1190), GWS_NOTHING);
    assert_int_equal(gws_check_decide(&P, &st, 1551, true, 1190), GWS_FORCE);
    gws_check_result(&P, &st, 1551, true);
    assert_int_equal(gws_check_decide(&P, &st, 1560, true, 1555), GWS_NOTHING);

    /* no handshake at all: forced only once it has been absent for 180 s */
    struct gws_check_state s2 = {.last_register = 2000};
    assert_int_equal(gws_check_decide(&P, &s2, 2010, true, 0), GWS_NOTHING);
    assert_int_equal(s2.hs_absent_since, 2010);
    assert_int_equal(gws_check_decide(&P, &s2, 2150, true, 0), GWS_NOTHING);
    assert_int_equal(gws_check_decide(&P, &s2, 2191, true, 0), GWS_FORCE);
    gws_check_result(&P, &s2, 2191, true);
    /* a handshake resets the absence clock */
    assert_int_equal(gws_check_decide(&P, &s2, 2192, true, 2192), GWS_NOTHING);
    assert_int_equal(s2.hs_absent_since, 0);
    /* during a backoff nothing happens, even with a stale handshake */
    gws_check_result(&P, &s2, 2200, false);
    assert_int_equal(gws_check_decide(&P, &s2, 2229, true, 1), GWS_NOTHING);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_app_parse),       cmocka_unit_test(test_urls),
        cmocka_unit_test(test_cache),           cmocka_unit_test(test_plan),
        cmocka_unit_test(test_setconf_text),    cmocka_unit_test(test_tunnel_cmds),
        cmocka_unit_test(test_handshake),       cmocka_unit_test(test_check_missing_config),
        cmocka_unit_test(test_check_handshake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
