/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The TEE worker: one thread that owns the TEE provider and the evidence caches once the
 * agent serves. Quotes can take a long time on real hardware (configfs-tsm, a QGS round
 * trip), so every request that needs the TEE (quotes, attestations, RA-TLS certificates,
 * Info, EmitEvent, the dashboard) is decoded on the event-loop thread, handed here as a job
 * and answered later (lib/rpc deferred calls), while GetKey / Sign / Verify / Version and
 * connection handling go on. Jobs run one at a time, in arrival order, which also serializes
 * access to struct ds_tee (not thread-safe) and the Info cache. Finished jobs come back to the
 * event loop through a pipe; only the loop thread touches calls.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent.h"
#include "log.h"

#define JOBS_PENDING_MAX 256 /* beyond this new TEE requests are refused (400) */

struct agent_jobs {
    struct agent *a;
    pthread_t thread;
    bool thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct agent_job *pending_head, *pending_tail; /* guarded by mu */
    struct agent_job *done_head;                   /* guarded by mu */
    size_t pending_count;                          /* guarded by mu */
    bool stop;                                     /* guarded by mu */
    int pipe_rd, pipe_wr;
    struct event *ev;
};

static void job_free(struct agent_job *j)
{
    if (!j) {
        return;
    }
    agent_req_done(&j->req);
    json_decref(j->result);
    ds_buf_done(&j->html);
    free(j);
}

struct agent_job *agent_job_new(agent_job_fn fn)
{
    struct agent_job *j = calloc(1, sizeof(*j));
    if (j) {
        j->fn = fn;
        j->req.kind = AGENT_REQ_KIND_MAX; /* nothing decoded yet: agent_req_done is a no-op */
        ds_buf_init(&j->html, AGENT_HTML_MAX);
    }
    return j;
}

void agent_job_free(struct agent_job *j)
{
    job_free(j);
}

static void *worker_main(void *arg)
{
    struct agent_jobs *w = arg;
    for (;;) {
        pthread_mutex_lock(&w->mu);
        while (!w->pending_head && !w->stop) {
            pthread_cond_wait(&w->cv, &w->mu);
        }
        if (w->stop) {
            pthread_mutex_unlock(&w->mu);
            return NULL;
        }
        struct agent_job *j = w->pending_head;
        w->pending_head = j->next;
        if (!w->pending_head) {
            w->pending_tail = NULL;
        }
        w->pending_count--;
        pthread_mutex_unlock(&w->mu);

        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        j->rc = j->fn(w->a, j);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        log_debug("TEE job done in %.1f ms%s%s",
                  (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6,
                  j->rc < 0 ? ": " : "", j->rc < 0 ? j->msg : "");

        pthread_mutex_lock(&w->mu);
        j->next = w->done_head;
        w->done_head = j;
        pthread_mutex_unlock(&w->mu);
        /* Wake the loop; a full pipe already means a wake-up is pending. */
        ssize_t n;
        do {
            n = write(w->pipe_wr, "", 1);
        } while (n < 0 && errno == EINTR);
    }
}

/* Answer one finished job on the loop thread. */
static void job_reply(struct agent_job *j)
{
    if (j->rc < 0) {
        ds_rpc_call_reply_error(j->call, "%s", j->msg[0] ? j->msg : ds_strerror(j->rc));
    } else if (j->is_html) {
        ds_rpc_call_reply_raw(j->call, 200, "text/html; charset=utf-8", j->html.data, j->html.len);
    } else {
        ds_rpc_call_reply_json(j->call, j->result);
        j->result = NULL; /* stolen */
    }
    job_free(j);
}

static void on_done(evutil_socket_t fd, short what, void *arg)
{
    (void)what;
    struct agent_jobs *w = arg;
    char buf[64];
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    pthread_mutex_lock(&w->mu);
    struct agent_job *list = w->done_head;
    w->done_head = NULL;
    pthread_mutex_unlock(&w->mu);
    /* The list is newest first: reverse to answer in completion order. */
    struct agent_job *rev = NULL;
    while (list) {
        struct agent_job *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev) {
        struct agent_job *next = rev->next;
        job_reply(rev);
        rev = next;
    }
}

int agent_jobs_start(struct agent *a, struct event_base *base)
{
    struct agent_jobs *w = calloc(1, sizeof(*w));
    int fds[2];
    if (!w) {
        return -ENOMEM;
    }
    w->a = a;
    w->pipe_rd = w->pipe_wr = -1;
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    a->jobs = w;
    if (pipe2(fds, O_CLOEXEC | O_NONBLOCK) < 0) {
        return -errno;
    }
    w->pipe_rd = fds[0];
    w->pipe_wr = fds[1];
    w->ev = event_new(base, w->pipe_rd, EV_READ | EV_PERSIST, on_done, w);
    if (!w->ev || event_add(w->ev, NULL) < 0) {
        return -ENOMEM;
    }
    int r = pthread_create(&w->thread, NULL, worker_main, w);
    if (r != 0) {
        return -r;
    }
    w->thread_started = true;
    return 0;
}

void agent_jobs_stop(struct agent *a)
{
    struct agent_jobs *w = a->jobs;
    if (!w) {
        return;
    }
    if (w->thread_started) {
        pthread_mutex_lock(&w->mu);
        w->stop = true;
        pthread_cond_signal(&w->cv);
        pthread_mutex_unlock(&w->mu);
        pthread_join(w->thread, NULL); /* finishes the job in progress, if any */
    }
    /* Calls still waiting get an answer (discarded when their client is gone). */
    on_done(w->pipe_rd, 0, w);
    for (struct agent_job *j = w->pending_head, *next; j; j = next) {
        next = j->next;
        j->rc = -ECANCELED;
        snprintf(j->msg, sizeof(j->msg), "the agent is shutting down");
        job_reply(j);
    }
    if (w->ev) {
        event_free(w->ev);
    }
    if (w->pipe_rd >= 0) {
        close(w->pipe_rd);
    }
    if (w->pipe_wr >= 0) {
        close(w->pipe_wr);
    }
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
    a->jobs = NULL;
}

int agent_job_submit(struct agent *a, struct ds_rpc_call *call, struct agent_job *j)
{
    struct agent_jobs *w = a->jobs;
    j->call = call;
    if (!w) {
        /* No worker (start-up, --check): run inline and answer synchronously. */
        j->rc = j->fn(a, j);
        job_reply(j);
        return 0;
    }
    pthread_mutex_lock(&w->mu);
    if (w->pending_count >= JOBS_PENDING_MAX) {
        pthread_mutex_unlock(&w->mu);
        job_free(j);
        return ds_rpc_call_error(call, "too many TEE requests in progress; retry later");
    }
    j->next = NULL;
    if (w->pending_tail) {
        w->pending_tail->next = j;
    } else {
        w->pending_head = j;
    }
    w->pending_tail = j;
    w->pending_count++;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
    return DS_RPC_DEFERRED;
}
