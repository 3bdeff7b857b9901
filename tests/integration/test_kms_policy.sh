#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# dstack-kms --dev --policy FILE: the built-in auth-simple policy decides the self-authorization
# gate of every trusted method (spec kms-ratls.md §2.2, §5.2). Each rule is hit in order with
# auth-simple's reason ("KMS is not allowed: <reason>"), hex is compared case- and
# 0x-insensitively, the file is re-read when it changes, a missing or invalid file means the
# default policy (denies), and GetMeta reports the policy's gateway/contract fields.
set -euo pipefail
. "$(dirname "$0")/kms_common.sh"

POL="$WORK/policy.json"
set_policy() { printf '%s' "$1" >"$POL.tmp" && mv "$POL.tmp" "$POL"; }
APP='{"app_id":"2222222222222222222222222222222222222222"}'

# Bootstrapping asks the policy too (self-authorization): a denying policy stops it.
if start_kms boot --dev --state-dir "$WORK/state" --listen 127.0.0.1:0 --policy "$POL"; then
    fail "bootstrapped although the default policy denies"
fi
grep -q 'KMS is not allowed: OS image is not allowed' "$WORK/boot.log" || fail "bootstrap denial"
[ -e "$WORK/state/root-ca.key" ] && fail "keys generated although denied"
ok "bootstrap refused by the policy (KMS is not allowed: OS image is not allowed)"
# bootstrap with the dev backend, then serve the same state under the policy
start_kms boot2 --dev --state-dir "$WORK/state" --listen 127.0.0.1:0 || fail "bootstrap"
stop_kms boot2
start_kms a --dev --state-dir "$WORK/state" --listen 127.0.0.1:0 --policy "$POL" ||
    fail "KMS did not start"
OS=$(jself a osImageHash)
MR=$(jself a mrAggregated)
DEV=$(jself a deviceId)
[ ${#MR} = 64 ] && [ ${#OS} = 64 ] || fail "own boot info not logged"

expect_denied() { # reason
    local out
    out=$(rpc "$PORT_a" GetAppEnvEncryptPubKey "$APP")
    [ "$(cat "$WORK/status")" = 400 ] || fail "expected denial ($1), got $out"
    echo "$out" | has "KMS is not allowed: $1" || fail "want reason '$1', got $out"
}
expect_allowed() {
    local out
    out=$(rpc "$PORT_a" GetAppEnvEncryptPubKey "$APP")
    [ "$(cat "$WORK/status")" = 200 ] || fail "expected allowed ($1), got $out"
}

expect_denied "OS image is not allowed"
ok "missing policy file: default policy denies"

set_policy "{\"osImages\":[\"0x$OS\"]}"
expect_denied "aggregated MR not allowed"
UPPER_MR=$(echo "$MR" | tr a-f A-F)
set_policy "{\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"0X$UPPER_MR\"]}}"
expect_allowed "os image + mrAggregated"
ok "rule order: OS image, then aggregated MR; hex normalised (case, 0x)"

set_policy "{\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"$MR\"],\"devices\":[\"0x$(printf '00%.0s' $(seq 32))\"]}}"
expect_denied "KMS is not allowed to boot on this device"
set_policy "{\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"$MR\"],\"devices\":[\"$DEV\"]}}"
expect_allowed "own device listed"
set_policy "{\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"$MR\"],\"devices\":[\"00\"],\"allowAnyDevice\":true}}"
expect_allowed "allowAnyDevice"
ok "device rule: listed, unlisted, allowAnyDevice"

set_policy "{\"allowedTcbStatuses\":[\"OutOfDate\"],\"osImages\":[\"$OS\"],\"kms\":{\"mrAggregated\":[\"$MR\"]}}"
expect_denied "TCB status is not allowed"
ok "TCB status rule comes first"

set_policy '{"osImages": ['
expect_denied "OS image is not allowed"
grep -q 'unusable' "$WORK/a.log" || fail "invalid policy not reported"
set_policy '{"osImages": "not-a-list"}'
expect_denied "OS image is not allowed"
ok "invalid policy file: default policy (denies), reported in the log"

# the other trusted methods go through the same gate; GetMeta does not
set_policy '{}'
out=$(rpc "$PORT_a" GetTempCaCert)
echo "$out" | has "KMS is not allowed: OS image is not allowed" || fail "GetTempCaCert: $out"
set_policy "{\"gatewayAppId\":\"gw-1\",\"kmsContractAddr\":\"0xabc\",\"chainId\":7,\"appImplementation\":\"0xdef\"}"
META=$(rpc "$PORT_a" GetMeta)
[ "$(cat "$WORK/status")" = 200 ] || fail "GetMeta under a denying policy: $META"
[ "$(jget "$META" gateway_app_id)" = gw-1 ] || fail "gateway_app_id: $META"
[ "$(jget "$META" kms_contract_address)" = 0xabc ] || fail "kms_contract_address: $META"
[ "$(jget "$META" chain_id)" = 7 ] || fail "chain_id: $META"
[ "$(jget "$META" app_auth_implementation)" = 0xdef ] || fail "app_auth_implementation: $META"
[ "$(jget "$META" is_dev)" = False ] || fail "is_dev with a policy: $META"
ok "GetTempCaCert gated; GetMeta not gated and reports the policy's fields"
echo "all dstack-kms policy tests passed"
