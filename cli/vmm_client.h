/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The CLI's small pRPC client for the VMM (and, for env encryption, a KMS) over libcurl, plus
 * the helpers the VMM-facing subcommands share (cmd_deploy.c, cmd_vm.c). pRPC is used in its
 * JSON mode (spec host-side.md §0): `POST <base>/prpc/<Method>?json` with a JSON body; bytes
 * are lowercase hex; errors are HTTP 400 with `{"error": "<text>"}`, which is handed back to
 * the caller verbatim so the user sees the server's message.
 *
 * Where the VMM is: --url, else DSTACK_VMM_URL, else http://localhost:8080 (as vmm-cli.py).
 * Forms: http(s)://host:port[/] or unix:/path/to/socket. Auth: --token / DSTACK_VMM_TOKEN
 * (`Authorization: Bearer`), else DSTACK_VMM_AUTH_USER + DSTACK_VMM_AUTH_PASSWORD (Basic).
 */
#ifndef DSTACK_CLI_VMM_CLIENT_H
#define DSTACK_CLI_VMM_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "dstack/compose.h"

#define VMM_DEFAULT_URL     "http://localhost:8080"
#define VMM_URL_MAX         2048
#define VMM_RESPONSE_MAX    (16u * 1024 * 1024) /* one pRPC JSON answer */
#define VMM_ERR_MAX         1024
#define VMM_CONNECT_TIMEOUT 10000L  /* ms */
#define VMM_CALL_TIMEOUT    300000L /* ms; CreateVm may copy images */
#define VMM_TOKEN_MAX       4096
#define VMM_ID_MAX          64 /* VM ids: [A-Za-z0-9_-]{1,64} (§1.3) */

struct vmm_client {
    char base[VMM_URL_MAX]; /* scheme://host[:port], no trailing slash, no /prpc */
    char *unix_path;        /* socket path for unix: URLs, else NULL */
    char *auth_header;      /* "Authorization: ..." or NULL (a secret: wiped on done) */
    bool insecure_tls;      /* skip TLS peer checks (KMS: authenticity comes from signatures) */
    const char *what;       /* "VMM" or "KMS", for messages */
};

/*
 * Resolve the VMM location and credentials (url/token may be NULL: environment, then default).
 * Returns 0, or CLI_EXIT_USAGE after printing which option/variable was malformed.
 */
int vmm_client_init(struct vmm_client *c, const char *prog, const char *url, const char *token);
/* A client for a KMS base URL (https://host:port[/prpc]); TLS is not verified (see above). */
int vmm_client_init_kms(struct vmm_client *c, const char *prog, const char *url);
void vmm_client_done(struct vmm_client *c);

/*
 * Call <Method> with a JSON request (NULL = {}); a method starting with '/' is a full path on
 * the VMM instead of /prpc/<Method> (e.g. "/guest/GetQuote", ProxiedGuestApi); *out gets the answer
 * object (an empty body is
 * {}). On failure err holds a message: the server's error text for a pRPC error (returns
 * -DS_E_PROTOCOL), "unauthorized" detail for 401/403 (-DS_E_DENIED), or the transport error
 * (-DS_E_NETWORK). -ENOMEM on allocation failure.
 */
int vmm_call(struct vmm_client *c, const char *method, json_t *req, json_t **out, char *err,
             size_t err_size);

/* Called with each chunk of a streamed body; return false to stop the transfer. */
typedef bool (*vmm_sink_fn)(const char *data, size_t len, void *ctx);

/*
 * GET <base><path_query> and pass the body to sink as it arrives (no overall timeout). A non-200
 * status returns -DS_E_NOT_FOUND (404) or -DS_E_PROTOCOL with the body text in err.
 */
int vmm_get_stream(struct vmm_client *c, const char *path_query, vmm_sink_fn sink, void *ctx,
                   char *err, size_t err_size);

/* Report a failed call as "dstack: <prog>: <Method>: <err>" and return CLI_EXIT_FAIL. */
int vmm_report(const char *prog, const char *method, const char *err);

/* String member of a JSON object, "" when absent or not a string. */
const char *vmm_json_str(const json_t *o, const char *key);

/* ---- argv helpers shared by the VMM subcommands -------------------------------------------- */

#define VMM_MULTI_MAX 64 /* values of one repeatable option */

struct vmm_multi {
    const char *name; /* long option name without "--" */
    const char *metavar;
    const char *values[VMM_MULTI_MAX];
    size_t count;
};

/*
 * Move every occurrence of the repeatable options (--name VALUE / --name=VALUE) out of argv
 * into their vmm_multi, and rewrite short aliases given as pairs {"-f", "--follow"} (NULL
 * terminated, may be NULL). argv is edited in place; *argc is updated. Stops at "--".
 * Returns 0 or CLI_EXIT_USAGE (message names the option).
 */
int vmm_take_multi(const char *prog, int *argc, char **argv, struct vmm_multi *multi,
                   size_t multi_count, const char *const *aliases);

/* ---- deploy/update helpers (cmd_deploy.c) -------------------------------------------------- */

#define VMM_VCPU_MAX      1024
#define VMM_MEMORY_MAX_MB (16u * 1024 * 1024) /* 16 TiB */
#define VMM_DISK_MAX_GB   (1024u * 1024)      /* 1 PiB */

/* Decimal 1..max and nothing else. 0 or -1. */
int vmm_parse_uint(const char *s, uint64_t max, uint64_t *out);
/* --memory: "<N>[M|MB|G|GB|T|TB]" (any case, default MB) into MB, 1..VMM_MEMORY_MAX_MB. 0/-1. */
int vmm_parse_memory_mb(const char *s, uint64_t *out);
/* --disk: "<N>[G|GB]" into GB, 1..VMM_DISK_MAX_GB. 0 or -1. */
int vmm_parse_disk_gb(const char *s, uint64_t *out);

/*
 * Parse a --port value into a PortMapping JSON object: tcp:HOST_PORT:VM_PORT[:HOST_ADDR]
 * (also vmm-cli's PROTO:HOST_ADDR:HOST_PORT:VM_PORT); protocol tcp or udp; ports 1..65535;
 * address default 127.0.0.1. Returns a new object or NULL after printing the error.
 */
json_t *vmm_parse_port(const char *prog, const char *spec);

/* The repeatable options deploy and update share, in this order. */
#define VMM_VM_MULTI_INIT                                                                          \
    {                                                                                              \
        {.name = "port", .metavar = "tcp:HOST_PORT:VM_PORT[:HOST_ADDR]"},                          \
            {.name = "kms-url", .metavar = "URL"},                                                 \
        {                                                                                          \
            .name = "gateway-url", .metavar = "URL"                                                \
        }                                                                                          \
    }

/* Parse multi[0] (--port) into the array ports and check that multi[1..2] (--kms-url,
 * --gateway-url) are http(s) URLs. 0, or CLI_EXIT_USAGE after printing the error. */
int vmm_parse_vm_multi(const char *prog, const struct vmm_multi multi[3], json_t *ports);

/* Read and validate an app-compose.json (message names opt and the field). CLI_EXIT_*; on 0
 * *out_text is malloc'd (NUL-terminated) and *out_compose parsed. */
int vmm_load_compose(const char *prog, const char *opt, const char *path, char **out_text,
                     size_t *out_len, struct ds_app_compose **out_compose);

struct vmm_env_opts {
    const char *env_file;   /* required */
    const char *kms_url;    /* direct KMS (first --kms-url) or NULL: through the VMM */
    const char *kms_pubkey; /* trusted KMS k256 key (hex, 33 bytes) or NULL */
    bool insecure_skip_sig; /* --insecure-skip-kms-signature-check */
};

/*
 * Fetch the app's env-encrypt key (KMS directly or via the VMM's GetAppEnvEncryptPubKey),
 * verify its k256 signature against the trusted KMS key (--kms-pubkey, else the k256_pubkey
 * of the KMS's GetMeta), read the env file and encrypt it (kms-ratls.md §3.6, §7). compose
 * may be NULL (no allowed_envs warning). Returns CLI_EXIT_*; on 0 *out_hex is malloc'd.
 */
int vmm_encrypt_env(const char *prog, struct vmm_client *vmm, const struct vmm_env_opts *o,
                    const uint8_t app_id[DS_APP_ID_SIZE], const struct ds_app_compose *compose,
                    char **out_hex);

/* ---- waiting for a VM (cmd_vm.c) --------------------------------------------------------- */

enum vmm_wait_goal {
    VMM_WAIT_BOOTED,  /* boot_progress reaches done/running/booted; boot_error or exit fails */
    VMM_WAIT_STOPPED, /* status stopped or exited */
    VMM_WAIT_GONE,    /* GetInfo no longer finds the VM (after RemoveVm) */
};

#define VMM_WAIT_DEFAULT_S 600
#define VMM_WAIT_MAX_S     86400

/* Poll GetInfo once a second with a progress display until goal or timeout_s. CLI_EXIT_*. */
int vmm_wait(const char *prog, struct vmm_client *c, const char *id, enum vmm_wait_goal goal,
             unsigned timeout_s, bool quiet);
/* Parse a --timeout value (seconds, 1..VMM_WAIT_MAX_S). 0 or CLI_EXIT_USAGE (printed). */
int vmm_parse_timeout(const char *prog, const char *s, unsigned *out);

#endif /* DSTACK_CLI_VMM_CLIENT_H */
