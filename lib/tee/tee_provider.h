/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private to lib/tee/tee*.c: the table of operations a TEE provider implements behind
 * include/dstack/tee.h, and the constructors of the two providers (tee_simdev.c: a
 * dstack-tee-sim device socket; tee_tdx.c: real TDX through configfs-tsm and sysfs).
 * tee.c does the checks common to every provider (register index, runtime-event digest)
 * before it calls one.
 */
#ifndef DSTACK_TEE_PROVIDER_H
#define DSTACK_TEE_PROVIDER_H

#include "dstack/eventlog.h"
#include "dstack/tee.h"

/* RTMR2 extensions are logged as EV_IPL, the type boot loaders use for kernel command lines. */
#define DS_TEE_RTMR2_EVENT_TYPE 0x0000000Du

struct ds_tee_ops {
    const char *kind;
    bool simulated;
    int (*get_quote)(void *ctx, const uint8_t report_data[DS_TEE_REPORT_DATA_SIZE], uint8_t **out,
                     size_t *out_len);
    /* ev is the event to log, already checked against digest by tee.c */
    int (*extend)(void *ctx, unsigned index, const uint8_t digest[DS_TEE_MR_SIZE],
                  const struct ds_event *ev);
    int (*read)(void *ctx, struct ds_tee_registers *out);
    int (*event_log)(void *ctx, char **out);
    void (*free)(void *ctx);
};

extern const struct ds_tee_ops ds_tee_simdev_ops;
extern const struct ds_tee_ops ds_tee_tdx_ops;
extern const struct ds_tee_ops ds_tee_embedded_ops;

/* Open the simulator provider on a device socket (checks that it answers "info"). */
DS_MUST_USE int ds_tee_simdev_open(const char *socket_path, void **out_ctx, char *err,
                                   size_t err_size);
/* Open the TDX provider (checks the configfs-tsm provider file). */
DS_MUST_USE int ds_tee_tdx_open(void **out_ctx, char *err, size_t err_size);
/* Open the in-process simulated module (tee_embedded.c) from a 64-hex-digit mock PKI seed, or
 * NULL for the public development seed. Returns 0, -DS_E_FORMAT (bad seed), -ENOMEM or
 * -DS_E_CRYPTO. */
DS_MUST_USE int ds_tee_embedded_open(const char *seed_hex, void **out_ctx, char *err,
                                     size_t err_size);
/* true when a TDX guest interface is visible (device node or configfs-tsm provider). */
bool ds_tee_tdx_detect(void);

/*
 * Build the event an extension of RTMR `index` records (shared with the simulator daemon,
 * which applies the same rule): index 3 gives a dstack runtime event whose version (1 or 2)
 * is the one whose SHA-384 digest equals `digest`; index 2 gives an EV_IPL event carrying
 * digest. The event is appended to log. Returns 0, -DS_E_DENIED (index not 2/3),
 * -DS_E_MISMATCH (index 3 and digest matches neither version), -DS_E_FORMAT, -DS_E_LIMIT,
 * -ENOMEM.
 */
DS_MUST_USE int ds_tee_extend_event(struct ds_event_log *log, unsigned index,
                                    const uint8_t digest[DS_TEE_MR_SIZE], const char *name,
                                    const uint8_t *payload, size_t payload_len);

#endif /* DSTACK_TEE_PROVIDER_H */
