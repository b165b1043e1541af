#!/usr/bin/env bash
# Cross-builds callkpi-agent, callkpi-aggregator and callkpi with the `dist`
# profile, and makes their Debian packages, for amd64, arm64 and armhf.
#
#   packaging/build.sh [TRIPLE...]     (default: all three)
#
# Installs what it lacks: Debian's cross compilers (they link, and build the
# C in ring and zstd-sys), the rustup targets, cargo-deb. Binaries land in
# target/<triple>/dist/, packages in target/debian/.
set -euo pipefail
# shellcheck source=packaging/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=("${ALL_TARGETS[@]}")
for t in "${targets[@]}"; do
    [ -n "${DEB_ARCH[$t]:-}" ] || fail "unknown target $t (one of: ${ALL_TARGETS[*]})"
done

install_tools() {
    ensure_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf libc6-dev-armhf-cross dpkg-dev time
    ensure_rust_targets "${targets[@]}"
    ensure_cargo_deb
}

build() {
    local args=()
    for t in "${targets[@]}"; do args+=(--target "$t"); done
    # Only the three binaries (not tests, benches or the tests crate).
    # CPU time too: wall time depends on what else the 2 cores are doing.
    /usr/bin/time -f "cargo build: %e s wall, %U s user + %S s system CPU" \
        cargo build --locked --profile "$PROFILE" "${args[@]}" \
        -p callkpi-agent -p callkpi-aggregator -p callkpi-cli --bins
}

package() {
    mkdir -p "$DEB_DIR"
    local t p
    for t in "${targets[@]}"; do
        for p in callkpi-agent callkpi-aggregator callkpi-cli; do
            # The dist profile strips already; --no-strip keeps cargo-deb from
            # looking for a strip binary of the target.
            cargo deb --locked --no-build --no-strip -p "$p" --target "$t" --output "$DEB_DIR" \
                --profile "$PROFILE" >/dev/null
        done
    done
    ls -l "$DEB_DIR"/*.deb
}

step "build tools (apt, rustup, cargo-deb)" install_tools
step "cargo build --profile $PROFILE (${#targets[@]} targets)" build
step "cargo deb (${#targets[@]} targets x 3)" package
print_timings
