/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The QEMU command line of a dstack CVM, in upstream's exact order (spec host-side §1.8; the
 * numbered comments below are the items of that list). The order is measured: device order
 * decides the ACPI tables and so RTMR0, which verifiers recompute (attestation §5.1). Values
 * that land inside QEMU option strings (key=value,...) have their commas doubled, QEMU's own
 * escape, so a path or SMBIOS string can never add an option; plain-string options (-bios,
 * -kernel, -initrd, -append) are passed as they are, each as one argv element.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm/qemu_internal.h"

#define ARG_MAX_SIZE (DS_QEMU_PATH_MAX * 2 + DS_QEMU_STR_MAX * 8)

struct argv_builder {
    char **v;
    size_t n;
    size_t cap;
    int err;         /* first failure; later pushes are ignored */
    struct ds_buf b; /* the argument being composed */
};

static void ab_push_owned(struct argv_builder *ab, char *s)
{
    if (ab->err) {
        free(s);
        return;
    }
    if (!s) {
        ab->err = -ENOMEM;
        return;
    }
    if (ab->n + 2 > ab->cap) {
        size_t cap = ab->cap ? ab->cap * 2 : 64;
        if (cap > DS_QEMU_ARGV_MAX) {
            free(s);
            ab->err = -ERANGE;
            return;
        }
        char **v = realloc(ab->v, cap * sizeof(*v));
        if (!v) {
            free(s);
            ab->err = -ENOMEM;
            return;
        }
        ab->v = v;
        ab->cap = cap;
    }
    ab->v[ab->n++] = s;
    ab->v[ab->n] = NULL;
}

static void ab_push(struct argv_builder *ab, const char *s)
{
    ab_push_owned(ab, ab->err ? NULL : strdup(s));
}

/* Start composing an option string. */
static void ab_begin(struct argv_builder *ab)
{
    ds_buf_reset(&ab->b);
}

static void ab_raw(struct argv_builder *ab, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void ab_raw(struct argv_builder *ab, const char *fmt, ...)
{
    if (ab->err) {
        return;
    }
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        ab->err = -DS_E_LIMIT;
        return;
    }
    int r = ds_buf_append(&ab->b, tmp, (size_t)n);
    if (r < 0) {
        ab->err = r;
    }
}

/* Append a value with QEMU's option escaping: ',' becomes ",,". */
static void ab_esc(struct argv_builder *ab, const char *s)
{
    for (; *s && !ab->err; s++) {
        int r = *s == ',' ? ds_buf_append(&ab->b, ",,", 2) : ds_buf_append(&ab->b, s, 1);
        if (r < 0) {
            ab->err = r;
        }
    }
}

/* Finish the composed option string as one argument. */
static void ab_end(struct argv_builder *ab)
{
    if (ab->err) {
        return;
    }
    ab_push_owned(ab, strndup((const char *)ab->b.data ? (const char *)ab->b.data : "", ab->b.len));
}

static void ab_pair(struct argv_builder *ab, const char *opt, const char *val)
{
    ab_push(ab, opt);
    ab_push(ab, val);
}

void ds_qemu_argv_free(char **argv)
{
    if (!argv) {
        return;
    }
    for (char **p = argv; *p; p++) {
        free(*p);
    }
    free(argv);
}

int ds_qemu_platform_parse(const char *s, enum ds_qemu_platform *out)
{
    if (s && strcmp(s, "tdx") == 0) {
        *out = DS_QEMU_PLATFORM_TDX;
        return 0;
    }
    if (s && (strcmp(s, "none") == 0 || strcmp(s, "no_tee") == 0)) {
        *out = DS_QEMU_PLATFORM_NONE;
        return 0;
    }
    return -DS_E_UNSUPPORTED;
}

int ds_qemu_share_mode_parse(const char *s, enum ds_qemu_share_mode *out)
{
    static const struct {
        const char *name;
        enum ds_qemu_share_mode mode;
    } table[] = {
        {"9p", DS_QEMU_SHARE_9P},
        {"vhd", DS_QEMU_SHARE_VHD},
        {"vvfat", DS_QEMU_SHARE_VVFAT},
    };
    for (size_t i = 0; s && i < DS_ARRAY_SIZE(table); i++) {
        if (strcmp(s, table[i].name) == 0) {
            *out = table[i].mode;
            return 0;
        }
    }
    return -DS_E_UNSUPPORTED;
}

int ds_qemu_measure_rules(const char *qemu_version, bool *out_pic, bool *out_single_pass)
{
    unsigned major, minor;
    DS_TRY(qemu_parse_version(qemu_version, &major, &minor));
    (void)minor;
    if (major < 8) {
        return -DS_E_UNSUPPORTED;
    }
    *out_pic = major < 9;
    *out_single_pass = major >= 9;
    return 0;
}

void qemu_numa_layout(const struct ds_qemu_config *cfg, struct qemu_numa *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < cfg->gpu_count && i < DS_QEMU_GPU_MAX; i++) {
        size_t k = 0;
        while (k < out->count && out->node[k] != cfg->gpus[i].numa_node) {
            k++;
        }
        if (k == out->count) {
            out->node[out->count++] = cfg->gpus[i].numa_node;
        }
        out->gpus[k]++;
    }
    if (out->count == 0) {
        out->node[0] = 0;
        out->count = 1;
    }
}

static uint64_t round_up(uint64_t v, uint64_t multiple)
{
    if (multiple <= 1 || v % multiple == 0) {
        return v;
    }
    return v + (multiple - v % multiple);
}

static void effective(const struct ds_qemu_config *cfg, const struct qemu_numa *numa,
                      uint32_t *vcpus, uint64_t *mem_mb)
{
    *vcpus = cfg->vcpus;
    *mem_mb = cfg->memory_mb;
    if (cfg->hugepages) {
        /* §1.8 item 14: vCPUs rounded up to the node count; memory in whole GiB (truncated,
         * as upstream's integer division) rounded up to the node count. */
        *vcpus = (uint32_t)round_up(cfg->vcpus, numa->count);
        *mem_mb = round_up(cfg->memory_mb / 1024u, numa->count) * 1024u;
    }
}

int qemu_check_config(const struct ds_qemu_config *cfg, struct ds_qemu_error *err)
{
    if (!cfg) {
        return qemu_fail(err, -DS_E_NOT_FOUND, "config: missing");
    }
    if (cfg->platform != DS_QEMU_PLATFORM_NONE && cfg->platform != DS_QEMU_PLATFORM_TDX) {
        return qemu_fail(err, -DS_E_UNSUPPORTED, "platform: unknown");
    }
    if (cfg->accel != DS_QEMU_ACCEL_KVM && cfg->accel != DS_QEMU_ACCEL_TCG) {
        return qemu_fail(err, -DS_E_UNSUPPORTED, "accel: unknown");
    }
    if (cfg->platform == DS_QEMU_PLATFORM_TDX && cfg->accel != DS_QEMU_ACCEL_KVM) {
        return qemu_fail(err, -DS_E_UNSUPPORTED, "accel: TDX needs KVM");
    }
    DS_TRY(qemu_check_path("qemu_path", cfg->qemu_path, true, err));
    unsigned major, minor;
    if (!cfg->qemu_version) {
        return qemu_fail(err, -DS_E_NOT_FOUND, "qemu_version: missing");
    }
    if (qemu_parse_version(cfg->qemu_version, &major, &minor) < 0) {
        return qemu_fail(err, -DS_E_FORMAT, "qemu_version: not X.Y.Z");
    }
    if (cfg->platform == DS_QEMU_PLATFORM_TDX && major < 8) {
        /* attestation §5.1: verifiers cannot recompute measurements for QEMU < 8.0. */
        return qemu_fail(err, -DS_E_UNSUPPORTED, "qemu_version: TDX needs QEMU >= 8.0");
    }
    DS_TRY(qemu_check_user(cfg->run_as_user, err));
    DS_TRY(qemu_check_cpulist(cfg->taskset_cpus, err));
    if (cfg->vcpus == 0 || cfg->vcpus > DS_QEMU_VCPU_MAX) {
        return qemu_fail(err, -ERANGE, "vcpus: must be 1..%u", DS_QEMU_VCPU_MAX);
    }
    if (cfg->memory_mb < DS_QEMU_MEMORY_MB_MIN || cfg->memory_mb > DS_QEMU_MEMORY_MB_MAX) {
        return qemu_fail(err, -ERANGE, "memory_mb: must be %u..%u", DS_QEMU_MEMORY_MB_MIN,
                         DS_QEMU_MEMORY_MB_MAX);
    }
    if (cfg->hugepages && cfg->memory_mb < 1024) {
        return qemu_fail(err, -ERANGE, "memory_mb: hugepages need at least 1 GiB");
    }
    DS_TRY(qemu_check_path("bios", cfg->bios, cfg->platform == DS_QEMU_PLATFORM_TDX, err));
    DS_TRY(qemu_check_path("kernel", cfg->kernel, true, err));
    DS_TRY(qemu_check_path("initrd", cfg->initrd, true, err));
    if (!cfg->cmdline) {
        return qemu_fail(err, -DS_E_NOT_FOUND, "cmdline: missing");
    }
    DS_TRY(qemu_check_text("cmdline", cfg->cmdline, DS_QEMU_CMDLINE_MAX, err));
    DS_TRY(qemu_check_path("rootfs", cfg->rootfs, false, err));
    DS_TRY(qemu_check_text("image_name", cfg->image_name, DS_QEMU_STR_MAX, err));
    DS_TRY(qemu_check_text("ovmf_variant", cfg->ovmf_variant, DS_QEMU_STR_MAX, err));
    DS_TRY(qemu_check_path("data_disk", cfg->data_disk, false, err));
    if (cfg->verity_volume_count > DS_QEMU_VOLUME_MAX) {
        return qemu_fail(err, -ERANGE, "verity_volumes: more than %u", DS_QEMU_VOLUME_MAX);
    }
    for (size_t i = 0; i < cfg->verity_volume_count; i++) {
        DS_TRY(qemu_check_path("verity_volumes[]", cfg->verity_volumes[i], true, err));
    }
    switch (cfg->share_mode) {
    case DS_QEMU_SHARE_9P:
    case DS_QEMU_SHARE_VHD:
    case DS_QEMU_SHARE_VVFAT:
        DS_TRY(qemu_check_path("share_path", cfg->share_path, true, err));
        break;
    case DS_QEMU_SHARE_NONE:
        break;
    default:
        return qemu_fail(err, -DS_E_UNSUPPORTED, "share_mode: unknown");
    }
    if (cfg->nic_count == 0 || !cfg->nics) {
        return qemu_fail(err, -DS_E_NOT_FOUND, "nics: at least one NIC is required");
    }
    if (cfg->nic_count > DS_QEMU_NIC_MAX) {
        return qemu_fail(err, -ERANGE, "nics: more than %u", DS_QEMU_NIC_MAX);
    }
    for (size_t i = 0; i < cfg->nic_count; i++) {
        DS_TRY(qemu_check_nic(i, &cfg->nics[i], err));
    }
    DS_TRY(qemu_check_ports(cfg, err));
    if (cfg->gpu_count > DS_QEMU_GPU_MAX || cfg->nvswitch_count > DS_QEMU_GPU_MAX) {
        return qemu_fail(err, -ERANGE, "gpus: more than %u", DS_QEMU_GPU_MAX);
    }
    for (size_t i = 0; i < cfg->gpu_count; i++) {
        DS_TRY(qemu_check_pci("gpus", i, &cfg->gpus[i], err));
    }
    for (size_t i = 0; i < cfg->nvswitch_count; i++) {
        DS_TRY(qemu_check_pci("nvswitches", i, &cfg->nvswitches[i], err));
    }
    if (cfg->nvswitch_count > 0 && cfg->gpu_count == 0) {
        return qemu_fail(err, -DS_E_UNSUPPORTED, "nvswitches: only together with GPUs");
    }
    switch (cfg->host_api) {
    case DS_QEMU_HOST_API_VSOCK:
        if (cfg->cid < DS_QEMU_CID_MIN || cfg->cid == UINT32_MAX) {
            return qemu_fail(err, -ERANGE, "cid: must be >= %u", DS_QEMU_CID_MIN);
        }
        break;
    case DS_QEMU_HOST_API_SERIAL:
        if (cfg->platform == DS_QEMU_PLATFORM_TDX) {
            return qemu_fail(err, -DS_E_UNSUPPORTED,
                             "host_api: the virtio-serial channel is for no-TEE hosts only");
        }
        DS_TRY(qemu_check_path("host_api_socket", cfg->host_api_socket, true, err));
        break;
    default:
        return qemu_fail(err, -DS_E_UNSUPPORTED, "host_api: unknown");
    }
    DS_TRY(qemu_check_path("serial_log", cfg->serial_log, true, err));
    DS_TRY(qemu_check_path("serial_pty", cfg->serial_pty, false, err));
    DS_TRY(qemu_check_path("qmp_socket", cfg->qmp_socket, false, err));
    DS_TRY(qemu_check_path("swtpm_socket", cfg->swtpm_socket, false, err));
    const char *const *smb = &cfg->smbios.bios_vendor;
    for (size_t i = 0; i < sizeof(cfg->smbios) / sizeof(const char *); i++) {
        DS_TRY(qemu_check_text("smbios", smb[i], DS_QEMU_STR_MAX, err));
    }
    if (cfg->tdx_mrconfigid) {
        if (cfg->platform != DS_QEMU_PLATFORM_TDX) {
            return qemu_fail(err, -DS_E_UNSUPPORTED, "tdx_mrconfigid: TDX only");
        }
        uint8_t *raw = NULL;
        size_t raw_len = 0;
        int r =
            ds_base64_decode(cfg->tdx_mrconfigid, strlen(cfg->tdx_mrconfigid), 64, &raw, &raw_len);
        free(raw);
        if (r < 0 || raw_len != 48 || strlen(cfg->tdx_mrconfigid) != 64) {
            return qemu_fail(err, -DS_E_FORMAT, "tdx_mrconfigid: not base64 of 48 bytes");
        }
    }
    if (cfg->qgs_port > 65535) {
        return qemu_fail(err, -ERANGE, "qgs_port: out of range");
    }
    if (cfg->qgs_port && cfg->platform != DS_QEMU_PLATFORM_TDX) {
        return qemu_fail(err, -DS_E_UNSUPPORTED, "qgs_port: TDX only");
    }
    if (cfg->tdx_attestation_variant && strcmp(cfg->tdx_attestation_variant, "legacy") != 0 &&
        strcmp(cfg->tdx_attestation_variant, "lite") != 0) {
        return qemu_fail(err, -DS_E_UNSUPPORTED, "tdx_attestation_variant: legacy or lite");
    }
    return 0;
}

int ds_qemu_effective_resources(const struct ds_qemu_config *cfg, uint32_t *out_vcpus,
                                uint64_t *out_memory_mb)
{
    DS_TRY(qemu_check_config(cfg, NULL));
    struct qemu_numa numa;
    qemu_numa_layout(cfg, &numa);
    effective(cfg, &numa, out_vcpus, out_memory_mb);
    return 0;
}

/* -smbios type=<n>,k=v,... for one type with at least one non-empty field (item 10). */
static void smbios_type(struct argv_builder *ab, int type, const char *const *keys,
                        const char *const *vals, size_t count)
{
    bool any = false;
    for (size_t i = 0; i < count; i++) {
        any |= vals[i] && *vals[i];
    }
    if (!any) {
        return;
    }
    ab_push(ab, "-smbios");
    ab_begin(ab);
    ab_raw(ab, "type=%d", type);
    for (size_t i = 0; i < count; i++) {
        if (vals[i] && *vals[i]) {
            ab_raw(ab, ",%s=", keys[i]);
            ab_esc(ab, vals[i]);
        }
    }
    ab_end(ab);
}

static void add_smbios(struct argv_builder *ab, const struct ds_qemu_smbios *s)
{
    static const char *const k0[] = {"vendor", "version", "date", "release"};
    const char *const v0[] = {s->bios_vendor, s->bios_version, s->bios_date, s->bios_release};
    static const char *const k1[] = {"manufacturer", "product", "version", "serial",
                                     "uuid",         "family",  "sku"};
    const char *const v1[] = {s->sys_manufacturer, s->sys_product, s->sys_version, s->sys_serial,
                              s->sys_uuid,         s->sys_family,  s->sys_sku};
    static const char *const k2[] = {"manufacturer", "product", "version", "serial", "asset"};
    const char *const v2[] = {s->board_manufacturer, s->board_product, s->board_version,
                              s->board_serial, s->board_asset};
    static const char *const k3[] = {"manufacturer", "version", "serial", "asset"};
    const char *const v3[] = {s->chassis_manufacturer, s->chassis_version, s->chassis_serial,
                              s->chassis_asset};
    smbios_type(ab, 0, k0, v0, DS_ARRAY_SIZE(k0));
    smbios_type(ab, 1, k1, v1, DS_ARRAY_SIZE(k1));
    smbios_type(ab, 2, k2, v2, DS_ARRAY_SIZE(k2));
    smbios_type(ab, 3, k3, v3, DS_ARRAY_SIZE(k3));
}

static void add_nics(struct argv_builder *ab, const struct ds_qemu_config *cfg)
{
    bool fwd_done = false;
    for (size_t i = 0; i < cfg->nic_count; i++) {
        const struct ds_qemu_nic *nic = &cfg->nics[i];
        ab_push(ab, "-netdev");
        ab_begin(ab);
        switch (nic->mode) {
        case DS_QEMU_NET_USER:
            ab_raw(ab, "user,id=net%zu,net=%s,dhcpstart=%s,restrict=%s", i, nic->net,
                   nic->dhcp_start, nic->restrict_net ? "yes" : "no");
            if (!fwd_done) {
                /* Port mappings go on the FIRST user NIC only (item 9, §1.9). */
                for (size_t p = 0; p < cfg->port_count; p++) {
                    const struct ds_qemu_port *pm = &cfg->ports[p];
                    ab_raw(ab, ",hostfwd=%s:%s:%u-:%u", pm->protocol, pm->address,
                           (unsigned)pm->host_port, (unsigned)pm->vm_port);
                }
                fwd_done = true;
            }
            break;
        case DS_QEMU_NET_BRIDGE:
            ab_raw(ab, "bridge,id=net%zu,br=%s", i, nic->bridge);
            break;
        case DS_QEMU_NET_TAP:
            ab_raw(ab, "tap,id=net%zu,ifname=%s,script=no,downscript=no,vhost=off", i, nic->tap);
            break;
        case DS_QEMU_NET_CUSTOM:
            /* Verbatim by definition (operator-supplied netdev string, §1.2). */
            if (!ab->err && ds_buf_append_str(&ab->b, nic->netdev) < 0) {
                ab->err = -DS_E_LIMIT;
            }
            break;
        }
        ab_end(ab);
        ab_push(ab, "-device");
        ab_begin(ab);
        ab_raw(ab, "virtio-net-pci,netdev=net%zu,mac=%s", i, nic->mac);
        ab_end(ab);
    }
}

static void add_drive(struct argv_builder *ab, const char *file, const char *id, bool ro_raw)
{
    ab_push(ab, "-drive");
    ab_begin(ab);
    ab_raw(ab, "file=");
    ab_esc(ab, file);
    ab_raw(ab, ",if=none,id=%s%s", id, ro_raw ? ",format=raw,readonly=on" : "");
    ab_end(ab);
    ab_push(ab, "-device");
    ab_begin(ab);
    ab_raw(ab, "virtio-blk-pci,drive=%s", id);
    ab_end(ab);
}

static void add_host_share(struct argv_builder *ab, const struct ds_qemu_config *cfg)
{
    switch (cfg->share_mode) {
    case DS_QEMU_SHARE_9P:
        ab_push(ab, "-virtfs");
        ab_begin(ab);
        ab_raw(ab, "local,path=");
        ab_esc(ab, cfg->share_path);
        ab_raw(ab, ",mount_tag=host-shared,readonly=%s,security_model=mapped,id=virtfs0",
               cfg->share_ro ? "on" : "off");
        ab_end(ab);
        break;
    case DS_QEMU_SHARE_VHD:
        add_drive(ab, cfg->share_path, "hd2", true);
        break;
    case DS_QEMU_SHARE_VVFAT:
        ab_push(ab, "-drive");
        ab_begin(ab);
        ab_raw(ab, "file=fat:");
        ab_esc(ab, cfg->share_path);
        ab_raw(ab, ",if=none,id=hd2,format=vvfat,label=DSTACKSHR,readonly=on");
        ab_end(ab);
        ab_push(ab, "-device");
        ab_push(ab, "virtio-blk-pci,drive=hd2");
        break;
    case DS_QEMU_SHARE_NONE:
        break;
    }
}

static void add_host_api(struct argv_builder *ab, const struct ds_qemu_config *cfg)
{
    if (cfg->host_api == DS_QEMU_HOST_API_VSOCK) {
        ab_push(ab, "-device");
        ab_begin(ab);
        ab_raw(ab, "vhost-vsock-pci,guest-cid=%" PRIu32, cfg->cid);
        ab_end(ab);
        return;
    }
    /* dstack-c: hosts without vhost-vsock get a virtio-serial port at the same position. QEMU
     * is the client of the VMM's host-API socket; reconnect=N makes it dial again when the VMM
     * closes the connection or restarts (without it the port would stay dead: QEMU drops what
     * the guest writes to a disconnected chardev). */
    ab_pair(ab, "-device", "virtio-serial-pci,id=vser0");
    ab_push(ab, "-chardev");
    ab_begin(ab);
    ab_raw(ab, "socket,id=hostapi,path=");
    ab_esc(ab, cfg->host_api_socket);
    ab_raw(ab, ",reconnect=%u", DS_QEMU_HOST_API_RECONNECT_S);
    ab_end(ab);
    ab_pair(ab, "-device",
            "virtserialport,bus=vser0.0,chardev=hostapi,name=" DS_QEMU_HOST_API_PORT_NAME);
}

static void add_hugepages(struct argv_builder *ab, const struct qemu_numa *numa, uint32_t vcpus,
                          uint64_t mem_mb)
{
    uint32_t vcpu_per_node = vcpus / (uint32_t)numa->count;
    uint64_t gib_per_node = mem_mb / 1024u / numa->count;
    uint32_t bus_nr = 5;
    for (size_t i = 0; i < numa->count; i++) {
        uint32_t first = (uint32_t)i * vcpu_per_node;
        ab_push(ab, "-numa");
        ab_begin(ab);
        ab_raw(ab, "node,nodeid=%zu,cpus=%" PRIu32 "-%" PRIu32 ",memdev=mem%zu", i, first,
               first + vcpu_per_node - 1, i);
        ab_end(ab);
        ab_push(ab, "-object");
        ab_begin(ab);
        ab_raw(ab,
               "memory-backend-file,id=mem%zu,size=%" PRIu64
               "G,mem-path=/dev/hugepages,share=on,prealloc=yes,host-nodes=%" PRIu32 ",policy=bind",
               i, gib_per_node, numa->node[i]);
        ab_end(ab);
        ab_push(ab, "-device");
        ab_begin(ab);
        /* Upstream formats addr as the decimal integer 0xa + i ("10", "11", ...), which QEMU
         * then reads as a hex slot number: keep that exact text, it is measured (ACPI). */
        ab_raw(ab,
               "pxb-pcie,id=pcie.node%" PRIu32 ",bus=pcie.0,addr=%zu,numa_node=%zu,bus_nr=%" PRIu32,
               numa->node[i], (size_t)0xa + i, i, bus_nr);
        ab_end(ab);
        bus_nr += numa->gpus[i] + 1;
    }
}

static void add_gpus(struct argv_builder *ab, const struct ds_qemu_config *cfg)
{
    if (cfg->gpu_count == 0) {
        return;
    }
    ab_pair(ab, "-object", "iommufd,id=iommufd0");
    size_t dev = 1;
    for (size_t k = 0; k < cfg->gpu_count + cfg->nvswitch_count; k++, dev++) {
        bool is_gpu = k < cfg->gpu_count;
        const struct ds_qemu_pci_dev *d =
            is_gpu ? &cfg->gpus[k] : &cfg->nvswitches[k - cfg->gpu_count];
        ab_push(ab, "-device");
        ab_begin(ab);
        if (is_gpu && cfg->hugepages) {
            ab_raw(ab, "pcie-root-port,id=pci.%zu,bus=pcie.node%" PRIu32 ",chassis=%zu", dev,
                   d->numa_node, dev);
        } else {
            ab_raw(ab, "pcie-root-port,id=pci.%zu,bus=pcie.0,chassis=%zu", dev, dev);
        }
        ab_end(ab);
        ab_push(ab, "-device");
        ab_begin(ab);
        ab_raw(ab, "vfio-pci,host=%s,bus=pci.%zu,iommufd=iommufd0", d->slot, dev);
        ab_end(ab);
    }
}

static void add_machine(struct argv_builder *ab, const struct ds_qemu_config *cfg)
{
    if (cfg->platform == DS_QEMU_PLATFORM_NONE) {
        /* Upstream's string also under TCG, which accepts and ignores kernel-irqchip. */
        ab_pair(ab, "-machine", "q35,kernel-irqchip=split,hpet=off");
        return;
    }
    ab_pair(ab, "-machine", "q35,kernel-irqchip=split,confidential-guest-support=tdx,hpet=off");
    /* Compact JSON object form (item 15); all values are validated base64/decimal. */
    ab_push(ab, "-object");
    ab_begin(ab);
    ab_raw(ab, "{\"qom-type\":\"tdx-guest\",\"id\":\"tdx\"");
    if (cfg->tdx_mrconfigid) {
        ab_raw(ab, ",\"mrconfigid\":\"%s\"", cfg->tdx_mrconfigid);
    }
    if (cfg->qgs_port) {
        ab_raw(ab,
               ",\"quote-generation-socket\":{\"type\":\"vsock\",\"cid\":\"2\",\"port\":\"%" PRIu32
               "\"}",
               cfg->qgs_port);
    }
    ab_raw(ab, "}");
    ab_end(ab);
}

int ds_qemu_build_argv(const struct ds_qemu_config *cfg, char ***out_argv, size_t *out_argc,
                       struct ds_qemu_error *err)
{
    int r = qemu_check_config(cfg, err);
    if (r < 0) {
        return r;
    }
    struct argv_builder ab = {0};
    ds_buf_init(&ab.b, ARG_MAX_SIZE);
    struct qemu_numa numa;
    qemu_numa_layout(cfg, &numa);
    uint32_t vcpus;
    uint64_t mem_mb;
    effective(cfg, &numa, &vcpus, &mem_mb);

    /* Prefixes: outermost sudo -u <user>, then taskset -c <cpulist>. */
    if (cfg->run_as_user && *cfg->run_as_user) {
        ab_push(&ab, "sudo");
        ab_pair(&ab, "-u", cfg->run_as_user);
    }
    if (cfg->taskset_cpus && *cfg->taskset_cpus) {
        ab_push(&ab, "taskset");
        ab_pair(&ab, "-c", cfg->taskset_cpus);
    }
    ab_push(&ab, cfg->qemu_path);

    /* 1. accelerator, CPU model, no display, no default devices. */
    bool tcg = cfg->accel == DS_QEMU_ACCEL_TCG;
    ab_pair(&ab, "-accel", tcg ? "tcg" : "kvm");
    ab_pair(&ab, "-cpu", tcg ? "max" : "host");
    ab_push(&ab, "-nographic");
    ab_push(&ab, "-nodefaults");

    /* 2. serial console: pty + log (upstream), or a null backend that only logs. */
    ab_push(&ab, "-chardev");
    ab_begin(&ab);
    if (cfg->serial_pty) {
        ab_raw(&ab, "pty,id=com0,path=");
        ab_esc(&ab, cfg->serial_pty);
    } else {
        ab_raw(&ab, "null,id=com0");
    }
    ab_raw(&ab, ",logfile=");
    ab_esc(&ab, cfg->serial_log);
    ab_raw(&ab, ",logappend=on");
    ab_end(&ab);
    ab_pair(&ab, "-serial", "chardev:com0");

    /* 3. QMP. */
    if (cfg->qmp_socket) {
        ab_push(&ab, "-qmp");
        ab_begin(&ab);
        ab_raw(&ab, "unix:");
        ab_esc(&ab, cfg->qmp_socket);
        ab_raw(&ab, ",server,wait=off");
        ab_end(&ab);
    }

    /* 4. firmware and direct kernel boot (plain strings, not option lists). */
    if (cfg->bios) {
        ab_pair(&ab, "-bios", cfg->bios);
    }
    ab_pair(&ab, "-kernel", cfg->kernel);
    ab_pair(&ab, "-initrd", cfg->initrd);

    /* 5. PCI globals. */
    if (cfg->hotplug_off) {
        ab_pair(&ab, "-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=off");
    }
    if (cfg->pci_hole64_size) {
        ab_push(&ab, "-global");
        ab_begin(&ab);
        ab_raw(&ab, "q35-pcihost.pci-hole64-size=0x%" PRIx64, cfg->pci_hole64_size);
        ab_end(&ab);
    }

    /* 6-8. rootfs hd0, data disk hd1, verity volumes vol<i>. */
    if (cfg->rootfs) {
        add_drive(&ab, cfg->rootfs, "hd0", true);
    }
    if (cfg->data_disk) {
        add_drive(&ab, cfg->data_disk, "hd1", false);
    }
    for (size_t i = 0; i < cfg->verity_volume_count; i++) {
        char id[24];
        snprintf(id, sizeof(id), "vol%zu", i);
        add_drive(&ab, cfg->verity_volumes[i], id, true);
    }

    /* 9. NICs (+ hostfwd), 10. SMBIOS. */
    add_nics(&ab, cfg);
    add_smbios(&ab, &cfg->smbios);

    /* 11. swtpm. */
    if (cfg->swtpm_socket) {
        ab_push(&ab, "-chardev");
        ab_begin(&ab);
        ab_raw(&ab, "socket,id=chrtpm,path=");
        ab_esc(&ab, cfg->swtpm_socket);
        ab_end(&ab);
        ab_pair(&ab, "-tpmdev", "emulator,id=tpm0,chardev=chrtpm");
        ab_pair(&ab, "-device", "tpm-tis,tpmdev=tpm0");
    }

    /* 12. host API channel, 13. host share. */
    add_host_api(&ab, cfg);
    add_host_share(&ab, cfg);

    /* 14. hugepages NUMA layout, 15. machine (+ TDX object), 16. GPUs. */
    if (cfg->hugepages) {
        add_hugepages(&ab, &numa, vcpus, mem_mb);
    }
    add_machine(&ab, cfg);
    add_gpus(&ab, cfg);

    /* 17. -smp, -m, -append. */
    ab_push(&ab, "-smp");
    ab_begin(&ab);
    ab_raw(&ab, "%" PRIu32, vcpus);
    ab_end(&ab);
    ab_push(&ab, "-m");
    ab_begin(&ab);
    ab_raw(&ab, "%" PRIu64 "M", mem_mb);
    ab_end(&ab);
    ab_pair(&ab, "-append", cfg->cmdline);

    ds_buf_done(&ab.b);
    if (ab.err) {
        r = ab.err;
        qemu_fail(err, r, "argv: %s", ds_strerror(r));
        ds_qemu_argv_free(ab.v);
        return r;
    }
    *out_argv = ab.v;
    *out_argc = ab.n;
    return 0;
}
