#!/usr/bin/env bash
# Set up the virtual environment (.venv) and run the whole test suite, lint included.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k float16`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh "olive,cpu,test"
python -m ruff check .
python -m pytest "$@"
