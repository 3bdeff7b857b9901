/* SPDX-License-Identifier: Apache-2.0 */
/* Unit tests for lib/base: reader bounds, bounded buffer, codecs, atomic files, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <errno.h>
#include <cmocka.h>

#include "dstack/base.h"

static void test_reader_bounds(void **state)
{
    const uint8_t data[] = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    struct ds_reader r;
    uint32_t v32;
    uint64_t v64;
    uint16_t v16;
    ds_rd_init(&r, data, sizeof(data));
    assert_int_equal(ds_rd_u32le(&r, &v32), 0);
    assert_int_equal(v32, 0x04030201);
    assert_int_equal(ds_rd_u64le(&r, &v64), -DS_E_TRUNCATED);
    assert_int_equal(r.off, 4); /* not advanced on failure */
    assert_int_equal(ds_rd_u32be(&r, &v32), 0);
    assert_int_equal(v32, 0x05060708);
    assert_int_equal(ds_rd_u16le(&r, &v16), -DS_E_TRUNCATED);
    assert_int_equal(ds_rd_left(&r), 1);
    assert_int_equal(ds_rd_skip(&r, SIZE_MAX), -DS_E_TRUNCATED);
    struct ds_reader sub;
    assert_int_equal(ds_rd_sub(&r, 2, &sub), -DS_E_TRUNCATED);
    assert_int_equal(ds_rd_sub(&r, 1, &sub), 0);
    uint8_t b;
    assert_int_equal(ds_rd_u8(&sub, &b), 0);
    assert_int_equal(b, 9);
    assert_int_equal(ds_rd_u8(&sub, &b), -DS_E_TRUNCATED);
}

static void test_buf_limit(void **state)
{
    struct ds_buf b;
    ds_buf_init(&b, 10);
    assert_int_equal(ds_buf_append(&b, "hello", 5), 0);
    assert_int_equal(ds_buf_printf(&b, "%d", 12345), 0);
    assert_int_equal(b.len, 10);
    assert_string_equal((char *)b.data, "hello12345");
    assert_int_equal(ds_buf_u8(&b, 1), -DS_E_LIMIT);
    assert_int_equal(ds_buf_printf(&b, "x"), -DS_E_LIMIT);
    assert_int_equal(b.len, 10);
    ds_buf_reset(&b);
    assert_int_equal(ds_buf_u32le(&b, 0x01020304), 0);
    assert_memory_equal(b.data, "\x04\x03\x02\x01", 4);
    uint8_t *p;
    size_t n;
    ds_buf_steal(&b, &p, &n);
    assert_int_equal(n, 4);
    assert_int_equal(p[4], 0);
    free(p);
    /* a buffer never written still hands out an empty, NUL-terminated string */
    ds_buf_init(&b, 10);
    ds_buf_steal(&b, &p, &n);
    assert_non_null(p);
    assert_int_equal(n, 0);
    assert_int_equal(p[0], 0);
    free(p);
    ds_buf_done(&b);
}

static void test_hex(void **state)
{
    uint8_t out[3];
    char s[7];
    assert_int_equal(ds_hex_decode("0aBcFf", 6, out, 3), 3);
    ds_hex_encode(out, 3, s);
    assert_string_equal(s, "0abcff");
    assert_int_equal(ds_hex_decode("0x0abcff", 8, out, 3), 3);
    assert_int_equal(ds_hex_decode("0abcf", 5, out, 3), -DS_E_FORMAT);
    assert_int_equal(ds_hex_decode("0abcfg", 6, out, 3), -DS_E_FORMAT);
    uint8_t *p;
    size_t n;
    assert_int_equal(ds_hex_decode_alloc("abcd", 4, 1, &p, &n), -DS_E_LIMIT);
    assert_int_equal(ds_hex_decode_alloc("abc", 3, 10, &p, &n), -DS_E_FORMAT);
    assert_int_equal(ds_hex_decode_alloc("abcd", 4, 2, &p, &n), 0);
    assert_int_equal(n, 2);
    free(p);
}

static void test_base64(void **state)
{
    const char *vec[][2] = {{"", ""},
                            {"f", "Zg=="},
                            {"fo", "Zm8="},
                            {"foo", "Zm9v"},
                            {"foob", "Zm9vYg=="},
                            {"fooba", "Zm9vYmE="},
                            {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < DS_ARRAY_SIZE(vec); i++) {
        char *e = ds_base64_encode(vec[i][0], strlen(vec[i][0]));
        assert_string_equal(e, vec[i][1]);
        free(e);
        uint8_t *d;
        size_t n;
        assert_int_equal(ds_base64_decode(vec[i][1], strlen(vec[i][1]), 100, &d, &n), 0);
        assert_int_equal(n, strlen(vec[i][0]));
        assert_memory_equal(d, vec[i][0], n);
        free(d);
    }
    uint8_t *d;
    size_t n;
    assert_int_equal(ds_base64_decode("Zm9v!", 5, 100, &d, &n), -DS_E_FORMAT);
    assert_int_equal(ds_base64_decode("Z", 1, 100, &d, &n), -DS_E_FORMAT);
    assert_int_equal(ds_base64_decode("Zh==", 4, 100, &d, &n), -DS_E_FORMAT); /* non-canonical */
    assert_int_equal(ds_base64_decode("Zm9vYmFy", 8, 5, &d, &n), -DS_E_LIMIT);
}

static void test_secure(void **state)
{
    uint8_t a[4] = {1, 2, 3, 4}, b[4] = {1, 2, 3, 5}, z[4] = {0};
    assert_true(ds_ct_equal(a, a, 4));
    assert_false(ds_ct_equal(a, b, 4));
    assert_true(ds_is_zero(z, 4));
    assert_false(ds_is_zero(a, 4));
    ds_wipe(a, 4);
    assert_true(ds_is_zero(a, 4));
    ds_wipe(NULL, 4);
}

static void test_files(void **state)
{
    char dir[] = "/tmp/ds-test-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[128];
    snprintf(path, sizeof(path), "%s/f", dir);
    assert_int_equal(ds_write_file_atomic(path, "abc", 3, 0600), 0);
    uint8_t *p;
    size_t n;
    assert_int_equal(ds_read_file(path, 10, &p, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "abc", 3);
    free(p);
    assert_int_equal(ds_read_file(path, 2, &p, &n), -DS_E_LIMIT);
    char bad[160];
    snprintf(bad, sizeof(bad), "%s/missing/f", dir);
    assert_true(ds_write_file_atomic(bad, "x", 1, 0600) < 0);
    assert_int_equal(ds_read_file(bad, 10, &p, &n), -ENOENT);
    unlink(path);
    rmdir(dir);
}

static void test_hex_digit(void **state)
{
    assert_int_equal(ds_hex_digit_value('0'), 0);
    assert_int_equal(ds_hex_digit_value('9'), 9);
    assert_int_equal(ds_hex_digit_value('a'), 10);
    assert_int_equal(ds_hex_digit_value('F'), 15);
    assert_int_equal(ds_hex_digit_value('g'), -1);
    assert_int_equal(ds_hex_digit_value('/'), -1);
    assert_int_equal(ds_hex_digit_value(0), -1);
    assert_int_equal(ds_hex_digit_value(0xff), -1);
    assert_int_equal(ds_hex_digit_value(-1), -1);
}

static void test_json_string(void **state)
{
    struct ds_buf b;
    ds_buf_init(&b, 64);
    /* RFC 8785: short escapes, other controls as lowercase \u00xx, everything else verbatim */
    const char in[] = "a\"b\\c\b\f\n\r\t\x01\x1f/\xc3\xa9";
    assert_int_equal(ds_json_append_string(&b, in, sizeof(in) - 1), 0);
    assert_string_equal((char *)b.data, "\"a\\\"b\\\\c\\b\\f\\n\\r\\t\\u0001\\u001f/\xc3\xa9\"");
    ds_buf_reset(&b);
    assert_int_equal(ds_json_append_string(&b, "", 0), 0);
    assert_string_equal((char *)b.data, "\"\"");
    /* an embedded NUL is escaped, not a terminator */
    ds_buf_reset(&b);
    assert_int_equal(ds_json_append_string(&b, "x\0y", 3), 0);
    assert_string_equal((char *)b.data, "\"x\\u0000y\"");
    ds_buf_done(&b);
    ds_buf_init(&b, 4);
    assert_int_equal(ds_json_append_string(&b, "abcdef", 6), -DS_E_LIMIT);
    ds_buf_done(&b);
}

static void test_memdup(void **state)
{
    uint8_t *p = NULL;
    size_t n = 99;
    assert_int_equal(ds_memdup("abc", 3, 2, &p, &n), -DS_E_LIMIT);
    assert_null(p);
    assert_int_equal(n, 99);
    assert_int_equal(ds_memdup("abc", 3, 3, &p, &n), 0);
    assert_int_equal(n, 3);
    assert_memory_equal(p, "abc", 3);
    free(p);
    assert_int_equal(ds_memdup(NULL, 0, 0, &p, &n), 0);
    assert_non_null(p);
    assert_int_equal(n, 0);
    free(p);
}

static void test_strerror(void **state)
{
    assert_string_equal(ds_strerror(-DS_E_TRUNCATED), "input truncated");
    assert_string_equal(ds_strerror(-ENOENT), "No such file or directory");
    assert_string_equal(ds_strerror(-99999), "unknown error");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reader_bounds), cmocka_unit_test(test_buf_limit),
        cmocka_unit_test(test_hex),           cmocka_unit_test(test_base64),
        cmocka_unit_test(test_secure),        cmocka_unit_test(test_files),
        cmocka_unit_test(test_strerror),      cmocka_unit_test(test_hex_digit),
        cmocka_unit_test(test_json_string),   cmocka_unit_test(test_memdup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
