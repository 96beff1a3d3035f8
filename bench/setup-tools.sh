#!/usr/bin/env bash
# Install the npm tools the benchmarks and tests need into .tools/ at the repo root (gitignored):
#   mjml     - the official MJML compiler, reference for bench/render_bench.py
#   prism    - Prism mock of SendGrid's API (pytest -m prism)
#   maildev  - SMTP sink with a web UI, for manual send tests
# Pins: mjml 5.4.1 is the newest 5.x that installs and runs on Node 20; prism 5.14.2 and maildev 3.0.0
# are the last releases that support Node 20 (newer ones need Node 22+).
# Idempotent: does nothing when the three binaries are already there (FORCE=1 reinstalls).
set -euo pipefail

MJML_VERSION=5.4.1
PRISM_VERSION=5.14.2
MAILDEV_VERSION=3.0.0

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/node_modules/.bin"

command -v node >/dev/null 2>&1 || { echo "error: node not found (Node 20+ needed)" >&2; exit 1; }
command -v npm >/dev/null 2>&1 || { echo "error: npm not found" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
    echo "error: Node $(node -v) is too old; these pins need Node 20+" >&2
    exit 1
fi

if [ "${FORCE:-0}" != "1" ] && [ -x "$BIN/mjml" ] && [ -x "$BIN/prism" ] && [ -x "$BIN/maildev" ]; then
    echo "tools already installed in $TOOLS (FORCE=1 $0 to reinstall)"
else
    mkdir -p "$TOOLS"
    echo "installing mjml@$MJML_VERSION @stoplight/prism-cli@$PRISM_VERSION maildev@$MAILDEV_VERSION into $TOOLS ..."
    npm install --prefix "$TOOLS" --no-audit --no-fund \
        "mjml@$MJML_VERSION" "@stoplight/prism-cli@$PRISM_VERSION" "maildev@$MAILDEV_VERSION"
fi

for tool in mjml prism maildev; do
    if [ ! -x "$BIN/$tool" ]; then
        echo "error: $BIN/$tool missing after install" >&2
        exit 1
    fi
done

echo
echo "node     $(node -v) ($(command -v node))"
echo "mjml     $("$BIN/mjml" --version 2>/dev/null | tr '\n' ' ')-> $BIN/mjml"
echo "prism    $("$BIN/prism" --version 2>/dev/null) -> $BIN/prism"
echo "maildev  $(node -p "require('$TOOLS/node_modules/maildev/package.json').version") -> $BIN/maildev"
echo
echo "Add them to PATH with:  export PATH=\"$BIN:\$PATH\""
