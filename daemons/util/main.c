/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-util: the helper that runs inside a CVM (spec host-side.md §3). This file is the table
 * of contents: global options, the subcommand table, the option parser every subcommand
 * shares, and process set-up (libcurl; a jansson allocator that wipes freed memory, since KMS
 * answers carry keys as JSON strings). Subcommands live in util_<name>.c.
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "log.h"
#include "util.h"
#include "util_setup.h"

struct util_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    void (*usage)(FILE *out);
    const char *summary;
};

static const struct util_cmd util_cmds[] = {
    {"get-keys", util_cmd_get_keys, util_get_keys_usage,
     "fetch the app keys from a KMS and write the app keys file"},
    {"ratls-cert", util_cmd_ratls_cert, util_ratls_cert_usage,
     "mint an RA-TLS certificate with a quote from the TEE"},
    {"gateway-register", util_cmd_gateway_register, util_gateway_register_usage,
     "register with a dstack gateway and write the WireGuard config"},
    {"gateway-setup", util_cmd_gateway_setup, util_gateway_setup_usage,
     "boot step: register with the app's gateway and bring up dstack-wg0"},
    {"gateway-checker", util_cmd_gateway_checker, util_gateway_checker_usage,
     "keep the CVM registered with its gateway (re-register, refresh the tunnel)"},
    {"setup", util_cmd_setup, util_setup_usage,
     "measure and set up the app at boot (keys, data volume, env)"},
    {"notify", util_cmd_notify, util_notify_usage, "send a Notify event to the VMM host API"},
};

static const struct util_opt *find_opt(const struct util_opt *opts, const char *name, size_t len)
{
    for (const struct util_opt *o = opts; o->name; o++) {
        if (strlen(o->name) == len && memcmp(o->name, name, len) == 0) {
            return o;
        }
    }
    return NULL;
}

int util_parse_opts(const char *cmd, int argc, char **argv, const struct util_opt *opts, bool *help)
{
    bool seen[UTIL_MAX_OPTS] = {false};
    *help = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = true;
            return 0;
        }
        if (strncmp(a, "--", 2) != 0 || a[2] == '\0') {
            log_warnx("%s: unexpected argument '%s' (options are --name VALUE)", cmd, a);
            return UTIL_EXIT_USAGE;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const struct util_opt *o = find_opt(opts, name, len);
        if (!o) {
            log_warnx("%s: unknown option '--%.*s'", cmd, (int)len, name);
            return UTIL_EXIT_USAGE;
        }
        size_t idx = (size_t)(o - opts);
        if (idx < UTIL_MAX_OPTS) {
            if (seen[idx]) {
                log_warnx("%s: --%s given more than once", cmd, o->name);
                return UTIL_EXIT_USAGE;
            }
            seen[idx] = true;
        }
        if (o->kind == UTIL_OPT_FLAG) {
            if (eq) {
                log_warnx("%s: --%s takes no value", cmd, o->name);
                return UTIL_EXIT_USAGE;
            }
            *(bool *)o->target = true;
            continue;
        }
        const char *val = eq ? eq + 1 : (i + 1 < argc ? argv[++i] : NULL);
        if (!val || !val[0]) {
            log_warnx("%s: --%s: expected %s", cmd, o->name, o->metavar);
            return UTIL_EXIT_USAGE;
        }
        *(const char **)o->target = val;
    }
    for (const struct util_opt *o = opts; o->name; o++) {
        size_t idx = (size_t)(o - opts);
        if (o->required && idx < UTIL_MAX_OPTS && !seen[idx]) {
            log_warnx("%s: --%s %s is required", cmd, o->name, o->metavar);
            return UTIL_EXIT_USAGE;
        }
    }
    return 0;
}

/* jansson keeps the strings of parsed answers (hex keys, PEM keys): wipe them on free. */
static void *json_alloc(size_t n)
{
    return malloc(n);
}

static void json_release(void *p)
{
    if (p) {
        ds_wipe(p, malloc_usable_size(p));
        free(p);
    }
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack-util [-v] COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < DS_ARRAY_SIZE(util_cmds); i++) {
        fprintf(out, "  %-17s %s\n", util_cmds[i].name, util_cmds[i].summary);
    }
    fprintf(out, "\n'dstack-util COMMAND --help' shows a command's options.\n"
                 "exit codes: 0 success, 1 the operation failed, 2 usage or input error\n");
}

int main(int argc, char **argv)
{
    int verbose = 0, i = 1;
    log_init("dstack-util", 0);
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "-v") == 0 || strcmp(argv[i], "--verbose") == 0) {
            verbose++;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return UTIL_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("dstack-util %s\n", DS_VERSION);
            return UTIL_EXIT_OK;
        } else {
            log_warnx("unknown global option '%s'", argv[i]);
            usage(stderr);
            return UTIL_EXIT_USAGE;
        }
    }
    log_set_verbose(verbose);
    if (i >= argc) {
        usage(stderr);
        return UTIL_EXIT_USAGE;
    }
    const struct util_cmd *cmd = NULL;
    for (size_t k = 0; k < DS_ARRAY_SIZE(util_cmds); k++) {
        if (strcmp(util_cmds[k].name, argv[i]) == 0) {
            cmd = &util_cmds[k];
        }
    }
    if (!cmd) {
        log_warnx("unknown command '%s'", argv[i]);
        usage(stderr);
        return UTIL_EXIT_USAGE;
    }
    json_set_alloc_funcs(json_alloc, json_release);
    if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
        log_warnx("cannot initialise libcurl");
        return UTIL_EXIT_FAIL;
    }
    int rc = cmd->run(argc - i, argv + i);
    curl_global_cleanup();
    return rc;
}
