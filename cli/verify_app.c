/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack verify app APP_ID`: verify a running app from outside its VM. The VMM (--vmm-url or
 * DSTACK_VMM_URL, auth as for every VMM command) is asked for its VMs (Status) and the running
 * VM of APP_ID is picked; a fresh 32-byte random nonce goes through the VMM's ProxiedGuestApi
 * GetAttestation (/guest/GetAttestation, a dstack-c extension relaying the guest agent's
 * GetQuote for report_data = SHA-512("dstack-verify-app:" || nonce)) and the returned
 * GetQuote JSON goes through the `verify attestation` pipeline (verify_attestation_run_app):
 * the quote against a PCCS, the event log replay, the app identity, plus two checks of its
 * own: the quote's report_data is exactly that derivation of this run's nonce (a replayed old
 * attestation fails) and the event log declares APP_ID. The VMM and the guest are
 * not trusted: everything that counts is checked against the quote.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/crypto.h"
#include "dstack/eventlog.h"

#include "cli.h"
#include "log.h"
#include "vmm_client.h"

#define APP_ID_HEX_MAX 128 /* app ids are 20 bytes; accept up to 64 */
#define INTEL_PCS_URL  "https://api.trustedservices.intel.com"
#define NONCE_SIZE     32
#define VERIFY_APP_TAG "dstack-verify-app" /* report_data tag; daemons/vmm/vmm_guest.c too */

void verify_app_usage(FILE *out)
{
    fprintf(out,
            "usage: dstack verify app APP_ID [--vmm-url URL] [--token TOKEN] [--pccs-url URL]\n"
            "                         [--time UNIX] [--root-ca FILE]\n"
            "                         [--insecure-allow-simulated] [--json]\n"
            "  Fetch the attestation of the app's running VM through the VMM with a fresh\n"
            "  nonce in report_data, verify the quote, replay the event log and print the\n"
            "  chain of trust (TCB, MRTD/RTMRs, OS image, compose hash, app and instance id,\n"
            "  key provider). Exit 0 only when everything verifies.\n"
            "  --vmm-url URL                the VMM (env DSTACK_VMM_URL, default %s)\n"
            "  --pccs-url URL               PCCS for the collateral (default: Intel PCS\n"
            "                               %s; required with\n"
            "                               --insecure-allow-simulated)\n"
            "  --insecure-allow-simulated   trust the simulator's mock root (proves nothing!)\n"
            "  other options as for 'dstack verify quote'\n",
            VMM_DEFAULT_URL, INTEL_PCS_URL);
}

/* APP_ID: hex (optional 0x), even length, lowercased into out. 0 or -1. */
static int normalize_app_id(const char *in, char out[APP_ID_HEX_MAX + 1])
{
    if (strncmp(in, "0x", 2) == 0 || strncmp(in, "0X", 2) == 0) {
        in += 2;
    }
    size_t n = strlen(in);
    if (n == 0 || n > APP_ID_HEX_MAX || n % 2 != 0) {
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (!isxdigit((unsigned char)in[i])) {
            return -1;
        }
        out[i] = (char)tolower((unsigned char)in[i]);
    }
    out[n] = '\0';
    return 0;
}

/* The running VM of app_id from Status. Prints the error; CLI_EXIT_FAIL or 0. */
static int find_vm(struct vmm_client *c, const char *app_id, char vm_id[VMM_ID_MAX + 1])
{
    char err[VMM_ERR_MAX];
    json_t *resp = NULL;
    json_t *req = json_object();
    int rc = CLI_EXIT_FAIL;
    size_t total = 0;
    const char *stopped_status = NULL;
    if (req == NULL || vmm_call(c, "Status", req, &resp, err, sizeof(err)) < 0) {
        rc = vmm_report("verify app", "Status", req == NULL ? "out of memory" : err);
        goto out;
    }
    const json_t *vms = json_object_get(resp, "vms");
    size_t i;
    const json_t *vm;
    json_array_foreach(vms, i, vm)
    {
        char got[APP_ID_HEX_MAX + 1];
        if (normalize_app_id(vmm_json_str(vm, "app_id"), got) < 0 || strcmp(got, app_id) != 0) {
            continue;
        }
        total++;
        const char *id = vmm_json_str(vm, "id");
        if (strcmp(vmm_json_str(vm, "status"), "running") == 0 && strlen(id) <= VMM_ID_MAX &&
            id[0] != '\0') {
            snprintf(vm_id, VMM_ID_MAX + 1, "%s", id);
            rc = 0;
            goto out;
        }
        stopped_status = vmm_json_str(vm, "status");
    }
    if (total == 0) {
        cli_errx("verify app: find VM: no VM of app %s on the VMM", app_id);
    } else {
        cli_errx("verify app: find VM: app %s has %zu VM(s) but none is running (status %s)",
                 app_id, total, stopped_status != NULL ? stopped_status : "?");
    }
out:
    json_decref(req);
    json_decref(resp);
    return rc;
}

int verify_app_main(int argc, char **argv)
{
    const char *prog = "verify app";
    struct verify_opts o = {0};
    const char *vmm_url = NULL, *token = NULL;
    bool help = false;
    struct vmm_client c = {0};
    bool have_client = false;
    json_t *req = NULL, *resp = NULL;
    char app_id[APP_ID_HEX_MAX + 1], vm_id[VMM_ID_MAX + 1], err[VMM_ERR_MAX];
    uint8_t nonce[NONCE_SIZE], rd[DS_REPORT_DATA_SIZE];
    char nonce_hex[2 * NONCE_SIZE + 1];
    const struct cli_opt opts[] = {
        {"vmm-url", CLI_OPT_STRING, &vmm_url, "http(s)://HOST:PORT or unix:/PATH"},
        {"token", CLI_OPT_STRING, &token, "a VMM bearer token"},
        {"pccs-url", CLI_OPT_STRING, &o.pccs_url, "a PCCS base URL (http:// or https://)"},
        {"time", CLI_OPT_STRING, &o.time_str, "unix seconds"},
        {"root-ca", CLI_OPT_STRING, &o.root_ca_path, "a root certificate file (DER or PEM)"},
        {"insecure-allow-simulated", CLI_OPT_FLAG, &o.allow_simulated, NULL},
        {"json", CLI_OPT_FLAG, &o.json, NULL},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[CLI_MAX_POSITIONAL];
    int npos = 0;
    int rc = cli_parse_opts(prog, argc, argv, opts, pos, &npos, &help);
    if (help) {
        verify_app_usage(stdout);
        return rc == 0 ? CLI_EXIT_OK : rc;
    }
    if (rc != 0) {
        goto usage;
    }
    if (npos != 1) {
        cli_errx("%s: expected exactly one APP_ID (hex)", prog);
        goto usage;
    }
    if (normalize_app_id(pos[0], app_id) < 0) {
        cli_errx("%s: APP_ID: expected hex (optional 0x, even length, at most %d digits), got "
                 "'%.80s'",
                 prog, APP_ID_HEX_MAX, pos[0]);
        goto usage;
    }
    if (o.pccs_url == NULL) {
        if (o.allow_simulated && o.root_ca_path == NULL) {
            cli_errx("%s: --insecure-allow-simulated: needs --pccs-url (the simulator's PCCS)",
                     prog);
            goto usage;
        }
        o.pccs_url = INTEL_PCS_URL;
    }
    rc = verify_check_opts(prog, &o);
    if (rc != 0) {
        goto usage;
    }
    rc = vmm_client_init(&c, prog, vmm_url, token);
    if (rc != 0) {
        goto out;
    }
    have_client = true;
    rc = find_vm(&c, app_id, vm_id);
    if (rc != 0) {
        goto out;
    }
    if (ds_random(nonce, sizeof(nonce)) < 0 ||
        ds_report_data_build(DS_REPORT_HASH_SHA512, VERIFY_APP_TAG, nonce, sizeof(nonce), rd) < 0) {
        cli_errx("%s: nonce: no random bytes", prog);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    ds_hex_encode(nonce, sizeof(nonce), nonce_hex);
    req = json_pack("{s:s, s:s}", "id", vm_id, "nonce", nonce_hex);
    if (req == NULL) {
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    if (vmm_call(&c, "/guest/GetAttestation", req, &resp, err, sizeof(err)) < 0) {
        cli_errx("%s: fetch attestation: VM %s: %s", prog, vm_id, err);
        rc = CLI_EXIT_FAIL;
        goto out;
    }
    char what[160];
    snprintf(what, sizeof(what), "attestation of VM %s (from the VMM)", vm_id);
    const struct verify_app_expect exp = {.nonce = nonce,
                                          .nonce_len = sizeof(nonce),
                                          .report_data = rd,
                                          .app_id = app_id,
                                          .vm_id = vm_id};
    rc = verify_attestation_run_app(&o, resp, what, &exp);
    if (rc == CLI_EXIT_USAGE) {
        rc = CLI_EXIT_FAIL; /* a malformed answer from the VM is a failure, not a usage error */
    }
    goto out;
usage:
    fprintf(stderr, "Try 'dstack verify app --help'.\n");
    rc = CLI_EXIT_USAGE;
out:
    json_decref(req);
    json_decref(resp);
    if (have_client) {
        vmm_client_done(&c);
    }
    return rc;
}
