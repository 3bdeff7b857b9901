/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VM lifecycle subcommands on a VMM (spec host-side.md §1.3, §1.5, §1.12):
 *   ls       Status (all VMs; table or --json)
 *   info     GetInfo (one VM; fields or --json, plus the compose hash of its app-compose.json)
 *   logs     GET /logs (serial console by default; -f follows until Ctrl-C)
 *   stop     ShutdownVm (graceful, via the guest agent), StopVm with --force
 *   start    StartVm
 *   rm       RemoveVm (asynchronous on the VMM; --wait until it is gone)
 *   update   UpdateVm (compose, encrypted env, ports, KMS/gateway URLs, user config; the
 *            changes take effect at the next start)
 * and the wait loop with its progress display used by these and by `dstack deploy --wait`.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "dstack/compose.h"
#include "progress.h"
#include "vmm_client.h"

#define LOG_LINES_MAX     1000000
#define LOG_LINES_DEFAULT 100
#define USER_CONFIG_MAX   (1024u * 1024)
#define WAIT_POLL_NS      500000000L /* 0.5 s between GetInfo polls */
#define COMMON_USAGE_TAIL                                                                          \
    "  --url URL          VMM: http(s)://HOST:PORT or unix:/PATH (env DSTACK_VMM_URL, default\n"   \
    "                     " VMM_DEFAULT_URL ")\n"                                                  \
    "  --token TOKEN      VMM API token (env DSTACK_VMM_TOKEN; or DSTACK_VMM_AUTH_USER and\n"      \
    "                     DSTACK_VMM_AUTH_PASSWORD for Basic auth)\n"                              \
    "exit codes: 0 ok, 1 the VMM refused or failed (its message is printed), 2 usage error\n"

/* ---- usage ----------------------------------------------------------------------------------- */

void cmd_ls_usage(FILE *out)
{
    fprintf(
        out,
        "usage: dstack ls [--json] [--url URL] [--token TOKEN]\n"
        "  List the VMs of a VMM (Status): id, app id, name, status, uptime.\n"
        "  --json             the VMM's StatusResponse (vms[], total, ...)\n" COMMON_USAGE_TAIL);
}

void cmd_info_usage(FILE *out)
{
    fprintf(out, "usage: dstack info ID [--json] [--url URL] [--token TOKEN]\n"
                 "  Show one VM (GetInfo). --json prints the VmInfo object with an added\n"
                 "  \"compose_hash\" (SHA-256 of configuration.compose_file).\n" COMMON_USAGE_TAIL);
}

void cmd_logs_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack logs ID [-f|--follow] [-n|--lines N] [--channel serial|stdout|stderr]\n"
            "                  [--ansi] [--url URL] [--token TOKEN]\n"
            "  Print a VM's console log (GET /logs). -f keeps streaming until Ctrl-C.\n"
            "  -n, --lines N      last N lines (default %d)\n"
            "  --channel CH       serial console (default), or the VMM process' stdout/stderr\n"
            "  --ansi             keep ANSI escape sequences\n" COMMON_USAGE_TAIL,
            LOG_LINES_DEFAULT);
}

void cmd_stop_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack stop ID [-f|--force] [--wait] [--timeout S] [--json] [--url URL]\n"
            "                  [--token TOKEN]\n"
            "  Shut a VM down gracefully (ShutdownVm, through its guest agent); with --force\n"
            "  stop it at once (StopVm). --wait waits until it is stopped.\n" COMMON_USAGE_TAIL);
}

void cmd_start_usage(FILE *out)
{
    fprintf(out, "usage: dstack start ID [--wait] [--timeout S] [--json] [--url URL] [--token T]\n"
                 "  Start a stopped VM (StartVm). --wait waits until the guest reports it\n"
                 "  booted.\n" COMMON_USAGE_TAIL);
}

void cmd_rm_usage(FILE *out)
{
    fprintf(out, "usage: dstack rm ID [--wait] [--timeout S] [--json] [--url URL] [--token T]\n"
                 "  Remove a VM and its disks (RemoveVm; the VMM removes it in the background,\n"
                 "  --wait waits until it is gone).\n" COMMON_USAGE_TAIL);
}

void cmd_update_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack update ID [--compose FILE] [--env-file FILE] [--port SPEC]...\n"
            "                    [--no-ports] [--kms-url URL]... [--kms-pubkey HEX]\n"
            "                    [--insecure-skip-kms-signature-check] [--gateway-url URL]...\n"
            "                    [--user-config FILE] [--vcpu N] [--memory SIZE] [--disk GB]\n"
            "                    [--image IMAGE] [--json] [--url URL] [--token TOKEN]\n"
            "  Change a VM (UpdateVm); changes take effect at its next start. The app id never\n"
            "  changes; a new compose changes the compose hash (printed).\n"
            "  --compose FILE     new app-compose.json, sent byte for byte\n"
            "  --env-file FILE    new env, encrypted to the app's KMS env key (as in deploy)\n"
            "  --port SPEC        replace the port mappings (tcp:HOST_PORT:VM_PORT[:HOST_ADDR])\n"
            "  --no-ports         remove all port mappings\n"
            "  --kms-url URL      replace the VM's KMS URLs (the first is also asked for the env\n"
            "                     key when --env-file is given)\n"
            "  --gateway-url URL  replace the VM's gateway URLs\n"
            "  --vcpu/--memory/--disk/--image  resources (the VM must be stopped; disks only\n"
            "                     grow)\n" COMMON_USAGE_TAIL);
}

/* ---- shared ---------------------------------------------------------------------------------- */

static bool id_ok(const char *id)
{
    size_t n = strlen(id);
    return n > 0 && n <= VMM_ID_MAX &&
           strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-") == n;
}

/* Exactly one positional VM id. */
static int one_id(const char *prog, const char **pos, int npos, const char **out)
{
    if (npos != 1) {
        cli_errx("%s: ID: expected one VM id (see `dstack ls`), got %d arguments", prog, npos);
        return CLI_EXIT_USAGE;
    }
    if (!id_ok(pos[0])) {
        cli_errx("%s: ID: expected a VM id of 1..%d characters [A-Za-z0-9_-], got '%s'", prog,
                 VMM_ID_MAX, pos[0]);
        return CLI_EXIT_USAGE;
    }
    *out = pos[0];
    return 0;
}

int vmm_parse_timeout(const char *prog, const char *s, unsigned *out)
{
    unsigned long v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 6 || strspn(s, "0123456789") != n || (v = strtoul(s, NULL, 10)) == 0 ||
        v > VMM_WAIT_MAX_S) {
        cli_errx("%s: --timeout: expected seconds 1..%d, got '%s'", prog, VMM_WAIT_MAX_S, s);
        return CLI_EXIT_USAGE;
    }
    *out = (unsigned)v;
    return 0;
}

/* GetInfo: 0 with *out = info (or NULL when not found), or CLI_EXIT_FAIL (printed). */
static int get_info(const char *prog, struct vmm_client *c, const char *id, json_t **out)
{
    char err[VMM_ERR_MAX];
    json_t *req = json_pack("{s:s}", "id", id), *resp = NULL;
    if (req == NULL) {
        return CLI_EXIT_FAIL;
    }
    int r = vmm_call(c, "GetInfo", req, &resp, err, sizeof(err));
    json_decref(req);
    if (r < 0) {
        return vmm_report(prog, "GetInfo", err);
    }
    json_t *info = json_object_get(resp, "info");
    if (!json_is_true(json_object_get(resp, "found")) || !json_is_object(info)) {
        *out = NULL;
    } else {
        *out = json_incref(info);
    }
    json_decref(resp);
    return 0;
}

static bool boot_done(const char *progress)
{
    return strcmp(progress, "done") == 0 || strcmp(progress, "running") == 0 ||
           strcmp(progress, "booted") == 0;
}

int vmm_wait(const char *prog, struct vmm_client *c, const char *id, enum vmm_wait_goal goal,
             unsigned timeout_s, bool quiet)
{
    static const char *const labels[] = {"waiting for the guest to boot",
                                         "waiting for the VM to stop",
                                         "waiting for the VM to be removed"};
    struct progress p;
    char state[PROGRESS_STATE_MAX + 64] = "", result[PROGRESS_STATE_MAX + 64] = "";
    char msg[VMM_ERR_MAX] = ""; /* printed after the progress line is finished */
    int rc = CLI_EXIT_FAIL;
    progress_begin(&p, labels[goal], quiet);
    for (;;) {
        json_t *info = NULL;
        if (get_info(prog, c, id, &info) != 0) {
            snprintf(result, sizeof(result), "failed (GetInfo)");
            break;
        }
        if (info == NULL) {
            if (goal == VMM_WAIT_GONE) {
                snprintf(result, sizeof(result), "removed");
                rc = CLI_EXIT_OK;
            } else {
                snprintf(result, sizeof(result), "failed: the VM disappeared");
                snprintf(msg, sizeof(msg), "VM '%s' no longer exists", id);
            }
            break;
        }
        const char *status = vmm_json_str(info, "status");
        const char *boot = vmm_json_str(info, "boot_progress");
        const char *boot_err = vmm_json_str(info, "boot_error");
        snprintf(state, sizeof(state), "%s%s%s", status, boot[0] ? ", " : "", boot);
        progress_update(&p, state);
        bool finished = false;
        if (goal == VMM_WAIT_BOOTED) {
            if (boot_err[0] != '\0') {
                snprintf(result, sizeof(result), "boot failed");
                snprintf(msg, sizeof(msg), "VM '%s' failed to boot: %s", id, boot_err);
                finished = true;
            } else if (boot_done(boot)) {
                snprintf(result, sizeof(result), "booted");
                rc = CLI_EXIT_OK;
                finished = true;
            } else if (strcmp(status, "stopped") == 0 || strcmp(status, "exited") == 0) {
                snprintf(result, sizeof(result), "failed: %s", status);
                snprintf(msg, sizeof(msg),
                         "VM '%s' went %s before it booted (see `dstack logs %s`)", id, status, id);
                finished = true;
            }
        } else if (goal == VMM_WAIT_STOPPED &&
                   (strcmp(status, "stopped") == 0 || strcmp(status, "exited") == 0)) {
            snprintf(result, sizeof(result), "%s", status);
            rc = CLI_EXIT_OK;
            finished = true;
        }
        json_decref(info);
        if (finished) {
            break;
        }
        if (progress_elapsed(&p) >= (double)timeout_s) {
            snprintf(result, sizeof(result), "timed out");
            snprintf(msg, sizeof(msg), "VM '%s': %s: no result after %u s (last state: %s)", id,
                     labels[goal], timeout_s, state);
            break;
        }
        struct timespec ts = {0, WAIT_POLL_NS};
        nanosleep(&ts, NULL);
    }
    progress_end(&p, result);
    if (msg[0] != '\0') {
        cli_errx("%s: %s", prog, msg);
    }
    return rc;
}

struct vm_args {
    const char *url, *token, *timeout;
    bool json, wait, force;
};

/* Parse argv with the common options plus extra (may be NULL); sets the client up. */
static int vm_setup(const char *prog, int argc, char **argv, struct vm_args *a,
                    const struct cli_opt *extra, const char **out_id, bool want_id,
                    void (*usage)(FILE *), struct vmm_client *c, unsigned *timeout)
{
    struct cli_opt opts[24];
    size_t n = 0;
    const char *pos[CLI_MAX_POSITIONAL];
    int npos = 0, rc;
    bool help = false;
    opts[n++] = (struct cli_opt){"url", CLI_OPT_STRING, &a->url, "URL"};
    opts[n++] = (struct cli_opt){"token", CLI_OPT_STRING, &a->token, "TOKEN"};
    opts[n++] = (struct cli_opt){"json", CLI_OPT_FLAG, &a->json, NULL};
    for (; extra != NULL && extra->name != NULL && n + 1 < DS_ARRAY_SIZE(opts); extra++) {
        opts[n++] = *extra;
    }
    opts[n] = (struct cli_opt){NULL, 0, NULL, NULL};
    rc = cli_parse_opts(prog, argc - 1, argv + 1, opts, pos, &npos, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        usage(stdout);
        return -1;
    }
    if (want_id) {
        rc = one_id(prog, pos, npos, out_id);
        if (rc != 0) {
            return rc;
        }
    } else if (npos > 0) {
        cli_errx("%s: unexpected argument '%s'", prog, pos[0]);
        return CLI_EXIT_USAGE;
    }
    if (timeout != NULL) {
        *timeout = VMM_WAIT_DEFAULT_S;
        if (a->timeout != NULL) {
            if (!a->wait) {
                cli_errx("%s: --timeout: only meaningful with --wait", prog);
                return CLI_EXIT_USAGE;
            }
            rc = vmm_parse_timeout(prog, a->timeout, timeout);
            if (rc != 0) {
                return rc;
            }
        }
    }
    return vmm_client_init(c, prog, a->url, a->token);
}

/* ---- ls -------------------------------------------------------------------------------------- */

int cmd_ls(int argc, char **argv)
{
    const char *prog = "ls";
    struct vm_args a = {0};
    struct vmm_client c;
    char err[VMM_ERR_MAX];
    json_t *req = NULL, *resp = NULL;
    int rc = vm_setup(prog, argc, argv, &a, NULL, NULL, false, cmd_ls_usage, &c, NULL);
    if (rc != 0) {
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    req = json_pack("{s:b}", "brief", false);
    if (req == NULL || vmm_call(&c, "Status", req, &resp, err, sizeof(err)) < 0) {
        rc = vmm_report(prog, "Status", err);
        goto out;
    }
    const json_t *vms = json_object_get(resp, "vms");
    if (!json_is_array(vms)) {
        cli_errx("%s: Status: the answer has no vms list", prog);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (a.json) {
        rc = cli_print_json(resp);
        goto out;
    }
    printf("%-36s  %-40s  %-20s  %-9s  %s\n", "VM ID", "APP ID", "NAME", "STATUS", "UPTIME");
    size_t i;
    const json_t *vm;
    json_array_foreach(vms, i, vm)
    {
        printf("%-36s  %-40s  %-20s  %-9s  %s\n", vmm_json_str(vm, "id"),
               vmm_json_str(vm, "app_id"), vmm_json_str(vm, "name"), vmm_json_str(vm, "status"),
               vmm_json_str(vm, "uptime"));
    }
    rc = CLI_EXIT_OK;
out:
    json_decref(req);
    json_decref(resp);
    vmm_client_done(&c);
    return rc;
}

/* ---- info ------------------------------------------------------------------------------------ */

/* Add "compose_hash" (hex SHA-256 of configuration.compose_file) when the compose is known. */
static void add_compose_hash(json_t *info)
{
    const json_t *cfg = json_object_get(info, "configuration");
    const json_t *cf = json_is_object(cfg) ? json_object_get(cfg, "compose_file") : NULL;
    if (!json_is_string(cf) || json_string_length(cf) == 0) {
        return;
    }
    uint8_t h[DS_COMPOSE_HASH_SIZE];
    char hex[2 * DS_COMPOSE_HASH_SIZE + 1];
    ds_compose_hash(json_string_value(cf), json_string_length(cf), h);
    ds_hex_encode(h, sizeof(h), hex);
    (void)json_object_set_new(info, "compose_hash", json_string(hex));
}

static void print_field(const char *label, const char *value)
{
    if (value != NULL && value[0] != '\0') {
        printf("%-15s %s\n", label, value);
    }
}

static void print_info(const json_t *info)
{
    const json_t *cfg = json_object_get(info, "configuration");
    char buf[64];
    print_field("VM ID:", vmm_json_str(info, "id"));
    print_field("Name:", vmm_json_str(info, "name"));
    print_field("Status:", vmm_json_str(info, "status"));
    print_field("Uptime:", vmm_json_str(info, "uptime"));
    print_field("App ID:", vmm_json_str(info, "app_id"));
    print_field("Instance ID:", vmm_json_str(info, "instance_id"));
    print_field("Compose hash:", vmm_json_str(info, "compose_hash"));
    print_field("App URL:", vmm_json_str(info, "app_url"));
    if (json_is_object(cfg)) {
        print_field("Image:", vmm_json_str(cfg, "image"));
        print_field("Image Version:", vmm_json_str(info, "image_version"));
        json_int_t vcpu = json_integer_value(json_object_get(cfg, "vcpu"));
        json_int_t mem = json_integer_value(json_object_get(cfg, "memory"));
        json_int_t disk = json_integer_value(json_object_get(cfg, "disk_size"));
        snprintf(buf, sizeof(buf), "%lld", (long long)vcpu);
        print_field("vCPU:", buf);
        snprintf(buf, sizeof(buf), "%lld MB", (long long)mem);
        print_field("Memory:", buf);
        snprintf(buf, sizeof(buf), "%lld GB", (long long)disk);
        print_field("Disk:", buf);
        size_t i;
        const json_t *p;
        json_array_foreach(json_object_get(cfg, "ports"), i, p)
        {
            char line[160];
            snprintf(line, sizeof(line), "%s %s:%lld -> %lld", vmm_json_str(p, "protocol"),
                     vmm_json_str(p, "host_address"),
                     (long long)json_integer_value(json_object_get(p, "host_port")),
                     (long long)json_integer_value(json_object_get(p, "vm_port")));
            print_field(i == 0 ? "Ports:" : "", line);
        }
    }
    print_field("Boot Progress:", vmm_json_str(info, "boot_progress"));
    print_field("Boot Error:", vmm_json_str(info, "boot_error"));
    print_field("Exited At:", vmm_json_str(info, "exited_at"));
    print_field("Shutdown:", vmm_json_str(info, "shutdown_progress"));
}

int cmd_info(int argc, char **argv)
{
    const char *prog = "info";
    struct vm_args a = {0};
    struct vmm_client c;
    const char *id = NULL;
    json_t *info = NULL;
    int rc = vm_setup(prog, argc, argv, &a, NULL, &id, true, cmd_info_usage, &c, NULL);
    if (rc != 0) {
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    rc = get_info(prog, &c, id, &info);
    if (rc != 0) {
        goto out;
    }
    if (info == NULL) {
        cli_errx("%s: no VM with id '%s' (see `dstack ls`)", prog, id);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    add_compose_hash(info);
    if (a.json) {
        rc = cli_print_json(info);
    } else {
        print_info(info);
        rc = CLI_EXIT_OK;
    }
out:
    json_decref(info);
    vmm_client_done(&c);
    return rc;
}

/* ---- logs ------------------------------------------------------------------------------------ */

/*
 * Log output filter: passes the text through but drops the VMM's idle keep-alive lines
 * ("[vmm heartbeat]\n" at the start of a line), which may arrive split across chunks.
 */
struct log_sink {
    bool mid_line;   /* the last byte written was not '\n' */
    size_t held;     /* bytes of a possible heartbeat line held back */
    bool write_fail; /* stdout closed (e.g. piped into head) */
};

static const char heartbeat[] = "[vmm heartbeat]\n";

static bool emit(struct log_sink *s, const char *p, size_t n)
{
    if (n > 0 && fwrite(p, 1, n, stdout) != n) {
        s->write_fail = true;
        return false;
    }
    return true;
}

static bool write_out(const char *data, size_t len, void *ctx)
{
    struct log_sink *s = ctx;
    const size_t hb = sizeof(heartbeat) - 1;
    for (size_t i = 0; i < len; i++) {
        char ch = data[i];
        if (!s->mid_line || s->held > 0) {
            if (ch == heartbeat[s->held]) {
                if (++s->held == hb) {
                    s->held = 0; /* a whole heartbeat line: dropped */
                    s->mid_line = false;
                }
                continue;
            }
            /* Not a heartbeat after all: release what was held. */
            if (!emit(s, heartbeat, s->held)) {
                return false;
            }
            s->held = 0;
        }
        if (!emit(s, &ch, 1)) {
            return false;
        }
        s->mid_line = ch != '\n';
    }
    fflush(stdout);
    return true;
}

int cmd_logs(int argc, char **argv)
{
    const char *prog = "logs";
    static const char *const aliases[] = {"-f", "--follow", "-n", "--lines", NULL};
    struct vm_args a = {0};
    const char *lines = NULL, *channel = NULL;
    bool ansi = false;
    const struct cli_opt extra[] = {
        {"follow", CLI_OPT_FLAG, &a.wait, NULL},
        {"lines", CLI_OPT_STRING, &lines, "N"},
        {"channel", CLI_OPT_STRING, &channel, "serial|stdout|stderr"},
        {"ansi", CLI_OPT_FLAG, &ansi, NULL},
        {NULL, 0, NULL, NULL},
    };
    struct vmm_client c;
    const char *id = NULL;
    char err[VMM_ERR_MAX], path[512];
    unsigned long n = LOG_LINES_DEFAULT;
    int rc = vmm_take_multi(prog, &argc, argv, NULL, 0, aliases);
    if (rc != 0) {
        return rc;
    }
    rc = vm_setup(prog, argc, argv, &a, extra, &id, true, cmd_logs_usage, &c, NULL);
    if (rc != 0) {
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    if (a.json) {
        cli_errx("%s: --json: logs are text; use `dstack info ID --json` for VM state", prog);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    if (lines != NULL) {
        size_t l = strlen(lines);
        if (l == 0 || l > 7 || strspn(lines, "0123456789") != l ||
            (n = strtoul(lines, NULL, 10)) > LOG_LINES_MAX) {
            cli_errx("%s: --lines: expected 0..%d, got '%s'", prog, LOG_LINES_MAX, lines);
            rc = CLI_EXIT_USAGE;
            goto out;
        }
    }
    if (channel != NULL && strcmp(channel, "serial") != 0 && strcmp(channel, "stdout") != 0 &&
        strcmp(channel, "stderr") != 0) {
        cli_errx("%s: --channel: expected serial, stdout or stderr, got '%s'", prog, channel);
        rc = CLI_EXIT_USAGE;
        goto out;
    }
    /* id is [A-Za-z0-9_-] and channel one of three words: nothing to escape. */
    snprintf(path, sizeof(path), "/logs?id=%s&follow=%s&ansi=%s&lines=%lu&ch=%s", id,
             a.wait ? "true" : "false", ansi ? "true" : "false", n, channel ? channel : "serial");
    signal(SIGPIPE, SIG_IGN);
    struct log_sink sink = {0};
    int r = vmm_get_stream(&c, path, write_out, &sink, err, sizeof(err));
    /*
     * A VMM may answer a follow request as a long poll (the reply ends after an idle period
     * while the VM still runs): ask again for what is new (lines=0) until the VM stops.
     */
    while (r == 0 && a.wait && !sink.write_fail) {
        json_t *info = NULL;
        if (get_info(prog, &c, id, &info) != 0) {
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        bool running = info != NULL && strcmp(vmm_json_str(info, "status"), "running") == 0;
        json_decref(info);
        if (!running) {
            break;
        }
        snprintf(path, sizeof(path), "/logs?id=%s&follow=true&ansi=%s&lines=0&ch=%s", id,
                 ansi ? "true" : "false", channel ? channel : "serial");
        r = vmm_get_stream(&c, path, write_out, &sink, err, sizeof(err));
    }
    if (sink.held > 0) {
        (void)emit(&sink, heartbeat, sink.held);
    }
    fflush(stdout);
    if (sink.write_fail) {
        rc = CLI_EXIT_OK; /* the reader went away: not an error of ours */
    } else if (r == -DS_E_NOT_FOUND) {
        cli_errx("%s: no VM with id '%s' (see `dstack ls`)%s%s", prog, id, err[0] ? ": " : "", err);
        rc = CLI_EXIT_FAIL;
    } else if (r < 0) {
        rc = vmm_report(prog, "GET /logs", err);
    } else {
        rc = CLI_EXIT_OK;
    }
out:
    vmm_client_done(&c);
    return rc;
}

/* ---- stop / start / rm ----------------------------------------------------------------------- */

struct lifecycle {
    const char *prog;
    const char *method;
    const char *doing; /* text output without --wait: "Stopping", ... */
    const char *done;  /* with --wait: "Stopped", ... */
    enum vmm_wait_goal goal;
    void (*usage)(FILE *);
};

static int run_lifecycle(const struct lifecycle *l, int argc, char **argv, bool allow_force)
{
    static const char *const aliases[] = {"-f", "--force", NULL};
    struct vm_args a = {0};
    struct cli_opt extra[] = {
        {"wait", CLI_OPT_FLAG, &a.wait, NULL},
        {"timeout", CLI_OPT_STRING, &a.timeout, "SECONDS"},
        {"force", CLI_OPT_FLAG, &a.force, NULL},
        {NULL, 0, NULL, NULL},
    };
    struct vmm_client c;
    const char *id = NULL;
    char err[VMM_ERR_MAX];
    unsigned timeout = 0;
    json_t *req = NULL, *resp = NULL;
    int rc = vmm_take_multi(l->prog, &argc, argv, NULL, 0, allow_force ? aliases : NULL);
    if (rc != 0) {
        return rc;
    }
    if (!allow_force) {
        extra[2] = (struct cli_opt){NULL, 0, NULL, NULL};
    }
    rc = vm_setup(l->prog, argc, argv, &a, extra, &id, true, l->usage, &c, &timeout);
    if (rc != 0) {
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    const char *method = a.force ? "StopVm" : l->method;
    req = json_pack("{s:s}", "id", id);
    if (req == NULL || vmm_call(&c, method, req, &resp, err, sizeof(err)) < 0) {
        rc = vmm_report(l->prog, method, err);
        goto out;
    }
    if (a.wait) {
        rc = vmm_wait(l->prog, &c, id, l->goal, timeout, false);
        if (rc != 0) {
            goto out;
        }
    }
    if (a.json) {
        json_t *o = json_pack("{s:s, s:s, s:b}", "id", id, "action", method, "waited", a.wait);
        rc = cli_print_json(o);
        json_decref(o);
    } else {
        printf("%s VM %s\n", a.wait ? l->done : l->doing, id);
        rc = CLI_EXIT_OK;
    }
out:
    json_decref(req);
    json_decref(resp);
    vmm_client_done(&c);
    return rc;
}

int cmd_stop(int argc, char **argv)
{
    const struct lifecycle l = {"stop",    "ShutdownVm",     "Stopping",
                                "Stopped", VMM_WAIT_STOPPED, cmd_stop_usage};
    return run_lifecycle(&l, argc, argv, true);
}

int cmd_start(int argc, char **argv)
{
    const struct lifecycle l = {"start",  "StartVm",       "Starting",
                                "Booted", VMM_WAIT_BOOTED, cmd_start_usage};
    return run_lifecycle(&l, argc, argv, false);
}

int cmd_rm(int argc, char **argv)
{
    const struct lifecycle l = {"rm",      "RemoveVm",    "Removing",
                                "Removed", VMM_WAIT_GONE, cmd_rm_usage};
    return run_lifecycle(&l, argc, argv, false);
}

/* ---- update ---------------------------------------------------------------------------------- */

static int set_string_array(json_t *req, const char *key, const struct vmm_multi *m)
{
    json_t *arr = json_array();
    if (arr == NULL || json_object_set_new(req, key, arr) != 0) {
        return -1;
    }
    for (size_t i = 0; i < m->count; i++) {
        if (json_array_append_new(arr, json_string(m->values[i])) != 0) {
            return -1;
        }
    }
    return 0;
}

int cmd_update(int argc, char **argv)
{
    const char *prog = "update";
    struct vm_args a = {0};
    const char *compose_path = NULL, *env_file = NULL, *kms_pubkey = NULL, *user_config = NULL;
    const char *vcpu_s = NULL, *memory_s = NULL, *disk_s = NULL, *image = NULL;
    uint64_t vcpu = 0, memory = 0, disk = 0;
    bool no_ports = false, insecure_skip = false;
    struct vmm_multi multi[] = VMM_VM_MULTI_INIT;
    const struct cli_opt extra[] = {
        {"compose", CLI_OPT_STRING, &compose_path, "FILE"},
        {"env-file", CLI_OPT_STRING, &env_file, "FILE"},
        {"kms-pubkey", CLI_OPT_STRING, &kms_pubkey, "HEX"},
        {"user-config", CLI_OPT_STRING, &user_config, "FILE"},
        {"vcpu", CLI_OPT_STRING, &vcpu_s, "N"},
        {"memory", CLI_OPT_STRING, &memory_s, "SIZE"},
        {"disk", CLI_OPT_STRING, &disk_s, "GB"},
        {"image", CLI_OPT_STRING, &image, "IMAGE"},
        {"no-ports", CLI_OPT_FLAG, &no_ports, NULL},
        {"insecure-skip-kms-signature-check", CLI_OPT_FLAG, &insecure_skip, NULL},
        {NULL, 0, NULL, NULL},
    };
    struct vmm_client c;
    bool client_ready = false;
    const char *id = NULL;
    char err[VMM_ERR_MAX], hash_hex[2 * DS_COMPOSE_HASH_SIZE + 1] = "";
    char *compose_text = NULL, *env_hex = NULL;
    size_t compose_len = 0;
    uint8_t *ucfg = NULL;
    size_t ucfg_len = 0;
    struct ds_app_compose *compose = NULL, *cur = NULL;
    json_t *req = NULL, *resp = NULL, *info = NULL, *ports = NULL;
    int rc = vmm_take_multi(prog, &argc, argv, multi, DS_ARRAY_SIZE(multi), NULL);
    if (rc != 0) {
        return rc;
    }
    rc = vm_setup(prog, argc, argv, &a, extra, &id, true, cmd_update_usage, &c, NULL);
    if (rc != 0) {
        return rc < 0 ? CLI_EXIT_OK : rc;
    }
    client_ready = true;
    rc = CLI_EXIT_USAGE;
    if (!compose_path && !env_file && !user_config && !no_ports && multi[0].count == 0 &&
        multi[1].count == 0 && multi[2].count == 0 && !vcpu_s && !memory_s && !disk_s && !image) {
        cli_errx("%s: expected at least one of --compose, --env-file, --port, --no-ports, "
                 "--kms-url, --gateway-url, --user-config, --vcpu, --memory, --disk, --image",
                 prog);
        goto out;
    }
    if (vcpu_s && vmm_parse_uint(vcpu_s, VMM_VCPU_MAX, &vcpu) != 0) {
        cli_errx("%s: --vcpu: expected 1..%d, got '%s'", prog, VMM_VCPU_MAX, vcpu_s);
        goto out;
    }
    if (memory_s && vmm_parse_memory_mb(memory_s, &memory) != 0) {
        cli_errx("%s: --memory: expected a size in MB or with a unit (e.g. 2048, 512M, 2G), got "
                 "'%s'",
                 prog, memory_s);
        goto out;
    }
    if (disk_s && vmm_parse_disk_gb(disk_s, &disk) != 0) {
        cli_errx("%s: --disk: expected a size in GB (e.g. 20 or 20G), got '%s'", prog, disk_s);
        goto out;
    }
    if (no_ports && multi[0].count > 0) {
        cli_errx("%s: --no-ports: cannot be combined with --port", prog);
        goto out;
    }
    if ((kms_pubkey || insecure_skip) && env_file == NULL) {
        cli_errx("%s: --%s: only meaningful with --env-file", prog,
                 kms_pubkey ? "kms-pubkey" : "insecure-skip-kms-signature-check");
        goto out;
    }
    ports = json_array();
    req = json_pack("{s:s}", "id", id);
    if (ports == NULL || req == NULL) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (vmm_parse_vm_multi(prog, multi, ports) != 0) {
        goto out;
    }
    if (compose_path != NULL) {
        rc = vmm_load_compose(prog, "--compose", compose_path, &compose_text, &compose_len,
                              &compose);
        if (rc != 0) {
            goto out;
        }
        uint8_t h[DS_COMPOSE_HASH_SIZE];
        ds_compose_hash(compose_text, compose_len, h);
        ds_hex_encode(h, sizeof(h), hash_hex);
    }
    if (user_config != NULL) {
        int r = ds_read_file(user_config, USER_CONFIG_MAX, &ucfg, &ucfg_len);
        if (r < 0 || memchr(ucfg, 0, ucfg_len) != NULL || ucfg_len == 0) {
            cli_errx("%s: --user-config: cannot read '%s' as non-empty text: %s", prog, user_config,
                     r < 0 ? ds_strerror(r) : "empty or contains NUL bytes");
            rc = CLI_EXIT_USAGE;
            goto out;
        }
    }
    if (env_file != NULL) {
        /* The env is encrypted for the VM's app id, which an update never changes. */
        uint8_t app_id[DS_APP_ID_SIZE];
        rc = get_info(prog, &c, id, &info);
        if (rc != 0) {
            goto out;
        }
        if (info == NULL) {
            cli_errx("%s: no VM with id '%s' (see `dstack ls`)", prog, id);
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        const char *app_hex = vmm_json_str(info, "app_id");
        if (ds_hex_decode(app_hex, strlen(app_hex), app_id, DS_APP_ID_SIZE) != DS_APP_ID_SIZE) {
            cli_errx("%s: GetInfo: the VM's app_id '%s' is not 20 bytes of hex", prog, app_hex);
            rc = CLI_EXIT_FAIL;
            goto out;
        }
        const struct ds_app_compose *check = compose;
        if (check == NULL) {
            const json_t *cfg = json_object_get(info, "configuration");
            const json_t *cf = json_is_object(cfg) ? json_object_get(cfg, "compose_file") : NULL;
            if (json_is_string(cf) &&
                ds_app_compose_parse(json_string_value(cf), json_string_length(cf), &cur, NULL) ==
                    0) {
                check = cur;
            }
        }
        struct vmm_env_opts eo = {.env_file = env_file,
                                  .kms_url = multi[1].count ? multi[1].values[0] : NULL,
                                  .kms_pubkey = kms_pubkey,
                                  .insecure_skip_sig = insecure_skip};
        rc = vmm_encrypt_env(prog, &c, &eo, app_id, check, &env_hex);
        if (rc != 0) {
            goto out;
        }
    }
    rc = CLI_EXIT_FAIL;
    bool upd_ports = no_ports || multi[0].count > 0;
    if ((compose_text &&
         json_object_set_new(req, "compose_file", json_stringn(compose_text, compose_len)) != 0) ||
        (env_hex && json_object_set_new(req, "encrypted_env", json_string(env_hex)) != 0) ||
        (ucfg && json_object_set_new(req, "user_config",
                                     json_stringn((const char *)ucfg, ucfg_len)) != 0) ||
        json_object_set_new(req, "update_ports", json_boolean(upd_ports)) != 0 ||
        json_object_set_new(req, "ports", json_incref(ports)) != 0 ||
        json_object_set_new(req, "update_kms_urls", json_boolean(multi[1].count > 0)) != 0 ||
        set_string_array(req, "kms_urls", &multi[1]) != 0 ||
        json_object_set_new(req, "update_gateway_urls", json_boolean(multi[2].count > 0)) != 0 ||
        set_string_array(req, "gateway_urls", &multi[2]) != 0 ||
        (vcpu_s && json_object_set_new(req, "vcpu", json_integer((json_int_t)vcpu)) != 0) ||
        (memory_s && json_object_set_new(req, "memory", json_integer((json_int_t)memory)) != 0) ||
        (disk_s && json_object_set_new(req, "disk_size", json_integer((json_int_t)disk)) != 0) ||
        (image && json_object_set_new(req, "image", json_string(image)) != 0)) {
        cli_errx("%s: cannot build the request (is every file UTF-8 text?)", prog);
        goto out;
    }
    if (vmm_call(&c, "UpdateVm", req, &resp, err, sizeof(err)) < 0) {
        rc = vmm_report(prog, "UpdateVm", err);
        goto out;
    }
    /* The VMM answers with the first 40 hex of the new compose hash (host-side.md §1.3). */
    const char *echo = vmm_json_str(resp, "id");
    if (hash_hex[0] != '\0' && echo[0] != '\0' && strncmp(echo, hash_hex, strlen(echo)) != 0) {
        fprintf(stderr,
                "dstack: %s: warning: the VMM reports compose hash prefix %s, expected "
                "%.40s\n",
                prog, echo, hash_hex);
    }
    if (a.json) {
        json_t *o = json_pack("{s:s}", "id", id);
        if (o != NULL && hash_hex[0] != '\0') {
            (void)json_object_set_new(o, "compose_hash", json_string(hash_hex));
        }
        if (o != NULL) {
            (void)json_object_set_new(o, "env_updated", json_boolean(env_hex != NULL));
            (void)json_object_set_new(o, "ports_updated", json_boolean(upd_ports));
        }
        rc = cli_print_json(o);
        json_decref(o);
    } else {
        printf("Updated VM %s (takes effect at its next start)\n", id);
        if (hash_hex[0] != '\0') {
            printf("Compose hash: %s\n", hash_hex);
        }
        rc = CLI_EXIT_OK;
    }
out:
    json_decref(req);
    json_decref(resp);
    json_decref(info);
    json_decref(ports);
    free(compose_text);
    free(env_hex);
    free(ucfg);
    ds_app_compose_free(compose);
    ds_app_compose_free(cur);
    if (client_ready) {
        vmm_client_done(&c);
    }
    return rc;
}
