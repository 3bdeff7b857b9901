/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack-util get-keys`: fetch this CVM's app keys from a KMS and write the app keys file
 * (spec kms-ratls.md §3.8, host-side.md §3.3 step 10 / §3.5 "kms"). The KMS learns the app id,
 * compose hash and instance id from the RTMR3 runtime events in the quote, so they must have
 * been measured (app-id, compose-hash, instance-id, boot-mr-done) before this runs; --app-id
 * and --instance-id are checked against the measured values so a mismatch is reported here
 * rather than as a confusing KMS denial. The keys file is written atomically with mode 0600;
 * only fingerprints of keys are printed.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"
#include "dstack/eventlog.h"
#include "log.h"
#include "util.h"

#define ID_MAX 64 /* bytes of --app-id / --instance-id */

void util_get_keys_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack-util get-keys --kms-url URL --app-id HEX --output PATH\n"
            "                            [--instance-id HEX] [--vm-config FILE] [--tee SPEC]\n"
            "                            [--pccs-url URL] [--insecure-allow-simulated]\n"
            "\n"
            "Fetch the app keys from a KMS (GetTempCaCert, an RA-TLS client certificate\n"
            "with a quote from the TEE, GetAppKey over mutual TLS) and write them to PATH\n"
            "(.appkeys.json format, mode 0600, atomically).\n"
            "  --kms-url URL    https://host:port[/prpc]\n"
            "  --app-id HEX     must equal the TEE's measured app-id event (20 bytes)\n"
            "  --instance-id HEX  if given, must equal the measured instance-id event\n"
            "  --vm-config FILE vm_config JSON sent with GetAppKey (os_image_hash, ...)\n"
            "  --tee SPEC       tdx, sim:<socket>, embedded (default: DSTACK_TEE, autodetect)\n"
            "  --pccs-url URL   collateral for the KMS server's own attestation\n"
            "                   (default " UTIL_PCCS_DEFAULT_URL ")\n"
            "  --insecure-allow-simulated  accept a KMS whose attestation is simulated (mock\n"
            "                   root fetched from --pccs-url); development only\n");
}

/* Decode a hex id option (1..ID_MAX bytes). */
static int parse_id(const char *opt, const char *hex, uint8_t *out, size_t *out_len)
{
    size_t n = strlen(hex);
    if (n >= 2 && hex[0] == '0' && (hex[1] == 'x' || hex[1] == 'X')) {
        hex += 2;
        n -= 2;
    }
    if (n == 0 || n % 2 != 0 || n / 2 > ID_MAX || ds_hex_decode(hex, n, out, n / 2) < 0) {
        log_warnx("--%s: expected hex of 1..%d bytes, got '%s'", opt, ID_MAX, hex);
        return -1;
    }
    *out_len = n / 2;
    return 0;
}

/* The measured payload of runtime event `name` must equal want (when given). */
static int check_event(const struct ds_event_log *log, const char *name, const char *opt,
                       const uint8_t *want, size_t want_len, bool required)
{
    const struct ds_event *ev = ds_eventlog_find_event(log, name);
    if (!ev) {
        if (required) {
            log_warnx("the TEE has no '%s' runtime event: measure app-id, compose-hash, "
                      "instance-id and boot-mr-done before fetching keys",
                      name);
            return -1;
        }
        return 0;
    }
    if (want && (ev->payload_len != want_len || memcmp(ev->payload, want, want_len) != 0)) {
        char *got = ds_hex_strdup(ev->payload, ev->payload_len);
        log_warnx("--%s does not match the TEE's measured '%s' event (%s)", opt, name,
                  got ? got : "?");
        free(got);
        return -1;
    }
    return 0;
}

static int check_measured(struct ds_tee *tee, const uint8_t *app_id, size_t app_id_len,
                          const uint8_t *instance_id, size_t instance_id_len)
{
    char *json = NULL;
    struct ds_event_log *log = NULL;
    int r = ds_tee_get_event_log(tee, &json);
    if (r == 0) {
        r = ds_eventlog_parse_json(json, strlen(json), &log);
    }
    free(json);
    if (r < 0) {
        log_warnx("TEE event log: %s", ds_strerror(r));
        return -1;
    }
    int rc = 0;
    if (check_event(log, DS_EVENT_APP_ID, "app-id", app_id, app_id_len, true) < 0 ||
        check_event(log, DS_EVENT_INSTANCE_ID, "instance-id", instance_id, instance_id_len,
                    instance_id != NULL) < 0) {
        rc = -1;
    } else if (!ds_eventlog_find_event(log, DS_EVENT_BOOT_MR_DONE)) {
        log_warnx("the TEE has no '%s' event yet: the KMS sees a boot still in progress",
                  DS_EVENT_BOOT_MR_DONE);
    }
    ds_eventlog_free(log);
    return rc;
}

/* Log a short fingerprint of a secret (first 8 bytes of its SHA-256), never the secret. */
static void log_fingerprint(const char *what, const uint8_t *key, size_t len)
{
    uint8_t d[DS_SHA256_LEN];
    char hex[17];
    ds_sha256(key, len, d);
    ds_hex_encode(d, 8, hex);
    log_info("%s: sha256 fingerprint %s", what, hex);
}

int util_cmd_get_keys(int argc, char **argv)
{
    const char *kms_url = NULL, *app_id_hex = NULL, *instance_id_hex = NULL, *vm_config_path = NULL,
               *output = NULL, *tee_spec = NULL, *pccs_url = NULL;
    bool allow_simulated = false, help = false;
    const struct util_opt opts[] = {
        {"kms-url", UTIL_OPT_STRING, &kms_url, "URL", true},
        {"app-id", UTIL_OPT_STRING, &app_id_hex, "HEX", true},
        {"instance-id", UTIL_OPT_STRING, &instance_id_hex, "HEX", false},
        {"vm-config", UTIL_OPT_STRING, &vm_config_path, "FILE", false},
        {"output", UTIL_OPT_STRING, &output, "PATH", true},
        {"tee", UTIL_OPT_STRING, &tee_spec, "SPEC", false},
        {"pccs-url", UTIL_OPT_STRING, &pccs_url, "URL", false},
        {"insecure-allow-simulated", UTIL_OPT_FLAG, &allow_simulated, NULL, false},
        {NULL, 0, NULL, NULL, false},
    };
    int rc = util_parse_opts("get-keys", argc, argv, opts, &help);
    if (rc != 0) {
        return rc;
    }
    if (help) {
        util_get_keys_usage(stdout);
        return UTIL_EXIT_OK;
    }
    uint8_t app_id[ID_MAX], instance_id[ID_MAX];
    size_t app_id_len = 0, instance_id_len = 0;
    if (parse_id("app-id", app_id_hex, app_id, &app_id_len) < 0 ||
        (instance_id_hex &&
         parse_id("instance-id", instance_id_hex, instance_id, &instance_id_len) < 0)) {
        return UTIL_EXIT_USAGE;
    }
    if (app_id_len != DS_APP_ID_SIZE) {
        log_warnx("--app-id: expected %d bytes, got %zu", DS_APP_ID_SIZE, app_id_len);
        return UTIL_EXIT_USAGE;
    }
    struct util_kms_client client;
    if (util_kms_client_init(&client, kms_url) < 0) {
        log_warnx("--kms-url: expected https://HOST[:PORT][/prpc], got '%s'", kms_url);
        return UTIL_EXIT_USAGE;
    }
    client.pccs_url = pccs_url;

    char *vm_config = NULL;
    struct ds_tee *tee = NULL;
    struct ds_verifier *verifier = NULL;
    struct ds_appkeys keys;
    uint8_t *os_image_hash = NULL;
    size_t os_image_hash_len = 0;
    char err[UTIL_KMS_ERR_MAX] = "";
    memset(&keys, 0, sizeof(keys));
    int r;
    rc = UTIL_EXIT_USAGE;
    if (vm_config_path) {
        uint8_t *data = NULL;
        size_t len = 0;
        r = ds_read_file(vm_config_path, UTIL_VM_CONFIG_MAX, &data, &len);
        if (r == 0 && memchr(data, '\0', len)) {
            free(data);
            r = -DS_E_FORMAT;
        }
        if (r < 0) {
            log_warnx("--vm-config '%s': %s", vm_config_path, ds_strerror(r));
            goto out; /* rc is UTIL_EXIT_USAGE */
        }
        vm_config = (char *)data;
    }
    r = util_make_verifier(pccs_url, allow_simulated, &verifier, err, sizeof(err));
    if (r < 0) {
        log_warnx("%s", err);
        rc = r == -EINVAL ? UTIL_EXIT_USAGE : UTIL_EXIT_FAIL;
        goto out;
    }
    client.verifier = verifier;
    rc = UTIL_EXIT_FAIL;
    r = ds_tee_open(tee_spec, &tee, err, sizeof(err));
    if (r < 0) {
        log_warnx("TEE: %s", err[0] ? err : ds_strerror(r));
        goto out;
    }
    if (ds_tee_is_simulated(tee)) {
        log_warnx("the TEE is SIMULATED (%s): a KMS that trusts it releases development keys",
                  ds_tee_kind(tee));
    }
    if (check_measured(tee, app_id, app_id_len, instance_id_hex ? instance_id : NULL,
                       instance_id_len) < 0) {
        goto out;
    }
    log_info("requesting app keys from %s", client.base);
    r = util_kms_fetch_app_keys(&client, tee, vm_config, &keys, &os_image_hash, &os_image_hash_len,
                                err, sizeof(err));
    if (r < 0) {
        log_warnx("%s", err);
        goto out;
    }
    r = ds_appkeys_save(output, &keys);
    if (r < 0) {
        log_warnx("writing '%s': %s", output, ds_strerror(r));
        goto out;
    }
    log_fingerprint("disk_crypt_key", keys.disk_crypt_key, keys.disk_crypt_key_len);
    if (keys.env_crypt_key_len) {
        log_fingerprint("env_crypt_key", keys.env_crypt_key, keys.env_crypt_key_len);
    }
    log_fingerprint("k256_key", keys.k256_key, DS_KEY_SIZE);
    char *kp = ds_hex_strdup(keys.pubkey, keys.pubkey_len);
    char *oh = ds_hex_strdup(os_image_hash, os_image_hash_len);
    log_info("app keys written to %s (key provider kms, id %s, os_image_hash %s, gateway app "
             "id \"%s\")",
             output, kp ? kp : "?", oh && oh[0] ? oh : "(none)", keys.gateway_app_id);
    free(kp);
    free(oh);
    rc = UTIL_EXIT_OK;
out:
    ds_appkeys_done(&keys);
    free(os_image_hash);
    free(vm_config);
    ds_tee_close(tee);
    ds_verifier_free(verifier);
    return rc;
}
