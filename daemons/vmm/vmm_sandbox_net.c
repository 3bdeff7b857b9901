/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Networking of the sandbox backend (docs/sandbox.md "Network"): one host bridge (dstack-br0,
 * 10.213.77.1/24, created on first use), one veth pair per sandbox (host end "dsv<hex>" on the
 * bridge, guest end eth0 in the sandbox's network namespace), guest addresses 10.213.77.2-254
 * kept per VM in <workdir>/sandbox/ip and leased host-wide (/run/dstack-sandbox/ip/<n>), and the
 * port mappings served by a small userspace TCP forwarder process (host ADDR:PORT -> guest
 * IP:PORT). The forwarder runs in its own session (it survives a VMM restart), records itself
 * in <workdir>/sandbox/forwarder.pid and exits when the sandbox's init exits (pidfd). UDP
 * mappings are refused with an explicit error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dstack/crypto.h"
#include "vmm_sandbox.h"

#define FWD_PAIRS_MAX  256   /* concurrent forwarded connections per VM */
#define FWD_BUF        16384 /* bytes buffered per direction */
#define FWD_FD_BASE    1000  /* where the forwarder keeps its inherited descriptors */
#define FWD_BACKLOG    64
#define FWD_WAIT_STEPS 500 /* x 2 ms for the forwarder's pid file */

static int ip_cmd(char *a1, char *a2, char *a3, char *a4, char *a5, char *a6, char *a7, char *a8,
                  char *a9, char *a10)
{
    char ip[PATH_MAX];
    if (!sbx_which("ip", ip, sizeof(ip))) {
        return -ENOENT;
    }
    char *argv[] = {ip, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, NULL};
    return sbx_run(argv);
}

int sbx_net_bridge_setup(char *err, size_t err_size)
{
    struct stat st;
    if (stat("/sys/class/net/" SBX_BRIDGE, &st) != 0 &&
        ip_cmd("link", "add", SBX_BRIDGE, "type", "bridge", NULL, NULL, NULL, NULL, NULL) < 0) {
        snprintf(err, err_size, "cannot create the bridge %s", SBX_BRIDGE);
        return -DS_E_IO;
    }
    /* the address may exist already: ignore that failure, check below by bringing it up */
    (void)ip_cmd("addr", "add", SBX_GATEWAY "/24", "dev", SBX_BRIDGE, NULL, NULL, NULL, NULL, NULL);
    if (ip_cmd("link", "set", SBX_BRIDGE, "up", NULL, NULL, NULL, NULL, NULL, NULL) < 0) {
        snprintf(err, err_size, "cannot bring up the bridge %s", SBX_BRIDGE);
        return -DS_E_IO;
    }
    return 0;
}

void sbx_net_host_ifname(const char *id, char out[SBX_IFNAME_MAX])
{
    uint8_t h[DS_SHA256_LEN];
    char hex[DS_SHA256_LEN * 2 + 1];
    ds_sha256(id, strlen(id), h);
    ds_hex_encode(h, DS_SHA256_LEN, hex);
    snprintf(out, SBX_IFNAME_MAX, "dsv%.10s", hex);
}

static int read_ip_file(const char *path, unsigned *out)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int r = ds_read_file(path, 64, &data, &len);
    if (r < 0) {
        return r;
    }
    char text[65];
    memcpy(text, data, len);
    text[len] = '\0';
    free(data);
    unsigned host = 0;
    if (sscanf(text, SBX_SUBNET_PREFIX "%u", &host) != 1 || host < SBX_HOST_MIN ||
        host > SBX_HOST_MAX) {
        return -DS_E_FORMAT;
    }
    *out = host;
    return 0;
}

static void lease_path(unsigned host, char *out, size_t size)
{
    snprintf(out, size, SBX_LEASE_DIR "/%u", host);
}

/* The workdir a lease names; "" when unreadable. */
static void lease_owner(unsigned host, char *out, size_t size)
{
    char path[64];
    uint8_t *data = NULL;
    size_t len = 0;
    out[0] = '\0';
    lease_path(host, path, sizeof(path));
    if (ds_read_file(path, PATH_MAX, &data, &len) == 0) {
        snprintf(out, size, "%.*s", (int)len, (const char *)data);
        free(data);
    }
}

/* A lease is stale when its owner's <workdir>/sandbox/ip no longer names that address. */
static bool lease_stale(unsigned host, const char *owner)
{
    char path[PATH_MAX + 16];
    unsigned h = 0;
    if (!owner[0]) {
        return true;
    }
    snprintf(path, sizeof(path), "%s/sandbox/ip", owner);
    return read_ip_file(path, &h) < 0 || h != host;
}

static int lease_take(unsigned host, const char *workdir)
{
    char path[64];
    lease_path(host, path, sizeof(path));
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        return -errno;
    }
    size_t n = strlen(workdir);
    int r = write(fd, workdir, n) == (ssize_t)n ? 0 : -DS_E_IO;
    close(fd);
    if (r < 0) {
        (void)unlink(path);
    }
    return r;
}

int sbx_net_assign_ip(const struct vmm_vm *vm, char ip[SBX_IP_MAX], char *err, size_t err_size)
{
    char path[PATH_MAX], owner[PATH_MAX];
    unsigned host = 0;
    snprintf(path, sizeof(path), "%s/sandbox/ip", vm->workdir);
    if ((mkdir("/run/dstack-sandbox", 0755) < 0 && errno != EEXIST) ||
        (mkdir(SBX_LEASE_DIR, 0755) < 0 && errno != EEXIST)) {
        snprintf(err, err_size, "cannot create " SBX_LEASE_DIR ": %s", strerror(errno));
        return -errno;
    }
    if (read_ip_file(path, &host) == 0) {
        lease_owner(host, owner, sizeof(owner));
        bool mine = strcmp(owner, vm->workdir) == 0;
        if (!mine && lease_stale(host, owner)) {
            char lp[64];
            lease_path(host, lp, sizeof(lp));
            (void)unlink(lp);
            mine = lease_take(host, vm->workdir) == 0;
        }
        if (mine) {
            snprintf(ip, SBX_IP_MAX, SBX_SUBNET_PREFIX "%u", host);
            return 0;
        }
        (void)unlink(path); /* another sandbox holds it now: pick a new one */
    }
    for (host = SBX_HOST_MIN; host <= SBX_HOST_MAX; host++) {
        if (lease_take(host, vm->workdir) == 0) {
            break;
        }
        lease_owner(host, owner, sizeof(owner));
        if (lease_stale(host, owner)) {
            char lp[64];
            lease_path(host, lp, sizeof(lp));
            (void)unlink(lp);
            if (lease_take(host, vm->workdir) == 0) {
                break;
            }
        }
    }
    if (host > SBX_HOST_MAX) {
        snprintf(err, err_size, "no free sandbox address in " SBX_SUBNET_PREFIX "0/24");
        return -DS_E_LIMIT;
    }
    snprintf(ip, SBX_IP_MAX, SBX_SUBNET_PREFIX "%u", host);
    char text[SBX_IP_MAX + 1];
    int n = snprintf(text, sizeof(text), "%s\n", ip);
    int r = ds_write_file_atomic(path, text, (size_t)n, 0644);
    if (r < 0) {
        snprintf(err, err_size, "cannot write %s: %s", path, ds_strerror(r));
        sbx_net_release_ip(vm);
    }
    return r;
}

void sbx_net_release_ip(const struct vmm_vm *vm)
{
    char path[PATH_MAX], owner[PATH_MAX];
    unsigned host = 0;
    snprintf(path, sizeof(path), "%s/sandbox/ip", vm->workdir);
    if (read_ip_file(path, &host) < 0) {
        return;
    }
    lease_owner(host, owner, sizeof(owner));
    if (strcmp(owner, vm->workdir) == 0) {
        char lp[64];
        lease_path(host, lp, sizeof(lp));
        (void)unlink(lp);
    }
    (void)unlink(path);
}

void sbx_net_veth_remove(const char *id)
{
    char ifn[SBX_IFNAME_MAX], path[64];
    sbx_net_host_ifname(id, ifn);
    snprintf(path, sizeof(path), "/sys/class/net/%s", ifn);
    if (access(path, F_OK) == 0) {
        (void)ip_cmd("link", "del", ifn, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
    }
}

int sbx_net_veth_setup(const char *id, pid_t pid, char *err, size_t err_size)
{
    char ifn[SBX_IFNAME_MAX], pidtext[16];
    sbx_net_host_ifname(id, ifn);
    snprintf(pidtext, sizeof(pidtext), "%d", (int)pid);
    sbx_net_veth_remove(id); /* a leftover of a crashed start */
    if (ip_cmd("link", "add", ifn, "type", "veth", "peer", "name", "eth0", "netns", pidtext) < 0 ||
        ip_cmd("link", "set", ifn, "master", SBX_BRIDGE, "up", NULL, NULL, NULL, NULL) < 0) {
        snprintf(err, err_size, "cannot create the veth pair %s for the sandbox", ifn);
        sbx_net_veth_remove(id);
        return -DS_E_IO;
    }
    return 0;
}

int sbx_net_guest_config(const char *ip)
{
    char addr[SBX_IP_MAX + 4];
    snprintf(addr, sizeof(addr), "%s/%d", ip, SBX_PREFIX_LEN);
    int r;
    if ((r = ip_cmd("link", "set", "lo", "up", NULL, NULL, NULL, NULL, NULL, NULL)) < 0 ||
        (r = ip_cmd("addr", "add", addr, "dev", "eth0", NULL, NULL, NULL, NULL, NULL)) < 0 ||
        (r = ip_cmd("link", "set", "eth0", "up", NULL, NULL, NULL, NULL, NULL, NULL)) < 0 ||
        (r = ip_cmd("route", "add", "default", "via", SBX_GATEWAY, NULL, NULL, NULL, NULL, NULL)) <
            0) {
        return r;
    }
    return 0;
}

/* ---- the forwarder ----------------------------------------------------------------------------
 */

struct fwd_dir {
    char buf[FWD_BUF];
    size_t len, off;
    bool eof; /* source closed: shut down the write side once drained */
};

struct fwd_pair {
    int c, g; /* client, guest */
    bool connecting;
    struct fwd_dir c2g, g2c;
};

static void fwd_pidfile_path(const struct vmm_vm *vm, char *out, size_t size)
{
    snprintf(out, size, "%s/sandbox/forwarder.pid", vm->workdir);
}

/* The forwarder recorded in path if that process still exists (possibly a zombie). */
static pid_t read_pid(const char *path)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if (ds_read_file(path, 64, &data, &len) < 0) {
        return 0;
    }
    char text[65];
    memcpy(text, data, len);
    text[len] = '\0';
    free(data);
    int pid = 0;
    unsigned long long st = 0;
    if (sscanf(text, "%d %llu", &pid, &st) != 2 || pid <= 1) {
        return 0;
    }
    return sbx_proc_starttime((pid_t)pid, NULL) == st ? (pid_t)pid : 0;
}

void sbx_fwd_reap(const struct vmm_vm *vm)
{
    char path[PATH_MAX];
    fwd_pidfile_path(vm, path, sizeof(path));
    pid_t pid = read_pid(path);
    if (pid > 0) {
        (void)waitpid(pid, NULL, WNOHANG); /* ECHILD after a VMM restart: init reaps it */
    }
}

void sbx_fwd_stop(const struct vmm_vm *vm)
{
    char path[PATH_MAX];
    fwd_pidfile_path(vm, path, sizeof(path));
    pid_t pid = read_pid(path);
    if (pid > 0) {
        (void)kill(pid, SIGKILL);
        (void)waitpid(pid, NULL, 0); /* ECHILD at once when it is not our child */
    }
    (void)unlink(path);
}

static void pair_close(struct fwd_pair *p)
{
    close(p->c);
    close(p->g);
    p->c = p->g = -1;
}

/* Move bytes src -> dir buffer -> dst; false when the pair is done. */
static bool pump_in(int src, struct fwd_dir *d)
{
    if (d->eof || d->len == FWD_BUF) {
        return true;
    }
    ssize_t n = read(src, d->buf + d->len, FWD_BUF - d->len);
    if (n > 0) {
        d->len += (size_t)n;
    } else if (n == 0) {
        d->eof = true;
    } else if (errno != EAGAIN && errno != EINTR) {
        return false;
    }
    return true;
}

static bool pump_out(int dst, struct fwd_dir *d)
{
    if (d->off < d->len) {
        ssize_t n = send(dst, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
        if (n > 0) {
            d->off += (size_t)n;
        } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
            return false;
        }
    }
    if (d->off == d->len) {
        d->off = d->len = 0;
        if (d->eof) {
            (void)shutdown(dst, SHUT_WR);
        }
    }
    return true;
}

static void fwd_loop(int pidfd, const int *lfd, const struct sockaddr_in *dest, size_t nl)
{
    static struct fwd_pair pairs[FWD_PAIRS_MAX];
    struct pollfd pfd[1 + VMM_PORTS_MAX + 2 * FWD_PAIRS_MAX];
    for (size_t i = 0; i < FWD_PAIRS_MAX; i++) {
        pairs[i].c = pairs[i].g = -1;
    }
    for (;;) {
        size_t n = 0;
        pfd[n++] = (struct pollfd){.fd = pidfd, .events = POLLIN};
        for (size_t i = 0; i < nl; i++) {
            pfd[n++] = (struct pollfd){.fd = lfd[i], .events = POLLIN};
        }
        size_t pbase = n;
        for (size_t i = 0; i < FWD_PAIRS_MAX; i++) {
            struct fwd_pair *p = &pairs[i];
            short ce = 0, ge = 0;
            if (p->c >= 0) {
                if (p->connecting) {
                    ge = POLLOUT;
                } else {
                    ce = (short)((!p->c2g.eof && p->c2g.len < FWD_BUF ? POLLIN : 0) |
                                 (p->g2c.len > p->g2c.off ? POLLOUT : 0));
                    ge = (short)((!p->g2c.eof && p->g2c.len < FWD_BUF ? POLLIN : 0) |
                                 (p->c2g.len > p->c2g.off ? POLLOUT : 0));
                }
            }
            pfd[pbase + 2 * i] = (struct pollfd){.fd = p->c, .events = ce};
            pfd[pbase + 2 * i + 1] = (struct pollfd){.fd = p->g, .events = ge};
        }
        n = pbase + 2 * FWD_PAIRS_MAX;
        if (poll(pfd, n, -1) < 0) {
            if (errno == EINTR) {
                continue;
            }
            _exit(1);
        }
        if (pfd[0].revents) {
            _exit(0); /* the sandbox is gone */
        }
        for (size_t i = 0; i < nl; i++) {
            if (!(pfd[1 + i].revents & POLLIN)) {
                continue;
            }
            int c = accept4(lfd[i], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (c < 0) {
                continue;
            }
            struct fwd_pair *slot = NULL;
            for (size_t k = 0; k < FWD_PAIRS_MAX && !slot; k++) {
                if (pairs[k].c < 0) {
                    slot = &pairs[k];
                }
            }
            int g = slot ? socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) : -1;
            if (g < 0) {
                close(c);
                continue;
            }
            if (connect(g, (const struct sockaddr *)&dest[i], sizeof(dest[i])) < 0 &&
                errno != EINPROGRESS) {
                close(c);
                close(g);
                continue;
            }
            memset(slot, 0, sizeof(*slot));
            slot->c = c;
            slot->g = g;
            slot->connecting = true;
        }
        for (size_t i = 0; i < FWD_PAIRS_MAX; i++) {
            struct fwd_pair *p = &pairs[i];
            short cr = pfd[pbase + 2 * i].revents, gr = pfd[pbase + 2 * i + 1].revents;
            if (p->c < 0 || (!cr && !gr)) {
                continue;
            }
            if (p->connecting) {
                int e = 0;
                socklen_t el = sizeof(e);
                if (getsockopt(p->g, SOL_SOCKET, SO_ERROR, &e, &el) < 0 || e != 0) {
                    pair_close(p);
                    continue;
                }
                p->connecting = false;
                continue;
            }
            bool ok = true;
            if (cr & (POLLIN | POLLHUP | POLLERR)) {
                ok = pump_in(p->c, &p->c2g);
            }
            if (ok && (gr & (POLLIN | POLLHUP | POLLERR))) {
                ok = pump_in(p->g, &p->g2c);
            }
            ok = ok && pump_out(p->g, &p->c2g) && pump_out(p->c, &p->g2c);
            if (!ok || (p->c2g.eof && p->g2c.eof && p->c2g.len == 0 && p->g2c.len == 0)) {
                pair_close(p);
            }
        }
    }
}

int sbx_fwd_start(const struct vmm_vm *vm, const char *guest_ip, pid_t guest_pid, char *err,
                  size_t err_size)
{
    int lfd[VMM_PORTS_MAX];
    struct sockaddr_in dest[VMM_PORTS_MAX];
    size_t nl = 0;
    int pidfd = -1;
    int r = 0;
    char pidpath[PATH_MAX];

    sbx_fwd_stop(vm);
    if (vm->port_count == 0) {
        return 0;
    }
    if (vm->port_count > VMM_PORTS_MAX) {
        snprintf(err, err_size, "too many port mappings");
        return -DS_E_LIMIT;
    }
    for (size_t i = 0; i < vm->port_count; i++) {
        const struct vmm_port_map *m = &vm->ports[i];
        if (strcmp(m->protocol, "tcp") != 0) {
            snprintf(err, err_size,
                     "port mapping %s %u -> %u: the sandbox backend forwards tcp only (udp is "
                     "not supported)",
                     m->protocol, m->from, m->to);
            r = -DS_E_UNSUPPORTED;
            goto fail;
        }
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(m->from)};
        const char *addr = m->address[0] ? m->address : "0.0.0.0";
        if (inet_pton(AF_INET, addr, &a.sin_addr) != 1) {
            snprintf(err, err_size, "port mapping %u: host address %.60s is not IPv4", m->from,
                     addr);
            r = -DS_E_FORMAT;
            goto fail;
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
            bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(fd, FWD_BACKLOG) < 0) {
            r = -errno;
            snprintf(err, err_size, "port mapping %s:%u: %s", addr, m->from, strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            goto fail;
        }
        lfd[nl] = fd;
        dest[nl] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(m->to)};
        (void)inet_pton(AF_INET, guest_ip, &dest[nl].sin_addr);
        nl++;
    }
    pidfd = (int)syscall(SYS_pidfd_open, guest_pid, 0);
    if (pidfd < 0) {
        r = -errno;
        snprintf(err, err_size, "pidfd_open: %s", strerror(errno));
        goto fail;
    }
    fwd_pidfile_path(vm, pidpath, sizeof(pidpath));
    (void)unlink(pidpath);
    pid_t child = fork();
    if (child < 0) {
        r = -errno;
        snprintf(err, err_size, "fork: %s", strerror(errno));
        goto fail;
    }
    if (child == 0) {
        /* the forwarder: own session (survives the VMM); the VMM reaps it (sbx_fwd_reap) */
        setsid();
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        signal(SIGPIPE, SIG_IGN);
        signal(SIGTERM, SIG_DFL);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, 0);
            dup2(devnull, 1);
            dup2(devnull, 2);
        }
        /* keep only the listeners and the pidfd (moved above FWD_FD_BASE) */
        int pf = fcntl(pidfd, F_DUPFD_CLOEXEC, FWD_FD_BASE);
        int kl[VMM_PORTS_MAX];
        for (size_t i = 0; i < nl; i++) {
            kl[i] = fcntl(lfd[i], F_DUPFD_CLOEXEC, FWD_FD_BASE + 1 + (int)i);
        }
        (void)syscall(SYS_close_range, 3u, (unsigned)FWD_FD_BASE - 1, 0u);
        (void)syscall(SYS_close_range, (unsigned)(FWD_FD_BASE + 1 + (int)nl), ~0u, 0u);
        (void)prctl(PR_SET_NAME, "dstack-sbx-fwd", 0, 0, 0);
        char text[64];
        int tn = snprintf(text, sizeof(text), "%d %llu\n", (int)getpid(),
                          sbx_proc_starttime(getpid(), NULL));
        if (ds_write_file_atomic(pidpath, text, (size_t)tn, 0644) < 0) {
            _exit(1);
        }
        fwd_loop(pf, kl, dest, nl);
        _exit(0);
    }
    for (int i = 0; i < FWD_WAIT_STEPS && read_pid(pidpath) <= 0; i++) {
        usleep(2000);
    }
    if (read_pid(pidpath) != child) {
        snprintf(err, err_size, "the port forwarder did not start");
        (void)kill(child, SIGKILL);
        (void)waitpid(child, NULL, 0);
        r = -DS_E_IO;
    }
fail:
    for (size_t i = 0; i < nl; i++) {
        close(lfd[i]);
    }
    if (pidfd >= 0) {
        close(pidfd);
    }
    return r;
}
