/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `KMS` pRPC service on the main RA-TLS listener (spec kms-ratls.md §1.3, §2.2-2.3):
 * GetAppKey, GetAppEnvEncryptPubKey, GetMeta, GetKmsKey, GetTempCaCert, SignCert, plus the
 * /health route. Every handler first looks at the TLS client certificate (already chained to
 * tmp-ca by the TLS layer): a present attestation is verified whatever the method, and a
 * present-but-invalid one fails the request ("invalid quote: ..."); methods that need one fail
 * with "No attestation provided". Trusted methods then pass the self-authorization gate, the
 * caller's BootInfo goes to the authorization backend ("Boot denied: <reason>"), and only then
 * is the key process asked for derived keys, signatures or certificates.
 * OS-image verification (§4.4, core.image) is not implemented: BootInfo.osImageHash is the
 * claimed value, which the policy must pin (docs/kms.md).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dstack/crypto.h"
#include "kms.h"
#include "log.h"

#define BOOTSTRAP_INFO_MAX (1024 * 1024)

int kms_json_set_hex(json_t *o, const char *key, const void *p, size_t n)
{
    char *hex = ds_hex_strdup(p ? p : "", n);
    if (!hex) {
        return -ENOMEM;
    }
    int r = json_object_set_new(o, key, json_string(hex)) == 0 ? 0 : -ENOMEM;
    ds_wipe(hex, strlen(hex));
    free(hex);
    return r;
}

/*
 * The caller's attestation (§1.3): 0 with *have = false when there is no client certificate or
 * it carries no attestation; 0 with *have = true and *bi filled when it verified; < 0 with the
 * call's error set when it is present but invalid.
 */
static int peer_boot_info(struct kms *k, struct ds_rpc_call *call, const char *vm_config,
                          struct ds_kms_boot_info *bi, bool *have)
{
    char err[KMS_ERR_MAX] = "";
    *have = false;
    X509 *cert = ds_rpc_call_peer_cert(call);
    if (!cert) {
        return 0;
    }
    int r = kms_cert_boot_info(k, cert, vm_config, bi, err, sizeof(err));
    if (r == -DS_E_NOT_FOUND) {
        return 0;
    }
    if (r < 0) {
        log_warnx("%s from %s: %s", ds_rpc_call_method(call), ds_rpc_call_peer(call)->name, err);
        return ds_rpc_call_error(call, "%s", err);
    }
    *have = true;
    return 0;
}

/* Peer check for methods that do not use the attestation. */
static int peer_check(struct kms *k, struct ds_rpc_call *call)
{
    struct ds_kms_boot_info bi = {0};
    bool have;
    int r = peer_boot_info(k, call, NULL, &bi, &have);
    ds_kms_boot_info_done(&bi);
    return r;
}

static int authorize(struct kms *k, struct ds_rpc_call *call, enum ds_kms_boot_kind kind,
                     const struct ds_kms_boot_info *bi, char **out_gateway)
{
    struct ds_kms_decision d = {0};
    char err[KMS_ERR_MAX] = "", app[2 * DS_KMS_APP_ID_SIZE + 1];
    ds_hex_encode(bi->app_id, sizeof(bi->app_id), app);
    int r = kms_auth_check(k, kind, bi, &d, err, sizeof(err));
    if (r < 0) {
        log_warnx("%s: authorization backend failed for app %s: %s", ds_rpc_call_method(call), app,
                  err);
        return ds_rpc_call_error(call, "Failed to authorize boot: %s", err);
    }
    if (!d.allowed) {
        log_warnx("%s: boot denied for %s %s: %s", ds_rpc_call_method(call),
                  kind == DS_KMS_BOOT_KMS ? "KMS" : "app", app, d.reason);
        r = ds_rpc_call_error(call, "Boot denied: %s", d.reason);
        ds_kms_decision_done(&d);
        return r;
    }
    if (out_gateway) {
        *out_gateway = d.gateway_app_id;
        d.gateway_app_id = NULL;
    }
    ds_kms_decision_done(&d);
    return 0;
}

static int kp_error(struct ds_rpc_call *call, const char *what, int r)
{
    log_warnx("key process: %s: %s", what, ds_strerror(r));
    return ds_rpc_call_error(call, "%s failed: %s", what, ds_strerror(r));
}

/* One key-process operation for an RPC: its status, exactly `count` fields, else the error is
 * logged and becomes the RPC's error ("<what> failed: ..."). *rep is for the caller to release. */
static int kp_rpc_call(struct kms *k, struct ds_rpc_call *call, enum kms_kp_op op,
                       const struct kms_blob *args, size_t nargs, size_t count, const char *what,
                       struct kms_kp_reply *rep)
{
    int r = kms_keyproc_call(&k->kp, op, args, nargs, rep);
    r = r < 0 ? r : rep->status;
    if (r == 0 && rep->count != count) {
        r = -DS_E_PROTOCOL;
    }
    return r < 0 ? kp_error(call, what, r) : 0;
}

/* ---- GetAppKey --------------------------------------------------------------------------- */

static int get_app_key_impl(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct ds_kms_get_app_key_req req = {0};
    struct ds_kms_boot_info bi = {0};
    struct kms_kp_reply rep = {0};
    char msg[DS_KMS_DECODE_MSG_MAX], *gateway = NULL;
    bool have = false;
    int r = ds_kms_req_decode(DS_KMS_REQ_GET_APP_KEY, params, ds_rpc_call_from_query(call), &req,
                              msg, sizeof(msg));
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to decode request: %s", msg);
    }
    r = peer_boot_info(k, call, req.vm_config, &bi, &have);
    if (r == 0 && !have) {
        r = ds_rpc_call_error(call, "No attestation provided");
    }
    if (r == 0 && req.api_version > DS_KMS_API_VERSION) {
        r = ds_rpc_call_error(call, "Unsupported API version: %u", req.api_version);
    }
    if (r == 0) {
        r = kms_self_authorize(k, call);
    }
    if (r == 0) {
        r = authorize(k, call, DS_KMS_BOOT_APP, &bi, &gateway);
    }
    if (r == 0) {
        struct kms_blob args[] = {{bi.app_id, sizeof(bi.app_id)},
                                  {bi.instance_id, bi.instance_id_len}};
        r = kp_rpc_call(k, call, KP_APP_KEYS, args, 2, 6, "app key derivation", &rep);
    }
    if (r == 0) {
        json_t *o = json_object();
        r = o ? 0 : -ENOMEM;
        if (r == 0) {
            r = json_object_set_new(o, "ca_cert", json_string(k->root_ca_pem)) ? -ENOMEM : 0;
        }
        if (r == 0) {
            r = kms_json_set_hex(o, "disk_crypt_key", rep.fields[0].ptr, rep.fields[0].len);
        }
        if (r == 0) {
            r = kms_json_set_hex(o, "env_crypt_key", rep.fields[1].ptr, rep.fields[1].len);
        }
        if (r == 0) {
            r = kms_json_set_hex(o, "k256_key", rep.fields[3].ptr, rep.fields[3].len);
        }
        if (r == 0) {
            r = kms_json_set_hex(o, "k256_signature", rep.fields[5].ptr, rep.fields[5].len);
        }
        if (r == 0) {
            r = json_object_set_new(o, "tproxy_app_id", json_string(gateway)) ||
                        json_object_set_new(o, "gateway_app_id", json_string(gateway))
                    ? -ENOMEM
                    : 0;
        }
        if (r == 0) {
            r = kms_json_set_hex(o, "os_image_hash", bi.os_image_hash, bi.os_image_hash_len);
        }
        if (r == 0) {
            char app[2 * DS_KMS_APP_ID_SIZE + 1];
            ds_hex_encode(bi.app_id, sizeof(bi.app_id), app);
            log_info("GetAppKey: keys released to app %s (%s)", app, ds_rpc_call_peer(call)->name);
            *out = o;
        } else {
            json_decref(o);
        }
    }
    kms_kp_reply_done(&rep);
    free(gateway);
    ds_kms_boot_info_done(&bi);
    ds_kms_req_free(DS_KMS_REQ_GET_APP_KEY, &req);
    return r;
}

/* ---- GetAppEnvEncryptPubKey -------------------------------------------------------------- */

static int get_env_pubkey(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct ds_kms_app_id_req req = {0};
    struct kms_kp_reply rep = {0};
    char msg[DS_KMS_DECODE_MSG_MAX];
    int r = ds_kms_req_decode(DS_KMS_REQ_APP_ID, params, ds_rpc_call_from_query(call), &req, msg,
                              sizeof(msg));
    if (r < 0) {
        return ds_rpc_call_error(call, "%s", msg);
    }
    r = peer_check(k, call);
    if (r == 0) {
        r = kms_self_authorize(k, call);
    }
    uint64_t ts = (uint64_t)time(NULL);
    if (r == 0) {
        uint8_t tsb[8];
        for (int i = 0; i < 8; i++) {
            tsb[i] = (uint8_t)(ts >> (56 - 8 * i));
        }
        struct kms_blob args[] = {{req.app_id.data, req.app_id.len}, {tsb, sizeof(tsb)}};
        r = kp_rpc_call(k, call, KP_ENV_PUBKEY, args, 2, 3, "env key derivation", &rep);
    }
    if (r == 0) {
        json_t *o = json_object();
        r = o ? 0 : -ENOMEM;
        if (r == 0) {
            r = kms_json_set_hex(o, "public_key", rep.fields[0].ptr, rep.fields[0].len);
        }
        if (r == 0) {
            r = kms_json_set_hex(o, "signature", rep.fields[1].ptr, rep.fields[1].len);
        }
        if (r == 0) {
            r = json_object_set_new(o, "timestamp", json_integer((json_int_t)ts)) ? -ENOMEM : 0;
        }
        if (r == 0) {
            r = kms_json_set_hex(o, "signature_v1", rep.fields[2].ptr, rep.fields[2].len);
        }
        if (r == 0) {
            *out = o;
        } else {
            json_decref(o);
        }
    }
    kms_kp_reply_done(&rep);
    ds_kms_req_free(DS_KMS_REQ_APP_ID, &req);
    return r;
}

/* ---- GetMeta ----------------------------------------------------------------------------- */

static json_t *bootstrap_info(struct kms *k)
{
    char path[KMS_PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    if (kms_path(k, "bootstrap-info.json", path, sizeof(path)) < 0 ||
        ds_read_file(path, BOOTSTRAP_INFO_MAX, &data, &len) < 0) {
        return json_null();
    }
    json_t *o = json_loadb((const char *)data, len, 0, NULL);
    free(data);
    return o ? o : json_null();
}

static json_t *opt_string(const char *s)
{
    return s ? json_string(s) : json_null();
}

static int get_meta(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct ds_kms_auth_info info = {0};
    char err[KMS_ERR_MAX] = "";
    (void)params;
    int r = peer_check(k, call);
    if (r < 0) {
        return r;
    }
    r = kms_auth_info(k, &info, err, sizeof(err));
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to get auth info: %s", err);
    }
    bool dev = k->cfg.auth == KMS_AUTH_DEV;
    json_t *o = json_object();
    r = o ? 0 : -ENOMEM;
    if (r == 0) {
        r = json_object_set_new(o, "ca_cert", json_string(k->root_ca_pem)) ||
                    json_object_set_new(o, "allow_any_upgrade", json_boolean(dev))
                ? -ENOMEM
                : 0;
    }
    if (r == 0) {
        r = kms_json_set_hex(o, "k256_pubkey", k->k256_pub, sizeof(k->k256_pub));
    }
    if (r == 0) {
        const char *gw =
            dev ? (k->cfg.gateway_app_id ? k->cfg.gateway_app_id : "any") : info.gateway_app_id;
        r = json_object_set_new(o, "bootstrap_info", bootstrap_info(k)) ||
                    json_object_set_new(o, "is_dev", json_boolean(dev)) ||
                    json_object_set_new(o, "gateway_app_id", opt_string(gw)) ||
                    json_object_set_new(o, "kms_contract_address",
                                        opt_string(info.kms_contract_addr)) ||
                    json_object_set_new(o, "chain_id",
                                        dev ? json_null()
                                            : json_integer((json_int_t)info.chain_id)) ||
                    json_object_set_new(o, "app_auth_implementation",
                                        opt_string(info.app_implementation))
                ? -ENOMEM
                : 0;
    }
    ds_kms_auth_info_done(&info);
    if (r < 0) {
        json_decref(o);
        return r;
    }
    *out = o;
    return 0;
}

/* ---- GetKmsKey --------------------------------------------------------------------------- */

static int get_kms_key_impl(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct ds_kms_get_kms_key_req req = {0};
    struct ds_kms_boot_info bi = {0};
    struct kms_kp_reply rep = {0};
    char msg[DS_KMS_DECODE_MSG_MAX];
    bool have = false;
    int r = ds_kms_req_decode(DS_KMS_REQ_GET_KMS_KEY, params, ds_rpc_call_from_query(call), &req,
                              msg, sizeof(msg));
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to decode request: %s", msg);
    }
    r = peer_boot_info(k, call, req.vm_config, &bi, &have);
    if (r == 0 && !have) {
        r = ds_rpc_call_error(call, "No attestation provided");
    }
    if (r == 0) {
        r = kms_self_authorize(k, call);
    }
    if (r == 0) {
        r = authorize(k, call, DS_KMS_BOOT_KMS, &bi, NULL);
    }
    if (r == 0) {
        r = kp_rpc_call(k, call, KP_EXPORT, NULL, 0, 3, "key export", &rep);
        if (r == 0 && rep.fields[1].len != DS_KEY_SIZE) {
            r = kp_error(call, "key export", -DS_E_PROTOCOL);
        }
    }
    if (r == 0) {
        json_t *o = json_object(), *keys = json_array(), *one = json_object();
        r = o && keys && one ? 0 : -ENOMEM;
        if (r == 0) {
            r = json_object_set_new(o, "temp_ca_key",
                                    json_stringn(rep.fields[2].ptr, rep.fields[2].len)) ||
                        json_object_set_new(one, "ca_key",
                                            json_stringn(rep.fields[0].ptr, rep.fields[0].len))
                    ? -ENOMEM
                    : 0;
        }
        if (r == 0) {
            r = kms_json_set_hex(one, "k256_key", rep.fields[1].ptr, rep.fields[1].len);
        }
        if (r == 0) {
            r = json_array_append(keys, one) || json_object_set(o, "keys", keys) ? -ENOMEM : 0;
        }
        json_decref(one);
        json_decref(keys);
        if (r == 0) {
            char mr[65];
            ds_hex_encode(bi.mr_aggregated, sizeof(bi.mr_aggregated), mr);
            log_info("GetKmsKey: root keys released to KMS %s (mrAggregated %s)",
                     ds_rpc_call_peer(call)->name, mr);
            *out = o;
        } else {
            json_decref(o);
        }
    }
    kms_kp_reply_done(&rep);
    ds_kms_boot_info_done(&bi);
    ds_kms_req_free(DS_KMS_REQ_GET_KMS_KEY, &req);
    return r;
}

/* ---- GetTempCaCert ----------------------------------------------------------------------- */

static int get_temp_ca_cert(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct kms_kp_reply rep = {0};
    (void)params;
    int r = peer_check(k, call);
    if (r == 0) {
        r = kms_self_authorize(k, call);
    }
    if (r < 0) {
        return r;
    }
    r = kp_rpc_call(k, call, KP_TMP_CA, NULL, 0, 2, "temp CA", &rep);
    if (r < 0) {
        kms_kp_reply_done(&rep);
        return r;
    }
    json_t *o = json_object();
    r = !o ||
                json_object_set_new(o, "temp_ca_cert",
                                    json_stringn(rep.fields[1].ptr, rep.fields[1].len)) ||
                json_object_set_new(o, "temp_ca_key",
                                    json_stringn(rep.fields[0].ptr, rep.fields[0].len)) ||
                json_object_set_new(o, "ca_cert", json_string(k->root_ca_pem))
            ? -ENOMEM
            : 0;
    kms_kp_reply_done(&rep);
    if (r < 0) {
        json_decref(o);
        return r;
    }
    *out = o;
    return 0;
}

/* ---- SignCert ---------------------------------------------------------------------------- */

static int csr_attestation(struct kms *k, struct ds_rpc_call *call, const struct ds_csr *csr,
                           const char *vm_config, struct ds_attestation **out_a,
                           struct ds_attestation_result *res, struct ds_kms_boot_info *bi)
{
    uint8_t expect[DS_REPORT_DATA_SIZE];
    struct ds_attestation_verify_opts opts;
    int r = ds_attestation_decode(csr->attestation, csr->attestation_len, out_a);
    if (r < 0) {
        return ds_rpc_call_error(call, "invalid quote: attestation in the CSR: %s", ds_strerror(r));
    }
    DS_TRY(ds_report_data_build(DS_REPORT_HASH_SHA512, DS_REPORT_TAG_RATLS_CERT, csr->pubkey,
                                csr->pubkey_len, expect));
    DS_TRY(kms_verify_opts(k, (*out_a)->quote, (*out_a)->quote_len, &opts));
    opts.expected_report_data = expect;
    r = ds_attestation_verify(*out_a, &opts, res);
    if (r < 0) {
        return ds_rpc_call_error(call, "invalid quote: %s: %s", ds_att_step_name(res->failed_step),
                                 res->message);
    }
    r = ds_kms_boot_info_build(*out_a, res, vm_config, true, bi);
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to build boot info: %s", ds_strerror(r));
    }
    return 0;
}

/* Leaf extensions: stripped attestation iff ext_quote, app info iff ext_app_info (§6.7). */
static int leaf_extensions(const struct ds_attestation *a, const struct ds_attestation_result *res,
                           const struct ds_cert_config *cfg, uint8_t **att, size_t *att_len,
                           uint8_t **info, size_t *info_len)
{
    int r = 0;
    if (cfg->ext_quote) {
        struct ds_attestation *s = NULL;
        r = ds_attestation_strip(a, &s);
        if (r == 0) {
            r = ds_attestation_encode(s, DS_ATT_WIRE_AUTO, att, att_len);
        }
        ds_attestation_free(s);
    }
    if (r == 0 && cfg->ext_app_info) {
        struct ds_app_info ai = {0};
        r = ds_app_info_decode(a->runtime_events, &res->td, NULL, 0,
                               a->config[0] ? a->config : NULL, false, &ai);
        if (r == 0) {
            r = ds_ratls_app_info_encode(&ai, info, info_len);
        }
        ds_app_info_done(&ai);
    }
    return r;
}

static int alt_names_joined(const struct ds_cert_config *cfg, struct ds_buf *b)
{
    for (size_t i = 0; i < cfg->alt_name_count; i++) {
        for (const char *c = cfg->alt_names[i]; *c; c++) {
            if ((unsigned char)*c < 0x20 || *c == 0x7f) {
                return -DS_E_FORMAT;
            }
        }
        if (!cfg->alt_names[i][0]) {
            return -DS_E_FORMAT;
        }
        DS_TRY(ds_buf_append_str(b, cfg->alt_names[i]));
        DS_TRY(ds_buf_u8(b, '\n'));
    }
    return 0;
}

static void opt_u64(uint8_t out[9], bool has, uint64_t v)
{
    out[0] = has ? 1 : 0;
    for (int i = 0; i < 8; i++) {
        out[1 + i] = (uint8_t)(v >> (56 - 8 * i));
    }
}

static int sign_cert_impl(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct kms *k = ctx;
    struct ds_kms_sign_cert_req req = {0};
    struct ds_csr csr = {0};
    struct ds_attestation *a = NULL;
    struct ds_attestation_result res;
    struct ds_kms_boot_info bi = {0};
    struct kms_kp_reply rep = {0};
    struct ds_buf names;
    uint8_t *att = NULL, *info = NULL;
    size_t att_len = 0, info_len = 0;
    char msg[DS_KMS_DECODE_MSG_MAX];
    memset(&res, 0, sizeof(res));
    ds_buf_init(&names, 64 * 1024);
    int r = ds_kms_req_decode(DS_KMS_REQ_SIGN_CERT, params, ds_rpc_call_from_query(call), &req, msg,
                              sizeof(msg));
    if (r < 0) {
        r = ds_rpc_call_error(call, "failed to decode request: %s", msg);
        goto out;
    }
    r = peer_check(k, call);
    if (r == 0) {
        r = kms_self_authorize(k, call);
    }
    if (r < 0) {
        goto out;
    }
    r = ds_csr_verify(req.api_version, req.csr.data, req.csr.len, req.signature.data,
                      req.signature.len, &csr);
    if (r < 0) {
        r = ds_rpc_call_error(call, "invalid CSR: %s", ds_strerror(r));
        goto out;
    }
    r = csr_attestation(k, call, &csr, req.vm_config, &a, &res, &bi);
    if (r == 0) {
        r = authorize(k, call, DS_KMS_BOOT_APP, &bi, NULL);
    }
    if (r < 0) {
        goto out;
    }
    r = leaf_extensions(a, &res, &csr.config, &att, &att_len, &info, &info_len);
    if (r == 0) {
        r = alt_names_joined(&csr.config, &names);
    }
    if (r < 0) {
        r = ds_rpc_call_error(call, "invalid certificate request: %s", ds_strerror(r));
        goto out;
    }
    uint8_t flags =
        (uint8_t)((csr.config.usage_server_auth ? 1 : 0) | (csr.config.usage_client_auth ? 2 : 0));
    uint8_t nb[9], na[9];
    opt_u64(nb, csr.config.has_not_before, csr.config.not_before);
    opt_u64(na, csr.config.has_not_after, csr.config.not_after);
    const char *org = csr.config.org_name ? csr.config.org_name : "";
    struct kms_blob args[] = {
        {bi.app_id, sizeof(bi.app_id)},
        {org, strlen(org)},
        {csr.config.subject, strlen(csr.config.subject)},
        {names.data, names.len},
        {&flags, 1},
        {nb, sizeof(nb)},
        {na, sizeof(na)},
        {csr.pubkey, csr.pubkey_len},
        {att, att_len},
        {info, info_len},
    };
    r = kp_rpc_call(k, call, KP_SIGN_APP, args, DS_ARRAY_SIZE(args), 2, "certificate signing",
                    &rep);
    if (r < 0) {
        goto out;
    }
    json_t *chain = json_array(), *o = json_object();
    r = !chain || !o ||
                json_array_append_new(chain, json_stringn(rep.fields[0].ptr, rep.fields[0].len)) ||
                json_array_append_new(chain, json_stringn(rep.fields[1].ptr, rep.fields[1].len)) ||
                json_array_append_new(chain, json_string(k->root_ca_pem)) ||
                json_object_set(o, "certificate_chain", chain)
            ? -ENOMEM
            : 0;
    json_decref(chain);
    if (r < 0) {
        json_decref(o);
        goto out;
    }
    *out = o;
out:
    kms_kp_reply_done(&rep);
    ds_buf_done(&names);
    free(att);
    free(info);
    ds_kms_boot_info_done(&bi);
    ds_attestation_result_done(&res);
    ds_attestation_free(a);
    ds_csr_done(&csr);
    ds_kms_req_free(DS_KMS_REQ_SIGN_CERT, &req);
    return r;
}

/* The attestation-consuming methods counted by /metrics (upstream's two counters). */
static int counted(int r, struct kms *k)
{
    k->att_requests++;
    if (r < 0) {
        k->att_failures++;
    }
    return r;
}

static int get_app_key(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    return counted(get_app_key_impl(call, params, out, ctx), ctx);
}

static int get_kms_key(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    return counted(get_kms_key_impl(call, params, out, ctx), ctx);
}

static int sign_cert(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    return counted(sign_cert_impl(call, params, out, ctx), ctx);
}

int kms_metrics(struct ds_rpc_call *call, void *ctx)
{
    struct kms *k = ctx;
    char body[512];
    if (!k->cfg.metrics_enabled) {
        static const char nf[] = "{\"error\":\"metrics are disabled\"}";
        ds_rpc_call_reply_raw(call, 404, "application/json", nf, sizeof(nf) - 1);
        return 0;
    }
    int n = snprintf(body, sizeof(body),
                     "# TYPE dstack_kms_attestation_requests_total counter\n"
                     "dstack_kms_attestation_requests_total %llu\n"
                     "# TYPE dstack_kms_attestation_failures_total counter\n"
                     "dstack_kms_attestation_failures_total %llu\n",
                     (unsigned long long)k->att_requests, (unsigned long long)k->att_failures);
    ds_rpc_call_reply_raw(call, 200, "text/plain; version=0.0.4", body, (size_t)n);
    return 0;
}

int kms_health(struct ds_rpc_call *call, void *ctx)
{
    (void)ctx;
    ds_rpc_call_reply_raw(call, 200, "text/plain", "OK", 2);
    return 0;
}

static const struct ds_rpc_method kms_methods[] = {
    {"GetAppKey", get_app_key, 0, 0},
    {"GetAppEnvEncryptPubKey", get_env_pubkey, 0, 0},
    {"GetMeta", get_meta, DS_RPC_NO_PARAMS, 0},
    {"GetKmsKey", get_kms_key, 0, 0},
    {"GetTempCaCert", get_temp_ca_cert, DS_RPC_NO_PARAMS, 0},
    {"SignCert", sign_cert, 0, 10 * 1024 * 1024},
};

const struct ds_rpc_service kms_rpc_service = {
    .name = "KMS",
    .methods = kms_methods,
    .method_count = DS_ARRAY_SIZE(kms_methods),
};
