#!/bin/bash
# Tests a foreign-architecture build under qemu-user (default: the aarch64 one):
#  1. the library's unit tests, built for the target, qemu as cargo's runner;
#  2. a smoke run of the release binary from packaging/build.sh: `server --dev`, then
#     that binary's CLI creates a key, generates a DEK and decrypts it again;
#     /v1/status names the architecture;
#  3. the spec's ciphertext vectors (tests/vectors, copies of the spec's) imported into
#     and decrypted by that server.
# Run after packaging/build.sh (packaging/test.sh runs it). Needs curl and python3;
# installs qemu-user-static and the cross C compiler when missing (Debian, as root).
#
# Environment: KES_QEMU_TARGET (default aarch64-unknown-linux-musl), KES_PACKAGE_DIR.
set -euo pipefail

started=$(date +%s)
cd "$(dirname "$0")/.."
# shellcheck source=packaging/targets.sh
. packaging/targets.sh
TARGET=${KES_QEMU_TARGET:-aarch64-unknown-linux-musl}
OUT=${KES_PACKAGE_DIR:-target/packages}
BIN=$OUT/kes-$TARGET
WORK=$(mktemp -d /tmp/kes-qemu-test.XXXXXX)
SERVER_PID=

step() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    [ ! -s "$WORK/server.log" ] || tail -n 20 "$WORK/server.log" >&2
    exit 1
}
on_exit() {
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap on_exit EXIT

[ -x "$BIN" ] || fail "no $BIN: run packaging/build.sh first"
target_setup "$TARGET"
target_runner "$TARGET"
[ -n "$QEMU" ] || fail "$TARGET is this machine's architecture: nothing to emulate"
command -v "$QEMU" >/dev/null || fail "no $QEMU"

step "unit tests of the library for $TARGET under $QEMU"
t0=$(date +%s)
cargo test --locked --target "$TARGET" --lib 2>&1 | tee "$WORK/unit.log" | grep -E '^test result|FAILED|panicked' || true
grep -q '^test result: ok\.' "$WORK/unit.log" || fail "unit tests: $(tail -n 30 "$WORK/unit.log")"
ok "$(grep '^test result' "$WORK/unit.log") in $(($(date +%s) - t0))s"

step "smoke run: $QEMU $BIN server --dev"
file "$BIN" | grep -q "$(case $TARGET in aarch64-*) echo 'ARM aarch64' ;; *) echo "${TARGET%%-*}" ;; esac)" ||
    fail "$BIN is not a $TARGET binary: $(file -b "$BIN")"
"$QEMU" "$BIN" --version >"$WORK/version"
grep -qx "Target *$TARGET" "$WORK/version" || fail "kes --version: $(cat "$WORK/version")"
ok "$(tr -s ' ' <"$WORK/version" | tr '\n' ';')"
port=
for candidate in $(shuf -i 20000-60000 -n 50); do
    if ! grep -qi ":$(printf '%04X' "$candidate") " /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
        port=$candidate
        break
    fi
done
"$QEMU" "$BIN" server --dev --addr "127.0.0.1:$port" >"$WORK/server.log" 2>&1 &
SERVER_PID=$!
dir=
for _ in $(seq 1 300); do
    dir=$(sed -n 's/^ *files: *\(.*\)\/server.cert .*/\1/p' "$WORK/server.log")
    [ -z "$dir" ] || break
    kill -0 "$SERVER_PID" 2>/dev/null || fail "server --dev exited"
    sleep 0.1
done
[ -n "$dir" ] || fail "server --dev printed no credentials"
https() { # method path [curl args]
    local method=$1 path=$2
    shift 2
    curl -sS --fail-with-body --max-time 20 --cacert "$dir/server.cert" --cert "$dir/admin.cert" \
        --key "$dir/admin.key" -X "$method" "$@" "https://127.0.0.1:$port$path"
}
for _ in $(seq 1 100); do
    if https GET /v1/status >"$WORK/status" 2>/dev/null; then break; fi
    sleep 0.1
done
arch=$(case $TARGET in aarch64-*) echo arm64 ;; x86_64-*) echo amd64 ;; *) echo "${TARGET%%-*}" ;; esac)
grep -q "\"arch\":\"$arch\"" "$WORK/status" || fail "/v1/status: $(cat "$WORK/status")"
ok "/v1/status: $(cat "$WORK/status")"

export KES_SERVER=https://127.0.0.1:$port KES_CLIENT_CERT=$dir/admin.cert KES_CLIENT_KEY=$dir/admin.key
cli() { "$QEMU" "$BIN" "$@" </dev/null; }
cli key create -k qemu-smoke || fail "kes key create"
cli key dek -k qemu-smoke >"$WORK/dek" || fail "kes key dek"
read -r plaintext ciphertext < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
print(d["plaintext"], d["ciphertext"])' "$WORK/dek") || fail "kes key dek: $(cat "$WORK/dek")"
cli key decrypt -k qemu-smoke "$ciphertext" >"$WORK/plain" || fail "kes key decrypt"
[ "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["plaintext"])' "$WORK/plain")" = "$plaintext" ] ||
    fail "decrypted DEK differs: $(cat "$WORK/plain") vs $plaintext"
ok "the $TARGET CLI created a key, generated a DEK and decrypted it to the same plaintext"

step "spec ciphertext vectors through the $TARGET server"
# One line per case: name, key type, master key, ciphertext, context ("-" for none), plaintext.
python3 - tests/vectors/ciphertext-current.json tests/vectors/ciphertext-legacy.json >"$WORK/cases" <<'EOF'
import json, sys
current = json.load(open(sys.argv[1]))
legacy = json.load(open(sys.argv[2]))
cases = [("current-" + c["name"], c) for c in current["cases"]]
cases += [(f"legacy-{form}-{i}", c) for form in ("json", "msgpack") for i, c in enumerate(legacy[form])]
for name, c in cases:
    print(name, c["key_type"], c["master_key_b64"], c["ciphertext_b64"], c["context_b64"] or "-", c["plaintext_b64"])
EOF
count=0
while read -r name type key ciphertext context plaintext; do
    https POST "/v1/key/import/vec-$name" -d "{\"key\":\"$key\",\"cipher\":\"$type\"}" >/dev/null ||
        fail "import vec-$name"
    body="{\"ciphertext\":\"$ciphertext\""
    [ "$context" = - ] || body="$body,\"context\":\"$context\""
    https POST "/v1/key/decrypt/vec-$name" -d "$body}" >"$WORK/decrypted" || fail "decrypt vec-$name"
    grep -q "\"plaintext\":\"$plaintext\"" "$WORK/decrypted" ||
        fail "vec-$name: $(cat "$WORK/decrypted"), expected $plaintext"
    count=$((count + 1))
done <"$WORK/cases"
[ "$count" -ge 10 ] || fail "only $count vectors"
ok "$count vectors (current, legacy JSON, legacy msgpack) decrypt to the spec's plaintexts"

printf '\npackaging/qemu-test.sh: passed after %ss\n' "$(($(date +%s) - started))"
