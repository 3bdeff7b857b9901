/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the gateway control plane's parsers of untrusted or operator input
 * (daemons/gateway/gw_parse.c, compiled in). The first byte picks the target:
 *   0: the WireGuard address plan: lines "wg.ip", "client_ip_range", reserved nets... through
 *      gw_net_init; on success every address gw_net_allocate hands out (with a fuzzed in-use
 *      set) is inside the range and the network, and is never the network, broadcast,
 *      gateway or a reserved address; an exhausted range is reported, not looped on.
 *   1: `wg show <if> dump` output (gw_wg_dump_parse): every reported peer key is valid base64
 *      of 32 bytes and the count matches the callbacks.
 *   2: admin token extraction from Authorization / X-Admin-Token / query (gw_admin_token_of):
 *      a found token is NUL-terminated and fits the buffer.
 *   3: HTML escaping: the output never contains < > " ' and decodes back to the input.
 *   4: key / id syntax (gw_wg_key_valid, gw_hex_id_valid, gw_cidr_parse): consistency checks.
 *   5: a port policy (gw_port_policy_parse, daemons/gateway/gw_portpolicy.c, as RegisterCvm and
 *      Admin.SetInstancePortPolicy get it): an accepted policy has ports sorted, unique, 1..65535,
 *      at most GW_PORT_POLICY_PORTS_MAX; its canonical dump parses back to the same policy;
 *      the decisions agree with the list; a refusal leaves the output untouched and names the
 *      field.
 *   6: a guest agent Info answer (gw_port_policy_from_agent_info): the same invariants.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemons/gateway/gw_parse.c"
#include "../../daemons/gateway/gw_portpolicy.c"

#define FUZZ_LINES_MAX 16

struct in_use_ctx {
    const uint8_t *bits;
    size_t len;
};

static bool fuzz_in_use(uint32_t ip, void *ctx)
{
    struct in_use_ctx *u = ctx;
    if (u->len == 0) {
        return false;
    }
    uint32_t k = ip % (uint32_t)(u->len * 8);
    return (u->bits[k / 8] >> (k % 8)) & 1;
}

static void target_net(const char *text, const uint8_t *bits, size_t bits_len)
{
    char *copy = strdup(text);
    char *lines[FUZZ_LINES_MAX];
    size_t n = 0;
    char err[256] = "";
    struct gw_net net;
    if (!copy) {
        return;
    }
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l && n < FUZZ_LINES_MAX;
         l = strtok_r(NULL, "\n", &save)) {
        lines[n++] = l;
    }
    if (n >= 2 && gw_net_init(&net, lines[0], (const char *const *)lines + 2, n - 2, lines[1], err,
                              sizeof(err)) == 0) {
        struct in_use_ctx u = {bits, bits_len};
        uint32_t ip;
        if (gw_net_allocate(&net, fuzz_in_use, &u, &ip) == 0) {
            uint32_t m = gw_cidr_mask(net.wg.prefix);
            if (!gw_cidr_contains(&net.range, ip) || !gw_cidr_contains(&net.wg, ip) ||
                ip == net.wg.addr || ip == (net.wg.addr & m) || ip == ((net.wg.addr & m) | ~m) ||
                fuzz_in_use(ip, &u)) {
                abort();
            }
            for (size_t i = 0; i < net.reserved_count; i++) {
                if (gw_cidr_contains(&net.reserved[i], ip)) {
                    abort();
                }
            }
        }
    } else if (n >= 2 && err[0] == '\0') {
        abort();
    }
    free(copy);
}

static void count_peer(const struct gw_wg_peer *p, void *ctx)
{
    if (!gw_wg_key_valid(p->public_key) || p->latest_handshake < 0) {
        abort();
    }
    (*(int *)ctx)++;
}

static void check_policy(const struct gw_port_policy *p)
{
    if (p->count > GW_PORT_POLICY_PORTS_MAX) {
        abort();
    }
    for (size_t i = 0; i < p->count; i++) {
        if (p->ports[i].port == 0 || (i > 0 && p->ports[i].port <= p->ports[i - 1].port) ||
            !gw_port_policy_allows(p, p->ports[i].port) ||
            gw_port_policy_wants_pp(p, p->ports[i].port) != p->ports[i].pp) {
            abort();
        }
    }
    char *dump = gw_port_policy_dump(p);
    if (dump == NULL) {
        return;
    }
    struct gw_port_policy *again = malloc(sizeof(*again));
    char err[256];
    if (again == NULL ||
        gw_port_policy_parse(dump, strlen(dump), "p", again, err, sizeof(err)) != 0 ||
        again->count != p->count || again->restrict_mode != p->restrict_mode ||
        memcmp(again->ports, p->ports, p->count * sizeof(p->ports[0])) != 0) {
        abort();
    }
    free(again);
    free(dump);
}

static void target_policy(const char *text, size_t len, bool agent)
{
    struct gw_port_policy *p = malloc(sizeof(*p));
    char err[256] = "";
    if (p == NULL) {
        return;
    }
    memset(p, 0xa5, sizeof(*p));
    int r = agent ? gw_port_policy_from_agent_info(text, len, p, err, sizeof(err))
                  : gw_port_policy_parse(text, len, "port_policy", p, err, sizeof(err));
    if (r == 0) {
        check_policy(p);
    } else {
        for (size_t i = 0; i < sizeof(*p); i++) {
            if (((const uint8_t *)p)[i] != 0xa5) {
                abort(); /* out written on failure */
            }
        }
        if (err[0] == '\0' || (r != -DS_E_FORMAT && r != -DS_E_LIMIT && r != -ENOMEM)) {
            abort();
        }
    }
    free(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t which = data[0] % 7;
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    char *text = malloc(len + 1);
    if (!text) {
        return 0;
    }
    memcpy(text, in, len);
    text[len] = '\0';
    switch (which) {
    case 0: {
        /* text up to the first NUL is the plan; the bytes after it the in-use bitmap */
        size_t tl = strlen(text);
        const uint8_t *bits = tl < len ? in + tl + 1 : NULL;
        target_net(text, bits, bits ? len - tl - 1 : 0);
        break;
    }
    case 1: {
        int seen = 0;
        int r = gw_wg_dump_parse(text, len, count_peer, &seen);
        if (r >= 0 && r != seen) {
            abort();
        }
        break;
    }
    case 2: {
        char tmp[64];
        const char *out = NULL;
        const char *auth = len > 0 && in[0] & 1 ? text : NULL;
        const char *x = len > 0 && in[0] & 2 ? text : NULL;
        if (gw_admin_token_of(auth, x, text, true, tmp, sizeof(tmp), &out)) {
            if (!out || (out == tmp && strlen(tmp) >= sizeof(tmp))) {
                abort();
            }
        }
        break;
    }
    case 3: {
        struct ds_buf b;
        ds_buf_init(&b, 8 * len + 16);
        if (gw_html_escape(&b, text) == 0) {
            for (size_t i = 0; i < b.len; i++) {
                if (strchr("<>\"'", b.data[i])) {
                    abort();
                }
            }
            if (b.len < strlen(text)) {
                abort();
            }
        }
        ds_buf_done(&b);
        break;
    }
    case 5:
    case 6:
        target_policy(text, len, which == 6);
        break;
    default: {
        struct gw_cidr c;
        if (gw_wg_key_valid(text) && strlen(text) != GW_WG_KEY_B64_LEN) {
            abort();
        }
        if (gw_hex_id_valid(text, 20) && (strlen(text) > 40 || strlen(text) % 2)) {
            abort();
        }
        if (gw_cidr_parse(text, &c) == 0 && c.prefix > 32) {
            abort();
        }
        break;
    }
    }
    free(text);
    return 0;
}
