#!/bin/sh
# Builds the static kes binary for x86_64-unknown-linux-musl and the .deb and .rpm
# packages from it. Run from anywhere in a clone; needs rustup/cargo and a C compiler
# (ring compiles C and assembly). Output: target/packages/ (or $KES_PACKAGE_DIR).
#
# Offline (air-gapped) builds: see docs/release.md. With CARGO_NET_OFFLINE=true this
# script installs nothing from the network; the musl target, a musl C compiler,
# cargo-deb and cargo-generate-rpm must then be present already.
set -eu

TARGET=x86_64-unknown-linux-musl
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
# Budget for the static binary, bytes.
MAX_BINARY_SIZE=$((6 * 1024 * 1024))

cd "$(dirname "$0")/.."
OUT=${KES_PACKAGE_DIR:-target/packages}
OFFLINE=${CARGO_NET_OFFLINE:-false}

say() { printf '==> %s\n' "$*" >&2; }
die() { printf 'build.sh: %s\n' "$*" >&2; exit 1; }

apt_install() {
    [ "$OFFLINE" = false ] || die "missing $*; offline build: install it first"
    command -v apt-get >/dev/null || die "missing $*; install it with your package manager"
    [ "$(id -u)" = 0 ] || die "missing $*; run: sudo apt-get install $*"
    say "apt-get install $*"
    # Update the package lists only when the first attempt fails (a fresh container).
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
    }
}

# 1. Rust target.
if ! rustup target list --installed | grep -qx "$TARGET"; then
    [ "$OFFLINE" = false ] || die "rust target $TARGET missing; offline build: install it first"
    say "rustup target add $TARGET"
    rustup target add "$TARGET"
fi

# 2. C compiler for ring. cc-rs looks for x86_64-linux-musl-gcc, then musl-gcc
#    (Debian: musl-tools); CC_x86_64_unknown_linux_musl overrides both. The plain
#    host gcc is not picked up by itself, hence musl-tools.
if [ -z "${CC_x86_64_unknown_linux_musl:-}" ] &&
    ! command -v x86_64-linux-musl-gcc >/dev/null && ! command -v musl-gcc >/dev/null; then
    apt_install musl-tools
fi

# 3. Packaging tools, pinned; installed only when missing or another version.
install_tool() { # crate version
    if ! "$1" --version 2>/dev/null | grep -q " $2\$"; then
        [ "$OFFLINE" = false ] || die "$1 $2 missing; offline build: see docs/release.md"
        say "cargo install $1 $2"
        cargo install --locked --quiet "$1" --version "$2"
    fi
}
install_tool cargo-deb "$CARGO_DEB_VERSION"
install_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

# 4. The static binary.
say "cargo build --release --target $TARGET"
cargo build --release --locked --target "$TARGET"
BIN=target/$TARGET/release/kes
file "$BIN" | grep -q 'statically linked\|static-pie linked' || die "$BIN is not statically linked: $(file "$BIN")"
size=$(stat -c %s "$BIN")
[ "$size" -le "$MAX_BINARY_SIZE" ] || die "$BIN is $size bytes, over the budget of $MAX_BINARY_SIZE"

# 5. Packages.
mkdir -p "$OUT"
rm -f "$OUT"/kes_*.deb "$OUT"/kes-*.rpm
say "cargo deb"
cargo deb --target "$TARGET" --no-build --no-strip --quiet --output "$OUT/" >/dev/null
say "cargo generate-rpm"
cargo generate-rpm --target "$TARGET" --output "$OUT/"
cp "$BIN" "$OUT/kes-$TARGET"

say "done:"
ls -l "$OUT"
