#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
#
# libdstack-client (sdk/c) against the guest agent in simulator mode, over the Unix socket
# (-e PATH) and over HTTP (DSTACK_SIMULATOR_ENDPOINT=http://...), using the example programs
# dstack-example-getkey and dstack-example-tour. Every value they print is compared with what
# curl gets from the agent for the same request:
#  - GetKey key and signature chain (deterministic), GetQuote size, padded report data, the C
#    replay of the event log against RTMR3 inside the curl'ed quote, Info app_id;
#  - Version, RA-TLS key, Attest (SCALE V0 first byte), Sign/Verify for each algorithm
#    (tampered signatures invalid), client-side rejections, server errors with their message;
#  - EmitEvent: the event appears in the next GetQuote's event log;
#  - endpoint errors: missing socket, dead TCP port, no endpoint at all.
set -u

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
AGENT="$DS_BIN/dstack-guest-agent"
GETKEY="$DS_BIN/dstack-example-getkey"
TOUR="$DS_BIN/dstack-example-tour"

ds_need_tools jq curl
ds_need_bins "$AGENT" "$GETKEY" "$TOUR"

ds_tmpdir
AGENT_PID=""
ds_stop_on_exit AGENT_PID

# run PROG ARGS...: sets $rc, $out, $err; a sanitizer report is a failure by itself.
run() { ds_run "$@"; }
# field NAME: value of a name=value line of the last run.
field() { sed -n "s/^$1=//p" <<<"$out" | head -1; }

SOCK="$TMP/dstack.sock"
TSOCK="$TMP/tappd.sock"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
URL="http://127.0.0.1:$PORT"
"$AGENT" --simulator --socket "$SOCK" --tappd-socket "$TSOCK" --http "127.0.0.1:$PORT" \
    >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
agent_up() { [ -S "$SOCK" ] && curl -s -o /dev/null "$URL/Version"; }
ds_wait_for 10 "$AGENT_PID" agent_up
if ! [ -S "$SOCK" ]; then
    echo "FAIL: agent did not start"
    cat "$TMP/agent.log"
    exit 1
fi

# rpc ENDPOINT METHOD JSON: POST JSON to the agent with curl, print the body.
rpc() {
    if [[ "$1" == http* ]]; then
        curl -s -H 'Content-Type: application/json' -d "$3" "$1/$2"
    else
        curl -s --unix-socket "$1" -H 'Content-Type: application/json' -d "$3" "http://localhost/$2"
    fi
}

NONCE="hello from C"
NONCE_HEX="$(printf '%s' "$NONCE" | od -An -tx1 | tr -d ' \n')"
PADDED="$(printf '%-128s' "$NONCE_HEX" | tr ' ' 0)"
KEY_JSON="$(rpc "$SOCK" GetKey '{"path":"/test/path","purpose":"test-purpose","algorithm":"secp256k1"}')"
WANT_KEY="$(jq -r .key <<<"$KEY_JSON")"
WANT_CHAIN_N="$(jq -r '.signature_chain|length' <<<"$KEY_JSON")"
WANT_SIG0="$(jq -r '.signature_chain[0]' <<<"$KEY_JSON")"
WANT_SIG1="$(jq -r '.signature_chain[1]' <<<"$KEY_JSON")"
WANT_APP_ID="$(rpc "$SOCK" Info '{}' | jq -r .app_id)"
WANT_VERSION="$(rpc "$SOCK" Version '{}' | jq -r .version)"
QUOTE_HEX="$(rpc "$SOCK" GetQuote "{\"report_data\":\"$NONCE_HEX\"}" | jq -r .quote)"
WANT_QUOTE_SIZE=$((${#QUOTE_HEX} / 2))
WANT_RTMR3="${QUOTE_HEX:1040:96}" # quote bytes 520..568
[ ${#WANT_KEY} -eq 64 ] || fail "curl GetKey gave no key: $KEY_JSON"

for transport in unix http; do
    if [ $transport = unix ]; then
        run "$GETKEY" -e "$SOCK" /test/path test-purpose "$NONCE"
        want_ep="$SOCK"
    else
        DSTACK_SIMULATOR_ENDPOINT="$URL" run "$GETKEY" /test/path test-purpose "$NONCE"
        want_ep="$URL"
    fi
    check "$transport: getkey exit status (stderr: $err)" "$rc" 0
    check "$transport: endpoint" "$(field endpoint)" "$want_ep"
    check "$transport: key = curl GetKey key" "$(field key)" "$WANT_KEY"
    check "$transport: signature chain length" "$(field signature_chain_count)" "$WANT_CHAIN_N"
    check "$transport: signature_chain[0]" "$(field signature_chain_0)" "$WANT_SIG0"
    check "$transport: signature_chain[1]" "$(field signature_chain_1)" "$WANT_SIG1"
    check "$transport: quote size = curl GetQuote size" "$(field quote_size)" "$WANT_QUOTE_SIZE"
    check "$transport: report data zero-padded" "$(field report_data)" "$PADDED"
    check "$transport: C replay of the event log = RTMR3 in the quote" \
        "$(field replayed_rtmr3)" "$WANT_RTMR3"
    check "$transport: app_id = curl Info app_id" "$(field app_id)" "$WANT_APP_ID"

    if [ $transport = unix ]; then
        run "$TOUR" -e "$SOCK"
    else
        DSTACK_SIMULATOR_ENDPOINT="$URL" run "$TOUR" -E "c-sdk-event"
    fi
    check "$transport: tour exit status (stderr: $err)" "$rc" 0
    check "$transport: reachable" "$(field reachable)" true
    check "$transport: version = curl Version" "$(field version)" "$WANT_VERSION"
    check "$transport: TLS key is PKCS#8" "$(field tls_key_pkcs8)" true
    check "$transport: TLS chain [leaf, CA]" "$(field tls_chain_count)" 2
    check "$transport: attestation is SCALE V0" "$(field attestation_first_byte)" 00
    for alg in ed25519 secp256k1 secp256k1_prehashed; do
        check "$transport: $alg verifies" "$(field "verify_$alg")" true
        check "$transport: $alg tampered signature invalid" "$(field "verify_${alg}_tampered")" false
        check "$transport: $alg chain has 3 entries" "$(field "sign_${alg}_chain_count")" 3
    done
    check "$transport: ed25519 public key 32 bytes" "$(field sign_ed25519_public_key_size)" 32
    check "$transport: secp256k1 public key 33 bytes" "$(field sign_secp256k1_public_key_size)" 33
    check "$transport: short pre-hashed digest refused" "$(field prehashed_short)" "invalid argument"
    check "$transport: 65-byte report data refused" "$(field quote_65_bytes)" \
        "report data is longer than 64 bytes"
    check "$transport: rsa GetKey error carries the server message" "$(field getkey_rsa)" \
        "the dstack agent returned an error: Unsupported algorithm"
done

# The HTTP tour emitted an event: it must be the last RTMR3 event of the next quote's log.
LAST="$(rpc "$URL" GetQuote '{}' | jq -r '.event_log|fromjson|map(select(.imr==3))|last|.event + ":" + .event_payload')"
check "EmitEvent through the C SDK reached the event log" "$LAST" \
    "c-sdk-event:$(printf 'tour-payload' | od -An -tx1 | tr -d ' \n')"

# Endpoint errors.
run "$GETKEY" -e "$TMP/missing.sock"
check "missing socket: exit 1" "$rc" 1
grep -q "no dstack agent endpoint" <<<"$err" && pass "missing socket: message" ||
    fail "missing socket: message was '$err'"
run "$GETKEY" -e "http://127.0.0.1:1"
check "dead TCP endpoint: exit 1" "$rc" 1
grep -q "cannot reach the dstack agent" <<<"$err" && pass "dead TCP endpoint: message" ||
    fail "dead TCP endpoint: message was '$err'"
if ! [ -e /var/run/dstack.sock ] && ! [ -e /run/dstack.sock ] &&
    ! [ -e /var/run/dstack/dstack.sock ] && ! [ -e /run/dstack/dstack.sock ]; then
    env -u DSTACK_SIMULATOR_ENDPOINT "$GETKEY" >"$TMP/out" 2>"$TMP/err"
    rc=$?
    check "no endpoint anywhere: exit 1" "$rc" 1
    grep -q "no dstack agent endpoint" "$TMP/err" && pass "no endpoint: message" ||
        fail "no endpoint: message was '$(cat "$TMP/err")'"
fi

if [ "$failures" -ne 0 ]; then
    echo "agent log:"
    tail -20 "$TMP/agent.log"
fi
ds_finish "all passed"
