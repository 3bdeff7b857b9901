/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack compose`: write an app-compose.json from a docker-compose.yaml and options, as
 * `vmm-cli.py compose` does (spec host-side.md §1.12): the same fields, key order and
 * Python indent-4 layout (or, with --normalize, the SDK-normalised form whose hash the SDKs'
 * getComposeHash reproduces). Prints the compose hash (SHA-256 of the written bytes) and the
 * default app id (its first 20 bytes). An --env-file only contributes the names to
 * allowed_envs (the values are encrypted at deploy time) and, as in vmm-cli, needs --kms.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libfyaml.h>

#include "cli.h"
#include "dstack/compose.h"

#define SWAP_TEXT_MAX    32
#define SWAP_FRAC_DIGITS 9

struct compose_args {
    const char *name, *docker_compose, *output, *prelaunch_script, *key_provider;
    const char *key_provider_id, *env_file, *swap, *event_log_version;
    bool kms, gateway, local_key_provider, public_logs, public_sysinfo, no_instance_id;
    bool secure_time, normalize;
};

void cmd_compose_usage(FILE *out)
{
    fprintf(
        out,
        "usage: dstack compose --name NAME --docker-compose FILE --output FILE\n"
        "                      [--prelaunch-script FILE] [--kms] [--gateway]\n"
        "                      [--local-key-provider] [--key-provider none|kms|local|tpm]\n"
        "                      [--key-provider-id HEX] [--public-logs] [--public-sysinfo]\n"
        "                      [--env-file FILE] [--no-instance-id] [--secure-time]\n"
        "                      [--swap SIZE] [--event-log-version 1|2] [--normalize]\n"
        "  Create app-compose.json like vmm-cli.py compose (manifest_version 2, runner\n"
        "  docker-compose, JSON indented by 4) and print its compose hash and app id.\n"
        "  --env-file FILE        KEY=VALUE lines; the names become allowed_envs (needs --kms)\n"
        "  --swap SIZE            swap size, e.g. 4G or 512M (0 = none)\n"
        "  --key-provider-id HEX  pin the key provider (KMS root public key / SGX MR)\n"
        "  --event-log-version 2  RTMR3 event digests in the v2 form\n"
        "  --normalize            write the SDK-normalised form (sorted keys, compact) so\n"
        "                         getComposeHash(JSON.parse(file)) equals the compose hash\n");
}

/*
 * vmm-cli's parse_memory_size: "<number>[unit]" with unit M/MB (default), G/GB, T/TB in any
 * case; the size in MB must be a whole number. 0 or -1 (message printed).
 */
static int parse_swap_mb(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t factor;
    } units[] = {{"", 1},      {"M", 1},           {"MB", 1},          {"G", 1024},
                 {"GB", 1024}, {"T", 1024 * 1024}, {"TB", 1024 * 1024}};
    char unit[3] = {0};
    uint64_t whole = 0, frac = 0, scale = 1;
    size_t i = 0, len = strlen(s);
    while (len > 0 && (s[len - 1] == ' ' || s[len - 1] == '\t')) {
        len--;
    }
    while (i < len && (s[i] == ' ' || s[i] == '\t')) {
        i++;
    }
    size_t start = i;
    for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
        if (whole > (UINT64_MAX / 10) / (1024 * 1024 * 1024ull)) {
            goto bad;
        }
        whole = whole * 10 + (uint64_t)(s[i] - '0');
    }
    if (i == start) {
        goto bad;
    }
    if (i < len && s[i] == '.') {
        size_t fs = ++i;
        for (; i < len && s[i] >= '0' && s[i] <= '9'; i++) {
            if (i - fs >= SWAP_FRAC_DIGITS) {
                goto bad;
            }
            frac = frac * 10 + (uint64_t)(s[i] - '0');
            scale *= 10;
        }
        if (i == fs) {
            goto bad;
        }
    }
    if (len - i > 2) {
        goto bad;
    }
    for (size_t k = 0; i < len; i++, k++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z'))) {
            goto bad;
        }
        unit[k] = (char)(s[i] & ~0x20);
    }
    for (size_t u = 0; u < DS_ARRAY_SIZE(units); u++) {
        if (strcmp(unit, units[u].unit) == 0) {
            uint64_t f = units[u].factor;
            if ((frac * f) % scale != 0) {
                cli_errx("compose: --swap: size must be a whole number of MB (got '%s')", s);
                return -1;
            }
            *out = whole * f + (frac * f) / scale;
            return 0;
        }
    }
    cli_errx("compose: --swap: invalid size unit '%s' (use M, G or T)", unit);
    return -1;
bad:
    cli_errx("compose: --swap: expected a size such as 4G or 512M, got '%s'", s);
    return -1;
}

/* Read a whole text file given by --<opt>. 0 or -1 (message printed). */
static int read_opt_file(const char *opt, const char *path, size_t max, uint8_t **out,
                         size_t *out_len)
{
    int rc = ds_read_file(path, max, out, out_len);
    if (rc < 0) {
        cli_errx("compose: --%s: cannot read '%s': %s", opt, path, ds_strerror(rc));
        return -1;
    }
    return 0;
}

/* A warning only: vmm-cli does not look inside the YAML, docker compose does at boot. */
static void check_yaml(const char *path, const uint8_t *text, size_t len)
{
    struct fy_document *fyd = fy_document_build_from_string(NULL, (const char *)text, len);
    if (fyd == NULL) {
        fprintf(stderr,
                "dstack: compose: warning: --docker-compose: '%s' does not parse as "
                "YAML; the CVM will fail to start it\n",
                path);
        return;
    }
    fy_document_destroy(fyd);
}

static int parse_args(int argc, char **argv, struct compose_args *a, bool *help)
{
    const struct cli_opt opts[] = {
        {"name", CLI_OPT_STRING, &a->name, "the app name"},
        {"docker-compose", CLI_OPT_STRING, &a->docker_compose, "a docker-compose.yaml file"},
        {"output", CLI_OPT_STRING, &a->output, "the app-compose.json path to write"},
        {"prelaunch-script", CLI_OPT_STRING, &a->prelaunch_script, "a script file"},
        {"kms", CLI_OPT_FLAG, &a->kms, NULL},
        {"gateway", CLI_OPT_FLAG, &a->gateway, NULL},
        {"local-key-provider", CLI_OPT_FLAG, &a->local_key_provider, NULL},
        {"key-provider", CLI_OPT_STRING, &a->key_provider, "none, kms, local or tpm"},
        {"key-provider-id", CLI_OPT_STRING, &a->key_provider_id, "hex bytes"},
        {"public-logs", CLI_OPT_FLAG, &a->public_logs, NULL},
        {"public-sysinfo", CLI_OPT_FLAG, &a->public_sysinfo, NULL},
        {"env-file", CLI_OPT_STRING, &a->env_file, "a KEY=VALUE file"},
        {"no-instance-id", CLI_OPT_FLAG, &a->no_instance_id, NULL},
        {"secure-time", CLI_OPT_FLAG, &a->secure_time, NULL},
        {"swap", CLI_OPT_STRING, &a->swap, "a size such as 4G"},
        {"event-log-version", CLI_OPT_STRING, &a->event_log_version, "1 or 2"},
        {"normalize", CLI_OPT_FLAG, &a->normalize, NULL},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[CLI_MAX_POSITIONAL];
    int npos = 0;
    int rc = cli_parse_opts("compose", argc, argv, opts, pos, &npos, help);
    if (rc != 0 || *help) {
        return rc;
    }
    if (npos > 0) {
        cli_errx("compose: unexpected argument '%s' (all inputs are options)", pos[0]);
        return CLI_EXIT_USAGE;
    }
    const struct {
        const char *opt, *val, *what;
    } required[] = {{"name", a->name, "NAME"},
                    {"docker-compose", a->docker_compose, "FILE"},
                    {"output", a->output, "FILE"}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(required); i++) {
        if (required[i].val == NULL) {
            cli_errx("compose: --%s %s is required", required[i].opt, required[i].what);
            return CLI_EXIT_USAGE;
        }
    }
    return 0;
}

/* Options that need no file: key provider, event log version, swap. */
static int fill_simple_opts(const struct compose_args *a, struct ds_compose_options *o)
{
    if (a->key_provider != NULL) {
        if (ds_key_provider_parse(a->key_provider, &o->key_provider) < 0) {
            cli_errx("compose: --key-provider: expected none, kms, local or tpm, got '%s'",
                     a->key_provider);
            return CLI_EXIT_USAGE;
        }
        o->has_key_provider = true;
    }
    if (a->event_log_version != NULL) {
        if (strcmp(a->event_log_version, "1") != 0 && strcmp(a->event_log_version, "2") != 0) {
            cli_errx("compose: --event-log-version: expected 1 or 2, got '%s'",
                     a->event_log_version);
            return CLI_EXIT_USAGE;
        }
        o->event_log_version = (uint32_t)(a->event_log_version[0] - '0');
    }
    if (a->swap != NULL && parse_swap_mb(a->swap, &o->swap_mb) < 0) {
        return CLI_EXIT_USAGE;
    }
    return 0;
}

static void report(const char *output, const char *data, size_t len)
{
    uint8_t hash[DS_COMPOSE_HASH_SIZE];
    uint8_t app_id[DS_APP_ID_SIZE];
    char hash_hex[2 * DS_COMPOSE_HASH_SIZE + 1];
    char app_hex[2 * DS_APP_ID_SIZE + 1];
    ds_compose_hash(data, len, hash);
    ds_compose_app_id(hash, app_id);
    ds_hex_encode(hash, sizeof(hash), hash_hex);
    ds_hex_encode(app_id, sizeof(app_id), app_hex);
    printf("App compose file created at: %s\n", output);
    printf("Compose hash: %s\n", hash_hex);
    printf("App ID: %s\n", app_hex);
}

int cmd_compose(int argc, char **argv)
{
    struct compose_args a = {0};
    struct ds_compose_options o = {0};
    struct ds_env_list envs = {0};
    struct ds_compose_error err = {{0}, {0}};
    struct ds_app_compose *check = NULL;
    uint8_t *yaml = NULL, *script = NULL, *env_text = NULL;
    size_t yaml_len = 0, script_len = 0, env_len = 0, out_len = 0;
    const char **names = NULL;
    char *out = NULL;
    bool help = false;
    int rc = parse_args(argc - 1, argv + 1, &a, &help);
    if (help) {
        cmd_compose_usage(stdout);
        return rc == 0 ? CLI_EXIT_OK : rc;
    }
    if (rc != 0) {
        fprintf(stderr, "Try 'dstack compose --help'.\n");
        return rc;
    }
    rc = fill_simple_opts(&a, &o);
    if (rc != 0) {
        goto out;
    }
    rc = CLI_EXIT_USAGE;
    if (read_opt_file("docker-compose", a.docker_compose, DS_COMPOSE_FILE_MAX, &yaml, &yaml_len) <
        0) {
        goto out;
    }
    if (a.prelaunch_script != NULL &&
        read_opt_file("prelaunch-script", a.prelaunch_script, DS_COMPOSE_FILE_MAX, &script,
                      &script_len) < 0) {
        goto out;
    }
    if (a.env_file != NULL) {
        if (read_opt_file("env-file", a.env_file, DS_ENV_FILE_MAX, &env_text, &env_len) < 0) {
            goto out;
        }
        int prc = ds_env_file_parse(env_text, env_len, &envs, &err);
        if (prc < 0) {
            cli_errx("compose: --env-file: '%s' %s: %s", a.env_file, err.field, err.msg);
            goto out;
        }
        names = calloc(envs.count ? envs.count : 1, sizeof(*names));
        if (names == NULL) {
            cli_errx("compose: out of memory");
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        for (size_t i = 0; i < envs.count; i++) {
            names[i] = envs.vars[i].key;
        }
    }
    check_yaml(a.docker_compose, yaml, yaml_len);
    o.name = a.name;
    o.docker_compose = (const char *)yaml;
    o.docker_compose_len = yaml_len;
    o.pre_launch_script = (const char *)script;
    o.pre_launch_script_len = script_len;
    o.kms = a.kms;
    o.gateway = a.gateway;
    o.local_key_provider = a.local_key_provider;
    o.public_logs = a.public_logs;
    o.public_sysinfo = a.public_sysinfo;
    o.no_instance_id = a.no_instance_id;
    o.secure_time = a.secure_time;
    o.key_provider_id = a.key_provider_id;
    o.allowed_envs = names;
    o.allowed_env_count = envs.count;
    o.sdk_normalized = a.normalize;
    int brc = ds_compose_build(&o, &out, &out_len, &err);
    if (brc < 0) {
        cli_errx("compose: --%s: %s", err.field[0] ? err.field : "name", err.msg);
        goto out;
    }
    /* What we write must be what a guest accepts. */
    brc = ds_app_compose_parse(out, out_len, &check, &err);
    if (brc < 0) {
        cli_errx("compose: internal error: the generated compose is rejected at '%s': %s",
                 err.field, err.msg);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    brc = ds_write_file_atomic(a.output, out, out_len, 0644);
    if (brc < 0) {
        cli_errx("compose: --output: cannot write '%s': %s", a.output, ds_strerror(brc));
        goto out;
    }
    report(a.output, out, out_len);
    rc = CLI_EXIT_OK;
out:
    ds_app_compose_free(check);
    ds_env_list_free(&envs);
    if (env_text != NULL) {
        ds_wipe(env_text, env_len); /* the env file holds the secret values */
    }
    free(env_text);
    free(names);
    free(yaml);
    free(script);
    free(out);
    return rc;
}
