/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway's WireGuard interface, driven through the `wg` tool (wireguard-tools), so it
 * works the same with kernel WireGuard and with wireguard-go (whose UAPI socket under
 * /var/run/wireguard `wg` finds by itself). Spec host-side.md §4.3: each registered instance is
 * a peer with AllowedIPs <ip>/32 and PersistentKeepalive 25; handshakes come from
 * `wg show <if> dump`. If the interface does not exist, `ip link add <if> type wireguard` is
 * tried (kernel module); with neither, start-up fails with a message that says so (or run with
 * core.wg.enabled = false). Commands are exec'd directly (no shell) with a bounded output.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "gw_ctl.h"

#define CMD_OUTPUT_MAX (4 * 1024 * 1024)
#define CMD_ERR_MAX    512
#define CMD_TIMEOUT_MS 10000
#define CMD_ARGS_MAX   16
#define EXIT_NOT_FOUND 127

/*
 * Run argv (PATH lookup), capture stdout (into *out when out is non-NULL) and the first bytes
 * of stderr (into errbuf). Returns the exit status (>= 0), or -errno / -DS_E_LIMIT.
 */
static int run(char *const argv[], char **out, char *errbuf, size_t errbuf_size)
{
    int op[2] = {-1, -1}, ep[2] = {-1, -1};
    struct ds_buf ob, eb;
    pid_t pid = -1;
    int r = 0, status = 0;
    ds_buf_init(&ob, CMD_OUTPUT_MAX);
    ds_buf_init(&eb, CMD_ERR_MAX);
    if (pipe2(op, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
        r = -errno;
        goto out;
    }
    pid = fork();
    if (pid < 0) {
        r = -errno;
        goto out;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) {
            dup2(devnull, 0);
        }
        dup2(op[1], 1);
        dup2(ep[1], 2);
        signal(SIGPIPE, SIG_DFL);
        execvp(argv[0], argv);
        _exit(EXIT_NOT_FOUND);
    }
    close(op[1]);
    close(ep[1]);
    op[1] = ep[1] = -1;
    struct pollfd pf[2] = {{op[0], POLLIN, 0}, {ep[0], POLLIN, 0}};
    int open_fds = 2;
    while (open_fds > 0) {
        int n = poll(pf, 2, CMD_TIMEOUT_MS);
        if (n == 0) {
            kill(pid, SIGKILL);
            r = -ETIMEDOUT;
            break;
        }
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            r = -errno;
            break;
        }
        for (int i = 0; i < 2; i++) {
            if (pf[i].fd < 0 || !(pf[i].revents & (POLLIN | POLLHUP | POLLERR))) {
                continue;
            }
            char buf[4096];
            ssize_t k = read(pf[i].fd, buf, sizeof(buf));
            if (k <= 0) {
                pf[i].fd = -1;
                open_fds--;
                continue;
            }
            struct ds_buf *b = i == 0 ? &ob : &eb;
            if (ds_buf_append(b, buf, (size_t)k) < 0 && i == 0) {
                kill(pid, SIGKILL);
                r = -DS_E_LIMIT;
            }
        }
        if (r < 0) {
            break;
        }
    }
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (r == 0) {
        r = WIFEXITED(status) ? WEXITSTATUS(status) : 128;
    }
    if (errbuf_size) {
        size_t n = eb.len;
        while (n > 0 && (eb.data[n - 1] == '\n' || eb.data[n - 1] == '\r')) {
            n--;
        }
        snprintf(errbuf, errbuf_size, "%.*s", (int)n, eb.data ? (const char *)eb.data : "");
    }
    if (r == 0 && out) {
        if (!ob.data && ds_buf_append(&ob, "", 0) < 0) {
            r = -ENOMEM;
        } else {
            size_t len;
            ds_buf_steal(&ob, (uint8_t **)out, &len);
        }
    }
out:
    for (int i = 0; i < 2; i++) {
        if (op[i] >= 0) {
            close(op[i]);
        }
        if (ep[i] >= 0) {
            close(ep[i]);
        }
    }
    ds_buf_done(&ob);
    ds_buf_done(&eb);
    return r;
}

/* Run and turn a failure into err "<what>: <stderr or exit status>". */
static int run_checked(char *const argv[], char **out, const char *what, char *err, size_t err_size)
{
    char e[CMD_ERR_MAX] = "";
    int r = run(argv, out, e, sizeof(e));
    if (r == 0) {
        return 0;
    }
    if (r == EXIT_NOT_FOUND && !e[0]) {
        snprintf(err, err_size, "%s: the `%s` tool is not installed (wireguard-tools)", what,
                 argv[0]);
        return -ENOENT;
    }
    if (r > 0) {
        snprintf(err, err_size, "%s: `%s` failed: %s", what, argv[0], e[0] ? e : "exit status");
        return -DS_E_IO;
    }
    snprintf(err, err_size, "%s: %s", what, ds_strerror(r));
    return r;
}

int gw_wg_ready(const struct gw_wg *wg, char *err, size_t err_size)
{
    if (!wg->enabled) {
        snprintf(err, err_size, "WireGuard is disabled (core.wg.enabled = false)");
        return -DS_E_STATE;
    }
    char *argv[] = {"wg", "show", (char *)wg->iface, "public-key", NULL};
    char *o = NULL, what[64];
    snprintf(what, sizeof(what), "WireGuard interface %s", wg->iface);
    int r = run_checked(argv, &o, what, err, err_size);
    free(o);
    return r;
}

int gw_wg_setup(struct gw_wg *wg, const struct gw_config *cfg, const char *data_dir, char *err,
                size_t err_size)
{
    char e[GW_ERR_MAX] = "";
    char port[8];
    wg->enabled = cfg->wg_enabled;
    wg->iface = cfg->wg_interface;
    if (!wg->enabled) {
        return 0;
    }
    if (gw_wg_ready(wg, e, sizeof(e)) < 0) {
        char *add[] = {"ip", "link", "add", (char *)wg->iface, "type", "wireguard", NULL};
        char e2[GW_ERR_MAX] = "";
        if (run_checked(add, NULL, "ip link add", e2, sizeof(e2)) < 0 ||
            gw_wg_ready(wg, e, sizeof(e)) < 0) {
            snprintf(err, err_size,
                     "WireGuard interface %s is not available (%s) and cannot be created (%s): "
                     "load the kernel module, or start `wireguard-go %s`, or set "
                     "core.wg.enabled = false",
                     wg->iface, e, e2, wg->iface);
            return -DS_E_STATE;
        }
    }
    snprintf(wg->key_path, sizeof(wg->key_path), "%s/wg.key", data_dir);
    size_t klen = strlen(cfg->wg_private_key);
    int r = ds_write_file_atomic(wg->key_path, cfg->wg_private_key, klen, 0600);
    if (r < 0) {
        snprintf(err, err_size, "writing %s: %s", wg->key_path, ds_strerror(r));
        return r;
    }
    snprintf(port, sizeof(port), "%u", (unsigned)cfg->wg_listen_port);
    char *set[] = {"wg", "set", (char *)wg->iface, "private-key", wg->key_path, "listen-port",
                   port, NULL};
    DS_TRY(run_checked(set, NULL, "wg set private-key", err, err_size));
    /* Best effort: the address and link state (needs CAP_NET_ADMIN; an existing address is
     * fine). */
    char *addr[] = {"ip", "addr", "replace", (char *)cfg->wg_ip, "dev", (char *)wg->iface, NULL};
    char *up[] = {"ip", "link", "set", (char *)wg->iface, "up", NULL};
    (void)run(addr, NULL, e, sizeof(e));
    (void)run(up, NULL, e, sizeof(e));
    return 0;
}

int gw_wg_set_peer(const struct gw_wg *wg, const char *public_key, const char *ip, char *err,
                   size_t err_size)
{
    char allowed[GW_IP4_TEXT_MAX + 4];
    snprintf(allowed, sizeof(allowed), "%s/32", ip);
    char *argv[] = {"wg",          "set",   (char *)wg->iface,      "peer", (char *)public_key,
                    "allowed-ips", allowed, "persistent-keepalive", "25",   NULL};
    return run_checked(argv, NULL, "WireGuard peer", err, err_size);
}

int gw_wg_remove_peer(const struct gw_wg *wg, const char *public_key, char *err, size_t err_size)
{
    char *argv[] = {"wg", "set", (char *)wg->iface, "peer", (char *)public_key, "remove", NULL};
    return run_checked(argv, NULL, "WireGuard peer removal", err, err_size);
}

int gw_wg_dump(const struct gw_wg *wg, char **out, char *err, size_t err_size)
{
    char *argv[] = {"wg", "show", (char *)wg->iface, "dump", NULL};
    return run_checked(argv, out, "wg show dump", err, err_size);
}
