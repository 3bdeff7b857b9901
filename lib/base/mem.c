/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Bounded copies into fresh heap buffers: the last step of every encoder that builds its output
 * in a scratch buffer (a msgpack sbuffer, for instance) and hands the caller a malloc'd result
 * no larger than the format's limit.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/base.h"

int ds_memdup(const void *p, size_t n, size_t max_size, uint8_t **out, size_t *out_len)
{
    if (n > max_size) {
        return -DS_E_LIMIT;
    }
    uint8_t *copy = malloc(n ? n : 1);
    if (copy == NULL) {
        return -ENOMEM;
    }
    if (n) {
        memcpy(copy, p, n);
    }
    *out = copy;
    *out_len = n;
    return 0;
}
