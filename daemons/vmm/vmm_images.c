/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Guest image directories (host-side.md §1.6): `<image path>/<name>/metadata.json` names the
 * kernel, initrd, bios, rootfs and optional hda inside the directory; digest.txt holds the
 * os_image_hash. Every artifact path is canonicalised and must stay inside the image directory
 * and be a regular file; a missing `version` is guessed from the directory name
 * (dstack-dev-X.Y.Z / dstack-X.Y.Z). ListImages lists every directory that loads.
 */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "vmm.h"

bool vmm_image_name_valid(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > VMM_IMAGE_NAME_MAX || strstr(name, "..") || name[0] == '.') {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == '-')) {
            return false;
        }
    }
    return true;
}

void vmm_image_free(struct vmm_image *img)
{
    if (!img) {
        return;
    }
    char **s[] = {&img->name,       &img->dir,     &img->metadata,     &img->kernel,
                  &img->initrd,     &img->bios,    &img->rootfs,       &img->hda,
                  &img->cmdline,    &img->version, &img->git_revision, &img->os_image_hash,
                  &img->rootfs_hash};
    for (size_t i = 0; i < DS_ARRAY_SIZE(s); i++) {
        free(*s[i]);
    }
    free(img);
}

/* Resolve metadata key `key` to an absolute regular file inside dir; NULL value -> *out NULL. */
static int artifact(const json_t *meta, const char *key, const char *dir, bool required, char **out,
                    char *err, size_t err_size)
{
    const json_t *v = json_object_get(meta, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            snprintf(err, err_size, "metadata.json: missing \"%s\"", key);
            return -DS_E_FORMAT;
        }
        return 0;
    }
    if (!json_is_string(v) || !json_string_value(v)[0]) {
        snprintf(err, err_size, "metadata.json: \"%s\" must be a file name", key);
        return -DS_E_FORMAT;
    }
    char joined[PATH_MAX];
    char real[PATH_MAX];
    int n = snprintf(joined, sizeof(joined), "%s/%s", dir, json_string_value(v));
    if (n < 0 || (size_t)n >= sizeof(joined)) {
        snprintf(err, err_size, "metadata.json: \"%s\": path too long", key);
        return -DS_E_FORMAT;
    }
    if (!realpath(joined, real)) {
        snprintf(err, err_size, "metadata.json: %s \"%s\": %s", key, json_string_value(v),
                 strerror(errno));
        return -DS_E_NOT_FOUND;
    }
    size_t dl = strlen(dir);
    struct stat st;
    if (strncmp(real, dir, dl) != 0 || real[dl] != '/' || stat(real, &st) < 0 ||
        !S_ISREG(st.st_mode)) {
        snprintf(err, err_size, "metadata.json: %s \"%s\" is not a file inside the image", key,
                 json_string_value(v));
        return -DS_E_FORMAT;
    }
    *out = strdup(real);
    return *out ? 0 : -ENOMEM;
}

static char *str_or(const json_t *meta, const char *key, const char *def)
{
    const json_t *v = json_object_get(meta, key);
    return strdup(json_is_string(v) ? json_string_value(v) : def);
}

static char *guess_version(const char *name)
{
    const char *p = NULL;
    if (strncmp(name, "dstack-dev-", 11) == 0) {
        p = name + 11;
    } else if (strncmp(name, "dstack-", 7) == 0) {
        p = name + 7;
    }
    if (!p || !(*p >= '0' && *p <= '9')) {
        return strdup("");
    }
    return strdup(p);
}

int vmm_image_load(const char *image_path, const char *name, struct vmm_image **out, char *err,
                   size_t err_size)
{
    struct vmm_image *img = NULL;
    json_t *meta = NULL;
    uint8_t *text = NULL;
    size_t text_len = 0;
    char path[PATH_MAX];
    char real[PATH_MAX];
    int r;

    if (!vmm_image_name_valid(name)) {
        snprintf(err, err_size, "Invalid image name: \"%.80s\"", name);
        return -DS_E_FORMAT;
    }
    r = snprintf(path, sizeof(path), "%s/%s", image_path, name);
    if (r < 0 || (size_t)r >= sizeof(path) || !realpath(path, real)) {
        snprintf(err, err_size, "Image not found: %s", name);
        return -DS_E_NOT_FOUND;
    }
    r = snprintf(path, sizeof(path), "%s/metadata.json", real);
    if (r < 0 || (size_t)r >= sizeof(path)) {
        return -ENAMETOOLONG;
    }
    r = ds_read_file(path, VMM_METADATA_MAX, &text, &text_len);
    if (r < 0) {
        snprintf(err, err_size, "Image not found: %s (metadata.json: %s)", name, ds_strerror(r));
        r = r == -ENOENT ? -DS_E_NOT_FOUND : r;
        goto out;
    }
    json_error_t je;
    meta = json_loadb((const char *)text, text_len, JSON_REJECT_DUPLICATES, &je);
    if (!json_is_object(meta)) {
        snprintf(err, err_size, "Image %s: metadata.json is not a JSON object", name);
        r = -DS_E_FORMAT;
        goto out;
    }
    img = calloc(1, sizeof(*img));
    if (!img) {
        r = -ENOMEM;
        goto out;
    }
    img->name = strdup(name);
    img->dir = strdup(real);
    img->metadata = strndup((const char *)text, text_len);
    if (!img->name || !img->dir || !img->metadata) {
        r = -ENOMEM;
        goto out;
    }
    char sub[VMM_ERR_MAX];
    if ((r = artifact(meta, "kernel", real, true, &img->kernel, sub, sizeof(sub))) < 0 ||
        (r = artifact(meta, "initrd", real, true, &img->initrd, sub, sizeof(sub))) < 0 ||
        (r = artifact(meta, "bios", real, false, &img->bios, sub, sizeof(sub))) < 0 ||
        (r = artifact(meta, "rootfs", real, false, &img->rootfs, sub, sizeof(sub))) < 0 ||
        (r = artifact(meta, "hda", real, false, &img->hda, sub, sizeof(sub))) < 0) {
        snprintf(err, err_size, "Image %s: %s", name, sub);
        goto out;
    }
    img->cmdline = str_or(meta, "cmdline", "");
    img->git_revision = str_or(meta, "git_revision", "");
    img->rootfs_hash = str_or(meta, "rootfs_hash", "");
    const json_t *ver = json_object_get(meta, "version");
    img->version = json_is_string(ver) ? strdup(json_string_value(ver)) : guess_version(name);
    img->shared_ro = json_is_true(json_object_get(meta, "shared_ro"));
    img->is_dev = json_is_true(json_object_get(meta, "is_dev"));
    if (!img->cmdline || !img->git_revision || !img->rootfs_hash || !img->version) {
        r = -ENOMEM;
        goto out;
    }
    /* digest.txt = os_image_hash: 64 hex (surrounding whitespace ignored) */
    free(text);
    text = NULL;
    r = snprintf(path, sizeof(path), "%s/digest.txt", real);
    if (r > 0 && (size_t)r < sizeof(path) && ds_read_file(path, 4096, &text, &text_len) == 0) {
        size_t b = 0, e = text_len;
        while (b < e && (text[b] == ' ' || text[b] == '\n' || text[b] == '\r' || text[b] == '\t')) {
            b++;
        }
        while (e > b && (text[e - 1] == ' ' || text[e - 1] == '\n' || text[e - 1] == '\r' ||
                         text[e - 1] == '\t')) {
            e--;
        }
        uint8_t digest[32];
        if (ds_hex_decode((const char *)text + b, e - b, digest, sizeof(digest)) < 0) {
            snprintf(err, err_size, "Image %s: digest.txt is not 64 hex digits", name);
            r = -DS_E_FORMAT;
            goto out;
        }
        img->os_image_hash = ds_hex_strdup(digest, sizeof(digest));
        if (!img->os_image_hash) {
            r = -ENOMEM;
            goto out;
        }
    }
    *out = img;
    img = NULL;
    r = 0;
out:
    vmm_image_free(img);
    json_decref(meta);
    free(text);
    return r;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

json_t *vmm_images_list(const char *image_path)
{
    json_t *arr = json_array();
    DIR *d = opendir(image_path);
    char *names[VMM_IMAGES_MAX];
    size_t count = 0;
    if (!arr || !d) {
        if (d) {
            closedir(d);
        }
        return arr;
    }
    struct dirent *de;
    while ((de = readdir(d)) && count < VMM_IMAGES_MAX) {
        if (de->d_name[0] == '.' || !vmm_image_name_valid(de->d_name)) {
            continue;
        }
        names[count] = strdup(de->d_name);
        if (names[count]) {
            count++;
        }
    }
    closedir(d);
    qsort(names, count, sizeof(names[0]), cmp_str);
    for (size_t i = 0; i < count; i++) {
        struct vmm_image *img = NULL;
        char err[VMM_ERR_MAX];
        if (vmm_image_load(image_path, names[i], &img, err, sizeof(err)) == 0) {
            json_array_append_new(arr, json_pack("{s:s,s:s,s:s,s:b}", "name", img->name,
                                                 "description", img->metadata, "version",
                                                 img->version, "is_dev", img->is_dev));
            vmm_image_free(img);
        }
        free(names[i]);
    }
    return arr;
}
