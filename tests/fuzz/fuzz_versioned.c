/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for the VersionedAttestation decoder (ds_attestation_decode, V0 SCALE and
 * V1 MessagePack) and the other decoders that share its primitives: the app-info extension
 * (ds_ratls_app_info_decode) and the KMS CSR (ds_csr_decode, ds_csr_decode_v1). Properties on
 * a successful decode: stripping works, and encode -> decode -> encode is a fixed point (the
 * second encoding equals the first). Replayed over corpus/versioned/ in every test run.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/ratls.h"
#include "dstack/versioned.h"

static void roundtrip(const struct ds_attestation *a)
{
    uint8_t *e1 = NULL, *e2 = NULL;
    size_t n1 = 0, n2 = 0;
    struct ds_attestation *b = NULL;
    if (ds_attestation_encode(a, DS_ATT_WIRE_AUTO, &e1, &n1) < 0) {
        return; /* e.g. a V1 of another platform: not re-encodable */
    }
    if (ds_attestation_decode(e1, n1, &b) < 0) {
        abort(); /* our own output must decode */
    }
    if (ds_attestation_encode(b, DS_ATT_WIRE_AUTO, &e2, &n2) < 0 || n1 != n2 ||
        memcmp(e1, e2, n1) != 0) {
        abort();
    }
    free(e1);
    free(e2);
    ds_attestation_free(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_attestation *a = NULL, *s = NULL;
    struct ds_app_info info;
    struct ds_csr csr;

    if (ds_attestation_decode(data, size, &a) == 0) {
        if (!a->event_log || !a->runtime_events || !a->config) {
            abort();
        }
        roundtrip(a);
        if (ds_attestation_strip(a, &s) == 0) {
            roundtrip(s);
            ds_attestation_free(s);
        }
        ds_attestation_free(a);
    }
    if (ds_ratls_app_info_decode(data, size, &info) == 0) {
        uint8_t *enc = NULL;
        size_t n = 0;
        if (ds_ratls_app_info_encode(&info, &enc, &n) == 0) {
            free(enc);
        }
        ds_app_info_done(&info);
    }
    if (ds_csr_decode(data, size, &csr) == 0) {
        uint8_t *enc = NULL;
        size_t n = 0;
        /* re-encoding a decoded V2 CSR gives the input back */
        if (ds_csr_encode(&csr, &enc, &n) < 0 || n != size || memcmp(enc, data, n) != 0) {
            abort();
        }
        free(enc);
        ds_csr_done(&csr);
    }
    if (ds_csr_decode_v1(data, size, &csr) == 0) {
        ds_csr_done(&csr);
    }
    return 0;
}
