"""Launchers: the exact argv per engine and version range, and the supervisor on fake engines."""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from rmclient.errors import ConfigurationError, LaunchError
from rmclient.launchers import LaunchOptions, build_launch_command, free_port, launch, parse_version, spawn
from rmclient.launchers import _common, lmdeploy, sglang, vllm
from rmclient.launchers.cli import main as cli_main

PY = sys.executable


def _model(tmp_path: Path, arch: str, name: str = "m", **extra) -> str:
    d = tmp_path / name
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps({"architectures": [arch], **extra}))
    return str(d)


@pytest.fixture
def seq_cls(tmp_path):
    return _model(tmp_path, "LlamaForSequenceClassification", "seqcls")


@pytest.fixture
def internlm2(tmp_path):
    return _model(
        tmp_path,
        "InternLM2ForRewardModel",
        "internlm2",
        auto_map={"AutoConfig": "configuration_internlm2.InternLM2Config"},
    )


@pytest.fixture
def qwen2(tmp_path):
    return _model(tmp_path, "Qwen2ForRewardModel", "qwen2")


@pytest.fixture
def causal(tmp_path):
    return _model(tmp_path, "Qwen2ForCausalLM", "causal")


# --- versions -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,expected",
    [
        ("0.32.0", "0.32.0"),
        ("0.10.1.post1", "0.10.1.post1"),  # post releases count: tables distinguish them
        ("0.11.0rc2", "0.11.0"),
        ("0.32.0+cpu", "0.32.0"),
        ("v0.5", "0.5"),
        ("1", "1"),
    ],
)
def test_parse_version(text, expected):
    assert str(parse_version(text)) == expected


def test_parse_version_rejects_garbage():
    with pytest.raises(ConfigurationError):
        parse_version("dev")


@pytest.mark.parametrize("module", [vllm, sglang, lmdeploy])
def test_version_tables_are_contiguous_and_cover_newest_known(module):
    rows = module.VERSION_TABLE
    for a, b in zip(rows, rows[1:]):
        assert a.until == b.since, (a, b)
    assert module.flags_for(parse_version(module.NEWEST_KNOWN)) is rows[-1]
    assert all(row.note for row in rows)


def test_each_engine_has_one_table_read_by_its_adapter_and_its_launcher():
    from rmclient.adapters import lmdeploy as lmdeploy_adapter
    from rmclient.adapters import sglang as sglang_adapter
    from rmclient.adapters import vllm as vllm_adapter

    assert vllm.SPEC.table is vllm_adapter.TABLE
    assert sglang.SPEC.table is sglang_adapter.TABLE
    assert lmdeploy.SPEC.table is lmdeploy_adapter.TABLE


# --- vLLM ------------------------------------------------------------------------------------

VLLM_HEAD = [PY, "-m", "vllm.entrypoints.openai.api_server", "--model"]
VLLM_TAIL = ["--tensor-parallel-size", "1", "--host", "127.0.0.1", "--port", "8000"]
NO_SOFTMAX = ["--override-pooler-config", '{"softmax": false}']
NO_ACTIVATION_0_10 = ["--override-pooler-config", '{"softmax": false, "activation": false}']
NO_ACTIVATION = ["--pooler-config", '{"use_activation": false}']


def _vllm(path, version, **opts):
    return vllm.build_command(path, LaunchOptions(**opts), engine_version=version)


@pytest.fixture
def qwen2_seq_cls(tmp_path):
    return _model(tmp_path, "Qwen2ForSequenceClassification", "qwen2sc")


@pytest.mark.parametrize(
    "version,kind,flags",
    [
        # 0.7 - 0.10.0: --task reward for *ForRewardModel (raw by default)
        ("0.7.3", "internlm2", ["--task", "reward"]),
        ("0.9.2", "internlm2", ["--task", "reward"]),
        ("0.10.0", "qwen2", ["--task", "reward"]),
        # seq-cls on 0.8.x: --task classify, and only the pooler config turns the softmax off
        ("0.8.5", "seq_cls", ["--task", "classify", *NO_SOFTMAX]),
        ("0.7.3", "qwen2_seq_cls", ["--task", "classify", *NO_SOFTMAX]),
        # 0.10.1 - 0.11.0: --runner pooling + the pooler config that turns both activations off
        ("0.10.1", "seq_cls", ["--runner", "pooling", *NO_ACTIVATION_0_10]),
        ("0.10.1.1", "internlm2", ["--runner", "pooling", *NO_ACTIVATION_0_10]),
        ("0.11.0", "causal", ["--runner", "pooling", "--convert", "classify", *NO_ACTIVATION_0_10]),
        # 0.11.1 - 0.33: --runner pooling; raw by the request field and by the pooler config
        ("0.11.1", "seq_cls", ["--runner", "pooling", *NO_ACTIVATION]),
        ("0.13.0", "qwen2", ["--runner", "pooling", *NO_ACTIVATION]),
        ("0.32.0", "seq_cls", ["--runner", "pooling", *NO_ACTIVATION]),
        ("0.32.0", "causal", ["--runner", "pooling", "--convert", "classify", *NO_ACTIVATION]),
    ],
)
def test_vllm_flags_per_version(request, version, kind, flags):
    path = request.getfixturevalue(kind)
    assert _vllm(path, version) == VLLM_HEAD + [path] + flags + VLLM_TAIL


@pytest.mark.parametrize(
    "version,kind,works",
    [
        ("0.7.3", "seq_cls", "0.8.0 to < 0.9.0, >= 0.10.1"),
        ("0.9.2", "seq_cls", "0.8.0 to < 0.9.0, >= 0.10.1"),
        ("0.10.0", "seq_cls", "0.8.0 to < 0.9.0, >= 0.10.1"),
        ("0.10.0", "causal", ">= 0.10.1"),
        ("0.9.2", "causal", ">= 0.10.1"),
    ],
)
def test_vllm_refuses_what_cannot_return_the_raw_reward(request, version, kind, works):
    with pytest.raises(ConfigurationError, match=f"Versions that can: {works}"):
        _vllm(request.getfixturevalue(kind), version)


def test_vllm_data_parallel_from_0_8_4(qwen2):
    with pytest.raises(ConfigurationError, match="no --data-parallel-size"):
        _vllm(qwen2, "0.8.2", data_parallel_size=2)
    assert "--data-parallel-size" in _vllm(qwen2, "0.8.4", data_parallel_size=2)


def test_vllm_too_old_is_refused(seq_cls):
    with pytest.raises(ConfigurationError, match="oldest supported version is 0.7.0"):
        _vllm(seq_cls, "0.6.6")


def test_vllm_newer_than_known_uses_newest_row_with_warning(seq_cls, caplog):
    with caplog.at_level(logging.WARNING, logger="rmclient.launchers"):
        cmd = _vllm(seq_cls, "0.40.0")
    assert cmd == VLLM_HEAD + [seq_cls, "--runner", "pooling", *NO_ACTIVATION] + VLLM_TAIL
    assert "newer than any version" in caplog.text


def test_vllm_all_options(internlm2):
    cmd = _vllm(
        internlm2,
        "0.32.0",
        host="0.0.0.0",
        port=9001,
        tensor_parallel_size=2,
        data_parallel_size=3,
        api_key="secret",
        trust_remote_code=True,
        served_model_name="rm",
        max_model_len=512,
        dtype="float32",
        extra_args=["--enforce-eager", "--seed", "1"],
    )
    assert cmd == VLLM_HEAD + [internlm2] + [
        "--runner", "pooling", *NO_ACTIVATION,
        "--tensor-parallel-size", "2",
        "--data-parallel-size", "3",
        "--host", "0.0.0.0",
        "--port", "9001",
        "--trust-remote-code",  # the key goes in VLLM_API_KEY (SPEC.key_env), not argv
        "--served-model-name", "rm",
        "--max-model-len", "512",
        "--dtype", "float32",
        "--enforce-eager", "--seed", "1",
    ]  # fmt: skip
    assert vllm.SPEC.key_env(LaunchOptions(api_key="secret")) == {"VLLM_API_KEY": "secret"}


def test_vllm_hub_id_uses_architecture_override(seq_cls):
    # no local config.json: the architecture can be given
    cmd = vllm.build_command(
        "org/some-rm", LaunchOptions(architecture="Qwen2ForCausalLM"), engine_version="0.32.0"
    )
    assert cmd == VLLM_HEAD + ["org/some-rm", "--runner", "pooling", "--convert", "classify", *NO_ACTIVATION] + VLLM_TAIL


def test_vllm_given_python_is_the_interpreter(seq_cls):
    cmd = vllm.build_command(seq_cls, LaunchOptions(), engine_version="0.32.0", python="/opt/venv/bin/python")
    assert cmd[:3] == ["/opt/venv/bin/python", "-m", "vllm.entrypoints.openai.api_server"]


def test_vllm_rejects_sglang_only_option(seq_cls):
    with pytest.raises(ConfigurationError, match="sglang option"):
        _vllm(seq_cls, "0.32.0", mem_fraction_static=0.5)


# --- sglang -----------------------------------------------------------------------------------


def test_sglang_argv(internlm2):
    cmd = sglang.build_command(
        internlm2,
        LaunchOptions(
            port=30000,
            tensor_parallel_size=2,
            data_parallel_size=2,
            api_key="k",
            trust_remote_code=True,
            mem_fraction_static=0.7,
            served_model_name="rm",
            max_model_len=4096,
            dtype="bfloat16",
            extra_args=["--log-level", "warning"],
        ),
        engine_version="0.5.4",
    )
    assert cmd == [PY, "-m", "sglang.launch_server", "--model-path", internlm2,
        "--is-embedding", "--trust-remote-code",
        "--tp-size", "2", "--dp-size", "2",
        "--mem-fraction-static", "0.7",
        "--host", "127.0.0.1", "--port", "30000",
        "--api-key", "k",
        "--served-model-name", "rm",
        "--context-length", "4096",
        "--dtype", "bfloat16",
        "--log-level", "warning",
    ]  # fmt: skip


def test_sglang_minimal(seq_cls):
    cmd = sglang.build_command(seq_cls, LaunchOptions(port=30000), engine_version="0.4.3")
    assert cmd == [PY, "-m", "sglang.launch_server", "--model-path", seq_cls, "--is-embedding",
                   "--tp-size", "1", "--dp-size", "1", "--host", "127.0.0.1", "--port", "30000"]  # fmt: skip


def test_sglang_qwen2_reward_needs_0_4_3_post3(qwen2):
    with pytest.raises(ConfigurationError, match="does not serve Qwen2ForRewardModel.*from 0.4.3.post3"):
        sglang.build_command(qwen2, LaunchOptions(), engine_version="0.4.3.post2")
    assert "--is-embedding" in sglang.build_command(qwen2, LaunchOptions(), engine_version="0.4.3.post3")


def test_sglang_qwen2_seq_cls_from_0_4_4_post2_with_a_warning(qwen2_seq_cls, caplog):
    with pytest.raises(ConfigurationError, match="from 0.4.4.post2"):
        sglang.build_command(qwen2_seq_cls, LaunchOptions(), engine_version="0.4.4.post1")
    with caplog.at_level(logging.WARNING, logger="rmclient.adapters.sglang"):
        sglang.build_command(qwen2_seq_cls, LaunchOptions(), engine_version="0.4.4.post2")
    assert "constant" in caplog.text or "offset" in caplog.text


# --- lmdeploy ---------------------------------------------------------------------------------

LMD_HEAD = [PY, "-m", "lmdeploy", "serve", "api_server"]


@pytest.mark.parametrize("version,flag", [("0.9.1", []), ("0.12.3", []), ("0.13.0", ["--trust-remote-code"])])
def test_lmdeploy_trust_remote_code_flag_from_0_13(internlm2, version, flag):
    cmd = lmdeploy.build_command(
        internlm2, LaunchOptions(port=23333, trust_remote_code=True, api_key="k"), engine_version=version
    )
    assert cmd == LMD_HEAD + [internlm2, "--backend", "pytorch", "--tp", "1",
        "--server-name", "127.0.0.1", "--server-port", "23333", "--api-keys", "k", *flag]  # fmt: skip


@pytest.mark.parametrize("version,warns", [("0.9.1", True), ("0.12.1", True), ("0.12.2", False), ("0.18.0", False)])
def test_lmdeploy_warns_when_the_key_leaves_pooling_open(qwen2, version, warns, caplog):
    with caplog.at_level(logging.WARNING, logger="rmclient.launchers.lmdeploy"):
        lmdeploy.build_command(qwen2, LaunchOptions(api_key="k"), engine_version=version)
    assert ("stays open" in caplog.text) is warns


def test_lmdeploy_options(qwen2):
    cmd = lmdeploy.build_command(
        qwen2,
        LaunchOptions(port=1, tensor_parallel_size=2, served_model_name="rm", max_model_len=8192, dtype="float16"),
        engine_version="0.14.0",
    )
    assert cmd == LMD_HEAD + [qwen2, "--backend", "pytorch", "--tp", "2", "--server-name", "127.0.0.1",
        "--server-port", "1", "--model-name", "rm", "--session-len", "8192", "--dtype", "float16"]  # fmt: skip


def test_lmdeploy_refuses_seq_cls_dp_and_old(seq_cls, qwen2):
    with pytest.raises(ConfigurationError, match="serves only"):
        lmdeploy.build_command(seq_cls, LaunchOptions(), engine_version="0.14.0")
    with pytest.raises(ConfigurationError, match="MoE"):
        lmdeploy.build_command(qwen2, LaunchOptions(data_parallel_size=2), engine_version="0.14.0")
    with pytest.raises(ConfigurationError, match="oldest supported version is 0.9.1"):
        lmdeploy.build_command(qwen2, LaunchOptions(), engine_version="0.9.0")


# The engines' own CLIs of several releases hold every flag we emit: tests/test_engine_schemas.py
# (sglang, lmdeploy, read with ast) and tests/test_vllm_real.py (vLLM's own argument parser).


# --- version detection and dry runs -------------------------------------------------------------


def test_installed_version_asks_the_given_interpreter():
    import importlib.metadata as md

    other = os.path.join(os.path.dirname(PY), ".", os.path.basename(PY))  # same venv, another path string
    assert other != PY
    assert _common.installed_version(("no-such-dist-xyz", "httpx"), python=other) == md.version("httpx")
    assert _common.installed_version(("no-such-dist-xyz",), python=other) is None
    assert _common.installed_version(("no-such-dist-xyz", "httpx")) == md.version("httpx")


def test_installed_version_with_a_broken_interpreter(tmp_path):
    with pytest.raises(LaunchError, match="cannot run"):
        _common.installed_version(("vllm",), python=str(tmp_path / "nope"))


def _installed(dists) -> bool:
    return _common.installed_version(dists) is not None


@pytest.mark.skipif(_installed(vllm.DISTRIBUTIONS), reason="vLLM is installed in this environment")
def test_dry_run_without_engine_assumes_newest_known(seq_cls, caplog):
    with caplog.at_level(logging.INFO, logger="rmclient.launchers"):
        cmd = build_launch_command("vllm", seq_cls, dry_run=True, port=8000)
    assert cmd == VLLM_HEAD + [seq_cls, "--runner", "pooling", *NO_ACTIVATION] + VLLM_TAIL
    assert "assuming the newest known version 0.33.0" in caplog.text
    with pytest.raises(LaunchError, match="not installed"):
        build_launch_command("vllm", seq_cls, port=8000)  # a real launch needs the engine


def test_build_launch_command_unknown_engine_and_option(seq_cls):
    with pytest.raises(ConfigurationError, match="unknown engine"):
        build_launch_command("tgi", seq_cls, engine_version="1.0")
    with pytest.raises(ConfigurationError, match="unknown launch option"):
        build_launch_command("vllm", seq_cls, engine_version="0.32.0", tp=2)


def test_read_architecture(tmp_path, internlm2):
    assert _common.read_architecture(internlm2) == "InternLM2ForRewardModel"
    assert _common.read_architecture("org/hub-id") is None
    assert _common.has_remote_code(internlm2)


def test_cli_dry_run_through_python_m(seq_cls):
    out = subprocess.run(
        [PY, "-m", "rmclient.launchers.vllm", seq_cls, "--dry-run", "--engine-version", "0.10.1",
         "--port", "8123", "--dtype", "float32", "--engine-args", "--seed 3", "--", "--enforce-eager"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    expected = (
        f"{PY} -m vllm.entrypoints.openai.api_server --model {seq_cls} --runner pooling "
        "--override-pooler-config '{\"softmax\": false, \"activation\": false}' --tensor-parallel-size 1 --host 127.0.0.1 "
        "--port 8123 --dtype float32 --enforce-eager --seed 3"
    )
    assert out.stdout.strip() == expected


def test_cli_main_dry_run_each_engine(qwen2, capsys):
    assert cli_main(["sglang", qwen2, "--dry-run", "--engine-version", "0.5.0"]) == 0
    assert capsys.readouterr().out.split()[1:4] == ["-m", "sglang.launch_server", "--model-path"]
    assert cli_main([qwen2, "--dry-run", "--engine-version", "0.13.0", "--trust-remote-code"], engine="lmdeploy") == 0
    out = capsys.readouterr().out
    assert "--server-port 23333" in out and out.strip().endswith("--trust-remote-code")
    # a combination that cannot work is a usage error: exit code 2, not a traceback
    assert cli_main(["lmdeploy", qwen2, "--dry-run", "--engine-version", "0.13.0", "--dp", "2"]) == 2
    assert "MoE" in capsys.readouterr().err
    # rmclient serve takes its key from the environment: the printed command sets it there
    assert cli_main(["transformers", qwen2, "--dry-run", "--api-key", "s3 cret"]) == 0
    words = shlex.split(capsys.readouterr().out)
    assert words[0] == "RMCLIENT_API_KEY=s3 cret" and "--api-key" not in words


# --- supervisor ------------------------------------------------------------------------------------

FAKE_ENGINE = textwrap.dedent(
    """
    import argparse, http.server, json, os, signal, subprocess, sys, time
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1"); p.add_argument("--port", type=int, required=True)
    p.add_argument("--ready-after", type=float, default=0.0)   # /v1/models 503 until then (vLLM-like)
    p.add_argument("--never-ready", action="store_true")
    p.add_argument("--ignore-sigterm", action="store_true")
    p.add_argument("--child-pid-file")
    a, rest = p.parse_known_args()
    if a.ignore_sigterm:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if a.child_pid_file:  # a grandchild in the same process group, as engines start workers
        child = subprocess.Popen([sys.executable, "-c", "import signal,time; "
                                  + ("signal.signal(signal.SIGTERM, signal.SIG_IGN); " if a.ignore_sigterm else "")
                                  + "time.sleep(600)"])
        open(a.child_pid_file, "w").write(str(child.pid))
    t0 = time.monotonic()
    print("FAKE-ENGINE starting argv=" + json.dumps(sys.argv[1:]), flush=True)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if a.never_ready:
                code = 503
            elif self.path == "/v1/models":
                code = 200 if time.monotonic() - t0 >= a.ready_after else 503
            elif self.path == "/health":
                code = 200
            else:
                code = 404
            body = json.dumps({"path": self.path}).encode()
            self.send_response(code); self.send_header("Content-Length", str(len(body))); self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass

    http.server.ThreadingHTTPServer((a.host, a.port), H).serve_forever()
    """
)


@pytest.fixture
def fake_engine(tmp_path):
    path = tmp_path / "fake_engine.py"
    path.write_text(FAKE_ENGINE)
    return str(path)


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rfind(")") + 2] not in "ZX"


def test_free_port_is_bindable():
    import socket

    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_spawn_ready_then_stop_leaves_nothing_behind(fake_engine, tmp_path):
    port = free_port()
    child_file = tmp_path / "child.pid"
    t0 = time.monotonic()
    server = spawn(
        [PY, fake_engine, "--port", str(port), "--ready-after", "1.0", "--child-pid-file", str(child_file)],
        port=port,
        ready_routes=("/health", "/v1/models"),
        engine="fake",
        ready_timeout=30,
        log_path=tmp_path / "fake.log",
    )
    try:
        assert time.monotonic() - t0 >= 1.0  # /health alone (200 at once) did not count as ready
        assert server.url == f"http://127.0.0.1:{port}"
        assert httpx.get(server.url + "/v1/models").status_code == 200
        child = int(child_file.read_text())
        assert _pid_alive(child)
        assert os.getpgid(child) == server.pgid != os.getpgid(0)  # its own group, with its workers
        assert "FAKE-ENGINE starting" in server.log_tail()
    finally:
        server.stop()
    assert not _pid_alive(server.pid) and not _pid_alive(child)
    assert server.group_members() == []
    assert server.stop() == server.process.returncode  # idempotent


def test_never_ready_raises_with_log_tail_and_cleans_up(fake_engine, tmp_path):
    port = free_port()
    child_file = tmp_path / "child.pid"
    with pytest.raises(LaunchError) as info:
        spawn(
            [PY, fake_engine, "--port", str(port), "--never-ready", "--child-pid-file", str(child_file)],
            port=port,
            engine="fake",
            ready_timeout=2,
            log_path=tmp_path / "fake.log",
        )
    msg = str(info.value)
    assert "did not become ready" in msg and "within 2 s" in msg and "GET /health: 503" in msg
    assert "FAKE-ENGINE starting" in msg  # the log tail is quoted
    assert not _pid_alive(int(child_file.read_text()))


def test_process_that_dies_raises_with_its_log(tmp_path):
    script = "import sys; print('loading the model...'); print('RuntimeError: out of cheese', file=sys.stderr); sys.exit(3)"
    t0 = time.monotonic()
    with pytest.raises(LaunchError) as info:
        spawn([PY, "-c", script], port=free_port(), engine="fake", ready_timeout=60, log_path=tmp_path / "e.log")
    assert time.monotonic() - t0 < 30  # noticed at once, not at the timeout
    msg = str(info.value)
    assert "exited with code 3 before it was ready" in msg
    assert "RuntimeError: out of cheese" in msg and "loading the model" in msg
    assert str(tmp_path / "e.log") in msg


def test_stop_escalates_to_sigkill(fake_engine, tmp_path):
    port = free_port()
    child_file = tmp_path / "child.pid"
    server = spawn(
        [PY, fake_engine, "--port", str(port), "--ignore-sigterm", "--child-pid-file", str(child_file)],
        port=port,
        engine="fake",
        ready_timeout=30,
        stop_grace=1.0,
        log_path=tmp_path / "fake.log",
    )
    child = int(child_file.read_text())
    t0 = time.monotonic()
    server.stop()
    assert 1.0 <= time.monotonic() - t0 < 15
    assert not _pid_alive(child) and server.group_members() == []
    assert server.process.returncode == -9


@pytest.fixture
def fake_vllm_package(tmp_path):
    """A ``vllm.entrypoints.openai.api_server`` that is the fake engine (put its root on PYTHONPATH)."""
    root = tmp_path / "fakevllm"
    pkg = root / "vllm" / "entrypoints" / "openai"
    pkg.mkdir(parents=True)
    for d in (pkg, pkg.parent, pkg.parent.parent):
        (d / "__init__.py").write_text("")
    (pkg / "api_server.py").write_text(FAKE_ENGINE)
    return str(root)


def test_launch_vllm_end_to_end_with_fake_package(fake_vllm_package, seq_cls, tmp_path):
    """``launch("vllm", ...)`` runs ``python -m vllm.entrypoints.openai.api_server`` with the right flags."""
    env = {"PYTHONPATH": fake_vllm_package}
    with launch(
        "vllm", seq_cls, port=None, env=env, engine_version="0.32.0", dtype="float32", ready_timeout=30,
        log_path=tmp_path / "vllm.log",
    ) as server:
        assert server.engine == "vllm" and server.engine_version == "0.32.0"
        assert server.command == VLLM_HEAD + [seq_cls, "--runner", "pooling", *NO_ACTIVATION, "--tensor-parallel-size", "1",
            "--host", "127.0.0.1", "--port", str(server.port), "--dtype", "float32"]  # fmt: skip
        assert httpx.get(server.url + "/health").status_code == 200
        pgid = server.pgid
    assert server.group_members() == []  # nothing left behind
    assert not _pid_alive(pgid)


def test_cli_serves_until_sigterm_then_cleans_up(fake_vllm_package, seq_cls, tmp_path):
    import signal

    child_file = tmp_path / "child.pid"
    env = dict(os.environ, PYTHONPATH=fake_vllm_package)
    cli = subprocess.Popen(
        [PY, "-m", "rmclient.launchers.vllm", seq_cls, "--port", "0", "--engine-version", "0.32.0",
         "--log-file", str(tmp_path / "vllm.log"), "--", "--child-pid-file", str(child_file)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        line = cli.stdout.readline()  # printed once ready
        assert line.startswith(f"vllm 0.32.0 serving {seq_cls} at http://127.0.0.1:"), (line, cli.stderr.read())
        url = line.split(" at ")[1].split()[0]
        assert httpx.get(url + "/v1/models").status_code == 200
        child = int(child_file.read_text())
        assert _pid_alive(child)
        cli.send_signal(signal.SIGTERM)
        assert cli.wait(timeout=30) == 0
    finally:
        if cli.poll() is None:
            cli.kill()
    assert not _pid_alive(child)
    with pytest.raises(httpx.ConnectError):
        httpx.get(url + "/health", timeout=2)
    assert "--child-pid-file" in (tmp_path / "vllm.log").read_text().splitlines()[0]
