#!/usr/bin/env bash
# Build a minimal Asterisk 22 from its public source repository, for recording
# call-centre fixtures (tests/fixtures/asterisk/run-*). Nothing of Asterisk is
# kept in this repository: the source is cloned into a build directory outside
# it and the install goes to a prefix outside it.
#
# Only what the recordings need is built: core Local channels, pbx_config,
# pbx_spool (call files), AMI (core), app_queue, the dialplan apps and
# functions the scenario's extensions.conf uses, the feature-code bridge
# (DTMF transfers), music on hold, CDR/CEL CSV. No pjproject, no SIP.
#
# Environment:
#   ASTERISK_GIT   clone source (default: https://github.com/asterisk/asterisk.git;
#                  a local mirror of that repository works too)
#   ASTERISK_TAG   tag to build (default 22.10.1)
#   BUILD_DIR      where the source is checked out (default
#                  ${XDG_CACHE_HOME:-~/.cache}/callkpi/asterisk)
#   PREFIX         install prefix (default $BUILD_DIR/install)
#   JOBS           make -j (default 2)
set -euo pipefail

ASTERISK_GIT=${ASTERISK_GIT:-https://github.com/asterisk/asterisk.git}
ASTERISK_TAG=${ASTERISK_TAG:-22.10.1}
BUILD_DIR=${BUILD_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/callkpi/asterisk}
PREFIX=${PREFIX:-$BUILD_DIR/install}
JOBS=${JOBS:-2}
SRC=$BUILD_DIR/src

repo_root=$(cd "$(dirname "$0")/../../.." && pwd)
case "$BUILD_DIR/" in
"$repo_root"/*) echo "BUILD_DIR must be outside the repository" >&2; exit 2 ;;
esac

# Debian build dependencies (bookworm names).
# apt-get install build-essential libedit-dev libjansson-dev libxml2-dev \
#   libsqlite3-dev uuid-dev libssl-dev libncurses-dev
mkdir -p "$BUILD_DIR"
if [ ! -d "$SRC/.git" ]; then
    git clone --no-checkout "$ASTERISK_GIT" "$SRC"
fi
git -C "$SRC" -c advice.detachedHead=false checkout --force "$ASTERISK_TAG"
git -C "$SRC" rev-parse HEAD > "$BUILD_DIR/commit"

cd "$SRC"
if [ ! -f config.status ] || [ "$(cat "$BUILD_DIR/configured-tag" 2>/dev/null)" != "$ASTERISK_TAG" ]; then
    ./configure --prefix="$PREFIX" \
        --without-pjproject-bundled --without-pjproject \
        --with-jansson-bundled=no --without-libcurl --without-srtp \
        --without-ogg --without-vorbis --without-speex --without-opus \
        --without-postgres --without-unixodbc --without-gsm
    echo "$ASTERISK_TAG" > "$BUILD_DIR/configured-tag"
fi

make menuselect.makeopts
ms=menuselect/menuselect
$ms --disable-all menuselect.makeopts
# app_queue's dependencies and the scenario's dialplan.
for m in \
    app_queue app_dial app_senddtmf app_read app_playback app_waitforcond \
    app_userevent app_verbose app_stack app_exec \
    pbx_config pbx_spool \
    func_logic func_cut func_rand func_callerid func_strings func_global \
    func_channel func_math func_db \
    bridge_simple bridge_builtin_features bridge_holding bridge_builtin_interval_features \
    res_musiconhold res_monitor res_features \
    format_wav format_sln format_pcm codec_ulaw codec_alaw codec_resample \
    cdr_csv cdr_manager cel_custom cel_manager \
    ; do
    $ms --enable "$m" menuselect.makeopts >/dev/null 2>&1 || echo "note: menuselect has no $m" >&2
done
# core sounds/moh downloads need network access and are not used
for s in CORE-SOUNDS-EN-GSM MOH-OPSOUND-WAV EXTRA-SOUNDS-EN-GSM; do
    $ms --disable "$s" menuselect.makeopts >/dev/null 2>&1 || true
done

make -j"$JOBS"
make install
"$PREFIX/sbin/asterisk" -V
