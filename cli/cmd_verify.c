/* SPDX-License-Identifier: Apache-2.0 */
/*
 * `dstack verify quote`, `dstack verify attestation` and `dstack verify app` (verify_app.c):
 * the verification commands. This file
 * holds their option tables, usage text and the `verify quote` flow (read the quote, pick the
 * trust anchor, get collateral, verify, print). The shared input handling is in
 * verify_input.c, the verdict rendering in verify_report.c and the attestation flow (event
 * log replay, app identity) in verify_attestation.c. Spec: ../shared/spec/attestation.md §2.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "log.h"

static void usage_quote(FILE *out)
{
    fprintf(out,
            "usage: dstack verify quote FILE [--hex] (--collateral FILE | --pccs-url URL)\n"
            "                           [--time UNIX] [--root-ca FILE]\n"
            "                           [--insecure-allow-simulated] [--json]\n"
            "  Verify an Intel DCAP quote (TDX v4/v5, SGX v3) with the full DCAP algorithm.\n"
            "  --hex                        FILE holds hex text (optional 0x, whitespace ignored)\n"
            "  --collateral FILE            QuoteCollateralV3 JSON (dcap-qvl form)\n"
            "  --pccs-url URL               fetch collateral from a PCCS / Intel PCS v4 base URL\n"
            "  --time UNIX                  verify at this time (unix seconds; default now)\n"
            "  --root-ca FILE               trust this root (DER or PEM) instead of Intel's\n"
            "  --insecure-allow-simulated   trust the mock root served by the PCCS at\n"
            "                               URL/dstack-sim/v1/root-ca.der (simulator only!)\n"
            "  --json                       print one JSON object instead of a summary\n");
}

static void usage_attestation(FILE *out)
{
    fprintf(out,
            "usage: dstack verify attestation FILE (--collateral FILE | --pccs-url URL)\n"
            "                                 [--time UNIX] [--root-ca FILE]\n"
            "                                 [--insecure-allow-simulated] [--json]\n"
            "  Verify a GetQuote-style JSON {\"quote\": hex, \"event_log\": JSON string,\n"
            "  \"vm_config\": JSON string (optional)}: the quote, the replay of the event log\n"
            "  against RTMR0-3, and the app identity the log declares. Options as for\n"
            "  'dstack verify quote'.\n");
}

void cmd_verify_usage(FILE *out)
{
    usage_quote(out);
    fputc('\n', out);
    usage_attestation(out);
    fputc('\n', out);
    verify_app_usage(out);
    fprintf(out, "\nexit codes: 0 verified, 1 verification failed, 2 usage or input error\n");
}

/* The option table shared by both commands; --hex only applies to `verify quote`. */
static int parse_verify_opts(const char *prog, int argc, char **argv, bool with_hex,
                             struct verify_opts *o, bool *help)
{
    const struct cli_opt opts[] = {
        {"collateral", CLI_OPT_STRING, &o->collateral_path, "a collateral JSON file"},
        {"pccs-url", CLI_OPT_STRING, &o->pccs_url, "a PCCS base URL (http:// or https://)"},
        {"time", CLI_OPT_STRING, &o->time_str, "unix seconds"},
        {"root-ca", CLI_OPT_STRING, &o->root_ca_path, "a root certificate file (DER or PEM)"},
        {"insecure-allow-simulated", CLI_OPT_FLAG, &o->allow_simulated, NULL},
        {"json", CLI_OPT_FLAG, &o->json, NULL},
        /* Last on purpose: for `verify attestation` its NULL name ends the table. */
        {with_hex ? "hex" : NULL, CLI_OPT_FLAG, &o->hex, NULL},
        {NULL, 0, NULL, NULL},
    };
    const char *pos[CLI_MAX_POSITIONAL];
    int npos = 0;
    int rc = cli_parse_opts(prog, argc, argv, opts, pos, &npos, help);
    if (rc != 0 || *help) {
        return rc;
    }
    if (npos == 0) {
        cli_errx("%s: expected FILE (the %s to verify)", prog,
                 with_hex ? "quote" : "GetQuote JSON");
        return CLI_EXIT_USAGE;
    }
    if (npos > 1) {
        cli_errx("%s: expected exactly one FILE, got '%s' and '%s'", prog, pos[0], pos[1]);
        return CLI_EXIT_USAGE;
    }
    o->file = pos[0];
    return verify_check_opts(prog, o);
}

static int verify_quote_main(int argc, char **argv)
{
    const char *prog = "verify quote";
    struct verify_opts o = {0};
    bool help = false;
    uint8_t *quote = NULL;
    size_t quote_len = 0;
    struct verify_verdict v = {0};
    int rc = parse_verify_opts(prog, argc, argv, true, &o, &help);
    if (help) {
        usage_quote(stdout);
        return rc == 0 ? CLI_EXIT_OK : rc;
    }
    if (rc != 0) {
        fprintf(stderr, "Try 'dstack verify --help'.\n");
        return rc;
    }
    rc = verify_read_quote(o.file, o.hex, &quote, &quote_len);
    if (rc != 0) {
        goto out;
    }
    rc = verify_run_quote(&o, quote, quote_len, &v);
    if (rc == CLI_EXIT_USAGE) {
        goto out;
    }
    if (o.json) {
        json_t *j = verify_verdict_json(&v);
        int prc = cli_print_json(j);
        json_decref(j);
        if (prc != 0) {
            rc = prc;
            goto out;
        }
    } else {
        verify_verdict_print(stdout, &v);
    }
out:
    verify_verdict_done(&v);
    free(quote);
    return rc;
}

static int verify_attestation_main(int argc, char **argv)
{
    const char *prog = "verify attestation";
    struct verify_opts o = {0};
    bool help = false;
    int rc = parse_verify_opts(prog, argc, argv, false, &o, &help);
    if (help) {
        usage_attestation(stdout);
        return rc == 0 ? CLI_EXIT_OK : rc;
    }
    if (rc != 0) {
        fprintf(stderr, "Try 'dstack verify --help'.\n");
        return rc;
    }
    return verify_attestation_run(&o);
}

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
} verify_cmds[] = {
    {"quote", verify_quote_main},
    {"attestation", verify_attestation_main},
    {"app", verify_app_main},
};

int cmd_verify(int argc, char **argv)
{
    if (argc < 2) {
        cli_errx("verify: expected 'quote', 'attestation' or 'app'");
        cmd_verify_usage(stderr);
        return CLI_EXIT_USAGE;
    }
    if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        cmd_verify_usage(stdout);
        return CLI_EXIT_OK;
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(verify_cmds); i++) {
        if (strcmp(argv[1], verify_cmds[i].name) == 0) {
            return verify_cmds[i].run(argc - 2, argv + 2);
        }
    }
    cli_errx("verify: unknown command '%s' (expected 'quote', 'attestation' or 'app')", argv[1]);
    return CLI_EXIT_USAGE;
}
