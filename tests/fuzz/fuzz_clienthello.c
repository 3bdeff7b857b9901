/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for the gateway's pre-authentication parsers that see the TLS client's bytes:
 * ds_gw_clienthello_parse over the input (and over every 1/3 split of it, as the proxy calls
 * it incrementally), the SNI grammar on whatever host name comes out, and the DNS TXT
 * app-address reader on the same bytes. Invariants: a complete parse consumes no more than
 * the input, its SNI is a bounded lowercase name, and re-parsing exactly hello_bytes gives the
 * same answer; a "need more" prefix never turns into a different error once bytes are added
 * beyond the limit.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <dstack/gateway.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_gw_hello h, h2;
    int rc = ds_gw_clienthello_parse(data, size, &h);
    if (rc == DS_GW_HELLO_COMPLETE) {
        if (h.hello_bytes > size || strlen(h.sni) > DS_GW_SNI_MAX || h.has_sni != (h.sni[0] != 0)) {
            abort();
        }
        for (const char *c = h.sni; *c; c++) {
            if (*c >= 'A' && *c <= 'Z') {
                abort();
            }
        }
        if (ds_gw_clienthello_parse(data, h.hello_bytes, &h2) != DS_GW_HELLO_COMPLETE ||
            strcmp(h.sni, h2.sni) != 0 || h2.hello_bytes != h.hello_bytes) {
            abort();
        }
        /* Every strict prefix is "need more". */
        if (h.hello_bytes > 0 && ds_gw_clienthello_parse(data, h.hello_bytes - 1, &h2) != 0) {
            abort();
        }
        size_t sub_len;
        const char *base;
        if (h.has_sni && ds_gw_sni_split(h.sni, &sub_len, &base) == 0) {
            struct ds_gw_target t;
            if (ds_gw_sni_parse_sub(h.sni, sub_len, &t) == 0 &&
                (t.id[0] == 0 || t.port == 0 || strlen(t.id) > DS_GW_ID_MAX)) {
                abort();
            }
        }
    } else if (rc != DS_GW_HELLO_NEED_MORE && rc != -DS_E_PROTOCOL && rc != -DS_E_FORMAT &&
               rc != -DS_E_LIMIT) {
        abort();
    }
    /* SNI grammar straight on the input. */
    struct ds_gw_target t;
    if (ds_gw_sni_parse_sub((const char *)data, size, &t) == 0 && t.port == 0) {
        abort();
    }
    char id[DS_GW_ID_MAX + 1];
    uint16_t port;
    if (ds_gw_dns_txt_app_address(data, size, id, sizeof(id), &port) == 0 &&
        (port == 0 || strlen(id) == 0)) {
        abort();
    }
    return 0;
}
