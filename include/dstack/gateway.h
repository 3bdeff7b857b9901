/* SPDX-License-Identifier: Apache-2.0 */
/*
 * libdstack gateway parsers: the pure, allocation-free pieces of the dstack-gateway data plane
 * (spec host-side.md §4.2) that see attacker-controlled bytes before anything is
 * authenticated, kept here so they are unit-tested and fuzzed apart from the daemon:
 *   - the TLS ClientHello reader (incremental: "need more" / "complete" / error) that finds
 *     the SNI host name and whether ALPN offers h2, across record fragmentation;
 *   - the SNI grammar `<id>[-<port>][s|g].<base>` with the special ids `health`/`gateway`;
 *   - the custom-domain `_dstack-app-address` TXT record (DNS answer and `<app_id>:<port>`);
 *   - PROXY protocol v1/v2 parse and build.
 * All inputs are read through struct ds_reader; nothing here logs or allocates.
 */
#ifndef DSTACK_GATEWAY_H
#define DSTACK_GATEWAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <dstack/base.h>

/* ---- TLS ClientHello ------------------------------------------------------------------------ */

/*
 * Bytes the proxy buffers while looking for the SNI. The spec uses 4 KiB; hybrid
 * post-quantum key shares make ClientHellos of ~1.8 KiB common, so allow 16 KiB (one record).
 */
#define DS_GW_HELLO_MAX      16384
#define DS_GW_TLS_RECORD_MAX 16384 /* plaintext record limit, RFC 8446 §5.1 */
#define DS_GW_SNI_MAX        253   /* DNS name length without the trailing dot */

enum ds_gw_hello_status {
    DS_GW_HELLO_NEED_MORE = 0, /* a valid prefix: read more bytes and call again */
    DS_GW_HELLO_COMPLETE = 1,  /* the whole ClientHello was parsed; see has_sni */
};

struct ds_gw_hello {
    char sni[DS_GW_SNI_MAX + 1]; /* lowercased host_name, "" when absent */
    bool has_sni;
    bool alpn_h2;       /* the client offered "h2" */
    bool alpn_http11;   /* the client offered "http/1.1" */
    uint16_t version;   /* legacy_version of the ClientHello */
    bool tls13;         /* supported_versions lists 0x0304 */
    size_t hello_bytes; /* record bytes consumed by the ClientHello (the prefix to forward) */
};

/*
 * Parse the ClientHello at the start of data[0..len) (TLS records as read from the socket).
 * Returns DS_GW_HELLO_COMPLETE (out filled), DS_GW_HELLO_NEED_MORE (out untouched), or
 * -DS_E_PROTOCOL (not a TLS handshake record / not a ClientHello), -DS_E_FORMAT (malformed
 * ClientHello or host name), -DS_E_LIMIT (no complete ClientHello within DS_GW_HELLO_MAX).
 */
DS_MUST_USE int ds_gw_clienthello_parse(const void *data, size_t len, struct ds_gw_hello *out);

/* ---- SNI grammar ---------------------------------------------------------------------------- */

#define DS_GW_ID_MAX 63 /* one DNS label */

enum ds_gw_mode {
    DS_GW_MODE_TERMINATE = 0,   /* `<id>`, `<id>-<port>`: TLS terminated, plaintext relayed */
    DS_GW_MODE_PASSTHROUGH = 1, /* `<id>-s`, `<id>-<port>s`: bytes relayed untouched */
    DS_GW_MODE_H2 = 2,          /* `<id>-g`, `<id>-<port>g`: terminated with ALPN h2 */
};

enum ds_gw_special {
    DS_GW_SPECIAL_NONE = 0,
    DS_GW_SPECIAL_HEALTH,  /* `health.<base>`: GET / -> 200 */
    DS_GW_SPECIAL_GATEWAY, /* `gateway.<base>`: this node's info endpoints */
};

struct ds_gw_target {
    char id[DS_GW_ID_MAX + 1]; /* app_id or instance_id (lowercase) */
    uint16_t port;             /* explicit or default (443 with `s`, else 80) */
    bool port_given;
    enum ds_gw_mode mode;
    enum ds_gw_special special;
};

/*
 * Split an SNI at its first dot: *sub_len = length of the first label, *base points after the
 * dot. Returns 0 or -DS_E_FORMAT (no dot, empty label or empty base).
 */
DS_MUST_USE int ds_gw_sni_split(const char *sni, size_t *sub_len, const char **base);
/*
 * Parse the first label `<id>[-<port>[s|g]]` / `<id>-s` / `<id>-g` (spec §4.2 step 3).
 * Returns 0 or -DS_E_FORMAT (empty id, bad characters, more than one '-', port 0 or > 65535,
 * both s and g, trailing garbage, special id with a port other than 80 or with s/g).
 */
DS_MUST_USE int ds_gw_sni_parse_sub(const char *sub, size_t sub_len, struct ds_gw_target *out);
/* Case-insensitive DNS name equality, ignoring one trailing dot on either side. */
bool ds_gw_domain_equal(const char *a, const char *b);

/* ---- custom-domain TXT record --------------------------------------------------------------- */

#define DS_GW_TXT_MAX     1024 /* concatenated TXT strings of one record */
#define DS_GW_DNS_MSG_MAX 65535

/* Parse `<app_id>:<port>` (app id 1..63 of [0-9a-zA-Z], lowercased). 0 or -DS_E_FORMAT. */
DS_MUST_USE int ds_gw_app_address_parse(const char *text, size_t len, char *app_id_out,
                                        size_t app_id_size, uint16_t *port_out);
/*
 * From a DNS response message (as returned by res_query), take the first TXT answer that parses
 * as an app address. Returns 0, -DS_E_NOT_FOUND (no such answer), -DS_E_FORMAT / -DS_E_TRUNCATED
 * (malformed message).
 */
DS_MUST_USE int ds_gw_dns_txt_app_address(const void *msg, size_t len, char *app_id_out,
                                          size_t app_id_size, uint16_t *port_out);

/* ---- PROXY protocol v1/v2 ------------------------------------------------------------------- */

#define DS_PP_V1_MAX      107  /* including CRLF, haproxy proxy-protocol.txt §2.1 */
#define DS_PP_V2_MAX      2048 /* header + addresses + TLVs accepted (spec §4.2 step 1) */
#define DS_PP_V2_SIG_SIZE 12

struct ds_pp_info {
    int version; /* 1 or 2 */
    bool local;  /* v2 LOCAL command or v1 UNKNOWN: addresses absent, use the socket's */
    struct sockaddr_storage src, dst; /* AF_INET or AF_INET6 when !local */
    size_t header_size;               /* bytes consumed */
};

/*
 * Parse a PROXY header at the start of data. Returns 1 (complete, out filled), 0 (need more),
 * -DS_E_PROTOCOL (not a PROXY header), -DS_E_FORMAT (malformed), -DS_E_UNSUPPORTED (v2
 * version/family/transport), -DS_E_LIMIT (too long).
 */
DS_MUST_USE int ds_pp_parse(const void *data, size_t len, struct ds_pp_info *out);
/* Append a v1 / v2 PROXY header for src -> dst (both AF_INET or both AF_INET6) to b. v2 with
 * src == NULL writes a LOCAL header. Returns bytes appended, -EINVAL, -DS_E_LIMIT. */
DS_MUST_USE int ds_pp_build_v1(struct ds_buf *b, const struct sockaddr *src,
                               const struct sockaddr *dst);
DS_MUST_USE int ds_pp_build_v2(struct ds_buf *b, const struct sockaddr *src,
                               const struct sockaddr *dst);

#endif /* DSTACK_GATEWAY_H */
