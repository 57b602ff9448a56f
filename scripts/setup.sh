#!/usr/bin/env bash
# Set up everything recsae needs, idempotently: a virtualenv in .venv with the package (editable) and its
# extras, the book's JavaScript (npm, vendored into book/_vendor), and — for the tests — Debian's Chromium.
#
#   bash scripts/setup.sh book    # what `bash scripts/book.sh` needs
#   bash scripts/setup.sh test    # what `bash scripts/test.sh` needs (book + pytest, playwright, chromium)
#
# Only PyPI, npm and Debian's registries are used. torch is pinned to 2.13.0 (the CPU wheel).
set -euo pipefail
cd "$(dirname "$0")/.."
what="${1:-book}"
PY="${PYTHON:-python3}"

if [ ! -x .venv/bin/python ]; then
  echo "==> creating .venv"
  "$PY" -m venv .venv
fi
stamp=".venv/.recsae-installed-$what"
want="$(cat pyproject.toml | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "==> installing Python packages (.[${what}])"
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[${what}]"
  echo "$want" > "$stamp"
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing the book's JavaScript (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi
.venv/bin/python scripts/vendor_js.py

if [ "$what" = "test" ] && [ ! -x /usr/bin/chromium ]; then
  echo "==> installing Debian's chromium for the browser tests"
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium > /dev/null
fi
