/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validation of every input of the QEMU command-line builder (include/dstack/vmm_qemu.h):
 * paths, names, addresses, MACs, PCI slots and resource numbers are checked here once, so the
 * builder in qemu_argv.c only formats values already known to be well-formed. Each check
 * returns the specific error the header documents and names the offending field.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vmm/qemu_internal.h"

int qemu_fail(struct ds_qemu_error *err, int code, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

static bool has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            return true;
        }
    }
    return false;
}

int qemu_check_path(const char *field, const char *path, bool required, struct ds_qemu_error *err)
{
    if (!path || !*path) {
        return required ? qemu_fail(err, -DS_E_NOT_FOUND, "%s: missing", field) : 0;
    }
    size_t n = strnlen(path, DS_QEMU_PATH_MAX + 1);
    if (n > DS_QEMU_PATH_MAX) {
        return qemu_fail(err, -DS_E_FORMAT, "%s: path too long", field);
    }
    if (path[0] != '/') {
        return qemu_fail(err, -DS_E_FORMAT, "%s: path must be absolute", field);
    }
    if (has_control(path)) {
        return qemu_fail(err, -DS_E_FORMAT, "%s: control character in path", field);
    }
    return 0;
}

int qemu_check_text(const char *field, const char *s, size_t max, struct ds_qemu_error *err)
{
    if (!s) {
        return 0;
    }
    if (strnlen(s, max + 1) > max) {
        return qemu_fail(err, -DS_E_FORMAT, "%s: too long", field);
    }
    if (has_control(s)) {
        return qemu_fail(err, -DS_E_FORMAT, "%s: control character", field);
    }
    return 0;
}

/* Every character of s is in the set, s is 1..max long. */
static bool only_chars(const char *s, const char *set, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max) {
        return false;
    }
    return strspn(s, set) == n;
}

#define HEX_LOWER "0123456789abcdef"
#define HEX_ANY   "0123456789abcdefABCDEF"
#define DIGITS    "0123456789"

int qemu_check_mac(const char *field, const char *mac, struct ds_qemu_error *err)
{
    if (!mac || !*mac) {
        return qemu_fail(err, -DS_E_NOT_FOUND, "%s: missing", field);
    }
    if (strlen(mac) != 17) {
        return qemu_fail(err, -DS_E_FORMAT, "%s: not a MAC address", field);
    }
    for (size_t i = 0; i < 17; i++) {
        bool colon = i % 3 == 2;
        if (colon ? mac[i] != ':' : !strchr(HEX_LOWER, mac[i])) {
            return qemu_fail(err, -DS_E_FORMAT, "%s: not a lowercase MAC address", field);
        }
    }
    return 0;
}

/* Dotted-quad IPv4 address, each part 0..255 without leading zeros beyond "0". */
bool qemu_is_ipv4(const char *s)
{
    int parts = 0;
    const char *p = s;
    while (parts < 4) {
        if (*p < '0' || *p > '9') {
            return false;
        }
        unsigned v = 0;
        int digits = 0;
        const char *start = p;
        while (*p >= '0' && *p <= '9') {
            v = v * 10 + (unsigned)(*p - '0');
            digits++;
            p++;
            if (digits > 3) {
                return false;
            }
        }
        if (v > 255 || (digits > 1 && *start == '0')) {
            return false;
        }
        parts++;
        if (parts < 4) {
            if (*p != '.') {
                return false;
            }
            p++;
        }
    }
    return *p == '\0';
}

static bool is_cidr(const char *s)
{
    char tmp[32];
    const char *slash = strchr(s, '/');
    if (!slash || (size_t)(slash - s) >= sizeof(tmp)) {
        return false;
    }
    memcpy(tmp, s, (size_t)(slash - s));
    tmp[slash - s] = '\0';
    if (!qemu_is_ipv4(tmp) || !only_chars(slash + 1, DIGITS, 2)) {
        return false;
    }
    int bits = qemu_atoi_bounded(slash + 1);
    return bits >= 0 && bits <= 32;
}

int qemu_atoi_bounded(const char *s)
{
    int v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        if (v > 100000) {
            return -1;
        }
        v = v * 10 + (*s - '0');
    }
    return *s ? -1 : v;
}

/* Linux interface names: 1..15 of [A-Za-z0-9_.-]. */
static bool is_ifname(const char *s)
{
    return only_chars(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-", 15) &&
           s[0] != '-';
}

int qemu_check_nic(size_t i, const struct ds_qemu_nic *nic, struct ds_qemu_error *err)
{
    char field[32];
    snprintf(field, sizeof(field), "nics[%zu]", i);
    int r = qemu_check_mac(field, nic->mac, err);
    if (r < 0) {
        return r;
    }
    switch (nic->mode) {
    case DS_QEMU_NET_USER:
        if (!nic->net || !nic->dhcp_start) {
            return qemu_fail(err, -DS_E_NOT_FOUND, "%s: user mode needs net and dhcp_start", field);
        }
        if (!is_cidr(nic->net)) {
            return qemu_fail(err, -DS_E_FORMAT, "%s: net is not an IPv4 CIDR", field);
        }
        if (!qemu_is_ipv4(nic->dhcp_start)) {
            return qemu_fail(err, -DS_E_FORMAT, "%s: dhcp_start is not an IPv4 address", field);
        }
        return 0;
    case DS_QEMU_NET_BRIDGE:
        if (!nic->bridge || !*nic->bridge) {
            return qemu_fail(err, -DS_E_NOT_FOUND, "%s: bridge mode needs a bridge", field);
        }
        if (!is_ifname(nic->bridge)) {
            return qemu_fail(err, -DS_E_FORMAT, "%s: bad bridge name", field);
        }
        return 0;
    case DS_QEMU_NET_TAP:
        if (!nic->tap || !*nic->tap) {
            return qemu_fail(err, -DS_E_NOT_FOUND, "%s: tap mode needs a tap name", field);
        }
        if (!is_ifname(nic->tap)) {
            return qemu_fail(err, -DS_E_FORMAT, "%s: bad tap name", field);
        }
        return 0;
    case DS_QEMU_NET_CUSTOM: {
        if (!nic->netdev || !*nic->netdev) {
            return qemu_fail(err, -DS_E_NOT_FOUND, "%s: custom mode needs a netdev", field);
        }
        r = qemu_check_text(field, nic->netdev, DS_QEMU_STR_MAX, err);
        if (r < 0) {
            return r;
        }
        /* §1.2: the raw netdev "must contain id=net<i>" (as a whole option). */
        char want[32];
        snprintf(want, sizeof(want), "id=net%zu", i);
        size_t wl = strlen(want);
        for (const char *p = nic->netdev; (p = strstr(p, want)); p++) {
            bool starts = p == nic->netdev || p[-1] == ',';
            bool ends = p[wl] == '\0' || p[wl] == ',';
            if (starts && ends) {
                return 0;
            }
        }
        return qemu_fail(err, -DS_E_FORMAT, "%s: custom netdev lacks %s", field, want);
    }
    }
    return qemu_fail(err, -DS_E_UNSUPPORTED, "%s: unknown network mode", field);
}

int qemu_check_ports(const struct ds_qemu_config *cfg, struct ds_qemu_error *err)
{
    if (cfg->port_count > DS_QEMU_PORT_MAX) {
        return qemu_fail(err, -ERANGE, "ports: more than %u", DS_QEMU_PORT_MAX);
    }
    if (cfg->port_count > 0) {
        bool have_user = false;
        for (size_t i = 0; i < cfg->nic_count; i++) {
            have_user |= cfg->nics[i].mode == DS_QEMU_NET_USER;
        }
        if (!have_user) {
            return qemu_fail(err, -DS_E_UNSUPPORTED, "ports: port mapping needs a user NIC");
        }
    }
    for (size_t i = 0; i < cfg->port_count; i++) {
        const struct ds_qemu_port *p = &cfg->ports[i];
        if (!p->protocol || (strcmp(p->protocol, "tcp") != 0 && strcmp(p->protocol, "udp") != 0)) {
            return qemu_fail(err, -DS_E_FORMAT, "ports[%zu]: protocol must be tcp or udp", i);
        }
        if (!p->address || !qemu_is_ipv4(p->address)) {
            return qemu_fail(err, -DS_E_FORMAT, "ports[%zu]: address is not IPv4", i);
        }
        if (p->host_port == 0 || p->vm_port == 0) {
            return qemu_fail(err, -ERANGE, "ports[%zu]: port 0", i);
        }
        for (size_t j = 0; j < i; j++) {
            const struct ds_qemu_port *q = &cfg->ports[j];
            bool any = strcmp(p->address, "0.0.0.0") == 0 || strcmp(q->address, "0.0.0.0") == 0;
            if (q->host_port == p->host_port && strcmp(q->protocol, p->protocol) == 0 &&
                (any || strcmp(q->address, p->address) == 0)) {
                return qemu_fail(err, -EADDRINUSE, "ports[%zu]: %s %s:%u collides with ports[%zu]",
                                 i, p->protocol, p->address, (unsigned)p->host_port, j);
            }
        }
    }
    return 0;
}

int qemu_check_pci(const char *field, size_t i, const struct ds_qemu_pci_dev *d,
                   struct ds_qemu_error *err)
{
    /* "bb:dd.f" or "dddd:bb:dd.f": hex digits, ':' and '.' only (upstream's check). */
    if (!d->slot || !only_chars(d->slot, HEX_ANY ":.", 16) || !strchr(d->slot, ':') ||
        !strchr(d->slot, '.')) {
        return qemu_fail(err, -DS_E_FORMAT, "%s[%zu]: bad PCI slot", field, i);
    }
    if (d->numa_node > 1023) {
        return qemu_fail(err, -ERANGE, "%s[%zu]: NUMA node out of range", field, i);
    }
    return 0;
}

int qemu_check_user(const char *user, struct ds_qemu_error *err)
{
    if (!user || !*user) {
        return 0;
    }
    if (!only_chars(user, "abcdefghijklmnopqrstuvwxyz0123456789_-", 32) || user[0] == '-' ||
        (user[0] >= '0' && user[0] <= '9')) {
        return qemu_fail(err, -DS_E_FORMAT, "run_as_user: not a user name");
    }
    return 0;
}

int qemu_check_cpulist(const char *cpus, struct ds_qemu_error *err)
{
    if (!cpus || !*cpus) {
        return 0;
    }
    if (!only_chars(cpus, DIGITS ",-", 256) || !strchr(DIGITS, cpus[0]) ||
        !strchr(DIGITS, cpus[strlen(cpus) - 1])) {
        return qemu_fail(err, -DS_E_FORMAT, "taskset_cpus: not a cpulist");
    }
    return 0;
}

int qemu_parse_version(const char *v, unsigned *out_major, unsigned *out_minor)
{
    if (!v) {
        return -DS_E_FORMAT;
    }
    unsigned part[2] = {0, 0};
    const char *p = v;
    for (int k = 0; k < 2; k++) {
        int digits = 0;
        while (*p >= '0' && *p <= '9') {
            if (++digits > 4) {
                return -DS_E_FORMAT;
            }
            part[k] = part[k] * 10 + (unsigned)(*p - '0');
            p++;
        }
        if (digits == 0) {
            return -DS_E_FORMAT;
        }
        if (k == 0) {
            if (*p != '.') {
                return -DS_E_FORMAT;
            }
            p++;
        }
    }
    /* Optional ".patch", then anything after '+' or '-' (distribution suffixes). */
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) {
            return -DS_E_FORMAT;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (*p != '\0' && *p != '+' && *p != '-') {
        return -DS_E_FORMAT;
    }
    if (has_control(v) || strlen(v) > 64) {
        return -DS_E_FORMAT;
    }
    *out_major = part[0];
    *out_minor = part[1];
    return 0;
}
