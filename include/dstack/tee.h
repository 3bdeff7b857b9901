/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack TEE providers: the one interface code in a guest uses to get a TDX quote, extend
 * RTMR2/3, read the measurement registers and read the event log. Two providers plug in behind
 * it, chosen at run time: "tdx" (real TDX through configfs-tsm and the tdx_guest sysfs files,
 * spec attestation.md §6.4 and §4.3) and "sim" (a per-TD device socket of dstack-tee-sim,
 * docs/tee-sim.md). Code above lib/tee never knows which one it has, except through
 * ds_tee_is_simulated(), which exists so callers can label simulated evidence loudly.
 *
 * Environment (all optional):
 *   DSTACK_TEE                      "tdx" or "sim:/path/to/tdx.sock" (used when spec is NULL)
 *   DCAP_TDX_QUOTE_CONFIGFS_PATH    configfs-tsm report dir (default
 *                                   /sys/kernel/config/tsm/report/com.intel.dcap)
 *   DCAP_TDX_RTMR_SYSFS_PATH        measurements dir (default
 *                                   /sys/devices/virtual/misc/tdx_guest/measurements)
 *   DSTACK_TDX_GUEST_DEVICE         default /dev/tdx_guest
 *   DSTACK_CCEL_FILE                boot event log (default /sys/firmware/acpi/tables/data/CCEL)
 *   DSTACK_RUNTIME_EVENT_LOG        runtime event log kept by the tdx provider (default
 *                                   /run/log/dstack/runtime_events.jsonl)
 *
 * A struct ds_tee is not thread-safe; use one per thread or lock around it.
 */
#ifndef DSTACK_TEE_H
#define DSTACK_TEE_H

#include "dstack/base.h"

#define DS_TEE_REPORT_DATA_SIZE 64
#define DS_TEE_MR_SIZE          48
#define DS_TEE_RTMR_COUNT       4
#define DS_TEE_QUOTE_MAX        (64 * 1024)

struct ds_tee;

/* The measurement registers of the calling TD. */
struct ds_tee_registers {
    uint8_t mrtd[DS_TEE_MR_SIZE];
    uint8_t rtmr[DS_TEE_RTMR_COUNT][DS_TEE_MR_SIZE];
};

/*
 * Open a provider. spec: "tdx", "sim:<socket path>", or NULL for env DSTACK_TEE, else
 * autodetection (a /dev/tdx_guest device or a configfs-tsm provider "tdx_guest"). On failure
 * err (may be NULL) gets a message for the user, e.g. "no TEE found; set
 * DSTACK_TEE=sim:<socket> to use the simulator".
 * Returns 0 and *out, -DS_E_NOT_FOUND (nothing detected), -DS_E_FORMAT (bad spec), -ENOMEM,
 * or the error of checking the chosen provider (e.g. -ENOENT for a missing socket).
 */
DS_MUST_USE int ds_tee_open(const char *spec, struct ds_tee **out, char *err, size_t err_size);
/* Close and free. NULL-safe. */
void ds_tee_close(struct ds_tee *t);

/* "tdx" or "sim". */
const char *ds_tee_kind(const struct ds_tee *t);
/* true for the simulator: its quotes only verify against a mock root. */
bool ds_tee_is_simulated(const struct ds_tee *t);

/*
 * A DCAP quote over report_data. *out is malloc'd (at most DS_TEE_QUOTE_MAX bytes).
 * Returns 0, -ETIMEDOUT, -EBUSY, -DS_E_IO, -DS_E_PROTOCOL, -DS_E_FORMAT (bad quote length).
 */
DS_MUST_USE int ds_tee_get_quote(struct ds_tee *t,
                                 const uint8_t report_data[DS_TEE_REPORT_DATA_SIZE], uint8_t **out,
                                 size_t *out_len);

/*
 * Extend RTMR index (2 or 3) with digest (RTMR = SHA-384(RTMR || digest)) and record the event
 * (name, payload; name NULL is "") in the event log:
 * - index 3: a dstack runtime event (type 0x08000001). digest must be the V1 or the V2 SHA-384
 *   runtime-event digest of (name, payload) (spec attestation.md §4.4), else -DS_E_MISMATCH and
 *   nothing is extended: verifiers recompute these digests, so any other one is unverifiable.
 * - index 2: an EV_IPL (0x0D) event carrying digest as given.
 * Returns 0, -DS_E_DENIED (index not 2/3), -DS_E_MISMATCH, -DS_E_LIMIT (log full), or an I/O /
 * protocol error.
 */
DS_MUST_USE int ds_tee_extend_rtmr(struct ds_tee *t, unsigned index,
                                   const uint8_t digest[DS_TEE_MR_SIZE], const char *event,
                                   const uint8_t *payload, size_t payload_len);

/* Read MRTD and RTMR0-3. Returns 0 or an I/O / protocol error. */
DS_MUST_USE int ds_tee_read_rtmrs(struct ds_tee *t, struct ds_tee_registers *out);

/*
 * The event log (boot events + runtime events) in the dstack JSON form (a JSON array, spec
 * attestation.md §4.2), with V2 preimages. *out is malloc'd and NUL-terminated.
 */
DS_MUST_USE int ds_tee_get_event_log(struct ds_tee *t, char **out);

#endif /* DSTACK_TEE_H */
