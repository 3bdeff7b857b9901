/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Reading dstack's private certificate extensions (spec kms-ratls.md §6.1, §6.4 step 1): the
 * extension list is walked with X509_get_ext and OIDs are compared as objects (never a byte
 * search over the DER); the payload is the single DER OCTET STRING inside extnValue, unwrapped
 * by a strict DER reader with a per-extension size cap.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dstack/ratls.h"

#define DER_TAG_OCTET_STRING 0x04
#define DER_MAX_LEN_BYTES    4
#define OID_TEXT_MAX         48

size_t ds_ratls_ext_max(enum ds_ratls_ext which)
{
    switch (which) {
    case DS_RATLS_EXT_TDX_QUOTE:
        return DS_RATLS_MAX_QUOTE;
    case DS_RATLS_EXT_EVENT_LOG:
        return DS_RATLS_MAX_EVENT_LOG;
    case DS_RATLS_EXT_APP_ID:
        return DS_RATLS_MAX_APP_ID;
    case DS_RATLS_EXT_USAGE:
        return DS_RATLS_MAX_USAGE;
    case DS_RATLS_EXT_ATTESTATION:
        return DS_RATLS_MAX_ATTESTATION;
    case DS_RATLS_EXT_APP_INFO:
        return DS_RATLS_MAX_APP_INFO;
    }
    return 0;
}

int ds_ratls_ext_unwrap(const uint8_t *der, size_t len, size_t max, const uint8_t **out,
                        size_t *out_len)
{
    struct ds_reader r;
    uint8_t tag, b;
    size_t n;
    const uint8_t *p;

    if (!der && len) {
        return -EINVAL;
    }
    ds_rd_init(&r, der, len);
    DS_TRY(ds_rd_u8(&r, &tag));
    if (tag != DER_TAG_OCTET_STRING) {
        return -DS_E_FORMAT; /* constructed or another type */
    }
    DS_TRY(ds_rd_u8(&r, &b));
    if (b < 0x80) {
        n = b;
    } else {
        size_t nb = b & 0x7f;
        if (nb == 0 || nb > DER_MAX_LEN_BYTES) {
            return -DS_E_FORMAT; /* indefinite length or absurd size */
        }
        n = 0;
        for (size_t i = 0; i < nb; i++) {
            DS_TRY(ds_rd_u8(&r, &b));
            if (i == 0 && b == 0) {
                return -DS_E_FORMAT; /* leading zero: not minimal */
            }
            n = (n << 8) | b;
        }
        if (n < 0x80) {
            return -DS_E_FORMAT; /* long form for a short length */
        }
    }
    if (n > max) {
        return -DS_E_LIMIT;
    }
    DS_TRY(ds_rd_ptr(&r, n, &p));
    if (ds_rd_left(&r) != 0) {
        return -DS_E_FORMAT; /* something after the OCTET STRING */
    }
    *out = p;
    *out_len = n;
    return 0;
}

int ds_ratls_cert_get_ext(X509 *cert, enum ds_ratls_ext which, const uint8_t **out, size_t *out_len)
{
    char oid_text[OID_TEXT_MAX];
    ASN1_OBJECT *want = NULL;
    const ASN1_OCTET_STRING *found = NULL;
    int r = 0;

    if (!cert || !out || !out_len || ds_ratls_ext_max(which) == 0) {
        return -EINVAL;
    }
    snprintf(oid_text, sizeof(oid_text), "%s.%d", DS_RATLS_OID_ARC, (int)which);
    want = OBJ_txt2obj(oid_text, 1);
    if (!want) {
        return -ENOMEM;
    }
    int count = X509_get_ext_count(cert);
    for (int i = 0; i < count; i++) {
        X509_EXTENSION *ext = X509_get_ext(cert, i);
        if (!ext || OBJ_cmp(X509_EXTENSION_get_object(ext), want) != 0) {
            continue;
        }
        if (found) {
            r = -DS_E_FORMAT; /* RFC 5280: an extension appears at most once */
            goto out;
        }
        found = X509_EXTENSION_get_data(ext);
    }
    if (!found) {
        r = -DS_E_NOT_FOUND;
        goto out;
    }
    r = ds_ratls_ext_unwrap(ASN1_STRING_get0_data(found), (size_t)ASN1_STRING_length(found),
                            ds_ratls_ext_max(which), out, out_len);
out:
    ASN1_OBJECT_free(want);
    return r;
}

int ds_ratls_cert_get_attestation(X509 *cert, struct ds_attestation **out)
{
    const uint8_t *p, *log;
    size_t n, log_len;

    int r = ds_ratls_cert_get_ext(cert, DS_RATLS_EXT_ATTESTATION, &p, &n);
    if (r == 0) {
        return ds_attestation_decode(p, n, out);
    }
    if (r != -DS_E_NOT_FOUND) {
        return r;
    }
    DS_TRY(ds_ratls_cert_get_ext(cert, DS_RATLS_EXT_TDX_QUOTE, &p, &n));
    r = ds_ratls_cert_get_ext(cert, DS_RATLS_EXT_EVENT_LOG, &log, &log_len);
    if (r < 0) {
        /* a legacy quote without its event log cannot be checked */
        return r == -DS_E_NOT_FOUND ? -DS_E_FORMAT : r;
    }
    return ds_attestation_from_legacy(p, n, (const char *)log, log_len, out);
}
