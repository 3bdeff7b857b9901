/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for the dstack JSON event-log parser (ds_eventlog_parse_json). On success
 * it runs everything that consumes a parsed log (replay, V2 preimage validation, find_event,
 * app identity decoding, the serializer in every mode) and checks that serialize -> parse ->
 * serialize is a fixed point.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/eventlog.h"

/* Results that only matter for not crashing. */
static void ignore(int r)
{
    (void)r;
}

static void roundtrip(const struct ds_event_log *log, unsigned flags)
{
    struct ds_event_log *back = NULL;
    char *j1 = NULL, *j2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (ds_eventlog_to_json(log, flags, &j1, &n1) != 0) {
        return;
    }
    if (ds_eventlog_parse_json(j1, n1, &back) != 0) {
        __builtin_trap();
    }
    if (ds_eventlog_to_json(back, flags, &j2, &n2) != 0 || n1 != n2 || memcmp(j1, j2, n1) != 0) {
        __builtin_trap();
    }
    free(j1);
    free(j2);
    ds_eventlog_free(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_event_log *log = NULL;
    uint8_t mr[DS_RTMR_COUNT][DS_RTMR_SIZE];
    uint8_t rt[DS_SHA384_LEN];
    size_t bad;
    struct ds_td_report td;
    struct ds_app_info info;

    if (ds_eventlog_parse_json((const char *)data, size, &log) < 0) {
        return 0;
    }
    ignore(ds_eventlog_replay(log, NULL, mr));
    ignore(ds_eventlog_replay(log, DS_EVENT_BOOT_MR_DONE, mr));
    ignore(ds_eventlog_replay_runtime_sha384(log, NULL, rt));
    ignore(ds_eventlog_validate_v2_preimages(log, &bad));
    (void)ds_eventlog_find_event(log, DS_EVENT_APP_ID);
    memset(&td, 0, sizeof(td));
    for (int boottime = 0; boottime <= 1; boottime++) {
        if (ds_app_info_decode(log, &td, NULL, 0, NULL, boottime, &info) == 0) {
            ds_app_info_done(&info);
        }
    }
    roundtrip(log, 0);
    roundtrip(log, DS_EVENTLOG_JSON_PREIMAGE);
    roundtrip(log, DS_EVENTLOG_JSON_STRIPPED | DS_EVENTLOG_JSON_PREIMAGE);
    ds_eventlog_free(log);
    return 0;
}
