/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/crypto: SHA-2 and Keccak-256/384/512 against published vectors (and Keccak
 * against pycryptodome as an oracle), HKDF (RFC 5869), ECDSA P-256/P-384 (fixed vectors made
 * with pycryptodome, round trips, malformed keys and signatures, DER conversion), secp256k1,
 * Ed25519 (RFC 8032) and X25519 (RFC 7748). Every function has at least one negative case.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <unistd.h>
#include <cmocka.h>

#include "dstack/crypto.h"
#include "helper_hex.h"

/* ---- SHA-2 ------------------------------------------------------------------------------------
 */

static void test_sha2_vectors(void **state)
{
    uint8_t out[DS_SHA512_LEN];
    /* FIPS 180-2 appendix B/C/D: "abc". */
    ds_sha256("abc", 3, out);
    helper_assert_hex_equal(out, 32,
                            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    ds_sha384("abc", 3, out);
    helper_assert_hex_equal(out, 48,
                            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed"
                            "8086072ba1e7cc2358baeca134c825a7");
    ds_sha512("abc", 3, out);
    helper_assert_hex_equal(out, 64,
                            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
                            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f");
    ds_sha256(NULL, 0, out);
    helper_assert_hex_equal(out, 32,
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    /* Negative: one changed bit changes the digest. */
    ds_sha256("abd", 3, out);
    assert_memory_not_equal(out, "\xba\x78\x16\xbf", 4);
}

static void test_sha2_multipart(void **state)
{
    static const char msg[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    size_t len = sizeof(msg) - 1;
    uint8_t one[DS_SHA512_LEN], parts[DS_SHA512_LEN];

    ds_sha256(msg, len, one);
    helper_assert_hex_equal(one, 32,
                            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    ds_sha256_v(parts, 3, msg, (size_t)5, msg + 5, (size_t)0, msg + 5, len - 5);
    assert_memory_equal(one, parts, DS_SHA256_LEN);

    ds_sha384(msg, len, one);
    ds_sha384_v(parts, 2, msg, (size_t)17, msg + 17, len - 17);
    assert_memory_equal(one, parts, DS_SHA384_LEN);

    ds_sha512(msg, len, one);
    ds_sha512_v(parts, 2, msg, (size_t)40, msg + 40, len - 40);
    assert_memory_equal(one, parts, DS_SHA512_LEN);

    /* Negative: pieces that do not concatenate to the message give another digest. */
    ds_sha512_v(parts, 2, msg, (size_t)40, msg + 41, len - 41);
    assert_memory_not_equal(one, parts, DS_SHA512_LEN);
    /* Zero pieces is the empty message. */
    ds_sha256_v(parts, 0);
    helper_assert_hex_equal(parts, 32,
                            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
}

static void test_random(void **state)
{
    uint8_t a[64] = {0}, b[64] = {0};
    assert_int_equal(ds_random(a, sizeof(a)), 0);
    assert_int_equal(ds_random(b, sizeof(b)), 0);
    assert_false(ds_is_zero(a, sizeof(a)));
    /* Negative: two draws of 512 bits never coincide. */
    assert_memory_not_equal(a, b, sizeof(a));
    assert_int_equal(ds_random(a, 0), 0);
}

/* ---- Keccak-256/384/512 ---------------------------------------------------------------------- */

static void test_keccak_vectors(void **state)
{
    uint8_t out[DS_KECCAK256_LEN], buf[1000];
    ds_keccak256(NULL, 0, out);
    helper_assert_hex_equal(out, 32,
                            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470");
    ds_keccak256("abc", 3, out);
    helper_assert_hex_equal(out, 32,
                            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
    /* 200 bytes of 0xa3, the Keccak team's long-message example (two blocks). */
    memset(buf, 0xa3, 200);
    ds_keccak256(buf, 200, out);
    helper_assert_hex_equal(out, 32,
                            "3a57666b048777f2c953dc4456f45a2588e1cb6f2da760122d530ac2ce607d4a");
    /* Eight blocks: bytes i mod 251. */
    for (size_t i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)(i % 251);
    ds_keccak256(buf, sizeof(buf), out);
    helper_assert_hex_equal(out, 32,
                            "af692982e84a5a9688359025660a7857cd28ee7c8d867cfa1677baf2e6d1f63b");

    /* Negative: this is not SHA3-256 (which pads with 0x06): SHA3-256("") differs. */
    ds_keccak256(NULL, 0, out);
    uint8_t sha3_empty[32];
    helper_hex("a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a", sha3_empty, 32);
    assert_memory_not_equal(out, sha3_empty, 32);
    /* Negative: one flipped input bit changes the digest. */
    buf[500] ^= 1;
    ds_keccak256(buf, sizeof(buf), out);
    assert_memory_not_equal(out, "\xaf\x69\x29\x82", 4);
}

static void test_keccak_streaming(void **state)
{
    uint8_t buf[700], one[32], parts[32];
    assert_int_equal(ds_random(buf, sizeof(buf)), 0);
    /* Every split point, and chunk sizes around the rate, agree with the one-shot hash. */
    for (size_t len = 0; len <= sizeof(buf); len += 7) {
        ds_keccak256(buf, len, one);
        for (size_t chunk = 1; chunk <= 300; chunk += (chunk < 140 ? 1 : 53)) {
            struct ds_keccak k;
            ds_keccak256_init(&k);
            for (size_t off = 0; off < len; off += chunk)
                ds_keccak256_update(&k, buf + off, len - off < chunk ? len - off : chunk);
            ds_keccak256_final(&k, parts);
            assert_memory_equal(one, parts, 32);
        }
    }
    /* Zero-length updates change nothing; final wipes the state. */
    struct ds_keccak k;
    ds_keccak256_init(&k);
    ds_keccak256_update(&k, buf, 0);
    ds_keccak256_update(&k, "abc", 3);
    ds_keccak256_update(&k, NULL, 0);
    ds_keccak256_final(&k, parts);
    helper_assert_hex_equal(parts, 32,
                            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
    assert_true(ds_is_zero(&k, sizeof(k)));
    /* Negative: splitting "abc" into "ab" + "d" is another message. */
    ds_keccak256_init(&k);
    ds_keccak256_update(&k, "ab", 2);
    ds_keccak256_update(&k, "d", 1);
    ds_keccak256_final(&k, one);
    assert_memory_not_equal(one, parts, 32);
}

/* Lengths 0..KECCAK_ORACLE_MAX (so around every rate: 71-73, 103-105, 135-137, and two blocks
 * of each) plus long ones at multi-block boundaries of each rate (72 * 15, 104 * 10, 136 * 8). */
#define KECCAK_ORACLE_MAX   300
#define KECCAK_ORACLE_LONG  10
#define KECCAK_ORACLE_COUNT (KECCAK_ORACLE_MAX + 1 + KECCAK_ORACLE_LONG)
#define KECCAK_ORACLE_LINE  (2 * DS_KECCAK512_LEN + 8)

/*
 * Cross-check random inputs against pycryptodome's keccak (one python process for all) for
 * the digest size `len`: the one-shot function and the streaming API fed in uneven chunks.
 */
static void keccak_oracle(size_t len, void (*oneshot)(const void *, size_t, uint8_t *))
{
    static const size_t long_lens[KECCAK_ORACLE_LONG] = {1079, 1080, 1081, 1039, 1040,
                                                         1041, 1087, 1088, 1089, 5000};
    char path[] = "/tmp/ds-keccak-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    FILE *f = fdopen(fd, "w");
    assert_non_null(f);
    uint8_t *inputs[KECCAK_ORACLE_COUNT];
    size_t lens[KECCAK_ORACLE_COUNT];
    for (size_t i = 0; i < KECCAK_ORACLE_COUNT; i++) {
        lens[i] = i <= KECCAK_ORACLE_MAX ? i : long_lens[i - KECCAK_ORACLE_MAX - 1];
        inputs[i] = malloc(lens[i] + 1);
        assert_non_null(inputs[i]);
        assert_int_equal(ds_random(inputs[i], lens[i]), 0);
        char *h = ds_hex_strdup(inputs[i], lens[i]);
        assert_non_null(h);
        fprintf(f, "%s\n", h);
        free(h);
    }
    assert_int_equal(fclose(f), 0);

    char cmd[320];
    snprintf(cmd, sizeof(cmd),
             "/usr/bin/python3 -c 'import sys\nfrom Cryptodome.Hash import keccak\n"
             "for l in open(sys.argv[1]): print(keccak.new(digest_bits=%zu, "
             "data=bytes.fromhex(l.strip())).hexdigest())' %s",
             len * 8, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char lines[KECCAK_ORACLE_COUNT + 1][KECCAK_ORACLE_LINE];
    size_t n = 0;
    while (n <= KECCAK_ORACLE_COUNT && fgets(lines[n], sizeof(lines[n]), p))
        n++;
    int status = pclose(p);
    unlink(path);
    assert_int_equal(status, 0);
    /* The oracle answered for every input (a missing pycryptodome is a failure, not a pass). */
    assert_int_equal(n, KECCAK_ORACLE_COUNT);
    for (size_t i = 0; i < KECCAK_ORACLE_COUNT; i++) {
        uint8_t want[DS_KECCAK512_LEN], got[DS_KECCAK512_LEN], parts[DS_KECCAK512_LEN];
        lines[i][strcspn(lines[i], "\n")] = 0;
        assert_int_equal(strlen(lines[i]), 2 * len);
        helper_hex(lines[i], want, len);
        oneshot(inputs[i], lens[i], got);
        if (memcmp(want, got, len) != 0)
            fail_msg("keccak-%zu mismatch for length %zu", len * 8, lens[i]);
        /* Streaming in chunks of 1 + i % 97 bytes gives the same digest. */
        struct ds_keccak k;
        assert_int_equal(ds_keccak_init(&k, len), 0);
        for (size_t off = 0, chunk = 1 + i % 97; off < lens[i]; off += chunk)
            ds_keccak_update(&k, inputs[i] + off, lens[i] - off < chunk ? lens[i] - off : chunk);
        ds_keccak_final(&k, parts);
        if (memcmp(want, parts, len) != 0)
            fail_msg("streaming keccak-%zu mismatch for length %zu", len * 8, lens[i]);
        free(inputs[i]);
    }
}

static void oneshot256(const void *d, size_t n, uint8_t *out)
{
    ds_keccak256(d, n, out);
}
static void oneshot384(const void *d, size_t n, uint8_t *out)
{
    ds_keccak384(d, n, out);
}
static void oneshot512(const void *d, size_t n, uint8_t *out)
{
    ds_keccak512(d, n, out);
}

static void test_keccak_oracle(void **state)
{
    keccak_oracle(DS_KECCAK256_LEN, oneshot256);
}

static void test_keccak384_oracle(void **state)
{
    keccak_oracle(DS_KECCAK384_LEN, oneshot384);
}

static void test_keccak512_oracle(void **state)
{
    keccak_oracle(DS_KECCAK512_LEN, oneshot512);
}

/* Keccak-384/512 published vectors, and what separates them from SHA3 and from each other. */
static void test_keccak384_512_vectors(void **state)
{
    uint8_t out[DS_KECCAK512_LEN], sha3[DS_KECCAK512_LEN];
    ds_keccak384(NULL, 0, out);
    helper_assert_hex_equal(
        out, 48,
        "2c23146a63a29acf99e73b88f8c24eaa7dc60aa771780ccc006afbfa8fe2479b2dd2b21362337441ac1"
        "2b515911957ff");
    ds_keccak384("abc", 3, out);
    helper_assert_hex_equal(
        out, 48,
        "f7df1165f033337be098e7d288ad6a2f74409d7a60b49c36642218de161b1f99f8c681e4afaf31a34db"
        "29fb763e3c28e");
    ds_keccak512(NULL, 0, out);
    helper_assert_hex_equal(
        out, 64,
        "0eab42de4c3ceb9235fc91acffe746b29c29a8c366b7c60e4e67c466f36a4304c00fa9caf9d87976ba4"
        "69bcbe06713b435f091ef2769fb160cdab33d3670680e");
    ds_keccak512("abc", 3, out);
    helper_assert_hex_equal(
        out, 64,
        "18587dc2ea106b9a1563e32b3312421ca164c7f1f07bc922a9c83d77cea3a1e5d0c69910739025372dc"
        "14ac9642629379540c17e2a65b19d77aa511a9d00bb96");
    /* Negative: not SHA3-384/512 of "" (padding 0x06). */
    ds_keccak384(NULL, 0, out);
    helper_hex(
        "0c63a75b845e4f7d01107d852e4c2485c51a50aaaa94fc61995e71bbee983a2ac3713831264adb47fb6bd1e0"
        "58d5f004",
        sha3, 48);
    assert_memory_not_equal(out, sha3, 48);
    ds_keccak512(NULL, 0, out);
    helper_hex(
        "a69f73cca23a9ac5c8b567dc185a756e97c982164fe25859e0d1dcc1475c80a615b2123af1f5f94c11e3e940"
        "2c3ac558f500199d95b6d3e301758586281dcd26",
        sha3, 64);
    assert_memory_not_equal(out, sha3, 64);
    /* The streaming API writes exactly digest_len bytes and wipes the state. */
    struct ds_keccak k;
    memset(out, 0xee, sizeof(out));
    assert_int_equal(ds_keccak_init(&k, DS_KECCAK384_LEN), 0);
    ds_keccak_update(&k, "abc", 3);
    ds_keccak_final(&k, out);
    helper_assert_hex_equal(
        out, 48,
        "f7df1165f033337be098e7d288ad6a2f74409d7a60b49c36642218de161b1f99f8c681e4afaf31a34db"
        "29fb763e3c28e");
    assert_int_equal(out[48], 0xee);
    assert_true(ds_is_zero(&k, sizeof(k)));
    /* ds_keccak_init with 32 is Keccak-256. */
    assert_int_equal(ds_keccak_init(&k, DS_KECCAK256_LEN), 0);
    ds_keccak_update(&k, "abc", 3);
    ds_keccak_final(&k, out);
    helper_assert_hex_equal(out, 32,
                            "4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45");
    /* Negative: unsupported digest sizes are refused. */
    assert_int_equal(ds_keccak_init(&k, 28), -EINVAL);
    assert_int_equal(ds_keccak_init(&k, 0), -EINVAL);
    assert_int_equal(ds_keccak_init(&k, 65), -EINVAL);
}

/* ---- HKDF -------------------------------------------------------------------------------------
 */

struct hkdf_vector {
    const char *ikm, *salt, *info, *okm;
};

/* RFC 5869 appendix A.1-A.3. */
static const struct hkdf_vector hkdf_vectors[] = {
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "000102030405060708090a0b0c",
     "f0f1f2f3f4f5f6f7f8f9",
     "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"},
    {"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
     "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f"
     "404142434445464748494a4b4c4d4e4f",
     "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f"
     "808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"
     "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf",
     "b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1c2c3c4c5c6c7c8c9cacbcccdcecf"
     "d0d1d2d3d4d5d6d7d8d9dadbdcdddedfe0e1e2e3e4e5e6e7e8e9eaebecedeeef"
     "f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff",
     "b11e398dc80327a1c8e7f78c596a49344f012eda2d4efad8a050cc4c19afa97c"
     "59045a99cac7827271cb41c65e590e09da3275600c2f09b8367793a9aca3db71"
     "cc30c58179ec3e87c14c01d5c1f3434f1d87"},
    {"0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b", "", "",
     "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"},
};

static void test_hkdf_rfc5869(void **state)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(hkdf_vectors); i++) {
        const struct hkdf_vector *v = &hkdf_vectors[i];
        uint8_t ikm[80], salt[80], info[80], okm[82], got[82];
        size_t ikm_len = strlen(v->ikm) / 2, salt_len = strlen(v->salt) / 2;
        size_t info_len = strlen(v->info) / 2, okm_len = strlen(v->okm) / 2;
        helper_hex(v->ikm, ikm, ikm_len);
        if (salt_len)
            helper_hex(v->salt, salt, salt_len);
        if (info_len)
            helper_hex(v->info, info, info_len);
        helper_hex(v->okm, okm, okm_len);
        assert_int_equal(ds_hkdf_sha256(salt, salt_len, ikm, ikm_len, info, info_len, got, okm_len),
                         0);
        assert_memory_equal(got, okm, okm_len);
        /* A shorter output is a prefix of the longer one. */
        assert_int_equal(ds_hkdf_sha256(salt, salt_len, ikm, ikm_len, info, info_len, got, 7), 0);
        assert_memory_equal(got, okm, 7);
        /* Negative: another info string gives other key material. */
        assert_int_equal(ds_hkdf_sha256(salt, salt_len, ikm, ikm_len, "x", 1, got, okm_len), 0);
        assert_memory_not_equal(got, okm, okm_len);
    }
    /* A.3 with a NULL salt (absent = HashLen zeros = empty). */
    uint8_t ikm[22], okm[42], got[42];
    helper_hex(hkdf_vectors[2].ikm, ikm, 22);
    helper_hex(hkdf_vectors[2].okm, okm, 42);
    assert_int_equal(ds_hkdf_sha256(NULL, 0, ikm, 22, NULL, 0, got, 42), 0);
    assert_memory_equal(got, okm, 42);
    uint8_t zeros[32] = {0};
    assert_int_equal(ds_hkdf_sha256(zeros, 32, ikm, 22, NULL, 0, got, 42), 0);
    assert_memory_equal(got, okm, 42);
}

static void test_hkdf_limits(void **state)
{
    static uint8_t big[255 * 32 + 1];
    const uint8_t ikm[16] = {1};
    /* The RFC maximum works; one byte more, zero bytes and NULL pointers with lengths fail. */
    assert_int_equal(ds_hkdf_sha256(NULL, 0, ikm, 16, NULL, 0, big, 255 * 32), 0);
    assert_int_equal(ds_hkdf_sha256(NULL, 0, ikm, 16, NULL, 0, big, 255 * 32 + 1), -DS_E_CRYPTO);
    assert_int_equal(ds_hkdf_sha256(NULL, 0, ikm, 16, NULL, 0, big, 0), -DS_E_CRYPTO);
    assert_int_equal(ds_hkdf_sha256(NULL, 0, NULL, 16, NULL, 0, big, 32), -DS_E_CRYPTO);
    assert_int_equal(ds_hkdf_sha256(NULL, 4, ikm, 16, NULL, 0, big, 32), -DS_E_CRYPTO);
    assert_int_equal(ds_hkdf_sha256(NULL, 0, ikm, 16, NULL, 0, NULL, 32), -DS_E_CRYPTO);
    /* Empty input key material is allowed by the RFC. */
    assert_int_equal(ds_hkdf_sha256(NULL, 0, NULL, 0, "i", 1, big, 32), 0);
}

/* ---- ECDSA ------------------------------------------------------------------------------------
 */

/* Made with pycryptodome: d = 01 02 .. size, RFC 6979 signature of ECDSA_MSG. */
#define ECDSA_MSG "dstack-c ecdsa vector"

struct ecdsa_vector {
    enum ds_ec_curve curve;
    size_t size;
    const char *d, *pub, *sig, *order;
};

static const struct ecdsa_vector ecdsa_vectors[] = {
    {DS_EC_P256, 32, "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f20",
     "515c3d6eb9e396b904d3feca7f54fdcd0cc1e997bf375dca515ad0a6c3b4035f"
     "4536be3a50f318fbf9a5475902a221502bef0d57e08c53b2cc0a56f17d9f9354",
     "f7b1b078a20c956ed4a81e9162068d2b1d4f9dd9a1d29e8ecfd78e770a0e6390"
     "d507c6a8ddc3e1aca35c6b1a7f85430a49bb21b94e9c47cd6a4b762244985e56",
     "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551"},
    {DS_EC_P384, 48,
     "0102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f202122232425262728292a2b2c2d2e2"
     "f30",
     "c76f2283dda95cd49b0ed9e733d2904474e37216f124e13d2c9ab4cf01021c49ad9cabb3d0b97499aef2f0ab313fa"
     "028"
     "26bc1f83451b5c8962a75caff73588d4400a6296436154fb343c393e91048a6c7bcbadc83cd8a5f26feae883156f9"
     "2a1",
     "db93c19a3ebacc04085958cb617c41974a90f7193928242473c63c3a168e2c33465157e7721f59260f5f915bb78f5"
     "3b9"
     "56a0ef4294a65dff40560032469e7e8dfd2583790866bbfcfa3164f3a66bf3094da6c8faaa1d67e1949120486aa5f"
     "cdc",
     "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52"
     "973"},
};

static void test_ecdsa_vectors(void **state)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(ecdsa_vectors); i++) {
        const struct ecdsa_vector *v = &ecdsa_vectors[i];
        size_t n = v->size;
        uint8_t d[48], pub[97], sig[96], got[96];
        assert_int_equal(ds_ec_size(v->curve), n);
        helper_hex(v->d, d, n);
        helper_hex(v->pub, pub + 1, 2 * n);
        pub[0] = 0x04;
        helper_hex(v->sig, sig, 2 * n);
        const char *m = ECDSA_MSG;
        size_t mlen = strlen(m);

        assert_int_equal(ds_ec_public_from_private(v->curve, d, got), 0);
        assert_memory_equal(got, pub + 1, 2 * n);
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub + 1, 2 * n, m, mlen, sig, 2 * n), 0);
        /* The 0x04-prefixed form is accepted too. */
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n + 1, m, mlen, sig, 2 * n), 0);
        uint8_t digest[DS_SHA384_LEN];
        size_t dlen = n;
        if (v->curve == DS_EC_P256)
            ds_sha256(m, mlen, digest);
        else
            ds_sha384(m, mlen, digest);
        assert_int_equal(ds_ecdsa_verify_digest(v->curve, pub + 1, 2 * n, digest, dlen, sig, 2 * n),
                         0);

        /* Negative: wrong message, wrong digest, flipped signature bit, wrong curve. */
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub + 1, 2 * n, m, mlen - 1, sig, 2 * n),
                         -DS_E_SIGNATURE);
        digest[0] ^= 1;
        assert_int_equal(ds_ecdsa_verify_digest(v->curve, pub + 1, 2 * n, digest, dlen, sig, 2 * n),
                         -DS_E_SIGNATURE);
        memcpy(got, sig, 2 * n);
        got[2 * n - 1] ^= 0x01;
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub + 1, 2 * n, m, mlen, got, 2 * n),
                         -DS_E_SIGNATURE);
        memcpy(got, sig, 2 * n);
        got[3] ^= 0x80;
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub + 1, 2 * n, m, mlen, got, 2 * n),
                         -DS_E_SIGNATURE);
        enum ds_ec_curve other = v->curve == DS_EC_P256 ? DS_EC_P384 : DS_EC_P256;
        assert_int_equal(ds_ecdsa_verify_raw(other, pub + 1, 2 * n, m, mlen, sig, 2 * n),
                         -DS_E_FORMAT);
    }
}

static void test_ecdsa_bad_signatures(void **state)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(ecdsa_vectors); i++) {
        const struct ecdsa_vector *v = &ecdsa_vectors[i];
        size_t n = v->size;
        uint8_t pub[96], sig[97], bad[97], order[48];
        helper_hex(v->pub, pub, 2 * n);
        helper_hex(v->sig, sig, 2 * n);
        helper_hex(v->order, order, n);
        const char *m = ECDSA_MSG;
        size_t mlen = strlen(m);

        /* Wrong lengths. */
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, sig, 2 * n - 1),
                         -DS_E_SIGNATURE);
        sig[2 * n] = 0;
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, sig, 2 * n + 1),
                         -DS_E_SIGNATURE);
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, sig, 0),
                         -DS_E_SIGNATURE);
        /* r = 0, s = 0. */
        memcpy(bad, sig, 2 * n);
        memset(bad, 0, n);
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, bad, 2 * n),
                         -DS_E_SIGNATURE);
        memcpy(bad, sig, 2 * n);
        memset(bad + n, 0, n);
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, bad, 2 * n),
                         -DS_E_SIGNATURE);
        /* r = n, s = n, s = 0xff..ff. */
        memcpy(bad, sig, 2 * n);
        memcpy(bad, order, n);
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, bad, 2 * n),
                         -DS_E_SIGNATURE);
        memcpy(bad, sig, 2 * n);
        memcpy(bad + n, order, n);
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, bad, 2 * n),
                         -DS_E_SIGNATURE);
        memset(bad + n, 0xff, n);
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, bad, 2 * n),
                         -DS_E_SIGNATURE);
        /* The signature itself still verifies after all that. */
        assert_int_equal(ds_ecdsa_verify_raw(v->curve, pub, 2 * n, m, mlen, sig, 2 * n), 0);
    }
}

static void test_ecdsa_bad_keys(void **state)
{
    const struct ecdsa_vector *v = &ecdsa_vectors[0];
    uint8_t pub[65], sig[64], bad[65], digest[32];
    helper_hex(v->pub, pub + 1, 64);
    pub[0] = 0x04;
    helper_hex(v->sig, sig, 64);
    const char *m = ECDSA_MSG;
    size_t mlen = strlen(m);

    /* Point off the curve: y + 1. */
    memcpy(bad, pub, 65);
    bad[64] ^= 0x01;
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, bad + 1, 64, m, mlen, sig, 64), -DS_E_FORMAT);
    /* Coordinate >= p. */
    memset(bad + 1, 0xff, 32);
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, bad + 1, 64, m, mlen, sig, 64), -DS_E_FORMAT);
    /* All zero (the point at infinity is not a valid key and (0,0) is not on the curve). */
    memset(bad, 0, sizeof(bad));
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, bad + 1, 64, m, mlen, sig, 64), -DS_E_FORMAT);
    /* Compressed and hybrid prefixes and wrong lengths are refused. */
    memcpy(bad, pub, 65);
    bad[0] = 0x02;
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, bad, 65, m, mlen, sig, 64), -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, pub, 33, m, mlen, sig, 64), -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, pub + 1, 63, m, mlen, sig, 64), -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_verify_raw(DS_EC_P256, pub + 1, 0, m, mlen, sig, 64), -DS_E_FORMAT);
    /* Digest length not a SHA-2 size; unknown curve. */
    ds_sha256(m, mlen, digest);
    assert_int_equal(ds_ecdsa_verify_digest(DS_EC_P256, pub + 1, 64, digest, 20, sig, 64),
                     -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_verify_digest((enum ds_ec_curve)7, pub + 1, 64, digest, 32, sig, 64),
                     -DS_E_FORMAT);
    assert_int_equal(ds_ec_size((enum ds_ec_curve)7), 0);
    assert_int_equal(ds_ecdsa_verify_digest(DS_EC_P256, pub + 1, 64, digest, 32, sig, 64), 0);
}

static void test_ecdsa_sign_roundtrip(void **state)
{
    static const enum ds_ec_curve curves[] = {DS_EC_P256, DS_EC_P384};
    for (size_t i = 0; i < DS_ARRAY_SIZE(curves); i++) {
        enum ds_ec_curve c = curves[i];
        size_t n = ds_ec_size(c);
        uint8_t priv[48], pub[96], pub2[96], sig[96], sig2[96];
        uint8_t msg[100];
        assert_int_equal(ds_random(msg, sizeof(msg)), 0);
        assert_int_equal(ds_ec_generate(c, priv, pub), 0);
        assert_int_equal(ds_ec_public_from_private(c, priv, pub2), 0);
        assert_memory_equal(pub, pub2, 2 * n);
        assert_int_equal(ds_ecdsa_sign_raw(c, priv, msg, sizeof(msg), sig), 0);
        assert_int_equal(ds_ecdsa_verify_raw(c, pub, 2 * n, msg, sizeof(msg), sig, 2 * n), 0);
        /* Randomized nonces: a second signature differs but verifies. */
        assert_int_equal(ds_ecdsa_sign_raw(c, priv, msg, sizeof(msg), sig2), 0);
        assert_memory_not_equal(sig, sig2, 2 * n);
        assert_int_equal(ds_ecdsa_verify_raw(c, pub, 2 * n, msg, sizeof(msg), sig2, 2 * n), 0);
        /* Negative: another key pair, another message. */
        assert_int_equal(ds_ec_generate(c, priv, pub2), 0);
        assert_memory_not_equal(pub, pub2, 2 * n);
        assert_int_equal(ds_ecdsa_verify_raw(c, pub2, 2 * n, msg, sizeof(msg), sig, 2 * n),
                         -DS_E_SIGNATURE);
        msg[0] ^= 1;
        assert_int_equal(ds_ecdsa_verify_raw(c, pub, 2 * n, msg, sizeof(msg), sig, 2 * n),
                         -DS_E_SIGNATURE);
        ds_wipe(priv, sizeof(priv));
    }
}

static void test_ecdsa_bad_private(void **state)
{
    uint8_t d[48], pub[96], sig[96], order[48];
    /* Zero scalar. */
    memset(d, 0, sizeof(d));
    memset(pub, 0xaa, sizeof(pub));
    assert_int_equal(ds_ec_public_from_private(DS_EC_P256, d, pub), -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_sign_raw(DS_EC_P256, d, "x", 1, sig), -DS_E_FORMAT);
    /* out untouched on failure */
    assert_int_equal(pub[0], 0xaa);
    for (size_t i = 0; i < DS_ARRAY_SIZE(ecdsa_vectors); i++) {
        const struct ecdsa_vector *v = &ecdsa_vectors[i];
        size_t n = v->size;
        /* d = n and d = 0xff..ff are out of range; d = n - 1 is fine. */
        helper_hex(v->order, order, n);
        assert_int_equal(ds_ec_public_from_private(v->curve, order, pub), -DS_E_FORMAT);
        assert_int_equal(ds_ecdsa_sign_raw(v->curve, order, "x", 1, sig), -DS_E_FORMAT);
        memset(d, 0xff, n);
        assert_int_equal(ds_ec_public_from_private(v->curve, d, pub), -DS_E_FORMAT);
        order[n - 1]--;
        assert_int_equal(ds_ec_public_from_private(v->curve, order, pub), 0);
        /* (n-1)G = -G: same x as G. */
        uint8_t one[48] = {0}, g[96];
        one[n - 1] = 1;
        assert_int_equal(ds_ec_public_from_private(v->curve, one, g), 0);
        assert_memory_equal(g, pub, n);
        assert_memory_not_equal(g + n, pub + n, n);
    }
    assert_int_equal(ds_ec_generate((enum ds_ec_curve)9, d, pub), -DS_E_FORMAT);
}

static void test_ecdsa_der(void **state)
{
    uint8_t raw[64], back[64];
    uint8_t *der = NULL;
    size_t der_len = 0;

    /* r with the high bit set gets a 0x00 pad; s with leading zeros is shortened. */
    memset(raw, 0, sizeof(raw));
    raw[0] = 0x80;
    raw[31] = 0x01;
    raw[62] = 0x12;
    raw[63] = 0x34;
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw, 64, &der, &der_len), 0);
    assert_int_equal(der_len, 2 + 2 + 33 + 2 + 2);
    assert_memory_equal(der, "\x30\x27\x02\x21\x00\x80", 6);
    assert_memory_equal(der + der_len - 4, "\x02\x02\x12\x34", 4);
    assert_int_equal(ds_ecdsa_sig_der_to_raw(der, der_len, 32, back), 0);
    assert_memory_equal(raw, back, 64);
    /* Too small a size for r. */
    assert_int_equal(ds_ecdsa_sig_der_to_raw(der, der_len, 1, back), -DS_E_FORMAT);
    free(der);

    /* Zero integers encode as 02 01 00. */
    memset(raw, 0, sizeof(raw));
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw, 64, &der, &der_len), 0);
    assert_int_equal(der_len, 8);
    assert_memory_equal(der, "\x30\x06\x02\x01\x00\x02\x01\x00", 8);
    free(der);

    /* P-521 sized integers need the long-form sequence length (0x81). */
    uint8_t raw132[132], back132[132];
    memset(raw132, 0xff, sizeof(raw132));
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw132, 132, &der, &der_len), 0);
    assert_int_equal(der_len, 3 + 2 * 69);
    assert_memory_equal(der, "\x30\x81\x8a\x02\x43\x00\xff", 7);
    assert_int_equal(ds_ecdsa_sig_der_to_raw(der, der_len, 66, back132), 0);
    assert_memory_equal(raw132, back132, 132);
    free(der);

    /* P-384 sized, largest values: still the short form. */
    uint8_t raw96[96], back96[96];
    memset(raw96, 0xff, sizeof(raw96));
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw96, 96, &der, &der_len), 0);
    assert_int_equal(der_len, 2 + 2 * 51);
    assert_memory_equal(der, "\x30\x66\x02\x31\x00\xff", 6);
    assert_int_equal(ds_ecdsa_sig_der_to_raw(der, der_len, 48, back96), 0);
    assert_memory_equal(raw96, back96, 96);
    /* Negative: trailing byte, truncated. */
    uint8_t longer[2 + 2 * 51 + 1];
    memcpy(longer, der, der_len);
    longer[der_len] = 0;
    assert_int_equal(ds_ecdsa_sig_der_to_raw(longer, der_len + 1, 48, back96), -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_sig_der_to_raw(der, der_len - 1, 48, back96), -DS_E_FORMAT);
    free(der);

    /* Negative raw inputs. */
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw, 63, &der, &der_len), -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw, 0, &der, &der_len), -DS_E_FORMAT);
    assert_int_equal(ds_ecdsa_sig_raw_to_der(raw132, 134, &der, &der_len), -DS_E_FORMAT);

    /* Malformed DER. */
    static const struct {
        const char *der;
        size_t len;
    } bad[] = {
        {"\x31\x06\x02\x01\x01\x02\x01\x01", 8},              /* SET, not SEQUENCE */
        {"\x30\x07\x02\x01\x01\x02\x01\x01", 8},              /* sequence length too long */
        {"\x30\x05\x02\x01\x01\x02\x01\x01", 8},              /* sequence length too short */
        {"\x30\x06\x02\x01\x81\x02\x01\x01", 8},              /* negative r */
        {"\x30\x07\x02\x02\x00\x01\x02\x01\x01", 9},          /* non-minimal r */
        {"\x30\x06\x02\x00\x02\x02\x01\x01", 8},              /* empty integer */
        {"\x30\x06\x04\x01\x01\x02\x01\x01", 8},              /* OCTET STRING */
        {"\x30\x81\x06\x02\x01\x01\x02\x01\x01", 9},          /* non-minimal length */
        {"\x30\x82\x00\x06\x02\x01\x01\x02\x01\x01", 10},     /* long length form */
        {"\x30\x09\x02\x01\x01\x02\x01\x01\x02\x01\x01", 11}, /* three integers */
        {"\x30\x03\x02\x01\x01", 5},                          /* one integer */
        {"", 0},                                              /* empty */
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        memset(back, 0x5a, sizeof(back));
        assert_int_equal(ds_ecdsa_sig_der_to_raw((const uint8_t *)bad[i].der, bad[i].len, 32, back),
                         -DS_E_FORMAT);
        assert_int_equal(back[0], 0x5a);
    }
    assert_int_equal(
        ds_ecdsa_sig_der_to_raw((const uint8_t *)"\x30\x06\x02\x01\x01\x02\x01\x02", 8, 32, back),
        0);
    assert_int_equal(back[31], 1);
    assert_int_equal(back[63], 2);
}

/* The verify path shares an immutable template key between threads; hammer it concurrently. */
#define VERIFY_THREADS 4
#define VERIFY_ROUNDS  200

struct verify_job {
    uint8_t pub[64], sig[64], msg[32];
    int good, bad;
};

static void *verify_worker(void *arg)
{
    struct verify_job *job = arg;
    uint8_t flipped[64];
    memcpy(flipped, job->sig, 64);
    flipped[10] ^= 0x04;
    for (int i = 0; i < VERIFY_ROUNDS; i++) {
        if (ds_ecdsa_verify_raw(DS_EC_P256, job->pub, 64, job->msg, 32, job->sig, 64) == 0)
            job->good++;
        if (ds_ecdsa_verify_raw(DS_EC_P256, job->pub, 64, job->msg, 32, flipped, 64) ==
            -DS_E_SIGNATURE)
            job->bad++;
    }
    return NULL;
}

static void test_ecdsa_threads(void **state)
{
    struct verify_job jobs[VERIFY_THREADS];
    pthread_t tids[VERIFY_THREADS];
    for (int t = 0; t < VERIFY_THREADS; t++) {
        uint8_t priv[32];
        memset(&jobs[t], 0, sizeof(jobs[t]));
        assert_int_equal(ds_ec_generate(DS_EC_P256, priv, jobs[t].pub), 0);
        assert_int_equal(ds_random(jobs[t].msg, sizeof(jobs[t].msg)), 0);
        assert_int_equal(ds_ecdsa_sign_raw(DS_EC_P256, priv, jobs[t].msg, 32, jobs[t].sig), 0);
        ds_wipe(priv, sizeof(priv));
    }
    for (int t = 0; t < VERIFY_THREADS; t++) {
        assert_int_equal(pthread_create(&tids[t], NULL, verify_worker, &jobs[t]), 0);
    }
    for (int t = 0; t < VERIFY_THREADS; t++) {
        assert_int_equal(pthread_join(tids[t], NULL), 0);
        assert_int_equal(jobs[t].good, VERIFY_ROUNDS);
        assert_int_equal(jobs[t].bad, VERIFY_ROUNDS);
    }
}

/* ---- secp256k1 ---------------------------------------------------------------------------------
 */

#define K256_ORDER "fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141"

static void test_k256_keys(void **state)
{
    uint8_t priv[32] = {0}, pub33[33], pub65[65];
    priv[31] = 1;
    assert_true(ds_k256_valid_private(priv));
    assert_int_equal(ds_k256_public(priv, pub33), 0);
    helper_assert_hex_equal(pub33, 33,
                            "0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798");
    assert_int_equal(ds_k256_public_uncompressed(priv, pub65), 0);
    helper_assert_hex_equal(pub65, 65,
                            "0479be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798"
                            "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8");

    /* Ethereum address of the EIP-155 example key 0x46..46: keccak(X||Y)[12..32]. */
    memset(priv, 0x46, sizeof(priv));
    assert_int_equal(ds_k256_public_uncompressed(priv, pub65), 0);
    uint8_t h[32];
    ds_keccak256(pub65 + 1, 64, h);
    helper_assert_hex_equal(h + 12, 20, "9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f");

    /* Negative: 0, n, 2^256-1 are not private keys; out is left untouched. */
    static const char *bad[] = {
        "0000000000000000000000000000000000000000000000000000000000000000",
        K256_ORDER,
        "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        helper_hex(bad[i], priv, 32);
        memset(pub33, 0x5a, sizeof(pub33));
        assert_false(ds_k256_valid_private(priv));
        assert_int_equal(ds_k256_public(priv, pub33), -DS_E_FORMAT);
        assert_int_equal(ds_k256_public_uncompressed(priv, pub65), -DS_E_FORMAT);
        assert_int_equal(pub33[0], 0x5a);
        uint8_t sig[65];
        assert_int_equal(ds_k256_sign_recoverable(priv, h, sig), -DS_E_FORMAT);
    }
    /* n - 1 is the largest valid key; its public key is -G. */
    helper_hex(K256_ORDER, priv, 32);
    priv[31]--;
    assert_true(ds_k256_valid_private(priv));
    assert_int_equal(ds_k256_public(priv, pub33), 0);
    helper_assert_hex_equal(pub33, 33,
                            "0379be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798");
    assert_false(ds_k256_valid_private(NULL));
}

/* EIP-155's worked example: key 0x46..46 signs this hash with r, s below and v = 37 (id 0). */
static void test_k256_eip155_vector(void **state)
{
    uint8_t priv[32], digest[32], sig[65], want[64], pub[33], rec[33];
    memset(priv, 0x46, sizeof(priv));
    helper_hex("daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53", digest, 32);
    helper_hex("28ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276"
               "67cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83",
               want, 64);
    assert_int_equal(ds_k256_sign_recoverable(priv, digest, sig), 0);
    assert_memory_equal(sig, want, 64); /* RFC 6979: deterministic */
    assert_int_equal(sig[64], 0);
    assert_int_equal(ds_k256_public(priv, pub), 0);
    assert_int_equal(ds_k256_recover(sig, digest, rec), 0);
    assert_memory_equal(pub, rec, 33);
    sig[64] = 27;
    assert_int_equal(ds_k256_recover(sig, digest, rec), 0);
    assert_memory_equal(pub, rec, 33);
    /* Negative: the other recovery id yields another key (or none). */
    sig[64] = 28;
    int r = ds_k256_recover(sig, digest, rec);
    assert_true(r == 0 || r == -DS_E_SIGNATURE);
    if (r == 0)
        assert_memory_not_equal(pub, rec, 33);
}

static void test_k256_sign_recover_verify(void **state)
{
    for (int round = 0; round < 8; round++) {
        uint8_t priv[32], digest[32], sig[65], pub33[33], pub65[65], rec[33];
        do {
            assert_int_equal(ds_random(priv, 32), 0);
        } while (!ds_k256_valid_private(priv));
        assert_int_equal(ds_random(digest, 32), 0);
        assert_int_equal(ds_k256_public(priv, pub33), 0);
        assert_int_equal(ds_k256_public_uncompressed(priv, pub65), 0);
        assert_memory_equal(pub33 + 1, pub65 + 1, 32);
        assert_int_equal(pub33[0], 2 + (pub65[64] & 1));

        assert_int_equal(ds_k256_sign_recoverable(priv, digest, sig), 0);
        assert_true(sig[64] <= 1);
        assert_int_equal(ds_k256_recover(sig, digest, rec), 0);
        assert_memory_equal(rec, pub33, 33);
        sig[64] += 27;
        assert_int_equal(ds_k256_recover(sig, digest, rec), 0);
        assert_memory_equal(rec, pub33, 33);
        sig[64] -= 27;
        assert_int_equal(ds_k256_verify(pub33, 33, digest, sig), 0);
        assert_int_equal(ds_k256_verify(pub65, 65, digest, sig), 0);

        /* Negative: wrong digest recovers a different key and does not verify. */
        uint8_t other[32];
        memcpy(other, digest, 32);
        other[0] ^= 0x01;
        int r = ds_k256_recover(sig, other, rec);
        assert_true(r == 0 || r == -DS_E_SIGNATURE);
        if (r == 0)
            assert_memory_not_equal(rec, pub33, 33);
        assert_int_equal(ds_k256_verify(pub33, 33, other, sig), -DS_E_SIGNATURE);
        /* Negative: a flipped signature bit. */
        sig[40] ^= 0x10;
        assert_int_equal(ds_k256_verify(pub33, 33, digest, sig), -DS_E_SIGNATURE);
        sig[40] ^= 0x10;
        ds_wipe(priv, sizeof(priv));
    }
}

static void test_k256_malformed(void **state)
{
    uint8_t priv[32] = {0}, digest[32] = {7}, sig[65], pub33[33], pub65[65], rec[33], hs[64];
    priv[31] = 5;
    assert_int_equal(ds_k256_public(priv, pub33), 0);
    assert_int_equal(ds_k256_public_uncompressed(priv, pub65), 0);
    assert_int_equal(ds_k256_sign_recoverable(priv, digest, sig), 0);

    /* Recovery ids other than 0/1/27/28. */
    static const uint8_t bad_v[] = {2, 3, 4, 26, 29, 30, 35, 37, 255};
    uint8_t v0 = sig[64];
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad_v); i++) {
        sig[64] = bad_v[i];
        assert_int_equal(ds_k256_recover(sig, digest, rec), -DS_E_FORMAT);
    }
    sig[64] = v0;
    /* r >= n or s >= n. */
    uint8_t bad[65];
    memcpy(bad, sig, 65);
    memset(bad, 0xff, 32);
    assert_int_equal(ds_k256_recover(bad, digest, rec), -DS_E_SIGNATURE);
    assert_int_equal(ds_k256_verify(pub33, 33, digest, bad), -DS_E_SIGNATURE);
    memcpy(bad, sig, 65);
    helper_hex(K256_ORDER, bad + 32, 32);
    assert_int_equal(ds_k256_recover(bad, digest, rec), -DS_E_SIGNATURE);
    assert_int_equal(ds_k256_verify(pub33, 33, digest, bad), -DS_E_SIGNATURE);
    /* r = 0 recovers nothing. */
    memcpy(bad, sig, 65);
    memset(bad, 0, 32);
    assert_int_equal(ds_k256_recover(bad, digest, rec), -DS_E_SIGNATURE);
    assert_int_equal(ds_k256_verify(pub33, 33, digest, bad), -DS_E_SIGNATURE);

    /* High s (n - s) is accepted by verify and recover (documented), with the other id. */
    uint8_t n[32];
    helper_hex(K256_ORDER, n, 32);
    memcpy(hs, sig, 32);
    unsigned borrow = 0;
    for (int i = 31; i >= 0; i--) {
        unsigned d = (unsigned)n[i] - sig[32 + i] - borrow;
        hs[32 + i] = (uint8_t)d;
        borrow = (d >> 8) & 1;
    }
    assert_int_equal(ds_k256_verify(pub33, 33, digest, hs), 0);
    memcpy(bad, hs, 64);
    bad[64] = (uint8_t)(v0 ^ 1);
    assert_int_equal(ds_k256_recover(bad, digest, rec), 0);
    assert_memory_equal(rec, pub33, 33);

    /* Malformed public keys. */
    uint8_t badpub[65];
    assert_int_equal(ds_k256_verify(pub33, 32, digest, sig), -DS_E_FORMAT);
    assert_int_equal(ds_k256_verify(pub65, 64, digest, sig), -DS_E_FORMAT);
    memcpy(badpub, pub33, 33);
    badpub[0] = 0x04;
    assert_int_equal(ds_k256_verify(badpub, 33, digest, sig), -DS_E_FORMAT);
    memcpy(badpub, pub65, 65);
    badpub[64] ^= 1; /* off the curve */
    assert_int_equal(ds_k256_verify(badpub, 65, digest, sig), -DS_E_FORMAT);
    memset(badpub + 1, 0xff, 32); /* x >= p */
    badpub[0] = 0x02;
    assert_int_equal(ds_k256_verify(badpub, 33, digest, sig), -DS_E_FORMAT);
    /* A valid key that did not sign. */
    priv[31] = 6;
    assert_int_equal(ds_k256_public(priv, badpub), 0);
    assert_int_equal(ds_k256_verify(badpub, 33, digest, sig), -DS_E_SIGNATURE);
}

/* ---- Ed25519 / X25519
 * ---------------------------------------------------------------------------- */

struct ed25519_vector {
    const char *seed, *pub, *msg, *sig;
};

/* RFC 8032 section 7.1, tests 1 and 2. */
static const struct ed25519_vector ed25519_vectors[] = {
    {"9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b"
     "46bd"
     "25bf5f0595bbe24655141438e7a100b"},
    {"4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11"
     "d8c"
     "387b2eaeb4302aeeb00d291612bb0c00"},
};

static void test_ed25519_rfc8032(void **state)
{
    for (size_t i = 0; i < DS_ARRAY_SIZE(ed25519_vectors); i++) {
        const struct ed25519_vector *v = &ed25519_vectors[i];
        uint8_t seed[32], pub[32], want_pub[32], sig[64], want_sig[64], msg[1];
        size_t mlen = strlen(v->msg) / 2;
        helper_hex(v->seed, seed, 32);
        helper_hex(v->pub, want_pub, 32);
        helper_hex(v->sig, want_sig, 64);
        if (mlen)
            helper_hex(v->msg, msg, mlen);
        assert_int_equal(ds_ed25519_public(seed, pub), 0);
        assert_memory_equal(pub, want_pub, 32);
        assert_int_equal(ds_ed25519_sign(seed, msg, mlen, sig), 0);
        assert_memory_equal(sig, want_sig, 64);
        assert_int_equal(ds_ed25519_verify(pub, msg, mlen, sig), 0);

        /* Negative: flipped bits in R and in S, a different message, another key. */
        for (size_t bit = 0; bit < 512; bit += 37) {
            sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
            assert_int_equal(ds_ed25519_verify(pub, msg, mlen, sig), -DS_E_SIGNATURE);
            sig[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        }
        assert_int_equal(ds_ed25519_verify(pub, "x", 1, sig), -DS_E_SIGNATURE);
        const struct ed25519_vector *o = &ed25519_vectors[1 - i];
        uint8_t other[32];
        helper_hex(o->pub, other, 32);
        assert_int_equal(ds_ed25519_verify(other, msg, mlen, sig), -DS_E_SIGNATURE);
    }
}

static void test_ed25519_roundtrip(void **state)
{
    uint8_t seed[32], pub[32], sig[64], msg[300];
    assert_int_equal(ds_random(seed, 32), 0);
    assert_int_equal(ds_random(msg, sizeof(msg)), 0);
    assert_int_equal(ds_ed25519_public(seed, pub), 0);
    assert_int_equal(ds_ed25519_sign(seed, msg, sizeof(msg), sig), 0);
    assert_int_equal(ds_ed25519_verify(pub, msg, sizeof(msg), sig), 0);
    assert_int_equal(ds_ed25519_verify(pub, msg, sizeof(msg) - 1, sig), -DS_E_SIGNATURE);
    /* S >= L (non-canonical) is rejected: add L to S. */
    static const uint8_t ell[32] = {0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58,
                                    0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                                    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10};
    uint8_t big[64];
    memcpy(big, sig, 64);
    unsigned carry = 0;
    for (int i = 0; i < 32; i++) {
        unsigned t = (unsigned)big[32 + i] + ell[i] + carry;
        big[32 + i] = (uint8_t)t;
        carry = t >> 8;
    }
    assert_int_equal(ds_ed25519_verify(pub, msg, sizeof(msg), big), -DS_E_SIGNATURE);
    /* An undecodable public key (y = p, not canonical / not on the curve) fails verification. */
    uint8_t badpub[32];
    memset(badpub, 0xff, 32);
    badpub[0] = 0xed;
    badpub[31] = 0x7f;
    assert_int_equal(ds_ed25519_verify(badpub, msg, sizeof(msg), sig), -DS_E_SIGNATURE);
    assert_int_equal(ds_ed25519_verify(NULL, msg, sizeof(msg), sig), -DS_E_FORMAT);
    assert_int_equal(ds_ed25519_sign(seed, NULL, 5, sig), -DS_E_FORMAT);
    assert_int_equal(ds_ed25519_public(NULL, pub), -DS_E_FORMAT);
    ds_wipe(seed, sizeof(seed));
}

/* RFC 7748 section 6.1. */
static void test_x25519_rfc7748(void **state)
{
    uint8_t a[32], b[32], a_pub[32], b_pub[32], want[32], got[32], k1[32], k2[32];
    helper_hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a", a, 32);
    helper_hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb", b, 32);
    assert_int_equal(ds_x25519_public(a, a_pub), 0);
    helper_assert_hex_equal(a_pub, 32,
                            "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
    assert_int_equal(ds_x25519_public(b, b_pub), 0);
    helper_assert_hex_equal(b_pub, 32,
                            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
    helper_hex("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742", want, 32);
    assert_int_equal(ds_x25519(a, b_pub, k1), 0);
    assert_memory_equal(k1, want, 32);
    assert_int_equal(ds_x25519(b, a_pub, k2), 0);
    assert_memory_equal(k2, want, 32);

    /* Negative: another peer key gives another secret. */
    a_pub[5] ^= 1;
    assert_int_equal(ds_x25519(b, a_pub, got), 0);
    assert_memory_not_equal(got, want, 32);
    /* Negative: small-order peer points (0 and 1) are refused, out untouched. */
    uint8_t low[32] = {0};
    memset(got, 0x5a, 32);
    assert_int_equal(ds_x25519(a, low, got), -DS_E_FORMAT);
    low[0] = 1;
    assert_int_equal(ds_x25519(a, low, got), -DS_E_FORMAT);
    assert_int_equal(got[0], 0x5a);
    assert_int_equal(ds_x25519(NULL, b_pub, got), -DS_E_FORMAT);
    assert_int_equal(ds_x25519_public(NULL, got), -DS_E_FORMAT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sha2_vectors),
        cmocka_unit_test(test_sha2_multipart),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_keccak_vectors),
        cmocka_unit_test(test_keccak_streaming),
        cmocka_unit_test(test_keccak_oracle),
        cmocka_unit_test(test_keccak384_oracle),
        cmocka_unit_test(test_keccak512_oracle),
        cmocka_unit_test(test_keccak384_512_vectors),
        cmocka_unit_test(test_hkdf_rfc5869),
        cmocka_unit_test(test_hkdf_limits),
        cmocka_unit_test(test_ecdsa_vectors),
        cmocka_unit_test(test_ecdsa_bad_signatures),
        cmocka_unit_test(test_ecdsa_bad_keys),
        cmocka_unit_test(test_ecdsa_sign_roundtrip),
        cmocka_unit_test(test_ecdsa_bad_private),
        cmocka_unit_test(test_ecdsa_der),
        cmocka_unit_test(test_ecdsa_threads),
        cmocka_unit_test(test_k256_keys),
        cmocka_unit_test(test_k256_eip155_vector),
        cmocka_unit_test(test_k256_sign_recover_verify),
        cmocka_unit_test(test_k256_malformed),
        cmocka_unit_test(test_ed25519_rfc8032),
        cmocka_unit_test(test_ed25519_roundtrip),
        cmocka_unit_test(test_x25519_rfc7748),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
