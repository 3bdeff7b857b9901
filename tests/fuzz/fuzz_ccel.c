/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for the CCEL / TCG crypto-agile binary log parser
 * (ds_eventlog_parse_ccel). On a successful parse it also exercises replay and the JSON
 * serializer, and checks a property: the JSON form of the parsed log parses back to a log with
 * the same JSON form (a fixed point).
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_event_log *log = NULL, *back = NULL;
    char *j1 = NULL, *j2 = NULL;
    size_t n1 = 0, n2 = 0;
    uint8_t mr[DS_RTMR_COUNT][DS_RTMR_SIZE];

    if (ds_eventlog_parse_ccel(data, size, &log) < 0) {
        return 0;
    }
    for (size_t i = 0; i < log->count; i++) {
        if (log->events[i].imr >= DS_RTMR_COUNT || !log->events[i].name) {
            __builtin_trap();
        }
    }
    ignore(ds_eventlog_replay(log, NULL, mr));
    ignore(ds_eventlog_replay(log, DS_EVENT_ACPI_RSDP, mr));
    if (ds_eventlog_to_json(log, DS_EVENTLOG_JSON_STRIPPED, &j1, &n1) == 0) {
        free(j1);
        j1 = NULL;
    }
    if (ds_eventlog_to_json(log, 0, &j1, &n1) == 0) {
        if (ds_eventlog_parse_json(j1, n1, &back) != 0) {
            __builtin_trap();
        }
        if (ds_eventlog_to_json(back, 0, &j2, &n2) != 0 || n1 != n2 || memcmp(j1, j2, n1) != 0) {
            __builtin_trap();
        }
    }
    free(j1);
    free(j2);
    ds_eventlog_free(back);
    ds_eventlog_free(log);
    return 0;
}
