/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The guest side of the VMM host API's Notify method (spec host-side.md §1.7, §3.3): one JSON
 * pRPC POST of {"event", "payload"} to /api/Notify over the Unix socket the VMM binds into a
 * sandbox guest. Used by `dstack-util setup` for boot.progress / boot.error / instance.info
 * and by `dstack-util notify`. Payloads larger than the VMM accepts are refused here.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <jansson.h>

#include "dstack/base.h"
#include "log.h"
#include "util_setup.h"

#define NOTIFY_TIMEOUT_MS 10000L
#define NOTIFY_URL        "http://localhost/api/Notify"

static size_t discard(char *ptr, size_t size, size_t n, void *ud)
{
    (void)ptr;
    (void)ud;
    return size * n;
}

int setup_notify(const char *socket_path, const char *event, const char *payload)
{
    if (!socket_path || !event) {
        return -EINVAL;
    }
    if (!payload) {
        payload = "";
    }
    if (strlen(payload) > SETUP_NOTIFY_BODY_MAX) {
        return -DS_E_LIMIT;
    }
    int rc = -ENOMEM;
    CURL *h = NULL;
    struct curl_slist *hdrs = NULL;
    json_t *j = json_pack("{s:s,s:s}", "event", event, "payload", payload);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    if (!body) {
        goto out;
    }
    h = curl_easy_init();
    hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    if (!h || !hdrs) {
        goto out;
    }
    curl_easy_setopt(h, CURLOPT_UNIX_SOCKET_PATH, socket_path);
    curl_easy_setopt(h, CURLOPT_URL, NOTIFY_URL);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, NOTIFY_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
    CURLcode cr = curl_easy_perform(h);
    long status = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (cr != CURLE_OK) {
        log_debug("notify %s: %s", event, curl_easy_strerror(cr));
        rc = -DS_E_NETWORK;
    } else if (status != 200) {
        log_debug("notify %s: HTTP %ld", event, status);
        rc = -DS_E_NETWORK;
    } else {
        rc = 0;
    }
out:
    curl_slist_free_all(hdrs);
    if (h) {
        curl_easy_cleanup(h);
    }
    free(body);
    json_decref(j);
    return rc;
}
