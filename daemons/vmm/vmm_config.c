/* SPDX-License-Identifier: Apache-2.0 */
/*
 * vmm.toml: one schema table with upstream's keys where they apply to this VMM (host-side.md
 * §1.2) drives loading, `--check`, `--dump-config` and docs/vmm.md. Keys upstream has that
 * this VMM reads but does not act on (workers, keep_alive, ...) are accepted so that an
 * upstream vmm.toml loads; keys it does not know are errors. `[cvm] backend` (qemu|sandbox)
 * and top-level `listen` (extra listeners) are ours. Cross-key rules (address syntax, port
 * ranges, CID pool) are checked after the schema.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

#define OFF(f) offsetof(struct vmm_config, f)

static const char *const backend_choices[] = {"qemu", "sandbox", NULL};
static const char *const accel_choices[] = {"auto", "kvm", "tcg", NULL};
static const char *const platform_choices[] = {"auto", "tdx", "amd-sev-snp", NULL};
static const char *const share_choices[] = {"9p", "vhd", "vvfat", NULL};
static const char *const net_choices[] = {"user", "bridge", "custom", NULL};
static const char *const proto_choices[] = {"tcp", "udp", NULL};

static const struct ds_config_key range_keys[] = {
    {"protocol", DS_CFG_STRING, offsetof(struct vmm_port_range, protocol), "tcp", 0, 3,
     proto_choices, NULL, "tcp or udp", 0},
    {"from", DS_CFG_INT, offsetof(struct vmm_port_range, from), NULL, 1, 65535, NULL, NULL,
     "first host port", DS_CFG_REQUIRED},
    {"to", DS_CFG_INT, offsetof(struct vmm_port_range, to), NULL, 1, 65535, NULL, NULL,
     "last host port", DS_CFG_REQUIRED},
};
static const struct ds_config_schema range_schema = {
    "port range", range_keys, DS_ARRAY_SIZE(range_keys), sizeof(struct vmm_port_range)};

static const struct ds_config_key vmm_keys[] = {
    {"workers", DS_CFG_INT, OFF(workers), "8", 1, 1024, NULL, NULL, "accepted (one event loop)", 0},
    {"max_blocking", DS_CFG_INT, OFF(max_blocking), "64", 1, 4096, NULL, NULL, "accepted", 0},
    {"ident", DS_CFG_STRING, OFF(ident), "dstack VMM", 0, 256, NULL, NULL, "server ident", 0},
    {"temp_dir", DS_CFG_PATH, OFF(temp_dir), "/tmp", 0, 0, NULL, NULL, "temporary files", 0},
    {"keep_alive", DS_CFG_INT, OFF(keep_alive), "10", 0, 3600, NULL, NULL,
     "keep-alive seconds (accepted)", 0},
    {"log_level", DS_CFG_STRING, OFF(log_level), "info", 0, 32, NULL, NULL, "info or debug", 0},
    {"address", DS_CFG_STRING, OFF(address), "unix:./vmm.sock", 0, 512, NULL, NULL,
     "external API: unix:<path> or tcp:<ip>:<port>", 0},
    {"port", DS_CFG_INT, OFF(port), "0", 0, 65535, NULL, NULL,
     "TCP port when address is tcp:<ip> without one", 0},
    {"listen", DS_CFG_STRINGS, OFF(listen), NULL, 0, 0, NULL, NULL,
     "extra listeners (same syntax as address)", 0},
    {"reuse", DS_CFG_BOOL, OFF(reuse), "true", 0, 0, NULL, NULL, "accepted", 0},
    {"kms_url", DS_CFG_STRING, OFF(kms_url), "http://127.0.0.1:8081", 0, 1024, NULL, NULL,
     "KMS for GetAppEnvEncryptPubKey", 0},
    {"event_buffer_size", DS_CFG_INT, OFF(event_buffer_size), "20", 1, 10000, NULL, NULL,
     "guest events kept per VM", 0},
    {"node_name", DS_CFG_STRING, OFF(node_name), "", 0, 256, NULL, NULL, "node name", 0},
    {"run_path", DS_CFG_PATH, OFF(run_path), "~/.dstack-vmm/vm", 0, 0, NULL, NULL,
     "VM state directory", 0},
    {"image_path", DS_CFG_PATH, OFF(image_path_deprecated), NULL, 0, 0, NULL, NULL,
     "deprecated: [image] path", 0},
    {"image.path", DS_CFG_PATH, OFF(image_path), "~/.dstack-vmm/image", 0, 0, NULL, NULL,
     "guest image directory", 0},
    {"image.registry", DS_CFG_STRING, OFF(image_registry), "", 0, 512, NULL, NULL,
     "OCI registry (not used)", 0},
    {"cvm.backend", DS_CFG_ENUM, OFF(backend), "qemu", 0, 0, backend_choices, NULL,
     "qemu or sandbox", 0},
    {"cvm.qemu_path", DS_CFG_PATH, OFF(qemu_path), "", 0, 0, NULL, NULL,
     "QEMU binary (empty: qemu-system-x86_64 in PATH)", 0},
    {"cvm.accel", DS_CFG_ENUM, OFF(accel), "auto", 0, 0, accel_choices, NULL,
     "qemu accelerator: auto (kvm when /dev/kvm is usable), kvm or tcg (no-TEE only)", 0},
    {"cvm.kms_urls", DS_CFG_STRINGS, OFF(kms_urls), NULL, 0, 0, NULL, NULL, "default KMS URLs", 0},
    {"cvm.gateway_urls", DS_CFG_STRINGS, OFF(gateway_urls), NULL, 0, 0, NULL, NULL,
     "default gateway URLs", 0},
    {"cvm.pccs_url", DS_CFG_STRING, OFF(pccs_url), "", 0, 1024, NULL, NULL, "PCCS URL", 0},
    {"cvm.docker_registry", DS_CFG_STRING, OFF(docker_registry), "", 0, 1024, NULL, NULL,
     "docker registry mirror", 0},
    {"cvm.cid_start", DS_CFG_INT, OFF(cid_start), "1000", 3, 0xfffffff0, NULL, NULL,
     "first vsock CID", 0},
    {"cvm.cid_pool_size", DS_CFG_INT, OFF(cid_pool_size), "1000", 1, 0xfffffff0, NULL, NULL,
     "CIDs (= max VMs running)", 0},
    {"cvm.max_allocable_vcpu", DS_CFG_INT, OFF(max_allocable_vcpu), "20", 1, 4096, NULL, NULL,
     "informational", 0},
    {"cvm.max_allocable_memory_in_mb", DS_CFG_INT, OFF(max_allocable_memory_in_mb), "100000", 1,
     INT64_C(1) << 40, NULL, NULL, "informational", 0},
    {"cvm.qmp_socket", DS_CFG_BOOL, OFF(qmp_socket), "false", 0, 0, NULL, NULL,
     "QMP socket in the workdir", 0},
    {"cvm.user", DS_CFG_STRING, OFF(user), "", 0, 64, NULL, NULL, "run QEMU as this user", 0},
    {"cvm.host_share_mode", DS_CFG_ENUM, OFF(host_share_mode), "9p", 0, 0, share_choices, NULL,
     "9p, vhd or vvfat", 0},
    {"cvm.platform", DS_CFG_ENUM, OFF(platform), "auto", 0, 0, platform_choices, NULL,
     "TEE platform (guests run without a TEE here; must stay auto)", 0},
    {"cvm.qemu_version", DS_CFG_STRING, OFF(qemu_version), "", 0, 32, NULL, NULL,
     "accepted (detected from qemu --version)", 0},
    {"cvm.use_mrconfigid", DS_CFG_BOOL, OFF(use_mrconfigid), "true", 0, 0, NULL, NULL,
     "accepted (TDX only)", 0},
    {"cvm.qgs_port", DS_CFG_INT, OFF(qgs_port), "4050", 0, 65535, NULL, NULL, "accepted (TDX only)",
     0},
    {"cvm.instance_id", DS_CFG_STRING, OFF(instance_id), "", 0, 64, NULL, NULL,
     "accepted (TAP name namespace)", 0},
    {"cvm.volumes_dir", DS_CFG_PATH, OFF(volumes_dir), "", 0, 0, NULL, NULL,
     "accepted (verity volumes not supported)", 0},
    {"cvm.gpu.enabled", DS_CFG_BOOL, OFF(gpu_enabled), "false", 0, 0, NULL, NULL,
     "GPU passthrough (not supported: must be false)", 0},
    {"cvm.product.sys_vendor", DS_CFG_STRING, OFF(product_sys_vendor), "dstack", 0, 256, NULL, NULL,
     "SMBIOS type 1 manufacturer (accepted)", 0},
    {"cvm.product.product_name", DS_CFG_STRING, OFF(product_name), "dstack", 0, 256, NULL, NULL,
     "SMBIOS type 1 product (accepted)", 0},
    {"supervisor.exe", DS_CFG_STRING, OFF(sup_exe), "./supervisor", 0, 1024, NULL, NULL,
     "accepted (guests are children of dstack-vmm's own sessions)", 0},
    {"supervisor.sock", DS_CFG_STRING, OFF(sup_sock), "./run/supervisor.sock", 0, 1024, NULL, NULL,
     "accepted", 0},
    {"supervisor.pid_file", DS_CFG_STRING, OFF(sup_pid_file), "", 0, 1024, NULL, NULL, "accepted",
     0},
    {"supervisor.log_file", DS_CFG_STRING, OFF(sup_log_file), "", 0, 1024, NULL, NULL, "accepted",
     0},
    {"supervisor.detached", DS_CFG_BOOL, OFF(sup_detached), "false", 0, 0, NULL, NULL, "accepted",
     0},
    {"supervisor.auto_start", DS_CFG_BOOL, OFF(sup_auto_start), "true", 0, 0, NULL, NULL,
     "accepted", 0},
    {"cvm.port_mapping.enabled", DS_CFG_BOOL, OFF(pm_enabled), "false", 0, 0, NULL, NULL,
     "allow port mappings", 0},
    {"cvm.port_mapping.address", DS_CFG_STRING, OFF(pm_address), "127.0.0.1", 0, VMM_ADDR_MAX - 1,
     NULL, NULL, "default host address", 0},
    {"cvm.port_mapping.range", DS_CFG_TABLES, OFF(pm_range), NULL, 0, 0, NULL, &range_schema,
     "allowed host port ranges [{protocol, from, to}]", 0},
    {"cvm.networking.mode", DS_CFG_ENUM, OFF(net_mode), "user", 0, 0, net_choices, NULL,
     "user, bridge or custom", 0},
    {"cvm.networking.net", DS_CFG_STRING, OFF(net_net), "10.0.2.0/24", 0, 64, NULL, NULL,
     "user-mode network", 0},
    {"cvm.networking.dhcp_start", DS_CFG_STRING, OFF(net_dhcp_start), "10.0.2.10", 0, 64, NULL,
     NULL, "user-mode DHCP start", 0},
    {"cvm.networking.restrict", DS_CFG_BOOL, OFF(net_restrict), "false", 0, 0, NULL, NULL,
     "user-mode restrict", 0},
    {"cvm.networking.bridge", DS_CFG_STRING, OFF(net_bridge), "", 0, 15, NULL, NULL,
     "bridge name (bridge mode)", 0},
    {"cvm.auto_restart.enabled", DS_CFG_BOOL, OFF(ar_enabled), "true", 0, 0, NULL, NULL,
     "restart exited VMs whose desired state is running", 0},
    {"cvm.auto_restart.interval", DS_CFG_INT, OFF(ar_interval), "20", 1, 86400, NULL, NULL,
     "seconds between checks", 0},
    {"cvm.auto_restart.max_retries", DS_CFG_INT, OFF(ar_max_retries), "5", 0, 1000, NULL, NULL,
     "attempts before giving up", 0},
    {"cvm.auto_restart.initial_backoff", DS_CFG_INT, OFF(ar_initial_backoff), "5", 0, 86400, NULL,
     NULL, "seconds", 0},
    {"cvm.auto_restart.max_backoff", DS_CFG_INT, OFF(ar_max_backoff), "300", 0, 86400, NULL, NULL,
     "seconds", 0},
    {"cvm.auto_restart.reset_window", DS_CFG_INT, OFF(ar_reset_window), "300", 0, 86400, NULL, NULL,
     "seconds of running that reset the budget", 0},
    {"cvm.log.max_bytes", DS_CFG_SIZE, OFF(log_max_bytes), "4M", 0, 0, NULL, NULL,
     "rotate logs beyond", 0},
    {"cvm.log.max_backups", DS_CFG_INT, OFF(log_max_backups), "3", 0, 100, NULL, NULL,
     "rotated logs kept", 0},
    {"cvm.log.check_interval_secs", DS_CFG_INT, OFF(log_check_interval_secs), "5", 1, 3600, NULL,
     NULL, "rotation check interval", 0},
    {"gateway.base_domain", DS_CFG_STRING, OFF(gw_base_domain), "localhost", 0, 253, NULL, NULL,
     "app URL domain", 0},
    {"gateway.port", DS_CFG_INT, OFF(gw_port), "8082", 0, 65535, NULL, NULL, "app URL port", 0},
    {"gateway.agent_port", DS_CFG_INT, OFF(gw_agent_port), "8090", 0, 65535, NULL, NULL,
     "guest agent port in app URLs", 0},
    {"auth.enabled", DS_CFG_BOOL, OFF(auth_enabled), "false", 0, 0, NULL, NULL,
     "require a token on every request", 0},
    {"auth.tokens", DS_CFG_STRINGS, OFF(auth_tokens), NULL, 0, 0, NULL, NULL,
     "accepted tokens (Bearer, X-Admin-Token, Basic password)", DS_CFG_SECRET},
    {"auth.htpasswd_file", DS_CFG_PATH, OFF(auth_htpasswd_file), "", 0, 0, NULL, NULL,
     "not supported (must be empty)", 0},
    {"host_api.ident", DS_CFG_STRING, OFF(host_api_ident), "dstack VMM", 0, 256, NULL, NULL,
     "HostApi Info name", 0},
    {"host_api.address", DS_CFG_STRING, OFF(host_api_address), "vsock:2", 0, 64, NULL, NULL,
     "vsock:<cid> (qemu guests)", 0},
    {"host_api.port", DS_CFG_INT, OFF(host_api_port), "10000", 1, 0xffffffff, NULL, NULL,
     "vsock port", 0},
    {"key_provider.enabled", DS_CFG_BOOL, OFF(kp_enabled), "true", 0, 0, NULL, NULL,
     "relay GetSealingKey to the SGX key provider", 0},
    {"key_provider.address", DS_CFG_STRING, OFF(kp_address), "127.0.0.1", 0, 64, NULL, NULL,
     "key provider address", 0},
    {"key_provider.port", DS_CFG_INT, OFF(kp_port), "3443", 1, 65535, NULL, NULL,
     "key provider port", 0},
};

const struct ds_config_schema vmm_config_schema = {"vmm.toml", vmm_keys, DS_ARRAY_SIZE(vmm_keys),
                                                   sizeof(struct vmm_config)};

static bool url_ok(const char *u)
{
    const char *rest = NULL;
    if (strncmp(u, "http://", 7) == 0) {
        rest = u + 7;
    } else if (strncmp(u, "https://", 8) == 0) {
        rest = u + 8;
    }
    return rest && *rest && *rest != '/';
}

static int check_urls(const struct ds_config_strv *v, const char *key, char *err, size_t n)
{
    for (size_t i = 0; i < v->count; i++) {
        if (!url_ok(v->items[i])) {
            snprintf(err, n, "vmm.toml: %s: \"%s\" is not an http(s) URL with a host", key,
                     v->items[i]);
            return -DS_E_FORMAT;
        }
    }
    return 0;
}

static int check_address(const char *a, const char *key, char *err, size_t n)
{
    if (strncmp(a, "unix:", 5) == 0 && a[5]) {
        return 0;
    }
    if (strncmp(a, "tcp:", 4) == 0 && a[4]) {
        return 0;
    }
    snprintf(err, n, "vmm.toml: %s: \"%s\" must be unix:<path> or tcp:<ip>:<port>", key, a);
    return -DS_E_FORMAT;
}

int vmm_config_load(const char *path, struct vmm_config *cfg, char *err, size_t err_size)
{
    struct ds_config_err e;
    memset(&e, 0, sizeof(e));
    memset(cfg, 0, sizeof(*cfg));
    int r = path ? ds_config_load(&vmm_config_schema, path, cfg, &e)
                 : ds_config_defaults(&vmm_config_schema, cfg, &e);
    if (r < 0) {
        snprintf(err, err_size, "%s", e.msg[0] ? e.msg : ds_strerror(r));
        return r;
    }
    if (cfg->image_path_deprecated && cfg->image_path_deprecated[0]) {
        free(cfg->image_path);
        cfg->image_path = strdup(cfg->image_path_deprecated);
        if (!cfg->image_path) {
            r = -ENOMEM;
            goto fail;
        }
    }
    if ((r = check_address(cfg->address, "address", err, err_size)) < 0) {
        goto fail;
    }
    for (size_t i = 0; i < cfg->listen.count; i++) {
        if ((r = check_address(cfg->listen.items[i], "listen", err, err_size)) < 0) {
            goto fail;
        }
    }
    if (!url_ok(cfg->kms_url)) {
        snprintf(err, err_size, "vmm.toml: kms_url: \"%s\" is not an http(s) URL", cfg->kms_url);
        r = -DS_E_FORMAT;
        goto fail;
    }
    if ((r = check_urls(&cfg->kms_urls, "cvm.kms_urls", err, err_size)) < 0 ||
        (r = check_urls(&cfg->gateway_urls, "cvm.gateway_urls", err, err_size)) < 0) {
        goto fail;
    }
    if (cfg->cid_start + cfg->cid_pool_size > INT64_C(0xffffffff)) {
        snprintf(err, err_size, "vmm.toml: cvm.cid_start + cvm.cid_pool_size overflows");
        r = -DS_E_FORMAT;
        goto fail;
    }
    const struct vmm_port_range *ranges = cfg->pm_range.items;
    for (size_t i = 0; i < cfg->pm_range.count; i++) {
        if (strcmp(ranges[i].protocol, "tcp") != 0 && strcmp(ranges[i].protocol, "udp") != 0) {
            snprintf(err, err_size,
                     "vmm.toml: cvm.port_mapping.range[%zu]: protocol must be tcp or udp", i);
            r = -DS_E_FORMAT;
            goto fail;
        }
        if (ranges[i].from > ranges[i].to) {
            snprintf(err, err_size, "vmm.toml: cvm.port_mapping.range[%zu]: from > to", i);
            r = -DS_E_FORMAT;
            goto fail;
        }
    }
    if (cfg->net_mode == 1 && !cfg->net_bridge[0]) {
        snprintf(err, err_size, "vmm.toml: cvm.networking.bridge is required in bridge mode");
        r = -DS_E_FORMAT;
        goto fail;
    }
    if (cfg->gpu_enabled) {
        snprintf(err, err_size, "vmm.toml: cvm.gpu.enabled: GPU passthrough is not supported");
        r = -DS_E_UNSUPPORTED;
        goto fail;
    }
    if (cfg->platform != 0) {
        snprintf(err, err_size,
                 "vmm.toml: cvm.platform: TDX / SEV-SNP launch is not supported by this VMM "
                 "(leave it auto)");
        r = -DS_E_UNSUPPORTED;
        goto fail;
    }
    if (cfg->auth_htpasswd_file && cfg->auth_htpasswd_file[0]) {
        snprintf(err, err_size, "vmm.toml: auth.htpasswd_file is not supported; use auth.tokens");
        r = -DS_E_UNSUPPORTED;
        goto fail;
    }
    if (cfg->auth_enabled && cfg->auth_tokens.count == 0) {
        snprintf(err, err_size, "vmm.toml: auth.enabled needs at least one auth.tokens entry");
        r = -DS_E_FORMAT;
        goto fail;
    }
    return 0;
fail:
    ds_config_free(&vmm_config_schema, cfg);
    return r;
}

void vmm_config_free(struct vmm_config *cfg)
{
    ds_config_free(&vmm_config_schema, cfg);
}
