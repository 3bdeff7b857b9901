/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Logging for daemons and the CLI (never for lib/, which returns errors instead). OpenBSD
 * style: log_warn appends strerror(errno), log_warnx does not; fatal/fatalx log and exit(1).
 * Output goes to stderr with a timestamp and the program name; log_init() sets the name and
 * the verbosity (0 = warnings and info, 1 = debug). Key material is never passed here: log
 * fingerprints.
 */
#ifndef DSTACK_LOG_H
#define DSTACK_LOG_H

#include <stdarg.h>

void log_init(const char *progname, int verbose);
void log_set_verbose(int verbose);
void log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void fatal(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
void fatalx(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

#endif /* DSTACK_LOG_H */
