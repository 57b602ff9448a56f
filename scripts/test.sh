#!/usr/bin/env bash
# Run every test: lint, unit tests, tests on the real datasets (when RECSAE_DATA or ../shared/datasets
# holds them), the smoke-profile book build and the browser tests. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh test
echo "==> ruff"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
# Idle OpenMP threads yield instead of spinning: on a shared 2-core machine spinning threads slow every
# other process (chapter kernels, the browser) several-fold.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
echo "==> pytest"
exec .venv/bin/python -m pytest -ra "$@"
