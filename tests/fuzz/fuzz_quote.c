/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for ds_quote_parse() (lib/attest/quote.c): arbitrary bytes must parse or
 * be rejected; when they parse, every borrowed pointer range is read byte by byte (so ASan
 * sees any range that leaves the input) and checked to lie inside the input. Also run over
 * corpus/quote/ by the replay driver in every test run.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/attest.h"

static volatile uint8_t sink;

static void touch(const uint8_t *data, size_t size, const uint8_t *p, size_t n, const char *what)
{
    if (n == 0) {
        return;
    }
    if (!p || p < data || (size_t)(p - data) > size || n > size - (size_t)(p - data)) {
        fprintf(stderr, "quote: %s range [%p, +%zu) outside the input [%p, +%zu)\n", what,
                (const void *)p, n, (const void *)data, size);
        abort();
    }
    uint8_t acc = 0;
    for (size_t i = 0; i < n; i++) {
        acc ^= p[i];
    }
    sink = acc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_quote q;
    if (ds_quote_parse(data, size, &q) != 0) {
        return 0;
    }
    touch(data, size, q.signed_data, q.signed_len, "signed_data");
    touch(data, size, q.qe_report_raw, DS_SGX_REPORT_SIZE, "qe_report_raw");
    touch(data, size, q.qe_auth_data, q.qe_auth_len, "qe_auth_data");
    touch(data, size, q.cert_data, q.cert_data_len, "cert_data");
    if (q.signed_data != data || q.trailing_len > size) {
        abort();
    }
    const uint8_t *rd = ds_quote_report_data(&q);
    if (!rd) {
        abort();
    }
    /* report_data is a copy inside q; reading it must be fine */
    uint8_t acc = 0;
    for (size_t i = 0; i < 64; i++) {
        acc ^= rd[i];
    }
    sink = acc;
    if (q.kind != DS_REPORT_SGX && q.kind != DS_REPORT_TD10 && q.kind != DS_REPORT_TD15) {
        abort();
    }
    return 0;
}
