/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Keccak-256 as Ethereum uses it: the Keccak[c=512] sponge with the original multi-rate
 * padding (first pad byte 0x01), not FIPS 202 SHA3-256 (0x06). It is written here because
 * OpenSSL 3.0 has no KECCAK-256 (the "KECCAK-256" EVP digest only arrived in 3.2); dstack
 * needs it for Ethereum addresses of secp256k1 keys and for the KMS on-chain authorization.
 * The permutation follows the Keccak reference (FIPS 202 section 3.2, steps theta, rho, pi,
 * chi, iota) in its compact in-place form.
 */
#include <string.h>

#include "dstack/crypto.h"

#define KECCAK_ROUNDS 24
/* Rate of Keccak-256 in bytes: (1600 - 2 * 256) / 8. */
#define KECCAK256_RATE 136

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

void ds_keccak256_init(struct ds_keccak *k)
{
    memset(k, 0, sizeof(*k));
}

void ds_keccak256_update(struct ds_keccak *k, const void *data, size_t len)
{
    const uint8_t *p = data;
    /* Finish a partly filled block byte by byte. */
    while (len > 0 && k->pos != 0) {
        xor_byte(k->st, k->pos++, *p++);
        len--;
        if (k->pos == KECCAK256_RATE) {
            keccak_f1600(k->st);
            k->pos = 0;
        }
    }
    /* Whole blocks a lane at a time. */
    while (len >= KECCAK256_RATE) {
        for (size_t i = 0; i < KECCAK256_RATE / 8; i++)
            k->st[i] ^= load64le(p + 8 * i);
        keccak_f1600(k->st);
        p += KECCAK256_RATE;
        len -= KECCAK256_RATE;
    }
    /* The tail starts a new block (pos is 0 here whenever len > 0). */
    while (len > 0) {
        xor_byte(k->st, k->pos++, *p++);
        len--;
    }
}

void ds_keccak256_final(struct ds_keccak *k, uint8_t out[DS_KECCAK256_LEN])
{
    /* pad10*1 with the Keccak domain byte 0x01; both bits may land in the same byte. */
    xor_byte(k->st, k->pos, 0x01);
    xor_byte(k->st, KECCAK256_RATE - 1, 0x80);
    keccak_f1600(k->st);
    for (size_t i = 0; i < DS_KECCAK256_LEN; i++)
        out[i] = (uint8_t)(k->st[i / 8] >> (8 * (i % 8)));
    /* The state may hold secret input (hashed private keys); leave nothing behind. */
    ds_wipe(k, sizeof(*k));
}

void ds_keccak256(const void *data, size_t len, uint8_t out[DS_KECCAK256_LEN])
{
    struct ds_keccak k;
    ds_keccak256_init(&k);
    ds_keccak256_update(&k, data, len);
    ds_keccak256_final(&k, out);
}
