/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Simulator mode (--simulator), for app developers and the SDK test suites: the agent runs
 * with an EMBEDDED simulated TDX module (lib/tee "embedded:<seed>") and development inputs
 * that a real guest gets from the host and the KMS: a small app-compose.json, a sys-config
 * with a vm_config, app keys derived from fixed development KMS roots (stable across
 * restarts), a self-signed development app CA, and the boot-time runtime events dstack-util
 * would extend into RTMR3 (spec guest-agent-api.md §4.10), so Info and the event log look
 * like a real CVM's. Every value here is PUBLIC: nothing produced in this mode proves or
 * protects anything.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"
#include "dstack/crypto.h"
#include "dstack/eventlog.h"
#include "log.h"

/* Mock PKI seed of the embedded module: ASCII "dstack-c-embedded-development-01". */
#define SIM_DEV_SEED_HEX "64737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031"

/* Labels hashed into the development identity (SHA-256, cut to size). */
#define SIM_APP_ID_LABEL      "dstack-c development app id"
#define SIM_INSTANCE_ID_LABEL "dstack-c development instance id"
#define SIM_OS_IMAGE_LABEL    "dstack-c development os image"

#define SIM_COMPOSE                                                                                \
    "{\"manifest_version\":2,\"name\":\"dstack-dev-app\",\"runner\":\"docker-compose\","           \
    "\"docker_compose_file\":\"services:\\n  app:\\n    image: alpine\\n    command: sleep "       \
    "infinity\\n\",\"kms_enabled\":true,\"gateway_enabled\":false,\"local_key_provider_enabled\":" \
    "false,\"public_logs\":true,\"public_sysinfo\":true,\"public_tcbinfo\":true,"                  \
    "\"no_instance_id\":false,\"secure_time\":false}"

static int boot_events(struct agent *a, const char *kms_id);

static void label_hash(const char *label, uint8_t *out, size_t n)
{
    uint8_t h[DS_SHA256_LEN];
    ds_sha256(label, strlen(label), h);
    memcpy(out, h, n);
}

static void warn_banner(const char *seed)
{
    log_warnx("**************************************************************************");
    log_warnx("* SIMULATOR MODE: INSECURE. The TEE is simulated inside this process and *");
    log_warnx("* every key is a PUBLIC development key. Quotes verify only against the  *");
    log_warnx("* mock root of the seed below; they prove NOTHING. Never use in          *");
    log_warnx("* production or with real secrets.                                       *");
    log_warnx("**************************************************************************");
    log_warnx("mock PKI seed %s (root: dstack-tee-sim root-ca --seed %s)", seed, seed);
}

static int open_tee(struct agent *a, const char *seed)
{
    char spec[16 + 2 * 32];
    const char *use = a->cfg.tee;
    if (!use || !*use) {
        snprintf(spec, sizeof(spec), "embedded:%s", seed);
        use = spec;
    }
    char err[256] = "";
    int r = ds_tee_open(use, &a->tee, err, sizeof(err));
    if (r < 0) {
        log_warnx("cannot open the TEE \"%s\": %s", use, err[0] ? err : ds_strerror(r));
    }
    return r;
}

int agent_sim_setup(struct agent *a)
{
    const char *seed = a->cfg.seed ? a->cfg.seed : SIM_DEV_SEED_HEX;
    uint8_t app_id[DS_APP_ID_SIZE], instance_id[DS_APP_ID_SIZE], os_image[DS_SHA256_LEN];
    uint8_t ca[32];
    char kms_id[183], os_hex[2 * DS_SHA256_LEN + 1], sys[512];
    char *ca_pem = NULL;
    warn_banner(seed);
    DS_TRY(open_tee(a, seed));
    label_hash(SIM_APP_ID_LABEL, app_id, sizeof(app_id));
    label_hash(SIM_INSTANCE_ID_LABEL, instance_id, sizeof(instance_id));
    label_hash(SIM_OS_IMAGE_LABEL, os_image, sizeof(os_image));
    ds_hex_encode(os_image, sizeof(os_image), os_hex);
    /* sys-config carries vm_config as a JSON string (§4.1). */
    snprintf(sys, sizeof(sys),
             "{\"vm_config\":\"{\\\"os_image_hash\\\":\\\"%s\\\",\\\"cpu_count\\\":1,"
             "\\\"memory_size\\\":2147483648}\"}",
             os_hex);
    int r = agent_state_set_inputs(a, SIM_COMPOSE, sys);
    if (r < 0) {
        log_warnx("development inputs: %s", ds_strerror(r));
        goto out;
    }
    r = agent_keys_dev(a, app_id, instance_id, sizeof(instance_id), ca, kms_id);
    if (r == 0) {
        r = agent_tls_dev_ca(ca, &ca_pem);
    }
    if (r == 0) {
        r = agent_keys_set_ca_cert(a, ca_pem);
    }
    if (r < 0) {
        log_warnx("development keys: %s", ds_strerror(r));
        goto out;
    }
    r = boot_events(a, kms_id);
out:
    ds_wipe(ca, sizeof(ca));
    free(ca_pem);
    return r;
}

/* Runtime event with a V1 digest, extended into RTMR3 through the TEE provider. */
static int emit(struct agent *a, const char *name, const void *payload, size_t len)
{
    uint8_t digest[DS_SHA384_LEN];
    DS_TRY(ds_runtime_event_digest_sha384(a->event_log_version, name, payload, len, digest));
    return ds_tee_extend_rtmr(a->tee, 3, digest, name, payload, len);
}

static int boot_events(struct agent *a, const char *kms_id)
{
    /* Only a fresh TD gets them: a tee-sim TD given with --tee may already have booted. */
    char *log_json = NULL;
    struct ds_event_log *log = NULL;
    int r = ds_tee_get_event_log(a->tee, &log_json);
    if (r == 0) {
        r = ds_eventlog_parse_json(log_json, strlen(log_json), &log);
    }
    free(log_json);
    if (r < 0) {
        log_warnx("cannot read the event log: %s", ds_strerror(r));
        return r;
    }
    bool booted = ds_eventlog_find_event(log, DS_EVENT_APP_ID) != NULL;
    ds_eventlog_free(log);
    if (booted) {
        log_info("TD already has boot-time runtime events; not emitting them again");
        return 0;
    }
    uint8_t app_id[DS_APP_ID_SIZE], instance_id[DS_APP_ID_SIZE], os_image[DS_SHA256_LEN];
    uint8_t compose_hash[DS_SHA256_LEN];
    char kp[300];
    label_hash(SIM_APP_ID_LABEL, app_id, sizeof(app_id));
    label_hash(SIM_INSTANCE_ID_LABEL, instance_id, sizeof(instance_id));
    label_hash(SIM_OS_IMAGE_LABEL, os_image, sizeof(os_image));
    ds_sha256(a->compose_raw, strlen(a->compose_raw), compose_hash);
    snprintf(kp, sizeof(kp), "{\"name\":\"kms\",\"id\":\"%s\"}", kms_id);
    /* dstack-util's boot order (§4.10). */
    r = emit(a, DS_EVENT_SYSTEM_PREPARING, "", 0);
    if (r == 0) {
        r = emit(a, DS_EVENT_APP_ID, app_id, sizeof(app_id));
    }
    if (r == 0) {
        r = emit(a, DS_EVENT_COMPOSE_HASH, compose_hash, sizeof(compose_hash));
    }
    if (r == 0) {
        r = emit(a, DS_EVENT_INSTANCE_ID, instance_id, sizeof(instance_id));
    }
    if (r == 0) {
        r = emit(a, DS_EVENT_BOOT_MR_DONE, "", 0);
    }
    if (r == 0) {
        r = emit(a, DS_EVENT_OS_IMAGE_HASH, os_image, sizeof(os_image));
    }
    if (r == 0) {
        r = emit(a, DS_EVENT_KEY_PROVIDER, kp, strlen(kp));
    }
    if (r == 0) {
        r = emit(a, DS_EVENT_STORAGE_FS, "ext4", 4);
    }
    if (r == 0) {
        r = emit(a, DS_EVENT_SYSTEM_READY, "", 0);
    }
    if (r < 0) {
        log_warnx("cannot emit the boot-time runtime events: %s", ds_strerror(r));
    }
    return r;
}
