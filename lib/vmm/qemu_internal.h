/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private helpers shared by the QEMU builder files in lib/vmm: input validation
 * (qemu_validate.c) used by both the argv builder (qemu_argv.c) and the VmConfig writer
 * (qemu_vm_config.c).
 */
#ifndef DSTACK_LIB_VMM_QEMU_INTERNAL_H
#define DSTACK_LIB_VMM_QEMU_INTERNAL_H

#include "dstack/vmm_qemu.h"

/* Write a message into err (if any) and return code. */
int qemu_fail(struct ds_qemu_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

DS_MUST_USE int qemu_check_path(const char *field, const char *path, bool required,
                                struct ds_qemu_error *err);
DS_MUST_USE int qemu_check_text(const char *field, const char *s, size_t max,
                                struct ds_qemu_error *err);
DS_MUST_USE int qemu_check_mac(const char *field, const char *mac, struct ds_qemu_error *err);
DS_MUST_USE int qemu_check_nic(size_t i, const struct ds_qemu_nic *nic, struct ds_qemu_error *err);
DS_MUST_USE int qemu_check_ports(const struct ds_qemu_config *cfg, struct ds_qemu_error *err);
DS_MUST_USE int qemu_check_pci(const char *field, size_t i, const struct ds_qemu_pci_dev *d,
                               struct ds_qemu_error *err);
DS_MUST_USE int qemu_check_user(const char *user, struct ds_qemu_error *err);
DS_MUST_USE int qemu_check_cpulist(const char *cpus, struct ds_qemu_error *err);
/* "X.Y[.Z][+-suffix]" -> major, minor. -DS_E_FORMAT otherwise. */
DS_MUST_USE int qemu_parse_version(const char *v, unsigned *out_major, unsigned *out_minor);
bool qemu_is_ipv4(const char *s);
/* Decimal digits only -> value (bounded), else -1. */
int qemu_atoi_bounded(const char *s);

/* Validate the whole config (everything both outputs depend on). */
DS_MUST_USE int qemu_check_config(const struct ds_qemu_config *cfg, struct ds_qemu_error *err);

/*
 * NUMA layout for hugepages (§1.8 item 14): distinct host nodes of the GPUs in order of first
 * appearance (or {0}), with the GPU count per node.
 */
struct qemu_numa {
    uint32_t node[DS_QEMU_GPU_MAX];
    uint32_t gpus[DS_QEMU_GPU_MAX];
    size_t count;
};
void qemu_numa_layout(const struct ds_qemu_config *cfg, struct qemu_numa *out);

#endif /* DSTACK_LIB_VMM_QEMU_INTERNAL_H */
