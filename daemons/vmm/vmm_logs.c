/* SPDX-License-Identifier: Apache-2.0 */
/*
 * GET /logs?id=<vm>&follow=<bool>&ansi=<bool>&lines=<n>&ch=serial|stdout|stderr (host-side.md
 * §1.3): the last `lines` lines (default 10000) of the VM's serial console (or QEMU's stdout /
 * stderr), ANSI escape sequences stripped unless ansi=true, 404 for an unknown VM.
 *
 * follow=true: lib/rpc answers every response with a Content-Length (no chunked streaming), so
 * a follow request is a long poll: the reply is held until the VM's process ends or
 * VMM_LOG_FOLLOW_MS passes, and then carries the tail plus everything appended meanwhile
 * (ending with "[vmm heartbeat]\n" when it timed out with no new output, as upstream's stream
 * does after 60 s idle). Clients loop to keep following.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"
#include "vmm.h"

#define VMM_LOG_FOLLOW_MS     60000
#define VMM_LOG_POLL_MS       500
#define VMM_LOG_LINES_MAX     1000000
#define VMM_LOG_FOLLOWERS_MAX 64

struct follower {
    struct vmm *v;
    struct ds_rpc_call *call;
    struct event *timer;
    char *id;
    char *path;
    off_t start_size; /* file size when the request came */
    off_t tail_start; /* where the requested tail began then */
    uint64_t deadline_ms;
    unsigned lines;
    bool ansi;
};

static unsigned followers;

/* Read the last `lines` lines of path, at most VMM_LOG_READ_MAX bytes from the end;
 * *out_start gets the file offset where that tail begins. */
static int read_tail(const char *path, unsigned lines, struct ds_buf *out, off_t *out_size,
                     off_t *out_start)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        *out_size = 0;
        *out_start = 0;
        return errno == ENOENT ? 0 : -errno;
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int r = -errno;
        close(fd);
        return r;
    }
    off_t size = st.st_size;
    off_t from = size > (off_t)VMM_LOG_READ_MAX ? size - (off_t)VMM_LOG_READ_MAX : 0;
    size_t len = (size_t)(size - from);
    char *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return -ENOMEM;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, from + (off_t)got);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
    }
    close(fd);
    /* walk back `lines` newlines (a trailing newline ends the last line, it does not count) */
    size_t pos = got;
    unsigned seen = 0;
    size_t end = got;
    if (end > 0 && buf[end - 1] == '\n') {
        end--;
    }
    pos = end;
    while (pos > 0) {
        if (buf[pos - 1] == '\n') {
            if (++seen == lines) {
                break;
            }
        }
        pos--;
    }
    if (lines == 0) {
        pos = got;
    }
    int r = ds_buf_append(out, buf + pos, got - pos);
    free(buf);
    *out_size = from + (off_t)got;
    *out_start = from + (off_t)pos;
    return r;
}

/* Append bytes [from, to) of path. */
static int read_range(const char *path, off_t from, off_t to, struct ds_buf *out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return errno == ENOENT ? 0 : -errno;
    }
    char chunk[16384];
    ssize_t n;
    int r = 0;
    while (from < to) {
        size_t want = (size_t)(to - from) < sizeof(chunk) ? (size_t)(to - from) : sizeof(chunk);
        n = pread(fd, chunk, want, from);
        if (n <= 0) {
            break;
        }
        if ((r = ds_buf_append(out, chunk, (size_t)n)) < 0) {
            break;
        }
        from += n;
    }
    close(fd);
    return r;
}

/* Remove ESC [ ... final-byte (CSI) and ESC <one char> sequences in place. */
static size_t strip_ansi(uint8_t *s, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != 0x1b) {
            s[o++] = s[i];
            continue;
        }
        if (i + 1 < n && s[i + 1] == '[') {
            i += 2;
            while (i < n && !(s[i] >= 0x40 && s[i] <= 0x7e)) {
                i++;
            }
        } else if (i + 1 < n) {
            i++;
        }
    }
    return o;
}

static void reply_text(struct ds_rpc_call *call, struct ds_buf *b, bool ansi)
{
    size_t len = b->len;
    if (!ansi && b->data) {
        len = strip_ansi(b->data, b->len);
    }
    ds_rpc_call_reply_raw(call, 200, "text/plain; charset=utf-8", b->data ? (void *)b->data : "",
                          len);
}

static void follower_free(struct follower *f)
{
    if (f->timer) {
        event_free(f->timer);
    }
    free(f->id);
    free(f->path);
    free(f);
    followers--;
}

static void follow_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct follower *f = arg;
    struct vmm_vm_rec *vm = vmm_vm_find(f->v, f->id);
    bool done = ds_rpc_call_orphaned(f->call) || !vm || vmm_now_ms() >= f->deadline_ms;
    if (vm && !done) {
        vmm_vm_poll(f->v, vm);
        done = !vm->running;
    }
    if (!done) {
        struct timeval tv = {0, VMM_LOG_POLL_MS * 1000};
        evtimer_add(f->timer, &tv);
        return;
    }
    /* the tail as it was at request time plus everything appended since (the newest
     * VMM_LOG_READ_MAX bytes if that is more; a rotated log restarts at its beginning) */
    struct ds_buf b;
    ds_buf_init(&b, VMM_LOG_READ_MAX);
    struct stat st;
    off_t size = stat(f->path, &st) == 0 ? st.st_size : 0;
    off_t from = size >= f->tail_start ? f->tail_start : 0;
    if (size - from > (off_t)VMM_LOG_READ_MAX) {
        from = size - (off_t)VMM_LOG_READ_MAX;
    }
    if (read_range(f->path, from, size, &b) < 0) {
        ds_rpc_call_reply_error(f->call, "failed to read the log");
    } else {
        if (size == f->start_size && vmm_now_ms() >= f->deadline_ms) {
            if (ds_buf_append_str(&b, "[vmm heartbeat]\n") < 0) {
                log_debug("logs: heartbeat dropped");
            }
        }
        reply_text(f->call, &b, f->ansi);
    }
    ds_buf_done(&b);
    follower_free(f);
}

static bool qbool(const json_t *q, const char *key)
{
    const char *s = json_string_value(json_object_get(q, key));
    return s && (strcmp(s, "true") == 0 || strcmp(s, "1") == 0);
}

int vmm_logs_route(struct ds_rpc_call *call, void *ctx)
{
    struct vmm *v = ctx;
    const char *q = ds_rpc_call_query(call);
    json_t *params = NULL;
    const char *msg = NULL;
    int r = ds_rpc_query_decode(q, strlen(q), &params, &msg);
    if (r < 0) {
        return ds_rpc_call_error(call, "bad query: %s", msg ? msg : ds_strerror(r));
    }
    const char *id = json_string_value(json_object_get(params, "id"));
    const char *ch = json_string_value(json_object_get(params, "ch"));
    const char *lines_s = json_string_value(json_object_get(params, "lines"));
    bool follow = qbool(params, "follow");
    bool ansi = qbool(params, "ansi");
    unsigned lines = VMM_LOG_TAIL_DEFAULT;
    struct vmm_vm_rec *vm = id && vmm_vm_id_valid(id) ? vmm_vm_find(v, id) : NULL;
    if (!vm) {
        static const char nf[] = "{\n  \"error\": \"VM not found\"\n}";
        ds_rpc_call_reply_raw(call, 404, "application/json", nf, sizeof(nf) - 1);
        json_decref(params);
        return 0;
    }
    if (lines_s) {
        char *end = NULL;
        long n = strtol(lines_s, &end, 10);
        if (!*lines_s || *end || n < 0 || n > VMM_LOG_LINES_MAX) {
            json_decref(params);
            return ds_rpc_call_error(call, "lines must be 0..%d", VMM_LOG_LINES_MAX);
        }
        lines = (unsigned)n;
    }
    const char *path = vm->serial_log;
    if (ch && strcmp(ch, "stdout") == 0) {
        path = vm->stdout_log;
    } else if (ch && strcmp(ch, "stderr") == 0) {
        path = vm->stderr_log;
    } else if (ch && strcmp(ch, "serial") != 0) {
        json_decref(params);
        return ds_rpc_call_error(call, "ch must be serial, stdout or stderr");
    }
    json_decref(params);
    vmm_vm_poll(v, vm);
    if (follow && vm->running) {
        if (followers >= VMM_LOG_FOLLOWERS_MAX) {
            return ds_rpc_call_error(call, "too many log followers");
        }
        struct follower *f = calloc(1, sizeof(*f));
        if (!f) {
            return -ENOMEM;
        }
        followers++;
        f->v = v;
        f->call = call;
        f->id = strdup(vm->id);
        f->path = strdup(path);
        f->lines = lines;
        f->ansi = ansi;
        f->deadline_ms = vmm_now_ms() + VMM_LOG_FOLLOW_MS;
        struct ds_buf tail;
        ds_buf_init(&tail, VMM_LOG_READ_MAX);
        if (read_tail(path, lines, &tail, &f->start_size, &f->tail_start) < 0) {
            f->start_size = f->tail_start = 0;
        }
        ds_buf_done(&tail);
        f->timer = evtimer_new(v->base, follow_tick, f);
        struct timeval tv = {0, VMM_LOG_POLL_MS * 1000};
        if (!f->id || !f->path || !f->timer || evtimer_add(f->timer, &tv) < 0) {
            follower_free(f);
            return -ENOMEM;
        }
        return DS_RPC_DEFERRED;
    }
    struct ds_buf b;
    ds_buf_init(&b, VMM_LOG_READ_MAX);
    off_t size = 0, start = 0;
    r = read_tail(path, lines, &b, &size, &start);
    if (r < 0) {
        ds_buf_done(&b);
        return ds_rpc_call_error(call, "failed to read the log: %s", ds_strerror(r));
    }
    reply_text(call, &b, ansi);
    ds_buf_done(&b);
    return 0;
}
