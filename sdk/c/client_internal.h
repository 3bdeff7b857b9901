/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interface of libdstack-client: the client object, the transport (one pRPC call as
 * an HTTP POST of a JSON body over a Unix socket or TCP, client_transport.c) and the small
 * hex helpers shared by the call wrappers in client.c.
 */
#ifndef DSTACK_CLIENT_INTERNAL_H
#define DSTACK_CLIENT_INTERNAL_H

#include <jansson.h>
#include <stdarg.h>

#include "dstack/client.h"

/* Longest message kept for dstack_client_errmsg(). */
#define CLIENT_ERRMSG_MAX 512

struct dstack_client {
    char *endpoint;    /* as resolved: socket path or URL */
    char *socket_path; /* NULL for http(s) */
    char *base_url;    /* "http://localhost" for sockets, else the URL without trailing '/' */
    void *curl;        /* CURL *, kept for connection reuse */
    char errmsg[CLIENT_ERRMSG_MAX];
};

/* Set the client's error message (printf-style) and return err. */
int client_fail(struct dstack_client *c, int err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/*
 * POST `request` (JSON, may be NULL for "{}") to <base>/<method>. On HTTP 200 with a JSON
 * body, stores the parsed value in *out_response (caller decrefs). A JSON `null` body is
 * returned as json_null(). Other statuses give DSTACK_ERR_SERVER with the server's `error`
 * text as message. timeout_ms 0 means DSTACK_TIMEOUT_MS.
 */
int client_call(struct dstack_client *c, const char *method, json_t *request, long timeout_ms,
                json_t **out_response);

/* Lowercase hex of len bytes; NULL on allocation failure. Caller frees. */
char *client_hex_encode(const void *data, size_t len);
/* Decode hex (optional "0x" prefix) into a new buffer. 0 or DSTACK_ERR_PROTOCOL/NOMEM. */
int client_hex_decode(const char *hex, struct dstack_bytes *out);

#endif /* DSTACK_CLIENT_INTERNAL_H */
