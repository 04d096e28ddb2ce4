# shellcheck shell=bash
# Sourced by the scripts in this directory.

# Makes `cargo` available when the scripts run under sudo: sudo's secure_path
# drops ~/.cargo/bin, so look for rustup's toolchain of root and of the user
# who ran sudo. Returns 1 if there is none.
seg_find_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    local home candidates=()
    [[ -n "${SUDO_USER:-}" ]] && home=$(getent passwd "$SUDO_USER" | cut -d: -f6) && candidates+=("$home")
    candidates+=("${HOME:-/root}" /root)
    for home in "${candidates[@]}"; do
        if [[ -x "$home/.cargo/bin/cargo" ]]; then
            export PATH="$home/.cargo/bin:$PATH"
            [[ -d "$home/.rustup" ]] && export RUSTUP_HOME="${RUSTUP_HOME:-$home/.rustup}"
            export CARGO_HOME="${CARGO_HOME:-$home/.cargo}"
            return 0
        fi
    done
    return 1
}

# Undoes what a stopped controller leaves on purpose in its run dir: the
# agent directory stays a read-only bind mount of itself (so nothing can
# plant a fake agent socket while the controller is down). A throw-away
# run dir must have it detached before it can be removed.
seg_release_run_dir() {
    local agent="$1/agent"
    while mountpoint -q "$agent" 2>/dev/null; do
        umount -l "$agent" 2>/dev/null || break
    done
}
