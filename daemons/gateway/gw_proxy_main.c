/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-gateway proxy-only --config FILE`: the data plane alone, for integration tests and
 * benchmarks, without WireGuard, RA-TLS or persistence. FILE is key=value lines (docs/gateway.md):
 * listeners, wildcard certificates per base domain, static routes `route=<app_id>
 * <instance_id> <ip> [handshake_age_s]` (open port policy unless a later `policy=<instance_id>
 * <json>|open|unknown` line says otherwise; unknown ones are fetched from the agent at
 * <ip>:agent_port in the background), TLS versions, PROXY in/out, splice (and after how many
 * bytes / ms), worker threads, limits and every timeout. SIGHUP reloads the certificates,
 * SIGTERM/SIGINT stop accepting and exit once the connections drained (at most
 * timeouts.shutdown later), SIGUSR1 logs the counters.
 *
 * The control plane's main.c owns the entry point and dispatches the `proxy-only` subcommand
 * here (argv may start at the program name or at "proxy-only").
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "gw_proxy.h"
#include "log.h"

#define GW_CFG_FILE_MAX   (1024 * 1024)
#define GW_CFG_ROUTES_MAX 1024

struct driver {
    struct event_base *base;
    struct gw_proxy *proxy;
    struct gw_pfetch *pfetch;
    struct gw_pfetch_config pf_cfg;
    struct gw_routes *routes;
    struct gw_certs *certs;
    struct event *ev_term, *ev_int, *ev_hup, *ev_usr1, *ev_drain;
    uint64_t drain_deadline_ms;
    uint32_t shutdown_ms;
};

static int parse_u32(const char *v, uint32_t *out)
{
    char *end;
    errno = 0;
    unsigned long x = strtoul(v, &end, 10);
    if (errno || end == v || *end != '\0' || x > UINT32_MAX) {
        return -EINVAL;
    }
    *out = (uint32_t)x;
    return 0;
}

static int parse_bool(const char *v, bool *out)
{
    if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0) {
        *out = true;
    } else if (strcmp(v, "0") == 0 || strcmp(v, "false") == 0) {
        *out = false;
    } else {
        return -EINVAL;
    }
    return 0;
}

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r')) {
        s[--n] = '\0';
    }
    return s;
}

struct timeout_key {
    const char *key;
    size_t offset;
};

static const struct timeout_key timeout_keys[] = {
    {"pp_header_timeout_ms", offsetof(struct gw_proxy_timeouts, pp_header_ms)},
    {"handshake_timeout_ms", offsetof(struct gw_proxy_timeouts, handshake_ms)},
    {"connect_timeout_ms", offsetof(struct gw_proxy_timeouts, connect_ms)},
    {"idle_timeout_ms", offsetof(struct gw_proxy_timeouts, idle_ms)},
    {"total_timeout_ms", offsetof(struct gw_proxy_timeouts, total_ms)},
    {"shutdown_timeout_ms", offsetof(struct gw_proxy_timeouts, shutdown_ms)},
    {"dns_timeout_ms", offsetof(struct gw_proxy_timeouts, dns_ms)},
    {"stale_handshake_s", offsetof(struct gw_proxy_timeouts, stale_handshake_s)},
};

static const struct timeout_key fetch_keys[] = {
    {"port_policy_fetch_timeout_ms", offsetof(struct gw_pfetch_config, timeout_ms)},
    {"port_policy_fetch_max_retries", offsetof(struct gw_pfetch_config, max_retries)},
    {"port_policy_fetch_backoff_initial_ms", offsetof(struct gw_pfetch_config, backoff_initial_ms)},
    {"port_policy_fetch_backoff_max_ms", offsetof(struct gw_pfetch_config, backoff_max_ms)},
};

/* policy=<instance_id> <json>|open|unknown */
static int parse_policy_line(struct driver *d, char *val)
{
    static const struct gw_port_policy open_policy;
    char err[256];
    char *sp = strchr(val, ' ');
    if (sp == NULL) {
        return -EINVAL;
    }
    *sp = '\0';
    char *inst = val, *text = sp + 1;
    while (*text == ' ') {
        text++;
    }
    if (strcmp(text, "unknown") == 0) {
        return gw_routes_set_policy(d->routes, inst, NULL);
    }
    if (strcmp(text, "open") == 0) {
        return gw_routes_set_policy(d->routes, inst, &open_policy);
    }
    struct gw_port_policy *p = malloc(sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    int rc = gw_port_policy_parse(text, strlen(text), "policy", p, err, sizeof(err));
    if (rc < 0) {
        log_warnx("%s", err);
    } else {
        rc = gw_routes_set_policy(d->routes, inst, p);
    }
    free(p);
    return rc;
}

static int load_config(char *text, struct gw_proxy_config *cfg, struct driver *d, char **port_file)
{
    static const struct gw_port_policy open_policy;
    int lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        line = trim(line);
        if (*line == '\0' || *line == '#') {
            continue;
        }
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            log_warnx("config line %d: expected key=value", lineno);
            return -EINVAL;
        }
        *eq = '\0';
        char *key = trim(line), *val = trim(eq + 1);
        int rc = 0;
        bool done = false;
        for (size_t i = 0; i < DS_ARRAY_SIZE(timeout_keys); i++) {
            if (strcmp(key, timeout_keys[i].key) == 0) {
                rc = parse_u32(val, (uint32_t *)((char *)&cfg->timeouts + timeout_keys[i].offset));
                done = true;
            }
        }
        for (size_t i = 0; i < DS_ARRAY_SIZE(fetch_keys); i++) {
            if (strcmp(key, fetch_keys[i].key) == 0) {
                rc = parse_u32(val, (uint32_t *)((char *)&d->pf_cfg + fetch_keys[i].offset));
                done = true;
            }
        }
        if (done) {
        } else if (strcmp(key, "listen") == 0) {
            if (cfg->listen_count == GW_LISTEN_MAX) {
                rc = -DS_E_LIMIT;
            } else {
                cfg->listen[cfg->listen_count++] = val;
            }
        } else if (strcmp(key, "port_file") == 0) {
            *port_file = val;
        } else if (strcmp(key, "cert") == 0) {
            char *sp1 = NULL, *dom = strtok_r(val, " ", &sp1), *chain = strtok_r(NULL, " ", &sp1),
                 *k = strtok_r(NULL, " ", &sp1);
            if (dom == NULL || chain == NULL || k == NULL) {
                rc = -EINVAL;
            } else {
                rc = gw_certs_load_files(d->certs, dom, chain, k);
            }
        } else if (strcmp(key, "route") == 0) {
            char *sp1 = NULL, *app = strtok_r(val, " ", &sp1), *inst = strtok_r(NULL, " ", &sp1),
                 *ip = strtok_r(NULL, " ", &sp1), *age = strtok_r(NULL, " ", &sp1);
            uint32_t age_s = 0;
            if (app == NULL || inst == NULL || ip == NULL ||
                (age != NULL && parse_u32(age, &age_s) < 0)) {
                rc = -EINVAL;
            } else {
                rc = gw_routes_set_instance(d->routes, app, inst, ip,
                                            (int64_t)time(NULL) - (int64_t)age_s);
                if (rc == 0) {
                    rc = gw_routes_set_policy(d->routes, inst, &open_policy);
                }
            }
        } else if (strcmp(key, "policy") == 0) {
            rc = parse_policy_line(d, val);
        } else if (strcmp(key, "agent_port") == 0) {
            uint32_t port;
            rc = parse_u32(val, &port);
            if (rc == 0 && (port == 0 || port > 65535)) {
                rc = -EINVAL;
            }
            d->pf_cfg.agent_port = (uint16_t)port;
        } else if (strcmp(key, "tls_versions") == 0) {
            cfg->tls_versions = 0;
            if (strstr(val, "1.2")) {
                cfg->tls_versions |= GW_TLS_1_2;
            }
            if (strstr(val, "1.3")) {
                cfg->tls_versions |= GW_TLS_1_3;
            }
            rc = cfg->tls_versions ? 0 : -EINVAL;
        } else if (strcmp(key, "inbound_pp") == 0) {
            rc = parse_bool(val, &cfg->inbound_pp);
        } else if (strcmp(key, "outbound_pp") == 0) {
            rc = parse_bool(val, &cfg->outbound_pp);
        } else if (strcmp(key, "splice") == 0) {
            rc = parse_bool(val, &cfg->splice);
        } else if (strcmp(key, "splice_after_bytes") == 0) {
            uint32_t n;
            rc = parse_u32(val, &n);
            cfg->splice_after_bytes = n;
        } else if (strcmp(key, "splice_after_ms") == 0) {
            rc = parse_u32(val, &cfg->splice_after_ms);
        } else if (strcmp(key, "workers") == 0) {
            uint32_t n;
            rc = parse_u32(val, &n);
            if (rc == 0 && (n == 0 || n > GW_WORKERS_MAX)) {
                rc = -ERANGE;
            }
            cfg->workers = n;
        } else if (strcmp(key, "max_connections_per_app") == 0) {
            rc = parse_u32(val, &cfg->max_connections_per_app);
        } else if (strcmp(key, "max_connections") == 0) {
            rc = parse_u32(val, &cfg->max_connections);
        } else if (strcmp(key, "connect_top_n") == 0) {
            uint32_t n;
            rc = parse_u32(val, &n);
            cfg->connect_top_n = n;
        } else if (strcmp(key, "buffer_size") == 0) {
            uint32_t n;
            rc = parse_u32(val, &n);
            cfg->buffer_size = n;
        } else if (strcmp(key, "app_address_ns_prefix") == 0) {
            cfg->app_address_ns_prefix = val;
        } else if (strcmp(key, "app_address_ns_compat") == 0) {
            rc = parse_bool(val, &cfg->app_address_ns_compat);
        } else if (strcmp(key, "insecure_localhost_backend") == 0) {
            rc = parse_bool(val, &cfg->insecure_localhost_backend);
        } else {
            log_warnx("config line %d: unknown key \"%s\"", lineno, key);
            return -EINVAL;
        }
        if (rc < 0) {
            log_warnx("config line %d: bad value for \"%s\": %s", lineno, key, ds_strerror(rc));
            return rc;
        }
    }
    return 0;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct driver *d = arg;
    struct gw_proxy_stats st;
    gw_proxy_get_stats(d->proxy, &st);
    if (st.active == 0 || mono_ms() >= d->drain_deadline_ms) {
        event_base_loopexit(d->base, NULL);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    struct driver *d = arg;
    if (sig == SIGHUP) {
        int rc = gw_proxy_reload_certs(d->proxy);
        if (rc < 0) {
            log_warnx("certificate reload: %s", ds_strerror(rc));
        } else {
            log_info("reloaded %d certificate(s)", rc);
        }
        return;
    }
    if (sig == SIGUSR1) {
        struct gw_proxy_stats s;
        gw_proxy_get_stats(d->proxy, &s);
        log_info("stats: accepted=%llu active=%llu refused_no_sni=%llu refused_bad_sni=%llu "
                 "refused_unknown_app=%llu refused_limit=%llu refused_timeout=%llu "
                 "backend_fail=%llu terminated=%llu passthrough=%llu spliced_bytes=%llu "
                 "refused_port_policy=%llu",
                 (unsigned long long)s.accepted, (unsigned long long)s.active,
                 (unsigned long long)s.refused_no_sni, (unsigned long long)s.refused_bad_sni,
                 (unsigned long long)s.refused_unknown_app, (unsigned long long)s.refused_limit,
                 (unsigned long long)s.refused_timeout, (unsigned long long)s.backend_fail,
                 (unsigned long long)s.terminated, (unsigned long long)s.passthrough,
                 (unsigned long long)s.spliced_bytes, (unsigned long long)s.refused_port_policy);
        char per[GW_WORKERS_MAX * 21 + 1];
        size_t off = 0;
        per[0] = '\0';
        for (size_t i = 0; gw_proxy_get_worker_stats(d->proxy, i, &s) == 0; i++) {
            int n = snprintf(per + off, sizeof(per) - off, "%s%llu", i ? "," : "",
                             (unsigned long long)s.accepted);
            if (n < 0 || (size_t)n >= sizeof(per) - off) {
                break;
            }
            off += (size_t)n;
        }
        log_info("stats per worker: accepted=%s", per);
        return;
    }
    log_info("signal %d: draining connections", (int)sig);
    gw_proxy_shutdown(d->proxy);
    d->drain_deadline_ms = mono_ms() + d->shutdown_ms + 100;
    struct timeval tv = {0, 50 * 1000};
    event_add(d->ev_drain, &tv);
}

static void on_policy_fetched(const char *instance_id, int rc, const struct gw_port_policy *p,
                              unsigned attempts, const char *err, void *arg)
{
    struct driver *d = arg;
    if (rc < 0) {
        log_warnx("port policy of instance %s stays unknown after %u attempt(s): %s", instance_id,
                  attempts, err);
        return;
    }
    if (gw_routes_set_policy(d->routes, instance_id, p) < 0) {
        log_warnx("port policy of instance %s: not in the routing table", instance_id);
        return;
    }
    log_info("port policy of instance %s fetched from its agent (restrict_mode %s, %zu port(s))",
             instance_id, p->restrict_mode ? "on" : "off", p->count);
}

static void usage(void)
{
    fprintf(stderr, "usage: dstack-gateway proxy-only --config FILE [-v]\n");
}

int gw_proxy_only_main(int argc, char **argv)
{
    const char *config_path = NULL;
    int verbose = 0, rc, code = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "proxy-only") == 0) {
            continue;
        }
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            config_path = argv[++i];
        } else if (strcmp(argv[i], "-v") == 0) {
            verbose = 1;
        } else {
            usage();
            return 2;
        }
    }
    log_init("dstack-gateway", verbose);
    if (config_path == NULL) {
        usage();
        return 2;
    }
    struct driver d;
    memset(&d, 0, sizeof(d));
    struct gw_proxy_config cfg;
    gw_proxy_config_defaults(&cfg);
    char *port_file = NULL;
    uint8_t *text = NULL;
    size_t text_len;
    rc = ds_read_file(config_path, GW_CFG_FILE_MAX, &text, &text_len);
    if (rc < 0) {
        log_warnx("cannot read \"%s\": %s", config_path, ds_strerror(rc));
        goto out;
    }
    if (gw_routes_new(&d.routes) < 0 || gw_certs_new(&d.certs) < 0) {
        goto out;
    }
    d.pf_cfg = (struct gw_pfetch_config){.agent_port = GW_DEFAULT_AGENT_PORT,
                                         .timeout_ms = 10000,
                                         .max_retries = 5,
                                         .backoff_initial_ms = 1000,
                                         .backoff_max_ms = 30000};
    if (load_config((char *)text, &cfg, &d, &port_file) < 0) {
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    d.base = event_base_new();
    if (d.base == NULL) {
        goto out;
    }
    rc = gw_pfetch_new(d.base, &d.pf_cfg, on_policy_fetched, &d, &d.pfetch);
    if (rc < 0) {
        log_warnx("port policy fetcher: %s", ds_strerror(rc));
        goto out;
    }
    gw_routes_set_fetch_hook(d.routes, gw_pfetch_hook, d.pfetch);
    d.shutdown_ms = cfg.timeouts.shutdown_ms;
    rc = gw_proxy_new(d.base, &cfg, d.routes, d.certs, &d.proxy);
    if (rc < 0) {
        log_warnx("proxy: %s", ds_strerror(rc));
        goto out;
    }
    if (port_file != NULL) {
        char buf[32];
        int port = gw_proxy_listen_port(d.proxy, 0);
        int n = snprintf(buf, sizeof(buf), "%d\n", port);
        rc = ds_write_file_atomic(port_file, buf, (size_t)n, 0644);
        if (rc < 0) {
            log_warnx("port_file: %s", ds_strerror(rc));
            goto out;
        }
    }
    log_info("proxy listening on port %d", gw_proxy_listen_port(d.proxy, 0));
    d.ev_term = evsignal_new(d.base, SIGTERM, on_signal, &d);
    d.ev_int = evsignal_new(d.base, SIGINT, on_signal, &d);
    d.ev_hup = evsignal_new(d.base, SIGHUP, on_signal, &d);
    d.ev_usr1 = evsignal_new(d.base, SIGUSR1, on_signal, &d);
    d.ev_drain = event_new(d.base, -1, EV_PERSIST, on_drain, &d);
    if (!d.ev_term || !d.ev_int || !d.ev_hup || !d.ev_usr1 || !d.ev_drain) {
        goto out;
    }
    event_add(d.ev_term, NULL);
    event_add(d.ev_int, NULL);
    event_add(d.ev_hup, NULL);
    event_add(d.ev_usr1, NULL);
    event_base_dispatch(d.base);
    code = 0;
out:
    gw_proxy_free(d.proxy);
    if (d.routes) {
        gw_routes_set_fetch_hook(d.routes, NULL, NULL);
    }
    gw_pfetch_free(d.pfetch);
    if (d.ev_term) {
        event_free(d.ev_term);
    }
    if (d.ev_int) {
        event_free(d.ev_int);
    }
    if (d.ev_hup) {
        event_free(d.ev_hup);
    }
    if (d.ev_usr1) {
        event_free(d.ev_usr1);
    }
    if (d.ev_drain) {
        event_free(d.ev_drain);
    }
    if (d.base) {
        event_base_free(d.base);
    }
    gw_certs_free(d.certs);
    gw_routes_free(d.routes);
    free(text);
    return code;
}
