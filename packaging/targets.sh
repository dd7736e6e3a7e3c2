# shellcheck shell=sh
# Sourced by packaging/build.sh and packaging/qemu-test.sh: the release targets and what
# each needs to build (rustup target, C compiler for ring, linker) and to run elsewhere
# (qemu). Installs what is missing, unless CARGO_NET_OFFLINE=true.

# The release targets, in build order. KES_TARGETS selects a subset.
ALL_TARGETS="x86_64-unknown-linux-musl aarch64-unknown-linux-musl"

STARTED=$(date +%s)
say() { printf '==> [%4ss] %s\n' "$(($(date +%s) - STARTED))" "$*" >&2; }
die() {
    printf '%s: %s\n' "${0##*/}" "$*" >&2
    exit 1
}

OFFLINE=${CARGO_NET_OFFLINE:-false}

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

# Debian's architecture name of a target (RPM's is the triple's first part).
deb_arch() {
    case $1 in
    x86_64-*) echo amd64 ;;
    aarch64-*) echo arm64 ;;
    *) die "no package architecture known for $1" ;;
    esac
}

# Makes `cargo build --target $1` work: the rustup target, and for ring's C and assembly
# a C compiler for that target (and, across architectures, the linker). Exports the
# cc-rs and cargo variables it sets; values already in the environment win.
target_setup() {
    target=$1
    if ! rustup target list --installed | grep -qx "$target"; then
        [ "$OFFLINE" = false ] || die "rust target $target missing; offline build: install it first"
        say "rustup target add $target"
        rustup target add "$target" >&2
    fi
    case $target in
    x86_64-unknown-linux-musl)
        # cc-rs looks for x86_64-linux-musl-gcc, then musl-gcc (Debian: musl-tools);
        # CC_x86_64_unknown_linux_musl overrides both. The host gcc alone is not used.
        if [ -z "${CC_x86_64_unknown_linux_musl:-}" ] &&
            ! command -v x86_64-linux-musl-gcc >/dev/null && ! command -v musl-gcc >/dev/null; then
            apt_install musl-tools
        fi
        ;;
    aarch64-unknown-linux-musl)
        # Debian's cross gcc compiles ring's C and assembly (freestanding code: the
        # glibc flavour of the compiler is fine) and drives the link; Rust's musl
        # target brings its own C runtime and libc, so the result is static.
        : "${CC_aarch64_unknown_linux_musl:=aarch64-linux-gnu-gcc}"
        : "${AR_aarch64_unknown_linux_musl:=aarch64-linux-gnu-ar}"
        : "${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER:=aarch64-linux-gnu-gcc}"
        export CC_aarch64_unknown_linux_musl AR_aarch64_unknown_linux_musl \
            CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER
        if ! command -v "$CC_aarch64_unknown_linux_musl" >/dev/null; then
            apt_install gcc-aarch64-linux-gnu libc6-dev-arm64-cross
        fi
        ;;
    *) die "unknown target $target (known: $ALL_TARGETS)" ;;
    esac
}

# Makes `cargo test/run --target $1` run its binaries under qemu-user when the target
# is not the machine's architecture: exports cargo's runner variable and sets QEMU to
# the qemu command (empty when native). Not in a subshell: the export must stay.
target_runner() {
    arch=${1%%-*}
    QEMU=
    [ "$arch" != "$(uname -m)" ] || return 0
    QEMU=qemu-$arch-static
    if ! command -v "$QEMU" >/dev/null; then
        apt_install qemu-user-static
    fi
    runner_var=CARGO_TARGET_$(printf '%s' "$1" | tr 'a-z-' 'A-Z_')_RUNNER
    eval ": \"\${$runner_var:=$QEMU}\""
    export "${runner_var?}"
}
