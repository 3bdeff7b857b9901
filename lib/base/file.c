/* SPDX-License-Identifier: Apache-2.0 */
/* Whole-file read with a size cap, and crash-safe atomic replace (temp, fsync, rename). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dstack/base.h"

int ds_read_file(const char *path, size_t max_size, uint8_t **out, size_t *out_len)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ds_buf b;
    ds_buf_init(&b, max_size);
    uint8_t chunk[16384];
    int r = 0;
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof(chunk));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            break;
        }
        if (n == 0)
            break;
        r = ds_buf_append(&b, chunk, (size_t)n);
        if (r < 0)
            break;
    }
    close(fd);
    if (r < 0) {
        ds_buf_done(&b);
        return r;
    }
    ds_buf_steal(&b, out, out_len);
    return *out ? 0 : -ENOMEM;
}

int ds_write_file_atomic(const char *path, const void *data, size_t len, unsigned mode)
{
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16), *dcopy = strdup(path);
    int fd = -1, r = 0;
    if (!tmp || !dcopy) {
        r = -ENOMEM;
        goto out;
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    fd = mkostemp(tmp, O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    if (fchmod(fd, mode) < 0) {
        r = -errno;
        goto fail;
    }
    const uint8_t *p = data;
    size_t left = len;
    while (left) {
        ssize_t n = write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            r = -errno;
            goto fail;
        }
        p += n;
        left -= (size_t)n;
    }
    if (fsync(fd) < 0 || close(fd) < 0) {
        r = -errno;
        fd = -1;
        goto fail;
    }
    fd = -1;
    if (rename(tmp, path) < 0) {
        r = -errno;
        goto fail;
    }
    int dfd = open(dirname(dcopy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
    goto out;
fail:
    if (fd >= 0)
        close(fd);
    unlink(tmp);
out:
    free(tmp);
    free(dcopy);
    return r;
}
