/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Internals of the `sandbox` CVM backend (docs/sandbox.md), shared by vmm_sandbox.c (process,
 * namespaces, mounts, cgroups, data disk), vmm_sandbox_net.c (host bridge, per-VM veth and
 * address, the userspace TCP port forwarder) and vmm_sandbox_measure.c (the sandbox launch
 * measurement and the simulated TD created through dstack-tee-sim's control socket).
 */
#ifndef DSTACK_VMM_SANDBOX_H
#define DSTACK_VMM_SANDBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmm_backend.h"

#define SBX_BRIDGE        "dstack-br0"
#define SBX_SUBNET_PREFIX "10.213.77." /* host bridge 10.213.77.1/24, guests .2-.254 */
#define SBX_GATEWAY       SBX_SUBNET_PREFIX "1"
#define SBX_PREFIX_LEN    24
#define SBX_HOST_MIN      2
#define SBX_HOST_MAX      254
#define SBX_IFNAME_MAX    16 /* IFNAMSIZ */
#define SBX_IP_MAX        16
#define SBX_MR_HEX        (48 * 2 + 1)

/* Environment variable naming dstack-tee-sim's state directory (control.sock inside). */
#define SBX_TEE_SIM_ENV "DSTACK_TEE_SIM_DIR"

/* Fixed paths inside the sandbox. */
#define SBX_GUEST_HOST_API "/dstack/.host-api.sock"
#define SBX_GUEST_VMM_DIR  "/dstack/.vmm"
#define SBX_GUEST_TEE_DIR  "/dstack/.tee"
#define SBX_GUEST_TEE_SOCK SBX_GUEST_TEE_DIR "/tdx.sock"
#define SBX_GUEST_SHARED   "/dstack/.host-shared"
#define SBX_GUEST_DATA     "/dstack/data.img"

/* ---- vmm_sandbox_net.c ---- */

/* Create the host bridge with its gateway address if missing. 0 or negative with err. */
DS_MUST_USE int sbx_net_bridge_setup(char *err, size_t err_size);
/* Host-wide address leases: SBX_LEASE_DIR/<n> holds the owning VM's workdir. */
#define SBX_LEASE_DIR "/run/dstack-sandbox/ip"
/* The VM's guest address (kept in <workdir>/sandbox/ip, leased host-wide so sandboxes of
 * several run dirs on the one bridge never collide; a lease whose owner's ip file no longer
 * names it is stale and reused). */
DS_MUST_USE int sbx_net_assign_ip(const struct vmm_vm *vm, char ip[SBX_IP_MAX], char *err,
                                  size_t err_size);
/* Give the address lease back (destroy). */
void sbx_net_release_ip(const struct vmm_vm *vm);
/* Host-side veth name for a VM id ("dsv" + 10 hex of SHA-256(id)). */
void sbx_net_host_ifname(const char *id, char out[SBX_IFNAME_MAX]);
/* Create the veth pair: host end on the bridge, the other end as eth0 in pid's netns. */
DS_MUST_USE int sbx_net_veth_setup(const char *id, pid_t pid, char *err, size_t err_size);
/* Delete the host veth if it still exists (the pair goes with its namespace otherwise). */
void sbx_net_veth_remove(const char *id);
/* Inside the sandbox's netns (child, before exec): lo, eth0 address, default route. */
DS_MUST_USE int sbx_net_guest_config(const char *ip);
/* Bind every mapping's listener, then fork the forwarder (own session, pid file
 * <workdir>/sandbox/forwarder.pid) that exits with the sandbox (pidfd of guest_pid).
 * No mappings = no process. 0 or negative with err (EADDRINUSE etc.). */
DS_MUST_USE int sbx_fwd_start(const struct vmm_vm *vm, const char *guest_ip, pid_t guest_pid,
                              char *err, size_t err_size);
void sbx_fwd_stop(const struct vmm_vm *vm);
/* Reap the forwarder if it exited and is our child. */
void sbx_fwd_reap(const struct vmm_vm *vm);

/* ---- vmm_sandbox_measure.c ---- */

struct sbx_measure {
    char mrtd[SBX_MR_HEX];
    char rtmr[3][SBX_MR_HEX];
    char *event_log_json; /* dstack JSON event form, malloc'd */
};
/* Compute the sandbox launch measurement (docs/sandbox.md) for the VM and its image. */
DS_MUST_USE int sbx_measure(const struct vmm_vm *vm, const char *init_path, const char *init_guest,
                            struct sbx_measure *out, char *err, size_t err_size);
void sbx_measure_free(struct sbx_measure *m);
/* Path of dstack-tee-sim's control socket, or NULL when none is configured. */
const char *sbx_tee_control(char *buf, size_t size);
/* (Re)create the VM's TD (name = VM id) with the measurement; device socket path out. */
DS_MUST_USE int sbx_tee_create_td(const char *control, const char *id, const struct sbx_measure *m,
                                  char *sock_out, size_t sock_size, char *err, size_t err_size);
void sbx_tee_remove_td(const char *control, const char *id);

/* ---- vmm_sandbox.c helpers used by the others ---- */

/* Run argv (absolute path) to completion with posix_spawn (safe in the sandbox child of a
 * multi-threaded VMM). 0 when it exits 0. */
DS_MUST_USE int sbx_run(char *const argv[]);
/* Field 22 (starttime) of /proc/<pid>/stat, 0 when unreadable; *state (may be NULL) gets the
 * state letter. Pid files hold "<pid> <starttime>" so a reused pid is never taken for ours. */
unsigned long long sbx_proc_starttime(pid_t pid, char *state);
/* Find an executable in PATH (and /usr/sbin, /sbin). */
bool sbx_which(const char *name, char *out, size_t out_size);

#endif /* DSTACK_VMM_SANDBOX_H */
