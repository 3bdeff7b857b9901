/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interface between the parts of `dstack-util setup` (spec host-side.md §3.3): the
 * boot flow itself (util_setup.c), the host API client that reports boot progress to the VMM
 * (util_setup_notify.c) and the encrypted data volume (util_setup_disk.c). Nothing here logs
 * key material; errors are returned as text for the boot.error report.
 */
#ifndef DSTACK_UTIL_SETUP_H
#define DSTACK_UTIL_SETUP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "dstack/keys.h"

#define SETUP_ERR_MAX         1024
#define SETUP_NOTIFY_BODY_MAX (4 * 1024) /* the VMM drops larger payloads */

/*
 * Notify{event, payload} to the VMM host API served on the Unix socket `socket_path`
 * (POST http://localhost/api/Notify, JSON). Returns 0, -DS_E_NETWORK (no answer / HTTP error)
 * or -ENOMEM. A failed notify never fails the boot by itself; the caller logs it.
 */
int setup_notify(const char *socket_path, const char *event, const char *payload);

enum setup_disk_backend {
    SETUP_DISK_AUTO = 0, /* LUKS2 if device-mapper and cryptsetup exist, else fscrypt */
    SETUP_DISK_LUKS,
    SETUP_DISK_FSCRYPT,
};

/* How the data volume is set up. */
struct setup_disk_opts {
    const char *device;      /* block device or regular image file */
    const char *mount_point; /* where the decrypted data directory appears */
    const char *work_dir;    /* private raw mount lives at <work_dir>/.data-fs */
    bool insecure_plaintext; /* explicit opt-out of encryption (loudly logged) */
    enum setup_disk_backend backend;
};

/* What setup_data_volume did, for unmounting on a later failure. */
struct setup_disk_state {
    bool fs_mounted;
    bool bind_mounted;
    bool initialized;    /* a new filesystem was created */
    bool luks_open;      /* /dev/mapper/dstack_data_disk is ours */
    const char *backend; /* "luks2", "fscrypt" or "plaintext" once chosen */
    char fs_dir[4096];
    char mount_point[4096];
};

/*
 * Choose the encryption backend (LUKS2 through cryptsetup when device-mapper and cryptsetup
 * exist and the device is a block device, else ext4 native encryption with a v2 policy),
 * create the filesystem on first use, mount it and expose the decrypted data directory at
 * o->mount_point. progress(msg) is called with "initializing data disk" / "mounting data
 * disk". Never falls back to plaintext unless o->insecure_plaintext. Returns 0 or a negative
 * error with err filled (the boot.error reason).
 */
int setup_data_volume(const struct setup_disk_opts *o, const uint8_t disk_key[DS_KEY_SIZE],
                      void (*progress)(void *ctx, const char *msg), void *progress_ctx,
                      struct setup_disk_state *st, char *err, size_t err_size);

/* Undo the mounts of setup_data_volume (after a later step failed). */
void setup_data_volume_undo(struct setup_disk_state *st);

/* `dstack-util setup` and `dstack-util notify` (util_setup.c), in main.c's table. */
int util_cmd_setup(int argc, char **argv);
void util_setup_usage(FILE *out);
int util_cmd_notify(int argc, char **argv);
void util_notify_usage(FILE *out);

/* ---- LUKS2 (util_setup_luks.c) ---- */

/* true when buf starts with the primary LUKS magic. */
bool setup_luks_has_header(const uint8_t *buf, size_t len);
/* Does the device start with a LUKS header? 0 or -errno. */
int setup_luks_probe(const char *dev, bool *out_luks);
/*
 * Validate a LUKS2 header area (the first 16 MiB of the device) against upstream's rules:
 * both binary headers and the JSON metadata. Returns 0 or -DS_E_FORMAT with err saying why.
 */
int setup_luks_validate(const uint8_t *area, size_t len, char *err, size_t n);
/*
 * (format: luksFormat first) read and validate the header area, then luksOpen with the
 * validated copy as --header; waits for the mapper device. 0 or negative with err.
 */
int setup_luks_open(const char *dev, const char *work_dir, const uint8_t key[DS_KEY_SIZE],
                    bool format, char *err, size_t n);
void setup_luks_close(void);
const char *setup_luks_mapper_path(void);

/* The filesystem name measured in the storage-fs event for this build ("ext4"). */
#define SETUP_STORAGE_FS "ext4"

#endif /* DSTACK_UTIL_SETUP_H */
