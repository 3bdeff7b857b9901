/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The embedded TEE provider ("embedded" or "embedded:<64 hex seed>"): a simulated TDX module
 * that lives inside the calling process, for development tools that must run without
 * dstack-tee-sim (the guest agent's --simulator mode). MRTD and RTMR0-2 are fixed development
 * values that follow from a small synthetic boot event log (so a replay of the log equals the
 * registers in every quote), RTMR2/3 are extended in memory, and quotes are genuine DCAP v4
 * quotes signed by the mock Intel PKI of ds_sim_pki derived from the seed (sim.h). They verify
 * only against that mock root (`dstack-tee-sim root-ca --seed <seed>`). Nothing is persisted:
 * a new process starts again from the boot log.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"
#include "dstack/sim.h"
#include "tee/tee_provider.h"

/* The development seed used when the spec gives none: the ASCII text
 * "dstack-c-embedded-development-01". PUBLIC, hence insecure by construction. */
#define EMBEDDED_DEV_SEED_HEX "64737461636b2d632d656d6265646465642d646576656c6f706d656e742d3031"

/* TCG event types of the synthetic boot log (TCG PC Client PFP). */
#define EV_POST_CODE                     0x00000001u
#define EV_IPL                           0x0000000Du
#define EV_EFI_VARIABLE_DRIVER_CONFIG    0x80000001u
#define EV_EFI_BOOT_SERVICES_APPLICATION 0x80000003u

struct embedded {
    struct ds_sim_pki *pki;
    struct ds_sim_td td;
    struct ds_event_log *log;
};

/* One synthetic boot event: its digest is SHA-384 of `measured` (what firmware would hash). */
struct boot_event {
    uint32_t imr;
    uint32_t type;
    const char *name;
    const char *measured;
    const char *payload;
};

static const struct boot_event boot_events[] = {
    {0, EV_POST_CODE, "", "dstack-c embedded dev firmware", "TDVF dev"},
    {0, EV_EFI_VARIABLE_DRIVER_CONFIG, "", "SecureBoot=0", "SecureBoot"},
    {0, DS_EV_PLATFORM_CONFIG_FLAGS, DS_EVENT_ACPI_LOADER, "dev etc/table-loader",
     DS_ACPI_DATA_PAYLOAD},
    {0, DS_EV_PLATFORM_CONFIG_FLAGS, DS_EVENT_ACPI_RSDP, "dev etc/acpi/rsdp", DS_ACPI_DATA_PAYLOAD},
    {0, DS_EV_PLATFORM_CONFIG_FLAGS, DS_EVENT_ACPI_TABLES, "dev etc/acpi/tables",
     DS_ACPI_DATA_PAYLOAD},
    {0, DS_EV_SEPARATOR, "", "\0\0\0\0", "\0\0\0\0"},
    {1, EV_EFI_BOOT_SERVICES_APPLICATION, "", "dstack-c embedded dev kernel", "vmlinuz"},
    {1, DS_EV_SEPARATOR, "", "\0\0\0\0", "\0\0\0\0"},
    {2, EV_IPL, "", "console=ttyS0 dstack.dev=1", "console=ttyS0 dstack.dev=1"},
    {2, EV_IPL, "", "dstack-c embedded dev initrd", "initrd"},
};

/* The separator strings above are 4 NUL bytes; strlen would see 0. */
static size_t boot_len(const char *s)
{
    return s[0] == '\0' ? 4 : strlen(s);
}

static int build_boot_log(struct embedded *e)
{
    DS_TRY(ds_eventlog_new(&e->log));
    for (size_t i = 0; i < DS_ARRAY_SIZE(boot_events); i++) {
        const struct boot_event *b = &boot_events[i];
        struct ds_event ev = {
            .imr = b->imr,
            .event_type = b->type,
            .digest_len = DS_SHA384_LEN,
            .name = (char *)b->name,
            .payload = (uint8_t *)b->payload,
            .payload_len = boot_len(b->payload),
            .version = 1,
        };
        ds_sha384(b->measured, boot_len(b->measured), ev.digest);
        DS_TRY(ds_eventlog_append(e->log, &ev));
    }
    uint8_t replay[DS_RTMR_COUNT][DS_RTMR_SIZE];
    DS_TRY(ds_eventlog_replay(e->log, NULL, replay));
    memcpy(e->td.rtmr, replay, sizeof(replay));
    return 0;
}

static void embedded_free(void *ctx)
{
    struct embedded *e = ctx;
    if (!e) {
        return;
    }
    ds_sim_pki_free(e->pki);
    ds_eventlog_free(e->log);
    ds_wipe(e, sizeof(*e));
    free(e);
}

int ds_tee_embedded_open(const char *seed_hex, void **out_ctx, char *err, size_t err_size)
{
    uint8_t seed[DS_SIM_SEED_LEN];
    if (!seed_hex) {
        seed_hex = EMBEDDED_DEV_SEED_HEX;
    }
    if (strlen(seed_hex) != 2 * DS_SIM_SEED_LEN ||
        ds_hex_decode(seed_hex, strlen(seed_hex), seed, sizeof(seed)) < 0) {
        if (err && err_size) {
            snprintf(err, err_size, "embedded TEE seed must be exactly %d hex digits",
                     2 * DS_SIM_SEED_LEN);
        }
        return -DS_E_FORMAT;
    }
    struct embedded *e = calloc(1, sizeof(*e));
    int r = -ENOMEM;
    if (!e) {
        goto out;
    }
    ds_sim_td_defaults(&e->td);
    r = ds_sim_pki_new(seed, &e->pki);
    if (r < 0) {
        goto out;
    }
    r = build_boot_log(e);
    if (r < 0) {
        goto out;
    }
    *out_ctx = e;
    e = NULL;
out:
    ds_wipe(seed, sizeof(seed));
    if (r < 0 && err && err_size) {
        snprintf(err, err_size, "cannot start the embedded TEE: %s", ds_strerror(r));
    }
    embedded_free(e);
    return r;
}

static int embedded_get_quote(void *ctx, const uint8_t report_data[DS_TEE_REPORT_DATA_SIZE],
                              uint8_t **out, size_t *out_len)
{
    struct embedded *e = ctx;
    return ds_sim_quote(e->pki, &e->td, report_data, NULL, out, out_len);
}

static int embedded_extend(void *ctx, unsigned index, const uint8_t digest[DS_TEE_MR_SIZE],
                           const struct ds_event *ev)
{
    struct embedded *e = ctx;
    if (index != 2 && index != 3) {
        return -DS_E_DENIED;
    }
    /* Log first: if the append fails the register is unchanged and the two stay consistent. */
    DS_TRY(ds_eventlog_append(e->log, ev));
    ds_sha384_v(e->td.rtmr[index], 2, e->td.rtmr[index], (size_t)DS_TEE_MR_SIZE, digest,
                (size_t)DS_TEE_MR_SIZE);
    return 0;
}

static int embedded_read(void *ctx, struct ds_tee_registers *out)
{
    struct embedded *e = ctx;
    memcpy(out->mrtd, e->td.mr_td, DS_TEE_MR_SIZE);
    memcpy(out->rtmr, e->td.rtmr, sizeof(out->rtmr));
    return 0;
}

static int embedded_event_log(void *ctx, char **out)
{
    struct embedded *e = ctx;
    return ds_eventlog_to_json(e->log, DS_EVENTLOG_JSON_PREIMAGE, out, NULL);
}

const struct ds_tee_ops ds_tee_embedded_ops = {
    .kind = "embedded",
    .simulated = true,
    .get_quote = embedded_get_quote,
    .extend = embedded_extend,
    .read = embedded_read,
    .event_log = embedded_event_log,
    .free = embedded_free,
};
