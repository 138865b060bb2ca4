"""LLM judges against REAL vLLM servers on CPU (``tests/matrix/judge_check.py``): the tiny chat model of
``rmclient.testing`` served as ``vllm serve`` would, judged through ``JudgeClient``.

On vLLM 0.32 (``.venv-vllm``) and on old vLLMs (in CI ``RMCLIENT_CI_JUDGE_VLLM``, one per row: 0.10.1.1
takes ``guided_regex`` / ``guided_choice`` as 0.8.5 and 0.10.0 do, 0.12.0 ``structured_outputs``):
structured output forces a valid verdict out of random weights; the prompt ids vLLM renders equal the chat template's, and
``P(A)`` and the expected digit equal the in-process forward pass within 1e-4; position-swapped
pairwise gives ``P(A>B) + P(B>A) == 1``; the same request twice gives the same answer.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "matrix"))

import judge_check  # noqa: E402

pytestmark = pytest.mark.vllm
NEW = REPO / ".venv-vllm"
# CI judges one old vLLM per row of the judge table (RMCLIENT_CI_JUDGE_VLLM in tests/run.sh); run by hand,
# every old vLLM of RMCLIENT_CI_VLLM, or every one built.
_OLD = os.environ.get("RMCLIENT_CI_JUDGE_VLLM", os.environ.get("RMCLIENT_CI_VLLM", ""))
OLD = [REPO / ".venv-matrix" / f"vllm-{v}" for v in _OLD.split()] or sorted(
    p for p in (REPO / ".venv-matrix").glob("vllm-*") if (p / ".rmclient-installed").is_file())
VENVS = [p for p in [NEW, *OLD] if (p / "bin" / "python").exists()]
if os.environ.get("CI") == "true" and NEW not in VENVS:
    pytest.fail(f"CI=true but {NEW} is missing: run .ci/vllm-env.sh", pytrace=False)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from rmclient.testing import build_judge_model

    return str(build_judge_model(tmp_path_factory.mktemp("judge") / "tiny-judge"))


@pytest.mark.skipif(not VENVS, reason="no vLLM environment (.ci/vllm-env.sh, tests/matrix/install_vllm.sh)")
@pytest.mark.parametrize("venv", VENVS, ids=lambda p: p.name)
def test_a_real_vllm_judges_exactly(venv, model, tmp_path):
    result = judge_check.check_version(venv, model, tmp_path)
    assert result["left_behind"] == []
    assert result["json_pointwise"]["ok"], result["json_pointwise"]  # forced: valid from random weights
    assert result["json_pairwise"]["ok"], result["json_pairwise"]
    probs = result["probs"]
    assert probs["ids_equal"], "vLLM rendered other prompt ids than the chat template"
    assert probs["masked"], "tokens other than the choices came back: the choice constraint was ignored"
    assert probs["max_diff"] < judge_check.TOL, probs
    for recipe in ("pairwise_probs", "pointwise_probs"):
        assert probs[recipe]["score"] == pytest.approx(probs[recipe]["forward_score"], abs=judge_check.TOL)
    swap = result["swap"]
    assert swap["ok"], swap
    assert abs(swap["a_first"] - swap["a_second"]) > 1e-3  # the raw orders differ: the debiasing mattered
    assert result["repeat"]["ok"]
