/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-tee-sim internals: the server object, the per-TD state, the framed connection used by
 * the device and control sockets, and the entry points of each role file:
 *   teesim_state.c    TD registers + event log, persisted under <state-dir>/tds/<name>/
 *   teesim_conn.c     framed request/response connections over libevent bufferevents
 *   teesim_device.c   the per-TD device operations (quote, extend, read, event log)
 *   teesim_control.c  the control socket (create/remove/list TDs)
 *   teesim_pccs.c     the Intel PCS/PCCS v4 collateral routes (evhttp)
 *   teesim_client.c   the client subcommands (create-td, tdx-quote, extend, ...)
 * See docs/tee-sim.md.
 */
#ifndef DSTACK_TEESIM_H
#define DSTACK_TEESIM_H

#include <limits.h>
#include <sys/queue.h>
#include <sys/un.h>

#include <event2/event.h>
#include <event2/http.h>
#include <event2/listener.h>
#include <jansson.h>

#include "dstack/attest.h"
#include "dstack/eventlog.h"
#include "dstack/sim.h"
#include "tee/tee_proto.h"

#define TEESIM_TDS_DIR            "tds"
#define TEESIM_TD_STATE_FILE      "td.json"
#define TEESIM_TD_SOCKET          "tdx.sock"
#define TEESIM_CONTROL_SOCKET     "control.sock"
#define TEESIM_ROOT_CA_FILE       "root-ca.der"
#define TEESIM_PCCS_ADDR_FILE     "pccs.addr"
#define TEESIM_LOCK_FILE          "serve.lock"
#define TEESIM_STATE_VERSION      1
#define TEESIM_MAX_TDS            256
#define TEESIM_MAX_CONNS_PER_TD   16
#define TEESIM_MAX_CONTROL_CONNS  16
#define TEESIM_READ_TIMEOUT_SEC   10 /* a request must arrive completely within this */
#define TEESIM_WRITE_TIMEOUT_SEC  10
#define TEESIM_COLLATERAL_REFRESH 3600 /* seconds a generated collateral set is served */
#define TEESIM_STATE_MAX_SIZE     (DS_EVENTLOG_MAX_JSON + 64 * 1024)
/* Sum of event payload bytes one TD may log (boot + runtime). With hex and V2 preimages
 * (4x) the JSON event log stays below DS_TEE_PROTO_MAX_RESPONSE. */
#define TEESIM_TD_MAX_PAYLOAD_TOTAL (2 * 1024 * 1024)
#define TEESIM_SOCKET_PATH_MAX      (sizeof(((struct sockaddr_un *)0)->sun_path))

struct teesim;
struct teesim_conn;

TAILQ_HEAD(teesim_conn_list, teesim_conn);

struct teesim_td {
    TAILQ_ENTRY(teesim_td) entry;
    struct teesim *sim;
    char name[DS_TEE_TD_NAME_MAX + 1];
    char dir[PATH_MAX];
    char state_path[PATH_MAX];
    char sock_path[TEESIM_SOCKET_PATH_MAX];
    struct ds_sim_td regs;    /* MRTD, RTMR0-3 and the fixed TD fields of its quotes */
    struct ds_event_log *log; /* boot events given at creation + runtime events */
    struct evconnlistener *listener;
    struct teesim_conn_list conns;
    size_t conn_count;
};

TAILQ_HEAD(teesim_td_list, teesim_td);

struct teesim {
    struct event_base *base;
    char state_dir[PATH_MAX];
    struct ds_sim_pki *pki;
    struct teesim_td_list tds;
    size_t td_count;
    char control_path[TEESIM_SOCKET_PATH_MAX];
    struct evconnlistener *control;
    struct teesim_conn_list control_conns;
    size_t control_conn_count;
    struct evhttp *http;
    struct ds_collateral *coll; /* cached collateral, regenerated every TEESIM_COLLATERAL_REFRESH */
    int64_t coll_time;
};

/* ---- teesim_state.c ----------------------------------------------------------------------- */

/* Load every TD under <state-dir>/tds and start serving its device socket. */
int teesim_state_load_all(struct teesim *sim);
/* Create a TD from a parsed create_td request, persist it and start its device socket. */
int teesim_td_create(struct teesim *sim, const struct ds_tee_request *req, struct teesim_td **out,
                     char *err, size_t err_size);
/* Stop serving a TD, close its connections and delete its state. */
int teesim_td_remove(struct teesim *sim, const char *name);
struct teesim_td *teesim_td_find(struct teesim *sim, const char *name);
/* Extend RTMR index of td and record the event; persisted before it returns 0. */
int teesim_td_extend(struct teesim_td *td, const struct ds_tee_request *req, char *err,
                     size_t err_size);
/* Free all TDs (no state is deleted). */
void teesim_state_free_all(struct teesim *sim);

/* ---- teesim_conn.c ------------------------------------------------------------------------ */

/* Bind a Unix stream socket at path with mode 0600 (replacing a stale socket, never another
 * kind of file) and wrap it in a listener that accepts into td's (or, td NULL, the control)
 * connection list. */
int teesim_listen(struct teesim *sim, struct teesim_td *td, const char *path,
                  struct evconnlistener **out);
/* Free one connection (its bufferevent and list entry). */
void teesim_conn_free(struct teesim_conn *c);
/* Free every connection in a list. */
void teesim_conn_free_all(struct teesim_conn_list *list);
/* Build an error response {"ok":false,"error":<name>,"message":msg}. */
json_t *teesim_error_response(int code, const char *msg);

/* ---- teesim_device.c / teesim_control.c --------------------------------------------------- */

/* Handle one parsed request; returns the response object (never NULL unless out of memory). */
json_t *teesim_device_handle(struct teesim_td *td, const struct ds_tee_request *req);
json_t *teesim_control_handle(struct teesim *sim, const struct ds_tee_request *req);

/* ---- teesim_pccs.c ------------------------------------------------------------------------ */

/* Serve the collateral routes on addr:port; writes the bound address to <state-dir>/pccs.addr. */
int teesim_pccs_start(struct teesim *sim, const char *listen);
void teesim_pccs_stop(struct teesim *sim);
/* The current collateral (regenerated when older than TEESIM_COLLATERAL_REFRESH). */
const struct ds_collateral *teesim_collateral(struct teesim *sim);

/* ---- teesim_client.c / main.c ------------------------------------------------------------- */

/* Parse a seed: exactly 64 hex digits. */
int teesim_parse_seed(const char *hex, uint8_t seed[DS_SIM_SEED_LEN]);
int teesim_join(char *out, size_t out_size, const char *a, const char *b);

int teesim_cmd_create_td(int argc, char **argv);
int teesim_cmd_remove_td(int argc, char **argv);
int teesim_cmd_list_tds(int argc, char **argv);
int teesim_cmd_tdx_quote(int argc, char **argv);
int teesim_cmd_extend(int argc, char **argv);
int teesim_cmd_read(int argc, char **argv);
int teesim_cmd_event_log(int argc, char **argv);

/* Tiny option parser shared by the subcommands: "--name value" pairs and "--flag"s. */
struct teesim_opt {
    const char *name;   /* "--seed" */
    const char **value; /* set to the argument (or "1" for a flag) */
    bool flag;
};
int teesim_parse_opts(int argc, char **argv, const struct teesim_opt *opts, size_t count);

#endif /* DSTACK_TEESIM_H */
