/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libFuzzer harness for ds_appkeys_parse() (lib/keys/appkeys.c, the .appkeys.json reader of
 * kms-ratls.md §3.8): arbitrary bytes are either rejected or parsed; what parses must
 * serialize, and the serialized form must parse again and serialize to the same bytes.
 * Corpus: corpus/appkeys/.
 */
#include <stdlib.h>
#include <string.h>

#include "dstack/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct ds_appkeys k, k2;
    struct ds_keys_error err;
    memset(&k, 0, sizeof(k));
    memset(&k2, 0, sizeof(k2));
    if (ds_appkeys_parse((const char *)data, size, &k, &err) < 0)
        return 0;
    char *json = NULL, *json2 = NULL;
    size_t len = 0, len2 = 0;
    if (ds_appkeys_serialize(&k, &json, &len) == 0) {
        if (ds_appkeys_parse(json, len, &k2, &err) < 0)
            abort(); /* our own output must parse */
        if (ds_appkeys_serialize(&k2, &json2, &len2) < 0 || len2 != len ||
            memcmp(json, json2, len) != 0)
            abort(); /* and be a fixed point */
    }
    ds_keys_free_secret(json);
    ds_keys_free_secret(json2);
    ds_appkeys_done(&k2);
    ds_appkeys_done(&k);
    return 0;
}
