/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for the strict DER ECDSA-Sig-Value reader in lib/crypto/ecdsa.c
 * (ds_ecdsa_sig_der_to_raw): arbitrary bytes are rejected or converted; a conversion must
 * round-trip through ds_ecdsa_sig_raw_to_der to the same DER (strict DER has one encoding).
 * The first input byte picks the curve size. Corpus: corpus/ecdsa_der/.
 */
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t n = (data[0] & 1) ? 48 : 32;
    uint8_t raw[96];
    if (ds_ecdsa_sig_der_to_raw(data + 1, size - 1, n, raw) < 0)
        return 0;
    uint8_t *der = NULL;
    size_t der_len = 0;
    if (ds_ecdsa_sig_raw_to_der(raw, 2 * n, &der, &der_len) < 0)
        abort();
    if (der_len != size - 1 || memcmp(der, data + 1, der_len) != 0)
        abort();
    free(der);
    return 0;
}
