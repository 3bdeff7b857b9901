/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Example for libdstack-client: connect to the guest agent (the endpoint given with -e, else
 * DSTACK_SIMULATOR_ENDPOINT, else the default socket), derive a key, take a quote over a
 * short nonce and read the app id. Prints `name=value` lines so scripts can check them:
 *
 *   dstack-example-getkey [-e ENDPOINT] [PATH [PURPOSE [REPORT_DATA]]]
 *
 * Exit status 0 on success, 1 when a call fails (the error is printed on stderr), 2 on usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dstack/client.h>

static void print_hex(const char *name, const uint8_t *p, size_t n)
{
    printf("%s=", name);
    for (size_t i = 0; i < n; i++) {
        printf("%02x", p[i]);
    }
    printf("\n");
}

static int fail(struct dstack_client *c, const char *what, int r)
{
    fprintf(stderr, "getkey: %s: %s: %s\n", what, dstack_strerror(r), dstack_client_errmsg(c));
    return 1;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL;
    struct dstack_client *c = NULL;
    struct dstack_key_result *key = NULL;
    struct dstack_quote_result *quote = NULL;
    struct dstack_info_result *info = NULL;
    int opt, r, status = 1;

    while ((opt = getopt(argc, argv, "e:h")) != -1) {
        switch (opt) {
        case 'e':
            endpoint = optarg;
            break;
        default:
            fprintf(stderr, "usage: %s [-e ENDPOINT] [PATH [PURPOSE [REPORT_DATA]]]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    const char *path = optind < argc ? argv[optind] : "/";
    const char *purpose = optind + 1 < argc ? argv[optind + 1] : "example";
    const char *nonce = optind + 2 < argc ? argv[optind + 2] : "dstack-c example";

    r = dstack_client_new(endpoint, &c);
    if (r < 0) {
        fprintf(stderr, "getkey: cannot create a client: %s\n", dstack_strerror(r));
        return 1;
    }
    printf("endpoint=%s\n", dstack_client_endpoint(c));
    if ((r = dstack_get_key(c, path, purpose, "secp256k1", &key)) < 0) {
        status = fail(c, "GetKey", r);
        goto out;
    }
    print_hex("key", key->key.data, key->key.len);
    printf("signature_chain_count=%zu\n", key->signature_chain_count);
    for (size_t i = 0; i < key->signature_chain_count; i++) {
        char name[48];
        snprintf(name, sizeof(name), "signature_chain_%zu", i);
        print_hex(name, key->signature_chain[i].data, key->signature_chain[i].len);
    }
    if ((r = dstack_get_quote(c, nonce, strlen(nonce), &quote)) < 0) {
        status = fail(c, "GetQuote", r);
        goto out;
    }
    printf("quote_size=%zu\n", quote->quote.len);
    print_hex("report_data", quote->report_data, sizeof(quote->report_data));
    uint8_t rtmrs[4][DSTACK_RTMR_SIZE];
    if ((r = dstack_quote_replay_rtmrs(quote, rtmrs)) < 0) {
        status = fail(c, "replay", r);
        goto out;
    }
    print_hex("replayed_rtmr3", rtmrs[3], DSTACK_RTMR_SIZE);
    if ((r = dstack_info(c, &info)) < 0) {
        status = fail(c, "Info", r);
        goto out;
    }
    printf("app_id=%s\n", info->app_id);
    status = 0;
out:
    dstack_info_result_free(info);
    dstack_quote_result_free(quote);
    dstack_key_result_free(key);
    dstack_client_free(c);
    return status;
}
