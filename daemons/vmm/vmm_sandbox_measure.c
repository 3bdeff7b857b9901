/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The sandbox backend's launch measurement (docs/sandbox.md "Measurement") and the simulated TD
 * each sandbox gets from dstack-tee-sim. A sandbox has no firmware or kernel, so its registers
 * measure what plays their role:
 *   MRTD  = SHA-384(the image's `bios` file)            (metadata.json without bios: of
 *                                                        metadata.json itself)
 *   RTMR0 = replay of one event "sandbox-vm-config" (EV_PLATFORM_CONFIG_FLAGS), payload the
 *           VM configuration text, digest SHA-384(payload)
 *   RTMR1 = replay of "sandbox-init" (EV_EFI_BOOT_SERVICES_APPLICATION), payload the init path,
 *           digest SHA-384(init file in the image rootfs)
 *   RTMR2 = replay of "sandbox-cmdline" (EV_IPL, payload the cmdline, digest SHA-384(cmdline))
 *           then "sandbox-rootfs" (EV_IPL, payload "initrd", digest SHA-384(the image's
 *           `initrd` file = the rootfs manifest for sandbox images))
 * The events are handed to create_td as the TD's boot event log, so a verifier replays RTMR0-2
 * from the log exactly as for a real TD (RTMR[i] = SHA-384(RTMR[i] || digest)).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "dstack/crypto.h"
#include "dstack/eventlog.h"
#include "tee/tee_proto.h"
#include "vmm_sandbox.h"

#define EV_PLATFORM_CONFIG_FLAGS_T 0x0000000Au
#define EV_IPL_T                   0x0000000Du
#define EV_BOOT_SERVICES_APP_T     0x80000003u
#define SBX_HASH_CHUNK             65536
#define SBX_TEE_TIMEOUT_MS         5000
#define SBX_TEE_RESPONSE_MAX       (1024 * 1024)
#define SBX_CONFIG_TEXT_MAX        512

static int sha384_file(const char *path, uint8_t out[DS_SHA384_LEN])
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint8_t *buf = malloc(SBX_HASH_CHUNK);
    int r = -ENOMEM;
    if (!ctx || !buf || EVP_DigestInit_ex(ctx, EVP_sha384(), NULL) != 1) {
        goto out;
    }
    for (;;) {
        ssize_t n = read(fd, buf, SBX_HASH_CHUNK);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            r = -errno;
            goto out;
        }
        if (n == 0) {
            break;
        }
        if (EVP_DigestUpdate(ctx, buf, (size_t)n) != 1) {
            r = -DS_E_CRYPTO;
            goto out;
        }
    }
    unsigned int len = 0;
    r = EVP_DigestFinal_ex(ctx, out, &len) == 1 && len == DS_SHA384_LEN ? 0 : -DS_E_CRYPTO;
out:
    free(buf);
    EVP_MD_CTX_free(ctx);
    close(fd);
    return r;
}

static int add_event(struct ds_event_log *log, uint8_t rtmr[3][DS_SHA384_LEN], uint32_t imr,
                     uint32_t type, const char *name, const void *payload, size_t payload_len,
                     const uint8_t digest[DS_SHA384_LEN])
{
    struct ds_event ev = {
        .imr = imr,
        .event_type = type,
        .digest_len = DS_SHA384_LEN,
        .name = (char *)name,
        .payload = (uint8_t *)payload,
        .payload_len = payload_len,
        .version = 1,
    };
    memcpy(ev.digest, digest, DS_SHA384_LEN);
    int r = ds_eventlog_append(log, &ev);
    if (r == 0) {
        ds_sha384_v(rtmr[imr], 2, rtmr[imr], (size_t)DS_SHA384_LEN, digest, (size_t)DS_SHA384_LEN);
    }
    return r;
}

int sbx_measure(const struct vmm_vm *vm, const char *init_path, const char *init_guest,
                struct sbx_measure *out, char *err, size_t err_size)
{
    const struct vmm_image *img = vm->image;
    struct ds_event_log *log = NULL;
    uint8_t mrtd[DS_SHA384_LEN], d[DS_SHA384_LEN];
    uint8_t rtmr[3][DS_SHA384_LEN];
    char cfg[SBX_CONFIG_TEXT_MAX];
    char *json = NULL;
    char mpath[4096];
    int r;

    memset(rtmr, 0, sizeof(rtmr));
    snprintf(mpath, sizeof(mpath), "%s/metadata.json", img->dir);
    const char *fw = img->bios ? img->bios : mpath;
    if ((r = sha384_file(fw, mrtd)) < 0) {
        snprintf(err, err_size, "cannot measure %s: %s", fw, ds_strerror(r));
        return r;
    }
    if ((r = ds_eventlog_new(&log)) < 0) {
        return r;
    }
    /* RTMR0: the VM configuration (what the VMM gives the guest). */
    int n =
        snprintf(cfg, sizeof(cfg),
                 "{\"backend\":\"sandbox\",\"vcpu\":%u,\"memory_mb\":%u,\"disk_gb\":%u,"
                 "\"devices\":[\"net:veth\",\"host-share:dir\",\"data-disk:file\",\"tee:sim\"]}",
                 vm->vcpu, vm->memory_mb, vm->disk_gb);
    ds_sha384(cfg, (size_t)n, d);
    if ((r = add_event(log, rtmr, 0, EV_PLATFORM_CONFIG_FLAGS_T, "sandbox-vm-config", cfg,
                       (size_t)n, d)) < 0) {
        goto out;
    }
    /* RTMR1: the init binary (the sandbox's kernel). */
    if ((r = sha384_file(init_path, d)) < 0) {
        snprintf(err, err_size, "cannot measure the init %s: %s", init_path, ds_strerror(r));
        goto out;
    }
    if ((r = add_event(log, rtmr, 1, EV_BOOT_SERVICES_APP_T, "sandbox-init", init_guest,
                       strlen(init_guest), d)) < 0) {
        goto out;
    }
    /* RTMR2: cmdline, then the rootfs manifest (initrd). */
    const char *cmdline = img->cmdline ? img->cmdline : "";
    ds_sha384(cmdline, strlen(cmdline), d);
    if ((r = add_event(log, rtmr, 2, EV_IPL_T, "sandbox-cmdline", cmdline, strlen(cmdline), d)) <
        0) {
        goto out;
    }
    if (img->initrd) {
        if ((r = sha384_file(img->initrd, d)) < 0) {
            snprintf(err, err_size, "cannot measure %s: %s", img->initrd, ds_strerror(r));
            goto out;
        }
        if ((r = add_event(log, rtmr, 2, EV_IPL_T, "sandbox-rootfs", "initrd", 6, d)) < 0) {
            goto out;
        }
    }
    if ((r = ds_eventlog_to_json(log, 0, &json, NULL)) < 0) {
        snprintf(err, err_size, "cannot encode the boot event log: %s", ds_strerror(r));
        goto out;
    }
    ds_hex_encode(mrtd, DS_SHA384_LEN, out->mrtd);
    for (int i = 0; i < 3; i++) {
        ds_hex_encode(rtmr[i], DS_SHA384_LEN, out->rtmr[i]);
    }
    out->event_log_json = json;
    json = NULL;
    r = 0;
out:
    free(json);
    ds_eventlog_free(log);
    return r;
}

void sbx_measure_free(struct sbx_measure *m)
{
    free(m->event_log_json);
    m->event_log_json = NULL;
}

const char *sbx_tee_control(char *buf, size_t size)
{
    const char *dir = getenv(SBX_TEE_SIM_ENV);
    if (!dir || !dir[0]) {
        return NULL;
    }
    int n = snprintf(buf, size, "%s/control.sock", dir);
    return n > 0 && (size_t)n < size ? buf : NULL;
}

static int tee_call(const char *control, json_t *req, json_t **out, char *err, size_t err_size)
{
    int r = req ? ds_tee_proto_call(control, req, SBX_TEE_RESPONSE_MAX, SBX_TEE_TIMEOUT_MS, out,
                                    err, err_size)
                : -ENOMEM;
    json_decref(req);
    return r;
}

void sbx_tee_remove_td(const char *control, const char *id)
{
    char err[VMM_ERR_MAX];
    json_t *resp = NULL;
    if (tee_call(control, json_pack("{s:s,s:s}", "op", "remove_td", "name", id), &resp, err,
                 sizeof(err)) == 0) {
        json_decref(resp);
    }
}

int sbx_tee_create_td(const char *control, const char *id, const struct sbx_measure *m,
                      char *sock_out, size_t sock_size, char *err, size_t err_size)
{
    json_t *resp = NULL;
    json_t *log = json_loads(m->event_log_json, 0, NULL);
    if (!log) {
        return -ENOMEM;
    }
    /* a (re)start is a new boot: fresh registers, RTMR3 empty */
    sbx_tee_remove_td(control, id);
    json_t *req =
        json_pack("{s:s,s:s,s:s,s:s,s:s,s:s,s:o}", "op", "create_td", "name", id, "mrtd", m->mrtd,
                  "rtmr0", m->rtmr[0], "rtmr1", m->rtmr[1], "rtmr2", m->rtmr[2], "event_log", log);
    char sub[VMM_ERR_MAX] = "";
    int r = tee_call(control, req, &resp, sub, sizeof(sub));
    if (r < 0) {
        snprintf(err, err_size, "dstack-tee-sim create_td at %s: %s", control,
                 sub[0] ? sub : ds_strerror(r));
        return r;
    }
    const json_t *s = json_object_get(resp, "socket");
    if (!json_is_string(s) || json_string_length(s) >= sock_size) {
        snprintf(err, err_size, "dstack-tee-sim create_td: no socket in the answer");
        r = -DS_E_PROTOCOL;
    } else {
        memcpy(sock_out, json_string_value(s), json_string_length(s) + 1);
    }
    json_decref(resp);
    return r;
}
