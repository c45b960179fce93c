#!/usr/bin/env bash
# Install the pinned opencode (npm package opencode-ai) into a cache dir, once.
#
#   tests/integration/install_opencode.sh            # prints the path of the opencode binary
#
# The cache dir is $LOCALSWARM_TEST_CACHE (default ~/.cache/localswarm-test); a second run
# finds the stamp and returns at once. Exit 3 means npm or its registry is unreachable,
# which is the only reason the end-to-end test may skip.
set -euo pipefail

VERSION="${OPENCODE_VERSION:-1.18.33}"
CACHE="${LOCALSWARM_TEST_CACHE:-$HOME/.cache/localswarm-test}"
DIR="$CACHE/opencode-$VERSION"
BIN="$DIR/node_modules/.bin/opencode"

if [ -f "$DIR/.installed" ] && [ -x "$BIN" ]; then
    echo "$BIN"
    exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "npm is not installed" >&2
    exit 3
fi
if ! npm view "opencode-ai@$VERSION" version >/dev/null 2>&1; then
    echo "the npm registry is unreachable (npm view opencode-ai@$VERSION failed)" >&2
    exit 3
fi
mkdir -p "$DIR"
cd "$DIR"
[ -f package.json ] || echo '{"name": "localswarm-opencode-test", "private": true}' > package.json
npm install --no-audit --no-fund --loglevel=error "opencode-ai@$VERSION" >&2
"$BIN" --version >&2
touch .installed
echo "$BIN"
