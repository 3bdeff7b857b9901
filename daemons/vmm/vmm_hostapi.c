/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The host API a guest calls (host-side.md §1.7), service HostApi at /api/<Method>, served per
 * VM on a Unix socket in its workdir (<workdir>/host-api.sock, bound into sandbox guests; QEMU
 * guests on hosts without vhost-vsock reach it through a virtio-serial port whose chardev QEMU
 * connects to this socket: the guest's HTTP bytes arrive as an ordinary client connection).
 * The VM is identified by the socket it came in on, never by anything in the request.
 * - Info -> {name, version}
 * - Notify{event, payload}: boot.progress / boot.error / shutdown.progress update the VM's
 *   status fields ("powering off" also sets the desired state to stopped), instance.info
 *   replaces shared/.instance_info (atomic write, must be a JSON object); every event is kept
 *   in the VM's event ring; payloads over 4 KiB are dropped (§1.5).
 * - GetSealingKey: answers an explicit "not supported" error: this VMM has no SGX local key
 *   provider relay.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/rpc.h"
#include "log.h"
#include "vmm.h"

/* Idle limit of a host-API connection: a day (the guest may stay silent between boot and
 * shutdown reports; QEMU redials after a close anyway, reconnect=1). */
#define VMM_HOSTAPI_IDLE_TIMEOUT_MS (24u * 3600u * 1000u)

struct hostapi_ctx {
    struct vmm *v;
    char *vm_id; /* looked up on every call: the record may be gone */
    struct ds_rpc_site site;
};

static struct vmm_vm_rec *ctx_vm(struct hostapi_ctx *h)
{
    return vmm_vm_find(h->v, h->vm_id);
}

static int h_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    struct hostapi_ctx *h = ctx;
    *out = json_pack("{s:s,s:s}", "name", h->v->cfg.host_api_ident, "version", DS_VERSION);
    return *out ? 0 : -ENOMEM;
}

static void set_str(char **dst, const char *s)
{
    char *n = strdup(s);
    if (n) {
        free(*dst);
        *dst = n;
    }
}

static int h_notify(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct hostapi_ctx *h = ctx;
    struct vmm_vm_rec *vm = ctx_vm(h);
    const json_t *ev = json_object_get(params, "event");
    const json_t *pl = json_object_get(params, "payload");
    if (!vm) {
        return ds_rpc_call_error(call, "VM not found");
    }
    if (!json_is_string(ev) || (pl && !json_is_string(pl))) {
        return ds_rpc_call_error(call, "failed to decode request: event and payload are strings");
    }
    const char *event = json_string_value(ev);
    const char *payload = pl ? json_string_value(pl) : "";
    size_t plen = pl ? json_string_length(pl) : 0;
    *out = json_object();
    if (plen > VMM_EVENT_BODY_MAX || strlen(event) > 256) {
        log_warnx("vm %s: notify %.64s: payload of %zu bytes dropped", vm->id, event, plen);
        return 0;
    }
    if (strcmp(event, "boot.progress") == 0) {
        set_str(&vm->boot_progress, payload);
    } else if (strcmp(event, "boot.error") == 0) {
        set_str(&vm->boot_error, payload);
    } else if (strcmp(event, "shutdown.progress") == 0) {
        set_str(&vm->shutdown_progress, payload);
        if (strcmp(payload, "powering off") == 0 && vmm_state_set_started(vm, false) < 0) {
            log_warnx("vm %s: cannot save the desired state", vm->id);
        }
    } else if (strcmp(event, "instance.info") == 0) {
        json_t *j = json_loadb(payload, plen, JSON_REJECT_DUPLICATES, NULL);
        bool ok = json_is_object(j);
        json_decref(j);
        if (!ok) {
            json_decref(*out);
            *out = NULL;
            return ds_rpc_call_error(call, "instance.info payload must be a JSON object");
        }
        int r = vmm_state_write_shared(vm, ".instance_info", payload, plen);
        if (r < 0) {
            log_warnx("vm %s: writing .instance_info: %s", vm->id, ds_strerror(r));
        }
    } else {
        log_info("vm %s: guest event %.64s", vm->id, event);
    }
    vmm_vm_event(h->v, vm, event, payload);
    return 0;
}

static int h_sealing_key(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)params;
    (void)out;
    (void)ctx;
    return ds_rpc_call_error(call, "GetSealingKey is not supported by this VMM (no SGX local key "
                                   "provider relay)");
}

static const struct ds_rpc_method hostapi_methods[] = {
    {"Info", h_info, DS_RPC_NO_PARAMS, 0},
    {"Notify", h_notify, 0, 0},
    {"GetSealingKey", h_sealing_key, 0, 0},
};
static const struct ds_rpc_service hostapi_service = {"HostApi", hostapi_methods,
                                                      DS_ARRAY_SIZE(hostapi_methods)};
static const struct ds_rpc_mount hostapi_mounts[] = {{"/api/", {"HostApi."}, &hostapi_service}};

int vmm_hostapi_open(struct vmm *v, struct vmm_vm_rec *vm)
{
    if (vm->host_api) {
        return 0;
    }
    struct hostapi_ctx *h = calloc(1, sizeof(*h));
    if (!h) {
        return -ENOMEM;
    }
    h->v = v;
    h->vm_id = strdup(vm->id);
    h->site.mounts = hostapi_mounts;
    h->site.mount_count = DS_ARRAY_SIZE(hostapi_mounts);
    h->site.ctx = h;
    /* QEMU guests without vhost-vsock reach this server through one long-lived connection
     * that QEMU's virtio-serial chardev holds open for the VM's lifetime: the default 10 s
     * keep-alive idle timeout would close it before a TCG guest has booted. */
    struct ds_rpc_limits lim;
    ds_rpc_limits_default(&lim);
    lim.idle_timeout_ms = VMM_HOSTAPI_IDLE_TIMEOUT_MS;
    struct ds_rpc_server *s = NULL;
    int r = h->vm_id ? ds_rpc_server_new(v->base, &lim, &s) : -ENOMEM;
    if (r == 0) {
        r = ds_rpc_server_listen_unix(s, vm->host_api_socket, 0600, &h->site);
    }
    if (r < 0) {
        ds_rpc_server_free(s);
        free(h->vm_id);
        free(h);
        return r;
    }
    vm->host_api = s;
    vm->host_api_ctx = h;
    return 0;
}

void vmm_hostapi_close(struct vmm_vm_rec *vm)
{
    ds_rpc_server_free(vm->host_api);
    vm->host_api = NULL;
    struct hostapi_ctx *h = vm->host_api_ctx;
    if (h) {
        free(h->vm_id);
        free(h);
    }
    vm->host_api_ctx = NULL;
}
