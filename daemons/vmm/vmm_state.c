/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VMM's VM records and their crash-safe state under run_path (host-side.md §1.4, §1.5).
 *
 * Commit points, so that a VMM killed with SIGKILL at any instant restarts with every VM
 * accounted for:
 * - CreateVm writes everything into `<run>/.creating-<id>/` (each file through
 *   ds_write_file_atomic: temp, fsync, rename, fsync dir) and then renames the directory to
 *   `<run>/<id>` and fsyncs the run dir. The rename is the commit: a `.creating-*` dir found
 *   at startup is a creation that never happened and is deleted.
 * - The desired run state is `vm-state.json` {"started": bool}, replaced atomically. At
 *   startup VMs with started=true are started and processes of VMs with started=false are
 *   stopped.
 * - RemoveVm first writes `<id>/.removing` (fsync'd). The background removal stops the
 *   process, renames the dir to `<run>/.removing-<id>` (second commit: the VM is gone) and
 *   deletes it. At startup `<id>/.removing` resumes the removal and `.removing-*` dirs are
 *   deleted.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dstack/crypto.h"
#include "log.h"
#include "vmm.h"

#define CREATING_PREFIX "/.creating-"
#define REMOVING_PREFIX "/.removing-"
#define STATE_FILE_MAX  4096

uint64_t vmm_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = (flag == FTW_DP) ? rmdir(path) : unlink(path);
    return r < 0 && errno != ENOENT ? -1 : 0;
}

static int rm_rf(const char *path)
{
    if (nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0 && errno != ENOENT) {
        return -errno;
    }
    return 0;
}

static int fsync_dir(const char *path)
{
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    int r = fsync(fd) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static char *path_join(const char *a, const char *b)
{
    char *p = NULL;
    if (asprintf(&p, "%s/%s", a, b) < 0) {
        return NULL;
    }
    return p;
}

/* ---- records --------------------------------------------------------------------------------- */

static void events_free(struct vmm_vm_rec *vm)
{
    for (size_t i = 0; i < vm->event_count; i++) {
        free(vm->events[i].event);
        free(vm->events[i].body);
    }
    free(vm->events);
    vm->events = NULL;
    vm->event_count = vm->event_head = 0;
}

static void rec_free(struct vmm_vm_rec *vm)
{
    if (!vm) {
        return;
    }
    vmm_hostapi_close(vm);
    free(vm->id);
    free(vm->workdir);
    free(vm->shared_dir);
    free(vm->serial_log);
    free(vm->stdout_log);
    free(vm->stderr_log);
    free(vm->pid_file);
    free(vm->host_api_socket);
    free(vm->tee_socket);
    json_decref(vm->manifest);
    vmm_image_free(vm->image);
    vmm_ports_free(&vm->ports);
    free(vm->boot_progress);
    free(vm->boot_error);
    free(vm->shutdown_progress);
    events_free(vm);
    free(vm);
}

static const char *mstr(const json_t *m, const char *key)
{
    const json_t *v = json_object_get(m, key);
    return json_is_string(v) ? json_string_value(v) : "";
}

static uint32_t mu32(const json_t *m, const char *key)
{
    const json_t *v = json_object_get(m, key);
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : 0;
    return n < 0 || n > UINT32_MAX ? 0 : (uint32_t)n;
}

/* Point the backend view at the manifest's values (after every manifest change). */
static int rec_apply_manifest(struct vmm *v, struct vmm_vm_rec *vm, json_t *manifest)
{
    struct vmm_ports ports = {NULL, 0};
    const json_t *pm = json_object_get(manifest, "port_map");
    size_t n = json_is_array(pm) ? json_array_size(pm) : 0;
    if (n > VMM_PORTS_MAX) {
        return -DS_E_LIMIT;
    }
    if (n) {
        ports.items = calloc(n, sizeof(*ports.items));
        if (!ports.items) {
            return -ENOMEM;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *e = json_array_get(pm, i);
        struct vmm_port_map *p = &ports.items[ports.count];
        const char *proto = mstr(e, "protocol");
        const char *addr = mstr(e, "address");
        uint32_t from = mu32(e, "from"), to = mu32(e, "to");
        if (strlen(proto) >= sizeof(p->protocol) || strlen(addr) >= sizeof(p->address) ||
            from == 0 || from > 65535 || to == 0 || to > 65535) {
            continue; /* a damaged entry maps nothing */
        }
        memcpy(p->protocol, proto, strlen(proto) + 1);
        memcpy(p->address, addr, strlen(addr) + 1);
        p->from = (uint16_t)from;
        p->to = (uint16_t)to;
        ports.count++;
    }
    struct vmm_image *img = NULL;
    char err[VMM_ERR_MAX];
    if (vmm_image_load(v->image_path, mstr(manifest, "image"), &img, err, sizeof(err)) < 0) {
        log_warnx("vm %s: %s", vm->id, err);
    }
    json_decref(vm->manifest);
    vm->manifest = manifest;
    vmm_image_free(vm->image);
    vm->image = img;
    vmm_ports_free(&vm->ports);
    vm->ports = ports;
    struct vmm_vm *b = &vm->bk;
    b->name = mstr(manifest, "name");
    b->app_id = mstr(manifest, "app_id");
    b->vcpu = mu32(manifest, "vcpu");
    b->memory_mb = mu32(manifest, "memory");
    b->disk_gb = mu32(manifest, "disk_size");
    b->hugepages = json_is_true(json_object_get(manifest, "hugepages"));
    b->pin_numa = json_is_true(json_object_get(manifest, "pin_numa"));
    b->no_tee = json_is_true(json_object_get(manifest, "no_tee"));
    const json_t *sim = json_object_get(manifest, "simulated_tee");
    b->simulated_tee = json_is_string(sim) ? json_string_value(sim) : NULL;
    b->tee_device_socket = b->simulated_tee ? vm->tee_socket : NULL;
    b->image = vm->image;
    b->ports = vm->ports.items;
    b->port_count = vm->ports.count;
    return 0;
}

static int rec_new(struct vmm *v, const char *id, json_t *manifest, struct vmm_vm_rec **out)
{
    struct vmm_vm_rec *vm = calloc(1, sizeof(*vm));
    int r = -ENOMEM;
    if (!vm) {
        return -ENOMEM;
    }
    vm->id = strdup(id);
    vm->workdir = path_join(v->run_path, id);
    if (!vm->id || !vm->workdir) {
        goto fail;
    }
    vm->shared_dir = path_join(vm->workdir, "shared");
    vm->serial_log = path_join(vm->workdir, "serial.log");
    vm->stdout_log = path_join(vm->workdir, "stdout.log");
    vm->stderr_log = path_join(vm->workdir, "stderr.log");
    vm->pid_file = path_join(vm->workdir, "vm.pid");
    vm->host_api_socket = path_join(vm->workdir, "host-api.sock");
    vm->tee_socket = path_join(vm->workdir, "tee-device.sock");
    vm->boot_progress = strdup("");
    vm->boot_error = strdup("");
    vm->shutdown_progress = strdup("");
    if (!vm->shared_dir || !vm->serial_log || !vm->stdout_log || !vm->stderr_log || !vm->pid_file ||
        !vm->host_api_socket || !vm->boot_progress || !vm->boot_error || !vm->shutdown_progress) {
        goto fail;
    }
    size_t cap = (size_t)v->cfg.event_buffer_size;
    vm->events = calloc(cap ? cap : 1, sizeof(*vm->events));
    if (!vm->events) {
        goto fail;
    }
    struct vmm_vm *b = &vm->bk;
    b->id = vm->id;
    b->workdir = vm->workdir;
    b->shared_dir = vm->shared_dir;
    b->serial_log = vm->serial_log;
    b->stdout_log = vm->stdout_log;
    b->stderr_log = vm->stderr_log;
    b->pid_file = vm->pid_file;
    b->host_api_socket = vm->host_api_socket;
    if ((r = rec_apply_manifest(v, vm, manifest)) < 0) {
        goto fail;
    }
    *out = vm;
    return 0;
fail:
    if (!vm || vm->manifest != manifest) {
        json_decref(manifest);
    }
    rec_free(vm);
    return r;
}

static void rec_link(struct vmm *v, struct vmm_vm_rec *vm)
{
    vm->next = v->vms;
    v->vms = vm;
}

static void rec_unlink(struct vmm *v, struct vmm_vm_rec *vm)
{
    for (struct vmm_vm_rec **pp = &v->vms; *pp; pp = &(*pp)->next) {
        if (*pp == vm) {
            *pp = vm->next;
            return;
        }
    }
}

struct vmm_vm_rec *vmm_vm_find(struct vmm *v, const char *id)
{
    for (struct vmm_vm_rec *vm = v->vms; vm; vm = vm->next) {
        if (strcmp(vm->id, id) == 0) {
            return vm;
        }
    }
    return NULL;
}

void vmm_state_free_all(struct vmm *v)
{
    while (v->vms) {
        struct vmm_vm_rec *vm = v->vms;
        v->vms = vm->next;
        rec_free(vm);
    }
}

void vmm_vm_event(struct vmm *v, struct vmm_vm_rec *vm, const char *event, const char *body)
{
    size_t cap = (size_t)v->cfg.event_buffer_size;
    struct vmm_event_rec e = {strdup(event), strdup(body), vmm_now_ms()};
    if (!e.event || !e.body || cap == 0) {
        free(e.event);
        free(e.body);
        return;
    }
    if (vm->event_count < cap) {
        vm->events[(vm->event_head + vm->event_count) % cap] = e;
        vm->event_count++;
    } else {
        free(vm->events[vm->event_head].event);
        free(vm->events[vm->event_head].body);
        vm->events[vm->event_head] = e;
        vm->event_head = (vm->event_head + 1) % cap;
    }
}

const char *vmm_vm_status(const struct vmm_vm_rec *vm)
{
    if (vm->removing) {
        return "removing";
    }
    if (vm->started) {
        return vm->running ? "running" : "exited";
    }
    return vm->running ? "stopping" : "stopped";
}

/* ---- files ----------------------------------------------------------------------------------- */

static int write_json_file(const char *dir, const char *name, const json_t *j)
{
    char *text = json_dumps(j, JSON_INDENT(2) | JSON_ENSURE_ASCII);
    char *path = path_join(dir, name);
    int r = -ENOMEM;
    if (text && path) {
        r = ds_write_file_atomic(path, text, strlen(text), 0644);
    }
    free(text);
    free(path);
    return r;
}

static int write_state(const char *dir, bool started)
{
    json_t *s = json_pack("{s:b}", "started", started);
    int r = s ? write_json_file(dir, "vm-state.json", s) : -ENOMEM;
    json_decref(s);
    return r;
}

int vmm_state_set_started(struct vmm_vm_rec *vm, bool started)
{
    int r = write_state(vm->workdir, started);
    if (r == 0) {
        vm->started = started;
    }
    return r;
}

int vmm_state_write_manifest(struct vmm *v, struct vmm_vm_rec *vm, json_t *manifest, char *err,
                             size_t err_size)
{
    int r = write_json_file(vm->workdir, "vm-manifest.json", manifest);
    if (r < 0) {
        snprintf(err, err_size, "failed to write vm-manifest.json: %s", ds_strerror(r));
        json_decref(manifest);
        return r;
    }
    r = rec_apply_manifest(v, vm, manifest);
    if (r < 0) {
        json_decref(manifest);
        snprintf(err, err_size, "failed to apply manifest: %s", ds_strerror(r));
    }
    return r;
}

int vmm_state_write_shared(struct vmm_vm_rec *vm, const char *name, const void *data, size_t len)
{
    char *path = path_join(vm->shared_dir, name);
    if (!path) {
        return -ENOMEM;
    }
    int r = ds_write_file_atomic(path, data, len, 0644);
    free(path);
    return r;
}

char *vmm_state_read_shared(const struct vmm_vm_rec *vm, const char *name, size_t max,
                            size_t *out_len)
{
    char *path = path_join(vm->shared_dir, name);
    uint8_t *data = NULL;
    size_t len = 0;
    if (!path) {
        return NULL;
    }
    int r = ds_read_file(path, max, &data, &len);
    free(path);
    if (r < 0) {
        return NULL;
    }
    char *s = realloc(data, len + 1);
    if (!s) {
        free(data);
        return NULL;
    }
    s[len] = '\0';
    if (out_len) {
        *out_len = len;
    }
    return s;
}

/* ---- create ---------------------------------------------------------------------------------- */

static int write_in(const char *dir, const char *name, const void *data, size_t len)
{
    char *path = path_join(dir, name);
    if (!path) {
        return -ENOMEM;
    }
    int r = ds_write_file_atomic(path, data, len, 0644);
    free(path);
    return r;
}

int vmm_state_create(struct vmm *v, const struct vmm_create *c, struct vmm_vm_rec **out, char *err,
                     size_t err_size)
{
    const char *id = json_string_value(json_object_get(c->manifest, "id"));
    char *tmp = NULL, *final = NULL, *shared = NULL;
    json_t *manifest = NULL;
    struct vmm_vm_rec *vm = NULL;
    int r = -ENOMEM;

    if (asprintf(&tmp, "%s" CREATING_PREFIX "%s", v->run_path, id) < 0) {
        tmp = NULL;
        goto out;
    }
    final = path_join(v->run_path, id);
    shared = tmp ? path_join(tmp, "shared") : NULL;
    if (!final || !shared) {
        goto out;
    }
    if (mkdir(tmp, 0750) < 0 || mkdir(shared, 0755) < 0) {
        r = -errno;
        snprintf(err, err_size, "failed to create the VM directory: %s", strerror(errno));
        goto out;
    }
    char info[128];
    snprintf(info, sizeof(info), "{\"app_id\":\"%s\"}", c->app_id);
    if ((r = write_in(shared, "app-compose.json", c->compose, c->compose_len)) < 0 ||
        (c->encrypted_env_len &&
         (r = write_in(shared, ".encrypted-env", c->encrypted_env, c->encrypted_env_len)) < 0) ||
        (c->user_config[0] &&
         (r = write_in(shared, ".user-config", c->user_config, strlen(c->user_config))) < 0) ||
        (r = write_in(shared, ".instance_info", info, strlen(info))) < 0 ||
        (r = write_json_file(tmp, "vm-manifest.json", c->manifest)) < 0 ||
        (r = write_state(tmp, c->started)) < 0 || (r = fsync_dir(shared)) < 0 ||
        (r = fsync_dir(tmp)) < 0) {
        snprintf(err, err_size, "failed to write the VM state: %s", ds_strerror(r));
        goto out;
    }
    /* the commit point */
    if (rename(tmp, final) < 0) {
        r = -errno;
        snprintf(err, err_size, "failed to commit the VM directory: %s", strerror(errno));
        goto out;
    }
    if ((r = fsync_dir(v->run_path)) < 0) {
        log_warnx("fsync %s: %s", v->run_path, ds_strerror(r));
    }
    manifest = json_deep_copy(c->manifest);
    if (!manifest || (r = rec_new(v, id, manifest, &vm)) < 0) {
        r = manifest ? r : -ENOMEM;
        manifest = NULL; /* rec_new consumed or it is NULL */
        snprintf(err, err_size, "failed to load the new VM: %s", ds_strerror(r));
        /* roll back the committed directory: the caller sees a failure */
        if (rm_rf(final) < 0) {
            log_warnx("vm %s: cleanup failed", id);
        }
        goto out;
    }
    vm->started = c->started;
    rec_link(v, vm);
    if (vmm_hostapi_open(v, vm) < 0) {
        log_warnx("vm %s: host API socket unavailable", id);
    }
    *out = vm;
    r = 0;
out:
    if (r < 0 && tmp) {
        (void)rm_rf(tmp);
    }
    free(tmp);
    free(final);
    free(shared);
    return r;
}

/* ---- load ------------------------------------------------------------------------------------ */

static int read_json(const char *dir, const char *name, size_t max, json_t **out)
{
    char *path = path_join(dir, name);
    uint8_t *data = NULL;
    size_t len = 0;
    if (!path) {
        return -ENOMEM;
    }
    int r = ds_read_file(path, max, &data, &len);
    free(path);
    if (r < 0) {
        return r;
    }
    json_t *j = json_loadb((const char *)data, len, 0, NULL);
    free(data);
    if (!json_is_object(j)) {
        json_decref(j);
        return -DS_E_FORMAT;
    }
    *out = j;
    return 0;
}

static bool file_exists(const char *dir, const char *name)
{
    char *p = path_join(dir, name);
    bool e = p && access(p, F_OK) == 0;
    free(p);
    return e;
}

/* Load <run>/<id>; 0 and *out, or negative (logged by the caller). */
static int load_one(struct vmm *v, const char *id, struct vmm_vm_rec **out)
{
    char *dir = path_join(v->run_path, id);
    json_t *manifest = NULL, *state = NULL;
    int r = -ENOMEM;
    if (!dir) {
        return -ENOMEM;
    }
    if ((r = read_json(dir, "vm-manifest.json", VMM_MANIFEST_MAX, &manifest)) < 0) {
        goto out;
    }
    if (strcmp(mstr(manifest, "id"), id) != 0) {
        r = -DS_E_MISMATCH;
        goto out;
    }
    bool started = false;
    if (read_json(dir, "vm-state.json", STATE_FILE_MAX, &state) == 0) {
        started = json_is_true(json_object_get(state, "started"));
    }
    struct vmm_vm_rec *vm = NULL;
    r = rec_new(v, id, manifest, &vm);
    manifest = NULL;
    if (r < 0) {
        goto out;
    }
    vm->started = started;
    vm->removing = file_exists(dir, ".removing");
    *out = vm;
    r = 0;
out:
    json_decref(manifest);
    json_decref(state);
    free(dir);
    return r;
}

/* Finish a committed removal or discard an uncommitted creation. */
static void sweep_entry(struct vmm *v, const char *name)
{
    if (strncmp(name, ".creating-", 10) == 0 || strncmp(name, ".removing-", 10) == 0) {
        char *p = path_join(v->run_path, name);
        if (p) {
            log_info("run dir: deleting leftover %s", name);
            if (rm_rf(p) < 0) {
                log_warnx("cannot delete %s", p);
            }
            free(p);
        }
    }
}

/* After loading a record: reconcile the process with the desired state. */
static void reconcile(struct vmm *v, struct vmm_vm_rec *vm)
{
    char err[VMM_ERR_MAX];
    vmm_vm_poll(v, vm);
    if (vm->removing) {
        return; /* the tick finishes it */
    }
    if (vm->started && !vm->running) {
        if (vmm_vm_start(v, vm, err, sizeof(err)) < 0) {
            log_warnx("vm %s: auto-start failed: %s", vm->id, err);
            vmm_vm_event(v, vm, "vmm.start.error", err);
        } else {
            log_info("vm %s: started (desired state running)", vm->id);
        }
    } else if (!vm->started && vm->running) {
        log_info("vm %s: stopping (desired state stopped)", vm->id);
        if (vmm_vm_stop(v, vm, false, err, sizeof(err)) < 0) {
            log_warnx("vm %s: stop failed: %s", vm->id, err);
        }
    }
}

int vmm_state_load_all(struct vmm *v)
{
    if (mkdir(v->run_path, 0750) < 0 && errno != EEXIST) {
        int r = -errno;
        log_warn("run_path %s", v->run_path);
        return r;
    }
    DIR *d = opendir(v->run_path);
    if (!d) {
        int r = -errno;
        log_warn("run_path %s", v->run_path);
        return r;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') {
            sweep_entry(v, de->d_name);
            continue;
        }
        if (!vmm_vm_id_valid(de->d_name)) {
            continue;
        }
        struct vmm_vm_rec *vm = NULL;
        int r = load_one(v, de->d_name, &vm);
        if (r < 0) {
            log_warnx("run dir: skipping %s: %s", de->d_name, ds_strerror(r));
            continue;
        }
        rec_link(v, vm);
    }
    closedir(d);
    for (struct vmm_vm_rec *vm = v->vms; vm; vm = vm->next) {
        if (!vm->removing && vmm_hostapi_open(v, vm) < 0) {
            log_warnx("vm %s: host API socket unavailable", vm->id);
        }
        reconcile(v, vm);
    }
    return 0;
}

int vmm_state_reload(struct vmm *v, unsigned *out_loaded, unsigned *out_updated,
                     unsigned *out_removed)
{
    unsigned loaded = 0, updated = 0, removed = 0;
    /* records whose directory is gone */
    for (struct vmm_vm_rec *vm = v->vms, *next; vm; vm = next) {
        next = vm->next;
        struct stat st;
        if (stat(vm->workdir, &st) < 0 && !vm->running) {
            rec_unlink(v, vm);
            rec_free(vm);
            removed++;
        }
    }
    DIR *d = opendir(v->run_path);
    if (!d) {
        return -errno;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.' || !vmm_vm_id_valid(de->d_name)) {
            continue;
        }
        struct vmm_vm_rec *old = vmm_vm_find(v, de->d_name);
        if (old) {
            json_t *m = NULL;
            if (read_json(old->workdir, "vm-manifest.json", VMM_MANIFEST_MAX, &m) == 0 &&
                strcmp(mstr(m, "id"), old->id) == 0 && !json_equal(m, old->manifest)) {
                if (rec_apply_manifest(v, old, m) == 0) {
                    updated++;
                    m = NULL;
                }
            }
            json_decref(m);
            continue;
        }
        struct vmm_vm_rec *vm = NULL;
        if (load_one(v, de->d_name, &vm) == 0) {
            rec_link(v, vm);
            if (!vm->removing && vmm_hostapi_open(v, vm) < 0) {
                log_warnx("vm %s: host API socket unavailable", vm->id);
            }
            vmm_vm_poll(v, vm);
            loaded++;
        }
    }
    closedir(d);
    *out_loaded = loaded;
    *out_updated = updated;
    *out_removed = removed;
    return 0;
}

/* ---- run state ------------------------------------------------------------------------------- */

/* vm_config.host_share_mode: what the guest is told to look for (sandbox: a bound directory) */
static const char *share_mode_name(const struct vmm *v)
{
    static const char *const names[] = {"9p", "vhd", "vvfat"};
    if (v->cfg.backend == VMM_BACKEND_SANDBOX) {
        return "dir";
    }
    int m = v->cfg.host_share_mode;
    return m >= 0 && (size_t)m < DS_ARRAY_SIZE(names) ? names[m] : "9p";
}

void vmm_vm_poll(struct vmm *v, struct vmm_vm_rec *vm)
{
    pid_t pid = 0;
    bool running = v->backend.ops->is_running(&v->backend, &vm->bk, &pid);
    if (vm->running && !running) {
        vm->exit_ms = vmm_now_ms();
        log_info("vm %s: process %d exited", vm->id, (int)vm->pid);
    }
    if (running && !vm->running && vm->start_ms == 0) {
        vm->start_ms = vmm_now_ms(); /* adopted after a restart */
    }
    vm->running = running;
    vm->pid = running ? pid : 0;
}

static uint32_t alloc_cid(struct vmm *v, const struct vmm_vm_rec *self)
{
    for (int64_t c = v->cfg.cid_start; c < v->cfg.cid_start + v->cfg.cid_pool_size; c++) {
        bool used = false;
        for (const struct vmm_vm_rec *vm = v->vms; vm; vm = vm->next) {
            if (vm != self && vm->running && vm->bk.cid == (uint32_t)c) {
                used = true;
                break;
            }
        }
        if (!used) {
            return (uint32_t)c;
        }
    }
    return 0;
}

static json_t *strv_json(const json_t *manifest_list, const struct ds_config_strv *def)
{
    if (json_is_array(manifest_list) && json_array_size(manifest_list) > 0) {
        return json_deep_copy(manifest_list);
    }
    json_t *a = json_array();
    for (size_t i = 0; a && i < def->count; i++) {
        json_array_append_new(a, json_string(def->items[i]));
    }
    return a;
}

/* .sys-config.json, regenerated at every start (§1.4). */
static int write_sys_config(struct vmm *v, struct vmm_vm_rec *vm)
{
    const struct vmm_image *img = vm->image;
    json_t *vmc = json_pack(
        "{s:s,s:i,s:I,s:b,s:i,s:i,s:I,s:b,s:s,s:s,s:i}", "os_image_hash",
        img->os_image_hash ? img->os_image_hash : "", "cpu_count", (json_int_t)vm->bk.vcpu,
        "memory_size", (json_int_t)vm->bk.memory_mb * 1024 * 1024, "hugepages", vm->bk.hugepages,
        "num_gpus", 0, "num_nvswitches", 0, "pci_hole64_size", (json_int_t)0, "hotplug_off", 0,
        "image", img->name, "host_share_mode", share_mode_name(v), "spec_version", 1);
    char *vmc_text = vmc ? json_dumps(vmc, JSON_COMPACT) : NULL;
    char host_api_url[128];
    if (v->cfg.backend == VMM_BACKEND_SANDBOX) {
        snprintf(host_api_url, sizeof(host_api_url), "unix:/dstack/.host-api.sock");
    } else {
        snprintf(host_api_url, sizeof(host_api_url), "vsock://2:%lld/api",
                 (long long)v->cfg.host_api_port);
    }
    json_t *sc =
        vmc_text
            ? json_pack(
                  "{s:o,s:o,s:s,s:{s:s},s:n,s:s,s:s,s:s}", "kms_urls",
                  strv_json(json_object_get(vm->manifest, "kms_urls"), &v->cfg.kms_urls),
                  "gateway_urls",
                  strv_json(json_object_get(vm->manifest, "gateway_urls"), &v->cfg.gateway_urls),
                  "pccs_url", v->cfg.pccs_url, "collateral_urls", "pccs", v->cfg.pccs_url,
                  "nvidia_attestation_proxy_url", "docker_registry", v->cfg.docker_registry,
                  "host_api_url", host_api_url, "vm_config", vmc_text)
            : NULL;
    int r = -ENOMEM;
    if (sc) {
        char *text = json_dumps(sc, JSON_INDENT(2) | JSON_ENSURE_ASCII);
        r = text ? vmm_state_write_shared(vm, ".sys-config.json", text, strlen(text)) : -ENOMEM;
        free(text);
    }
    json_decref(sc);
    json_decref(vmc);
    free(vmc_text);
    return r;
}

/* Rotate a log over max_bytes (name -> name.1 -> ... name.N) and append the boot separator. */
static void rotate_log(struct vmm *v, const char *path, bool separator)
{
    struct stat st;
    if (stat(path, &st) == 0 && (uint64_t)st.st_size > v->cfg.log_max_bytes) {
        char from[PATH_MAX], to[PATH_MAX];
        for (int64_t i = v->cfg.log_max_backups; i >= 1; i--) {
            snprintf(to, sizeof(to), "%s.%lld", path, (long long)i);
            if (i == 1) {
                snprintf(from, sizeof(from), "%s", path);
            } else {
                snprintf(from, sizeof(from), "%s.%lld", path, (long long)(i - 1));
            }
            (void)rename(from, to);
        }
        if (v->cfg.log_max_backups == 0) {
            (void)unlink(path);
        }
    }
    if (!separator) {
        return;
    }
    FILE *f = fopen(path, "ae");
    if (f) {
        char ts[64];
        time_t now = time(NULL);
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
        fprintf(f, "\n===== boot @ %s =====\n", ts);
        fclose(f);
    }
}

int vmm_vm_start(struct vmm *v, struct vmm_vm_rec *vm, char *err, size_t err_size)
{
    const struct vmm_backend *b = &v->backend;
    if (vm->removing) {
        snprintf(err, err_size, "VM is being removed");
        return -DS_E_STATE;
    }
    vmm_vm_poll(v, vm);
    if (vm->running) {
        return 0;
    }
    if (!b->ops->usable(b, err, err_size)) {
        return -DS_E_UNSUPPORTED;
    }
    if (!vm->image) {
        char ierr[VMM_ERR_MAX];
        int r = vmm_image_load(v->image_path, mstr(vm->manifest, "image"), &vm->image, ierr,
                               sizeof(ierr));
        if (r < 0) {
            snprintf(err, err_size, "cannot start VM: %s", ierr);
            return r;
        }
        vm->bk.image = vm->image;
    }
    unsigned major = 0, minor = 0;
    if (sscanf(vm->image->version, "%u.%u", &major, &minor) != 2 || (major == 0 && minor < 5)) {
        snprintf(err, err_size, "image %s version \"%s\" is not supported (need >= 0.5.0)",
                 vm->image->name, vm->image->version);
        return -DS_E_UNSUPPORTED;
    }
    uint32_t cid = alloc_cid(v, vm);
    if (cid == 0) {
        snprintf(err, err_size, "no free CID (cvm.cid_pool_size reached)");
        return -DS_E_LIMIT;
    }
    vm->bk.cid = cid;
    int r = write_sys_config(v, vm);
    if (r < 0) {
        snprintf(err, err_size, "failed to write .sys-config.json: %s", ds_strerror(r));
        return r;
    }
    rotate_log(v, vm->serial_log, true);
    rotate_log(v, vm->stdout_log, false);
    rotate_log(v, vm->stderr_log, false);
    if ((r = b->ops->prepare(&v->backend, &vm->bk, err, err_size)) < 0) {
        return r;
    }
    pid_t pid = 0;
    if ((r = b->ops->start(&v->backend, &vm->bk, &pid, err, err_size)) < 0) {
        return r;
    }
    vm->pid = pid;
    vm->running = true;
    vm->start_ms = vmm_now_ms();
    vm->exit_ms = 0;
    free(vm->boot_progress);
    vm->boot_progress = strdup(vm->image->shared_ro ? "booting" : "N/A");
    free(vm->boot_error);
    vm->boot_error = strdup("");
    free(vm->shutdown_progress);
    vm->shutdown_progress = strdup("");
    if (!vm->boot_progress || !vm->boot_error || !vm->shutdown_progress) {
        return -ENOMEM;
    }
    return 0;
}

int vmm_vm_stop(struct vmm *v, struct vmm_vm_rec *vm, bool graceful, char *err, size_t err_size)
{
    vmm_vm_poll(v, vm);
    if (!vm->running) {
        return 0;
    }
    int r = v->backend.ops->stop(&v->backend, &vm->bk, graceful, err, err_size);
    if (r == 0 && !graceful) {
        vmm_vm_poll(v, vm);
    }
    return r;
}

/* ---- removal --------------------------------------------------------------------------------- */

int vmm_state_begin_remove(struct vmm *v, struct vmm_vm_rec *vm)
{
    (void)v;
    if (vm->removing) {
        return 0;
    }
    char *p = path_join(vm->workdir, ".removing");
    if (!p) {
        return -ENOMEM;
    }
    int r = ds_write_file_atomic(p, "", 0, 0644);
    free(p);
    if (r == 0) {
        vm->removing = true;
    }
    return r;
}

/* Returns true when the record was freed. */
static bool continue_remove(struct vmm *v, struct vmm_vm_rec *vm)
{
    char err[VMM_ERR_MAX];
    vmm_vm_poll(v, vm);
    if (vm->running) {
        if (vmm_vm_stop(v, vm, false, err, sizeof(err)) < 0) {
            log_warnx("vm %s: stop for removal: %s", vm->id, err);
        }
        if (vm->running) {
            return false; /* poll again at the next tick */
        }
    }
    vmm_hostapi_close(vm);
    v->backend.ops->destroy(&v->backend, &vm->bk);
    char *gone = NULL;
    if (asprintf(&gone, "%s" REMOVING_PREFIX "%s", v->run_path, vm->id) < 0) {
        return false;
    }
    if (rename(vm->workdir, gone) < 0 && errno != ENOENT) {
        log_warn("vm %s: rename for removal", vm->id);
        free(gone);
        return false;
    }
    (void)fsync_dir(v->run_path);
    if (rm_rf(gone) < 0) {
        log_warnx("vm %s: deleting %s failed (retried at next start)", vm->id, gone);
    }
    free(gone);
    log_info("vm %s: removed", vm->id);
    rec_unlink(v, vm);
    rec_free(vm);
    return true;
}

static void auto_restart(struct vmm *v, struct vmm_vm_rec *vm, uint64_t now)
{
    const struct vmm_config *c = &v->cfg;
    if (vm->running) {
        if (vm->restart_attempts && now - vm->start_ms > (uint64_t)c->ar_reset_window * 1000) {
            vm->restart_attempts = 0;
        }
        vm->next_restart_ms = 0;
        return;
    }
    if (!c->ar_enabled || !vm->started || vm->removing) {
        return;
    }
    char err[VMM_ERR_MAX];
    if (!v->backend.ops->usable(&v->backend, err, sizeof(err))) {
        return;
    }
    if (vm->restart_attempts >= (unsigned)c->ar_max_retries) {
        if (vm->restart_attempts == (unsigned)c->ar_max_retries) {
            vmm_vm_event(v, vm, "vmm.auto_restart.exhausted", "restart budget exhausted");
            vm->restart_attempts++;
        }
        return;
    }
    if (vm->next_restart_ms == 0) {
        uint64_t backoff = (uint64_t)c->ar_initial_backoff
                           << (vm->restart_attempts < 20 ? vm->restart_attempts : 20);
        if (backoff > (uint64_t)c->ar_max_backoff) {
            backoff = (uint64_t)c->ar_max_backoff;
        }
        vm->next_restart_ms = now + backoff * 1000;
        return;
    }
    if (now < vm->next_restart_ms) {
        return;
    }
    vm->next_restart_ms = 0;
    vm->restart_attempts++;
    if (vmm_vm_start(v, vm, err, sizeof(err)) < 0) {
        log_warnx("vm %s: auto-restart failed: %s", vm->id, err);
        vmm_vm_event(v, vm, "vmm.auto_restart.error", err);
    } else {
        log_info("vm %s: auto-restarted (attempt %u)", vm->id, vm->restart_attempts);
        vmm_vm_event(v, vm, "vmm.auto_restart", "restarted");
    }
}

void vmm_state_tick(struct vmm *v)
{
    uint64_t now = vmm_now_ms();
    /* auto-restart checks run every cvm.auto_restart.interval seconds (§1.5) */
    bool ar_pass = now - v->auto_restart_ms >= (uint64_t)v->cfg.ar_interval * 1000;
    if (ar_pass) {
        v->auto_restart_ms = now;
    }
    for (struct vmm_vm_rec *vm = v->vms, *next; vm; vm = next) {
        next = vm->next;
        if (vm->removing) {
            (void)continue_remove(v, vm);
            continue;
        }
        vmm_vm_poll(v, vm);
        if (ar_pass) {
            auto_restart(v, vm, now);
        }
    }
}
