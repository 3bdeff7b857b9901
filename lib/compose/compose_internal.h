/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private helpers shared by the lib/compose files: loading JSON text with jansson under the
 * module's limits, and the two writers (Python json.dumps(indent=4, ensure_ascii=False) and the
 * SDK's sorted compact JS JSON.stringify) that compose_json.c implements over a json_t.
 */
#ifndef DSTACK_COMPOSE_INTERNAL_H
#define DSTACK_COMPOSE_INTERNAL_H

#include <jansson.h>

#include "dstack/compose.h"

/* Fill err (NULL-safe) with a field name and a printf-style message. */
void compose_set_err(struct ds_compose_error *err, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * Parse JSON text of at most DS_COMPOSE_FILE_MAX bytes. ints_as_real reads every number as a
 * double (the JS view). reject_dups refuses a repeated object key. Returns 0 and a new
 * reference; -DS_E_FORMAT (err->msg gets jansson's text) or -DS_E_LIMIT.
 */
DS_MUST_USE int compose_json_load(const void *json, size_t len, bool ints_as_real, bool reject_dups,
                                  json_t **out, struct ds_compose_error *err);

/* Append the value in Python's indent-4 layout / the SDK-normalised layout. 0, -DS_E_LIMIT
 * (nesting beyond DS_COMPOSE_JSON_DEPTH or the buffer maximum), -ENOMEM. */
DS_MUST_USE int compose_dump_python(const json_t *v, struct ds_buf *b);
DS_MUST_USE int compose_dump_sdk(const json_t *v, struct ds_buf *b);
/* Append a JSON string literal (escapes shared by Python ensure_ascii=False and JS). */
DS_MUST_USE int compose_dump_string(const char *s, size_t len, struct ds_buf *b);

/* true when s[0..len) is well-formed UTF-8 (no surrogates, no overlongs). */
bool compose_utf8_valid(const char *s, size_t len);

#endif /* DSTACK_COMPOSE_INTERNAL_H */
