"""One vLLM version, four tiny reward models, through rmclient's own launcher and client.

    python tests/matrix/vllm_check.py VENV [--out RESULT.json] [--models DIR] [--kinds [KIND ...]]

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

``--kinds`` adds the outputs that are more than one float per sample (the JSON's ``kinds`` section;
``--only`` with no name skips the four models above): ``prm`` (a ``Qwen2ForProcessRewardModel``,
``client.score_steps``, against softmax[1] of the forward pass at each step token), ``multilabel`` (a
3-label ``LlamaForSequenceClassification``, ``client.score_vector``, against transformers' logits) and
``dense`` (the ``Qwen2ForRewardModel``, ``client.score_tokens``, against the head at each output
token). Each is "raw" (within 1e-4), "refused" (a ConfigurationError of the launcher or the client,
whose message is kept) or "FAIL"; ``expected`` is what the version's table row says.

Anything else is a failure: the exit status is 1 and the JSON says why. Servers bind 127.0.0.1,
run one at a time and are stopped with their whole process group.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
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
STEP_SAMPLES = [
    {"prompt": "What is 2+2?", "steps": ["2+2 is 4.", "So the answer is 4."]},
    {"prompt": "Capital of China?", "output": "Think.\n\nBeijing is the capital.\n\nDone.", "step_separator": "\n\n"},
    {"prompt": "北京?", "output": "Step one ✓ | step two", "step_separator": " | "},
]
#: --kinds: kind -> (builder, model folder, samples, --trust-remote-code); dense reuses qwen2-rm's model
KINDS = {
    "prm": ("build_qwen2_prm", "tiny-qwen2-prm", STEP_SAMPLES, True),
    "multilabel": ("build_multilabel_rm", "tiny-multilabel-rm", CHAT_SAMPLES[:3], False),
    "dense": ("build_qwen2_reward_model", "tiny-qwen2-rm", CHAT_SAMPLES[:3], False),
}


def build_models(root: Path, kinds: bool = False) -> Dict[str, str]:
    """The four tiny models under ``root`` (built once; the POLAR-like one's folder says "polar"),
    and the kinds' ones (keyed by kind) with ``kinds``."""
    from rmclient import testing
    from rmclient.testing import remote_code

    todo = [(name, builder, f"tiny-polar-{name}" if name == "llama-seq-cls" else f"tiny-{name}")
            for name, (builder, _, _) in MODELS.items()]
    todo += [(kind, builder, folder) for kind, (builder, folder, _, _) in KINDS.items()] if kinds else []
    out = {}
    for name, builder, folder in todo:
        folder = root / folder
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


# -- --kinds: process, multi-label and dense rewards ------------------------------------------------

def _kind_reference(kind: str, path: str, samples: List[dict]) -> Dict[str, Any]:
    """The in-process side: the ids (and, for dense, each output's first token) and the expected values."""
    from rmclient import RewardModelClient

    local = RewardModelClient(path, max_length=MAX_MODEL_LEN, trust_remote_code=KINDS[kind][3])
    if kind == "prm":
        from rmclient.testing.kinds import reference_step_rewards

        recipe = local.encoder.step_recipe(MAX_MODEL_LEN)
        ids = [e.ids for e in recipe.encode(samples)]
        return {"ids": ids, "expected": reference_step_rewards(path, ids, recipe.separator_id)}
    ids = local.encode_ids(samples)
    if kind == "multilabel":
        import torch
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            return {"ids": ids, "expected": [model(torch.tensor([x])).logits[0].tolist() for x in ids]}
    from rmclient.testing.remote_code import reference_token_rewards

    starts = []
    for sample, x in zip(samples, ids):  # the output's first token: the ids of the text before it (+ a BOS)
        text, output = local.encode(sample), (sample.get("output") or sample["messages"][-1]["content"])
        whole = local.tokenizer(text, add_special_tokens=False)["input_ids"]
        before = local.tokenizer(text[: text.rfind(output)], add_special_tokens=False)["input_ids"]
        starts.append(len(before) + len(x) - len(whole))
    return {"ids": ids, "starts": starts, "outputs": [s.get("output") or s["messages"][-1]["content"] for s in samples],
            "expected": reference_token_rewards(path, ids)}


def _kind_compare(kind: str, client: Any, samples: List[dict], ref: Dict[str, Any]) -> Dict[str, Any]:
    """Score through the server and compare; ``why`` is set when the answer is not the reference."""
    ids, expected = ref["ids"], ref["expected"]
    if kind == "prm":
        got = client.score_steps(samples)
        values = [r.rewards for r in got]
        if [r.num_tokens for r in got] != [len(x) for x in ids] or any(r.cut for r in got):
            return {"values": values, "why": "step encodings differ from the in-process one"}
        return {"values": values, "max_diff": max(_diff(v, e) for v, e in zip(values, expected))}
    if kind == "multilabel":
        got = client.score_vector(samples)
        if client.encode_ids(samples) != ids:
            return {"values": got, "why": "ids differ from the in-process client's"}
        return {"values": got, "max_diff": max(_diff(v, e) for v, e in zip(got, expected))}
    got = client.score_tokens(samples)
    values = [d.values for d in got]
    # the spans cover the output in order (the byte-level tokens of one character share its span)
    if any("".join(o[a:b] for a, b in dict.fromkeys(d.spans)) != o for d, o in zip(got, ref["outputs"])):
        return {"values": values, "why": "the spans do not cover the output"}
    want = [e[s:s + len(v)] for e, s, v in zip(expected, ref["starts"], values)]
    return {"values": values, "max_diff": max(_diff(v, w) for v, w in zip(values, want))}


def check_kind(kind: str, path: str, venv: Path, version: str, logs: Path) -> Dict[str, Any]:
    """Launch ``kind``'s model through the launcher, score it through the client: raw, refused or FAIL."""
    from rmclient import RewardModelClient
    from rmclient.adapters.vllm import TABLE
    from rmclient.adapters.versions import select_row
    from rmclient.errors import ConfigurationError, LaunchError
    from rmclient.launchers import start
    from rmclient.modelinfo import load_config

    _, _, samples, remote_code = KINDS[kind]
    arch = load_config(path)["architectures"][0]
    row = select_row(TABLE, version, None, "vLLM", logging.getLogger("matrix"))
    serving = row.serving(arch)
    served = serving.tokens is not None if kind != "multilabel" else bool(serving.routes)
    result: Dict[str, Any] = {"kind": kind, "architecture": arch, "row": row.label,
                              "expected": "raw" if not serving.refused and served else "refused"}
    ref = _kind_reference(kind, path, samples)
    server = client = None
    t0 = time.monotonic()
    try:
        try:
            server = start("vllm", path, python=str(venv / "bin" / "python"), env=_env(venv), ready_timeout=400,
                           stop_grace=20, log_path=logs / f"kind-{kind}.log", dtype="float32",
                           max_model_len=MAX_MODEL_LEN, extra_args=["--enforce-eager"], served_model_name=kind,
                           trust_remote_code=remote_code)
        except ConfigurationError as exc:
            return {**result, "status": "refused", "by": "launcher", "message": str(exc)}
        except LaunchError as exc:
            return {**result, "status": "FAIL", "why": f"launch failed: {_root_cause(logs / f'kind-{kind}.log', exc)}",
                    "launch_error": str(exc)[-1500:]}
        result.update(start_s=round(time.monotonic() - t0, 1), command=server.command[3:])
        client = RewardModelClient(path, server_type="vllm", server_address=server.url, max_attempts=2, deadline=120,
                                   trust_remote_code=remote_code)
        t1 = time.monotonic()
        try:
            got = _kind_compare(kind, client, samples, ref)
        except ConfigurationError as exc:
            return {**result, "status": "refused", "by": "client", "message": str(exc)[:1500]}
        except Exception as exc:  # an RMClientError, or an answer of the wrong shape: the reason is the result
            return {**result, "status": "FAIL", "why": f"{type(exc).__name__}: {str(exc)[:1500]}"}
        result.update(score_s=round(time.monotonic() - t1, 2), values=got["values"], expected_values=ref["expected"])
        if "why" in got or not got["max_diff"] < TOL:
            return {**result, "status": "FAIL", "why": got.get("why") or f"max |diff| {got['max_diff']:.3g}",
                    **({"max_diff": got["max_diff"]} if "max_diff" in got else {})}
        return {**result, "status": "raw", "max_diff": got["max_diff"]}
    finally:
        if client is not None:
            client.close()
        if server is not None:
            server.stop()
            left = server.group_members()
            if left:
                result["left_behind"] = left


def _root_cause(log: Path, exc: Exception) -> str:
    """The engine's first exception in its log and where it was raised (``AssertionError at
    vllm/.../pooler.py:55: assert ...``), else the launch error's last error line."""
    lines = log.read_text(errors="replace").splitlines() if log.is_file() else []
    for k, line in enumerate(lines):
        if re.match(r"[A-Za-z_.]*(Error|Exception)\b", line):
            frames = [j for j in range(k) if lines[j].strip().startswith('File "')]
            if not frames:
                return line.strip()[:300]
            where = re.search(r'File "(?:.*/site-packages/)?([^"]+)", line (\d+)', lines[frames[-1]])
            code = lines[frames[-1] + 1].strip() if frames[-1] + 1 < k else ""
            return f"{line.strip()[:200]} at {where.group(1)}:{where.group(2)}: {code}"[:400] if where else line.strip()
    return _first_error(str(exc))


def _first_error(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if "Error" in ln or "error" in ln]
    return (lines[-1] if lines else text.strip().splitlines()[-1])[:300]


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("venv", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--models", type=Path, default=REPO / ".venv-matrix" / "models")
    ap.add_argument("--only", nargs="*", choices=sorted(MODELS), help="check only these models (none: no model)")
    ap.add_argument("--kinds", nargs="*", choices=sorted(KINDS),
                    help="also check these kinds of output (all three when none is named)")
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
    paths = build_models(args.models, kinds=args.kinds is not None)
    t0 = time.monotonic()
    results = []
    for name in MODELS if args.only is None else args.only:
        res = check_model(name, paths[name], args.venv, version, logs)
        print(f"vLLM {version:9} {name:14} {res['status']:8} "
              + (f"max|diff| {max(res['max_diff_ids'], res['max_diff_text']):.1e}" if res["status"] == "raw"
                 else res.get("why") or res.get("client") or res.get("launcher", "")), flush=True)
        results.append(res)
    kinds = []
    for kind in (args.kinds or sorted(KINDS)) if args.kinds is not None else ():
        res = check_kind(kind, paths[kind], args.venv, version, logs)
        note = f"max|diff| {res['max_diff']:.1e}" if res["status"] == "raw" else res.get("why") or res["message"][:300]
        print(f"vLLM {version:9} {kind:14} {res['status']:8} {note}"
              + ("" if res["status"] == res["expected"] else f" (the table says {res['expected']})"), flush=True)
        kinds.append(res)
    report = {"version": version, "seconds": round(time.monotonic() - t0, 1), "results": results,
              **({"kinds": kinds} if args.kinds is not None else {})}
    if args.out:
        args.out.write_text(json.dumps(report, indent=1, default=str))
    ok = all(r["status"] in ("raw", "refused") for r in results) and all(r["status"] == r["expected"] for r in kinds)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
