/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Validation of what a Vmm request names before anything is written (host-side.md §1.3): VM
 * names and ids, and port mappings (protocol, range policy, default address, duplicates within
 * a list; vmm_api.c checks across VMs with vmm_port_conflict). Pure functions over JSON values:
 * no logging, no I/O, so tests/fuzz/fuzz_vmm_requests.c compiles this file in directly.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vmm.h"

bool vmm_vm_name_valid(const char *name)
{
    /* upstream: [A-Za-z0-9-_. @~!$^()], non-empty */
    size_t n = strlen(name);
    if (n == 0 || n > VMM_NAME_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  strchr("-_. @~!$^()", c) != NULL;
        if (!ok) {
            return false;
        }
    }
    return true;
}

bool vmm_vm_id_valid(const char *id)
{
    size_t n = strlen(id);
    if (n == 0 || n > VMM_ID_MAX) {
        return false;
    }
    for (size_t i = 0; i < n; i++) {
        char c = id[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-')) {
            return false;
        }
    }
    return true;
}

void vmm_ports_free(struct vmm_ports *p)
{
    if (!p) {
        return;
    }
    free(p->items);
    p->items = NULL;
    p->count = 0;
}

static bool is_wildcard(const char *a)
{
    return a[0] == '\0' || strcmp(a, "0.0.0.0") == 0 || strcmp(a, "::") == 0;
}

bool vmm_port_conflict(const struct vmm_port_map *a, const struct vmm_port_map *b)
{
    if (strcmp(a->protocol, b->protocol) != 0 || a->from != b->from) {
        return false;
    }
    return is_wildcard(a->address) || is_wildcard(b->address) ||
           strcmp(a->address, b->address) == 0;
}

static bool addr_chars_ok(const char *s)
{
    for (; *s; s++) {
        char c = *s;
        if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') ||
              c == '.' || c == ':')) {
            return false;
        }
    }
    return true;
}

/* A JSON integer (or, from a query, a decimal string) in 0..65535. */
static int get_port(const json_t *o, const char *key, uint16_t *out)
{
    const json_t *v = json_object_get(o, key);
    long long n = 0;
    if (!v) {
        n = 0;
    } else if (json_is_integer(v)) {
        n = json_integer_value(v);
    } else if (json_is_string(v)) {
        const char *s = json_string_value(v);
        char *end = NULL;
        errno = 0;
        n = strtoll(s, &end, 10);
        if (!*s || *end || errno) {
            return -DS_E_FORMAT;
        }
    } else {
        return -DS_E_FORMAT;
    }
    if (n < 0 || n > 65535) {
        return -DS_E_FORMAT;
    }
    *out = (uint16_t)n;
    return 0;
}

static const char *get_str(const json_t *o, const char *key, int *bad)
{
    const json_t *v = json_object_get(o, key);
    if (!v) {
        return "";
    }
    if (!json_is_string(v)) {
        *bad = 1;
        return "";
    }
    return json_string_value(v);
}

int vmm_ports_parse(const json_t *ports, bool enabled, const char *default_address,
                    const struct vmm_port_range *ranges, size_t range_count, bool require_address,
                    struct vmm_ports *out, char *err, size_t err_size)
{
    struct vmm_ports p = {NULL, 0};
    int r = -DS_E_FORMAT;
    if (!ports || json_is_null(ports)) {
        *out = p;
        return 0;
    }
    if (!json_is_array(ports)) {
        snprintf(err, err_size, "ports must be a list");
        return -DS_E_FORMAT;
    }
    size_t n = json_array_size(ports);
    if (n == 0) {
        *out = p;
        return 0;
    }
    if (!enabled) {
        snprintf(err, err_size, "Port mapping is disabled");
        return -DS_E_FORMAT;
    }
    if (n > VMM_PORTS_MAX) {
        snprintf(err, err_size, "too many port mappings (at most %d)", VMM_PORTS_MAX);
        return -DS_E_LIMIT;
    }
    p.items = calloc(n, sizeof(*p.items));
    if (!p.items) {
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *m = json_array_get(ports, i);
        struct vmm_port_map *pm = &p.items[i];
        int bad = 0;
        if (!json_is_object(m)) {
            snprintf(err, err_size, "ports[%zu]: not an object", i);
            goto out;
        }
        const char *proto = get_str(m, "protocol", &bad);
        const char *addr = get_str(m, "host_address", &bad);
        if (bad) {
            snprintf(err, err_size, "ports[%zu]: protocol and host_address must be strings", i);
            goto out;
        }
        if (strcmp(proto, "tcp") != 0 && strcmp(proto, "udp") != 0) {
            snprintf(err, err_size, "ports[%zu]: Invalid protocol: \"%.16s\" (tcp or udp)", i,
                     proto);
            goto out;
        }
        if (get_port(m, "host_port", &pm->from) < 0 || get_port(m, "vm_port", &pm->to) < 0 ||
            pm->from == 0 || pm->to == 0) {
            snprintf(err, err_size, "ports[%zu]: host_port and vm_port must be 1..65535", i);
            goto out;
        }
        if (!addr[0]) {
            if (require_address) {
                snprintf(err, err_size, "ports[%zu]: host_address is required", i);
                goto out;
            }
            addr = default_address;
        }
        if (strlen(addr) >= sizeof(pm->address) || !addr_chars_ok(addr)) {
            snprintf(err, err_size, "ports[%zu]: invalid host_address", i);
            goto out;
        }
        memcpy(pm->protocol, proto, strlen(proto) + 1);
        memcpy(pm->address, addr, strlen(addr) + 1);
        bool allowed = false;
        for (size_t k = 0; k < range_count; k++) {
            if (strcmp(ranges[k].protocol, proto) == 0 && pm->from >= ranges[k].from &&
                pm->from <= ranges[k].to) {
                allowed = true;
                break;
            }
        }
        if (!allowed) {
            snprintf(err, err_size, "Port %s:%u is not allowed (outside cvm.port_mapping.range)",
                     proto, (unsigned)pm->from);
            goto out;
        }
        for (size_t k = 0; k < i; k++) {
            if (vmm_port_conflict(&p.items[k], pm)) {
                snprintf(err, err_size, "Port %s:%s:%u is mapped twice", proto, addr,
                         (unsigned)pm->from);
                goto out;
            }
        }
    }
    p.count = n;
    *out = p;
    p.items = NULL;
    r = 0;
out:
    free(p.items);
    return r;
}
