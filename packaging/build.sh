#!/bin/sh
# Builds the release artefacts: for each target (x86_64 and aarch64, static musl) the
# kes binary, a .deb and an .rpm; a CycloneDX SBOM of each binary's dependency tree;
# SHA256SUMS over all of them. Run from anywhere in a clone or an unpacked source
# tarball; needs rustup/cargo. Output: target/packages/ (or $KES_PACKAGE_DIR).
#
# Reproducible: the same commit gives byte-identical artefacts wherever it is built
# (packaging/reproduce.sh checks it; docs/release.md says how).
#
# Environment:
#   KES_TARGETS        targets to build (default: all, see packaging/targets.sh)
#   KES_MAINTAINER     deb Maintainer and rpm Vendor, "Name <address>" (default: Cargo.toml's)
#   KES_COMMIT         commit named by `kes --version` (default: git rev-parse HEAD)
#   SOURCE_DATE_EPOCH  time stamp of package files (default: the commit's time)
#   CARGO_NET_OFFLINE  true: install nothing from the network (air-gapped builds: the
#                      targets, C compilers and the pinned tools must be present)
set -eu

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
CARGO_CYCLONEDX_VERSION=0.5.9
CARGO_AUDITABLE_VERSION=0.7.7
# Budget for each static binary, bytes.
MAX_BINARY_SIZE=$((6 * 1024 * 1024))

cd "$(dirname "$0")/.."
. packaging/targets.sh
SRC=$(pwd -P)
OUT=${KES_PACKAGE_DIR:-target/packages}
TARGETS=${KES_TARGETS:-$ALL_TARGETS}
TARGET_DIR=${CARGO_TARGET_DIR:-target}

# 1. What is built: the commit and its time. From git in a clone; from a source tarball
#    made by `git archive`, whose files all carry the commit's time, the time comes from
#    Cargo.toml and the commit from KES_COMMIT (else "unknown").
if [ -e .git ] && git rev-parse --verify -q HEAD >/dev/null 2>&1; then
    : "${KES_COMMIT:=$(git rev-parse HEAD)}"
    : "${SOURCE_DATE_EPOCH:=$(git log -1 --format=%ct HEAD)}"
    if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
        say "warning: uncommitted changes; the artefacts are not those of commit $KES_COMMIT"
    fi
else
    : "${KES_COMMIT:=unknown}"
    : "${SOURCE_DATE_EPOCH:=$(stat -c %Y Cargo.toml)}"
fi
export KES_COMMIT SOURCE_DATE_EPOCH
DEFAULT_MAINTAINER=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
MAINTAINER=${KES_MAINTAINER:-$DEFAULT_MAINTAINER}
case $MAINTAINER in
*"<"*"@"*">") ;;
*) die "KES_MAINTAINER must look like 'Name <address>', not '$MAINTAINER'" ;;
esac
[ -n "${KES_MAINTAINER:-}" ] ||
    say "packages name the placeholder maintainer '$MAINTAINER'; set KES_MAINTAINER to distribute them"

# 2. Pinned tools; installed only when missing or another version. Recognised by
#    `cargo install --list`, else by their --version (cargo-auditable has none).
tool_ok() { # command crate version
    cargo install --list 2>/dev/null | grep -qx "$2 v$3:" ||
        { "$1" --version 2>/dev/null; "$1" "${1#cargo-}" --version 2>/dev/null; } | grep -q " $3\$"
}
install_tool() { # command crate version
    if ! tool_ok "$@"; then
        [ "$OFFLINE" = false ] || die "$2 $3 missing; offline build: see docs/release.md"
        say "cargo install $2 $3"
        cargo install --locked --quiet "$2" --version "$3"
    fi
}
install_tool cargo-deb cargo-deb "$CARGO_DEB_VERSION"
install_tool cargo-generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"
install_tool cargo-cyclonedx cargo-cyclonedx "$CARGO_CYCLONEDX_VERSION"
install_tool cargo-auditable cargo-auditable "$CARGO_AUDITABLE_VERSION"

# 3. Path independence: the source directory, the target directory and the sources of
#    the dependencies appear in the binary (panic locations) only under fixed names.
#    Dependencies are at /build/crates/NAME-VERSION whether they come from cargo's
#    registry cache or from a `cargo vendor --versioned-dirs` directory, so an offline
#    build from vendored sources gives the same bytes as an online one. The last match
#    wins in rustc, so the most specific prefixes come last.
CARGO_HOME_DIR=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
mkdir -p "$TARGET_DIR"
TARGET_ABS=$(cd "$TARGET_DIR" && pwd -P)
sep=$(printf '\037')
flags=${RUSTFLAGS:-}
flags=$(printf '%s' "$flags" | tr -s ' ' "$sep")
set -- "$SRC=/build/kes" "$TARGET_ABS=/build/kes/target" "$SRC/vendor=/build/crates"
cargo metadata --locked --format-version 1 >/dev/null # unpacks the registry sources
for registry in "$CARGO_HOME_DIR"/registry/src/*/; do
    [ ! -d "$registry" ] || set -- "$@" "${registry%/}=/build/crates"
done
for remap in "$@"; do
    flags="${flags:+$flags$sep}--remap-path-prefix=$remap"
done
export CARGO_ENCODED_RUSTFLAGS="$flags"
unset RUSTFLAGS

# 4. Per target: the static binary, with its dependency list embedded by
#    cargo-auditable.
mkdir -p "$OUT"
rm -f "$OUT"/kes_*.deb "$OUT"/kes-*.rpm "$OUT"/kes-*-linux-* "$OUT"/SHA256SUMS
for target in $TARGETS; do
    target_setup "$target"
    say "cargo auditable build --release --target $target"
    cargo auditable build --release --locked --target "$target"
    bin=$TARGET_DIR/$target/release/kes
    file "$bin" | grep -q 'statically linked\|static-pie linked' || die "$bin is not statically linked: $(file "$bin")"
    size=$(stat -c %s "$bin")
    [ "$size" -le "$MAX_BINARY_SIZE" ] || die "$bin is $size bytes, over the budget of $MAX_BINARY_SIZE"
done

# 5. The man pages and shell completions, written by kes itself from its help texts
#    (the same on every architecture): by the first binary of this build that runs
#    here, else by one built for this machine. gzip -n leaves out name and time, so
#    the pages are the same bytes on every build of a commit.
docs_kes=
for target in $TARGETS; do
    if "$TARGET_DIR/$target/release/kes" --version >/dev/null 2>&1; then
        docs_kes=$TARGET_DIR/$target/release/kes
        break
    fi
done
if [ -z "$docs_kes" ]; then
    say "cargo build (for this machine: writes the man pages and completions)"
    cargo build --locked --quiet --bin kes
    docs_kes=$TARGET_DIR/debug/kes
fi
DOCS=$TARGET_DIR/package-docs
rm -rf "$DOCS"
mkdir -p "$DOCS/completions"
"$docs_kes" man --write "$DOCS/man"
gzip -9n "$DOCS"/man/man*/*
"$docs_kes" completion bash >"$DOCS/completions/kes"
"$docs_kes" completion zsh >"$DOCS/completions/_kes"
"$docs_kes" completion fish >"$DOCS/completions/kes.fish"

# 6. Per target: the .deb and the .rpm from the one asset list in Cargo.toml, and the
#    SBOM.
for target in $TARGETS; do
    target_setup "$target"
    bin=$TARGET_DIR/$target/release/kes
    rm -rf "$TARGET_DIR/$target/release/man" "$TARGET_DIR/$target/release/completions"
    cp -R "$DOCS/man" "$DOCS/completions" "$TARGET_DIR/$target/release/"

    say "cargo deb --target $target"
    cargo deb --target "$target" --no-build --no-strip --quiet --maintainer "$MAINTAINER" \
        --output "$OUT/" >/dev/null
    # cargo-generate-rpm lowers file times later than SOURCE_DATE_EPOCH to it and keeps
    # earlier ones: move every asset (the one list in Cargo.toml, globs expanded) to at
    # least that time, so that all of them get exactly it, whenever the checkout was made.
    sed -n 's/^ *{ source = "\([^"]*\)".*/\1/p' Cargo.toml | while read -r asset; do
        case $asset in target/release/*) asset=$TARGET_DIR/$target/release/${asset#target/release/} ;; esac
        for file in $asset; do
            [ -e "$file" ] || die "asset $file (Cargo.toml) is missing"
            [ "$(stat -c %Y "$file")" -ge "$SOURCE_DATE_EPOCH" ] || touch -d "@$SOURCE_DATE_EPOCH" "$file"
        done
    done
    say "cargo generate-rpm --target $target"
    cargo generate-rpm --target "$target" -s "vendor = \"$MAINTAINER\"" \
        --source-date "$SOURCE_DATE_EPOCH" --output "$OUT/"
    cp "$bin" "$OUT/kes-$target"

    # The SBOM: the dependency tree of the shipped binary (no dev or build-only
    # dependencies, only those of this target). cargo-cyclonedx writes one file per
    # workspace member, next to its Cargo.toml; kes's is kept.
    say "cargo cyclonedx --target $target"
    cargo cyclonedx --quiet --manifest-path Cargo.toml --format json --spec-version 1.5 --all \
        --no-build-deps --target "$target" --override-filename "kes-$target.cdx"
    # It names the kes package by its directory ("path+file:///…"): mapped like the
    # paths in the binary, so that the SBOM does not depend on where it was built.
    # (cargo leaves the name out of the id when the directory is called "kes").
    sed "s|path+file://$SRC#\(kes@\)\{0,1\}|path+file:///build/kes#kes@|g" "kes-$target.cdx.json" \
        >"$OUT/kes-$target.cdx.json"
    rm "kes-$target.cdx.json"
    find . -path ./target -prune -o -name "kes-$target.cdx.json" -exec rm -f {} +
done

# 7. Checksums of everything shipped.
(cd "$OUT" && LC_ALL=C sha256sum kes-* kes_* >SHA256SUMS)
say "done:"
ls -l "$OUT" >&2
