/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The KMS's own attestation and its verification of others. Own side: a TEE provider (real
 * TDX, a dstack-tee-sim device, or in --dev the embedded simulated TDX module with the
 * boot-time runtime events dstack-util would have extended), attestations over report_data
 * and RA-TLS extensions for our certificates. Verifier side: which root is trusted (Intel's,
 * or a simulator's mock root only with insecure_allow_simulated, which --dev implies), where
 * collateral comes from (a PCCS, or in --dev made locally from the embedded mock PKI), and
 * BootInfo construction from verified attestations (spec kms-ratls.md §1.3, §4.4).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dstack/crypto.h"
#include "dstack/sim.h"
#include "kms.h"
#include "log.h"

/* The embedded TEE's default development seed (ASCII "dstack-c-embedded-development-01"). */
#define DEV_SEED_HEX         "64737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031"
#define DEV_APP_ID_LABEL     "dstack-c development kms app id"
#define DEV_INSTANCE_LABEL   "dstack-c development kms instance id"
#define DEV_OS_IMAGE_LABEL   "dstack-c development os image"
#define DEV_COMPOSE          "{\"manifest_version\":2,\"name\":\"dstack-kms-dev\",\"runner\":\"bash\"}"
#define DEV_COLL_REFRESH     3600 /* seconds between regenerations of dev collateral */
#define SIM_ROOT_PATH        "/dstack-sim/v1/root-ca.der"
#define ROOT_CA_FILE_MAX     (64 * 1024)
#define SELF_EVENTS_FLAG_ENV "DSTACK_KMS_DEV_INSTANCE" /* tests: distinct dev instances */

static void label_hash(const char *label, const char *extra, uint8_t *out, size_t n)
{
    uint8_t h[DS_SHA256_LEN];
    ds_sha256_v(h, 2, label, strlen(label), extra, strlen(extra));
    memcpy(out, h, n);
}

static int emit(struct kms *k, const char *name, const void *payload, size_t len)
{
    uint8_t digest[DS_SHA384_LEN];
    DS_TRY(ds_runtime_event_digest_sha384(1, name, payload, len, digest));
    return ds_tee_extend_rtmr(k->tee, 3, digest, name, payload, len);
}

/* Whether the TD already has boot-time runtime events (a tee-sim TD after a restart). */
static bool already_booted(struct kms *k)
{
    char *json = NULL;
    struct ds_event_log *log = NULL;
    bool booted = false;
    if (ds_tee_get_event_log(k->tee, &json) == 0 &&
        ds_eventlog_parse_json(json, strlen(json), &log) == 0) {
        booted = ds_eventlog_find_event(log, DS_EVENT_APP_ID) != NULL;
    }
    free(json);
    ds_eventlog_free(log);
    return booted;
}

/* dstack-util's boot order (§4.1) for a development KMS "CVM". */
static int dev_boot_events(struct kms *k)
{
    uint8_t app_id[DS_APP_ID_SIZE], instance[DS_APP_ID_SIZE], os_image[32], compose[32];
    char os_hex[65], cfg[256];
    const char *inst = getenv(SELF_EVENTS_FLAG_ENV);
    inst = inst ? inst : "";
    label_hash(DEV_APP_ID_LABEL, "", app_id, sizeof(app_id));
    label_hash(DEV_INSTANCE_LABEL, inst, instance, sizeof(instance));
    label_hash(DEV_OS_IMAGE_LABEL, "", os_image, sizeof(os_image));
    ds_sha256(DEV_COMPOSE, strlen(DEV_COMPOSE), compose);
    ds_hex_encode(os_image, sizeof(os_image), os_hex);
    snprintf(cfg, sizeof(cfg),
             "{\"os_image_hash\":\"%s\",\"cpu_count\":1,\"memory_size\":2147483648}", os_hex);
    if (!k->vm_config) {
        k->vm_config = strdup(cfg);
        if (!k->vm_config) {
            return -ENOMEM;
        }
    }
    static const char kp[] = "{\"name\":\"none\",\"id\":\"\"}";
    if (already_booted(k)) {
        log_info("the TD already has boot-time runtime events; not emitting them again");
        return 0;
    }
    DS_TRY(emit(k, DS_EVENT_SYSTEM_PREPARING, "", 0));
    DS_TRY(emit(k, DS_EVENT_APP_ID, app_id, sizeof(app_id)));
    DS_TRY(emit(k, DS_EVENT_COMPOSE_HASH, compose, sizeof(compose)));
    DS_TRY(emit(k, DS_EVENT_INSTANCE_ID, instance, sizeof(instance)));
    DS_TRY(emit(k, DS_EVENT_BOOT_MR_DONE, "", 0));
    DS_TRY(emit(k, DS_EVENT_OS_IMAGE_HASH, os_image, sizeof(os_image)));
    DS_TRY(emit(k, DS_EVENT_KEY_PROVIDER, kp, strlen(kp)));
    DS_TRY(emit(k, DS_EVENT_STORAGE_FS, "ext4", 4));
    return emit(k, DS_EVENT_SYSTEM_READY, "", 0);
}

static int load_root_file(const char *path, struct ds_verifier **out)
{
    uint8_t *der = NULL;
    size_t len = 0;
    int r = ds_read_file(path, ROOT_CA_FILE_MAX, &der, &len);
    if (r < 0) {
        log_warnx("cannot read the simulator root CA \"%s\": %s", path, ds_strerror(r));
        return r;
    }
    r = ds_verifier_new(der, len, out);
    free(der);
    return r;
}

static int fetch_root(const char *pccs, struct ds_verifier **out)
{
    char url[KMS_PATH_MAX], err[KMS_ERR_MAX] = "";
    uint8_t *body = NULL;
    size_t len = 0;
    long status = 0;
    size_t n = strlen(pccs);
    while (n > 0 && pccs[n - 1] == '/') {
        n--;
    }
    snprintf(url, sizeof(url), "%.*s%s", (int)n, pccs, SIM_ROOT_PATH);
    int r = kms_http(url, NULL, NULL, 0, ROOT_CA_FILE_MAX, &status, &body, &len, err, sizeof(err));
    if (r == 0 && status != 200) {
        snprintf(err, sizeof(err), "HTTP %ld", status);
        r = -DS_E_NETWORK;
    }
    if (r == 0) {
        r = ds_verifier_new(body, len, out);
    }
    if (r < 0) {
        log_warnx("cannot fetch the simulator root CA from \"%s\": %s %s", url, ds_strerror(r),
                  err);
    }
    free(body);
    return r;
}

static int seed_of(const char *tee, uint8_t seed[DS_SIM_SEED_LEN])
{
    const char *hex = DEV_SEED_HEX;
    if (tee && strncmp(tee, "embedded:", 9) == 0) {
        hex = tee + 9;
    }
    return ds_hex_decode(hex, strlen(hex), seed, DS_SIM_SEED_LEN) == DS_SIM_SEED_LEN ? 0
                                                                                     : -DS_E_FORMAT;
}

static int open_verifier(struct kms *k)
{
    const struct kms_config *c = &k->cfg;
    bool simulated = c->insecure_allow_simulated || c->dev;
    if (!simulated) {
        log_info("attestation: trusting only Intel's SGX root CA (collateral from \"%s\")",
                 c->pccs_url ? c->pccs_url : KMS_DEFAULT_PCCS);
        return ds_verifier_new(NULL, 0, &k->verifier);
    }
    if (c->dev && !c->insecure_allow_simulated) {
        log_warnx("--dev implies insecure_allow_simulated: SIMULATED quotes are ACCEPTED");
    } else {
        log_warnx("insecure_allow_simulated = true: SIMULATED quotes are ACCEPTED");
    }
    if (c->simulator_root_ca) {
        return load_root_file(c->simulator_root_ca, &k->verifier);
    }
    if (c->pccs_url) {
        return fetch_root(c->pccs_url, &k->verifier);
    }
    if (!c->dev) {
        log_warnx("insecure_allow_simulated needs simulator_root_ca or a PCCS URL");
        return -EINVAL;
    }
    /* --dev: the mock root of the embedded module, collateral made locally. */
    uint8_t seed[DS_SIM_SEED_LEN];
    const uint8_t *der;
    size_t len;
    DS_TRY(seed_of(c->tee, seed));
    DS_TRY(ds_sim_pki_new(seed, &k->dev_pki));
    ds_sim_pki_root_der(k->dev_pki, &der, &len);
    return ds_verifier_new(der, len, &k->verifier);
}

int kms_attest_open(struct kms *k)
{
    char err[KMS_ERR_MAX] = "";
    const char *spec = k->cfg.tee;
    if (!spec && k->cfg.dev) {
        spec = "embedded";
    }
    int r = ds_tee_open(spec, &k->tee, err, sizeof(err));
    if (r < 0) {
        log_warnx("cannot open the TEE \"%s\": %s", spec ? spec : "(auto)",
                  err[0] ? err : ds_strerror(r));
        return r;
    }
    if (ds_tee_is_simulated(k->tee)) {
        log_warnx("the KMS runs in a SIMULATED TEE (%s): its attestation proves nothing",
                  ds_tee_kind(k->tee));
    }
    if (k->cfg.vm_config) {
        k->vm_config = strdup(k->cfg.vm_config);
        if (!k->vm_config) {
            return -ENOMEM;
        }
    }
    if (k->cfg.dev) {
        r = dev_boot_events(k);
        if (r < 0) {
            log_warnx("cannot emit the development boot events: %s", ds_strerror(r));
            return r;
        }
    }
    if (!k->vm_config) {
        k->vm_config = strdup("");
        if (!k->vm_config) {
            return -ENOMEM;
        }
    }
    r = open_verifier(k);
    if (r < 0) {
        log_warnx("cannot set up the attestation verifier: %s", ds_strerror(r));
    }
    return r;
}

struct evidence {
    uint8_t *quote;
    size_t quote_len;
    struct ds_event_log *log;
};

static void evidence_done(struct evidence *e)
{
    free(e->quote);
    ds_eventlog_free(e->log);
}

static int evidence(struct kms *k, const uint8_t rd[64], struct evidence *e)
{
    char *json = NULL;
    memset(e, 0, sizeof(*e));
    int r = ds_tee_get_quote(k->tee, rd, &e->quote, &e->quote_len);
    if (r == 0) {
        r = ds_tee_get_event_log(k->tee, &json);
    }
    if (r == 0) {
        r = ds_eventlog_parse_json(json, strlen(json), &e->log);
    }
    free(json);
    if (r < 0) {
        evidence_done(e);
    }
    return r;
}

int kms_attest(struct kms *k, const uint8_t report_data[64], uint8_t **out, size_t *out_len)
{
    struct evidence e;
    struct ds_attestation *a = NULL;
    DS_TRY(evidence(k, report_data, &e));
    int r =
        ds_attestation_new_tdx(e.quote, e.quote_len, e.log, NULL, report_data, k->vm_config, &a);
    if (r == 0) {
        r = ds_attestation_encode(a, DS_ATT_WIRE_AUTO, out, out_len);
    }
    ds_attestation_free(a);
    evidence_done(&e);
    return r;
}

int kms_attest_for_key(struct kms *k, EVP_PKEY *key, uint8_t **out, size_t *out_len)
{
    uint8_t rd[DS_REPORT_DATA_SIZE];
    struct evidence e;
    DS_TRY(ds_ratls_report_data(key, rd));
    DS_TRY(evidence(k, rd, &e));
    int r = ds_ratls_attestation_for_key(key, e.quote, e.quote_len, e.log, NULL, k->vm_config, out,
                                         out_len);
    evidence_done(&e);
    return r;
}

/*
 * Collateral from the PCCS, kept per PCK certificate chain (it names the platform: FMSPC and
 * CA) for KMS_COLL_CACHE_TTL seconds, so warm verifications do not fetch. A quote we cannot
 * key (not parseable, no PEM chain) or a failed fetch is left to the verifier, which fetches
 * and reports the error itself.
 */
static const struct ds_collateral *coll_cached(struct kms *k, const uint8_t *quote, size_t len,
                                               int64_t now)
{
    struct ds_quote q;
    uint8_t key[32];
    char err[KMS_ERR_MAX];
    if (!quote || ds_quote_parse(quote, len, &q) < 0 || q.cert_type != 5 || !q.cert_data) {
        return NULL;
    }
    ds_sha256(q.cert_data, q.cert_data_len, key);
    struct kms_coll_entry *slot = &k->coll_cache[0];
    for (size_t i = 0; i < KMS_COLL_CACHE_SIZE; i++) {
        struct kms_coll_entry *e = &k->coll_cache[i];
        if (e->coll && memcmp(e->key, key, sizeof(key)) == 0) {
            if (now - e->fetched < KMS_COLL_CACHE_TTL) {
                return e->coll;
            }
            slot = e;
            break;
        }
        if (!e->coll || e->fetched < slot->fetched) {
            slot = e;
        }
    }
    struct ds_collateral *c = NULL;
    const char *pccs = k->cfg.pccs_url ? k->cfg.pccs_url : KMS_DEFAULT_PCCS;
    if (ds_collateral_fetch(pccs, quote, len, 0, &c, err, sizeof(err)) < 0) {
        return NULL;
    }
    ds_collateral_free(slot->coll);
    memcpy(slot->key, key, sizeof(key));
    slot->coll = c;
    slot->fetched = now;
    return c;
}

void kms_coll_cache_free(struct kms *k)
{
    for (size_t i = 0; i < KMS_COLL_CACHE_SIZE; i++) {
        ds_collateral_free(k->coll_cache[i].coll);
        k->coll_cache[i].coll = NULL;
    }
}

int kms_verify_opts(struct kms *k, const uint8_t *quote, size_t quote_len,
                    struct ds_attestation_verify_opts *opts)
{
    int64_t now = (int64_t)time(NULL);
    memset(opts, 0, sizeof(*opts));
    opts->verifier = k->verifier;
    opts->now = now;
    if (k->dev_pki && !k->cfg.pccs_url) {
        if (!k->dev_coll || now - k->dev_coll_time > DEV_COLL_REFRESH) {
            struct ds_collateral *c = NULL;
            DS_TRY(ds_sim_collateral(k->dev_pki, now, &c));
            ds_collateral_free(k->dev_coll);
            k->dev_coll = c;
            k->dev_coll_time = now;
        }
        opts->collateral = k->dev_coll;
        return 0;
    }
    opts->pccs_url = k->cfg.pccs_url ? k->cfg.pccs_url : KMS_DEFAULT_PCCS;
    opts->collateral = coll_cached(k, quote, quote_len, now);
    return 0;
}

int kms_self_boot_info(struct kms *k, const struct ds_kms_boot_info **out, char *err, size_t n)
{
    if (k->self_ready) {
        *out = &k->self_bi;
        return 0;
    }
    uint8_t rd[64] = {0}, *blob = NULL;
    size_t len = 0;
    struct ds_attestation *a = NULL;
    struct ds_attestation_verify_opts opts;
    struct ds_attestation_result res;
    memset(&res, 0, sizeof(res));
    int r = kms_attest(k, rd, &blob, &len);
    if (r < 0) {
        snprintf(err, n, "failed to attest: %s", ds_strerror(r));
        return r;
    }
    r = ds_attestation_decode(blob, len, &a);
    free(blob);
    if (r == 0) {
        r = kms_verify_opts(k, a->quote, a->quote_len, &opts);
    }
    if (r == 0) {
        r = ds_attestation_verify(a, &opts, &res);
        if (r < 0) {
            snprintf(err, n, "failed to verify own attestation: %s", res.message);
        }
    } else {
        snprintf(err, n, "own attestation: %s", ds_strerror(r));
    }
    if (r == 0) {
        r = ds_kms_boot_info_build(a, &res, k->vm_config, false, &k->self_bi);
        if (r < 0) {
            snprintf(err, n, "own boot info: %s", ds_strerror(r));
        }
    }
    ds_attestation_result_done(&res);
    ds_attestation_free(a);
    if (r < 0) {
        return r;
    }
    k->self_ready = true;
    *out = &k->self_bi;
    return 0;
}

int kms_cert_boot_info(struct kms *k, X509 *cert, const char *vm_config,
                       struct ds_kms_boot_info *out, char *err, size_t n)
{
    struct ds_attestation *a = NULL;
    struct ds_attestation_verify_opts opts;
    struct ds_attestation_result res;
    memset(&res, 0, sizeof(res));
    int r = ds_ratls_cert_get_attestation(cert, &a);
    if (r == -DS_E_NOT_FOUND) {
        snprintf(err, n, "No attestation provided");
        return r;
    }
    if (r < 0) {
        snprintf(err, n, "invalid quote: %s", ds_strerror(r));
        return r;
    }
    r = kms_verify_opts(k, a->quote, a->quote_len, &opts);
    if (r == 0) {
        opts.skip_cert_validity = false;
        r = ds_ratls_verify_cert(cert, &opts, &res);
        if (r < 0) {
            snprintf(err, n, "invalid quote: %s: %s", ds_att_step_name(res.failed_step),
                     res.message);
        }
    }
    if (r == 0) {
        r = ds_kms_boot_info_build(a, &res, vm_config, false, out);
        if (r < 0) {
            snprintf(err, n, "failed to build boot info: %s", ds_strerror(r));
        }
    }
    ds_attestation_result_done(&res);
    ds_attestation_free(a);
    return r;
}
