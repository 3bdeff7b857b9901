/* SPDX-License-Identifier: Apache-2.0 */
/* Keeps the dstack-common library non-empty before any shared daemon code exists. */
int ds_common_placeholder_unused;
