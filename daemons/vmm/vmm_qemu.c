/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `qemu` backend's process management (DESIGN.md §4, host-side.md §1.5/§1.8): the argument
 * vector comes from lib/vmm/qemu_argv.c (ds_qemu_build_argv), this file finds QEMU and its
 * version, creates the data disk (qemu-img, at first start) and in `vhd` share mode the
 * shared.img FAT32 image (mkfs.fat + mcopy, regenerated each start), spawns QEMU in its own session
 * (so it survives a VMM restart, the role upstream's supervisor plays) with stdout/stderr appended
 * to the workdir logs and the serial console in serial.log, records "<pid> <starttime>" in the pid
 * file (so a reused pid is never mistaken for the VM after a restart), and stops it with SIGKILL
 * (hard) or SIGTERM (graceful) to its process group.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dstack/vmm_qemu.h"
#include "log.h"
#include "vmm.h"

#define QEMU_DEFAULT_BINARY "qemu-system-x86_64"
#define QEMU_VERSION_MAX    64
#define PROC_STAT_MAX       4096
#define PID_WAIT_STEPS      2000 /* x 1 ms */
#define PID_WAIT_STEP_US    1000
/* vhd host share (host-side.md §1.4): 128 MiB FAT32 labelled DSTACKSHR; mkfs.fat counts 1 KiB
 * blocks */
#define SHARE_IMG_BLOCKS "131072"
#define SHARE_IMG_LABEL  "DSTACKSHR"
#define SHARE_FILES_MAX  64
#define SHARE_MODE_VHD   1 /* cvm.host_share_mode index: 9p, vhd, vvfat */

struct qemu_priv {
    char path[PATH_MAX]; /* "" when not found */
    char version[QEMU_VERSION_MAX];
    char img_path[PATH_MAX];   /* qemu-img, "" when not found */
    char mkfs_path[PATH_MAX];  /* mkfs.fat (dosfstools), "" when not found: no vhd share */
    char mcopy_path[PATH_MAX]; /* mcopy (mtools), "" when not found: no vhd share */
    char why[VMM_ERR_MAX];     /* why the backend is unusable */
    bool kvm;
    bool vhost_vsock; /* else the host API goes over virtio-serial to host-api.sock */
};

static bool find_in_path(const char *name, char *out, size_t out_size)
{
    const char *path = getenv("PATH");
    if (!path) {
        path = "/usr/local/bin:/usr/bin:/bin";
    }
    while (*path) {
        const char *colon = strchr(path, ':');
        size_t n = colon ? (size_t)(colon - path) : strlen(path);
        if (n > 0) {
            int w = snprintf(out, out_size, "%.*s/%s", (int)n, path, name);
            if (w > 0 && (size_t)w < out_size && access(out, X_OK) == 0) {
                return true;
            }
        }
        path += n + (colon ? 1 : 0);
    }
    /* mkfs.fat lives in /usr/sbin, often not in a user's PATH */
    static const char *const sbin[] = {"/usr/sbin", "/sbin"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(sbin); i++) {
        int w = snprintf(out, out_size, "%s/%s", sbin[i], name);
        if (w > 0 && (size_t)w < out_size && access(out, X_OK) == 0) {
            return true;
        }
    }
    out[0] = '\0';
    return false;
}

/* "QEMU emulator version 8.2.2 (Debian ...)" -> "8.2.2" (§1.2: first word after "version",
 * cut at '+'). */
static bool detect_version(const char *qemu, char *out, size_t out_size)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        return false;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid == 0) {
        dup2(fds[1], 1);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 2);
        }
        execl(qemu, qemu, "--version", (char *)NULL);
        _exit(127);
    }
    close(fds[1]);
    char buf[512];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buf) - 1 && (n = read(fds[0], buf + len, sizeof(buf) - 1 - len)) > 0) {
        len += (size_t)n;
    }
    buf[len] = '\0';
    close(fds[0]);
    int status = 0;
    (void)waitpid(pid, &status, 0);
    const char *p = strstr(buf, "version ");
    if (!p) {
        return false;
    }
    p += 8;
    size_t k = 0;
    while (p[k] && p[k] != ' ' && p[k] != '\n' && p[k] != '+' && k < out_size - 1) {
        out[k] = p[k];
        k++;
    }
    out[k] = '\0';
    return k > 0;
}

static int qemu_init(struct vmm_backend *b)
{
    struct qemu_priv *p = calloc(1, sizeof(*p));
    if (!p) {
        return -ENOMEM;
    }
    const char *cfg_path = b->cfg->qemu_path;
    if (cfg_path && cfg_path[0]) {
        if (access(cfg_path, X_OK) == 0 && cfg_path[0] == '/') {
            snprintf(p->path, sizeof(p->path), "%s", cfg_path);
        } else {
            snprintf(p->why, sizeof(p->why),
                     "no backend can start VMs here: qemu not found at %.150s (cvm.qemu_path)",
                     cfg_path);
        }
    } else if (!find_in_path(QEMU_DEFAULT_BINARY, p->path, sizeof(p->path))) {
        snprintf(p->why, sizeof(p->why),
                 "no backend can start VMs here: qemu not found (%s is not in PATH; set "
                 "cvm.qemu_path)",
                 QEMU_DEFAULT_BINARY);
    }
    if (p->path[0] && !detect_version(p->path, p->version, sizeof(p->version))) {
        snprintf(p->why, sizeof(p->why),
                 "no backend can start VMs here: cannot read the version of %.150s", p->path);
        p->path[0] = '\0';
    }
    (void)find_in_path("qemu-img", p->img_path, sizeof(p->img_path));
    (void)find_in_path("mkfs.fat", p->mkfs_path, sizeof(p->mkfs_path));
    (void)find_in_path("mcopy", p->mcopy_path, sizeof(p->mcopy_path));
    p->kvm = b->cfg->accel == 1 || (b->cfg->accel == 0 && access("/dev/kvm", R_OK | W_OK) == 0);
    p->vhost_vsock = access("/dev/vhost-vsock", R_OK | W_OK) == 0;
    b->priv = p;
    return 0;
}

static void qemu_done(struct vmm_backend *b)
{
    free(b->priv);
    b->priv = NULL;
}

static bool qemu_usable(const struct vmm_backend *b, char *err, size_t err_size)
{
    const struct qemu_priv *p = b->priv;
    if (!p || !p->path[0]) {
        snprintf(err, err_size, "%s", p ? p->why : "qemu backend not initialised");
        return false;
    }
    return true;
}

static char *wd_path(const struct vmm_vm *vm, const char *name)
{
    char *s = NULL;
    return asprintf(&s, "%s/%s", vm->workdir, name) < 0 ? NULL : s;
}

/* Runs argv (absolute argv[0]) with stdin/stdout on /dev/null; envp NULL = inherit. */
static int run_wait_env(char *const argv[], char *const envp[])
{
    pid_t pid = fork();
    if (pid < 0) {
        return -errno;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
        }
        if (envp) {
            execve(argv[0], argv, envp);
        } else {
            execv(argv[0], argv);
        }
        _exit(127);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) < 0) {
        return -errno;
    }
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -DS_E_IO;
}

static int run_wait(char *const argv[])
{
    return run_wait_env(argv, NULL);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* vhd share mode (host-side.md §1.4, §1.7): <workdir>/shared.img, a 128 MiB FAT32 image
 * labelled DSTACKSHR holding every regular file of shared/, rebuilt at each start (the files
 * change between starts: .instance_info, .user-config, ...). Built as shared.img.tmp and renamed
 * so a failed build never leaves a half image behind. */
static int build_share_image(const struct qemu_priv *p, const struct vmm_vm *vm, char *err,
                             size_t err_size)
{
    char *img = wd_path(vm, "shared.img");
    char *tmp = wd_path(vm, "shared.img.tmp");
    char *files[SHARE_FILES_MAX];
    size_t nfiles = 0;
    DIR *d = NULL;
    int r = 0;

    if (!img || !tmp) {
        r = -ENOMEM;
        goto out;
    }
    if (!p->mkfs_path[0] || !p->mcopy_path[0]) {
        snprintf(err, err_size,
                 "host_share_mode vhd needs mkfs.fat and mcopy (install dosfstools and mtools)");
        r = -DS_E_UNSUPPORTED;
        goto out;
    }
    (void)unlink(tmp);
    char *mkfs[] = {(char *)p->mkfs_path, "-F", "32", "-n", SHARE_IMG_LABEL, "-C", tmp,
                    SHARE_IMG_BLOCKS,     NULL};
    if ((r = run_wait(mkfs)) < 0) {
        snprintf(err, err_size, "mkfs.fat %s failed", tmp);
        goto out;
    }
    if (!(d = opendir(vm->shared_dir))) {
        r = -errno;
        snprintf(err, err_size, "cannot read %s: %s", vm->shared_dir, strerror(errno));
        goto out;
    }
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0) {
            continue;
        }
        char *f = NULL;
        struct stat st;
        if (asprintf(&f, "%s/%s", vm->shared_dir, de->d_name) < 0) {
            r = -ENOMEM;
            goto out;
        }
        if (lstat(f, &st) < 0 || !S_ISREG(st.st_mode)) {
            free(f); /* only regular files are shared (§1.4) */
            continue;
        }
        if (nfiles == SHARE_FILES_MAX) {
            free(f);
            snprintf(err, err_size, "more than %d files in %s", SHARE_FILES_MAX, vm->shared_dir);
            r = -DS_E_LIMIT;
            goto out;
        }
        files[nfiles++] = f;
    }
    if (nfiles > 0) {
        qsort(files, nfiles, sizeof(files[0]), cmp_str);
        /* mcopy -i IMG -o -Q FILE... :: ; MTOOLS_SKIP_CHECK: no geometry sanity checks */
        char *argv[SHARE_FILES_MAX + 7];
        size_t n = 0;
        argv[n++] = (char *)p->mcopy_path;
        argv[n++] = "-i";
        argv[n++] = tmp;
        argv[n++] = "-o";
        argv[n++] = "-Q";
        for (size_t i = 0; i < nfiles; i++) {
            argv[n++] = files[i];
        }
        argv[n++] = "::";
        argv[n] = NULL;
        char *envp[] = {"MTOOLS_SKIP_CHECK=1", "PATH=/usr/bin:/bin", NULL};
        if ((r = run_wait_env(argv, envp)) < 0) {
            snprintf(err, err_size, "mcopy into %s failed", tmp);
            goto out;
        }
    }
    if (rename(tmp, img) < 0) {
        r = -errno;
        snprintf(err, err_size, "rename %s: %s", tmp, strerror(errno));
        goto out;
    }
    r = 0;
out:
    if (d) {
        closedir(d);
    }
    for (size_t i = 0; i < nfiles; i++) {
        free(files[i]);
    }
    if (r < 0 && tmp) {
        (void)unlink(tmp);
    }
    free(img);
    free(tmp);
    return r;
}

static int qemu_prepare(struct vmm_backend *b, struct vmm_vm *vm, char *err, size_t err_size)
{
    const struct qemu_priv *p = b->priv;
    char *hda = wd_path(vm, "hda.img");
    int r = 0;
    if (!hda) {
        return -ENOMEM;
    }
    if (b->cfg->host_share_mode == SHARE_MODE_VHD &&
        (r = build_share_image(p, vm, err, err_size)) < 0) {
        goto out;
    }
    if (access(hda, F_OK) == 0 || !p->img_path[0]) {
        goto out; /* exists, or no qemu-img: the VM boots without a data disk */
    }
    char size[32], backing[PATH_MAX + 64];
    snprintf(size, sizeof(size), "%uG", vm->disk_gb);
    char *argv[10];
    size_t n = 0;
    argv[n++] = (char *)p->img_path;
    argv[n++] = "create";
    argv[n++] = "-f";
    argv[n++] = "qcow2";
    if (vm->image && vm->image->hda) {
        snprintf(backing, sizeof(backing), "backing_file=%s,backing_fmt=qcow2", vm->image->hda);
        argv[n++] = "-o";
        argv[n++] = backing;
    }
    argv[n++] = hda;
    argv[n++] = size;
    argv[n] = NULL;
    if ((r = run_wait(argv)) < 0) {
        snprintf(err, err_size, "qemu-img create %s failed", hda);
        (void)unlink(hda);
    }
out:
    free(hda);
    return r;
}

/* Field 22 (starttime) of /proc/<pid>/stat; 0 when unreadable. Also the state letter. */
static unsigned long long proc_starttime(pid_t pid, char *state)
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
    char *p = strrchr(buf, ')'); /* comm may contain spaces */
    if (!p) {
        return 0;
    }
    p++;
    unsigned long long st = 0;
    char s = '?';
    /* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
     * stime cutime cstime priority nice threads itreal starttime(22) */
    if (sscanf(p,
               " %c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %*u %*u %*d %*d %*d %*d %*d %*d %llu",
               &s, &st) != 2) {
        return 0;
    }
    if (state) {
        *state = s;
    }
    return st;
}

static int write_pid_file(const struct vmm_vm *vm, pid_t pid)
{
    char text[64];
    int n = snprintf(text, sizeof(text), "%d %llu\n", (int)pid, proc_starttime(pid, NULL));
    return ds_write_file_atomic(vm->pid_file, text, (size_t)n, 0644);
}

static pid_t read_pid_file(const struct vmm_vm *vm, unsigned long long *out_start)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (ds_read_file(vm->pid_file, 128, &data, &len) < 0) {
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

static bool qemu_is_running(struct vmm_backend *b, struct vmm_vm *vm, pid_t *out_pid)
{
    (void)b;
    unsigned long long want = 0;
    pid_t pid = read_pid_file(vm, &want);
    if (pid <= 0) {
        return false;
    }
    int status;
    pid_t w = waitpid(pid, &status, WNOHANG); /* reaps our own children */
    if (w == pid) {
        return false;
    }
    char state = '?';
    unsigned long long st = proc_starttime(pid, &state);
    if (st == 0 || st != want || state == 'Z' || state == 'X') {
        return false;
    }
    if (out_pid) {
        *out_pid = pid;
    }
    return true;
}

static int qemu_start(struct vmm_backend *b, struct vmm_vm *vm, pid_t *out_pid, char *err,
                      size_t err_size)
{
    const struct qemu_priv *p = b->priv;
    const struct vmm_config *c = b->cfg;
    char **argv = NULL;
    size_t argc = 0;
    struct ds_qemu_error qerr = {{0}};
    char mac[18];
    char *hda = wd_path(vm, "hda.img");
    char *qmp = c->qmp_socket ? wd_path(vm, "qmp.sock") : NULL;
    /* vhd: the FAT image qemu_prepare built; 9p and vvfat export the directory itself */
    char *share_img = c->host_share_mode == SHARE_MODE_VHD ? wd_path(vm, "shared.img") : NULL;
    struct ds_qemu_port ports[VMM_PORTS_MAX];
    int r;

    if (!hda || (c->qmp_socket && !qmp) || (c->host_share_mode == SHARE_MODE_VHD && !share_img)) {
        r = -ENOMEM;
        goto out;
    }
    if (!vm->image) {
        snprintf(err, err_size, "VM image is not available");
        r = -DS_E_NOT_FOUND;
        goto out;
    }
    if ((r = ds_qemu_mac_derive(vm->id, 0, "", mac)) < 0) {
        snprintf(err, err_size, "cannot derive the MAC address");
        goto out;
    }
    struct ds_qemu_nic nic = {
        .mode = DS_QEMU_NET_USER,
        .mac = mac,
        .net = c->net_net,
        .dhcp_start = c->net_dhcp_start,
        .restrict_net = c->net_restrict,
    };
    if (c->net_mode == 1) {
        nic.mode = DS_QEMU_NET_BRIDGE;
        nic.bridge = c->net_bridge;
    }
    for (size_t i = 0; i < vm->port_count && i < VMM_PORTS_MAX; i++) {
        ports[i] = (struct ds_qemu_port){vm->ports[i].protocol, vm->ports[i].address,
                                         vm->ports[i].from, vm->ports[i].to};
    }
    static const enum ds_qemu_share_mode share_modes[] = {DS_QEMU_SHARE_9P, DS_QEMU_SHARE_VHD,
                                                          DS_QEMU_SHARE_VVFAT};
    struct ds_qemu_config qc = {
        .qemu_path = p->path,
        .qemu_version = p->version,
        .platform = DS_QEMU_PLATFORM_NONE, /* TDX needs a TDX host; this VMM runs no-TEE */
        .accel = p->kvm ? DS_QEMU_ACCEL_KVM : DS_QEMU_ACCEL_TCG,
        .run_as_user = c->user && c->user[0] ? c->user : NULL,
        .vcpus = vm->vcpu,
        .memory_mb = vm->memory_mb,
        .hugepages = vm->hugepages,
        .bios = vm->image->bios,
        .kernel = vm->image->kernel,
        .initrd = vm->image->initrd,
        .cmdline = vm->image->cmdline,
        .rootfs = vm->image->rootfs,
        .image_name = vm->image->name,
        .data_disk = access(hda, F_OK) == 0 ? hda : NULL,
        .share_mode = share_modes[c->host_share_mode],
        .share_path = share_img ? share_img : vm->shared_dir,
        .share_ro = vm->image->shared_ro,
        .nics = &nic,
        .nic_count = 1,
        .ports = ports,
        .port_count = vm->port_count,
        .host_api = p->vhost_vsock ? DS_QEMU_HOST_API_VSOCK : DS_QEMU_HOST_API_SERIAL,
        .host_api_socket = p->vhost_vsock ? NULL : vm->host_api_socket,
        .cid = vm->cid,
        .serial_log = vm->serial_log,
        .qmp_socket = qmp,
    };
    if ((r = ds_qemu_build_argv(&qc, &argv, &argc, &qerr)) < 0) {
        snprintf(err, err_size, "failed to build the QEMU command line: %s",
                 qerr.msg[0] ? qerr.msg : ds_strerror(r));
        goto out;
    }
    int out_fd = open(vm->stdout_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int err_fd = open(vm->stderr_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0 || err_fd < 0) {
        r = -errno;
        snprintf(err, err_size, "cannot open the VM logs: %s", strerror(errno));
        if (out_fd >= 0) {
            close(out_fd);
        }
        if (err_fd >= 0) {
            close(err_fd);
        }
        goto out;
    }
    pid_t pid = fork();
    if (pid < 0) {
        r = -errno;
        snprintf(err, err_size, "fork: %s", strerror(errno));
        close(out_fd);
        close(err_fd);
        goto out;
    }
    if (pid == 0) {
        /* child: own session (survives the VMM and its signals), logs, workdir */
        setsid();
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
        }
        dup2(out_fd, 1);
        dup2(err_fd, 2);
        if (chdir(vm->workdir) < 0) {
            _exit(126);
        }
        /* the child records itself before exec: a VMM killed right after fork() still
         * finds this process at restart instead of starting a second one */
        if (write_pid_file(vm, getpid()) < 0) {
            _exit(125);
        }
        execv(argv[0], argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(out_fd);
    close(err_fd);
    /* wait (briefly) for the child's pid file */
    bool recorded = false;
    for (int i = 0; i < PID_WAIT_STEPS && !recorded; i++) {
        unsigned long long st = 0;
        if (read_pid_file(vm, &st) == pid) {
            recorded = true;
            break;
        }
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) {
            break;
        }
        usleep(PID_WAIT_STEP_US);
    }
    if (!recorded) {
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0);
        snprintf(err, err_size, "QEMU process did not start (pid file not written)");
        r = -DS_E_IO;
        goto out;
    }
    *out_pid = pid;
    r = 0;
out:
    ds_qemu_argv_free(argv);
    free(hda);
    free(qmp);
    free(share_img);
    return r;
}

static int qemu_stop(struct vmm_backend *b, struct vmm_vm *vm, bool graceful, char *err,
                     size_t err_size)
{
    pid_t pid = 0;
    if (!qemu_is_running(b, vm, &pid)) {
        return 0;
    }
    /* the process leads its own session: signal the group (sudo / taskset wrappers too) */
    if (kill(-pid, graceful ? SIGTERM : SIGKILL) < 0 &&
        kill(pid, graceful ? SIGTERM : SIGKILL) < 0) {
        snprintf(err, err_size, "kill %d: %s", (int)pid, strerror(errno));
        return -errno;
    }
    if (!graceful) {
        /* SIGKILL is final; reap our child right away so status reads "stopped" */
        for (int i = 0; i < 50 && qemu_is_running(b, vm, NULL); i++) {
            usleep(2000);
        }
    }
    return 0;
}

static void qemu_destroy(struct vmm_backend *b, struct vmm_vm *vm)
{
    (void)b;
    (void)unlink(vm->pid_file);
    free(vm->backend_data);
    vm->backend_data = NULL;
}

const struct vmm_backend_ops vmm_qemu_backend = {
    .name = "qemu",
    .init = qemu_init,
    .done = qemu_done,
    .usable = qemu_usable,
    .prepare = qemu_prepare,
    .start = qemu_start,
    .stop = qemu_stop,
    .is_running = qemu_is_running,
    .destroy = qemu_destroy,
};
