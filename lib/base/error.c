/* SPDX-License-Identifier: Apache-2.0 */
/* Error strings for libdstack's domain codes and -errno values. */
#include <string.h>

#include "dstack/base.h"

static const char *const ds_err_names[] = {
    [DS_E_TRUNCATED - DS_E_BASE] = "input truncated",
    [DS_E_FORMAT - DS_E_BASE] = "malformed input",
    [DS_E_LIMIT - DS_E_BASE] = "size limit exceeded",
    [DS_E_UNSUPPORTED - DS_E_BASE] = "unsupported version, type or algorithm",
    [DS_E_CRYPTO - DS_E_BASE] = "cryptographic operation failed",
    [DS_E_SIGNATURE - DS_E_BASE] = "signature does not verify",
    [DS_E_CERT - DS_E_BASE] = "certificate or CRL verification failed",
    [DS_E_EXPIRED - DS_E_BASE] = "outside validity window",
    [DS_E_MISMATCH - DS_E_BASE] = "value mismatch",
    [DS_E_POLICY - DS_E_BASE] = "rejected by policy",
    [DS_E_NOT_FOUND - DS_E_BASE] = "not found",
    [DS_E_IO - DS_E_BASE] = "I/O error",
    [DS_E_NETWORK - DS_E_BASE] = "network error",
    [DS_E_PROTOCOL - DS_E_BASE] = "protocol error",
    [DS_E_DENIED - DS_E_BASE] = "permission denied",
    [DS_E_STATE - DS_E_BASE] = "invalid state",
};

const char *ds_strerror(int err)
{
    int e = err < 0 ? -err : err;
    if (e > DS_E_BASE && e < DS_E_MAX && ds_err_names[e - DS_E_BASE])
        return ds_err_names[e - DS_E_BASE];
    if (e > 0 && e < DS_E_BASE)
        return strerror(e);
    return e == 0 ? "success" : "unknown error";
}
