/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the dstack-tee-sim request parser (lib/tee/tee_proto.c), the one function
 * that sees the bytes a guest or the control client sends: the body of one frame, parsed with
 * the device and with the control operation sets. Corpus: tests/fuzz/corpus/teesim_request/.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "tee/tee_proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const unsigned masks[] = {DS_TEE_OPS_DEVICE, DS_TEE_OPS_CONTROL};
    if (size > DS_TEE_PROTO_CONTROL_MAX_REQUEST) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
        struct ds_tee_request req;
        char err[128];
        int r = ds_tee_request_parse(data, size, masks[i], &req, err, sizeof(err));
        if (r == 0) {
            /* touch what a handler would use */
            if (req.op == DS_TEE_OP_EXTEND_RTMR && req.payload_len) {
                volatile uint8_t x = req.payload[req.payload_len - 1];
                (void)x;
            }
            if (req.event) {
                volatile size_t n = strlen(req.event);
                (void)n;
            }
            ds_tee_request_done(&req);
        } else {
            /* the error message is always a C string */
            volatile size_t n = strlen(err);
            (void)n;
        }
    }
    return 0;
}
