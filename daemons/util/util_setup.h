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

/* How the data volume is set up. */
struct setup_disk_opts {
    const char *device;      /* block device or regular image file */
    const char *mount_point; /* where the decrypted data directory appears */
    const char *work_dir;    /* private raw mount lives at <work_dir>/.data-fs */
    bool insecure_plaintext; /* explicit opt-out of encryption (loudly logged) */
};

/* What setup_data_volume did, for unmounting on a later failure. */
struct setup_disk_state {
    bool fs_mounted;
    bool bind_mounted;
    bool initialized; /* a new filesystem was created */
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

/* The filesystem name measured in the storage-fs event for this build ("ext4"). */
#define SETUP_STORAGE_FS "ext4"

#endif /* DSTACK_UTIL_SETUP_H */
