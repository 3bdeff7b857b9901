/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Hex helpers for unit tests that compare against published vectors (test_crypto.c,
 * test_keys.c): decode a hex literal into a fixed-size buffer and compare bytes with expected
 * lowercase hex. Both fail the calling test through cmocka assertions. Linked into every unit
 * test (helper_*.c glob), so it depends on nothing but cmocka and lib/base.
 */
#ifndef DSTACK_TESTS_HELPER_HEX_H
#define DSTACK_TESTS_HELPER_HEX_H

#include <stddef.h>
#include <stdint.h>

/* Largest byte string helper_assert_hex_equal() compares. */
#define HELPER_HEX_MAX_BYTES 256

/* Decode the hex literal s of exactly n bytes into out (fails the test on bad hex or length). */
void helper_hex(const char *s, uint8_t *out, size_t n);
/* Assert that the n bytes at got print as the lowercase hex want (n <= HELPER_HEX_MAX_BYTES). */
void helper_assert_hex_equal(const uint8_t *got, size_t n, const char *want);

#endif /* DSTACK_TESTS_HELPER_HEX_H */
