"""One vLLM version, four tiny reward models, through rmclient's own launcher and client.

    python tests/matrix/vllm_check.py VENV [--out RESULT.json] [--models DIR]

VENV is a vLLM environment (``tests/matrix/install_vllm.sh`` builds one per version). For each of a
``LlamaForSequenceClassification`` (POLAR-like: scored with the POLAR recipe), a
``Qwen2ForSequenceClassification``, an ``InternLM2ForRewardModel`` and a ``Qwen2ForRewardModel``
(all built by ``rmclient.testing``), the version's table row says either how it is served raw or
why it cannot be. Then:

- served: ``rmclient.launchers.start("vllm", ...)`` launches it with the row's flags, and
  ``RewardModelClient(server_type="vllm")`` scores samples by token ids (``client(samples)``) and by
  xtuner's text form (``client.vllm_request_reward(client.encode(samples))``). Both must equal the
  in-process forward pass of the same ids within 1e-4 ("raw"), and the ids must equal the in-process
  client's at the same length limit (one sample is longer than the server's 512 tokens);
- refused: the launcher must refuse; the server is then started the way a user would without us
  (``--task classify`` / ``--runner pooling``) and the client must refuse it at first contact
  with a ConfigurationError, never return its numbers ("refused"; "engine fails" when that server
  cannot even start).

Anything else is a failure: the exit status is 1 and the JSON says why. Servers bind 127.0.0.1,
run one at a time and are stopped with their whole process group.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
TOL = 1e-4
MAX_MODEL_LEN = 512
BASE_ENV = {"HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1"}

POLAR_SAMPLES = [
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Beijing."},
    {"prompt": "What is the capital of China?", "reference": "Beijing.", "output": "Shanghai."},
    {"prompt": "The quick brown fox", "reference": "jumps over the lazy dog.", "output": "1 2 3 4 5"},
    {"prompt": "北京是中国的首都。", "reference": "", "output": "Ünïcödé text, émojis 🙂"},
    {"prompt": "def score(sample):" * 40, "reference": "return reward " * 30, "output": "x^2 + y^2 = z^2 " * 30},
]
CHAT_SAMPLES = [
    {"prompt": "What is 2 + 2?", "output": "4"},
    {"prompt": "What is 2 + 2?", "output": "5"},
    {"messages": [{"role": "user", "content": "Hello, how are you?"},
                  {"role": "assistant", "content": "I am fine, thank you."},
                  {"role": "user", "content": "北京是中国的首都吗?"},
                  {"role": "assistant", "content": "是的。Beijing."}]},
    {"prompt": "Please reason step by step. " * 40, "output": "The quick brown fox jumps over the lazy dog. " * 20},
]

#: name -> (builder, samples, --trust-remote-code)
MODELS = {
    "llama-seq-cls": ("build_polar_model", POLAR_SAMPLES, False),
    "qwen2-seq-cls": ("build_qwen2_seq_cls", CHAT_SAMPLES, False),
    "internlm2-rm": ("build_internlm2_reward_model", CHAT_SAMPLES, True),
    "qwen2-rm": ("build_qwen2_reward_model", CHAT_SAMPLES, False),
}


def build_models(root: Path) -> Dict[str, str]:
    """The four tiny models under ``root`` (built once; the POLAR-like one's folder says "polar")."""
    from rmclient import testing
    from rmclient.testing import remote_code

    out = {}
    for name, (builder, _, _) in MODELS.items():
        folder = root / (f"tiny-polar-{name}" if name == "llama-seq-cls" else f"tiny-{name}")
        if not (folder / "config.json").is_file():
            (getattr(testing, builder, None) or getattr(remote_code, builder))(folder)
        out[name] = str(folder)
    return out


def reference(path: str, samples: List[dict]) -> "tuple[List[List[int]], List[float]]":
    """The ids the in-process client gives at the server's length limit, and the in-process rewards of them."""
    from rmclient import RewardModelClient
    from rmclient.modelinfo import load_config
    from rmclient.testing.remote_code import reference_rewards

    local = RewardModelClient(path, max_length=MAX_MODEL_LEN)
    ids = local.encode_ids(samples)
    arch = load_config(path)["architectures"][0]
    rewards = local.score_ids(ids) if arch.endswith("ForSequenceClassification") else reference_rewards(path, ids)
    return ids, rewards


def _env(venv: Path) -> Dict[str, str]:
    env = dict(BASE_ENV)
    extra = venv / "rmclient-env"
    if extra.is_file():
        for line in extra.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                key, value = line.split("=", 1)
                env[key] = value
    return env


def _diff(a: List[float], b: List[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b)) if len(a) == len(b) else float("inf")


def check_model(name: str, path: str, venv: Path, version: str, logs: Path) -> Dict[str, Any]:
    from rmclient import RewardModelClient
    from rmclient.adapters.vllm import TABLE
    from rmclient.adapters.versions import select_row
    from rmclient.errors import ConfigurationError, LaunchError, RMClientError
    from rmclient.launchers import start
    from rmclient.modelinfo import load_config

    _, samples, remote_code = MODELS[name]
    arch = load_config(path)["architectures"][0]
    row = select_row(TABLE, version, None, "vLLM", logging.getLogger("matrix"))
    serving = row.serving(arch)
    result: Dict[str, Any] = {"model": name, "architecture": arch, "row": row.label,
                              "expected": "refused" if serving.refused else "raw"}
    python = str(venv / "bin" / "python")
    common = dict(dtype="float32", max_model_len=MAX_MODEL_LEN, extra_args=["--enforce-eager"],
                  served_model_name=name, trust_remote_code=remote_code)
    ids, expected = reference(path, samples)
    server = None
    t0 = time.monotonic()
    try:
        try:
            server = start("vllm", path, python=python, env=_env(venv), ready_timeout=400, stop_grace=20,
                           log_path=logs / f"{name}.log", **common)
        except ConfigurationError as exc:
            result["launcher"] = f"refused: {exc}"
            if not serving.refused:
                return {**result, "status": "FAIL", "why": "the launcher refused a row that should serve"}
            return {**result, **_check_client_refuses(path, python, venv, version, name, samples, common, logs)}
        except LaunchError as exc:
            return {**result, "status": "FAIL", "why": f"launch failed: {str(exc)[-1500:]}"}
        result["start_s"] = round(time.monotonic() - t0, 1)
        result["command"] = server.command[3:]
        if serving.refused:
            return {**result, "status": "FAIL", "why": "the launcher started a row that should be refused"}
        client = RewardModelClient(path, server_type="vllm", server_address=server.url, max_attempts=2, deadline=120)
        try:
            t1 = time.monotonic()
            got_ids = client.encode_ids(samples)
            rewards = client(samples)
            text = client.vllm_request_reward(client.encode(samples))
            result["score_s"] = round(time.monotonic() - t1, 2)
        except RMClientError as exc:
            return {**result, "status": "FAIL", "why": f"{type(exc).__name__}: {str(exc)[:1500]}"}
        finally:
            client.close()
        result.update(ids_equal=got_ids == ids, longest=max(len(x) for x in got_ids),
                      max_diff_ids=_diff(rewards, expected), max_diff_text=_diff(text, expected),
                      rewards=rewards, expected_rewards=expected)
        ok = got_ids == ids and result["max_diff_ids"] < TOL and result["max_diff_text"] < TOL
        return {**result, "status": "raw" if ok else "FAIL", **({} if ok else {"why": "rewards or ids differ"})}
    finally:
        if server is not None:
            server.stop()
            left = server.group_members()
            if left:
                result["left_behind"] = left


def _check_client_refuses(path, python, venv, version, name, samples, common, logs) -> Dict[str, Any]:
    """The launcher refused: a server started without it must be refused by the client, not scored."""
    from rmclient import RewardModelClient
    from rmclient.adapters.versions import parse_version
    from rmclient.errors import ConfigurationError, LaunchError, RMClientError
    from rmclient.launchers import free_port, spawn

    naive = ["--task", "classify"] if parse_version(version) < parse_version("0.10.1") else ["--runner", "pooling"]
    port = free_port()
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", path, *naive, "--host", "127.0.0.1",
           "--port", str(port), "--dtype", "float32", "--max-model-len", str(MAX_MODEL_LEN), "--enforce-eager",
           "--served-model-name", name]
    try:
        server = spawn(cmd, port=port, engine="vllm", ready_routes=("/health", "/v1/models"), env=_env(venv),
                       log_path=logs / f"{name}-naive.log", ready_timeout=400, stop_grace=20)
    except LaunchError as exc:
        return {"status": "refused", "naive": naive, "client": f"engine fails with {' '.join(naive)}: "
                + _first_error(str(exc))}
    try:
        client = RewardModelClient(path, server_type="vllm", server_address=server.url, max_attempts=1, deadline=60)
        try:
            got = client(samples)
        except ConfigurationError as exc:
            return {"status": "refused", "naive": naive, "client": f"refused: {str(exc)[:400]}"}
        except RMClientError as exc:
            return {"status": "FAIL", "naive": naive, "why": f"client raised {type(exc).__name__}, not "
                    f"ConfigurationError: {str(exc)[:600]}"}
        finally:
            client.close()
        return {"status": "FAIL", "naive": naive, "why": f"the client returned {got} from a row without raw rewards"}
    finally:
        server.stop()


def _first_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if "Error" in ln or "error" in ln]
    return (lines[-1] if lines else text.strip().splitlines()[-1])[:300]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("venv", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--models", type=Path, default=REPO / ".venv-matrix" / "models")
    ap.add_argument("--only", nargs="*", choices=sorted(MODELS), help="check only these models")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from rmclient.launchers._common import installed_version

    version = installed_version(("vllm", "vllm-cpu"), python=str(args.venv / "bin" / "python"))
    if not version:
        print(f"no vLLM in {args.venv}", file=sys.stderr)
        return 2
    version = version.split("+")[0]
    logs = (args.out.parent if args.out else args.venv) / f"logs-{version}"
    logs.mkdir(parents=True, exist_ok=True)
    paths = build_models(args.models)
    t0 = time.monotonic()
    results = []
    for name in args.only or MODELS:
        res = check_model(name, paths[name], args.venv, version, logs)
        print(f"vLLM {version:9} {name:14} {res['status']:8} "
              + (f"max|diff| {max(res['max_diff_ids'], res['max_diff_text']):.1e}" if res["status"] == "raw"
                 else res.get("why") or res.get("client") or res.get("launcher", "")), flush=True)
        results.append(res)
    report = {"version": version, "seconds": round(time.monotonic() - t0, 1), "results": results}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))
    return 0 if all(r["status"] in ("raw", "refused") for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
