"""Older real vLLM versions in CI: the rows of the vLLM table before 0.11.1 (the silent-sigmoid and
no-raw-reward rows) and one of 0.11.1 - 0.15, each launched by our launcher and scored by our client.

The environments are built by ``tests/matrix/install_vllm.sh`` (``tests/run.sh`` builds the versions
in ``RMCLIENT_CI_VLLM``); the check is ``tests/matrix/vllm_check.py``'s, on two models per version
(a Llama seq-cls POLAR-like model and an InternLM2ForRewardModel; the full matrix,
``tests/matrix/vllm.sh``, runs four on every row). Without ``RMCLIENT_CI_VLLM`` the versions are those
built under ``.venv-matrix``; with none, the tests skip (locally) or fail (``CI=true``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
MATRIX = REPO / ".venv-matrix"
sys.path.insert(0, str(REPO / "tests" / "matrix"))

import vllm_check  # noqa: E402

pytestmark = pytest.mark.vllm
CI_MODELS = ("llama-seq-cls", "internlm2-rm")


def _versions():
    wanted = os.environ.get("RMCLIENT_CI_VLLM")
    if wanted is not None:
        return wanted.split()
    return sorted(p.name[len("vllm-"):] for p in MATRIX.glob("vllm-*") if (p / ".rmclient-installed").is_file())


VERSIONS = _versions()
if not VERSIONS and os.environ.get("CI") == "true":
    pytest.fail("CI=true but no old vLLM environment was built (tests/run.sh builds RMCLIENT_CI_VLLM)", pytrace=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return vllm_check.build_models(tmp_path_factory.mktemp("matrix-models"))


@pytest.mark.skipif(not VERSIONS, reason="no old vLLM environment under .venv-matrix (tests/matrix/install_vllm.sh)")
@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("model", CI_MODELS)
def test_old_vllm_gives_the_raw_reward_or_is_refused(models, version, model, tmp_path):
    venv = MATRIX / f"vllm-{version}"
    assert (venv / ".rmclient-installed").is_file(), f"{venv} is not built: tests/matrix/install_vllm.sh {version}"
    result = vllm_check.check_model(model, models[model], venv, version, tmp_path)
    assert result["status"] == result["expected"], result
    assert "left_behind" not in result
    if result["status"] == "raw":
        assert result["ids_equal"] and result["max_diff_ids"] < vllm_check.TOL and result["max_diff_text"] < vllm_check.TOL
        assert any(not 0.0 <= r <= 1.0 for r in result["rewards"])  # not squashed by an activation
    else:
        assert "refused" in result["launcher"]
        assert result["client"].startswith(("refused", "engine fails"))


@pytest.fixture(scope="module")
def kind_models(tmp_path_factory):
    return vllm_check.build_models(tmp_path_factory.mktemp("matrix-kind-models"), kinds=True)


@pytest.mark.skipif(not VERSIONS, reason="no old vLLM environment under .venv-matrix (tests/matrix/install_vllm.sh)")
@pytest.mark.parametrize("version", VERSIONS)
def test_old_vllm_serves_process_rewards_raw(kind_models, version, tmp_path):
    """The PRM row of each old version (STEP pooling at the tokenizer's own step token before 0.10, ALL
    pooling with the activation off at launch or by request after), through our launcher and client."""
    venv = MATRIX / f"vllm-{version}"
    result = vllm_check.check_kind("prm", kind_models["prm"], venv, version, tmp_path)
    assert result["status"] == result["expected"] == "raw", result
    assert result["max_diff"] < vllm_check.TOL and "left_behind" not in result
