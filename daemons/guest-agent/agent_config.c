/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest agent's configuration: one schema table (option, type, field, default, help)
 * drives command-line parsing, --dump-config, the usage text and docs/guest-agent.md. The
 * TOML file form (--config) is not implemented yet: giving it is an error rather than a
 * silently ignored file. Defaults are upstream's real-guest paths (spec §1, §4.1); simulator
 * mode changes none of them except that listeners not named on the command line are off.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
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
    {"--config", OPT_STRING, OFF(config_file), NULL, "TOML configuration (not supported yet)"},
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

int agent_config_parse(struct agent_config *cfg, int argc, char **argv)
{
    memset(cfg, 0, sizeof(*cfg));
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
    if (cfg->config_file) {
        log_warnx("--config %s: TOML configuration files are not supported yet; use the "
                  "command-line options (see --help)",
                  cfg->config_file);
        return -1;
    }
    if (cfg->seed && !cfg->simulator) {
        log_warnx("--seed is only meaningful with --simulator");
        return -1;
    }
    if (cfg->simulator) {
        /* In simulator mode only the listeners named on the command line run (the SDK test
         * harness gives temp paths; nothing may land in /var/run on a developer machine). */
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
    const uint8_t *base = (const uint8_t *)cfg;
    for (size_t i = 0; i < DS_ARRAY_SIZE(opts); i++) {
        const struct opt *o = &opts[i];
        switch (o->type) {
        case OPT_STRING: {
            const char *v = *(const char *const *)(base + o->offset);
            printf("%s = \"%s\"\n", o->name + 2, v ? v : "");
            break;
        }
        case OPT_FLAG:
            if (strcmp(o->name, "--check") != 0 && strcmp(o->name, "--dump-config") != 0) {
                printf("%s = %s\n", o->name + 2,
                       *(const bool *)(base + o->offset) ? "true" : "false");
            }
            break;
        case OPT_VERBOSE:
            printf("verbose = %d\n", *(const int *)(base + o->offset));
            break;
        }
    }
}
