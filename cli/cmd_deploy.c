/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack deploy`: create a CVM on a VMM from an app-compose.json (spec host-side.md §1.3
 * CreateVm, §1.12 vmm-cli.py deploy). The compose file is sent byte for byte, so the compose
 * hash printed here (SHA-256 of those bytes, §2.2) is the one the guest measures; the app id
 * is --app-id or the hash's first 20 bytes. With --env-file the variables are encrypted on
 * this machine to the app's KMS env key (kms-ratls.md §7) after that key's k256 signature was
 * checked against a trusted KMS key (§3.6): the VMM and the network only ever see ciphertext.
 * Also holds the helpers `dstack update` shares: --port parsing, compose loading and the env
 * encryption step.
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dstack/compose.h"
#include "dstack/keys.h"
#include "vmm_client.h"

#define DEPLOY_DEFAULT_VCPU   1
#define DEPLOY_DEFAULT_MEM_MB 1024
#define DEPLOY_DEFAULT_DISK   20
#define DEPLOY_NAME_MAX       256
#define DEPLOY_USER_CFG_MAX   (1024u * 1024)
#define PORT_SPEC_MAX         128
#define PORT_ADDR_MAX         64

void cmd_deploy_usage(FILE *out)
{
    fprintf(
        out,
        "usage: dstack deploy --name NAME --image IMAGE --compose FILE [--vcpu N]\n"
        "                     [--memory MB|2G] [--disk GB] [--port SPEC]... [--env-file FILE]\n"
        "                     [--kms-url URL]... [--kms-pubkey HEX]\n"
        "                     [--insecure-skip-kms-signature-check] [--gateway-url URL]...\n"
        "                     [--app-id HEX] [--user-config FILE] [--stopped] [--no-tee]\n"
        "                     [--wait] [--timeout SECONDS] [--json] [--url URL] [--token TOKEN]\n"
        "  Create a CVM (VMM CreateVm) from an app-compose.json sent byte for byte; prints the\n"
        "  VM id, the app id and the compose hash.\n"
        "  --compose FILE     app-compose.json (e.g. from `dstack compose`)\n"
        "  --vcpu N           virtual CPUs (default %d)\n"
        "  --memory SIZE      memory: MB, or with a unit M/G/T (default %d MB)\n"
        "  --disk GB          data disk size in GB, optional G suffix (default %d)\n"
        "  --port SPEC        tcp|udp:HOST_PORT:VM_PORT[:HOST_ADDR] (address default\n"
        "                     127.0.0.1; vmm-cli's PROTO:ADDR:HOST:VM also accepted)\n"
        "  --env-file FILE    KEY=VALUE lines, encrypted here to the app's KMS env key\n"
        "  --kms-url URL      KMS for the VM (repeatable); the first one is also asked for the\n"
        "                     env key directly (else the VMM's GetAppEnvEncryptPubKey is used)\n"
        "  --kms-pubkey HEX   trusted KMS k256 key (33 bytes compressed) the env key's\n"
        "                     signature must recover to; default: GetMeta of the first\n"
        "                     --kms-url (trust on first use, a warning is printed)\n"
        "  --app-id HEX       pin the app id (40 hex); default: first 20 bytes of compose hash\n"
        "  --stopped          create the VM without starting it\n"
        "  --wait             wait until the guest reports it booted (or failed)\n"
        "  --timeout SECONDS  limit for --wait (default %d)\n"
        "  --url URL          VMM: http(s)://HOST:PORT or unix:/PATH (env DSTACK_VMM_URL,\n"
        "                     default " VMM_DEFAULT_URL ")\n"
        "  --token TOKEN      VMM API token (env DSTACK_VMM_TOKEN; or DSTACK_VMM_AUTH_USER\n"
        "                     and DSTACK_VMM_AUTH_PASSWORD for Basic auth)\n"
        "exit codes: 0 created, 1 the VMM/KMS refused or failed, 2 usage or input error\n",
        DEPLOY_DEFAULT_VCPU, DEPLOY_DEFAULT_MEM_MB, DEPLOY_DEFAULT_DISK, VMM_WAIT_DEFAULT_S);
}

/* ---- value parsers --------------------------------------------------------------------------- */

/* Decimal 1..max, nothing else. */
int vmm_parse_uint(const char *s, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    if (s[0] == '\0') {
        return -1;
    }
    for (const char *p = s; *p != '\0'; p++) {
        if (*p < '0' || *p > '9') {
            return -1;
        }
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > max) {
            return -1;
        }
    }
    if (v == 0) {
        return -1;
    }
    *out = v;
    return 0;
}

/* "<N>[unit]" with unit M/MB (default), G/GB, T/TB (any case), whole MB; 0 or -1. */
int vmm_parse_memory_mb(const char *s, uint64_t *out)
{
    static const struct {
        const char *unit;
        uint64_t factor;
    } units[] = {{"", 1},      {"m", 1},           {"mb", 1},          {"g", 1024},
                 {"gb", 1024}, {"t", 1024 * 1024}, {"tb", 1024 * 1024}};
    char num[32], unit[4];
    size_t i = 0, len = strlen(s);
    while (i < len && s[i] >= '0' && s[i] <= '9') {
        i++;
    }
    if (i == 0 || i >= sizeof(num) || len - i >= sizeof(unit)) {
        return -1;
    }
    memcpy(num, s, i);
    num[i] = '\0';
    for (size_t k = 0; k <= len - i; k++) {
        char ch = s[i + k];
        unit[k] = ch >= 'A' && ch <= 'Z' ? (char)(ch - 'A' + 'a') : ch;
    }
    for (size_t k = 0; k < DS_ARRAY_SIZE(units); k++) {
        uint64_t v;
        if (strcmp(unit, units[k].unit) == 0 && vmm_parse_uint(num, VMM_MEMORY_MAX_MB, &v) == 0 &&
            v <= VMM_MEMORY_MAX_MB / units[k].factor) {
            *out = v * units[k].factor;
            return 0;
        }
    }
    return -1;
}

int vmm_parse_disk_gb(const char *s, uint64_t *out)
{
    char buf[32];
    size_t len = strlen(s);
    if (len == 0 || len >= sizeof(buf)) {
        return -1;
    }
    memcpy(buf, s, len + 1);
    if (len > 2 && (strcmp(buf + len - 2, "GB") == 0 || strcmp(buf + len - 2, "gb") == 0)) {
        buf[len - 2] = '\0';
    } else if (len > 1 && (buf[len - 1] == 'G' || buf[len - 1] == 'g')) {
        buf[len - 1] = '\0';
    }
    return vmm_parse_uint(buf, VMM_DISK_MAX_GB, out);
}

static bool is_port_number(const char *s)
{
    uint64_t v;
    return vmm_parse_uint(s, 65535, &v) == 0;
}

json_t *vmm_parse_port(const char *prog, const char *spec)
{
    char buf[PORT_SPEC_MAX];
    char *part[4];
    size_t n = 0;
    const char *proto, *host, *vm, *addr = "127.0.0.1";
    uint64_t hp, vp;
    if (strlen(spec) >= sizeof(buf)) {
        goto bad;
    }
    memcpy(buf, spec, strlen(spec) + 1);
    for (char *p = buf, *save = NULL; n < 4; p = NULL) {
        char *t = strtok_r(p, ":", &save);
        if (t == NULL) {
            break;
        }
        part[n++] = t;
    }
    if (n < 3 || strchr(spec, ':') == NULL) {
        goto bad;
    }
    /* Count the colons ourselves: strtok_r folds "::" and we stopped after four parts. */
    size_t colons = 0;
    for (const char *p = spec; *p != '\0'; p++) {
        colons += *p == ':';
    }
    if (colons != n - 1) {
        goto bad;
    }
    proto = part[0];
    if (n == 3) {
        host = part[1];
        vm = part[2];
    } else if (is_port_number(part[1]) && is_port_number(part[2])) {
        host = part[1]; /* tcp:HOST:VM:ADDR (the dstack-c form) */
        vm = part[2];
        addr = part[3];
    } else {
        addr = part[1]; /* tcp:ADDR:HOST:VM (vmm-cli's form) */
        host = part[2];
        vm = part[3];
    }
    if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0) {
        cli_errx("%s: --port: expected protocol tcp or udp, got '%s' in '%s'", prog, proto, spec);
        return NULL;
    }
    if (vmm_parse_uint(host, 65535, &hp) != 0 || vmm_parse_uint(vm, 65535, &vp) != 0) {
        cli_errx("%s: --port: expected ports 1..65535, got '%s'", prog, spec);
        return NULL;
    }
    if (strlen(addr) >= PORT_ADDR_MAX || strspn(addr, "0123456789.") != strlen(addr)) {
        cli_errx("%s: --port: expected an IPv4 host address, got '%s' in '%s'", prog, addr, spec);
        return NULL;
    }
    json_t *o = json_pack("{s:s, s:I, s:I, s:s}", "protocol", proto, "host_port", (json_int_t)hp,
                          "vm_port", (json_int_t)vp, "host_address", addr);
    if (o == NULL) {
        cli_errx("%s: out of memory", prog);
    }
    return o;
bad:
    cli_errx("%s: --port: expected tcp|udp:HOST_PORT:VM_PORT[:HOST_ADDR], got '%s'", prog, spec);
    return NULL;
}

int vmm_parse_vm_multi(const char *prog, const struct vmm_multi multi[3], json_t *ports)
{
    for (size_t i = 0; i < multi[0].count; i++) {
        json_t *p = vmm_parse_port(prog, multi[0].values[i]);
        if (p == NULL || json_array_append_new(ports, p) != 0) {
            return CLI_EXIT_USAGE;
        }
    }
    for (size_t k = 1; k < 3; k++) {
        for (size_t i = 0; i < multi[k].count; i++) {
            const char *u = multi[k].values[i];
            if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
                cli_errx("%s: --%s: expected an http(s):// URL, got '%s'", prog, multi[k].name, u);
                return CLI_EXIT_USAGE;
            }
        }
    }
    return 0;
}

int vmm_load_compose(const char *prog, const char *opt, const char *path, char **out_text,
                     size_t *out_len, struct ds_app_compose **out_compose)
{
    uint8_t *data = NULL;
    size_t len = 0;
    struct ds_app_compose *c = NULL;
    struct ds_compose_error cerr = {{0}, {0}};
    int r = ds_read_file(path, DS_COMPOSE_FILE_MAX, &data, &len);
    if (r < 0) {
        cli_errx("%s: %s: cannot read '%s': %s", prog, opt, path, ds_strerror(r));
        return CLI_EXIT_USAGE;
    }
    r = ds_app_compose_parse(data, len, &c, &cerr);
    if (r < 0) {
        cli_errx("%s: %s: '%s' is not a valid app-compose.json: %s%s%s", prog, opt, path,
                 cerr.field, cerr.field[0] ? ": " : "", cerr.msg[0] ? cerr.msg : ds_strerror(r));
        free(data);
        return CLI_EXIT_USAGE;
    }
    *out_text = (char *)data;
    *out_len = len;
    *out_compose = c;
    return 0;
}

/* ---- env encryption -------------------------------------------------------------------------- */

/* Decode a hex JSON member of exactly size bytes; 0, or -1 when absent/empty, -2 malformed. */
static int json_hex_exact(const json_t *o, const char *key, uint8_t *out, size_t size)
{
    const char *s = vmm_json_str(o, key);
    if (s[0] == '\0') {
        return -1;
    }
    return ds_hex_decode(s, strlen(s), out, size) == (int)size ? 0 : -2;
}

/* The trusted KMS k256 key: --kms-pubkey, else GetMeta.k256_pubkey of the KMS (TOFU). */
static int trusted_kms_key(const char *prog, const struct vmm_env_opts *o, struct vmm_client *kms,
                           uint8_t out[DS_K256_PUB_SIZE])
{
    char err[VMM_ERR_MAX];
    json_t *meta = NULL;
    if (o->kms_pubkey != NULL) {
        if (ds_hex_decode(o->kms_pubkey, strlen(o->kms_pubkey), out, DS_K256_PUB_SIZE) !=
                DS_K256_PUB_SIZE ||
            (out[0] != 2 && out[0] != 3)) {
            cli_errx("%s: --kms-pubkey: expected a compressed secp256k1 key (66 hex digits "
                     "starting 02 or 03), got '%s'",
                     prog, o->kms_pubkey);
            return CLI_EXIT_USAGE;
        }
        return 0;
    }
    if (kms == NULL) {
        cli_errx("%s: --kms-pubkey: expected the KMS k256 public key (66 hex digits, see `dstack "
                 "kms meta URL`) to check the env encryption key, or --kms-url to read it from "
                 "the KMS, or --insecure-skip-kms-signature-check",
                 prog);
        return CLI_EXIT_USAGE;
    }
    int r = vmm_call(kms, "GetMeta", NULL, &meta, err, sizeof(err));
    if (r < 0) {
        return vmm_report(prog, "KMS GetMeta", err);
    }
    r = json_hex_exact(meta, "k256_pubkey", out, DS_K256_PUB_SIZE);
    json_decref(meta);
    if (r != 0) {
        cli_errx("%s: KMS GetMeta: k256_pubkey %s", prog,
                 r == -1 ? "missing" : "is not a 33-byte hex key");
        return CLI_EXIT_FAIL;
    }
    char hex[2 * DS_K256_PUB_SIZE + 1];
    ds_hex_encode(out, DS_K256_PUB_SIZE, hex);
    fprintf(stderr,
            "dstack: %s: warning: trusting KMS k256 key 0x%s as reported by %s (not pinned; "
            "pass --kms-pubkey to pin it)\n",
            prog, hex, kms->base);
    return 0;
}

/* Fetch and check the env-encrypt key; CLI_EXIT_*. */
static int fetch_env_pubkey(const char *prog, struct vmm_client *vmm, const struct vmm_env_opts *o,
                            const uint8_t app_id[DS_APP_ID_SIZE], uint8_t out[DS_X25519_PUB_SIZE])
{
    char err[VMM_ERR_MAX], app_hex[2 * DS_APP_ID_SIZE + 1];
    struct vmm_client kms;
    bool have_kms = false;
    json_t *req = NULL, *resp = NULL;
    struct ds_env_pubkey_response pk;
    uint8_t trusted[DS_K256_PUB_SIZE], signer[DS_K256_PUB_SIZE];
    bool legacy = false;
    int rc = CLI_EXIT_FAIL, r;
    memset(&pk, 0, sizeof(pk));
    if (o->kms_url != NULL) {
        rc = vmm_client_init_kms(&kms, prog, o->kms_url);
        if (rc != 0) {
            return rc;
        }
        have_kms = true;
        rc = CLI_EXIT_FAIL;
    }
    ds_hex_encode(app_id, DS_APP_ID_SIZE, app_hex);
    req = json_pack("{s:s}", "app_id", app_hex);
    if (req == NULL) {
        goto out;
    }
    struct vmm_client *src = have_kms ? &kms : vmm;
    r = vmm_call(src, "GetAppEnvEncryptPubKey", req, &resp, err, sizeof(err));
    if (r < 0) {
        rc = vmm_report(prog, have_kms ? "KMS GetAppEnvEncryptPubKey" : "GetAppEnvEncryptPubKey",
                        err);
        goto out;
    }
    if (json_hex_exact(resp, "public_key", pk.public_key, sizeof(pk.public_key)) != 0) {
        cli_errx("%s: GetAppEnvEncryptPubKey: public_key missing or not 32 bytes of hex", prog);
        goto out;
    }
    r = json_hex_exact(resp, "signature", pk.signature, sizeof(pk.signature));
    pk.has_signature = r == 0;
    r = json_hex_exact(resp, "signature_v1", pk.signature_v1, sizeof(pk.signature_v1));
    pk.has_signature_v1 = r == 0;
    const json_t *ts = json_object_get(resp, "timestamp");
    pk.timestamp =
        json_is_integer(ts) && json_integer_value(ts) > 0 ? (uint64_t)json_integer_value(ts) : 0;
    if (o->insecure_skip_sig) {
        fprintf(stderr,
                "dstack: %s: warning: --insecure-skip-kms-signature-check: encrypting to an "
                "unverified key (whoever answered could read the env)\n",
                prog);
        memcpy(out, pk.public_key, DS_X25519_PUB_SIZE);
        rc = 0;
        goto out;
    }
    rc = trusted_kms_key(prog, o, have_kms ? &kms : NULL, trusted);
    if (rc != 0) {
        goto out;
    }
    rc = CLI_EXIT_FAIL;
    r = ds_env_pubkey_verify(&pk, app_id, (uint64_t)time(NULL), 0, signer, &legacy);
    if (r < 0) {
        cli_errx(
            "%s: the env encryption key's signature does not verify: %s%s", prog, ds_strerror(r),
            r == -DS_E_EXPIRED ? " (timestamp too old or in the future; check the clock)" : "");
        goto out;
    }
    if (!ds_ct_equal(signer, trusted, DS_K256_PUB_SIZE)) {
        char hex[2 * DS_K256_PUB_SIZE + 1];
        ds_hex_encode(signer, DS_K256_PUB_SIZE, hex);
        cli_errx("%s: the env encryption key is signed by 0x%s, not by the trusted KMS key; "
                 "refusing to encrypt",
                 prog, hex);
        goto out;
    }
    if (legacy) {
        fprintf(stderr, "dstack: %s: note: the KMS only offered the legacy (untimed) signature\n",
                prog);
    }
    memcpy(out, pk.public_key, DS_X25519_PUB_SIZE);
    rc = 0;
out:
    json_decref(req);
    json_decref(resp);
    if (have_kms) {
        vmm_client_done(&kms);
    }
    return rc;
}

int vmm_encrypt_env(const char *prog, struct vmm_client *vmm, const struct vmm_env_opts *o,
                    const uint8_t app_id[DS_APP_ID_SIZE], const struct ds_app_compose *compose,
                    char **out_hex)
{
    uint8_t *text = NULL, pub[DS_X25519_PUB_SIZE];
    size_t len = 0;
    struct ds_env_list env = {NULL, 0};
    struct ds_compose_error cerr = {{0}, {0}};
    char *hex = NULL;
    int rc = CLI_EXIT_USAGE;
    int r = ds_read_file(o->env_file, DS_ENV_FILE_MAX, &text, &len);
    if (r < 0) {
        cli_errx("%s: --env-file: cannot read '%s': %s", prog, o->env_file, ds_strerror(r));
        return CLI_EXIT_USAGE;
    }
    r = ds_env_file_parse(text, len, &env, &cerr);
    ds_wipe(text, len);
    free(text);
    if (r < 0) {
        cli_errx("%s: --env-file: '%s' %s: %s", prog, o->env_file, cerr.field,
                 cerr.msg[0] ? cerr.msg : ds_strerror(r));
        goto out;
    }
    if (compose != NULL) {
        if (ds_app_compose_key_provider(compose) != DS_KP_KMS) {
            cli_errx("%s: --env-file: the app compose does not use the KMS key provider "
                     "(kms_enabled / key_provider \"kms\"), so the guest could not decrypt the env",
                     prog);
            goto out;
        }
        for (size_t i = 0; i < env.count; i++) {
            if (!ds_app_compose_env_allowed(compose, env.vars[i].key)) {
                fprintf(stderr,
                        "dstack: %s: warning: '%s' is not in the compose's allowed_envs; the "
                        "guest will skip it\n",
                        prog, env.vars[i].key);
            }
        }
    }
    rc = fetch_env_pubkey(prog, vmm, o, app_id, pub);
    if (rc != 0) {
        goto out;
    }
    r = ds_env_encrypt_hex(pub, &env, &hex);
    if (r < 0) {
        cli_errx("%s: --env-file: cannot encrypt the env: %s", prog, ds_strerror(r));
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    *out_hex = hex;
    rc = 0;
out:
    ds_env_list_free(&env);
    return rc;
}

/* ---- deploy ---------------------------------------------------------------------------------- */

struct deploy_args {
    const char *name, *image, *compose, *vcpu, *memory, *disk, *env_file, *app_id, *kms_pubkey;
    const char *user_config, *timeout, *url, *token;
    bool stopped, json, wait, insecure_skip, no_tee;
};

static int add_strings(json_t *req, const char *key, const struct vmm_multi *m)
{
    json_t *a = json_array();
    if (a == NULL || json_object_set_new(req, key, a) != 0) {
        return -1;
    }
    for (size_t i = 0; i < m->count; i++) {
        if (json_array_append_new(a, json_string(m->values[i])) != 0) {
            return -1;
        }
    }
    return 0;
}

/* Check --name like the VMM does (§1.3) so the error names the option. */
static bool name_ok(const char *s)
{
    static const char extra[] = "-_. @~!$^()";
    if (s[0] == '\0' || strlen(s) > DEPLOY_NAME_MAX) {
        return false;
    }
    for (const char *p = s; *p != '\0'; p++) {
        bool alnum =
            (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9');
        if (!alnum && strchr(extra, *p) == NULL) {
            return false;
        }
    }
    return true;
}

int cmd_deploy(int argc, char **argv)
{
    const char *prog = "deploy";
    struct deploy_args a;
    struct vmm_multi multi[] = VMM_VM_MULTI_INIT;
    const struct cli_opt opts[] = {
        {"name", CLI_OPT_STRING, &a.name, "NAME"},
        {"image", CLI_OPT_STRING, &a.image, "IMAGE"},
        {"compose", CLI_OPT_STRING, &a.compose, "FILE"},
        {"vcpu", CLI_OPT_STRING, &a.vcpu, "N"},
        {"memory", CLI_OPT_STRING, &a.memory, "SIZE"},
        {"disk", CLI_OPT_STRING, &a.disk, "GB"},
        {"env-file", CLI_OPT_STRING, &a.env_file, "FILE"},
        {"app-id", CLI_OPT_STRING, &a.app_id, "HEX"},
        {"kms-pubkey", CLI_OPT_STRING, &a.kms_pubkey, "HEX"},
        {"user-config", CLI_OPT_STRING, &a.user_config, "FILE"},
        {"timeout", CLI_OPT_STRING, &a.timeout, "SECONDS"},
        {"url", CLI_OPT_STRING, &a.url, "URL"},
        {"token", CLI_OPT_STRING, &a.token, "TOKEN"},
        {"stopped", CLI_OPT_FLAG, &a.stopped, NULL},
        {"json", CLI_OPT_FLAG, &a.json, NULL},
        {"wait", CLI_OPT_FLAG, &a.wait, NULL},
        {"no-tee", CLI_OPT_FLAG, &a.no_tee, NULL},
        {"insecure-skip-kms-signature-check", CLI_OPT_FLAG, &a.insecure_skip, NULL},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[CLI_MAX_POSITIONAL];
    int npos = 0, rc;
    bool help = false;
    uint64_t vcpu = DEPLOY_DEFAULT_VCPU, mem = DEPLOY_DEFAULT_MEM_MB, disk = DEPLOY_DEFAULT_DISK;
    unsigned timeout = VMM_WAIT_DEFAULT_S;
    uint8_t hash[DS_COMPOSE_HASH_SIZE], app_id[DS_APP_ID_SIZE];
    char hash_hex[2 * DS_COMPOSE_HASH_SIZE + 1], app_hex[2 * DS_APP_ID_SIZE + 1];
    char err[VMM_ERR_MAX];
    char *compose_text = NULL, *env_hex = NULL, *user_cfg = NULL;
    size_t compose_len = 0;
    struct ds_app_compose *compose = NULL;
    struct vmm_client vmm;
    bool vmm_ready = false;
    json_t *req = NULL, *resp = NULL, *ports = NULL;

    memset(&a, 0, sizeof(a));
    rc = vmm_take_multi(prog, &argc, argv, multi, DS_ARRAY_SIZE(multi), NULL);
    if (rc != 0) {
        return rc;
    }
    rc = cli_parse_opts(prog, argc - 1, argv + 1, opts, pos, &npos, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        cmd_deploy_usage(stdout);
        return CLI_EXIT_OK;
    }
    rc = CLI_EXIT_USAGE;
    if (npos > 0) {
        cli_errx("%s: unexpected argument '%s' (the compose file goes in --compose)", prog, pos[0]);
        goto out;
    }
    if (a.name == NULL || !name_ok(a.name)) {
        cli_errx("%s: --name: expected a VM name of 1..%d characters from [A-Za-z0-9-_. "
                 "@~!$^()]%s%s",
                 prog, DEPLOY_NAME_MAX, a.name ? ", got " : "", a.name ? a.name : "");
        goto out;
    }
    if (a.image == NULL) {
        cli_errx("%s: --image: expected the guest image name (see the VMM's image directory)",
                 prog);
        goto out;
    }
    if (a.compose == NULL) {
        cli_errx("%s: --compose: expected an app-compose.json file (see `dstack compose`)", prog);
        goto out;
    }
    if (a.vcpu && vmm_parse_uint(a.vcpu, VMM_VCPU_MAX, &vcpu) != 0) {
        cli_errx("%s: --vcpu: expected 1..%d, got '%s'", prog, VMM_VCPU_MAX, a.vcpu);
        goto out;
    }
    if (a.memory && vmm_parse_memory_mb(a.memory, &mem) != 0) {
        cli_errx("%s: --memory: expected a size in MB or with a unit (e.g. 2048, 512M, 2G), got "
                 "'%s'",
                 prog, a.memory);
        goto out;
    }
    if (a.disk && vmm_parse_disk_gb(a.disk, &disk) != 0) {
        cli_errx("%s: --disk: expected a size in GB (e.g. 20 or 20G), got '%s'", prog, a.disk);
        goto out;
    }
    if (a.app_id != NULL &&
        ds_hex_decode(a.app_id, strlen(a.app_id), app_id, DS_APP_ID_SIZE) != DS_APP_ID_SIZE) {
        cli_errx("%s: --app-id: expected 40 hex digits (20 bytes), got '%s'", prog, a.app_id);
        goto out;
    }
    if (a.timeout != NULL && vmm_parse_timeout(prog, a.timeout, &timeout) != 0) {
        goto out;
    }
    if (a.wait && a.stopped) {
        cli_errx("%s: --wait: cannot wait for a VM created with --stopped", prog);
        goto out;
    }
    if (a.timeout != NULL && !a.wait) {
        cli_errx("%s: --timeout: only meaningful with --wait", prog);
        goto out;
    }
    if ((a.kms_pubkey || a.insecure_skip) && a.env_file == NULL) {
        cli_errx("%s: --%s: only meaningful with --env-file", prog,
                 a.kms_pubkey ? "kms-pubkey" : "insecure-skip-kms-signature-check");
        goto out;
    }
    ports = json_array();
    req = json_object();
    if (ports == NULL || req == NULL) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (vmm_parse_vm_multi(prog, multi, ports) != 0) {
        goto out;
    }
    rc = vmm_load_compose(prog, "--compose", a.compose, &compose_text, &compose_len, &compose);
    if (rc != 0) {
        goto out;
    }
    if (a.user_config != NULL) {
        uint8_t *u = NULL;
        size_t ul = 0;
        int r = ds_read_file(a.user_config, DEPLOY_USER_CFG_MAX, &u, &ul);
        if (r < 0 || memchr(u, 0, ul) != NULL) {
            cli_errx("%s: --user-config: cannot read '%s' as text: %s", prog, a.user_config,
                     r < 0 ? ds_strerror(r) : "contains NUL bytes");
            free(u);
            rc = CLI_EXIT_USAGE;
            goto out;
        }
        user_cfg = (char *)u;
    }
    ds_compose_hash(compose_text, compose_len, hash);
    if (a.app_id == NULL) {
        ds_compose_app_id(hash, app_id);
    }
    ds_hex_encode(hash, sizeof(hash), hash_hex);
    ds_hex_encode(app_id, sizeof(app_id), app_hex);

    rc = vmm_client_init(&vmm, prog, a.url, a.token);
    if (rc != 0) {
        goto out;
    }
    vmm_ready = true;
    if (a.env_file != NULL) {
        struct vmm_env_opts eo = {.env_file = a.env_file,
                                  .kms_url = multi[1].count ? multi[1].values[0] : NULL,
                                  .kms_pubkey = a.kms_pubkey,
                                  .insecure_skip_sig = a.insecure_skip};
        rc = vmm_encrypt_env(prog, &vmm, &eo, app_id, compose, &env_hex);
        if (rc != 0) {
            goto out;
        }
    }
    rc = CLI_EXIT_FAIL;
    if (json_object_set_new(req, "name", json_string(a.name)) != 0 ||
        json_object_set_new(req, "image", json_string(a.image)) != 0 ||
        json_object_set_new(req, "compose_file", json_stringn(compose_text, compose_len)) != 0 ||
        json_object_set_new(req, "vcpu", json_integer((json_int_t)vcpu)) != 0 ||
        json_object_set_new(req, "memory", json_integer((json_int_t)mem)) != 0 ||
        json_object_set_new(req, "disk_size", json_integer((json_int_t)disk)) != 0 ||
        json_object_set_new(req, "ports", json_incref(ports)) != 0 ||
        json_object_set_new(req, "encrypted_env", json_string(env_hex ? env_hex : "")) != 0 ||
        json_object_set_new(req, "user_config", json_string(user_cfg ? user_cfg : "")) != 0 ||
        add_strings(req, "kms_urls", &multi[1]) != 0 ||
        add_strings(req, "gateway_urls", &multi[2]) != 0 ||
        json_object_set_new(req, "stopped", json_boolean(a.stopped)) != 0 ||
        json_object_set_new(req, "no_tee", json_boolean(a.no_tee)) != 0 ||
        (a.app_id != NULL && json_object_set_new(req, "app_id", json_string(app_hex)) != 0)) {
        cli_errx("%s: out of memory", prog);
        goto out;
    }
    if (json_object_get(req, "compose_file") == NULL) {
        cli_errx("%s: --compose: '%s' is not UTF-8 text", prog, a.compose);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (vmm_call(&vmm, "CreateVm", req, &resp, err, sizeof(err)) < 0) {
        rc = vmm_report(prog, "CreateVm", err);
        goto out;
    }
    const char *id = vmm_json_str(resp, "id");
    if (id[0] == '\0') {
        cli_errx("%s: CreateVm: the VMM answered without a VM id", prog);
        goto out;
    }
    if (a.json) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:b}", "id", id, "name", a.name, "app_id",
                              app_hex, "compose_hash", hash_hex, "stopped", a.stopped);
        rc = cli_print_json(o);
        json_decref(o);
        if (rc != 0) {
            goto out;
        }
    } else {
        printf("VM ID: %s\nApp ID: %s\nCompose hash: %s\n", id, app_hex, hash_hex);
        fflush(stdout);
    }
    rc = a.wait ? vmm_wait(prog, &vmm, id, VMM_WAIT_BOOTED, timeout, false) : CLI_EXIT_OK;
out:
    json_decref(req);
    json_decref(resp);
    json_decref(ports);
    free(compose_text);
    if (env_hex != NULL) {
        free(env_hex); /* ciphertext: not secret */
    }
    free(user_cfg);
    ds_app_compose_free(compose);
    if (vmm_ready) {
        vmm_client_done(&vmm);
    }
    return rc;
}
