/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Unit tests of the QEMU command-line builder (lib/vmm): six configurations compared exactly
 * with hand-written golden files in tests/vectors/qemu/<name>.argv (one argument per line, written
 * from spec host-side §1.8, see docs/qemu.md), the VmConfig JSON derived from the same configs,
 * the verifier's QEMU version rules, MAC derivation, and negative cases each asserting its
 * specific error: bad paths, zero vCPUs, port collisions, unknown platform, comma escaping.
 */
#include <errno.h>
#include <jansson.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "dstack/vmm_qemu.h"

#define QEMU "/usr/bin/qemu-system-x86_64"
#define IMG  "/img/dstack-0.5.3"
#define STD_CMDLINE                                                                                \
    "console=ttyS0 init=/init panic=1 net.ifnames=0 biosdevname=0 mce=off oops=panic "             \
    "pci=noearly pci=nommconf random.trust_cpu=y random.trust_bootloader=n tsc=reliable "          \
    "no-kvmclock "                                                                                 \
    "dstack.rootfs_hash=1f0c2b8e43c3a9b3b1d5e7f9a0c2e4f6a8b0d2e4f6a8c0e2a4c6e8f0a2b4c6d8 "         \
    "dstack.rootfs_size=419430400"
#define MRCONFIGID "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v"
#define IMAGE_HASH "6f1c2d3e4a5b697887a6b5c4d3e2f1000112233445566778899aabbccddeeff0"

static struct ds_qemu_nic user_nic(const char *mac)
{
    return (struct ds_qemu_nic){
        .mode = DS_QEMU_NET_USER, .mac = mac, .net = "10.0.2.0/24", .dhcp_start = "10.0.2.10"};
}

/* ---- the six golden configurations -------------------------------------------------------- */

struct fixture {
    struct ds_qemu_config cfg;
    struct ds_qemu_nic nics[3];
    struct ds_qemu_port ports[3];
    struct ds_qemu_pci_dev gpus[2];
    struct ds_qemu_pci_dev nvswitches[1];
    const char *volumes[1];
};

static void cfg_tdx(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->nics[0] = user_nic("02:11:22:33:44:55");
    f->cfg = (struct ds_qemu_config){
        .qemu_path = QEMU,
        .qemu_version = "9.1.0",
        .platform = DS_QEMU_PLATFORM_TDX,
        .accel = DS_QEMU_ACCEL_KVM,
        .vcpus = 4,
        .memory_mb = 4096,
        .bios = IMG "/ovmf.fd",
        .kernel = IMG "/bzImage",
        .initrd = IMG "/initramfs.cpio.gz",
        .cmdline = STD_CMDLINE,
        .rootfs = IMG "/rootfs.img.parted.verity",
        .image_name = "dstack-0.5.3",
        .ovmf_variant = "pre202505",
        .data_disk = "/vm/w1/hda.img",
        .share_mode = DS_QEMU_SHARE_9P,
        .share_path = "/vm/w1/shared",
        .share_ro = true,
        .nics = f->nics,
        .nic_count = 1,
        .host_api = DS_QEMU_HOST_API_VSOCK,
        .cid = 1000,
        .serial_log = "/vm/w1/serial.log",
        .serial_pty = "/vm/w1/serial.pty",
        .qmp_socket = "/vm/w1/qmp.sock",
        .smbios = {.sys_manufacturer = "dstack", .sys_product = "dstack"},
        .tdx_mrconfigid = MRCONFIGID,
        .qgs_port = 4050,
        .tdx_attestation_variant = "lite",
    };
}

static void cfg_no_tee_tcg(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->nics[0] = user_nic("02:00:00:00:00:01");
    f->nics[0].restrict_net = true;
    f->cfg = (struct ds_qemu_config){
        .qemu_path = QEMU,
        .qemu_version = "7.2.22",
        .platform = DS_QEMU_PLATFORM_NONE,
        .accel = DS_QEMU_ACCEL_TCG,
        .vcpus = 1,
        .memory_mb = 512,
        .kernel = "/tmp/smoke/vmlinuz",
        .initrd = "/tmp/smoke/initramfs.cpio.gz",
        .cmdline = "console=ttyS0 panic=1",
        .share_mode = DS_QEMU_SHARE_9P,
        .share_path = "/tmp/smoke/shared",
        .nics = f->nics,
        .nic_count = 1,
        .host_api = DS_QEMU_HOST_API_SERIAL,
        .host_api_socket = "/tmp/smoke/host-api.sock",
        .serial_log = "/tmp/smoke/serial.log",
    };
}

static void cfg_no_tee_kvm(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->nics[0] = user_nic("02:aa:bb:cc:dd:ee");
    f->volumes[0] = "/vols/models.verity";
    f->cfg = (struct ds_qemu_config){
        .qemu_path = "/opt/qemu/bin/qemu-system-x86_64",
        .qemu_version = "8.2.2",
        .platform = DS_QEMU_PLATFORM_NONE,
        .accel = DS_QEMU_ACCEL_KVM,
        .run_as_user = "dstack",
        .vcpus = 2,
        .memory_mb = 2048,
        .bios = "/img/dstack-dev-0.5.3/ovmf.fd",
        .kernel = "/img/dstack-dev-0.5.3/bzImage",
        .initrd = "/img/dstack-dev-0.5.3/initramfs.cpio.gz",
        .cmdline = "console=ttyS0 init=/init panic=1 dstack.rootfs_hash=00 dstack.rootfs_size=1",
        .rootfs = "/img/dstack-dev-0.5.3/rootfs.img.parted.verity",
        .image_name = "dstack-dev-0.5.3",
        .data_disk = "/vm/w,3/hda.img",
        .verity_volumes = f->volumes,
        .verity_volume_count = 1,
        .share_mode = DS_QEMU_SHARE_VHD,
        .share_path = "/vm/w,3/shared.img",
        .nics = f->nics,
        .nic_count = 1,
        .host_api = DS_QEMU_HOST_API_VSOCK,
        .cid = 1001,
        .serial_log = "/vm/w,3/serial.log",
        .serial_pty = "/vm/w,3/serial.pty",
        .qmp_socket = "/vm/w,3/qmp.sock",
        .pci_hole64_size = 0x8000000000ull,
        .hotplug_off = true,
        .smbios = {.bios_vendor = "dstack",
                   .bios_version = "1.0",
                   .sys_manufacturer = "dstack, Inc.",
                   .sys_product = "dstack",
                   .sys_serial = "S-1"},
        .swtpm_socket = "/vm/w,3/swtpm/swtpm.sock",
        .pic = DS_QEMU_ON,
        .single_pass_add_pages = DS_QEMU_OFF,
    };
}

static void cfg_gpu(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->nics[0] = user_nic("02:44:44:44:44:44");
    f->gpus[0] = (struct ds_qemu_pci_dev){.slot = "18:00.0", .numa_node = 0};
    f->gpus[1] = (struct ds_qemu_pci_dev){.slot = "9a:00.0", .numa_node = 1};
    f->nvswitches[0] = (struct ds_qemu_pci_dev){.slot = "86:00.0", .numa_node = 1};
    f->cfg = (struct ds_qemu_config){
        .qemu_path = QEMU,
        .qemu_version = "9.1.0",
        .platform = DS_QEMU_PLATFORM_TDX,
        .accel = DS_QEMU_ACCEL_KVM,
        .taskset_cpus = "0-15",
        .vcpus = 5,
        .memory_mb = 10000,
        .hugepages = true,
        .bios = "/img/dstack-nvidia-0.5.3/ovmf.fd",
        .kernel = "/img/dstack-nvidia-0.5.3/bzImage",
        .initrd = "/img/dstack-nvidia-0.5.3/initramfs.cpio.gz",
        .cmdline = "console=ttyS0 init=/init panic=1",
        .rootfs = "/img/dstack-nvidia-0.5.3/rootfs.img.parted.verity",
        .image_name = "dstack-nvidia-0.5.3",
        .data_disk = "/vm/w4/hda.img",
        .share_mode = DS_QEMU_SHARE_9P,
        .share_path = "/vm/w4/shared",
        .share_ro = true,
        .nics = f->nics,
        .nic_count = 1,
        .gpus = f->gpus,
        .gpu_count = 2,
        .nvswitches = f->nvswitches,
        .nvswitch_count = 1,
        .host_api = DS_QEMU_HOST_API_VSOCK,
        .cid = 1004,
        .serial_log = "/vm/w4/serial.log",
        .serial_pty = "/vm/w4/serial.pty",
        .pci_hole64_size = 0x20000000000ull,
        .hotplug_off = true,
        .qgs_port = 4050,
    };
}

static void cfg_bridge(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->nics[0] = (struct ds_qemu_nic){
        .mode = DS_QEMU_NET_BRIDGE, .mac = "02:55:00:00:00:01", .bridge = "br0"};
    f->nics[1] = (struct ds_qemu_nic){
        .mode = DS_QEMU_NET_TAP, .mac = "02:55:00:00:00:02", .tap = "dt0a1b2c3d4e5f"};
    f->nics[2] = (struct ds_qemu_nic){.mode = DS_QEMU_NET_CUSTOM,
                                      .mac = "02:55:00:00:00:03",
                                      .netdev = "user,id=net2,net=10.1.0.0/24,restrict=on"};
    f->cfg = (struct ds_qemu_config){
        .qemu_path = QEMU,
        .qemu_version = "9.0.0",
        .platform = DS_QEMU_PLATFORM_NONE,
        .accel = DS_QEMU_ACCEL_KVM,
        .vcpus = 2,
        .memory_mb = 1024,
        .kernel = IMG "/bzImage",
        .initrd = IMG "/initramfs.cpio.gz",
        .cmdline = "console=ttyS0 init=/init panic=1",
        .image_name = "dstack-0.5.3",
        .share_mode = DS_QEMU_SHARE_VVFAT,
        .share_path = "/vm/w5/shared",
        .nics = f->nics,
        .nic_count = 3,
        .host_api = DS_QEMU_HOST_API_VSOCK,
        .cid = 1005,
        .serial_log = "/vm/w5/serial.log",
        .serial_pty = "/vm/w5/serial.pty",
    };
}

static void cfg_ports(struct fixture *f)
{
    memset(f, 0, sizeof(*f));
    f->nics[0] = (struct ds_qemu_nic){
        .mode = DS_QEMU_NET_BRIDGE, .mac = "02:66:00:00:00:01", .bridge = "virbr0"};
    f->nics[1] = (struct ds_qemu_nic){.mode = DS_QEMU_NET_USER,
                                      .mac = "02:66:00:00:00:02",
                                      .net = "10.0.2.0/24",
                                      .dhcp_start = "10.0.2.15",
                                      .restrict_net = true};
    f->nics[2] = (struct ds_qemu_nic){.mode = DS_QEMU_NET_USER,
                                      .mac = "02:66:00:00:00:03",
                                      .net = "10.0.3.0/24",
                                      .dhcp_start = "10.0.3.10"};
    f->ports[0] = (struct ds_qemu_port){"tcp", "127.0.0.1", 8080, 80};
    f->ports[1] = (struct ds_qemu_port){"udp", "0.0.0.0", 5353, 53};
    f->ports[2] = (struct ds_qemu_port){"tcp", "127.0.0.1", 8443, 443};
    f->cfg = (struct ds_qemu_config){
        .qemu_path = QEMU,
        .qemu_version = "9.1.0",
        .platform = DS_QEMU_PLATFORM_NONE,
        .accel = DS_QEMU_ACCEL_KVM,
        .vcpus = 3,
        .memory_mb = 3072,
        .kernel = IMG "/bzImage",
        .initrd = IMG "/initramfs.cpio.gz",
        .cmdline = "console=ttyS0 init=/init panic=1",
        .image_name = "dstack-0.5.3",
        .share_mode = DS_QEMU_SHARE_9P,
        .share_path = "/vm/w6/shared",
        .share_ro = true,
        .nics = f->nics,
        .nic_count = 3,
        .ports = f->ports,
        .port_count = 3,
        .host_api = DS_QEMU_HOST_API_VSOCK,
        .cid = 1006,
        .serial_log = "/vm/w6/serial.log",
        .serial_pty = "/vm/w6/serial.pty",
    };
}

/* ---- golden comparison ----------------------------------------------------------------------- */

static char *golden_path(const char *name)
{
    const char *src = getenv("DS_SRC");
    char *p = NULL;
    if (src) {
        assert_true(asprintf(&p, "%s/tests/vectors/qemu/%s.argv", src, name) > 0);
    } else {
        assert_true(asprintf(&p, "vectors/qemu/%s.argv", name) > 0);
    }
    return p;
}

static void check_golden(const char *name, void (*make)(struct fixture *))
{
    struct fixture f;
    make(&f);
    char **argv = NULL;
    size_t argc = 0;
    struct ds_qemu_error err = {{0}};
    int r = ds_qemu_build_argv(&f.cfg, &argv, &argc, &err);
    if (r != 0) {
        fail_msg("%s: build failed %d: %s", name, r, err.msg);
    }
    assert_null(argv[argc]);

    char *path = golden_path(name);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fail_msg("cannot open %s", path);
    }
    char line[8192];
    size_t i = 0;
    while (fgets(line, sizeof(line), fp)) {
        size_t n = strlen(line);
        assert_true(n > 0 && line[n - 1] == '\n');
        line[n - 1] = '\0';
        if (i >= argc) {
            fail_msg("%s: golden has more lines; line %zu = '%s'", name, i + 1, line);
        }
        if (strcmp(argv[i], line) != 0) {
            fail_msg("%s: line %zu differs:\n  built:  '%s'\n  golden: '%s'", name, i + 1, argv[i],
                     line);
        }
        i++;
    }
    fclose(fp);
    if (i != argc) {
        fail_msg("%s: built %zu args, golden %zu; extra '%s'", name, argc, i, argv[i]);
    }
    free(path);
    ds_qemu_argv_free(argv);
}

static void test_golden_tdx(void **state)
{
    (void)state;
    check_golden("tdx", cfg_tdx);
}
static void test_golden_no_tee_tcg(void **state)
{
    (void)state;
    check_golden("no_tee_tcg", cfg_no_tee_tcg);
}
static void test_golden_no_tee_kvm(void **state)
{
    (void)state;
    check_golden("no_tee_kvm", cfg_no_tee_kvm);
}
static void test_golden_gpu(void **state)
{
    (void)state;
    check_golden("gpu", cfg_gpu);
}
static void test_golden_bridge(void **state)
{
    (void)state;
    check_golden("bridge", cfg_bridge);
}
static void test_golden_ports(void **state)
{
    (void)state;
    check_golden("ports", cfg_ports);
}

/* ---- negative cases ---------------------------------------------------------------------- */

static int build(const struct ds_qemu_config *cfg, struct ds_qemu_error *err)
{
    char **argv = (char **)0x1;
    size_t argc = 12345;
    int r = ds_qemu_build_argv(cfg, &argv, &argc, err);
    if (r == 0) {
        ds_qemu_argv_free(argv);
    } else {
        /* out_* untouched on failure */
        assert_ptr_equal(argv, (char **)0x1);
        assert_int_equal(argc, 12345);
    }
    return r;
}

static void expect_err(struct fixture *f, int want, const char *msg_part)
{
    struct ds_qemu_error err = {{0}};
    int r = build(&f->cfg, &err);
    if (r != want) {
        fail_msg("expected %d got %d (%s)", want, r, err.msg);
    }
    if (msg_part && !strstr(err.msg, msg_part)) {
        fail_msg("error '%s' lacks '%s'", err.msg, msg_part);
    }
}

static void test_bad_paths(void **state)
{
    (void)state;
    struct fixture f;
    cfg_tdx(&f);
    f.cfg.kernel = "bzImage";
    expect_err(&f, -DS_E_FORMAT, "kernel: path must be absolute");
    cfg_tdx(&f);
    f.cfg.initrd = "/img/init\nramfs";
    expect_err(&f, -DS_E_FORMAT, "initrd: control character");
    cfg_tdx(&f);
    f.cfg.data_disk = "/vm/w1/hda.img\t";
    expect_err(&f, -DS_E_FORMAT, "data_disk");
    cfg_tdx(&f);
    f.cfg.share_path = "relative/shared";
    expect_err(&f, -DS_E_FORMAT, "share_path");
    cfg_tdx(&f);
    f.cfg.bios = NULL; /* TDX needs the firmware */
    expect_err(&f, -DS_E_NOT_FOUND, "bios: missing");
    cfg_tdx(&f);
    f.cfg.kernel = NULL;
    expect_err(&f, -DS_E_NOT_FOUND, "kernel: missing");
    cfg_no_tee_tcg(&f);
    f.cfg.host_api_socket = NULL;
    expect_err(&f, -DS_E_NOT_FOUND, "host_api_socket");
    cfg_tdx(&f);
    char *longp = malloc(DS_QEMU_PATH_MAX + 2);
    assert_non_null(longp);
    memset(longp, 'a', DS_QEMU_PATH_MAX + 1);
    longp[0] = '/';
    longp[DS_QEMU_PATH_MAX + 1] = '\0';
    f.cfg.rootfs = longp;
    expect_err(&f, -DS_E_FORMAT, "rootfs: path too long");
    free(longp);
    cfg_tdx(&f);
    f.cfg.qemu_path = "qemu-system-x86_64";
    expect_err(&f, -DS_E_FORMAT, "qemu_path");
}

static void test_resources(void **state)
{
    (void)state;
    struct fixture f;
    cfg_tdx(&f);
    f.cfg.vcpus = 0;
    expect_err(&f, -ERANGE, "vcpus");
    cfg_tdx(&f);
    f.cfg.vcpus = DS_QEMU_VCPU_MAX + 1;
    expect_err(&f, -ERANGE, "vcpus");
    cfg_tdx(&f);
    f.cfg.memory_mb = 0;
    expect_err(&f, -ERANGE, "memory_mb");
    cfg_tdx(&f);
    f.cfg.cid = 2;
    expect_err(&f, -ERANGE, "cid");
    cfg_tdx(&f);
    f.cfg.nic_count = 0;
    expect_err(&f, -DS_E_NOT_FOUND, "nics");
}

static void test_port_collisions(void **state)
{
    (void)state;
    struct fixture f;
    cfg_ports(&f);
    f.ports[2] = (struct ds_qemu_port){"tcp", "127.0.0.1", 8080, 8081};
    expect_err(&f, -EADDRINUSE, "ports[2]: tcp 127.0.0.1:8080 collides with ports[0]");
    /* 0.0.0.0 overlaps every address of the same protocol */
    cfg_ports(&f);
    f.ports[2] = (struct ds_qemu_port){"udp", "127.0.0.1", 5353, 53};
    expect_err(&f, -EADDRINUSE, "collides with ports[1]");
    /* same port, other protocol: fine */
    cfg_ports(&f);
    f.ports[2] = (struct ds_qemu_port){"udp", "127.0.0.1", 8080, 80};
    struct ds_qemu_error err = {{0}};
    assert_int_equal(build(&f.cfg, &err), 0);
    cfg_ports(&f);
    f.ports[0].protocol = "sctp";
    expect_err(&f, -DS_E_FORMAT, "protocol");
    cfg_ports(&f);
    f.ports[0].address = "127.0.0.1,hostfwd=tcp::22-:22";
    expect_err(&f, -DS_E_FORMAT, "address");
    cfg_ports(&f);
    f.ports[0].host_port = 0;
    expect_err(&f, -ERANGE, "port 0");
    /* port mappings without any user NIC */
    cfg_bridge(&f);
    f.ports[0] = (struct ds_qemu_port){"tcp", "127.0.0.1", 8080, 80};
    f.cfg.ports = f.ports;
    f.cfg.port_count = 1;
    f.cfg.nic_count = 2;
    expect_err(&f, -DS_E_UNSUPPORTED, "user NIC");
}

static void test_unknown_platform(void **state)
{
    (void)state;
    enum ds_qemu_platform p = DS_QEMU_PLATFORM_TDX;
    assert_int_equal(ds_qemu_platform_parse("sev-snp", &p), -DS_E_UNSUPPORTED);
    assert_int_equal(ds_qemu_platform_parse(NULL, &p), -DS_E_UNSUPPORTED);
    assert_int_equal(p, DS_QEMU_PLATFORM_TDX);
    assert_int_equal(ds_qemu_platform_parse("none", &p), 0);
    assert_int_equal(p, DS_QEMU_PLATFORM_NONE);
    assert_int_equal(ds_qemu_platform_parse("tdx", &p), 0);
    assert_int_equal(p, DS_QEMU_PLATFORM_TDX);
    enum ds_qemu_share_mode m;
    assert_int_equal(ds_qemu_share_mode_parse("nfs", &m), -DS_E_UNSUPPORTED);
    assert_int_equal(ds_qemu_share_mode_parse("vvfat", &m), 0);
    assert_int_equal(m, DS_QEMU_SHARE_VVFAT);

    struct fixture f;
    cfg_tdx(&f);
    f.cfg.platform = (enum ds_qemu_platform)7;
    expect_err(&f, -DS_E_UNSUPPORTED, "platform");
    cfg_tdx(&f);
    f.cfg.accel = DS_QEMU_ACCEL_TCG;
    expect_err(&f, -DS_E_UNSUPPORTED, "TDX needs KVM");
    cfg_tdx(&f);
    f.cfg.qemu_version = "7.2.0";
    expect_err(&f, -DS_E_UNSUPPORTED, "QEMU >= 8.0");
    cfg_tdx(&f);
    f.cfg.qemu_version = "nine";
    expect_err(&f, -DS_E_FORMAT, "qemu_version");
    cfg_tdx(&f);
    f.cfg.host_api = DS_QEMU_HOST_API_SERIAL;
    f.cfg.host_api_socket = "/vm/w1/host.sock";
    expect_err(&f, -DS_E_UNSUPPORTED, "no-TEE");
    cfg_no_tee_kvm(&f);
    f.cfg.tdx_mrconfigid = MRCONFIGID;
    expect_err(&f, -DS_E_UNSUPPORTED, "TDX only");
    cfg_tdx(&f);
    f.cfg.tdx_mrconfigid = "AAEC";
    expect_err(&f, -DS_E_FORMAT, "48 bytes");
}

static void test_commas_escaped(void **state)
{
    (void)state;
    struct fixture f;
    cfg_no_tee_tcg(&f);
    f.cfg.serial_log = "/tmp/a,logfile=/etc/x/serial.log";
    f.cfg.share_path = "/tmp/s,security_model=none";
    f.cfg.host_api_socket = "/tmp/h,server=on";
    f.cfg.smbios.sys_product = "p,uuid=1";
    f.cfg.kernel = "/tmp/k,1"; /* plain-string option: passed as is */
    char **argv = NULL;
    size_t argc = 0;
    struct ds_qemu_error err = {{0}};
    assert_int_equal(ds_qemu_build_argv(&f.cfg, &argv, &argc, &err), 0);
    bool seen_log = false, seen_share = false, seen_sock = false, seen_smb = false,
         seen_kernel = false;
    for (size_t i = 0; i < argc; i++) {
        seen_log |= strcmp(argv[i], "null,id=com0,logfile=/tmp/a,,logfile=/etc/x/serial.log,"
                                    "logappend=on") == 0;
        seen_share |= strcmp(argv[i], "local,path=/tmp/s,,security_model=none,mount_tag=host-"
                                      "shared,readonly=off,security_model=mapped,id=virtfs0") == 0;
        seen_sock |= strcmp(argv[i], "socket,id=hostapi,path=/tmp/h,,server=on,reconnect=1") == 0;
        seen_smb |= strcmp(argv[i], "type=1,product=p,,uuid=1") == 0;
        seen_kernel |= strcmp(argv[i], "/tmp/k,1") == 0;
    }
    assert_true(seen_log && seen_share && seen_sock && seen_smb && seen_kernel);
    ds_qemu_argv_free(argv);
}

static void test_bad_fields(void **state)
{
    (void)state;
    struct fixture f;
    cfg_tdx(&f);
    f.nics[0].mac = "02:11:22:33:44:5";
    expect_err(&f, -DS_E_FORMAT, "MAC");
    cfg_tdx(&f);
    f.nics[0].mac = "02:11:22:33:44:5G";
    expect_err(&f, -DS_E_FORMAT, "MAC");
    cfg_tdx(&f);
    f.nics[0].net = "10.0.2.0/33";
    expect_err(&f, -DS_E_FORMAT, "CIDR");
    cfg_tdx(&f);
    f.nics[0].dhcp_start = "10.0.2.010";
    expect_err(&f, -DS_E_FORMAT, "dhcp_start");
    cfg_bridge(&f);
    f.nics[0].bridge = "br0,script=/tmp/x";
    expect_err(&f, -DS_E_FORMAT, "bridge name");
    cfg_bridge(&f);
    f.nics[2].netdev = "user,id=net22";
    expect_err(&f, -DS_E_FORMAT, "lacks id=net2");
    cfg_gpu(&f);
    f.gpus[1].slot = "9a:00.0,x-igd=on";
    expect_err(&f, -DS_E_FORMAT, "gpus[1]: bad PCI slot");
    cfg_gpu(&f);
    f.cfg.taskset_cpus = "0-3;rm";
    expect_err(&f, -DS_E_FORMAT, "cpulist");
    cfg_no_tee_kvm(&f);
    f.cfg.run_as_user = "-oProxy";
    expect_err(&f, -DS_E_FORMAT, "user name");
    cfg_tdx(&f);
    f.cfg.smbios.sys_serial = "x\ny";
    expect_err(&f, -DS_E_FORMAT, "smbios");
}

/* ---- VmConfig ---------------------------------------------------------------------------- */

static void test_vm_config(void **state)
{
    (void)state;
    struct fixture f;
    struct ds_qemu_error err = {{0}};
    char *json = NULL;
    cfg_tdx(&f);
    assert_int_equal(ds_qemu_vm_config_json(&f.cfg, IMAGE_HASH, &json, &err), 0);
    assert_string_equal(json, "{\"os_image_hash\":\"" IMAGE_HASH "\",\"cpu_count\":4,"
                              "\"memory_size\":4294967296,\"qemu_version\":\"9.1.0\","
                              "\"pci_hole64_size\":0,\"hugepages\":false,\"num_gpus\":0,"
                              "\"num_nvswitches\":0,\"hotplug_off\":false,"
                              "\"image\":\"dstack-0.5.3\",\"host_share_mode\":\"9p\","
                              "\"ovmf_variant\":\"pre202505\","
                              "\"tdx_attestation_variant\":\"lite\",\"spec_version\":1}");
    free(json);

    /* GPU config: effective (rounded) resources, device counts, optional keys. */
    cfg_gpu(&f);
    assert_int_equal(ds_qemu_vm_config_json(&f.cfg, IMAGE_HASH, &json, &err), 0);
    json_error_t jerr;
    json_t *o = json_loads(json, 0, &jerr);
    assert_non_null(o);
    assert_int_equal(json_integer_value(json_object_get(o, "cpu_count")), 6);
    assert_int_equal(json_integer_value(json_object_get(o, "memory_size")), 10240LL << 20);
    assert_int_equal(json_integer_value(json_object_get(o, "num_gpus")), 2);
    assert_int_equal(json_integer_value(json_object_get(o, "num_nvswitches")), 1);
    assert_int_equal(json_integer_value(json_object_get(o, "pci_hole64_size")), 0x20000000000LL);
    assert_true(json_is_true(json_object_get(o, "hugepages")));
    assert_true(json_is_true(json_object_get(o, "hotplug_off")));
    assert_null(json_object_get(o, "num_nics"));
    assert_null(json_object_get(o, "tdx_attestation_variant"));
    json_decref(o);
    free(json);

    /* explicit pic/single-pass, volumes, swtpm, vhd */
    cfg_no_tee_kvm(&f);
    assert_int_equal(ds_qemu_vm_config_json(&f.cfg, IMAGE_HASH, &json, &err), 0);
    o = json_loads(json, 0, &jerr);
    assert_non_null(o);
    assert_true(json_is_true(json_object_get(o, "pic")));
    assert_true(json_is_false(json_object_get(o, "qemu_single_pass_add_pages")));
    assert_int_equal(json_integer_value(json_object_get(o, "num_verity_volumes")), 1);
    assert_true(json_is_true(json_object_get(o, "swtpm")));
    assert_string_equal(json_string_value(json_object_get(o, "host_share_mode")), "vhd");
    assert_string_equal(json_string_value(json_object_get(o, "qemu_version")), "8.2.2");
    json_decref(o);
    free(json);

    cfg_bridge(&f);
    assert_int_equal(ds_qemu_vm_config_json(&f.cfg, IMAGE_HASH, &json, &err), 0);
    o = json_loads(json, 0, &jerr);
    assert_int_equal(json_integer_value(json_object_get(o, "num_nics")), 3);
    json_decref(o);
    free(json);

    /* negative: bad hash, invalid config */
    json = (char *)0x1;
    assert_int_equal(ds_qemu_vm_config_json(&f.cfg, "abc", &json, &err), -DS_E_FORMAT);
    assert_int_equal(ds_qemu_vm_config_json(&f.cfg, NULL, &json, &err), -DS_E_NOT_FOUND);
    f.cfg.vcpus = 0;
    assert_int_equal(ds_qemu_vm_config_json(&f.cfg, IMAGE_HASH, &json, &err), -ERANGE);
    assert_ptr_equal(json, (char *)0x1);
}

static void test_measure_rules(void **state)
{
    (void)state;
    bool pic = false, sp = true;
    assert_int_equal(ds_qemu_measure_rules("8.2.2", &pic, &sp), 0);
    assert_true(pic);
    assert_false(sp);
    assert_int_equal(ds_qemu_measure_rules("9.1.0", &pic, &sp), 0);
    assert_false(pic);
    assert_true(sp);
    assert_int_equal(ds_qemu_measure_rules("10.0", &pic, &sp), 0);
    assert_false(pic);
    assert_true(sp);
    assert_int_equal(ds_qemu_measure_rules("8.2.2+ds-0ubuntu1", &pic, &sp), 0);
    assert_true(pic);
    pic = false;
    assert_int_equal(ds_qemu_measure_rules("7.2.22", &pic, &sp), -DS_E_UNSUPPORTED);
    assert_false(pic);
    assert_int_equal(ds_qemu_measure_rules("9", &pic, &sp), -DS_E_FORMAT);
    assert_int_equal(ds_qemu_measure_rules("9.x", &pic, &sp), -DS_E_FORMAT);
    assert_int_equal(ds_qemu_measure_rules("", &pic, &sp), -DS_E_FORMAT);
    assert_int_equal(ds_qemu_measure_rules(NULL, &pic, &sp), -DS_E_FORMAT);
}

static void test_effective_resources(void **state)
{
    (void)state;
    struct fixture f;
    uint32_t v = 0;
    uint64_t m = 0;
    cfg_tdx(&f);
    assert_int_equal(ds_qemu_effective_resources(&f.cfg, &v, &m), 0);
    assert_int_equal(v, 4);
    assert_int_equal(m, 4096);
    cfg_tdx(&f);
    f.cfg.hugepages = true; /* one node: whole GiB, truncated */
    f.cfg.memory_mb = 3000;
    assert_int_equal(ds_qemu_effective_resources(&f.cfg, &v, &m), 0);
    assert_int_equal(v, 4);
    assert_int_equal(m, 2048);
    f.cfg.memory_mb = 512;
    assert_int_equal(ds_qemu_effective_resources(&f.cfg, &v, &m), -ERANGE);
}

static void test_mac_derive(void **state)
{
    (void)state;
    char mac[18];
    const char *id = "0b9d1bc2-5d7e-4a43-9c3f-6f4a7e0c1d2e";
    /* expected values computed independently with Python hashlib */
    assert_int_equal(ds_qemu_mac_derive(id, 0, NULL, mac), 0);
    assert_string_equal(mac, "fe:c0:29:0a:db:a9");
    assert_int_equal(ds_qemu_mac_derive(id, 2, "52:54", mac), 0);
    assert_string_equal(mac, "52:54:f5:17:89:2a");
    assert_int_equal(ds_qemu_mac_derive(id, 0, "52:54:00:11", mac), -DS_E_FORMAT);
    assert_int_equal(ds_qemu_mac_derive(id, 0, "5g", mac), -DS_E_FORMAT);
    assert_int_equal(ds_qemu_mac_derive(id, 0, "52:", mac), -DS_E_FORMAT);
}

/*
 * Helper mode for tests/integration/test_qemu_smoke.sh: print the no-TEE TCG command line for
 *   --smoke-argv QEMU_PATH QEMU_VERSION KERNEL INITRD WORKDIR CMDLINE
 * as NUL-terminated arguments, so the smoke boot runs exactly what the builder produces.
 */
static int smoke_argv(char **args)
{
    char share[4096], sock[4096], log[4096], qmp[4096];
    snprintf(share, sizeof(share), "%s/shared", args[4]);
    snprintf(sock, sizeof(sock), "%s/host-api.sock", args[4]);
    snprintf(log, sizeof(log), "%s/serial.log", args[4]);
    snprintf(qmp, sizeof(qmp), "%s/qmp.sock", args[4]);
    struct ds_qemu_nic nic = user_nic("02:00:00:00:00:01");
    struct ds_qemu_config cfg = {
        .qemu_path = args[0],
        .qemu_version = args[1],
        .platform = DS_QEMU_PLATFORM_NONE,
        .accel = DS_QEMU_ACCEL_TCG,
        .vcpus = 1,
        .memory_mb = 512,
        .kernel = args[2],
        .initrd = args[3],
        .cmdline = args[5],
        .share_mode = DS_QEMU_SHARE_9P,
        .share_path = share,
        .nics = &nic,
        .nic_count = 1,
        .host_api = DS_QEMU_HOST_API_SERIAL,
        .host_api_socket = sock,
        .serial_log = log,
        .qmp_socket = qmp,
        .smbios = {.sys_manufacturer = "dstack", .sys_product = "dstack"},
    };
    char **argv = NULL;
    size_t argc = 0;
    struct ds_qemu_error err = {{0}};
    int r = ds_qemu_build_argv(&cfg, &argv, &argc, &err);
    if (r < 0) {
        fprintf(stderr, "smoke-argv: %s (%s)\n", err.msg, ds_strerror(r));
        return 1;
    }
    for (size_t i = 0; i < argc; i++) {
        fwrite(argv[i], 1, strlen(argv[i]) + 1, stdout);
    }
    ds_qemu_argv_free(argv);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 8 && strcmp(argv[1], "--smoke-argv") == 0) {
        return smoke_argv(argv + 2);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden_tdx),          cmocka_unit_test(test_golden_no_tee_tcg),
        cmocka_unit_test(test_golden_no_tee_kvm),   cmocka_unit_test(test_golden_gpu),
        cmocka_unit_test(test_golden_bridge),       cmocka_unit_test(test_golden_ports),
        cmocka_unit_test(test_bad_paths),           cmocka_unit_test(test_resources),
        cmocka_unit_test(test_port_collisions),     cmocka_unit_test(test_unknown_platform),
        cmocka_unit_test(test_commas_escaped),      cmocka_unit_test(test_bad_fields),
        cmocka_unit_test(test_vm_config),           cmocka_unit_test(test_measure_rules),
        cmocka_unit_test(test_effective_resources), cmocka_unit_test(test_mac_derive),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
