#!/usr/bin/env bash
# Build the whole book on the default datasets on a CPU: set up, execute every chapter, build the HTML.
# Extra arguments go to the runner, e.g. `bash scripts/book.sh --profile paper`, `--chapter datasets` or
# `--jobs 1`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh book
# Idle OpenMP threads yield instead of spinning (several-fold faster training on a busy 2-core machine).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
# Two notebooks at once keep both cores of a 2-core machine busy (cold smoke book: 219 s one at a time, 97 s
# two at a time, 2026-11-30); `--jobs 1` after this script's name runs them one by one.
exec .venv/bin/recsae book --profile default --jobs 2 "$@"
