/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for ds_collateral_from_json() (lib/attest/collateral.c): arbitrary bytes
 * must be either rejected with an error message or loaded; what loads must survive
 * to_json/from_json unchanged (the saved form is a fixed point). Corpus: corpus/collateral/.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/attest.h"

static int bytes_equal(const void *a, size_t alen, const void *b, size_t blen)
{
    return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

static int str_equal(const char *a, const char *b)
{
    return (!a && !b) || (a && b && strcmp(a, b) == 0);
}

static int coll_equal(const struct ds_collateral *a, const struct ds_collateral *b)
{
    return str_equal(a->pck_crl_issuer_chain, b->pck_crl_issuer_chain) &&
           bytes_equal(a->root_ca_crl, a->root_ca_crl_len, b->root_ca_crl, b->root_ca_crl_len) &&
           bytes_equal(a->pck_crl, a->pck_crl_len, b->pck_crl, b->pck_crl_len) &&
           str_equal(a->tcb_info_issuer_chain, b->tcb_info_issuer_chain) &&
           bytes_equal(a->tcb_info, a->tcb_info_len, b->tcb_info, b->tcb_info_len) &&
           bytes_equal(a->tcb_info_signature, a->tcb_info_signature_len, b->tcb_info_signature,
                       b->tcb_info_signature_len) &&
           str_equal(a->qe_identity_issuer_chain, b->qe_identity_issuer_chain) &&
           bytes_equal(a->qe_identity, a->qe_identity_len, b->qe_identity, b->qe_identity_len) &&
           bytes_equal(a->qe_identity_signature, a->qe_identity_signature_len,
                       b->qe_identity_signature, b->qe_identity_signature_len) &&
           str_equal(a->pck_certificate_chain, b->pck_certificate_chain);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_collateral *c = NULL, *c2 = NULL;
    char err[256];
    char *json = NULL;

    int r = ds_collateral_from_json((const char *)data, size, &c, err, sizeof(err));
    if (r < 0) {
        if (c || err[0] == 0) {
            abort(); /* failure leaves out untouched and always says why */
        }
        return 0;
    }
    if (ds_collateral_to_json(c, &json) == 0) {
        if (ds_collateral_from_json(json, strlen(json), &c2, err, sizeof(err)) < 0 ||
            !coll_equal(c, c2)) {
            fprintf(stderr, "collateral round trip changed the value: %s\n", err);
            abort();
        }
    }
    free(json);
    ds_collateral_free(c2);
    ds_collateral_free(c);
    return 0;
}
