/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The real-TDX TEE provider (spec attestation.md §6.4, §4.1, §4.3):
 * - quotes through configfs-tsm: lock inblob, read generation, write the 64 report-data
 *   bytes, wait for generation+1, read outblob, check generation did not move again;
 * - RTMR2/3 extension by writing the 48-byte digest to <measurements>/rtmr<N>:sha384, or the
 *   legacy TDX_CMD_EXTEND_RTMR ioctl on /dev/tdx_guest when that file does not exist;
 * - registers from <measurements>/{mrtd,rtmr<N>}:sha384, or from a quote when the kernel
 *   does not expose them;
 * - the event log: the CCEL ACPI table (boot events) plus the runtime events this provider
 *   appends to a JSON-lines file after each successful extension (under an flock, so
 *   concurrent extenders keep log and register order equal).
 * Every path can be overridden by environment variables (tee.h), which is also how the unit
 * test drives this file against a fake configfs tree.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "dstack/attest.h"
#include "tee/tee_provider.h"

#define TDX_DEFAULT_CONFIGFS    "/sys/kernel/config/tsm/report/com.intel.dcap"
#define TDX_DEFAULT_MEASUREMENT "/sys/devices/virtual/misc/tdx_guest/measurements"
#define TDX_DEFAULT_DEVICE      "/dev/tdx_guest"
#define TDX_DEFAULT_CCEL        "/sys/firmware/acpi/tables/data/CCEL"
#define TDX_DEFAULT_RUNTIME_LOG "/run/log/dstack/runtime_events.jsonl"
#define TDX_PROVIDER_PREFIX     "tdx_guest"
#define TDX_QUOTE_MIN_EXCLUSIVE 1020 /* §6.4: quote length must be in (1020, 8192) */
#define TDX_QUOTE_MAX_EXCLUSIVE 8192
#define TDX_GENERATION_MAX      32
#define TDX_PROVIDER_MAX        64
#define TDX_EBUSY_RETRIES       3
#define TDX_EBUSY_WAIT_MS       3000 /* three tries over about ten seconds */
#define TDX_GENERATION_WAIT_MS  5000
#define TDX_POLL_MS             10

/* Legacy extend ioctl (spec §4.3): _IOR('T', 3, struct {u8 data[48]; u8 index;}). */
struct tdx_extend_rtmr_req {
    uint8_t data[48];
    uint8_t index;
};
#define TDX_CMD_EXTEND_RTMR _IOR('T', 3, struct tdx_extend_rtmr_req)

struct tdx {
    char configfs[PATH_MAX];
    char measurements[PATH_MAX];
    char device[PATH_MAX];
    char ccel[PATH_MAX];
    char runtime_log[PATH_MAX];
};

static int set_path(char *dst, const char *env, const char *def)
{
    const char *v = getenv(env);
    if (!v || !*v) {
        v = def;
    }
    if (strlen(v) >= PATH_MAX) {
        return -ENAMETOOLONG;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int load_paths(struct tdx *t)
{
    DS_TRY(set_path(t->configfs, "DCAP_TDX_QUOTE_CONFIGFS_PATH", TDX_DEFAULT_CONFIGFS));
    DS_TRY(set_path(t->measurements, "DCAP_TDX_RTMR_SYSFS_PATH", TDX_DEFAULT_MEASUREMENT));
    DS_TRY(set_path(t->device, "DSTACK_TDX_GUEST_DEVICE", TDX_DEFAULT_DEVICE));
    DS_TRY(set_path(t->ccel, "DSTACK_CCEL_FILE", TDX_DEFAULT_CCEL));
    DS_TRY(set_path(t->runtime_log, "DSTACK_RUNTIME_EVENT_LOG", TDX_DEFAULT_RUNTIME_LOG));
    return 0;
}

static int join(char *out, const char *dir, const char *name)
{
    int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
    return (n < 0 || n >= PATH_MAX) ? -ENAMETOOLONG : 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* Read a small text file (at most max bytes) into buf as a C string. */
static int read_small(const char *path, char *buf, size_t max)
{
    uint8_t *data = NULL;
    size_t len = 0;
    DS_TRY(ds_read_file(path, max - 1, &data, &len));
    memcpy(buf, data, len);
    buf[len] = '\0';
    free(data);
    return 0;
}

static int provider_ok(const char *configfs)
{
    char path[PATH_MAX], prov[TDX_PROVIDER_MAX];
    DS_TRY(join(path, configfs, "provider"));
    DS_TRY(read_small(path, prov, sizeof(prov)));
    return strncmp(prov, TDX_PROVIDER_PREFIX, strlen(TDX_PROVIDER_PREFIX)) == 0 ? 0
                                                                                : -DS_E_UNSUPPORTED;
}

bool ds_tee_tdx_detect(void)
{
    struct tdx t;
    if (load_paths(&t) < 0) {
        return false;
    }
    return access(t.device, F_OK) == 0 || provider_ok(t.configfs) == 0;
}

int ds_tee_tdx_open(void **out_ctx, char *err, size_t err_size)
{
    struct tdx *t = calloc(1, sizeof(*t));
    if (!t) {
        return -ENOMEM;
    }
    int r = load_paths(t);
    if (r < 0) {
        goto out;
    }
    /* The report entry is created once per system (§6.4); another process may race us. */
    if (mkdir(t->configfs, 0700) < 0 && errno != EEXIST) {
        r = -errno;
        if (access(t->device, F_OK) == 0) {
            r = 0; /* extension and registers still work without configfs */
        } else if (err && err_size) {
            snprintf(err, err_size, "TDX: cannot create %s: %s", t->configfs, strerror(-r));
        }
        goto out;
    }
    r = provider_ok(t->configfs);
    if (r < 0 && err && err_size) {
        snprintf(err, err_size, "TDX: %s/provider is not \"%s\"", t->configfs, TDX_PROVIDER_PREFIX);
    }
out:
    if (r < 0) {
        free(t);
        return r;
    }
    *out_ctx = t;
    return 0;
}

static int read_generation(const char *configfs, unsigned long long *out)
{
    char path[PATH_MAX], buf[TDX_GENERATION_MAX];
    DS_TRY(join(path, configfs, "generation"));
    DS_TRY(read_small(path, buf, sizeof(buf)));
    char *end;
    errno = 0;
    unsigned long long v = strtoull(buf, &end, 10);
    if (errno || end == buf || (*end != '\0' && *end != '\n')) {
        return -DS_E_FORMAT;
    }
    *out = v;
    return 0;
}

static int write_inblob(int fd, const uint8_t report_data[DS_TEE_REPORT_DATA_SIZE])
{
    for (int attempt = 0;; attempt++) {
        ssize_t n = pwrite(fd, report_data, DS_TEE_REPORT_DATA_SIZE, 0);
        if (n == DS_TEE_REPORT_DATA_SIZE) {
            return 0;
        }
        if (n >= 0) {
            return -DS_E_IO;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno != EBUSY || attempt >= TDX_EBUSY_RETRIES) {
            return -errno;
        }
        sleep_ms(TDX_EBUSY_WAIT_MS);
    }
}

static int tdx_get_quote(void *ctx, const uint8_t report_data[DS_TEE_REPORT_DATA_SIZE],
                         uint8_t **out, size_t *out_len)
{
    struct tdx *t = ctx;
    char path[PATH_MAX];
    uint8_t *quote = NULL;
    size_t quote_len = 0;
    unsigned long long gen, now;
    int fd = -1, r = join(path, t->configfs, "inblob");
    if (r < 0) {
        goto out;
    }
    fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) {
        r = -errno;
        goto out;
    }
    /* Serialize quote requests of this system: configfs-tsm has one inblob/outblob pair. */
    if (flock(fd, LOCK_EX) < 0) {
        r = -errno;
        goto out;
    }
    r = read_generation(t->configfs, &gen);
    if (r < 0) {
        goto out;
    }
    r = write_inblob(fd, report_data);
    if (r < 0) {
        goto out;
    }
    for (int waited = 0;; waited += TDX_POLL_MS) {
        r = read_generation(t->configfs, &now);
        if (r < 0) {
            goto out;
        }
        if (now == gen + 1) {
            break;
        }
        if (now != gen || waited >= TDX_GENERATION_WAIT_MS) {
            r = now != gen ? -EBUSY : -ETIMEDOUT; /* someone else wrote inblob, or no answer */
            goto out;
        }
        sleep_ms(TDX_POLL_MS);
    }
    r = join(path, t->configfs, "outblob");
    if (r < 0) {
        goto out;
    }
    r = ds_read_file(path, TDX_QUOTE_MAX_EXCLUSIVE, &quote, &quote_len);
    if (r == -DS_E_LIMIT) {
        r = -DS_E_FORMAT;
    }
    if (r < 0) {
        goto out;
    }
    r = read_generation(t->configfs, &now);
    if (r < 0) {
        goto out;
    }
    if (now != gen + 1) {
        r = -EBUSY; /* outblob may belong to another request */
        goto out;
    }
    if (quote_len <= TDX_QUOTE_MIN_EXCLUSIVE || quote_len >= TDX_QUOTE_MAX_EXCLUSIVE) {
        r = -DS_E_FORMAT;
        goto out;
    }
    *out = quote;
    *out_len = quote_len;
    quote = NULL;
out:
    if (fd >= 0) {
        close(fd); /* releases the lock */
    }
    free(quote);
    return r;
}

static int extend_register(struct tdx *t, unsigned index, const uint8_t digest[DS_TEE_MR_SIZE])
{
    char name[32], path[PATH_MAX];
    snprintf(name, sizeof(name), "rtmr%u:sha384", index);
    DS_TRY(join(path, t->measurements, name));
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n;
        do {
            n = write(fd, digest, DS_TEE_MR_SIZE);
        } while (n < 0 && errno == EINTR);
        int r = n == DS_TEE_MR_SIZE ? 0 : n < 0 ? -errno : -DS_E_IO;
        close(fd);
        return r;
    }
    if (errno != ENOENT) {
        return -errno;
    }
    /* Older kernels: the ioctl on the guest device. */
    fd = open(t->device, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        return -errno;
    }
    struct tdx_extend_rtmr_req req = {.index = (uint8_t)index};
    memcpy(req.data, digest, DS_TEE_MR_SIZE);
    int r = ioctl(fd, TDX_CMD_EXTEND_RTMR, &req) < 0 ? -errno : 0;
    close(fd);
    return r;
}

static int append_line(int fd, const struct ds_event *ev)
{
    struct ds_event_log *one = NULL;
    char *json = NULL;
    size_t len = 0;
    int r = ds_eventlog_new(&one);
    if (r == 0) {
        r = ds_eventlog_append(one, ev);
    }
    if (r == 0) {
        r = ds_eventlog_to_json(one, DS_EVENTLOG_JSON_PREIMAGE, &json, &len);
    }
    if (r == 0) {
        json[len] = '\n'; /* replaces the NUL; the line is written with its length */
        const char *p = json;
        size_t left = len + 1;
        while (left && r == 0) {
            ssize_t n = write(fd, p, left);
            if (n < 0 && errno == EINTR) {
                continue;
            }
            r = n < 0 ? -errno : 0;
            if (n > 0) {
                p += n;
                left -= (size_t)n;
            }
        }
        if (r == 0 && fsync(fd) < 0) {
            r = -errno;
        }
    }
    free(json);
    ds_eventlog_free(one);
    return r;
}

static int tdx_extend(void *ctx, unsigned index, const uint8_t digest[DS_TEE_MR_SIZE],
                      const struct ds_event *ev)
{
    struct tdx *t = ctx;
    int fd = open(t->runtime_log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        return -errno;
    }
    /* Lock, extend, then log: the log only ever names extensions that happened, in the order
     * they happened (spec §4.4). */
    int r = flock(fd, LOCK_EX) < 0 ? -errno : 0;
    if (r == 0) {
        r = extend_register(t, index, digest);
    }
    if (r == 0) {
        r = append_line(fd, ev);
    }
    close(fd);
    return r;
}

static int read_mr(struct tdx *t, const char *name, uint8_t out[DS_TEE_MR_SIZE])
{
    char path[PATH_MAX];
    uint8_t *data = NULL;
    size_t len = 0;
    DS_TRY(join(path, t->measurements, name));
    DS_TRY(ds_read_file(path, DS_TEE_MR_SIZE + 1, &data, &len));
    int r = len == DS_TEE_MR_SIZE ? 0 : -DS_E_FORMAT;
    if (r == 0) {
        memcpy(out, data, DS_TEE_MR_SIZE);
    }
    free(data);
    return r;
}

static int tdx_read(void *ctx, struct ds_tee_registers *out)
{
    struct tdx *t = ctx;
    struct ds_tee_registers regs;
    int r = read_mr(t, "mrtd:sha384", regs.mrtd);
    for (unsigned i = 0; r == 0 && i < DS_TEE_RTMR_COUNT; i++) {
        char name[32];
        snprintf(name, sizeof(name), "rtmr%u:sha384", i);
        r = read_mr(t, name, regs.rtmr[i]);
    }
    if (r == -ENOENT) {
        /* No readable measurement files on this kernel: take the registers from a quote. */
        uint8_t zero[DS_TEE_REPORT_DATA_SIZE] = {0}, *quote = NULL;
        size_t quote_len = 0;
        struct ds_quote q;
        DS_TRY(tdx_get_quote(ctx, zero, &quote, &quote_len));
        r = ds_quote_parse(quote, quote_len, &q);
        if (r == 0 && q.tee_type != DS_TEE_TYPE_TDX) {
            r = -DS_E_FORMAT;
        }
        if (r == 0) {
            memcpy(regs.mrtd, q.td.mr_td, DS_TEE_MR_SIZE);
            memcpy(regs.rtmr, q.td.rtmr, sizeof(regs.rtmr));
        }
        free(quote);
    }
    if (r == 0) {
        *out = regs;
    }
    return r;
}

/* Append the events of every line of the runtime log to log. */
static int load_runtime_events(const char *path, struct ds_event_log *log)
{
    uint8_t *data = NULL;
    size_t len = 0;
    int r = ds_read_file(path, DS_EVENTLOG_MAX_JSON, &data, &len);
    if (r == -ENOENT) {
        return 0; /* nothing extended yet */
    }
    DS_TRY(r);
    size_t start = 0;
    for (size_t i = 0; i <= len && r == 0; i++) {
        if (i < len && data[i] != '\n') {
            continue;
        }
        if (i > start) {
            struct ds_event_log *line = NULL;
            r = ds_eventlog_parse_json((const char *)data + start, i - start, &line);
            for (size_t k = 0; r == 0 && k < line->count; k++) {
                r = ds_eventlog_append(log, &line->events[k]);
            }
            ds_eventlog_free(line);
        }
        start = i + 1;
    }
    free(data);
    return r;
}

static int tdx_event_log(void *ctx, char **out)
{
    struct tdx *t = ctx;
    uint8_t *ccel = NULL;
    size_t ccel_len = 0;
    struct ds_event_log *log = NULL;
    int fd = -1;
    int r = ds_read_file(t->ccel, DS_EVENTLOG_MAX_CCEL, &ccel, &ccel_len);
    if (r == 0) {
        r = ds_eventlog_parse_ccel(ccel, ccel_len, &log);
    }
    if (r < 0) {
        goto out;
    }
    /* A shared lock keeps a concurrent extender from handing us half a line. */
    fd = open(t->runtime_log, O_RDONLY | O_CLOEXEC);
    if (fd >= 0 && flock(fd, LOCK_SH) < 0) {
        r = -errno;
        goto out;
    }
    r = load_runtime_events(t->runtime_log, log);
    if (r == 0) {
        r = ds_eventlog_to_json(log, DS_EVENTLOG_JSON_PREIMAGE, out, NULL);
    }
out:
    if (fd >= 0) {
        close(fd);
    }
    free(ccel);
    ds_eventlog_free(log);
    return r;
}

static void tdx_free(void *ctx)
{
    free(ctx);
}

const struct ds_tee_ops ds_tee_tdx_ops = {
    .kind = "tdx",
    .simulated = false,
    .get_quote = tdx_get_quote,
    .extend = tdx_extend,
    .read = tdx_read,
    .event_log = tdx_event_log,
    .free = tdx_free,
};
