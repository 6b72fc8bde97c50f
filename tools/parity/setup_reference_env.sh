#!/usr/bin/env bash
# Build (or check) .venv-ref/: the original TrackOcc's software stack on CPU, for the parity
# harness (tools/parity/README.md).
#
#   bash tools/parity/setup_reference_env.sh --original PATH --mmdet3d PATH
#
#   --original  a checkout of Tsinghua-MARS-Lab/TrackOcc (commit a8db350); put on sys.path by
#               a .pth file, nothing is copied or built in it
#   --mmdet3d   a checkout of open-mmlab/mmdetection3d at tag v1.0.0rc6 (not on PyPI);
#               installed in development mode (pure Python, no compiled ops)
#
# Stack: Python 3.8, torch 1.12.1 + torchvision 0.13.1 (CPU use), mmcv-full 1.6.0 compiled from
# its sdist with the CPU ops (MMCV_WITH_OPS=1, no CUDA), mmdet 2.28.2, mmsegmentation 0.30.0,
# numpy 1.23.5, setuptools 59.5.0 and yapf 0.40.1 as the original's README pins them.
# The original's CUDA-only bev_pool_v2 extension is not built: tools/parity/ref_ops.py supplies
# a CPU equivalent at run time.
#
# Idempotent: every step first checks whether its result is there; a second run only checks
# (seconds). Environment: PYTHON38 (interpreter to create the venv with), MAX_JOBS (compile
# jobs, default nproc), REF_VENV (default <repo>/.venv-ref).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
VENV="${REF_VENV:-$ROOT/.venv-ref}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

T0=$(date +%s)
step() { printf '[ref-env %s +%4ds] %s\n' "$(date +%H:%M:%S)" "$(( $(date +%s) - T0 ))" "$*"; }
die() { printf 'setup_reference_env: %s\n' "$*" >&2; exit 1; }

ORIGINAL="" MMDET3D=""
while [ $# -gt 0 ]; do
  case "$1" in
    --original) ORIGINAL="${2:-}"; shift 2 ;;
    --mmdet3d) MMDET3D="${2:-}"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done
[ -n "$ORIGINAL" ] || die "--original PATH is required (a checkout of the original TrackOcc)"
[ -n "$MMDET3D" ] || die "--mmdet3d PATH is required (a checkout of mmdetection3d v1.0.0rc6)"
ORIGINAL="$(cd "$ORIGINAL" 2>/dev/null && pwd)" || die "--original: no such directory"
MMDET3D="$(cd "$MMDET3D" 2>/dev/null && pwd)" || die "--mmdet3d: no such directory"
[ -f "$ORIGINAL/models/detectors/trackocc.py" ] && \
  [ -f "$ORIGINAL/configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py" ] || \
  die "$ORIGINAL does not look like the original TrackOcc (models/detectors/trackocc.py or configs/TrackOcc/trackocc_r50_704x256_3inst_3f_8gpu.py missing)"
grep -q "__version__ = '1.0.0rc6'" "$MMDET3D/mmdet3d/version.py" 2>/dev/null || \
  die "$MMDET3D/mmdet3d/version.py does not say 1.0.0rc6 (check out tag v1.0.0rc6)"

# ------------------------------------------------------------------ interpreter and venv
find_py38() {
  local c
  for c in "${PYTHON38:-}" "$(command -v python3.8 || true)" /root/.pyenv/versions/3.8*/bin/python3.8 \
           "$HOME"/.pyenv/versions/3.8*/bin/python3.8; do
    [ -n "$c" ] && [ -x "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 8)' 2>/dev/null \
      && { echo "$c"; return 0; }
  done
  return 1
}
if [ ! -x "$VENV/bin/python" ]; then
  PY38="$(find_py38)" || die "no Python 3.8 found (set PYTHON38=/path/to/python3.8)"
  step "creating $VENV with $PY38"
  "$PY38" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 8), sys.version' 2>/dev/null || \
  die "$VENV is not a Python 3.8 environment; remove it and run again"
step "python $("$PY" -c 'import platform; print(platform.python_version())') in $VENV"

pip_q() {  # quiet pip; the machine's pip config warns about absent local index folders
  local rc=0
  "$PY" -m pip install -q "$@" > >(grep -v 'is ignored: it is neither a file nor a directory' || true) 2>&1 || rc=$?
  return "$rc"
}
have() { "$PY" -c "$1" >/dev/null 2>&1; }

# ------------------------------------------------------------------ build tools, torch, numpy
if have "import setuptools, wheel, numpy; assert setuptools.__version__ == '59.5.0' and numpy.__version__ == '1.23.5'"; then
  step "setuptools 59.5.0, numpy 1.23.5: present"
else
  step "setuptools 59.5.0, wheel, ninja, numpy 1.23.5"
  pip_q --upgrade 'pip<24.1'
  pip_q setuptools==59.5.0 wheel ninja numpy==1.23.5
fi
if have "import torch, torchvision; assert torch.__version__.split('+')[0] == '1.12.1' and torchvision.__version__.split('+')[0] == '0.13.1'"; then
  step "torch 1.12.1, torchvision 0.13.1: present"
else
  # PyPI's 1.12.1 wheel is the CUDA 10.2 build; it runs on CPU (no GPU is used). Set
  # TORCH_INDEX_URL to a CPU wheel index to get the smaller +cpu build instead.
  step "torch 1.12.1 + torchvision 0.13.1 (large download the first time)"
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    pip_q --index-url "$TORCH_INDEX_URL" torch==1.12.1 torchvision==0.13.1 numpy==1.23.5
  else
    pip_q torch==1.12.1 torchvision==0.13.1 numpy==1.23.5
  fi
fi

# ------------------------------------------------------------------ mmcv-full 1.6.0 (CPU ops)
MMCV_CHECK="import mmcv, mmcv.ops; from mmcv.ops import nms; from mmcv.utils import ext_loader; ext_loader.load_ext('_ext', ['ms_deform_attn_forward', 'nms']); assert mmcv.__version__ == '1.6.0'"
if have "$MMCV_CHECK"; then
  step "mmcv-full 1.6.0 with compiled CPU ops: present"
else
  step "mmcv-full 1.6.0 runtime deps"
  pip_q addict packaging Pillow==10.4.0 pyyaml yapf==0.40.1 'opencv-python==4.8.1.78' numpy==1.23.5
  LOG="$VENV/mmcv-full-build.log"
  step "mmcv-full 1.6.0 from its sdist with CPU ops (MMCV_WITH_OPS=1, FORCE_CUDA=0; log $LOG)"
  bstart=$(date +%s)
  ( MMCV_WITH_OPS=1 FORCE_CUDA=0 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "$PY" -m pip install -v \
      --no-build-isolation --no-binary mmcv-full mmcv-full==1.6.0 >"$LOG" 2>&1 ) &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 30
    prog=$(grep -oE '\[[0-9]+/[0-9]+\]' "$LOG" | tail -n 1 || true)
    step "  mmcv-full build: $(( $(date +%s) - bstart ))s, compile step ${prog:-(preparing)}"
  done
  if ! wait "$pid"; then
    tail -n 40 "$LOG"; die "mmcv-full build failed, full log: $LOG"
  fi
  have "$MMCV_CHECK" || die "mmcv-full installed but its ops do not import (log: $LOG)"
  step "mmcv-full built in $(( $(date +%s) - bstart ))s"
fi

# ------------------------------------------------------------------ mmdet, mmseg
if have "import mmdet, mmseg; assert mmdet.__version__ == '2.28.2' and mmseg.__version__ == '0.30.0'"; then
  step "mmdet 2.28.2, mmsegmentation 0.30.0: present"
else
  step "mmdet 2.28.2, mmsegmentation 0.30.0"
  pip_q mmdet==2.28.2 mmsegmentation==0.30.0 numpy==1.23.5 mmcv-full==1.6.0
fi

# ------------------------------------------------------------------ mmdet3d 1.0.0rc6 from the checkout
if have "import mmdet3d, os; assert mmdet3d.__version__ == '1.0.0rc6'; assert os.path.realpath(os.path.dirname(mmdet3d.__file__)) == os.path.realpath('$MMDET3D/mmdet3d'); import mmdet3d.models, mmdet3d.datasets"; then
  step "mmdet3d 1.0.0rc6 from $MMDET3D: present"
else
  step "mmdet3d 1.0.0rc6 runtime deps (its requirements/runtime.txt)"
  pip_q -r "$MMDET3D/requirements/runtime.txt" numpy==1.23.5 torch==1.12.1 mmcv-full==1.6.0 \
    setuptools==59.5.0
  step "mmdet3d 1.0.0rc6 in development mode from $MMDET3D (--no-deps, pure Python)"
  pip_q --no-deps --no-build-isolation -e "$MMDET3D"
  have "import mmdet3d.models, mmdet3d.datasets" || \
    { "$PY" -c "import mmdet3d.models, mmdet3d.datasets" || true; die "mmdet3d does not import"; }
fi

# ------------------------------------------------------------------ the original on sys.path
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
PTH="$SITE/trackocc_original.pth"
if [ -f "$PTH" ] && [ "$(cat "$PTH")" = "$ORIGINAL" ]; then
  step "original on sys.path ($PTH -> $ORIGINAL): present"
else
  step "original on sys.path: $PTH -> $ORIGINAL"
  printf '%s\n' "$ORIGINAL" > "$PTH.tmp" && mv "$PTH.tmp" "$PTH"
fi

# the original's own imports beyond mmdet3d's (pyquaternion comes with nuscenes-devkit)
if have "import pyquaternion, pandas, scipy, tqdm, cv2, PIL"; then
  step "the original's other imports: present"
else
  step "the original's other imports (pyquaternion, pandas, scipy, tqdm)"
  pip_q pyquaternion pandas scipy tqdm numpy==1.23.5
fi

# ------------------------------------------------------------------ final check
step "checking the stack (imports the original's models and loaders with the CPU bev_pool_v2)"
PYTHONPATH="$ROOT/tools/parity${PYTHONPATH:+:$PYTHONPATH}" "$PY" - "$ORIGINAL" <<'PYEOF'
import sys
import mmcv, mmdet, mmseg, mmdet3d, numpy, torch, torchvision
import ref_ops
ref_ops.install_cpu_ops()
import models, loaders  # noqa: F401  (the original's packages, via the .pth file)
assert models.__file__.startswith(sys.argv[1]), models.__file__
print(f'  python {sys.version.split()[0]}, torch {torch.__version__}, torchvision '
      f'{torchvision.__version__}, numpy {numpy.__version__}, mmcv-full {mmcv.__version__}, '
      f'mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, mmdet3d {mmdet3d.__version__}')
print(f'  original: {sys.argv[1]}')
PYEOF
step "reference env ready in $VENV ($(( $(date +%s) - T0 ))s this run)"
