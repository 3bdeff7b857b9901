/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Private interface of the `dstack` command-line tool. Like curl's CLI, the tool is built only
 * on the public libdstack API (include/dstack/ headers) plus the shared logger
 * (daemons/common/log.h); nothing here reaches into lib/ internals. main.c holds the subcommand
 * table, the global options and a small table-driven option parser every subcommand uses, so errors
 * always name the option and what was expected. Each subcommand lives in cmd_<name>.c; helpers of a
 * subcommand live in <name>_*.c.
 */
#ifndef DSTACK_CLI_H
#define DSTACK_CLI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <jansson.h>

#include "dstack/attest.h"

/* Exit codes shared by every subcommand (documented in docs/verify.md). */
#define CLI_EXIT_OK    0 /* the operation (verification) succeeded */
#define CLI_EXIT_FAIL  1 /* the operation ran and failed (e.g. the quote does not verify) */
#define CLI_EXIT_USAGE 2 /* bad arguments or unreadable / malformed input */

/* ---- option parsing ------------------------------------------------------------------------ */

enum cli_opt_kind {
    CLI_OPT_FLAG,   /* --name: sets *(bool *)target */
    CLI_OPT_STRING, /* --name VALUE or --name=VALUE: sets *(const char **)target */
};

struct cli_opt {
    const char *name; /* long name without the leading "--" */
    enum cli_opt_kind kind;
    void *target;        /* bool * or const char ** */
    const char *metavar; /* shown in errors for options with a value, e.g. "FILE" */
};

#define CLI_MAX_POSITIONAL 8

/*
 * Parse argv[0..argc) (the arguments after the subcommand name) against opts (terminated by a
 * {NULL} entry). "-h"/"--help" sets *help. "--" ends the options. Positional arguments are
 * stored in pos (at most CLI_MAX_POSITIONAL) and counted in *npos. An option given twice is an
 * error. On error prints "<prog>: <option>: <what was expected>" to stderr and returns
 * CLI_EXIT_USAGE; returns 0 on success.
 */
int cli_parse_opts(const char *prog, int argc, char **argv, const struct cli_opt *opts,
                   const char **pos, int *npos, bool *help);

/* Print "dstack: <message>" to stderr (user-facing errors; no timestamp). */
void cli_errx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* ---- subcommands --------------------------------------------------------------------------- */

/* `dstack verify ...` (cmd_verify.c). argv[0] is "verify". */
int cmd_verify(int argc, char **argv);
void cmd_verify_usage(FILE *out);
/* `dstack compose ...` (cmd_compose.c). argv[0] is "compose". */
int cmd_compose(int argc, char **argv);
void cmd_compose_usage(FILE *out);
/* `dstack kms meta|env-pubkey ...` (cmd_kms.c). argv[0] is "kms". */
int cmd_kms(int argc, char **argv);
void cmd_kms_usage(FILE *out);
/* VMM-facing commands (cmd_deploy.c, cmd_vm.c; client in vmm_client.h). argv[0] is the name. */
int cmd_deploy(int argc, char **argv);
void cmd_deploy_usage(FILE *out);
int cmd_ls(int argc, char **argv);
void cmd_ls_usage(FILE *out);
int cmd_info(int argc, char **argv);
void cmd_info_usage(FILE *out);
int cmd_logs(int argc, char **argv);
void cmd_logs_usage(FILE *out);
int cmd_stop(int argc, char **argv);
void cmd_stop_usage(FILE *out);
int cmd_start(int argc, char **argv);
void cmd_start_usage(FILE *out);
int cmd_rm(int argc, char **argv);
void cmd_rm_usage(FILE *out);
int cmd_update(int argc, char **argv);
void cmd_update_usage(FILE *out);

/* ---- verify helpers (verify_input.c) ------------------------------------------------------- */

#define CLI_ROOT_CA_MAX_SIZE     (64 * 1024)        /* a root certificate, DER or PEM */
#define CLI_ATTESTATION_MAX_SIZE (64 * 1024 * 1024) /* GetQuote JSON (quote + event log) */
#define CLI_TIME_MAX             253402300799LL     /* 9999-12-31T23:59:59Z */
#define CLI_HTTP_TIMEOUT_MS      30000L

/* Inputs shared by `verify quote` and `verify attestation`. */
struct verify_opts {
    const char *file;
    bool hex;
    const char *collateral_path;
    const char *pccs_url;
    const char *time_str;
    const char *root_ca_path;
    bool allow_simulated;
    bool json;
    int64_t now;
};

/*
 * Validate the option combination and the --time value (fills o->now; default = now). Prints
 * the error naming the option and returns CLI_EXIT_USAGE, or 0.
 */
int verify_check_opts(const char *prog, struct verify_opts *o);

/* Parse a --time value: decimal unix seconds 0..CLI_TIME_MAX, nothing else. 0 or -1. */
int verify_parse_time(const char *s, int64_t *out);

/* Read a quote file, binary or (hex) hex text with optional 0x and whitespace. Prints the
 * error naming the file and returns CLI_EXIT_USAGE, or 0. *out is malloc'd. */
int verify_read_quote(const char *path, bool hex, uint8_t **out, size_t *out_len);

/* Decode hex text (optional 0x prefix, whitespace ignored) into a malloc'd buffer of at most
 * max bytes. Returns 0 or a negative error. */
int verify_hex_decode_loose(const char *text, size_t len, size_t max, uint8_t **out,
                            size_t *out_len);

/*
 * Create the verifier per --root-ca / --insecure-allow-simulated (a loud warning goes to
 * stderr whenever a non-Intel root is trusted). Returns 0; CLI_EXIT_USAGE for an unreadable or
 * invalid --root-ca (message printed); CLI_EXIT_FAIL when the mock root could not be fetched
 * (err filled, nothing printed: the caller reports it in its output format).
 */
int verify_make_verifier(const struct verify_opts *o, struct ds_verifier **out, char *err,
                         size_t err_size);

/*
 * Load collateral from --collateral (unreadable/malformed: message printed, CLI_EXIT_USAGE) or
 * fetch it from --pccs-url for the quote (failure: err filled, CLI_EXIT_FAIL).
 */
int verify_get_collateral(const struct verify_opts *o, const uint8_t *quote, size_t quote_len,
                          struct ds_collateral **out, char *err, size_t err_size);

/* ---- verdict and its rendering (verify_report.c) ------------------------------------------- */

/* The outcome of one quote verification as the CLI reports it. */
struct verify_verdict {
    bool ok;
    bool simulated;          /* a non-Intel root was trusted */
    const char *failed_step; /* NULL when ok */
    char error[512];         /* set when !ok */
    bool have_result;        /* res is filled (ds_verify_quote ran) */
    struct ds_verify_result res;
    bool parsed; /* quote parsed (report fields below are valid) */
    struct ds_quote quote;
};

/*
 * Run the whole quote pipeline (verifier, collateral, verification) for quote bytes and fill
 * v (release with verify_verdict_done). Returns CLI_EXIT_OK / CLI_EXIT_FAIL per the verdict,
 * or CLI_EXIT_USAGE after printing an input error (v is then still safe to release).
 */
int verify_run_quote(const struct verify_opts *o, const uint8_t *quote, size_t quote_len,
                     struct verify_verdict *v);
void verify_verdict_done(struct verify_verdict *v);

/* JSON object of a verdict: ok, status, advisory_ids, failed_step?, error?, simulated, report.
 * Returns a new jansson reference (json_t *) or NULL on allocation failure. */
json_t *verify_verdict_json(const struct verify_verdict *v);
/* The `report` object of a parsed quote (fmspc added when known). */
json_t *verify_report_json(const struct ds_quote *q, const uint8_t *fmspc);
/* Readable summary of a verdict on out, each line prefixed by indent. */
void verify_verdict_print(FILE *out, const struct verify_verdict *v);

/* Print a JSON value followed by a newline on stdout. Returns 0 or CLI_EXIT_FAIL. */
int cli_print_json(json_t *j);

/* ---- `verify attestation` (verify_attestation.c) ------------------------------------------- */

int verify_attestation_run(const struct verify_opts *o);

/* What `verify app` requires beyond a valid attestation. */
struct verify_app_expect {
    const uint8_t *nonce; /* this run's fresh nonce (reported) */
    size_t nonce_len;
    const uint8_t *report_data; /* DS_REPORT_DATA_SIZE bytes the quote must carry */
    const char *app_id;         /* lowercase hex the event log must declare */
    const char *vm_id;          /* for the report */
};

/*
 * Verify a GetQuote JSON object fetched for `verify app` (what names its source in input
 * errors) with the `verify attestation` pipeline, plus the nonce and app id checks; prints the
 * result and the chain of trust. Returns CLI_EXIT_OK / CLI_EXIT_FAIL / CLI_EXIT_USAGE.
 */
int verify_attestation_run_app(const struct verify_opts *o, json_t *root, const char *what,
                               const struct verify_app_expect *exp);

/* `dstack verify app` (verify_app.c). argv[0] is the first argument after "app". */
int verify_app_main(int argc, char **argv);
void verify_app_usage(FILE *out);

#endif /* DSTACK_CLI_H */
