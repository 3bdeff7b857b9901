/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The Vmm pRPC service (host-side.md §1.3) at /prpc/<Method> (tolerating the "Teepod." and
 * "Vmm." prefixes), JSON only, with upstream's field names, validation and status strings.
 * Every mutating method validates its whole request (names, image, compose, ports against the
 * policy and every other VM, sizes) before it writes anything; the writes themselves go
 * through vmm_state.c's atomic, crash-safe steps. Also: the listeners (unix:/tcp:), the
 * [auth] filter (Bearer, X-Admin-Token, Basic password, GET ?token=), GET /logs and the
 * ProxiedGuestApi mount at /guest/.
 */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#include "dstack/compose.h"
#include "dstack/crypto.h"
#include "dstack/rpc.h"
#include "dstack/vmm_qemu.h"
#include "log.h"
#include "vmm.h"

#define KMS_TIMEOUT_S       10
#define KMS_REPLY_MAX       (64u * 1024)
#define VERSION_HEADER_MAX  128
#define SIMULATED_TEE_COUNT 5

static const char *const simulated_tees[SIMULATED_TEE_COUNT] = {
    "dstack-tdx", "dstack-gcp-tdx", "dstack-amd-sev-snp", "dstack-nitro-enclave",
    "dstack-aws-nitro-tpm"};

#define VMM_CTX(ctx) ((struct vmm *)(ctx))

/* ---- request decoding ------------------------------------------------------------------------ */

/* Top-level nulls mean "absent" for proto3 optional fields; the typed decoder refuses null. */
static json_t *strip_nulls(const json_t *params)
{
    json_t *o = json_object();
    const char *k;
    json_t *val;
    if (!o) {
        return NULL;
    }
    json_object_foreach((json_t *)params, k, val)
    {
        if (!json_is_null(val)) {
            json_object_set(o, k, val);
        }
    }
    return o;
}

struct vm_conf_req {
    char *name;
    char *image;
    char *compose_file;
    uint32_t vcpu;
    uint32_t memory;
    uint32_t disk_size;
    struct ds_rpc_bytes encrypted_env;
    char *app_id;
    char *user_config;
    bool hugepages;
    bool pin_numa;
    struct ds_rpc_strings kms_urls;
    struct ds_rpc_strings gateway_urls;
    bool stopped;
    bool no_tee;
    char *simulated_tee;
};

static const struct ds_rpc_field vm_conf_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct vm_conf_req, name, VMM_NAME_MAX * 4),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct vm_conf_req, image, 1024),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct vm_conf_req, compose_file, VMM_COMPOSE_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct vm_conf_req, vcpu, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct vm_conf_req, memory, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct vm_conf_req, disk_size, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct vm_conf_req, encrypted_env, VMM_ENV_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct vm_conf_req, app_id, 256),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct vm_conf_req, user_config, VMM_USER_CONFIG_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct vm_conf_req, hugepages, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct vm_conf_req, pin_numa, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRINGS, struct vm_conf_req, kms_urls, VMM_URLS_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_STRINGS, struct vm_conf_req, gateway_urls, VMM_URLS_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct vm_conf_req, stopped, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct vm_conf_req, no_tee, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct vm_conf_req, simulated_tee, 64),
};

struct id_req {
    char *id;
};
static const struct ds_rpc_field id_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct id_req, id, 256),
};

static int decode(struct ds_rpc_call *call, const json_t *params, const struct ds_rpc_field *f,
                  size_t n, void *out)
{
    json_t *p = strip_nulls(params);
    if (!p) {
        return -ENOMEM;
    }
    int r = ds_rpc_call_decode(call, p, f, n, out);
    json_decref(p);
    return r;
}

static int find_vm(struct ds_rpc_call *call, struct vmm *v, const json_t *params,
                   struct vmm_vm_rec **out)
{
    struct id_req req;
    int r = decode(call, params, id_fields, DS_ARRAY_SIZE(id_fields), &req);
    if (r < 0) {
        return r;
    }
    struct vmm_vm_rec *vm = vmm_vm_id_valid(req.id) ? vmm_vm_find(v, req.id) : NULL;
    if (!vm) {
        r = ds_rpc_call_error(call, "VM not found: %.80s", req.id);
    } else {
        *out = vm;
    }
    ds_rpc_params_free(id_fields, DS_ARRAY_SIZE(id_fields), &req);
    return r;
}

static bool url_ok(const char *u)
{
    const char *rest = strncmp(u, "http://", 7) == 0    ? u + 7
                       : strncmp(u, "https://", 8) == 0 ? u + 8
                                                        : NULL;
    return rest && *rest && *rest != '/';
}

static int check_urls(struct ds_rpc_call *call, const struct ds_rpc_strings *s, const char *field)
{
    for (size_t i = 0; i < s->count; i++) {
        if (!url_ok(s->items[i])) {
            return ds_rpc_call_error(call, "Invalid %s: \"%.120s\" is not an http(s) URL", field,
                                     s->items[i]);
        }
    }
    return 0;
}

static json_t *strings_json(const struct ds_rpc_strings *s)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->count; i++) {
        json_array_append_new(a, json_string(s->items[i]));
    }
    return a;
}

static int check_compose(struct ds_rpc_call *call, const char *text, size_t len,
                         struct ds_app_compose **out)
{
    struct ds_compose_error ce;
    memset(&ce, 0, sizeof(ce));
    struct ds_app_compose *c = NULL;
    int r = ds_app_compose_parse(text, len, &c, &ce);
    if (r < 0) {
        return ds_rpc_call_error(call, "Invalid compose file: %s%s%s", ce.field,
                                 ce.field[0] ? ": " : "", ce.msg[0] ? ce.msg : ds_strerror(r));
    }
    if (out) {
        *out = c;
    } else {
        ds_app_compose_free(c);
    }
    return 0;
}

/* app_id: optional hex, "0x" stripped, lowercased, 40 digits. */
static int normalize_app_id(struct ds_rpc_call *call, const char *in, char out[41])
{
    const char *p = in;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        p += 2;
    }
    uint8_t raw[20];
    if (strlen(p) != 40 || ds_hex_decode(p, 40, raw, sizeof(raw)) < 0) {
        return ds_rpc_call_error(call, "Invalid app_id: \"%.80s\" (40 hex digits)", in);
    }
    ds_hex_encode(raw, sizeof(raw), out);
    return 0;
}

/* Ports of every other VM (all of them, stopped ones too) must not collide with these. */
static int check_port_conflicts(struct ds_rpc_call *call, struct vmm *v,
                                const struct vmm_ports *ports, const struct vmm_vm_rec *self)
{
    for (const struct vmm_vm_rec *vm = v->vms; vm; vm = vm->next) {
        if (vm == self || vm->removing) {
            continue;
        }
        for (size_t i = 0; i < ports->count; i++) {
            for (size_t k = 0; k < vm->ports.count; k++) {
                if (vmm_port_conflict(&ports->items[i], &vm->ports.items[k])) {
                    return ds_rpc_call_error(call, "Port %s:%s:%u is already in use by VM %s (%s)",
                                             ports->items[i].protocol, ports->items[i].address,
                                             (unsigned)ports->items[i].from, vm->id, vm->bk.name);
                }
            }
        }
    }
    return 0;
}

static int parse_ports(struct ds_rpc_call *call, struct vmm *v, const json_t *ports,
                       bool require_address, struct vmm_ports *out)
{
    char err[VMM_ERR_MAX];
    int r = vmm_ports_parse(ports, v->cfg.pm_enabled, v->cfg.pm_address, v->cfg.pm_range.items,
                            v->cfg.pm_range.count, require_address, out, err, sizeof(err));
    if (r < 0) {
        return r == -ENOMEM ? r : ds_rpc_call_error(call, "%s", err);
    }
    return 0;
}

static json_t *port_map_json(const struct vmm_ports *p)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < p->count; i++) {
        json_array_append_new(a, json_pack("{s:s,s:s,s:i,s:i}", "address", p->items[i].address,
                                           "protocol", p->items[i].protocol, "from",
                                           (json_int_t)p->items[i].from, "to",
                                           (json_int_t)p->items[i].to));
    }
    return a;
}

static int check_networking(struct ds_rpc_call *call, struct vmm *v, const json_t *params)
{
    const json_t *net = json_object_get(params, "networking");
    const json_t *nets = json_object_get(params, "networks");
    json_t *one = NULL;
    if (json_is_array(nets) && json_array_size(nets) > 0) {
        if (json_array_size(nets) > 1) {
            return ds_rpc_call_error(call, "Only one network interface is supported");
        }
        one = json_array_get(nets, 0);
    } else if (json_is_object(net)) {
        one = (json_t *)net;
    } else if (net && !json_is_null(net)) {
        return ds_rpc_call_error(call, "networking must be an object");
    }
    if (!one) {
        return 0;
    }
    const char *mode = json_string_value(json_object_get(one, "mode"));
    if (!mode || !mode[0] || strcmp(mode, "user") == 0) {
        return 0;
    }
    if (strcmp(mode, "bridge") == 0) {
        const char *br = json_string_value(json_object_get(one, "bridge_name"));
        if ((!br || !br[0]) && !v->cfg.net_bridge[0]) {
            return ds_rpc_call_error(call, "bridge networking needs a bridge name");
        }
        return ds_rpc_call_error(call, "bridge networking is not supported by this VMM yet");
    }
    return ds_rpc_call_error(call, "Invalid networking mode: \"%.32s\" (user or bridge)", mode);
}

static int check_gpus(struct ds_rpc_call *call, const json_t *gpus)
{
    if (!gpus || json_is_null(gpus)) {
        return 0;
    }
    const json_t *list = json_object_get(gpus, "gpus");
    const char *mode = json_string_value(json_object_get(gpus, "attach_mode"));
    if ((json_is_array(list) && json_array_size(list) > 0) || (mode && strcmp(mode, "all") == 0)) {
        return ds_rpc_call_error(call, "GPU passthrough is not enabled on this host");
    }
    return 0;
}

static void new_uuid(char out[37])
{
    uint8_t b[16];
    if (ds_random(b, sizeof(b)) < 0) {
        memset(b, 0, sizeof(b));
    }
    b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
    b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
    snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0],
             b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13],
             b[14], b[15]);
}

/* ---- VmInfo ---------------------------------------------------------------------------------- */

/* humantime-style "1h 2m 3s" */
static void fmt_duration(uint64_t ms, char *out, size_t n)
{
    uint64_t s = ms / 1000;
    uint64_t d = s / 86400, h = (s / 3600) % 24, m = (s / 60) % 60, sec = s % 60;
    size_t o = 0;
    out[0] = '\0';
    if (d) {
        o += (size_t)snprintf(out + o, n - o, "%llud", (unsigned long long)d);
    }
    if (h && o < n) {
        o += (size_t)snprintf(out + o, n - o, "%s%lluh", o ? " " : "", (unsigned long long)h);
    }
    if (m && o < n) {
        o += (size_t)snprintf(out + o, n - o, "%s%llum", o ? " " : "", (unsigned long long)m);
    }
    if ((sec || o == 0) && o < n) {
        snprintf(out + o, n - o, "%s%llus", o ? " " : "", (unsigned long long)sec);
    }
}

static json_t *vm_configuration(const struct vmm_vm_rec *vm)
{
    const json_t *m = vm->manifest;
    size_t env_len = 0;
    char *compose = vmm_state_read_shared(vm, "app-compose.json", VMM_COMPOSE_MAX, NULL);
    char *env = vmm_state_read_shared(vm, ".encrypted-env", VMM_ENV_MAX, &env_len);
    char *ucfg = vmm_state_read_shared(vm, ".user-config", VMM_USER_CONFIG_MAX, NULL);
    char *env_hex = ds_hex_strdup(env ? env : "", env ? env_len : 0);
    json_t *ports = json_array();
    for (size_t i = 0; ports && i < vm->ports.count; i++) {
        const struct vmm_port_map *p = &vm->ports.items[i];
        json_array_append_new(ports, json_pack("{s:s,s:i,s:i,s:s}", "protocol", p->protocol,
                                               "host_port", (json_int_t)p->from, "vm_port",
                                               (json_int_t)p->to, "host_address", p->address));
    }
    json_t *kms = json_object_get(m, "kms_urls");
    json_t *gw = json_object_get(m, "gateway_urls");
    json_t *c = json_pack(
        "{s:s,s:s,s:s,s:i,s:i,s:i,s:o,s:s,s:s,s:s,s:b,s:b,s:O,s:O,s:b,s:b}", "name", vm->bk.name,
        "image",
        json_string_value(json_object_get(m, "image"))
            ? json_string_value(json_object_get(m, "image"))
            : "",
        "compose_file", compose ? compose : "", "vcpu", (json_int_t)vm->bk.vcpu, "memory",
        (json_int_t)vm->bk.memory_mb, "disk_size", (json_int_t)vm->bk.disk_gb, "ports",
        ports ? ports : json_array(), "encrypted_env", env_hex ? env_hex : "", "app_id",
        vm->bk.app_id, "user_config", ucfg ? ucfg : "", "hugepages", vm->bk.hugepages, "pin_numa",
        vm->bk.pin_numa, "kms_urls", json_is_array(kms) ? kms : json_array(), "gateway_urls",
        json_is_array(gw) ? gw : json_array(), "stopped", !vm->started, "no_tee", vm->bk.no_tee);
    if (c && vm->bk.simulated_tee) {
        json_object_set_new(c, "simulated_tee", json_string(vm->bk.simulated_tee));
    }
    free(compose);
    free(env);
    free(ucfg);
    free(env_hex);
    return c;
}

static json_t *vm_info(struct vmm *v, const struct vmm_vm_rec *vm, bool brief)
{
    uint64_t now = vmm_now_ms();
    char uptime[64] = "never", exited[64] = "never";
    if (vm->running && vm->start_ms) {
        fmt_duration(now - vm->start_ms, uptime, sizeof(uptime));
    }
    if (!vm->running && vm->exit_ms) {
        fmt_duration(now - vm->exit_ms, exited, sizeof(exited));
    }
    json_t *events = json_array();
    size_t cap = (size_t)v->cfg.event_buffer_size;
    for (size_t i = 0; events && i < vm->event_count; i++) {
        const struct vmm_event_rec *e = &vm->events[(vm->event_head + i) % cap];
        json_array_append_new(events, json_pack("{s:s,s:s,s:I}", "event", e->event, "body", e->body,
                                                "timestamp", (json_int_t)e->timestamp_ms));
    }
    char mac[18] = "";
    if (ds_qemu_mac_derive(vm->id, 0, "", mac) < 0) {
        mac[0] = '\0';
    }
    json_t *ifs = json_pack("[{s:s,s:s,s:s,s:s}]", "mode", "user", "backend", "slirp", "mac", mac,
                            "netdev_id", "net0");
    json_t *info = json_pack(
        "{s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:s,s:o,s:o}", "id", vm->id, "name", vm->bk.name,
        "status", vmm_vm_status(vm), "uptime", uptime, "app_id", vm->bk.app_id, "boot_progress",
        vm->boot_progress, "boot_error", vm->boot_error, "shutdown_progress", vm->shutdown_progress,
        "image_version", vm->image ? vm->image->version : "", "events",
        events ? events : json_array(), "interfaces", ifs ? ifs : json_array());
    if (!info) {
        return NULL;
    }
    if (!vm->running) {
        json_object_set_new(info, "exited_at", json_string(exited));
    }
    /* instance_id from shared/.instance_info (omitted when empty) */
    char *ii = vmm_state_read_shared(vm, ".instance_info", 4096, NULL);
    json_t *ij = ii ? json_loads(ii, 0, NULL) : NULL;
    const char *iid = json_string_value(json_object_get(ij, "instance_id"));
    if (iid && iid[0]) {
        json_object_set_new(info, "instance_id", json_string(iid));
        char *compose = vmm_state_read_shared(vm, "app-compose.json", VMM_COMPOSE_MAX, NULL);
        json_t *cj = compose ? json_loads(compose, 0, NULL) : NULL;
        if (json_is_true(json_object_get(cj, "gateway_enabled")) ||
            json_is_true(json_object_get(cj, "tproxy_enabled"))) {
            char url[512];
            if (v->cfg.gw_port == 443) {
                snprintf(url, sizeof(url), "https://%s-%lld.%s", iid,
                         (long long)v->cfg.gw_agent_port, v->cfg.gw_base_domain);
            } else {
                snprintf(url, sizeof(url), "https://%s-%lld.%s:%lld", iid,
                         (long long)v->cfg.gw_agent_port, v->cfg.gw_base_domain,
                         (long long)v->cfg.gw_port);
            }
            json_object_set_new(info, "app_url", json_string(url));
        }
        json_decref(cj);
        free(compose);
    }
    json_decref(ij);
    free(ii);
    if (!brief) {
        json_t *c = vm_configuration(vm);
        if (c) {
            json_object_set_new(info, "configuration", c);
        }
    }
    return info;
}

/* ---- methods --------------------------------------------------------------------------------- */

static int m_create_vm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct vm_conf_req req;
    struct vmm_ports ports = {NULL, 0};
    struct vmm_image *img = NULL;
    struct ds_app_compose *compose = NULL;
    json_t *manifest = NULL;
    char err[VMM_ERR_MAX] = "";
    char app_id[41];
    int r = decode(call, params, vm_conf_fields, DS_ARRAY_SIZE(vm_conf_fields), &req);
    if (r < 0) {
        return r;
    }
    /* 1. validate everything; nothing is written before this block passed */
    if (!vmm_vm_name_valid(req.name)) {
        r = ds_rpc_call_error(call, "Invalid VM name: \"%.80s\"", req.name);
        goto out;
    }
    if (!vmm_image_name_valid(req.image)) {
        r = ds_rpc_call_error(call, "Invalid image name: \"%.80s\"", req.image);
        goto out;
    }
    if ((r = vmm_image_load(v->image_path, req.image, &img, err, sizeof(err))) < 0) {
        r = ds_rpc_call_error(call, "%s", err);
        goto out;
    }
    if (req.vcpu == 0 || req.memory == 0 || req.disk_size == 0) {
        r = ds_rpc_call_error(call, "vcpu, memory and disk_size must be greater than 0");
        goto out;
    }
    if ((int64_t)req.vcpu > v->cfg.max_allocable_vcpu ||
        (int64_t)req.memory > v->cfg.max_allocable_memory_in_mb) {
        r = ds_rpc_call_error(call, "vcpu or memory exceeds the node's allocable maximum");
        goto out;
    }
    if ((r = check_compose(call, req.compose_file, strlen(req.compose_file), &compose)) < 0) {
        goto out;
    }
    if (req.app_id[0]) {
        if ((r = normalize_app_id(call, req.app_id, app_id)) < 0) {
            goto out;
        }
    } else {
        uint8_t h[DS_COMPOSE_HASH_SIZE];
        ds_compose_hash(req.compose_file, strlen(req.compose_file), h);
        ds_hex_encode(h, 20, app_id);
    }
    bool sim_ok = !req.simulated_tee[0];
    for (size_t i = 0; i < SIMULATED_TEE_COUNT && !sim_ok; i++) {
        sim_ok = strcmp(req.simulated_tee, simulated_tees[i]) == 0;
    }
    if (!sim_ok) {
        r = ds_rpc_call_error(call, "Invalid simulated_tee: \"%.40s\"", req.simulated_tee);
        goto out;
    }
    if ((r = check_urls(call, &req.kms_urls, "kms_urls")) < 0 ||
        (r = check_urls(call, &req.gateway_urls, "gateway_urls")) < 0 ||
        (r = check_gpus(call, json_object_get(params, "gpus"))) < 0 ||
        (r = check_networking(call, v, params)) < 0) {
        goto out;
    }
    if ((r = parse_ports(call, v, json_object_get(params, "ports"), false, &ports)) < 0 ||
        (r = check_port_conflicts(call, v, &ports, NULL)) < 0) {
        goto out;
    }
    /* 2. the manifest (§1.4) */
    char id[37];
    do {
        new_uuid(id);
    } while (vmm_vm_find(v, id));
    bool swtpm = ds_app_compose_key_provider(compose) == DS_KP_TPM && !req.simulated_tee[0];
    manifest = json_pack("{s:s,s:s,s:s,s:i,s:i,s:i,s:s,s:o,s:I,s:b,s:b,s:o,s:o,s:b,s:b}", "id", id,
                         "name", req.name, "app_id", app_id, "vcpu", (json_int_t)req.vcpu, "memory",
                         (json_int_t)req.memory, "disk_size", (json_int_t)req.disk_size, "image",
                         req.image, "port_map", port_map_json(&ports), "created_at_ms",
                         (json_int_t)vmm_now_ms(), "hugepages", req.hugepages, "pin_numa",
                         req.pin_numa, "kms_urls", strings_json(&req.kms_urls), "gateway_urls",
                         strings_json(&req.gateway_urls), "no_tee",
                         req.no_tee || req.simulated_tee[0], "swtpm", swtpm);
    if (!manifest) {
        r = -ENOMEM;
        goto out;
    }
    if (req.simulated_tee[0]) {
        json_object_set_new(manifest, "simulated_tee", json_string(req.simulated_tee));
    }
    /* 3. write (crash-safe) and load */
    struct vmm_create c = {
        .manifest = manifest,
        .compose = req.compose_file,
        .compose_len = strlen(req.compose_file),
        .encrypted_env = req.encrypted_env.data,
        .encrypted_env_len = req.encrypted_env.len,
        .user_config = req.user_config,
        .app_id = app_id,
        .started = !req.stopped,
    };
    struct vmm_vm_rec *vm = NULL;
    if ((r = vmm_state_create(v, &c, &vm, err, sizeof(err))) < 0) {
        r = ds_rpc_call_error(call, "%s", err);
        goto out;
    }
    log_info("vm %s: created (name \"%s\", image %s)", id, req.name, req.image);
    if (!req.stopped) {
        if ((r = vmm_vm_start(v, vm, err, sizeof(err))) < 0) {
            /* upstream: a failed start removes the new VM again */
            log_warnx("vm %s: start failed, removing it: %s", id, err);
            if (vmm_state_begin_remove(v, vm) == 0) {
                vmm_state_tick(v);
            }
            r = ds_rpc_call_error(call, "failed to start VM: %s", err);
            goto out;
        }
    }
    *out = json_pack("{s:s}", "id", id);
    r = *out ? 0 : -ENOMEM;
out:
    json_decref(manifest);
    ds_app_compose_free(compose);
    vmm_image_free(img);
    vmm_ports_free(&ports);
    ds_rpc_params_free(vm_conf_fields, DS_ARRAY_SIZE(vm_conf_fields), &req);
    return r;
}

static int m_start_vm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct vmm_vm_rec *vm = NULL;
    char err[VMM_ERR_MAX] = "";
    int r = find_vm(call, v, params, &vm);
    if (r < 0) {
        return r;
    }
    if (vm->removing) {
        return ds_rpc_call_error(call, "VM is being removed");
    }
    if (!v->backend.ops->usable(&v->backend, err, sizeof(err))) {
        return ds_rpc_call_error(call, "%s", err);
    }
    bool was = vm->started;
    if ((r = vmm_state_set_started(vm, true)) < 0) {
        return ds_rpc_call_error(call, "failed to save the VM state: %s", ds_strerror(r));
    }
    vm->restart_attempts = 0;
    vm->next_restart_ms = 0;
    if ((r = vmm_vm_start(v, vm, err, sizeof(err))) < 0) {
        if (vmm_state_set_started(vm, was) < 0) {
            log_warnx("vm %s: cannot restore the desired state", vm->id);
        }
        return ds_rpc_call_error(call, "failed to start VM: %s", err);
    }
    *out = json_object();
    return 0;
}

static int m_stop_vm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct vmm_vm_rec *vm = NULL;
    char err[VMM_ERR_MAX] = "";
    int r = find_vm(call, v, params, &vm);
    if (r < 0) {
        return r;
    }
    if ((r = vmm_state_set_started(vm, false)) < 0) {
        return ds_rpc_call_error(call, "failed to save the VM state: %s", ds_strerror(r));
    }
    if ((r = vmm_vm_stop(v, vm, false, err, sizeof(err))) < 0) {
        return ds_rpc_call_error(call, "failed to stop VM: %s", err);
    }
    *out = json_object();
    return 0;
}

static int m_shutdown_vm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct vmm_vm_rec *vm = NULL;
    int r = find_vm(call, v, params, &vm);
    if (r < 0) {
        return r;
    }
    vmm_vm_poll(v, vm);
    if (!vm->running) {
        return ds_rpc_call_error(call, "VM is not running");
    }
    if (v->cfg.backend == VMM_BACKEND_SANDBOX && !vmm_guest_has_api_socket(vm)) {
        /* A sandbox's power button: SIGTERM to its init, which stops the app and exits
         * (graceful stop, escalated to a kill after the grace period). */
        char err[VMM_ERR_MAX] = "";
        if ((r = vmm_state_set_started(vm, false)) < 0) {
            return ds_rpc_call_error(call, "failed to save the VM state: %s", ds_strerror(r));
        }
        if ((r = vmm_vm_stop(v, vm, true, err, sizeof(err))) < 0) {
            return ds_rpc_call_error(call, "failed to shut down VM: %s", err);
        }
        *out = json_object();
        return 0;
    }
    /* the guest notifies shutdown.progress "powering off", which sets started=false */
    return vmm_guest_call_deferred(v, vm, call, "Shutdown", true);
}

static int m_remove_vm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct vmm_vm_rec *vm = NULL;
    int r = find_vm(call, v, params, &vm);
    if (r < 0) {
        return r;
    }
    if ((r = vmm_state_begin_remove(v, vm)) < 0) {
        return ds_rpc_call_error(call, "failed to mark the VM for removal: %s", ds_strerror(r));
    }
    log_info("vm %s: removal requested", vm->id);
    vmm_state_tick(v); /* finishes at once when the VM is not running */
    *out = json_object();
    return 0;
}

struct update_req {
    char *id;
    char *compose_file;
    struct ds_rpc_bytes encrypted_env;
    char *user_config;
    bool update_ports;
    bool update_kms_urls;
    struct ds_rpc_strings kms_urls;
    bool update_gateway_urls;
    struct ds_rpc_strings gateway_urls;
    struct ds_rpc_opt_u64 vcpu;
    struct ds_rpc_opt_u64 memory;
    struct ds_rpc_opt_u64 disk_size;
    char *image;
    bool update_networking;
};

static const struct ds_rpc_field update_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct update_req, id, 256),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct update_req, compose_file, VMM_COMPOSE_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct update_req, encrypted_env, VMM_ENV_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct update_req, user_config, VMM_USER_CONFIG_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct update_req, update_ports, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct update_req, update_kms_urls, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRINGS, struct update_req, kms_urls, VMM_URLS_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct update_req, update_gateway_urls, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRINGS, struct update_req, gateway_urls, VMM_URLS_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct update_req, vcpu, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct update_req, memory, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct update_req, disk_size, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct update_req, image, 1024),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct update_req, update_networking, 0),
};

static bool vm_is_stopped(const struct vmm_vm_rec *vm)
{
    return !vm->running && !vm->removing;
}

/* Resource changes shared by UpdateVm and ResizeVm; validates only (apply = false) or writes
 * them into the manifest copy m. */
static int resources(struct ds_rpc_call *call, struct vmm *v, struct vmm_vm_rec *vm, json_t *m,
                     const struct ds_rpc_opt_u64 *vcpu, const struct ds_rpc_opt_u64 *memory,
                     const struct ds_rpc_opt_u64 *disk, const char *image)
{
    bool any = vcpu->present || memory->present || disk->present || image[0];
    if (!any) {
        return 0;
    }
    if (!vm_is_stopped(vm)) {
        return ds_rpc_call_error(call, "VM must be stopped to change its resources or image");
    }
    if ((vcpu->present && (vcpu->value == 0 || (int64_t)vcpu->value > v->cfg.max_allocable_vcpu)) ||
        (memory->present &&
         (memory->value == 0 || (int64_t)memory->value > v->cfg.max_allocable_memory_in_mb))) {
        return ds_rpc_call_error(call, "vcpu and memory must be > 0 and within the node maximum");
    }
    if (disk->present) {
        if (disk->value == 0 || disk->value > UINT32_MAX) {
            return ds_rpc_call_error(call, "disk_size must be > 0");
        }
        if (disk->value < vm->bk.disk_gb) {
            return ds_rpc_call_error(call, "Cannot shrink disk size from %uG to %lluG",
                                     vm->bk.disk_gb, (unsigned long long)disk->value);
        }
    }
    if (image[0]) {
        struct vmm_image *img = NULL;
        char err[VMM_ERR_MAX];
        if (vmm_image_load(v->image_path, image, &img, err, sizeof(err)) < 0) {
            return ds_rpc_call_error(call, "%s", err);
        }
        vmm_image_free(img);
        json_object_set_new(m, "image", json_string(image));
    }
    if (vcpu->present) {
        json_object_set_new(m, "vcpu", json_integer((json_int_t)vcpu->value));
    }
    if (memory->present) {
        json_object_set_new(m, "memory", json_integer((json_int_t)memory->value));
    }
    if (disk->present) {
        json_object_set_new(m, "disk_size", json_integer((json_int_t)disk->value));
    }
    return 0;
}

static int m_update_vm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct update_req req;
    struct vmm_ports ports = {NULL, 0};
    json_t *m = NULL;
    char err[VMM_ERR_MAX];
    int r = decode(call, params, update_fields, DS_ARRAY_SIZE(update_fields), &req);
    if (r < 0) {
        return r;
    }
    struct vmm_vm_rec *vm = vmm_vm_id_valid(req.id) ? vmm_vm_find(v, req.id) : NULL;
    if (!vm) {
        r = ds_rpc_call_error(call, "VM not found: %.80s", req.id);
        goto out;
    }
    if (vm->removing) {
        r = ds_rpc_call_error(call, "VM is being removed");
        goto out;
    }
    m = json_deep_copy(vm->manifest);
    if (!m) {
        r = -ENOMEM;
        goto out;
    }
    /* validate everything first */
    if (req.compose_file[0] &&
        (r = check_compose(call, req.compose_file, strlen(req.compose_file), NULL)) < 0) {
        goto out;
    }
    if ((r = check_gpus(call, json_object_get(params, "gpus"))) < 0) {
        goto out;
    }
    if (req.update_networking && (r = check_networking(call, v, params)) < 0) {
        goto out;
    }
    if (req.update_ports) {
        if ((r = parse_ports(call, v, json_object_get(params, "ports"), true, &ports)) < 0 ||
            (r = check_port_conflicts(call, v, &ports, vm)) < 0) {
            goto out;
        }
        json_object_set_new(m, "port_map", port_map_json(&ports));
    }
    if (req.update_kms_urls) {
        if ((r = check_urls(call, &req.kms_urls, "kms_urls")) < 0) {
            goto out;
        }
        json_object_set_new(m, "kms_urls", strings_json(&req.kms_urls));
    }
    if (req.update_gateway_urls) {
        if ((r = check_urls(call, &req.gateway_urls, "gateway_urls")) < 0) {
            goto out;
        }
        json_object_set_new(m, "gateway_urls", strings_json(&req.gateway_urls));
    }
    const json_t *no_tee = json_object_get(params, "no_tee");
    if (json_is_boolean(no_tee)) {
        json_object_set_new(m, "no_tee",
                            json_boolean(json_is_true(no_tee) || vm->bk.simulated_tee != NULL));
    }
    if ((r = resources(call, v, vm, m, &req.vcpu, &req.memory, &req.disk_size, req.image)) < 0) {
        goto out;
    }
    /* write: the manifest, then the shared files (each replaced atomically) */
    if (!json_equal(m, vm->manifest)) {
        json_t *mm = m;
        m = NULL;
        if ((r = vmm_state_write_manifest(v, vm, mm, err, sizeof(err))) < 0) {
            r = ds_rpc_call_error(call, "%s", err);
            goto out;
        }
    }
    if (req.compose_file[0] && (r = vmm_state_write_shared(vm, "app-compose.json", req.compose_file,
                                                           strlen(req.compose_file))) < 0) {
        r = ds_rpc_call_error(call, "failed to write app-compose.json: %s", ds_strerror(r));
        goto out;
    }
    if (req.encrypted_env.len &&
        (r = vmm_state_write_shared(vm, ".encrypted-env", req.encrypted_env.data,
                                    req.encrypted_env.len)) < 0) {
        r = ds_rpc_call_error(call, "failed to write .encrypted-env: %s", ds_strerror(r));
        goto out;
    }
    if (req.user_config[0] && (r = vmm_state_write_shared(vm, ".user-config", req.user_config,
                                                          strlen(req.user_config))) < 0) {
        r = ds_rpc_call_error(call, "failed to write .user-config: %s", ds_strerror(r));
        goto out;
    }
    char hash_hex[65] = "";
    if (req.compose_file[0]) {
        uint8_t h[DS_COMPOSE_HASH_SIZE];
        ds_compose_hash(req.compose_file, strlen(req.compose_file), h);
        ds_hex_encode(h, 20, hash_hex);
    }
    log_info("vm %s: updated", vm->id);
    *out = json_pack("{s:s}", "id", hash_hex);
    r = *out ? 0 : -ENOMEM;
out:
    json_decref(m);
    vmm_ports_free(&ports);
    ds_rpc_params_free(update_fields, DS_ARRAY_SIZE(update_fields), &req);
    return r;
}

struct resize_req {
    char *id;
    struct ds_rpc_opt_u64 vcpu;
    struct ds_rpc_opt_u64 memory;
    struct ds_rpc_opt_u64 disk_size;
    char *image;
};
static const struct ds_rpc_field resize_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct resize_req, id, 256),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct resize_req, vcpu, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct resize_req, memory, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_OPT_U64, struct resize_req, disk_size, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct resize_req, image, 1024),
};

static int m_resize_vm(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct resize_req req;
    json_t *m = NULL;
    char err[VMM_ERR_MAX];
    int r = decode(call, params, resize_fields, DS_ARRAY_SIZE(resize_fields), &req);
    if (r < 0) {
        return r;
    }
    struct vmm_vm_rec *vm = vmm_vm_id_valid(req.id) ? vmm_vm_find(v, req.id) : NULL;
    if (!vm) {
        r = ds_rpc_call_error(call, "VM not found: %.80s", req.id);
        goto out;
    }
    if (!req.vcpu.present && !req.memory.present && !req.disk_size.present && !req.image[0]) {
        r = ds_rpc_call_error(call, "at least one of vcpu, memory, disk_size, image is required");
        goto out;
    }
    m = json_deep_copy(vm->manifest);
    if (!m) {
        r = -ENOMEM;
        goto out;
    }
    if ((r = resources(call, v, vm, m, &req.vcpu, &req.memory, &req.disk_size, req.image)) < 0) {
        goto out;
    }
    json_t *mm = m;
    m = NULL;
    if ((r = vmm_state_write_manifest(v, vm, mm, err, sizeof(err))) < 0) {
        r = ds_rpc_call_error(call, "%s", err);
        goto out;
    }
    *out = json_object();
    r = 0;
out:
    json_decref(m);
    ds_rpc_params_free(resize_fields, DS_ARRAY_SIZE(resize_fields), &req);
    return r;
}

static int m_get_compose_hash(struct ds_rpc_call *call, const json_t *params, json_t **out,
                              void *ctx)
{
    (void)ctx;
    struct vm_conf_req req;
    int r = decode(call, params, vm_conf_fields, DS_ARRAY_SIZE(vm_conf_fields), &req);
    if (r < 0) {
        return r;
    }
    if (!vmm_vm_name_valid(req.name)) {
        r = ds_rpc_call_error(call, "Invalid VM name: \"%.80s\"", req.name);
        goto out;
    }
    if ((r = check_compose(call, req.compose_file, strlen(req.compose_file), NULL)) < 0) {
        goto out;
    }
    uint8_t h[DS_COMPOSE_HASH_SIZE];
    char hex[2 * DS_COMPOSE_HASH_SIZE + 1];
    ds_compose_hash(req.compose_file, strlen(req.compose_file), h);
    ds_hex_encode(h, sizeof(h), hex);
    *out = json_pack("{s:s}", "hash", hex);
    r = *out ? 0 : -ENOMEM;
out:
    ds_rpc_params_free(vm_conf_fields, DS_ARRAY_SIZE(vm_conf_fields), &req);
    return r;
}

struct status_req {
    struct ds_rpc_strings ids;
    bool brief;
    char *keyword;
    uint32_t page;
    uint32_t page_size;
};
static const struct ds_rpc_field status_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_STRINGS, struct status_req, ids, VMM_VMS_MAX),
    DS_RPC_FIELD(DS_RPC_FIELD_BOOL, struct status_req, brief, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_STRING, struct status_req, keyword, 256),
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct status_req, page, 0),
    DS_RPC_FIELD(DS_RPC_FIELD_U32, struct status_req, page_size, 0),
};

static int cmp_vm_created(const void *a, const void *b)
{
    const struct vmm_vm_rec *x = *(const struct vmm_vm_rec *const *)a;
    const struct vmm_vm_rec *y = *(const struct vmm_vm_rec *const *)b;
    json_int_t cx = json_integer_value(json_object_get(x->manifest, "created_at_ms"));
    json_int_t cy = json_integer_value(json_object_get(y->manifest, "created_at_ms"));
    return cx < cy ? -1 : cx > cy ? 1 : strcmp(x->id, y->id);
}

static bool vm_matches(const struct vmm_vm_rec *vm, const struct status_req *q)
{
    if (q->ids.count) {
        bool hit = false;
        for (size_t i = 0; i < q->ids.count && !hit; i++) {
            hit = strcmp(q->ids.items[i], vm->id) == 0;
        }
        if (!hit) {
            return false;
        }
    }
    if (q->keyword[0]) {
        const char *img = json_string_value(json_object_get(vm->manifest, "image"));
        return strstr(vm->bk.name, q->keyword) || strstr(vm->id, q->keyword) ||
               strstr(vm->bk.app_id, q->keyword) || (img && strstr(img, q->keyword));
    }
    return true;
}

static int m_status(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct status_req req;
    int r = decode(call, params, status_fields, DS_ARRAY_SIZE(status_fields), &req);
    if (r < 0) {
        return r;
    }
    size_t n = 0;
    for (struct vmm_vm_rec *vm = v->vms; vm; vm = vm->next) {
        n++;
    }
    struct vmm_vm_rec **list = calloc(n ? n : 1, sizeof(*list));
    json_t *vms = json_array();
    if (!list || !vms) {
        free(list);
        json_decref(vms);
        ds_rpc_params_free(status_fields, DS_ARRAY_SIZE(status_fields), &req);
        return -ENOMEM;
    }
    size_t k = 0;
    for (struct vmm_vm_rec *vm = v->vms; vm; vm = vm->next) {
        vmm_vm_poll(v, vm);
        if (vm_matches(vm, &req)) {
            list[k++] = vm;
        }
    }
    qsort(list, k, sizeof(*list), cmp_vm_created);
    size_t from = 0, to = k;
    if (req.page > 0) {
        uint32_t ps = req.page_size ? req.page_size : 20;
        if (ps > VMM_PAGE_SIZE_MAX) {
            ps = VMM_PAGE_SIZE_MAX;
        }
        uint64_t f = (uint64_t)(req.page - 1) * ps;
        from = f > k ? k : (size_t)f;
        to = from + ps > k ? k : from + ps;
    }
    for (size_t i = from; i < to; i++) {
        json_t *info = vm_info(v, list[i], req.brief);
        if (info) {
            json_array_append_new(vms, info);
        }
    }
    free(list);
    *out = json_pack("{s:o,s:b,s:i}", "vms", vms, "port_mapping_enabled", v->cfg.pm_enabled,
                     "total", (json_int_t)k);
    ds_rpc_params_free(status_fields, DS_ARRAY_SIZE(status_fields), &req);
    return *out ? 0 : -ENOMEM;
}

static int m_get_info(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    struct id_req req;
    int r = decode(call, params, id_fields, DS_ARRAY_SIZE(id_fields), &req);
    if (r < 0) {
        return r;
    }
    struct vmm_vm_rec *vm = vmm_vm_id_valid(req.id) ? vmm_vm_find(v, req.id) : NULL;
    ds_rpc_params_free(id_fields, DS_ARRAY_SIZE(id_fields), &req);
    if (!vm) {
        *out = json_pack("{s:b}", "found", 0);
        return *out ? 0 : -ENOMEM;
    }
    vmm_vm_poll(v, vm);
    json_t *info = vm_info(v, vm, false);
    *out = info ? json_pack("{s:b,s:o}", "found", 1, "info", info) : NULL;
    return *out ? 0 : -ENOMEM;
}

static int m_list_images(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    struct vmm *v = VMM_CTX(ctx);
    json_t *imgs = vmm_images_list(v->image_path);
    *out = imgs ? json_pack("{s:o}", "images", imgs) : NULL;
    return *out ? 0 : -ENOMEM;
}

static int m_version(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    (void)ctx;
    *out = json_pack("{s:s,s:s}", "version", DS_VERSION, "rev", "dstack-c");
    return *out ? 0 : -ENOMEM;
}

static json_t *cfg_strv(const struct ds_config_strv *s)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < s->count; i++) {
        json_array_append_new(a, json_string(s->items[i]));
    }
    return a;
}

static int m_get_meta(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    struct vmm *v = VMM_CTX(ctx);
    const struct vmm_config *c = &v->cfg;
    const char *kms0 = c->kms_urls.count ? c->kms_urls.items[0] : "";
    const char *gw0 = c->gateway_urls.count ? c->gateway_urls.items[0] : "";
    *out = json_pack("{s:{s:s,s:o},s:{s:s,s:s,s:i,s:i,s:o},s:{s:I,s:I,s:I},s:{s:[s],s:s,s:s}}",
                     "kms", "url", kms0, "urls", cfg_strv(&c->kms_urls), "gateway", "url", gw0,
                     "base_domain", c->gw_base_domain, "port", (json_int_t)c->gw_port, "agent_port",
                     (json_int_t)c->gw_agent_port, "urls", cfg_strv(&c->gateway_urls), "resources",
                     "max_cvm_number", (json_int_t)c->cid_pool_size, "max_allocable_vcpu",
                     (json_int_t)c->max_allocable_vcpu, "max_allocable_memory_in_mb",
                     (json_int_t)c->max_allocable_memory_in_mb, "networking", "supported_modes",
                     "user", "default_mode", "user", "default_bridge", c->net_bridge);
    return *out ? 0 : -ENOMEM;
}

static int m_reload_vms(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)params;
    struct vmm *v = VMM_CTX(ctx);
    unsigned loaded = 0, updated = 0, removed = 0;
    int r = vmm_state_reload(v, &loaded, &updated, &removed);
    if (r < 0) {
        return ds_rpc_call_error(call, "failed to reload VMs: %s", ds_strerror(r));
    }
    *out = json_pack("{s:i,s:i,s:i}", "loaded", (json_int_t)loaded, "updated", (json_int_t)updated,
                     "removed", (json_int_t)removed);
    return *out ? 0 : -ENOMEM;
}

static int m_list_gpus(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)call;
    (void)params;
    (void)ctx;
    *out = json_pack("{s:[],s:b}", "gpus", "allow_attach_all", 0);
    return *out ? 0 : -ENOMEM;
}

/* GetAppEnvEncryptPubKey: POST {kms_url}/prpc/GetAppEnvEncryptPubKey?json {"app_id": hex}. */
static size_t curl_sink(char *ptr, size_t size, size_t nmemb, void *ud)
{
    struct ds_buf *b = ud;
    size_t n = size * nmemb;
    return ds_buf_append(b, ptr, n) < 0 ? 0 : n;
}

struct app_id_req {
    struct ds_rpc_bytes app_id;
};
static const struct ds_rpc_field app_id_fields[] = {
    DS_RPC_FIELD(DS_RPC_FIELD_BYTES, struct app_id_req, app_id, 64),
};

/*
 * The KMS request runs on its own thread so that a slow KMS does not stall the event loop;
 * the result comes back to the loop through an event (libevent is made thread-aware in
 * main.c with evthread_use_pthreads) and the deferred call is answered there.
 */
struct kms_job {
    struct ds_rpc_call *call;
    struct event *done_ev;
    char *url;
    char *body;
    struct ds_buf reply;
    long status;
    CURLcode cc;
};

static atomic_int kms_jobs_running; /* worker threads not yet finished */

void vmm_api_drain(void)
{
    for (int i = 0; i < (KMS_TIMEOUT_S + 2) * 100 && atomic_load(&kms_jobs_running) > 0; i++) {
        usleep(10000);
    }
}

static void kms_job_free(struct kms_job *j)
{
    if (j->done_ev) {
        event_free(j->done_ev);
    }
    free(j->url);
    free(j->body);
    ds_buf_done(&j->reply);
    free(j);
}

static void kms_job_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct kms_job *j = arg;
    if (j->cc != CURLE_OK) {
        ds_rpc_call_reply_error(j->call, "failed to get the app env pubkey from the KMS: %s",
                                curl_easy_strerror(j->cc));
    } else {
        json_t *res = json_loadb((const char *)j->reply.data, j->reply.len, 0, NULL);
        if (j->status != 200 || !json_is_object(res)) {
            const char *msg = json_string_value(json_object_get(res, "error"));
            ds_rpc_call_reply_error(j->call, "failed to get the app env pubkey from the KMS: %s",
                                    msg ? msg : "bad reply");
            json_decref(res);
        } else {
            ds_rpc_call_reply_json(j->call, res);
        }
    }
    kms_job_free(j);
}

static void *kms_job_run(void *arg)
{
    struct kms_job *j = arg;
    CURL *curl = curl_easy_init();
    struct curl_slist *hdrs = curl_slist_append(NULL, "Content-Type: application/json");
    j->cc = CURLE_OUT_OF_MEMORY;
    if (curl && hdrs) {
        curl_easy_setopt(curl, CURLOPT_URL, j->url);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, j->body);
        curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs);
        curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, curl_sink);
        curl_easy_setopt(curl, CURLOPT_WRITEDATA, &j->reply);
        curl_easy_setopt(curl, CURLOPT_TIMEOUT, (long)KMS_TIMEOUT_S);
        curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
        /* upstream's RA client does not check the KMS certificate here (§1.3); the reply is
         * signed by the KMS and checked by the client (vmm-cli / dstack deploy) */
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYPEER, 0L);
        curl_easy_setopt(curl, CURLOPT_SSL_VERIFYHOST, 0L);
        j->cc = curl_easy_perform(curl);
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &j->status);
    }
    curl_slist_free_all(hdrs);
    if (curl) {
        curl_easy_cleanup(curl);
    }
    event_active(j->done_ev, 0, 0);
    atomic_fetch_sub(&kms_jobs_running, 1);
    return NULL;
}

/* GetAppEnvEncryptPubKey: POST {kms_url}/prpc/GetAppEnvEncryptPubKey?json {"app_id": hex}. */
static int m_env_pubkey(struct ds_rpc_call *call, const json_t *params, json_t **out, void *ctx)
{
    (void)out;
    struct vmm *v = VMM_CTX(ctx);
    struct app_id_req req;
    char *hex = NULL;
    int r = decode(call, params, app_id_fields, DS_ARRAY_SIZE(app_id_fields), &req);
    if (r < 0) {
        return r;
    }
    struct kms_job *j = calloc(1, sizeof(*j));
    hex = ds_hex_strdup(req.app_id.data, req.app_id.len);
    ds_rpc_params_free(app_id_fields, DS_ARRAY_SIZE(app_id_fields), &req);
    if (!j || !hex) {
        free(j);
        free(hex);
        return -ENOMEM;
    }
    ds_buf_init(&j->reply, KMS_REPLY_MAX);
    j->call = call;
    const char *base = v->cfg.kms_url;
    size_t bl = strlen(base);
    while (bl > 0 && base[bl - 1] == '/') {
        bl--;
    }
    if (asprintf(&j->url, "%.*s/prpc/GetAppEnvEncryptPubKey?json", (int)bl, base) < 0) {
        j->url = NULL;
    }
    if (asprintf(&j->body, "{\"app_id\":\"%s\"}", hex) < 0) {
        j->body = NULL;
    }
    free(hex);
    j->done_ev = event_new(v->base, -1, 0, kms_job_done, j);
    pthread_t th;
    pthread_attr_t attr;
    if (!j->url || !j->body || !j->done_ev || pthread_attr_init(&attr) != 0) {
        kms_job_free(j);
        return -ENOMEM;
    }
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    atomic_fetch_add(&kms_jobs_running, 1);
    r = pthread_create(&th, &attr, kms_job_run, j);
    pthread_attr_destroy(&attr);
    if (r != 0) {
        atomic_fetch_sub(&kms_jobs_running, 1);
        kms_job_free(j);
        return ds_rpc_call_error(call, "cannot start the KMS request: %s", strerror(r));
    }
    return DS_RPC_DEFERRED;
}

static const struct ds_rpc_method vmm_methods[] = {
    {"CreateVm", m_create_vm, 0, VMM_BODY_MAX},
    {"StartVm", m_start_vm, 0, 0},
    {"StopVm", m_stop_vm, 0, 0},
    {"ShutdownVm", m_shutdown_vm, 0, 0},
    {"RemoveVm", m_remove_vm, 0, 0},
    {"UpdateVm", m_update_vm, 0, VMM_BODY_MAX},
    {"UpgradeApp", m_update_vm, 0, VMM_BODY_MAX},
    {"ResizeVm", m_resize_vm, 0, 0},
    {"GetComposeHash", m_get_compose_hash, 0, VMM_BODY_MAX},
    {"Status", m_status, 0, 0},
    {"GetInfo", m_get_info, 0, 0},
    {"ListImages", m_list_images, DS_RPC_NO_PARAMS, 0},
    {"GetAppEnvEncryptPubKey", m_env_pubkey, 0, 0},
    {"Version", m_version, DS_RPC_NO_PARAMS, 0},
    {"GetMeta", m_get_meta, DS_RPC_NO_PARAMS, 0},
    {"ReloadVms", m_reload_vms, DS_RPC_NO_PARAMS, 0},
    {"ListGpus", m_list_gpus, DS_RPC_NO_PARAMS, 0},
};

static const struct ds_rpc_service vmm_service = {"Vmm", vmm_methods, DS_ARRAY_SIZE(vmm_methods)};

static const struct ds_rpc_mount vmm_mounts[] = {
    {"/prpc/", {"Teepod.", "Vmm."}, &vmm_service},
    {"/guest/", {"ProxiedGuestApi."}, &vmm_guest_service},
};

static const struct ds_rpc_route vmm_routes[] = {
    {"/logs", DS_RPC_HTTP_GET, vmm_logs_route},
};

/* ---- auth (host-side.md §0) ------------------------------------------------------------------ */

static bool token_ok(const struct vmm *v, const char *tok, size_t len)
{
    bool ok = false;
    for (size_t i = 0; i < v->cfg.auth_tokens.count; i++) {
        const char *t = v->cfg.auth_tokens.items[i];
        if (strlen(t) == len && ds_ct_equal(t, tok, len)) {
            ok = true;
        }
    }
    return ok;
}

static int query_token(const char *q, char *out, size_t out_size)
{
    json_t *o = NULL;
    if (ds_rpc_query_decode(q, strlen(q), &o, NULL) < 0) {
        return -1;
    }
    const char *t = json_string_value(json_object_get(o, "token"));
    int r = -1;
    if (t && strlen(t) < out_size) {
        memcpy(out, t, strlen(t) + 1);
        r = 0;
    }
    json_decref(o);
    return r;
}

static int auth_filter(struct ds_rpc_call *call, void *ctx)
{
    struct vmm *v = VMM_CTX(ctx);
    if (!v->cfg.auth_enabled) {
        return 0;
    }
    const char *h = ds_rpc_call_header(call, "Authorization");
    const char *x = ds_rpc_call_header(call, "X-Admin-Token");
    if (x && token_ok(v, x, strlen(x))) {
        return 0;
    }
    if (h && strncasecmp(h, "Bearer ", 7) == 0 && token_ok(v, h + 7, strlen(h + 7))) {
        return 0;
    }
    if (h && strncasecmp(h, "Basic ", 6) == 0) {
        uint8_t *dec = NULL;
        size_t dl = 0;
        if (ds_base64_decode(h + 6, strlen(h + 6), 1024, &dec, &dl) == 0) {
            uint8_t *colon = memchr(dec, ':', dl);
            bool ok = colon && token_ok(v, (const char *)colon + 1, dl - (size_t)(colon + 1 - dec));
            ds_wipe(dec, dl);
            free(dec);
            if (ok) {
                return 0;
            }
        } else {
            free(dec);
        }
    }
    char qt[512];
    if (strcmp(ds_rpc_call_http_method(call), "GET") == 0 &&
        query_token(ds_rpc_call_query(call), qt, sizeof(qt)) == 0) {
        bool ok = token_ok(v, qt, strlen(qt));
        ds_wipe(qt, sizeof(qt));
        if (ok) {
            return 0;
        }
    }
    static const char body[] = "{\n  \"error\": \"Unauthorized\"\n}";
    if (ds_rpc_call_add_header(call, "WWW-Authenticate", "Basic realm=\"dstack-vmm\"") < 0) {
        log_debug("auth: cannot add WWW-Authenticate");
    }
    ds_rpc_call_reply_raw(call, 401, "application/json", body, sizeof(body) - 1);
    return 1;
}

/* ---- listeners ------------------------------------------------------------------------------- */

static char version_header[VERSION_HEADER_MAX];
static const char *site_headers[] = {version_header, "X-Accel-Buffering: no", NULL};

static struct ds_rpc_site vmm_site = {
    .mounts = vmm_mounts,
    .mount_count = DS_ARRAY_SIZE(vmm_mounts),
    .routes = vmm_routes,
    .route_count = DS_ARRAY_SIZE(vmm_routes),
    .headers = site_headers,
    .filter = auth_filter,
};

static int listen_one(struct vmm *v, const char *addr)
{
    int r;
    if (strncmp(addr, "unix:", 5) == 0) {
        r = ds_rpc_server_listen_unix(v->server, addr + 5, 0600, &vmm_site);
        if (r < 0) {
            log_warnx("cannot listen on %s: %s", addr, ds_strerror(r));
        } else {
            log_info("listening on %s", addr);
        }
        return r;
    }
    /* tcp:<ip>:<port> or tcp:<ip> with the top-level port */
    char host[128];
    const char *hp = addr + 4;
    const char *colon = strrchr(hp, ':');
    long port = v->cfg.port;
    size_t hl = strlen(hp);
    if (colon && !strchr(colon, ']')) {
        hl = (size_t)(colon - hp);
        char *end = NULL;
        port = strtol(colon + 1, &end, 10);
        if (!colon[1] || *end || port < 0 || port > 65535) {
            log_warnx("bad port in %s", addr);
            return -EINVAL;
        }
    }
    if (hl >= sizeof(host)) {
        return -EINVAL;
    }
    memcpy(host, hp, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    uint16_t bound = 0;
    r = ds_rpc_server_listen_tcp(v->server, host, (uint16_t)port, &vmm_site, NULL, &bound);
    if (r < 0) {
        log_warnx("cannot listen on %s: %s", addr, ds_strerror(r));
        return r;
    }
    log_info("listening on tcp:%s:%u", host, (unsigned)bound);
    if (strcmp(host, "127.0.0.1") != 0 && strcmp(host, "::1") != 0 && !v->cfg.auth_enabled) {
        log_warnx("WARNING: API on non-loopback %s without [auth]: anyone reaching it controls "
                  "every VM",
                  addr);
    }
    return 0;
}

int vmm_api_listen(struct vmm *v)
{
    snprintf(version_header, sizeof(version_header), "X-App-Version: v%s", DS_VERSION);
    vmm_site.ctx = v;
    int r = listen_one(v, v->cfg.address);
    for (size_t i = 0; r == 0 && i < v->cfg.listen.count; i++) {
        r = listen_one(v, v->cfg.listen.items[i]);
    }
    return r;
}
