/* SPDX-License-Identifier: Apache-2.0 */
/* Hex helpers for unit tests; see helper_hex.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "dstack/base.h"
#include "helper_hex.h"

void helper_hex(const char *s, uint8_t *out, size_t n)
{
    assert_int_equal(ds_hex_decode(s, strlen(s), out, n), (int)n);
}

void helper_assert_hex_equal(const uint8_t *got, size_t n, const char *want)
{
    char buf[2 * HELPER_HEX_MAX_BYTES + 1];
    assert_true(n <= HELPER_HEX_MAX_BYTES);
    ds_hex_encode(got, n, buf);
    assert_string_equal(buf, want);
}
