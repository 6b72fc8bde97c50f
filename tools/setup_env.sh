#!/usr/bin/env bash
# Create or reuse .venv/ at the repository root with trackocc's pinned stack
# (requirements/constraints.txt) and install trackocc in development mode.
# Idempotent: a second run only checks what is there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VENV="$ROOT/.venv"
CONSTRAINTS="$ROOT/requirements/constraints.txt"
PY_BOOT="${PYTHON:-$(command -v python3.11 || command -v python3)}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

step() { printf '\n[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  step "creating $VENV with $PY_BOOT"
  "$PY_BOOT" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=(pip_quiet "$PY" -m pip install -q -c "$CONSTRAINTS")
# pip on this kind of machine warns about absent local index folders; keep the output readable
pip_quiet() {
  local rc=0
  "$@" > >(grep -v 'is ignored: it is neither a file nor a directory' || true) 2>&1 || rc=$?
  return "$rc"
}
"$PY" - <<'PYEOF'
import sys
if sys.version_info[:2] != (3, 11):
    sys.exit(f'trackocc pins Python 3.11, .venv has {sys.version.split()[0]}; '
             'remove .venv or set PYTHON=python3.11')
PYEOF

step "build tools, torch, numpy"
# torch 2.13 declares setuptools>=77, which has no pkg_resources.packaging; mmcv's and mim's
# setup code need setuptools<70. torch runs with 69.5 (it imports setuptools only to build
# extensions), so it is installed without its declared deps and they are added explicitly.
"${PIP[@]}" setuptools wheel ninja numpy filelock typing-extensions sympy networkx jinja2 fsspec
"${PIP[@]}" --no-deps torch

if "$PY" -c "import mmcv, mmcv.ops; from mmcv.ops import nms; assert mmcv.__version__ == '2.1.0'" 2>/dev/null; then
  step "mmcv 2.1.0 with compiled ops: present"
else
  step "mmcv 2.1.0 from its sdist with ops (MMCV_WITH_OPS=1; ~10 min on 2 cores, cached by pip afterwards)"
  LOG="$VENV/mmcv-build.log"
  ( MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip install -v --no-build-isolation \
      -c "$CONSTRAINTS" mmcv==2.1.0 >"$LOG" 2>&1 ) &
  pid=$!
  start=$(date +%s)
  while kill -0 "$pid" 2>/dev/null; do
    sleep 20
    prog=$(grep -oE '\[[0-9]+/[0-9]+\]' "$LOG" | tail -n 1 || true)
    printf '  mmcv build: %4ds elapsed, compile step %s\n' "$(( $(date +%s) - start ))" "${prog:-(preparing)}"
  done
  if ! wait "$pid"; then
    tail -n 40 "$LOG"; echo "mmcv build failed, full log: $LOG" >&2; exit 1
  fi
  "$PY" -c "import mmcv.ops; from mmcv.ops import nms" || { echo "mmcv.ops does not import" >&2; exit 1; }
  step "mmcv built in $(( $(date +%s) - start ))s"
fi

step "mmengine, mmdet"
"${PIP[@]}" mmengine mmdet

step "mmdet3d (--no-deps) and the packages its imports need"
"${PIP[@]}" --no-deps mmdet3d nuscenes-devkit lyft_dataset_sdk
"${PIP[@]}" -r "$ROOT/requirements/runtime.txt"

step "spconv (CPU: ConvAlgo.Native)"
"${PIP[@]}" spconv-cu118 cumm-cu118

step "openmim (--no-deps: its optional openxlab deps pin an old setuptools and requests)"
"${PIP[@]}" --no-deps openmim
"${PIP[@]}" -r "$ROOT/requirements/mim.txt"

step "test tools"
"${PIP[@]}" -r "$ROOT/requirements/tests.txt"

step "trackocc (development mode: builds ops/ as torch extensions, links .mim/)"
"$PY" -m pip install -q --no-deps --no-build-isolation --no-use-pep517 -e "$ROOT" >"$VENV/trackocc-build.log" 2>&1 \
  || { tail -n 40 "$VENV/trackocc-build.log"; exit 1; }
"$PY" -c "import trackocc; print('trackocc', trackocc.__version__, 'ready in', '$VENV')"
