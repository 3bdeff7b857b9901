/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interface of the guest's gateway boot step and its checker (spec host-side.md §3.3
 * step 17, §3.6 "gateway checker", §4.3 "Guest side"): `dstack-util gateway-setup` and
 * `dstack-util gateway-checker` (util_gateway_setup.c), built on the pure parts in
 * util_gateway_plan.c, which read the untrusted or semi-trusted inputs (app-compose.json,
 * .sys-config.json, the key cache, the WireGuard config the gateway's answer produced, `wg show`
 * output), build the argument vectors of the tools that bring the tunnel up, and decide what the
 * checker does next. The pure parts use only libdstack and jansson (no logging, no I/O), so the
 * unit tests and the fuzz harness compile them in.
 */
#ifndef DSTACK_UTIL_GATEWAY_SETUP_H
#define DSTACK_UTIL_GATEWAY_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define GWS_IFACE          "dstack-wg0"
#define GWS_CHAIN          "DSTACK_WG"
#define GWS_WG_PORT        "9182"           /* the guest's ListenPort (util_gateway_wg_config) */
#define GWS_CACHE_MIN_LEFT 600              /* reuse cached certificates while >= 10 min remain */
#define GWS_CERT_SECS      (10 * 24 * 3600) /* client certificates: now + 10 days */
#define GWS_URLS_MAX       32
#define GWS_URL_MAX        2048
#define GWS_PORTS_MAX      1024          /* port_policy.ports entries */
#define GWS_SERVERS_MAX    64            /* peers in the WireGuard config (util_gateway.c) */
#define GWS_FILE_MAX       (1024 * 1024) /* compose, sys-config, key cache */
#define GWS_ARGV_MAX       16
#define GWS_CMDS_MAX       (8 + 2 * GWS_SERVERS_MAX)
#define GWS_IP_MAX         16 /* "255.255.255.255" + NUL */
#define GWS_KEY_B64_LEN    44

/* What app-compose.json says about the gateway (§2 compose fields). */
struct gws_app {
    bool enabled;        /* gateway_enabled || tproxy_enabled || features has "tproxy-net" */
    bool no_instance_id; /* registration impossible then */
    json_t *port_policy; /* validated copy {ports:[{port, pp}], restrict_mode} (owned) */
};

/* Parse app-compose.json. Returns 0 or -DS_E_FORMAT with err naming the field. */
int gws_app_parse(const char *text, size_t len, struct gws_app *out, char *err, size_t err_size);
void gws_app_done(struct gws_app *a);

/* The gateway URLs of .sys-config.json (`gateway_urls`, each https://...). */
struct gws_urls {
    char *items[GWS_URLS_MAX];
    size_t count;
};
int gws_urls_parse(const char *text, size_t len, struct gws_urls *out, char *err, size_t err_size);
void gws_urls_done(struct gws_urls *u);

/*
 * The key cache (/run/dstack/gateway-cache.json, 0600, §4.3): client certificates (PEM chain)
 * with their keys, the not_after the certificates were requested with, and the WireGuard key
 * pair (kept across certificate renewals). The guest agent issues a fresh key per GetTlsKey,
 * so the quote-bearing certificate has its own key (client_key_with_quote).
 */
struct gws_cache {
    char *client_cert, *client_key;                       /* NULL when absent */
    char *client_cert_with_quote, *client_key_with_quote; /* NULL until needed */
    int64_t cert_not_after;
    char wg_sk[GWS_KEY_B64_LEN + 1], wg_pk[GWS_KEY_B64_LEN + 1]; /* "" when absent */
};
/* Parse a cache file; a field with the wrong type, or a wg_pk that is not wg_sk's public key,
 * is an error (-DS_E_FORMAT, err names it). Secrets are wiped by gws_cache_done(). */
int gws_cache_parse(const char *text, size_t len, struct gws_cache *out, char *err,
                    size_t err_size);
/* Serialize (*out malloc'd, secret: wipe before free). Returns 0 or -ENOMEM. */
int gws_cache_dump(const struct gws_cache *c, char **out);
void gws_cache_done(struct gws_cache *c);
/* The plain client certificate may be reused at now (>= GWS_CACHE_MIN_LEFT left). */
bool gws_cache_cert_fresh(const struct gws_cache *c, int64_t now);

/*
 * What the tunnel needs, read back from the WireGuard config util_gateway_wg_config() wrote:
 * the client address (Address), one /32 route per server (AllowedIPs) and the server endpoint
 * addresses to accept on UDP 9182 (Endpoint, IPv4 literal:port only: the address goes into an
 * iptables rule). Every value is validated as an IPv4 literal before it reaches a command line.
 */
struct gws_plan {
    char client_ip[GWS_IP_MAX];
    char routes[GWS_SERVERS_MAX][GWS_IP_MAX + 3]; /* "a.b.c.d/32" */
    size_t route_count;
    char endpoints[GWS_SERVERS_MAX][GWS_IP_MAX]; /* distinct */
    size_t endpoint_count;
};
int gws_plan_parse(const char *conf, struct gws_plan *out, char *err, size_t err_size);

/* The config for `wg setconf`: conf without the wg-quick-only lines (Address, DNS, MTU, Table,
 * PreUp/PostUp/PreDown/PostDown, SaveConfig). *out malloc'd (holds the private key). */
int gws_setconf_text(const char *conf, char **out);

/* One tool invocation: argv (NULL-terminated, strings borrowed from the plan / constants). */
struct gws_cmd {
    const char *argv[GWS_ARGV_MAX];
    bool may_fail; /* e.g. deleting a rule that is not there yet */
};
/*
 * The commands that follow `wg setconf` (spec §4.3, without wg-quick): the DSTACK_WG chain
 * (create, flush, one jump from INPUT for udp dport 9182, ACCEPT per endpoint, final DROP),
 * the address, link up and one /32 route per server. Returns the count written to out (max
 * entries), or -DS_E_LIMIT.
 */
int gws_tunnel_cmds(const struct gws_plan *p, const char *iface, struct gws_cmd *out, size_t max);

/* Latest handshake over all peers from `wg show <if> latest-handshakes` ("<pk>\t<unix>" lines):
 * 0 = none yet. Returns 0 or -DS_E_FORMAT. */
int gws_latest_handshake(const char *text, size_t len, int64_t *out);

/* ---- the checker's decision (§3.6) ----------------------------------------------------------- */

struct gws_check_params {
    int64_t refresh_interval;   /* periodic re-registration (180 s) */
    int64_t handshake_timeout;  /* handshake older / absent this long => forced refresh (180 s) */
    int64_t force_min_interval; /* forced refreshes at most this often (180 s) */
    int64_t backoff_min;        /* retry after a failure: 30, 60, 120 s ... */
    int64_t backoff_max;
};

struct gws_check_state {
    int64_t last_register;   /* last successful registration (0 = never) */
    int64_t last_forced;     /* last forced attempt */
    int64_t next_retry;      /* after a failure: no attempt before this */
    int64_t backoff;         /* the next failure's delay (0 = backoff_min) */
    int64_t hs_absent_since; /* first check that saw the config but no handshake (0 = n/a) */
};

enum gws_action {
    GWS_NOTHING = 0,
    GWS_REFRESH, /* re-register; reconfigure WireGuard only if the config text changed */
    GWS_FORCE,   /* re-register and reconfigure WireGuard */
};

/* Decide at now from whether the WireGuard config exists and the latest handshake (0 = none).
 * Updates st->hs_absent_since and st->last_forced (when it answers GWS_FORCE). */
enum gws_action gws_check_decide(const struct gws_check_params *p, struct gws_check_state *st,
                                 int64_t now, bool conf_exists, int64_t latest_handshake);
/* Record the outcome of an attempt at now (success resets the backoff, failure doubles it up to
 * backoff_max and defers the next attempt). */
void gws_check_result(const struct gws_check_params *p, struct gws_check_state *st, int64_t now,
                      bool ok);

#endif /* DSTACK_UTIL_GATEWAY_SETUP_H */
