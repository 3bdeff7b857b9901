/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the PROXY protocol v1/v2 parser (ds_pp_parse) that reads a load
 * balancer's header before anything else. Invariants: a complete header is no longer than the
 * input and the protocol limit; its addresses are AF_INET/AF_INET6 unless LOCAL; rebuilding the
 * parsed addresses in the same version and parsing again yields the same addresses; every strict
 * prefix of a complete header is "need more".
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <netinet/in.h>

#include <dstack/gateway.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_pp_info info, again;
    int rc = ds_pp_parse(data, size, &info);
    if (rc != 1) {
        if (rc != 0 && rc != -DS_E_PROTOCOL && rc != -DS_E_FORMAT && rc != -DS_E_UNSUPPORTED &&
            rc != -DS_E_LIMIT) {
            abort();
        }
        return 0;
    }
    if (info.header_size > size || info.header_size > DS_PP_V2_MAX ||
        (info.version == 1 && info.header_size > DS_PP_V1_MAX)) {
        abort();
    }
    if (ds_pp_parse(data, info.header_size - 1, &again) != 0) {
        abort();
    }
    if (info.local) {
        return 0;
    }
    int fam = info.src.ss_family;
    if ((fam != AF_INET && fam != AF_INET6) || info.dst.ss_family != fam) {
        abort();
    }
    struct ds_buf b;
    ds_buf_init(&b, 512);
    int n = info.version == 1
                ? ds_pp_build_v1(&b, (struct sockaddr *)&info.src, (struct sockaddr *)&info.dst)
                : ds_pp_build_v2(&b, (struct sockaddr *)&info.src, (struct sockaddr *)&info.dst);
    size_t sz = fam == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    if (n <= 0 || ds_pp_parse(b.data, b.len, &again) != 1 ||
        memcmp(&again.src, &info.src, sz) != 0 || memcmp(&again.dst, &info.dst, sz) != 0) {
        abort();
    }
    ds_buf_done(&b);
    return 0;
}
