/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Per-TD state of the simulated TDX module: MRTD and RTMR0-2 set by whoever creates the TD,
 * RTMR2/3 extendable by the guest (SHA-384 extend, spec attestation.md §4.3), and the event log
 * that explains them (boot events given at creation, runtime events appended by extensions).
 * Each TD lives in <state-dir>/tds/<name>/ with td.json (written atomically after every
 * change, before the change is acknowledged) and its device socket tdx.sock, so restarting the
 * simulator never changes a running CVM's registers.
 *
 * td.json: {"version":1,"name":..,"mrtd":hex,"rtmr0".."rtmr3":hex,"event_log":[dstack events]}
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dstack/crypto.h"
#include "log.h"
#include "tee/tee_provider.h"
#include "teesim.h"

static const char *const rtmr_keys[4] = {"rtmr0", "rtmr1", "rtmr2", "rtmr3"};

int teesim_join(char *out, size_t out_size, const char *a, const char *b)
{
    int n = snprintf(out, out_size, "%s/%s", a, b);
    return (n < 0 || (size_t)n >= out_size) ? -ENAMETOOLONG : 0;
}

struct teesim_td *teesim_td_find(struct teesim *sim, const char *name)
{
    struct teesim_td *td;
    TAILQ_FOREACH(td, &sim->tds, entry)
    {
        if (strcmp(td->name, name) == 0) {
            return td;
        }
    }
    return NULL;
}

static void td_free(struct teesim_td *td)
{
    if (!td) {
        return;
    }
    teesim_conn_free_all(&td->conns);
    if (td->listener) {
        evconnlistener_free(td->listener);
        unlink(td->sock_path);
    }
    ds_eventlog_free(td->log);
    free(td);
}

/* A TD object with its paths, not yet listening or linked. */
static int td_new(struct teesim *sim, const char *name, struct teesim_td **out)
{
    if (!ds_tee_td_name_valid(name)) {
        return -DS_E_FORMAT;
    }
    struct teesim_td *td = calloc(1, sizeof(*td));
    if (!td) {
        return -ENOMEM;
    }
    td->sim = sim;
    TAILQ_INIT(&td->conns);
    memcpy(td->name, name, strlen(name) + 1);
    char tds[PATH_MAX];
    int r = teesim_join(tds, sizeof(tds), sim->state_dir, TEESIM_TDS_DIR);
    if (r == 0) {
        r = teesim_join(td->dir, sizeof(td->dir), tds, name);
    }
    if (r == 0) {
        r = teesim_join(td->state_path, sizeof(td->state_path), td->dir, TEESIM_TD_STATE_FILE);
    }
    if (r == 0) {
        r = teesim_join(td->sock_path, sizeof(td->sock_path), td->dir, TEESIM_TD_SOCKET);
    }
    if (r < 0) {
        free(td);
        return r;
    }
    ds_sim_td_defaults(&td->regs);
    *out = td;
    return 0;
}

static size_t payload_total(const struct ds_event_log *log)
{
    size_t n = 0;
    for (size_t i = 0; i < log->count; i++) {
        n += log->events[i].payload_len;
    }
    return n;
}

static int td_save(const struct teesim_td *td)
{
    char *log_text = NULL;
    json_t *log = NULL, *root = NULL;
    char *text = NULL;
    char hex[4][2 * 48 + 1], mrtd[2 * 48 + 1];
    int r = ds_eventlog_to_json(td->log, DS_EVENTLOG_JSON_PREIMAGE, &log_text, NULL);
    if (r < 0) {
        goto out;
    }
    json_error_t jerr;
    log = json_loads(log_text, 0, &jerr);
    ds_hex_encode(td->regs.mr_td, 48, mrtd);
    for (int i = 0; i < 4; i++) {
        ds_hex_encode(td->regs.rtmr[i], 48, hex[i]);
    }
    root = log ? json_pack("{s:i,s:s,s:s,s:s,s:s,s:s,s:s,s:O}", "version", TEESIM_STATE_VERSION,
                           "name", td->name, "mrtd", mrtd, rtmr_keys[0], hex[0], rtmr_keys[1],
                           hex[1], rtmr_keys[2], hex[2], rtmr_keys[3], hex[3], "event_log", log)
               : NULL;
    text = root ? json_dumps(root, JSON_INDENT(1)) : NULL;
    if (!text) {
        r = -ENOMEM;
        goto out;
    }
    r = ds_write_file_atomic(td->state_path, text, strlen(text), 0600);
out:
    free(text);
    json_decref(root);
    json_decref(log);
    free(log_text);
    return r;
}

static int td_start(struct teesim_td *td)
{
    int r = teesim_listen(td->sim, td, td->sock_path, &td->listener);
    if (r < 0) {
        return r;
    }
    TAILQ_INSERT_TAIL(&td->sim->tds, td, entry);
    td->sim->td_count++;
    return 0;
}

/* Read and check one td.json; the registers must agree with the log's runtime events. */
static int td_load(struct teesim *sim, const char *name, struct teesim_td **out)
{
    struct teesim_td *td = NULL;
    uint8_t *data = NULL;
    size_t len = 0;
    json_t *root = NULL;
    char *log_text = NULL;
    int r = td_new(sim, name, &td);
    if (r < 0) {
        goto out;
    }
    r = ds_read_file(td->state_path, TEESIM_STATE_MAX_SIZE, &data, &len);
    if (r < 0) {
        goto out;
    }
    json_error_t jerr;
    root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &jerr);
    const json_t *v = json_object_get(root, "version");
    const json_t *n = json_object_get(root, "name");
    if (!json_is_integer(v) || json_integer_value(v) != TEESIM_STATE_VERSION ||
        !json_is_string(n) || strcmp(json_string_value(n), name) != 0 ||
        !json_is_array(json_object_get(root, "event_log"))) {
        r = -DS_E_FORMAT;
        goto out;
    }
    r = ds_tee_json_hex_field(root, "mrtd", td->regs.mr_td, 48);
    for (int i = 0; r == 0 && i < 4; i++) {
        r = ds_tee_json_hex_field(root, rtmr_keys[i], td->regs.rtmr[i], 48);
    }
    if (r < 0) {
        goto out;
    }
    log_text = json_dumps(json_object_get(root, "event_log"), JSON_COMPACT);
    if (!log_text) {
        r = -ENOMEM;
        goto out;
    }
    r = ds_eventlog_parse_json(log_text, strlen(log_text), &td->log);
    if (r < 0) {
        goto out;
    }
    uint8_t replay[4][48];
    r = ds_eventlog_replay(td->log, NULL, replay);
    if (r == 0 && !ds_ct_equal(replay[3], td->regs.rtmr[3], 48)) {
        r = -DS_E_MISMATCH; /* every RTMR3 change is logged, so this is corruption */
    }
    if (r < 0) {
        goto out;
    }
    *out = td;
    td = NULL;
out:
    td_free(td);
    json_decref(root);
    free(data);
    free(log_text);
    return r;
}

int teesim_state_load_all(struct teesim *sim)
{
    char tds[PATH_MAX];
    DS_TRY(teesim_join(tds, sizeof(tds), sim->state_dir, TEESIM_TDS_DIR));
    if (mkdir(tds, 0700) < 0 && errno != EEXIST) {
        return -errno;
    }
    DIR *d = opendir(tds);
    if (!d) {
        return -errno;
    }
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2]))) {
            continue;
        }
        if (!ds_tee_td_name_valid(e->d_name)) {
            log_warnx("ignoring \"%s\" in %s: not a TD name", e->d_name, tds);
            continue;
        }
        struct teesim_td *td = NULL;
        int r = td_load(sim, e->d_name, &td);
        if (r == 0) {
            r = td_start(td);
            if (r < 0) {
                td_free(td);
            }
        }
        if (r < 0) {
            log_warnx("TD \"%s\" not served: %s", e->d_name, ds_strerror(r));
            continue;
        }
        log_info("TD \"%s\" restored, device socket %s", td->name, td->sock_path);
    }
    closedir(d);
    return 0;
}

int teesim_td_create(struct teesim *sim, const struct ds_tee_request *req, struct teesim_td **out,
                     char *err, size_t err_size)
{
    struct teesim_td *td = NULL;
    bool made_dir = false;
    int r;
    if (teesim_td_find(sim, req->name)) {
        snprintf(err, err_size, "TD \"%s\" already exists", req->name);
        return -EEXIST;
    }
    if (sim->td_count >= TEESIM_MAX_TDS) {
        snprintf(err, err_size, "too many TDs");
        return -DS_E_LIMIT;
    }
    r = td_new(sim, req->name, &td);
    if (r < 0) {
        snprintf(err, err_size, "bad TD name or path too long");
        goto out;
    }
    if (req->has_mrtd) {
        memcpy(td->regs.mr_td, req->mrtd, 48);
    }
    r = ds_eventlog_new(&td->log);
    if (r < 0) {
        goto out;
    }
    if (req->event_log) {
        /* The registers follow from the boot log; explicit values must agree with it, since
         * a verifier replays the log and would reject the TD otherwise. */
        uint8_t replay[4][48];
        r = ds_eventlog_replay(req->event_log, NULL, replay);
        if (r < 0) {
            snprintf(err, err_size, "event log cannot be replayed: %s", ds_strerror(r));
            goto out;
        }
        for (int i = 0; i < 3; i++) {
            if (req->has_rtmr[i] && !ds_ct_equal(req->rtmr[i], replay[i], 48)) {
                snprintf(err, err_size, "rtmr%d does not match the replayed event log", i);
                r = -DS_E_MISMATCH;
                goto out;
            }
        }
        if (payload_total(req->event_log) > TEESIM_TD_MAX_PAYLOAD_TOTAL) {
            snprintf(err, err_size, "boot event log payloads exceed %d bytes",
                     TEESIM_TD_MAX_PAYLOAD_TOTAL);
            r = -DS_E_LIMIT;
            goto out;
        }
        memcpy(td->regs.rtmr, replay, sizeof(replay));
        for (size_t i = 0; i < req->event_log->count; i++) {
            r = ds_eventlog_append(td->log, &req->event_log->events[i]);
            if (r < 0) {
                goto out;
            }
        }
    } else {
        for (int i = 0; i < 3; i++) {
            if (req->has_rtmr[i]) {
                memcpy(td->regs.rtmr[i], req->rtmr[i], 48);
            }
        }
    }
    if (mkdir(td->dir, 0700) < 0) {
        r = -errno;
        snprintf(err, err_size, "cannot create %s: %s", td->dir, strerror(errno));
        goto out;
    }
    made_dir = true;
    r = td_save(td);
    if (r < 0) {
        snprintf(err, err_size, "cannot write %s: %s", td->state_path, ds_strerror(r));
        goto out;
    }
    r = td_start(td);
    if (r < 0) {
        snprintf(err, err_size, "cannot listen on %s: %s", td->sock_path, ds_strerror(r));
        goto out;
    }
    *out = td;
    td = NULL;
out:
    if (td && made_dir) {
        unlink(td->state_path);
        rmdir(td->dir);
    }
    td_free(td);
    return r;
}

int teesim_td_remove(struct teesim *sim, const char *name)
{
    struct teesim_td *td = teesim_td_find(sim, name);
    if (!td) {
        return -DS_E_NOT_FOUND;
    }
    TAILQ_REMOVE(&sim->tds, td, entry);
    sim->td_count--;
    char dir[PATH_MAX], state[PATH_MAX];
    memcpy(dir, td->dir, sizeof(dir));
    memcpy(state, td->state_path, sizeof(state));
    td_free(td); /* closes connections, stops the listener, unlinks the socket */
    int r = 0;
    if (unlink(state) < 0 && errno != ENOENT) {
        r = -errno;
    }
    if (rmdir(dir) < 0 && r == 0) {
        r = -errno;
    }
    return r;
}

/* Drop the last event (undo of a failed extension). */
static void log_pop(struct ds_event_log *log)
{
    struct ds_event *ev = &log->events[--log->count];
    free(ev->name);
    free(ev->payload);
    free(ev->preimage);
    memset(ev, 0, sizeof(*ev));
}

int teesim_td_extend(struct teesim_td *td, const struct ds_tee_request *req, char *err,
                     size_t err_size)
{
    size_t before = td->log->count;
    size_t total = payload_total(td->log);
    if (total > TEESIM_TD_MAX_PAYLOAD_TOTAL ||
        req->payload_len > TEESIM_TD_MAX_PAYLOAD_TOTAL - total) {
        snprintf(err, err_size, "the TD's event log is full");
        return -DS_E_LIMIT;
    }
    int r = ds_tee_extend_event(td->log, req->index, req->digest, req->event, req->payload,
                                req->payload_len);
    if (r == -DS_E_MISMATCH) {
        snprintf(err, err_size,
                 "digest is neither the V1 nor the V2 runtime-event digest of "
                 "the event name and payload");
    }
    if (r < 0) {
        return r;
    }
    uint8_t old[48];
    memcpy(old, td->regs.rtmr[req->index], 48);
    ds_sha384_v(td->regs.rtmr[req->index], 2, old, (size_t)48, req->digest, (size_t)48);
    r = td_save(td);
    if (r < 0) {
        /* Not persisted: the extension did not happen. */
        memcpy(td->regs.rtmr[req->index], old, 48);
        while (td->log->count > before) {
            log_pop(td->log);
        }
        snprintf(err, err_size, "cannot persist the TD state: %s", ds_strerror(r));
    }
    return r;
}

void teesim_state_free_all(struct teesim *sim)
{
    struct teesim_td *td;
    while ((td = TAILQ_FIRST(&sim->tds))) {
        TAILQ_REMOVE(&sim->tds, td, entry);
        sim->td_count--;
        td_free(td);
    }
}
