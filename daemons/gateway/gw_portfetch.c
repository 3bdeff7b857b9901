/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Background fetch of port policies (spec host-side.md §4.2 step 5, §4.7
 * [core.proxy.port_policy_fetch]): an instance that registered without `port_policy` (an
 * older guest) is denied until its policy is known; the first denied connection queues the
 * instance here. GW_PFETCH_WORKERS threads take the job that is due first, ask the CVM's
 * guest agent (POST http://<wg ip>:<agent_port>/prpc/Info?json, libcurl, bounded by the
 * attempt timeout and GW_AGENT_INFO_MAX) and read tcb_info.app_compose.port_policy
 * (gw_port_policy_from_agent_info). A transport failure or a non-2xx answer is retried with
 * exponential backoff (backoff_initial doubling to backoff_max) up to max_retries times; an
 * answer that does not parse is final. Outcomes go back to the event loop through a
 * socketpair and are handed to the owner's callback there, so the registry and the routing
 * table are only written from the loop's thread. Jobs are deduplicated per instance.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <event2/event.h>

#include "gw_proxy.h"
#include "log.h"

#define PF_URL_MAX 128
#define PF_ERR_MAX 256

struct pf_job {
    char instance_id[GW_ID_MAX + 1];
    char ip[GW_IP_TEXT_MAX + 1];
    unsigned attempts;
    uint64_t due_ms;
    bool busy;
};

struct pf_result {
    struct pf_result *next;
    char instance_id[GW_ID_MAX + 1];
    int rc;
    unsigned attempts;
    struct gw_port_policy policy;
    char err[PF_ERR_MAX];
};

struct gw_pfetch {
    struct gw_pfetch_config cfg;
    gw_pfetch_done_fn done;
    void *arg;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct pf_job *jobs;
    size_t njobs;
    struct pf_result *results, **results_tail;
    atomic_bool stop;
    pthread_t threads[GW_PFETCH_WORKERS];
    size_t nthreads;
    int sv[2]; /* sv[0]: event loop reads, sv[1]: workers write */
    struct event *ev;
};

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- one attempt ---------------------------------------------------------------------------- */

struct pf_body {
    struct ds_buf b;
    bool too_big;
};

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct pf_body *body = ud;
    if (ds_buf_append(&body->b, ptr, size * nmemb) < 0) {
        body->too_big = true;
        return 0;
    }
    return size * nmemb;
}

static int on_progress(void *ud, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
    (void)dt;
    (void)dn;
    (void)ut;
    (void)un;
    struct gw_pfetch *pf = ud;
    return atomic_load(&pf->stop) ? 1 : 0; /* non-zero aborts the transfer */
}

/* 0 = policy, -DS_E_NETWORK = worth retrying, -DS_E_FORMAT/-DS_E_LIMIT = final. */
static int attempt(struct gw_pfetch *pf, const struct pf_job *job, struct gw_port_policy *out,
                   char *err, size_t err_size)
{
    char url[PF_URL_MAX];
    struct pf_body body = {.too_big = false};
    struct curl_slist *hdr = NULL;
    long status = 0;
    int r = -ENOMEM;
    bool v6 = strchr(job->ip, ':') != NULL;
    snprintf(url, sizeof(url), v6 ? "http://[%s]:%u/prpc/Info?json" : "http://%s:%u/prpc/Info?json",
             job->ip, (unsigned)pf->cfg.agent_port);
    ds_buf_init(&body.b, GW_AGENT_INFO_MAX);
    CURL *h = curl_easy_init();
    hdr = curl_slist_append(NULL, "Content-Type: application/json");
    if (h == NULL || hdr == NULL) {
        snprintf(err, err_size, "out of memory");
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http");
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_NOPROXY, "*");
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)pf->cfg.timeout_ms);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, "{}");
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &body);
    curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
    curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(h, CURLOPT_XFERINFODATA, pf);
    CURLcode cc = curl_easy_perform(h);
    if (body.too_big) {
        snprintf(err, err_size, "agent Info answer larger than %d bytes", GW_AGENT_INFO_MAX);
        r = -DS_E_LIMIT;
        goto out;
    }
    if (cc != CURLE_OK) {
        snprintf(err, err_size, "agent Info at %s: %s", url, curl_easy_strerror(cc));
        r = -DS_E_NETWORK;
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status > 299) {
        snprintf(err, err_size, "agent Info at %s: HTTP %ld", url, status);
        r = -DS_E_NETWORK;
        goto out;
    }
    r = gw_port_policy_from_agent_info((const char *)body.b.data, body.b.len, out, err, err_size);
out:
    curl_slist_free_all(hdr);
    if (h != NULL) {
        curl_easy_cleanup(h);
    }
    ds_buf_done(&body.b);
    return r;
}

/* ---- workers -------------------------------------------------------------------------------- */

static uint64_t backoff_ms(const struct gw_pfetch_config *cfg, unsigned attempts)
{
    uint64_t d = cfg->backoff_initial_ms;
    for (unsigned i = 1; i < attempts && d < cfg->backoff_max_ms; i++) {
        d *= 2;
    }
    return d < cfg->backoff_max_ms ? d : cfg->backoff_max_ms;
}

/* Under the lock: hand an outcome to the event loop and drop the job. */
static void finish(struct gw_pfetch *pf, size_t i, int rc, const struct gw_port_policy *p,
                   const char *err)
{
    struct pf_result *res = calloc(1, sizeof(*res));
    if (res != NULL) {
        memcpy(res->instance_id, pf->jobs[i].instance_id, sizeof(res->instance_id));
        res->rc = rc;
        res->attempts = pf->jobs[i].attempts;
        if (p != NULL) {
            res->policy = *p;
        }
        snprintf(res->err, sizeof(res->err), "%s", err ? err : "");
        *pf->results_tail = res;
        pf->results_tail = &res->next;
        char one = 1;
        if (write(pf->sv[1], &one, 1) < 0) {
            /* the socket buffer is full: the loop has wake-ups pending anyway */
        }
    }
    pf->jobs[i] = pf->jobs[--pf->njobs];
}

static void *worker(void *arg)
{
    struct gw_pfetch *pf = arg;
    struct gw_port_policy *policy = malloc(sizeof(*policy));
    char err[PF_ERR_MAX];
    if (policy == NULL) {
        return NULL;
    }
    pthread_mutex_lock(&pf->lock);
    while (!atomic_load(&pf->stop)) {
        size_t best = SIZE_MAX;
        for (size_t i = 0; i < pf->njobs; i++) {
            if (!pf->jobs[i].busy &&
                (best == SIZE_MAX || pf->jobs[i].due_ms < pf->jobs[best].due_ms)) {
                best = i;
            }
        }
        uint64_t now = mono_ms();
        if (best == SIZE_MAX) {
            pthread_cond_wait(&pf->cond, &pf->lock);
            continue;
        }
        if (pf->jobs[best].due_ms > now) {
            uint64_t wait = pf->jobs[best].due_ms - now;
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += (time_t)(wait / 1000);
            ts.tv_nsec += (long)(wait % 1000) * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&pf->cond, &pf->lock, &ts);
            continue;
        }
        struct pf_job job = pf->jobs[best];
        pf->jobs[best].busy = true;
        pthread_mutex_unlock(&pf->lock);
        err[0] = '\0';
        int rc = attempt(pf, &job, policy, err, sizeof(err));
        pthread_mutex_lock(&pf->lock);
        /* the array may have moved: find the job again */
        size_t i;
        for (i = 0; i < pf->njobs && strcmp(pf->jobs[i].instance_id, job.instance_id) != 0; i++) {
        }
        if (i == pf->njobs || atomic_load(&pf->stop)) {
            continue;
        }
        pf->jobs[i].attempts++;
        if (rc == -DS_E_NETWORK && pf->jobs[i].attempts <= pf->cfg.max_retries) {
            uint64_t d = backoff_ms(&pf->cfg, pf->jobs[i].attempts);
            log_info("port policy fetch for instance %s failed (attempt %u, retry in %llu ms): %s",
                     job.instance_id, pf->jobs[i].attempts, (unsigned long long)d, err);
            pf->jobs[i].due_ms = mono_ms() + d;
            pf->jobs[i].busy = false;
            continue;
        }
        finish(pf, i, rc, rc == 0 ? policy : NULL, err);
    }
    pthread_mutex_unlock(&pf->lock);
    free(policy);
    return NULL;
}

/* ---- event loop side ------------------------------------------------------------------------ */

static void on_results(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct gw_pfetch *pf = arg;
    char buf[64];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    pthread_mutex_lock(&pf->lock);
    struct pf_result *list = pf->results;
    pf->results = NULL;
    pf->results_tail = &pf->results;
    pthread_mutex_unlock(&pf->lock);
    while (list != NULL) {
        struct pf_result *next = list->next;
        pf->done(list->instance_id, list->rc, list->rc == 0 ? &list->policy : NULL, list->attempts,
                 list->err, pf->arg);
        free(list);
        list = next;
    }
}

void gw_pfetch_request(struct gw_pfetch *pf, const char *instance_id, const char *ip)
{
    if (pf == NULL || strlen(instance_id) > GW_ID_MAX || strlen(ip) > GW_IP_TEXT_MAX) {
        return;
    }
    pthread_mutex_lock(&pf->lock);
    for (size_t i = 0; i < pf->njobs; i++) {
        if (strcmp(pf->jobs[i].instance_id, instance_id) == 0) {
            goto out; /* already queued or running */
        }
    }
    if (pf->njobs == GW_PFETCH_QUEUE_MAX) {
        goto out;
    }
    struct pf_job *j = &pf->jobs[pf->njobs++];
    memset(j, 0, sizeof(*j));
    strcpy(j->instance_id, instance_id);
    strcpy(j->ip, ip);
    j->due_ms = mono_ms();
    pthread_cond_signal(&pf->cond);
out:
    pthread_mutex_unlock(&pf->lock);
}

void gw_pfetch_hook(const char *instance_id, const char *ip, void *arg)
{
    gw_pfetch_request(arg, instance_id, ip);
}

int gw_pfetch_new(struct event_base *base, const struct gw_pfetch_config *cfg,
                  gw_pfetch_done_fn done, void *arg, struct gw_pfetch **out)
{
    if (base == NULL || cfg == NULL || done == NULL || cfg->agent_port == 0) {
        return -EINVAL;
    }
    struct gw_pfetch *pf = calloc(1, sizeof(*pf));
    if (pf == NULL) {
        return -ENOMEM;
    }
    int r = -ENOMEM;
    pf->cfg = *cfg;
    pf->done = done;
    pf->arg = arg;
    pf->sv[0] = pf->sv[1] = -1;
    pf->results_tail = &pf->results;
    pthread_mutex_init(&pf->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&pf->cond, &ca);
    pthread_condattr_destroy(&ca);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    pf->jobs = calloc(GW_PFETCH_QUEUE_MAX, sizeof(*pf->jobs));
    if (pf->jobs == NULL) {
        goto fail;
    }
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pf->sv) < 0) {
        r = -errno;
        goto fail;
    }
    pf->ev = event_new(base, pf->sv[0], EV_READ | EV_PERSIST, on_results, pf);
    if (pf->ev == NULL || event_add(pf->ev, NULL) < 0) {
        goto fail;
    }
    for (size_t i = 0; i < GW_PFETCH_WORKERS; i++) {
        int e = pthread_create(&pf->threads[i], NULL, worker, pf);
        if (e != 0) {
            r = -e;
            goto fail;
        }
        pf->nthreads++;
    }
    *out = pf;
    return 0;
fail:
    gw_pfetch_free(pf);
    return r;
}

void gw_pfetch_free(struct gw_pfetch *pf)
{
    if (pf == NULL) {
        return;
    }
    pthread_mutex_lock(&pf->lock);
    atomic_store(&pf->stop, true);
    pthread_cond_broadcast(&pf->cond);
    pthread_mutex_unlock(&pf->lock);
    for (size_t i = 0; i < pf->nthreads; i++) {
        pthread_join(pf->threads[i], NULL);
    }
    if (pf->ev != NULL) {
        event_free(pf->ev);
    }
    for (int i = 0; i < 2; i++) {
        if (pf->sv[i] >= 0) {
            close(pf->sv[i]);
        }
    }
    while (pf->results != NULL) {
        struct pf_result *next = pf->results->next;
        free(pf->results);
        pf->results = next;
    }
    pthread_cond_destroy(&pf->cond);
    pthread_mutex_destroy(&pf->lock);
    free(pf->jobs);
    free(pf);
    curl_global_cleanup();
}
