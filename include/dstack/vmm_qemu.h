/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The QEMU command-line builder of the dstack VMM (spec host-side §1.8) and the VmConfig
 * document derived from the same parameters (§1.4). The argument order is part of the
 * measurement: the device order decides the ACPI tables and therefore RTMR0 (attestation §5.1),
 * so the builder is a pure function of `struct ds_qemu_config` with golden tests
 * (tests/vectors/qemu/). Process management (supervisor, pidfiles, log rotation, NUMA cpulist
 * lookup, MAC assignment policy) belongs to the VMM daemon, which fills the config.
 *
 * Every string in the config is borrowed for the duration of the call. Paths must be absolute;
 * control characters are rejected; commas inside QEMU option values are escaped as ",," (the
 * QEMU option parser's escape) so a path can never inject an option. Nothing is passed through a
 * shell: each argument is one argv element.
 */
#ifndef DSTACK_VMM_QEMU_H
#define DSTACK_VMM_QEMU_H

#include <stddef.h>
#include <stdint.h>

#include "dstack/base.h"

/* Limits on what one VM may ask for. */
#define DS_QEMU_VCPU_MAX      1024u
#define DS_QEMU_MEMORY_MB_MIN 64u
#define DS_QEMU_MEMORY_MB_MAX (16u * 1024u * 1024u) /* 16 TiB */
#define DS_QEMU_NIC_MAX       8u
#define DS_QEMU_PORT_MAX      256u
#define DS_QEMU_GPU_MAX       64u
#define DS_QEMU_VOLUME_MAX    32u
#define DS_QEMU_PATH_MAX      4096u
#define DS_QEMU_STR_MAX       1024u /* SMBIOS strings, custom netdev, cmdline pieces */
#define DS_QEMU_CMDLINE_MAX   4096u
#define DS_QEMU_CID_MIN       3u    /* 0-2 are reserved by vsock */
#define DS_QEMU_ARGV_MAX      1024u /* sanity bound on the produced argv */
#define DS_QEMU_VM_CONFIG_MAX (1u << 20)

enum ds_qemu_platform {
    DS_QEMU_PLATFORM_NONE = 0, /* no TEE ("no_tee", also the simulated TEE) */
    DS_QEMU_PLATFORM_TDX,
};

enum ds_qemu_accel {
    DS_QEMU_ACCEL_KVM = 0,
    DS_QEMU_ACCEL_TCG, /* no-TEE only, where /dev/kvm is unusable */
};

enum ds_qemu_share_mode {
    DS_QEMU_SHARE_9P = 0, /* -virtfs over the shared/ dir (default) */
    DS_QEMU_SHARE_VHD,    /* FAT image (shared.img) as read-only virtio-blk hd2 */
    DS_QEMU_SHARE_VVFAT,  /* QEMU vvfat over the shared/ dir as hd2 */
    DS_QEMU_SHARE_NONE,   /* no host share (smoke tests only; not a dstack image boot) */
};

enum ds_qemu_net_mode {
    DS_QEMU_NET_USER = 0, /* SLIRP; port mappings become hostfwd on the first user NIC */
    DS_QEMU_NET_BRIDGE,   /* -netdev bridge via qemu-bridge-helper */
    DS_QEMU_NET_TAP,      /* pre-created TAP (libvirt nwfilter via netd) */
    DS_QEMU_NET_CUSTOM,   /* verbatim -netdev string; must contain id=net<i> */
};

/* How the guest reaches the host API (§1.7). */
enum ds_qemu_host_api {
    DS_QEMU_HOST_API_VSOCK = 0, /* -device vhost-vsock-pci,guest-cid=<cid> (upstream) */
    /*
     * dstack-c extension for hosts without vhost-vsock: a virtio-serial port named
     * DS_QEMU_HOST_API_PORT_NAME whose chardev is a Unix socket the VMM listens on. Adds PCI
     * devices, so its ACPI tables differ from upstream's (no-TEE use only).
     */
    DS_QEMU_HOST_API_SERIAL,
};

#define DS_QEMU_HOST_API_PORT_NAME "org.dstack.host-api"
/* Seconds QEMU waits before dialling the host-API socket again after the VMM closed it or
 * restarted (serial mode). */
#define DS_QEMU_HOST_API_RECONNECT_S 1u

/* Unset / off / on, for the optional measurement booleans of VmConfig. */
enum ds_qemu_tristate { DS_QEMU_UNSET = 0, DS_QEMU_OFF, DS_QEMU_ON };

struct ds_qemu_nic {
    enum ds_qemu_net_mode mode;
    const char *mac;        /* required: "xx:xx:xx:xx:xx:xx" lowercase */
    const char *net;        /* user: e.g. "10.0.2.0/24" (required) */
    const char *dhcp_start; /* user: e.g. "10.0.2.10" (required) */
    bool restrict_net;      /* user: restrict=yes|no */
    const char *bridge;     /* bridge: bridge name */
    const char *tap;        /* tap: TAP interface name */
    const char *netdev;     /* custom: verbatim -netdev value */
};

struct ds_qemu_port {
    const char *protocol; /* "tcp" or "udp" */
    const char *address;  /* host IPv4 address to bind, e.g. "127.0.0.1" */
    uint16_t host_port;   /* >= 1 */
    uint16_t vm_port;     /* >= 1 */
};

struct ds_qemu_pci_dev {
    const char *slot;   /* host PCI address "bb:dd.f" (hex digits, ':' and '.') */
    uint32_t numa_node; /* host NUMA node of the device (caller reads sysfs; -1 => 0) */
};

/* SMBIOS strings (vmm.toml [cvm.product]); NULL or "" = field omitted. */
struct ds_qemu_smbios {
    const char *bios_vendor, *bios_version, *bios_date, *bios_release;     /* type 0 */
    const char *sys_manufacturer, *sys_product, *sys_version, *sys_serial; /* type 1 */
    const char *sys_uuid, *sys_family, *sys_sku;                           /* type 1 */
    const char *board_manufacturer, *board_product, *board_version;        /* type 2 */
    const char *board_serial, *board_asset;                                /* type 2 */
    const char *chassis_manufacturer, *chassis_version, *chassis_serial;   /* type 3 */
    const char *chassis_asset;                                             /* type 3 */
};

struct ds_qemu_config {
    const char *qemu_path;    /* required, absolute */
    const char *qemu_version; /* "X.Y.Z" as detected (§1.2); required */
    enum ds_qemu_platform platform;
    enum ds_qemu_accel accel;
    const char *run_as_user;  /* optional: prefix `sudo -u <user>` */
    const char *taskset_cpus; /* optional (pin_numa): prefix `taskset -c <cpulist>` */

    uint32_t vcpus;     /* requested; rounded up to the NUMA node count with hugepages */
    uint32_t memory_mb; /* requested; rounded to whole GiB per node with hugepages */
    bool hugepages;

    /* Image artifacts (metadata.json resolved inside the image dir, §1.6). */
    const char *bios;         /* OVMF; required for TDX, optional for no-TEE (SeaBIOS) */
    const char *kernel;       /* required */
    const char *initrd;       /* required */
    const char *cmdline;      /* required (image cmdline, passed as -append) */
    const char *rootfs;       /* optional "*.verity" raw image, read-only hd0 */
    const char *image_name;   /* VmConfig "image" */
    const char *ovmf_variant; /* optional VmConfig "ovmf_variant" (e.g. "pre202505") */

    const char *data_disk;             /* optional qcow2 hd1 */
    const char *const *verity_volumes; /* optional raw read-only volumes vol<i> */
    size_t verity_volume_count;

    enum ds_qemu_share_mode share_mode;
    const char *share_path; /* 9p/vvfat: the shared/ dir; vhd: shared.img */
    bool share_ro;          /* 9p readonly=on (images with shared_ro) */

    const struct ds_qemu_nic *nics; /* at least one */
    size_t nic_count;
    const struct ds_qemu_port *ports; /* hostfwd on the first user NIC */
    size_t port_count;

    const struct ds_qemu_pci_dev *gpus;
    size_t gpu_count;
    const struct ds_qemu_pci_dev *nvswitches; /* "bridges" */
    size_t nvswitch_count;

    enum ds_qemu_host_api host_api;
    uint32_t cid;                /* vsock guest CID (>= 3) */
    const char *host_api_socket; /* serial mode: Unix socket QEMU connects to */

    const char *serial_log; /* required: serial console log (logappend=on) */
    const char *serial_pty; /* optional: pty symlink path (upstream form, QEMU >= 8.1) */
    const char *qmp_socket; /* optional */

    uint64_t pci_hole64_size; /* 0 = QEMU default (no -global) */
    bool hotplug_off;
    struct ds_qemu_smbios smbios;
    const char *swtpm_socket; /* optional: swtpm control socket => tpm-tis device */

    /* TDX only. */
    const char *tdx_mrconfigid; /* optional base64 of the 48-byte MRCONFIGID */
    uint32_t qgs_port;          /* 0 = no quote-generation-socket */

    /* VmConfig-only measurement knobs (§1.2 qemu_single_pass_add_pages / qemu_pic). */
    enum ds_qemu_tristate single_pass_add_pages;
    enum ds_qemu_tristate pic;
    const char *tdx_attestation_variant; /* NULL/"legacy" (omitted) or "lite" */
};

/* Error detail: which field was wrong and why (never contains secrets). */
struct ds_qemu_error {
    char msg[256];
};

/*
 * Build the QEMU command line. On success *out_argv is a malloc'd NULL-terminated array of
 * malloc'd strings (free with ds_qemu_argv_free) whose argv[0] is the program to exec (sudo,
 * taskset or qemu_path), and *out_argc its length. err may be NULL.
 * Returns 0, or:
 *   -DS_E_UNSUPPORTED  unknown platform/accel/mode, TDX with TCG, TDX with QEMU < 8.0
 *   -DS_E_FORMAT       malformed path (relative, control chars, too long), MAC, address,
 *                      PCI slot, user name, cpulist, version, custom netdev without id=net<i>
 *   -ERANGE            vcpus/memory/cid/port out of range, too many NICs/ports/GPUs/volumes
 *   -DS_E_NOT_FOUND    a required field is missing (qemu path, kernel, initrd, bios for TDX,
 *                      share path, host-API socket, serial log, NIC)
 *   -EADDRINUSE        two port mappings bind the same protocol/address/host port
 *   -ENOMEM
 */
DS_MUST_USE int ds_qemu_build_argv(const struct ds_qemu_config *cfg, char ***out_argv,
                                   size_t *out_argc, struct ds_qemu_error *err);

/* Free an argv from ds_qemu_build_argv. NULL-safe. */
void ds_qemu_argv_free(char **argv);

/*
 * The VmConfig JSON (§1.4, spec_version 1) for the same config: compact JSON with keys in the
 * order §1.4 lists them, spec_version last. os_image_hash is the lowercase hex of digest.txt (64
 * hex digits). *out_json is a malloc'd NUL-terminated string. Same error codes as
 * ds_qemu_build_argv.
 */
DS_MUST_USE int ds_qemu_vm_config_json(const struct ds_qemu_config *cfg, const char *os_image_hash,
                                       char **out_json, struct ds_qemu_error *err);

/* Parse "tdx" / "none" (also "no_tee") into a platform. -DS_E_UNSUPPORTED otherwise. */
DS_MUST_USE int ds_qemu_platform_parse(const char *s, enum ds_qemu_platform *out);
/* Parse "9p" / "vhd" / "vvfat" into a share mode. -DS_E_UNSUPPORTED otherwise. */
DS_MUST_USE int ds_qemu_share_mode_parse(const char *s, enum ds_qemu_share_mode *out);

/*
 * The verifier's QEMU rules (attestation §5.1): version "X.Y[.Z]" (anything after '+' or '-'
 * ignored); < 8.0 => -DS_E_UNSUPPORTED; 8.x => pic on, two-pass page add; >= 9.0 => pic off,
 * single-pass. Returns 0 and writes both booleans.
 */
DS_MUST_USE int ds_qemu_measure_rules(const char *qemu_version, bool *out_pic,
                                      bool *out_single_pass);

/*
 * The effective vCPU count and memory (MiB) the command line uses: unchanged without
 * hugepages; with hugepages vCPUs are rounded up to a multiple of the NUMA node count and
 * memory to whole GiB, rounded up to a multiple of the node count (§1.8 item 14).
 */
DS_MUST_USE int ds_qemu_effective_resources(const struct ds_qemu_config *cfg, uint32_t *out_vcpus,
                                            uint64_t *out_memory_mb);

/*
 * Derive NIC i's MAC (§1.8): h = sha256(vm_id) for i = 0, sha256("<vm_id>:<i>") otherwise;
 * bytes = prefix (0-3 bytes, "aa:bb" hex) then h; byte0 = (byte0 & 0xfe) | 0x02; written as
 * lowercase colon hex into out (18 bytes). -DS_E_FORMAT on a bad prefix.
 */
DS_MUST_USE int ds_qemu_mac_derive(const char *vm_id, uint32_t index, const char *mac_prefix,
                                   char out[18]);

#endif /* DSTACK_VMM_QEMU_H */
