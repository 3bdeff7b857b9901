/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PROXY protocol glue of the gateway proxy (spec host-side.md §4.2 steps 1 and 5): which
 * backend ports get a PROXY v2 header (the port policy's `pp=true`, or every port when
 * configured so) and the header itself, built by lib/gateway from the client's address (the
 * one a load balancer reported, else the socket peer) and the address it connected to.
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <dstack/gateway.h>

#include "gw_proxy.h"

bool gw_pp_port_wants(const struct gw_proxy_config *cfg, uint16_t port)
{
    if (!cfg->outbound_pp) {
        return false;
    }
    if (cfg->outbound_pp_ports == NULL) {
        return true;
    }
    for (size_t i = 0; i < cfg->outbound_pp_port_count; i++) {
        if (cfg->outbound_pp_ports[i] == port) {
            return true;
        }
    }
    return false;
}

int gw_pp_backend_header(struct ds_buf *b, const struct sockaddr_storage *client,
                         const struct sockaddr_storage *local)
{
    if (client == NULL || local == NULL || client->ss_family != local->ss_family ||
        (client->ss_family != AF_INET && client->ss_family != AF_INET6)) {
        return ds_pp_build_v2(b, NULL, NULL);
    }
    return ds_pp_build_v2(b, (const struct sockaddr *)client, (const struct sockaddr *)local);
}
