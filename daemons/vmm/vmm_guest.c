/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ProxiedGuestApi at /guest/<Method> (host-side.md §1.3): Info, SysInfo, NetworkInfo,
 * ListContainers and Shutdown, each taking Id{id}, forwarded to the VM's guest agent
 * (service GuestApi at /api/<Method>, Empty request). The agent is reached through
 * <workdir>/guest-api.sock when the backend provides one (sandbox), else over vsock
 * <cid>:8000 (qemu). One blocking HTTP/1.1 exchange with a short timeout; a VM that is not
 * running or whose agent does not answer gets a clear error.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <linux/vm_sockets.h>

#include "dstack/rpc.h"
#include "log.h"
#include "vmm.h"

#define GUEST_PORT      8000
#define GUEST_TIMEOUT_S 5
#define GUEST_REPLY_MAX (4u * 1024 * 1024)

static int guest_connect(struct vmm *v, struct vmm_vm_rec *vm, char *err, size_t err_size)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int n = snprintf(path, sizeof(path), "%s/guest-api.sock", vm->workdir);
    int fd = -1;
    if (n > 0 && (size_t)n < sizeof(path) && access(path, F_OK) == 0) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        memcpy(a.sun_path, path, (size_t)n + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        struct timeval tv = {GUEST_TIMEOUT_S, 0};
        if (fd >= 0) {
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        }
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            snprintf(err, err_size, "guest agent of VM %s is not reachable: %s", vm->id,
                     strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            return -DS_E_NETWORK;
        }
        return fd;
    }
    if (v->cfg.backend != VMM_BACKEND_QEMU || vm->bk.cid == 0) {
        snprintf(err, err_size, "guest agent of VM %s is not reachable: no guest API endpoint",
                 vm->id);
        return -DS_E_NETWORK;
    }
    struct sockaddr_vm va = {.svm_family = AF_VSOCK, .svm_cid = vm->bk.cid, .svm_port = GUEST_PORT};
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        struct timeval tv = {GUEST_TIMEOUT_S, 0};
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&va, sizeof(va)) < 0) {
        snprintf(err, err_size, "guest agent of VM %s is not reachable over vsock %u:%d: %s",
                 vm->id, vm->bk.cid, GUEST_PORT, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -DS_E_NETWORK;
    }
    return fd;
}

int vmm_guest_call(struct vmm *v, struct vmm_vm_rec *vm, const char *method, json_t **out,
                   char *err, size_t err_size)
{
    int fd = guest_connect(v, vm, err, err_size);
    if (fd < 0) {
        return fd;
    }
    char req[512];
    int n = snprintf(req, sizeof(req),
                     "POST /api/%s?json HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                     "application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                     method);
    struct ds_buf b;
    ds_buf_init(&b, GUEST_REPLY_MAX);
    int r = 0;
    if (write(fd, req, (size_t)n) != n) {
        snprintf(err, err_size, "guest agent of VM %s: send failed: %s", vm->id, strerror(errno));
        r = -DS_E_NETWORK;
        goto out;
    }
    char chunk[8192];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof(chunk))) > 0) {
        if ((r = ds_buf_append(&b, chunk, (size_t)got)) < 0) {
            snprintf(err, err_size, "guest agent of VM %s: reply too large", vm->id);
            goto out;
        }
    }
    if (got < 0 || b.len < 12 || memcmp(b.data, "HTTP/1.", 7) != 0) {
        snprintf(err, err_size, "guest agent of VM %s: no valid reply", vm->id);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    int status = atoi((const char *)b.data + 9);
    const uint8_t *body = NULL;
    for (size_t i = 0; i + 3 < b.len; i++) {
        if (memcmp(b.data + i, "\r\n\r\n", 4) == 0) {
            body = b.data + i + 4;
            break;
        }
    }
    size_t body_len = body ? b.len - (size_t)(body - b.data) : 0;
    json_t *j = body_len ? json_loadb((const char *)body, body_len, 0, NULL) : json_object();
    if (status != 200) {
        const char *m = json_string_value(json_object_get(j, "error"));
        snprintf(err, err_size, "guest agent of VM %s: %s", vm->id, m ? m : "request failed");
        json_decref(j);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    if (!j) {
        snprintf(err, err_size, "guest agent of VM %s: reply is not JSON", vm->id);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    *out = j;
    r = 0;
out:
    ds_buf_done(&b);
    close(fd);
    return r;
}

static int proxy(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = ctx;
    const json_t *idv = json_object_get(params, "id");
    const char *id = json_is_string(idv) ? json_string_value(idv) : "";
    struct vmm_vm_rec *vm = vmm_vm_id_valid(id) ? vmm_vm_find(v, id) : NULL;
    char err[VMM_ERR_MAX];
    if (!vm) {
        return ds_rpc_call_error(call, "VM not found: %.80s", id);
    }
    vmm_vm_poll(v, vm);
    if (!vm->running) {
        return ds_rpc_call_error(call, "VM is not running");
    }
    if (vmm_guest_call(v, vm, ds_rpc_call_method(call), out, err, sizeof(err)) < 0) {
        return ds_rpc_call_error(call, "%s", err);
    }
    return 0;
}

static const struct ds_rpc_method guest_methods[] = {
    {"Info", proxy, 0, 0},           {"SysInfo", proxy, 0, 0},  {"NetworkInfo", proxy, 0, 0},
    {"ListContainers", proxy, 0, 0}, {"Shutdown", proxy, 0, 0},
};

const struct ds_rpc_service vmm_guest_service = {"ProxiedGuestApi", guest_methods,
                                                 DS_ARRAY_SIZE(guest_methods)};
