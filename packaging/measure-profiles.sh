#!/usr/bin/env bash
# Size and build time of the three binaries under candidate release
# settings, for one target: the table behind [profile.dist] in Cargo.toml.
# Each variant is a clean build in its own target dir (slow: ~5-10 min per
# variant on 2 cores). Usage:
#   packaging/measure-profiles.sh [TARGET] [VARIANT...]
# Prints: variant, build wall and CPU seconds, then for agent/aggregator/cli
# the bytes as built and after `<triple>-strip`.
set -euo pipefail
cd "$(dirname "$0")/.."

target=${1:-aarch64-unknown-linux-gnu}
shift || true
variants=("$@")
[ ${#variants[@]} -gt 0 ] || variants=(default strip thin fat fat-abort fat-s fat-z fat-agent-z fat-agent-s)

case "$target" in
  aarch64-unknown-linux-gnu) strip_tool=aarch64-linux-gnu-strip ;;
  armv7-unknown-linux-gnueabihf) strip_tool=arm-linux-gnueabihf-strip ;;
  *) strip_tool="strip" ;;
esac

root=${MEASURE_DIR:-target/profile-measure}
for v in "${variants[@]}"; do
  # Cargo's release profile, overridden per variant through the environment
  # so that Cargo.toml is not touched.
  envs=(CARGO_PROFILE_RELEASE_DEBUG=false)
  extra=()
  case "$v" in
    default) ;;
    strip) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols) ;;
    thin) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=thin) ;;
    fat) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1) ;;
    fat-abort) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_PANIC=abort) ;;
    fat-s) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_OPT_LEVEL=s) ;;
    fat-z) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 CARGO_PROFILE_RELEASE_OPT_LEVEL=z) ;;
    # opt-level z for the agent's own crate only: with fat LTO its bin crate's
    # level drives the whole-program optimisation of the agent binary.
    fat-agent-z) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1)
      extra=(--config 'profile.release.package.callkpi-agent.opt-level="z"') ;;
    fat-agent-s) envs+=(CARGO_PROFILE_RELEASE_STRIP=symbols CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1)
      extra=(--config 'profile.release.package.callkpi-agent.opt-level="s"') ;;
    *) echo "unknown variant $v" >&2; exit 64 ;;
  esac
  dir="$root/$v"
  mkdir -p "$dir"
  env "${envs[@]}" CARGO_TARGET_DIR="$dir" /usr/bin/time -o "$dir/time" -f "build_s=%e cpu_s=%U+%S" \
    cargo build "${extra[@]}" --quiet --release --target "$target" -p callkpi-agent -p callkpi-aggregator -p callkpi-cli --bins
  line="$v $(cat "$dir/time")"
  for b in callkpi-agent callkpi-aggregator callkpi; do
    f="$dir/$target/release/$b"
    "$strip_tool" -o "$dir/$b.stripped" "$f"
    line+=" $b=$(stat -c %s "$f")/$(stat -c %s "$dir/$b.stripped")"
  done
  echo "$line"
done
