/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The `Admin` service on its own plain-HTTP listener (spec kms-ratls.md §2.5, §5.5), enabled
 * only with an admin token (or an explicit insecure_no_auth). Token check: X-Admin-Token,
 * Authorization: Bearer, or Basic where the password (or the user with an empty password) is
 * the token; compared as SHA-256 digests in constant time; failures get 401 with
 * WWW-Authenticate. ClearImageCache validates its request and then answers an error: this KMS
 * keeps no OS-image cache because it does not implement OS-image verification (docs/kms.md).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "dstack/crypto.h"
#include "kms.h"
#include "log.h"

#define BASIC_MAX 1024

static bool token_equal(const char *given, size_t len, const char *token)
{
    uint8_t a[DS_SHA256_LEN], b[DS_SHA256_LEN];
    ds_sha256(given, len, a);
    ds_sha256(token, strlen(token), b);
    return ds_ct_equal(a, b, sizeof(a));
}

static bool basic_ok(const char *b64, const char *token)
{
    uint8_t *dec = NULL;
    size_t len = 0;
    if (ds_base64_decode(b64, strlen(b64), BASIC_MAX, &dec, &len) < 0) {
        return false;
    }
    bool ok = false;
    uint8_t *colon = memchr(dec, ':', len);
    if (colon) {
        size_t ulen = (size_t)(colon - dec), plen = len - ulen - 1;
        ok = token_equal((const char *)colon + 1, plen, token) ||
             (plen == 0 && token_equal((const char *)dec, ulen, token));
    }
    ds_wipe(dec, len);
    free(dec);
    return ok;
}

int kms_admin_filter(struct ds_rpc_call *call, void *ctx)
{
    struct kms *k = ctx;
    if (k->cfg.admin_insecure_no_auth) {
        return 0;
    }
    const char *token = k->cfg.admin_token;
    const char *x = ds_rpc_call_header(call, "X-Admin-Token");
    const char *auth = ds_rpc_call_header(call, "Authorization");
    bool ok = false;
    if (token && x) {
        ok = token_equal(x, strlen(x), token);
    }
    if (!ok && token && auth) {
        if (strncasecmp(auth, "Bearer ", 7) == 0) {
            ok = token_equal(auth + 7, strlen(auth + 7), token);
        } else if (strncasecmp(auth, "Basic ", 6) == 0) {
            ok = basic_ok(auth + 6, token);
        }
    }
    if (ok) {
        return 0;
    }
    log_warnx("admin: unauthorized request from %s", ds_rpc_call_peer(call)->name);
    if (ds_rpc_call_add_header(call, "WWW-Authenticate", "Basic realm=\"dstack-kms admin\"") < 0) {
        return -ENOMEM;
    }
    static const char body[] = "{\"error\":\"Unauthorized\"}";
    ds_rpc_call_reply_raw(call, 401, "application/json", body, sizeof(body) - 1);
    return 1;
}

static int clear_image_cache(struct ds_rpc_call *call, const json_t *params, json_t **out,
                             void *ctx)
{
    struct ds_kms_clear_image_cache_req req = {0};
    char msg[DS_KMS_DECODE_MSG_MAX];
    (void)ctx;
    (void)out;
    int r = ds_kms_req_decode(DS_KMS_REQ_CLEAR_IMAGE_CACHE, params, ds_rpc_call_from_query(call),
                              &req, msg, sizeof(msg));
    ds_kms_req_free(DS_KMS_REQ_CLEAR_IMAGE_CACHE, &req);
    if (r < 0) {
        return ds_rpc_call_error(call, "%s", msg);
    }
    return ds_rpc_call_error(call, "image cache is not implemented: this KMS does not verify or "
                                   "cache OS images (see docs/kms.md)");
}

static const struct ds_rpc_method admin_methods[] = {
    {"ClearImageCache", clear_image_cache, 0, 0},
};

const struct ds_rpc_service kms_admin_service = {
    .name = "Admin",
    .methods = admin_methods,
    .method_count = DS_ARRAY_SIZE(admin_methods),
};
