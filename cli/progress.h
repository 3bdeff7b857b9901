/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Progress display for long CLI steps (waiting for a VM to boot, stop or disappear). On a
 * terminal stderr shows one self-rewriting line: a spinner, the step, its latest state and the
 * elapsed time. Otherwise (logs, CI) a plain line is printed each time the state changes, so
 * redirected output stays readable. Nothing goes to stdout, which carries the results.
 */
#ifndef DSTACK_CLI_PROGRESS_H
#define DSTACK_CLI_PROGRESS_H

#include <stdbool.h>
#include <stdio.h>
#include <time.h>

#define PROGRESS_STATE_MAX 128

struct progress {
    FILE *out;
    bool tty;
    bool quiet; /* print nothing (e.g. --json callers that want a clean stderr) */
    const char *label;
    struct timespec start;
    unsigned frame;
    size_t last_width;
    char state[PROGRESS_STATE_MAX];
};

/* Begin a step called label (borrowed for the life of p). quiet suppresses all output. */
void progress_begin(struct progress *p, const char *label, bool quiet);
/* Report the current state (e.g. the VM's boot_progress); redraws the spinner line. */
void progress_update(struct progress *p, const char *state);
/* End the step with a final word ("done", "failed: ..."), terminating the line. */
void progress_end(struct progress *p, const char *result);
/* Seconds since progress_begin. */
double progress_elapsed(const struct progress *p);

#endif /* DSTACK_CLI_PROGRESS_H */
