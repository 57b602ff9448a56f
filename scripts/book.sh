#!/usr/bin/env bash
# Build the whole book on the default datasets on a CPU: set up, execute every chapter, build the HTML.
# Extra arguments go to the runner, e.g. `bash scripts/book.sh --profile paper` or `--chapter datasets`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh book
# Idle OpenMP threads yield instead of spinning (several-fold faster training on a busy 2-core machine).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
exec .venv/bin/recsae book --profile default "$@"
