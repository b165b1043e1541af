#!/usr/bin/env bash
# CI for the appliance builds (called by .ci/run): cross-builds the three
# binaries for x86_64, aarch64 and armv7 with the dist profile, makes the
# nine Debian packages, runs the aarch64 agent under qemu against a native
# aggregator, and installs, upgrades, removes and purges the amd64 packages
# in a debootstrapped Debian 12 root. Installs what it needs (apt, rustup
# targets, cargo-deb). Prints the wall time of every step.
set -euo pipefail
# shellcheck source=packaging/lib.sh
source "$(dirname "$0")/lib.sh"
cd "$REPO"

start=$(date +%s)
# One apt-get update and install for every step below.
step "apt packages" ensure_apt gcc-aarch64-linux-gnu libc6-dev-arm64-cross gcc-arm-linux-gnueabihf \
    libc6-dev-armhf-cross dpkg-dev time qemu-user-static debootstrap systemd systemd-container python3
packaging/build.sh
packaging/smoke-arm.sh
packaging/smoke-deb.sh
print_timings
log "packaging CI passed in $(($(date +%s) - start)) s"
