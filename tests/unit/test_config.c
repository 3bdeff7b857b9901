/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/config: the TOML reader (every construct; each class of invalid input
 * gives its specific error at its line:column; limits), a cross-check of the document tree
 * against Python's tomllib on a set of valid documents (including kms/vmm/gateway samples
 * built from the spec), the duration/size parsers, and the schema layer (defaults, unknown-key
 * suggestions, type/range/enum errors, required keys, arrays of tables, dump round trip,
 * secrets never printed, the Markdown reference).
 */
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

#include <jansson.h>

#include "dstack/config.h"

/* ---- helpers --------------------------------------------------------------------------------- */

static const char *src_dir(void)
{
    const char *s = getenv("DS_SRC");
    return s ? s : "..";
}

static char *read_text(const char *path, size_t *len)
{
    uint8_t *d = NULL;
    int r = ds_read_file(path, DS_TOML_FILE_MAX, &d, len);
    if (r < 0) {
        fail_msg("cannot read %s: %s", path, ds_strerror(r));
    }
    return (char *)d;
}

static struct ds_toml_value *parse_ok(const char *text)
{
    struct ds_toml_value *root = NULL;
    struct ds_config_err err;
    int r = ds_toml_parse(text, strlen(text), "t.toml", &root, &err);
    if (r != 0) {
        fail_msg("unexpected error %d: %s\n--- input:\n%s", r, err.msg, text);
    }
    return root;
}

/* The document must fail with `code`, at line:col, and the message must contain `what`. */
static void parse_bad_n(const char *text, size_t len, int code, unsigned line, unsigned col,
                        const char *what)
{
    struct ds_toml_value *root = NULL;
    struct ds_config_err err;
    int r = ds_toml_parse(text, len, "t.toml", &root, &err);
    if (r != code || err.line != line || err.col != col || !strstr(err.msg, what)) {
        fail_msg("input %.60s\n  got %d \"%s\" (line %u col %u)\n  want %d at %u:%u containing "
                 "\"%s\"",
                 text, r, err.msg, err.line, err.col, code, line, col, what);
    }
    char prefix[32];
    snprintf(prefix, sizeof(prefix), "t.toml:%u:%u: ", line, col);
    assert_true(strncmp(err.msg, prefix, strlen(prefix)) == 0);
    assert_null(root);
}

static void parse_bad(const char *text, int code, unsigned line, unsigned col, const char *what)
{
    parse_bad_n(text, strlen(text), code, line, col, what);
}

static const char *str_of(const struct ds_toml_value *t, const char *k)
{
    const struct ds_toml_value *v = ds_toml_get(t, k);
    assert_non_null(v);
    assert_int_equal(v->type, DS_TOML_STRING);
    return v->u.str.ptr;
}

static int64_t int_of(const struct ds_toml_value *t, const char *k)
{
    const struct ds_toml_value *v = ds_toml_get(t, k);
    assert_non_null(v);
    assert_int_equal(v->type, DS_TOML_INT);
    return v->u.i;
}

/* ---- the reader: valid documents ------------------------------------------------------------- */

static void test_valid_constructs(void **state)
{
    (void)state;
    size_t len;
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/toml/all_constructs.toml", src_dir());
    char *text = read_text(path, &len);
    struct ds_toml_value *root = parse_ok(text);

    assert_string_equal(str_of(root, "bare_key"), "v");
    assert_string_equal(str_of(root, "bare-key_2"), "literal \\n not an escape");
    assert_int_equal(int_of(root, "quoted key"), 1);
    assert_int_equal(int_of(root, "literal key"), 2);
    assert_string_equal(str_of(root, ""), "empty key");
    const struct ds_toml_value *a = ds_toml_get(root, "a");
    assert_true(ds_toml_get(ds_toml_get(a, "b"), "c")->u.b);
    assert_false(ds_toml_get(ds_toml_get(a, "d e"), "f")->u.b);
    assert_string_equal(str_of(root, "escapes"), "\b\t\n\f\r\"\\ \xc3\xa9 \xf0\x9f\x98\x80");
    assert_string_equal(str_of(root, "ml"), "first line continued\n  two quotes \"\" and \"\"\"");
    assert_string_equal(str_of(root, "mll"), "raw \\n ''two''\n");

    const struct ds_toml_value *ints = ds_toml_get(root, "ints");
    assert_int_equal(ints->type, DS_TOML_ARRAY);
    int64_t want[] = {0, 1, -1, 1000, 0xdeadbeef, 0755, 13, INT64_MAX, INT64_MIN};
    assert_int_equal(ints->u.array.count, DS_ARRAY_SIZE(want));
    for (size_t i = 0; i < DS_ARRAY_SIZE(want); i++) {
        assert_true(ints->u.array.items[i]->u.i == want[i]);
    }
    const struct ds_toml_value *fl = ds_toml_get(root, "floats");
    assert_true(fl->u.array.items[0]->u.f == 1.0);
    assert_true(fl->u.array.items[2]->u.f == 6.02e23);
    assert_true(fl->u.array.items[4]->u.f == 3141.59);
    assert_true(fl->u.array.items[6]->u.f < 0 && fl->u.array.items[6]->u.f * 0 != 0);
    assert_true(fl->u.array.items[7]->u.f != fl->u.array.items[7]->u.f); /* nan */

    const struct ds_toml_value *mixed = ds_toml_get(root, "mixed");
    assert_int_equal(mixed->u.array.count, 5);
    assert_int_equal(mixed->u.array.items[1]->type, DS_TOML_STRING);
    assert_int_equal(mixed->u.array.items[4]->type, DS_TOML_TABLE);
    assert_int_equal(ds_toml_get(root, "multiline_array")->u.array.count, 3);
    const struct ds_toml_value *inl = ds_toml_get(root, "inline");
    assert_string_equal(str_of(ds_toml_get(inl, "y"), "z"), "dotted");
    assert_int_equal(ds_toml_get(inl, "empty")->u.table.count, 0);

    const struct ds_toml_value *x = ds_toml_get(root, "x");
    assert_string_equal(str_of(x, "added"), "later, allowed");
    assert_int_equal(int_of(ds_toml_get(ds_toml_get(ds_toml_get(x, "y"), "z"), "w"), "k"), 2);
    const struct ds_toml_value *prod = ds_toml_get(root, "products");
    assert_int_equal(prod->u.array.count, 3);
    assert_int_equal(prod->u.array.items[1]->u.table.count, 0);
    assert_string_equal(str_of(prod->u.array.items[2], "color"), "gray");
    const struct ds_toml_value *fr = ds_toml_get(root, "fruits")->u.array.items[0];
    assert_string_equal(str_of(ds_toml_get(fr, "physical"), "color"), "red");
    assert_int_equal(ds_toml_get(fr, "varieties")->u.array.count, 2);

    /* position of a value: line:col of "ints" array */
    unsigned line, col;
    ds_toml_position(text, len, ints->off, &line, &col);
    assert_int_equal(line, 17);
    assert_int_equal(col, 8);
    ds_toml_free(root);
    free(text);
}

static void test_valid_edges(void **state)
{
    (void)state;
    struct ds_toml_value *r;
    /* empty, comments only, BOM, CRLF */
    r = parse_ok("");
    assert_int_equal(r->u.table.count, 0);
    ds_toml_free(r);
    r = parse_ok("# only a comment");
    ds_toml_free(r);
    r = parse_ok("\xef\xbb\xbf"
                 "a = 1\r\n[t]\r\nb = \"x\" # c\r\n");
    assert_int_equal(int_of(r, "a"), 1);
    ds_toml_free(r);
    /* a string may contain NUL via \u0000; len counts it */
    r = parse_ok("s = \"a\\u0000b\"");
    assert_int_equal(ds_toml_get(r, "s")->u.str.len, 3);
    ds_toml_free(r);
    /* 5 quotes close a multi-line string with two quotes of content */
    r = parse_ok("s = \"\"\"x\"\"\"\"\"\nl = '''''y'''''");
    assert_string_equal(str_of(r, "s"), "x\"\"");
    assert_string_equal(str_of(r, "l"), "''y''");
    ds_toml_free(r);
    /* float-looking key is two parts; bare "-" key; sign on zero */
    r = parse_ok("3.14 = 1\n- = 2\nz = -0\nf = -0.0\n");
    assert_int_equal(int_of(ds_toml_get(r, "3"), "14"), 1);
    assert_int_equal(int_of(r, "-"), 2);
    assert_int_equal(int_of(r, "z"), 0);
    ds_toml_free(r);
    /* dotted keys may extend an implicitly created table; a header may add a sub-table */
    r = parse_ok("[a.b.c]\nx = 1\n[a]\nb.d = 2\n[fruit]\napple.color = 'red'\n"
                 "[fruit.apple.texture]\nsmooth = true\n");
    assert_int_equal(int_of(ds_toml_get(ds_toml_get(r, "a"), "b"), "d"), 2);
    ds_toml_free(r);
    /* limits reached exactly are fine: depth 32 */
    char deep[128] = "a = ";
    for (int i = 0; i < DS_TOML_DEPTH_MAX; i++) {
        strcat(deep, "[");
    }
    for (int i = 0; i < DS_TOML_DEPTH_MAX; i++) {
        strcat(deep, "]");
    }
    r = parse_ok(deep);
    ds_toml_free(r);
}

/* ---- the reader: invalid documents ----------------------------------------------------------- */

static void test_invalid_semantics(void **state)
{
    (void)state;
    const int F = -DS_E_FORMAT;
    parse_bad("a = 1\na = 2\n", F, 2, 1, "duplicate key a");
    parse_bad("[t]\nx.y = 1\nx.y = 2\n", F, 3, 3, "duplicate key t.x.y");
    parse_bad("[a]\nx = 1\n[a]\n", F, 3, 1, "table [a] defined twice");
    parse_bad("[a.b]\n[a.b]\n", F, 2, 1, "table [a.b] defined twice");
    parse_bad("[a]\nb.c = 1\n[a.b]\n", F, 3, 1, "table [a.b] already defined by dotted keys");
    parse_bad("[a.b]\nx = 1\n[a]\nb.c = 1\n", F, 4, 1, "cannot add to table a.b with dotted keys");
    parse_bad("[a]\nb.c = 1\n[x]\n[a.b.d]\n[a]\n", F, 5, 1, "table [a] defined twice");
    parse_bad("a = {x = 1}\na.y = 2\n", F, 2, 1, "cannot add keys to inline table a");
    parse_bad("a = {x = 1}\n[a.b]\n", F, 2, 2, "cannot define a table under a");
    parse_bad("a = 1\na.b = 2\n", F, 2, 1,
              "cannot add keys to a: it is already defined as integer");
    parse_bad("a = 1\n[a]\n", F, 2, 1, "cannot define table [a]: it is already defined as integer");
    parse_bad("[[a]]\n[a]\n", F, 2, 1, "already defined as array of tables");
    parse_bad("a = [1]\n[[a]]\n", F, 2, 1, "cannot define array of tables [[a]]");
    parse_bad("a = [{}]\n[[a]]\n", F, 2, 1, "cannot define array of tables [[a]]");
    parse_bad("[a]\n[[a]]\n", F, 2, 1, "cannot define array of tables [[a]]");
    parse_bad("a = { b = 1, b = 2 }", F, 1, 14, "duplicate key b");
    /* toml-test invalid/table/injection-{1,2} (toml-lang/toml#846) */
    parse_bad("[a.b.c]\n  z = 9\n[a]\n  b.c.t = 1\n", F, 4, 5,
              "cannot add to table a.b.c with dotted keys");
    parse_bad("[a.b.c.d]\n  z = 9\n[a]\n  b.c.d.k.t = 1\n", F, 4, 7,
              "cannot add to table a.b.c.d with dotted keys");
}

static void test_invalid_strings(void **state)
{
    (void)state;
    const int F = -DS_E_FORMAT;
    parse_bad("s = \"\\q\"", F, 1, 6, "bad escape: \\ followed by 'q'");
    parse_bad("s = \"\xc3\xa9\\q\"", F, 1, 7, "bad escape"); /* columns count characters */
    parse_bad("s = \"\\u12\"", F, 1, 6, "\\u needs 4 hex digits");
    parse_bad("s = \"\\U0011FFFF\"", F, 1, 6, "not a Unicode scalar value");
    parse_bad("s = \"\\uD800\"", F, 1, 6, "not a Unicode scalar value");
    parse_bad("s = \"\\ \nx\"", F, 1, 6, "bad escape");
    parse_bad("s = \"\xff\"", F, 1, 6, "invalid UTF-8 (byte 0xff)");
    parse_bad("s = \"\xc0\xaf\"", F, 1, 6, "invalid UTF-8");     /* overlong */
    parse_bad("s = \"\xed\xa0\x80\"", F, 1, 6, "invalid UTF-8"); /* surrogate */
    parse_bad("# ok\n# \xe2\x82\n", F, 2, 3, "invalid UTF-8");   /* truncated */
    parse_bad("s = \"abc", F, 1, 5, "unterminated string");
    parse_bad("s = \"abc\nx = 1\n", F, 1, 9, "unterminated string");
    parse_bad("s = 'abc\n", F, 1, 9, "unterminated string");
    parse_bad("s = \"\"\"abc\n", F, 1, 5, "unterminated multi-line string");
    parse_bad("s = '''abc''''''", F, 1, 16, "too many quotes");
    parse_bad("s = \"a\x7f\"", F, 1, 7, "control character U+007F in string");
    parse_bad("s = \"a\x01\"", F, 1, 7, "control character U+0001 in string");
    parse_bad("s = '''a\x1b'''", F, 1, 9, "control character U+001B in string");
    parse_bad("# c\x01\n", F, 1, 4, "control character U+0001 in comment");
    parse_bad("\"\"\"k\"\"\" = 1", F, 1, 1, "multi-line strings cannot be keys");
    char *big = malloc(DS_TOML_STRING_MAX + 16);
    assert_non_null(big);
    memcpy(big, "s = \"", 5);
    memset(big + 5, 'a', DS_TOML_STRING_MAX + 1);
    memcpy(big + 5 + DS_TOML_STRING_MAX + 1, "\"", 2);
    parse_bad(big, -DS_E_LIMIT, 1, 5, "string longer than 65536 bytes");
    free(big);
}

static void test_invalid_numbers(void **state)
{
    (void)state;
    const int F = -DS_E_FORMAT;
    parse_bad("n = 9223372036854775808", F, 1, 5, "integer overflow");
    parse_bad("n = -9223372036854775809", F, 1, 5, "integer overflow");
    parse_bad("n = 0x8000000000000000", F, 1, 5, "integer overflow");
    parse_bad("n = 0b11111111111111111111111111111111111111111111111111111111111111111", F, 1, 5,
              "integer overflow");
    parse_bad("n = 012", F, 1, 5, "leading zeros");
    parse_bad("n = -00", F, 1, 6, "leading zeros");
    parse_bad("n = 0_1", F, 1, 5, "leading zeros");
    parse_bad("n = 1__0", F, 1, 6, "'_' in a number must sit between two digits");
    parse_bad("n = 1_", F, 1, 6, "'_' in a number");
    parse_bad("n = 0x_1", F, 1, 7, "'_' in a number");
    parse_bad("n = +0x10", F, 1, 5, "sign is not allowed");
    parse_bad("n = 0x1g", F, 1, 8, "invalid character 'g' in integer");
    parse_bad("n = 0o8", F, 1, 7, "expected a digit");
    parse_bad("n = 12a", F, 1, 7, "invalid character 'a' in number");
    parse_bad("f = 1.", F, 1, 7, "expected a digit after '.'");
    parse_bad("f = 1.e5", F, 1, 7, "expected a digit after '.'");
    parse_bad("f = .5", F, 1, 5, "expected a value");
    parse_bad("f = 1e", F, 1, 7, "expected a digit in the exponent");
    parse_bad("f = 1e400", F, 1, 5, "float out of range");
    parse_bad("f = infinity", F, 1, 5, "expected a value");
    parse_bad("b = True", F, 1, 5, "expected a value");
    parse_bad("d = 1979-05-27T07:32:00Z", -DS_E_UNSUPPORTED, 1, 5, "unsupported: datetime");
    parse_bad("d = 1979-05-27", -DS_E_UNSUPPORTED, 1, 5, "unsupported: datetime");
    parse_bad("d = 1979-13-45", -DS_E_UNSUPPORTED, 1, 5, "unsupported: datetime");
    parse_bad("d = 1979-05-27 07:32:00", -DS_E_UNSUPPORTED, 1, 5, "unsupported: datetime");
    parse_bad("t = 07:32:00", -DS_E_UNSUPPORTED, 1, 5, "unsupported: datetime");
    parse_bad("a = [2024-01-01]", -DS_E_UNSUPPORTED, 1, 6, "unsupported: datetime");
}

static void test_invalid_structure(void **state)
{
    (void)state;
    const int F = -DS_E_FORMAT;
    parse_bad("port 8000\n", F, 1, 6, "expected '=' after key \"port\", found '8'");
    parse_bad("[core]\n\"my key\"\n", F, 2, 9,
              "expected '=' after key \"my key\", found end of line");
    parse_bad("a = 1 2\n", F, 1, 7, "expected end of line after value, found '2'");
    parse_bad("a = \"x\" y\n", F, 1, 9, "expected end of line after value, found 'y'");
    parse_bad("a = [1] ]\n", F, 1, 9, "expected end of line after value, found ']'");
    parse_bad("[t] x = 1\n", F, 1, 5, "expected end of line after table header, found 'x'");
    parse_bad("a = \n", F, 1, 5, "expected a value after '=', found end of line");
    parse_bad("a =", F, 1, 4, "expected a value after '=', found end of file");
    parse_bad("= 1\n", F, 1, 1, "expected a key, found '='");
    parse_bad("a.= 1\n", F, 1, 3, "expected a key, found '='");
    parse_bad("a = [1, 2\n", F, 1, 5, "unterminated array");
    parse_bad("a = [1 2]\n", F, 1, 8, "expected ',' or ']' in array, found '2'");
    parse_bad("a = [,]\n", F, 1, 6, "expected a value, found ','");
    parse_bad("a = { x = 1, }\n", F, 1, 14, "trailing ',' is not allowed in an inline table");
    parse_bad("a = { x = 1,\n y = 2 }\n", F, 1, 13, "newline inside an inline table");
    parse_bad("a = { x = 1\n", F, 1, 12, "expected ',' or '}' in inline table, found end of line");
    parse_bad("a = { x 1 }\n", F, 1, 9, "expected '=' after key \"x\"");
    parse_bad("[a\n", F, 1, 3, "expected ']' to close the table header");
    parse_bad("[[a]\n", F, 1, 5, "expected ']]' to close the table header");
    parse_bad("[]\n", F, 1, 2, "expected a key, found ']'");
    parse_bad("a = 1\r\nb = 2\r", F, 2, 6, "expected end of line after value, found end of line");
    parse_bad("\r", F, 1, 1, "carriage return without a line feed");
    /* depth limit */
    char deep[128] = "a = ";
    for (int i = 0; i <= DS_TOML_DEPTH_MAX; i++) {
        strcat(deep, "[");
    }
    parse_bad(deep, -DS_E_LIMIT, 1, 5 + DS_TOML_DEPTH_MAX, "nested deeper than 32");
    char parts[256] = "";
    for (int i = 0; i <= DS_TOML_DEPTH_MAX; i++) {
        strcat(parts, i ? ".k" : "k");
    }
    strcat(parts, " = 1");
    parse_bad(parts, -DS_E_LIMIT, 1, 65, "key has more than 32 parts");
    /* size limit */
    size_t n = DS_TOML_FILE_MAX + 1;
    char *big = malloc(n);
    assert_non_null(big);
    memset(big, '#', n);
    parse_bad_n(big, n, -DS_E_LIMIT, 1, 1, "file larger than");
    free(big);
}

/* ---- cross-check with Python's tomllib ------------------------------------------------------- */

static const char *const crosscheck_docs[] = {
    "a = 0\nb = -0\nc = +0.0\nd = -0.0\ne = 1e308\nf = 5e-324\ng = 0.1\n"
    "h = 123_456.789_012e-1_0\ni = 1E+06\nj = 0xff\nk = 0o17\nl = 0b1010\nm = -inf\nn = nan\n",
    "s1 = \"\\u00e9\\U0001F600\\t\\\"q\\\"\"\ns2 = 'C:\\Users\\x'\n"
    "s3 = \"\"\"\nRoses are red\n  Violets are blue\"\"\"\n"
    "s4 = \"\"\"\\\n   The quick \\\n   brown fox.\\\n   \"\"\"\n"
    "s5 = '''\nThe first newline is\ntrimmed in raw strings.\n'''\n"
    "s6 = \"\"\"\"This,\" she said, \"is just a pointless statement.\"\"\"\"\n"
    "s7 = '''''That's'' all'''\ns8 = \"\xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\"\n",
    "\"a.b\" = 1\n'c.d'.e = 2\n3.14 = \"float-looking key\"\n\"\xc3\xa9\" = 3\n- = 4\n_ = 5\n",
    "[a.b]\nx = 1\n[a]\ny = 2\n[a.c]\nz = 3\n[a.b.c.d]\nw = 4\n",
    "[a.b.c]\nx = 1\n[a]\nb.d = 2\n",
    "[fruit]\napple.color = 'red'\napple.taste.sweet = true\n[fruit.apple.texture]\nsmooth = "
    "true\n",
    "[[fruits]]\nname = 'apple'\n[fruits.physical]\ncolor = 'red'\n[[fruits.varieties]]\n"
    "name = 'rd'\n[[fruits.varieties]]\nname = 'gs'\n[[fruits]]\nname = 'banana'\n"
    "[[fruits.varieties]]\nname = 'plantain'\n",
    "a = [ [ 1, 2 ], [\"a\", 'b'], [ { x = 1 }, {} ], [], 1.5, true ]\n"
    "b = [\n  1, # c\n\n  2, # d\n]\nc = { p = { q = { r = [1] } }, s.t = 2 }\n",
    "a\t=\t1 # c\n[ t . u ]\n[[ v ]]\n[[ v ]]\nx = 'y'\n",
    "a = \"\"\"x\"\"\"\"\"\nb = '''''y'''''\nc = \"\"\"\n\n\"\"\"\nd = ''\ne = \"\"\n",
};

static const char *const crosscheck_files[] = {"kms.toml",       "vmm.toml",
                                               "gateway.toml",   "all_constructs.toml",
                                               "schema_ok.toml", "schema_aot.toml"};

static const char tomllib_script[] =
    "import sys, json, math, tomllib\n"
    "def conv(v):\n"
    "    if isinstance(v, dict): return {k: conv(x) for k, x in v.items()}\n"
    "    if isinstance(v, list): return [conv(x) for x in v]\n"
    "    if isinstance(v, bool): return {'type': 'bool', 'value': 'true' if v else 'false'}\n"
    "    if isinstance(v, int): return {'type': 'integer', 'value': str(v)}\n"
    "    if isinstance(v, float):\n"
    "        s = 'nan' if math.isnan(v) else ('inf' if v > 0 else '-inf') if math.isinf(v) "
    "else '%.17g' % v\n"
    "        return {'type': 'float', 'value': s}\n"
    "    if isinstance(v, str): return {'type': 'string', 'value': v}\n"
    "    return {'type': 'datetime', 'value': str(v)}\n"
    "for p in sys.argv[1:]:\n"
    "    try:\n"
    "        with open(p, 'rb') as f: print(json.dumps(conv(tomllib.load(f))))\n"
    "    except tomllib.TOMLDecodeError:\n"
    "        print('ERR')\n";

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void test_crosscheck_tomllib(void **state)
{
    (void)state;
    char dir[] = "/tmp/ds-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[256], cmd[8192];
    snprintf(script, sizeof(script), "%s/conv.py", dir);
    write_file(script, tomllib_script, strlen(tomllib_script));
    size_t ndocs = DS_ARRAY_SIZE(crosscheck_docs) + DS_ARRAY_SIZE(crosscheck_files);
    char **texts = calloc(ndocs, sizeof(char *));
    size_t *lens = calloc(ndocs, sizeof(size_t));
    assert_non_null(texts);
    assert_non_null(lens);
    int o = snprintf(cmd, sizeof(cmd), "/usr/bin/python3 %s", script);
    for (size_t i = 0; i < ndocs; i++) {
        char path[512];
        if (i < DS_ARRAY_SIZE(crosscheck_docs)) {
            texts[i] = strdup(crosscheck_docs[i]);
            lens[i] = strlen(texts[i]);
        } else {
            snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/toml/%s", src_dir(),
                     crosscheck_files[i - DS_ARRAY_SIZE(crosscheck_docs)]);
            texts[i] = read_text(path, &lens[i]);
        }
        snprintf(path, sizeof(path), "%s/doc%zu.toml", dir, i);
        write_file(path, texts[i], lens[i]);
        o += snprintf(cmd + o, sizeof(cmd) - (size_t)o, " %s", path);
    }
    FILE *py = popen(cmd, "r");
    assert_non_null(py);
    char *line = NULL;
    size_t cap = 0;
    size_t checked = 0;
    for (size_t i = 0; i < ndocs; i++) {
        ssize_t n = getline(&line, &cap, py);
        if (n <= 0) {
            fail_msg("tomllib gave no output for document %zu (is python3 >= 3.11 there?)", i);
        }
        if (strncmp(line, "ERR", 3) == 0) {
            fail_msg("tomllib rejects valid document %zu", i);
        }
        json_error_t jerr;
        json_t *want = json_loads(line, JSON_ALLOW_NUL, &jerr);
        assert_non_null(want);
        struct ds_toml_value *root = NULL;
        struct ds_config_err err;
        int r = ds_toml_parse(texts[i], lens[i], "doc", &root, &err);
        if (r != 0) {
            fail_msg("document %zu: tomllib accepts it, we say: %s", i, err.msg);
        }
        json_t *got = ds_toml_to_json(root);
        if (!json_equal(got, want)) {
            char *g = json_dumps(got, JSON_SORT_KEYS | JSON_COMPACT);
            char *w = json_dumps(want, JSON_SORT_KEYS | JSON_COMPACT);
            fail_msg("document %zu differs from tomllib\n ours:    %s\n tomllib: %s", i, g, w);
        }
        json_decref(got);
        json_decref(want);
        ds_toml_free(root);
        checked++;
    }
    assert_int_equal(pclose(py), 0);
    assert_int_equal(checked, ndocs);
    free(line);
    for (size_t i = 0; i < ndocs; i++) {
        char path[512];
        snprintf(path, sizeof(path), "%s/doc%zu.toml", dir, i);
        unlink(path);
        free(texts[i]);
    }
    unlink(script);
    rmdir(dir);
    free(texts);
    free(lens);
}

/*
 * Generated documents: random lines from pools of headers, keys and values (valid and invalid,
 * chosen to hit TOML's table-definition rules), fixed seed. Each must be accepted by both
 * parsers with the same tree, or rejected by both (datetimes: we say unsupported).
 */
#define GEN_DOCS 600

static const char *const gen_keys[] = {"a",     "b",       "c",   "\"a\"", "a.b",  "b.c",
                                       "a.b.c", "\"x.y\"", "'b'", "c.a",   "a . b"};
static const char *const gen_vals[] = {"1",
                                       "-0",
                                       "0x1F",
                                       "1_000",
                                       "1.5",
                                       "-inf",
                                       "nan",
                                       "true",
                                       "\"s\"",
                                       "'l'",
                                       "\"\"\"m\nl\"\"\"",
                                       "'''r\n'''",
                                       "[]",
                                       "[1, \"a\", [2]]",
                                       "[\n1,\n# c\n2,\n]",
                                       "{}",
                                       "{ x = 1 }",
                                       "{ x.y = 1, z = [] }",
                                       "{ a = { b = 1 } }",
                                       "[{ x = 1 }, { y = 2 }]",
                                       "\"\\u00e9\\t\"",
                                       "1e3",
                                       "0.1",
                                       "+1",
                                       "07",
                                       "1__2",
                                       "\"\\x\"",
                                       "{ x = 1, }",
                                       "[1 2]",
                                       "1979-01-01"};
static const char *const gen_hdrs[] = {"[a]",     "[b]",   "[a.b]", "[a.b.c]",   "[[a]]",
                                       "[[a.b]]", "[[b]]", "[c.a]", "[\"a\".b]", "[ a . c ]",
                                       "[[ c ]]", "[x.y]", "[a.c]"};

static uint32_t gen_next(uint64_t *st)
{
    *st = *st * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(*st >> 33);
}

static void test_crosscheck_generated(void **state)
{
    (void)state;
    char dir[] = "/tmp/ds-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char script[256];
    snprintf(script, sizeof(script), "%s/conv.py", dir);
    write_file(script, tomllib_script, strlen(tomllib_script));
    char **texts = calloc(GEN_DOCS, sizeof(char *));
    assert_non_null(texts);
    uint64_t st = 42;
    size_t cmd_size = 64 + GEN_DOCS * 48;
    char *cmd = malloc(cmd_size);
    assert_non_null(cmd);
    int o = snprintf(cmd, cmd_size, "/usr/bin/python3 %s", script);
    for (size_t i = 0; i < GEN_DOCS; i++) {
        struct ds_buf b;
        ds_buf_init(&b, 4096);
        unsigned lines = 1 + gen_next(&st) % 8;
        for (unsigned l = 0; l < lines; l++) {
            int r;
            if (gen_next(&st) % 10 < 3) {
                r = ds_buf_printf(&b, "%s\n", gen_hdrs[gen_next(&st) % DS_ARRAY_SIZE(gen_hdrs)]);
            } else {
                const char *k = gen_keys[gen_next(&st) % DS_ARRAY_SIZE(gen_keys)];
                const char *v = gen_vals[gen_next(&st) % DS_ARRAY_SIZE(gen_vals)];
                r = ds_buf_printf(&b, "%s = %s\n", k, v);
            }
            assert_int_equal(r, 0);
        }
        uint8_t *d;
        size_t n;
        ds_buf_steal(&b, &d, &n);
        assert_non_null(d);
        texts[i] = (char *)d;
        char path[256];
        snprintf(path, sizeof(path), "%s/g%zu.toml", dir, i);
        write_file(path, texts[i], n);
        o += snprintf(cmd + o, cmd_size - (size_t)o, " %s", path);
    }
    FILE *py = popen(cmd, "r");
    assert_non_null(py);
    char *line = NULL;
    size_t cap = 0, accepted = 0, rejected = 0;
    for (size_t i = 0; i < GEN_DOCS; i++) {
        if (getline(&line, &cap, py) <= 0) {
            fail_msg("tomllib gave no output for generated document %zu", i);
        }
        struct ds_toml_value *root = NULL;
        struct ds_config_err err;
        int r = ds_toml_parse(texts[i], strlen(texts[i]), "g", &root, &err);
        bool py_ok = strncmp(line, "ERR", 3) != 0;
        if (r == -DS_E_UNSUPPORTED && strstr(err.msg, "datetime")) {
            continue;
        }
        if (py_ok != (r == 0)) {
            fail_msg("generated document %zu: tomllib %s, we %s (%s)\n%s", i,
                     py_ok ? "accepts" : "rejects", r == 0 ? "accept" : "reject", err.msg,
                     texts[i]);
        }
        if (py_ok) {
            json_t *want = json_loads(line, JSON_ALLOW_NUL, NULL);
            json_t *got = ds_toml_to_json(root);
            assert_non_null(want);
            if (!json_equal(got, want)) {
                fail_msg("generated document %zu: trees differ\n%s", i, texts[i]);
            }
            json_decref(want);
            json_decref(got);
            accepted++;
        } else {
            rejected++;
        }
        ds_toml_free(root);
    }
    assert_int_equal(pclose(py), 0);
    print_message("generated documents: %zu accepted and %zu rejected by both parsers\n", accepted,
                  rejected);
    /* the pools must exercise both outcomes substantially */
    assert_true(accepted > GEN_DOCS / 10);
    assert_true(rejected > GEN_DOCS / 10);
    free(line);
    for (size_t i = 0; i < GEN_DOCS; i++) {
        char path[256];
        snprintf(path, sizeof(path), "%s/g%zu.toml", dir, i);
        unlink(path);
        free(texts[i]);
    }
    unlink(script);
    rmdir(dir);
    free(texts);
    free(cmd);
}

/* Documents we reject must be rejected by tomllib too (except datetimes, which it supports). */
static void test_crosscheck_rejections(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "a = 1\na = 2\n",
        "[a]\n[a]\n",
        "s = \"\\q\"\n",
        "n = 012\n",
        "a = [1 2]\n",
        "a = {x=1,}\n",
        "[a.b]\n[a]\nb.c = 1\n",
        "a = {x=1}\na.y = 2\n",
        "n = 1__0\n",
        "a = 1 2\n",
        "[[a]]\n[a]\n",
        "s = '''a''''''\n",
        "[a]\nb.c=1\n[a.b]\n",
        "n = +0x1\n",
        "f = 1.\n",
    };
    char dir[] = "/tmp/ds-config-XXXXXX";
    assert_non_null(mkdtemp(dir));
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        struct ds_toml_value *root = NULL;
        assert_int_equal(ds_toml_parse(bad[i], strlen(bad[i]), "b", &root, NULL), -DS_E_FORMAT);
        char path[256], cmd[512];
        snprintf(path, sizeof(path), "%s/bad.toml", dir);
        write_file(path, bad[i], strlen(bad[i]));
        snprintf(cmd, sizeof(cmd),
                 "/usr/bin/python3 -c 'import sys,tomllib; tomllib.load(open(sys.argv[1],\"rb\"))'"
                 " %s 2>/dev/null",
                 path);
        int st = system(cmd);
        if (st == 0) {
            fail_msg("tomllib accepts what we reject: %s", bad[i]);
        }
        unlink(path);
    }
    rmdir(dir);
}

/* ---- units ----------------------------------------------------------------------------------- */

static void test_units(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(ds_config_parse_duration("500ms", &v), 0);
    assert_true(v == 500);
    assert_int_equal(ds_config_parse_duration("30s", &v), 0);
    assert_true(v == 30000);
    assert_int_equal(ds_config_parse_duration("2m", &v), 0);
    assert_true(v == 120000);
    assert_int_equal(ds_config_parse_duration("5h", &v), 0);
    assert_true(v == 5 * 3600000ull);
    assert_int_equal(ds_config_parse_duration("10d", &v), 0);
    assert_true(v == 10 * 86400000ull);
    assert_int_equal(ds_config_parse_duration("1h 30m", &v), 0);
    assert_true(v == 5400000);
    assert_int_equal(ds_config_parse_duration("1h30m5s", &v), 0);
    assert_true(v == 5405000);
    assert_int_equal(ds_config_parse_duration("0s", &v), 0);
    assert_true(v == 0);
    assert_int_equal(ds_config_parse_duration("2 weeks", &v), 0);
    assert_true(v == 2 * 604800000ull);
    assert_int_equal(ds_config_parse_duration("10", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_duration("", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_duration("5x", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_duration("-5s", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_duration("1.5s", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_duration("5S", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_duration("99999999999999999999s", &v), -DS_E_LIMIT);
    assert_int_equal(ds_config_parse_duration("9999999999999999w", &v), -DS_E_LIMIT);
    assert_int_equal(ds_config_parse_duration("18446744073709551615ms", &v), -DS_E_LIMIT);

    assert_int_equal(ds_config_parse_size("65536", &v), 0);
    assert_true(v == 65536);
    assert_int_equal(ds_config_parse_size("64K", &v), 0);
    assert_true(v == 65536);
    assert_int_equal(ds_config_parse_size("4M", &v), 0);
    assert_true(v == 4ull << 20);
    assert_int_equal(ds_config_parse_size("10MiB", &v), 0);
    assert_true(v == 10ull << 20);
    assert_int_equal(ds_config_parse_size("10 mib", &v), 0);
    assert_true(v == 10ull << 20);
    assert_int_equal(ds_config_parse_size("1GB", &v), 0);
    assert_true(v == 1000000000ull);
    assert_int_equal(ds_config_parse_size("2T", &v), 0);
    assert_true(v == 2ull << 40);
    assert_int_equal(ds_config_parse_size("12B", &v), 0);
    assert_true(v == 12);
    assert_int_equal(ds_config_parse_size("4X", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_size("M", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_size("1.5G", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_size("4M ", &v), -DS_E_FORMAT);
    assert_int_equal(ds_config_parse_size("99999999T", &v), -DS_E_LIMIT);
}

/* ---- schema ---------------------------------------------------------------------------------- */

struct t_range {
    char *protocol;
    uint16_t from, to;
};

struct t_cfg {
    char *ident;
    char *cert_dir;
    bool verify;
    int64_t workers;
    uint16_t port;
    uint64_t body_limit;
    uint64_t timeout_ms;
    int platform;
    struct ds_config_strv urls;
    struct ds_config_tables ranges;
    char *token;
    struct ds_config_strv secret_list;
    char *unset;
    struct ds_config_intv uids;
    struct ds_config_strmap params;
    uint64_t splice_after_ms;
};

static const char *const t_platforms[] = {"auto", "tdx", "amd-sev-snp", NULL};

#define RF(f) offsetof(struct t_range, f)
static const struct ds_config_key t_range_keys[] = {
    {"protocol", DS_CFG_STRING, RF(protocol), "tcp", 0, 0, NULL, NULL, "tcp or udp", 0},
    {"from", DS_CFG_PORT, RF(from), NULL, 1, 65535, NULL, NULL, "first port", DS_CFG_REQUIRED},
    {"to", DS_CFG_PORT, RF(to), NULL, 1, 65535, NULL, NULL, "last port", DS_CFG_REQUIRED},
};
static const struct ds_config_schema t_range_schema = {
    "range", t_range_keys, DS_ARRAY_SIZE(t_range_keys), sizeof(struct t_range)};

#define TF(f) offsetof(struct t_cfg, f)
static const struct ds_config_key t_keys[] = {
    {"ident", DS_CFG_STRING, TF(ident), "dstack KMS", 0, 64, NULL, NULL, "server ident", 0},
    {"core.cert_dir", DS_CFG_PATH, TF(cert_dir), NULL, 0, 0, NULL, NULL, "certificate dir",
     DS_CFG_REQUIRED},
    {"core.image.verify", DS_CFG_BOOL, TF(verify), "true", 0, 0, NULL, NULL, "verify images", 0},
    {"workers", DS_CFG_INT, TF(workers), "8", 1, 1024, NULL, NULL, "worker threads", 0},
    {"core.onboard.port", DS_CFG_PORT, TF(port), "8000", 1, 65535, NULL, NULL, "onboard port", 0},
    {"rpc.body_limit", DS_CFG_SIZE, TF(body_limit), "10MiB", 1024, 1 << 30, NULL, NULL,
     "request body limit | bytes", 0},
    {"core.image.download_timeout", DS_CFG_DURATION, TF(timeout_ms), "2m", 1000, 7200000, NULL,
     NULL, "image download timeout", 0},
    {"cvm.platform", DS_CFG_ENUM, TF(platform), "auto", 0, 0, t_platforms, NULL, "TEE platform", 0},
    {"cvm.kms_urls", DS_CFG_STRINGS, TF(urls), "[\"http://127.0.0.1:8081\"]", 0, 0, NULL, NULL,
     "KMS URLs", 0},
    {"cvm.port_mapping.range", DS_CFG_TABLES, TF(ranges), NULL, 0, 0, NULL, &t_range_schema,
     "port ranges", 0},
    {"core.admin.token", DS_CFG_STRING, TF(token), "", 0, 0, NULL, NULL, "admin token",
     DS_CFG_SECRET},
    {"core.admin.tokens", DS_CFG_STRINGS, TF(secret_list), NULL, 0, 0, NULL, NULL, "more tokens",
     DS_CFG_SECRET},
    {"core.optional", DS_CFG_STRING, TF(unset), NULL, 0, 0, NULL, NULL,
     "unset by default\n(a second help line stays in the comment)", 0},
    {"netd.allowed_uids", DS_CFG_INTS, TF(uids), "[0]", 0, 65535, NULL, NULL, "uids", 0},
    {"cvm.network_filter.parameters", DS_CFG_STRMAP, TF(params), NULL, 0, 0, NULL, NULL,
     "filter parameters", 0},
    {"core.proxy.tcp_splice.after_duration", DS_CFG_DURATION, TF(splice_after_ms), "unset", 0, 0,
     NULL, NULL, "splice after (absent = off)", 0},
};
static const struct ds_config_schema t_schema = {"kms.toml", t_keys, DS_ARRAY_SIZE(t_keys),
                                                 sizeof(struct t_cfg)};

static const char t_minimal[] = "[core]\ncert_dir = \"/etc/kms/certs\"\n";

static void load_bad(const char *text, int code, unsigned line, unsigned col, const char *what)
{
    struct t_cfg cfg = {0};
    struct ds_config_err err;
    int r = ds_config_load_text(&t_schema, text, strlen(text), "kms.toml", &cfg, &err);
    if (r != code || err.line != line || err.col != col || strcmp(err.msg, what) != 0) {
        fail_msg("input %s\n  got %d \"%s\" (%u:%u)\n  want %d \"%s\" (%u:%u)", text, r, err.msg,
                 err.line, err.col, code, what, line, col);
    }
    /* nothing written on failure */
    struct t_cfg zero = {0};
    assert_memory_equal(&cfg, &zero, sizeof(cfg));
}

static void test_schema_defaults(void **state)
{
    (void)state;
    struct t_cfg cfg = {0};
    struct ds_config_err err;
    assert_int_equal(
        ds_config_load_text(&t_schema, t_minimal, strlen(t_minimal), "kms.toml", &cfg, &err), 0);
    assert_string_equal(cfg.ident, "dstack KMS");
    assert_string_equal(cfg.cert_dir, "/etc/kms/certs");
    assert_true(cfg.verify);
    assert_int_equal(cfg.workers, 8);
    assert_int_equal(cfg.port, 8000);
    assert_true(cfg.body_limit == 10ull << 20);
    assert_true(cfg.timeout_ms == 120000);
    assert_int_equal(cfg.platform, 0);
    assert_int_equal(cfg.urls.count, 1);
    assert_string_equal(cfg.urls.items[0], "http://127.0.0.1:8081");
    assert_int_equal(cfg.ranges.count, 0);
    assert_string_equal(cfg.token, "");
    assert_null(cfg.unset);
    assert_int_equal(cfg.uids.count, 1);
    assert_int_equal(cfg.uids.items[0], 0);
    assert_int_equal(cfg.params.count, 0);
    assert_true(cfg.splice_after_ms == DS_CONFIG_UNSET);
    ds_config_free(&t_schema, &cfg);
    assert_null(cfg.ident);
    assert_null(cfg.urls.items);

    /* defaults only: the required key is missing */
    assert_int_equal(ds_config_defaults(&t_schema, &cfg, &err), -DS_E_NOT_FOUND);
    assert_string_equal(err.msg, "kms.toml: missing required key core.cert_dir");
    assert_int_equal(err.line, 0);
}

static void test_schema_values(void **state)
{
    (void)state;
    static const char text[] =
        "ident = \"my \\\"kms\\\"\"\nworkers = 16\n"
        "[core]\ncert_dir = '/var/kms'\nonboard.port = 9000\noptional = \"set\"\n"
        "[core.image]\nverify = false\ndownload_timeout = \"1h 30m\"\n"
        "[core.admin]\ntoken = \"s3cret-token\"\ntokens = [\"t1\", \"t2\"]\n"
        "[rpc]\nbody_limit = \"64K\"\n"
        "[cvm]\nplatform = \"amd-sev-snp\"\nkms_urls = [\"https://a\", \"https://b\"]\n"
        "[cvm.port_mapping]\nrange = [\n  { protocol = \"udp\", from = 1, to = 20000 },\n"
        "  { from = 30000, to = 30010 },\n]\n"
        "[cvm.network_filter]\nparameters = { IP = \"10.0.0.2\", \"a b\" = 'c\"d' }\n"
        "[netd]\nallowed_uids = [1000, 1001]\n"
        "[core.proxy.tcp_splice]\nafter_duration = \"0s\"\n";
    struct t_cfg cfg = {0}, again = {0};
    struct ds_config_err err;
    int r = ds_config_load_text(&t_schema, text, strlen(text), "kms.toml", &cfg, &err);
    if (r) {
        fail_msg("%s", err.msg);
    }
    assert_string_equal(cfg.ident, "my \"kms\"");
    assert_int_equal(cfg.workers, 16);
    assert_string_equal(cfg.cert_dir, "/var/kms");
    assert_int_equal(cfg.port, 9000);
    assert_false(cfg.verify);
    assert_true(cfg.timeout_ms == 5400000);
    assert_true(cfg.body_limit == 65536);
    assert_int_equal(cfg.platform, 2);
    assert_int_equal(cfg.urls.count, 2);
    assert_string_equal(cfg.urls.items[1], "https://b");
    assert_int_equal(cfg.ranges.count, 2);
    struct t_range *rg = cfg.ranges.items;
    assert_string_equal(rg[0].protocol, "udp");
    assert_int_equal(rg[0].from, 1);
    assert_int_equal(rg[0].to, 20000);
    assert_string_equal(rg[1].protocol, "tcp"); /* element default */
    assert_int_equal(rg[1].from, 30000);
    assert_string_equal(cfg.token, "s3cret-token");
    assert_int_equal(cfg.uids.count, 2);
    assert_int_equal(cfg.uids.items[1], 1001);
    assert_int_equal(cfg.params.count, 2);
    assert_string_equal(cfg.params.keys[1], "a b");
    assert_string_equal(cfg.params.values[1], "c\"d");
    assert_true(cfg.splice_after_ms == 0);

    /* the dump: secrets never appear, and it reads back to the same struct */
    char *dump = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream(&dump, &dlen);
    assert_non_null(f);
    assert_int_equal(ds_config_dump(&t_schema, &cfg, f), 0);
    fclose(f);
    assert_null(strstr(dump, "s3cret"));
    assert_null(strstr(dump, "t1"));
    assert_non_null(strstr(dump, "# token = (secret, not shown)"));
    assert_non_null(strstr(dump, "[core.onboard]\n# onboard port\nport = 9000\n"));
    assert_non_null(strstr(dump, "download_timeout = \"90m\""));
    assert_non_null(strstr(dump, "body_limit = \"64KiB\""));
    assert_non_null(strstr(dump, "range = [{ protocol = \"udp\", from = 1, to = 20000 }, "
                                 "{ protocol = \"tcp\", from = 30000, to = 30010 }]"));
    r = ds_config_load_text(&t_schema, dump, dlen, "dump", &again, &err);
    if (r) {
        fail_msg("dump does not load: %s\n%s", err.msg, dump);
    }
    assert_string_equal(again.ident, cfg.ident);
    assert_string_equal(again.cert_dir, cfg.cert_dir);
    assert_int_equal(again.verify, cfg.verify);
    assert_int_equal(again.workers, cfg.workers);
    assert_int_equal(again.port, cfg.port);
    assert_true(again.body_limit == cfg.body_limit);
    assert_true(again.timeout_ms == cfg.timeout_ms);
    assert_int_equal(again.platform, cfg.platform);
    assert_int_equal(again.urls.count, cfg.urls.count);
    for (size_t i = 0; i < cfg.urls.count; i++) {
        assert_string_equal(again.urls.items[i], cfg.urls.items[i]);
    }
    assert_int_equal(again.ranges.count, 2);
    struct t_range *rg2 = again.ranges.items;
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(rg2[i].protocol, rg[i].protocol);
        assert_int_equal(rg2[i].from, rg[i].from);
        assert_int_equal(rg2[i].to, rg[i].to);
    }
    assert_string_equal(again.unset, "set");
    assert_non_null(strstr(dump, "parameters = { \"IP\" = \"10.0.0.2\", \"a b\" = \"c\\\"d\" }"));
    assert_non_null(strstr(dump, "allowed_uids = [1000, 1001]"));
    assert_non_null(strstr(dump, "after_duration = \"0s\""));
    assert_int_equal(again.uids.count, 2);
    assert_int_equal(again.uids.items[0], 1000);
    assert_int_equal(again.params.count, 2);
    assert_string_equal(again.params.keys[0], "IP");
    assert_string_equal(again.params.values[1], "c\"d");
    assert_true(again.splice_after_ms == 0);
    /* secrets come back as their defaults */
    assert_string_equal(again.token, "");
    assert_int_equal(again.secret_list.count, 0);
    free(dump);
    ds_config_free(&t_schema, &again);

    /* a dump of the defaults-only struct re-parses too (unset string stays unset) */
    ds_config_free(&t_schema, &cfg);
    assert_int_equal(ds_config_load_text(&t_schema, t_minimal, strlen(t_minimal), "k", &cfg, &err),
                     0);
    f = open_memstream(&dump, &dlen);
    assert_int_equal(ds_config_dump(&t_schema, &cfg, f), 0);
    fclose(f);
    assert_non_null(strstr(dump, "# unset by default (a second help line stays in the "
                                 "comment)\n# optional = (unset)"));
    assert_non_null(strstr(dump, "# after_duration = (unset)"));
    assert_non_null(strstr(dump, "parameters = {}"));
    memset(&again, 0, sizeof(again));
    assert_int_equal(ds_config_load_text(&t_schema, dump, dlen, "dump", &again, &err), 0);
    assert_null(again.unset);
    assert_true(again.splice_after_ms == DS_CONFIG_UNSET);
    assert_int_equal(again.port, 8000);
    free(dump);
    ds_config_free(&t_schema, &again);
    ds_config_free(&t_schema, &cfg);
}

static void test_schema_errors(void **state)
{
    (void)state;
    const int F = -DS_E_FORMAT;
    load_bad("[core]\ncert_dir = \"/x\"\n[core.onbaord]\nport = 1\n", F, 4, 1,
             "kms.toml:4:1: unknown key core.onbaord.port (did you mean core.onboard.port?)");
    load_bad("[core]\ncert_dir = \"/x\"\nonbaord.port = 1\n", F, 3, 9,
             "kms.toml:3:9: unknown key core.onbaord.port (did you mean core.onboard.port?)");
    load_bad("[core]\ncert_dir = \"/x\"\nwhatever = 1\n", F, 3, 1,
             "kms.toml:3:1: unknown key core.whatever");
    load_bad("wrokers = 4\n", F, 1, 1, "kms.toml:1:1: unknown key wrokers (did you mean workers?)");
    load_bad("[nothing]\n", F, 1, 2, "kms.toml:1:2: unknown key nothing");
    load_bad(
        "\"core.cert_dir\" = \"/x\"\n", F, 1, 1,
        "kms.toml:1:1: unknown key core.cert_dir (a quoted key is one key, even with '.' inside)");
    load_bad("[core]\ncert_dir = \"/x\"\nonboard.port = \"8000\"\n", F, 3, 16,
             "kms.toml:3:16: core.onboard.port: expected port (integer 0..65535), got string");
    load_bad("[core]\ncert_dir = 5\n", F, 2, 12,
             "kms.toml:2:12: core.cert_dir: expected path (string), got integer");
    load_bad("workers = 1.5\n", F, 1, 11, "kms.toml:1:11: workers: expected integer, got float");
    load_bad("[core.image]\nverify = \"yes\"\n", F, 2, 10,
             "kms.toml:2:10: core.image.verify: expected boolean, got string");
    load_bad("[core.image]\ndownload_timeout = 30\n", F, 2, 20,
             "kms.toml:2:20: core.image.download_timeout: expected duration (a string like "
             "\"30s\", \"2m\", \"500ms\"), got integer");
    load_bad("[core.image.verify]\n", F, 1, 1,
             "kms.toml:1:1: core.image.verify: expected boolean, got table");
    load_bad("[cvm]\nkms_urls = \"http://x\"\n", F, 2, 12,
             "kms.toml:2:12: cvm.kms_urls: expected array of strings, got string");
    load_bad("[cvm]\nkms_urls = [\"a\", 2]\n", F, 2, 18,
             "kms.toml:2:18: cvm.kms_urls[1]: expected string, got integer");
    load_bad("[core]\ncert_dir = \"a\\u0000b\"\n", F, 2, 12,
             "kms.toml:2:12: core.cert_dir: string contains a NUL character");
    /* ranges */
    load_bad("[core.onboard]\nport = 0\n", F, 2, 8,
             "kms.toml:2:8: core.onboard.port: 0 is out of range 1..65535");
    load_bad("[core.onboard]\nport = 70000\n", F, 2, 8,
             "kms.toml:2:8: core.onboard.port: 70000 is out of range 1..65535");
    load_bad("workers = 0\n", F, 1, 11, "kms.toml:1:11: workers: 0 is out of range 1..1024");
    load_bad("workers = -9223372036854775808\n", F, 1, 11,
             "kms.toml:1:11: workers: -9223372036854775808 is out of range 1..1024");
    load_bad("[rpc]\nbody_limit = \"2GiB\"\n", F, 2, 14,
             "kms.toml:2:14: rpc.body_limit: 2147483648 bytes is out of range "
             "1024..1073741824 bytes");
    load_bad("[rpc]\nbody_limit = 10\n", F, 2, 14,
             "kms.toml:2:14: rpc.body_limit: 10 bytes is out of range 1024..1073741824 bytes");
    load_bad("[rpc]\nbody_limit = -1\n", F, 2, 14,
             "kms.toml:2:14: rpc.body_limit: a size cannot be negative");
    load_bad("[rpc]\nbody_limit = \"10 parsecs\"\n", F, 2, 14,
             "kms.toml:2:14: rpc.body_limit: \"10 parsecs\" is not a size (expected bytes, or a "
             "number with K, KiB, KB, M, MiB, MB, G, GiB, GB, T...)");
    load_bad("[core.image]\ndownload_timeout = \"2 fortnights\"\n", F, 2, 20,
             "kms.toml:2:20: core.image.download_timeout: \"2 fortnights\" is not a duration "
             "(expected e.g. \"500ms\", \"30s\", \"2m\", \"5h\", \"10d\", \"1h 30m\")");
    load_bad("[core.image]\ndownload_timeout = \"500ms\"\n", F, 2, 20,
             "kms.toml:2:20: core.image.download_timeout: 500 ms is out of range "
             "1000..7200000 ms");
    load_bad("ident = \"" /* 65 bytes > max 64 */
             "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"\n",
             F, 1, 9, "kms.toml:1:9: ident: string longer than 64 bytes");
    /* enum */
    load_bad("[cvm]\nplatform = \"sgx\"\n", F, 2, 12,
             "kms.toml:2:12: cvm.platform: \"sgx\" is not one of \"auto\", \"tdx\", "
             "\"amd-sev-snp\"");
    /* required */
    load_bad("workers = 2\n", -DS_E_NOT_FOUND, 0, 0,
             "kms.toml: missing required key core.cert_dir");
    /* arrays of tables */
    load_bad("[core]\ncert_dir = \"/x\"\n[cvm.port_mapping]\nrange = [{ from = 1 }]\n",
             -DS_E_NOT_FOUND, 0, 0, "kms.toml: missing required key cvm.port_mapping.range[0].to");
    load_bad("[core]\ncert_dir = \"/x\"\n[[cvm.port_mapping.range]]\nfrom = 1\nto = 2\n"
             "[[cvm.port_mapping.range]]\nfrom = 1\ntoo = 2\n",
             F, 8, 1,
             "kms.toml:8:1: unknown key cvm.port_mapping.range[1].too (did you mean "
             "cvm.port_mapping.range[1].to?)");
    load_bad("[core]\ncert_dir = \"/x\"\n[cvm.port_mapping]\nrange = [1]\n", F, 4, 10,
             "kms.toml:4:10: cvm.port_mapping.range[0]: expected table, got integer");
    load_bad("[core]\ncert_dir = \"/x\"\n[cvm.port_mapping]\nrange = [{ from = 0, to = 1 }]\n", F,
             4, 19, "kms.toml:4:19: cvm.port_mapping.range[0].from: 0 is out of range 1..65535");
    /* integer arrays and string maps */
    load_bad("[core]\ncert_dir = \"/x\"\n[netd]\nallowed_uids = [1, 70000]\n", F, 4, 20,
             "kms.toml:4:20: netd.allowed_uids[1]: 70000 is out of range 0..65535");
    load_bad("[core]\ncert_dir = \"/x\"\n[netd]\nallowed_uids = [1, \"2\"]\n", F, 4, 20,
             "kms.toml:4:20: netd.allowed_uids[1]: expected integer, got string");
    load_bad("[core]\ncert_dir = \"/x\"\n[cvm.network_filter.parameters]\nIP = 1\n", F, 4, 6,
             "kms.toml:4:6: cvm.network_filter.parameters.IP: expected string, got integer");
    load_bad("[core]\ncert_dir = \"/x\"\n[cvm.network_filter]\nparameters = []\n", F, 4, 14,
             "kms.toml:4:14: cvm.network_filter.parameters: expected table of strings, got array");
    load_bad("[core]\ncert_dir = \"/x\"\n[core.proxy.tcp_splice]\n"
             "after_duration = \"18446744073709551615ms\"\n",
             F, 4, 18,
             "kms.toml:4:18: core.proxy.tcp_splice.after_duration: \"18446744073709551615ms\" is "
             "not a duration (expected e.g. \"500ms\", \"30s\", \"2m\", \"5h\", \"10d\", "
             "\"1h 30m\")");
    /* syntax errors come through with the file name */
    load_bad("[core]\ncert_dir \"/x\"\n", F, 2, 10,
             "kms.toml:2:10: expected '=' after key \"cert_dir\", found '\"'");
}

static void test_schema_file(void **state)
{
    (void)state;
    char path[] = "/tmp/ds-config-file-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, t_minimal, strlen(t_minimal)), (ssize_t)strlen(t_minimal));
    close(fd);
    struct t_cfg cfg = {0};
    struct ds_config_err err;
    assert_int_equal(ds_config_load(&t_schema, path, &cfg, &err), 0);
    assert_string_equal(cfg.cert_dir, "/etc/kms/certs");
    ds_config_free(&t_schema, &cfg);
    unlink(path);
    assert_int_equal(ds_config_load(&t_schema, path, &cfg, &err), -ENOENT);
    assert_non_null(strstr(err.msg, path));
    assert_null(cfg.ident);
}

/* A KMS-like schema covering every key of the kms.toml sample (kms-ratls.md §1.1, §5.6). */
struct t_kms {
    int64_t workers, max_blocking, keep_alive;
    char *ident, *temp_dir;
    int log_level;
    char *rpc_address;
    uint16_t rpc_port;
    char *tls_key, *tls_certs, *tls_ca;
    bool tls_mandatory;
    char *cert_dir, *site_name;
    bool self_auth, attest_rpc_cert, snp_release, nitro_release;
    bool insecure_anchors;
    char *pccs, *amd_kds, *root_tdx, *root_milan;
    bool image_verify;
    char *image_cache, *image_url;
    uint64_t image_timeout;
    bool admin_enabled;
    char *admin_address, *admin_token_hash;
    uint16_t admin_port;
    bool metrics;
    int auth_type;
    char *webhook_url, *dev_gateway_app_id;
    bool onboard_enabled;
    char *onboard_domain, *onboard_address;
    uint16_t onboard_port;
};

static const char *const t_auth_types[] = {"webhook", "dev", NULL};
static const char *const t_log_levels[] = {"error", "warn", "info", "debug", "trace", NULL};

#define KF(f) offsetof(struct t_kms, f)
#define KEY(k, t, f, d)                                                                            \
    {                                                                                              \
        k, t, KF(f), d, 0, 0, NULL, NULL, k, 0                                                     \
    }
static const struct ds_config_key t_kms_keys[] = {
    KEY("default.workers", DS_CFG_INT, workers, "8"),
    KEY("default.max_blocking", DS_CFG_INT, max_blocking, "64"),
    KEY("default.ident", DS_CFG_STRING, ident, "dstack KMS"),
    KEY("default.temp_dir", DS_CFG_PATH, temp_dir, "/tmp"),
    KEY("default.keep_alive", DS_CFG_INT, keep_alive, "5"),
    {"default.log_level", DS_CFG_ENUM, KF(log_level), "info", 0, 0, t_log_levels, NULL, "", 0},
    KEY("rpc.address", DS_CFG_STRING, rpc_address, "0.0.0.0"),
    KEY("rpc.port", DS_CFG_PORT, rpc_port, "8000"),
    KEY("rpc.tls.key", DS_CFG_PATH, tls_key, NULL),
    KEY("rpc.tls.certs", DS_CFG_PATH, tls_certs, NULL),
    KEY("rpc.tls.mutual.ca_certs", DS_CFG_PATH, tls_ca, NULL),
    KEY("rpc.tls.mutual.mandatory", DS_CFG_BOOL, tls_mandatory, "false"),
    KEY("core.cert_dir", DS_CFG_PATH, cert_dir, "/etc/kms/certs"),
    KEY("core.site_name", DS_CFG_STRING, site_name, ""),
    KEY("core.enforce_self_authorization", DS_CFG_BOOL, self_auth, "true"),
    KEY("core.attest_rpc_cert", DS_CFG_BOOL, attest_rpc_cert, "true"),
    KEY("core.sev_snp_key_release", DS_CFG_BOOL, snp_release, "false"),
    KEY("core.aws_nitro_tpm_key_release", DS_CFG_BOOL, nitro_release, "false"),
    KEY("core.attestation.insecure_allow_external_trust_anchors", DS_CFG_BOOL, insecure_anchors,
        "false"),
    KEY("core.attestation.urls.pccs", DS_CFG_STRING, pccs, ""),
    KEY("core.attestation.urls.amd_kds", DS_CFG_STRING, amd_kds, ""),
    KEY("core.attestation.root_ca.tdx", DS_CFG_PATH, root_tdx, ""),
    KEY("core.attestation.root_ca.sev_snp_milan", DS_CFG_PATH, root_milan, ""),
    KEY("core.image.verify", DS_CFG_BOOL, image_verify, "true"),
    KEY("core.image.cache_dir", DS_CFG_PATH, image_cache, ""),
    KEY("core.image.download_url", DS_CFG_STRING, image_url, ""),
    KEY("core.image.download_timeout", DS_CFG_DURATION, image_timeout, "2m"),
    KEY("core.admin.enabled", DS_CFG_BOOL, admin_enabled, "false"),
    KEY("core.admin.address", DS_CFG_STRING, admin_address, "127.0.0.1"),
    KEY("core.admin.port", DS_CFG_PORT, admin_port, "8001"),
    {"core.admin.token_hash", DS_CFG_STRING, KF(admin_token_hash), "", 0, 0, NULL, NULL, "",
     DS_CFG_SECRET},
    KEY("core.metrics.enabled", DS_CFG_BOOL, metrics, "true"),
    {"core.auth_api.type", DS_CFG_ENUM, KF(auth_type), "webhook", 0, 0, t_auth_types, NULL, "", 0},
    KEY("core.auth_api.webhook.url", DS_CFG_STRING, webhook_url, ""),
    KEY("core.auth_api.dev.gateway_app_id", DS_CFG_STRING, dev_gateway_app_id, ""),
    KEY("core.onboard.enabled", DS_CFG_BOOL, onboard_enabled, "true"),
    KEY("core.onboard.auto_bootstrap_domain", DS_CFG_STRING, onboard_domain, ""),
    KEY("core.onboard.address", DS_CFG_STRING, onboard_address, "0.0.0.0"),
    KEY("core.onboard.port", DS_CFG_PORT, onboard_port, "8000"),
};

static void test_schema_kms_sample(void **state)
{
    (void)state;
    struct ds_config_schema schema = {"kms.toml", t_kms_keys, DS_ARRAY_SIZE(t_kms_keys),
                                      sizeof(struct t_kms)};
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/toml/kms.toml", src_dir());
    struct t_kms cfg = {0};
    struct ds_config_err err;
    int r = ds_config_load(&schema, path, &cfg, &err);
    if (r) {
        fail_msg("%s", err.msg);
    }
    assert_int_equal(cfg.rpc_port, 8000);
    assert_string_equal(cfg.tls_ca, "/etc/kms/certs/tmp-ca.crt");
    assert_string_equal(cfg.pccs, "https://pccs.phala.network/tdx/certification/v4");
    assert_true(cfg.image_timeout == 120000);
    assert_int_equal(cfg.auth_type, 0);
    assert_string_equal(cfg.webhook_url, "http://auth-api:8000");
    assert_int_equal(cfg.log_level, 2);
    assert_true(cfg.onboard_enabled);

    /* the doc table lists every key with type and default */
    char *doc = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream(&doc, &dlen);
    assert_int_equal(ds_config_doc(&schema, f), 0);
    fclose(f);
    assert_non_null(strstr(doc, "| Key | Type | Default | Description |\n|---|---|---|---|\n"));
    assert_non_null(strstr(doc, "| `core.image.download_timeout` | duration (`30s`) | `2m` |"));
    assert_non_null(strstr(doc, "| `core.auth_api.type` | one of `webhook`, `dev` | `webhook` |"));
    assert_non_null(strstr(doc, "(secret: never printed)"));
    free(doc);
    ds_config_free(&schema, &cfg);
}

/*
 * Whole-file schemas for the vmm.toml and gateway.toml samples (host-side.md §1.2, §4.7), built
 * at run time from "key:type" lines into a generic struct, so that every key of both files goes
 * through a schema type: the reader and the types cover what those daemons need.
 */
#define G_SLOTS 128

struct g_cfg {
    char *s[G_SLOTS];
    bool b[G_SLOTS];
    int64_t i[G_SLOTS];
    uint16_t p[G_SLOTS];
    uint64_t u[G_SLOTS]; /* sizes and durations */
    int e[G_SLOTS];
    struct ds_config_strv l[G_SLOTS];
    struct ds_config_intv n[G_SLOTS];
    struct ds_config_strmap m[G_SLOTS];
    struct ds_config_tables t[4];
};

struct g_schema {
    struct ds_config_key keys[256];
    const char *choices[32][8];
    char names[256][96];
    struct ds_config_schema schema;
};

static const char *const vmm_spec[] = {"workers:i",
                                       "max_blocking:i",
                                       "ident:s",
                                       "temp_dir:s",
                                       "keep_alive:i",
                                       "log_level:s",
                                       "address:s",
                                       "reuse:b",
                                       "kms_url:s",
                                       "event_buffer_size:i",
                                       "node_name:s",
                                       "run_path:s",
                                       "image.path:s",
                                       "image.registry:s",
                                       "cvm.platform:e=auto|tdx|amd-sev-snp",
                                       "cvm.qemu_path:s",
                                       "cvm.kms_urls:l",
                                       "cvm.gateway_urls:l",
                                       "cvm.pccs_url:s",
                                       "cvm.docker_registry:s",
                                       "cvm.cid_start:i",
                                       "cvm.cid_pool_size:i",
                                       "cvm.max_allocable_vcpu:i",
                                       "cvm.max_allocable_memory_in_mb:i",
                                       "cvm.qmp_socket:b",
                                       "cvm.user:s",
                                       "cvm.use_mrconfigid:b",
                                       "cvm.qemu_single_pass_add_pages:b",
                                       "cvm.qemu_pic:b",
                                       "cvm.qemu_pci_hole64_size:z",
                                       "cvm.qemu_hotplug_off:b",
                                       "cvm.tdx_attestation_variant:e=auto|legacy|lite",
                                       "cvm.host_share_mode:e=9p|vhd|vvfat",
                                       "cvm.qgs_port:p",
                                       "cvm.tee_simulator.mock_attestation_seed:s",
                                       "cvm.tee_simulator.collateral_base_url:s",
                                       "cvm.product.sys_vendor:s",
                                       "cvm.product.product_name:s",
                                       "cvm.networking.mode:e=user|bridge|custom",
                                       "cvm.networking.net:s",
                                       "cvm.networking.dhcp_start:s",
                                       "cvm.networking.restrict:b",
                                       "cvm.network_filter.mode:e=none|libvirt",
                                       "cvm.network_filter.filter:s",
                                       "cvm.network_filter.parameters:m",
                                       "cvm.port_mapping.enabled:b",
                                       "cvm.port_mapping.address:s",
                                       "cvm.port_mapping.range:t",
                                       "cvm.auto_restart.enabled:b",
                                       "cvm.auto_restart.interval:i",
                                       "cvm.auto_restart.max_retries:i",
                                       "cvm.auto_restart.initial_backoff:i",
                                       "cvm.auto_restart.max_backoff:i",
                                       "cvm.auto_restart.reset_window:i",
                                       "cvm.log.max_bytes:z",
                                       "cvm.log.max_backups:i",
                                       "cvm.log.check_interval_secs:i",
                                       "cvm.gpu.enabled:b",
                                       "cvm.gpu.listing:l",
                                       "cvm.gpu.exclude:l",
                                       "cvm.gpu.include:l",
                                       "cvm.gpu.allow_attach_all:b",
                                       "netd.socket:s",
                                       "netd.allowed_uids:n",
                                       "netd.libvirt_uri:s",
                                       "gateway.base_domain:s",
                                       "gateway.port:p",
                                       "gateway.agent_port:p",
                                       "auth.enabled:b",
                                       "auth.tokens:L",
                                       "auth.htpasswd_file:s",
                                       "supervisor.exe:s",
                                       "supervisor.sock:s",
                                       "supervisor.pid_file:s",
                                       "supervisor.log_file:s",
                                       "supervisor.detached:b",
                                       "supervisor.auto_start:b",
                                       "host_api.ident:s",
                                       "host_api.address:s",
                                       "host_api.port:p",
                                       "key_provider.enabled:b",
                                       "key_provider.address:s",
                                       "key_provider.port:p",
                                       NULL};

static const char *const gateway_spec[] = {
    "workers:i",
    "max_blocking:i",
    "ident:s",
    "temp_dir:s",
    "keep_alive:i",
    "log_level:s",
    "address:s",
    "port:p",
    "tls.key:s",
    "tls.certs:s",
    "tls.mutual.ca_certs:s",
    "tls.mutual.mandatory:b",
    "core.kms_url:s",
    "core.set_ulimit:b",
    "core.rpc_domain:s",
    "core.attestation.insecure_allow_external_trust_anchors:b",
    "core.attestation.urls.pccs:s",
    "core.attestation.urls.amd_kds:s",
    "core.auth.enabled:b",
    "core.auth.url:s",
    "core.auth.timeout:d",
    "core.admin.enabled:b",
    "core.admin.address:s",
    "core.admin.auth_token:S",
    "core.admin.insecure_no_auth:b",
    "core.debug.insecure_enable_debug_rpc:b",
    "core.debug.insecure_skip_attestation:b",
    "core.debug.insecure_localhost_backend:b",
    "core.debug.address:s",
    "core.wg.public_key:s",
    "core.wg.private_key:S",
    "core.wg.listen_port:p",
    "core.wg.ip:s",
    "core.wg.reserved_net:l",
    "core.wg.client_ip_range:s",
    "core.wg.config_path:s",
    "core.wg.interface:s",
    "core.wg.endpoint:s",
    "core.proxy.tls_crypto_provider:s",
    "core.proxy.tls_versions:l",
    "core.proxy.listen_addr:s",
    "core.proxy.listen_port:p",
    "core.proxy.agent_port:p",
    "core.proxy.buffer_size:z",
    "core.proxy.connect_top_n:i",
    "core.proxy.app_address_ns_prefix:s",
    "core.proxy.app_address_ns_compat:b",
    "core.proxy.app_address_dns_servers:l",
    "core.proxy.workers:i",
    "core.proxy.thread_per_core:b",
    "core.proxy.connection_rebalance:b",
    "core.proxy.external_port:p",
    "core.proxy.max_connections_per_app:i",
    "core.proxy.inbound_pp_enabled:b",
    "core.proxy.tcp_splice.after_bytes:Z",
    "core.proxy.tcp_splice.after_duration:D",
    "core.proxy.port_policy_fetch.timeout:d",
    "core.proxy.port_policy_fetch.max_retries:i",
    "core.proxy.port_policy_fetch.backoff_initial:d",
    "core.proxy.port_policy_fetch.backoff_max:d",
    "core.proxy.timeouts.connect:d",
    "core.proxy.timeouts.handshake:d",
    "core.proxy.timeouts.cache_top_n:d",
    "core.proxy.timeouts.handshake_stale:d",
    "core.proxy.timeouts.dns_resolve:d",
    "core.proxy.timeouts.data_timeout_enabled:b",
    "core.proxy.timeouts.idle:d",
    "core.proxy.timeouts.write:d",
    "core.proxy.timeouts.shutdown:d",
    "core.proxy.timeouts.total:d",
    "core.proxy.timeouts.pp_header:d",
    "core.recycle.enabled:b",
    "core.recycle.interval:d",
    "core.recycle.timeout:d",
    "core.recycle.node_timeout:d",
    "core.sync.enabled:b",
    "core.sync.node_id:i",
    "core.sync.my_url:s",
    "core.sync.interval:d",
    "core.sync.timeout:d",
    "core.sync.bootnode:s",
    "core.sync.data_dir:s",
    "core.sync.persist_interval:d",
    "core.sync.sync_connections_enabled:b",
    "core.sync.sync_connections_interval:d",
    NULL};

static const struct ds_config_key g_range_keys[] = {
    {"protocol", DS_CFG_ENUM, 0, "tcp", 0, 0, (const char *const[]){"tcp", "udp", NULL}, NULL,
     "protocol", 0},
    {"from", DS_CFG_PORT, 0, NULL, 1, 65535, NULL, NULL, "first port", DS_CFG_REQUIRED},
    {"to", DS_CFG_PORT, 0, NULL, 1, 65535, NULL, NULL, "last port", DS_CFG_REQUIRED},
};

struct g_range {
    int protocol;
    uint16_t from, to;
};

static struct ds_config_key g_range_fixed[3];
static struct ds_config_schema g_range_schema;

static void g_build(struct g_schema *g, const char *const *spec)
{
    unsigned counts[10] = {0};
    static const char slot_types[] = "sSbipzZdDelLnmt";
    static const unsigned slot_of[] = {0, 0, 1, 2, 3, 4, 4, 4, 4, 5, 6, 6, 7, 8, 9};
    size_t n = 0;
    memcpy(g_range_fixed, g_range_keys, sizeof(g_range_keys));
    g_range_fixed[0].offset = offsetof(struct g_range, protocol);
    g_range_fixed[1].offset = offsetof(struct g_range, from);
    g_range_fixed[2].offset = offsetof(struct g_range, to);
    g_range_schema = (struct ds_config_schema){"range", g_range_fixed, 3, sizeof(struct g_range)};
    for (; spec[n]; n++) {
        const char *colon = strchr(spec[n], ':');
        assert_non_null(colon);
        snprintf(g->names[n], sizeof(g->names[n]), "%.*s", (int)(colon - spec[n]), spec[n]);
        struct ds_config_key *k = &g->keys[n];
        memset(k, 0, sizeof(*k));
        k->key = g->names[n];
        k->help = g->names[n];
        char t = colon[1];
        const char *ts = strchr(slot_types, t);
        assert_non_null(ts);
        unsigned c = counts[slot_of[ts - slot_types]]++;
        assert_true(c < (t == 't' ? 4 : G_SLOTS));
        switch (t) {
        case 's':
        case 'S':
            k->type = DS_CFG_STRING;
            k->offset = offsetof(struct g_cfg, s) + c * sizeof(char *);
            k->flags = t == 'S' ? DS_CFG_SECRET : 0;
            break;
        case 'b':
            k->type = DS_CFG_BOOL;
            k->offset = offsetof(struct g_cfg, b) + c * sizeof(bool);
            break;
        case 'i':
            k->type = DS_CFG_INT;
            k->offset = offsetof(struct g_cfg, i) + c * sizeof(int64_t);
            break;
        case 'p':
            k->type = DS_CFG_PORT;
            k->offset = offsetof(struct g_cfg, p) + c * sizeof(uint16_t);
            break;
        case 'z':
        case 'Z':
        case 'd':
        case 'D':
            k->type = (t == 'z' || t == 'Z') ? DS_CFG_SIZE : DS_CFG_DURATION;
            k->offset = offsetof(struct g_cfg, u) + c * sizeof(uint64_t);
            k->def = (t == 'Z' || t == 'D') ? "unset" : NULL;
            break;
        case 'e': {
            k->type = DS_CFG_ENUM;
            k->offset = offsetof(struct g_cfg, e) + c * sizeof(int);
            const char *v = colon + 3; /* after "e=" */
            static char words[32][8][24];
            unsigned w = 0;
            while (*v && w < 7) {
                size_t len = strcspn(v, "|");
                snprintf(words[c][w], sizeof(words[c][w]), "%.*s", (int)len, v);
                g->choices[c][w] = words[c][w];
                w++;
                v += len + (v[len] == '|');
            }
            g->choices[c][w] = NULL;
            k->choices = g->choices[c];
            break;
        }
        case 'l':
        case 'L':
            k->type = DS_CFG_STRINGS;
            k->offset = offsetof(struct g_cfg, l) + c * sizeof(struct ds_config_strv);
            k->flags = t == 'L' ? DS_CFG_SECRET : 0;
            break;
        case 'n':
            k->type = DS_CFG_INTS;
            k->offset = offsetof(struct g_cfg, n) + c * sizeof(struct ds_config_intv);
            break;
        case 'm':
            k->type = DS_CFG_STRMAP;
            k->offset = offsetof(struct g_cfg, m) + c * sizeof(struct ds_config_strmap);
            break;
        case 't':
            k->type = DS_CFG_TABLES;
            k->offset = offsetof(struct g_cfg, t) + c * sizeof(struct ds_config_tables);
            k->sub = &g_range_schema;
            break;
        default:
            fail_msg("bad spec %s", spec[n]);
        }
    }
    g->schema = (struct ds_config_schema){"sample", g->keys, n, sizeof(struct g_cfg)};
}

/* The member behind a key of the generated schema. */
static void *g_get(const struct g_schema *g, struct g_cfg *cfg, const char *key)
{
    for (size_t i = 0; i < g->schema.count; i++) {
        if (strcmp(g->keys[i].key, key) == 0) {
            return (char *)cfg + g->keys[i].offset;
        }
    }
    fail_msg("no key %s", key);
    return NULL;
}

static char *g_dump(const struct ds_config_schema *s, const struct g_cfg *c, size_t *len)
{
    char *d = NULL;
    FILE *f = open_memstream(&d, len);
    assert_non_null(f);
    assert_int_equal(ds_config_dump(s, c, f), 0);
    fclose(f);
    return d;
}

static void g_load_sample(const char *file, const char *const *spec, struct g_schema *g,
                          struct g_cfg *cfg)
{
    g_build(g, spec);
    char path[512];
    snprintf(path, sizeof(path), "%s/tests/fuzz/corpus/toml/%s", src_dir(), file);
    struct ds_config_err err;
    memset(cfg, 0, sizeof(*cfg));
    int r = ds_config_load(&g->schema, path, cfg, &err);
    if (r) {
        fail_msg("%s", err.msg);
    }
    /* dump -> load -> dump is a fixed point */
    size_t l1, l2;
    char *d1 = g_dump(&g->schema, cfg, &l1);
    struct g_cfg *again = calloc(1, sizeof(*again));
    assert_non_null(again);
    r = ds_config_load_text(&g->schema, d1, l1, "dump", again, &err);
    if (r) {
        fail_msg("dump of %s does not load: %s\n%s", file, err.msg, d1);
    }
    char *d2 = g_dump(&g->schema, again, &l2);
    assert_int_equal(l1, l2);
    assert_memory_equal(d1, d2, l1);
    free(d1);
    free(d2);
    ds_config_free(&g->schema, again);
    free(again);
}

static void test_schema_vmm_gateway_samples(void **state)
{
    (void)state;
    struct g_schema *g = calloc(1, sizeof(*g));
    struct g_cfg *cfg = calloc(1, sizeof(*cfg));
    assert_non_null(g);
    assert_non_null(cfg);

    g_load_sample("vmm.toml", vmm_spec, g, cfg);
    /* the constructs that need the richer types */
    const struct ds_config_tables *range = g_get(g, cfg, "cvm.port_mapping.range");
    assert_int_equal(range->count, 2);
    assert_int_equal(((struct g_range *)range->items)[1].protocol, 1); /* udp */
    assert_int_equal(((struct g_range *)range->items)[1].to, 20000);
    assert_int_equal(
        ((struct ds_config_strmap *)g_get(g, cfg, "cvm.network_filter.parameters"))->count, 0);
    assert_int_equal(((struct ds_config_intv *)g_get(g, cfg, "netd.allowed_uids"))->count, 0);
    assert_true(*(uint64_t *)g_get(g, cfg, "cvm.log.max_bytes") == 4ull << 20);
    const struct ds_config_strv *listing = g_get(g, cfg, "cvm.gpu.listing");
    assert_int_equal(listing->count, 1);
    assert_string_equal(listing->items[0], "10de:2335");
    assert_int_equal(*(int64_t *)g_get(g, cfg, "cvm.max_allocable_memory_in_mb"), 100000);
    assert_int_equal(*(int *)g_get(g, cfg, "cvm.host_share_mode"), 0); /* 9p */
    assert_int_equal(*(uint16_t *)g_get(g, cfg, "host_api.port"), 10000);
    ds_config_free(&g->schema, cfg);

    memset(g, 0, sizeof(*g));
    g_load_sample("gateway.toml", gateway_spec, g, cfg);
    assert_true(*(uint64_t *)g_get(g, cfg, "core.auth.timeout") == 5000);
    assert_true(*(uint64_t *)g_get(g, cfg, "core.proxy.tcp_splice.after_bytes") == 64 * 1024);
    assert_true(*(uint64_t *)g_get(g, cfg, "core.proxy.tcp_splice.after_duration") ==
                DS_CONFIG_UNSET); /* absent = off */
    assert_true(*(uint64_t *)g_get(g, cfg, "core.proxy.timeouts.total") == 5 * 3600000ull);
    assert_true(*(uint64_t *)g_get(g, cfg, "core.proxy.timeouts.handshake_stale") == 1800000);
    assert_false(*(bool *)g_get(g, cfg, "core.debug.insecure_enable_debug_rpc"));
    assert_string_equal(((struct ds_config_strv *)g_get(g, cfg, "core.wg.reserved_net"))->items[0],
                        "10.0.0.1/32");
    ds_config_free(&g->schema, cfg);
    free(cfg);
    free(g);
}

static void test_schema_doc_tables(void **state)
{
    (void)state;
    char *doc = NULL;
    size_t dlen = 0;
    FILE *f = open_memstream(&doc, &dlen);
    assert_int_equal(ds_config_doc(&t_schema, f), 0);
    fclose(f);
    assert_non_null(strstr(doc, "| `core.cert_dir` | path | (required) | certificate dir |"));
    assert_non_null(strstr(doc, "| `workers` | integer, 1..1024 | `8` | worker threads |"));
    assert_non_null(strstr(doc, "request body limit \\| bytes"));
    assert_non_null(strstr(doc, "| unset by default (a second help line stays in the comment) |"));
    assert_non_null(strstr(doc, "| `netd.allowed_uids` | array of integers, 0..65535 | `[0]` |"));
    assert_non_null(strstr(doc, "| `core.proxy.tcp_splice.after_duration` | duration (`30s`) | "
                                "`unset` |"));
    assert_non_null(strstr(doc, "Each element of `cvm.port_mapping.range`:"));
    assert_non_null(
        strstr(doc, "| `cvm.port_mapping.range[].from` | port, 1..65535 | (required) |"));
    free(doc);
}

static void test_schema_bad_default(void **state)
{
    (void)state;
    struct t_cfg cfg = {0};
    struct ds_config_err err;
    struct ds_config_key keys[] = {
        {"port", DS_CFG_PORT, TF(port), "99999", 0, 0, NULL, NULL, "", 0},
    };
    struct ds_config_schema s = {"x.toml", keys, 1, sizeof(struct t_cfg)};
    assert_int_equal(ds_config_defaults(&s, &cfg, &err), -EINVAL);
    assert_string_equal(err.msg, "x.toml: schema: bad default \"99999\" for key port");
    keys[0] = (struct ds_config_key){"core.debug.insecure_skip_attestation",
                                     DS_CFG_BOOL,
                                     TF(verify),
                                     "true",
                                     0,
                                     0,
                                     NULL,
                                     NULL,
                                     "",
                                     0};
    assert_int_equal(ds_config_defaults(&s, &cfg, &err), -EINVAL);
    assert_string_equal(err.msg, "x.toml: schema: insecure switch "
                                 "core.debug.insecure_skip_attestation must default to false");
    keys[0].def = "false";
    assert_int_equal(ds_config_defaults(&s, &cfg, &err), 0);
    assert_false(cfg.verify);
    keys[0] =
        (struct ds_config_key){"d", DS_CFG_DURATION, TF(timeout_ms), "5", 0, 0, NULL, NULL, "", 0};
    assert_int_equal(ds_config_defaults(&s, &cfg, &err), -EINVAL);
    keys[0] = (struct ds_config_key){"l", DS_CFG_STRINGS, TF(urls), "[1]", 0, 0, NULL, NULL, "", 0};
    assert_int_equal(ds_config_defaults(&s, &cfg, &err), -EINVAL);
    keys[0] =
        (struct ds_config_key){"e", DS_CFG_ENUM, TF(platform), "x", 0, 0, t_platforms, NULL, "", 0};
    assert_int_equal(ds_config_defaults(&s, &cfg, &err), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_constructs),
        cmocka_unit_test(test_valid_edges),
        cmocka_unit_test(test_invalid_semantics),
        cmocka_unit_test(test_invalid_strings),
        cmocka_unit_test(test_invalid_numbers),
        cmocka_unit_test(test_invalid_structure),
        cmocka_unit_test(test_crosscheck_tomllib),
        cmocka_unit_test(test_crosscheck_generated),
        cmocka_unit_test(test_crosscheck_rejections),
        cmocka_unit_test(test_units),
        cmocka_unit_test(test_schema_defaults),
        cmocka_unit_test(test_schema_values),
        cmocka_unit_test(test_schema_errors),
        cmocka_unit_test(test_schema_file),
        cmocka_unit_test(test_schema_kms_sample),
        cmocka_unit_test(test_schema_doc_tables),
        cmocka_unit_test(test_schema_bad_default),
        cmocka_unit_test(test_schema_vmm_gateway_samples),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
