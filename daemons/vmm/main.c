/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-vmm: the host daemon that deploys and runs CVMs (host-side.md §1). Table of contents:
 *   vmm_config.c   vmm.toml (schema table, --check, --dump-config)
 *   vmm_state.c    VM records, crash-safe on-disk state, start/stop/remove, auto-restart
 *   vmm_images.c   guest image directories
 *   vmm_ports.c    request validation: names, port mappings
 *   vmm_api.c      the Vmm pRPC service, listeners, auth
 *   vmm_logs.c     GET /logs
 *   vmm_hostapi.c  per-VM host API (Notify, Info, GetSealingKey)
 *   vmm_guest.c    ProxiedGuestApi
 *   vmm_qemu.c     the qemu backend (vmm_backend.h)
 * Usage: dstack-vmm [-c vmm.toml] [-v] [serve | check-config] [--check] [--dump-config]
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>
#include <event2/thread.h>

#include "dstack/crypto.h"
#include "dstack/rpc.h"
#include "log.h"
#include "vmm.h"

#define TICK_MS            1000
#define DISCOVERY_FILE_MAX 4096

/*
 * The discovery file vmm-cli's `vmm ls` reads (host-side.md §1.1):
 * $XDG_RUNTIME_DIR/dstack-vmm/<uuid>.json (fallback /run/user/<uid>/dstack-vmm/), removed at
 * exit; files of VMMs that are gone are cleaned at start-up. Best effort: failures are logged.
 */
static char *discovery_dir(void)
{
    const char *xdg = getenv("XDG_RUNTIME_DIR");
    char *d = NULL;
    if (xdg && xdg[0] == '/') {
        if (asprintf(&d, "%s/dstack-vmm", xdg) < 0) {
            return NULL;
        }
    } else if (asprintf(&d, "/run/user/%u/dstack-vmm", (unsigned)getuid()) < 0) {
        return NULL;
    }
    return d;
}

static void discovery_clean(const char *dir)
{
    DIR *dd = opendir(dir);
    if (!dd) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(dd))) {
        size_t n = strlen(de->d_name);
        if (n < 6 || strcmp(de->d_name + n - 5, ".json") != 0) {
            continue;
        }
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
        json_t *j = json_load_file(path, 0, NULL);
        json_int_t pid = json_integer_value(json_object_get(j, "pid"));
        char proc[64];
        snprintf(proc, sizeof(proc), "/proc/%lld", (long long)pid);
        if (pid <= 0 || access(proc, F_OK) < 0) {
            (void)unlink(path);
        }
        json_decref(j);
    }
    closedir(dd);
}

static char *discovery_write(const struct vmm *v)
{
    char *dir = discovery_dir();
    char *path = NULL, *text = NULL;
    uint8_t raw[16];
    char id[33], cwd[PATH_MAX];
    if (!dir) {
        return NULL;
    }
    (void)mkdir(dir, 0700);
    discovery_clean(dir);
    if (ds_random(raw, sizeof(raw)) < 0 || !getcwd(cwd, sizeof(cwd))) {
        goto out;
    }
    raw[6] = (uint8_t)((raw[6] & 0x0f) | 0x40);
    raw[8] = (uint8_t)((raw[8] & 0x3f) | 0x80);
    ds_hex_encode(raw, sizeof(raw), id);
    char uuid[37];
    snprintf(uuid, sizeof(uuid), "%.8s-%.4s-%.4s-%.4s-%.12s", id, id + 8, id + 12, id + 16,
             id + 20);
    const char *addr = v->cfg.address;
    if (strncmp(addr, "tcp:", 4) == 0) {
        addr += 4; /* vmm-cli takes host:port */
    }
    char cfg_abs[PATH_MAX] = "";
    if (v->config_file && !realpath(v->config_file, cfg_abs)) {
        cfg_abs[0] = '\0';
    }
    json_t *j = json_pack("{s:s,s:i,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:I}", "id", uuid, "pid",
                          (json_int_t)getpid(), "address", addr, "working_dir", cwd, "config_file",
                          cfg_abs, "image_path", v->image_path, "run_path", v->run_path,
                          "node_name", v->cfg.node_name, "version", DS_VERSION, "started_at",
                          (json_int_t)(v->started_ms / 1000));
    text = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
    json_decref(j);
    if (!text || asprintf(&path, "%s/%s.json", dir, uuid) < 0) {
        path = NULL;
        goto out;
    }
    if (ds_write_file_atomic(path, text, strlen(text), 0600) < 0) {
        log_debug("discovery file %s not written", path);
        free(path);
        path = NULL;
    }
out:
    free(text);
    free(dir);
    return path;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: dstack-vmm [-c vmm.toml] [-v] [serve | check-config]\n"
                 "       dstack-vmm -c vmm.toml --check | --dump-config\n"
                 "  -c FILE        configuration (default: defaults only)\n"
                 "  --check        load and validate the configuration, then exit\n"
                 "  --dump-config  print the effective configuration\n"
                 "  --config-doc   print the vmm.toml key reference (Markdown)\n"
                 "  -v             debug logging\n");
}

/* "~/x" -> "$HOME/x"; then absolute (creating the directory). NULL on failure. */
static char *resolve_dir(const char *p, bool create)
{
    char buf[PATH_MAX];
    if (p[0] == '~' && (p[1] == '/' || p[1] == '\0')) {
        const char *home = getenv("HOME");
        if (!home) {
            return NULL;
        }
        snprintf(buf, sizeof(buf), "%s%s", home, p + 1);
    } else {
        snprintf(buf, sizeof(buf), "%s", p);
    }
    if (create) {
        for (char *s = buf + 1; *s; s++) {
            if (*s == '/') {
                *s = '\0';
                (void)mkdir(buf, 0750);
                *s = '/';
            }
        }
        (void)mkdir(buf, 0750);
    }
    char real[PATH_MAX];
    if (!realpath(buf, real)) {
        return create ? NULL : strdup(buf);
    }
    return strdup(real);
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    (void)what;
    log_info("signal %d: shutting down (VMs keep running)", (int)sig);
    event_base_loopexit(arg, NULL);
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct vmm *v = arg;
    vmm_state_tick(v);
    struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    evtimer_add(v->tick, &tv);
}

int main(int argc, char **argv)
{
    struct vmm v;
    const char *config = NULL;
    bool check = false, dump = false;
    int verbose = 0;
    int rc = 1;
    char err[VMM_ERR_MAX * 2];
    struct event *sigint = NULL, *sigterm = NULL;
    char *discovery = NULL;

    memset(&v, 0, sizeof(v));
    for (int i = 1; i < argc; i++) {
        if ((strcmp(argv[i], "-c") == 0 || strcmp(argv[i], "--config") == 0) && i + 1 < argc) {
            config = argv[++i];
        } else if (strcmp(argv[i], "--check") == 0 || strcmp(argv[i], "check-config") == 0) {
            check = true;
        } else if (strcmp(argv[i], "--dump-config") == 0) {
            dump = true;
        } else if (strcmp(argv[i], "--config-doc") == 0) {
            return ds_config_doc(&vmm_config_schema, stdout) < 0 ? 1 : 0;
        } else if (strcmp(argv[i], "-v") == 0) {
            verbose++;
        } else if (strcmp(argv[i], "serve") == 0) {
            continue;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("dstack-vmm v%s\n", DS_VERSION);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }
    log_init("dstack-vmm", verbose);
    if (vmm_config_load(config, &v.cfg, err, sizeof(err)) < 0) {
        fprintf(stderr, "dstack-vmm: %s\n", err);
        return 1;
    }
    if (strcmp(v.cfg.log_level, "debug") == 0 && !verbose) {
        log_set_verbose(1);
    }
    if (dump) {
        rc = ds_config_dump(&vmm_config_schema, &v.cfg, stdout) < 0 ? 1 : 0;
        vmm_config_free(&v.cfg);
        return rc;
    }
    if (check) {
        printf("%s: configuration OK\n", config ? config : "(defaults)");
        vmm_config_free(&v.cfg);
        return 0;
    }
    v.config_file = config;
    v.run_path = resolve_dir(v.cfg.run_path, true);
    v.image_path = resolve_dir(v.cfg.image_path, false);
    if (!v.run_path || !v.image_path) {
        log_warnx("cannot use run_path \"%s\" / image path \"%s\"", v.cfg.run_path,
                  v.cfg.image_path);
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    v.backend.ops = &vmm_qemu_backend;
    if (v.cfg.backend == VMM_BACKEND_SANDBOX) {
        if (&vmm_sandbox_backend == NULL) {
            log_warnx("cvm.backend = \"sandbox\" is not built into this dstack-vmm");
            goto out;
        }
        v.backend.ops = &vmm_sandbox_backend;
    }
    v.backend.cfg = &v.cfg;
    if (v.backend.ops->init && v.backend.ops->init(&v.backend) < 0) {
        log_warnx("backend %s: init failed", v.backend.ops->name);
        goto out;
    }
    if (!v.backend.ops->usable(&v.backend, err, sizeof(err))) {
        log_warnx("%s", err);
    }
    /* GetAppEnvEncryptPubKey finishes from a worker thread (vmm_api.c) */
    if (evthread_use_pthreads() < 0) {
        log_warnx("cannot make libevent thread-aware");
        goto out;
    }
    v.base = event_base_new();
    if (!v.base || ds_rpc_server_new(v.base, NULL, &v.server) < 0) {
        log_warnx("cannot create the event loop / server");
        goto out;
    }
    if (vmm_api_listen(&v) < 0) {
        goto out;
    }
    v.started_ms = vmm_now_ms();
    if (vmm_state_load_all(&v) < 0) {
        goto out;
    }
    {
        size_t n = 0;
        for (struct vmm_vm_rec *vm = v.vms; vm; vm = vm->next) {
            n++;
        }
        log_info("run dir %s: %zu VMs; images in %s", v.run_path, n, v.image_path);
    }
    v.tick = evtimer_new(v.base, on_tick, &v);
    sigint = evsignal_new(v.base, SIGINT, on_signal, v.base);
    sigterm = evsignal_new(v.base, SIGTERM, on_signal, v.base);
    struct timeval tv = {TICK_MS / 1000, (TICK_MS % 1000) * 1000};
    if (!v.tick || !sigint || !sigterm || evtimer_add(v.tick, &tv) < 0 ||
        evsignal_add(sigint, NULL) < 0 || evsignal_add(sigterm, NULL) < 0) {
        log_warnx("cannot install timers / signal handlers");
        goto out;
    }
    discovery = discovery_write(&v);
    log_info("ready");
    event_base_dispatch(v.base);
    rc = 0;
out:
    if (discovery) {
        (void)unlink(discovery);
        free(discovery);
    }
    if (sigint) {
        event_free(sigint);
    }
    if (sigterm) {
        event_free(sigterm);
    }
    if (v.tick) {
        event_free(v.tick);
    }
    vmm_api_drain();
    vmm_guest_drain();
    vmm_state_free_all(&v);
    ds_rpc_server_free(v.server);
    if (v.base) {
        event_base_free(v.base);
    }
    if (v.backend.ops && v.backend.ops->done) {
        v.backend.ops->done(&v.backend);
    }
    free(v.run_path);
    free(v.image_path);
    vmm_config_free(&v.cfg);
    curl_global_cleanup();
    return rc;
}
