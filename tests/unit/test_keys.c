/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests for lib/keys: every test vector of kms-ratls.md §3.9 (derive_dh_secret, the
 * per-app keys, app CA scalar, root CA SPKI, the k256 issue signature, env-pubkey signatures,
 * non-KMS seed keys, a Keccak selector), the guest-agent vectors of guest-agent-api.md
 * §4.2-4.3 (upstream's HKDF check vector and the simulator keys file), Sign/Verify round trips
 * and every malformed-input error of §4.4, the GetKey signature-chain verifier, the PKCS#8
 * encodings (cross-checked against OpenSSL's own output) and .appkeys.json parsing, writing
 * and one negative case per field.
 */
#define _DEFAULT_SOURCE /* mkstemp */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include <errno.h>
#include <jansson.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "dstack/crypto.h"
#include "dstack/keys.h"
#include "helper_hex.h"

#define SIM_APPKEYS "vectors/keys/simulator-appkeys.json"

#define P(s) ((struct ds_kdf_part){(s), strlen(s)})

/* §3.9 inputs. */
static const char *root_ca_hex = "f57527cea4ab7ffb49af99b158cdc0e3ec06398f528349ea236b7d2afe19cec1";

struct kms_fixture {
    uint8_t root_ca[32], root_k256[32], app_id[20], instance_id[20];
};

static void kms_fixture(struct kms_fixture *f)
{
    helper_hex(root_ca_hex, f->root_ca, 32);
    memset(f->root_k256, 0x01, 32);
    memset(f->app_id, 0x11, 20);
    memset(f->instance_id, 0x22, 20);
}

/* ---- KDF ------------------------------------------------------------------------------------ */

static void test_dh_secret_stable_output(void **state)
{
    (void)state;
    uint8_t root[32], d[32], secret[32];
    helper_hex(root_ca_hex, root, 32);
    const struct ds_kdf_part parts[] = {P("context one"), P("context two")};
    assert_int_equal(ds_kdf_derive_p256(root, parts, 2, d), 0);
    helper_assert_hex_equal(d, 32,
                            "b60ac47b8fcfbdf96031b9e94f0b60cfe9de05eccb5a1dca41a26f757833c0e7");
    assert_int_equal(ds_kdf_derive_dh_secret(root, parts, 2, secret), 0);
    helper_assert_hex_equal(secret, 32,
                            "663afd58820be8ad645f9c035e93199d114ab16f738db62393bc1d7d623e8813");
    /* info is a plain concatenation: one part with the joined text gives the same secret. */
    const struct ds_kdf_part joined[] = {P("context onecontext two")};
    uint8_t secret2[32];
    assert_int_equal(ds_kdf_derive_dh_secret(root, joined, 1, secret2), 0);
    assert_memory_equal(secret, secret2, 32);
    /* A different context gives a different secret. */
    const struct ds_kdf_part other[] = {P("context one"), P("context tw0")};
    assert_int_equal(ds_kdf_derive_dh_secret(root, other, 2, secret2), 0);
    assert_memory_not_equal(secret, secret2, 32);
}

static void test_kdf_is_hkdf_ratls(void **state)
{
    (void)state;
    uint8_t ikm[32], a[64], b[64];
    memset(ikm, 0x42, sizeof(ikm));
    const struct ds_kdf_part parts[] = {P("ab"), {NULL, 0}, P("c")};
    assert_int_equal(ds_kdf_derive(ikm, 32, parts, 3, a, 64), 0);
    assert_int_equal(ds_hkdf_sha256("RATLS", 5, ikm, 32, "abc", 3, b, 64), 0);
    assert_memory_equal(a, b, 64);
    /* No parts = empty info. */
    assert_int_equal(ds_kdf_derive(ikm, 32, NULL, 0, a, 32), 0);
    assert_int_equal(ds_hkdf_sha256("RATLS", 5, ikm, 32, "", 0, b, 32), 0);
    assert_memory_equal(a, b, 32);
    /* Limits. */
    struct ds_kdf_part many[DS_KDF_PARTS_MAX + 1];
    for (size_t i = 0; i < DS_ARRAY_SIZE(many); i++)
        many[i] = P("x");
    assert_int_equal(ds_kdf_derive(ikm, 32, many, DS_KDF_PARTS_MAX + 1, a, 32), -DS_E_LIMIT);
    assert_int_equal(ds_kdf_derive(ikm, 32, many, DS_KDF_PARTS_MAX, a, 32), 0);
    assert_int_equal(ds_kdf_derive(ikm, 32, parts, 3, a, 0), -EINVAL);
    assert_int_equal(ds_kdf_derive(ikm, 32, parts, 3, a, DS_KDF_OUT_MAX + 1), -EINVAL);
    static uint8_t big[DS_KDF_INFO_MAX + 1];
    const struct ds_kdf_part huge[] = {{big, sizeof(big)}};
    assert_int_equal(ds_kdf_derive(ikm, 32, huge, 1, a, 32), -DS_E_LIMIT);
    const struct ds_kdf_part bad[] = {{NULL, 3}};
    assert_int_equal(ds_kdf_derive(ikm, 32, bad, 1, a, 32), -EINVAL);
}

static void test_p256_range_check(void **state)
{
    (void)state;
    uint8_t s[32], der[DS_P256_PKCS8_SIZE];
    char *pem = NULL;
    static const char *n_hex = "ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632551";
    memset(s, 0, 32);
    assert_false(ds_p256_scalar_valid(s)); /* 0 */
    s[31] = 1;
    assert_true(ds_p256_scalar_valid(s)); /* 1 */
    helper_hex(n_hex, s, 32);
    assert_false(ds_p256_scalar_valid(s)); /* n */
    assert_int_equal(ds_p256_pkcs8_der(s, der), -DS_E_FORMAT);
    assert_int_equal(ds_p256_pkcs8_pem(s, &pem, NULL), -DS_E_FORMAT);
    assert_null(pem);
    s[31] = 0x50;
    assert_true(ds_p256_scalar_valid(s)); /* n - 1 */
    s[31] = 0x52;
    assert_false(ds_p256_scalar_valid(s)); /* n + 1 */
    helper_hex("ffffffff00000000ffffffffffffffffbce6faada7179e84f3b9cac2fc632451", s, 32);
    assert_true(ds_p256_scalar_valid(s)); /* n - 256: borrow across bytes */
    helper_hex("ffffffff00000001000000000000000000000000000000000000000000000000", s, 32);
    assert_false(ds_p256_scalar_valid(s)); /* above n, low bytes zero */
    memset(s, 0xff, 32);
    assert_false(ds_p256_scalar_valid(s));
    /* A parent that is not itself a scalar is fine for derivation (IKM only). */
    uint8_t out[32];
    const struct ds_kdf_part parts[] = {P("x")};
    assert_int_equal(ds_kdf_derive_p256(s, parts, 1, out), 0);
    assert_true(ds_p256_scalar_valid(out));
}

/* OpenSSL writes the same PKCS#8 PEM for the key we encode (guest-agent-api.md §4.6). */
static void test_pkcs8_pem(void **state)
{
    (void)state;
    uint8_t scalar[32], back[32], der[DS_P256_PKCS8_SIZE], pub[64], spki[DS_P256_SPKI_SIZE];
    char *pem = NULL;
    size_t pem_len = 0;
    helper_hex(root_ca_hex, scalar, 32);
    assert_int_equal(ds_p256_pkcs8_der(scalar, der), 0);
    helper_assert_hex_equal(der, 36,
                            "308187020100301306072a8648ce3d020106082a8648ce3d030107046d306b02"
                            "01010420");
    assert_memory_equal(der + 36, scalar, 32);
    helper_assert_hex_equal(der + 68, 6, "a14403420004");
    assert_int_equal(ds_ec_public_from_private(DS_EC_P256, scalar, pub), 0);
    assert_memory_equal(der + 74, pub, 64);
    /* Q = 91f50522...775897b27 (§3.9) and the root SPKI (KMS key-provider id). */
    helper_assert_hex_equal(pub, 4, "91f50522");
    assert_int_equal(ds_p256_spki_der(pub, spki), 0);
    helper_assert_hex_equal(
        spki, sizeof(spki),
        "3059301306072a8648ce3d020106082a8648ce3d0301070342000491f50522407ce29dce3"
        "ed7d31a15d80c1c42f13a23552d2b33a0ce09ee11e47bce95936f3e7f80d195f879e28e1b1"
        "44ef37ac9ab8e36a690cbf930b775897b27");
    pub[63] ^= 1; /* off the curve */
    assert_int_equal(ds_p256_spki_der(pub, spki), -DS_E_FORMAT);

    assert_int_equal(ds_p256_pkcs8_pem(scalar, &pem, &pem_len), 0);
    assert_int_equal(strlen(pem), pem_len);
    assert_true(strncmp(pem,
                        "-----BEGIN PRIVATE KEY-----\n"
                        "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg",
                        28 + 48) == 0);
    assert_int_equal(pem[pem_len - 1], '\n');
    assert_int_equal(pem[28 + 64], '\n'); /* 64-column lines */

    /* OpenSSL re-encodes the parsed key to the identical text. */
    BIO *in = BIO_new_mem_buf(pem, (int)pem_len);
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(in, NULL, NULL, NULL);
    assert_non_null(pkey);
    BIO *out = BIO_new(BIO_s_mem());
    assert_int_equal(PEM_write_bio_PrivateKey(out, pkey, NULL, NULL, 0, NULL, NULL), 1);
    char *ossl;
    long ossl_len = BIO_get_mem_data(out, &ossl);
    assert_int_equal((size_t)ossl_len, pem_len);
    assert_memory_equal(ossl, pem, pem_len);
    BIO_free(out);
    BIO_free(in);
    EVP_PKEY_free(pkey);

    assert_int_equal(ds_p256_scalar_from_pem(pem, pem_len, back), 0);
    assert_memory_equal(back, scalar, 32);
    ds_keys_free_secret(pem);

    /* Negative: not PEM, a P-384 key, an Ed25519 key. */
    assert_int_equal(ds_p256_scalar_from_pem("hello", 5, back), -DS_E_FORMAT);
    const char *kinds[] = {"P-384", "ED25519"};
    for (size_t i = 0; i < 2; i++) {
        EVP_PKEY *k = i == 0 ? EVP_EC_gen(kinds[i]) : EVP_PKEY_Q_keygen(NULL, NULL, kinds[i]);
        assert_non_null(k);
        BIO *b = BIO_new(BIO_s_mem());
        assert_int_equal(PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL), 1);
        char *t;
        long tl = BIO_get_mem_data(b, &t);
        assert_int_equal(ds_p256_scalar_from_pem(t, (size_t)tl, back), -DS_E_UNSUPPORTED);
        BIO_free(b);
        EVP_PKEY_free(k);
    }
}

/* ---- per-app keys (§3.3-3.6, §3.9) ---------------------------------------------------------- */

static void test_app_keys_vectors(void **state)
{
    (void)state;
    struct kms_fixture f;
    struct ds_app_keys k;
    uint8_t digest[32], pub[33], ca[32], sig[65], signer[33];
    kms_fixture(&f);

    assert_int_equal(ds_k256_public(f.root_k256, pub), 0);
    helper_assert_hex_equal(pub, 33,
                            "031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f");

    assert_int_equal(
        ds_app_keys_from_roots(f.root_ca, f.root_k256, f.app_id, f.instance_id, 20, &k), 0);
    helper_assert_hex_equal(k.env_crypt_key, 32,
                            "a7470db8cfdd0fe24134b461d60766afa7c078abe6dce9f2c8a5c44034ca400e");
    helper_assert_hex_equal(k.env_public_key, 32,
                            "93cf259f68b24775d54290a8ea57cf93efc994d3ff28a7b8ba7a39e9f512302f");
    helper_assert_hex_equal(k.disk_crypt_key, 32,
                            "a59c814e2c6d9353af59ce4fba7215e5ec3b62a2495b4dca48ea6f9804061f51");
    helper_assert_hex_equal(k.k256_key, 32,
                            "88fa429170ad091e0f87b335ba19b1729610ac25441728807ce3325161846baf");
    helper_assert_hex_equal(k.k256_public_key, 33,
                            "02a594d1e64985d03463fc26e666eaf6a82b6c75834ca8c25810b25069b401ebc3");
    ds_app_k256_issue_digest(f.app_id, k.k256_public_key, digest);
    helper_assert_hex_equal(digest, 32,
                            "c5ef3966bf1ef7153f8eeabebbed7940eda1fb8f7e762cede045ff7d67d36ca7");
    helper_assert_hex_equal(
        k.k256_signature, 65,
        "9ec2e6deec77b3584de4c6406034b39a4e4a04643cbf56655247774c1a15f03e73970201967d"
        "270928b41fec3cfdbb7538adc5d4fbd328c10c6927621024f00800");
    assert_int_equal(ds_k256_recover(k.k256_signature, digest, signer), 0);
    helper_assert_hex_equal(signer, 33,
                            "031b84c5567b126440995d3ed5aaba0565d71e1834604819ff9c17f5e9d5dd078f");

    assert_int_equal(ds_app_ca_scalar(f.root_ca, f.app_id, ca), 0);
    helper_assert_hex_equal(ca, 32,
                            "5b779e0a9fe80b2e5866d94958daa1a4e29a183228b3f37acd7eae153e18a75f");

    /* Env-encrypt public-key signatures, legacy and v1. */
    assert_int_equal(ds_env_pubkey_sign(f.root_k256, f.app_id, k.env_public_key, false, 0, sig), 0);
    helper_assert_hex_equal(
        sig, 65,
        "379d578bd258c13f31a3dabd5ab9ce3cafbeed5f3d2f73d57aa5ae45e2a0bb1a335e80e2b0db"
        "9b2e9a88ee451cb64c82c1204b3787868d571fc3d092cec9f53501");
    assert_int_equal(ds_env_pubkey_recover(sig, f.app_id, k.env_public_key, false, 0, signer), 0);
    assert_memory_equal(signer, pub, 33);
    assert_int_equal(
        ds_env_pubkey_sign(f.root_k256, f.app_id, k.env_public_key, true, 1700000000, sig), 0);
    helper_assert_hex_equal(
        sig, 65,
        "c0989e470967189e59d7b26238eadbda93b8591d6dd935d2457c16aaf8c8e6e37e73fba76f62"
        "11e04294ec61bc85cb788c793c745e179bff9e05b9d6d09ac1da00");
    assert_int_equal(
        ds_env_pubkey_recover(sig, f.app_id, k.env_public_key, true, 1700000000, signer), 0);
    assert_memory_equal(signer, pub, 33);
    /* Negative: another timestamp recovers someone else. */
    assert_int_equal(
        ds_env_pubkey_recover(sig, f.app_id, k.env_public_key, true, 1700000001, signer), 0);
    assert_memory_not_equal(signer, pub, 33);
    /* Freshness (SDK rule): at most max_age old, at most 60 s in the future. */
    const uint64_t ts = 1700000000, age = DS_ENV_PUBKEY_MAX_AGE_DEFAULT;
    assert_int_equal(ds_env_pubkey_check_time(ts, ts, age), 0);
    assert_int_equal(ds_env_pubkey_check_time(ts, ts + 300, age), 0);
    assert_int_equal(ds_env_pubkey_check_time(ts, ts + 301, age), -DS_E_EXPIRED);
    assert_int_equal(ds_env_pubkey_check_time(ts, ts - 60, age), 0);
    assert_int_equal(ds_env_pubkey_check_time(ts, ts - 61, age), -DS_E_EXPIRED);
    /* A wrong app id or public key recovers another signer. */
    uint8_t other_pub[32];
    memcpy(other_pub, k.env_public_key, 32);
    other_pub[0] ^= 1;
    assert_int_equal(ds_env_pubkey_recover(sig, f.app_id, other_pub, true, 1700000000, signer), 0);
    assert_memory_not_equal(signer, pub, 33);
    ds_wipe(&k, sizeof(k));
}

static void test_app_keys_instance_and_errors(void **state)
{
    (void)state;
    struct kms_fixture f;
    struct ds_app_keys a, b;
    uint8_t big[DS_INSTANCE_ID_MAX + 1] = {0};
    kms_fixture(&f);
    /* The disk key depends on instance_id; nothing else does. */
    assert_int_equal(
        ds_app_keys_from_roots(f.root_ca, f.root_k256, f.app_id, f.instance_id, 20, &a), 0);
    assert_int_equal(ds_app_keys_from_roots(f.root_ca, f.root_k256, f.app_id, NULL, 0, &b), 0);
    assert_memory_not_equal(a.disk_crypt_key, b.disk_crypt_key, 32);
    assert_memory_equal(a.env_crypt_key, b.env_crypt_key, 32);
    assert_memory_equal(a.k256_key, b.k256_key, 32);
    assert_memory_equal(a.k256_signature, b.k256_signature, 65);
    /* Invalid roots, oversize instance id. */
    uint8_t zero[32] = {0};
    assert_int_equal(ds_app_keys_from_roots(zero, f.root_k256, f.app_id, NULL, 0, &b),
                     -DS_E_FORMAT);
    assert_int_equal(ds_app_keys_from_roots(f.root_ca, zero, f.app_id, NULL, 0, &b), -DS_E_FORMAT);
    assert_int_equal(ds_app_keys_from_roots(f.root_ca, f.root_k256, f.app_id, big, sizeof(big), &b),
                     -DS_E_LIMIT);
    ds_wipe(&a, sizeof(a));
    ds_wipe(&b, sizeof(b));
}

static void test_seed_keys_vectors(void **state)
{
    (void)state;
    uint8_t seed[32], der[DS_P256_PKCS8_SIZE], sha[32];
    struct ds_seed_keys k;
    memset(seed, 0x55, 32);
    assert_int_equal(ds_app_keys_from_seed(seed, &k), 0);
    helper_assert_hex_equal(k.app_key, 32,
                            "e9211cc43528bb5d90a2ebc0e53d4f401817543c6a6285c7e6f9c167bf4a6f7f");
    helper_assert_hex_equal(k.disk_crypt_key, 32,
                            "3dbf898f2caceb8b0b1755ed4f1193737bb96847e2f48295ec7b0261a25ae93c");
    helper_assert_hex_equal(k.k256_key, 32,
                            "22c5d43689dc6f24505fdedc980bd18102881ce09e0e6e125fdc3e3a376c7f89");
    assert_int_equal(ds_p256_pkcs8_der(k.disk_key, der), 0);
    ds_sha256(der, sizeof(der), sha);
    assert_memory_equal(sha, k.disk_crypt_key, 32);
    ds_wipe(&k, sizeof(k));
}

static void test_keccak_selector(void **state)
{
    (void)state;
    const char *sig = "isAppAllowed((address,bytes32,address,bytes32,bytes32,bytes32,bytes32,"
                      "string,string[]))";
    uint8_t d[32];
    ds_keccak256(sig, strlen(sig), d);
    helper_assert_hex_equal(d, 4, "1e079198");
}

/* ---- guest agent (guest-agent-api.md §4.2-4.4) ----------------------------------------------- */

/* base64url without padding -> bytes. */
static void b64url(const char *s, uint8_t *out, size_t n)
{
    char buf[128];
    uint8_t *dec = NULL;
    size_t len = 0, i;
    for (i = 0; s[i] && i < sizeof(buf) - 1; i++)
        buf[i] = s[i] == '-' ? '+' : s[i] == '_' ? '/' : s[i];
    buf[i] = '\0';
    assert_int_equal(ds_base64_decode(buf, i, 64, &dec, &len), 0);
    assert_int_equal(len, n);
    memcpy(out, dec, n);
    free(dec);
}

static int get_key(const uint8_t *k256, const char *path, const char *purpose, const char *alg,
                   struct ds_get_key_result *r, struct ds_keys_error *err)
{
    return ds_guest_get_key(k256, NULL, 0, path, strlen(path), purpose, strlen(purpose), alg,
                            strlen(alg), r, err);
}

static void test_getkey_upstream_vector(void **state)
{
    (void)state;
    uint8_t k256[32], want[33];
    struct ds_get_key_result r, r2;
    helper_hex("1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b", k256, 32);
    assert_int_equal(get_key(k256, "vms", "", "ed25519", &r, NULL), 0);
    b64url("5Pbre1Amf1hrp2V2bbfKlIfxpQb2pJAmrgmhxgVoG9s", want, 32);
    assert_int_equal(r.pubkey_len, 32);
    assert_memory_equal(r.pubkey, want, 32);
    assert_int_equal(get_key(k256, "vms", "", "secp256k1", &r2, NULL), 0);
    b64url("A6t_JdVkVdMAocH3f1f20WGT6JzdntxcXimUtEax8zc9", want, 33);
    assert_int_equal(r2.pubkey_len, 33);
    assert_memory_equal(r2.pubkey, want, 33);
    /* The algorithm does not separate keys. */
    assert_memory_equal(r.key, r2.key, 32);
}

struct sim_keys {
    uint8_t k256_key[32], k256_sig[65], app_id[20];
};

static void sim_keys(struct sim_keys *s)
{
    helper_hex("d6e88992cdeeee35fe70b5db61ab66cdb191fb9b6ec9313757ef162dd7214d5d", s->k256_key, 32);
    helper_hex(
        "9e618603e72d01fedb82deff6daf2d62a572becf0059eec3f89c1ab40e1f2e594d2a283f843f34e8f39e4cc4"
        "9a612496ce67223a12ac923f8efe330346dfc6c500",
        s->k256_sig, 65);
    helper_hex("5bb4ff9a3837357f19dc176407a5709c62eb6c56", s->app_id, 20);
}

static void test_getkey_simulator_vectors(void **state)
{
    (void)state;
    struct sim_keys s;
    struct ds_get_key_result r;
    struct ds_key_chain_info info;
    uint8_t app_pub[33], kms_pub[33];
    sim_keys(&s);
    assert_int_equal(ds_k256_public(s.k256_key, app_pub), 0);
    helper_assert_hex_equal(app_pub, 33,
                            "02818494263695e8839122dbd88e281d7380622999df4e60a14befa0f2d096fc7c");
    helper_hex("0321529e458424ab1f710a3a57ec4dad2fb195ddca572f7469242ba6c7563085b6", kms_pub, 33);

    assert_int_equal(ds_guest_get_key(s.k256_key, s.k256_sig, 65, "/test/path", 10, "test-purpose",
                                      12, "", 0, &r, NULL),
                     0);
    helper_assert_hex_equal(r.key, 32,
                            "b9fbb7171185c421c58610a2acba8ceae93623ae47815618cbad1e98fc042cb7");
    assert_string_equal(r.pubkey_hex,
                        "02c1082e78670feed1c847db81dbd71be37e4d53200a746c0a89f0afa8173cf566");
    assert_int_equal(r.alg, DS_KEY_ALG_SECP256K1);
    /* RFC 6979 (libsecp256k1) gives noble's bytes. */
    helper_assert_hex_equal(
        r.signature, 65,
        "f50c51735a97072f0c98125ed61fc84e2fdb36e95990b9e57337dadc0e2a9712227f04e0720"
        "9faecb8891d59ec144a6c13e411dc90b3423f28071bd3fe11978d01");
    assert_int_equal(r.k256_signature_len, 65);
    assert_memory_equal(r.k256_signature, s.k256_sig, 65);

    /* The chain verifies to the simulator's KMS key. */
    assert_int_equal(ds_key_chain_verify(r.pubkey, r.pubkey_len, "test-purpose", 12, r.signature,
                                         s.app_id, r.k256_signature, kms_pub, &info),
                     0);
    assert_memory_equal(info.app_pubkey, app_pub, 33);
    assert_memory_equal(info.kms_pubkey, kms_pub, 33);
    /* Negative: a wrong purpose recovers a different app key, so the KMS key differs too. */
    assert_int_equal(ds_key_chain_verify(r.pubkey, r.pubkey_len, "other-purpose", 13, r.signature,
                                         s.app_id, r.k256_signature, NULL, &info),
                     0);
    assert_memory_not_equal(info.app_pubkey, app_pub, 33);
    assert_int_equal(ds_key_chain_verify(r.pubkey, r.pubkey_len, "other-purpose", 13, r.signature,
                                         s.app_id, r.k256_signature, kms_pub, &info),
                     -DS_E_MISMATCH);
    /* Another app id, another derived pubkey, a bad length. */
    uint8_t other_app[20];
    memset(other_app, 0x5b, 20);
    assert_int_equal(ds_key_chain_verify(r.pubkey, r.pubkey_len, "test-purpose", 12, r.signature,
                                         other_app, r.k256_signature, kms_pub, &info),
                     -DS_E_MISMATCH);
    uint8_t flipped[33];
    memcpy(flipped, r.pubkey, 33);
    flipped[32] ^= 1;
    assert_int_equal(ds_key_chain_verify(flipped, 33, "test-purpose", 12, r.signature, s.app_id,
                                         r.k256_signature, kms_pub, &info),
                     -DS_E_MISMATCH);
    assert_int_equal(ds_key_chain_verify(r.pubkey, 31, "test-purpose", 12, r.signature, s.app_id,
                                         r.k256_signature, kms_pub, &info),
                     -EINVAL);
    uint8_t badv[65];
    memcpy(badv, r.signature, 65);
    badv[64] = 5;
    assert_int_equal(ds_key_chain_verify(r.pubkey, 33, "test-purpose", 12, badv, s.app_id,
                                         r.k256_signature, kms_pub, &info),
                     -DS_E_FORMAT);

    static const struct {
        const char *path, *key;
    } paths[] = {
        {"", "aa221ae548b5a8f52fcb8687cfd873712f6a1232b2717e5ee3d58ab74f21905b"},
        {"/", "f6c1ed94488394d78e0a4e5ab75d62e9f085d73b0b555d0614fb90ca13d9464d"},
        {"vms", "1091a4d6721f6a719ca57320e4975f7e237649131111ee1c5032f661dc1cfef2"},
    };
    for (size_t i = 0; i < DS_ARRAY_SIZE(paths); i++) {
        assert_int_equal(get_key(s.k256_key, paths[i].path, "", "", &r, NULL), 0);
        helper_assert_hex_equal(r.key, 32, paths[i].key);
        assert_int_equal(r.k256_signature_len, 0);
    }
    assert_string_equal(r.pubkey_hex,
                        "036105f01d1fd781568f7c208b087b1c4f522601410ed7e9c7870d573de7c46d54");
    assert_int_equal(get_key(s.k256_key, "vms", "", "ed25519", &r, NULL), 0);
    assert_string_equal(r.pubkey_hex,
                        "698f56bd587d8ce3ca8db0e1c361ba9d190089f98dc4d9df800ff92ed073a65d");
    /* An ed25519 GetKey chain verifies the same way (pubkey_hex is 64 digits). */
    assert_int_equal(
        ds_guest_get_key(s.k256_key, s.k256_sig, 65, "vms", 3, "p", 1, "ed25519", 7, &r, NULL), 0);
    assert_int_equal(ds_key_chain_verify(r.pubkey, 32, "p", 1, r.signature, s.app_id,
                                         r.k256_signature, kms_pub, &info),
                     0);
    ds_wipe(&r, sizeof(r));
}

static void test_getkey_algorithms(void **state)
{
    (void)state;
    struct sim_keys s;
    struct ds_get_key_result a, b;
    struct ds_keys_error err;
    sim_keys(&s);
    assert_int_equal(get_key(s.k256_key, "p", "x", "secp256k1", &a, NULL), 0);
    assert_int_equal(get_key(s.k256_key, "p", "x", "k256", &b, NULL), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    assert_int_equal(get_key(s.k256_key, "p", "x", "", &b, NULL), 0);
    assert_memory_equal(&a, &b, sizeof(a));
    /* Unsupported names, secp256k1_prehashed included, are errors naming the algorithm. */
    const char *bad[] = {"secp256k1_prehashed", "rsa", "Ed25519", "secp256k1 "};
    for (size_t i = 0; i < DS_ARRAY_SIZE(bad); i++) {
        memset(&err, 0, sizeof(err));
        assert_int_equal(get_key(s.k256_key, "p", "x", bad[i], &b, &err), -DS_E_UNSUPPORTED);
        assert_string_equal(err.msg, "Unsupported algorithm");
        assert_string_equal(err.what, bad[i]);
    }
    /* Argument checks. */
    assert_int_equal(ds_guest_get_key(s.k256_key, s.k256_sig, 64, "p", 1, "x", 1, "", 0, &b, NULL),
                     -EINVAL);
    uint8_t zero[32] = {0};
    assert_int_equal(get_key(zero, "p", "x", "", &b, NULL), -DS_E_FORMAT);
}

/* s -> n - s for secp256k1 (flip a low-s signature to its high-s twin). */
static void k256_negate_s(uint8_t s[32])
{
    static const uint8_t n[32] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
                                  0xff, 0xff, 0xff, 0xff, 0xfe, 0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48,
                                  0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41};
    int borrow = 0;
    for (int i = 31; i >= 0; i--) {
        int d = n[i] - s[i] - borrow;
        borrow = d < 0;
        s[i] = (uint8_t)(d + (borrow ? 256 : 0));
    }
}

static void test_sign_verify(void **state)
{
    (void)state;
    struct sim_keys s;
    struct ds_sign_result r;
    struct ds_get_key_result key;
    bool valid;
    const uint8_t data[] = "test data";
    const size_t dlen = sizeof(data) - 1;
    uint8_t digest[32];
    sim_keys(&s);
    ds_sha256(data, dlen, digest);

    static const char *algs[] = {"ed25519", "secp256k1", "k256", "secp256k1_prehashed"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(algs); i++) {
        const char *alg = algs[i];
        bool pre = i == 3, ed = i == 0;
        const uint8_t *msg = pre ? digest : data;
        size_t mlen = pre ? 32 : dlen;
        memset(&r, 0, sizeof(r));
        assert_int_equal(
            ds_guest_sign(s.k256_key, s.k256_sig, 65, alg, strlen(alg), msg, mlen, &r, NULL), 0);
        assert_int_equal(r.signature_len, 64);
        assert_int_equal(r.public_key_len, ed ? 32 : 33);
        /* The key is GetKey("vms", "signing"); chain = [sig, sig0, k256_signature]. */
        assert_int_equal(ds_guest_get_key(s.k256_key, s.k256_sig, 65, "vms", 3, "signing", 7,
                                          ed ? "ed25519" : "secp256k1", ed ? 7 : 9, &key, NULL),
                         0);
        assert_memory_equal(r.public_key, key.pubkey, key.pubkey_len);
        assert_memory_equal(r.chain_sig0, key.signature, 65);
        assert_int_equal(r.k256_signature_len, 65);
        assert_memory_equal(r.k256_signature, s.k256_sig, 65);
        /* Independent check of the signature itself. */
        if (ed)
            assert_int_equal(ds_ed25519_verify(r.public_key, data, dlen, r.signature), 0);
        else
            assert_int_equal(ds_k256_verify(r.public_key, 33, digest, r.signature), 0);
        /* Verify: true, then false on other data. */
        assert_int_equal(ds_guest_verify(alg, strlen(alg), msg, mlen, r.signature, 64, r.public_key,
                                         r.public_key_len, &valid, NULL),
                         0);
        assert_true(valid);
        uint8_t other[32];
        memcpy(other, msg, mlen);
        other[0] ^= 1;
        assert_int_equal(ds_guest_verify(alg, strlen(alg), other, mlen, r.signature, 64,
                                         r.public_key, r.public_key_len, &valid, NULL),
                         0);
        assert_false(valid);
    }
    /* secp256k1 signing is RFC 6979: deterministic. */
    struct ds_sign_result r2;
    assert_int_equal(ds_guest_sign(s.k256_key, NULL, 0, "secp256k1", 9, data, dlen, &r, NULL), 0);
    assert_int_equal(ds_guest_sign(s.k256_key, NULL, 0, "k256", 4, data, dlen, &r2, NULL), 0);
    assert_memory_equal(r.signature, r2.signature, 64);
    assert_int_equal(r.k256_signature_len, 0);
    /* secp256k1 over SHA-256(data) equals prehashed over the digest. */
    assert_int_equal(
        ds_guest_sign(s.k256_key, NULL, 0, "secp256k1_prehashed", 19, digest, 32, &r2, NULL), 0);
    assert_memory_equal(r.signature, r2.signature, 64);

    /* High-s twin is accepted; uncompressed public key is accepted. */
    uint8_t high[64], pub65[65];
    memcpy(high, r.signature, 64);
    k256_negate_s(high + 32);
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, dlen, high, 64, r.public_key, 33, &valid, NULL), 0);
    assert_true(valid);
    assert_int_equal(
        ds_guest_get_key(s.k256_key, NULL, 0, "vms", 3, "signing", 7, "", 0, &key, NULL), 0);
    assert_int_equal(ds_k256_public_uncompressed(key.key, pub65), 0);
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, dlen, r.signature, 64, pub65, 65, &valid, NULL), 0);
    assert_true(valid);
    ds_wipe(&key, sizeof(key));
}

static void test_sign_verify_errors(void **state)
{
    (void)state;
    struct sim_keys s;
    struct ds_sign_result r, ed;
    struct ds_keys_error err;
    bool valid = true;
    const uint8_t data[] = "abc";
    sim_keys(&s);
    assert_int_equal(ds_guest_sign(s.k256_key, NULL, 0, "secp256k1", 9, data, 3, &r, NULL), 0);
    assert_int_equal(ds_guest_sign(s.k256_key, NULL, 0, "ed25519", 7, data, 3, &ed, NULL), 0);

    /* Unsupported algorithms: rsa, and "" (GetKey's default is not a Sign algorithm). */
    const char *bad[] = {"rsa", ""};
    for (size_t i = 0; i < 2; i++) {
        memset(&err, 0, sizeof(err));
        assert_int_equal(
            ds_guest_sign(s.k256_key, NULL, 0, bad[i], strlen(bad[i]), data, 3, &r, &err),
            -DS_E_UNSUPPORTED);
        assert_string_equal(err.msg, "Unsupported algorithm");
        assert_string_equal(err.what, bad[i]);
        memset(&err, 0, sizeof(err));
        assert_int_equal(ds_guest_verify(bad[i], strlen(bad[i]), data, 3, r.signature, 64,
                                         r.public_key, 33, &valid, &err),
                         -DS_E_UNSUPPORTED);
        assert_string_equal(err.what, bad[i]);
    }
    /* Pre-hashed with a wrong length. */
    memset(&err, 0, sizeof(err));
    assert_int_equal(
        ds_guest_sign(s.k256_key, NULL, 0, "secp256k1_prehashed", 19, data, 3, &r, &err),
        -DS_E_FORMAT);
    assert_string_equal(err.msg, "Pre-hashed signing requires a 32-byte digest, but received 3 "
                                 "bytes");
    assert_int_equal(ds_guest_verify("secp256k1_prehashed", 19, data, 3, r.signature, 64,
                                     r.public_key, 33, &valid, &err),
                     -DS_E_FORMAT);

    /* Ed25519: wrong public key / signature sizes. */
    assert_int_equal(
        ds_guest_verify("ed25519", 7, data, 3, ed.signature, 64, ed.public_key, 31, &valid, &err),
        -DS_E_FORMAT);
    assert_string_equal(err.what, "public_key");
    assert_int_equal(
        ds_guest_verify("ed25519", 7, data, 3, ed.signature, 63, ed.public_key, 32, &valid, &err),
        -DS_E_FORMAT);
    assert_string_equal(err.what, "signature");
    /* secp256k1: bad pubkey length, bad point, bad signature length, r = 0, s = n. */
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, 3, r.signature, 64, r.public_key, 32, &valid, &err),
        -DS_E_FORMAT);
    uint8_t badpub[33];
    memcpy(badpub, r.public_key, 33);
    badpub[0] = 0x05;
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, 3, r.signature, 64, badpub, 33, &valid, &err),
        -DS_E_FORMAT);
    assert_string_equal(err.what, "public_key");
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, 3, r.signature, 65, r.public_key, 33, &valid, &err),
        -DS_E_FORMAT);
    assert_string_equal(err.what, "signature");
    uint8_t sig[64];
    memcpy(sig, r.signature, 64);
    memset(sig, 0, 32);
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, 3, sig, 64, r.public_key, 33, &valid, &err),
        -DS_E_FORMAT);
    memcpy(sig, r.signature, 64);
    helper_hex("fffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141", sig + 32, 32);
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, 3, sig, 64, r.public_key, 33, &valid, &err),
        -DS_E_FORMAT);
    /* A well-formed but wrong signature is valid:false, not an error. */
    memcpy(sig, r.signature, 64);
    sig[63] ^= 1;
    assert_int_equal(
        ds_guest_verify("secp256k1", 9, data, 3, sig, 64, r.public_key, 33, &valid, &err), 0);
    assert_false(valid);
    uint8_t esig[64];
    memcpy(esig, ed.signature, 64);
    esig[0] ^= 1;
    valid = true;
    assert_int_equal(
        ds_guest_verify("ed25519", 7, data, 3, esig, 64, ed.public_key, 32, &valid, &err), 0);
    assert_false(valid);
}

static void test_tls_keys(void **state)
{
    (void)state;
    uint8_t k256[32], a[32], b[32], want[32];
    helper_hex("d6e88992cdeeee35fe70b5db61ab66cdb191fb9b6ec9313757ef162dd7214d5d", k256, 32);
    assert_int_equal(ds_guest_derive_tls_key(k256, "/", 1, a), 0);
    assert_int_equal(ds_hkdf_sha256("RATLS", 5, k256, 32, "/", 1, want, 32), 0);
    assert_memory_equal(a, want, 32);
    assert_true(ds_p256_scalar_valid(a));
    assert_int_equal(ds_guest_derive_tls_key(k256, "/", 1, b), 0);
    assert_memory_equal(a, b, 32); /* deterministic per path */
    assert_int_equal(ds_guest_derive_tls_key(k256, "/x", 2, b), 0);
    assert_memory_not_equal(a, b, 32);
    /* The legacy DeriveKey PEM carries that scalar. */
    char *pem = NULL;
    uint8_t back[32];
    assert_int_equal(ds_p256_pkcs8_pem(a, &pem, NULL), 0);
    assert_int_equal(ds_p256_scalar_from_pem(pem, strlen(pem), back), 0);
    assert_memory_equal(back, a, 32);
    ds_keys_free_secret(pem);
    /* Random keys differ per call. */
    assert_int_equal(ds_guest_random_tls_key(a), 0);
    assert_int_equal(ds_guest_random_tls_key(b), 0);
    assert_memory_not_equal(a, b, 32);
    assert_true(ds_p256_scalar_valid(a) && ds_p256_scalar_valid(b));
}

/*
 * GetKey and Sign against vectors made with @noble/curves + @noble/hashes
 * (tests/vectors/keys/gen-noble-vectors.cjs): keys, public keys and RFC 6979 signatures are
 * byte-equal, UTF-8 paths and purposes included.
 */
#define NOBLE_TSV      "vectors/keys/noble-getkey.tsv"
#define NOBLE_COLS     8
#define NOBLE_DATA_MAX 256

static size_t cell_bytes(const char *cell, uint8_t *out, size_t max)
{
    size_t n = strcmp(cell, "-") == 0 ? 0 : strlen(cell) / 2;
    assert_true(n <= max);
    if (n)
        assert_int_equal(ds_hex_decode(cell, 2 * n, out, n), (int)n);
    return n;
}

static void test_noble_vectors(void **state)
{
    (void)state;
    uint8_t *text = NULL;
    size_t len = 0, rows = 0, signs = 0;
    assert_int_equal(ds_read_file(NOBLE_TSV, 1 << 20, &text, &len), 0);
    char *save = NULL;
    for (char *line = strtok_r((char *)text, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        char *cols[NOBLE_COLS], *lsave = NULL;
        size_t c = 0;
        for (char *t = strtok_r(line, "\t", &lsave); t && c < NOBLE_COLS;
             t = strtok_r(NULL, "\t", &lsave))
            cols[c++] = t;
        assert_int_equal(c, NOBLE_COLS);
        uint8_t k256[32], a[NOBLE_DATA_MAX], b[NOBLE_DATA_MAX];
        helper_hex(cols[1], k256, 32);
        size_t alen = cell_bytes(cols[2], a, sizeof(a));
        size_t blen = cell_bytes(cols[3], b, sizeof(b));
        if (strcmp(cols[0], "getkey") == 0) {
            struct ds_get_key_result r;
            assert_int_equal(ds_guest_get_key(k256, NULL, 0, (const char *)a, alen, (const char *)b,
                                              blen, cols[4], strlen(cols[4]), &r, NULL),
                             0);
            helper_assert_hex_equal(r.key, 32, cols[5]);
            assert_string_equal(r.pubkey_hex, cols[6]);
            helper_assert_hex_equal(r.signature, 65, cols[7]);
            ds_wipe(&r, sizeof(r));
        } else {
            struct ds_sign_result r;
            bool valid = false;
            assert_int_equal(
                ds_guest_sign(k256, NULL, 0, cols[4], strlen(cols[4]), b, blen, &r, NULL), 0);
            helper_assert_hex_equal(r.public_key, r.public_key_len, cols[6]);
            helper_assert_hex_equal(r.signature, 64, cols[7]);
            assert_int_equal(ds_guest_verify(cols[4], strlen(cols[4]), b, blen, r.signature, 64,
                                             r.public_key, r.public_key_len, &valid, NULL),
                             0);
            assert_true(valid);
            signs++;
        }
        rows++;
    }
    assert_int_equal(rows, 138);
    assert_int_equal(signs, 18);
    free(text);
}

/* ---- .appkeys.json (§3.8) ----------------------------------------------------------------------
 */

static void test_appkeys_simulator_file(void **state)
{
    (void)state;
    struct ds_appkeys k, k2;
    struct ds_keys_error err;
    struct sim_keys s;
    uint8_t scalar[32], pub[64];
    sim_keys(&s);
    assert_int_equal(ds_appkeys_load(SIM_APPKEYS, &k, &err), 0);
    assert_int_equal(k.disk_crypt_key_len, 32);
    assert_int_equal(k.env_crypt_key_len, 32);
    assert_memory_equal(k.k256_key, s.k256_key, 32);
    assert_int_equal(k.k256_signature_len, 65);
    assert_memory_equal(k.k256_signature, s.k256_sig, 65);
    assert_string_equal(k.gateway_app_id, "any");
    assert_true(strncmp(k.ca_cert, "-----BEGIN CERTIFICATE-----\n", 28) == 0);
    assert_int_equal(k.provider, DS_KEY_PROVIDER_NONE);
    assert_non_null(k.key);
    assert_null(k.url);
    /* The None key is the CA key: its scalar's public key is the one inside the PEM. */
    assert_int_equal(ds_p256_scalar_from_pem(k.key, strlen(k.key), scalar), 0);
    helper_assert_hex_equal(scalar, 32,
                            "d4f60214a61f0e651fbf97e4b2da696ac7f898f1aa9f3d1f1282c49c6c7c0a72");
    assert_int_equal(ds_ec_public_from_private(DS_EC_P256, scalar, pub), 0);
    helper_assert_hex_equal(pub, 4, "19b2457d");
    /* Our PEM of that scalar is byte-identical to the file's. */
    char *pem = NULL;
    assert_int_equal(ds_p256_pkcs8_pem(scalar, &pem, NULL), 0);
    assert_string_equal(pem, k.key);
    ds_keys_free_secret(pem);

    /* Serialize -> parse -> same struct; save -> 0600 file -> load. */
    char *json = NULL;
    size_t len = 0;
    assert_int_equal(ds_appkeys_serialize(&k, &json, &len), 0);
    assert_true(strncmp(json, "{\"disk_crypt_key\":\"2cbc10cc", 27) == 0);
    assert_non_null(strstr(json, "\"key_provider\":{\"None\":{\"key\":\"-----BEGIN PRIVATE "
                                 "KEY-----\\nMIGH"));
    assert_int_equal(ds_appkeys_parse(json, len, &k2, &err), 0);
    assert_memory_equal(k2.k256_signature, k.k256_signature, 65);
    assert_string_equal(k2.ca_cert, k.ca_cert);
    assert_string_equal(k2.key, k.key);
    ds_appkeys_done(&k2);
    /* jansson agrees on the document. */
    json_error_t jerr;
    json_t *ours = json_loads(json, 0, &jerr), *file = json_load_file(SIM_APPKEYS, 0, &jerr);
    assert_non_null(ours);
    assert_non_null(file);
    assert_true(json_equal(ours, file));
    json_decref(ours);
    json_decref(file);
    ds_keys_free_secret(json);

    char path[] = "/tmp/test_keys_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(ds_appkeys_save(path, &k), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(ds_appkeys_load(path, &k2, &err), 0);
    assert_memory_equal(k2.disk_crypt_key, k.disk_crypt_key, 32);
    ds_appkeys_done(&k2);
    unlink(path);
    assert_int_equal(ds_appkeys_load("/nonexistent/appkeys.json", &k2, &err), -ENOENT);
    ds_appkeys_done(&k);
    ds_appkeys_done(&k); /* idempotent on a zeroed struct */
}

static void test_appkeys_providers_roundtrip(void **state)
{
    (void)state;
    static const char *docs[] = {
        "{\"disk_crypt_key\":\""
        "0101010101010101010101010101010101010101010101010101010101010101"
        "\",\"env_crypt_key\":\"\",\"k256_key\":\""
        "0202020202020202020202020202020202020202020202020202020202020202"
        "\",\"k256_signature\":\"\",\"gateway_app_id\":\"\",\"ca_cert\":"
        "\"C\\n\\\"q\\\"\\t\\u0001\","
        "\"key_provider\":{\"Local\":{\"key\":\"K\",\"mr\":\"aabb\"}}}",
        "{\"disk_crypt_key\":\""
        "0101010101010101010101010101010101010101010101010101010101010101"
        "\",\"env_crypt_key\":\"\",\"k256_key\":\""
        "0202020202020202020202020202020202020202020202020202020202020202"
        "\",\"k256_signature\":\"\",\"gateway_app_id\":\"g\",\"ca_cert\":\"C\","
        "\"key_provider\":{\"Tpm\":{\"key\":\"K\",\"pubkey\":\"00ff\"}}}",
        "{\"disk_crypt_key\":\""
        "0101010101010101010101010101010101010101010101010101010101010101"
        "\",\"env_crypt_key\":\""
        "0303030303030303030303030303030303030303030303030303030303030303"
        "\",\"k256_key\":\""
        "0202020202020202020202020202020202020202020202020202020202020202"
        "\",\"k256_signature\":\""
        "0404040404040404040404040404040404040404040404040404040404040404"
        "0404040404040404040404040404040404040404040404040404040404040404"
        "05"
        "\",\"gateway_app_id\":\"g\",\"ca_cert\":\"C\","
        "\"key_provider\":{\"Kms\":{\"url\":\"https://kms/prpc\",\"pubkey\":\"3059\","
        "\"tmp_ca_key\":\"TK\",\"tmp_ca_cert\":\"TC\"}}}",
    };
    static const enum ds_key_provider_kind kinds[] = {DS_KEY_PROVIDER_LOCAL, DS_KEY_PROVIDER_TPM,
                                                      DS_KEY_PROVIDER_KMS};
    for (size_t i = 0; i < DS_ARRAY_SIZE(docs); i++) {
        struct ds_appkeys k;
        struct ds_keys_error err;
        char *json = NULL;
        size_t len;
        assert_int_equal(ds_appkeys_parse(docs[i], strlen(docs[i]), &k, &err), 0);
        assert_int_equal(k.provider, kinds[i]);
        assert_int_equal(ds_appkeys_serialize(&k, &json, &len), 0);
        /* Our compact serialization with serde's escapes reproduces the input exactly. */
        assert_string_equal(json, docs[i]);
        ds_keys_free_secret(json);
        if (kinds[i] == DS_KEY_PROVIDER_KMS) {
            assert_string_equal(k.url, "https://kms/prpc");
            assert_int_equal(k.pubkey_len, 2);
            assert_string_equal(k.tmp_ca_key, "TK");
            assert_int_equal(k.k256_signature_len, 65);
            assert_null(k.key);
        } else if (kinds[i] == DS_KEY_PROVIDER_LOCAL) {
            assert_int_equal(k.mr_len, 2);
            assert_string_equal(k.ca_cert, "C\n\"q\"\t\x01");
        }
        ds_appkeys_done(&k);
    }
    /* Inconsistent structs are not serialized. */
    struct ds_appkeys k;
    char *json = NULL;
    memset(&k, 0, sizeof(k));
    assert_int_equal(ds_appkeys_serialize(&k, &json, NULL), -EINVAL);
    k.provider = DS_KEY_PROVIDER_KMS;
    k.disk_crypt_key_len = 32;
    char empty[1] = "";
    k.gateway_app_id = empty;
    k.ca_cert = empty;
    assert_int_equal(ds_appkeys_serialize(&k, &json, NULL), -EINVAL); /* no url */
    assert_null(json);
}

/* Take the simulator file, apply one edit, expect -DS_E_FORMAT naming `what`. */
static void expect_bad(json_t *doc, const char *what)
{
    struct ds_appkeys k;
    struct ds_keys_error err;
    char *text = json_dumps(doc, JSON_COMPACT);
    assert_non_null(text);
    memset(&err, 0, sizeof(err));
    int ret = ds_appkeys_parse(text, strlen(text), &k, &err);
    if (ret != -DS_E_FORMAT || strcmp(err.what, what) != 0)
        fail_msg("expected error at %s, got %d at '%s' (%s)", what, ret, err.what, err.msg);
    assert_non_null(strstr(err.msg, what));
    free(text);
    json_decref(doc);
}

static json_t *sim_doc(void)
{
    json_error_t jerr;
    json_t *doc = json_load_file(SIM_APPKEYS, 0, &jerr);
    assert_non_null(doc);
    return doc;
}

static json_t *kms_doc(void)
{
    json_t *doc = sim_doc();
    json_t *kms = json_pack("{s:{s:s,s:s,s:s,s:s}}", "Kms", "url", "https://kms/prpc", "pubkey",
                            "3059", "tmp_ca_key", "K", "tmp_ca_cert", "C");
    json_object_set_new(doc, "key_provider", kms);
    return doc;
}

static void test_appkeys_malformed(void **state)
{
    (void)state;
    json_t *d;
    static const char *required[] = {"disk_crypt_key", "k256_key", "k256_signature",
                                     "gateway_app_id", "ca_cert",  "key_provider"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(required); i++) {
        d = sim_doc();
        json_object_del(d, required[i]);
        expect_bad(d, required[i]);
        d = sim_doc();
        json_object_set_new(d, required[i], json_integer(1));
        expect_bad(d, required[i]);
    }
    /* env_crypt_key is optional, but must be good when present. */
    d = sim_doc();
    json_object_del(d, "env_crypt_key");
    char *t = json_dumps(d, 0);
    struct ds_appkeys k;
    assert_int_equal(ds_appkeys_parse(t, strlen(t), &k, NULL), 0);
    assert_int_equal(k.env_crypt_key_len, 0);
    ds_appkeys_done(&k);
    free(t);
    json_decref(d);
    d = sim_doc();
    json_object_set_new(d, "env_crypt_key", json_string("0011"));
    expect_bad(d, "env_crypt_key");
    /* Bad hex and wrong lengths. */
    d = sim_doc();
    json_object_set_new(d, "k256_key", json_string("zz"));
    expect_bad(d, "k256_key");
    d = sim_doc();
    json_object_set_new(d, "k256_key", json_string(""));
    expect_bad(d, "k256_key");
    d = sim_doc();
    json_object_set_new(d, "disk_crypt_key", json_string("abc"));
    expect_bad(d, "disk_crypt_key");
    d = sim_doc();
    json_object_set_new(
        d, "k256_signature",
        json_string("9e618603e72d01fedb82deff6daf2d62a572becf0059eec3f89c1ab40e1f2e59"
                    "4d2a283f843f34e8f39e4cc49a612496ce67223a12ac923f8efe330346dfc6"
                    "c5"));
    expect_bad(d, "k256_signature");
    d = sim_doc();
    json_object_set_new(d, "gateway_app_id", json_stringn("a\0b", 3));
    t = json_dumps(d, 0);
    struct ds_keys_error nul_err;
    assert_int_equal(ds_appkeys_parse(t, strlen(t), &k, &nul_err), -DS_E_FORMAT); /* NUL */
    assert_non_null(strstr(nul_err.msg, "\\u0000"));
    free(t);
    json_decref(d);
    /* key_provider shape. */
    d = sim_doc();
    json_object_set_new(d, "key_provider", json_string("None"));
    expect_bad(d, "key_provider");
    d = sim_doc();
    json_object_set_new(d, "key_provider", json_object());
    expect_bad(d, "key_provider");
    d = sim_doc();
    json_object_set_new(json_object_get(d, "key_provider"), "Local", json_object());
    expect_bad(d, "key_provider");
    d = sim_doc();
    json_object_set_new(d, "key_provider", json_pack("{s:{s:s}}", "Foo", "key", "K"));
    expect_bad(d, "key_provider.Foo");
    d = sim_doc();
    json_object_set_new(d, "key_provider", json_pack("{s:s}", "None", "K"));
    expect_bad(d, "key_provider.None");
    d = sim_doc();
    json_object_set_new(d, "key_provider", json_pack("{s:{}}", "None"));
    expect_bad(d, "key_provider.None.key");
    d = sim_doc();
    json_object_set_new(d, "key_provider", json_pack("{s:{s:s}}", "None", "key", ""));
    expect_bad(d, "key_provider.None.key");
    d = sim_doc();
    json_object_set_new(d, "key_provider", json_pack("{s:{s:s}}", "Local", "key", "K"));
    expect_bad(d, "key_provider.Local.mr");
    d = sim_doc();
    json_object_set_new(d, "key_provider",
                        json_pack("{s:{s:s,s:s}}", "Local", "key", "K", "mr", "0g"));
    expect_bad(d, "key_provider.Local.mr");
    d = sim_doc();
    json_object_set_new(d, "key_provider",
                        json_pack("{s:{s:s,s:i}}", "Tpm", "key", "K", "pubkey", 5));
    expect_bad(d, "key_provider.Tpm.pubkey");
    static const char *kms_fields[] = {"url", "pubkey", "tmp_ca_key", "tmp_ca_cert"};
    for (size_t i = 0; i < DS_ARRAY_SIZE(kms_fields); i++) {
        char what[64];
        snprintf(what, sizeof(what), "key_provider.Kms.%s", kms_fields[i]);
        d = kms_doc();
        json_object_del(json_object_get(json_object_get(d, "key_provider"), "Kms"), kms_fields[i]);
        expect_bad(d, what);
    }
    d = kms_doc();
    json_object_set_new(json_object_get(json_object_get(d, "key_provider"), "Kms"), "pubkey",
                        json_string("305"));
    expect_bad(d, "key_provider.Kms.pubkey");
    d = kms_doc();
    t = json_dumps(d, 0);
    assert_int_equal(ds_appkeys_parse(t, strlen(t), &k, NULL), 0);
    assert_int_equal(k.provider, DS_KEY_PROVIDER_KMS);
    ds_appkeys_done(&k);
    free(t);
    json_decref(d);
    /* Not JSON, not an object, duplicate keys, too large. */
    struct ds_keys_error err;
    assert_int_equal(ds_appkeys_parse("{", 1, &k, &err), -DS_E_FORMAT);
    assert_non_null(strstr(err.msg, "invalid JSON"));
    assert_int_equal(ds_appkeys_parse("[]", 2, &k, &err), -DS_E_FORMAT);
    assert_string_equal(err.what, "(root)");
    const char *dup = "{\"k256_key\":\"00\",\"k256_key\":\"00\"}";
    assert_int_equal(ds_appkeys_parse(dup, strlen(dup), &k, &err), -DS_E_FORMAT);
    assert_int_equal(ds_appkeys_parse("{}", DS_APPKEYS_FILE_MAX + 1, &k, &err), -DS_E_LIMIT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dh_secret_stable_output),
        cmocka_unit_test(test_kdf_is_hkdf_ratls),
        cmocka_unit_test(test_p256_range_check),
        cmocka_unit_test(test_pkcs8_pem),
        cmocka_unit_test(test_app_keys_vectors),
        cmocka_unit_test(test_app_keys_instance_and_errors),
        cmocka_unit_test(test_seed_keys_vectors),
        cmocka_unit_test(test_keccak_selector),
        cmocka_unit_test(test_getkey_upstream_vector),
        cmocka_unit_test(test_getkey_simulator_vectors),
        cmocka_unit_test(test_getkey_algorithms),
        cmocka_unit_test(test_sign_verify),
        cmocka_unit_test(test_sign_verify_errors),
        cmocka_unit_test(test_tls_keys),
        cmocka_unit_test(test_noble_vectors),
        cmocka_unit_test(test_appkeys_simulator_file),
        cmocka_unit_test(test_appkeys_providers_roundtrip),
        cmocka_unit_test(test_appkeys_malformed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
