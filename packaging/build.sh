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

# Each package's libc6 dependency covers its binaries' GLIBC_ symbol versions,
# and they link nothing else than libc, libm and libgcc_s (which libc6 pulls).
check_deps() {
    local t p deb b need have libs
    for t in "${targets[@]}"; do
        for p in callkpi-agent callkpi-aggregator callkpi-cli; do
            deb=$(ls "$DEB_DIR/${p}_"*"_${DEB_ARCH[$t]}.deb")
            have=$(dpkg-deb -f "$deb" Depends | sed -n 's/.*libc6 (>= \([0-9.]*\)).*/\1/p')
            rm -rf "$WORK_X" && mkdir -p "$WORK_X"
            dpkg-deb -x "$deb" "$WORK_X"
            for b in "$WORK_X"/usr/bin/*; do
                need=$(readelf -W -V "$b" | grep -o 'Name: GLIBC_[0-9.]*' | sed 's/.*GLIBC_//' | sort -uV | tail -1)
                if [ -z "$have" ] || [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | tail -1)" != "$have" ]; then
                    fail "$(basename "$deb"): $(basename "$b") needs GLIBC_$need, the package depends on libc6 (>= $have)"
                fi
                libs=$(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' |
                    grep -vx -e libc.so.6 -e libm.so.6 -e libgcc_s.so.1 || true)
                [ -z "$libs" ] || fail "$(basename "$deb"): $(basename "$b") links $libs: add its package to depends"
            done
            printf '   ok  %s: needs GLIBC_%s, depends on libc6 (>= %s)\n' "$(basename "$deb")" "$need" "$have"
        done
    done
}

step "build tools (apt, rustup, cargo-deb)" install_tools
step "cargo build --profile $PROFILE (${#targets[@]} targets)" build
step "cargo deb (${#targets[@]} targets x 3)" package
WORK_X=$(mktemp -d)
trap 'rm -rf "$WORK_X"' EXIT
step "package dependencies cover the binaries" check_deps
print_timings
