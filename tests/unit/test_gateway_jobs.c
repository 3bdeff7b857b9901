/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the gateway's worker pool (daemons/gateway/gw_jobs.c, compiled in here): the
 * `work` half runs on a worker thread (never the loop thread) while the loop keeps running,
 * `done` runs on the loop thread exactly once per job, in completion order; a full queue
 * refuses with -EAGAIN; freeing the pool lets running jobs finish and hands jobs that never
 * started to `done` with ran = false; bad worker counts are refused.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>

#include "../../daemons/gateway/gw_jobs.c"

#define JOBS_TEST_COUNT 64

struct tjob {
    pthread_t loop_thread;
    pthread_t work_thread;
    unsigned worker;
    bool worked, done, ran;
    unsigned sleep_ms;
    atomic_int *done_count;
    struct event_base *base;
    int expect;
};

static void tjob_work(void *arg, unsigned worker)
{
    struct tjob *j = arg;
    j->work_thread = pthread_self();
    j->worker = worker;
    if (j->sleep_ms) {
        usleep(j->sleep_ms * 1000);
    }
    j->worked = true;
}

static void tjob_done(void *arg, bool ran)
{
    struct tjob *j = arg;
    assert_true(pthread_equal(pthread_self(), j->loop_thread));
    assert_false(j->done);
    j->done = true;
    j->ran = ran;
    if (atomic_fetch_add(j->done_count, 1) + 1 == j->expect && j->base) {
        event_base_loopexit(j->base, NULL);
    }
}

static int setup(void **state)
{
    (void)state;
    return evthread_use_pthreads() == 0 ? 0 : -1;
}

static void test_jobs_run_off_loop(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct gw_jobs *q = NULL;
    static struct tjob jobs[JOBS_TEST_COUNT];
    atomic_int count = 0;
    assert_non_null(base);
    assert_int_equal(gw_jobs_new(base, 4, &q), 0);
    for (int i = 0; i < JOBS_TEST_COUNT; i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].loop_thread = pthread_self();
        jobs[i].done_count = &count;
        jobs[i].base = base;
        jobs[i].expect = JOBS_TEST_COUNT;
        jobs[i].sleep_ms = (unsigned)(i % 3);
        assert_int_equal(gw_jobs_submit(q, tjob_work, tjob_done, &jobs[i]), 0);
    }
    struct timeval limit = {10, 0};
    event_base_loopexit(base, &limit); /* safety net */
    event_base_dispatch(base);
    assert_int_equal(atomic_load(&count), JOBS_TEST_COUNT);
    for (int i = 0; i < JOBS_TEST_COUNT; i++) {
        assert_true(jobs[i].worked);
        assert_true(jobs[i].done);
        assert_true(jobs[i].ran);
        assert_true(jobs[i].worker < 4);
        assert_false(pthread_equal(jobs[i].work_thread, pthread_self()));
    }
    gw_jobs_free(q);
    event_base_free(base);
}

/* A slow job does not hold up the loop: a timer fires while it works. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    *(int *)arg += 1;
}

static void test_loop_not_blocked(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct gw_jobs *q = NULL;
    struct tjob j = {0};
    atomic_int count = 0;
    int ticks = 0;
    assert_int_equal(gw_jobs_new(base, 1, &q), 0);
    j.loop_thread = pthread_self();
    j.done_count = &count;
    j.base = base;
    j.expect = 1;
    j.sleep_ms = 300;
    struct event *tick = event_new(base, -1, EV_PERSIST, on_tick, &ticks);
    struct timeval tv = {0, 20000};
    assert_int_equal(event_add(tick, &tv), 0);
    assert_int_equal(gw_jobs_submit(q, tjob_work, tjob_done, &j), 0);
    event_base_dispatch(base);
    assert_true(j.done);
    assert_true(ticks >= 5); /* ~15 expected in 300 ms */
    event_free(tick);
    gw_jobs_free(q);
    event_base_free(base);
}

/* Queue limit and shutdown: one worker busy, GW_JOBS_PENDING_MAX waiting, one more refused;
 * freeing runs the busy job to its end and hands the waiting ones back with ran = false. */
static void test_limit_and_free(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct gw_jobs *q = NULL;
    static struct tjob jobs[GW_JOBS_PENDING_MAX + 2];
    atomic_int count = 0;
    assert_int_equal(gw_jobs_new(base, 1, &q), 0);
    for (size_t i = 0; i < DS_ARRAY_SIZE(jobs); i++) {
        memset(&jobs[i], 0, sizeof(jobs[i]));
        jobs[i].loop_thread = pthread_self();
        jobs[i].done_count = &count;
        jobs[i].expect = -1;
    }
    jobs[0].sleep_ms = 200;
    assert_int_equal(gw_jobs_submit(q, tjob_work, tjob_done, &jobs[0]), 0);
    usleep(50000); /* the worker has taken job 0 */
    for (size_t i = 1; i <= GW_JOBS_PENDING_MAX; i++) {
        assert_int_equal(gw_jobs_submit(q, tjob_work, tjob_done, &jobs[i]), 0);
    }
    assert_int_equal(gw_jobs_submit(q, tjob_work, tjob_done, &jobs[GW_JOBS_PENDING_MAX + 1]),
                     -EAGAIN);
    gw_jobs_free(q);
    assert_true(jobs[0].worked && jobs[0].done && jobs[0].ran);
    for (size_t i = 1; i <= GW_JOBS_PENDING_MAX; i++) {
        assert_true(jobs[i].done);
        assert_false(jobs[i].worked);
        assert_false(jobs[i].ran);
    }
    assert_false(jobs[GW_JOBS_PENDING_MAX + 1].done);
    assert_int_equal(atomic_load(&count), GW_JOBS_PENDING_MAX + 1);
    event_base_free(base);
}

static void test_bad_worker_count(void **state)
{
    (void)state;
    struct event_base *base = event_base_new();
    struct gw_jobs *q = (struct gw_jobs *)0x1;
    assert_int_equal(gw_jobs_new(base, 0, &q), -EINVAL);
    assert_int_equal(gw_jobs_new(base, GW_JOBS_MAX + 1, &q), -EINVAL);
    assert_ptr_equal(q, (struct gw_jobs *)0x1);
    gw_jobs_free(NULL);
    event_base_free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_jobs_run_off_loop),
        cmocka_unit_test(test_loop_not_blocked),
        cmocka_unit_test(test_limit_and_free),
        cmocka_unit_test(test_bad_worker_count),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
