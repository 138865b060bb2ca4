#!/usr/bin/env bash
# Build the throwaway venv that holds the engines' own request schemas (no torch, no CUDA):
# $REPO/.venv-schemas with pydantic plus sglang and lmdeploy installed WITHOUT their
# dependencies. tests/test_engine_schemas.py validates the adapters' request bodies
# against it. Idempotent: does nothing when the venv was already built with these pins.
#
#   .ci/engine-schemas.sh            # build (or skip)
#   FORCE=1 .ci/engine-schemas.sh    # rebuild
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-schemas"
PYTHON="${PYTHON:-python3}"   # 3.10+: lmdeploy's protocol module uses `X | None`

# Engines: --no-deps, their resolvers would pull CUDA torch. shortuuid is what
# lmdeploy's protocol module imports besides pydantic; sglang is only read (ast),
# never imported (its native /classify type needs torch).
ENGINES="sglang==0.5.23 lmdeploy==0.18.0 shortuuid==1.0.13"
DEPS="pydantic>=2,<3"
STAMP="$VENV/.engine-schemas"
WANT="$DEPS $ENGINES"

if [[ -z "${FORCE:-}" && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]]; then
    echo "engine-schemas: $VENV already built ($WANT)"
    exit 0
fi

rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "$DEPS"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps $ENGINES
echo "$WANT" > "$STAMP"
echo "engine-schemas: built $VENV ($WANT)"
