#!/bin/bash
# Packaging test: builds the static binaries and packages (packaging/build.sh),
# checks their contents (the arm64 ones against the x86_64 ones), SHA256SUMS and the
# SBOMs, installs the .deb (and the .rpm with Debian's rpm) on this
# machine, runs the unit's ExecStart as the kes user against a test certificate,
# calls /v1/status and creates a key, stops kes; runs the unit under a systemd booted
# in namespaces; purges the package and checks what is left; then smoke-tests the bare
# static binary and checks its system calls against the unit's SystemCallFilter.
#
# Needs root and apt (Debian/Ubuntu). Changes this machine: installs and purges the
# kes package, creates and deletes the kes user. Refuses to run if kes is installed
# or /var/lib/kes holds anything but its own test key (KES_PKG_TEST_FORCE=1 overrides).
# Re-runnable: it cleans up after itself, also after a failure.
#
# Environment: KES_TEST_PORT (default: a free port), KES_PACKAGE_DIR (default target/packages).
set -euo pipefail

started=$(date +%s)
cd "$(dirname "$0")/.."
ROOT=$PWD
# A free port, unless given: other kes servers may be running on this machine.
port_free() { ! grep -qi ":$(printf '%04X' "$1") " /proc/net/tcp /proc/net/tcp6 2>/dev/null; }
PORT=${KES_TEST_PORT:-}
if [ -z "$PORT" ]; then
    for candidate in $(shuf -i 20000-60000 -n 50); do
        if port_free "$candidate"; then PORT=$candidate; break; fi
    done
fi
OUT=${KES_PACKAGE_DIR:-$ROOT/target/packages}
export KES_PACKAGE_DIR=$OUT
TARGET=x86_64-unknown-linux-musl
UNIT=/usr/lib/systemd/system/kes.service
TEST_KEY="kes-pkg-test"
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

WORK=
SERVER_PID= # the process we started: runuser or strace
KES_PID=    # kes itself, its child: what systemd calls $MAINPID
FAILED=1

# `kes --version` prints "Version <v>" first, as the Go CLI does.
version_ok() {
    local out
    out=$("$1" --version) || return 1
    [ "$(printf '%s\n' "$out" | sed -n 1p | tr -s ' ')" = "Version $VERSION" ]
}
step() { printf '\n==> [%3ss] %s\n' "$(($(date +%s) - started))" "$*"; }
ok() { printf '    ok: %s\n' "$*"; }
fail() {
    printf 'FAIL: %s\n' "$*" >&2
    exit 1
}

# Leaves the machine as a fresh one: no package, no test files, no kes user.
reset_machine() {
    if dpkg-query -W -f '${Status}' kes 2>/dev/null | grep -qv 'not-installed'; then
        dpkg --purge kes >/dev/null 2>&1 || true
    fi
    if command -v rpm >/dev/null && rpm -q kes >/dev/null 2>&1; then
        rpm -e --nodeps kes >/dev/null 2>&1 || true
    fi
    rm -f "/var/lib/kes/$TEST_KEY" /etc/kes/private.key /etc/kes/public.crt \
        /etc/kes/config.yml.rpmsave /etc/kes/config.yml.dpkg-old
    rmdir /var/lib/kes /etc/kes 2>/dev/null || true
    if [ ! -e /var/lib/kes ] && [ ! -e /etc/kes ]; then
        if getent passwd kes >/dev/null; then userdel kes >/dev/null 2>&1 || true; fi
        if getent group kes >/dev/null; then groupdel kes >/dev/null 2>&1 || true; fi
    fi
}

stop_server() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        [ -z "$KES_PID" ] || kill -TERM "$KES_PID" 2>/dev/null || true
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    SERVER_PID=
}

# Stops the namespaced systemd and removes the cgroups it made. unshare ignores
# SIGTERM; on SIGKILL, --kill-child takes PID 1 and with it the whole namespace.
stop_systemd() {
    local cg busy
    if [ -n "${SD_PID:-}" ]; then
        kill -KILL "$SD_PID" 2>/dev/null || true # --kill-child: systemd gets SIGKILL too
        wait "$SD_PID" 2>/dev/null || true
        SD_PID=
    fi
    # The namespace dies asynchronously: wait until its cgroups are empty.
    for _ in $(seq 1 50); do
        busy=$(find /sys/fs/cgroup/*/kes-pkg-test /sys/fs/cgroup/kes-pkg-test -name cgroup.procs \
            -exec cat {} + 2>/dev/null || true)
        [ -n "$busy" ] || break
        sleep 0.1
    done
    for cg in /sys/fs/cgroup/*/kes-pkg-test /sys/fs/cgroup/kes-pkg-test; do
        if [ -d "$cg" ]; then find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
        [ ! -d "$cg" ] || echo "packaging/test.sh: could not remove the test cgroup $cg" >&2
    done
    if [ -n "${SD_DIR:-}" ]; then
        [ "$FAILED" = 0 ] || tail -n 20 "$SD_DIR/kes.log" "$SD_DIR/systemd.log" 2>/dev/null >&2 || true
        rm -rf "$SD_DIR"
        SD_DIR=
    fi
}

on_exit() {
    stop_server
    stop_systemd
    if [ "$FAILED" = 1 ]; then
        for log in "$WORK"/*.log; do
            [ -s "$log" ] || continue
            printf -- '--- %s\n' "$log" >&2
            tail -n 30 "$log" >&2
        done
    fi
    reset_machine
    [ -z "$WORK" ] || rm -rf "$WORK"
    printf '\npackaging/test.sh: %s after %ss\n' "$([ "$FAILED" = 1 ] && echo FAILED || echo passed)" \
        "$(($(date +%s) - started))"
}

[ "$(id -u)" = 0 ] || fail "run as root (installs packages and creates users)"

# Guard before the trap: never clean up someone else's installation.
if [ "${KES_PKG_TEST_FORCE:-0}" != 1 ]; then
    if dpkg-query -W -f '${Status}' kes 2>/dev/null | grep -q ' installed$'; then
        fail "the kes package is installed here; the test would purge it (KES_PKG_TEST_FORCE=1 to allow)"
    fi
    if [ -d /var/lib/kes ] && [ -n "$(find /var/lib/kes -mindepth 1 ! -name "$TEST_KEY" -print -quit)" ]; then
        fail "/var/lib/kes holds keys; not touching them (KES_PKG_TEST_FORCE=1 to allow)"
    fi
fi
WORK=$(mktemp -d /tmp/kes-pkg-test.XXXXXX)
chmod 0755 "$WORK"
trap on_exit EXIT
reset_machine

step "tools"
missing=()
for tool in rpm:rpm curl:curl openssl:openssl file:file strace:strace prlimit:util-linux \
    runuser:util-linux useradd:passwd systemd-analyze:systemd lintian:lintian rpmlint:rpmlint \
    man:man-db; do
    command -v "${tool%%:*}" >/dev/null || missing+=("${tool##*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "    apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    }
fi
ok "rpm curl openssl file strace prlimit runuser useradd systemd-analyze lintian rpmlint man"

step "build (packaging/build.sh)"
t0=$(date +%s)
packaging/build.sh
ok "built in $(($(date +%s) - t0))s"
DEB=$OUT/kes_${VERSION}-1_amd64.deb
RPM=$OUT/kes-${VERSION}-1.x86_64.rpm
BIN=$ROOT/target/$TARGET/release/kes
[ -f "$DEB" ] || fail "no $DEB"
[ -f "$RPM" ] || fail "no $RPM"
printf '    binary %s bytes, deb %s bytes, rpm %s bytes\n' \
    "$(stat -c %s "$BIN")" "$(stat -c %s "$DEB")" "$(stat -c %s "$RPM")"

step "static binary"
file "$BIN" | grep -Eq 'statically linked|static-pie linked' || fail "not static: $(file "$BIN")"
ldd "$BIN" 2>&1 | grep -Eq 'not a dynamic executable|statically linked' || fail "ldd: $(ldd "$BIN" 2>&1)"
version_ok "$BIN" || fail "kes --version: $("$BIN" --version)"
"$BIN" --version | grep -qx "Target *$TARGET" || fail "kes --version names no target: $("$BIN" --version)"
if git rev-parse --verify -q HEAD >/dev/null 2>&1; then
    "$BIN" --version | grep -qx "Commit *$(git rev-parse HEAD)" || fail "kes --version: not commit $(git rev-parse HEAD)"
fi
ok "$(file -b "$BIN")"

# Compares "mode owner path" lines of a package with the expected ones.
check_list() { # what actual-file expected-file
    if ! diff -u "$3" "$2"; then
        fail "$1: file list differs (- expected, + actual)"
    fi
    ok "$1: $(wc -l <"$2") entries as expected"
}

# "mode owner path" lines of a package.
deb_list() {
    dpkg-deb -c "$1" | awk '{ p = $6; sub(/^\./, "", p); sub(/\/$/, "", p); if (p != "") print $1, $2, p }' | sort -k3
}
rpm_list() { rpm -qlvp "$1" 2>/dev/null | awk '{ print $1, $3 "/" $4, $NF }' | sort -k3; }

# The man pages the binary writes ("kes-key(1)" -> /usr/share/man/man1/kes-key.1.gz):
# a command added to kes gets its page without an edit here.
man_pages() { "$BIN" man | sed -n 's|^\(.*\)(\([0-9]\))$|/usr/share/man/man\2/\1.\2.gz|p'; }
[ "$(man_pages | wc -l)" -ge 3 ] || fail "kes man lists no pages: $("$BIN" man)"

step "deb contents"
# cargo-deb records owners as numbers: 0/0 is root:root.
deb_list "$DEB" >"$WORK/deb.list"
{
    cat <<'EOF'
drwxr-xr-x 0/0 /etc
drwxr-xr-x 0/0 /etc/kes
-rw-r----- 0/0 /etc/kes/config.yml
drwxr-xr-x 0/0 /usr
drwxr-xr-x 0/0 /usr/bin
-rwxr-xr-x 0/0 /usr/bin/kes
drwxr-xr-x 0/0 /usr/lib
drwxr-xr-x 0/0 /usr/lib/systemd
drwxr-xr-x 0/0 /usr/lib/systemd/system
-rw-r--r-- 0/0 /usr/lib/systemd/system/kes.service
drwxr-xr-x 0/0 /usr/share
drwxr-xr-x 0/0 /usr/share/bash-completion
drwxr-xr-x 0/0 /usr/share/bash-completion/completions
-rw-r--r-- 0/0 /usr/share/bash-completion/completions/kes
drwxr-xr-x 0/0 /usr/share/doc
drwxr-xr-x 0/0 /usr/share/doc/kes
-rw-r--r-- 0/0 /usr/share/doc/kes/README.md
-rw-r--r-- 0/0 /usr/share/doc/kes/changelog.Debian.gz
-rw-r--r-- 0/0 /usr/share/doc/kes/copyright
drwxr-xr-x 0/0 /usr/share/fish
drwxr-xr-x 0/0 /usr/share/fish/vendor_completions.d
-rw-r--r-- 0/0 /usr/share/fish/vendor_completions.d/kes.fish
drwxr-xr-x 0/0 /usr/share/kes
drwxr-xr-x 0/0 /usr/share/kes/grafana
-rw-r--r-- 0/0 /usr/share/kes/grafana/kes-dashboard.json
drwxr-xr-x 0/0 /usr/share/kes/prometheus
-rw-r--r-- 0/0 /usr/share/kes/prometheus/kes-alerts.yml
drwxr-xr-x 0/0 /usr/share/lintian
drwxr-xr-x 0/0 /usr/share/lintian/overrides
-rw-r--r-- 0/0 /usr/share/lintian/overrides/kes
drwxr-xr-x 0/0 /usr/share/man
drwxr-xr-x 0/0 /usr/share/man/man1
drwxr-xr-x 0/0 /usr/share/man/man5
drwxr-xr-x 0/0 /usr/share/zsh
drwxr-xr-x 0/0 /usr/share/zsh/vendor-completions
-rw-r--r-- 0/0 /usr/share/zsh/vendor-completions/_kes
EOF
    man_pages | sed 's|^|-rw-r--r-- 0/0 |'
} | sort -k3 >"$WORK/deb.expected"
check_list deb "$WORK/deb.list" "$WORK/deb.expected"
[ "$(dpkg-deb -f "$DEB" Depends)" = passwd ] || fail "deb Depends: $(dpkg-deb -f "$DEB" Depends)"
dpkg-deb --ctrl-tarfile "$DEB" | tar -xO ./conffiles >"$WORK/conffiles"
[ "$(cat "$WORK/conffiles")" = /etc/kes/config.yml ] || fail "conffiles: $(cat "$WORK/conffiles")"
mkdir "$WORK/control"
dpkg-deb -e "$DEB" "$WORK/control"
for script in postinst prerm postrm; do
    sh -n "$WORK/control/$script" || fail "deb $script: syntax"
done
ok "Depends: passwd; conffile /etc/kes/config.yml; maintainer scripts parse"

step "rpm contents"
rpm_list "$RPM" >"$WORK/rpm.list"
{
    cat <<'EOF'
-rw-r----- root/kes /etc/kes/config.yml
-rwxr-xr-x root/root /usr/bin/kes
-rw-r--r-- root/root /usr/lib/systemd/system/kes.service
-rw-r--r-- root/root /usr/share/bash-completion/completions/kes
-rw-r--r-- root/root /usr/share/doc/kes/README.md
-rw-r--r-- root/root /usr/share/fish/vendor_completions.d/kes.fish
-rw-r--r-- root/root /usr/share/kes/grafana/kes-dashboard.json
-rw-r--r-- root/root /usr/share/kes/prometheus/kes-alerts.yml
-rw-r--r-- root/root /usr/share/licenses/kes/LICENSE
-rw-r--r-- root/root /usr/share/zsh/site-functions/_kes
EOF
    man_pages | sed 's|^|-rw-r--r-- root/root |'
} | sort -k3 >"$WORK/rpm.expected"
check_list rpm "$WORK/rpm.list" "$WORK/rpm.expected"
[ "$(rpm -qcp "$RPM" 2>/dev/null)" = /etc/kes/config.yml ] || fail "rpm config files: $(rpm -qcp "$RPM")"
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" 2>/dev/null | grep -qx 'cn /etc/kes/config.yml' ||
    fail "rpm: config.yml is not %config(noreplace)"
if rpm -qpR "$RPM" 2>/dev/null | grep -q '^lib'; then fail "rpm requires shared libraries: $(rpm -qpR "$RPM")"; fi
rpm -qp --scripts "$RPM" 2>/dev/null >"$WORK/rpm.scripts"
for phase in preinstall postinstall preuninstall postuninstall; do
    grep -q "^$phase scriptlet" "$WORK/rpm.scripts" || fail "rpm: no $phase scriptlet"
done
for script in packaging/rpm/*.sh; do sh -n "$script" || fail "$script: syntax"; done
ok "%config(noreplace) /etc/kes/config.yml; no library requirements; 4 scriptlets"

step "arm64 packages: the same files, modes, scripts as the x86_64 ones"
DEB_ARM=$OUT/kes_${VERSION}-1_arm64.deb
RPM_ARM=$OUT/kes-${VERSION}-1.aarch64.rpm
[ -f "$DEB_ARM" ] || fail "no $DEB_ARM"
[ -f "$RPM_ARM" ] || fail "no $RPM_ARM"
deb_list "$DEB_ARM" >"$WORK/deb-arm64.list"
check_list "arm64 deb" "$WORK/deb-arm64.list" "$WORK/deb.list"
rpm_list "$RPM_ARM" >"$WORK/rpm-arm64.list"
check_list "arm64 rpm" "$WORK/rpm-arm64.list" "$WORK/rpm.list"
[ "$(dpkg-deb -f "$DEB_ARM" Architecture)" = arm64 ] || fail "arm64 deb: Architecture $(dpkg-deb -f "$DEB_ARM" Architecture)"
[ "$(rpm -qp --qf '%{ARCH}' "$RPM_ARM" 2>/dev/null)" = aarch64 ] || fail "arm64 rpm: arch $(rpm -qp --qf '%{ARCH}' "$RPM_ARM")"
for field in Depends Maintainer Section Description; do
    [ "$(dpkg-deb -f "$DEB_ARM" "$field")" = "$(dpkg-deb -f "$DEB" "$field")" ] || fail "arm64 deb: $field differs"
done
mkdir "$WORK/control-arm64"
dpkg-deb -e "$DEB_ARM" "$WORK/control-arm64"
for script in conffiles postinst prerm postrm; do
    cmp -s "$WORK/control/$script" "$WORK/control-arm64/$script" || fail "arm64 deb: $script differs"
done
rpm -qp --scripts "$RPM_ARM" 2>/dev/null | cmp -s - "$WORK/rpm.scripts" || fail "arm64 rpm: scriptlets differ"
[ "$(rpm -qcp "$RPM_ARM" 2>/dev/null)" = /etc/kes/config.yml ] || fail "arm64 rpm config files: $(rpm -qcp "$RPM_ARM")"
mkdir "$WORK/arm64"
dpkg-deb -x "$DEB_ARM" "$WORK/arm64"
file "$WORK/arm64/usr/bin/kes" | grep -q 'ARM aarch64.*statically linked' ||
    fail "arm64 deb: /usr/bin/kes is $(file -b "$WORK/arm64/usr/bin/kes")"
cmp -s "$WORK/arm64/usr/bin/kes" "$OUT/kes-aarch64-unknown-linux-musl" || fail "arm64 deb: not the built binary"
ok "Architecture arm64 / aarch64; same file lists, control fields, maintainer scripts, scriptlets; static aarch64 binary"

step "lintian and rpmlint: no errors (reasons for what is accepted: packaging/deb/lintian-overrides, packaging/rpm/rpmlint.toml)"
for deb in "$DEB" "$DEB_ARM"; do
    # Errors fail; warnings are reported. The log lists what was accepted and why
    # (--show-overrides, whose exit status counts the overridden errors too).
    lintian --show-overrides --tag-display-limit 0 "$deb" 2>/dev/null >"$WORK/lintian.log" || true
    sed 's/^/    /' "$WORK/lintian.log"
    lintian --fail-on error "$deb" >/dev/null 2>&1 || fail "lintian ${deb##*/}: $(grep '^E: ' "$WORK/lintian.log")"
    ! grep -q '^E: ' "$WORK/lintian.log" || fail "lintian ${deb##*/}: $(grep '^E: ' "$WORK/lintian.log")"
    ok "lintian ${deb##*/}: $(grep -c '^E: ' "$WORK/lintian.log") errors, $(grep -c '^W: ' "$WORK/lintian.log") warnings, $(grep -c '^O: ' "$WORK/lintian.log") overridden"
done
for rpm in "$RPM" "$RPM_ARM"; do
    rpmlint --config packaging/rpm/rpmlint.toml "$rpm" >"$WORK/rpmlint.log" 2>&1 ||
        fail "rpmlint ${rpm##*/}: $(cat "$WORK/rpmlint.log")"
    sed 's/^/    /' "$WORK/rpmlint.log"
    ok "rpmlint ${rpm##*/}: $(grep -o '[0-9]* errors, [0-9]* warnings' "$WORK/rpmlint.log" | tail -n1)"
done

step "SHA256SUMS and SBOMs"
(cd "$OUT" && sha256sum --quiet -c SHA256SUMS) || fail "SHA256SUMS does not match the artefacts"
for artefact in "$DEB" "$RPM" "$DEB_ARM" "$RPM_ARM" "$OUT"/kes-*-linux-musl "$OUT"/kes-*.cdx.json; do
    grep -q " ${artefact##*/}\$" "$OUT/SHA256SUMS" || fail "SHA256SUMS lacks ${artefact##*/}"
done
for target in x86_64-unknown-linux-musl aarch64-unknown-linux-musl; do
    python3 - "$OUT/kes-$target.cdx.json" "$ROOT/Cargo.lock" <<'PY' || fail "SBOM of $target"
import json, re, sys
bom = json.load(open(sys.argv[1]))
assert bom["bomFormat"] == "CycloneDX", bom.get("bomFormat")
names = {c["name"] for c in bom["components"]}
locked = set(re.findall(r'^name = "(.*)"$', open(sys.argv[2]).read(), re.M))
# What the binary links: present. Test-only crates: absent. Nothing unknown to Cargo.lock.
for crate in ("rustls", "ring", "aes-gcm", "serde", "mio", "zeroize"):
    assert crate in names, f"{crate} missing"
for crate in ("tempfile", "criterion", "prometheus-parse"):
    assert crate not in names, f"dev-dependency {crate} listed"
assert names <= locked, f"not in Cargo.lock: {names - locked}"
print(f"    {sys.argv[1].rsplit('/', 1)[-1]}: {len(names)} components")
PY
done
ok "sha256sum -c SHA256SUMS; SBOMs list the linked crates and no dev-dependencies"

# Test credentials: a server certificate for 127.0.0.1 and an admin client certificate.
step "test certificates"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=localhost -addext 'subjectAltName=IP:127.0.0.1,DNS:localhost' \
    -keyout "$WORK/server.key" -out "$WORK/server.crt" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj /CN=admin -addext 'extendedKeyUsage=clientAuth' \
    -keyout "$WORK/admin.key" -out "$WORK/admin.crt" 2>/dev/null
ADMIN=$(openssl x509 -in "$WORK/admin.crt" -noout -pubkey | openssl pkey -pubin -outform DER | sha256sum | cut -d' ' -f1)
ok "admin identity $ADMIN"

https() { # method path [curl args...]
    local method=$1 path=$2
    shift 2
    curl -sS --fail-with-body --max-time 5 --cacert "$WORK/server.crt" \
        --cert "$WORK/admin.crt" --key "$WORK/admin.key" -X "$method" "$@" \
        "https://127.0.0.1:$PORT$path"
}

wait_ready() { # log
    for _ in $(seq 1 50); do
        KES_PID=$(pgrep -P "$SERVER_PID" -x kes || true)
        [ -z "$KES_PID" ] || break
        sleep 0.1
    done
    [ -n "$KES_PID" ] || fail "no kes process under pid $SERVER_PID: $(tail -n 5 "$1")"
    for _ in $(seq 1 100); do
        if https GET /v1/status >/dev/null 2>&1; then return 0; fi
        kill -0 "$SERVER_PID" 2>/dev/null || fail "kes exited during start-up: $(tail -n 5 "$1")"
        sleep 0.1
    done
    fail "kes did not answer within 10 s"
}

# Status, a new key (checked on disk), reload, graceful stop.
smoke() { # label keydir keyowner log
    local label=$1 keydir=$2 owner=$3 log=$4 status code
    wait_ready "$log"
    status=$(https GET /v1/status)
    grep -q "\"version\":\"$VERSION\"" <<<"$status" || fail "$label: /v1/status: $status"
    grep -q '"keystore_latency"' <<<"$status" || fail "$label: keystore not reachable: $status"
    ok "$label: /v1/status $status"
    https POST "/v1/key/create/$TEST_KEY" >/dev/null || fail "$label: key create"
    [ "$(stat -c '%U %a' "$keydir/$TEST_KEY")" = "$owner 600" ] ||
        fail "$label: key file $(stat -c '%U %a' "$keydir/$TEST_KEY"), want $owner 600"
    ok "$label: created key $keydir/$TEST_KEY ($owner, 0600)"
    code=$(curl -sS -o /dev/null -w '%{http_code}' --max-time 5 --cacert "$WORK/server.crt" \
        "https://127.0.0.1:$PORT/v1/status" 2>/dev/null || true)
    [ "$code" = 000 ] || fail "$label: a client without certificate got HTTP $code"
    ok "$label: a client without a certificate is refused in the handshake"
    /bin/kill -HUP "$KES_PID" # the unit's ExecReload
    sleep 0.3
    https GET /v1/status >/dev/null || fail "$label: not serving after SIGHUP"
    grep -q 'SIGHUP: reloaded' "$log" || fail "$label: no reload logged after SIGHUP"
    ok "$label: SIGHUP reloads, still serving"
    kill -TERM "$KES_PID" # what systemctl stop sends
    for _ in $(seq 1 100); do kill -0 "$KES_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$KES_PID" 2>/dev/null && fail "$label: still running 10 s after SIGTERM"
    code=0
    wait "$SERVER_PID" || code=$?
    SERVER_PID=
    KES_PID=
    [ "$code" = 0 ] || fail "$label: exit status $code after SIGTERM"
    ok "$label: SIGTERM stops it, exit status 0"
}

assert_stat() { # path "owner:group mode"
    [ "$(stat -c '%U:%G %a' "$1")" = "$2" ] || fail "$1 is $(stat -c '%U:%G %a' "$1"), want $2"
}

step "install the .deb"
dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$WORK/dpkg.log")"
version_ok kes || fail "installed kes --version: $(kes --version)"
getent passwd kes | grep -q ':/var/lib/kes:/usr/sbin/nologin$' || fail "kes user: $(getent passwd kes)"
[ "$(id -u kes)" -lt 1000 ] || fail "kes is not a system user: uid $(id -u kes)"
assert_stat /var/lib/kes "kes:kes 700"
assert_stat /etc/kes "root:kes 750"
assert_stat /etc/kes/config.yml "root:kes 640"
assert_stat /usr/bin/kes "root:root 755"
ok "kes --version; system user kes; /var/lib/kes kes:kes 0700; /etc/kes/config.yml root:kes 0640"
if command -v promtool >/dev/null; then
    promtool check rules /usr/share/kes/prometheus/kes-alerts.yml >"$WORK/promtool.log" 2>&1 ||
        fail "installed alert rules: $(cat "$WORK/promtool.log")"
    ok "promtool check rules /usr/share/kes/prometheus/kes-alerts.yml"
fi

step "man pages and completions: the installed kes's own"
# From the package's files (dpkg may be told to skip /usr/share/man on small images).
mkdir "$WORK/deb-root"
dpkg-deb -x "$DEB" "$WORK/deb-root"
for page in $(man_pages); do
    name=${page##*/}
    name=${name%.gz}
    zcat "$WORK/deb-root$page" | cmp -s - <(kes man "${name%.*}") || fail "$page is not what kes writes"
done
for shell in bash:/usr/share/bash-completion/completions/kes zsh:/usr/share/zsh/vendor-completions/_kes \
    fish:/usr/share/fish/vendor_completions.d/kes.fish; do
    cmp -s "$WORK/deb-root${shell#*:}" <(kes completion "${shell%%:*}") || fail "${shell#*:} differs from kes completion ${shell%%:*}"
done
# shellcheck disable=SC2016 # expanded by the inner bash
words=$(bash -c 'source "$1"; COMP_LINE="kes key "; COMP_POINT=${#COMP_LINE}; _kes; echo "${COMPREPLY[*]}"' \
    sh "$WORK/deb-root/usr/share/bash-completion/completions/kes")
[[ " $words " == *" create "* && " $words " == *" rotate "* ]] || fail "bash completion of 'kes key ': $words"
ok "$(man_pages | wc -l) man pages and the bash, zsh and fish completions are what the installed kes writes"
if [ -e /usr/share/man/man1/kes.1.gz ]; then
    man -w kes | grep -qx /usr/share/man/man1/kes.1.gz || fail "man -w kes: $(man -w kes 2>&1)"
    man -w 5 kes-config | grep -qx /usr/share/man/man5/kes-config.5.gz || fail "man -w 5 kes-config: $(man -w 5 kes-config 2>&1)"
    MANWIDTH=80 man --warnings kes-key 2>"$WORK/man.log" | grep -q 'kes key create' || fail "man kes-key: $(cat "$WORK/man.log")"
    [ ! -s "$WORK/man.log" ] || fail "man kes-key: $(cat "$WORK/man.log")"
    ok "man kes, man 5 kes-config, man kes-key (no groff warnings)"
else
    echo "    SKIP: dpkg did not install /usr/share/man here (path-exclude in /etc/dpkg/dpkg.cfg.d)"
fi

step "systemd-analyze verify"
if systemd-analyze verify "$UNIT" >"$WORK/verify.log" 2>&1; then
    ok "systemd-analyze verify $UNIT: no complaints"
elif grep -q 'kes.service' "$WORK/verify.log"; then
    fail "systemd-analyze verify: $(cat "$WORK/verify.log")"
else
    echo "    SKIP: systemd-analyze cannot run here: $(head -n 2 "$WORK/verify.log" | tr '\n' ' ')"
fi
if command -v systemd-analyze >/dev/null && systemd-analyze security --help >/dev/null 2>&1 &&
    systemd-analyze security --offline=yes "$UNIT" >"$WORK/security.log" 2>&1; then
    ok "systemd-analyze security: $(grep -o 'Overall exposure level.*' "$WORK/security.log")"
fi

step "run the unit's ExecStart as the unit's user"
EXEC=$(sed -n 's/^ExecStart=//p' "$UNIT")
RUN_USER=$(sed -n 's/^User=//p' "$UNIT")
NOFILE=$(sed -n 's/^LimitNOFILE=//p' "$UNIT")
if [ -z "$EXEC" ] || [ "$RUN_USER" != kes ]; then fail "unit: ExecStart='$EXEC' User='$RUN_USER'"; fi
install -o root -g kes -m 0640 "$WORK/server.key" /etc/kes/private.key
install -o root -g kes -m 0640 "$WORK/server.crt" /etc/kes/public.crt
# What an admin edits: the admin identity; and a test port.
sed -i -e "s/^  identity: disabled\$/  identity: $ADMIN/" -e "s/^address: .*/address: 127.0.0.1:$PORT/" \
    /etc/kes/config.yml
grep -q "identity: $ADMIN" /etc/kes/config.yml || fail "config.yml: no 'identity: disabled' line to edit"
# The unit's limits, where this machine lets root raise them: without CAP_SYS_RESOURCE
# (a container) the hard limits stay; kes then runs with memory unlocked and says so.
LIMITS=()
for limit in "--nofile=$NOFILE" --memlock=unlimited; do
    if prlimit "$limit" true 2>/dev/null; then
        LIMITS+=("$limit")
    else
        echo "    note: cannot apply $limit here (no CAP_SYS_RESOURCE); running with the current limit"
    fi
done
echo "    $RUN_USER\$ $EXEC"
# shellcheck disable=SC2086 # ExecStart is split into words as systemd does (no quotes in it).
prlimit "${LIMITS[@]}" runuser -u "$RUN_USER" -- $EXEC >"$WORK/deb-server.log" 2>&1 &
SERVER_PID=$!
smoke deb /var/lib/kes kes "$WORK/deb-server.log"
grep -q 'memory is locked\|memory is not locked' "$WORK/deb-server.log" &&
    ok "memory locking: $(grep -o 'memory is [a-z ]*locked[^;]*' "$WORK/deb-server.log" | head -n1)"

step "the unit under a real systemd (PID 1 of new namespaces)"
# CI containers do not run systemd. With CAP_SYS_ADMIN the test boots one in new pid,
# mount and cgroup namespaces, with a unit directory holding only the installed
# kes.service (plus a drop-in sending its output to a file) and the targets it needs,
# and tmpfs over /tmp and /run: nothing of the machine is started, cleaned or changed.
# Skipped, with the reason, where systemd cannot boot this way.
systemd_run() {
    local sd=$SD_DIR units=$SD_DIR/units pid1='' kes='' again=
    mkdir -p "$units/kes.service.d"
    cp "$UNIT" "$units/"
    for unit in sysinit.target basic.target shutdown.target; do
        cp "/usr/lib/systemd/system/$unit" "$units/" 2>/dev/null || true
    done
    printf '[Unit]\nDescription=kes packaging test\nWants=kes.service\n' >"$units/kes-test.target"
    printf '[Service]\nStandardOutput=append:%s/kes.log\nStandardError=append:%s/kes.log\n' \
        "$sd" "$sd" >"$units/kes.service.d/test-log.conf"
    cat >"$sd/boot.sh" <<EOF
#!/bin/sh
set -e
mount --make-rprivate /
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs -o mode=0755 tmpfs /usr/lib/systemd/system
cp -a "$units/." /usr/lib/systemd/system/
mount -t tmpfs -o mode=0755 tmpfs /etc/systemd/system
# systemd mounts the cgroup hierarchies afresh: inside the cgroup namespace they are
# rooted at its own cgroup, so nothing is created at the machine's cgroup roots.
mount -t tmpfs -o mode=0755 tmpfs /sys/fs/cgroup
exec env container=kes-pkg-test /lib/systemd/systemd --system --unit=kes-test.target --log-target=console
EOF
    chmod 0755 "$sd/boot.sh"
    # A cgroup of its own in every hierarchy, so systemd's cgroups land below it.
    # shellcheck disable=SC2016 # $$ and $h are the inner shell's
    setsid sh -c 'for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
            [ -f "$h/cgroup.procs" ] || continue
            mkdir -p "$h/kes-pkg-test" && echo $$ >"$h/kes-pkg-test/cgroup.procs" || true
        done
        exec unshare --pid --fork --kill-child --mount --mount-proc --cgroup --uts --ipc "$1"' \
        sh "$sd/boot.sh" >"$sd/systemd.log" 2>&1 &
    SD_PID=$!
    for _ in $(seq 1 150); do
        kill -0 "$SD_PID" 2>/dev/null || break
        pid1=$(pgrep -P "$SD_PID" -x systemd || true)
        [ -z "$pid1" ] || kes=$(pgrep -P "$pid1" -x kes || true)
        if [ -n "$kes" ] && https GET /v1/status >/dev/null 2>&1; then break; fi
        sleep 0.1
    done
    if [ -z "$pid1" ] || ! kill -0 "$SD_PID" 2>/dev/null; then
        echo "    SKIP: systemd does not boot in namespaces here: $(tail -n 3 "$sd/systemd.log" | tr '\n' ' ')"
        return 0
    fi
    sdctl() { nsenter -t "$pid1" -m -p systemctl --no-pager "$@"; }
    if [ -z "$kes" ] || ! https GET /v1/status >/dev/null 2>&1; then
        sdctl status kes >&2 || true
        fail "kes.service did not come up under systemd: $(tail -n 5 "$sd/kes.log" 2>/dev/null)"
    fi
    grep -q "^Uid:[[:space:]]*$(id -u kes)[[:space:]]" "/proc/$kes/status" || fail "systemd: kes does not run as user kes"
    grep -q '^NoNewPrivs:[[:space:]]*1' "/proc/$kes/status" || fail "systemd: NoNewPrivileges not in effect"
    grep -q '^Seccomp:[[:space:]]*2' "/proc/$kes/status" || fail "systemd: no system-call filter in effect"
    grep -q '^CapBnd:[[:space:]]*0000000000000000' "/proc/$kes/status" || fail "systemd: capabilities left"
    awk '$5 == "/" { print $6 }' "/proc/$kes/mountinfo" | grep -q '^ro' || fail "systemd: / is writable for kes"
    awk '$5 == "/var/lib/kes" { print $6 }' "/proc/$kes/mountinfo" | grep -q '^rw' || fail "systemd: /var/lib/kes not writable"
    ok "running as kes with NoNewPrivs, seccomp filter, no capabilities, / read-only, /var/lib/kes writable"
    https GET /v1/status >/dev/null
    https POST /v1/key/create/kes-pkg-test-systemd >/dev/null || fail "systemd: key create"
    [ "$(stat -c '%U %a' /var/lib/kes/kes-pkg-test-systemd)" = "kes 600" ] || fail "systemd: key file owner/mode"
    rm -f /var/lib/kes/kes-pkg-test-systemd
    ok "/v1/status and key create through the sandbox"
    sdctl reload kes || fail "systemctl reload kes"
    sleep 0.3
    grep -q 'SIGHUP: reloaded' "$sd/kes.log" || fail "systemctl reload: kes did not reload"
    https GET /v1/status >/dev/null || fail "not serving after systemctl reload"
    ok "systemctl reload kes: reloaded, still serving"
    kill -KILL "$kes"
    for _ in $(seq 1 100); do # Restart=on-failure, RestartSec=5s
        again=$(pgrep -P "$pid1" -x kes || true)
        if [ -n "$again" ] && [ "$again" != "$kes" ] && https GET /v1/status >/dev/null 2>&1; then break; fi
        sleep 0.1
    done
    if [ -z "$again" ] || [ "$again" = "$kes" ]; then fail "systemd did not restart kes after it was killed"; fi
    ok "killed kes: restarted by Restart=on-failure"
    sdctl stop kes || fail "systemctl stop kes"
    [ "$(sdctl show kes -p Result --value)" = success ] || fail "systemctl stop: Result $(sdctl show kes -p Result --value)"
    grep -q 'stopping: finishing requests in flight' "$sd/kes.log" || fail "systemctl stop: no graceful stop logged"
    ok "systemctl stop kes: graceful, Result=success"
}
SD_DIR=$(mktemp -d /var/tmp/kes-pkg-test.XXXXXX)
SD_PID=
systemd_run
stop_systemd

step "purge with a key and the TLS files present: keys are kept"
dpkg --purge kes >"$WORK/purge.log" 2>&1 || fail "dpkg --purge: $(cat "$WORK/purge.log")"
for gone in /usr/bin/kes "$UNIT" /etc/kes/config.yml /usr/share/doc/kes /usr/share/kes; do
    [ ! -e "$gone" ] || fail "$gone is still there after purge"
done
[ -f "/var/lib/kes/$TEST_KEY" ] || fail "purge deleted the key in /var/lib/kes"
[ -f /etc/kes/private.key ] || fail "purge deleted /etc/kes/private.key"
getent passwd kes >/dev/null || fail "purge deleted the kes user that owns the kept keys"
grep -q 'keeping /var/lib/kes' "$WORK/purge.log" || fail "purge did not say that it keeps the keys"
ok "package files gone; /var/lib/kes/$TEST_KEY, /etc/kes/private.key and user kes kept"

step "reinstall over the kept keys"
uid=$(id -u kes)
dpkg -i "$DEB" >"$WORK/dpkg.log" 2>&1 || fail "dpkg -i (again): $(cat "$WORK/dpkg.log")"
[ "$(id -u kes)" = "$uid" ] || fail "the kes user changed its uid"
assert_stat "/var/lib/kes/$TEST_KEY" "kes:kes 600"
ok "same kes user (uid $uid), key still owned by kes"

step "upgrade the .deb: local config edits, modes, user and keys stay"
mkdir -p "$WORK/upgrade"
cargo deb --target "$TARGET" --no-build --no-strip --fast --quiet --deb-revision 2 \
    --output "$WORK/upgrade/" >/dev/null
echo '# local edit' >>/etc/kes/config.yml
dpkg -i "$WORK/upgrade/kes_${VERSION}-2_amd64.deb" >"$WORK/dpkg.log" 2>&1 ||
    fail "dpkg -i (upgrade): $(cat "$WORK/dpkg.log")"
[ "$(dpkg-query -W -f '${Version}' kes)" = "${VERSION}-2" ] || fail "upgrade: version $(dpkg-query -W -f '${Version}' kes)"
grep -q '^# local edit$' /etc/kes/config.yml || fail "upgrade lost the local edit of config.yml"
assert_stat /etc/kes/config.yml "root:kes 640"
assert_stat /etc/kes "root:kes 750"
assert_stat "/var/lib/kes/$TEST_KEY" "kes:kes 600"
[ "$(id -u kes)" = "$uid" ] || fail "upgrade: the kes user changed its uid"
sed -i '/^# local edit$/d' /etc/kes/config.yml
ok "${VERSION}-1 -> ${VERSION}-2: config edit kept, root:kes 0640, same user, key in place"

step "purge with empty directories: everything goes"
rm -f "/var/lib/kes/$TEST_KEY" /etc/kes/private.key /etc/kes/public.crt
dpkg --purge kes >"$WORK/purge.log" 2>&1 || fail "dpkg --purge: $(cat "$WORK/purge.log")"
for gone in /usr/bin/kes "$UNIT" /etc/kes /var/lib/kes; do
    [ ! -e "$gone" ] || fail "$gone is still there after purge"
done
if getent passwd kes >/dev/null; then fail "user kes still there after purge"; fi
if getent group kes >/dev/null; then fail "group kes still there after purge"; fi
[ -z "$(dpkg-query -W -f '${Status}' kes 2>/dev/null | grep -v not-installed || true)" ] ||
    fail "dpkg still knows kes: $(dpkg-query -W -f '${Status}' kes)"
ok "no files, no user, no group, no package state"

step "install and erase the .rpm (Debian's rpm, scriptlets run for real)"
# --nodeps: the rpm database here does not know the Debian packages that provide useradd.
if rpm -i --nodeps --force-debian "$RPM" >"$WORK/rpm.log" 2>&1 || rpm -i --nodeps "$RPM" >"$WORK/rpm.log" 2>&1; then
    getent passwd kes >/dev/null || fail "rpm %pre did not create the kes user"
    assert_stat /etc/kes/config.yml "root:kes 640"
    assert_stat /etc/kes "root:kes 750"
    assert_stat /var/lib/kes "kes:kes 700"
    version_ok /usr/bin/kes || fail "rpm-installed kes --version"
    # Upgrade: the old package's %preun/%postun run with $1 = 1 and must not remove
    # the user; a changed %config(noreplace) file stays.
    uid=$(id -u kes)
    cargo generate-rpm --target "$TARGET" -s 'release = "2"' --output "$WORK/upgrade/" >/dev/null
    echo '# local edit' >>/etc/kes/config.yml
    rpm -U --nodeps "$WORK/upgrade/kes-${VERSION}-2.x86_64.rpm" >"$WORK/rpm.log" 2>&1 ||
        fail "rpm -U: $(cat "$WORK/rpm.log")"
    [ "$(rpm -q --qf '%{VERSION}-%{RELEASE}' kes)" = "${VERSION}-2" ] || fail "rpm -U: $(rpm -q kes)"
    grep -q '^# local edit$' /etc/kes/config.yml || fail "rpm -U lost the local edit of config.yml"
    [ "$(id -u kes 2>/dev/null)" = "$uid" ] || fail "rpm -U: the kes user is gone or changed"
    assert_stat /etc/kes/config.yml "root:kes 640"
    assert_stat /var/lib/kes "kes:kes 700"
    sed -i '/^# local edit$/d' /etc/kes/config.yml
    rm -f /etc/kes/config.yml.rpmnew
    ok "rpm -U to ${VERSION}-2: config edit kept, same user"
    rpm -e --nodeps kes >"$WORK/rpm.log" 2>&1 || fail "rpm -e: $(cat "$WORK/rpm.log")"
    for gone in /usr/bin/kes "$UNIT" /etc/kes /var/lib/kes; do
        [ ! -e "$gone" ] || fail "$gone is still there after rpm -e"
    done
    if getent passwd kes >/dev/null; then fail "user kes still there after rpm -e"; fi
    ok "user, /etc/kes root:kes 0750, config root:kes 0640, /var/lib/kes kes:kes 0700; erase removes them"
else
    echo "    SKIP: rpm cannot install here: $(tail -n 2 "$WORK/rpm.log" | tr '\n' ' ')"
fi

step "bare static binary (under strace)"
mkdir -m 0700 "$WORK/keys"
cat >"$WORK/config.yml" <<EOF
address: 127.0.0.1:$PORT
admin:
  identity: $ADMIN
tls:
  key: $WORK/server.key
  cert: $WORK/server.crt
keystore:
  fs:
    path: $WORK/keys
EOF
strace -f -qq -o "$WORK/trace" "$BIN" server --config "$WORK/config.yml" >"$WORK/bin-server.log" 2>&1 &
SERVER_PID=$!
smoke "static binary" "$WORK/keys" root "$WORK/bin-server.log"

step "system calls against the unit's SystemCallFilter"
# The calls the binary made (after its execve) must all be allowed by
# SystemCallFilter=@system-service minus ~@privileged @obsolete.
expand() {
    systemd-analyze syscall-filter "$1" | tail -n +2 | awk '!/^[[:space:]]*#/ && NF { print $1 }' |
        while read -r name; do
            case $name in @*) expand "$name" ;; *) echo "$name" ;; esac
        done
}
if systemd-analyze syscall-filter @system-service >/dev/null 2>&1; then
    expand @system-service | sort -u >"$WORK/allowed"
    { expand @privileged; expand @obsolete; } | sort -u >"$WORK/denied"
    sed -n 's/^[0-9]\+ \+\([a-z0-9_]\+\)(.*/\1/p' "$WORK/trace" | sort -u >"$WORK/used"
    [ -s "$WORK/used" ] || fail "strace recorded no system calls"
    bad=$(comm -23 "$WORK/used" "$WORK/allowed"; comm -12 "$WORK/used" "$WORK/denied")
    [ -z "$bad" ] || fail "system calls outside the unit's SystemCallFilter: ${bad//$'\n'/ }"
    ok "$(wc -l <"$WORK/used") distinct system calls, all allowed: $(tr '\n' ' ' <"$WORK/used")"
    families=$(grep -o 'socket(AF_[A-Z0-9]*' "$WORK/trace" | sort -u | sed 's/socket(//' | tr '\n' ' ')
    for family in $families; do
        case $family in AF_INET | AF_INET6 | AF_UNIX) ;; *) fail "socket family $family outside RestrictAddressFamilies" ;; esac
    done
    ok "socket families: ${families:-none}"
else
    echo "    SKIP: systemd-analyze syscall-filter unavailable"
fi

FAILED=0
