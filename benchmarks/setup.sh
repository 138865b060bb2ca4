#!/usr/bin/env bash
# Build the benchmark environment "$REPO/.venv-bench" (idempotent).
#
#   .venv-bench   the CPU torch wheel (pinned first, so pip never pulls a CUDA build),
#                 this package (editable) with transformers, aiohttp for the fake servers,
#                 and the peer: xtuner==0.2.0 installed --no-deps plus requests (bench.py
#                 loads xtuner/utils/rm_utils.py by path: the package __init__ needs mmengine).
#   .venv-vllm    the real CPU vLLM, built by .ci/vllm-env.sh (a no-op when it already works);
#                 skip with BENCH_SKIP_VLLM=1 (then run bench.py --only encoding,e2e,scaling).
#
# Env: PYTHON (interpreter to build the venv from, default python3), TORCH_VERSION (2.13.0),
#      TORCH_WHEEL_DIR (/opt/wheels, used as --find-links when present), BENCH_VENV.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BENCH_VENV:-$REPO/.venv-bench}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
TORCH_WHEEL_DIR="${TORCH_WHEEL_DIR:-/opt/wheels}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

log() { echo "[bench-env] $*" >&2; }

ready() {
    [ -x "$VENV/bin/python" ] && "$VENV/bin/python" - <<'PY' >/dev/null 2>&1
import importlib.util, sys
import torch, transformers, httpx, tenacity, aiohttp, requests
assert importlib.util.find_spec("rmclient") is not None  # found, not imported: a work tree may be mid-edit
assert torch.__version__.endswith("+cpu"), torch.__version__
spec = importlib.util.find_spec("xtuner")
assert spec is not None and spec.submodule_search_locations
PY
}

if ready; then
    log "$VENV is complete; nothing to install"
else
    [ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PYTHON" -m venv "$VENV"; }
    PIP=("$VENV/bin/python" -m pip)
    find_links=()
    [ -d "$TORCH_WHEEL_DIR" ] && find_links=(--find-links "$TORCH_WHEEL_DIR")
    log "installing torch==$TORCH_VERSION (CPU build) first"
    "${PIP[@]}" install -q "${find_links[@]}" "torch==$TORCH_VERSION"
    case "$("$VENV/bin/python" -c 'import torch; print(torch.__version__)')" in
        *+cpu) ;;
        *) log "ERROR: torch in $VENV is not the CPU build"; exit 1 ;;
    esac
    log "installing rmclient (editable) with transformers and aiohttp"
    "${PIP[@]}" install -q "${find_links[@]}" -e "$REPO[transformers,test]" "torch==$TORCH_VERSION"
    log "installing the peer: xtuner==0.2.0 --no-deps, requests"
    "${PIP[@]}" install -q --no-deps "xtuner==0.2.0"
    "${PIP[@]}" install -q requests
    ready || { log "ERROR: $VENV is still incomplete"; exit 1; }
fi

if [ "${BENCH_SKIP_VLLM:-0}" != "1" ]; then
    bash "$REPO/.ci/vllm-env.sh"
fi
log "done: $VENV/bin/python benchmarks/bench.py"
