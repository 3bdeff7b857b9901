/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack`: the command-line tool. This file is the table of contents: the global options
 * (-v/--verbose, -h/--help, --version), the subcommand table, usage text, and the small
 * table-driven option parser every subcommand shares (so every usage error names the option
 * and what was expected; exit code 2). Subcommands live in cmd_<name>.c.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

struct cli_cmd {
    const char *name;
    int (*run)(int argc, char **argv);
    void (*usage)(FILE *out);
    const char *summary;
};

static const struct cli_cmd cli_cmds[] = {
    {"verify", cmd_verify, cmd_verify_usage, "verify a DCAP quote or a dstack attestation"},
    {"compose", cmd_compose, cmd_compose_usage,
     "create an app-compose.json (like vmm-cli.py compose)"},
    {"kms", cmd_kms, cmd_kms_usage, "query a KMS: metadata, app env-encryption public keys"},
    {"deploy", cmd_deploy, cmd_deploy_usage, "create a CVM on a VMM from an app-compose.json"},
    {"ls", cmd_ls, cmd_ls_usage, "list the VMs of a VMM"},
    {"info", cmd_info, cmd_info_usage, "show one VM"},
    {"logs", cmd_logs, cmd_logs_usage, "print (or follow) a VM's console log"},
    {"stop", cmd_stop, cmd_stop_usage, "shut a VM down (--force: stop at once)"},
    {"start", cmd_start, cmd_start_usage, "start a stopped VM"},
    {"rm", cmd_rm, cmd_rm_usage, "remove a VM and its disks"},
    {"update", cmd_update, cmd_update_usage, "change a VM's compose, env, ports or URLs"},
};

void cli_errx(const char *fmt, ...)
{
    va_list ap;
    fputs("dstack: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static const struct cli_opt *cli_find_opt(const struct cli_opt *opts, const char *name,
                                          size_t name_len)
{
    for (const struct cli_opt *o = opts; o->name != NULL; o++) {
        if (strlen(o->name) == name_len && memcmp(o->name, name, name_len) == 0) {
            return o;
        }
    }
    return NULL;
}

int cli_parse_opts(const char *prog, int argc, char **argv, const struct cli_opt *opts,
                   const char **pos, int *npos, bool *help)
{
    /* Track which options were seen so that a repeated option is an error rather than a
     * silent override (e.g. two --time values). */
    bool seen[64] = {false};
    bool only_positional = false;
    *npos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!only_positional && strcmp(a, "--") == 0) {
            only_positional = true;
            continue;
        }
        if (!only_positional && (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)) {
            *help = true;
            continue;
        }
        if (only_positional || a[0] != '-' || a[1] == '\0') {
            if (*npos >= CLI_MAX_POSITIONAL) {
                cli_errx("%s: too many arguments (unexpected '%s')", prog, a);
                return CLI_EXIT_USAGE;
            }
            pos[(*npos)++] = a;
            continue;
        }
        if (a[1] != '-') {
            cli_errx("%s: unknown option '%s' (options are long, e.g. --json)", prog, a);
            return CLI_EXIT_USAGE;
        }
        const char *name = a + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq ? (size_t)(eq - name) : strlen(name);
        const struct cli_opt *o = cli_find_opt(opts, name, name_len);
        if (o == NULL) {
            cli_errx("%s: unknown option '--%.*s'", prog, (int)name_len, name);
            return CLI_EXIT_USAGE;
        }
        size_t idx = (size_t)(o - opts);
        if (idx < DS_ARRAY_SIZE(seen)) {
            if (seen[idx]) {
                cli_errx("%s: --%s: given more than once", prog, o->name);
                return CLI_EXIT_USAGE;
            }
            seen[idx] = true;
        }
        if (o->kind == CLI_OPT_FLAG) {
            if (eq != NULL) {
                cli_errx("%s: --%s: takes no value (got '%s')", prog, o->name, eq + 1);
                return CLI_EXIT_USAGE;
            }
            *(bool *)o->target = true;
            continue;
        }
        const char *val;
        if (eq != NULL) {
            val = eq + 1;
        } else if (i + 1 < argc) {
            val = argv[++i];
        } else {
            cli_errx("%s: --%s: expected %s, got nothing", prog, o->name, o->metavar);
            return CLI_EXIT_USAGE;
        }
        if (val[0] == '\0') {
            cli_errx("%s: --%s: expected %s, got an empty string", prog, o->name, o->metavar);
            return CLI_EXIT_USAGE;
        }
        *(const char **)o->target = val;
    }
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack [-v|--verbose] [--version] [-h|--help] COMMAND [ARGS...]\n\n"
                 "commands:\n");
    for (size_t i = 0; i < DS_ARRAY_SIZE(cli_cmds); i++) {
        fprintf(out, "  %-12s %s\n", cli_cmds[i].name, cli_cmds[i].summary);
    }
    fprintf(out, "\n'dstack help COMMAND' or 'dstack COMMAND --help' shows a command's usage.\n"
                 "exit codes: 0 success, 1 verification failed, 2 usage or input error\n");
}

static const struct cli_cmd *find_cmd(const char *name)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(cli_cmds); i++) {
        if (strcmp(cli_cmds[i].name, name) == 0) {
            return &cli_cmds[i];
        }
    }
    return NULL;
}

int main(int argc, char **argv)
{
    int verbose = 0;
    int i = 1;
    log_init("dstack", 0);
    for (; i < argc && argv[i][0] == '-'; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-v") == 0 || strcmp(a, "--verbose") == 0) {
            verbose++;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return CLI_EXIT_OK;
        } else if (strcmp(a, "--version") == 0) {
            printf("dstack %s\n", DS_VERSION);
            return CLI_EXIT_OK;
        } else {
            cli_errx("unknown global option '%s'", a);
            usage(stderr);
            return CLI_EXIT_USAGE;
        }
    }
    log_set_verbose(verbose);
    if (i >= argc) {
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 >= argc) {
            usage(stdout);
            return CLI_EXIT_OK;
        }
        const struct cli_cmd *c = find_cmd(argv[i + 1]);
        if (c == NULL) {
            cli_errx("help: unknown command '%s'", argv[i + 1]);
            return CLI_EXIT_USAGE;
        }
        c->usage(stdout);
        return CLI_EXIT_OK;
    }
    const struct cli_cmd *c = find_cmd(argv[i]);
    if (c == NULL) {
        cli_errx("unknown command '%s'", argv[i]);
        usage(stderr);
        return CLI_EXIT_USAGE;
    }
    return c->run(argc - i, argv + i);
}
