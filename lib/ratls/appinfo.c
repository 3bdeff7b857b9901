/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The app-info certificate extension 1.3.6.1.4.1.62397.1.9 (spec kms-ratls.md §6.1): AppInfo in
 * rmp-serde's compact form, a MessagePack array in field order
 *   [app_id, compose_hash, instance_id, device_id, mr_system, mr_aggregated, os_image_hash,
 *    key_provider_info, init_script_hashes]
 * with byte fields as bin (serde-human-bytes in a non-human-readable format) and
 * init_script_hashes nil when there are none. The decoder also takes integer arrays for bytes.
 * This is an issuer claim: trust it only through the certificate chain.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "attest/eventlog_priv.h"
#include "attest/versioned_priv.h"
#include "dstack/ratls.h"

#define APP_INFO_FIELDS     9
#define APP_INFO_MIN_FIELDS 8 /* init_script_hashes may be absent */
#define APP_INFO_MAX_ID     1024
#define APP_INFO_MAX_KP     (64 * 1024)
#define APP_INFO_MAX_HASH   64

static int pack_all(msgpack_packer *pk, const struct ds_app_info *in)
{
    if (msgpack_pack_array(pk, APP_INFO_FIELDS) != 0) {
        return -ENOMEM;
    }
    DS_TRY(ds_mp_pack_bin(pk, in->app_id, in->app_id_len));
    DS_TRY(ds_mp_pack_bin(pk, in->compose_hash, in->compose_hash_len));
    DS_TRY(ds_mp_pack_bin(pk, in->instance_id, in->instance_id_len));
    DS_TRY(ds_mp_pack_bin(pk, in->device_id, sizeof(in->device_id)));
    DS_TRY(ds_mp_pack_bin(pk, in->mr_system, sizeof(in->mr_system)));
    DS_TRY(ds_mp_pack_bin(pk, in->mr_aggregated, sizeof(in->mr_aggregated)));
    DS_TRY(ds_mp_pack_bin(pk, in->os_image_hash, in->os_image_hash_len));
    DS_TRY(ds_mp_pack_bin(pk, in->key_provider_info, in->key_provider_info_len));
    if (in->init_script_count == 0) {
        return msgpack_pack_nil(pk) == 0 ? 0 : -ENOMEM;
    }
    if (msgpack_pack_array(pk, in->init_script_count) != 0) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < in->init_script_count; i++) {
        DS_TRY(ds_mp_pack_bin(pk, in->init_script_hashes[i], in->init_script_hash_lens[i]));
    }
    return 0;
}

int ds_ratls_app_info_encode(const struct ds_app_info *info, uint8_t **out, size_t *out_len)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    int r;

    if (!info || !out || !out_len) {
        return -EINVAL;
    }
    if (info->init_script_count > DS_APP_INFO_MAX_INIT_SCRIPTS) {
        return -DS_E_LIMIT;
    }
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    r = pack_all(&pk, info);
    if (r == 0) {
        r = ds_memdup(sb.data, sb.size, DS_RATLS_MAX_APP_INFO, out, out_len);
    }
    msgpack_sbuffer_destroy(&sb);
    return r;
}

static int read_init_scripts(struct ds_reader *r, struct ds_app_info *info)
{
    uint32_t n;
    if (ds_mp_read_nil(r)) {
        return 0;
    }
    DS_TRY(ds_mp_read_array(r, &n));
    DS_TRY(ds_evl_app_info_alloc_init_scripts(info, n));
    for (uint32_t i = 0; i < n; i++) {
        DS_TRY(ds_mp_read_bytes(r, APP_INFO_MAX_HASH, &info->init_script_hashes[i],
                                &info->init_script_hash_lens[i]));
        info->init_script_count = i + 1;
    }
    return 0;
}

static int read_all(struct ds_reader *r, struct ds_app_info *info)
{
    uint32_t n;
    DS_TRY(ds_mp_read_array(r, &n));
    if (n != APP_INFO_FIELDS && n != APP_INFO_MIN_FIELDS) {
        return -DS_E_FORMAT;
    }
    DS_TRY(ds_mp_read_bytes(r, APP_INFO_MAX_ID, &info->app_id, &info->app_id_len));
    DS_TRY(ds_mp_read_bytes(r, APP_INFO_MAX_HASH, &info->compose_hash, &info->compose_hash_len));
    DS_TRY(ds_mp_read_bytes(r, APP_INFO_MAX_ID, &info->instance_id, &info->instance_id_len));
    DS_TRY(ds_mp_read_fixed(r, info->device_id, sizeof(info->device_id)));
    DS_TRY(ds_mp_read_fixed(r, info->mr_system, sizeof(info->mr_system)));
    DS_TRY(ds_mp_read_fixed(r, info->mr_aggregated, sizeof(info->mr_aggregated)));
    DS_TRY(ds_mp_read_bytes(r, APP_INFO_MAX_HASH, &info->os_image_hash, &info->os_image_hash_len));
    DS_TRY(ds_mp_read_bytes(r, APP_INFO_MAX_KP, &info->key_provider_info,
                            &info->key_provider_info_len));
    if (n == APP_INFO_FIELDS) {
        DS_TRY(read_init_scripts(r, info));
    }
    if (ds_rd_left(r) != 0) {
        return -DS_E_FORMAT;
    }
    if (info->key_provider_info_len) {
        /* best effort, as the verifier service reports null for an unparsable provider */
        char *name = NULL;
        uint8_t *id = NULL;
        size_t id_len = 0;
        if (ds_app_info_parse_key_provider(info->key_provider_info, info->key_provider_info_len,
                                           &name, &id, &id_len) == 0) {
            info->key_provider_name = name;
            info->key_provider_id = id;
            info->key_provider_id_len = id_len;
        }
    }
    return 0;
}

int ds_ratls_app_info_decode(const uint8_t *data, size_t len, struct ds_app_info *out)
{
    struct ds_app_info info;
    struct ds_reader r;

    if (!data || !out) {
        return -EINVAL;
    }
    if (len > DS_RATLS_MAX_APP_INFO) {
        return -DS_E_LIMIT;
    }
    memset(&info, 0, sizeof(info));
    ds_rd_init(&r, data, len);
    int rc = read_all(&r, &info);
    if (rc < 0) {
        ds_app_info_done(&info);
        return rc;
    }
    *out = info;
    return 0;
}
