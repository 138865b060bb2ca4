"""The base install (``pip install reward-model-client``, no torch) scores against servers.

``tests/run.sh`` builds ``.venv-client`` with ``pip install .`` (the wheel, not the source
tree) and checks that torch is absent. Each test runs that venv's Python or ``rmclient``
against a :class:`FakeEngine` started here, and compares with rewards computed here from
the main venv's encoding: same ids, same rewards, no torch.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from rmclient import RewardModelClient
from tests.fake_engine import FakeEngine, reward_of

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-client"
PYTHON = VENV / "bin" / "python"

pytestmark = pytest.mark.skipif(not PYTHON.exists(), reason=".venv-client is built by tests/run.sh")

SAMPLES = [
    {"prompt": "What is 2+2?", "reference": "4", "output": "4"},
    {"prompt": "Name a colour.", "reference": "blue", "output": "green, I think"},
]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "RMCLIENT_"))}
    env["PATH"] = f"{VENV / 'bin'}:{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    return env


def _run(args, tmp_path, **kw) -> subprocess.CompletedProcess:
    # cwd outside the repository: the installed wheel is imported, not ./rmclient
    return subprocess.run(args, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300, **kw)


def _python(code: str, tmp_path) -> subprocess.CompletedProcess:
    return _run([str(PYTHON), "-c", code], tmp_path)


def _expected(model: str) -> list:
    """What the fake engine answers for SAMPLES' token ids, encoded by the main venv."""
    return [reward_of(ids) for ids in RewardModelClient(model).encode_ids(SAMPLES)]


def test_the_client_venv_has_no_torch_and_imports_the_installed_wheel(tmp_path):
    out = _python(
        "import importlib.util, rmclient, rmclient.adapters, rmclient.launchers, rmclient.integrations.verl, "
        "rmclient.integrations.trl, rmclient.cli;"
        "print(importlib.util.find_spec('torch') is None, rmclient.__file__, rmclient.__version__)",
        tmp_path,
    )
    assert out.returncode == 0, out.stderr
    no_torch, path, version = out.stdout.split()
    assert no_torch == "True"
    assert str(VENV) in path and str(ROOT / "rmclient") not in path
    from importlib.metadata import version as installed

    assert version == installed("reward-model-client")


@pytest.mark.parametrize("engine,version", [("vllm", "0.32.0"), ("sglang", "0.5.9"), ("lmdeploy", "0.13.0")])
def test_the_base_install_scores_against_every_engine(polar_path, tmp_path, engine, version):
    code = (
        "import json, sys; from rmclient import RewardModelClient;"
        f"c = RewardModelClient({polar_path!r}, server_type={engine!r}, server_address=sys.argv[1]);"
        f"print(json.dumps(c({SAMPLES!r}))); c.close()"
    )
    with FakeEngine(engine, version) as fake:
        out = _run([str(PYTHON), "-c", code, fake.url], tmp_path)
        with RewardModelClient(polar_path, server_type=engine, server_address=fake.url) as here:
            expected = here(SAMPLES)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected
    if engine == "vllm":  # token ids in, so the reward is a function of the ids
        assert expected == _expected(polar_path)


def test_trainer_hooks_run_without_torch(polar_path, tmp_path):
    code = (
        "import json, sys; from rmclient import RewardModelClient;"
        "from rmclient.integrations.verl import make_compute_score;"
        f"c = RewardModelClient({polar_path!r}, server_type='vllm', server_address=sys.argv[1]);"
        "f = make_compute_score(c);"
        f"s = {SAMPLES!r};"
        "print(json.dumps([f(data_source='d', solution_str=x['output'], ground_truth=x['reference'],"
        " extra_info={'prompt': x['prompt']}) for x in s])); c.close()"
    )
    with FakeEngine("vllm", "0.32.0") as fake:
        out = _run([str(PYTHON), "-c", code, fake.url], tmp_path)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == _expected(polar_path)


def test_the_cli_scores_against_a_server_and_names_the_extra_for_in_process(polar_path, tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(json.dumps(s) + "\n" for s in SAMPLES))
    rmclient = str(VENV / "bin" / "rmclient")
    with FakeEngine("vllm", "0.32.0") as fake:
        out = _run([rmclient, "score", str(data), "-o", str(tmp_path / "out.jsonl"), "--model", polar_path,
                    "--backend", f"vllm@{fake.url}", "--no-progress"], tmp_path)
    assert out.returncode == 0, out.stderr
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["reward"] for r in rows] == _expected(polar_path)

    # in-process scoring and `serve` need torch: one line naming the extra, exit 2, no traceback
    out = _run([rmclient, "score", str(data), "-o", str(tmp_path / "x.jsonl"), "--model", polar_path,
                "--no-progress"], tmp_path)
    assert out.returncode == 2, out.stderr
    assert "needs torch, which is not installed: pip install 'reward-model-client[transformers]'" in out.stderr
    assert "Traceback" not in out.stderr
    out = _run([rmclient, "serve", polar_path, "--port", "0"], tmp_path)
    assert out.returncode == 2 and "pip install 'reward-model-client[serve]'" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr

    code = (
        "from rmclient import RewardModelClient, ConfigurationError\n"
        f"try:\n    RewardModelClient({polar_path!r})({SAMPLES[0]!r})\n"
        "except ConfigurationError as e:\n    print(e)\n"
    )
    out = _python(code, tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == (
        "in-process scoring (server_type='transformers') needs torch, which is not installed: "
        "pip install 'reward-model-client[transformers]'"
    )


def test_the_launchers_and_version_work_without_torch(polar_path, tmp_path):
    rmclient = str(VENV / "bin" / "rmclient")
    out = _run([rmclient, "--version"], tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("rmclient "), out.stderr
    out = _run([rmclient, "launch", "vllm", polar_path, "--engine-version", "0.32.0", "--dry-run"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "vllm serve" in out.stdout or "vllm.entrypoints" in out.stdout, out.stdout
