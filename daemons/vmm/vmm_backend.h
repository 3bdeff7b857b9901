/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The interface between dstack-vmm and the code that actually runs a CVM (DESIGN.md §4). The
 * daemon owns the VM records, the on-disk state and the API; a backend only turns one VM
 * record into a running guest and back. Two backends exist: `qemu` (vmm_qemu.c: QEMU with the
 * argument vector from lib/vmm/qemu_argv.c, serial captured to serial.log) and `sandbox`
 * (vmm_sandbox*.c: Linux namespaces). Which one runs a VM is `[cvm] backend` in vmm.toml.
 *
 * Rules for backends:
 * - Every call runs on the daemon's event-loop thread and must not block for long (spawn,
 *   kill and waitpid(WNOHANG) only; no waiting for a guest to boot).
 * - The VM record is borrowed for the duration of a call; a backend keeps its own per-VM data
 *   in vm->backend_data (allocated in prepare/start, freed in destroy) and must not keep
 *   pointers into the record between calls.
 * - Processes a backend starts must survive a VMM restart (new session, not killed by the
 *   daemon's exit) and be found again through a pid file in the workdir: after a restart the
 *   daemon calls is_running() on a record whose backend_data is NULL.
 * - Errors: return a negative errno or -DS_E_* and write a one-line human message into err
 *   (err_size bytes, always NUL-terminated); the message becomes the pRPC error text, e.g.
 *   "no backend can start VMs here: qemu not found".
 */
#ifndef DSTACK_VMM_BACKEND_H
#define DSTACK_VMM_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "dstack/base.h"

#define VMM_ERR_MAX      256 /* bytes of a backend / API error message */
#define VMM_PROTO_MAX    4   /* "tcp" / "udp" + NUL */
#define VMM_ADDR_MAX     64  /* textual host address of a port mapping */
#define VMM_PORTS_MAX    128 /* port mappings per VM */
#define VMM_GPU_SLOT_MAX 32

/* One host -> guest port forward (manifest `port_map`, host-side.md §1.4). */
struct vmm_port_map {
    char protocol[VMM_PROTO_MAX]; /* "tcp" or "udp" */
    char address[VMM_ADDR_MAX];   /* host address to bind, e.g. "127.0.0.1" */
    uint16_t from;                /* host port */
    uint16_t to;                  /* guest port */
};

/* A guest image directory (host-side.md §1.6), resolved: every path is absolute and inside dir. */
struct vmm_image {
    char *name;     /* directory name under [image] path */
    char *dir;      /* absolute directory */
    char *metadata; /* metadata.json text (ListImages `description`) */
    char *kernel;   /* absolute paths; NULL when metadata does not name one */
    char *initrd;
    char *bios;
    char *rootfs;
    char *hda;     /* optional qcow2 backing image */
    char *cmdline; /* kernel command line from metadata ("" if none) */
    char *version; /* "0.5.3"; guessed from the dir name when metadata has none */
    char *git_revision;
    char *os_image_hash; /* digest.txt content (64 hex), NULL when the file is missing */
    char *rootfs_hash;
    bool shared_ro;
    bool is_dev;
};

/* The VM as a backend sees it. All strings are owned by the daemon. */
struct vmm_vm {
    const char *id; /* uuid */
    const char *name;
    const char *app_id;     /* 40 hex */
    const char *workdir;    /* <run_path>/<id> */
    const char *shared_dir; /* <workdir>/shared: the read-only host share */
    const char *serial_log; /* <workdir>/serial.log: the console */
    const char *stdout_log; /* <workdir>/stdout.log */
    const char *stderr_log; /* <workdir>/stderr.log */
    const char *pid_file;   /* <workdir>/<backend>.pid */
    /* Host API endpoint the guest talks to: <workdir>/host-api.sock, already listening (sandbox:
     * bound into the guest; qemu without vhost-vsock: the virtio-serial chardev connects to it;
     * qemu with vhost-vsock: unused, the guest calls vsock CID 2). */
    const char *host_api_socket;
    /* Simulated TEE device socket (simulated_tee set), else NULL. */
    const char *tee_device_socket;
    const struct vmm_image *image;
    uint32_t vcpu;
    uint32_t memory_mb;
    uint32_t disk_gb;
    uint32_t cid; /* vsock CID (qemu) */
    bool hugepages;
    bool pin_numa;
    bool no_tee;
    const char *simulated_tee; /* "dstack-tdx", ... or NULL */
    const struct vmm_port_map *ports;
    size_t port_count;
    void *backend_data; /* owned by the backend */
};

struct vmm_config;

struct vmm_backend {
    const struct vmm_backend_ops *ops;
    const struct vmm_config *cfg; /* borrowed daemon configuration */
    void *priv;                   /* backend-wide state, owned by the backend */
};

struct vmm_backend_ops {
    const char *name; /* "qemu", "sandbox" */
    /* Backend-wide setup (find binaries, ...). A backend that cannot run anything here still
     * returns 0; usable() then says why. May be NULL. */
    DS_MUST_USE int (*init)(struct vmm_backend *b);
    void (*done)(struct vmm_backend *b); /* may be NULL */
    /* Whether this host can start VMs with this backend; if not, a reason in err. */
    bool (*usable)(const struct vmm_backend *b, char *err, size_t err_size);
    /* Create what a start needs and what survives stops: the data disk (disk_gb), the
     * host-share export. Idempotent; called before every start. */
    DS_MUST_USE int (*prepare)(struct vmm_backend *b, struct vmm_vm *vm, char *err,
                               size_t err_size);
    /* Start the guest; *out_pid is the process the daemon watches (written to pid_file by
     * the backend). Must not block on the guest. */
    DS_MUST_USE int (*start)(struct vmm_backend *b, struct vmm_vm *vm, pid_t *out_pid, char *err,
                             size_t err_size);
    /* Stop: graceful = ask the guest (ACPI powerdown / SIGTERM), else kill at once (SIGKILL).
     * Returns without waiting; is_running() tells when it is gone. */
    DS_MUST_USE int (*stop)(struct vmm_backend *b, struct vmm_vm *vm, bool graceful, char *err,
                            size_t err_size);
    /* Whether the guest process is alive (reaps it if it exited). Works from the pid file
     * when backend_data is NULL (after a VMM restart). *out_pid (may be NULL) gets the pid. */
    bool (*is_running)(struct vmm_backend *b, struct vmm_vm *vm, pid_t *out_pid);
    /* Release everything the backend holds for the VM (it is stopped); the daemon deletes
     * the workdir afterwards. Frees vm->backend_data. */
    void (*destroy)(struct vmm_backend *b, struct vmm_vm *vm);
};

/* Backends compiled into dstack-vmm. The sandbox backend is weak: dstack-vmm refuses
 * `cvm.backend = "sandbox"` when vmm_sandbox*.c is not part of the build. */
extern const struct vmm_backend_ops vmm_qemu_backend;
extern const struct vmm_backend_ops vmm_sandbox_backend __attribute__((weak));

#endif /* DSTACK_VMM_BACKEND_H */
