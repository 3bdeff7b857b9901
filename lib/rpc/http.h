/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to lib/rpc: the HTTP/1.1 request parser (head, chunked body), the response writer
 * and the input decoder, all pure functions over byte buffers so that the connection code in
 * server.c and the fuzz harnesses share exactly the same parsing path.
 */
#ifndef DSTACK_LIB_RPC_HTTP_H
#define DSTACK_LIB_RPC_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dstack/base.h"
#include "dstack/rpc.h"

#define RPC_CHUNK_LINE_MAX 1024 /* chunk-size line incl. extensions */
#define RPC_MSG_MAX        256  /* parser error texts */

enum rpc_http_method { RPC_HTTP_GET, RPC_HTTP_POST, RPC_HTTP_HEAD, RPC_HTTP_OTHER };

struct rpc_header {
    const char *name;
    const char *value;
};

/* A parsed request head. Strings point into `buf`, which the head owns. */
struct rpc_head {
    char *buf;
    enum rpc_http_method method;
    const char *method_str;
    const char *path;  /* target up to '?' */
    const char *query; /* after '?', "" when absent */
    int minor;         /* HTTP/1.<minor> */
    struct rpc_header *headers;
    size_t header_count;
    bool has_length;
    uint64_t content_length;
    bool chunked;
    bool keep_alive;
    bool expect_continue;
    const char *content_type; /* NULL when absent */
};

/*
 * Offset just past the empty line that ends a head in data[0..len), scanning lines from
 * `from` (a previous scan position, 0 at first); 0 when the head is not complete yet.
 * Lines end with LF, optionally preceded by CR.
 */
size_t rpc_head_find_end(const char *data, size_t len, size_t from);

/*
 * Parse a complete head (data[0..len) ends with the empty line). On failure returns
 * -DS_E_FORMAT / -DS_E_LIMIT / -DS_E_UNSUPPORTED / -ENOMEM with *out_status the HTTP status to
 * answer (400, 414, 431, 501) and *out_msg a static text.
 */
DS_MUST_USE int rpc_head_parse(const char *data, size_t len, const struct ds_rpc_limits *lim,
                               struct rpc_head *out, int *out_status, const char **out_msg);
void rpc_head_done(struct rpc_head *h);
/* Case-insensitive lookup of the first header called name. */
const char *rpc_head_header(const struct rpc_head *h, const char *name);

/* Incremental chunked transfer-coding decoder (RFC 9112 §7.1). */
enum rpc_chunk_state {
    RPC_CHUNK_SIZE,
    RPC_CHUNK_DATA,
    RPC_CHUNK_DATA_END,
    RPC_CHUNK_TRAILER,
    RPC_CHUNK_DONE
};
struct rpc_chunked {
    enum rpc_chunk_state state;
    uint64_t remaining;
    size_t trailer_size;
};

/*
 * Consume what can be consumed of data[0..len): chunk data goes to `out` (whose max is the
 * body limit). Returns the number of bytes consumed (possibly 0 when a line is incomplete),
 * -DS_E_FORMAT (malformed), or -DS_E_LIMIT (body or a line too long). Sets *done at the end.
 */
DS_MUST_USE int rpc_chunked_feed(struct rpc_chunked *c, const uint8_t *data, size_t len,
                                 size_t trailer_max, struct ds_buf *out, bool *done);

/* The reason phrase of a status ("Unknown" for codes we never send). */
const char *rpc_status_reason(int status);

/* What the decoder needs from a request. */
struct rpc_input {
    bool from_query; /* GET / HEAD */
    const char *query;
    size_t query_len;
    const char *content_type;
    const uint8_t *body;
    size_t body_len;
    bool no_params;
};

#define RPC_PROTOBUF_UNSUPPORTED                                                                   \
    "protobuf encoding is not supported; send JSON (Content-Type: application/json or ?json)"

/*
 * JSON mode (§2.2) and input decoding (§2.3, §2.4, §2.6). Returns 0 with *out a new JSON
 * object, -DS_E_UNSUPPORTED (protobuf mode), or -DS_E_FORMAT / -DS_E_LIMIT / -ENOMEM with a
 * message in msg (msg_size >= RPC_MSG_MAX).
 */
DS_MUST_USE int rpc_decode_input(const struct rpc_input *in, json_t **out, char *msg,
                                 size_t msg_size);
bool rpc_is_json_content_type(const char *ct);

/* Percent-decode src[0..len) into dst (at least len+1 bytes); '+' becomes ' ' when plus is
 * set; invalid escapes stay literal. Returns the decoded length (dst is NUL-terminated). */
size_t rpc_percent_decode(const char *src, size_t len, char *dst, bool plus);

/* Make s valid UTF-8 by replacing invalid bytes with '?', in place. */
void rpc_utf8_sanitize(char *s);

/*
 * Serve an already connected socket (fd owned) as if a listener of `site` had accepted it.
 * For the fuzz harness, which drives the whole connection state machine over a socketpair.
 */
DS_MUST_USE int rpc_server_adopt_fd(struct ds_rpc_server *s, int fd,
                                    const struct ds_rpc_site *site);

#endif /* DSTACK_LIB_RPC_HTTP_H */
