/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The VmConfig document (spec host-side §1.4, spec_version 1) derived from the same
 * ds_qemu_config the command line is built from. Verifiers and the KMS recompute MRTD and
 * RTMR0-2 from it (attestation §5.1), so every value here must describe the VM QEMU really
 * runs: effective vCPUs and memory after hugepage rounding, the QEMU version, device counts.
 * Also the NIC MAC derivation of §1.8.
 */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"
#include "vmm/qemu_internal.h"

static const char *share_mode_name(enum ds_qemu_share_mode m)
{
    switch (m) {
    case DS_QEMU_SHARE_9P:
        return "9p";
    case DS_QEMU_SHARE_VHD:
        return "vhd";
    case DS_QEMU_SHARE_VVFAT:
        return "vvfat";
    case DS_QEMU_SHARE_NONE:
        break;
    }
    return NULL;
}

static int set(json_t *o, const char *key, json_t *v)
{
    return json_object_set_new(o, key, v) == 0 ? 0 : -ENOMEM;
}

int ds_qemu_vm_config_json(const struct ds_qemu_config *cfg, const char *os_image_hash,
                           char **out_json, struct ds_qemu_error *err)
{
    int r = qemu_check_config(cfg, err);
    if (r < 0) {
        return r;
    }
    if (!os_image_hash) {
        return qemu_fail(err, -DS_E_NOT_FOUND, "os_image_hash: missing");
    }
    uint8_t digest[32];
    if (strlen(os_image_hash) != 64 ||
        ds_hex_decode(os_image_hash, 64, digest, sizeof(digest)) != (int)sizeof(digest)) {
        return qemu_fail(err, -DS_E_FORMAT, "os_image_hash: not 64 hex digits");
    }
    const char *share = share_mode_name(cfg->share_mode);
    if (!share) {
        return qemu_fail(err, -DS_E_UNSUPPORTED, "share_mode: a VmConfig needs a host share");
    }
    struct qemu_numa numa;
    qemu_numa_layout(cfg, &numa);
    uint32_t vcpus = 0;
    uint64_t mem_mb = 0;
    r = ds_qemu_effective_resources(cfg, &vcpus, &mem_mb);
    if (r < 0) {
        return r;
    }
    char hash_hex[65];
    ds_hex_encode(digest, sizeof(digest), hash_hex);

    json_t *o = json_object();
    char *text = NULL;
    if (!o) {
        r = -ENOMEM;
        goto out;
    }
    /* Keys in the order §1.4 lists them (spec_version last); optional keys omitted as there. */
    r = set(o, "os_image_hash", json_string(hash_hex));
    r = r ?: set(o, "cpu_count", json_integer(vcpus));
    r = r ?: set(o, "memory_size", json_integer((json_int_t)(mem_mb * 1024u * 1024u)));
    if (!r && cfg->single_pass_add_pages != DS_QEMU_UNSET) {
        r = set(o, "qemu_single_pass_add_pages",
                json_boolean(cfg->single_pass_add_pages == DS_QEMU_ON));
    }
    if (!r && cfg->pic != DS_QEMU_UNSET) {
        r = set(o, "pic", json_boolean(cfg->pic == DS_QEMU_ON));
    }
    r = r ?: set(o, "qemu_version", json_string(cfg->qemu_version));
    r = r ?: set(o, "pci_hole64_size", json_integer((json_int_t)cfg->pci_hole64_size));
    r = r ?: set(o, "hugepages", json_boolean(cfg->hugepages));
    r = r ?: set(o, "num_gpus", json_integer((json_int_t)cfg->gpu_count));
    r = r ?: set(o, "num_nvswitches", json_integer((json_int_t)cfg->nvswitch_count));
    if (!r && cfg->nic_count != 1) {
        r = set(o, "num_nics", json_integer((json_int_t)cfg->nic_count));
    }
    if (!r && cfg->verity_volume_count != 0) {
        r = set(o, "num_verity_volumes", json_integer((json_int_t)cfg->verity_volume_count));
    }
    if (!r && cfg->swtpm_socket) {
        r = set(o, "swtpm", json_true());
    }
    r = r ?: set(o, "hotplug_off", json_boolean(cfg->hotplug_off));
    r = r ?: set(o, "image", json_string(cfg->image_name ? cfg->image_name : ""));
    r = r ?: set(o, "host_share_mode", json_string(share));
    if (!r && cfg->ovmf_variant) {
        r = set(o, "ovmf_variant", json_string(cfg->ovmf_variant));
    }
    if (!r && cfg->tdx_attestation_variant && strcmp(cfg->tdx_attestation_variant, "lite") == 0) {
        r = set(o, "tdx_attestation_variant", json_string("lite"));
    }
    r = r ?: set(o, "spec_version", json_integer(1));
    if (r < 0) {
        goto out;
    }
    text = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    if (!text) {
        r = -ENOMEM;
        goto out;
    }
    *out_json = text;
    text = NULL;
    r = 0;
out:
    free(text);
    json_decref(o);
    if (r < 0) {
        qemu_fail(err, r, "vm_config: %s", ds_strerror(r));
    }
    return r;
}

int ds_qemu_mac_derive(const char *vm_id, uint32_t index, const char *mac_prefix, char out[18])
{
    if (!vm_id || strlen(vm_id) > DS_QEMU_STR_MAX) {
        return -DS_E_FORMAT;
    }
    uint8_t prefix[3];
    size_t prefix_len = 0;
    const char *p = mac_prefix ? mac_prefix : "";
    while (*p) {
        if (prefix_len == sizeof(prefix) || ds_hex_decode(p, 2, &prefix[prefix_len], 1) != 1) {
            return -DS_E_FORMAT;
        }
        prefix_len++;
        p += 2;
        if (*p == ':') {
            p++;
            if (!*p) {
                return -DS_E_FORMAT;
            }
        } else if (*p) {
            return -DS_E_FORMAT;
        }
    }
    uint8_t h[DS_SHA256_LEN];
    if (index == 0) {
        ds_sha256(vm_id, strlen(vm_id), h);
    } else {
        char tmp[DS_QEMU_STR_MAX + 16];
        int n = snprintf(tmp, sizeof(tmp), "%s:%u", vm_id, (unsigned)index);
        ds_sha256(tmp, (size_t)n, h);
    }
    uint8_t mac[6];
    memcpy(mac, prefix, prefix_len);
    memcpy(mac + prefix_len, h, 6 - prefix_len);
    mac[0] = (uint8_t)((mac[0] & 0xfe) | 0x02);
    snprintf(out, 18, "%02x:%02x:%02x:%02x:%02x:%02x", mac[0], mac[1], mac[2], mac[3], mac[4],
             mac[5]);
    return 0;
}
