/* SPDX-License-Identifier: Apache-2.0 */
/*
 * A small pool of worker threads for the gateway's blocking work, so that the event loop (the
 * SNI proxy, /health, every RPC) never waits on it: RegisterCvm's attestation verification
 * (DCAP with a collateral fetch from the PCCS) and the auth webhook, and the calls to the
 * guest agent (certificate renewal, Info refresh). A job has two halves: `work` runs on a
 * worker thread and must touch only what the job owns (plus thread-safe objects), `done` runs
 * afterwards on the event-loop thread and may use everything there (registry, WireGuard,
 * routes, deferred RPC replies). Jobs start in submission order; at most GW_JOBS_PENDING_MAX
 * wait. Finished jobs are announced with event_active() on one event (libevent is made
 * thread-aware in main.c with evthread_use_pthreads).
 */
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "gw_ctl.h"

struct gw_job {
    struct gw_job *next;
    gw_job_work_fn work;
    gw_job_done_fn done;
    void *arg;
    bool ran;
};

struct gw_jobs {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct gw_job *pending_head, *pending_tail; /* guarded by mu */
    struct gw_job *done_head;                   /* guarded by mu */
    size_t pending_count;                       /* guarded by mu */
    bool stop;                                  /* guarded by mu */
    struct event *wake;
    pthread_t threads[GW_JOBS_MAX];
    unsigned thread_count;
    struct gw_worker_arg {
        struct gw_jobs *q;
        unsigned index;
    } args[GW_JOBS_MAX];
};

static void *worker_main(void *p)
{
    struct gw_worker_arg *wa = p;
    struct gw_jobs *q = wa->q;
    pthread_mutex_lock(&q->mu);
    for (;;) {
        while (!q->stop && !q->pending_head) {
            pthread_cond_wait(&q->cv, &q->mu);
        }
        if (q->stop) {
            break;
        }
        struct gw_job *j = q->pending_head;
        q->pending_head = j->next;
        if (!q->pending_head) {
            q->pending_tail = NULL;
        }
        q->pending_count--;
        pthread_mutex_unlock(&q->mu);
        j->work(j->arg, wa->index);
        j->ran = true;
        pthread_mutex_lock(&q->mu);
        j->next = q->done_head;
        q->done_head = j;
        event_active(q->wake, 0, 0);
    }
    pthread_mutex_unlock(&q->mu);
    return NULL;
}

/* Run the `done` halves of finished jobs, oldest first (loop thread). */
static void run_done(struct gw_jobs *q)
{
    pthread_mutex_lock(&q->mu);
    struct gw_job *list = q->done_head;
    q->done_head = NULL;
    pthread_mutex_unlock(&q->mu);
    struct gw_job *rev = NULL;
    while (list) {
        struct gw_job *n = list->next;
        list->next = rev;
        rev = list;
        list = n;
    }
    while (rev) {
        struct gw_job *n = rev->next;
        rev->done(rev->arg, rev->ran);
        free(rev);
        rev = n;
    }
}

static void on_wake(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    run_done(arg);
}

int gw_jobs_new(struct event_base *base, unsigned workers, struct gw_jobs **out)
{
    if (workers == 0 || workers > GW_JOBS_MAX) {
        return -EINVAL;
    }
    struct gw_jobs *q = calloc(1, sizeof(*q));
    if (!q) {
        return -ENOMEM;
    }
    pthread_mutex_init(&q->mu, NULL);
    pthread_cond_init(&q->cv, NULL);
    q->wake = event_new(base, -1, 0, on_wake, q);
    if (!q->wake) {
        gw_jobs_free(q);
        return -ENOMEM;
    }
    for (unsigned i = 0; i < workers; i++) {
        q->args[i].q = q;
        q->args[i].index = i;
        int r = pthread_create(&q->threads[i], NULL, worker_main, &q->args[i]);
        if (r != 0) {
            gw_jobs_free(q);
            return -r;
        }
        q->thread_count++;
    }
    *out = q;
    return 0;
}

int gw_jobs_submit(struct gw_jobs *q, gw_job_work_fn work, gw_job_done_fn done, void *arg)
{
    struct gw_job *j = calloc(1, sizeof(*j));
    if (!j) {
        return -ENOMEM;
    }
    j->work = work;
    j->done = done;
    j->arg = arg;
    pthread_mutex_lock(&q->mu);
    if (q->stop || q->pending_count >= GW_JOBS_PENDING_MAX) {
        pthread_mutex_unlock(&q->mu);
        free(j);
        return -EAGAIN;
    }
    if (q->pending_tail) {
        q->pending_tail->next = j;
    } else {
        q->pending_head = j;
    }
    q->pending_tail = j;
    q->pending_count++;
    pthread_cond_signal(&q->cv);
    pthread_mutex_unlock(&q->mu);
    return 0;
}

void gw_jobs_free(struct gw_jobs *q)
{
    if (!q) {
        return;
    }
    pthread_mutex_lock(&q->mu);
    q->stop = true;
    pthread_cond_broadcast(&q->cv);
    pthread_mutex_unlock(&q->mu);
    for (unsigned i = 0; i < q->thread_count; i++) {
        pthread_join(q->threads[i], NULL);
    }
    run_done(q);
    /* jobs that never started still get their `done` (ran = false) so they free their state */
    while (q->pending_head) {
        struct gw_job *j = q->pending_head;
        q->pending_head = j->next;
        j->done(j->arg, false);
        free(j);
    }
    if (q->wake) {
        event_free(q->wake);
    }
    pthread_cond_destroy(&q->cv);
    pthread_mutex_destroy(&q->mu);
    free(q);
}
