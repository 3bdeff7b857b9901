/* SPDX-License-Identifier: Apache-2.0 */
/* Secure wipe and constant-time comparisons for secrets. */
#include <openssl/crypto.h>

#include "dstack/base.h"

void ds_wipe(void *p, size_t size)
{
    if (p && size)
        OPENSSL_cleanse(p, size);
}

bool ds_ct_equal(const void *a, const void *b, size_t size)
{
    return CRYPTO_memcmp(a, b, size) == 0;
}

bool ds_is_zero(const void *p, size_t size)
{
    const volatile uint8_t *q = p;
    uint8_t acc = 0;
    for (size_t i = 0; i < size; i++)
        acc |= q[i];
    return acc == 0;
}
