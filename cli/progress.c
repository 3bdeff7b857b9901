/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Progress display (see progress.h): a spinner line rewritten with '\r' on a TTY, plain
 * "label: state (Ns)" lines on change otherwise. Control characters from server-provided state
 * strings are replaced so a hostile VMM cannot drive the terminal.
 */
#include <string.h>
#include <unistd.h>

#include "progress.h"

static const char *const spinner[] = {"|", "/", "-", "\\"};

double progress_elapsed(const struct progress *p)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (double)(now.tv_sec - p->start.tv_sec) + (double)(now.tv_nsec - p->start.tv_nsec) / 1e9;
}

void progress_begin(struct progress *p, const char *label, bool quiet)
{
    memset(p, 0, sizeof(*p));
    p->out = stderr;
    p->tty = isatty(fileno(stderr)) == 1;
    p->quiet = quiet;
    p->label = label;
    clock_gettime(CLOCK_MONOTONIC, &p->start);
    if (!p->quiet && !p->tty) {
        fprintf(p->out, "%s ...\n", label);
        fflush(p->out);
    }
}

/* Copy state with control and non-ASCII bytes replaced by '?'. */
static void clean_copy(char *dst, size_t size, const char *src)
{
    size_t i = 0;
    for (; src[i] != '\0' && i + 1 < size; i++) {
        unsigned char ch = (unsigned char)src[i];
        dst[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
    }
    dst[i] = '\0';
}

void progress_update(struct progress *p, const char *state)
{
    char clean[PROGRESS_STATE_MAX];
    clean_copy(clean, sizeof(clean), state ? state : "");
    bool changed = strcmp(clean, p->state) != 0;
    memcpy(p->state, clean, sizeof(clean));
    if (p->quiet) {
        return;
    }
    double t = progress_elapsed(p);
    if (p->tty) {
        int w = fprintf(p->out, "\r%s %s: %s (%.0fs)", spinner[p->frame++ % 4], p->label,
                        p->state[0] ? p->state : "...", t);
        /* Blank the rest of a longer previous line. */
        for (int i = w; w > 0 && (size_t)i < p->last_width; i++) {
            fputc(' ', p->out);
        }
        p->last_width = w > 0 ? (size_t)w : 0;
    } else if (changed) {
        fprintf(p->out, "%s: %s (%.0fs)\n", p->label, p->state[0] ? p->state : "...", t);
    }
    fflush(p->out);
}

void progress_end(struct progress *p, const char *result)
{
    char clean[PROGRESS_STATE_MAX];
    if (p->quiet) {
        return;
    }
    clean_copy(clean, sizeof(clean), result ? result : "");
    if (p->tty) {
        int w = fprintf(p->out, "\r%s: %s (%.0fs)", p->label, clean, progress_elapsed(p));
        for (int i = w; w > 0 && (size_t)i < p->last_width; i++) {
            fputc(' ', p->out);
        }
        fputc('\n', p->out);
    } else {
        fprintf(p->out, "%s: %s (%.0fs)\n", p->label, clean, progress_elapsed(p));
    }
    fflush(p->out);
}
