"""The adapters' request bodies, validated against the engines' own request schemas.

The schemas live in a throwaway venv (``.venv-schemas``, built by ``.ci/engine-schemas.sh``:
pydantic plus ``pip install --no-deps`` of sglang and lmdeploy; no torch). The check runs
there in a subprocess; the bodies go in as JSON on stdin, a JSON report comes back.

What is checked, honestly:

- lmdeploy: ``lmdeploy.serve.openai.protocol.PoolingRequest`` itself (imported with the
  ``lmdeploy`` and ``lmdeploy.serve`` packages stubbed, as ENGINES.md 5 describes) validates
  every body, unchanged and with no field it does not know; its ``PoolingResponse`` builds a
  response body that the adapter parses; the ``/pooling`` route takes ``PoolingRequest``.
- sglang: the native ``/classify`` body type, ``managers/io_struct.EmbeddingReqInput``, needs
  torch to import, so it is NOT imported. Its source is parsed with ``ast``: every key we
  send must be one of its dataclass fields, and each value is validated (pydantic, strict)
  against that field's annotation as written there. The ``/classify`` route in
  ``entrypoints/http_server.py`` must take ``EmbeddingReqInput``. The "exactly one of text /
  input_ids" rule is sglang runtime code, not schema: it is asserted on our side.
- vLLM: not here (its request models need torch); the real vLLM env tests cover it.

Without the venv the tests skip (locally) or fail (``CI=true``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from rmclient.adapters import LmdeployAdapter, SglangAdapter
from rmclient.adapters import lmdeploy as lmdeploy_mod
from rmclient.adapters import sglang as sglang_mod

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PYTHON = REPO / ".venv-schemas" / "bin" / "python"

IDS = [[1, 333, 92543, 92527], [1, 444, 92527]]
TEXTS = ["Beijing.<|reward|>Beijing.[UNUSED_TOKEN_130]", "Beijing.<|reward|>Shanghai.[UNUSED_TOKEN_130]"]
INPUTS = {"ids": IDS, "one-id-list": [[7, 92527]], "text": TEXTS, "one-text": ["x"]}

# Runs inside .venv-schemas (python -I): no rmclient there, only the engines' packages.
CHECKER = r'''
import ast, importlib.util, json, sys, types, typing
from importlib.metadata import version
from pathlib import Path

import pydantic

def pkg_dir(name):
    return Path(importlib.util.find_spec(name).submodule_search_locations[0])

def stub(name):
    """Bypass a package __init__ (it imports torch): an empty module with the real __path__."""
    spec = importlib.util.find_spec(name)
    mod = types.ModuleType(name)
    mod.__path__ = list(spec.submodule_search_locations)
    mod.__spec__ = spec  # keeps find_spec(name) working; the real __init__ never runs
    sys.modules[name] = mod

def routes(files, path):
    """(file, function, annotation of its first parameter) of every handler of ``path``."""
    found = []
    for f in files:
        for node in ast.walk(ast.parse(f.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and dec.args and isinstance(dec.args[0], ast.Constant) \
                        and dec.args[0].value == path:
                    ann = node.args.args[0].annotation if node.args.args else None
                    found.append([f.name, node.name, ast.unparse(ann) if ann else None])
    return found

cases = json.load(sys.stdin)
report = {"versions": {d: version(d) for d in ("sglang", "lmdeploy", "pydantic")}}

# ---- lmdeploy: the real pydantic model.
stub("lmdeploy"); stub("lmdeploy.serve")
from lmdeploy.serve.openai.protocol import PoolingRequest, PoolingResponse, UsageInfo
known = set(PoolingRequest.model_fields)
results = []
for case in cases["lmdeploy"]:
    body, errors = case["body"], []
    try:
        req = PoolingRequest.model_validate_json(json.dumps(body))
        if req.model_dump(exclude_unset=True) != body:
            errors.append("changed by validation: %r" % req.model_dump(exclude_unset=True))
    except pydantic.ValidationError as e:
        errors.append(str(e))
    results.append({"case": case["case"], "unknown_fields": sorted(set(body) - known), "errors": errors})
report["lmdeploy"] = results
report["lmdeploy_fields"] = sorted(known)
report["lmdeploy_response"] = PoolingResponse(
    model="POLAR-7B",
    data=[{"index": 1, "object": "pooling", "data": -11.030370712280273},
          {"index": 0, "object": "pooling", "data": -0.5702977776527405}],
    usage=UsageInfo(prompt_tokens=9, total_tokens=9, completion_tokens=0),
).model_dump(mode="json")
report["lmdeploy_routes"] = routes(sorted(pkg_dir("lmdeploy").joinpath("serve").rglob("*.py")), "/pooling")

# ---- sglang: EmbeddingReqInput read from its source (importing it needs torch).
srt = pkg_dir("sglang") / "srt"
tree = ast.parse((srt / "managers" / "io_struct.py").read_text())
cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "EmbeddingReqInput")
fields = {n.target.id: ast.unparse(n.annotation) for n in cls.body
          if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
namespace = {k: getattr(typing, k) for k in ("Any", "Dict", "List", "Optional", "Union", "Literal")}
results = []
for case in cases["sglang"]:
    body, errors = case["body"], []
    for key, value in body.items():
        if key not in fields:
            continue
        try:
            pydantic.TypeAdapter(eval(fields[key], namespace)).validate_python(value, strict=True)
        except pydantic.ValidationError as e:
            errors.append("%s: %s" % (key, e))
    results.append({"case": case["case"], "unknown_fields": sorted(set(body) - set(fields)), "errors": errors})
report["sglang"] = results
report["sglang_fields"] = {k: fields[k] for k in ("text", "input_ids")}
report["sglang_is_dataclass"] = any(ast.unparse(d) == "dataclass" for d in cls.decorator_list)
report["sglang_routes"] = routes([srt / "entrypoints" / "http_server.py"], "/classify")
print(json.dumps(report))
'''


def _cases(adapter_cls, table, **kw):
    """The body the adapter builds for each table row and an unknown version, per input kind."""
    cases = []
    for version in [row.min_version for row in table] + [None]:
        for name, inputs in INPUTS.items():
            for model in (None, "internlm/POLAR-7B"):
                body = adapter_cls(version, model=model, **kw).build_request(inputs).json
                cases.append({"case": f"{version or 'unknown'} {name} model={model}", "body": body})
    return cases


@pytest.fixture(scope="module")
def schema_python() -> Path:
    """The venv's interpreter; skip without it, fail without it on CI."""
    if not SCHEMA_PYTHON.exists():
        why = f"{SCHEMA_PYTHON.parent.parent} is missing: run .ci/engine-schemas.sh to build it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    return SCHEMA_PYTHON


def _check(python: Path, cases: dict) -> dict:
    proc = subprocess.run(
        [str(python), "-I", "-c", CHECKER],
        input=json.dumps(cases), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"schema checker failed:\n{proc.stderr}"
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def report(schema_python):
    cases = {
        "lmdeploy": _cases(LmdeployAdapter, lmdeploy_mod.TABLE),
        "sglang": _cases(SglangAdapter, sglang_mod.TABLE),
    }
    return {**_check(schema_python, cases), "cases": cases}


def test_lmdeploy_bodies_validate_against_pooling_request(report):
    assert report["lmdeploy_fields"] == ["dimensions", "encoding_format", "input", "model", "user"]
    assert len(report["lmdeploy"]) == len(report["cases"]["lmdeploy"]) == 3 * 4 * 2
    for result in report["lmdeploy"]:
        assert result == {"case": result["case"], "unknown_fields": [], "errors": []}


def test_lmdeploy_pooling_route_takes_pooling_request(report):
    assert [r[2] for r in report["lmdeploy_routes"]] == ["PoolingRequest"]


def test_lmdeploy_response_model_is_parsed(report):
    body = report["lmdeploy_response"]
    assert body["object"] == "list" and body["model"] == "POLAR-7B"
    assert LmdeployAdapter(report["versions"]["lmdeploy"]).parse_response(body, 2) == [
        -0.5702977776527405, -11.030370712280273]


def test_sglang_bodies_match_embedding_req_input(report):
    assert report["sglang_is_dataclass"]
    assert report["sglang_fields"] == {
        "text": "Optional[Union[List[List[str]], List[str], str]]",
        "input_ids": "Optional[Union[List[List[int]], List[int]]]",
    }
    assert len(report["sglang"]) == len(report["cases"]["sglang"]) == 3 * 4 * 2
    for result in report["sglang"]:
        assert result == {"case": result["case"], "unknown_fields": [], "errors": []}
    # sglang's runtime rule (not in the schema): exactly one of text / input_ids.
    for case in report["cases"]["sglang"]:
        assert len({"text", "input_ids"} & set(case["body"])) == 1


def test_sglang_native_classify_route_takes_embedding_req_input(report):
    assert [r[2] for r in report["sglang_routes"]] == ["EmbeddingReqInput"]


def test_checker_notices_a_bad_body(schema_python):
    """The checker is not vacuous: a wrong field name and a wrong type are reported."""
    cases = {"lmdeploy": [{"case": "bad", "body": {"input": [[1, "x"]], "inputs": 1}}],
             "sglang": [{"case": "bad", "body": {"input_ids": [["1"]], "ids": [1]}}]}
    out = _check(schema_python, cases)
    assert out["lmdeploy"][0]["unknown_fields"] == ["inputs"] and out["lmdeploy"][0]["errors"]
    assert out["sglang"][0]["unknown_fields"] == ["ids"] and out["sglang"][0]["errors"]
