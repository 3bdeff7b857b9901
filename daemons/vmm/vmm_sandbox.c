/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `sandbox` CVM backend (DESIGN.md §4, docs/sandbox.md): a CVM is a process tree in its
 * own mount, pid, net, uts and ipc namespaces. Its root is an overlay (lower = the image's
 * rootfs directory, read-only; upper/work = <workdir>/sandbox/{upper,work}, emptied at every
 * start so each boot sees the pristine image, as a dstack guest's read-only rootfs), its
 * network a veth on the host bridge (vmm_sandbox_net.c), its limits a cgroup v2 group, its
 * data disk a sparse ext4 image (mkfs.ext4 -O encrypt on first start) handed to the guest as a
 * file, its TEE a simulated TD created with the sandbox measurement (vmm_sandbox_measure.c).
 *
 * Inside the sandbox (fixed paths):
 *   /dstack/.host-shared      the host share, read-only bind
 *   /dstack/.vmm              the VM workdir, read-only bind (the host API socket lives there;
 *                             binding the directory keeps it reachable when the VMM restarts
 *                             and re-creates the socket)
 *   /dstack/.host-api.sock    symlink to .vmm/host-api.sock
 *   /dstack/.tee/tdx.sock     the TD's device socket (its directory bound read-only, same
 *                             reason); DSTACK_TEE=sim:/dstack/.tee/tdx.sock in the environment
 *   /dstack/data.img          the data disk image (read-write bind; the guest loop-mounts it)
 * The image's init (metadata "init", default /init) runs as pid 1 with the cmdline as its
 * arguments (and in DSTACK_CMDLINE); its stdout/stderr append to serial.log.
 *
 * Process model: the VMM clone()s the sandbox's pid 1 directly (new session, so it survives a
 * VMM restart), records "<pid> <starttime>" in the pid file, wires the veth into the new netns,
 * then releases the child, which configures its network and mounts, pivots into the overlay
 * and execs init. Stop: graceful = SIGTERM to pid 1, escalated to SIGKILL by is_running()
 * after SBX_STOP_GRACE_MS; hard = SIGKILL. The namespace (veth, mounts, loop devices of its
 * mounts) disappears with pid 1.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <linux/close_range.h>
#include <linux/loop.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "log.h"
#include "vmm.h"
#include "vmm_sandbox.h"

#define SBX_STACK_SIZE    (256 * 1024)
#define SBX_STOP_GRACE_MS 10000 /* SIGTERM -> SIGKILL */
#define SBX_EXEC_WAIT_MS  10000 /* child setup until exec */
#define SBX_ARGS_MAX      64
#define SBX_ENV_MAX       24
#define SBX_LOOP_NODES    64
#define SBX_LOOP_SCAN     1024 /* /dev/loopN checked at destroy */
#define SBX_CGROUP_ROOT   "/sys/fs/cgroup"
#define SBX_CGROUP_DIR    SBX_CGROUP_ROOT "/dstack-vmm"
#define SBX_CPU_PERIOD    100000
#define PROC_STAT_MAX     4096
#define SBX_ERRMSG_MAX    256

#define SBX_CLONE_FLAGS                                                                            \
    (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC | SIGCHLD)

struct sbx_priv {
    char why[VMM_ERR_MAX]; /* why unusable; "" = usable */
    bool cgroup;           /* cgroup v2 limits available */
    bool cgroup_v1;        /* else: cgroup v1 cpu + memory hierarchies available */
    char cgroup_why[VMM_ERR_MAX];
    bool cgroup_warned;
};

/* Everything the child needs, prepared by the parent (no allocation after clone). */
struct sbx_child {
    int go_fd;  /* read end: 'g' = proceed */
    int err_fd; /* write end, CLOEXEC: a message when setup fails */
    int serial_fd;
    char ip[SBX_IP_MAX];
    char hostname[64];
    char root[PATH_MAX];
    char rw[PATH_MAX]; /* <wd>/sandbox: upper/ work/ (or a tmpfs there as a fallback) */
    char lower[PATH_MAX];
    char workdir[PATH_MAX];
    char shared[PATH_MAX];
    char tee_dir[PATH_MAX]; /* "" without a TD */
    char data_img[PATH_MAX];
    char init[PATH_MAX]; /* path inside the guest */
    char *argv[SBX_ARGS_MAX + 2];
    char *envp[SBX_ENV_MAX + 1];
};

/* ---- small helpers ----------------------------------------------------------------------------
 */

bool sbx_which(const char *name, char *out, size_t out_size)
{
    const char *path = getenv("PATH");
    char all[PATH_MAX * 2];
    snprintf(all, sizeof(all), "%s:/usr/sbin:/sbin:/usr/bin:/bin", path ? path : "/usr/local/bin");
    for (char *save = NULL, *d = strtok_r(all, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        int w = snprintf(out, out_size, "%s/%s", d, name);
        if (w > 0 && (size_t)w < out_size && access(out, X_OK) == 0) {
            return true;
        }
    }
    out[0] = '\0';
    return false;
}

/* posix_spawn, not fork: it takes no malloc or stdio locks, so it is safe in the clone()d
 * sandbox child of a multi-threaded VMM too. Output goes to the caller's stdout/stderr (the
 * VMM's log; serial.log in the sandbox child). */
int sbx_run(char *const argv[])
{
    pid_t pid = 0;
    int e = posix_spawn(&pid, argv[0], NULL, NULL, argv, environ);
    if (e != 0) {
        return -e;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR) {
            return -errno;
        }
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -DS_E_IO;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path) < 0 && errno != ENOENT ? -1 : 0;
}

static int rm_tree(const char *path)
{
    if (access(path, F_OK) != 0) {
        return 0;
    }
    return nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -errno;
}

static int wd_file(const struct vmm_vm *vm, const char *name, char *out, size_t size)
{
    int n = snprintf(out, size, "%s/%s", vm->workdir, name);
    return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* ---- pid file (same format as the qemu backend: "<pid> <starttime>") ---------------------------
 */

unsigned long long sbx_proc_starttime(pid_t pid, char *state)
{
    char path[64], buf[PROC_STAT_MAX];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return 0;
    }
    ssize_t n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    char *p = strrchr(buf, ')');
    if (!p) {
        return 0;
    }
    unsigned long long st = 0;
    char s = '?';
    if (sscanf(p + 1,
               " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &s, &st) != 2) {
        return 0;
    }
    if (state) {
        *state = s;
    }
    return st;
}

static pid_t read_pid_file(const char *path, unsigned long long *out_start)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (ds_read_file(path, 128, &data, &len) < 0) {
        return 0;
    }
    char text[129];
    memcpy(text, data, len);
    text[len] = '\0';
    free(data);
    int pid = 0;
    unsigned long long st = 0;
    if (sscanf(text, "%d %llu", &pid, &st) != 2 || pid <= 1) {
        return 0;
    }
    *out_start = st;
    return (pid_t)pid;
}

/* ---- backend-wide setup -------------------------------------------------------------------------
 */

static bool namespaces_work(void)
{
    pid_t pid = fork();
    if (pid < 0) {
        return false;
    }
    if (pid == 0) {
        _exit(unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC) == 0
                  ? 0
                  : 1);
    }
    int status = 0;
    return waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static int write_text(const char *path, const char *text)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    ssize_t n = write(fd, text, strlen(text));
    int r = n == (ssize_t)strlen(text) ? 0 : (n < 0 ? -errno : -DS_E_IO);
    close(fd);
    return r;
}

/*
 * cgroup v1 fallback (hosts that mount the legacy hierarchies, like our development machines):
 * the same limits through the cpu controller's CFS quota and the memory controller's hard limit.
 */
#define SBX_CGV1_CPU SBX_CGROUP_ROOT "/cpu/dstack-vmm"
#define SBX_CGV1_MEM SBX_CGROUP_ROOT "/memory/dstack-vmm"

static bool cgroup_v1_setup(struct sbx_priv *p)
{
    if (access(SBX_CGROUP_ROOT "/cpu/cpu.cfs_quota_us", F_OK) != 0 ||
        access(SBX_CGROUP_ROOT "/memory/memory.limit_in_bytes", F_OK) != 0) {
        return false;
    }
    if ((mkdir(SBX_CGV1_CPU, 0755) < 0 && errno != EEXIST) ||
        (mkdir(SBX_CGV1_MEM, 0755) < 0 && errno != EEXIST)) {
        snprintf(p->cgroup_why, sizeof(p->cgroup_why), "cannot create the cgroup v1 groups: %s",
                 strerror(errno));
        return false;
    }
    p->cgroup_v1 = true;
    return true;
}

static void cgroup_setup(struct sbx_priv *p)
{
    if (access(SBX_CGROUP_ROOT "/cgroup.controllers", F_OK) != 0) {
        snprintf(p->cgroup_why, sizeof(p->cgroup_why),
                 "no cgroup v2 hierarchy at " SBX_CGROUP_ROOT " and no writable cgroup v1 "
                 "cpu and memory hierarchies");
        (void)cgroup_v1_setup(p);
        return;
    }
    if (mkdir(SBX_CGROUP_DIR, 0755) < 0 && errno != EEXIST) {
        snprintf(p->cgroup_why, sizeof(p->cgroup_why), "cannot create " SBX_CGROUP_DIR ": %s",
                 strerror(errno));
        return;
    }
    if (write_text(SBX_CGROUP_ROOT "/cgroup.subtree_control", "+cpu +memory") < 0 ||
        write_text(SBX_CGROUP_DIR "/cgroup.subtree_control", "+cpu +memory") < 0) {
        snprintf(p->cgroup_why, sizeof(p->cgroup_why),
                 "cannot enable the cpu and memory controllers under " SBX_CGROUP_DIR);
        return;
    }
    p->cgroup = true;
}

static int sbx_init(struct vmm_backend *b)
{
    struct sbx_priv *p = calloc(1, sizeof(*p));
    char path[PATH_MAX];
    if (!p) {
        return -ENOMEM;
    }
    b->priv = p;
    if (geteuid() != 0) {
        snprintf(p->why, sizeof(p->why),
                 "no backend can start VMs here: the sandbox backend "
                 "needs root");
        return 0;
    }
    if (!sbx_which("ip", path, sizeof(path))) {
        snprintf(p->why, sizeof(p->why),
                 "no backend can start VMs here: sandbox: ip (iproute2) "
                 "not found");
        return 0;
    }
    if (!sbx_which("mkfs.ext4", path, sizeof(path))) {
        snprintf(p->why, sizeof(p->why),
                 "no backend can start VMs here: sandbox: mkfs.ext4 not "
                 "found");
        return 0;
    }
    if (!namespaces_work()) {
        snprintf(p->why, sizeof(p->why),
                 "no backend can start VMs here: sandbox: cannot create "
                 "mount/pid/net/uts/ipc namespaces");
        return 0;
    }
    char err[VMM_ERR_MAX];
    if (sbx_net_bridge_setup(err, sizeof(err)) < 0) {
        snprintf(p->why, sizeof(p->why), "no backend can start VMs here: sandbox: %.200s", err);
        return 0;
    }
    cgroup_setup(p);
    return 0;
}

static void sbx_done(struct vmm_backend *b)
{
    free(b->priv);
    b->priv = NULL;
}

static bool sbx_usable(const struct vmm_backend *b, char *err, size_t err_size)
{
    const struct sbx_priv *p = b->priv;
    if (!p || p->why[0]) {
        snprintf(err, err_size, "%s", p ? p->why : "sandbox backend not initialised");
        return false;
    }
    return true;
}

/* ---- image: rootfs directory and init ----------------------------------------------------------
 */

struct sbx_image {
    char rootfs[PATH_MAX];    /* absolute, inside the image dir */
    char init_host[PATH_MAX]; /* rootfs + init */
    char init[PATH_MAX];      /* inside the guest, e.g. "/init" */
};

static int image_resolve(const struct vmm_vm *vm, struct sbx_image *out, char *err, size_t err_size)
{
    const struct vmm_image *img = vm->image;
    if (!img) {
        snprintf(err, err_size, "VM image is not available");
        return -DS_E_NOT_FOUND;
    }
    json_t *meta = json_loads(img->metadata, JSON_REJECT_DUPLICATES, NULL);
    const json_t *rv = json_object_get(meta, "sandbox_rootfs");
    const json_t *iv = json_object_get(meta, "init");
    const char *rootfs = json_is_string(rv) ? json_string_value(rv) : "rootfs";
    const char *init = json_is_string(iv) ? json_string_value(iv) : "/init";
    char joined[PATH_MAX];
    int r = 0;
    struct stat st;
    if (init[0] != '/' || strstr(init, "..") || strlen(init) >= sizeof(out->init)) {
        snprintf(err, err_size, "image %s: \"init\" must be an absolute path without ..",
                 img->name);
        r = -DS_E_FORMAT;
        goto out;
    }
    size_t dl = strlen(img->dir);
    if (snprintf(joined, sizeof(joined), "%s/%s", img->dir, rootfs) >= (int)sizeof(joined) ||
        !realpath(joined, out->rootfs) || strncmp(out->rootfs, img->dir, dl) != 0 ||
        out->rootfs[dl] != '/' || stat(out->rootfs, &st) < 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, err_size,
                 "image %s is not a sandbox image: no rootfs directory \"%.60s\" inside it "
                 "(metadata.json \"sandbox_rootfs\")",
                 img->name, rootfs);
        r = -DS_E_FORMAT;
        goto out;
    }
    snprintf(out->init, sizeof(out->init), "%s", init);
    if (snprintf(out->init_host, sizeof(out->init_host), "%s%s", out->rootfs, init) >=
            (int)sizeof(out->init_host) ||
        stat(out->init_host, &st) < 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "image %s: init %s is not a file in the rootfs", img->name, init);
        r = -DS_E_FORMAT;
    }
out:
    json_decref(meta);
    return r;
}

/* ---- prepare: data disk, rw dirs ----------------------------------------------------------------
 */

static int make_data_disk(const struct vmm_vm *vm, char *err, size_t err_size)
{
    char img[PATH_MAX], tmp[PATH_MAX], mkfs[PATH_MAX];
    if (vm->disk_gb == 0 || wd_file(vm, "data.img", img, sizeof(img)) < 0) {
        return 0;
    }
    struct stat st;
    off_t want = (off_t)vm->disk_gb << 30;
    if (stat(img, &st) == 0) {
        /* a grown disk_size grows the file (sparse); the guest resizes its filesystem */
        if (st.st_size < want && truncate(img, want) < 0) {
            snprintf(err, err_size, "cannot grow the data disk: %s", strerror(errno));
            return -errno;
        }
        return 0;
    }
    if (snprintf(tmp, sizeof(tmp), "%s.tmp", img) >= (int)sizeof(tmp)) {
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || ftruncate(fd, want) < 0) {
        int e = errno;
        snprintf(err, err_size, "cannot create the data disk %s: %s", tmp, strerror(e));
        if (fd >= 0) {
            close(fd);
        }
        (void)unlink(tmp);
        return -e;
    }
    close(fd);
    if (!sbx_which("mkfs.ext4", mkfs, sizeof(mkfs))) {
        snprintf(err, err_size, "mkfs.ext4 not found");
        (void)unlink(tmp);
        return -ENOENT;
    }
    char *argv[] = {mkfs, "-q", "-F", "-O", "encrypt", "-L", "dstack-data", tmp, NULL};
    if (sbx_run(argv) < 0) {
        snprintf(err, err_size, "mkfs.ext4 -O encrypt %s failed", tmp);
        (void)unlink(tmp);
        return -DS_E_IO;
    }
    if (rename(tmp, img) < 0) {
        int e = errno;
        snprintf(err, err_size, "rename %s: %s", tmp, strerror(e));
        (void)unlink(tmp);
        return -e;
    }
    return 0;
}

static int sbx_prepare(struct vmm_backend *b, struct vmm_vm *vm, char *err, size_t err_size)
{
    (void)b;
    struct sbx_image si;
    char dir[PATH_MAX];
    int r;
    if ((r = image_resolve(vm, &si, err, err_size)) < 0) {
        return r;
    }
    if (wd_file(vm, "sandbox", dir, sizeof(dir)) < 0 || (mkdir(dir, 0700) < 0 && errno != EEXIST)) {
        snprintf(err, err_size, "cannot create %s/sandbox", vm->workdir);
        return -DS_E_IO;
    }
    return make_data_disk(vm, err, err_size);
}

/* ---- cgroups ------------------------------------------------------------------------------------
 */

static void cgroup_path(const struct vmm_vm *vm, char *out, size_t size)
{
    snprintf(out, size, SBX_CGROUP_DIR "/%s", vm->id);
}

/* cgroup v1: <cpu|memory>/dstack-vmm/<id> with the CFS quota and the memory limit, then pid. */
static int cgroup_v1_apply(const struct vmm_vm *vm, pid_t pid)
{
    char cpu[PATH_MAX], mem[PATH_MAX], file[PATH_MAX + 32], text[64];
    snprintf(cpu, sizeof(cpu), SBX_CGV1_CPU "/%s", vm->id);
    snprintf(mem, sizeof(mem), SBX_CGV1_MEM "/%s", vm->id);
    if ((mkdir(cpu, 0755) < 0 && errno != EEXIST) || (mkdir(mem, 0755) < 0 && errno != EEXIST)) {
        return -errno;
    }
    int r = 0;
    if (vm->vcpu > 0) {
        snprintf(file, sizeof(file), "%s/cpu.cfs_period_us", cpu);
        snprintf(text, sizeof(text), "%d", SBX_CPU_PERIOD);
        r = write_text(file, text);
        if (r == 0) {
            snprintf(file, sizeof(file), "%s/cpu.cfs_quota_us", cpu);
            snprintf(text, sizeof(text), "%llu", (unsigned long long)vm->vcpu * SBX_CPU_PERIOD);
            r = write_text(file, text);
        }
    }
    if (r == 0 && vm->memory_mb > 0) {
        snprintf(file, sizeof(file), "%s/memory.limit_in_bytes", mem);
        snprintf(text, sizeof(text), "%llu", (unsigned long long)vm->memory_mb << 20);
        r = write_text(file, text);
    }
    snprintf(text, sizeof(text), "%d", (int)pid);
    if (r == 0) {
        snprintf(file, sizeof(file), "%s/cgroup.procs", cpu);
        r = write_text(file, text);
    }
    if (r == 0) {
        snprintf(file, sizeof(file), "%s/cgroup.procs", mem);
        r = write_text(file, text);
    }
    return r;
}

/* Put pid into the VM's group with cpu.max/memory.max; record what was (not) enforced. */
static void cgroup_apply(struct sbx_priv *p, const struct vmm_vm *vm, pid_t pid)
{
    char cg[PATH_MAX], file[PATH_MAX + 32], text[64], rec[PATH_MAX];
    char note[VMM_ERR_MAX + 64];
    (void)wd_file(vm, "sandbox/limits", rec, sizeof(rec));
    if (p->cgroup_v1) {
        int r = cgroup_v1_apply(vm, pid);
        if (r == 0) {
            snprintf(note, sizeof(note),
                     "enforced cgroup-v1 cpu.cfs_quota_us=%u00000 memory.limit_in_bytes=%uMiB\n",
                     vm->vcpu, vm->memory_mb);
            if (ds_write_file_atomic(rec, note, strlen(note), 0644) < 0) {
                log_warnx("sandbox %s: cannot record the limits", vm->id);
            }
            return;
        }
        snprintf(p->cgroup_why, sizeof(p->cgroup_why), "cannot configure the cgroup v1 groups: %s",
                 ds_strerror(r));
    }
    if (p->cgroup) {
        cgroup_path(vm, cg, sizeof(cg));
        int r = mkdir(cg, 0755) < 0 && errno != EEXIST ? -errno : 0;
        if (r == 0 && vm->vcpu > 0) {
            snprintf(file, sizeof(file), "%s/cpu.max", cg);
            snprintf(text, sizeof(text), "%llu %d", (unsigned long long)vm->vcpu * SBX_CPU_PERIOD,
                     SBX_CPU_PERIOD);
            r = write_text(file, text);
        }
        if (r == 0 && vm->memory_mb > 0) {
            snprintf(file, sizeof(file), "%s/memory.max", cg);
            snprintf(text, sizeof(text), "%llu", (unsigned long long)vm->memory_mb << 20);
            r = write_text(file, text);
        }
        if (r == 0) {
            snprintf(file, sizeof(file), "%s/cgroup.procs", cg);
            snprintf(text, sizeof(text), "%d", (int)pid);
            r = write_text(file, text);
        }
        if (r == 0) {
            snprintf(note, sizeof(note),
                     "enforced cgroup=%.200s cpu.max=%u00000 memory.max=%uMiB\n", cg, vm->vcpu,
                     vm->memory_mb);
            if (ds_write_file_atomic(rec, note, strlen(note), 0644) < 0) {
                log_warnx("sandbox %s: cannot record the limits", vm->id);
            }
            return;
        }
        snprintf(p->cgroup_why, sizeof(p->cgroup_why), "cannot configure %.150s: %s", cg,
                 ds_strerror(r));
    }
    if (!p->cgroup_warned) {
        log_warnx("sandbox: vcpu/memory limits are not enforced: %s", p->cgroup_why);
        p->cgroup_warned = true;
    }
    snprintf(note, sizeof(note), "not enforced: %s\n", p->cgroup_why);
    if (ds_write_file_atomic(rec, note, strlen(note), 0644) < 0) {
        log_warnx("sandbox %s: cannot record the limits", vm->id);
    }
}

#define SBX_CGROUP_RMDIR_TRIES   50
#define SBX_CGROUP_RMDIR_WAIT_NS 20000000L

/* rmdir a cgroup; while its last tasks are still exiting (the sandbox was just killed) the
 * kernel says EBUSY, so wait for them a little (at most ~1 s per group). */
static int cgroup_rmdir(const char *path)
{
    for (int i = 0; i < SBX_CGROUP_RMDIR_TRIES; i++) {
        if (rmdir(path) == 0 || errno == ENOENT) {
            return 0;
        }
        if (errno != EBUSY) {
            return -errno;
        }
        struct timespec ts = {0, SBX_CGROUP_RMDIR_WAIT_NS};
        (void)nanosleep(&ts, NULL);
    }
    return -EBUSY;
}

/* nftw callback: cgroupfs only lets directories go (their files vanish with them), deepest
 * first; a group that still has tasks stays (EBUSY) and the walk goes on. */
static int cgroup_rmdir_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    if (type == FTW_DP) {
        (void)cgroup_rmdir(path);
    }
    return 0;
}

/* The guest's container engine (dockerd in the dstack-guest image) puts the containers'
 * groups under /dstack-guest-<vm id> of every hierarchy it sees (its cgroup parent); they
 * outlive the sandbox's pid namespace, so they are removed here with the VM. */
static void cgroup_remove_guest_groups(const struct vmm_vm *vm)
{
    char cg[PATH_MAX];
    snprintf(cg, sizeof(cg), SBX_CGROUP_ROOT "/dstack-guest-%s", vm->id);
    (void)nftw(cg, cgroup_rmdir_entry, 16, FTW_DEPTH | FTW_PHYS);
    DIR *d = opendir(SBX_CGROUP_ROOT);
    if (!d) {
        return;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.' || de->d_type != DT_DIR) {
            continue;
        }
        int n = snprintf(cg, sizeof(cg), SBX_CGROUP_ROOT "/%s/dstack-guest-%s", de->d_name, vm->id);
        if (n <= 0 || (size_t)n >= sizeof(cg)) {
            continue;
        }
        (void)nftw(cg, cgroup_rmdir_entry, 16, FTW_DEPTH | FTW_PHYS);
    }
    closedir(d);
}

static void cgroup_remove(const struct vmm_vm *vm)
{
    char cg[PATH_MAX];
    cgroup_remove_guest_groups(vm);
    cgroup_path(vm, cg, sizeof(cg));
    (void)cgroup_rmdir(cg);
    snprintf(cg, sizeof(cg), SBX_CGV1_CPU "/%s", vm->id);
    (void)cgroup_rmdir(cg);
    snprintf(cg, sizeof(cg), SBX_CGV1_MEM "/%s", vm->id);
    (void)cgroup_rmdir(cg);
}

/* ---- the child (pid 1 of the sandbox) -----------------------------------------------------------
 */

static void child_fail(const struct sbx_child *c, const char *what)
{
    char msg[SBX_ERRMSG_MAX];
    int n = snprintf(msg, sizeof(msg), "%s: %s", what, strerror(errno));
    if (n > 0) {
        ssize_t w = write(c->err_fd, msg, (size_t)n < sizeof(msg) ? (size_t)n : sizeof(msg) - 1);
        (void)w;
    }
    _exit(127);
}

static int in_root(const struct sbx_child *c, const char *rel, char *out, size_t size)
{
    int n = snprintf(out, size, "%s%s", c->root, rel);
    return n > 0 && (size_t)n < size ? 0 : -1;
}

static void bind_at(const struct sbx_child *c, const char *src, const char *rel, bool ro,
                    bool is_dir)
{
    char dst[PATH_MAX];
    if (in_root(c, rel, dst, sizeof(dst)) < 0) {
        errno = ENAMETOOLONG;
        child_fail(c, rel);
    }
    if (is_dir) {
        if (mkdir(dst, 0755) < 0 && errno != EEXIST) {
            child_fail(c, dst);
        }
    } else {
        int fd = open(dst, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
        if (fd < 0) {
            child_fail(c, dst);
        }
        close(fd);
    }
    if (mount(src, dst, NULL, MS_BIND, NULL) < 0) {
        child_fail(c, src);
    }
    if (ro &&
        mount(NULL, dst, NULL, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, NULL) < 0) {
        child_fail(c, "read-only remount");
    }
}

static void make_dev(const struct sbx_child *c)
{
    static const struct {
        const char *name;
        mode_t mode;
        unsigned maj, min;
    } nodes[] = {{"null", 0666, 1, 3},    {"zero", 0666, 1, 5},           {"full", 0666, 1, 7},
                 {"random", 0666, 1, 8},  {"urandom", 0666, 1, 9},        {"tty", 0666, 5, 0},
                 {"console", 0600, 5, 1}, {"loop-control", 0600, 10, 237}};
    char dev[PATH_MAX], p[PATH_MAX + 32];
    if (in_root(c, "/dev", dev, sizeof(dev)) < 0 || (mkdir(dev, 0755) < 0 && errno != EEXIST) ||
        mount("tmpfs", dev, "tmpfs", MS_NOSUID | MS_NOEXEC, "mode=755,size=65536k") < 0) {
        child_fail(c, "/dev");
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(nodes); i++) {
        snprintf(p, sizeof(p), "%s/%s", dev, nodes[i].name);
        if (mknod(p, S_IFCHR | nodes[i].mode, makedev(nodes[i].maj, nodes[i].min)) < 0) {
            child_fail(c, p);
        }
        (void)chmod(p, nodes[i].mode);
    }
    for (unsigned i = 0; i < SBX_LOOP_NODES; i++) {
        snprintf(p, sizeof(p), "%s/loop%u", dev, i);
        if (mknod(p, S_IFBLK | 0600, makedev(7, i)) < 0) {
            child_fail(c, p);
        }
    }
    snprintf(p, sizeof(p), "%s/net", dev);
    (void)mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/net/tun", dev);
    (void)mknod(p, S_IFCHR | 0666, makedev(10, 200));
    snprintf(p, sizeof(p), "%s/pts", dev);
    if (mkdir(p, 0755) < 0 || mount("devpts", p, "devpts", MS_NOSUID | MS_NOEXEC,
                                    "newinstance,ptmxmode=0666,mode=620") < 0) {
        child_fail(c, "/dev/pts");
    }
    snprintf(p, sizeof(p), "%s/ptmx", dev);
    (void)symlink("pts/ptmx", p);
    snprintf(p, sizeof(p), "%s/shm", dev);
    if (mkdir(p, 01777) < 0 || mount("tmpfs", p, "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0) {
        child_fail(c, "/dev/shm");
    }
    snprintf(p, sizeof(p), "%s/fd", dev);
    (void)symlink("/proc/self/fd", p);
}

static int child_main(void *arg)
{
    struct sbx_child *c = arg;
    char p[PATH_MAX + 64], opts[PATH_MAX * 3 + 64];
    setsid();
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    for (int s = 1; s < NSIG; s++) {
        if (s != SIGKILL && s != SIGSTOP) {
            signal(s, SIG_DFL);
        }
    }
    /* setup tools (ip) write their errors to the console */
    int nul = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (nul < 0 || dup2(nul, 0) < 0 || dup2(nul, 1) < 0 || dup2(c->serial_fd, 2) < 0) {
        _exit(1);
    }
    char go = 0;
    if (read(c->go_fd, &go, 1) != 1 || go != 'g') {
        _exit(1); /* the VMM gave up (or died) before the network was wired */
    }
    close(c->go_fd);
    if (sethostname(c->hostname, strlen(c->hostname)) < 0) {
        child_fail(c, "sethostname");
    }
    if (sbx_net_guest_config(c->ip) < 0) {
        errno = EIO;
        child_fail(c, "network setup (ip addr/route in the sandbox)");
    }
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
        child_fail(c, "make / private");
    }
    /* overlay root: upper/work under <wd>/sandbox, tmpfs there when the disk refuses */
    snprintf(p, sizeof(p), "%s/upper", c->rw);
    (void)mkdir(p, 0755);
    snprintf(p, sizeof(p), "%s/work", c->rw);
    (void)mkdir(p, 0755);
    (void)mkdir(c->root, 0755);
    snprintf(opts, sizeof(opts), "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", c->lower, c->rw,
             c->rw);
    if (mount("overlay", c->root, "overlay", 0, opts) < 0) {
        if (mount("tmpfs", c->rw, "tmpfs", 0, "mode=700") < 0) {
            child_fail(c, "tmpfs for the overlay upper");
        }
        snprintf(p, sizeof(p), "%s/upper", c->rw);
        (void)mkdir(p, 0755);
        snprintf(p, sizeof(p), "%s/work", c->rw);
        (void)mkdir(p, 0755);
        snprintf(p, sizeof(p), "%s/root", c->rw);
        (void)mkdir(p, 0755);
        if (mount("overlay", p, "overlay", 0, opts) < 0) {
            child_fail(c, "overlay root");
        }
        if (snprintf(c->root, sizeof(c->root), "%s", p) >= (int)sizeof(c->root)) {
            errno = ENAMETOOLONG;
            child_fail(c, "overlay root");
        }
    }
    static const char *const dirs[] = {"/proc", "/sys", "/tmp", "/dstack", "/run"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(dirs); i++) {
        if (in_root(c, dirs[i], p, sizeof(p)) == 0) {
            (void)mkdir(p, 0755);
        }
    }
    make_dev(c);
    bind_at(c, c->shared, SBX_GUEST_SHARED, true, true);
    bind_at(c, c->workdir, SBX_GUEST_VMM_DIR, true, true);
    if (in_root(c, SBX_GUEST_HOST_API, p, sizeof(p)) == 0) {
        (void)unlink(p);
        if (symlink(".vmm/host-api.sock", p) < 0) {
            child_fail(c, SBX_GUEST_HOST_API);
        }
    }
    if (c->tee_dir[0]) {
        bind_at(c, c->tee_dir, SBX_GUEST_TEE_DIR, true, true);
    }
    if (c->data_img[0]) {
        bind_at(c, c->data_img, SBX_GUEST_DATA, false, false);
    }
    /* pivot into the overlay */
    if (chdir(c->root) < 0 || syscall(SYS_pivot_root, ".", ".") < 0 ||
        umount2(".", MNT_DETACH) < 0 || chdir("/") < 0) {
        child_fail(c, "pivot_root");
    }
    if (mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        child_fail(c, "/proc");
    }
    if (mount("sysfs", "/sys", "sysfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC, NULL) < 0) {
        child_fail(c, "/sys");
    }
    if (mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV, "mode=1777") < 0 ||
        mount("tmpfs", "/run", "tmpfs", MS_NOSUID | MS_NODEV, "mode=755") < 0) {
        child_fail(c, "/tmp");
    }
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(c->serial_fd, 1) < 0 ||
        dup2(c->serial_fd, 2) < 0) {
        child_fail(c, "console");
    }
    /* nothing of the VMM's (listeners, other VMs' sockets) reaches the guest */
    (void)syscall(SYS_close_range, 3u, ~0u, CLOSE_RANGE_CLOEXEC);
    execve(c->init, c->argv, c->envp);
    child_fail(c, c->init);
    return 127;
}

/* ---- start -------------------------------------------------------------------------------------
 */

static void fill_env(struct sbx_child *c, const struct vmm_vm *vm, char **owned, size_t *no)
{
    size_t n = 0;
    c->envp[n++] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    c->envp[n++] = "HOME=/root";
    c->envp[n++] = "TERM=linux";
    c->envp[n++] = "container=dstack-sandbox";
    c->envp[n++] = "DSTACK_SANDBOX=1";
    c->envp[n++] = "DSTACK_HOST_API=unix:" SBX_GUEST_HOST_API;
    c->envp[n++] = "DSTACK_HOST_SHARED=" SBX_GUEST_SHARED;
    if (c->tee_dir[0]) {
        c->envp[n++] = "DSTACK_TEE=sim:" SBX_GUEST_TEE_SOCK;
    }
    if (c->data_img[0]) {
        c->envp[n++] = "DSTACK_DATA_DISK=" SBX_GUEST_DATA;
    }
    const char *kv[][2] = {{"DSTACK_VM_ID", vm->id},
                           {"DSTACK_GUEST_IP", c->ip},
                           {"DSTACK_GATEWAY_IP", SBX_GATEWAY},
                           {"DSTACK_CMDLINE", vm->image->cmdline ? vm->image->cmdline : ""}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(kv); i++) {
        char *s = NULL;
        if (asprintf(&s, "%s=%s", kv[i][0], kv[i][1]) >= 0) {
            owned[(*no)++] = s;
            c->envp[n++] = s;
        }
    }
    c->envp[n] = NULL;
}

static void fill_argv(struct sbx_child *c, char *cmdline_copy)
{
    size_t n = 0;
    c->argv[n++] = c->init;
    for (char *save = NULL, *t = strtok_r(cmdline_copy, " \t\n", &save); t && n < SBX_ARGS_MAX;
         t = strtok_r(NULL, " \t\n", &save)) {
        c->argv[n++] = t;
    }
    c->argv[n] = NULL;
}

static void sanitize_hostname(const char *name, char *out, size_t size)
{
    size_t k = 0;
    for (size_t i = 0; name[i] && k + 1 < size; i++) {
        char ch = name[i];
        bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        out[k++] = ok ? ch : '-';
    }
    out[k] = '\0';
    if (k == 0) {
        snprintf(out, size, "dstack-sandbox");
    }
}

static int write_pid_file(const struct vmm_vm *vm, pid_t pid)
{
    char text[64];
    int n = snprintf(text, sizeof(text), "%d %llu\n", (int)pid, sbx_proc_starttime(pid, NULL));
    return ds_write_file_atomic(vm->pid_file, text, (size_t)n, 0644);
}

static void stop_mark(const struct vmm_vm *vm, bool set)
{
    char path[PATH_MAX];
    if (wd_file(vm, "sandbox/stop-deadline", path, sizeof(path)) < 0) {
        return;
    }
    if (!set) {
        (void)unlink(path);
        return;
    }
    char text[32];
    int n =
        snprintf(text, sizeof(text), "%llu\n", (unsigned long long)(mono_ms() + SBX_STOP_GRACE_MS));
    if (ds_write_file_atomic(path, text, (size_t)n, 0644) < 0) {
        log_warnx("sandbox %s: cannot record the stop deadline", vm->id);
    }
}

static int sbx_start(struct vmm_backend *b, struct vmm_vm *vm, pid_t *out_pid, char *err,
                     size_t err_size)
{
    struct sbx_priv *p = b->priv;
    struct sbx_image si;
    struct sbx_measure m = {0};
    struct sbx_child *c = calloc(1, sizeof(*c));
    char *owned[8] = {NULL};
    size_t no = 0;
    char *cmdline = NULL;
    char *stack = NULL;
    char control[PATH_MAX], tee_sock[PATH_MAX], upper[PATH_MAX + 16];
    int go[2] = {-1, -1}, ep[2] = {-1, -1};
    pid_t pid = -1;
    int r;

    if (!c) {
        return -ENOMEM;
    }
    c->serial_fd = -1;
    if ((r = image_resolve(vm, &si, err, err_size)) < 0) {
        goto out;
    }
    stop_mark(vm, false);
    sbx_fwd_stop(vm);
    /* measurement and the simulated TD */
    const char *ctl = sbx_tee_control(control, sizeof(control));
    bool want_tee = !(vm->no_tee && !vm->simulated_tee);
    tee_sock[0] = '\0';
    if (ctl && want_tee) {
        if ((r = sbx_measure(vm, si.init_host, si.init, &m, err, err_size)) < 0 ||
            (r = sbx_tee_create_td(ctl, vm->id, &m, tee_sock, sizeof(tee_sock), err, err_size)) <
                0) {
            goto out;
        }
        if (vm->tee_device_socket) {
            /* the daemon's name for the TD socket: a symlink to the simulator's */
            (void)unlink(vm->tee_device_socket);
            if (symlink(tee_sock, vm->tee_device_socket) < 0) {
                log_warn("sandbox %s: symlink %s", vm->id, vm->tee_device_socket);
            }
        }
    } else if (vm->simulated_tee) {
        snprintf(err, err_size,
                 "simulated_tee needs dstack-tee-sim: set " SBX_TEE_SIM_ENV
                 " to its state directory in dstack-vmm's environment");
        r = -DS_E_UNSUPPORTED;
        goto out;
    }
    if (tee_sock[0]) {
        snprintf(c->tee_dir, sizeof(c->tee_dir), "%s", tee_sock);
        char *slash = strrchr(c->tee_dir, '/');
        if (!slash || strcmp(slash, "/tdx.sock") != 0) {
            snprintf(err, err_size, "TD socket %.100s is not named tdx.sock", tee_sock);
            r = -DS_E_FORMAT;
            goto out;
        }
        *slash = '\0';
    }
    if ((r = sbx_net_assign_ip(vm, c->ip, err, err_size)) < 0) {
        goto out;
    }
    /* fresh writable layer every boot */
    snprintf(c->rw, sizeof(c->rw), "%s/sandbox", vm->workdir);
    snprintf(upper, sizeof(upper), "%s/upper", c->rw);
    if (rm_tree(upper) < 0 ||
        (snprintf(upper, sizeof(upper), "%s/work", c->rw), rm_tree(upper)) < 0) {
        snprintf(err, err_size, "cannot clear %s", upper);
        r = -DS_E_IO;
        goto out;
    }
    snprintf(c->root, sizeof(c->root), "%s/sandbox/root", vm->workdir);
    snprintf(c->lower, sizeof(c->lower), "%s", si.rootfs);
    snprintf(c->workdir, sizeof(c->workdir), "%s", vm->workdir);
    snprintf(c->shared, sizeof(c->shared), "%s", vm->shared_dir);
    snprintf(c->init, sizeof(c->init), "%s", si.init);
    if (vm->disk_gb > 0) {
        (void)wd_file(vm, "data.img", c->data_img, sizeof(c->data_img));
    }
    if (strchr(c->lower, ',') || strchr(c->rw, ',') || strchr(c->lower, ':')) {
        snprintf(err, err_size, "paths with ',' or ':' cannot be overlay layers");
        r = -DS_E_FORMAT;
        goto out;
    }
    sanitize_hostname(vm->name && vm->name[0] ? vm->name : vm->id, c->hostname,
                      sizeof(c->hostname));
    cmdline = strdup(vm->image->cmdline ? vm->image->cmdline : "");
    stack = malloc(SBX_STACK_SIZE);
    if (!cmdline || !stack) {
        r = -ENOMEM;
        goto out;
    }
    fill_argv(c, cmdline);
    fill_env(c, vm, owned, &no);
    c->serial_fd = open(vm->serial_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (c->serial_fd < 0 || pipe2(go, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        r = -errno;
        snprintf(err, err_size, "cannot open the console / pipes: %s", strerror(errno));
        goto out;
    }
    c->go_fd = go[0];
    c->err_fd = ep[1];
    pid = clone(child_main, stack + SBX_STACK_SIZE, SBX_CLONE_FLAGS, c);
    if (pid < 0) {
        r = -errno;
        snprintf(err, err_size, "clone (namespaces): %s", strerror(errno));
        goto out;
    }
    close(go[0]);
    go[0] = -1;
    close(ep[1]);
    ep[1] = -1;
    if ((r = write_pid_file(vm, pid)) < 0) {
        snprintf(err, err_size, "cannot write %s: %s", vm->pid_file, ds_strerror(r));
        goto fail_child;
    }
    cgroup_apply(p, vm, pid);
    if ((r = sbx_net_veth_setup(vm->id, pid, err, err_size)) < 0) {
        goto fail_child;
    }
    if (write(go[1], "g", 1) != 1) {
        r = -errno;
        snprintf(err, err_size, "cannot release the sandbox: %s", strerror(errno));
        goto fail_child;
    }
    /* wait for exec (EOF on the CLOEXEC pipe) or the child's setup error */
    char msg[SBX_ERRMSG_MAX];
    size_t ml = 0;
    uint64_t deadline = mono_ms() + SBX_EXEC_WAIT_MS;
    for (;;) {
        struct timeval tv = {0, 0};
        uint64_t now = mono_ms();
        if (now >= deadline) {
            snprintf(err, err_size, "the sandbox did not reach its init within %d ms",
                     SBX_EXEC_WAIT_MS);
            r = -ETIMEDOUT;
            goto fail_child;
        }
        tv.tv_sec = (time_t)((deadline - now) / 1000);
        tv.tv_usec = (suseconds_t)((deadline - now) % 1000 * 1000);
        fd_set rd;
        FD_ZERO(&rd);
        FD_SET(ep[0], &rd);
        int s = select(ep[0] + 1, &rd, NULL, NULL, &tv);
        if (s < 0 && errno == EINTR) {
            continue;
        }
        if (s <= 0) {
            continue;
        }
        ssize_t n = read(ep[0], msg + ml, sizeof(msg) - 1 - ml);
        if (n > 0) {
            ml += (size_t)n;
            if (ml < sizeof(msg) - 1) {
                continue;
            }
        }
        break;
    }
    if (ml > 0) {
        msg[ml] = '\0';
        snprintf(err, err_size, "sandbox setup failed: %s", msg);
        r = -DS_E_IO;
        goto fail_child;
    }
    if ((r = sbx_fwd_start(vm, c->ip, pid, err, err_size)) < 0) {
        goto fail_child;
    }
    *out_pid = pid;
    r = 0;
    goto out;
fail_child:
    (void)kill(pid, SIGKILL);
    (void)waitpid(pid, NULL, 0);
    (void)unlink(vm->pid_file);
    sbx_net_veth_remove(vm->id);
out:
    for (size_t i = 0; i < DS_ARRAY_SIZE(go); i++) {
        if (go[i] >= 0) {
            close(go[i]);
        }
        if (ep[i] >= 0) {
            close(ep[i]);
        }
    }
    if (c->serial_fd >= 0) {
        close(c->serial_fd);
    }
    for (size_t i = 0; i < no; i++) {
        free(owned[i]);
    }
    free(cmdline);
    free(stack);
    free(c);
    sbx_measure_free(&m);
    return r;
}

/* ---- running / stop / destroy -------------------------------------------------------------------
 */

static bool sbx_is_running(struct vmm_backend *b, struct vmm_vm *vm, pid_t *out_pid)
{
    (void)b;
    unsigned long long want = 0;
    sbx_fwd_reap(vm);
    pid_t pid = read_pid_file(vm->pid_file, &want);
    if (pid <= 0) {
        return false;
    }
    int status;
    if (waitpid(pid, &status, WNOHANG) == pid) {
        stop_mark(vm, false);
        return false;
    }
    char state = '?';
    unsigned long long st = sbx_proc_starttime(pid, &state);
    if (st == 0 || st != want || state == 'Z' || state == 'X') {
        stop_mark(vm, false);
        return false;
    }
    /* a graceful stop past its grace period becomes a kill */
    char path[PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    if (wd_file(vm, "sandbox/stop-deadline", path, sizeof(path)) == 0 &&
        ds_read_file(path, 32, &data, &len) == 0) {
        char text[33];
        memcpy(text, data, len);
        text[len] = '\0';
        free(data);
        unsigned long long dl = strtoull(text, NULL, 10);
        if (dl && mono_ms() > dl) {
            (void)kill(pid, SIGKILL);
        }
    }
    if (out_pid) {
        *out_pid = pid;
    }
    return true;
}

static int sbx_stop(struct vmm_backend *b, struct vmm_vm *vm, bool graceful, char *err,
                    size_t err_size)
{
    pid_t pid = 0;
    if (!sbx_is_running(b, vm, &pid)) {
        return 0;
    }
    /* pid 1 of the sandbox: SIGTERM reaches its handler (init traps it); SIGKILL ends the
     * whole pid namespace */
    if (kill(pid, graceful ? SIGTERM : SIGKILL) < 0) {
        snprintf(err, err_size, "kill %d: %s", (int)pid, strerror(errno));
        return -errno;
    }
    if (graceful) {
        stop_mark(vm, true);
        return 0;
    }
    for (int i = 0; i < 100 && sbx_is_running(b, vm, NULL); i++) {
        usleep(2000);
    }
    sbx_fwd_stop(vm);
    return 0;
}

/* Detach loop devices still backed by this VM's data disk (normally gone with the sandbox's
 * mounts: busybox/util-linux loop mounts are autoclear). Matched by device and inode: the
 * backing_file name a loop device reports is the path seen inside the sandbox. */
static void loop_cleanup(const struct vmm_vm *vm)
{
    char img[PATH_MAX];
    struct stat st;
    if (wd_file(vm, "data.img", img, sizeof(img)) < 0 || stat(img, &st) < 0) {
        return;
    }
    for (unsigned i = 0; i < SBX_LOOP_SCAN; i++) {
        char sys[64], dev[32];
        snprintf(sys, sizeof(sys), "/sys/block/loop%u", i);
        if (access(sys, F_OK) != 0) {
            continue;
        }
        snprintf(dev, sizeof(dev), "/dev/loop%u", i);
        int fd = open(dev, O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            continue;
        }
        struct loop_info64 li;
        if (ioctl(fd, LOOP_GET_STATUS64, &li) == 0 && li.lo_inode == st.st_ino &&
            li.lo_device == st.st_dev && ioctl(fd, LOOP_CLR_FD, 0) < 0) {
            log_warn("sandbox %s: detach %s", vm->id, dev);
        }
        close(fd);
    }
}

static void sbx_destroy(struct vmm_backend *b, struct vmm_vm *vm)
{
    (void)b;
    char control[PATH_MAX];
    sbx_fwd_stop(vm);
    const char *ctl = sbx_tee_control(control, sizeof(control));
    if (ctl) {
        sbx_tee_remove_td(ctl, vm->id);
    }
    sbx_net_veth_remove(vm->id);
    sbx_net_release_ip(vm);
    loop_cleanup(vm);
    cgroup_remove(vm);
    (void)unlink(vm->pid_file);
    free(vm->backend_data);
    vm->backend_data = NULL;
}

const struct vmm_backend_ops vmm_sandbox_backend = {
    .name = "sandbox",
    .init = sbx_init,
    .done = sbx_done,
    .usable = sbx_usable,
    .prepare = sbx_prepare,
    .start = sbx_start,
    .stop = sbx_stop,
    .is_running = sbx_is_running,
    .destroy = sbx_destroy,
};
