/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for the RA-TLS certificate reader (lib/ratls/ext.c, verify.c): the input
 * is parsed as a DER certificate; every dstack extension is looked up (the borrowed payload is
 * read byte by byte and must lie inside the extension), the attestation (.1.8 or legacy) is
 * decoded and the certificate goes through ds_ratls_verify_cert (it has no collateral, so it
 * must fail, never succeed). The raw input is also given to ds_ratls_ext_unwrap. Replayed over
 * corpus/ratls_ext/ in every test run.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

#include "dstack/ratls.h"

static volatile uint8_t sink;

static void touch(const uint8_t *p, size_t n)
{
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc ^= p[i];
    }
    sink = acc;
}

static const enum ds_ratls_ext exts[] = {
    DS_RATLS_EXT_TDX_QUOTE, DS_RATLS_EXT_EVENT_LOG,   DS_RATLS_EXT_APP_ID,
    DS_RATLS_EXT_USAGE,     DS_RATLS_EXT_ATTESTATION, DS_RATLS_EXT_APP_INFO,
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *p;
    size_t n;

    if (ds_ratls_ext_unwrap(data, size, size, &p, &n) == 0) {
        if (p < data || n > size || (size_t)(p - data) + n != size) {
            abort();
        }
        touch(p, n);
    }

    const unsigned char *q = data;
    X509 *x = d2i_X509(NULL, &q, (long)size);
    if (!x) {
        ERR_clear_error();
        return 0;
    }
    for (size_t i = 0; i < sizeof(exts) / sizeof(exts[0]); i++) {
        if (ds_ratls_cert_get_ext(x, exts[i], &p, &n) == 0) {
            if (n > ds_ratls_ext_max(exts[i])) {
                abort();
            }
            touch(p, n);
        }
    }
    struct ds_attestation *a = NULL;
    if (ds_ratls_cert_get_attestation(x, &a) == 0) {
        ds_attestation_free(a);
    }
    struct ds_app_info info;
    if (ds_ratls_cert_get_ext(x, DS_RATLS_EXT_APP_INFO, &p, &n) == 0 &&
        ds_ratls_app_info_decode(p, n, &info) == 0) {
        ds_app_info_done(&info);
    }
    struct ds_verifier *v = NULL;
    if (ds_verifier_new(NULL, 0, &v) == 0) {
        struct ds_attestation_verify_opts opts;
        struct ds_attestation_result res;
        memset(&opts, 0, sizeof(opts));
        opts.verifier = v;
        opts.now = 1767225600;
        opts.skip_cert_validity = true;
        if (ds_ratls_verify_cert(x, &opts, &res) == 0 || res.ok) {
            abort(); /* no collateral, no PCCS: verification cannot succeed */
        }
        ds_attestation_result_done(&res);
        ds_verifier_free(v);
    }
    X509_free(x);
    ERR_clear_error();
    return 0;
}
