#!/usr/bin/env bash
# The main job: set up (first run only) and run the end-to-end demo on the embedded default.
# Extra arguments go to `latentreason demo` (e.g. --out runs/demo2, --quick).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/latentreason demo "$@"
