"""The judge's chat-completions bodies against sglang's and lmdeploy's own ``ChatCompletionRequest``,
release by release (the sources ``.ci/engine-schemas.sh`` keeps under ``.venv-schemas/engines``).

Both engines drop a field they do not know without a word, which for a judge means an
unconstrained verdict: so every field we send must be one of the release's, and each value must
validate against its annotation.

- lmdeploy: its ``ChatCompletionRequest`` itself (``lmdeploy`` and ``lmdeploy.serve`` stubbed: their
  ``__init__`` imports torch) validates every body and keeps every field as sent (``response_format``,
  our ``regex_schema``, included).
- sglang: ``protocol.py`` imports numpy, xgrammar and more in 0.5.x, so the request class (and the
  field-only bases it has in the same file) is read with ``ast``: every key one of its fields, each
  value but ``messages`` validated (pydantic, strict) against the field's annotation.

vLLM is covered by real servers (tests/test_judge_vllm.py): an unconstrained verdict there would not
come out valid from random weights, and the choices' logprobs show the mask.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from rmclient.adapters import engine_version
from rmclient.adapters.openai import ChatQuery, OpenaiAdapter
from rmclient.judge_recipes import JUDGE_RECIPES

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PYTHON = REPO / ".venv-schemas" / "bin" / "python"
ENGINES_DIR = REPO / ".venv-schemas" / "engines"

CHECKER = r'''
import ast, importlib.util, json, sys, types, typing
from pathlib import Path
import pydantic

engine, root = sys.argv[1], Path(sys.argv[2])
sys.path.insert(0, str(root))
bodies = json.load(sys.stdin)
out = []
if engine == "lmdeploy":
    for name in ("lmdeploy", "lmdeploy.serve"):  # their __init__ imports torch: an empty module, the real path
        spec = importlib.util.find_spec(name)
        mod = types.ModuleType(name)
        mod.__path__, mod.__spec__ = list(spec.submodule_search_locations), spec
        sys.modules[name] = mod
    from lmdeploy.serve.openai.protocol import ChatCompletionRequest as R
    for body in bodies:
        errors = []
        try:
            req = R.model_validate_json(json.dumps(body))
            kept = req.model_dump(mode="json", exclude_unset=True, by_alias=True)
            for key, value in body.items():  # as sent: nothing coerced ("42" -> 42) or lost
                got = kept.get(key)
                if isinstance(got, dict):
                    got = {k: v for k, v in got.items() if v is not None}
                if got != value:
                    errors.append("%s changed by validation: %r" % (key, got))
        except pydantic.ValidationError as e:
            errors.append(str(e))
        out.append({"unknown": sorted(set(body) - set(R.model_fields)), "errors": errors})
else:
    files = [root / "sglang/srt/entrypoints/openai/protocol.py", root / "sglang/srt/openai_api/protocol.py"]
    tree = ast.parse(next(p for p in files if p.exists()).read_text())
    classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
    def fields(name):
        cls, found = classes[name], {}
        for base in cls.bases:
            if isinstance(base, ast.Name) and base.id in classes:
                found.update(fields(base.id))
        found.update({n.target.id: ast.unparse(n.annotation) for n in cls.body
                      if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)})
        return found
    known = fields("ChatCompletionRequest")
    ns = {k: getattr(typing, k) for k in ("Any", "Dict", "List", "Optional", "Union", "Literal")}
    for body in bodies:
        errors = []
        for key, value in body.items():
            if key in known and key != "messages":
                try:
                    pydantic.TypeAdapter(eval(known[key], ns)).validate_python(value, strict=True)
                except Exception as e:  # NameError: an annotation naming the module's own classes
                    errors.append("%s: %s" % (key, str(e)[:300]))
        out.append({"unknown": sorted(set(body) - set(known)), "errors": errors})
print(json.dumps(out))
'''


def _releases(engine: str):
    return sorted((p.name.split("-", 1)[1] for p in ENGINES_DIR.glob(f"{engine}-*")), key=engine_version)


def _bodies(engine: str, version: str):
    adapter = OpenaiAdapter(version, model="judge", server_engine=engine)
    out = []
    for name in ("pointwise", "pairwise", "pointwise_probs", "pairwise_probs", "verify_probs"):
        r = JUDGE_RECIPES[name]
        q = ChatQuery(tuple(r.messages({"prompt": "q", "output": "o", "a": "x", "b": "y", "reference": "r"})),
                      r.constraint(), r.tokens, r.read, temperature=0.0, seed=42,
                      top_logprobs=20 if r.verdict == "probs" else None)
        out.append(adapter.build_request([q]).json)
    return out


CASES = [(e, v) for e in ("lmdeploy", "sglang") for v in _releases(e)]


@pytest.mark.skipif(not SCHEMA_PYTHON.exists() or not CASES, reason="no .venv-schemas (.ci/engine-schemas.sh)")
@pytest.mark.parametrize("engine,version", CASES, ids=[f"{e}-{v}" for e, v in CASES])
def test_judge_bodies_validate_against_each_release(engine, version):
    bodies = _bodies(engine, version)
    assert any("regex" in json.dumps(b) for b in bodies)  # the JSON verdicts are forced on both engines
    run = subprocess.run([str(SCHEMA_PYTHON), "-I", "-c", CHECKER, engine, str(ENGINES_DIR / f"{engine}-{version}")],
                         input=json.dumps(bodies), capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads(run.stdout)
    assert [r["unknown"] for r in report] == [[]] * len(bodies), "a field the release would drop silently"
    assert [r["errors"] for r in report] == [[]] * len(bodies)


def test_the_checker_notices_a_field_an_engine_would_drop():
    if not SCHEMA_PYTHON.exists() or not CASES:
        pytest.skip("no .venv-schemas")
    for engine in ("lmdeploy", "sglang"):
        version = _releases(engine)[-1]
        bad = {**_bodies(engine, version)[0], "guided_regex": "x", "seed": "42"}
        run = subprocess.run([str(SCHEMA_PYTHON), "-I", "-c", CHECKER, engine, str(ENGINES_DIR / f"{engine}-{version}")],
                             input=json.dumps([bad]), capture_output=True, text=True, timeout=120)
        (report,) = json.loads(run.stdout)
        assert report["unknown"] == ["guided_regex"] and report["errors"], report
