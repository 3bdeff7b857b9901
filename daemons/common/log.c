/* SPDX-License-Identifier: Apache-2.0 */
/* stderr logger shared by the daemons and the CLI; see log.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"

static const char *log_progname = "dstack";
static int log_verbose;

void log_init(const char *progname, int verbose)
{
    log_progname = progname;
    log_verbose = verbose;
}

void log_set_verbose(int verbose)
{
    log_verbose = verbose;
}

static void vlog(const char *level, const char *fmt, va_list ap, const char *err)
{
    char ts[32];
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%dT%H:%M:%SZ", &tm);
    char msg[2048];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    if (err)
        fprintf(stderr, "%s %s %s: %s: %s\n", ts, log_progname, level, msg, err);
    else
        fprintf(stderr, "%s %s %s: %s\n", ts, log_progname, level, msg);
}

#define LOG_BODY(level, with_errno)                                                                \
    do {                                                                                           \
        const char *e = (with_errno) ? strerror(errno) : NULL;                                     \
        va_list ap;                                                                                \
        va_start(ap, fmt);                                                                         \
        vlog(level, fmt, ap, e);                                                                   \
        va_end(ap);                                                                                \
    } while (0)

void log_warn(const char *fmt, ...)
{
    LOG_BODY("warning", 1);
}

void log_warnx(const char *fmt, ...)
{
    LOG_BODY("warning", 0);
}

void log_info(const char *fmt, ...)
{
    LOG_BODY("info", 0);
}

void log_debug(const char *fmt, ...)
{
    if (log_verbose > 0)
        LOG_BODY("debug", 0);
}

void fatal(const char *fmt, ...)
{
    LOG_BODY("fatal", 1);
    exit(1);
}

void fatalx(const char *fmt, ...)
{
    LOG_BODY("fatal", 0);
    exit(1);
}
