/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The encrypted data volume of `dstack-util setup` (spec host-side.md §3.3 steps 11-12).
 * Upstream puts LUKS2 (device-mapper) under ZFS/ext4. This build uses ext4 native encryption
 * (fscrypt, policy v2) instead, which needs no device-mapper and works on a loop-mounted image
 * file as a sandbox guest has:
 *   - first use (no ext4 superblock): `mkfs.ext4 -O encrypt`;
 *   - existing: `e2fsck -f -p` (exit 0/1 accepted);
 *   - mount the filesystem privately at <work>/.data-fs (a regular file through a loop device);
 *   - add the 64-byte master key HKDF(disk_crypt_key, "dstack-fscrypt-v2-master-key") with
 *     FS_IOC_ADD_ENCRYPTION_KEY; the kernel returns its identifier;
 *   - the directory <fs>/data gets (first use) or must already have (later boots) a v2 policy
 *     AES-256-XTS / AES-256-CTS, padding 32, with exactly that identifier: an unencrypted or
 *     differently-keyed directory is refused, never used;
 *   - bind-mount <fs>/data onto the mount point.
 * Nothing falls back to plaintext unless the caller passed --insecure-plaintext-data.
 * External tools are run with fixed argv (no shell).
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/fscrypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dstack/base.h"
#include "dstack/keys.h"
#include "log.h"
#include "util.h"
#include "util_setup.h"

#define FSCRYPT_RAW_KEY_SIZE 64 /* AES-256-XTS master key */
#define FSCRYPT_KDF_INFO     "dstack-fscrypt-v2-master-key"
#define EXT4_SB_OFFSET       1024
#define EXT4_MAGIC_OFFSET    (EXT4_SB_OFFSET + 56)
#define EXT4_MAGIC           0xEF53
#define DATA_DIR_NAME        "data"
#define FS_DIR_NAME          ".data-fs"

/* Run argv (argv[0] searched in PATH); returns the exit status, or a negative error. */
static int run_tool(char *const argv[])
{
    return util_run_tool((const char *const *)argv, NULL);
}

/* true when the device/image holds an ext4 (ext2/3/4) superblock. */
static int has_ext4(const char *dev, bool *out)
{
    int fd = open(dev, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    uint8_t m[2];
    ssize_t n = pread(fd, m, sizeof(m), EXT4_MAGIC_OFFSET);
    int e = errno;
    close(fd);
    if (n < 0) {
        return -e;
    }
    *out = n == 2 && (uint16_t)(m[0] | (m[1] << 8)) == EXT4_MAGIC;
    return 0;
}

static bool is_mount_point(const char *path)
{
    char parent[4200];
    struct stat a, b;
    snprintf(parent, sizeof(parent), "%s/..", path);
    return stat(path, &a) == 0 && stat(parent, &b) == 0 && a.st_dev != b.st_dev;
}

static int mkdir_p(const char *path, mode_t mode)
{
    char tmp[4096];
    size_t n = strlen(path);
    if (n == 0 || n >= sizeof(tmp)) {
        return -ENAMETOOLONG;
    }
    memcpy(tmp, path, n + 1);
    for (char *p = tmp + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(tmp, mode) < 0 && errno != EEXIST) {
                return -errno;
            }
            *p = '/';
        }
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST) {
        return -errno;
    }
    return 0;
}

/* Add the master key to the filesystem mounted at fs_dir; *id gets its identifier. */
static int add_key(const char *fs_dir, const uint8_t disk_key[DS_KEY_SIZE],
                   uint8_t id[FSCRYPT_KEY_IDENTIFIER_SIZE], char *err, size_t n)
{
    size_t sz = sizeof(struct fscrypt_add_key_arg) + FSCRYPT_RAW_KEY_SIZE;
    struct fscrypt_add_key_arg *arg = calloc(1, sz);
    if (!arg) {
        return -ENOMEM;
    }
    const struct ds_kdf_part part = {FSCRYPT_KDF_INFO, strlen(FSCRYPT_KDF_INFO)};
    int r = ds_kdf_derive(disk_key, DS_KEY_SIZE, &part, 1, arg->raw, FSCRYPT_RAW_KEY_SIZE);
    if (r < 0) {
        snprintf(err, n, "deriving the data volume key: %s", ds_strerror(r));
        goto out;
    }
    arg->key_spec.type = FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER;
    arg->raw_size = FSCRYPT_RAW_KEY_SIZE;
    int fd = open(fs_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        snprintf(err, n, "data volume: open %s: %s", fs_dir, strerror(errno));
        goto out;
    }
    if (ioctl(fd, FS_IOC_ADD_ENCRYPTION_KEY, arg) < 0) {
        r = -errno;
        snprintf(err, n,
                 "data volume: FS_IOC_ADD_ENCRYPTION_KEY: %s (the kernel or the filesystem "
                 "lacks ext4 encryption; refusing to store data in plaintext)",
                 strerror(errno));
        close(fd);
        goto out;
    }
    close(fd);
    memcpy(id, arg->key_spec.u.identifier, FSCRYPT_KEY_IDENTIFIER_SIZE);
    r = 0;
out:
    ds_wipe(arg, sz);
    free(arg);
    return r;
}

/* Create (fresh) or check (existing) the v2 policy of data_dir. */
static int ensure_policy(const char *data_dir, const uint8_t id[FSCRYPT_KEY_IDENTIFIER_SIZE],
                         char *err, size_t n)
{
    bool created = false;
    if (mkdir(data_dir, 0755) == 0) {
        created = true;
    } else if (errno != EEXIST) {
        snprintf(err, n, "data volume: mkdir %s: %s", data_dir, strerror(errno));
        return -errno;
    }
    int fd = open(data_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        snprintf(err, n, "data volume: open %s: %s", data_dir, strerror(e));
        return -e;
    }
    int r = 0;
    if (created) {
        struct fscrypt_policy_v2 p = {
            .version = FSCRYPT_POLICY_V2,
            .contents_encryption_mode = FSCRYPT_MODE_AES_256_XTS,
            .filenames_encryption_mode = FSCRYPT_MODE_AES_256_CTS,
            .flags = FSCRYPT_POLICY_FLAGS_PAD_32,
        };
        memcpy(p.master_key_identifier, id, FSCRYPT_KEY_IDENTIFIER_SIZE);
        if (ioctl(fd, FS_IOC_SET_ENCRYPTION_POLICY, &p) < 0) {
            r = -errno;
            snprintf(err, n, "data volume: FS_IOC_SET_ENCRYPTION_POLICY on %s: %s", data_dir,
                     strerror(errno));
        }
        goto out;
    }
    struct fscrypt_get_policy_ex_arg g;
    memset(&g, 0, sizeof(g));
    g.policy_size = sizeof(g.policy);
    if (ioctl(fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, &g) < 0) {
        r = -errno;
        if (errno == ENODATA) {
            r = -DS_E_POLICY;
            snprintf(err, n,
                     "data volume: %s exists but is NOT encrypted; refusing to use it (the "
                     "disk was not created by dstack-util or was tampered with)",
                     data_dir);
        } else {
            snprintf(err, n, "data volume: FS_IOC_GET_ENCRYPTION_POLICY_EX on %s: %s", data_dir,
                     strerror(errno));
        }
        goto out;
    }
    const struct fscrypt_policy_v2 *p = &g.policy.v2;
    if (g.policy.version != FSCRYPT_POLICY_V2 ||
        p->contents_encryption_mode != FSCRYPT_MODE_AES_256_XTS ||
        p->filenames_encryption_mode != FSCRYPT_MODE_AES_256_CTS ||
        p->flags != FSCRYPT_POLICY_FLAGS_PAD_32) {
        r = -DS_E_POLICY;
        snprintf(err, n,
                 "data volume: %s has an unexpected encryption policy (version %u, modes "
                 "%u/%u, flags %#x); refusing it",
                 data_dir, g.policy.version, p->contents_encryption_mode,
                 p->filenames_encryption_mode, p->flags);
        goto out;
    }
    if (!ds_ct_equal(p->master_key_identifier, id, FSCRYPT_KEY_IDENTIFIER_SIZE)) {
        char have[2 * FSCRYPT_KEY_IDENTIFIER_SIZE + 1], want[2 * FSCRYPT_KEY_IDENTIFIER_SIZE + 1];
        ds_hex_encode(p->master_key_identifier, FSCRYPT_KEY_IDENTIFIER_SIZE, have);
        ds_hex_encode(id, FSCRYPT_KEY_IDENTIFIER_SIZE, want);
        r = -DS_E_MISMATCH;
        snprintf(err, n,
                 "data volume: the data directory is encrypted with another key (key "
                 "identifier %s, this boot's disk key gives %s): a different app/instance or "
                 "key provider made this disk",
                 have, want);
    }
out:
    close(fd);
    return r;
}

void setup_data_volume_undo(struct setup_disk_state *st)
{
    if (st->bind_mounted && umount2(st->mount_point, 0) < 0) {
        log_warn("umount %s", st->mount_point);
    }
    if (st->fs_mounted && umount2(st->fs_dir, 0) < 0) {
        log_warn("umount %s", st->fs_dir);
    }
    if (st->luks_open) {
        setup_luks_close();
    }
    st->bind_mounted = st->fs_mounted = st->luks_open = false;
}

static bool tool_in_path(const char *name)
{
    const char *path = getenv("PATH");
    char buf[4200];
    if (!path) {
        path = "/usr/sbin:/usr/bin:/sbin:/bin";
    }
    while (*path) {
        const char *c = strchr(path, ':');
        size_t len = c ? (size_t)(c - path) : strlen(path);
        if (len > 0 && len < 4000) {
            snprintf(buf, sizeof(buf), "%.*s/%s", (int)len, path, name);
            if (access(buf, X_OK) == 0) {
                return true;
            }
        }
        path += len + (c ? 1 : 0);
    }
    return false;
}

/* The kernel has device-mapper when it registered the misc device (a /dev/mapper/control node
 * alone proves nothing: package scripts create it without the module). */
static bool have_device_mapper(void)
{
    FILE *f = fopen("/proc/misc", "re");
    char line[128];
    bool found = false;
    if (!f) {
        return false;
    }
    while (!found && fgets(line, sizeof(line), f)) {
        found = strstr(line, " device-mapper") != NULL;
    }
    fclose(f);
    return found && access("/dev/mapper/control", F_OK) == 0;
}

/* LUKS2 + ext4 on /dev/mapper/dstack_data_disk, mounted at the mount point. */
static int luks_volume(const struct setup_disk_opts *o, const uint8_t disk_key[DS_KEY_SIZE],
                       void (*progress)(void *ctx, const char *msg), void *progress_ctx,
                       struct setup_disk_state *st, char *err, size_t n)
{
    bool luks = false, ext4 = false;
    int r = setup_luks_probe(o->device, &luks);
    if (r == 0) {
        r = has_ext4(o->device, &ext4);
    }
    if (r < 0) {
        snprintf(err, n, "data disk %s: %s", o->device, ds_strerror(r));
        return r;
    }
    if (!luks && ext4) {
        snprintf(err, n,
                 "data disk %s holds a filesystem but no LUKS2 header; refusing to use or "
                 "overwrite it (made by the fscrypt backend or unencrypted)",
                 o->device);
        return -DS_E_POLICY;
    }
    st->backend = "luks2";
    progress(progress_ctx, luks ? "mounting data disk" : "initializing data disk");
    if ((r = setup_luks_open(o->device, o->work_dir, disk_key, !luks, err, n)) < 0) {
        return r;
    }
    st->luks_open = true;
    char mapper[256];
    snprintf(mapper, sizeof(mapper), "%s", setup_luks_mapper_path());
    if (!luks) {
        char *mkfs[] = {"mkfs.ext4", "-q", "-F", "-L", "dstack-data", mapper, NULL};
        r = run_tool(mkfs);
        st->initialized = true;
    } else {
        char *fsck[] = {"e2fsck", "-f", "-p", mapper, NULL};
        r = run_tool(fsck);
        r = r == 1 ? 0 : r;
    }
    if (r != 0) {
        snprintf(err, n, "data disk: %s on %s failed (%s %d)", luks ? "e2fsck" : "mkfs.ext4",
                 mapper, r < 0 ? "error" : "exit", r);
        goto fail;
    }
    char *mnt[] = {"mount", "-t", "ext4", "-o", "nodev,nosuid", mapper, st->mount_point, NULL};
    r = run_tool(mnt);
    if (r != 0) {
        snprintf(err, n, "data disk: mounting %s at %s failed", mapper, st->mount_point);
        goto fail;
    }
    st->bind_mounted = true;
    return 0;
fail:
    setup_data_volume_undo(st);
    return r < 0 ? r : -DS_E_IO;
}

int setup_data_volume(const struct setup_disk_opts *o, const uint8_t disk_key[DS_KEY_SIZE],
                      void (*progress)(void *ctx, const char *msg), void *progress_ctx,
                      struct setup_disk_state *st, char *err, size_t n)
{
    struct stat sb;
    char data_dir[4200];
    uint8_t id[FSCRYPT_KEY_IDENTIFIER_SIZE];
    int r;
    memset(st, 0, sizeof(*st));
    if (stat(o->device, &sb) < 0) {
        snprintf(err, n, "data disk %s: %s", o->device, strerror(errno));
        return -errno;
    }
    bool regular = S_ISREG(sb.st_mode);
    if (!regular && !S_ISBLK(sb.st_mode)) {
        snprintf(err, n, "data disk %s: neither a block device nor a regular image file",
                 o->device);
        return -EINVAL;
    }
    if (snprintf(st->fs_dir, sizeof(st->fs_dir), "%s/" FS_DIR_NAME, o->work_dir) >=
            (int)sizeof(st->fs_dir) ||
        snprintf(st->mount_point, sizeof(st->mount_point), "%s", o->mount_point) >=
            (int)sizeof(st->mount_point)) {
        snprintf(err, n, "data disk: path too long");
        return -ENAMETOOLONG;
    }
    snprintf(data_dir, sizeof(data_dir), "%s/" DATA_DIR_NAME, st->fs_dir);
    if ((r = mkdir_p(st->fs_dir, 0700)) < 0 || (r = mkdir_p(o->mount_point, 0755)) < 0) {
        snprintf(err, n, "data disk: creating mount directories: %s", ds_strerror(r));
        return r;
    }
    if (is_mount_point(st->fs_dir) || is_mount_point(o->mount_point)) {
        snprintf(err, n, "data disk: %s or %s is already mounted (setup ran twice this boot?)",
                 st->fs_dir, o->mount_point);
        return -EBUSY;
    }
    bool use_luks = false;
    if (!o->insecure_plaintext) {
        use_luks =
            o->backend == SETUP_DISK_LUKS ||
            (o->backend == SETUP_DISK_AUTO && have_device_mapper() && tool_in_path("cryptsetup"));
    }
    if (use_luks) {
        return luks_volume(o, disk_key, progress, progress_ctx, st, err, n);
    }
    bool exists = false, luks = false;
    if ((r = setup_luks_probe(o->device, &luks)) == 0 && luks) {
        snprintf(err, n,
                 "data disk %s is a LUKS2 volume but this guest has no device-mapper / "
                 "cryptsetup to open it; refusing to reformat it",
                 o->device);
        return -DS_E_UNSUPPORTED;
    }
    st->backend = o->insecure_plaintext ? "plaintext" : "fscrypt";
    if ((r = has_ext4(o->device, &exists)) < 0) {
        snprintf(err, n, "data disk %s: %s", o->device, ds_strerror(r));
        return r;
    }
    char dev[4096];
    snprintf(dev, sizeof(dev), "%s", o->device);
    if (!exists) {
        progress(progress_ctx, "initializing data disk");
        char *mkfs[] = {"mkfs.ext4",
                        "-q",
                        "-F",
                        "-L",
                        "dstack-data",
                        "-O",
                        o->insecure_plaintext ? "^encrypt" : "encrypt",
                        dev,
                        NULL};
        r = run_tool(mkfs);
        if (r != 0) {
            snprintf(err, n, "data disk: mkfs.ext4 %s failed (%s %d)", dev,
                     r < 0 ? "error" : "exit", r);
            return r < 0 ? r : -DS_E_IO;
        }
        st->initialized = true;
    } else {
        progress(progress_ctx, "mounting data disk");
        char *fsck[] = {"e2fsck", "-f", "-p", dev, NULL};
        r = run_tool(fsck);
        if (r != 0 && r != 1) {
            snprintf(err, n, "data disk: e2fsck %s failed (%s %d)", dev, r < 0 ? "error" : "exit",
                     r);
            return r < 0 ? r : -DS_E_IO;
        }
    }
    char *mnt[] = {
        "mount", "-t",       "ext4", "-o", regular ? "loop,nodev,nosuid" : "nodev,nosuid",
        dev,     st->fs_dir, NULL};
    r = run_tool(mnt);
    if (r != 0) {
        snprintf(err, n, "data disk: mounting %s at %s failed (%s %d)", dev, st->fs_dir,
                 r < 0 ? "error" : "exit", r);
        return r < 0 ? r : -DS_E_IO;
    }
    st->fs_mounted = true;
    if (o->insecure_plaintext) {
        log_warnx("!!! --insecure-plaintext-data: the data volume is NOT ENCRYPTED; the host "
                  "can read and modify everything stored under %s !!!",
                  o->mount_point);
        if (mkdir(data_dir, 0755) < 0 && errno != EEXIST) {
            r = -errno;
            snprintf(err, n, "data volume: mkdir %s: %s", data_dir, strerror(errno));
            goto fail;
        }
    } else {
        if ((r = add_key(st->fs_dir, disk_key, id, err, n)) < 0 ||
            (r = ensure_policy(data_dir, id, err, n)) < 0) {
            goto fail;
        }
    }
    if (mount(data_dir, o->mount_point, NULL, MS_BIND, NULL) < 0) {
        r = -errno;
        snprintf(err, n, "data volume: bind-mounting %s on %s: %s", data_dir, o->mount_point,
                 strerror(errno));
        goto fail;
    }
    st->bind_mounted = true;
    return 0;
fail:
    setup_data_volume_undo(st);
    return r;
}
