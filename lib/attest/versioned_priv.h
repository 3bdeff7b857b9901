/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private helpers of the attestation container (versioned*.c) and lib/ratls: the SCALE
 * compact-integer codec and a pull reader for MessagePack over struct ds_reader. The
 * MessagePack reader exists because every untrusted byte goes through ds_reader (STYLE.md
 * rule 3) and because msgpack-c's unpacker allocates storage for a declared array/map count
 * before seeing its elements; this one never allocates more than the input can hold.
 * Encoding uses msgpack-c's packer. Not part of the public API.
 */
#ifndef DS_ATTEST_VERSIONED_PRIV_H
#define DS_ATTEST_VERSIONED_PRIV_H

#include <msgpack.h>

#include "dstack/versioned.h"

/* ---- SCALE ---------------------------------------------------------------------------------- */

/* Append a compact integer (canonical, shortest mode). Returns 0 or -DS_E_LIMIT. */
DS_MUST_USE int ds_scale_put_compact(struct ds_buf *b, uint64_t v);
/* Append compact length + bytes. */
DS_MUST_USE int ds_scale_put_bytes(struct ds_buf *b, const void *p, size_t n);
/* Read a compact integer; non-canonical forms are -DS_E_FORMAT, > 2^64-1 is -DS_E_LIMIT. */
DS_MUST_USE int ds_scale_get_compact(struct ds_reader *r, uint64_t *out);
/* Read a compact length (<= max and <= bytes left * min_item, else -DS_E_LIMIT / TRUNCATED). */
DS_MUST_USE int ds_scale_get_len(struct ds_reader *r, size_t max, size_t *out);
/* Borrow a Vec<u8> of at most max bytes. */
DS_MUST_USE int ds_scale_get_bytes(struct ds_reader *r, size_t max, const uint8_t **out,
                                   size_t *out_len);
/* A String as a malloc'd NUL-terminated copy: valid UTF-8 without NUL, at most max bytes. */
DS_MUST_USE int ds_scale_get_string(struct ds_reader *r, size_t max, char **out);

/* ---- MessagePack pull reader ---------------------------------------------------------------- */

#define DS_MP_MAX_DEPTH 16

/* Reads return -DS_E_TRUNCATED at the end of input and -DS_E_FORMAT for a different type;
 * they do not advance on failure. */
DS_MUST_USE int ds_mp_read_map(struct ds_reader *r, uint32_t *out_count);
DS_MUST_USE int ds_mp_read_array(struct ds_reader *r, uint32_t *out_count);
DS_MUST_USE int ds_mp_read_str(struct ds_reader *r, const uint8_t **out, size_t *out_len);
DS_MUST_USE int ds_mp_read_uint(struct ds_reader *r, uint64_t *out);
/* 1 when the next value is nil (consumed), 0 when it is something else (not consumed). */
DS_MUST_USE int ds_mp_read_nil(struct ds_reader *r);
/* A byte string as bin or as an array of integers 0..255; malloc'd (NULL when empty). */
DS_MUST_USE int ds_mp_read_bytes(struct ds_reader *r, size_t max, uint8_t **out, size_t *out_len);
/* Same into a fixed buffer: the length must be exactly n. */
DS_MUST_USE int ds_mp_read_fixed(struct ds_reader *r, uint8_t *out, size_t n);
/* A str as a malloc'd NUL-terminated copy (valid UTF-8, no NUL, at most max bytes). */
DS_MUST_USE int ds_mp_read_string(struct ds_reader *r, size_t max, char **out);
/* Skip one value of any supported type (nesting at most DS_MP_MAX_DEPTH). */
DS_MUST_USE int ds_mp_skip(struct ds_reader *r);
/* true when the str just read equals the NUL-terminated key. */
bool ds_mp_key_is(const uint8_t *s, size_t len, const char *key);

/* ---- MessagePack writing helpers (msgpack-c packer into an sbuffer) ------------------------- */

DS_MUST_USE int ds_mp_pack_str(msgpack_packer *pk, const char *s);
DS_MUST_USE int ds_mp_pack_bin(msgpack_packer *pk, const void *p, size_t n);
/* rmp-serde's form of a plain Vec<u8>: an array of integers. */
DS_MUST_USE int ds_mp_pack_int_array(msgpack_packer *pk, const uint8_t *p, size_t n);

/* ---- container internals shared by versioned.c / versioned_msgpack.c ------------------------- */

/* A new empty attestation (empty logs, config ""). */
DS_MUST_USE int ds_att_alloc(struct ds_attestation **out);
DS_MUST_USE int ds_att_decode_v1(const uint8_t *data, size_t len, struct ds_attestation **out);
DS_MUST_USE int ds_att_encode_v1(const struct ds_attestation *a, uint8_t **out, size_t *out_len);
/* Append a runtime event (name, payload, version) to a.runtime_events (digest computed). */
DS_MUST_USE int ds_att_add_runtime(struct ds_attestation *a, const char *name,
                                   const uint8_t *payload, size_t payload_len, uint32_t version);

/* Record a verification failure in res (ok=false, step, err, message) and return err. */
int ds_att_fail(struct ds_attestation_result *res, enum ds_att_step step, int err, const char *fmt,
                ...) __attribute__((format(printf, 4, 5)));

#endif /* DS_ATTEST_VERSIONED_PRIV_H */
