#!/usr/bin/env bash
# The real-vLLM version matrix: for each version, build its CPU environment (install_vllm.sh), then
# launch four tiny reward models through rmclient's launcher and score them through its client
# (vllm_check.py): raw rewards equal to the in-process forward pass, or the documented refusal; then
# the reward kinds (a process reward model, a multi-label head, dense per-token rewards): vllm-kinds.md.
#
#   tests/matrix/vllm.sh                      # every version below (about 1.5 h on 2 cores, ~50 GB)
#   tests/matrix/vllm.sh 0.10.1.1 0.12.0      # some versions
#
# Writes $RESULTS/<version>.json and the table $RESULTS/vllm.md (version x architecture:
# raw / refused / FAIL), which the README quotes. Exit status 1 if any version failed.
# Env: MATRIX_DIR (environments, default $REPO/.venv-matrix), RESULTS (default $REPO/tests/matrix/results).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/tests/matrix"
MATRIX_DIR="${MATRIX_DIR:-$REPO/.venv-matrix}"
RESULTS="${RESULTS:-$HERE/results}"
PY="${PY:-$REPO/.venv/bin/python}"   # the test environment (bash tests/run.sh builds it)
# One version per row of rmclient.adapters.vllm.TABLE, and more where a row spans many releases.
DEFAULT="0.8.5 0.9.2 0.10.0 0.10.1.1 0.11.0 0.11.2 0.12.0 0.13.0 0.14.1 0.15.1 0.16.0 0.20.2 0.25.0 0.32.0"
VERSIONS="${*:-$DEFAULT}"
mkdir -p "$RESULTS"
export MATRIX_DIR

status=0
for v in $VERSIONS; do
    t0=$(date +%s)
    if ! bash "$HERE/install_vllm.sh" "$v" > "$RESULTS/install-$v.log" 2>&1; then
        echo "vLLM $v: install FAILED (see $RESULTS/install-$v.log)"
        printf '{"version": "%s", "install_failed": true, "results": []}\n' "$v" > "$RESULTS/$v.json"
        status=1
        continue
    fi
    t1=$(date +%s)
    "$PY" "$HERE/vllm_check.py" "$MATRIX_DIR/vllm-$v" --out "$RESULTS/$v.json" --models "$MATRIX_DIR/models" \
        --kinds || status=1   # and the reward kinds: process, multi-label, dense
    t2=$(date +%s)
    "$PY" - "$RESULTS/$v.json" "$((t1 - t0))" "$((t2 - t1))" <<'PY'
import json, sys
path, install, check = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
report = json.load(open(path))
report.update(install_s=install, check_s=check)
json.dump(report, open(path, "w"), indent=1)
print(f"vLLM {report['version']}: install {install} s, check {check} s")
PY
done
"$PY" "$HERE/report.py" "$RESULTS" > "$RESULTS/vllm.md"
"$PY" "$HERE/report.py" --kinds "$RESULTS" "tests/matrix/vllm.sh $VERSIONS" > "$RESULTS/vllm-kinds.md"
cat "$RESULTS/vllm.md"
exit $status
