/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The verifier's cache of verified collateral and PCK chains. An entry is keyed by the
 * SHA-256 of the exact bytes it was verified from and records the window of times for which
 * every time check made during that verification holds, so a hit inside the window gives the
 * same verdict the full verification would; outside it the caller verifies in full again.
 * Two bounded tables (DS_ATTEST_CACHE_ENTRIES each) evict the least recently used entry and
 * free its OpenSSL objects.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "attest/verify_internal.h"

void ds_attest_window_init(struct ds_attest_window *w)
{
    w->lo = INT64_MIN;
    w->hi = INT64_MAX;
}

void ds_attest_window_narrow(struct ds_attest_window *w, int64_t lo, int64_t hi)
{
    if (lo > w->lo) {
        w->lo = lo;
    }
    if (hi < w->hi) {
        w->hi = hi;
    }
}

bool ds_attest_window_holds(const struct ds_attest_window *w, int64_t now)
{
    return now >= w->lo && now <= w->hi;
}

void ds_attest_coll_entry_free(struct ds_attest_coll_entry *e)
{
    if (!e) {
        return;
    }
    X509_STORE_free(e->store);
    X509_CRL_free(e->root_crl);
    X509_CRL_free(e->pck_crl);
    ds_attest_tcb_info_free(e->tcb);
    ds_attest_qe_identity_free(e->qe);
    free(e);
}

void ds_attest_cache_clear(struct ds_attest_cache *c)
{
    for (size_t i = 0; i < DS_ATTEST_CACHE_ENTRIES; i++) {
        ds_attest_coll_entry_free(c->coll[i]);
        c->coll[i] = NULL;
        free(c->pck[i]);
        c->pck[i] = NULL;
    }
}

struct ds_attest_coll_entry *ds_attest_cache_find_coll(struct ds_attest_cache *c,
                                                       const uint8_t key[32])
{
    for (size_t i = 0; i < DS_ATTEST_CACHE_ENTRIES; i++) {
        if (c->coll[i] && memcmp(c->coll[i]->key, key, 32) == 0) {
            c->coll[i]->used = ++c->tick;
            return c->coll[i];
        }
    }
    return NULL;
}

struct ds_attest_pck_entry *ds_attest_cache_find_pck(struct ds_attest_cache *c,
                                                     const uint8_t key[32])
{
    for (size_t i = 0; i < DS_ATTEST_CACHE_ENTRIES; i++) {
        if (c->pck[i] && memcmp(c->pck[i]->key, key, 32) == 0) {
            c->pck[i]->used = ++c->tick;
            return c->pck[i];
        }
    }
    return NULL;
}

/*
 * Slot for a new entry with this key: the slot holding the same key, else a free slot, else
 * the least recently used one. keys/used are read through accessors so both tables share it.
 */
static size_t pick_slot(void *const *slots, const uint8_t *(*key_of)(const void *),
                        uint64_t (*used_of)(const void *), const uint8_t key[32])
{
    size_t free_slot = DS_ATTEST_CACHE_ENTRIES, lru = 0;
    uint64_t lru_used = UINT64_MAX;
    for (size_t i = 0; i < DS_ATTEST_CACHE_ENTRIES; i++) {
        if (!slots[i]) {
            if (free_slot == DS_ATTEST_CACHE_ENTRIES) {
                free_slot = i;
            }
            continue;
        }
        if (memcmp(key_of(slots[i]), key, 32) == 0) {
            return i;
        }
        if (used_of(slots[i]) < lru_used) {
            lru_used = used_of(slots[i]);
            lru = i;
        }
    }
    return free_slot != DS_ATTEST_CACHE_ENTRIES ? free_slot : lru;
}

static const uint8_t *coll_key(const void *e)
{
    return ((const struct ds_attest_coll_entry *)e)->key;
}

static uint64_t coll_used(const void *e)
{
    return ((const struct ds_attest_coll_entry *)e)->used;
}

static const uint8_t *pck_key(const void *e)
{
    return ((const struct ds_attest_pck_entry *)e)->key;
}

static uint64_t pck_used(const void *e)
{
    return ((const struct ds_attest_pck_entry *)e)->used;
}

struct ds_attest_coll_entry *ds_attest_cache_put_coll(struct ds_attest_cache *c,
                                                      struct ds_attest_coll_entry **e)
{
    struct ds_attest_coll_entry *n = *e;
    size_t i = pick_slot((void *const *)c->coll, coll_key, coll_used, n->key);
    ds_attest_coll_entry_free(c->coll[i]);
    n->used = ++c->tick;
    c->coll[i] = n;
    *e = NULL;
    return n;
}

struct ds_attest_pck_entry *ds_attest_cache_put_pck(struct ds_attest_cache *c,
                                                    struct ds_attest_pck_entry **e)
{
    struct ds_attest_pck_entry *n = *e;
    size_t i = pick_slot((void *const *)c->pck, pck_key, pck_used, n->key);
    free(c->pck[i]);
    n->used = ++c->tick;
    c->pck[i] = n;
    *e = NULL;
    return n;
}
