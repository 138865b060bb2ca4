#!/usr/bin/env bash
# Build the throwaway venv that holds the engines' own source, several releases each (no torch, no
# CUDA): $REPO/.venv-schemas with pydantic and shortuuid (what lmdeploy's protocol module imports),
# and under $REPO/.venv-schemas/engines/<engine>-<version>/ the Python files of each release's
# wheel (downloaded --no-deps; only *.py and the METADATA are kept). tests/test_engine_schemas.py
# validates the adapters' request bodies against each release's request types and checks each
# launch flag and table fact against its source. Idempotent: does nothing when already built
# with these versions.
#
#   .ci/engine-schemas.sh            # build (or skip)
#   FORCE=1 .ci/engine-schemas.sh    # rebuild
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-schemas"
PYTHON="${PYTHON:-python3}"   # 3.10+: lmdeploy's protocol module uses `X | None`

# One release per row of each engine's table, and the releases at its boundaries.
SGLANG_VERSIONS="0.4.3.post2 0.4.3.post4 0.4.4.post1 0.4.4.post3 0.4.6 0.4.10 0.5.4 0.5.9 0.5.23"
LMDEPLOY_VERSIONS="0.9.1 0.11.0 0.12.0 0.12.2 0.13.0 0.18.0"
DEPS="pydantic>=2,<3 shortuuid==1.0.13"
STAMP="$VENV/.engine-schemas"
WANT="$DEPS | sglang $SGLANG_VERSIONS | lmdeploy $LMDEPLOY_VERSIONS"

if [[ -z "${FORCE:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "engine-schemas: $VENV already built ($WANT)"
    exit 0
fi

start=$(date +%s)
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --disable-pip-version-check $DEPS
wheels="$(mktemp -d)"
trap 'rm -rf "$wheels"' EXIT
fetch() {  # engine version
    local dest="$VENV/engines/$1-$2"
    mkdir -p "$dest" "$wheels/$1-$2"
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        -d "$wheels/$1-$2" "$1==$2"
    "$VENV/bin/python" - "$wheels/$1-$2"/*.whl "$dest" <<'PY'
import sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    z.extractall(dest, [n for n in z.namelist() if n.endswith(".py") or n.endswith(".dist-info/METADATA")])
PY
    rm -rf "$wheels/$1-$2"
}
for v in $SGLANG_VERSIONS; do fetch sglang "$v"; done
for v in $LMDEPLOY_VERSIONS; do fetch lmdeploy "$v"; done
echo "$WANT" > "$STAMP"
echo "engine-schemas: built $VENV ($WANT) in $(( $(date +%s) - start )) s"
