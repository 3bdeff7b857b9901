/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The control interface (<state-dir>/control.sock, mode 0600): create, remove and list TDs
 * while the simulator serves. Used by `dstack-tee-sim create-td/remove-td/list-tds` and by the
 * VMM, which sets MRTD/RTMR0-2 (and the boot event log) of a CVM it launches.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "teesim.h"

static json_t *op_create(struct teesim *sim, const struct ds_tee_request *req)
{
    struct teesim_td *td = NULL;
    char err[256] = "";
    int r = teesim_td_create(sim, req, &td, err, sizeof(err));
    if (r < 0) {
        log_warnx("create-td \"%s\" failed: %s", req->name, err[0] ? err : ds_strerror(r));
        return teesim_error_response(r, err[0] ? err : NULL);
    }
    log_info("TD \"%s\" created, device socket %s", td->name, td->sock_path);
    return json_pack("{s:b,s:s,s:s}", "ok", 1, "name", td->name, "socket", td->sock_path);
}

static json_t *op_remove(struct teesim *sim, const struct ds_tee_request *req)
{
    int r = teesim_td_remove(sim, req->name);
    if (r == -DS_E_NOT_FOUND) {
        return teesim_error_response(r, "no such TD");
    }
    if (r < 0) {
        log_warnx("remove-td \"%s\": %s", req->name, ds_strerror(r));
        return teesim_error_response(r, "TD stopped but its state could not be deleted");
    }
    log_info("TD \"%s\" removed", req->name);
    return json_pack("{s:b}", "ok", 1);
}

static json_t *op_list(struct teesim *sim)
{
    json_t *arr = json_array();
    struct teesim_td *td;
    TAILQ_FOREACH(td, &sim->tds, entry)
    {
        char mrtd[2 * 48 + 1];
        ds_hex_encode(td->regs.mr_td, 48, mrtd);
        if (!arr ||
            json_array_append_new(arr, json_pack("{s:s,s:s,s:s}", "name", td->name, "socket",
                                                 td->sock_path, "mrtd", mrtd)) < 0) {
            json_decref(arr);
            return NULL;
        }
    }
    return json_pack("{s:b,s:o}", "ok", 1, "tds", arr);
}

json_t *teesim_control_handle(struct teesim *sim, const struct ds_tee_request *req)
{
    switch (req->op) {
    case DS_TEE_OP_CREATE_TD:
        return op_create(sim, req);
    case DS_TEE_OP_REMOVE_TD:
        return op_remove(sim, req);
    case DS_TEE_OP_LIST_TDS:
        return op_list(sim);
    default:
        return teesim_error_response(-DS_E_UNSUPPORTED, "operation not available");
    }
}
