"""sglang and lmdeploy, release by release, without a GPU: our requests against their request types,
our launch flags against their CLIs, our version tables against their source.

``.ci/engine-schemas.sh`` puts the Python files of several releases of each engine (one per table
row and the releases at its boundaries) under ``.venv-schemas/engines/<engine>-<version>/``, and
pydantic + shortuuid in ``.venv-schemas``. A checker runs there, once per release, in a subprocess;
the bodies our adapters build for that release go in as JSON on stdin, a JSON report comes back.

What is checked, per release, honestly:

- lmdeploy: ``lmdeploy.serve.openai.protocol.PoolingRequest`` itself (imported with ``lmdeploy`` and
  ``lmdeploy.serve`` stubbed: their ``__init__`` imports torch) validates every body, unchanged and
  with no field it does not know; its ``PoolingResponse`` builds a body the adapter parses; the
  ``/pooling`` route takes ``PoolingRequest``. From the source: the ``api_server`` flags (``ast``:
  ``ArgumentHelper`` methods called in ``add_parser_api_server``, and literal ``add_argument``) hold
  every flag the launcher emits; ``--trust-remote-code``, whether ``--api-keys`` guards ``/pooling``
  (a middleware, or a per-route dependency), the concurrent-``/pooling`` session bug and the reward
  architectures agree with the table row.
- sglang: ``managers/io_struct.EmbeddingReqInput`` needs torch, so it is read with ``ast``: every key we
  send is one of its fields, each value validated (pydantic, strict) against the field's annotation.
  The ``/classify`` route takes ``EmbeddingReqInput``; the server args (three layouts: argparse to
  0.5.13, annotated dataclass fields in 0.5.14 - 0.5.19, namespaces in ``arg_groups/fields`` from 0.5.20)
  define every flag the launcher emits; the length rule our adapter follows is in the source
  (``len(...) >= max_req_input_len`` and ``max_req_len - 5``), ``/get_server_info`` (and ``/server_info``
  from 0.5.6) report ``max_req_input_len``; ``/v1/models`` has ``max_model_len`` from 0.4.4.post3; the
  architectures of the table row are the release's ``EntryClass`` reward models.
- vLLM: not here (its request models need torch): the real servers of tests/test_vllm_*.py cover it.

Without the venv the tests skip (locally) or fail (``CI=true``).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from rmclient.adapters import LmdeployAdapter, SglangAdapter, engine_version
from rmclient.adapters import lmdeploy as lmdeploy_mod
from rmclient.adapters import sglang as sglang_mod
from rmclient.launchers import LaunchOptions
from rmclient.launchers import lmdeploy as lmdeploy_launcher
from rmclient.launchers import sglang as sglang_launcher

REPO = Path(__file__).resolve().parents[1]
SCHEMA_PYTHON = REPO / ".venv-schemas" / "bin" / "python"
ENGINES_DIR = REPO / ".venv-schemas" / "engines"

IDS = [[1, 333, 92543, 92527], [1, 444, 92527]]
TEXTS = ["Beijing.<|reward|>Beijing.[UNUSED_TOKEN_130]", "Beijing.<|reward|>Shanghai.[UNUSED_TOKEN_130]"]
INPUTS = {"ids": IDS, "one-id-list": [[7, 92527]], "text": TEXTS, "one-text": ["x"]}

# Runs inside .venv-schemas (python -I): no rmclient there, only one engine release on sys.path.
CHECKER = r'''
import ast, importlib.util, json, re, sys, types, typing
from pathlib import Path

import pydantic

engine, root = sys.argv[1], Path(sys.argv[2])
sys.path.insert(0, str(root))
cases = json.load(sys.stdin)
pkg = root / engine
report = {"version": next(root.glob(engine + "-*.dist-info")).name[len(engine) + 1 : -len(".dist-info")]}

def stub(name):
    """Bypass a package __init__ (it imports torch): an empty module with the real __path__."""
    spec = importlib.util.find_spec(name)
    mod = types.ModuleType(name)
    mod.__path__ = list(spec.submodule_search_locations)
    mod.__spec__ = spec  # keeps find_spec(name) working; the real __init__ never runs
    sys.modules[name] = mod

def tree(path):
    return ast.parse(Path(path).read_text(encoding="utf-8-sig"))

def text(*globs):
    return "\n".join(p.read_text() for g in globs for p in sorted(pkg.glob(g)))

def routes(files, path):
    """(file, function, annotation of its first parameter) of every handler of ``path``."""
    found = []
    for f in files:
        for node in ast.walk(tree(f)):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and dec.args and isinstance(dec.args[0], ast.Constant) \
                        and dec.args[0].value == path:
                    ann = node.args.args[0].annotation if node.args.args else None
                    deps = [ast.unparse(k.value) for k in dec.keywords if k.arg == "dependencies"]
                    found.append([f.name, node.name, ast.unparse(ann) if ann else None, deps])
    return found

def str_args(call):
    return [a.value for a in call.args if isinstance(a, ast.Constant) and isinstance(a.value, str)]

def add_argument_flags(node):
    return {s for c in ast.walk(node) if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute)
            and c.func.attr == "add_argument" for s in str_args(c) if s.startswith("-")}

def validate(model_fields, annotations, body, namespace=None):
    errors = []
    for key, value in body.items():
        if key not in annotations:
            continue
        try:
            pydantic.TypeAdapter(eval(annotations[key], namespace or {})).validate_python(value, strict=True)
        except pydantic.ValidationError as e:
            errors.append("%s: %s" % (key, e))
    return {"unknown_fields": sorted(set(body) - set(model_fields)), "errors": errors}

if engine == "lmdeploy":
    stub("lmdeploy"); stub("lmdeploy.serve")
    from lmdeploy.serve.openai.protocol import PoolingRequest, PoolingResponse, UsageInfo
    known = set(PoolingRequest.model_fields)
    results = []
    for case in cases:
        body, errors = case["body"], []
        try:
            req = PoolingRequest.model_validate_json(json.dumps(body))
            if req.model_dump(exclude_unset=True) != body:
                errors.append("changed by validation: %r" % req.model_dump(exclude_unset=True))
        except pydantic.ValidationError as e:
            errors.append(str(e))
        results.append({"case": case["case"], "unknown_fields": sorted(set(body) - known), "errors": errors})
    report["bodies"] = results
    report["fields"] = sorted(known)
    report["response"] = PoolingResponse(
        model="POLAR-7B",
        data=[{"index": 1, "object": "pooling", "data": -11.030370712280273},
              {"index": 0, "object": "pooling", "data": -0.5702977776527405}],
        usage=UsageInfo(prompt_tokens=9, total_tokens=9, completion_tokens=0),
    ).model_dump(mode="json")
    report["routes"] = routes(sorted(pkg.joinpath("serve").rglob("*.py")), "/pooling")
    # `lmdeploy serve api_server` flags: ArgumentHelper methods it calls, and its literal add_argument
    helpers = {}
    for node in ast.walk(tree(pkg / "cli" / "utils.py")):
        if isinstance(node, ast.ClassDef) and node.name == "ArgumentHelper":
            helpers = {fn.name: add_argument_flags(fn) for fn in node.body if isinstance(fn, ast.FunctionDef)}
    fn = next(n for n in ast.walk(tree(pkg / "cli" / "serve.py"))
              if isinstance(n, ast.FunctionDef) and n.name == "add_parser_api_server")
    flags = add_argument_flags(fn)
    for c in ast.walk(fn):
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Attribute) and isinstance(c.func.value, ast.Name) \
                and c.func.value.id == "ArgumentHelper":
            flags |= helpers.get(c.func.attr, set())
    report["flags"] = sorted(flags)
    report["has_main"] = (pkg / "__main__.py").is_file()
    # --api-keys: a middleware over every route but some prefixes (0.12.2+), or per-route dependencies
    serve_src = text("serve/**/*.py")
    m = re.search(r"skip_prefixes\s*=\s*\[([^\]]*)\]", serve_src)
    if "AuthenticationMiddleware" in serve_src and m:
        report["key_guards_pooling"] = "'/pooling'" not in m.group(1) and '"/pooling"' not in m.group(1)
    else:
        report["key_guards_pooling"] = any("check_api_key" in " ".join(r[3]) for r in report["routes"])
    # concurrent /pooling requests: session ids taken from batch positions (the bug) or a session manager
    report["pooling_session_ids_from_positions"] = "session_ids = list(range(len(input_ids)))" in serve_src
    module_map = text("pytorch/models/module_map.py")
    report["reward_architectures"] = sorted(set(re.findall(r"'(\w+RewardModel)'", module_map)))
else:
    srt = pkg / "srt"
    io = tree(srt / "managers" / "io_struct.py")
    cls = next(n for n in io.body if isinstance(n, ast.ClassDef) and n.name == "EmbeddingReqInput")
    fields = {n.target.id: ast.unparse(n.annotation) for n in cls.body
              if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
    namespace = {k: getattr(typing, k) for k in ("Any", "Dict", "List", "Optional", "Union", "Literal")}
    report["bodies"] = [{"case": c["case"], **validate(fields, fields, c["body"], namespace)} for c in cases]
    report["fields"] = {k: fields[k] for k in ("text", "input_ids")}
    report["is_dataclass"] = any(ast.unparse(d) == "dataclass" for d in cls.decorator_list)
    http = srt / "entrypoints" / "http_server.py"
    report["routes"] = routes([http], "/classify")
    report["info_routes"] = [p for p in ("/server_info", "/get_server_info", "/get_model_info") if routes([http], p)]
    # server args: argparse (to 0.5.13); annotated fields (0.5.14 - 0.5.19); namespaces (0.5.20+)
    sa = srt / "server_args.py"
    flags = add_argument_flags(tree(sa))
    def annotated(class_node):
        out = set()
        for st in class_node.body:
            if not (isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)
                    and isinstance(st.annotation, ast.Subscript)):
                continue
            elts = st.annotation.slice.elts if isinstance(st.annotation.slice, ast.Tuple) else []
            meta = next((e for e in elts[1:] if isinstance(e, (ast.Constant, ast.JoinedStr))
                         or (isinstance(e, ast.Call) and getattr(e.func, "id", None) == "Arg")), None)
            if meta is None:
                continue
            kw = {k.arg: k.value for k in meta.keywords} if isinstance(meta, ast.Call) else {}
            if isinstance(kw.get("no_cli"), ast.Constant) and kw["no_cli"].value:
                continue
            name = kw["cli_name"].value if isinstance(kw.get("cli_name"), ast.Constant) else "--" + st.target.id.replace("_", "-")
            out.add(name)
            if isinstance(kw.get("aliases"), ast.List):
                out |= {a.value for a in kw["aliases"].elts if isinstance(a, ast.Constant)}
        return out
    sa_tree = tree(sa)
    if "add_cli_args_from_dataclass" in sa.read_text():
        namespaces = None
        for n in sa_tree.body:
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_INPUT_NAMESPACES" for t in n.targets):
                namespaces = {e.id for e in n.value.elts if isinstance(e, ast.Name)}
        classes = [n for n in sa_tree.body if isinstance(n, ast.ClassDef) and n.name == "ServerArgs"]
        if namespaces:
            classes += [c for p in sorted((srt / "arg_groups" / "fields").glob("*.py")) for c in tree(p).body
                        if isinstance(c, ast.ClassDef) and c.name in namespaces]
        for c in classes:
            flags |= annotated(c)
    report["flags"] = sorted(flags)
    managers = text("srt/managers/*.py")
    report["length_rule"] = bool(re.search(r"len\(req\.origin_input_ids\)\s*>=\s*max_req_input_len", managers))
    report["minus_five"] = bool(re.search(r"max_req_input_len\s*=\s*(self\.)?max_req_len\s*-\s*5", text("srt/managers/tp_worker.py")))
    report["reports_max_req_input_len"] = bool(re.search(r"[\"']max_req_input_len[\"']\s*:", text("srt/**/*.py")))
    report["models_max_model_len"] = "max_model_len=" in text("srt/entrypoints/**/*.py", "srt/openai_api/*.py")
    entries = set()
    for p in sorted((srt / "models").glob("*.py")):
        for n in tree(p).body:
            if isinstance(n, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "EntryClass" for t in n.targets):
                value = n.value
                names = value.elts if isinstance(value, (ast.List, ast.Tuple)) else [value]
                entries |= {x.id for x in names if isinstance(x, ast.Name)}
    report["entry_classes"] = sorted(e for e in entries if e.endswith(("ForSequenceClassification", "RewardModel")))
print(json.dumps(report))
'''


def _releases(engine: str):
    return sorted((p.name.split("-", 1)[1] for p in ENGINES_DIR.glob(f"{engine}-*")), key=engine_version)


def _require_venv() -> None:
    if not SCHEMA_PYTHON.exists() or not ENGINES_DIR.is_dir():
        why = f"{SCHEMA_PYTHON.parent.parent} is missing: run .ci/engine-schemas.sh to build it"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)


def _cases(adapter_cls, version, **kw):
    """The bodies the adapter builds for ``version``, per input kind, with and without a model name."""
    return [
        {"case": f"{version} {name} model={model}",
         "body": adapter_cls(version, model=model, **kw).build_request(inputs).json}
        for name, inputs in INPUTS.items()
        for model in (None, "internlm/POLAR-7B")
    ]


def _check(engine: str, version: str, cases: list) -> dict:
    proc = subprocess.run(
        [str(SCHEMA_PYTHON), "-I", "-c", CHECKER, engine, str(ENGINES_DIR / f"{engine}-{version}")],
        input=json.dumps(cases), capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"schema checker failed on {engine} {version}:\n{proc.stderr}"
    return json.loads(proc.stdout)


def _flags(cmd):
    return {a for a in cmd if a.startswith("--")}


def _model(tmp_path, arch, **extra):
    d = tmp_path / arch
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"architectures": [arch], **extra}))
    return str(d)


FULL = dict(api_key="k", trust_remote_code=True, served_model_name="rm", max_model_len=1024, dtype="bfloat16",
            tensor_parallel_size=2)


def test_the_releases_named_in_the_issue_are_there():
    _require_venv()
    assert {"0.4.3.post4", "0.4.4.post1", "0.4.6", "0.4.10", "0.5.4", "0.5.23"} <= set(_releases("sglang"))
    assert {"0.9.1", "0.11.0", "0.12.0", "0.13.0", "0.18.0"} <= set(_releases("lmdeploy"))


@pytest.fixture(scope="module", params=["lmdeploy", "sglang"])
def reports(request):
    """engine -> {version: report}; each release checked with the bodies our adapter builds for it."""
    _require_venv()
    engine = request.param
    adapter = LmdeployAdapter if engine == "lmdeploy" else SglangAdapter
    return engine, {v: _check(engine, v, _cases(adapter, v)) for v in _releases(engine)}


def test_bodies_validate_against_each_release(reports):
    engine, by_version = reports
    assert by_version
    for version, report in by_version.items():
        assert report["version"] == version
        assert len(report["bodies"]) == len(INPUTS) * 2
        for result in report["bodies"]:
            assert result == {"case": result["case"], "unknown_fields": [], "errors": []}, (engine, version)
        if engine == "lmdeploy":
            assert report["fields"] == ["dimensions", "encoding_format", "input", "model", "user"]
            assert [r[2] for r in report["routes"]] == ["PoolingRequest"], version
            assert LmdeployAdapter(version).parse_response(report["response"], 2) == [
                -0.5702977776527405, -11.030370712280273]
        else:
            assert report["is_dataclass"] and set(report["fields"]) == {"text", "input_ids"}
            assert "List[int]" in report["fields"]["input_ids"] or "list[int]" in report["fields"]["input_ids"]
            assert [r[2] for r in report["routes"]] == ["EmbeddingReqInput"], version


def test_launch_flags_exist_in_each_release(reports, tmp_path):
    engine, by_version = reports
    for version, report in by_version.items():
        defined = set(report["flags"])
        if engine == "lmdeploy":
            assert report["has_main"]  # `python -m lmdeploy` works
            cmd = lmdeploy_launcher.build_command(
                _model(tmp_path, "Qwen2ForRewardModel"), LaunchOptions(**FULL), engine_version=version)
        else:
            opts = LaunchOptions(**FULL, data_parallel_size=2, mem_fraction_static=0.5)
            cmd = sglang_launcher.build_command(
                _model(tmp_path, "InternLM2ForRewardModel"), opts, engine_version=version)
        assert _flags(cmd) <= defined, (version, _flags(cmd) - defined)


def test_table_rows_agree_with_each_release(reports):
    engine, by_version = reports
    for version, report in by_version.items():
        if engine == "lmdeploy":
            row = lmdeploy_launcher.flags_for(version)
            assert row.trust_remote_code_flag == ("--trust-remote-code" in report["flags"]), version
            assert row.key_guards_pooling == report["key_guards_pooling"], version
            assert (row.max_in_flight == 1) == report["pooling_session_ids_from_positions"], version
            assert set(report["reward_architectures"]) == lmdeploy_mod.REWARD_ARCHITECTURES, version
        else:
            row = sglang_launcher.flags_for(version)
            served = set(report["entry_classes"])
            known = set().union(*(r.architectures for r in sglang_mod.TABLE))
            assert row.architectures <= served, (version, row.architectures - served)
            assert not (known - row.architectures) & served, (version, (known - row.architectures) & served)
            assert report["length_rule"] and report["minus_five"] and report["reports_max_req_input_len"], version
            assert "/get_server_info" in report["info_routes"] and "/get_model_info" in report["info_routes"]
            assert ("/server_info" in report["info_routes"]) == (engine_version(version) >= engine_version("0.5.6"))
            has_len = engine_version(version) >= engine_version("0.4.4.post3")
            assert report["models_max_model_len"] == has_len, version


def test_checker_notices_a_bad_body():
    """The checker is not vacuous: a wrong field name and a wrong type are reported."""
    _require_venv()
    lm = _check("lmdeploy", _releases("lmdeploy")[-1], [{"case": "bad", "body": {"input": [[1, "x"]], "inputs": 1}}])
    sg = _check("sglang", _releases("sglang")[-1], [{"case": "bad", "body": {"input_ids": [["1"]], "ids": [1]}}])
    assert lm["bodies"][0]["unknown_fields"] == ["inputs"] and lm["bodies"][0]["errors"]
    assert sg["bodies"][0]["unknown_fields"] == ["ids"] and sg["bodies"][0]["errors"]
