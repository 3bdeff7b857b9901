/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The proxy's routing table: instance_id -> {app_id, WireGuard ip, latest handshake, live
 * connection count}. The control plane writes it (RegisterCvm, recycle, handshake refresh);
 * the proxy reads it once per connection to pick backends (spec host-side.md §4.2 step 5:
 * instance_id match, else the app's instances with a handshake younger than handshake_stale,
 * freshest first, top connect_top_n; connect_top_n = 0 picks one at random). A mutex makes it
 * safe to fill from another thread; lookups copy entries out so nothing is borrowed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/rand.h>

#include "gw_proxy.h"

#define GW_ROUTES_MAX 65536

struct gw_routes {
    pthread_mutex_t lock;
    struct gw_backend *v;
    size_t count, cap;
};

int gw_routes_new(struct gw_routes **out)
{
    struct gw_routes *rt = calloc(1, sizeof(*rt));
    if (rt == NULL) {
        return -ENOMEM;
    }
    pthread_mutex_init(&rt->lock, NULL);
    *out = rt;
    return 0;
}

void gw_routes_free(struct gw_routes *rt)
{
    if (rt == NULL) {
        return;
    }
    pthread_mutex_destroy(&rt->lock);
    free(rt->v);
    free(rt);
}

static bool valid_id(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > GW_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z'))) {
            return false;
        }
    }
    return true;
}

static bool valid_ip(const char *s)
{
    unsigned char buf[16];
    return strlen(s) <= GW_IP_TEXT_MAX &&
           (inet_pton(AF_INET, s, buf) == 1 || inet_pton(AF_INET6, s, buf) == 1);
}

static struct gw_backend *find(struct gw_routes *rt, const char *instance_id)
{
    for (size_t i = 0; i < rt->count; i++) {
        if (strcmp(rt->v[i].instance_id, instance_id) == 0) {
            return &rt->v[i];
        }
    }
    return NULL;
}

int gw_routes_set_instance(struct gw_routes *rt, const char *app_id, const char *instance_id,
                           const char *ip, int64_t last_handshake)
{
    if (!valid_id(app_id) || !valid_id(instance_id) || !valid_ip(ip)) {
        return -EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *b = find(rt, instance_id);
    if (b == NULL) {
        if (rt->count == rt->cap) {
            size_t cap = rt->cap ? rt->cap * 2 : 16;
            if (cap > GW_ROUTES_MAX) {
                rc = -ENOSPC;
                goto out;
            }
            struct gw_backend *nv = realloc(rt->v, cap * sizeof(*nv));
            if (nv == NULL) {
                rc = -ENOMEM;
                goto out;
            }
            rt->v = nv;
            rt->cap = cap;
        }
        b = &rt->v[rt->count++];
        memset(b, 0, sizeof(*b));
        strcpy(b->instance_id, instance_id);
    }
    strcpy(b->app_id, app_id);
    strcpy(b->ip, ip);
    b->last_handshake = last_handshake;
out:
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

int gw_routes_set_handshake(struct gw_routes *rt, const char *instance_id, int64_t last_handshake)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *b = find(rt, instance_id);
    if (b != NULL) {
        b->last_handshake = last_handshake;
        rc = 0;
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

int gw_routes_remove_instance(struct gw_routes *rt, const char *instance_id)
{
    int rc = -ENOENT;
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *b = find(rt, instance_id);
    if (b != NULL) {
        *b = rt->v[--rt->count];
        rc = 0;
    }
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

static int by_freshness(const void *a, const void *b)
{
    const struct gw_backend *x = a, *y = b;
    if (x->last_handshake != y->last_handshake) {
        return x->last_handshake > y->last_handshake ? -1 : 1;
    }
    return strcmp(x->instance_id, y->instance_id);
}

int gw_routes_lookup(struct gw_routes *rt, const char *id, int64_t now, int64_t stale_secs,
                     unsigned top_n, struct gw_backend *out, size_t max)
{
    if (id == NULL || out == NULL || max == 0) {
        return -EINVAL;
    }
    struct gw_backend cand[GW_ROUTES_LOOKUP_MAX];
    size_t n = 0;
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *b = find(rt, id);
    if (b != NULL) {
        out[0] = *b; /* an instance id names exactly that instance, healthy or not */
        pthread_mutex_unlock(&rt->lock);
        return 1;
    }
    for (size_t i = 0; i < rt->count; i++) {
        const struct gw_backend *e = &rt->v[i];
        if (strcmp(e->app_id, id) != 0) {
            continue;
        }
        if (stale_secs > 0 && (e->last_handshake <= 0 || now - e->last_handshake >= stale_secs)) {
            continue;
        }
        if (n < GW_ROUTES_LOOKUP_MAX) {
            cand[n++] = *e;
        } else {
            /* Keep the freshest GW_ROUTES_LOOKUP_MAX: replace the stalest if fresher. */
            size_t worst = 0;
            for (size_t k = 1; k < n; k++) {
                if (cand[k].last_handshake < cand[worst].last_handshake) {
                    worst = k;
                }
            }
            if (e->last_handshake > cand[worst].last_handshake) {
                cand[worst] = *e;
            }
        }
    }
    pthread_mutex_unlock(&rt->lock);
    if (n == 0) {
        return 0;
    }
    if (top_n == 0) {
        uint32_t r = 0;
        if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1) {
            r = (uint32_t)now;
        }
        out[0] = cand[r % n];
        return 1;
    }
    qsort(cand, n, sizeof(cand[0]), by_freshness);
    size_t k = n < top_n ? n : top_n;
    if (k > max) {
        k = max;
    }
    memcpy(out, cand, k * sizeof(cand[0]));
    return (int)k;
}

int gw_routes_list(struct gw_routes *rt, struct gw_backend *out, size_t max)
{
    pthread_mutex_lock(&rt->lock);
    size_t n = rt->count < max ? rt->count : max;
    if (n > 0) {
        memcpy(out, rt->v, n * sizeof(*out));
    }
    pthread_mutex_unlock(&rt->lock);
    return (int)n;
}

void gw_routes_conn_inc(struct gw_routes *rt, const char *instance_id)
{
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *b = find(rt, instance_id);
    if (b != NULL) {
        b->num_connections++;
    }
    pthread_mutex_unlock(&rt->lock);
}

void gw_routes_conn_dec(struct gw_routes *rt, const char *instance_id)
{
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *b = find(rt, instance_id);
    if (b != NULL && b->num_connections > 0) {
        b->num_connections--;
    }
    pthread_mutex_unlock(&rt->lock);
}

int gw_routes_conn_reserve(struct gw_routes *rt, const struct gw_backend *cand, size_t n,
                           uint32_t limit)
{
    if (cand == NULL || n == 0) {
        return -EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&rt->lock);
    if (limit > 0) {
        /* Re-read the counters under the lock: the copies in cand may be stale, and another
         * worker may be reserving for the same app right now. */
        uint64_t sum = 0;
        for (size_t i = 0; i < n; i++) {
            const struct gw_backend *b = find(rt, cand[i].instance_id);
            sum += b != NULL ? b->num_connections : 0;
        }
        if (sum >= limit) {
            rc = -DS_E_LIMIT;
            goto out;
        }
    }
    struct gw_backend *b = find(rt, cand[0].instance_id);
    if (b != NULL) {
        b->num_connections++;
    }
out:
    pthread_mutex_unlock(&rt->lock);
    return rc;
}

void gw_routes_conn_move(struct gw_routes *rt, const char *from_instance, const char *to_instance)
{
    if (strcmp(from_instance, to_instance) == 0) {
        return;
    }
    pthread_mutex_lock(&rt->lock);
    struct gw_backend *f = find(rt, from_instance), *t = find(rt, to_instance);
    if (f != NULL && f->num_connections > 0) {
        f->num_connections--;
    }
    if (t != NULL) {
        t->num_connections++;
    }
    pthread_mutex_unlock(&rt->lock);
}
