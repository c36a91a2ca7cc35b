# Sourced by demo/run.sh and .ci/run: checks, before cargo runs, that the Rust toolchain
# can build ckpt, and says in one line what to install when it cannot (instead of an
# error deep in cargo: Cargo.lock is version 4, which Debian 12's own cargo 1.65 cannot
# read, and the code uses std APIs of Rust 1.89).
#   need_rust             cargo and rustc, new enough
#   need_rust fmt clippy  ... and these cargo components too
CKPT_MIN_RUST=1.89
CKPT_RUSTUP_HINT="install a current toolchain with rustup: curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y --component rustfmt,clippy && . \$HOME/.cargo/env"

need_rust() {
    local v c
    if ! command -v cargo >/dev/null 2>&1; then
        echo "ckpt needs Rust $CKPT_MIN_RUST or newer and cargo is not installed; $CKPT_RUSTUP_HINT" >&2
        exit 1
    fi
    v=$(cargo --version 2>/dev/null | awk '{print $2}')
    if ! printf '%s\n%s\n' "$CKPT_MIN_RUST" "${v%%-*}" | sort -V -C; then
        echo "ckpt needs Rust $CKPT_MIN_RUST or newer, this cargo is ${v:-unknown} (Debian 12's own is too old for Cargo.lock v4); $CKPT_RUSTUP_HINT" >&2
        exit 1
    fi
    for c in "$@"; do
        if ! cargo "$c" --version >/dev/null 2>&1; then
            echo "ckpt's checks need cargo $c, which this toolchain lacks: rustup component add $( [ "$c" = fmt ] && echo rustfmt || echo "$c" )" >&2
            exit 1
        fi
    done
}
