/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private helpers shared by the event-log sources (eventlog.c, eventlog_json.c,
 * runtime_event.c, appinfo.c): UTF-8 validation and the RFC 8785 / JSON string escaper used both
 * for the V2 runtime-event preimage and for the JSON serializer. Not part of the public API.
 */
#ifndef DS_ATTEST_EVENTLOG_PRIV_H
#define DS_ATTEST_EVENTLOG_PRIV_H

#include "dstack/base.h"

/* true when s[0..len) is well-formed UTF-8 (no overlongs, surrogates or code points > 0x10FFFF). */
bool ds_evl_utf8_valid(const char *s, size_t len);

/*
 * Append s as a JSON string literal (with the quotes) using RFC 8785 escaping: \" \\ \b \f \n
 * \r \t, other code points below 0x20 as \u00xx (lowercase hex), everything else raw; that is
 * ds_json_append_string() after checking that s is valid UTF-8 (else -DS_E_FORMAT, b
 * untouched). Returns 0, -DS_E_FORMAT or -DS_E_LIMIT.
 */
DS_MUST_USE int ds_evl_json_string(struct ds_buf *b, const char *s, size_t len);

/*
 * Allocate info's init_script_hashes / init_script_hash_lens for n entries (zeroed,
 * init_script_count unchanged), the shared first step of reading them from an event log
 * (appinfo.c) and from the RA-TLS app-info extension (lib/ratls/appinfo.c). n = 0 allocates
 * nothing. Returns 0, -DS_E_LIMIT when n > DS_APP_INFO_MAX_INIT_SCRIPTS, or -ENOMEM (the
 * arrays allocated so far stay in info for ds_app_info's destructor).
 */
struct ds_app_info;
DS_MUST_USE int ds_evl_app_info_alloc_init_scripts(struct ds_app_info *info, size_t n);

/* Append lowercase hex of n bytes. Returns 0 or -DS_E_LIMIT. */
DS_MUST_USE int ds_evl_hex(struct ds_buf *b, const uint8_t *p, size_t n);

#endif /* DS_ATTEST_EVENTLOG_PRIV_H */
