/* SPDX-License-Identifier: Apache-2.0 */
/*
 * PROXY protocol glue of the gateway proxy (spec host-side.md §4.2 steps 1 and 5): the v2
 * header for a backend (sent when the instance's port policy has `pp = true` for the port,
 * gw_routes_lookup_port, or to every backend with outbound_pp), built by lib/gateway from the
 * client's address (the one a load balancer reported, else the socket peer) and the address
 * it connected to.
 */
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <dstack/gateway.h>

#include "gw_proxy.h"

int gw_pp_backend_header(struct ds_buf *b, const struct sockaddr_storage *client,
                         const struct sockaddr_storage *local)
{
    if (client == NULL || local == NULL || client->ss_family != local->ss_family ||
        (client->ss_family != AF_INET && client->ss_family != AF_INET6)) {
        return ds_pp_build_v2(b, NULL, NULL);
    }
    return ds_pp_build_v2(b, (const struct sockaddr *)client, (const struct sockaddr *)local);
}
