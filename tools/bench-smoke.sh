#!/usr/bin/env bash
# Smoke run of kes-bench for CI: starts a kes server (fs keystore, throw-away PKI) on
# a free port, runs kes-bench for ~2 s with 2 connections for generate and decrypt
# (and ~2 s each with 8 connections on --event-loop),
# then a tiny handshake storm and flood (~1 s each), and fails unless every run reports
# requests and zero errors. No timing assertions.
#
# Usage: tools/bench-smoke.sh            (debug build)
#        PROFILE=release tools/bench-smoke.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PROFILE=${PROFILE:-debug}
flag=
[ "$PROFILE" = release ] && flag=--release
cargo build --quiet $flag -p kes --bin kes
cargo build --quiet $flag -p kes-bench
KES=target/$PROFILE/kes
BENCH=target/$PROFILE/kes-bench

dir=$(mktemp -d)
server_pid=
cleanup() {
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT

identity=$("$BENCH" certs "$dir/pki")
mkdir "$dir/keys"
cat >"$dir/config.yml" <<YAML
tls:
  key: $dir/pki/server.key
  cert: $dir/pki/server.cert
admin:
  identity: $identity
keystore:
  fs:
    path: $dir/keys
YAML

# Port 0: the kernel picks a free port; the banner tells which.
"$KES" server --config "$dir/config.yml" --addr 127.0.0.1:0 2>"$dir/server.log" &
server_pid=$!
url=
for _ in $(seq 100); do
    url=$(grep -o 'https://127\.0\.0\.1:[0-9]*' "$dir/server.log" | head -n1 || true)
    [ -n "$url" ] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "bench-smoke: the server exited:" >&2
        cat "$dir/server.log" >&2
        exit 1
    fi
    sleep 0.1
done
if [ -z "$url" ]; then
    echo "bench-smoke: the server did not report its address" >&2
    cat "$dir/server.log" >&2
    exit 1
fi

status=0
# Thread per connection, then the event-loop load (resident-key benchmark's).
for run in "generate" "decrypt" "generate --event-loop --connections 8" \
    "decrypt --event-loop --connections 8"; do
    # shellcheck disable=SC2086 # the run's options are meant to split
    out=$("$BENCH" --server "$url" --cacert "$dir/pki/server.cert" \
        --cert "$dir/pki/client.cert" --key "$dir/pki/client.key" \
        --key-name smoke --connections 2 --duration 2s --json --op $run) || true
    echo "bench-smoke: $run: $out"
    if ! printf '%s' "$out" | grep -q '"errors":0,' ||
        printf '%s' "$out" | grep -q '"ok":0,'; then
        echo "bench-smoke: $run FAILED (errors, or no request succeeded)" >&2
        status=1
    fi
done
for scenario in "storm --storm-clients 2" "flood --silent 50 --slow 10 --churn 1"; do
    # shellcheck disable=SC2086 # the scenario's options are meant to split
    out=$("$BENCH" $scenario --server "$url" --cacert "$dir/pki/server.cert" \
        --cert "$dir/pki/client.cert" --key "$dir/pki/client.key" \
        --key-name smoke --duration 500ms --settle 200ms --json) && ok=1 || ok=0
    echo "bench-smoke: ${scenario%% *}: $out"
    # Exit status 0: no failed request, of the good client nor of the storm or churn;
    # and each of them had requests answered.
    if [ "$ok" = 0 ] || ! printf '%s' "$out" | grep -q '"p99_ratio":' ||
        printf '%s' "$out" | grep -q '"ok":0,'; then
        echo "bench-smoke: ${scenario%% *} FAILED (errors, or no result)" >&2
        status=1
    fi
done
if [ "$status" = 0 ]; then
    echo "bench-smoke: 6 passed, 0 failed"
else
    echo "bench-smoke: FAILED" >&2
fi
exit "$status"
