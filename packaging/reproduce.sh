#!/bin/sh
# Checks that release builds are reproducible: builds the committed source (HEAD, as
# `git archive` exports it: uncommitted changes are not part of it) in two fresh
# directories of different paths and depths, each with its own empty target directory,
# and compares the SHA-256 of every artefact packaging/build.sh wrote (binary, .deb,
# .rpm, SBOM).
#
#   packaging/reproduce.sh                 two builds, compared with each other
#   packaging/reproduce.sh --against DIR   one build, compared with the artefacts in DIR
#                                          (built from the same commit in a clean
#                                          checkout, as CI's packaging/build.sh run is)
#
# KES_TARGETS: targets to build (default: x86_64-unknown-linux-musl; both release
# targets double the time). Exits non-zero and names the differing files on a mismatch.
set -eu

cd "$(dirname "$0")/.."
. packaging/targets.sh
AGAINST=
case ${1:-} in
--against) AGAINST=$(cd "${2:?--against needs a directory}" && pwd) ;;
"") ;;
*)
    echo "usage: $0 [--against DIR]" >&2
    exit 2
    ;;
esac
export KES_TARGETS="${KES_TARGETS:-x86_64-unknown-linux-musl}"
KES_COMMIT=$(git rev-parse HEAD)
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct HEAD)
export KES_COMMIT SOURCE_DATE_EPOCH
unset KES_PACKAGE_DIR CARGO_TARGET_DIR
if [ -n "$AGAINST" ] && [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "reproduce.sh: uncommitted changes: $AGAINST cannot be of commit $KES_COMMIT" >&2
    exit 1
fi

WORK=$(mktemp -d /tmp/kes-repro.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
started=$(date +%s)

build() { # directory
    mkdir -p "$1"
    git archive --format=tar HEAD | tar -x -C "$1"
    printf '==> [%3ss] build of %s in %s\n' "$(($(date +%s) - started))" "$(git rev-parse --short HEAD)" "$1" >&2
    (cd "$1" && packaging/build.sh) >"$WORK/build.log" 2>&1 || {
        tail -n 40 "$WORK/build.log" >&2
        echo "reproduce.sh: build in $1 failed" >&2
        exit 1
    }
}

# Hashes of the artefacts of the targets built, one "sum name" line each.
sums() { # directory
    (cd "$1" && for target in $KES_TARGETS; do
        for f in "kes-$target" "kes-$target.cdx.json" kes_*_"$(deb_arch "$target")".deb \
            kes-*."${target%%-*}".rpm; do
            [ -f "$f" ] && sha256sum "$f"
        done
    done) | LC_ALL=C sort -k2
}

build "$WORK/a/kes"
if [ -n "$AGAINST" ]; then
    other=$AGAINST
else
    build "$WORK/second-build/in/a/longer/path/kes-src"
    other=$WORK/second-build/in/a/longer/path/kes-src/target/packages
fi
sums "$WORK/a/kes/target/packages" >"$WORK/first"
sums "$other" >"$WORK/second"
[ "$(wc -l <"$WORK/first")" -ge 4 ] || {
    echo "reproduce.sh: the build wrote only: $(cat "$WORK/first")" >&2
    exit 1
}
if ! diff -u "$WORK/first" "$WORK/second" >&2; then
    echo "reproduce.sh: NOT reproducible (- first build, + $other)" >&2
    exit 1
fi
sed 's/^/    /' "$WORK/first"
printf 'reproduce.sh: %s artefacts of %s byte-identical across two builds (%ss)\n' \
    "$(wc -l <"$WORK/first")" "$KES_COMMIT" "$(($(date +%s) - started))"
