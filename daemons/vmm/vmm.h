/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dstack-vmm internals shared by its files: the configuration (vmm_config.c, upstream's
 * vmm.toml keys, host-side.md §1.2), the daemon's VM records and their crash-safe on-disk
 * state (vmm_state.c, §1.4/§1.5), guest images (vmm_images.c, §1.6), request validation and
 * port mappings (vmm_ports.c, §1.3), the Vmm pRPC service (vmm_api.c), GET /logs
 * (vmm_logs.c), the per-VM host API (vmm_hostapi.c, §1.7) and ProxiedGuestApi (vmm_guest.c).
 * Everything runs on one libevent loop; nothing here is thread-safe.
 */
#ifndef DSTACK_VMM_H
#define DSTACK_VMM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dstack/base.h"
#include "dstack/config.h"
#include "dstack/rpc.h"
#include "vmm_backend.h"

struct event_base;
struct event;
struct ds_rpc_server;

/* ---- limits (host-side.md §1.3) -------------------------------------------------------------- */
#define VMM_ID_MAX           64                  /* VM id: [A-Za-z0-9_-]{1,64} */
#define VMM_NAME_MAX         256                 /* VM name bytes */
#define VMM_IMAGE_NAME_MAX   64                  /* image dir name: [alnum_.-]{1,64}, no ".." */
#define VMM_COMPOSE_MAX      (4u * 1024 * 1024)  /* compose_file bytes accepted */
#define VMM_ENV_MAX          (256u * 1024)       /* encrypted_env bytes (= guest copy cap) */
#define VMM_USER_CONFIG_MAX  (1024u * 1024)      /* user_config bytes */
#define VMM_BODY_MAX         (10u * 1024 * 1024) /* pRPC body limit (upstream: 10 MiB) */
#define VMM_MANIFEST_MAX     (1024u * 1024)      /* vm-manifest.json read limit */
#define VMM_URLS_MAX         64                  /* kms_urls / gateway_urls entries */
#define VMM_EVENT_BODY_MAX   4096                /* Notify payloads beyond are dropped (§1.5) */
#define VMM_METADATA_MAX     (256u * 1024)       /* image metadata.json */
#define VMM_IMAGES_MAX       1024                /* image directories scanned */
#define VMM_VMS_MAX          4096                /* VMs per run directory */
#define VMM_PAGE_SIZE_MAX    10000
#define VMM_LOG_TAIL_DEFAULT 10000              /* lines GET /logs returns by default */
#define VMM_LOG_READ_MAX     (8u * 1024 * 1024) /* bytes of a log tail read at most */
#define VMM_TOKENS_MAX       64

/* ---- configuration (vmm.toml) ---------------------------------------------------------------- */

struct vmm_port_range {
    char *protocol; /* "tcp" or "udp" */
    int64_t from;
    int64_t to;
};

struct vmm_config {
    /* top level */
    int64_t workers;
    int64_t max_blocking;
    char *ident;
    char *temp_dir;
    int64_t keep_alive;
    char *log_level;
    char *address;                /* "unix:<path>" or "tcp:<ip>:<port>" */
    int64_t port;                 /* used when address is "tcp:<ip>" without a port */
    struct ds_config_strv listen; /* extra listeners, same syntax as address */
    bool reuse;
    char *kms_url;
    int64_t event_buffer_size;
    char *node_name;
    char *run_path;
    char *image_path_deprecated; /* `image_path` (-> [image].path) */
    /* [image] */
    char *image_path;
    char *image_registry;
    /* [cvm] */
    int backend; /* enum vmm_backend_kind */
    char *qemu_path;
    int accel; /* auto | kvm | tcg (ours) */
    struct ds_config_strv kms_urls;
    struct ds_config_strv gateway_urls;
    char *pccs_url;
    char *docker_registry;
    int64_t cid_start;
    int64_t cid_pool_size;
    int64_t max_allocable_vcpu;
    int64_t max_allocable_memory_in_mb;
    bool qmp_socket;
    char *user;
    int host_share_mode; /* 9p | vhd | vvfat */
    /* accepted for upstream vmm.toml compatibility; see vmm_config.c */
    int platform; /* auto | tdx | amd-sev-snp */
    char *qemu_version;
    bool use_mrconfigid;
    int64_t qgs_port;
    char *instance_id;
    char *volumes_dir;
    bool gpu_enabled;
    char *sup_exe;
    char *sup_sock;
    char *sup_pid_file;
    char *sup_log_file;
    bool sup_detached;
    bool sup_auto_start;
    char *product_sys_vendor;
    char *product_name;
    /* [cvm.port_mapping] */
    bool pm_enabled;
    char *pm_address;
    struct ds_config_tables pm_range; /* struct vmm_port_range */
    /* [cvm.networking] */
    int net_mode; /* user | bridge | custom */
    char *net_net;
    char *net_dhcp_start;
    bool net_restrict;
    char *net_bridge;
    /* [cvm.auto_restart] */
    bool ar_enabled;
    int64_t ar_interval;
    int64_t ar_max_retries;
    int64_t ar_initial_backoff;
    int64_t ar_max_backoff;
    int64_t ar_reset_window;
    /* [cvm.log] */
    uint64_t log_max_bytes;
    int64_t log_max_backups;
    int64_t log_check_interval_secs;
    /* [gateway] */
    char *gw_base_domain;
    int64_t gw_port;
    int64_t gw_agent_port;
    /* [auth] */
    bool auth_enabled;
    struct ds_config_strv auth_tokens;
    char *auth_htpasswd_file;
    /* [host_api] */
    char *host_api_ident;
    char *host_api_address;
    int64_t host_api_port;
    /* [key_provider] */
    bool kp_enabled;
    char *kp_address;
    int64_t kp_port;
};

enum vmm_backend_kind { VMM_BACKEND_QEMU = 0, VMM_BACKEND_SANDBOX = 1 };

extern const struct ds_config_schema vmm_config_schema;

/* Load vmm.toml (path NULL = defaults only) and check the cross-key rules. On failure a
 * message in err. 0 or negative. Release with vmm_config_free(). */
DS_MUST_USE int vmm_config_load(const char *path, struct vmm_config *cfg, char *err,
                                size_t err_size);
void vmm_config_free(struct vmm_config *cfg);

/* ---- images (vmm_images.c) ------------------------------------------------------------------- */

/* Whether name is a valid image directory name (§1.3). */
bool vmm_image_name_valid(const char *name);
/* Load <image_path>/<name>. Returns 0 and a new image, -DS_E_NOT_FOUND (no such dir or no
 * metadata.json), -DS_E_FORMAT (bad metadata, artifact escaping the dir), with err. */
DS_MUST_USE int vmm_image_load(const char *image_path, const char *name, struct vmm_image **out,
                               char *err, size_t err_size);
void vmm_image_free(struct vmm_image *img);
/* Every loadable image under image_path as ListImages entries (JSON array, new ref). */
json_t *vmm_images_list(const char *image_path);

/* ---- request validation and port mappings (vmm_ports.c; no logging, fuzzed) ----------------- */

bool vmm_vm_name_valid(const char *name);
bool vmm_vm_id_valid(const char *id);

/* A request's PortMapping list, parsed. */
struct vmm_ports {
    struct vmm_port_map *items;
    size_t count;
};
void vmm_ports_free(struct vmm_ports *p);

/*
 * Parse `ports` (JSON array of {protocol, host_port, vm_port, host_address}) and check it
 * against the port-mapping policy: enabled, protocol tcp/udp, ports 1..65535, host port inside
 * a configured range for the protocol, empty host_address -> default_address (unless
 * require_address, then an error), no duplicate (protocol, host port, overlapping address)
 * within the list. NULL / empty array = no ports (always allowed). 0 or -DS_E_FORMAT with err.
 */
DS_MUST_USE int vmm_ports_parse(const json_t *ports, bool enabled, const char *default_address,
                                const struct vmm_port_range *ranges, size_t range_count,
                                bool require_address, struct vmm_ports *out, char *err,
                                size_t err_size);
/* Whether two mappings collide (same protocol and host port, same or wildcard address). */
bool vmm_port_conflict(const struct vmm_port_map *a, const struct vmm_port_map *b);

/* ---- VM records and state (vmm_state.c) ------------------------------------------------------ */

struct vmm_event_rec {
    char *event;
    char *body;
    uint64_t timestamp_ms;
};

struct vmm_vm_rec {
    struct vmm_vm bk; /* the backend's view; strings point into the fields below */
    char *id;
    char *workdir;
    char *shared_dir;
    char *serial_log;
    char *stdout_log;
    char *stderr_log;
    char *pid_file;
    char *host_api_socket;
    char *tee_socket;        /* <workdir>/tee-device.sock (simulated TEE) */
    json_t *manifest;        /* vm-manifest.json as loaded/written */
    struct vmm_image *image; /* NULL when the image is missing (start then fails) */
    struct vmm_ports ports;
    bool started;  /* desired run state (vm-state.json) */
    bool removing; /* .removing marker present */
    bool running;  /* process alive at last check */
    pid_t pid;
    uint64_t start_ms; /* wall clock of the last start, 0 never */
    uint64_t exit_ms;  /* wall clock the process was seen gone, 0 never */
    char *boot_progress;
    char *boot_error;
    char *shutdown_progress;
    struct vmm_event_rec *events; /* ring of event_buffer_size */
    size_t event_count;
    size_t event_head;
    /* auto-restart bookkeeping (§1.5) */
    unsigned restart_attempts;
    uint64_t next_restart_ms;
    struct ds_rpc_server *host_api; /* per-VM host API on host_api_socket */
    void *host_api_ctx;             /* its site and context (vmm_hostapi.c) */
    struct vmm_vm_rec *next;
};

struct vmm {
    struct vmm_config cfg;
    const char *config_file;
    struct event_base *base;
    struct ds_rpc_server *server;
    struct vmm_backend backend;
    struct vmm_vm_rec *vms;
    struct event *tick;
    uint64_t started_ms;
    uint64_t auto_restart_ms; /* last auto-restart pass */
    char *run_path;           /* absolute */
    char *image_path;
};

uint64_t vmm_now_ms(void);

/* Scan the run dir at startup: finish interrupted creations/removals, load every VM, start
 * those whose desired state is running. 0 or negative (the run dir is unusable). */
DS_MUST_USE int vmm_state_load_all(struct vmm *v);
/* ReloadVms: rescan; counts of loaded / updated / removed records. */
DS_MUST_USE int vmm_state_reload(struct vmm *v, unsigned *out_loaded, unsigned *out_updated,
                                 unsigned *out_removed);
struct vmm_vm_rec *vmm_vm_find(struct vmm *v, const char *id);
/* Free every record (the daemon is exiting; processes are left running). */
void vmm_state_free_all(struct vmm *v);

/* What CreateVm writes (everything validated already). */
struct vmm_create {
    json_t *manifest; /* borrowed; must contain "id" */
    const char *compose;
    size_t compose_len;
    const uint8_t *encrypted_env;
    size_t encrypted_env_len;
    const char *user_config;
    const char *app_id;
    bool started;
};
/* Create the VM directory crash-safely (.creating-<id> then rename) and load the record.
 * 0 or negative with err; on failure nothing is left on disk. */
DS_MUST_USE int vmm_state_create(struct vmm *v, const struct vmm_create *c, struct vmm_vm_rec **out,
                                 char *err, size_t err_size);
/* Persist the desired run state (vm-state.json) and update the record. */
DS_MUST_USE int vmm_state_set_started(struct vmm_vm_rec *vm, bool started);
/* Replace vm-manifest.json with `manifest` (stolen reference) and refresh the record. */
DS_MUST_USE int vmm_state_write_manifest(struct vmm *v, struct vmm_vm_rec *vm, json_t *manifest,
                                         char *err, size_t err_size);
/* Write a file of the host share atomically (shared/<name>). */
DS_MUST_USE int vmm_state_write_shared(struct vmm_vm_rec *vm, const char *name, const void *data,
                                       size_t len);
/* Read shared/<name> into a malloc'd NUL-terminated string (NULL if absent). */
char *vmm_state_read_shared(const struct vmm_vm_rec *vm, const char *name, size_t max,
                            size_t *out_len);
/* Start marking removal (.removing, fsync); the rest runs from the tick. 0 or negative. */
DS_MUST_USE int vmm_state_begin_remove(struct vmm *v, struct vmm_vm_rec *vm);

/* Start the VM's process through the backend (writes .sys-config.json first). */
DS_MUST_USE int vmm_vm_start(struct vmm *v, struct vmm_vm_rec *vm, char *err, size_t err_size);
/* Hard or graceful stop through the backend. */
DS_MUST_USE int vmm_vm_stop(struct vmm *v, struct vmm_vm_rec *vm, bool graceful, char *err,
                            size_t err_size);
/* Refresh vm->running from the backend (reaps exited children). */
void vmm_vm_poll(struct vmm *v, struct vmm_vm_rec *vm);
/* One tick of background work: process exits, removals, auto-restart. */
void vmm_state_tick(struct vmm *v);
/* Record a guest or VMM event (ring of event_buffer_size). */
void vmm_vm_event(struct vmm *v, struct vmm_vm_rec *vm, const char *event, const char *body);
/* "running" | "exited" | "stopping" | "stopped" | "removing" (§1.3). */
const char *vmm_vm_status(const struct vmm_vm_rec *vm);

/* ---- services -------------------------------------------------------------------------------- */

/* Listen on every configured address with the Vmm site. 0 or negative (logged). */
DS_MUST_USE int vmm_api_listen(struct vmm *v);
/* Wait (bounded) for GetAppEnvEncryptPubKey worker threads before the loop is freed. */
void vmm_api_drain(void);
/* GET /logs raw route. */
int vmm_logs_route(struct ds_rpc_call *call, void *ctx);
/* ProxiedGuestApi service mounted at /guest/. */
extern const struct ds_rpc_service vmm_guest_service;
/* Per-VM host API (Unix socket in the workdir). 0 or negative. */
DS_MUST_USE int vmm_hostapi_open(struct vmm *v, struct vmm_vm_rec *vm);
void vmm_hostapi_close(struct vmm_vm_rec *vm);
/* Forward `method` to the VM's guest agent on a worker thread and answer `call` from the loop
 * (the result JSON, or {} when empty_reply). Returns DS_RPC_DEFERRED or an error (call's
 * message set). */
DS_MUST_USE int vmm_guest_call_deferred(struct vmm *v, struct vmm_vm_rec *vm,
                                        struct ds_rpc_call *call, const char *method,
                                        bool empty_reply);
/* Whether the backend put a guest API socket at <workdir>/guest-api.sock. */
bool vmm_guest_has_api_socket(const struct vmm_vm_rec *vm);
/* Wait (bounded) for guest request threads before the loop is freed. */
void vmm_guest_drain(void);

#endif /* DSTACK_VMM_H */
