/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest agent's configuration. Two tables: the command-line options (option, type, field,
 * default, help: parsing and the usage text) and the TOML schema of upstream's dstack.toml
 * ([default], [default.core], [internal], [internal-v0], [external], [guest-api]) read with
 * lib/config for --config FILE and printed by --dump-config. Precedence: defaults, then the
 * file, then the command line. Defaults are upstream's real-guest paths (spec §1, §4.1);
 * simulator mode changes none of them except that listeners not named are off.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dstack/config.h"
#include "log.h"

enum opt_type { OPT_STRING, OPT_FLAG, OPT_VERBOSE };

struct opt {
    const char *name;
    enum opt_type type;
    size_t offset;
    const char *def; /* default (strings) */
    const char *help;
};

#define OFF(f) offsetof(struct agent_config, f)

static const struct opt opts[] = {
    {"--simulator", OPT_FLAG, OFF(simulator), NULL,
     "INSECURE development mode: embedded simulated TDX module and development keys"},
    {"--socket", OPT_STRING, OFF(socket), AGENT_DEFAULT_SOCKET,
     "dstack.sock path (DstackGuest service); \"\" disables"},
    {"--tappd-socket", OPT_STRING, OFF(tappd_socket), AGENT_DEFAULT_TAPPD_SOCKET,
     "legacy tappd.sock path (Tappd service); \"\" disables"},
    {"--http", OPT_STRING, OFF(http), AGENT_DEFAULT_HTTP,
     "external listener ADDR:PORT (Worker service + dashboard; port 0 picks one); \"\" disables"},
    {"--keys-file", OPT_STRING, OFF(keys_file), AGENT_DEFAULT_KEYS_FILE,
     "app keys (.appkeys.json)"},
    {"--compose-file", OPT_STRING, OFF(compose_file), AGENT_DEFAULT_COMPOSE_FILE,
     "app-compose.json"},
    {"--sys-config-file", OPT_STRING, OFF(sys_config_file), AGENT_DEFAULT_SYS_CONFIG,
     "sys-config (.sys-config.json)"},
    {"--instance-info-file", OPT_STRING, OFF(instance_info_file), AGENT_DEFAULT_INSTANCE_INFO,
     "instance info (.instance_info; optional): app_id / instance_id when the event log has none"},
    {"--dmi-dir", OPT_STRING, OFF(dmi_dir), AGENT_DEFAULT_DMI_DIR,
     "directory with sys_vendor and product_name (cloud_vendor / cloud_product)"},
    {"--tee", OPT_STRING, OFF(tee), NULL,
     "TEE provider: tdx | sim:<socket> | embedded[:<seed>] (default: env DSTACK_TEE, then "
     "autodetect; --simulator: embedded)"},
    {"--seed", OPT_STRING, OFF(seed), NULL,
     "--simulator: mock PKI seed, 64 hex digits (default: the public development seed)"},
    {"--config", OPT_STRING, OFF(config_file), NULL,
     "TOML configuration in upstream's dstack.toml layout (command-line options override it)"},
    {"--check", OPT_FLAG, OFF(check), NULL, "load and validate everything, then exit"},
    {"--dump-config", OPT_FLAG, OFF(dump), NULL, "print the effective configuration and exit"},
    {"-v", OPT_VERBOSE, OFF(verbose), NULL, "verbose (debug) logging"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack-guest-agent [options]\n"
                 "       dstack-guest-agent --simulator --socket PATH [--tappd-socket PATH] "
                 "[--http ADDR:PORT]\n\noptions:\n");
    for (size_t i = 0; i < DS_ARRAY_SIZE(opts); i++) {
        const struct opt *o = &opts[i];
        fprintf(out, "  %-22s %s%s%s%s\n", o->name, o->help, o->def ? " (default " : "",
                o->def ? o->def : "", o->def ? ")" : "");
    }
    fprintf(out, "  %-22s %s\n  %-22s %s\n", "-h, --help", "this text", "--version",
            "print the version");
}

/* ---- TOML (upstream dstack.toml) --------------------------------------------------------------
 */

#define AGENT_KEEP_ALIVE_DEFAULT 10 /* seconds (Rocket's keep_alive) */
#define UNIX_PREFIX              "unix:"

struct agent_toml {
    int64_t workers;
    int64_t max_blocking;
    char *ident;
    char *temp_dir;
    int64_t keep_alive;
    int log_level;
    char *keys_file;
    char *compose_file;
    char *sys_config_file;
    char *instance_info_file;
    char *dmi_dir;
    char *tee;
    struct ds_config_strv data_disks;
    bool sim_enabled;
    char *sim_seed;
    char *internal_v0_address;
    bool internal_v0_reuse;
    char *internal_address;
    bool internal_reuse;
    char *external_address;
    uint16_t external_port;
    char *guest_api_address;
    uint16_t guest_api_port;
};

static const char *const log_levels[] = {"off",    "critical", "error", "warn", "info",
                                         "normal", "debug",    "trace", NULL};
#define LOG_LEVEL_DEBUG 6

#define T(key_, type_, member_, def_, help_)                                                       \
    {                                                                                              \
        .key = key_, .type = type_, .offset = offsetof(struct agent_toml, member_), .def = def_,   \
        .help = help_                                                                              \
    }

static const struct ds_config_key toml_keys[] = {
    T("default.workers", DS_CFG_INT, workers, "8", "accepted for compatibility (one event loop)"),
    T("default.max_blocking", DS_CFG_INT, max_blocking, "64",
      "accepted for compatibility (one TEE worker thread)"),
    T("default.ident", DS_CFG_STRING, ident, "dstack guest agent", "accepted for compatibility"),
    T("default.temp_dir", DS_CFG_PATH, temp_dir, "/tmp", "accepted for compatibility"),
    T("default.keep_alive", DS_CFG_INT, keep_alive, "10", "HTTP keep-alive idle timeout, seconds"),
    {.key = "default.log_level",
     .type = DS_CFG_ENUM,
     .offset = offsetof(struct agent_toml, log_level),
     .def = "normal",
     .choices = log_levels,
     .help = "debug or trace turn on debug logging"},
    T("default.core.keys_file", DS_CFG_PATH, keys_file, AGENT_DEFAULT_KEYS_FILE,
      "app keys (.appkeys.json)"),
    T("default.core.compose_file", DS_CFG_PATH, compose_file, AGENT_DEFAULT_COMPOSE_FILE,
      "app-compose.json"),
    T("default.core.sys_config_file", DS_CFG_PATH, sys_config_file, AGENT_DEFAULT_SYS_CONFIG,
      "sys-config (.sys-config.json)"),
    T("default.core.instance_info_file", DS_CFG_PATH, instance_info_file,
      AGENT_DEFAULT_INSTANCE_INFO, "instance info (.instance_info, optional)"),
    T("default.core.dmi_dir", DS_CFG_PATH, dmi_dir, AGENT_DEFAULT_DMI_DIR,
      "sys_vendor / product_name directory"),
    T("default.core.tee", DS_CFG_STRING, tee, NULL,
      "TEE provider: tdx, sim:<socket>, embedded[:<seed>] (unset: env DSTACK_TEE, autodetect)"),
    T("default.core.data_disks", DS_CFG_STRINGS, data_disks, "[\"/\"]",
      "accepted for compatibility (SysInfo is not served)"),
    T("default.core.simulator.enabled", DS_CFG_BOOL, sim_enabled, "false",
      "INSECURE simulator mode (as --simulator)"),
    T("default.core.simulator.mock_attestation_seed", DS_CFG_STRING, sim_seed, NULL,
      "simulator: mock PKI seed, 64 hex digits"),
    T("internal-v0.address", DS_CFG_STRING, internal_v0_address,
      UNIX_PREFIX AGENT_DEFAULT_TAPPD_SOCKET, "tappd.sock: unix:<path>, or \"\" for none"),
    T("internal-v0.reuse", DS_CFG_BOOL, internal_v0_reuse, "true",
      "remove a stale socket file (always done)"),
    T("internal.address", DS_CFG_STRING, internal_address, UNIX_PREFIX AGENT_DEFAULT_SOCKET,
      "dstack.sock: unix:<path>, or \"\" for none"),
    T("internal.reuse", DS_CFG_BOOL, internal_reuse, "true",
      "remove a stale socket file (always done)"),
    T("external.address", DS_CFG_STRING, external_address, "0.0.0.0",
      "external listener: IP address, unix:<path>, or \"\" for none"),
    T("external.port", DS_CFG_PORT, external_port, "8090", "external listener port (IP only)"),
    T("guest-api.address", DS_CFG_STRING, guest_api_address, "vsock:0xffffffff",
      "accepted for compatibility (the guest API is not served)"),
    T("guest-api.port", DS_CFG_PORT, guest_api_port, "8000", "accepted for compatibility"),
};

static const struct ds_config_schema toml_schema = {
    .name = "dstack.toml",
    .keys = toml_keys,
    .count = DS_ARRAY_SIZE(toml_keys),
    .size = sizeof(struct agent_toml),
};

/* "unix:<path>" -> path; "" -> "" (disabled). Internal listeners are Unix sockets only. */
static int unix_address(const char *key, const char *addr, const char **out)
{
    if (!addr || !*addr) {
        *out = "";
        return 0;
    }
    if (strncmp(addr, UNIX_PREFIX, strlen(UNIX_PREFIX)) != 0 || !addr[strlen(UNIX_PREFIX)]) {
        log_warnx("%s = \"%s\": expected unix:<path>", key, addr);
        return -1;
    }
    *out = addr + strlen(UNIX_PREFIX);
    return 0;
}

static bool opt_given(const bool *given, const char *name)
{
    for (size_t k = 0; k < DS_ARRAY_SIZE(opts); k++) {
        if (strcmp(opts[k].name, name) == 0) {
            return given[k];
        }
    }
    return false;
}

/* Apply the file to every option the command line did not give. */
static int load_toml(struct agent_config *cfg, const bool *given)
{
    struct agent_toml *t = calloc(1, sizeof(*t));
    struct ds_config_err err;
    if (!t) {
        return -1;
    }
    int r = ds_config_load(&toml_schema, cfg->config_file, t, &err);
    if (r < 0) {
        log_warnx("%s", err.msg[0] ? err.msg : ds_strerror(r));
        free(t);
        return -1;
    }
    cfg->toml = t;
    const char *sock = NULL, *tappd = NULL;
    if (unix_address("internal.address", t->internal_address, &sock) < 0 ||
        unix_address("internal-v0.address", t->internal_v0_address, &tappd) < 0) {
        return -1;
    }
    if (t->keep_alive < 1 || t->keep_alive > 3600) {
        log_warnx("%s: default.keep_alive must be 1..3600 seconds", cfg->config_file);
        return -1;
    }
    cfg->keep_alive_s = (unsigned)t->keep_alive;
    const char *ext = t->external_address ? t->external_address : "";
    if (!*ext || strncmp(ext, UNIX_PREFIX, strlen(UNIX_PREFIX)) == 0) {
        snprintf(cfg->http_buf, sizeof(cfg->http_buf), "%s", ext);
    } else {
        bool v6 = strchr(ext, ':') != NULL;
        snprintf(cfg->http_buf, sizeof(cfg->http_buf), "%s%s%s:%u", v6 ? "[" : "", ext,
                 v6 ? "]" : "", (unsigned)t->external_port);
    }
    const struct {
        const char *opt;
        const char **dst;
        const char *value;
    } map[] = {
        {"--socket", &cfg->socket, sock},
        {"--tappd-socket", &cfg->tappd_socket, tappd},
        {"--http", &cfg->http, cfg->http_buf},
        {"--keys-file", &cfg->keys_file, t->keys_file},
        {"--compose-file", &cfg->compose_file, t->compose_file},
        {"--sys-config-file", &cfg->sys_config_file, t->sys_config_file},
        {"--instance-info-file", &cfg->instance_info_file, t->instance_info_file},
        {"--dmi-dir", &cfg->dmi_dir, t->dmi_dir},
        {"--tee", &cfg->tee, t->tee},
        {"--seed", &cfg->seed, t->sim_seed},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(map); i++) {
        if (!opt_given(given, map[i].opt) && map[i].value) {
            *map[i].dst = map[i].value;
        }
    }
    if (!opt_given(given, "--simulator") && t->sim_enabled) {
        cfg->simulator = true;
    }
    if (!opt_given(given, "-v") && t->log_level >= LOG_LEVEL_DEBUG) {
        cfg->verbose = 1;
    }
    return 0;
}

void agent_config_free(struct agent_config *cfg)
{
    if (cfg->toml) {
        ds_config_free(&toml_schema, cfg->toml);
        free(cfg->toml);
        cfg->toml = NULL;
    }
}

int agent_config_parse(struct agent_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->keep_alive_s = AGENT_KEEP_ALIVE_DEFAULT;
    uint8_t *base = (uint8_t *)cfg;
    bool given[DS_ARRAY_SIZE(opts)] = {false};
    for (size_t i = 0; i < DS_ARRAY_SIZE(opts); i++) {
        if (opts[i].type == OPT_STRING) {
            *(const char **)(base + opts[i].offset) = opts[i].def;
        }
    }
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 1;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("dstack-guest-agent v%s (%s)\n", AGENT_VERSION, AGENT_REV);
            return 1;
        }
        /* --name=value is accepted as well as --name value. */
        const char *eq = strchr(argv[i], '=');
        size_t nlen = eq ? (size_t)(eq - argv[i]) : strlen(argv[i]);
        size_t k;
        for (k = 0; k < DS_ARRAY_SIZE(opts); k++) {
            if (strlen(opts[k].name) == nlen && strncmp(argv[i], opts[k].name, nlen) == 0) {
                break;
            }
        }
        if (k == DS_ARRAY_SIZE(opts)) {
            log_warnx("unknown option \"%s\" (see --help)", argv[i]);
            return -1;
        }
        const struct opt *o = &opts[k];
        if (o->type != OPT_STRING) {
            if (eq) {
                log_warnx("option %s takes no value", o->name);
                return -1;
            }
            if (o->type == OPT_FLAG) {
                *(bool *)(base + o->offset) = true;
            } else {
                (*(int *)(base + o->offset))++;
            }
            given[k] = true;
            continue;
        }
        const char *v;
        if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            log_warnx("option %s needs a value", o->name);
            return -1;
        }
        *(const char **)(base + o->offset) = v;
        given[k] = true;
    }
    if (cfg->config_file && load_toml(cfg, given) < 0) {
        return -1;
    }
    if (cfg->seed && !cfg->simulator) {
        log_warnx("--seed is only meaningful with --simulator");
        return -1;
    }
    if (cfg->simulator && !cfg->config_file) {
        /* In simulator mode only the listeners named on the command line (or in a config file)
         * run: the SDK test harness gives temp paths; nothing may land in /var/run on a
         * developer machine. */
        for (size_t k = 0; k < DS_ARRAY_SIZE(opts); k++) {
            if (opts[k].type == OPT_STRING && !given[k] &&
                (opts[k].offset == OFF(socket) || opts[k].offset == OFF(tappd_socket) ||
                 opts[k].offset == OFF(http))) {
                *(const char **)(base + opts[k].offset) = "";
            }
        }
        if (!*cfg->socket) {
            log_warnx("--simulator needs --socket PATH");
            return -1;
        }
    }
    return 0;
}

void agent_config_dump(const struct agent_config *cfg)
{
    /* A read-only view of the effective configuration in the TOML schema's shape; the strings
     * are borrowed (ds_config_dump only reads them). */
    struct agent_toml t;
    char internal[4200], internal_v0[4200], ext_addr[128];
    uint16_t ext_port = 0;
    memset(&t, 0, sizeof(t));
    if (cfg->toml) {
        t = *(const struct agent_toml *)cfg->toml;
    } else {
        t.workers = 8;
        t.max_blocking = 64;
        t.ident = (char *)"dstack guest agent";
        t.temp_dir = (char *)"/tmp";
        t.guest_api_address = (char *)"vsock:0xffffffff";
        t.guest_api_port = 8000;
        t.internal_reuse = t.internal_v0_reuse = true;
    }
    snprintf(internal, sizeof(internal), "%s%s", *cfg->socket ? UNIX_PREFIX : "", cfg->socket);
    snprintf(internal_v0, sizeof(internal_v0), "%s%s", *cfg->tappd_socket ? UNIX_PREFIX : "",
             cfg->tappd_socket);
    /* --http ADDR:PORT back into [external] address + port */
    snprintf(ext_addr, sizeof(ext_addr), "%s", cfg->http);
    char *colon = strrchr(ext_addr, ':');
    if (*ext_addr && strncmp(ext_addr, UNIX_PREFIX, strlen(UNIX_PREFIX)) != 0 && colon) {
        ext_port = (uint16_t)strtoul(colon + 1, NULL, 10);
        *colon = '\0';
        if (ext_addr[0] == '[' && colon > ext_addr && colon[-1] == ']') {
            colon[-1] = '\0';
            memmove(ext_addr, ext_addr + 1, strlen(ext_addr));
        }
    }
    t.keep_alive = cfg->keep_alive_s;
    t.log_level = cfg->verbose ? LOG_LEVEL_DEBUG : 5;
    t.keys_file = (char *)cfg->keys_file;
    t.compose_file = (char *)cfg->compose_file;
    t.sys_config_file = (char *)cfg->sys_config_file;
    t.instance_info_file = (char *)cfg->instance_info_file;
    t.dmi_dir = (char *)cfg->dmi_dir;
    t.tee = (char *)cfg->tee;
    t.sim_enabled = cfg->simulator;
    t.sim_seed = (char *)cfg->seed;
    t.internal_address = internal;
    t.internal_v0_address = internal_v0;
    t.external_address = ext_addr;
    t.external_port = ext_port;
    if (ds_config_dump(&toml_schema, &t, stdout) < 0) {
        log_warnx("cannot print the configuration");
    }
}
