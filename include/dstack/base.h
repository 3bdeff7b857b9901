/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack base: error codes, the bounds-checked reader for untrusted bytes, the bounded
 * growable writer, hex/base64 codecs, secure wipe and constant-time compare. Everything else
 * in libdstack is built on these; no other module parses wire bytes by pointer arithmetic.
 *
 * Conventions (../shared/STYLE.md): fallible functions return int, 0 (or a count) on success
 * and a negative value on failure: -errno, or -DS_E_* (all above 4095). out_* parameters are
 * written only on success. Library code never logs.
 */
#ifndef DSTACK_BASE_H
#define DSTACK_BASE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DS_MUST_USE      __attribute__((warn_unused_result))
#define DS_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Domain error codes, returned negated. Keep in sync with ds_strerror(). */
enum ds_err {
    DS_E_BASE = 4096,
    DS_E_TRUNCATED,   /* input ended before a field was complete */
    DS_E_FORMAT,      /* input is malformed */
    DS_E_LIMIT,       /* a size limit was exceeded */
    DS_E_UNSUPPORTED, /* version, type or algorithm not supported */
    DS_E_CRYPTO,      /* a cryptographic primitive failed */
    DS_E_SIGNATURE,   /* a signature did not verify */
    DS_E_CERT,        /* certificate chain or CRL problem */
    DS_E_EXPIRED,     /* outside a validity window */
    DS_E_MISMATCH,    /* two values that must agree do not */
    DS_E_POLICY,      /* rejected by policy (debug, TCB status, simulation not allowed) */
    DS_E_NOT_FOUND,   /* a required item is absent */
    DS_E_IO,          /* I/O failed; errno-style detail in the caller's message */
    DS_E_NETWORK,     /* network request failed */
    DS_E_PROTOCOL,    /* peer spoke the protocol wrong */
    DS_E_DENIED,      /* authorization denied */
    DS_E_STATE,       /* operation not valid in the current state */
    DS_E_MAX
};

/* Message for a negative return value (domain code or -errno). Never NULL. */
const char *ds_strerror(int err);

#define DS_TRY(expr)                                                                               \
    do {                                                                                           \
        int ds_try_r_ = (expr);                                                                    \
        if (ds_try_r_ < 0)                                                                         \
            return ds_try_r_;                                                                      \
    } while (0)

#define DS_ENSURE(cond, err)                                                                       \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return (err);                                                                          \
    } while (0)

/* ---- secrets -------------------------------------------------------------------------------- */

/* Wipe memory in a way the compiler cannot elide (OPENSSL_cleanse). NULL-safe. */
void ds_wipe(void *p, size_t size);
/* Constant-time equality of two equal-length buffers: true when equal. */
bool ds_ct_equal(const void *a, const void *b, size_t size);
/* true when all size bytes are zero (constant time). */
bool ds_is_zero(const void *p, size_t size);

/* ---- reader --------------------------------------------------------------------------------- */

/*
 * A view over untrusted bytes. Every read checks n <= len - off (no overflow possible) and
 * does not advance on failure (returns -DS_E_TRUNCATED). The reader borrows the bytes.
 */
struct ds_reader {
    const uint8_t *data;
    size_t len;
    size_t off;
};

void ds_rd_init(struct ds_reader *r, const void *data, size_t len);
size_t ds_rd_left(const struct ds_reader *r);
/* Borrow n bytes: *out points into the reader's data. */
DS_MUST_USE int ds_rd_ptr(struct ds_reader *r, size_t n, const uint8_t **out);
DS_MUST_USE int ds_rd_copy(struct ds_reader *r, void *out, size_t n);
DS_MUST_USE int ds_rd_skip(struct ds_reader *r, size_t n);
DS_MUST_USE int ds_rd_u8(struct ds_reader *r, uint8_t *out);
DS_MUST_USE int ds_rd_u16le(struct ds_reader *r, uint16_t *out);
DS_MUST_USE int ds_rd_u32le(struct ds_reader *r, uint32_t *out);
DS_MUST_USE int ds_rd_u64le(struct ds_reader *r, uint64_t *out);
DS_MUST_USE int ds_rd_u16be(struct ds_reader *r, uint16_t *out);
DS_MUST_USE int ds_rd_u32be(struct ds_reader *r, uint32_t *out);
/* Split off a sub-reader of n bytes and advance past them. */
DS_MUST_USE int ds_rd_sub(struct ds_reader *r, size_t n, struct ds_reader *out);

/* ---- bounded growable buffer ---------------------------------------------------------------- */

/*
 * A growable byte buffer with a hard maximum (curl's dynbuf). Appends beyond max fail with
 * -DS_E_LIMIT and leave the buffer unchanged. The buffer keeps a NUL after len so text can be
 * used as a C string (the NUL is not counted). ds_buf_done() wipes before freeing when
 * `secret` is set.
 */
struct ds_buf {
    uint8_t *data;
    size_t len;
    size_t cap;
    size_t max;
    bool secret;
};

void ds_buf_init(struct ds_buf *b, size_t max);
void ds_buf_done(struct ds_buf *b);
void ds_buf_reset(struct ds_buf *b);
DS_MUST_USE int ds_buf_append(struct ds_buf *b, const void *p, size_t n);
DS_MUST_USE int ds_buf_append_str(struct ds_buf *b, const char *s);
DS_MUST_USE int ds_buf_printf(struct ds_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
DS_MUST_USE int ds_buf_u8(struct ds_buf *b, uint8_t v);
DS_MUST_USE int ds_buf_u16le(struct ds_buf *b, uint16_t v);
DS_MUST_USE int ds_buf_u32le(struct ds_buf *b, uint32_t v);
DS_MUST_USE int ds_buf_u64le(struct ds_buf *b, uint64_t v);
DS_MUST_USE int ds_buf_u32be(struct ds_buf *b, uint32_t v);
/* Take ownership of the bytes: *out gets the malloc'd data (NUL-terminated), b is reset. */
void ds_buf_steal(struct ds_buf *b, uint8_t **out, size_t *out_len);

/* ---- encodings ------------------------------------------------------------------------------ */

/* Lowercase hex of n bytes into out (2n+1 bytes, NUL-terminated). */
void ds_hex_encode(const void *in, size_t n, char *out);
/* malloc'd lowercase hex string; NULL on allocation failure. */
char *ds_hex_strdup(const void *in, size_t n);
/*
 * Decode hex text of exactly 2*out_size digits (either case; an optional "0x" prefix is
 * accepted) into out. Returns out_size or -DS_E_FORMAT.
 */
DS_MUST_USE int ds_hex_decode(const char *hex, size_t hex_len, void *out, size_t out_size);
/* Decode hex of any even length into a malloc'd buffer (max bytes max_size). */
DS_MUST_USE int ds_hex_decode_alloc(const char *hex, size_t hex_len, size_t max_size, uint8_t **out,
                                    size_t *out_len);

/* Value 0..15 of one hex digit (either case), or -1 when c is not a hex digit. */
int ds_hex_digit_value(int c);

/* Standard base64 with padding. Encode returns a malloc'd NUL-terminated string or NULL. */
char *ds_base64_encode(const void *in, size_t n);
/* Decode standard base64 (padding optional, no whitespace) into a malloc'd buffer. */
DS_MUST_USE int ds_base64_decode(const char *in, size_t in_len, size_t max_size, uint8_t **out,
                                 size_t *out_len);

/*
 * Append s[0..len) as a JSON string literal, quotes included, with RFC 8785 (JCS) escaping:
 * \" \\ \b \f \n \r \t, other bytes below 0x20 as \u00xx (lowercase hex), all other bytes
 * verbatim (no UTF-8 check: callers with untrusted text validate first). On failure b may hold
 * a partial literal. Returns 0 or -DS_E_LIMIT (b's maximum) / -ENOMEM.
 */
DS_MUST_USE int ds_json_append_string(struct ds_buf *b, const char *s, size_t len);

/*
 * malloc'd copy of p[0..n) into *out and n into *out_len (at least one byte is allocated, so
 * n = 0 still yields a pointer to free). Returns 0, -DS_E_LIMIT when n > max_size, or -ENOMEM;
 * the outputs are written only on success and the caller frees *out.
 */
DS_MUST_USE int ds_memdup(const void *p, size_t n, size_t max_size, uint8_t **out, size_t *out_len);

/* ---- files ---------------------------------------------------------------------------------- */

/* Read a whole file (at most max_size bytes, else -DS_E_LIMIT) into a malloc'd buffer. */
DS_MUST_USE int ds_read_file(const char *path, size_t max_size, uint8_t **out, size_t *out_len);
/*
 * Atomically replace path with data: write to a temp file in the same directory with `mode`,
 * fsync, rename, fsync the directory. On failure nothing at path changes.
 */
DS_MUST_USE int ds_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode);

#endif /* DSTACK_BASE_H */
