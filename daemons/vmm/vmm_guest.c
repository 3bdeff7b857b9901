/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ProxiedGuestApi at /guest/<Method> (host-side.md §1.3): Info, SysInfo, NetworkInfo,
 * ListContainers and Shutdown, each taking Id{id}, forwarded to the VM's guest agent
 * (service GuestApi at /api/<Method>, Empty request); ShutdownVm uses the same path. The agent
 * is reached through <workdir>/guest-api.sock when the backend provides one, else over vsock
 * <cid>:8000 (qemu). Sandbox VMs without such a socket are reached through the guest agent's
 * own socket inside the sandbox, /proc/<init pid>/root/var/run/dstack.sock (DstackGuest
 * service at /<Method>): Info maps to DstackGuest.Info (a superset of GuestInfo).
 *
 * dstack-c extension: GetAttestation {id, nonce: hex, 1-64 bytes} returns the guest's
 * GetQuoteResponse {quote, event_log, vm_config, report_data} (DstackGuest.GetQuote) for
 * report_data = SHA-512("dstack-verify-app:" || nonce), so a verifier outside the VM
 * (`dstack verify app`) can bind a fresh nonce into the quote. The report data is derived,
 * never the caller's bytes: a VMM API client must not get quotes over arbitrary report data
 * (e.g. an RA-TLS certificate's "ratls-cert:" hash, which would let it pose as the app).
 * (ShutdownVm of such a sandbox is a graceful stop, in vmm_api.c.) Sandbox VMs only (the qemu guest
 * agent has no host-facing endpoint for it).
 *
 * Each call is one HTTP/1.1 exchange on a worker thread (a guest that does not answer must not
 * stall the event loop), with a short timeout; the deferred pRPC call is answered back on the
 * loop. A VM that is not running, or whose agent does not answer, gets a clear error.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <linux/vm_sockets.h>

#include "dstack/eventlog.h"
#include "dstack/rpc.h"
#include "log.h"
#include "vmm.h"

#define GUEST_PORT            8000
#define GUEST_TIMEOUT_S       5
#define GUEST_REPLY_MAX       (4u * 1024 * 1024)
#define GUEST_METHOD_MAX      32
#define GUEST_PATH_MAX        64
#define GUEST_BODY_MAX        256 /* the largest request body: GetQuote {"report_data": 128 hex} */
#define GUEST_NONCE_MAX       64  /* GetAttestation nonce bytes */
#define VERIFY_APP_TAG        "dstack-verify-app" /* report_data tag; cli/verify_app.c too */
#define GUEST_QUOTE_TIMEOUT_S 30 /* a quote may take a while (TEE worker, simulator) */

struct guest_job {
    struct ds_rpc_call *call;
    struct event *done_ev;
    char vm_id[VMM_ID_MAX + 1];
    char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* "" = use vsock */
    uint32_t cid;
    char method[GUEST_METHOD_MAX];
    char path[GUEST_PATH_MAX]; /* HTTP path on the agent, e.g. "/api/Info" */
    char body[GUEST_BODY_MAX]; /* JSON request body */
    int timeout_s;
    bool empty_reply; /* ShutdownVm answers {} */
    json_t *result;
    char err[VMM_ERR_MAX];
};

static atomic_int guest_jobs_running;

void vmm_guest_drain(void)
{
    for (int i = 0;
         i < (GUEST_QUOTE_TIMEOUT_S * 3 + 2) * 100 && atomic_load(&guest_jobs_running) > 0; i++) {
        usleep(10000);
    }
}

static void set_timeouts(int fd, int seconds)
{
    struct timeval tv = {seconds, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

/* Runs on the worker thread: touches only the job. */
static int guest_connect(struct guest_job *j)
{
    int fd;
    if (j->sock_path[0]) {
        struct sockaddr_un a = {.sun_family = AF_UNIX};
        memcpy(a.sun_path, j->sock_path, strlen(j->sock_path) + 1);
        fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0) {
            set_timeouts(fd, j->timeout_s);
        }
        if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
            snprintf(j->err, sizeof(j->err), "guest agent of VM %s is not reachable: %s", j->vm_id,
                     strerror(errno));
            if (fd >= 0) {
                close(fd);
            }
            return -DS_E_NETWORK;
        }
        return fd;
    }
    struct sockaddr_vm va = {.svm_family = AF_VSOCK, .svm_cid = j->cid, .svm_port = GUEST_PORT};
    fd = socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0) {
        set_timeouts(fd, j->timeout_s);
    }
    if (fd < 0 || connect(fd, (struct sockaddr *)&va, sizeof(va)) < 0) {
        snprintf(j->err, sizeof(j->err),
                 "guest agent of VM %s is not reachable over vsock %u:%d: %s", j->vm_id, j->cid,
                 GUEST_PORT, strerror(errno));
        if (fd >= 0) {
            close(fd);
        }
        return -DS_E_NETWORK;
    }
    return fd;
}

static int guest_exchange(struct guest_job *j)
{
    int fd = guest_connect(j);
    if (fd < 0) {
        return fd;
    }
    char req[512 + GUEST_BODY_MAX];
    int n = snprintf(req, sizeof(req),
                     "POST %s?json HTTP/1.1\r\nHost: localhost\r\nContent-Type: "
                     "application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     j->path, strlen(j->body), j->body);
    struct ds_buf b;
    ds_buf_init(&b, GUEST_REPLY_MAX);
    int r = 0;
    if (write(fd, req, (size_t)n) != n) {
        snprintf(j->err, sizeof(j->err), "guest agent of VM %s: send failed: %s", j->vm_id,
                 strerror(errno));
        r = -DS_E_NETWORK;
        goto out;
    }
    char chunk[8192];
    ssize_t got;
    while ((got = read(fd, chunk, sizeof(chunk))) > 0) {
        if ((r = ds_buf_append(&b, chunk, (size_t)got)) < 0) {
            snprintf(j->err, sizeof(j->err), "guest agent of VM %s: reply too large", j->vm_id);
            goto out;
        }
    }
    if (got < 0 || b.len < 12 || memcmp(b.data, "HTTP/1.", 7) != 0) {
        snprintf(j->err, sizeof(j->err), "guest agent of VM %s: no valid reply", j->vm_id);
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
    json_t *res = body_len ? json_loadb((const char *)body, body_len, 0, NULL) : json_object();
    if (status != 200) {
        const char *m = json_string_value(json_object_get(res, "error"));
        snprintf(j->err, sizeof(j->err), "guest agent of VM %s: %s", j->vm_id,
                 m ? m : "request failed");
        json_decref(res);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    if (!res) {
        snprintf(j->err, sizeof(j->err), "guest agent of VM %s: reply is not JSON", j->vm_id);
        r = -DS_E_PROTOCOL;
        goto out;
    }
    j->result = res;
    r = 0;
out:
    ds_buf_done(&b);
    close(fd);
    return r;
}

static void *guest_job_run(void *arg)
{
    struct guest_job *j = arg;
    if (guest_exchange(j) < 0 && !j->err[0]) {
        snprintf(j->err, sizeof(j->err), "guest agent of VM %s: request failed", j->vm_id);
    }
    event_active(j->done_ev, 0, 0);
    atomic_fetch_sub(&guest_jobs_running, 1);
    return NULL;
}

static void guest_job_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct guest_job *j = arg;
    if (!j->result) {
        ds_rpc_call_reply_error(j->call, "%s%s", j->empty_reply ? "failed to shut down VM: " : "",
                                j->err);
    } else if (j->empty_reply) {
        json_decref(j->result);
        ds_rpc_call_reply_json(j->call, json_object());
    } else {
        ds_rpc_call_reply_json(j->call, j->result);
    }
    event_free(j->done_ev);
    free(j);
}

bool vmm_guest_has_api_socket(const struct vmm_vm_rec *vm)
{
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
    int n = snprintf(path, sizeof(path), "%s/guest-api.sock", vm->workdir);
    return n > 0 && (size_t)n < sizeof(path) && access(path, F_OK) == 0;
}

/* Where the agent of vm answers method: fills j->sock_path (or "" for vsock), j->path. */
static int guest_route(struct vmm *v, struct vmm_vm_rec *vm, struct guest_job *j, char *err,
                       size_t err_size)
{
    bool quote = strcmp(j->method, "GetQuote") == 0; /* only GetAttestation sends it */
    int n = snprintf(j->sock_path, sizeof(j->sock_path), "%s/guest-api.sock", vm->workdir);
    if (!quote && n > 0 && (size_t)n < sizeof(j->sock_path) && access(j->sock_path, F_OK) == 0) {
        snprintf(j->path, sizeof(j->path), "/api/%s", j->method);
        return 0;
    }
    j->sock_path[0] = '\0';
    if (v->cfg.backend == VMM_BACKEND_SANDBOX && vm->pid > 0 &&
        (quote || strcmp(j->method, "Info") == 0)) {
        n = snprintf(j->sock_path, sizeof(j->sock_path), "/proc/%d/root/var/run/dstack.sock",
                     (int)vm->pid);
        if (n > 0 && (size_t)n < sizeof(j->sock_path)) {
            snprintf(j->path, sizeof(j->path), "/%s", j->method);
            return 0;
        }
        j->sock_path[0] = '\0';
    }
    if (v->cfg.backend == VMM_BACKEND_QEMU && j->cid != 0 && !quote) {
        snprintf(j->path, sizeof(j->path), "/api/%s", j->method);
        return 0;
    }
    snprintf(err, err_size, "guest agent of VM %s is not reachable: no guest API endpoint%s",
             vm->id, quote ? " for GetAttestation (sandbox VMs only)" : "");
    return -DS_E_UNSUPPORTED;
}

static int guest_call(struct vmm *v, struct vmm_vm_rec *vm, struct ds_rpc_call *call,
                      const char *method, const char *body, bool empty_reply)
{
    struct guest_job *j = calloc(1, sizeof(*j));
    char err[VMM_ERR_MAX];
    if (!j) {
        return -ENOMEM;
    }
    j->call = call;
    j->empty_reply = empty_reply;
    j->cid = vm->bk.cid;
    j->timeout_s = body != NULL ? GUEST_QUOTE_TIMEOUT_S : GUEST_TIMEOUT_S;
    snprintf(j->vm_id, sizeof(j->vm_id), "%s", vm->id);
    snprintf(j->method, sizeof(j->method), "%s", method);
    snprintf(j->body, sizeof(j->body), "%s", body != NULL ? body : "{}");
    if (guest_route(v, vm, j, err, sizeof(err)) < 0) {
        free(j);
        return ds_rpc_call_error(call, "%s%s", empty_reply ? "failed to shut down VM: " : "", err);
    }
    j->done_ev = event_new(v->base, -1, 0, guest_job_done, j);
    pthread_t th;
    pthread_attr_t attr;
    if (!j->done_ev || pthread_attr_init(&attr) != 0) {
        if (j->done_ev) {
            event_free(j->done_ev);
        }
        free(j);
        return -ENOMEM;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    atomic_fetch_add(&guest_jobs_running, 1);
    int r = pthread_create(&th, &attr, guest_job_run, j);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        atomic_fetch_sub(&guest_jobs_running, 1);
        event_free(j->done_ev);
        free(j);
        return ds_rpc_call_error(call, "cannot start the guest request: %s", strerror(r));
    }
    return DS_RPC_DEFERRED;
}

int vmm_guest_call_deferred(struct vmm *v, struct vmm_vm_rec *vm, struct ds_rpc_call *call,
                            const char *method, bool empty_reply)
{
    return guest_call(v, vm, call, method, NULL, empty_reply);
}

static struct vmm_vm_rec *running_vm(struct ds_rpc_call *call, struct vmm *v, const json_t *params,
                                     int *rc)
{
    const json_t *idv = json_object_get(params, "id");
    const char *id = json_is_string(idv) ? json_string_value(idv) : "";
    struct vmm_vm_rec *vm = vmm_vm_id_valid(id) ? vmm_vm_find(v, id) : NULL;
    if (!vm) {
        *rc = ds_rpc_call_error(call, "VM not found: %.80s", id);
        return NULL;
    }
    vmm_vm_poll(v, vm);
    if (!vm->running) {
        *rc = ds_rpc_call_error(call, "VM is not running");
        return NULL;
    }
    return vm;
}

static int proxy(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    struct vmm *v = ctx;
    int rc = 0;
    struct vmm_vm_rec *vm = running_vm(call, v, params, &rc);
    if (!vm) {
        return rc;
    }
    return vmm_guest_call_deferred(v, vm, call, ds_rpc_call_method(call), false);
}

/* GetAttestation {id, nonce: hex of 1-64 bytes} -> the agent's GetQuote for the derived
 * report data. */
static int get_attestation(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    struct vmm *v = ctx;
    const json_t *nv = json_object_get(params, "nonce");
    const char *nonce = json_is_string(nv) ? json_string_value(nv) : NULL;
    size_t nonce_len = nonce ? json_string_length(nv) : 0;
    uint8_t raw[GUEST_NONCE_MAX], rd[DS_REPORT_DATA_SIZE];
    char rd_hex[2 * DS_REPORT_DATA_SIZE + 1];
    if (nonce == NULL || nonce_len == 0 || nonce_len > 2 * GUEST_NONCE_MAX || nonce_len % 2 != 0 ||
        strncmp(nonce, "0x", 2) == 0 || ds_hex_decode(nonce, nonce_len, raw, nonce_len / 2) < 0) {
        return ds_rpc_call_error(call, "nonce: expected hex of 1 to %d bytes", GUEST_NONCE_MAX);
    }
    if (ds_report_data_build(DS_REPORT_HASH_SHA512, VERIFY_APP_TAG, raw, nonce_len / 2, rd) < 0) {
        return ds_rpc_call_error(call, "cannot derive the report data");
    }
    ds_hex_encode(rd, sizeof(rd), rd_hex);
    int rc = 0;
    struct vmm_vm_rec *vm = running_vm(call, v, params, &rc);
    if (!vm) {
        return rc;
    }
    char body[GUEST_BODY_MAX];
    snprintf(body, sizeof(body), "{\"report_data\":\"%s\"}", rd_hex);
    return guest_call(v, vm, call, "GetQuote", body, false);
}

static const struct ds_rpc_method guest_methods[] = {
    {"Info", proxy, 0, 0},        {"SysInfo", proxy, 0, 0},
    {"NetworkInfo", proxy, 0, 0}, {"ListContainers", proxy, 0, 0},
    {"Shutdown", proxy, 0, 0},    {"GetAttestation", get_attestation, 0, 0},
};

const struct ds_rpc_service vmm_guest_service = {"ProxiedGuestApi", guest_methods,
                                                 DS_ARRAY_SIZE(guest_methods)};
