/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Fuzz harness for dstack-vmm's request validation (daemons/vmm/vmm_ports.c, compiled in): the
 * first input byte picks the target, the rest is the input.
 *   0: the `ports` list of a CreateVm/UpdateVm body (JSON) through vmm_ports_parse with a fixed
 *      policy (tcp 20000-20999, udp 30000-30010), once with and once without require_address.
 *      Invariants: on success every mapping has protocol tcp/udp, host port inside a range,
 *      vm port >= 1, a NUL-terminated address, and no two mappings conflict; on failure the
 *      message is non-empty and nothing is returned.
 *   1: a VM name and id (vmm_vm_name_valid / vmm_vm_id_valid): accepted strings contain only
 *      the allowed characters and respect the length limits.
 *   2: a whole CreateVm body: its `ports` member, as the server would see it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../daemons/vmm/vmm_ports.c"

static const struct vmm_port_range fuzz_ranges[] = {
    {"tcp", 20000, 20999},
    {"udp", 30000, 30010},
};

static void check_ports(const json_t *ports, bool require_address)
{
    struct vmm_ports p = {NULL, 0};
    char err[VMM_ERR_MAX] = "";
    int r = vmm_ports_parse(ports, true, "127.0.0.1", fuzz_ranges, DS_ARRAY_SIZE(fuzz_ranges),
                            require_address, &p, err, sizeof(err));
    if (r < 0) {
        if (r != -ENOMEM && err[0] == '\0') {
            abort();
        }
        if (p.items || p.count) {
            abort();
        }
        return;
    }
    if (p.count > VMM_PORTS_MAX || (p.count && !p.items)) {
        abort();
    }
    for (size_t i = 0; i < p.count; i++) {
        const struct vmm_port_map *m = &p.items[i];
        bool tcp = strcmp(m->protocol, "tcp") == 0;
        bool udp = strcmp(m->protocol, "udp") == 0;
        if ((!tcp && !udp) || m->to == 0 || !memchr(m->address, '\0', sizeof(m->address)) ||
            !m->address[0]) {
            abort();
        }
        if ((tcp && (m->from < 20000 || m->from > 20999)) ||
            (udp && (m->from < 30000 || m->from > 30010))) {
            abort();
        }
        for (size_t k = 0; k < i; k++) {
            if (vmm_port_conflict(&p.items[k], m)) {
                abort();
            }
        }
    }
    vmm_ports_free(&p);
}

static void check_names(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);
    if (!s) {
        return;
    }
    memcpy(s, data, size);
    s[size] = '\0';
    size_t n = strlen(s);
    if (vmm_vm_name_valid(s)) {
        if (n == 0 || n > VMM_NAME_MAX) {
            abort();
        }
        for (size_t i = 0; i < n; i++) {
            if (s[i] == '/' || s[i] == '"' || s[i] == '\\' || (unsigned char)s[i] < 0x20 ||
                (unsigned char)s[i] >= 0x7f) {
                abort();
            }
        }
    }
    if (vmm_vm_id_valid(s)) {
        if (n == 0 || n > VMM_ID_MAX || strchr(s, '.') || strchr(s, '/')) {
            abort();
        }
    }
    free(s);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) {
        return 0;
    }
    uint8_t target = data[0] % 3;
    data++;
    size--;
    if (target == 1) {
        check_names(data, size);
        return 0;
    }
    json_t *j = json_loadb((const char *)data, size, 0, NULL);
    if (!j) {
        return 0;
    }
    const json_t *ports = target == 2 ? json_object_get(j, "ports") : j;
    check_ports(ports, false);
    check_ports(ports, true);
    json_decref(j);
    return 0;
}
