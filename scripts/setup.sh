#!/usr/bin/env bash
# Set-up shared by scripts/demo.sh and scripts/test.sh: a virtual environment in .venv, torch, then this
# package with its dev extras. Re-running is cheap: the install is skipped while pyproject.toml is unchanged.
#
# torch: an installed torch whose version is inside the range pyproject.toml declares is kept (a CUDA or ROCm
# build you installed yourself stays); torch==2.13.0 is installed only when torch is absent (or outside that
# range). Plain `pip install torch` gives the CUDA build on Linux; for the CPU-only build set
#   TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# (any PyTorch wheel index works, e.g. .../whl/cu128 for a CUDA 12.8 build).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
TORCH_PIN="torch==2.13.0"
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating virtual environment $VENV" >&2
  "$PYTHON" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
# prints "ok VERSION", "outside VERSION RANGE" or "absent"
torch_state=$(python - <<'EOF'
import re
spec = re.search(r'"torch\s*([^"]*)"', open("pyproject.toml", encoding="utf-8").read()).group(1).strip()
try:
    import torch
except Exception:
    print("absent")
    raise SystemExit
def rel(v):
    return tuple(int(x) for x in re.findall(r"\d+", v.split("+")[0])[:3])
have = rel(torch.__version__)
ops = {">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
       "==": lambda a, b: a == b, "!=": lambda a, b: a != b}
def pad(t):
    return t + (0,) * (3 - len(t))
ok = all(ops[op](pad(have), pad(rel(v))) for op, v in re.findall(r"(>=|<=|==|!=|>|<)\s*([\d.]+)", spec))
print(("ok " if ok else "outside ") + torch.__version__ + ("" if ok else " " + spec))
EOF
)
case "$torch_state" in
  ok*) echo "[setup] using the installed torch ${torch_state#ok }" >&2 ;;
  *)
    if [ "$torch_state" = absent ]; then
      echo "[setup] installing $TORCH_PIN${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}" >&2
    else
      echo "[setup] the installed torch ${torch_state#outside } is outside the supported range; installing $TORCH_PIN" >&2
    fi
    python -m pip install -q "$TORCH_PIN" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
    ;;
esac
stamp="$VENV/.latentreason-installed"
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing latentreason with dev extras" >&2
  python -m pip install -q -e ".[dev]"
  touch "$stamp"
fi
