/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Example for libdstack-client that uses every call once: version, reachability, a TLS key
 * with an RA-TLS certificate, an attestation, signing and verifying with each algorithm, and
 * a runtime event. Prints `name=value` lines (tests compare them with the agent's answers):
 *
 *   dstack-example-tour [-e ENDPOINT] [-E EVENT_NAME]
 *
 * Without -E no event is emitted (emitting changes RTMR3 for good). Exit status 0 on success,
 * 1 when a call fails, 2 on usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <dstack/client.h>

static int fail(struct dstack_client *c, const char *what, int r)
{
    fprintf(stderr, "tour: %s: %s: %s\n", what, dstack_strerror(r), dstack_client_errmsg(c));
    return 1;
}

/* Sign `msg` with `alg`, verify it, and verify a tampered copy (must be invalid). */
static int sign_verify(struct dstack_client *c, const char *alg, const uint8_t *msg, size_t len)
{
    struct dstack_sign_result *s = NULL;
    bool valid = false, tampered_valid = true;
    uint8_t bad[64];
    int r = dstack_sign(c, alg, msg, len, &s);
    if (r < 0) {
        return fail(c, alg, r);
    }
    r = dstack_verify(c, alg, msg, len, s->signature.data, s->signature.len, s->public_key.data,
                      s->public_key.len, &valid);
    if (r == 0 && s->signature.len == sizeof(bad)) {
        memcpy(bad, s->signature.data, sizeof(bad));
        bad[5] ^= 0x40;
        r = dstack_verify(c, alg, msg, len, bad, sizeof(bad), s->public_key.data, s->public_key.len,
                          &tampered_valid);
    }
    if (r < 0) {
        dstack_sign_result_free(s);
        return fail(c, "Verify", r);
    }
    printf("sign_%s_public_key_size=%zu\n", alg, s->public_key.len);
    printf("sign_%s_chain_count=%zu\n", alg, s->signature_chain_count);
    printf("verify_%s=%s\n", alg, valid ? "true" : "false");
    printf("verify_%s_tampered=%s\n", alg, tampered_valid ? "true" : "false");
    dstack_sign_result_free(s);
    return 0;
}

int main(int argc, char **argv)
{
    const char *endpoint = NULL, *event = NULL;
    struct dstack_client *c = NULL;
    struct dstack_version_result *ver = NULL;
    struct dstack_tls_key_result *tls = NULL;
    struct dstack_bytes att = {0};
    int opt, r, status = 1;

    while ((opt = getopt(argc, argv, "e:E:h")) != -1) {
        switch (opt) {
        case 'e':
            endpoint = optarg;
            break;
        case 'E':
            event = optarg;
            break;
        default:
            fprintf(stderr, "usage: %s [-e ENDPOINT] [-E EVENT_NAME]\n", argv[0]);
            return opt == 'h' ? 0 : 2;
        }
    }
    r = dstack_client_new(endpoint, &c);
    if (r < 0) {
        fprintf(stderr, "tour: cannot create a client: %s\n", dstack_strerror(r));
        return 1;
    }
    printf("reachable=%s\n", dstack_is_reachable(c) ? "true" : "false");
    if ((r = dstack_version(c, &ver)) < 0) {
        status = fail(c, "Version", r);
        goto out;
    }
    printf("version=%s\nrev=%s\n", ver->version, ver->rev);

    const char *names[] = {"localhost", "127.0.0.1"};
    struct dstack_tls_key_options o = DSTACK_TLS_KEY_OPTIONS_INIT;
    o.subject = "tour";
    o.alt_names = names;
    o.alt_names_count = 2;
    o.usage_ra_tls = true;
    if ((r = dstack_get_tls_key(c, &o, &tls)) < 0) {
        status = fail(c, "GetTlsKey", r);
        goto out;
    }
    printf("tls_key_pkcs8=%s\n",
           strncmp(tls->key, "-----BEGIN PRIVATE KEY-----", 27) == 0 ? "true" : "false");
    printf("tls_chain_count=%zu\n", tls->certificate_chain_count);

    if ((r = dstack_attest(c, "tour", 4, &att)) < 0) {
        status = fail(c, "Attest", r);
        goto out;
    }
    printf("attestation_size=%zu\nattestation_first_byte=%02x\n", att.len,
           att.len > 0 ? att.data[0] : 0);

    static const uint8_t digest[32] = {1,  2,  3,  4,  5,  6,  7,  8,  9,  10, 11,
                                       12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
                                       23, 24, 25, 26, 27, 28, 29, 30, 31};
    const uint8_t msg[] = "tour message";
    if (sign_verify(c, "ed25519", msg, sizeof(msg) - 1) != 0 ||
        sign_verify(c, "secp256k1", msg, sizeof(msg) - 1) != 0 ||
        sign_verify(c, "secp256k1_prehashed", digest, sizeof(digest)) != 0) {
        goto out;
    }
    /* Refused before sending: a pre-hashed digest must be 32 bytes. */
    struct dstack_sign_result *s = NULL;
    r = dstack_sign(c, "secp256k1_prehashed", msg, 5, &s);
    printf("prehashed_short=%s\n", dstack_strerror(r));
    dstack_sign_result_free(s);
    uint8_t big[65] = {0};
    struct dstack_quote_result *q = NULL;
    r = dstack_get_quote(c, big, sizeof(big), &q);
    printf("quote_65_bytes=%s\n", dstack_strerror(r));
    dstack_quote_result_free(q);
    struct dstack_key_result *k = NULL;
    r = dstack_get_key(c, "/", "", "rsa", &k);
    dstack_key_result_free(k);
    printf("getkey_rsa=%s: %s\n", dstack_strerror(r), dstack_client_errmsg(c));

    if (event != NULL) {
        if ((r = dstack_emit_event(c, event, "tour-payload", 12)) < 0) {
            status = fail(c, "EmitEvent", r);
            goto out;
        }
        printf("emitted=%s\n", event);
    }
    status = 0;
out:
    dstack_bytes_free(&att);
    dstack_tls_key_result_free(tls);
    dstack_version_result_free(ver);
    dstack_client_free(c);
    return status;
}
