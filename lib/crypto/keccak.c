/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Keccak-256 as Ethereum uses it: the Keccak[c=512] sponge with the original multi-rate
 * padding (first pad byte 0x01), not FIPS 202 SHA3-256 (0x06). It is written here because
 * OpenSSL 3.0 has no KECCAK-256 (the "KECCAK-256" EVP digest only arrived in 3.2); dstack
 * needs it for Ethereum addresses of secp256k1 keys and for the KMS on-chain authorization.
 * The same sponge with capacity 2 * digest size gives Keccak-384 (rate 104 bytes) and
 * Keccak-512 (rate 72 bytes), which the report-data hash algorithms "keccak384" and
 * "keccak512" of the guest API name (spec guest-agent-api.md §4.7).
 * The permutation follows the Keccak reference (FIPS 202 section 3.2, steps theta, rho, pi,
 * chi, iota) in its compact in-place form.
 */
#include <errno.h>
#include <string.h>

#include "dstack/crypto.h"

#define KECCAK_ROUNDS 24
/* State size in bytes; the rate of Keccak-n is (1600 - 2 * n) / 8 = 200 - 2 * digest bytes:
 * 136 for Keccak-256, 104 for Keccak-384, 72 for Keccak-512. */
#define KECCAK_STATE_SIZE 200

static const uint64_t keccak_rc[KECCAK_ROUNDS] = {
    0x0000000000000001ULL, 0x0000000000008082ULL, 0x800000000000808aULL, 0x8000000080008000ULL,
    0x000000000000808bULL, 0x0000000080000001ULL, 0x8000000080008081ULL, 0x8000000000008009ULL,
    0x000000000000008aULL, 0x0000000000000088ULL, 0x0000000080008009ULL, 0x000000008000000aULL,
    0x000000008000808bULL, 0x800000000000008bULL, 0x8000000000008089ULL, 0x8000000000008003ULL,
    0x8000000000008002ULL, 0x8000000000000080ULL, 0x000000000000800aULL, 0x800000008000000aULL,
    0x8000000080008081ULL, 0x8000000000008080ULL, 0x0000000080000001ULL, 0x8000000080008008ULL,
};

/* rho rotation offsets and pi lane order, walked along the pi cycle starting at lane 1. */
static const unsigned keccak_rotc[24] = {1,  3,  6,  10, 15, 21, 28, 36, 45, 55, 2,  14,
                                         27, 41, 56, 8,  25, 43, 62, 18, 39, 61, 20, 44};
static const unsigned keccak_piln[24] = {10, 7,  11, 17, 18, 3, 5,  16, 8,  21, 24, 4,
                                         15, 23, 19, 13, 12, 2, 20, 14, 22, 9,  6,  1};

static inline uint64_t rotl64(uint64_t x, unsigned n)
{
    return (x << n) | (x >> (64 - n));
}

static void keccak_f1600(uint64_t st[25])
{
    uint64_t bc[5];
    for (int round = 0; round < KECCAK_ROUNDS; round++) {
        /* theta */
        for (int i = 0; i < 5; i++)
            bc[i] = st[i] ^ st[i + 5] ^ st[i + 10] ^ st[i + 15] ^ st[i + 20];
        for (int i = 0; i < 5; i++) {
            uint64_t t = bc[(i + 4) % 5] ^ rotl64(bc[(i + 1) % 5], 1);
            for (int j = 0; j < 25; j += 5)
                st[j + i] ^= t;
        }
        /* rho and pi */
        uint64_t t = st[1];
        for (int i = 0; i < 24; i++) {
            unsigned j = keccak_piln[i];
            uint64_t tmp = st[j];
            st[j] = rotl64(t, keccak_rotc[i]);
            t = tmp;
        }
        /* chi */
        for (int j = 0; j < 25; j += 5) {
            for (int i = 0; i < 5; i++)
                bc[i] = st[j + i];
            for (int i = 0; i < 5; i++)
                st[j + i] ^= (~bc[(i + 1) % 5]) & bc[(i + 2) % 5];
        }
        /* iota */
        st[0] ^= keccak_rc[round];
    }
}

/* Lanes are little-endian (FIPS 202 section B.1), independent of the host byte order. */
static uint64_t load64le(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static inline void xor_byte(uint64_t st[25], size_t pos, uint8_t b)
{
    st[pos / 8] ^= (uint64_t)b << (8 * (pos % 8));
}

/* digest_len is one of the three supported sizes here. */
static void keccak_setup(struct ds_keccak *k, size_t digest_len)
{
    memset(k, 0, sizeof(*k));
    k->digest_len = digest_len;
    k->rate = KECCAK_STATE_SIZE - 2 * digest_len;
}

int ds_keccak_init(struct ds_keccak *k, size_t digest_len)
{
    if (digest_len != DS_KECCAK256_LEN && digest_len != DS_KECCAK384_LEN &&
        digest_len != DS_KECCAK512_LEN) {
        return -EINVAL;
    }
    keccak_setup(k, digest_len);
    return 0;
}

void ds_keccak_update(struct ds_keccak *k, const void *data, size_t len)
{
    const uint8_t *p = data;
    const size_t rate = k->rate;
    /* Finish a partly filled block byte by byte. */
    while (len > 0 && k->pos != 0) {
        xor_byte(k->st, k->pos++, *p++);
        len--;
        if (k->pos == rate) {
            keccak_f1600(k->st);
            k->pos = 0;
        }
    }
    /* Whole blocks a lane at a time (every rate is a multiple of 8). */
    while (len >= rate) {
        for (size_t i = 0; i < rate / 8; i++)
            k->st[i] ^= load64le(p + 8 * i);
        keccak_f1600(k->st);
        p += rate;
        len -= rate;
    }
    /* The tail starts a new block (pos is 0 here whenever len > 0). */
    while (len > 0) {
        xor_byte(k->st, k->pos++, *p++);
        len--;
    }
}

void ds_keccak_final(struct ds_keccak *k, uint8_t *out)
{
    /* pad10*1 with the Keccak domain byte 0x01; both bits may land in the same byte. The
     * digest (at most 64 bytes) is shorter than every rate: one squeeze suffices. */
    xor_byte(k->st, k->pos, 0x01);
    xor_byte(k->st, k->rate - 1, 0x80);
    keccak_f1600(k->st);
    for (size_t i = 0; i < k->digest_len; i++)
        out[i] = (uint8_t)(k->st[i / 8] >> (8 * (i % 8)));
    /* The state may hold secret input (hashed private keys); leave nothing behind. */
    ds_wipe(k, sizeof(*k));
}

void ds_keccak256_init(struct ds_keccak *k)
{
    keccak_setup(k, DS_KECCAK256_LEN);
}

void ds_keccak256_update(struct ds_keccak *k, const void *data, size_t len)
{
    ds_keccak_update(k, data, len);
}

void ds_keccak256_final(struct ds_keccak *k, uint8_t out[DS_KECCAK256_LEN])
{
    ds_keccak_final(k, out);
}

static void keccak_oneshot(size_t digest_len, const void *data, size_t len, uint8_t *out)
{
    struct ds_keccak k;
    keccak_setup(&k, digest_len);
    ds_keccak_update(&k, data, len);
    ds_keccak_final(&k, out);
}

void ds_keccak256(const void *data, size_t len, uint8_t out[DS_KECCAK256_LEN])
{
    keccak_oneshot(DS_KECCAK256_LEN, data, len, out);
}

void ds_keccak384(const void *data, size_t len, uint8_t out[DS_KECCAK384_LEN])
{
    keccak_oneshot(DS_KECCAK384_LEN, data, len, out);
}

void ds_keccak512(const void *data, size_t len, uint8_t out[DS_KECCAK512_LEN])
{
    keccak_oneshot(DS_KECCAK512_LEN, data, len, out);
}
