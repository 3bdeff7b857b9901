/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack rpc: the pRPC HTTP/1.1 server shared by the guest agent, KMS, VMM and gateway.
 * It runs on a caller-provided libevent event_base, listens on TCP (optionally TLS through
 * bufferevent_openssl), Unix sockets and inherited descriptors (systemd socket activation,
 * vsock), maps `<mount prefix><Method>` paths onto per-service method tables, decodes the
 * input (POST JSON body, or the GET query string with serde_qs rules) into a JSON object and
 * answers compact, ASCII-only JSON with a Content-Length on every response.
 * (spec/guest-agent-api.md §2, spec/host-side.md §0.)
 *
 * The HTTP/1.1 request parser is our own (lib/rpc/http.c), not evhttp: the SDK clients need
 * close-after-half-close (the JS SDK `end()`s its socket and waits for our FIN, §2.8), a
 * Content-Length on every response, and per-phase timeouts that drop slow clients without
 * blocking others; evhttp in libevent 2.1 does not give all of these.
 *
 * Wire rules implemented here (guest-agent-api.md §2):
 * - Routes: `GET|POST|HEAD <prefix><Method>` where <Method> is exactly one path segment
 *   (percent-decoded). Each mount strips its trim prefixes (e.g. "Tappd.") repeatedly from the
 *   segment, then looks the name up case-sensitively. Unknown name: HTTP 400
 *   `{"error": "Service not found: <Method>"}`. No route at all: 404 with the same error shape.
 * - JSON mode: GET/HEAD, or `?json` / `?json=` / `?json=1` / `?json=true`, or a Content-Type
 *   whose media type is application/json. Anything else is protobuf mode, which answers 400
 *   with a protobuf PrpcError (field 1 = message) "protobuf encoding is not supported; send
 *   JSON (Content-Type: application/json or ?json)".
 * - Input: POST body (empty body = `{}`), parsed as one JSON value which must be an object;
 *   GET takes the query string, decoded by ds_rpc_query_decode(). Methods flagged
 *   DS_RPC_NO_PARAMS (google.protobuf.Empty requests) never parse their input.
 * - Success: 200, Content-Type application/json, body json_dumps(JSON_COMPACT |
 *   JSON_ENSURE_ASCII | JSON_ENCODE_ANY). A NULL result is the literal `null`.
 * - Errors: 400, Content-Type application/json, body pretty-printed with a two-space indent
 *   `{\n  "error": "<message>"\n}` (ASCII only). Framing errors that make the rest of the
 *   stream unusable (bad request line, oversized header or body, timeouts) also close the
 *   connection: 400 (malformed or body over the limit, as upstream's pRPC layer answers),
 *   414 (request line), 431 (headers), 408 (timeout), 405 (method), 501 (transfer coding).
 * - Framing (§2.8): Content-Length on every response, never chunked; keep-alive for HTTP/1.1
 *   unless `Connection: close`; when the client half-closes, every request already received is
 *   answered and then the connection is closed; pipelined requests are answered in order;
 *   `Expect: 100-continue` is honoured; chunked request bodies are accepted.
 *
 * Threading: everything, including ds_rpc_call_reply_*() for deferred calls, runs on the
 * thread that runs the event_base. Library code never logs. The process must ignore SIGPIPE
 * (libevent writes with writev). Never free the server from inside a handler: stop the loop
 * (event_base_loopexit) and free it afterwards. Guide: docs/rpc.md.
 */
#ifndef DSTACK_RPC_H
#define DSTACK_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <jansson.h>
#include <openssl/ssl.h>

#include "dstack/base.h"

struct event_base;
struct ds_rpc_server;
struct ds_rpc_call;

/* ---- limits (defaults; each is configurable per server through struct ds_rpc_limits) ------- */

#define DS_RPC_REQUEST_LINE_MAX     (8 * 1024)        /* 414 beyond this */
#define DS_RPC_HEADER_SIZE_MAX      (16 * 1024)       /* request line + headers; 431 beyond */
#define DS_RPC_HEADER_COUNT_MAX     100               /* 431 beyond */
#define DS_RPC_BODY_SIZE_MAX        (2 * 1024 * 1024) /* 400 + close beyond (mounts may raise) */
#define DS_RPC_HEADER_TIMEOUT_MS    10000 /* first byte of a request to end of its headers */
#define DS_RPC_BODY_TIMEOUT_MS      30000 /* end of headers to end of body */
#define DS_RPC_IDLE_TIMEOUT_MS      10000 /* keep-alive idle (Rocket keep_alive = 10 s) */
#define DS_RPC_WRITE_TIMEOUT_MS     30000 /* a response must drain within this */
#define DS_RPC_CONNECTIONS_MAX      1024  /* beyond: 503 and close */
#define DS_RPC_QUERY_DEPTH_MAX      5     /* serde_qs max depth (§2.6) */
#define DS_RPC_QUERY_PAIRS_MAX      1024  /* key=value pairs per query string */
#define DS_RPC_QUERY_INDEX_MAX      4096  /* largest accepted list index a[N] */
#define DS_RPC_ERROR_MESSAGE_MAX    4096  /* error messages are truncated to this */
#define DS_RPC_RESPONSE_HEADERS_MAX 16    /* extra headers a call may add */

struct ds_rpc_limits {
    size_t request_line_max;
    size_t header_size_max;
    size_t header_count_max;
    size_t body_size_max; /* default for every method without its own limit */
    unsigned header_timeout_ms;
    unsigned body_timeout_ms;
    unsigned idle_timeout_ms;
    unsigned write_timeout_ms;
    unsigned connections_max;
};

/* Fill *l with the DS_RPC_* defaults above. */
void ds_rpc_limits_default(struct ds_rpc_limits *l);

/* ---- handlers -------------------------------------------------------------------------------- */

/* A handler returns this (positive) to say it will finish the call later with a reply. */
#define DS_RPC_DEFERRED 1

/*
 * A pRPC method. `params` is the decoded input object (borrowed, valid during the call; for
 * deferred calls it stays valid until the reply since the call owns it). On success return 0
 * and set *out_result to a new reference (NULL = reply `null`); the server steals it.
 * Return DS_RPC_DEFERRED to finish later with ds_rpc_call_reply_json() or
 * ds_rpc_call_reply_error(). Return a negative value for a 400 error: the message is the one
 * set with ds_rpc_call_error() or, if none was set, ds_strerror(return value).
 * A handler may also reply itself (any ds_rpc_call_reply_*) and return 0.
 */
typedef int (*ds_rpc_method_fn)(struct ds_rpc_call *call, const json_t *params, json_t **out_result,
                                void *ctx);

/*
 * A raw HTTP route (dashboard, /logs, /health, static files). Same return convention as a
 * method, except that on 0 the handler must have replied (ds_rpc_call_reply_raw() or _json());
 * if it did not, the server answers 500.
 */
typedef int (*ds_rpc_raw_fn)(struct ds_rpc_call *call, void *ctx);

/*
 * Called before dispatch of every request that matched a route (auth for VMM / gateway admin).
 * Return 0 to proceed. To refuse, reply (e.g. ds_rpc_call_reply_raw(call, 401, ...)) and
 * return a positive value; a negative value answers 400 like a handler error.
 */
typedef int (*ds_rpc_filter_fn)(struct ds_rpc_call *call, void *ctx);

/* Method flags. */
#define DS_RPC_NO_PARAMS 0x1u /* request type is google.protobuf.Empty: never parse the input */

struct ds_rpc_method {
    const char *name; /* proto method name, CamelCase, matched case-sensitively */
    ds_rpc_method_fn fn;
    unsigned flags;       /* DS_RPC_NO_PARAMS */
    size_t body_size_max; /* 0 = the server's limit */
};

/* A pRPC service: a method table. Usually a static const array. */
struct ds_rpc_service {
    const char *name; /* "DstackGuest", "Tappd", "Vmm", "KMS" (informational) */
    const struct ds_rpc_method *methods;
    size_t method_count;
};

#define DS_RPC_TRIMS_MAX 4

/*
 * A service mounted at a path prefix. `prefix` starts and ends with '/': "/" for dstack.sock,
 * "/prpc/" for tappd, KMS, VMM and gateway, "/api/" for the guest API. Each non-NULL entry of
 * `trim` is stripped repeatedly from the front of the method segment before the lookup:
 * tappd uses {"Tappd."}, the VMM {"Teepod.", "Vmm."}, KMS {"KMS."}.
 */
struct ds_rpc_mount {
    const char *prefix;
    const char *trim[DS_RPC_TRIMS_MAX];
    const struct ds_rpc_service *service;
};

/* HTTP methods a raw route accepts (bit mask). HEAD is served by the GET handler. */
#define DS_RPC_HTTP_GET  0x1u
#define DS_RPC_HTTP_POST 0x2u

struct ds_rpc_route {
    const char *path; /* exact path; if it ends with '/' (and is not "/"), a prefix */
    unsigned methods; /* DS_RPC_HTTP_* */
    ds_rpc_raw_fn fn;
};

/*
 * Everything one listener serves. Borrowed by the server: it (and the tables it points to)
 * must outlive the server. Raw routes are tried before mounts, in order; then mounts in order.
 */
struct ds_rpc_site {
    const struct ds_rpc_mount *mounts;
    size_t mount_count;
    const struct ds_rpc_route *routes;
    size_t route_count;
    /* Extra response headers on every response of this site, "Name: value" strings,
     * terminated by NULL (e.g. "X-App-Version: v0.1.0 (git:...)"). May be NULL. */
    const char *const *headers;
    ds_rpc_filter_fn filter; /* may be NULL */
    void *ctx;               /* passed to every handler and the filter */
};

/* ---- server ---------------------------------------------------------------------------------- */

/*
 * Create a server on `base` (borrowed; must outlive the server). limits may be NULL for the
 * defaults. Returns 0 and *out_server, or -ENOMEM / -EINVAL.
 */
DS_MUST_USE int ds_rpc_server_new(struct event_base *base, const struct ds_rpc_limits *limits,
                                  struct ds_rpc_server **out_server);

/*
 * Close every listener and connection and free the server. Calls still deferred become
 * orphaned: they stay valid until their handler replies, and the reply is discarded. Unix
 * socket files created by ds_rpc_server_listen_unix() are removed. NULL-safe.
 */
void ds_rpc_server_free(struct ds_rpc_server *s);

/*
 * Listen on TCP `addr` (IPv4 or IPv6 literal, or NULL for 0.0.0.0) and `port` (0 = pick one).
 * With `tls` (an SSL_CTX the caller configured: certificate, key, verify mode; the server
 * takes a reference) connections speak TLS; the peer certificate is then available to
 * handlers through ds_rpc_call_peer_cert(). *out_port (may be NULL) gets the bound port.
 * Returns 0, -EINVAL (bad address), or -errno from socket/bind/listen.
 */
DS_MUST_USE int ds_rpc_server_listen_tcp(struct ds_rpc_server *s, const char *addr, uint16_t port,
                                         const struct ds_rpc_site *site, SSL_CTX *tls,
                                         uint16_t *out_port);

/*
 * Listen on a Unix socket at `path`. A stale socket file at the path is removed first (only
 * if it is a socket); the new socket gets `mode` (e.g. 0777 for dstack.sock, 0600 for
 * private ones). Peer credentials (SO_PEERCRED) are recorded for every connection.
 * Returns 0, -ENAMETOOLONG, -EEXIST (path exists and is not a socket) or -errno.
 */
DS_MUST_USE int ds_rpc_server_listen_unix(struct ds_rpc_server *s, const char *path, unsigned mode,
                                          const struct ds_rpc_site *site);

/*
 * Serve an already listening socket (systemd LISTEN_FDS, vsock). The server takes ownership
 * of fd (closed on free, also on failure). tls may be NULL. Returns 0 or -errno.
 */
DS_MUST_USE int ds_rpc_server_listen_fd(struct ds_rpc_server *s, int fd,
                                        const struct ds_rpc_site *site, SSL_CTX *tls);

/* Number of open connections (for tests and metrics). */
size_t ds_rpc_server_connection_count(const struct ds_rpc_server *s);

/* ---- calls: request accessors (all borrowed, valid until the call is finished) -------------- */

enum ds_rpc_transport { DS_RPC_TRANSPORT_UNIX, DS_RPC_TRANSPORT_TCP, DS_RPC_TRANSPORT_OTHER };

struct ds_rpc_peer {
    enum ds_rpc_transport transport;
    bool tls;
    /* Unix sockets: SO_PEERCRED (recorded, never used for authorization by the library). */
    bool has_cred;
    pid_t pid;
    uid_t uid;
    gid_t gid;
    /* getpeername() result (TCP, vsock); addr_len 0 when unknown. */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    /* "1.2.3.4:5678", "[::1]:5678", "vsock:3:1234", "unix" or "" */
    char name[64];
};

const struct ds_rpc_peer *ds_rpc_call_peer(const struct ds_rpc_call *call);
/* TLS peer certificate (borrowed; NULL without TLS or when the client sent none). */
X509 *ds_rpc_call_peer_cert(const struct ds_rpc_call *call);
/* The certificates the peer sent besides its leaf (on the server side OpenSSL leaves the leaf
 * out of this stack; borrowed; may be NULL). */
STACK_OF(X509) * ds_rpc_call_peer_chain(const struct ds_rpc_call *call);
/* "GET", "POST" or "HEAD". */
const char *ds_rpc_call_http_method(const struct ds_rpc_call *call);
/* The request path without the query, as sent (not percent-decoded). */
const char *ds_rpc_call_path(const struct ds_rpc_call *call);
/* The raw query string without '?', "" when absent. */
const char *ds_rpc_call_query(const struct ds_rpc_call *call);
/* The dispatched pRPC method name after trimming ("" for raw routes). */
const char *ds_rpc_call_method(const struct ds_rpc_call *call);
/* The raw request body (NUL-terminated for convenience; *out_len excludes the NUL). */
const uint8_t *ds_rpc_call_body(const struct ds_rpc_call *call, size_t *out_len);
/* First request header named `name` (case-insensitive), value trimmed; NULL if absent. */
const char *ds_rpc_call_header(const struct ds_rpc_call *call, const char *name);
/* true when the input came from a GET query string (all values are JSON strings). */
bool ds_rpc_call_from_query(const struct ds_rpc_call *call);
/* true once the connection is gone: a later reply is discarded. */
bool ds_rpc_call_orphaned(const struct ds_rpc_call *call);

/* ---- calls: replies ------------------------------------------------------------------------- */

/*
 * Record the error message for a handler that is about to return an error; returns -EINVAL
 * so handlers can write `return ds_rpc_call_error(call, "Unsupported algorithm");`. The
 * message becomes the "error" string of the 400 reply (truncated to DS_RPC_ERROR_MESSAGE_MAX,
 * invalid UTF-8 replaced). Chain context as upstream does: "failed to get quote: <cause>".
 */
int ds_rpc_call_error(struct ds_rpc_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Add a response header ("Name", "value"; copied). Returns 0, -EINVAL (CR/LF in it),
 * -DS_E_LIMIT (more than DS_RPC_RESPONSE_HEADERS_MAX) or -ENOMEM. */
DS_MUST_USE int ds_rpc_call_add_header(struct ds_rpc_call *call, const char *name,
                                       const char *value);

/*
 * The ds_rpc_call_reply_* functions finish the call: after them the call pointer is invalid
 * (for a deferred call; for a synchronous one the handler must return right after). Each may
 * be called once. If the connection is gone, the reply is discarded and the call freed.
 */
/* 200 with the compact ASCII JSON of result (stolen; NULL = `null`). */
void ds_rpc_call_reply_json(struct ds_rpc_call *call, json_t *result);
/* 400 {"error": "<message>"} (pretty-printed, as upstream). */
void ds_rpc_call_reply_error(struct ds_rpc_call *call, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Any status (100-599 except 1xx) with a body (copied) and a Content-Type. */
void ds_rpc_call_reply_raw(struct ds_rpc_call *call, int status, const char *content_type,
                           const void *body, size_t len);

/* ---- input decoding (exposed for handlers and the fuzz harnesses) --------------------------- */

/*
 * Decode a query string (without '?') into a new JSON object the way serde_qs 0.13 in strict
 * mode sees it (§2.6): pairs split on '&', `key[=value]`, '+' is a space, %XX decoded (an
 * invalid escape stays literal), values are always JSON strings; `a[b]=` nests objects,
 * `a[0]=x&a[1]=y` and `a[]=x&a[]=y` make arrays (ordered by index), a repeated plain key
 * makes an array of its values; keys nested deeper than DS_RPC_QUERY_DEPTH_MAX brackets are
 * refused. An empty query gives `{}`. On error *out_msg (may be NULL) gets a static
 * description. Returns 0, -DS_E_FORMAT (not UTF-8, NUL byte, conflicting keys such as
 * `a=1&a[b]=2`), -DS_E_LIMIT (too deep, too many pairs, index too large) or -ENOMEM.
 */
DS_MUST_USE int ds_rpc_query_decode(const char *query, size_t len, json_t **out,
                                    const char **out_msg);

/*
 * Whether a query string selects JSON mode: it has a top-level `json` key whose value is
 * empty, "1" or "true" (§2.2).
 */
bool ds_rpc_query_json_flag(const char *query, size_t len);

/* ---- typed parameter decoding (serde rules, guest-agent-api.md §2.4 and §2.6) ------------- */

/*
 * A table-driven decoder from the params object into a C struct, with the rules upstream's
 * serde types apply: every field is optional and defaults (0, false, "", empty); unknown keys
 * are ignored; JSON null is an error except for DS_RPC_FIELD_OPT_U64 (absent); bools need
 * JSON booleans and integers JSON numbers, except for input from a GET query string where
 * every leaf is a string ("true"/"false", decimal digits); bytes fields are hex strings
 * (either case) after removing any number of leading "0x".
 */
enum ds_rpc_field_type {
    DS_RPC_FIELD_STRING,     /* char *: malloc'd, "" when absent */
    DS_RPC_FIELD_BYTES,      /* struct ds_rpc_bytes */
    DS_RPC_FIELD_BOOL,       /* bool */
    DS_RPC_FIELD_U32,        /* uint32_t */
    DS_RPC_FIELD_U64,        /* uint64_t (JSON numbers up to INT64_MAX) */
    DS_RPC_FIELD_OPT_U64,    /* struct ds_rpc_opt_u64 */
    DS_RPC_FIELD_STRINGS,    /* struct ds_rpc_strings */
    DS_RPC_FIELD_BYTES_LIST, /* struct ds_rpc_bytes_list */
};

struct ds_rpc_bytes {
    uint8_t *data; /* malloc'd, never NULL after a successful decode */
    size_t len;
};
struct ds_rpc_opt_u64 {
    bool present;
    uint64_t value;
};
struct ds_rpc_strings {
    char **items;
    size_t count;
};
struct ds_rpc_bytes_list {
    struct ds_rpc_bytes *items;
    size_t count;
};

#define DS_RPC_FIELD_SIZE_MAX  (1024 * 1024) /* default max bytes of a string or bytes field */
#define DS_RPC_FIELD_COUNT_MAX 1024          /* default max items of a list field */

struct ds_rpc_field {
    const char *name; /* JSON key (proto field name) */
    enum ds_rpc_field_type type;
    size_t offset; /* offsetof() the member in the output struct */
    size_t max;    /* bytes (string, bytes) or items (lists); 0 = the defaults above */
};

#define DS_RPC_FIELD(type_, struct_, member_, max_)                                                \
    {                                                                                              \
#member_, type_, offsetof(struct_, member_), max_                                          \
    }

/*
 * Decode `params` into the struct at `out` (every field of the table is written; on failure
 * all are freed and zeroed again). from_query: the params came from a query string
 * (ds_rpc_call_from_query()). Returns 0, -DS_E_FORMAT (wrong type, bad hex, out of range)
 * or -DS_E_LIMIT (too long), with a message in msg, or -ENOMEM.
 */
DS_MUST_USE int ds_rpc_params_decode(const json_t *params, bool from_query,
                                     const struct ds_rpc_field *fields, size_t count, void *out,
                                     char *msg, size_t msg_size);
/* Free what ds_rpc_params_decode() allocated and zero the fields. NULL-safe for out. */
void ds_rpc_params_free(const struct ds_rpc_field *fields, size_t count, void *out);
/*
 * ds_rpc_params_decode() for a handler: on failure the message becomes the call's error
 * ("failed to decode request: ..."), so `if ((r = ds_rpc_call_decode(...)) < 0) return r;`.
 */
DS_MUST_USE int ds_rpc_call_decode(struct ds_rpc_call *call, const json_t *params,
                                   const struct ds_rpc_field *fields, size_t count, void *out);

#endif /* DSTACK_RPC_H */
